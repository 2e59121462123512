import Readiness

/// One step of a scenario's script. Endpoints are fixture names; tokens are plain numbers.
public enum Step: Sendable, Hashable, CustomStringConvertible {
    case register(String, token: UInt64, interest: Interest, trigger: Trigger)
    case reregister(String, token: UInt64, interest: Interest, trigger: Trigger)
    case deregister(String)
    /// register() with a raw descriptor number (negative, or one nobody opened).
    case registerNumber(CInt, token: UInt64, interest: Interest)
    /// register() with a reserved token or an empty interest.
    case registerBadArguments(String, token: UInt64, interest: Interest)
    /// register() of the number just above the backend's declared `maxDescriptor` (a backend with a
    /// finite limit; nothing need be open there: the limit is checked before the descriptor). A
    /// refusal naming that limit is recorded as `descriptorTooLarge(declared limit)`.
    case registerAboveLimit(token: UInt64)
    /// Sends one byte of TCP urgent data (`send(MSG_OOB)`).
    case writeUrgent(String)
    /// Whether the endpoint's descriptor is still open (a poller never closes a caller's descriptor).
    case isOpen(String)
    /// Forks; the child calls register, reregister (token `token`) and deregister with the endpoint,
    /// a wait, the waker's wake and close on its copy of the poller, then exits. The contract: every
    /// call but close fails with `forked` and touches nothing (the epoll set, ring or base it would
    /// change is the parent's too); close succeeds. Records `ok` when the child's answers are those.
    case forkedCalls(String, token: UInt64)
    /// register() of the poller's own waker descriptor (refused: the poller holds it).
    case registerWaker(token: UInt64)
    /// Writes `bytes` bytes.
    case write(String, bytes: Int)
    /// Writes until the socket buffer is full (the endpoint stops being writable).
    case fill(String)
    /// Reads everything available.
    case drain(String)
    case shutdownWrite(String)
    case close(String)
    /// Closes with SO_LINGER 0: the peer gets a reset.
    case resetClose(String)
    /// Duplicates an endpoint to the lowest free number at or above `atLeast`, as a new endpoint.
    case duplicate(String, as: String, atLeast: CInt)
    /// Waits and records the events (nil: block).
    case wait(timeout: Duration?)
    /// Waits with a buffer of `capacity` events.
    case waitSmall(capacity: Int, timeout: Duration?)
    /// `rounds` waits into a buffer of `capacity`; records the union of what they saw.
    case waitRounds(capacity: Int, rounds: Int)
    /// Replaces the (closed) number of `closed` by a new socketpair's first end (dup3), so the number is
    /// reused by a different file.
    case reopenOnNumber(String, peer: String, numberOf: String)
    /// Waits with a timeout and records whether it returned early or blocked too long.
    case waitTimed(Duration)
    /// Waits on another thread while this one sends it `signals` SIGUSR1s; records the events and
    /// whether the timeout still held.
    case waitInterrupted(Duration, signals: Int)
    /// `threads` threads each wake the poller `times` times (joined before the next step).
    case wake(times: Int, threads: Int)
    /// Blocks with no timeout while another thread wakes the poller after `after`.
    case waitWokenByThread(after: Duration)
    /// Waits with `timeout` (a long or enormous one) while another thread wakes the poller after
    /// `after`: a timeout that wraps to "now" or is cut short returns before the wake.
    case waitWithTimeoutWokenByThread(Duration?, after: Duration)
    /// Blocks with no timeout while another thread closes the poller after `after` (the contract: the
    /// wait ends, failing with `closed`).
    case waitClosedByThread(after: Duration)
    /// Blocks with no timeout while another thread closes the endpoint after `after`, then wakes the
    /// poller a moment later (so that the kernel looks at every descriptor again while the number is
    /// closed); records the events.
    case waitWhileClosedByThread(String, after: Duration)
    /// Waits with no timeout while another thread writes a byte to the endpoint after `after`: the
    /// blocked wait must be woken by the descriptor becoming ready (not only by the waker).
    case waitWhileWrittenByThread(String, after: Duration)
    /// Closes the poller.
    case closePoller
    /// Connects through the connect state machine on this poller and records the outcome.
    case connect(ConnectTarget, timeout: Duration)
    /// Duplicates `source` onto the (closed) number of `numberOf`, as endpoint `name`: the same file
    /// comes back under a number it had before.
    case duplicateOnto(String, as: String, numberOf: String)
    /// Lowers the descriptor limit (RLIMIT_NOFILE) so that no new descriptor can be opened, until
    /// ``restoreDescriptors``.
    case exhaustDescriptors
    case restoreDescriptors
    /// Creates and closes pollers of the backend under test with 0, 1, ... `upTo` descriptors left;
    /// records whether each creation either succeeded or failed with a typed error, with no descriptor
    /// leaked and the process still there.
    case createPollersExhausted(upTo: Int)
    /// Deregisters every endpoint in the list (each must succeed).
    case deregisterAll([String])
    /// Registers the first ends of a ``Fixture/socketPairs(_:count:)`` fixture, tokens `firstToken`, +1, ...
    case registerEach(String, count: Int, firstToken: UInt64, interest: Interest)
    /// Writes one byte to each peer of a ``Fixture/socketPairs(_:count:)`` fixture.
    case writeEach(String, count: Int)
    /// Closes the first ends of a ``Fixture/socketPairs(_:count:)`` fixture.
    case closeEach(String, count: Int)
    /// Deregisters the first ends of a ``Fixture/socketPairs(_:count:)`` fixture; records the first error.
    case deregisterEach(String, count: Int)
    /// Waits into a buffer of `capacity` and records only how many events came.
    case waitCounting(capacity: Int, timeout: Duration?)
    /// Blocks with no timeout while another thread sends the waiting thread a signal whose handler
    /// calls `wake()` (a waker must be async-signal-safe).
    case waitWokenBySignalHandler(after: Duration)
    /// A thread calls `wake()` in a loop while `signals` signals interrupt it, each handler calling
    /// `wake()` too (re-entering a wake in progress); records whether the thread finished.
    case wakeReenteredBySignalHandler(signals: Int)

    /// Why the step's own values cannot be run (a negative count, more signals than a wait can be
    /// split into), or nil. The runner records it as a note rather than trapping on it.
    var invalidValue: String? {
        func negative(_ values: Int...) -> Bool { values.contains { $0 < 0 } }
        switch self {
        case .write(_, let n) where negative(n) || n > Self.maximumBytes: return "a byte count outside 0...\(Self.maximumBytes) (\(n))"
        case .waitRounds(_, let n) where negative(n): return "a negative number of rounds (\(n))"
        case .wake(let times, let threads) where negative(times, threads): return "a negative count (\(times) x \(threads))"
        case .wake(_, let threads) where threads > Self.maximumThreads: return "more than \(Self.maximumThreads) threads (\(threads))"
        case .waitInterrupted(_, let n) where negative(n) || n > Self.maximumSignals,
             .wakeReenteredBySignalHandler(let n) where negative(n) || n > Self.maximumSignals:
            return "a signal count outside 0...\(Self.maximumSignals) (\(n))"
        case .createPollersExhausted(let n) where negative(n): return "a negative descriptor count (\(n))"
        case .registerEach(_, let n, _, _) where negative(n), .writeEach(_, let n) where negative(n),
             .closeEach(_, let n) where negative(n), .deregisterEach(_, let n) where negative(n):
            return "a negative count (\(n))"
        default: return nil
        }
    }

    /// The most threads a ``wake(times:threads:)`` step starts, and signals a step sends.
    static let maximumThreads = 256
    /// The most bytes a step writes at once (the buffer is allocated whole).
    static let maximumBytes = 1 << 28
    static let maximumSignals = 1_000_000

    public var description: String {
        switch self {
        case .register(let e, let t, let i, let tr): "register \(e) token \(t) \(i)\(tr == .level ? "" : " \(tr)")"
        case .reregister(let e, let t, let i, let tr): "reregister \(e) token \(t) \(i)\(tr == .level ? "" : " \(tr)")"
        case .deregister(let e): "deregister \(e)"
        case .registerNumber(let fd, let t, let i): "register fd \(fd) token \(t) \(i)"
        case .registerBadArguments(let e, let t, let i): "register \(e) token \(t) interest \(i)"
        case .registerWaker(let t): "register the poller's waker descriptor token \(t)"
        case .registerAboveLimit(let t): "register the number above the declared limit, token \(t)"
        case .writeUrgent(let e): "send one byte of urgent data (MSG_OOB) from \(e)"
        case .isOpen(let e): "\(e) is still open"
        case .forkedCalls(let e, let t): "fork: the child's register, reregister (token \(t)) and deregister of \(e), wait and wake fail with forked, its close succeeds"
        case .write(let e, let n): "write \(n) byte\(n == 1 ? "" : "s") to \(e)"
        case .fill(let e): "fill \(e)'s send buffer"
        case .drain(let e): "drain \(e)"
        case .shutdownWrite(let e): "shutdown(SHUT_WR) \(e)"
        case .close(let e): "close \(e)"
        case .resetClose(let e): "close \(e) with SO_LINGER 0"
        case .duplicate(let e, let n, let min): "dup \(e) as \(n) (fd >= \(min))"
        case .wait(let t): "wait \(t.map { "\($0)" } ?? "forever")"
        case .waitSmall(let c, let t): "wait \(t.map { "\($0)" } ?? "forever") into a buffer of \(c)"
        case .waitRounds(let c, let r): "\(r) waits into a buffer of \(c)"
        case .reopenOnNumber(let e, let p, let n): "open socketpair \(e)/\(p) on \(n)'s old number"
        case .waitTimed(let t): "wait \(t) (timed)"
        case .waitInterrupted(let t, let n): "wait \(t) while \(n) signals arrive"
        case .wake(let times, let threads): "wake \(times)x from \(threads) thread\(threads == 1 ? "" : "s")"
        case .waitWokenByThread(let after): "wait forever; another thread wakes after \(after)"
        case .waitWithTimeoutWokenByThread(let timeout, let after): "wait \(timeout.map { "\($0)" } ?? "forever"); another thread wakes after \(after)"
        case .waitClosedByThread(let after): "wait forever; another thread closes the poller after \(after)"
        case .waitWhileClosedByThread(let e, let after): "wait forever; another thread closes \(e) after \(after), then wakes"
        case .waitWhileWrittenByThread(let e, let after): "wait forever; another thread writes a byte to \(e) after \(after)"
        case .closePoller: "close the poller"
        case .connect(let target, let timeout): "connect to \(target) within \(timeout)"
        case .duplicateOnto(let e, let name, let number): "dup \(e) onto \(number)'s old number as \(name)"
        case .exhaustDescriptors: "exhaust the descriptor limit"
        case .restoreDescriptors: "restore the descriptor limit"
        case .createPollersExhausted(let n): "create pollers with 0...\(n) descriptors left"
        case .deregisterAll(let names): "deregister \(names.joined(separator: ", "))"
        case .registerEach(let p, let n, let t, let i): "register \(p)0...\(p)\(n - 1) tokens \(t)... \(i)"
        case .writeEach(let p, let n): "write 1 byte to each of \(p)0'...\(p)\(n - 1)'"
        case .closeEach(let p, let n): "close \(p)0...\(p)\(n - 1)"
        case .deregisterEach(let p, let n): "deregister \(p)0...\(p)\(n - 1)"
        case .waitCounting(let c, let t): "wait \(t.map { "\($0)" } ?? "forever") into a buffer of \(c), counting events"
        case .waitWokenBySignalHandler(let after): "wait forever; a signal handler wakes after \(after)"
        case .wakeReenteredBySignalHandler(let n): "wake in a loop while \(n) signal handlers wake too"
        }
    }
}

/// A step and what a backend with every capability observes.
public struct ScriptLine: Sendable, Hashable {
    public let step: Step
    public let expect: Observation
    public init(_ step: Step, _ expect: Observation = .ok) {
        self.step = step
        self.expect = expect
    }
    /// A step whose outcome the contract leaves open between the given ones (a caller's error whose
    /// effect depends on what the kernel watches: numbers or files).
    public init(_ step: Step, anyOf outcomes: [Observation]) {
        self.step = step
        self.expect = .anyOf(outcomes)
    }
}

/// One conformance scenario: fixtures, a script, and what every backend must observe.
public struct Scenario: Sendable, Identifiable, CustomStringConvertible {
    /// "area/name".
    public let id: String
    /// What the scenario checks, in one sentence.
    public let checks: String
    public let fixtures: [Fixture]
    public let script: [ScriptLine]
    public let requirements: [Requirement]

    public init(_ id: String, checks: String, fixtures: [Fixture] = [], requires: [Requirement] = [], _ script: [ScriptLine]) {
        self.id = id
        self.checks = checks
        self.fixtures = fixtures
        self.script = script
        requirements = requires
    }

    public var description: String { id }
}
