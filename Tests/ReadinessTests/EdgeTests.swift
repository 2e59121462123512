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
        for _ in 0..<max(1, 30 / loadDivisor) {
            let loop = try EventLoop(backend: backend)
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let other = try closedPort()
            // The connecting task prefers no executor: it hops, so shutdown can land between the
            // connect's success on the loop and the task taking it.
            let connect = Task { () async -> LoopError? in
                do throws(LoopError) {
                    let socket = try await loop.connect(to: [listener.address, other], timeout: .seconds(5))
                    await socket.close()
                    return nil
                } catch { return error }
            }
            usleep(UInt32.random(in: 0...400))   // not Task.sleep: libdispatch would open descriptors
            await loop.shutdown()
            if let error = await connect.value {
                #expect(error == .shutdown, "got \(error)")
            }
        }
        #expect(await settledDescriptorCount(before) == before)
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

    // MARK: Listener.resume keeps its back-off when it cannot register (item 13)

    @Test("Listener.resume that cannot register stays backing off", arguments: backends)
    func resumeFailure(backend: Backend) throws {
        let poller = try backend.makePoller()
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        try listener.register(on: poller, token: 1)
        // Out of descriptors: the listener backs off (and deregisters itself).
        var limit = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        let saved = limit
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
        var fillers: [CInt] = []
        limit.rlim_cur = rlim_t(openDescriptorCount() + 8)
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        while true {
            let fd = dup(0)
            if fd < 0 { break }
            fillers.append(fd)
        }
        let result = try listener.accept()
        fillers.forEach { close($0) }
        var restore = saved
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &restore)
        guard case .backingOff = result else { throw TestFailure("expected a back-off, got \(result)") }
        #expect(listener.isBackingOff)
        // The poller is gone: registering again fails, and the listener must not forget its back-off.
        try poller.close()
        #expect(throws: PollerError.self) { try listener.resume() }
        #expect(listener.isBackingOff, "resume() failed to register but cleared the back-off: never watched again")
        guard case .backingOff(let until) = try listener.accept() else { throw TestFailure("expected a back-off") }
        #expect(until > MonotonicClock.nowNanoseconds, "a failed resume must start a new back-off period, not spin")
        listener.close()
    }

    // MARK: A caller-owned descriptor closed while a task waits (item 15)

    @Test("a caller-owned descriptor closed during a wait: the wait goes on to its deadline, on every backend",
          arguments: backends)
    func foreignClosedDuringWait(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            for direction in ["read", "accept"] {
                let fd: CInt
                var peer: CInt = -1
                if direction == "read" {
                    let pair = try socketPair()
                    fd = pair.0
                    peer = pair.1
                } else {
                    fd = try tcpListener().fd
                }
                let waiter = Task(executorPreference: loop) { () async -> LoopError? in
                    do throws(LoopError) { try await loop.readable(fd, timeout: .milliseconds(400)) } catch { return error }
                    return nil
                }
                try await loop.sleep(for: .milliseconds(50))
                close(fd)
                // Something else wakes the loop meanwhile (a sleep), as in a busy server.
                try await loop.sleep(for: .milliseconds(20))
                let outcome = await waiter.value
                #expect(outcome == .timedOut, "\(direction): a wait on a descriptor closed by its owner ended with \(outcome.map { String(describing: $0) } ?? "ready")")
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

func socketPair() throws -> (CInt, CInt) {
    var pair: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        throw TestFailure("socketpair: \(errno)")
    }
    return (pair[0], pair[1])
}
