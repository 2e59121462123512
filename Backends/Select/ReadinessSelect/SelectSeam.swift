#if canImport(Glibc)
import Glibc
#endif
import CSelect
@_spi(Backend) import ReadinessCore

/// The select poller (`SelectSeam.makePoller()`): its `Poller` conformance is compiled here, for this
/// seam, so calls through `any Poller` run specialised code (``/ReadinessCore/SpecializedPoller``).
@_spi(Backend)
public final class SelectPoller: SpecializedPoller {
    /// The poller every call goes to.
    public let base: ContractPoller<SelectSeam>
    /// Wraps `base` (see ``/ReadinessCore/SpecializedPoller/make(_:)``).
    public init(base: ContractPoller<SelectSeam>) { self.base = base }
}

/// select(2): two master sets kept up to date on every registration change, copied (not rebuilt)
/// before each wait; results are read by walking the registered descriptors, never 0 ..< FD_SETSIZE.
/// Descriptors at or above FD_SETSIZE are refused by the contract's checks before FD_SET is reached.
///
/// select fails the whole call with EBADF when one descriptor was closed while registered; the
/// backend then finds the closed ones (fcntl), marks them stale, drops them from the sets and retries.
/// A descriptor closed by another thread *during* the call is reported ready by the kernel (it polls a
/// number it can no longer resolve as readable and writable): each reported descriptor is checked to
/// be open (one fcntl per reported descriptor) and a closed one is marked stale instead.
@_spi(Backend)
public final class SelectSeam: BackendSeam {
    /// What this select poller can do.
    public let capabilities: Capabilities
    private let waker: Waker
    private let setBytes: Int
    private let masterRead, masterWrite, workRead, workWrite: UnsafeMutableRawPointer
    /// Highest descriptor in the master sets, recomputed lazily after the highest one leaves.
    private var maxFD: CInt
    private var maxFDDirty = false
    private var rotor = 0
    /// Descriptors in the master write set: with none, a wait passes no write set at all.
    private var writers = 0

    /// select's capabilities, before a poller exists.
    public static var baseCapabilities: Capabilities {
        Capabilities(name: "select", edgeTriggered: false, oneShot: .emulated, timeoutResolution: .microseconds(1),
                     maxDescriptor: rd_fd_setsize() - 1, reportsReadClosed: false, reportsHangupAndError: false)
    }

    /// A select seam whose master sets hold the waker.
    public init(waker: Waker) throws(PollerError) {
        capabilities = Self.baseCapabilities
        guard waker.fd < rd_fd_setsize() else {
            // The process's state, not the backend's: `descriptorTooLarge`, which a probe does not keep.
            throw .descriptorTooLarge(waker.fd, limit: rd_fd_setsize())
        }
        self.waker = waker
        setBytes = Int(rd_fd_set_bytes())
        func makeSet(_ bytes: Int) -> UnsafeMutableRawPointer {
            let set = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16)
            rd_fd_zero(set)
            return set
        }
        masterRead = makeSet(setBytes)
        masterWrite = makeSet(setBytes)
        workRead = makeSet(setBytes)
        workWrite = makeSet(setBytes)
        rd_fd_set(waker.fd, masterRead)
        maxFD = waker.fd
    }

    deinit {
        for set in [masterRead, masterWrite, workRead, workWrite] { set.deallocate() }
    }

    /// Creates a select poller.
    public static func makePoller() throws(PollerError) -> SelectPoller {
        try SelectPoller.make { waker throws(PollerError) in try SelectSeam(waker: waker) }
    }

    /// Puts `fd` in the master sets as `r` asks (nil or inactive: in neither).
    private func apply(_ fd: CInt, _ r: Registration?) {
        let interest = r.map { $0.isActive ? $0.interest : [] } ?? []
        if interest.contains(.readable) { rd_fd_set(fd, masterRead) } else { rd_fd_clr(fd, masterRead) }
        let wasWriter = rd_fd_isset(fd, masterWrite) != 0
        if interest.contains(.writable) {
            rd_fd_set(fd, masterWrite)
            if !wasWriter { writers += 1 }
        } else if wasWriter {
            rd_fd_clr(fd, masterWrite)
            writers -= 1
        }
        if !interest.isEmpty, fd >= maxFD {
            // Also a re-armed highest descriptor: the maximum is known again, no rescan needed.
            maxFD = fd
            maxFDDirty = false
        }
        if interest.isEmpty, fd == maxFD { maxFDDirty = true }
    }

    /// Adds `fd` to the master sets (see `BackendSeam`).
    public func add(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        apply(fd, registration)
    }

    /// Updates `fd` in the master sets (see `BackendSeam`).
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        apply(fd, new)
    }

    /// Removes `fd` from the master sets (see `BackendSeam`).
    public func remove(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        apply(fd, nil)
    }

    /// One select(2) of at most `timeout` (see `BackendSeam`).
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        if maxFDDirty { recomputeMax(table) }
        // Only the words that hold descriptors up to maxFD: select reads no further.
        let bytes = Int(rd_fd_set_bytes_through(maxFD))
        workRead.copyMemory(from: masterRead, byteCount: bytes)
        let watchesWrites = writers > 0
        if watchesWrites { workWrite.copyMemory(from: masterWrite, byteCount: bytes) }
        let tv = timeout.secondsAndMicroseconds
        var n = Int(rd_select(maxFD + 1, workRead, watchesWrites ? workWrite : nil,
                              tv.map { $0.seconds } ?? -1, tv.map { $0.microseconds } ?? 0))
        if n < 0 {
            let code = errno   // read once: markClosedStale's fcntl calls change errno
            switch code {
            case EINTR: return .interrupted
            case EBADF where table.markClosedStale({ apply($0, $1) }):
                return .interrupted  // nothing observed yet; the wait loop retries with the time left
            default: throw .failed("select", errno: code)
            }
        }
        if n > 0, rd_fd_isset(waker.fd, workRead) != 0 {
            waker.report(into: events)
            n -= 1
        }
        let descriptors = table.descriptors
        let count = descriptors.count
        guard n > 0, count > 0 else { return .events(events.count) }
        var index = rotor % count
        for _ in 0..<count where n > 0 && !events.isFull {
            let fd = descriptors[index]
            var ready = Ready()
            // Above maxFD (an inactive registration) the work sets were not copied: not this wait's.
            if fd <= maxFD {
                if rd_fd_isset(fd, workRead) != 0 { ready.insert(.readable); n -= 1 }
                if watchesWrites, rd_fd_isset(fd, workWrite) != 0 { ready.insert(.writable); n -= 1 }
            }
            if !ready.isEmpty, table[fd]?.isActive == true {
                if !Sys.isOpen(fd) {
                    table.markStale(fd)
                    apply(fd, table[fd])
                } else if let fired = table.report(fd, ready, into: events), fired.trigger == .oneShot {
                    apply(fd, table[fd])   // disarmed: out of the master sets until reregistered
                }
            }
            index += 1
            if index == count { index = 0 }
        }
        // The next wait starts after the last one looked at: with the buffer full, the ready ones
        // not reported come first next time (a rotor moving one place would starve a sparse few).
        rotor = index
        return .events(events.count)
    }

    private func recomputeMax(_ table: RegistrationTable) {
        var highest = waker.fd
        for fd in table.descriptors where fd > highest && table[fd]?.isActive == true { highest = fd }
        maxFD = highest
        maxFDDirty = false
    }

    /// Nothing to do: select holds no descriptor of its own.
    public func close() {}
}
