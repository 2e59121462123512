import Glibc
import Readiness
import Synchronization

/// Bounds the time a scenario may take: a backend whose `wait` never returns (it ignores its timeout
/// and its waker) would otherwise hang the whole suite, and the third party running it would learn
/// nothing. A scenario with no result within its limit fails as hung; its thread (or task) is left to
/// finish on its own, holding what it holds, so descriptor counts of later async scenarios may be off.
enum Watchdog {
    /// How a hung scenario's failure begins.
    static let hungMark = "no result within"

    /// The failure of a scenario that gave no result within `limit`.
    static func hung(_ scenario: String, backend: String, limit: Duration) -> ScenarioResult {
        ScenarioResult(scenario: scenario, backend: backend,
                       outcome: .failed("\(hungMark) \(limit): the scenario hangs (its thread is left running)"),
                       trace: [], duration: limit)
    }

    /// `body`'s result, run on a thread of its own; nil when there is none within `limit` (nil: no limit,
    /// run on the calling thread).
    static func run<T>(limit: Duration?, _ body: @escaping () -> T) -> T? {
        guard let limit else { return body() }
        let handoff = Handoff<T>()
        let box = UnsafeSendable(body)
        let worker: Worker
        do { worker = try Worker { handoff.put(box.value()) } } catch { return body() }
        guard let value = handoff.take(within: limit.clampedNanoseconds) else {
            worker.detach()
            return nil
        }
        worker.join()
        return value
    }

    /// `body`'s result, or nil when there is none within `limit` (the task running it is left running).
    static func run<T: Sendable>(limit: Duration?, _ body: @escaping @Sendable () async -> T) async -> T? {
        guard let limit else { return await body() }
        let race = Race<T>()
        return await withUnsafeContinuation { (continuation: UnsafeContinuation<T?, Never>) in
            race.start(continuation)
            let nanoseconds = limit.clampedNanoseconds
            let alarm = Task.detached {
                try? await Task.sleep(for: .nanoseconds(nanoseconds))
                if !Task.isCancelled { race.finish(nil) }
            }
            Task.detached {
                let value = await body()
                alarm.cancel()
                race.finish(value)
            }
        }
    }
}

/// A continuation resumed by the first of two finishers.
final class Race<T: Sendable>: Sendable {
    private let state = Locked<(continuation: UnsafeContinuation<T?, Never>?, done: Bool)>((nil, false))

    func start(_ continuation: UnsafeContinuation<T?, Never>) { state.withLock { $0.continuation = continuation } }

    func finish(_ value: T?) {
        let continuation: UnsafeContinuation<T?, Never>? = state.withLock {
            if $0.done { return nil }
            $0.done = true
            return $0.continuation
        }
        continuation?.resume(returning: value)
    }
}

/// One value handed from one thread to another, taken with a time limit.
final class Handoff<T>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: T?

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func put(_ new: T) {
        pthread_mutex_lock(mutex)
        value = new
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// The value once put, or nil after `nanoseconds` (saturated) without one.
    func take(within nanoseconds: Int64) -> T? {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let wait = max(0, nanoseconds)
        let seconds = Int(wait / 1_000_000_000)
        let total = deadline.tv_nsec + Int(wait % 1_000_000_000)
        let (sum, overflow) = deadline.tv_sec.addingReportingOverflow(seconds + total / 1_000_000_000)
        deadline.tv_sec = overflow ? Int.max : sum
        deadline.tv_nsec = total % 1_000_000_000
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while value == nil {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
        }
        return value
    }
}
