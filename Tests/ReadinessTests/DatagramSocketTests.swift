import Glibc
import Readiness
import Testing

/// Waits until `socket` has a datagram (its readable event on `poller`) and receives it.
func receiveDatagram(_ socket: DatagramSocket, into buffer: inout [UInt8], token: Token,
                     on poller: any Poller) throws -> ReceivedDatagram? {
    for _ in 0..<20 {
        if case .received(let datagram) = try socket.receive(into: &buffer) { return datagram }
        _ = try waitFor(.readable, token: token, on: poller)
    }
    return nil
}

@Suite("Datagram sockets")
struct DatagramSocketTests {
    @Test("loopback ping-pong over IPv4 and IPv6, through a poller", arguments: backends, ["127.0.0.1", "::1"])
    func pingPong(backend: Backend, host: String) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let server = try DatagramSocket(bind: try SocketAddress(ip: host, port: 0))
        let client = try DatagramSocket(bind: try SocketAddress(ip: host, port: 0))
        let serverAddress = try #require(server.localAddress)
        let clientAddress = try #require(client.localAddress)
        #expect(serverAddress.port != 0)
        try server.register(on: poller, token: 1, interest: .readable)
        try client.register(on: poller, token: 2, interest: .readable)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(try server.receive(into: &buffer) == .wouldBlock)
        for round in 0..<10 {
            let ping = Array("ping \(round)".utf8)
            #expect(try client.send(ping, destination: serverAddress) == .transferred(ping.count))
            let got = try #require(try receiveDatagram(server, into: &buffer, token: 1, on: poller))
            #expect(got == ReceivedDatagram(count: ping.count, length: ping.count, source: clientAddress, isTruncated: false))
            #expect(Array(buffer[0..<got.count]) == ping)
            let pong = Array("pong \(round)".utf8)
            let source = try #require(got.source)
            #expect(try server.send(pong, destination: source) == .transferred(pong.count))
            let back = try #require(try receiveDatagram(client, into: &buffer, token: 2, on: poller))
            #expect(back.source == serverAddress)
            #expect(Array(buffer[0..<back.count]) == pong)
        }
        // An empty datagram is a datagram (not an end of stream).
        #expect(try client.send([], destination: serverAddress) == .transferred(0))
        let empty = try #require(try receiveDatagram(server, into: &buffer, token: 1, on: poller))
        #expect(empty.count == 0 && empty.length == 0 && !empty.isTruncated)
    }

    @Test("truncation is reported with the datagram's real length, never silently", arguments: backends)
    func truncation(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let client = try DatagramSocket(connectedTo: try #require(server.localAddress))
        try server.register(on: poller, token: 1, interest: .readable)
        let payload = (0..<100).map { UInt8($0) }
        #expect(try client.send(payload) == .transferred(100))
        var small = [UInt8](repeating: 0, count: 10)
        let got = try #require(try receiveDatagram(server, into: &small, token: 1, on: poller))
        #expect(got.isTruncated && got.count == 10 && got.length == 100)
        #expect(small == Array(payload[0..<10]))
        // The rest of a truncated datagram is gone: the next receive is the next datagram.
        #expect(try server.receive(into: &small) == .wouldBlock)
        // An empty buffer drops a datagram and tells its length.
        #expect(try client.send(payload) == .transferred(100))
        _ = try waitFor(.readable, token: 1, on: poller)
        let dropped = try server.receive(into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
        #expect(dropped.datagram?.length == 100 && dropped.datagram?.isTruncated == true && dropped.datagram?.count == 0)
        // Into Bytes: appended, up to `maximum`.
        #expect(try client.send(payload) == .transferred(100))
        _ = try waitFor(.readable, token: 1, on: poller)
        var bytes: Bytes = [0xAA]
        let appended = try server.receive(into: &bytes, maximum: 50)
        #expect(appended.datagram?.count == 50 && appended.datagram?.isTruncated == true)
        #expect(Array(bytes) == [0xAA] + Array(payload[0..<50]))
    }

    @Test("a connected socket hears of an ICMP port-unreachable as a typed refusal", arguments: backends)
    func connectedRefused(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let gone = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let address = try #require(gone.localAddress)
        gone.close()
        // Closed: a receive would report it at once, so one would not block (poll ignores fd -1).
        #expect(gone.hasQueuedDatagram())
        var nothing = [UInt8](repeating: 0, count: 1)
        #expect(throws: SocketError.self) { try gone.receive(into: &nothing) }
        let client = try DatagramSocket(connectedTo: address)
        #expect(client.peerAddress == address)
        try client.register(on: poller, token: 1, interest: .readable)
        #expect(try client.send(Array("anyone?".utf8)) == .transferred(7))
        var buffer = [UInt8](repeating: 0, count: 16)
        var refused: SocketError?
        for _ in 0..<20 where refused == nil {
            _ = try waitFor(.readable, token: 1, on: poller)
            do { _ = try client.receive(into: &buffer) } catch { refused = error }
        }
        #expect(refused?.kind == .refused)
        #expect(refused?.errno == ECONNREFUSED)
    }

    @Test("a burst larger than the receive buffer: drops counted, every datagram received whole", arguments: backends)
    func burst(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var options = DatagramSocket.Options()
        options.receiveBufferSize = 4096
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"), options: options)
        let client = try DatagramSocket(connectedTo: try #require(server.localAddress))
        try server.register(on: poller, token: 1, interest: .readable)
        let burst = 2_000
        let size = 512
        var sent = 0
        var payload = [UInt8](repeating: 0, count: size)
        for sequence in 0..<burst {
            for i in 0..<size { payload[i] = UInt8(truncatingIfNeeded: sequence &+ i) }
            withUnsafeBytes(of: UInt32(sequence).bigEndian) { payload.replaceSubrange(0..<4, with: $0) }
            switch try client.send(payload) {
            case .transferred(let n): #expect(n == size); sent += 1
            default: break
            }
        }
        var received = 0
        var last = -1
        var buffer = [UInt8](repeating: 0, count: 2 * size)
        while case .received(let datagram) = try server.receive(into: &buffer) {
            #expect(datagram.count == size && !datagram.isTruncated)
            let sequence = Int(UInt32(buffer[0]) << 24 | UInt32(buffer[1]) << 16 | UInt32(buffer[2]) << 8 | UInt32(buffer[3]))
            #expect(sequence > last)   // in order, none twice
            last = sequence
            #expect((4..<size).allSatisfy { buffer[$0] == UInt8(truncatingIfNeeded: sequence &+ $0) })
            received += 1
        }
        #expect(received > 0)
        let held = try server.receiveBufferSize()
        #expect(received < sent, "a \(held)-byte buffer held all \(sent) datagrams")
    }

    @Test("Unix datagrams: bound paths, a pair, a nameless sender, the path unlinked on close", arguments: backends)
    func unix(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let path = "/tmp/readiness-dgram-\(getpid())-\(backend.name)"
        unlink(path)
        let server = try DatagramSocket(bind: try SocketAddress(unixPath: path))
        #expect(throws: SocketError.self) { try DatagramSocket(bind: try SocketAddress(unixPath: path)) }
        try server.register(on: poller, token: 1, interest: .readable)
        let client = try DatagramSocket(family: .unix)
        #expect(try client.send(Array("hi".utf8), destination: try SocketAddress(unixPath: path)) == .transferred(2))
        var buffer = [UInt8](repeating: 0, count: 16)
        let got = try #require(try receiveDatagram(server, into: &buffer, token: 1, on: poller))
        #expect(got.count == 2 && got.source == nil)
        server.close()
        #expect(access(path, F_OK) != 0)

        let (a, b) = try DatagramSocket.pair()
        try b.register(on: poller, token: 2, interest: .readable)
        #expect(try a.send(Bytes(Array("pair".utf8))) == .transferred(4))
        let paired = try #require(try receiveDatagram(b, into: &buffer, token: 2, on: poller))
        #expect(Array(buffer[0..<paired.count]) == Array("pair".utf8))
    }

    @Test("multicast on loopback, IPv4 and IPv6 (skipped with the reason where the kernel refuses)",
          arguments: backends, ["239.255.0.1", "ff02::1:3"])
    func multicast(backend: Backend, group: String) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let loopback = try #require(DatagramSocket.interfaceIndex(named: "lo"))
        let wildcard = group.contains(":") ? "::" : "0.0.0.0"
        var options = DatagramSocket.Options()
        options.reuseAddress = true
        let receiver = try DatagramSocket(bind: try SocketAddress(ip: wildcard, port: 0), options: options)
        let port = try #require(receiver.localAddress?.port)
        var groupAddress = try SocketAddress(ip: group, port: port)
        if group.contains(":") { groupAddress = try scoped(groupAddress, to: loopback) }
        do {
            try receiver.joinMulticast(groupAddress, interface: loopback)
        } catch {
            try Test.cancel("joining \(group) on lo refused here: \(error)")
        }
        let sender = try DatagramSocket(family: receiver.family)
        try sender.setMulticastInterface(loopback)
        try sender.setMulticastLoop(true)
        try sender.setMulticastHopLimit(1)
        try expectMulticastDelivery(Array("hello group".utf8), from: sender, to: receiver, group: groupAddress, on: poller)
        try receiver.leaveMulticast(groupAddress, interface: loopback)
    }

    @Test("options: broadcast, hop limits, buffer sizes, reuse; bad values refused without a system call")
    func options() throws {
        var options = DatagramSocket.Options()
        options.reusePort = true
        options.reuseAddress = true
        options.broadcast = true
        options.sendBufferSize = Int.max
        let a = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"), options: options)
        let b = try DatagramSocket(bind: try #require(a.localAddress), options: options)   // SO_REUSEPORT
        #expect(a.localAddress == b.localAddress)
        try a.setBroadcast(false)
        try a.setHopLimit(64)
        try a.setMulticastHopLimit(0)
        try a.setReceiveBufferSize(Int.max)
        #expect(try a.receiveBufferSize() > 0 && a.sendBufferSize() > 0)
        for bad in [0, 256, -1, Int.min, Int.max] {
            #expect(throws: SocketError(.invalidArgument, operation: "hop limit \(bad) on ipv4")) { try a.setHopLimit(bad) }
        }
        let v6 = try DatagramSocket(bind: try SocketAddress("[::1]:0"))
        try v6.setHopLimit(-1)   // the route's default
        // mio set_get_ttl: unicast 0 is refused on IPv6 as on IPv4 (the kernel would take it).
        #expect(throws: SocketError(.invalidArgument, operation: "hop limit 0 on ipv6")) { try v6.setHopLimit(0) }
        try v6.setMulticastHopLimit(0)
        #expect(throws: SocketError.self) { try v6.setMulticastHopLimit(-1) }
        // Addresses of the other family, non-multicast groups, ranges outside the array: refused.
        #expect(throws: SocketError.self) { try a.send([1], destination: try SocketAddress("[::1]:9")) }
        #expect(throws: SocketError.self) { try a.connect(to: try SocketAddress("[::1]:9")) }
        #expect(throws: SocketError.self) { try a.joinMulticast(try SocketAddress("127.0.0.1:9")) }
        #expect(throws: SocketError.self) { try a.send([1, 2], from: 1, to: 3) }
        #expect(throws: SocketError.self) { try a.send([1, 2], from: -1) }
        #expect(throws: SocketError.self) { try a.send([1, 2], from: 2, to: 1) }
        var bytes = Bytes()
        #expect(throws: SocketError.self) { try a.receive(into: &bytes, maximum: 0) }
        #expect(throws: SocketError.self) {
            try DatagramSocket(connectedTo: try SocketAddress("[::1]:9"), from: try SocketAddress("127.0.0.1:0"))
        }
        // EMSGSIZE is typed.
        let big = [UInt8](repeating: 0, count: DatagramSocket.maximumUDPPayload + 1)
        let destination = try #require(b.localAddress)
        #expect(throws: SocketError(.messageTooLarge, errno: EMSGSIZE, operation: "sendto")) {
            try a.send(big, destination: destination)
        }
    }

    @Test("adopting a descriptor made elsewhere: made non-blocking, its family found; refusals leave it open")
    func adopting() throws {
        // A blocking IPv4 datagram socket made with socket(2), as libuv's uv_udp_open takes one.
        let raw = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(raw >= 0)
        let adopted = try DatagramSocket(adopting: raw)
        #expect(adopted.family == .ipv4)
        #expect(fcntl(raw, F_GETFL) & O_NONBLOCK != 0)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try adopted.receive(into: &buffer) == .wouldBlock)   // non-blocking: no hang
        let peer = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        #expect(try adopted.send(Array("hi".utf8), destination: peer.localAddress) == .transferred(2))
        adopted.close()
        #expect(fcntl(raw, F_GETFD) == -1)   // closed by the socket that owned it

        let (a, b) = try DatagramSocket.pair()
        let unix = try DatagramSocket(adopting: a.release())
        #expect(unix.family == .unix)
        #expect(try b.send(Array("x".utf8)) == .transferred(1))
        #expect(try unix.receive(into: &buffer).datagram?.count == 1)

        // Refused: nothing is taken, the descriptor stays the caller's and open.
        let stream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let netlink = socket(AF_NETLINK, Int32(SOCK_DGRAM.rawValue), 0)
        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        defer { for fd in [stream, netlink, pipeEnds[0], pipeEnds[1]] where fd >= 0 { Glibc.close(fd) } }
        for fd in [stream, pipeEnds[0], -1, netlink] {
            #expect(throws: SocketError.self) { try DatagramSocket(adopting: fd) }
            do { _ = try DatagramSocket(adopting: fd) } catch { #expect(error.kind == .invalidArgument, "\(fd): \(error)") }
            // Open and unchanged (still blocking: nothing was set before the refusal).
            if fd >= 0 { #expect(fcntl(fd, F_GETFD) != -1 && fcntl(fd, F_GETFL) & O_NONBLOCK == 0) }
        }
        // Not open: .closed.
        let gone = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        Glibc.close(gone)
        do { _ = try DatagramSocket(adopting: gone); Issue.record("adopted a closed descriptor") } catch { #expect(error.kind == .closed) }
    }

    @Test("peek: the next datagram copied without being taken, truncation told; disconnect dissolves the association",
          arguments: backends)
    func peekAndDisconnect(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let other = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let serverAddress = try #require(server.localAddress)
        let client = try DatagramSocket(connectedTo: serverAddress, from: try SocketAddress("127.0.0.1:0"))
        try server.register(on: poller, token: 1, interest: .readable)
        var small = [UInt8](repeating: 0, count: 2)
        #expect(try server.peek(into: &small) == .wouldBlock)
        #expect(try client.send(Array("hello".utf8)) == .transferred(5))
        _ = try waitFor(.readable, token: 1, on: poller)
        // A peek into a short buffer: truncated, with the real length; the datagram stays queued.
        let peeked = try #require(try server.peek(into: &small).datagram)
        #expect(peeked.count == 2 && peeked.length == 5 && peeked.isTruncated && small == Array("he".utf8))
        #expect(peeked.source == client.localAddress)
        var buffer = [UInt8](repeating: 0, count: 16)
        let again = try #require(try server.peek(into: &buffer).datagram)
        #expect(again.count == 5 && !again.isTruncated)
        let taken = try #require(try server.receive(into: &buffer).datagram)
        #expect(taken.count == 5 && Array(buffer[..<5]) == Array("hello".utf8))
        #expect(try server.receive(into: &buffer) == .wouldBlock)

        // Connected: no address needed, and only the peer's datagrams arrive. Disconnected: a send
        // needs an address (a typed notConnected), and any source is heard again.
        #expect(client.peerAddress == serverAddress)
        try client.disconnect()
        #expect(client.peerAddress == nil)
        // Linux gives up a port the kernel chose (bound to port 0 here): the next send takes a new one.
        #expect(client.localAddress?.port == 0)
        do { _ = try client.send(Array("x".utf8)); Issue.record("sent with no destination") } catch {
            #expect(error.kind == .notConnected)
        }
        try client.register(on: poller, token: 2, interest: .readable)
        #expect(try client.send(Array("hi".utf8), destination: other.localAddress) == .transferred(2))
        let clientAddress = try #require(client.localAddress)
        #expect(clientAddress.port != 0)
        #expect(try other.send(Array("from other".utf8), destination: clientAddress) == .transferred(10))
        _ = try waitFor(.readable, token: 2, on: poller)
        #expect(try client.receive(into: &buffer).datagram?.source == other.localAddress)
        // libuv test-udp-connect: disconnecting a socket that is not connected is ENOTCONN
        // (notConnected) and changes nothing, not even the port the kernel chose (connect to
        // AF_UNSPEC would give it up). Before: it returned as if it had disconnected.
        #expect(throws: SocketError.self) { try client.disconnect() }
        do { try client.disconnect() } catch { #expect(error.kind == .notConnected && error.errno == ENOTCONN, "\(error)") }
        #expect(client.localAddress == clientAddress)
        #expect(try other.send(Array("still".utf8), destination: clientAddress) == .transferred(5))
        _ = try waitFor(.readable, token: 2, on: poller)
        #expect(try client.receive(into: &buffer).datagram?.source == other.localAddress)
    }

    @Test("no descriptor leaked: close, release, deinit, failed binds", arguments: backends)
    func noLeak(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        do {
            let a = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
            try a.register(on: poller, token: 1, interest: .readable)
            #expect(throws: PollerError.alreadyRegistered(a.fd)) { try a.register(on: poller, token: 2, interest: .readable) }
            #expect(throws: SocketError.self) { try DatagramSocket(bind: try #require(a.localAddress)) }   // EADDRINUSE
            let b = try DatagramSocket(family: .ipv6)
            Glibc.close(b.release())
            _ = try DatagramSocket.pair()
            a.close()
            a.close()
            #expect(a.isClosed)
        }
        #expect(openDescriptorCount() == before)
    }
}

/// `address` (IPv6) with its scope id set to interface `index` (a link-local multicast group needs one).
func scoped(_ address: SocketAddress, to index: UInt32) throws -> SocketAddress {
    var copy = address
    var raw = sockaddr_in6()
    address.withSockaddr { pointer, _ in
        pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { raw = $0.pointee }
    }
    raw.sin6_scope_id = index
    copy = withUnsafePointer(to: &raw) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0, length: socklen_t(MemoryLayout<sockaddr_in6>.size))! }
    }
    return copy
}

/// Sends `message` to `group` and expects `receiver` to get it, skipping the test (with the reason)
/// where the kernel refuses the send or loopback delivers no multicast.
func expectMulticastDelivery(_ message: [UInt8], from sender: DatagramSocket, to receiver: DatagramSocket,
                             group: SocketAddress, on poller: any Poller) throws {
    try receiver.register(on: poller, token: 1, interest: .readable)
    do { _ = try sender.send(message, destination: group) } catch {
        try Test.cancel("sending to \(group) on lo refused here: \(error)")
    }
    var buffer = [UInt8](repeating: 0, count: 64)
    guard let got = try receiveDatagram(receiver, into: &buffer, token: 1, on: poller) else {
        try Test.cancel("no multicast delivered on lo here (the interface has no MULTICAST flag?)")
    }
    #expect(Array(buffer[0..<got.count]) == message)
}
