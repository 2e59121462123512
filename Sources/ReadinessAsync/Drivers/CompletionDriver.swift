#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// One operation the completion driver submitted: the kernel holds a reference to it (its tag is its
/// address) from the submission to its last completion, and its task waits on `continuation` until then.
final class CompletionOperation {
    // Stored in this order (the 8-byte fields, then the small ones, the failure last): no padding
    // between them, so the object is 113 bytes (a 128-byte malloc chunk) rather than 128 (a 144-byte
    // one); every idle connection's task on io_uring holds one (Docs/Async.md, "Memory per idle connection").
    @exclusivity(unchecked) var continuation: UnsafeContinuation<Outcome, Never>?
    /// Whose slot holds it while its task waits (set when it is submitted).
    @exclusivity(unchecked) var key = ResourceKey(0)
    /// A vectored write's message and iovecs (kept until the completion).
    @exclusivity(unchecked) var message: UnsafeMutablePointer<msghdr>?
    /// The driver's list of operations in the kernel (the kernel's reference keeps them alive).
    @exclusivity(unchecked) unowned(unsafe) var previous: CompletionOperation?
    @exclusivity(unchecked) unowned(unsafe) var next: CompletionOperation?
    /// The last completion's result (a count, a descriptor, or a negative errno) and provided buffer.
    /// Before a receive into a provided buffer is submitted, its descriptor and size
    /// (`CompletionDriver.submitReceive`): no closure holds them while its task waits.
    @exclusivity(unchecked) var bufferOffset = 0
    @exclusivity(unchecked) var result: Int32 = 0
    @exclusivity(unchecked) var bufferID: UInt16?
    @exclusivity(unchecked) var direction = Direction.read
    @exclusivity(unchecked) var filledBuffer = false
    /// A listener's multishot accept (its completions go to the listener's queue, no task waits on it).
    @exclusivity(unchecked) var isMultishotAccept = false
    /// A multishot accept that has accepted a connection (its EINVAL is then no refusal by the kernel).
    @exclusivity(unchecked) var acceptedAny = false
    /// A multishot accept being cancelled because its queue is full (not given up: what it accepts is kept).
    @exclusivity(unchecked) var stopping = false
    /// Set when the wait was given up (deadline, cancellation, close, shutdown): the kernel was asked
    /// to cancel the operation; its task ends with this failure unless the operation completed anyway
    /// and its result may be kept (`CompletionDriver.keeps`).
    @exclusivity(unchecked) var failure: LoopError?

    /// The tag the kernel carries: this object's address (held retained while the kernel has it).
    var tag: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) }

    deinit {
        if let message {
            message.pointee.msg_iov?.deallocate()
            message.deallocate()
        }
    }
}

/// The completion driver (``IODriver``) for a loop whose poller is also a ``CompletionRing`` (io_uring):
/// a read, `readCopying`, write or accept that would wait is submitted to the ring, and its task
/// resumes with the completion's result. A write first tries its system call (a send rarely blocks),
/// then submits what is left. Connects, datagrams and the owned-bytes `perform` go to the readiness
/// driver, as do operations the ring cannot take (a provided buffer missing, a back-off), so that
/// behaviour is the same. Chosen in `LoopState.start` (opt-out: `READINESS_IO_DRIVER=readiness`).
///
/// Deadlines, cancellation, close and shutdown cancel an operation in the kernel (`LoopState.resolve`);
/// its task resumes only on the operation's last completion, so a caller's buffer is never written
/// after the call returned, and a closed socket's file is let go at once (the cancel is submitted
/// before the descriptor is closed).
final class CompletionDriver: IODriver, @unchecked Sendable {
    // Loop thread only (every requirement of IODriver runs there), as the `LoopState` it belongs to.
    private let ring: any CompletionRing
    private let readiness = ReadinessDriver()
    /// Operations in the kernel (submitted, last completion not yet taken).
    private(set) var inFlight = 0
    /// Those operations, newest first (so that a shutdown that outlasts ``drainLimit`` resumes them).
    private unowned(unsafe) var newest: CompletionOperation?
    /// Operations that went to the readiness driver's path, and operations completed (``IODriverInfo``).
    private(set) var fallbacks = 0
    private(set) var completed = 0
    /// Given-up operations whose cancel could not be submitted (a full submission queue, a failed
    /// `io_uring_enter`): asked again after each wait until it goes in or they complete.
    private var cancelsToRetry: [CompletionOperation] = []
    /// Whether a cancel waits to be asked again: the loop keeps its wait short meanwhile (an idle
    /// loop's wait would otherwise block, and a timed-out operation's task wait, until some other
    /// event: Go's TestReadTimeout, the deadline alone ends a blocked read).
    var hasCancelsToRetry: Bool { !cancelsToRetry.isEmpty }

    init(ring: any CompletionRing) {
        self.ring = ring
    }

    /// The environment variable that picks the driver: `readiness` keeps the readiness driver on a
    /// loop whose poller could complete operations (for comparison).
    static let environmentKey = "READINESS_IO_DRIVER"

    // MARK: The loop's side

    /// Takes the completions the last poller wait reaped, frees their slots and resumes their tasks.
    func dispatch(_ loop: LoopState) {
        defer { if !cancelsToRetry.isEmpty { retryCancels() } }
        ring.takeCompletions { completion in
            guard let pointer = UnsafeRawPointer(bitPattern: UInt(completion.tag)) else { return }
            let unmanaged = Unmanaged<CompletionOperation>.fromOpaque(pointer)
            // A multishot operation stays in the kernel (and keeps its reference) while `more` is set.
            let op = completion.more ? unmanaged.takeUnretainedValue() : unmanaged.takeRetainedValue()
            if !completion.more { unlink(op) }
            completed += 1
            if op.isMultishotAccept {
                accepted(op, completion, loop: loop)
                return
            }
            op.result = completion.result
            op.bufferID = completion.bufferID
            op.bufferOffset = completion.bufferOffset
            op.filledBuffer = completion.filledBuffer
            if op.direction == .write, completion.result < 0, Self.failsConnection(-completion.result),
               noteSendFailure(op, -completion.result, loop: loop) {
                // The waiting read reports the reset; the send meets what the kernel gives a send once
                // the reset was taken, as on the readiness path (whose reader is resumed first): EPIPE.
                op.result = -EPIPE
            }
            guard let continuation = op.continuation else { return }
            op.continuation = nil
            if let resource = loop.slab[op.key], resource.key == op.key {
                let slot = resource.record[op.direction]
                if slot.op === op {
                    // The deadline timer stays armed for the next wait (lazy, as on the readiness path).
                    var cleared = WaitSlot(timer: slot.timer)
                    cleared.inUse = slot.inUse   // resumed, its operation runs on until it returns
                    resource.record[op.direction] = cleared
                }
            }
            continuation.resume(returning: .ready)
        }
    }

    /// Errnos that end the connection (a reset, an abort, a retransmission or keep-alive timeout, an
    /// unreachable peer): what a receive would have reported. Not EPIPE: after the peer's FIN the
    /// kernel turns a reset into EPIPE, and a receive reads the end of stream there anyway.
    private static func failsConnection(_ code: Int32) -> Bool {
        code == ECONNRESET || code == ECONNABORTED || code == ETIMEDOUT
            || code == EHOSTUNREACH || code == ENETUNREACH || code == EHOSTDOWN
    }

    /// A send took a connection failure while a read of its stream is in progress (a receive still in
    /// the kernel, or a read on the readiness path: `read(into: &Bytes)`, a provided-buffer read that
    /// fell back; woken after the send, it will read 0): that read reports it
    /// (`LoopState.readFailures`). A read already completed (data, or the FIN, before the failure) is
    /// not: its end of stream stands.
    /// True when a read takes it.
    @inline(never)
    private func noteSendFailure(_ op: CompletionOperation, _ code: Int32, loop: LoopState) -> Bool {
        guard let resource = loop.slab[op.key], resource.key == op.key,
              resource.record.read.op != nil || resource.record.read.inUse,
              Self.isOver(resource) else { return false }
        loop.readFailures[op.key] = code
        return true
    }

    /// Whether the connection is over for the kernel (POLLHUP: both directions done). An ICMP error
    /// taken with IP_RECVERR set (EHOSTUNREACH and the like) fails a send on a connection that goes
    /// on: that one stays the send's, never kept for a read that would meet a later, graceful end
    /// (review).
    private static func isOver(_ resource: any LoopResource) -> Bool {
        guard let stream = resource as? StreamResource, let socket = stream.socket else { return false }
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0 && entry.revents & Int16(POLLHUP) != 0
    }

    /// The failure a send took for this read's stream, taken (nil: none; the read's end of stream stands).
    static func takeReadFailure(_ id: UInt64, loop: LoopState) -> LoopError? {
        guard !loop.readFailures.isEmpty, let code = loop.readFailures.removeValue(forKey: ResourceKey(id)) else { return nil }
        return .socket(SocketError(errno: code, operation: "read"))
    }

    private func link(_ op: CompletionOperation) {
        _ = Unmanaged.passRetained(op)   // the kernel's reference, taken back by `dispatch`
        op.next = newest
        newest?.previous = op
        newest = op
        inFlight += 1
    }

    /// Whether the kernel still holds `op` (linked: submitted, its last completion not taken yet).
    private func isInFlight(_ op: CompletionOperation) -> Bool { op === newest || op.previous != nil }

    private func unlink(_ op: CompletionOperation) {
        if let previous = op.previous { previous.next = op.next } else { newest = op.next }
        op.next?.previous = op.previous
        op.previous = nil
        op.next = nil
        inFlight -= 1
    }

    /// Submits the operations queued since the last wait now: each takes its file (the kernel looks
    /// its descriptor up as it submits), before the escape hatch's body may close that descriptor and
    /// another thread reuse its number for a file the operation would then read or write.
    func submitQueued() {
        try? ring.submitNow()
    }

    /// The wait for `op` was given up (`LoopState.resolve`): the kernel is asked to cancel it.
    func abandon(_ op: CompletionOperation, reason: LoopError) {
        op.failure = reason
        do { try ring.cancel(tag: op.tag) } catch { cancelsToRetry.append(op) }
    }

    /// Asks again for the cancels that could not be submitted, of the operations still in the kernel
    /// (a task may wait on one: without its cancel it could wait for the peer; a closed listener's
    /// multishot accept, which no task waits on, would keep its file and port and go on accepting).
    private func retryCancels() {
        let pending = cancelsToRetry
        cancelsToRetry.removeAll()
        for op in pending where isInFlight(op) {
            do { try ring.cancel(tag: op.tag) } catch { cancelsToRetry.append(op) }
        }
    }

    /// Shutdown: every operation was cancelled (its resource closed); the loop waits (up to
    /// ``drainLimit``) for their last completions so that their tasks resume with the kernel done.
    func drain(_ poller: any Poller, loop: LoopState) {
        let deadline = MonotonicClock.nowNanoseconds + Self.drainLimit
        while inFlight > 0, MonotonicClock.nowNanoseconds < deadline {
            // A failing wait is tried again after a pause (no spin) within the limit: a shortage
            // passes, and an operation given up while its request is still in the kernel could have
            // its buffer written after its task went on (review: one refused enter ended the drain).
            do {
                try poller.wait(into: loop.events, timeout: .milliseconds(Self.drainStepMilliseconds))
            } catch {
                // Only a shortage passes; any other failure would fail the same way for the whole limit.
                guard error.isResourceExhausted else { break }
                usleep(UInt32(Self.drainStepMilliseconds) * 1_000)
                continue
            }
            dispatch(loop)
        }
        // Not done in time: the ring is closed first (everything queued becomes a NOP, everything in
        // the kernel is cancelled), then their tasks resume with their failure rather than never.
        // Before, the tasks resumed first and the loop's close of the ring came after their jobs ran:
        // that close's submission ran a receive's deferred completion into a buffer its task had
        // already taken back (review). The loop's own close of the poller later finds it closed.
        if newest != nil { try? poller.close() }
        while let op = newest {
            unlink(op)
            Unmanaged.passUnretained(op).release()
            op.result = -ECANCELED
            op.bufferID = nil
            if op.failure == nil { op.failure = loop.shutdownReason }
            op.continuation.take()?.resume(returning: .ready)
        }
    }

    /// How long shutdown waits for cancelled operations (1 s; a socket's cancel completes at once).
    static let drainLimit: Int64 = 1_000_000_000
    static let drainStepMilliseconds = 10

    /// Submits one operation (`start` queues it under `op.tag`) and waits for its last completion. A
    /// submission the ring cannot take for now (`submissionShortage`) is tried again after the loop's
    /// next poller pass, which submits the queue and reaps completions (what io_uring_enter(2) asks of
    /// an EAGAIN), at most `shortageRetries` times.
    nonisolated(nonsending) private func run(_ op: CompletionOperation, _ resource: any LoopResource, _ direction: Direction,
                                             deadline: Int64?, on loop: LoopState,
                                             _ start: (any CompletionRing, UInt64) throws(PollerError) -> Void) async throws(LoopError) {
        let ring = self.ring
        var shortages = 0
        while true {
            let outcome = await loop.wait(for: op, resource, direction, deadline: deadline) { (op) throws(PollerError) in
                try start(ring, op.tag)
                self.link(op)
            }
            guard case .failed(let error) = outcome else { return }
            guard Self.submissionShortage(error), shortages < Self.shortageRetries else { throw error }
            shortages += 1
            try await Self.afterNextPass(resource, deadline: deadline, on: loop)
        }
    }

    /// How often a submission the ring could not take is tried again, a poller pass apart, before its
    /// operation goes to the readiness driver.
    static let shortageRetries = 64

    /// The loop's next poller pass, then the operation's state: `.cancelled`, `.timedOut`, or the
    /// resource's end (`.closed`, or the loop's reason once it stops).
    nonisolated(nonsending) private static func afterNextPass(_ resource: any LoopResource, deadline: Int64?,
                                                              on loop: LoopState) async throws(LoopError) {
        try await loop.yieldToPoller()
        if Task.isCancelled { throw .cancelled }
        if loop.expired(deadline) { throw .timedOut }
        guard loop.slab.contains(resource) else { throw loop.isShutDown ? loop.shutdownReason : .closed }
    }

    /// A submission the ring could not take for now (io_uring_enter's EAGAIN, or EBUSY: the submission
    /// queue still full, or an older kernel's completion queue overflowed): tried again after the next
    /// poller pass (`run`), then the readiness driver's, never at once the caller's failure.
    private static func submissionShortage(_ error: LoopError) -> Bool {
        guard case .poller(let failure) = error else { return false }
        if failure.isResourceExhausted { return true }
        if case .system(_, let code) = failure { return code == EBUSY }
        return false
    }

    /// Whether a result that came in although the wait was given up is kept: yes after a deadline or a
    /// cancellation (the data or connection is the caller's; the cancel lost the race), no once the
    /// resource was closed or the loop shuts down.
    /// An operation given up (a deadline, a cancellation) after its receive or send had already
    /// ended in the kernel with the connection's failure (a reset that came as the cancel was
    /// submitted: the submit runs the deferred completions first). That failure is reported, not the
    /// giving up: the kernel took it from the socket (SO_ERROR is cleared), so the last try, or the
    /// next call, would find a plain end of stream, where on the readiness path the failure waits in
    /// the socket for them (review: a reset read as end of stream on io_uring only).
    private static func tookConnectionFailure(_ op: CompletionOperation) -> Bool {
        op.failure != nil && op.result < 0 && keeps(op.failure) && failsConnection(-op.result)
    }

    private static func keeps(_ failure: LoopError?) -> Bool {
        switch failure {
        case nil, .timedOut?, .cancelled?: true
        default: false
        }
    }

    // MARK: Multishot accept

    /// The most connections a listener's multishot accept queues ahead of its `accept` calls before it
    /// is cancelled, the rest then waiting in the kernel's backlog as they would for the readiness
    /// driver. Not a bound on a burst: each run of the accept in the kernel goes on while the backlog
    /// is not empty (Linux 6.10+), so a backlog that filled meanwhile is taken whole (Docs/Async.md).
    static let acceptQueueLimit = 16
    /// The kernel refused a multishot accept (before 5.19): single accepts from then on.
    private var multishotAcceptRefused = false

    /// A completion of a listener's multishot accept: the connection joins the listener's queue (or is
    /// closed, the listener being gone), an error that ended it is kept for the next `accept`, and a
    /// task waiting in `accept` looks again.
    private func accepted(_ op: CompletionOperation, _ completion: OperationCompletion, loop: LoopState) {
        let result = completion.result
        guard let listener = loop.slab[op.key] as? ListenerResource, listener.key == op.key, listener.multishot === op,
              op.failure == nil else {
            if result >= 0 { ListenerResource.reset(result) }
            return
        }
        if !completion.more { listener.multishot = nil }
        if result >= 0 {
            op.acceptedAny = true
            listener.acceptQueue.append(result)
            loop.noteMayHoldUnowned(listener)
            if completion.more, !op.stopping, listener.acceptQueue.count >= Self.acceptQueueLimit {
                // Cancelled; its completions until the last still queue what it accepted.
                op.stopping = true
                do { try ring.cancel(tag: op.tag) } catch { cancelsToRetry.append(op) }
            }
        } else if -result == EINVAL, !op.acceptedAny {
            // Refused at once: a kernel without multishot accept (before 5.19), unless the socket no
            // longer listens (another holder of an adopted listener shut it down): then it is this
            // listener's error, as an EINVAL after connections came is, and the loop's other
            // listeners keep their multishot accepts (review: one such listener turned them off).
            if Self.stillListens(listener.listener.fd) { multishotAcceptRefused = true }
            listener.acceptFailure = result
        } else if -result != ECANCELED {
            listener.acceptFailure = result
        }
        loop.resolve(listener, .read, .ready)
    }

    /// Whether `fd` is a listening socket (SO_ACCEPTCONN).
    private static func stillListens(_ fd: CInt) -> Bool {
        var listening: CInt = 0
        var size = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0 && listening != 0
    }

    /// Arms `listener`'s multishot accept.
    private func armMultishotAccept(_ listener: ListenerResource) throws(LoopError) {
        let op = CompletionOperation()
        op.isMultishotAccept = true
        op.key = listener.key
        do throws(PollerError) { try ring.accept(listener.listener.fd, tag: op.tag, multishot: true) } catch { throw .poller(error) }
        link(op)
        listener.multishot = op
    }

    // MARK: IODriver

    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         start: LoopState.WriteStart?, on loop: LoopState,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        try await readiness.perform(id, direction, deadline: deadline, waitFirst: waitFirst, start: start, on: loop, attempt)
    }

    nonisolated(nonsending) func read(_ id: UInt64, into buffer: UnsafeMutableRawBufferPointer, deadline: Int64?,
                                      on loop: LoopState) async throws(LoopError) -> Int {
        let (stream, socket) = try loop.stream(id)
        if stream.record.read.isWaiting { throw .busy }
        // A cancelled task still takes data that is there (the readiness driver tries first).
        if Task.isCancelled || buffer.isEmpty {
            fallbacks += 1
            return try await readiness.read(id, into: buffer, deadline: deadline, on: loop)
        }
        // Bytes already queued are read at once (as `readCopying` does); the ring only for a read that waits.
        if let n = try Self.tryFirst(stream, socket, into: buffer, loop: loop) { return n }
        let op = CompletionOperation()
        let fd = socket.fd
        do {
            try await run(op, stream, .read, deadline: deadline, on: loop) { (ring, tag) throws(PollerError) in
                try ring.receive(fd, into: buffer, tag: tag)
            }
        } catch {
            if Self.submissionShortage(error) {
                fallbacks += 1
                return try await readiness.read(id, into: buffer, deadline: deadline, on: loop)
            }
            // As in `readCopying`: one last try before a timeout, a cancellation or a poller error.
            if let n = try Self.lastTry(id, after: error, into: buffer, loop: loop) { return n }
            Self.unwatched(id, loop: loop)
            throw error
        }
        let result = op.result
        if result >= 0, Self.keeps(op.failure) {
            // Closed (or the loop stopped) after the kernel finished the receive, before this task
            // ran: `.closed` (`.shutdown`), as the readiness driver's woken task finds when it looks
            // the socket up again; the bytes go with the socket there too.
            let (stream, _) = try loop.stream(id)
            if result == 0, let failure = Self.takeReadFailure(id, loop: loop) { throw failure }
            stream.record.readDrained = result > 0 && Int(result) < buffer.count
            return Int(result)
        }
        // (Only while the socket is there: closed since, the read ends as the readiness driver's.)
        if Self.tookConnectionFailure(op), (try? loop.stream(id)) != nil { op.failure = nil }
        if let failure = op.failure {
            if let n = try Self.lastTry(id, after: failure, into: buffer, loop: loop) { return n }
            Self.unwatched(id, loop: loop)
            throw failure
        }
        do {
            return try await retryOrFail(result, operation: "read") { () async throws(LoopError) -> Int in
                try await readiness.read(id, into: buffer, deadline: deadline, on: loop)
            }
        } catch {
            Self.unwatched(id, loop: loop)
            throw error
        }
    }

    /// `read(into:)`'s last try after `error` (a timeout, a cancellation, a poller error; nil for any
    /// other, or when nothing is queued): the kernel no longer holds the buffer (the task resumes on
    /// the receive's last completion).
    @inline(never)
    private static func lastTry(_ id: UInt64, after error: LoopError, into buffer: UnsafeMutableRawBufferPointer,
                                loop: LoopState) throws(LoopError) -> Int? {
        switch error {
        case .timedOut, .cancelled, .poller:
            guard let (stream, socket) = try? loop.stream(id) else { return nil }
            stream.record.readDrained = false
            if loop.leavesBytesToNextReader(id, after: error) { return nil }
            return try tryFirst(stream, socket, into: buffer, loop: loop)
        default:
            return nil
        }
    }

    /// After a read that ended without its receive's bytes (a timeout, a cancellation, a failed
    /// submission): no receive watches the socket any more, so the hint that it is empty (set when a
    /// try would block) cannot be kept, and the next read tries recv(2) first. The readiness driver's
    /// hint is cleared by the next readiness event; here none would come, and a read started just
    /// before the loop's shutdown, with bytes queued meanwhile, got `.shutdown` where the readiness
    /// backends returned the bytes (the async differential, seed 72017).
    @inline(never)
    private static func unwatched(_ id: UInt64, loop: LoopState) {
        if let (stream, _) = try? loop.stream(id) { stream.record.readDrained = false }
    }

    /// `read(into:)`'s first try: recv(2) into the caller's buffer unless the last read came back short
    /// (the `readDrained` hint); nil when it was not tried or would block (the hint is then set).
    @inline(never)
    private static func tryFirst(_ stream: StreamResource, _ socket: StreamSocket, into buffer: UnsafeMutableRawBufferPointer,
                                 loop: LoopState) throws(LoopError) -> Int? {
        if stream.record.readDrained { return nil }
        do throws(SocketError) {
            switch try socket.read(into: buffer) {
            case .transferred(let n):
                stream.record.readDrained = n < buffer.count
                return n
            case .endOfStream:
                if case .socket(let failure)? = Self.takeReadFailure(stream.key.raw, loop: loop) { throw failure }
                return 0
            case .wouldBlock:
                stream.record.readDrained = true
                return nil
            }
        } catch {
            throw .socket(error)
        }
    }

    /// A failed operation's errno: EAGAIN or ENOBUFS (no provided buffer free) go to the readiness
    /// driver's path (`fallback`); others are the socket's error.
    nonisolated(nonsending) private func retryOrFail<T>(_ result: Int32, operation: String,
                                                         _ fallback: () async throws(LoopError) -> T) async throws(LoopError) -> T {
        let code = -result
        if code == EAGAIN || code == ENOBUFS || code == EINTR {
            fallbacks += 1
            return try await fallback()
        }
        if code == ECANCELED { throw .cancelled }
        throw .socket(SocketError(errno: code, operation: operation))
    }

    /// Inlined into every `readAvailable` (on every backend), and kept small there: every idle
    /// connection's task holds its frame. The submission and the wait are one call
    /// (`receiveProvided`), taking the bytes is a synchronous one (`takeProvided`), and the readiness
    /// path another (`readinessCopying`), none inlined (Docs/Async.md, "Memory per idle connection").
    /// Out of line, this function was a frame of its own in every io_uring read (3 task-allocator
    /// slabs instead of 2).
    ///
    /// Bytes already queued are read at once, as the readiness driver reads them (one recv(2) into the
    /// loop's scratch buffer, no submission): a stream that keeps the socket full (bulk transfer) never
    /// waits for a completion, and a receive into a provided buffer is submitted only when the read
    /// must wait (after a short read, the `readDrained` hint, or when the try would block). Provided
    /// buffers are then what they are for: no memory held by a waiting read. Before, every read went
    /// through the ring, and a large read cut short by a partly used incremental buffer was topped up
    /// by recv(2) anyway: two operations and two copies a read (async echo at 256 KiB: 0.77x epoll).
    @inline(__always)
    nonisolated(nonsending) func readCopying<T>(_ id: UInt64, maximum: Int, deadline: Int64?, on loop: LoopState,
                                                _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        if let taken = try Self.tryFirst(id, maximum: maximum, loop: loop, take) { return taken }
        let op: CompletionOperation?
        do { op = try await receiveProvided(id, maximum: maximum, deadline: deadline, on: loop) } catch {
            // A timeout, a cancellation or a failed submission may have come before the kernel tried
            // the receive (a task cancelled between the check and the submission): as the readiness
            // driver does after a hinted wait, one last recv(2) takes bytes queued all along.
            if let taken = try Self.lastTryCopying(id, after: error, maximum: maximum, loop: loop, take) { return taken }
            throw error
        }
        if let op, let taken = try takeProvided(op, id, maximum: maximum, on: loop, take) { return taken }
        return try await readinessCopying(id, maximum: maximum, deadline: deadline, on: loop, take)
    }

    /// `readCopying`'s last try after the receive failed (`ReadinessDriver.readCopyingLastTry`); when
    /// it takes nothing, the hint is forgotten (`unwatched`).
    @inline(never)
    private static func lastTryCopying<T>(_ id: UInt64, after error: LoopError, maximum: Int, loop: LoopState,
                                          _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        if let taken = try ReadinessDriver.readCopyingLastTry(id, after: error, maximum: maximum, loop: loop, take) { return taken }
        unwatched(id, loop: loop)
        return nil
    }

    /// The readiness driver's attempt, unless the last read came back short (the socket is most
    /// likely empty: the read goes to the ring without a recv(2) that would fail with EAGAIN). Nil:
    /// nothing read (the hint, or the try would block; the hint is then set).
    @inline(never)
    private static func tryFirst<T>(_ id: UInt64, maximum: Int, loop: LoopState,
                                    _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        let (stream, socket) = try loop.stream(id)
        if stream.record.read.isWaiting { throw .busy }
        if stream.record.readDrained { return nil }
        if let taken = try ReadinessDriver.readCopyingAttempt(stream, socket, maximum: maximum, loop: loop, take) { return taken }
        stream.record.readDrained = true
        return nil
    }

    /// Submits a receive into a provided buffer and waits for its completion; nil: the readiness path
    /// instead (a cancelled task, which still takes ready data; no provided buffers).
    @inline(never)
    nonisolated(nonsending) private func receiveProvided(_ id: UInt64, maximum: Int, deadline: Int64?,
                                                         on loop: LoopState) async throws(LoopError) -> CompletionOperation? {
        let (stream, socket) = try loop.stream(id)
        if stream.record.read.isWaiting { throw .busy }
        if Task.isCancelled || !ring.completionFeatures.contains(.providedBuffers) { return nil }
        let op = CompletionOperation()
        op.result = socket.fd
        op.bufferOffset = Swift.max(maximum, 1)
        // The submission (`submitReceive`) and the wait in this frame, not `run`'s: one frame fewer in
        // every idle task, and nothing but `op` and the stream held across the suspension. The
        // retries after a shortage are a function of their own: their wait for the next pass, here,
        // grew this frame (640 bytes), and every idle task's chain took a third slab (`make
        // bench-idle`: 3.8 kB per idle connection on io_uring, against 2.7 on epoll).
        if case .failed(let error) = await loop.waitInFrame(receiving: op, on: stream, deadline: deadline) {
            return try await receiveAfterFailure(error, op, id, maximum: maximum, deadline: deadline, on: loop)
        }
        return op
    }

    /// `receiveProvided`'s receive failed (`error`): the readiness path (nil) when the kernel refused
    /// the provided buffers; after a shortage (the ring could not take it for now), again after the
    /// next poller pass, as `run` does, up to `shortageRetries` times, then the readiness path; any
    /// other failure is thrown.
    @inline(never)
    nonisolated(nonsending) private func receiveAfterFailure(_ error: LoopError, _ op: CompletionOperation, _ id: UInt64, maximum: Int,
                                                             deadline: Int64?, on loop: LoopState) async throws(LoopError) -> CompletionOperation? {
        var error = error
        var shortages = 0
        while true {
            if case .poller = error, !ring.completionFeatures.contains(.providedBuffers) { return nil }
            guard Self.submissionShortage(error) else { throw error }
            if shortages == Self.shortageRetries { return nil }
            shortages += 1
            let (stream, _) = try loop.stream(id)
            try await Self.afterNextPass(stream, deadline: deadline, on: loop)
            let (current, socket) = try loop.stream(id)
            op.result = socket.fd
            op.bufferOffset = Swift.max(maximum, 1)
            guard case .failed(let next) = await loop.waitInFrame(receiving: op, on: current, deadline: deadline) else { return op }
            error = next
        }
    }

    /// Submits the receive `receiveProvided` prepared on `op` (on the loop thread, from
    /// `LoopState.waitInFrame(receiving:)`): its descriptor in `result` and its size in `bufferOffset`
    /// until then, both fields of the completion after.
    func submitReceive(_ op: CompletionOperation) throws(PollerError) {
        let fd = op.result
        let room = op.bufferOffset
        op.result = 0
        op.bufferOffset = 0
        try ring.receiveProvided(fd, maximum: room, tag: op.tag)
        link(op)
    }

    /// The completed receive: its bytes handed to `take` and its buffer given back, its error thrown
    /// (the hint then forgotten: `unwatched`), or nil when the readiness path is to read instead (no
    /// provided buffer was free, EAGAIN).
    @inline(never)
    private func takeProvided<T>(_ op: CompletionOperation, _ id: UInt64, maximum: Int, on loop: LoopState,
                                 _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        do { return try takeProvidedBytes(op, id, maximum: maximum, on: loop, take) } catch {
            // The receive ended without bytes (cancelled by the deadline or the task, failed).
            Self.unwatched(id, loop: loop)
            throw error
        }
    }

    private func takeProvidedBytes<T>(_ op: CompletionOperation, _ id: UInt64, maximum: Int, on loop: LoopState,
                                      _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        let result = op.result
        guard result >= 0 else {
            if let failure = op.failure, !(Self.tookConnectionFailure(op) && (try? loop.stream(id)) != nil) { throw failure }
            let code = -result
            if code == EAGAIN || code == ENOBUFS || code == EINTR { return nil }
            if code == ECANCELED { throw .cancelled }
            throw .socket(SocketError(errno: code, operation: "read"))
        }
        let buffer = op.bufferID
        defer { if let buffer { ring.giveBack(buffer) } }
        if !Self.keeps(op.failure) { throw op.failure! }
        // Closed (or the loop stopped) after the receive completed, before this task ran: as in `read`.
        let (stream, socket) = try loop.stream(id)
        guard result > 0, let buffer else {
            if let failure = Self.takeReadFailure(id, loop: loop) { throw failure }
            // The end of the stream: later reads try recv(2) first and meet it at once.
            stream.record.readDrained = false
            do { return try take(UnsafeRawBufferPointer(start: nil, count: 0)) } catch { throw .socket(error) }
        }
        guard let base = ring.providedBuffer(buffer) else { throw .shutdown }
        let bytes = UnsafeRawBufferPointer(start: base + op.bufferOffset, count: Int(result))
        let room = Swift.max(maximum, 1)
        do {
            // Cut short by the buffer's end: read on, as one recv(2) of `maximum` would have.
            // Not for a read that gave up while another waits for its turn: what is queued now is the
            // next read's (`LoopState.leavesBytesToNextReader`).
            if Int(result) < room, op.filledBuffer, !(op.failure.map { loop.leavesBytesToNextReader(id, after: $0) } ?? false) {
                return try Self.topUp(bytes, stream: stream, socket: socket, maximum: room, loop: loop, take)
            }
            // A short receive: the next read waits in the ring without trying first.
            stream.record.readDrained = Int(result) < room
            return try take(bytes)
        } catch { throw .socket(error) }
    }

    /// The readiness driver's copying read, counted as a fallback. Failed (a task cancelled before
    /// its wait was installed, which registers nothing), it forgets the hint this driver's try set:
    /// no readiness event would clear it (review: the seed-72017 case reached by cancellation).
    @inline(never)
    nonisolated(nonsending) private func readinessCopying<T>(_ id: UInt64, maximum: Int, deadline: Int64?, on loop: LoopState,
                                                             _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        fallbacks += 1
        do {
            return try await readiness.readCopying(id, maximum: maximum, deadline: deadline, on: loop, take)
        } catch {
            Self.unwatched(id, loop: loop)
            throw error
        }
    }

    /// A provided buffer came back full and the caller asked for more: as one recv(2) of `maximum`
    /// would (the readiness driver's read), what else is there now is read after it, in the loop's
    /// scratch buffer, and `take` gets both at once.
    @inline(never)
    private static func topUp<T>(_ first: UnsafeRawBufferPointer, stream: StreamResource, socket: StreamSocket, maximum: Int, loop: LoopState,
                                 _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(SocketError) -> T {
        // The bytes are out of the kernel already: without memory for more, they are the read (a
        // short one), not an error that would lose them (review: the scratch buffer is allocated
        // again after a read that took it over).
        guard let scratch = try? loop.readScratch(for: maximum) else {
            stream.record.readDrained = false
            return try take(first)
        }
        let room = Swift.min(maximum, scratch.count)
        scratch.copyMemory(from: first)
        var count = first.count
        // Only what is queued: an error (a reset) or the end of the stream is left for the next read,
        // which meets it as the readiness driver's would. (A recv(2) past the queued bytes would take
        // a pending ECONNRESET and clear it, and the next read would see an end of stream.)
        let more = Swift.min(room - count, socket.bytesQueued)
        if more > 0, case .transferred(let n)? = try? socket.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[count..<count + more])) {
            count += n
        }
        stream.record.readDrained = count < room
        return try take(UnsafeRawBufferPointer(rebasing: scratch[..<count]))
    }

    nonisolated(nonsending) func write(_ id: UInt64, _ buffer: UnsafeRawBufferPointer, deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError) {
        var (stream, socket) = try loop.stream(id)
        if stream.record.write.isWaiting { throw .busy }
        var offset = 0
        // First the system call itself, as long as each send takes all it is given: a send rarely
        // blocks, and then no suspension (at most `LoopState.sendLimit` bytes per send, here and in
        // the ring, whose send runs in the loop's io_uring_enter; the job's budget spent, the next
        // poller pass and on, as on the readiness path). A short send: the rest through the ring.
        while offset < buffer.count {
            let end = Swift.min(buffer.count, offset &+ LoopState.sendLimit)
            let result: IOResult
            do { result = try socket.write(UnsafeRawBufferPointer(rebasing: buffer[offset..<end])) } catch { throw .socket(error) }
            guard case .transferred(let n) = result, n > 0 else { break }
            offset += n
            if offset < end { break }
            if loop.chargeSend(n, more: offset < buffer.count) {
                try await loop.yieldInWrite(deadline: deadline, start)
                (stream, socket) = try loop.stream(id)
            }
        }
        while offset < buffer.count {
            let op = CompletionOperation()
            let fd = socket.fd
            let rest = UnsafeRawBufferPointer(rebasing: buffer[offset..<Swift.min(buffer.count, offset &+ LoopState.sendLimit)])
            do {
                try await run(op, stream, .write, deadline: deadline, on: loop) { (ring, tag) throws(PollerError) in
                    try ring.send(fd, rest, tag: tag)
                }
            } catch {
                guard Self.submissionShortage(error) else { throw error }
                fallbacks += 1
                let left = UnsafeRawBufferPointer(rebasing: buffer[offset...])
                return try await readiness.write(id, left, deadline: deadline, start: start, on: loop)
            }
            // Bytes the kernel sent count whatever became of the wait meanwhile (a deadline, a
            // cancellation, a `shutdown(.write)` that ended it with EPIPE while its completion was on
            // its way, a close): a write whose every byte went out succeeds, as on the readiness path,
            // where such a write has returned before any of them could happen (outside reader, tokio
            // tcp_shutdown: EPIPE for a write the peer received whole).
            if op.result > 0 { offset += Int(op.result) }
            if offset == buffer.count { return }
            // Bytes left, and the socket closed (or the loop stopped) after the send completed, before
            // this task ran: `.closed` (`.shutdown`), as the readiness driver's woken writer finds.
            if Self.keeps(op.failure) { (stream, socket) = try loop.stream(id) }
            if let failure = op.failure, !Self.tookConnectionFailure(op) { throw failure }
            if op.result < 0 {
                // EAGAIN and the like: the readiness driver writes the rest (no resubmission loop).
                let left = UnsafeRawBufferPointer(rebasing: buffer[offset...])
                return try await retryOrFail(op.result, operation: "send") { () async throws(LoopError) in
                    try await readiness.write(id, left, deadline: deadline, start: start, on: loop)
                }
            }
            // As every retry loop does before it waits again: a peer that keeps taking a little at a
            // time cannot keep the write going past its deadline.
            if loop.expired(deadline) { throw .timedOut }
            (stream, socket) = try loop.stream(id)
        }
    }

    nonisolated(nonsending) func write(_ id: UInt64, vectored buffers: [UnsafeRawBufferPointer], deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError) {
        var (stream, socket) = try loop.stream(id)
        if stream.record.write.isWaiting { throw .busy }
        var remaining = RemainingBuffers(buffers: buffers)
        // As the readiness driver does: sendmsg until it would block (one call takes at most IOV_MAX
        // buffers and 1 MiB), so a write that need not wait completes without the ring, even in a
        // cancelled task; the job's budget spent, the next poller pass, then on.
        while !remaining.isEmpty {
            let view = remaining.limited(to: LoopState.sendLimit)
            let result: IOResult
            do { result = try socket.write(vectored: view) } catch { throw .socket(error) }
            guard case .transferred(let n) = result, n > 0 else { break }
            remaining.advance(by: n)
            // A short send: the socket is full, the rest through the ring (as the raw form does).
            if n < view.reduce(0, { $0 + $1.count }) { break }
            if loop.chargeSend(n, more: !remaining.isEmpty) {
                try await loop.yieldInWrite(deadline: deadline, start)
                (stream, socket) = try loop.stream(id)
            }
        }
        while !remaining.isEmpty {
            let op = CompletionOperation()
            let fd = socket.fd
            let message = Self.message(for: remaining.limited(to: LoopState.sendLimit))
            op.message = message
            do {
                try await run(op, stream, .write, deadline: deadline, on: loop) { (ring, tag) throws(PollerError) in
                    try ring.sendMessage(fd, message, tag: tag)
                }
            } catch {
                guard Self.submissionShortage(error) else { throw error }
                fallbacks += 1
                return try await readiness.write(id, vectored: Array(remaining), deadline: deadline, start: start, on: loop)
            }
            if op.result > 0 { remaining.advance(by: Int(op.result)) }   // counted whatever the wait's end: as above
            if remaining.isEmpty { return }   // every byte went out, whatever became of the wait
            if Self.keeps(op.failure) { (stream, socket) = try loop.stream(id) }   // closed since: as above
            if let failure = op.failure, !Self.tookConnectionFailure(op) { throw failure }
            if op.result < 0 {
                let rest = Array(remaining)
                return try await retryOrFail(op.result, operation: "sendmsg") { () async throws(LoopError) in
                    try await readiness.write(id, vectored: rest, deadline: deadline, start: start, on: loop)
                }
            }
            if loop.expired(deadline) { throw .timedOut }
            (stream, socket) = try loop.stream(id)
        }
    }

    /// A `msghdr` naming the remaining buffers (at most IOV_MAX of them), allocated for the operation.
    private static func message(for remaining: RemainingBuffers) -> UnsafeMutablePointer<msghdr> {
        let count = Swift.min(remaining.count, StreamSocket.maximumVectoredBuffers)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: Swift.max(count, 1))
        var index = 0
        for buffer in remaining {
            if index == count { break }
            iov[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
            index += 1
        }
        let message = UnsafeMutablePointer<msghdr>.allocate(capacity: 1)
        message.initialize(to: msghdr())
        message.pointee.msg_iov = iov
        message.pointee.msg_iovlen = count
        return message
    }

    /// A connection from the listener's queue, which its multishot accept fills (armed by the first
    /// `accept` that finds the queue empty, and kept armed): a connection accepted while no task waited
    /// is handed out without a system call to the kernel's queue. Not on a Unix-domain listener: a
    /// connection taken from the kernel by the ring, for an accept given up since or a listener
    /// closed meanwhile, could not be reset (SO_LINGER does nothing there, its client would read end
    /// of stream), so a Unix listener accepts as the readiness driver does: accept(2) in the task that
    /// returns the connection, which otherwise stays in the kernel's queue, which resets it.
    nonisolated(nonsending) func accept(_ id: UInt64, deadline: Int64?, on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress) {
        if try loop.listener(id).listener.address.family == .unix { return try await readinessAccept(id, deadline: deadline, on: loop) }
        if multishotAcceptRefused { return try await acceptOnce(id, deadline: deadline, on: loop) }
        while true {
            let listener = try loop.listener(id)
            if listener.record.read.isWaiting { throw .busy }
            // A listener out of descriptors backs off as the readiness driver does it; a cancelled task
            // still takes a connection that is there.
            if listener.isBackingOff || (Task.isCancelled && listener.acceptQueue.isEmpty) {
                return try await readinessAccept(id, deadline: deadline, on: loop)
            }
            try loop.checkRoom()
            if !listener.acceptQueue.isEmpty {
                let fd = listener.acceptQueue.removeFirst()
                listener.listener.noteAccepted()   // (review: the back-off stayed at its last delay)
                let socket = StreamSocket(owning: fd)
                // The peer, asked now, as accept(2) reports it: a connection its client reset while it
                // waited is still handed out (its reads and writes then fail with `reset`). Never
                // dropped: where the kernel will not say (a security module refusing the question),
                // the connection comes without a peer (`AsyncSocket.peer` nil), as accept(2) gives it.
                let peer = (try? SocketAddress.acceptedPeer(of: fd)) ?? SocketAddress()
                do throws(LoopError) { return (try loop.adopt(socket), peer) } catch {
                    socket.close()
                    throw error
                }
            }
            if listener.acceptFailure != nil {
                // The error that ended the multishot accept (out of descriptors, ...): the readiness
                // driver's accept meets it again and reports or backs off as it always does.
                listener.acceptFailure = nil
                return try await readinessAccept(id, deadline: deadline, on: loop)
            }
            if listener.multishot == nil {
                do { try armMultishotAccept(listener) } catch {
                    // The ring could not take it for now: this accept as the readiness driver makes it.
                    if Self.submissionShortage(error) { return try await readinessAccept(id, deadline: deadline, on: loop) }
                    throw error
                }
            }
            if case .failed(let error) = await loop.wait(listener, .read, deadline: deadline, interest: false) { throw error }
        }
    }

    @inline(never)
    nonisolated(nonsending) private func readinessAccept(_ id: UInt64, deadline: Int64?,
                                                         on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress) {
        fallbacks += 1
        return try await readiness.accept(id, deadline: deadline, on: loop)
    }

    /// One accept submitted per call (a kernel without multishot accept).
    nonisolated(nonsending) private func acceptOnce(_ id: UInt64, deadline: Int64?, on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress) {
        while true {
            let listener = try loop.listener(id)
            if listener.record.read.isWaiting { throw .busy }
            // A cancelled task still takes a queued connection; a listener out of descriptors backs off
            // (both as the readiness driver does them).
            if Task.isCancelled || listener.isBackingOff {
                fallbacks += 1
                return try await readiness.accept(id, deadline: deadline, on: loop)
            }
            try loop.checkRoom()
            let op = CompletionOperation()
            let fd = listener.listener.fd
            try await run(op, listener, .read, deadline: deadline, on: loop) { (ring, tag) throws(PollerError) in
                try ring.accept(fd, tag: tag, multishot: false)
            }
            let result = op.result
            if result >= 0 {
                // A connection the ring took that no accept will return is reset (SO_LINGER 0), as the
                // kernel resets the connections left in a closed listener's queue: its client must not
                // read an end of stream as if a server had accepted it and hung up.
                if !Self.keeps(op.failure) {
                    ListenerResource.reset(result)
                    throw op.failure!
                }
                // Given up (its deadline, a cancel) and the listener closed since: the close found no
                // operation to fail, so the late connection is not handed out from a closed listener.
                guard loop.slab.contains(listener) else {
                    ListenerResource.reset(result)
                    throw op.failure ?? (loop.isShutDown ? .shutdown : .closed)
                }
                listener.listener.noteAccepted()
                let socket = StreamSocket(owning: result)
                // The peer, asked now, as accept(2) reports it (a connection reset while it waited
                // included; none where the kernel will not say, as above).
                let peer = (try? SocketAddress.acceptedPeer(of: result)) ?? SocketAddress()
                do throws(LoopError) { return (try loop.adopt(socket), peer) } catch {
                    socket.close()
                    throw error
                }
            }
            if let failure = op.failure { throw failure }
            if -result == ECANCELED { throw .cancelled }
            // Any other error (out of descriptors, a client that went away, EAGAIN): the readiness
            // driver's accept, which retries, backs off or reports it as it always does.
            fallbacks += 1
            return try await readiness.accept(id, deadline: deadline, on: loop)
        }
    }

    nonisolated(nonsending) func connect(to address: SocketAddress, from local: SocketAddress?, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress?) {
        try await readiness.connect(to: address, from: local, deadline: deadline, on: loop)
    }

    nonisolated(nonsending) func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                                         options: HappyEyeballs.Options, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        try await readiness.connect(addresses: addresses, resolution: resolution, options: options, deadline: deadline, on: loop)
    }

    nonisolated(nonsending) func datagram<R>(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                             on loop: LoopState,
                                             _ attempt: (DatagramSocket) throws(SocketError) -> R?) async throws(LoopError) -> R {
        try await readiness.datagram(id, direction, deadline: deadline, waitFirst: waitFirst, on: loop, attempt)
    }
}
