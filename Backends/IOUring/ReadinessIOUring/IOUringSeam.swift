#if canImport(Glibc)
import Glibc
#endif
import CIOUring
@_spi(Backend) import ReadinessCore

/// The io_uring poller (`IOUringSeam.makePoller()`): its `Poller` conformance is compiled here, for this
/// seam, so calls through `any Poller` run specialised code (``/ReadinessCore/SpecializedPoller``).
@_spi(Backend)
public final class IOUringPoller: SpecializedPoller {
    /// The poller every call goes to.
    public let base: ContractPoller<IOUringSeam>
    /// Wraps `base` (see ``/ReadinessCore/SpecializedPoller/make(_:)``).
    public init(base: ContractPoller<IOUringSeam>) { self.base = base }
}

/// Linux io_uring used for readiness: `IORING_OP_POLL_ADD` requests on the registered descriptors,
/// submitted in batches with the wait (one `io_uring_enter` submits the changes and waits with a
/// timeout), completions drained into the caller's buffer. Raw system calls through a small C shim
/// (`CIOUring`), so users need no liburing.
///
/// - level: a multishot poll (kept armed); a registration it reported is looked at again by the next
///   wait, as epoll's level mode puts a reported item back on its ready list. On a kernel without
///   multishot poll: a one-shot poll re-armed by the next wait (whose arm looks at the descriptor at once);
/// - one-shot: a multishot poll, cancelled once the registration fires, a fresh one armed by
///   `reregister` (a single-shot poll would complete at every arming on a socket whose receiving side
///   is shut down: the kernel adds POLLRDHUP to every poll's mask); a one-shot poll on a kernel without
///   multishot poll;
/// - edge: a multishot poll (a completion per wake-up of the file, as EPOLLET), where the kernel has it.
///
/// Every poll request carries `user_data = armID << 32 | fd`, where `armID` is unique per request this
/// seam made (finer than the registration's generation: it also changes on re-arm and reregister). A
/// completion whose pair is not the descriptor's current request belongs to a registration that was
/// removed or changed, or to a file that is gone, and is dropped. A removed registration's request is
/// cancelled with `IORING_OP_ASYNC_CANCEL`, submitted at once: a poll request holds a reference to its
/// file, so until then a closed descriptor's file lives on (as through a dup).
@_spi(Backend)
public final class IOUringSeam: BackendSeam {
    /// What this backend can do (edge only with multishot poll).
    public let capabilities: Capabilities
    var ring: OpaquePointer
    private let waker: Waker
    /// What the kernel offers, for the selection report.
    public let kernelFacts: String
    /// ``/ReadinessCore/Sys/forkGeneration`` when the ring was made (``owned(_:_:)``).
    let forkGeneration = Sys.forkGeneration

    /// Per descriptor number: the current poll request and the wait bookkeeping.
    private struct Slot {
        /// The armID of the descriptor's current request (0: none).
        var armID: UInt32 = 0
        /// Where its POLL_ADD was queued: while the kernel has not taken it, cancelling is unqueueing.
        var position: UInt32 = 0
        /// What the request asks for, to make it again on a new ring.
        var mask: UInt32 = 0
        var multishot = false
        /// A request is in the kernel (its completion without IORING_CQE_F_MORE has not been seen).
        var inFlight = false
        /// Its request completed and it must be watched: the next wait submits a new one.
        var rearmQueued = false
        /// Level-triggered and reported by the last wait, its multishot request still armed: the
        /// next wait looks at it again (as epoll puts a reported level item back on its ready list).
        var carried = false
        /// A completion of the current request is kept in `pending`, to be looked at again.
        var isPending = false
    }
    private var slots: [Slot] = []
    private var nextArm: UInt32 = 1
    /// armIDs stay below this, so a poll's `user_data` never has ``operationBit`` or ``operationCancelBit``.
    private static let armIDLimit: UInt32 = 1 << 31
    /// Descriptors to re-arm at the next wait (capacity reserved at registration).
    private var rearm: [CInt] = []
    /// Level registrations reported by the last wait, looked at again by the next one.
    private var carry: [CInt] = []
    /// Level registrations use a multishot request (kept armed, no re-arm per event) where the kernel
    /// has multishot poll; otherwise a one-shot request re-armed by the wait after each report.
    private let levelMultishot: Bool
    /// Descriptors whose request completed, in arrival order, not yet reported (capacity reserved at
    /// registration).
    private var pending: [CInt] = []
    /// poll(2) entries to look at `pending` again before reporting it.
    private var recheck: UnsafeMutablePointer<pollfd>
    private var recheckCapacity = 16
    private var wakerInFlight = false
    private var registered = 0
    private(set) var ringClosed = false
    /// A cancel is queued and not yet submitted (a reregister's): a deregister submits it at once,
    /// whether or not it queues one of its own.
    private var cancelQueued = false
    /// The requests whose cancels `disarm` queued since the last wait (a reregister's, a
    /// deregister's; the wait consumes their completions): a deregister waits for those of its
    /// descriptor to end (``awaitCancelled(_:)``).
    private var cancelTargets: [UInt64] = []
    /// The most a deregister waits for its descriptor's cancelled requests to end (they end in
    /// microseconds; the bound is for a kernel that behaves otherwise).
    private static let cancelAwaitBudget: Int64 = 50_000_000
    /// Operation completions reaped by the waits, not yet taken (``CompletionRing``; IOUringCompletions.swift).
    var operationCompletions: [OperationCompletion] = []
    /// The provided-buffer ring, registered by the first receive that asks for one (on the loop thread,
    /// which owns the ring); `buffersRefused`: the kernel said no (no IORING_REGISTER_PBUF_RING).
    var providedBuffers: OpaquePointer?
    var buffersRefused = false
    /// A registration that failed for want of resources (ENOMEM: the user's RLIMIT_MEMLOCK, shared by
    /// all its rings) is tried again no sooner than this (monotonic nanoseconds; 0: none failed); till
    /// then receives take the readiness path, as where the kernel has no provided buffers.
    var buffersRetryAt: Int64 = 0
    /// The provided buffers' layout once registered: incremental (a few large buffers, each filled a
    /// receive at a time) or not (many small ones, one receive each).
    var bufferLayout = ProvidedBufferLayout.small
    /// Per provided buffer: how far the kernel has filled it, how many completions named it and were
    /// not given back yet, and whether the kernel is done with it.
    var bufferFill: [Int] = []
    var bufferParts: [Int] = []
    var bufferDone: [Bool] = []
    /// Operations submitted and not yet completed (their completion without IORING_CQE_F_MORE).
    var operationsInFlight = 0

    /// Tags in the low word's top bit (a descriptor is never negative): the waker's poll, unqueued
    /// requests (NOPs), both with armID 0, and cancel requests, whose `user_data` is their
    /// target's with this bit set (an armID is never 0), so a cancel that came too early (EALREADY:
    /// the request was completing) is sent again.
    ///
    /// The two top bits of `user_data` are the completion operations' (``CompletionRing``): an armID
    /// stays below 2^31, so a poll request never has them.
    static let controlBit: UInt64 = 1 << 31
    /// An operation of the completion driver: `user_data` is this bit and the operation's tag.
    static let operationBit: UInt64 = 1 << 63
    /// An operation's cancel request: its completion is dropped (the operation's own follows).
    static let operationCancelBit: UInt64 = 1 << 62
    private static let wakerData: UInt64 = controlBit | 1
    private static let nopData: UInt64 = controlBit | 2
    /// Ring sizes: submissions are flushed when the queue is full; completions beyond the completion
    /// ring wait in the kernel (IORING_FEAT_NODROP) until the next drain.
    private static let submissionEntries: UInt32 = 256
    private static let completionEntries: UInt32 = 4096

    /// Kernel features the seam uses where the kernel has them; leaving some out runs the paths taken on
    /// older kernels (the tests run the whole suite on each).
    public struct Features: OptionSet, Sendable {
        /// The feature bits.
        public let rawValue: Int
        /// Features from their bits.
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// Multishot poll (5.13): edge triggering, and level requests that stay armed.
        public static let multishot = Features(rawValue: 1)
        /// IORING_SETUP_DEFER_TASKRUN (6.1): completions run inside our own io_uring_enter.
        public static let deferredCompletions = Features(rawValue: 2)
        /// Provided-buffer rings (5.19) for the completion driver's copying reads.
        public static let providedBuffers = Features(rawValue: 4)
        /// Provided buffers consumed a receive at a time (IOU_PBUF_RING_INC, 6.12).
        public static let incrementalBuffers = Features(rawValue: 8)
        /// Every feature the kernel may offer.
        public static let all: Features = [.multishot, .deferredCompletions, .providedBuffers, .incrementalBuffers]
    }
    /// The features this seam uses.
    public let features: Features

    /// Sets up a ring watching `waker`, using at most the `allowed` features (tests force older paths).
    public init(waker: Waker, allowing allowed: Features = .all) throws(PollerError) {
        var made: OpaquePointer?
        var message = [CChar](repeating: 0, count: 256)
        let deferred: CInt = allowed.contains(.deferredCompletions) ? 1 : 0
        let status = message.withUnsafeMutableBufferPointer {
            rd_uring_open(&made, Self.submissionEntries, Self.completionEntries, deferred, $0.baseAddress, CInt($0.count))
        }
        guard status == 0, let made else { throw Self.openFailure(status: status, message: message) }
        ring = made
        self.waker = waker
        recheck = .allocate(capacity: recheckCapacity)
        let multishot = allowed.contains(.multishot) && rd_uring_has_multishot(made) != 0
        levelMultishot = multishot
        var used: Features = multishot ? .multishot : []
        if rd_uring_defers_completions(made) != 0 { used.insert(.deferredCompletions) }
        // Registered on first use; the kernel may still refuse them then (`completionFeatures`).
        used.formUnion(allowed.intersection([.providedBuffers, .incrementalBuffers]))
        buffersRefused = !allowed.contains(.providedBuffers)
        features = used
        kernelFacts = Self.describe(features: rd_uring_features(made), flags: rd_uring_setup_flags(made), multishot: multishot)
        capabilities = Capabilities(
            name: "io_uring", mechanism: "io_uring", edgeTriggered: multishot, oneShot: .native,
            timeoutResolution: .nanoseconds(1), maxDescriptor: CInt.max,
            reportsReadClosed: true, reportsHangupAndError: true, closeReleasesFile: false)
        try armWaker()
    }

    deinit {
        close()
        recheck.deallocate()
    }

    /// Creates an io_uring poller; `allowing` fewer features takes the paths of older kernels.
    public static func makePoller(allowing allowed: Features = .all) throws(PollerError) -> IOUringPoller {
        try IOUringPoller.make { waker throws(PollerError) in try IOUringSeam(waker: waker, allowing: allowed) }
    }

    /// The error for a failed `rd_uring_open`: out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM, from io_uring_setup or a mapping) is ``PollerError/resourceExhausted(operation:errno:)``,
    /// as for every backend; a kernel without io_uring, or refusing it, or lacking a feature, is
    /// ``PollerError/unavailable(backend:reason:)``.
    static func openFailure(status: CInt, message: [CChar]) -> PollerError {
        let code = -status
        let what = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if code == ENOTSUP, !what.isEmpty { return .unavailable(backend: "io_uring", reason: what) }
        let operation = what.isEmpty ? "io_uring_setup" : what
        if ErrnoTable.category(of: code) == .resourceExhausted { return .failed(operation, errno: code) }
        if what.isEmpty { return .unavailable(backend: "io_uring", reason: setupFailure(errno: code, disabled: rd_uring_disabled_setting())) }
        return .unavailable(backend: "io_uring", reason: "\(operation) failed with \(ErrnoTable.name(code)): \(ErrnoTable.message(code))")
    }

    /// Why io_uring_setup failed, in the kernel's terms. `disabled` is /proc/sys/kernel/io_uring_disabled
    /// (-1 when the kernel has no such setting).
    public static func setupFailure(errno code: CInt, disabled: CInt) -> String {
        let call = "io_uring_setup failed with \(code == ENOSYS ? "ENOSYS" : ErrnoTable.name(code))"
        switch code {
        case ENOSYS: return "\(call): the kernel has no io_uring (CONFIG_IO_URING off, or older than 5.1)"
        case EPERM where disabled == 2: return "\(call): /proc/sys/kernel/io_uring_disabled is 2 (io_uring disabled for everyone)"
        case EPERM where disabled == 1: return "\(call): /proc/sys/kernel/io_uring_disabled is 1 (only the io_uring_group may use it)"
        case EPERM: return "\(call): refused by a seccomp filter or a security module (io_uring_disabled is \(disabled))"
        default: return "\(call): \(ErrnoTable.message(code))"
        }
    }

    /// The kernel's io_uring, as the selection report prints it: what a ring offers here, or why none
    /// can be made.
    public static func kernelFacts() -> String {
        var made: OpaquePointer?
        var message = [CChar](repeating: 0, count: 256)
        let status = message.withUnsafeMutableBufferPointer {
            rd_uring_open(&made, 8, 16, 1, $0.baseAddress, CInt($0.count))
        }
        guard status == 0, let made else {
            // Why there is no ring is the backend's unavailability reason; here only the setting.
            let disabled = rd_uring_disabled_setting()
            return disabled < 0 ? "no ring; no io_uring_disabled sysctl" : "no ring; io_uring_disabled=\(disabled)"
        }
        defer { rd_uring_close(made) }
        return describe(features: rd_uring_features(made), flags: rd_uring_setup_flags(made), multishot: rd_uring_has_multishot(made) != 0)
    }

    static func describe(features: UInt32, flags: UInt32, multishot: Bool) -> String {
        let disabled = rd_uring_disabled_setting()
        var facts = ["io_uring features 0x\(String(features, radix: 16))", "setup flags 0x\(String(flags, radix: 16))"]
        facts.append(multishot ? "multishot poll" : "no multishot poll (edge refused)")
        facts.append(disabled < 0 ? "no io_uring_disabled sysctl" : "io_uring_disabled=\(disabled)")
        return facts.joined(separator: ", ")
    }

    // MARK: Requests

    @inline(__always)
    private static func data(_ fd: CInt, _ armID: UInt32) -> UInt64 {
        UInt64(armID) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    @inline(__always)
    private static func mask(_ r: Registration) -> UInt32 {
        var bits: UInt32 = 0
        if r.interest.contains(.readable) { bits |= rd_uring_POLLIN | rd_uring_POLLRDHUP }
        if r.interest.contains(.writable) { bits |= rd_uring_POLLOUT }
        return bits
    }

    private func check(_ status: CInt, _ operation: String) throws(PollerError) {
        // EAGAIN from a submit: no request could be allocated now (io_uring_enter(2)), a shortage
        // that passes, as in the wait (review: it was a `.system` failure and ended the loop).
        if status == -EAGAIN { throw .resourceExhausted(operation: operation, errno: EAGAIN) }
        if status < 0 { throw .failed(operation, errno: -status) }
    }

    /// Runs a ring call; if it fails with EEXIST (a ring with deferred completions has one submitting
    /// thread, and this is another), moves to a new ring owned by this thread and runs it again. In a
    /// child made by `fork()` none runs (``PollerError/forked``): the submission queue is memory the
    /// child shares with the parent, whose next submit would take a child's request as its own (the
    /// poller's own calls are refused before they get here; the completion calls are refused here).
    func owned(_ operation: String, _ call: () -> CInt) throws(PollerError) {
        if Sys.forkGeneration != forkGeneration { throw .forked }
        // A closed ring's memory is unmapped and its handle freed: a completion call after `close()`
        // fails as every poller call does then (it read freed memory before).
        if ringClosed { throw .closed }
        var status = call()
        if status == -EEXIST {
            try moveToNewRing()
            status = call()
        }
        try check(status, operation)
    }

    /// A poller used from one thread at a time may still change threads: the new thread gets a new
    /// ring, with a request for the waker and for every registration that had one (its file is
    /// looked at afresh, so a ready edge registration may report once more). The old ring's
    /// requests are cancelled by closing it.
    private func moveToNewRing() throws(PollerError) {
        // Completion operations are not carried over (the async loop uses its ring from one thread, so
        // it never moves); the provided buffers go with the old ring.
        freeProvidedBuffers()
        var made: OpaquePointer?
        var message = [CChar](repeating: 0, count: 256)
        let status = message.withUnsafeMutableBufferPointer {
            rd_uring_open(&made, Self.submissionEntries, Self.completionEntries,
                          features.contains(.deferredCompletions) ? 1 : 0, $0.baseAddress, CInt($0.count))
        }
        guard status == 0, let made else {
            let error = Self.openFailure(status: status, message: message)
            if case .unavailable = error { throw .system(operation: "io_uring_setup", errno: -status) }
            throw error
        }
        rd_uring_close(ring)
        ring = made
        cancelTargets.removeAll(keepingCapacity: true)   // the old ring's, cancelled by its close
        // Every request goes again on the new ring. All are marked as not in flight first (their
        // queue positions were the old ring's), so that a failure part way (the waker's, or a full
        // submission queue the kernel would not take) leaves the rest queued for the next wait's
        // re-arm: before, the ones after the failure stayed "in flight" with no request anywhere
        // (silent for good), and a deregister unqueued an old-ring position on the new ring.
        var again: [CInt] = []
        for i in slots.indices where slots[i].inFlight {
            slots[i].inFlight = false
            slots[i].position = 0
            again.append(CInt(i))
        }
        wakerInFlight = false
        for (n, fd) in again.enumerated() {
            do {
                if n == 0 { try armWaker() }
                try queueAdd(fd, mask: slots[Int(fd)].mask, multishot: slots[Int(fd)].multishot)
            } catch {
                for rest in again[n...] { queueRearm(rest) }
                throw error
            }
        }
        if again.isEmpty { try armWaker() }
    }

    private func armWaker() throws(PollerError) {
        var position: UInt32 = 0
        // Nothing when armed already: a full queue's submit that found another thread (EEXIST) moves
        // to a new ring, which arms the waker, and then `owned` runs this again (two polls: two
        // waker events for one wake-up).
        try owned("io_uring_enter(waker)") {
            wakerInFlight ? 0 : rd_uring_poll_add(ring, waker.fd, rd_uring_POLLIN, Self.wakerData, 0, &position)
        }
        wakerInFlight = true
    }

    /// Queues a fresh poll request for `fd` as `r` asks (submitted by the next wait). Multishot wherever
    /// the kernel has it, one-shot registrations included: io_uring adds POLLRDHUP (with POLLERR and
    /// POLLHUP) to every poll's mask, so a single-shot request for writable on a socket whose
    /// receiving side is shut down completes as it is armed, every time; the re-check finding no room
    /// armed it again, and the wait spun (outside reader, mio tcp_stream's shutdown_read: a core
    /// busy for the whole wait). A multishot request stays in the kernel instead, and completes only
    /// when the file wakes it; a one-shot registration's is cancelled once it fires (below). Without
    /// multishot poll (before Linux 5.13) that spin is still there (Docs/Contract.md, io_uring).
    private func arm(_ fd: CInt, _ r: Registration) throws(PollerError) {
        let multishot = r.trigger == .edge || levelMultishot
        try queueAdd(fd, mask: Self.mask(r), multishot: multishot)
    }

    /// Queues a POLL_ADD under a new armID and records it in the descriptor's slot.
    private func queueAdd(_ fd: CInt, mask: UInt32, multishot: Bool) throws(PollerError) {
        let armID = nextArm
        nextArm &+= 1
        if nextArm >= Self.armIDLimit { nextArm = 1 }
        var position: UInt32 = 0
        try owned("io_uring_enter(POLL_ADD)") {
            rd_uring_poll_add(ring, fd, mask, Self.data(fd, armID), multishot ? 1 : 0, &position)
        }
        slots[Int(fd)].armID = armID
        slots[Int(fd)].position = position
        slots[Int(fd)].mask = mask
        slots[Int(fd)].multishot = multishot
        slots[Int(fd)].inFlight = true
    }

    /// Cancels `fd`'s request, if it has one, and forgets everything kept for it. Returns true when a
    /// cancel was queued (the request had been submitted), false when there was nothing to
    /// cancel or the request was still queued here (it becomes a NOP, and the file was never held).
    @discardableResult
    private func disarm(_ fd: CInt) throws(PollerError) -> Bool {
        let slot = slots[Int(fd)]
        if slot.isPending, let at = pending.firstIndex(of: fd) { pending.remove(at: at) }
        // Forgotten before any ring call: if that call moves to a new ring, the request is not made
        // again there (and the old ring, closed, cancels it).
        slots[Int(fd)] = Slot()
        guard slot.inFlight, rd_uring_unqueue(ring, slot.position, Self.nopData) == 0 else { return false }
        let before = ring
        do {
            try cancel(Self.data(fd, slot.armID))
            // (A cancel queued after a move to a new ring has nothing there to wait for.)
            if ring == before { cancelTargets.append(Self.data(fd, slot.armID)) }
        } catch {
            // Not cancelled, and still on the same ring: the request is still there, so it is kept
            // (a failed reregister or deregister changes nothing; forgetting it lost the
            // registration's events, and a retried deregister left the file held).
            if ring == before {
                slots[Int(fd)] = slot
                if slot.isPending { pending.append(fd) }
            }
            throw error
        }
        return true
    }

    /// Queues the cancel of the request tagged `target`. An ASYNC_CANCEL, not a POLL_REMOVE: the kernel
    /// marks the poll cancelled even while a wake-up holds it, where a POLL_REMOVE then fails with
    /// EALREADY and the request (and its file) stays until a later wait sends the cancel again.
    private func cancel(_ target: UInt64) throws(PollerError) {
        try owned("io_uring_enter(ASYNC_CANCEL)") { rd_uring_prep_cancel(ring, target, target | Self.controlBit) }
        cancelQueued = true
    }

    // MARK: BackendSeam

    /// Queues a poll request for `fd`, submitted with the next wait.
    public func add(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        if Int(fd) >= slots.count {
            slots.append(contentsOf: repeatElement(Slot(), count: max(Int(fd) + 1, slots.count * 2) - slots.count))
        }
        registered += 1
        rearm.reserveCapacity(registered + 1)
        carry.reserveCapacity(registered + 1)
        pending.reserveCapacity(registered + 1)
        cancelTargets.reserveCapacity(registered + 1)
        if registered > recheckCapacity {
            recheck.deallocate()
            recheckCapacity = max(registered, recheckCapacity * 2)
            recheck = .allocate(capacity: recheckCapacity)
        }
        slots[Int(fd)] = Slot()
        do {
            try arm(fd, registration)
        } catch {
            registered -= 1
            throw error
        }
    }

    /// Replaces `fd`'s request: a cancel and a new request, queued for the next wait.
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        try disarm(fd)
        guard new.isActive else { return }
        do {
            try arm(fd, new)
        } catch {
            // The old request is cancelled: one for the old registration again, so that the failed
            // call leaves it reporting as before (if even that fails, it stays silent until it is
            // reregistered).
            if old.isActive { try? arm(fd, old) }
            throw error
        }
    }

    /// Cancels `fd`'s request at once, so its file is released.
    public func remove(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        let cancelled = try disarm(fd)
        // Submitted now: the request holds the file, which must not outlive the registration (a
        // descriptor deregistered then closed must look closed to its peer at once).
        if cancelled || cancelQueued {
            // A cancel queued by an earlier reregister is submitted too: the request it cancels holds
            // the file as much as this one would (reregister then deregister before a wait).
            do {
                try owned("io_uring_enter(ASYNC_CANCEL)") { rd_uring_submit(ring) }
                cancelQueued = false
                awaitCancelled(fd)
            } catch {
                // The kernel took nothing (EAGAIN, EBUSY: no memory, a full completion queue): the
                // cancel stays queued and the next wait submits it, so the file is let go then. The
                // deregister still succeeds: its request is already disarmed here (the slot is
                // forgotten), and a failure would have left the table calling the descriptor
                // registered while nothing would ever report it (a registration made silent).
            }
        }
        registered -= 1
    }

    /// Waits until each of `fd`'s requests cancelled since the last wait has ended (its last
    /// completion posted, not consumed: the next wait reads it), so it has let go of the file. A cancel
    /// only marks a poll that a wake-up on another CPU had claimed; with DEFER_TASKRUN the wake-up
    /// queues the poll's last step to this thread, possibly after the submit has returned, and nothing
    /// ran it before this thread's next wait: a descriptor deregistered then closed stayed open to its
    /// peer until then (test "deregister then close while a peer keeps writing", 1 of 200 under load).
    /// Gives up (as before) when that cannot be known (``rd_uring_await_final``), and after
    /// ``cancelAwaitBudget`` for all of them together.
    private func awaitCancelled(_ fd: CInt) {
        let deadline = MonotonicClock.nowNanoseconds &+ Self.cancelAwaitBudget
        for target in cancelTargets where CInt(bitPattern: UInt32(truncatingIfNeeded: target)) == fd {
            guard rd_uring_await_final(ring, target, target | Self.controlBit, deadline) == 1 else { break }
        }
        cancelTargets.removeAll { CInt(bitPattern: UInt32(truncatingIfNeeded: $0)) == fd }
    }

    /// One `io_uring_enter` (submitting what was queued, waiting up to `timeout`), then the completions, re-checked.
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        // Registrations delivered by the last wait (level), or found not ready after their request
        // had completed, look again: the requests go in with the wait, in the same system call.
        for fd in rearm {
            guard slots[Int(fd)].rearmQueued else { continue }
            // Cleared once armed: a re-arm that fails (the ring call) is tried again by the next wait.
            if let r = table[fd], r.isActive, !slots[Int(fd)].inFlight { try arm(fd, r) }
            slots[Int(fd)].rearmQueued = false
        }
        rearm.removeAll(keepingCapacity: true)
        if !wakerInFlight { try armWaker() }

        // Completions kept from the last wait, or registrations it reported to look at again: only
        // look, do not block.
        var nanoseconds: Int64 = -1
        if case .nanoseconds(let ns) = timeout { nanoseconds = max(0, ns) }
        let block = pending.isEmpty && carry.isEmpty && operationCompletions.isEmpty && nanoseconds != 0
        let hadCancelQueued = cancelQueued
        cancelQueued = false   // submitted by this enter
        var status = rd_uring_enter(ring, block ? 1 : 0, nanoseconds)
        if status == -EEXIST {
            try moveToNewRing()
            status = rd_uring_enter(ring, block ? 1 : 0, nanoseconds)
        }
        // EBUSY (CQ overflow on older kernels) submitted nothing either: the queued cancel stays queued
        // (a needless submit later costs nothing; a lost one keeps a closed socket's file held).
        if status == -EBUSY { cancelQueued = hadCancelQueued }
        if status < 0, status != -ETIME, status != -EINTR, status != -EBUSY {
            // Nothing was submitted: a cancel queued before is still queued (review: a deregister
            // after this failure unqueued the new request and skipped the submit, and the old request
            // kept the closed socket's file).
            cancelQueued = hadCancelQueued
            // EAGAIN: the kernel could not allocate for the request, "wait for some completions and
            // try again" (io_uring_enter(2)): a shortage that passes, as ENOMEM (review: one EAGAIN
            // ended the whole event loop). With deferred completions, finished requests go back to
            // the kernel's cache only when their deferred work runs: the extra batches below run it
            // (and report what it and the completions already posted bring); with neither to do, the
            // caller pauses and tries again (review, twice).
            guard status == -EAGAIN, rd_uring_cq_ready(ring) > 0 || rd_uring_work_pending(ring) != 0 else {
                if status == -EAGAIN { throw .resourceExhausted(operation: "io_uring_enter", errno: EAGAIN) }
                throw .failed("io_uring_enter", errno: -status)
            }
        }
        // Submitted: their completions are read below, so a later deregister does not wait for them.
        if !cancelQueued { cancelTargets.removeAll(keepingCapacity: true) }
        var drained = drainCompletions(&table, events)
        // With deferred completions the kernel runs only a batch of them per io_uring_enter (20 on
        // Linux 6.13 and later, two batches when the enter also submitted) and raises
        // IORING_SQ_TASKRUN for the rest: polls armed on descriptors already ready complete this way,
        // so a wait after many became ready would report only the first batches. While the flag says
        // more are ready and the buffer has room for them, run the next batch (a system call taken
        // only then; the common path, with fewer ready, makes none), until the buffer is full (the
        // contract: a wait fills it) or batches stop bringing new ready registrations. Progress is
        // counted in registrations newly pending, not completions: a descriptor written without pause
        // completes its multishot request at every batch and would otherwise keep the wait going.
        // The cap bounds the batches in any case (a batch runs about 20 completions). The same loop
        // flushes completions that overflowed the queue (more than 4,096 ready at once), on any ring.
        var idleRounds = 0, rounds = 0
        let cap = Self.maxIdleWorkRounds + Self.workRoundsPerBuffer(events.capacity)
        // A drain as large as a batch may have met the kernel's limit with more deferred work left
        // behind it, which the flag does not always say (6.13 and later keep the rest on a retry
        // list): then one more batch is asked for as well (before, 3,000 ready with a buffer of 512
        // were reported 20 a wait once the flag had cleared: 13 waits, epoll 5).
        // (Only on a ring with deferred completions: without them the kernel has no such batch.)
        var lastDrained = rd_uring_defers_completions(ring) != 0 ? drained : 0
        while idleRounds < Self.maxIdleWorkRounds, rounds < cap,
              pending.count < events.capacity - events.count || lastDrained >= Self.deferredBatch,
              rd_uring_work_pending(ring) != 0 || lastDrained >= Self.deferredBatch {
            rounds += 1
            let before = pending.count
            // A failure here ends the extra batches, not the wait: what is left stays in the kernel
            // for the next wait, and what was read is reported now.
            let ran = rd_uring_run_work(ring)
            let batch = drainCompletions(&table, events)
            drained += batch
            lastDrained = rd_uring_defers_completions(ring) != 0 ? batch : 0
            idleRounds = pending.count > before ? 0 : idleRounds + 1
            if ran < 0, ran != -EINTR { break }
        }
        // The level registrations the last wait reported go behind the completions never reported
        // yet, as epoll puts a reported item back at the end of its ready list (before, they went
        // first: 3,000 ready with a buffer of 512 took 13 waits to report each once, epoll 5).
        for fd in carry where slots[Int(fd)].carried {
            slots[Int(fd)].carried = false
            guard !slots[Int(fd)].isPending, table[fd]?.isActive == true else { continue }
            slots[Int(fd)].isPending = true
            pending.append(fd)
        }
        carry.removeAll(keepingCapacity: true)
        if !pending.isEmpty { deliverPending(&table, events) }
        // Operation completions are no registration's event: a wait that reaped only those still
        // returns (a waker event, without reading the eventfd: nobody woke it), so that the loop takes them.
        if events.isEmpty, !operationCompletions.isEmpty { _ = events.append(Event(token: .waker, ready: .readable)) }
        if events.isEmpty, drained == 0, status == -EINTR { return .interrupted }
        return .events(events.count)
    }

    /// Extra batches of deferred completions in a row that made nothing newly ready before a wait
    /// stops running them (each is a system call).
    private static let maxIdleWorkRounds = 2

    /// Completions one batch of deferred work brings at most on recent kernels (20 on Linux 6.13 and
    /// later), with some slack: a drain this large asks for another batch.
    private static let deferredBatch: UInt32 = 16

    /// The most extra batches one wait runs besides the idle ones: enough to fill a buffer of
    /// `capacity` at a few completions per batch.
    private static func workRoundsPerBuffer(_ capacity: Int) -> Int { 64 + capacity / 4 }

    /// Reads every completion in the completion queue. Returns how many there were.
    private func drainCompletions(_ table: inout RegistrationTable, _ events: EventBuffer) -> UInt32 {
        let ready = rd_uring_cq_ready(ring)
        for i in 0..<ready {
            var data: UInt64 = 0
            var result: Int32 = 0
            var flags: UInt32 = 0
            rd_uring_cq_get(ring, i, &data, &result, &flags)
            complete(data, result, flags, &table, events)
        }
        rd_uring_cq_advance(ring, ready)
        return ready
    }

    /// One completion: the waker's (reported), a control request's or a stale one (dropped), or a
    /// registration's, which joins `pending` to be looked at again before it is reported.
    private func complete(_ data: UInt64, _ result: Int32, _ flags: UInt32,
                          _ table: inout RegistrationTable, _ events: EventBuffer) {
        if data & Self.operationBit != 0 {
            completeOperation(data, result, flags)
            return
        }
        if data & Self.controlBit != 0 {
            if data >> 32 != 0 {
                // A cancel's: sent again if its request was completing (the next wait submits it).
                if result == -EALREADY { try? cancel(data & ~Self.controlBit) }
                return
            }
            guard data == Self.wakerData else { return }
            wakerInFlight = false
            // An error (the request cancelled) is no wake-up: the next wait arms the poll again.
            guard result > 0 else { return }
            // With the buffer full the eventfd is left readable: the poll re-armed by the next wait
            // reports it at once.
            guard !events.isFull else { return }
            waker.report(into: events)
            return
        }
        let fd = CInt(bitPattern: UInt32(truncatingIfNeeded: data))
        let i = Int(fd)
        guard i < slots.count, slots[i].armID == UInt32(data >> 32) else { return }
        if flags & rd_uring_CQE_F_MORE == 0 { slots[i].inFlight = false }
        guard let registration = table[fd], registration.isActive else {
            // A fired one-shot whose multishot request is still there (its cancel failed when it
            // fired: a full submission queue refused it), or a registration a wait found closed
            // whose cancel failed then: asked again now (the request would hold the file, and each
            // wake-up of the file would end a wait with nothing to report).
            if slots[i].inFlight { _ = try? disarm(fd) }
            return
        }
        if result < 0 {
            // EBADF: the descriptor was closed before the request was submitted. ECANCELED and the
            // rest: the request ended without an event (a multishot poll the kernel stopped).
            if result == -EBADF {
                table.markStale(fd)
            } else if !slots[i].inFlight {
                queueRearm(fd)
            }
            return
        }
        // A second completion of a multishot (edge) request before the first was reported: one event.
        guard !slots[i].isPending else { return }
        slots[i].isPending = true
        pending.append(fd)
    }

    private func queueRearm(_ fd: CInt) {
        guard !slots[Int(fd)].rearmQueued else { return }
        slots[Int(fd)].rearmQueued = true
        rearm.append(fd)
    }

    /// A completion is a snapshot of the moment the file woke the request (and only the bits of that
    /// wake-up), possibly long before this wait: the descriptor may have been drained, shut down or
    /// closed since. As epoll polls each ready item again when it reports it, poll(2) looks at the kept
    /// descriptors, oldest first, in rounds of as many as the buffer has room left for, until it is
    /// full or none is left, and reports what is true now. Those not ready any more go back to the
    /// kernel (a level or one-shot request completed when it fired) or stay with their multishot
    /// request (edge); a closed one (POLLNVAL) is dropped and marked stale. (Before, one round: entries
    /// found not ready took the room, so a zero-timeout wait could return nothing while one was
    /// ready.) Each wait looks at the room's worth of ready ones and at those not ready any more,
    /// which leave the list, never at every kept one. A poll(2) the kernel refuses leaves its entries
    /// kept for the next wait: never taken for not ready (their events would be lost).
    private func deliverPending(_ table: inout RegistrationTable, _ events: EventBuffer) {
        while events.count < events.capacity, !pending.isEmpty {
            let room = Swift.min(events.capacity - events.count, recheckCapacity)
            var taken = 0
            var count = 0
            while taken < pending.count, count < room {
                let fd = pending[taken]
                taken += 1
                slots[Int(fd)].isPending = false
                guard let r = table[fd], r.isActive else { continue }
                recheck[count] = pollfd(fd: fd, events: Int16(truncatingIfNeeded: Self.mask(r)), revents: 0)
                count += 1
            }
            pending.removeFirst(taken)
            guard count > 0 else { continue }
            guard Sys.pollNow(recheck, count: count) else {
                for j in 0..<count { slots[Int(recheck[j].fd)].isPending = true }
                pending.insert(contentsOf: UnsafeBufferPointer(start: recheck, count: count).lazy.map(\.fd), at: 0)
                return
            }
            deliverRechecked(count, &table, events)
        }
    }

    /// Reports the `count` entries of `recheck` that poll(2) found ready, re-arms the others.
    private func deliverRechecked(_ count: Int, _ table: inout RegistrationTable, _ events: EventBuffer) {
        var kept = 0   // ready without room (none expected: a round takes no more than the room), in recheck[0..<kept]
        for j in 0..<count {
            let entry = recheck[j]
            let fd = entry.fd
            guard let registration = table[fd] else { continue }
            let revents = UInt32(UInt16(bitPattern: entry.revents))
            if revents & rd_uring_POLLNVAL != 0 {
                // Closed while registered: the request is cancelled, as the other backends let the
                // file go (epoll's kernel drops it, poll and select skip the number). Kept, it held the
                // closed socket's file (its peer never saw the close) and every wake-up of that file
                // ended a wait with nothing to report (mio's add_then_drop, CPython's
                // test_unregister_after_fd_close).
                table.markStale(fd)
                if slots[Int(fd)].inFlight { _ = try? disarm(fd) }
                continue
            }
            if revents == 0 {
                if !slots[Int(fd)].inFlight { queueRearm(fd) }
                continue
            }
            if events.count == events.capacity {
                slots[Int(fd)].isPending = true
                recheck[kept].fd = fd
                kept += 1
                continue
            }
            // The request's own follow-up; reporting (below) disarms a one-shot registration.
            switch registration.trigger {
            case .level:
                if slots[Int(fd)].inFlight {
                    slots[Int(fd)].carried = true
                    carry.append(fd)
                } else {
                    queueRearm(fd)
                }
            case .oneShot:
                // Fired: disarmed by the report below, so its multishot request goes (it would hold
                // the file until the registration is renewed or removed). Its later completions are
                // another request's tag by then, and dropped.
                if slots[Int(fd)].inFlight { _ = try? disarm(fd) }
            case .edge: if !slots[Int(fd)].inFlight { queueRearm(fd) }
            }
            table.report(fd, Ready(pollBits: revents), into: events)   // poll(2) bits
        }
        if kept > 0 { pending.insert(contentsOf: UnsafeBufferPointer(start: recheck, count: kept).lazy.map(\.fd), at: 0) }
    }

    /// The ring's descriptor (the current ring's: it moves when the poller changes threads).
    public func ownsDescriptor(_ fd: CInt) -> Bool { !ringClosed && fd == rd_uring_fd(ring) }

    /// Closes the ring: the kernel cancels its requests and drops their file references. They are
    /// cancelled first, at once: a child forked meanwhile holds the ring open (its copy of the
    /// descriptor), and with it every file a request of ours holds.
    public func close() {
        guard !ringClosed else { return }
        _ = rd_uring_cancel_all(ring, Self.nopData)   // refused on another thread (EEXIST): closing does it
        closeRing()
    }

    /// In a child made by fork(): the ring is the parent's too, so nothing of it is cancelled; only
    /// the child's copies are let go.
    public func closeAfterFork() { closeRing() }

    private func closeRing() {
        guard !ringClosed else { return }
        ringClosed = true
        rd_uring_close(ring)
        freeProvidedBuffers()
    }
}
