import Readiness
import ReadinessConformance
import Testing

/// The conformance suite, on every backend and libevent variant: each scenario is one test case.
@Suite("Conformance")
struct ConformanceTests {
    @Test("scenario", arguments: backends, Conformance.scenarios)
    func scenario(backend: Backend, scenario: Scenario) throws {
        try expect(Conformance.run(scenario, backend: backend.name) { try backend.makePoller() })
    }
}

/// A scenario's result as a test outcome, for either layer: a pass, a skip reported as a skip with
/// its reason (never counted as a pass), or a failure with the steps that differed.
func expect(_ result: ScenarioResult) throws {
    switch result.outcome {
    case .passed:
        break
    case .skipped(let reason):
        try Test.cancel("\(result.scenario) skipped on \(result.backend): \(reason)")
    case .failed(let diff):
        Issue.record("\(result.scenario) on \(result.backend):\n\(diff)")
    }
}
