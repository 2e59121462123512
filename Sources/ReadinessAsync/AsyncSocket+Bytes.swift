import ReadinessCore
import ReadinessNet

/// Reading and writing owned bytes (``/ReadinessNet/Bytes``, `[UInt8]`): no raw pointer crosses a suspension, no
/// copy, and 0 allocations per read and write once a reused buffer has grown (Docs/Async.md, "Bytes").
extension AsyncSocket {
    /// Appends up to `maximum` bytes to `buffer` as soon as some are there; returns how many (at least
    /// 1), or 0 when the peer shut down its sending side.
    ///
    /// - **Room**: when `buffer` has fewer than `min(maximum,` ``/ReadinessNet/StreamSocket/maximumReadReservation``)
    ///   bytes free after its readable ones, the consumed front is reclaimed first and the buffer grows
    ///   only when that is not enough (``/ReadinessNet/StreamSocket/read(into:maximum:)``). A buffer emptied
    ///   (``/ReadinessNet/Bytes/removeAll(keepingCapacity:)``, ``/ReadinessNet/Bytes/removeFirst(_:)``) and read into again with the
    ///   same `maximum` allocates nothing.
    /// - **Idle reads hold no memory**: a read that would have to allocate (a `Bytes()` with no storage,
    ///   a full or shared buffer) makes room only once the socket has something to read: it asks first
    ///   (`poll` with a zero timeout: not `recv(MSG_PEEK)`, which would take a pending error) and,
    ///   when nothing is there, waits for
    ///   readability holding no memory. A read with data ready returns it without suspending (even in
    ///   a cancelled task), like every read. A read with room tries at once.
    /// - `buffer` is held `inout` for the whole operation: the caller cannot touch it meanwhile, and on
    ///   an error it holds what it held before (room made for the read may remain).
    /// - A `maximum` below 1 is ``LoopError/invalidArgument(_:)``; a larger one than the room is fine
    ///   (`Int.max`: the room the buffer has, or 1 MiB of new room). Memory that cannot be allocated is
    ///   ``LoopError/socket(_:)`` with ``/ReadinessNet/SocketError/Kind/resourceExhausted``.
    nonisolated(nonsending) public func read(into buffer: inout Bytes, maximum: Int = StreamSocket.defaultReadSize,
                                             timeout: Duration? = nil) async throws(LoopError) -> Int {
        try await readAppending(into: &buffer, maximum: maximum, timeout: timeout)
    }

    /// What ``read(into:maximum:timeout:)`` does, for the forms built on it. Inlined: a call to another
    /// `nonisolated(nonsending)` function that is not inlined costs a hop per call with
    /// ``EventLoop/JobIsolation/serialExecutor`` jobs (measured by the ping-pong benchmark).
    @inline(__always)
    nonisolated(nonsending) func readAppending(into buffer: inout Bytes, maximum: Int, timeout: Duration?) async throws(LoopError) -> Int {
        guard maximum > 0 else { throw .invalidArgument("read(into:maximum: \(maximum))") }
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        let room = Swift.min(maximum, StreamSocket.maximumReadReservation)
        let result = try await loop.onLoop { (state) async throws(LoopError) -> IOResult in
            try await state.perform(id, .read, deadline: deadline, waitFirst: !buffer.hasRoom(room), start: nil) { (socket) throws(SocketError) -> IOResult in
                try socket.read(into: &buffer, maximum: maximum)
            }
        }
        return result.count   // .endOfStream: 0
    }

    /// Reads up to `maximum` bytes (at least 1; at most ``AsyncSocket/maximumReadChunk``) into a new
    /// buffer of exactly the bytes read, empty at the end of the stream. **An idle connection's read
    /// holds no memory**: the read goes into the loop's own buffer (one per loop) and only the bytes
    /// read come out, in storage of their size, so nothing is allocated while the read waits and the
    /// result holds no unused room. A read of a few bytes copies them out (one allocation, one copy);
    /// one of at least 8 KiB (64 KiB for a `maximum` above 64 KiB) takes the loop's buffer over, shrunk to them, without a copy, and the
    /// loop allocates another (of 64 KiB for a `maximum` up to ``/ReadinessNet/StreamSocket/defaultReadSize``,
    /// of `maximum` rounded up to 64 KiB for more).
    nonisolated(nonsending) public func readAvailable(maximum: Int = StreamSocket.defaultReadSize,
                                                      timeout: Duration? = nil) async throws(LoopError) -> Bytes {
        guard maximum > 0 else { throw .invalidArgument("read(into:maximum: \(maximum))") }
        return try await readCopying(maximum: maximum, timeout: timeout) { (read, state) throws(SocketError) -> Bytes in
            // Much read: the loop's buffer is handed over, not copied (`LoopState.adoptScratch`).
            if let adopted = state.adoptScratch(read) { return adopted }
            return try Bytes.copying(read)
        }
    }

    /// What ``readAvailable(maximum:timeout:)`` and ``read(upTo:timeout:)`` share: a read into the
    /// loop's buffer whose bytes `take` copies out, or takes over (`IODriver.readCopying`; `take` gets
    /// the loop's state for that, on the loop thread). Inlined, like `readAppending`.
    @inline(__always)
    nonisolated(nonsending) func readCopying<T: Sendable>(maximum: Int, timeout: Duration?,
                                                          _ take: (UnsafeRawBufferPointer, LoopState) throws(SocketError) -> T) async throws(LoopError) -> T {
        let deadline = timeout.map { Deadline.after($0) }
        let maximum = Swift.min(maximum, Self.maximumReadChunk)
        // `onLoop` by hand: its out-of-line path (a hop) in a function of its own, so that this frame,
        // held by every idle connection's task, keeps no closure context for it.
        if let state = loop.stateInline(#isolation) {
            return try await state.readCopying(id, maximum: maximum, deadline: deadline) { (read) throws(SocketError) -> T in
                try take(read, state)
            }
        }
        return try await Self.readCopyingHopping(loop, id, maximum: maximum, deadline: deadline, take)
    }

    @inline(never)
    nonisolated(nonsending) private static func readCopyingHopping<T: Sendable>(_ loop: EventLoop, _ id: UInt64, maximum: Int, deadline: Int64?,
                                                                              _ take: (UnsafeRawBufferPointer, LoopState) throws(SocketError) -> T) async throws(LoopError) -> T {
        try await loop.onLoop { (state) async throws(LoopError) -> T in
            try await state.readCopying(id, maximum: maximum, deadline: deadline) { (read) throws(SocketError) -> T in
                try take(read, state)
            }
        }
    }

    /// Writes every readable byte of `bytes`, waiting for room as often as needed (no copy: the
    /// operation holds the storage, shared with the caller's value, until it ends).
    nonisolated(nonsending) public func write(_ bytes: Bytes, timeout: Duration? = nil) async throws(LoopError) {
        try await writeAll(count: bytes.count, timeout: timeout) { (socket, offset) throws(SocketError) -> IOResult in
            try socket.write(bytes, from: offset, to: Swift.min(bytes.count, offset &+ LoopState.sendLimit))
        }
    }

    /// Writes `count` bytes with `write(socket, offset)`, which writes from `offset` on what the socket
    /// takes now; on the loop thread, each attempt synchronous. Inlined, like `readAppending`.
    @inline(__always)
    nonisolated(nonsending) func writeAll(count: Int, timeout: Duration?,
                                          _ write: (StreamSocket, Int) throws(SocketError) -> IOResult) async throws(LoopError) {
        // The deadline first: the timeout bounds the whole write, the attempts made at once included.
        let deadline = timeout.map { Deadline.after($0) }
        let id = self.id
        var offset = 0
        // On the loop thread, a write the socket takes whole at once is done here: no hop, no executor
        // check. One that would block goes on below from `offset`, its claim held meanwhile.
        var claimed = false
        let start = LoopState.WriteStart(timeout: timeout)
        if let outcome = try loop.onLoopNow({ (state) throws(LoopError) -> LoopState.WriteAtOnce in
            try state.writeAtOnce(id, count: count, offset: &offset, write)
        }) {
            switch outcome {
            case .done: return
            case .blocked: claimed = true
            case .notItsTurn: break   // `perform` waits for its turn
            }
        }
        _ = try await loop.onLoop { (state) async throws(LoopError) -> IOResult in
            // Went on after its first slice (its budget spent, or no room): a cancellation or the
            // deadline that came since ends it here, as at any of its yields.
            if claimed, let failure = start.failure(deadline: deadline) {
                state.release(id, .write)
                throw failure
            }
            return try await state.perform(id, .write, deadline: deadline, waitFirst: false, start: start, claimed: claimed) { (socket) throws(SocketError) -> IOResult in
                while offset < count {
                    guard case .transferred(let n) = try write(socket, offset), n > 0 else { return .wouldBlock }
                    offset += n
                    // The budget spent: `perform` yields to the next poller pass, then goes on.
                    if state.chargeSend(n, more: offset < count) { return .wouldBlock }
                }
                return .transferred(offset)
            }
        }
    }
}

extension Bytes {
    /// `read`'s bytes in a new buffer of their size (the owned-bytes reads' copy out of the loop's
    /// buffer).
    static func copying(_ read: UnsafeRawBufferPointer) throws(SocketError) -> Bytes {
        var bytes = Bytes()
        guard bytes.makeRoom(read.count) else {
            throw SocketError(.resourceExhausted, operation: "read: allocating \(read.count) bytes")
        }
        if let source = read.baseAddress, let target = bytes.unsafeRoom.baseAddress {
            target.copyMemory(from: source, byteCount: read.count)
        }
        bytes.commit(read.count)
        return bytes
    }
}
