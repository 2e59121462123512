// readiness-bench: Readiness's backends against raw epoll/poll/select loops in C, libevent's own loop
// driven from C, and SwiftNIO, in one run. Writes Docs/Benchmarks.md and Docs/benchmark-scaling.svg.
import CReadinessBench
import Glibc

let usage = """
    usage: readiness-bench [--quick | --tiny] [--out DIR] [--only SCENARIOS]

      (default)   the full run published in Docs/Benchmarks.md (a few minutes)
      --quick     every scenario and contender with fewer rounds: under a minute
      --tiny      tiny parameters, a few seconds (the test suite's smoke run); writes to
                  Tests/Benchmarks/.build/tiny-report unless --out is given
      --out DIR   where Benchmarks.md and benchmark-scaling.svg go (default: the repository's Docs/)
      --only 1,3  run only these scenarios (for profiling; the report then has only those)
      --render-only  rewrite the report from the saved results of the last run that wrote Docs/
                  (Tests/Benchmarks/.build/last-run.tsv), e.g. after editing Tests/Benchmarks/Analysis.md;
                  measures nothing
      --contender TEXT   run only the contenders whose name contains TEXT, or one of TEXT|TEXT|... (for profiling)
      --passes K  passes over the contenders (default: 12 full, 2 quick, 1 tiny)
      --scaling-n 1,100  the N of scenario 2 (for profiling)
    """

var mode = RunMode.full
var outDirectory: String?
var passesOverride: Int?
var renderOnly = false
var scalingOverride: [Int]?
var only: Set<Int> = [1, 2, 3, 4]
var arguments = Array(CommandLine.arguments.dropFirst())
while !arguments.isEmpty {
    let argument = arguments.removeFirst()
    switch argument {
    case "--quick": mode = .quick
    case "--tiny": mode = .tiny
    case "--full": mode = .full
    case "--out":
        guard !arguments.isEmpty else { print(usage); exit(2) }
        outDirectory = arguments.removeFirst()
    case "--only":
        guard !arguments.isEmpty else { print(usage); exit(2) }
        only = Set(arguments.removeFirst().split(separator: ",").compactMap { Int($0) })
    case "--passes":
        guard !arguments.isEmpty, let n = Int(arguments.removeFirst()), n > 0 else { print(usage); exit(2) }
        passesOverride = n
    case "--scaling-n":
        guard !arguments.isEmpty else { print(usage); exit(2) }
        scalingOverride = arguments.removeFirst().split(separator: ",").compactMap { Int($0) }
    case "--render-only":
        renderOnly = true
    case "--contender":
        guard !arguments.isEmpty else { print(usage); exit(2) }
        contenderFilter = arguments.removeFirst()
    case "-h", "--help":
        print(usage)
        exit(0)
    default:
        print("unknown argument \(argument)\n\(usage)")
        exit(2)
    }
}

Allocations.ensureInterposed(arguments: CommandLine.arguments)
// A peer that resets a connection must not kill the process with SIGPIPE.
signal(SIGPIPE, SIG_IGN)

let repositoryRoot: String = {
    // #filePath is .../Tests/Benchmarks/Sources/readiness-bench/main.swift
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(5)
    return parts.joined(separator: "/")
}()

let out: String = {
    if let outDirectory { return outDirectory }
    if mode == .tiny {
        // Under the benchmark package's build directory, replaced by every smoke run: nothing in /tmp.
        let directory = repositoryRoot + "/Tests/Benchmarks/.build/tiny-report"
        mkdir(repositoryRoot + "/Tests/Benchmarks/.build", 0o755)
        mkdir(directory, 0o755)
        return directory
    }
    return repositoryRoot + "/Docs"
}()

func log(_ line: String) {
    print(line)
    fflush(nil)
}

let savedPath = repositoryRoot + "/Tests/Benchmarks/.build/last-run.tsv"
if renderOnly {
    do {
        guard let text = Machine.readFile(savedPath) else { throw BenchError("no saved results at \(savedPath)") }
        let saved = try Saved.decode(text)
        let report = Report(results: saved.results, plan: saved.plan, machine: saved.machine, seconds: saved.seconds,
                            repositoryRoot: repositoryRoot, loadAtEnd: saved.loadAtEnd)
        try report.write(to: out)
        log("rewrote \(out)/Benchmarks.md and \(out)/benchmark-scaling.svg from \(savedPath) (\(saved.plan.mode.rawValue) run of \(saved.machine.date))")
        exit(0)
    } catch {
        log("error: \(error)")
        exit(1)
    }
}

var plan = Plan.make(mode)
if let passesOverride { plan.passes = passesOverride }
if let scalingOverride { plan.scalingN = scalingOverride }
let machine = Machine.describe(repositoryRoot: repositoryRoot)
let runStart = rb_now_ns()
log("readiness-bench (\(mode.rawValue)) — \(machine.summary)")
log("allocation counting: \(Allocations.available ? "on (malloc-interposer)" : "off")")
#if DEBUG
// A debug build neither specialises nor inlines across modules, so generic code boxes and allocates
// where the release build does not: its allocs/wait are labelled and say nothing about the published
// figures (Docs/Benchmarks.md, release: no allocation on the wait path).
log("debug build: allocation figures below are debug-build figures (unspecialised generics allocate); the release figures are in Docs/Benchmarks.md")
#endif

var results: [Result] = []

// Scenario 1: the ring.
if only.contains(1) {
    for config in plan.ringConfigs {
        let parameters = "n=\(config.n) a=\(config.active) w=\(config.writes)"
        log("scenario 1, ring, \(parameters)")
        let events = config.active + config.writes
        results += runConfiguration(
            plan: plan, scenario: 1, title: "Ring", parameters: parameters, x: config.n,
            contenders: Contenders.waitContenders, roundsPerPass: plan.ringRoundsPerPass(events),
            warmup: plan.ringWarmupRounds,
            make: { try Contenders.ring($0, mode: .plain, n: config.n, active: config.active, writes: config.writes) },
            log: log)
    }
}

// Scenario 2: one ready descriptor among N.
if only.contains(2) {
    for n in plan.scalingN {
        let contenders = Contenders.waitContenders.filter { n <= plan.scalingMaxNonEpollN || $0.mechanism == "epoll" || $0.mechanism == "io_uring" }
        log("scenario 2, scaling, N=\(n)")
        results += runConfiguration(
            plan: plan, scenario: 2, title: "Scaling", parameters: "N=\(n)", x: n,
            contenders: contenders, roundsPerPass: plan.scalingRoundsPerPass, warmup: 1,
            make: { try Contenders.scale($0, n: n, iterations: plan.scalingIterations) },
            log: log)
    }
}

// Scenario 3: connect churn.
if only.contains(3) {
    var connectPlan = plan
    connectPlan.passes = passesOverride ?? plan.connectPasses
    for inFlight in plan.connectInFlight {
        log("scenario 3, connect churn, \(plan.connectTotal) connects, \(inFlight) in flight")
        results += runConfiguration(
            plan: connectPlan, scenario: 3, title: "Connect churn",
            parameters: "\(plan.connectTotal) connects, \(inFlight) in flight", x: inFlight,
            contenders: Contenders.connectContenders, roundsPerPass: plan.connectRoundsPerPass, warmup: 1,
            make: { contender in
                let instance = try Contenders.connect(contender, total: plan.connectTotal, inFlight: inFlight)
                (instance as? any ConnectInstance)?.warmupTotal = plan.connectWarmup
                return instance
            },
            log: log)
    }
}

// Scenario 4: interest churn on the ring.
if only.contains(4) {
    for churn in [RingMode.rearm, .reregister] {
        for config in plan.churnConfigs {
            let parameters = "n=\(config.n) a=\(config.active) w=\(config.writes), \(churn == .rearm ? "re-arm" : "re-register")"
            log("scenario 4, \(churn.title), \(parameters)")
            let events = config.active + config.writes
            results += runConfiguration(
                plan: plan, scenario: 4, title: "Interest churn", parameters: parameters, x: config.n,
                contenders: Contenders.churnContenders, roundsPerPass: plan.ringRoundsPerPass(events),
                warmup: plan.ringWarmupRounds,
                make: { try Contenders.ring($0, mode: churn, n: config.n, active: config.active, writes: config.writes) },
                log: log)
        }
    }
}

let seconds = Double(rb_now_ns() - runStart) / 1e9
let loadAtEnd = Machine.loadAverage()
let report = Report(results: results, plan: plan, machine: machine, seconds: seconds, repositoryRoot: repositoryRoot,
                    loadAtEnd: loadAtEnd)
do {
    // Saved for --render-only, only when the report goes to the repository's Docs/: the saved results
    // are always those of the published report (a --quick --out /tmp run must not replace them).
    if outDirectory == nil, mode != .tiny {
        let text = Saved.encode(results: results, plan: plan, machine: machine, seconds: seconds, loadAtEnd: loadAtEnd)
        if let file = fopen(savedPath, "w") {
            let bytes = Array(text.utf8)
            fwrite(bytes, 1, bytes.count, file)
            fclose(file)
        }
    }
    try report.write(to: out)
    log("wrote \(out)/Benchmarks.md and \(out)/benchmark-scaling.svg in \(fixed(seconds, 1)) s")
} catch {
    log("error: \(error)")
    exit(1)
}

// Every contender that should run here must have run: a contender that failed (not one skipped for
// a documented limit such as FD_SETSIZE) fails the run, so the smoke test catches it.
let failed = results.filter { $0.skipped?.hasPrefix("failed") == true || ($0.skipped == nil && $0.values.isEmpty) }
let unexpected = results.filter { r in
    guard let why = r.skipped, !why.hasPrefix("failed") else { return false }
    return !(why.contains("FD_SETSIZE") || why.contains("descriptorTooLarge") || why.contains("too large")
        || why.contains("has no") || why.contains("no \(r.contender.mechanism) method"))
}
for r in failed + unexpected {
    log("FAILED: scenario \(r.scenario) \(r.parameters) \(r.contender.name): \(r.skipped ?? "no rounds")")
}
let connectFailures = results.filter { $0.scenario == 3 && $0.failures > 0 }
for r in connectFailures {
    log("FAILED: scenario 3 \(r.parameters) \(r.contender.name): \(r.failures) connects failed")
}
if !failed.isEmpty || !unexpected.isEmpty || !connectFailures.isEmpty { exit(1) }
log("all \(results.count) measurements ran (\(results.filter { $0.skipped != nil }.count) skipped for a documented limit)")
