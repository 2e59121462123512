@_spi(Backend) import Readiness

struct ConnectCommand: Command {
    private enum Name {
        static let target = "target"
        static let backend = "backend"
        static let timeout = "timeout"
        static let json = "json"
    }

    /// The connect timeout when --timeout is not given.
    static let defaultTimeoutMilliseconds = 5000
    /// Happy Eyeballs (RFC 8305): the delay before the next address is tried.
    static let attemptDelay: Duration = .milliseconds(250)

    private static let timeoutOption = OptionSpec.value(
        Name.timeout, help: "Timeout in milliseconds for the whole connect, every address (0 or more).", default: String(defaultTimeoutMilliseconds))

    private static let targetArgument = ArgumentSpec(name: Name.target, help: "HOST:PORT, [IPv6]:PORT or unix:PATH")

    static let spec = CommandSpec(
        name: "connect",
        abstract: "Connect once (confirmed by SO_ERROR) and print the outcome, the time and the state machine's trace.",
        arguments: [targetArgument],
        options: [
            .value(Name.backend, help: "Backend name (default: READINESS_BACKEND or the best available)."),
            timeoutOption,
            .flag(Name.json, help: "Print one JSON object."),
        ])

    let target: String
    let backend: String?
    let timeout: Int
    let json: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        guard let target = arguments.arguments.first else {
            throw .missingArgument(Self.targetArgument.label)
        }
        self.target = target
        backend = arguments.value(Name.backend)
        timeout = try arguments.integer(Self.timeoutOption) ?? Self.defaultTimeoutMilliseconds
        json = arguments.flag(Name.json)
        guard timeout >= 0 else { throw .invalid("--timeout must not be negative (got \(timeout))") }
    }

    struct Output: Encodable {
        let target: String
        let backend: String
        let connected: Bool
        let local: String?
        let peer: String?
        let error: String?
        let cause: String?
        let errno: String?
        let elapsedMilliseconds: Double
        let attempts: [String]
        let trace: [String]
    }

    func run() throws(ToolError) {
        let chosen = try orFail { () throws(SelectionError) -> Backend in
            if let backend { try Backend.named(backend) } else { try Backend.default() }
        }
        let poller = try orFail { () throws(PollerError) in try chosen.makePoller() }
        defer { try? poller.close() }
        // A target that does not parse is a usage mistake (exit 64, found before any I/O); one that
        // parses and does not resolve is a failure (1).
        // Byte-wise, as the library reads it (`hasPrefix` compares characters: "unix:" followed by a
        // combining mark was not a Unix address here, and was one for the library).
        if target.utf8.starts(with: "unix:".utf8) {
            do { _ = try SocketAddress(target) } catch { throw .usage(.invalid("The value '\(target)' is invalid for '<target>': \(error.reason)")) }
        } else {
            do { _ = try SocketAddress.splitHostPort(target) } catch { throw .usage(.invalid("The value '\(target)' is invalid for '<target>': \(error.reason)")) }
        }
        let start = Deadline.now
        // --timeout bounds the whole command, as Go's DialTimeout does: the name's lookup (off this
        // thread, on the lookup pool) included, then every address's attempt, not each one's.
        let deadline: Deadline = Deadline.after(.milliseconds(timeout))
        let elapsed = { Self.milliseconds(Deadline.now - start) }
        let addresses: [SocketAddress]
        switch try resolve(on: poller, until: deadline) {
        case .success(let found): addresses = found
        case .failure(let failure):
            let output = Output(target: target, backend: chosen.name, connected: false, local: nil, peer: nil,
                                error: failure.message, cause: failure.cause, errno: nil,
                                elapsedMilliseconds: elapsed(), attempts: [], trace: [])
            try report(output)
            throw .failed
        }
        var output: Output
        // At most as many addresses as the library's connects try (a name with hundreds of answers).
        let cap = HappyEyeballs.Options().maximumAttempts
        let attempts = Connector.makeAttempts(to: Array(Connector.interleaveFamilies(addresses).prefix(cap)), on: poller,
                                              timeout: nil, trace: true)
        do throws(ConnectError) {
            let socket = try Connector.run(attempts, on: poller, attemptDelay: Self.attemptDelay,
                                           timeout: Deadline.timeout(until: deadline.nanoseconds))
            // The attempt reads its local name only where a self-connect is possible: ask here.
            // A nameless Unix socket has no local address (never the text "unix:").
            let local = (socket.local ?? (try? SocketAddress.local(of: socket.fd))).flatMap { $0.isNamelessUnix ? nil : $0 }
            Sys.close(socket.fd)
            output = Output(target: target, backend: chosen.name, connected: true, local: local?.description,
                            peer: socket.peer?.description, error: nil, cause: nil, errno: nil,
                            elapsedMilliseconds: elapsed(), attempts: attempts.map(\.address.description),
                            trace: Self.trace(attempts, since: start))
        } catch {
            output = Output(target: target, backend: chosen.name, connected: false, local: nil, peer: nil,
                            error: error.description, cause: error.cause.rawValue, errno: error.errnoName,
                            elapsedMilliseconds: elapsed(), attempts: attempts.map(\.address.description),
                            trace: Self.trace(attempts, since: start))
        }
        try report(output)
        if !output.connected { throw .failed }
    }

    private func report(_ output: Output) throws(ToolError) {
        if json {
            try printJSON(output)
        } else {
            let report: (String) -> Void = output.connected ? { print($0) } : { printError($0) }
            report(output.connected ? "connected \(output.local ?? "?") -> \(output.peer ?? "?")" : "failed: \(output.error ?? "")")
            report("backend: \(output.backend), elapsed: \(String(format: "%.3f", output.elapsedMilliseconds)) ms")
            for line in output.trace { report("  \(line)") }
        }
    }

    /// Why the target gave no address: the report's text and its cause ("unresolved", or "timedOut"
    /// when the deadline passed during the lookup).
    struct LookupFailure: Error {
        let message: String
        let cause: String
    }

    /// The target's addresses (AAAA answers first): a numeric address or path at once, a name through a
    /// `Resolution` (its lookups on the pool's threads) waited for on the poller until `deadline`.
    private func resolve(on poller: any Poller, until deadline: Deadline) throws(ToolError) -> Result<[SocketAddress], LookupFailure> {
        let resolution: Resolution
        do { resolution = try Resolution(target, waker: poller.waker) } catch {
            return .failure(LookupFailure(message: "invalid address \"\(target)\": \(error.reason)", cause: "unresolved"))
        }
        defer { resolution.cancel() }
        var found: [SocketAddress.Family: [SocketAddress]] = [:]
        var reasons: [SocketAddress.Family: ResolutionError] = [:]
        // Once one family has answered with addresses, the other gets the resolution delay (50 ms)
        // and no more (an AAAA query a name server drops must not hold an A answer in hand until the
        // deadline). Unlike the library's connect by name (RFC 8305 section 3), which starts on an
        // AAAA answer at once and adds a later answer to the attempts, the tool resolves, then
        // connects: an AAAA answer waits up to 50 ms for the A answer, and an answer later than that
        // is not tried (the trace lists what was).
        var enoughAt: Int64?
        let events = EventBuffer(capacity: 4)
        while true {
            for answer in resolution.takeAnswers() {
                switch answer.result {
                case .success(let addresses) where !addresses.isEmpty:
                    found[answer.family, default: []] += addresses
                    if enoughAt == nil { enoughAt = Deadline.after(HappyEyeballs.Options().resolutionDelay).nanoseconds }
                case .success: break
                case .failure(let error): reasons[answer.family] = error
                }
            }
            if resolution.isComplete { break }
            var until = deadline.nanoseconds
            if let enoughAt {
                // An answer in hand: go on with it at the end of the delay or at the deadline (the
                // attempts then look once), never waiting with a timeout already spent.
                let now = MonotonicClock.nowNanoseconds
                if now >= enoughAt || now >= deadline.nanoseconds { break }
                until = min(until, enoughAt)
            }
            let left = Deadline.timeout(until: until)
            if left <= .zero, enoughAt == nil {
                return .failure(LookupFailure(message: "timed out resolving \"\(target)\" (--timeout \(timeout) ms)", cause: "timedOut"))
            }
            do { try poller.wait(into: events, timeout: left) } catch {
                return .failure(LookupFailure(message: "poller: \(error)", cause: "poller"))
            }
        }
        let addresses = (found[.ipv6] ?? []) + (found[.ipv4] ?? []) + (found[.unix] ?? [])
        if addresses.isEmpty {
            // Both families' reasons, IPv6's then IPv4's, as the library's connect by name says them.
            let message: String
            switch (reasons[.ipv6], reasons[.ipv4]) {
            case (let v6?, let v4?) where v6.reason != v4.reason: message = "cannot resolve \(v6.host): IPv6: \(v6.reason); IPv4: \(v4.reason)"
            case (let one?, _), (nil, let one?): message = one.description
            default: message = "cannot resolve \(target): no address"
            }
            return .failure(LookupFailure(message: message, cause: "unresolved"))
        }
        return .success(addresses)
    }

    /// `duration` in milliseconds, for the report.
    static func milliseconds(_ duration: Duration) -> Double { Double(duration.attoseconds) / 1e15 }

    static func trace(_ attempts: [ConnectAttempt], since start: Deadline) -> [String] {
        let steps: [(address: SocketAddress, entry: ConnectTraceEntry)] = attempts.flatMap { attempt in
            attempt.trace.map { (attempt.address, $0) }
        }
        return steps.sorted { $0.entry.at < $1.entry.at }.map { step in
            let ms = milliseconds(step.entry.at - start)
            return String(format: "+%.3f ms ", ms) + "\(step.address): \(step.entry)"
        }
    }
}
