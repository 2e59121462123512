import Glibc
import Readiness
import Testing

/// The async datagram socket (Sources/ReadinessAsync/AsyncDatagramSocket.swift), on every backend.
@Suite("Async datagrams", .serialized)
struct AsyncDatagramTests {
    @Test("ping-pong over IPv4 and IPv6 with Bytes and [UInt8]; connected sockets", arguments: backends, ["127.0.0.1", "::1"])
    func pingPong(backend: Backend, host: String) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let server = try await loop.bindDatagram(to: try SocketAddress(ip: host, port: 0))
                let serverAddress = try #require(server.localAddress)
                let echo = Task(executorPreference: loop) { () async throws -> Int in
                    var buffer = Bytes()
                    var served = 0
                    while served < 20 {
                        let datagram = try await server.receive(into: &buffer, timeout: .seconds(5))
                        let source: SocketAddress = try #require(datagram.source)
                        try await server.send(buffer, to: source)
                        buffer.removeAll(keepingCapacity: true)
                        served += 1
                    }
                    return served
                }
                let client = try await loop.connectDatagram(to: serverAddress)
                #expect(client.peer == serverAddress)
                var reply = [UInt8](repeating: 0, count: 64)
                for round in 0..<10 {
                    let ping = Array("ping \(round)".utf8)
                    try await client.send(ping, timeout: .seconds(5))
                    let got = try await client.receive(into: &reply, timeout: .seconds(5))
                    #expect(Array(reply[0..<got.count]) == ping && got.source == serverAddress)
                    try await client.send(Bytes(ping), timeout: .seconds(5))
                    let (bytes, datagram) = try await client.receive(timeout: .seconds(5))
                    #expect(Array(bytes) == ping && !datagram.isTruncated)
                }
                #expect(try await echo.value == 20)
                await client.close()
                await server.close()
            }.value
        }
    }

    @Test("tokio uds_datagram / CPython (review): a Unix datagram send waiting for room ends when the socket is shut down for sending through the escape hatch, on every backend (its readiness never says so)",
          .timeLimit(.minutes(1)), arguments: backends)
    func sendWaitingEndsOnOwnShutdown(backend: Backend) async throws {
        for how in [SHUT_WR, SHUT_RDWR] {
            try await withLoop(backend) { loop in
                let (a, b) = try DatagramSocket.pair()
                defer { b.close() }
                var filled = 0
                while case .transferred = try a.send([UInt8](repeating: 1, count: 64)) { filled += 1 }   // the peer's queue is full
                #expect(filled > 0)
                let adopted = try await loop.adoptDatagram(descriptor: a.release())
                let sending = Task(executorPreference: loop) { () -> LoopError? in
                    do { try await adopted.send([UInt8](repeating: 2, count: 64), timeout: .seconds(3)) } catch { return error as? LoopError }
                    return nil
                }
                try await loop.sleep(for: .milliseconds(50))   // the send waits for room
                let start = ContinuousClock.now
                try await adopted.withDatagramSocket { (socket) throws(SocketError) in _ = Glibc.shutdown(socket.fd, CInt(how)) }
                let outcome = await sending.value
                #expect(ContinuousClock.now - start < .seconds(2), "the send slept on \(backend) after shutdown(\(how))")
                if case .socket(let error)? = outcome { #expect(error.kind == .reset, "\(error)") } else {
                    Issue.record("\(String(describing: outcome)) on \(backend) after shutdown(\(how))")
                }
                await adopted.close()
            }
        }
    }

    @Test("adoptDatagram: a descriptor made elsewhere served by the loop; a refusal leaves it the caller's, open",
          arguments: backends)
    func adoptDatagram(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (a, b) = try DatagramSocket.pair()
            let adopted = try await loop.adoptDatagram(descriptor: a.release())
            #expect(try b.send(Array("ping".utf8)) == .transferred(4))
            var buffer = Bytes()
            let datagram = try await adopted.receive(into: &buffer, timeout: .seconds(5))
            #expect(datagram.count == 4 && buffer == Bytes(Array("ping".utf8)))
            try await adopted.send(Array("pong".utf8))
            var reply = [UInt8](repeating: 0, count: 8)
            for _ in 0..<500 {
                if case .received = try b.receive(into: &reply) { break }
                usleep(2_000)
            }
            #expect(Array(reply[..<4]) == Array("pong".utf8))
            // Refused: a stream socket, a descriptor the loop owns already; nothing taken.
            let stream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { Glibc.close(stream) }
            await #expect(throws: LoopError.self) { _ = try await loop.adoptDatagram(descriptor: stream) }
            #expect(fcntl(stream, F_GETFD) != -1)
            let owned = try await adopted.withDatagramSocket { $0.fd }
            do throws(LoopError) {
                _ = try await loop.adoptDatagram(descriptor: owned)
                Issue.record("adopted a descriptor the loop owns")
            } catch {
                guard case .invalidArgument = error else { Issue.record("\(error)"); return }
            }
            await adopted.close()
            #expect(fcntl(owned, F_GETFD) == -1)
        }
    }

    @Test("truncation, refusal, busy, closed while waiting, deadlines, cancellation, shutdown", arguments: backends)
    func rules(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let server = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let client = try await loop.connectDatagram(to: try #require(server.localAddress))
                // Truncation is reported.
                try await client.send([UInt8](repeating: 7, count: 100))
                var small = Bytes()
                let cut = try await server.receive(into: &small, maximum: 10, timeout: .seconds(5))
                #expect(cut.isTruncated && cut.count == 10 && cut.length == 100 && small.count == 10)
                await #expect(throws: LoopError.invalidArgument("receive(into:maximum: 0)")) {
                    _ = try await server.receive(into: &small, maximum: 0)
                }
                // A deadline.
                await #expect(throws: LoopError.timedOut) { _ = try await server.receive(timeout: .milliseconds(20)) }
                // Receivers take turns (a second waits, ended here by its deadline); closing resumes
                // the first with .closed.
                let first = Task(executorPreference: loop) { try await server.receive(timeout: .seconds(5)) }
                try await loop.sleep(for: .milliseconds(5))
                await #expect(throws: LoopError.timedOut) { _ = try await server.receive(timeout: .milliseconds(20)) }
                // Cancellation ends a wait; the socket stays open.
                let cancelled = Task(executorPreference: loop) { try await client.receive(timeout: .seconds(5)) }
                try await loop.sleep(for: .milliseconds(5))
                cancelled.cancel()
                await #expect(throws: LoopError.cancelled) { _ = try await cancelled.value }
                await server.close()
                await #expect(throws: LoopError.closed) { _ = try await first.value }
                await #expect(throws: LoopError.closed) { try await server.send([1], to: try SocketAddress("127.0.0.1:9")) }
                // The server is gone: the connected client hears of it as a refusal.
                try await client.send([1])
                var refused: LoopError?
                for _ in 0..<20 where refused == nil {
                    do throws(LoopError) {
                        _ = try await client.receive(timeout: .milliseconds(50))
                    } catch {
                        if error != .timedOut { refused = error }
                    }
                }
                if case .socket(let error)? = refused { #expect(error.kind == .refused) } else { Issue.record("\(String(describing: refused))") }
                // Shutdown resumes a waiter with .shutdown and closes the socket.
                let pending = Task(executorPreference: loop) { try await client.receive(timeout: .seconds(5)) }
                try await loop.sleep(for: .milliseconds(5))
                await loop.shutdown()
                await #expect(throws: LoopError.shutdown) { _ = try await pending.value }
                await #expect(throws: LoopError.shutdown) { try await client.send([1]) }
            }.value
        }
    }

    @Test("Unix datagrams on the loop; no descriptor leaked", arguments: backends)
    func unix(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let before = openDescriptorCount()
                let path = "/tmp/readiness-adgram-\(getpid())-\(backend.name)"
                unlink(path)
                let server = try await loop.bindDatagram(to: try SocketAddress(unixPath: path))
                let client = try await loop.bindDatagram(to: try SocketAddress(unixPath: path + ".c"))
                try await client.send(Array("unix".utf8), to: try SocketAddress(unixPath: path))
                let (bytes, datagram) = try await server.receive(timeout: .seconds(5))
                #expect(Array(bytes) == Array("unix".utf8))
                #expect(datagram.source == client.localAddress)
                // Released inside withDatagramSocket: the loop forgets it.
                let released = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let fd = try await released.withDatagramSocket { (socket) throws(SocketError) -> CInt in socket.release() }
                Glibc.close(fd)
                await #expect(throws: LoopError.closed) { _ = try await released.receive(timeout: .seconds(1)) }
                await server.close()
                await client.close()
                #expect(access(path, F_OK) != 0 && access(path + ".c", F_OK) != 0)
                #expect(await settledDescriptorCount(before) == before)
            }.value
        }
    }
}
