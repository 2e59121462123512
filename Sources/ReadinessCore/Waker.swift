#if canImport(Glibc)
import Glibc
#endif
import CReadinessCore
import Synchronization

/// Wakes a poller's wait from any thread. Many wakes before the poller looks give one wake-up event
/// (an `eventfd` counter, drained by the wait that reports it).
///
/// The waker belongs to its poller, which closes it exactly once; ``wake()`` after that fails with
/// ``PollerError/closed`` and never writes to a descriptor number that may have been reused.
public final class Waker: Sendable {
    private let descriptor: Mutex<CInt>
    /// The eventfd, for the backend to watch for readability.
    public let fd: CInt

    /// Creates the eventfd (non-blocking, close-on-exec).
    public init() throws(PollerError) {
        let fd = rd_eventfd_nonblocking()
        guard fd >= 0 else { throw .system(operation: "eventfd", errno: errno) }
        self.fd = fd
        descriptor = Mutex(fd)
    }

    /// Wakes the poller's current or next wait. Thread-safe.
    public func wake() throws(PollerError) {
        let failure: CInt = descriptor.withLock { fd in
            guard fd >= 0 else { return EBADF }
            var one: UInt64 = 1
            let n = Sys.retryingEINTR { Glibc.write(fd, &one, 8) }
            // EAGAIN: the counter is saturated, so a wake-up is already pending.
            return n == 8 || errno == EAGAIN ? 0 : errno
        }
        if failure == EBADF { throw .closed }
        if failure != 0 { throw .system(operation: "write(eventfd)", errno: failure) }
    }

    /// For backends: consumes pending wakes (coalescing them into the one event being reported).
    public func drain() {
        var value: UInt64 = 0
        _ = Sys.retryingEINTR { Glibc.read(fd, &value, 8) }
    }

    /// For the owning poller: closes the eventfd once.
    public func close() {
        descriptor.withLock { fd in
            if fd >= 0 { Sys.close(fd) }
            fd = -1
        }
    }
}
