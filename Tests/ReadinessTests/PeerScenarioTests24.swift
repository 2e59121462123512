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
    /// write again after each: after a read that freed less than that, it moved bytes 10, 30, 70
    /// ms... after the wait began: every form on every readiness backend, and on io_uring a write of
    /// an array, which goes through the readiness driver's loop there too (its own sends of a raw or
    /// vectored buffer wait for the kernel's POLLOUT); the async differential's seed 31 saw it or not
    /// by the clock. Now each pause asks with a send of no bytes, and bytes go only when poll reports
    /// room. Before: 22 failures, the three forms on the seven readiness backends and io_uring's array.
    @Test("a Unix stream write waiting for room moves no byte at a pause's end, on every backend",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixWriterWaitsForPollRoom(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let size = 4 << 20
                let bytes = [UInt8](repeating: 7, count: size)
                nonisolated(unsafe) let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
                raw.copyMemory(from: UnsafeRawBufferPointer(start: bytes, count: size))
                defer { raw.deallocate() }
                for form in ["array", "raw", "vectored"] {
                    let (a, b) = try socketPair()
                    defer { close(b) }
                    // A buffer of a known size (wmem_max caps it): a 64 KiB read frees a whole message of the
                    // queue (a send is cut into them) and leaves far more than a quarter held.
                    var buffer = CInt(1 << 20)
                    setsockopt(a, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<CInt>.size))
                    let writer = try await loop.adopt(descriptor: a)
                    let writing = Task(executorPreference: loop) { () async throws in
                        switch form {
                        case "array": try await writer.write(bytes, timeout: .seconds(30))
                        case "raw": try await writer.write(UnsafeRawBufferPointer(raw), timeout: .seconds(30))
                        default:
                            try await writer.write(vectored: [UnsafeRawBufferPointer(rebasing: raw[..<4]), UnsafeRawBufferPointer(rebasing: raw[4...])],
                                                   timeout: .seconds(30))
                        }
                    }
                    try await loop.sleep(for: .milliseconds(30))
                    let full = rd_net_bytes_queued(b)
                    #expect(full > 65_536, "\(form)")
                    var chunk = [UInt8](repeating: 0, count: 65_536)
                    #expect(read(b, &chunk, chunk.count) == chunk.count, "\(form)")
                    let after = rd_net_bytes_queued(b)
                    #expect(after == full - 65_536, "\(form)")
                    // Pauses end 10, 30, 70 and 150 ms after the wait began.
                    try await loop.sleep(for: .milliseconds(200))
                    #expect(rd_net_bytes_queued(b) == after, "\(form): bytes moved while poll reported no room")
                    // Poll's room (three quarters free) lets it go on: every byte arrives.
                    var total = chunk.count
                    chunk = [UInt8](repeating: 0, count: 65_536)
                    while total < size {
                        let n = read(b, &chunk, chunk.count)
                        if n > 0 { total += n } else { try await loop.sleep(for: .milliseconds(1)) }
                    }
                    try await writing.value
                    await writer.close()
                }
            }.value
        }
    }
}
