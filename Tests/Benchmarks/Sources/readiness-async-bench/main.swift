// readiness-async-bench: the async layer's figures (Docs/Async.md), one run, ratios.
//
//   swift run -c release --package-path Tests/Benchmarks readiness-async-bench [--connects N]
//
// 1. Connect churn against one listener (an EventLoop of its own that accepts and closes): the sync
//    ConnectAttempt loop on one poller, the async EventLoop.connect on one loop, and SwiftNIO's
//    ClientBootstrap on one event loop (connects awaited from tasks); 64 in flight each, same run.
// 2. Ping-pong over one connection on one loop (64 bytes each way, both sides suspending every time):
//    round trips per second and heap allocations per awaited read or write, every thread counted.
import BenchSupport
import Glibc
import MallocInterposerSwift
import NIOCore
import NIOPosix
import Readiness
import ReadinessAsync
import Synchronization

Allocations.ensureInterposed()
let total: Int = {
    if let index = CommandLine.arguments.firstIndex(of: "--connects"), index + 1 < CommandLine.arguments.count {
        return Int(CommandLine.arguments[index + 1]) ?? 20_000
    }
    return 20_000
}()
let inFlight = 64

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func take() -> Bool { value.add(1, ordering: .relaxed).newValue <= total }
}

func fixed(_ value: Double, _ digits: Int = 0) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    return digits == 0 ? String(Int(rounded)) : String(rounded)
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

// The shared listener: its own loop accepts and closes everything.
let server = try EventLoop(backend: .epoll, name: "bench-server")
var listenOptions = Listener.Options()
listenOptions.backlog = 4096
let listener = try await server.listen(on: try SocketAddress("127.0.0.1:0"), options: listenOptions)
let acceptor = Task(executorPreference: server) {
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<4 {
            group.addTask(executorPreference: server) {
                while let socket = try? await listener.accept() { await socket.close() }
            }
        }
    }
}
let address = listener.address

// 1a. Sync ConnectAttempt loop on one poller.
func syncChurn() throws -> Double {
    let poller = try Backend.epoll.makePoller()
    defer { try? poller.close() }
    let events = EventBuffer(capacity: 256)
    var attempts: [UInt64: ConnectAttempt] = [:]
    var started = 0, done = 0, nextToken: UInt64 = 1
    let start = ContinuousClock.now
    func finished(_ progress: ConnectProgress) -> Bool {
        switch progress {
        case .inProgress: return false
        case .connected(let socket): close(socket.fd); done += 1; return true
        case .failed(let error): fatalError("sync connect: \(error)")
        }
    }
    while done < total {
        while started < total && attempts.count < inFlight {
            started += 1
            let attempt = ConnectAttempt(to: address, poller: poller, token: Token(nextToken), timeout: nil)
            if !finished(attempt.start()) { attempts[nextToken] = attempt }
            nextToken += 1
        }
        try poller.wait(into: events, timeout: .seconds(5))
        for event in events where !event.isWakeup {
            if let attempt = attempts[event.token.rawValue], finished(attempt.handle(event.ready)) {
                attempts[event.token.rawValue] = nil
            }
        }
    }
    return Double(total) / seconds(ContinuousClock.now - start)
}

// 1b. Async connects on one EventLoop: 64 tasks preferring the loop.
func asyncChurn(jobs: ReadinessAsync.EventLoop.JobIsolation) async throws -> Double {
    let loop = try EventLoop(backend: .epoll, name: "bench-client", jobs: jobs)
    let counter = Counter()
    let start = ContinuousClock.now
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<inFlight {
            group.addTask(executorPreference: loop) {
                while counter.take() {
                    do {
                        let socket = try await loop.connect(to: address)
                        await socket.close()
                    } catch { fatalError("async connect: \(error)") }
                }
            }
        }
    }
    let rate = Double(total) / seconds(ContinuousClock.now - start)
    await loop.shutdown()
    return rate
}

/// Heap allocations per async connect and close (one task, 2,000 in a row, after a warm-up).
func allocationsPerConnect() async throws -> Double {
    guard Allocations.available else { return -1 }
    let loop = try EventLoop(backend: .epoll, name: "bench-allocs")
    let count = try await Task(executorPreference: loop) { () async throws -> Int in
        for _ in 0..<500 { await (try await loop.connect(to: address)).close() }
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        for _ in 0..<2_000 { await (try await loop.connect(to: address)).close() }
        MallocInterposerSwift.unhook()
        return MallocInterposerSwift.getStatistics().mallocCount
    }.value
    await loop.shutdown()
    return Double(count) / 2_000
}

// 1c. SwiftNIO: ClientBootstrap on one event loop, connects awaited from 64 tasks.
func nioChurn() async throws -> Double {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let counter = Counter()
    let port = Int(address.port!)
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for _ in 0..<inFlight {
            tasks.addTask {
                let bootstrap = ClientBootstrap(group: group)
                while counter.take() {
                    let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
                    try? await channel.close()   // the server may have closed it first ("already closed")
                }
            }
        }
        try await tasks.waitForAll()
    }
    let rate = Double(total) / seconds(ContinuousClock.now - start)
    try await group.shutdownGracefully()
    return rate
}

// 2. Ping-pong on one loop; allocations per awaited operation.
func pingPong(roundTrips: Int, jobs: ReadinessAsync.EventLoop.JobIsolation) async throws -> (rate: Double, allocationsPerOperation: Double) {
    let loop = try EventLoop(backend: .epoll, name: "bench-pingpong", jobs: jobs)
    let pingListener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
    let client = try await loop.connect(to: pingListener.address)
    let peer = try await pingListener.accept()
    func run(_ count: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask(executorPreference: loop) {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                defer { buffer.deallocate() }
                for _ in 0..<count {
                    var got = 0
                    while got < 64 { got += try await peer.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...])) }
                    try await peer.write(UnsafeRawBufferPointer(buffer))
                }
            }
            group.addTask(executorPreference: loop) {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                defer { buffer.deallocate() }
                for _ in 0..<count {
                    try await client.write(UnsafeRawBufferPointer(buffer))
                    var got = 0
                    while got < 64 { got += try await client.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...])) }
                }
            }
            try await group.waitForAll()
        }
    }
    try await run(2_000)   // warm-up: tables and queues at their size
    let start = ContinuousClock.now
    try await run(roundTrips)
    let rate = Double(roundTrips) / seconds(ContinuousClock.now - start)
    // Allocations: the two tasks themselves and the group are counted too; divided by the 4
    // awaited operations of each round trip (each side one read and one write).
    var allocations = -1
    if Allocations.available {
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        try await run(roundTrips)
        MallocInterposerSwift.unhook()
        allocations = MallocInterposerSwift.getStatistics().mallocCount
    }
    await client.close(); await peer.close(); await pingListener.close()
    await loop.shutdown()
    print("  (ping-pong: \(allocations) heap allocations in \(roundTrips) round trips, the task group and its two tasks included)")
    return (rate, allocations < 0 ? -1 : Double(allocations) / Double(roundTrips * 4))
}

let syncRate = try syncChurn()
let asyncRate = try await asyncChurn(jobs: .serialExecutor)
let nioRate = try await nioChurn()
let asyncTaskRate = try await asyncChurn(jobs: .taskExecutor)
print("connect churn (\(total) connects, \(inFlight) in flight, epoll): sync ConnectAttempt \(fixed(syncRate))/s, async EventLoop.connect \(fixed(asyncRate))/s (jobs .serialExecutor), \(fixed(asyncTaskRate))/s (jobs .taskExecutor), SwiftNIO ClientBootstrap \(fixed(nioRate))/s")
print("  ratios: async/sync \(fixed(asyncRate / syncRate, 2))x and \(fixed(asyncTaskRate / syncRate, 2))x, async/SwiftNIO \(fixed(asyncRate / nioRate, 2))x and \(fixed(asyncTaskRate / nioRate, 2))x")
let perConnect = try await allocationsPerConnect()
print("heap allocations per async connect and close (every thread, the listener's accept and close included): \(perConnect < 0 ? "not counted here" : fixed(perConnect, 1))")
for jobs in [ReadinessAsync.EventLoop.JobIsolation.serialExecutor, .taskExecutor] {
    let ping = try await pingPong(roundTrips: 20_000, jobs: jobs)
    print("ping-pong (64 B each way, one loop, jobs \(jobs)): \(fixed(ping.rate))/s round trips; heap allocations per awaited read or write: \(Allocations.available ? fixed(ping.allocationsPerOperation, 3) : "not counted here")")
}
acceptor.cancel()
await listener.close()
await server.shutdown()
