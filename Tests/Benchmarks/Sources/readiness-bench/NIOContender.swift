import CReadinessBench
import Glibc
import NIOCore
import NIOPosix

// MARK: - SwiftNIO

/// Counts the server side: each accepted channel is counted and closed as soon as it is active.
final class AcceptAndClose: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    let driver: NIOChurnDriver
    init(_ driver: NIOChurnDriver) { self.driver = driver }
    func channelActive(context: ChannelHandlerContext) {
        driver.accepted += 1
        context.close(promise: nil)
        driver.checkFinished()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// Drives one round on the event loop: `inFlight` ClientBootstrap connects at a time; each connected
/// channel (NIO confirms with SO_ERROR) is closed abortively (SO_LINGER 0, like every contender).
final class NIOChurnDriver: @unchecked Sendable {
    let bootstrap: ClientBootstrap
    let address: SocketAddress
    var total = 0, started = 0, done = 0, succeeded = 0, failures = 0, accepted = 0
    var promise: EventLoopPromise<Void>?

    init(bootstrap: ClientBootstrap, address: SocketAddress) {
        self.bootstrap = bootstrap
        self.address = address
    }

    /// On the event loop.
    func begin(total: Int, inFlight: Int, promise: EventLoopPromise<Void>) {
        self.total = total
        started = 0
        done = 0
        succeeded = 0
        failures = 0
        accepted = 0
        self.promise = promise
        // Bounded: a round that has not finished after 120 s fails instead of hanging.
        let loop = promise.futureResult.eventLoop
        loop.scheduleTask(in: .seconds(120)) { [self] in
            if let pending = self.promise, pending.futureResult === promise.futureResult {
                self.promise = nil
                pending.fail(BenchError("SwiftNIO connect round took over 120 s"))
            }
        }
        for _ in 0..<min(inFlight, total) { startOne() }
        checkFinished()
    }

    func startOne() {
        guard started < total else { return }
        started += 1
        bootstrap.connect(to: address).whenComplete { result in
            switch result {
            case .success(let channel):
                self.succeeded += 1
                if let options = channel as? any SocketOptionProvider {
                    _ = options.setSoLinger(linger(l_onoff: 1, l_linger: 0))
                }
                channel.close(promise: nil)
            case .failure:
                self.failures += 1
            }
            self.done += 1
            self.startOne()
            self.checkFinished()
        }
    }

    func checkFinished() {
        if done == total, accepted >= succeeded, let promise {
            self.promise = nil
            promise.succeed(())
        }
    }
}

final class NIOConnect: ConnectInstance {
    let group: MultiThreadedEventLoopGroup
    let server: any Channel
    let driver: NIOChurnDriver
    var total: Int
    var warmupTotal: Int
    let inFlight: Int

    init(total: Int, inFlight: Int) throws {
        self.total = total
        warmupTotal = total
        self.inFlight = inFlight
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            let holder = DriverHolder()
            server = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AcceptAndClose(holder.driver!))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).wait()
            guard let port = server.localAddress?.port else { throw BenchError("NIO server has no port") }
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            let bootstrap = ClientBootstrap(group: loop)
            driver = NIOChurnDriver(bootstrap: bootstrap, address: address)
            holder.driver = driver
        } catch {
            try? group.syncShutdownGracefully()
            throw BenchError("NIO set-up: \(error)")
        }
    }

    func round() throws -> Round {
        let loop = group.next()
        let promise = loop.makePromise(of: Void.self)
        let driver = self.driver
        let total = self.total, inFlight = self.inFlight
        let begin = rb_now_ns()
        loop.execute { driver.begin(total: total, inFlight: inFlight, promise: promise) }
        try promise.futureResult.wait()
        let elapsed = rb_now_ns() - begin
        return Round(nanoseconds: elapsed, waits: 0, units: Int64(total), failures: Int64(driver.failures))
    }

    func close() {
        try? server.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Lets the server's child initializer find the driver created after the server.
final class DriverHolder: @unchecked Sendable {
    var driver: NIOChurnDriver?
}
