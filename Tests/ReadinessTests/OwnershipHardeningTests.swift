import Glibc
@_spi(Backend) import Readiness
import Testing

/// What an outside review found (each test failed, or aborted the process, before its fix): a poller's
/// own descriptors, a select-based libevent at high descriptor numbers, libevent's close, caller
/// numbers `Bytes` trapped on, signals lost to a full pipe or kept by a forked child, Unix-domain group
/// listeners, a listener registered twice, the empty address as a destination, and a connect that
/// spun on a dead socket.
@Suite("Ownership and hardening (review)", .serialized)
struct OwnershipHardeningTests {
    /// The descriptors open now, by number.
    static func openDescriptors() -> Set<CInt> {
        var found: Set<CInt> = []
        guard let dir = opendir("/proc/self/fd") else { return found }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = CInt(name), fd != dirfd(dir) { found.insert(fd) }   // not the listing's own
        }
        return found
    }

    @Test("registering the poller's own descriptors (its waker; epoll's and io_uring's kernel objects) is alreadyRegistered, and wake-ups still work",
          arguments: backends)
    func ownDescriptors(backend: Backend) throws {
        warmUp(backend)
        let before = Self.openDescriptors()
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        // libevent's own descriptors too (its epoll method's set and timerfd; before, they were left
        // out here, and registering the timerfd writable, or registering then deregistering it,
        // left every later timed wait hanging: outside reader).
        // libevent's signal pipe is not refused (Contract.md, rule 7: no event of libevent's is on it).
        let own = Array(Self.openDescriptors().subtracting(before)).filter { fd in
            var st = stat()
            return !(backend.name.hasPrefix("libevent") && fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        }
        #expect(own.contains(poller.waker.fd))
        for fd in own {
            #expect(throws: PollerError.alreadyRegistered(fd)) { try poller.register(fd, token: Token(7), interest: .writable) }
            #expect(throws: PollerError.notRegistered(fd)) { try poller.deregister(fd) }
        }
        let events = EventBuffer(capacity: 8)
        try poller.wakeup()
        #expect(try poller.wait(into: events, timeout: .seconds(5)) == 1)
        #expect(events.first?.token == .waker)
        // Drained: nothing left to report (a registration that took the waker's place would spin here).
        #expect(try poller.wait(into: events, timeout: .zero) == 0)
        // And a timed wait still ends at its time (libevent's timer intact).
        let began = ContinuousClock.now
        #expect(try poller.wait(into: events, timeout: .milliseconds(20)) == 0)
        #expect(ContinuousClock.now - began < .seconds(2), "\(backend)")
    }

    @Test("close() releases every descriptor the poller opened (libevent's base included), before the poller is released",
          arguments: backends)
    func closeReleases(backend: Backend) throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let poller = try backend.makePoller()
        try poller.close()
        #expect(openDescriptorCount() == before, "\(backend): \(descriptorTargets())")
        withExtendedLifetime(poller) {}
    }

    @Test("with 1,100 descriptors open, a select-based poller (select, libevent:select) is refused (descriptorTooLarge: its waker), never an abort; the others start")
    func highWaker() throws {
        var held: [CInt] = []
        defer { for fd in held { close(fd) } }
        while held.last.map({ $0 < 1100 }) ?? true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw TestFailure("open: \(errno)") }
            held.append(fd)
        }
        for backend in Backend.available {
            let selectBased = backend == .select || backend == .libevent(.select)
            do {
                let poller = try backend.makePoller()
                #expect(!selectBased, "\(backend) started with its waker at or above FD_SETSIZE")
                try poller.close()
            } catch {
                // The waker's number, over select's limit (stop 35: `.unavailable` before, which the
                // probe kept for the process's life).
                guard case .descriptorTooLarge(let fd, limit: 1_024) = error, fd >= 1_024 else {
                    Issue.record("\(backend): \(error)")
                    continue
                }
                #expect(selectBased, "\(backend): \(error)")
            }
        }
    }

    /// A sequence that claims far more elements than it has (its estimate is a caller's number).
    struct Boasting: Sequence {
        var underestimatedCount: Int { 1 << 40 }
        func makeIterator() -> IndexingIterator<[UInt8]> { [1, 2, 3].makeIterator() }
    }

    @Test("Bytes: a room or an estimate that cannot be allocated is not a trap; shared bytes are never written")
    func bytesHugeRoom() {
        var bytes = Bytes()
        bytes.append(contentsOf: Boasting())
        #expect(Array(bytes) == [1, 2, 3])
        bytes.append(addingCapacity: 1 << 40) { output in
            if output.freeCapacity > 0 { output.append(UInt8(4)) }
        }
        #expect(Array(bytes.prefix(3)) == [1, 2, 3])
        bytes.append(addingCapacity: Int.max) { _ in }
        let copy = bytes
        var changed = bytes
        changed.append(addingCapacity: Int.max) { output in
            #expect(output.freeCapacity == 0)   // shared storage: no room is lent
        }
        #expect(Array(copy) == Array(bytes))
    }

    @Test("signals: a delivery the full pipe refuses is kept as its kind: SIGUSR2 after 70,000 SIGUSR1s is drained")
    func fullSignalPipe() throws {
        var saved1 = sigaction(), saved2 = sigaction()
        sigaction(SIGUSR1, nil, &saved1)
        sigaction(SIGUSR2, nil, &saved2)
        defer { sigaction(SIGUSR1, &saved1, nil); sigaction(SIGUSR2, &saved2, nil) }
        let subscription = try SignalSubscription([.user1, .user2])
        defer { subscription.close() }
        // raise() delivers to the calling thread at once: a thread of ours with both signals unblocked.
        let raiser = Thread {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            sigaddset(&set, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            for _ in 0..<70_000 { raise(SIGUSR1) }
            raise(SIGUSR2)
        }
        raiser.join()
        let got = subscription.drain()
        #expect(got.contains(.user2))
        #expect(got.filter { $0 == .user1 }.count >= 60_000)
        #expect(subscription.drain().isEmpty)
    }

    @Test("signals: a child made by fork gets back the action a watched signal had before (a forked worker's SIGTERM ends it)")
    func forkRestoresActions() throws {
        var saved = sigaction()
        sigaction(SIGUSR1, nil, &saved)
        defer { sigaction(SIGUSR1, &saved, nil) }
        signal(SIGUSR1, SIG_IGN)
        let subscription = try SignalSubscription([.user1])
        defer { subscription.close() }
        var current = sigaction()
        sigaction(SIGUSR1, nil, &current)
        #expect(unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) > 1)   // ours in the parent
        let child = fork()
        if child == 0 {
            // The child: only async-signal-safe calls. 0: SIG_IGN is back; 1: it is not.
            var inChild = sigaction()
            sigaction(SIGUSR1, nil, &inChild)
            _exit(unsafeBitCast(inChild.__sigaction_handler.sa_handler, to: Int.self) == 1 ? 0 : 1)
        }
        #expect(child > 0)
        var status: CInt = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        #expect(status == 0, "the forked child kept the package's handler (status \(status))")
    }

    @Test("a group of two loops refuses a Unix-domain listener up front (invalidArgument), binding nothing", arguments: backends)
    func groupUnixListen(backend: Backend) async throws {
        let group = try EventLoopGroup(count: 2) { () throws(PollerError) -> any Poller in try backend.makePoller() }
        defer { group.syncShutdown() }
        let path = "/tmp/readiness-group-\(getpid()).sock"
        do {
            _ = try await group.listen(on: try SocketAddress(unixPath: path))
            Issue.record("a Unix-domain listener on two loops was accepted")
        } catch {
            guard case .invalidArgument? = error as? LoopError else { Issue.record("\(error)"); return }
        }
        #expect(access(path, F_OK) != 0)
    }

    @Test("a Listener registered once: a second register is alreadyRegistered; deregister, then another poller takes it",
          arguments: backends)
    func listenerRegisteredOnce(backend: Backend) throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let first = try backend.makePoller(), second = try backend.makePoller()
        defer { try? first.close(); try? second.close() }
        try listener.register(on: first, token: Token(1))
        #expect(throws: PollerError.alreadyRegistered(listener.fd)) { try listener.register(on: second, token: Token(2)) }
        try listener.deregister()
        try listener.deregister()   // idempotent, as a socket's (stop 35: notRegistered before)
        #expect(throws: PollerError.notRegistered(listener.fd)) { try first.deregister(listener.fd) }
        try listener.register(on: second, token: Token(2))
    }

    @Test("the empty address (SocketAddress()) is no destination: send, connect and a batch's append refuse it")
    func emptyDestination() throws {
        let socket = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { socket.close() }
        // Before: sendto with an address length of 0 (EDESTADDRREQ: notConnected; a connected socket
        // would have sent to its peer).
        #expect { _ = try socket.send([1, 2, 3], to: SocketAddress()) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        #expect { try socket.connect(to: SocketAddress()) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        let batch = try DatagramBatch(capacity: 2, slotSize: 16)
        #expect(throws: SocketError.self) { try batch.append([1], to: SocketAddress()) }
        #expect(batch.count == 0)
    }

    @Test("connect rule 6: ENOTCONN after SO_ERROR 0 on a wake-up that said hang-up fails (ECONNRESET) instead of waiting again")
    func deadConnect() throws {
        let tcp = try SocketAddress("127.0.0.1:80")
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        #expect(m.handle(.woke([.writable, .hangup])) == .readSocketError)
        #expect(m.handle(.socketError(.value(0))) == .readAddresses)
        #expect(m.handle(.addresses(peerErrno: ENOTCONN, local: nil, peer: nil))
            == .fail(ConnectError(errno: ECONNRESET, address: tcp), deregister: true))
    }
}
