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
    ///
    /// Besides registrations, writes, reads, shut-downs, closes and wakes, the alphabet has the corners
    /// where backends used to part: a dup of an endpoint (registered on its own), a number reused by a
    /// new socketpair after a close, the same file put back on its old number, waits into a
    /// one-event buffer, and stretches with the descriptor limit exhausted. The generator keeps a small
    /// model of what is open and registered, so that it only writes what the contract defines: a closed
    /// endpoint whose file lives on (a dup) or whose number is about to be reused is deregistered
    /// first (Docs/Contract.md, "A descriptor closed while registered"), and nothing that needs a new
    /// descriptor runs while the limit is exhausted.
    public static func script(seed: UInt64, length: Int) -> [Step] {
        var random = SplitMix64(seed: seed)
        var model = ScriptModel()
        let triggers: [Trigger] = [.level, .level, .oneShot]
        var steps: [Step] = []
        for _ in 0..<max(0, length) {
            let e = model.watchable[random.below(model.watchable.count)]
            let token = UInt64(1 + random.below(4))
            func interest() -> Interest {
                let choices = ScriptModel.interests(e)
                return choices[random.below(choices.count)]
            }
            switch random.below(20) {
            case 0, 1, 2, 3:
                // A closed endpoint's number names a placeholder while the limit is exhausted.
                if model.exhausted && model.closed.contains(e) {
                    steps.append(.wait(timeout: .zero))
                } else {
                    steps.append(.register(e, token: token, interest: interest(), trigger: triggers[random.below(3)]))
                    model.didRegister(e)
                }
            case 4:
                // As for register: a closed endpoint's number names a placeholder while exhausted.
                if model.exhausted && model.closed.contains(e) {
                    steps.append(.wait(timeout: .zero))
                } else {
                    steps.append(.reregister(e, token: token, interest: interest(), trigger: triggers[random.below(3)]))
                }
            case 5:
                steps.append(.deregister(e))
                model.registered.remove(e)
            case 6, 7, 8: steps.append(.write(["b", "d", "w", "a", "y"][random.below(5)], bytes: 1 + random.below(3)))
            case 9: steps.append(.drain(["a", "c", "r", "b", "x"][random.below(5)]))
            case 10: steps.append(random.below(2) == 0 ? .fill(["a", "c"][random.below(2)]) : .shutdownWrite(["b", "d"][random.below(2)]))
            case 11: steps.append(.wake(times: 1 + random.below(3), threads: 1))
            case 12:
                if random.below(3) == 0 {
                    steps.append(contentsOf: model.close(["b", "d", "w", "a", "c", "a2"][random.below(6)]))
                } else {
                    steps.append(.wait(timeout: .zero))
                }
            case 13:
                // A dup of a, registered on its own number (a2), or a's file put back on a2's old number.
                if !model.exhausted, !model.open.contains("a2"), model.open.contains("a") {
                    if model.closed.contains("a2") {
                        steps.append(.duplicateOnto("a", as: "a2", numberOf: "a2"))
                        model.closed.remove("a2")
                    } else if !model.everDuplicated {
                        steps.append(.duplicate("a", as: "a2", atLeast: 100))
                        model.everDuplicated = true
                    }
                    model.open.insert("a2")
                } else {
                    steps.append(.wait(timeout: .zero))
                }
            case 14:
                // A new socketpair x/y on the number a closed endpoint had.
                // Never while a closed endpoint is still registered: y takes the lowest free number.
                if !model.exhausted, !model.open.contains("x"), model.registered.isDisjoint(with: model.closed),
                   let old = model.closed.sorted().first(where: { $0 == "c" || $0 == "a" }),
                   !(old == "a" && model.open.contains("a2")) {
                    steps.append(.reopenOnNumber("x", peer: "y", numberOf: old))
                    model.closed.remove(old)
                    model.open.formUnion(["x", "y"])
                } else {
                    steps.append(.wait(timeout: .zero))
                }
            case 15, 16, 17:
                // Every backend gets a turn for every ready registration and the waker within these rounds.
                steps.append(.waitRounds(capacity: 1, rounds: 8))
            case 18:
                // Exhausting takes every free number, closed endpoints' included: not while one of
                // those is still registered (a reused number, as with reopen).
                if model.exhausted || model.registered.isDisjoint(with: model.closed) {
                    steps.append(model.exhausted ? .restoreDescriptors : .exhaustDescriptors)
                    model.exhausted.toggle()
                } else {
                    steps.append(.wait(timeout: .zero))
                }
            default: steps.append(.wait(timeout: .zero))
            }
        }
        steps.append(.wait(timeout: .zero))
        return steps
    }

    /// Runs the script of `seed` on every contender and compares each with the first.
    /// Returns nil when all agree, otherwise the shrunk failure. A contender with no result within
    /// `timeLimit` (a wait that ignores its timeout and its waker) is a failure as hung, not shrunk.
    public static func check(seed: UInt64, length: Int, contenders: [Contender],
                             timeLimit: Duration? = Conformance.defaultTimeLimit) -> Failure? {
        let generated = script(seed: seed, length: length)
        // A contender that cannot make a poller here fails every script alike: said at once, not
        // shrunk (every candidate would "still fail", the shrinking a minute of the other's runs).
        var keepsFiles = false
        for contender in contenders {
            do {
                let poller = try contender.makePoller()
                if !poller.capabilities.closeReleasesFile { keepsFiles = true }
                try? poller.close()
            } catch {
                return Failure(seed: seed, backends: (contenders[0].name, contender.name), script: generated,
                               diff: "\(contender.name) could not make a poller: \(error)")
            }
        }
        // Shrinking works on the generated script and applies the same rewrite to every candidate.
        let prepare: ([Step]) -> [Step] = { keepsFiles ? deregisteringBeforeClose($0) : $0 }
        guard let (a, b, diff) = firstDifference(prepare(generated), contenders, timeLimit: timeLimit) else { return nil }
        if diff.contains(Watchdog.hungMark) {
            return Failure(seed: seed, backends: (a.name, b.name), script: prepare(generated), diff: diff)
        }
        // Removing a step can take a script outside the contract (a close without the deregister the
        // generator put after it): only scripts the model accepts are kept. A difference stays of its
        // kind: one of results is not kept as a script that fails to run, nor the other way round.
        let ranBoth = !diff.contains(Self.failedToRun)
        let shrunk = prepare(shrink(generated) { candidate in
            guard ScriptModel.accepts(candidate),
                  let found = differ(prepare(candidate), a, b, timeLimit: timeLimit) else { return false }
            return found.contains(Self.failedToRun) == !ranBoth
        })
        return Failure(seed: seed, backends: (a.name, b.name), script: shrunk, diff: differ(shrunk, a, b, timeLimit: timeLimit) ?? diff)
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

    /// How ``differ`` says that a contender could not run a script.
    static let failedToRun = " failed to run: "

    static func firstDifference(_ steps: [Step], _ contenders: [Contender],
                                timeLimit: Duration? = Conformance.defaultTimeLimit) -> (Contender, Contender, String)? {
        guard let reference = contenders.first else { return nil }
        for other in contenders.dropFirst() {
            if let diff = differ(steps, reference, other, timeLimit: timeLimit) { return (reference, other, diff) }
        }
        return nil
    }

    static func differ(_ steps: [Step], _ a: Contender, _ b: Contender,
                       timeLimit: Duration? = Conformance.defaultTimeLimit) -> String? {
        let scenario = Scenario("differential", checks: "random script", fixtures: fixtures, steps.map { ScriptLine($0) })
        let x = Conformance.record(scenario, backend: a.name, timeLimit: timeLimit, makePoller: a.makePoller)
        let y = Conformance.record(scenario, backend: b.name, timeLimit: timeLimit, makePoller: b.makePoller)
        if case .failed(let why) = x.outcome { return "\(a.name)\(failedToRun)\(why)" }
        if case .failed(let why) = y.outcome { return "\(b.name)\(failedToRun)\(why)" }
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

/// What the script generator knows of the endpoints, to keep its scripts inside the contract.
struct ScriptModel {
    var open: Set<String> = ["a", "b", "c", "d", "r", "w"]
    var closed: Set<String> = []
    var registered: Set<String> = []
    var exhausted = false
    var everDuplicated = false

    /// Endpoints a step may register or reregister (closed ones too: the errors must agree).
    var watchable: [String] { ["a", "c", "r", "w", "b", "a2", "x"] }

    /// A pipe end is watched in its own direction only: select sees a pipe's hang-up in the read set
    /// alone, so a read end watched for writability is outside what every backend can report
    /// (Docs/Contract.md, "Hang-up and error").
    static func interests(_ e: String) -> [Interest] {
        switch e {
        case "r": [.readable]
        case "w": [.writable]
        default: [.readable, .writable, .both]
        }
    }

    /// Whether `steps` stays inside what the contract defines, by the rules the generator follows.
    static func accepts(_ steps: [Step]) -> Bool {
        var model = ScriptModel()
        for step in steps {
            let lingering = model.registered.intersection(model.closed)
            switch step {
            case .register(let e, _, _, _):
                if model.exhausted && model.closed.contains(e) { return false }
                model.didRegister(e)
            case .reregister(let e, _, _, _):
                if model.exhausted && model.closed.contains(e) { return false }
            case .deregister(let e):
                model.registered.remove(e)
            case .close(let e):
                guard model.open.contains(e) else { return false }
                model.open.remove(e)
                model.closed.insert(e)
            // Nothing opens a descriptor while the limit is exhausted (the generator's rule): such a
            // candidate fails to set up on every backend, which is no difference between them.
            case .duplicate(let e, let name, _):
                guard !model.exhausted, model.open.contains(e), !model.open.contains(name), !model.closed.contains(name) else { return false }
                model.open.insert(name)
            case .duplicateOnto(let e, let name, let number):
                guard !model.exhausted, model.open.contains(e), model.closed.contains(number), name == number,
                      !model.registered.contains(number) else { return false }
                model.closed.remove(number)
                model.open.insert(name)
            case .reopenOnNumber(let e, let peer, let old):
                guard !model.exhausted, model.closed.contains(old), lingering.isEmpty, !model.open.contains(e),
                      !(old == "a" && model.open.contains("a2")) else { return false }
                model.closed.remove(old)
                model.open.formUnion([e, peer])
            case .exhaustDescriptors:
                guard lingering.isEmpty else { return false }
                model.exhausted = true
            case .restoreDescriptors:
                model.exhausted = false
            case .wait, .waitRounds, .waitSmall:
                // A closed, still registered endpoint whose file lives on through a dup: epoll may
                // report that file until deregistered (the contract says so).
                for e in lingering where (e == "a" && model.open.contains("a2")) || (e == "a2" && model.open.contains("a")) {
                    return false
                }
            default:
                break
            }
        }
        return true
    }

    mutating func didRegister(_ e: String) {
        if open.contains(e) { registered.insert(e) }
    }

    /// Closes `e`. A registered endpoint whose file lives on through a dup is deregistered at once:
    /// until then epoll (which watches files) and poll (which watches numbers) may differ, and the
    /// contract says so.
    mutating func close(_ e: String) -> [Step] {
        guard open.contains(e) else { return [.wait(timeout: .zero)] }
        open.remove(e)
        closed.insert(e)
        var steps: [Step] = [.close(e)]
        let sharesFile = (e == "a" && open.contains("a2")) || (e == "a2" && open.contains("a"))
        if registered.contains(e) && (sharesFile || e == "a" || e == "c") {
            // a and c may have their numbers reused later: deregister before that can happen.
            steps.append(.deregister(e))
            registered.remove(e)
        }
        return steps
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
