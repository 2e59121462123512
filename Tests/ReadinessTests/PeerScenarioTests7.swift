import Glibc
import Readiness
import ReadinessConformance
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 35.
@Suite("Peer scenarios 7", .serialized)
struct PeerScenarioTests7 {
    // MARK: Caller values in the conformance product (review: each trapped the whole process)

    /// A third party's scripts are caller values too: a negative count, a signal count whose gap
    /// overflowed, or an `after` beyond `usleep`'s 32 bits trapped (on a worker thread, out of the
    /// watchdog's reach). Now each is a note, and a long wait with no signal is just a wait.
    @Test("conformance steps with a negative count, or more signals than a wait splits into, are notes, not traps")
    func conformanceStepValues() throws {
        let invalid: [Step] = [
            .write("a", bytes: -1), .waitRounds(capacity: 4, rounds: -1), .wake(times: -1, threads: 1),
            .wake(times: 1, threads: -1), .waitInterrupted(.seconds(1), signals: -1),
            .waitInterrupted(.seconds(1), signals: .max), .wakeReenteredBySignalHandler(signals: -3),
            .createPollersExhausted(upTo: -1), .registerEach("p", count: -1, firstToken: 1, interest: .readable),
            .writeEach("p", count: -1), .closeEach("p", count: -1), .deregisterEach("p", count: -1),
        ]
        let steps: [Step] = invalid + [
            .write("b", bytes: 1),
            .register("a", token: 1, interest: .readable, trigger: .level),
            // 5,000 s is past usleep's 32 bits: the gap's conversion trapped even with no signal to send.
            .waitInterrupted(.seconds(5_000), signals: 0),
        ]
        let scenario = Scenario("caller-values", checks: "invalid values", fixtures: [.socketPair("a", "b")],
                                steps.map { ScriptLine($0) })
        let result = Conformance.record(scenario, backend: "epoll", timeLimit: .seconds(30)) { try Backend.epoll.makePoller() }
        #expect(result.trace.count == steps.count, "\(result.outcome)")
        for line in result.trace.prefix(invalid.count) {
            guard case .note(let text) = line.observed, text.hasPrefix("invalid step") else {
                Issue.record("\(line.step): \(line.observed)")
                continue
            }
        }
        if let last = result.trace.last {
            #expect("\(last.observed)".contains("readable"), "\(last.observed)")
        }
        // A negative fixture count is a set-up failure, not a trap.
        let pairs = Scenario("caller-values", checks: "negative fixture", fixtures: [.socketPairs("s", count: -1)], [])
        let setUp = Conformance.record(pairs, backend: "epoll") { try Backend.epoll.makePoller() }
        guard case .failed(let why) = setUp.outcome else { Issue.record("\(setUp.outcome)"); return }
        #expect(why.contains("negative count"), "\(why)")
        // The script generators take any length (a negative one is an empty script).
        #expect(Differential.script(seed: 1, length: -1) == Differential.script(seed: 1, length: 0))
        #expect(AsyncDifferential.script(seed: 1, length: Int.min) == AsyncDifferential.script(seed: 1, length: 0))
    }

    @Test("async conformance steps with a negative byte count are notes, not traps (review: each trapped)")
    func asyncConformanceStepValues() async throws {
        let steps: [AsyncStep] = [
            .socketPair("a", "b"), .run(.write("a", bytes: -1, timeout: nil)),
            .udpPair("u", "v"), .run(.send("u", bytes: -5, to: "v", timeout: nil)),
            .callerPair("c", "d"), .callerWrite("c", bytes: -1),
        ]
        let result = await AsyncConformance.record(steps, backend: "epoll", timeLimit: .seconds(30)) { () throws(PollerError) -> any Poller in try Backend.epoll.makePoller() }
        let notes = result.trace.map { "\($0.observed)" }.filter { $0.contains("invalid step") }
        #expect(notes.count == 3, "\(result.trace.map { "\($0.step): \($0.observed)" })")
    }

    // MARK: Happy Eyeballs token blocks (review)

    /// `TokenBlock` handed out `Token.waker` when a block reached it: that attempt's socket was made
    /// and its SYN sent, then its registration failed with `reservedToken`, so its address was never
    /// really tried.
    @Test("a token block never hands out the waker's token; it goes on at 0")
    func tokenBlockSkipsWaker() {
        let block = TokenBlock(first: Token(rawValue: .max - 1))
        #expect(block.makeToken() == Token(rawValue: .max - 1))
        #expect(block.makeToken() == Token(rawValue: 0))
        #expect(block.makeToken() == Token(rawValue: 1))
        #expect(TokenBlock(first: .waker).makeToken() == Token(rawValue: 0))
    }

    // MARK: A listener registered while backing off (review)

    /// The same misuse, the same error, whatever the listener's state: registered during a back-off
    /// with the waker's token (or a number above select's limit), it was stored, and every later
    /// `resume()` failed and started another back-off, so the listener never accepted again.
    @Test("Listener.register during a back-off refuses the waker's token at once", arguments: backends)
    func registerWhileBackingOff(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        var limit = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        let saved = limit
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
        var fillers: [CInt] = []
        limit.rlim_cur = rlim_t(openDescriptorCount() + 8)
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        while true {
            let fd = dup(0)
            if fd < 0 { break }
            fillers.append(fd)
        }
        let result = try listener.accept()
        fillers.forEach { close($0) }
        var restore = saved
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &restore)
        guard case .backingOff = result else { throw TestFailure("expected a back-off, got \(result)") }
        #expect(throws: PollerError.reservedToken) { try listener.register(on: poller, token: .waker) }
        // A proper registration still works, and resume() watches it.
        try listener.register(on: poller, token: 7)
        try listener.resume()
        #expect(!listener.isBackingOff)
    }
}
