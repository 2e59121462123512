// readiness-net-bench: figures for the socket layer (Docs/Sockets.md), in one run.
//
//   readiness-net-bench --examples DIR [--only http,echo,exhaustion,allocations] [--rounds N]
//                       [--echo-example readiness-async-echo] [--backends epoll,io_uring] [--echo-contenders nio]
//
// With readiness-async-echo and io_uring among the backends, the echo also runs io_uring with the
// readiness driver (READINESS_IO_DRIVER=readiness; the row "io_uring-readiness") beside the
// completion driver that io_uring loops use by default, and gives each row's ratio to epoll per round.
//
// DIR holds the release builds of the examples (readiness-echo, readiness-http-load):
//   swift build -c release --product readiness-echo && swift build -c release --product readiness-http-load
// `make bench-net` does both and runs this. Prints a Markdown report.
import BenchSupport
import EchoServers
import Glibc
import Readiness

nonisolated(unsafe) var examples = ""
nonisolated(unsafe) var only: Set<String> = ["http", "echo", "exhaustion", "allocations"]
nonisolated(unsafe) var rounds = 5
/// The echo server run beside SwiftNIO: readiness-echo (the sync loop) or readiness-async-echo (EventLoop tasks).
nonisolated(unsafe) var echoExample = "readiness-echo"
/// Only these backends (all available ones by default).
nonisolated(unsafe) var onlyBackends: Set<String>?
var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "nio-echo" {
    // A child process: the SwiftNIO echo server.
    signal(SIGPIPE, SIG_IGN)
    try runNIOEcho(port: Int(arguments[1])!)
    exit(0)
}
if arguments.first == "nio-async-echo" {
    // A child process: the SwiftNIO echo server written with NIOAsyncChannel.
    signal(SIGPIPE, SIG_IGN)
    try await runNIOAsyncEcho(port: Int(arguments[1])!)
    exit(0)
}
if arguments.first == "flyingsocks-echo" {
    // A child process: the FlyingSocks echo server.
    signal(SIGPIPE, SIG_IGN)
    try await runFlyingSocksEcho(port: UInt16(arguments[1])!)
    exit(0)
}
/// The echo load's message size (--message BYTES; 16 KiB by default).
nonisolated(unsafe) var echoMessage = 16 * 1024
/// The servers the echo example is compared with (--echo-contenders nio,nio-async,flyingsocks).
nonisolated(unsafe) var echoContenders = ["nio"]
while !arguments.isEmpty {
    let flag = arguments.removeFirst()
    switch flag {
    case "--examples": examples = arguments.removeFirst()
    case "--only": only = Set(arguments.removeFirst().split(separator: ",").map(String.init))
    case "--rounds": rounds = Int(arguments.removeFirst()) ?? rounds
    case "--echo-example": echoExample = arguments.removeFirst()
    case "--backends": onlyBackends = Set(arguments.removeFirst().split(separator: ",").map(String.init))
    case "--message": echoMessage = Int(arguments.removeFirst()) ?? echoMessage
    case "--echo-contenders": echoContenders = arguments.removeFirst().split(separator: ",").map(String.init)
    default: print("unknown argument \(flag)"); exit(2)
    }
}
signal(SIGPIPE, SIG_IGN)
Allocations.ensureInterposed()
guard only == ["allocations"] || access(examples + "/readiness-echo", X_OK) == 0 else {
    print("--examples DIR must hold release builds of readiness-echo and readiness-http-load"); exit(2)
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: Processes

/// A child started through /bin/sh (so `ulimit` can be used), its output in a file.
struct Child {
    let pid: pid_t
    let output: String

    init(_ command: String) throws {
        var template = Array("/tmp/readiness-net-bench-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        output = String(cString: template)
        close(fd)
        var pid: pid_t = 0
        let full = "exec \(command) > '\(output)' 2>&1"
        let words: [String] = ["/bin/sh", "-c", full]
        var argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        guard posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0 else { throw BenchError("spawn \(command)") }
        self.pid = pid
    }

    /// Waits for the end: exit status and output.
    func wait() -> (CInt, String) {
        var status: CInt = 0
        waitpid(pid, &status, 0)
        let text = (try? readFile(output)) ?? ""
        unlink(output)
        return ((status >> 8) & 0xff, text)
    }

    func stop() {
        kill(pid, SIGTERM)
        _ = wait()
    }

    /// CPU time used so far (user + system), in seconds, from /proc/PID/stat.
    var cpuSeconds: Double {
        guard let stat = try? readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

func readFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else { throw BenchError("cannot read \(path)") }
    defer { fclose(file) }
    var text = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, CInt(buffer.count), file) != nil {
        text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return text
}

func writeFile(_ text: String, _ path: String) {
    let file = fopen(path, "w")
    fputs(text, file)
    fclose(file)
}

/// The value after `key ` in a summary line.
func field(_ key: String, in text: String) -> Double? {
    let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard let index = words.firstIndex(where: { $0 == key }), index + 1 < words.count else { return nil }
    return Double(words[index + 1].filter { $0.isNumber || $0 == "." })
}

func freePort() throws -> UInt16 {
    let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
    defer { listener.close() }
    return listener.address.port!
}

func twoDecimals(_ value: Double) -> String {
    String(Int((value * 100).rounded())).withDecimal
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

/// Connects, retrying while the server starts.
func connectRetrying(_ address: SocketAddress, poller: any Poller) throws -> StreamSocket {
    for _ in 0..<500 {
        do { return StreamSocket(try Connector.connect(to: address, on: poller, timeout: .seconds(2))) } catch {
            guard error.cause == .refused else { throw error }
            usleep(10_000)
        }
    }
    throw BenchError("no server at \(address)")
}

nonisolated(unsafe) let backends = Backend.available.filter { onlyBackends?.contains($0.name) ?? true }
nonisolated(unsafe) var report: [String] = ["# Socket layer figures", "",
                        "One run of `readiness-net-bench` (release builds), \(rounds) rounds, median of rounds. Machine: "
                        + "\(sysconf(Int32(_SC_NPROCESSORS_ONLN))) cores, shared.", ""]

// MARK: HTTP keep-alive load against nginx, beside ab -k

func httpScenario() throws {
    let nginxPaths: [String] = ["/usr/sbin/nginx", "/usr/bin/nginx"]
    guard let nginx = nginxPaths.first(where: { access($0, X_OK) == 0 }) else {
        report += ["## HTTP: skipped (nginx is not installed: apt-get install nginx-light)", ""]; return
    }
    let abPaths: [String] = ["/usr/bin/ab", "/usr/sbin/ab"]
    let ab = abPaths.first { access($0, X_OK) == 0 }
    let directory = "/tmp/readiness-net-bench-nginx-\(getpid())"
    let port = try freePort()
    _ = system("rm -rf \(directory); mkdir -p \(directory)/www")
    writeFile(String(repeating: "readiness ", count: 100), directory + "/www/index.html")
    writeFile("""
        worker_processes 1;
        pid \(directory)/nginx.pid;
        error_log \(directory)/error.log;
        events { worker_connections 1024; }
        http {
            access_log off;
            keepalive_requests 1000000;
            client_body_temp_path \(directory)/body; proxy_temp_path \(directory)/proxy;
            fastcgi_temp_path \(directory)/fastcgi; uwsgi_temp_path \(directory)/uwsgi; scgi_temp_path \(directory)/scgi;
            server { listen 127.0.0.1:\(port); root \(directory)/www; }
        }
        """, directory + "/nginx.conf")
    guard system("\(nginx) -c \(directory)/nginx.conf -p \(directory) -e \(directory)/error.log") == 0 else {
        throw BenchError("nginx did not start")
    }
    defer {
        if let text = try? readFile(directory + "/nginx.pid"), let pid = pid_t(text.filter { $0.isNumber }) { kill(pid, SIGQUIT) }
        usleep(200_000)
        _ = system("rm -rf \(directory)")
    }
    let url = "http://127.0.0.1:\(port)/index.html"
    func runAB() throws -> Double? {
        guard let ab else { return nil }
        let (_, out) = try Child("\(ab) -k -c 50 -n 20000 \(url)").wait()
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("Requests per second") }) else { return nil }
        return field("second:", in: String(line))
    }
    func runClient(_ backend: Backend) throws -> Double {
        let (status, out) = try Child("\(examples)/readiness-http-load --url \(url) --connections 50 --requests 20000 --backend \(backend.name)").wait()
        guard status == 0, out.contains("ok 20000 failed 0"), let value = field("requests-per-second", in: out) else {
            throw BenchError("readiness-http-load on \(backend.name): \(out)")
        }
        return value
    }
    // Paired: each client run is next to an `ab -k` run (alternating which goes first), and the ratio
    // is taken within the pair, so load from elsewhere on the machine hits both alike.
    var results: [String: [Double]] = [:], ratios: [String: [Double]] = [:]
    for round in 0..<rounds {
        for backend in backends {
            var mine = 0.0, theirs: Double?
            if round % 2 == 0 { theirs = try runAB(); mine = try runClient(backend) } else { mine = try runClient(backend); theirs = try runAB() }
            results[backend.name, default: []].append(mine)
            if let theirs {
                results["ab -k", default: []].append(theirs)
                ratios[backend.name, default: []].append(mine / theirs)
            }
        }
    }
    report += ["## HTTP/1.1 keep-alive load against nginx (1 worker): 50 connections, 20,000 requests", "",
               "Each readiness-http-load run is paired with an `ab -k -c 50 -n 20000` run right before or after it (alternating); the ratio is the median of the per-pair ratios.", "",
               "| client | requests/s (median) | vs ab -k (paired) | runs |", "|---|---:|---:|---|"]
    for name in (ab == nil ? [] : ["ab -k"]) + backends.map(\.name) {
        let values = results[name] ?? []
        let ratio = name == "ab -k" ? "" : ratios[name].map { String(Int((median($0) * 100).rounded())) + "%" } ?? "n/a"
        report.append("| \(name == "ab -k" ? "`ab -k -c 50 -n 20000` (all pairs)" : "readiness-http-load, \(name)") | \(Int(median(values))) | \(ratio) | \(values.count) |")
    }
    if ab == nil { report.append("(ab is not installed: apt-get install apache2-utils)") }
    report.append("")
}

// MARK: Echo, 200 clients, beside SwiftNIO

/// 200 clients on one epoll loop in this process, each writing `message` bytes and reading them back,
/// again and again; returns echoed bytes per second over `seconds` after a warm-up.
func echoLoad(port: UInt16, clients clientCount: Int = 200, message: Int = 16 * 1024, seconds: Double = 2) throws -> Double {
    let poller = try Backend.epoll.makePoller()
    defer { try? poller.close() }
    let address = try SocketAddress(ip: "127.0.0.1", port: port)
    var sockets: [StreamSocket] = []
    for index in 0..<clientCount {
        let socket = try connectRetrying(address, poller: poller)
        try socket.register(on: poller, token: Token(UInt64(index)), interest: .readable)
        sockets.append(socket)
    }
    let outgoing = [UInt8](repeating: 0x5a, count: message)
    var incoming = [UInt8](repeating: 0, count: 64 * 1024)
    var sent = [Int](repeating: 0, count: clientCount), received = [Int](repeating: 0, count: clientCount)
    func pump(_ index: Int) throws {
        let socket = sockets[index]
        while true {
            if sent[index] < message {
                if case .transferred(let n) = try socket.write(outgoing, from: sent[index]) { sent[index] += n } else { return }
                continue
            }
            switch try socket.read(into: &incoming) {
            case .transferred(let n):
                received[index] += n
                total += n
                if received[index] >= message { received[index] -= message; sent[index] = 0 }
            case .wouldBlock, .endOfStream: return
            }
        }
    }
    var total = 0
    for index in 0..<clientCount { try pump(index) }
    let events = EventBuffer(capacity: 256)
    let warmUpEnd = Deadline.now.nanoseconds + 500_000_000
    var start: Int64 = 0, startBytes = 0
    let end = warmUpEnd + Int64(seconds * 1e9)
    while Deadline.now.nanoseconds < end {
        if start == 0 && Deadline.now.nanoseconds >= warmUpEnd { start = Deadline.now.nanoseconds; startBytes = total }
        try poller.wait(into: events, timeout: .milliseconds(100))
        for event in events where !event.isWakeup { try pump(Int(event.token.rawValue)) }
    }
    let elapsed = Double(Deadline.now.nanoseconds - start) / 1e9
    for socket in sockets { socket.close() }
    return Double(total - startBytes) / elapsed
}

func echoScenario() throws {
    func runServer(_ command: String) throws -> Double {
        let port = try freePort()
        let server = try Child(command.replacingPort(port))
        defer { server.stop() }
        return try echoLoad(port: port, message: echoMessage)
    }
    let contenderNames = [
        "nio": "SwiftNIO 2 handler-based (ServerBootstrap + ChannelInboundHandler, 1 event loop)",
        "nio-async": "SwiftNIO 2 NIOAsyncChannel (1 event loop, a task per connection)",
        "flyingsocks": "FlyingSocks AsyncSocket (SocketPool epoll, a task per connection)",
    ]
    let contenderCommands = [
        "nio": "'\(executablePath())' nio-echo PORT",
        "nio-async": "'\(executablePath())' nio-async-echo PORT",
        "flyingsocks": "'\(executablePath())' flyingsocks-echo PORT",
    ]
    // One round: every contender once, then every backend of the example once, the order reversed on
    // odd rounds; each backend's ratio to a contender is taken within the round, the median over rounds.
    var results: [String: [Double]] = [:], ratios: [String: [String: [Double]]] = [:]
    // The example's rows: each backend, and io_uring's readiness driver beside its completion driver
    // (the async example only: the sync one has no driver).
    var rows = backends.map { ($0.name, "\(examples)/\(echoExample) --port PORT --backend \($0.name)") }
    if echoExample == "readiness-async-echo", backends.contains(.ioUring) {
        rows.append(("io_uring-readiness", "env READINESS_IO_DRIVER=readiness \(examples)/\(echoExample) --port PORT --backend io_uring"))
    }
    var toEpoll: [String: [Double]] = [:]
    for round in 0..<rounds {
        var runs: [(String, String)] = echoContenders.map { ($0, contenderCommands[$0]!) } + rows
        if round % 2 == 1 { runs.reverse() }
        var thisRound: [String: Double] = [:]
        for (name, command) in runs { thisRound[name] = try runServer(command) }
        for (name, value) in thisRound { results[name, default: []].append(value) }
        for (name, _) in rows {
            for contender in echoContenders {
                ratios[name, default: [:]][contender, default: []].append(thisRound[name]! / thisRound[contender]!)
            }
            if let epoll = thisRound["epoll"], name != "epoll" { toEpoll[name, default: []].append(thisRound[name]! / epoll) }
        }
    }
    let size = echoMessage % 1024 == 0 ? "\(echoMessage / 1024) KiB" : "\(echoMessage) B"
    report += ["## Echo: 200 clients, \(size) messages, one server thread", "",
               "The load: 200 connections on one epoll loop in the benchmark process, each writing \(size) and reading it back, over and over; 2 s measured after 0.5 s of warm-up. Each round runs every server once (the order reversed every other round); a ratio is taken within a round, its median over the rounds is given.", "",
               "| server | MB/s echoed (median) | runs (MB/s) | " + echoContenders.map { "vs \($0) (median of rounds)" }.joined(separator: " | ") + " |",
               "|---|---:|---|" + echoContenders.map { _ in "---:|" }.joined()]
    func mb(_ values: [Double]) -> String { values.map { String(Int($0 / 1e6)) }.joined(separator: ", ") }
    for contender in echoContenders {
        let values = results[contender] ?? []
        report.append("| \(contenderNames[contender] ?? contender) | \(Int(median(values) / 1e6)) | \(mb(values)) |" + echoContenders.map { _ in " |" }.joined())
    }
    for (name, _) in rows {
        let values = results[name] ?? []
        let cells = echoContenders.map { contender -> String in
            let r = ratios[name]?[contender] ?? []
            return "\(twoDecimals(median(r)))x (\(r.map { twoDecimals($0) }.joined(separator: ", ")))"
        }
        report.append("| \(echoExample), \(name) | \(Int(median(values) / 1e6)) | \(mb(values)) | " + cells.joined(separator: " | ") + " |")
    }
    report.append("")
    for (name, _) in rows where name != "epoll" {
        guard let r = toEpoll[name], !r.isEmpty else { continue }
        report.append("- \(echoExample), \(name) / epoll, per round: \(twoDecimals(median(r)))x (\(r.map { twoDecimals($0) }.joined(separator: ", ")))")
    }
    report.append("")
}

extension String {
    func replacingPort(_ port: UInt16) -> String {
        var out = ""
        var rest = self[...]
        while let range = rest.firstRange(of: "PORT") {
            out += rest[..<range.lowerBound] + String(port)
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}

// MARK: Accept while out of descriptors

func exhaustionScenario() throws {
    report += ["## Accept while out of descriptors: `ulimit -n 64`, 1,000 clients", "",
               "readiness-echo runs with `ulimit -n 64`; 1,000 clients connect (they wait in the accept queue) and hold for 2 s while the server is out of descriptors; its CPU time over those 2 s is read from /proc/PID/stat. Then each client sends 64 bytes, reads them back and closes; the server must serve all 1,000.", "",
               "| backend | CPU while exhausted | served | accept back-offs | time to serve all |", "|---|---:|---:|---:|---:|"]
    let clientCount = 1000
    for backend in backends {
        let port = try freePort()
        let server = try Child("sh -c 'ulimit -n 64; exec \(examples)/readiness-echo --port \(port) --backend \(backend.name) --connections \(clientCount)'")
        let poller = try Backend.epoll.makePoller()
        defer { try? poller.close() }
        let address = try SocketAddress(ip: "127.0.0.1", port: port)
        var sockets: [StreamSocket] = [try connectRetrying(address, poller: poller)]
        for _ in 1..<clientCount { sockets.append(StreamSocket(try Connector.connect(to: address, on: poller, timeout: .seconds(5)))) }
        usleep(200_000)
        let cpuBefore = server.cpuSeconds
        let holdStart = Deadline.now.nanoseconds
        usleep(2_000_000)
        let cpuSeconds = server.cpuSeconds - cpuBefore
        let cpu = cpuSeconds / (Double(Deadline.now.nanoseconds - holdStart) / 1e9)
        let serveStart = Deadline.now.nanoseconds
        let message = [UInt8](repeating: 1, count: 64)
        var got = [Int](repeating: 0, count: clientCount)
        var buffer = [UInt8](repeating: 0, count: 256)
        for (index, socket) in sockets.enumerated() {
            _ = try socket.write(message)
            try socket.register(on: poller, token: Token(UInt64(index)), interest: .readable)
        }
        var served = 0
        let events = EventBuffer(capacity: 256)
        let giveUp = Deadline.now.nanoseconds + 120_000_000_000
        while served < clientCount && Deadline.now.nanoseconds < giveUp {
            try poller.wait(into: events, timeout: .milliseconds(500))
            for event in events where !event.isWakeup {
                let index = Int(event.token.rawValue)
                guard !sockets[index].isClosed else { continue }
                if case .transferred(let n) = try sockets[index].read(into: &buffer) { got[index] += n }
                if got[index] >= message.count { sockets[index].close(); served += 1 }
            }
        }
        let serveSeconds = Double(Deadline.now.nanoseconds - serveStart) / 1e9
        for socket in sockets { socket.close() }
        let (_, out) = server.wait()
        let backoffs = field("accept-backoffs", in: out).map { String(Int($0)) } ?? "?"
        report.append("| \(backend.name) | \(format1(cpu * 100))% of a core (\(Int((cpuSeconds * Double(sysconf(Int32(_SC_CLK_TCK)))).rounded())) clock ticks in 2 s) | \(served)/\(clientCount) | \(backoffs) | \(format1(serveSeconds)) s |")
    }
    report.append("")
}

func format1(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

// MARK: Allocations

func allocationScenario() throws {
    guard Allocations.available else { report += ["## Allocations: not counted here (malloc-interposer inactive)", ""]; return }
    let poller = try Backend.epoll.makePoller()
    defer { try? poller.close() }
    let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
    let client = StreamSocket(try Connector.connect(to: listener.address, on: poller, timeout: .seconds(2)))
    guard case .accepted(let server, _) = try listener.accept() else { throw BenchError("accept") }
    let message = [UInt8](repeating: 7, count: 64)
    var buffer = [UInt8](repeating: 0, count: 256)
    let iterations = 10_000
    func roundTrip() throws {
        _ = try client.write(message)
        while case .wouldBlock = try server.read(into: &buffer) {}
        _ = try server.write(buffer, to: message.count)
        while case .wouldBlock = try client.read(into: &buffer) {}
    }
    for _ in 0..<100 { try roundTrip() }
    let readWrite = try Allocations.count { for _ in 0..<iterations { try roundTrip() } }

    let head = [UInt8](repeating: 1, count: 16), body = [UInt8](repeating: 2, count: 48)
    let vectored = try head.withUnsafeBytes { h in
        try body.withUnsafeBytes { b in
            let buffers = [h, b]
            return try Allocations.count {
                for _ in 0..<iterations {
                    _ = try client.write(vectored: buffers)
                    while case .wouldBlock = try server.read(into: &buffer) {}
                }
            }
        }
    }

    // Accept: connections queued first (not counted), then accepted (counted).
    let acceptCount = 200
    var clients: [StreamSocket] = []
    for _ in 0..<acceptCount { clients.append(StreamSocket(try Connector.connect(to: listener.address, on: poller, timeout: .seconds(2)))) }
    var accepted: [StreamSocket] = []
    accepted.reserveCapacity(acceptCount)
    let accepts = try Allocations.count {
        while accepted.count < acceptCount {
            if case .accepted(let socket, _) = try listener.accept() { accepted.append(socket) }
        }
    }
    let wouldBlock = try Allocations.count { for _ in 0..<iterations { _ = try listener.accept() } }

    // Timers in steady state.
    let timers = Timers(capacity: 1024)
    for index in 0..<512 { timers.schedule(at: Deadline(nanoseconds: Int64(index)), token: Token(UInt64(index))) }
    while timers.popDue(now: .distantFuture) != nil {}
    let timerOps = Allocations.count {
        for index in 0..<iterations {
            let id = timers.schedule(at: Deadline(nanoseconds: Int64(index % 512)), token: 1)
            if index % 2 == 0 { timers.cancel(id) }
            if index % 512 == 511 { while timers.popDue(now: .distantFuture) != nil {} }
        }
    }

    // A whole connect, per connection.
    let connects = 100
    var made: [ConnectedSocket] = []
    made.reserveCapacity(connects)
    let perConnect = try Allocations.count {
        for _ in 0..<connects { made.append(try Connector.connect(to: listener.address, on: poller, timeout: .seconds(2))) }
    }
    let connectTimers = Timers()
    var heSockets: [ConnectedSocket] = []
    heSockets.reserveCapacity(connects)
    let events = EventBuffer(capacity: 16)
    let happy = try Allocations.count {
        for _ in 0..<connects {
            let connect = HappyEyeballs(addresses: [listener.address], poller: poller, timers: connectTimers, tokenBase: 10)
            var progress = connect.start()
            while progress.isInProgress {
                try poller.wait(into: events, timeout: connectTimers.timeout())
                for event in events where connect.owns(event.token) { progress = connect.handle(event) }
            }
            if case .connected(let socket) = progress { heSockets.append(socket) }
        }
    }
    for socket in made + heSockets { close(socket.fd) }

    func per(_ count: Int, _ operations: Int) -> String {
        let value = Double(count) / Double(operations)
        return value == 0 ? "0" : String(Int((value * 100).rounded())) .withDecimal
    }
    report += ["## Allocations (malloc-interposer, epoll, steady state)", "",
               "| operation | heap allocations per operation |", "|---|---:|",
               "| read or write (64 B round trips: 4 calls each, \(iterations) round trips) | \(per(readWrite, iterations * 4)) |",
               "| vectored write of 2 buffers + read (\(iterations)) | \(per(vectored, iterations * 2)) |",
               "| accept of a queued connection (the StreamSocket object) | \(per(accepts, acceptCount)) |",
               "| accept with nothing queued (wouldBlock) | \(per(wouldBlock, iterations)) |",
               "| Timers schedule, cancel or fire | \(per(timerOps, iterations)) |",
               "| a whole connect through Connector (per connection) | \(per(perConnect, connects)) |",
               "| a whole connect through HappyEyeballs in a caller's loop (per connection) | \(per(happy, connects)) |", ""]
    _ = (clients, accepted)
}

extension String {
    /// "123" (hundredths) as "1.23".
    var withDecimal: String {
        let padded = count < 3 ? String(repeating: "0", count: 3 - count) + self : self
        return padded.dropLast(2) + "." + padded.suffix(2)
    }
}

func loadAverage() -> String {
    ((try? readFile("/proc/loadavg")) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
}
report.append("Load average (1, 5, 15 min) at the start: \(loadAverage()).")
report.append("")
do {
    if only.contains("allocations") { try allocationScenario() }
    if only.contains("http") { try httpScenario() }
    if only.contains("echo") { try echoScenario() }
    if only.contains("exhaustion") { try exhaustionScenario() }
} catch {
    report.append("**error:** \(error)")
}
report.append("Load average at the end: \(loadAverage()).")
print(report.joined(separator: "\n"))
