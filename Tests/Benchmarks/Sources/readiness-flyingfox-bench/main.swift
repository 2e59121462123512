// readiness-flyingfox-bench: FlyingFox's HTTPServer on its own epoll pool beside the same server on
// ReadinessSocketPool (Integrations/FlyingSocks), on every Readiness backend, under wrk on loopback
// (Docs/Integrations.md, "Measured").
//
//   readiness-flyingfox-bench [--rounds 3] [--duration 5] [--connections 64]
//                             [--backends epoll,poll,...] [--variants ships,nodelay]
//
// Each contender is one HTTPServer in this process on 127.0.0.1 (port 0) with one route, `GET /`
// answering 200 and a 6-byte body, loaded by `wrk -t1 -cC -dDs` (a child process); "Requests/sec" is
// read from its output. Variants: "ships" is FlyingFox as it ships; "nodelay" wraps the pool (either
// pool, the same wrapper) in `NoDelayPool`, which sets TCP_NODELAY on each socket the first time the
// pool is asked to wait on it: the listener, whose accept waits before any client connects (Linux
// accepted sockets inherit the option), and the accepted sockets. Each round runs, per variant and
// backend, a pair: FlyingFox's own pool and ReadinessSocketPool one after the other (which goes first
// alternates; the order of backends and variants rotates from round to round), so that a ratio compares
// runs seconds apart on a shared machine. The table gives medians over rounds (FlyingFox's req/s: over
// all its runs). Prints a Markdown table; writes nothing.
import FlyingFox
import FlyingSocks
import Foundation
import Glibc
import Readiness
import ReadinessFlyingSocks
import Synchronization

nonisolated(unsafe) var rounds = 3
nonisolated(unsafe) var duration = 5
nonisolated(unsafe) var connections = 64
nonisolated(unsafe) var backends = Backend.all
nonisolated(unsafe) var variants = ["ships", "nodelay"]
var arguments = Array(CommandLine.arguments.dropFirst())
while !arguments.isEmpty {
    let flag = arguments.removeFirst()
    guard let value = arguments.first else { print("\(flag) needs a value"); exit(2) }
    arguments.removeFirst()
    switch flag {
    case "--rounds": rounds = Int(value) ?? rounds
    case "--duration": duration = Int(value) ?? duration
    case "--connections": connections = Int(value) ?? connections
    case "--backends": backends = try value.split(separator: ",").map { try Backend.named(String($0)) }
    case "--variants": variants = value.split(separator: ",").map(String.init)
    default: print("unknown argument \(flag)"); exit(2)
    }
}
signal(SIGPIPE, SIG_IGN)

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: The servers

/// 127.0.0.1:port for FlyingSocks (as BenchSupport's; copied so that this target links no allocation counter).
struct Loopback4: FlyingSocks.SocketAddress {
    static var family: sa_family_t { sa_family_t(AF_INET) }
    private var storage = sockaddr_storage()

    init(port: UInt16) {
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: sa_family_t(AF_INET), as: sa_family_t.self)
            raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
            raw.storeBytes(of: UInt32(0x7f00_0001).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes(of: storage) { (raw) throws(E) -> R in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), 16)
        }
    }
}

/// Any pool, with TCP_NODELAY set on each descriptor the first time it is waited on. HTTPServer offers no
/// hook on its sockets, but every wait hands the pool the `Socket`.
final class NoDelayPool: AsyncSocketPool {
    let base: any AsyncSocketPool
    let seen = Mutex<Set<Int32>>([])
    static var noDelay: BoolSocketOption { BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY) }

    init(_ base: any AsyncSocketPool) { self.base = base }

    func prepare() async throws { try await base.prepare() }
    func run() async throws { try await base.run() }
    func suspendSocket(_ socket: Socket, untilReadyFor events: Socket.Events) async throws {
        if seen.withLock({ $0.insert(socket.file.rawValue).inserted }) {
            try? socket.setValue(true, for: Self.noDelay)
        }
        try await base.suspendSocket(socket, untilReadyFor: events)
    }
}

struct Contender: Sendable {
    /// nil: FlyingFox's own pool (`HTTPServer.defaultPool()`, ePoll on Linux).
    let backend: Backend?
    let variant: String
    var name: String { "\(backend.map { "readiness:\($0.name)" } ?? "flyingfox"), \(variant)" }
}

/// Starts the contender's server, runs wrk against it, stops it: requests per second and wrk's error lines.
func measure(_ contender: Contender) async throws -> (Double, [String]) {
    let base: any AsyncSocketPool
    if let backend = contender.backend { base = ReadinessSocketPool(backend: backend) } else { base = HTTPServer.defaultPool() }
    let pool: any AsyncSocketPool = contender.variant == "nodelay" ? NoDelayPool(base) : base
    let server = HTTPServer(config: .init(address: Loopback4(port: 0), pool: pool, logger: .disabled as DisabledLogger))
    await server.appendRoute("GET /") { (_: HTTPRequest) in HTTPResponse(statusCode: .ok, body: Data("hello\n".utf8)) }
    let task = Task { try await server.run() }
    defer { task.cancel() }
    try await server.waitUntilListening(timeout: 5)
    guard case .ip4(_, let port)? = await server.listeningAddress else { throw BenchError("no listening address") }
    let output = try await runChild("wrk -t1 -c\(connections) -d\(duration)s http://127.0.0.1:\(port)/")
    await server.stop(timeout: 1)
    task.cancel()
    _ = await task.result
    let lines = output.split(separator: "\n").map { String($0.drop { $0 == " " }) }
    guard let line = lines.first(where: { $0.hasPrefix("Requests/sec:") }),
          let rate = line.split(separator: " ").last.flatMap({ Double(String($0)) }) else {
        throw BenchError("no Requests/sec in wrk's output:\n\(output)")
    }
    return (rate, lines.filter { $0.hasPrefix("Socket errors") || $0.hasPrefix("Non-2xx") })
}

/// Runs `command` through /bin/sh, its output in a file; polls for its end without blocking a thread
/// of the cooperative pool (the servers run there).
func runChild(_ command: String) async throws -> String {
    var template = Array("/tmp/readiness-flyingfox-bench-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    let output = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    close(fd)
    defer { unlink(output) }
    var pid: pid_t = 0
    let words = ["/bin/sh", "-c", "exec \(command) > '\(output)' 2>&1"]
    var argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0 else { throw BenchError("spawn \(command)") }
    var status: CInt = 0
    while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(50)) }
    let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
    guard (status >> 8) & 0xff == 0 else { throw BenchError("\(command) failed:\n\(text)") }
    return text
}

// MARK: The run

nonisolated(unsafe) var unavailable: [String: String] = [:]
for backend in backends { if let why = backend.probe() { unavailable[backend.name] = why } }
let usable = backends.filter { unavailable[$0.name] == nil }
nonisolated(unsafe) var rates: [String: [Double]] = [:]      // contender name: req/s, every run
nonisolated(unsafe) var ratios: [String: [Double]] = [:]     // contender name: req/s over FlyingFox's in the same pair
nonisolated(unsafe) var notes: [String] = []
func run(_ contender: Contender, round: Int) async throws -> Double {
    let (rate, errors) = try await measure(contender)
    rates[contender.name, default: []].append(rate)
    for error in errors { notes.append("round \(round + 1), \(contender.name): \(error)") }
    FileHandle.standardError.write(Data("round \(round + 1) \(contender.name): \(rate) req/s\n".utf8))
    return rate
}
for round in 0..<rounds {
    // Rotated from round to round: the variants, the backends, and which of a pair runs first.
    let shift = round * usable.count / max(1, rounds)
    let order = Array(usable[shift...] + usable[..<shift])
    for variant in round % 2 == 0 ? variants : variants.reversed() {
        for (i, backend) in order.enumerated() {
            let reference = Contender(backend: nil, variant: variant), contender = Contender(backend: backend, variant: variant)
            let flyingFoxFirst = (i + round) % 2 == 0
            let first = try await run(flyingFoxFirst ? reference : contender, round: round)
            let second = try await run(flyingFoxFirst ? contender : reference, round: round)
            ratios[contender.name, default: []].append(flyingFoxFirst ? second / first : first / second)
            ratios[reference.name, default: []].append(1)
        }
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
func cell(_ name: String) -> String {
    guard let r = rates[name], let q = ratios[name] else { return "–" }
    if Set(q) == [1] { return String(format: "%.0f | 1", median(r)) }
    let range = q.count > 1 ? String(format: " (%.2f–%.2f)", q.min()!, q.max()!) : ""
    return String(format: "%.0f | %.2f", median(r), median(q)) + range
}

let header = variants.map { $0 == "nodelay" ? "TCP_NODELAY" : "as it ships" }
print("wrk -t1 -c\(connections) -d\(duration)s, GET / (200, 6-byte body), \(rounds) rounds; req/s: median; ratio: median (min–max) over rounds of req/s over FlyingFox's own pool's in the run next to it\n")
print("| pool | " + header.map { "\($0): req/s | ratio" }.joined(separator: " | ") + " |")
print("|---|" + String(repeating: "---:|---|", count: variants.count))
print("| FlyingFox's own (ePoll) | " + variants.map { cell(Contender(backend: nil, variant: $0).name) }.joined(separator: " | ") + " |")
for backend in backends {
    if let why = unavailable[backend.name] {
        print("| ReadinessSocketPool, \(backend.name) | unavailable: \(why) |")
    } else {
        print("| ReadinessSocketPool, \(backend.name) | " + variants.map { cell(Contender(backend: backend, variant: $0).name) }.joined(separator: " | ") + " |")
    }
}
for note in notes { print("\n- \(note)") }
