import CReadinessBench
import Glibc
import NIOCore
import NIOPosix

// MARK: - SwiftNIO

/// The server side: every accepted channel is closed as soon as it is active (or on any error).
final class CloseOnActive: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    func channelActive(context: ChannelHandlerContext) { context.close(promise: nil) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// Drives one round on the event loop: `inFlight` ClientBootstrap connects at a time; each connected
/// channel (NIO confirms with SO_ERROR) is closed abortively (SO_LINGER 0, like every contender).
final class NIOChurnDriver: @unchecked Sendable {
    var roundLimitSeconds: Int64 = 120
    let bootstrap: ClientBootstrap
    let address: SocketAddress
    var total = 0, started = 0, done = 0, succeeded = 0, failures = 0, accepted = 0
    var promise: EventLoopPromise<Void>?
    /// On the event loop: when the round began and when its last connect or accept happened.
    var beginNanoseconds: Int64 = 0
    var lastProgress: Int64 = 0
    var graceScheduled = false

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
        graceScheduled = false
        beginNanoseconds = rb_now_ns()
        lastProgress = beginNanoseconds
        self.promise = promise
        // Bounded: a round that has not finished after 120 s fails instead of hanging.
        let loop = promise.futureResult.eventLoop
        loop.scheduleTask(in: .seconds(roundLimitSeconds)) { [self] in
            if let pending = self.promise, pending.futureResult === promise.futureResult {
                self.promise = nil
                pending.fail(BenchError("SwiftNIO connect round took over \(self.roundLimitSeconds) s (started \(self.started), done \(self.done), succeeded \(self.succeeded), failed \(self.failures), accepted \(self.accepted))"))
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
            self.lastProgress = rb_now_ns()
            self.startOne()
            self.checkFinished()
        }
    }

    func checkFinished() {
        guard done == total, let promise else { return }
        if accepted >= succeeded {
            self.promise = nil
            promise.succeed(())
        } else if !graceScheduled {
            // An accept may never come (the client's abortive close can beat the server's handshake
            // processing): give up after RB_ACCEPT_GRACE_MS without one, as every contender does.
            graceScheduled = true
            scheduleGraceCheck(on: promise.futureResult.eventLoop)
        }
    }

    private func scheduleGraceCheck(on loop: any EventLoop) {
        loop.scheduleTask(in: .milliseconds(20)) { [self] in
            guard let promise = self.promise else { return }
            if rb_now_ns() - self.lastProgress >= Int64(RB_ACCEPT_GRACE_MS) * 1_000_000 {
                self.promise = nil
                promise.succeed(())
            } else {
                self.scheduleGraceCheck(on: loop)
            }
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
                    // Counted when accepted (the initializer runs for every accepted socket, before
                    // registration): a connection the client already reset may never become active.
                    if let driver = holder.driver {
                        driver.accepted += 1
                        driver.lastProgress = rb_now_ns()
                        driver.checkFinished()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(CloseOnActive())
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
        loop.execute { driver.begin(total: total, inFlight: inFlight, promise: promise) }
        try promise.futureResult.wait()
        // Timed on the event loop, from the first connect to the last connect or accept (as the other
        // contenders are), so the hand-over to and from this thread is not counted.
        let elapsed = driver.lastProgress - driver.beginNanoseconds
        return Round(nanoseconds: elapsed, waits: 0, units: Int64(total), failures: Int64(driver.failures),
                     unaccepted: Int64(max(0, driver.succeeded - driver.accepted)))
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
