import CReadinessBench
import Readiness

/// Every contender, in table order.
enum Contenders {
    static let libeventDefaultMethod = String(cString: rb_libevent_default_method())

    static let raw: [Contender] = [
        Contender(name: "raw epoll (C)", family: .raw, mechanism: "epoll"),
        Contender(name: "raw poll (C)", family: .raw, mechanism: "poll"),
        Contender(name: "raw select (C)", family: .raw, mechanism: "select"),
    ]
    static let libeventC = Contender(name: "libevent (C)", family: .libeventC, mechanism: libeventDefaultMethod)
    static let readiness: [Contender] = [
        Contender(name: "Readiness epoll", family: .readiness, mechanism: "epoll"),
        Contender(name: "Readiness poll", family: .readiness, mechanism: "poll"),
        Contender(name: "Readiness select", family: .readiness, mechanism: "select"),
        Contender(name: "Readiness libevent", family: .readiness, mechanism: libeventDefaultMethod),
        Contender(name: "Readiness libevent:epoll", family: .readiness, mechanism: "epoll"),
        Contender(name: "Readiness libevent:poll", family: .readiness, mechanism: "poll"),
        Contender(name: "Readiness libevent:select", family: .readiness, mechanism: "select"),
        Contender(name: "Readiness io_uring", family: .readiness, mechanism: "io_uring"),
    ]
    static let nio = Contender(name: "SwiftNIO", family: .nio, mechanism: "epoll")
    /// Diagnostic (scenario 3 only): the epoll poller driven by hand like the raw loop, without the
    /// connect state machine's getpeername/getsockname.
    static let pollerOnly = Contender(name: "Readiness epoll, poller only", family: .readiness, mechanism: "epoll")

    static var waitContenders: [Contender] { raw + [libeventC] + readiness }
    static var connectContenders: [Contender] { raw + [libeventC] + readiness + [pollerOnly, nio] }

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
        c.family == .libeventC ? (CInt(RB_LIBEVENT), nil) : (rawKind(c.mechanism), nil)
    }

    /// Calls `body` with a fresh poller of the backend, as its concrete type.
    static func withPoller(_ c: Contender, _ body: some PollerConsumer) throws -> any Instance {
        switch backendName(c) {
        case "epoll": return try body.make(EpollSeam.makePoller())
        case "poll": return try body.make(PollSeam.makePoller())
        case "select": return try body.make(SelectSeam.makePoller())
        case "libevent": return try body.make(LibeventSeam.makePoller())
        case "libevent:epoll": return try body.make(libevent(.epoll))
        case "libevent:poll": return try body.make(libevent(.poll))
        case "libevent:select": return try body.make(libevent(.select))
        case "io_uring": return try body.make(IOUringSeam.makePoller())
        default: throw BenchError("unknown backend \(c.name)")
        }
    }

    private static func libevent(_ method: LibeventSeam.Method) throws -> SeamPoller<LibeventSeam> {
        guard LibeventSeam.supports(method) else { throw BenchError("libevent has no \(method.rawValue) method") }
        return try LibeventSeam.makePoller(method: method)
    }

    static func ring(_ c: Contender, mode: RingMode, n: Int, active: Int, writes: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CRing(kind: kind, method: method, mode: mode, n: n, active: active, writes: writes)
        case .readiness:
            return try withPoller(c, RingMaker(mode: mode, n: n, active: active, writes: writes))
        case .nio:
            throw BenchError("not a contender here")
        }
    }

    static func scale(_ c: Contender, n: Int, iterations: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CScale(kind: kind, method: method, n: n, iterations: iterations)
        case .readiness:
            return try withPoller(c, ScaleMaker(n: n, iterations: iterations))
        case .nio:
            throw BenchError("not a contender here")
        }
    }

    static func connect(_ c: Contender, total: Int, inFlight: Int) throws -> any Instance {
        switch c.family {
        case .raw, .libeventC:
            let (kind, method) = cKind(c)
            return try CConnect(kind: kind, method: method, total: total, inFlight: inFlight)
        case .readiness:
            return try withPoller(c, ConnectMaker(total: total, inFlight: inFlight, stateMachine: c.name != pollerOnly.name))
        case .nio:
            return try NIOConnect(total: total, inFlight: inFlight)
        }
    }
}

/// Builds an instance from a poller of a concrete type (closures cannot be generic, so this is a
/// protocol with a generic method): the loop is then specialised for that backend.
protocol PollerConsumer {
    func make<S: PollerSeam>(_ poller: SeamPoller<S>) throws -> any Instance
}

struct RingMaker: PollerConsumer {
    let mode: RingMode, n: Int, active: Int, writes: Int
    func make<S: PollerSeam>(_ poller: SeamPoller<S>) throws -> any Instance {
        try ReadinessRing(poller: poller, mode: mode, n: n, active: active, writes: writes)
    }
}

struct ScaleMaker: PollerConsumer {
    let n: Int, iterations: Int
    func make<S: PollerSeam>(_ poller: SeamPoller<S>) throws -> any Instance {
        try ReadinessScale(poller: poller, n: n, iterations: iterations)
    }
}

struct ConnectMaker: PollerConsumer {
    let total: Int, inFlight: Int, stateMachine: Bool
    func make<S: PollerSeam>(_ poller: SeamPoller<S>) throws -> any Instance {
        try ReadinessConnect(poller: poller, total: total, inFlight: inFlight, stateMachine: stateMachine)
    }
}
