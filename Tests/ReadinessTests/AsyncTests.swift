import Glibc
import Readiness
import Synchronization
import Testing

/// The event loop and async API (Sources/ReadinessAsync), on every backend.
@Suite("Async", .serialized)
struct AsyncTests {
    // MARK: Executor

    @Test("a task preferring the loop, and an actor isolated to it, run on the loop thread",
          arguments: backends, [EventLoop.JobIsolation.automatic, .serialExecutor, .taskExecutor])
    func executor(backend: Backend, jobs: EventLoop.JobIsolation) async throws {
        try await withLoop(backend, jobs: jobs) { loop in
            let onLoop = await Task(executorPreference: loop) { loop.inLoop }.value
            #expect(onLoop)
            #expect(!loop.inLoop)
            let actor = LoopActor(loop: loop)
            #expect(await actor.check())
            // Resumptions come back to the loop thread too.
            let afterSleep = try await Task(executorPreference: loop) { () async throws -> Bool in
                try await loop.sleep(for: .milliseconds(1))
                return loop.inLoop
            }.value
            #expect(afterSleep)
        }
    }

    @Test("default jobs: a task preferring the loop takes one job per resumption (sleeps, connects)",
          arguments: backends)
    func noHops(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)   // the default: .automatic
        #expect(loop.jobs == .automatic)
        let rounds = 200
        // A task preferring the loop: each sleep resumes it once, and nothing else runs on the loop.
        let taskJobs = try await Task(executorPreference: loop) { () async throws -> Int in
            let before = try await loop.statistics().jobs
            for _ in 0..<rounds { try await loop.sleep(for: .microseconds(1)) }
            return try await loop.statistics().jobs - before
        }.value
        #expect(taskJobs <= rounds + 4, "a task preferring the loop ran \(taskJobs) jobs for \(rounds) sleeps")
        // And connects (one job each: the resumption).
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let acceptor = Task(executorPreference: loop) {
            while let socket = try? await listener.accept() { await socket.close() }
        }
        let connectJobs = try await Task(executorPreference: loop) { () async throws -> Int in
            let before = try await loop.statistics().jobs
            for _ in 0..<rounds { await (try await loop.connect(to: listener.address, timeout: .seconds(5))).close() }
            return try await loop.statistics().jobs - before
        }.value
        // Each connect resumes the connecting task once; the acceptor's resumptions run on the loop too.
        #expect(connectJobs <= 2 * rounds + 4, "\(connectJobs) jobs for \(rounds) connects")
        acceptor.cancel()
        await listener.close()
        await loop.shutdown()
    }

    @Test("a connect cancelled while its socket was being handed over closes that socket (an actor's connect)",
          .timeLimit(.minutes(2)), arguments: backends)
    func cancelledConnectHandover(backend: Backend) async throws {
        let before = openDescriptorCount()
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let acceptor = Task(executorPreference: loop) {
            while let socket = try? await listener.accept() { await socket.close() }
        }
        // The actor's task prefers no executor, so it hops between the connect's start and its wait:
        // the attempt's event is often dispatched in that gap.
        let connector = CancellingConnector(loop: loop)
        var connected = 0
        for _ in 0..<3_000 where await Task(operation: { await connector.connectCancelled(to: listener.address) }).value {
            connected += 1
        }
        acceptor.cancel()
        await listener.close()
        await loop.shutdown()
        let after = await settledDescriptorCount(before)
        #expect(after == before, "\(after - before) descriptors leaked (\(connected) connects succeeded despite the cancel)")
    }

    @Test("an actor isolated to the loop, in a task that prefers no executor, waits on the loop thread",
          .timeLimit(.minutes(1)), arguments: backends, [EventLoop.JobIsolation.automatic, .serialExecutor, .taskExecutor])
    func actorWaits(backend: Backend, jobs: EventLoop.JobIsolation) async throws {
        try await withLoop(backend, jobs: jobs) { loop in
            let actor = LoopActor(loop: loop)
            // Sleeps (the wait was once installed from the global pool: a data race on the loop state
            // and a timer the sleeping loop never saw), then a connect, an accept and a read.
            let (allOnLoop, jobsRun) = try await actor.sleeps(50)
            #expect(allOnLoop)
            // Each wait costs a few jobs here (the runtime's hops between the actor and the
            // cancellation handler's nonisolated closure), never an unbounded number.
            #expect(jobsRun <= 50 * 12, "\(jobsRun) jobs for 50 sleeps")
            #expect(try await actor.echoOnce())
        }
    }

    // MARK: I/O

    @Test("connect, accept, write (plain and vectored), read, end of stream", arguments: backends)
    func echo(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
                async let accepted = listener.accept(timeout: .seconds(5))
                let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let server = try await accepted
                #expect(client.peer == listener.address)
                let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
                async let sent: Void = client.write(payload)
                var received: [UInt8] = []
                while received.count < payload.count {
                    let chunk = try await server.read(upTo: 65536, timeout: .seconds(5))
                    #expect(!chunk.isEmpty)
                    if chunk.isEmpty { break }
                    received += chunk
                }
                try await sent
                #expect(received == payload)
                // Vectored: three buffers, one of them empty.
                let parts: [[UInt8]] = [[1, 2, 3], [], [4, 5]]
                let buffers = parts.map { part in
                    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: part.count, alignment: 1)
                    part.withUnsafeBytes { raw.copyMemory(from: $0) }
                    return UnsafeRawBufferPointer(raw)
                }
                try await server.write(vectored: buffers)
                for buffer in buffers { buffer.deallocate() }
                var back: [UInt8] = []
                while back.count < 5 { back += try await client.read(upTo: 16, timeout: .seconds(5)) }
                #expect(back == [1, 2, 3, 4, 5])
                try await client.shutdown(.write)
                #expect(try await server.read(upTo: 16, timeout: .seconds(5)).isEmpty)
                await client.close()
                await server.close()
                await listener.close()
                #expect(try await loop.entryCount() == 0)
            }.value
        }
    }

    @Test("a socket's peer address is the one given: IPv4 and IPv6 (kept inline), a Unix path (kept apart)",
          arguments: backends)
    func peerAddresses(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let path = "/tmp/readiness-async-peer-\(getpid())-\(backend.name).sock"
                unlink(path)
                var addresses = [try SocketAddress("127.0.0.1:0"), try SocketAddress(unixPath: path)]
                addresses.append(try SocketAddress(ip: "::1", port: 0))   // skipped below where IPv6 is off
                for address in addresses {
                    guard let listener = try? await loop.listen(on: address) else {
                        #expect(address.family == .ipv6, "could not listen on \(address)")
                        continue
                    }
                    async let accepted = listener.accept(timeout: .seconds(5))
                    let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                    let server = try await accepted
                    #expect(client.peer == listener.address)
                    #expect(client.peer?.description == listener.address.description)
                    // A Unix client that did not bind has no name: no peer address (the kernel's
                    // family-only name is not one anybody can reach).
                    if address.family == .unix { #expect(server.peer == nil) } else { #expect(server.peer?.family == address.family) }
                    if address.family != .unix {
                        let local = try await client.withStreamSocket { (stream) throws(SocketError) in stream.localAddress }
                        #expect(server.peer == local)
                    }
                    await client.close(); await server.close(); await listener.close()
                }
            }.value
        }
    }

    @Test("connect by name: off-loop resolution and Happy Eyeballs steps", arguments: backends)
    func connectByName(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            // "localhost" is answered by Resolution itself (RFC 6761), never by getaddrinfo: nothing leaves
            // the machine (AddressTests pins it).
            let client = try await loop.connect(host: "localhost", port: listener.address.port!, timeout: .seconds(5))
            let server = try await listener.accept(timeout: .seconds(5))
            await client.close()
            await server.close()
            await listener.close()
            // Refused: the state machine's cause comes through.
            let port = try closedPort()
            let error = await #expect(throws: LoopError.self) { _ = try await loop.connect(to: port, timeout: .seconds(5)) }
            if case .connect(let connectError)? = error { #expect(connectError.cause == .refused) } else { Issue.record("\(String(describing: error))") }
            let unresolved = await #expect(throws: LoopError.self) {
                _ = try await loop.connect(host: "name.invalid", port: 80, timeout: .seconds(5), resolver: FailingResolver())
            }
            if case .resolution? = unresolved {} else { Issue.record("\(String(describing: unresolved))") }
        }
    }

    // MARK: Deadlines

    @Test("deadlines: read, accept, readable, connect and sleep", arguments: backends)
    func deadlines(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                defer { buffer.deallocate() }
                let start = ContinuousClock.now
                await #expect(throws: LoopError.timedOut) { _ = try await client.read(into: buffer, timeout: .milliseconds(30)) }
                #expect(ContinuousClock.now - start >= .milliseconds(30))
                await #expect(throws: LoopError.timedOut) { _ = try await listener.accept(timeout: .milliseconds(10)) }
                var fds: [CInt] = [0, 0]
                #expect(pipe(&fds) == 0)
                await #expect(throws: LoopError.timedOut) { try await loop.readable(fds[0], timeout: .milliseconds(10)) }
                close(fds[0]); close(fds[1])
                let sleepStart = ContinuousClock.now
                try await loop.sleep(for: .milliseconds(20))
                #expect(ContinuousClock.now - sleepStart >= .milliseconds(20))
                // The socket is still usable after a timed-out read.
                try await server.write([42])
                #expect(try await client.read(into: buffer, timeout: .seconds(5)) == 1)
                // A connect that cannot finish (a full accept queue drops SYNs) times out.
                if let stuck = try StuckListener() {
                    await #expect(throws: LoopError.timedOut) { _ = try await loop.connect(to: stuck.address, timeout: .milliseconds(50)) }
                    stuck.close()
                }
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    @Test("a read's deadline timer outlives the read: a later deadline is waited in full, an earlier one holds, a close leaves no timer",
          .timeLimit(.minutes(1)), arguments: backends)
    func keptDeadlineTimer(backend: Backend) async throws {
        /// How long the peer takes to write, so that each first read waits (and arms its timer).
        let writeDelay = Duration.milliseconds(10)
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                /// A read with `timeout` that the peer answers after `writeDelay`.
                func answeredRead(_ timeout: Duration) async throws {
                    let writer = Task(executorPreference: loop) {
                        try await loop.sleep(for: writeDelay)
                        try await server.write([1])
                    }
                    #expect(try await client.read(upTo: 8, timeout: timeout) == [1])
                    try await writer.value
                }
                // The kept timer fires before this read's deadline: armed again, the read waits in full.
                try await answeredRead(.milliseconds(150))
                let later = Duration.milliseconds(400)
                var start = ContinuousClock.now
                await #expect(throws: LoopError.timedOut) { _ = try await client.read(upTo: 8, timeout: later) }
                #expect(ContinuousClock.now - start >= later)
                // An earlier deadline than the kept timer's: the timer moves.
                try await answeredRead(.seconds(20))
                let earlier = Duration.milliseconds(50)
                start = ContinuousClock.now
                await #expect(throws: LoopError.timedOut) { _ = try await client.read(upTo: 8, timeout: earlier) }
                let elapsed = ContinuousClock.now - start
                #expect(elapsed >= earlier && elapsed < .seconds(10), "timed out after \(elapsed)")
                await client.close(); await server.close(); await listener.close()
            }.value
            // Sockets closed with their read timers kept (deadlines 150 to 250 ms away): the timers go
            // with them, so the idle loop does not wake at those deadlines.
            let sockets = 25
            let (listener, client, server) = try await connectedPair(loop)
            var pairs: [(AsyncSocket, AsyncSocket)] = []
            for _ in 0..<sockets {
                async let accepted = listener.accept(timeout: .seconds(5))
                let connected = try await loop.connect(to: listener.address, timeout: .seconds(5))
                pairs.append((connected, try await accepted))
            }
            try await Task(executorPreference: loop) {
                for (index, (reader, writer)) in pairs.enumerated() {
                    let writing = Task(executorPreference: loop) {
                        try await loop.sleep(for: .milliseconds(1))
                        try await writer.write([1])
                    }
                    _ = try await reader.read(upTo: 8, timeout: .milliseconds(150 + 4 * index))
                    try await writing.value
                    await reader.close(); await writer.close()
                }
            }.value
            let before = try await loop.statistics().iterations
            usleep(400_000)   // not Task.sleep: its first use makes libdispatch open timer descriptors
            let woken = try await loop.statistics().iterations - before
            #expect(woken <= 3, "the idle loop woke \(woken) times after its sockets were closed")
            await client.close(); await server.close(); await listener.close()
        }
    }

    // MARK: Cancellation

    @Test("cancellation at every suspension point: nothing leaked", arguments: backends)
    func cancellation(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                let before = openDescriptorCount()
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                defer { buffer.deallocate() }

                // read
                let read = Task(executorPreference: loop) { try await readOnce(client) }
                try await loop.sleep(for: .milliseconds(5))
                read.cancel()
                await #expect(throws: LoopError.cancelled) { _ = try await read.value }
                // write: fill the send buffer first (the peer does not read)
                try await client.withStreamSocket { (socket) throws(SocketError) in try socket.setSendBufferSize(4096) }
                let big = [UInt8](repeating: 1, count: 8 << 20)
                let write = Task(executorPreference: loop) { try await client.write(big) }
                try await loop.sleep(for: .milliseconds(20))
                write.cancel()
                await #expect(throws: LoopError.cancelled) { try await write.value }
                // accept
                let accept = Task(executorPreference: loop) { try await listener.accept() }
                try await loop.sleep(for: .milliseconds(5))
                accept.cancel()
                await #expect(throws: LoopError.cancelled) { _ = try await accept.value }
                // sleep
                let sleep = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(60)) }
                try await loop.sleep(for: .milliseconds(5))
                sleep.cancel()
                await #expect(throws: LoopError.cancelled) { try await sleep.value }
                // readable on a caller's descriptor
                var fds: [CInt] = [0, 0]
                #expect(pipe(&fds) == 0)
                let pipeRead = fds[0]
                let readable = Task(executorPreference: loop) { try await loop.readable(pipeRead) }
                try await loop.sleep(for: .milliseconds(5))
                readable.cancel()
                await #expect(throws: LoopError.cancelled) { try await readable.value }
                close(fds[0]); close(fds[1])
                // connect in flight (SYN dropped by a full accept queue): its socket is closed
                if let stuck = try StuckListener() {
                    let stuckBefore = openDescriptorCount()
                    let stuckAddress = stuck.address
                    let connect = Task(executorPreference: loop) { try await loop.connect(to: stuckAddress) }
                    try await loop.sleep(for: .milliseconds(20))
                    connect.cancel()
                    await #expect(throws: LoopError.cancelled) { _ = try await connect.value }
                    #expect(openDescriptorCount() == stuckBefore)
                    stuck.close()
                }
                // connect while resolving (a slow resolver)
                let resolving = Task(executorPreference: loop) {
                    try await loop.connect(host: "slow.example", port: 1, resolver: SlowResolver(address: listener.address))
                }
                try await loop.sleep(for: .milliseconds(5))
                resolving.cancel()
                await #expect(throws: LoopError.cancelled) { _ = try await resolving.value }
                // already cancelled before it waits
                let early = Task(executorPreference: loop) { () async throws -> Int in
                    withUnsafeCurrentTask { $0?.cancel() }
                    return try await readOnce(client)
                }
                await #expect(throws: LoopError.cancelled) { _ = try await early.value }

                #expect(openDescriptorCount() == before)
                await client.close(); await server.close(); await listener.close()
                #expect(try await loop.entryCount() == 0)
            }.value
        }
    }

    // MARK: Misuse

    @Test("misuse is a typed error: closed while suspended, closed, after shutdown; a second reader waits for its turn", arguments: backends)
    func misuse(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        defer { loop.syncShutdown() }   // also when an expectation throws (a live loop thread keeps the process)
        let (listener, client, server) = try await connectedPair(loop)
        let (otherListener, otherClient, otherServer) = try await connectedPair(loop)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
        defer { buffer.deallocate() }
        let first = Task(executorPreference: loop) { try await readOnce(client) }
        try await loop.sleep(for: .milliseconds(5))
        await #expect(throws: LoopError.timedOut) { _ = try await client.read(into: buffer, timeout: .milliseconds(20)) }
        // Closing the socket resumes the suspended reader with .closed.
        await client.close()
        await #expect(throws: LoopError.closed) { _ = try await first.value }
        await #expect(throws: LoopError.closed) { _ = try await client.read(into: buffer) }
        await #expect(throws: LoopError.closed) { try await client.write([1]) }
        await client.close()   // twice: nothing
        // Closing a listener resumes its accepter.
        let accept = Task { try await listener.accept() }
        try await loop.sleep(for: .milliseconds(5))
        await listener.close()
        await #expect(throws: LoopError.closed) { _ = try await accept.value }
        // Shutdown resumes a pending read with .shutdown; afterwards everything fails so.
        let pending = Task { try await readOnce(otherServer) }
        try await loop.sleep(for: .milliseconds(5))
        await loop.shutdown()
        await #expect(throws: LoopError.shutdown) { _ = try await pending.value }
        await #expect(throws: LoopError.shutdown) { _ = try await server.read(into: buffer) }
        await #expect(throws: LoopError.shutdown) { try await otherClient.write([1]) }
        await #expect(throws: LoopError.shutdown) { _ = try await otherListener.accept() }
        await #expect(throws: LoopError.shutdown) { try await loop.sleep(for: .milliseconds(1)) }
        await #expect(throws: LoopError.shutdown) { _ = try await loop.listen(on: try SocketAddress("127.0.0.1:0")) }
        await loop.shutdown()   // twice: returns at once
        // A task that still prefers the stopped loop runs (on the global pool).
        let late = await Task(executorPreference: loop) { 7 }.value
        #expect(late == 7)
    }

    // MARK: Shutdown

    @Test("shutdown with 1,000 pending operations: each fails once, every descriptor closed", arguments: backends)
    func shutdownPending(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let loop = try EventLoop(backend: backend)
        defer { loop.syncShutdown() }
        // select cannot watch descriptors >= FD_SETSIZE (1024): fewer sockets there, more sleeps.
        let pairs = backend.name.hasSuffix("select") ? 200 : 400
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: { var o = Listener.Options(); o.backlog = 1024; return o }())
        var sockets: [AsyncSocket] = []
        for _ in 0..<pairs {
            async let accepted = listener.accept(timeout: .seconds(5))
            sockets.append(try await loop.connect(to: listener.address, timeout: .seconds(5)))
            sockets.append(try await accepted)
        }
        let results = ResultsBox()
        await withTaskGroup(of: Void.self) { group in
            for socket in sockets {
                group.addTask(executorPreference: loop) {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
                    defer { buffer.deallocate() }
                    do { _ = try await socket.read(into: buffer) } catch { results.add(error) }
                }
            }
            for _ in 0..<(1000 - sockets.count - 1) {
                group.addTask(executorPreference: loop) {
                    do { try await loop.sleep(for: .seconds(60)) } catch { results.add(error) }
                }
            }
            group.addTask { do { _ = try await listener.accept() } catch { results.add(error) } }
            // Every operation is suspended once the loop has nothing left to run.
            while (try? await loop.entryCount()) ?? 0 < sockets.count + 1 + (1000 - sockets.count - 1) {
                usleep(5_000)
            }
            await loop.shutdown()
        }
        #expect(results.errors.count == 1000)
        #expect(results.errors.allSatisfy { $0 == .shutdown })
        loop.syncShutdown()
        #expect(await settledDescriptorCount(before) == before)
    }

    // MARK: Scale

    @Test("10,000 connect/echo/close tasks on one loop", .timeLimit(.minutes(1)), arguments: backends)
    func manyTasks(backend: Backend) async throws {
        // Descriptors: each task holds two (client and server side) and the process may open 20,000, so
        // at most 2,000 tasks run at once; select (FD_SETSIZE 1024) does 2,000 tasks, 400 at once.
        let selectLike = backend.name.hasSuffix("select")
        let total = (selectLike ? 2_000 : 10_000) / loadDivisor
        let wave = selectLike ? 400 : 2_000
        try await withLoop(backend) { loop in
            var options = Listener.Options()
            options.backlog = 4096
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
            // Server sides still open: a wave starts when the last one's are closed, so that at most
            // 2 x wave descriptors are open (select: under FD_SETSIZE, whatever the scheduling).
            let open = Counter()
            let server = Task(executorPreference: loop) {
                await withTaskGroup(of: Void.self) { connections in
                    while let socket = try? await listener.accept() {
                        open.increment()
                        connections.addTask(executorPreference: loop) {
                            defer { open.decrement() }
                            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 1)
                            defer { buffer.deallocate() }
                            while let n = try? await socket.read(into: buffer), n > 0 {
                                try? await socket.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                            }
                            await socket.close()
                        }
                    }
                }
            }
            let echoed = Counter()
            var started = 0
            while started < total {
                let count = min(wave, total - started)
                for _ in 0..<10_000 where open.value > 0 { try await loop.sleep(for: .milliseconds(1)) }
                await withTaskGroup(of: Void.self) { group in
                    for index in started..<(started + count) {
                        group.addTask(executorPreference: loop) {
                            do {
                                let client = try await loop.connect(to: listener.address, timeout: .seconds(20))
                                let message = (0..<32).map { UInt8(truncatingIfNeeded: index &+ $0) }
                                try await client.write(message, timeout: .seconds(20))
                                var back: [UInt8] = []
                                while back.count < message.count {
                                    let chunk = try await client.read(upTo: 64, timeout: .seconds(20))
                                    if chunk.isEmpty { break }
                                    back += chunk
                                }
                                await client.close()
                                if back == message { echoed.increment() }
                            } catch {
                                Issue.record("task \(index): \(error)")
                            }
                        }
                    }
                }
                started += count
            }
            #expect(echoed.value == total)
            await listener.close()
            _ = await server.value
        }
    }

    // MARK: Multi-core

    @Test("a group of loops with SO_REUSEPORT listeners serves clients on every loop", arguments: backends)
    func group(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let group = try EventLoopGroup(backend: backend, count: 2)
        defer { group.syncShutdown() }
        #expect(group.next() !== group.next())
        let listeners = try await group.listen(on: try SocketAddress("127.0.0.1:0"))
        #expect(Set(listeners.map { $0.address.port }).count == 1)
        // Go TestTCPListener: a port this group serves is in use for another group, of one loop or
        // of two (SO_REUSEPORT would have let the second join and split the connections), unless it
        // asks to share it.
        for count in [1, 2] {
            let other = try EventLoopGroup(backend: backend, count: count)
            var refusal: LoopError?
            do { _ = try await other.listen(on: listeners[0].address) } catch { refusal = error as? LoopError }
            if case .socket(let error)? = refusal { #expect(error.kind == .addressInUse, "\(error)") } else {
                Issue.record("a group of \(count) listened on a port another group serves: \(String(describing: refusal))")
            }
            var sharing = Listener.Options()
            sharing.reusePort = true
            if count == 2 { for joined in try await other.listen(on: listeners[0].address, options: sharing) { await joined.close() } }
            await other.shutdown()
        }
        let served = Counter()
        for listener in listeners {
            Task(executorPreference: listener.loop) {
                while let socket = try? await listener.accept() {
                    #expect(listener.loop.inLoop)
                    served.increment()
                    await socket.close()
                }
            }
        }
        for _ in 0..<100 {
            let loop = group.next()
            let client = try await loop.connect(to: listeners[0].address, timeout: .seconds(5))
            await client.close()
        }
        var waited = 0
        while served.value < 100, waited < 500 {
            usleep(10_000)
            waited += 1
        }
        #expect(served.value == 100)
        await group.shutdown()
        #expect(await settledDescriptorCount(before) == before)
    }
}

// MARK: Helpers

/// Runs `body` with a loop over `backend`, shuts it down, and checks that no descriptor is left.
func withLoop(_ backend: Backend, jobs: EventLoop.JobIsolation = .automatic,
              _ body: (EventLoop) async throws -> Void) async throws {
    warmUp(backend)
    let before = openDescriptorCount()
    let loop = try EventLoop(backend: backend, jobs: jobs)
    do {
        try await body(loop)
    } catch {
        await loop.shutdown()
        throw error
    }
    await loop.shutdown()
    let after = await settledDescriptorCount(before)
    #expect(after == before, "descriptors leaked on \(backend): \(before) before, \(after) after: \(descriptorTargets())")
}

/// What each open descriptor is (for a failure message).
func descriptorTargets() -> [String] {
    var out: [String] = []
    for fd in 0..<256 {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, 255)
        if n > 0 { out.append("\(fd):" + String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
    }
    return out
}

/// Creates and closes one poller, so that a library's lazily opened process-wide descriptors (libevent
/// keeps one after its first timed wait) are open before a test counts.
func warmUp(_ backend: Backend) {
    guard let poller = try? backend.makePoller() else { return }
    _ = try? poller.wait(into: EventBuffer(capacity: 4), timeout: .milliseconds(1))
    try? poller.close()
}

/// The descriptor count once it equals `expected`, or after half a second: a name lookup's thread
/// (getaddrinfo reading /etc/hosts) may still hold a descriptor for a moment after its connect ended.
func settledDescriptorCount(_ expected: Int) async -> Int {
    for _ in 0..<50 {
        if openDescriptorCount() == expected { return expected }
        usleep(10_000)   // not Task.sleep: its first use makes libdispatch open timer descriptors
    }
    return openDescriptorCount()
}

func connectedPair(_ loop: EventLoop) async throws -> (AsyncListener, AsyncSocket, AsyncSocket) {
    let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
    async let accepted = listener.accept(timeout: .seconds(5))
    let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
    return (listener, client, try await accepted)
}

/// One read into a buffer of its own.
func readOnce(_ socket: AsyncSocket, timeout: Duration? = nil) async throws(LoopError) -> Int {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
    defer { buffer.deallocate() }
    return try await socket.read(into: buffer, timeout: timeout)
}

actor LoopActor {
    let loop: EventLoop
    init(loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    func check() -> Bool {
        loop.preconditionIsolated()
        return loop.inLoop
    }
    /// Sleeps `count` times on the loop; whether every resumption was on the loop thread, and the
    /// jobs the loop ran meanwhile.
    func sleeps(_ count: Int) async throws -> (Bool, Int) {
        let before = try await loop.statistics().jobs
        var onLoop = true
        for _ in 0..<count {
            try await loop.sleep(for: .microseconds(1))
            onLoop = onLoop && loop.inLoop
        }
        return (onLoop, try await loop.statistics().jobs - before)
    }
    /// Listens, connects, accepts, writes and reads one byte, all from the actor.
    func echoOnce() async throws -> Bool {
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        async let accepted = listener.accept(timeout: .seconds(5))
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        let server = try await accepted
        try await client.write([7])
        let byte = try await server.read(upTo: 1, timeout: .seconds(5))
        let onLoop = loop.inLoop
        await client.close(); await server.close(); await listener.close()
        return byte == [7] && onLoop
    }
}

final class Counter: Sendable {
    private let storage = PThreadLockedInt()
    func increment() { storage.add(1) }
    func decrement() { storage.add(-1) }
    var value: Int { storage.value }
}

final class PThreadLockedInt: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var count = 0
    init() { pthread_mutex_init(&mutex, nil) }
    func add(_ n: Int) { pthread_mutex_lock(&mutex); count += n; pthread_mutex_unlock(&mutex) }
    var value: Int { pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }; return count }
}

final class ResultsBox: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var stored: [LoopError] = []
    init() { pthread_mutex_init(&mutex, nil) }
    func add(_ error: any Error) {
        pthread_mutex_lock(&mutex)
        stored.append(error as? LoopError ?? .closed)
        pthread_mutex_unlock(&mutex)
    }
    var errors: [LoopError] { pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }; return stored }
}

struct FailingResolver: HostResolver {
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        .failure(ResolutionError(host: host, reason: "test"))
    }
}

struct SlowResolver: HostResolver {
    let address: SocketAddress
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        usleep(200_000)
        return family == .ipv4 ? .success([address]) : .failure(ResolutionError(host: host, reason: "no AAAA"))
    }
}

/// A loopback listener whose accept queue is full (backlog 0, filled, never accepted): further SYNs
/// are dropped, so a connect to it stays in progress. nil where the kernel does not behave so.
final class StuckListener {
    let fd: CInt
    let address: SocketAddress
    var fillers: [CInt] = []

    init?() throws {
        let (fd, address) = try tcpListener(backlog: 0)
        self.fd = fd
        self.address = address
        // Fill the queue until the kernel says it is full (not "a connect that took 50 ms": a loaded
        // host's handshake can take that long, and the tests then checked nothing).
        guard let filled = fillAcceptQueue(fd, address) else {
            close()
            return nil
        }
        fillers = filled
    }

    func close() {
        for filler in fillers { Glibc.close(filler) }
        fillers = []
        Glibc.close(fd)
    }
}

/// A poller of any backend whose waits start failing once told to (a kernel error the loop cannot
/// mend), for the loop's handling of a failed wait.
final class FailingWaitPoller: ForwardingPoller {
    /// Shared between the test and the loop thread.
    final class Switch: Sendable {
        let on = Atomic<Bool>(false)
    }
    let inner: any Poller
    let failing: Switch
    init(_ inner: any Poller, failing: Switch) {
        self.inner = inner
        self.failing = failing
    }
    var forwarded: any Poller { inner }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        if failing.on.load(ordering: .acquiring) { throw .system(operation: "epoll_wait", errno: EIO) }
        return try inner.wait(into: events, timeout: timeout)
    }
}

extension AsyncTests {
    @Test("a poller whose wait fails ends the loop like a shutdown: pending operations fail with .poller, the process goes on",
          arguments: backends)
    func failedWait(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let failing = FailingWaitPoller.Switch()
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            FailingWaitPoller(try backend.makePoller(), failing: failing)
        }
        let sleeper = Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) { try await loop.sleep(for: .seconds(30)) } catch { return error }
            return nil
        }
        try await loop.sleep(for: .milliseconds(20))
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: loop) {}.value   // wakes the loop, whose next wait fails
        let outcome = await sleeper.value
        #expect(outcome == LoopError.poller(PollerError.system(operation: "epoll_wait", errno: EIO)))
        await loop.shutdown()
        #expect(await settledDescriptorCount(before) == before)
    }
}

/// An actor isolated to a loop that connects from a task it has already cancelled.
actor CancellingConnector {
    let loop: EventLoop
    init(loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// True when the connect succeeded all the same (its socket is closed again).
    func connectCancelled(to address: SocketAddress) async -> Bool {
        withUnsafeCurrentTask { $0?.cancel() }
        guard let socket = try? await loop.connect(to: address, timeout: .seconds(5)) else { return false }
        await socket.close()
        return true
    }
}
