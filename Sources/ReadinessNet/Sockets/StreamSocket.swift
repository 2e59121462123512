#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import CReadinessNet

/// A connected TCP or Unix-domain stream socket over a descriptor it owns.
///
/// - The descriptor is non-blocking and close-on-exec, and closed exactly once: by ``close()``, or when
///   the object is released.
/// - Registering through ``register(on:token:interest:trigger:)`` makes ``close()`` deregister the
///   descriptor **before** closing it (the contract's order), so a loop never has to remember.
/// - `read(into:)` and `write(_:)` return an ``IOResult`` (bytes, would block, end of stream) and
///   throw a ``SocketError``; EINTR is retried inside; a write to a reset peer never raises SIGPIPE
///   (`MSG_NOSIGNAL`), it fails with ``SocketError/Kind/reset``.
///
/// Reads and writes do not allocate. Used from one thread at a time, like the poller.
public final class StreamSocket {
    /// The descriptor and its registration.
    private var descriptor: OwnedDescriptor
    /// The descriptor, or -1 once closed.
    public var fd: CInt { descriptor.fd }
    /// The poller it is registered with through ``register(on:token:interest:trigger:)``, if any.
    public var poller: (any Poller)? { descriptor.poller }
    /// What it is registered for on ``poller`` (nil when not registered): the token, interest and
    /// trigger of the last ``register(on:token:interest:trigger:)`` or ``reregister(token:interest:trigger:)``.
    public var registration: (token: Token, interest: Interest, trigger: Trigger)? { descriptor.registration }

    /// Takes ownership of a stream socket descriptor, and makes it non-blocking.
    ///
    /// Refused with ``SocketError/Kind/invalidArgument`` when `fd` is negative, not a stream socket, a
    /// listening one, or of a family other than IPv4, IPv6 and Unix, and with
    /// ``SocketError/Kind/closed`` when it is not open. **A descriptor whose adoption failed
    /// stays the caller's, open** (as fdopen(3) leaves it): only a socket that was made owns it.
    public init(adopting fd: CInt) throws(SocketError) {
        try Self.checkAdoptable(fd)
        descriptor = OwnedDescriptor(fd)
    }

    /// Takes ownership of a socket handed over by ``ConnectAttempt`` or ``Connector``.
    public convenience init(_ connected: ConnectedSocket) {
        self.init(owning: connected.fd)
    }

    /// A descriptor this package made (accept4, a connect attempt, the completion driver's accept):
    /// non-blocking already, not checked.
    package init(owning fd: CInt) {
        descriptor = OwnedDescriptor(fd)
    }

    /// What ``init(adopting:)`` checks: an open stream socket, not a listening one, made non-blocking and close-on-exec.
    /// A listening socket (systemd's socket activation hands those over) would never read nor write:
    /// poll reports it neither readable nor writable until a client connects, so a read waiting for
    /// readiness waited for one, and each system call failed with a different errno by family.
    private static func checkAdoptable(_ fd: CInt) throws(SocketError) {
        try OwnedDescriptor.checkAdoptable(fd, type: CInt(SOCK_STREAM.rawValue), kind: "stream") { (fd) throws(SocketError) in
            // Of a family it can name (as a listener's and a datagram socket's adoption check): an
            // AF_VSOCK stream's addresses read as IPv4 before (outside reader).
            switch NetSys.option(fd, level: SOL_SOCKET, name: SO_DOMAIN) {
            case .success(AF_INET), .success(AF_INET6), .success(AF_UNIX): break
            case .success(let domain):
                throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): address family \(domain) is not IPv4, IPv6 or Unix")
            case .failure(let error): throw error
            }
            if case .success(1) = NetSys.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN) {
                throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): a listening socket, not a connected stream")
            }
        }
    }

    deinit { close() }

    /// Whether ``close()`` or ``release()`` has been called.
    public var isClosed: Bool { descriptor.isClosed }

    // MARK: Registration

    /// Registers the socket with `poller`; ``close()`` will deregister it first. A socket is registered
    /// with one poller at a time: while it is registered (here or elsewhere) this fails with
    /// ``/ReadinessCore/PollerError/alreadyRegistered(_:)``; deregister it first. A poller closed
    /// since (``/ReadinessCore/Poller/isClosed``) holds nothing: the socket may go to another.
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

    /// Deregisters (if registered), then closes the descriptor. Later calls do nothing.
    public func close() {
        descriptor.close()
    }

    /// Gives the descriptor up: the caller owns it from now on (deregistered first).
    public func release() -> CInt {
        descriptor.release()
    }

    // MARK: Reading and writing

    /// Reads up to `buffer.count` bytes. An empty buffer is refused (``SocketError/Kind/invalidArgument``):
    /// a read of 0 bytes would look like the end of the stream.
    @inlinable
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> IOResult {
        try readImpl(buffer)
    }

    /// Reads into several buffers in one system call (readv; mio's and tokio's `read_vectored`), filling
    /// each before the next, as much as is queued now: `.transferred(n)` for the `n` bytes read across
    /// them. At most ``maximumVectoredBuffers`` non-empty buffers are filled by one call; empty ones are
    /// skipped. A list with no room at all is refused (``SocketError/Kind/invalidArgument``), as a read
    /// into an empty buffer is: a read of 0 bytes would look like the end of the stream.
    public func read(vectored buffers: some Collection<UnsafeMutableRawBufferPointer>) throws(SocketError) -> IOResult {
        let count = Swift.min(buffers.count(where: { !$0.isEmpty }), Self.maximumVectoredBuffers)
        if count == 0 { throw SocketError(.invalidArgument, operation: "read into empty buffers") }
        let n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { iov -> Int in
            var index = 0
            for buffer in buffers where !buffer.isEmpty {
                if index == count { break }
                iov[index] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
                index += 1
            }
            return NetSys.readv(fd, iov.baseAddress!, index)
        }
        do { return try NetSys.result(n, operation: "readv", isRead: true) } catch {
            throw notConnectedIfUnconnected(error)
        }
    }

    /// Reads up to `buffer.count` bytes into the start of `buffer` (its count does not change).
    public func read(into buffer: inout [UInt8]) throws(SocketError) -> IOResult {
        let outcome = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(SocketError) -> IOResult in try readImpl(raw) }
        }
        return try outcome.get()
    }

    /// Copies up to `buffer.count` of the bytes queued into `buffer` **without taking them**
    /// (`recv(MSG_PEEK)`; tokio's `TcpStream::peek`, CPython's `recv(n, MSG_PEEK)`): the next read
    /// returns them again. `.endOfStream` once the peer shut down its sending side and nothing is
    /// queued; `.wouldBlock` when nothing is. An empty buffer is refused
    /// (``SocketError/Kind/invalidArgument``), as for ``read(into:)-(UnsafeMutableRawBufferPointer)``.
    /// A pending error (a reset) is reported, and taken, as a read would report it.
    public func peek(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> IOResult {
        if buffer.isEmpty { throw SocketError(.invalidArgument, operation: "peek into an empty buffer") }
        do { return try NetSys.result(NetSys.peek(fd, buffer), operation: "recv(MSG_PEEK)", isRead: true) } catch {
            throw notConnectedIfUnconnected(error)
        }
    }

    /// ``peek(into:)-(UnsafeMutableRawBufferPointer)`` into the start of `buffer` (its count does not change).
    public func peek(into buffer: inout [UInt8]) throws(SocketError) -> IOResult {
        let outcome = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(SocketError) -> IOResult in try peek(into: raw) }
        }
        return try outcome.get()
    }

    /// Writes as much of `buffer` as the socket takes now.
    @inlinable
    public func write(_ buffer: UnsafeRawBufferPointer) throws(SocketError) -> IOResult {
        try writeImpl(buffer)
    }

    /// Writes as much of `bytes[offset..<end]` (end: the whole array) as the socket takes now; a range
    /// outside the array is refused (``SocketError/Kind/invalidArgument``).
    public func write(_ bytes: [UInt8], from offset: Int = 0, to end: Int? = nil) throws(SocketError) -> IOResult {
        let end = end ?? bytes.count
        guard offset >= 0, offset <= end, end <= bytes.count else {
            throw SocketError(.invalidArgument, operation: "write(from: \(offset), to: \(end)) of \(bytes.count) bytes")
        }
        let outcome = bytes.withUnsafeBytes { raw in
            Result { () throws(SocketError) -> IOResult in
                try writeImpl(UnsafeRawBufferPointer(rebasing: raw[offset..<end]))
            }
        }
        return try outcome.get()
    }

    /// Writes several buffers in one system call (sendmsg), as much as the socket takes now; at most
    /// ``maximumVectoredBuffers`` non-empty buffers are written by one call (empty ones are skipped, so
    /// a list that starts with IOV_MAX empty buffers still writes the bytes after them; a list with no
    /// byte at all is `.transferred(0)` without a system call, on an open socket: a closed one is
    /// ``SocketError/Kind/closed``, as any write). The iovec array is on the stack for up to 64
    /// buffers, empty ones counted (inlinable, so it is specialized for the caller's collection and
    /// allocates nothing); more take one heap allocation per call (Swift's temporary allocations stay
    /// on the stack up to 1 KiB).
    @inlinable
    public func write(vectored buffers: some Collection<UnsafeRawBufferPointer>) throws(SocketError) -> IOResult {
        if fd < 0 { throw SocketError(errno: EBADF, operation: "sendmsg") }
        let count = Swift.min(buffers.count, Self.maximumVectoredBuffers)
        if count == 0 { return .transferred(0) }
        let n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { iov -> Int in
            var index = 0
            for buffer in buffers where !buffer.isEmpty {
                if index == count { break }
                iov[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
                index += 1
            }
            return index == 0 ? 0 : sendv(iov.baseAddress!, index)
        }
        return try vectoredResult(n)
    }

    @usableFromInline
    func sendv(_ iov: UnsafePointer<iovec>, _ count: Int) -> Int { NetSys.sendv(fd, iov, count) }

    @usableFromInline
    func vectoredResult(_ n: Int) throws(SocketError) -> IOResult {
        try NetSys.result(n, operation: "sendmsg", isRead: false)
    }

    /// The most buffers one vectored write takes (IOV_MAX).
    public static let maximumVectoredBuffers = Int(rd_net_iov_max())

    @usableFromInline
    func readImpl(_ buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> IOResult {
        if buffer.isEmpty { throw SocketError(.invalidArgument, operation: "read into an empty buffer") }
        do { return try NetSys.result(NetSys.read(fd, buffer), operation: "read", isRead: true) } catch {
            throw notConnectedIfUnconnected(error)
        }
    }

    /// A Unix stream socket never connected answers a read with EINVAL (the kernel's
    /// unix_stream_recvmsg), where TCP and a write answer ENOTCONN: told apart by getpeername (on the
    /// failure path only), it is ``SocketError/Kind/notConnected`` on every family (Go's error_test:
    /// one kind per failure; outside reader).
    private func notConnectedIfUnconnected(_ error: SocketError) -> SocketError {
        guard error.errno == EINVAL else { return error }
        var peer = SocketAddress()
        let status = peer.withMutableSockaddr { getpeername(fd, $0, $1) }
        guard status != 0, errno == ENOTCONN else { return error }
        return SocketError(errno: ENOTCONN, operation: error.operation)
    }

    @usableFromInline
    func writeImpl(_ buffer: UnsafeRawBufferPointer) throws(SocketError) -> IOResult {
        // Nothing to send needs no system call, on an open socket: a closed one says so, as a write of
        // bytes does (CPython's send(b"") and Go's Write(nil) after Close fail too).
        if buffer.isEmpty {
            if fd < 0 { throw SocketError(errno: EBADF, operation: "send") }
            return .transferred(0)
        }
        return try NetSys.result(NetSys.send(fd, buffer), operation: "send", isRead: false)
    }

    /// A connected pair of Unix stream sockets (socketpair(2); mio's and tokio's `UnixStream::pair`),
    /// each non-blocking and close-on-exec, owned by the socket made of it.
    public static func pair() throws(SocketError) -> (StreamSocket, StreamSocket) {
        var ends: (CInt, CInt) = (-1, -1)
        let status = withUnsafeMutablePointer(to: &ends) {
            $0.withMemoryRebound(to: CInt.self, capacity: 2) { rd_net_stream_pair($0) }
        }
        guard status == 0 else { throw SocketError(errno: errno, operation: "socketpair") }
        return (StreamSocket(owning: ends.0), StreamSocket(owning: ends.1))
    }

    /// Shuts down one direction or both; the descriptor stays open.
    public func shutdown(_ direction: ShutdownDirection) throws(SocketError) {
        try NetSys.shutdown(fd, direction)
    }

    // MARK: Addresses and options

    /// The local address (getsockname), nil once closed, and for a nameless Unix-domain socket.
    public var localAddress: SocketAddress? { (try? SocketAddress.local(of: fd)).flatMap { $0.isNamelessUnix ? nil : $0 } }
    /// The peer's address (getpeername), nil once closed or not connected, and for a nameless
    /// Unix-domain peer (a client that did not bind, a socketpair's other end).
    public var peerAddress: SocketAddress? { (try? SocketAddress.peer(of: fd)).flatMap { $0.isNamelessUnix ? nil : $0 } }

    /// The pending error (SO_ERROR), read and cleared; nil when there is none.
    public func takePendingError() -> SocketError? {
        NetSys.takePendingError(fd)
    }

    /// TCP_NODELAY: send small writes at once instead of coalescing them (Nagle). TCP only: on a
    /// Unix-domain socket ``SocketError/Kind/invalidArgument``, as every TCP option there.
    public func setNoDelay(_ enabled: Bool) throws(SocketError) {
        try refuseOnUnix("TCP_NODELAY")
        try set(level: rd_net_ipproto_tcp(), name: rd_net_tcp_nodelay(), enabled ? 1 : 0, "TCP_NODELAY")
    }

    /// Whether TCP_NODELAY is set (off unless set: ``Connector`` and the async layer's connect and
    /// accept leave it as the kernel made it). On a Unix-domain socket ``SocketError/Kind/invalidArgument``.
    public func noDelay() throws(SocketError) -> Bool {
        try refuseOnUnix("TCP_NODELAY")
        return try NetSys.option(fd, level: rd_net_ipproto_tcp(), name: rd_net_tcp_nodelay()).get() != 0
    }

    /// SO_KEEPALIVE and its timings (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT); nil turns it off. TCP
    /// only: on a Unix-domain socket ``SocketError/Kind/invalidArgument``.
    public func setKeepAlive(_ keepAlive: KeepAlive?) throws(SocketError) {
        try refuseOnUnix("SO_KEEPALIVE")
        guard let keepAlive else {
            try set(level: SOL_SOCKET, name: SO_KEEPALIVE, 0, "SO_KEEPALIVE")
            return
        }
        // The timings first: a socket that refuses them (not TCP) is left as it was, keep-alive not
        // turned on with the kernel's default timings.
        try set(level: rd_net_ipproto_tcp(), name: rd_net_tcp_keepidle(), KeepAlive.seconds(keepAlive.idle), "TCP_KEEPIDLE")
        try set(level: rd_net_ipproto_tcp(), name: rd_net_tcp_keepintvl(), KeepAlive.seconds(keepAlive.interval), "TCP_KEEPINTVL")
        try set(level: rd_net_ipproto_tcp(), name: rd_net_tcp_keepcnt(), KeepAlive.probeCount(keepAlive.probes), "TCP_KEEPCNT")
        try set(level: SOL_SOCKET, name: SO_KEEPALIVE, 1, "SO_KEEPALIVE")
    }

    /// The keep-alive in effect: nil when SO_KEEPALIVE is off, else its timings as the kernel holds
    /// them (whole seconds). On a Unix-domain socket ``SocketError/Kind/invalidArgument``.
    public func keepAlive() throws(SocketError) -> KeepAlive? {
        try refuseOnUnix("SO_KEEPALIVE")
        guard try NetSys.option(fd, level: SOL_SOCKET, name: SO_KEEPALIVE).get() != 0 else { return nil }
        let tcp = rd_net_ipproto_tcp()
        let idle = try NetSys.option(fd, level: tcp, name: rd_net_tcp_keepidle()).get()
        let interval = try NetSys.option(fd, level: tcp, name: rd_net_tcp_keepintvl()).get()
        let probes = try NetSys.option(fd, level: tcp, name: rd_net_tcp_keepcnt()).get()
        return KeepAlive(idle: .seconds(idle), interval: .seconds(interval), probes: Int(probes))
    }

    /// SO_RCVBUF (the kernel doubles the value it is given, and clamps it to net.core.rmem_max).
    public func setReceiveBufferSize(_ bytes: Int) throws(SocketError) {
        try set(level: SOL_SOCKET, name: SO_RCVBUF, NetSys.bufferSize(bytes), "SO_RCVBUF")
    }

    /// SO_SNDBUF (doubled and clamped like ``setReceiveBufferSize(_:)``).
    public func setSendBufferSize(_ bytes: Int) throws(SocketError) {
        try set(level: SOL_SOCKET, name: SO_SNDBUF, NetSys.bufferSize(bytes), "SO_SNDBUF")
    }

    /// The receive buffer size the kernel uses.
    public func receiveBufferSize() throws(SocketError) -> Int {
        try Int(NetSys.option(fd, level: SOL_SOCKET, name: SO_RCVBUF).get())
    }

    /// The send buffer size the kernel uses.
    public func sendBufferSize() throws(SocketError) -> Int {
        try Int(NetSys.option(fd, level: SOL_SOCKET, name: SO_SNDBUF).get())
    }

    /// The TTL (IP_TTL) or hop limit (IPV6_UNICAST_HOPS) of what it sends: 1 to 255, -1 on IPv6 for
    /// the route's default; outside that range, or on a Unix-domain socket,
    /// ``SocketError/Kind/invalidArgument``.
    public func setHopLimit(_ hops: Int) throws(SocketError) {
        try IPOptions.setHops(fd, IPOptions.family(of: fd), hops, multicast: false)
    }

    /// The TTL or hop limit in effect (64 unless set).
    public func hopLimit() throws(SocketError) -> Int {
        try IPOptions.hops(fd, IPOptions.family(of: fd), multicast: false)
    }

    /// How many bytes are queued to read now (FIONREAD), 0 when the kernel will not say. Reading no
    /// more than that never meets the socket's pending error, which recv(2) reports once and clears.
    package var bytesQueued: Int { Swift.max(0, Int(rd_net_bytes_queued(fd))) }

    /// SO_LINGER. A TCP option: on a Unix-domain socket, where the kernel takes it and ignores it (no
    /// reset, no wait), `.resetOnClose` and `.wait` are refused with ``SocketError/Kind/invalidArgument``.
    public func setLinger(_ linger: Linger) throws(SocketError) {
        if linger != .off { try refuseOnUnix("SO_LINGER (it would neither reset nor wait there)") }
        let status: CInt = switch linger {
        case .off: rd_net_set_linger(fd, 0, 0)
        case .resetOnClose: rd_net_set_linger(fd, 1, 0)
        case .wait(let duration): rd_net_set_linger(fd, 1, CInt(clamping: Swift.max(1, duration.clampedSeconds)))
        }
        if status != 0 { throw SocketError(errno: errno, operation: "SO_LINGER") }
    }

    /// SO_LINGER as the kernel holds it (a `.wait` in whole seconds).
    public func linger() throws(SocketError) -> Linger {
        var enabled: CInt = 0
        var seconds: CInt = 0
        if rd_net_get_linger(fd, &enabled, &seconds) != 0 { throw SocketError(errno: errno, operation: "getsockopt(SO_LINGER)") }
        if enabled == 0 { return .off }
        return seconds == 0 ? .resetOnClose : .wait(.seconds(seconds))
    }

    /// Whether a write would fail now for a reason other than want of room, asked without moving a
    /// byte: a send of nothing (one system call) fails on a Unix stream socket shut down for sending,
    /// by its peer's `shutdown(SHUT_RD)` or by its own `shutdown(SHUT_WR)` through any descriptor,
    /// which the kernel's poll never reports to a writer (EPIPE), and on a socket not connected.
    package var sendFailsNow: Bool {
        if fd < 0 { return true }
        guard NetSys.send(fd, UnsafeRawBufferPointer(start: nil, count: 0)) < 0 else { return false }
        return errno != EAGAIN && errno != EWOULDBLOCK
    }

    /// Whether it is a Unix-domain socket (SO_DOMAIN; one system call).
    package var isUnixDomain: Bool {
        if case .success(AF_UNIX) = NetSys.option(fd, level: SOL_SOCKET, name: SO_DOMAIN) { return true }
        return false
    }

    /// A TCP option on a Unix-domain socket is the caller's mistake, refused the same way whatever
    /// the kernel would say (EOPNOTSUPP for some, silently taken and ignored for others).
    private func refuseOnUnix(_ option: String) throws(SocketError) {
        if isUnixDomain { throw SocketError(.invalidArgument, operation: "\(option) on a Unix-domain socket") }
    }

    private func set(level: CInt, name: CInt, _ value: CInt, _ operation: String) throws(SocketError) {
        let code = NetSys.setOption(fd, level: level, name: name, value: value)
        if code != 0 { throw SocketError(errno: code, operation: "setsockopt(\(operation))") }
    }
}

/// TCP keep-alive timings.
public struct KeepAlive: Hashable, Sendable {
    /// Idle time before the first probe.
    public var idle: Duration
    /// Time between probes.
    public var interval: Duration
    /// Unanswered probes before the connection is dropped (reads then fail with ``SocketError/Kind/aborted``).
    public var probes: Int

    /// Keep-alive timings (the kernel counts whole seconds, 1 to 32,767, and 1 to 127 probes; values
    /// outside saturate to those limits).
    public init(idle: Duration = .seconds(60), interval: Duration = .seconds(10), probes: Int = 6) {
        self.idle = idle
        self.interval = interval
        self.probes = probes
    }

    /// The most seconds Linux takes for TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE,
    /// MAX_TCP_KEEPINTVL); more is EINVAL.
    static let maximumSeconds = 32_767
    /// The most probes Linux takes for TCP_KEEPCNT (MAX_TCP_KEEPCNT); more, or fewer than 1, is EINVAL.
    static let maximumProbes = 127

    /// Whole seconds, 1 (the kernel's unit and minimum) to ``maximumSeconds``, saturating.
    static func seconds(_ duration: Duration) -> CInt {
        CInt(Swift.min(Int64(maximumSeconds), Swift.max(1, duration.clampedSeconds)))
    }

    /// A probe count, 1 to ``maximumProbes``, saturating.
    static func probeCount(_ probes: Int) -> CInt {
        CInt(Swift.min(maximumProbes, Swift.max(1, probes)))
    }
}

/// What `close` does with unsent data (SO_LINGER).
public enum Linger: Hashable, Sendable {
    /// The default: close returns at once, the kernel sends what is left in the background.
    case off
    /// Close discards unsent data and sends a reset (RST) to the peer (TCP only).
    case resetOnClose
    /// Close blocks up to this long (whole seconds) to send what is left. Avoid on a loop thread.
    case wait(Duration)
}
