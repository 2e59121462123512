#if canImport(Glibc)
import Glibc
#endif
import CEpoll
import ReadinessCore

/// Linux epoll: native one-shot and edge triggering, O(1) registration and O(ready) waits.
///
/// Each event carries the descriptor and the registration's generation. An event whose pair matches
/// no live registration comes from a file that was registered, closed while a `dup` kept it open, and
/// is still in the kernel's interest list under a number we no longer own. It would fire for ever, so
/// the backend rebuilds its epoll set from the table (as libev does when it sees a stale generation).
public final class EpollSeam: PollerSeam {
    /// What this epoll poller can do.
    public let capabilities: Capabilities
    /// epoll_ctl fails with EBADF (closed) and EPERM (regular file, directory), mapped by `ctl`.
    public var kernelChecksDescriptor: Bool { true }
    private var epfd: CInt
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
        guard epfd >= 0 else { throw .system(operation: "epoll_create1", errno: errno) }
        nativeCapacity = 64
        guard let events = rd_epoll_events_allocate(64) else {
            Sys.close(epfd)
            throw .system(operation: "calloc", errno: ENOMEM)
        }
        native = events
        guard rd_epoll_ctl(epfd, 0, waker.fd, rd_EPOLLIN, Self.wakerData) == 0 else {
            let e = errno  // deinit (which runs for a fully initialized object) releases both
            throw .system(operation: "epoll_ctl(waker)", errno: e)
        }
    }

    /// Creates an epoll poller.
    public static func makePoller() throws(PollerError) -> SeamPoller<EpollSeam> {
        try SeamPoller.make { waker throws(PollerError) in try EpollSeam(waker: waker) }
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
        default: throw .system(operation: name, errno: e)
        }
    }

    /// EPOLL_CTL_ADD for `fd` (see `PollerSeam`).
    public func add(_ fd: CInt, _ registration: Registration, at index: Int) throws(PollerError) {
        try ctl(0, fd, registration, "epoll_ctl(ADD)")
    }

    /// EPOLL_CTL_MOD for `fd`, re-arming it (see `PollerSeam`).
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        var changed = new
        changed.generation = old.generation
        do {
            try ctl(1, fd, changed, "epoll_ctl(MOD)")
        } catch .system(_, ENOENT) {
            // Not in the kernel's set (dropped by a rebuild while disarmed): add it back.
            try ctl(0, fd, changed, "epoll_ctl(ADD)")
        }
    }

    /// EPOLL_CTL_DEL for `fd`, tolerating a closed descriptor (see `PollerSeam`).
    public func remove(_ fd: CInt, _ registration: Registration, lastIndex: Int) throws(PollerError) {
        guard rd_epoll_ctl(epfd, 2, fd, 0, 0) != 0 else { return }
        let e = errno
        // Closed while registered (the kernel already forgot it), or a different file now has the
        // number: either way nothing of ours is left to remove under that number.
        if e == EBADF || e == ENOENT || e == EPERM { return }
        throw .system(operation: "epoll_ctl(DEL)", errno: e)
    }

    /// One epoll_wait of at most `timeout` (see `PollerSeam`).
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        if events.capacity > nativeCapacity { try growNative(events.capacity) }
        let n = rd_epoll_wait(epfd, native, CInt(events.capacity), timeout.milliseconds)
        if n < 0 {
            if errno == EINTR { return .interrupted }
            throw .system(operation: "epoll_wait", errno: errno)
        }
        var sawForeign = false
        for i in 0..<Int(n) {
            let data = rd_epoll_event_data(native, CInt(i))
            if data == Self.wakerData {
                waker.drain()
                events.append(Event(token: .waker, ready: .readable))
                continue
            }
            let fd = CInt(bitPattern: UInt32(truncatingIfNeeded: data))
            guard let registration = table[fd], registration.generation == UInt32(data >> 32) else {
                sawForeign = true
                continue
            }
            let raw = rd_epoll_event_bits(native, CInt(i))
            var ready = Ready()
            if raw & rd_EPOLLIN != 0 { ready.insert(.readable) }
            if raw & rd_EPOLLOUT != 0 { ready.insert(.writable) }
            if raw & rd_EPOLLRDHUP != 0 { ready.insert(.readClosed) }
            if raw & rd_EPOLLHUP != 0 { ready.insert(.hangup) }
            if raw & rd_EPOLLERR != 0 { ready.insert(.error) }
            if registration.trigger == .oneShot { table.update(fd) { $0.armed = false } }
            events.append(Event(token: registration.token, ready: Ready.normalized(ready, interest: registration.interest)))
        }
        if sawForeign { try rebuild(table) }
        return .events(events.count)
    }

    /// Replaces the epoll set by a new one holding exactly the live registrations, under the same
    /// descriptor number (dup3), so a file that lingers through a dup stops firing.
    private func rebuild(_ table: RegistrationTable) throws(PollerError) {
        let fresh = rd_epoll_create()
        guard fresh >= 0 else { throw .system(operation: "epoll_create1", errno: errno) }
        defer { Sys.close(fresh) }
        _ = rd_epoll_ctl(fresh, 0, waker.fd, rd_EPOLLIN, Self.wakerData)
        for fd in table.descriptors {
            guard let r = table[fd], r.isActive else { continue }
            _ = rd_epoll_ctl(fresh, 0, fd, Self.bits(r), Self.data(fd, r))
        }
        guard rd_epoll_replace(fresh, epfd) >= 0 else { throw .system(operation: "dup3", errno: errno) }
    }

    private func growNative(_ capacity: Int) throws(PollerError) {
        guard let grown = rd_epoll_events_allocate(CInt(capacity)) else {
            throw .system(operation: "calloc", errno: ENOMEM)
        }
        rd_epoll_events_free(native)
        native = grown
        nativeCapacity = capacity
    }

    /// Closes the epoll descriptor.
    public func close() {
        if epfd >= 0 { Sys.close(epfd) }
        epfd = -1
    }

    deinit {
        close()
        rd_epoll_events_free(native)
    }
}
