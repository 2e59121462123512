import CEpoll
import CReadinessCore
import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing
#if Libevent
import CLibevent
@testable import ReadinessLibevent
#endif

/// Scenarios from the peers' test suites and the outside readers of stop 50.
@Suite("Peer scenarios 19", .serialized)
struct PeerScenarioTests19 {
    // MARK: libevent's own files, told apart from another thread's (CPython test_selectors)

    #if Libevent
    /// The files libevent's base opened are found among the numbers that were free before it was made.
    /// Before, every one of those numbers open after it and not a socket was taken for libevent's: an
    /// eventfd or epoll set another thread opened at that moment too. Those files share one inode, so
    /// any eventfd, timerfd or epoll set a caller later got on that number was refused
    /// (`alreadyRegistered`) by that poller (CPython test_selectors
    /// `test_unregister_after_fd_close_and_reuse`: a reused number registers normally).
    @Test("libevent's own files are the epoll set watching its waker and that set's timerfd; another thread's eventfd, epoll set or pipe is not")
    func libeventOwnFilesAreExact() throws {
        let waker = rd_eventfd_nonblocking()
        let strangerEventfd = rd_eventfd_nonblocking()
        let strangerEpoll = rd_epoll_create()
        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        for end in pipeEnds {   // as libevent makes its signal pipe, which is not recorded (nothing of libevent's is on it)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        var strangerPipe: [CInt] = [-1, -1]   // another thread's plain pipe
        try #require(pipe(&strangerPipe) == 0)
        defer { close(strangerPipe[0]); close(strangerPipe[1]) }
        let set = rd_epoll_create()
        let timer = rd_eventfd_nonblocking()   // in the role of libevent's timerfd (the same anonymous inode)
        let all = [waker, strangerEventfd, strangerEpoll, pipeEnds[0], pipeEnds[1], set, timer]
        defer { for fd in all { close(fd) } }
        try #require(all.allSatisfy { $0 >= 0 })
        let readable = UInt32(POLLIN)
        #expect(rd_epoll_ctl(strangerEpoll, rd_EPOLL_CTL_ADD, strangerEventfd, readable, 0) == 0)   // watches something else
        #expect(rd_epoll_ctl(set, rd_EPOLL_CTL_ADD, waker, readable, 0) == 0)
        #expect(rd_epoll_ctl(set, rd_EPOLL_CTL_ADD, timer, readable, 0) == 0)
        let found = LibeventFiles.find(among: [strangerEventfd, strangerEpoll, strangerPipe[0], strangerPipe[1],
                                               pipeEnds[0], pipeEnds[1], set, timer], waker: waker)
        #expect(Set(found.map(\.fd)) == [set, timer])
        // Without the set among them, nothing (the stranger epoll set does not watch the waker).
        #expect(LibeventFiles.find(among: [strangerEventfd, strangerEpoll, timer, pipeEnds[0]], waker: waker).isEmpty)
        // The probe changed nothing: the set still watches both, the stranger only its eventfd.
        #expect(rd_lev_epoll_watches(set, waker) == 1 && rd_lev_epoll_watches(set, timer) == 1)
        #expect(rd_lev_epoll_watches(strangerEpoll, waker) == 0 && rd_lev_epoll_watches(strangerEpoll, strangerEventfd) == 1)
    }
    #endif

    /// The same through the public API: libevent pollers made while another thread opens and closes
    /// eventfds; afterwards the caller's own eventfds (on the lowest numbers, where libevent's and the
    /// other thread's were) all register. 100 rounds on each libevent backend: 10 or more refused before.
    @Test("a libevent poller made while another thread opens eventfds refuses none of the caller's eventfds (its own files stay refused: OwnershipHardeningTests.ownDescriptors)",
          .timeLimit(.minutes(1)))
    func libeventPollerAmidOtherThreadsFiles() throws {
        let libevents = Backend.available.filter { $0.name.hasPrefix("libevent") }
        guard !libevents.isEmpty else { return }
        let stop = Counter()
        let join = spawn {
            while stop.value == 0 {
                let fd = rd_eventfd_nonblocking()
                sched_yield()
                if fd >= 0 { close(fd) }
            }
        }
        defer { stop.increment(); join() }
        for round in 0..<100 {
            for backend in libevents {
                let poller = try backend.makePoller()
                defer { try? poller.close() }
                let fresh = (0..<8).map { _ in rd_eventfd_nonblocking() }
                defer { for fd in fresh where fd >= 0 { close(fd) } }
                for fd in fresh where fd >= 0 {
                    do {
                        try poller.register(fd, token: 1, interest: .readable)
                        try poller.deregister(fd)
                    } catch {
                        Issue.record("round \(round), \(backend): the caller's eventfd \(fd) refused: \(error)")
                    }
                }
            }
        }
    }
}

extension PeerScenarioTests19 {
    // MARK: A connect attempt's refused deregister (libuv test-tcp-connect-error, test-tcp-close-while-connecting)

    /// How many passes `loop` makes while the caller sleeps `duration` on it (a spin makes thousands).
    private func loopPasses(_ loop: EventLoop, during duration: Duration) async throws -> Int {
        let before = try await loop.statistics().iterations
        try await loop.sleep(for: duration)
        return try await loop.statistics().iterations - before
    }

    /// A loop whose poller refuses the next `count` deregisters.
    private func refusingLoop(_ backend: Backend) throws -> (EventLoop, RefusingDeregisterPoller) {
        let made = Locked<RefusingDeregisterPoller?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            let poller = RefusingDeregisterPoller(try backend.makePoller())
            made.withLock { $0 = poller }
            return poller
        }
        return (loop, try #require(made.withLock { $0 }))
    }

    /// The attempt registers its socket (level, writable) and lets it go when the connect ends. A
    /// refusal was forgotten (`try?`): connected, the socket's registration stayed, always writable, and
    /// woke every wait for good (a spin), and the connection's first read that waited failed with
    /// `alreadyRegistered`; failed or timed out, the closed socket's number stayed taken in the poller's
    /// table and the next connect on it (the lowest free number: the next one) failed with
    /// `.connect(.poller(alreadyRegistered))`. Now the loop keeps the refusal and asks again.
    @Test("a connect whose attempt's deregister the poller refuses: no spin, the connection waits, the next connect on the number works",
          .timeLimit(.minutes(1)), arguments: backends)
    func refusedDeregisterOfConnectAttempt(backend: Backend) async throws {
        let (loop, poller) = try refusingLoop(backend)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))   // the kernel completes the handshakes
        defer { listener.close() }
        // Connected: refused as the attempt hands the socket over, once more, and as the loop owns it.
        poller.failures.store(3, ordering: .relaxed)
        let client = try await loop.connect(to: listener.address, timeout: .seconds(2))
        let passes = try await loopPasses(loop, during: .milliseconds(100))
        #expect(passes < 30, "\(passes) loop passes in 100 ms on \(backend)")
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        do {
            _ = try await client.read(upTo: 1, timeout: .milliseconds(50))
            Issue.record("a read on \(backend) returned with nothing sent")
        } catch {
            #expect(error == .timedOut, "\(backend)")
        }
        await client.close()

        // Timed out: a full listener's connect, its attempt cancelled at its deadline with both of its
        // deregisters refused; then a connect on the number it freed.
        let (full, fullAddress, fillers) = try fullTCPListener()
        defer { close(full); for fd in fillers { close(fd) } }
        poller.failures.store(2, ordering: .relaxed)
        do {
            _ = try await loop.connect(to: fullAddress, timeout: .milliseconds(200))
            Issue.record("a connect to a full listener on \(backend) succeeded")
        } catch {
            #expect(error == .timedOut || error == .connect(ConnectError(.timedOut, address: fullAddress)), "\(backend): \(error)")
        }
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        let again = try await loop.connect(to: listener.address, timeout: .seconds(2))
        await again.close()

        // Connected and read at once, in a task on the loop (no wait of the loop in between): the
        // read's registration asks the kept deregister again first (before: `alreadyRegistered`).
        poller.failures.store(3, ordering: .relaxed)
        let address = listener.address
        let firstRead = await Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) {
                let socket = try await loop.connect(to: address, timeout: .seconds(2))
                var failure: LoopError?
                do throws(LoopError) { _ = try await socket.read(upTo: 1, timeout: .milliseconds(50)) } catch { failure = error }
                await socket.close()
                return failure
            } catch {
                return error
            }
        }.value
        #expect(firstRead == .timedOut, "\(backend)")
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        await loop.shutdown()
    }

    // MARK: The escape hatch's close or release while the poller refuses (tokio tcp_into_std, libuv uv_fileno)

    /// A socket closed or released inside `withStreamSocket`/`withDatagramSocket` deregisters through
    /// itself; a refusal it met (twice, for a close; once, for a release) was forgotten, and the loop,
    /// which believed the socket gone, never asked again: the released descriptor stayed watched under
    /// a dead token (a spin while readable) and the loop refused to wait on it or adopt it again
    /// (`alreadyRegistered`).
    @Test("a socket released in the escape hatch while the poller refuses its deregister is not left watched",
          .timeLimit(.minutes(1)), arguments: backends)
    func hatchReleaseWithRefusedDeregister(backend: Backend) async throws {
        let (loop, poller) = try refusingLoop(backend)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let client = try await loop.connect(to: listener.address, timeout: .seconds(2))
        guard case .accepted(let peer, _) = try listener.accept() else {
            Issue.record("no connection to accept on \(backend)")
            return
        }
        defer { peer.close() }
        do {
            _ = try await client.read(upTo: 1, timeout: .milliseconds(20))   // registered readable, and left so
        } catch {
            #expect(error == .timedOut)
        }
        poller.failures.store(1, ordering: .relaxed)
        let fd = try await client.withStreamSocket { (socket) throws(SocketError) in socket.release() }
        defer { close(fd) }
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        var bytes: [UInt8] = [1, 2, 3]
        #expect(send(peer.fd, &bytes, 3, CInt(MSG_NOSIGNAL)) == 3)   // the released descriptor is readable from now on
        let passes = try await loopPasses(loop, during: .milliseconds(100))
        #expect(passes < 30, "\(passes) loop passes in 100 ms on \(backend)")
        try await loop.readable(fd, timeout: .seconds(2))   // the number can be waited on again
        await loop.shutdown()
    }
}

extension PeerScenarioTests19 {
    // MARK: A negative backlog (CPython test_socket testListenBacklog0)

    /// A negative backlog is "the longest the kernel allows", as Linux reads `listen(fd, -1)`: the
    /// network namespace's net.core.somaxconn. Before, it was the header's SOMAXCONN (4096), shorter
    /// than a raised sysctl. The listener is made on a thread of its own in a network namespace of
    /// its own (a thread's namespace is its own), whose somaxconn is raised to 8192 there only.
    @Test("a negative backlog is net.core.somaxconn, as listen(fd, -1) reads it")
    func negativeBacklogIsSysctl() throws {
        let result = Locked<String?>(nil)
        let join = spawn {
            result.withLock { $0 = Self.backlogInOwnNamespace() }
        }
        join()
        let outcome = try #require(result.withLock { $0 })
        if outcome.hasPrefix("skip") {
            print("negativeBacklogIsSysctl: \(outcome)")   // no namespace here: nothing measured
            return
        }
        #expect(outcome == "8192")
    }

    /// On the calling thread: a new network namespace, its somaxconn 8192, a listener with backlog -1
    /// on 0.0.0.0; its accept queue's limit (TCP_INFO's `tcpi_sacked` on a listener), or "skip: why".
    private static func backlogInOwnNamespace() -> String {
        // unshare(2) is not in Swift's Glibc module (it needs _GNU_SOURCE): looked up by name.
        typealias Unshare = @convention(c) (CInt) -> CInt
        let newNetworkNamespace: CInt = 0x4000_0000   // CLONE_NEWNET, <linux/sched.h>
        guard let symbol = dlsym(nil, "unshare") else { return "skip: no unshare" }   // RTLD_DEFAULT (glibc: NULL)
        let unshare = unsafeBitCast(symbol, to: Unshare.self)
        guard unshare(newNetworkNamespace) == 0 else { return "skip: unshare(CLONE_NEWNET): errno \(errno)" }
        // The sysctl files of /proc/sys/net name the opening thread's namespace.
        let written: Bool = {
            let fd = open("/proc/sys/net/core/somaxconn", O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return write(fd, "8192\n", 5) == 5
        }()
        guard written else { return "skip: cannot set net.core.somaxconn: errno \(errno)" }
        var options = Listener.Options()
        options.backlog = -1
        guard let listener = try? Listener(bind: try SocketAddress(ip: "0.0.0.0", port: 0), options: options) else {
            return "no listener"
        }
        defer { listener.close() }
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(listener.fd, CInt(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return "TCP_INFO: errno \(errno)" }
        return "\(info.tcpi_sacked)"
    }
}

extension PeerScenarioTests19 {
    // MARK: What a loop ended by its poller reports (SwiftNIO EventLoopTest testShuttingDownFailsRegistration)

    /// A loop whose poller's wait failed reports that failure (`.poller(error)`) to the operations it
    /// ends and to those asked during its shutdown (Docs/Async.md, "Misuse"). `signals` said
    /// `.shutdown`, and `capabilities` answered, during the shutdown's drain (where the tasks the
    /// shutdown resumes run) and `signals` after it too.
    @Test("during and after a poller-failure shutdown, signals() and capabilities() report the poller's failure",
          .timeLimit(.minutes(1)), arguments: backends)
    func failureReasonEverywhere(backend: Backend) async throws {
        let failing = FailingWaitPoller.Switch()
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            FailingWaitPoller(try backend.makePoller(), failing: failing)
        }
        let probe = Task(executorPreference: loop) { () async -> [LoopError?] in
            do throws(LoopError) { try await loop.sleep(for: .seconds(30)) } catch {}
            // Resumed by the shutdown: on the loop thread, in its drain.
            var signalsError: LoopError?
            do throws(LoopError) { _ = try loop.signals([.user1]) } catch { signalsError = error }
            var capabilitiesError: LoopError?
            do throws(LoopError) { _ = try await loop.capabilities() } catch { capabilitiesError = error }
            return [signalsError, capabilitiesError]
        }
        try await loop.sleep(for: .milliseconds(20))
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: loop) {}.value   // wakes the loop, whose next wait fails
        let expected = LoopError.poller(.system(operation: "epoll_wait", errno: EIO))
        #expect(await probe.value == [expected, expected], "\(backend)")
        await loop.shutdown()
        do throws(LoopError) {
            _ = try loop.signals([.user1])
            Issue.record("signals on an ended loop")
        } catch {
            #expect(error == expected, "\(backend)")
        }
    }
}

extension PeerScenarioTests19 {
    // MARK: libevent's rebuild in a process with other threads (libevent PR 189: avoid double close)

    /// The libevent epoll method cannot delete a registered number closed while a dup keeps its file
    /// open; the seam rebuilds libevent's epoll set then. It called `event_reinit`, which in libevent
    /// 2.1 closes the signal pipe twice (itself, then in the epoll method's dealloc, the numbers not
    /// reset in between): a descriptor another thread opened between the two closes was closed under
    /// it. Now a new base is made and every event moved to it; the old base closes each of its own
    /// descriptors once.
    @Test("rebuilding libevent's epoll set never closes a descriptor another thread opened meanwhile",
          .timeLimit(.minutes(1)))
    func libeventRebuildClosesNothingOfOthers() throws {
        let epollMethods = Backend.available.filter { $0 == .libevent || $0 == .libevent(.epoll) }
        for backend in epollMethods {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            let stop = Counter()
            let lost = Counter()
            let join = spawn {
                while stop.value == 0 {
                    let fd = rd_eventfd_nonblocking()
                    guard fd >= 0 else { continue }
                    for _ in 0..<20 where fcntl(fd, F_GETFD) < 0 { lost.increment(); break }
                    close(fd)
                }
            }
            let events = EventBuffer(capacity: 8)
            for _ in 0..<400 {
                var kept: [CInt] = []
                // Eight suspects: registered, kept open by a dup, the number closed, then deregistered.
                for _ in 0..<8 {
                    let (a, b) = try socketPair()
                    try poller.register(a, token: 1, interest: .readable)
                    kept.append(dup(a))
                    kept.append(b)
                    close(a)
                    try poller.deregister(a)
                }
                _ = try poller.wait(into: events, timeout: .zero)   // rebuilds first
                for fd in kept { close(fd) }
            }
            stop.increment()
            join()
            #expect(lost.value == 0, "\(backend): \(lost.value) of another thread's descriptors closed under it")
        }
    }
}

extension PeerScenarioTests19 {
    /// Happy Eyeballs passes the loop's hook to each attempt it starts: the winner's refused
    /// deregister (twice, as it hands its socket over) is kept and asked again by the loop, as a
    /// single address's is (the attempt to the full listener loses and is cancelled).
    @Test("Happy Eyeballs: a winner whose deregister the poller refuses does not spin and its connection waits",
          .timeLimit(.minutes(1)), arguments: backends)
    func refusedDeregisterOfHappyEyeballsWinner(backend: Backend) async throws {
        let (loop, poller) = try refusingLoop(backend)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let (full, fullAddress, fillers) = try fullTCPListener()
        defer { close(full); for fd in fillers { close(fd) } }
        var options = HappyEyeballs.Options()
        options.attemptDelay = .milliseconds(10)
        poller.failures.store(2, ordering: .relaxed)
        let client = try await loop.connect(to: [fullAddress, listener.address], timeout: .seconds(5), options: options)
        let passes = try await loopPasses(loop, during: .milliseconds(100))
        #expect(passes < 30, "\(passes) loop passes in 100 ms on \(backend)")
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        do {
            _ = try await client.read(upTo: 1, timeout: .milliseconds(50))
            Issue.record("a read on \(backend) returned with nothing sent")
        } catch {
            #expect(error == .timedOut, "\(backend)")
        }
        await client.close()
        await loop.shutdown()
    }

    /// The escape hatch's body closes the socket while the poller refuses both of the socket's own
    /// deregisters (before and after the close): the loop's own deregister clears the number, which
    /// the next descriptor takes and can wait on.
    @Test("a socket closed in the escape hatch while the poller refuses its deregisters leaves its number free",
          .timeLimit(.minutes(1)), arguments: backends)
    func hatchCloseWithRefusedDeregister(backend: Backend) async throws {
        let (loop, poller) = try refusingLoop(backend)
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let client = try await loop.connect(to: listener.address, timeout: .seconds(2))
        do {
            _ = try await client.read(upTo: 1, timeout: .milliseconds(20))   // registered readable, and left so
        } catch {
            #expect(error == .timedOut)
        }
        poller.failures.store(2, ordering: .relaxed)
        let number = try await client.withStreamSocket { (socket) throws(SocketError) -> CInt in
            let fd = socket.fd
            socket.close()
            return fd
        }
        #expect(poller.failures.load(ordering: .relaxed) == 0)
        let (x, y) = try socketPair()   // the lowest free number: the closed socket's
        defer { close(x); close(y) }
        var byte: UInt8 = 1
        #expect(write(y, &byte, 1) == 1)
        if x == number {
            try await loop.readable(x, timeout: .seconds(2))   // before: alreadyRegistered
        }
        await loop.shutdown()
    }
}

extension PeerScenarioTests19 {
    // MARK: A deadline whose cancel could not be submitted (Go net TestReadTimeout)

    /// A read's deadline gives the receive up; its cancel could not be submitted and is asked again
    /// after each wait. Before, an idle loop (no timer left) waited with no timeout, so the read, due
    /// to end at 100 ms, waited for the peer (here, 3 s) and returned its byte instead of `.timedOut`.
    @Test("io_uring: a read's deadline ends it although its first cancel could not be submitted",
          .timeLimit(.minutes(1)), .enabled(if: IOUringTests.usable))
    func deadlineWithRefusedCancel() async throws {
        let made = Locked<PeerScenarioTests17.StuckRing?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            guard let ring = try Backend.ioUring.makePoller() as? any Poller & CompletionRing else {
                throw PollerError.failed("not a completion ring", errno: EINVAL)
            }
            let refusing = PeerScenarioTests17.StuckRing(ring)
            made.withLock { $0 = refusing }
            return refusing
        }
        let ring = try #require(made.withLock { $0 })
        guard try await loop.ioDriver().kind == .completion else {
            print("deadlineWithRefusedCancel: the loop did not take the completion driver; nothing measured")
            await loop.shutdown()
            return
        }
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let client = try AsyncCompletionDriverTests.client(listener.address)
        defer { close(client) }
        let server = try await listener.accept()
        ring.refusedCancels.store(1, ordering: .releasing)
        let began = ContinuousClock.now
        let reader = Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) {
                _ = try await server.read(upTo: 16, timeout: .milliseconds(100))
                return nil
            } catch {
                return error
            }
        }
        let late = spawn { sleep(3); var byte: UInt8 = 1; _ = write(client, &byte, 1) }   // ends the old code's wait
        let failure = await reader.value
        let took = ContinuousClock.now - began
        late()
        #expect(failure == .timedOut)
        #expect(took < .seconds(2), "the read ended \(took) after a 100 ms deadline")
        await server.close()
        await listener.close()
        await loop.shutdown()
    }
}

extension PeerScenarioTests19 {
    // MARK: A zero timeout behind a full pass (Go net timeout tests: a deadline never hides data)

    /// More descriptors ready at once than the loop takes in one wait (512), a caller's descriptor
    /// registered last: its event did not fit in the pass, and its zero-timeout wait timed out though
    /// the descriptor was ready. The deadline now looks once more.
    @Test("a zero-timeout readable(fd) on a ready descriptor succeeds behind more ready events than one pass takes",
          .timeLimit(.minutes(1)), arguments: backends)
    func zeroTimeoutForeignBehindFullPass(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let count = LoopState.eventCapacity + 8
        // eventfds, one number each: every number stays below select's FD_SETSIZE.
        let watched = (0..<count).map { _ in rd_eventfd_nonblocking() }
        defer { for fd in watched where fd >= 0 { close(fd) } }
        try #require(watched.allSatisfy { $0 >= 0 })
        let waiters = watched.map { fd in
            Task(executorPreference: loop) { () async -> Void in try? await loop.readable(fd, timeout: .seconds(5)) }
        }
        try await loop.sleep(for: .milliseconds(100))   // every waiter registered
        let (p, q) = try socketPair()
        defer { close(p); close(q) }
        var byte: UInt8 = 7
        #expect(write(q, &byte, 1) == 1)   // p readable from now on
        let outcome = await Task(executorPreference: loop) { () async -> LoopError? in
            for fd in watched { var one: UInt64 = 1; _ = write(fd, &one, 8) }   // 520 ready, in this job
            do throws(LoopError) {
                try await loop.readable(p, timeout: .zero)
                return nil
            } catch {
                return error
            }
        }.value
        #expect(outcome == nil, "\(String(describing: outcome)) for a ready descriptor on \(backend)")
        for waiter in waiters { await waiter.value }
        await loop.shutdown()
    }
}

extension PeerScenarioTests19 {
    // MARK: Reviews of the last commits

    /// libevent's rebuild put its new epoll set on the lowest free number, which a registration closed
    /// while registered (stale, still in the table) had left. The candidates left out every number in
    /// the table, so the set was missed, and with it the timerfd: a caller could then register the
    /// timerfd's number (libevent's ADD meets EEXIST and becomes a MOD; timed waits hang).
    @Test("a libevent rebuild finds its new epoll set and timerfd even on the number of a registration closed while registered",
          .timeLimit(.minutes(1)))
    func libeventRebuildOnStaleNumber() throws {
        for backend in Backend.available where backend == .libevent || backend == .libevent(.epoll) {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            let (x, xPeer) = try socketPair()          // x: a low number, closed while registered below
            defer { close(xPeer) }
            try poller.register(x, token: 100, interest: .readable)
            var kept: [CInt] = []
            defer { for fd in kept { close(fd) } }
            for i in 0..<8 {                            // eight suspects: a rebuild at the next wait
                let (a, b) = try socketPair()
                try poller.register(a, token: Token(UInt64(i)), interest: .readable)
                kept.append(dup(a))
                kept.append(b)
                close(a)
                try poller.deregister(a)
            }
            close(x)                                    // closed while registered: stale at the rebuild
            let before = Set(Self.timerfds())
            let events = EventBuffer(capacity: 8)
            _ = try poller.wait(into: events, timeout: .zero)
            try? poller.deregister(x)
            let made = Set(Self.timerfds()).subtracting(before)
            try #require(made.count == 1, "\(backend): the rebuild's timerfd not seen (\(made))")
            let timerfd = made.first!
            var refused = false
            do { try poller.register(timerfd, token: 7, interest: .writable) } catch { refused = error == .alreadyRegistered(timerfd) }
            #expect(refused, "\(backend): libevent's timerfd \(timerfd) was taken as a caller's")
            // Taken, the timerfd would hang the timed wait below (before: the test hung there).
            guard refused else { continue }
            // And a timed wait still ends at its time.
            let began = ContinuousClock.now
            _ = try poller.wait(into: events, timeout: .milliseconds(20))
            #expect(ContinuousClock.now - began < .seconds(2), "\(backend)")
        }
    }

    /// The open timerfds of this process, by number.
    static func timerfds() -> [CInt] {
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        var found: [CInt] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = CInt(name) else { continue }
            var link = [CChar](repeating: 0, count: 64)
            let length = readlink("/proc/self/fd/\(fd)", &link, link.count - 1)
            guard length > 0 else { continue }
            if String(decoding: link.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) == "anon_inode:[timerfd]" { found.append(fd) }
        }
        return found
    }

    /// An eventfd waited on, closed during the wait, its number reused by another eventfd that is
    /// readable: the wait ends at its deadline, `.timedOut` (Docs/Async.md), on the backends whose
    /// kernel forgets a closed file (epoll, io_uring, libevent's epoll method). The deadline's last
    /// look is not trusted for eventfds (they share one inode: the new one looks like the old).
    @Test("a caller's eventfd closed during its wait and its number reused by a readable eventfd: the wait times out",
          .timeLimit(.minutes(1)), arguments: backends.filter { [.epoll, .ioUring, .libevent, .libevent(.epoll)].contains($0) })
    func reusedEventfdTimesOut(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let efd = rd_eventfd_nonblocking()
        try #require(efd >= 0)
        let waiter = Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) { try await loop.readable(efd, timeout: .milliseconds(300)); return nil } catch { return error }
        }
        try await loop.sleep(for: .milliseconds(50))   // waiting
        close(efd)
        var extra: [CInt] = []
        defer { for fd in extra { close(fd) } }
        var reused = false
        for _ in 0..<8 {
            let fd = rd_eventfd_nonblocking()
            extra.append(fd)
            if fd == efd { reused = true; break }
        }
        try #require(reused, "the number was not reused")
        var one: UInt64 = 1
        _ = write(efd, &one, 8)   // the new eventfd on the old number is readable
        let outcome = await waiter.value
        #expect(outcome == .timedOut, "\(String(describing: outcome)) on \(backend)")
        await loop.shutdown()
    }
}
