#if canImport(Glibc)
import Glibc
#endif
import CReadinessCore

/// Thin, typed system-call wrappers. `EINTR` is handled in exactly one place: ``retryingEINTR(_:)``
/// for calls that may simply be repeated, and ``runWait(timeout:_:)`` for waits, which must be repeated
/// with the time that is left. `close` is never retried (on Linux the descriptor is gone either way).
@_spi(Backend)
public enum Sys {
    /// Runs `body` until it does not fail with EINTR. Returns its result, or -1 with `errno` set.
    @inlinable
    public static func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let result = body()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// Whether `count` poll(2) entries are more than the soft RLIMIT_NOFILE, which poll refuses with
    /// EINVAL: a process that lowered its limit below what it has registered is out of descriptors for
    /// poll's purpose (``PollerError/resourceExhausted(operation:errno:)``), not misusing it.
    public static func exceedsPollLimit(_ count: Int) -> Bool {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return false }   // RLIM_INFINITY
        return UInt64(Swift.max(count, 0)) > UInt64(limit.rlim_cur)
    }

    /// `poll(2)` with a zero timeout over `count` entries (their `revents` set), in calls the kernel
    /// takes: it refuses more entries than the soft RLIMIT_NOFILE with EINVAL (a process that lowered
    /// its limit below what it has registered), so a refused call is split in halves. False when even
    /// that fails: nothing is known of the entries not yet looked at, which the caller keeps.
    public static func pollNow(_ entries: UnsafeMutablePointer<pollfd>, count: Int) -> Bool {
        var start = 0
        var chunk = count
        while start < count {
            let n = Swift.min(chunk, count - start)
            if retryingEINTR({ poll(entries + start, nfds_t(n), 0) }) >= 0 {
                start += n
            } else if errno == EINVAL, n > 1 {
                chunk = n / 2
            } else {
                return false
            }
        }
        return true
    }

    /// What kind of descriptor `fd` is: `nil` when it is open and pollable in principle, otherwise the
    /// contract's error (closed, regular file or directory).
    public static func checkPollable(_ fd: CInt) -> PollerError? {
        var st = stat()
        return checkPollable(fd, status: &st)
    }

    /// ``checkPollable(_:)``, leaving the `fstat` it made in `st` (for a backend that needs the file's
    /// identity too, so that one system call serves both).
    public static func checkPollable(_ fd: CInt, status st: inout stat) -> PollerError? {
        checkPollable(fd, status: &st, probe: nil)
    }

    /// ``checkPollable(_:status:)`` asking `probe`'s epoll set about devices and anonymous-inode
    /// files (made at its first such question and kept): no descriptor is needed after that, so a
    /// re-arm of an eventfd, timerfd or terminal still works when the process has none left, and
    /// the question costs two system calls instead of three. nil: a throwaway set per question.
    public static func checkPollable(_ fd: CInt, status st: inout stat, probe: PollProbe?) -> PollerError? {
        if fstat(fd, &st) != 0 {
            return errno == EBADF ? .badDescriptor(fd) : .failed("fstat", errno: errno)
        }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFDIR || (kind == S_IFREG && !isPidfd(fd)) { return .unsupportedDescriptor(fd) }
        if let refusal = checkPathOnly(fd) { return refusal }
        // Devices differ one by one (a terminal polls, /dev/null does not, and poll(2) would call it
        // always ready): ask the kernel, as epoll_ctl does for the epoll backend. So do anonymous-inode
        // files (no type bits): eventfd, timerfd, signalfd, pidfd poll; a Landlock ruleset does not.
        // A pidfd some kernels call a regular file (below) is asked too.
        if kind == S_IFCHR || kind == S_IFBLK || kind == 0 || kind == S_IFREG {
            switch probe?.canPoll(fd) ?? rd_kernel_can_poll(fd) {
            case 1: return nil
            case 0: return .unsupportedDescriptor(fd)
            default: return errno == EBADF ? .badDescriptor(fd) : .failed("epoll probe of a device", errno: errno)
            }
        }
        return nil
    }

    /// The part of ``checkPollable(_:)`` that a backend whose kernel call probes the file itself
    /// (epoll_ctl) still needs: open, and neither a regular file nor a directory (procfs and sysfs
    /// regular files have a poll method, so epoll_ctl would take them).
    public static func checkKind(_ fd: CInt) -> PollerError? {
        var st = stat()
        if fstat(fd, &st) != 0 {
            return errno == EBADF ? .badDescriptor(fd) : .failed("fstat", errno: errno)
        }
        let kind = st.st_mode & S_IFMT
        // (An O_PATH descriptor: epoll_ctl itself refuses it with EBADF.)
        return kind == S_IFDIR || (kind == S_IFREG && !isPidfd(fd)) ? .unsupportedDescriptor(fd) : nil
    }

    /// A pidfd whose file the kernel reports as regular: from Linux 6.9 pidfds live on their own
    /// file system (pidfs), and some releases give its files S_IFREG (others, this contract's
    /// anonymous-inode kind, no type bits). A pidfd polls (readable once the process has exited), so
    /// it is not refused as the regular files of disks, procfs and sysfs are. One fstatfs, and only
    /// for a file that would otherwise be refused.
    private static func isPidfd(_ fd: CInt) -> Bool { rd_is_pidfs_file(fd) == 1 }

    /// An O_PATH descriptor is a location, not an open file (fstat works on it, I/O does not): the
    /// kernel's poll calls it POLLNVAL, select always ready, epoll_ctl EBADF. Every backend refuses it
    /// as epoll does, with ``PollerError/badDescriptor(_:)``.
    private static func checkPathOnly(_ fd: CInt) -> PollerError? {
        rd_is_path_only(fd) == 0 ? nil : .badDescriptor(fd)
    }

    /// How many `fork()` calls this process is the child of (0 in the original process): a poller
    /// and its waker made with another value belong to an ancestor (``PollerError/forked``).
    public static var forkGeneration: UInt32 { rd_fork_generation() }

    /// True when `fd` is an open descriptor that can do I/O: fcntl F_GETFL does not fail with EBADF,
    /// and it was not opened with O_PATH (a location only, which poll and select cannot watch).
    public static func isOpen(_ fd: CInt) -> Bool {
        switch rd_is_path_only(fd) {
        case 0: return true
        case 1: return false
        default: return errno != EBADF
        }
    }

    /// Closes a descriptor once; EINTR is not retried (Linux has already released it).
    @discardableResult
    public static func close(_ fd: CInt) -> CInt { Glibc.close(fd) }

    /// A non-blocking, close-on-exec pipe: (read end, write end), or nil with errno set.
    package static func pipe() -> (read: CInt, write: CInt)? {
        var fds: (CInt, CInt) = (-1, -1)
        let status = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: CInt.self, capacity: 2) { rd_pipe_nonblocking($0) }
        }
        return status == 0 ? (fds.0, fds.1) : nil
    }

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new descriptor, or -1 with errno set.
    package static func accept(_ listener: CInt) -> CInt { retryingEINTR { rd_accept_nonblocking(listener) } }
}

/// Monotonic time in nanoseconds, without allocation. Inside the package only: a caller outside
/// it uses `Deadline` (ReadinessNet), which wraps these nanoseconds in a type.
@usableFromInline
package enum MonotonicClock {
    /// Now, from CLOCK_MONOTONIC.
    @inlinable package static var nowNanoseconds: Int64 { rd_monotonic_ns() }

    /// The monotonic instant `nanoseconds` from `now`, saturating at `Int64.max` (which no clock
    /// reaches: a deadline that far away never passes). Negative spans count as zero.
    @inlinable
    package static func deadline(after nanoseconds: Int64, from now: Int64 = nowNanoseconds) -> Int64 {
        now.saturatingAdd(Swift.max(0, nanoseconds))
    }
}

extension Int64 {
    /// `self + other`, clamped to `Int64.min ... Int64.max` instead of trapping.
    @inlinable package func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}

/// The time a single backend wait call may block: the wait loop hands each attempt the time left.
@_spi(Backend)
public enum WaitTimeout: Sendable, Equatable {
    /// Block until an event.
    case infinite
    /// Block at most this long.
    case nanoseconds(Int64)

    /// Milliseconds for epoll_wait/poll, rounded up so the call never returns before the deadline
    /// (and a sub-millisecond timeout becomes 1 ms, not a busy 0). -1 means infinite.
    @inlinable public var milliseconds: CInt {
        switch self {
        case .infinite: return -1
        case .nanoseconds(let ns):
            if ns <= 0 { return 0 }
            let ms = Self.roundingUp(ns, to: 1_000_000)
            return ms > Int64(CInt.max) ? CInt.max : CInt(ms)
        }
    }

    /// Microseconds, rounded up; -1 means infinite.
    @inlinable public var microseconds: Int64 {
        switch self {
        case .infinite: return -1
        case .nanoseconds(let ns): return ns <= 0 ? 0 : Self.roundingUp(ns, to: 1000)
        }
    }

    /// `ns / unit`, rounded up, for any `ns` (no `ns + unit - 1` that could overflow).
    @inlinable static func roundingUp(_ ns: Int64, to unit: Int64) -> Int64 {
        ns / unit + (ns % unit == 0 ? 0 : 1)
    }

    /// Seconds and microseconds for select, rounded up; nil means infinite.
    @inlinable public var secondsAndMicroseconds: (seconds: Int, microseconds: Int)? {
        switch self {
        case .infinite: return nil
        case .nanoseconds(let ns):
            if ns <= 0 { return (0, 0) }
            let us = Self.roundingUp(ns, to: 1000)
            return (Int(us / 1_000_000), Int(us % 1_000_000))
        }
    }
}

/// What one backend wait attempt observed.
@_spi(Backend)
public enum WaitStep: Sendable, Equatable {
    /// The call returned; `count` events were put in the buffer (0: timed out, or only events the
    /// contract drops, such as those of a descriptor closed while registered).
    case events(Int)
    /// EINTR: a signal arrived.
    case interrupted
}

extension Duration {
    /// Whole nanoseconds, rounded up, saturating at `Int64.max` (about 292 years); negative durations
    /// count as zero. Any `Duration` is accepted: nothing here can trap.
    ///
    /// It reads the 128-bit attosecond count, never `components`, whose `Int64` seconds trap for a
    /// duration longer than `Int64.max` seconds (`.seconds(Int64.max) * 2` is a valid `Duration`).
    @inlinable package var clampedNanoseconds: Int64 {
        let total = attoseconds
        if total <= 0 { return 0 }
        let (whole, part) = total.quotientAndRemainder(dividingBy: 1_000_000_000)
        let rounded = part > 0 ? whole + 1 : whole
        return rounded > Int128(Int64.max) ? .max : Int64(rounded)
    }

    /// Whole seconds, rounded down, saturating at `Int64.min ... Int64.max` (never traps).
    @inlinable package var clampedSeconds: Int64 {
        let seconds = attoseconds / 1_000_000_000_000_000_000
        if seconds > Int128(Int64.max) { return .max }
        if seconds < Int128(Int64.min) { return .min }
        return Int64(seconds)
    }
}

/// The contract's timeout and EINTR rules, written once for every backend.
///
/// - `nil`: block until at least one event.
/// - zero: one non-blocking look (repeated only if a signal interrupted it).
/// - otherwise: never return with nothing before the deadline, whatever the kernel's rounding or a
///   signal did; each retry gets only the time that is left.
@_spi(Backend) @inlinable
public func runWait(timeout: Duration?, _ attempt: (WaitTimeout) throws(PollerError) -> WaitStep) throws(PollerError) -> Int {
    guard let timeout else {
        while true {
            if case .events(let n) = try attempt(.infinite), n > 0 { return n }
        }
    }
    // The common non-blocking look, without Duration.components' 128-bit arithmetic.
    let total = timeout == .zero ? 0 : timeout.clampedNanoseconds
    if total == 0 {
        while true {
            if case .events(let n) = try attempt(.nanoseconds(0)) { return n }
        }
    }
    let deadline = MonotonicClock.deadline(after: total)
    var remaining = total
    while true {
        if case .events(let n) = try attempt(.nanoseconds(remaining)), n > 0 { return n }
        let now = MonotonicClock.nowNanoseconds
        if now >= deadline { return 0 }
        remaining = deadline - now
    }
}

/// A poller's epoll set for asking the kernel whether a device or an anonymous-inode file can be
/// polled (``Sys/checkPollable(_:status:probe:)``): made at the first question, closed with the
/// poller. Used by one thread at a time, as the poller's registration calls are.
@_spi(Backend)
public final class PollProbe: @unchecked Sendable {
    private var fd: CInt = -1

    /// No set yet.
    public init() {}

    /// 1: the file under `fd` has a poll method; 0: it has none (EPERM); -1 with errno otherwise.
    func canPoll(_ fd: CInt) -> CInt { rd_kernel_can_poll_with(&self.fd, fd) }

    /// Whether `fd` is this set's descriptor (the poller's own: not the caller's to register).
    public func holds(_ fd: CInt) -> Bool { fd >= 0 && fd == self.fd }

    /// Closes the set, if one was made.
    public func close() {
        if fd >= 0 { _ = Sys.close(fd) }
        fd = -1
    }

    deinit { close() }
}
