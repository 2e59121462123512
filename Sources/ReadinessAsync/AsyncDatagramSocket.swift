#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A UDP (IPv4, IPv6) or Unix datagram socket owned by an ``EventLoop``: a Sendable handle (the loop
/// and a number), made by ``EventLoop/bindDatagram(to:options:)``,
/// ``EventLoop/connectDatagram(to:from:options:)`` (tokio's `UdpSocket::bind` and `connect`) or
/// ``EventLoop/adoptDatagram(descriptor:)``.
///
/// - Each send and receive moves one whole datagram (``/ReadinessNet/DatagramSocket``): a receive tells the source
///   and whether the datagram was truncated (``/ReadinessNet/ReceivedDatagram``), never silently.
/// - Receives take turns, as do sends: one runs at a time per direction, and a task that asks while
///   another's runs waits for its turn, in the order the calls reach the loop, its deadline and cancellation
///   counting from its call.
/// - ``close()`` closes it exactly once; a task suspended on it resumes with ``LoopError/closed``, and
///   every later operation fails with ``LoopError/closed``. ``EventLoop/shutdown()`` closes it too
///   (``LoopError/shutdown``).
/// - A deadline (`timeout`) bounds the operation (``LoopError/timedOut``); cancelling the task ends a
///   wait with ``LoopError/cancelled`` (the socket stays open). A datagram ready is received, and a
///   send with room is made, without suspending.
/// - A connected UDP socket's refusal (an ICMP port-unreachable for an earlier datagram) fails the
///   next operation with ``LoopError/socket(_:)`` of kind ``/ReadinessNet/SocketError/Kind/refused``.
///   A Unix datagram socket's send to a peer socket that is gone fails itself with `refused`, and the
///   kernel disconnects a connected one then (``peer`` still names the old peer; the next send without
///   a destination is `notConnected`): connect again.
public struct AsyncDatagramSocket: Sendable {
    /// The loop that owns it.
    public let loop: EventLoop
    let id: UInt64
    /// The bound address (with the port the kernel chose for port 0); nil for a nameless Unix socket.
    /// Read when the socket was made: a later `connect` or `disconnect` inside
    /// ``withDatagramSocket(_:)`` does not change it (ask the socket there).
    public let localAddress: SocketAddress?
    /// The connected peer, if connected when the socket was made (as ``localAddress``, not updated).
    public let peer: SocketAddress?

    /// Sends the readable bytes of `bytes` as one datagram to `destination` (nil: the connected peer),
    /// waiting for room in the send buffer if needed. No copy: the operation holds the storage.
    nonisolated(nonsending) public func send(_ bytes: Bytes, to destination: SocketAddress? = nil,
                                             timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        try await loop.onLoop { (state) async throws(LoopError) in
            try await state.datagram(id, .write, deadline: deadline, waitFirst: false,
                                     sendsTo: destination.map(SendTarget.address) ?? .peer) { (socket) throws(SocketError) -> Void? in
                try socket.send(bytes, to: destination) == .wouldBlock ? nil : ()
            }
        }
    }

    /// Sends `bytes` as one datagram (no copy).
    nonisolated(nonsending) public func send(_ bytes: [UInt8], to destination: SocketAddress? = nil,
                                             timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        try await loop.onLoop { (state) async throws(LoopError) in
            try await state.datagram(id, .write, deadline: deadline, waitFirst: false,
                                     sendsTo: destination.map(SendTarget.address) ?? .peer) { (socket) throws(SocketError) -> Void? in
                try socket.send(bytes, destination: destination) == .wouldBlock ? nil : ()
            }
        }
    }

    /// Receives one datagram appended to `buffer`, up to `maximum` bytes of it (at least 1; the
    /// default takes any UDP datagram whole): its count, source and truncation. Room is made only
    /// once a datagram is queued when `buffer` lacks it (an idle receive holds no new memory), as for
    /// ``AsyncSocket/read(into:maximum:timeout:)``. A `maximum` below 1 is
    /// ``LoopError/invalidArgument(_:)``.
    nonisolated(nonsending) public func receive(into buffer: inout Bytes, maximum: Int = DatagramSocket.defaultReceiveSize,
                                                timeout: Duration? = nil) async throws(LoopError) -> ReceivedDatagram {
        guard maximum > 0 else { throw .invalidArgument("receive(into:maximum: \(maximum))") }
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let room = Swift.min(maximum, StreamSocket.maximumReadReservation)
        return try await loop.onLoop { (state) async throws(LoopError) -> ReceivedDatagram in
            try await state.datagram(id, .read, deadline: deadline, waitFirst: !buffer.hasRoom(room)) { (socket) throws(SocketError) -> ReceivedDatagram? in
                try socket.receive(into: &buffer, maximum: maximum).datagram
            }
        }
    }

    /// Receives one datagram (up to `maximum` bytes of it; at least 1, at most
    /// ``/ReadinessNet/StreamSocket/maximumReadReservation``) into a new buffer of exactly its bytes:
    /// the bytes and the datagram's description. As ``AsyncSocket/readAvailable(maximum:timeout:)``
    /// reads, it receives into the loop's own buffer, so nothing is allocated while it waits and the
    /// result holds no unused room (a 16-byte datagram kept 16 bytes, not the 64 KiB a receive of any
    /// UDP datagram needs room for); 8 KiB or more (64 KiB for a `maximum` above 64 KiB) take the loop's buffer over, shrunk to them.
    nonisolated(nonsending) public func receive(maximum: Int = DatagramSocket.defaultReceiveSize,
                                                timeout: Duration? = nil) async throws(LoopError) -> (bytes: Bytes, datagram: ReceivedDatagram) {
        guard maximum > 0 else { throw .invalidArgument("receive(maximum: \(maximum))") }
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> (bytes: Bytes, datagram: ReceivedDatagram) in
            try await state.datagram(id, .read, deadline: deadline, waitFirst: false) { (socket) throws(SocketError) -> (bytes: Bytes, datagram: ReceivedDatagram)? in
                let scratch = try state.readScratch(for: maximum)
                let room = UnsafeMutableRawBufferPointer(rebasing: scratch[..<Swift.min(maximum, scratch.count)])
                guard let datagram = try socket.receive(into: room).datagram else { return nil }
                let received = UnsafeRawBufferPointer(rebasing: room[..<datagram.count])
                if let adopted = state.adoptScratch(received) { return (adopted, datagram) }
                return (try Bytes.copying(received), datagram)
            }
        }
    }

    /// Receives one datagram into the start of `buffer` (its count does not change; an empty array
    /// drops a datagram and tells its length).
    nonisolated(nonsending) public func receive(into buffer: inout [UInt8], timeout: Duration? = nil) async throws(LoopError) -> ReceivedDatagram {
        try await receive(into: &buffer, peeking: false, timeout: timeout)
    }

    /// Copies the next datagram into the start of `buffer` as soon as one is queued, **without taking
    /// it** (tokio's `UdpSocket::peek_from`): the next receive returns it again. The same description
    /// as a receive into an array (its count, its source, and whether `buffer` was too short).
    nonisolated(nonsending) public func peek(into buffer: inout [UInt8], timeout: Duration? = nil) async throws(LoopError) -> ReceivedDatagram {
        try await receive(into: &buffer, peeking: true, timeout: timeout)
    }

    nonisolated(nonsending) private func receive(into buffer: inout [UInt8], peeking: Bool,
                                                 timeout: Duration?) async throws(LoopError) -> ReceivedDatagram {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> ReceivedDatagram in
            try await state.datagram(id, .read, deadline: deadline, waitFirst: false) { (socket) throws(SocketError) -> ReceivedDatagram? in
                try (peeking ? socket.peek(into: &buffer) : socket.receive(into: &buffer)).datagram
            }
        }
    }

    /// Receives the datagrams queued, as many as `batch` has slots, with one `recvmmsg` once at least
    /// one is there: their number (at least 1; ``/ReadinessNet/DatagramBatch/count``). The batch's storage is
    /// reused: nothing is allocated per datagram. `batch` must not be used elsewhere until this returns.
    nonisolated(nonsending) public func receive(into batch: DatagramBatch, timeout: Duration? = nil) async throws(LoopError) -> Int {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Int in
            try await state.datagram(id, .read, deadline: deadline, waitFirst: false) { (socket) throws(SocketError) -> Int? in
                if case .transferred(let n) = try socket.receive(into: batch) { return n }
                return nil
            }
        }
    }

    /// Sends every datagram of `batch` with `sendmmsg`, waiting for room as often as needed. On an
    /// error (a deadline, cancellation, a refusal) some of them may have been sent, and how many is not
    /// said: the kernel sends the slots before a failing one and drops that slot's error, the next
    /// call fails on it, and the slots after it are not sent. To know, or to go on past a bad slot,
    /// use `DatagramSocket.send(_:from:)` through `withDatagramSocket` (it returns the count).
    /// SwiftNIO fails only the bad datagram; a known difference.
    nonisolated(nonsending) public func send(_ batch: DatagramBatch, timeout: Duration? = nil) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        var sent = 0
        try await loop.onLoop { (state) async throws(LoopError) in
            try await state.datagram(id, .write, deadline: deadline, waitFirst: false,
                                     sendsTo: batch.namesDestination ? .slots : .peer) { (socket) throws(SocketError) -> Void? in
                while sent < batch.count {
                    guard case .transferred(let n) = try socket.send(batch, from: sent), n > 0 else { return nil }
                    sent += n
                }
                return ()
            }
        }
    }

    /// One attempt to receive, never waiting (tokio's `try_recv_from`): a datagram into the start of
    /// `buffer`, as ``receive(into:timeout:)-([UInt8],_)`` receives it, or nil when none is queued.
    /// ``LoopError/busy`` while another task's receive is in progress (the datagram is owed to it).
    nonisolated(nonsending) public func tryReceive(into buffer: inout [UInt8]) async throws(LoopError) -> ReceivedDatagram? {
        try await tryReceive(into: &buffer, peeking: false)
    }

    /// One attempt to peek, never waiting (tokio's `try_peek_from`, `try_peek_sender`): the next
    /// datagram copied into the start of `buffer` **without taking it** (described as a receive
    /// describes it: its source, its length, its truncation), or nil when none is queued.
    /// ``LoopError/busy`` while another task's receive is in progress.
    nonisolated(nonsending) public func tryPeek(into buffer: inout [UInt8]) async throws(LoopError) -> ReceivedDatagram? {
        try await tryReceive(into: &buffer, peeking: true)
    }

    nonisolated(nonsending) private func tryReceive(into buffer: inout [UInt8], peeking: Bool) async throws(LoopError) -> ReceivedDatagram? {
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> ReceivedDatagram? in
            try state.tryDatagram(id, .read) { (socket) throws(SocketError) -> ReceivedDatagram? in
                try (peeking ? socket.peek(into: &buffer) : socket.receive(into: &buffer)).datagram
            }
        }
    }

    /// One attempt to send `bytes` as one datagram to `destination` (nil: the connected peer), never
    /// waiting (tokio's `try_send_to`): whether it was sent (false: no room in the send buffer now).
    /// ``LoopError/busy`` while another task's send is in progress; refusals and bad destinations as
    /// for ``send(_:to:timeout:)-([UInt8],_,_)``.
    nonisolated(nonsending) public func trySend(_ bytes: [UInt8], to destination: SocketAddress? = nil) async throws(LoopError) -> Bool {
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> Bool in
            try state.tryDatagram(id, .write) { (socket) throws(SocketError) -> Bool? in
                try socket.send(bytes, destination: destination) == .wouldBlock ? nil : true
            } ?? false
        }
    }

    /// Waits until a receive would not block (a datagram queued, or an error or a shut-down side a
    /// receive would meet) and receives nothing: tokio's `UdpSocket::readable`. Waits for its turn
    /// while another task receives; `.timedOut`, `.cancelled` as for a receive.
    nonisolated(nonsending) public func readable(timeout: Duration? = nil) async throws(LoopError) {
        try await waitReady(.read, timeout: timeout)
    }

    /// Waits until a send would not block (room in the send buffer) and sends nothing: tokio's
    /// `UdpSocket::writable`. Waits for its turn while another task sends.
    nonisolated(nonsending) public func writable(timeout: Duration? = nil) async throws(LoopError) {
        try await waitReady(.write, timeout: timeout)
    }

    private static let readShutdown = Int16(truncatingIfNeeded: Ready.pollRDHUP)

    /// `readable`/`writable`: the direction taken, each attempt a zero-timeout `poll`.
    nonisolated(nonsending) private func waitReady(_ direction: Direction, timeout: Duration?) async throws(LoopError) {
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let events = Int16(direction == .read ? POLLIN : POLLOUT)
        try await loop.onLoop { (state) async throws(LoopError) in
            // A try moved a datagram since the last that would block: ready as far as the caller can tell.
            if state.isKnownReady(id, direction) { return }
            // After a try that would block, an error poll keeps reporting is one no try takes.
            let blocked = state.isKnownBlocked(id, direction)
            let wanted = events | Int16(POLLERR)
            try await state.datagram(id, direction, deadline: deadline, waitFirst: false) { (socket) throws(SocketError) -> Void? in
                var entry = pollfd(fd: socket.fd, events: events | Self.readShutdown, revents: 0)
                while true {
                    let n = poll(&entry, 1, 0)
                    if n > 0 {
                        // Where poll says ready for ever though a receive (an IP send) would block,
                        // the wait goes on as a receive's or a send's does (paused, not spinning): a
                        // socket shut down for reading, and, once a try would block, an error alone
                        // (an ICMP error left in an IP_RECVERR error queue; before any try, a pending
                        // error is what the receive would report). A Unix send is believed: its
                        // readiness depends on a destination this wait lacks.
                        if direction == .read, entry.revents & Self.readShutdown != 0 { return nil }
                        if entry.revents & events != 0 || !blocked { return () }
                        if direction == .write, socket.family == .unix { return () }
                        return entry.revents & wanted != 0 ? nil : ()
                    }
                    if n == 0 { return nil }
                    if errno != EINTR { return () }   // the operation that follows reports it
                }
            }
        }
    }

    /// Runs `body` on the loop thread with the underlying socket, for options (`setBroadcast`,
    /// `joinMulticast`, `setSegmentSize`, ...). A socket closed or released there is forgotten by the
    /// loop (a waiter ends with ``LoopError/closed``); registering it elsewhere is not supported.
    nonisolated(nonsending) public func withDatagramSocket<T: Sendable>(_ body: (DatagramSocket) throws(SocketError) -> T) async throws(LoopError) -> T {
        let id = self.id
        return try await loop.onLoop { (state) async throws(LoopError) -> T in
            try state.withDatagram(id, body)
        }
    }

    /// Closes the socket once (deregistered first; a bound Unix path is unlinked); a task waiting on
    /// it resumes with ``LoopError/closed``. Later calls do nothing.
    nonisolated(nonsending) public func close() async {
        let id = self.id
        try? await loop.onLoop { (state) async throws(LoopError) in state.close(id) }
    }
}

extension EventLoop {
    /// A datagram socket bound to `address` (port 0: the kernel chooses; ``AsyncDatagramSocket/localAddress``
    /// tells which), owned by this loop.
    nonisolated(nonsending) public func bindDatagram(to address: SocketAddress,
                                                     options: DatagramSocket.Options = DatagramSocket.Options()) async throws(LoopError) -> AsyncDatagramSocket {
        let (id, local, peer) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress?, SocketAddress?) in
            try state.openDatagram { () throws(SocketError) in try DatagramSocket(bind: address, options: options) }
        }
        return AsyncDatagramSocket(loop: self, id: id, localAddress: local, peer: peer)
    }

    /// A datagram socket connected to `peer` (bound to `local` when given, else an ephemeral port):
    /// sends need no address, only `peer`'s datagrams arrive from then on, and a refusal is reported
    /// (``/ReadinessNet/SocketError/Kind/refused``). Datagrams queued for `local` between its bind and
    /// the connect are still received, whoever sent them: a client that trusts only its peer checks
    /// each datagram's `source` (``/ReadinessNet/DatagramSocket/connect(to:)``).
    nonisolated(nonsending) public func connectDatagram(to peer: SocketAddress, from local: SocketAddress? = nil,
                                                        options: DatagramSocket.Options = DatagramSocket.Options()) async throws(LoopError) -> AsyncDatagramSocket {
        let (id, bound, connected) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress?, SocketAddress?) in
            try state.openDatagram { () throws(SocketError) in try DatagramSocket(connectedTo: peer, from: local, options: options) }
        }
        return AsyncDatagramSocket(loop: self, id: id, localAddress: bound, peer: connected)
    }

    /// Takes ownership of a datagram socket descriptor made elsewhere (``/ReadinessNet/DatagramSocket/init(adopting:)``:
    /// made non-blocking and close-on-exec, closed by the loop from now on).
    ///
    /// Fails with ``LoopError/socket(_:)`` (``/ReadinessNet/SocketError/Kind/invalidArgument`` for a negative
    /// descriptor or one that is not a datagram socket, ``/ReadinessNet/SocketError/Kind/closed`` for one that is not
    /// open), ``LoopError/invalidArgument(_:)`` for a descriptor the loop already owns or waits on, or
    /// ``LoopError/shutdown``. **Ownership passes only on success: a descriptor whose adoption failed
    /// stays the caller's, open**, as for ``adopt(descriptor:)``.
    nonisolated(nonsending) public func adoptDatagram(descriptor fd: CInt) async throws(LoopError) -> AsyncDatagramSocket {
        let (id, bound, connected) = try await onLoop { (state) async throws(LoopError) -> (UInt64, SocketAddress?, SocketAddress?) in
            if state.isShutDown { throw state.shutdownReason }
            try state.checkForeign(fd, "adoptDatagram", adopting: true)
            if state.liveForeign(fd) != nil { throw .invalidArgument("adoptDatagram: descriptor \(fd) is being waited on (readable/writable)") }
            return try state.openDatagram(adopted: true) { () throws(SocketError) in try DatagramSocket(adopting: fd) }
        }
        return AsyncDatagramSocket(loop: self, id: id, localAddress: bound, peer: connected)
    }
}
