// readiness-async-http-load: readiness-http-load in async form, on the public API only (no Glibc).
//
//   readiness-async-http-load --url http://127.0.0.1:8080/index.html [--connections 50] [--requests 20000]
//                             [--backend epoll] [--timeout 60]
//
// Like `ab -k`: N keep-alive connections, each one a task preferring one EventLoop, sending the next
// GET as soon as the previous response is complete, until the total is reached; the counts live in an
// actor isolated to the same loop. Connecting is EventLoop.connect(host:port:) (resolution off the
// loop, Happy Eyeballs steps, SO_ERROR); a connection the server closes is connected again. Prints the
// same summary line as readiness-http-load.
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

/// The counts, isolated to the loop (its executor is the loop: no hop from the client tasks).
actor Tally {
    let loop: EventLoop
    let requests: Int
    var issued = 0, ok = 0, failed = 0, reconnects = 0

    init(loop: EventLoop, requests: Int) {
        self.loop = loop
        self.requests = requests
    }

    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// Takes the next request to send; false when all are taken.
    func take() -> Bool {
        guard issued < requests else { return false }
        issued += 1
        return true
    }
    /// A request sent but not answered (the server closed): it will be sent again.
    func giveBack() { issued -= 1 }
    func record(status: Int) { if status == 200 { ok += 1 } else { failed += 1 } }
    func recordMalformed() { failed += 1 }
    func reconnected() { reconnects += 1 }
    var summary: (ok: Int, failed: Int, reconnects: Int) { (ok, failed, reconnects) }
}

/// One keep-alive connection's task.
func runClient(index: Int, loop: EventLoop, tally: Tally, arguments: Arguments, request: [UInt8]) async throws(LoopError) {
    var parser = ResponseParser()
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 1)
    defer { chunk.deallocate() }
    var socket: AsyncSocket?
    var connections = 0
    while await tally.take() {
        do {
            if socket == nil {
                let connected = try await loop.connect(host: arguments.host, port: arguments.port, timeout: .seconds(5))
                try await connected.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
                socket = connected
                parser.filled = 0
                connections += 1
                if connections > 1 { await tally.reconnected() }
            }
            guard let current = socket else { continue }
            try await current.write(request, timeout: arguments.timeout)
            response: while true {
                switch parser.next() {
                case .complete(let status, let close):
                    await tally.record(status: status)
                    if close {
                        await current.close()
                        socket = nil
                    }
                    break response
                case .malformed:
                    await tally.recordMalformed()
                    await current.close()
                    socket = nil
                    break response
                case .needMore:
                    let room = parser.buffer.count - parser.filled
                    let n = try await current.read(into: UnsafeMutableRawBufferPointer(rebasing: chunk[..<room]),
                                                   timeout: arguments.timeout)
                    if n == 0 {
                        // The server closed with the request unanswered (a keep-alive limit): again.
                        await tally.giveBack()
                        await current.close()
                        socket = nil
                        break response
                    }
                    let filled = parser.filled
                    parser.buffer.withUnsafeMutableBytes { raw in
                        raw.baseAddress!.advanced(by: filled).copyMemory(from: chunk.baseAddress!, byteCount: n)
                    }
                    parser.filled += n
                }
            }
        } catch {
            guard case .socket(let socketError) = error else { throw error }
            print("client \(index): \(socketError)")
            await tally.giveBack()
            await socket?.close()
            socket = nil
        }
    }
    await socket?.close()
}

func load(_ arguments: Arguments) async throws {
    let backend = try arguments.backend ?? Backend.default()
    let loop = try EventLoop(backend: backend)
    let tally = Tally(loop: loop, requests: arguments.requests)
    let request = Array("GET \(arguments.path) HTTP/1.1\r\nHost: \(arguments.host)\r\nUser-Agent: readiness-async-http-load\r\n\r\n".utf8)
    let started = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<arguments.connections {
            group.addTask(executorPreference: loop) {
                try await runClient(index: index, loop: loop, tally: tally, arguments: arguments, request: request)
            }
        }
        try await group.waitForAll()
    }
    let elapsed = ContinuousClock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let (ok, failed, reconnects) = await tally.summary
    let completed = ok + failed
    let rate = Int((Double(completed) / seconds).rounded())
    await loop.shutdown()
    print("requests \(completed) ok \(ok) failed \(failed) reconnects \(reconnects) "
          + "seconds \(Double(Int(seconds * 1000)) / 1000) requests-per-second \(rate) "
          + "connections \(arguments.connections) backend \(backend.name)")
}

do {
    try await load(try Arguments(CommandLine.arguments))
} catch {
    fatalError("readiness-async-http-load: \(error)")   // a non-zero exit without importing Glibc
}
