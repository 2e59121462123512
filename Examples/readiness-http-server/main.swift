// readiness-http-server: an HTTP/1.1 server on the safe async API only (no Unsafe, no Glibc, no
// Dispatch), on any backend.
//
//   readiness-http-server --port 8080 [--host 127.0.0.1] [--backend epoll] [--loops N] [--grace SECONDS]
//                         [--request-timeout SECONDS]
//
// - One loop per core by default (`--loops`), every loop accepting on its own SO_REUSEPORT listener,
//   each connection's task on its loop (`EventLoopGroup.serve`).
// - HTTP/1.1 keep-alive, pipelining (every complete request in a read is answered, the answers in one
//   write), `Connection: close`, HTTP/1.0 (closes unless `Connection: keep-alive`), request bodies by
//   Content-Length (up to 1 MiB, skipped as they arrive: never held; the answer once all of it came), a
//   limit on the request head (8 KiB: 431, a longer request line 414, then close), 400 on a malformed
//   head or an HTTP/1.1 request without exactly one Host whose bytes a `uri-host [":" port]` can hold
//   (Go's check: letters, digits, `!$%&'()*+,-.:;=[]_~`; so `::1` and `a:b` pass), 501 on a
//   chunked request body; header values may carry obs-text (bytes 0x80-0xFF, RFC 9110 section 5.5),
//   absolute-form targets (their path served). A request must arrive whole within 10 s of its first byte
//   (`--request-timeout`): a client that sends a byte now and then (slowloris) gets 408 and is closed;
//   an idle keep-alive connection is closed after 60 s.
// - Routes: `/` answers "Hello, world!"; `/sleep?ms=N` answers after N ms (at most 60 s): a request
//   in flight for the shutdown test.
// - Prints `listening on ADDRESS backend NAME loops N` once it accepts (ADDRESS as a URL names it:
//   `127.0.0.1:8080`, `[::1]:8080`). SIGTERM or SIGINT: stops
//   accepting, ends idle keep-alive connections, lets requests in flight be answered (then closes
//   their connections) within the grace period (10 s), and exits 0; a second signal stops at once.
//   A connection that has sent nothing yet is left its first request for 5 s (half the grace period
//   at most; Go's closeIdleConns): a client does not retry a request on a new connection closed under it.
//   The answers to pipelined requests before one that waits (`/sleep`) are written before the wait.
// - Requests are parsed strictly where leniency lets one request mean two things (RFC 9112): a space
//   before a header's colon, two different Content-Lengths, any Transfer-Encoding, a lone CR or LF or
//   another control byte in the head are refused (empty lines before a request line are ignored); only
//   GET and HEAD are served (405 with Allow otherwise, answered as soon as the head is in: a body
//   is not waited for). Error answers close gently (no reset over the answer); so does a last answer
//   (`Connection: close`) with more requests unread behind it. During the drain answers say
//   `Connection: close`. A failed start (a bad argument, a port in use) exits with status 2 or 1.
//   (Its output is a file or a pipe for a script: Swift's print buffers it; `stdbuf -oL` makes each
//   line appear when printed. A pipe whose reader is gone ends nothing: SIGPIPE is ignored.)
import ExampleSupport
import Readiness
import Synchronization

/// One connection, as the drain sees it: whether a request is in flight, and whether it is still
/// fresh (no byte received yet: its first request may be on its way). Atomic flags, set and cleared by
/// the connection's task on its loop, read by the drain.
final class Connection: Sendable {
    let socket: AsyncSocket
    let busy = Atomic<Bool>(false)
    let fresh = Atomic<Bool>(true)
    init(_ socket: AsyncSocket) { self.socket = socket }
}

/// The connections, for the drain: which are between requests (their reading side is shut down when
/// the drain starts: the read in progress ends as at the end of the stream, and a request already
/// read is still answered) and which have a request in flight (closed after its answer). The set
/// changes once per connection, in an actor; the per-request state is atomic (no lock per request).
final class Connections: Sendable {
    private actor Registry {
        var all: [ObjectIdentifier: Connection] = [:]
        func add(_ connection: Connection) { all[ObjectIdentifier(connection)] = connection }
        func remove(_ connection: Connection) { all[ObjectIdentifier(connection)] = nil }
        func snapshot() -> [Connection] { Array(all.values) }
    }
    private let registry = Registry()
    let draining = Atomic<Bool>(false)

    func add(_ connection: Connection) async { await registry.add(connection) }
    func remove(_ connection: Connection) async { await registry.remove(connection) }

    /// Begins the drain: the idle connections (a request answered, none in flight), whose reading side
    /// is to be shut down now. A fresh one is left its first request (Go's closeIdleConns leaves a new
    /// connection 5 s: a client retries a request on a kept connection that closed, not on a new one).
    func drain() async -> [AsyncSocket] {
        draining.store(true, ordering: .sequentiallyConsistent)
        return await registry.snapshot().filter {
            !$0.busy.load(ordering: .sequentiallyConsistent) && !$0.fresh.load(ordering: .sequentiallyConsistent)
        }.map(\.socket)
    }

    /// Later in the drain (``freshWait``): every connection without a request in flight, fresh ones
    /// included, to be shut down for reading now.
    func sweep() async -> [AsyncSocket] {
        await registry.snapshot().filter { !$0.busy.load(ordering: .sequentiallyConsistent) }.map(\.socket)
    }

    /// How long the drain leaves a fresh connection its first request (at most half the grace period).
    static let freshWait = Duration.seconds(5)
}

/// One parsed request head.
struct Request {
    var method = "", target = "", version = ""
    var keepAlive = true
    /// An HTTP/1.0 request that asked for keep-alive (its answer says so).
    var keepAliveRequested = false
    var contentLength: Int?
}

enum ParseResult {
    /// A whole head, `consumed` bytes; its body (`body` bytes, never used: only GET and HEAD are
    /// served) follows and is skipped as it arrives, never held. `expectsContinue` when the client
    /// waits for a `100 Continue` before it sends the body (RFC 9110 section 10.1.1).
    case request(Request, consumed: Int, body: Int, expectsContinue: Bool)
    case incomplete
    case failed(status: String)
}

let headLimit = 8 * 1024
let bodyLimit = 1 << 20

// The parser works on the bytes (no String per line or per header): the request line and the field
// names are ASCII; header values may carry obs-text (bytes 0x80-0xFF, RFC 9110 section 5.5), opaque.
let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
let colon = UInt8(ascii: ":"), comma = UInt8(ascii: ","), slash = UInt8(ascii: "/")

// The byte classes below are switches over ranges (a few comparisons per byte), not lookups in a
// string: the parser runs once per request, and its cost is part of every answer's.

/// Whether `byte` may be in a Host header's value: a byte that a `uri-host [":" port]` can hold
/// (RFC 9112 section 3.2; the set Go's net/http checks: letters, digits and `!$%&'()*+,-.:;=[]_~`, so
/// IPv6 literals with a zone id, IPvFuture and a bare `::1` pass).
@inline(__always)
func isHostByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    // ! $ % & ' ( ) * + , - . : ; = [ ] _ ~
    case 0x21, 0x24...0x2E, 0x3A, 0x3B, 0x3D, 0x5B, 0x5D, 0x5F, 0x7E:
        return true
    default:
        return false
    }
}

/// Whether `value` may be a Host header's value (anything else is a 400). Empty is allowed (a request
/// with no authority sends an empty Host).
func isHost(_ value: ArraySlice<UInt8>) -> Bool {
    value.allSatisfy(isHostByte)
}

/// Whether `byte` may be in an RFC 9110 token (a method or a header name: no space, no separator).
@inline(__always)
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    // ! # $ % & ' * + - . ^ _ ` | ~
    case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E...0x60, 0x7C, 0x7E:
        return true
    default:
        return false
    }
}

/// Whether `name` is an RFC 9110 token.
func isToken(_ name: ArraySlice<UInt8>) -> Bool {
    !name.isEmpty && name.allSatisfy(isTokenByte)
}

/// A byte in ASCII lower case.
@inline(__always)
func lowercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}

/// Whether `bytes` are `lowercase` (ASCII bytes in lower case), ignoring the case of `bytes`.
func matches(_ bytes: ArraySlice<UInt8>, _ lowercase: [UInt8]) -> Bool {
    guard bytes.count == lowercase.count else { return false }
    var i = bytes.startIndex
    for expected in lowercase {
        if lowercased(bytes[i]) != expected { return false }
        i += 1
    }
    return true
}

/// The header names and values the parser looks for, in lower case.
let hostName = Array("host".utf8), connectionName = Array("connection".utf8)
let contentLengthName = Array("content-length".utf8), expectName = Array("expect".utf8)
let transferEncodingName = Array("transfer-encoding".utf8)
let closeOption = Array("close".utf8), keepAliveOption = Array("keep-alive".utf8)
let continueExpectation = Array("100-continue".utf8)

/// `bytes` without spaces and tabs at either end.
func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
    var first = bytes.startIndex, last = bytes.endIndex
    while first < last, bytes[first] == space || bytes[first] == tab { first += 1 }
    while last > first, bytes[last - 1] == space || bytes[last - 1] == tab { last -= 1 }
    return bytes[first..<last]
}

/// Whether `line` holds a control byte (below 0x20 or DEL), a tab allowed where `tabs`: a lone CR or
/// LF inside a line is one, and would make a line end for a lenient parser and not for this one (a
/// request smuggled past a front end).
func hasControl(_ line: ArraySlice<UInt8>, tabs: Bool) -> Bool {
    line.contains { byte in (byte < 0x20 && !(tabs && byte == tab)) || byte == 0x7F }
}

/// A Content-Length value: digits only (no sign, no space inside), within `Int`.
func decimal(_ bytes: ArraySlice<UInt8>) -> Int? {
    guard !bytes.isEmpty else { return nil }
    var value = 0
    for byte in bytes {
        guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
        let (times10, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
        guard !o1, !o2 else { return nil }
        value = sum
    }
    return value
}

/// The end of the line that begins at `start` in `head` (the index of its CR, or the head's end: the
/// head holds no empty line, and its last line has no CRLF).
@inline(__always)
func lineEnd(_ head: ArraySlice<UInt8>, from start: Int) -> Int {
    var i = start
    while i + 1 < head.endIndex {
        if head[i] == cr, head[i + 1] == lf { return i }
        i += 1
    }
    return head.endIndex
}

/// Parses the request at the start of `bytes` (its head and its body). Strict where leniency lets a
/// request mean two things to two parsers (RFC 9112 sections 5 and 6.3): a space before a header's
/// colon, Content-Length given twice with different values or not a plain number, and any
/// Transfer-Encoding (this server reads no chunked bodies) are refused. One pass finds the head's end;
/// the lines are then read in place (indices into `bytes`, no array per line or per field).
func parse(_ bytes: ArraySlice<UInt8>) -> ParseResult {
    // Empty lines before a request line are ignored (RFC 9112 section 2.2: a client may send a CRLF
    // after a request's body); they are consumed with the request. The head ends at the first CRLF CRLF.
    var begin = bytes.startIndex
    while begin + 1 < bytes.endIndex, bytes[begin] == cr, bytes[begin + 1] == lf { begin += 2 }
    var end: Int?
    var firstLineEnd: Int?
    var i = begin
    while i + 1 < bytes.endIndex {
        // Past the limit (and the line ends that may close it: a CR for the request line, CRLF CR
        // for the head) the size decides, below, with the same thresholds: what lies beyond is not
        // looked at, so a lone LF there cannot make the answer depend on whether it came in this read
        // or a later one (review, twice).
        if i - begin > (firstLineEnd == nil ? headLimit : headLimit + 2) { break }
        let next = bytes[i + 1]
        // A lone LF ends a line for a lenient parser and not for this one: refused at once (RFC 9112
        // section 2.2), not left to wait for a CRLF CRLF that never comes.
        if next == lf {
            guard bytes[i] == cr else { return .failed(status: "400 Bad Request") }
            if firstLineEnd == nil { firstLineEnd = i }
            if i + 3 < bytes.endIndex, bytes[i + 2] == cr, bytes[i + 3] == lf { end = i; break }
        }
        i += 1
    }
    if begin < bytes.endIndex, bytes[begin] == lf { return .failed(status: "400 Bad Request") }
    // A request line longer than the head's limit: 414 (RFC 9112 section 3); a longer head: 431. Both
    // are measured from the request line (empty lines before it are not part of the head) and without
    // the line ends that close them, of which part may be here already (a CR, or CRLF CR): the answer
    // never depends on where the client's segments fell (review: a head of 8,190 bytes was answered
    // when sent whole and refused with 431 when its last byte came in a segment of its own).
    if let firstLineEnd {
        if firstLineEnd - begin > headLimit { return .failed(status: "414 URI Too Long") }
    } else if bytes.endIndex - begin > headLimit + 1 {
        return .failed(status: "414 URI Too Long")
    }
    guard let end else { return bytes.endIndex - begin > headLimit + 3 ? .failed(status: "431 Request Header Fields Too Large") : .incomplete }
    if end - begin > headLimit { return .failed(status: "431 Request Header Fields Too Large") }
    let head = bytes[begin..<end]
    let firstLine = head[begin..<lineEnd(head, from: begin)]
    // The request line is ASCII (RFC 9112 section 3); header values may carry obs-text (0x80-0xFF,
    // RFC 9110 section 5.5: opaque bytes, as Go and nginx take them). It is three parts, split at
    // exactly two single spaces: method, target, version.
    guard !hasControl(firstLine, tabs: false), !firstLine.contains(where: { $0 >= 0x80 }),
          let methodEnd = firstLine.firstIndex(of: space),
          let targetEnd = firstLine[(methodEnd + 1)...].firstIndex(of: space),
          !firstLine[(targetEnd + 1)...].contains(space) else { return .failed(status: "400 Bad Request") }
    let method = firstLine[..<methodEnd]
    var target = firstLine[(methodEnd + 1)..<targetEnd]
    let version = firstLine[(targetEnd + 1)...]
    guard isToken(method), !target.isEmpty else { return .failed(status: "400 Bad Request") }
    // HTTP/<digit>.<digit> (RFC 9112 section 2.3): a later 1.x is served as 1.1 (RFC 9110 section 2.5),
    // another major version is 505; anything else is no HTTP version.
    let digit = { (byte: UInt8) in byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    let v = version.startIndex
    guard version.count == 8, version[v] == UInt8(ascii: "H"), version[v + 1] == UInt8(ascii: "T"),
          version[v + 2] == UInt8(ascii: "T"), version[v + 3] == UInt8(ascii: "P"), version[v + 4] == slash,
          digit(version[v + 5]), version[v + 6] == UInt8(ascii: "."), digit(version[v + 7]) else { return .failed(status: "400 Bad Request") }
    guard version[v + 5] == UInt8(ascii: "1") else { return .failed(status: "505 HTTP Version Not Supported") }
    let http10 = version[v + 7] == UInt8(ascii: "0")
    // The target: origin-form (/path), absolute-form (http://host/path, which a server must accept:
    // RFC 9112 section 3.2.2; its path is served), asterisk-form for OPTIONS or authority-form for
    // CONNECT (both refused below: 405, as for any method not served).
    if target.first != slash, !method.elementsEqual("CONNECT".utf8) {
        let text = String(decoding: target, as: UTF8.self).lowercased()
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            // The authority ends at the first '/', '?' or '#' (RFC 3986); it may not be empty.
            let afterScheme = target.dropFirst(text.hasPrefix("http://") ? 7 : 8)
            let rest = afterScheme.drop { $0 != slash && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }
            guard rest.startIndex > afterScheme.startIndex else { return .failed(status: "400 Bad Request") }
            target = rest.first == slash ? rest : ArraySlice("/".utf8) + rest
        } else if !(target.elementsEqual("*".utf8) && method.elementsEqual("OPTIONS".utf8)) {
            return .failed(status: "400 Bad Request")
        }
    }
    // Only GET and HEAD are served: anything else is answered at once, its body not waited for (a
    // client sending `Expect: 100-continue` learns before it sends the body).
    let isGet = method.elementsEqual("GET".utf8)
    guard isGet || method.elementsEqual("HEAD".utf8) else { return .failed(status: "405 Method Not Allowed") }
    var request = Request(method: isGet ? "GET" : "HEAD", target: String(decoding: target, as: UTF8.self),
                          version: http10 ? "HTTP/1.0" : "HTTP/1.1")
    var close = false, keepAlive = false, hosts = 0, expectsContinue = false, transferEncoding = false
    var lineStart = firstLine.endIndex + 2
    while lineStart < head.endIndex {
        let line = head[lineStart..<lineEnd(head, from: lineStart)]
        lineStart = line.endIndex + 2
        guard !hasControl(line, tabs: true), let colonIndex = line.firstIndex(of: colon), isToken(line[..<colonIndex]) else { return .failed(status: "400 Bad Request") }
        let name = line[..<colonIndex]
        let value = trimmed(line[(colonIndex + 1)...])
        // The name's length picks the one name it can be.
        switch name.count {
        case 4 where matches(name, hostName):
            // uri-host [":" port] (RFC 9112 section 3.2: an invalid value is a 400).
            guard isHost(value) else { return .failed(status: "400 Bad Request") }
            hosts += 1
        case 10 where matches(name, connectionName):
            for option in value.split(separator: comma, omittingEmptySubsequences: false) {
                let option = trimmed(option)
                if matches(option, closeOption) { close = true } else if matches(option, keepAliveOption) { keepAlive = true }
            }
        case 14 where matches(name, contentLengthName):
            guard let length = decimal(value) else { return .failed(status: "400 Bad Request") }
            if let earlier = request.contentLength, earlier != length { return .failed(status: "400 Bad Request") }
            guard length <= bodyLimit else { return .failed(status: "413 Content Too Large") }
            request.contentLength = length
        case 6 where matches(name, expectName):
            expectsContinue = matches(value, continueExpectation)
        case 17 where matches(name, transferEncodingName):
            // 501 once the head is read: a malformed field after it is still a 400 (Go's
            // TestServerValidatesHeaders: a bad Content-Length is 400 whatever the Transfer-Encoding).
            transferEncoding = true
        default:
            break
        }
    }
    if transferEncoding { return .failed(status: "501 Not Implemented") }
    // An HTTP/1.1 request names its host exactly once (RFC 9112 section 3.2).
    if !http10, hosts != 1 { return .failed(status: "400 Bad Request") }
    if hosts > 1 { return .failed(status: "400 Bad Request") }
    // close wins over keep-alive; HTTP/1.1 keeps the connection unless told, HTTP/1.0 closes unless asked.
    if close {
        request.keepAlive = false
    } else if http10 {
        request.keepAlive = keepAlive
        request.keepAliveRequested = keepAlive
    }
    // A 100 Continue only to an HTTP/1.1 client (RFC 9110 section 10.1.1: never to 1.0).
    return .request(request, consumed: end - bytes.startIndex + 4, body: request.contentLength ?? 0,
                    expectsContinue: expectsContinue && !http10)
}

/// A response: `Connection: close` when the connection ends after it, `Connection: keep-alive` for an
/// HTTP/1.0 client that asked to keep it; the body left out for HEAD (its length still given).
func response(_ status: String, _ body: String, keepAlive: Bool, keepAliveRequested: Bool = false, head: Bool = false) -> [UInt8] {
    var text = "HTTP/1.1 \(status)\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: text/plain\r\n"
    if status.hasPrefix("405") { text += "Allow: GET, HEAD\r\n" }
    if !keepAlive { text += "Connection: close\r\n" } else if keepAliveRequested { text += "Connection: keep-alive\r\n" }
    text += "\r\n"
    if !head { text += body }
    return Array(text.utf8)
}

/// The answer most requests get (`GET /` on a kept connection), made once.
let helloBody = "Hello, world!"
let helloKeptAlive = response("200 OK", helloBody, keepAlive: true)

/// The answer to one request, after the work it asks for.
/// The answer to `request`; a drain that began while it was made (a slow handler) turns its
/// `keepAlive` off, so that the answer says `Connection: close` (RFC 9112 section 9.6; Go's
/// net/http decides when it writes the head, after the handler).
/// Whether `answer` suspends for `request` (the `/sleep` route).
func answerWaits(_ request: Request) -> Bool { request.target.hasPrefix("/sleep?ms=") }

nonisolated(nonsending) func answer(_ request: inout Request, on loop: EventLoop, connections: Connections) async -> [UInt8] {
    let head = request.method == "HEAD"
    if request.target.hasPrefix("/sleep?ms="), let ms = Int(request.target.dropFirst("/sleep?ms=".count)) {
        try? await loop.sleep(for: .milliseconds(min(max(ms, 0), 60_000)))
        if connections.draining.load(ordering: .sequentiallyConsistent) { request.keepAlive = false }
        return response("200 OK", "slept \(ms) ms\n", keepAlive: request.keepAlive, keepAliveRequested: request.keepAliveRequested, head: head)
    }
    func reply(_ status: String, _ body: String) -> [UInt8] {
        response(status, body, keepAlive: request.keepAlive, keepAliveRequested: request.keepAliveRequested, head: head)
    }
    if request.target == "/" || request.target.hasPrefix("/?") {
        if !head, request.keepAlive, !request.keepAliveRequested { return helloKeptAlive }
        return reply("200 OK", helloBody)
    }
    return reply("404 Not Found", "not found\n")
}

/// Sends an error answer and closes gently: the writing side shut down, what the client still sends
/// read and dropped (for a second at most in all, and 1 MiB), so that the answer is not lost to a reset.
nonisolated(nonsending) func refuse(_ socket: AsyncSocket, _ out: [UInt8]) async {
    guard (try? await socket.write(out, timeout: .seconds(10))) != nil else { return }
    try? await socket.shutdown(.write)
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(1)
    var drained = 0
    while drained < 1 << 20, clock.now < deadline,
          let bytes = try? await socket.read(upTo: 64 * 1024, timeout: deadline - clock.now), !bytes.isEmpty {
        drained += bytes.count
    }
}

/// How long a kept connection may stay idle between requests.
let idleTimeout = Duration.seconds(60)

/// Serves one connection until the client closes it, asks to, a request is refused, or the drain.
/// A request must be whole within `requestTimeout` of its first byte: the deadline holds across reads,
/// so bytes dribbled in one at a time do not extend it.
nonisolated(nonsending) func serveConnection(_ socket: AsyncSocket, _ connections: Connections, requestTimeout: Duration) async {
    let connection = Connection(socket)
    await connections.add(connection)
    defer { Task { await connections.remove(connection) } }
    // Registered after the drain looked (accepted before the listener closed, this task run later):
    // the drain's sweep may have looked already too, so this connection waits for its first request
    // no longer than the sweep would have let it.
    let lateForDrain = connections.draining.load(ordering: .sequentiallyConsistent)
    _ = try? await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
    var pending: [UInt8] = []
    var start = 0      // the first byte of `pending` not yet parsed (consumed bytes are dropped in bulk)
    var continued = false   // a 100 Continue was sent for the request whose body is awaited
    // A request whose body is still arriving: answered once all of it came. Its bytes are dropped as
    // they arrive (`skipping` left), never held: a connection keeps at most one read and one head.
    var held: Request?
    var skipping = 0
    let clock = ContinuousClock()
    var requestDeadline: ContinuousClock.Instant?   // set while a request has begun and is not whole
    // When an idle connection is closed: 60 s after its last answer (or its start). Bytes that begin no
    // request (the empty lines RFC 9112 lets a client send) do not move it.
    // The clock is read once per turn, after the turn's write (one read of it per request).
    var now = clock.now
    var idleDeadline = now + (lateForDrain ? Connections.freshWait : idleTimeout)
    while true {
        let timeout: Duration
        if let requestDeadline {
            // A request has begun: its own clock, whatever the idle one says.
            let left = requestDeadline - now
            if left <= .zero { return await refuse(socket, response("408 Request Timeout", "408 Request Timeout\n", keepAlive: false)) }
            timeout = left
        } else {
            timeout = idleDeadline - now
            if timeout <= .zero { return }
        }
        let bytes: [UInt8]
        do { bytes = try await socket.read(upTo: 64 * 1024, timeout: timeout) } catch {
            if case .timedOut = error, requestDeadline != nil {
                await refuse(socket, response("408 Request Timeout", "408 Request Timeout\n", keepAlive: false))
            }
            return
        }
        if bytes.isEmpty { return }
        connection.busy.store(true, ordering: .sequentiallyConsistent)
        connection.fresh.store(false, ordering: .relaxed)
        if start == pending.count {
            // Everything before was consumed (the usual case between requests): the read's array
            // becomes the buffer, not a copy of it.
            pending = bytes
        } else {
            if start > 0 { pending.removeFirst(start) }
            pending += bytes
        }
        start = 0
        var out: [UInt8] = []
        var answered = false
        parsing: while true {
            if skipping > 0 {
                let take = Swift.min(skipping, pending.count - start)
                start += take
                skipping -= take
                if skipping > 0 { break parsing }
            }
            var request: Request
            if let waiting = held {
                request = waiting
                held = nil
            } else {
                switch parse(pending[start...]) {
                case .incomplete:
                    break parsing
                case .failed(let status):
                    out += response(status, "\(status)\n", keepAlive: false)
                    await refuse(socket, out)
                    return
                case .request(let parsed, let consumed, let body, let expectsContinue):
                    start += consumed
                    if body > 0 {
                        held = parsed
                        skipping = body
                        // The client waits for leave to send the body: given once per request, after
                        // the answers to the requests before it.
                        if expectsContinue, !continued, pending.count - start < body {
                            out += Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                            continued = true
                        }
                        continue parsing
                    }
                    request = parsed
                }
            }
            do {
                answered = true
                continued = false
                // During the drain the answer says the connection ends with it (RFC 9112 section 9.6).
                if connections.draining.load(ordering: .sequentiallyConsistent) { request.keepAlive = false }
                // The answers before one that waits go out first (Go flushes each as its handler ends):
                // a drain whose grace period ends during the wait would otherwise lose them too.
                if !out.isEmpty, answerWaits(request) {
                    guard (try? await socket.write(out, timeout: .seconds(10))) != nil else { return }
                    out = []
                }
                let reply = await answer(&request, on: socket.loop, connections: connections)
                if out.isEmpty { out = reply } else { out += reply }   // one answer: its bytes shared, not copied
                if !request.keepAlive {
                    // Requests the client sent after this one, unread, would make the close a reset
                    // over the answer: close gently then, as for an error.
                    if start < pending.count { return await refuse(socket, out) }
                    try? await socket.write(out, timeout: .seconds(10))
                    return
                }
            }
        }
        // Empty lines after a request (RFC 9112 section 2.2) begin no request.
        while start + 1 < pending.count, pending[start] == cr, pending[start + 1] == lf { start += 2 }
        if !out.isEmpty {
            guard (try? await socket.write(out, timeout: .seconds(10))) != nil else { return }
        }
        now = clock.now
        if answered { idleDeadline = now + idleTimeout }
        // Part of a request is here: its clock starts with its first byte (this read's, when a request
        // ended in it), and runs across reads.
        // (A body still arriving is part of its request too.)
        if start < pending.count || held != nil {
            if answered || requestDeadline == nil { requestDeadline = now + requestTimeout }
        } else {
            requestDeadline = nil
        }
        // Between requests: idle. During the drain, a connection that was busy ends after its answer.
        if start == pending.count && held == nil {
            // Nothing kept: a large read's storage is not kept by an idle connection.
            if pending.capacity > 16 * 1024 {
                pending = []
                start = 0
            }
            connection.busy.store(false, ordering: .sequentiallyConsistent)
            if connections.draining.load(ordering: .sequentiallyConsistent) { return }
        }
    }
}

func run(_ arguments: HTTPServerArguments) async throws {
    let backend = try arguments.backend ?? Backend.default()
    let group = try EventLoopGroup(backend: backend, count: arguments.loops ?? EventLoopGroup.defaultCount)
    let listeners = try await group.listen(on: try SocketAddress(ip: arguments.host, port: arguments.port))
    let connections = Connections()
    // Signals wait on a loop of their own, which outlives the group's drain: a second signal during
    // the grace period is still seen, whichever loop has finished draining.
    let control = try EventLoop(backend: backend, name: "readiness-http-server-signals")
    let signals = try control.signals([.terminate, .interrupt])
    // The bound address as a URL names it: "[::1]:8080" for IPv6 (review: "::1:8080" before).
    print("listening on \(listeners[0].address) backend \(backend.name) loops \(group.loops.count)")
    let server = Task {
        try await group.serve(listeners) { socket in
            await serveConnection(socket, connections, requestTimeout: .seconds(arguments.requestTimeout))
        }
    }
    // Serving that fails (every listener's accepting failed) ends the wait for a signal too (a
    // drain's end does not: a second signal during it still stops at once).
    Task {
        if case .failure = await server.result { signals.finish() }
    }
    var stopping: Task<Void, Never>?
    for await signal in signals {
        if let stopping {
            print("\(signal) again: stopping now")
            stopping.cancel()
            break
        }
        print("\(signal): draining (grace \(arguments.grace) s)")
        // Stop accepting first, then end the idle connections' reads; those with a request in flight
        // answer it and close; the rest get the grace period.
        for listener in listeners { await listener.close() }
        for socket in await connections.drain() { try? await socket.shutdown(.read) }
        // Then, once fresh connections had the time to send their first request, the rest that wait.
        let freshWait = min(Connections.freshWait, .seconds(arguments.grace) / 2)
        Task {
            try? await control.sleep(for: freshWait)
            for socket in await connections.sweep() { try? await socket.shutdown(.read) }
        }
        stopping = Task {
            await group.shutdown(gracePeriod: .seconds(arguments.grace))
            signals.finish()
        }
    }
    await stopping?.value
    signals.finish()
    let failure: LoopError?
    do { try await server.value; failure = nil } catch { failure = error as? LoopError ?? .shutdown }
    await control.shutdown()
    if let failure, stopping == nil {
        // Not a drain: serving failed on its own (a listener's accepting), and the program says so.
        await group.shutdown()
        throw failure
    }
    print("stopped")
}

do {
    ignoreBrokenPipes()
    try await run(try HTTPServerArguments(CommandLine.arguments))
} catch {
    exitFailing("readiness-http-server", error, usage: HTTPServerArguments.usage)
}
