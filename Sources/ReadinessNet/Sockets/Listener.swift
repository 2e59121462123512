#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import CReadinessNet

/// A listening TCP (IPv4 or IPv6) or Unix-domain socket.
///
/// `accept()` returns non-blocking, close-on-exec ``StreamSocket``s. ECONNABORTED (a client that gave
/// up while queued), the network errors Linux passes on from a queued connection, and EINTR are not
/// errors: the next queued connection is taken instead.
///
/// **Out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM): back off.** The listener
/// deregisters itself from its poller (so a level-triggered readable listener does not wake the loop
/// again and again) and ``accept()`` returns ``AcceptResult/backingOff(until:)`` with the
/// ``Deadline`` to try again; the loop schedules a timer for it (``Timers``) and calls ``resume()`` when it
/// fires, or earlier when it closes a connection of its own (a descriptor is free). Pending
/// connections wait in the kernel's accept queue meanwhile and are served once descriptors free up.
/// The delay starts at ``AcceptBackoff/initial`` and doubles up to ``AcceptBackoff/maximum``; an
/// accepted connection resets it. Docs/Sockets.md explains why this rather than libuv's reserve
/// descriptor (which accepts and closes queued clients, so they are never served).
public final class Listener {
    /// The bound address (with the port the kernel chose for port 0).
    public let address: SocketAddress
    /// The descriptor, or -1 once closed.
    public private(set) var fd: CInt
    /// The back-off delays used when out of descriptors.
    public let backoff: AcceptBackoff
    /// Whether ``accept()`` is backing off (the listener is deregistered meanwhile, or made one-shot
    /// when the poller failed to deregister it).
    public private(set) var isBackingOff = false
    /// How many times ``accept()`` ran out of descriptors or memory (for monitoring).
    public private(set) var exhaustionCount = 0
    private var currentDelay: Duration
    private var registration: (poller: any Poller, token: Token)?
    private var isRegistered = false
    /// For a Unix-domain listener: the path to unlink on close.
    private let boundPath: BoundPath?

    /// Listener options.
    public struct Options: Sendable {
        /// The accept queue's length, capped by the kernel at net.core.somaxconn. A negative backlog
        /// asks for the longest the kernel allows: net.core.somaxconn itself, as Linux reads
        /// `listen(fd, -1)` (CPython makes it 0 instead). Before, it was the header's SOMAXCONN (4096),
        /// shorter than a raised sysctl gives.
        public var backlog: CInt = SOMAXCONN
        /// SO_REUSEADDR (TCP): rebind a port whose old connections are in TIME_WAIT. On by default.
        public var reuseAddress = true
        /// SO_REUSEPORT (TCP): several listeners on one port, one per loop thread; the kernel spreads
        /// connections over them.
        public var reusePort = false
        /// IPV6_V6ONLY for an IPv6 address: nil keeps the system default.
        public var v6Only: Bool? = nil
        /// Unix-domain path already there: remove it if it is a socket nobody listens on (stale, left
        /// by a process that died). A live listener's path gives ``SocketError/Kind/addressInUse``,
        /// anything that is not a socket ``SocketError/Kind/pathNotSocket``; neither is removed.
        public var removeStaleUnixSocket = true
        /// The delays of the out-of-descriptors back-off.
        public var backoff = AcceptBackoff()
        /// The defaults: SOMAXCONN backlog, SO_REUSEADDR on, SO_REUSEPORT off, stale Unix sockets removed.
        public init() {}
    }

    /// An option the family does not have, asked for: refused before any system call (libuv's
    /// UV_EINVAL for IPV6ONLY on IPv4); `reuseAddress`, on by default, means nothing on a Unix path.
    package static func checkOptions(_ options: Options, for address: SocketAddress) throws(SocketError) {
        if address.family == .unix, options.reusePort {
            throw SocketError(.invalidArgument, operation: "Options.reusePort on a Unix-domain listener")
        }
        if address.family != .ipv6, options.v6Only == true {
            throw SocketError(.invalidArgument, operation: "Options.v6Only on a \(address.family.rawValue) listener")
        }
    }

    /// Binds and listens. The empty address (`SocketAddress()`) is refused with
    /// ``SocketError/Kind/invalidArgument`` before any system call, as every entry that takes an
    /// address refuses it; so is an option the family does not have (`checkOptions`).
    public init(bind address: SocketAddress, options: Options = Options()) throws(SocketError) {
        if address.isEmpty {
            throw SocketError(.invalidArgument, operation: "listen on an empty address (SocketAddress()): no address to bind")
        }
        try Self.checkOptions(options, for: address)
        let fd = rd_net_stream_socket(address.domain)
        guard fd >= 0 else { throw SocketError(errno: errno, operation: "socket") }
        // The socket file a Unix path's bind made: removed again should anything after it fail.
        var bound: BoundPath?
        do throws(SocketError) {
            if address.family != .unix {
                if options.reuseAddress { try Self.set(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
                if options.reusePort { try Self.set(fd, SOL_SOCKET, rd_net_so_reuseport(), 1, "SO_REUSEPORT") }
                if address.family == .ipv6, let v6Only = options.v6Only {
                    try Self.set(fd, rd_net_ipproto_ipv6(), rd_net_ipv6_v6only(), v6Only ? 1 : 0, "IPV6_V6ONLY")
                }
            }
            try Self.bind(fd, to: address, removeStale: options.removeStaleUnixSocket)
            bound = BoundPath(address)
            guard Glibc.listen(fd, options.backlog < 0 ? -1 : options.backlog) == 0 else { throw SocketError(errno: errno, operation: "listen \(address)") }
            // The kernel's name for it: the port it chose for port 0, the abstract name Linux gave a
            // nameless Unix address (autobind); a Unix path as given (getsockname may cut it).
            let named = address.family == .unix && !address.isNamelessUnix
            self.address = named ? address : ((try? SocketAddress.local(of: fd)) ?? address)
        } catch {
            bound?.unlinkIfOurs()   // before the close, as close() does: while the socket holds the file, it is ours
            Sys.close(fd)
            throw error
        }
        self.fd = fd
        backoff = options.backoff.sanitized
        currentDelay = backoff.initial
        boundPath = bound
    }

    /// Takes ownership of a listening stream socket made elsewhere: systemd's socket activation, a
    /// listener inherited across a restart (libuv's `uv_tcp_open` then `uv_listen`, tokio's
    /// `TcpListener::from_std`, Go's `net.FileListener`). Made non-blocking; its ``address`` is the
    /// kernel's name for it (getsockname).
    ///
    /// Refused with ``SocketError/Kind/invalidArgument`` when `fd` is negative, not a socket, not a
    /// stream socket, of a family other than IPv4, IPv6 and Unix, or not listening (SO_ACCEPTCONN: call
    /// listen(2) first), and with ``SocketError/Kind/closed`` when it is not open. **A descriptor whose
    /// adoption failed stays the caller's, open.** A Unix path it is bound to stays the caller's too:
    /// ``close()`` does not unlink it.
    public init(adopting fd: CInt, backoff: AcceptBackoff = AcceptBackoff()) throws(SocketError) {
        var bound = SocketAddress()
        try OwnedDescriptor.checkAdoptable(fd, type: CInt(SOCK_STREAM.rawValue), kind: "stream") { (fd) throws(SocketError) in
            switch NetSys.option(fd, level: SOL_SOCKET, name: SO_DOMAIN) {
            case .success(AF_INET), .success(AF_INET6), .success(AF_UNIX): break
            case .success(let domain):
                throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): address family \(domain) is not IPv4, IPv6 or Unix")
            case .failure(let error): throw error
            }
            guard case .success(1) = NetSys.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN) else {
                throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): not a listening socket (listen(2) it first)")
            }
            // Its name, as a listener made here knows its own (the family decides how it accepts).
            bound = try SocketAddress.local(of: fd)
        }
        self.address = bound
        self.fd = fd
        self.backoff = backoff.sanitized
        currentDelay = self.backoff.initial
        boundPath = nil
    }

    /// Gives the descriptor back without closing it (deregistered first if registered): the listener
    /// is closed from then on, its path left alone. For an owner that could not take it after all.
    package func release() -> CInt {
        let released = fd
        guard fd >= 0 else { return -1 }
        if let registration, isRegistered { try? registration.poller.deregister(fd) }
        registration = nil
        isRegistered = false
        isBackingOff = false
        fd = -1
        return released
    }

    /// Fails with ``SocketError/Kind/addressInUse`` when something is bound to `address` (an IP
    /// address with a port) that a listener without SO_REUSEPORT could not share: a bind of a socket
    /// that never listens, closed at once. A group of listeners that shares its port through
    /// SO_REUSEPORT asks this first, so that it joins nobody else's group (another server of this
    /// user on the port would split the connections with it, silently).
    package static func checkUnshared(_ address: SocketAddress, options: Options) throws(SocketError) {
        guard !address.isEmpty, address.family != .unix, address.port != 0 else { return }
        let fd = rd_net_stream_socket(address.domain)
        guard fd >= 0 else { throw SocketError(errno: errno, operation: "socket") }
        defer { Sys.close(fd) }
        if options.reuseAddress { try set(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
        if address.family == .ipv6, let v6Only = options.v6Only {
            try set(fd, rd_net_ipproto_ipv6(), rd_net_ipv6_v6only(), v6Only ? 1 : 0, "IPV6_V6ONLY")
        }
        try bind(fd, to: address, removeStale: false)
    }

    deinit { close() }

    /// Registers the listener for readability; while backing off it is deregistered and
    /// ``resume()`` registers it again with the same token (registered during a back-off, it is
    /// watched from ``resume()`` on). One poller at a time, as for a stream:
    /// registering again before ``deregister()`` fails with
    /// ``/ReadinessCore/PollerError/alreadyRegistered(_:)`` (a second poller would keep watching a
    /// number `close()` no longer deregisters there). A poller closed since holds nothing: the
    /// listener may go to another.
    public func register(on poller: any Poller, token: Token) throws(PollerError) {
        if let registration {
            guard registration.poller.isClosed else { throw .alreadyRegistered(fd) }
            self.registration = nil
            isRegistered = false
        }
        // Backing off: watched again only by ``resume()`` (queued clients keep it readable, and
        // ``accept()`` would not take them: the loop would spin until then).
        if isBackingOff {
            if poller.isClosed { throw .closed }
            // The poller's own argument checks, now: found only by ``resume()``, each would start
            // another back-off, for ever (the same misuse fails at once outside a back-off).
            // In the poller's order (Contract.md): the number's limit, then the token.
            let limit = poller.capabilities.maxDescriptor
            if fd > limit { throw .descriptorTooLarge(fd, limit: limit &+ 1) }
            if token == .waker { throw .reservedToken }
            registration = (poller, token)
            return
        }
        try poller.register(fd, token: token, interest: .readable, trigger: .level)
        registration = (poller, token)
        isRegistered = true
    }

    /// Changes the token the listener is reported under (mio's `reregister`), on the poller it is
    /// registered on; ``/ReadinessCore/PollerError/notRegistered(_:)`` when it is not (as a stream's).
    /// While backing off, the token ``resume()`` registers it with. The poller's own refusals (a
    /// reserved token, a closed poller) leave the old token in place.
    public func reregister(token: Token) throws(PollerError) {
        guard let registration else { throw .notRegistered(fd) }
        if isRegistered {
            // Made one-shot by a back-off whose deregister the poller kept: it stays so until resume().
            try registration.poller.reregister(fd, token: token, interest: .readable,
                                               trigger: quietedWhileBackingOff ? .oneShot : .level)
        } else {
            if registration.poller.isClosed { throw .closed }
            if token == .waker { throw .reservedToken }
        }
        self.registration = (registration.poller, token)
    }

    /// Stops watching (the back-off's registration included): ``register(on:token:)`` may then be
    /// called again, on any poller. Nothing when it is not registered, as for a stream or datagram
    /// socket (stop 35: `notRegistered` before, while theirs did nothing).
    public func deregister() throws(PollerError) {
        guard let registration else { return }
        if isRegistered {
            // As a stream's: kept when the poller kept it (out of descriptors, ...), so that a retry
            // or the close finishes it; forgotten when the poller holds nothing (closed, forked).
            do throws(PollerError) { try registration.poller.deregister(fd) } catch {
                if !error.leavesRegistrationInPlace {
                    self.registration = nil
                    isRegistered = false
                }
                throw error
            }
        }
        self.registration = nil
        isRegistered = false
    }

    /// Deregisters (if registered) and closes; a Unix-domain listener removes its path. Later calls do
    /// nothing.
    public func close() {
        guard fd >= 0 else { return }
        var kept: (any Poller)?
        if let registration, isRegistered {
            do throws(PollerError) { try registration.poller.deregister(fd) } catch {
                if error.leavesRegistrationInPlace { kept = registration.poller }
            }
        }
        registration = nil
        isRegistered = false
        isBackingOff = false   // accept() reports the close, not a back-off of a listener that is gone
        // Unlinked while the socket still holds its file: its inode number cannot have been reused.
        boundPath?.unlinkIfOurs()
        Sys.close(fd)
        // A deregister the poller failed and kept: once more now that the descriptor is closed (it
        // succeeds then), so that the number can be registered again.
        if let kept { try? kept.deregister(fd) }
        fd = -1
    }

    /// The pending error (SO_ERROR), read and cleared; nil when there is none.
    public func takePendingError() -> SocketError? {
        NetSys.takePendingError(fd)
    }

    /// The TTL (IP_TTL) or hop limit (IPV6_UNICAST_HOPS) accepted connections start with: 1 to 255,
    /// -1 on IPv6 for the route's default; outside that range, or on a Unix-domain listener,
    /// ``SocketError/Kind/invalidArgument``.
    public func setHopLimit(_ hops: Int) throws(SocketError) {
        try IPOptions.setHops(fd, address.family, hops, multicast: false)
    }

    /// The TTL or hop limit in effect (64 unless set).
    public func hopLimit() throws(SocketError) -> Int {
        try IPOptions.hops(fd, address.family, multicast: false)
    }

    /// Accepts one queued connection.
    public func accept() throws(SocketError) -> AcceptResult {
        if isBackingOff { return .backingOff(until: retryAt) }
        var peer = SocketAddress()
        while true {
            let client = NetSys.accept(fd, &peer)
            if client >= 0 {
                noteAccepted()
                return .accepted(StreamSocket(owning: client), peer: peer)
            }
            let code = errno
            switch ErrnoTable.category(of: code) {
            case .wouldBlock:
                return .wouldBlock
            case .aborted, .protocolFailure, .unreachable:
                // That client is gone (accept(2): treat like EAGAIN and retry). EOPNOTSUPP is also
                // what a descriptor that is no longer a listening stream socket answers, every time
                // (the number closed underneath and reused by a datagram socket): not retried then.
                if code == EOPNOTSUPP, case .success(let listening) = NetSys.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN),
                   listening == 0 {
                    throw SocketError(.closed, errno: code, operation: "accept: the descriptor is no longer this listener")
                }
                continue
            case .resourceExhausted:
                return .backingOff(until: startBackoff())
            default:
                throw SocketError(errno: code, operation: "accept")
            }
        }
    }

    /// Ends a back-off: registers the listener again so the loop hears of queued connections.
    /// Call it when the back-off timer fires, or as soon as the loop has freed a descriptor.
    ///
    /// If the registration fails, the listener stays backing off and a new back-off period starts (the
    /// next ``accept()`` returns ``AcceptResult/backingOff(until:)`` with a later time): it is never left
    /// unwatched, and a caller retrying at that time does not spin.
    public func resume() throws(PollerError) {
        guard isBackingOff else { return }
        if let registration, !isRegistered || quietedWhileBackingOff {
            do {
                if isRegistered {
                    try registration.poller.reregister(fd, token: registration.token, interest: .readable, trigger: .level)
                } else {
                    try registration.poller.register(fd, token: registration.token, interest: .readable, trigger: .level)
                }
            } catch {
                nextBackoffPeriod()
                throw error
            }
            isRegistered = true
            quietedWhileBackingOff = false
        }
        isBackingOff = false
    }

    /// While backing off: when to try again.
    private var retryAt = Deadline(nanoseconds: 0)
    /// A back-off whose deregister the poller failed and kept: the registration was made one-shot.
    private var quietedWhileBackingOff = false

    private func startBackoff() -> Deadline {
        exhaustionCount += 1
        isBackingOff = true
        if let registration, isRegistered {
            do throws(PollerError) { try registration.poller.deregister(fd); isRegistered = false } catch {
                if error.leavesRegistrationInPlace {
                    // The poller kept it (out of memory, ...): made one-shot instead, so that it reports
                    // once at most while backing off (a level registration would spin the loop until
                    // then); resume() makes it level again.
                    if (try? registration.poller.reregister(fd, token: registration.token, interest: .readable,
                                                            trigger: .oneShot)) != nil { quietedWhileBackingOff = true }
                } else {
                    isRegistered = false
                }
            }
        }
        nextBackoffPeriod()
        return retryAt
    }

    /// A connection was accepted for this listener elsewhere (io_uring's accepts, which do not go
    /// through ``accept()``): the back-off starts again from its initial delay, as an accepted
    /// connection resets it here.
    package func noteAccepted() { currentDelay = backoff.initial }

    /// Sets the time to try again and doubles the delay, up to the maximum.
    private func nextBackoffPeriod() {
        retryAt = .after(currentDelay)
        // Compared before doubling: twice a huge delay would overflow Duration's 128 bits.
        currentDelay = currentDelay > backoff.maximum / 2 ? backoff.maximum : currentDelay * 2
    }

    private static func set(_ fd: CInt, _ level: CInt, _ name: CInt, _ value: CInt, _ what: String) throws(SocketError) {
        let code = NetSys.setOption(fd, level: level, name: name, value: value)
        if code != 0 { throw SocketError(errno: code, operation: "setsockopt(\(what))") }
    }

    private static func bind(_ fd: CInt, to address: SocketAddress, removeStale: Bool) throws(SocketError) {
        if address.withSockaddr({ Glibc.bind(fd, $0, $1) }) == 0 { return }
        let code = errno
        // The address named, as DatagramSocket's bind and Go's OpError name it (the error reader).
        // (The path as bytes: one that is not UTF-8 is a path the kernel took all the same.)
        guard code == EADDRINUSE, let path = address.filesystemPath else { throw SocketError(errno: code, operation: "bind \(address)") }
        let shown = address.unixPath ?? "\(address)"
        // A Unix path is there already. Only a socket nobody listens on is removed.
        var st = stat()
        guard lstat(path, &st) == 0 else { throw SocketError(errno: errno, operation: "bind \(address)") }
        guard st.st_mode & S_IFMT == S_IFSOCK else { throw SocketError(.pathNotSocket, operation: "bind \(shown)") }
        guard removeStale, try isStale(address) else { throw SocketError(errno: EADDRINUSE, operation: "bind \(shown)") }
        // A stale path that cannot be removed (a directory this process may not write, another user's
        // socket in a sticky /tmp) is that failure (EACCES, EPERM, EROFS...), not "address in use",
        // which would say a listener is there.
        if unlink(path) != 0, errno != ENOENT { throw SocketError(errno: errno, operation: "unlink stale \(shown)") }
        if address.withSockaddr({ Glibc.bind(fd, $0, $1) }) != 0 { throw SocketError(errno: errno, operation: "bind \(address)") }
    }

    /// A Unix socket path is stale when a connect to it is refused (nobody listens) or finds nothing
    /// (the file went away meanwhile); it is in use when the connect succeeds, meets a full backlog
    /// (EAGAIN) or a live socket of another type (EPROTOTYPE). Any other failure is the probe's own
    /// and is thrown as it is: out of descriptors or memory is
    /// ``SocketError/Kind/resourceExhausted`` (back off), a socket file this process may not connect
    /// to (no write permission on it: another user's, left in a sticky /tmp) is
    /// ``SocketError/Kind/permissionDenied``. Neither is a verdict on the path; before, both were
    /// reported as "address in use", which says a listener is there (libuv's test-pipe-bind-error).
    private static func isStale(_ address: SocketAddress) throws(SocketError) -> Bool {
        let probe = rd_net_stream_socket(AF_UNIX)
        guard probe >= 0 else { throw SocketError(errno: errno, operation: "socket (probing \(address) for a listener)") }
        defer { Sys.close(probe) }
        if address.withSockaddr({ Glibc.connect(probe, $0, $1) }) == 0 { return false }
        switch errno {
        case ECONNREFUSED, ENOENT: return true
        case EAGAIN, EPROTOTYPE: return false
        case let code: throw SocketError(errno: code, operation: "connect (probing \(address.unixPath ?? "\(address)") for a listener)")
        }
    }
}

/// What ``Listener/accept()`` did.
public enum AcceptResult {
    /// A connection and its peer's address.
    case accepted(StreamSocket, peer: SocketAddress)
    /// Nothing queued: wait for the listener's readability.
    case wouldBlock
    /// Out of descriptors or memory: the listener is deregistered until ``Listener/resume()``; call it
    /// at this ``Deadline`` or when a descriptor is freed.
    case backingOff(until: Deadline)
}

/// The accept back-off's delays.
public struct AcceptBackoff: Sendable, Hashable {
    /// The first delay after an exhaustion.
    public var initial: Duration
    /// The longest delay (each further exhaustion doubles it up to this).
    public var maximum: Duration
    /// Delays from `initial`, doubling up to `maximum`.
    public init(initial: Duration = .milliseconds(10), maximum: Duration = .seconds(1)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The shortest delay a listener uses: a back-off of zero or less would retry at once, a spin.
    public static let minimumDelay: Duration = .milliseconds(1)

    /// The longest delay a listener uses (a year): longer ones are lowered to it.
    public static let maximumDelay: Duration = .seconds(365 * 24 * 3600)

    /// The delays a listener uses: within ``minimumDelay`` ... ``maximumDelay``, `maximum` at least
    /// `initial`.
    var sanitized: AcceptBackoff {
        func clamp(_ delay: Duration) -> Duration { min(max(delay, Self.minimumDelay), Self.maximumDelay) }
        let first = clamp(initial)
        return AcceptBackoff(initial: first, maximum: max(clamp(maximum), first))
    }
}

extension SocketAddress {
    /// The filesystem path of a Unix-domain address, read from the address bytes (up to the first NUL):
    /// nil for any other address, for an abstract name (no file: ``Listener/close()`` must unlink
    /// nothing), for an unnamed socket, and for a path that is not UTF-8.
    public var unixPath: String? {
        guard let bytes = sunPathBytes, let first = bytes.first, first != 0 else { return nil }
        return String(validating: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
