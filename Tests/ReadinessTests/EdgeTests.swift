import Glibc
import Readiness
import Synchronization
import Testing

/// Issue 18: the edge of the public surface (wrong answers, hangs, lost work), on every backend. The
/// traps on caller input are pinned by ExtremeInputTests (a child process per entry).
@Suite("Edge", .serialized)
struct EdgeTests {
    // MARK: Empty buffers are not end of stream (item 5)

    @Test("a read into an empty buffer is refused, never reported as end of stream", arguments: backends)
    func emptyRead(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.write([1, 2, 3])
            let empty = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            await #expect(throws: LoopError.invalidArgument("read into an empty buffer")) { try await server.read(into: empty) }
            await #expect(throws: LoopError.invalidArgument("read(upTo: 0)")) { try await server.read(upTo: 0) }
            await #expect(throws: LoopError.invalidArgument("read(upTo: -1)")) { try await server.read(upTo: -1) }
            // The data is still there for a real read.
            #expect(try await server.read(upTo: 16, timeout: .seconds(5)) == [1, 2, 3])
            // The sync layer: the same misuse, the same answer.
            let pair = try socketPair()
            let socket = try StreamSocket(adopting: pair.0)
            defer { close(pair.1) }
            var none: [UInt8] = []
            #expect(throws: SocketError.self) { try socket.read(into: &none) }
            #expect(throws: SocketError.self) { try socket.read(into: UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: Happy Eyeballs options (items 6, 7, 11)

    @Test("one address in a list keeps the Happy Eyeballs attempt timeout", arguments: backends)
    func oneAddressAttemptTimeout(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (full, address, fillers) = try fullTCPListener()
            defer { close(full); fillers.forEach { close($0) } }
            var options = HappyEyeballs.Options()
            options.attemptTimeout = .milliseconds(200)
            let start = ContinuousClock.now
            do throws(LoopError) {
                _ = try await loop.connect(to: [address], timeout: .seconds(3), options: options)
                Issue.record("connected to a full listener")
            } catch .connect(let error) {
                #expect(error.cause == .timedOut)
            } catch {
                Issue.record("expected .connect(.timedOut), got \(error)")
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .milliseconds(1500), "took \(elapsed): the 200 ms attempt timeout was ignored")
        }
    }

    @Test("no address, or no attempt allowed: a typed error that is not a resolution failure", arguments: backends)
    func noAddress(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            await #expect(throws: LoopError.connect(ConnectError(.noAddress))) {
                try await loop.connect(to: [], timeout: .seconds(1))
            }
            var options = HappyEyeballs.Options()
            for attempts in [0, -1, Int.min] {
                options.maximumAttempts = attempts
                await #expect(throws: LoopError.invalidArgument("HappyEyeballs.Options.maximumAttempts must be at least 1")) {
                    try await loop.connect(to: [try SocketAddress("127.0.0.1:9")], timeout: .seconds(1), options: options)
                }
            }
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            #expect(throws: ConnectError(.noAddress)) { try Connector.connect(to: [], on: poller, timeout: .seconds(1)) }
            options.maximumAttempts = 0
            do throws(HostConnectError) {
                _ = try Connector.connect(toHost: "127.0.0.1:9", on: poller, options: options)
                Issue.record("connected with no attempt allowed")
            } catch {
                guard case .invalidOptions = error else { Issue.record("expected .invalidOptions, got \(error)"); return }
            }
        }
    }

    @Test("shutdown racing a multi-address connect's success fails it with .shutdown", arguments: backends)
    func shutdownRacingConnect(backend: Backend) async throws {
        let before = openDescriptorCount()
        var outcomes: [String: Int] = [:]
        for _ in 0..<max(1, 200 / loadDivisor) {
            let loop = try EventLoop(backend: backend)
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let other = try closedPort()
            // An actor isolated to the loop, in a task that prefers no executor: its connect resumes in
            // two jobs (the wait's, then the hop back to the actor), and a shutdown can come in between.
            let connector = ShutdownRacer(loop: loop)
            // Three shapes: two addresses (Happy Eyeballs), a list of one, one address.
            let shape = Int.random(in: 0..<3)
            let targets = shape == 0 ? [listener.address, other] : [listener.address]
            let connect = Task { await connector.connect(to: targets, single: shape == 2) }
            usleep(UInt32.random(in: 0...300))   // not Task.sleep: libdispatch would open descriptors
            await loop.shutdown()
            let error = await connect.value
            outcomes[error.map { "\($0)" } ?? "connected", default: 0] += 1
            if let error { #expect(error == .shutdown, "a connect cut by shutdown failed with \(error)") }
        }
        #expect(await settledDescriptorCount(before) == before)
        print("shutdown racing connect on \(backend): \(outcomes)")
    }

    // MARK: A shutdown is never lost (found by the race test above)

    @Test("shutdown requested while the loop goes to sleep is never lost", .timeLimit(.minutes(2)), arguments: backends)
    func shutdownNeverLost(backend: Backend) async throws {
        // The loop checks for a stop, runs its jobs, then decides to sleep: a shutdown requested in
        // between found it not yet sleeping (no wake-up) and the loop then slept for ever.
        for round in 0..<max(1, 100 / loadDivisor) {
            let loop = try EventLoop(backend: backend)
            // A job that runs for a while, so that the stop comes while the loop is between its stop
            // check and its sleep.
            let started = Atomic<Bool>(false)
            let job = Task(executorPreference: loop) { () -> Int in
                started.store(true, ordering: .releasing)
                usleep(2_000)
                return round
            }
            while !started.load(ordering: .acquiring) { usleep(50) }
            await loop.shutdown()
            _ = await job.value
        }
    }

    @Test("syncShutdown on the loop's own thread asks for the shutdown instead of trapping", .timeLimit(.minutes(1)), arguments: backends)
    func syncShutdownOnLoop(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        await Task(executorPreference: loop) { loop.syncShutdown() }.value
        await loop.shutdown()
        #expect(loop.isShuttingDown)
    }

    // MARK: Timers keep scheduling order (item 10)

    @Test("timers at one deadline fire in the order they were scheduled")
    func timerOrder() {
        let timers = Timers()
        for index in 0..<100 { timers.schedule(at: 1_000, token: Token(UInt64(index))) }
        var fired: [UInt64] = []
        while let token = timers.popDue(now: 1_000) { fired.append(token.rawValue) }
        #expect(fired == Array(0..<100))
        // With cancellations and a second deadline interleaved.
        var ids: [TimerID] = []
        for index in 0..<50 {
            ids.append(timers.schedule(at: 2_000, token: Token(UInt64(index))))
            timers.schedule(at: 1_500, token: Token(UInt64(1_000 + index)))
        }
        for id in ids where id.hashValue % 3 == 0 { timers.cancel(id) }
        fired = []
        while let token = timers.popDue(now: 2_000) { fired.append(token.rawValue) }
        let early = fired.filter { $0 >= 1_000 }, late = fired.filter { $0 < 1_000 }
        #expect(early == Array(1_000..<1_050))
        #expect(late == late.sorted())
        #expect(fired == early + late)
    }

    // MARK: The escape hatch cannot break the loop's bookkeeping (item 12)

    @Test("withStreamSocket deregistering, reregistering or releasing never hangs the next wait", arguments: backends)
    func escapeHatch(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            // A read waits once, so the loop registers the socket.
            let first = Task { try await server.read(upTo: 8, timeout: .seconds(5)) }
            try await loop.sleep(for: .milliseconds(20))
            try await client.write([1])
            #expect(try await first.value == [1])
            // The escape hatch drops the registration behind the loop's back.
            try await server.withStreamSocket { (socket) throws(SocketError) in try? socket.deregister() }
            let second = Task { try await server.read(upTo: 8, timeout: .seconds(2)) }
            try await loop.sleep(for: .milliseconds(20))
            try await client.write([2])
            #expect(try await second.value == [2])
            // ... or changes it (another token, another interest).
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            try await server.withStreamSocket { (socket) throws(SocketError) in
                try? socket.reregister(token: 12_345, interest: .writable)
            }
            let third = Task { try await server.read(upTo: 8, timeout: .seconds(2)) }
            try await loop.sleep(for: .milliseconds(20))
            try await client.write([3])
            #expect(try await third.value == [3])
            // ... or registers it with another poller without deregistering first (refused: one
            // poller at a time), while a read waits. The completion driver's read is in the ring, not
            // registered with the loop's poller: there the registration is allowed, and undone after.
            let readsInRing = try await loop.ioDriver().kind == .completion
            let fifth = Task { try await server.read(upTo: 8, timeout: .seconds(2)) }
            try await loop.sleep(for: .milliseconds(20))
            _ = try await server.withStreamSocket { (socket) throws(SocketError) in
                if readsInRing {
                    #expect(throws: Never.self) { try socket.register(on: poller, token: 9, interest: .readable) }
                } else {
                    #expect(throws: PollerError.self) { try socket.register(on: poller, token: 9, interest: .readable) }
                }
            }
            try await client.write([5])
            #expect(try await fifth.value == [5])
            // ... or registers it with another poller while a read waits.
            let fourth = Task { try await server.read(upTo: 8, timeout: .seconds(2)) }
            try await loop.sleep(for: .milliseconds(20))
            try await server.withStreamSocket { (socket) throws(SocketError) in
                try? socket.deregister()
                try? socket.register(on: poller, token: 7, interest: .readable)
            }
            try await client.write([4])
            #expect(try await fourth.value == [4])
            // ... or takes the descriptor: the socket is the caller's, the loop forgets it.
            let fd = try await server.withStreamSocket { (socket) throws(SocketError) in socket.release() }
            await #expect(throws: LoopError.closed) { try await server.read(upTo: 8, timeout: .seconds(1)) }
            #expect(fcntl(fd, F_GETFD) >= 0)
            close(fd)
            await client.close()
            await listener.close()
        }
    }

    // MARK: One owner per descriptor (review)

    @Test("a descriptor the loop owns is never adopted again, nor waited on as the caller's", arguments: backends)
    func oneOwner(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let (a, b) = try socketPair()
            let adopted = try await loop.adopt(descriptor: a)
            do throws(LoopError) {
                _ = try await loop.adopt(descriptor: a)
                Issue.record("adopted twice")
            } catch {
                guard case .invalidArgument = error else { Issue.record("adopting twice: \(error)"); return }
            }
            let serverFD = try await server.withStreamSocket { (socket) throws(SocketError) in socket.fd }
            for fd in [a, serverFD] {
                await #expect(throws: LoopError.self) { try await loop.adopt(descriptor: fd) }
                do throws(LoopError) {
                    try await loop.readable(fd, timeout: .milliseconds(10))
                    Issue.record("waited on a descriptor the loop owns")
                } catch {
                    guard case .invalidArgument = error else { Issue.record("readable of an owned descriptor: \(error)"); return }
                }
            }
            // Still the loop's, and still working.
            _ = write(b, "z", 1)
            #expect(try await adopted.read(upTo: 4, timeout: .seconds(5)) == Array("z".utf8))
            await adopted.close()
            close(b)
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: io_uring's extra batches end (review)

    @Test("a wait returns while a registered descriptor fires without pause", .timeLimit(.minutes(1)), arguments: backends)
    func busyDescriptorDoesNotHoldTheWait(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        try poller.register(a, token: 1, interest: .readable)
        let stop = Atomic<Bool>(false)
        let writer = Thread {
            var byte: UInt8 = 0
            while !stop.load(ordering: .relaxed) {
                _ = write(b, &byte, 1)
                _ = read(a, &byte, 1)   // drained at once: each write is a new completion
            }
        }
        let events = EventBuffer(capacity: 64)
        var slowest: Duration = .zero
        for _ in 0..<50 {
            let start = ContinuousClock.now
            try poller.wait(into: events, timeout: .milliseconds(5))
            slowest = max(slowest, ContinuousClock.now - start)
        }
        stop.store(true, ordering: .relaxed)
        writer.join()
        #expect(slowest < .seconds(2), "a 5 ms wait took \(slowest) while a descriptor kept firing")
    }

    // MARK: Listener.resume keeps its back-off when it cannot register (item 13)

    @Test("Listener.resume that cannot register stays backing off", arguments: backends)
    func resumeFailure(backend: Backend) throws {
        let poller = try backend.makePoller()
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        try listener.register(on: poller, token: 1)
        // Out of descriptors: the listener backs off (and deregisters itself).
        let client = try driveIntoBackOff(listener)
        defer { close(client) }
        #expect(listener.isBackingOff)
        // The poller is gone: registering again fails, and the listener must not forget its back-off.
        try poller.close()
        #expect(throws: PollerError.self) { try listener.resume() }
        #expect(listener.isBackingOff, "resume() failed to register but cleared the back-off: never watched again")
        guard case .backingOff(let until) = try listener.accept() else { throw TestFailure("expected a back-off") }
        #expect(until > .now, "a failed resume must start a new back-off period, not spin")
        listener.close()
    }

    // MARK: A caller-owned descriptor closed while a task waits (item 15)

    @Test("a caller-owned descriptor closed during a wait: the wait goes on to its deadline, on every backend",
          arguments: backends)
    func foreignClosedDuringWait(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            for kind in ["stream", "listener"] {
                let fd: CInt
                var peer: CInt = -1
                if kind == "stream" {
                    (fd, peer) = try socketPair()
                } else {
                    fd = try tcpListener().fd
                }
                // A second wait, on a descriptor that becomes readable after the close: it wakes the
                // loop while the closed number is still in the poller's set.
                let (other, otherPeer) = try socketPair()
                let waiter = Task(executorPreference: loop) { () async -> LoopError? in
                    do throws(LoopError) { try await loop.readable(fd, timeout: .milliseconds(400)) } catch { return error }
                    return nil
                }
                let wake = Task(executorPreference: loop) { try? await loop.readable(other, timeout: .seconds(2)) }
                // The owner closes it on a thread of its own while the loop sleeps in the poller.
                let closer = Thread {
                    usleep(50_000)
                    close(fd)
                    usleep(5_000)
                    _ = write(otherPeer, "x", 1)
                }
                let outcome = await waiter.value
                await wake.value
                closer.join()
                #expect(outcome == .timedOut, "\(kind): a wait on a descriptor closed by its owner ended with \(outcome.map { String(describing: $0) } ?? "ready")")
                close(other)
                close(otherPeer)
                if peer >= 0 { close(peer) }
            }
        }
    }

    @Test("a registered descriptor closed by another thread during a wait is not reported", arguments: backends)
    func closedDuringPollerWait(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        for interest in [Interest.readable, .writable, [.readable, .writable]] {
            let pair = try socketPair()
            // Writable at once: fill the send buffer so that only the close could make it "ready".
            if interest.contains(.writable) {
                let chunk = [UInt8](repeating: 0, count: 65_536)
                while chunk.withUnsafeBytes({ send(pair.0, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }) > 0 {}
            }
            try poller.register(pair.0, token: 5, interest: interest)
            let fd = pair.0
            let closer = Thread {
                usleep(50_000)
                close(fd)
            }
            let events = EventBuffer(capacity: 8)
            try poller.wait(into: events, timeout: .milliseconds(300))
            closer.join()
            #expect(!events.contains { $0.token == 5 }, "\(interest): a descriptor closed during the wait was reported \(Array(events))")
            try poller.deregister(fd)
            close(pair.1)
        }
    }

    // MARK: A wait fills the caller's buffer (item 16)

    @Test("a wait with many descriptors ready fills the buffer", arguments: backends)
    func fillsBuffer(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        // Both ends of each pair, as many as the descriptor limit (20,000 here) and the backend allow.
        let pairCount = min(4_992, Int(poller.capabilities.maxDescriptor) / 3) / max(1, loadDivisor)
        let count = pairCount * 2
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for index in 0..<pairCount {
            let pair = try socketPair()
            pairs.append(pair)
            try poller.register(pair.0, token: Token(UInt64(2 * index)), interest: .writable)
            try poller.register(pair.1, token: Token(UInt64(2 * index + 1)), interest: .writable)
        }
        let events = EventBuffer(capacity: count * 2)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.count == count, "\(events.count) of \(count) ready descriptors reported in one wait")
    }
}

/// Connects from an actor isolated to the loop, in a task that prefers no executor.
actor ShutdownRacer {
    let loop: EventLoop
    init(loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    /// nil when connected (the socket is closed again), else the error.
    func connect(to addresses: [SocketAddress], single: Bool) async -> LoopError? {
        do throws(LoopError) {
            let socket = single ? try await loop.connect(to: addresses[0], timeout: .seconds(5))
                                : try await loop.connect(to: addresses, timeout: .seconds(5))
            await socket.close()
            return nil
        } catch { return error }
    }
}

func socketPair() throws -> (CInt, CInt) {
    var pair: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        throw TestFailure("socketpair: \(errno)")
    }
    return (pair[0], pair[1])
}
