import ReadinessCore
import ReadinessNet
import Synchronization

// Serving: the accept loop every server writes, with each connection's task on its socket's loop.
//
// A connection's task that does not prefer its loop hops to the loop thread and back at every
// operation (each await resumes on the global executor): 42% fewer requests per second in a
// keep-alive HTTP server measured on this machine. `serve` starts every connection's task with
// `executorPreference: loop`, so its operations run where the socket lives.

extension AsyncListener {
    /// How long ``serve(_:)`` pauses when the loop holds as many resources as it can
    /// (``LoopError/resourceExhausted``) before it accepts again.
    static let fullLoopPause = Duration.milliseconds(10)
    /// The longest pause: a shortage that lasts (epoll's per-user watch limit, shared with every process
    /// of the user) is tried again ten times a second, not a hundred (Go's `Server.Serve` backs off to
    /// 1 s; shorter here because the pause is not cut short by a shutdown or a close).
    static let longestShortagePause = Duration.milliseconds(100)

    /// Accepts connections until the listener is closed, its loop shuts down or the calling task is
    /// cancelled, and runs `handler` for each in a task of its own that prefers the listener's loop;
    /// the connection is closed when `handler` returns.
    ///
    /// Returns when accepting ends for one of those reasons, after every connection's task has
    /// finished (cancelling the calling task cancels them too; so does the loop's end, also when the
    /// listener was closed before the loop shut down). Throws the accept failure that is
    /// none of those (a listener the kernel no longer accepts on, a poller failure), after the same
    /// wait for the connections. An out-of-descriptors accept is not a failure: the listener backs off
    /// (Docs/Sockets.md) and accepting goes on; nor is a loop that holds as many resources as it can
    /// (``LoopError/resourceExhausted``), or a poller that cannot watch the listener for want of memory
    /// (``LoopError/isPassingShortage``): the connection stays queued, `serve` pauses 10 ms (doubling
    /// while it lasts, up to 100 ms) and accepts again. A loop that ended (its waits failing for want
    /// of resources for a second) is the poller's failure, thrown. The listener is the caller's: it stays
    /// open (the kernel queueing connections on it) until the caller closes it, also while the
    /// connections are waited for after a failure; ``EventLoop/serve(on:options:_:)``, whose listener
    /// is its own, closes it as soon as accepting fails.
    ///
    /// A listener already closed when `serve` begins ends it the same way, at once, with nothing
    /// served: whether a close came just before the serving task's first accept or just after it is
    /// a matter of scheduling, and both give one answer (Go's `Serve` returns `ErrServerClosed` in
    /// both orders; `accept` itself says ``LoopError/closed``).
    nonisolated(nonsending) public func serve(_ handler: @escaping @Sendable (AsyncSocket) async -> Void) async throws(LoopError) {
        try await serve(handler, closesOnFailure: false)
    }

    /// ``serve(_:)``. `closesOnFailure` (the group's serve, the loop's): a listener whose accepting
    /// failed is closed before the connections are waited for, so that the kernel stops queueing
    /// connections on it.
    nonisolated(nonsending) func serve(_ handler: @escaping @Sendable (AsyncSocket) async -> Void,
                                       closesOnFailure: Bool) async throws(LoopError) {
        let listener = self
        let loop = self.loop
        let running = ServedConnections()
        let failure: LoopError? = await withDiscardingTaskGroup { connections in
            var pause = Self.fullLoopPause   // doubles while shortages follow one another, up to 100 ms
            while true {
                // Cancelled: stop at once, though connections are still queued (accept takes one
                // before it would wait, so a flood would otherwise keep a cancelled serve going).
                if Task.isCancelled { return nil }
                let socket: AsyncSocket
                do throws(LoopError) {
                    socket = try await listener.accept()
                } catch {
                    switch error {
                    case .closed where loop.isDraining:
                        // A graceful shutdown closed it: the connections finish within the grace
                        // period; once the loop has ended, the tasks still running (a handler waiting
                        // on something else than the loop) are cancelled, as a plain shutdown does.
                        // Cancelling `serve` ends this wait too (its connections are cancelled with it).
                        await loop.finishedUnlessCancelled()
                        connections.cancelAll()
                        return nil
                    case .closed:
                        // Closed by its owner: the connections finish. Should the loop end first (a
                        // shutdown after the close, Go's Close then Shutdown), those still running are
                        // cancelled, as when the shutdown comes first: a handler waiting on something
                        // else than the loop ends too. Cancelling `serve` ends this wait.
                        if await running.finishedOrLoopEnded(loop) { connections.cancelAll() }
                        return nil
                    case .cancelled:
                        // The group's tasks are cancelled with it.
                        return nil
                    case .shutdown:
                        // The loop is gone: a handler waiting on something else (a stream, a sleep
                        // of its own) is told to stop too, so that serve returns.
                        connections.cancelAll()
                        return nil
                    // The loop's own shortage always passes (a shutdown meanwhile makes the next
                    // accept `.shutdown`); the poller's is the loop's end once the loop is going.
                    case let shortage where shortage == .resourceExhausted || (shortage.isPassingShortage && !loop.isShuttingDown):
                        // The loop holds as many resources as it can, or the poller could not watch
                        // the listener for want of memory (ENOMEM, epoll's ENOSPC): the connection
                        // stays queued. Pause (on the task's clock: a loop timer would need a slot)
                        // and try again once the connections being served have had time to close;
                        // never a spin, and never the end of serving.
                        do { try await Task.sleep(for: pause) } catch { return nil }
                        pause = Swift.min(pause * 2, Self.longestShortagePause)
                        continue
                    default:
                        // A loop that ended otherwise (its poller failed: every operation ends with
                        // that error) serves nothing more: its connections are cancelled, as for a
                        // shutdown, before the failure is thrown (a handler waiting on something
                        // else than the loop would otherwise hold `serve` for as long as it waits).
                        if loop.isShuttingDown { connections.cancelAll() }
                        // The group's serve closes it now, not once its connections ended (the oldest
                        // may last hours): with SO_REUSEPORT the kernel queues a share of the new
                        // connections on a listener nobody accepts from (review).
                        if closesOnFailure { await listener.close() }
                        return error
                    }
                }
                pause = Self.fullLoopPause
                running.started()
                connections.addTask(executorPreference: loop) {
                    await handler(socket)
                    await socket.close()
                    running.ended()
                }
            }
        }
        if let failure { throw failure }
    }
}

/// The connections' tasks a ``AsyncListener/serve(_:)`` runs, counted, so that a serve whose listener
/// was closed waits for them or for its loop's end, whichever comes first.
final class ServedConnections: @unchecked Sendable {
    // Sendable: `count` and `waiter` are only touched with `lock` held.
    private let lock = ConditionLock()
    private var count = 0
    private var waiter: UnsafeContinuation<Void, Never>?

    func started() { lock.withLock { count += 1 } }

    func ended() {
        let resumed: UnsafeContinuation<Void, Never>? = lock.withLock {
            count -= 1
            guard count == 0 else { return nil }
            defer { waiter = nil }
            return waiter
        }
        resumed?.resume()
    }

    /// Returns when no connection's task runs, or sooner when the calling task is cancelled.
    private func emptied() async {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let now = lock.withLock { () -> Bool in
                    if count == 0 || Task.isCancelled { return true }
                    waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let resumed: UnsafeContinuation<Void, Never>? = lock.withLock {
                defer { waiter = nil }
                return waiter
            }
            resumed?.resume()
        }
    }

    /// Waits until every connection's task has ended (false) or `loop` has finished (true), whichever
    /// comes first; a cancelled caller returns at once.
    func finishedOrLoopEnded(_ loop: EventLoop) async -> Bool {
        await withTaskGroup(of: Bool.self) { race in
            race.addTask { await self.emptied(); return false }
            race.addTask { await loop.finishedUnlessCancelled(); return true }
            let first = await race.next() ?? false
            race.cancelAll()
            return first
        }
    }
}

extension EventLoop {
    /// Listens on `address` and serves it (``AsyncListener/serve(_:)``) until the listener fails,
    /// the loop shuts down or the calling task is cancelled; the listener is closed on return, and at
    /// once when accepting failed (the wait for the connections may be long: meanwhile the kernel
    /// would queue new connections nobody accepts, where a closed listener refuses them).
    nonisolated(nonsending) public func serve(on address: SocketAddress, options: Listener.Options = Listener.Options(),
                                              _ handler: @escaping @Sendable (AsyncSocket) async -> Void) async throws(LoopError) {
        let listener = try await listen(on: address, options: options)
        do {
            try await listener.serve(handler, closesOnFailure: true)
        } catch {
            await listener.close()
            throw error
        }
        await listener.close()
    }
}

extension EventLoopGroup {
    /// Serves `address` on every loop of the group: one listener per loop (`SO_REUSEPORT` with more)
    /// (``listen(on:options:)``), one accepting task per loop preferring it, each connection's task on
    /// its listener's loop (``AsyncListener/serve(_:)``). Returns when every loop stopped accepting
    /// (the group shuts down, or the calling task is cancelled) and every connection's task finished;
    /// the first accept failure of a loop (after which that loop serves no more) is thrown then. The
    /// listeners are closed on return.
    nonisolated(nonsending) public func serve(on address: SocketAddress, options: Listener.Options = Listener.Options(),
                                              _ handler: @escaping @Sendable (AsyncSocket) async -> Void) async throws(LoopError) {
        let listeners = try await listen(on: address, options: options)
        do {
            try await serve(listeners, handler)
        } catch {
            for listener in listeners { await listener.close() }
            throw error
        }
        for listener in listeners { await listener.close() }
    }

    /// Serves `listeners` (each on its own loop, as ``listen(on:options:)`` makes them): one accepting
    /// task per listener preferring its loop, each connection's task on its listener's loop
    /// (``AsyncListener/serve(_:)``). For a server that needs the listeners first (to print the port
    /// it bound, for one). Returns when every listener stopped accepting (closed, its loop shut down,
    /// or the calling task cancelled) and every connection's task finished; the first accept failure
    /// is thrown then. It closes a listener whose accepting failed at once (the kernel would queue
    /// connections on it), and no other. A listener another task accepts on too is shared: the
    /// accepts take turns (``AsyncListener/accept(timeout:)``).
    nonisolated(nonsending) public func serve(_ listeners: [AsyncListener],
                                              _ handler: @escaping @Sendable (AsyncSocket) async -> Void) async throws(LoopError) {
        let failures: [LoopError] = await withTaskGroup(of: LoopError?.self) { group in
            for listener in listeners {
                group.addTask(executorPreference: listener.loop) {
                    do throws(LoopError) {
                        // Closed at once on failure: with SO_REUSEPORT the kernel would go on queueing
                        // a share of the new connections on a listener nobody accepts from.
                        try await listener.serve(handler, closesOnFailure: true)
                        return nil
                    } catch {
                        return error
                    }
                }
            }
            var failures: [LoopError] = []
            for await failure in group { if let failure { failures.append(failure) } }
            return failures
        }
        if let first = failures.first { throw first }
    }
}
