#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

/// A connected stream socket owned by an ``EventLoop``: a Sendable handle (the loop and a number).
///
/// - Reads (peeks, `readable()` waits) take turns, as do writes: one runs at a time per direction, and
///   a task that asks while another's runs waits for its turn, in the order the calls reach the loop (Go serialises
///   a connection's reads and writes the same way), its deadline and cancellation counting from its
///   call. A write's bytes are never cut by another write's. ``tryWrite(_:)``, which never waits, is
///   ``LoopError/busy`` while another write runs.
/// - ``close()`` closes it exactly once; a task suspended on it resumes with ``LoopError/closed``
///   (on io_uring's completion driver a write whose every byte the kernel had sent by then returns
///   normally), and every later operation fails with ``LoopError/closed``. ``EventLoop/shutdown()`` closes it too.
/// - A deadline (`timeout`) bounds the whole operation; cancelling the task ends a wait with
///   ``LoopError/cancelled`` (the socket stays open: it is not the operation's).
///
/// Every operation runs on the loop thread: a task that prefers the loop
/// (`Task(executorPreference: loop)`) does not hop at all.
public struct AsyncSocket: Sendable {
    /// The loop that owns it.
    public let loop: EventLoop
    let id: UInt64
    /// The peer's address, compact (``PeerAddress``).
    private let peerAddress: PeerAddress

    /// The peer's address as it was when this handle was made: a connect's or an accept's peer; for an
    /// adopted socket, what getpeername said at the adoption (nil for one whose connect was still in
    /// progress then: ``peerAddress()`` asks the kernel now).
    public var peer: SocketAddress? { peerAddress.address }

    /// The peer's address now (getpeername; tokio's `peer_addr`): also for a socket adopted while its
    /// connect was in progress, once connected. Nil once closed, while not connected, or for a Unix
    /// peer without a name.
    nonisolated(nonsending) public func peerAddress() async -> SocketAddress? {
        let id = self.id
        // Not through `withStreamSocket`, whose body may change the socket (its waiters are looked at
        // again after it): a query changes nothing.
        return (try? await loop.onLoop { (state) async throws(LoopError) -> SocketAddress? in try state.stream(id).1.peerAddress }) ?? nil
    }

    init(loop: EventLoop, id: UInt64, peer: SocketAddress?) {
        self.loop = loop
        self.id = id
        peerAddress = PeerAddress(peer)
    }

    /// Reads up to `buffer.count` bytes (at least 1) as soon as some are there; 0 means the peer shut
    /// down its sending side. An empty buffer is refused with ``LoopError/invalidArgument(_:)`` (a read
    /// of nothing would return 0, which means the end of the stream).
    ///
    /// **For library authors** who manage memory themselves: `buffer` must stay allocated, and must not
    /// be touched, until the call returns (the loop writes into it after a suspension, and after a
    /// cancellation the call returns only once it no longer does). Applications read into ``/ReadinessNet/Bytes``
    /// (``read(into:maximum:timeout:)``) or use ``readAvailable(maximum:timeout:)``.
    nonisolated(nonsending) public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(LoopError) -> Int {
        if buffer.isEmpty { throw .invalidArgument("read into an empty buffer") }
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Int in
            try await state.read(id, into: buffer, deadline: deadline)
        }
    }

    /// Reads up to `maximum` bytes (at least 1) into a new array of exactly the bytes read, empty at end
    /// of stream. One read takes at most ``maximumReadChunk`` bytes, however large `maximum` is;
    /// `maximum` below 1 is refused with ``LoopError/invalidArgument(_:)``. Like
    /// ``readAvailable(maximum:timeout:)`` it reads into the loop's own buffer and copies out only the
    /// bytes read, so a read that waits holds no memory (a convenience: ``read(into:maximum:timeout:)``
    /// copies nothing).
    nonisolated(nonsending) public func read(upTo maximum: Int, timeout: Duration? = nil) async throws(LoopError) -> [UInt8] {
        guard maximum > 0 else { throw .invalidArgument("read(upTo: \(maximum))") }
        return try await readCopying(maximum: maximum, timeout: timeout) { (read, _) throws(SocketError) -> [UInt8] in
            Self.array(copying: read)
        }
    }

    /// A new array of `bytes`, copied with one memcpy (`Array(bytes)` copies element by element:
    /// seconds per 4 MiB in a debug build).
    static func array(copying bytes: UnsafeRawBufferPointer) -> [UInt8] {
        let count = bytes.count
        // Not through the empty case: the standard library would write the count into its shared
        // empty-array storage, a race ThreadSanitizer reports.
        if count == 0 { return [] }
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let source = bytes.baseAddress, let target = buffer.baseAddress {
                target.initialize(from: source.assumingMemoryBound(to: UInt8.self), count: count)
            }
            initialized = count
        }
    }

    /// Copies up to `buffer.count` bytes into the start of `buffer` as soon as some are queued,
    /// **without taking them** (tokio's `TcpStream::peek`): the next read returns them again. Returns
    /// how many (0: the peer shut down its sending side and nothing is queued). An empty buffer is
    /// refused with ``LoopError/invalidArgument(_:)``. It waits as a read does (reads and peeks take turns), with
    /// the same deadline and cancellation; a reset is reported as a read would report it.
    nonisolated(nonsending) public func peek(into buffer: inout [UInt8], timeout: Duration? = nil) async throws(LoopError) -> Int {
        if buffer.isEmpty { throw .invalidArgument("peek into an empty buffer") }
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let result = try await loop.onLoop { (state) async throws(LoopError) -> IOResult in
            try await state.perform(id, .read, deadline: deadline, waitFirst: false, start: nil) { (socket) throws(SocketError) -> IOResult in
                // Reported as a read reports it (the name too): a reset the completion driver's send
                // took and hands to the waiting reader is named "read" as well.
                do throws(SocketError) { return try socket.peek(into: &buffer) } catch {
                    var failure = error
                    failure.operation = "read"
                    throw failure
                }
            }
        }
        if case .transferred(let n) = result { return n }
        return 0
    }

    /// The most bytes one ``read(upTo:timeout:)`` takes (1 MiB): a larger `maximum` is not allocated
    /// (the same figure as ``/ReadinessNet/StreamSocket/maximumReadReservation``).
    public static let maximumReadChunk = 1 << 20

    /// Writes every byte of `buffer`, waiting for room as often as needed.
    ///
    /// **For library authors** who manage memory themselves: `buffer` must stay allocated and unchanged
    /// until the call returns. Applications write ``/ReadinessNet/Bytes`` or `[UInt8]` (the `write(_:timeout:)` forms that take them).
    nonisolated(nonsending) public func write(_ buffer: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let start = LoopState.WriteStart(timeout: timeout)
        let id = self.id
        try await loop.onLoop { (state) async throws(LoopError) in
            try await state.write(id, buffer, deadline: deadline, start: start)
        }
    }

    /// Writes every byte of `bytes`, waiting for room as often as needed (no copy, no allocation: the
    /// operation holds the array's storage until it ends).
    nonisolated(nonsending) public func write(_ bytes: [UInt8], timeout: Duration? = nil) async throws(LoopError) {
        try await writeAll(count: bytes.count, timeout: timeout) { (socket, offset) throws(SocketError) -> IOResult in
            try socket.write(bytes, from: offset, to: Swift.min(bytes.count, offset &+ LoopState.sendLimit))
        }
    }

    /// Writes every byte of every buffer, in order, with vectored writes (sendmsg).
    ///
    /// **For library authors**: every buffer must stay allocated and unchanged until the call returns.
    nonisolated(nonsending) public func write(vectored buffers: [UnsafeRawBufferPointer], timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let start = LoopState.WriteStart(timeout: timeout)
        let id = self.id
        try await loop.onLoop { (state) async throws(LoopError) in
            try await state.write(id, vectored: buffers, deadline: deadline, start: start)
        }
    }

    /// Shuts down one direction or both (the socket stays open). A connection the peer reset, or one
    /// shut down both ways already, has nothing left to shut down: the kernel's ENOTCONN is success
    /// here, as in tokio (`shutdown` after a reset); a closed socket is `.closed`. The kernel answers
    /// an adopted socket that was never connected the same way, so that too succeeds, doing nothing.
    nonisolated(nonsending) public func shutdown(_ direction: ShutdownDirection) async throws(LoopError) {
        let id = self.id
        try await loop.onLoop { (state) async throws(LoopError) in
            try state.withStream(id) { (socket) throws(SocketError) in
                do throws(SocketError) { try socket.shutdown(direction) } catch {
                    if error.errno != ENOTCONN { throw error }
                }
            }
            // A write waiting for room ends now (EPIPE), whichever driver holds it.
            if direction != .read { state.endWritesAfterShutdown(id) }
        }
    }

    /// One attempt to write, never waiting (libuv's `uv_try_write`, tokio's `try_write`): how many
    /// bytes the kernel took now, from the start of `bytes` (0: no room). ``LoopError/busy`` while
    /// another task's write is in progress, so that these bytes never land in the middle of that
    /// write's (a write through ``withStreamSocket(_:)`` would: it claims nothing).
    nonisolated(nonsending) public func tryWrite(_ bytes: [UInt8]) async throws(LoopError) -> Int {
        if bytes.isEmpty {
            try await tryWriting { (_) throws(SocketError) -> IOResult in .transferred(0) }
            return 0
        }
        return try await tryWriting { (socket) throws(SocketError) -> IOResult in
            // At most `LoopState.sendLimit` bytes (the caller goes on from what went, as after any
            // short write).
            try socket.write(bytes, from: 0, to: Swift.min(bytes.count, LoopState.sendLimit))
        }
    }

    /// ``tryWrite(_:)`` of several buffers, in order, with one sendmsg (tokio's `try_write_vectored`):
    /// how many bytes the kernel took now, counted across the buffers from the first (0: no room). At
    /// most ``/ReadinessNet/StreamSocket/maximumVectoredBuffers`` buffers and `LoopState.sendLimit`
    /// (1 MiB) bytes go in one call.
    ///
    /// **For library authors**: every buffer is read before the call returns, and not after.
    nonisolated(nonsending) public func tryWrite(vectored buffers: [UnsafeRawBufferPointer]) async throws(LoopError) -> Int {
        var limited: [UnsafeRawBufferPointer] = []
        var total = 0
        for buffer in buffers where !buffer.isEmpty {
            if total == LoopState.sendLimit || limited.count == StreamSocket.maximumVectoredBuffers { break }
            let take = Swift.min(buffer.count, LoopState.sendLimit - total)
            limited.append(UnsafeRawBufferPointer(rebasing: buffer[..<take]))
            total += take
        }
        if limited.isEmpty {
            try await tryWriting { (_) throws(SocketError) -> IOResult in .transferred(0) }
            return 0
        }
        return try await tryWriting { (socket) throws(SocketError) -> IOResult in try socket.write(vectored: limited) }
    }

    /// One write attempt with the write side free (`.busy` otherwise), charged as a write's send is,
    /// keeping the direction's readiness a try established (``writable(timeout:)``).
    nonisolated(nonsending) private func tryWriting(_ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> Int {
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Int in
            let (stream, socket) = try state.stream(id)
            if stream.record.write.inUse || stream.record.write.isWaiting { throw .busy }
            let result: IOResult
            do throws(SocketError) { result = try attempt(socket) } catch { throw .socket(error) }
            switch result {
            case .transferred(let n):
                if n == 0 { return 0 }   // nothing was asked for: readiness unknown
                _ = state.chargeSend(n, more: false)
                stream.record.write.knownReady = true
                stream.record.write.knownBlocked = false
                return n
            default:
                stream.record.write.knownReady = false
                stream.record.write.knownBlocked = true
                return 0
            }
        }
    }

    /// One attempt to read, never waiting (tokio's `try_read`): up to `buffer.count` bytes (at least 1)
    /// of what is queued now; nil when nothing is, 0 at the end of the stream. With ``readable(timeout:)``
    /// it is a read that a cancellation or a deadline never ends after taking bytes.
    /// ``LoopError/busy`` while another task's read is in progress (it would take bytes that read is
    /// owed); an empty buffer is ``LoopError/invalidArgument(_:)``, as for ``read(into:timeout:)``.
    ///
    /// **For library authors**: `buffer` is written before the call returns, and not after.
    nonisolated(nonsending) public func tryRead(into buffer: UnsafeMutableRawBufferPointer) async throws(LoopError) -> Int? {
        if buffer.isEmpty { throw .invalidArgument("tryRead into an empty buffer") }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Int? in
            try state.tryRead(id) { (socket) throws(SocketError) -> IOResult in try socket.read(into: buffer) }
        }
    }

    /// ``tryRead(into:)`` into several buffers with one readv (tokio's `try_read_vectored`), each filled
    /// before the next: how many bytes across them, nil when nothing is queued, 0 at the end of the
    /// stream. A list with no room at all is ``LoopError/invalidArgument(_:)``; at most
    /// ``/ReadinessNet/StreamSocket/maximumVectoredBuffers`` non-empty buffers are filled.
    ///
    /// **For library authors**: the buffers are written before the call returns, and not after.
    nonisolated(nonsending) public func tryRead(vectored buffers: [UnsafeMutableRawBufferPointer]) async throws(LoopError) -> Int? {
        guard buffers.contains(where: { !$0.isEmpty }) else { throw .invalidArgument("tryRead into empty buffers") }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Int? in
            try state.tryRead(id) { (socket) throws(SocketError) -> IOResult in try socket.read(vectored: buffers) }
        }
    }

    /// ``tryRead(into:)`` into a new array of exactly the bytes read (at most `maximum`, at least 1,
    /// at most ``maximumReadChunk``): nil when nothing is queued, empty at the end of the stream. It
    /// reads into the loop's own buffer and copies out only the bytes read.
    nonisolated(nonsending) public func tryRead(upTo maximum: Int) async throws(LoopError) -> [UInt8]? {
        guard maximum > 0 else { throw .invalidArgument("tryRead(upTo: \(maximum))") }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> [UInt8]? in
            let scratch: UnsafeMutableRawBufferPointer
            do throws(SocketError) { scratch = try state.readScratch(for: Swift.min(maximum, Self.maximumReadChunk)) } catch { throw .socket(error) }
            let room = UnsafeMutableRawBufferPointer(rebasing: scratch[..<Swift.min(maximum, Self.maximumReadChunk, scratch.count)])
            guard let count = try state.tryRead(id, { (socket) throws(SocketError) -> IOResult in try socket.read(into: room) }) else {
                return nil
            }
            return Self.array(copying: UnsafeRawBufferPointer(rebasing: room[..<count]))
        }
    }

    /// Waits until a write would not block (room in the send buffer, or a failure a write would
    /// report: a reset, a shut-down side) and writes nothing: tokio's `writable`. With ``tryWrite(_:)``
    /// it is a write that a cancellation or a deadline never ends in the middle of its bytes: the caller
    /// always knows how many went. Waits for its turn while another task writes; `.timedOut`,
    /// `.cancelled` as for a write.
    nonisolated(nonsending) public func writable(timeout: Duration? = nil) async throws(LoopError) {
        try await waitReady(.write, timeout: timeout)
    }

    /// Waits until a read would not block (bytes, the end of the stream, or a failure a read would
    /// report) and reads nothing: tokio's `readable`. Waits for its turn while another task reads.
    nonisolated(nonsending) public func readable(timeout: Duration? = nil) async throws(LoopError) {
        try await waitReady(.read, timeout: timeout)
    }

    /// `readable`/`writable`: the direction's slot claimed, each attempt a zero-timeout `poll` (what
    /// a read or write would meet, asked without one).
    nonisolated(nonsending) private func waitReady(_ direction: Direction, timeout: Duration?) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let events = Int16(direction == .read ? POLLIN : POLLOUT)
        _ = try await loop.onLoop { (state) async throws(LoopError) -> IOResult in
            // A try moved bytes since the last that would block: ready as far as the caller can tell.
            if state.isKnownReady(id, direction) { return .transferred(0) }
            // A failure a send hands to the read side while this waits stays for the read that meets
            // the end of the stream (io_uring; `LoopState.readFailures`).
            _ = try await state.perform(id, direction, deadline: deadline, waitFirst: false, start: nil) { (socket) throws(SocketError) -> IOResult in
                var entry = pollfd(fd: socket.fd, events: events, revents: 0)
                while true {
                    let n = poll(&entry, 1, 0)
                    if n > 0 { return .transferred(0) }   // ready, or an error or hang-up to report
                    if n == 0 { break }
                    if errno != EINTR { return .transferred(0) }   // the operation that follows reports it
                }
                // A Unix stream whose sending side is shut down (its own, or the peer's reading side)
                // reports no POLLOUT while its send buffer is full (the kernel's unix_writable looks
                // only at the buffer), yet a write fails at once (EPIPE): an empty send asks, moving
                // nothing (review: writable waited for ever there). The write path's re-checks bring
                // this attempt back while it waits.
                // Unix streams only: on TCP, POLLOUT comes once the side is shut down, and an empty send
                // could take a pending error (SO_ERROR) from the call that follows (review).
                if direction == .write, socket.isUnixDomain, send(socket.fd, nil, 0, CInt(MSG_NOSIGNAL) | CInt(MSG_DONTWAIT)) < 0,
                   errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
                    return .transferred(0)
                }
                return .wouldBlock
            }
            // Data is there: the next read tries at once (not the short-read hint's wait first).
            if direction == .read, let (stream, _) = try? state.stream(id) { stream.record.readDrained = false }
            return .transferred(0)
        }
    }

    /// The socket's own address (getsockname; tokio's `local_addr`): the port the kernel chose for a
    /// connect. Nil once closed, or for a Unix socket without a name.
    nonisolated(nonsending) public func localAddress() async -> SocketAddress? {
        let id = self.id
        return (try? await loop.onLoop { (state) async throws(LoopError) -> SocketAddress? in try state.stream(id).1.localAddress }) ?? nil
    }

    /// Runs `body` on the loop thread with the underlying socket (for options: `setNoDelay`, ...).
    nonisolated(nonsending) public func withStreamSocket<T: Sendable>(_ body: (StreamSocket) throws(SocketError) -> T) async throws(LoopError) -> T {
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> T in
            try state.withStream(id, body)
        }
    }

    /// Closes the socket once (deregistered first); a task waiting on it resumes with
    /// ``LoopError/closed``. Later calls do nothing.
    nonisolated(nonsending) public func close() async {
        let id = self.id
        try? await loop.onLoop { (state) async throws(LoopError) in state.close(id) }
    }
}

/// A listening socket owned by an ``EventLoop``.
///
/// ``accept(timeout:)`` keeps the listener's out-of-descriptors strategy (Docs/Sockets.md): on EMFILE,
/// ENFILE, ENOBUFS or ENOMEM it stops watching the listener and tries again after the back-off delay,
/// or as soon as a socket of this loop is closed; the waiting task just waits longer.
public struct AsyncListener: Sendable {
    /// The loop that owns it.
    public let loop: EventLoop
    let id: UInt64
    /// The bound address (with the port the kernel chose for port 0).
    public let address: SocketAddress

    /// Waits for a connection. Tasks accepting at once take turns (tokio's and Go's many accepters):
    /// each waits, in the order the calls reach the loop, and each connection goes to one of them.
    nonisolated(nonsending) public func accept(timeout: Duration? = nil) async throws(LoopError) -> AsyncSocket {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let loop = self.loop
        let (socket, peer) = try await loop.onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress) in
            try await state.accept(id, deadline: deadline)
        }
        return AsyncSocket(loop: loop, id: socket, peer: peer)
    }

    /// Closes the listener once; a task waiting in ``accept(timeout:)`` resumes with ``LoopError/closed``.
    nonisolated(nonsending) public func close() async {
        let id = self.id
        try? await loop.onLoop { (state) async throws(LoopError) in state.close(id) }
    }
}

extension EventLoop {
    /// Connects to one address, confirmed by SO_ERROR and getpeername (the connect state machine).
    /// `local`: the address to connect from (bound before the connect, as `Connector.connect(to:localAddress:)`
    /// binds it: an IP address with port 0 for an ephemeral port, or a Unix path, unlinked again if the
    /// connect fails); one of another family fails with ``/ReadinessNet/ConnectError/Cause/invalidAddress``
    /// before any socket, one this host does not have or a port in use with the bind's cause
    /// (`addressUnavailable`, `addressInUse`). Go's `Dialer.LocalAddr`, tokio's `TcpSocket::bind`.
    nonisolated(nonsending) public func connect(to address: SocketAddress, from local: SocketAddress,
                                                timeout: Duration? = nil) async throws(LoopError) -> AsyncSocket {
        try await connect(to: address, local: local, timeout: timeout)
    }

    /// Connects to one address, confirmed by SO_ERROR and getpeername (the connect state machine),
    /// from an address the kernel picks.
    nonisolated(nonsending) public func connect(to address: SocketAddress, timeout: Duration? = nil) async throws(LoopError) -> AsyncSocket {
        try await connect(to: address, local: nil, timeout: timeout)
    }

    nonisolated(nonsending) private func connect(to address: SocketAddress, local: SocketAddress?,
                                                 timeout: Duration?) async throws(LoopError) -> AsyncSocket {
        // The ConnectAttempt driver alone (no address list, no Happy Eyeballs options).
        let deadline = timeout.map { Deadline.after($0) }
        let (id, peer) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress?) in
            try await state.connect(to: address, from: local, deadline: deadline)
        }
        return AsyncSocket(loop: self, id: id, peer: peer)
    }

    /// Connects to the first of several addresses that answers, by RFC 8305 steps (Happy Eyeballs).
    nonisolated(nonsending) public func connect(to addresses: [SocketAddress], timeout: Duration? = nil,
                        options: HappyEyeballs.Options = HappyEyeballs.Options()) async throws(LoopError) -> AsyncSocket {
        try await connect(addresses: addresses, resolution: nil, options: options, timeout: timeout)
    }

    /// Resolves `host` off the loop (AAAA and A apart) and connects by Happy Eyeballs steps.
    nonisolated(nonsending) public func connect(host: String, port: UInt16, timeout: Duration? = nil,
                        options: HappyEyeballs.Options = HappyEyeballs.Options(),
                        resolver: any HostResolver = SystemResolver()) async throws(LoopError) -> AsyncSocket {
        try await connect(addresses: [], resolution: (host, port, resolver), options: options, timeout: timeout)
    }

    nonisolated(nonsending) private func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                         options: HappyEyeballs.Options, timeout: Duration?) async throws(LoopError) -> AsyncSocket {
        let deadline = timeout.map { Deadline.after($0) }
        let (id, socket) = try await onLoop { (state) async throws(LoopError) -> (UInt64, ConnectedSocket) in
            try await state.connect(addresses: addresses, resolution: resolution, options: options, deadline: deadline)
        }
        return AsyncSocket(loop: self, id: id, peer: socket.peer)
    }

    /// Binds and listens (``/ReadinessNet/Listener/Options``: `reusePort` for one listener per loop on one port).
    nonisolated(nonsending) public func listen(on address: SocketAddress, options: Listener.Options = Listener.Options()) async throws(LoopError) -> AsyncListener {
        let (id, bound) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress) in
            try state.listen(address, options: options)
        }
        return AsyncListener(loop: self, id: id, address: bound)
    }

    /// Takes ownership of a listening socket descriptor made elsewhere (systemd's socket activation, a
    /// listener inherited across a restart): ``/ReadinessNet/Listener/init(adopting:backoff:)``'s checks,
    /// then an ``AsyncListener`` of this loop, as ``listen(on:options:)`` makes, for `accept` and `serve`.
    ///
    /// Fails with ``LoopError/socket(_:)`` (``/ReadinessNet/SocketError/Kind/invalidArgument``: negative,
    /// not a listening stream socket; ``/ReadinessNet/SocketError/Kind/closed``: not open),
    /// ``LoopError/invalidArgument(_:)`` for a descriptor this loop already owns or waits on,
    /// ``LoopError/resourceExhausted`` or ``LoopError/shutdown`` (also during a graceful shutdown, as
    /// `listen` is). **A descriptor whose adoption failed stays the caller's, open**; a Unix path it is
    /// bound to is never unlinked by the loop.
    nonisolated(nonsending) public func adoptListener(descriptor fd: CInt, backoff: AcceptBackoff = AcceptBackoff()) async throws(LoopError) -> AsyncListener {
        let (id, bound) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress) in
            try state.adoptListener(fd, backoff: backoff)
        }
        return AsyncListener(loop: self, id: id, address: bound)
    }

    /// Takes ownership of a connected stream socket descriptor (made non-blocking and close-on-exec here).
    ///
    /// Fails with ``LoopError/socket(_:)`` (``/ReadinessNet/SocketError/Kind/invalidArgument`` for a negative
    /// descriptor or one that is not a stream socket, ``/ReadinessNet/SocketError/Kind/closed`` for one that is not
    /// open), ``LoopError/invalidArgument(_:)`` for a descriptor this loop already owns, holds (a
    /// connect in progress, a connection accepted ahead) or waits on, ``LoopError/resourceExhausted``
    /// or ``LoopError/shutdown``. **Ownership passes only on success: a descriptor whose adoption
    /// failed stays the caller's, open**, the same rule as ``/ReadinessNet/StreamSocket/init(adopting:)``.
    nonisolated(nonsending) public func adopt(descriptor fd: CInt) async throws(LoopError) -> AsyncSocket {
        let (id, peer) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress?) in
            if state.isShutDown { throw state.shutdownReason }
            try state.checkForeign(fd, "adopt", adopting: true)
            if state.liveForeign(fd) != nil { throw .invalidArgument("adopt: descriptor \(fd) is being waited on (readable/writable)") }
            try state.checkRoom()
            let socket: StreamSocket
            do throws(SocketError) { socket = try StreamSocket(adopting: fd) } catch { throw .socket(error) }
            do throws(LoopError) {
                return (try state.adopt(socket), socket.peerAddress)
            } catch {
                _ = socket.release()   // not adopted: the descriptor stays the caller's, open
                throw error
            }
        }
        return AsyncSocket(loop: self, id: id, peer: peer)
    }

    /// Suspends for `duration` on the loop's timers (cancellable: ``LoopError/cancelled``). Any
    /// `Duration` is taken: a negative one is zero (a pass of the loop; sleeps due at once wake in the
    /// order they were asked for, as Go's timers do), a huge one saturates. Fails also with
    /// ``LoopError/shutdown`` (``LoopError/poller(_:)`` when the loop ended because its poller failed)
    /// and ``LoopError/resourceExhausted`` (the loop holds as many resources as it can; a sleep takes a
    /// slot while it waits).
    nonisolated(nonsending) public func sleep(for duration: Duration) async throws(LoopError) {
        let deadline = Deadline.after(duration)
        try await onLoop { (state) async throws(LoopError) in try await state.sleep(until: deadline) }
    }

    /// Waits until a descriptor the caller owns is readable (it is watched only during the wait).
    /// Tasks waiting on one descriptor take turns: a second waits until the first's wait ends, then
    /// returns at once if the descriptor is still readable (tokio's `AsyncFd` wakes every waiter).
    nonisolated(nonsending) public func readable(_ fd: CInt, timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        try await onLoop { (state) async throws(LoopError) in try await state.waitForeign(fd, .read, deadline: deadline) }
    }

    /// `readable(fd)` for a descriptor only one task may wait on: a second waiter fails with
    /// ``LoopError/busy`` (the signal sequence's pipe: a second iteration ends).
    nonisolated(nonsending) func readableAlone(_ fd: CInt) async throws(LoopError) {
        try await onLoop { (state) async throws(LoopError) in try await state.waitForeign(fd, .read, deadline: nil, exclusive: true) }
    }

    /// Waits until a descriptor the caller owns is writable (it is watched only during the wait);
    /// waiters take turns, as for ``readable(_:timeout:)``.
    nonisolated(nonsending) public func writable(_ fd: CInt, timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        try await onLoop { (state) async throws(LoopError) in try await state.waitForeign(fd, .write, deadline: deadline) }
    }

    /// Jobs run and poller waits so far (for tests and monitoring).
    nonisolated(nonsending) public func statistics() async throws(LoopError) -> (jobs: Int, iterations: Int) {
        try await onLoop { (state) async throws(LoopError) -> (jobs: Int, iterations: Int) in (state.jobsRun, state.iterations) }
    }

    /// Which I/O driver the loop's async operations use, and its counters (for tests and monitoring):
    /// the completion driver on an io_uring loop unless `READINESS_IO_DRIVER=readiness` was set when the
    /// loop started, the readiness driver otherwise (Docs/Async.md, "I/O drivers").
    nonisolated(nonsending) public func ioDriver() async throws(LoopError) -> IODriverInfo {
        try await onLoop { (state) async throws(LoopError) -> IODriverInfo in
            guard let completions = state.completions else {
                return IODriverInfo(kind: .readiness, operationsInKernel: 0, readinessFallbacks: 0, completed: 0)
            }
            return IODriverInfo(kind: .completion, operationsInKernel: completions.inFlight,
                                readinessFallbacks: completions.fallbacks, completed: completions.completed)
        }
    }

    /// How many sockets, listeners and waits the loop holds (for tests and monitoring).
    nonisolated(nonsending) public func entryCount() async throws(LoopError) -> Int {
        try await onLoop { (state) async throws(LoopError) -> Int in state.resourceCount }
    }
}
