import Readiness
import ReadinessConformance
import Testing

/// The conformance suite, on every backend and libevent variant: each scenario is one test case.
@Suite("Conformance")
struct ConformanceTests {
    @Test("scenario", arguments: backends, Conformance.scenarios)
    func scenario(backend: Backend, scenario: Scenario) throws {
        let result = Conformance.run(scenario, backend: backend.name) { try backend.makePoller() }
        switch result.outcome {
        case .passed:
            break
        case .skipped(let reason):
            // Reported as skipped, with the reason: never counted as a pass.
            try Test.cancel("\(scenario.id) skipped on \(backend.name): \(reason)")
        case .failed(let diff):
            Issue.record("\(scenario.id) on \(backend.name):\n\(diff)")
        }
    }
}
