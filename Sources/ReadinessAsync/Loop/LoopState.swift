#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet
import Synchronization

/// Everything the loop thread owns. Not Sendable: it is reached only through
/// `EventLoop.loopState`/`onLoop`, on the loop thread (the invariant is written on ``EventLoop``).
///
/// Structure (Docs/Async.md, "Structure"): the resources live in a ``Slab`` (this file: holding,
/// owning and closing them); waits and their continuations are in LoopWaits.swift; events, timers
/// and resolution answers are dispatched in LoopDispatch.swift; each resource kind is a
/// ``LoopResource`` in Resources/; the async I/O retry loops are the ``IODriver``'s (Drivers/).
final class LoopState {
    /// Set in the loop's init, cleared when the loop has finished (breaks the cycle).
    unowned(unsafe) var loop: EventLoop!
    /// The loop thread's signal mask as it began (inherited from the thread that made the loop): a
    /// watched signal blocked then is unblocked while a sequence watches it, and blocked again after
    /// (`EventLoop.watchSignals`).
    var startMask = sigset_t()
    /// The signals the loop thread unblocked because a sequence of this loop watches them
    /// (`EventLoop.applySignalMask`): one newly unblocked has its stale instances taken off first.
    var unblockedForSequences: Set<CInt> = []
    /// Set once the loop's shutdown has put the thread's start mask back: no later mask change (a
    /// sequence's release during the drain, a queued `.applySignalMask`) opens it again.
    var signalMaskFinal = false
    var poller: (any Poller)?
    let timers = Timers(capacity: LoopState.initialCapacity)
    let events = EventBuffer(capacity: LoopState.eventCapacity)
    /// Loop thread only, and never accessed overlapping (`insert`'s closure only builds the resource):
    /// unchecked, as each of the several accesses an operation makes would pay swift_beginAccess.
    @exclusivity(unchecked) var slab = Slab(capacity: LoopState.initialCapacity)
    /// How the async operations do their I/O: the readiness driver (try, then wait for readiness), or
    /// the completion driver when the poller can complete operations (`chooseDriver`).
    private(set) var driver: any IODriver = ReadinessDriver()
    /// The completion driver, when it is the loop's driver (its operations' completions are taken after
    /// each wait; `resolve` cancels an operation through it).
    private(set) var completions: CompletionDriver?
    /// Caller-owned descriptors being waited on, by number.
    var foreign: [CInt: ResourceKey] = [:]
    /// Numbers the poller refused to let go when the loop released them (a caller's descriptor no
    /// longer waited on, a listener closed; a shortage such as io_uring's full submission queue):
    /// their registrations name no resource, so the poller is asked again after each wait, and before
    /// the loop registers the number again (the poller's table would refuse it as registered).
    private var deregisterLater: [CInt] = []
    /// By descriptor number: whether a stream or listener of this loop owns it (so that a descriptor
    /// is never adopted twice, nor waited on as a caller's while the loop owns it).
    private var owned: [Bool] = []
    /// Listeners out of descriptors, waiting for one to be freed (or for their back-off timer).
    var backingOff: Set<ResourceKey> = []
    /// The completion driver: a connection failure (reset, abort, timeout: its errno) that a stream's
    /// send took in the kernel while a read of the same stream was in progress. The kernel reports it
    /// once, to whichever waiter it wakes first (the newest: the send), and the receive then reads 0;
    /// that read reports the failure instead of an end of stream, as the readiness driver's reader
    /// (resumed first) gets it. Empty but in that moment (the read takes it, or drops it when its
    /// claim ends).
    @exclusivity(unchecked) var readFailures: [ResourceKey: CInt] = [:]
    @exclusivity(unchecked) var nextOperation: UInt64 = 1
    /// Set by `shutDown`, on the loop thread.
    private var shutDownStarted = false
    /// ``Sys/forkGeneration`` when the loop was made: in a child made by `fork()` since (the thread
    /// that forked was the loop's, and its copy goes on here), the sockets are the parent's too, and
    /// closing them must change nothing the parent sees.
    let forkGeneration = Sys.forkGeneration
    /// Whether this is a forked child's copy of the loop (``forkGeneration``).
    var isForkedCopy: Bool { Sys.forkGeneration != forkGeneration }
    /// Set by `EventLoop.requestStop` (any thread) the moment a shutdown is asked for: operations are
    /// refused from then on, not only once the loop thread begins its shutdown (a job that asks for
    /// the stop and goes on, or jobs still queued behind it, would otherwise make new resources).
    let stopRequested = Atomic<Bool>(false)
    /// Whether new operations are refused with `.shutdown`: asked for, or begun.
    var isShutDown: Bool { shutDownStarted || stopRequested.load(ordering: .relaxed) }
    /// False once a graceful shutdown stopped accepting: `listen` is refused from then on.
    var accepting = true
    /// Why the loop ended (`.shutdown`, or `.poller(error)` after a failed wait): what operations that
    /// were waiting to go on are told.
    var shutdownReason: LoopError = .shutdown
    /// The operations waiting for their turn in a direction another operation holds, in order of
    /// arrival (LoopClaims.swift). Empty but for tasks that use one socket side at once.
    var turnLines: [TurnLine.Key: TurnLine] = [:]
    /// When the loop last fired its due timers (monotonic nanoseconds): see `expired(_:)`.
    var timersCheckedAt: Int64 = .min
    /// The operations the running job may still start before it yields (`EventLoop.onLoop`): reset to
    /// ``operationBudget`` as each job starts. A task whose every operation completes at once never
    /// suspends, so without it that task would hold the loop thread for ever (tokio's coop budget).
    @exclusivity(unchecked) var budget = LoopState.operationBudget
    /// Tasks that spent their budget, resumed after the next poller wait (no sleep while any is here)
    /// and its readiness and timers: they go on behind the I/O and the timers that were due.
    @exclusivity(unchecked) var yielded: [UnsafeContinuation<Void, Never>] = []
    private var yieldedSpare: [UnsafeContinuation<Void, Never>] = []
    /// How many operations a job starts before it yields to the poller.
    static let operationBudget = 128
    /// The most bytes one send system call of a stream write is given (1 MiB, as a read takes at most):
    /// a peer that drains as fast as the loop sends could otherwise keep one call in the kernel for
    /// the whole of a large write.
    static let sendLimit = 1 << 20

    /// Charges a send of `count` bytes against the job's budget: one operation per 64 KiB sent, and
    /// one more when it left bytes of its write to send (`more`). True when the write should yield
    /// now (bytes left and the budget spent: ``yieldInWrite(deadline:_:)``, the loop's next poller
    /// pass, its other tasks, I/O and timers). A large write, or many writes of a megabyte, hold the
    /// loop thread for about 8 MiB at a time (tokio charges each send, SwiftNIO stops a flush after 16).
    @inline(__always)
    func chargeSend(_ count: Int, more: Bool) -> Bool {
        budget &-= (count >> 16) &+ (more ? 1 : 0)
        guard more, budget <= 0 else { return false }
        writeYieldDue = true
        return true
    }

    /// Set by ``chargeSend(_:more:)`` when a write attempt stops to yield (`ReadinessDriver.perform`
    /// yields instead of waiting for room); cleared by ``yieldInWrite(deadline:_:)`` and at each job's
    /// start, so a write that did not yield leaves no stray yield to the loop's next write.
    @exclusivity(unchecked) var writeYieldDue = false

    /// What a write was given when it was called, for its yields: a task cancelled already, or a
    /// timeout of zero or less, do not end a write that need not wait (it sends what the socket takes).
    /// Taken at the public call, before the hop onto the loop, and from the timeout itself, not the
    /// clock: a hop that waited (a busy loop, a loaded machine) or a preemption cannot turn a write
    /// given 1 ms into one whose deadline "was there when it began" (a flake once: such a write ran to
    /// its end under AddressSanitizer).
    struct WriteStart: Sendable {
        let cancelled: Bool
        let expired: Bool

        init(timeout: Duration?) {
            cancelled = Task.isCancelled
            expired = timeout.map { $0 <= .zero } ?? false
        }

        /// `.cancelled` or `.timedOut` when the task was cancelled, or the deadline passed, since.
        func failure(deadline: Int64?) -> LoopError? {
            if !cancelled, Task.isCancelled { return .cancelled }
            if !expired, let deadline, deadline <= MonotonicClock.nowNanoseconds { return .timedOut }
            return nil
        }
    }

    /// A write's yield (its budget spent, bytes left): the loop's next poller pass, then `.cancelled`
    /// or `.timedOut` if the task was cancelled, or the deadline passed, since the write was called
    /// (`start`), as tokio's `Timeout` looks at its delay once the future spent its budget; otherwise
    /// the write goes on.
    nonisolated(nonsending) func yieldInWrite(deadline: Int64?, _ start: WriteStart) async throws(LoopError) {
        writeYieldDue = false   // this is the yield it asked for
        try await yieldToPoller()
        if let failure = start.failure(deadline: deadline) { throw failure }
    }

    /// Waits for the loop's next poller pass, its readiness and its timers, as a task out of budget
    /// does in `EventLoop.onLoop`: not a wait for room (poll calls a socket writable only below a
    /// part of its send buffer, and a task cancelled or past its deadline would fail a write that
    /// need not wait), and neither the deadline nor cancellation is looked at. Fails with the loop's
    /// reason when it shut down meanwhile.
    @inline(never)
    nonisolated(nonsending) func yieldToPoller() async throws(LoopError) {
        // Only on the loop thread (a loop that stopped resumes nothing that yields now).
        guard loop.isLoopThread() else { throw loop.stopError ?? .shutdown }
        await withUnsafeContinuation { yielded.append($0) }
        guard loop.isLoopThread() else { throw loop.stopError ?? .shutdown }
        if isShutDown { throw shutdownReason }
    }
    /// Counters (loop-only): jobs run, loop iterations (poller waits).
    var jobsRun = 0
    var iterations = 0

    /// Resumes the tasks that yielded (their jobs queue for the loop's next turn).
    func resumeYielded() {
        swap(&yielded, &yieldedSpare)   // two buffers in turn: no copy, no allocation
        for task in yieldedSpare { task.resume() }
        yieldedSpare.removeAll(keepingCapacity: true)
    }

    /// Resources and timers made room for at start.
    static let initialCapacity = 1024
    /// The most events one poller wait takes.
    static let eventCapacity = 512

    /// The owned-bytes reads' buffer for reads of more than ``smallScratchSize`` bytes
    /// (`readAvailable`, `read(upTo:)`: ``IODriver/readCopying``): one per loop, allocated by the first
    /// such read with room for its `maximum` (rounded up to a multiple of ``smallScratchSize``, at most
    /// ``readScratchSize``), and again with more room when a later read asks for more. Like the small
    /// one, a read that filled much of it hands it over to the bytes it returns (``adoptScratch(_:)``),
    /// and a smaller one copies out of it at once: no connection holds a buffer while it waits.
    private var scratch: UnsafeMutableRawBufferPointer?
    /// The most bytes one owned-bytes read takes (1 MiB).
    static let readScratchSize = StreamSocket.maximumReadReservation
    /// The scratch buffer of the reads that ask for at most ``smallScratchSize`` bytes (the default
    /// size, most reads): a heap block, which a read that filled much of it hands over whole to the
    /// ``/ReadinessNet/Bytes`` it returns (``adoptScratch(_:)``), the loop taking a new one at its next
    /// read, instead of copying the bytes out.
    private var smallScratch: UnsafeMutableRawPointer?
    static let smallScratchSize = StreamSocket.defaultReadSize
    /// The fewest bytes a read hands over with a scratch buffer rather than copy: below this a copy
    /// costs less than the block's shrinking and the next block's allocation.
    static let adoptThreshold = 8 * 1024

    init() {}

    /// Sets the poller (on the loop thread) and picks the driver: the completion driver when the poller
    /// is also a ``CompletionRing`` (io_uring) and `READINESS_IO_DRIVER` is not `readiness`.
    func start(with poller: any Poller) {
        self.poller = poller
        guard let ring = poller as? any CompletionRing, Self.driverSetting() != "readiness" else { return }
        let completions = CompletionDriver(ring: ring)
        self.completions = completions
        driver = completions
    }

    /// `READINESS_IO_DRIVER`: `readiness` keeps the readiness driver on io_uring (for comparison).
    private static func driverSetting() -> String? {
        getenv(CompletionDriver.environmentKey).map { String(cString: $0) }
    }

    /// Which driver the loop's async operations use: "completion" or "readiness".
    var driverName: String { completions == nil ? "readiness" : "completion" }

    deinit {
        free(scratch?.baseAddress)
        free(smallScratch)
    }

    /// The loop's scratch buffer for a read of at most `maximum` bytes that copies out what it read
    /// (allocated on first use).
    func readScratch(for maximum: Int) throws(SocketError) -> UnsafeMutableRawBufferPointer {
        if maximum <= Self.smallScratchSize {
            if let smallScratch { return UnsafeMutableRawBufferPointer(start: smallScratch, count: Self.smallScratchSize) }
            guard let base = malloc(Self.smallScratchSize) else {
                throw SocketError(.resourceExhausted, operation: "read: allocating the loop's \(Self.smallScratchSize)-byte read buffer")
            }
            smallScratch = base
            return UnsafeMutableRawBufferPointer(start: base, count: Self.smallScratchSize)
        }
        let wanted = Swift.min(maximum, Self.readScratchSize)
        if let scratch, scratch.count >= wanted { return scratch }
        // Room for this read, in whole small-buffer sizes (a read that asks a little more than the
        // last one does not allocate again).
        let size = Swift.min(Self.readScratchSize, (wanted + Self.smallScratchSize - 1) / Self.smallScratchSize * Self.smallScratchSize)
        guard let base = malloc(size) else {
            throw SocketError(.resourceExhausted, operation: "read: allocating the loop's \(size)-byte read buffer")
        }
        free(scratch?.baseAddress)
        let buffer = UnsafeMutableRawBufferPointer(start: base, count: size)
        scratch = buffer
        return buffer
    }

    /// The bytes a read just put at the start of one of the scratch buffers, as a buffer that takes
    /// that memory over (shrunk to them: `realloc` to a smaller size keeps the block in place), or nil
    /// when they are not there (another buffer: io_uring's provided ones) or too few to be worth it
    /// (under 8 KiB; from the large buffer, under 64 KiB): the caller copies them then. The loop allocates a new scratch buffer at its next such read.
    func adoptScratch(_ read: UnsafeRawBufferPointer) -> Bytes? {
        guard read.count >= Self.adoptThreshold, let start = read.baseAddress else { return nil }
        let base: UnsafeMutableRawPointer, capacity: Int
        if let small = smallScratch, start == UnsafeRawPointer(small), read.count <= Self.smallScratchSize {
            (base, capacity) = (small, Self.smallScratchSize)
            smallScratch = nil
        } else if let large = scratch, let largeBase = large.baseAddress, start == UnsafeRawPointer(largeBase), read.count <= large.count,
                  read.count >= Self.smallScratchSize {
            // The large buffer (128 KiB or more, which glibc maps afresh for each allocation while its
            // mapping threshold is at its default: system calls and a page fault per page written; the
            // threshold rises at run time once such a block is freed whole) only for a read of 64 KiB or more,
            // whose copy would cost as much (its own buffer mapped too): a 16 KiB read of a 256 KiB
            // `maximum` took it over and mapped another at every read (an echo of 16 KiB messages at
            // 0.22x the speed it has with 64 KiB reads); a copy of such a read to the heap costs less.
            (base, capacity) = (largeBase, large.count)
            scratch = nil
        } else {
            return nil
        }
        if read.count < capacity, let shrunk = realloc(base, read.count) {
            return Bytes(adopting: shrunk, capacity: read.count, count: read.count)
        }
        return Bytes(adopting: base, capacity: capacity, count: read.count)
    }

    /// How many resources the loop holds (`EventLoop.entryCount()`).
    var resourceCount: Int { slab.count }

    // MARK: Owning descriptors

    /// Whether a stream or listener of this loop owns `fd`.
    func owns(_ fd: CInt) -> Bool { fd >= 0 && Int(fd) < owned.count && owned[Int(fd)] }

    func own(_ resource: any LoopResource, _ fd: CInt) {
        guard fd >= 0 else { return }
        endStaleWait(on: fd)
        if Int(fd) >= owned.count { owned.append(contentsOf: repeatElement(false, count: Int(fd) + 1 - owned.count)) }
        owned[Int(fd)] = true
        resource.record.ownedFD = fd
    }

    /// Before a socket of the loop's own is registered under number `fd`: a caller's descriptor
    /// waited on with `readable`/`writable` under this number was closed during its wait (the kernel
    /// gave the number to the new socket): its registration is of a file that is gone, and would
    /// refuse the new owner's (`alreadyRegistered`). Its waiters end `.closed`, as a wait on a closed
    /// descriptor does, and the number is the new owner's. (Accepted, listening, adopted and datagram
    /// sockets reach it through ``own(_:_:)``; a connect's attempt just before it registers, through
    /// ``ConnectAttempt/willRegister``: it registers long before the loop owns the socket.)
    func endStaleWait(on fd: CInt) {
        if let key = foreign[fd], let stale = slab[key] as? ForeignResource, stale.fd == fd {
            close(stale, reason: .closed)
        }
        if !deregisterLater.isEmpty { retryDeregisters(only: fd) }
    }

    /// Lets go of `resource`'s registration as it is released (the descriptor `fd` closed by
    /// `closing` afterwards, if any). A deregister the poller refuses is kept, not forgotten: asked
    /// again once the descriptor is closed, then after each wait (``retryDeregisters(only:)``). Before,
    /// it was dropped: a level registration whose token named nothing woke every wait (a spin while
    /// the caller's descriptor stayed readable), and the number stayed taken in the poller's table.
    func dropRegistration(_ resource: any LoopResource, fd: CInt, closing: (() -> Void)? = nil) {
        let dropped = (try? updateInterest(resource, [])) != nil
        closing?()
        guard !dropped, fd >= 0 else { return }
        resource.record.registered = []
        deregisterOrKeep(fd)
    }

    /// Deregisters number `fd` from the loop's poller; a refusal that leaves the registration in place
    /// is kept (``keepDeregister(_:)``), one that says it is gone is not.
    private func deregisterOrKeep(_ fd: CInt) {
        guard let poller else { return }
        do { try poller.deregister(fd) } catch .notRegistered { } catch .closed { } catch .forked { } catch {
            keepDeregister(fd)
        }
    }

    /// The deregisters kept by ``dropRegistration(_:fd:closing:)``, asked again (all of them, or the
    /// one of number `only`); done or not registered any more, they leave the list. Whether any is
    /// still refused.
    @discardableResult
    func retryDeregisters(only: CInt? = nil) -> Bool {
        guard !deregisterLater.isEmpty else { return false }
        guard let poller else {
            deregisterLater.removeAll()
            return false
        }
        deregisterLater.removeAll { fd in
            if let only, fd != only { return false }
            do throws(PollerError) { try poller.deregister(fd) } catch .notRegistered { } catch .closed { } catch .forked { } catch { return false }
            return true
        }
        return !deregisterLater.isEmpty
    }

    /// A deregister of number `fd` the poller refused and kept, to be asked again with the others
    /// (``retryDeregisters(only:)``): after each wait, and before the number is registered again.
    func keepDeregister(_ fd: CInt) {
        guard fd >= 0, poller != nil, !deregisterLater.contains(fd) else { return }
        deregisterLater.append(fd)
    }

    /// The hook a connect's attempts call when the poller refused to let their socket's registration go
    /// (``keepDeregister(_:)``).
    var connectDeregisterRefused: (CInt) -> Void {
        { [weak self] fd in self?.keepDeregister(fd) }
    }

    /// The hook a connect's attempts call before registering their socket (``endStaleWait(on:)``).
    var connectWillRegister: (CInt) -> Void {
        { [weak self] fd in self?.endStaleWait(on: fd) }
    }

    /// A descriptor a caller may hand over or wait on: not one this loop owns or already watches.
    /// `adopting`: the caller's descriptor is to become the loop's, so one the loop holds without
    /// owning it yet is refused too (a scan: only adoption asks, never a `readable`/`writable` wait,
    /// which closes nothing and meets an attempt's registration in the poller anyway).
    func checkForeign(_ fd: CInt, _ operation: String, adopting: Bool = false) throws(LoopError) {
        if owns(fd) { throw .invalidArgument("\(operation): descriptor \(fd) belongs to a socket or listener of this loop") }
        if adopting, holdsUnowned(fd) {
            throw .invalidArgument("\(operation): descriptor \(fd) is held by this loop (a connect in progress, or a connection accepted ahead)")
        }
    }

    /// Whether `fd` is a socket the loop holds before it owns it: a connect attempt's (one address, or
    /// Happy Eyeballs; `own` takes it once connected, and a winner handed over is held until its
    /// task takes it: an adoption between the two made it two owners' before, test
    /// `handedOverWinnerIsHeld`) or a connection the completion driver accepted
    /// ahead of the calls. The loop closes those itself, so a second owner would close them twice. A
    /// scan of the resources: asked only by the entries that take a caller's descriptor.
    func holdsUnowned(_ fd: CInt) -> Bool {
        guard fd >= 0 else { return false }
        // Only the resources that may hold such a descriptor (`mayHoldUnowned`): an adoption costs no
        // scan of every connection (before: O(n) per adopt, a server adopting n sockets O(n²)).
        return mayHoldUnowned.contains { raw in
            guard let resource = slab[ResourceKey(raw)] else { return false }
            // A winner handed over by its attempt (which forgot its number) is held in the outcome
            // until the connecting task takes it: the loop's too (the task then owns it).
            if let stream = resource as? StreamResource {
                if case .connected(let socket)? = stream.outcome, socket.fd == fd { return true }
                return stream.attempt?.fd == fd
            }
            if let connect = resource as? ConnectResource {
                if case .connected(let socket)? = connect.outcome, socket.fd == fd { return true }
                return connect.connect?.attempts.contains { $0.fd == fd } ?? false
            }
            if let listener = resource as? ListenerResource { return listener.acceptQueue.contains(fd) }
            return false
        }
    }

    /// The keys of the resources that may hold a descriptor they do not own yet (``holdsUnowned(_:)``):
    /// a stream while it connects, a Happy Eyeballs connect, a listener with connections accepted
    /// ahead. Entered when they start to, left when they stop or close.
    private(set) var mayHoldUnowned: Set<UInt64> = []

    func noteMayHoldUnowned(_ resource: any LoopResource) { mayHoldUnowned.insert(resource.key.raw) }

    func noteHoldsNoUnowned(_ resource: any LoopResource) {
        if !mayHoldUnowned.isEmpty { mayHoldUnowned.remove(resource.key.raw) }
    }

    /// Takes ownership of a connected socket: a stream resource of its own (`outbound`: one the loop
    /// connected, which a graceful shutdown does not wait for). When the slab is full
    /// (``LoopError/resourceExhausted``) the socket is left to the caller, who closes or releases it.
    func adopt(_ socket: StreamSocket, outbound: Bool = false) throws(LoopError) -> UInt64 {
        // Shut down (or asked to): a resource made now would never be closed by the loop.
        if isShutDown { throw shutdownReason }
        let stream = try slab.insert { StreamResource(key: $0, socket: socket, outbound: outbound) }
        own(stream, socket.fd)
        return stream.key.raw
    }

    /// Fails with ``LoopError/resourceExhausted`` when the slab has no slot left: asked before an
    /// operation makes or takes anything (a socket, a queued connection, a caller's descriptor).
    func checkRoom() throws(LoopError) {
        if slab.isFull { throw .resourceExhausted }
    }

    // MARK: Finding resources

    /// The live resource `id` names, or `.closed` (`.shutdown` once the loop shuts down).
    func resource(_ id: UInt64) throws(LoopError) -> any LoopResource {
        if isShutDown { throw shutdownReason }
        guard let resource = slab[ResourceKey(id)], resource.key.raw == id else { throw .closed }
        return resource
    }

    /// Not inlined: its casts' temporaries would take room in the async frame of every operation
    /// that waits (Docs/Async.md, "Memory per idle connection").
    @inline(never)
    func stream(_ id: UInt64) throws(LoopError) -> (StreamResource, StreamSocket) {
        guard let stream = try resource(id) as? StreamResource, let socket = stream.socket else { throw .closed }
        return (stream, socket)
    }

    func datagram(_ id: UInt64) throws(LoopError) -> DatagramResource {
        guard let datagram = try resource(id) as? DatagramResource, !datagram.socket.isClosed else { throw .closed }
        return datagram
    }

    func listener(_ id: UInt64) throws(LoopError) -> ListenerResource {
        guard let listener = try resource(id) as? ListenerResource else { throw .closed }
        return listener
    }

    // MARK: Interest

    /// Registers, changes or removes the resource's poller interest.
    func updateInterest(_ resource: any LoopResource, _ wanted: Interest) throws(PollerError) {
        let old = resource.record.registered
        guard wanted != old else { return }
        guard let poller else { throw .closed }
        // A refused deregister of this number kept since (a connect's attempt handing its socket over,
        // asked again as the loop took the socket and refused once more): asked again before the
        // number is registered, or the registration would meet it (`alreadyRegistered`).
        if old.isEmpty, !deregisterLater.isEmpty, resource.record.ownedFD >= 0 {
            let fd = resource.record.ownedFD
            // Still refused, a listener's own registration (its back-off let it go this way) is
            // changed in place: a register would meet it (`alreadyRegistered`, which ends `serve`),
            // and the kept deregister, asked again later, would remove the new one.
            if retryDeregisters(only: fd), resource is ListenerResource, deregisterLater.contains(fd) {
                try poller.reregister(fd, token: resource.key.token, interest: wanted)
                deregisterLater.removeAll { $0 == fd }
                resource.record.registered = wanted
                return
            }
        }
        guard try resource.applyInterest(wanted, old: old, token: resource.key.token, poller: poller) else { return }
        resource.record.registered = wanted
    }

    // MARK: Closing

    func close(_ id: UInt64) {
        guard let resource = slab[ResourceKey(id)], resource.key.raw == id else { return }
        close(resource, reason: .closed)
    }

    /// Removes the resource, resumes its waiters with `reason`, and releases what it owns, exactly
    /// once (a second call finds it gone).
    func close(_ resource: any LoopResource, reason: LoopError) {
        guard slab.contains(resource) else { return }
        resolve(resource, .read, .failed(reason))
        resolve(resource, .write, .failed(reason))
        endLines(of: resource, reason)
        // The deadline timers outlive their waits (armed lazily): they go with the resource.
        if let timer = resource.record.read.timer { timers.cancel(timer) }
        if let timer = resource.record.write.timer { timers.cancel(timer) }
        slab.remove(resource.key)
        noteHoldsNoUnowned(resource)
        let fd = resource.record.ownedFD
        if fd >= 0 {
            owned[Int(fd)] = false
            resource.record.ownedFD = -1
        }
        resource.release(loop: self)
    }

    /// Shutdown: every waiter resumes with `reason` (`.shutdown`, or `.poller` when the poller could
    /// no longer wait), everything owned is closed once.
    func shutDown(reason: LoopError = .shutdown) {
        shutDownStarted = true
        shutdownReason = reason
        for resource in slab.resources { close(resource, reason: reason) }
        timers.removeAll()
        // The operations closing cancelled end in the kernel before their tasks resume.
        if let completions, let poller { completions.drain(poller, loop: self) }
    }

    /// A descriptor was closed on this loop: listeners out of descriptors try again now.
    func descriptorFreed() {
        guard !backingOff.isEmpty else { return }
        for key in Array(backingOff) {
            if let listener = slab[key] as? ListenerResource, listener.key == key {
                listener.endBackoff(loop: self)
            } else {
                backingOff.remove(key)
            }
        }
    }

    // MARK: The escape hatch

    func withStream<T>(_ id: UInt64, _ body: (StreamSocket) throws(SocketError) -> T) throws(LoopError) -> T {
        let (stream, socket) = try stream(id)
        bindQueuedOperations(of: stream)
        let fd = socket.fd
        defer { reconcile(stream, socket, fd: fd) }
        forgetTries(stream)
        do { return try body(socket) } catch { throw .socket(error) }
    }

    /// ``AsyncSocket/tryRead(into:)``: one attempt, on the socket itself, never waiting; nil when it
    /// would block, 0 at the end of the stream (or the connection failure a send handed to the read
    /// side: io_uring's `readFailures`, which a read would meet there). `.busy` while a read is in
    /// progress or waits for its turn: the bytes are that read's.
    func tryRead(_ id: UInt64, _ attempt: (StreamSocket) throws(SocketError) -> IOResult) throws(LoopError) -> Int? {
        let (stream, socket) = try stream(id)
        if stream.record.read.inUse || stream.record.read.isWaiting { throw .busy }
        let result: IOResult
        do { result = try attempt(socket) } catch { throw .socket(error) }
        // No hint kept: the next read tries the socket first (the readiness event that would clear a
        // "drained" hint may have been consumed already).
        stream.record.readDrained = false
        switch result {
        case .transferred(let n):
            stream.record.read.knownReady = true
            stream.record.read.knownBlocked = false
            return n
        case .endOfStream:
            stream.record.read.knownReady = true
            stream.record.read.knownBlocked = false
            if let failure = CompletionDriver.takeReadFailure(id, loop: self) { throw failure }
            return 0
        case .wouldBlock:
            stream.record.read.knownReady = false
            stream.record.read.knownBlocked = true
            return nil
        }
    }

    /// Whether `readable()`/`writable()` of resource `id` may return at once: a try of `direction` moved
    /// something and none would block since (``WaitSlot/knownReady``), and no other operation of the
    /// direction runs (that one's turn comes first).
    func isKnownReady(_ id: UInt64, _ direction: Direction) -> Bool {
        guard let resource = slab[ResourceKey(id)], resource.key.raw == id else { return false }
        let slot = resource.record[direction]
        return slot.knownReady && !slot.inUse
    }

    /// Whether the last try of `direction` on resource `id` would block (``WaitSlot/knownBlocked``).
    func isKnownBlocked(_ id: UInt64, _ direction: Direction) -> Bool {
        guard let resource = slab[ResourceKey(id)], resource.key.raw == id else { return false }
        return resource.record[direction].knownBlocked
    }

    /// What a try established is forgotten: an operation through the escape hatch (`withStreamSocket`,
    /// `withDatagramSocket`) may have read or written, and a stale "ready" would let a
    /// `readable()`-then-read loop spin (review).
    func forgetTries(_ resource: any LoopResource) {
        resource.record.read.knownReady = false
        resource.record.read.knownBlocked = false
        resource.record.write.knownReady = false
        resource.record.write.knownBlocked = false
    }

    /// After ``AsyncSocket/shutdown(_:)`` for sending: a send the completion driver has in the kernel
    /// (which the socket's own shutdown does not wake either) ends with the error its retry would meet.
    func endWritesAfterShutdown(_ id: UInt64) {
        guard let (stream, _) = try? stream(id), let op = stream.record.write.op else { return }
        // Named as the readiness driver's retry names it (a vectored write's is sendmsg), so that the
        // same scenario gives an equal error on both drivers.
        resolve(stream, .write, .failed(.socket(SocketError(errno: EPIPE, operation: op.message == nil ? "send" : "sendmsg"))))
    }

    /// Before the escape hatch's body, on the completion driver: a receive or send of `resource` still
    /// queued in the ring (submitted with the next wait) is submitted now, so that it holds the
    /// socket's file should the body close the descriptor (its number may be another file's by the
    /// next wait). Costs nothing when nothing of the resource waits in the ring.
    private func bindQueuedOperations(of resource: any LoopResource) {
        guard let completions, resource.record.read.op != nil || resource.record.write.op != nil else { return }
        completions.submitQueued()
    }

    /// After the escape hatch (`withStreamSocket`, `withDatagramSocket`), which may have closed,
    /// released, deregistered or re-registered the socket behind the loop's back: the loop's record of
    /// the registration is made true again, so that no wait trusts a registration that is gone.
    /// `fd` is the socket's descriptor before the body ran.
    private func reconcile(_ stream: any LoopResource, _ socket: some HatchSocket, fd: CInt) {
        guard slab.contains(stream) else { return }
        stream.record.readDrained = false   // the body may have read: the next read tries first
        if socket.isClosed {
            // Closed or released by the body, whose deregister the poller may have refused (the
            // socket forgets a refusal it meets twice, and a released socket's is the caller's): the
            // registration is the loop's, which makes sure it goes, and keeps a refusal as for its own
            // closes. Before, the number stayed watched for good: a spin while the released descriptor
            // was readable, and `alreadyRegistered` for the next socket or wait on it.
            if fd >= 0, !stream.record.registered.isEmpty {
                stream.record.registered = []
                deregisterOrKeep(fd)
            }
            close(stream, reason: .closed)   // the loop forgets it
            // Closed, a descriptor is free (a listener out of them tries again); released, the
            // descriptor is the caller's and still open: nothing was freed.
            if fd >= 0, fcntl(fd, F_GETFD) < 0 { descriptorFreed() }
            return
        }
        // A write waiting for room tries again: the body may have shut the socket down for sending,
        // which a Unix socket's readiness never tells (select's neither for any socket shut down both
        // ways): the retry meets EPIPE (Contract.md, "Hang-up and error").
        resolve(stream, .write, .ready)
        let intact: Bool
        if stream.record.registered.isEmpty {
            intact = socket.poller == nil
        } else if let registration = socket.registration, socket.poller === poller {
            intact = registration.token == stream.key.token && registration.interest == stream.record.registered
                && registration.trigger == .level
        } else {
            intact = false
        }
        guard !intact else { return }
        try? socket.deregister()
        // The loop's poller may still hold the number (the body registered the socket elsewhere
        // without deregistering here first): drop it too, so the number is clean for the next owner.
        if !stream.record.registered.isEmpty, socket.poller == nil { try? poller?.deregister(socket.fd) }
        stream.record.registered = []
        var wanted: Interest = []
        if stream.record.read.waitsForReadiness || stream.record.read.lingering { wanted.insert(.readable) }
        if stream.record.write.waitsForReadiness || stream.record.write.lingering { wanted.insert(.writable) }
        do {
            try updateInterest(stream, wanted)
        } catch {
            resolve(stream, .read, .failed(.poller(error)))
            resolve(stream, .write, .failed(.poller(error)))
        }
    }

    // MARK: The async operations (each runs on the loop thread; `EventLoop.onLoop` took it there)

    /// Marks `direction` of resource `id` in use for one operation (whatever the driver): true, or
    /// false when an operation of that direction runs already, and this one must wait for its turn
    /// (``waitForTurn(_:_:deadline:)``), as Go serialises a descriptor's reads and writes and tokio
    /// lets many tasks accept: between the event that resumes a waiting write and the write's next
    /// attempt, a second writer must not put its bytes in the middle of the first's. Ended by
    /// ``release(_:_:)`` (a `defer`), which hands the claim to the next in line.
    ///
    /// Synchronous, and each operation below waits for its turn in a function of its own that then
    /// calls the operation again with the claim held (`claimed: true`), returning what it returns: a
    /// wait inside the operation would keep its arguments in its frame across that suspension, and
    /// the read's frame is held by every idle connection's task (`make bench-idle`: 3.7 kB per idle
    /// connection with the wait inlined, 2.7 without; Docs/Async.md, "Memory per idle connection").
    @inline(__always)
    func claim(_ id: UInt64, _ direction: Direction) throws(LoopError) -> Bool {
        let resource = try resource(id)
        if direction == .read {
            if resource.record.read.inUse { return false }
            resource.record.read.inUse = true
        } else {
            if resource.record.write.inUse { return false }
            resource.record.write.inUse = true
        }
        return true
    }

    /// Ends ``claim(_:_:deadline:)``: the next operation waiting for its turn takes the claim over (it
    /// stays set), else the direction is free. Nothing if the resource is gone (its line ended with it).
    /// A connection failure a send handed to the read side (`readFailures`) stays until a read meets
    /// the end of the stream, as the kernel returns queued data first and the error after: a read that
    /// got data, or a `readable()` wait, does not drop it (review: dropped here, a reset read as a
    /// clean end of stream).
    func release(_ id: UInt64, _ direction: Direction) {
        guard let resource = slab[ResourceKey(id)], resource.key.raw == id else { return }
        if !turnLines.isEmpty, handOver(resource, direction) { return }
        if direction == .read {
            resource.record.read.inUse = false
        } else {
            resource.record.write.inUse = false
        }
        // A caller's descriptor whose last waiter gave up its turn (cancelled as it came) is let go.
        if !foreign.isEmpty, let waited = resource as? ForeignResource, !waited.record.read.inUse, !waited.record.write.inUse {
            settleForeign(waited)
        }
    }

    /// How ``writeAtOnce(_:count:offset:_:)`` ended.
    enum WriteAtOnce {
        /// Every byte went.
        case done
        /// An attempt would block (`offset` says how far it got): the write claim **stays held**.
        case blocked
        /// Another operation holds the write claim: nothing was tried, nothing is held (the caller's
        /// `perform` waits for its turn).
        case notItsTurn
    }

    /// A write's attempts made synchronously, as long as the socket takes bytes. The same refusals as
    /// ``perform(_:_:deadline:waitFirst:start:claimed:_:)``; on `.blocked` the write claim **stays
    /// held**, for the caller's `perform(..., claimed: true)` to go on with and release: between the
    /// two the task may yield or hop, and another writer must not land in the middle of these bytes
    /// meanwhile (review: it did, with the claim released here). Should the task never reach that
    /// `perform`, the loop has shut down, and the claim went with the socket.
    func writeAtOnce(_ id: UInt64, count: Int, offset: inout Int,
                     _ write: (StreamSocket, Int) throws(SocketError) -> IOResult) throws(LoopError) -> WriteAtOnce {
        let (stream, socket) = try stream(id)
        if stream.record.write.inUse { return .notItsTurn }
        stream.record.write.inUse = true
        do throws(LoopError) {
            if stream.record.write.isWaiting { throw .busy }
            while offset < count {
                let result: IOResult
                do throws(SocketError) { result = try write(socket, offset) } catch { throw .socket(error) }
                guard case .transferred(let n) = result, n > 0 else { return .blocked }
                offset += n
                if chargeSend(n, more: offset < count) { return .blocked }
            }
        } catch {
            release(id, .write)
            throw error
        }
        release(id, .write)
        return .done
    }

    /// `claimed`: the caller holds the direction's claim already (``writeAtOnce(_:count:offset:_:)``);
    /// released here either way.
    /// `start`: a write's (its yields); nil for a read or a wait.
    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         start: WriteStart?, claimed: Bool = false,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        if !claimed, try !claim(id, direction) {
            return try await performAfterTurn(id, direction, deadline: deadline, waitFirst: waitFirst, start: start, attempt)
        }
        defer { release(id, direction) }
        return try await driver.perform(id, direction, deadline: deadline, waitFirst: waitFirst, start: start, on: self, attempt)
    }

    @inline(never)
    nonisolated(nonsending) private func performAfterTurn(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                                          start: WriteStart?,
                                                          _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        try await waitForTurn(id, direction, deadline: deadline)
        return try await perform(id, direction, deadline: deadline, waitFirst: waitFirst, start: start, claimed: true, attempt)
    }

    nonisolated(nonsending) func readCopying<T>(_ id: UInt64, maximum: Int, deadline: Int64?, claimed: Bool = false,
                                                _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        if !claimed, try !claim(id, .read) { return try await readCopyingAfterTurn(id, maximum: maximum, deadline: deadline, take) }
        defer { release(id, .read) }
        // The concrete drivers, not `driver`: a call through the existential is not inlined, and its
        // frame would stay in every idle connection's task (Docs/Async.md, "Memory per idle connection").
        if let completions { return try await completions.readCopying(id, maximum: maximum, deadline: deadline, on: self, take) }
        return try await ReadinessDriver().readCopying(id, maximum: maximum, deadline: deadline, on: self, take)
    }

    @inline(never)
    nonisolated(nonsending) private func readCopyingAfterTurn<T>(_ id: UInt64, maximum: Int, deadline: Int64?,
                                                                 _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        try await waitForTurn(id, .read, deadline: deadline)
        return try await readCopying(id, maximum: maximum, deadline: deadline, claimed: true, take)
    }

    nonisolated(nonsending) func read(_ id: UInt64, into buffer: UnsafeMutableRawBufferPointer, deadline: Int64?) async throws(LoopError) -> Int {
        if try !claim(id, .read) { try await waitForTurn(id, .read, deadline: deadline) }
        defer { release(id, .read) }
        return try await driver.read(id, into: buffer, deadline: deadline, on: self)
    }

    nonisolated(nonsending) func write(_ id: UInt64, _ buffer: UnsafeRawBufferPointer, deadline: Int64?, start: WriteStart) async throws(LoopError) {
        if try !claim(id, .write) { try await waitForTurn(id, .write, deadline: deadline) }
        defer { release(id, .write) }
        try await driver.write(id, buffer, deadline: deadline, start: start, on: self)
    }

    nonisolated(nonsending) func write(_ id: UInt64, vectored buffers: [UnsafeRawBufferPointer], deadline: Int64?,
                                       start: WriteStart) async throws(LoopError) {
        if try !claim(id, .write) { try await waitForTurn(id, .write, deadline: deadline) }
        defer { release(id, .write) }
        try await driver.write(id, vectored: buffers, deadline: deadline, start: start, on: self)
    }

    nonisolated(nonsending) func accept(_ id: UInt64, deadline: Int64?) async throws(LoopError) -> (UInt64, SocketAddress) {
        if try !claim(id, .read) { try await waitForTurn(id, .read, deadline: deadline) }
        defer { release(id, .read) }
        return try await driver.accept(id, deadline: deadline, on: self)
    }

    nonisolated(nonsending) func connect(to address: SocketAddress, from local: SocketAddress?, deadline: Int64?) async throws(LoopError) -> (UInt64, SocketAddress?) {
        try await driver.connect(to: address, from: local, deadline: deadline, on: self)
    }

    nonisolated(nonsending) func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                                         options: HappyEyeballs.Options, deadline: Int64?) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        try await driver.connect(addresses: addresses, resolution: resolution, options: options, deadline: deadline, on: self)
    }

    func listen(_ address: SocketAddress, options: Listener.Options) throws(LoopError) -> (UInt64, SocketAddress) {
        // A graceful shutdown stopped accepting (`stopAccepting`): a listener made now would accept
        // through the grace period, and its connections would hold the drain.
        if isShutDown || !accepting { throw shutdownReason }
        try checkRoom()
        let listener: Listener
        do { listener = try Listener(bind: address, options: options) } catch { throw .socket(error) }
        let resource: ListenerResource
        do { resource = try slab.insert { ListenerResource(key: $0, listener: listener) } } catch {
            listener.close()
            throw error
        }
        own(resource, listener.fd)
        return (resource.key.raw, listener.address)
    }

    func adoptListener(_ fd: CInt, backoff: AcceptBackoff) throws(LoopError) -> (UInt64, SocketAddress) {
        if isShutDown || !accepting { throw shutdownReason }
        try checkForeign(fd, "adoptListener", adopting: true)
        if liveForeign(fd) != nil { throw .invalidArgument("adoptListener: descriptor \(fd) is being waited on (readable/writable)") }
        try checkRoom()
        let listener: Listener
        do { listener = try Listener(adopting: fd, backoff: backoff) } catch { throw .socket(error) }
        let resource: ListenerResource
        do { resource = try slab.insert { ListenerResource(key: $0, listener: listener) } } catch {
            _ = listener.release()   // not adopted: the descriptor stays the caller's, open
            throw error
        }
        own(resource, listener.fd)
        return (resource.key.raw, listener.address)
    }

    /// Makes a datagram socket with `make` and takes ownership of it: a resource of its own.
    /// A datagram resource for the socket `make` makes. `adopted`: the socket's descriptor is the
    /// caller's, handed back open (released, not closed) if no resource can be made for it.
    func openDatagram(adopted: Bool = false, _ make: () throws(SocketError) -> DatagramSocket) throws(LoopError) -> (UInt64, SocketAddress?, SocketAddress?) {
        if isShutDown { throw shutdownReason }
        try checkRoom()
        let socket: DatagramSocket
        do { socket = try make() } catch { throw .socket(error) }
        let resource: DatagramResource
        do { resource = try slab.insert { DatagramResource(key: $0, socket: socket) } } catch {
            if adopted { _ = socket.release() } else { socket.close() }
            throw error
        }
        own(resource, socket.fd)
        return (resource.key.raw, socket.localAddress, socket.peerAddress)
    }

    func withDatagram<T>(_ id: UInt64, _ body: (DatagramSocket) throws(SocketError) -> T) throws(LoopError) -> T {
        let datagram = try datagram(id)
        bindQueuedOperations(of: datagram)
        // Closed or released by the body: the loop forgets it (its waiters end with .closed); a
        // registration changed behind the loop's back is made right, as for a stream.
        let fd = datagram.socket.fd
        defer { reconcile(datagram, datagram.socket, fd: fd) }
        forgetTries(datagram)
        do { return try body(datagram.socket) } catch { throw .socket(error) }
    }

    /// ``AsyncDatagramSocket/tryReceive(into:)`` and `trySend`: one attempt on the socket itself, never
    /// waiting (nil: it would block). `.busy` while an operation of that direction is in progress or
    /// waits for its turn.
    func tryDatagram<R>(_ id: UInt64, _ direction: Direction,
                        _ attempt: (DatagramSocket) throws(SocketError) -> R?) throws(LoopError) -> R? {
        let datagram = try datagram(id)
        let slot = direction == .read ? datagram.record.read : datagram.record.write
        if slot.inUse || slot.isWaiting { throw .busy }
        let result: R?
        do { result = try attempt(datagram.socket) } catch { throw .socket(error) }
        datagram.record[direction].knownReady = result != nil
        datagram.record[direction].knownBlocked = result == nil
        return result
    }

    nonisolated(nonsending) func datagram<R>(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                             sendsTo target: SendTarget = .peer,
                                             _ attempt: (DatagramSocket) throws(SocketError) -> R?) async throws(LoopError) -> R {
        if try !claim(id, direction) { try await waitForTurn(id, direction, deadline: deadline) }
        defer { release(id, direction) }
        if direction == .write { try datagram(id).sendTarget = target }
        return try await driver.datagram(id, direction, deadline: deadline, waitFirst: waitFirst, on: self, attempt)
    }
}

/// What the escape hatches lend (``/ReadinessNet/StreamSocket``, ``/ReadinessNet/DatagramSocket``): what `reconcile` looks at.
protocol HatchSocket: AnyObject {
    var isClosed: Bool { get }
    var fd: CInt { get }
    var poller: (any Poller)? { get }
    var registration: (token: Token, interest: Interest, trigger: Trigger)? { get }
    func deregister() throws(PollerError)
}

extension StreamSocket: HatchSocket {}
extension DatagramSocket: HatchSocket {}
