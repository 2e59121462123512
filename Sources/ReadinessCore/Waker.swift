#if canImport(Glibc)
import Glibc
#endif
import CReadinessCore
import Synchronization

/// Wakes a poller's wait from any thread, and from a signal handler. Many wakes before the poller
/// looks give one wake-up event (an `eventfd` counter, drained only by the wait that reports it).
///
/// ``wake()`` takes no lock and allocates nothing: an atomic counter of wakes in progress, one
/// `write(2)` (async-signal-safe), and `errno` saved and restored around it. So a networking library may
/// call it from a SIGINT or SIGTERM handler.
///
/// The waker belongs to its poller, which closes it exactly once; ``wake()`` after that fails with
/// ``PollerError/closed`` and never writes to a descriptor number that may have been reused: closing
/// first forbids new wakes, then waits for the ones already past that check (a `write` each) to end.
public final class Waker: Sendable {
    /// Bit 0: closed. The other bits count the wakes between their check and the end of their write.
    private let state = Atomic<Int>(0)
    private static let closedBit = 1
    private static let oneWake = 2
    /// The eventfd, for the backend to watch for readability.
    @_spi(Backend) public let fd: CInt
    /// ``Sys/forkGeneration`` when it was made: a wake in a child made by `fork()` since would wake the
    /// parent's poller (the eventfd is shared), so it is refused with ``PollerError/forked``.
    private let forkGeneration = Sys.forkGeneration

    /// Creates the eventfd (non-blocking, close-on-exec).
    @_spi(Backend) public init() throws(PollerError) {
        let fd = rd_eventfd_nonblocking()
        guard fd >= 0 else { throw .failed("eventfd", errno: errno) }
        self.fd = fd
    }

    /// Wakes the poller's current or next wait. Thread-safe and async-signal-safe.
    public func wake() throws(PollerError) {
        // A closed waker is refused before it is counted, so wakes that keep coming cannot hold up
        // close(): it waits only for those that counted themselves before the closed bit was set.
        if state.load(ordering: .acquiring) & Self.closedBit != 0 { throw .closed }
        if Sys.forkGeneration != forkGeneration { throw .forked }
        let before = state.add(Self.oneWake, ordering: .acquiring).oldValue
        defer { state.subtract(Self.oneWake, ordering: .releasing) }
        if before & Self.closedBit != 0 { throw .closed }
        let saved = errno
        defer { errno = saved }
        var one: UInt64 = 1
        let n = Sys.retryingEINTR { Glibc.write(fd, &one, 8) }
        // EAGAIN: the counter is saturated, so a wake-up is already pending.
        if n != 8 && errno != EAGAIN { throw .failed("write(eventfd)", errno: errno) }
    }

    /// For backends: consumes pending wakes (coalescing them into the one event being reported).
    /// Call it only when the wake-up event is put in the caller's buffer, never before: a drained
    /// wake-up that is not reported is lost.
    @_spi(Backend) public func drain() {
        var value: UInt64 = 0
        _ = Sys.retryingEINTR { Glibc.read(fd, &value, 8) }
    }

    /// For the owning poller: closes the eventfd once, after every wake in progress has written.
    @_spi(Backend) public func close() {
        let before = state.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing).oldValue
        guard before & Self.closedBit == 0 else { return }
        // A wake past its check is one write(2) from its end: yield until none is left (not in a child
        // made by fork(), whose count may hold a wake of a thread that does not exist there).
        while Sys.forkGeneration == forkGeneration, state.load(ordering: .acquiring) != Self.closedBit { sched_yield() }
        Sys.close(fd)
    }
}
