import Glibc
import Readiness
import Synchronization
import Testing

/// What an outside review of the async layer found, each on every backend: a second writer slipping
/// into a first writer's message, a graceful shutdown whose serve waited for ever on a handler that
/// waits elsewhere, the datagram escape hatch's registration left wrong, and signals lost by an
/// iteration that ended early.
@Suite("Async hardening (review)", .serialized)
struct AsyncHardeningTests {
    @Test("SwiftNIO close(mode: .output) (review): a write waiting for room on a Unix stream socket ends at once when the socket is shut down for writing, on every backend and driver (its readiness never says so)",
          .timeLimit(.minutes(1)), arguments: backends)
    func writeWaitingEndsOnOwnShutdown(backend: Backend) async throws {
        for direction in [ShutdownDirection.write, .both] {
            try await withLoop(backend) { loop in
                let path = "/tmp/readiness-shutwr-\(getpid())-\(UInt32.random(in: 0 ... .max))"
                defer { unlink(path) }
                let listener = try await loop.listen(on: try SocketAddress(unixPath: path))
                let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let server = try await listener.accept(timeout: .seconds(5))   // never reads
                let writing = Task(executorPreference: loop) { () -> LoopError? in
                    do { try await client.write([UInt8](repeating: 1, count: 8 << 20), timeout: .seconds(3)) } catch { return error as? LoopError }
                    return nil
                }
                try await loop.sleep(for: .milliseconds(100))   // the write waits for room
                let start = ContinuousClock.now
                try await client.shutdown(direction)
                let outcome = await writing.value
                #expect(ContinuousClock.now - start < .seconds(2), "the write slept on \(backend) after shutdown(\(direction))")
                if case .socket(let error)? = outcome { #expect(error.kind == .reset, "\(error)") } else {
                    Issue.record("\(String(describing: outcome)) on \(backend) after shutdown(\(direction))")
                }
                await client.close(); await server.close(); await listener.close()
            }
        }
    }

    @Test("Go Close then Shutdown (review): a serve whose listener was closed before the loop shut down still cancels handlers waiting elsewhere and returns; with every handler done it returns at once",
          .timeLimit(.minutes(1)), arguments: backends)
    func serveClosedThenShutdown(backend: Backend) async throws {
        for plain in [false, true] {
            let loop = try EventLoop(backend: backend)
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let cancelled = Atomic<Int>(0)
            let server = Task { try await listener.serve { _ in
                do { try await Task.sleep(for: .seconds(3_600)) } catch { cancelled.add(1, ordering: .relaxed) }
            } }
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            try await loop.sleep(for: .milliseconds(30))    // the handler runs
            await listener.close()
            try await loop.sleep(for: .milliseconds(50))    // serve saw .closed before any shutdown began
            let start = ContinuousClock.now
            if plain { await loop.shutdown() } else { await loop.shutdown(gracePeriod: .milliseconds(200)) }
            _ = await client
            try await server.value
            let took = ContinuousClock.now - start
            #expect(cancelled.load(ordering: .relaxed) == 1, "the handler was not cancelled on \(backend)")
            #expect(took < .seconds(2), "serve took \(took) after the shutdown on \(backend)")
        }
        // Closed with no connection: serve returns at once, the loop still running.
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let server = Task(executorPreference: loop) { try await listener.serve { _ in } }
            try await loop.sleep(for: .milliseconds(20))
            await listener.close()
            try await server.value
        }
    }

    @Test("tokio shutdown_after_tcp_reset (review): shutdown(.write) after the peer reset succeeds, as on a Unix socket whose peer closed; the read then reports the reset or end of stream",
          .timeLimit(.minutes(1)), arguments: backends)
    func shutdownAfterReset(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            await listener.close()
            try await server.withStreamSocket { (s) throws(SocketError) in try s.setLinger(.resetOnClose) }
            await server.close()
            try await loop.sleep(for: .milliseconds(20))
            try await client.shutdown(.write)
            try await client.shutdown(.both)
            await client.close()
            await #expect(throws: LoopError.closed) { try await client.shutdown(.write) }
        }
    }

    @Test("a shutdown racing connects to a Unix path, which succeed at once (review): every connected socket is closed, none left behind",
          .timeLimit(.minutes(1)), arguments: backends)
    func shutdownRacingImmediateConnects(backend: Backend) async throws {
        warmUp(backend)
        let path = "/tmp/readiness-race-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        unlink(path)
        defer { unlink(path) }
        let address = try SocketAddress(unixPath: path)
        let listener = try Listener(bind: address)    // nobody accepts: the connections wait in its queue
        defer { listener.close() }
        let before = openDescriptorCount()
        for round in 0..<6 {
            let loop = try EventLoop(backend: backend)
            let tasks = (0..<4).map { _ in
                Task(executorPreference: loop) { () -> Int in
                    var made = 0
                    while made < 100 {
                        do {
                            let socket = try await loop.connect(to: address, timeout: .seconds(5))
                            await socket.close()
                            made += 1
                        } catch { return made }
                    }
                    return made
                }
            }
            usleep(UInt32(1_000 + round * 1_500))
            await loop.shutdown()
            for task in tasks { _ = await task.value }
            // The queue drained for the next round: each accepted then closed.
            while case .accepted(let server, _) = try listener.accept() { server.close() }
        }
        let after = await settledDescriptorCount(before)
        #expect(after == before, "descriptors leaked on \(backend): \(before) before, \(after) after")
    }

    @Test("two writers on one socket: the second waits for its turn for the whole of the first's write, never in the middle of its bytes",
          .timeLimit(.minutes(1)), arguments: backends)
    func writersNeverInterleave(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let message = 4 << 20
            // The reader drains everything until the end of the stream, so the long write suspends
            // and resumes many times meanwhile.
            let reader = Task(executorPreference: loop) { () async throws -> [UInt8] in
                var got = Bytes()
                while try await server.read(into: &got, maximum: 65_536, timeout: .seconds(20)) > 0 {}
                return Array(got)
            }
            let long = Task(executorPreference: loop) { () async throws in
                try await client.write([UInt8](repeating: 0xAA, count: message), timeout: .seconds(20))
            }
            let busy = Atomic<Int>(0)
            let shorts = Task(executorPreference: loop) { () async -> Int in
                var written = 0
                for _ in 0..<20_000 {
                    do throws(LoopError) {
                        try await client.write([0xBB], timeout: .seconds(20))
                        written += 1
                    } catch {
                        if case .busy = error { busy.add(1, ordering: .relaxed) }
                    }
                    await Task.yield()
                }
                return written
            }
            try await long.value
            let written = await shorts.value
            await client.close()
            let got = try await reader.value
            #expect(got.count == message + written)
            // Every 0xAA of the long write in one run: from the first one on, `message` bytes with no
            // 0xBB among them (memchr: a byte-by-byte search of 4 MiB takes seconds in a debug build).
            let (first, window, intruder) = got.withUnsafeBytes { bytes -> (Int?, Int, Int?) in
                guard let base = bytes.baseAddress, let at = memchr(base, 0xAA, bytes.count) else { return (nil, 0, nil) }
                let first = base.distance(to: UnsafeRawPointer(at))
                let window = min(message, bytes.count - first)
                return (first, window, memchr(base + first, 0xBB, window).map { base.distance(to: UnsafeRawPointer($0)) })
            }
            if let first {
                #expect(window == message, "only \(window) bytes from the long write's first byte on")
                #expect(intruder == nil, "a short write landed inside the long one (\(busy.load(ordering: .relaxed)) busy) at \(intruder ?? -1), after its start at \(first), written \(written)")
            }
            await server.close()
            await listener.close()
        }
    }

    @Test("graceful shutdown: serve returns though a handler waits on something else than the loop (its task is cancelled once the loop has ended)",
          .timeLimit(.minutes(1)), arguments: backends)
    func gracefulServeEnds(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let entered = Atomic<Int>(0), cancelled = Atomic<Int>(0)
        let server = Task {
            try await listener.serve { _ in
                entered.add(1, ordering: .relaxed)
                do { try await Task.sleep(for: .seconds(3600)) } catch { cancelled.add(1, ordering: .relaxed) }
            }
        }
        // A plain blocking client (loopback connects complete at once).
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        #expect(listener.address.withSockaddr { Glibc.connect(client, $0, $1) } == 0)
        defer { close(client) }
        while entered.load(ordering: .relaxed) == 0 { usleep(1000) }
        await loop.shutdown(gracePeriod: .milliseconds(100))
        // serve must return; a watchdog turns a hang into a failure (and ends it by cancelling).
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = await server.result; return true }
            group.addTask { try? await Task.sleep(for: .seconds(10)); return false }
            let first = await group.next()!
            server.cancel()
            group.cancelAll()
            return first
        }
        #expect(ended, "serve did not return after the graceful shutdown")
        #expect(cancelled.load(ordering: .relaxed) == 1)
    }

    @Test("withDatagramSocket that deregisters behind the loop's back: a waiting receive still gets its datagram",
          .timeLimit(.minutes(1)), arguments: backends)
    func datagramHatchReconciled(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let receiver = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let sender = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let waiting = Task(executorPreference: loop) { () async throws -> Int in
                try await receiver.receive(timeout: .seconds(5)).bytes.count
            }
            // Let the receive register and wait.
            try await loop.sleep(for: .milliseconds(50))
            try await receiver.withDatagramSocket { (socket) throws(SocketError) in try? socket.deregister() }
            try await sender.send([1, 2, 3], to: receiver.localAddress!)
            #expect(try await waiting.value == 3)
            await receiver.close()
            await sender.close()
        }
    }

    @Test("signals: an iteration that ends after the first of two deliveries leaves the second to the next iteration",
          .timeLimit(.minutes(1)), arguments: backends)
    func signalsSurviveBreak(backend: Backend) async throws {
        var saved1 = sigaction(), saved2 = sigaction()
        sigaction(SIGUSR1, nil, &saved1)
        sigaction(SIGUSR2, nil, &saved2)
        defer { sigaction(SIGUSR1, &saved1, nil); sigaction(SIGUSR2, &saved2, nil) }
        try await withLoop(backend) { loop in
            let signals = try loop.signals([.user1, .user2])
            SignalTests.send(SIGUSR1)
            SignalTests.send(SIGUSR2)
            try await loop.sleep(for: .milliseconds(50))   // both delivered (to another thread) by now
            var first: Signal?
            for await signal in signals { first = signal; break }
            // Without the fix the second iteration would wait for ever: finish() ends it after 2 s.
            let stopper = Task { try? await Task.sleep(for: .seconds(2)); signals.finish() }
            var second: Signal?
            for await signal in signals { second = signal; break }
            stopper.cancel()
            #expect(Set([first, second].compactMap { $0 }) == [.user1, .user2])
            signals.finish()
        }
    }
}
