#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore

/// The outcome of a driven step.
public enum ConnectProgress: Sendable, Hashable {
    /// Still connecting: wait for the socket's token on the poller, or the deadline.
    case inProgress
    /// Connected: the caller now owns `fd` (non-blocking, close-on-exec, no longer registered, unless
    /// the poller refused the deregister twice: then it still holds the registration, and the
    /// caller's own `deregister` of `fd` on it finishes it; the async loop does that itself).
    case connected(ConnectedSocket)
    /// Failed: the socket is closed; why.
    case failed(ConnectError)
}

/// A connected socket handed to the caller.
public struct ConnectedSocket: Sendable, Hashable {
    /// The connected descriptor, now the caller's.
    public let fd: CInt
    /// The local address (getsockname), when known.
    public let local: SocketAddress?
    /// The peer's address (getpeername), when known.
    public let peer: SocketAddress?
}

/// One step of the state machine, for traces.
public struct ConnectTraceEntry: Sendable, Hashable, CustomStringConvertible {
    /// When the input arrived.
    public let at: Deadline
    /// What the state machine was fed.
    public let input: ConnectStateMachine.Input
    /// What it asked the driver to do.
    public let action: ConnectStateMachine.Action
    /// The state it moved to.
    public let state: ConnectStateMachine.State
    /// "input -> action [state]".
    public var description: String { "\(input) -> \(action) [\(state)]" }
}

/// One connect attempt driven on a caller's poller: the driver of ``ConnectStateMachine``. It performs
/// the machine's actions through a ``ConnectSyscalls`` seam and the poller, and guarantees the end of
/// every path: deregistered before closed, closed exactly once, or handed over.
///
/// Step by step inside a caller's event loop (many in flight on one poller):
/// ```swift
/// let attempt = ConnectAttempt(to: address, poller: poller, token: 7, timeout: .seconds(2))
/// var progress = attempt.start()
/// // on an event for token 7:         progress = attempt.handle(event.ready)
/// // when attempt.deadline has passed: progress = attempt.checkDeadline()
/// ```
public final class ConnectAttempt {
    /// The address being connected to.
    public let address: SocketAddress
    /// The token the socket is registered with on the poller.
    public let token: Token
    /// When the attempt gives up, nil for never: its timeout counted from ``start()`` (before the
    /// start, from its creation). Once ``scheduleDeadline(on:)`` has put it on a timer heap it no
    /// longer moves: an attempt whose timer was armed before its start keeps the deadline it armed.
    @exclusivity(unchecked) public private(set) var deadline: Deadline?
    private let timeout: Duration?
    /// Whether ``deadline`` is on a caller's timer heap (set by `scheduleDeadline(on:)`).
    @exclusivity(unchecked) var deadlineScheduled = false
    // The mutable state is used by one thread at a time (the poller's) and never accessed overlapping
    // (no step calls out while it holds an access): the dynamic exclusivity check of each access
    // (swift_beginAccess, several per step) would be pure cost.
    /// The state machine this attempt drives.
    @exclusivity(unchecked) public private(set) var machine: ConnectStateMachine
    /// The socket, or -1 before it is created and after it is handed over or closed.
    @exclusivity(unchecked) public private(set) var fd: CInt = -1
    /// Whether the attempt closed a socket it made (failed, timed out or cancelled after `socket()`
    /// succeeded): a descriptor was freed (the async loop's listeners out of descriptors retry then).
    @exclusivity(unchecked) package private(set) var closedSocket = false
    /// Called with the socket's number just before the attempt registers it (the async loop ends a
    /// stale wait on a caller's descriptor closed under that number first, as it does for the sockets
    /// it accepts: the poller's table still holds the number and would refuse the registration).
    package var willRegister: ((CInt) -> Void)?
    /// Called with the socket's number when the poller refused to let its registration go twice
    /// (before and after the close, or before the socket is handed over and once more): the async loop
    /// keeps asking (``/ReadinessAsync``'s refused deregisters), as for its own sockets. Before, the
    /// refusal was forgotten: a connected socket's level registration woke every wait (a spin), and the
    /// number stayed taken in the poller's table (the next socket on it: `alreadyRegistered`). nil: the
    /// caller of a synchronous connect learns it when it registers the socket itself.
    package var deregisterRefused: ((CInt) -> Void)?
    /// The machine's steps, when tracing was asked for.
    public private(set) var trace: [ConnectTraceEntry] = []
    private let poller: any Poller
    private let syscalls: any ConnectSyscalls
    private let localAddress: SocketAddress?
    /// The Unix path bound for `localAddress`, unlinked if the attempt ends without a connection.
    private var boundPath: BoundPath?
    private let tracing: Bool
    @exclusivity(unchecked) private var finalProgress: ConnectProgress?
    @exclusivity(unchecked) private var names: (local: SocketAddress?, peer: SocketAddress?) = (nil, nil)

    /// An attempt to connect to `address` on `poller` under `token`; nothing happens until ``start()``.
    public init(to address: SocketAddress, poller: any Poller, token: Token, timeout: Duration?,
                localAddress: SocketAddress? = nil, syscalls: any ConnectSyscalls = SystemConnectSyscalls(),
                trace: Bool = false) {
        self.address = address
        self.poller = poller
        self.token = token
        self.syscalls = syscalls
        self.localAddress = localAddress
        tracing = trace
        machine = ConnectStateMachine(address: address)
        self.timeout = timeout
        deadline = timeout.map { Deadline.after($0, now: .now) }
    }

    /// Whether the attempt registers with `poller` (the one it was made on).
    package func uses(_ poller: any Poller) -> Bool { self.poller === poller }

    /// Whether the attempt has finished (connected, failed or cancelled).
    public var isFinished: Bool { machine.state.isFinal }

    /// Creates the socket and calls connect once.
    public func start() -> ConnectProgress {
        guard machine.state == .idle else { return finalProgress ?? .inProgress }
        // Its timeout runs from now: an attempt made early and started later (Happy Eyeballs starts
        // them an attempt delay apart) gets all of it, and never starts already expired. Unless a
        // timer for it is armed already: that timer pops at the deadline it was given, and a deadline
        // moved past it would never be checked again.
        if let timeout, !deadlineScheduled { deadline = Deadline.after(timeout, now: .now) }
        // An empty address is no destination: refused before a socket exists (connect would say EINVAL).
        if address.isEmpty { return feed(.setupFailed(errno: EINVAL)) }
        // A local address of another family could not be bound to this socket (the kernel's
        // EAFNOSUPPORT or EINVAL, after a socket was made): refused before, as the same cause.
        if let localAddress, localAddress.family != address.family { return feed(.setupFailed(errno: EAFNOSUPPORT)) }
        let made = syscalls.socket(domain: address.domain)
        // Every ending goes through the machine, so that `isFinished` and the trace say so too.
        guard made.fd >= 0 else { return feed(.setupFailed(errno: made.errno != 0 ? made.errno : EINVAL)) }
        fd = made.fd
        if let localAddress {
            let e = syscalls.bind(fd, to: localAddress)
            if e != 0 {
                syscalls.close(fd)
                fd = -1
                closedSocket = true
                return feed(.setupFailed(errno: e))
            }
            // A Unix path the bind made: removed again if the attempt fails or is cancelled (a
            // connected socket keeps it, as Go's and mio's do: its owner unlinks it).
            boundPath = BoundPath(localAddress)
        }
        return feed(.connectReturned(errno: syscalls.connect(fd, to: address)))
    }

    /// A poller event for ``token``.
    public func handle(_ ready: Ready) -> ConnectProgress { feed(.woke(ready)) }

    /// Fails with ``ConnectError/Cause/timedOut`` once the deadline has passed.
    public func checkDeadline(now: Deadline = .now) -> ConnectProgress {
        if let deadline, deadline.hasPassed(now: now), !isFinished { return feed(.deadlinePassed) }
        return finalProgress ?? .inProgress
    }

    /// ``checkDeadline(now:)`` at a raw monotonic instant (inside the package only).
    package func checkDeadline(now: Int64) -> ConnectProgress { checkDeadline(now: Deadline(nanoseconds: now)) }

    /// Stops the attempt: deregisters and closes the socket.
    public func cancel() { _ = feed(.cancel) }

    private func feed(_ first: ConnectStateMachine.Input) -> ConnectProgress {
        var input = first
        while true {
            let action = machine.handle(input)
            if tracing {
                trace.append(ConnectTraceEntry(at: .now, input: input, action: action, state: machine.state))
            }
            switch action {
            case .none:
                return finalProgress ?? .inProgress
            case .waitForWakeup:
                return .inProgress
            case .registerForWritable:
                do {
                    willRegister?(fd)
                    try poller.register(fd, token: token, interest: .writable, trigger: .level)
                    machine.didRegister()
                    return .inProgress
                } catch {
                    input = .registrationFailed(error)
                }
            case .readSocketError:
                input = .socketError(syscalls.socketError(fd))
            case .readAddresses:
                let peer = syscalls.peerName(fd)
                let local = peer.errno == 0 && selfConnectPossible ? syscalls.localName(fd).address : nil
                names = (local, peer.address)
                input = .addresses(peerErrno: peer.errno, local: local, peer: peer.address)
            case .succeed(let deregister):
                if deregister, !letRegistrationGo(), !letRegistrationGo() { deregisterRefused?(fd) }
                let socket = ConnectedSocket(fd: fd, local: names.local, peer: names.peer)
                fd = -1
                return finish(.connected(socket))
            case .fail(let error, let deregister):
                release(deregister: deregister)
                return finish(.failed(error))
            case .cancel(let deregister):
                release(deregister: deregister)
                return finish(.failed(ConnectError(.cancelled, address: address)))
            }
        }
    }

    /// Rule 7 needs the local name only where a socket can meet itself: a TCP destination port equal to
    /// the port we are bound to, or, unbound, inside the kernel's ephemeral range. Elsewhere the
    /// getsockname is skipped (one system call per connection).
    private var selfConnectPossible: Bool {
        guard address.family != .unix, let port = address.port else { return false }
        if let bound = localAddress?.port, bound != 0 { return bound == port }
        return EphemeralPorts.range.contains(port)
    }

    /// Rule 10: deregister before close, close exactly once.
    private func release(deregister: Bool) {
        guard fd >= 0 else { return }
        let kept = deregister && !letRegistrationGo()
        boundPath?.unlinkIfOurs()   // before the close: while the socket holds the file, it is ours
        boundPath = nil
        syscalls.close(fd)
        // Refused and kept: once more now that the descriptor is closed (as `OwnedDescriptor.close`).
        if kept, !letRegistrationGo() { deregisterRefused?(fd) }
        fd = -1
        closedSocket = true
    }

    /// Deregisters the socket; false when the poller refused and kept the registration (rule 10).
    private func letRegistrationGo() -> Bool {
        do throws(PollerError) { try poller.deregister(fd) } catch { return !error.leavesRegistrationInPlace }
        return true
    }

    private func finish(_ progress: ConnectProgress) -> ConnectProgress {
        finalProgress = progress
        return progress
    }

    deinit {
        // An attempt dropped while in flight must not leak its socket.
        if fd >= 0 { cancel() }
    }
}

/// The kernel's ephemeral port range (net.ipv4.ip_local_port_range), read once.
enum EphemeralPorts {
    static let range: ClosedRange<UInt16> = {
        let fallback: ClosedRange<UInt16> = 32768...60999
        let fd = open("/proc/sys/net/ipv4/ip_local_port_range", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return fallback }
        defer { Sys.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &bytes, bytes.count)
        guard n > 0 else { return fallback }
        let numbers = String(decoding: bytes[0..<n], as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            .compactMap { UInt16($0) }
        guard numbers.count == 2, numbers[0] <= numbers[1] else { return fallback }
        // The kernel may use the whole range, and a bound port outside it is handled by the caller.
        return numbers[0]...numbers[1]
    }()
}
