import Readiness
import ReadinessConformance
import Testing

/// The async conformance suite, on every backend and libevent variant: each async scenario is one test
/// case; and the async differential generator's scripts agree on every backend.
@Suite("Async conformance", .serialized)
struct AsyncConformanceTests {
    @Test("async scenario", arguments: backends, AsyncConformance.scenarios)
    func scenario(backend: Backend, scenario: AsyncScenario) async throws {
        try expect(await AsyncConformance.run(scenario, backend: backend.name) { () throws(PollerError) -> any Poller in
            try backend.makePoller()
        })
    }

    /// Scripts per run of the test (the tool's `make run` runs more).
    static let differentialScripts: UInt64 = 100

    @Test("async differential: random interleavings agree on every backend")
    func differential() async {
        let contenders = backends.map { backend in
            AsyncDifferential.Contender(name: backend.name) { () throws(PollerError) -> any Poller in try backend.makePoller() }
        }
        for seed in 1...Self.differentialScripts {
            if let failure = await AsyncDifferential.check(seed: seed, length: 24, contenders: contenders) {
                Issue.record("\(failure)")
            }
        }
    }

    @Test("a generated script is reproducible from its seed and ends with the loop's shutdown")
    func reproducible() {
        let script = AsyncDifferential.script(seed: 7, length: 24)
        #expect(script == AsyncDifferential.script(seed: 7, length: 24))
        #expect(script != AsyncDifferential.script(seed: 8, length: 24))
        #expect(script.contains(.shutdownLoop))
    }
}
