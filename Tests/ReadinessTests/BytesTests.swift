import Readiness
import Testing

/// `Bytes` (the owned byte buffer) and the owned-bytes forms of `AsyncSocket`, on every backend.
@Suite("Bytes", .serialized)
struct BytesTests {
    /// Where the storage is (nil: none): the same address across reads means no reallocation.
    static func address(_ bytes: Bytes) -> UnsafeRawPointer? {
        bytes.capacity == 0 ? nil : bytes.withUnsafeBytes { $0.baseAddress }
    }

    // MARK: The value

    @Test("append, consume, reuse the whole capacity once emptied, copy-on-write, equality")
    func value() {
        var bytes = Bytes()
        #expect(bytes.capacity == 0 && bytes.isEmpty)
        bytes.append(contentsOf: [1, 2, 3] as [UInt8])
        bytes.append(4)
        bytes.append(contentsOf: Bytes([5, 6]))
        #expect(bytes == [1, 2, 3, 4, 5, 6])
        #expect(Array(bytes) == [1, 2, 3, 4, 5, 6])
        #expect(bytes.span.count == 6 && bytes.span[5] == 6)
        #expect(bytes.bytes.byteCount == 6)
        bytes.removeFirst(2)
        #expect(bytes == [3, 4, 5, 6] && bytes.first == 3)
        // Copy-on-write: the copy keeps its bytes when the original changes.
        let copy = bytes
        do { var view = bytes.mutableSpan; view[0] = 99 }
        #expect(copy == [3, 4, 5, 6])
        #expect(bytes == [99, 4, 5, 6])
        // Emptied: the whole capacity is room again, in the same storage.
        let capacity = bytes.capacity
        let storage = Self.address(bytes)
        bytes.removeAll(keepingCapacity: true)
        bytes.append(contentsOf: Array(repeating: 7, count: capacity))
        #expect(bytes.capacity == capacity && Self.address(bytes) == storage)
        bytes.removeAll()
        #expect(bytes.capacity == 0)
        #expect(Bytes("hello".utf8) == Bytes(copying: Array("hello".utf8).span.bytes))
        #expect(Bytes([1, 2]).hashValue == ([1, 2] as Bytes).hashValue)
        #expect(Bytes([1, 2]) != Bytes([1, 3]))
    }

    @Test("appending into uninitialised room; a caller's numbers never trap")
    func room() {
        var bytes: Bytes = [1]
        bytes.append(addingCapacity: 8) { output in
            output.append(UInt8(2))
            output.append(UInt8(3))
        }
        #expect(bytes == [1, 2, 3])
        bytes.append(addingCapacity: -5) { _ in }
        #expect(bytes == [1, 2, 3])
        let reservedAll = bytes.reserveCapacity(.max)
        #expect(!reservedAll)                            // cannot be allocated: reported, unchanged
        #expect(bytes == [1, 2, 3])
        let reservedNone = bytes.reserveCapacity(-1)
        #expect(reservedNone)
        bytes.removeFirst(-3)
        #expect(bytes.count == 3)
        bytes.removeFirst(.max)
        #expect(bytes.isEmpty)
        #expect(Bytes(capacity: -1).capacity == 0)
        #expect(Bytes(capacity: .max).capacity == 0)
        // Room at the end when the front was consumed: the rest moves forward, no new storage.
        var partial = Bytes(capacity: 16)
        partial.append(contentsOf: Array(repeating: 1, count: 16))
        let storage = Self.address(partial)
        partial.removeFirst(12)
        partial.append(contentsOf: Array(repeating: 2, count: 12))
        #expect(partial.count == 16 && partial.capacity == 16 && Self.address(partial) == storage)
        #expect(Array(partial) == Array(repeating: 1, count: 4) + Array(repeating: 2, count: 12))
    }

    // MARK: StreamSocket

    @Test("StreamSocket: read appends into Bytes, write from an offset, would block, end of stream, bad numbers", arguments: backends)
    func streamSocket(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        try server.register(on: poller, token: 1, interest: .readable)
        var buffer: Bytes = [0]
        #expect(try server.read(into: &buffer, maximum: 64) == .wouldBlock)
        #expect(buffer == [0])
        #expect(try client.write(Bytes("xxhello".utf8), from: 2) == .transferred(5))
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        #expect(try server.read(into: &buffer, maximum: 3) == .transferred(3))   // at most `maximum`
        #expect(try server.read(into: &buffer, maximum: 64) == .transferred(2))
        #expect(buffer == Bytes([0] + Array("hello".utf8)))
        #expect(throws: SocketError.self) { try server.read(into: &buffer, maximum: 0) }
        #expect(throws: SocketError.self) { try client.write(buffer, from: -1) }
        #expect(throws: SocketError.self) { try client.write(buffer, from: buffer.count + 1) }
        #expect(try client.write(buffer, from: buffer.count) == .transferred(0))
        try client.shutdown(.write)
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        #expect(try server.read(into: &buffer, maximum: .max) == .endOfStream)
        #expect(buffer.count == 6)
    }

    // MARK: Async

    @Test("round trip: reads append into one reused buffer, writes of Bytes and [UInt8], end of stream", arguments: backends)
    func roundTrip(backend: Backend) async throws {
        try await withPair(backend) { loop, client, server in
            let payload = Bytes((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            async let sent: Void = client.write(payload)
            var received = Bytes()
            while received.count < payload.count {
                let n = try await server.read(into: &received, timeout: .seconds(5))
                #expect(n > 0)
                if n == 0 { break }
            }
            try await sent
            #expect(received == payload)
            // [UInt8] and Bytes writes, read with readAvailable and read(upTo:).
            try await server.write([1, 2, 3])
            try await server.write([4, 5] as Bytes)
            var back: [UInt8] = []
            while back.count < 5 { back += try await client.readAvailable(maximum: 16, timeout: .seconds(5)) }
            #expect(back == [1, 2, 3, 4, 5])
            try await server.write([6])
            #expect(try await client.read(upTo: 16, timeout: .seconds(5)) == [6])
            // End of stream: 0, and the buffer keeps what it had.
            try await client.shutdown(.write)
            var tail: Bytes = [9]
            #expect(try await server.read(into: &tail, timeout: .seconds(5)) == 0)
            #expect(tail == [9])
            #expect(try await server.readAvailable(timeout: .seconds(5)).isEmpty)
        }
    }

    @Test("a reused buffer keeps its storage read after read (no reallocation); a large write is written whole", arguments: backends)
    func reuse(backend: Backend) async throws {
        try await withPair(backend) { loop, client, server in
            let message = Bytes(Array(repeating: 42, count: 1000))
            var buffer = Bytes(capacity: 4096)
            let storage = Self.address(buffer)
            for _ in 0..<200 {
                try await client.write(message)
                var got = 0
                while got < message.count {
                    got += try await server.read(into: &buffer, maximum: 4096, timeout: .seconds(5))
                }
                #expect(buffer == message)
                buffer.removeAll(keepingCapacity: true)
            }
            #expect(buffer.capacity == 4096 && Self.address(buffer) == storage)
            // 8 MiB in one write (a tenth under the sanitizers: READINESS_TEST_SCALE), while the peer
            // reads in 64 KiB steps.
            let large = Bytes((0..<((8 << 20) / loadDivisor)).map { UInt8(truncatingIfNeeded: $0 >> 3) })
            async let sent: Void = server.write(large, timeout: .seconds(20))
            var received = Bytes(capacity: large.count)
            while received.count < large.count {
                let n = try await client.read(into: &received, timeout: .seconds(5))
                if n == 0 { break }
            }
            try await sent
            #expect(received == large)
        }
    }

    /// A `readAvailable` of 8 KiB or more takes the loop's buffer over (shrunk to the bytes: the 64 KiB
    /// one, or the one sized for reads of more) and the loop takes a new one: every result kept alive
    /// holds exactly its own bytes, whatever the reads after it did, with no unused room; small reads
    /// (copied) in between.
    @Test("readAvailable: results that took the loop's buffer over keep their bytes; none holds unused room", arguments: backends)
    func readAvailableHandsOver(backend: Backend) async throws {
        try await withPair(backend) { loop, client, server in
            let payload = Bytes((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 9)) })
            async let sent: Void = client.write(payload, timeout: .seconds(20))
            var chunks: [Bytes] = []
            var total = 0
            var turn = 0
            while total < payload.count {
                turn += 1
                // Sizes in turn: the small buffer, a copy, the large buffer and a larger one (it grows).
                let maximum = turn % 5 == 0 ? 100 : turn % 7 == 0 ? 200_000 : turn % 11 == 0 ? 1 << 20 : StreamSocket.defaultReadSize
                let chunk = try await server.readAvailable(maximum: maximum, timeout: .seconds(5))
                if chunk.isEmpty { break }
                #expect(chunk.count <= maximum)
                #expect(chunk.capacity == chunk.count, "\(chunk.count) bytes in \(chunk.capacity)")
                total += chunk.count
                chunks.append(chunk)
            }
            try await sent
            var joined = Bytes(capacity: payload.count)
            for chunk in chunks { joined.append(contentsOf: chunk.bytes) }
            #expect(joined == payload)
        }
    }

    @Test("an idle read holds no buffer: it waits for readability before it allocates", arguments: backends)
    func idle(backend: Backend) async throws {
        try await withPair(backend) { loop, client, server in
            var buffer = Bytes()
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(into: &buffer, timeout: .milliseconds(30)) }
            #expect(buffer.capacity == 0)
            // A shared buffer (its copy lives) is not written into while idle either.
            var shared: Bytes = [1]
            let copy = shared
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(into: &shared, timeout: .milliseconds(30)) }
            #expect(Self.address(shared) == Self.address(copy))
            // Data already there: a read that must allocate does not wait for it (so a cancelled task
            // still gets it, as with the raw forms).
            try await client.write([5])
            try await loop.sleep(for: .milliseconds(20))
            let cancelled = Task(executorPreference: loop) { () async throws -> Bytes in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await server.readAvailable(maximum: 10)
            }
            #expect(try await cancelled.value == [5])
            // Data arrives: it is read into the loop's buffer and copied out into storage of its size
            // (no unused room kept by the result).
            async let read = server.readAvailable(maximum: 100, timeout: .seconds(5))
            try await loop.sleep(for: .milliseconds(20))
            try await client.write([7, 8])
            let bytes = try await read
            #expect(bytes == [7, 8] && bytes.capacity == 2)
            // End of stream: empty, with no storage.
            try await client.shutdown(.write)
            let end = try await server.readAvailable(maximum: 100, timeout: .seconds(5))
            #expect(end.isEmpty && end.capacity == 0)
        }
    }

    @Test("the line protocol of Docs/Async.md (\"Bytes\"): find, use a span, consume, read more", arguments: backends)
    func lines(backend: Backend) async throws {
        try await withPair(backend) { loop, client, socket in
            let text = (0..<2_000).map { "line \($0)\n" }.joined()
            async let sent: Void = { try await client.write(Bytes(text.utf8)); try await client.shutdown(.write) }()
            var lines: [String] = []
            func handle(_ line: Span<UInt8>) {
                var bytes: [UInt8] = []
                for index in line.indices { bytes.append(line[index]) }
                lines.append(String(decoding: bytes, as: UTF8.self))
            }
            // As in Docs/Async.md.
            var buffer = Bytes()                                          // no storage yet: nothing held while idle
            while true {
                if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {   // a whole line is buffered
                    handle(buffer.span.extracting(first: end))           // a Span<UInt8>: no copy
                    buffer.removeFirst(end + 1)                           // consumed; emptied, it is all room again
                    continue
                }
                let n = try await socket.read(into: &buffer, maximum: 16 * 1024, timeout: .seconds(30))   // appends
                if n == 0 { break }                                       // the peer shut down its side
            }
            try await socket.write(Bytes("bye\n".utf8))                   // every byte, no copy (or a [UInt8])
            try await sent
            #expect(lines == (0..<2_000).map { "line \($0)" })
            #expect(buffer.capacity <= 2 * 16 * 1024)   // the room, and once doubled for a partial line
            #expect(try await client.read(upTo: 16, timeout: .seconds(5)) == Array("bye\n".utf8))
        }
    }

    @Test("bad numbers are typed errors: maximum 0, negative, Int.max", arguments: backends)
    func misuse(backend: Backend) async throws {
        try await withPair(backend) { loop, client, server in
            var buffer = Bytes()
            await #expect(throws: LoopError.invalidArgument("read(into:maximum: 0)")) { _ = try await server.read(into: &buffer, maximum: 0) }
            await #expect(throws: LoopError.invalidArgument("read(into:maximum: -1)")) { _ = try await server.read(into: &buffer, maximum: -1) }
            await #expect(throws: LoopError.self) { _ = try await server.readAvailable(maximum: .min) }
            try await client.write([1, 2, 3])
            #expect(try await server.read(into: &buffer, maximum: .max, timeout: .seconds(5)) > 0)
            #expect(buffer.capacity == StreamSocket.maximumReadReservation)
            try await client.write(Bytes())                    // nothing to write: returns
            await server.close()
            await #expect(throws: LoopError.closed) { _ = try await server.read(into: &buffer) }
            await #expect(throws: LoopError.closed) { try await server.write(buffer) }
        }
    }
}

/// A connected pair on a loop of `backend`, in a task preferring the loop; everything closed after.
private func withPair(_ backend: Backend,
                      _ body: @escaping @Sendable (EventLoop, AsyncSocket, AsyncSocket) async throws -> Void) async throws {
    try await withLoop(backend) { loop in
        try await Task(executorPreference: loop) {
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            let server = try await accepted
            do {
                try await body(loop, client, server)
            } catch {
                await client.close()
                await server.close()
                await listener.close()
                throw error
            }
            await client.close()
            await server.close()
            await listener.close()
            #expect(try await loop.entryCount() == 0)
        }.value
    }
}

/// A read that waits before it allocates asks whether data is there without taking a pending error.
@Suite("Bytes: idle reads and errors", .serialized)
struct BytesIdleReadErrorTests {
    @Test("a reset before an idle read is reported as a reset (it read as the end of the stream when the check was recv(MSG_PEEK))",
          .timeLimit(.minutes(1)), arguments: backends)
    func resetIsNotEndOfStream(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.withStreamSocket { (socket) throws(SocketError) in try socket.setLinger(.resetOnClose) }
            try await client.write([1])                 // so that the server's side has something to lose
            await client.close()                        // RST
            try await loop.sleep(for: .milliseconds(50))
            var outcome = "no error"
            do throws(LoopError) {
                _ = try await server.readAvailable(timeout: .seconds(5))   // the byte, then the reset
                let again = try await server.readAvailable(timeout: .seconds(5))
                outcome = again.isEmpty ? "end of stream" : "\(again.count) bytes"
            } catch {
                if case .socket(let socketError) = error { outcome = "\(socketError.kind)" } else { outcome = "\(error)" }
            }
            #expect(outcome == "reset", "\(outcome)")
            await server.close()
            await listener.close()
        }
    }
}
