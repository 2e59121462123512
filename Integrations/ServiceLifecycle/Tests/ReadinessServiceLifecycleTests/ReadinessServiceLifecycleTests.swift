import Logging
import Readiness
import ReadinessServiceLifecycle
import ServiceLifecycle
import Synchronization
import Testing

let backends = Backend.available

/// The services in a real `ServiceGroup`, on every backend.
@Suite("ServiceLifecycle", .serialized)
struct ReadinessServiceLifecycleTests {
    static let logger = Logger(label: "readiness-service-lifecycle-tests")

    /// A free loopback port: bound to 0 and released.
    static func freeAddress(_ loop: EventLoop) async throws -> SocketAddress {
        let probe = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let address = probe.address
        await probe.close()
        return address
    }

    static func connect(_ loop: EventLoop, _ address: SocketAddress) async throws -> AsyncSocket {
        for _ in 0..<200 {
            if let socket = try? await loop.connect(to: address, timeout: .seconds(1)) { return socket }
            try await loop.sleep(for: .milliseconds(5))
        }
        return try await loop.connect(to: address, timeout: .seconds(1))
    }

    @Test("a graceful shutdown lets a request in flight finish, then the server and its group stop",
          .timeLimit(.minutes(1)), arguments: backends)
    func graceful(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 2)
        let clientLoop = try EventLoop(backend: backend)
        let address = try await Self.freeAddress(clientLoop)
        let handled = Atomic<Int>(0)
        let server = ServerService(group: group, address: address, gracePeriod: .seconds(10)) { socket in
            guard let bytes = try? await socket.read(upTo: 64, timeout: .seconds(5)), !bytes.isEmpty else { return }
            try? await socket.loop.sleep(for: .milliseconds(150))   // the request in flight
            try? await socket.write(bytes, timeout: .seconds(5))
            handled.add(1, ordering: .relaxed)
        }
        let services = ServiceGroup(services: [EventLoopGroupService(group: group), server], logger: Self.logger)
        let running = Task { try await services.run() }
        let client = try await Self.connect(clientLoop, address)
        try await client.write(Array("ping".utf8))
        try await clientLoop.sleep(for: .milliseconds(30))
        await services.triggerGracefulShutdown()
        #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == Array("ping".utf8))
        await client.close()
        try await running.value
        #expect(handled.load(ordering: .relaxed) == 1)
        for loop in group.loops { #expect(loop.isShuttingDown) }
        // Nothing listens any more.
        await #expect(throws: LoopError.self) { try await clientLoop.connect(to: address, timeout: .seconds(1)) }
        await clientLoop.shutdown()
    }

    /// Docs/Integrations.md's idle keep-alive pattern: a handler waiting for its next request ends
    /// its wait when the graceful shutdown begins (the connection's task inherits the group's
    /// task-local), so the drain does not take the whole grace period.
    @Test("an idle keep-alive handler with withGracefulShutdownHandler ends at the graceful shutdown",
          .timeLimit(.minutes(1)), arguments: backends)
    func idleKeepAliveEndsAtShutdown(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 1)
        let clientLoop = try EventLoop(backend: backend)
        let address = try await Self.freeAddress(clientLoop)
        let server = ServerService(group: group, address: address, gracePeriod: .seconds(10)) { socket in
            await withGracefulShutdownHandler {
                while let request = try? await socket.readAvailable(timeout: .seconds(60)), !request.isEmpty {
                    try? await socket.write(request)
                }
            } onGracefulShutdown: {
                Task { try? await socket.shutdown(.read) }
            }
        }
        let services = ServiceGroup(services: [EventLoopGroupService(group: group), server], logger: Self.logger)
        let running = Task { try await services.run() }
        let client = try await Self.connect(clientLoop, address)
        try await client.write(Array("ping".utf8))
        #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == Array("ping".utf8))
        let clock = ContinuousClock()
        let started = clock.now
        await services.triggerGracefulShutdown()
        try await running.value
        let took = clock.now - started
        #expect(took < .seconds(3), "the drain took \(took) on \(backend)")
        await client.close()
        await clientLoop.shutdown()
    }

    @Test("cancelling the service group stops at once: a connection that would never finish is cancelled",
          .timeLimit(.minutes(1)), arguments: backends)
    func cancelled(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 1)
        let clientLoop = try EventLoop(backend: backend)
        let address = try await Self.freeAddress(clientLoop)
        let outcome = Mutex<LoopError?>(nil)
        let server = ServerService(group: group, address: address, gracePeriod: .seconds(3600)) { socket in
            do throws(LoopError) { _ = try await socket.read(upTo: 64) } catch { outcome.withLock { $0 = error } }
        }
        let services = ServiceGroup(services: [EventLoopGroupService(group: group), server], logger: Self.logger)
        let running = Task { try await services.run() }
        let client = try await Self.connect(clientLoop, address)
        try await clientLoop.sleep(for: .milliseconds(30))
        let clock = ContinuousClock()
        let start = clock.now
        running.cancel()
        // A cancelled service group ends with CancellationError or without error; nothing else.
        do { try await running.value } catch is CancellationError {} catch { Issue.record("\(error)") }
        #expect(clock.now - start < .seconds(5))
        // Its task is cancelled with the serving task (structured), or meets the shutdown first.
        let ended = outcome.withLock { $0 }
        #expect(ended == .cancelled || ended == .shutdown, "\(String(describing: ended))")
        for loop in group.loops { #expect(loop.isShuttingDown) }
        await client.close()
        await clientLoop.shutdown()
    }

    @Test("a server that cannot listen fails the service group with the listen error", arguments: backends)
    func listenFails(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 1)
        let holder = try await group.loops[0].listen(on: try SocketAddress("127.0.0.1:0"))
        // The holder has no SO_REUSEPORT, so the server's listeners (which set it) cannot share the port.
        let server = ServerService(group: group, address: holder.address) { _ in }
        let services = ServiceGroup(services: [EventLoopGroupService(group: group), server], logger: Self.logger)
        await #expect(throws: LoopError.self) { try await services.run() }
        await group.shutdown()
    }

    /// A poller whose waits fail once told to: its loop ends by itself, as a loop whose kernel wait
    /// fails for good does, while the group's other loops go on.
    final class FailingPoller: Poller {
        /// Shared between the test and the loop thread.
        final class Switch: Sendable {
            let on = Atomic<Bool>(false)
        }
        let inner: any Poller
        let failing: Switch
        init(_ inner: any Poller, failing: Switch) {
            self.inner = inner
            self.failing = failing
        }
        var capabilities: Capabilities { inner.capabilities }
        var waker: Waker { inner.waker }
        func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            try inner.register(fd, token: token, interest: interest, trigger: trigger)
        }
        func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
            try inner.reregister(fd, token: token, interest: interest, trigger: trigger)
        }
        func deregister(_ fd: CInt) throws(PollerError) { try inner.deregister(fd) }
        func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
            if failing.on.load(ordering: .acquiring) { throw .system(operation: "epoll_wait", errno: 5) }
            return try inner.wait(into: events, timeout: timeout)
        }
        func close() throws(PollerError) { try inner.close() }
    }

    /// The grace period was timed on the group's first loop: when that loop had ended on its own
    /// (its poller failed) while the other loops served on, its sleep failed at once and every
    /// connection of the other loops was cancelled at the graceful shutdown, with no grace at all.
    @Test("a first loop ended by its poller leaves the other loops' connections their grace period",
          .timeLimit(.minutes(1)), arguments: backends)
    func graceSurvivesEndedFirstLoop(backend: Backend) async throws {
        let made = Atomic<Int>(0)
        let failing = FailingPoller.Switch(), never = FailingPoller.Switch()
        let group = try EventLoopGroup(count: 2) { () throws(PollerError) -> any Poller in
            // The first loop's poller is the one that fails.
            FailingPoller(try backend.makePoller(), failing: made.wrappingAdd(1, ordering: .relaxed).oldValue == 0 ? failing : never)
        }
        let clientLoop = try EventLoop(backend: backend)
        let address = try await Self.freeAddress(clientLoop)
        let answered = Atomic<Int>(0)
        let server = ServerService(group: group, address: address, gracePeriod: .seconds(10)) { socket in
            guard let bytes = try? await socket.read(upTo: 64, timeout: .seconds(5)), !bytes.isEmpty else { return }
            // The request in flight: a cancelled task stops here and answers nothing.
            guard (try? await socket.loop.sleep(for: .milliseconds(300))) != nil else { return }
            if (try? await socket.write(bytes, timeout: .seconds(5))) != nil { answered.add(1, ordering: .relaxed) }
        }
        let services = ServiceGroup(services: [EventLoopGroupService(group: group), server], logger: Self.logger)
        let running = Task { try await services.run() }
        let probe = try await Self.connect(clientLoop, address)   // serving has begun
        await probe.close()
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: group.loops[0]) {}.value   // wakes loop 0, whose next wait fails
        await group.loops[0].shutdown()   // returns once it ended and closed what it held
        // Loop 0's listener went with it: the kernel hands new connections to loop 1's.
        let client = try await Self.connect(clientLoop, address)
        try await client.write(Array("ping".utf8))
        try await clientLoop.sleep(for: .milliseconds(50))
        await services.triggerGracefulShutdown()
        #expect(try await client.read(upTo: 64, timeout: .seconds(5)) == Array("ping".utf8), "\(backend)")
        await client.close()
        _ = try? await running.value
        // Counted once the handler's write returned: after the group ended (the client's read can
        // return before the handler goes on).
        #expect(answered.load(ordering: .relaxed) == 1, "\(backend)")
        await clientLoop.shutdown()
    }
}
