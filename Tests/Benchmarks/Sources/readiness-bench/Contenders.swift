import CReadinessBench
@_spi(Backend) import Readiness  // the backend kit: seams, concrete pollers, withConcreteType

/// Every contender, in table order.
enum Contenders {
    static let libeventDefaultMethod = String(cString: rb_libevent_default_method())

    static let raw: [Contender] = [
        Contender(name: "raw epoll (C)", family: .raw, mechanism: "epoll"),
        Contender(name: "raw poll (C)", family: .raw, mechanism: "poll"),
        Contender(name: "raw select (C)", family: .raw, mechanism: "select"),
    ]
    static let libeventC = Contender(name: "libevent (C)", family: .libeventC, mechanism: libeventDefaultMethod)
    /// libevent's loop forced to each method that is not its default (the like-for-like baseline of
    /// the Readiness libevent:poll and libevent:select backends).
    static let libeventForced: [Contender] = LibeventSeam.Method.allCases.map(\.rawValue)
        .filter { $0 != libeventDefaultMethod && rb_libevent_supports($0) != 0 }
        .map { Contender(name: "libevent:\($0) (C)", family: .libeventC, mechanism: $0, method: $0) }

    /// The Readiness backends, in table order.
    static let backends = ["epoll", "poll", "select", "libevent", "libevent:epoll", "libevent:poll", "libevent:select", "io_uring"]
    private static func mechanism(_ backend: String) -> String {
        if backend == "libevent" { return libeventDefaultMethod }
        return backend.hasPrefix("libevent:") ? String(backend.dropFirst("libevent:".count)) : backend
    }
    /// The user's path: the backend chosen at run time (`Backend.named(_:).makePoller()`, an
    /// `any Poller`), every call made through the existential.
    static let readiness: [Contender] = backends.map {
        Contender(name: "Readiness \($0)", family: .readiness, mechanism: mechanism($0))
    }
    /// Diagnostic: the same poller opened once into its concrete type (`Backend.withConcreteType`), so
    /// that the loop is compiled for that backend with the poller's code inlined.
    static let specialised: [Contender] = backends.map {
        Contender(name: "Readiness \($0), specialised", family: .readiness, mechanism: mechanism($0), specialised: true)
    }
    /// Diagnostic: what run-time selection handed a user before every backend had a
    /// `SpecializedPoller` type: the epoll poller as a bare `ContractPoller<EpollSeam>` through
    /// `any Poller`, whose conformance is generic over the seam.
    static let genericSeamPoller = Contender(name: "Readiness epoll, generic ContractPoller", family: .readiness, mechanism: "epoll")
    static let nio = Contender(name: "SwiftNIO", family: .nio, mechanism: "epoll")
    /// Diagnostic (scenario 3 only): the epoll poller driven by hand like the raw loop, without the
    /// connect state machine's getpeername/getsockname.
    static let pollerOnly = Contender(name: "Readiness epoll, poller only", family: .readiness, mechanism: "epoll")

    /// `c` with the like-for-like additions `flags` (RB_NAMES, RB_CHECKS), named after them.
    static func adding(_ flags: CInt, to c: Contender) -> Contender {
        guard flags != 0 else { return c }
        var parts: [String] = []
        if flags & CInt(RB_PRECISE) != 0 { parts.append("precise timer") }
        if flags & CInt(RB_WAKER) != 0 { parts.append("waker") }
        if flags & CInt(RB_OPEN_CHECK) != 0 { parts.append("open check") }
        if flags & CInt(RB_NAMES) != 0 { parts.append("names") }
        if flags & CInt(RB_CHECKS) != 0 { parts.append("checks") }
        let name = String(c.name.dropLast(" (C)".count)) + " + \(parts.joined(separator: " + ")) (C)"
        return Contender(name: name, family: c.family, mechanism: c.mechanism, method: c.method, flags: flags)
    }

    /// The C loop a Readiness contender is compared with like for like in `scenario`: the same kernel
    /// mechanism (libevent's own loop with the same method, for the libevent backends) watching the
    /// same descriptors (a waker's too), libevent configured alike (its precise timer), and making the
    /// same system calls the contract makes: in
    /// connect churn the names (`getpeername`, `getsockname`), and wherever a registration changes,
    /// the descriptor check (`fstat`) of the backends whose kernel call does not check (every one but
    /// epoll). nil for io_uring (no C loop of it here).
    static func likeForLike(_ c: Contender, scenario: Int) -> Contender? {
        let backend = backendName(c)
        let base: Contender?
        if backend.hasPrefix("libevent") {
            base = c.mechanism == libeventDefaultMethod ? libeventC : libeventForced.first { $0.mechanism == c.mechanism }
        } else {
            base = raw.first { $0.mechanism == backend }
        }
        guard let base else { return nil }
        // The waker's descriptor is in every Readiness poller's set; in connect churn (2 to 129
        // descriptors, ~30 µs of kernel work per connection) it is left out of the C loops.
        var flags: CInt = scenario == 3 ? 0 : CInt(RB_WAKER)
        // Readiness's libevent bases use EVENT_BASE_FLAG_PRECISE_TIMER (the contract's timeouts).
        if backend.hasPrefix("libevent") { flags |= CInt(RB_PRECISE) }
        // libevent's poll method reports a closed descriptor (POLLNVAL) as readable and writable: the
        // backend asks whether each fired descriptor is still open.
        if backend.hasPrefix("libevent"), c.mechanism == "poll" { flags |= CInt(RB_OPEN_CHECK) }
        if scenario == 3 { flags |= CInt(RB_NAMES) }
        if (scenario == 3 || scenario == 4) && backend != "epoll" { flags |= CInt(RB_CHECKS) }
        return adding(flags, to: base)
    }

    private static func likeForLikeRows(_ scenario: Int) -> [Contender] {
        var rows: [Contender] = []
        for c in readiness {
            guard let row = likeForLike(c, scenario: scenario), row.flags != 0,
                  !rows.contains(where: { $0.name == row.name }) else { continue }
            rows.append(row)
        }
        return rows
    }

    static var waitContenders: [Contender] {
        raw + [libeventC] + libeventForced + likeForLikeRows(1) + readiness + specialised + [genericSeamPoller]
    }
    static var churnContenders: [Contender] {
        raw + [libeventC] + libeventForced + likeForLikeRows(4) + readiness + specialised + [genericSeamPoller]
    }
    static var connectContenders: [Contender] { raw + [libeventC] + likeForLikeRows(3) + readiness + [pollerOnly, nio] }

    /// The backend name of a Readiness contender ("epoll", "libevent:poll", ...).
    static func backendName(_ c: Contender) -> String {
        String(c.name.dropFirst("Readiness ".count).prefix { $0 != "," })
    }

    static func rawKind(_ mechanism: String) -> CInt {
        switch mechanism {
        case "poll": CInt(RB_POLL)
        case "select": CInt(RB_SELECT)
        default: CInt(RB_EPOLL)
        }
    }

    /// The C contender's kind and libevent method.
    static func cKind(_ c: Contender) -> (CInt, String?) {
        c.family == .libeventC ? (CInt(RB_LIBEVENT), c.method) : (rawKind(c.mechanism), nil)
    }

    /// A fresh poller of the backend, chosen at run time as a user does.
    static func makePoller(_ c: Contender) throws -> any Poller {
        if c.name == genericSeamPoller.name {
            return try ContractPoller.make { waker throws(PollerError) in try EpollSeam(waker: waker) }
        }
        let backend = try Backend.named(backendName(c))
        if let problem = backend.probe() { throw BenchError(problem) }
        return try backend.makePoller()
    }

    static func ring(_ c: Contender, mode: RingMode, n: Int, active: Int, writes: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CRing(kind: kind, method: method, flags: c.flags, mode: mode, n: n, active: active, writes: writes)
        case .readiness:
            return try ReadinessRing(poller: makePoller(c), specialised: c.specialised, mode: mode, n: n, active: active, writes: writes)
        case .nio:
            throw BenchError("not a contender here")
        }
    }

    static func scale(_ c: Contender, n: Int, iterations: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CScale(kind: kind, method: method, flags: c.flags, n: n, iterations: iterations)
        case .readiness:
            return try ReadinessScale(poller: makePoller(c), specialised: c.specialised, n: n, iterations: iterations)
        case .nio:
            throw BenchError("not a contender here")
        }
    }

    static func connect(_ c: Contender, total: Int, inFlight: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CConnect(kind: kind, method: method, flags: c.flags, total: total, inFlight: inFlight)
        case .readiness:
            return try ReadinessConnect(poller: makePoller(c), total: total, inFlight: inFlight,
                                        stateMachine: c.name != pollerOnly.name)
        case .nio:
            return try NIOConnect(total: total, inFlight: inFlight)
        }
    }
}

/// Runs a Readiness contender's loop with its poller opened into its concrete type.
struct SpecialisedRound<Loop: PollerLoop>: PollerBody {
    let loop: Loop
    func run<P: Poller>(_ poller: P) throws -> Round { try loop.round(on: poller) }
}

/// A Readiness contender's timed loop, written once, generic over the poller. `round()` calls it with
/// the `any Poller` (the user's path: every call through the existential) or, for the specialised
/// diagnostic rows, with the poller opened into its concrete type.
protocol PollerLoop: Instance {
    var poller: any Poller { get }
    var specialised: Bool { get }
    func round<P: Poller>(on poller: P) throws -> Round
}

extension PollerLoop {
    func round() throws -> Round {
        if specialised { return try Backend.withConcreteType(of: poller, SpecialisedRound(loop: self)) }
        return try round(on: poller)
    }
}
