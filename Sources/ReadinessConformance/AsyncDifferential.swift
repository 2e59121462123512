import Readiness

/// Differential testing of the async layer: seeded random interleavings of async operations over two
/// socketpairs the loop owns, a connected pair of Unix datagram sockets the loop owns, a socketpair the
/// caller owns, a loop listener with the TCP connections made to it and accepted from it (connected,
/// reset, closed, accepted before or after, the listener closed) and three tasks, run on several backends,
/// whose outcomes must be identical step by step. A failure names the seed and the shortest script that
/// still shows the difference.
///
/// Outcomes are made independent of timing: the runner lets the loop run one round (a zero-timeout
/// poller wait) after every step; a direct operation that would wait has a zero deadline; a task's
/// operation has no deadline, and a task is only awaited after it is cancelled (its outcome is then
/// what it finished with, or `cancelled`), or after the loop's shutdown.
public enum AsyncDifferential {
    /// A backend under test.
    public struct Contender: Sendable {
        /// The name in reports.
        public let name: String
        /// The poller factory of its loops.
        public let makePoller: AsyncConformance.Factory
        /// A contender.
        public init(name: String, makePoller: @escaping AsyncConformance.Factory) {
            self.name = name
            self.makePoller = makePoller
        }
    }

    /// A difference: the seed, the two backends, the shortest script found and where they differ.
    public struct Failure: Sendable, CustomStringConvertible {
        /// The seed of the generated script.
        public let seed: UInt64
        /// The two backends that differ.
        public let backends: (String, String)
        /// The shortest script found that still shows the difference.
        public let script: [AsyncStep]
        /// The steps whose outcomes differ.
        public let diff: String
        /// The failure in words.
        public var description: String {
            var text = "async seed \(seed): \(backends.0) and \(backends.1) differ on this \(script.count)-step script:\n"
            for (index, step) in script.enumerated() { text += "  \(index + 1). \(step)\n" }
            return text + diff
        }
    }

    /// The stream sockets: two socketpairs, then a TCP client (`k`, connected to `l`) and the
    /// connection accepted from `l` (`s`), each made again by a later connect or accept.
    static let sockets = ["a", "b", "c", "d", "k", "s"]
    /// The datagram sockets (a connected Unix pair: sends need no destination).
    static let datagramSockets = ["p", "q"]
    /// The most bytes of a datagram a direct send makes (0: an empty datagram).
    static let datagramBytes = 4
    /// A write in a task that fills the socket buffers and waits for the peer's reads.
    static let largeWrite = 300_000
    /// A direct read that takes a good part of a full buffer.
    static let largeRead = 65_536
    static let taskNames = ["t1", "t2", "t3"]
    /// What every script starts with.
    static let prelude: [AsyncStep] = [.socketPair("a", "b"), .socketPair("c", "d"), .callerPair("x", "y"), .unixDatagramPair("p", "q"),
                                       .listen("l")]

    /// A reproducible random script: `length` random steps between the prelude and the shutdown.
    public static func script(seed: UInt64, length: Int) -> [AsyncStep] {
        var random = SplitMix64(seed: seed)
        var running: Set<String> = []
        var steps = prelude
        func socket() -> String { sockets[random.below(sockets.count)] }
        func endpoint() -> String { datagramSockets[random.below(datagramSockets.count)] }
        for _ in 0..<max(0, length) {
            let free = taskNames.filter { !running.contains($0) }
            let busy = taskNames.filter { running.contains($0) }
            switch random.below(21) {
            case 0, 1, 2, 3:
                guard let task = free.first else {
                    steps.append(.run(.sleep(.zero)))
                    continue
                }
                let operations: [AsyncOperation] = [
                    .read(socket(), upTo: 64, timeout: nil), .read(socket(), upTo: 64, timeout: nil),
                    .write(socket(), bytes: 1 + random.below(3), timeout: nil),
                    .write(socket(), bytes: largeWrite, timeout: nil),
                    .sleep(.seconds(3600)), .readable("x", timeout: nil), .writable("x", timeout: nil),
                    .receive(endpoint(), upTo: 64, timeout: nil), .send(endpoint(), bytes: 1 + random.below(3), to: nil, timeout: nil),
                    .accept("l", as: "s", timeout: nil), .readAll(socket(), bytes: 2 + random.below(4), timeout: nil),
                    .peek(socket(), upTo: 64, timeout: nil), .peekDatagram(endpoint(), upTo: 64, timeout: nil),
                    .ready(socket(), reading: true, timeout: nil), .ready(endpoint(), reading: true, timeout: nil),
                ]
                let operation = operations[random.below(operations.count)]
                steps.append(random.below(6) == 0 ? .startCancelled(task, operation) : .start(task, operation))
                running.insert(task)
            case 4, 5:
                guard !busy.isEmpty else {
                    steps.append(.run(.sleep(.zero)))
                    continue
                }
                let task = busy[random.below(busy.count)]
                steps.append(contentsOf: [.cancel(task), .await(task)])
                running.remove(task)
            case 6, 7:
                steps.append(.run(.read(socket(), upTo: random.below(2) == 0 ? 64 : largeRead, timeout: .zero)))
            case 8, 9, 10:
                steps.append(.run(.write(socket(), bytes: 1 + random.below(3), timeout: .zero)))
            case 11:
                steps.append(.callerWrite("y", bytes: 1))
            case 12:
                steps.append(.run(.readable("x", timeout: .zero)))
            case 13:
                steps.append(.run(.shutdownWrite(socket())))
            case 14:
                switch random.below(8) {
                case 0: steps.append(.run(.close(socket())))
                case 1: steps.append(.run(.closeInside(socket())))
                case 2: steps.append(.run(.peek(socket(), upTo: 8, timeout: .zero)))
                case 3: steps.append(.run(.tryRead(socket(), upTo: random.below(2) == 0 ? 64 : 1)))
                case 4: steps.append(.run(.tryWrite(socket(), bytes: 1 + random.below(3))))
                default: steps.append(.run(.read(socket(), upTo: 1, timeout: .zero)))
                }
            case 15:
                steps.append(.run(.sleep(.zero)))
            case 16, 17:
                steps.append(.run(.send(endpoint(), bytes: random.below(datagramBytes), to: nil, timeout: .zero)))
            case 19, 20:
                // The listener: connections made, reset or closed before or after their accept, accepts
                // that find one queued or not (io_uring's multishot accept takes them ahead), the
                // listener closed with connections queued.
                switch random.below(18) {
                case 0, 1, 2, 3: steps.append(.run(.connect(as: "k", to: .loopListener("l"), timeout: .seconds(5))))
                case 4: steps.append(.run(.connectFirst(as: "k", to: [.closedPort, .loopListener("l")], attemptDelay: .milliseconds(50), timeout: .seconds(5))))
                case 15: steps.append(.run(.connect(as: "k", to: .closedPort, timeout: .seconds(5))))
                case 16: steps.append(.run(.readEmpty(socket())))
                case 5, 6, 7, 8: steps.append(.run(.accept("l", as: "s", timeout: .zero)))
                case 9, 10: steps.append(.run(.resetClose("k")))
                case 11: steps.append(.run(.resetClose("s")))
                case 12, 13: steps.append(.run(.close("k")))
                case 14: steps.append(.run(.close("s")))
                default: steps.append(.run(.closeListener("l")))
                }
            default:
                let e = endpoint()
                switch random.below(10) {
                case 5: steps.append(.run(.tryReceive(e, upTo: random.below(2) == 0 ? 64 : 1)))
                case 6: steps.append(.run(.trySend(e, bytes: random.below(datagramBytes), to: nil)))
                case 0: steps.append(.run(.fill(e)))
                case 1: steps.append(.run(.drain(e)))
                case 2: steps.append(.run(.close(e)))
                case 3: steps.append(.run(.receiveBatch(e, slots: 4, timeout: .zero)))
                case 4: steps.append(.run(.peekDatagram(e, upTo: 64, timeout: .zero)))
                default: steps.append(.run(.receive(e, upTo: random.below(2) == 0 ? 64 : 1, timeout: .zero)))
                }
            }
        }
        steps.append(.shutdownLoop)
        for task in taskNames where running.contains(task) { steps.append(.await(task)) }
        steps.append(.run(.read("a", upTo: 64, timeout: .zero)))
        return steps
    }

    /// Runs the script of `seed` on every contender and compares each with the first. Returns nil when
    /// all agree, otherwise the shrunk failure. A contender with no result within `timeLimit` (a loop
    /// whose poller never returns) is a failure as hung, not shrunk.
    public static func check(seed: UInt64, length: Int, contenders: [Contender],
                             timeLimit: Duration? = Conformance.defaultTimeLimit) async -> Failure? {
        let generated = script(seed: seed, length: length)
        guard let reference = contenders.first else { return nil }
        // A contender that cannot make a poller here fails every script alike: said at once, not shrunk.
        for contender in contenders {
            do throws(PollerError) {
                try contender.makePoller().close()
            } catch {
                return Failure(seed: seed, backends: (reference.name, contender.name), script: generated,
                               diff: "\(contender.name) could not make a poller: \(error)")
            }
        }
        for other in contenders.dropFirst() {
            guard let diff = await differ(generated, reference, other, timeLimit: timeLimit) else { continue }
            if diff.contains(Watchdog.hungMark) {
                return Failure(seed: seed, backends: (reference.name, other.name), script: generated, diff: diff)
            }
            // Only scripts that await a task after cancelling it, or after the shutdown, are kept: the
            // others would wait for ever. A difference stays of its kind: one of results is not
            // shrunk into a script that fails to run (descriptors left open, say), nor the other way.
            let ranBoth = !diff.contains(failedToRun)
            let shrunk = await shrink(generated) { candidate in
                guard accepts(candidate), let found = await differ(candidate, reference, other, timeLimit: timeLimit) else {
                    return false
                }
                return found.contains(failedToRun) == !ranBoth
            }
            return Failure(seed: seed, backends: (reference.name, other.name), script: shrunk,
                           diff: await differ(shrunk, reference, other, timeLimit: timeLimit) ?? diff)
        }
        return nil
    }

    /// How ``differ`` says that a contender's run failed (as the poller differential says it).
    static let failedToRun = " failed to run: "

    /// Whether every await of `steps` is of a task that was cancelled or ended by the loop's shutdown
    /// (what the generator writes; a shrunk script must keep it).
    static func accepts(_ steps: [AsyncStep]) -> Bool {
        var ending: Set<String> = []
        var shutDown = false
        for step in steps {
            switch step {
            case .start(let task, _): ending.remove(task)
            case .startCancelled(let task, _), .cancel(let task): ending.insert(task)
            case .shutdownLoop: shutDown = true
            case .await(let task):
                if !shutDown && !ending.contains(task) { return false }
            default: break
            }
        }
        return true
    }

    /// Where two backends' runs of `steps` differ (nil when they agree).
    static func differ(_ steps: [AsyncStep], _ a: Contender, _ b: Contender,
                       timeLimit: Duration? = Conformance.defaultTimeLimit) async -> String? {
        let x = await AsyncConformance.record(steps, backend: a.name, timeLimit: timeLimit, makePoller: a.makePoller)
        let y = await AsyncConformance.record(steps, backend: b.name, timeLimit: timeLimit, makePoller: b.makePoller)
        if case .failed(let why) = x.outcome { return "\(a.name)\(failedToRun)\(why)" }
        if case .failed(let why) = y.outcome { return "\(b.name)\(failedToRun)\(why)" }
        var lines: [String] = []
        for (p, q) in zip(x.trace, y.trace) where p.observed != q.observed {
            lines.append("step \(p.index) (\(p.step)): \(a.name) observed \(p.observed), \(b.name) observed \(q.observed)")
        }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }

    /// Removes steps while the script still fails: two neighbours at a time (a task's cancel and its
    /// await, a start and its await go together), then one at a time, until nothing more can go.
    static func shrink(_ steps: [AsyncStep], stillFails: ([AsyncStep]) async -> Bool) async -> [AsyncStep] {
        var current = steps
        var changed = true
        while changed {
            changed = false
            for width in [2, 1] {
                var index = current.count - width
                while index >= 0 {
                    var candidate = current
                    candidate.removeSubrange(index..<index + width)
                    if !candidate.isEmpty, await stillFails(candidate) {
                        current = candidate
                        changed = true
                    }
                    index = Swift.min(index, current.count - width) - 1
                }
            }
        }
        return current
    }
}
