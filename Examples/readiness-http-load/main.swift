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
import Readiness

struct Arguments {
    var host = "127.0.0.1"
    var port: UInt16 = 80
    var path = "/"
    var connections = 50
    var requests = 20_000
    var backend: Backend?
    var timeout: Duration = .seconds(60)

    init(_ args: [String]) throws(UsageError) {
        var rest = args.dropFirst().makeIterator()
        while let flag = rest.next() {
            guard let value = rest.next() else { throw UsageError("\(flag) needs a value") }
            switch flag {
            case "--url": try parseURL(value)
            case "--connections": connections = try UsageError.number(value, flag)
            case "--requests": requests = try UsageError.number(value, flag)
            case "--timeout": timeout = .seconds(try UsageError.number(value, flag) as Int)
            case "--backend":
                do { backend = try Backend.named(value) } catch { throw UsageError("\(error)") }
            default: throw UsageError("unknown option \(flag)")
            }
        }
        guard connections > 0, requests > 0 else { throw UsageError("--connections and --requests must be positive") }
    }

    mutating func parseURL(_ url: String) throws(UsageError) {
        guard url.hasPrefix("http://") else { throw UsageError("only http:// URLs") }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        do {
            (host, port) = try SocketAddress.splitHostPort(authority.contains(":") ? String(authority) : "\(authority):80")
        } catch {
            throw UsageError("\(error)")
        }
    }
}

struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
    static func number<T: FixedWidthInteger>(_ text: String, _ flag: String) throws(UsageError) -> T {
        guard let value = T(text) else { throw UsageError("\(flag): not a number: \(text)") }
        return value
    }
}

/// Incremental parsing of one response at a time, in a buffer reused for the connection's life.
struct ResponseParser {
    enum Outcome: Equatable { case needMore, complete(status: Int, close: Bool), malformed }

    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    var filled = 0
    private var bodyLeft: Int?       // nil while reading the head
    private var status = 0
    private var close = false

    static let crlfcrlf: [UInt8] = Array("\r\n\r\n".utf8)
    static let contentLength: [UInt8] = Array("content-length:".utf8)
    static let connection: [UInt8] = Array("connection:".utf8)
    static let closeToken: [UInt8] = Array("close".utf8)

    /// Consumes what is buffered; returns a complete response (leaving the bytes after it buffered).
    mutating func next() -> Outcome {
        if bodyLeft == nil {
            guard let end = find(Self.crlfcrlf, in: 0..<filled) else {
                return filled == buffer.count ? .malformed : .needMore
            }
            guard let head = parseHead(0..<end) else { return .malformed }
            (status, bodyLeft, close) = head
            consume(end + Self.crlfcrlf.count)
        }
        let take = min(bodyLeft!, filled)
        consume(take)
        bodyLeft! -= take
        if bodyLeft! > 0 { return .needMore }
        bodyLeft = nil
        return .complete(status: status, close: close)
    }

    /// The status code, Content-Length and whether the server will close, from the head's bytes.
    private func parseHead(_ range: Range<Int>) -> (Int, Int, Bool)? {
        let statusStart = "HTTP/1.1 ".utf8.count
        guard range.count >= statusStart + 3 else { return nil }
        var status = 0
        for index in statusStart..<(statusStart + 3) {
            let digit = Int(buffer[index]) - Int(UInt8(ascii: "0"))
            guard (0...9).contains(digit) else { return nil }
            status = status * 10 + digit
        }
        var length: Int?
        var close = false
        var lineStart = range.lowerBound
        while lineStart < range.upperBound {
            let lineEnd = find(Self.crlfcrlf[0..<2], in: lineStart..<range.upperBound) ?? range.upperBound
            if hasPrefix(Self.contentLength, at: lineStart, end: lineEnd) {
                var value = 0
                for index in (lineStart + Self.contentLength.count)..<lineEnd {
                    let byte = buffer[index]
                    if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") { value = value * 10 + Int(byte - UInt8(ascii: "0")) }
                }
                length = value
            } else if hasPrefix(Self.connection, at: lineStart, end: lineEnd) {
                close = find(Self.closeToken[...], in: lineStart..<lineEnd, caseInsensitive: true) != nil
            }
            lineStart = lineEnd + 2
        }
        guard let length else { return nil }   // chunked or close-delimited: not supported here
        return (status, length, close)
    }

    private func hasPrefix(_ prefix: [UInt8], at start: Int, end: Int) -> Bool {
        guard end - start >= prefix.count else { return false }
        for (offset, byte) in prefix.enumerated() where lowercased(buffer[start + offset]) != byte { return false }
        return true
    }

    private func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }

    private func find(_ needle: some Collection<UInt8>, in range: Range<Int>, caseInsensitive: Bool = false) -> Int? {
        let count = needle.count
        guard range.count >= count else { return nil }
        var index = range.lowerBound
        while index + count <= range.upperBound {
            var match = true
            var offset = 0
            for byte in needle {
                let have = caseInsensitive ? lowercased(buffer[index + offset]) : buffer[index + offset]
                if have != byte { match = false; break }
                offset += 1
            }
            if match { return index }
            index += 1
        }
        return nil
    }

    /// Drops `count` bytes from the front (moving the rest; no allocation).
    private mutating func consume(_ count: Int) {
        guard count > 0 else { return }
        let remaining = filled - count
        if remaining > 0 {
            buffer.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + count, byteCount: remaining)
            }
        }
        filled = remaining
    }
}

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
    let arguments: Arguments
    let poller: any Poller
    let timers = Timers()
    let request: [UInt8]
    var addresses: [SocketAddress] = []
    var clients: [Client] = []
    var issued = 0, ok = 0, failed = 0, reconnects = 0
    var startedAt: Int64 = 0
    let deadlineToken: Token
    let backendName: String

    init(_ arguments: Arguments, poller: any Poller, backendName: String) {
        self.arguments = arguments
        self.backendName = backendName
        self.poller = poller
        request = Array("GET \(arguments.path) HTTP/1.1\r\nHost: \(arguments.host)\r\nUser-Agent: readiness-http-load\r\n\r\n".utf8)
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
            if addresses.isEmpty && resolution.isComplete { throw UsageError("cannot resolve \(arguments.host)") }
            if addresses.isEmpty { try poller.wait(into: events, timeout: timers.timeout()) }
            if timers.popDue() != nil { throw UsageError("resolution timed out") }
        }
        resolution.cancel()   // the other family's answer, if still to come, is not needed
        // 2. Connect every client, all in this loop.
        startedAt = MonotonicClock.nowNanoseconds
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
                    try connected(client, connect.handle(event))
                } else if client.socket != nil {
                    try service(client)
                }
            }
            let now = MonotonicClock.nowNanoseconds
            while let token = timers.popDue(now: now) {
                if token == deadlineToken { throw UsageError("timed out after \(completed) responses") }
                let index = Int(token.rawValue / Client.tokensPerClient)
                if index < clients.count, let connect = clients[index].connect, connect.owns(token) {
                    try connected(clients[index], connect.handleTimer(token, now: now))
                }
            }
        }
        let seconds = Double(MonotonicClock.nowNanoseconds - startedAt) / 1e9
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
        let connect = HappyEyeballs(addresses: addresses, poller: poller, timers: timers,
                                    tokenBase: client.tokenBase, options: options)
        client.connect = connect
        try connected(client, connect.start())
    }

    func connected(_ client: Client, _ progress: HappyEyeballs.Progress) throws {
        switch progress {
        case .inProgress:
            return
        case .connected(let handed):
            client.connect = nil
            let socket = StreamSocket(handed)
            try socket.setNoDelay(true)
            try socket.register(on: poller, token: client.tokenBase, interest: .readable)
            client.socket = socket
            client.parser.filled = 0
            try sendNext(client)
        case .failed(let error):
            throw error
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
                let filled = client.parser.filled
                let outcome = try client.parser.buffer.withUnsafeMutableBytes { raw throws(SocketError) -> IOResult in
                    try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                }
                switch outcome {
                case .wouldBlock:
                    return
                case .endOfStream:
                    try reconnect(client, lostRequest: client.inFlight)
                    return
                case .transferred(let n):
                    client.parser.filled += n
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
    let arguments = try Arguments(CommandLine.arguments)
    let backend = try arguments.backend ?? Backend.default()
    let poller = try backend.makePoller()
    defer { try? poller.close() }
    try Load(arguments, poller: poller, backendName: backend.name).run()
} catch {
    fatalError("readiness-http-load: \(error)")   // a non-zero exit without importing Glibc
}
