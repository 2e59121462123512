// Readiness's loops as swift-service-lifecycle `Service`s: what a ServiceGroup's graceful shutdown
// (SIGTERM, or `triggerGracefulShutdown()`) and cancellation mean for them.
import Readiness
import ServiceLifecycle

/// An ``EventLoopGroup`` as a `Service`: `run()` suspends until the service group asks for a graceful
/// shutdown, then drains the group (`EventLoopGroup.shutdown(gracePeriod:)`: listeners closed,
/// connections given `gracePeriod`, then every loop shut down) and returns. When the service group
/// cancels the service (its cancellation signals, or a service that ended the group), the drain ends
/// at once: whatever is pending fails with `LoopError.shutdown`.
///
/// Put it **first** in the `ServiceGroup`'s services, before those that use the group (your server): a
/// service group shuts its services down in reverse order, so the loops stop last.
public struct EventLoopGroupService: Service {
    /// The group it shuts down.
    public let group: EventLoopGroup
    /// How long connections may take to finish after a graceful shutdown was asked for.
    public let gracePeriod: Duration

    public init(group: EventLoopGroup, gracePeriod: Duration = .seconds(30)) {
        self.group = group
        self.gracePeriod = gracePeriod
    }

    public func run() async throws {
        // Returns at the graceful shutdown; throws CancellationError when cancelled first, and then the
        // drain below runs in a cancelled task: it shuts down at once.
        try? await gracefulShutdown()
        await group.shutdown(gracePeriod: gracePeriod)
    }
}

/// A server as a `Service`: serves `address` on every loop of `group` (`EventLoopGroup.serve`, each
/// connection's `handler` in a task preferring its loop) until the service group asks for a graceful
/// shutdown; then it stops accepting (its listeners closed), gives its connections `gracePeriod` to
/// finish, cancels those still running, and returns. It never shuts the group down: other services
/// may use it; put an ``EventLoopGroupService`` for the group **first** in the `ServiceGroup` (a
/// service group shuts its services down in reverse order, so the loops stop last).
///
/// Cancellation (the service group's cancellation signals, or another service ending the group)
/// cancels the connections' tasks at once. A failure to listen, or an accept failure that ends
/// serving, is thrown (the default `ServiceGroup` behaviour then ends the whole group); a group that
/// was shut down before the listeners were made ends the service quietly.
public struct ServerService: Service {
    public let group: EventLoopGroup
    public let address: SocketAddress
    public let options: Listener.Options
    public let gracePeriod: Duration
    let handler: @Sendable (AsyncSocket) async -> Void

    public init(group: EventLoopGroup, address: SocketAddress, options: Listener.Options = Listener.Options(),
                gracePeriod: Duration = .seconds(30), handler: @escaping @Sendable (AsyncSocket) async -> Void) {
        self.group = group
        self.address = address
        self.options = options
        self.gracePeriod = gracePeriod
        self.handler = handler
    }

    public func run() async throws {
        let group = self.group, handler = self.handler, gracePeriod = self.gracePeriod
        let listeners: [AsyncListener]
        do {
            listeners = try await group.listen(on: address, options: options)
        } catch {
            if case .shutdown = error { return }
            throw error
        }
        // Until the graceful shutdown, or until serving ends by itself (a failure, the loops shut down):
        // `waiter` (which inherits the service group's task locals) ends at the first of the two.
        let waiter = Task { try? await gracefulShutdown() }
        let serving = Task {
            defer { waiter.cancel() }
            try await group.serve(listeners, handler)
        }
        await withTaskCancellationHandler {
            await waiter.value
        } onCancel: {
            waiter.cancel()
            serving.cancel()
        }
        // Stop accepting; the connections get the grace period, then their tasks are cancelled.
        for listener in listeners { await listener.close() }
        // Timed on the first loop that still runs, to one end (`Deadline.after` saturates any
        // Duration): a loop whose poller failed ended by itself while the others went on serving,
        // and its sleep fails at once, which took the other loops' connections their whole grace
        // period; a loop that ends during the grace period leaves the next one only what is left of
        // it. Only the deadline task's cancellation (serving ended) ends the wait early.
        let end = Deadline.after(gracePeriod)
        let deadline = Task {
            for loop in group.loops {
                do throws(LoopError) {
                    try await loop.sleep(until: end)
                    break
                } catch {
                    if case .cancelled = error { return }
                }
            }
            serving.cancel()
        }
        _ = await withTaskCancellationHandler {
            await serving.result
        } onCancel: {
            serving.cancel()
        }
        deadline.cancel()
        try await serving.value
    }
}
