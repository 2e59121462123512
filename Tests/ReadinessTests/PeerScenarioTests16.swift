import Glibc
import CReadinessCore
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 47.
@Suite("Peer scenarios 16", .serialized)
struct PeerScenarioTests16 {
    // MARK: Graceful shutdown (Go's Server.Shutdown, swift-service-lifecycle's ServiceGroup)

    /// A loop that serves and also holds a connection it made itself (a pool's idle connection to an
    /// upstream, its read waiting). Before, the drain counted every connected socket: it waited out the
    /// whole grace period for the pooled connection.
    @Test("a graceful shutdown does not wait for a connection the loop made itself",
          .timeLimit(.minutes(1)), arguments: backends)
    func drainIgnoresOutbound(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let upstream = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let server = Task { try await listener.serve { socket in _ = try? await socket.read(upTo: 8) } }
        let pooled = try await loop.connect(to: upstream.address, timeout: .seconds(5))
        let reader = Task(executorPreference: loop) { () async -> LoopError? in
            do throws(LoopError) { _ = try await pooled.read(upTo: 8); return nil } catch { return error }
        }
        try await loop.sleep(for: .milliseconds(30))
        let clock = ContinuousClock()
        let started = clock.now
        await loop.shutdown(gracePeriod: .seconds(3))
        let took = clock.now - started
        #expect(took < .seconds(1), "the drain took \(took) on \(backend)")
        #expect(await reader.value == .shutdown)
        _ = try? await server.value
        upstream.close()
        #expect(await settledDescriptorCount(before) == before)
    }

    /// A connection accepted on the loop still holds the drain while its handler runs (the handler's
    /// own upstream connection is waited for through it).
    @Test("a graceful shutdown waits for an accepted connection whose handler uses an upstream",
          .timeLimit(.minutes(1)), arguments: backends)
    func drainWaitsForServedHandler(backend: Backend) async throws {
        let upstream = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let upstreamAddress = upstream.address
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let answered = Locked(false), entered = Locked(false)
        let server = Task {
            try await listener.serve { socket in
                entered.withLock { $0 = true }
                guard let pooled = try? await loop.connect(to: upstreamAddress, timeout: .seconds(5)) else { return }
                try? await loop.sleep(for: .milliseconds(300))     // the upstream's answer, slowly
                if (try? await socket.write(Array("ok".utf8))) != nil { answered.withLock { $0 = true } }
                await pooled.close()
            }
        }
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        for _ in 0..<500 where !entered.withLock({ $0 }) { try await loop.sleep(for: .milliseconds(2)) }
        let clock = ContinuousClock()
        let started = clock.now
        await loop.shutdown(gracePeriod: .seconds(10))
        let took = clock.now - started
        #expect(answered.withLock { $0 }, "the handler's answer was cut on \(backend)")
        #expect(took >= .milliseconds(100) && took < .seconds(5), "\(took)")
        _ = try? await server.value
        _ = client
        upstream.close()
    }

    // MARK: Serving (tokio tcp_accept: a second accepter shares the listener with the first)

    /// Before turns were taken, `EventLoopGroup.serve(listeners)` on a listener another task served
    /// failed with `.busy` (and earlier still closed the listener under the first serve). Now the two
    /// serves take turns at accepting, as tokio's and Go's accepters do: both serve, and cancelling
    /// the second leaves the first serving an open listener.
    @Test("group.serve on a listener another task serves shares it: both serve, the listener stays open",
          .timeLimit(.minutes(1)), arguments: backends)
    func serveBusyLeavesListener(backend: Backend) async throws {
        let group = try EventLoopGroup(backend: backend, count: 1)
        let loop = group.loops[0]
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let first = Task { try await listener.serve { socket in _ = try? await socket.write(Array("hi".utf8)) } }
        // A client a serve answers: it accepted, and went back to accept at once.
        func greeting() async throws -> [UInt8] {
            let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
            var bytes: [UInt8] = []
            while bytes.count < 2 {
                let chunk = try await client.read(upTo: 2, timeout: .seconds(5))
                if chunk.isEmpty { break }
                bytes += chunk
            }
            await client.close()
            return bytes
        }
        #expect(try await greeting() == Array("hi".utf8))
        try await loop.sleep(for: .milliseconds(100))
        let second = Task { () async -> LoopError? in
            do throws(LoopError) {
                try await group.serve([listener]) { socket in _ = try? await socket.write(Array("ho".utf8)) }
                return nil
            } catch { return error }
        }
        try await loop.sleep(for: .milliseconds(100))
        var answers: [String] = []
        for _ in 0..<4 { answers.append(String(decoding: try await greeting(), as: UTF8.self)) }
        #expect(answers.allSatisfy { $0 == "hi" || $0 == "ho" } && answers.contains("hi") && answers.contains("ho"),
                "\(backend): \(answers)")
        second.cancel()
        #expect(await second.value == nil)
        #expect(try await greeting() == Array("hi".utf8), "the first serve was stopped with the second on \(backend)")
        await listener.close()
        _ = try? await first.value
        await group.shutdown()
    }

    // MARK: Datagrams (libuv test-udp-connect, tokio udp.rs: a refusal belongs to its association)

    /// A socket connected to a dead port draws an ICMP port-unreachable; it is then connected to a live
    /// peer (or disconnected). Linux keeps the refusal across the new connect(2): the first send to
    /// the new peer failed with `.refused` and sent nothing.
    @Test("a refusal drawn under one peer does not fail the next peer's send (connect, disconnect)")
    func refusalDoesNotOutliveAssociation() throws {
        for disconnecting in [false, true] {
            let gone = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
            let dead = gone.localAddress!
            gone.close()
            let live = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
            let socket = try DatagramSocket(connectedTo: dead)
            defer { socket.close(); live.close() }
            _ = try socket.send(Array("a".utf8), destination: nil)
            // The ICMP error arrives at once on loopback: the socket turns readable (POLLERR).
            var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            #expect(poll(&entry, 1, 2_000) == 1)
            if disconnecting {
                try socket.disconnect()
                #expect(throws: Never.self) { _ = try socket.send(Array("b".utf8), to: live.localAddress!) }
            } else {
                try socket.connect(to: live.localAddress!)
                #expect(throws: Never.self) { _ = try socket.send(Array("b".utf8), destination: nil) }
            }
            var buffer = [UInt8](repeating: 0, count: 4)
            var arrived = pollfd(fd: live.fd, events: Int16(POLLIN), revents: 0)
            #expect(poll(&arrived, 1, 2_000) == 1)
            #expect(try live.receive(into: &buffer).datagram?.count == 1, "disconnecting: \(disconnecting)")
        }
        // Connected again to the same peer, the refusal is that peer's: it stays.
        let gone = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let dead = gone.localAddress!
        gone.close()
        let socket = try DatagramSocket(connectedTo: dead)
        defer { socket.close() }
        _ = try socket.send(Array("a".utf8), destination: nil)
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 2_000) == 1)
        try socket.connect(to: dead)
        #expect(socket.takePendingError()?.kind == .refused)
    }

    // MARK: Timers while the poller's waits fail (libuv: timers run whatever the I/O does)

    /// A wait that fails for want of resources (poll's EINVAL past RLIMIT_NOFILE, ENOMEM, io_uring's
    /// EAGAIN) is retried after 10 ms, for up to a second. Before, the timers stopped meanwhile: a
    /// sleep of 30 ms took as long as the shortage (40 failed waits here, at least 400 ms), and a
    /// read's deadline that would close an idle connection, ending the shortage, never fired. The
    /// shortage ends after its 40th failed wait, counted (a fixed sleep of the test's could outlast the
    /// loop's second of retries on a loaded host).
    @Test("timers keep firing while the poller's waits fail for want of resources",
          .timeLimit(.minutes(1)), arguments: backends)
    func timersDuringWaitShortage(backend: Backend) async throws {
        let made = Locked<PeerScenarioTests9.ShortPoller?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            let poller = PeerScenarioTests9.ShortPoller(try backend.makePoller(), failures: Locked(0))
            made.withLock { $0 = poller }
            return poller
        }
        let sleeper = Task(executorPreference: loop) { () async -> (LoopError?, Duration) in
            let clock = ContinuousClock()
            let started = clock.now
            do throws(LoopError) { try await loop.sleep(for: .milliseconds(30)) } catch { return (error, clock.now - started) }
            return (nil, clock.now - started)
        }
        try await Task.sleep(for: .milliseconds(5))
        made.withLock { $0 }!.waitsFail.withLock { $0 = true }
        Task(executorPreference: loop) {}   // wakes the loop: every later wait fails
        let poller = made.withLock { $0 }!
        for _ in 0..<1_000 where poller.failedWaits.withLock({ $0 }) < 40 { try await Task.sleep(for: .milliseconds(5)) }
        poller.waitsFail.withLock { $0 = false }
        Task(executorPreference: loop) {}
        let (error, took) = await sleeper.value
        #expect(error == nil)
        #expect(took < .milliseconds(300), "the sleep took \(took) on \(backend)")
        await loop.shutdown()
    }

    // MARK: Closed between the kernel's answer and the task (Go TestCloseUnblocksRead, tokio drop)

    /// Two tasks woken in the same loop turn: the first closes the second's socket, which the second
    /// reads. Whichever runs first (libevent's poll and select methods start their scan at a random
    /// descriptor), a read never returns bytes from a socket closed before it returned: on the
    /// readiness path the woken reader looks its socket up again (`.closed`, the bytes left in the
    /// closed socket); io_uring's completion driver returned the bytes its receive had taken (there
    /// the closer, woken by a poll event, always ran first: readiness is dispatched before completions).
    @Test("a read woken by data whose socket another task closed before it ran ends closed on every backend",
          .timeLimit(.minutes(1)), arguments: backends)
    func closedAfterWake(backend: Backend) async throws {
        for form in 0..<3 {
            try await withLoop(backend) { loop in
                let (l2, b, peerB) = try await connectedPair(loop)   // the closer's pair first: lower descriptors
                let (l1, a, peerA) = try await connectedPair(loop)
                let closed = Locked(false)
                let closer = Task(executorPreference: loop) { () async throws in
                    try await b.readable(timeout: .seconds(5))
                    await a.close()
                    closed.withLock { $0 = true }
                }
                let reader = Task(executorPreference: loop) { () async -> (LoopError?, closedFirst: Bool) in
                    do throws(LoopError) {
                        switch form {
                        case 0: _ = try await a.readAvailable(timeout: .seconds(5))
                        case 1: _ = try await a.read(upTo: 16, timeout: .seconds(5))
                        default:
                            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
                            defer { buffer.deallocate() }
                            _ = try await a.read(into: buffer, timeout: .seconds(5))
                        }
                        return (nil, closed.withLock { $0 })
                    } catch { return (error, closed.withLock { $0 }) }
                }
                try await loop.sleep(for: .milliseconds(50))   // both wait (on io_uring: a's receive in the ring)
                try await Task(executorPreference: loop) {      // one job, no suspension: both ready in one turn
                    try await peerB.write([1])
                    try await peerA.write([2])
                }.value
                try await closer.value
                let (error, closedFirst) = await reader.value
                if closedFirst {
                    #expect(error == .closed, "form \(form) on \(backend): the read returned after its socket was closed")
                } else {
                    #expect(error == nil, "form \(form) on \(backend)")
                }
                for socket in [peerA, peerB, b] { await socket.close() }
                await l1.close()
                await l2.close()
            }
        }
    }

    // MARK: The poller (mio unix_pipe, CPython test_selectors: a hang-up's bits)

    /// A pipe's read end watched for both directions, its writer closed (a hang-up), beside a ready
    /// socket, with room for one event per wait: the pipe's bits are the same at every wait, whether
    /// the backend reported it at once or held it over the full buffer. On libevent's select method the
    /// held-over path added writable (POLLHUP read as both directions) where the direct one, as
    /// select's kernel, gave readable only.
    @Test("a hang-up's bits do not depend on whether the event waited for room in the buffer", arguments: backends)
    func hangupBitsStable(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var pair: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        defer { close(pair[0]); close(pair[1]); close(ends[0]) }
        _ = write(pair[1], [UInt8(1)], 1)
        try poller.register(pair[0], token: 1, interest: .readable)
        try poller.register(ends[0], token: 2, interest: .both)
        close(ends[1])
        let events = EventBuffer(capacity: 1)
        var seen: Set<Ready> = []
        for _ in 0..<6 {
            _ = try poller.wait(into: events, timeout: .seconds(1))
            for i in 0..<events.count where events[i].token == 2 {
                seen.insert(events[i].ready.intersection([.readable, .writable]))
            }
        }
        #expect(seen.count == 1, "\(backend): \(seen)")
        // Every backend but select's kernel adds writable (hang-up implies what was asked for).
        let selectLike = backend == .select || backend.description == "libevent:select"
        #expect(seen.first == (selectLike ? [.readable] : [.readable, .writable]), "\(backend): \(seen)")
    }

    // MARK: libevent regress test_dup_fd with anonymous-inode files (an outside reader)

    /// An eventfd registered one-shot, reported through a dup after its number was closed, the number
    /// then taken by another eventfd, deregistered: libevent's epoll method kept the first file in its
    /// set (its delete was refused and ignored), and the seam, comparing device and inode, took the
    /// second eventfd for the first (every anonymous-inode file shares one inode): no rebuild, and
    /// every later pass spun.
    @Test("a fired one-shot eventfd whose number another eventfd took, deregistered: no busy loop", arguments: backends)
    func oneShotEventfdNumberReused(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let first = rd_eventfd_nonblocking()
        try poller.register(first, token: 1, interest: .readable, trigger: .oneShot)
        let copy = dup(first)
        defer { close(copy) }
        close(first)
        var one: UInt64 = 1
        _ = write(copy, &one, 8)   // readable from now on
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(100))
        let made = rd_eventfd_nonblocking()   // another eventfd on the number, at once (dup2: no race)
        let second = dup2(made, first)
        close(made)
        defer { close(second) }
        try #require(second == first)
        try? poller.deregister(first)
        let start = PollerTests.threadCPU()
        for _ in 0..<3 { _ = try poller.wait(into: events, timeout: .milliseconds(100)) }
        let spent = PollerTests.threadCPU() - start
        #expect(spent < 60_000_000, "\(spent / 1_000_000) ms of CPU in 300 ms of waiting on \(backend)")
    }

    /// The same with a level registration revived by reregister on the new eventfd: the first file,
    /// readable through its dup, was reported under the new token (the identities matched; the
    /// kernel's refusal of the old event's delete went unread).
    @Test("a level eventfd registration revived on another eventfd reports only the new file", arguments: backends)
    func levelEventfdRevived(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let first = rd_eventfd_nonblocking()
        try poller.register(first, token: 1, interest: .readable)
        let copy = dup(first)
        defer { close(copy) }
        let made = rd_eventfd_nonblocking()   // another eventfd on the number (dup2 closes the first)
        let second = dup2(made, first)
        close(made)
        defer { close(second) }
        try #require(second == first)
        try poller.reregister(second, token: 2, interest: .readable)
        var one: UInt64 = 1
        _ = write(copy, &one, 8)   // the old file readable; the new one not
        let events = EventBuffer(capacity: 8)
        _ = try poller.wait(into: events, timeout: .milliseconds(100))
        let reported = (0..<events.count).map { "\(events[$0].token):\(events[$0].ready)" }
        #expect(reported.isEmpty, "\(backend): \(reported)")
        try poller.deregister(second)
    }

    // MARK: Unix paths that are not UTF-8 (CPython test_socket testSurrogateescapeBind)

    /// A Unix-domain address whose path bytes are not UTF-8 (from raw `sockaddr_un` bytes): the kernel
    /// binds it. Before, the path was read as a String (nil for such bytes): a closed socket left its
    /// file behind, and a listener on a stale one failed with addressInUse instead of replacing it.
    @Test("a Unix path that is not UTF-8 is unlinked at close and replaced when stale")
    func nonUTF8UnixPath() throws {
        var path = Array("/tmp/readiness-\(getpid())-".utf8) + [0xFF, 0xFE] + Array(".sock".utf8)
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sun.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + 1)
        let address = try #require(withUnsafePointer(to: &sun) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0, length: length) }
        })
        path.append(0)
        let cPath = path.map { CChar(bitPattern: $0) }
        unlink(cPath)
        defer { unlink(cPath) }
        var st = stat()

        let datagram = try DatagramSocket(bind: address)
        #expect(lstat(cPath, &st) == 0)
        datagram.close()
        #expect(lstat(cPath, &st) != 0, "the datagram socket's file was left behind")

        let first = try Listener(bind: address)
        let fd = first.release()   // a listener gone without cleaning up: its file stays, stale
        close(fd)
        #expect(lstat(cPath, &st) == 0)
        let second = try Listener(bind: address)
        second.close()
        #expect(lstat(cPath, &st) != 0, "the listener's file was left behind")
    }

    // MARK: Happy Eyeballs in the caller's loop (Go TestDialTimeout: a lookup that never answers)

    /// A connect whose lookups hang, nothing in flight, its start deadline 100 ms ahead: the caller's
    /// loop waits on `timers.timeout()`. Before, no timer was armed at the deadline: the wait lasted
    /// until a lookup answered (3 s here).
    @Test("a start deadline ends a Happy Eyeballs connect whose lookup still runs, by its own timer", arguments: backends)
    func startDeadlineWhileResolving(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let release = LookupRelease()
        defer { release.release() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let resolver = ScriptedResolver(v6: [], v6Delay: .seconds(3), v4: [listener.address], v4Delay: .seconds(3), release: release)
        let timers = Timers()
        let connect = HappyEyeballs(resolution: Resolution(host: "slow.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0)
        connect.startDeadline = MonotonicClock.nowNanoseconds + 100_000_000
        let clock = ContinuousClock()
        let started = clock.now
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        let took = clock.now - started
        guard case .failed(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.cause == .timedOut)
        #expect(took < .seconds(1), "\(took) on \(backend)")
    }

    /// A list of 17 refused addresses then a listener: the loop's list connect stops at its 16 attempts
    /// (HappyEyeballs.Options.maximumAttempts); the synchronous `Connector` tried all 18 and connected.
    @Test("the synchronous and the loop's list connect try the same addresses (at most 16)", arguments: backends)
    func listConnectCap(backend: Backend) async throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        var addresses: [SocketAddress] = []
        for _ in 0..<17 { addresses.append(try closedPort()) }
        addresses.append(listener.address)
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var synchronous: ConnectError?
        do throws(ConnectError) {
            let socket = try Connector.connect(to: addresses, on: poller, timeout: .seconds(5), attemptDelay: .milliseconds(10))
            close(socket.fd)
        } catch { synchronous = error }
        #expect(synchronous?.cause == .refused && synchronous?.attempts.count == 16, "\(String(describing: synchronous))")
        try await withLoop(backend) { loop in
            do throws(LoopError) {
                let socket = try await loop.connect(to: addresses, timeout: .seconds(5))
                await socket.close()
                Issue.record("the loop's list connect tried past its cap on \(backend)")
            } catch {
                guard case .connect(let failure) = error else { Issue.record("\(error)"); return }
                #expect(failure.cause == .refused && failure.attempts.count == 16, "\(failure)")
            }
        }
    }

    // MARK: io_uring's multishot accept (liburing accept-mshot-stress: one issue drains the backlog)

    /// 200 connections wait in a listener's backlog; one accept. How many descriptors the loop holds
    /// afterwards, beyond the one it returned: on the readiness path none (the rest stay in the
    /// kernel's queue); io_uring's multishot accept takes what the queue holds when it is issued
    /// (Linux 6.10 and later go on while the queue is not empty), then is cancelled at 16 queued.
    @Test("connections a listener's accept takes ahead of the calls: none on the readiness path, at most the backlog on io_uring",
          .timeLimit(.minutes(1)), arguments: backends)
    func acceptAhead(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            // As many clients as the kernel's backlog cap lets queue (net.core.somaxconn; 4,096 since
            // Linux 5.4, 128 before and in some containers: a connect past it would retry its SYN).
            let cap = (try? read("/proc/sys/net/core/somaxconn")).flatMap { Int(String($0.filter(\.isNumber))) } ?? 128
            let count = min(200, max(8, cap - 8))
            var options = Listener.Options()
            options.backlog = CInt(count + 8)
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
            var clients: [CInt] = []
            for _ in 0..<count {
                let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
                _ = listener.address.withSockaddr { Glibc.connect(fd, $0, $1) }
                clients.append(fd)
            }
            let before = openDescriptorCount()
            let first = try await listener.accept(timeout: .seconds(5))
            try await loop.sleep(for: .milliseconds(50))
            let ahead = openDescriptorCount() - before - 1
            // The readiness path leaves the rest in the kernel's queue; io_uring's multishot accept
            // takes at most what was queued (Docs/Async.md, "I/O drivers").
            if backend == .ioUring {
                #expect(ahead >= 0 && ahead <= count - 1, "\(ahead)")
            } else {
                #expect(ahead == 0, "\(ahead) descriptors ahead on \(backend)")
            }
            await first.close()
            await listener.close()
            for fd in clients { close(fd) }
        }
    }

    // MARK: io_uring: a submission the ring cannot take for now (io_uring_enter's EAGAIN)

    /// An io_uring poller whose ring refuses its next operation submissions of a kind ("recv", "send",
    /// "accept": `failures`) as a full submission queue whose inline submit failed does
    /// (`resourceExhausted`).
    final class ShortRing: ForwardingPoller, CompletionRing {
        let inner: any Poller & CompletionRing
        let failures = Locked<[String: Int]>([:])
        init(_ inner: any Poller & CompletionRing) { self.inner = inner }
        private func refuse(_ kind: String) throws(PollerError) {
            let refused = failures.withLock { (left: inout [String: Int]) -> Bool in
                guard let count = left[kind], count > 0 else { return false }
                left[kind] = count - 1
                return true
            }
            if refused { throw PollerError.resourceExhausted(operation: "io_uring_enter (\(kind))", errno: EAGAIN) }
        }
        var forwarded: any Poller { inner }
        var completionFeatures: CompletionFeatures { inner.completionFeatures }
        var providedBufferSize: Int { inner.providedBufferSize }
        func receive(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, tag: UInt64) throws(PollerError) {
            try refuse("recv")
            try inner.receive(fd, into: buffer, tag: tag)
        }
        func receiveProvided(_ fd: CInt, maximum: Int, tag: UInt64) throws(PollerError) {
            try refuse("recv")
            try inner.receiveProvided(fd, maximum: maximum, tag: tag)
        }
        func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, tag: UInt64) throws(PollerError) {
            try refuse("send")
            try inner.send(fd, buffer, tag: tag)
        }
        func sendMessage(_ fd: CInt, _ message: UnsafePointer<msghdr>, tag: UInt64) throws(PollerError) {
            try refuse("send")
            try inner.sendMessage(fd, message, tag: tag)
        }
        func accept(_ fd: CInt, tag: UInt64, multishot: Bool) throws(PollerError) {
            try refuse("accept")
            try inner.accept(fd, tag: tag, multishot: multishot)
        }
        func cancel(tag: UInt64) throws(PollerError) { try inner.cancel(tag: tag) }
        func submitNow() throws(PollerError) { try inner.submitNow() }
        func takeCompletions(_ body: (OperationCompletion) -> Void) { inner.takeCompletions(body) }
        func providedBuffer(_ id: UInt16) -> UnsafeMutableRawPointer? { inner.providedBuffer(id) }
        func giveBack(_ id: UInt16) { inner.giveBack(id) }
    }

    /// Before, the completion driver failed the caller's read, write or accept with
    /// `.poller(resourceExhausted)` when the ring could not take its submission for now, where epoll's
    /// loop would wait: now the readiness driver takes the operation.
    @Test("an operation the ring cannot take for now waits as on epoll: read, provided read, write, accept",
          .timeLimit(.minutes(1)), .enabled(if: Backend.ioUring.probe() == nil, "io_uring is not available here"))
    func ringSubmissionShortage() async throws {
        let made = Locked<ShortRing?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            guard let ring = try Backend.ioUring.makePoller() as? any Poller & CompletionRing else {
                throw PollerError.failed("not a completion ring", errno: EINVAL)
            }
            let short = ShortRing(ring)
            made.withLock { $0 = short }
            return short
        }
        /// The ring refuses the next `count` submissions of `kind` (a shortage that lasts a few passes).
        func refuseNext(_ kind: String, _ count: Int = 3) { made.withLock { $0 }!.failures.withLock { $0[kind] = count } }
        func refusalTaken(_ kind: String) -> Bool { made.withLock { $0 }!.failures.withLock { $0[kind] ?? 0 } == 0 }
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        refuseNext("accept", 1)   // the accept's multishot arming
        let accepting = Task { () async -> Result<AsyncSocket, LoopError> in
            do throws(LoopError) { return .success(try await listener.accept(timeout: .seconds(5))) } catch { return .failure(error) }
        }
        try await loop.sleep(for: .milliseconds(30))
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        let server = try await accepting.value.get()
        #expect(refusalTaken("accept"), "the accept never reached the ring")
        // Reads that must wait (nothing queued), each refused once by the ring.
        for form in 0..<2 {
            refuseNext("recv")
            let reader = Task { () async -> Result<[UInt8], LoopError> in
                do throws(LoopError) {
                    if form == 0 { return .success(try await server.read(upTo: 16, timeout: .seconds(5))) }
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
                    defer { buffer.deallocate() }
                    let n = try await server.read(into: buffer, timeout: .seconds(5))
                    return .success(Array(buffer[..<n]))
                } catch { return .failure(error) }
            }
            try await loop.sleep(for: .milliseconds(30))
            try await client.write([UInt8(form)])
            #expect(try await reader.value.get() == [UInt8(form)], "form \(form)")
            #expect(refusalTaken("recv"), "form \(form) never reached the ring")
        }
        // Writes larger than the socket takes at once (one buffer, then vectored): their rest goes to
        // the ring, refused a few times.
        let big = [UInt8](repeating: 7, count: 8 << 20)
        for vectored in [false, true] {
            refuseNext("send")
            let writer = Task { () async -> LoopError? in
                // A caller's buffer: the form the ring sends from (owned bytes are readiness writes).
                let all = UnsafeMutableRawBufferPointer.allocate(byteCount: big.count, alignment: 1)
                defer { all.deallocate() }
                all.copyBytes(from: big)
                do throws(LoopError) {
                    if vectored {
                        let half = all.count / 2
                        try await client.write(vectored: [UnsafeRawBufferPointer(rebasing: all[..<half]),
                                                          UnsafeRawBufferPointer(rebasing: all[half...])], timeout: .seconds(10))
                    } else {
                        try await client.write(UnsafeRawBufferPointer(all), timeout: .seconds(10))
                    }
                    return nil
                } catch { return error }
            }
            try await loop.sleep(for: .milliseconds(50))   // the socket full: the rest waits in the ring
            var got = 0
            while got < big.count {
                let chunk = try await server.read(upTo: 1 << 20, timeout: .seconds(10))
                if chunk.isEmpty { break }
                got += chunk.count
            }
            #expect(await writer.value == nil, "vectored: \(vectored)")
            #expect(got == big.count, "vectored: \(vectored)")
            #expect(refusalTaken("send"), "the write never reached the ring (vectored: \(vectored))")
        }
        await client.close()
        await server.close()
        await listener.close()
        await loop.shutdown()
    }
}
