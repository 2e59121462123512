// A pthread mutex around a value, shared by the two adapters. (Not Synchronization's `Mutex`: inside
// FlyingSocks, where .ci/flyingfox compiles these files, `Mutex` is FlyingSocks' own type, and
// ThreadSanitizer on Linux does not see Synchronization's.)
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

final class ReadinessLocked<Value>: @unchecked Sendable {
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// Held while the adapters create a poller (an `EventLoop` of the pool, a poller of the queue), so that
/// no two threads of this process create one through them at the same time.
///
/// A workaround, to remove once the core has fixed it: Readiness's libevent shim
/// (Backends/Libevent/CLibevent/shim.c, `rd_lev_supports_method` and `rd_lev_new`) calls libevent's
/// `event_get_supported_methods()`, which in libevent 2.1 frees and reallocates one static array on
/// every call. Two pollers of a forced libevent method (`libevent:epoll`, `:poll`, `:select`) created
/// on two threads at once read freed memory or free it twice: FlyingFox's suite crashed in `strcmp`
/// or in `malloc` about once in 30 runs on those backends, as every HTTPServer makes its own loop.
/// Its value counts the pollers created (not `Void`: ThreadSanitizer reports the exclusivity check of a
/// zero-sized stored value as a race with the read of the mutex beside it).
let readinessPollerCreation = ReadinessLocked<Int>(0)
