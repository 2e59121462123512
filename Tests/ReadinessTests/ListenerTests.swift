import Glibc
import Readiness
import Testing

@Suite("Listeners")
struct ListenerTests {
    @Test("a nameless Unix address binds to the abstract name Linux gives it, and `address` says which (mio unix_listener autobind)")
    func namelessUnixListenerAddress() throws {
        var raw = sockaddr_un()
        raw.sun_family = sa_family_t(AF_UNIX)
        let nameless = try #require(withUnsafePointer(to: &raw) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                SocketAddress($0, length: socklen_t(MemoryLayout<sa_family_t>.size))
            }
        })
        #expect(nameless.isNamelessUnix)
        let listener = try Listener(bind: nameless)
        defer { listener.close() }
        let name = try #require(listener.address.abstractUnixName, "address: \(listener.address)")
        #expect(!name.isEmpty)
        let poller = try Backend.epoll.makePoller()
        defer { try? poller.close() }
        let client = StreamSocket(try Connector.connect(to: listener.address, on: poller, timeout: .seconds(2)))
        defer { client.close() }
        #expect(client.peerAddress == listener.address)
    }

    @Test("TCP over IPv4 and IPv6, and Unix paths: accepted streams are non-blocking and close-on-exec",
          arguments: backends)
    func acceptKinds(backend: Backend) throws {
        let poller = try backend.makePoller(), connectPoller = try backend.makePoller()
        defer { try? poller.close(); try? connectPoller.close() }
        var addresses = [try SocketAddress("127.0.0.1:0"), try SocketAddress(unixPath: tempPath("accept"))]
        if (try? Listener(bind: try SocketAddress("[::1]:0"))) != nil { addresses.append(try SocketAddress("[::1]:0")) }
        for address in addresses {
            let listener = try Listener(bind: address)
            try listener.register(on: poller, token: 9)
            let client = StreamSocket(try Connector.connect(to: listener.address, on: connectPoller, timeout: .seconds(2)))
            #expect(try waitFor(.readable, token: 9, on: poller).contains(.readable))
            guard case .accepted(let server, let peer) = try listener.accept() else {
                Issue.record("nothing accepted on \(address)")
                continue
            }
            #expect(peer.family == address.family)
            #expect(fcntl(server.fd, F_GETFL) & O_NONBLOCK != 0)
            #expect(fcntl(server.fd, F_GETFD) & FD_CLOEXEC != 0)
            guard case .wouldBlock = try listener.accept() else { Issue.record("a second accept"); continue }
            _ = client
            listener.close()
            if let path = address.unixPath { #expect(access(path, F_OK) != 0) }  // removed on close
        }
    }

    @Test("a stale Unix socket is replaced; a live one or a non-socket file is left alone")
    func unixStale() throws {
        let path = tempPath("stale")
        let address = try SocketAddress(unixPath: path)
        // Stale: a socket file whose listener is gone (closed without unlinking).
        let stale = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        _ = address.withSockaddr { bind(stale, $0, $1) }
        listen(stale, 1)
        close(stale)
        let listener = try Listener(bind: address)
        // Live: another bind fails, and the path stays.
        #expect(throws: SocketError.self) { _ = try Listener(bind: address) }
        do { _ = try Listener(bind: address) } catch { #expect(error.kind == .addressInUse) }
        #expect(access(path, F_OK) == 0)
        listener.close()
        // Not a socket: never removed.
        let file = open(path, O_CREAT | O_WRONLY, 0o600)
        close(file)
        do { _ = try Listener(bind: address); Issue.record("bound over a regular file") } catch {
            #expect(error.kind == .pathNotSocket)
        }
        #expect(access(path, F_OK) == 0)
        unlink(path)
    }

    @Test("SO_REUSEPORT: two listeners on one port, one per loop thread")
    func reusePort() throws {
        var options = Listener.Options()
        options.reusePort = true
        let first = try Listener(bind: try SocketAddress("127.0.0.1:0"), options: options)
        let second = try Listener(bind: first.address, options: options)
        #expect(second.address == first.address)
        // Without it the second bind fails.
        #expect(throws: SocketError.self) { _ = try Listener(bind: first.address) }
    }

    @Test("out of descriptors: the listener backs off without spinning, then serves every queued client",
          arguments: backends)
    func acceptBackoff(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var options = Listener.Options()
        options.backoff = AcceptBackoff(initial: .milliseconds(20), maximum: .milliseconds(80))
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"), options: options)
        let listenerToken: Token = 1, resumeToken: Token = 2
        try listener.register(on: poller, token: listenerToken)
        let clientCount = 20
        var clients: [StreamSocket] = []
        let connectPoller = try backend.makePoller()
        defer { try? connectPoller.close() }
        for _ in 0..<clientCount {
            clients.append(StreamSocket(try Connector.connect(to: listener.address, on: connectPoller, timeout: .seconds(2))))
        }

        // Exhaust the descriptor table: every number below the limit taken, holes included (a
        // limit set from the count of open descriptors left a table with holes room for the clients).
        let exhaustion = try P4Exhaustion()
        defer { exhaustion.restore() }
        var restored = false

        let timers = Timers()
        let events = EventBuffer(capacity: 16)
        var accepted: [StreamSocket] = []
        var wakeupsWhileExhausted = 0
        let exhaustedUntil = MonotonicClock.nowNanoseconds + 300_000_000
        let giveUp = ContinuousClock.now + .seconds(10)
        while accepted.count < clientCount && ContinuousClock.now < giveUp {
            let now = MonotonicClock.nowNanoseconds
            if !restored && now >= exhaustedUntil {
                exhaustion.restore()
                restored = true
            }
            let limit: Duration? = restored ? nil : .milliseconds(50)
            let count = try poller.wait(into: events, timeout: timers.timeout(limit: limit))
            if !restored { wakeupsWhileExhausted += count }
            for event in events where event.token == listenerToken {
                accepting: while true {
                    switch try listener.accept() {
                    case .accepted(let stream, _): accepted.append(stream)
                    case .wouldBlock: break accepting
                    case .backingOff(let until):
                        #expect(listener.isBackingOff)
                        timers.schedule(at: until, token: resumeToken)
                        break accepting
                    }
                }
            }
            while let token = timers.popDue() {
                if token == resumeToken { try listener.resume() }
            }
        }
        #expect(listener.exhaustionCount >= 2)       // retried, with back-off, while exhausted
        #expect(wakeupsWhileExhausted <= 12)         // 300 ms: at most one wake-up per back-off step
        #expect(accepted.count == clientCount)       // every queued client served afterwards
        _ = clients
    }
}

/// A Unix socket path under $TMPDIR (make test points it into .build), or /tmp where that is too long
/// for sun_path.
func tempPath(_ name: String) -> String {
    let file = "readiness-test-\(getpid())-\(name).sock"
    let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    let path = directory.utf8.count + file.utf8.count < 100 ? directory + "/" + file : "/tmp/" + file
    unlink(path)
    return path
}

