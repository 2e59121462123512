// readiness-udp-bench: UDP echo on 127.0.0.1 (issue 23). Five servers, each a child process on one
// thread or one loop (Servers.swift): Readiness's AsyncDatagramSocket one datagram at a time and with
// DatagramBatch (recvmmsg/sendmmsg), SwiftNIO's DatagramBootstrap with vectored reads, and C loops over
// epoll with recvmmsg/sendmmsg and with recvfrom/sendto. One load client, in C (rb_udp_load), drives
// every server: a window of W datagrams in flight, sequence numbers checked, losses counted.
//
//   readiness-udp-bench [--rounds 7] [--seconds 0.5] [--warmup 0.25] [--sizes 64,1200] [--windows 1,32]
//                       [--contenders readiness-single,...] [--backend epoll] [--syscall-datagrams 20000]
//                       [--quick]
//   readiness-udp-bench --serve CONTENDER [--backend epoll]      (a server: prints "port N")
//   readiness-udp-bench --load PORT [--sizes ...] [--windows ...] [--seconds S]   (the client alone, for profiling)
//
// Every server starts once and stays up. Per round, for each case (size and window), every server runs
// once, back to back, in an order that turns every round:
// datagrams echoed per second, and the server's CPU (every thread's on-CPU time from
// /proc/PID/task/*/schedstat) per datagram. Ratios are taken within a round. Then, once per server
// and case, system calls per datagram: `strace -c` attached to every thread of the warmed-up server
// while the client has a fixed number of datagrams echoed (and `perf stat -e raw_syscalls:sys_enter`
// the same way when perf works: it slows the server far less than strace, which changes batching).
import CReadinessBench
import Foundation
import Readiness

/// A command line it cannot run: says why on standard error and exits 64 (EX_USAGE), never a trap.
func usageFailure(_ message: String) -> Never {
    FileHandle.standardError.write(Data("\(CommandLine.arguments.first ?? "bench"): \(message)\n".utf8))
    exit(64)
}

struct Options {
    var rounds = 7
    var seconds = 0.5
    var warmup = 0.25
    var sizes = [64, 1200]
    var windows = [1, 32]
    var contenders = Contender.allCases
    var backend = "epoll"
    var syscallDatagrams = 20_000
}

/// The options of `--quick`: a sanity run of a few seconds.
let quickRounds = 1, quickSeconds = 0.3, quickWarmup = 0.1, quickSyscallDatagrams = 5_000

func parse(_ arguments: [String]) -> Options {
    var options = Options()
    var rest = arguments.makeIterator()
    func value(_ flag: String) -> String {
        guard let value = rest.next() else { usageFailure("\(flag) needs a value") }
        return value
    }
    func integers(_ text: String) -> [Int] { text.split(separator: ",").compactMap { Int($0) } }
    while let flag = rest.next() {
        switch flag {
        case "--quick":
            options.rounds = quickRounds
            options.seconds = quickSeconds
            options.warmup = quickWarmup
            options.syscallDatagrams = quickSyscallDatagrams
        case "--rounds": options.rounds = max(1, Int(value(flag)) ?? 1)
        case "--seconds": options.seconds = max(0.05, Double(value(flag)) ?? 1)
        case "--warmup": options.warmup = max(0, Double(value(flag)) ?? 0)
        case "--sizes": options.sizes = integers(value(flag))
        case "--windows": options.windows = integers(value(flag))
        case "--backend": options.backend = value(flag)
        case "--syscall-datagrams": options.syscallDatagrams = max(0, Int(value(flag)) ?? 0)
        case "--contenders":
            options.contenders = value(flag).split(separator: ",").map {
                guard let contender = Contender(rawValue: String($0)) else {
                    usageFailure("unknown contender \($0); known: \(Contender.allCases.map(\.rawValue).joined(separator: ","))")
                }
                return contender
            }
        default: usageFailure("unknown option \(flag)")
        }
    }
    return options
}

/// One case of the load: payload size and window.
struct Case: Hashable {
    let size: Int
    let window: Int
    var name: String { "\(size) B, W=\(window)" }
}

/// A server child process.
final class Server {
    let contender: Contender
    let process = Process()
    let port: Int

    init(_ contender: Contender, backend: String) throws {
        self.contender = contender
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = ["--serve", contender.rawValue, "--backend", backend]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        var text = ""
        while !text.contains("\n") {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let line = text.split(separator: "\n").first, line.hasPrefix("port "), let port = Int(line.dropFirst(5)) else {
            process.terminate()
            throw BenchError("\(contender.rawValue) did not start (said: \(text))")
        }
        self.port = port
    }

    var threads: [Int32] {
        let pid = process.processIdentifier
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return names.compactMap { Int32($0) }.sorted()
    }

    /// Every thread's on-CPU time in nanoseconds (the first field of /proc/PID/task/TID/schedstat).
    var cpuNanoseconds: Int64 {
        let pid = process.processIdentifier
        return threads.reduce(0) { total, tid in
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/schedstat", encoding: .utf8),
                  let first = text.split(separator: " ").first, let ns = Int64(first) else { return total }
            return total + ns
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One load run against `port`: the client's counts, or an error.
func load(port: Int, _ loadCase: Case, warmup: Double, seconds: Double, datagrams: Int = 0) throws -> rb_udp_load_result {
    var result = rb_udp_load_result()
    var error = [CChar](repeating: 0, count: 256)
    let status = rb_udp_load(CInt(port), CInt(loadCase.size), CInt(loadCase.window), Int64(warmup * 1e9), Int64(seconds * 1e9),
                             Int64(datagrams), &result, &error, CInt(error.count))
    guard status == 0 else { throw BenchError(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
    return result
}

/// One measurement: datagrams per second and server CPU per datagram.
struct Sample {
    var rate: Double
    var cpuPerDatagram: Double   // nanoseconds
    var clientShare: Double      // the client thread's CPU over the run's wall time (1: a core saturated)
    var lost: Int64
    var late: Int64
    var corrupt: Int64
}

func median(_ values: [Double]) -> Double {
    let sorted = values.filter { !$0.isNaN }.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func format(_ value: Double, _ digits: Int = 2) -> String { value.isNaN ? "-" : String(format: "%.\(digits)f", value) }
func thousands(_ value: Double) -> String {
    guard !value.isNaN else { return "-" }
    let digits = String(Int(value.rounded()))
    var out = ""
    for (index, character) in digits.reversed().enumerated() {
        if index > 0, index % 3 == 0 { out.append(",") }
        out.append(character)
    }
    return String(out.reversed())
}

// MARK: System calls

/// A tracer attached to every thread of a server while the client has `datagrams` echoed; stopped with
/// SIGINT (both strace -c and perf stat print their counts then). Returns what it wrote.
func traced(_ server: Server, tool: String, arguments: (_ threads: [Int32], _ output: String) -> [String],
            _ loadCase: Case, datagrams: Int) throws -> (text: String, echoed: Int64) {
    let output = NSTemporaryDirectory() + "readiness-udp-bench-\(getpid())-\(URL(fileURLWithPath: tool).lastPathComponent).txt"
    try? FileManager.default.removeItem(atPath: output)
    let tracer = Process()
    tracer.executableURL = URL(fileURLWithPath: tool)
    tracer.arguments = arguments(server.threads, output)
    tracer.standardOutput = FileHandle.nullDevice
    tracer.standardError = FileHandle.nullDevice
    try tracer.run()
    usleep(tracerAttachMicroseconds)
    defer { try? FileManager.default.removeItem(atPath: output) }
    let result: rb_udp_load_result
    do {
        result = try load(port: server.port, loadCase, warmup: 0, seconds: 0, datagrams: datagrams)
    } catch {
        kill(tracer.processIdentifier, SIGINT)
        tracer.waitUntilExit()
        throw error
    }
    kill(tracer.processIdentifier, SIGINT)
    tracer.waitUntilExit()
    return ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "", result.echoed)
}

/// How long a tracer is given to attach before the load starts.
let tracerAttachMicroseconds: UInt32 = 500_000

/// strace -c's table: calls per system call name.
func parseStrace(_ text: String) -> [String: Int] {
    var calls: [String: Int] = [:]
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 5, Double(fields[0]) != nil, let count = Int(fields[3]), let name = fields.last,
              name != "total" else { continue }
        calls[String(name)] = count
    }
    return calls
}

/// perf stat -x, output: the raw_syscalls:sys_enter count.
func parsePerf(_ text: String) -> Int? {
    for line in text.split(separator: "\n") where line.contains("raw_syscalls:sys_enter") {
        if let count = Int(line.split(separator: ",").first ?? "") { return count }
    }
    return nil
}

func executable(_ name: String) -> String? {
    ["/usr/bin/\(name)", "/usr/sbin/\(name)", "/bin/\(name)", "/usr/local/bin/\(name)"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
}

/// Whether `perf stat -e raw_syscalls:sys_enter` works here (a kernel with tracepoints and the right).
func perfWorks(_ perf: String) -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: perf)
    process.arguments = ["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "--", "/bin/true"]
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return false }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 && parsePerf(String(decoding: data, as: UTF8.self)) != nil
}

// MARK: Main

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--serve" {
    guard arguments.count >= 2, let contender = Contender(rawValue: arguments[1]) else { usageFailure("--serve CONTENDER") }
    let options = parse(Array(arguments.dropFirst(2)))
    try await serve(contender, backend: try Backend.named(options.backend))
    exit(0)
}

// For profiling a server started by hand: the load client alone.
if arguments.first == "--load" {
    guard arguments.count >= 2, let port = Int(arguments[1]) else { usageFailure("--load PORT [options]") }
    let options = parse(Array(arguments.dropFirst(2)))
    for size in options.sizes {
        for window in options.windows {
            let result = try load(port: port, Case(size: size, window: window), warmup: options.warmup, seconds: options.seconds)
            print("\(size) B, W=\(window): \(thousands(Double(result.echoed) / (Double(result.elapsed_ns) / 1e9))) datagrams/s, lost \(result.lost)")
        }
    }
    exit(0)
}

let options = parse(arguments)
let cases = options.sizes.flatMap { size in options.windows.map { Case(size: size, window: $0) } }
let contenders = options.contenders
// samples[contender][case] = one sample per round.
var samples: [Contender: [Case: [Sample]]] = [:]
let started = Date()
let loadAtStart = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"

// Every server runs for the whole measurement (an idle one waits in epoll_wait and costs nothing), so
// that the contenders of one case run back to back within a round, in an order that turns every round.
var servers: [Contender: Server] = [:]
for contender in contenders { servers[contender] = try Server(contender, backend: options.backend) }
for round in 0..<options.rounds {
    for loadCase in cases {
        let order = (0..<contenders.count).map { contenders[($0 + round) % contenders.count] }
        for contender in order {
            let server = servers[contender]!
            // A warm-up run, then the measured one, the server's CPU read around the measured one only.
            _ = try load(port: server.port, loadCase, warmup: 0, seconds: options.warmup)
            let before = server.cpuNanoseconds
            let result = try load(port: server.port, loadCase, warmup: 0, seconds: options.seconds)
            let used = Double(server.cpuNanoseconds - before)
            let elapsed = Double(result.elapsed_ns) / 1e9
            let rate = elapsed > 0 ? Double(result.echoed) / elapsed : .nan
            let sample = Sample(rate: rate, cpuPerDatagram: result.echoed > 0 ? used / Double(result.echoed) : .nan,
                                clientShare: result.elapsed_ns > 0 ? Double(result.client_cpu_ns) / Double(result.elapsed_ns) : .nan,
                                lost: result.lost, late: result.late, corrupt: result.corrupt)
            samples[contender, default: [:]][loadCase, default: []].append(sample)
            print("round \(round + 1) \(loadCase.name) \(contender.rawValue): \(thousands(rate)) datagrams/s, "
                  + "\(format(sample.cpuPerDatagram / 1000)) us server CPU/datagram, client CPU \(format(sample.clientShare * 100, 0))%, lost \(result.lost), late \(result.late), corrupt \(result.corrupt)")
        }
    }
}

// System calls per datagram, one traced run per server and case.
var straceCalls: [Contender: [Case: (calls: [String: Int], echoed: Int64)]] = [:]
var perfCalls: [Contender: [Case: Double]] = [:]
let strace = executable("strace")
let perf = executable("perf").flatMap { perfWorks($0) ? $0 : nil }
if options.syscallDatagrams > 0, perf == nil { print("perf stat -e raw_syscalls:sys_enter does not work here: no perf column") }
if options.syscallDatagrams > 0 {
    if strace == nil { print("strace is not installed: no system-call breakdown (apt-get install strace)") }
    for contender in contenders {
        let server = servers[contender]!
        for loadCase in cases {
            _ = try load(port: server.port, loadCase, warmup: 0, seconds: options.warmup)
            if let perf {
                let (text, echoed) = try traced(server, tool: perf, arguments: { threads, output in
                    ["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o", output, "-t", threads.map(String.init).joined(separator: ",")]
                }, loadCase, datagrams: options.syscallDatagrams)
                if let count = parsePerf(text), echoed > 0 {
                    perfCalls[contender, default: [:]][loadCase] = Double(count) / Double(echoed)
                } else {
                    print("perf said nothing we could read against \(contender.rawValue) \(loadCase.name): \(text)")
                }
            }
            if let strace {
                let (text, echoed) = try traced(server, tool: strace, arguments: { threads, output in
                    ["-c", "-f", "-o", output, "-p", String(server.process.processIdentifier)]   // -f: every thread
                }, loadCase, datagrams: options.syscallDatagrams)
                straceCalls[contender, default: [:]][loadCase] = (parseStrace(text), echoed)
                if parseStrace(text).isEmpty { print("strace said nothing we could read against \(contender.rawValue) \(loadCase.name): \(text)") }
            }
        }
    }
}

for server in servers.values { server.stop() }

// MARK: Report

let reference = Contender.nio, cLoop = Contender.cBatched
/// The per-round ratios of `contender` to `other` in `loadCase`, or nil when either is missing.
@MainActor func ratios(_ contender: Contender, to other: Contender, _ loadCase: Case) -> [Double]? {
    guard contender != other, let mine = samples[contender]?[loadCase], let theirs = samples[other]?[loadCase],
          mine.count == theirs.count else { return nil }
    return zip(mine, theirs).map { $0.rate / $1.rate }
}
/// The per-round ratios of `contender`'s server CPU per datagram to `other`'s.
@MainActor func cpuRatios(_ contender: Contender, to other: Contender, _ loadCase: Case) -> [Double]? {
    guard contender != other, let mine = samples[contender]?[loadCase], let theirs = samples[other]?[loadCase],
          mine.count == theirs.count else { return nil }
    return zip(mine, theirs).map { $0.cpuPerDatagram / $1.cpuPerDatagram }
}
func ratioCell(_ values: [Double]?) -> String {
    guard let values else { return "" }
    return "**\(format(median(values)))** (\(values.map { format($0) }.joined(separator: ", ")))"
}

print("")
print("| case | server | datagrams/s (median) | vs SwiftNIO: median (per round) | vs C recvmmsg loop: median (per round) | server CPU/datagram (median) | its ratio to the C recvmmsg loop's: median (per round) | client CPU (median) | syscalls/datagram (perf) | syscalls/datagram (strace), top calls | lost/late/corrupt |")
print("|---|---|---:|---|---|---:|---|---:|---:|---|---:|")
for loadCase in cases {
    for contender in contenders {
        guard let list = samples[contender]?[loadCase] else { continue }
        let rate = median(list.map(\.rate))
        let cpu = median(list.map(\.cpuPerDatagram))
        var straceCell = "-"
        if let traced = straceCalls[contender]?[loadCase], traced.echoed > 0 {
            let total = traced.calls.values.reduce(0, +)
            let top = traced.calls.sorted { $0.value > $1.value }.prefix(4)
                .map { "\($0.key) \(format(Double($0.value) / Double(traced.echoed)))" }.joined(separator: ", ")
            straceCell = "\(format(Double(total) / Double(traced.echoed))): \(top)"
        }
        let perfCell = perfCalls[contender]?[loadCase].map { format($0) } ?? "-"
        let losses = "\(list.map(\.lost).reduce(0, +))/\(list.map(\.late).reduce(0, +))/\(list.map(\.corrupt).reduce(0, +))"
        print("| \(loadCase.name) | \(contender.label) | \(thousands(rate)) | \(ratioCell(ratios(contender, to: reference, loadCase))) "
              + "| \(ratioCell(ratios(contender, to: cLoop, loadCase))) | \(format(cpu / 1000)) us | \(ratioCell(cpuRatios(contender, to: cLoop, loadCase))) "
              + "| \(format(median(list.map(\.clientShare)) * 100, 0))% | \(perfCell) | \(straceCell) | \(losses) |")
    }
}
print("")
print("\(options.rounds) rounds x \(format(options.seconds)) s per server and case after \(format(options.warmup)) s of warm-up, "
      + "the servers of a case back to back, order turned every round; backend \(options.backend); system calls over \(options.syscallDatagrams) echoed datagrams per server and case; "
      + "\(ProcessInfo.processInfo.activeProcessorCount) cores; load average at the start \(loadAtStart); \(started)")
