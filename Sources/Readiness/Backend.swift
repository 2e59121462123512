@_exported import ReadinessCore
@_exported import ReadinessEpoll
@_exported import ReadinessIOUring
@_exported import ReadinessLibevent
@_exported import ReadinessPoll
@_exported import ReadinessSelect
#if canImport(Glibc)
import Glibc
#endif

/// A backend that can be chosen at run time: a kernel mechanism (epoll, poll, select) or libevent with
/// one of its methods.
public struct Backend: Hashable, Sendable, CustomStringConvertible, Codable {
    public enum Kind: Hashable, Sendable, Codable {
        case epoll, poll, select
        /// io_uring poll requests (Backends/IOUring); last in ``all``: never the default.
        case ioUring
        /// libevent; nil lets libevent choose its method.
        case libevent(method: String?)
    }
    public let kind: Kind

    public static let epoll = Backend(kind: .epoll)
    public static let poll = Backend(kind: .poll)
    public static let select = Backend(kind: .select)
    public static let ioUring = Backend(kind: .ioUring)
    /// libevent with its own choice of method.
    public static let libevent = Backend(kind: .libevent(method: nil))
    /// libevent forced to one method ("epoll", "poll" or "select").
    public static func libevent(_ method: LibeventSeam.Method) -> Backend {
        Backend(kind: .libevent(method: method.rawValue))
    }

    /// Every backend this package knows, best first (the order the default is chosen in). io_uring is
    /// last: it is chosen only when asked for (it does not beat epoll: Backends/IOUring/README.md).
    public static let all: [Backend] = [.epoll, .poll, .libevent, .libevent(.epoll), .libevent(.poll), .libevent(.select), .select, .ioUring]

    /// The environment variable that overrides ``default``: a backend name, e.g. `poll` or `libevent:select`.
    public static let environmentVariable = "READINESS_BACKEND"

    /// The name used by ``named(_:)``, the environment variable and the command-line tool.
    public var name: String {
        switch kind {
        case .epoll: "epoll"
        case .poll: "poll"
        case .select: "select"
        case .ioUring: "io_uring"
        case .libevent(let method): method.map { "libevent:\($0)" } ?? "libevent"
        }
    }
    public var description: String { name }

    /// The backend with this name; an unknown name is an error that lists the valid ones.
    public static func named(_ name: String) throws(SelectionError) -> Backend {
        let wanted = name.lowercased()
        guard let backend = all.first(where: { $0.name == wanted }) else {
            throw .unknownName(name, valid: all.map(\.name))
        }
        return backend
    }

    /// Creates a poller of this backend.
    public func makePoller() throws(PollerError) -> any Poller {
        switch kind {
        case .epoll: return try EpollSeam.makePoller()
        case .poll: return try PollSeam.makePoller()
        case .select: return try SelectSeam.makePoller()
        case .ioUring: return try IOUringSeam.makePoller()
        case .libevent(let method):
            guard let method else { return try LibeventSeam.makePoller() }
            guard let known = LibeventSeam.Method(rawValue: method) else {
                throw .unavailable(backend: name, reason: "unknown libevent method \(method)")
            }
            return try LibeventSeam.makePoller(method: known)
        }
    }

    /// Why this backend cannot be used here, or nil when it can (it creates and closes a poller).
    public func probe() -> String? {
        do {
            let poller = try makePoller()
            defer { try? poller.close() }
            if kind == .ioUring { return Self.selfTest(poller) }
            return nil
        } catch {
            return error.description
        }
    }

    /// A start-up self-test for a backend that can be created but may still not work (io_uring under a
    /// seccomp filter that refuses io_uring_enter, a kernel that refuses poll requests): a pipe's read
    /// end must be reported readable once the pipe is written, and not before.
    static func selfTest(_ poller: any Poller) -> String? {
        guard let pipe = Sys.pipe() else { return "self-test: pipe2 failed (\(Errno.name(errno)))" }
        defer {
            Sys.close(pipe.read)
            Sys.close(pipe.write)
        }
        let events = EventBuffer(capacity: 4)
        do {
            try poller.register(pipe.read, token: 1, interest: .readable)
            guard try poller.wait(into: events, timeout: .zero) == 0 else { return "self-test: an empty pipe was reported ready" }
            var byte: UInt8 = 1
            guard write(pipe.write, &byte, 1) == 1 else { return "self-test: write failed (\(Errno.name(errno)))" }
            guard try poller.wait(into: events, timeout: .seconds(1)) == 1, events[0] == Event(token: 1, ready: .readable) else {
                return "self-test: a written pipe was not reported readable within 1 s"
            }
            try poller.deregister(pipe.read)
        } catch {
            return "self-test: \(error)"
        }
        return nil
    }

    /// What the kernel offers this backend, printed beside it in the selection report (io_uring: its
    /// feature bits, multishot poll, `io_uring_disabled`), or nil.
    public var kernelFacts: String? { kind == .ioUring ? IOUringSeam.kernelFacts() : nil }

    /// The backends that work on this machine, best first.
    public static var available: [Backend] { all.filter { $0.probe() == nil } }

    /// The backend to use: `READINESS_BACKEND` if set, otherwise the best available.
    public static func `default`(environment: [String: String]? = nil) throws(SelectionError) -> Backend {
        let report = selection(environment: environment)
        guard let chosen = report.chosen else { throw report.failure ?? .noneAvailable(report) }
        return chosen
    }

    /// Creates a poller of the default backend.
    public static func makeDefaultPoller(environment: [String: String]? = nil) throws(SelectionError) -> any Poller {
        let backend = try Backend.default(environment: environment)
        do {
            return try backend.makePoller()
        } catch {
            throw .creationFailed(backend.name, error)
        }
    }

    /// How the default is chosen, with the reason for every backend chosen or skipped.
    public static func selection(environment: [String: String]? = nil) -> SelectionReport {
        let override = environment?[environmentVariable] ?? getenv(environmentVariable).map { String(cString: $0) }
        var entries: [SelectionReport.Entry] = []
        var chosen: Backend?
        var failure: SelectionError?
        var requested: Backend?
        if let override, !override.isEmpty {
            do {
                requested = try Backend.named(override)
            } catch {
                failure = error
            }
        }
        for backend in all {
            let problem = backend.probe()
            let verdict: SelectionReport.Verdict
            if let problem {
                verdict = .skipped("unavailable: \(problem)")
                if backend == requested { failure = .requestedUnavailable(backend.name, problem) }
            } else if chosen != nil {
                verdict = .skipped("available; \(chosen!.name) was chosen first")
            } else if let requested {
                if backend == requested {
                    chosen = backend
                    verdict = .chosen("requested by \(environmentVariable)=\(override ?? "")")
                } else {
                    verdict = .skipped("available; \(environmentVariable) asks for \(requested.name)")
                }
            } else if failure == nil {
                chosen = backend
                verdict = .chosen("the best available (order: \(all.map(\.name).joined(separator: ", ")))")
            } else {
                verdict = .skipped("available, but \(environmentVariable) is invalid")
            }
            entries.append(.init(backend: backend, verdict: verdict.noting(backend.kernelFacts)))
        }
        if failure != nil { chosen = nil }
        return SelectionReport(entries: entries, chosen: chosen, failure: failure)
    }
}

extension SelectionReport.Verdict {
    /// The verdict with `facts` added in brackets.
    func noting(_ facts: String?) -> Self {
        guard let facts else { return self }
        switch self {
        case .chosen(let why): return .chosen("\(why) [\(facts)]")
        case .skipped(let why): return .skipped("\(why) [\(facts)]")
        }
    }
}

/// Why each backend was chosen or skipped.
public struct SelectionReport: Sendable, CustomStringConvertible {
    public enum Verdict: Sendable, Hashable {
        case chosen(String)
        case skipped(String)
    }
    public struct Entry: Sendable {
        public let backend: Backend
        public let verdict: Verdict
    }
    public let entries: [Entry]
    public let chosen: Backend?
    public let failure: SelectionError?

    public var description: String {
        var lines = entries.map { entry -> String in
            switch entry.verdict {
            case .chosen(let why): "  \(entry.backend.name): chosen: \(why)"
            case .skipped(let why): "  \(entry.backend.name): skipped: \(why)"
            }
        }
        if let failure { lines.append("  error: \(failure)") }
        return lines.joined(separator: "\n")
    }
}

/// Errors of run-time selection.
public indirect enum SelectionError: Error, Sendable, CustomStringConvertible {
    case unknownName(String, valid: [String])
    case requestedUnavailable(String, String)
    case noneAvailable(SelectionReport)
    case creationFailed(String, PollerError)

    public var description: String {
        switch self {
        case .unknownName(let name, let valid):
            "unknown backend \"\(name)\"; valid names: \(valid.joined(separator: ", "))"
        case .requestedUnavailable(let name, let why): "backend \(name) was requested but is unavailable: \(why)"
        case .noneAvailable(let report): "no backend is available:\n\(report)"
        case .creationFailed(let name, let error): "backend \(name) could not be created: \(error)"
        }
    }
}
