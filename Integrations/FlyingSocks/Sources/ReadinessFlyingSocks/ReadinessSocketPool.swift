// FlyingSocks' `AsyncSocketPool` over Readiness's `EventLoop`: every `suspendSocket` is one
// `loop.readable(fd)` or `loop.writable(fd)` on a descriptor FlyingSocks owns.
//
// .ci/flyingfox also compiles this file inside FlyingSocks itself (READINESS_INSIDE_FLYINGSOCKS), where
// it must not import the module it is part of.
#if !READINESS_INSIDE_FLYINGSOCKS
import FlyingSocks
#endif
import Readiness
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An `AsyncSocketPool` whose waits are Readiness `EventLoop` waits, on any backend.
///
/// - The pool's loops: one loop it makes in ``prepare()`` (``init(logger:)``: the backend of
///   `READINESS_BACKEND`, `Backend.default()`; ``init(backend:loops:logger:)``: the one given), or loops
///   the caller owns (``init(loop:logger:)``, ``init(group:logger:)``). A socket's waits always go to
///   the same loop, chosen by its descriptor number (`fd % loops.count`).
/// - ``prepare()`` then ``run()``, as FlyingSocks' own pools: `run()` throws when the pool is not
///   prepared or already runs, and otherwise suspends until its task is cancelled. When it ends, the
///   loops the pool made are shut down, so every socket still waiting resumes with
///   `CancellationError` (FlyingSocks' `SocketPool.cancelAll`); loops the caller gave are left
///   running (their waits go on until ready, cancelled, or the owner shuts the loop down). A later
///   `suspendSocket` throws until ``prepare()`` is called again, which makes new loops.
/// - ``suspendSocket(_:untilReadyFor:)`` returns when the descriptor is ready (or was ready: a
///   spurious return is allowed, FlyingSocks retries its system call and suspends again). Errors are
///   FlyingSocks': a cancelled task or a pool that stopped gives `CancellationError`; a descriptor
///   the poller refuses (closed, negative) gives `SocketError.disconnected`; another failure of the
///   poller gives `SocketError.failed`.
/// - FlyingSocks allows any number of waiters per descriptor; Readiness's waits on one descriptor
///   take turns (the second returns once the first's wait ended and the descriptor is still ready).
///   Should a wait still meet `LoopError.busy`, it sleeps 1 ms and returns as a spurious wake-up, so
///   its caller retries; ``busyFallbacks`` counts them (0 since waits take turns).
/// - A descriptor its owner closes while a task waits on it does not end the wait (on any backend,
///   Docs/Async.md): the wait ends when the task is cancelled or the pool stops. FlyingFox's
///   `HTTPServer.stop()` closes its listener and then cancels the server task, so it ends as with
///   FlyingSocks' epoll pool, which does not see such a close either.
public final class ReadinessSocketPool: AsyncSocketPool {

    private enum Source: Sendable {
        /// Loops the caller owns: never shut down by the pool.
        case given([EventLoop])
        /// Loops the pool makes in `prepare()` and shuts down when `run()` ends; nil: `Backend.default()`.
        case owned(backend: Backend?, count: Int)
    }

    private enum Phase: Sendable {
        case idle, ready, running, complete
    }

    private struct State {
        var phase: Phase = .idle
        var loops: [EventLoop] = []
        var busyFallbacks = 0
    }

    private let source: Source
    private let logger: any Logging
    private let state: ReadinessLocked<State>

    /// One loop of the default backend (`READINESS_BACKEND`, otherwise the best available), made by
    /// ``prepare()`` (which throws the selection error, if any).
    public init(logger: some Logging = .disabled) {
        self.source = .owned(backend: nil, count: 1)
        self.logger = logger
        self.state = ReadinessLocked(State())
    }

    /// `count` loops of `backend`, made by ``prepare()``; a count outside 1 ...
    /// `EventLoopGroup.maximumLoops` makes ``prepare()`` throw `PollerError.system(operation:errno: EINVAL)`
    /// before it starts any loop, as `EventLoopGroup(count:)` does.
    public init(backend: Backend, loops count: Int = 1, logger: some Logging = .disabled) {
        self.source = .owned(backend: backend, count: count)
        self.logger = logger
        self.state = ReadinessLocked(State())
    }

    /// Waits on `loop`, which the caller owns (and shuts down).
    public convenience init(loop: EventLoop, logger: some Logging = .disabled) {
        self.init(loops: [loop], logger: logger)
    }

    /// Waits on the loops of `group`, a socket on the loop its descriptor number picks.
    public convenience init(group: EventLoopGroup, logger: some Logging = .disabled) {
        self.init(loops: group.loops, logger: logger)
    }

    private init(loops: [EventLoop], logger: some Logging) {
        precondition(!loops.isEmpty, "ReadinessSocketPool needs at least one loop")
        self.source = .given(loops)
        self.logger = logger
        self.state = ReadinessLocked(State(loops: loops))
    }

    /// The loop the waits of descriptor `fd` go to, or nil when the pool has none (not prepared).
    public func loop(for fd: Int32) -> EventLoop? {
        state.withLock { s in s.loops.isEmpty ? nil : s.loops[Self.index(fd, s.loops.count)] }
    }

    /// How many waits found another task waiting in the same direction on the same descriptor and
    /// returned after 1 ms instead (Readiness's one-waiter rule).
    public var busyFallbacks: Int { state.withLock { $0.busyFallbacks } }

    public func prepare() async throws {
        try state.withLock { (s: inout State) throws in
            switch s.phase {
            case .ready, .running:
                return
            case .idle, .complete:
                if s.loops.isEmpty { s.loops = try makeLoops() }
                s.phase = .ready
            }
        }
        logger.logInfo("ReadinessSocketPool prepare")
    }

    public func run() async throws {
        try state.withLock { (s: inout State) throws in
            guard s.phase == .ready else { throw NotReady(description: "ReadinessSocketPool.run: not ready (prepare first; one run at a time)") }
            s.phase = .running
        }
        do {
            while true { try await Task.sleep(for: .seconds(3600)) }
        } catch {
            await finish()
            throw error
        }
    }

    public func suspendSocket(_ socket: Socket, untilReadyFor events: Socket.Events) async throws {
        let fd = socket.file.rawValue
        let loop = try state.withLock { (s: inout State) throws -> EventLoop in
            guard s.phase == .ready || s.phase == .running, !s.loops.isEmpty else {
                throw NotReady(description: "ReadinessSocketPool.suspendSocket: not ready")
            }
            return s.loops[Self.index(fd, s.loops.count)]
        }
        do {
            try await Self.wait(on: loop, fd: fd, read: events.contains(.read), write: events.contains(.write))
        } catch .busy {
            state.withLock { $0.busyFallbacks += 1 }
            try await Task.sleep(for: .milliseconds(1))
        } catch {
            throw Self.flyingSocksError(error)
        }
    }

    private static func wait(on loop: EventLoop, fd: Int32, read: Bool, write: Bool) async throws(LoopError) {
        switch (read, write) {
        case (true, false):
            try await loop.readable(fd)
        case (false, true):
            try await loop.writable(fd)
        case (true, true):
            // Either direction: two waits, the first to end wins and the other is cancelled.
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await loop.readable(fd) }
                    group.addTask { try await loop.writable(fd) }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            } catch let error as LoopError {
                throw error
            } catch {
                throw .cancelled
            }
        case (false, false):
            if Task.isCancelled { throw .cancelled }
        }
    }

    /// FlyingSocks' error for a Readiness wait's.
    static func flyingSocksError(_ error: LoopError) -> any Error {
        switch error {
        case .cancelled, .shutdown:
            return CancellationError()
        case .closed:
            return FlyingSocks.SocketError.disconnected
        case .timedOut:
            return FlyingSocks.SocketError.timeout(message: "Readiness wait timed out")
        case .poller(let poller):
            switch poller {
            case .invalidDescriptor, .badDescriptor, .notRegistered, .closed:
                return FlyingSocks.SocketError.disconnected
            case .system(_, let code), .resourceExhausted(_, let code):
                return FlyingSocks.SocketError.failed(type: "Readiness", errno: code, message: poller.description)
            default:
                return FlyingSocks.SocketError.failed(type: "Readiness", errno: 0, message: poller.description)
            }
        default:
            return FlyingSocks.SocketError.failed(type: "Readiness", errno: 0, message: error.description)
        }
    }

    private func makeLoops() throws -> [EventLoop] {
        switch source {
        case .given(let loops):
            return loops
        case .owned(let backend, let count):
            guard (1...EventLoopGroup.maximumLoops).contains(count) else {
                throw PollerError.system(operation: "ReadinessSocketPool(loops: \(count)): 1 to \(EventLoopGroup.maximumLoops) loops",
                                         errno: EINVAL)
            }
            let chosen = try backend ?? Backend.default()
            var loops: [EventLoop] = []
            do {
                for i in 0..<count {
                    loops.append(try EventLoop(backend: chosen, name: "readiness-flyingsocks-\(i)"))
                }
            } catch {
                for loop in loops { loop.syncShutdown() }
                throw error
            }
            return loops
        }
    }

    /// A pool prepared and never run (an `HTTPServer` whose listen failed after `prepare()`) still owns
    /// its loops: they end with it, not with the process (each holds a thread, a poller and a waker).
    deinit {
        guard case .owned = source else { return }
        let owned = state.withLock { (s: inout State) -> [EventLoop] in
            defer { s.loops = [] }
            return s.loops
        }
        for loop in owned { loop.syncShutdown() }
    }

    private func finish() async {
        let owned = state.withLock { (s: inout State) -> [EventLoop] in
            s.phase = .complete
            guard case .owned = source else { return [] }
            defer { s.loops = [] }
            return s.loops
        }
        logger.logInfo("ReadinessSocketPool finished")
        for loop in owned { await loop.shutdown() }
    }

    private static func index(_ fd: Int32, _ count: Int) -> Int {
        fd < 0 ? 0 : Int(fd) % count
    }

    struct NotReady: Error, CustomStringConvertible {
        var description: String
    }
}
