import Readiness

/// Differential testing: random scripts (seeded, reproducible) run on several backends, whose traces
/// must be identical on the readiness bits they can all report. A failure names the seed and the
/// shortest script that still shows the difference.
public enum Differential {
    /// A backend under test.
    public struct Contender {
        public let name: String
        public let makePoller: Conformance.Factory
        public init(name: String, makePoller: @escaping Conformance.Factory) {
            self.name = name
            self.makePoller = makePoller
        }
    }

    public struct Failure: Sendable, CustomStringConvertible {
        public let seed: UInt64
        public let backends: (String, String)
        /// The shortest script found that still shows the difference.
        public let script: [Step]
        public let diff: String
        public var description: String {
            var text = "seed \(seed): \(backends.0) and \(backends.1) differ on this \(script.count)-step script:\n"
            for (index, step) in script.enumerated() { text += "  \(index + 1). \(step)\n" }
            return text + diff
        }
    }

    static let fixtures: [Fixture] = [.socketPair("a", "b"), .socketPair("c", "d"), .pipe(read: "r", write: "w")]

    /// A reproducible random script of `length` steps over two socketpairs and a pipe.
    public static func script(seed: UInt64, length: Int) -> [Step] {
        var random = SplitMix64(seed: seed)
        let watched = ["a", "c", "r", "w", "b"]
        // A pipe end is watched in its own direction only: select sees a pipe's hang-up in the read
        // set alone, so a read end watched for writability is outside what every backend can report
        // (Docs/Contract.md, "Hang-up and error").
        func interests(_ e: String) -> [Interest] {
            switch e {
            case "r": [.readable]
            case "w": [.writable]
            default: [.readable, .writable, .both]
            }
        }
        func interest(_ e: String) -> Interest {
            let choices = interests(e)
            return choices[random.below(choices.count)]
        }
        let triggers: [Trigger] = [.level, .level, .oneShot]
        var steps: [Step] = []
        for _ in 0..<length {
            let e = watched[random.below(watched.count)]
            let token = UInt64(1 + random.below(4))
            switch random.below(14) {
            case 0, 1: steps.append(.register(e, token: token, interest: interest(e), trigger: triggers[random.below(3)]))
            case 2: steps.append(.reregister(e, token: token, interest: interest(e), trigger: triggers[random.below(3)]))
            case 3: steps.append(.deregister(e))
            case 4, 5: steps.append(.write(["b", "d", "w", "a"][random.below(4)], bytes: 1 + random.below(3)))
            case 6: steps.append(.drain(["a", "c", "r", "b"][random.below(4)]))
            case 7: steps.append(.fill(["a", "c"][random.below(2)]))
            case 8: steps.append(.shutdownWrite(["b", "d"][random.below(2)]))
            case 9: steps.append(.wake(times: 1 + random.below(3), threads: 1))
            case 10: steps.append(random.below(8) == 0 ? .close(["b", "d", "w"][random.below(3)]) : .wait(timeout: .zero))
            default: steps.append(.wait(timeout: .zero))
            }
        }
        steps.append(.wait(timeout: .zero))
        return steps
    }

    /// Runs the script of `seed` on every contender and compares each with the first.
    /// Returns nil when all agree, otherwise the shrunk failure.
    public static func check(seed: UInt64, length: Int, contenders: [Contender]) -> Failure? {
        let keepsFiles = contenders.contains { !closeReleasesFile($0) }
        // Shrinking works on the generated script and applies the same rewrite to every candidate.
        let prepare: ([Step]) -> [Step] = { keepsFiles ? deregisteringBeforeClose($0) : $0 }
        let generated = script(seed: seed, length: length)
        guard let (a, b, diff) = firstDifference(prepare(generated), contenders) else { return nil }
        let shrunk = prepare(shrink(generated) { candidate in
            differ(prepare(candidate), a, b) != nil
        })
        return Failure(seed: seed, backends: (a.name, b.name), script: shrunk, diff: differ(shrunk, a, b) ?? diff)
    }

    /// `script` with a deregister before every close of an endpoint that may be registered: what two
    /// backends can be compared on when one of them keeps a registered descriptor's file open until it
    /// is deregistered (``Capabilities/closeReleasesFile`` false: io_uring). Closing a registered
    /// descriptor is still checked on such a backend by the `closed/` scenarios.
    public static func deregisteringBeforeClose(_ script: [Step]) -> [Step] {
        var registered = Set<String>()
        var out: [Step] = []
        for step in script {
            switch step {
            case .register(let e, _, _, _): registered.insert(e)
            case .deregister(let e): registered.remove(e)
            case .close(let e) where registered.contains(e), .resetClose(let e) where registered.contains(e):
                out.append(.deregister(e))
                registered.remove(e)
            default: break
            }
            out.append(step)
        }
        return out
    }

    static func closeReleasesFile(_ contender: Contender) -> Bool {
        guard let poller = try? contender.makePoller() else { return true }
        defer { try? poller.close() }
        return poller.capabilities.closeReleasesFile
    }

    static func firstDifference(_ steps: [Step], _ contenders: [Contender]) -> (Contender, Contender, String)? {
        guard let reference = contenders.first else { return nil }
        for other in contenders.dropFirst() {
            if let diff = differ(steps, reference, other) { return (reference, other, diff) }
        }
        return nil
    }

    static func differ(_ steps: [Step], _ a: Contender, _ b: Contender) -> String? {
        let scenario = Scenario("differential", checks: "random script", fixtures: fixtures, steps.map { ScriptLine($0) })
        let x = Conformance.record(scenario, backend: a.name, makePoller: a.makePoller)
        let y = Conformance.record(scenario, backend: b.name, makePoller: b.makePoller)
        if case .failed(let why) = x.outcome { return "\(a.name) failed to run: \(why)" }
        if case .failed(let why) = y.outcome { return "\(b.name) failed to run: \(why)" }
        guard let visibility = visibility(a, b) else { return "a poller could not be created" }
        return Conformance.compare(x, y, visible: visibility)
    }

    static func visibility(_ a: Contender, _ b: Contender) -> Visibility? {
        guard let x = try? a.makePoller(), let y = try? b.makePoller() else { return nil }
        defer {
            try? x.close()
            try? y.close()
        }
        return Visibility(x.capabilities).common(Visibility(y.capabilities))
    }

    /// Removes steps (one at a time, repeatedly) while the script still fails.
    static func shrink(_ steps: [Step], stillFails: ([Step]) -> Bool) -> [Step] {
        var current = steps
        var changed = true
        while changed {
            changed = false
            var index = current.count - 1
            while index >= 0 {
                var candidate = current
                candidate.remove(at: index)
                if !candidate.isEmpty, stillFails(candidate) {
                    current = candidate
                    changed = true
                }
                index -= 1
            }
        }
        return current
    }
}

/// A small, fast, seedable generator (SplitMix64), so a seed reproduces a script anywhere.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
