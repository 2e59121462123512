import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 43.
@Suite("Peer scenarios 15", .serialized)
struct PeerScenarioTests15 {
    // MARK: Groups (the SwiftNIO reader: testEventLoopThreadName, System.coreCount)

    /// The loops of a group are told apart in `ps -L`, `top -H`, gdb and perf. Before, the default
    /// name, `readiness-loop` (14 bytes), left no room for the index in the kernel's 15 bytes: every
    /// loop of every group was `readiness-loop-`.
    @Test("a group's loop threads have distinct names, the index kept when the name is cut")
    func groupThreadNames() async throws {
        let group = try EventLoopGroup(backend: .epoll, count: 3)
        var names: [String] = []
        for loop in group.loops { names.append(try await threadName(of: loop)) }
        await group.shutdown()
        #expect(names == ["readiness-loo-0", "readiness-loo-1", "readiness-loo-2"], "\(names)")
        for (name, expected) in [("readiness-loop-12", "readiness-lo-12"), ("a-very-long-loop-name-1023", "a-very-lon-1023"),
                                 ("eventloop-------7", "eventloop-7"), ("ααααααααα-3", "αααααα-3"),
                                 ("x-123456789012345", "x-1234567890123"), ("-12345678901234567", "-12345678901234"),
                                 ("loop-1", "loop-1"), ("a\u{0}b-2", "a")] {
            let loop = try EventLoop(name: name, makePoller: { () throws(PollerError) -> any Poller in try Backend.epoll.makePoller() })
            #expect(try await threadName(of: loop) == expected, "\(name)")
            await loop.shutdown()
        }
    }

    /// The default number of loops counts the CPUs the process may run on. Before, it counted the
    /// online CPUs: under `taskset -c 0` (or a container's cpuset) a group started a loop per CPU of
    /// the machine.
    @Test("the core count follows the affinity mask and the cgroup's CPU quota",
          .enabled(if: access("/usr/bin/taskset", X_OK) == 0, "taskset (util-linux) is not installed"))
    func coreCountFollowsAffinity() throws {
        let online = Int(sysconf(CInt(_SC_NPROCESSORS_ONLN)))
        #expect(EventLoopGroup.coreCount >= 1 && EventLoopGroup.coreCount <= online)
        // On a thread of its own, whose mask `taskset` narrows to one CPU (the thread then ends).
        let narrowed = Mutex<Result<Int, TestFailure>>(.failure(TestFailure("not run")))
        spawn {
            var link = [CChar](repeating: 0, count: 128)
            let length = readlink("/proc/thread-self", &link, link.count - 1)
            guard length > 0, let tid = String(decoding: link[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .split(separator: "/").last.map(String.init) else { return }
            // The lowest CPU the thread may use (CPU 0 may be outside a container's cpuset).
            let status = (try? read("/proc/thread-self/status")) ?? ""
            let allowed = status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
            let cpu = allowed.flatMap { line in
                line.dropFirst("Cpus_allowed_list:".count).drop { $0 == "\t" || $0 == " " }.prefix { $0.isNumber }
            }.map(String.init) ?? "0"
            guard let child = try? Child(["/usr/bin/taskset", "-pc", cpu, tid]), child.wait(seconds: 10) == 0 else {
                narrowed.withLock { $0 = .failure(TestFailure("taskset -pc \(cpu) \(tid) failed")) }
                return
            }
            let count = EventLoopGroup.coreCount
            narrowed.withLock { $0 = .success(count) }
        }()
        #expect(try narrowed.withLock { try $0.get() } == 1)

        #expect(EventLoopGroup.cpuQuota(cgroup2: "max 100000\n") == nil)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "150000 100000\n") == 2)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "100000 100000") == 1)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "50000 100000\n") == 1)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "") == nil)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "100000 0\n") == nil)
        #expect(EventLoopGroup.cpuQuota(cgroup2: "\(Int.max) 1\n") == Int.max)
        #expect(EventLoopGroup.cpuQuota(cgroup1Quota: "-1\n", period: "100000\n") == nil)
        #expect(EventLoopGroup.cpuQuota(cgroup1Quota: "250000\n", period: "100000\n") == 3)
        #expect(EventLoopGroup.cpuQuota(cgroup1Quota: "junk", period: "100000\n") == nil)
    }

    // MARK: Intervals (the tokio reader: interval.rs's poll_tick)

    /// tokio looks at a tick's lateness before its missed-tick behaviour: a tick taken at most 5 ms late
    /// is on time for all three. Before, `.skip` dropped the next tick of a 2 ms schedule whose tick
    /// was taken 2.5 ms late (ordinary jitter for periods below 5 ms).
    @Test("a tick taken within 5 ms of its time is on time for burst, delay and skip")
    func intervalToleranceForEveryBehaviour() {
        let due = Deadline(nanoseconds: 1_000_000_000)
        let period = Duration.milliseconds(2)
        for behaviour in [MissedTicks.burst, .delay, .skip] {
            for late: Int64 in [0, 2_500_000, 5_000_000] {
                let now = Deadline(nanoseconds: due.nanoseconds + late)
                let next = Interval.following(due, period: period, now: now, missedTicks: behaviour)
                #expect(next == Deadline(nanoseconds: due.nanoseconds + 2_000_000), "\(behaviour) \(late)")
            }
            // 6 ms late: past the tolerance, each behaviour its own way.
            let now = Deadline(nanoseconds: due.nanoseconds + 6_000_000)
            let next = Interval.following(due, period: period, now: now, missedTicks: behaviour)
            switch behaviour {
            case .burst: #expect(next == Deadline(nanoseconds: due.nanoseconds + 2_000_000))
            case .delay: #expect(next == Deadline(nanoseconds: now.nanoseconds + 2_000_000))
            case .skip: #expect(next == Deadline(nanoseconds: due.nanoseconds + 8_000_000))
            }
        }
    }
}

extension PeerScenarioTests15 {
    // MARK: A deregister the poller failed (the mio reader: rule 10, io_uring's ring move out of descriptors)

    /// A poller whose deregister fails while it keeps the registration (out of descriptors: io_uring
    /// moving to a new ring for another thread) is left as it was (rule 10). Before, the socket forgot
    /// the registration first: a retry did nothing, and its close left the number registered, so the
    /// next socket on that number was refused with `alreadyRegistered` and never reported.
    @Test("a deregister the poller failed and kept is retried, and close finishes it: the number registers again",
          arguments: backends)
    func failedDeregisterIsKept(backend: Backend) throws {
        let poller = DeregisterFailingPoller(try backend.makePoller())
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 8)

        // A stream socket: a failed deregister is kept, a retry does it.
        var ends: [CInt] = [-1, -1]
        try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &ends) == 0)
        let stream = try StreamSocket(adopting: ends[0])
        defer { stream.close(); close(ends[1]) }
        try stream.register(on: poller, token: 1, interest: .readable)
        poller.failures = 1
        #expect(throws: PollerError.self) { try stream.deregister() }
        try stream.deregister()
        #expect(poller.deregistered == [ends[0]])
        try stream.register(on: poller, token: 1, interest: .readable)   // registers again

        // Then its close while the poller fails: the close finishes the deregister.
        poller.failures = 1
        let number = stream.fd
        stream.close()
        #expect(poller.deregistered.last == number)
        var again: [CInt] = [-1, -1]
        try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &again) == 0)
        defer { close(again[1]) }
        let next = try StreamSocket(adopting: again[0])
        defer { next.close() }
        try next.register(on: poller, token: 2, interest: .readable)
        _ = write(again[1], "x", 1)
        try poller.wait(into: events, timeout: .seconds(2))
        #expect(events.count == 1 && events.first?.token == 2)

        // A datagram socket and a listener, the same way.
        let datagram = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        try datagram.register(on: poller, token: 3, interest: .readable)
        poller.failures = 1
        let datagramNumber = datagram.fd
        datagram.close()
        #expect(poller.deregistered.last == datagramNumber)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        try listener.register(on: poller, token: 4)
        poller.failures = 1
        #expect(throws: PollerError.self) { try listener.deregister() }
        try listener.deregister()
        try listener.register(on: poller, token: 4)
        poller.failures = 1
        let listenerNumber = listener.fd
        listener.close()
        #expect(poller.deregistered.last == listenerNumber)
        // Every registration is gone: a new socket on any of those numbers registers.
        let fresh = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { fresh.close() }
        try fresh.register(on: poller, token: 5, interest: .readable)
        let closedPoller = DeregisterFailingPoller(try backend.makePoller())
        // A poller that holds nothing any more (closed): the registration is forgotten at once.
        let other = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { other.close() }
        try other.register(on: closedPoller, token: 6, interest: .readable)
        try closedPoller.close()
        #expect(throws: PollerError.closed) { try other.deregister() }
        try other.deregister()   // forgotten: nothing to do
    }
}

extension PeerScenarioTests15 {
    /// A listener backing off whose deregister the poller failed and kept stays registered: level, it
    /// would report its queued client at every wait until `resume()` (a spin). Now it is made one-shot
    /// while backing off (one report at most), and `resume()` makes it level again.
    @Test("a listener backing off whose deregister was kept reports once at most, then level again after resume",
          arguments: backends)
    func backOffWithKeptRegistration(backend: Backend) throws {
        let poller = DeregisterFailingPoller(try backend.makePoller())
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 8)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        try listener.register(on: poller, token: 1)
        poller.failures = 1
        let client = try driveIntoBackOff(listener)
        defer { close(client) }
        #expect(listener.isBackingOff)
        var reports = 0
        for _ in 0..<5 {
            try poller.wait(into: events, timeout: .milliseconds(10))
            reports += events.count
        }
        #expect(reports <= 1, "\(reports) reports of a listener backing off")
        try listener.resume()
        for _ in 0..<2 {   // level again: the queued client is reported at every wait
            try poller.wait(into: events, timeout: .seconds(2))
            #expect(events.count == 1 && events.first?.token == 1)
        }
        guard case .accepted(let stream, _) = try listener.accept() else { throw TestFailure("expected the client") }
        stream.close()
    }
}

/// A poller of any backend whose next `failures` deregisters fail as io_uring's does out of
/// descriptors, leaving the registration in place (rule 10).
final class DeregisterFailingPoller: Poller {
    let inner: any Poller
    var failures = 0
    var deregistered: [CInt] = []
    init(_ inner: any Poller) { self.inner = inner }
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
        if failures > 0, !inner.isClosed {
            failures -= 1
            throw .resourceExhausted(operation: "io_uring_setup", errno: EMFILE)
        }
        try inner.deregister(fd)
        deregistered.append(fd)
    }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        try inner.wait(into: events, timeout: timeout)
    }
    func close() throws(PollerError) { try inner.close() }
}

/// The loop thread's name as the kernel has it.
private func threadName(of loop: EventLoop) async throws -> String {
    try await Task(executorPreference: loop) { () -> String in
        let fd = open("/proc/thread-self/comm", O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &bytes, bytes.count)
        var name = Array(bytes[..<max(0, n)])
        while name.last == UInt8(ascii: "\n") { name.removeLast() }
        return String(decoding: name, as: UTF8.self)
    }.value
}
