import Glibc
@_spi(Backend) import Readiness
import ReadinessConformance
import Synchronization
import Testing

/// io_uring only: what the shared scenarios (which run it like every backend) cannot say.
@Suite("io_uring")
struct IOUringTests {
    static let usable = Backend.ioUring.probe() == nil

    @Test("setup failures name the kernel fact: ENOSYS, io_uring_disabled, seccomp")
    func setupFailureReasons() {
        #expect(IOUringSeam.setupFailure(errno: ENOSYS, disabled: -1).contains("no io_uring"))
        #expect(IOUringSeam.setupFailure(errno: EPERM, disabled: 2).contains("io_uring_disabled is 2"))
        #expect(IOUringSeam.setupFailure(errno: EPERM, disabled: 1).contains("io_uring_group"))
        #expect(IOUringSeam.setupFailure(errno: EPERM, disabled: 0).contains("seccomp"))
        #expect(IOUringSeam.setupFailure(errno: ENOMEM, disabled: 0).contains("ENOMEM"))
    }

    @Test("listed last, not the default where another backend works, with its kernel facts in the report")
    func selection() throws {
        #expect(Backend.all.last == .ioUring)
        #expect(try Backend.named("io_uring") == .ioUring)
        let report = Backend.selection(environment: [:])
        #expect(report.chosen != .ioUring)
        let entry = try #require(report.entries.first { $0.backend == .ioUring })
        guard case .skipped(let why) = entry.verdict else {
            Issue.record("io_uring should not be chosen by default")
            return
        }
        #expect(why.contains("io_uring"))
        if Self.usable {
            #expect(why.contains("features") && why.contains("io_uring_disabled="))
        } else {
            #expect(why.hasPrefix("unavailable: "))
        }
    }

    /// `readiness backends --json` run under strace's fault injection (`-e inject=SYSCALL:error=E`):
    /// the io_uring row, as the tool prints it.
    static func backendsRowUnderInjection(_ injection: String) throws -> String {
        var path = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &path, path.count - 1)
        guard n > 0 else { throw TestFailure("readlink /proc/self/exe") }
        let exe = String(decoding: path[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let tool = "/" + exe.split(separator: "/").dropLast().joined(separator: "/") + "/readiness"
        guard access(tool, X_OK) == 0 else { throw TestFailure("no readiness tool at \(tool)") }
        // LeakSanitizer cannot run under ptrace: off for the traced tool in sanitizer builds.
        guard let pipe = popen("ASAN_OPTIONS=detect_leaks=0 strace -f -qq -o /dev/null -e inject=\(injection) '\(tool)' backends --json", "r") else {
            throw TestFailure("popen")
        }
        var output = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, CInt(buffer.count), pipe) != nil {
            output += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        pclose(pipe)
        guard let row = output.split(separator: "},{").map(String.init).first(where: { $0.contains("\"name\":\"io_uring\"") }) else {
            throw TestFailure("no io_uring row in: \(output)")
        }
        return row
    }

    /// strace is installed and may trace here (ptrace can be refused in containers).
    static let canInject = usable && access("/usr/bin/strace", X_OK) == 0
        && system("strace -qq -o /dev/null -e inject=io_uring_setup:error=EPERM true >/dev/null 2>&1") == 0

    @Test("a kernel that refuses io_uring is skipped with the reason (faults injected with strace)",
          .enabled(if: canInject))
    func skippedWithReason() throws {
        // io_uring_setup refused, as seccomp does: no ring at all.
        let setup = try Self.backendsRowUnderInjection("io_uring_setup:error=EPERM")
        #expect(setup.contains("\"available\":false"))
        #expect(setup.contains("seccomp"))
        // The ring is made but io_uring_enter is refused: only the start-up self-test finds it.
        let enter = try Self.backendsRowUnderInjection("io_uring_enter:error=EPERM")
        #expect(enter.contains("\"available\":false"))
        #expect(enter.contains("self-test"))
        let nosys = try Self.backendsRowUnderInjection("io_uring_setup:error=ENOSYS")
        #expect(nosys.contains("ENOSYS") && nosys.contains("no io_uring"))
    }

    @Test("the start-up self-test passes where a ring can be made", .enabled(if: usable))
    func selfTest() throws {
        #expect(Backend.ioUring.probe() == nil)
        #expect(Backend.available.last == .ioUring)
    }

    @Test("deregister then close: the peer sees the close at once (the request is cancelled, not kept)", .enabled(if: usable))
    func deregisterReleasesFile() throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[0]) }
        try poller.register(fds[1], token: 1, interest: .readable)
        try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
        try poller.deregister(fds[1])
        close(fds[1])
        var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 1000) == 1)
        #expect(entry.revents & Int16(POLLHUP) != 0)
    }

    /// liburing poll-cancel under load: on a ring that defers completions to its thread (6.13+: run 20
    /// at a time, oldest first), a cancel's completion waits behind the wake-ups that came before it.
    /// Before: with 100 wake-ups queued, deregister returned with the request still holding the file,
    /// and the peer saw no hang-up after the close.
    @Test("deregister then close releases the file at once with a hundred deferred completions queued", .enabled(if: usable))
    func deregisterReleasesFileUnderBacklog() throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var pairs: [[CInt]] = []
        defer { for pair in pairs { close(pair[0]); if pair[1] >= 0 { close(pair[1]) } } }
        for token in 0..<100 {
            var fds: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            pairs.append(fds)
            try poller.register(fds[1], token: Token(UInt64(token)), interest: .readable)
        }
        try poller.wait(into: EventBuffer(capacity: 256), timeout: .zero)   // every poll request armed
        var byte: UInt8 = 1
        for pair in pairs { _ = write(pair[0], &byte, 1) }                  // 100 deferred wake-ups
        let last = pairs.count - 1
        try poller.deregister(pairs[last][1])
        close(pairs[last][1])
        pairs[last][1] = -1
        var entry = pollfd(fd: pairs[last][0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 100) == 1 && entry.revents & Int16(POLLHUP) != 0, "the peer saw no hang-up: the file is still held")
    }

    /// A child forked without exec holds the ring (its copy of the descriptor): before, the parent's
    /// close() only closed its own descriptor, so the ring's poll requests went on holding the files.
    @Test("close() with a forked child alive cancels the requests: the parent's closed socket looks closed to its peer (review)", .enabled(if: usable))
    func closeWithForkedChild() throws {
        let poller = try IOUringSeam.makePoller()
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[0]) }
        try poller.register(fds[1], token: 1, interest: .readable)
        try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
        let child = fork()
        if child == 0 {
            close(fds[0]); close(fds[1])   // the child lets go of the sockets, not of the ring
            usleep(3_000_000)
            _exit(0)
        }
        #expect(child > 0)
        defer { kill(child, SIGKILL); var status: CInt = 0; waitpid(child, &status, 0) }
        try poller.close()
        close(fds[1])
        var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 500) == 1 && entry.revents & Int16(POLLHUP) != 0, "the ring the child holds still holds the file")
    }

    /// liburing poll-cancel: a POLL_REMOVE racing a wake-up fails with EALREADY and the poll (and its
    /// file) stays until a later wait sends it again; an ASYNC_CANCEL marks it cancelled regardless.
    @Test("deregister then close while a peer keeps writing: the peer sees the close at once, every time (review)", .enabled(if: usable))
    func deregisterUnderConcurrentWrites() async throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var held = 0
        for _ in 0..<200 {
            var fds: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            try poller.register(fds[1], token: 1, interest: .readable)
            try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
            let writer = fds[0]
            let stop = StopFlag()
            let writing = Thread { () in
                var byte: UInt8 = 1
                while !stop.isSet { _ = send(writer, &byte, 1, CInt(MSG_NOSIGNAL)) }
            }
            usleep(50)
            try poller.deregister(fds[1])
            close(fds[1])
            var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            if !(poll(&entry, 1, 20) >= 1 && entry.revents & Int16(POLLHUP) != 0) { held += 1 }
            stop.set()
            writing.join()
            close(fds[0])
        }
        #expect(held == 0, "\(held) of 200 closes not seen by the peer")
    }

    @Test("closed while registered: its own events are dropped; the file is released by deregister", .enabled(if: usable))
    func closedWhileRegistered() throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[0]) }
        let events = EventBuffer(capacity: 4)
        try poller.register(fds[1], token: 1, interest: .readable)
        #expect(try poller.wait(into: events, timeout: .zero) == 0)
        close(fds[1])
        // The poll request holds the file: its peer writes to it and it fires, but the re-check
        // (POLLNVAL) drops the event of a descriptor that is closed.
        var byte: UInt8 = 1
        #expect(write(fds[0], &byte, 1) == 1)
        #expect(try poller.wait(into: events, timeout: .milliseconds(30)) == 0)
        try poller.deregister(fds[1])
        var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 1000) == 1)
        #expect(entry.revents & Int16(POLLHUP) != 0)
    }

    @Test("more ready descriptors than the buffer: none lost, none reported stale, each trigger", .enabled(if: usable),
          arguments: [Trigger.level, .oneShot, .edge])
    func overflow(trigger: Trigger) throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for index in 0..<40 {
            var fds: [CInt] = [-1, -1]
            #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            pairs.append((fds[0], fds[1]))
            try poller.register(fds[0], token: Token(UInt64(index)), interest: .readable, trigger: trigger)
            var byte: UInt8 = 1
            #expect(write(fds[1], &byte, 1) == 1)
        }
        let small = EventBuffer(capacity: 7)
        #expect(try poller.wait(into: small, timeout: .seconds(1)) == 7)
        var seen = Set(small.map(\.token.rawValue))
        // Drain the even ones that were not reported yet: their kept completions are stale now.
        var buffer = [UInt8](repeating: 0, count: 16)
        for (index, pair) in pairs.enumerated() where index % 2 == 0 && !seen.contains(UInt64(index)) {
            _ = read(pair.0, &buffer, buffer.count)
        }
        let drained = Set((0..<40).filter { $0 % 2 == 0 }.map(UInt64.init)).subtracting(seen)
        for _ in 0..<20 {
            try poller.wait(into: small, timeout: .milliseconds(20))
            for event in small {
                #expect(!drained.contains(event.token.rawValue), "token \(event.token) was drained before it was reported")
                #expect(event.ready == .readable)
                if trigger != .level { #expect(!seen.contains(event.token.rawValue), "token \(event.token) twice") }
                seen.insert(event.token.rawValue)
            }
        }
        #expect(seen.union(drained) == Set(0..<40))
    }

    @Test("more completions than the completion ring holds (4096): none lost", .enabled(if: usable))
    func completionRingOverflow() throws {
        let poller = try IOUringSeam.makePoller()
        defer { try? poller.close() }
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        let count = 5000
        for index in 0..<count {
            var fds: [CInt] = [-1, -1]
            guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
                Issue.record("socketpair: \(errno) after \(index) pairs")
                return
            }
            pairs.append((fds[0], fds[1]))
            try poller.register(fds[0], token: Token(UInt64(index)), interest: .readable, trigger: index % 2 == 0 ? .level : .oneShot)
        }
        // Every registration's request is submitted with this wait (the submission ring holds 256).
        let events = EventBuffer(capacity: 64)
        #expect(try poller.wait(into: events, timeout: .zero) == 0)
        var byte: UInt8 = 1
        for (_, b) in pairs { _ = write(b, &byte, 1) }
        var seen = Set<UInt64>()
        for _ in 0..<400 where seen.count < count {
            try poller.wait(into: events, timeout: .milliseconds(100))
            for event in events { seen.insert(event.token.rawValue) }
        }
        #expect(seen.count == count)
    }

    /// Whether `script` closes an endpoint while it may be registered: the one place io_uring differs,
    /// because its poll request holds the file, so the close reaches the peer only at deregister
    /// (Docs/Contract.md, "A descriptor closed while registered").
    static func closesWhileRegistered(_ script: [Step]) -> Bool {
        var registered = Set<String>()
        for step in script {
            switch step {
            case .register(let e, _, _, _): registered.insert(e)
            case .deregister(let e): registered.remove(e)
            case .close(let e) where registered.contains(e): return true
            default: break
            }
        }
        return false
    }

    @Test("random scripts observe the same on io_uring as on epoll", .enabled(if: usable), arguments: 0..<4)
    func differential(batch: Int) {
        let contenders = [Backend.epoll, .ioUring].map { backend in Differential.Contender(name: backend.name) { try backend.makePoller() } }
        for seed in UInt64(batch * 50)..<UInt64(batch * 50 + 50) {
            if let failure = Differential.check(seed: seed, length: 30, contenders: contenders) {
                Issue.record("\(failure)")
                return
            }
        }
    }

    @Test("closeReleasesFile is false for a reason: scripts that close a registered descriptor differ, and only those",
          .enabled(if: usable))
    func closeKeepsFileOpen() throws {
        let poller = try Backend.ioUring.makePoller()
        #expect(!poller.capabilities.closeReleasesFile)
        try poller.close()
        var differing = 0
        for seed in UInt64(0)..<200 {
            let steps = Differential.script(seed: seed, length: 30)
            let scenario = Scenario("close-kept", checks: "untransformed random script",
                                    fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .pipe(read: "r", write: "w")],
                                    steps.map { ScriptLine($0) })
            let epoll = Conformance.record(scenario, backend: "epoll") { try Backend.epoll.makePoller() }
            let uring = Conformance.record(scenario, backend: "io_uring") { try Backend.ioUring.makePoller() }
            guard let diff = Conformance.compare(epoll, uring, visible: Visibility(EpollSeam.baseCapabilities)) else { continue }
            differing += 1
            if !Self.closesWhileRegistered(steps) { Issue.record("seed \(seed) differs without a close while registered: \(diff)") }
        }
        #expect(differing > 0, "no script showed the kept file: is closeReleasesFile still false on this kernel?")
    }

    @Test("the paths of older kernels pass every scenario and the differential scripts too", .enabled(if: usable),
          arguments: [IOUringSeam.Features([]), [.multishot], [.deferredCompletions]])
    func olderKernels(features: IOUringSeam.Features) throws {
        let probe = try IOUringSeam.makePoller(allowing: features)
        #expect(probe.seam.features == features)
        #expect(probe.capabilities.edgeTriggered == features.contains(.multishot))
        try probe.close()
        let name = "io_uring\(features.rawValue)"
        let report = Conformance.run(backend: name, scenarios: Conformance.scenarios) { try IOUringSeam.makePoller(allowing: features) }
        for failure in report.failures { Issue.record("\(failure)") }
        let contenders = [Differential.Contender(name: "epoll") { try Backend.epoll.makePoller() },
                          Differential.Contender(name: name) { try IOUringSeam.makePoller(allowing: features) }]
        for seed in UInt64(0)..<200 {
            if let failure = Differential.check(seed: seed, length: 30, contenders: contenders) {
                Issue.record("\(failure)")
                return
            }
        }
    }

    @Test("edge and one-shot scripts observe the same on io_uring as on epoll", .enabled(if: usable), arguments: 0..<4)
    func edgeDifferential(batch: Int) {
        let fixtures: [Fixture] = [.socketPair("a", "b"), .socketPair("c", "d")]
        for seed in UInt64(batch * 100)..<UInt64(batch * 100 + 100) {
            var random = SplitMix64(seed: seed)
            func pick<T>(_ choices: [T]) -> T { choices[Int(random.next() % UInt64(choices.count))] }
            var steps: [Step] = []
            for _ in 0..<24 {
                let e = pick(["a", "c"])
                switch random.next() % 8 {
                case 0: steps.append(.register(e, token: 1 + random.next() % 3, interest: pick([.readable, .writable, .both]), trigger: pick([.edge, .edge, .oneShot])))
                case 1: steps.append(.reregister(e, token: 1 + random.next() % 3, interest: pick([.readable, .writable, .both]), trigger: pick([.edge, .oneShot])))
                case 2: steps.append(.write(pick(["b", "d"]), bytes: 1))
                case 3: steps.append(.drain(e))
                case 4: steps.append(.fill(e))
                case 5: steps.append(.drain(pick(["b", "d"])))
                default: steps.append(.wait(timeout: .zero))
                }
            }
            steps.append(.wait(timeout: .zero))
            let scenario = Scenario("edge-differential", checks: "random edge script", fixtures: fixtures, steps.map { ScriptLine($0) })
            let epoll = Conformance.record(scenario, backend: "epoll") { try Backend.epoll.makePoller() }
            let uring = Conformance.record(scenario, backend: "io_uring") { try Backend.ioUring.makePoller() }
            let visible = Visibility(EpollSeam.baseCapabilities)
            if let diff = Conformance.compare(epoll, uring, visible: visible) {
                Issue.record("seed \(seed): \(diff)\n\(steps.map(\.description).joined(separator: "\n"))")
                return
            }
        }
    }
}

@Suite("io_uring threads")
struct IOUringThreadTests {
    /// Runs `body` on a new thread and waits for it.
    static func onAnotherThread(_ body: @escaping @Sendable () -> Void) {
        spawn(body)()
    }

    @Test("rule 8 (review): a registered number closed, then taken by the poller's own new ring (a wait from another thread), is badDescriptor to reregister, not watched by the ring itself",
          .enabled(if: IOUringTests.usable))
    func reregisterNumberTakenByTheRing() throws {
        final class Shared: @unchecked Sendable {
            let poller: IOUringPoller
            var failure: String?
            init() throws { poller = try IOUringSeam.makePoller() }
        }
        let shared = try Shared()
        defer { try? shared.poller.close() }
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[1]) }
        let number = fds[0]
        try shared.poller.register(number, token: 1, interest: .readable)
        try shared.poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
        close(number)
        // Fill every lower free number, so that the next descriptor made is `number`.
        var fillers: [CInt] = []
        defer { for fd in fillers { close(fd) } }
        while true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd == number { close(fd); break }
            guard fd >= 0, fd < number else { if fd >= 0 { close(fd) }; break }
            fillers.append(fd)
        }
        // A wait from another thread moves the poller to a new ring, which gets the freed number.
        Self.onAnotherThread {
            do { try shared.poller.wait(into: EventBuffer(capacity: 4), timeout: .zero) } catch { shared.failure = "\(error)" }
        }
        #expect(shared.failure == nil)
        guard shared.poller.seam.ownsDescriptor(number) else {
            Issue.record("the new ring did not get \(number): the scenario did not happen")
            return
        }
        #expect(throws: PollerError.badDescriptor(number)) {
            try shared.poller.reregister(number, token: 2, interest: [.readable, .writable])
        }
        try shared.poller.deregister(number)
    }

    @Test("a poller that changes threads keeps its registrations (the ring has one submitting thread)",
          .enabled(if: IOUringTests.usable))
    func changesThreads() throws {
        final class Shared: @unchecked Sendable {
            let poller: IOUringPoller
            var fds: [CInt] = [-1, -1]
            var seen: [Event] = []
            var failure: String?
            init() throws { poller = try IOUringSeam.makePoller() }
        }
        let shared = try Shared()
        defer { try? shared.poller.close() }
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &shared.fds) == 0)
        defer { close(shared.fds[0]) }
        let events = EventBuffer(capacity: 4)
        try shared.poller.register(shared.fds[1], token: 1, interest: .readable)
        #expect(try shared.poller.wait(into: events, timeout: .zero) == 0)
        var byte: UInt8 = 1
        #expect(write(shared.fds[0], &byte, 1) == 1)
        Self.onAnotherThread {
            do {
                let events = EventBuffer(capacity: 4)
                try shared.poller.wait(into: events, timeout: .seconds(1))
                shared.seen = Array(events)
                try shared.poller.deregister(shared.fds[1])
                close(shared.fds[1])
            } catch {
                shared.failure = "\(error)"
            }
        }
        #expect(shared.failure == nil)
        #expect(shared.seen == [Event(token: 1, ready: .readable)])
        var entry = pollfd(fd: shared.fds[0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 1000) == 1)
        #expect(entry.revents & Int16(POLLHUP) != 0)
        // And back on this thread: a new registration works.
        var other: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &other) == 0)
        defer { close(other[0]); close(other[1]) }
        try shared.poller.register(other[0], token: 2, interest: .readable)
        #expect(write(other[1], &byte, 1) == 1)
        #expect(try shared.poller.wait(into: events, timeout: .seconds(1)) == 1)
        #expect(Array(events) == [Event(token: 2, ready: .readable)])
        // A deregister is the first call on another thread: its cancel moves to a new ring, and the
        // file is released all the same.
        var third: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &third) == 0)
        defer { close(third[1]) }
        try shared.poller.register(third[0], token: 3, interest: .readable)
        try shared.poller.wait(into: events, timeout: .zero)
        #expect(events.allSatisfy { $0.token != 3 })
        let number = third[0]
        Self.onAnotherThread {
            do {
                try shared.poller.deregister(number)
            } catch {
                shared.failure = "\(error)"
            }
        }
        #expect(shared.failure == nil)
        close(third[0])
        entry = pollfd(fd: third[1], events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 1000) == 1)
        #expect(entry.revents & Int16(POLLHUP) != 0)
        #expect(try shared.poller.wait(into: events, timeout: .zero) == 1)  // other[0] is still readable
        #expect(Array(events) == [Event(token: 2, ready: .readable)])
    }
}

extension IOUringTests {
    /// liburing's `cq_ring_needs_flush` (IORING_SQ_CQ_OVERFLOW): more than the completion queue's 4,096
    /// ready at once overflow into the kernel's list, which a wait must flush to fill the caller's
    /// buffer (the contract's "a wait fills the buffer"). Before: a wait of one-shot registrations, or
    /// on a ring without deferred completions, reported about 4,096 of 9,984.
    @Test("a wait with more ready than the completion queue holds fills the buffer (overflow flushed)", .enabled(if: usable),
          arguments: [IOUringSeam.Features.all, [], [.multishot]], [Trigger.level, .oneShot])
    func overflowFlushed(features: IOUringSeam.Features, trigger: Trigger) throws {
        let poller = try IOUringSeam.makePoller(allowing: features)
        defer { try? poller.close() }
        let pairCount = 4_992 / max(1, loadDivisor)
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for index in 0..<pairCount {
            let pair = try socketPair()
            pairs.append(pair)
            try poller.register(pair.0, token: Token(UInt64(2 * index)), interest: .writable, trigger: trigger)
            try poller.register(pair.1, token: Token(UInt64(2 * index + 1)), interest: .writable, trigger: trigger)
        }
        let events = EventBuffer(capacity: pairCount * 4)
        try poller.wait(into: events, timeout: .seconds(1))
        #expect(events.count == pairCount * 2, "\(events.count) of \(pairCount * 2) ready descriptors reported in one wait")
    }
}
