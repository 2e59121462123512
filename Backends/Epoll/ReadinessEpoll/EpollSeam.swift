#if canImport(Glibc)
import Glibc
#endif
import CEpoll
@_spi(Backend) import ReadinessCore

/// The epoll poller (`EpollSeam.makePoller()`): its `Poller` conformance is compiled here, for this
/// seam, so calls through `any Poller` run specialised code (``/ReadinessCore/SpecializedPoller``).
@_spi(Backend)
public final class EpollPoller: SpecializedPoller {
    /// The poller every call goes to.
    public let base: ContractPoller<EpollSeam>
    /// Wraps `base` (see ``/ReadinessCore/SpecializedPoller/make(_:)``).
    public init(base: ContractPoller<EpollSeam>) { self.base = base }
}

/// Linux epoll: native one-shot and edge triggering, O(1) registration and O(ready) waits.
///
/// Each event carries the descriptor and the registration's generation. An event whose pair matches
/// no live registration comes from a file that was registered, closed while a `dup` kept it open, and
/// is still in the kernel's interest list under a number we no longer own. It would fire for ever, so
/// the backend rebuilds its epoll set from the table (as libev does when it sees a stale generation).
///
/// The rebuild needs a new epoll descriptor at a moment when the process may have none left (EMFILE):
/// the backend keeps one spare, empty epoll set made in advance (libuv keeps a reserve descriptor for
/// accept for the same reason), so a rebuild never fails for want of a descriptor. If it fails all
/// the same, the events already gathered are delivered first and the rebuild is retried by the next
/// wait: a fired one-shot event is never lost.
@_spi(Backend)
public final class EpollSeam: BackendSeam {
    /// What this epoll poller can do.
    public let capabilities: Capabilities
    /// epoll_ctl fails with EBADF (closed) and EPERM (regular file, directory), mapped by `ctl`.
    public var kernelChecksDescriptor: Bool { true }
    /// The epoll set and its spare.
    public func ownsDescriptor(_ fd: CInt) -> Bool { fd == epfd || fd == spare }
    private var epfd: CInt
    /// An empty epoll set kept for the next rebuild (-1 until one could be made).
    private var spare: CInt = -1
    /// A rebuild that could not be done yet.
    private var rebuildPending = false
    private let waker: Waker
    private var native: UnsafeMutableRawPointer
    private var nativeCapacity: Int
    private static let wakerData = UInt64.max

    /// epoll's capabilities, before a poller exists.
    public static let baseCapabilities = Capabilities(
        name: "epoll", edgeTriggered: true, oneShot: .native, timeoutResolution: .milliseconds(1),
        maxDescriptor: CInt.max, reportsReadClosed: true, reportsHangupAndError: true)

    /// Creates the epoll instance and registers the waker.
    public init(waker: Waker) throws(PollerError) {
        capabilities = Self.baseCapabilities
        self.waker = waker
        epfd = rd_epoll_create()
        guard epfd >= 0 else { throw .failed("epoll_create1", errno: errno) }
        nativeCapacity = 64
        guard let events = rd_epoll_events_allocate(64) else {
            Sys.close(epfd)
            throw .failed("calloc", errno: ENOMEM)
        }
        native = events
        guard rd_epoll_ctl(epfd, rd_EPOLL_CTL_ADD, waker.fd, rd_EPOLLIN, Self.wakerData) == 0 else {
            let e = errno  // deinit (which runs for a fully initialized object) releases both
            throw .failed("epoll_ctl(waker)", errno: e)
        }
        spare = rd_epoll_create()
        guard spare >= 0 else { throw .failed("epoll_create1(spare)", errno: errno) }
    }

    /// Creates an epoll poller.
    public static func makePoller() throws(PollerError) -> EpollPoller {
        try EpollPoller.make { waker throws(PollerError) in try EpollSeam(waker: waker) }
    }

    @inline(__always)
    private static func bits(_ r: Registration) -> UInt32 {
        var bits: UInt32 = 0
        if r.interest.contains(.readable) { bits |= rd_EPOLLIN | rd_EPOLLRDHUP }
        if r.interest.contains(.writable) { bits |= rd_EPOLLOUT }
        switch r.trigger {
        case .level: break
        case .edge: bits |= rd_EPOLLET
        case .oneShot: bits |= rd_EPOLLONESHOT
        }
        return bits
    }

    @inline(__always)
    private static func data(_ fd: CInt, _ r: Registration) -> UInt64 {
        UInt64(r.generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    private func ctl(_ op: CInt, _ fd: CInt, _ r: Registration, _ name: String) throws(PollerError) {
        guard rd_epoll_ctl(epfd, op, fd, Self.bits(r), Self.data(fd, r)) != 0 else { return }
        let e = errno
        switch e {
        case EBADF: throw .badDescriptor(fd)
        case EPERM: throw .unsupportedDescriptor(fd)
        default: throw .failed(name, errno: e)
        }
    }

    /// EPOLL_CTL_ADD for `fd` (see `BackendSeam`).
    public func add(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        do {
            try ctl(rd_EPOLL_CTL_ADD, fd, registration, "epoll_ctl(ADD)")
        } catch .system(_, EEXIST) {
            // This very file is still in the set under this number: registered earlier, its number
            // closed while a dup kept the file open, deregistered (DEL could not reach it), and now
            // put back on the same number. Its stale entry is ours to update.
            try ctl(rd_EPOLL_CTL_MOD, fd, registration, "epoll_ctl(MOD)")
        }
    }

    /// EPOLL_CTL_MOD for `fd`, re-arming it (see `BackendSeam`).
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        // `new` carries a new generation (ContractPoller.reregister).
        do {
            try ctl(rd_EPOLL_CTL_MOD, fd, new, "epoll_ctl(MOD)")
        } catch .badDescriptor(let refused) {
            // The number now names an O_PATH file, which epoll_ctl refuses with EBADF before asking
            // what it is: a regular file or a directory meets rule 9 first, as register's check and
            // every other backend's find it.
            throw Sys.checkKind(fd) ?? .badDescriptor(refused)
        } catch .system(_, ENOENT) {
            // Not in the kernel's set: dropped by a rebuild while disarmed, or the registered file was
            // closed and the number now names another one. reregister applies the registration to
            // the file the number names now (Docs/Contract.md, "reregister"); if the old file lingers
            // through a dup, its events carry the old generation and make the set be rebuilt. That
            // file is checked as register checks one (a procfs file has a poll method: ADD would take it).
            if let refusal = Sys.checkKind(fd) { throw refusal }
            try ctl(rd_EPOLL_CTL_ADD, fd, new, "epoll_ctl(ADD)")
        }
    }

    /// EPOLL_CTL_DEL for `fd`, tolerating a closed descriptor (see `BackendSeam`).
    public func remove(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        guard rd_epoll_ctl(epfd, rd_EPOLL_CTL_DEL, fd, 0, 0) != 0 else { return }
        let e = errno
        // Closed while registered (the kernel already forgot it), or a different file now has the
        // number: either way nothing of ours is left to remove under that number.
        if e == EBADF || e == ENOENT || e == EPERM { return }
        throw .failed("epoll_ctl(DEL)", errno: e)
    }

    /// One epoll_wait of at most `timeout` (see `BackendSeam`).
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        // A rebuild that failed before is retried; failing again, the wait still delivers what the
        // old set reports (below, a foreign event with nothing else to deliver throws instead).
        if rebuildPending { try? rebuild(table) } else { addUnadded(table) }
        if events.capacity > nativeCapacity { try growNative(events.capacity) }
        let n = rd_epoll_wait(epfd, native, CInt(events.capacity), timeout.milliseconds)
        if n < 0 {
            if errno == EINTR { return .interrupted }
            throw .failed("epoll_wait", errno: errno)
        }
        var sawForeign = false
        for i in 0..<Int(n) {
            let data = rd_epoll_event_data(native, CInt(i))
            if data == Self.wakerData {
                waker.report(into: events)
                continue
            }
            let fd = CInt(bitPattern: UInt32(truncatingIfNeeded: data))
            guard let registration = table[fd], registration.generation == UInt32(data >> 32) else {
                sawForeign = true
                continue
            }
            // EPOLL* bits have poll(2)'s values.
            table.report(fd, Ready(pollBits: rd_epoll_event_bits(native, CInt(i))), into: events)
        }
        if sawForeign {
            rebuildPending = true
            do {
                try rebuild(table)
            } catch {
                // Deliver what was gathered (one-shot registrations are already disarmed); the next
                // wait retries. With nothing to deliver, say why rather than spin on the stale file.
                if events.isEmpty { throw error }
            }
        }
        return .events(events.count)
    }

    /// Replaces the epoll set by a new one holding exactly the live registrations, under the same
    /// descriptor number (dup3), so a file that lingers through a dup stops firing. The new set is the
    /// spare made in advance; a new spare is made once the old set's descriptor is released.
    private func rebuild(_ table: RegistrationTable) throws(PollerError) {
        if spare < 0 {
            spare = rd_epoll_create()
            guard spare >= 0 else { throw .failed("epoll_create1", errno: errno) }
        }
        let fresh = spare
        spare = -1
        guard rd_epoll_ctl(fresh, rd_EPOLL_CTL_ADD, waker.fd, rd_EPOLLIN, Self.wakerData) == 0 else {
            // Out of memory or watches for the waker itself: keep the old set, every registration in
            // it; the next wait tries again.
            let e = errno
            Sys.close(fresh)
            throw .failed("epoll_ctl(ADD) rebuilding the set", errno: e)
        }
        // Out of memory or watches (ENOSPC: the watch limit is per user, and the old set still holds
        // its own): tried again once the old set is released below, then at each wait until taken.
        var refused: [CInt] = []
        for fd in table.descriptors {
            guard let r = table[fd], r.isActive else { continue }
            // The caller closed a registered number and it was reused by one of this poller's own sets
            // (rule 8): not a file of the caller's any more.
            if fd == fresh || fd == epfd || fd == waker.fd { continue }
            guard rd_epoll_ctl(fresh, rd_EPOLL_CTL_ADD, fd, Self.bits(r), Self.data(fd, r)) != 0 else { continue }
            let e = errno
            // Anything else (EBADF, EPERM, EINVAL, ELOOP): the number no longer names a file this set
            // can watch, and the old set did not watch it either.
            if e == ENOMEM || e == ENOSPC { refused.append(fd) }
        }
        // dup3 closes the old set (releasing its file) and puts the new one under the old number.
        let replaced = rd_epoll_replace(fresh, epfd) >= 0
        let e = errno
        Sys.close(fresh)
        // The next spare takes the number `fresh` just released. If that fails, the next rebuild
        // makes one when it needs it.
        spare = rd_epoll_create()
        guard replaced else { throw .failed("dup3", errno: e) }
        rebuildPending = false
        // The rebuild tried every live registration: what is left unadded is what it was refused now.
        unadded = Set(refused)
        addUnadded(table)
    }

    /// Registrations a rebuild could not put in the new set for want of memory or watches: tried again
    /// at each wait (and by a reregister, whose MOD finds the number missing and adds it), so that a
    /// passing shortage never leaves one silent for good while the table calls it armed.
    private var unadded: Set<CInt> = []

    private func addUnadded(_ table: RegistrationTable) {
        guard !unadded.isEmpty else { return }
        for fd in unadded {
            guard let r = table[fd], r.isActive, fd != epfd, fd != spare, fd != waker.fd else {
                unadded.remove(fd)
                continue
            }
            if rd_epoll_ctl(epfd, rd_EPOLL_CTL_ADD, fd, Self.bits(r), Self.data(fd, r)) == 0 { unadded.remove(fd); continue }
            let e = errno
            // Still short: the rest waits for the next wait (one failing call per wait, not N).
            if e == ENOMEM || e == ENOSPC { break }
            unadded.remove(fd)
        }
    }

    private func growNative(_ capacity: Int) throws(PollerError) {
        guard let grown = rd_epoll_events_allocate(CInt(capacity)) else {
            throw .failed("calloc", errno: ENOMEM)
        }
        rd_epoll_events_free(native)
        native = grown
        nativeCapacity = capacity
    }

    /// Closes the epoll descriptor.
    public func close() {
        if epfd >= 0 { Sys.close(epfd) }
        if spare >= 0 { Sys.close(spare) }
        epfd = -1
        spare = -1
    }

    deinit {
        close()
        rd_epoll_events_free(native)
    }
}
