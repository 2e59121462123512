#if canImport(Glibc)
import Glibc
#endif
import CReadinessNet

/// A POSIX signal that can be watched: its number, with names for the ones servers handle.
public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The signal's number (SIGINT is 2).
    public let rawValue: CInt
    /// The signal numbered `rawValue` (any number: ``invalidReason`` says whether it can be watched).
    public init(rawValue: CInt) { self.rawValue = rawValue }

    /// SIGINT (Ctrl-C).
    public static let interrupt = Signal(rawValue: SIGINT)
    /// SIGTERM: asked to stop (what service managers and `kill` send first).
    public static let terminate = Signal(rawValue: SIGTERM)
    /// SIGHUP: the terminal went away; by convention, reload configuration.
    public static let hangup = Signal(rawValue: SIGHUP)
    /// SIGQUIT.
    public static let quit = Signal(rawValue: SIGQUIT)
    /// SIGUSR1: the application's own.
    public static let user1 = Signal(rawValue: SIGUSR1)
    /// SIGUSR2: the application's own.
    public static let user2 = Signal(rawValue: SIGUSR2)
    /// SIGCHLD: a child process changed state.
    public static let child = Signal(rawValue: SIGCHLD)
    /// SIGWINCH: the terminal's size changed.
    public static let windowChange = Signal(rawValue: SIGWINCH)
    /// SIGPIPE (sockets of this package never raise it: they write with MSG_NOSIGNAL).
    public static let pipe = Signal(rawValue: SIGPIPE)
    /// SIGALRM.
    public static let alarm = Signal(rawValue: SIGALRM)

    /// The highest number that can be watched (SIGRTMAX).
    public static var maximum: CInt { rd_signal_max() }

    /// Why this signal cannot be watched, or nil: out of range, a signal no process can catch
    /// (SIGKILL, SIGSTOP), or one the kernel raises for a fault in the running code (SIGSEGV, SIGBUS,
    /// SIGFPE, SIGILL, SIGTRAP, SIGSYS: a handler that returns would fault again at once), or one
    /// the C library keeps for itself (glibc's 32 and 33, below SIGRTMIN: sigaction refuses them).
    public var invalidReason: String? {
        if rawValue < 1 || rawValue > Self.maximum { return "signal \(rawValue) is outside 1...\(Self.maximum)" }
        if rawValue > SIGSYS && rawValue < rd_signal_rtmin() { return "\(self) is kept by the C library (below SIGRTMIN)" }
        switch rawValue {
        case SIGKILL, SIGSTOP: return "\(self) cannot be caught"
        case SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS: return "\(self) reports a fault in the running code"
        default: return nil
        }
    }

    /// The signal's name ("SIGTERM"), or "signal N".
    public var description: String {
        switch rawValue {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        case SIGHUP: "SIGHUP"
        case SIGQUIT: "SIGQUIT"
        case SIGUSR1: "SIGUSR1"
        case SIGUSR2: "SIGUSR2"
        case SIGCHLD: "SIGCHLD"
        case SIGWINCH: "SIGWINCH"
        case SIGPIPE: "SIGPIPE"
        case SIGALRM: "SIGALRM"
        case SIGKILL: "SIGKILL"
        case SIGSTOP: "SIGSTOP"
        case SIGSEGV: "SIGSEGV"
        default: "signal \(rawValue)"
        }
    }
}

/// Signals delivered to a descriptor: while it is open, every delivery of one of its signals to the
/// process writes the signal's number to a pipe whose read end is ``descriptor``; a poller (or an
/// `EventLoop`) waits for it to be readable, then ``drain()`` returns what came.
///
/// - Every subscription of a signal gets every delivery of it (several loops, several watchers).
/// - Deliveries of one signal may merge into one, as the kernel merges pending signals: a subscriber
///   that does not drain loses none of its signals' *kinds*, only repeats: its pipe holds 64 KiB of
///   deliveries, and a delivery the full pipe refuses is kept as a flag for its signal, which the next
///   ``drain()`` returns after the pipe's (as libev keeps a pending flag per signal).
/// - While at least one subscription watches a signal, the process's action for it is this
///   package's handler (the default action, such as SIGINT's exit, does not happen); when the last one
///   closes, the action it replaced is put back.
/// - The handler is async-signal-safe (one `write` per subscriber, errno kept), runs on whichever
///   thread the kernel picks, and restarts interrupted system calls (`SA_RESTART`).
/// - At most 256 subscriptions at once (``SocketError/Kind/resourceExhausted`` beyond).
public final class SignalSubscription: @unchecked Sendable {
    // Immutable after init except `isClosed`, which `lock` guards; the registry's lock serialises the
    // C slot table and the handler installation.
    /// The signals it watches.
    public let signals: Set<Signal>
    /// The pipe's read end (non-blocking, close-on-exec): readable when a signal came.
    public let descriptor: CInt
    private let writeEnd: CInt
    private let slot: CInt
    /// The process generation it was made in (`rd_signal_generation`): in a child made by fork the
    /// inherited subscription's slot was freed (and may be another's), its counts reset.
    private let generation: UInt
    /// Every subscription's state is guarded by one lock, the registry's `subscriptionLock`, which a
    /// `fork()` cannot leave held in the child (a lock of each subscription's own would be copied held
    /// when another thread was in `drain()` at the fork, and the child's `close()` would wait for ever).
    private var lock: PThreadMutex { SignalRegistry.shared.subscriptionLock }
    private var isClosed = false
    private var isStopped = false
    /// Signals the full pipe refused, taken from the slot when it was freed (``stop()``), for ``drain()``.
    private var overflow: UInt64 = 0

    /// Watches `signals` (at least one; each must be watchable: ``Signal/invalidReason``).
    public init(_ signals: some Sequence<Signal>) throws(SocketError) {
        let set = Set(signals)
        guard !set.isEmpty else { throw SocketError(.invalidArgument, operation: "watch signals: no signal given") }
        if let reason = set.lazy.compactMap(\.invalidReason).first {
            throw SocketError(.invalidArgument, operation: "watch signals: \(reason)")
        }
        var ends: [CInt] = [-1, -1]
        guard rd_signal_pipe(&ends) == 0 else {
            throw SocketError(errno: errno, operation: "watch signals: pipe2")
        }
        var mask: UInt64 = 0
        for signal in set { mask |= 1 << UInt64(signal.rawValue - 1) }
        let slot: CInt, generation: UInt
        do {
            (slot, generation) = try SignalRegistry.shared.subscribe(fd: ends[1], mask: mask, signals: set)
        } catch {
            Glibc.close(ends[0]); Glibc.close(ends[1])
            throw error
        }
        self.signals = set
        self.descriptor = ends[0]
        self.writeEnd = ends[1]
        self.slot = slot
        self.generation = generation
    }

    /// The signals that came since the last call, oldest first (empty when none): one entry per
    /// delivery the pipe held.
    public func drain() -> [Signal] {
        lock.withLock {
            guard !isClosed else { return [] }
            var found: [Signal] = []
            var bytes = [UInt8](repeating: 0, count: 64)
            while true {
                let n = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if n > 0 {
                    for byte in bytes[..<n] where byte != 0 { found.append(Signal(rawValue: CInt(byte))) }
                    if n < bytes.count { break }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            // Deliveries whose byte the full pipe refused: each kind once, after what the pipe held.
            let inherited = UInt(rd_signal_generation()) != generation
            let refused = overflow | (isStopped || inherited ? 0 : rd_signal_take_overflow(slot))
            overflow = 0
            for number in 1...UInt64(RD_SIGNAL_MAX) where refused & (1 << (number - 1)) != 0 {
                found.append(Signal(rawValue: CInt(number)))
            }
            return found
        }
    }

    /// Makes ``descriptor`` readable without a signal (a zero byte, which ``drain()`` skips): wakes a
    /// waiter so that it can see that the subscription is closing.
    public func wake() {
        var zero: UInt8 = 0
        _ = lock.withLock { isClosed ? -1 : write(writeEnd, &zero, 1) }
    }

    /// Stops watching: no later signal reaches the pipe, and the action each signal had before is put
    /// back when no subscription watches it any more. The pipe stays open (``wake()`` still works, what
    /// came before can still be drained) until ``close()``. Later calls do nothing.
    public func stop() {
        // Under the lock: a `close()` racing this one finds the slot freed before it closes the pipe
        // (the handler never writes to a number the pipe no longer holds). The registry takes its own
        // lock inside this one, never this one inside its own, so the order is fixed.
        lock.withLock {
            guard !isStopped else { return }
            isStopped = true
            overflow |= SignalRegistry.shared.unsubscribe(slot: slot, signals: signals, generation: generation)
        }
    }

    /// Whether ``stop()`` (or ``close()``) was called.
    public var stopped: Bool { lock.withLock { isStopped } }

    /// Whether a subscription of this process watches `signal` now (its handler is the package's).
    package static func isWatched(_ signal: Signal) -> Bool { SignalRegistry.shared.isWatched(signal.rawValue) }

    /// Takes off the instances of `signals` pending for the calling thread itself, never one pending
    /// for the process (sent with kill(2) while every thread blocked it), which another thread or a
    /// later unblock is owed: each is looked up in the thread's own pending set (SigPnd) and taken
    /// with a `sigtimedwait` that does not wait (the kernel takes a thread's own instance before a
    /// shared one). The signals must be blocked on this thread.
    package static func discardPendingForThisThread(_ signals: [Signal]) {
        var noWait = timespec()
        // A real-time signal may have many instances queued (one taken a round): rounds until none is
        // left, each re-reading the thread's own set (review: 20 queued outlasted the 8 rounds there
        // were); bounded all the same.
        for _ in 0..<Self.discardRounds {
            var mask: UInt64 = 0
            guard rd_signal_thread_pending(&mask) == 0 else { return }
            let pending = signals.filter { $0.rawValue >= 1 && $0.rawValue <= 64 && mask & (1 << UInt64($0.rawValue - 1)) != 0 }
            if pending.isEmpty { return }
            for signal in pending {
                var one = sigset_t()
                sigemptyset(&one)
                sigaddset(&one, signal.rawValue)
                _ = sigtimedwait(&one, nil, &noWait)
            }
        }
    }

    /// The most rounds ``discardPendingForThisThread(_:)`` makes: more than the instances a thread
    /// can have queued under a usual RLIMIT_SIGPENDING share.
    private static let discardRounds = 4096

    /// Stops watching (``stop()``) and closes both ends of the pipe. Call it once no task waits on
    /// ``descriptor``; later calls do nothing. Deinitialisation closes it too.
    public func close() {
        stop()
        let first = lock.withLock { () -> Bool in
            defer { isClosed = true }
            return !isClosed
        }
        guard first else { return }
        Glibc.close(descriptor)
        Glibc.close(writeEnd)
    }

    deinit { close() }
}

/// The process-wide table behind ``SignalSubscription``: how many subscriptions watch each signal
/// (the handler is installed for the first and the old action put back after the last).
final class SignalRegistry: @unchecked Sendable {
    static let shared = SignalRegistry()
    private let lock = PThreadMutex()
    /// Guards the state of every ``SignalSubscription`` (which takes it before `lock`, never after).
    let subscriptionLock = PThreadMutex()

    private init() {
        // fork(2) copies both locks as they are, without the threads that may hold them: both are
        // held across the fork (in the order the subscriptions take them) and made afresh in the child,
        // whose first `signals()` would otherwise wait for ever (as LookupPool).
        pthread_atfork({ SignalRegistry.shared.lockForFork() }, { SignalRegistry.shared.unlockAfterFork() },
                       { SignalRegistry.shared.resetInChild() })
    }

    private func lockForFork() {
        subscriptionLock.lockForFork()
        lock.lockForFork()
    }

    private func unlockAfterFork() {
        lock.unlockAfterFork()
        subscriptionLock.unlockAfterFork()
    }

    private func resetInChild() {
        lock.resetInChild()
        subscriptionLock.resetInChild()
    }
    private var watchers: [CInt: Int] = [:]
    /// The process generation `watchers` counts for: a child made by fork starts from none.
    private var generation: UInt = 0

    /// Forgets the parent's counts in a child made by fork (its hook freed every slot and put every
    /// action back). Under `lock`.
    private func catchUpAfterFork() -> UInt {
        let current = UInt(rd_signal_generation())
        if current != generation {
            watchers = [:]
            generation = current
        }
        return current
    }

    func subscribe(fd: CInt, mask: UInt64, signals: Set<Signal>) throws(SocketError) -> (slot: CInt, generation: UInt) {
        let result: Result<(slot: CInt, generation: UInt), SocketError> = lock.withLock {
            let generation = catchUpAfterFork()
            let slot = rd_signal_subscribe(fd, mask)
            if slot < 0 {
                return .failure(SocketError(.resourceExhausted, errno: errno, operation: "watch signals: every one of the \(RD_SIGNAL_SLOTS) subscriptions is taken"))
            }
            var installed: [CInt] = []
            // Asked for every signal, not only those no subscription watches yet: a child made by
            // fork has its actions put back while these counts are the parent's.
            for signal in signals {
                let result = rd_signal_install(signal.rawValue)
                if result < 0 {
                    let code = errno
                    for number in installed { _ = rd_signal_restore(number) }
                    rd_signal_unsubscribe(slot)
                    return .failure(SocketError(errno: code, operation: "watch signals: sigaction(\(signal))"))
                }
                if result == 0 { installed.append(signal.rawValue) }
            }
            for signal in signals { watchers[signal.rawValue, default: 0] += 1 }
            return .success((slot, generation))
        }
        return try result.get()
    }

    /// Whether some subscription watches `signal`.
    func isWatched(_ signal: CInt) -> Bool { lock.withLock { watchers[signal] != nil } }

    /// Frees the slot; returns the signals its full pipe refused that were not yet taken (as
    /// `rd_signal_take_overflow`), read once no handler writes to the slot and before another
    /// subscription can claim it.
    func unsubscribe(slot: CInt, signals: Set<Signal>, generation: UInt) -> UInt64 {
        lock.withLock {
            // Made by the parent of this forked child: its slot is free or another's now, and its
            // signals were not counted here.
            guard catchUpAfterFork() == generation else { return 0 }
            // The action is put back before the slot is freed: a signal that comes in between reaches
            // either this subscriber or the action it replaced, never nobody.
            for signal in signals {
                let left = watchers[signal.rawValue, default: 1] - 1
                watchers[signal.rawValue] = left > 0 ? left : nil
                if left <= 0 { _ = rd_signal_restore(signal.rawValue) }
            }
            rd_signal_unsubscribe(slot)
            return rd_signal_take_overflow(slot)
        }
    }
}
