#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex with a condition variable, allocated once. ThreadSanitizer understands it (it does
/// not see `Synchronization.Mutex`'s futex as synchronisation everywhere).
final class ConditionLock: @unchecked Sendable {
    // Sendable because every use goes through pthread_mutex_lock / pthread_cond_wait.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// With the lock held: waits for a broadcast.
    func wait() { pthread_cond_wait(condition, mutex) }
    /// With the lock held: waits for a broadcast, or `seconds` at most (the wall clock's: a jump of it
    /// shortens or lengthens the wait; for idle timeouts only).
    func wait(seconds: Int) {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_sec += seconds
        pthread_cond_timedwait(condition, mutex, &deadline)
    }
    /// With the lock held: wakes every waiter.
    func broadcast() { pthread_cond_broadcast(condition) }
}
