// The adapters on every available backend: FlyingFox's HTTPServer served on each pool, a request from
// a FlyingSocks client socket; cancellation, run() and error mapping of ReadinessSocketPool; the
// EventQueue under FlyingSocks' own SocketPool.
import FlyingFox
import FlyingSocks
import Foundation
import Readiness
import ReadinessFlyingSocks
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A connected non-blocking AF_UNIX stream pair (FlyingSocks' own `Socket.makePair` is `package`).
private func socketPair() throws -> (FlyingSocks.Socket, FlyingSocks.Socket) {
    var fds: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw POSIXError(.EMFILE) }
    let a = FlyingSocks.Socket(file: .init(rawValue: fds[0]))
    let b = FlyingSocks.Socket(file: .init(rawValue: fds[1]))
    try a.setFlags(.nonBlocking)
    try b.setFlags(.nonBlocking)
    return (a, b)
}

/// Serves one route on `pool`, sends one request with a FlyingSocks client socket on `clientPool`, and
/// returns the whole response (the server closes after it: `Connection: close`).
private func exchange(serverPool: some AsyncSocketPool, clientPool: some AsyncSocketPool) async throws -> String {
    let server = HTTPServer(address: .loopback(port: 0), timeout: 5, pool: serverPool)
    await server.appendRoute("*") { request in
        HTTPResponse(statusCode: .ok, body: Data("hello \(request.path)".utf8))
    }
    let serving = Task { try await server.run() }
    defer { serving.cancel() }
    try await server.waitUntilListening(timeout: 5)
    let port: UInt16
    switch await server.listeningAddress {
    case let .ip4(_, p), let .ip6(_, p): port = p
    default: throw POSIXError(.EADDRNOTAVAIL)
    }

    let client = try await AsyncSocket.connected(to: .loopback(port: port), pool: clientPool, timeout: 5)
    try await client.write(Data("GET /readiness HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
    var response: [UInt8] = []
    while true {
        let chunk: [UInt8]
        do { chunk = try await client.read(atMost: 4096) } catch FlyingSocks.SocketError.disconnected { break }
        if chunk.isEmpty { break }
        response += chunk
    }
    try? client.close()
    await server.stop()
    return String(decoding: response, as: UTF8.self)
}

@Suite("ReadinessSocketPool", .serialized)
struct ReadinessSocketPoolTests {
    @Test("FlyingFox's HTTPServer on the pool answers a FlyingSocks client", arguments: Backend.available)
    func httpServer(backend: Backend) async throws {
        let serverPool = ReadinessSocketPool(backend: backend)
        let clientPool = ReadinessSocketPool(backend: backend)
        try await clientPool.prepare()
        let running = Task { try await clientPool.run() }
        defer { running.cancel() }
        let response = try await exchange(serverPool: serverPool, clientPool: clientPool)
        #expect(response.hasPrefix("HTTP/1.1 200"), "\(backend): \(response)")
        #expect(response.hasSuffix("hello /readiness"), "\(backend): \(response)")
    }

    @Test("the same on a pool over two loops of a group", arguments: Backend.available)
    func httpServerOnGroup(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 2)
        let pool = ReadinessSocketPool(group: group)
        // One pool for the server and the client: the server prepares and runs it (a second run()
        // would throw, as with FlyingSocks' pools).
        let response = try await exchange(serverPool: pool, clientPool: pool)
        #expect(response.hasPrefix("HTTP/1.1 200"), "\(backend): \(response)")
        await group.shutdown()
        // The same descriptor always waits on the same loop.
        #expect(pool.loop(for: 7) === group.loops[1])
        #expect(pool.loop(for: 8) === group.loops[0])
    }

    @Test("a suspended socket resumes when ready, and with CancellationError when its task is cancelled", arguments: Backend.available)
    func readyAndCancelled(backend: Backend) async throws {
        let pool = ReadinessSocketPool(backend: backend)
        try await pool.prepare()
        let running = Task { try await pool.run() }
        defer { running.cancel() }
        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }

        // Writable at once; readable once the peer writes.
        try await pool.suspendSocket(a, untilReadyFor: .write)
        let reader = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(20))
        _ = try b.write(Data([1]))
        try await reader.value
        _ = try a.read(atMost: 1)

        // Nothing to read: only cancellation ends the wait.
        let waiting = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        // Cancelled before it waits.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await pool.suspendSocket(a, untilReadyFor: .read)
        }
        await #expect(throws: CancellationError.self) { try await early.value }
    }

    @Test("run(): not before prepare(), not twice; when it ends, waiting sockets get CancellationError and new ones an error", arguments: Backend.available)
    func runLifecycle(backend: Backend) async throws {
        let pool = ReadinessSocketPool(backend: backend)
        await #expect(throws: (any Error).self) { try await pool.run() }
        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }
        await #expect(throws: (any Error).self) { try await pool.suspendSocket(a, untilReadyFor: .read) }

        try await pool.prepare()
        let running = Task { try await pool.run() }
        try await Task.sleep(for: .milliseconds(20))
        await #expect(throws: (any Error).self) { try await pool.run() }

        let waiting = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(50))
        running.cancel()
        await #expect(throws: CancellationError.self) { try await running.value }
        await #expect(throws: CancellationError.self) { try await waiting.value }
        await #expect(throws: (any Error).self) { try await pool.suspendSocket(a, untilReadyFor: .read) }

        // prepare() again makes a new loop: the pool runs again (FlyingFox restarts a server this way).
        try await pool.prepare()
        let again = Task { try await pool.run() }
        _ = try b.write(Data([1]))
        try await pool.suspendSocket(a, untilReadyFor: .read)
        again.cancel()
        _ = await again.result
    }

    /// FlyingFox's HTTPServer.run() prepares its pool, then listens: a listen that fails never runs
    /// the pool. Before: the pool's own loops (a thread, a poller and a waker each) outlived it.
    @Test("a pool prepared and dropped without run ends its loops", arguments: Backend.available)
    func preparedPoolDropped(backend: Backend) async throws {
        // The pool names its loops `readiness-flyingsocks-N`, which the kernel's 15 bytes make `readiness-fly-N`.
        func loopThreads() -> Int {
            guard let tasks = opendir("/proc/self/task") else { return -1 }
            defer { closedir(tasks) }
            var count = 0
            while let entry = readdir(tasks) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard Int(name) != nil, let file = fopen("/proc/self/task/\(name)/comm", "r") else { continue }
                var line = [CChar](repeating: 0, count: 64)
                if fgets(&line, 64, file) != nil,
                   String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("readiness-fly-") {
                    count += 1
                }
                fclose(file)
            }
            return count
        }
        // Threads of earlier tests' loops may still be ending: counted once they have (or after 1 s),
        // so that one ending meanwhile does not hide the new pool's.
        var before = loopThreads()
        for _ in 0..<100 where before > 0 {
            try await Task.sleep(for: .milliseconds(10))
            before = loopThreads()
        }
        do {
            let pool = ReadinessSocketPool(backend: backend)
            try await pool.prepare()
            #expect(loopThreads() > before)
        }
        // Threads of earlier tests' loops may still be ending: at most as many as before.
        var after = loopThreads()
        for _ in 0..<100 where after > before {
            try await Task.sleep(for: .milliseconds(10))
            after = loopThreads()
        }
        #expect(after <= before, "\(after - before) loop threads left on \(backend)")
    }

    @Test("a descriptor that is not open gives SocketError.disconnected; two readers of one socket both return", arguments: Backend.available)
    func errorsAndSecondWaiter(backend: Backend) async throws {
        let pool = ReadinessSocketPool(backend: backend)
        try await pool.prepare()
        let running = Task { try await pool.run() }
        defer { running.cancel() }

        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }
        let closed = FlyingSocks.Socket(file: .init(rawValue: 1_000))   // not open in this process
        await #expect(throws: FlyingSocks.SocketError.disconnected) { try await pool.suspendSocket(closed, untilReadyFor: .read) }

        // Two readers of one descriptor take turns: both return once it is readable, no fallback.
        let first = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))
        let second = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))
        _ = try b.write(Data([1]))
        try await first.value
        try await second.value
        #expect(pool.busyFallbacks == 0)
    }

    @Test("counts out of range (review): loops outside 1 ... 1024 is EINVAL from prepare() before any loop starts, as EventLoopGroup says; maxEvents of Int.max is clamped, not a trap", arguments: Backend.available)
    func countsOutOfRange(backend: Backend) async throws {
        for count in [0, -1, Int.min, EventLoopGroup.maximumLoops + 1, Int.max] {
            let pool = ReadinessSocketPool(backend: backend, loops: count)
            do {
                try await pool.prepare()
                Issue.record("prepare() with \(count) loops succeeded on \(backend)")
            } catch let error as PollerError {
                guard case .system(_, let code) = error else { Issue.record("\(error)"); continue }
                #expect(code == EINVAL)
            }
            #expect(pool.loop(for: 0) == nil)
        }
        for maxEvents in [Int.max, Int.min, 0] {
            var queue = ReadinessEventQueue(backend: backend, maxEvents: maxEvents)
            try queue.open()
            try queue.stop()
            try queue.close()
        }
    }
}

@Suite("ReadinessEventQueue under FlyingSocks' SocketPool", .serialized)
struct ReadinessEventQueueTests {
    @Test("a socket resumes when ready, with CancellationError when cancelled; the pool stops", arguments: Backend.available)
    func socketPool(backend: Backend) async throws {
        let pool = SocketPool(queue: ReadinessEventQueue(backend: backend, maxEvents: 8))
        try await pool.prepare()
        let running = Task { try await pool.run() }
        let (a, b) = try socketPair()
        // Each descriptor closed once: a second close could close another test's descriptor of the same number.
        var bOpen = true
        defer { try? a.close(); if bOpen { try? b.close() } }

        try await pool.suspendSocket(a, untilReadyFor: .write)
        let reader = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))   // registered while the queue waits: applied after a wake
        _ = try b.write(Data([1]))
        try await reader.value
        _ = try a.read(atMost: 1)

        let waiting = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }

        // The peer goes away: a reader is resumed (readable at end of stream) and reads nothing.
        let last = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))
        bOpen = false
        try b.close()
        try? await last.value
        #expect(throws: (any Error).self) { _ = try a.read(atMost: 1) }

        running.cancel()
        _ = await running.result
    }

    @Test("the queue maps events as FlyingSocks' epoll queue does", arguments: Backend.available)
    func queueDirectly(backend: Backend) throws {
        var queue = ReadinessEventQueue(backend: backend, maxEvents: 4)
        try queue.open()
        #expect(queue.backendName != nil)
        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }
        try queue.addEvents([.read, .write], for: a.file)
        let writable = try queue.getNotifications()
        #expect(writable == [EventNotification(file: a.file, events: [.write], errors: [])])
        try queue.removeEvents([.write], for: a.file)
        _ = try b.write(Data([1]))
        #expect(try queue.getNotifications() == [EventNotification(file: a.file, events: [.read], errors: [])])
        try queue.removeEvents([.read], for: a.file)
        try queue.stop()
        #expect(throws: FlyingSocks.SocketError.disconnected) { try queue.getNotifications() }
        try queue.close()
        #expect(throws: FlyingSocks.SocketError.disconnected) { try queue.close() }
        // Opened again after a close (SocketPool.prepare after a run).
        try queue.open()
        try queue.addEvents([.write], for: b.file)
        #expect(try queue.getNotifications().map(\.file) == [b.file])
        try queue.stop()
        try queue.close()
    }

    @Test("a change made during a wait that returns events is superseded by a later direct change (review)", arguments: Backend.available)
    func pendingSuperseded(backend: Backend) async throws {
        for _ in 0..<10 {
            var queue = ReadinessEventQueue(backend: backend)
            try queue.open()
            let (a, b) = try socketPair()
            let (c, d) = try socketPair()
            try queue.addEvents([.read], for: a.file)
            try queue.addEvents([.read], for: c.file)
            let waiter = queue
            let first = Task.detached { try waiter.getNotifications() }
            try await Task.sleep(for: .milliseconds(20))
            // c becomes readable and, at once, a's read is removed: the change is recorded for the
            // waiting thread, whose wait returns c's event (the change is then still pending).
            _ = try d.write(Data([1]))
            try queue.removeEvents([.read], for: a.file)
            #expect(try await first.value.map(\.file).contains(c.file))
            // Nobody waits now: a's read is added back directly, c's removed.
            try queue.addEvents([.read], for: a.file)
            try queue.removeEvents([.read], for: c.file)
            _ = try b.write(Data([2]))
            let second = Task.detached { try waiter.getNotifications() }
            let stopper = Task.detached {
                try await Task.sleep(for: .seconds(2))
                var stopping = waiter
                try? stopping.stop()
            }
            let files = (try? await second.value)?.map(\.file) ?? []
            stopper.cancel()
            #expect(files.contains(a.file), "a's read, added back after the change made during the wait, was lost")
            try? queue.stop()
            try? queue.close()
            for socket in [a, b, c, d] { try? socket.close() }
        }
    }

    @Test("stop() from another thread ends a wait in progress; close() during it is done by the waiter", arguments: Backend.available)
    func stopDuringWait(backend: Backend) async throws {
        var queue = ReadinessEventQueue(backend: backend)
        try queue.open()
        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }
        try queue.addEvents([.read], for: a.file)
        let waiter = queue
        let waiting = Task.detached { try waiter.getNotifications() }
        try await Task.sleep(for: .milliseconds(30))
        try queue.stop()
        try queue.close()
        await #expect(throws: FlyingSocks.SocketError.disconnected) { try await waiting.value }
    }

    /// FlyingSocks' SocketPool resumes a waiter with the error when addEvents fails (its epoll queue
    /// applies the change at once). Before: a change made during a wait that failed when applied (the
    /// descriptor closed under a reader) was reported for the directions registered before it only,
    /// so the writer whose direction it added stayed suspended.
    @Test("a change that fails during a wait fails the new direction's waiter too", arguments: Backend.available)
    func failedChangeReachesNewWaiter(backend: Backend) async throws {
        let pool = SocketPool(queue: ReadinessEventQueue(backend: backend, maxEvents: 8))
        try await pool.prepare()
        let running = Task { try await pool.run() }
        defer { running.cancel() }
        let (a, b) = try socketPair()
        defer { try? b.close() }
        let reader = Task { try await pool.suspendSocket(a, untilReadyFor: .read) }
        try await Task.sleep(for: .milliseconds(30))
        Glibc.close(a.file.rawValue)   // closed under the reader (a is not closed again)
        let writer = Task { try await pool.suspendSocket(a, untilReadyFor: .write) }
        var ended = false
        for _ in 0..<100 {
            try await Task.sleep(for: .milliseconds(10))
            if await Self.finished(writer) { ended = true; break }
        }
        #expect(ended, "the writer was still suspended after 1 s on \(backend)")
        // Left suspended (the bug), the pool's queue waits with nothing registered and its actor with
        // it: the waiters' cancellation could not end; they are left behind.
        guard ended else { return }
        reader.cancel()
        _ = await reader.result
    }

    private static func finished(_ task: Task<Void, any Error>) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = await task.result; return true }
            group.addTask { try? await Task.sleep(for: .milliseconds(1)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    @Test("FlyingFox's HTTPServer on SocketPool<ReadinessEventQueue>", arguments: Backend.available)
    func httpServer(backend: Backend) async throws {
        let serverPool = SocketPool(queue: ReadinessEventQueue(backend: backend))
        let clientPool = SocketPool(queue: ReadinessEventQueue(backend: backend))
        try await clientPool.prepare()
        let running = Task { try await clientPool.run() }
        defer { running.cancel() }
        let response = try await exchange(serverPool: serverPool, clientPool: clientPool)
        #expect(response.hasPrefix("HTTP/1.1 200"), "\(backend): \(response)")
        #expect(response.hasSuffix("hello /readiness"), "\(backend): \(response)")
    }

    /// A change made while a wait runs is applied by the waiting thread; a descriptor above select's
    /// FD_SETSIZE was refused there and its waiter got `.disconnected`, which FlyingFox takes for a
    /// clean end (every connection above 1023 closed with nothing said). It fails at once now, with
    /// `.failed`, as a change applied at once does (review of the adapter).
    @Test("a descriptor above the backend's limit, added during a wait, fails at once with .failed (select)",
          .timeLimit(.minutes(1)), arguments: Backend.available.filter { $0.name.hasSuffix("select") })
    func tooLargeDuringWait(backend: Backend) async throws {
        let (a, b) = try socketPair()
        defer { try? a.close(); try? b.close() }
        // The number first: nothing waits yet if the process may not open one at 1100.
        let big = fcntl(b.file.rawValue, F_DUPFD_CLOEXEC, 1_100)
        guard big >= 1_100 else { try Test.cancel("no descriptor at 1100 or above (RLIMIT_NOFILE)") }
        defer { Glibc.close(big) }
        var queue = ReadinessEventQueue(backend: backend)
        try queue.open()
        defer { try? queue.stop(); try? queue.close() }
        try queue.addEvents([.read], for: a.file)
        let waiting = queue.startWaiting()
        try await waiting.started()
        do {
            try queue.addEvents([.read], for: .init(rawValue: big))
            Issue.record("added a descriptor above FD_SETSIZE on \(backend)")
        } catch let error as FlyingSocks.SocketError {
            guard case .failed = error else { Issue.record("\(error) on \(backend)"); return }
        }
        try queue.stop()
        _ = try? await waiting.result()
    }

    /// SocketPool waits again only once a task waits. A removal made while the wait ran, which
    /// returned other events, was applied only before the next wait: the descriptor stayed watched
    /// (io_uring's poll request holding its file after its owner closed it). Applied as the wait
    /// returns now (review of the adapter).
    @Test("a removal made during a wait that returns events is applied when it returns", .timeLimit(.minutes(1)), arguments: Backend.available)
    func removalAppliedAfterWait(backend: Backend) async throws {
        let deregistered = ReadinessLockedSet()
        var queue = ReadinessEventQueue(maxEvents: 8) { () throws(PollerError) -> any Poller in
            RecordingPoller(try backend.makePoller(), deregistered: deregistered)
        }
        try queue.open()
        defer { try? queue.stop(); try? queue.close() }
        let (a, b) = try socketPair()
        let (c, d) = try socketPair()
        defer { for socket in [a, b, c, d] { try? socket.close() } }
        try queue.addEvents([.read], for: a.file)
        try queue.addEvents([.read], for: c.file)
        let first = queue.startWaiting()
        try await first.started()
        _ = try d.write(Data([1]))
        try queue.removeEvents([.read], for: a.file)   // recorded: the wait is running
        let files = try await first.result().map(\.file)
        #expect(files.contains(c.file))
        // If the wait returned the waker alone first, it waited again after applying: either way the
        // removal is done by the time the wait returned c's event.
        #expect(deregistered.contains(a.file.rawValue), "a's registration was still there on \(backend)")
    }

    /// A socket closed while its read waits (its registration stays: SocketPool removes it only when
    /// the waiter resumes), and the next socket gets its number and waits for reading: the add found
    /// the same interest registered and did nothing; epoll, which had dropped the closed file, never
    /// watched the new one (a hang). An add that changes nothing applies the registration again.
    @Test("a new socket on a closed socket's number, waiting in the same direction, is watched", .timeLimit(.minutes(1)), arguments: Backend.available)
    func reusedNumberWatched(backend: Backend) async throws {
        var queue = ReadinessEventQueue(backend: backend)
        try queue.open()
        defer { try? queue.stop(); try? queue.close() }
        let (a, b) = try socketPair()
        defer { try? b.close() }
        try queue.addEvents([.read], for: a.file)
        let number = a.file.rawValue
        Glibc.close(number)
        let (p, q) = try socketPair()
        defer { try? p.close(); try? q.close() }
        guard p.file.rawValue == number else { try Test.cancel("another thread took descriptor \(number) first") }
        try queue.addEvents([.read], for: p.file)
        _ = try q.write(Data([1]))
        let waiting = queue.startWaiting()
        let stopper = Task.detached { [queue] in
            try await Task.sleep(for: .seconds(2))
            var stopping = queue
            try? stopping.stop()
        }
        let files = (try? await waiting.result())?.map(\.file) ?? []
        stopper.cancel()
        #expect(files.contains(p.file), "the new socket was not watched on \(backend)")
    }
}

/// `getNotifications()` on a thread of its own (it blocks; the tests run in parallel on a small
/// cooperative pool), as SocketPool calls it on a dispatch queue of its own.
private final class WaitingThread: @unchecked Sendable {
    private let lock = NSCondition()
    private var begun = false
    private var outcome: Result<[EventNotification], any Error>?

    init(_ queue: ReadinessEventQueue) {
        let thread = Thread { [self] in
            lock.lock(); begun = true; lock.broadcast(); lock.unlock()
            let result = Result { try queue.getNotifications() }
            lock.lock(); outcome = result; lock.broadcast(); lock.unlock()
        }
        thread.start()
    }

    /// Returns once the thread has begun, and a moment for it to reach the poller's wait.
    func started() async throws {
        while !(lock.withLock { begun }) { try await Task.sleep(for: .milliseconds(1)) }
        try await Task.sleep(for: .milliseconds(30))
    }

    func result() async throws -> [EventNotification] {
        while true {
            if let outcome = lock.withLock({ outcome }) { return try outcome.get() }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

extension ReadinessEventQueue {
    fileprivate func startWaiting() -> WaitingThread { WaitingThread(self) }
}

/// Records the numbers deregistered through it.
private final class RecordingPoller: Poller, @unchecked Sendable {
    let inner: any Poller
    let deregistered: ReadinessLockedSet
    init(_ inner: any Poller, deregistered: ReadinessLockedSet) {
        self.inner = inner
        self.deregistered = deregistered
    }
    var capabilities: Capabilities { inner.capabilities }
    var waker: Waker { inner.waker }
    var isClosed: Bool { inner.isClosed }
    func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try inner.register(fd, token: token, interest: interest, trigger: trigger)
    }
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try inner.reregister(fd, token: token, interest: interest, trigger: trigger)
    }
    func deregister(_ fd: CInt) throws(PollerError) {
        try inner.deregister(fd)
        deregistered.insert(fd)
    }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        try inner.wait(into: events, timeout: timeout)
    }
    func close() throws(PollerError) { try inner.close() }
}

/// A set of numbers behind a lock.
private final class ReadinessLockedSet: @unchecked Sendable {
    private let lock = NSLock()
    private var numbers: Set<CInt> = []
    func insert(_ fd: CInt) { lock.lock(); numbers.insert(fd); lock.unlock() }
    func contains(_ fd: CInt) -> Bool { lock.lock(); defer { lock.unlock() }; return numbers.contains(fd) }
}
