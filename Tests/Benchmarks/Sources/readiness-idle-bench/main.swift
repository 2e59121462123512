// readiness-idle-bench: memory per idle connection (issue 24; Docs/Async.md, "Memory per idle
// connection"). For each server, in one run: start it as a child process, open N connections to it
// from this process (4,000 by default), make one 4-byte round trip on each (so that every connection's
// task has echoed and is suspended in its next read), and read the server's resident memory (VmRSS)
// before and after; the difference over N is the memory per idle connection. Rounds rotate the order.
//
//   readiness-idle-bench --echo PATH [--connections 4000] [--rounds 3] [--backends epoll,io_uring,poll]
//                        [--no-breakdown] [--breakdown-backend NAME]
//
// PATH is the release build of Examples/readiness-async-echo (`make bench-idle` builds it). The other
// servers run from this binary (child modes below): SwiftNIO handler-based and NIOAsyncChannel (one
// event-loop thread), FlyingSocks, and the Readiness echo as it was written before issue 24 (one `Bytes`
// of 64 KiB reused across reads). Then the breakdown: the same Readiness echo as the example, in this
// binary with glibc's malloc tracer (libc_malloc_debug.so), reports the heap in use (mallinfo2) and the
// sizes of the allocations still live per connection. Prints Markdown.
import CHeapInfo
import EchoServers
import Foundation
import Readiness

/// A command line it cannot run: says why on standard error and exits 64 (EX_USAGE), never a trap.
func usageFailure(_ message: String) -> Never {
    FileHandle.standardError.write(Data("\(CommandLine.arguments.first ?? "bench"): \(message)\n".utf8))
    exit(64)
}

// MARK: Child modes (the servers)

/// The child modes: `nio-echo PORT`, `nio-async-echo PORT`, `flyingsocks-echo PORT`,
/// `readiness-echo PORT BACKEND available|held` (its standard input takes commands: see `serveCommands`).
let childArguments = Array(CommandLine.arguments.dropFirst())
switch childArguments.first {
case "nio-echo":
    signal(SIGPIPE, SIG_IGN)
    try runNIOEcho(port: Int(childArguments[1]) ?? 0)
    exit(0)
case "nio-async-echo":
    signal(SIGPIPE, SIG_IGN)
    try await runNIOAsyncEcho(port: Int(childArguments[1]) ?? 0)
    exit(0)
case "flyingsocks-echo":
    signal(SIGPIPE, SIG_IGN)
    try await runFlyingSocksEcho(port: UInt16(childArguments[1]) ?? 0)
    exit(0)
case "readiness-echo":
    signal(SIGPIPE, SIG_IGN)
    serveCommands()
    try await runReadinessEcho(port: UInt16(childArguments[1]) ?? 0, backend: childArguments[2],
                               holdsBuffer: childArguments[3] == "held")
    exit(0)
default:
    break
}

/// The most bytes one read of the Readiness echo takes (the example's figure). A computed global: the
/// child modes run before main.swift's top-level constants are initialised.
var echoReadSize: Int { 64 * 1024 }

/// The Readiness echo on one loop, a task per connection preferring it: `echoAsTheExample`, or with
/// `holdsBuffer` `echoHoldingBuffer` (as the example was written before issue 24).
func runReadinessEcho(port: UInt16, backend name: String, holdsBuffer: Bool) async throws {
    let backend = try Backend.named(name)
    let loop = try EventLoop(backend: backend)
    let listener = try await loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: port))
    await Task(executorPreference: loop) {
        await withDiscardingTaskGroup { connections in
            while let socket = try? await listener.accept() {
                connections.addTask(executorPreference: loop) {
                    if holdsBuffer { await echoHoldingBuffer(socket) } else { _ = await echoAsTheExample(socket) }
                }
            }
        }
    }.value
}

/// Examples/readiness-async-echo's `echo`, statement for statement (so that its task's frames are the
/// example's: the bytes counted, the count returned), for the breakdown: `readAvailable`, no buffer held
/// across the read.
func echoAsTheExample(_ socket: AsyncSocket) async -> Int? {
    var echoed = 0
    do {
        try await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
        while true {
            let bytes = try await socket.readAvailable(maximum: echoReadSize)
            if bytes.isEmpty { break }
            try await socket.write(bytes)
            echoed += bytes.count
        }
    } catch {
        print("connection: \(error)")
        await socket.close()
        return nil
    }
    await socket.close()
    return echoed
}

/// The echo as the example was before issue 24: one `Bytes` per connection, emptied keeping its
/// capacity, so each idle connection holds the 64 KiB room of its last read.
func echoHoldingBuffer(_ socket: AsyncSocket) async {
    var buffer = Bytes()
    try? await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
    while let n = try? await socket.read(into: &buffer, maximum: echoReadSize), n > 0 {
        guard (try? await socket.write(buffer)) != nil else { break }
        buffer.removeAll(keepingCapacity: true)
    }
    await socket.close()
}

/// The in-binary Readiness server's commands, one a line on standard input, each answered with one line
/// on standard output: `heap` (mallinfo2: bytes held from malloc, chunk headers included),
/// `trace-on` and `trace-off` (glibc's `mtrace`/`muntrace`, when libc_malloc_debug.so is preloaded).
func serveCommands() {
    let thread = Thread {
        while let line = readLine() {
            switch line {
            case "heap":
                print(cheapinfo_in_use())
            case "trace-on":
                cheapinfo_trace_start()
                print("ok")
            case "trace-off":
                cheapinfo_trace_stop()
                print("ok")
            default:
                print("unknown")
            }
            fflush(nil)   // every output stream (stdout is a C global Swift 6 will not read from a thread)
        }
    }
    thread.start()
}

// MARK: Options

struct Options {
    var echo = ""
    var connections = 4_000
    var rounds = 3
    var backends = ["epoll", "io_uring", "poll"]
    var breakdown = true
    /// The backend the breakdown's server runs on.
    var breakdownBackend = "epoll"
}

func parseOptions() -> Options {
    var options = Options()
    var rest = CommandLine.arguments.dropFirst().makeIterator()
    while let flag = rest.next() {
        if flag == "--no-breakdown" { options.breakdown = false; continue }
        guard let value = rest.next() else { usageFailure("\(flag) needs a value") }
        switch flag {
        case "--echo": options.echo = value
        case "--breakdown-backend": options.breakdownBackend = value
        case "--connections": options.connections = max(1, Int(value) ?? options.connections)
        case "--rounds": options.rounds = max(1, Int(value) ?? options.rounds)
        case "--backends": options.backends = value.split(separator: ",").map(String.init)
        default: usageFailure("unknown option \(flag)")
        }
    }
    guard FileManager.default.isExecutableFile(atPath: options.echo) else {
        usageFailure("--echo PATH: the release build of readiness-async-echo (swift build -c release --product readiness-async-echo)")
    }
    return options
}

// MARK: The client (this process)

/// The round trip's message.
let probe: [UInt8] = [0x69, 0x64, 0x6c, 0x65]
/// Connections opened before the round trips on them (at most this many pending accepts).
let batchSize = 200
/// Connections opened and closed before the baseline (so that one-time costs are in it).
let warmUpConnections = 64
/// How long a client read waits for its echo.
let readTimeoutSeconds = 10
/// Pause before each RSS reading (the server settles: tasks suspended, freed memory returned).
let settleMicroseconds: useconds_t = 500_000

struct BenchError: Error, CustomStringConvertible {
    let description: String
}

func loopback(_ port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

/// A connected blocking socket (with a read timeout), or nil when the connect failed.
func connectBlocking(_ port: Int) -> CInt? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = loopback(port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { close(fd); return nil }
    var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var one: CInt = 1
    setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
    return fd
}

/// Writes the probe and reads it back.
func roundTrip(_ fd: CInt) throws {
    guard probe.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == probe.count else {
        throw BenchError(description: "write: errno \(errno)")
    }
    var back = [UInt8](repeating: 0, count: probe.count)
    var got = 0
    while got < probe.count {
        let n = back.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, probe.count - got) }
        guard n > 0 else { throw BenchError(description: "read: \(n == 0 ? "end of stream" : "errno \(errno)")") }
        got += n
    }
    guard back == probe else { throw BenchError(description: "echo: wrong bytes") }
}

/// Opens `count` connections, a round trip on each (batch by batch); the caller closes them.
func openIdle(_ count: Int, port: Int) throws -> [CInt] {
    var open: [CInt] = []
    open.reserveCapacity(count)
    while open.count < count {
        var batch: [CInt] = []
        for _ in 0..<min(batchSize, count - open.count) {
            guard let fd = connectBlocking(port) else {
                for fd in open + batch { close(fd) }
                throw BenchError(description: "connect \(open.count + batch.count + 1): errno \(errno)")
            }
            batch.append(fd)
        }
        do {
            for fd in batch { try roundTrip(fd) }
        } catch {
            for fd in open + batch { close(fd) }
            throw error
        }
        open += batch
    }
    return open
}

/// The most descriptors this process (and its children, which inherit it) may open: the hard limit.
func raiseDescriptorLimit(needed: Int) {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    if Int(limit.rlim_cur) < needed + 100 {
        fatalError("RLIMIT_NOFILE is \(limit.rlim_cur): \(needed) connections need more (ulimit -Hn)")
    }
}

/// A free loopback port (bound to 0, read back, released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = loopback(0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

// MARK: Servers

/// A server child process: started, waited for (a connect succeeds), its memory read from /proc.
final class Server {
    let process = Process()
    let input = Pipe(), output = Pipe()

    init(_ executable: String, _ arguments: [String], port: Int, environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        try process.run()
        for _ in 0..<500 {
            if let fd = connectBlocking(port) { close(fd); return }
            usleep(10_000)
        }
        stop()
        throw BenchError(description: "\(executable) \(arguments.joined(separator: " ")) did not start")
    }

    /// Resident memory (VmRSS), in kB (1,024 bytes, as /proc counts).
    var residentKB: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb
    }

    /// Sends a command to the in-binary Readiness server and returns its answer.
    func command(_ text: String) -> String {
        input.fileHandleForWriting.write(Data((text + "\n").utf8))
        var line = Data()
        while true {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty || byte == Data([0x0a]) { break }
            line += byte
        }
        return String(decoding: line, as: UTF8.self)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

struct Contender {
    let name: String
    let executable: String
    let arguments: (Int) -> [String]
}

struct Sample {
    let beforeKB: Int
    let afterKB: Int
    let connections: Int
    /// Bytes per connection.
    var perConnection: Double { Double(afterKB - beforeKB) * 1024 / Double(connections) }
}

/// Warm-up, baseline, N idle connections, reading; then everything closed and the server stopped.
func measure(_ contender: Contender, connections: Int) throws -> Sample {
    let port = freePort()
    let server = try Server(contender.executable, contender.arguments(port), port: port)
    defer { server.stop() }
    for fd in try openIdle(warmUpConnections, port: port) { close(fd) }
    usleep(settleMicroseconds)
    let before = server.residentKB
    let open = try openIdle(connections, port: port)
    defer { for fd in open { close(fd) } }
    usleep(settleMicroseconds)
    return Sample(beforeKB: before, afterKB: server.residentKB, connections: connections)
}

// MARK: The breakdown

/// The glibc library whose `mtrace` logs every allocation (glibc 2.34 and later moved it out of libc).
let mallocDebugLibrary = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"

struct Breakdown {
    let heapBefore: Int, heapAfter: Int
    /// Live allocations made while the connections were opened: (size, how many), largest total first.
    let live: [(size: Int, count: Int)]
    let connections: Int
}

/// The in-binary Readiness echo (as the example reads) with the heap read before and after and, when
/// the tracer is there, every allocation made meanwhile that is still live.
func breakdown(connections: Int, backend: String) throws -> Breakdown {
    let port = freePort()
    let trace = NSTemporaryDirectory() + "readiness-idle-bench-\(getpid()).mtrace"
    let traced = FileManager.default.isReadableFile(atPath: mallocDebugLibrary)
    let environment = traced ? ["LD_PRELOAD": mallocDebugLibrary, "MALLOC_TRACE": trace] : [:]
    let server = try Server(executablePath(), ["readiness-echo", "\(port)", backend, "available"], port: port,
                            environment: environment)
    defer { server.stop(); try? FileManager.default.removeItem(atPath: trace) }
    for fd in try openIdle(warmUpConnections, port: port) { close(fd) }
    usleep(settleMicroseconds)
    let before = Int(server.command("heap"))
    if traced { _ = server.command("trace-on") }
    let open = try openIdle(connections, port: port)
    defer { for fd in open { close(fd) } }
    usleep(settleMicroseconds)
    if traced { _ = server.command("trace-off") }
    let after = Int(server.command("heap"))
    guard let before, let after else { throw BenchError(description: "breakdown: no heap figures") }
    return Breakdown(heapBefore: before, heapAfter: after,
                     live: traced ? liveAllocations(trace) : [], connections: connections)
}

/// Parses an mtrace log ("@ caller + ADDRESS SIZE", "@ caller - ADDRESS", realloc as "< OLD" then
/// "> NEW SIZE"): the allocations not freed by its end, grouped by size.
func liveAllocations(_ path: String) -> [(size: Int, count: Int)] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    var live: [Substring: Int] = [:]
    for line in text.split(separator: "\n") {
        let words = line.split(separator: " ")
        // The operation and its operands are the last words (the caller may hold spaces).
        guard let index = words.lastIndex(where: { $0 == "+" || $0 == "-" || $0 == "<" || $0 == ">" }) else { continue }
        let operands = words[(index + 1)...]
        switch words[index] {
        case "+", ">":
            if operands.count >= 2, let size = Int(operands.last!.dropFirst(2), radix: 16) { live[operands.first!] = size }
        default:
            if let address = operands.first { live[address] = nil }
        }
    }
    var bySize: [Int: Int] = [:]
    for size in live.values { bySize[size, default: 0] += 1 }
    return bySize.map { (size: $0.key, count: $0.value) }.sorted { $0.size * $0.count > $1.size * $1.count }
}

func executablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

// MARK: Run

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

let options = parseOptions()
signal(SIGPIPE, SIG_IGN)
raiseDescriptorLimit(needed: options.connections + warmUpConnections)
let me = executablePath()
var contenders = options.backends.map { backend in
    Contender(name: "Readiness async echo example (`readAvailable`), \(backend)", executable: options.echo) {
        ["--port", "\($0)", "--backend", backend]
    }
}
contenders += [
    Contender(name: "Readiness, a 64 KiB `Bytes` reused across reads (the example before), epoll", executable: me) {
        ["readiness-echo", "\($0)", "epoll", "held"]
    },
    Contender(name: "SwiftNIO 2 handler-based (1 event loop)", executable: me) { ["nio-echo", "\($0)"] },
    Contender(name: "SwiftNIO 2 NIOAsyncChannel (1 event loop, a task per connection)", executable: me) { ["nio-async-echo", "\($0)"] },
    Contender(name: "FlyingSocks AsyncSocket (SocketPool epoll, a task per connection)", executable: me) { ["flyingsocks-echo", "\($0)"] },
]

var samples: [String: [Sample]] = [:]
for round in 0..<options.rounds {
    let shift = round % contenders.count
    for contender in Array(contenders[shift...] + contenders[..<shift]) {
        do {
            samples[contender.name, default: []].append(try measure(contender, connections: options.connections))
        } catch {
            print("\(contender.name), round \(round + 1): \(error)")
        }
    }
}

/// The least number of live allocations per connection a size needs for its own row.
let minimumShare = 0.01

func kb(_ bytes: Double) -> String { String(format: "%.1f", bytes / 1024) }

print("## Memory per idle connection: \(options.connections) connections, one 4-byte round trip each\n")
print("Server RSS (VmRSS) after the connections minus before, over the connections; each server a child process, the client in the benchmark process; \(options.rounds) rounds, the order rotated; kB are 1,024 bytes.\n")
print("| server | kB per connection (median) | rounds (kB) | RSS before → after (MB, last round) |")
print("|---|---:|---|---|")
for contender in contenders {
    let runs = samples[contender.name] ?? []
    guard let last = runs.last else { print("| \(contender.name) | failed | | |"); continue }
    let perRound = runs.map { kb($0.perConnection) }.joined(separator: ", ")
    let mb = String(format: "%.1f → %.1f", Double(last.beforeKB) / 1024, Double(last.afterKB) / 1024)
    print("| \(contender.name) | \(kb(median(runs.map(\.perConnection)))) | \(perRound) | \(mb) |")
}

if options.breakdown {
    do {
        let result = try breakdown(connections: options.connections, backend: options.breakdownBackend)
        let n = Double(result.connections)
        print("\n## Where the bytes go (Readiness, \(options.breakdownBackend), the example's reads)\n")
        print("Heap in use (mallinfo2: arenas + mapped blocks) per connection: \(String(format: "%.0f", Double(result.heapAfter - result.heapBefore) / n)) bytes.")
        if result.live.isEmpty {
            print("(no allocation sizes: \(mallocDebugLibrary) is missing, or its trace is empty)")
        } else {
            print("Allocations made while the connections were opened and still live (glibc mtrace), by requested size:\n")
            print("| size (bytes) | live per connection | bytes per connection |")
            print("|---:|---:|---:|")
            let total = result.live.reduce(0.0) { $0 + Double($1.count * $1.size) / n }
            for entry in result.live where Double(entry.count) / n >= minimumShare {
                let each = Double(entry.count) / n
                print("| \(entry.size) | \(String(format: "%.2f", each)) | \(String(format: "%.0f", each * Double(entry.size))) |")
            }
            print("| all (sizes under \(minimumShare) per connection included) | | \(String(format: "%.0f", total)) |")
        }
    } catch {
        print("breakdown: \(error)")
    }
}
