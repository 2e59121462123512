import Readiness

/// The cross-backend conformance suite: one body of scenarios, run on any ``Poller``.
///
/// For the author of a new backend:
/// ```swift
/// import ReadinessConformance
/// let report = Conformance.run(backend: "mine") { try MyPoller() }
/// print(report.summary)            // or assert report.failures.isEmpty in a test
/// ```
public enum Conformance {
    /// Creates a fresh poller for each scenario.
    public typealias Factory = () throws -> any Poller

    /// How long a scenario may take before it fails as hung (``run(_:backend:timeLimit:makePoller:)``).
    public static let defaultTimeLimit: Duration = .seconds(60)

    /// Runs one scenario on a new poller from `makePoller` and compares each step with the script.
    ///
    /// The scenario runs on a thread of its own: with no result within `timeLimit` (a backend whose
    /// wait ignores its timeout and its waker) it fails as hung, and that thread is left running.
    /// `nil` runs it on the calling thread, unbounded.
    public static func run(_ scenario: Scenario, backend: String, timeLimit: Duration? = defaultTimeLimit,
                           makePoller: @escaping Factory) -> ScenarioResult {
        let outcome = Watchdog.run(limit: timeLimit) {
            execute(scenario, backend: backend, makePoller: makePoller) { trace, visible in
                let diff = trace.filter { !Observation.agree($0.observed, $0.expected, visible) }.map {
                    "step \($0.index) (\($0.step)): expected \($0.expected.masked(visible)), observed \($0.observed.masked(visible))"
                }
                return diff.isEmpty ? .passed : .failed(diff.joined(separator: "\n"))
            }
        }
        return outcome ?? Watchdog.hung(scenario.id, backend: backend, limit: timeLimit ?? .zero)
    }

    /// Runs a script without comparing it with expectations: the trace is the result (differential
    /// testing compares two backends' traces instead).
    /// Under the same time limit as ``run(_:backend:timeLimit:makePoller:)``: a backend that hangs fails
    /// the script as hung instead of hanging the differential run.
    public static func record(_ scenario: Scenario, backend: String, timeLimit: Duration? = defaultTimeLimit,
                              makePoller: @escaping Factory) -> ScenarioResult {
        let outcome = Watchdog.run(limit: timeLimit) {
            execute(scenario, backend: backend, makePoller: makePoller) { _, _ in .passed }
        }
        return outcome ?? Watchdog.hung(scenario.id, backend: backend, limit: timeLimit ?? .zero)
    }

    static func execute(_ scenario: Scenario, backend: String, makePoller: @escaping Factory,
                        verdict: ([TraceLine], Visibility) -> ScenarioResult.Outcome) -> ScenarioResult {
        let start = ContinuousClock.now
        func result(_ outcome: ScenarioResult.Outcome, _ trace: [TraceLine] = []) -> ScenarioResult {
            ScenarioResult(scenario: scenario.id, backend: backend, outcome: outcome, trace: trace, duration: ContinuousClock.now - start)
        }
        let poller: any Poller
        do { poller = try makePoller() } catch { return result(.failed("the poller could not be created: \(error)")) }
        let capabilities = poller.capabilities
        if let missing = scenario.requirements.first(where: { !$0.isMet(capabilities) }) {
            try? poller.close()
            return result(.skipped(missing.reason))
        }
        let run = ScenarioRun(poller: poller, makePoller: makePoller)
        defer { run.tearDown() }
        var trace: [TraceLine] = []
        do {
            for fixture in scenario.fixtures { try run.setUp(fixture) }
            for (index, line) in scenario.script.enumerated() {
                let observed = try run.run(line.step)
                trace.append(TraceLine(index: index + 1, step: line.step.description, expected: line.expect, observed: observed))
            }
        } catch let unsupported as Unsupported {
            return result(.skipped(unsupported.reason), trace)
        } catch {
            return result(.failed("set-up failed: \(error)"), trace)
        }
        return result(verdict(trace, Visibility(capabilities)), trace)
    }

    /// Runs every scenario (or the ones given) on one backend.
    public static func run(backend: String, scenarios: [Scenario] = Conformance.scenarios, timeLimit: Duration? = defaultTimeLimit,
                           makePoller: @escaping Factory) -> BackendReport {
        let start = ContinuousClock.now
        let results = scenarios.map { run($0, backend: backend, timeLimit: timeLimit, makePoller: makePoller) }
        return BackendReport(backend: backend, results: results, duration: ContinuousClock.now - start)
    }

    /// Compares two backends' traces of the same scenario, step by step, on the readiness bits both
    /// can report. Returns nil when they agree, otherwise a readable diff naming the steps.
    public static func compare(_ a: ScenarioResult, _ b: ScenarioResult, visible: Visibility) -> String? {
        var lines: [String] = []
        for (x, y) in zip(a.trace, b.trace) where !Observation.agree(x.observed, y.observed, visible) {
            lines.append("step \(x.index) (\(x.step)): \(a.backend) observed \(x.observed.masked(visible)), \(b.backend) observed \(y.observed.masked(visible))")
        }
        if a.trace.count != b.trace.count {
            lines.append("\(a.backend) ran \(a.trace.count) steps, \(b.backend) ran \(b.trace.count)")
        }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }
}

/// One backend's results.
public struct BackendReport: Sendable {
    public let backend: String
    public let results: [ScenarioResult]
    public let duration: Duration

    public var passed: Int { results.filter(\.passed).count }
    public var skipped: Int { results.filter(\.isSkipped).count }
    public var failures: [ScenarioResult] { results.filter { !$0.passed && !$0.isSkipped } }

    public var summary: String {
        var text = "\(backend): \(passed) passed, \(failures.count) failed, \(skipped) skipped in \(duration)"
        for failure in failures {
            if case .failed(let diff) = failure.outcome { text += "\n  FAIL \(failure.scenario)\n    " + diff.replacingOccurrences(of: "\n", with: "\n    ") }
        }
        return text
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
