import Glibc
@_spi(Backend) import Readiness
import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 39.
@Suite("Peer scenarios 11", .serialized)
struct PeerScenarioTests11 {
    // MARK: Timeout resolution (libevent's test/regress.c "timeout precision", Go's timer tests): what
    // `capabilities.timeoutResolution` says is what a wait keeps

    /// A 100 µs wait, best of eight: a backend that says it keeps microseconds returns well before a
    /// millisecond, and one that says it rounds to a millisecond never returns before one. libevent's
    /// epoll method waits on a timerfd (PRECISE_TIMER) to the microsecond, and said 1 ms (failed before
    /// on libevent and libevent:epoll: 0.1-0.2 ms waits under a declared 1 ms).
    @Test("a backend's declared timeout resolution is the one its waits keep", .timeLimit(.minutes(1)),
          arguments: backends)
    func declaredResolutionIsKept(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 4)
        let resolution = poller.capabilities.timeoutResolution
        // Load only makes a wait longer: eight tries judge "not shorter than the resolution"; for
        // "well under a millisecond" up to 200 tries, stopping at the first (review: under the
        // sanitizers one preempted stretch could spoil eight back-to-back tries). A signal can make
        // one try shorter: the kernel's 1 ms wait interrupted after the 100 µs asked for ends the
        // wait (the contract: never before the deadline asked for; CI once saw 0.94 ms on epoll
        // under AddressSanitizer), so most of the eight, not all, must keep the resolution; a
        // backend that does not round waits 0.1-0.2 ms every time.
        var best = Duration.seconds(1)
        var kept = 0
        for attempt in 0..<200 {
            let start = ContinuousClock.now
            _ = try poller.wait(into: events, timeout: .microseconds(100))
            let took = ContinuousClock.now - start
            best = min(best, took)
            if attempt < 8, took >= resolution { kept += 1 }
            if attempt >= 7, resolution >= .milliseconds(1) || best < .milliseconds(1) { break }
        }
        #expect(best >= .microseconds(100), "\(backend.name): returned early (\(best))")
        if resolution >= .milliseconds(1) {
            #expect(kept >= 6, "\(backend.name): says \(resolution), \(kept) of 8 waits kept it (shortest \(best))")
        } else {
            #expect(best < .milliseconds(1), "\(backend.name): says \(resolution), waited \(best)")
        }
    }

    // MARK: Submission order (SwiftNIO's EventLoopTest "tasks run in the order they were submitted",
    // an actor's FIFO)

    /// A job the loop thread submits, then (after it, by a join) one from another thread: they run in
    /// that order, a task's jobs and an actor's alike. The loop thread's own submissions went to a
    /// queue of their own that each round ran after the shared one (failed before: 2 before 1 in
    /// every round, both forms, on every backend).
    @Test("jobs run in the order they were submitted, the loop thread's own before another thread's later ones",
          .timeLimit(.minutes(1)), arguments: backends)
    func submissionOrder(backend: Backend) async throws {
        for form in ["task", "actor"] {
            for _ in 0..<10 {
                let loop = try EventLoop(backend: backend)
                let log = OrderLog()
                if form == "task" {
                    await Task(executorPreference: loop) {
                        Task(executorPreference: loop) { log.add(1) }
                        joinedThread { Task(executorPreference: loop) { log.add(2) } }
                    }.value
                } else {
                    let actor = OrderActor(loop: loop, log: log)
                    await actor.start { Task(executorPreference: loop) { await actor.record(2) } }
                }
                for _ in 0..<2_000 where log.entries.count < 2 { usleep(1_000) }
                #expect(log.entries == [1, 2], "\(backend.name), \(form)")
                await loop.shutdown()
            }
        }
    }
}

private final class OrderLog: Sendable {
    private let items = Mutex<[Int]>([])
    func add(_ item: Int) { items.withLock { $0.append(item) } }
    var entries: [Int] { items.withLock { $0 } }
}

/// An actor isolated to a loop: `start` runs on the loop thread, submits a job of its own there, then
/// has another thread submit one (joined before it returns).
private actor OrderActor {
    let loop: EventLoop
    let log: OrderLog
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(loop: EventLoop, log: OrderLog) {
        self.loop = loop
        self.log = log
    }
    func record(_ item: Int) { log.add(item) }
    func start(_ other: @escaping @Sendable () -> Void) {
        Task { self.record(1) }
        joinedThread(other)
    }
}

/// Runs `body` on a thread of its own and joins it: what `body` does happens before the caller goes on.
private func joinedThread(_ body: @escaping @Sendable () -> Void) {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let raw = Unmanaged.passRetained(Box(body)).toOpaque()
    guard pthread_create(&thread, nil, { Unmanaged<Box>.fromOpaque($0!).takeRetainedValue().body(); return nil }, raw) == 0 else {
        Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
        return
    }
    pthread_join(thread, nil)
}
