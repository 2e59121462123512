#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore

/// The poll poller (`PollSeam.makePoller()`): its `Poller` conformance is compiled here, for this
/// seam, so calls through `any Poller` run specialised code (``/ReadinessCore/SpecializedPoller``).
@_spi(Backend)
public final class PollPoller: SpecializedPoller {
    /// The poller every call goes to.
    public let base: ContractPoller<PollSeam>
    /// Wraps `base` (see ``/ReadinessCore/SpecializedPoller/make(_:)``).
    public init(base: ContractPoller<PollSeam>) { self.base = base }
}

/// poll(2): a `pollfd` array that mirrors the registration table's dense order, kept between waits
/// (no rebuild per wait), with the waker in slot 0. One-shot is emulated by hiding a fired entry
/// (a negative `fd`, which poll ignores); a descriptor closed while registered (POLLNVAL) is hidden
/// the same way and marked stale.
@_spi(Backend)
public final class PollSeam: BackendSeam {
    /// What this poll poller can do.
    public let capabilities: Capabilities
    private let waker: Waker
    private var fds: UnsafeMutablePointer<pollfd>
    private var allocated: Int
    private var used = 1
    /// Where the next scan starts, so that when more descriptors are ready than the buffer holds,
    /// every one gets its turn.
    private var rotor = 0

    /// Linux's POLLRDHUP, as a `pollfd` event bit.
    static let pollRDHUP = Int16(Ready.pollRDHUP)

    /// poll's capabilities, before a poller exists.
    public static let baseCapabilities = Capabilities(
        name: "poll", edgeTriggered: false, oneShot: .emulated, timeoutResolution: .milliseconds(1),
        maxDescriptor: CInt.max, reportsReadClosed: true, reportsHangupAndError: true)

    /// A poll seam whose first `pollfd` is the waker.
    public init(waker: Waker) {
        capabilities = Self.baseCapabilities
        self.waker = waker
        allocated = 64
        fds = .allocate(capacity: allocated)
        fds[0] = pollfd(fd: waker.fd, events: Int16(POLLIN), revents: 0)
    }

    deinit { fds.deallocate() }

    /// Creates a poll poller.
    public static func makePoller() throws(PollerError) -> PollPoller {
        try PollPoller.make { PollSeam(waker: $0) }
    }

    @inline(__always)
    private static func entry(_ fd: CInt, _ r: Registration) -> pollfd {
        var events: Int16 = 0
        if r.interest.contains(.readable) { events |= Int16(POLLIN) | pollRDHUP }
        if r.interest.contains(.writable) { events |= Int16(POLLOUT) }
        return pollfd(fd: r.isActive ? fd : -1, events: events, revents: 0)
    }

    /// Appends the `pollfd` of `fd` (see `BackendSeam`).
    public func add(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        if used == allocated {
            let grown = UnsafeMutablePointer<pollfd>.allocate(capacity: allocated * 2)
            grown.moveInitialize(from: fds, count: used)
            fds.deallocate()
            fds = grown
            allocated *= 2
        }
        fds[used] = Self.entry(fd, registration)
        used += 1
    }

    /// Updates the events of the `pollfd` of `fd` (see `BackendSeam`).
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        fds[Int(old.index) + 1] = Self.entry(fd, new)
    }

    /// Swap-removes the `pollfd` of `fd` (see `BackendSeam`).
    public func remove(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        used -= 1
        fds[Int(registration.index) + 1] = fds[used]   // the table's swap-remove, mirrored
    }

    /// One poll(2) of at most `timeout` (see `BackendSeam`).
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        var n = Int(poll(fds, nfds_t(used), timeout.milliseconds))
        if n < 0 {
            let e = errno
            if e == EINTR { return .interrupted }
            // More entries than the soft RLIMIT_NOFILE (lowered since they were registered): rule 10.
            if e == EINVAL, Sys.exceedsPollLimit(used) { throw .resourceExhausted(operation: "poll", errno: e) }
            throw .failed("poll", errno: e)
        }
        if n > 0, fds[0].revents != 0 {
            fds[0].revents = 0
            waker.report(into: events)
            n -= 1
        }
        let count = used - 1
        guard n > 0, count > 0 else { return .events(events.count) }
        var index = rotor % count
        for _ in 0..<count where n > 0 && !events.isFull {
            let slot = fds + index + 1
            let revents = slot.pointee.revents
            if revents != 0 {
                n -= 1
                slot.pointee.revents = 0
                let fd = table.descriptors[index]
                if revents & Int16(POLLNVAL) != 0 {
                    slot.pointee.fd = -1
                    table.markStale(fd)
                } else if let fired = table.report(fd, Ready(pollBits: UInt32(UInt16(bitPattern: revents))), into: events),
                          fired.trigger == .oneShot {
                    slot.pointee.fd = -1   // disarmed: hidden from poll until reregistered
                }
            }
            index += 1
            if index == count { index = 0 }
        }
        // The next wait starts after the last one looked at: with the buffer full, the ready ones
        // not reported come first next time (a rotor moving one place would starve a sparse few).
        // Entries not looked at keep their revents, cleared by the next poll call.
        rotor = index
        return .events(events.count)
    }

    /// Nothing to do: poll holds no descriptor of its own.
    public func close() {}
}
