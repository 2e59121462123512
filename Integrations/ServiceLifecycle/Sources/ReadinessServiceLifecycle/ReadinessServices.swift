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
/// Put it in the `ServiceGroup` beside the services that use the group (your server), so that the
/// group's loops outlive them and stop last.
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

/// A server as a `Service`: serves `address` on every loop of `group` (`EventLoopGroup.serve(on:)`, each
/// connection's `handler` in a task preferring its loop) until the service group asks for a graceful
/// shutdown; then it stops accepting, gives the connections `gracePeriod` to finish, shuts the group
/// down, and returns. Cancellation (the service group's cancellation signals, or another service
/// ending the group) cancels the connections' tasks and shuts the group down at once. A failure to listen, or an accept failure that ends
/// serving, is thrown (the default `ServiceGroup` behaviour then ends the whole group).
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
        let group = self.group, address = self.address, options = self.options
        let handler = self.handler, gracePeriod = self.gracePeriod
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                // Ends when the drain below closes the listeners and the connections finished (or
                // the group shut down), or fails (then the drain is cancelled: the group shuts down).
                try await group.serve(on: address, options: options, handler)
            }
            tasks.addTask {
                try? await gracefulShutdown()
                await group.shutdown(gracePeriod: gracePeriod)
            }
            do {
                try await tasks.next()
            } catch {
                tasks.cancelAll()
                throw error
            }
            try await tasks.next()
        }
    }
}
