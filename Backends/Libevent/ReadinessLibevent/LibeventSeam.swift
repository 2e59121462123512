#if Libevent // the package trait; without it this module is empty
#if canImport(Glibc)
import Glibc
#endif
import CLibevent
@_spi(Backend) import ReadinessCore

/// The libevent poller (`LibeventSeam.makePoller()`): its `Poller` conformance is compiled here, for this
/// seam, so calls through `any Poller` run specialised code (``/ReadinessCore/SpecializedPoller``).
@_spi(Backend)
public final class LibeventPoller: SpecializedPoller {
    /// The poller every call goes to.
    public let base: ContractPoller<LibeventSeam>
    /// Wraps `base` (see ``/ReadinessCore/SpecializedPoller/make(_:)``).
    public init(base: ContractPoller<LibeventSeam>) { self.base = base }
}

/// libevent 2.1 as a backend, with libevent's own choice of kernel method or a forced one.
///
/// Each registration owns one `struct event`, allocated when it is registered and reused; a wait runs
/// one loop pass (`EVLOOP_ONCE`, plus `EVLOOP_NONBLOCK` for a zero timeout, plus a timer event for a
/// finite one) whose callbacks only record (descriptor, bits) into an array sized for every
/// registration, so nothing is lost when the caller's buffer is smaller: the rest is handed out by the
/// next waits before libevent is asked again.
///
/// libevent accepts some misuse the contract refuses (it happily adds a second event for the same
/// descriptor), so the contract's checks run before libevent is called. Where libevent's method cannot
/// survive a descriptor closed while registered on its own (select fails the loop with EBADF; poll
/// reports POLLNVAL as read and write), the backend finds the closed descriptor, deletes its event and
/// marks it stale, as the kernel backends do.
@_spi(Backend)
public final class LibeventSeam: BackendSeam {
    /// The kernel method libevent is asked to use.
    public enum Method: String, CaseIterable, Sendable {
        /// A kernel method libevent can be forced to use.
        case epoll, poll, select
    }

    /// What this libevent poller can do (its method decides).
    public let capabilities: Capabilities
    /// The method libevent reports it uses (`event_base_get_method`).
    public let method: String
    /// Whether that method is epoll, whose passes are capped by its event array (see `wait`).
    private let usesEpoll: Bool
    /// Whether that method is select, whose kernel reports a hang-up in the read set only.
    private let usesSelect: Bool
    /// The epoll method's device check (`checkedIdentity`): its set, made at the first device.
    private let probe = PollProbe()
    /// libevent's own descriptors (its epoll method's set and, with the precise timer this package
    /// asks for, its timerfd): by number and file, refused as the poller's own (Contract rule 7).
    /// Found by ``LibeventFiles``.
    /// Before, a caller could register the timerfd: libevent's epoll_ctl ADD met EEXIST and became a
    /// MOD to the caller's mask (writable: the timer never woke epoll_wait again), and a deregister
    /// removed it from libevent's set: every later wait with a timeout hung (outside reader).
    private var ownFiles: [LibeventFiles.File] = []
    private let lev: OpaquePointer
    private let waker: Waker
    private let wakerReg: OpaquePointer
    private let earlyClose: CInt
    private var regs: [OpaquePointer] = []
    /// Set by ``close()``: the events and the base are freed.
    private var baseFreed = false
    /// Removed registrations, kept for reuse.
    private var spare: [OpaquePointer] = []
    /// Descriptors that fired when the caller's buffer was full (capacity reserved at registration),
    /// each once (`inPending`), oldest first.
    private var pending: [CInt] = []
    /// Per descriptor, whether it is in `pending`.
    private var inPending: [Bool] = []
    /// `recheckPending`'s entries found ready when the buffer had filled (kept in front).
    private var kept: [CInt] = []
    /// poll(2) entries to look at `pending` again, one per registration.
    private var recheck: UnsafeMutablePointer<pollfd>
    private var recheckCapacity = 16
    /// Per descriptor, the last wait that reported it (no token twice in one wait). 64 bits: at a
    /// billion waits a second the epoch would wrap after 584 years, so a stamp is never mistaken.
    private var stamps: [UInt64] = []
    /// Per descriptor, where its event of this wait is in the caller's buffer (-1: none), valid while
    /// its stamp is this wait's: a later pass of the same wait that fires it again adds to that event.
    private var positions: [Int] = []
    private var epoch: UInt64 = 0
    private let checkOpen: Bool
    /// The epoll method cannot remove a file whose number was closed (or now names another file):
    /// if a dup keeps that file open, it fires for ever under a number libevent no longer maps, and
    /// every loop pass spins. Such deregistrations are suspects; one rebuild of the base (O(n)) clears
    /// them all. It runs when suspects reach an eighth of the registrations (so closing n connections
    /// costs O(n) in all), when a loop pass is seen spinning, or after 20 clean passes (0.1 s).
    private var suspects = 0
    /// The numbers of those suspects: a lingering file keeps its number in libevent's epoll set, so a
    /// registration added on one of them would be reported the old file's readiness; such an add
    /// rebuilds before the next pass.
    private var suspectNumbers: Set<CInt> = []
    private var cleanPasses = 0
    /// A registration was revived on a number that names another file now: the old file, if it
    /// lingers, would be reported under the revived registration, so the next wait rebuilds first.
    private var reinitBeforeNextPass = false
    /// A rebuild found no descriptor for a new base (a multithreaded process out of descriptors): it
    /// is asked again by the spin check (a pass of at least a millisecond), after 20 quiet passes, or
    /// by the suspects' count no sooner than ``deferredRebuildPause`` later (a loop always busy, or
    /// waiting with zero timeouts, has neither quiet nor measured passes), not before every wait,
    /// each try costing a scan of the registrations and of the low numbers.
    private var rebuildDeferred = false
    /// When the suspects' count may ask a deferred rebuild again (monotonic nanoseconds).
    private var deferredRetryAt: Int64 = 0
    static let deferredRebuildPause: Int64 = 100_000_000
    /// While there are suspects, a pass lasts at most this long and its CPU time is measured: a pass
    /// that burned most of it spun on a lingering file.
    private static let spinCheckMicroseconds: Int64 = 5_000
    private static let cleanPassesBeforeReinit = 20
    private static let minimumSuspectsBeforeReinit = 8
    /// For the epoll method: the identity of each registered file (dense order), to tell at
    /// deregistration whether the number still names it.
    private var files: [FileIdentity] = []
    /// libevent's epoll method returns at most its array's size per pass: 32 at first (and after a
    /// reinit), doubled (up to 4096) by each pass that fills it. `epollBatch` follows it from below:
    /// it doubles only when a pass fired that many, so it never exceeds libevent's array, and a pass
    /// that may have filled the array (one slot can go to libevent's own timerfd) is followed by
    /// another.
    private static let epollFirstBatch = 32
    private static let epollLargestBatch = 4096
    private var epollBatch = LibeventSeam.epollFirstBatch
    /// Where the next pass's fired list is first looked at when the caller's buffer cannot take all of
    /// it: just after the last event the previous full pass reported (poll's and select's rotor). From
    /// the start every time, the first fired descriptor took every contested slot: three always ready,
    /// room for two, were reported 6, 3 and 3 times in six waits (epoll, poll, select, io_uring: 4 each).
    private var passRotor = 0
    /// The descriptor of the last event put in a caller's buffer (-1: none yet). A pass whose fired
    /// list the buffer cannot take whole starts just after it, when it is in the list: the kept ones
    /// (`pending`) are reported in the list's order at the next waits, so the pass after them goes on
    /// where they ended, and ready descriptors take turns as in epoll's ready list. With the rotor
    /// alone, which moved one place a pass while the kept ones were reported in between, one of five
    /// always ready with room for one went 9 waits unreported (the differential generator, seed 778058).
    private var lastReported: CInt = -1
    /// The loop passes one wait makes to fill the caller's buffer, plus one per largest batch the
    /// buffer holds (each pass that finds no new event ends the wait).
    private static let maxPasses = 8

    /// libevent's version, e.g. "2.1.12-stable".
    public static var version: String { String(cString: rd_lev_version()) }

    /// Whether this libevent was built with `method`.
    public static func supports(_ method: Method) -> Bool { rd_lev_supports_method(method.rawValue) != 0 }

    /// A libevent base using the `requested` method (nil lets libevent choose), woken by `waker`.
    public init(method requested: Method?, waker: Waker) throws(PollerError) {
        let name = requested.map { "libevent:\($0.rawValue)" } ?? "libevent"
        var message = [CChar](repeating: 0, count: 256)
        var code: CInt = 0
        let candidates = LibeventFiles.lowestFree()
        let made: OpaquePointer? = message.withUnsafeMutableBufferPointer { buffer in
            if let requested {
                return rd_lev_new(requested.rawValue, buffer.baseAddress, CInt(buffer.count), &code)
            }
            return rd_lev_new(nil, buffer.baseAddress, CInt(buffer.count), &code)
        }
        guard let made else {
            if code != 0 { throw .failed("event_base_new(\(name))", errno: code) }
            throw .unavailable(backend: name, reason: String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        // The select method's FD_SET aborts the process (fortify) for a descriptor at FD_SETSIZE or
        // above: a waker there (a process with over a thousand descriptors open) is refused, as the
        // select backend refuses it.
        if Method(rawValue: String(cString: rd_lev_method(made))) == .select, waker.fd >= rd_lev_fd_setsize() {
            rd_lev_free(made)
            throw .descriptorTooLarge(waker.fd, limit: rd_lev_fd_setsize())
        }
        guard let wakerReg = rd_lev_reg_new(made, waker.fd, CInt(RD_LEV_READ), CInt(RD_LEV_LEVEL), 0) else {
            let e = errno
            rd_lev_free(made)
            throw .failed("event_add(waker)", errno: e)
        }
        lev = made
        ownFiles = LibeventFiles.find(among: candidates, waker: waker.fd)
        recheck = .allocate(capacity: recheckCapacity)
        self.waker = waker
        self.wakerReg = wakerReg
        method = String(cString: rd_lev_method(made))
        usesEpoll = method == "epoll"
        usesSelect = method == "select"
        checkOpen = method == "poll" || method == "select"
        stamps = Array(repeating: 0, count: Int(waker.fd) + 1)
        positions = Array(repeating: -1, count: Int(waker.fd) + 1)
        let features = rd_lev_features(made)
        earlyClose = features & CInt(RD_LEV_FEATURE_EARLY_CLOSE) != 0 ? 1 : 0
        let kernel = Method(rawValue: method)
        capabilities = Capabilities(
            name: name,
            mechanism: method,
            edgeTriggered: features & CInt(RD_LEV_FEATURE_ET) != 0,
            oneShot: .native,
            // Microseconds go to libevent. Its epoll method waits on a timerfd (PRECISE_TIMER) and its
            // select method takes a timeval: both keep them; its poll method (any other) rounds to ms.
            timeoutResolution: kernel == .epoll || kernel == .select ? .microseconds(1) : .milliseconds(1),
            // libevent's select method grows its own fd_sets past FD_SETSIZE, but Debian builds it
            // with _FORTIFY_SOURCE, whose FD_SET aborts the process at FD_SETSIZE: refuse those first.
            maxDescriptor: kernel == .select ? rd_lev_fd_setsize() - 1 : CInt.max,
            reportsReadClosed: earlyClose != 0,
            reportsHangupAndError: false)
    }

    deinit {
        close()
        recheck.deallocate()
    }

    /// Creates a libevent poller; `method` nil lets libevent choose.
    public static func makePoller(method: Method? = nil) throws(PollerError) -> LibeventPoller {
        try LibeventPoller.make { waker throws(PollerError) in try LibeventSeam(method: method, waker: waker) }
    }

    private func trigger(_ r: Registration) -> CInt {
        switch r.trigger {
        case .level: CInt(RD_LEV_LEVEL)
        case .edge: CInt(RD_LEV_EDGE)
        case .oneShot: CInt(RD_LEV_ONESHOT)
        }
    }

    /// Adds an event for `fd`, reusing a released `struct event` when there is one (see `BackendSeam`).
    public func add(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        let identity = try checkedIdentity(fd)
        guard rd_lev_reserve(lev, CInt(regs.count + 2)) == 0 else { throw .failed("realloc", errno: ENOMEM) }
        let interest = CInt(registration.interest.rawValue)
        let reg: OpaquePointer
        if let reused = spare.last {
            // A registration in steady state allocates nothing: removed events are kept and reassigned.
            guard rd_lev_reg_reuse(reused, fd, interest, trigger(registration), earlyClose) == 0 else {
                throw Self.addError(fd, errno)
            }
            spare.removeLast()
            reg = reused
        } else {
            guard let made = rd_lev_reg_new(lev, fd, interest, trigger(registration), earlyClose) else {
                throw Self.addError(fd, errno)
            }
            reg = made
        }
        regs.append(reg)
        if let identity { files.append(identity) }
        if usesEpoll, suspectNumbers.contains(fd) { reinitBeforeNextPass = true }
        pending.reserveCapacity(regs.count + 1)
        kept.reserveCapacity(regs.count + 1)
        spare.reserveCapacity(regs.count)
        if regs.count > recheckCapacity {
            recheck.deallocate()
            recheckCapacity *= 2
            recheck = .allocate(capacity: recheckCapacity)
        }
        if Int(fd) >= stamps.count { stamps.append(contentsOf: repeatElement(0, count: Int(fd) + 1 - stamps.count)) }
        if Int(fd) >= positions.count { positions.append(contentsOf: repeatElement(-1, count: Int(fd) + 1 - positions.count)) }
        if Int(fd) >= inPending.count { inPending.append(contentsOf: repeatElement(false, count: Int(fd) + 1 - inPending.count)) }
    }

    /// Re-assigns and re-adds the event of `fd` (see `BackendSeam`).
    public func modify(_ fd: CInt, from old: Registration, to new: Registration) throws(PollerError) {
        let now = try checkedIdentity(fd)
        let reg = regs[Int(old.index)]
        guard rd_lev_reg_change(reg, CInt(new.interest.rawValue), trigger(new), earlyClose) == 0 else {
            throw Self.addError(fd, errno)
        }
        if let now {
            // A revived registration (its file closed, the number reused): the old file may linger in
            // libevent's epoll set through a dup, as at deregistration. The kernel's refusal of the old
            // event's delete says so too where the identities cannot (two anonymous-inode files, an
            // eventfd and another, share one inode).
            if files[Int(old.index)] != now || rd_lev_reg_change_refused_delete(reg) != 0 || suspectNumbers.contains(fd) {
                reinitBeforeNextPass = true
            }
            files[Int(old.index)] = now
        }
    }

    /// The epoll method needs the identity of each registered file (see `files`): its seam makes the
    /// contract's descriptor check itself, with the one `fstat` that gives both.
    public var kernelChecksDescriptor: Bool { usesEpoll }

    /// See ``/ReadinessCore/BackendSeam/ownsDescriptor(_:)``: the device check's epoll set.
    public func ownsDescriptor(_ fd: CInt) -> Bool {
        if probe.holds(fd) { return true }
        guard let own = ownFiles.first(where: { $0.fd == fd }) else { return false }
        var st = stat()
        return fstat(fd, &st) == 0 && UInt64(truncatingIfNeeded: st.st_dev) == own.device
            && UInt64(truncatingIfNeeded: st.st_ino) == own.inode
    }

    /// For the epoll method: the contract's descriptor check, and the file's identity from the same
    /// `fstat` (nil for the other methods, whose poller made the check).
    private func checkedIdentity(_ fd: CInt) throws(PollerError) -> FileIdentity? {
        guard usesEpoll else { return nil }
        var st = stat()
        if let error = Sys.checkPollable(fd, status: &st, probe: probe) { throw error }
        return FileIdentity(st)
    }

    /// Deletes the event of `fd` and keeps it for reuse (see `BackendSeam`).
    public func remove(_ fd: CInt, _ registration: Registration) throws(PollerError) {
        let index = Int(registration.index)
        let lastIndex = regs.count - 1   // the table's swap-remove, mirrored
        // libevent's epoll method cannot delete a file whose number was closed first (EBADF) or now
        // names another file (ENOENT), and ignores both; if a dup keeps the old file open it stays in
        // the kernel set and fires for ever, making every later loop pass spin. Rebuilding the epoll
        // set (a rebuild of the base) removes it: once, at the next wait, however many were deregistered. The
        // shim reports the refused delete (no system call of our own); a registration already found
        // closed had its delete refused earlier.
        let refused = rd_lev_reg_remove(regs[index]) != 0
        // A one-shot that fired is no longer pending in libevent (it deleted the event itself, and
        // ignored the kernel's refusal when the number was closed): nothing was asked of the kernel
        // now, so a closed number, or one that names another file, is a suspect too (one fstat).
        var gone = false
        if usesEpoll, registration.trigger == .oneShot, !refused, !registration.stale {
            var st = stat()
            gone = fstat(fd, &st) != 0 || FileIdentity(st) != files[index]
        }
        if usesEpoll, refused || registration.stale || gone {
            suspects += 1
            suspectNumbers.insert(fd)
        }
        spare.append(regs[index])
        regs[index] = regs[lastIndex]
        regs.removeLast()
        if usesEpoll {
            files[index] = files[lastIndex]
            files.removeLast()
        }
        dropPending(fd)
    }

    /// The deferred rebuild of the base (its epoll set). Registered descriptors found closed are
    /// dropped first (marked stale), since libevent could not re-add them.
    private func reinit(_ table: inout RegistrationTable) throws(PollerError) {
        _ = table.markClosedStale { _, registration in _ = rd_lev_reg_remove(regs[Int(registration.index)]) }
        // Every event is re-added, and a failure reported if any re-add failed (a number closed and
        // reused by an unpollable file: the caller's error, Docs/Contract.md); the others are back, so
        // only a base left unusable is an error.
        epollBatch = Self.epollFirstBatch  // the reinit makes libevent's epoll array anew
        // A new base with every event moved to it (``rd_lev_rebuild``: libevent's own `event_reinit`
        // closes its signal pipe twice, which in a process with other threads can close a
        // descriptor one of them just opened). Its descriptors are made while the old base's are
        // still open, so they are among the lowest numbers free now.
        // (A number with an active registration is never a candidate: the probe must not touch a
        // caller's event. A stale one's number, closed and free, is: the new base's files may be
        // there, and its event is out of libevent.)
        var candidates = LibeventFiles.lowestFree().filter { table[$0]?.isActive != true }
        let events: [OpaquePointer?] = [wakerReg] + regs + spare
        var result = events.withUnsafeBufferPointer { rd_lev_rebuild(lev, $0.baseAddress, CInt($0.count)) }
        var e = errno
        if result == -2 {
            // No descriptor for a new base. `event_reinit` needs none but one to tell the thread count,
            // and is safe only with no other thread to take a number between its two closes;
            // otherwise the rebuild is asked again at the next wait, the suspects kept, so that each
            // pass stays capped and measured (the old base works; a lingering file spins at most a
            // pass at a time).
            guard rd_lev_single_threaded() != 0 else {
                // Asked again by the spin check or after 20 quiet passes, not before every pass (each
                // try costs a scan of the table and of the low numbers).
                suspects = max(suspects, 1)
                cleanPasses = 0
                reinitBeforeNextPass = false
                rebuildDeferred = true
                deferredRetryAt = MonotonicClock.nowNanoseconds &+ Self.deferredRebuildPause
                return
            }
            candidates = LibeventFiles.lowestFree(after: ownFiles.map(\.fd)).filter { table[$0]?.isActive != true }
            result = rd_lev_reinit(lev)
            e = errno
        }
        suspects = 0
        suspectNumbers.removeAll(keepingCapacity: true)
        cleanPasses = 0
        reinitBeforeNextPass = false
        rebuildDeferred = false
        let failed = result != 0
        ownFiles = LibeventFiles.find(among: candidates, waker: waker.fd)
        if failed, rd_lev_is_broken(lev) != 0 { throw .failed("event_reinit", errno: e) }
    }

    /// One libevent loop pass of at most `timeout` (see `BackendSeam`).
    public func wait(_ timeout: WaitTimeout, table: inout RegistrationTable,
                     into events: EventBuffer) throws(PollerError) -> WaitStep {
        if reinitBeforeNextPass || (suspects > 0 && suspects >= max(Self.minimumSuspectsBeforeReinit, regs.count / 8)
                                    && (!rebuildDeferred || MonotonicClock.nowNanoseconds >= deferredRetryAt)) {
            try reinit(&table)
        }
        epoch &+= 1
        if !pending.isEmpty { recheckPending(&table, events) }
        if events.isFull { return .events(events.count) }

        var passes = 0
        while true {
            // Something already delivered (overflow, an earlier pass): only look, do not block.
            var microseconds = events.isEmpty ? timeout.microseconds : 0
            let watching = suspects > 0 && microseconds != 0
            if watching, microseconds < 0 || microseconds > Self.spinCheckMicroseconds { microseconds = Self.spinCheckMicroseconds }
            let began = watching ? MonotonicClock.nowNanoseconds : 0
            let fired = rd_lev_loop(lev, microseconds, watching ? 1 : 0)
            let wall = watching ? MonotonicClock.nowNanoseconds - began : 0
            passes += 1
            if watching, fired == 0 {
                // Nothing for us, and the pass ended by its timer: if it burned at least half of it
                // on CPU, a lingering file made it spin. Rebuild and let the wait loop go on with the
                // time left; a quiet pass counts towards the rebuild that clears the suspects anyway.
                // (While a rebuild is deferred, only a pass long enough to tell: a pass of a few
                // microseconds is mostly the call's own CPU.)
                if rd_lev_last_loop_cpu_ns(lev) * 2 >= microseconds * 1000, !rebuildDeferred || microseconds >= 1_000 {
                    try reinit(&table)
                    return .interrupted
                }
                cleanPasses += 1
                if cleanPasses >= Self.cleanPassesBeforeReinit { try reinit(&table) }
            }
            if fired < 0 {
                let e = errno
                if !events.isEmpty { return .events(events.count) }
                if e == EINTR { return .interrupted }
                if e == EBADF, table.markClosedStale({ _ = rd_lev_reg_remove(regs[Int($1.index)]) }) { return .interrupted }
                // The poll method with more entries (the registrations, the waker, libevent's own
                // signal socket) than the soft RLIMIT_NOFILE, lowered since: rule 10, as poll's.
                if e == EINVAL, method == "poll", Sys.exceedsPollLimit(table.count + 2) {
                    throw .resourceExhausted(operation: "event_base_loop", errno: e)
                }
                throw .failed("event_base_loop", errno: e)
            }
            let before = events.count
            collect(fired, &table, events)
            // A pass that ended with real events is measured too: if it lasted a while and burned at
            // least half of it on CPU, a lingering file spun until those events came (steady traffic
            // would otherwise hide the spin for ever). Rebuilt once its events are collected.
            if watching, fired > 0, wall >= Self.spinCheckMicroseconds * 200, rd_lev_last_loop_cpu_ns(lev) * 2 >= wall {
                try reinit(&table)
            }
            // libevent's epoll method hands out at most its array's size per pass: while passes come
            // back that full and the buffer has room, look again, so a wait fills the buffer as the
            // other backends do. Level events seen twice are reported once (stamps). poll and select
            // report every ready descriptor in one pass: another would scan them all again for nothing.
            guard usesEpoll, fired >= epollBatch - 1 else { break }
            if fired >= epollBatch { epollBatch = min(epollBatch * 2, Self.epollLargestBatch) }
            // Passes grow to libevent's largest array; the cap only bounds a wait whose passes keep
            // finding new events (each pass that finds none ends the wait), so it allows enough
            // largest passes to fill the caller's buffer.
            guard !events.isFull, events.count > before,
                  passes < Self.maxPasses + events.capacity / Self.epollLargestBatch else { break }
        }
        return .events(events.count)
    }

    /// Turns one pass's fired events into the caller's events. The waker comes first, and is drained
    /// only when its event fits: an undrained eventfd fires again at the next pass, a drained one
    /// whose event was refused would be a lost wake-up.
    private func collect(_ fired: CInt, _ table: inout RegistrationTable, _ events: EventBuffer) {
        for i in 0..<fired where rd_lev_fired_fd(lev, i) == waker.fd {
            if !events.isFull, stamp(waker.fd) { waker.report(into: events) }
        }
        let count = Int(fired)
        var start = count > 0 ? passRotor % count : 0
        if count > events.capacity - events.count, lastReported >= 0 {
            for i in 0..<count where rd_lev_fired_fd(lev, CInt(i)) == lastReported {
                start = i + 1 < count ? i + 1 : 0
                break
            }
        }
        var filledAt: Int?
        for j in 0..<count {
            let position = start + j < count ? start + j : start + j - count
            let i = CInt(position)
            let fd = rd_lev_fired_fd(lev, i)
            if fd == waker.fd { continue }
            // A one-shot fired on a number closed meanwhile: libevent's delete was refused, and a dup
            // keeps the file in the epoll set, armed. A suspect now, whatever the number names at its
            // deregistration (another eventfd has the same device and inode as the first).
            if usesEpoll, rd_lev_fired_what(lev, i) & CInt(RD_LEV_DELETE_REFUSED) != 0, !suspectNumbers.contains(fd) {
                suspects += 1
                suspectNumbers.insert(fd)
            }
            if events.isFull, !reportedThisWait(fd) {
                if table[fd]?.isActive == true { keepPending(fd) }
            } else {
                deliver(fd, rd_lev_fired_what(lev, i), &table, events)
                if filledAt == nil, events.isFull { filledAt = position + 1 }
            }
        }
        if let filledAt { passRotor = filledAt }
    }

    /// Events that fired when the caller's buffer was full are not reported stale: like epoll, which
    /// re-polls its ready list at each wait, the backend looks at them again with poll(2), reports
    /// those still ready, and re-arms one-shot ones that no longer are (libevent had already
    /// disarmed them when it fired them). Oldest first, in rounds of as many as the buffer has room
    /// left for, until it is full or none is left; the others stay kept, in order, for the next wait
    /// (each descriptor once: libevent's next pass fires a level one again). Before, every kept one
    /// was polled at every wait: 8,000 ready with a buffer of 1 cost 140 us a wait where epoll took 1
    /// (the scale reader), as io_uring's kept completions once did.
    private func recheckPending(_ table: inout RegistrationTable, _ events: EventBuffer) {
        var taken = 0
        kept.removeAll(keepingCapacity: true)
        while !events.isFull, taken < pending.count {
            let room = Swift.min(events.capacity - events.count, recheckCapacity)
            var count = 0
            while taken < pending.count, count < room {
                let fd = pending[taken]
                taken += 1
                inPending[Int(fd)] = false
                guard let r = table[fd], r.isActive else { continue }
                var bits: Int16 = 0
                if r.interest.contains(.readable) { bits |= Int16(POLLIN) | (earlyClose != 0 ? Self.pollRDHUP : 0) }
                if r.interest.contains(.writable) { bits |= Int16(POLLOUT) }
                recheck[count] = pollfd(fd: fd, events: bits, revents: 0)
                count += 1
            }
            guard count > 0 else { continue }
            // In calls the kernel takes (more entries than the soft descriptor limit are split). Should
            // even one entry be refused (a limit of 0, no memory), the entries not looked at count as
            // not ready: one-shot ones are re-armed, level ones fire again in libevent's next pass.
            _ = Sys.pollNow(recheck, count: count)
            for i in 0..<count {
                let entry = recheck[i]
                let fd = entry.fd
                if entry.revents & Int16(POLLNVAL) != 0 {
                    markStale(fd, &table)
                } else if entry.revents == 0 {
                    if let r = table[fd], r.trigger == .oneShot { _ = rd_lev_reg_change(regs[Int(r.index)], CInt(r.interest.rawValue), trigger(r), earlyClose) }
                } else if events.isFull {
                    kept.append(fd)
                } else {
                    var what: CInt = 0
                    if entry.revents & Int16(POLLIN) != 0 { what |= CInt(RD_LEV_READ) }
                    if entry.revents & Int16(POLLOUT) != 0 { what |= CInt(RD_LEV_WRITE) }
                    if entry.revents & Self.pollRDHUP != 0 { what |= CInt(RD_LEV_CLOSED) }
                    // As the method itself reports them: an error in both directions; a hang-up in
                    // both, except on the select method, whose kernel marks the read set only (the
                    // same registration got writable or not by whether it waited for room here).
                    if entry.revents & Int16(POLLERR) != 0 { what |= CInt(RD_LEV_READ | RD_LEV_WRITE) }
                    if entry.revents & Int16(POLLHUP) != 0 { what |= CInt(RD_LEV_READ) | (usesSelect ? 0 : CInt(RD_LEV_WRITE)) }
                    // A one-shot reported from here is disarmed in libevent as one that fired is (a
                    // re-arm by reregister had put its event back): left armed, it would fire again,
                    // and select fail with EBADF once the caller closed it.
                    if let r = table[fd], r.isActive, r.trigger == .oneShot { _ = rd_lev_reg_remove(regs[Int(r.index)]) }
                    deliver(fd, what, &table, events)
                }
            }
        }
        // Still ready but no room (looked at this wait), then those not looked at: oldest first. In
        // place (the capacities are reserved at registration: a wait allocates nothing).
        pending.removeFirst(taken)
        for fd in kept { inPending[Int(fd)] = true }
        pending.insert(contentsOf: kept, at: 0)
    }

    /// Keeps `fd` for the next wait's look, once.
    private func keepPending(_ fd: CInt) {
        let i = Int(fd)
        if i >= inPending.count { inPending.append(contentsOf: repeatElement(false, count: i + 1 - inPending.count)) }
        guard !inPending[i] else { return }
        inPending[i] = true
        pending.append(fd)
    }

    /// Turns one fired (descriptor, bits) into an event, unless it belongs to no live registration; a
    /// descriptor this wait already reported has the bits added to that event.
    private func deliver(_ fd: CInt, _ what: CInt, _ table: inout RegistrationTable, _ events: EventBuffer) {
        guard table[fd]?.isActive == true else { return }
        // libevent's poll method turns POLLNVAL into read|write, and select(2) reports a descriptor
        // closed during the call as ready: check that the file is still there.
        if checkOpen, !Sys.isOpen(fd) {
            markStale(fd, &table)
            return
        }
        let first = stamp(fd)
        var ready = Ready()
        if what & CInt(RD_LEV_READ) != 0 { ready.insert(.readable) }
        if what & CInt(RD_LEV_WRITE) != 0 { ready.insert(.writable) }
        if what & CInt(RD_LEV_CLOSED) != 0 { ready.insert(.readClosed) }
        // libevent's epoll method maps a hang-up that comes with EPOLLRDHUP to the kernel's own bits
        // only (EV_READ|EV_WRITE only for one without), so a Unix socket hung up with a full send
        // queue (IN|HUP|RDHUP, no OUT) woke no writer of a registration for both directions, where
        // every other backend reports it writable (a hang-up adds every direction asked for). Asked
        // again, one poll(2), only for that event.
        if ready.contains(.readClosed), !ready.contains(.writable), table[fd]?.interest.contains(.writable) == true {
            var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            if Sys.retryingEINTR({ poll(&entry, 1, 0) }) == 1, entry.revents & Int16(POLLOUT | POLLHUP | POLLERR) != 0 {
                ready.insert(.writable)
            }
        }
        // Fired again by a later pass of this wait (libevent's epoll method hands out at most its
        // array's size a pass; `recheckPending` reports before the first pass): one event per
        // registration, so the new bits join the event already reported. Dropped, an edge that came
        // between the passes (a writable edge while the readable one was being reported) would be
        // reported by no wait at all: epoll and io_uring look at the file again when they report it.
        if !first, positions[Int(fd)] >= 0, let r = table[fd] {
            events.merge(Ready.normalized(ready, interest: r.interest), at: positions[Int(fd)])
            return
        }
        let before = events.count
        table.report(fd, ready, into: events)
        if events.count > before {
            positions[Int(fd)] = before
            lastReported = fd
        }
    }

    /// Whether this wait put an event of `fd`'s in the buffer (a later pass adds to it: no room needed).
    private func reportedThisWait(_ fd: CInt) -> Bool {
        let i = Int(fd)
        return i < stamps.count && stamps[i] == epoch && positions[i] >= 0
    }

    /// Marks `fd` as reported in this wait; false if it already was.
    private func stamp(_ fd: CInt) -> Bool {
        let i = Int(fd)
        if i >= stamps.count { stamps.append(contentsOf: repeatElement(0, count: i + 1 - stamps.count)) }
        if i >= positions.count { positions.append(contentsOf: repeatElement(-1, count: i + 1 - positions.count)) }
        if stamps[i] == epoch { return false }
        stamps[i] = epoch
        positions[i] = -1
        return true
    }

    /// Forgets undelivered events of a descriptor being deregistered.
    private func dropPending(_ fd: CInt) {
        guard Int(fd) < inPending.count, inPending[Int(fd)] else { return }
        inPending[Int(fd)] = false
        pending.removeAll { $0 == fd }
    }

    private func markStale(_ fd: CInt, _ table: inout RegistrationTable) {
        guard let registration = table[fd] else { return }
        // A refused delete (a dup keeps the closed file in the epoll set) is a suspect now, not only
        // at the deregister: until then the file would fire in every pass.
        if rd_lev_reg_remove(regs[Int(registration.index)]) != 0, usesEpoll {
            suspects += 1
            suspectNumbers.insert(fd)
        }
        table.markStale(fd)
    }


    /// Linux's POLLRDHUP (needs _GNU_SOURCE, so Glibc does not export it).
    private static let pollRDHUP: Int16 = 0x2000

    /// The contract's error for a failed `event_add`: the kernel's refusals named as epoll names them.
    private static func addError(_ fd: CInt, _ code: CInt) -> PollerError {
        switch code {
        case EBADF: .badDescriptor(fd)
        case EPERM: .unsupportedDescriptor(fd)
        default: .failed("event_add", errno: code)
        }
    }

    /// In a child made by `fork()`: libevent's `event_free` deletes each event from the epoll set the
    /// child shares with the parent, so the base is given a set of its own first (`event_reinit`,
    /// libevent's own answer to fork), then freed as usual. A reinit that fails leaves the base
    /// marked broken, and the frees then skip libevent's deletes. `event_reinit` closes libevent's
    /// signal pipe twice, so only a child with one thread reinitialises; a child that started threads
    /// abandons the base (its memory and signal pipe kept, libevent's epoll set and timerfd closed
    /// once here) rather than risk closing a descriptor one of them just opened.
    public func closeAfterFork() {
        guard !baseFreed else { return }
        // The poll and select methods share no kernel object with the parent: freed as usual.
        if usesEpoll, rd_lev_single_threaded() != 0 {
            _ = rd_lev_reinit(lev)
        } else if usesEpoll {
            rd_lev_abandon(lev)
            for own in ownFiles where ownsDescriptor(own.fd) { Glibc.close(own.fd) }
        }
        close()
    }

    /// Frees the events and the base, which closes libevent's own descriptors (its epoll set, timerfd,
    /// signal pair) now, not when the seam is released. Once: the poller calls nothing after it.
    public func close() {
        guard !baseFreed else { return }
        baseFreed = true
        for reg in regs { rd_lev_reg_free(reg) }
        for reg in spare { rd_lev_reg_free(reg) }
        regs.removeAll()
        spare.removeAll()
        rd_lev_reg_free(wakerReg)
        rd_lev_free(lev)
        probe.close()
    }
}

/// Which file a descriptor number names (device and inode), to notice that a number was closed or
/// now names another file.
struct FileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64
    /// The identity of the file `st` describes.
    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
#endif // Libevent
