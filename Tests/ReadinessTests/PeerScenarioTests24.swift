import Glibc
import CReadinessNet
@_spi(Backend) import Readiness
@testable import ReadinessAsync
@testable import ReadinessNet
import Synchronization
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

    /// The same for a datagram: between a pair's ends (each connected to the other) the kernel takes
    /// a datagram while less than the whole send buffer is held, poll reports room at a quarter. A
    /// send waiting for room sent again at each pause's end (which met a receiver's `shutdown(SHUT_RD)`)
    /// and so went 10 ms after one datagram was taken, by the clock. Now the pause asks the kernel's
    /// socket diagnostics whether the peer reads no more, and sends again only then.
    @Test("a Unix datagram send waiting for room sends nothing at a pause's end, on every backend",
          .timeLimit(.minutes(1)), .enabled(if: unixDiagnostics(), "no Unix socket diagnostics (NETLINK_SOCK_DIAG) in this kernel"),
          arguments: backends)
    func unixDatagramWaitsForPollRoom(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                var fds: [CInt] = [-1, -1]
                #expect(socketpair(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
                let b = fds[1]
                defer { close(b) }
                let datagram = [UInt8](repeating: 5, count: 1024)
                var filled = 0
                while send(fds[0], datagram, datagram.count, 0) == datagram.count { filled += 1 }
                #expect(filled > 8)
                let sender = try await loop.adoptDatagram(descriptor: fds[0])
                let sent = Flag()
                let sending = Task(executorPreference: loop) { () async throws in
                    try await sender.send([9], timeout: .seconds(30))
                    sent.set()
                }
                try await loop.sleep(for: .milliseconds(30))
                #expect(!sent.isSet)
                var buffer = [UInt8](repeating: 0, count: 2048)
                #expect(recv(b, &buffer, buffer.count, 0) == datagram.count)
                // Pauses end 10, 30, 70 and 150 ms after the wait began.
                try await loop.sleep(for: .milliseconds(200))
                #expect(!sent.isSet, "a datagram went while poll reported no room")
                // Poll's room (three quarters free) lets it go: every datagram arrives, the last one 1 byte.
                var received = 1
                var last = 0
                let deadline = ContinuousClock.now + .seconds(20)
                while !(sent.isSet && last == 1), ContinuousClock.now < deadline {
                    let n = recv(b, &buffer, buffer.count, 0)
                    if n > 0 { received += 1; last = n } else { try await loop.sleep(for: .milliseconds(1)) }
                }
                #expect(received == filled + 1)
                try await sending.value
                await sender.close()
            }.value
        }
    }

    /// The diagnostics question itself: a pair's peer reads (0), then no more after `SHUT_RD` (1); an
    /// unconnected socket and a TCP socket cannot be told (-1).
    @Test("Unix socket diagnostics tell whether a connected datagram socket's peer reads",
          .enabled(if: unixDiagnostics(), "no Unix socket diagnostics (NETLINK_SOCK_DIAG) in this kernel"))
    func unixPeerReadingShutQuestion() {
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        #expect(rd_net_unix_peer_reading_shut(fds[0]) == 0)
        #expect(Glibc.shutdown(fds[1], CInt(Glibc.SHUT_RD)) == 0)
        #expect(rd_net_unix_peer_reading_shut(fds[0]) == 1)
        #expect(rd_net_unix_peer_reading_shut(fds[1]) == 0)
        let lone = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        defer { close(lone) }
        #expect(rd_net_unix_peer_reading_shut(lone) == -1)
        let tcp = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(tcp) }
        #expect(rd_net_unix_peer_reading_shut(tcp) == -1)
    }
}

/// A flag one task sets and another reads.
private final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// Whether this kernel answers Unix socket diagnostics (a connected pair's peer asked).
private func unixDiagnostics() -> Bool {
    var fds: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0, &fds) == 0 else { return false }
    defer { close(fds[0]); close(fds[1]) }
    return rd_net_unix_peer_reading_shut(fds[0]) == 0
}
