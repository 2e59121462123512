#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import CReadinessNet

/// A UDP (IPv4 or IPv6) or Unix-domain datagram socket over a descriptor it owns.
///
/// - The descriptor is non-blocking and close-on-exec (an adopted one is made so), and closed exactly
///   once: by ``close()``, or when the object is released. A socket bound
///   to a Unix path by ``init(bind:options:)`` unlinks it on ``close()``.
/// - Registering through ``register(on:token:interest:trigger:)`` makes ``close()`` deregister the
///   descriptor **before** closing it, as ``StreamSocket`` does.
/// - `send(_:to:)` and `receive(into:)` move one datagram each: a send returns
///   ``IOResult/transferred(_:)`` (the whole datagram, or an error: a datagram is never sent in part) or
///   ``IOResult/wouldBlock``; a receive returns a ``DatagramReceiveResult``: the datagram's byte count,
///   its source and whether it was **truncated** (`MSG_TRUNC`: it did not fit the buffer; the rest is
///   gone, and the result says so, never silently).
/// - EINTR is retried inside (`Sys.retryingEINTR`, the one place); EAGAIN is ``IOResult/wouldBlock``;
///   ECONNREFUSED (a connected UDP socket's earlier datagram drew an ICMP port-unreachable; a Unix
///   datagram socket's peer socket is gone) is
///   ``SocketError/Kind/refused``, EMSGSIZE ``SocketError/Kind/messageTooLarge``, ENOBUFS
///   ``SocketError/Kind/resourceExhausted``.
///
/// Sends and receives do not allocate. Used from one thread at a time, like the poller.
public final class DatagramSocket {
    /// The descriptor and its registration.
    private var descriptor: OwnedDescriptor
    /// The descriptor, or -1 once closed.
    public var fd: CInt { descriptor.fd }
    /// The poller it is registered with through ``register(on:token:interest:trigger:)``, if any.
    public var poller: (any Poller)? { descriptor.poller }
    /// What it is registered for on ``poller`` (nil when not registered).
    public var registration: (token: Token, interest: Interest, trigger: Trigger)? { descriptor.registration }
    /// The address family (the socket's domain).
    public let family: SocketAddress.Family
    /// For a socket bound to a Unix path: the path to unlink on close.
    private var boundPath: BoundPath?
    /// UDP_MAX_SEGMENTS of the oldest kernels with GSO (64; 128 since 6.9): a send of more segments
    /// than that which the kernel refuses with EINVAL is said to be too large.
    static let fewestSegmentLimit = 64
    /// The UDP GSO segment size set (``setSegmentSize(_:)``), nil when off.
    var segmentSize: Int?

    /// The largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers): the most one send
    /// over IPv4 carries (more is ``SocketError/Kind/messageTooLarge``).
    public static let maximumUDPPayload = 65_507

    /// What a receive takes by default (65,535 bytes): any UDP datagram whole, over IPv4 (65,507 at
    /// most) or IPv6 (65,527, the IPv6 payload less the UDP header; jumbograms aside), and a Unix
    /// datagram up to that size (a larger one, which a Unix socket may carry, is reported truncated).
    public static let defaultReceiveSize = 65_535

    /// Options applied before `bind`.
    public struct Options: Sendable {
        /// SO_REUSEADDR: several sockets on one address (multicast receivers). Off by default.
        public var reuseAddress = false
        /// SO_REUSEPORT: several sockets on one port, one per loop thread; the kernel spreads datagrams
        /// over them by source.
        public var reusePort = false
        /// IPV6_V6ONLY for an IPv6 address: nil keeps the system default (dual-stack on Linux: an
        /// IPv6 socket bound to `::` also receives IPv4 datagrams, from IPv4-mapped sources).
        public var v6Only: Bool? = nil
        /// SO_BROADCAST: may send to a broadcast address.
        public var broadcast = false
        /// SO_RCVBUF, when given (the kernel caps it at net.core.rmem_max, then doubles it).
        public var receiveBufferSize: Int? = nil
        /// SO_SNDBUF, when given (capped at net.core.wmem_max, then doubled).
        public var sendBufferSize: Int? = nil
        /// The defaults: no reuse, system dual-stack default, no broadcast, system buffer sizes.
        public init() {}
    }

    /// A socket bound to `address` (port 0: the kernel chooses; ``localAddress`` tells which).
    ///
    /// A Unix path that holds a socket file already fails with ``SocketError/Kind/addressInUse``, and
    /// one that holds another kind of file with ``SocketError/Kind/pathNotSocket``; neither is
    /// touched. The socket unlinks its own path on ``close()`` (a relative path where it was bound,
    /// whatever the working directory is by then). The empty address (`SocketAddress()`)
    /// is refused with ``SocketError/Kind/invalidArgument`` before any system call.
    public init(bind address: SocketAddress, options: Options = Options()) throws(SocketError) {
        if address.isEmpty {
            throw SocketError(.invalidArgument, operation: "bind to an empty address (SocketAddress()): no address to bind")
        }
        try Self.check(options, family: address.family)
        let fd = try Self.makeSocket(address.domain)
        do throws(SocketError) {
            try Self.apply(options, fd: fd, family: address.family)
            let status = address.withSockaddr { Glibc.bind(fd, $0, $1) }
            guard status == 0 else { throw SocketError.bindFailure(errno, address) }
        } catch {
            Sys.close(fd)
            throw error
        }
        descriptor = OwnedDescriptor(fd)
        family = address.family
        boundPath = BoundPath(address)
    }

    /// An unbound socket of `family` (the kernel binds an IP socket to an ephemeral port on its first
    /// send; a Unix one stays nameless, so nobody can answer it: bind it to receive replies).
    public init(family: SocketAddress.Family, options: Options = Options()) throws(SocketError) {
        try Self.check(options, family: family)
        let fd = try Self.makeSocket(IPOptions.domain(family))
        do throws(SocketError) { try Self.apply(options, fd: fd, family: family) } catch {
            Sys.close(fd)
            throw error
        }
        descriptor = OwnedDescriptor(fd)
        self.family = family
    }

    /// A socket connected to `peer`: bound to `local` when given (else an ephemeral port, or nameless
    /// for Unix), then ``connect(to:)``. An IPv6 `local` takes an IPv4 `peer` (IPv4-mapped, as
    /// ``connect(to:)`` does); any other mix of families is refused.
    public convenience init(connectedTo peer: SocketAddress, from local: SocketAddress? = nil,
                            options: Options = Options()) throws(SocketError) {
        if let local {
            guard local.family == peer.family || (local.family == .ipv6 && peer.family == .ipv4) else {
                throw SocketError(.invalidArgument, operation: "connect \(peer) from \(local): families differ")
            }
            try self.init(bind: local, options: options)
        } else {
            try self.init(family: peer.family, options: options)
        }
        try connect(to: peer)
    }

    /// Takes ownership of a datagram socket descriptor made elsewhere (libuv's `uv_udp_open`, mio's
    /// `from_raw_fd`), and makes it non-blocking; its family is the socket's domain (SO_DOMAIN).
    ///
    /// Refused with ``SocketError/Kind/invalidArgument`` when `fd` is negative, not a socket, not a
    /// datagram socket or of a family other than IPv4, IPv6 and Unix, and with
    /// ``SocketError/Kind/closed`` when it is not open. **A descriptor whose adoption failed stays the
    /// caller's, open.** A Unix path it is bound to stays the caller's too: ``close()`` does not unlink it.
    public init(adopting fd: CInt) throws(SocketError) {
        var family = SocketAddress.Family.unix
        // The family is checked before the descriptor is made non-blocking: a refused one is unchanged.
        try OwnedDescriptor.checkAdoptable(fd, type: CInt(SOCK_DGRAM.rawValue), kind: "datagram") { (fd) throws(SocketError) in
            switch NetSys.option(fd, level: SOL_SOCKET, name: SO_DOMAIN) {
            case .success(AF_INET): family = .ipv4
            case .success(AF_INET6): family = .ipv6
            case .success(AF_UNIX): family = .unix
            case .success(let domain):
                throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): address family \(domain) is not IPv4, IPv6 or Unix")
            case .failure(let error): throw error
            }
        }
        descriptor = OwnedDescriptor(fd)
        self.family = family
    }

    /// A connected pair of Unix datagram sockets (socketpair), each the other's peer.
    public static func pair() throws(SocketError) -> (DatagramSocket, DatagramSocket) {
        var ends: (CInt, CInt) = (-1, -1)
        let status = withUnsafeMutablePointer(to: &ends) {
            $0.withMemoryRebound(to: CInt.self, capacity: 2) { rd_net_datagram_pair($0) }
        }
        guard status == 0 else { throw SocketError(errno: errno, operation: "socketpair") }
        return (DatagramSocket(owning: ends.0, family: .unix), DatagramSocket(owning: ends.1, family: .unix))
    }

    private init(owning fd: CInt, family: SocketAddress.Family) {
        descriptor = OwnedDescriptor(fd)
        self.family = family
    }

    private static func makeSocket(_ domain: CInt) throws(SocketError) -> CInt {
        let fd = rd_net_datagram_socket(domain)
        guard fd >= 0 else { throw SocketError(errno: errno, operation: "socket") }
        return fd
    }

    /// An option asked for that the family does not have is the caller's mistake, refused before any
    /// system call, as `setBroadcast` on a Unix socket is: IP's options (broadcast, address and port
    /// reuse) on a Unix socket, `v6Only` on an IPv4 one (libuv's UV_EINVAL). Before, `apply` skipped
    /// them silently.
    static func check(_ options: Options, family: SocketAddress.Family) throws(SocketError) {
        if family == .unix {
            for (set, name) in [(options.broadcast, "broadcast"), (options.reuseAddress, "reuseAddress"), (options.reusePort, "reusePort")] where set {
                throw SocketError(.invalidArgument, operation: "Options.\(name) on a Unix-domain datagram socket")
            }
        }
        if family != .ipv6, options.v6Only == true {
            throw SocketError(.invalidArgument, operation: "Options.v6Only on a \(family.rawValue) socket")
        }
    }

    private static func apply(_ options: Options, fd: CInt, family: SocketAddress.Family) throws(SocketError) {
        if family != .unix {
            if options.reuseAddress { try set(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
            if options.reusePort { try set(fd, SOL_SOCKET, rd_net_so_reuseport(), 1, "SO_REUSEPORT") }
            if options.broadcast { try set(fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST") }
            if family == .ipv6, let v6Only = options.v6Only {
                try set(fd, rd_net_ipproto_ipv6(), rd_net_ipv6_v6only(), v6Only ? 1 : 0, "IPV6_V6ONLY")
            }
        }
        if let size = options.receiveBufferSize { try set(fd, SOL_SOCKET, SO_RCVBUF, NetSys.bufferSize(size), "SO_RCVBUF") }
        if let size = options.sendBufferSize { try set(fd, SOL_SOCKET, SO_SNDBUF, NetSys.bufferSize(size), "SO_SNDBUF") }
    }

    deinit { close() }

    /// Whether ``close()`` or ``release()`` has been called.
    public var isClosed: Bool { descriptor.isClosed }

    // MARK: Registration

    /// Registers the socket with `poller`; ``close()`` will deregister it first. One poller at a time:
    /// while it is registered this fails with ``/ReadinessCore/PollerError/alreadyRegistered(_:)``
    /// (a poller closed since holds nothing: the socket may go to another).
    public func register(on poller: any Poller, token: Token, interest: Interest,
                         trigger: Trigger = .level) throws(PollerError) {
        try descriptor.register(on: poller, token: token, interest: interest, trigger: trigger)
    }

    /// Changes the registration made with ``register(on:token:interest:trigger:)``.
    public func reregister(token: Token, interest: Interest, trigger: Trigger = .level) throws(PollerError) {
        try descriptor.reregister(token: token, interest: interest, trigger: trigger)
    }

    /// Stops watching the socket (it stays open).
    public func deregister() throws(PollerError) {
        try descriptor.deregister()
    }

    /// Deregisters (if registered), then closes the descriptor, and unlinks a bound Unix path (even
    /// while a `dup` of the descriptor lives on: give such a socket up with ``release()``, which
    /// keeps the path). Later calls do nothing.
    public func close() {
        guard !descriptor.isClosed else { return }
        // Unlinked while the socket still holds its file: its inode number cannot have been reused.
        boundPath?.unlinkIfOurs()
        boundPath = nil
        _ = descriptor.close()
    }

    /// Gives the descriptor up: the caller owns it (and a bound Unix path) from now on.
    public func release() -> CInt {
        boundPath = nil
        return descriptor.release()
    }

    // MARK: Connecting

    /// Sets the default destination and the only accepted source (connect(2) on a datagram socket:
    /// nothing is sent). An IP peer with port 0 is ``SocketError/Kind/invalidArgument``. An IPv4 peer of an IPv6 socket is IPv4-mapped (`::ffff:A.B.C.D`). Afterwards `send(_:)` needs no address, datagrams from other sources that
    /// arrive are dropped by the kernel (those already queued when it connects are still received,
    /// whoever sent them: check the source where that matters), and an ICMP port-unreachable for a UDP
    /// datagram sent fails the **next** send or receive with ``SocketError/Kind/refused`` (an
    /// unconnected socket never hears of it), as "fragmentation needed" does with
    /// ``SocketError/Kind/messageTooLarge``. A **Unix-domain** send to a peer socket that is gone fails
    /// itself with `refused`; the kernel then disconnects a connected socket (``peerAddress`` is nil,
    /// the next send without a destination is ``SocketError/Kind/notConnected``) and drops what was
    /// queued for it.
    /// A refusal still pending from an association with another peer is dropped by the connect (it was
    /// the old peer's: Linux keeps it across a new connect(2), and the first send to the new peer
    /// failed with it); connected again to the same peer, the refusal stays.
    /// A **Unix-domain** socket connected elsewhere before loses the datagrams queued for it (Linux
    /// purges its receive queue); if there were any, an old peer connected back to it fails its next
    /// operation with ``SocketError/Kind/reset``, once. Either way the old peer's sends to it fail with
    /// ``SocketError/Kind/permissionDenied`` (EPERM) from then on: it accepts only its new peer's.
    public func connect(to peer: SocketAddress) throws(SocketError) {
        // Port 0 names no peer: Linux connects to it, then denies the association (getpeername's
        // ENOTCONN: no `peerAddress`, and `disconnect` could not tell there was one), while a send to
        // port 0 is EINVAL. `destination` refuses it as that send is.
        // A closed socket is closed, whatever the address (as a batch send says it).
        if fd < 0 { throw SocketError(errno: EBADF, operation: "connect") }
        let peer = try destination(peer, "connect")
        let previous = try? SocketAddress.peer(of: fd)
        let status = Sys.retryingEINTR { peer.withSockaddr { Glibc.connect(fd, $0, $1) } }
        guard status == 0 else {
            let code = errno
            if code == EAGAIN { try Self.checkAutobind(fd, family, "connect \(peer)") }
            throw SocketError(errno: code, operation: "connect \(peer)")
        }
        // Compared as the kernel names them (a connect to 0.0.0.0 or :: is to the loopback address):
        // a reconnect to the same peer, however the caller spells it, keeps its refusal.
        if let previous, previous != (try? SocketAddress.peer(of: fd)) { dropPendingError() }
    }

    /// Reads and clears SO_ERROR: a refusal an ICMP error left for the association just replaced.
    private func dropPendingError() {
        _ = NetSys.option(fd, level: SOL_SOCKET, name: SO_ERROR)
    }

    /// Why `address` names nobody to send to, or nil: the empty address, a nameless Unix address (an
    /// unbound client's, as `accept` reports it: the kernel's EINVAL), an IP address with port 0 (the
    /// kernel's EINVAL for a send; a connect it takes, then denies). Refused the same way by a send, a
    /// connect and a batch slot.
    static func noDestination(_ address: SocketAddress) -> String? {
        if address.isEmpty { return "an empty address (SocketAddress()): no destination" }
        if address.isNamelessUnix { return "a nameless Unix address: no destination" }
        if address.family != .unix, address.port == 0 { return "\(address): port 0 names no peer" }
        return nil
    }

    /// `address` as this socket sends to it: as it is when the families match; an IPv4 address from an
    /// IPv6 socket IPv4-mapped (`::ffff:A.B.C.D`, as Go does; the kernel refuses it with
    /// ``SocketError/Kind/unreachable`` (ENETUNREACH) when the socket is IPv6-only); any other mix refused
    /// with ``SocketError/Kind/invalidArgument`` before any system call.
    @usableFromInline
    func destination(_ address: SocketAddress, _ operation: String) throws(SocketError) -> SocketAddress {
        if let problem = Self.noDestination(address) { throw SocketError(.invalidArgument, operation: "\(operation) \(problem)") }
        if address.family == family { return address }
        if family == .ipv6, let mapped = address.ipv4Mapped { return mapped }
        throw SocketError(.invalidArgument, operation: "\(operation) \(address): not a \(family.rawValue) address")
    }

    /// Dissolves the association ``connect(to:)`` made (connect(2) to AF_UNSPEC): a destination is
    /// needed again to send (``SocketError/Kind/notConnected`` without one), and datagrams from any
    /// source are received. **Linux gives up a local port the kernel chose** (at the connect, or at a
    /// bind to port 0): the socket takes a new ephemeral port at its next send; bind it to a port of
    /// your choosing to keep its address.
    /// On a socket that is not connected (never, or disconnected already) it fails with
    /// ``SocketError/Kind/notConnected`` (ENOTCONN, as libuv's `uv_udp_connect(handle, NULL)` answers)
    /// and changes nothing: not even a port the kernel chose (the kernel is not asked: Linux would give
    /// that port up too).
    /// A refusal still pending from the dissolved association is dropped (Linux keeps it, and the next
    /// send to any destination failed with it). A **Unix-domain** socket loses the datagrams queued
    /// for it (Linux purges its receive queue at the disconnect); if there were any, a peer connected
    /// back to it fails its next operation with ``SocketError/Kind/reset``, once. That peer's sends are
    /// accepted again afterwards (the socket takes datagrams from any source).
    public func disconnect() throws(SocketError) {
        do { _ = try SocketAddress.peer(of: fd) } catch {
            if error.errno == ENOTCONN { throw SocketError(errno: ENOTCONN, operation: "disconnect") }
        }
        guard Sys.retryingEINTR({ rd_net_disconnect(fd) }) == 0 else {
            throw SocketError(errno: errno, operation: "disconnect (connect to AF_UNSPEC)")
        }
        dropPendingError()
    }

    // MARK: Sending and receiving

    /// Sends `buffer` as one datagram to `destination` (nil: to the connected peer). An empty buffer
    /// sends an empty datagram. An IPv4 destination of an IPv6 socket is IPv4-mapped
    /// (`::ffff:A.B.C.D`: a dual-stack socket sends it over IPv4); an IPv6 destination of an IPv4
    /// socket, or an IP one of a Unix socket, is ``SocketError/Kind/invalidArgument``. ``IOResult/transferred(_:)`` is always the whole count.
    @inlinable
    public func send(_ buffer: UnsafeRawBufferPointer, to destination: SocketAddress? = nil) throws(SocketError) -> IOResult {
        try sendImpl(buffer, to: destination)
    }

    /// Shuts down one direction or both (shutdown(2); mio's `UnixDatagram::shutdown`), the descriptor
    /// staying open: after `.write` a send fails (EPIPE on a Unix socket); after `.read` pollers report
    /// the socket readable, yet a receive that finds nothing queued still says `.wouldBlock` (Linux
    /// gives an end of file to SOCK_SEQPACKET only). On an unconnected UDP socket Linux answers
    /// ENOTCONN (`notConnected`) yet applies the shutdown all the same.
    public func shutdown(_ direction: ShutdownDirection) throws(SocketError) {
        try NetSys.shutdown(fd, direction)
    }

    /// Sends `bytes` as one datagram to `destination`: `send(array, to: address)`, as the `Bytes`,
    /// raw-buffer and async forms read (the ranged form's `to:` is an end index).
    public func send(_ bytes: [UInt8], to destination: SocketAddress) throws(SocketError) -> IOResult {
        try send(bytes, from: 0, to: nil, destination: destination)
    }

    /// Sends `bytes[offset..<end]` (end: the whole array) as one datagram; a range outside the array
    /// is refused (``SocketError/Kind/invalidArgument``) before any system call.
    public func send(_ bytes: [UInt8], from offset: Int = 0, to end: Int? = nil,
                     destination: SocketAddress? = nil) throws(SocketError) -> IOResult {
        let end = end ?? bytes.count
        guard offset >= 0, offset <= end, end <= bytes.count else {
            throw SocketError(.invalidArgument, operation: "send(from: \(offset), to: \(end)) of \(bytes.count) bytes")
        }
        let outcome = bytes.withUnsafeBytes { raw in
            Result { () throws(SocketError) -> IOResult in
                try sendImpl(UnsafeRawBufferPointer(rebasing: raw[offset..<end]), to: destination)
            }
        }
        return try outcome.get()
    }

    /// Sends the readable bytes of `bytes` as one datagram.
    public func send(_ bytes: Bytes, to destination: SocketAddress? = nil) throws(SocketError) -> IOResult {
        let outcome = bytes.withUnsafeBytes { raw in
            Result { () throws(SocketError) -> IOResult in try sendImpl(raw, to: destination) }
        }
        return try outcome.get()
    }

    @usableFromInline
    func sendImpl(_ buffer: UnsafeRawBufferPointer, to destination: SocketAddress?) throws(SocketError) -> IOResult {
        if fd < 0 { throw SocketError(errno: EBADF, operation: destination == nil ? "send" : "sendto") }
        let destination = try destination.map { (address) throws(SocketError) in try self.destination(address, "send to") }
        let fd = self.fd
        let n: Int
        if let destination {
            n = destination.withSockaddr { address, length in
                Sys.retryingEINTR { rd_net_sendto(fd, buffer.baseAddress, buffer.count, address, length) }
            }
        } else {
            n = Sys.retryingEINTR { rd_net_sendto(fd, buffer.baseAddress, buffer.count, nil, 0) }
        }
        if n < 0, errno == EINVAL, let size = segmentSize, (buffer.count - 1) / size + 1 > Self.fewestSegmentLimit {
            // UDP GSO: more segments than the kernel sends in one call (UDP_MAX_SEGMENTS: 64, 128 on
            // newer kernels) is EINVAL, which says nothing of why.
            throw SocketError(.messageTooLarge, errno: EINVAL,
                              operation: "sendto: \(buffer.count) bytes in segments of \(size) are more segments than the kernel sends at once")
        }
        let result = try NetSys.result(n, operation: "sendto", isRead: false)
        if case .wouldBlock = result { try Self.checkAutobind(fd, family, "sendto") }
        return result
    }

    /// After EAGAIN from a send or connect of an IP socket: the kernel's autobind found no free local
    /// port (`inet_autobind`'s EAGAIN, while the socket stays writable: waiting for writability would
    /// wait for ever). Throws ``SocketError/Kind/addressUnavailable`` then (a TCP connect's EAGAIN is
    /// `addressUnavailable` too); returns when the socket has a port (a send buffer really full).
    /// A system call, on the EAGAIN path only.
    static func checkAutobind(_ fd: CInt, _ family: SocketAddress.Family, _ operation: String) throws(SocketError) {
        guard family != .unix, let local = try? SocketAddress.local(of: fd), local.port == 0 else { return }
        throw SocketError(.addressUnavailable, errno: EAGAIN, operation: "\(operation): no local port is free")
    }

    /// Receives one datagram into `buffer`: its byte count (at most `buffer.count`), its source and
    /// whether it was truncated. An empty buffer is allowed: it takes the next datagram and reports
    /// its length (truncated unless the datagram was empty), a way to drop one.
    @inlinable
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> DatagramReceiveResult {
        try receiveImpl(buffer)
    }

    /// Receives one datagram into the start of `buffer` (its count does not change).
    public func receive(into buffer: inout [UInt8]) throws(SocketError) -> DatagramReceiveResult {
        let outcome = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(SocketError) -> DatagramReceiveResult in try receiveImpl(raw) }
        }
        return try outcome.get()
    }

    /// Receives one datagram appended to `bytes`, up to `maximum` bytes of it (at least 1, refused
    /// otherwise; the default, ``defaultReceiveSize``, receives any UDP datagram whole; at most
    /// ``StreamSocket/maximumReadReservation`` is reserved). Room is made before the system call (as for the
    /// stream read), so a receive that would block may leave it made; memory that cannot be allocated
    /// is ``SocketError/Kind/resourceExhausted``.
    public func receive(into bytes: inout Bytes, maximum: Int = DatagramSocket.defaultReceiveSize) throws(SocketError) -> DatagramReceiveResult {
        guard maximum >= 1 else { throw SocketError(.invalidArgument, operation: "receive(into:maximum: \(maximum))") }
        let wanted = Swift.min(maximum, StreamSocket.maximumReadReservation)
        guard bytes.makeRoom(wanted) else {
            throw SocketError(.resourceExhausted, operation: "receive: allocating room for \(wanted) bytes")
        }
        let room = bytes.unsafeRoom
        // Into all the room the buffer has, up to `maximum`: the cap bounds what is reserved, not what
        // is received, as for the stream read (a datagram cut short cannot be read again: a Unix
        // datagram over 1 MiB was cut to it though the buffer held it whole).
        let result = try receiveImpl(UnsafeMutableRawBufferPointer(rebasing: room[..<Swift.min(maximum, room.count)]))
        if case .received(let datagram) = result { bytes.commit(datagram.count) }
        return result
    }

    /// Copies the next datagram into `buffer` **without taking it** (MSG_PEEK; tokio's `peek_from`):
    /// the same result as ``receive(into:)-(UnsafeMutableRawBufferPointer)``, truncation and length
    /// included, and the next receive gets the same datagram. A pending error (a connected socket's
    /// refusal) is reported, and cleared, as a receive reports it.
    public func peek(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> DatagramReceiveResult {
        try receiveImpl(buffer, peek: true)
    }

    /// ``peek(into:)-(UnsafeMutableRawBufferPointer)`` into the start of `buffer` (its count does not change).
    public func peek(into buffer: inout [UInt8]) throws(SocketError) -> DatagramReceiveResult {
        let outcome = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(SocketError) -> DatagramReceiveResult in try receiveImpl(raw, peek: true) }
        }
        return try outcome.get()
    }

    @usableFromInline
    func receiveImpl(_ buffer: UnsafeMutableRawBufferPointer, peek: Bool = false) throws(SocketError) -> DatagramReceiveResult {
        var source = SocketAddress()
        var truncated: CInt = 0
        let fd = self.fd
        let n = source.withMutableSockaddr { address, length in
            Sys.retryingEINTR { rd_net_recvfrom(fd, buffer.baseAddress, buffer.count, address, length, peek ? 1 : 0, &truncated) }
        }
        if n < 0 {
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            throw SocketError(errno: code, operation: peek ? "recvmsg(MSG_PEEK)" : "recvmsg")
        }
        let count = Swift.min(n, buffer.count)
        return .received(ReceivedDatagram(count: count, length: n, source: source.length > 0 ? source : nil,
                                          isTruncated: truncated != 0))
    }

    /// Whether a receive would not block now (a datagram is queued, or an error waits to be
    /// reported), asked without a buffer and without consuming anything: poll(2) with a zero timeout.
    /// (A `recv` with MSG_PEEK would take a pending error, such as a connected socket's refusal, and
    /// the receive that follows would never report it.)
    /// A closed socket answers true: its receive reports ``SocketError/Kind/closed`` at once.
    public func hasQueuedDatagram() -> Bool {
        guard fd >= 0 else { return true }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = Sys.retryingEINTR { Glibc.poll(&entry, 1, 0) }
        return n != 0   // ready, an error pending, or poll failed: the receive reports it
    }

    /// Whether the peer this connected Unix datagram socket sends to is shut down for reading, which
    /// poll never reports to a sender (each send then fails with EPIPE, or EAGAIN while the buffer
    /// is full), asked of the kernel's socket diagnostics without sending a datagram (a send of no
    /// bytes would be one): nil when it cannot be told (not connected, a kernel without Unix socket
    /// diagnostics, a socket of another network namespace). Two netlink round trips.
    package var peerReadingShutDown: Bool? {
        guard fd >= 0 else { return nil }
        switch rd_net_unix_peer_reading_shut(fd) {
        case 0: return false
        case 1: return true
        default: return nil
        }
    }

    // MARK: Addresses and options

    /// The local address (getsockname), nil once closed, and for a nameless Unix-domain socket (as
    /// ``ReceivedDatagram/source`` is nil for its datagrams).
    public var localAddress: SocketAddress? { (try? SocketAddress.local(of: fd)).flatMap { $0.isNamelessUnix ? nil : $0 } }
    /// The connected peer (getpeername), nil once closed or not connected, and for a nameless
    /// Unix-domain peer (a socketpair's other end).
    public var peerAddress: SocketAddress? { (try? SocketAddress.peer(of: fd)).flatMap { $0.isNamelessUnix ? nil : $0 } }

    /// The pending error (SO_ERROR), read and cleared: for a connected socket, a refusal not yet
    /// reported by a send or receive; nil when there is none.
    public func takePendingError() -> SocketError? {
        NetSys.takePendingError(fd)
    }

    /// SO_BROADCAST: may send to a broadcast address (EACCES without it). An IP option: on a Unix-domain
    /// socket (whose kernel takes it and ignores it) ``SocketError/Kind/invalidArgument``, as the other
    /// IP options are there.
    public func setBroadcast(_ enabled: Bool) throws(SocketError) {
        if family == .unix { throw SocketError(.invalidArgument, operation: "SO_BROADCAST on a Unix-domain socket") }
        try Self.set(fd, SOL_SOCKET, SO_BROADCAST, enabled ? 1 : 0, "SO_BROADCAST")
    }

    /// Whether SO_BROADCAST is set (off unless set). On a Unix-domain socket
    /// ``SocketError/Kind/invalidArgument``, as ``setBroadcast(_:)``.
    public func broadcast() throws(SocketError) -> Bool {
        if family == .unix { throw SocketError(.invalidArgument, operation: "SO_BROADCAST on a Unix-domain socket") }
        return try NetSys.option(fd, level: SOL_SOCKET, name: SO_BROADCAST).get() != 0
    }

    /// SO_RCVBUF (the kernel caps the value at net.core.rmem_max, then doubles it for its
    /// bookkeeping: ``receiveBufferSize()`` reads back up to twice rmem_max). Datagrams that
    /// arrive while it is full are dropped by the kernel.
    public func setReceiveBufferSize(_ bytes: Int) throws(SocketError) {
        try Self.set(fd, SOL_SOCKET, SO_RCVBUF, NetSys.bufferSize(bytes), "SO_RCVBUF")
    }

    /// SO_SNDBUF (capped at net.core.wmem_max, then doubled, like ``setReceiveBufferSize(_:)``).
    public func setSendBufferSize(_ bytes: Int) throws(SocketError) {
        try Self.set(fd, SOL_SOCKET, SO_SNDBUF, NetSys.bufferSize(bytes), "SO_SNDBUF")
    }

    /// The receive buffer size the kernel uses.
    public func receiveBufferSize() throws(SocketError) -> Int {
        try Int(NetSys.option(fd, level: SOL_SOCKET, name: SO_RCVBUF).get())
    }

    /// The send buffer size the kernel uses.
    public func sendBufferSize() throws(SocketError) -> Int {
        try Int(NetSys.option(fd, level: SOL_SOCKET, name: SO_SNDBUF).get())
    }

    /// The unicast TTL (IP_TTL) or hop limit (IPV6_UNICAST_HOPS): 1 to 255; -1 for IPv6 restores the
    /// route's default. Outside that range: ``SocketError/Kind/invalidArgument``.
    public func setHopLimit(_ hops: Int) throws(SocketError) {
        try setHops(hops, multicast: false)
    }

    /// The multicast TTL (IP_MULTICAST_TTL) or hop limit (IPV6_MULTICAST_HOPS): 0 to 255 (1, the
    /// default, stays on the local network; 0 on this host).
    public func setMulticastHopLimit(_ hops: Int) throws(SocketError) {
        try setHops(hops, multicast: true)
    }

    /// The unicast TTL or hop limit in effect (64 unless set; an IPv6 socket's -1 reads back as the
    /// route's default). On a Unix-domain socket ``SocketError/Kind/invalidArgument``.
    public func hopLimit() throws(SocketError) -> Int {
        try IPOptions.hops(fd, family, multicast: false)
    }

    /// The multicast TTL or hop limit in effect (1 unless set).
    public func multicastHopLimit() throws(SocketError) -> Int {
        try IPOptions.hops(fd, family, multicast: true)
    }

    private func setHops(_ hops: Int, multicast: Bool) throws(SocketError) {
        try IPOptions.setHops(fd, family, hops, multicast: multicast)
    }

    /// The largest TTL or hop limit.
    public static let maximumHops = 255

    /// Whether this host receives its own multicast datagrams (IP_MULTICAST_LOOP,
    /// IPV6_MULTICAST_LOOP; on by default).
    public func setMulticastLoop(_ enabled: Bool) throws(SocketError) {
        guard family != .unix else {
            throw SocketError(.invalidArgument, operation: "multicast loop on a Unix-domain socket")
        }
        if rd_net_set_multicast_loop(fd, domain, enabled ? 1 : 0) != 0 {
            throw SocketError(errno: errno, operation: "setsockopt(multicast loop)")
        }
    }

    /// Whether this host receives its own multicast datagrams (IP_MULTICAST_LOOP for IPv4,
    /// IPV6_MULTICAST_LOOP for IPv6).
    public func multicastLoop() throws(SocketError) -> Bool {
        guard family != .unix else {
            throw SocketError(.invalidArgument, operation: "multicast loop on a Unix-domain socket")
        }
        var enabled: CInt = 0
        if rd_net_get_multicast_loop(fd, domain, &enabled) != 0 {
            throw SocketError(errno: errno, operation: "getsockopt(multicast loop)")
        }
        return enabled != 0
    }

    /// The interface outgoing multicast leaves by (IP_MULTICAST_IF, IPV6_MULTICAST_IF), by index
    /// (``interfaceIndex(named:)``; 0: the routing table's choice).
    public func setMulticastInterface(_ index: UInt32) throws(SocketError) {
        guard family != .unix else {
            throw SocketError(.invalidArgument, operation: "multicast interface on a Unix-domain socket")
        }
        try Self.checkInterface(index, "multicast interface")
        if rd_net_multicast_interface(fd, domain, index) != 0 {
            throw SocketError(errno: errno, operation: "setsockopt(multicast interface \(index))")
        }
    }

    /// Joins the IPv4 or IPv6 multicast `group` (its port is ignored) on interface `index` (0: the
    /// zone of a scoped IPv6 group such as `[ff02::fb%eth1]`, else the kernel's choice by route; an
    /// index other than the group's zone is ``SocketError/Kind/invalidArgument``). An IPv6 socket may join an IPv4 group (IP_ADD_MEMBERSHIP: a
    /// dual-stack socket, not `v6Only`, then receives its datagrams, as libuv's
    /// `uv_udp_set_membership` allows); an IPv4 socket an IPv6 group, or an address that is not
    /// multicast, is refused (``SocketError/Kind/invalidArgument``).
    public func joinMulticast(_ group: SocketAddress, interface index: UInt32 = 0) throws(SocketError) {
        try membership(group, index, join: true)
    }

    /// Leaves a group joined with ``joinMulticast(_:interface:)``.
    public func leaveMulticast(_ group: SocketAddress, interface index: UInt32 = 0) throws(SocketError) {
        try membership(group, index, join: false)
    }

    private func membership(_ group: SocketAddress, _ index: UInt32, join: Bool) throws(SocketError) {
        guard group.isMulticast, group.family == family || (group.family == .ipv4 && family == .ipv6) else {
            throw SocketError(.invalidArgument, operation: "\(join ? "join" : "leave") \(group): not a \(family.rawValue) multicast group")
        }
        // A scoped group (`ff02::fb%eth1`) names its interface: taken when no index is given (the
        // kernel's choice by route would be another interface on a host with several, where a send
        // to the same address honours the zone); an index that names another one is a contradiction.
        let zone = group.zoneIndex
        if zone != 0, index != 0, zone != index {
            throw SocketError(.invalidArgument, operation: "\(join ? "join" : "leave") \(group): its zone is interface \(zone), not interface \(index)")
        }
        let index = index != 0 ? index : zone
        try Self.checkInterface(index, join ? "join \(group)" : "leave \(group)")
        let status = group.withSockaddr { address, _ in rd_net_multicast_membership(fd, address, index, join ? 1 : 0) }
        if status != 0 { throw SocketError(errno: errno, operation: join ? "IP_ADD_MEMBERSHIP" : "IP_DROP_MEMBERSHIP") }
    }

    /// An interface index that names no interface is the caller's mistake, refused before the
    /// `setsockopt` (IPv4 would say EADDRNOTAVAIL and IPv6 ENODEV, which no kind names); 0 is the
    /// kernel's choice.
    private static func checkInterface(_ index: UInt32, _ operation: String) throws(SocketError) {
        // Only a sure "none" (ENXIO) refuses: out of descriptors the question cannot be asked, and the
        // setsockopt, which needs none, decides.
        guard index != 0, rd_net_interface_exists(index) == 0 else { return }
        throw SocketError(.invalidArgument, operation: "\(operation): no network interface has index \(index)")
    }

    /// The index of the network interface `name` ("lo", "eth0"), nil when there is none.
    public static func interfaceIndex(named name: String) -> UInt32? {
        guard !name.utf8.contains(0) else { return nil }
        let index = rd_net_interface_index(name)
        return index == 0 ? nil : index
    }

    private var domain: CInt { IPOptions.domain(family) }

    private static func set(_ fd: CInt, _ level: CInt, _ name: CInt, _ value: CInt, _ operation: String) throws(SocketError) {
        let code = NetSys.setOption(fd, level: level, name: name, value: value)
        if code != 0 { throw SocketError(errno: code, operation: "setsockopt(\(operation))") }
    }
}

/// One datagram received: how many bytes were stored, how long it was, and where it came from.
public struct ReceivedDatagram: Hashable, Sendable {
    /// The bytes stored in the caller's buffer.
    public var count: Int
    /// The datagram's real length (MSG_TRUNC): larger than ``count`` when it was truncated.
    public var length: Int
    /// The sender's address: nil for a nameless Unix sender (an unbound socket, a socketpair's end).
    public var source: SocketAddress?
    /// The datagram did not fit the buffer: `length - count` bytes of it are lost.
    public var isTruncated: Bool

    /// A received datagram's description.
    public init(count: Int, length: Int, source: SocketAddress?, isTruncated: Bool) {
        self.count = count
        self.length = length
        self.source = source
        self.isTruncated = isTruncated
    }
}

/// What one datagram receive did. Errors are thrown (``SocketError``).
public enum DatagramReceiveResult: Hashable, Sendable {
    /// A datagram (possibly empty, possibly truncated: look at ``ReceivedDatagram/isTruncated``).
    case received(ReceivedDatagram)
    /// EAGAIN: no datagram queued; wait for readability.
    case wouldBlock

    /// The datagram, or nil for ``wouldBlock``.
    public var datagram: ReceivedDatagram? {
        if case .received(let datagram) = self { return datagram }
        return nil
    }
}

extension SocketAddress {
    /// Whether this is an IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast address.
    public var isMulticast: Bool {
        withSockaddr { address, _ in
            switch CInt(address.pointee.sa_family) {
            case AF_INET:
                address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt32(bigEndian: $0.pointee.sin_addr.s_addr) >> 28 == 0xE
                }
            case AF_INET6:
                address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    withUnsafeBytes(of: $0.pointee.sin6_addr) { $0[0] == 0xFF }
                }
            default:
                false
            }
        }
    }
}
