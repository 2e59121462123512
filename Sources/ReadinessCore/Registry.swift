#if canImport(Glibc)
import Glibc
#endif

/// The state of one registered descriptor, shared by every backend.
@_spi(Backend)
public struct Registration: Hashable, Sendable {
    /// The caller's token.
    public var token: Token
    /// The directions watched.
    public var interest: Interest
    /// Level, one-shot or edge.
    public var trigger: Trigger
    /// False once a one-shot registration has fired, until it is re-armed.
    public var armed: Bool = true
    /// True once the backend saw that the descriptor was closed while registered (POLLNVAL, EBADF);
    /// a stale registration reports nothing until it is deregistered.
    public var stale: Bool = false
    /// Distinguishes this registration from an earlier one of the same descriptor number
    /// (epoll carries it in the event data, to recognise events of a file that is gone).
    public var generation: UInt32 = 0
    /// Position in ``RegistrationTable/descriptors``.
    public var index: Int32 = 0

    /// An armed registration.
    public init(token: Token, interest: Interest, trigger: Trigger) {
        self.token = token
        self.interest = interest
        self.trigger = trigger
    }

    /// True when the backend should watch the descriptor now.
    @inlinable public var isActive: Bool { armed && !stale }
}

/// Registered descriptors: a table indexed by descriptor number (O(1) look-up, as libev's `anfds`)
/// plus a dense list of the registered numbers (O(1) insert and swap-remove, and iteration that never
/// scans numbers nobody registered). Backends that keep a native array (poll's `pollfd`s, libevent's
/// `struct event`s) mirror the dense list's order.
@_spi(Backend)
public struct RegistrationTable: Sendable {
    @usableFromInline var slots: [Registration?] = []
    /// The registered descriptors, in dense order.
    public private(set) var descriptors: [CInt] = []
    private var nextGeneration: UInt32 = 1

    /// An empty table.
    public init() {}

    /// How many descriptors are registered.
    @inlinable public var count: Int { descriptors.count }

    /// The registration of `fd`, if any.
    @inlinable public subscript(fd: CInt) -> Registration? {
        let i = Int(fd)
        return i >= 0 && i < slots.count ? slots[i] : nil
    }

    /// Changes the registration of a registered `fd` in place.
    @inlinable public mutating func update(_ fd: CInt, _ body: (inout Registration) -> Void) {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i] != nil else { return }
        body(&slots[i]!)
    }

    /// Adds `registration` for `fd` at the end of the dense list; returns it as stored. A negative
    /// number names no descriptor and is not stored (the registration is returned as given): the
    /// contract's checks refuse it before (rule 1), a backend that skips them does not trap here.
    @discardableResult
    public mutating func insert(_ fd: CInt, _ registration: Registration) -> Registration {
        guard fd >= 0 else { return registration }
        let i = Int(fd)
        if i >= slots.count {
            slots.append(contentsOf: repeatElement(nil, count: max(i + 1, slots.count * 2) - slots.count))
        }
        var stored = registration
        stored.generation = nextGeneration
        nextGeneration &+= 1
        if nextGeneration == 0 { nextGeneration = 1 }
        stored.index = Int32(descriptors.count)
        descriptors.append(fd)
        slots[i] = stored
        return stored
    }

    /// The generation the next ``insert(_:_:)`` will give.
    public var upcomingGeneration: UInt32 { nextGeneration }

    /// A generation no registration has had yet (``replace(_:with:)`` stores it): a reregistered
    /// registration is told apart from what the kernel may still hold of its earlier self.
    public mutating func takeGeneration() -> UInt32 {
        let taken = nextGeneration
        nextGeneration &+= 1
        if nextGeneration == 0 { nextGeneration = 1 }
        return taken
    }

    /// Replaces the token, interest and trigger of `fd` (keeping its place) and re-arms it.
    public mutating func replace(_ fd: CInt, with registration: Registration) {
        update(fd) { current in
            current.generation = registration.generation
            current.token = registration.token
            current.interest = registration.interest
            current.trigger = registration.trigger
            current.armed = registration.armed
            current.stale = registration.stale
        }
    }

    /// Removes `fd`: the last descriptor of the dense list moves into its place (swap-remove), as the
    /// backends' mirrored arrays must do too.
    public mutating func remove(_ fd: CInt) {
        guard let registration = self[fd] else { return }
        let index = Int(registration.index)
        let last = descriptors.count - 1
        if index != last {
            let moved = descriptors[last]
            descriptors[index] = moved
            slots[Int(moved)]!.index = Int32(index)
        }
        descriptors.removeLast()
        slots[Int(fd)] = nil
    }

    /// After a backend call failed with EBADF: marks every active registration whose descriptor is
    /// no longer open as stale, calling `stopWatching` for each so the backend drops it natively.
    /// Returns false when none was found (the EBADF has another cause).
    public mutating func markClosedStale(_ stopWatching: (CInt, Registration) -> Void) -> Bool {
        var found = false
        for fd in descriptors where self[fd]?.isActive == true && !Sys.isOpen(fd) {
            update(fd) { $0.stale = true }
            if let registration = self[fd] { stopWatching(fd, registration) }
            found = true
        }
        return found
    }

    /// Removes everything (used when a poller closes).
    public mutating func removeAll() {
        slots.removeAll()
        descriptors.removeAll()
    }

    // MARK: The contract's misuse checks, in their one order (Docs/Contract.md, "Misuse").

    /// Checks a new registration; throws the contract's error for the first rule it breaks.
    ///
    /// `kernelChecksDescriptor`: the backend's own call fails for a closed descriptor (EBADF) and for a
    /// file without a poll method (EPERM: a regular file on disk, a directory, /dev/null) and maps them
    /// to the same errors, as epoll_ctl does; the device probe is then left to it. The file's kind is
    /// still checked (one `fstat`): procfs, sysfs and cgroup files are regular files with a poll
    /// method, which epoll_ctl accepts and every other backend refuses. `heldByPoller`: `fd`
    /// is one the poller itself uses (its waker, its kernel object), refused as already registered
    /// (a caller's registration would take over the poller's own events).
    public func checkRegister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger,
                              capabilities: Capabilities, kernelChecksDescriptor: Bool = false,
                              heldByPoller: Bool = false, probe: PollProbe? = nil) throws(PollerError) {
        guard fd >= 0 else { throw .invalidDescriptor(fd) }
        guard fd <= capabilities.maxDescriptor else {
            throw .descriptorTooLarge(fd, limit: capabilities.maxDescriptor &+ 1)
        }
        try Self.checkArguments(token: token, interest: interest, trigger: trigger, capabilities: capabilities)
        guard self[fd] == nil, !heldByPoller else { throw .alreadyRegistered(fd) }
        if let error = kernelChecksDescriptor ? Sys.checkKind(fd) : Self.checkPollable(fd, probe) { throw error }
    }

    private static func checkPollable(_ fd: CInt, _ probe: PollProbe?) -> PollerError? {
        var st = stat()
        return Sys.checkPollable(fd, status: &st, probe: probe)
    }

    /// Checks a change of registration; returns the current registration. The descriptor is checked
    /// as `register` checks it (open, and of a kind the kernel can poll: one `fstat`), since the
    /// number may name a new file by now, unless `kernelChecksDescriptor` (the backend's call finds a
    /// closed descriptor or a regular file itself).
    /// `heldByPoller`: the number is the poller's own descriptor now (the caller's file was closed and
    /// the poller, making a descriptor of its own, got its number): `badDescriptor`, the caller's
    /// file being gone, where applying the registration would watch the poller with itself.
    public func checkReregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger,
                                capabilities: Capabilities, kernelChecksDescriptor: Bool = false,
                                heldByPoller: Bool = false, probe: PollProbe? = nil) throws(PollerError) -> Registration {
        // The same order as register: the descriptor's sign, the arguments, the table, the kernel.
        guard fd >= 0 else { throw .invalidDescriptor(fd) }
        try Self.checkArguments(token: token, interest: interest, trigger: trigger, capabilities: capabilities)
        let current = try checkRegistered(fd)
        if heldByPoller { throw .badDescriptor(fd) }
        // The same checks as register (one fstat; devices are asked): the number may name a new file.
        if !kernelChecksDescriptor, let error = Self.checkPollable(fd, probe) { throw error }
        return current
    }

    /// Checks that `fd` is registered; returns its registration.
    public func checkRegistered(_ fd: CInt) throws(PollerError) -> Registration {
        guard fd >= 0 else { throw .invalidDescriptor(fd) }
        guard let current = self[fd] else { throw .notRegistered(fd) }
        return current
    }

    static func checkArguments(token: Token, interest: Interest, trigger: Trigger,
                               capabilities: Capabilities) throws(PollerError) {
        guard token != .waker else { throw .reservedToken }
        guard !interest.intersection(.both).isEmpty, interest.subtracting(.both).isEmpty else {
            throw .emptyInterest
        }
        guard trigger != .edge || capabilities.edgeTriggered else {
            throw .unsupportedTrigger(trigger, backend: capabilities.name)
        }
    }
}
