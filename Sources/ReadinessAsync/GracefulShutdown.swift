import ReadinessCore
import ReadinessNet

// Graceful shutdown: stop accepting, let the connections finish within a grace period, then
// `shutdown()` (which fails what is left with `.shutdown`).

extension EventLoop {
    /// Shuts the loop down gracefully:
    /// 1. stops accepting: every listener of the loop is closed (a task in `accept` resumes with
    ///    ``LoopError/closed``, so ``AsyncListener/serve(_:)`` stops and waits for its connections),
    ///    and a later `listen` on the loop is refused with ``LoopError/shutdown``;
    /// 2. waits until the loop holds no connected socket (their tasks closed them, or ``AsyncListener/serve(_:)`` did when
    ///    their handlers returned), at most `gracePeriod`;
    /// 3. ``shutdown()``: whatever is still pending fails with ``LoopError/shutdown`` and every socket
    ///    left is closed; ``AsyncListener/serve(_:)`` then cancels its connections' tasks, so that a
    ///    handler waiting on something else than this loop (a `Task.sleep`, another loop) ends too.
    ///
    /// Cancelling the calling task ends step 2 at once (a second SIGTERM: "stop now"). A zero or
    /// negative grace period is ``shutdown()`` after step 1; a huge one waits as long as connections
    /// stay open. Returns once the loop has finished.
    public func shutdown(gracePeriod: Duration) async {
        let deadline = Deadline.after(gracePeriod)   // saturates: any Duration
        beginDraining()
        _ = try? await onLoop { (state) async throws(LoopError) in state.stopAccepting() }
        var pause = Duration.milliseconds(1)
        while !Task.isCancelled, MonotonicClock.nowNanoseconds < deadline {
            guard let connections = try? await onLoop({ (state) async throws(LoopError) -> Int in state.connectionCount }),
                  connections > 0 else { break }
            // The connections' tasks close them; look again soon (1 ms, doubling to 20 ms).
            let interval = min(pause, Deadline.timeout(until: deadline))
            do throws(LoopError) { try await sleep(for: interval) } catch {
                // A loop holding as many resources as it can has no slot for a sleep: the task's clock.
                guard case .resourceExhausted = error else { break }
                do { try await Task.sleep(for: interval) } catch { break }
            }
            pause = min(pause * 2, .milliseconds(20))
        }
        await shutdown()
    }
}

extension EventLoopGroup {
    /// ``EventLoop/shutdown(gracePeriod:)`` on every loop at once: every loop stops accepting first,
    /// then each waits for its connections within the same grace period. Cancelling the calling task
    /// ends the waits at once.
    public func shutdown(gracePeriod: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            for loop in loops {
                group.addTask { await loop.shutdown(gracePeriod: gracePeriod) }
            }
        }
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

    /// How many connected sockets the loop holds (a connect still in progress is not one).
    var connectionCount: Int {
        slab.resources.reduce(0) { count, resource in
            (resource as? StreamResource)?.socket != nil ? count + 1 : count
        }
    }
}
