// readiness-async-bench: the async layer's figures (Docs/Async.md), one run, ratios.
//
//   readiness-async-bench [--connects N] [--in-flight 1,16,64] [--rounds R] [--round-trips N]
//                         [--only sync,async,async-serial,async-task,nio,nio-async,flyingsocks,allocations,pingpong,pingpong-bytes,hops,interleaved,cpu,deadline]
//                         [--cpu-contenders c,async,async-deadline]
//
// 1. Connect churn against one listener (an EventLoop of its own that accepts and closes), at each
//    number of connects in flight, R rounds (the contenders' order rotates each round), same run:
//    - sync: the ConnectAttempt loop on one epoll poller (the floor the async layer is held to);
//    - async / async-serial / async-task: EventLoop.connect from tasks preferring one loop (jobs
//      .automatic, the default / .serialExecutor / .taskExecutor), each connect then close;
//    - nio: SwiftNIO ClientBootstrap on one event loop, the futures awaited from tasks (off the loop);
//    - nio-async: SwiftNIO as an async user writes it: ClientBootstrap.connect wrapping the channel in
//      NIOAsyncChannel, closed by executeThenClose;
//    - flyingsocks: FlyingSocks AsyncSocket.connected on its shared client pool.
// 2. Heap allocations per async connect and close (1 in flight, every thread, the listener's side too).
// 3. Ping-pong over one connection on one loop (64 bytes each way, both sides suspending every time):
//    round trips per second and heap allocations per awaited read or write, every thread counted;
//    with raw buffers (the library authors' forms) and with owned `Bytes` (pingpong-bytes: one reused
//    buffer per side, read(into: &bytes) and write(bytes)).
// 4. Jobs per awaited operation from a task preferring the loop and from an actor isolated to it.
// 5. Sync vs async (default jobs) interleaved in alternating chunks, each level, R rounds.
// 6. CPU per connect (cpu): the like-for-like C loop (CReadinessBench rb_client_connect_churn: socket,
//    connect, epoll, SO_ERROR, getpeername, getsockname, close) vs EventLoop.connect + close without and
//    with a 5 s timeout, same listener, in 10 or more chunks per round (a multiple of the contenders),
//    the order turning each chunk; process CPU (getrusage, every thread: the listener's accepts and
//    closes too) and the client thread's CPU per connect; ratios async/C per round and their median.
// 7. What a deadline costs (deadline): the same operations with and without a timeout, alternating in
//    12 chunks, same run: connect + close, read and write (a socketpair ping-pong on one loop: each read
//    suspends, a 64 B write does not), sleep (1 µs; a sleep is its deadline: no untimed form).
import BenchSupport
import CReadinessBench
import Glibc
import MallocInterposerSwift
import NIOCore
import NIOPosix
import Readiness
import ReadinessAsync
import Synchronization

Allocations.ensureInterposed()
signal(SIGPIPE, SIG_IGN)
func option(_ name: String) -> String? {
    guard let index = CommandLine.arguments.firstIndex(of: name), index + 1 < CommandLine.arguments.count else { return nil }
    return CommandLine.arguments[index + 1]
}
let total = option("--connects").flatMap { Int($0) } ?? 20_000
let inFlightLevels = option("--in-flight").map { $0.split(separator: ",").compactMap { Int($0) } } ?? [1, 16, 64]
let rounds = option("--rounds").flatMap { Int($0) } ?? 1
/// Round trips of each ping-pong figure.
let roundTrips = option("--round-trips").flatMap { Int($0) } ?? 20_000
let contenders = ["sync", "async", "async-serial", "async-task", "nio", "nio-async", "flyingsocks"]
let only = Set(option("--only").map { $0.split(separator: ",").map(String.init) } ?? contenders + ["allocations", "pingpong", "pingpong-bytes", "hops", "interleaved", "cpu", "deadline"])

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    let limit: Int
    init(limit: Int = total) { self.limit = limit }
    func take() -> Bool { value.add(1, ordering: .relaxed).newValue <= limit }
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

/// CPU time of the calling thread, in seconds.
func threadCPU() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
/// CPU time of the whole process (every thread, user and system: getrusage), in seconds.
func processCPU() -> Double { processCPUSplit().total }
/// The same, split: user and user + system.
func processCPUSplit() -> (user: Double, total: Double) {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
    return (user, user + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)
}
/// CPU seconds the last churn's client thread used (the sync loop's thread, or the async loop's).
nonisolated(unsafe) var lastClientCPU = 0.0

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

// The shared listener: its own loop accepts and closes everything.
let server = try EventLoop(backend: .epoll, name: "bench-server", jobs: .taskExecutor)
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
func syncChurn(inFlight: Int, total: Int = total) throws -> Double {
    let poller = try Backend.epoll.makePoller()
    defer { try? poller.close() }
    let events = EventBuffer(capacity: 256)
    var attempts: [UInt64: ConnectAttempt] = [:]
    var started = 0, done = 0, nextToken: UInt64 = 1
    let cpuStart = threadCPU()
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
    let rate = Double(total) / seconds(ContinuousClock.now - start)
    lastClientCPU = threadCPU() - cpuStart
    return rate
}

// 1b. Async connects on one EventLoop: tasks preferring the loop.
func asyncChurn(jobs: ReadinessAsync.EventLoop.JobIsolation, inFlight: Int, total: Int = total,
                timeout: Duration? = nil) async throws -> Double {
    let loop = try EventLoop(backend: .epoll, name: "bench-client", jobs: jobs)
    let counter = Counter(limit: total)
    let cpuStart = await Task(executorPreference: loop) { threadCPU() }.value
    let start = ContinuousClock.now
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<inFlight {
            group.addTask(executorPreference: loop) {
                while counter.take() {
                    do {
                        let socket = try await loop.connect(to: address, timeout: timeout)
                        await socket.close()
                    } catch { fatalError("async connect: \(error)") }
                }
            }
        }
    }
    let rate = Double(total) / seconds(ContinuousClock.now - start)
    lastClientCPU = await Task(executorPreference: loop) { threadCPU() }.value - cpuStart
    let statistics = try await loop.statistics()
    hops[jobs == .automatic ? "async" : jobs == .serialExecutor ? "async-serial" : "async-task", default: []].append(
        (Double(statistics.jobs) / Double(total), Double(statistics.iterations) / Double(total)))
    await loop.shutdown()
    return rate
}
/// Jobs the client loop ran and poller waits it made, per connect (each async run).
nonisolated(unsafe) var hops: [String: [(jobs: Double, waits: Double)]] = [:]

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

/// SwiftNIO connect churn on one event loop: `inFlight` tasks, each calling `connectAndClose` with its
/// bootstrap and the listener's port until `total` connects were taken; connections per second.
func nioChurn(inFlight: Int,
              _ connectAndClose: @escaping @Sendable (ClientBootstrap, Int) async throws -> Void) async throws -> Double {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let counter = Counter()
    let port = Int(address.port!)
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for _ in 0..<inFlight {
            tasks.addTask {
                let bootstrap = ClientBootstrap(group: group)
                while counter.take() { try await connectAndClose(bootstrap, port) }
            }
        }
        try await tasks.waitForAll()
    }
    let rate = Double(total) / seconds(ContinuousClock.now - start)
    try await group.shutdownGracefully()
    return rate
}

// 1c. SwiftNIO: ClientBootstrap on one event loop, connects awaited from tasks.
func nioChurn(inFlight: Int) async throws -> Double {
    try await nioChurn(inFlight: inFlight) { bootstrap, port in
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
        try? await channel.close()   // the server may have closed it first ("already closed")
    }
}

// 1d. SwiftNIO as an async user writes it: the channel wrapped in NIOAsyncChannel, closed by
//     executeThenClose.
func nioAsyncChurn(inFlight: Int) async throws -> Double {
    try await nioChurn(inFlight: inFlight) { bootstrap, port in
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
        try? await channel.executeThenClose { _, _ in }   // the server may have closed it first
    }
}

// 2. Ping-pong on one loop; allocations per awaited operation.
func pingPong(roundTrips: Int, jobs: ReadinessAsync.EventLoop.JobIsolation, owned: Bool = false) async throws -> (rate: Double, allocationsPerOperation: Double) {
    let loop = try EventLoop(backend: .epoll, name: "bench-pingpong", jobs: jobs)
    let pingListener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
    let client = try await loop.connect(to: pingListener.address)
    let peer = try await pingListener.accept()
    func run(_ count: Int) async throws {
        if owned { return try await runOwned(count) }
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
    // The same with owned bytes: one reused `Bytes` per side (allocated before the loop), no pointer.
    func runOwned(_ count: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask(executorPreference: loop) {
                var buffer = Bytes(capacity: 64)
                for _ in 0..<count {
                    while buffer.count < 64 { _ = try await peer.read(into: &buffer, maximum: 64 - buffer.count) }
                    try await peer.write(buffer)
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            group.addTask(executorPreference: loop) {
                let message = Bytes(repeatElement(UInt8(1), count: 64))
                var buffer = Bytes(capacity: 64)
                for _ in 0..<count {
                    try await client.write(message)
                    while buffer.count < 64 { _ = try await client.read(into: &buffer, maximum: 64 - buffer.count) }
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try await group.waitForAll()
        }
    }
    try await run(2_000)   // warm-up: tables and queues at their size
    let jobsBefore = try await loop.statistics().jobs
    let start = ContinuousClock.now
    try await run(roundTrips)
    let rate = Double(roundTrips) / seconds(ContinuousClock.now - start)
    let jobsPerRoundTrip = Double(try await loop.statistics().jobs - jobsBefore) / Double(roundTrips)
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
    print("  (ping-pong\(owned ? " with Bytes" : ""), jobs \(jobs): \(allocations) heap allocations in \(roundTrips) round trips, the task group and its two tasks included; \(fixed(jobsPerRoundTrip, 2)) jobs per round trip, 4 suspensions each)")
    return (rate, allocations < 0 ? -1 : Double(allocations) / Double(roundTrips * 4))
}

if only.contains("allocations") {
let perConnect = try await allocationsPerConnect()
print("heap allocations per async connect and close (every thread, the listener's accept and close included): \(perConnect < 0 ? "not counted here" : fixed(perConnect, 1))")
}
for jobs in [ReadinessAsync.EventLoop.JobIsolation.automatic, .serialExecutor, .taskExecutor] where only.contains("pingpong") {
    let ping = try await pingPong(roundTrips: roundTrips, jobs: jobs)
    print("ping-pong (64 B each way, one loop, jobs \(jobs)): \(fixed(ping.rate))/s round trips; heap allocations per awaited read or write: \(Allocations.available ? fixed(ping.allocationsPerOperation, 3) : "not counted here")")
}
for jobs in [ReadinessAsync.EventLoop.JobIsolation.automatic, .serialExecutor, .taskExecutor] where only.contains("pingpong-bytes") {
    let ping = try await pingPong(roundTrips: roundTrips, jobs: jobs, owned: true)
    print("ping-pong with Bytes (64 B each way, read(into: &bytes)/write(bytes), one loop, jobs \(jobs)): \(fixed(ping.rate))/s round trips; heap allocations per awaited read or write: \(Allocations.available ? fixed(ping.allocationsPerOperation, 3) : "not counted here")")
}
// 4. Jobs per awaited loop operation (1,000 sleeps of 1 µs), from a task preferring the loop and from
//    an actor isolated to the loop (in a task with no executor preference), in each job mode.
actor SleepingActor {
    let loop: ReadinessAsync.EventLoop
    init(loop: ReadinessAsync.EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    func sleeps(_ count: Int) async throws -> Int {
        let before = try await loop.statistics().jobs
        for _ in 0..<count { try await loop.sleep(for: .microseconds(1)) }
        return try await loop.statistics().jobs - before
    }
}
for jobs in [ReadinessAsync.EventLoop.JobIsolation.automatic, .serialExecutor, .taskExecutor] where only.contains("hops") {
    let loop = try EventLoop(backend: .epoll, name: "bench-hops", jobs: jobs)
    let fromTask = try await Task(executorPreference: loop) { () async throws -> Int in
        let before = try await loop.statistics().jobs
        for _ in 0..<1_000 { try await loop.sleep(for: .microseconds(1)) }
        return try await loop.statistics().jobs - before
    }.value
    let fromActor = try await SleepingActor(loop: loop).sleeps(1_000)
    print("jobs per awaited sleep (jobs \(jobs)): task preferring the loop \(fixed(Double(fromTask) / 1_000, 2)), actor isolated to the loop \(fixed(Double(fromActor) / 1_000, 2))")
    await loop.shutdown()
}
// Sync vs async (the default jobs) interleaved: 10 chunks of total/10 connects each, alternating, so
// that both meet the same machine state (other work on the 2 cores, and the TIME_WAIT sockets that pile
// up over a run and make every later connect() search longer for a port).
func interleaved(inFlight: Int) async throws -> (sync: Double, async: Double, syncMicros: Double, asyncMicros: Double) {
    let chunk = max(total / 10, 1)
    var syncTime = 0.0, asyncTime = 0.0
    var syncCPU = 0.0, asyncCPU = 0.0
    func runSync() throws { syncTime += Double(chunk) / (try syncChurn(inFlight: inFlight, total: chunk)); syncCPU += lastClientCPU }
    func runAsync() async throws { asyncTime += Double(chunk) / (try await asyncChurn(jobs: .automatic, inFlight: inFlight, total: chunk)); asyncCPU += lastClientCPU }
    for index in 0..<10 {
        if index % 2 == 0 { try runSync(); try await runAsync() } else { try await runAsync(); try runSync() }
    }
    let count = Double(chunk * 10)
    return (count / syncTime, count / asyncTime, syncCPU / count * 1e6, asyncCPU / count * 1e6)
}
if only.contains("interleaved") {
    for inFlight in inFlightLevels {
        var ratios: [Double] = [], cpuRatios: [Double] = []
        var line = "", cpuLine = ""
        for _ in 0..<rounds {
            let (syncRate, asyncRate, syncMicros, asyncMicros) = try await interleaved(inFlight: inFlight)
            ratios.append(asyncRate / syncRate)
            cpuRatios.append(syncMicros / asyncMicros)
            line += " \(fixed(asyncRate))/\(fixed(syncRate))"
            cpuLine += " \(fixed(asyncMicros, 1))/\(fixed(syncMicros, 1))"
        }
        print("interleaved (\(total) connects each side per round, 10 alternating chunks), \(inFlight) in flight: async (.automatic)/sync conn/s\(line); ratio \(ratios.map { fixed($0, 2) + "x" }.joined(separator: ", "))")
        print("  client thread CPU per connect, async/sync µs\(cpuLine); sync/async (connects per CPU second, async vs sync) \(cpuRatios.map { fixed($0, 2) + "x" }.joined(separator: ", "))")
    }
    hops = [:]
}

// 6. CPU per connect: the like-for-like C loop vs the async connect without and with a deadline.
/// The C loop on the calling thread: `total` connects, `inFlight` at a time; its thread's CPU.
func cChurn(inFlight: Int, total: Int) -> Double {
    let start = threadCPU()
    let failures = rb_client_connect_churn(Int32(address.port!), Int32(total), Int32(inFlight))
    if failures != 0 { fatalError("C connect churn: \(failures < 0 ? "the loop failed" : "\(failures) connects failed")") }
    return threadCPU() - start
}
let cpuContenders = option("--cpu-contenders").map { $0.split(separator: ",").map(String.init) } ?? ["c", "async", "async-deadline"]
if only.contains("cpu") {
    for inFlight in inFlightLevels {
        var process: [String: [Double]] = [:], thread: [String: [Double]] = [:], user: [String: [Double]] = [:]
        // Chunks: 10 or more, a multiple of the contenders, so that each is first, second... equally often.
        let chunks = (10 + cpuContenders.count - 1) / cpuContenders.count * cpuContenders.count
        let chunk = max(total / chunks, 1)
        for _ in 0..<rounds {
            var processSum: [String: Double] = [:], threadSum: [String: Double] = [:], userSum: [String: Double] = [:]
            for index in 0..<chunks {
                let order = Array(cpuContenders[(index % cpuContenders.count)...] + cpuContenders[..<(index % cpuContenders.count)])
                for name in order {
                    let before = processCPUSplit()
                    let clientThread: Double
                    switch name {
                    case "c": clientThread = cChurn(inFlight: inFlight, total: chunk)
                    case "async-deadline":
                        _ = try await asyncChurn(jobs: .automatic, inFlight: inFlight, total: chunk, timeout: .seconds(5))
                        clientThread = lastClientCPU
                    default:
                        _ = try await asyncChurn(jobs: .automatic, inFlight: inFlight, total: chunk)
                        clientThread = lastClientCPU
                    }
                    let after = processCPUSplit()
                    processSum[name, default: 0] += after.total - before.total
                    userSum[name, default: 0] += after.user - before.user
                    threadSum[name, default: 0] += clientThread
                }
            }
            for name in cpuContenders {
                process[name, default: []].append(processSum[name]! / Double(chunk * chunks) * 1e6)
                thread[name, default: []].append(threadSum[name]! / Double(chunk * chunks) * 1e6)
                user[name, default: []].append(userSum[name]! / Double(chunk * chunks) * 1e6)
            }
        }
        hops = [:]
        print("CPU per connect (+ close), \(chunk * chunks) connects a contender a round in \(chunks) chunks (order turning), \(inFlight) in flight, µs per round; median")
        for name in cpuContenders {
            print("  \(name): process \(process[name]!.map { fixed($0, 1) }.joined(separator: ", ")); median \(fixed(median(process[name]!), 1)) | client thread \(thread[name]!.map { fixed($0, 1) }.joined(separator: ", ")); median \(fixed(median(thread[name]!), 1)) | process user \(user[name]!.map { fixed($0, 1) }.joined(separator: ", ")); median \(fixed(median(user[name]!), 1))")
        }
        for name in cpuContenders where name != "c" && process["c"] != nil {
            let ratios = zip(process[name]!, process["c"]!).map { $0 / $1 }
            let threadRatios = zip(thread[name]!, thread["c"]!).map { $0 / $1 }
            print("  \(name)/c: process CPU \(ratios.map { fixed($0, 2) + "x" }.joined(separator: ", ")); median \(fixed(median(ratios), 2))x | client thread \(threadRatios.map { fixed($0, 2) + "x" }.joined(separator: ", ")); median \(fixed(median(threadRatios), 2))x")
        }
        if let with = process["async-deadline"], let without = process["async"] {
            let differences = zip(with, without).map { $0 - $1 }
            print("  deadline cost, connect (async-deadline - async, process CPU): \(differences.map { fixed($0, 2) }.joined(separator: ", ")) µs; median \(fixed(median(differences), 2)) µs")
        }
    }
}

// 7. What a deadline costs: read, write (socketpair ping-pong on one loop) and sleep, with and without
//    a timeout, alternating chunks, process CPU per operation.
if only.contains("deadline") {
    let loop = try EventLoop(backend: .epoll, name: "bench-deadline")
    var pair: [CInt] = [0, 0]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &pair) == 0 else { fatalError("socketpair: errno \(errno)") }
    let left = try await loop.adopt(descriptor: pair[0]), right = try await loop.adopt(descriptor: pair[1])
    /// `count` round trips of 64 B: one side writes then reads, the other reads then writes.
    func pingPong(_ count: Int, readTimeout: Duration?, writeTimeout: Duration?) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, socket) in [left, right].enumerated() {
                group.addTask(executorPreference: loop) {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                    defer { buffer.deallocate() }
                    for _ in 0..<count {
                        if index == 0 { try await socket.write(UnsafeRawBufferPointer(buffer), timeout: writeTimeout) }
                        var got = 0
                        while got < 64 {
                            got += try await socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]), timeout: readTimeout)
                        }
                        if index == 1 { try await socket.write(UnsafeRawBufferPointer(buffer), timeout: writeTimeout) }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    func sleeps(_ count: Int) async throws {
        try await Task(executorPreference: loop) { () async throws -> Void in
            for _ in 0..<count { try await loop.sleep(for: .microseconds(1)) }
        }.value
    }
    let variants = ["plain", "read-timeout", "write-timeout", "sleep"]
    let chunks = 12   // a multiple of the 4 variants: each is first, second... equally often
    let chunk = max(roundTrips / chunks, 1)
    // A 1 µs sleep waits a whole millisecond (the poller's timeout is rounded up): fewer of them.
    let sleepChunk = max(chunk / 50, 10)
    try await pingPong(2_000, readTimeout: nil, writeTimeout: nil)   // warm-up
    var perOperation: [String: [Double]] = [:]
    for _ in 0..<rounds {
        var sums: [String: Double] = [:]
        for index in 0..<chunks {
            for name in Array(variants[(index % variants.count)...] + variants[..<(index % variants.count)]) {
                let before = processCPU()
                switch name {
                case "plain": try await pingPong(chunk, readTimeout: nil, writeTimeout: nil)
                case "read-timeout": try await pingPong(chunk, readTimeout: .seconds(5), writeTimeout: nil)
                case "write-timeout": try await pingPong(chunk, readTimeout: nil, writeTimeout: .seconds(5))
                default: try await sleeps(sleepChunk)
                }
                sums[name, default: 0] += processCPU() - before
            }
        }
        for name in variants {
            // A round trip is 2 reads and 2 writes; a sleep is one operation.
            let operations = name == "sleep" ? Double(sleepChunk * chunks) : Double(chunk * chunks * 4)
            perOperation[name, default: []].append(sums[name]! / operations * 1e6)
        }
    }
    print("deadline cost: \(chunk * chunks) ping-pong round trips (64 B each way, a socketpair on one loop) and \(sleepChunk * chunks) sleeps a variant a round, \(chunks) chunks, order turning; process CPU µs per read or write; median")
    for name in variants {
        print("  \(name): \(perOperation[name]!.map { fixed($0, 3) }.joined(separator: ", ")); median \(fixed(median(perOperation[name]!), 3))\(name == "sleep" ? " (µs per sleep(for: 1 µs), the whole operation: schedule, wait, fire, resume)" : "")")
    }
    for (name, operation) in [("read-timeout", "read"), ("write-timeout", "write")] {
        // Only the timed operations differ: 2 of the 4 operations of a round trip.
        let differences = zip(perOperation[name]!, perOperation["plain"]!).map { ($0 - $1) * 2 }
        print("  deadline cost, \(operation) (per timed \(operation), with - without): \(differences.map { fixed($0, 3) }.joined(separator: ", ")) µs; median \(fixed(median(differences), 3)) µs")
    }
    await left.close(); await right.close()
    await loop.shutdown()
}

// Connect churn last: the contenders leave threads behind (SwiftNIO, FlyingSocks's shared pool) that
// would be counted by the allocation figures above.
// Connect churn: every contender at every level, the order rotated each round.
let names = [
    "sync": "sync ConnectAttempt loop (epoll)",
    "async": "async EventLoop.connect (jobs .automatic, the default)",
    "async-serial": "async EventLoop.connect (jobs .serialExecutor)",
    "async-task": "async EventLoop.connect (jobs .taskExecutor)",
    "nio": "SwiftNIO ClientBootstrap (futures awaited)",
    "nio-async": "SwiftNIO NIOAsyncChannel",
    "flyingsocks": "FlyingSocks AsyncSocket.connected",
]
let running = contenders.filter { only.contains($0) }
for inFlight in inFlightLevels where !running.isEmpty {
    var rates: [String: [Double]] = [:]
    for round in 0..<rounds {
        let order = Array(running[(round % running.count)...] + running[..<(round % running.count)])
        for name in order {
            let rate: Double
            switch name {
            case "sync": rate = try syncChurn(inFlight: inFlight)
            case "async": rate = try await asyncChurn(jobs: .automatic, inFlight: inFlight)
            case "async-serial": rate = try await asyncChurn(jobs: .serialExecutor, inFlight: inFlight)
            case "async-task": rate = try await asyncChurn(jobs: .taskExecutor, inFlight: inFlight)
            case "nio": rate = try await nioChurn(inFlight: inFlight)
            case "nio-async": rate = try await nioAsyncChurn(inFlight: inFlight)
            default: rate = try await flyingSocksChurn(port: address.port!, total: total, inFlight: inFlight)
            }
            rates[name, default: []].append(rate)
        }
    }
    print("connect churn: \(total) connects, \(inFlight) in flight, \(rounds) round(s), same listener (conn/s per round; median)")
    for name in running {
        let values = rates[name] ?? []
        print("  \(names[name]!): \(values.map { fixed($0) }.joined(separator: ", ")); median \(fixed(median(values)))")
    }
    for mine in ["async", "async-serial", "async-task"] where hops[mine] != nil {
        print("  \(mine): per connect \(hops[mine]!.map { fixed($0.jobs, 2) + " jobs, " + fixed($0.waits, 2) + " poller waits" }.joined(separator: "; "))")
    }
    hops = [:]
    for mine in ["async", "async-serial", "async-task"] where rates[mine] != nil {
        var line = "  \(mine) vs"
        for other in running where !other.hasPrefix("async") {
            let ratios = zip(rates[mine]!, rates[other]!).map { $0 / $1 }
            line += " \(other) \(ratios.map { fixed($0, 2) + "x" }.joined(separator: "/"))"
        }
        print(line)
    }
}
acceptor.cancel()
await listener.close()
await server.shutdown()
