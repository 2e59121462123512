import Glibc
import Readiness
import Synchronization
import Testing

// Helpers private to this file.

private func p3StreamPair() -> (CInt, CInt) {
    var fds: [CInt] = [-1, -1]
    socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds)
    return (fds[0], fds[1])
}

private func p3Send(_ fd: CInt, _ text: String = "x") {
    var bytes = Array(text.utf8)
    _ = Glibc.write(fd, &bytes, bytes.count)
}

/// A connected loopback TCP pair of `StreamSocket`s, and the listener (close all three).
private func p3TCPPair() throws -> (client: StreamSocket, server: StreamSocket, listener: Listener) {
    let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0, listener.address.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
        if fd >= 0 { close(fd) }
        listener.close()
        throw TestFailure("connect: \(errno)")
    }
    let client = try StreamSocket(adopting: fd)
    for _ in 0..<200 {
        if case .accepted(let server, _) = try listener.accept() { return (client, server, listener) }
        usleep(1_000)
    }
    client.close()
    listener.close()
    throw TestFailure("accept: nothing queued")
}

private func intOption(_ fd: CInt, _ level: CInt, _ name: CInt) -> CInt {
    var value: CInt = -1
    var length = socklen_t(MemoryLayout<CInt>.size)
    guard getsockopt(fd, level, name, &value, &length) == 0 else { return -1 }
    return value
}

private func socketErrorKind(_ body: () throws -> Void) -> SocketError.Kind? {
    do { try body() } catch let error as SocketError { return error.kind } catch { return nil }
    return nil
}

private func loopErrorKind(_ error: LoopError?) -> SocketError.Kind? {
    if case .socket(let socketError) = error { return socketError.kind }
    return nil
}

/// Third round of scenarios from peers' test suites (libuv, tokio, mio, Go net, CPython test_socket /
/// test_selectors / test_asyncio, SwiftNIO), on what the first two rounds did not reach: addresses,
/// socket options and their bad values, bind errors, deadlines reset and already passed, a loop that
/// must not spin on events nobody waits for, signals re-subscribed and on several loops, pipes.
@Suite("Peer scenarios, third round")
struct PeerScenarioTests3 {
    // MARK: Addresses

    @Test("libuv test-getsockname / mio tcp_stream peer_addr after reset: both ends' addresses agree; after the peer's reset peerAddress is nil, no trap", arguments: backends)
    func getsockname(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let (clientLocal, clientPeer) = try await client.withStreamSocket { (s) throws(SocketError) in (s.localAddress, s.peerAddress) }
            let (serverLocal, serverPeer) = try await server.withStreamSocket { (s) throws(SocketError) in (s.localAddress, s.peerAddress) }
            #expect(clientPeer == listener.address)
            #expect(serverLocal == listener.address)
            #expect(clientLocal == serverPeer)
            #expect(clientLocal?.port != 0 && clientLocal?.port != nil)
            #expect(client.peer == listener.address)
            #expect(server.peer == clientLocal)
            // The server resets the connection (SO_LINGER 0, libuv uv_tcp_close_reset).
            try await server.withStreamSocket { (s) throws(SocketError) in try s.setLinger(.resetOnClose) }
            await server.close()
            var readError: LoopError?
            do { _ = try await client.read(upTo: 16, timeout: .seconds(5)) } catch { readError = error as? LoopError }
            #expect(loopErrorKind(readError) == .reset, "\(String(describing: readError)) on \(backend)")
            let afterReset = try await client.withStreamSocket { (s) throws(SocketError) in s.peerAddress }
            #expect(afterReset == nil, "getpeername after a reset: \(String(describing: afterReset))")
            #expect(client.peer == listener.address, "the address the socket connected to is kept")
            await client.close()
            await listener.close()
        }
    }

    // MARK: Bind errors (tokio net_bind_resource, libuv tcp-bind-error, udp-bind)

    @Test("tokio net_bind_resource / libuv tcp-bind-error: binding a bound port again is addressInUse, a foreign address addressUnavailable, TCP and UDP, sync and async; nothing leaks", arguments: backends)
    func bindErrors(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            // A second listener on the same port (SO_REUSEADDR does not allow two listening sockets).
            var listenError: LoopError?
            do { _ = try await loop.listen(on: listener.address) } catch { listenError = error as? LoopError }
            #expect(loopErrorKind(listenError) == .addressInUse, "\(String(describing: listenError))")
            #expect(socketErrorKind { _ = try Listener(bind: listener.address) } == .addressInUse)
            // 192.0.2.1 (TEST-NET-1) is not an address of this host.
            #expect(socketErrorKind { _ = try Listener(bind: try SocketAddress("192.0.2.1:0")) } == .addressUnavailable)
            #expect(socketErrorKind { _ = try DatagramSocket(bind: try SocketAddress("192.0.2.1:0")) } == .addressUnavailable)
            // UDP: a bound port again.
            let udp = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let udpAddress = try #require(udp.localAddress)
            #expect(socketErrorKind { _ = try DatagramSocket(bind: udpAddress) } == .addressInUse)
            var asyncError: LoopError?
            do { _ = try await loop.bindDatagram(to: udpAddress) } catch { asyncError = error as? LoopError }
            #expect(loopErrorKind(asyncError) == .addressInUse, "\(String(describing: asyncError))")
            // The originals still work.
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            let server = try await accepted
            let sender = try DatagramSocket(family: .ipv4)
            defer { sender.close() }
            #expect(try sender.send(Array("u".utf8), destination: udpAddress) == .transferred(1))
            #expect(try await udp.receive(timeout: .seconds(5)).bytes == Bytes("u".utf8))
            await client.close(); await server.close(); await listener.close(); await udp.close()
            #expect(try await loop.entryCount() == 0)
        }
    }

    @Test("CPython test_socket non-blocking accept on an empty listener: wouldBlock at once; a registered listener reports the queued connection", arguments: backends)
    func nonBlockingAcceptEmpty(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let start = ContinuousClock.now
        for _ in 0..<3 {
            guard case .wouldBlock = try listener.accept() else { Issue.record("accept on an empty listener did not say wouldBlock"); return }
        }
        #expect(ContinuousClock.now - start < .seconds(2))
        try listener.register(on: poller, token: 7)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .milliseconds(20)) == 0)
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
        defer { close(fd) }
        _ = listener.address.withSockaddr { Glibc.connect(fd, $0, $1) }
        var reported = false
        for _ in 0..<10 where !reported {
            try poller.wait(into: events, timeout: .seconds(1))
            reported = events.contains { $0.token == 7 && $0.ready.contains(.readable) }
        }
        #expect(reported)
        guard case .accepted(let socket, let peer) = try listener.accept() else { Issue.record("no connection"); return }
        #expect(peer == (try SocketAddress.local(of: fd)))
        socket.close()
        guard case .wouldBlock = try listener.accept() else { Issue.record("a second accept found a connection"); return }
    }

    // MARK: Selectors / registration bookkeeping

    @Test("CPython test_selectors get_key/modify / mio reregister with another token: the same events again, a new token, deregister twice", arguments: backends)
    func reregisterTokens(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, peer) = p3StreamPair()
        defer { close(a); close(peer) }
        try poller.register(a, token: 1, interest: .readable)
        p3Send(peer)
        let events = EventBuffer(capacity: 4)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.map(\.token) == [1])
        // modify() with the same events (CPython test_modify): nothing changes, still reported.
        try poller.reregister(a, token: 1, interest: .readable)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.map(\.token) == [1])
        // Another token (mio registering: reregister with a new token): only the new one is reported.
        try poller.reregister(a, token: 2, interest: .readable)
        for _ in 0..<2 {
            try poller.wait(into: events, timeout: .seconds(1))
            #expect(events.map(\.token) == [2], "\(Array(events)) on \(backend)")
        }
        try poller.deregister(a)
        #expect(try poller.wait(into: events, timeout: .milliseconds(20)) == 0)
        #expect(throws: PollerError.notRegistered(a)) { try poller.deregister(a) }
        #expect(throws: PollerError.notRegistered(a)) { try poller.reregister(a, token: 3, interest: .readable) }
        // Registered again after all that: it works under the new token.
        try poller.register(a, token: 4, interest: .readable)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.map(\.token) == [4])
    }

    @Test("CPython test_selectors get_key/get_map: a socket's registration tells its token, interest and trigger through register, reregister, deregister and close", arguments: backends)
    func registrationBookkeeping(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server, listener) = try p3TCPPair()
        defer { client.close(); server.close(); listener.close() }
        #expect(client.registration == nil)
        try client.register(on: poller, token: 5, interest: .readable)
        #expect(client.registration?.token == 5)
        #expect(client.registration?.interest == .readable)
        #expect(client.registration?.trigger == .level)
        #expect(client.poller != nil)
        #expect(throws: PollerError.alreadyRegistered(client.fd)) { try client.register(on: poller, token: 6, interest: .readable) }
        try client.reregister(token: 6, interest: .both)
        #expect(client.registration?.token == 6)
        #expect(client.registration?.interest == .both)
        // A failing reregister (an empty interest) leaves the registration as it was.
        #expect(throws: PollerError.emptyInterest) { try client.reregister(token: 7, interest: []) }
        #expect(client.registration?.token == 6)
        #expect(client.registration?.interest == .both)
        let events = EventBuffer(capacity: 4)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.contains { $0.token == 6 && $0.ready.contains(.writable) })
        try client.deregister()
        #expect(client.registration == nil)
        #expect(client.poller == nil)
        // A second deregister does nothing (an owned socket's deregister is idempotent, as its close
        // is, and as a listener's is since stop 35); the poller itself says notRegistered.
        try client.deregister()
        #expect(client.registration == nil)
        #expect(throws: PollerError.notRegistered(client.fd)) { try poller.deregister(client.fd) }
        try client.register(on: poller, token: 8, interest: .writable)
        let fd = client.fd
        client.close()
        #expect(client.registration == nil)
        #expect(client.isClosed)
        // close() deregistered first: the poller no longer knows the number.
        #expect(throws: PollerError.self) { try poller.deregister(fd) }
        #expect(try poller.wait(into: events, timeout: .milliseconds(10)) == 0)
    }

    // MARK: Socket options (CPython getsockopt/setsockopt, tokio set_linger/nodelay, libuv tcp-flags)

    @Test("CPython setsockopt/getsockopt round trips / tokio set_linger, set_nodelay / libuv tcp-flags: values read back; extreme values saturate to what the kernel accepts", arguments: backends)
    func socketOptionRoundTrips(backend: Backend) throws {
        let (client, server, listener) = try p3TCPPair()
        defer { client.close(); server.close(); listener.close() }
        let fd = client.fd
        try client.setNoDelay(true)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY) != 0)
        try client.setNoDelay(false)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY) == 0)
        try client.setKeepAlive(KeepAlive(idle: .seconds(30), interval: .seconds(5), probes: 3))
        #expect(intOption(fd, SOL_SOCKET, SO_KEEPALIVE) != 0)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE) == 30)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPINTVL) == 5)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPCNT) == 3)
        // Below one second: one second (never 0, which the kernel refuses).
        try client.setKeepAlive(KeepAlive(idle: .milliseconds(1), interval: .zero, probes: 1))
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE) == 1)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPINTVL) == 1)
        // Huge and out-of-range values saturate ("Option values saturate", Docs/Sockets.md): the
        // kernel's limits are 32,767 s and 127 probes; zero or negative probes are one.
        try client.setKeepAlive(KeepAlive(idle: .seconds(Int64.max), interval: .seconds(1 << 40), probes: Int.max))
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE) == 32_767)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPINTVL) == 32_767)
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPCNT) == 127)
        try client.setKeepAlive(KeepAlive(idle: .seconds(60), interval: .seconds(10), probes: Int.min))
        #expect(intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPCNT) == 1)
        try client.setKeepAlive(nil)
        #expect(intOption(fd, SOL_SOCKET, SO_KEEPALIVE) == 0)
        // Linger.
        func linger() -> (CInt, CInt) {
            var value = Glibc.linger()
            var length = socklen_t(MemoryLayout<Glibc.linger>.size)
            getsockopt(fd, SOL_SOCKET, SO_LINGER, &value, &length)
            return (value.l_onoff, value.l_linger)
        }
        try client.setLinger(.resetOnClose)
        #expect(linger() == (1, 0))
        try client.setLinger(.wait(.seconds(3)))
        #expect(linger() == (1, 3))
        // A wait of zero must not become a reset on close: at least one second.
        try client.setLinger(.wait(.zero))
        #expect(linger() == (1, 1))
        try client.setLinger(.wait(.seconds(-5)))
        #expect(linger() == (1, 1))
        try client.setLinger(.off)
        #expect(linger().0 == 0)
        // Buffer sizes: the kernel doubles what it is given.
        try client.setReceiveBufferSize(16_384)
        #expect(try client.receiveBufferSize() >= 16_384)
        try client.setReceiveBufferSize(Int.max)
        try client.setReceiveBufferSize(Int.min)
        try client.setSendBufferSize(Int.min)
        #expect(try client.receiveBufferSize() > 0)
        // The connection still carries bytes.
        #expect(try client.write(Array("ok".utf8)) == .transferred(2))
        awaitReadable(server.fd)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try server.read(into: &buffer) == .transferred(2))
    }

    @Test("libuv test-udp-options: hop limits 1...255 read back, 0/256/-1/Int.max/Int.min refused typed on IPv4; broadcast and multicast loop toggle; the socket still sends", arguments: backends)
    func udpOptions(backend: Backend) throws {
        let socket = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { socket.close() }
        let fd = socket.fd
        for ttl in [1, 64, 255] {
            try socket.setHopLimit(ttl)
            #expect(intOption(fd, CInt(IPPROTO_IP), IP_TTL) == CInt(ttl))
        }
        for bad in [0, 256, -1, Int.max, Int.min] {
            #expect(socketErrorKind { try socket.setHopLimit(bad) } == .invalidArgument, "ttl \(bad)")
            #expect(intOption(fd, CInt(IPPROTO_IP), IP_TTL) == 255, "a refused value changed nothing")
        }
        for ttl in [0, 1, 255] {
            try socket.setMulticastHopLimit(ttl)
            #expect(intOption(fd, CInt(IPPROTO_IP), IP_MULTICAST_TTL) == CInt(ttl))
        }
        for bad in [-1, 256, Int.max, Int.min] {
            #expect(socketErrorKind { try socket.setMulticastHopLimit(bad) } == .invalidArgument, "multicast ttl \(bad)")
        }
        try socket.setBroadcast(true)
        #expect(intOption(fd, SOL_SOCKET, SO_BROADCAST) != 0)
        try socket.setBroadcast(false)
        #expect(intOption(fd, SOL_SOCKET, SO_BROADCAST) == 0)
        try socket.setMulticastLoop(false)
        #expect(intOption(fd, CInt(IPPROTO_IP), IP_MULTICAST_LOOP) == 0)
        try socket.setMulticastLoop(true)
        #expect(intOption(fd, CInt(IPPROTO_IP), IP_MULTICAST_LOOP) != 0)
        // A Unix datagram socket has no hop limit: typed, not a system call's surprise.
        let (u1, u2) = try DatagramSocket.pair()
        defer { u1.close(); u2.close() }
        #expect(socketErrorKind { try u1.setHopLimit(64) } == .invalidArgument)
        // Still sends to itself.
        let own = try #require(socket.localAddress)
        #expect(try socket.send(Array("ttl".utf8), destination: own) == .transferred(3))
        var buffer = [UInt8](repeating: 0, count: 8)
        var got: ReceivedDatagram?
        for _ in 0..<100 where got == nil {
            got = try socket.receive(into: &buffer).datagram
            if got == nil { usleep(1_000) }
        }
        #expect(got?.count == 3)
        #expect(got?.source == own)
    }

    // MARK: UDP (libuv udp-connect, mio udp_socket, tokio udp peek_from / try_recv)

    @Test("libuv test-udp-connect / mio udp connected vs unconnected: a connected socket hears only its peer; disconnect opens it again and a send without destination is notConnected", arguments: backends)
    func udpConnectFilters(backend: Backend) throws {
        // `a` is bound to a port named explicitly: Linux gives up a port it chose itself at a
        // disconnect (Docs/Sockets.md, "Connected sockets"), and keeps one the program chose.
        let probe = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let port = try #require(probe.localAddress?.port)
        probe.close()
        let a = try DatagramSocket(bind: try SocketAddress(ip: "127.0.0.1", port: port))
        let b = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let c = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { a.close(); b.close(); c.close() }
        let aAddress = try #require(a.localAddress), bAddress = try #require(b.localAddress)
        try a.connect(to: bAddress)
        #expect(a.peerAddress == bAddress)
        #expect(try c.send(Array("from c".utf8), destination: aAddress) == .transferred(6))
        #expect(try b.send(Array("from b".utf8), destination: aAddress) == .transferred(6))
        // Three datagrams from b, in order, whole (mio udp multiple sends).
        for text in ["1", "22", "333"] { _ = try b.send(Array(text.utf8), destination: aAddress) }
        usleep(20_000)
        var buffer = [UInt8](repeating: 0, count: 64)
        var texts: [String] = []
        while case .received(let datagram) = try a.receive(into: &buffer) {
            #expect(datagram.source == bAddress, "a connected socket received from \(String(describing: datagram.source))")
            texts.append(String(decoding: buffer[..<datagram.count], as: UTF8.self))
        }
        #expect(texts == ["from b", "1", "22", "333"])
        #expect(try a.send(Array("to b".utf8)) == .transferred(4))
        try a.disconnect()
        #expect(a.peerAddress == nil)
        #expect(socketErrorKind { try a.disconnect() } == .notConnected)   // libuv: ENOTCONN the second time
        #expect(socketErrorKind { _ = try a.send(Array("nowhere".utf8)) } == .notConnected)
        // A socket bound to a port the program chose keeps it; others are heard again.
        #expect(a.localAddress == aAddress)
        #expect(try c.send(Array("again".utf8), destination: aAddress) == .transferred(5))
        var again: ReceivedDatagram?
        for _ in 0..<100 where again == nil {
            again = try a.receive(into: &buffer).datagram
            if again == nil { usleep(1_000) }
        }
        #expect(again?.source == c.localAddress)
        // Connect again, to c this time.
        try a.connect(to: try #require(c.localAddress))
        #expect(try a.send(Array("hi c".utf8)) == .transferred(4))
    }

    @Test("tokio udp peek_from / try_recv: peek shows the next datagram and its source without taking it, a short peek reports the real length; an empty socket is wouldBlock", arguments: backends)
    func udpPeek(backend: Backend) throws {
        let receiver = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let sender = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { receiver.close(); sender.close() }
        var small = [UInt8](repeating: 0, count: 4)
        #expect(try receiver.peek(into: &small) == .wouldBlock)
        #expect(try receiver.receive(into: &small) == .wouldBlock)
        #expect(!receiver.hasQueuedDatagram())
        let to = try #require(receiver.localAddress)
        _ = try sender.send(Array("hello world".utf8), destination: to)
        _ = try sender.send(Array("second".utf8), destination: to)
        var waited = 0
        while !receiver.hasQueuedDatagram(), waited < 1000 { usleep(1_000); waited += 1 }
        for _ in 0..<3 {
            let peeked = try #require(try receiver.peek(into: &small).datagram)
            #expect(peeked.count == 4 && peeked.length == 11 && peeked.isTruncated)
            #expect(peeked.source == sender.localAddress)
            #expect(small == Array("hell".utf8))
        }
        var big = [UInt8](repeating: 0, count: 64)
        let whole = try #require(try receiver.receive(into: &big).datagram)
        #expect(whole.count == 11 && !whole.isTruncated)
        #expect(Array(big[..<11]) == Array("hello world".utf8))
        let next = try #require(try receiver.peek(into: &big).datagram)
        #expect(Array(big[..<next.count]) == Array("second".utf8))
        #expect(try receiver.receive(into: &big).datagram?.count == 6)
        #expect(try receiver.receive(into: &big) == .wouldBlock)
    }

    @Test("Go TestWriteToTimeout / TestReadFromTimeout / tokio send_to too large: an oversized async datagram is messageTooLarge, a receive times out near its deadline, then the socket works", arguments: backends)
    func asyncDatagramTimeouts(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let a = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let b = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let bAddress = try #require(b.localAddress)
            var sendError: LoopError?
            do { try await a.send([UInt8](repeating: 1, count: 70_000), to: bAddress, timeout: .seconds(1)) } catch { sendError = error as? LoopError }
            #expect(loopErrorKind(sendError) == .messageTooLarge, "\(String(describing: sendError))")
            let start = ContinuousClock.now
            await #expect(throws: LoopError.timedOut) { _ = try await b.receive(timeout: .milliseconds(50)) }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= .milliseconds(50) && elapsed < .seconds(2), "\(elapsed)")
            try await a.send(Array("fits".utf8), to: bAddress, timeout: .seconds(1))
            let (bytes, datagram) = try await b.receive(timeout: .seconds(5))
            #expect(bytes == Bytes("fits".utf8))
            #expect(datagram.source == a.localAddress)
            await a.close(); await b.close()
        }
    }

    // MARK: Deadlines (Go TestDeadlineReset, TestAcceptTimeout with a past deadline)

    @Test("Go TestDeadlineReset: after a read that timed out, or one that beat its deadline, a read without a deadline waits past the old deadline and gets the data", arguments: backends)
    func deadlineReset(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            // 1. A read that timed out; then one with no deadline, data 200 ms later.
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 8, timeout: .milliseconds(30)) }
            let late = Task { try? await loop.sleep(for: .milliseconds(200)); try? await client.write(Array("a".utf8)) }
            #expect(try await server.read(upTo: 8) == Array("a".utf8))
            await late.value
            // 2. A read that beat its 150 ms deadline (its timer is kept, lazily); the next read has no
            //    deadline and waits 400 ms: the old timer fires meanwhile and must not end it.
            try await client.write(Array("b".utf8))
            #expect(try await server.read(upTo: 8, timeout: .milliseconds(150)) == Array("b".utf8))
            let later = Task { try? await loop.sleep(for: .milliseconds(400)); try? await client.write(Array("c".utf8)) }
            #expect(try await server.read(upTo: 8) == Array("c".utf8))
            await later.value
            // 3. The same with a later deadline than the kept timer: it still ends at its own deadline.
            try await client.write(Array("d".utf8))
            #expect(try await server.read(upTo: 8, timeout: .milliseconds(100)) == Array("d".utf8))
            let start = ContinuousClock.now
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 8, timeout: .milliseconds(300)) }
            #expect(ContinuousClock.now - start >= .milliseconds(300))
            // 4. Accept: a timed-out accept, then one without a deadline.
            await #expect(throws: LoopError.timedOut) { _ = try await listener.accept(timeout: .milliseconds(30)) }
            let dialer = Task { () -> AsyncSocket? in
                try? await loop.sleep(for: .milliseconds(150))
                return try? await loop.connect(to: listener.address, timeout: .seconds(5))
            }
            let third = try await listener.accept()
            await third.close()
            await dialer.value?.close()
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("a zero or negative timeout looks once, as asyncio's wait_for and tokio's timeout do (Go's TestAcceptTimeout / TestReadTimeout fail a past deadline even when ready: a known difference): every operation that need not wait succeeds (accept, reads, readable/writable, datagrams)", arguments: backends)
    func pastDeadlineSucceedsWhenReady(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            for timeout: Duration in [.zero, .seconds(-1)] {
                // accept with a connection queued.
                let dialer = try await loop.connect(to: listener.address, timeout: .seconds(5))
                try await loop.sleep(for: .milliseconds(20))
                let accepted = try await listener.accept(timeout: timeout)
                await accepted.close(); await dialer.close()
                // Every read form with data ready.
                try await client.write(Array("abc".utf8))
                try await loop.sleep(for: .milliseconds(20))
                #expect(try await server.readAvailable(maximum: 1, timeout: timeout) == Bytes("a".utf8), "\(timeout)")
                var bytes = Bytes()
                #expect(try await server.read(into: &bytes, maximum: 1, timeout: timeout) == 1)
                #expect(try await server.read(upTo: 1, timeout: timeout) == Array("c".utf8))
                // A caller's descriptors.
                let (p, q) = p3StreamPair()
                p3Send(q)
                try await loop.readable(p, timeout: timeout)
                try await loop.writable(p, timeout: timeout)
                close(p); close(q)
                // Datagrams.
                let d = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                try await d.send(Array("x".utf8), to: d.localAddress, timeout: timeout)
                try await loop.sleep(for: .milliseconds(20))
                #expect(try await d.receive(timeout: timeout).bytes == Bytes("x".utf8))
                await d.close()
            }
            await client.close(); await server.close(); await listener.close()
        }
    }

    // MARK: A loop that must not spin (libuv tcp-unexpected-read)

    @Test("libuv test-tcp-unexpected-read: data nobody reads, a connection nobody accepts, a datagram nobody receives: the loop does not spin", arguments: backends)
    func noSpinOnUnwantedReadiness(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let d = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let dAddress = try #require(d.localAddress)
            // Each has waited once (its registration exists), then is left alone.
            try await client.write(Array("1".utf8))
            _ = try await server.read(upTo: 8, timeout: .seconds(5))
            let sender = try DatagramSocket(family: .ipv4)
            defer { sender.close() }
            _ = try sender.send(Array("1".utf8), destination: dAddress)
            _ = try await d.receive(timeout: .seconds(5))
            // Now: unread bytes, a queued connection, an unread datagram.
            try await client.write(Array("unexpected".utf8))
            let dialer = try await loop.connect(to: listener.address, timeout: .seconds(5))
            _ = try sender.send(Array("2".utf8), destination: dAddress)
            try await loop.sleep(for: .milliseconds(50))
            let before = try await loop.statistics()
            try await loop.sleep(for: .milliseconds(300))
            let after = try await loop.statistics()
            let iterations = after.iterations - before.iterations
            #expect(iterations < 40, "\(iterations) loop iterations in 300 ms with nobody waiting on \(backend)")
            // Everything is still there.
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == Array("unexpected".utf8))
            let queued = try await listener.accept(timeout: .seconds(5))
            #expect(try await d.receive(timeout: .seconds(5)).bytes == Bytes("2".utf8))
            await queued.close(); await dialer.close(); await d.close()
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("libuv test-timer-from-check / tokio coop: a task sleeping 1 ns in a loop does not starve a read or a longer sleep", arguments: backends)
    func shortSleepsDoNotStarve(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let done = Atomic<Bool>(false)
            let spinner = Task(executorPreference: loop) { () -> Int in
                var count = 0
                let start = ContinuousClock.now
                while !done.load(ordering: .relaxed), ContinuousClock.now - start < .seconds(10) {
                    try? await loop.sleep(for: .nanoseconds(1))
                    count += 1
                }
                return count
            }
            let start = ContinuousClock.now
            let writer = Task { try? await loop.sleep(for: .milliseconds(50)); try? await client.write(Array("r".utf8)) }
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("r".utf8))
            try await loop.sleep(for: .milliseconds(30))
            done.store(true, ordering: .relaxed)
            #expect(ContinuousClock.now - start < .seconds(3))
            #expect(await spinner.value > 0)
            await writer.value
            await client.close(); await server.close(); await listener.close()
        }
    }

    // MARK: Resource bookkeeping (libuv test-walk-handles, test-loop-close)

    @Test("libuv test-walk-handles: entryCount counts what the loop holds and returns to zero after reads time out, sleeps and waits are cancelled, connects fail and everything closes", arguments: backends)
    func walkHandles(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            #expect(try await loop.entryCount() == 0)
            let (listener, client, server) = try await connectedPair(loop)
            #expect(try await loop.entryCount() == 3)
            // A read that times out leaves only its socket.
            await #expect(throws: LoopError.timedOut) { _ = try await server.read(upTo: 8, timeout: .milliseconds(10)) }
            await #expect(throws: LoopError.timedOut) { _ = try await listener.accept(timeout: .milliseconds(10)) }
            #expect(try await loop.entryCount() == 3)
            // A sleep is one entry while it waits, none after its cancel.
            // On the loop: its jobs run in order, so the sleep is registered before the count below.
            let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(60)) }
            try await loop.sleep(for: .milliseconds(20))
            #expect(try await loop.entryCount() == 4)
            sleeper.cancel()
            _ = await sleeper.result
            // A readable wait on a caller's descriptor that times out, and one cancelled.
            let (p, q) = p3StreamPair()
            await #expect(throws: LoopError.timedOut) { try await loop.readable(p, timeout: .milliseconds(10)) }
            let waiter = Task { try await loop.readable(p, timeout: .seconds(60)) }
            try await loop.sleep(for: .milliseconds(20))
            waiter.cancel()
            _ = await waiter.result
            close(p); close(q)
            // A refused connect.
            await #expect(throws: LoopError.self) { _ = try await loop.connect(to: try closedPort(), timeout: .seconds(5)) }
            #expect(try await loop.entryCount() == 3)
            await client.close(); await server.close(); await listener.close()
            #expect(try await loop.entryCount() == 0)
        }
    }

    // MARK: Half-closure and shutdown (SwiftNIO EOF with pending writes, mio shutdown both)

    @Test("SwiftNIO half-closure / EOF with pending writes: the peer's shutdown(.write) during our 8 MiB write; the write completes, the peer reads it all, we read end of stream", arguments: backends)
    func eofDuringPendingWrite(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let count = 8 << 20
            let data = Bytes((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) })
            let writer = Task { () async -> LoopError? in
                do { try await client.write(data, timeout: .seconds(30)) } catch { return error as? LoopError }
                return nil
            }
            try await loop.sleep(for: .milliseconds(20))
            try await server.shutdown(.write)   // the peer says it has nothing more to send
            var received = Bytes()
            while received.count < count {
                let n = try await server.read(into: &received, maximum: 1 << 20, timeout: .seconds(30))
                if n == 0 { break }
            }
            #expect(await writer.value == nil)
            #expect(received.count == count)
            #expect(received == data)
            #expect(try await client.read(upTo: 8, timeout: .seconds(5)) == [])
            // Our direction is still open: more bytes arrive after the peer's end of stream.
            try await client.write(Array("tail".utf8), timeout: .seconds(5))
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("tail".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("mio tcp_stream shutdown(Both) / tokio shutdown: after shutdown(.both) our read is end of stream, our write a typed error, the peer reads end of stream; a second shutdown is harmless", arguments: backends)
    func shutdownBoth(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await server.write(Array("before".utf8))
            try await loop.sleep(for: .milliseconds(10))
            try await client.shutdown(.both)
            // Bytes already received may be returned first; then end of stream, again and again.
            var reads: [[UInt8]] = []
            for _ in 0..<4 {
                let chunk = try await client.read(upTo: 64, timeout: .seconds(5))
                reads.append(chunk)
                if chunk.isEmpty { break }
            }
            #expect(reads.last == [], "\(reads) on \(backend)")
            #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == [])
            var writeError: LoopError?
            do { try await client.write(Array("after".utf8), timeout: .seconds(5)) } catch { writeError = error as? LoopError }
            #expect(loopErrorKind(writeError) != nil, "\(String(describing: writeError))")
            #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == [])
            // shutdown again: nothing breaks (ENOTCONN is not a crash; either outcome is typed).
            do { try await client.shutdown(.both) } catch { #expect(loopErrorKind(error as? LoopError) != nil, "\(error)") }
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("Go TestListenerClose / libuv tcp-close-accept: closing a listener with unaccepted connections: their clients see end of stream or a reset, typed, at once", arguments: backends)
    func listenerCloseWithQueued(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            var clients: [AsyncSocket] = []
            for _ in 0..<3 { clients.append(try await loop.connect(to: listener.address, timeout: .seconds(5))) }
            try await loop.sleep(for: .milliseconds(20))
            await listener.close()
            for client in clients {
                let start = ContinuousClock.now
                do {
                    let bytes = try await client.read(upTo: 8, timeout: .seconds(5))
                    #expect(bytes == [], "a client of a closed listener read \(bytes)")
                } catch {
                    #expect(loopErrorKind(error as? LoopError) == .reset, "\(error) on \(backend)")
                }
                #expect(ContinuousClock.now - start < .seconds(2))
                await client.close()
            }
            // The port is free again.
            let again = try await loop.listen(on: listener.address)
            await again.close()
        }
    }

    // MARK: Write ordering (libuv tcp-write-queue-order)

    @Test("libuv test-tcp-write-queue-order: 200 writes back to back into a full buffer arrive in order; a concurrent second writer waits for its turn and never lands in the middle", arguments: backends)
    func writeQueueOrder(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.withStreamSocket { (s) throws(SocketError) in try s.setSendBufferSize(4096) }
            let chunk = 16 * 1024
            let writer = Task(executorPreference: loop) { () async -> LoopError? in
                do {
                    for i in 0..<200 {
                        try await client.write([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: chunk), timeout: .seconds(30))
                    }
                } catch { return error as? LoopError }
                return nil
            }
            try await loop.sleep(for: .milliseconds(30))
            // The first writer waits for room: a second one waits for its turn. It may get one between two of
            // the first's writes (its 8 bytes then lie between two whole chunks) or time out waiting,
            // sending nothing; it never lands inside a chunk.
            let intruder = Array("intruder".utf8)
            var intruded = false
            do throws(LoopError) {
                try await client.write(intruder, timeout: .milliseconds(100))
                intruded = true
            } catch {
                #expect(error == .timedOut)
            }
            var all = Bytes()
            let total = 200 * chunk + (intruded ? intruder.count : 0)
            while all.count < total {
                if try await server.read(into: &all, maximum: 1 << 20, timeout: .seconds(30)) == 0 { break }
            }
            #expect(await writer.value == nil)
            #expect(all.count == total)
            var bytes = Array(all)
            if intruded {
                // Where it landed: at a chunk boundary (memcmp a chunk at a time: byte by byte takes seconds).
                let at = (0...200).map { $0 * chunk }.first { at in
                    at + intruder.count <= bytes.count && Array(bytes[at..<(at + intruder.count)]) == intruder
                }
                #expect(at != nil, "the second write's bytes are not between two whole chunks")
                if let at { bytes.removeSubrange(at..<(at + intruder.count)) }
            }
            var inOrder = bytes.count == 200 * chunk
            if inOrder {
                for write in 0..<200 {
                    let expected = [UInt8](repeating: UInt8(truncatingIfNeeded: write), count: chunk)
                    let same = bytes.withUnsafeBytes { got in
                        expected.withUnsafeBytes { memcmp(got.baseAddress! + write * chunk, $0.baseAddress!, chunk) == 0 }
                    }
                    if !same { inOrder = false; break }
                }
            }
            #expect(inOrder)
            await client.close(); await server.close(); await listener.close()
        }
    }

    // MARK: Signals (tokio signal drop_then_get_a_signal, ctrl_c twice; libuv signal-multiple-loops)

    @Test("tokio signal drop-then-get / ctrl_c twice / libuv signal-multiple-loops: one sequence gets two deliveries in turn, a new one after the first finished gets the next, two loops both get one",
          .timeLimit(.minutes(1)), arguments: backends)
    func signalsRecreatedAndOnTwoLoops(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let other = try EventLoop(backend: backend)
            // A sequence kept open for the whole test, so SIGUSR2's default action (exit) never applies.
            let keeper = try other.signals([.user2])
            let first = try loop.signals([.user2])
            // The second signal only once the first was delivered: two sent while the first is still
            // pending in the kernel (a loaded machine) merge into one, and two would never come.
            var iterator = first.makeAsyncIterator()
            kill(getpid(), SIGUSR2)
            let one = await iterator.next()
            kill(getpid(), SIGUSR2)
            let two = await iterator.next()
            #expect([one, two] == [.user2, .user2])
            first.finish()
            // Dropped and made again on the same loop: the next delivery arrives there.
            let second = try loop.signals([.user2])
            let again = Task { () async -> Signal? in
                var iterator = second.makeAsyncIterator()
                return await iterator.next()
            }
            let onOther = Task { () async -> Signal? in
                var iterator = keeper.makeAsyncIterator()
                return await iterator.next()
            }
            try await loop.sleep(for: .milliseconds(20))
            kill(getpid(), SIGUSR2)
            #expect(await again.value == .user2)
            #expect(await onOther.value == .user2)
            second.finish()
            keeper.finish()
            await other.shutdown()
        }
    }

    // MARK: Pipes (mio unix_pipe, tokio readable/writable readiness)

    @Test("mio unix_pipe / tokio AsyncFd readiness: loop.readable and loop.writable on a pipe's ends: data, a full pipe that drains, the writer's close", arguments: backends)
    func pipeReadiness(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            var fds: [CInt] = [-1, -1]
            #expect(pipe(&fds) == 0)
            let (r, w) = (fds[0], fds[1])
            _ = fcntl(r, F_SETFL, O_NONBLOCK)
            _ = fcntl(w, F_SETFL, O_NONBLOCK)
            await #expect(throws: LoopError.timedOut) { try await loop.readable(r, timeout: .milliseconds(20)) }
            try await loop.writable(w, timeout: .seconds(1))
            p3Send(w, "data")
            try await loop.readable(r, timeout: .seconds(1))
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            #expect(Glibc.read(r, &buffer, buffer.count) == 4)
            // Fill the pipe; a writer's wait then ends when a reader drains it.
            let filler = [UInt8](repeating: 9, count: 1 << 16)
            while Glibc.write(w, filler, filler.count) > 0 {}
            await #expect(throws: LoopError.timedOut) { try await loop.writable(w, timeout: .milliseconds(20)) }
            let drainer = Task { () -> Int in
                try? await loop.sleep(for: .milliseconds(50))
                var total = 0
                var chunk = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let n = Glibc.read(r, &chunk, chunk.count)
                    if n <= 0 { break }
                    total += n
                }
                return total
            }
            try await loop.writable(w, timeout: .seconds(5))
            #expect(await drainer.value > 0)
            // The writer's close makes the reader readable (end of file).
            close(w)
            try await loop.readable(r, timeout: .seconds(1))
            #expect(Glibc.read(r, &buffer, buffer.count) == 0)
            close(r)
            #expect(try await loop.entryCount() == 0)
        }
    }

    // MARK: Second batch: connect errors, owned bytes, batches, shutdown from inside

    @Test("libuv test-tcp-connect-error / Go TestDialError: connects to broadcast, multicast, port 0 and 0.0.0.0 fail typed and at once; an IPv4-mapped IPv6 address reaches an IPv4 listener", arguments: backends)
    func connectErrors(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let closed = try closedPort()
            let port = try #require(closed.port)
            for text in ["255.255.255.255:\(port)", "224.0.0.1:\(port)", "127.0.0.1:0", "0.0.0.0:\(port)"] {
                let start = ContinuousClock.now
                var failure: LoopError?
                do {
                    let socket = try await loop.connect(to: try SocketAddress(text), timeout: .seconds(5))
                    await socket.close()
                } catch { failure = error as? LoopError }
                guard case .connect(let error) = failure else {
                    Issue.record("\(text): \(String(describing: failure)) on \(backend)")
                    continue
                }
                #expect(error.cause != .timedOut, "\(text): \(error)")
                #expect(ContinuousClock.now - start < .seconds(2), "\(text)")
            }
            #expect(try await loop.entryCount() == 0)
            // [::ffff:127.0.0.1]: an IPv6 socket to an IPv4 listener (Go's and tokio's dual-stack dial).
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let mapped = try SocketAddress("[::ffff:127.0.0.1]:\(listener.address.port!)")
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: mapped, timeout: .seconds(5))
            let server = try await accepted
            try await client.write(Array("v4".utf8))
            #expect(try await server.read(upTo: 8, timeout: .seconds(5)) == Array("v4".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("SwiftNIO ByteBuffer readerIndex / tokio BytesMut advance: a Bytes whose front was consumed writes only its readable bytes, sync and async; write(from:) counts from the readable start", arguments: backends)
    func consumedBytesWrite(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            var message = Bytes("skip this|hello".utf8)
            message.removeFirst(10)
            #expect(message == Bytes("hello".utf8))
            try await client.write(message, timeout: .seconds(5))
            var got = Bytes()
            while got.count < 5 { if try await server.read(into: &got, maximum: 64, timeout: .seconds(5)) == 0 { break } }
            #expect(got == Bytes("hello".utf8))
            // A large one, consumed at the front, through a small send buffer (the write waits).
            try await client.withStreamSocket { (s) throws(SocketError) in try s.setSendBufferSize(4096) }
            var large = Bytes((0..<(1 << 20) + 100).map { UInt8(truncatingIfNeeded: $0 % 251) })
            large.removeFirst(100)
            let expected = Bytes((100..<(1 << 20) + 100).map { UInt8(truncatingIfNeeded: $0 % 251) })
            let writer = Task { () async -> LoopError? in
                do { try await client.write(large, timeout: .seconds(30)) } catch { return error as? LoopError }
                return nil
            }
            var received = Bytes()
            while received.count < expected.count {
                if try await server.read(into: &received, maximum: 1 << 16, timeout: .seconds(30)) == 0 { break }
            }
            #expect(await writer.value == nil)
            #expect(received == expected)
            // The sync form: from: counts from the readable start.
            let (a, b, l) = try p3TCPPair()
            defer { a.close(); b.close(); l.close() }
            var text = Bytes("xxabcdef".utf8)
            text.removeFirst(2)
            #expect(try a.write(text, from: 2) == .transferred(4))
            #expect(try a.write(text, from: 6) == .transferred(0))
            #expect(socketErrorKind { _ = try a.write(text, from: 7) } == .invalidArgument)
            #expect(socketErrorKind { _ = try a.write(text, from: -1) } == .invalidArgument)
            awaitReadable(b.fd)
            var into = Bytes()
            #expect(try b.read(into: &into) == .transferred(4))
            #expect(into == Bytes("cdef".utf8))
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("Go TestUDPZeroByteBuffer / CPython recvfrom_into(0): an async receive into an empty array takes one datagram and reports its length; the next receive gets the next", arguments: backends)
    func asyncZeroByteReceive(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let a = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let b = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let to = try #require(b.localAddress)
            try await a.send(Array("dropped".utf8), to: to)
            try await a.send(Array("kept".utf8), to: to)
            var empty: [UInt8] = []
            let first = try await b.receive(into: &empty, timeout: .seconds(5))
            #expect(first.count == 0 && first.length == 7 && first.isTruncated, "\(first)")
            #expect(first.source == a.localAddress)
            var room = [UInt8](repeating: 0, count: 16)
            let second = try await b.receive(into: &room, timeout: .seconds(5))
            #expect(Array(room[..<second.count]) == Array("kept".utf8))
            // A Bytes whose front was consumed sends only its readable bytes (sync and async).
            var consumed = Bytes("headerpayload".utf8)
            consumed.removeFirst(6)
            try await a.send(consumed, to: to)
            #expect(try await b.receive(timeout: .seconds(5)).bytes == Bytes("payload".utf8))
            let sync = try DatagramSocket(family: .ipv4)
            defer { sync.close() }
            #expect(try sync.send(consumed, to: to) == .transferred(7))
            #expect(try await b.receive(timeout: .seconds(5)).bytes == Bytes("payload".utf8))
            // An empty datagram into an empty array: not truncated.
            try await a.send([UInt8](), to: to)
            let third = try await b.receive(into: &empty, timeout: .seconds(5))
            #expect(third.count == 0 && third.length == 0 && !third.isTruncated, "\(third)")
            await a.close(); await b.close()
        }
    }

    @Test("Go/CPython sendmmsg edge cases: an empty batch is sent at once with nothing sent; a batch of capacity 1 receives three queued datagrams one per call", arguments: backends)
    func batchEdges(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let a = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let b = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let to = try #require(b.localAddress)
            let empty = try DatagramBatch(capacity: 4, slotSize: 64)
            let start = ContinuousClock.now
            try await a.send(empty, timeout: .seconds(2))
            #expect(ContinuousClock.now - start < .seconds(1))
            let sync = try DatagramSocket(family: .ipv4)
            defer { sync.close() }
            #expect(try sync.send(empty) == .transferred(0))
            let out = try DatagramBatch(capacity: 4, slotSize: 64)
            for text in ["one", "two", "three"] { try out.append(Array(text.utf8), to: to) }
            try await a.send(out, timeout: .seconds(2))
            let one = try DatagramBatch(capacity: 1, slotSize: 64)
            var texts: [String] = []
            for _ in 0..<3 {
                #expect(try await b.receive(into: one, timeout: .seconds(5)) == 1)
                texts.append(String(decoding: try one.payload(0), as: UTF8.self))
            }
            #expect(texts == ["one", "two", "three"])
            await #expect(throws: LoopError.timedOut) { _ = try await b.receive(into: one, timeout: .milliseconds(20)) }
            await a.close(); await b.close()
        }
    }

    @Test("libuv test-loop-stop / tokio runtime shutdown from a task: await loop.shutdown() from a task on the loop returns; the loop's pending operations end with .shutdown", arguments: backends)
    func shutdownFromInsideTheLoop(backend: Backend) async throws {
        let before = openDescriptorCount()
        let loop = try EventLoop(backend: backend)
        let (listener, client, server) = try await connectedPair(loop)
        let reader = Task { () async -> LoopError? in
            do { _ = try await server.read(upTo: 8, timeout: .seconds(30)) } catch { return error as? LoopError }
            return nil
        }
        try await loop.sleep(for: .milliseconds(20))
        let finished = Atomic<Bool>(false)
        let stopper = Task(executorPreference: loop) {
            #expect(loop.inLoop)
            await loop.shutdown()
            finished.store(true, ordering: .releasing)
        }
        let start = ContinuousClock.now
        while !finished.load(ordering: .acquiring), ContinuousClock.now - start < .seconds(10) { usleep(5_000) }
        let returned = finished.load(ordering: .acquiring)
        #expect(returned, "shutdown from a task on the loop did not return on \(backend)")
        guard returned else { return }
        await stopper.value
        #expect(await reader.value == .shutdown)
        #expect(loop.isShuttingDown)
        await #expect(throws: LoopError.shutdown) { try await loop.sleep(for: .milliseconds(1)) }
        await client.close(); await listener.close()
        await loop.shutdown()
        #expect(await settledDescriptorCount(before) == before)
    }

    @Test("SwiftNIO shutdownGracefully with odd timeouts: a grace period of zero or below ends at once with a connection open; Duration's largest with nothing open returns at once", arguments: backends)
    func gracefulShutdownExtremes(backend: Backend) async throws {
        for grace: Duration in [.zero, .seconds(-1), Duration(secondsComponent: Int64.min, attosecondsComponent: 0)] {
            let loop = try EventLoop(backend: backend)
            let (listener, client, server) = try await connectedPair(loop)
            let reader = Task { () async -> LoopError? in
                do { _ = try await server.read(upTo: 8) } catch { return error as? LoopError }
                return nil
            }
            try await loop.sleep(for: .milliseconds(10))
            let start = ContinuousClock.now
            await loop.shutdown(gracePeriod: grace)
            #expect(ContinuousClock.now - start < .seconds(2), "\(grace)")
            #expect(await reader.value == .shutdown, "\(grace)")
            await client.close(); await listener.close()
        }
        for grace: Duration in [.seconds(Int64.max), Duration(secondsComponent: Int64.max, attosecondsComponent: 999_999_999_999_999_999)] {
            let loop = try EventLoop(backend: backend)
            let start = ContinuousClock.now
            await loop.shutdown(gracePeriod: grace)
            #expect(ContinuousClock.now - start < .seconds(2), "\(grace)")
            #expect(loop.isShuttingDown)
        }
    }

    @Test("tokio read_buf with a huge buffer / Go TestCopyPipeIntoTCP: reads with maximum Int.max return at most 1 MiB each (readAvailable) and every byte arrives", arguments: backends)
    func hugeReadMaximum(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let count = 3 << 20
            let data = Bytes((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 8) })
            let writer = Task { () async -> LoopError? in
                do { try await client.write(data, timeout: .seconds(30)); try await client.shutdown(.write) } catch { return error as? LoopError }
                return nil
            }
            var received = Bytes()
            var largest = 0
            var useAvailable = true
            while true {
                if useAvailable {
                    let chunk = try await server.readAvailable(maximum: Int.max, timeout: .seconds(30))
                    if chunk.isEmpty { break }
                    largest = max(largest, chunk.count)
                    received.append(contentsOf: chunk.span)
                } else {
                    if try await server.read(into: &received, maximum: Int.max, timeout: .seconds(30)) == 0 { break }
                }
                useAvailable.toggle()
            }
            #expect(await writer.value == nil)
            #expect(largest <= 1 << 20)
            #expect(received == data)
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("libuv test-tcp-try-write / tokio try_write: a write into a full buffer is partial then wouldBlock; a read of an empty socket wouldBlock; both recover once the peer drains", arguments: backends)
    func tryWriteTryRead(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (client, server, listener) = try p3TCPPair()
        defer { client.close(); server.close(); listener.close() }
        var small = [UInt8](repeating: 0, count: 16)
        #expect(try server.read(into: &small) == .wouldBlock)
        try client.setSendBufferSize(4096)
        try server.setReceiveBufferSize(4096)
        let block = [UInt8](repeating: 5, count: 1 << 20)
        var sent = 0
        var sawPartial = false
        while true {
            let result = try client.write(block)
            if case .transferred(let n) = result {
                sent += n
                if n < block.count { sawPartial = true }
                continue
            }
            #expect(result == .wouldBlock)
            break
        }
        #expect(sawPartial && sent > 0)
        // Registered for writable now: not reported while full; reported once the peer drains.
        try client.register(on: poller, token: 1, interest: .writable)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .milliseconds(20)) == 0)
        var drained = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while drained < sent {
            if case .transferred(let n) = try server.read(into: &buffer) { drained += n } else { usleep(1_000) }
        }
        #expect(drained == sent)
        try poller.wait(into: events, timeout: .seconds(2))
        #expect(events.contains { $0.token == 1 && $0.ready.contains(.writable) })
        #expect(try client.write(Array("more".utf8)) == .transferred(4))
        var tail = 0
        for _ in 0..<1000 where tail < 4 {
            if case .transferred(let n) = try server.read(into: &buffer) { tail += n } else { usleep(1_000) }
        }
        #expect(tail == 4)
    }

    // MARK: Third batch: interrupted writes, full datagram queues, shared foreign descriptors

    @Test("Go TestWriteTimeout / tokio write cancelled: a write that timed out or was cancelled mid-way leaves a stream that is a prefix of its bytes then the next write's, never a duplicate or a busy socket", arguments: backends)
    func interruptedWritesKeepTheStream(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            try await client.withStreamSocket { (s) throws(SocketError) in try s.setSendBufferSize(4096) }
            try await server.withStreamSocket { (s) throws(SocketError) in try s.setReceiveBufferSize(4096) }
            // Far more than both 4 KiB buffers hold (about 64 KiB on loopback): the first write stops
            // part-way, and the buffers stay full until the reader starts (step 4).
            let count = 1 << 20
            let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 13) }
            // 1. Timed out.
            await #expect(throws: LoopError.timedOut) { try await client.write(data, timeout: .milliseconds(100)) }
            // 2. The next write is not busy: with the buffer still full it times out too.
            await #expect(throws: LoopError.timedOut) { try await client.write(Array("|".utf8), timeout: .milliseconds(50)) }
            // 3. Cancelled mid-way.
            let cancelled = Task { () async -> LoopError? in
                do { try await client.write(data, timeout: .seconds(30)) } catch { return error as? LoopError }
                return nil
            }
            try await loop.sleep(for: .milliseconds(50))
            cancelled.cancel()
            #expect(await cancelled.value == .cancelled)
            // 4. Then a marker, and the end of the stream.
            let marker = Array("<end>".utf8)
            let finisher = Task { () async -> LoopError? in
                do { try await client.write(marker, timeout: .seconds(30)); try await client.shutdown(.write) } catch { return error as? LoopError }
                return nil
            }
            var received: [UInt8] = []
            while true {
                let chunk = try await server.read(upTo: 1 << 16, timeout: .seconds(30))
                if chunk.isEmpty { break }
                received += chunk
            }
            #expect(await finisher.value == nil)
            // received = data[0..<a] + ("|" or nothing) + data[0..<b] + marker: check the shape.
            #expect(received.count >= marker.count && Array(received.suffix(marker.count)) == marker)
            var rest = received.dropLast(marker.count)[...]
            var prefixA = 0
            while prefixA < rest.count, prefixA < count, rest[rest.startIndex + prefixA] == data[prefixA] { prefixA += 1 }
            // The first write's prefix ends where the second write (the "|" byte, if sent) or the third
            // one (data again from its start) begins.
            rest = rest.dropFirst(prefixA)
            if rest.first == UInt8(ascii: "|") { rest = rest.dropFirst() }
            let third = Array(rest)
            let thirdMatches = third.count <= count && third == Array(data[0..<third.count])
            #expect(thirdMatches, "received \(received.count) bytes: first prefix \(prefixA), then \(third.count) bytes that are not a prefix of the data on \(backend)")
            #expect(prefixA > 0)
            await client.close(); await server.close(); await listener.close()
        }
    }

    @Test("tokio uds_datagram send on a full queue / libuv udp-try-send: an async send to a Unix datagram peer whose queue is full waits, and completes once the peer drains", arguments: backends)
    func unixDatagramFullQueue(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (one, two) = try DatagramSocket.pair()
            let twoFD = two.release()
            defer { close(twoFD) }
            let sender = try await loop.adoptDatagram(descriptor: one.release())
            // Fill the peer's queue.
            let payload = [UInt8](repeating: 3, count: 512)
            var queued = 0
            while true {
                let outcome = try await sender.withDatagramSocket { (s) throws(SocketError) in try s.send(payload) }
                guard case .transferred = outcome else { break }
                queued += 1
                if queued > 100_000 { break }
            }
            #expect(queued > 0 && queued <= 100_000)
            await #expect(throws: LoopError.timedOut) { try await sender.send(payload, timeout: .milliseconds(30)) }
            let total = queued, size = payload.count
            let drainer = Task { () -> Int in
                try? await loop.sleep(for: .milliseconds(50))
                var buffer = [UInt8](repeating: 0, count: 1024)
                var drained = 0
                // Exactly the datagrams queued: "last" may be sent as soon as room frees.
                while drained < total, Glibc.recv(twoFD, &buffer, buffer.count, CInt(MSG_DONTWAIT)) == size { drained += 1 }
                return drained
            }
            try await sender.send(Array("last".utf8), timeout: .seconds(5))
            #expect(await drainer.value == queued)
            var buffer = [UInt8](repeating: 0, count: 16)
            var got = -1
            for _ in 0..<200 where got < 0 {
                got = Glibc.recv(twoFD, &buffer, buffer.count, CInt(MSG_DONTWAIT))
                if got < 0 { usleep(1_000) }
            }
            #expect(got == 4)
            await sender.close()
        }
    }

    /// An unconnected Unix datagram socket sending to a bound receiver whose queue is full: send(2)
    /// says EAGAIN, but poll says writable (the sender's own buffer has room; the kernel checks the
    /// receiver's queue in poll only for a connected sender, and wakes no unconnected one when the
    /// queue drains). A send that waited for writability woke at once, failed again, and waited
    /// again: the loop thread spun at full speed until the deadline.
    @Test("tokio uds_datagram send_to a full receiver / CPython test_socket: an unconnected Unix datagram send to a receiver whose queue is full waits without spinning the loop, and completes once the receiver drains", arguments: backends)
    func unconnectedUnixDatagramFullReceiver(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let path = tempPath("full-receiver-\(String(backend.name.map { $0 == ":" ? "-" : $0 }))")
            defer { unlink(path) }
            let target = try SocketAddress(unixPath: path)
            let receiver = try DatagramSocket(bind: target)
            defer { receiver.close() }
            let sender = try await loop.adoptDatagram(descriptor: try DatagramSocket(family: .unix).release())
            let payload = [UInt8](repeating: 5, count: 64)
            var queued = 0
            while queued <= 100_000 {
                let outcome = try await sender.withDatagramSocket { (s) throws(SocketError) in try s.send(payload, destination: target) }
                guard case .transferred = outcome else { break }
                queued += 1
            }
            #expect(queued > 0 && queued <= 100_000)
            let before = try await loop.statistics()
            await #expect(throws: LoopError.timedOut) { try await sender.send(payload, to: target, timeout: .milliseconds(300)) }
            let after = try await loop.statistics()
            let iterations = after.iterations - before.iterations
            #expect(iterations < 60, "\(iterations) loop iterations in a 300 ms send on \(backend)")
            // The receiver takes one: the waiting send goes out soon after, though nothing wakes it.
            let receiverFD = receiver.fd
            let drainer = Task { () -> Bool in
                try? await loop.sleep(for: .milliseconds(50))
                var buffer = [UInt8](repeating: 0, count: 128)
                return Glibc.recv(receiverFD, &buffer, buffer.count, CInt(MSG_DONTWAIT)) == payload.count
            }
            let start = ContinuousClock.now
            try await sender.send(Array("last".utf8), to: target, timeout: .seconds(5))
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(await drainer.value)
            await sender.close()
        }
    }

    /// A UDP socket with IP_RECVERR (libuv's UV_UDP_LINUX_RECVERR) keeps an ICMP error in its error
    /// queue, which a plain receive never empties: poll reports an error condition for ever, so a
    /// waiting receive is woken every iteration and finds nothing. Before, its deadline never won
    /// (each time its timer fired the receive was between a wake and its next wait) and the receive
    /// waited for ever; the loop spun meanwhile.
    @Test("libuv udp recverr / Go TestUDPConnSpecificMethods: a receive on a UDP socket whose error queue holds an ICMP error (IP_RECVERR) ends at its deadline without spinning the loop, and still gets the next datagram", arguments: backends)
    func receiveWithQueuedICMPError(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let d = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
            let address = try #require(d.localAddress)
            try await d.withDatagramSocket { (s) throws(SocketError) in
                var on: CInt = 1
                guard setsockopt(s.fd, CInt(IPPROTO_IP), IP_RECVERR, &on, socklen_t(MemoryLayout<CInt>.size)) == 0 else {
                    throw SocketError(errno: errno, operation: "setsockopt(IP_RECVERR)")
                }
            }
            // A port nobody listens on: the kernel answers port unreachable, queued on d.
            let probe = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
            let closed = try #require(probe.localAddress)
            probe.close()
            try await d.send(Array("ping".utf8), to: closed, timeout: .seconds(1))
            try await loop.sleep(for: .milliseconds(20))
            // The first receive may report the refusal (the socket's pending error); then none.
            _ = try? await d.receive(timeout: .milliseconds(50))
            // The error is still queued (else the rest tests nothing: an ICMP rate limit, a port
            // reused meanwhile).
            let queued = try await d.withDatagramSocket { (s) throws(SocketError) -> Bool in
                var entry = pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0)
                return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLERR) != 0 && entry.revents & Int16(POLLIN) == 0
            }
            #expect(queued, "no ICMP error left in the error queue on \(backend)")
            let before = try await loop.statistics()
            let start = ContinuousClock.now
            await #expect(throws: LoopError.timedOut) { _ = try await d.receive(timeout: .milliseconds(300)) }
            #expect(ContinuousClock.now - start < .seconds(2))
            let after = try await loop.statistics()
            let iterations = after.iterations - before.iterations
            #expect(iterations < 60, "\(iterations) loop iterations in a 300 ms receive on \(backend)")
            let sender = try DatagramSocket(family: .ipv4)
            defer { sender.close() }
            let senderFD = sender.fd
            let late = Task { () -> Bool in
                try? await loop.sleep(for: .milliseconds(30))
                let bytes = Array("late".utf8)
                return address.withSockaddr { Glibc.sendto(senderFD, bytes, bytes.count, 0, $0, $1) } == 4
            }
            let got = try await d.receive(timeout: .seconds(2))
            #expect(got.bytes == Bytes("late".utf8))
            #expect(await late.value)
            await d.close()
        }
    }

    /// getsockname of a Unix socket without a name reports the family alone (two bytes); it was
    /// handed out as the address "unix:", which nobody can send to, while a datagram from the same
    /// socket has no source (nil).
    @Test("CPython testUnbound / Go TestUnixgramAutobind: a nameless Unix socket (unbound, a socketpair's end, a client that did not bind) has no local or peer address: nil, as the source of its datagrams is", arguments: backends)
    func namelessUnixAddressesAreNil(backend: Backend) async throws {
        let (a, b) = try DatagramSocket.pair()
        #expect(a.localAddress == nil && a.peerAddress == nil && b.localAddress == nil)
        a.close(); b.close()
        let unbound = try DatagramSocket(family: .unix)
        #expect(unbound.localAddress == nil)
        unbound.close()
        // The synchronous accept's peer is not optional: mio's unnamed address, which says so.
        let syncPath = tempPath("nameless-sync-\(String(backend.name.map { $0 == ":" ? "-" : $0 }))")
        let syncAddress = try SocketAddress(unixPath: syncPath)
        let syncListener = try Listener(bind: syncAddress)
        let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(syncAddress.withSockaddr { Glibc.connect(raw, $0, $1) } == 0)
        if case .accepted(let accepted, let peer) = try syncListener.accept() {
            #expect(peer.isNamelessUnix && peer.unixPath == nil && peer.abstractUnixName == nil)
            accepted.close()
        } else {
            Issue.record("the connected client was not accepted")
        }
        #expect(!syncAddress.isNamelessUnix && syncAddress.unixPath == syncPath)
        close(raw)
        syncListener.close()
        try await withLoop(backend) { loop in
            let path = tempPath("nameless-\(String(backend.name.map { $0 == ":" ? "-" : $0 }))")
            defer { unlink(path) }
            let listener = try await loop.listen(on: try SocketAddress(unixPath: path))
            async let accepted = listener.accept(timeout: .seconds(5))
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            let server = try await accepted
            #expect(server.peer == nil, "\(String(describing: server.peer)) on \(backend)")
            #expect(client.peer == listener.address)
            #expect(try await client.withStreamSocket { (s) throws(SocketError) in s.localAddress } == nil)
            #expect(try await server.withStreamSocket { (s) throws(SocketError) in s.peerAddress } == nil)
            let receiverPath = path + "d"
            defer { unlink(receiverPath) }
            let receiver = try await loop.bindDatagram(to: try SocketAddress(unixPath: receiverPath))
            let sender = try await loop.adoptDatagram(descriptor: try DatagramSocket(family: .unix).release())
            #expect(sender.localAddress == nil)
            try await sender.send(Array("x".utf8), to: receiver.localAddress, timeout: .seconds(1))
            #expect(try await receiver.receive(timeout: .seconds(5)).datagram.source == nil)
            await sender.close(); await receiver.close()
            await client.close(); await server.close(); await listener.close()
        }
    }

    /// The receive's default size was the IPv4 maximum (65,507): the largest IPv6 datagram (65,527
    /// bytes) came back truncated by 20 bytes.
    @Test("tokio udp / Go TestUDPServer: the largest IPv6 UDP datagram (65,527 bytes) is received whole by a receive with its default size, sync and async; a batch slot holds it", arguments: backends)
    func largestIPv6Datagram(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            guard let receiver = try? DatagramSocket(bind: try SocketAddress(ip: "::1", port: 0)) else {
                try Test.cancel("IPv6 loopback is not available here")
            }
            let address = try #require(receiver.localAddress)
            let sender = try DatagramSocket(family: .ipv6)
            defer { sender.close() }
            let payload = (0..<65_527).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            #expect(try sender.send(payload, destination: address) == .transferred(payload.count))
            var entry = pollfd(fd: receiver.fd, events: Int16(POLLIN), revents: 0)
            #expect(poll(&entry, 1, 2_000) == 1)
            var bytes = Bytes()
            let result = try receiver.receive(into: &bytes)
            guard case .received(let datagram) = result else { Issue.record("\(result)"); receiver.close(); return }
            #expect(!datagram.isTruncated && datagram.count == payload.count && Array(bytes) == payload)
            #expect(try DatagramBatch(capacity: 2, slotSize: payload.count).capacity == 2)
            let d = try await loop.adoptDatagram(descriptor: receiver.release())
            #expect(try sender.send(payload, destination: address) == .transferred(payload.count))
            let (got, received) = try await d.receive(timeout: .seconds(5))
            #expect(!received.isTruncated && Array(got) == payload, "\(received.count) bytes, truncated \(received.isTruncated) on \(backend)")
            await d.close()
        }
    }

    @Test("tokio AsyncFd readable and writable at once: one task waits readable and another writable on one caller descriptor; a second reader waits for its turn (here until its deadline); each ends on its own event", arguments: backends)
    func foreignReadAndWriteWaiters(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (fd, peer) = p3StreamPair()
            defer { close(fd); close(peer) }
            // Fill fd's send direction so that writable has to wait too.
            let block = [UInt8](repeating: 1, count: 1 << 16)
            while Glibc.send(fd, block, block.count, CInt(MSG_DONTWAIT)) > 0 {}
            let reader = Task(executorPreference: loop) { () async -> LoopError? in
                do { try await loop.readable(fd, timeout: .seconds(10)) } catch { return error as? LoopError }
                return nil
            }
            let writer = Task(executorPreference: loop) { () async -> LoopError? in
                do { try await loop.writable(fd, timeout: .seconds(10)) } catch { return error as? LoopError }
                return nil
            }
            try await loop.sleep(for: .milliseconds(30))
            await #expect(throws: LoopError.timedOut) { try await loop.readable(fd, timeout: .milliseconds(50)) }
            #expect(try await loop.entryCount() == 1)
            // Readable first: the writer keeps waiting.
            p3Send(peer, "r")
            #expect(await reader.value == nil)
            try await loop.sleep(for: .milliseconds(30))
            // Then the peer drains: the writer ends.
            var sink = [UInt8](repeating: 0, count: 1 << 16)
            while Glibc.recv(peer, &sink, sink.count, CInt(MSG_DONTWAIT)) > 0 {}
            #expect(await writer.value == nil)
            #expect(try await loop.entryCount() == 0)
            // A reader again, after both ended: a timed-out wait, then one that sees the byte still there.
            try await loop.readable(fd, timeout: .seconds(1))
        }
    }

    // MARK: Fourth batch: dual-stack binds, adopted connects, a signal pending at finish

    @Test("libuv test-tcp-bind6-error / Go TestDualStackTCPListener: [::]:P beside 0.0.0.0:P is addressInUse when dual-stack, allowed with v6Only; UDP the same", arguments: backends)
    func dualStackBindConflicts(backend: Backend) throws {
        let probe = socket(AF_INET6, CInt(SOCK_STREAM.rawValue), 0)
        guard probe >= 0 else { return }   // no IPv6 here: nothing to check (reported as a pass with no expectation)
        close(probe)
        let v4 = try Listener(bind: try SocketAddress("0.0.0.0:0"))
        defer { v4.close() }
        let port = try #require(v4.address.port)
        var dual = Listener.Options()
        dual.v6Only = false
        #expect(socketErrorKind { _ = try Listener(bind: try SocketAddress("[::]:\(port)"), options: dual) } == .addressInUse)
        var only = Listener.Options()
        only.v6Only = true
        let v6 = try Listener(bind: try SocketAddress("[::]:\(port)"), options: only)
        #expect(v6.address.port == port)
        v6.close()
        // UDP.
        let u4 = try DatagramSocket(bind: try SocketAddress("0.0.0.0:0"))
        defer { u4.close() }
        let uport = try #require(u4.localAddress?.port)
        var udual = DatagramSocket.Options()
        udual.v6Only = false
        #expect(socketErrorKind { _ = try DatagramSocket(bind: try SocketAddress("[::]:\(uport)"), options: udual) } == .addressInUse)
        var uonly = DatagramSocket.Options()
        uonly.v6Only = true
        let u6 = try DatagramSocket(bind: try SocketAddress("[::]:\(uport)"), options: uonly)
        #expect(u6.localAddress?.port == uport)
        u6.close()
    }

    @Test("libuv test-tcp-open (uv_tcp_open of a connecting socket): an adopted socket whose connect is in progress writes once connected; one whose connect was refused fails its read typed", arguments: backends)
    func adoptConnectingSocket(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
            let status = listener.address.withSockaddr { Glibc.connect(fd, $0, $1) }
            #expect(status == 0 || errno == EINPROGRESS)
            let client = try await loop.adopt(descriptor: fd)
            try await client.write(Array("early".utf8), timeout: .seconds(5))
            let server = try await listener.accept(timeout: .seconds(5))
            #expect(try await server.read(upTo: 16, timeout: .seconds(5)) == Array("early".utf8))
            await client.close(); await server.close(); await listener.close()
            // Refused.
            let closed = try closedPort()
            let refusedFD = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
            _ = closed.withSockaddr { Glibc.connect(refusedFD, $0, $1) }
            let refused = try await loop.adopt(descriptor: refusedFD)
            var readError: LoopError?
            do { _ = try await refused.read(upTo: 8, timeout: .seconds(5)) } catch { readError = error as? LoopError }
            #expect(loopErrorKind(readError) == .refused, "\(String(describing: readError)) on \(backend)")
            await refused.close()
        }
    }

    @Test("libuv test-signal pending-on-close / tokio signal drop: a finished sequence returns only what came before finish(), then nil; a sequence made after a delivery sees only later ones", arguments: backends)
    func signalPendingAtFinish(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let keeper = try loop.signals([.user2])   // keeps SIGUSR2 caught for the whole test
            let unread = try loop.signals([.user2])
            kill(getpid(), SIGUSR2)
            // The delivery itself is the barrier (a fixed sleep could end before a loaded machine
            // delivered it, and the later sequence would then see it): every sequence gets it in one turn.
            var keeperIterator = keeper.makeAsyncIterator()
            #expect(await keeperIterator.next() == .user2)   // the first delivery
            unread.finish()   // its delivery is never read
            let late = try loop.signals([.user2])
            let lateTask = Task { () async -> [Signal] in
                var iterator = late.makeAsyncIterator()
                var seen: [Signal] = []
                while let signal = await iterator.next() { seen.append(signal) }
                return seen
            }
            try await loop.sleep(for: .milliseconds(30))
            kill(getpid(), SIGUSR2)
            #expect(await keeperIterator.next() == .user2)   // the second
            try await loop.sleep(for: .milliseconds(30))
            late.finish()
            #expect(await lateTask.value == [.user2], "a sequence made after the first delivery saw it, or missed the second")
            // The finished sequence: what had come before finish() is still returned, then nil (the
            // documented rule, as AsyncStream's finish; libuv and tokio drop it with the handle). The
            // second delivery, after finish(), is not in it.
            var finished = unread.makeAsyncIterator()
            #expect(await finished.next() == .user2)
            #expect(await finished.next() == nil)
            keeper.finish()
        }
    }

    // MARK: Fifth batch: error states nobody waits on, sockets used from another loop

    @Test("libuv test-tcp-unexpected-read, error states: a reset connection, a hung-up one and a refused connected UDP socket that nobody waits on do not make the loop spin", arguments: backends)
    func noSpinOnErrorStates(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            // A connection whose peer resets, after one read made its registration.
            let (listener, client, server) = try await connectedPair(loop)
            try await server.write(Array("1".utf8))
            _ = try await client.read(upTo: 8, timeout: .seconds(5))
            try await server.withStreamSocket { (s) throws(SocketError) in try s.setLinger(.resetOnClose) }
            await server.close()
            // A connection whose peer closes normally (end of stream, then hang-up after our write).
            let (listener2, client2, server2) = try await connectedPair(loop)
            try await server2.write(Array("1".utf8))
            _ = try await client2.read(upTo: 8, timeout: .seconds(5))
            await server2.close()
            // A connected UDP socket refused by the port it sends to, after one receive made its registration.
            let closed = try closedPort()
            let udp = try await loop.connectDatagram(to: try SocketAddress("127.0.0.1:\(closed.port!)"))
            await #expect(throws: LoopError.timedOut) { _ = try await udp.receive(timeout: .milliseconds(5)) }
            try await udp.send(Array("x".utf8), timeout: .seconds(1))
            try await loop.sleep(for: .milliseconds(50))
            let before = try await loop.statistics()
            try await loop.sleep(for: .milliseconds(300))
            let after = try await loop.statistics()
            let iterations = after.iterations - before.iterations
            #expect(iterations < 40, "\(iterations) loop iterations in 300 ms with nobody waiting on \(backend)")
            // Each error is still there for the next operation.
            var readError: LoopError?
            do { _ = try await client.read(upTo: 8, timeout: .seconds(5)) } catch { readError = error as? LoopError }
            #expect(loopErrorKind(readError) == .reset, "\(String(describing: readError))")
            #expect(try await client2.read(upTo: 8, timeout: .seconds(5)) == [])
            var udpError: LoopError?
            do { _ = try await udp.receive(timeout: .seconds(5)) } catch { udpError = error as? LoopError }
            #expect(loopErrorKind(udpError) == .refused, "\(String(describing: udpError))")
            await client.close(); await listener.close()
            await client2.close(); await listener2.close()
            await udp.close()
        }
    }

    @Test("tokio: an I/O object used from another runtime's task / SwiftNIO: a channel used off its event loop: a socket of one loop read and written from tasks preferring another; that loop's shutdown ends them", arguments: backends)
    func socketUsedFromAnotherLoop(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let other = try EventLoop(backend: backend)
            let (listener, client, server) = try await connectedPair(loop)
            let reader = Task(executorPreference: other) { () async throws -> [UInt8] in
                #expect(other.inLoop)
                let bytes = try await server.read(upTo: 16, timeout: .seconds(5))
                #expect(other.inLoop, "the task resumed off its own loop")
                return bytes
            }
            try await loop.sleep(for: .milliseconds(20))
            let writer = Task(executorPreference: other) { () async throws in
                try await client.write(Array("across".utf8), timeout: .seconds(5))
            }
            try await writer.value
            #expect(try await reader.value == Array("across".utf8))
            // A sleep and a read on `loop` from a task of `other`, then `loop` shuts down: both end.
            let sleeper = Task(executorPreference: other) { () async -> LoopError? in
                do { try await loop.sleep(for: .seconds(30)) } catch { return error as? LoopError }
                return nil
            }
            let waiting = Task(executorPreference: other) { () async -> LoopError? in
                do { _ = try await server.read(upTo: 16, timeout: .seconds(30)) } catch { return error as? LoopError }
                return nil
            }
            try await other.sleep(for: .milliseconds(30))
            await loop.shutdown()
            #expect(await sleeper.value == .shutdown)
            #expect(await waiting.value == .shutdown)
            // `other` still works.
            try await other.sleep(for: .milliseconds(1))
            await other.shutdown()
            _ = listener
        }
    }

    @Test("Go TestReadWriteDeadlineRace: 3,000 reads with tiny and zero timeouts race 3,000 one-byte writes and short sleeps; every byte written is read once, nothing is left behind", arguments: backends)
    func readWriteDeadlineRace(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (listener, client, server) = try await connectedPair(loop)
            let writes = 3_000
            let writer = Task(executorPreference: loop) { () async -> Int in
                var written = 0
                let timeouts: [Duration?] = [.milliseconds(1), .zero, nil, .microseconds(1), .seconds(5)]
                for i in 0..<writes {
                    do {
                        try await client.write([UInt8(truncatingIfNeeded: i)], timeout: timeouts[i % timeouts.count])
                        written += 1
                    } catch {}
                    if i % 50 == 0 { try? await loop.sleep(for: .microseconds(i % 7)) }
                }
                try? await client.shutdown(.write)
                return written
            }
            let sleeper = Task(executorPreference: loop) {
                for i in 0..<500 { try? await loop.sleep(for: .microseconds(i % 300)) }
            }
            var received: [UInt8] = []
            var timedOut = 0
            let timeouts: [Duration] = [.microseconds(1), .zero, .milliseconds(1), .microseconds(100), .seconds(-1)]
            var i = 0
            while true {
                do {
                    let chunk = try await server.read(upTo: 7, timeout: timeouts[i % timeouts.count])
                    if chunk.isEmpty { break }
                    received += chunk
                } catch LoopError.timedOut {
                    timedOut += 1
                } catch {
                    Issue.record("read: \(error) on \(backend)")
                    break
                }
                i += 1
                if i > 1_000_000 { Issue.record("no end of stream"); break }
            }
            let written = await writer.value
            await sleeper.value
            #expect(written == writes, "only \(written) one-byte writes succeeded")
            #expect(received.count == written)
            #expect(received == (0..<written).map { UInt8(truncatingIfNeeded: $0) })
            await client.close(); await server.close(); await listener.close()
            #expect(try await loop.entryCount() == 0)
        }
    }

    @Test("Go TestDialerDualStack / tokio lookup_host with odd answers: a resolver answering the wrong family, duplicates, port 0, or nothing at all: connects or fails typed, never hangs without a timeout", arguments: backends)
    func oddResolverAnswers(backend: Backend) async throws {
        struct Scripted: HostResolver {
            let v6: Result<[SocketAddress], ResolutionError>
            let v4: Result<[SocketAddress], ResolutionError>
            func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
                family == .ipv6 ? v6 : v4
            }
        }
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let port = listener.address.port!
            let good = listener.address
            let zero = try SocketAddress("127.0.0.1:0")
            let cases: [(String, Scripted, Bool)] = [
                ("an IPv4 address in the AAAA answer", Scripted(v6: .success([good]), v4: .success([])), true),
                ("the same address eight times", Scripted(v6: .success([]), v4: .success(Array(repeating: good, count: 8))), true),
                ("port 0, then the listener", Scripted(v6: .success([]), v4: .success([zero, good])), true),
                ("only port 0", Scripted(v6: .success([]), v4: .success([zero])), false),
                ("nothing in either family", Scripted(v6: .success([]), v4: .success([])), false),
                ("both fail", Scripted(v6: .failure(ResolutionError(host: "h", reason: "no")), v4: .failure(ResolutionError(host: "h", reason: "no"))), false),
            ]
            for (what, resolver, connects) in cases {
                let attempt = Task(executorPreference: loop) { () async -> Result<AsyncSocket, LoopError> in
                    do { return .success(try await loop.connect(host: "scripted.example", port: port, resolver: resolver)) } catch { return .failure(error as! LoopError) }
                }
                let watchdog = Task { if (try? await loop.sleep(for: .seconds(10))) != nil { attempt.cancel() } }   // not Task.sleep: libdispatch's timer descriptors
                let outcome = await attempt.value
                watchdog.cancel()
                switch outcome {
                case .success(let socket):
                    #expect(connects, "\(what): connected")
                    let server = try await listener.accept(timeout: .seconds(5))
                    await server.close()
                    await socket.close()
                case .failure(let error):
                    #expect(!connects, "\(what): \(error) on \(backend)")
                    #expect(error != .cancelled, "\(what): hung until the watchdog cancelled it on \(backend)")
                }
            }
            // Nothing left queued or held.
            await #expect(throws: LoopError.timedOut) { _ = try await listener.accept(timeout: .milliseconds(20)) }
            await listener.close()
            #expect(try await loop.entryCount() == 0)
        }
    }

    @Test("SwiftNIO cleanupExistingSocketFile / Go TestUnixListenerStale: a live Unix listener with a full backlog is not taken for a stale socket; once closed, its path is free", arguments: backends)
    func unixListenerFullBacklogIsNotStale(backend: Backend) throws {
        let path = "/tmp/readiness-peers3-\(getpid())-\(String(backend.name.map { $0 == ":" ? "-" : $0 })).sock"
        unlink(path)
        var options = Listener.Options()
        options.backlog = 0
        let live = try Listener(bind: try SocketAddress(unixPath: path), options: options)
        var fillers: [CInt] = []
        defer { for fd in fillers { close(fd) } }
        for _ in 0..<64 {
            let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
            let status = live.address.withSockaddr { Glibc.connect(fd, $0, $1) }
            let code = errno
            fillers.append(fd)
            if status != 0 { #expect(code == EAGAIN, "connect: \(code)"); break }
        }
        let start = ContinuousClock.now
        #expect(socketErrorKind { _ = try Listener(bind: try SocketAddress(unixPath: path)) } == .addressInUse)
        #expect(ContinuousClock.now - start < .seconds(1))
        var st = stat()
        #expect(lstat(path, &st) == 0, "the live listener's path was removed")
        live.close()
        let again = try Listener(bind: try SocketAddress(unixPath: path))
        again.close()
        #expect(lstat(path, &st) != 0)
    }

    @Test("libuv benchmark-pound / tokio many concurrent reads: 400 connections (200 on select) each waiting in readAvailable, every peer writes 64 KiB at once: each reader gets exactly its own bytes", arguments: backends)
    func manyConcurrentReaders(backend: Backend) async throws {
        let connections = backend.name.contains("select") ? 200 : 400   // select: descriptors below 1,024
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            var clients: [AsyncSocket] = [], servers: [AsyncSocket] = []
            for _ in 0..<connections {
                async let accepted = listener.accept(timeout: .seconds(5))
                clients.append(try await loop.connect(to: listener.address, timeout: .seconds(5)))
                servers.append(try await accepted)
            }
            let size = 64 * 1024
            let results = await withTaskGroup(of: (Int, Bool).self) { group in
                for (index, server) in servers.enumerated() {
                    group.addTask(executorPreference: loop) {
                        var received = Bytes()
                        while received.count < size {
                            guard let chunk = try? await server.readAvailable(maximum: 16 * 1024, timeout: .seconds(30)), !chunk.isEmpty else { break }
                            received.append(contentsOf: chunk.span)
                        }
                        // memcmp, not Bytes' ==: a debug build compares byte by byte, seconds for 8 MiB.
                        let expected = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: size)
                        let same = received.count == size && received.withUnsafeBytes { raw in
                            expected.withUnsafeBytes { memcmp(raw.baseAddress!, $0.baseAddress!, size) == 0 }
                        }
                        return (index, same)
                    }
                }
                try? await loop.sleep(for: .milliseconds(50))   // every reader waiting
                for (index, client) in clients.enumerated() {
                    let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: size)
                    group.addTask(executorPreference: loop) {
                        do { try await client.write(bytes, timeout: .seconds(30)) } catch { return (-1 - index, false) }
                        return (-1 - index, true)
                    }
                }
                var outcomes: [(Int, Bool)] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            let failed = results.filter { !$0.1 }.map(\.0)
            #expect(results.count == 2 * connections)
            #expect(failed.isEmpty, "readers (index) or writers (-1 - index) that failed on \(backend): \(failed.prefix(10))")
            for socket in clients + servers { await socket.close() }
            await listener.close()
        }
    }

    @Test("Go TestDialerLocalAddr / libuv tcp-bind-error before connect: connects from a chosen local address (127.0.0.2, an ephemeral or a fixed port); a local port a listener holds, a foreign local address or the other family: typed, nothing leaks", arguments: backends)
    func connectFromLocalAddress(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        func accepted() -> StreamSocket? {
            for _ in 0..<500 {
                if case .accepted(let socket, _) = try? listener.accept() { return socket }
                usleep(1_000)
            }
            return nil
        }
        // From 127.0.0.2 (loopback is a /8 on Linux), port chosen by the kernel.
        let connected = try Connector.connect(to: listener.address, on: poller, timeout: .seconds(5),
                                              localAddress: try SocketAddress("127.0.0.2:0"))
        let client = StreamSocket(connected)
        let local = try SocketAddress.local(of: connected.fd)
        #expect(local.description.hasPrefix("127.0.0.2:"), "\(local)")
        #expect(connected.local == nil || connected.local == local)
        #expect(connected.peer == listener.address)
        let server = try #require(accepted())
        #expect(server.peerAddress == local)
        client.close(); server.close()
        // A fixed local port that nobody uses: that port.
        let probe = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let free = try #require(probe.localAddress?.port)
        probe.close()
        if let fixed = try? Connector.connect(to: listener.address, on: poller, timeout: .seconds(5),
                                              localAddress: try SocketAddress(ip: "127.0.0.1", port: free)) {
            // `local` is read only where a self-connect is possible (Docs/Connect.md rule 7): nil here
            // is the documented saving; the socket itself is bound to the port.
            #expect(fixed.local == nil || fixed.local?.port == free)
            #expect(try SocketAddress.local(of: fixed.fd).port == free)
            close(fixed.fd)
            accepted()?.close()
        }
        // The listener's own port as the local port: in use.
        do {
            let socket = try Connector.connect(to: listener.address, on: poller, timeout: .seconds(5), localAddress: listener.address)
            close(socket.fd)
            Issue.record("connected from the listener's own address on \(backend)")
        } catch {
            #expect(error.cause != .timedOut, "\(error)")
        }
        // A local address this host does not have, and one of the other family.
        for local in [try SocketAddress("192.0.2.1:0"), try SocketAddress("[::1]:0")] {
            do {
                let socket = try Connector.connect(to: listener.address, on: poller, timeout: .seconds(5), localAddress: local)
                close(socket.fd)
                Issue.record("connected from \(local) on \(backend)")
            } catch {
                #expect(error.cause != .timedOut, "\(local): \(error)")
            }
        }
        listener.close()
        #expect(openDescriptorCount() == before)
    }
}
