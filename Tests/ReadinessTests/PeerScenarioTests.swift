import Glibc
import Synchronization
import Readiness
import Testing

/// Scenarios taken from other event libraries' test suites (mio, tokio, libuv, CPython, Go, SwiftNIO,
/// libevent), as they map onto this package's public API, on every backend.
@Suite("Peer scenarios")
struct PeerScenarioTests {
    // MARK: Half-close (tokio tcp_shutdown, mio tcp shutdown_write, libuv tcp-shutdown-after-write)

    @Test("async half-close: end of stream stays end of stream, the other direction still works", arguments: backends)
    func asyncHalfClose(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.write(Array("hello".utf8), timeout: .seconds(5))
            try await client.shutdown(.write)
            var received: [UInt8] = []
            while true {
                let chunk = try await server.read(upTo: 64, timeout: .seconds(5))
                if chunk.isEmpty { break }
                received += chunk
            }
            #expect(received == Array("hello".utf8))
            // A second and third read at end of stream: 0 again at once, never a hang or an error.
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [])
            #expect(try await readOnce(server, timeout: .seconds(5)) == 0)
            try await server.write(Array("bye".utf8), timeout: .seconds(5))
            #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == Array("bye".utf8))
            await server.close()
            #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == [])
            await client.close()
            await listener.close()
        }
    }

    // MARK: Reset peer (tokio tcp_stream, Go TestCloseWrite, libuv tcp-write-to-half-open)

    @Test("async write and read after the peer reset: a typed socket error, no SIGPIPE, no hang", arguments: backends)
    func asyncResetPeer(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await server.withStreamSocket { (socket) throws(SocketError) in try socket.setLinger(.resetOnClose) }
            await server.close()
            usleep(20_000)
            var writeError: LoopError?
            do {
                for _ in 0..<64 { try await client.write([UInt8](repeating: 1, count: 4096), timeout: .seconds(5)) }
            } catch {
                writeError = error as? LoopError
            }
            guard case .socket(let socketError) = writeError else {
                Issue.record("expected .socket, got \(String(describing: writeError)) on \(backend)")
                return
            }
            #expect(socketError.kind == .reset, "\(socketError)")
            // Reads after the reset: an error or end of stream, never a hang.
            do {
                _ = try await readOnce(client, timeout: .seconds(5))
            } catch {
                #expect(error as? LoopError != .timedOut)
            }
            await client.close()
            await listener.close()
        }
    }

    // MARK: Zero-length writes (tokio tcp_stream write_zero, libuv tcp-write-queue-order, Go)

    @Test("async zero-length writes return at once and send nothing", arguments: backends)
    func asyncZeroWrites(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.write([UInt8](), timeout: .seconds(5))
            try await client.write(Bytes(), timeout: .seconds(5))
            try await client.write(UnsafeRawBufferPointer(start: nil, count: 0), timeout: .seconds(5))
            try await client.write(vectored: [], timeout: .seconds(5))
            try await client.write(vectored: [UnsafeRawBufferPointer(start: nil, count: 0)], timeout: .seconds(5))
            try await client.write(Array("x".utf8), timeout: .seconds(5))
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == Array("x".utf8))
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: Timeouts of 0, negative, tiny, huge (libevent regress, Go TestDeadline, tokio time_timeout)

    @Test("async timeouts of zero, negative, one nanosecond and Duration.max", arguments: backends)
    func asyncExtremeTimeouts(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let serverFD = try await descriptor(of: server)   // before the timed-out reads set the hint
            // Nothing to read: a zero, negative or tiny deadline times out at once.
            for timeout: Duration in [.zero, .seconds(-1), .nanoseconds(1), .nanoseconds(-1)] {
                let start = ContinuousClock.now
                do {
                    _ = try await readOnce(server, timeout: timeout)
                    Issue.record("read with timeout \(timeout) returned on \(backend)")
                } catch {
                    #expect(error as? LoopError == .timedOut, "\(timeout): \(error)")
                }
                #expect(ContinuousClock.now - start < .seconds(1))
                do {
                    _ = try await listener.accept(timeout: timeout)
                    Issue.record("accept with timeout \(timeout) returned on \(backend)")
                } catch {
                    #expect(error as? LoopError == .timedOut, "\(timeout): \(error)")
                }
            }
            // A read that need not wait succeeds with any deadline (a zero one included).
            try await client.write(Array("abcdef".utf8), timeout: .seconds(5))
            awaitReadable(serverFD)   // a poll of the test's own: the hint the reads set is kept
            for timeout: Duration in [.zero, .seconds(-5), .nanoseconds(1), .seconds(Int64.max)] {
                #expect(try await server.read(upTo: 1, timeout: timeout) != [], "\(timeout)")
            }
            // Writes that need not wait succeed with a zero deadline.
            try await client.write(Array("z".utf8), timeout: .zero)
            try await client.write(Array("z".utf8), timeout: .seconds(-1))
            // Sleeps.
            for duration: Duration in [.zero, .seconds(-1), .nanoseconds(1), .nanoseconds(-1), .milliseconds(1)] {
                let start = ContinuousClock.now
                try await loop.sleep(for: duration)
                #expect(ContinuousClock.now - start < .seconds(1))
            }
            // A huge timeout that is cancelled ends (the rest read first).
            while (try? await server.read(upTo: 64, timeout: .milliseconds(20))) != nil {}
            let task = Task { () async throws(LoopError) -> Int in try await readOnce(server, timeout: .seconds(Int64.max)) }
            usleep(20_000)
            task.cancel()
            let outcome = await task.result
            #expect(throws: LoopError.cancelled) { try outcome.get() }
            let sleeper = Task { () async -> LoopError? in
                do { try await loop.sleep(for: .seconds(Int64.max)) } catch { return error as? LoopError }
                return nil
            }
            usleep(20_000)
            sleeper.cancel()
            #expect(await sleeper.value == .cancelled)
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: Close while another task waits (tokio, NIO close while reading/writing)

    @Test("close while another task waits to write on a full buffer: .closed, no hang", arguments: backends)
    func closeWhileWriting(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.withStreamSocket { (socket) throws(SocketError) in try socket.setSendBufferSize(4096) }
            let big = [UInt8](repeating: 7, count: 8 << 20)
            let writer = Task { () async -> LoopError? in
                do { try await client.write(big, timeout: .seconds(10)) } catch { return error as? LoopError }
                return nil
            }
            usleep(50_000)
            await client.close()
            #expect(await writer.value == .closed)
            await server.close()
            await listener.close()
        }
    }

    @Test("close of a listener while a task waits to accept: .closed; accept after: .closed", arguments: backends)
    func closeWhileAccepting(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            #expect(listener.address.port != 0)
            let accepter = Task { () async throws(LoopError) -> AsyncSocket in try await listener.accept(timeout: .seconds(10)) }
            usleep(30_000)
            await listener.close()
            let outcome = await accepter.result
            #expect(throws: LoopError.closed) { _ = try outcome.get() }
            await #expect(throws: LoopError.closed) { _ = try await listener.accept(timeout: .seconds(1)) }
            await listener.close()
        }
    }

    // MARK: Many bytes through a slow reader (mio tcp write_shutdown, tokio tcp_echo, libuv tcp-writealot)

    @Test("4 MiB through a slow reader arrive intact", arguments: backends)
    func slowReader(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let count = 4 << 20
            let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
            let writer = Task { () async -> LoopError? in
                do {
                    try await client.write(data, timeout: .seconds(30))
                    try await client.shutdown(.write)
                } catch { return error as? LoopError }
                return nil
            }
            var received: [UInt8] = []
            received.reserveCapacity(count)
            var reads = 0
            while true {
                let chunk = try await server.read(upTo: 65_536, timeout: .seconds(30))
                if chunk.isEmpty { break }
                received += chunk
                reads += 1
                if reads % 8 == 0 { try await loop.sleep(for: .milliseconds(1)) }
            }
            #expect(await writer.value == nil)
            #expect(received.count == count)
            #expect(received == data)
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: Rebinding right after close (libuv tcp-bind-error, Go TestListenCloseListen, CPython)

    @Test("a listener rebinds its address at once after close, with a connection in TIME_WAIT", arguments: backends)
    func rebindAfterClose(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            // The server side closes first: its end is in TIME_WAIT.
            await server.close()
            #expect(try await client.read(upTo: 8, timeout: .seconds(5)) == [])
            await client.close()
            let address = listener.address
            await listener.close()
            let again = try await loop.listen(on: address)
            #expect(again.address == address)
            async let accepted = again.accept(timeout: .seconds(5))
            let second = try await loop.connect(to: address, timeout: .seconds(5))
            let third = try await accepted
            await second.close()
            await third.close()
            await again.close()
        }
    }

    // MARK: IPv6 (mio tcp connect_ipv6, tokio tcp_connect ipv6, Go ipv6 loopback)

    @Test("IPv6 loopback: listen on [::1]:0, connect, echo", arguments: backends)
    func ipv6Loopback(backend: Backend) async throws {
        let probe = socket(AF_INET6, CInt(SOCK_STREAM.rawValue), 0)
        var ok = probe >= 0
        if ok {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_loopback
            ok = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
            }
            close(probe)
        }
        if !ok { try Test.cancel("::1 is not usable in this network namespace: skipped") }
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("[::1]:0"))
            #expect(listener.address.port != 0)
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            let server = try await accepted
            try await client.write(Array("six".utf8), timeout: .seconds(5))
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("six".utf8))
            #expect(server.peer?.family == .ipv6)
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    // MARK: Datagrams (mio udp_socket, tokio udp, libuv udp-send-and-recv, CPython test_socket)

    @Test("async datagrams: an empty datagram is one datagram; truncation is reported", arguments: backends)
    func asyncDatagramEdges(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let a = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let b = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let bAddress = try await b.withDatagramSocket { (socket) throws(SocketError) -> SocketAddress in
                try SocketAddress.local(of: socket.fd)
            }
            try await a.send([UInt8](), to: bAddress, timeout: .seconds(5))
            var buffer = [UInt8](repeating: 0, count: 4)
            let empty = try await b.receive(into: &buffer, timeout: .seconds(5))
            #expect(empty.count == 0)
            #expect(empty.length == 0)
            #expect(!empty.isTruncated)
            try await a.send(Array("0123456789".utf8), to: bAddress, timeout: .seconds(5))
            let truncated = try await b.receive(into: &buffer, timeout: .seconds(5))
            #expect(truncated.count == 4)
            #expect(truncated.length == 10)
            #expect(truncated.isTruncated)
            #expect(buffer == Array("0123".utf8))
            // Nothing left: the rest of a truncated datagram is gone.
            await #expect(throws: LoopError.timedOut) { _ = try await b.receive(into: &buffer, timeout: .milliseconds(20)) }
            await a.close()
            await b.close()
        }
    }

    @Test("async connected UDP to a closed port: the refusal is a typed error, then the socket still works", arguments: backends)
    func asyncRefusedUDP(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let closed = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
            let port = try SocketAddress.local(of: closed.fd)
            closed.close()
            let socket = try await loop.connectDatagram(to: port)
            try await socket.send(Array("ping".utf8), timeout: .seconds(5))
            var buffer = [UInt8](repeating: 0, count: 16)
            var refused: LoopError?
            do {
                _ = try await socket.receive(into: &buffer, timeout: .seconds(5))
            } catch {
                refused = error as? LoopError
            }
            guard case .socket(let error) = refused else {
                Issue.record("expected a refusal, got \(String(describing: refused)) on \(backend)")
                await socket.close()
                return
            }
            #expect(error.kind == .refused, "\(error)")
            // The error was consumed: the next wait times out.
            await #expect(throws: LoopError.timedOut) { _ = try await socket.receive(into: &buffer, timeout: .milliseconds(20)) }
            await socket.close()
        }
    }

    // MARK: Equal deadlines (tokio time_sleep, libuv timer-order, NIO scheduled tasks)

    @Test("sleeps with one deadline resume in the order they began", arguments: backends)
    func sleepOrder(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            final class Order: @unchecked Sendable {
                var mutex = pthread_mutex_t()
                var values: [Int] = []
                init() { pthread_mutex_init(&mutex, nil) }
                func add(_ v: Int) { pthread_mutex_lock(&mutex); values.append(v); pthread_mutex_unlock(&mutex) }
            }
            let order = Order()
            // Deadlines from one instant taken before the tasks start (200 ms ahead): a task started
            // late (a loaded machine, a sanitizer) cannot tie or swap them, as "now + duration" could.
            let base: Deadline = .after(.milliseconds(200))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<20 {
                    group.addTask(executorPreference: loop) {
                        try await loop.sleep(until: Deadline.after(.milliseconds(50 - i * 2), now: base))
                        order.add(i)
                    }
                }
                try await group.waitForAll()
            }
            #expect(order.values == Array((0..<20).reversed()), "\(order.values)")
            // One deadline for all: they resume in the order they began (tokio, libuv timer-order).
            let equal = Order()
            let same: Deadline = .after(.milliseconds(100))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<20 {
                    group.addTask(executorPreference: loop) {
                        try await loop.sleep(until: same)
                        equal.add(i)
                    }
                }
                try await group.waitForAll()
            }
            #expect(equal.values == Array(0..<20), "\(equal.values)")
        }
    }

    // MARK: Timers cancelled from another's handler (libevent regress event_del in callback, libuv timer)

    @Test("a timer cancelled by the handler of one due at the same instant never fires")
    func timerCancelledByAnother() {
        let timers = Timers()
        let now = Deadline.now
        let first = timers.schedule(at: now, token: 1)
        let second = timers.schedule(at: now, token: 2)
        let third = timers.schedule(at: now, token: 3)
        #expect(timers.popDue(now: now) == 1)
        #expect(timers.cancel(second))
        #expect(!timers.cancel(first))
        #expect(timers.popDue(now: now) == 3)
        #expect(timers.popDue(now: now) == nil)
        #expect(!timers.cancel(third))
        // The freed slots are reused: stale ids still cancel nothing.
        let fourth = timers.schedule(at: now, token: 4)
        #expect(!timers.cancel(second))
        #expect(!timers.cancel(first))
        #expect(timers.isPending(fourth))
        #expect(timers.popDue(now: now) == 4)
    }

    // MARK: Pollers (mio registering, poll; CPython test_selectors)

    /// The wait runs on a thread of its own with SIGALRM unblocked, signalled there by `pthread_kill`
    /// every 20 ms for its first 450 ms (a concurrency thread blocks asynchronous signals: a
    /// process-directed alarm went to the main thread, and the wait was never interrupted). A wait that
    /// returned at EINTR ends early; one that retried with the whole timeout ends a timeout after the
    /// last signal; one that retried with none is woken after 10 s and fails.
    @Test("a wait interrupted by signals neither returns early nor loses its timeout", arguments: backends)
    func waitInterrupted(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        action.sa_flags = 0   // no SA_RESTART
        var old = sigaction()
        sigaction(SIGALRM, &action, &old)
        // A SIGALRM still pending when the old (default: terminate) action comes back would end the
        // runner: ignoring it first discards it (POSIX).
        defer { signal(SIGALRM, SIG_IGN); sigaction(SIGALRM, &old, nil) }
        let timeout = Duration.milliseconds(500)
        let waiter = Mutex<pthread_t?>(nil)
        let outcome = Mutex<(count: Int, elapsed: Duration)?>(nil)
        let release = Atomic<Bool>(false)
        nonisolated(unsafe) let shared = poller
        let thread = Thread {
            var alarm = sigset_t()
            sigemptyset(&alarm)
            sigaddset(&alarm, SIGALRM)
            pthread_sigmask(SIG_UNBLOCK, &alarm, nil)
            waiter.withLock { $0 = pthread_self() }
            let start = ContinuousClock.now
            let count = (try? shared.wait(into: EventBuffer(capacity: 4), timeout: timeout)) ?? -1
            outcome.withLock { $0 = (count, ContinuousClock.now - start) }
            // Alive (its pthread_t valid for pthread_kill) until the signalling stops.
            while !release.load(ordering: .acquiring) { usleep(1_000) }
            pthread_sigmask(SIG_BLOCK, &alarm, nil)
        }
        var sent = 0
        let began = ContinuousClock.now
        var lastSent = began
        while outcome.withLock({ $0 == nil }), ContinuousClock.now - began < .seconds(10) {
            usleep(20_000)
            guard ContinuousClock.now - began < .milliseconds(450), let target = waiter.withLock({ $0 }),
                  outcome.withLock({ $0 == nil }) else { continue }
            if pthread_kill(target, SIGALRM) == 0 { sent += 1; lastSent = ContinuousClock.now }
        }
        // A wait that lost its timeout would never return: woken, so the test fails instead of hanging.
        if outcome.withLock({ $0 == nil }) { try? shared.wakeup() }
        release.store(true, ordering: .releasing)
        thread.join()
        let result = try #require(outcome.withLock { $0 }, "the wait did not return in 10 s on \(backend)")
        #expect(sent >= 3, "\(sent) signals reached the waiting thread on \(backend)")
        #expect(result.count == 0, "\(result.count) events on \(backend)")
        #expect(result.elapsed >= timeout, "returned early after \(result.elapsed) on \(backend)")
        // A wait that restarted its whole timeout at a signal ends a timeout after the last one.
        let restarted = (lastSent - began) + timeout
        #expect(result.elapsed < restarted, "the timeout restarted at a signal? \(result.elapsed) on \(backend)")
    }

    @Test("a registration changed to writable in the handler of its readable event reports writable", arguments: backends)
    func reregisterInHandler(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        try server.register(on: poller, token: 5, interest: .readable)
        #expect(try client.write(Array("a".utf8)) == .transferred(1))
        #expect(try waitFor(.readable, token: 5, on: poller).contains(.readable))
        try server.reregister(token: 6, interest: .writable)
        let ready = try waitFor(.writable, token: 6, on: poller)
        #expect(ready.contains(.writable))
        #expect(!ready.contains(.readable))
        // Deregistered, nothing more comes for it.
        try server.deregister()
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(20))
        for event in events { #expect(event.token != 5 && event.token != 6) }
        // Re-added after removal (libevent: event_add after event_del).
        try server.register(on: poller, token: 7, interest: .readable)
        #expect(try waitFor(.readable, token: 7, on: poller).contains(.readable))
    }

    @Test("edge-triggered readable is reported again only after new data (mio edge)", arguments: backends)
    func edgeAgain(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        if !poller.capabilities.edgeTriggered { try Test.cancel("\(backend) has no edge trigger: skipped") }
        let (client, server) = try tcpPair(on: poller)
        try server.register(on: poller, token: 1, interest: .readable, trigger: .edge)
        #expect(try client.write(Array("a".utf8)) == .transferred(1))
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(30))
        #expect(!events.contains { $0.token == 1 }, "edge reported twice without new data")
        #expect(try client.write(Array("b".utf8)) == .transferred(1))
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
    }

    // MARK: Dropped without close (mio drop, tokio drop, Go finalizers)

    @Test("sockets, listeners and datagram sockets dropped without close leak nothing", arguments: backends)
    func dropWithoutClose(backend: Backend) throws {
        warmUp(backend)
        let before = openDescriptorCount()
        do {
            let poller = try backend.makePoller()
            do {
                let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
                let (client, server) = try tcpPair(on: poller, listener: listener)
                try client.register(on: poller, token: 1, interest: .readable)
                try server.register(on: poller, token: 2, interest: .both)
                let datagram = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
                try datagram.register(on: poller, token: 3, interest: .readable)
                let (p, q) = try DatagramSocket.pair()
                _ = (p, q)
                _ = try poller.wait(into: EventBuffer(capacity: 8), timeout: .zero)
            }
            try poller.close()
        }
        #expect(openDescriptorCount() == before, "\(descriptorTargets())")
    }

    // MARK: Batch 2

    @Test("Unix-domain stream: listen, connect, echo, unnamed peer, path removed on close", arguments: backends)
    func unixStream(backend: Backend) async throws {
        let path = "/tmp/readiness-peer-\(getpid())-\(backend.name).sock"
        unlink(path)
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress(unixPath: path))
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: try SocketAddress(unixPath: path), timeout: .seconds(5))
            let server = try await accepted
            try await client.write(Array("unix".utf8), timeout: .seconds(5))
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("unix".utf8))
            try await server.write(Array("back".utf8), timeout: .seconds(5))
            #expect(try await client.read(upTo: 8, timeout: .seconds(5)) == Array("back".utf8))
            await client.close()
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == [])
            await server.close()
            await listener.close()
            #expect(access(path, F_OK) != 0)
            // Bound again at once.
            let again = try await loop.listen(on: try SocketAddress(unixPath: path))
            await again.close()
        }
    }

    @Test("a peer that closes with unread data resets: the reader gets a typed reset, not end of stream forever", arguments: backends)
    func closeWithUnreadData(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.write(Array("unread".utf8), timeout: .seconds(5))
            usleep(20_000)
            await server.close()   // unread data: the kernel sends RST
            var outcome: LoopError?
            do { _ = try await readOnce(client, timeout: .seconds(5)) } catch { outcome = error as? LoopError }
            guard case .socket(let error) = outcome else {
                Issue.record("expected a reset, got \(String(describing: outcome)) on \(backend)")
                await client.close(); await listener.close()
                return
            }
            #expect(error.kind == .reset, "\(error)")
            await client.close()
            await listener.close()
        }
    }

    @Test("write after our own shutdown(.write): a typed error at once; read after shutdown(.read): end of stream", arguments: backends)
    func ownShutdown(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.shutdown(.write)
            var outcome: LoopError?
            do { try await client.write(Array("late".utf8), timeout: .seconds(2)) } catch { outcome = error as? LoopError }
            guard case .socket(let error) = outcome else {
                Issue.record("expected a socket error, got \(String(describing: outcome)) on \(backend)")
                return
            }
            #expect(error.kind == .reset, "\(error)")
            try await server.shutdown(.read)
            #expect(try await server.read(upTo: 8, timeout: .seconds(2)) == [])
            try await client.shutdown(.write)   // twice: nothing new
            await client.close()
            await server.close()
            await listener.close()
        }
    }

    @Test("connect to a closed port is refused, typed; with a zero timeout it times out or connects; nothing leaks", arguments: backends)
    func connectEdges(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let closed = try closedPort()
            var outcome: LoopError?
            do { _ = try await loop.connect(to: closed, timeout: .seconds(5)) } catch { outcome = error as? LoopError }
            guard case .connect(let error) = outcome else {
                Issue.record("expected a refusal, got \(String(describing: outcome)) on \(backend)")
                return
            }
            #expect(error.cause == .refused, "\(error)")
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            for timeout: Duration in [.zero, .seconds(-1), .nanoseconds(1)] {
                do {
                    let socket = try await loop.connect(to: listener.address, timeout: timeout)
                    await socket.close()
                } catch {
                    #expect(error as? LoopError == .timedOut, "\(timeout): \(error)")
                }
            }
            while let socket = try? await listener.accept(timeout: .milliseconds(20)) { await socket.close() }
            await listener.close()
        }
    }

    @Test("a read that timed out or was cancelled loses no data: the next read gets it", arguments: backends)
    func noDataLostOnTimeout(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 8, timeout: .milliseconds(10)) }
            let reader = Task { () async -> LoopError? in
                do { _ = try await server.read(upTo: 8, timeout: .seconds(5)) } catch { return error as? LoopError }
                return nil
            }
            usleep(10_000)
            reader.cancel()
            #expect(await reader.value == .cancelled)
            try await client.write(Array("kept".utf8), timeout: .seconds(5))
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("kept".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("one reader and one writer on one socket at once (full duplex)", arguments: backends)
    func fullDuplex(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let reader = Task { () async -> [UInt8]? in try? await client.read(upTo: 8, timeout: .seconds(5)) }
            usleep(10_000)
            let big = [UInt8](repeating: 3, count: 4 << 20)
            let writer = Task { () async -> LoopError? in
                do { try await client.write(big, timeout: .seconds(10)) } catch { return error as? LoopError }
                return nil
            }
            var total = 0
            while total < big.count {
                let chunk = try await server.read(upTo: 1 << 16, timeout: .seconds(10))
                if chunk.isEmpty { break }
                total += chunk.count
            }
            #expect(total == big.count)
            #expect(await writer.value == nil)
            try await server.write(Array("r".utf8), timeout: .seconds(5))
            #expect(await reader.value == Array("r".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("many queued connections are all accepted (backlog drained)", arguments: backends)
    func manyQueued(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var options = Listener.Options()
            options.backlog = 8
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
            var fds: [CInt] = []
            for _ in 0..<8 {
                let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
                _ = listener.address.withSockaddr { Glibc.connect(fd, $0, $1) }
                fds.append(fd)
            }
            usleep(20_000)
            var accepted = 0
            for _ in 0..<8 {
                let socket = try await listener.accept(timeout: .seconds(5))
                accepted += 1
                await socket.close()
            }
            #expect(accepted == 8)
            for fd in fds { close(fd) }
            await listener.close()
        }
    }

    @Test("Unix datagram pair: an empty datagram, and a send to a closed peer is typed", arguments: backends)
    func unixDatagrams(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, b) = try DatagramSocket.pair()
        try b.register(on: poller, token: 1, interest: .readable)
        #expect(try a.send([UInt8]()) == .transferred(0))
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        var buffer = [UInt8](repeating: 0, count: 8)
        let result = try b.receive(into: &buffer)
        #expect(result.datagram?.count == 0)
        b.close()
        do {
            _ = try a.send(Array("x".utf8))
            Issue.record("a send to a closed Unix peer succeeded")
        } catch {
            #expect(error.kind == .refused || error.kind == .reset || error.kind == .notConnected, "\(error)")
        }
        a.close()
    }

    // MARK: Batch 3

    @Test("wake-ups coalesce: three wakes give one waker event, the next wait sleeps its timeout", arguments: backends)
    func wakerCoalesces(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        try poller.waker.wake()
        try poller.waker.wake()
        try poller.waker.wake()
        let events = EventBuffer(capacity: 8)
        let n = try poller.wait(into: events, timeout: .seconds(2))
        #expect(n == 1)
        #expect(events.contains { $0.token == .waker })
        let start = ContinuousClock.now
        let m = try poller.wait(into: events, timeout: .milliseconds(40))
        #expect(m == 0, "\(Array(events))")
        #expect(ContinuousClock.now - start >= .milliseconds(40))
        // A wake from another thread ends a blocking wait.
        let waker = poller.waker
        let thread = Thread { usleep(20_000); try? waker.wake() }
        let k = try poller.wait(into: events, timeout: nil)
        #expect(k == 1)
        thread.join()
    }

    @Test("one-shot: reported once, then again only after reregister", arguments: backends)
    func oneShotRearm(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        #expect(try client.write(Array("a".utf8)) == .transferred(1))
        try server.register(on: poller, token: 9, interest: .readable, trigger: .oneShot)
        #expect(try waitFor(.readable, token: 9, on: poller).contains(.readable))
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(30))
        #expect(!events.contains { $0.token == 9 }, "one-shot reported twice")
        try server.reregister(token: 10, interest: .readable, trigger: .oneShot)
        #expect(try waitFor(.readable, token: 10, on: poller).contains(.readable))
        _ = try poller.wait(into: events, timeout: .milliseconds(30))
        #expect(!events.contains { $0.token == 10 || $0.token == 9 })
        try server.deregister()
    }

    @Test("level-triggered with a one-event buffer: both ready descriptors are reported, in turn", arguments: backends)
    func levelFairness(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a1, a2) = try tcpPair(on: poller)
        let (b1, b2) = try tcpPair(on: poller)
        #expect(try a1.write(Array("a".utf8)) == .transferred(1))
        #expect(try b1.write(Array("b".utf8)) == .transferred(1))
        usleep(10_000)
        try a2.register(on: poller, token: 1, interest: .readable)
        try b2.register(on: poller, token: 2, interest: .readable)
        let events = EventBuffer(capacity: 1)
        var seen: Set<Token> = []
        for _ in 0..<4 {
            #expect(try poller.wait(into: events, timeout: .seconds(1)) == 1)
            for event in events { seen.insert(event.token) }
        }
        #expect(seen == [1, 2])
    }

    @Test("the peer's half-close and full close wake a reader; a full close wakes a writer where hang-up is reported", arguments: backends)
    func closeBits(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        try server.register(on: poller, token: 1, interest: .readable)
        try client.shutdown(.write)
        let ready = try waitFor(.readable, token: 1, on: poller)
        #expect(ready.contains(.readable))
        if poller.capabilities.reportsReadClosed { #expect(ready.contains(.readClosed), "\(ready)") }
        #expect(!ready.contains(.hangup), "\(ready)")
        var buffer = [UInt8](repeating: 0, count: 4)
        #expect(try server.read(into: &buffer) == .endOfStream)
        try server.shutdown(.write)
        let both = try waitFor([.readable], token: 1, on: poller)
        #expect(both.contains(.readable))
        if poller.capabilities.reportsHangupAndError { #expect(both.contains(.hangup), "\(both)") }
    }

    @Test("two sequences of one signal both get its delivery; finish ends the iteration", arguments: backends)
    func twoSignalSequences(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let first = try loop.signals([.user1])
            let second = try loop.signals([.user1])
            let a = Task { () async -> Signal? in
                var iterator = first.makeAsyncIterator()
                return await iterator.next()
            }
            let b = Task { () async -> Signal? in
                var iterator = second.makeAsyncIterator()
                return await iterator.next()
            }
            usleep(20_000)
            kill(getpid(), SIGUSR1)   // not raise: a Swift concurrency thread blocks signals
            #expect(await a.value == .user1)
            #expect(await b.value == .user1)
            let third = try loop.signals([.user2])
            let c = Task { () async -> Signal? in
                var iterator = third.makeAsyncIterator()
                return await iterator.next()
            }
            usleep(20_000)
            third.finish()
            #expect(await c.value == nil)
            first.finish(); second.finish()
        }
    }

    @Test("graceful shutdown: a served connection finishes within the grace period; a stuck one is ended after it", arguments: backends)
    func gracefulServe(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let server = Task {
            try await listener.serve { socket in
                // Echo until end of stream.
                while let chunk = try? await socket.read(upTo: 64, timeout: .seconds(30)), !chunk.isEmpty {
                    try? await socket.write(chunk, timeout: .seconds(5))
                }
            }
        }
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
        _ = "hi".withCString { send(client, $0, 2, 0) }
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(recv(client, &buffer, 8, 0) == 2)
        let start = ContinuousClock.now
        await loop.shutdown(gracePeriod: .milliseconds(200))
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(150), "\(elapsed)")
        #expect(elapsed < .seconds(5), "\(elapsed)")
        _ = try? await server.value
        #expect(recv(client, &buffer, 8, 0) == 0)
        close(client)
        #expect(await settledDescriptorCount(before) == before, "\(descriptorTargets())")
    }

    @Test("async datagram: a second receiver waits for its turn; send and receive at once", arguments: backends)
    func datagramBusy(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let a = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let address = try await a.withDatagramSocket { (socket) throws(SocketError) -> SocketAddress in try SocketAddress.local(of: socket.fd) }
            // On the loop: its jobs run in order, so the first receive waits before the second asks.
            let receiver = Task(executorPreference: loop) { () async -> Int? in
                var buffer = [UInt8](repeating: 0, count: 8)
                return try? await a.receive(into: &buffer, timeout: .seconds(5)).count
            }
            try await loop.sleep(for: .milliseconds(20))
            var buffer = [UInt8](repeating: 0, count: 8)
            await #expect(throws: LoopError.timedOut) { _ = try await a.receive(into: &buffer, timeout: .milliseconds(50)) }
            try await a.send(Array("self".utf8), to: address, timeout: .seconds(1))
            #expect(await receiver.value == 4)
            await a.close()
        }
    }

    // MARK: Batch 4

    @Test("async vectored writes of more buffers than IOV_MAX, and of large buffers to a slow reader, arrive in order", arguments: backends)
    func vectoredMany(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.withStreamSocket { (socket) throws(SocketError) in try socket.setSendBufferSize(4096) }
            var parts: [[UInt8]] = (0..<3000).map { i in [UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), 0xEE] }
            parts += (0..<3).map { i in [UInt8](repeating: UInt8(i + 1), count: 1 << 20) }
            let expected = parts.flatMap { $0 }
            let storage = parts.map { part -> UnsafeMutableRawBufferPointer in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: part.count, alignment: 1)
                buffer.copyBytes(from: part)
                return buffer
            }
            defer { for buffer in storage { buffer.deallocate() } }
            nonisolated(unsafe) let buffers = storage.map { UnsafeRawBufferPointer($0) }
            let writer = Task { () async -> LoopError? in
                do {
                    try await client.write(vectored: buffers, timeout: .seconds(30))
                    try await client.shutdown(.write)
                } catch { return error as? LoopError }
                return nil
            }
            var received: [UInt8] = []
            while true {
                let chunk = try await server.read(upTo: 1 << 16, timeout: .seconds(30))
                if chunk.isEmpty { break }
                received += chunk
            }
            #expect(await writer.value == nil)
            #expect(received.count == expected.count)
            #expect(received == expected)
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("a dual-stack IPv6 datagram socket sends to an IPv4 address (as Go, tokio and CPython do)", arguments: backends)
    func dualStackSend(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let v4 = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let v4Address = try await v4.withDatagramSocket { (socket) throws(SocketError) -> SocketAddress in try SocketAddress.local(of: socket.fd) }
            let v6: AsyncDatagramSocket
            do {
                v6 = try await loop.bindDatagram(to: try SocketAddress("[::]:0"))
            } catch {
                await v4.close()
                try Test.cancel("no IPv6 here: \(error)")
            }
            try await v6.send(Array("46".utf8), to: v4Address, timeout: .seconds(2))
            let datagram = try await v4.receive(timeout: .seconds(2))
            #expect(datagram.bytes.withUnsafeBytes { Array($0) } == Array("46".utf8))
            // The reply comes back from an IPv4-mapped source.
            let source = try #require(datagram.datagram.source)
            #expect(source.family == .ipv4)
            try await v4.send(Array("64".utf8), to: source, timeout: .seconds(2))
            let reply = try await v6.receive(timeout: .seconds(2))
            #expect(reply.bytes.withUnsafeBytes { Array($0) } == Array("64".utf8))
            #expect(reply.datagram.source?.family == .ipv6)
            // Connected to an IPv4 peer, from an IPv6 socket and from an IPv6 local address.
            try await v6.withDatagramSocket { (socket) throws(SocketError) in try socket.connect(to: v4Address) }
            try await v6.send(Array("c".utf8), timeout: .seconds(2))
            #expect(try await v4.receive(timeout: .seconds(2)).bytes.count == 1)
            let connected = try await loop.connectDatagram(to: v4Address, from: try SocketAddress("[::]:0"))
            try await connected.send(Array("d".utf8), timeout: .seconds(2))
            #expect(try await v4.receive(timeout: .seconds(2)).bytes.count == 1)
            // The other way round stays refused, before any system call; an IPv6-only socket gets the
            // kernel's typed refusal.
            let v6Address = try await v6.withDatagramSocket { (socket) throws(SocketError) -> SocketAddress in try SocketAddress.local(of: socket.fd) }
            await #expect(throws: LoopError.self) { try await v4.send(Array("x".utf8), to: v6Address, timeout: .seconds(1)) }
            var options = DatagramSocket.Options()
            options.v6Only = true
            let only = try DatagramSocket(bind: try SocketAddress("[::]:0"), options: options)
            #expect(throws: SocketError.self) { _ = try only.send(Array("x".utf8), destination: v4Address) }
            only.close()
            await connected.close(); await v4.close(); await v6.close()
        }
    }

    // MARK: Batch 5

    @Test("sleeps and read deadlines never end early, at any duration (Go TestVariousDeadlines)", arguments: backends)
    func neverEarly(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let durations: [Duration] = [.nanoseconds(1), .microseconds(1), .microseconds(100), .microseconds(999),
                                         .milliseconds(1), .microseconds(1500), .milliseconds(3), .milliseconds(10), .milliseconds(25)]
            for duration in durations {
                var start = ContinuousClock.now
                try await loop.sleep(for: duration)
                var elapsed = ContinuousClock.now - start
                #expect(elapsed >= duration, "sleep \(duration) ended after \(elapsed) on \(backend)")
                #expect(elapsed < duration + .seconds(1))
                start = ContinuousClock.now
                await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 8, timeout: duration) }
                elapsed = ContinuousClock.now - start
                #expect(elapsed >= duration, "read deadline \(duration) ended after \(elapsed) on \(backend)")
            }
            // Many sleeps at once, each with its own small duration: none early.
            let results = await withTaskGroup(of: (Duration, Duration).self) { group in
                for i in 0..<50 {
                    let duration = Duration.microseconds(137 * (i + 1))
                    group.addTask(executorPreference: loop) {
                        let start = ContinuousClock.now
                        try? await loop.sleep(for: duration)
                        return (duration, ContinuousClock.now - start)
                    }
                }
                var out: [(Duration, Duration)] = []
                for await r in group { out.append(r) }
                return out
            }
            for (duration, elapsed) in results { #expect(elapsed >= duration, "\(duration): \(elapsed)") }
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("Unix abstract names: listen, connect, close, listen again at once", arguments: backends)
    func abstractUnix(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let name = try SocketAddress(abstractUnixName: "readiness-peer-\(getpid())-\(backend.name)")
            let listener = try await loop.listen(on: name)
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: name, timeout: .seconds(5))
            let server = try await accepted
            try await client.write(Array("@".utf8), timeout: .seconds(2))
            #expect(try await server.read(upTo: 4, timeout: .seconds(2)) == Array("@".utf8))
            await client.close(); await server.close(); await listener.close()
            let again = try await loop.listen(on: name)
            await again.close()
        }
    }

    @Test("a dual-stack listener accepts IPv4 clients (IPv4-mapped peers)", arguments: backends)
    func dualStackListener(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener: AsyncListener
            do { listener = try await loop.listen(on: try SocketAddress("[::]:0")) } catch { try Test.cancel("no IPv6 here: \(error)") }
            let port = try #require(listener.address.port)
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: try SocketAddress("127.0.0.1:\(port)"), timeout: .seconds(5))
            let server = try await accepted
            #expect(server.peer?.family == .ipv6)
            try await client.write(Array("4".utf8), timeout: .seconds(2))
            #expect(try await server.read(upTo: 4, timeout: .seconds(2)) == Array("4".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("Unix connect to a missing path, a stale socket file and a regular file: typed, nothing leaks", arguments: backends)
    func unixConnectErrors(backend: Backend) async throws {
        let missing = "/tmp/readiness-peer-missing-\(getpid())"
        let stale = "/tmp/readiness-peer-stale-\(getpid())-\(backend.name)"
        let regular = "/tmp/readiness-peer-regular-\(getpid())-\(backend.name)"
        unlink(missing); unlink(stale); unlink(regular)
        // A socket file nobody listens on (bound, then closed without unlink).
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        let staleAddress = try SocketAddress(unixPath: stale)
        _ = staleAddress.withSockaddr { bind(fd, $0, $1) }
        close(fd)
        let file = open(regular, O_CREAT | O_WRONLY, 0o600)
        close(file)
        defer { unlink(stale); unlink(regular) }
        try await withLoop(backend) { loop in
            for path in [missing, stale, regular] {
                do {
                    let socket = try await loop.connect(to: try SocketAddress(unixPath: path), timeout: .seconds(2))
                    Issue.record("connected to \(path)")
                    await socket.close()
                } catch {
                    guard case .connect = error as? LoopError else {
                        Issue.record("\(path): \(error)")
                        continue
                    }
                }
            }
            // Listening on a stale socket file takes it over; on a regular file is refused.
            let listener = try await loop.listen(on: staleAddress)
            await listener.close()
            do {
                let refused = try await loop.listen(on: try SocketAddress(unixPath: regular))
                Issue.record("listened on a regular file")
                await refused.close()
            } catch {
                if case .socket(let e) = error as? LoopError { #expect(e.kind == .pathNotSocket, "\(e)") } else { Issue.record("\(error)") }
            }
            #expect(access(regular, F_OK) == 0)
        }
    }

    @Test("readable on a pipe whose writer closed, writable on a pipe whose reader closed: both wake", arguments: backends)
    func pipeHangups(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var ends: [CInt] = [-1, -1]
            #expect(pipe(&ends) == 0)
            close(ends[1])
            try await loop.readable(ends[0], timeout: .seconds(2))
            close(ends[0])
            #expect(pipe(&ends) == 0)
            close(ends[0])
            try await loop.writable(ends[1], timeout: .seconds(2))
            close(ends[1])
        }
    }

    @Test("descriptors above FD_SETSIZE: every async entry gives a typed error or works, none hangs or leaks", arguments: backends)
    func highDescriptors(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            // Occupy every number up to 1100.
            var fillers: [CInt] = []
            while true {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if fd < 0 { break }
                fillers.append(fd)
                if fd >= 1100 { break }
            }
            defer { for fd in fillers { close(fd) } }
            let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
            defer { close(client) }
            _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
            _ = "hi".withCString { send(client, $0, 2, 0) }
            let outcome: String
            do {
                let server = try await listener.accept(timeout: .seconds(2))
                do {
                    let bytes = try await server.read(upTo: 8, timeout: .seconds(2))
                    outcome = "read \(bytes.count)"
                } catch {
                    outcome = "read error \(error)"
                }
                await server.close()
            } catch {
                outcome = "accept error \(error)"
            }
            #expect(!outcome.contains("timed out"), "\(backend): \(outcome)")
            // A connect whose socket is above the limit, and a listener.
            do {
                let socket = try await loop.connect(to: listener.address, timeout: .seconds(2))
                await socket.close()
            } catch {
                #expect(error as? LoopError != .timedOut, "\(backend): \(error)")
            }
            do {
                let other = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
                await other.close()
            } catch {
                #expect(error as? LoopError != .timedOut, "\(backend): \(error)")
            }
            try await loop.sleep(for: .milliseconds(1))
            await listener.close()
        }
    }

    @Test("shutdown(.read) wakes a blocked reader with end of stream; shutdown(.write) wakes a blocked writer with a typed error (Go CloseRead/CloseWrite)", arguments: backends)
    func shutdownWakesWaiters(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let reader = Task { () async -> String in
                do { return "read \(try await server.read(upTo: 8, timeout: .seconds(3)).count)" } catch { return "\(error)" }
            }
            usleep(30_000)
            try await server.shutdown(.read)
            #expect(await reader.value == "read 0", "\(backend)")
            try await client.withStreamSocket { (socket) throws(SocketError) in try socket.setSendBufferSize(4096) }
            let big = [UInt8](repeating: 1, count: 8 << 20)
            let writer = Task { () async -> LoopError? in
                do { try await client.write(big, timeout: .seconds(3)) } catch { return error as? LoopError }
                return nil
            }
            usleep(50_000)
            try await client.shutdown(.write)
            let outcome = await writer.value
            guard case .socket(let error) = outcome else {
                Issue.record("expected a socket error, got \(String(describing: outcome)) on \(backend)")
                await client.close(); await server.close(); await listener.close()
                return
            }
            #expect(error.kind == .reset, "\(error)")
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("accept backlog overflow: concurrent connects to a listener with backlog 1 that accepts late either connect or time out; nothing hangs or leaks", arguments: backends)
    func backlogOverflow(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var options = Listener.Options()
            options.backlog = 1
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
            let address = listener.address
            let outcomes = await withTaskGroup(of: String.self) { group in
                for _ in 0..<12 {
                    group.addTask(executorPreference: loop) {
                        do {
                            let socket = try await loop.connect(to: address, timeout: .milliseconds(300))
                            await socket.close()
                            return "connected"
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                var out: [String] = []
                for await outcome in group { out.append(outcome) }
                return out
            }
            for outcome in outcomes { #expect(outcome == "connected" || outcome == "timed out", "\(backend): \(outcome)") }
            while let socket = try? await listener.accept(timeout: .milliseconds(50)) { await socket.close() }
            await listener.close()
        }
    }

    @Test("shutdown while a task waits on a caller's descriptor: .shutdown, and the descriptor stays the caller's", arguments: backends)
    func shutdownDuringForeignWait(backend: Backend) async throws {
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let loop = try EventLoop(backend: backend)
        let fd = ends[0]
        let waiter = Task { () async -> LoopError? in
            do { try await loop.readable(fd, timeout: .seconds(10)) } catch { return error as? LoopError }
            return nil
        }
        usleep(30_000)
        await loop.shutdown()
        #expect(await waiter.value == .shutdown)
        #expect(fcntl(fd, F_GETFD) >= 0, "the caller's descriptor was closed")
    }

    @Test("a zero-timeout wait right after registering a ready descriptor reports it (mio zero_duration_polls_events)", arguments: backends)
    func zeroTimeoutSeesReady(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        #expect(try client.write(Array("z".utf8)) == .transferred(1))
        awaitReadable(server.fd)   // not a fixed sleep: a loaded host may deliver later
        try server.register(on: poller, token: 3, interest: .readable)
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .zero)
        #expect(events.contains { $0.token == 3 && $0.ready.contains(.readable) }, "\(backend): \(Array(events))")
        // And after a reregister to both directions, a zero-timeout wait reports both.
        try server.reregister(token: 4, interest: .both)
        _ = try poller.wait(into: events, timeout: .zero)
        let both = events.first { $0.token == 4 }?.ready ?? []
        #expect(both.contains(.readable) && both.contains(.writable), "\(backend): \(both)")
        // A waker woken just before a zero-timeout wait is reported by it.
        try poller.waker.wake()
        _ = try poller.wait(into: events, timeout: .zero)
        #expect(events.contains { $0.token == .waker }, "\(backend): \(Array(events))")
    }

    @Test("a destination of the wrong family: the same invalidArgument from a single send and a batch, and the slots before it are sent")
    func batchWrongFamily() throws {
        let v4 = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let sink = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let (unixA, unixB) = try DatagramSocket.pair()
        defer { v4.close(); sink.close(); unixA.close(); unixB.close() }
        let good = try #require(sink.localAddress)
        let cases: [(DatagramSocket, SocketAddress, SocketAddress?)] = [
            (v4, try SocketAddress("[::1]:9"), good),
            (v4, try SocketAddress(unixPath: "/tmp/readiness-nowhere"), good),
            (unixA, try SocketAddress("127.0.0.1:9"), nil),
        ]
        for (socket, wrong, first) in cases {
            var single: SocketError.Kind?
            do { _ = try socket.send([1], destination: wrong) } catch { single = error.kind }
            #expect(single == .invalidArgument, "single send to \(wrong): \(String(describing: single))")
            let batch = try DatagramBatch(capacity: 4, slotSize: 16)
            try batch.append([1], to: first)
            try batch.append([2], to: wrong)
            // The slot before the wrong one is sent; the wrong one is refused as the single send is.
            #expect(try socket.send(batch, from: 0) == .transferred(1), "\(wrong)")
            var kind: SocketError.Kind?
            do { _ = try socket.send(batch, from: 1) } catch { kind = error.kind }
            #expect(kind == .invalidArgument, "batch send to \(wrong): \(String(describing: kind))")
        }
        // An IPv4 destination of a dual-stack IPv6 socket is no misuse, in a batch as in a single send.
        guard let v6 = try? DatagramSocket(bind: try SocketAddress("[::]:0")) else { return }
        defer { v6.close() }
        let batch = try DatagramBatch(capacity: 2, slotSize: 16)
        try batch.append([4], to: good)
        #expect(try v6.send(batch, from: 0) == .transferred(1))
        #expect(try v6.send([6], destination: good) == .transferred(1))
    }

    @Test("Unix stream pair: our own shutdown(.write) ends a writer waiting for room, and shutdown(.read) a waiting reader, as on TCP", arguments: backends)
    func unixShutdownWakesWaiters(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var ends: [CInt] = [-1, -1]
            #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &ends) == 0)
            let a = try await loop.adopt(descriptor: ends[0])
            let b = try await loop.adopt(descriptor: ends[1])
            let reader = Task { () async -> String in
                do { return "read \(try await b.read(upTo: 8, timeout: .seconds(3)).count)" } catch { return "\(error)" }
            }
            usleep(30_000)
            try await b.shutdown(.read)
            #expect(await reader.value == "read 0", "\(backend)")
            let big = [UInt8](repeating: 1, count: 8 << 20)
            let writer = Task { () async -> LoopError? in
                do { try await a.write(big, timeout: .seconds(3)) } catch { return error as? LoopError }
                return nil
            }
            usleep(50_000)
            let start = ContinuousClock.now
            try await a.shutdown(.write)
            let outcome = await writer.value
            #expect(ContinuousClock.now - start < .seconds(2), "\(backend): the writer waited to its deadline")
            guard case .socket(let error) = outcome else {
                Issue.record("expected a socket error, got \(String(describing: outcome)) on \(backend)")
                await a.close(); await b.close()
                return
            }
            #expect(error.kind == .reset, "\(error)")
            await a.close(); await b.close()
        }
    }

    @Test("CPython test_selectors: deregister after the descriptor was closed, and after its number was reused; then the new file registers and reports", arguments: backends)
    func deregisterAfterCloseAndReuse(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var ends: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &ends) == 0)
        try poller.register(ends[0], token: 1, interest: .readable)
        close(ends[0])
        try poller.deregister(ends[0])
        // Closed, then its number reused by a new socket before the deregister.
        var again: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &again) == 0)
        try poller.register(again[0], token: 2, interest: .readable)
        let number = again[0]
        close(again[0])
        var reused: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &reused) == 0)
        defer { close(reused[0]); close(reused[1]); close(again[1]); close(ends[1]) }
        try #require(reused[0] == number || reused[1] == number, "the number was not reused: skipped")
        let fresh = reused[0] == number ? reused[0] : reused[1]
        let peer = reused[0] == number ? reused[1] : reused[0]
        try poller.deregister(number)
        try poller.register(fresh, token: 3, interest: .readable)
        #expect(write(peer, "x", 1) == 1)
        let events = EventBuffer(capacity: 8)
        var seen: [Token] = []
        let deadline = ContinuousClock.now + .seconds(2)
        while !seen.contains(3), ContinuousClock.now < deadline {
            _ = try poller.wait(into: events, timeout: .milliseconds(100))
            seen += events.map(\.token)
        }
        #expect(seen.contains(3), "\(backend): \(seen)")
        #expect(!seen.contains(1) && !seen.contains(2), "\(backend): \(seen)")
        // Nothing reported for the old tokens in later waits either; the new one stays level-triggered.
        _ = try poller.wait(into: events, timeout: .milliseconds(20))
        #expect(events.map(\.token) == [3], "\(backend): \(events.map(\.token))")
    }

    @Test("port 0 and broadcast destinations: typed errors, the socket still usable (libuv udp-send-and-recv, Go TestUDPZeroBytePayload)", arguments: backends)
    func oddDestinations(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let socket = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let own = try await socket.withDatagramSocket { (s) throws(SocketError) -> SocketAddress in try SocketAddress.local(of: s.fd) }
            for text in ["127.0.0.1:0", "255.255.255.255:9"] {
                do {
                    try await socket.send(Array("x".utf8), to: try SocketAddress(text), timeout: .seconds(1))
                    Issue.record("send to \(text) succeeded on \(backend)")
                } catch {
                    guard case .socket = error as? LoopError else { Issue.record("\(text): \(error)"); continue }
                }
            }
            try await socket.send(Array("self".utf8), to: own, timeout: .seconds(1))
            #expect(try await socket.receive(timeout: .seconds(1)).bytes.count == 4)
            // A stream connect to port 0 is refused, typed.
            do {
                let s = try await loop.connect(to: try SocketAddress("127.0.0.1:0"), timeout: .seconds(1))
                Issue.record("connected to port 0")
                await s.close()
            } catch {
                guard case .connect = error as? LoopError else { Issue.record("port 0: \(error)"); return }
            }
            await socket.close()
        }
    }

    @Test("a writer waiting for room when the peer closes with unread data (RST) ends with reset, on every backend", arguments: backends)
    func writerPeerReset(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let big = [UInt8](repeating: 1, count: 16 << 20)
            let writer = Task { () async -> LoopError? in
                do { try await client.write(big, timeout: .seconds(5)) } catch { return error as? LoopError }
                return nil
            }
            usleep(50_000)
            let start = ContinuousClock.now
            await server.close()   // unread bytes: RST
            let outcome = await writer.value
            #expect(ContinuousClock.now - start < .seconds(3), "\(backend): the writer waited to its deadline")
            guard case .socket(let error) = outcome else {
                Issue.record("expected a reset, got \(String(describing: outcome)) on \(backend)")
                await client.close(); await listener.close()
                return
            }
            #expect(error.kind == .reset, "\(error)")
            await client.close(); await listener.close()
        }
    }
}
