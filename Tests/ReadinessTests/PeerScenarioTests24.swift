import Glibc
import CReadinessNet
@_spi(Backend) import Readiness
@testable import ReadinessAsync
@testable import ReadinessNet
import Testing

/// Scenarios of stop 55: outcomes that depended on the clock (found by the async differential under
/// ThreadSanitizer).
@Suite("Peer scenarios 24", .serialized)
struct PeerScenarioTests24 {
    /// A Unix stream socket takes a write while less than its whole send buffer is held, but poll
    /// reports room only once three quarters of it are free. A write waiting for room cut its wait
    /// into pauses (to meet a peer's `shutdown(SHUT_RD)`, which poll never reports) and tried the
    /// write again after each: after a read that freed less than that, the readiness backends moved
    /// bytes 10, 30, 70 ms... after the wait began, io_uring (whose send the kernel retries when
    /// poll reports room) never; the async differential's seed 31 saw one or the other by the clock.
    /// Now each pause asks with a send of no bytes, and bytes go only when poll reports room.
    @Test("a Unix stream write waiting for room moves no byte until poll reports room, on every backend",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixWriterWaitsForPollRoom(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (a, b) = try socketPair()
                defer { close(b) }
                let writer = try await loop.adopt(descriptor: a)
                let writing = Task(executorPreference: loop) { () async throws in
                    try await writer.write([UInt8](repeating: 7, count: 4 << 20), timeout: .seconds(30))
                }
                try await loop.sleep(for: .milliseconds(30))
                let full = rd_net_bytes_queued(b)
                #expect(full > 65_536)
                var buffer = [UInt8](repeating: 0, count: 65_536)
                #expect(read(b, &buffer, buffer.count) == buffer.count)
                let after = rd_net_bytes_queued(b)
                #expect(after == full - 65_536)
                // Pauses end 10, 30, 70 and 150 ms after the wait began.
                try await loop.sleep(for: .milliseconds(200))
                #expect(rd_net_bytes_queued(b) == after, "bytes moved while poll reported no room")
                // Poll's room (three quarters free) lets it go on: every byte arrives.
                var total = 65_536
                while total < 4 << 20 {
                    let n = read(b, &buffer, buffer.count)
                    if n > 0 { total += n } else { try await loop.sleep(for: .milliseconds(1)) }
                }
                try await writing.value
                await writer.close()
            }.value
        }
    }
}
