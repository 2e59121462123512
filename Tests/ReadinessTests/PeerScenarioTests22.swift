import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
@testable import ReadinessNet
import Synchronization
import Testing

/// Scenarios from the peers' test suites read by the outside readers of stop 53.
@Suite("Peer scenarios 22", .serialized)
struct PeerScenarioTests22 {
    // MARK: operations of one direction take turns (Go's fdMutex, tokio's acceptors, asyncio's racing tests)

    /// CPython test_sock_lowlevel `_basetest_sock_recv_racing`: a pending read is cancelled and the
    /// same socket read again at once, before the cancelled task has run: the new read gets the bytes
    /// written after. It met `.busy` before (the cancelled read still held the read side). Then, on a
    /// socket whose last read was short (the read waits without trying first, and tries once when it
    /// gives up) and with a raw buffer: the cancelled read took the bytes in that last try, which ran
    /// after the writer's job, and the new read got nothing (the change's reader; epoll, poll, select
    /// and libevent with the hint, io_uring's `read(into:)` always).
    @Test("asyncio sock_recv racing: a read cancelled, then a new read at once, gets what comes next",
          .timeLimit(.minutes(1)), arguments: backends)
    func cancelledReadThenImmediateRead(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                for (round, (hinted, raw)) in [(false, false), (true, false), (false, true), (true, true)].enumerated() {
                    if hinted {   // a short read: the socket's receive queue was empty after it
                        try await client.write([0], timeout: .seconds(5))
                        #expect(try await server.read(upTo: 1024, timeout: .seconds(5)) == [0])
                    }
                    let first = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                        if raw { return [UInt8](repeating: 0, count: try await readOnce(server)) }
                        return try await server.read(upTo: 1024)
                    }
                    try await loop.sleep(for: .milliseconds(10))   // the first read waits now
                    first.cancel()
                    let message = Array("GET \(round)".utf8)
                    let writer = Task(executorPreference: loop) { () async throws in
                        try await client.write(message, timeout: .seconds(5))
                    }
                    let data = try await server.read(upTo: 1024, timeout: .seconds(2))
                    #expect(data == message, "\(backend), hinted \(hinted), raw \(raw)")
                    await #expect(throws: LoopError.cancelled) { _ = try await first.value }
                    try await writer.value
                }
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    /// CPython `_basetest_sock_send_racing`: a write blocked on a full buffer is cancelled and the next
    /// write asked for at once: its bytes come after whatever part of the first went, never in it.
    @Test("asyncio sock_sendall racing: a blocked write cancelled, then a write at once, whose bytes end the stream",
          .timeLimit(.minutes(1)), arguments: backends)
    func cancelledWriteThenImmediateWrite(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                // Fill the client's send buffer and the server's receive buffer.
                let chunk = [UInt8](repeating: 0x61, count: 65536)
                while try await client.tryWrite(chunk) > 0 {}
                let first = Task(executorPreference: loop) { () async throws in
                    try await client.write(Array("hello".utf8))
                }
                try await loop.sleep(for: .milliseconds(10))   // the first write waits for room now
                first.cancel()
                let reader = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    var all: [UInt8] = []
                    while true {
                        let part = try await server.read(upTo: 1 << 16, timeout: .seconds(10))
                        if part.isEmpty { return all }
                        all += part
                    }
                }
                try await client.write(Array("world".utf8), timeout: .seconds(10))
                try await client.shutdown(.write)
                let all = try await reader.value
                #expect(all.suffix(5) == Array("world".utf8), "\(backend): ends \(all.suffix(10))")
                #expect(!all.dropLast(5).contains(0x77), "\(backend): a byte of the second write before its end")
                _ = await first.result
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    /// tokio tcp_accept `accept_many`, Go `TestTCPConcurrentAccept`: several tasks accept on one
    /// listener at once; each waits (none fails), and each connection goes to exactly one of them, in
    /// the order they began. Every accepter but the first met `.busy` before.
    @Test("tokio accept_many: many tasks accepting on one listener each wait and each get one connection",
          .timeLimit(.minutes(1)), arguments: backends)
    func manyAcceptersTakeTurns(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
                let count = 6
                var accepters: [Task<AsyncSocket, any Error>] = []
                for _ in 0..<count {
                    accepters.append(Task(executorPreference: loop) { try await listener.accept(timeout: .seconds(10)) })
                }
                try await loop.sleep(for: .milliseconds(10))
                var clients: [AsyncSocket] = []
                for i in 0..<count {
                    let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                    try await client.write([UInt8(i)], timeout: .seconds(5))
                    clients.append(client)
                }
                for (i, accepter) in accepters.enumerated() {
                    let server = try await accepter.value
                    #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == [UInt8(i)], "\(backend): accepter \(i)")
                    await server.close()
                }
                for client in clients { await client.close() }
                await listener.close()
            }.value
        }
    }

    /// A task waiting for its turn keeps its own deadline and cancellation, and the socket's close
    /// ends it; the holder is unaffected, and a turn's waiter that gave up takes nothing.
    @Test("a read waiting for its turn times out at its deadline, is cancelled, or ends .closed; the holder goes on",
          .timeLimit(.minutes(1)), arguments: backends)
    func turnWaitersEnd(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                let holder = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    try await server.read(upTo: 16, timeout: .seconds(10))
                }
                try await loop.sleep(for: .milliseconds(10))
                let started = ContinuousClock.now
                await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 16, timeout: .milliseconds(30)) }
                #expect(ContinuousClock.now - started >= .milliseconds(30))
                let cancelled = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    try await server.read(upTo: 16, timeout: .seconds(10))
                }
                try await loop.sleep(for: .milliseconds(10))
                cancelled.cancel()
                await #expect(throws: LoopError.cancelled) { _ = try await cancelled.value }
                // The holder still gets the bytes, and the side is free after it.
                try await client.write([1, 2, 3], timeout: .seconds(5))
                #expect(try await holder.value == [1, 2, 3])
                try await client.write([4], timeout: .seconds(5))
                #expect(try await server.read(upTo: 16, timeout: .seconds(5)) == [4])
                // Closed while one holds the side and another waits for its turn: both end .closed.
                let again = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    try await server.read(upTo: 16, timeout: .seconds(10))
                }
                try await loop.sleep(for: .milliseconds(10))
                let queued = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    try await server.read(upTo: 16, timeout: .seconds(10))
                }
                try await loop.sleep(for: .milliseconds(10))
                await server.close()
                await #expect(throws: LoopError.closed) { _ = try await again.value }
                await #expect(throws: LoopError.closed) { _ = try await queued.value }
                await client.close(); await listener.close()
            }.value
        }
    }

    /// Go serialises concurrent writes on one connection: two large writes from two tasks arrive one
    /// after the other, never interleaved. The second met `.busy` before.
    @Test("two tasks writing large buffers at once: each arrives whole, one after the other",
          .timeLimit(.minutes(1)), arguments: backends)
    func concurrentWritersTakeTurns(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                let size = 1 << 20
                let a = Task(executorPreference: loop) { () async throws in
                    try await client.write([UInt8](repeating: 0x61, count: size), timeout: .seconds(20))
                }
                let b = Task(executorPreference: loop) { () async throws in
                    try await client.write([UInt8](repeating: 0x62, count: size), timeout: .seconds(20))
                }
                var all: [UInt8] = []
                while all.count < 2 * size {
                    let part = try await server.read(upTo: 1 << 16, timeout: .seconds(20))
                    if part.isEmpty { break }
                    all += part
                }
                try await a.value
                try await b.value
                #expect(all.count == 2 * size)
                let switches = zip(all, all.dropFirst()).filter { $0 != $1 }.count
                #expect(switches == 1, "\(backend): the writes interleaved (\(switches) switches)")
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    /// A datagram socket's receivers take turns too: two tasks receive, two datagrams arrive, each
    /// gets one, in the order they began.
    @Test("two tasks receiving on one datagram socket each get one datagram, in order",
          .timeLimit(.minutes(1)), arguments: backends)
    func datagramReceiversTakeTurns(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let receiver = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let sender = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let first = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    var buffer = [UInt8](repeating: 0, count: 16)
                    let got = try await receiver.receive(into: &buffer, timeout: .seconds(10))
                    return Array(buffer.prefix(got.count))
                }
                try await loop.sleep(for: .milliseconds(5))
                let second = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    var buffer = [UInt8](repeating: 0, count: 16)
                    let got = try await receiver.receive(into: &buffer, timeout: .seconds(10))
                    return Array(buffer.prefix(got.count))
                }
                try await loop.sleep(for: .milliseconds(10))
                try await sender.send([1], to: receiver.localAddress!, timeout: .seconds(5))
                try await sender.send([2], to: receiver.localAddress!, timeout: .seconds(5))
                #expect(try await first.value == [1])
                #expect(try await second.value == [2])
                await sender.close(); await receiver.close()
            }.value
        }
    }
}

// MARK: Socket calls mio's tests use (the mio reader): a stream pair, a vectored read, a datagram shutdown

extension PeerScenarioTests22 {
    /// mio unix_stream `pair`, tcp_stream `read_vectored`: a connected pair carries bytes both ways; a
    /// vectored read fills its buffers in order, skips empty ones, refuses a list with no room, and
    /// reports the end of the stream after the peer's close.
    @Test("StreamSocket.pair and read(vectored:): bytes both ways, buffers filled in order, end of stream",
          .timeLimit(.minutes(1)), arguments: backends)
    func streamPairVectoredRead(backend: Backend) throws {
        let (a, b) = try StreamSocket.pair()
        defer { a.close(); b.close() }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        try b.register(on: poller, token: Token(7), interest: .readable)
        #expect(try a.write(Array("hello world".utf8)) == .transferred(11))
        let events = EventBuffer(capacity: 4)
        _ = try poller.wait(into: events, timeout: .seconds(5))
        #expect(events.map(\.token) == [Token(7)] && events.first?.ready.contains(.readable) == true, "\(backend)")
        let first = UnsafeMutableRawBufferPointer.allocate(byteCount: 5, alignment: 1)
        let empty = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        let second = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
        defer { first.deallocate(); second.deallocate() }
        #expect(try b.read(vectored: [first, empty, second]) == .transferred(11))
        #expect(Array(first) == Array("hello".utf8) && Array(second.prefix(6)) == Array(" world".utf8))
        #expect(throws: SocketError.self) { _ = try b.read(vectored: [empty]) }
        #expect(try b.read(vectored: [first]) == .wouldBlock)
        #expect(try b.write(Array("back".utf8)) == .transferred(4))
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try a.read(into: &buffer) == .transferred(4) && Array(buffer.prefix(4)) == Array("back".utf8))
        a.close()
        #expect(try b.read(vectored: [first, second]) == .endOfStream)
    }

    /// mio unix_datagram `unix_datagram_shutdown`: shutting down the read side makes the socket
    /// readable on every backend, though a receive with nothing queued still says `.wouldBlock`
    /// (Linux's unix_dgram_recvmsg gives EOF only to SOCK_SEQPACKET); shutting down the write side makes a
    /// send fail with EPIPE, and the peer's send to a socket whose read side is shut down fails too.
    @Test("DatagramSocket.shutdown: read side reported readable, sends fail with EPIPE",
          .timeLimit(.minutes(1)), arguments: backends)
    func datagramShutdown(backend: Backend) throws {
        let (a, b) = try DatagramSocket.pair()
        defer { a.close(); b.close() }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        try a.register(on: poller, token: Token(3), interest: .readable)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .milliseconds(20)) == 0)
        try a.shutdown(.read)
        _ = try poller.wait(into: events, timeout: .seconds(5))
        #expect(events.first?.token == Token(3) && events.first?.ready.contains(.readable) == true, "\(backend): \(Array(events))")
        var buffer = [UInt8](repeating: 0, count: 8)
        let received = try a.receive(into: &buffer)
        #expect(received == .wouldBlock, "\(backend): \(received)")   // readable, yet nothing to take (Linux)
        do { _ = try b.send([1], destination: nil); Issue.record("a send to a socket whose read side is shut down went") } catch {
            #expect(error.errno == EPIPE, "\(error)")
        }
        try a.shutdown(.write)
        do { _ = try a.send([1], destination: nil); Issue.record("a send after shutdown(.write) went") } catch {
            #expect(error.errno == EPIPE, "\(error)")
        }
        let unconnected = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { unconnected.close() }
        do { try unconnected.shutdown(.write); Issue.record("an unconnected UDP socket shut down") } catch {
            #expect(error.kind == .notConnected, "\(error)")
        }
    }
}
