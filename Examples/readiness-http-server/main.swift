// readiness-http-server: an HTTP/1.1 server on the safe async API only (no Unsafe, no Glibc, no
// Dispatch), on any backend.
//
//   readiness-http-server --port 8080 [--host 127.0.0.1] [--backend epoll] [--loops N] [--grace SECONDS]
//
// - One loop per core by default (`--loops`), every loop accepting on its own SO_REUSEPORT listener,
//   each connection's task on its loop (`EventLoopGroup.serve`).
// - HTTP/1.1 keep-alive, pipelining (every complete request in a read is answered, the answers in one
//   write), `Connection: close`, HTTP/1.0 (closes unless `Connection: keep-alive`), request bodies by
//   Content-Length, a limit on the request head (8 KiB: 431, then close), 400 on a malformed head, 501
//   on a chunked request body.
// - Routes: `/` answers "Hello, world!"; `/sleep?ms=N` answers after N ms (at most 60 s): a request
//   in flight for the shutdown test.
// - Prints `listening on HOST:PORT backend NAME loops N` once it accepts. SIGTERM or SIGINT: stops
//   accepting, closes idle keep-alive connections, lets requests in flight be answered (then closes
//   their connections) within the grace period (10 s), and exits 0; a second signal exits at once.
//   (Its output is a file or a pipe for a script: Swift's print buffers it; `stdbuf -oL` makes each
//   line appear when printed.)
import ExampleSupport
import Readiness
import Synchronization

/// The connections, for the drain: which are between requests (closed at once when the drain starts)
/// and which have a request in flight (closed after its answer).
final class Connections: Sendable {
    private struct State {
        var sockets: [Int: (socket: AsyncSocket, busy: Bool)] = [:]
        var next = 0
        var draining = false
    }
    private let state = Mutex(State())

    /// Registers a connection; nil when the drain has begun (the connection is closed at once).
    func add(_ socket: AsyncSocket) -> Int? {
        state.withLock { s in
            if s.draining { return nil }
            s.next += 1
            s.sockets[s.next] = (socket, false)
            return s.next
        }
    }

    func remove(_ id: Int) { _ = state.withLock { $0.sockets.removeValue(forKey: id) } }

    /// Marks a connection busy (a request arrived) or idle; returns whether the drain has begun.
    func setBusy(_ id: Int, _ busy: Bool) -> Bool {
        state.withLock { s in
            s.sockets[id]?.busy = busy
            return s.draining
        }
    }

    /// Begins the drain: the idle connections, to be closed now.
    func drain() -> [AsyncSocket] {
        state.withLock { s in
            s.draining = true
            return s.sockets.values.filter { !$0.busy }.map(\.socket)
        }
    }
}

/// One parsed request head.
struct Request {
    var method = "", target = "", version = ""
    var keepAlive = true
    var contentLength = 0
    var chunked = false
}

enum ParseResult {
    case request(Request, consumed: Int)
    case incomplete
    case failed(status: String)
}

let headLimit = 8 * 1024

/// Parses the request at the start of `bytes` (its head and its body).
func parse(_ bytes: ArraySlice<UInt8>) -> ParseResult {
    // The head ends at the first CRLF CRLF.
    var end: Int?
    var i = bytes.startIndex
    while i + 3 < bytes.endIndex {
        if bytes[i] == 13, bytes[i + 1] == 10, bytes[i + 2] == 13, bytes[i + 3] == 10 { end = i; break }
        i += 1
    }
    guard let end else { return bytes.count > headLimit ? .failed(status: "431 Request Header Fields Too Large") : .incomplete }
    if end - bytes.startIndex > headLimit { return .failed(status: "431 Request Header Fields Too Large") }
    guard let head = String(validating: bytes[bytes.startIndex..<end], as: UTF8.self) else { return .failed(status: "400 Bad Request") }
    var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).makeIterator()
    let requestLine = (lines.next() ?? "").split(separator: " ")
    guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return .failed(status: "400 Bad Request") }
    var request = Request(method: String(requestLine[0]), target: String(requestLine[1]), version: String(requestLine[2]))
    request.keepAlive = request.version == "HTTP/1.1"
    while let line = lines.next() {
        guard let colon = line.firstIndex(of: ":") else { return .failed(status: "400 Bad Request") }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingPrefix(" ").lowercased()
        switch name {
        case "connection":
            if value.contains("close") { request.keepAlive = false }
            if value.contains("keep-alive") { request.keepAlive = true }
        case "content-length":
            guard let length = Int(value), length >= 0, length <= 1 << 20 else { return .failed(status: "400 Bad Request") }
            request.contentLength = length
        case "transfer-encoding":
            request.chunked = true
        default:
            break
        }
    }
    if request.chunked { return .failed(status: "501 Not Implemented") }
    let total = end - bytes.startIndex + 4 + request.contentLength
    guard bytes.count >= total else { return .incomplete }
    return .request(request, consumed: total)
}

func response(_ status: String, _ body: String, keepAlive: Bool) -> [UInt8] {
    var text = "HTTP/1.1 \(status)\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: text/plain\r\n"
    if !keepAlive { text += "Connection: close\r\n" }
    text += "\r\n" + body
    return Array(text.utf8)
}

/// The answer to one request, after the work it asks for.
func answer(_ request: Request, on loop: EventLoop) async -> [UInt8] {
    if request.target.hasPrefix("/sleep?ms="), let ms = Int(request.target.dropFirst("/sleep?ms=".count)) {
        try? await loop.sleep(for: .milliseconds(min(max(ms, 0), 60_000)))
        return response("200 OK", "slept \(ms) ms\n", keepAlive: request.keepAlive)
    }
    if request.target == "/" || request.target.hasPrefix("/?") {
        return response("200 OK", "Hello, world!", keepAlive: request.keepAlive)
    }
    return response("404 Not Found", "not found\n", keepAlive: request.keepAlive)
}

/// Serves one connection until the client closes it, asks to, a request is refused, or the drain.
func serveConnection(_ socket: AsyncSocket, _ connections: Connections) async {
    guard let id = connections.add(socket) else { return }
    defer { connections.remove(id) }
    _ = try? await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
    var pending: [UInt8] = []
    while true {
        guard let bytes = try? await socket.read(upTo: 64 * 1024, timeout: .seconds(60)), !bytes.isEmpty else { return }
        _ = connections.setBusy(id, true)
        pending += bytes
        var out: [UInt8] = []
        var keepGoing = true
        while keepGoing {
            switch parse(pending[...]) {
            case .incomplete:
                keepGoing = false
            case .failed(let status):
                out += response(status, "\(status)\n", keepAlive: false)
                try? await socket.write(out, timeout: .seconds(10))
                return
            case .request(let request, let consumed):
                pending.removeFirst(consumed)
                out += await answer(request, on: socket.loop)
                if !request.keepAlive {
                    try? await socket.write(out, timeout: .seconds(10))
                    return
                }
            }
        }
        if !out.isEmpty {
            guard (try? await socket.write(out, timeout: .seconds(10))) != nil else { return }
        }
        // Between requests: idle. The drain closes idle connections; one that was busy closes now.
        if pending.isEmpty, connections.setBusy(id, false) { return }
    }
}

func run(_ arguments: HTTPServerArguments) async throws {
    let backend = try arguments.backend ?? Backend.default()
    let group = try EventLoopGroup(backend: backend, count: arguments.loops ?? EventLoopGroup.defaultCount)
    let listeners = try await group.listen(on: try SocketAddress(ip: arguments.host, port: arguments.port))
    let connections = Connections()
    let signals = try group.loops[0].signals([.terminate, .interrupt])
    print("listening on \(arguments.host):\(listeners[0].address.port ?? 0) backend \(backend.name) loops \(group.loops.count)")
    let server = Task {
        try await group.serve(listeners) { socket in await serveConnection(socket, connections) }
    }
    var stopping: Task<Void, Never>?
    for await signal in signals {
        if let stopping {
            print("\(signal) again: stopping now")
            stopping.cancel()
            break
        }
        print("\(signal): draining (grace \(arguments.grace) s)")
        for socket in connections.drain() { await socket.close() }   // idle keep-alive connections
        stopping = Task { await group.shutdown(gracePeriod: .seconds(arguments.grace)) }
    }
    await stopping?.value
    signals.finish()
    _ = try? await server.value
    print("stopped")
}

do {
    try await run(try HTTPServerArguments(CommandLine.arguments))
} catch {
    print("readiness-http-server: \(error)")
    fatalError("readiness-http-server: \(error)")
}
