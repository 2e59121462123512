import ReadinessCore
import ReadinessNet

// Graceful shutdown: stop accepting, let the connections finish within a grace period, then
// `shutdown()` (which fails what is left with `.shutdown`).

extension EventLoop {
    /// Shuts the loop down gracefully:
    /// 1. stops accepting: every listener of the loop is closed (a task in `accept` resumes with
    ///    ``LoopError/closed``, so ``AsyncListener/serve(_:)`` stops and waits for its connections),
    ///    and a later `listen` on the loop is refused with ``LoopError/shutdown``;
    /// 2. waits until the loop holds no connection it accepted or adopted (their tasks closed them, or
    ///    ``AsyncListener/serve(_:)`` did when their handlers returned), at most `gracePeriod`; the
    ///    connections the loop made itself (``connect(to:timeout:)``: a pool to an upstream) are not
    ///    waited for: their owner closes them, and ``shutdown()`` closes what is left;
    /// 3. ``shutdown()``: whatever is still pending fails with ``LoopError/shutdown`` and every socket
    ///    left is closed; ``AsyncListener/serve(_:)`` then cancels its connections' tasks, so that a
    ///    handler waiting on something else than this loop (a `Task.sleep`, another loop) ends too.
    ///
    /// Cancelling the calling task ends step 2 at once (a second SIGTERM: "stop now"). A zero or
    /// negative grace period is ``shutdown()`` after step 1; a huge one waits as long as connections
    /// stay open. Returns once the loop has finished.
    public func shutdown(gracePeriod: Duration) async {
        await Self.shutdown([self], gracePeriod: gracePeriod)
    }

    /// The graceful shutdown of `loops` together: every one stops accepting, then they wait until none
    /// of them holds a connection it accepted (counted in one pass over all), at most `gracePeriod`,
    /// and only then are they all shut down (a handler still answering on one loop may use another). A loop with
    /// nothing left keeps running meanwhile: a handler still draining elsewhere may use it (a sleep, a
    /// connection to an upstream), and an actor isolated to it stays on its thread.
    static func shutdown(_ loops: [EventLoop], gracePeriod: Duration) async {
        let deadline = Deadline.after(gracePeriod)   // saturates: any Duration
        for loop in loops {
            loop.beginDraining()
            _ = try? await loop.onLoop { (state) async throws(LoopError) in state.stopAccepting() }
        }
        var pause = Duration.milliseconds(1)
        waiting: while !Task.isCancelled, MonotonicClock.nowNanoseconds < deadline {
            var connections = 0
            for loop in loops {
                // A loop that stopped (shut down meanwhile, or its poller failed) holds nothing.
                connections += (try? await loop.onLoop { (state) async throws(LoopError) -> Int in state.connectionCount }) ?? 0
            }
            guard connections > 0 else { break }
            // The connections' tasks close them; look again soon (1 ms, doubling to 20 ms), on the
            // first loop that still runs, or on the task's clock when none has a slot for a sleep.
            let interval = min(pause, Deadline.timeout(until: deadline))
            var slept = false
            for loop in loops {
                do throws(LoopError) {
                    try await loop.sleep(for: interval)
                    slept = true
                    break
                } catch {
                    if case .cancelled = error { break waiting }
                }
            }
            if !slept {
                do { try await Task.sleep(for: interval) } catch { break }
            }
            pause = min(pause * 2, .milliseconds(20))
        }
        await withTaskGroup(of: Void.self) { group in
            for loop in loops {
                group.addTask { await loop.shutdown() }
            }
        }
    }
}

extension EventLoopGroup {
    /// The graceful shutdown of the whole group (``EventLoop/shutdown(gracePeriod:)`` for all of its
    /// loops together): every loop stops accepting, then the group waits until none of its loops holds
    /// a connection, within the grace period, and shuts every loop down only then: no loop ends while
    /// another still drains (a handler on one loop may be using another). Cancelling the calling task
    /// ends the wait at once.
    public func shutdown(gracePeriod: Duration) async {
        await EventLoop.shutdown(loops, gracePeriod: gracePeriod)
    }
}

extension LoopState {
    /// Closes every listener of the loop (its accepting task resumes with `.closed`) and refuses new ones.
    func stopAccepting() {
        accepting = false
        for resource in slab.resources where resource is ListenerResource {
            close(resource, reason: .closed)
        }
    }

    /// How many connections the loop serves: sockets it accepted or adopted, open still. Not the
    /// connections it made itself (a connect's, a Happy Eyeballs connect's): a client of an upstream
    /// (an idle pooled connection) would hold every drain for the whole grace period, as Go's
    /// `Server.Shutdown` waits for the server's connections only; a handler that uses an upstream is
    /// waited for through its accepted connection, open while the handler runs.
    var connectionCount: Int {
        slab.resources.reduce(0) { count, resource in
            guard let stream = resource as? StreamResource, stream.socket != nil, !stream.isOutbound else { return count }
            return count + 1
        }
    }
}
