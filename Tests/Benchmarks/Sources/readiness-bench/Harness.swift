import CReadinessBench
import Glibc

/// How big a run is.
enum RunMode: String, Sendable {
    /// The published numbers (`make bench`).
    case full
    /// Everything, fewer rounds and smaller connect rounds: under a minute.
    case quick
    /// Tiny parameters, seconds: the test suite's smoke run (it only checks that everything runs).
    case tiny
}

/// One scenario's parameters for a run mode.
struct Plan: Sendable {
    var mode: RunMode
    /// Passes over the contenders; each pass runs every contender (order rotated between passes) so
    /// that machine noise lands on all of them alike.
    var passes: Int
    /// Ring and interest churn: (n, a, w).
    var ringConfigs: [(n: Int, active: Int, writes: Int)]
    var churnConfigs: [(n: Int, active: Int, writes: Int)]
    /// Timed ring rounds per pass, for a configuration with `events` events per round.
    var ringRoundsPerPass: @Sendable (_ events: Int) -> Int
    var ringWarmupRounds: Int
    var scalingN: [Int]
    /// The largest N run by the poll- and select-based contenders (the issue runs 8000 for epoll only).
    var scalingMaxNonEpollN: Int
    var scalingIterations: Int
    var scalingRoundsPerPass: Int
    var connectTotal: Int
    var connectWarmup: Int
    var connectInFlight: [Int]
    var connectRoundsPerPass: Int
    /// Passes for connect churn (a round of 20,000 connects takes about a second).
    var connectPasses: Int

    static func make(_ mode: RunMode) -> Plan {
        switch mode {
        case .full:
            // Many short passes rather than a few long ones: every contender meets the same machine
            // noise (this is a 2-core machine that may be doing other work).
            return Plan(
                mode: mode, passes: 12,
                ringConfigs: [(100, 1, 100), (1000, 100, 10_000), (8000, 100, 10_000)],
                churnConfigs: [(100, 1, 100), (1000, 100, 10_000)],
                ringRoundsPerPass: { events in max(2, min(100, 8000 / max(1, events))) },
                ringWarmupRounds: 1,
                scalingN: [1, 10, 100, 1000, 8000], scalingMaxNonEpollN: 1000,
                scalingIterations: 1000, scalingRoundsPerPass: 2,
                connectTotal: 20_000, connectWarmup: 2000, connectInFlight: [1, 16, 128], connectRoundsPerPass: 1, connectPasses: 5)
        case .quick:
            return Plan(
                mode: mode, passes: 2,
                ringConfigs: [(100, 1, 100), (1000, 100, 10_000), (8000, 100, 10_000)],
                churnConfigs: [(100, 1, 100), (1000, 100, 10_000)],
                ringRoundsPerPass: { events in max(2, min(50, 5000 / max(1, events))) },
                ringWarmupRounds: 1,
                scalingN: [1, 10, 100, 1000, 8000], scalingMaxNonEpollN: 1000,
                scalingIterations: 300, scalingRoundsPerPass: 2,
                connectTotal: 2000, connectWarmup: 200, connectInFlight: [1, 16, 128], connectRoundsPerPass: 1, connectPasses: 2)
        case .tiny:
            return Plan(
                mode: mode, passes: 1,
                ringConfigs: [(10, 1, 10), (50, 5, 100)],
                churnConfigs: [(10, 1, 10)],
                ringRoundsPerPass: { _ in 1 },
                ringWarmupRounds: 1,
                scalingN: [1, 10, 100], scalingMaxNonEpollN: 100,
                scalingIterations: 50, scalingRoundsPerPass: 1,
                connectTotal: 50, connectWarmup: 5, connectInFlight: [1, 8], connectRoundsPerPass: 1, connectPasses: 1)
        }
    }
}

/// What one timed round measured.
struct Round {
    var nanoseconds: Int64
    /// Loop passes (waits) in the round.
    var waits: Int64
    /// Units of work: events (ring), iterations (scaling) or connections.
    var units: Int64
    var failures: Int64 = 0
    /// Connects the client saw succeed but the listener never produced (see RB_ACCEPT_GRACE_MS).
    var unaccepted: Int64 = 0
}

/// A contender's instance for one configuration: registered (untimed), then rounds, then closed.
protocol Instance: AnyObject {
    func round() throws -> Round
    /// An untimed round before the timed ones (connect contenders make it shorter).
    func warmUp() throws
    func close()
}

extension Instance {
    func warmUp() throws { _ = try round() }
}

/// A connect contender: its warm-up round makes `warmupTotal` connects instead of the round's total.
protocol ConnectInstance: Instance {
    var total: Int { get set }
    var warmupTotal: Int { get set }
}

extension ConnectInstance {
    func warmUp() throws {
        let timed = total
        total = min(warmupTotal, timed)
        defer { total = timed }
        _ = try round()
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The kind of loop a contender is, for ratios.
enum Family: String, Sendable {
    case raw, libeventC, readiness, nio
}

/// One contender as listed in the tables.
struct Contender: Sendable {
    /// As printed: "raw epoll", "libevent (C)", "Readiness epoll", "SwiftNIO", ...
    let name: String
    let family: Family
    /// The kernel mechanism underneath ("epoll", "poll", "select"): which raw loop it is compared to.
    let mechanism: String
    /// C contenders: libevent forced to this method (nil: its own choice).
    var method: String? = nil
    /// C contenders: what the like-for-like loops add (RB_NAMES, RB_CHECKS).
    var flags: CInt = 0
    /// Readiness contenders: the loop opens the poller once into its concrete type
    /// (`Backend.withConcreteType`) instead of calling it through `any Poller`.
    var specialised = false
}

/// The measurements of one contender in one configuration.
struct Result {
    let scenario: Int
    let scenarioTitle: String
    /// "n=1000 a=100 w=10000", "N=100", "in flight 16"...
    let parameters: String
    /// For scenario 2's plot: N.
    let x: Int
    let contender: Contender
    /// Per round: ns per unit (scenarios 1, 2, 4) or units per second (scenario 3).
    var values: [Double] = []
    var waits: Int64 = 0
    var units: Int64 = 0
    var failures: Int64 = 0
    var unaccepted: Int64 = 0
    /// On-CPU time of the benchmark thread and wall time over the timed rounds (diagnostics: a
    /// difference means time spent off the CPU, preempted or blocked).
    var cpuNanoseconds: Int64 = 0
    var wallNanoseconds: Int64 = 0
    /// Heap allocations per wait (or per connection for scenario 3), counted over one untimed round.
    var allocationsPerUnit: Double?
    var allocationsPerWait: Double?
    /// Why it did not run (FD_SETSIZE, method missing...).
    var skipped: String?

    var isRate: Bool { scenario == 3 }
}

enum Stats {
    static func sorted(_ values: [Double]) -> [Double] { values.sorted() }

    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Nearest-rank percentile (p in 0...100).
    static func percentile(_ values: [Double], _ p: Double) -> Double {
        let s = values.sorted()
        guard !s.isEmpty else { return .nan }
        let rank = Int((p / 100 * Double(s.count)).rounded(.up))
        return s[min(s.count - 1, max(0, rank - 1))]
    }
}

/// Only the contenders whose name contains this (`--contender`, for profiling).
nonisolated(unsafe) var contenderFilter: String?

/// Runs every contender of one configuration: `passes` passes, contender order rotated each pass,
/// each pass: set up (untimed registration), warm up, timed rounds, and in the last pass one more
/// round with the allocation counter on; close before the next contender.
func runConfiguration(
    plan: Plan, scenario: Int, title: String, parameters: String, x: Int,
    contenders: [Contender], roundsPerPass: Int, warmup: Int,
    make: (Contender) throws -> any Instance,
    log: (String) -> Void
) -> [Result] {
    let contenders = contenders.filter { c in contenderFilter.map { $0.split(separator: "|").contains { c.name.contains($0) } } ?? true }
    guard !contenders.isEmpty else { return [] }
    var results = contenders.map { Result(scenario: scenario, scenarioTitle: title, parameters: parameters, x: x, contender: $0) }
    for pass in 0..<plan.passes {
        let order = contenders.indices.map { (($0 + pass) % contenders.count) }
        for i in order {
            if results[i].skipped != nil { continue }
            let instance: any Instance
            do {
                instance = try make(contenders[i])
            } catch {
                results[i].skipped = "\(error)"
                continue
            }
            defer { instance.close() }
            do {
                for _ in 0..<warmup { try instance.warmUp() }
                for _ in 0..<roundsPerPass {
                    let cpuStart = rb_thread_cpu_ns()
                    let r = try instance.round()
                    results[i].cpuNanoseconds += rb_thread_cpu_ns() - cpuStart
                    results[i].wallNanoseconds += r.nanoseconds
                    results[i].waits += r.waits
                    results[i].units += r.units
                    results[i].failures += r.failures
                    results[i].unaccepted += r.unaccepted
                    let value: Double
                    if scenario == 3 {
                        value = Double(r.units) / (Double(r.nanoseconds) / 1e9)
                    } else {
                        value = Double(r.nanoseconds) / Double(max(1, r.units))
                    }
                    results[i].values.append(value)
                }
                if pass == plan.passes - 1, Allocations.available {
                    var counted = Round(nanoseconds: 0, waits: 0, units: 0)
                    let allocations = try Allocations.count { counted = try instance.round() }
                    results[i].allocationsPerWait = Double(allocations) / Double(max(1, counted.waits))
                    results[i].allocationsPerUnit = Double(allocations) / Double(max(1, counted.units))
                }
            } catch {
                results[i].skipped = "failed: \(error)"
                results[i].values = []
            }
        }
    }
    for r in results {
        if let skipped = r.skipped {
            log("  \(pad(r.contender.name, 30)) n/a: \(skipped)")
        } else {
            let unit = scenario == 3 ? "conn/s" : "ns"
            log("  \(pad(r.contender.name, 30)) median \(format(Stats.median(r.values))) \(unit)  [\(format(Stats.percentile(r.values, 10)))–\(format(Stats.percentile(r.values, 90)))]  \(debugLabel)\(scenario == 3 ? "allocs/conn" : "allocs/wait") \((scenario == 3 ? r.allocationsPerUnit : r.allocationsPerWait).map { format($0, decimals: 2) } ?? "-")  on-CPU \(fixed(Double(r.cpuNanoseconds) / Double(max(1, r.wallNanoseconds)) * 100, 0))%")
        }
    }
    return results
}

/// Allocation figures of a debug build are labelled as such (see main.swift).
#if DEBUG
let debugLabel = "debug-build "
#else
let debugLabel = ""
#endif

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// A number for tables: 3 significant digits, thousands without separators.
func format(_ value: Double, decimals: Int? = nil) -> String {
    guard value.isFinite else { return "–" }
    if let decimals { return fixed(value, decimals) }
    let magnitude = abs(value)
    if magnitude >= 1000 { return String(Int(value.rounded())) }
    if magnitude >= 100 { return fixed(value, 0) }
    if magnitude >= 10 { return fixed(value, 1) }
    return fixed(value, 2)
}

func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if decimals == 0 {
            text = String(text[..<dot])
        } else if have < decimals {
            text += String(repeating: "0", count: decimals - have)
        } else if have > decimals {
            text = String(text[...text.index(dot, offsetBy: decimals)])
        }
    } else if decimals > 0 {
        text += "." + String(repeating: "0", count: decimals)
    }
    return text
}

/// A NUL-terminated C buffer as a String.
func string(fromCBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
