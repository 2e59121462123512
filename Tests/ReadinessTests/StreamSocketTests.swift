import Glibc
import Readiness
import Testing

/// A connected loopback TCP pair: (client, server), both owned StreamSockets.
func tcpPair(on poller: any Poller, listener: Listener? = nil) throws -> (client: StreamSocket, server: StreamSocket) {
    let owned = try listener ?? Listener(bind: try SocketAddress("127.0.0.1:0"))
    let client = StreamSocket(try Connector.connect(to: owned.address, on: poller, timeout: .seconds(2)))
    for _ in 0..<100 {
        switch try owned.accept() {
        case .accepted(let server, _): return (client, server)
        case .wouldBlock: usleep(1000)
        case .backingOff: throw TestFailure("unexpected back-off")
        }
    }
    throw TestFailure("nothing to accept")
}

/// Waits until `socket`'s registration reports `ready` (or a second passes).
func waitFor(_ ready: Ready, token: Token, on poller: any Poller) throws -> Ready {
    let events = EventBuffer(capacity: 8)
    let deadline = ContinuousClock.now + .seconds(2)
    while ContinuousClock.now < deadline {
        try poller.wait(into: events, timeout: .milliseconds(100))
        for event in events where event.token == token && !event.ready.intersection(ready).isEmpty { return event.ready }
    }
    return []
}

@Suite("Stream sockets")
struct StreamSocketTests {
    @Test("read, write, would block, end of stream, through a poller", arguments: backends)
    func roundTrip(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        try server.register(on: poller, token: 1, interest: .readable)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(try server.read(into: &buffer) == .wouldBlock)
        #expect(try client.write(Array("hello".utf8)) == .transferred(5))
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        #expect(try server.read(into: &buffer) == .transferred(5))
        #expect(Array(buffer[0..<5]) == Array("hello".utf8))
        try client.shutdown(.write)
        #expect(try waitFor(.readable, token: 1, on: poller).contains(.readable))
        #expect(try server.read(into: &buffer) == .endOfStream)
        // The other direction still works after a half close.
        #expect(try server.write(Array("bye".utf8)) == .transferred(3))
        awaitReadable(client.fd)
        #expect(try client.read(into: &buffer) == .transferred(3))
    }

    /// The sockets kept the closed poller as theirs: register on another failed with
    /// alreadyRegistered though they were registered nowhere.
    @Test("CPython test_selectors test_close / mio: after its poller is closed, a stream socket, a listener and a datagram socket register on another poller and report there", arguments: backends)
    func registerAfterPollerClosed(backend: Backend) throws {
        let first = try backend.makePoller()
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let (client, server) = try tcpPair(on: first, listener: listener)
        let (a, b) = try DatagramSocket.pair()
        try server.register(on: first, token: 1, interest: .readable)
        try listener.register(on: first, token: 2)
        try a.register(on: first, token: 3, interest: .readable)
        #expect(!first.isClosed)
        #expect(throws: PollerError.alreadyRegistered(server.fd)) { try server.register(on: first, token: 1, interest: .readable) }
        try first.close()
        #expect(first.isClosed)
        let second = try backend.makePoller()
        defer { try? second.close() }
        try server.register(on: second, token: 11, interest: .readable)
        try listener.register(on: second, token: 12)
        try a.register(on: second, token: 13, interest: .readable)
        #expect(throws: PollerError.alreadyRegistered(server.fd)) { try server.register(on: second, token: 11, interest: .readable) }
        #expect(try client.write(Array("x".utf8)) == .transferred(1))
        #expect(try waitFor(.readable, token: 11, on: second).contains(.readable))
        #expect(try b.send(Array("y".utf8)) == .transferred(1))
        #expect(try waitFor(.readable, token: 13, on: second).contains(.readable))
        let other = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(other) }
        #expect(listener.address.withSockaddr { Glibc.connect(other, $0, $1) } == 0)
        #expect(try waitFor(.readable, token: 12, on: second).contains(.readable))
        server.close(); client.close(); listener.close(); a.close(); b.close()
        // A backend that does not say it was closed (`isClosed` false): deregister fails with closed
        // and forgets it, for a listener as for a stream (the listener kept it, and refused the next
        // poller with alreadyRegistered).
        let silent = CountingPoller(wrapping: try backend.makePoller())
        let quiet = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { quiet.close() }
        try quiet.register(on: silent, token: 5)
        try silent.close()
        #expect(throws: PollerError.alreadyRegistered(quiet.fd)) { try quiet.register(on: second, token: 6) }
        #expect(throws: PollerError.closed) { try quiet.deregister() }
        try quiet.register(on: second, token: 6)
    }

    /// An empty write on a closed socket answered `.transferred(0)`, where a write of bytes says closed.
    @Test("CPython send(b'') / Go Write(nil) after Close: an empty write on a closed stream socket fails as closed, as a write of bytes does", arguments: backends)
    func emptyWriteAfterClose(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        #expect(try client.write([UInt8]()) == .transferred(0))   // open: no system call, nothing sent
        client.close()
        server.close()
        let empty: [UInt8] = []
        let attempts: [(String, () throws(SocketError) -> IOResult)] = [
            ("write([])", { () throws(SocketError) in try client.write(empty) }),
            ("write(Bytes())", { () throws(SocketError) in try client.write(Bytes()) }),
            ("write(bytes, from: count)", { () throws(SocketError) in try client.write(Bytes([1, 2]), from: 2) }),
            ("write(vectored: [])", { () throws(SocketError) in try client.write(vectored: [UnsafeRawBufferPointer]()) }),
            ("write([1])", { () throws(SocketError) in try client.write([1]) }),
        ]
        for (name, attempt) in attempts {
            do { _ = try attempt(); Issue.record("\(name) on a closed socket succeeded on \(backend)") } catch {
                #expect(error.kind == .closed, "\(name): \(error)")
            }
        }
    }

    @Test("a vectored write sends every buffer in order", arguments: backends)
    func vectored(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        let parts: [[UInt8]] = [Array("GET / ".utf8), Array("HTTP/1.1\r\n".utf8), Array("\r\n".utf8)]
        let sent = try parts[0].withUnsafeBytes { a in
            try parts[1].withUnsafeBytes { b in
                try parts[2].withUnsafeBytes { c in try client.write(vectored: [a, b, c]) }
            }
        }
        #expect(sent == .transferred(18))
        try server.register(on: poller, token: 2, interest: .readable)
        _ = try waitFor(.readable, token: 2, on: poller)
        var buffer = [UInt8](repeating: 0, count: 64)
        let got = try server.read(into: &buffer)
        #expect(got == .transferred(18))
        #expect(Array(buffer[0..<18]) == parts.flatMap { $0 })
    }

    @Test("Go/tokio offer linger on TCP only (review): SO_LINGER reset or wait on a Unix stream socket is invalidArgument (the kernel ignores it: the peer read end of stream); off is taken")
    func lingerOnUnix() throws {
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let a = try StreamSocket(adopting: fds[0])
        let b = try StreamSocket(adopting: fds[1])
        defer { a.close(); b.close() }
        for linger in [Linger.resetOnClose, .wait(.seconds(1))] {
            #expect(throws: SocketError.self) { try a.setLinger(linger) }
            do { try a.setLinger(linger) } catch { #expect(error.kind == .invalidArgument, "\(error)") }
        }
        try a.setLinger(.off)
        // The other TCP options too (review: EOPNOTSUPP as .other for some, taken silently for others).
        #expect { try a.setNoDelay(true) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        #expect { try a.setKeepAlive(KeepAlive()) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        #expect { try a.setKeepAlive(nil) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        let poller = try Backend.epoll.makePoller()
        defer { try? poller.close() }
        let (tcp, server) = try tcpPair(on: poller)
        defer { tcp.close(); server.close() }
        try tcp.setNoDelay(true)
        try tcp.setKeepAlive(KeepAlive())
        try tcp.setKeepAlive(nil)
        try tcp.setLinger(.resetOnClose)
        try tcp.setLinger(.wait(.seconds(1)))
    }

    @Test("mio/tokio (review): accept on a listener whose number was closed underneath and reused by a datagram socket is closed, not an endless retry of EOPNOTSUPP")
    func acceptOnNumberReusedByDatagramSocket() throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let number = listener.fd
        close(number)
        let datagram = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        try #require(datagram.fd == number, "the number was not reused: the scenario did not happen")
        #expect { _ = try listener.accept() } throws: { ($0 as? SocketError)?.kind == .closed }
        // The listener still holds the number: the datagram socket gives it up, a placeholder takes
        // it, and the listener's close closes that (never another test's descriptor).
        datagram.close()
        let placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if placeholder != number { close(placeholder) }
        listener.close()
    }

    @Test("writing to a reset peer fails with reset, never SIGPIPE", arguments: backends)
    func noSigpipe(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server) = try tcpPair(on: poller)
        try server.setLinger(.resetOnClose)
        server.close()
        usleep(20_000)
        let chunk = [UInt8](repeating: 7, count: 1024)
        var failure: SocketError?
        // The first write may be accepted before the RST is seen; a later one fails with EPIPE/ECONNRESET.
        for _ in 0..<100 {
            do { _ = try client.write(chunk) } catch { failure = error; break }
            usleep(1000)
        }
        #expect(failure?.kind == .reset)
        var buffer = [UInt8](repeating: 0, count: 8)
        // A reset connection reads as an error or end of stream, never a hang.
        let read = Result { () throws(SocketError) in try client.read(into: &buffer) }
        if case .success(let outcome) = read { #expect(outcome == .endOfStream) }
    }

    @Test("close deregisters before closing, exactly once; nothing leaks", arguments: backends)
    func closeOnce(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let before = openDescriptorCount()
        for _ in 0..<50 {
            let (client, server) = try tcpPair(on: poller, listener: listener)
            try client.register(on: poller, token: 3, interest: .readable)
            let fd = client.fd
            client.close()
            client.close()
            #expect(client.isClosed)
            // Deregistered by close: the poller no longer knows the number.
            #expect(throws: PollerError.notRegistered(fd)) { try poller.deregister(fd) }
            _ = server  // released at the end of the iteration: closed by deinit
        }
        #expect(openDescriptorCount() == before)
    }

    @Test("typed options reach the kernel", arguments: [Backend.epoll])
    func options(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, _) = try tcpPair(on: poller)
        func intOption(_ level: CInt, _ name: CInt) -> CInt {
            var value: CInt = -1
            var length = socklen_t(MemoryLayout<CInt>.size)
            getsockopt(client.fd, level, name, &value, &length)
            return value
        }
        try client.setNoDelay(true)
        let tcpNoDelay: CInt = 1  // TCP_NODELAY in netinet/tcp.h, which Glibc does not export
        #expect(intOption(CInt(IPPROTO_TCP), tcpNoDelay) == 1)
        try client.setNoDelay(false)
        #expect(intOption(CInt(IPPROTO_TCP), tcpNoDelay) == 0)
        try client.setKeepAlive(KeepAlive(idle: .seconds(30), interval: .seconds(5), probes: 3))
        #expect(intOption(SOL_SOCKET, SO_KEEPALIVE) == 1)
        try client.setKeepAlive(nil)
        #expect(intOption(SOL_SOCKET, SO_KEEPALIVE) == 0)
        try client.setReceiveBufferSize(64 * 1024)
        #expect(try client.receiveBufferSize() >= 64 * 1024)
        try client.setSendBufferSize(64 * 1024)
        #expect(intOption(SOL_SOCKET, SO_SNDBUF) >= 64 * 1024)
        try client.setLinger(.resetOnClose)
        var linger = Glibc.linger()
        var length = socklen_t(MemoryLayout<Glibc.linger>.size)
        getsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, &length)
        #expect(linger.l_onoff == 1 && linger.l_linger == 0)
        #expect(client.takePendingError() == nil)
        #expect(client.peerAddress != nil && client.localAddress != nil)
    }
}
