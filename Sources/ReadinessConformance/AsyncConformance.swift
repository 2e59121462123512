#if canImport(Glibc)
import Glibc
#endif
import Readiness
import Synchronization

/// The async layer's conformance suite: scripts of async operations on an ``EventLoop`` made over any
/// poller factory, with one expected outcome per step and descriptor accounting at the end.
///
/// For the author of a new backend:
/// ```swift
/// import ReadinessConformance
/// let report = await AsyncConformance.run(backend: "mine") { () throws(PollerError) -> any Poller in try MyPoller() }
/// print(report.summary)            // or assert report.failures.isEmpty in a test
/// ```
///
/// Run with nothing else in the process opening or closing descriptors (`swift test --no-parallel`):
/// every scenario compares the count of `/proc/self/fd` before the loop and after its shutdown.
public enum AsyncConformance {
    /// Creates the poller of each scenario's loop (called on the loop's thread).
    public typealias Factory = @Sendable () throws(PollerError) -> any Poller

    /// How long the descriptor count may take to settle after a shutdown (a lookup thread may still
    /// hold one for a moment).
    static let settleAttempts = 50
    /// The pause between two descriptor counts while settling, in microseconds.
    static let settlePause: useconds_t = 10_000

    /// Runs one scenario on a new loop over `makePoller` and compares each step with the script.
    ///
    /// With no result within `timeLimit` (a loop whose poller never returns) the scenario fails as
    /// hung and its task is left running; `nil` waits for it, unbounded.
    public static func run(_ scenario: AsyncScenario, backend: String, timeLimit: Duration? = Conformance.defaultTimeLimit,
                           makePoller: @escaping Factory) async -> ScenarioResult {
        let outcome = await Watchdog.run(limit: timeLimit) { () async -> ScenarioResult in
            await execute(scenario.id, scenario.script, requirements: scenario.requirements, backend: backend, makePoller: makePoller) { trace in
                let diff = trace.filter { !matches($0.observed, $0.expected) }.map {
                    "step \($0.index) (\($0.step)): expected \($0.expected), observed \($0.observed)"
                }
                return diff.isEmpty ? .passed : .failed(diff.joined(separator: "\n"))
            }
        }
        return outcome ?? Watchdog.hung(scenario.id, backend: backend, limit: timeLimit ?? .zero)
    }

    /// Runs every async scenario (or the ones given) on one backend.
    public static func run(backend: String, scenarios: [AsyncScenario] = AsyncConformance.scenarios,
                           timeLimit: Duration? = Conformance.defaultTimeLimit,
                           makePoller: @escaping Factory) async -> BackendReport {
        let start = ContinuousClock.now
        var results: [ScenarioResult] = []
        for scenario in scenarios {
            results.append(await run(scenario, backend: backend, timeLimit: timeLimit, makePoller: makePoller))
        }
        return BackendReport(backend: backend, results: results, duration: ContinuousClock.now - start)
    }

    /// Runs a script without expectations: the trace is the result (the async differential generator
    /// compares two backends' traces). Descriptor accounting still fails the run.
    /// Under a time limit, as ``run(_:backend:timeLimit:makePoller:)``: a loop that hangs fails the
    /// script as hung instead of hanging the differential run.
    public static func record(_ steps: [AsyncStep], backend: String, timeLimit: Duration? = Conformance.defaultTimeLimit,
                              makePoller: @escaping Factory) async -> ScenarioResult {
        let outcome = await Watchdog.run(limit: timeLimit) { () async -> ScenarioResult in
            await execute("differential", steps.map { AsyncLine($0) }, requirements: [], backend: backend, makePoller: makePoller) { _ in .passed }
        }
        return outcome ?? Watchdog.hung("differential", backend: backend, limit: timeLimit ?? .zero)
    }

    /// Whether an observed outcome is one the expectation allows.
    static func matches(_ observed: Observation, _ expected: Observation) -> Bool {
        if case .anyOf(let outcomes) = expected { return outcomes.contains { matches(observed, $0) } }
        return observed == expected
    }

    /// Whether a script ran in this process yet (see ``execute(_:_:requirements:backend:makePoller:warming:verdict:)``).
    private static let warmedUp = Locked(false)

    static func execute(_ id: String, _ script: [AsyncLine], requirements: [Requirement], backend: String,
                        makePoller: @escaping Factory, warming: Bool = false,
                        verdict: ([TraceLine]) -> ScenarioResult.Outcome) async -> ScenarioResult {
        // The first script in a process runs twice, the first time unjudged: the runtime and libdispatch
        // open process-wide descriptors on first use (a timerfd of libdispatch's manager thread), which
        // the descriptor accounting would otherwise blame on the loop. Only a warm-up that ran (made a
        // loop) counts: one skipped for the backend's capabilities warms nothing.
        if !warming, !warmedUp.withLock({ $0 }) {
            // It marks the process warmed once it has made its loop (EventLoop below).
            _ = await execute(id, script, requirements: requirements, backend: backend, makePoller: makePoller,
                              warming: true) { _ in .passed }
        }
        let start = ContinuousClock.now
        func result(_ outcome: ScenarioResult.Outcome, _ trace: [TraceLine] = []) -> ScenarioResult {
            ScenarioResult(scenario: id, backend: backend, outcome: outcome, trace: trace, duration: ContinuousClock.now - start)
        }
        // A poller first, closed at once: its capabilities, and the process-wide descriptors a library
        // opens lazily on first use (libevent) are open before the count.
        do {
            let probe = try makePoller()
            _ = try? probe.wait(into: EventBuffer(capacity: 4), timeout: .milliseconds(1))
            let capabilities = probe.capabilities
            try? probe.close()
            if let missing = requirements.first(where: { !$0.isMet(capabilities) }) { return result(.skipped(missing.reason)) }
        } catch {
            return result(.failed("the poller could not be created: \(error)"))
        }
        let before = openDescriptors()
        let loop: EventLoop
        do { loop = try EventLoop(name: "conformance", makePoller: makePoller) } catch {
            return result(.failed("the loop could not be created: \(error)"))
        }
        if warming { warmedUp.withLock { $0 = true } }
        let run = AsyncRun(loop: loop)
        let trace = await withTaskExecutorPreference(loop) { () async -> [TraceLine] in
            var trace: [TraceLine] = []
            for (index, line) in script.enumerated() {
                let observed = await run.run(line.step)
                trace.append(TraceLine(index: index + 1, step: line.step.description, expected: line.expect, observed: observed))
                await run.settle()
            }
            return trace
        }
        var problems = await run.finish()
        let after = await settledDescriptors(before)
        if after != before {
            let opened = after.filter { before[$0.key] != $0.value }.sorted { $0.key < $1.key }.map { "\($0.key) -> \($0.value)" }
            let closed = before.filter { after[$0.key] != $0.value }.sorted { $0.key < $1.key }.map { "\($0.key) -> \($0.value)" }
            problems.append("descriptors: \(before.count) open before the loop, \(after.count) after its shutdown"
                + (opened.isEmpty ? "" : "; left open: " + opened.joined(separator: ", "))
                + (closed.isEmpty ? "" : "; closed or replaced: " + closed.joined(separator: ", ")))
        }
        let outcome = verdict(trace)
        if problems.isEmpty { return result(outcome, trace) }
        if case .failed(let diff) = outcome { problems.insert(diff, at: 0) }
        return result(.failed(problems.joined(separator: "\n")), trace)
    }

    /// The descriptors open in this process, each with what it refers to (`/proc/self/fd`).
    static func openDescriptors() -> [CInt: String] {
        guard let directory = opendir("/proc/self/fd") else { return [:] }
        defer { closedir(directory) }
        let own = dirfd(directory)
        var out: [CInt: String] = [:]
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = CInt(name), fd != own else { continue }
            var target = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
            out[fd] = n > 0 ? String(decoding: target[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        return out
    }

    /// The open descriptors once they are `expected`, or after half a second.
    static func settledDescriptors(_ expected: [CInt: String]) async -> [CInt: String] {
        for _ in 0..<settleAttempts {
            let now = openDescriptors()
            if now == expected { return now }
            usleep(settlePause)
        }
        return openDescriptors()
    }
}
