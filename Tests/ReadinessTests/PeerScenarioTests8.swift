import CReadinessConformance
import ExampleSupport
import Glibc
import Readiness
import ReadinessAsync
import ReadinessConformance
import Synchronization
import Testing

let landlockAvailable: Bool = {
    let fd = rd_landlock_ruleset()
    if fd >= 0 { close(fd) }
    return fd >= 0
}()

/// Scenarios from the peers' test suites and the outside readers of stop 36.
@Suite("Peer scenarios 8", .serialized)
struct PeerScenarioTests8 {
    // MARK: Poller (CPython test_selectors, libevent regress test_dup_fd, mio registering)

    /// libevent regress (fd reuse) with an O_PATH file: rule 9 first, on every backend. Before:
    /// epoll's EPOLL_CTL_MOD refused the O_PATH file with EBADF before looking at what it is
    /// (`badDescriptor`), where every other backend (and epoll's own register) said
    /// `unsupportedDescriptor`.
    @Test("reregister of a number now naming an O_PATH regular file or directory is unsupportedDescriptor on every backend",
          arguments: backends)
    func reregisterPathOnlyFile(backend: Backend) throws {
        let pathOnly: CInt = 0o10000000   // O_PATH, which Swift's Glibc does not export
        for (path, flags) in [("/proc/self/mounts", pathOnly), ("/tmp", pathOnly | O_DIRECTORY)] {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            let (a, b) = try socketPair()
            defer { close(b) }
            try poller.register(a, token: 1, interest: .readable)
            close(a)
            let file = open(path, flags | O_CLOEXEC)
            try #require(file >= 0)
            defer { close(file) }
            guard file == a else { continue }   // another thread took the number: nothing to check
            #expect(throws: PollerError.unsupportedDescriptor(file), "\(path)") {
                try poller.reregister(file, token: 2, interest: .readable)
            }
            try poller.deregister(file)
        }
    }

    /// A file with no poll method that is neither a device, a regular file nor a directory: an
    /// anonymous-inode file such as a Landlock ruleset (no privilege needed to make one). epoll_ctl
    /// refuses it (EPERM); poll(2) and select call it always ready. Before: epoll and libevent's
    /// epoll method said `unsupportedDescriptor`; poll, select, libevent's poll and select methods and
    /// io_uring took it and reported it ready on every wait (a busy loop for a level-triggered loop).
    @Test("an anonymous-inode file with no poll method (a Landlock ruleset) is unsupportedDescriptor on every backend",
          .enabled(if: landlockAvailable, "the kernel has no Landlock: no anonymous-inode file without poll to make"),
          arguments: backends)
    func anonymousInodeWithoutPoll(backend: Backend) throws {
        let ruleset = rd_landlock_ruleset()
        try #require(ruleset >= 0)
        defer { close(ruleset) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        #expect(throws: PollerError.unsupportedDescriptor(ruleset)) {
            try poller.register(ruleset, token: 1, interest: .readable)
        }
        // Anonymous-inode files that do poll are still taken (inotify's has no type bits either).
        let watch = inotify_init1(CInt(IN_NONBLOCK | IN_CLOEXEC))
        try #require(watch >= 0)
        defer { close(watch) }
        let path = tempPath("inotify")
        try #require(mkdir(path, 0o700) == 0)
        defer { rmdir(path) }
        try #require(inotify_add_watch(watch, path, UInt32(IN_CREATE)) >= 0)
        try poller.register(watch, token: 2, interest: .readable)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .zero) == 0)
        try #require(mkdir(path + "/x", 0o700) == 0)
        defer { rmdir(path + "/x") }
        #expect(try poller.wait(into: events, timeout: .seconds(1)) == 1)
        try poller.deregister(watch)
    }
}

extension PeerScenarioTests8 {
    /// poll(2) refuses more entries than the soft RLIMIT_NOFILE with EINVAL. A process that lowered its
    /// limit below what it has registered got `system(poll, EINVAL)` from every wait on poll and
    /// libevent's poll method: misuse by the name of rule 11. It is rule 10 now, out of descriptors
    /// (`resourceExhausted`), and the other backends still report every ready registration.
    @Test("registrations above a soft descriptor limit lowered since: every event, or resourceExhausted where the method is poll(2)",
          arguments: backends)
    func registrationsAboveLoweredLimit(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let pairs = try readyRegistrations(32, on: poller)
        defer { for (a, b) in pairs { close(a); close(b) } }
        let events = EventBuffer(capacity: 64)
        let pollsEverything = backend.name == "poll" || backend.name == "libevent:poll"
        try withSoftDescriptorLimit(16) { () throws in
            if pollsEverything {
                #expect(throws: PollerError.resourceExhausted(operation: backend.name == "poll" ? "poll" : "event_base_loop",
                                                              errno: EINVAL)) {
                    try poller.wait(into: events, timeout: .zero)
                }
            } else {
                #expect(try poller.wait(into: events, timeout: .seconds(1)) == 32)
            }
        }
    }
}

extension PeerScenarioTests8 {
    // MARK: Connect (Go dial_test, Docs/Async.md "Deadlines": a first wait is not checked)

    /// A connect whose deadline passed before it began still takes what one look finds. The one-address
    /// form and the async layer did; the list and host forms threw `timedOut` before any wait, even for
    /// a loopback handshake already over or already refused (so a refusal read as a timeout).
    @Test("Connector's list and host forms with a zero or negative timeout look once, as the one-address form does",
          arguments: backends)
    func zeroTimeoutLooksOnce(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        for timeout in [Duration.zero, .seconds(-1)] {
            var outcomes: [String] = []
            for _ in 0..<5 {
                do {
                    let socket = try Connector.connect(to: [listener.address], on: poller, timeout: timeout)
                    close(socket.fd)
                    outcomes.append("connected")
                } catch {
                    outcomes.append("\(error.cause)")
                }
                do {
                    let socket = try Connector.connect(toHost: listener.address.description, on: poller, timeout: timeout)
                    close(socket.fd)
                    outcomes.append("connected")
                } catch {
                    outcomes.append("\(error)")
                }
                while case .accepted(let socket, _) = try listener.accept() { socket.close() }
            }
            // A loopback handshake is over by the first look on every backend (io_uring's poll request
            // is armed by that look's submission): allow one straggler in ten.
            #expect(outcomes.filter { $0 == "connected" }.count >= 9, "\(timeout): \(outcomes)")
            let refused = try closedPortAddress()
            #expect(throws: ConnectError.self) { try Connector.connect(to: [refused], on: poller, timeout: timeout) }
            do {
                _ = try Connector.connect(to: [refused], on: poller, timeout: timeout)
            } catch {
                #expect(error.cause == .refused, "\(timeout): \(error)")
            }
        }
    }
}

/// A loopback port nobody listens on.
func closedPortAddress() throws -> SocketAddress {
    let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
    let address = listener.address
    listener.close()
    return address
}

extension PeerScenarioTests8 {
    // MARK: Real programs (ab -k and a server that drops a connection mid-response)

    /// The load clients kept a response's parsing state across a reconnect: after a response cut off
    /// by a close (head read, 90 body bytes missing), the next connection's whole answer was read as
    /// those body bytes and the client waited for the rest until --timeout (exit 1 after 5 s, 0 or 1
    /// responses). Now the request is sent again on a new connection and every one succeeds.
    @Test("the HTTP load clients reconnect cleanly after a response cut off mid-body",
          arguments: ["readiness-http-load", "readiness-async-http-load"])
    func loadClientAfterCutResponse(example: String) throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let fd = listener.fd
        let full = Array("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!".utf8)
        let cut = Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".utf8)
        // One connection at a time: the first request gets a cut response and a close, the rest full ones.
        let join = spawn {
            var answered = 0
            for _ in 0..<4 {
                guard let connection = acceptWithin10Seconds(fd) else { return }
                defer { close(connection) }
                answerRequests(on: connection) { _ in
                    answered += 1
                    sendAll(answered == 1 ? cut : full, on: connection)
                    return answered != 1
                }
                if answered >= 6 { return }
            }
        }
        let start = ContinuousClock.now
        let client = try Spawned([try builtExecutable(example), "--url", "http://\(listener.address)/",
                                  "--connections", "1", "--requests", "5", "--timeout", "5"])
        let (status, output) = client.finish()
        let elapsed = ContinuousClock.now - start
        shutdown(fd, CInt(SHUT_RDWR))
        join()
        #expect(status == 0, "\(output)")
        #expect(output.contains("requests 5 ok 5 failed 0"), "\(output)")
        #expect(elapsed < .seconds(4), "no wait for --timeout: \(elapsed)")
    }
}

extension PeerScenarioTests8 {
    // MARK: Datagrams (libuv test-udp-connect, test-udp-multicast-interface)

    /// An interface index that names nothing was the kernel's answer, which differed by family: IPv4's
    /// IP_MULTICAST_IF said EADDRNOTAVAIL (`addressUnavailable`), IPv6's ENODEV and both joins ENODEV
    /// (`other`). Now it is `invalidArgument` before any `setsockopt`, as other bad values are.
    @Test("a multicast interface index that names no interface is invalidArgument for both families")
    func multicastInterfaceIndexChecked() throws {
        let v4 = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { v4.close() }
        let v6 = try DatagramSocket(bind: try SocketAddress("[::1]:0"))
        defer { v6.close() }
        for (socket, group) in [(v4, try SocketAddress("239.255.0.1:0")), (v6, try SocketAddress("[ff02::1:3]:0"))] {
            for index: UInt32 in [9_999, .max] {
                for (name, body) in [("interface", { () throws(SocketError) in try socket.setMulticastInterface(index) }),
                                     ("join", { () throws(SocketError) in try socket.joinMulticast(group, interface: index) }),
                                     ("leave", { () throws(SocketError) in try socket.leaveMulticast(group, interface: index) })] {
                    do throws(SocketError) {
                        try body()
                        Issue.record("\(name) \(index) on \(socket.family) taken")
                    } catch {
                        #expect(error.kind == .invalidArgument, "\(name) \(index) on \(socket.family): \(error)")
                    }
                }
            }
            // Index 0 (the kernel's choice) and the loopback interface's index are taken, with no
            // descriptor left too (the check's own question needs one: review, it said "no interface").
            try socket.setMulticastInterface(0)
            let lo = try #require(DatagramSocket.interfaceIndex(named: "lo"))
            if socket.family == .ipv6 {
                try socket.setMulticastInterface(lo)
                try withDescriptorsExhausted { try socket.setMulticastInterface(lo) }
            }
        }
    }
}

extension PeerScenarioTests8 {
    // MARK: The conformance product in a third party's process (libevent test_signal_restore)

    /// The suite runs inside other programs' processes. It installed a SIGUSR1 handler for good, left
    /// SIGUSR2 ignored (whatever the program had) and SIGPIPE ignored; a program's own SIGUSR2
    /// handler was gone after a run. Now each action it needs is borrowed for the step or the run and
    /// the program's is put back.
    @Test("a conformance run puts back the program's own SIGUSR1, SIGUSR2 and SIGPIPE actions")
    func conformanceRestoresSignalActions() throws {
        var saved: [CInt: sigaction] = [:]
        for number in [SIGUSR1, SIGUSR2, SIGPIPE] {
            var action = sigaction()
            sigaction(number, nil, &action)
            saved[number] = action
        }
        defer { for (number, action) in saved { var action = action; sigaction(number, &action, nil) } }
        // The program's own actions: a handler for SIGUSR2, the default for SIGUSR1 and SIGPIPE.
        var mine = sigaction()
        mine.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&mine.sa_mask)
        sigaction(SIGUSR2, &mine, nil)
        signal(SIGUSR1, SIG_DFL)
        signal(SIGPIPE, SIG_DFL)
        func handler(_ number: CInt) -> UnsafeRawPointer? {
            var action = sigaction()
            sigaction(number, nil, &action)
            return unsafeBitCast(action.__sigaction_handler.sa_handler, to: UnsafeRawPointer?.self)
        }
        let before = [SIGUSR1, SIGUSR2, SIGPIPE].map(handler)
        let names: Set<String> = ["eintr/signals", "wake/signal-handler", "wake/signal-handler-reentry"]
        let chosen = Conformance.scenarios.filter { names.contains($0.id) }
        #expect(chosen.count == names.count, "\(chosen.map(\.id))")
        for scenario in chosen {
            let result = Conformance.run(scenario, backend: "epoll") { try Backend.epoll.makePoller() }
            #expect(result.passed, "\(scenario.id): \(result.outcome)")
        }
        #expect([SIGUSR1, SIGUSR2, SIGPIPE].map(handler) == before)
    }
}

extension PeerScenarioTests8 {
    // MARK: Handles dropped without close: the loop owns what it made (as a SwiftNIO event loop)

    /// Docs/Async.md ("Operations"): letting every copy of a handle go does not close it (a reader
    /// asked whether it should, as dropping a tokio `TcpStream` does; the loop owns what it made, as
    /// SwiftNIO's loop owns its channels, and the project's own tests rely on it). It stays open and
    /// counted until `close()` or the loop's shutdown, which closes it: the peer then reads the end.
    @Test("a socket whose handles all went without close() stays the loop's until its shutdown closes it",
          .timeLimit(.minutes(1)), arguments: backends)
    func droppedHandleStaysOwned(backend: Backend) async throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let loop = try EventLoop(backend: backend)
        let base = try await loop.entryCount()
        do { _ = try await loop.connect(to: listener.address, timeout: .seconds(5)) }
        var accepted: StreamSocket?
        for _ in 0..<500 where accepted == nil {
            if case .accepted(let socket, _) = try listener.accept() { accepted = socket } else { usleep(2_000) }
        }
        let server = try #require(accepted)
        defer { server.close() }
        try await loop.sleep(for: .milliseconds(20))
        #expect(try await loop.entryCount() == base + 1)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try server.read(into: &buffer) == .wouldBlock, "closed without close() or shutdown")
        await loop.shutdown()
        var entry = pollfd(fd: server.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 2_000) == 1)
        #expect(try server.read(into: &buffer) == .endOfStream)
    }
}

extension PeerScenarioTests8 {
    // MARK: Listeners (libuv test-tcp-close-accept, async/accept/closed-with-queued-unix)

    /// A Unix client whose connection was queued when the listener closed reads a reset, whether or not
    /// an accept was waiting. On io_uring's completion driver a waiting accept was in the ring: the
    /// kernel took the connection for it, the close then gave the accept up, and the connection was
    /// closed plainly (SO_LINGER does nothing on a Unix socket): its client read an end of stream, as if
    /// a server had accepted it and hung up.
    @Test("closing a Unix listener while an accept waits: a connection not handed out is reset, never ended",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixListenerClosedWithAcceptWaiting(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var closedCount = 0
            for round in 0..<20 {
                let path = tempPath("accept-close-\(round)")
                defer { unlink(path) }
                let address = try SocketAddress(unixPath: path)
                let listener = try await loop.listen(on: address)
                let accepting = Task(executorPreference: loop) { () async -> Result<AsyncSocket, LoopError> in
                    do throws(LoopError) { return .success(try await listener.accept(timeout: .seconds(5))) } catch { return .failure(error) }
                }
                try await loop.sleep(for: .milliseconds(2))   // the accept waits (in the ring on io_uring)
                let client = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
                defer { close(client) }
                try #require(address.withSockaddr { connect(client, $0, $1) } == 0)
                await listener.close()
                var byte: UInt8 = 0
                switch await accepting.value {
                case .success(let server):
                    await server.close()   // handed out, then closed by its owner: an end of stream is right
                case .failure(let error):
                    #expect(error == .closed, "\(error)")
                    closedCount += 1
                    let n = recv(client, &byte, 1, 0)
                    #expect(n == -1 && errno == ECONNRESET, "round \(round): the client of a connection never handed out read \(n) (errno \(errno)), not a reset")
                }
            }
            print("\(backend.name): \(closedCount) of 20 accepts ended .closed")
        }
    }
}

/// Whether io_uring is among the backends under test and setpriv is there to run a server as nobody.
let canRunUringAsNobody: Bool = backends.contains { $0.name == "io_uring" } && access("/usr/bin/setpriv", X_OK) == 0
    && geteuid() == 0   // setpriv --reuid needs CAP_SETUID

extension PeerScenarioTests8 {
    // MARK: io_uring's provided buffers out of locked memory (a user's RLIMIT_MEMLOCK)

    /// A user whose locked-memory limit has room for the ring but not for its provided buffers: the
    /// registration fails with ENOMEM at the first read that waits. Only a refusal (EINVAL, ENOSYS)
    /// sent reads to the readiness path, so every such read failed with `.poller` and the
    /// connection ended (the echo server said "failures 1" and echoed nothing); on epoll the same
    /// server echoed. Now a read takes the readiness path, and the registration is tried again later.
    @Test("io_uring: reads go on by readiness when the provided buffers cannot be registered for want of locked memory",
          .enabled(if: canRunUringAsNobody, "needs io_uring, setpriv (util-linux) and root (to run the server as nobody)"), .timeLimit(.minutes(1)))
    func providedBuffersOutOfLockedMemory() throws {
        let port = try closedPort().port!
        // 84 KiB: the ring's own pages fit, the buffer ring's do not (root is not limited: run as nobody).
        let server = try Spawned(["sh", "-c", "ulimit -l 84 && exec setpriv --reuid=65534 --regid=65534 --clear-groups '"
                                  + (try builtExecutable("readiness-async-echo"))
                                  + "' --backend io_uring --port \(port) --connections 1"], limit: 30)
        var client: CInt = -1
        for _ in 0..<500 where client < 0 {
            do { client = try blockingConnect(try SocketAddress(ip: "127.0.0.1", port: port)) } catch { usleep(10_000) }
        }
        try #require(client >= 0, "the server did not start")
        usleep(300_000)   // the server's first read waits: a receive into a provided buffer
        _ = send(client, "hello", 5, Int32(MSG_NOSIGNAL))
        var entry = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = poll(&entry, 1, 5_000) == 1 ? recv(client, &buffer, buffer.count, 0) : -1
        close(client)
        let (status, output) = server.finish()
        #expect(n == 5 && Array(buffer[..<5]) == Array("hello".utf8), "\(output)")
        #expect(status == 0 && output.contains("echoed-bytes 5 failures 0"), "\(output)")
    }
}

/// A blocking connect of a new TCP socket to `address`: the descriptor, or an error.
func blockingConnect(_ address: SocketAddress) throws -> CInt {
    let fd = socket(address.domain, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else {
        let code = errno
        close(fd)
        throw TestFailure("connect: \(code)")
    }
    return fd
}

extension PeerScenarioTests8 {
    // MARK: A loop whose poller fails (Docs/Async.md: every pending operation fails with .poller)

    /// An accept waiting through a back-off when the poller fails: the shutdown closed an earlier
    /// resource first, whose freed descriptor ended the back-off and resumed the accept as ready; the
    /// accept then looked its listener up again and met `.shutdown`, not the failure.
    @Test("an accept backing off when the loop's poller fails ends with .poller, as every pending operation does",
          .timeLimit(.minutes(1)), arguments: backends)
    func backedOffAcceptGetsPollerFailure(backend: Backend) async throws {
        warmUp(backend)
        let failing = FailingWaitPoller.Switch()
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            FailingWaitPoller(try backend.makePoller(), failing: failing)
        }
        let (a, b) = try socketPair()
        defer { close(b) }
        _ = try await loop.adopt(descriptor: a)   // a resource before the listener in the loop's table
        var options = Listener.Options()
        options.backoff = AcceptBackoff(initial: .seconds(30), maximum: .seconds(30))
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        defer { close(client) }
        let accepting = Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) { _ = try await listener.accept(); return nil } catch { return error }
        }
        try await loop.sleep(for: .milliseconds(20))
        // The connection arrives while no descriptor is free: the accept backs off (30 s).
        withDescriptorsExhausted {
            _ = listener.address.withSockaddr { connect(client, $0, $1) }
            usleep(200_000)
        }
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: loop) {}.value   // wakes the loop, whose next wait fails
        #expect(await accepting.value == LoopError.poller(PollerError.system(operation: "epoll_wait", errno: EIO)))
        await loop.shutdown()
    }
}

extension PeerScenarioTests8 {
    // MARK: Unix paths of the other socket type (libuv UV_EPROTOTYPE, Go's named errno)

    /// A datagram socket aimed at a stream listener's path (or a stream connect at a datagram socket's
    /// path) is the kernel's EPROTOTYPE, which was `.other`: now `.invalidArgument` for sockets and
    /// `invalidAddress` for connects, on every backend.
    @Test("a Unix path held by the other socket type is a typed error: invalidArgument (sockets), invalidAddress (connects)",
          arguments: backends)
    func unixWrongSocketType(backend: Backend) throws {
        let streamPath = tempPath("wrong-type-stream"), datagramPath = tempPath("wrong-type-datagram")
        let listener = try Listener(bind: try SocketAddress(unixPath: streamPath))
        defer { listener.close() }
        let receiver = try DatagramSocket(bind: try SocketAddress(unixPath: datagramPath))
        defer { receiver.close() }
        let streamAddress = try SocketAddress(unixPath: streamPath)
        do throws(SocketError) {
            _ = try DatagramSocket(connectedTo: streamAddress)
            Issue.record("a datagram socket connected to a stream listener's path")
        } catch {
            #expect(error.kind == .invalidArgument && error.errno == EPROTOTYPE, "\(error)")
        }
        let sender = try DatagramSocket(family: .unix)
        defer { sender.close() }
        do throws(SocketError) {
            _ = try sender.send(Array("x".utf8), destination: streamAddress)
            Issue.record("a datagram sent to a stream listener's path")
        } catch {
            #expect(error.kind == .invalidArgument && error.errno == EPROTOTYPE, "\(error)")
        }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let datagramAddress = try SocketAddress(unixPath: datagramPath)
        do throws(ConnectError) {
            let socket = try Connector.connect(to: datagramAddress, on: poller, timeout: .seconds(2))
            close(socket.fd)
            Issue.record("a stream connected to a datagram socket's path")
        } catch {
            #expect(error.cause == .invalidAddress && error.errno == EPROTOTYPE, "\(error)")
        }
    }
}

extension PeerScenarioTests8 {
    // MARK: The example programs under odd clients (a reader ran them against Python, curl and wrk)

    /// The server's RSS in KiB (/proc/PID/status VmRSS), or 0.
    static func residentKiB(_ pid: pid_t) -> Int {
        guard let text = try? read("/proc/\(pid)/status"),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// Host values (RFC 9112 section 3.2: an invalid one is a 400; Go's TestServerValidatesHostHeader),
    /// header values with obs-text (RFC 9110 section 5.5: opaque, 200; Go's TestServerValidatesHeaders),
    /// and bodies of GET requests skipped as they arrive, never held: 100 connections each 1 MiB - 1 byte
    /// into a body held about 100 MiB before, with the answer still after the whole body.
    @Test("readiness-http-server: Host values checked, obs-text taken, a GET's body skipped as it arrives (not held)",
          .timeLimit(.minutes(2)))
    func httpServerHostObsTextAndBodies() async throws {
        let port = try closedPort().port!
        let server = try Child(["/usr/bin/stdbuf", "-oL", try builtExecutable("readiness-http-server"), "--port", "\(port)",
                                "--backend", "epoll", "--loops", "1", "--request-timeout", "20"])
        #expect(server.waitForOutput("listening on 127.0.0.1:\(port)"), "\(server.output)")
        let address = try SocketAddress(ip: "127.0.0.1", port: port)
        let loop = try EventLoop(backend: .epoll)
        for host in ["{", "}", "foo bar", "not\ta valid host", "a/b", "a@b", "x\"y"] {
            let answer = try await HTTPServerExampleTests.exchange(loop, address, Array("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n".utf8))
            #expect(answer.hasPrefix("HTTP/1.1 400 "), "Host: \(host): \(answer.prefix(40))")
        }
        // Go's table: a zone id and a bare IPv6 address pass too (review: they were 400).
        for host in ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:80", "a-b.c_d~e", "[::1%25en0]:80", "::1", "[v1.fe80::a+en1]", ""] {
            let answer = try await HTTPServerExampleTests.exchange(loop, address, Array("GET / HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8))
            #expect(answer.hasPrefix("HTTP/1.1 200 "), "Host: \(host): \(answer.prefix(40))")
        }
        let obsText = Array("GET / HTTP/1.1\r\nHost: x\r\nfoo: foo".utf8) + [0xFF] + Array("foo\r\nConnection: close\r\n\r\n".utf8)
        let latin = try await HTTPServerExampleTests.exchange(loop, address, obsText)
        #expect(latin.hasPrefix("HTTP/1.1 200 "), "\(latin.prefix(40))")
        // A body in pieces, then a pipelined request: both answered, in order, the first only once its
        // body is all there.
        let body = 100_000
        let client = try await loop.connect(to: address, timeout: .seconds(5))
        try await client.write(Array("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \(body)\r\n\r\n".utf8) + [UInt8](repeating: 0x61, count: body - 1))
        await #expect(throws: LoopError.timedOut) { _ = try await client.read(upTo: 100, timeout: .milliseconds(200)) }
        try await client.write(Array("a".utf8) + Array("GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        let received = try await HTTPServerExampleTests.readToEnd(client)
        await client.close()
        let statuses = String(decoding: received, as: UTF8.self).split(separator: "HTTP/1.1 ").map { $0.split(separator: "\r\n").first ?? "" }
        #expect(statuses == ["200 OK", "404 Not Found"], "\(statuses)")
        // Memory: 100 connections each with 1 MiB - 1 byte of body sent.
        let before = Self.residentKiB(server.pid)
        var held: [AsyncSocket] = []
        let chunk = [UInt8](repeating: 0x62, count: (1 << 20) - 1)
        for _ in 0..<(100 / loadDivisor) {
            let socket = try await loop.connect(to: address, timeout: .seconds(5))
            try await socket.write(Array("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \(1 << 20)\r\n\r\n".utf8) + chunk, timeout: .seconds(10))
            held.append(socket)
        }
        try await loop.sleep(for: .milliseconds(300))
        let grown = Self.residentKiB(server.pid) - before
        // Under the sanitizers (a tenth of the load) AddressSanitizer's quarantine keeps freed reads
        // resident: the server's RSS says nothing of what it holds there.
        if loadDivisor == 1 {
            #expect(grown < 30 * 1024, "the server's RSS grew by \(grown) KiB for 100 connections with a 1 MiB body each arriving")
        }
        for socket in held { await socket.close() }
        await loop.shutdown()
        kill(server.pid, SIGTERM)
        #expect(server.wait(seconds: 20) == 0, "\(server.output)")
    }

    /// A server whose standard output is a pipe nobody reads (`| head -1`, a log collector gone): its
    /// first line was a SIGPIPE, and the process died before it served anything (a drain's status
    /// line did the same under `| tee` at Ctrl-C: exit 141, not 0).
    @Test("readiness-http-server with its standard output a pipe nobody reads serves, drains on SIGTERM and exits 0")
    func httpServerBrokenStdout() async throws {
        let port = try closedPort().port!
        let server = try Child([try builtExecutable("readiness-http-server"), "--port", "\(port)", "--backend", "epoll", "--loops", "1"],
                               brokenStdout: true)
        let address = try SocketAddress(ip: "127.0.0.1", port: port)
        let loop = try EventLoop(backend: .epoll)
        var answer = ""
        for _ in 0..<500 where answer.isEmpty {
            do {
                answer = try await HTTPServerExampleTests.exchange(loop, address, Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            } catch {
                var status: CInt = 0
                if waitpid(server.pid, &status, WNOHANG) == server.pid { break }
                usleep(10_000)
            }
        }
        await loop.shutdown()
        #expect(answer.hasPrefix("HTTP/1.1 200 "), "no answer (the server died?): \(server.output)")
        kill(server.pid, SIGTERM)
        #expect(server.wait(seconds: 20) == 0, "\(server.output)")
    }

    /// The load clients skip interim responses (RFC 9110 section 15.2) and treat an HTTP/1.0 answer
    /// without keep-alive as the end of the connection (RFC 9112 section 9.3): a 100 Continue was
    /// read as the answer (then the real one as malformed), and an HTTP/1.0 connection was reused.
    @Test("the load clients' parser skips 1xx responses and closes after an HTTP/1.0 answer")
    func responseParserInterimAndHTTP10() {
        var parser = ResponseParser()
        parser.buffer.append(contentsOf: Array("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8))
        #expect(parser.next() == .complete(status: 200, close: false))
        parser.reset()
        parser.buffer.append(contentsOf: Array("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8))
        #expect(parser.next() == .complete(status: 200, close: true))
        parser.reset()
        parser.buffer.append(contentsOf: Array("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok".utf8))
        #expect(parser.next() == .complete(status: 200, close: false))
    }

    /// One datagram the server cannot answer (a spoofed source port 0: sendmmsg's EINVAL) ended
    /// readiness-udp-echo (exit 1) on every backend; the datagrams after it were never echoed.
    @Test("readiness-udp-echo goes on after a datagram it cannot answer (source port 0)", .enabled(if: geteuid() == 0, "a raw socket needs root"))
    func udpEchoSurvivesUnanswerable() throws {
        let port = try closedPort().port!
        let server = try Child([try builtExecutable("readiness-udp-echo"), "--port", "\(port)", "--backend", "epoll",
                                "--datagrams", "2", "--idle", "5"])
        try #require(udpPortBound(port), "the UDP echo server did not start: \(server.output)")
        // A UDP header by hand: source port 0, destination `port`, length, checksum 0 (none, IPv4).
        let raw = socket(AF_INET, CInt(SOCK_RAW.rawValue), CInt(IPPROTO_UDP))
        try #require(raw >= 0)
        defer { close(raw) }
        let payload = Array("spoofed".utf8)
        let length = 8 + payload.count
        let header: [UInt8] = [0, 0, UInt8(port >> 8), UInt8(port & 0xff), UInt8(length >> 8), UInt8(length & 0xff), 0, 0]
        let packet = header + payload
        let destination = try SocketAddress(ip: "127.0.0.1", port: 0)
        _ = packet.withUnsafeBytes { bytes in destination.withSockaddr { sendto(raw, bytes.baseAddress, bytes.count, 0, $0, $1) } }
        usleep(100_000)
        // A real client is still answered.
        let client = try DatagramSocket(connectedTo: try SocketAddress(ip: "127.0.0.1", port: port))
        defer { client.close() }
        _ = try client.send(Array("hello".utf8))
        var entry = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 16)
        let echoed = poll(&entry, 1, 3_000) == 1 ? (try? client.receive(into: &buffer).datagram?.count) ?? nil : nil
        #expect(echoed == 5, "\(server.output)")
        #expect(server.wait(seconds: 10) == 0, "\(server.output)")
    }
}

extension PeerScenarioTests8 {
    /// readiness-echo on select with more connections than FD_SETSIZE: those it could not register
    /// ended there but were not counted, so `--connections N` waited for connections that would never
    /// come (it exited only after as many more).
    @Test("readiness-echo --connections N ends after N connections even when some could not be registered (select)",
          .enabled(if: backends.contains { $0.name == "select" }), .timeLimit(.minutes(2)))
    func echoCountsUnregisteredConnections() throws {
        let port = try closedPort().port!
        let count = 1_100
        let server = try Child([try builtExecutable("readiness-echo"), "--port", "\(port)", "--backend", "select",
                                "--connections", "\(count)"])
        let address = try SocketAddress(ip: "127.0.0.1", port: port)
        var clients: [CInt] = []
        defer { clients.forEach { close($0) } }
        for _ in 0..<500 where clients.isEmpty {
            if let fd = try? blockingConnect(address) { clients.append(fd) } else { usleep(10_000) }
        }
        try #require(!clients.isEmpty, "the server did not start: \(server.output)")
        while clients.count < count { clients.append(try blockingConnect(address)) }
        usleep(200_000)
        clients.forEach { close($0) }
        clients.removeAll()
        #expect(server.wait(seconds: 30) == 0, "\(server.output)")
        #expect(server.output.contains("connections \(count) "), "\(server.output)")
    }
}
