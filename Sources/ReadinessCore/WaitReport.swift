#if canImport(Glibc)
import Glibc
#endif

// What every backend's wait does with what the kernel said, written once (issue 21): turn native poll
// bits into `Ready`, then report an event for a live registration (normalised to its interest, a
// one-shot registration disarmed), or mark a registration whose descriptor was found closed as stale,
// and report the waker once after draining it. A seam keeps only what is its own: the kernel call,
// its native bits, and what it does to its own state (re-arm, hide a pollfd, rebuild a set).

@_spi(Backend)
extension Ready {
    /// Linux's POLLRDHUP (needs _GNU_SOURCE, so Glibc does not export it). epoll's EPOLLRDHUP has the
    /// same value.
    public static let pollRDHUP: UInt32 = 0x2000

    /// The readiness that poll(2) bits say: POLLIN, POLLOUT, POLLRDHUP, POLLHUP and POLLERR. epoll's
    /// `EPOLL*` bits and io_uring's poll results have the same values on Linux, so the epoll, poll and
    /// io_uring backends share this one map.
    @inlinable public init(pollBits bits: UInt32) {
        var ready = Ready()
        if bits & UInt32(POLLIN) != 0 { ready.insert(.readable) }
        if bits & UInt32(POLLOUT) != 0 { ready.insert(.writable) }
        if bits & Ready.pollRDHUP != 0 { ready.insert(.readClosed) }
        if bits & UInt32(POLLHUP) != 0 { ready.insert(.hangup) }
        if bits & UInt32(POLLERR) != 0 { ready.insert(.error) }
        self = ready
    }
}

@_spi(Backend)
extension RegistrationTable {
    /// Reports that `fd` is `ready`: appends the event of its registration, normalised to the
    /// registration's interest (``Ready/normalized(_:interest:)``), and disarms a one-shot
    /// registration. Returns the registration as it was before, or nil (nothing appended, nothing
    /// disarmed) when `fd` has no active registration (not registered, disarmed, or found closed) or
    /// when nothing of `ready` concerns its interest: an event with no readiness would wake the caller
    /// for nothing, at once and again at every wait (a kernel still watching a direction the
    /// registration no longer asks for, as a kqueue filter left in place). The caller checks that
    /// the buffer has room (``EventBuffer/isFull``) and does what is its own afterwards (hide a fired
    /// one-shot entry, re-arm a request).
    @inlinable @discardableResult
    public mutating func report(_ fd: CInt, _ ready: Ready, into events: EventBuffer) -> Registration? {
        guard let registration = self[fd], registration.isActive else { return nil }
        let reported = Ready.normalized(ready, interest: registration.interest)
        if reported.isEmpty { return nil }
        if registration.trigger == .oneShot { update(fd) { $0.armed = false } }
        events.append(Event(token: registration.token, ready: reported))
        return registration
    }

    /// Marks the registration of `fd` stale: its descriptor was found closed while registered
    /// (POLLNVAL, EBADF, `fcntl` failing). It reports nothing until it is deregistered or reregistered.
    @inlinable public mutating func markStale(_ fd: CInt) { update(fd) { $0.stale = true } }
}

@_spi(Backend)
extension Waker {
    /// Reports the wake-up: drains the pending wakes and appends the one waker event. Call it only
    /// when the event fits in `events`: a drained wake-up that is not reported is lost.
    public func report(into events: EventBuffer) {
        drain()
        events.append(Event(token: .waker, ready: .readable))
    }
}
