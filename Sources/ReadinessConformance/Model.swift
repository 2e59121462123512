import Readiness

/// What a step observed, normalized so that two backends' observations compare directly:
/// tokens instead of descriptor numbers, error cases without their numbers.
public enum Observation: Hashable, Sendable, CustomStringConvertible {
    /// A step that did something and has nothing to report.
    case ok
    /// The events of one wait, by token (wake-ups under ``Token/waker``).
    case events([Token: Ready])
    /// A ``PollerError`` case name (e.g. "alreadyRegistered").
    case error(String)
    /// A connect outcome: "connected" or "failed:<cause>".
    case connect(String)
    /// Anything else a step checks (timing, counts), as text.
    case note(String)
    /// Expected only: any one of these outcomes is right (see ``ScriptLine/init(_:anyOf:)``).
    indirect case anyOf([Observation])

    public static let none = Observation.events([:])

    public var description: String {
        switch self {
        case .ok: return "ok"
        case .events(let events):
            if events.isEmpty { return "no events" }
            return events.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key):\($0.value)" }.joined(separator: " ")
        case .error(let name): return "error \(name)"
        case .connect(let outcome): return "connect \(outcome)"
        case .note(let text): return text
        case .anyOf(let outcomes): return "one of: " + outcomes.map(\.description).joined(separator: " / ")
        }
    }

    /// The observation as a backend with `visibility` can see it (bits it cannot report removed).
    public func masked(_ visibility: Visibility) -> Observation {
        guard case .events(let events) = self else { return self }
        var out: [Token: Ready] = [:]
        for (token, ready) in events {
            let bits = token == .waker ? ready : ready.intersection(visibility.bits)
            if !bits.isEmpty { out[token] = bits }
        }
        return .events(out)
    }

    /// Whether two observations of the same step agree for a backend (or pair) with `visibility`.
    /// Where a backend folds hang-up and error into readable/writable, read-closed is not compared
    /// for a token that one side saw hung up or in error (libevent's epoll method reports only
    /// EV_READ|EV_WRITE on EPOLLERR, without EV_CLOSED).
    public static func agree(_ a: Observation, _ b: Observation, _ visibility: Visibility) -> Bool {
        if case .anyOf(let outcomes) = b { return outcomes.contains { agree(a, $0, visibility) } }
        if case .anyOf(let outcomes) = a { return outcomes.contains { agree($0, b, visibility) } }
        guard case .events(let x) = a, case .events(let y) = b, !visibility.readClosedBesideHangup else {
            return a.masked(visibility) == b.masked(visibility)
        }
        var loose = Set<Token>()
        for (token, ready) in x.merging(y, uniquingKeysWith: { $0.union($1) }) where !ready.isDisjoint(with: [.hangup, .error]) {
            loose.insert(token)
        }
        func strip(_ events: [Token: Ready]) -> Observation {
            var out = events
            for token in loose { out[token]?.remove(.readClosed) }
            return Observation.events(out).masked(visibility)
        }
        return strip(x) == strip(y)
    }
}

/// Which readiness bits can be compared for a backend, or between two.
public struct Visibility: Sendable, Hashable {
    /// The bits reported at all.
    public var bits: Ready
    /// False where read-closed is folded away when a hang-up or error is pending (libevent reports
    /// only EV_READ|EV_WRITE on EPOLLHUP/EPOLLERR, without EV_CLOSED).
    public var readClosedBesideHangup: Bool

    public init(_ capabilities: Capabilities) {
        bits = capabilities.observableReady
        readClosedBesideHangup = capabilities.reportsHangupAndError
    }

    /// What both can see.
    public func common(_ other: Visibility) -> Visibility {
        var both = self
        both.bits.formIntersection(other.bits)
        both.readClosedBesideHangup = readClosedBesideHangup && other.readClosedBesideHangup
        return both
    }
}

extension PollerError {
    /// The case name, without descriptor numbers: what conformance compares.
    public var caseName: String {
        switch self {
        case .closed: "closed"
        case .invalidDescriptor: "invalidDescriptor"
        case .badDescriptor: "badDescriptor"
        case .unsupportedDescriptor: "unsupportedDescriptor"
        case .descriptorTooLarge(_, let limit): "descriptorTooLarge(limit: \(limit))"
        case .alreadyRegistered: "alreadyRegistered"
        case .notRegistered: "notRegistered"
        case .reservedToken: "reservedToken"
        case .emptyInterest: "emptyInterest"
        case .unsupportedTrigger(let trigger, _): "unsupportedTrigger(\(trigger))"
        case .system(let operation, let code): "system(\(operation), \(ErrnoTable.name(code)))"
        case .resourceExhausted: "resourceExhausted"
        case .unavailable: "unavailable"
        case .forked: "forked"
        }
    }
}

/// A capability a scenario needs; a backend without it skips the scenario, with this reason.
public struct Requirement: Sendable {
    public let reason: String
    public let isMet: @Sendable (Capabilities) -> Bool
    public init(_ reason: String, _ isMet: @escaping @Sendable (Capabilities) -> Bool) {
        self.reason = reason
        self.isMet = isMet
    }
    public static let edgeTriggered = Requirement("needs edge-triggered registrations") { $0.edgeTriggered }
    public static let readClosed = Requirement("needs read-closed reports") { $0.reportsReadClosed }
    public static let hangupAndError = Requirement("needs hang-up and error reports") { $0.reportsHangupAndError }
    /// select's limit exactly (the scenario names it): a backend with another small limit skips it.
    public static let selectLimit = Requirement("needs a backend limited to FD_SETSIZE (1024)") { $0.maxDescriptor == 1_023 }
    /// Room for the descriptor the scenario makes (1,500 or more).
    public static let noSmallLimit = Requirement("needs a backend that holds descriptors of 1500 and more") { $0.maxDescriptor >= 1_600 }
    /// No declared limit at all (`maxDescriptor == CInt.max`): any number is checked as a descriptor.
    public static let noDescriptorLimit = Requirement("needs a backend without a descriptor limit (maxDescriptor CInt.max)") { $0.maxDescriptor == CInt.max }
    /// A finite declared limit, which the backend must enforce (rule 3).
    public static let declaredLimit = Requirement("needs a backend with a declared descriptor limit") { $0.maxDescriptor < CInt.max }
    /// A process that may fork with other threads running and have the child go on (not one under
    /// ThreadSanitizer, whose runtime does not follow such a child): the process's, not the backend's.
    public static let fork = Requirement("needs fork() with a child that runs on (not under ThreadSanitizer)") { _ in
        Net.underThreadSanitizer == false
    }
}

/// Something a scenario's steps work on, set up before the first step and torn down after the last.
public enum Fixture: Sendable, Hashable {
    /// A connected AF_UNIX stream socketpair: endpoints `a` and `b`.
    case socketPair(String, String)
    /// A pipe: `read` and `write` ends.
    case pipe(read: String, write: String)
    /// A connected loopback TCP pair (`client`, `server`), non-blocking.
    case tcpPair(client: String, server: String)
    /// A loopback TCP listener that never accepts unless a connect step asks it to.
    case tcpListener(String, ipv6: Bool)
    /// A TCP listener whose accept queue is full: further connects stay in progress.
    case fullTCPListener(String)
    /// A Unix-domain listener at a fresh path.
    case unixListener(String)
    /// A Unix-domain listener whose backlog is full: connect fails with EAGAIN.
    case fullUnixListener(String)
    /// A regular file (not pollable).
    case regularFile(String)
    /// A FIFO opened with O_PATH: a location, not an open file (no I/O, not pollable).
    case pathOnly(String)
    /// `count` socketpairs: endpoints "`name`0" ... with peers "`name`0'" ... (see ``Step/registerEach(_:count:firstToken:interest:)``).
    case socketPairs(String, count: Int)
    /// A device opened read-write by path (e.g. /dev/null, which the kernel cannot poll).
    case device(String, path: String)
    /// An anonymous-inode file with no poll method (a Landlock ruleset): neither a device, a regular
    /// file nor a directory, which epoll refuses and poll(2) and select call always ready.
    case anonymousUnpollable(String)
    /// A pidfd `name` for a child process that exits once a byte is written to `release` (a pipe's
    /// write end): a file the kernel reports readable when the process has exited.
    case childProcess(String, release: String)
}

/// Where a connect step connects to.
public enum ConnectTarget: Sendable, Hashable, CustomStringConvertible {
    /// A listener fixture; `peer` says what the accepting side does right after the handshake.
    case listener(String, peer: Peer)
    /// A loopback port nobody listens on.
    case closedPort
    /// A Unix-domain path that does not exist.
    case missingUnixPath
    /// A loopback port connected from the same address and port (TCP simultaneous open to itself).
    case selfConnect
    /// An address with no route, from a socket created in a private network namespace.
    case unreachable

    public enum Peer: String, Sendable, Hashable {
        /// Does not accept.
        case silent
        /// Accepts and writes at once (the client is readable and writable before it looks).
        case writes
        /// Accepts and resets (SO_LINGER 0 then close).
        case resets
    }

    public var description: String {
        switch self {
        case .listener(let name, let peer): "\(name)(peer \(peer.rawValue))"
        case .closedPort: "closed port"
        case .missingUnixPath: "missing unix path"
        case .selfConnect: "itself"
        case .unreachable: "unreachable network"
        }
    }
}
