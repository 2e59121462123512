// readiness-http-bench: Examples/readiness-http-server (release, one loop, epoll) beside nginx (one
// worker, `return 200`) and SwiftNIO's NIOHTTP1 server (one thread), under wrk: requests per second at
// -c64 and -c256, server CPU per request (user + system of the server's processes over the run, from
// /proc), and peak RSS (VmHWM). Interleaved rounds (the order turns every round), ratios per round.
//
//   readiness-http-bench --server PATH [--nio PATH] [--rounds 3] [--seconds 5] [--backend epoll]
//                        [--backends epoll,io_uring,io_uring-readiness] [--connections 64,256] [--no-nginx]
//
// --backends runs one Readiness server per entry, each on one loop: a backend's name, or
// `io_uring-readiness` (io_uring with READINESS_IO_DRIVER=readiness: the readiness driver instead of
// the completion driver that io_uring loops use by default). Their per-round ratios to the first
// entry follow the table.
//
// Every server answers "Hello, world!" (13 bytes) to `GET /` over keep-alive connections on 127.0.0.1.
// `make bench-http` builds everything in release and runs it; it prints a Markdown table.
import Foundation

/// A command line it cannot run: says why on standard error and exits 64 (EX_USAGE), never a trap.
func usageFailure(_ message: String) -> Never {
    FileHandle.standardError.write(Data("\(CommandLine.arguments.first ?? "bench"): \(message)\n".utf8))
    exit(64)
}

struct Options {
    var server = ""
    var nio: String?
    var rounds = 3
    var seconds = 5
    var backends = ["epoll"]
    var connections = [64, 256]
    var nginx = true
}

func parse() -> Options {
    var options = Options()
    var rest = CommandLine.arguments.dropFirst().makeIterator()
    while let flag = rest.next() {
        if flag == "--no-nginx" {
            options.nginx = false
            continue
        }
        guard let value = rest.next() else { usageFailure("\(flag) needs a value") }
        switch flag {
        case "--server": options.server = value
        case "--nio": options.nio = value
        case "--rounds": options.rounds = max(1, Int(value) ?? 3)
        case "--seconds": options.seconds = max(1, Int(value) ?? 5)
        case "--backend": options.backends = [value]
        case "--backends": options.backends = value.split(separator: ",").map(String.init)
        case "--connections": options.connections = value.split(separator: ",").compactMap { Int($0) }
        default: usageFailure("unknown option \(flag)")
        }
    }
    guard !options.server.isEmpty else { usageFailure("--server PATH (the readiness-http-server binary) is needed") }
    return options
}

/// A free loopback port (bound to 0, read back, released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A server process (and its children: nginx's worker), its CPU and memory read from /proc.
final class Server {
    let name: String
    let process: Process
    let port: Int
    let directory: String?

    init(name: String, executable: String, arguments: [String], port: Int, directory: String? = nil,
         environment: [String: String] = [:]) throws {
        self.name = name
        self.port = port
        self.directory = directory
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Up once a connect is accepted.
        for _ in 0..<500 {
            if Server.connects(port) { return }
            usleep(10_000)
        }
        throw NSError(domain: "readiness-http-bench", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(name) did not start"])
    }

    static func connects(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// The server's process and its descendants.
    var pids: [Int32] {
        var all: [Int32] = [process.processIdentifier]
        var index = 0
        while index < all.count {
            let pid = all[index]
            if let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) {
                all += text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            index += 1
        }
        return all
    }

    /// User + system CPU of every process of the server, in seconds.
    var cpuSeconds: Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return pids.reduce(0.0) { total, pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return total }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the name: state is field 3; utime and stime are fields 14 and 15 (1-based).
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / ticks
        }
    }

    /// Peak resident memory of every process of the server, in MB (VmHWM).
    var peakRSSMegabytes: Double {
        pids.reduce(0.0) { total, pid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                  let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return total }
            return total + kb / 1024
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }
}

func startNginx() throws -> Server? {
    guard let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        print("nginx is not installed: its rows are skipped (apt-get install nginx-light)")
        return nil
    }
    let port = freePort()
    let directory = NSTemporaryDirectory() + "readiness-http-bench-nginx-\(getpid())"
    try? FileManager.default.removeItem(atPath: directory)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let config = """
        worker_processes 1;
        daemon off;
        pid \(directory)/nginx.pid;
        error_log \(directory)/error.log;
        events { worker_connections 4096; }
        http {
            access_log off;
            client_body_temp_path \(directory); proxy_temp_path \(directory); fastcgi_temp_path \(directory);
            uwsgi_temp_path \(directory); scgi_temp_path \(directory);
            keepalive_requests 1000000;
            server { listen 127.0.0.1:\(port); location / { default_type text/plain; return 200 "Hello, world!"; } }
        }
        """
    try config.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
    return try Server(name: "nginx, 1 worker", executable: nginx, arguments: ["-c", directory + "/nginx.conf", "-p", directory],
                      port: port, directory: directory)
}

/// A wrk latency ("812.00us", "1.23ms", "2.00s") in microseconds.
func microseconds(_ text: Substring) -> Double? {
    for (unit, scale) in [("us", 1.0), ("ms", 1_000.0), ("s", 1_000_000.0)] where text.hasSuffix(unit) {
        return Double(text.dropLast(unit.count)).map { $0 * scale }
    }
    return nil
}

/// wrk's requests per second, request count and 99th percentile latency (microseconds, from
/// `--latency`), or nil when it failed.
func wrk(_ port: Int, connections: Int, seconds: Int) -> (rate: Double, requests: Double, p99: Double, errors: Bool)? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
    process.arguments = ["-t1", "-c\(connections)", "-d\(seconds)s", "--latency", "http://127.0.0.1:\(port)/"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    guard (try? process.run()) != nil else { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard let rateLine = text.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }),
          let rate = Double(rateLine.split(separator: " ").last ?? ""),
          let countLine = text.split(separator: "\n").first(where: { $0.contains("requests in") }),
          let count = Double(countLine.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? ""),
          let p99Line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("99%") }),
          let p99 = p99Line.split(separator: " ").last.flatMap(microseconds) else { return nil }
    return (rate, count, p99, text.contains("Non-2xx") || text.contains("Socket errors"))
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

let options = parse()
guard FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else { fatalError("wrk is not installed (apt-get install wrk)") }
var servers: [Server] = []
for entry in options.backends {
    // `io_uring-readiness`: io_uring polled by the readiness driver (the completion driver opted out).
    let readinessDriver = entry.hasSuffix("-readiness")
    let backend = readinessDriver ? String(entry.dropLast("-readiness".count)) : entry
    let driver = backend == "io_uring" ? (readinessDriver ? ", readiness driver" : ", completion driver") : ""
    let port = freePort()
    servers.append(try Server(name: "Readiness (readiness-http-server, 1 loop, \(backend)\(driver))", executable: options.server,
                              arguments: ["--port", "\(port)", "--loops", "1", "--backend", backend], port: port,
                              environment: readinessDriver ? ["READINESS_IO_DRIVER": "readiness"] : [:]))
}
if options.nginx, let nginx = try startNginx() { servers.append(nginx) }
if let nio = options.nio {
    let port = freePort()
    servers.append(try Server(name: "SwiftNIO (NIOHTTP1, 1 thread)", executable: nio, arguments: ["--port", "\(port)"], port: port))
}
defer { for server in servers { server.stop() } }

// rates[server][connections] = per-round rates; cpu likewise (µs per request).
var rates = Array(repeating: [Int: [Double]](), count: servers.count)
var cpu = Array(repeating: [Int: [Double]](), count: servers.count)
var p99 = Array(repeating: [Int: [Double]](), count: servers.count)
var errors = Array(repeating: false, count: servers.count)
for round in 0..<options.rounds {
    for connections in options.connections {
        let order = round % 2 == 0 ? Array(servers.indices) : Array(servers.indices.reversed())
        for index in order {
            let server = servers[index]
            _ = wrk(server.port, connections: connections, seconds: 1)   // warm-up
            let before = server.cpuSeconds
            guard let result = wrk(server.port, connections: connections, seconds: options.seconds) else {
                print("round \(round + 1): wrk failed against \(server.name)")
                continue
            }
            let used = server.cpuSeconds - before
            rates[index][connections, default: []].append(result.rate)
            p99[index][connections, default: []].append(result.p99)
            cpu[index][connections, default: []].append(used / result.requests * 1_000_000)
            errors[index] = errors[index] || result.errors
            print("round \(round + 1) -c\(connections) \(server.name): \(Int(result.rate)) req/s, \(String(format: "%.1f", used / result.requests * 1_000_000)) us CPU per request, p99 \(Int(result.p99)) us")
        }
    }
}

let nginxIndex = servers.firstIndex { $0.name.hasPrefix("nginx") }
print("")
print("| server | " + options.connections.map { "req/s -c\($0) (median; per-round ratio to nginx)" }.joined(separator: " | ") + " | CPU per request (median, -c64) | " + options.connections.map { "p99 -c\($0) (median)" }.joined(separator: " | ") + " | peak RSS |")
print("|---|" + options.connections.map { _ in "---|---|" }.joined() + "---|---|")
for (index, server) in servers.enumerated() {
    var cells: [String] = []
    for connections in options.connections {
        let mine = rates[index][connections] ?? []
        var cell = "\(Int(median(mine)))"
        if let nginxIndex, nginxIndex != index, let theirs = rates[nginxIndex][connections], theirs.count == mine.count {
            let ratios = zip(mine, theirs).map { $0 / $1 }
            cell += " (\(String(format: "%.2f", median(ratios)))x; \(ratios.map { String(format: "%.2f", $0) }.joined(separator: ", ")))"
        }
        cells.append(cell)
    }
    let cpuCell = String(format: "%.1f us", median(cpu[index][options.connections.first ?? 64] ?? []))
    let rss = String(format: "%.1f MB", server.peakRSSMegabytes)
    let latencyCells = options.connections.map { "\(Int(median(p99[index][$0] ?? []))) us" }
    print("| \(server.name)\(errors[index] ? " (wrk saw errors)" : "") | " + cells.joined(separator: " | ") + " | \(cpuCell) | "
          + latencyCells.joined(separator: " | ") + " | \(rss) |")
}
if options.backends.count > 1 {
    // Each Readiness server against the first one, per round (same round, same machine state).
    print("")
    for index in 1..<options.backends.count {
        for connections in options.connections {
            let mine = rates[index][connections] ?? [], first = rates[0][connections] ?? []
            guard mine.count == first.count, !mine.isEmpty else { continue }
            let ratios = zip(mine, first).map { $0 / $1 }
            let cpuRatios = zip(cpu[index][connections] ?? [], cpu[0][connections] ?? []).map { $0 / $1 }
            print("- \(servers[index].name) / \(servers[0].name), -c\(connections): req/s \(String(format: "%.2f", median(ratios)))x (rounds: \(ratios.map { String(format: "%.2f", $0) }.joined(separator: ", "))), CPU per request \(String(format: "%.2f", median(cpuRatios)))x")
        }
    }
}
print("")
print("\(options.rounds) rounds x \(options.seconds) s per server and concurrency, wrk -t1, interleaved (the order turns each round); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(Date())")
