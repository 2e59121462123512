// readiness-echo: an echo server on the public API only (no Glibc), on any backend.
//
//   readiness-echo --port 7000 [--host 127.0.0.1] [--backend epoll] [--connections N]
//
// It sends back every byte it receives, on every connection, until the client shuts down its side;
// with --connections N it exits after N connections have ended, printing a summary line.
// What it shows: Listener (with the EMFILE back-off), StreamSocket reads and writes that stop reading
// while a peer does not read (back-pressure), Timers for the back-off, one poller for everything.
import ExampleSupport
import Readiness



/// One client: what was read and not yet written back.
final class Connection {
    static let bufferSize = 64 * 1024
    let socket: StreamSocket
    let token: Token
    var buffer = [UInt8](repeating: 0, count: Connection.bufferSize)
    var pending = 0        // bytes in buffer not yet echoed
    var written = 0        // of those, already written
    var peerDone = false   // the client shut down its side
    var echoed = 0
    /// What the socket is registered for now (changed only when it must be).
    var interest: Interest = .readable
    /// Reads per readiness event: a client that sends as fast as the server echoes would otherwise
    /// keep `service` going for ever, and every other client, the listener and the timers wait
    /// (libuv's uv__read stops after 32 reads, SwiftNIO after 4). The registration is level-triggered:
    /// the next wait reports the socket again.
    static let readsPerEvent = 16

    init(socket: StreamSocket, token: Token) {
        self.socket = socket
        self.token = token
    }

    enum Next { case keep, close }

    /// Reads and echoes until the socket would block, or `readsPerEvent` reads. Interest: readable
    /// while there is room, writable while something is left to write.
    func service(ready: Ready) throws -> Next {
        var reads = 0
        while true {
            if written < pending {
                switch try socket.write(buffer, from: written, to: pending) {
                case .transferred(let n): written += n; echoed += n; continue
                case .wouldBlock, .endOfStream:
                    try want(.writable)
                    return .keep
                }
            }
            pending = 0
            written = 0
            if peerDone { return .close }
            if reads == Self.readsPerEvent {
                try want(.readable)   // the others' turn; reported again by the next wait
                return .keep
            }
            reads += 1
            switch try socket.read(into: &buffer) {
            case .transferred(let n): pending = n
            case .endOfStream: peerDone = true
            case .wouldBlock:
                try want(.readable)
                return .keep
            }
        }
    }

    private func want(_ wanted: Interest) throws {
        guard wanted != interest else { return }
        try socket.reregister(token: token, interest: wanted)
        interest = wanted
    }
}

func serve(_ arguments: EchoArguments) throws {
    let backend = try arguments.backend ?? Backend.default()
    let poller = try backend.makePoller()
    defer { try? poller.close() }
    let listener = try Listener(bind: try SocketAddress(ip: arguments.host, port: arguments.port))
    let listenerToken: Token = 0, resumeToken: Token = 1
    try listener.register(on: poller, token: listenerToken)
    let timers = Timers()
    let events = EventBuffer(capacity: 256)
    var connections: [UInt64: Connection] = [:]
    var nextToken: UInt64 = 2
    var finished = 0, echoed = 0, failures = 0

    /// Accepting again. A re-registration refused for want of memory leaves the listener backing off
    /// for a new period (Listener.resume): a timer tries again then, and the server goes on.
    func resumeOrReschedule() throws {
        do { try listener.resume() } catch {
            if case .backingOff(let until) = try listener.accept() { timers.schedule(at: until, token: resumeToken) }
        }
    }

    func end(_ connection: Connection) throws {
        connection.socket.close()   // deregisters, then closes
        connections[connection.token.rawValue] = nil
        finished += 1
        echoed += connection.echoed
        try resumeOrReschedule()    // a descriptor is free: stop backing off now
    }

    while arguments.connections.map({ finished < $0 }) ?? true {
        try poller.wait(into: events, timeout: timers.timeout())
        for event in events {
            if event.token == listenerToken {
                accepting: while true {
                    switch try listener.accept() {
                    case .accepted(let socket, _):
                        // One connection's failure (a descriptor select cannot hold, an option the
                        // kernel refuses) ends that connection, not the server.
                        let connection = Connection(socket: socket, token: Token(nextToken))
                        nextToken += 1
                        do {
                            try socket.setNoDelay(true)
                            try socket.register(on: poller, token: connection.token, interest: .readable)
                        } catch {
                            // It ends here: counted as finished (a --connections run must end), and
                            // its descriptor is free again.
                            failures += 1
                            finished += 1
                            print("connection \(connection.token): \(error)")
                            socket.close()
                            try resumeOrReschedule()
                            continue accepting
                        }
                        connections[connection.token.rawValue] = connection
                    case .wouldBlock:
                        break accepting
                    case .backingOff(let until):
                        timers.schedule(at: until, token: resumeToken)
                        break accepting
                    }
                }
            } else if let connection = connections[event.token.rawValue] {
                do {
                    if try connection.service(ready: event.ready) == .close { try end(connection) }
                } catch {
                    failures += 1
                    print("connection \(connection.token): \(error)")
                    try end(connection)
                }
            }
        }
        while let token = timers.popDue() {
            if token == resumeToken { try resumeOrReschedule() }
        }
    }
    print("connections \(finished) echoed-bytes \(echoed) failures \(failures) backend \(backend.name) accept-backoffs \(listener.exhaustionCount)")
}

do {
    ignoreBrokenPipes()
    try serve(try EchoArguments(CommandLine.arguments))
} catch {
    exitFailing("readiness-echo", error, usage: EchoArguments.usage)
}
