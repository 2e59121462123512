import Glibc
import Readiness
import Testing

/// A read that got fewer bytes than it had room for left the socket empty, so the next read waits for
/// readiness before it tries (one `EAGAIN` read fewer per request: `LoopRecord.readDrained`). The
/// hint must never lose data: bytes that come before the next read (with or without the loop
/// polling in between), bytes behind an urgent mark, and bytes read or left by the escape hatch are
/// all read. Every test here bounds each read by a timeout, so a lost wake-up fails, not hangs.
@Suite("Short-read hint", .serialized)
struct ShortReadTests {
    @Test("ping-pong with short reads: the next message is read whether it came before the read or after", .timeLimit(.minutes(1)),
          arguments: backends)
    func pingPong(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            for round in 0..<300 {
                let message = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 1 + round % 7)
                switch round % 3 {
                case 0:
                    // Sent before the read: no poll in between.
                    try await client.write(message, timeout: .seconds(5))
                case 1:
                    // Sent, then the loop polls (and reports it with nobody waiting) before the read.
                    try await client.write(message, timeout: .seconds(5))
                    try await loop.sleep(for: .milliseconds(1))
                default:
                    // Sent while the read waits.
                    Task(executorPreference: loop) {
                        try? await loop.sleep(for: .milliseconds(1))
                        try? await client.write(message, timeout: .seconds(5))
                    }
                }
                var got: [UInt8] = []
                while got.count < message.count {
                    let bytes = try await server.read(upTo: 4096, timeout: .seconds(5))
                    try #require(!bytes.isEmpty, "end of stream in round \(round)")
                    got += bytes
                }
                #expect(got == message, "round \(round)")
            }
            await client.close()
            #expect(try await server.read(upTo: 16, timeout: .seconds(5)).isEmpty)
            await server.close()
            await listener.close()
        }
    }

    @Test("read(into:) after a short read: bytes sent before the next read are read", .timeLimit(.minutes(1)), arguments: backends)
    func readInto(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
            defer { buffer.deallocate() }
            for round in 0..<100 {
                try await client.write([1, 2, 3], timeout: .seconds(5))
                if round % 2 == 1 { try await loop.sleep(for: .milliseconds(1)) }
                var got = 0
                while got < 3 {
                    let n = try await server.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]), timeout: .seconds(5))
                    try #require(n > 0, "end of stream in round \(round)")
                    got += n
                }
                #expect(Array(buffer[..<3]) == [1, 2, 3] as [UInt8])
            }
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    @Test("a short read that stops at an urgent mark: the bytes behind it are still read", .timeLimit(.minutes(1)), arguments: backends)
    func urgentMark(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            // "ab", then "c" as urgent data (out of band: not in the stream), then "de": a read stops
            // at the mark with "ab", short, though "de" is queued.
            try await client.withStreamSocket { (socket) throws(SocketError) in
                _ = "ab".withCString { send(socket.fd, $0, 2, 0) }
                _ = "c".withCString { send(socket.fd, $0, 1, CInt(MSG_OOB)) }
                _ = "de".withCString { send(socket.fd, $0, 2, 0) }
            }
            try await loop.sleep(for: .milliseconds(20))
            var got: [UInt8] = []
            while got.count < 4 {
                let bytes = try await server.read(upTo: 4096, timeout: .seconds(5))
                try #require(!bytes.isEmpty)
                got += bytes
            }
            #expect(String(decoding: got, as: UTF8.self) == "abde")
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    @Test("the escape hatch between reads: bytes it leaves are read, and a read after it that took them waits for new ones",
          .timeLimit(.minutes(1)), arguments: backends)
    func escapeHatch(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.write([1], timeout: .seconds(5))
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [1])   // short: the hint is set
            try await client.write([2, 3], timeout: .seconds(5))
            try await loop.sleep(for: .milliseconds(5))
            // The hatch takes one byte and leaves one.
            let taken = try await server.withStreamSocket { (socket) throws(SocketError) -> UInt8 in
                var byte: UInt8 = 0
                return recv(socket.fd, &byte, 1, CInt(MSG_DONTWAIT)) == 1 ? byte : 0
            }
            #expect(taken == 2)
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [3])
            // Nothing queued now: the next read waits for the peer's bytes.
            Task(executorPreference: loop) {
                try? await loop.sleep(for: .milliseconds(10))
                try? await client.write([4], timeout: .seconds(5))
            }
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [4])
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    @Test("bytes queued after a short read, with no poll since: a read with a zero timeout, or in a cancelled task, still takes them",
          .timeLimit(.minutes(1)), arguments: backends)
    func staleHintZeroTimeout(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let serverFD = try await descriptor(of: server)
            try await Task(executorPreference: loop) { () async throws in
                for round in 0..<20 {
                    try await client.write([1], timeout: .seconds(5))
                    try await loop.sleep(for: .milliseconds(2))
                    #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [1])   // short: the hint is set
                    // Sent from the loop thread without the loop polling in between: loopback queues
                    // the bytes before send returns, and no readiness event has cleared the hint.
                    let sent = try await client.withStreamSocket { (socket) throws(SocketError) -> Int in
                        var bytes: [UInt8] = [2, 3]
                        return send(socket.fd, &bytes, 2, 0)
                    }
                    #expect(sent == 2)
                    // Loopback usually queues them before send returns; a loaded host may leave the
                    // delivery to ksoftirqd: the test's own poll waits for it (the loop's is not asked).
                    awaitReadable(serverFD)
                    var got: [UInt8] = []
                    if round % 2 == 0 {
                        got = try await server.read(upTo: 64, timeout: .zero)
                    } else {
                        withUnsafeCurrentTask { $0?.cancel() }
                        got = try await server.read(upTo: 64, timeout: .seconds(5))
                    }
                    #expect(got == [2, 3], "round \(round)")
                    if round % 2 == 1 { break }   // this task is cancelled now
                }
            }.value
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    @Test("a socket the poller cannot watch (select above FD_SETSIZE): after a short read, bytes already queued are still read",
          .timeLimit(.minutes(1)), arguments: backends)
    func unwatchableSocket(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var pair: [CInt] = [-1, -1]
            #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
            // The loop's end above FD_SETSIZE (select cannot watch it; every other backend can).
            let high = fcntl(pair[0], F_DUPFD_CLOEXEC, 1100)
            close(pair[0])
            try #require(high >= 1100)
            let socket = try await loop.adopt(descriptor: high)
            #expect(write(pair[1], "hi", 2) == 2)
            #expect(try await socket.read(upTo: 8, timeout: .seconds(5)) == Array("hi".utf8))   // short: the hint is set
            #expect(write(pair[1], "yo", 2) == 2)
            #expect(try await socket.read(upTo: 8, timeout: .seconds(5)) == Array("yo".utf8))
            await socket.close()
            close(pair[1])
        }
    }
}
