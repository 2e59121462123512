/// A connect over several addresses that runs step by step inside the caller's loop, the way
/// ``ConnectAttempt`` does for one: RFC 8305 ("Happy Eyeballs version 2").
///
/// 1. **Resolution** (when built with a ``Resolution``): AAAA and A are queried separately off the
///    loop thread. An AAAA answer starts connecting at once; an A answer first waits up to
///    ``Options/resolutionDelay`` (50 ms) for the AAAA one (section 3). Answers arriving later join
///    the addresses not yet tried.
/// 2. **Order**: families alternate, starting with IPv6 after a resolution, or with the first
///    address's family for a given list (section 4).
/// 3. **Attempts**: one starts every ``Options/attemptDelay`` (250 ms) while earlier ones go on; a
///    failure with nothing else in flight starts the next at once, and the newest attempt's failure
///    brings the next to 10 ms after that attempt's start (section 5; Docs/Connect.md, rule 11).
/// 4. **The first success wins**; every other attempt is cancelled (deregistered, then closed).
///    When all fail, the error is the last to fail (``ConnectError/Cause/timedOut``, named after
///    the last attempt that timed out, if any did), and lists every attempt
///    (``ConnectError/attempts``) when there was more than one.
///
/// The loop gives it what concerns it, and it never waits or consumes other events:
/// ```swift
/// let connect = HappyEyeballs(resolution: resolution, poller: poller, timers: timers, tokenBase: 100)
/// var progress = connect.start()
/// // an event whose token connect.owns(_:), or the waker's event: progress = connect.handle(event)
/// // a timer token connect.owns(_:) popped from timers:            progress = connect.handleTimer(token)
/// ```
/// Tokens: it takes them from a ``TokenAllocator`` (`tokens:`), one for its timer, then one per attempt
/// as the attempt starts, with no limit but ``Options/maximumAttempts``; an event loop hands out tokens
/// of its own (`EventLoop` allocates them in its slab). Given a `tokenBase` instead, `tokenBase` is its
/// timer token and attempt `i` uses `tokenBase + 1 + i` (``TokenBlock``: a block that reaches
/// `Token.waker` skips it and goes on at 0).
public final class HappyEyeballs {
    /// The RFC 8305 parameters and limits.
    public struct Options: Sendable {
        /// The connection attempt delay (RFC 8305 section 5; 250 ms recommended). Less than
        /// ``minimumAttemptDelay`` (zero, negative) is taken as that floor, as the RFC requires.
        public var attemptDelay: Duration = .milliseconds(250)
        /// 10 ms: RFC 8305 section 5's floor ("MUST NOT be less than 10 milliseconds").
        public static let minimumAttemptDelay: Duration = .milliseconds(10)
        /// How long an A answer waits for the AAAA answer (section 3; 50 ms recommended).
        public var resolutionDelay: Duration = .milliseconds(50)
        /// Each attempt's own timeout, from its start; nil (the default) for none: each attempt is then
        /// bounded by the connect's overall timeout, if the caller gave one, and otherwise by the
        /// kernel's (an unanswered SYN fails with ETIMEDOUT after its retries, about two minutes on
        /// Linux), as a connect in Go, libuv or tokio is. Set it to move on from an address that does
        /// not answer sooner than the overall timeout would (a list of one address keeps it too).
        public var attemptTimeout: Duration? = nil
        /// The most addresses tried; further ones are ignored. At least 1: `EventLoop` and
        /// ``Connector`` refuse a smaller value with a typed error, and this type itself tries one
        /// address then.
        public var maximumAttempts = 16

        /// Why these options cannot be used, or nil when they can.
        public var invalidReason: String? {
            maximumAttempts < 1 ? "HappyEyeballs.Options.maximumAttempts must be at least 1" : nil
        }
        /// The RFC's recommended values, no attempt timeout of its own, at most 16 attempts.
        public init() {}
    }

    /// Where it stands.
    public enum Progress {
        /// Still resolving or connecting: keep passing it its events and timers.
        case inProgress
        /// The winner: the caller owns the socket (no longer registered).
        case connected(ConnectedSocket)
        /// Every attempt failed; ``ConnectError/attempts`` lists them.
        case failed(ConnectError)
        /// The name did not resolve to any address.
        case unresolved(ResolutionError)

        /// True for ``inProgress``.
        public var isInProgress: Bool {
            if case .inProgress = self { return true }
            return false
        }
    }

    /// Every attempt started so far, in start order.
    public private(set) var attempts: [ConnectAttempt] = []
    /// The parameters it runs with.
    public let options: Options
    /// Its timer token (the first it allocated; with a `tokenBase`, attempts use the tokens after it).
    public let tokenBase: Token

    private let poller: any Poller
    private let timers: Timers
    /// Where attempt tokens come from (nil: attempts made by the caller).
    private let tokens: (any TokenAllocator)?
    private let resolution: Resolution?
    private var primary: [Pending] = []
    private var secondary: [Pending] = []
    private var primaryFamily: SocketAddress.Family?
    private var nextFromPrimary = true
    private var deadlineTimers: [TimerID?] = []
    /// Per attempt: whether it has ended here (its own `isFinished` is not relied on: an attempt whose
    /// socket() failed reports the failure from start() and is counted as ended by that).
    private var ended: [Bool] = []
    private var errors: [ConnectError] = []
    private var stepTimer: TimerID?
    /// When the next attempt may start (monotonic ns).
    private var nextStart: Int64 = .min
    /// When the newest attempt started (monotonic nanoseconds).
    private var lastStart: Int64 = .min
    /// While only the A answer is in: when to stop waiting for AAAA.
    private var resolutionDelayEnds: Int64?
    /// The lookups' failures, by family: both are reported when both failed, in a fixed order
    /// (whichever arrived first would otherwise decide the error).
    private var resolutionFailures: [SocketAddress.Family: ResolutionError] = [:]
    private var started = false
    private var outcome: Progress? {
        // Ended: answers still to come are of no use, and no lookup thread may wake the poller after.
        didSet { if outcome != nil { resolution?.cancel() } }
    }
    /// ``Options/maximumAttempts``, at least 1.
    private var attemptLimit: Int { max(1, options.maximumAttempts) }

    private enum Pending {
        case address(SocketAddress)
        case attempt(ConnectAttempt)
        var family: SocketAddress.Family {
            switch self {
            case .address(let address): address.family
            case .attempt(let attempt): attempt.address.family
            }
        }
    }

    /// Over addresses already known (tried in RFC 8305 order, the first address's family first), with
    /// tokens `tokenBase`, `tokenBase + 1`, ... (``TokenBlock``).
    public convenience init(addresses: [SocketAddress], poller: any Poller, timers: Timers, tokenBase: Token,
                            options: Options = Options()) {
        self.init(addresses: addresses, poller: poller, timers: timers, tokens: TokenBlock(first: tokenBase), options: options)
    }

    /// Over addresses already known, with tokens from `tokens`.
    public init(addresses: [SocketAddress], poller: any Poller, timers: Timers, tokens: any TokenAllocator,
                options: Options = Options()) {
        self.poller = poller
        self.timers = timers
        self.tokens = tokens
        tokenBase = tokens.makeToken()
        self.options = options
        resolution = nil
        primaryFamily = addresses.first?.family
        add(addresses.map(Pending.address))
    }

    /// Over a name being resolved (answers are taken by ``handle(_:)`` on a wake-up event), with tokens
    /// `tokenBase`, `tokenBase + 1`, ... (``TokenBlock``).
    public convenience init(resolution: Resolution, poller: any Poller, timers: Timers, tokenBase: Token,
                            options: Options = Options()) {
        self.init(resolution: resolution, poller: poller, timers: timers, tokens: TokenBlock(first: tokenBase), options: options)
    }

    /// Over a name being resolved, with tokens from `tokens`. Pass it a wake-up event (``/ReadinessCore/Token/waker``)
    /// when an answer may be in.
    public init(resolution: Resolution, poller: any Poller, timers: Timers, tokens: any TokenAllocator,
                options: Options = Options()) {
        self.poller = poller
        self.timers = timers
        self.tokens = tokens
        tokenBase = tokens.makeToken()
        self.options = options
        self.resolution = resolution
        primaryFamily = .ipv6
    }

    /// Over attempts already made (their tokens are theirs; `timerToken` must differ from them),
    /// started in the order given. An attempt listed twice is run once. Give each attempt a token of
    /// its own: attempts that share one are each handed every event and timer of that token (a
    /// wake-up is only "go and look" to an attempt, so none is left waiting for ever).
    public init(attempts: [ConnectAttempt], poller: any Poller, timers: Timers, timerToken: Token,
                attemptDelay: Duration) {
        self.poller = poller
        self.timers = timers
        tokens = nil
        tokenBase = timerToken
        // The same attempt twice would be started twice and counted as two, the second never ending.
        var seen = Set<ObjectIdentifier>()
        let attempts = attempts.filter { seen.insert(ObjectIdentifier($0)).inserted }
        var options = Options()
        options.attemptDelay = attemptDelay
        options.maximumAttempts = attempts.count
        self.options = options
        resolution = nil
        primary = attempts.map(Pending.attempt)
        primaryFamily = attempts.first?.address.family
    }

    deinit { cancel() }

    /// Whether `token` (of an event or a timer) belongs to this connect.
    public func owns(_ token: Token) -> Bool {
        if token == tokenBase { return true }
        return attempts.contains { $0.token == token }
    }

    /// The attempts' failures so far, in order (for an error made outside, such as a whole-call
    /// deadline's: ``ConnectError/attempts``).
    package var failures: [ConnectError] { errors }

    /// Whether it has ended (connected, failed, unresolved or cancelled).
    public var isFinished: Bool { outcome != nil }

    /// Starts: the first attempt, or waits for the resolution.
    public func start() -> Progress {
        guard !started else { return current }
        started = true
        if resolution != nil { takeAnswers() }
        initialPass = true
        defer { initialPass = false }
        return advance(now: MonotonicClock.nowNanoseconds)
    }

    /// A poller event: an attempt's readiness, or the waker's event (a resolution answer may be in).
    public func handle(_ event: Event) -> Progress {
        guard outcome == nil, started else { return current }
        // Answers already delivered count whatever woke this call: an attempt's event or a timer may be
        // handled before the waker's event that says an answer came (the caller's loop handles its
        // events, timers and wake-ups in its own order).
        if resolution != nil { takeAnswers() }
        if !event.isWakeup {
            // Every live attempt under the token (tokens should differ; if they do not, none of them
            // may be left without its events).
            for index in attempts.indices where attempts[index].token == event.token && !ended[index] {
                record(index, attempts[index].handle(event.ready))
                if outcome != nil { return current }
            }
        }
        return advance(now: MonotonicClock.nowNanoseconds)
    }

    /// A timer popped from ``Timers`` whose token it owns.
    package func handleTimer(_ token: Token, now: Int64 = MonotonicClock.nowNanoseconds) -> Progress {
        guard outcome == nil, started else { return current }
        // An AAAA answer delivered within the resolution delay goes first even when the delay's timer
        // is handled before the answer's wake-up (the loop fires timers before it runs submissions,
        // a caller's loop may too): before, the step found no IPv6 address yet and started IPv4, and
        // IPv6 then waited a whole attempt delay (SwiftNIO HappyEyeballsTest, RFC 8305 section 3).
        if resolution != nil { takeAnswers() }
        if token == tokenBase { stepTimer = nil }
        // Also when the token is the step timer's: a timer token equal to an attempt's (the caller's
        // choice in `init(attempts:...)`) must not swallow that attempt's deadline.
        for index in attempts.indices where attempts[index].token == token && !ended[index] {
            let progress = attempts[index].checkDeadline(now: now)
            if case .inProgress = progress { continue }   // not its deadline: another timer under the token
            deadlineTimers[index] = nil
            record(index, progress)
            if outcome != nil { return current }
        }
        return advance(now: now)
    }

    /// Cancels every attempt and timer (the winner, once handed over, is the caller's).
    public func cancel() {
        for (index, attempt) in attempts.enumerated() where !ended[index] {
            attempt.cancel()
            ended[index] = true
            if let id = deadlineTimers[index] { timers.cancel(id) }
        }
        dropQueued()
        if outcome == nil { outcome = .failed(ConnectError(.cancelled)) }
    }

    /// Cancels the attempts not started yet and the timer that would start the next one.
    private func dropQueued() {
        for pending in primary + secondary {
            if case .attempt(let attempt) = pending { attempt.cancel() }
        }
        primary.removeAll()
        secondary.removeAll()
        if let stepTimer { timers.cancel(stepTimer) }
        stepTimer = nil
    }

    private var current: Progress { outcome ?? .inProgress }

    private func add(_ items: [Pending]) {
        for item in items {
            if item.family == primaryFamily { primary.append(item) } else { secondary.append(item) }
        }
    }

    private func takeAnswers() {
        guard let resolution else { return }
        for answer in resolution.takeAnswers() {
            switch answer.result {
            case .success(let addresses):
                let known = Set(attempts.map(\.address))
                let fresh = addresses.filter { !known.contains($0) }
                add(fresh.map(Pending.address))
                if answer.family == .ipv6 {
                    resolutionDelayEnds = nil
                } else if !resolution.isComplete, attempts.isEmpty, resolutionDelayEnds == nil {
                    // Section 3: the A answer came first; give AAAA a moment.
                    resolutionDelayEnds = Deadline.after(options.resolutionDelay)
                }
            case .failure(let error):
                resolutionFailures[answer.family] = resolutionFailures[answer.family] ?? error
                if answer.family == .ipv6 { resolutionDelayEnds = nil }
            }
        }
        if resolution.isComplete { resolutionDelayEnds = nil }
    }

    private var resolutionPending: Bool { resolution.map { !$0.isComplete } ?? false }

    private func record(_ index: Int, _ progress: ConnectProgress) {
        switch progress {
        case .inProgress:
            return
        case .connected(let socket):
            ended[index] = true
            if let id = deadlineTimers[index] { timers.cancel(id) }
            deadlineTimers[index] = nil
            for (other, attempt) in attempts.enumerated() where other != index && !ended[other] {
                attempt.cancel()
                ended[other] = true
            }
            for timer in deadlineTimers.compactMap({ $0 }) { timers.cancel(timer) }
            dropQueued()
            outcome = .connected(socket)
        case .failed(let error):
            ended[index] = true
            if let id = deadlineTimers[index] { timers.cancel(id) }
            deadlineTimers[index] = nil
            errors.append(error)
            // Section 5: the newest attempt's failure starts the next at once, but never within
            // 10 ms of the newest's start while an earlier one is still connecting; an earlier
            // attempt's failure (its own timeout, in the same turn as the step) moves nothing, as
            // SwiftNIO's `connectFailed` (before: an attempt started there, 0.1 ms after the step's).
            if !ended.contains(false) {
                nextStart = .min
            } else if index == attempts.count - 1 {
                nextStart = min(nextStart, Deadline.after(Options.minimumAttemptDelay, now: lastStart))
            }
        }
    }

    /// The connect's overall deadline (monotonic nanoseconds, ``Deadline/nanoseconds``),
    /// set before ``start()``: no attempt starts at or after it (Go's dial starts nothing once its
    /// context is done), but those ``start()`` itself begins before anything is in flight, so that a
    /// deadline already passed still looks once (an address failing at once there, EADDRNOTAVAIL for
    /// `::1` without IPv6, never looked at anything: the next starts). Once it passes with addresses
    /// still to try or a lookup still running and nothing in flight, the connect fails with `timedOut`,
    /// listing what failed before. Without it a step or a refusal at the deadline started one more attempt,
    /// whose SYN a server then accepted for nothing. nil: no limit. (``deadline`` is the same, typed.)
    public var startDeadline: Int64?
    /// ``startDeadline`` as a ``Deadline``: the connect's overall deadline, set before ``start()``.
    public var deadline: Deadline? {
        get { startDeadline.map { Deadline(nanoseconds: $0) } }
        set { startDeadline = newValue?.nanoseconds }
    }
    /// Given to each attempt this connect starts that has none of its own
    /// (``ConnectAttempt/willRegister``).
    package var willRegister: ((CInt) -> Void)?
    /// Given to each attempt this connect starts that has none of its own
    /// (``ConnectAttempt/deregisterRefused``).
    package var deregisterRefused: ((CInt) -> Void)?
    /// Inside ``start()``'s own pass.
    private var initialPass = false
    /// Whether the connect ended because ``startDeadline`` passed with addresses or a lookup left
    /// (its failure is ``deadlineFailure()``), as decided then: a caller that classifies the failure
    /// later asks this, not its clock (an attempt's own kernel time-out that came just before the
    /// deadline is not the deadline's).
    package private(set) var endedByDeadline = false

    private func mayStartMore(_ now: Int64) -> Bool {
        guard let startDeadline, now >= startDeadline else { return true }
        return initialPass && !ended.contains(false)
    }

    /// Starts what is due, finishes when nothing is left, and sets the one timer it needs.
    private func advance(now: Int64) -> Progress {
        while outcome == nil {
            let waitingForAAAA = resolutionDelayEnds.map { now < $0 } ?? false
            let canStart = !waitingForAAAA && now >= nextStart && attempts.count < attemptLimit && mayStartMore(now)
            guard canStart, let next = popNext() else { break }
            let attempt: ConnectAttempt
            switch next {
            case .attempt(let made): attempt = made
            case .address(let address):
                guard let tokens else { preconditionFailure("an address to try without a token allocator") }
                attempt = ConnectAttempt(to: address, poller: poller, token: tokens.makeToken(),
                                         timeout: options.attemptTimeout)
            }
            if attempt.willRegister == nil { attempt.willRegister = willRegister }
            if attempt.deregisterRefused == nil { attempt.deregisterRefused = deregisterRefused }
            attempts.append(attempt)
            deadlineTimers.append(nil)
            ended.append(false)
            // RFC 8305 section 5: the next attempt never within 10 ms of this one, whatever was asked.
            nextStart = Deadline.after(max(options.attemptDelay, Options.minimumAttemptDelay), now: now)
            lastStart = now
            let progress = attempt.start()
            if case .inProgress = progress {
                deadlineTimers[attempts.count - 1] = attempt.scheduleDeadline(on: timers)
            }
            record(attempts.count - 1, progress)
        }
        if let outcome { return outcome }

        let live = ended.contains(false)
        let more = attempts.count < attemptLimit && mayStartMore(now)
        // The deadline stops what is left (addresses, a lookup's answers) with nothing in flight: the
        // connect's deadline passed, whatever failed before (Connect.md, rule 11).
        if !live, !more, attempts.count < attemptLimit, !primary.isEmpty || !secondary.isEmpty || resolutionPending {
            outcome = .failed(deadlineFailure())
            endedByDeadline = true
            if let stepTimer { timers.cancel(stepTimer) }
            stepTimer = nil
            return outcome!
        }
        let queued = (!primary.isEmpty || !secondary.isEmpty) && more
        // An answer still to come can start nothing once the attempts allowed are all made.
        if !live && !queued && !(resolutionPending && more) {
            outcome = finalFailure()
            if let stepTimer { timers.cancel(stepTimer) }
            stepTimer = nil
            return outcome!
        }
        // The one step timer: the next start (if something is queued), or the end of the resolution delay;
        // with nothing in flight, at the latest the start deadline, which ends the connect by itself
        // (before, a lookup that never answered held a caller's loop with no timer past the deadline).
        var wake: Int64?
        if queued { wake = nextStart }
        if let ends = resolutionDelayEnds, queued { wake = max(wake ?? ends, ends) }
        if let startDeadline, !live, queued || resolutionPending { wake = min(wake ?? startDeadline, startDeadline) }
        if let stepTimer { timers.cancel(stepTimer) }
        stepTimer = wake.map { timers.schedule(at: $0, token: tokenBase) }
        return .inProgress
    }

    private func popNext() -> Pending? {
        let preferPrimary = nextFromPrimary
        let item: Pending
        if (preferPrimary && !primary.isEmpty) || secondary.isEmpty {
            guard !primary.isEmpty else { return nil }
            item = primary.removeFirst()
            nextFromPrimary = false
        } else {
            item = secondary.removeFirst()
            nextFromPrimary = true
        }
        return item
    }

    /// The lookups' failure: one family's, or both (IPv6's reason, then IPv4's), nil when none failed.
    private var resolutionFailure: ResolutionError? {
        switch (resolutionFailures[.ipv6], resolutionFailures[.ipv4]) {
        case (let v6?, let v4?):
            if v6.reason == v4.reason { return v6 }
            // The kind a caller acts on: one that may pass (temporary, out of resources) if either
            // family's was, the shared one otherwise.
            let kind: ResolutionError.Kind = [v6.kind, v4.kind].contains(.temporary) ? .temporary
                : [v6.kind, v4.kind].contains(.resourceExhausted) ? .resourceExhausted
                : v6.kind == v4.kind ? v6.kind : .other
            return ResolutionError(host: v6.host, reason: "IPv6: \(v6.reason); IPv4: \(v4.reason)", kind: kind, errno: v6.errno ?? v4.errno)
        case (let one?, nil), (nil, let one?):
            return one
        case (nil, nil):
            return resolutionFailures.values.first
        }
    }

    /// The failure of a connect whose overall deadline passed (``/ReadinessNet/Connector``'s
    /// `timeout`): `timedOut`, named by the oldest attempt still running (nil when none was: the lookup
    /// was still going), listing what failed before and each running attempt as timed out.
    package func deadlineFailure() -> ConnectError {
        let running = attempts.enumerated().filter { !ended[$0.offset] }.map(\.element)
        var error = ConnectError(.timedOut, address: running.first?.address)
        error.attempts = errors + running.map { ConnectError(.timedOut, address: $0.address) }
        return error
    }

    private func finalFailure() -> Progress {
        if errors.isEmpty {
            guard let resolution else { return .failed(ConnectError(.noAddress)) }   // an empty list
            return .unresolved(resolutionFailure ?? ResolutionError(host: resolution.host, reason: "no address", kind: .notFound))
        }
        if errors.count == 1 { return .failed(errors[0]) }
        var error = errors.last!
        // Any attempt that timed out makes the whole a time-out: named by that attempt's address.
        if let timedOut = errors.last(where: { $0.cause == .timedOut }) { error = ConnectError(.timedOut, address: timedOut.address) }
        error.attempts = errors
        return .failed(error)
    }
}

/// Hands out tokens for a connect's attempts and timer (``HappyEyeballs``), one at a time as they are
/// needed: each must differ from every other registration and timer token of the poller and timers it
/// uses, and from ``/ReadinessCore/Token/waker``.
public protocol TokenAllocator: AnyObject {
    /// A token nothing else uses.
    func makeToken() -> Token
}

/// Consecutive tokens from `first` (`first`, `first + 1`, ...): for a caller that reserves a block.
/// ``/ReadinessCore/Token/waker`` (the largest value) is never handed out: a block that reaches it
/// goes on at 0.
public final class TokenBlock: TokenAllocator {
    private var next: Token
    /// Tokens from `first` upward.
    public init(first: Token) { next = first }
    /// The next token of the block.
    public func makeToken() -> Token {
        if next == .waker { next = Token(rawValue: 0) }
        defer { next = Token(rawValue: next.rawValue &+ 1) }
        return next
    }
}
