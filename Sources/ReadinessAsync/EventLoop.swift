#if canImport(Glibc)
import Glibc
#endif
import CReadinessCore
import ReadinessCore
import ReadinessNet
import Synchronization

/// One thread that owns one ``/ReadinessCore/Poller`` (any backend), its timers and a submission queue, and runs Swift
/// tasks: a `SerialExecutor` (actors can be isolated to it) and a `TaskExecutor`
/// (`Task(executorPreference: loop)`). Docs/Async.md describes the threading model.
///
/// The handle is Sendable; the loop state is not, and lives on the loop thread only.
///
/// ```swift
/// let loop = try EventLoop()                          // the default backend; EventLoop(backend: .epoll) names one
/// Task(executorPreference: loop) {
///     let socket = try await loop.connect(to: address, timeout: .seconds(2))
///     try await socket.write(request)                  // Bytes or [UInt8]
///     var response = Bytes()
///     let n = try await socket.read(into: &response)    // appends; 0 at the end of the stream
///     await socket.close()
/// }
/// await loop.shutdown()
/// ```
public final class EventLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // Why `@unchecked Sendable` is true:
    // - `state` (a `LoopState`, not Sendable: the poller, the timers, every socket and waiter) is
    //   touched only on the loop thread: the loop thread itself, and `onLoop`/`run`, which reach it only
    //   after checking that they run there; every public operation first hops onto the loop (its
    //   executor) and fails with `.shutdown` when it is not there. The loop thread creates the poller itself (through the factory).
    // - `queue`, `sleeping`, `phase`, `waker` are guarded by `lock`.
    // - `local` and `takesLocal` are touched only on the loop thread (`submit` checks that it runs there).
    // - `thread` is written once by the loop thread before `init` returns (published through `lock`)
    //   and never again; `running` is atomic.
    private let state: LoopState
    private let lock = ConditionLock()
    private var queue: [Submission] = []
    /// What the loop thread submits to itself (a task it resumed, a cancel it made) while `queue` is
    /// empty (`queued` clear): no lock, no wake-up. Everything in it was submitted before everything in
    /// `queue` (a submission of the loop thread's own goes behind `queue`'s when `queue` holds any), so
    /// each round runs it first and the order of submission holds across both (review: a job the loop
    /// thread submitted ran after another thread's later one, an actor's jobs among them).
    @exclusivity(unchecked) private var local: [Submission] = []
    /// `queue` holds something: set under `lock` by the thread that appends, cleared under it by the
    /// loop when it takes `queue`'s contents.
    private let queued = Atomic<Bool>(false)
    /// The loop thread takes its own submissions into `local` (from its start until the shutdown's
    /// drain hands what is left on; then they take the locked path, to the pool or the orphan runner).
    @exclusivity(unchecked) private var takesLocal = false
    private var sleeping = false
    private var phase = Phase.starting
    /// What the shutdown reports (under `lock`): `.shutdown`, or the failure of the poller's wait that
    /// ended the loop (`.poller(error)`), as its operations report it.
    private var stopReason = LoopError.shutdown
    private var waker: Waker?
    /// The poller's highest descriptor (`Capabilities.maxDescriptor`), set before `init` returns.
    private var descriptorLimit: CInt = .max
    /// The highest descriptor the loop's poller can wait on (`Capabilities.maxDescriptor`: select's
    /// FD_SETSIZE - 1, `CInt.max` for the others): for checks made off the loop (``signals(_:)``).
    var maxDescriptor: CInt { lock.withLock { descriptorLimit } }
    private var thread = pthread_t()
    private let running = Atomic<Bool>(false)
    private var shutdownWaiters: [(id: UInt64, continuation: UnsafeContinuation<Void, Never>)] = []
    private var lastWaiterID: UInt64 = 0
    /// Set (under `lock`) once the loop thread has closed everything and will touch nothing more.
    private var isFinished = false
    /// Set (under `lock`) by ``shutdown(gracePeriod:)``: the loop stops accepting and ends within its
    /// grace period (``AsyncListener/serve(_:)`` then cancels its connections' tasks once it has ended).
    private var draining = false
    /// The signal subscriptions of this loop's ``signals(_:)`` sequences (under `lock`): stopped when the
    /// loop shuts down, iterated or not, so that no signal stays caught by a loop that ended.
    private var signalWatchers: [WeakSubscription] = []
    /// Actors' jobs enqueued after the loop stopped (under `lock`): run in order, one at a time, by a
    /// thread the loop starts for them (`orphanThread`, while `orphanRunnerActive`), so that an actor
    /// isolated to the loop stays serial after shutdown (its operations on the loop fail with
    /// `.shutdown`). The global pool would run two of its jobs at once.
    private var orphans: [UnownedJob] = []
    private var orphanRunnerActive = false
    private var orphanThread: pthread_t?
    /// How many of this loop's signal sequences watch each signal (under `lock`; a signal once watched
    /// keeps its entry, at 0): what the loop thread's mask follows (`applySignalMask`).
    private var watchedSignals: [CInt: Int] = [:]
    /// The loop's serial executor identity (`asUnownedSerialExecutor()`): jobs enqueued there are
    /// actors' jobs, told apart from the jobs of tasks that prefer the loop as a task executor.
    private let serial: LoopSerialExecutor
    /// A name for diagnostics, and the loop thread's name (as `ps -L`, `top -H`, gdb and perf show it:
    /// up to its first NUL, cut to the kernel's 15 bytes on a character boundary, a trailing `-N` kept
    /// whole: `readiness-loop-12` is `readiness-lo-12`).
    public let name: String
    /// How jobs run (Docs/Async.md, "Executor semantics").
    public let jobs: JobIsolation

    /// How the loop runs a job.
    public enum JobIsolation: Sendable, Hashable {
        /// By the way the job came (the default): a job enqueued on the loop's serial executor (an
        /// actor isolated to the loop: `asUnownedSerialExecutor()`) runs isolated to it,
        /// `runSynchronously(isolatedTo:taskExecutor:)`; a job enqueued on the loop as a task executor
        /// (a task preferring the loop) runs `runSynchronously(on:)`. Code in a task preferring the
        /// loop does not hop, nor does an actor isolated to the loop running in such a task; an actor
        /// called from a task that prefers no executor takes a job per `await` (Docs/Async.md).
        case automatic
        /// Every job `runSynchronously(isolatedTo: loop, taskExecutor: loop)`: isolated to the loop's
        /// serial executor. Actors isolated to the loop never hop; nonisolated code in a task preferring
        /// the loop takes a hop (a job, no poller call) when an `await` returns into it.
        case serialExecutor
        /// Every job `runSynchronously(on: loop)` as a task executor: nonisolated code in a task
        /// preferring the loop never hops; an actor isolated to the loop hops on each `await` into it.
        case taskExecutor
    }

    enum Phase { case starting, running, stopping, stopped, failed(PollerError) }

    /// What other threads hand to the loop.
    enum Submission {
        /// Enqueued on the loop itself: as a task executor (or by code that holds the loop as a
        /// `SerialExecutor` itself rather than through `asUnownedSerialExecutor()`).
        case job(UnownedJob)
        /// Enqueued on the loop's serial executor (`asUnownedSerialExecutor()`): an actor's job.
        case isolatedJob(UnownedJob)
        /// A waiting operation's task was cancelled: resource, direction, operation number.
        case cancel(key: ResourceKey, direction: Direction, operation: UInt64)
        /// A name resolution's answer is in (from a lookup thread), for the connect holding the token.
        case resolved(Token)
        /// The signals this loop's sequences watch changed: the loop thread's mask follows them.
        case applySignalMask
    }

    /// Starts the loop thread, which creates its poller with `makePoller` (so the poller, which is not
    /// Sendable, never crosses threads). Throws what the factory threw.
    public init(name: String = "readiness-loop", jobs: JobIsolation = .automatic,
                makePoller: @escaping @Sendable () throws(PollerError) -> any Poller) throws(PollerError) {
        self.name = name
        self.jobs = jobs
        state = LoopState()
        serial = LoopSerialExecutor()
        serial.loop = self
        state.loop = self
        let box = Unmanaged.passRetained(StartBox(loop: self, makePoller: makePoller)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<StartBox>.fromOpaque(raw!).takeRetainedValue()
            box.loop.threadMain(box.makePoller)
            return nil
        }, box)
        guard status == 0 else {
            Unmanaged<StartBox>.fromOpaque(box).release()
            throw .system(operation: "pthread_create", errno: status)
        }
        pthread_detach(thread)
        let outcome: PollerError? = lock.withLock {
            while case .starting = phase { lock.wait() }
            if case .failed(let error) = phase { return error }
            return nil
        }
        if let outcome { throw outcome }
    }

    private final class StartBox {
        let loop: EventLoop
        let makePoller: @Sendable () throws(PollerError) -> any Poller
        init(loop: EventLoop, makePoller: @escaping @Sendable () throws(PollerError) -> any Poller) {
            self.loop = loop
            self.makePoller = makePoller
        }
    }

    // MARK: Threads

    /// Whether the caller runs on this loop's thread (while the loop runs).
    @inlinable public var inLoop: Bool { isLoopThread() }

    @usableFromInline
    func isLoopThread() -> Bool {
        running.load(ordering: .acquiring) && pthread_equal(pthread_self(), thread) != 0
    }

    // MARK: Executor

    /// Queues a job (a task's or an actor's) to run on the loop thread, in order; wakes the loop if it
    /// sleeps in the poller. After shutdown, jobs run on the global concurrent executor.
    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// Same as the `ExecutorJob` overload.
    public func enqueue(_ job: UnownedJob) {
        submit(.job(job))
    }

    /// This loop as an actor's executor (`nonisolated var unownedExecutor`). Its identity is an object
    /// the loop owns, so that the loop knows an actor's job (run isolated) from a task's (run on the
    /// task executor); it runs on the loop thread like every job.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: serial)
    }

    /// Crashes unless called on the loop thread, or, once the loop stopped, on the thread that runs the
    /// jobs of actors isolated to it (what `assumeIsolated` relies on).
    public func checkIsolated() {
        precondition(isIsolating(), "not on the event loop \(name)'s thread")
    }

    /// Whether the caller runs on the loop thread (the runtime's isolation check), or, once the loop
    /// stopped, on the thread that runs the jobs of actors isolated to it.
    public func isIsolatingCurrentContext() -> Bool? { isIsolating() }

    func isIsolating() -> Bool { isLoopThread() || isOrphanRunner() }

    /// Hands a submission to the loop; wakes it only if it sleeps in the poller.
    func submit(_ submission: Submission) {
        // From the loop thread (most resumes: readiness it dispatched, a timer it fired): it is awake
        // and runs `local` before it next polls.
        if isLoopThread(), takesLocal, !queued.load(ordering: .acquiring) {
            local.append(submission)
            return
        }
        lock.lock()
        switch phase {
        case .running, .stopping, .starting:
            queue.append(submission)
            queued.store(true, ordering: .releasing)
            let wake = sleeping
            sleeping = false
            let waker = self.waker
            lock.unlock()
            if wake { try? waker?.wake() }
        case .stopped, .failed:
            // The thread is gone: a task still preferring this loop runs on the global pool from now
            // on, an actor isolated to it on the orphan runner (Docs/Async.md, "After shutdown").
            let startRunner = takeOrphan(submission)
            lock.unlock()
            if startRunner { startOrphanRunner() }
            Self.handOff(submission)
        }
    }

    /// A submission the stopped loop will not run: a task's job goes to the global pool (an actor's
    /// went to the orphan runner: `takeOrphan`); a cancel or an answered lookup has nothing left to
    /// act on.
    private static func handOff(_ submission: Submission) {
        switch submission {
        case .job(let job): globalConcurrentExecutor.enqueue(ExecutorJob(job))
        case .isolatedJob, .cancel, .resolved, .applySignalMask: break
        }
    }

    /// Under `lock`, once the loop stopped: queues an actor's job for the orphan runner. True when the
    /// runner must be started (the caller does, after unlocking).
    private func takeOrphan(_ submission: Submission) -> Bool {
        guard case .isolatedJob(let job) = submission else { return false }
        orphans.append(job)
        guard !orphanRunnerActive else {
            lock.broadcast()   // a runner waiting for more (its linger) takes it
            return false
        }
        orphanRunnerActive = true
        return true
    }

    /// Starts the thread that runs the orphaned actors' jobs. Without a thread to be had, they go to
    /// the global pool (not serial: what every stopped loop did before the runner existed).
    private func startOrphanRunner() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            Unmanaged<EventLoop>.fromOpaque(raw!).takeRetainedValue().runOrphans()
            return nil
        }, box)
        if status == 0 {
            pthread_detach(thread)
            return
        }
        Unmanaged<EventLoop>.fromOpaque(box).release()
        let jobs: [UnownedJob] = lock.withLock {
            defer {
                orphans = []
                orphanRunnerActive = false
            }
            return orphans
        }
        for job in jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// The orphan runner: runs the queued actors' jobs in order, isolated to the loop's serial
    /// executor, until none has come for `orphanRunnerLinger` seconds; then the thread ends (the next
    /// orphan starts another). The linger spares a thread per call to an actor that is called one
    /// call after another (a reviewer counted 9,020 threads for 20,000 calls without it).
    private func runOrphans() {
        lock.withLock { orphanThread = pthread_self() }
        while true {
            let jobs: [UnownedJob] = lock.withLock {
                if orphans.isEmpty { lock.wait(seconds: Self.orphanRunnerLinger) }
                if orphans.isEmpty {
                    orphanRunnerActive = false
                    orphanThread = nil
                }
                defer { orphans = [] }
                return orphans
            }
            if jobs.isEmpty { return }
            for job in jobs { job.runSynchronously(on: asUnownedSerialExecutor()) }
        }
    }

    /// How long the orphan runner waits for more jobs before its thread ends.
    private static let orphanRunnerLinger = 1

    /// Whether the caller is the orphan runner (an actor isolated to the stopped loop runs there).
    private func isOrphanRunner() -> Bool {
        lock.withLock { orphanThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// `signals` begin (`watching`) or stop being watched by one of this loop's sequences. The loop
    /// thread inherits the mask of the thread that made the loop, and Swift concurrency's threads
    /// block every asynchronous signal: a `raise` by code on the loop would stay pending there for ever
    /// (libuv's and libevent's signal tests raise from a callback on the loop thread). So a watched
    /// signal is unblocked on the loop thread while a sequence watches it, and one the thread blocked
    /// at its start is blocked again once none does: a program that blocks a signal on purpose (to
    /// read it from a signalfd) gets its mask back. The counts change here, at once, under the lock;
    /// the loop thread then sets its mask from them (`applySignalMask`), so the order in which the
    /// changes reach it does not matter.
    func watchSignals(_ signals: [Signal], _ watching: Bool) {
        lock.withLock {
            for signal in signals {
                let count = watchedSignals[signal.rawValue, default: 0]
                watchedSignals[signal.rawValue] = watching ? count + 1 : Swift.max(0, count - 1)
            }
        }
        if inLoop { applySignalMask() } else { submit(.applySignalMask) }
    }

    /// On the loop thread: unblocks the signals a sequence watches; blocks again those no sequence
    /// watches that were blocked when the thread began. A signal it unblocks that was blocked here
    /// first has the instances pending for this thread taken off (`sigtimedwait`, no wait): they were
    /// raised by code on the loop while no sequence of it watched, before the call that made the new
    /// sequence (the change reaches the loop as a job, after the jobs submitted before that call and
    /// before those submitted after it), and a sequence gets the deliveries from the call on (libuv's
    /// `we_get_signal` counts exactly across a stop and a restart). Only the thread's own: one sent to
    /// the process while every thread blocked it (a SIGTERM during a program's start-up) is the new
    /// sequence's. Before, this was done only when `signals` was called on the loop thread: called
    /// elsewhere, the stale raise reached the new sequence.
    private func applySignalMask() {
        if state.signalMaskFinal { return }
        let counts = lock.withLock { watchedSignals }
        var unblock = sigset_t(), block = sigset_t(), current = sigset_t()
        sigemptyset(&unblock)
        sigemptyset(&block)
        pthread_sigmask(SIG_BLOCK, nil, &current)
        var stale: [Signal] = []
        var unblocked: Set<CInt> = []
        for (signal, count) in counts {
            if count > 0 {
                sigaddset(&unblock, signal)
                unblocked.insert(signal)
                if !state.unblockedForSequences.contains(signal), sigismember(&current, signal) == 1 {
                    stale.append(Signal(rawValue: signal))
                }
            } else if sigismember(&state.startMask, signal) == 1 {
                sigaddset(&block, signal)
            }
        }
        if !stale.isEmpty { SignalSubscription.discardPendingForThisThread(stale) }
        state.unblockedForSequences = unblocked
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        pthread_sigmask(SIG_BLOCK, &block, nil)
    }

    private func runJob(_ job: UnownedJob, isolated: Bool) {
        state.jobsRun &+= 1
        state.budget = LoopState.operationBudget
        state.writeYieldDue = false
        switch jobs {
        case .automatic where isolated, .serialExecutor:
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        case .automatic, .taskExecutor:
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    // MARK: The loop

    private func threadMain(_ makePoller: @Sendable () throws(PollerError) -> any Poller) {
        thread = pthread_self()
        LoopThreads.markCurrent()
        pthread_sigmask(SIG_SETMASK, nil, &state.startMask)
        _ = rd_name_current_thread(name)
        let poller: any Poller
        do {
            poller = try makePoller()
        } catch {
            lock.withLock {
                phase = .failed(error)
                lock.broadcast()
            }
            return
        }
        state.start(with: poller)
        running.store(true, ordering: .releasing)
        lock.withLock {
            waker = poller.waker
            descriptorLimit = poller.capabilities.maxDescriptor
            phase = .running
            lock.broadcast()
        }
        var batch: [Submission] = []
        batch.reserveCapacity(256)
        var localBatch: [Submission] = []
        localBatch.reserveCapacity(256)
        local.reserveCapacity(256)
        takesLocal = true
        var waitFailures = 0
        var failure: PollerError?
        while true {
            // 1. What other threads (and resumed continuations) submitted, and what that work submits
            //    in turn (a task hopping back onto the loop), up to a budget: a hop costs no poller call.
            var stopping = false
            rounds: for _ in 0..<64 {
                lock.lock()
                swap(&batch, &queue)
                queued.store(false, ordering: .relaxed)
                if case .stopping = phase { stopping = true }
                lock.unlock()
                swap(&localBatch, &local)
                if batch.isEmpty && localBatch.isEmpty { break }
                // `local` first: it was submitted before anything now in `batch` (`local`). A job that
                // called fork() leaves, in the child, a copy of this thread that must run none of the
                // parent's other jobs (a task resumed in the same turn would read the parent's bytes):
                // the copy leaves the loop at once, the jobs not run dropped with it (below).
                for submission in localBatch {
                    handle(submission)
                    if state.isForkedCopy { break rounds }
                }
                localBatch.removeAll(keepingCapacity: true)
                for submission in batch {
                    handle(submission)
                    if state.isForkedCopy { break rounds }
                }
                batch.removeAll(keepingCapacity: true)
            }
            if stopping || state.isForkedCopy { break }

            // 2. Wait: not at all when more work is queued or a stop was asked for since the last look
            //    (its requester saw the loop awake and did not wake it), else until the nearest deadline.
            lock.lock()
            var stopAsked = false
            if case .stopping = phase { stopAsked = true }
            let idle = queue.isEmpty && local.isEmpty && !stopAsked && state.yielded.isEmpty
            sleeping = idle
            lock.unlock()
            // A deregister the poller refused is asked again before the wait, and the wait is kept
            // short while one is still refused (its registration may hold a closed socket's file,
            // which only the next try lets go: an idle loop would keep it for ever); so is the wait
            // while an io_uring cancel could not be submitted (a timed-out read waited for the peer).
            let refused = state.retryDeregisters() || state.completions?.hasCancelsToRetry == true
            var timeout: Duration? = idle ? state.timers.timeout() : .zero
            if refused, timeout.map({ $0 > Self.deregisterRetryPause }) ?? true { timeout = Self.deregisterRetryPause }
            var waitError: PollerError?
            do {
                try poller.wait(into: state.events, timeout: timeout)
            } catch {
                waitError = error
            }
            lock.lock()
            sleeping = false
            lock.unlock()
            if let waitError {
                // Out of descriptors or memory may pass: pause (no busy loop) and wait again. Any
                // other failure, or exhaustion that lasts, ends the loop as a shutdown does, every
                // pending operation failing with `.poller(error)`; the process goes on.
                // (`failure`, the loop's end, is set only when it ends here: a shutdown asked for
                // during a pause is a shutdown, not the shortage that a later wait may not meet.)
                if waitError.isResourceExhausted, waitFailures < Self.waitRetries {
                    waitFailures += 1
                    usleep(Self.waitRetryPauseMicroseconds)
                    // Timers go on meanwhile (no event is read: the buffer of a failed wait holds
                    // none): a sleep ends, a deadline fails its operation, and a read's timeout that
                    // closes an idle connection is what ends a shortage of descriptors. Tasks that
                    // spent their budget go on too. (Before, both stopped until a wait succeeded.)
                    state.fireTimers(now: MonotonicClock.nowNanoseconds)
                    if !state.yielded.isEmpty { state.resumeYielded() }
                    continue
                }
                failure = waitError
                break
            }
            waitFailures = 0

            state.iterations &+= 1
            // 3. Readiness, then timers.
            state.dispatchEvents()
            state.completions?.dispatch(state)
            state.fireTimers(now: MonotonicClock.nowNanoseconds)
            // 4. Tasks that spent their operation budget go on behind that I/O and those timers.
            if !state.yielded.isEmpty { state.resumeYielded() }
        }
        if state.isForkedCopy {
            // A forked child's copy of this thread (a job called fork()): it lets go of the poller's
            // copies and ends, doing nothing else. No job runs, here or handed to another thread (the
            // child has none: only this thread crossed the fork), no waiter is resumed (that would
            // enqueue jobs), no lock is taken (another thread of the parent may have held one at the
            // fork), and the sockets are not closed one by one: their copies go with the child, or at
            // an exec (close-on-exec), and closing a Unix listener would unlink the parent's path.
            try? poller.close()
            return
        }
        // A failed wait ends the loop as a shutdown does, and says so from now on (`isShuttingDown`,
        // operations and `signals` refused) while it closes what it held.
        lock.withLock {
            if case .running = phase { phase = .stopping }
            if let failure { stopReason = .poller(failure) }
        }
        finish(poller, batch: &batch, reason: failure.map { .poller($0) } ?? .shutdown)
    }

    /// How many rounds of queued jobs the shutdown runs on the loop thread before it hands the rest to
    /// the global pool (each round runs every job queued at its start; the tasks resumed with
    /// `.shutdown` usually end in a few).
    static let drainRounds = 1_000

    /// How long a loop whose waits fail for want of descriptors or memory keeps trying (100 × 10 ms).
    private static let waitRetries = 100
    private static let waitRetryPauseMicroseconds: UInt32 = 10_000
    /// The longest wait while a deregister the poller refused is still to be asked again.
    private static let deregisterRetryPause = Duration.milliseconds(10)

    private func handle(_ submission: Submission) {
        switch submission {
        case .job(let job): runJob(job, isolated: false)
        case .isolatedJob(let job): runJob(job, isolated: true)
        case .cancel(let key, let direction, let operation): state.cancel(key: key, direction: direction, operation: operation)
        case .resolved(let token): state.resolutionAnswered(token)
        case .applySignalMask: applySignalMask()
        }
    }

    /// Shutdown on the loop thread: every pending operation fails with `.shutdown`, every owned
    /// descriptor is closed (once), then the tasks they resumed run until nothing is queued.
    private func finish(_ poller: any Poller, batch: inout [Submission], reason: LoopError) {
        let watchers = lock.withLock { () -> [WeakSubscription] in
            defer { signalWatchers = [] }
            return signalWatchers
        }
        // The thread's mask as it began, before the watched signals get their old actions back: a
        // signal a program blocks on purpose is never met here under its default action.
        pthread_sigmask(SIG_SETMASK, &state.startMask, nil)
        state.signalMaskFinal = true   // (review: a sequence released during the drain reopened it)
        for watcher in watchers { watcher.subscription?.stop() }
        state.shutDown(reason: reason)
        state.resumeYielded()   // their operations fail with `.shutdown`
        var rounds = 0
        while true {
            lock.lock()
            // A task that enqueues itself again each time it runs (`Task.yield()` in a loop, which
            // puts the job back on the loop) would keep the queue from ever emptying: after
            // `drainRounds` rounds what is queued goes to the global pool with whatever comes later.
            if (queue.isEmpty && local.isEmpty) || rounds == Self.drainRounds {
                phase = .stopped      // from now on submissions go to the global pool or the orphan runner
                takesLocal = false
                swap(&batch, &queue)
                queued.store(false, ordering: .relaxed)
                batch.insert(contentsOf: local, at: 0)   // submitted first (`local`)
                local.removeAll()
                // Actors' jobs still queued go to the orphan runner ahead of any that come later.
                var startRunner = false
                for submission in batch where takeOrphan(submission) { startRunner = true }
                lock.unlock()
                if startRunner { startOrphanRunner() }
                for submission in batch { Self.handOff(submission) }
                batch.removeAll(keepingCapacity: true)
                break
            }
            swap(&batch, &queue)
            queued.store(false, ordering: .relaxed)
            lock.unlock()
            batch.insert(contentsOf: local, at: 0)   // submitted first (`local`)
            local.removeAll(keepingCapacity: true)
            rounds += 1
            for submission in batch { handle(submission) }
            batch.removeAll(keepingCapacity: true)
        }
        // Tasks that spent their budget in this drain (a task that retries what fails with `.shutdown`
        // never suspends otherwise, and would hold the loop thread for ever) go on from the global
        // pool, where every operation fails with `.shutdown`.
        state.resumeYielded()
        try? poller.close()
        state.poller = nil
        running.store(false, ordering: .releasing)
        // Only now (every descriptor closed) do the shutdown callers return.
        let waiters: [UnsafeContinuation<Void, Never>] = lock.withLock {
            isFinished = true
            lock.broadcast()
            defer { shutdownWaiters = [] }
            return shutdownWaiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Shutdown

    private func requestStop() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        switch phase {
        case .running:
            phase = .stopping
            state.stopRequested.store(true, ordering: .relaxed)
            let wake = sleeping
            sleeping = false
            if wake { try? waker?.wake() }
            return true
        case .stopping: return true
        default: return false
        }
    }

    /// Shuts the loop down and waits until it has: every pending operation fails with
    /// ``LoopError/shutdown``, every socket and listener it owns is closed exactly once, the poller is
    /// closed. Later calls return at once. Callable from any task, on the loop or not.
    public func shutdown() async {
        _ = requestStop()
        await finished()
    }

    /// Marks the loop as draining (a graceful shutdown has begun).
    func beginDraining() { lock.withLock { draining = true } }

    /// Keeps `subscription` to stop when the loop shuts down; false (nothing kept) when it has begun to.
    func watch(_ subscription: SignalSubscription) -> Bool {
        lock.withLock {
            switch phase {
            case .starting, .running:
                signalWatchers.removeAll { $0.subscription == nil }
                signalWatchers.append(WeakSubscription(subscription: subscription))
                return true
            default:
                return false
            }
        }
    }

    /// Whether a graceful shutdown has begun (``shutdown(gracePeriod:)``).
    var isDraining: Bool { lock.withLock { draining } }

    /// Returns once the loop has finished (every descriptor closed), without asking it to stop.
    func finished() async {
        let id = nextFinishWaiterID()
        await withUnsafeContinuation { queueFinishWaiter(id, $0, unlessCancelled: false) }
    }

    /// ``finished()``, or sooner: when the calling task is cancelled (before or during the wait).
    func finishedUnlessCancelled() async {
        let id = nextFinishWaiterID()
        await withTaskCancellationHandler {
            await withUnsafeContinuation { queueFinishWaiter(id, $0, unlessCancelled: true) }
        } onCancel: {
            let waiter: UnsafeContinuation<Void, Never>? = lock.withLock {
                guard let index = shutdownWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return shutdownWaiters.remove(at: index).continuation
            }
            waiter?.resume()
        }
    }

    private func nextFinishWaiterID() -> UInt64 {
        lock.withLock {
            lastWaiterID &+= 1
            return lastWaiterID
        }
    }

    /// Resumes `continuation` at once when the loop has finished (or, `unlessCancelled`, when the task is
    /// cancelled already: the cancellation handler may have run before this was queued); queues it
    /// otherwise, for the loop's end to resume.
    private func queueFinishWaiter(
        _ id: UInt64, _ continuation: UnsafeContinuation<Void, Never>, unlessCancelled: Bool
    ) {
        lock.lock()
        if case .failed = phase { isFinished = true }
        if isFinished || (unlessCancelled && Task.isCancelled) {
            lock.unlock()
            continuation.resume()
        } else {
            shutdownWaiters.append((id, continuation))
            lock.unlock()
        }
    }

    /// Asks the loop to stop, without waiting (``EventLoopGroup/syncShutdown()`` asks every loop first).
    func requestShutdown() {
        _ = requestStop()
    }

    /// Like ``shutdown()``, blocking the calling thread until the loop has finished. Called on the
    /// thread of any event loop (this one, which cannot wait for its own end, or another: two loops
    /// each waiting for the other would never end, SwiftNIO traps there), it asks for the shutdown and
    /// returns at once: the loop stops when its current job returns. Use `await shutdown()` there.
    public func syncShutdown() {
        _ = requestStop()
        if isLoopThread() || LoopThreads.isCurrent { return }
        lock.withLock {
            while !isFinished {
                if case .failed = phase { return }
                lock.wait()
            }
        }
    }

    /// nil while the loop runs; once a shutdown was asked for (or the poller failed), what operations
    /// report: `.shutdown`, or `.poller(error)` for a loop whose poller's wait failed.
    var stopError: LoopError? {
        lock.withLock {
            switch phase {
            case .starting, .running: nil
            default: stopReason
            }
        }
    }

    /// Whether ``shutdown()`` has been asked for (or has finished).
    public var isShuttingDown: Bool {
        lock.withLock {
            switch phase {
            case .starting, .running: false
            default: true
            }
        }
    }

    // MARK: Running on the loop

    /// Runs `body` on the loop thread with its state. On the loop already, in a task preferring it,
    /// from nonisolated code or an actor isolated to the loop, `body` runs at once, with no hop;
    /// otherwise the task takes this loop's executor preference for `body` (and hops there if it is
    /// elsewhere), `body` running nonisolated, so that every resumption inside `body` runs on the
    /// loop too. On the loop thread, a task that does not prefer the loop (`Task.immediate` started
    /// there, or an actor isolated to the loop in such a task) takes the preference as well: nonisolated
    /// code would otherwise resume on the global pool after its first wait and touch the loop's state
    /// from there. So does code isolated to another actor (`isolatesHere`): a plain actor runs on the
    /// loop thread when a task preferring the loop enters it while it is free, but a resumption queued
    /// on it runs wherever the actor runs then, on another thread when one holds it (test
    /// `plainActorWaitResumesOnLoop`). Fails with `.shutdown` when the loop no longer runs.
    nonisolated(nonsending)
    func onLoop<T>(_ body: nonisolated(nonsending) (LoopState) async throws(LoopError) -> T) async throws(LoopError) -> T {
        // One call of `body` and nothing else that suspends: this is inlined into every operation,
        // whose frame is in every idle connection's task. A job out of budget takes the out-of-line
        // path, which yields (`run`); a yield here, before the body, kept the body's captures in the
        // frame across it (3 task-allocator slabs per idle connection instead of 2).
        if isLoopThread(), state.budget > 0, taskPrefersLoop(), isolatesHere(#isolation) {
            state.budget &-= 1
            return try await body(state)
        }
        return try await hopOnLoop(body)
    }

    /// Whether code isolated to `isolation` resumes on the loop thread after a wait: nonisolated code
    /// in a task preferring the loop does, and so does an actor isolated to the loop. Another actor's
    /// code resumes where that actor runs: on whatever thread holds it then (a task of another loop,
    /// of the global pool), the loop's state touched from there.
    @inline(__always)
    func isolatesHere(_ isolation: (any Actor)?) -> Bool {
        guard let isolation else { return true }
        // The loop's serial executor identity, or the loop itself (an executor built by hand as
        // `UnownedSerialExecutor(ordinary: loop)`: its jobs run on the loop thread too).
        guard let executor = isolation.unownedExecutor.asSerialExecutor() else { return false }
        let identity = ObjectIdentifier(executor as AnyObject)
        return identity == ObjectIdentifier(serial) || identity == ObjectIdentifier(self)
    }

    /// The loop's state for an operation that is to run inline (`onLoop`'s fast path, taking one unit
    /// of the job's budget): on the loop thread, in a task preferring the loop, with budget left; nil
    /// otherwise (the operation then goes through ``onLoop(_:)``, out of line).
    @inline(__always)
    func stateInline(_ isolation: (any Actor)?) -> LoopState? {
        guard isLoopThread(), state.budget > 0, taskPrefersLoop(), isolatesHere(isolation) else { return nil }
        state.budget &-= 1
        return state
    }

    /// `body` with the loop's state at once, synchronously, when the caller runs on the loop thread and
    /// its task has budget left; nil otherwise (the caller then goes through ``onLoop(_:)``). Whatever
    /// the task prefers: `body` cannot suspend, so no resumption can land off the loop, and an operation
    /// that completes at once skips `onLoop`'s executor-preference check (a status-record lock).
    func onLoopNow<T>(_ body: (LoopState) throws(LoopError) -> T) throws(LoopError) -> T? {
        guard isLoopThread(), state.budget > 0 else { return nil }
        state.budget &-= 1
        return try body(state)
    }

    /// Whether the current task prefers this loop as its task executor.
    private func taskPrefersLoop() -> Bool {
        let executor = asUnownedTaskExecutor()
        return withUnsafeCurrentTask { task in task?.unownedTaskExecutor == executor }
    }

    /// `onLoop` off the loop. Not inlined: the preference and its closure would otherwise take room in
    /// the async frame of every operation, on the loop too (Docs/Async.md, "Memory per idle connection").
    @inline(never)
    nonisolated(nonsending)
    private func hopOnLoop<T>(_ body: nonisolated(nonsending) (LoopState) async throws(LoopError) -> T) async throws(LoopError) -> T {
        try await withTaskExecutorPreference(self) { () async throws(LoopError) -> T in
            try await run(body)
        }
    }

    private func run<T>(_ body: nonisolated(nonsending) (LoopState) async throws(LoopError) -> T) async throws(LoopError) -> T {
        guard isLoopThread() else { throw stopError ?? .shutdown }   // the loop ended: why
        // A task that started ``LoopState/operationBudget`` operations in one job without suspending
        // waits for the loop's next poller wait, its readiness and its timers (tokio's coop budget):
        // the loop's other tasks, I/O and timers are never starved by one whose I/O is always ready.
        state.budget &-= 1
        if state.budget < 0 { try await state.yieldToPoller() }
        return try await body(state)
    }
}

/// The serial executor identity of an ``EventLoop`` (what `asUnownedSerialExecutor()` returns): an
/// actor's jobs come through here, and run isolated on the loop thread.
final class LoopSerialExecutor: SerialExecutor, @unchecked Sendable {
    // Set once in the loop's init, before the loop can be reached; the loop owns this object, and an
    // actor that uses it holds the loop (its `unownedExecutor` comes from the loop).
    unowned(unsafe) var loop: EventLoop!

    func enqueue(_ job: consuming ExecutorJob) {
        loop.submit(.isolatedJob(UnownedJob(job)))
    }

    func enqueue(_ job: UnownedJob) {
        loop.submit(.isolatedJob(job))
    }

    func checkIsolated() {
        loop.checkIsolated()
    }

    func isIsolatingCurrentContext() -> Bool? { loop.isIsolating() }
}

extension EventLoop {
    /// The loop's poller's capabilities: which backend it runs on (`name`), and what that backend
    /// can report (Docs/Contract.md). Fails with ``LoopError/shutdown`` once the loop stopped.
    nonisolated(nonsending) public func capabilities() async throws(LoopError) -> Capabilities {
        try await onLoop { (state) async throws(LoopError) -> Capabilities in
            guard let poller = state.poller, !state.isShutDown else { throw state.shutdownReason }
            return poller.capabilities
        }
    }
}

/// Which threads are event loops' (any loop's): `syncShutdown` must not block one (a thread-specific
/// flag, set by each loop thread as it starts).
enum LoopThreads {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Marks the calling thread as a loop's.
    static func markCurrent() { pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1)) }

    /// Whether the calling thread is a loop's.
    static var isCurrent: Bool { pthread_getspecific(key) != nil }
}
