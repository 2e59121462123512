import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
@testable import ReadinessNet
import Synchronization
import Testing

/// Scenarios from the peers' test suites, the differential generator and the outside readers of stop 52.
@Suite("Peer scenarios 21", .serialized)
struct PeerScenarioTests21 {
    // MARK: taking turns when the buffer is too small (the differential generator; epoll's ready list)

    /// More registrations always ready than a wait's buffer holds: each is reported within every run
    /// of ceil(n / capacity) consecutive waits, as epoll's ready list (a reported level registration
    /// goes to its tail) and poll's rotor give. libevent kept what a pass could not report for the next
    /// waits, then started its next pass one place after where the previous pass had started: one of
    /// five went 9 waits with a buffer of 1 unreported (differential seed 778058, libevent and
    /// libevent:epoll).
    @Test("ready registrations beyond the buffer take turns: each within every ceil(n / capacity) waits",
          .timeLimit(.minutes(1)), arguments: backends)
    func readyRegistrationsTakeTurns(backend: Backend) throws {
        let n = 5
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for _ in 0..<n {
            var fds: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            pairs.append((fds[0], fds[1]))
        }
        for capacity in [1, 2] {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            for (i, (a, b)) in pairs.enumerated() {
                try poller.register(a, token: Token(UInt64(i + 1)), interest: .readable)
                var byte: UInt8 = 1
                if i == 0 && capacity == 1 { _ = write(b, &byte, 1) }
            }
            var seen: [Set<UInt64>] = []
            let events = EventBuffer(capacity: capacity)
            // The first waits see the one ready; the others become ready between waits, as in the
            // generator's script (a descriptor's readiness arriving while others are kept).
            for round in 0..<(6 * n) {
                if round == 1 && capacity == 1 { for (_, b) in pairs.dropFirst() { var byte: UInt8 = 1; _ = write(b, &byte, 1) } }
                if round == 0 && capacity == 2 { for (_, b) in pairs { var byte: UInt8 = 1; _ = write(b, &byte, 1) } }
                _ = try poller.wait(into: events, timeout: .zero)
                seen.append(Set(events.map(\.token.rawValue)))
            }
            let window = (n + capacity - 1) / capacity
            var starved: [String] = []
            for start in 2..<(seen.count - window + 1) {
                let covered = seen[start..<(start + window)].reduce(into: Set<UInt64>()) { $0.formUnion($1) }
                if covered.count != n { starved.append("waits \(start)..<\(start + window): \(covered.sorted())") }
            }
            #expect(starved.isEmpty, "\(backend), buffer of \(capacity): \(starved.prefix(3)); waits \(seen.map { $0.sorted() })")
        }
    }
}

final class P21Flag: Sendable {
    let on = Atomic<Bool>(false)
}

// MARK: an operation awaited inside a plain actor (tokio's split halves shared through an actor)

/// A plain actor (no custom executor): its code runs wherever the actor runs, on the loop thread when a
/// task preferring the loop enters it while it is free, on another thread when that thread holds it.
actor P21PlainPeer {
    /// Waits for `id`'s readability through `onLoop`, as every operation does, and answers whether the
    /// operation's code after the wait ran on the loop thread, and the wait's outcome.
    func waitReadable(_ loop: EventLoop, _ id: UInt64) async -> (onLoop: Bool, ready: Bool) {
        do throws(LoopError) {
            return try await loop.onLoop { (state) async throws(LoopError) -> (onLoop: Bool, ready: Bool) in
                let (stream, _) = try state.stream(id)
                let outcome = await state.wait(stream, .read, deadline: nil, interest: true)
                if case .ready = outcome { return (loop.isLoopThread(), true) }
                return (loop.isLoopThread(), false)
            }
        } catch {
            return (false, false)
        }
    }

    func read(_ socket: AsyncSocket) async -> Int {
        (try? await socket.read(upTo: 64, timeout: .seconds(10)).count) ?? -1
    }

    /// Holds the actor on the calling thread for `microseconds`.
    func hold(_ entered: P21Flag, _ microseconds: UInt32) {
        entered.on.store(true, ordering: .releasing)
        usleep(microseconds)
    }
}

extension PeerScenarioTests21 {
    /// A task preferring the loop that enters a plain actor while it is free runs there on the loop
    /// thread, and an operation took its fast path (no hop): its code ran isolated to the actor, so
    /// the wait's resumption was queued on the actor. Held meanwhile by a task on another thread,
    /// the actor ran the resumption on that thread: the operation went on there with the loop's state
    /// (its slab, timers, scratch buffer and poller) while the loop thread ran too. (tokio's
    /// tcp_into_split halves shared by tasks, here through an actor; an outside reader of the code.)
    /// Now an operation whose caller is isolated to an actor other than the loop hops: its code runs
    /// nonisolated on the loop, and returns to the actor at the end.
    @Test("an operation awaited inside a plain actor goes on on the loop thread after its wait, even when another thread holds the actor then",
          .timeLimit(.minutes(1)), arguments: backends)
    func plainActorWaitResumesOnLoop(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        let server = try await listener.accept(timeout: .seconds(5))
        let peer = P21PlainPeer()
        let id = client.id
        for round in 0..<2 {
            let waiter = Task(executorPreference: loop) { () async -> (onLoop: Bool, ready: Bool, read: Int) in
                if round == 0 {
                    let (onLoop, ready) = await peer.waitReadable(loop, id)
                    return (onLoop, ready, 0)
                }
                return (true, true, await peer.read(client))
            }
            try await Task.sleep(for: .milliseconds(100))   // the waiter waits; the actor is free
            let entered = P21Flag()
            let holder = Task.detached { await peer.hold(entered, 300_000) }
            while !entered.on.load(ordering: .acquiring) { usleep(1_000) }
            try await server.write(Array("x".utf8), timeout: .seconds(5))   // the wait resolves while the actor is held
            await holder.value
            let outcome = await waiter.value
            #expect(outcome.onLoop && outcome.ready, "\(backend), round \(round): the wait's code went on off the loop thread")
            if round == 0 { _ = try await client.read(upTo: 64, timeout: .seconds(5)) } else { #expect(outcome.read == 1, "\(backend)") }
        }
        await client.close()
        await server.close()
        await listener.close()
        await loop.shutdown()
    }
}

extension PeerScenarioTests21 {
    // MARK: a slot's generation that would wrap (SwiftNIO EventLoopTest testInEventLoopABAProblem)

    /// A handle (`AsyncSocket`, `AsyncListener`) is a number: the slot's index and generation. The
    /// most recently freed slot is taken first, so one slot takes a loop's churn (every sleep, wait
    /// on a caller's descriptor, connect); its 32-bit generation wrapped in hours to days, and a
    /// handle kept from a connection closed long before named whatever then held the slot at that
    /// generation: its write went to another client's connection. The slot is retired instead.
    @Test("slab: a slot whose generation would wrap is retired, so a key kept from its first resource never names a later one")
    func slabGenerationNeverWraps() throws {
        var slab = Slab(capacity: 2, lastGeneration: 3)
        let stale = try slab.insert { RecordingResource(key: $0) }.key   // generation 0
        slab.remove(stale)
        for _ in 0..<3 {                                                  // generations 1, 2, 3
            let next = try slab.insert { RecordingResource(key: $0) }
            #expect(next.key.index == stale.index)
            slab.remove(next.key)
        }
        let later = try slab.insert { RecordingResource(key: $0) }       // before: index 0, generation 0 again
        #expect(slab[stale] == nil, "the first resource's key names \(later.key)")
        #expect(later.key.index != stale.index)
        #expect(slab[ResourceKey(index: stale.index, generation: 3)] == nil)
        #expect(slab.count == 1)
    }
}

extension PeerScenarioTests21 {
    // MARK: a back-off whose deregister the poller refuses (SwiftNIO AcceptBackoffHandlerTest)

    /// An accept waits (the listener registered, level), a connection comes, accept fails with EMFILE:
    /// the listener backs off and lets its registration go. The poller refuses (it keeps it: an io_uring
    /// cancel that could not be submitted, no memory). Before, the refusal was dropped: the queued
    /// connection woke every wait, each woke the accept, which backed off again, for as long as the
    /// refusal lasted (thousands of loop passes in 100 ms). Now the registration is made one-shot, as
    /// the sync `Listener`'s back-off does, and readiness does not resume an accept that backs off.
    @Test("a listener backing off whose deregister the poller refuses does not spin the loop",
          .timeLimit(.minutes(1)), arguments: backends, [false, true])
    func backoffRefusedDeregisterDoesNotSpin(backend: Backend, reregisterToo: Bool) async throws {
        // A refusal that lasts (only deregister refused: the registration is made one-shot), or one of
        // both deregister and reregister that passes after a few (io_uring, whose both are a cancel
        // that could not be submitted: the loop's kept deregisters let it go once it passes).
        let made = Locked<P21RefusingChangesPoller?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            let poller = P21RefusingChangesPoller(try backend.makePoller(), reregisterToo: reregisterToo)
            made.withLock { $0 = poller }
            return poller
        }
        let poller = try #require(made.withLock { $0 })
        var options = Listener.Options()
        options.backoff = AcceptBackoff(initial: .seconds(5), maximum: .seconds(5))
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        let id = listener.id
        // On the loop's executor while descriptors are exhausted (P4Exhaustion: the global executor
        // kept idle).
        let (exhaustions, passes) = try await Task(executorPreference: loop) { () async throws -> (Int, Int) in
            let count = { () async throws -> Int in
                try await loop.onLoop { (state) throws(LoopError) in try state.listener(id).listener.exhaustionCount }
            }
            let accepting = Task(executorPreference: loop) { try? await listener.accept(timeout: .seconds(4)) }
            defer { accepting.cancel() }
            try await loop.sleep(for: .milliseconds(50))   // the accept waits: registered
            let exhaustion = try P4Exhaustion()
            defer { exhaustion.restore() }
            poller.failures.store(reregisterToo ? 3 : 1_000_000, ordering: .relaxed)
            _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
            var tries = 0
            while tries < 200, (try? await count()) ?? 0 == 0 {
                tries += 1
                try await loop.sleep(for: .milliseconds(10))
            }
            try await loop.sleep(for: .milliseconds(20))
            let before = try await loop.statistics().iterations
            try await loop.sleep(for: .milliseconds(100))
            let passes = try await loop.statistics().iterations - before
            let exhaustions = try await count()
            poller.failures.store(0, ordering: .relaxed)
            return (exhaustions, passes)
        }.value
        #expect(exhaustions >= 1, "the listener did not back off on \(backend)")
        #expect(exhaustions <= 2, "the accept was resumed and backed off again \(exhaustions) times on \(backend)")
        #expect(passes < 50, "\(passes) loop passes in 100 ms while backing off on \(backend) (reregister refused too: \(reregisterToo))")
        await loop.shutdown()
    }
}

/// Refuses deregister (and reregister, if asked) while `failures` is above 0, each refusal taking one.
final class P21RefusingChangesPoller: ForwardingPoller, @unchecked Sendable {
    let forwarded: any Poller
    let reregisterToo: Bool
    let failures = Atomic<Int>(0)
    init(_ forwarded: any Poller, reregisterToo: Bool) {
        self.forwarded = forwarded
        self.reregisterToo = reregisterToo
    }
    private func refuse() throws(PollerError) {
        if failures.load(ordering: .relaxed) > 0 {
            failures.subtract(1, ordering: .relaxed)
            throw .resourceExhausted(operation: "io_uring_enter(ASYNC_CANCEL)", errno: EAGAIN)
        }
    }
    func deregister(_ fd: CInt) throws(PollerError) {
        try refuse()
        try forwarded.deregister(fd)
    }
    /// Reregisters refused on their own, each refusal taking one.
    let reregisterFailures = Atomic<Int>(0)
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        if reregisterToo { try refuse() }
        if reregisterFailures.load(ordering: .relaxed) > 0 {
            reregisterFailures.subtract(1, ordering: .relaxed)
            throw .resourceExhausted(operation: "io_uring_enter(POLL_REMOVE)", errno: EAGAIN)
        }
        try forwarded.reregister(fd, token: token, interest: interest, trigger: trigger)
    }
}

extension PeerScenarioTests21 {
    /// The back-off let the registration go through the loop's kept deregisters (deregister and the
    /// one-shot re-arm refused), the deregister still refused when the back-off ended and the queued
    /// connection was accepted: the next accept's wait registered the number, which the poller still
    /// held (`alreadyRegistered`, which ends `serve`), where it is changed in place now (the diff's reader).
    @Test("an accept after a back-off whose deregister is still refused waits, not alreadyRegistered",
          .timeLimit(.minutes(1)), arguments: backends.filter { $0 != .ioUring })
    func acceptAfterRefusedBackoffWaits(backend: Backend) async throws {
        let made = Locked<P21RefusingChangesPoller?>(nil)
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            let poller = P21RefusingChangesPoller(try backend.makePoller(), reregisterToo: false)
            made.withLock { $0 = poller }
            return poller
        }
        let poller = try #require(made.withLock { $0 })
        var options = Listener.Options()
        options.backoff = AcceptBackoff(initial: .milliseconds(100), maximum: .milliseconds(100))
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"), options: options)
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        let id = listener.id
        let result = await Task(executorPreference: loop) { () async throws -> LoopError? in
            let count = { () async throws -> Int in
                try await loop.onLoop { (state) throws(LoopError) in try state.listener(id).listener.exhaustionCount }
            }
            let accepting = Task(executorPreference: loop) { try await listener.accept(timeout: .seconds(8)) }
            try await loop.sleep(for: .milliseconds(50))   // the accept waits: registered
            do {
                let exhaustion = try P4Exhaustion()
                defer { exhaustion.restore() }
                poller.failures.store(1_000_000, ordering: .relaxed)   // every deregister refused
                poller.reregisterFailures.store(1, ordering: .relaxed)  // and the one-shot re-arm
                _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
                var tries = 0
                while tries < 200, (try? await count()) ?? 0 == 0 {
                    tries += 1
                    try await loop.sleep(for: .milliseconds(10))
                }
            }
            // Descriptors back: the back-off ends (its timer) and the queued connection is accepted.
            let first = try await accepting.value
            await first.close()
            do throws(LoopError) {
                _ = try await listener.accept(timeout: .milliseconds(300))
                return nil
            } catch {
                return error
            }
        }.result
        poller.failures.store(0, ordering: .relaxed)
        await listener.close()
        await loop.shutdown()   // on every path: a loop left running would keep refusing its deregisters
        let outcome = try result.get()
        #expect(outcome == .timedOut, "the next accept ended \(String(describing: outcome)) on \(backend)")
    }
}

extension PeerScenarioTests21 {
    // MARK: Happy Eyeballs: an answer in before its wake-up is handled (SwiftNIO HappyEyeballsTest)

    /// The A answer first: the connect waits the resolution delay for AAAA. The AAAA answer comes
    /// within it, but the caller's loop handles the delay's timer before the wake-up that says so (the
    /// event loop fires timers before it runs submissions). Before, the step found no IPv6 address
    /// and started IPv4, IPv6 waiting a whole attempt delay after it.
    @Test("an AAAA answer delivered within the resolution delay goes first even when the delay's timer is handled before its wake-up",
          arguments: backends)
    func aaaaBeforeDelayTimerHandled(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let release = LookupRelease()
        defer { release.release() }
        let v4 = try closedPort()
        let v6 = try SocketAddress(ip: "::1", port: v4.port!)
        let resolver = ScriptedResolver(v6: [v6], v6Delay: .seconds(30), v4: [v4], v4Delay: .zero, release: release)
        let timers = Timers()
        var options = HappyEyeballs.Options()
        options.resolutionDelay = .seconds(1)
        let connect = HappyEyeballs(resolution: Resolution(host: "dual.test", port: v4.port!, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0, options: options)
        defer { connect.cancel() }
        // Each answer wakes the poller (its waker's event): the A answer is in, then the test lets the
        // AAAA one come (its lookup released) and sees it in, without handling either wake-up.
        let events = EventBuffer(capacity: 4)
        func awaitWakeup() throws -> Bool {
            for _ in 0..<100 {
                _ = try poller.wait(into: events, timeout: .milliseconds(100))
                if events.contains(where: { $0.isWakeup }) { return true }
            }
            return false
        }
        try #require(try awaitWakeup(), "no A answer in 10 s")
        #expect(connect.start().isInProgress)
        #expect(connect.attempts.isEmpty, "the A answer started an attempt at once: \(connect.attempts.map(\.address))")
        let began = ContinuousClock.now
        release.release()
        try #require(try awaitWakeup(), "no AAAA answer in 10 s")
        #expect(ContinuousClock.now - began < .milliseconds(900), "the AAAA answer came after the resolution delay: nothing measured")
        while ContinuousClock.now - began < .milliseconds(1_150) { usleep(10_000) }   // the delay's timer is due
        let now = MonotonicClock.nowNanoseconds
        while let token = timers.popDue(now: now) { _ = connect.handleTimer(token, now: now) }
        #expect(connect.attempts.first?.address.family == .ipv6, "first attempts: \(connect.attempts.map(\.address))")
    }
}

extension PeerScenarioTests21 {
    // MARK: a connect's winner, handed over, not yet taken (Go TestDialParallelSpuriousConnection)

    /// A Happy Eyeballs connect's winner is handed over by its attempt (which forgets the number) and
    /// kept in the connect's outcome until the connecting task runs again and adopts it. An
    /// `adopt(descriptor:)` of that number in between (a job queued ahead of the task) found it
    /// neither owned nor held, and took it: two owners, each closing it. Now it is held.
    @Test("a connect's winner handed over but not yet taken by its task is held by the loop: adopting its number is refused",
          arguments: backends)
    func handedOverWinnerIsHeld(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let held = try await Task(executorPreference: loop) { () async throws -> [Bool] in
            try await loop.onLoop { (state) throws(LoopError) -> [Bool] in
                let connect = try state.slab.insert { ConnectResource(key: $0, loop: state) }
                state.noteMayHoldUnowned(connect)
                connect.outcome = .connected(ConnectedSocket(fd: fd, local: nil, peer: nil))
                let byConnect = state.holdsUnowned(fd)
                connect.outcome = nil    // not closed by the release below: the test's
                state.close(connect, reason: .closed)
                let stream = try state.slab.insert { key in
                    StreamResource(key: key) { token in ConnectAttempt(to: try! SocketAddress("127.0.0.1:9"), poller: state.poller!, token: token, timeout: .seconds(1)) }
                }
                state.noteMayHoldUnowned(stream)
                stream.attempt?.cancel()
                stream.outcome = .connected(ConnectedSocket(fd: fd, local: nil, peer: nil))
                let byStream = state.holdsUnowned(fd)
                stream.outcome = nil
                state.close(stream, reason: .closed)
                return [byConnect, byStream]
            }
        }.value
        #expect(held == [true, true], "\(backend)")
        await loop.shutdown()
    }
}


extension PeerScenarioTests21 {
    // MARK: an adopted socket whose connect was in progress (libuv test-tcp-open tcp_write_ready)

    /// `peer` is what getpeername said when the handle was made: nil for a socket adopted while its
    /// connect was in progress. `peerAddress()` asks the kernel now (tokio's `peer_addr`). Before,
    /// nothing named the peer of such a socket once connected but `withStreamSocket`.
    @Test("a socket adopted while connecting names its peer once connected (peerAddress())",
          .timeLimit(.minutes(1)), arguments: backends)
    func adoptedConnectingSocketNamesPeer(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        // A listener whose accept queue is full: the next SYN is dropped, its connect stays in
        // progress until the queue drains and the SYN is sent again (about 1 s).
        let server = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        defer { close(server) }
        var any = try SocketAddress("127.0.0.1:0")
        try #require(any.withSockaddr { bind(server, $0, $1) } == 0 && listen(server, 0) == 0)
        any = try SocketAddress.local(of: server)
        let filler = try blockingConnect(any)
        defer { close(filler) }
        usleep(50_000)
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        let started = any.withSockaddr { Glibc.connect(fd, $0, $1) }
        try #require(started == -1 && errno == EINPROGRESS)
        let client = try await loop.adopt(descriptor: fd)
        let early = client.peer
        let queued = accept(server, nil, nil)   // the queue drains; the client's SYN comes again
        defer { close(queued) }
        try await client.write(Array("x".utf8), timeout: .seconds(10))   // waits for the connect
        #expect(await client.peerAddress() == any, "\(backend)")
        if early != nil { #expect(early == any) }   // connected before the adoption after all
        await client.close()
        #expect(await client.peerAddress() == nil)
        await loop.shutdown()
    }
}

extension PeerScenarioTests21 {
    /// Every deadline in a public signature is a `Deadline` (Docs/API.md): Happy Eyeballs' overall one
    /// too (`deadline`, the typed form of `startDeadline`; Go's `Dialer.Deadline`).
    @Test("HappyEyeballs.deadline is startDeadline as a Deadline")
    func happyEyeballsTypedDeadline() throws {
        let poller = try Backend.poll.makePoller()
        defer { try? poller.close() }
        let connect = HappyEyeballs(addresses: [try closedPort()], poller: poller, timers: Timers(), tokens: TokenBlock(first: 1))
        let when = Deadline(nanoseconds: MonotonicClock.nowNanoseconds + 3_000_000_000)
        connect.deadline = when
        #expect(connect.startDeadline == when.nanoseconds)
        connect.startDeadline = nil
        #expect(connect.deadline == nil)
        connect.cancel()
    }
}

extension PeerScenarioTests21 {
    // MARK: a caller's wait whose number another file took outside the loop (FlyingFox HTTPServerTests)

    /// FlyingFox's `stop()` closes its listener while its accept waits (`readable(fd)` through the
    /// adapter). Another file outside the loop takes the number (another server, a plain socket). A
    /// backend that watches numbers (poll, select, libevent's poll and select methods, io_uring's
    /// re-check) reported the new file's readiness under the stale registration: the wait ended
    /// ready, and the stopped server accepted on someone else's socket; epoll reported nothing. The
    /// wait now checks the file before it ends ready: `.closed` (or, on epoll, its timeout).
    @Test("a caller's wait whose number is taken by a file outside the loop never ends ready",
          .timeLimit(.minutes(1)), arguments: backends)
    func staleForeignWaitNotReadyOnOtherFile(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let (x, y) = try socketPair()
            defer { close(y) }
            let stale = Task(executorPreference: loop) { () async -> LoopError? in
                do throws(LoopError) { try await loop.readable(x, timeout: .milliseconds(700)) } catch { return error }
                return nil
            }
            // The loop holds the wait before the close (a late task would wait on the new file).
            var tries = 0
            while tries < 500, try await loop.onLoop({ (state) throws(LoopError) in state.foreign[x] == nil }) {
                tries += 1
                try await loop.sleep(for: .milliseconds(2))
            }
            try await loop.sleep(for: .milliseconds(20))
            close(x)
            let (p, q) = try socketPair()   // taken outside the loop: nothing of the loop waits on p
            defer { close(p); close(q) }
            guard p == x else {
                stale.cancel()
                _ = await stale.value
                try Test.cancel("another thread took descriptor \(x) first: the scenario did not happen")
            }
            var byte: UInt8 = 1
            #expect(write(q, &byte, 1) == 1)
            try await loop.sleep(for: .milliseconds(20))   // a loop pass that polls the number
            let outcome = await stale.value
            #expect(outcome == .closed || outcome == .timedOut, "ended \(String(describing: outcome)) on another file (\(backend))")
        }
    }
}
