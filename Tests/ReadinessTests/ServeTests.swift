import Glibc
import Readiness
import Synchronization
import Testing

/// Serving (Sources/ReadinessAsync/Serve.swift) and the default group, on every backend.
@Suite("Serve", .serialized)
struct ServeTests {
    /// Echoes one message per connection and records where the handler ran.
    static func echo(_ served: Counter, _ offLoop: Counter) -> @Sendable (AsyncSocket) async -> Void {
        { socket in
            if !socket.loop.inLoop { offLoop.increment() }
            guard let bytes = try? await socket.read(upTo: 64, timeout: .seconds(5)), !bytes.isEmpty else { return }
            try? await socket.write(bytes, timeout: .seconds(5))
            served.increment()
        }
    }

    static func roundTrip(_ loop: EventLoop, _ address: SocketAddress, _ i: Int) async throws {
        let client = try await loop.connect(to: address, timeout: .seconds(5))
        let message = Array("hello \(i)".utf8)
        try await client.write(message, timeout: .seconds(5))
        var got: [UInt8] = []
        while got.count < message.count {
            let chunk = try await client.read(upTo: 64, timeout: .seconds(5))
            if chunk.isEmpty { break }
            got += chunk
        }
        #expect(got == message)
        // The server closes its side when the handler returns.
        #expect(try await client.read(upTo: 1, timeout: .seconds(5)).isEmpty)
        await client.close()
    }

    @Test("a group serves every loop, each connection's handler on its loop, until cancelled; nothing leaks",
          .timeLimit(.minutes(2)), arguments: backends)
    func group(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let group = try EventLoopGroup(backend: backend, count: 2)
        // A port picked first, so that the clients know it: bind to 0, read it back, serve on it.
        let probe = try await group.loops[0].listen(on: try SocketAddress("127.0.0.1:0"))
        let address = probe.address
        await probe.close()
        let served = Counter(), offLoop = Counter()
        let server = Task { try await group.serve(on: address, Self.echo(served, offLoop)) }
        var connected = false
        for _ in 0..<200 where !connected {
            if let client = try? await group.loops[1].connect(to: address, timeout: .seconds(1)) {
                await client.close()
                connected = true
            } else {
                try await group.loops[1].sleep(for: .milliseconds(5))
            }
        }
        #expect(connected)
        for i in 0..<40 { try await Self.roundTrip(group.next(), address, i) }
        #expect(served.value == 40)
        #expect(offLoop.value == 0)
        server.cancel()
        try await server.value   // cancelled: returns, no error
        // The listeners are closed: nothing accepts any more.
        await #expect(throws: LoopError.self) { try await group.loops[0].connect(to: address, timeout: .seconds(1)) }
        await group.shutdown()
        #expect(await settledDescriptorCount(before) == before)
    }

    @Test("a listener's serve ends when the listener is closed, after its connections' handlers",
          .timeLimit(.minutes(2)), arguments: backends)
    func listenerClosed(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let served = Counter(), offLoop = Counter()
            let server = Task { try await listener.serve(Self.echo(served, offLoop)) }
            for i in 0..<5 { try await Self.roundTrip(loop, listener.address, i) }
            await listener.close()
            try await server.value
            #expect(served.value == 5)
            #expect(offLoop.value == 0)
        }
    }

    @Test("serve ends at the loop's shutdown", .timeLimit(.minutes(2)), arguments: backends)
    func shutdownEnds(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let started = Counter()
        let server = Task {
            try await loop.serve(on: try SocketAddress("127.0.0.1:0")) { _ in started.increment() }
        }
        try await Task.sleep(for: .milliseconds(20))
        await loop.shutdown()
        // Returns or throws .shutdown (the listen itself may meet the shutdown): never hangs.
        do { try await server.value } catch let error as LoopError { #expect(error == .shutdown) }
    }

    @Test("EventLoopGroup() picks READINESS_BACKEND's backend, as EventLoop() does")
    func defaultGroup() async throws {
        // The environment this process runs with: whichever backend it names (or the best).
        let expected = try Backend.default()
        let group = try EventLoopGroup(count: 2)
        #expect(group.loops.count == 2)
        for loop in group.loops { #expect(try await loop.capabilities().name == expected.name) }
        await group.shutdown()
        #expect(throws: SelectionError.self) { try EventLoopGroup(count: 0) }
        #expect(throws: SelectionError.self) { try EventLoopGroup(count: Int.max) }
    }
}

/// Graceful shutdown (Sources/ReadinessAsync/GracefulShutdown.swift), on every backend.
@Suite("Graceful shutdown", .serialized)
struct GracefulShutdownTests {
    @Test("stops accepting, lets a request in flight finish, then returns", .timeLimit(.minutes(1)), arguments: backends)
    func drains(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let address = listener.address
        let handled = Counter()
        let server = Task {
            try await listener.serve { socket in
                guard let bytes = try? await socket.read(upTo: 64, timeout: .seconds(5)), !bytes.isEmpty else { return }
                try? await socket.loop.sleep(for: .milliseconds(150))    // work in flight
                try? await socket.write(bytes, timeout: .seconds(5))
                handled.increment()
            }
        }
        // The client on a loop of its own: the drained loop's connection count is the server's alone.
        let clientLoop = try EventLoop(backend: backend)
        let client = try await clientLoop.connect(to: address, timeout: .seconds(5))
        try await client.write(Array("ping".utf8))
        try await clientLoop.sleep(for: .milliseconds(30))     // the handler has the request
        let clock = ContinuousClock()
        let start = clock.now
        let stopping = Task { await loop.shutdown(gracePeriod: .seconds(5)) }
        try await clientLoop.sleep(for: .milliseconds(30))
        // It stopped accepting: a new connect is refused while the request is still in flight.
        await #expect(throws: LoopError.self) { try await clientLoop.connect(to: address, timeout: .seconds(1)) }
        // The reply still comes, after the shutdown began.
        let reply = try await client.read(upTo: 64, timeout: .seconds(5))
        #expect(reply == Array("ping".utf8))
        #expect(try await client.read(upTo: 64, timeout: .seconds(5)).isEmpty)   // closed after its answer
        await stopping.value
        await client.close()
        await clientLoop.shutdown()
        #expect(clock.now - start < .seconds(4), "returned when the connection finished, not at the grace period's end")
        #expect(handled.value == 1)
        try await server.value
        #expect(loop.isShuttingDown)
    }

    @Test("listen on a loop draining for a graceful shutdown is refused with .shutdown (Go: Serve after Shutdown)",
          .timeLimit(.minutes(1)), arguments: backends)
    func listenWhileDraining(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let clientLoop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let client = try await clientLoop.connect(to: listener.address, timeout: .seconds(5))
        let held = try await listener.accept()            // a connection that holds the drain
        let stopping = Task { await loop.shutdown(gracePeriod: .seconds(5)) }
        try await clientLoop.sleep(for: .milliseconds(50))   // the drain has begun
        await #expect(throws: LoopError.shutdown) { _ = try await loop.listen(on: try SocketAddress("127.0.0.1:0")) }
        await held.close()
        await stopping.value
        await client.close()
        await clientLoop.shutdown()
    }

    @Test("a connection still open at the grace period's end fails with .shutdown", .timeLimit(.minutes(1)), arguments: backends)
    func gracePeriodEnds(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let outcome = Mutex<LoopError?>(nil)
        let server = Task {
            try await listener.serve { socket in
                do throws(LoopError) { _ = try await socket.read(upTo: 64) } catch { outcome.withLock { $0 = error } }
            }
        }
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        try await loop.sleep(for: .milliseconds(30))
        let clock = ContinuousClock()
        let start = clock.now
        await loop.shutdown(gracePeriod: .milliseconds(200))
        let took = clock.now - start
        #expect(took >= .milliseconds(180) && took < .seconds(3), "took \(took)")
        try await server.value
        #expect(outcome.withLock { $0 } == .shutdown)
        _ = client
    }

    @Test("cancelling the shutting-down task ends the grace period at once; any Duration is taken",
          .timeLimit(.minutes(1)), arguments: backends)
    func cancelled(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let server = Task { try await listener.serve { socket in _ = try? await socket.read(upTo: 64) } }
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        try await loop.sleep(for: .milliseconds(30))
        let clock = ContinuousClock()
        let start = clock.now
        let stopping = Task { await loop.shutdown(gracePeriod: .seconds(Int64.max)) }
        try await Task.sleep(for: .milliseconds(50))
        stopping.cancel()
        await stopping.value
        #expect(clock.now - start < .seconds(3))
        try await server.value
        _ = client
        // Already shut down: any grace period returns at once.
        await loop.shutdown(gracePeriod: .zero)
        await loop.shutdown(gracePeriod: .seconds(-5))
        await EventLoop.shutdownAll([loop])
    }
}

extension EventLoop {
    static func shutdownAll(_ loops: [EventLoop]) async { for loop in loops { await loop.shutdown() } }
}
