#if canImport(Glibc)
import Glibc
#endif

/// The non-blocking connect, as a pure state machine (sans-IO): it takes what happened and returns
/// what to do next. It performs no system call, so every transition is tested without sockets; a
/// driver (``ConnectAttempt``) performs the actions. Docs/Connect.md has the diagram and the reason for
/// each rule.
///
/// The rule it exists for: readiness proves nothing. A failed connect is readable and writable, and so
/// is a successful one whose peer already wrote. Completion is decided only by `SO_ERROR` (and, when
/// that is 0, by `getpeername`).
public struct ConnectStateMachine: Sendable, Hashable {
    /// Where a connect stands.
    public enum State: Hashable, Sendable {
        /// connect(2) not yet called.
        case idle
        /// The kernel is connecting; waiting for a wake-up from the poller.
        case waiting
        /// A wake-up came (or connect returned 0): reading SO_ERROR.
        case readingSocketError
        /// SO_ERROR was 0: reading the peer and local addresses.
        case readingAddresses
        /// Connected and confirmed by SO_ERROR and getpeername.
        case connected
        /// Failed; why.
        case failed(ConnectError)
        /// Cancelled by the caller.
        case cancelled

        /// True once connected, failed or cancelled.
        public var isFinal: Bool {
            switch self {
            case .connected, .failed, .cancelled: true
            default: false
            }
        }
    }

    /// What getsockopt(SOL_SOCKET, SO_ERROR) gave.
    public enum SocketErrorResult: Hashable, Sendable {
        /// getsockopt returned 0 with this value (Linux, BSD).
        case value(CInt)
        /// getsockopt returned -1 with this errno (Solaris puts the pending error there).
        case callFailed(CInt)
    }

    /// What the driver feeds the state machine.
    public enum Input: Hashable, Sendable {
        /// socket(2) or bind(2) failed with `errno` before connect could be called (EMFILE,
        /// EAFNOSUPPORT, EADDRINUSE, ...): the attempt ends at once, with that errno.
        case setupFailed(errno: CInt)
        /// connect(2) returned 0 (`errno` 0) or failed with `errno`.
        case connectReturned(errno: CInt)
        /// The poller registration for writability failed.
        case registrationFailed(PollerError)
        /// The poller reported the socket; any readiness, even writable, only means "go and look".
        case woke(Ready)
        /// What getsockopt(SO_ERROR) gave.
        case socketError(SocketErrorResult)
        /// getpeername's errno (0: connected) with both addresses when it succeeded.
        case addresses(peerErrno: CInt, local: SocketAddress?, peer: SocketAddress?)
        /// The deadline passed.
        case deadlinePassed
        /// The caller cancelled.
        case cancel
    }

    /// What the state machine asks the driver to do next.
    public enum Action: Hashable, Sendable {
        /// Register the socket for writability (the wake-up of a finished connect).
        case registerForWritable
        /// Nothing to do until the next wake-up or the deadline.
        case waitForWakeup
        /// Call getsockopt(SO_ERROR) and feed ``Input/socketError(_:)``.
        case readSocketError
        /// Call getpeername and getsockname and feed ``Input/addresses(peerErrno:local:peer:)``.
        case readAddresses
        /// Finished: deregister if registered, then hand the socket to the caller.
        case succeed(deregister: Bool)
        /// Finished: deregister if registered, then close the socket, then report.
        case fail(ConnectError, deregister: Bool)
        /// Cancelled: deregister if registered, then close.
        case cancel(deregister: Bool)
        /// The input does not apply in this state (a late wake-up after the end): ignore it.
        case none
    }

    /// The current state.
    public private(set) var state: State = .idle
    /// Whether the socket is registered with the poller (so the end must deregister it first).
    public private(set) var isRegistered = false
    /// Whether the last wake-up reported hang-up or error (rule 6).
    private var wokeWithHangup = false
    /// The address being connected to, for errors.
    public let address: SocketAddress?
    /// Its family, which decides how some errnos are read (Unix-domain EAGAIN).
    public let family: SocketAddress.Family?

    /// A machine in ``State-swift.enum/idle`` for `address`.
    public init(address: SocketAddress?) {
        self.address = address
        family = address?.family
    }

    /// Feeds one input; returns the one action to perform.
    ///
    /// The input is switched on alone and the state's case tested by its private `stage` (no `(state, input)`
    /// tuple: both hold addresses, and the tuple was a copy of some 450 bytes at every step).
    public mutating func handle(_ input: Input) -> Action {
        let stage = self.stage
        if stage == .final { return .none }
        switch input {
        case .cancel:
            state = .cancelled
            return .cancel(deregister: isRegistered)
        case .deadlinePassed:
            return fail(ConnectError(.timedOut, address: address))

        // Rule 1: no socket (or no local address): the attempt is over, with the errno that said so.
        case .setupFailed(let e):
            guard stage == .idle else { return .none }
            return fail(ConnectError(errno: e, address: address))

        case .connectReturned(let e):
            guard stage == .idle else { return .none }
            // Rule 2: connected at once (Unix-domain, sometimes loopback): still confirm with SO_ERROR.
            if e == 0 {
                state = .readingSocketError
                return .readSocketError
            }
            // Rules 3 and 4: in progress; EINTR means the kernel goes on connecting: never call connect again.
            if e == EINPROGRESS || e == EINTR {
                state = .waiting
                return .registerForWritable
            }
            // Rules 8 and 9: anything else (EAGAIN included) fails at once, without waiting.
            return fail(ConnectError(errno: e, address: address))

        case .registrationFailed(let error):
            guard stage == .waiting || stage == .readingAddresses else { return .none }
            return fail(ConnectError(error.isResourceExhausted ? .resourceExhausted : .poller, address: address, pollerError: error))

        // Rule 3: any wake-up means "go and look".
        case .woke(let ready):
            guard stage == .waiting else { return .none }
            wokeWithHangup = !ready.isDisjoint(with: [.hangup, .error])
            state = .readingSocketError
            return .readSocketError

        // Rules 5 and 6: SO_ERROR decides; -1 from getsockopt carries the error in errno (Solaris).
        case .socketError(let result):
            guard stage == .readingSocketError else { return .none }
            switch result {
            case .value(0):
                state = .readingAddresses
                return .readAddresses
            case .value(let e), .callFailed(let e):
                return fail(ConnectError(errno: e, address: address))
            }

        case .addresses(let e, let local, let peer):
            guard stage == .readingAddresses else { return .none }
            // Rule 6: ENOTCONN after SO_ERROR 0 is a spurious wake-up: keep waiting; unless the
            // wake-up said hang-up or error: the socket is closed without an error left to read
            // (it was taken), and waiting on its level-triggered hang-up would spin.
            if e == ENOTCONN, wokeWithHangup {
                return fail(ConnectError(errno: ECONNRESET, address: address))
            }
            if e == ENOTCONN {
                state = .waiting
                return isRegistered ? .waitForWakeup : .registerForWritable
            }
            guard e == 0 else { return fail(ConnectError(errno: e, address: address)) }
            // Rule 7: a loopback connect can reach itself (simultaneous open).
            if let local, let peer, local == peer, local.family != .unix {
                return fail(ConnectError(.selfConnect, address: address))
            }
            state = .connected
            return .succeed(deregister: isRegistered)
        }
    }

    /// The state's case without its payload, tested without copying the state.
    private enum Stage { case idle, waiting, readingSocketError, readingAddresses, final }
    private var stage: Stage {
        switch state {
        case .idle: .idle
        case .waiting: .waiting
        case .readingSocketError: .readingSocketError
        case .readingAddresses: .readingAddresses
        case .connected, .failed, .cancelled: .final
        }
    }

    /// Records that the driver registered the socket (after ``Action/registerForWritable``).
    public mutating func didRegister() { isRegistered = true }

    private mutating func fail(_ error: ConnectError) -> Action {
        state = .failed(error)
        return .fail(error, deregister: isRegistered)
    }
}

extension ConnectStateMachine.State: CustomStringConvertible {
    /// The state's name, for traces.
    public var description: String {
        switch self {
        case .idle: "idle"
        case .waiting: "waiting"
        case .readingSocketError: "readingSocketError"
        case .readingAddresses: "readingAddresses"
        case .connected: "connected"
        case .failed(let error): "failed(\(error.cause.rawValue))"
        case .cancelled: "cancelled"
        }
    }
}

extension ConnectStateMachine.Input: CustomStringConvertible {
    /// The input, for traces.
    public var description: String {
        switch self {
        case .setupFailed(let e): "socket()/bind() = -1 \(ErrnoTable.name(e))"
        case .connectReturned(0): "connect() = 0"
        case .connectReturned(let e): "connect() = -1 \(ErrnoTable.name(e))"
        case .registrationFailed(let error): "register failed: \(error)"
        case .woke(let ready): "woke: \(ready)"
        case .socketError(.value(let e)): "getsockopt(SO_ERROR) = 0, value \(e == 0 ? "0" : ErrnoTable.name(e))"
        case .socketError(.callFailed(let e)): "getsockopt(SO_ERROR) = -1 \(ErrnoTable.name(e))"
        case .addresses(0, let local, let peer): "getpeername ok: \(local.map(\.description) ?? "?") -> \(peer.map(\.description) ?? "?")"
        case .addresses(let e, _, _): "getpeername = -1 \(ErrnoTable.name(e))"
        case .deadlinePassed: "deadline passed"
        case .cancel: "cancel"
        }
    }
}

extension ConnectStateMachine.Action: CustomStringConvertible {
    /// The action, for traces.
    public var description: String {
        switch self {
        case .registerForWritable: "register for writable"
        case .waitForWakeup: "wait for the next wake-up"
        case .readSocketError: "read SO_ERROR"
        case .readAddresses: "read peer and local addresses"
        case .succeed(let deregister): deregister ? "deregister, hand over" : "hand over"
        case .fail(let error, let deregister): (deregister ? "deregister, close, " : "close, ") + "fail: \(error.cause.rawValue)"
        case .cancel(let deregister): deregister ? "deregister, close" : "close"
        case .none: "ignore"
        }
    }
}
