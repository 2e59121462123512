// A complete example of what the author of a new backend does, using only what a dependent package
// sees (`import Readiness` with the backend author's kit, `@_spi(Backend)`, and
// `import ReadinessConformance`): wrap a poller, run the suite on it.
// Docs/Conformance.md walks through it.
import Glibc
@_spi(Backend) import Readiness
import ReadinessConformance
import Synchronization
import Testing

/// A third-party backend: a poller that counts system-facing calls and delegates the work to an
/// existing backend. A kqueue or io_uring backend would implement `Poller` (or `BackendSeam`) the same way.
final class CountingPoller: Poller {
    private let inner: any Poller
    private(set) var calls = 0

    init(wrapping inner: any Poller) { self.inner = inner }

    var capabilities: Capabilities {
        var caps = inner.capabilities
        caps.name = "counting(\(caps.name))"
        return caps
    }
    var waker: Waker { inner.waker }

    func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        calls += 1
        try inner.register(fd, token: token, interest: interest, trigger: trigger)
    }
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        calls += 1
        try inner.reregister(fd, token: token, interest: interest, trigger: trigger)
    }
    func deregister(_ fd: CInt) throws(PollerError) {
        calls += 1
        try inner.deregister(fd)
    }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        calls += 1
        return try inner.wait(into: events, timeout: timeout)
    }
    func close() throws(PollerError) { try inner.close() }
}

/// The `Hanging` pollers alive (the abandoned scenarios still hold theirs).
private let hangingPollers = Atomic<Int>(0)

@Suite("Third-party backend example")
struct ThirdPartyBackendExample {
    @Test("a wrapped backend passes the whole conformance suite")
    func conformance() {
        let report = Conformance.run(backend: "counting(poll)") {
            CountingPoller(wrapping: try PollSeam.makePoller())
        }
        #expect(report.failures.isEmpty, "\(report.summary)")
        #expect(report.passed > 40)
    }

    @Test("a wrapped backend passes the async scenarios (an EventLoop over it)")
    func asyncConformance() async {
        let report = await AsyncConformance.run(backend: "counting(poll)") { () throws(PollerError) -> any Poller in
            CountingPoller(wrapping: try PollSeam.makePoller())
        }
        #expect(report.failures.isEmpty, "\(report.summary)")
        #expect(report.passed > 20)
    }

    @Test("a backend whose wait hangs fails as hung within the time limit, poller and async suites (the run goes on)")
    func hangingBackendFails() async {
        /// Ignores its timeout and its waker on the first wait: blocks for 2 s, then behaves.
        final class Hanging: Poller, @unchecked Sendable {
            let inner: any Poller
            private var hung = false
            init() throws(PollerError) {
                inner = try PollSeam.makePoller()
                hangingPollers.add(1, ordering: .relaxed)
            }
            deinit { hangingPollers.subtract(1, ordering: .relaxed) }
            var capabilities: Capabilities { inner.capabilities }
            var waker: Waker { inner.waker }
            func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
                try inner.register(fd, token: token, interest: interest, trigger: trigger)
            }
            func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
                try inner.reregister(fd, token: token, interest: interest, trigger: trigger)
            }
            func deregister(_ fd: CInt) throws(PollerError) { try inner.deregister(fd) }
            func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
                if !hung {
                    hung = true
                    usleep(2_000_000)
                }
                return try inner.wait(into: events, timeout: timeout)
            }
            func close() throws(PollerError) { try inner.close() }
        }
        let scenarios = Conformance.scenarios.filter { $0.id == "readiness/writable" }
        let start = ContinuousClock.now
        let report = Conformance.run(backend: "hanging", scenarios: scenarios, timeLimit: .milliseconds(300)) { try Hanging() }
        #expect(ContinuousClock.now - start < .seconds(1.5))
        #expect(report.failures.count == 1)
        if case .failed(let reason)? = report.failures.first?.outcome { #expect(reason.contains("no result within")) }
        // Without a limit the same scenario waits for the slow wait and passes.
        let unbounded = Conformance.run(backend: "hanging", scenarios: scenarios, timeLimit: nil) { try Hanging() }
        #expect(unbounded.failures.isEmpty, "\(unbounded.summary)")

        let asyncScenarios = AsyncConformance.scenarios.filter { $0.id == "async/io/reader-woken" }
        let asyncStart = ContinuousClock.now
        let asyncReport = await AsyncConformance.run(backend: "hanging", scenarios: asyncScenarios, timeLimit: .milliseconds(300)) {
            () throws(PollerError) -> any Poller in try Hanging()
        }
        #expect(ContinuousClock.now - asyncStart < .seconds(1.5))
        #expect(asyncReport.failures.count == 1)
        if case .failed(let reason)? = asyncReport.failures.first?.outcome { #expect(reason.contains("no result within")) }

        // The differential generators too (review: they ran without a limit and hung with the backend).
        let differentialStart = ContinuousClock.now
        let failure = Differential.check(seed: 1, length: 30, contenders: [
            .init(name: "poll") { () throws(PollerError) -> any Poller in try PollSeam.makePoller() },
            .init(name: "hanging") { () throws(PollerError) -> any Poller in try Hanging() },
        ], timeLimit: .milliseconds(300))
        #expect(ContinuousClock.now - differentialStart < .seconds(1.5))
        #expect(failure?.diff.contains("no result within") == true, "\(String(describing: failure))")
        let asyncDifferentialStart = ContinuousClock.now
        let asyncFailure = await AsyncDifferential.check(seed: 1, length: 12, contenders: [
            .init(name: "poll") { () throws(PollerError) -> any Poller in try PollSeam.makePoller() },
            .init(name: "hanging") { () throws(PollerError) -> any Poller in try Hanging() },
        ], timeLimit: .milliseconds(300))
        #expect(ContinuousClock.now - asyncDifferentialStart < .seconds(1.5))
        #expect(asyncFailure?.diff.contains("no result within") == true, "\(String(describing: asyncFailure))")
        // The abandoned scenarios end (their pollers gone) before the next test counts descriptors:
        // waited for, not a fixed sleep (a loaded host runs their last steps late).
        for _ in 0..<1_500 where hangingPollers.load(ordering: .relaxed) > 0 { usleep(10_000) }
        #expect(hangingPollers.load(ordering: .relaxed) == 0, "abandoned scenarios still running after 15 s")
        usleep(100_000)   // their threads' last steps after the poller is released
    }

    /// A poll backend whose wait's results `mangle` changes (the events in the buffer, the count
    /// returned): the mistakes a new backend makes.
    final class Mangling: Poller {
        let inner: any Poller
        let mangle: (EventBuffer, Int) -> Int
        /// A smaller descriptor limit than the inner backend's, said and enforced (nil: the inner one).
        let maxDescriptor: CInt?
        init(maxDescriptor: CInt? = nil, _ mangle: @escaping (EventBuffer, Int) -> Int) throws {
            inner = try PollSeam.makePoller()
            self.maxDescriptor = maxDescriptor
            self.mangle = mangle
        }
        var capabilities: Capabilities {
            var caps = inner.capabilities
            if let maxDescriptor { caps.maxDescriptor = maxDescriptor }
            return caps
        }
        var waker: Waker { inner.waker }
        func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            if let maxDescriptor, fd > maxDescriptor { throw .descriptorTooLarge(fd, limit: maxDescriptor &+ 1) }
            try inner.register(fd, token: token, interest: interest, trigger: trigger)
        }
        func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            try inner.reregister(fd, token: token, interest: interest, trigger: trigger)
        }
        func deregister(_ fd: CInt) throws(PollerError) { try inner.deregister(fd) }
        func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
            mangle(events, try inner.wait(into: events, timeout: timeout))
        }
        func close() throws(PollerError) { try inner.close() }
    }

    @Test("a broken backend is caught, with a diff naming the step")
    func brokenBackendFails() {
        // Forgets to report writability: the suite must notice.
        let scenarios = Conformance.scenarios.filter { $0.id == "readiness/writable" }
        let report = Conformance.run(backend: "broken", scenarios: scenarios) {
            try Mangling { events, n in
                let kept = events.filter { !$0.ready.contains(.writable) || $0.ready.contains(.readable) }
                events.removeAll()
                for event in kept { _ = events.append(event) }
                return n
            }
        }
        #expect(report.failures.count == 1)
        guard case .failed(let diff)? = report.failures.first?.outcome else { return }
        #expect(diff.contains("step 2"))
    }

    @Test("the limit scenarios skip, not fail, where the process may not open descriptor 1500 (RLIMIT_NOFILE 1024, systemd's default), and a backend with a small limit other than select's skips the one that names select's (review)")
    func limitScenariosWhereTheyCannotRun() throws {
        let scenarios = Conformance.scenarios.filter { ["limit/fd-setsize-refused", "limit/large-descriptor"].contains($0.id) }
        #expect(scenarios.count == 2)
        var saved = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &saved)
        var low = saved
        low.rlim_cur = 1_024
        #expect(setrlimit(CInt(RLIMIT_NOFILE.rawValue), &low) == 0)
        for backend in [Backend.epoll, .select] {
            let report = Conformance.run(backend: backend.description, scenarios: scenarios) { try backend.makePoller() }
            #expect(report.failures.isEmpty, "\(report.failures.map(\.scenario)) on \(backend)")
        }
        #expect(setrlimit(CInt(RLIMIT_NOFILE.rawValue), &saved) == 0)
        // A backend with a table of 4,096 descriptors, which says so.
        let limited = Conformance.run(backend: "limited", scenarios: scenarios) { try Mangling(maxDescriptor: 4_095) { _, n in n } }
        #expect(limited.failures.isEmpty, "\(limited.failures.map(\.scenario))")
    }

    @Test("a backend reporting a registration twice in one wait (the read set, then the write set), or a count other than the buffer's, is caught (review: the suite merged events by token and ignored the count)")
    func duplicateEventsAndWrongCountFail() {
        let scenarios = Conformance.scenarios.filter { ["readiness/both", "wake/coalesced"].contains($0.id) }
        #expect(scenarios.count == 2)
        let twice = Conformance.run(backend: "twice", scenarios: scenarios) {
            try Mangling { events, _ in
                let all = Array(events)
                events.removeAll()
                for event in all where !events.isFull { _ = events.append(event) }
                for event in all where !events.isFull { _ = events.append(event) }
                return events.count
            }
        }
        #expect(twice.failures.count == 2, "\(twice.failures.map(\.scenario))")
        let miscounted = Conformance.run(backend: "miscounted", scenarios: scenarios) { try Mangling { _, n in n + 1 } }
        #expect(miscounted.failures.count == 2, "\(miscounted.failures.map(\.scenario))")
    }
}

@Suite("Docs")
struct DocsTests {
    @Test("Docs/Conformance.md lists every scenario, poller and async")
    func scenarioList() throws {
        let text = try readRepositoryFile("Docs/Conformance.md")
        for scenario in Conformance.scenarios {
            #expect(text.contains("`\(scenario.id)`"), "Docs/Conformance.md does not list \(scenario.id)")
        }
        for scenario in AsyncConformance.scenarios {
            #expect(text.contains("`\(scenario.id)`"), "Docs/Conformance.md does not list \(scenario.id)")
        }
    }
}

/// Reads a file of this repository (the tests run from the package root).
func readRepositoryFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else { throw TestFailure("cannot open \(path)") }
    defer { fclose(file) }
    var text = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return text
}

/// Backends that break one rule of the contract each, as a third party's might: the conformance suite
/// must fail each on the scenario that checks that rule (an outside reader's mutations: each passed
/// the whole suite before its scenario was added).
@Suite("Conformance mutants")
struct ConformanceMutantTests {
    /// A poll backend that breaks one rule.
    final class Mutant: Poller {
        enum Flaw {
            /// Says writable only when poll(2) says POLLOUT: an error alone wakes readers only.
            case errorWakesReadersOnly
            /// Takes an edge registration for writing as a level one (kqueue's EV_CLEAR on reads only).
            case edgeWritableIsLevel
            /// Reports urgent data (POLLPRI) as readable.
            case urgentIsReadable
            /// Looks for an earlier registration before checking the arguments.
            case checksRegisteredFirst
            /// Declares a limit of 4,095 and does not enforce it.
            case unenforcedLimit
            /// Closes the descriptors still registered when it is closed (libevent's LEV_OPT_CLOSE_ON_FREE).
            case closesRegisteredOnClose
            /// Has no fork check: a forked child's calls are answered as the parent's would be.
            case ignoresFork
        }
        let inner: any Poller
        let flaw: Flaw
        var numbers: [Token: CInt] = [:]
        var interests: [CInt: Interest] = [:]
        var closed = false
        init(_ flaw: Flaw) throws {
            inner = try flaw == .edgeWritableIsLevel ? EpollSeam.makePoller() : PollSeam.makePoller()
            self.flaw = flaw
        }
        var capabilities: Capabilities {
            var caps = inner.capabilities
            if flaw == .unenforcedLimit { caps.maxDescriptor = 4_095 }
            return caps
        }
        var waker: Waker { inner.waker }
        /// `body`, with a forked child's refusal taken as success where the flaw is `ignoresFork`.
        func call<T>(_ otherwise: T, _ body: () throws(PollerError) -> T) throws(PollerError) -> T {
            do throws(PollerError) {
                return try body()
            } catch {
                if case .forked = error, flaw == .ignoresFork { return otherwise }
                throw error
            }
        }
        func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            try call(()) { () throws(PollerError) in try registerUnchecked(fd, token: token, interest: interest, trigger: trigger) }
        }
        func registerUnchecked(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            if flaw == .checksRegisteredFirst, !closed, interests[fd] != nil { throw .alreadyRegistered(fd) }
            let trigger = flaw == .edgeWritableIsLevel && interest == .writable ? .level : trigger
            try inner.register(fd, token: token, interest: interest, trigger: trigger)
            numbers[token] = fd
            interests[fd] = interest
        }
        func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            try call(()) { () throws(PollerError) in try inner.reregister(fd, token: token, interest: interest, trigger: trigger) }
            numbers[token] = fd
            interests[fd] = interest
        }
        func deregister(_ fd: CInt) throws(PollerError) {
            try call(()) { () throws(PollerError) in try inner.deregister(fd) }
            interests[fd] = nil
        }
        func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
            let n = try call(0) { () throws(PollerError) in try inner.wait(into: events, timeout: timeout) }
            switch flaw {
            case .errorWakesReadersOnly:
                let kept = events.compactMap { event -> Event? in
                    guard event.ready.contains(.writable), let fd = numbers[event.token] else { return event }
                    var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    guard poll(&entry, 1, 0) == 1, entry.revents & Int16(POLLOUT) == 0 else { return event }
                    let ready = event.ready.subtracting(.writable)
                    return ready.intersection([.readable, .writable]).isEmpty ? nil : Event(token: event.token, ready: ready)
                }
                events.removeAll()
                for event in kept { _ = events.append(event) }
                return events.count
            case .urgentIsReadable:
                guard n == 0 else { return n }
                for (token, fd) in numbers where interests[fd]?.contains(.readable) == true {
                    var entry = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
                    if poll(&entry, 1, 0) == 1, entry.revents & Int16(POLLPRI) != 0 {
                        _ = events.append(Event(token: token, ready: .readable))
                    }
                }
                return events.count
            default:
                return n
            }
        }
        func close() throws(PollerError) {
            if flaw == .closesRegisteredOnClose, !closed { for fd in interests.keys { Glibc.close(fd) } }
            closed = true
            try inner.close()
        }
    }

    /// The scenarios with `prefix` run on a mutant: which failed.
    static func failures(_ flaw: Mutant.Flaw, _ prefix: String) -> [String] {
        let scenarios = Conformance.scenarios.filter { $0.id.hasPrefix(prefix) }
        return Conformance.run(backend: "\(flaw)", scenarios: scenarios) { try Mutant(flaw) }.failures.map(\.scenario)
    }

    @Test("an error that wakes only readers is caught (hangup/pipe-reader-closed-full)")
    func errorWakesReadersOnly() {
        #expect(Self.failures(.errorWakesReadersOnly, "hangup/") == ["hangup/pipe-reader-closed-full"])   // the other hang-up scenarios pass it
    }

    @Test("edge triggering for reads only is caught (edge/writable-once-per-change)")
    func edgeWritableIsLevel() {
        #expect(Self.failures(.edgeWritableIsLevel, "edge/") == ["edge/writable-once-per-change"])
    }

    @Test("urgent data reported as readable is caught (readiness/urgent-alone-quiet)")
    func urgentIsReadable() {
        #expect(Self.failures(.urgentIsReadable, "readiness/urgent").contains("readiness/urgent-alone-quiet"))
    }

    @Test("a backend's own check before the contract's argument checks is caught (misuse/register-order)")
    func checksRegisteredFirst() {
        // Every other misuse scenario passes it but the fork one: in a child its register answers
        // alreadyRegistered, where the contract's first check answers forked.
        // (The fork scenario is skipped under ThreadSanitizer.)
        let failed = Set(Self.failures(.checksRegisteredFirst, "misuse/"))
        #expect(failed.contains("misuse/register-order") && failed.isSubset(of: ["misuse/register-order", "misuse/forked-child"]), "\(failed)")
    }

    @Test("a poller that closes the caller's registered descriptors when it is closed is caught (misuse/close-keeps-caller-descriptors)")
    func closesRegisteredOnClose() {
        #expect(Self.failures(.closesRegisteredOnClose, "misuse/") == ["misuse/close-keeps-caller-descriptors"])
    }

    @Test("a backend with no fork check is caught (misuse/forked-child)",
          .enabled(if: dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") == nil, "the scenario is skipped under ThreadSanitizer"))
    func ignoresFork() {
        #expect(Self.failures(.ignoresFork, "misuse/") == ["misuse/forked-child"])
    }

    @Test("a declared descriptor limit not enforced is caught (limit/declared-limit); one enforced passes every limit scenario")
    func declaredLimit() {
        #expect(Self.failures(.unenforcedLimit, "limit/") == ["limit/declared-limit"])
        let scenarios = Conformance.scenarios.filter { $0.id.hasPrefix("limit/") }
        let honest = Conformance.run(backend: "limited", scenarios: scenarios) {
            try ThirdPartyBackendExample.Mangling(maxDescriptor: 4_095) { _, n in n }
        }
        #expect(honest.failures.isEmpty, "\(honest.failures.map(\.scenario))")   // before: limit/huge-number
    }
}
