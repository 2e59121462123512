import Glibc
@_spi(Backend) import Readiness
import ReadinessConformance
import Synchronization
import Testing

private final class StopWriting: Sendable { let value = Atomic<Bool>(false) }

/// What the conformance scenarios cannot say as a script: resources, selection, data.
@Suite("Poller")
struct PollerTests {
    @Test("a poller's life leaks no descriptor", arguments: backends)
    func noDescriptorLeak(backend: Backend) throws {
        let before = openDescriptorCount()
        for _ in 0..<200 {
            let poller = try backend.makePoller()
            var fds: [CInt] = [-1, -1]
            socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds)
            try poller.register(fds[0], token: 1, interest: .readable)
            try poller.wakeup()
            try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
            try poller.close()
            close(fds[0])
            close(fds[1])
        }
        // Pollers dropped without close() release their descriptors too.
        for _ in 0..<50 { _ = try backend.makePoller() }
        #expect(openDescriptorCount() == before)
    }

    @Test("mio reregister then deregister then drop (review): with no wait between, the peer sees the close at once on every backend", arguments: backends)
    func reregisterDeregisterClose(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[0]) }
        try poller.register(fds[1], token: 1, interest: .readable)
        try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)   // the request is in the kernel
        try poller.reregister(fds[1], token: 2, interest: [.readable, .writable])
        try poller.deregister(fds[1])
        close(fds[1])
        var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        // Before, on io_uring: the old request's cancel stayed queued and held the file until the next wait.
        #expect(poll(&entry, 1, 200) == 1 && entry.revents & Int16(POLLHUP) != 0, "the file is still held on \(backend)")
    }

    /// The CPU time of the calling thread, in nanoseconds.
    static func threadCPU() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    @Test("libevent regress test_dup_fd (review): a one-shot reported through a dup after its number was closed, then deregistered, leaves no busy loop on any backend", arguments: backends)
    func oneShotThroughDupThenDeregistered(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[1]) }
        try poller.register(fds[0], token: 1, interest: [.readable, .writable], trigger: .oneShot)
        let copy = dup(fds[0])
        defer { close(copy) }
        close(fds[0])
        _ = write(fds[1], "x", 1)
        let events = EventBuffer(capacity: 8)
        try poller.wait(into: events, timeout: .milliseconds(100))
        try? poller.deregister(fds[0])
        let start = Self.threadCPU()
        for _ in 0..<3 { try poller.wait(into: events, timeout: .milliseconds(100)) }
        let spent = Self.threadCPU() - start
        // Before, on libevent:epoll: each 100 ms wait spun for all of it (libevent deleted the fired
        // event itself, ignoring the kernel's EBADF, so deregister asked nothing and saw nothing).
        #expect(spent < 60_000_000, "\(spent / 1_000_000) ms of CPU in 300 ms of waiting on \(backend)")
    }

    @Test("a lingering dup'd file after deregister costs no CPU while other traffic keeps coming (review: libevent:epoll measured only quiet passes)", arguments: backends)
    func lingeringFileUnderTraffic(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        // Made first: a registration on the closed number would rebuild libevent's set at once.
        var busy: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &busy) == 0)
        defer { close(busy[0]); close(busy[1]) }
        var lingering: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &lingering) == 0)
        defer { close(lingering[1]) }
        try poller.register(lingering[0], token: 1, interest: .writable)
        let copy = dup(lingering[0])   // keeps the file, always writable, open
        defer { close(copy) }
        close(lingering[0])
        try? poller.deregister(lingering[0])
        try poller.register(busy[0], token: 2, interest: .readable)
        let writer = busy[1]
        let stop = StopWriting()
        let traffic = Thread {
            while !stop.value.load(ordering: .relaxed) {
                _ = write(writer, "x", 1)
                usleep(2_000)
            }
        }
        defer { stop.value.store(true, ordering: .relaxed); traffic.join() }
        let events = EventBuffer(capacity: 8)
        var byte = [UInt8](repeating: 0, count: 64)
        let start = Self.threadCPU()
        let began = ContinuousClock.now
        while ContinuousClock.now - began < .milliseconds(300) {
            try poller.wait(into: events, timeout: .milliseconds(50))
            _ = read(busy[0], &byte, byte.count)
        }
        let spent = Self.threadCPU() - start
        // Before, on libevent:epoll: about 300 ms of CPU in 300 ms (each pass spun until the next byte).
        // Half of it is the bound: about 150 wake-ups by the traffic, each slower under a sanitizer.
        #expect(spent < 150_000_000, "\(spent / 1_000_000) ms of CPU in 300 ms on \(backend)")
    }

    @Test("a waker outlives its closed poller safely", arguments: backends)
    func wakerAfterClose(backend: Backend) throws {
        let poller = try backend.makePoller()
        let waker = poller.waker
        try poller.close()
        #expect(throws: PollerError.closed) { try waker.wake() }
    }

    @Test("the wait path fills the caller's buffer and stops at its capacity", arguments: backends)
    func bufferCapacity(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for index in 0..<10 {
            var fds: [CInt] = [-1, -1]
            socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds)
            pairs.append((fds[0], fds[1]))
            try poller.register(fds[0], token: Token(UInt64(index)), interest: .writable)
        }
        let small = EventBuffer(capacity: 3)
        #expect(try poller.wait(into: small, timeout: .seconds(1)) == 3)
        #expect(small.count == 3)
        let large = EventBuffer(capacity: 64)
        #expect(try poller.wait(into: large, timeout: .seconds(1)) == 10)
        #expect(Set(large.map(\.token.rawValue)) == Set(0..<10))
    }

    @Test("capabilities describe the backend", arguments: backends)
    func capabilities(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let caps = poller.capabilities
        #expect(caps.name == backend.name)
        if backend == .select || backend == .libevent(.select) {
            #expect(caps.maxDescriptor == 1023)
            #expect(!caps.edgeTriggered)
        }
        if backend == .epoll {
            #expect(caps.edgeTriggered && caps.oneShot == .native && caps.reportsReadClosed && caps.reportsHangupAndError)
        }
        switch backend.kind {
        case .libevent(let method?):
            #expect(caps.mechanism == method)
            #if Libevent
            #expect((poller as? LibeventPoller)?.seam.method == method)
            #endif
        case .libevent(nil):
            #expect(caps.mechanism == "epoll")  // libevent's own choice on Linux
        default:
            #expect(caps.mechanism == backend.name)
        }
    }
}

@Suite("Selection")
struct SelectionTests {
    @Test("every backend is available on Linux with libevent built in (io_uring where the kernel allows it); without libevent, it says why")
    func available() {
        let ioUring = Backend.ioUring.probe() == nil ? ["io_uring"] : []
        #if Libevent
        #expect(Backend.available.map(\.name) == ["epoll", "poll", "libevent", "libevent:epoll", "libevent:poll", "libevent:select", "select"] + ioUring)
        #else
        #expect(Backend.available.map(\.name) == ["epoll", "poll", "select"] + ioUring)
        for backend in Backend.all where backend.name.hasPrefix("libevent") {
            #expect(backend.probe()?.contains("not built in (trait Libevent off)") == true)
        }
        #endif
    }

    @Test("epoll is the default, and the report says why each other backend was skipped")
    func defaultChoice() throws {
        let report = Backend.selection(environment: [:])
        #expect(report.chosen == .epoll)
        #expect(report.entries.count == Backend.all.count)
        for entry in report.entries where entry.backend != .epoll {
            guard case .skipped(let why) = entry.verdict else {
                Issue.record("\(entry.backend) should be skipped")
                continue
            }
            if entry.backend.name.hasPrefix("libevent") && !Backend.libeventBuiltIn {
                #expect(why.contains("not built in (trait Libevent off)"))
            } else {
                #expect(why.contains("epoll was chosen first"))
            }
        }
    }

    @Test("the environment variable picks a backend", arguments: backends)
    func environment(backend: Backend) throws {
        let chosen = try Backend.default(environment: [Backend.environmentVariable: backend.name])
        #expect(chosen == backend)
        let poller = try Backend.makeDefaultPoller(environment: [Backend.environmentVariable: backend.name])
        #expect(poller.capabilities.name == backend.name)
        try poller.close()
    }

    @Test("an unknown name is an error listing the valid ones")
    func unknownName() {
        do {
            _ = try Backend.named("kqueue")
            Issue.record("kqueue should be unknown")
        } catch {
            #expect(error.description.contains("kqueue"))
            for backend in Backend.all { #expect(error.description.contains(backend.name)) }
        }
        #expect(throws: SelectionError.self) { try Backend.default(environment: [Backend.environmentVariable: "iouring"]) }
        let report = Backend.selection(environment: [Backend.environmentVariable: "iouring"])
        #expect(report.chosen == nil)
        #expect(report.description.contains("valid names"))
    }

    @Test("names are case-insensitive and round-trip")
    func names() throws {
        for backend in Backend.all { #expect(try Backend.named(backend.name.uppercased()) == backend) }
    }
}

@Suite("Differential")
struct DifferentialTests {
    @Test("random scripts observe the same on every backend", arguments: 0..<4)
    func randomScripts(batch: Int) {
        let contenders = backends.map { backend in Differential.Contender(name: backend.name) { try backend.makePoller() } }
        for seed in UInt64(batch * 50)..<UInt64(batch * 50 + 50) {
            if let failure = Differential.check(seed: seed, length: 30, contenders: contenders) {
                Issue.record("\(failure)")
                return
            }
        }
    }

    @Test("a seed reproduces its script")
    func reproducible() {
        #expect(Differential.script(seed: 42, length: 20) == Differential.script(seed: 42, length: 20))
        #expect(Differential.script(seed: 42, length: 20) != Differential.script(seed: 43, length: 20))
    }
}
