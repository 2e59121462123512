import Glibc
import Readiness
import Synchronization
import Testing

/// A poller handed between threads by a test that knows what it does (the contract allows the waker
/// from any thread, and close while another thread waits).
private final class SharedPoller: @unchecked Sendable {
    let poller: any Poller
    init(_ poller: any Poller) { self.poller = poller }
}

private final class OrderBox: Sendable { let list = Mutex<[Int]>([]) }

private func streamPair() -> (CInt, CInt) {
    var fds: [CInt] = [-1, -1]
    socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds)
    return (fds[0], fds[1])
}

private func send(_ fd: CInt, _ text: String = "x") {
    var bytes = Array(text.utf8)
    _ = Glibc.write(fd, &bytes, bytes.count)
}

/// Second round of scenarios from other event libraries' test suites (CPython test_selectors, mio,
/// libevent regress, libuv test-poll-* and test-timer*, tokio time, Go dial, SwiftNIO Happy Eyeballs),
/// on areas the first round (PeerScenarioTests) did not reach.
@Suite("Peer scenarios, second round")
struct PeerScenarioTests2 {
    // MARK: The poller directly

    @Test("libuv poll-close-in-callback: deregistering and closing one fd while another's event from the same wait is handled", arguments: backends)
    func deregisterWhileHandling(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, a2) = streamPair(), (b, b2) = streamPair()
        defer { close(a); close(a2); close(b2) }
        try poller.register(a, token: 1, interest: .readable)
        try poller.register(b, token: 2, interest: .readable)
        send(a2); send(b2)
        let events = EventBuffer(capacity: 8)
        var seen: Set<Token> = []
        for _ in 0..<4 where seen.count < 2 {
            try poller.wait(into: events, timeout: .seconds(2))
            seen.formUnion(events.map(\.token))
        }
        #expect(seen == [1, 2])
        // Handling token 1, the program drops token 2's connection: deregister, close.
        try poller.deregister(b)
        close(b)
        // A new descriptor may reuse b's number; it must not be reported under token 2.
        let (c, c2) = streamPair()
        defer { close(c); close(c2) }
        send(c2)
        for _ in 0..<3 {
            try poller.wait(into: events, timeout: .milliseconds(20))
            #expect(events.map(\.token) == [1], "\(Array(events)) on \(backend)")
        }
        #expect(throws: PollerError.notRegistered(b)) { try poller.deregister(b) }
    }

    @Test("mio reregister: a readable fd re-registered for writable only reports writable, then readable again", arguments: backends)
    func reregisterInterestWithDataPending(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, a2) = streamPair()
        defer { close(a); close(a2) }
        send(a2, "pending")
        try poller.register(a, token: 7, interest: .readable)
        let events = EventBuffer(capacity: 8)
        #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
        #expect(events.first?.ready.contains(.readable) == true)
        try poller.reregister(a, token: 8, interest: .writable)
        #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
        #expect(events.first?.token == 8)
        #expect(events.first?.ready.contains(.writable) == true)
        #expect(events.first?.ready.contains(.readable) == false, "\(Array(events)) on \(backend)")
        try poller.reregister(a, token: 9, interest: .readable)
        #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
        #expect(events.first?.token == 9)
        #expect(events.first?.ready == .readable, "\(Array(events)) on \(backend)")
        try poller.deregister(a)
    }

    @Test("libevent regress re-add a fired event: one-shot re-armed with the same interest fires again, not before", arguments: backends)
    func oneShotReregisterSame(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, a2) = streamPair()
        defer { close(a); close(a2) }
        send(a2)
        try poller.register(a, token: 3, interest: .readable, trigger: .oneShot)
        let events = EventBuffer(capacity: 8)
        for round in 0..<5 {
            #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1, "round \(round) on \(backend)")
            #expect(events.first?.token == 3)
            // Disarmed: the data is still there, nothing is reported.
            #expect(try poller.wait(into: events, timeout: .milliseconds(10)) == 0, "round \(round) on \(backend)")
            try poller.reregister(a, token: 3, interest: .readable, trigger: .oneShot)
        }
        try poller.deregister(a)
    }

    @Test("many registrations: 10,000 (or up to the backend's limit), deregister every other one", arguments: backends)
    func manyRegistrations(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let limit = Int(min(poller.capabilities.maxDescriptor, 1 << 20))
        var pipes: [(CInt, CInt)] = []
        defer { for (r, w) in pipes { close(r); close(w) } }
        var registered: [CInt] = []
        while registered.count < 10_000 {
            var fds: [CInt] = [-1, -1]
            guard pipe(&fds) == 0 else { break }
            pipes.append((fds[0], fds[1]))
            if Int(fds[1]) > limit {
                #expect(throws: PollerError.descriptorTooLarge(fds[1], limit: CInt(limit + 1))) {
                    try poller.register(fds[1], token: Token(UInt64(fds[1])), interest: .writable)
                }
                break
            }
            try poller.register(fds[1], token: Token(UInt64(fds[1])), interest: .writable)
            registered.append(fds[1])
        }
        #expect(registered.count >= (limit > 20_000 ? 9_000 : 100), "\(registered.count) on \(backend)")
        for (i, fd) in registered.enumerated() where i % 2 == 0 { try poller.deregister(fd) }
        let kept = Set(registered.enumerated().filter { $0.offset % 2 == 1 }.map { Token(UInt64($0.element)) })
        let events = EventBuffer(capacity: 16_384)
        var seen: Set<Token> = []
        for _ in 0..<20 where seen.count < kept.count {
            try poller.wait(into: events, timeout: .seconds(2))
            for event in events where !event.isWakeup { seen.insert(event.token) }
        }
        #expect(seen == kept, "\(seen.count) of \(kept.count), \(seen.subtracting(kept).count) unexpected on \(backend)")
    }

    @Test("EventBuffer of capacity 1: three ready fds and the waker each get a turn", arguments: backends)
    func capacityOneFairness(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var pairs: [(CInt, CInt)] = []
        defer { for (x, y) in pairs { close(x); close(y) } }
        for i in 0..<3 {
            let pair = streamPair()
            pairs.append(pair)
            send(pair.1)
            try poller.register(pair.0, token: Token(UInt64(i)), interest: .readable)
        }
        try poller.wakeup()
        let events = EventBuffer(capacity: 1)
        var seen: Set<Token> = []
        for _ in 0..<12 {
            #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
            seen.insert(events[0].token)
        }
        #expect(seen == [0, 1, 2, .waker], "\(seen) on \(backend)")
    }

    @Test("CPython/mio: a wakeup before the wait, and a storm of 8 threads' wakes, give one wake-up event", arguments: backends)
    func wakeupBeforeAndStorm(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 8)
        try poller.wakeup()
        #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
        #expect(events.first?.isWakeup == true)
        #expect(try poller.wait(into: events, timeout: .milliseconds(10)) == 0)
        let waker = poller.waker
        let failures = Atomic<Int>(0)
        let joins = (0..<8).map { _ in spawn { for _ in 0..<1000 { do { try waker.wake() } catch { failures.add(1, ordering: .relaxed) } } } }
        for join in joins { join() }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(try poller.wait(into: events, timeout: .seconds(2)) == 1)
        #expect(events.first?.isWakeup == true)
        #expect(try poller.wait(into: events, timeout: .milliseconds(10)) == 0, "\(Array(events)) on \(backend)")
    }

    @Test("a wait with timeout nil is woken by another thread, and returns only the wake-up", arguments: backends)
    func nilTimeoutWokenByThread(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let waker = poller.waker
        let join = spawn { usleep(50_000); try? waker.wake() }
        let events = EventBuffer(capacity: 8)
        let start = ContinuousClock.now
        #expect(try poller.wait(into: events, timeout: nil) == 1)
        #expect(events.first?.isWakeup == true)
        #expect(ContinuousClock.now - start >= .milliseconds(40))
        join()
    }

    @Test("poller.close() while another thread waits (timeout nil or long): the wait ends with .closed, no hang, no leak", arguments: backends)
    func closeWhileWaiting(backend: Backend) throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let (a, a2) = streamPair()
        for round in 0..<30 {
            let shared = SharedPoller(try backend.makePoller())
            try shared.poller.register(a, token: 1, interest: .readable)
            let result = Mutex<String>("none")
            let entered = Atomic<Bool>(false)
            let timeout: Duration? = round % 2 == 0 ? nil : .seconds(60)
            let join = spawn {
                entered.store(true, ordering: .releasing)
                do {
                    let n = try shared.poller.wait(into: EventBuffer(capacity: 4), timeout: timeout)
                    result.withLock { $0 = "returned \(n)" }
                } catch {
                    result.withLock { $0 = "\(error)" }
                }
            }
            while !entered.load(ordering: .acquiring) { usleep(100) }
            // Some rounds close before the wait reached the kernel, most while it blocks there.
            if round % 3 != 0 { usleep(2_000) }
            let start = ContinuousClock.now
            try shared.poller.close()
            join()
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(result.withLock { $0 } == "\(PollerError.closed)", "round \(round) on \(backend)")
            #expect(throws: PollerError.closed) { try shared.poller.wait(into: EventBuffer(capacity: 4), timeout: .zero) }
            #expect(throws: PollerError.closed) { try shared.poller.close() }
        }
        close(a); close(a2)
        #expect(openDescriptorCount() == before, "on \(backend)")
    }

    @Test("poller.close() from another thread while the owner registers and waits: once a call failed with .closed every later one does, and the owner never reaches released descriptors",
          arguments: backends)
    func closeWhileOwnerWorks(backend: Backend) throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let pairs = (0..<8).map { _ in streamPair() }
        for round in 0..<20 {
            let shared = SharedPoller(try backend.makePoller())
            let log = Mutex<[String]>([])
            let entered = Atomic<Bool>(false)
            let join = spawn {
                entered.store(true, ordering: .releasing)
                var closedSeen = false
                // The owner: registration churn and short waits until the poller is closed under it,
                // then (as a loop that stops would) deregisters everything it had.
                for step in 0..<100_000 {
                    let fd = pairs[step % pairs.count].0
                    do {
                        if round % 2 == 0 {
                            try shared.poller.register(fd, token: Token(UInt64(step % pairs.count)), interest: .readable)
                            try shared.poller.deregister(fd)
                        } else {
                            try shared.poller.wait(into: EventBuffer(capacity: 4), timeout: .milliseconds(1))
                        }
                        if closedSeen { log.withLock { $0.append("a call after .closed succeeded at step \(step)") } }
                    } catch PollerError.closed {
                        closedSeen = true
                    } catch {
                        log.withLock { $0.append("step \(step): \(error)") }
                    }
                    if closedSeen {
                        for (a, _) in pairs {
                            do {
                                try shared.poller.deregister(a)
                                log.withLock { $0.append("deregister after .closed succeeded") }
                            } catch PollerError.closed {
                            } catch {
                                log.withLock { $0.append("deregister after .closed: \(error)") }
                            }
                        }
                        return
                    }
                }
                log.withLock { $0.append("never closed") }
            }
            while !entered.load(ordering: .acquiring) { usleep(100) }
            usleep(UInt32(500 + round * 100))
            try shared.poller.close()
            join()
            #expect(log.withLock { $0 } == [], "round \(round) on \(backend)")
        }
        for (a, b) in pairs { close(a); close(b) }
        #expect(openDescriptorCount() == before, "on \(backend)")
    }

    @Test("CPython test_selectors: register, reregister and deregister of a closed fd; wait after deregister", arguments: backends)
    func closedDescriptorCalls(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, a2) = streamPair()
        close(a2)
        close(a)
        #expect(throws: PollerError.badDescriptor(a)) { try poller.register(a, token: 1, interest: .readable) }
        #expect(throws: PollerError.notRegistered(a)) { try poller.reregister(a, token: 1, interest: .readable) }
        #expect(throws: PollerError.notRegistered(a)) { try poller.deregister(a) }
        let (b, b2) = streamPair()
        defer { close(b2) }
        try poller.register(b, token: 2, interest: .readable)
        send(b2)
        close(b)
        #expect(throws: PollerError.badDescriptor(b)) { try poller.reregister(b, token: 2, interest: .writable) }
        try poller.deregister(b)
        let start = ContinuousClock.now
        #expect(try poller.wait(into: EventBuffer(capacity: 4), timeout: .milliseconds(30)) == 0)
        #expect(ContinuousClock.now - start >= .milliseconds(30))
    }

    @Test("libevent regress timeouts 0 and extremes: zero, negative, tiny and huge timeouts with nothing ready", arguments: backends)
    func waitTimeoutExtremes(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let events = EventBuffer(capacity: 4)
        for timeout: Duration in [.zero, .nanoseconds(-1), .seconds(-1_000_000), .nanoseconds(1), Duration(secondsComponent: 0, attosecondsComponent: 1), Duration(secondsComponent: 0, attosecondsComponent: -1)] {
            let start = ContinuousClock.now
            #expect(try poller.wait(into: events, timeout: timeout) == 0, "\(timeout) on \(backend)")
            #expect(ContinuousClock.now - start < .seconds(2), "\(timeout) on \(backend)")
        }
        // A huge timeout is a block that a wake ends.
        for timeout: Duration in [.seconds(Int64.max), Duration(secondsComponent: .max, attosecondsComponent: .max), .seconds(1 << 40)] {
            try poller.wakeup()
            #expect(try poller.wait(into: events, timeout: timeout) == 1, "\(timeout) on \(backend)")
            #expect(events.first?.isWakeup == true)
        }
    }

    // MARK: Timers (libuv test-timer*, tokio time)

    @Test("libuv timer order: same deadline fires in scheduling order; a timer cancelled by another's firing does not fire", arguments: backends)
    func timerOrderAndCancelFromFiring(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let timers = Timers()
        let deadline = Deadline.after(.milliseconds(20))
        var ids: [Token: TimerID] = [:]
        for i in 0..<50 { ids[Token(UInt64(i))] = timers.schedule(at: deadline, token: Token(UInt64(i))) }
        let events = EventBuffer(capacity: 4)
        var fired: [UInt64] = []
        while !timers.isEmpty {
            try poller.wait(into: events, timeout: timers.timeout())
            let now = Deadline.now
            while let token = timers.popDue(now: now) {
                fired.append(token.rawValue)
                // Token 10's work stops timer 11 (uv_timer_stop inside another's callback) and starts a
                // new one due now (start from callback): it fires in this same pass, after the others.
                if token == 10 {
                    #expect(timers.cancel(ids[11]!))
                    timers.schedule(after: .zero, token: 1000, now: now)
                }
            }
        }
        #expect(fired == Array(0...10) + Array(12..<50) + [1000], "on \(backend)")
        #expect(!timers.cancel(ids[11]!))
        #expect(!timers.cancel(ids[0]!))
    }

    @Test("tokio sleep(0), sleep(MAX), reset: timers with extreme delays and repeat (uv_timer_again)", arguments: backends)
    func timerExtremes(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let timers = Timers()
        let never = timers.schedule(after: Duration(secondsComponent: .max, attosecondsComponent: .max), token: 1)
        let never2 = timers.schedule(at: .distantFuture, token: 2)
        timers.schedule(after: .seconds(-5), token: 3)
        timers.schedule(at: Deadline(nanoseconds: .min), token: 4)
        timers.schedule(after: .zero, token: 5)
        #expect(timers.timeout() == .zero)
        var fired: [UInt64] = []
        while let token = timers.popDue() { fired.append(token.rawValue) }
        #expect(fired == [4, 3, 5])
        #expect(timers.count == 2)
        #expect(timers.timeout()! > .seconds(1 << 30))
        // A wait on it is a block that a wake ends, not an overflow or a busy loop.
        try poller.wakeup()
        #expect(try poller.wait(into: EventBuffer(capacity: 2), timeout: timers.timeout()) == 1)
        #expect(timers.popDue() == nil)
        // Reset (tokio Sleep::reset, uv_timer_again): cancel and schedule anew, ten times.
        var repeating = timers.schedule(after: .milliseconds(5), token: 6)
        var fires = 0
        let start = ContinuousClock.now
        let events = EventBuffer(capacity: 2)
        while fires < 10 {
            try poller.wait(into: events, timeout: timers.timeout())
            let now = Deadline.now
            while let token = timers.popDue(now: now) {
                #expect(token == 6)
                fires += 1
                repeating = timers.schedule(after: .milliseconds(5), token: 6, now: now)
            }
        }
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(timers.cancel(repeating))
        #expect(timers.cancel(never) && timers.cancel(never2))
        #expect(timers.isEmpty && timers.timeout() == nil)
        #expect(timers.timeout(limit: .seconds(-3)) == .zero)
    }

    @Test("Timers(capacity:) with any count (negative, zero, huge, Int.max) never traps and works")
    func timersCapacityExtremes() {
        for capacity in [Int.min, -1, 0, 1, 1 << 40, Int.max] {
            let timers = Timers(capacity: capacity)
            let id = timers.schedule(after: .zero, token: 1)
            timers.schedule(after: .seconds(1), token: 2)
            #expect(timers.popDue() == 1)
            #expect(!timers.cancel(id))
            #expect(timers.count == 1)
        }
    }

    @Test("tokio many timers: 10,000 random deadlines fire in order, cancelling half", arguments: [backends.first!])
    func manyTimers(backend: Backend) throws {
        let timers = Timers()
        var generator = SystemRandomNumberGenerator()
        let base = Deadline.now
        var ids: [(TimerID, Int64)] = []
        for i in 0..<10_000 {
            let at = Int64.random(in: 0..<1_000_000, using: &generator)
            ids.append((timers.schedule(at: Deadline(nanoseconds: base.nanoseconds + at), token: Token(UInt64(i))), at))
        }
        var cancelled = Set<UInt64>()
        for i in stride(from: 0, to: 10_000, by: 2) { #expect(timers.cancel(ids[i].0)); cancelled.insert(UInt64(i)) }
        var last: Int64 = -1
        var count = 0
        while let token = timers.popDue(now: Deadline(nanoseconds: base.nanoseconds + 1_000_000)) {
            #expect(!cancelled.contains(token.rawValue))
            let at = ids[Int(token.rawValue)].1
            #expect(at >= last)
            last = at
            count += 1
        }
        #expect(count == 5_000)
    }

    @Test("async loop.sleep: zero, negative, then Duration max cancelled; sleeps end in deadline order", arguments: backends)
    func asyncSleepExtremes(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let start = ContinuousClock.now
            try await loop.sleep(for: .zero)
            try await loop.sleep(for: .seconds(-10))
            try await loop.sleep(for: .nanoseconds(1))
            #expect(ContinuousClock.now - start < .seconds(2))
            let forever = Task { () async -> LoopError? in
                do throws(LoopError) { try await loop.sleep(for: Duration(secondsComponent: .max, attosecondsComponent: .max)); return nil } catch { return error }
            }
            try await loop.sleep(for: .milliseconds(20))
            forever.cancel()
            #expect(await forever.value == .cancelled, "on \(backend)")
            let order = OrderBox()
            // Deadlines from one instant 100 ms ahead, appended on the loop: a child task started or
            // resumed late on a loaded machine cannot reorder them.
            let base: Deadline = .after(.milliseconds(100))
            await withTaskGroup(of: Void.self) { group in
                for i in [3, 1, 2, 0] {
                    group.addTask(executorPreference: loop) {
                        try? await loop.sleep(until: Deadline.after(.milliseconds(15 * i), now: base))
                        order.list.withLock { $0.append(i) }
                    }
                }
            }
            #expect(order.list.withLock { $0 } == [0, 1, 2, 3], "on \(backend)")
        }
    }

    @Test("libuv loop close with active timers / tokio runtime drop: sleeps and a connect in progress end with .shutdown", arguments: backends)
    func shutdownEndsSleeps(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let full = try fullTCPListener()
        let loop = try EventLoop(backend: backend)
        let sleeps = (0..<10).map { i in
            Task { () async -> LoopError? in
                do throws(LoopError) { try await loop.sleep(for: i == 0 ? Duration(secondsComponent: .max, attosecondsComponent: 0) : .seconds(3_600)); return nil } catch { return error }
            }
        }
        let connecting = Task { () async -> String in
            do throws(LoopError) { let s = try await loop.connect(to: full.address, timeout: nil); await s.close(); return "connected" } catch { return "\(error)" }
        }
        try await loop.sleep(for: .milliseconds(30))
        let start = ContinuousClock.now
        await loop.shutdown()
        for sleep in sleeps { #expect(await sleep.value == .shutdown, "on \(backend)") }
        #expect(await connecting.value == "\(LoopError.shutdown)", "on \(backend)")
        #expect(ContinuousClock.now - start < .seconds(5))
        do throws(LoopError) {
            try await loop.sleep(for: .zero)
            Issue.record("a sleep on a shut-down loop succeeded on \(backend)")
        } catch {
            #expect(error == .shutdown)
        }
        close(full.fd); for fd in full.fillers { close(fd) }
        #expect(await settledDescriptorCount(before) == before, "on \(backend)")
    }

    // MARK: Connect and Happy Eyeballs (Go dial_test, SwiftNIO HappyEyeballsTests, libuv tcp-connect-error)

    @Test("SwiftNIO all connections fail: both families refused gives .failed listing every attempt", arguments: backends)
    func allAttemptsFail(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let v4 = try closedPort()
        let v6 = try SocketAddress(ip: "::1", port: v4.port!)
        let resolver = ScriptedResolver(v6: [v6], v6Delay: .zero, v4: [v4, v4], v4Delay: .milliseconds(5))
        let timers = Timers()
        let before = openDescriptorCount()
        let connect = HappyEyeballs(resolution: Resolution(host: "dead.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .failed(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.attempts.count == 3, "\(error)")
        #expect(error.attempts.allSatisfy { $0.cause == .refused || $0.cause == .unreachable || $0.cause == .addressUnavailable }, "\(error)")
        #expect(timers.isEmpty)
        #expect(openDescriptorCount() == before)
    }

    @Test("Go dual-stack fallback / NIO slow A: AAAA fails at once with a resolver error, A later connects", arguments: backends)
    func aaaaErrorAThenConnects(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let resolver = ScriptedResolver(v6: [], v6Delay: .zero, v4: [listener.address], v4Delay: .milliseconds(120))
        let timers = Timers()
        let connect = HappyEyeballs(resolution: Resolution(host: "v4only.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        #expect(connect.attempts.map(\.address) == [listener.address])
        close(socket.fd)
    }

    @Test("connect(toHost:) input checks: NUL, empty host, ports 0/65536/-1/huge, bad options: typed errors", arguments: [backends.first!])
    func connectToHostInputs(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        for text in ["local\u{0}host:80", ":80", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:99999999999999999999999", "127.0.0.1", "[::1:80", "127.0.0.1:\u{0}80"] {
            do {
                _ = try Connector.connect(toHost: text, on: poller)
                Issue.record("\(text.debugDescription) connected")
            } catch {
                guard case .invalid = error else { Issue.record("\(text.debugDescription): \(error)"); continue }
            }
        }
        var options = HappyEyeballs.Options()
        options.maximumAttempts = 0
        #expect { _ = try Connector.connect(toHost: "127.0.0.1:1", on: poller, options: options) } throws: { error in
            if case HostConnectError.invalidOptions = error { return true } else { return false }
        }
        options = HappyEyeballs.Options()
        options.attemptDelay = .seconds(-1)
        #expect { _ = try Connector.connect(toHost: "127.0.0.1:1", on: poller, options: options) } throws: { _ in true }
    }

    @Test("Go dial timeout: a connect to a full backlog ends with a timeout near its deadline, nothing leaked", arguments: backends)
    func dialTimeout(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let full = try fullTCPListener()
        defer { close(full.fd); for fd in full.fillers { close(fd) } }
        let before = openDescriptorCount()
        let start = ContinuousClock.now
        do {
            let socket = try Connector.connect(to: full.address, on: poller, timeout: .milliseconds(150))
            close(socket.fd)
            Issue.record("connected to a full backlog on \(backend)")
        } catch {
            #expect(error.cause == .timedOut, "\(error)")
        }
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(150) && took < .seconds(3), "\(took)")
        #expect(openDescriptorCount() == before)
    }

    @Test("libuv tcp-close-while-connecting / Go dial with a cancelled context: async connects cancelled before and during the connect", arguments: backends)
    func asyncConnectCancelled(backend: Backend) async throws {
        let full = try fullTCPListener()
        defer { close(full.fd); for fd in full.fillers { close(fd) } }
        try await withLoop(backend) { loop in
            // Cancelled before it starts: .cancelled at once, nothing connected.
            let early = Task { () async -> String in
                withUnsafeCurrentTask { $0?.cancel() }
                do throws(LoopError) { _ = try await loop.connect(to: full.address, timeout: .seconds(30)); return "connected" } catch { return "\(error)" }
            }
            #expect(await early.value == "\(LoopError.cancelled)", "on \(backend)")
            // Cancelled while the SYN waits on a full backlog, single address and Happy Eyeballs.
            for useList in [false, true] {
                let start = ContinuousClock.now
                let task = Task { () async -> String in
                    do throws(LoopError) {
                        let socket = useList ? try await loop.connect(to: [full.address, full.address], timeout: .seconds(30))
                                             : try await loop.connect(to: full.address, timeout: .seconds(30))
                        await socket.close()
                        return "connected"
                    } catch { return "\(error)" }
                }
                try await loop.sleep(for: .milliseconds(50))
                task.cancel()
                #expect(await task.value == "\(LoopError.cancelled)", "list \(useList) on \(backend)")
                #expect(ContinuousClock.now - start < .seconds(5))
            }
            // Resolution cancelled while the injected resolver is slow (SwiftNIO slow AAAA and A).
            let release = LookupRelease()
            defer { release.release() }
            let resolver = ScriptedResolver(v6: [], v6Delay: .seconds(5), v4: [], v4Delay: .seconds(5), release: release)
            let slow = Task { () async -> String in
                do throws(LoopError) { _ = try await loop.connect(host: "slow.test", port: 80, timeout: .seconds(30), resolver: resolver); return "connected" } catch { return "\(error)" }
            }
            try await loop.sleep(for: .milliseconds(30))
            slow.cancel()
            #expect(await slow.value == "\(LoopError.cancelled)", "on \(backend)")
            release.release()
        }
    }

    @Test("libuv test-poll-oob: urgent data does not make a readable registration spin; the normal data is reported", arguments: backends)
    func outOfBandData(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let client = try Connector.connect(to: listener.address, on: poller, timeout: .seconds(2))
        defer { close(client.fd) }
        var server: CInt = -1
        for _ in 0..<200 where server < 0 { server = accept(listener.fd, nil, nil); if server < 0 { usleep(5_000) } }
        try #require(server >= 0)
        defer { close(server) }
        try poller.register(server, token: 5, interest: .readable)
        var bang: UInt8 = 33
        #expect(Glibc.send(client.fd, &bang, 1, CInt(MSG_OOB)) == 1)
        usleep(20_000)
        let events = EventBuffer(capacity: 4)
        // Only urgent data: whatever a backend reports, a bounded number of waits and no spinning of
        // a 20 ms wait into hundreds of events.
        var reports = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(60) {
            reports += try poller.wait(into: events, timeout: .milliseconds(20))
            var byte: UInt8 = 0
            _ = recv(server, &byte, 1, CInt(MSG_OOB | MSG_DONTWAIT))
        }
        #expect(reports < 20, "\(reports) reports on \(backend)")
        send(client.fd, "abc")
        var got: [UInt8] = []
        let giveUp = ContinuousClock.now + .seconds(2)
        while got.count < 3 && ContinuousClock.now < giveUp {
            try poller.wait(into: events, timeout: .milliseconds(100))
            var buffer = [UInt8](repeating: 0, count: 16)
            let n = recv(server, &buffer, 16, CInt(MSG_DONTWAIT))
            if n > 0 { got += buffer[..<n] }
        }
        #expect(got == Array("abc".utf8), "on \(backend)")
        try poller.deregister(server)
        _ = listener
    }

    @Test("tokio many timers, async: 2,000 sleeps, half cancelled, the rest end", arguments: backends)
    func asyncManySleeps(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let results = await withTaskGroup(of: LoopError?.self, returning: [LoopError?].self) { group in
                var tasks: [Task<LoopError?, Never>] = []
                for i in 0..<2_000 {
                    let task = Task { () async -> LoopError? in
                        do throws(LoopError) { try await loop.sleep(for: i % 2 == 0 ? .seconds(3_600) : .milliseconds(Int64(i % 50))); return nil } catch { return error }
                    }
                    tasks.append(task)
                }
                try? await loop.sleep(for: .milliseconds(20))
                for (i, task) in tasks.enumerated() where i % 2 == 0 { task.cancel() }
                for task in tasks { group.addTask { await task.value } }
                var all: [LoopError?] = []
                for await result in group { all.append(result) }
                return all
            }
            #expect(results.count == 2_000)
            #expect(results.filter { $0 == .cancelled }.count == 1_000, "on \(backend)")
            #expect(results.filter { $0 == nil }.count == 1_000, "on \(backend)")
        }
    }

    @Test("connect state machine, getsockopt conventions: an errno of any value (negative, huge, 0 by -1) gives a typed failure and a description")
    func stateMachineOddErrnos() {
        let address = try! SocketAddress("127.0.0.1:9")
        for code: CInt in [-1, .min, .max, 4096, EINTR, EINPROGRESS, EAGAIN, 0] {
            for result: ConnectStateMachine.SocketErrorResult in [.value(code), .callFailed(code)] {
                var machine = ConnectStateMachine(address: address)
                _ = machine.handle(.connectReturned(errno: EINPROGRESS))
                machine.didRegister()
                #expect(machine.handle(.woke(.writable)) == .readSocketError)
                let action = machine.handle(.socketError(result))
                if case .value(0) = result {
                    #expect(action == .readAddresses)
                    continue
                }
                guard case .failed(let error) = machine.state else { Issue.record("\(result): \(machine.state)"); continue }
                #expect(!error.description.isEmpty)
                // Later events after the end change nothing.
                #expect(machine.handle(.woke(.readable)) == .none)
                #expect(machine.handle(.cancel) == .none || machine.state.isFinal)
            }
            var machine = ConnectStateMachine(address: address)
            _ = machine.handle(.connectReturned(errno: code))
            _ = "\(machine.state)"
        }
    }

    // MARK: CLI

    @Test("readiness CLI: bad input gives a message and a non-zero exit, never a trap")
    func cliBadInput() throws {
        let tool = try builtExecutable("readiness")
        let json = try Spawned([tool, "backends", "--json"]).finish()
        #expect(json.status == 0)
        #expect(json.output.hasPrefix("[{") && json.output.contains("\"chosen\":true"))
        let cases: [[String]] = [
            ["connect", "127.0.0.1:65536"], ["connect", "127.0.0.1:-1"], ["connect", "127.0.0.1:99999999999999999999999"],
            ["connect", "127.0.0.1:80", "--backend", "nope"], ["connect", ":80"], ["connect", "a\u{1}b:80"],
            ["connect", "127.0.0.1:1", "--timeout", "9223372036854775808"], ["connect", "127.0.0.1:1", "--timeout=-1"],
            ["conformance", "--only", "no-such-scenario"], ["conformance", "--backend", "nope", "--only", "closed"],
            ["no-such-command"],
        ]
        for arguments in cases {
            let (status, output) = try Spawned([tool] + arguments).finish()
            #expect(status != 0 && status < 128, "\(arguments): \(status)")
            #expect(output.contains("Error") || output.contains("error"), "\(arguments): \(output)")
        }
    }
}
