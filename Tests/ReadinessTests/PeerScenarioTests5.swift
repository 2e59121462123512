import Glibc
import Readiness
import Synchronization
import Testing

private final class P5Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// Scenarios from the peers' test suites (tokio, libuv, SwiftNIO, Go, CPython), stop 32.
@Suite("Peer scenarios 5", .serialized)
struct PeerScenarioTests5 {
    /// tokio tests/coop_budget.rs: a task whose every operation completes at once never suspends, so
    /// without a budget it holds the loop thread for ever: the loop's other tasks and its timers never
    /// run. Before: the other task and the timer had not run after 50,000 rounds on the readiness
    /// driver (every backend but io_uring's completion waits).
    @Test("a task whose I/O is always ready lets the loop's other tasks and timers run (tokio coop budget)", arguments: backends)
    func busyTaskLetsOthersRun(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let datagrams = try await loop.bindDatagram(to: try SocketAddress(ip: "127.0.0.1", port: 0))
                let address = try #require(datagrams.localAddress)
                let listener = try await loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0))
                let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let server = try await listener.accept(timeout: .seconds(5))
                for streams in [false, true] {
                    let ran = P5Counter()
                    let other = Task(executorPreference: loop) { ran.add() }
                    let timer = Task(executorPreference: loop) { () async throws in
                        try await loop.sleep(for: .milliseconds(1))
                        ran.add()
                    }
                    var rounds = 0
                    var buffer = [UInt8](repeating: 0, count: 16)
                    while rounds < 50_000, ran.value < 2 {
                        if streams {
                            try await client.write([1])
                            _ = try await server.read(upTo: 16)
                        } else {
                            try await datagrams.send([1], to: address)
                            _ = try await datagrams.receive(into: &buffer)
                        }
                        rounds += 1
                    }
                    #expect(ran.value == 2, "\(streams ? "stream" : "datagram"): after \(rounds) rounds")
                    await other.value
                    try await timer.value
                }
                await client.close()
                await server.close()
                await listener.close()
                await datagrams.close()
            }.value
        }
    }
}

extension PeerScenarioTests5 {
    /// libuv test-signal.c's fork cases, tokio's "dropping one listener keeps the other's": in a child
    /// made by fork, the parent's counts and slots are not the child's. Before: the child's close of
    /// a subscription it inherited freed the slot its own new subscription had taken (exit 2: that
    /// subscription never got its signal), and the child's last subscription did not put the action
    /// back, the parent's count still holding it (exit 3: the handler stayed, swallowing the signal).
    @Test("signals in a forked child: an inherited subscription's close leaves the child's own alone; the child's last close puts the action back")
    func forkedChildSubscriptions() throws {
        var saved1 = sigaction(), saved2 = sigaction()
        sigaction(SIGUSR1, nil, &saved1)
        sigaction(SIGUSR2, nil, &saved2)
        defer { sigaction(SIGUSR1, &saved1, nil); sigaction(SIGUSR2, &saved2, nil) }
        signal(SIGUSR1, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        let inherited = try SignalSubscription([.user1])
        defer { inherited.close() }
        let child = fork()
        if child == 0 {
            // The child (one thread, the forking thread's mask: unblock the two signals for raise).
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            sigaddset(&set, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            // Its own subscription takes the first free slot, the inherited one's.
            guard let own = try? SignalSubscription([.user1, .user2]) else { _exit(1) }
            inherited.close()
            raise(SIGUSR2)
            guard own.drain().contains(.user2) else { _exit(2) }
            own.close()
            var action = sigaction()
            sigaction(SIGUSR1, nil, &action)
            _exit(unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == 1 ? 0 : 3)   // SIG_IGN is back
        }
        #expect(child > 0)
        var status: CInt = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        #expect(status == 0, "the child exited with \(status >> 8)")
        // The parent's subscription is untouched by the child.
        let raiser = Thread {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            raise(SIGUSR1)
        }
        raiser.join()
        #expect(inherited.drain().contains(.user1))
    }
}

extension PeerScenarioTests5 {
    /// SwiftNIO "close while writes are pending", Go "close unblocks pending operations", on a pool of
    /// connections: a task that catches the read's `.shutdown` and then closes 200 sockets in one job
    /// spends its operation budget inside the shutdown's drain. Found in review of the budget: its
    /// continuation was parked for a poller wait that never comes (the task never ended).
    @Test("after shutdown, a task that closes 200 sockets in one go ends", arguments: backends)
    func closeManyAfterShutdown(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        var sockets: [AsyncSocket] = []
        var peers: [CInt] = []
        for _ in 0..<200 {
            let (a, b) = try socketPair()
            sockets.append(try await loop.adopt(descriptor: a))
            peers.append(b)
        }
        defer { for peer in peers { close(peer) } }
        let all = sockets
        let task = Task(executorPreference: loop) { () async -> Bool in
            let failed: Bool
            do { _ = try await all[0].readAvailable(); failed = false } catch { failed = true }
            for socket in all { await socket.close() }
            return failed
        }
        try await Task.sleep(for: .milliseconds(50))
        await loop.shutdown()
        #expect(await task.value)
    }

    /// SwiftNIO testTasksScheduledDuringShutdownAreAutomaticallyCancelled, tokio's interval during
    /// runtime shutdown: a periodic task that logs and retries whatever fails. During the shutdown's
    /// drain its sleep fails at once without suspending, so it never gave the loop thread back: before,
    /// `shutdown()` returned only when the task gave up (here after 2,000,000 retries).
    @Test("a task that retries a failing sleep does not hold up shutdown", arguments: backends)
    func retryingTaskDoesNotHoldShutdown(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let stop = P5Counter(), started = P5Counter()
        let task = Task(executorPreference: loop) { () async -> Int in
            var failures = 0
            started.add()
            while stop.value == 0, failures < 2_000_000 {
                do { try await loop.sleep(for: .seconds(1)) } catch { failures += 1 }
            }
            return failures
        }
        while started.value == 0 { try await Task.sleep(for: .milliseconds(1)) }
        try await Task.sleep(for: .milliseconds(20))
        let clock = ContinuousClock()
        let began = clock.now
        await loop.shutdown()
        let took = clock.now - began
        stop.add()
        let failures = await task.value
        #expect(took < .seconds(2) && failures < 2_000_000, "shutdown took \(took), \(failures) retries")
    }
}

/// A connect that never completes: socket() hands out a pipe's read end (never writable) and connect
/// says EINPROGRESS, so the attempt waits until its deadline.
final class P5HangingSyscalls: ConnectSyscalls, @unchecked Sendable {
    private var writeEnds: [CInt] = []
    private let base = SystemConnectSyscalls()
    func socket(domain: CInt) -> (fd: CInt, errno: CInt) {
        var ends: [CInt] = [-1, -1]
        guard pipe(&ends) == 0 else { return (-1, errno) }
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        writeEnds.append(ends[1])
        return (ends[0], 0)
    }
    func bind(_ fd: CInt, to address: SocketAddress) -> CInt { 0 }
    func connect(_ fd: CInt, to address: SocketAddress) -> CInt { EINPROGRESS }
    func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult { base.socketError(fd) }
    func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.peerName(fd) }
    func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.localName(fd) }
    func close(_ fd: CInt) { base.close(fd) }
    deinit { for fd in writeEnds { Glibc.close(fd) } }
}

extension PeerScenarioTests5 {
    /// SwiftNIO HappyEyeballsTest (one resolver answers, the other hangs) with the attempts capped:
    /// once the one attempt allowed has failed, nothing can start. Before: the connect waited for the
    /// other family's lookup (here 3 s; for ever with a lookup that never returns).
    @Test("Happy Eyeballs: with every allowed attempt made and failed, the connect fails without waiting for a lookup", arguments: backends)
    func attemptCapEndsWithoutLookup(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let refused = try closedPort()
        let release = LookupRelease()
        defer { release.release() }
        let resolver = ScriptedResolver(v6: [refused], v6Delay: .zero, v4: [listener.address], v4Delay: .seconds(3), release: release)
        var options = HappyEyeballs.Options()
        options.maximumAttempts = 1
        let timers = Timers()
        let began = ContinuousClock.now
        let connect = HappyEyeballs(resolution: Resolution(host: "example.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0, options: options)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        let took = ContinuousClock.now - began
        guard case .failed(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.cause == .refused && connect.attempts.count == 1)
        #expect(took < .seconds(1), "took \(took)")
    }

    /// SwiftNIO HappyEyeballsTest "all fail: the error lists each": when one attempt timed out and a
    /// later one was refused, the time-out named the refused attempt's address. Now the timed-out one's.
    @Test("Happy Eyeballs: a combined time-out names the address that timed out", arguments: backends)
    func combinedTimeoutNamesItsAddress(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let hangingSyscalls = P5HangingSyscalls()
        let hanging = ConnectAttempt(to: try SocketAddress("127.0.0.1:9"), poller: poller, token: 1,
                                     timeout: .milliseconds(100), syscalls: hangingSyscalls)
        let refused = ConnectAttempt(to: try closedPort(), poller: poller, token: 2, timeout: .seconds(2))
        let timers = Timers()
        let connect = HappyEyeballs(attempts: [hanging, refused], poller: poller, timers: timers, timerToken: 0,
                                    attemptDelay: .seconds(5))
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .failed(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.cause == .timedOut && error.address == hanging.address, "\(error)")
        #expect(error.attempts.map(\.cause) == [.timedOut, .refused])
    }
}

extension PeerScenarioTests5 {
    /// SwiftNIO testEventLoopThreadName: the loop's thread carries its name. Before: the process's name.
    @Test("the loop thread is named after the loop (cut to 15 bytes on a character boundary, up to a NUL)")
    func loopThreadName() async throws {
        func threadName(of loop: EventLoop) async throws -> String {
            try await Task(executorPreference: loop) { () -> String in
                let path = "/proc/thread-self/comm"
                let fd = open(path, O_RDONLY)
                guard fd >= 0 else { return "" }
                defer { close(fd) }
                var bytes = [UInt8](repeating: 0, count: 64)
                let n = read(fd, &bytes, bytes.count)
                return String(decoding: bytes[..<max(0, n)], as: UTF8.self).trimmingCharacters(in: "\n")
            }.value
        }
        for (name, expected) in [("io-1", "io-1"), ("readiness-loop-12", "readiness-lo-12"),
                                 ("ααααααααα", "ααααααα"), ("a\u{0}b", "a")] {
            let loop = try EventLoop(name: name, makePoller: { () throws(PollerError) -> any Poller in try Backend.epoll.makePoller() })
            #expect(try await threadName(of: loop) == expected, "\(name)")
            await loop.shutdown()
        }
    }
}

private extension String {
    func trimmingCharacters(in text: String) -> String {
        var out = self
        while let last = out.last, text.contains(last) { out.removeLast() }
        return out
    }
}

extension PeerScenarioTests5 {
    /// A loop whose poller failed ends as a shutdown does: while it closes what it held, it already
    /// says it is shutting down (so `signals()` and the like are refused). Before: `isShuttingDown`
    /// was false in that window (the phase went from running to stopped directly).
    @Test("a loop ending on a failed wait says it is shutting down while it closes what it held", arguments: backends)
    func failedWaitIsShuttingDown(backend: Backend) async throws {
        let failing = FailingWaitPoller.Switch()
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            FailingWaitPoller(try backend.makePoller(), failing: failing)
        }
        let sleeper = Task(executorPreference: loop) { () async -> (LoopError?, Bool) in
            do throws(LoopError) { try await loop.sleep(for: .seconds(30)) } catch let ended {
                // Refused with what ended the loop: the poller's failure (PeerScenarioTests19
                // failureReasonEverywhere; it said .shutdown before).
                var refused = false
                do throws(LoopError) { _ = try loop.signals([.user1]) } catch { refused = error == ended }
                return (ended, loop.isShuttingDown && refused)
            }
            return (nil, false)
        }
        try await loop.sleep(for: .milliseconds(20))
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: loop) {}.value
        let (error, said) = await sleeper.value
        #expect(error != nil && said)
        await loop.shutdown()
    }
}

extension PeerScenarioTests5 {
    /// CPython test_selectors test_above_fd_setsize, on the signal pipe: a loop on select whose
    /// signal pipe lands past FD_SETSIZE. Before: `signals()` succeeded and the iteration ended at
    /// once with nil, as if a signal had come (a server's `for await` then shut down for nothing).
    @Test("signals() on a select loop whose pipe would be past FD_SETSIZE fails with descriptorTooLarge",
          arguments: backends.filter { $0.makesSelectPoller })
    func signalPipeAboveSelectLimit(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        var filler: [CInt] = []
        defer { for fd in filler { close(fd) } }
        while filler.last.map({ $0 < 1100 }) ?? true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { Issue.record("open: \(errno)"); await loop.shutdown(); return }
            filler.append(fd)
        }
        do throws(LoopError) {
            let sequence = try loop.signals([.user1])
            sequence.finish()
            Issue.record("signals() succeeded")
        } catch {
            guard case .poller(.descriptorTooLarge) = error else { Issue.record("\(error)"); await loop.shutdown(); return }
        }
        await loop.shutdown()
    }
}

private extension Backend {
    /// select, or libevent forced to its select method.
    var makesSelectPoller: Bool { "\(self)" == "select" || "\(self)" == "libevent:select" }
}

extension PeerScenarioTests5 {
    /// Option values saturate: a negative buffer size was passed on, and the kernel, reading it
    /// unsigned, set the largest buffer it allows. Now it is the smallest, as 0 is.
    @Test("a negative buffer size saturates to the smallest buffer, not the largest")
    func negativeBufferSize() throws {
        let socket = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { socket.close() }
        try socket.setReceiveBufferSize(0)
        try socket.setSendBufferSize(0)
        let (smallestReceive, smallestSend) = (try socket.receiveBufferSize(), try socket.sendBufferSize())
        try socket.setReceiveBufferSize(-1)
        try socket.setSendBufferSize(Int.min)
        #expect(try socket.receiveBufferSize() == smallestReceive && socket.sendBufferSize() == smallestSend)
        let (a, b) = try socketPair()
        let stream = try StreamSocket(adopting: a)
        defer { stream.close(); close(b) }
        try stream.setReceiveBufferSize(0)
        let smallest = try stream.receiveBufferSize()
        try stream.setReceiveBufferSize(-5)
        #expect(try stream.receiveBufferSize() == smallest)
        var options = DatagramSocket.Options()
        options.receiveBufferSize = -5
        let optioned = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"), options: options)
        defer { optioned.close() }
        #expect(try optioned.receiveBufferSize() == smallestReceive)
    }

    /// A received batch sent back (an echo in place): a truncated slot sends what it holds, and still
    /// tells its truncation and real length after (before: its length was cut to the slot while it
    /// stayed marked truncated, `length - count == 0`). A batch sent from its end on a closed socket is
    /// `closed`, as an empty single send is (before: 0 datagrams sent).
    @Test("a truncated batch slot sent back keeps its length; a batch send on a closed socket is closed")
    func batchEchoKeepsTruncation() throws {
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let client = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { client.close() }
        _ = try client.send([UInt8](repeating: 7, count: 100), to: try #require(server.localAddress))
        let batch = try DatagramBatch(capacity: 4, slotSize: 10)
        var received = IOResult.wouldBlock
        for _ in 0..<100 where received == .wouldBlock {
            received = try server.receive(into: batch)
            if received == .wouldBlock { usleep(1_000) }
        }
        #expect(received == .transferred(1))
        let before = try batch.datagram(0)
        #expect(before.isTruncated && before.length == 100 && before.count == 10)
        #expect(try server.send(batch) == .transferred(1))
        let after = try batch.datagram(0)
        #expect(after == before, "\(after)")
        var reply = [UInt8](repeating: 0, count: 200)
        var echoed: ReceivedDatagram?
        for _ in 0..<100 where echoed == nil {
            echoed = try client.receive(into: &reply).datagram
            if echoed == nil { usleep(1_000) }
        }
        #expect(echoed?.count == 10)
        server.close()
        #expect { _ = try server.send(batch, from: batch.count) } throws: { ($0 as? SocketError)?.kind == .closed }
    }
}

extension PeerScenarioTests5 {
    /// CPython test_selectors (a regular file: epoll's EPERM), tokio AsyncFd on files: Contract rule 9
    /// on the regular files of procfs and sysfs, which have a poll method. Before: the epoll backend
    /// took them (and reported them ready on every wait); every other backend refused them.
    @Test("a procfs regular file is unsupportedDescriptor on every backend (epoll_ctl would take it)", arguments: backends)
    func procfsFileRefused(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        for path in ["/proc/self/mounts", "/proc/sys/kernel/hostname"] {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { Issue.record("open \(path): \(errno)"); continue }
            defer { close(fd) }
            #expect(throws: PollerError.unsupportedDescriptor(fd), "\(path)") {
                try poller.register(fd, token: Token(1), interest: .readable, trigger: .level)
            }
        }
    }
}

extension PeerScenarioTests5 {
    /// A datagram socket shut down for reading (Linux applies SHUT_RD even when it answers ENOTCONN)
    /// polls readable for ever while each receive would block. Before: a waiting receive woke on every
    /// loop iteration until its deadline (a busy loop: tens of thousands of iterations in 300 ms).
    @Test("a receive on a datagram socket shut down for reading does not spin the loop", arguments: backends)
    func datagramReadShutdownDoesNotSpin(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let socket = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                _ = try await socket.withDatagramSocket { shutdown($0.fd, CInt(SHUT_RD)) }
                let before = try await loop.statistics().iterations
                var buffer = [UInt8](repeating: 0, count: 64)
                do {
                    _ = try await socket.receive(into: &buffer, timeout: .milliseconds(300))
                    Issue.record("a datagram arrived")
                } catch {
                    #expect(error as? LoopError == .timedOut)
                }
                let iterations = try await loop.statistics().iterations - before
                #expect(iterations < 200, "\(iterations) loop iterations in 300 ms")
                await socket.close()
            }.value
        }
    }
}

extension PeerScenarioTests5 {
    /// SwiftNIO testTimeOutDuringDNSResolution, Go DialTimeout during the lookup: the synchronous
    /// connect by name had no bound while the name resolved (the attempt timeout starts with an
    /// attempt), so a name server that never answers held the call for its whole resolv.conf
    /// timeouts. Now `timeout:` bounds the whole call (new parameter; a resolver can be injected).
    @Test("Connector.connect(toHost:timeout:) is bounded while the name resolves", arguments: backends)
    func hostConnectBoundedDuringLookup(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let release = LookupRelease()
        defer { release.release() }
        let resolver = ScriptedResolver(v6: [], v6Delay: .seconds(5), v4: [], v4Delay: .seconds(5), release: release)
        let began = ContinuousClock.now
        do {
            _ = try Connector.connect(toHost: "example.test:80", on: poller, timeout: .milliseconds(200), resolver: resolver)
            Issue.record("connected")
        } catch {
            guard case .connect(let connectError) = error, connectError.cause == .timedOut else { Issue.record("\(error)"); return }
        }
        let took = ContinuousClock.now - began
        #expect(took < .seconds(2), "took \(took)")
    }
}

extension PeerScenarioTests5 {
    /// libev's "fd closed and reopened between iterations": a registered number closed, reused by a
    /// new socket, deregistered and registered again before the next wait is watched for the new file.
    @Test("a registered number closed and reused, deregistered and registered again, reports the new file", arguments: backends)
    func reusedNumberRegisteredAgain(backend: Backend) throws {
      for deregisterFirst in [false, true] {   // deregistered while the number is free, or once reused
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        try poller.register(a, token: Token(1), interest: .readable, trigger: .level)
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(10))
        close(a)
        close(b)
        var outcome = "deregistered"
        if deregisterFirst { do { try poller.deregister(a) } catch { outcome = "\(error)" } }
        let (x, y) = try socketPair()
        defer { close(y) }
        var number = x
        if x != a { number = dup2(x, a); close(x) }
        defer { close(number) }
        #expect(number == a)
        if !deregisterFirst { do { try poller.deregister(a) } catch { outcome = "\(error)" } }
        #expect(outcome == "deregistered", "deregister after close: \(outcome)")
        try poller.register(a, token: Token(2), interest: .readable, trigger: .level)
        _ = write(y, "z", 1)
        var seen = false
        for _ in 0..<5 where !seen {
            _ = try poller.wait(into: events, timeout: .milliseconds(100))
            seen = events.contains { $0.token == Token(2) && $0.ready.contains(.readable) }
        }
        #expect(seen, "deregistered first: \(deregisterFirst)")
        try? poller.close()
      }
    }
}

extension PeerScenarioTests5 {
    /// unix(7) BUGS, CPython test_socket's longest Unix paths: a peer bound (by another program) to a
    /// path of all 108 bytes, no NUL, is reported with an address length past sockaddr_un, which
    /// sendto refuses with EINVAL. Before: a reply to the received source failed (invalidArgument or
    /// .other), on the single and the batched paths.
    @Test("a reply reaches a Unix-domain peer bound to a path of all 108 bytes (single and batched)")
    func longestUnixPathPeer() throws {
        let directory = "/tmp/rd-\(getpid())"
        mkdir(directory, 0o700)
        defer { rmdir(directory) }
        let name = directory + "/" + String(repeating: "p", count: 108 - directory.utf8.count - 1)
        #expect(name.utf8.count == 108)
        defer { unlink(name) }
        let raw = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        defer { close(raw) }
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sun.sun_path) { $0.copyBytes(from: Array(name.utf8)) }
        let bound = withUnsafePointer(to: &sun) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0, "bind: \(errno)")
        let serverPath = directory + "/s"
        defer { unlink(serverPath) }
        let server = try DatagramSocket(bind: try SocketAddress(unixPath: serverPath))
        defer { server.close() }
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &target.sun_path) { $0.copyBytes(from: Array(serverPath.utf8)) }
        for batched in [false, true] {
            let sent = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(raw, "ping", 4, 0, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(sent == 4)
            if batched {
                let batch = try DatagramBatch(capacity: 2, slotSize: 64)
                #expect(try server.receive(into: batch) == .transferred(1))
                #expect(try server.send(batch) == .transferred(1))
            } else {
                var buffer = [UInt8](repeating: 0, count: 64)
                let source = try #require(try server.receive(into: &buffer).datagram?.source)
                #expect(try server.send([1, 2], to: source) == .transferred(2))
            }
            var reply = [UInt8](repeating: 0, count: 16)
            #expect(recv(raw, &reply, reply.count, CInt(MSG_DONTWAIT)) > 0, "batched \(batched): no reply")
        }
    }
}

extension PeerScenarioTests5 {
    /// Docs/Connect.md: every parser accepts and refuses the same strings. Before: splitHostPort read
    /// `unix:80` as the host `unix` and port 80, where SocketAddress, resolve and Resolution read the
    /// Unix path `80`; and it refused `unix:/run/a.sock`, which they accept.
    @Test("splitHostPort refuses unix:PATH, which the other parsers read as a Unix-domain path")
    func splitHostPortRefusesUnix() throws {
        for text in ["unix:80", "unix:/run/a.sock"] {
            #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.splitHostPort(text) }
            #expect(try SocketAddress(text).family == .unix)
        }
    }
}

extension PeerScenarioTests5 {
    /// SwiftNIO ByteBufferTest (reserveCapacity never lowers the capacity): a buffer whose storage is
    /// shared with a copy was reallocated at the size asked for. Before: 1 MiB became 16 bytes.
    @Test("reserveCapacity on shared storage never shrinks the buffer")
    func reserveSharedKeepsCapacity() {
        var a = Bytes(capacity: 1 << 20)
        a.append(1)
        let b = a
        let reserved = a.reserveCapacity(16)
        #expect(reserved && a.capacity >= 1 << 20 && Array(a) == [1] && Array(b) == [1])
    }
}

extension PeerScenarioTests5 {
    /// libuv test-pipe-bind-error, Go UnixListener's close: a socket unlinks its own path on close, and
    /// only while the path is still its file. Before: a listener (or datagram socket) whose path had
    /// been removed and bound again by another unlinked the other's live socket file on close.
    @Test("close unlinks the bound path only while it is still the socket's own file (listener, datagram)")
    func closeUnlinksOnlyOwnPath() throws {
        for datagram in [false, true] {
            let path = "/tmp/rd-own-\(getpid())-\(datagram)"
            unlink(path)
            defer { unlink(path) }
            let address = try SocketAddress(unixPath: path)
            let first: () -> Void
            if datagram {
                let socket = try DatagramSocket(bind: address)
                first = { socket.close() }
            } else {
                let listener = try Listener(bind: address)
                first = { listener.close() }
            }
            unlink(path)   // an operator's rm
            let second = try Listener(bind: address)   // another server takes the path
            first()
            #expect(access(path, F_OK) == 0, "datagram \(datagram): the second socket's path was unlinked")
            second.close()
            #expect(access(path, F_OK) != 0, "datagram \(datagram): the second socket did not unlink its own path")
        }
    }
}

extension PeerScenarioTests5 {
    /// Go's DialContext with a cancelled context never dials. Before: a task cancelled before its
    /// connect still made the socket and called connect(2): a live listener accepted a connection that
    /// then ended, a Unix-domain connect (done inside connect(2)) even returned a connected socket, and
    /// a connect by name started a lookup.
    @Test("a connect in a task cancelled already starts nothing: no socket, no SYN, no lookup", arguments: backends)
    func cancelledConnectStartsNothing(backend: Backend) async throws {
        let path = "/tmp/rd-cc-\(getpid())"
        unlink(path)
        defer { unlink(path) }
        try await withLoop(backend) { loop in
            let tcp = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let unix = try await loop.listen(on: try SocketAddress(unixPath: path))
            let resolver = RecordingResolver()
            for form in ["tcp", "unix", "list", "name"] {
                let outcome = await Task { () async -> String in
                    withUnsafeCurrentTask { $0?.cancel() }
                    do throws(LoopError) {
                        let socket: AsyncSocket
                        switch form {
                        case "tcp": socket = try await loop.connect(to: tcp.address, timeout: .seconds(5))
                        case "unix": socket = try await loop.connect(to: unix.address, timeout: .seconds(5))
                        case "list": socket = try await loop.connect(to: [tcp.address, tcp.address], timeout: .seconds(5))
                        default: socket = try await loop.connect(host: "example.test", port: tcp.address.port!,
                                                                  timeout: .seconds(5), resolver: resolver)
                        }
                        await socket.close()
                        return "connected"
                    } catch { return "\(error)" }
                }.value
                #expect(outcome == "\(LoopError.cancelled)", "\(form) on \(backend)")
            }
            for listener in [tcp, unix] {
                do {
                    let accepted = try await listener.accept(timeout: .milliseconds(200))
                    Issue.record("a connection reached \(listener.address) on \(backend)")
                    await accepted.close()
                } catch {
                    #expect(error as? LoopError == .timedOut)
                }
            }
            #expect(resolver.calls.withLock { $0 }.isEmpty, "a lookup started on \(backend)")
            await tcp.close()
            await unix.close()
        }
    }

    /// tokio's cancellation safety (a ready write completes): a vectored write of more buffers than one
    /// sendmsg takes (IOV_MAX), with room for all of them, in a cancelled task. Before: io_uring's
    /// completion driver sent the first 1,024 and failed with .cancelled (the readiness driver sent all).
    @Test("a vectored write of 2,000 buffers that need not wait completes in a cancelled task", arguments: backends)
    func cancelledVectoredWriteCompletes(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (a, b) = try socketPair()
            defer { close(b) }
            let socket = try await loop.adopt(descriptor: a)
            let outcome = await Task(executorPreference: loop) { () async -> String in
                withUnsafeCurrentTask { $0?.cancel() }
                let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 2_000, alignment: 1)
                defer { raw.deallocate() }
                raw.initializeMemory(as: UInt8.self, repeating: 7)
                let whole = UnsafeRawBufferPointer(raw)
                let buffers = (0..<whole.count).map { UnsafeRawBufferPointer(rebasing: whole[$0..<$0 + 1]) }
                do throws(LoopError) {
                    try await socket.write(vectored: buffers)
                    return "written"
                } catch { return "\(error)" }
            }.value
            #expect(outcome == "written", "on \(backend)")
            var received = 0
            var chunk = [UInt8](repeating: 0, count: 4096)
            while received < 2_000, case let n = read(b, &chunk, chunk.count), n > 0 { received += n }
            #expect(received == 2_000)
            await socket.close()
        }
    }

    /// Go's Server.Shutdown(ctx) returns when its context ends. Before: a `serve` cancelled during a
    /// graceful shutdown waited in the drain until the loop finished (here the 60 s grace period, held
    /// by a connection of the loop's own).
    @Test("serve cancelled during a graceful shutdown returns at once", arguments: backends)
    func serveCancelledDuringDrain(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let other = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let client = try await loop.connect(to: other.address, timeout: .seconds(5))
        let held = try await other.accept(timeout: .seconds(5))   // accepted: keeps the drain waiting
        let serving = Task { () async -> Void in try? await listener.serve { _ in } }
        try await Task.sleep(for: .milliseconds(50))
        let draining = Task { await loop.shutdown(gracePeriod: .seconds(60)) }
        try await Task.sleep(for: .milliseconds(100))
        let clock = ContinuousClock()
        let began = clock.now
        serving.cancel()
        await serving.value
        let took = clock.now - began
        #expect(took < .seconds(2), "serve returned after \(took) on \(backend)")
        draining.cancel()   // the second signal: stop now
        await draining.value
        _ = (held, client)
    }
}
