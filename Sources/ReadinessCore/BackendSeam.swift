#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The small interface a kernel mechanism implements (in the spirit of redis' `ae_*.c`): add, modify,
/// remove and wait. ``ContractPoller`` wraps it and keeps the whole contract (misuse checks in their
/// order, the registration table, timeouts and EINTR, close-once), so a backend is one short file.
///
/// Each method is called only after the contract's checks passed, and the table is changed only after
/// the method succeeded, so a failing backend call leaves everything as it was.
@_spi(Backend)
public protocol BackendSeam: AnyObject {
    /// What the backend can do.
    var capabilities: Capabilities { get }
    /// Start watching `fd`. `registration.index` is its place in the table's dense list (the end): a
    /// backend that mirrors that list in a native array appends to it.
    func add(_ fd: CInt, _ registration: Registration) throws(PollerError)
    /// Apply `new` (re-armed) to `fd`, currently registered as `old`.
    func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError)
    /// Stop watching `fd` (which may already be closed). The table swap-removes it: its last entry
    /// moves to `registration.index`, which a backend mirroring the dense list does to its own array.
    func remove(_ fd: CInt, _ registration: Registration) throws(PollerError)
    /// One kernel wait of at most `timeout`: report what fired with
    /// ``RegistrationTable/report(_:_:into:)`` (normalised, one-shot disarmed; ``Ready/init(pollBits:)``
    /// maps poll-style bits), mark registrations found closed with ``RegistrationTable/markStale(_:)``,
    /// report the waker once with ``Waker/report(into:)``. Return `.interrupted` on EINTR.
    func wait(_ timeout: WaitTimeout, table: inout RegistrationTable, into events: EventBuffer) throws(PollerError) -> WaitStep
    /// Release the backend's own descriptors (not the waker's: the poller closes that).
    func close()
    /// True when ``add(_:_:)`` and ``modify(_:from:to:)`` themselves fail with
    /// ``PollerError/badDescriptor(_:)`` for a closed descriptor and
    /// ``PollerError/unsupportedDescriptor(_:)`` for a regular file or directory (epoll_ctl's EBADF and
    /// EPERM, or a seam's own ``Sys/checkPollable(_:status:)`` made first), leaving everything
    /// unchanged: the poller then skips its own checks before calling them.
    var kernelChecksDescriptor: Bool { get }
    /// Whether `fd` is one of the backend's own descriptors (its kernel object: the epoll set, the
    /// io_uring ring). Registering such a number, or the waker's, is refused with
    /// ``PollerError/alreadyRegistered(_:)`` (the poller itself holds it), as on every backend.
    func ownsDescriptor(_ fd: CInt) -> Bool
    /// ``close()`` in a child made by `fork()`: releases this process's copies (descriptors, memory)
    /// without touching kernel state the parent still uses (no EPOLL_CTL_DEL on the shared epoll set,
    /// nothing submitted to a shared ring).
    func closeAfterFork()
}

@_spi(Backend)
extension BackendSeam {
    /// False: the poller checks descriptors itself.
    public var kernelChecksDescriptor: Bool { false }
    /// False: the backend has no descriptor of its own besides the waker.
    public func ownsDescriptor(_ fd: CInt) -> Bool { false }
    /// ``close()``: right for a backend whose close only closes its own descriptors and frees memory.
    public func closeAfterFork() { close() }
}

/// A ``Poller`` made of a ``BackendSeam``: every backend of this package is one, wrapped in a
/// ``SpecializedPoller`` so that calls through `any Poller` run code specialised for its seam.
@_spi(Backend)
public final class ContractPoller<Seam: BackendSeam>: Poller {
    /// The backend.
    public let seam: Seam
    /// The poller's waker (see ``Poller/waker``).
    public let waker: Waker
    // Used from one thread at a time (the contract) and never accessed overlapping: the dynamic
    // exclusivity check of each wait's `inout` access (swift_beginAccess) would be pure cost.
    @exclusivity(unchecked) @usableFromInline var storedTable = RegistrationTable()
    @exclusivity(unchecked) @usableFromInline var released = false
    /// Bit 0: closing (set by `close()`, never cleared). The other bits count the calls in progress
    /// (waits, registrations, changes, removals), so that a `close()` from another thread during one
    /// wakes a wait, lets the call end (with `closed` for a wait), and only then releases the
    /// descriptors; a call that begins once closing has begun fails with `closed` before it touches
    /// anything (Docs/Contract.md, "Threads").
    @usableFromInline let waitState = Atomic<Int>(0)
    /// ``Sys/forkGeneration`` when it was made: in a child made by `fork()` since, every call but
    /// `close()` fails with ``PollerError/forked`` (the epoll set, the ring and the waker are shared
    /// with the parent, whose registrations a child's change would alter).
    @usableFromInline let forkGeneration = Sys.forkGeneration
    /// The epoll set that asks the kernel whether a device or an anonymous-inode file can be polled
    /// (backends whose own call does not): made at the first such registration, closed with the poller.
    @usableFromInline let pollProbe = PollProbe()

    /// Counts a call in progress (``waitState``), or throws `closed` once closing has begun; each
    /// successful `enter()` is paired with one `leave()`.
    @inlinable func enter() throws(PollerError) {
        let before = waitState.add(2, ordering: .acquiring).oldValue
        if before & 1 != 0 {
            waitState.subtract(2, ordering: .releasing)
            throw .closed
        }
        if Sys.forkGeneration != forkGeneration {
            waitState.subtract(2, ordering: .releasing)
            throw .forked
        }
    }

    @inlinable func leave() { waitState.subtract(2, ordering: .releasing) }

    /// Runs a backend call that is not one of the ``Poller`` calls (a ``CompletionRing``'s) under
    /// their rules: refused with `closed` once the poller is closed or closing (`forked` in a child),
    /// and counted while it runs, so that a `close()` from another thread releases nothing under it.
    @inlinable public func call<T>(_ body: () throws(PollerError) -> T) throws(PollerError) -> T {
        try enter()
        defer { leave() }
        guard !released else { throw .closed }
        return try body()
    }

    /// The registrations.
    public var table: RegistrationTable { storedTable }

    /// See ``Poller/isClosed``.
    public var isClosed: Bool { waitState.load(ordering: .acquiring) & 1 != 0 }

    /// A poller of `seam`, the backend built around `waker` (which it must watch).
    public init(waker: Waker, seam: Seam) {
        self.waker = waker
        self.seam = seam
    }

    /// Creates the poller's waker, then the backend around it; if the backend cannot be created the
    /// waker is closed again, so a failed creation leaves no descriptor behind.
    public static func make(_ makeSeam: (Waker) throws(PollerError) -> Seam) throws(PollerError) -> ContractPoller<Seam> {
        let waker = try Waker()
        do {
            return ContractPoller(waker: waker, seam: try makeSeam(waker))
        } catch {
            waker.close()
            throw error
        }
    }

    deinit { if !released { shutDown() } }

    /// The backend's capabilities.
    @inlinable public var capabilities: Capabilities { seam.capabilities }

    @inlinable
    /// See ``Poller/register(_:token:interest:trigger:)``.
    public func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try enter()
        defer { leave() }
        guard !released else { throw .closed }
        try storedTable.checkRegister(fd, token: token, interest: interest, trigger: trigger, capabilities: seam.capabilities,
                                      kernelChecksDescriptor: seam.kernelChecksDescriptor,
                                      heldByPoller: fd == waker.fd || seam.ownsDescriptor(fd) || pollProbe.holds(fd),
                                      probe: pollProbe)
        var registration = Registration(token: token, interest: interest, trigger: trigger)
        registration.generation = storedTable.upcomingGeneration
        registration.index = Int32(storedTable.count)
        try seam.add(fd, registration)
        storedTable.insert(fd, registration)
    }

    @inlinable
    /// See ``Poller/reregister(_:token:interest:trigger:)``.
    public func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try enter()
        defer { leave() }
        guard !released else { throw .closed }
        let old = try storedTable.checkReregister(fd, token: token, interest: interest, trigger: trigger,
                                                  capabilities: seam.capabilities,
                                                  kernelChecksDescriptor: seam.kernelChecksDescriptor,
                                                  heldByPoller: fd == waker.fd || seam.ownsDescriptor(fd) || pollProbe.holds(fd),
                                                  probe: pollProbe)
        var new = old
        new.token = token
        new.interest = interest
        new.trigger = trigger
        new.armed = true
        // Contract, "reregister": the registration is applied afresh to the file that has the number
        // now, even one found closed (stale) whose number was reused. The backend is always asked,
        // a token-only change included: epoll cannot know that its file is gone without asking the
        // kernel (EPOLL_CTL_MOD's ENOENT), and every backend must behave alike.
        new.stale = false
        // A new generation: if the registered file was closed while a dup keeps it open, the kernel
        // may still hold it under this number (epoll); its events then carry the old generation and
        // are recognised as foreign instead of reported under the revived registration.
        new.generation = storedTable.takeGeneration()
        try seam.modify(fd, from: old, to: new)
        storedTable.replace(fd, with: new)
    }

    @inlinable
    /// See ``Poller/deregister(_:)``.
    public func deregister(_ fd: CInt) throws(PollerError) {
        try enter()
        defer { leave() }
        guard !released else { throw .closed }
        let registration = try storedTable.checkRegistered(fd)
        try seam.remove(fd, registration)
        storedTable.remove(fd)
    }

    @inlinable @discardableResult
    /// See ``Poller/wait(into:timeout:)``.
    public func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        // Counted before anything is touched: a close() from another thread waits for this wait to
        // end before it releases the descriptors; once closing has begun a wait starts no more.
        do { try enter() } catch {
            events.removeAll()   // a closed poller reports nothing: not even the last wait's events
            throw error
        }
        defer { leave() }
        events.removeAll()
        let n = try runWait(timeout: timeout) { (remaining: WaitTimeout) throws(PollerError) -> WaitStep in
            events.removeAll()
            return try seam.wait(remaining, table: &storedTable, into: events)
        }
        // Woken by a close() from another thread: the events collected are no longer the caller's.
        if waitState.load(ordering: .acquiring) & 1 != 0 {
            events.removeAll()
            throw .closed
        }
        return n
    }

    /// See ``Poller/close()``. It may be called from another thread while a wait or another call runs
    /// (the one overlap the contract allows besides the waker): it wakes a wait, which ends with
    /// `closed`, lets a registration call in progress end, and releases the descriptors only after
    /// every such call ended; a call that begins after it fails with `closed`.
    public func close() throws(PollerError) {
        // The atomic bit alone decides (a plain `released` read here raced a concurrent close's write).
        let before = waitState.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        guard before & 1 == 0 else { throw .closed }
        // In a child made by fork(): the count copied from the parent may hold calls of threads that
        // do not exist here (a loop thread in its wait), and no other thread can be in a call.
        if Sys.forkGeneration != forkGeneration {
            shutDown()
            return
        }
        // A call in progress: wake a wait (again every millisecond, in case it had not yet reached
        // the kernel's wait, or a backend re-arms its waker only at the start of a wait) until every
        // call ended.
        while waitState.load(ordering: .acquiring) != 1 {
            try? waker.wake()
            usleep(1_000)
        }
        shutDown()
    }

    private func shutDown() {
        released = true
        if Sys.forkGeneration != forkGeneration { seam.closeAfterFork() } else { seam.close() }
        pollProbe.close()
        waker.close()
        storedTable.removeAll()
    }
}

/// A backend's own poller type: a ``ContractPoller`` of one concrete seam whose `Poller` conformance is
/// compiled in the module that declares the type.
///
/// Run-time selection hands a library `any Poller`. A call through it lands in the conformance's
/// witness; for `ContractPoller<Seam>` that witness is generic over `Seam` (every seam call through a
/// witness table, nothing inlined), whereas for a `SpecializedPoller` the witnesses below are
/// instantiated for the concrete seam in the backend's module, with ``ContractPoller``'s inlinable code
/// inlined into them. So `any Poller` costs one indirect call more than the concrete type, and code
/// generic over `P: Poller` costs the same. A third-party backend gets the same by declaring, in its
/// own module, `final class MyPoller: SpecializedPoller { let base: ContractPoller<MySeam> ... }`.
@_spi(Backend)
public protocol SpecializedPoller: Poller {
    /// The backend's seam.
    associatedtype Seam: BackendSeam
    /// The poller all calls go to.
    var base: ContractPoller<Seam> { get }
    /// Wraps `base`.
    init(base: ContractPoller<Seam>)
}

@_spi(Backend)
extension SpecializedPoller {
    /// Creates the waker, then the seam around it (see ``ContractPoller/make(_:)``), and wraps them.
    @inlinable
    public static func make(_ makeSeam: (Waker) throws(PollerError) -> Seam) throws(PollerError) -> Self {
        Self(base: try ContractPoller.make(makeSeam))
    }

    /// The backend.
    @inlinable public var seam: Seam { base.seam }
    /// The registrations.
    @inlinable public var table: RegistrationTable { base.table }
    /// See ``Poller/capabilities``.
    @inlinable public var capabilities: Capabilities { base.capabilities }
    /// See ``Poller/waker``.
    @inlinable public var waker: Waker { base.waker }

    /// See ``Poller/register(_:token:interest:trigger:)``.
    @inlinable
    public func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try base.register(fd, token: token, interest: interest, trigger: trigger)
    }

    /// See ``Poller/reregister(_:token:interest:trigger:)``.
    @inlinable
    public func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try base.reregister(fd, token: token, interest: interest, trigger: trigger)
    }

    /// See ``Poller/deregister(_:)``.
    @inlinable
    public func deregister(_ fd: CInt) throws(PollerError) { try base.deregister(fd) }

    /// See ``Poller/wait(into:timeout:)``.
    @inlinable @discardableResult
    public func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        try base.wait(into: events, timeout: timeout)
    }

    /// See ``Poller/close()``.
    @inlinable
    public func close() throws(PollerError) { try base.close() }

    /// See ``Poller/isClosed``.
    @inlinable public var isClosed: Bool { base.isClosed }
}

/// The seam's name before issue 21 (an anagram of ``ContractPoller``'s old name).
@_spi(Backend) @available(*, deprecated, renamed: "BackendSeam")
public typealias PollerSeam = BackendSeam

/// The contract-keeping poller's name before issue 21.
@_spi(Backend) @available(*, deprecated, renamed: "ContractPoller")
public typealias SeamPoller<Seam: BackendSeam> = ContractPoller<Seam>
