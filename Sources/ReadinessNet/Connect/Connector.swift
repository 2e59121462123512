#if canImport(Glibc)
import Glibc
#endif

/// Connects with a timeout, running its own wait loop on a poller dedicated to the call (events of
/// other registrations on it would be consumed). For many connects in flight inside your own event loop,
/// use ``ConnectAttempt`` directly.
public enum Connector {
    /// Connects to one address.
    public static func connect(to address: SocketAddress, on poller: any Poller, timeout: Duration?,
                               localAddress: SocketAddress? = nil,
                               syscalls: any ConnectSyscalls = SystemConnectSyscalls()) throws(ConnectError) -> ConnectedSocket {
        let attempt = ConnectAttempt(to: address, poller: poller, token: 0, timeout: timeout,
                                     localAddress: localAddress, syscalls: syscalls)
        return try run([attempt], on: poller, attemptDelay: .zero)
    }

    /// Connects to the first address that accepts, in the Happy Eyeballs way (RFC 8305): families
    /// alternate, a new attempt starts every `attemptDelay` (or as soon as the newest one fails)
    /// while earlier ones continue; the first success wins and the others are cancelled and closed.
    /// When every attempt fails, the error lists them all. `timeout` bounds the whole call (and so
    /// each attempt): when it passes every attempt still running is closed and the call fails with
    /// `timedOut`, named by the oldest of them. At most ``HappyEyeballs/Options/maximumAttempts``'s
    /// default (16) addresses are tried, in that order, as the event loop's list connect tries them.
    public static func connect(to addresses: [SocketAddress], on poller: any Poller, timeout: Duration?,
                               attemptDelay: Duration = .milliseconds(250),
                               syscalls: any ConnectSyscalls = SystemConnectSyscalls(),
                               trace: Bool = false) throws(ConnectError) -> ConnectedSocket {
        let deadline = timeout.map { Deadline.after($0).nanoseconds }
        // The call's deadline bounds every attempt: none needs a timer of its own.
        // The loop's list connect stops at its options' cap: the same list ends the same way here.
        let cap = HappyEyeballs.Options().maximumAttempts
        let attempts = makeAttempts(to: Array(Connector.interleaveFamilies(addresses).prefix(cap)), on: poller, timeout: nil,
                                    syscalls: syscalls, trace: trace)
        guard !attempts.isEmpty else { throw ConnectError(.noAddress) }
        return try run(attempts, on: poller, attemptDelay: attemptDelay, deadline: deadline)
    }

    /// The attempts ``connect(to:on:timeout:attemptDelay:syscalls:trace:)`` runs, in RFC 8305 order,
    /// with tokens 0, 1, ...: for a caller that wants them afterwards (their traces), via ``run(_:on:attemptDelay:)``.
    /// One per address given: the connect's cap (``HappyEyeballs/Options/maximumAttempts``, 16) is
    /// the caller's to apply here.
    public static func makeAttempts(to addresses: [SocketAddress], on poller: any Poller, timeout: Duration?,
                                    syscalls: any ConnectSyscalls = SystemConnectSyscalls(),
                                    trace: Bool = false) -> [ConnectAttempt] {
        interleaveFamilies(addresses).enumerated().map { index, address in
            ConnectAttempt(to: address, poller: poller, token: Token(UInt64(index)), timeout: timeout,
                           syscalls: syscalls, trace: trace)
        }
    }

    /// RFC 8305 §4: start with the first address's family, then alternate families.
    public static func interleaveFamilies(_ addresses: [SocketAddress]) -> [SocketAddress] {
        guard let first = addresses.first else { return [] }
        var same = addresses.filter { $0.family == first.family }
        var other = addresses.filter { $0.family != first.family }
        var out: [SocketAddress] = []
        while !same.isEmpty || !other.isEmpty {
            if !same.isEmpty { out.append(same.removeFirst()) }
            if !other.isEmpty { out.append(other.removeFirst()) }
        }
        return out
    }

    /// Runs attempts made by ``makeAttempts(to:on:timeout:syscalls:trace:)`` to completion on a poller
    /// dedicated to the call: a wait loop around ``HappyEyeballs``, which holds the RFC 8305 logic.
    /// Each attempt's own timeout (``makeAttempts(to:on:timeout:syscalls:trace:)``) counts from its start;
    /// nothing bounds the call as a whole. An attempt already started (run before: a finished one would
    /// hand out its socket a second time), or made on another poller (its events would never come
    /// here: the call would wait for ever), is refused before anything starts: `ConnectError(.other)`
    /// with EINVAL and the attempt's address.
    public static func run(_ attempts: [ConnectAttempt], on poller: any Poller, attemptDelay: Duration) throws(ConnectError) -> ConnectedSocket {
        try run(attempts, on: poller, attemptDelay: attemptDelay, deadline: nil)
    }

    /// ``run(_:on:attemptDelay:)`` bounded as a whole: once `timeout` passes every attempt still
    /// running is closed and the call fails with `timedOut`, as ``connect(to:on:timeout:attemptDelay:syscalls:trace:)``
    /// does (the attempts' own timeouts, if any, still count from each one's start).
    public static func run(_ attempts: [ConnectAttempt], on poller: any Poller, attemptDelay: Duration,
                           timeout: Duration?) throws(ConnectError) -> ConnectedSocket {
        try run(attempts, on: poller, attemptDelay: attemptDelay, deadline: timeout.map { Deadline.after($0).nanoseconds })
    }

    /// `run`, ended with `timedOut` once `deadline` (monotonic nanoseconds) passes.
    static func run(_ attempts: [ConnectAttempt], on poller: any Poller, attemptDelay: Duration,
                    deadline: Int64?) throws(ConnectError) -> ConnectedSocket {
        if let unusable = attempts.first(where: { $0.machine.state != .idle || !$0.uses(poller) }) {
            throw ConnectError(.other, errno: EINVAL, address: unusable.address)
        }
        let timers = Timers(capacity: attempts.count + 1)
        let connect = HappyEyeballs(attempts: attempts, poller: poller, timers: timers,
                                    timerToken: unusedToken(besides: attempts), attemptDelay: attemptDelay)
        guard case .connected(let socket) = try drive(connect, on: poller, timers: timers, capacity: attempts.count + 1,
                                                       deadline: deadline) else {
            throw ConnectError(.noAddress)  // no attempt: only a resolution ends otherwise
        }
        return socket
    }

    /// The smallest token none of `attempts` uses (the timer's: no token is borrowed from the waker's).
    static func unusedToken(besides attempts: [ConnectAttempt]) -> Token {
        let used = Set(attempts.map(\.token))
        var candidate: UInt64 = 0
        while used.contains(Token(rawValue: candidate)) { candidate += 1 }
        return Token(rawValue: candidate)
    }

    /// Waits until `connect` ends: `.connected` or `.unresolved` is returned, a connect failure thrown
    /// (`timedOut`, everything cancelled, once `deadline` passes: monotonic nanoseconds).
    static func drive(_ connect: HappyEyeballs, on poller: any Poller, timers: Timers,
                      capacity: Int, deadline: Int64? = nil) throws(ConnectError) -> HappyEyeballs.Progress {
        let events = EventBuffer(capacity: max(4, capacity))
        connect.startDeadline = deadline
        var progress = connect.start()
        // A first wait is not checked (Docs/Async.md, "Deadlines"): a deadline that passed before the
        // call looked once still takes what a look without blocking finds (a loopback handshake is
        // over by then, or refused), as a one-address connect's own timer does.
        var looked = false
        while true {
            switch progress {
            case .connected, .unresolved: return progress
            case .failed(let error): throw error
            case .inProgress: break
            }
            var timeout = timers.timeout()
            if let deadline {
                let left = Deadline.timeout(until: deadline)
                if left <= .zero, looked {
                    // Named by an attempt still running, with what failed before (Connect.md 11).
                    let error = connect.deadlineFailure()
                    connect.cancel()
                    throw error
                }
                timeout = timeout.map { min($0, max(left, .zero)) } ?? max(left, .zero)
            }
            looked = true
            do {
                try poller.wait(into: events, timeout: timeout)
            } catch {
                connect.cancel()
                throw ConnectError(.poller, pollerError: error)
            }
            for event in events where event.isWakeup || connect.owns(event.token) {
                progress = connect.handle(event)
                if !progress.isInProgress { break }
            }
            let now = MonotonicClock.nowNanoseconds
            while progress.isInProgress, let token = timers.popDue(now: now) {
                progress = connect.handleTimer(token, now: now)
            }
        }
    }
}
