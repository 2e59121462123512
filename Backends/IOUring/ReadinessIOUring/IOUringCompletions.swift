#if canImport(Glibc)
import Glibc
#endif
import CIOUring
@_spi(Backend) import ReadinessCore

/// How the provided buffers are laid out: 1 MiB of address space either way (as the readiness
/// driver's scratch buffer), resident only where data was received.
struct ProvidedBufferLayout {
    let count: UInt32
    let size: UInt32
    let incremental: Bool
    /// Where the kernel has IOU_PBUF_RING_INC (Linux 6.12): 16 × 64 KiB, each consumed a receive at a
    /// time, so a small read takes only its bytes of a buffer and a large one fits whole.
    static let incremental = ProvidedBufferLayout(count: 16, size: 64 * 1024, incremental: true)
    /// Otherwise 256 × 4 KiB, one receive each: many small ones, as every connection whose data arrives
    /// in one batch of completions takes one before the loop gives any back (a receive finding none
    /// fails with ENOBUFS, and the driver reads by readiness). A larger read tops up with recv(2).
    static let small = ProvidedBufferLayout(count: 256, size: 4 * 1024, incremental: false)
}

/// Completion I/O on the poller's own ring (``/ReadinessCore/CompletionRing``): receive, send,
/// sendmsg, accept and cancel requests queued with the poll requests and submitted by the same
/// `io_uring_enter` as the wait; their completions are told from the polls' by the top bits of
/// `user_data` (``IOUringSeam/operationBit``) and kept until the loop takes them.
extension IOUringSeam {
    /// The provided-buffer group's number.
    static let providedBufferGroup: UInt16 = 1

    /// See ``/ReadinessCore/CompletionRing/providedBufferSize``.
    public var providedBufferSize: Int { Int(bufferLayout.size) }

    /// Which features the ring has: provided buffers unless the kernel refused their registration.
    public var completionFeatures: CompletionFeatures {
        if buffersRefused { return [] }
        if buffersRetryAt != 0, providedBuffers == nil, MonotonicClock.nowNanoseconds < buffersRetryAt { return [] }
        return .providedBuffers
    }

    @inline(__always)
    private static func operationData(_ tag: UInt64) -> UInt64 { operationBit | (tag & ~(operationBit | operationCancelBit)) }

    /// The most one receive or send asks for: the kernel keeps the length as a signed int and refuses
    /// more (EINVAL), and Linux caps one read or write at INT_MAX rounded down to a page
    /// (MAX_RW_COUNT) anyway; the drivers' loops take the rest in further calls.
    static let maximumTransfer = UInt32(Int32.max) & ~UInt32(4095)

    private func queued(_ operation: String, _ call: () -> CInt) throws(PollerError) {
        try owned(operation, call)
        operationsInFlight += 1
    }

    /// See ``/ReadinessCore/CompletionRing/receive(_:into:tag:)``.
    public func receive(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, tag: UInt64) throws(PollerError) {
        let length = min(UInt32(clamping: buffer.count), Self.maximumTransfer)
        try queued("io_uring_enter(RECV)") { rd_uring_prep_recv(ring, fd, buffer.baseAddress, length, Self.operationData(tag), -1) }
    }

    /// See ``/ReadinessCore/CompletionRing/receiveProvided(_:maximum:tag:)``. Registers the buffers
    /// first if none are; fails with `unsupported` when the kernel refuses them.
    public func receiveProvided(_ fd: CInt, maximum: Int, tag: UInt64) throws(PollerError) {
        // Before the registration, which is a call on the ring the child shares with the parent
        // (`owned` refuses the submission only after it).
        if Sys.forkGeneration != forkGeneration { throw .forked }
        if ringClosed { throw .closed }
        if providedBuffers == nil { try registerProvidedBuffers() }
        let length = UInt32(clamping: Swift.min(maximum, Int(bufferLayout.size)))
        try queued("io_uring_enter(RECV)") {
            rd_uring_prep_recv(ring, fd, nil, length, Self.operationData(tag), CInt(Self.providedBufferGroup))
        }
    }

    /// Registers the buffers: incrementally consumed where the kernel takes it, else small ones.
    private func registerProvidedBuffers() throws(PollerError) {
        if buffersRefused { throw .system(operation: "io_uring_register(PBUF_RING)", errno: EINVAL) }
        var status: CInt = -EINVAL
        let layouts: [ProvidedBufferLayout] = features.contains(.incrementalBuffers) ? [.incremental, .small] : [.small]
        for layout in layouts {
            var made: OpaquePointer?
            status = rd_uring_buffers_register(ring, Self.providedBufferGroup, layout.count, layout.size,
                                               layout.incremental ? 1 : 0, &made)
            if status == 0, let made {
                providedBuffers = made
                bufferLayout = layout
                bufferFill = Array(repeating: 0, count: Int(layout.count))
                bufferParts = Array(repeating: 0, count: Int(layout.count))
                bufferDone = Array(repeating: false, count: Int(layout.count))
                return
            }
            if status != -EINVAL { break }
        }
        if status == -EINVAL || status == -ENOSYS || status == -EOPNOTSUPP {
            buffersRefused = true
        } else {
            // Out of locked memory or memory for now: the readiness path, and another try in a second.
            buffersRetryAt = MonotonicClock.nowNanoseconds &+ Self.buffersRetryDelay
        }
        throw .failed("io_uring_register(PBUF_RING)", errno: -status)
    }

    /// How long receives take the readiness path after a registration failed for want of resources.
    static let buffersRetryDelay: Int64 = 1_000_000_000

    func freeProvidedBuffers() {
        rd_uring_buffers_free(nil, providedBuffers)
        providedBuffers = nil
    }

    /// See ``/ReadinessCore/CompletionRing/send(_:_:tag:)``.
    public func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, tag: UInt64) throws(PollerError) {
        let length = min(UInt32(clamping: buffer.count), Self.maximumTransfer)
        try queued("io_uring_enter(SEND)") { rd_uring_prep_send(ring, fd, buffer.baseAddress, length, Self.operationData(tag)) }
    }

    /// See ``/ReadinessCore/CompletionRing/sendMessage(_:_:tag:)``.
    public func sendMessage(_ fd: CInt, _ message: UnsafePointer<msghdr>, tag: UInt64) throws(PollerError) {
        try queued("io_uring_enter(SENDMSG)") { rd_uring_prep_sendmsg(ring, fd, message, Self.operationData(tag)) }
    }

    /// See ``/ReadinessCore/CompletionRing/accept(_:tag:multishot:)``.
    public func accept(_ fd: CInt, tag: UInt64, multishot: Bool) throws(PollerError) {
        try queued("io_uring_enter(ACCEPT)") { rd_uring_prep_accept(ring, fd, Self.operationData(tag), multishot ? 1 : 0) }
    }

    /// See ``/ReadinessCore/CompletionRing/cancel(tag:)``.
    public func cancel(tag: UInt64) throws(PollerError) {
        let target = Self.operationData(tag)
        try owned("io_uring_enter(ASYNC_CANCEL)") { rd_uring_prep_cancel(ring, target, target | Self.operationCancelBit) }
        try submitNow()
    }

    /// See ``/ReadinessCore/CompletionRing/submitNow()``.
    public func submitNow() throws(PollerError) {
        try owned("io_uring_enter(submit)") { rd_uring_submit(ring) }
    }

    /// An operation's completion (or its cancel's, dropped), kept for ``takeCompletions(_:)``.
    func completeOperation(_ data: UInt64, _ result: Int32, _ flags: UInt32) {
        if data & Self.operationCancelBit != 0 { return }
        if flags & rd_uring_CQE_F_MORE == 0 { operationsInFlight -= 1 }
        var completion = OperationCompletion(tag: data & ~Self.operationBit, result: result, bufferID: nil)
        completion.more = flags & rd_uring_CQE_F_MORE != 0
        if flags & rd_uring_CQE_F_BUFFER != 0 {
            let id = UInt16(truncatingIfNeeded: flags >> rd_uring_CQE_BUFFER_SHIFT)
            let i = Int(id)
            let used = Swift.max(Int(result), 0)
            completion.bufferID = id
            if bufferLayout.incremental, i < bufferFill.count {
                // The kernel fills the buffer on from where the last receive into it stopped; without
                // IORING_CQE_F_BUF_MORE it is used up (this receive may have been cut short there).
                completion.bufferOffset = bufferFill[i]
                bufferFill[i] += used
                bufferParts[i] += 1
                if flags & rd_uring_CQE_F_BUF_MORE == 0 {
                    bufferDone[i] = true
                    completion.filledBuffer = true
                }
            } else {
                completion.filledBuffer = used == Int(bufferLayout.size)
            }
        }
        operationCompletions.append(completion)
    }

    /// See ``/ReadinessCore/CompletionRing/takeCompletions(_:)``.
    public func takeCompletions(_ body: (OperationCompletion) -> Void) {
        guard !operationCompletions.isEmpty else { return }
        for completion in operationCompletions { body(completion) }
        operationCompletions.removeAll(keepingCapacity: true)
    }

    /// See ``/ReadinessCore/CompletionRing/providedBuffer(_:)``.
    public func providedBuffer(_ id: UInt16) -> UnsafeMutableRawPointer? {
        guard let providedBuffers else { return nil }
        return rd_uring_buffers_address(providedBuffers, id)
    }

    /// See ``/ReadinessCore/CompletionRing/giveBack(_:)``. An incrementally consumed buffer goes back
    /// once the kernel is done with it and every part of it was given back.
    public func giveBack(_ id: UInt16) {
        guard let providedBuffers else { return }
        let i = Int(id)
        if bufferLayout.incremental, i < bufferParts.count {
            bufferParts[i] -= 1
            guard bufferParts[i] <= 0, bufferDone[i] else { return }
            bufferParts[i] = 0
            bufferFill[i] = 0
            bufferDone[i] = false
        }
        rd_uring_buffers_give_back(providedBuffers, id)
    }
}

/// The io_uring poller completes operations too (the async layer's completion driver). Each call that
/// submits to the ring or writes into its buffer ring goes through the poller's `call`: after
/// `close()` it fails with `closed` (or does nothing), and a `close()` from another thread waits for
/// it to end, as for the poller's own calls.
@_spi(Backend)
extension IOUringPoller: CompletionRing {
    /// See ``/ReadinessCore/CompletionRing/completionFeatures``.
    public var completionFeatures: CompletionFeatures { seam.completionFeatures }
    /// See ``/ReadinessCore/CompletionRing/providedBufferSize``.
    public var providedBufferSize: Int { seam.providedBufferSize }
    /// See ``/ReadinessCore/CompletionRing/receive(_:into:tag:)``.
    public func receive(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, tag: UInt64) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.receive(fd, into: buffer, tag: tag) }
    }
    /// See ``/ReadinessCore/CompletionRing/receiveProvided(_:maximum:tag:)``.
    public func receiveProvided(_ fd: CInt, maximum: Int, tag: UInt64) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.receiveProvided(fd, maximum: maximum, tag: tag) }
    }
    /// See ``/ReadinessCore/CompletionRing/send(_:_:tag:)``.
    public func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, tag: UInt64) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.send(fd, buffer, tag: tag) }
    }
    /// See ``/ReadinessCore/CompletionRing/sendMessage(_:_:tag:)``.
    public func sendMessage(_ fd: CInt, _ message: UnsafePointer<msghdr>, tag: UInt64) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.sendMessage(fd, message, tag: tag) }
    }
    /// See ``/ReadinessCore/CompletionRing/accept(_:tag:multishot:)``.
    public func accept(_ fd: CInt, tag: UInt64, multishot: Bool) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.accept(fd, tag: tag, multishot: multishot) }
    }
    /// See ``/ReadinessCore/CompletionRing/cancel(tag:)``.
    public func cancel(tag: UInt64) throws(PollerError) {
        try base.call { () throws(PollerError) in try seam.cancel(tag: tag) }
    }
    /// See ``/ReadinessCore/CompletionRing/submitNow()``.
    public func submitNow() throws(PollerError) { try base.call { () throws(PollerError) in try seam.submitNow() } }
    /// See ``/ReadinessCore/CompletionRing/takeCompletions(_:)``.
    public func takeCompletions(_ body: (OperationCompletion) -> Void) { seam.takeCompletions(body) }
    /// See ``/ReadinessCore/CompletionRing/providedBuffer(_:)``.
    /// Nil once the poller is closed (the buffers are unmapped with the ring); the pointer is valid
    /// until then, so the thread that uses it is the one that closes the poller.
    public func providedBuffer(_ id: UInt16) -> UnsafeMutableRawPointer? { seam.providedBuffer(id) }
    /// See ``/ReadinessCore/CompletionRing/giveBack(_:)``. Nothing once the poller is closed.
    public func giveBack(_ id: UInt16) { try? base.call { () throws(PollerError) in seam.giveBack(id) } }
}
