// readiness-http-load: an HTTP/1.1 keep-alive load client on the public API only (no Glibc).
//
//   readiness-http-load --url http://127.0.0.1:8080/index.html [--connections 50] [--requests 20000]
//                       [--backend epoll] [--timeout 60]
//
// Like `ab -k`: N connections, each sending the next GET as soon as the previous response is complete,
// until the total is reached. Prints one summary line; every response must be 200 with a
// Content-Length body (chunked bodies count as failures). What it shows: Resolution (getaddrinfo off
// the loop thread) and HappyEyeballs per connection inside one loop, StreamSocket I/O without
// allocation per request, Timers for the overall deadline, reconnecting when the server closes.
import ExampleSupport
import Readiness


/// One keep-alive connection: connecting, then request and response in turn.
final class Client {
    /// Each client owns a block of tokens: the first for its socket and its connect's timer, the rest
    /// for the connect's attempts.
    static let tokensPerClient: UInt64 = 64
    let index: Int
    let tokenBase: Token
    var connect: HappyEyeballs?
    var socket: StreamSocket?
    var parser = ResponseParser()
    var written = 0
    var inFlight = false

    init(index: Int) {
        self.index = index
        tokenBase = Token(UInt64(index) * Client.tokensPerClient)
    }
}

final class Load {
    let arguments: HTTPLoadArguments
    let poller: any Poller
    let timers = Timers()
    let request: [UInt8]
    var addresses: [SocketAddress] = []
    var clients: [Client] = []
    var issued = 0, ok = 0, failed = 0, reconnects = 0
    /// Whether any connection was made (a failure before that is the run's).
    var connectedOnce = false
    var startedAt = Deadline.now
    let deadlineToken: Token
    let backendName: String

    init(_ arguments: HTTPLoadArguments, poller: any Poller, backendName: String) {
        self.arguments = arguments
        self.backendName = backendName
        self.poller = poller
        request = Array("GET \(arguments.path) HTTP/1.1\r\nHost: \(arguments.hostHeader)\r\nUser-Agent: readiness-http-load\r\n\r\n".utf8)
        deadlineToken = Token(UInt64(arguments.connections) * Client.tokensPerClient)
    }

    var completed: Int { ok + failed }
    var done: Bool { completed >= arguments.requests }

    func run() throws {
        let events = EventBuffer(capacity: 256)
        // 1. Resolve off the loop thread: the loop waits for the waker's event.
        let resolution = Resolution(host: arguments.host, port: arguments.port, waker: poller.waker)
        timers.schedule(after: arguments.timeout, token: deadlineToken)
        while addresses.isEmpty {
            for answer in resolution.takeAnswers() {
                if case .success(let found) = answer.result { addresses += found }
            }
            if addresses.isEmpty && resolution.isComplete { throw RunFailure("cannot resolve \(arguments.host)") }
            if addresses.isEmpty { try poller.wait(into: events, timeout: timers.timeout()) }
            if timers.popDue() != nil { throw RunFailure("resolution timed out") }
        }
        resolution.cancel()   // the other family's answer, if still to come, is not needed
        // 2. Connect every client, all in this loop.
        startedAt = .now
        for index in 0..<arguments.connections {
            let client = Client(index: index)
            clients.append(client)
            try startConnect(client)
        }
        // 3. The loop: events, then timers.
        while !done {
            try poller.wait(into: events, timeout: timers.timeout())
            for event in events where !event.isWakeup {
                let index = Int(event.token.rawValue / Client.tokensPerClient)
                guard index < clients.count else { continue }
                let client = clients[index]
                if let connect = client.connect {
                    if try !connected(client, connect.handle(event)) { try startConnect(client) }
                } else if client.socket != nil {
                    try service(client)
                }
            }
            let now = Deadline.now
            while let token = timers.popDue(now: now) {
                if token == deadlineToken { throw RunFailure("timed out after \(completed) responses") }
                let index = Int(token.rawValue / Client.tokensPerClient)
                if index < clients.count, let connect = clients[index].connect, connect.owns(token),
                   try !connected(clients[index], connect.handleTimer(token, now: now)) {
                    try startConnect(clients[index])
                }
            }
        }
        let seconds = Double((Deadline.now - startedAt).attoseconds) / 1e18
        let rate = Int((Double(completed) / seconds).rounded())
        print("requests \(completed) ok \(ok) failed \(failed) reconnects \(reconnects) "
              + "seconds \(Double(Int(seconds * 1000)) / 1000) requests-per-second \(rate) "
              + "connections \(arguments.connections) backend \(backendName)")
        for client in clients { client.socket?.close() }
    }

    func startConnect(_ client: Client) throws {
        var options = HappyEyeballs.Options()
        options.attemptTimeout = .seconds(5)
        options.maximumAttempts = Int(Client.tokensPerClient) - 1
        // A loop, not a recursion: each failed reconnect is one failed request and the next try.
        while true {
            let connect = HappyEyeballs(addresses: addresses, poller: poller, timers: timers,
                                        tokenBase: client.tokenBase, options: options)
            client.connect = connect
            if try connected(client, connect.start()) { return }
        }
    }

    /// False when the connect failed and another should start now.
    @discardableResult
    func connected(_ client: Client, _ progress: HappyEyeballs.Progress) throws -> Bool {
        switch progress {
        case .inProgress:
            return true
        case .connected(let handed):
            client.connect = nil
            connectedOnce = true
            let socket = StreamSocket(handed)
            try socket.setNoDelay(true)
            try socket.register(on: poller, token: client.tokenBase, interest: .readable)
            client.socket = socket
            client.parser.reset()
            do { try sendNext(client) } catch let error as SocketError {
                // The server reset the new connection before the request went: as in `service`.
                print("client \(client.index): \(error)")
                try reconnect(client, lostRequest: client.inFlight)
            }
            return true
        case .failed(let error):
            client.connect = nil
            // No server at all (no connection ever made) ends the run; a reconnect that fails (a
            // server resetting connections under load) is a failed request, as in the async client,
            // and the client tries again while requests are left.
            guard connectedOnce else { throw error }
            print("client \(client.index): \(error)")
            issued += 1
            failed += 1
            return issued >= arguments.requests
        case .unresolved(let error):
            throw error
        }
    }

    /// Sends the next request if any is left (requests are counted when sent).
    func sendNext(_ client: Client) throws {
        guard issued < arguments.requests, let socket = client.socket else { return }
        issued += 1
        client.inFlight = true
        client.written = 0
        try flush(client, socket)
    }

    func flush(_ client: Client, _ socket: StreamSocket) throws {
        while client.written < request.count {
            switch try socket.write(request, from: client.written) {
            case .transferred(let n): client.written += n
            case .wouldBlock, .endOfStream:
                try socket.reregister(token: client.tokenBase, interest: .both)
                return
            }
        }
    }

    func service(_ client: Client) throws {
        guard let socket = client.socket else { return }
        do {
            if client.written < request.count {
                try flush(client, socket)
                if client.written == request.count { try socket.reregister(token: client.tokenBase, interest: .readable) }
            }
            while true {
                let outcome = try socket.read(into: &client.parser.buffer, maximum: client.parser.room)
                switch outcome {
                case .wouldBlock:
                    return
                case .endOfStream:
                    try reconnect(client, lostRequest: client.inFlight)
                    return
                case .transferred:
                    break   // appended to the parser's buffer
                }
                parse: while client.inFlight {
                    switch client.parser.next() {
                    case .needMore:
                        break parse
                    case .malformed:
                        failed += 1
                        client.inFlight = false
                        try reconnect(client, lostRequest: false)
                        return
                    case .complete(let status, let close):
                        if status == 200 { ok += 1 } else { failed += 1 }
                        client.inFlight = false
                        if close {
                            try reconnect(client, lostRequest: false)
                            return
                        }
                        try sendNext(client)
                    }
                }
            }
        } catch let error as SocketError {
            print("client \(client.index): \(error)")
            try reconnect(client, lostRequest: client.inFlight)
        }
    }

    /// The server closed (keep-alive limit, or an error): connect again for what is left.
    func reconnect(_ client: Client, lostRequest: Bool) throws {
        client.socket?.close()
        client.socket = nil
        if lostRequest {
            // Sent but unanswered: a request a keep-alive server may drop when it closes; send it again.
            issued -= 1
            client.inFlight = false
        }
        guard issued < arguments.requests else { return }
        reconnects += 1
        try startConnect(client)
    }
}

do {
    ignoreBrokenPipes()
    let arguments = try HTTPLoadArguments(CommandLine.arguments)
    let backend = try arguments.backend ?? Backend.default()
    let poller = try backend.makePoller()
    defer { try? poller.close() }
    try Load(arguments, poller: poller, backendName: backend.name).run()
} catch {
    exitFailing("readiness-http-load", error, usage: HTTPLoadArguments.usage)
}
