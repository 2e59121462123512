@_spi(Backend) @_exported import ReadinessCore
@_spi(Backend) @_exported import ReadinessEpoll
@_spi(Backend) @_exported import ReadinessIOUring
#if Libevent
@_spi(Backend) @_exported import ReadinessLibevent
#endif
@_spi(Backend) @_exported import ReadinessPoll
@_spi(Backend) @_exported import ReadinessSelect
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A backend that can be chosen at run time: a kernel mechanism (epoll, poll, select) or libevent with
/// one of its methods.
///
/// Start with ``makeDefaultPoller(environment:)``; see <doc:Contract> for what every backend keeps.
public struct Backend: Hashable, Sendable, CustomStringConvertible, Codable {
    /// What a backend is: a kernel mechanism, or libevent with a method.
    public enum Kind: Hashable, Sendable, Codable {
        /// Linux epoll.
        case epoll
        /// POSIX poll.
        case poll
        /// POSIX select (descriptors below `FD_SETSIZE` only).
        case select
        /// io_uring poll requests (Backends/IOUring); last in ``all``: the default only where no other backend works.
        case ioUring
        /// libevent; nil lets libevent choose its method.
        case libevent(method: String?)
    }

    /// A kernel method libevent can be forced to.
    public enum LibeventMethod: String, CaseIterable, Sendable {
        /// libevent's epoll method.
        case epoll
        /// libevent's poll method.
        case poll
        /// libevent's select method.
        case select
    }

    /// What this backend is.
    public let kind: Kind

    /// Linux epoll.
    public static let epoll = Backend(kind: .epoll)
    /// POSIX poll.
    public static let poll = Backend(kind: .poll)
    /// POSIX select.
    public static let select = Backend(kind: .select)
    /// io_uring poll requests: chosen only when asked for.
    public static let ioUring = Backend(kind: .ioUring)
    /// libevent with its own choice of method.
    public static let libevent = Backend(kind: .libevent(method: nil))
    /// libevent forced to one method ("epoll", "poll" or "select").
    public static func libevent(_ method: LibeventMethod) -> Backend {
        Backend(kind: .libevent(method: method.rawValue))
    }

    /// Every backend this package knows, best first (the order the default is chosen in). io_uring is
    /// last: it is chosen only when asked for (it does not beat epoll: Backends/IOUring/README.md).
    ///
    /// The libevent variants are listed even when the `Libevent` package trait is off; they then
    /// probe as unavailable, "not built in (trait Libevent off)".
    public static let all: [Backend] = [.epoll, .poll, .libevent, .libevent(.epoll), .libevent(.poll), .libevent(.select), .select, .ioUring]

    #if Libevent
    /// Whether libevent is compiled into this build (the package trait `Libevent`, on by default).
    public static let libeventBuiltIn = true
    #else
    /// Whether libevent is compiled into this build (the package trait `Libevent`, on by default).
    public static let libeventBuiltIn = false
    #endif

    /// Why the libevent backends are unavailable when the `Libevent` trait is off.
    static let libeventNotBuiltIn = "not built in (trait Libevent off)"

    /// The environment variable that overrides ``default(environment:)``: a backend name, e.g. `poll` or
    /// `libevent:select`.
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
    /// The backend's ``name``.
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
            #if Libevent
            guard let method else { return try LibeventSeam.makePoller() }
            guard let known = LibeventSeam.Method(rawValue: method) else {
                throw .unavailable(backend: name, reason: "unknown libevent method \(method)")
            }
            return try LibeventSeam.makePoller(method: known)
            #else
            _ = method
            throw .unavailable(backend: name, reason: Backend.libeventNotBuiltIn)
            #endif
        }
    }

    /// Why this backend cannot be used here, or nil when it can.
    ///
    /// The first probe of a backend creates and closes a poller; its verdict is cached for the life of
    /// the process, so selection costs nothing after the first call. A failure that says nothing about
    /// the backend (out of descriptors or memory: `EMFILE`, `ENFILE`, `ENOMEM`; a wake-up descriptor
    /// above select's FD_SETSIZE, `descriptorTooLarge`, in a process holding over a thousand) is not cached.
    public func probe() -> String? {
        if let cached = Backend.probeCache.withLock({ $0.verdicts[self] }) { return cached }
        let verdict: String?
        var lasting = true
        do {
            let poller = try makePoller()
            defer { try? poller.close() }
            if kind == .ioUring {
                // A self-test that ran short of descriptors or memory says nothing about io_uring either.
                (verdict, lasting) = Self.selfTest(poller)
            } else {
                verdict = nil
            }
        } catch {
            verdict = error.description
            // Out of descriptors, or a wake-up descriptor above select's FD_SETSIZE (a process holding
            // over a thousand descriptors now): the process's state, not the backend's.
            if error.isResourceExhausted { lasting = false }
            if case .descriptorTooLarge = error { lasting = false }
        }
        Backend.probeCache.withLock { cache in
            cache.probes += 1
            if lasting { cache.verdicts[self] = .some(verdict) }
        }
        return verdict
    }

    struct ProbeCache {
        var verdicts: [Backend: String?] = [:]
        /// Pollers created by probes since the process started (tests read it).
        var probes = 0
    }
    static let probeCache = Mutex(ProbeCache())

    /// A start-up self-test for a backend that can be created but may still not work (io_uring under a
    /// seccomp filter that refuses io_uring_enter, a kernel that refuses poll requests): a pipe's read
    /// end must be reported readable once the pipe is written, and not before. Returns the reason it
    /// failed (nil: it passed) and whether that verdict is about the backend: a failure for want of
    /// descriptors or memory (EMFILE, ENFILE, ENOMEM; `resourceExhausted`) is not, and is not cached.
    static func selfTest(_ poller: any Poller) -> (verdict: String?, lasting: Bool) {
        guard let pipe = Sys.pipe() else {
            let code = errno
            return ("self-test: pipe2 failed (\(ErrnoTable.name(code)))", ![EMFILE, ENFILE, ENOMEM].contains(code))
        }
        defer {
            Sys.close(pipe.read)
            Sys.close(pipe.write)
        }
        let events = EventBuffer(capacity: 4)
        do {
            try poller.register(pipe.read, token: 1, interest: .readable)
            guard try poller.wait(into: events, timeout: .zero) == 0 else { return ("self-test: an empty pipe was reported ready", true) }
            var byte: UInt8 = 1
            guard write(pipe.write, &byte, 1) == 1 else { return ("self-test: write failed (\(ErrnoTable.name(errno)))", true) }
            guard try poller.wait(into: events, timeout: .seconds(1)) == 1, events[0] == Event(token: 1, ready: .readable) else {
                return ("self-test: a written pipe was not reported readable within 1 s", true)
            }
            try poller.deregister(pipe.read)
        } catch {
            return ("self-test: \(error)", !error.isResourceExhausted)
        }
        return (nil, true)
    }

    /// What the kernel offers this backend, printed beside it in the selection report (io_uring: its
    /// feature bits, multishot poll, `io_uring_disabled`), or nil.
    public var kernelFacts: String? { kind == .ioUring ? IOUringSeam.kernelFacts() : nil }

    /// The backends that work on this machine, best first.
    public static var available: [Backend] { all.filter { $0.probe() == nil } }

    /// The backend to use: `READINESS_BACKEND` if set, otherwise the best available.
    ///
    /// Probes only what it needs (the requested backend, or the backends in order up to the first that
    /// works), once per process. ``selection(environment:)`` explains the choice.
    public static func `default`(environment: [String: String]? = nil) throws(SelectionError) -> Backend {
        if let override = overrideValue(environment) {
            let requested = try Backend.named(override)
            if let problem = requested.probe() { throw .requestedUnavailable(requested.name, problem) }
            return requested
        }
        if let best = all.first(where: { $0.probe() == nil }) { return best }
        throw .noneAvailable(selection(environment: environment))
    }

    /// Creates a ready poller of the default backend: the one call to start with.
    ///
    /// ```swift
    /// let poller = try Backend.makeDefaultPoller()    // READINESS_BACKEND=poll overrides
    /// ```
    ///
    /// A selection failure (an unknown or unavailable `READINESS_BACKEND`, no backend available) and
    /// a creation failure are both ``SelectionError``, as from every entry that selects a backend
    /// (``default(environment:)``, `EventLoop.init(name:jobs:)`): a poller's own error is kept
    /// in ``SelectionError/creationFailed(_:_:)``.
    public static func makeDefaultPoller(environment: [String: String]? = nil) throws(SelectionError) -> any Poller {
        let backend = try Backend.default(environment: environment)
        do {
            return try backend.makePoller()
        } catch {
            throw .creationFailed(backend.name, error)
        }
    }

    private static func overrideValue(_ environment: [String: String]?) -> String? {
        let value = environment?[environmentVariable] ?? getenv(environmentVariable).map { String(cString: $0) }
        guard let value, !value.isEmpty else { return nil }
        return value
    }

    /// How the default is chosen, with the reason for every backend chosen or skipped (every backend is
    /// probed, once per process).
    public static func selection(environment: [String: String]? = nil) -> SelectionReport {
        let override = overrideValue(environment)
        var entries: [SelectionReport.Entry] = []
        var chosen: Backend?
        var failure: SelectionError?
        var requested: Backend?
        if let override {
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
            } else if let first = chosen {
                verdict = .skipped("available; \(first.name) was chosen first")
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
    /// The outcome for one backend, with the reason.
    public enum Verdict: Sendable, Hashable {
        /// This backend is the default; why.
        case chosen(String)
        /// This backend was not chosen; why (unavailable, or another was chosen first).
        case skipped(String)
    }
    /// One backend and its verdict.
    public struct Entry: Sendable {
        /// The backend.
        public let backend: Backend
        /// Whether it was chosen, and why.
        public let verdict: Verdict
    }
    /// Every backend of ``Backend/all``, in its order.
    public let entries: [Entry]
    /// The backend chosen, or nil when selection failed.
    public let chosen: Backend?
    /// Why selection failed, or nil.
    public let failure: SelectionError?

    /// One line per backend, and the failure if any.
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

/// Errors of run-time selection: the one error of every entry that chooses a backend
/// (``Backend/named(_:)``, ``Backend/default(environment:)``, ``Backend/makeDefaultPoller(environment:)``,
/// `EventLoop.init(name:jobs:)`).
public indirect enum SelectionError: Error, Sendable, CustomStringConvertible {
    /// No backend has this name; the valid names.
    case unknownName(String, valid: [String])
    /// The backend `READINESS_BACKEND` asks for cannot be used here; why.
    case requestedUnavailable(String, String)
    /// No backend works here; the report says why for each.
    case noneAvailable(SelectionReport)
    /// The chosen backend could not create a poller: its name and the poller's error.
    case creationFailed(String, PollerError)

    /// A message naming the backend and the reason.
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

extension EventLoop {
    /// A loop over `backend` (its thread creates the poller).
    public convenience init(backend: Backend, name: String = "readiness-loop",
                            jobs: JobIsolation = .automatic) throws(PollerError) {
        try self.init(name: name, jobs: jobs) { () throws(PollerError) -> any Poller in try backend.makePoller() }
    }

    /// A loop over the default backend (``Backend/default(environment:)``: `READINESS_BACKEND` or the best).
    public convenience init(name: String = "readiness-loop", jobs: JobIsolation = .automatic) throws(SelectionError) {
        let backend = try Backend.default()
        do {
            try self.init(backend: backend, name: name, jobs: jobs)
        } catch {
            throw .creationFailed(backend.name, error)
        }
    }
}

extension EventLoopGroup {
    /// `count` loops over `backend`.
    public convenience init(backend: Backend, count: Int = EventLoopGroup.defaultCount) throws(PollerError) {
        try self.init(count: count) { () throws(PollerError) -> any Poller in try backend.makePoller() }
    }

    /// `count` loops (one per core by default) over the default backend
    /// (``Backend/default(environment:)``: `READINESS_BACKEND`, or the best available), as
    /// ``EventLoop/init(name:jobs:)`` picks it: `EventLoopGroup()` is the group a server wants.
    /// A loop that cannot start (or a count outside 1 to `EventLoopGroup.maximumLoops`) is
    /// ``SelectionError/creationFailed(_:_:)``.
    public convenience init(count: Int = EventLoopGroup.defaultCount, name: String = "readiness-loop") throws(SelectionError) {
        let backend = try Backend.default()
        do {
            try self.init(count: count, name: name) { () throws(PollerError) -> any Poller in try backend.makePoller() }
        } catch {
            throw .creationFailed(backend.name, error)
        }
    }
}
