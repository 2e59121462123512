import Glibc
import Readiness
import Testing

/// Connects over real loopback sockets on every backend (the single outcomes are conformance scenarios).
@Suite("Connect on sockets")
struct ConnectSocketTests {
    @Test("Happy Eyeballs: a refused address, then a listening one", arguments: backends)
    func fallsBack(backend: Backend) throws {
        let (listener, address) = try tcpListener()
        defer { close(listener) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let socket = try Connector.connect(to: [try closedPort(), address], on: poller, timeout: .seconds(2))
        #expect(socket.peer == address)
        close(socket.fd)
    }

    @Test("every attempt failing lists every attempt", arguments: backends)
    func allFail(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let addresses = [try closedPort(), try closedPort()]
        do {
            _ = try Connector.connect(to: addresses, on: poller, timeout: .seconds(2))
            Issue.record("expected a failure")
        } catch {
            #expect(error.cause == .refused)
            #expect(error.attempts.map(\.address) == addresses)
        }
    }

    @Test("a hanging first attempt is overtaken after the attempt delay, then cancelled and closed", arguments: backends)
    func staggered(backend: Backend) throws {
        // A listener with a full accept queue: connects to it hang.
        let (full, fullAddress, fillers) = try fullTCPListener()
        defer { close(full); for fd in fillers { close(fd) } }
        let (good, goodAddress) = try tcpListener()
        defer { close(good) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        let start = ContinuousClock.now
        let socket = try Connector.connect(to: [fullAddress, goodAddress], on: poller, timeout: .seconds(3), attemptDelay: .milliseconds(50))
        let took = ContinuousClock.now - start
        #expect(socket.peer == goodAddress)
        #expect(took >= .milliseconds(50))
        close(socket.fd)
        #expect(openDescriptorCount() == before)
    }

    @Test("Go DialTimeout (review): the timeout of Connector.connect(to: [addresses]) bounds the whole call, not each staggered attempt; what is left is closed", arguments: backends)
    func listTimeoutBoundsTheCall(backend: Backend) throws {
        // Three listeners with full accept queues: every attempt hangs.
        var fulls: [(CInt, SocketAddress, [CInt])] = []
        defer { for (fd, _, fillers) in fulls { close(fd); for filler in fillers { close(filler) } } }
        for _ in 0..<3 { fulls.append(try fullTCPListener()) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        let start = ContinuousClock.now
        do {
            // Eight addresses (the three listeners again and again), 300 ms apart.
            let addresses = (0..<8).map { fulls[$0 % 3].1 }
            _ = try Connector.connect(to: addresses, on: poller, timeout: .milliseconds(600), attemptDelay: .milliseconds(300))
            Issue.record("connected to a full listener on \(backend)")
        } catch {
            #expect(error.cause == .timedOut)
            #expect(error.address == fulls[0].1, "named by the oldest attempt still running")
        }
        let took = ContinuousClock.now - start
        // Before: the attempts started at 0, 300, ... 2,100 ms, each with 600 ms of its own: about 2.7 s.
        // A second of slack for a loaded machine (a sanitizer run, CI).
        #expect(took >= .milliseconds(590) && took < .milliseconds(1_600), "\(took) on \(backend)")
        #expect(openDescriptorCount() == before)
    }

    @Test("libuv pipe connect (review): a Unix path under a regular file (ENOTDIR) is noSuchPath, as for a datagram connect and a missing path", arguments: backends)
    func unixPathUnderAFile(backend: Backend) throws {
        let file = "/tmp/readiness-enotdir-\(getpid())"
        let fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        close(fd)
        defer { unlink(file) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        for path in [file + "/socket", "/tmp/readiness-missing-\(getpid())/socket"] {
            let address = try SocketAddress(unixPath: path)
            #expect(throws: ConnectError.self) { _ = try Connector.connect(to: address, on: poller, timeout: .seconds(2)) }
            do { _ = try Connector.connect(to: address, on: poller, timeout: .seconds(2)) } catch {
                #expect(error.cause == .noSuchPath, "\(path): \(error)")
            }
        }
        #expect(openDescriptorCount() == before)
    }

    @Test("many connects in flight on one poller, half refused: each outcome right, no descriptor left", arguments: backends)
    func soak(backend: Backend) throws {
        let (listener, good) = try tcpListener(backlog: 512)
        defer { close(listener) }
        let refused = try closedPort()
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listenerToken = Token(1_000_000)
        try poller.register(listener, token: listenerToken, interest: .readable)
        defer { try? poller.deregister(listener) }
        let before = openDescriptorCount()

        let total = 1000, inFlightLimit = 16
        var attempts: [Int: ConnectAttempt] = [:]
        var started = 0, connected = 0, failures: [ConnectError.Cause: Int] = [:]
        let events = EventBuffer(capacity: 64)
        func record(_ index: Int, _ progress: ConnectProgress) {
            switch progress {
            case .inProgress: return
            case .connected(let socket): close(socket.fd); connected += 1
            case .failed(let error): failures[error.cause, default: 0] += 1
            }
            attempts[index] = nil
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while (started < total || !attempts.isEmpty) && ContinuousClock.now < deadline {
            while started < total && attempts.count < inFlightLimit {
                let index = started
                started += 1
                let attempt = ConnectAttempt(to: index % 2 == 0 ? good : refused, poller: poller,
                                             token: Token(UInt64(index)), timeout: .seconds(5))
                attempts[index] = attempt
                record(index, attempt.start())
            }
            try poller.wait(into: events, timeout: .milliseconds(100))
            for event in events {
                if event.token == listenerToken { _ = acceptAll(listener); continue }
                let index = Int(event.token.rawValue)
                if let attempt = attempts[index] { record(index, attempt.handle(event.ready)) }
            }
        }
        _ = acceptAll(listener)
        #expect(connected == total / 2)
        #expect(failures == [.refused: total / 2])
        #expect(openDescriptorCount() == before)
    }

    @Test("rule 1: the connected socket is non-blocking and close-on-exec", arguments: backends)
    func socketFlags(backend: Backend) throws {
        let (listener, address) = try tcpListener()
        defer { close(listener) }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let socket = try Connector.connect(to: address, on: poller, timeout: .seconds(2))
        defer { close(socket.fd) }
        #expect(fcntl(socket.fd, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(socket.fd, F_GETFD) & FD_CLOEXEC != 0)
        // Handed over: no longer registered with the poller.
        #expect(throws: PollerError.notRegistered(socket.fd)) { try poller.deregister(socket.fd) }
    }

    @Test("RFC 8305: families alternate, starting with the first address's")
    func interleave() throws {
        let v4a = try SocketAddress("127.0.0.1:1"), v4b = try SocketAddress("127.0.0.2:1")
        let v6a = try SocketAddress("[::1]:1"), v6b = try SocketAddress("[::2]:1")
        #expect(Connector.interleaveFamilies([v6a, v6b, v4a, v4b]) == [v6a, v4a, v6b, v4b])
        #expect(Connector.interleaveFamilies([v4a, v4b, v6a]) == [v4a, v6a, v4b])
        #expect(Connector.interleaveFamilies([]) == [])
    }
    // The command-line tool's tests are in Tests/ReadinessToolTests.
}
