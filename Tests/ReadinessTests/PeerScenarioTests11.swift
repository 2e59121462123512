import Glibc
@_spi(Backend) import Readiness
import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 39.
@Suite("Peer scenarios 11", .serialized)
struct PeerScenarioTests11 {
    // MARK: Timeout resolution (libevent's test/regress.c "timeout precision", Go's timer tests): what
    // `capabilities.timeoutResolution` says is what a wait keeps

    /// A 100 µs wait, best of eight: a backend that says it keeps microseconds returns well before a
    /// millisecond, and one that says it rounds to a millisecond never returns before one. libevent's
    /// epoll method waits on a timerfd (PRECISE_TIMER) to the microsecond, and said 1 ms (failed before
    /// on libevent and libevent:epoll: 0.1-0.2 ms waits under a declared 1 ms).
    @Test("a backend's declared timeout resolution is the one its waits keep", .timeLimit(.minutes(1)),
          arguments: backends)
    func declaredResolutionIsKept(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 4)
        let resolution = poller.capabilities.timeoutResolution
        var best = Duration.seconds(1)
        for _ in 0..<8 {
            let start = ContinuousClock.now
            _ = try poller.wait(into: events, timeout: .microseconds(100))
            best = min(best, ContinuousClock.now - start)
        }
        #expect(best >= .microseconds(100), "\(backend.name): returned early (\(best))")
        if resolution >= .milliseconds(1) {
            #expect(best >= resolution, "\(backend.name): says \(resolution), waited \(best)")
        } else {
            #expect(best < .milliseconds(1), "\(backend.name): says \(resolution), waited \(best)")
        }
    }
}
