import Glibc
@_spi(Backend) import Readiness
import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 41.
@Suite("Peer scenarios 13", .serialized)
struct PeerScenarioTests13 {
    // MARK: Happy Eyeballs (the Happy Eyeballs reader: RFC 8305 section 5, SwiftNIO's connectFailed)

    /// Addresses that never answer, a 100 ms attempt delay and a 100 ms attempt timeout: at 100 ms
    /// the step starts the second attempt and the first one's own timeout ends it in the same turn.
    /// Before, that failure started a third attempt 0.1 ms after the second (RFC 8305 section 5: not
    /// within 10 ms of the previous attempt; SwiftNIO starts early only when nothing is pending).
    @Test("an earlier attempt's timeout does not start another beside the step's", arguments: backends)
    func earlierAttemptFailureKeepsTheStep(backend: Backend) throws {
        let full = try fullTCPListener()
        defer { close(full.fd); full.fillers.forEach { close($0) } }
        let starts = try attemptStarts(backend, Array(repeating: full.address, count: 5), delay: 100, timeout: 100, for: 370)
        let gaps = zip(starts.dropFirst(), starts).map { $0 - $1 }
        // Attempts at about 0, 100, 200 and 300 ms: four, each gap near the 100 ms delay (three when a
        // loaded machine stalls the loop by more than 70 ms; the bug started a fifth, 0.1 ms after one).
        #expect((3...4).contains(starts.count), "\(backend): attempts at \(starts) ms")
        #expect(gaps.allSatisfy { $0 >= 10 }, "\(backend): gaps \(gaps) ms")
    }

    /// The newest attempt refused at once while an earlier one still connects: the next starts
    /// without waiting for the step, but 10 ms after the refused one's start (before: 0.1 ms after).
    @Test("a refusal beside a running attempt starts the next 10 ms after its own start", arguments: backends)
    func refusalBesideRunningAttempt(backend: Backend) throws {
        let full = try fullTCPListener()
        defer { close(full.fd); full.fillers.forEach { close($0) } }
        let refused = try closedPort()
        let starts = try attemptStarts(backend, [full.address, refused, full.address, full.address], delay: 400, timeout: nil, for: 700)
        // 0, 400 (refused), 410: the third well before the step at 800, and not with the refusal (a
        // 400 ms delay and a 700 ms window leave room for a loaded machine's stalls).
        #expect(starts.count == 3, "\(backend): attempts at \(starts) ms")
        if starts.count >= 3 { #expect(starts[2] - starts[1] >= 9 && starts[2] - starts[1] < 300, "\(backend): attempts at \(starts) ms") }
    }

    /// Drives a Happy Eyeballs connect to `addresses` for `milliseconds` and returns when each attempt
    /// started (milliseconds from the start).
    private func attemptStarts(_ backend: Backend, _ addresses: [SocketAddress], delay: Int, timeout: Int?,
                               for milliseconds: Int64) throws -> [Int64] {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var options = HappyEyeballs.Options()
        options.attemptDelay = .milliseconds(delay)
        options.attemptTimeout = timeout.map { .milliseconds($0) }
        let timers = Timers()
        let connect = HappyEyeballs(addresses: addresses, poller: poller, timers: timers, tokenBase: 0, options: options)
        defer { connect.cancel() }
        let start = MonotonicClock.nowNanoseconds
        let end = start + milliseconds * 1_000_000
        var starts: [Int64] = []
        func note() {
            while starts.count < connect.attempts.count { starts.append((MonotonicClock.nowNanoseconds - start) / 1_000_000) }
        }
        var progress = connect.start()
        let events = EventBuffer(capacity: 8)
        while MonotonicClock.nowNanoseconds < end, case .inProgress = progress {
            note()
            let left = Duration.nanoseconds(max(0, end - MonotonicClock.nowNanoseconds))
            try poller.wait(into: events, timeout: min(timers.timeout() ?? left, left))
            for event in events where connect.owns(event.token) {
                progress = connect.handle(event)
                note()
            }
            let now = MonotonicClock.nowNanoseconds
            while case .inProgress = progress, let token = timers.popDue(now: now) {
                progress = connect.handleTimer(token, now: now)
                note()
            }
        }
        note()
        return starts
    }

    // MARK: Descriptor checks (the descriptor-lifecycle reader: CPython's test_selectors, libuv)

    /// A terminal (a character device, asked of the kernel on every backend but epoll) registered,
    /// then the process out of descriptors: re-arming it and registering another terminal opened
    /// before work as on epoll. Before, each check made a throwaway epoll set: `resourceExhausted`
    /// (EMFILE) on poll, select, io_uring and libevent, while epoll's own `epoll_ctl` needed none.
    @Test("a device is re-armed and registered with no descriptor left, on every backend", arguments: backends)
    func deviceCheckNeedsNoDescriptor(backend: Backend) throws {
        let before = openDescriptorCount()
        do {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            let first = open("/dev/ptmx", O_RDWR | O_NOCTTY)
            let second = open("/dev/ptmx", O_RDWR | O_NOCTTY)
            defer { close(first); close(second) }
            try #require(first >= 0 && second >= 0, "no pseudo-terminal here")
            try poller.register(first, token: Token(rawValue: 1), interest: .readable)
            let outcome = withDescriptorsExhausted { () -> String in
                do {
                    try poller.reregister(first, token: Token(rawValue: 1), interest: [.readable, .writable])
                    try poller.register(second, token: Token(rawValue: 2), interest: .readable)
                    return "ok"
                } catch { return "\(error)" }
            }
            #expect(outcome == "ok", "\(backend)")
        }
        #expect(openDescriptorCount() == before, "\(backend): a descriptor left behind")
    }

    // MARK: The load clients under resets (the write-path reader)

    /// A server that closes its first connection after two responses and resets the second as soon
    /// as it is accepted (SO_LINGER 0), then serves: the sync load client ended the whole run with
    /// "reset (ECONNRESET) connecting to" (exit 1) when the reset reached its reconnect. Now a
    /// reconnect that fails is a failed request, as in the async client, and the run goes on.
    @Test("the HTTP load clients go on when a reconnect is reset",
          arguments: ["readiness-http-load", "readiness-async-http-load"])
    func loadClientReconnectReset(example: String) throws {
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let fd = listener.fd
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
        let join = spawn {
            for accepted in 1...8 {
                guard let connection = acceptWithin10Seconds(fd) else { return }
                if accepted == 2 {
                    var reset = linger(l_onoff: 1, l_linger: 0)
                    setsockopt(connection, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
                    close(connection)
                    continue
                }
                defer { close(connection) }
                // The first connection serves two requests and closes; the others serve all.
                answerRequests(on: connection) { served in
                    sendAll(answer, on: connection)
                    return accepted != 1 || served < 2
                }
            }
        }
        let client = try Spawned([try builtExecutable(example), "--url", "http://\(listener.address)/",
                                  "--connections", "1", "--requests", "6", "--timeout", "5"])
        let (status, output) = client.finish()
        shutdown(fd, CInt(SHUT_RDWR))
        join()
        #expect(status == 0, "\(output)")
        // Six requests: all answered, or one counted failed (the reset met by the reconnect itself).
        #expect(output.contains("requests 6 ok 6 failed 0") || output.contains("requests 6 ok 5 failed 1"), "\(output)")
    }

    // MARK: A large write shares the loop (the write-path reader: tokio's coop budget per send,
    // SwiftNIO's writeSpinCount)

    /// A 32 MiB write to a Unix socket whose send buffer takes it all (SO_SNDBUFFORCE, root): every
    /// form of write, on every backend and driver, lets a task that yields on the same loop run while
    /// it goes on. Before, the write went out in one job (a single send of 32 MiB on every backend):
    /// the loop's other tasks, I/O and timers waited for all of it (78 ms for 512 MiB in the reader's
    /// probe; a send is now at most 1 MiB and a job's budget is charged per 64 KiB sent).
    @Test("a large write lets the loop's other tasks run while it goes on",
          .enabled(if: canForceSendBuffer(), "SO_SNDBUFFORCE needs CAP_NET_ADMIN"), .timeLimit(.minutes(1)),
          arguments: backends)
    func largeWriteSharesTheLoop(backend: Backend) async throws {
        let payload = LargeWritePayload()
        for form in ["[UInt8]", "Bytes", "raw", "vectored"] {
            let loop = try EventLoop(backend: backend)
            let (socket, b) = try await payload.forcedPair(on: loop)
            defer { close(b) }
            let flags = TurnCounter()
            let yielder = Task(executorPreference: loop) {
                while !flags.stop.load(ordering: .relaxed) {
                    flags.turns.add(1, ordering: .relaxed)
                    await Task.yield()
                }
            }
            while flags.turns.load(ordering: .relaxed) == 0 { usleep(1_000) }
            let outcome = await Task(executorPreference: loop) { () async -> String in
                let before = flags.turns.load(ordering: .relaxed)
                do throws(LoopError) { try await payload.write(form, to: socket) } catch { return "\(error)" }
                return flags.turns.load(ordering: .relaxed) > before ? "shared" : "held the loop"
            }.value
            flags.stop.store(true, ordering: .relaxed)
            await yielder.value
            #expect(outcome == "shared", "\(backend), \(form)")
            // Every byte arrived, in order (read on this thread once the write ended).
            var received = 0
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            var entry = pollfd(fd: b, events: Int16(POLLIN), revents: 0)
            while received < payload.size, poll(&entry, 1, 1_000) == 1 {
                let n = recv(b, &chunk, chunk.count, 0)
                if n <= 0 { break }
                if chunk[0] != 7 || chunk[n - 1] != 7 { break }
                received += n
            }
            #expect(received == payload.size, "\(backend), \(form)")
            await socket.close()
            await loop.shutdown()
        }
    }
}

extension PeerScenarioTests13 {
    // MARK: Scale (the scale-and-exhaustion reader: tokio from_std, mio register, libuv uv_tcp_open)

    /// A server adopting sockets one by one (its own acceptor handing them to a loop): each adoption
    /// scanned every resource the loop held (to refuse a descriptor a connect in progress holds), so
    /// n adoptions took time in n²: the last thousand of 6,000 took several times the first thousand.
    /// Now only the resources that may hold such a descriptor are asked.
    @Test("adopting many sockets costs the same for the last as for the first", .timeLimit(.minutes(2)))
    func adoptionDoesNotScan() async throws {
        raiseDescriptorLimit()
        let loop = try EventLoop(backend: .epoll)
        var pairs: [(CInt, CInt)] = []
        for _ in 0..<3_000 { pairs.append(try socketPair()) }   // each end adopted, closed by its socket
        var adopted: [AsyncSocket] = []
        var batches: [Duration] = []
        let descriptors = pairs.flatMap { [$0.0, $0.1] }
        var clock = ContinuousClock.now
        for (index, fd) in descriptors.enumerated() {
            adopted.append(try await loop.adopt(descriptor: fd))
            if (index + 1) % 1_000 == 0 {
                batches.append(ContinuousClock.now - clock)
                clock = ContinuousClock.now
            }
        }
        // Before: 6x and more between the first thousand and the last (debug build, epoll).
        #expect(batches.last! < batches.first! * 3 + .milliseconds(150), "\(batches)")
        for socket in adopted { await socket.close() }
        await loop.shutdown()
    }
}

extension PeerScenarioTests13 {
    /// Many level registrations ready at once and a buffer smaller than them (mio's events capacity,
    /// libevent's test_many_events): every one is reported within about (ready ÷ capacity) waits, as
    /// epoll's ready list gives. io_uring took 13 waits for 3,000 ready with a buffer of 512, where
    /// epoll took 5 (the scale reader): once the kernel's flag for deferred work had cleared (6.13
    /// and later keep what a batch leaves on a retry list), the last completions came 20 a wait,
    /// behind the registrations reported before.
    @Test("every ready level registration is reported within about (ready ÷ capacity) waits", arguments: backends)
    func readyRegistrationsTakeTurns(backend: Backend) throws {
        raiseDescriptorLimit()
        let count = backend.name.contains("select") ? 400 : 3_000
        let capacity = backend.name.contains("select") ? 64 : 512
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let pairs = try readyRegistrations(count, on: poller)
        defer { for (a, b) in pairs { close(a); close(b) } }
        let events = EventBuffer(capacity: capacity)
        var seen = Set<UInt64>()
        var waits = 0
        while seen.count < count, waits < 100 {
            try poller.wait(into: events, timeout: .zero)
            waits += 1
            for event in events where !event.isWakeup { seen.insert(event.token.rawValue) }
        }
        let rounds = (count + capacity - 1) / capacity
        #expect(seen.count == count, "\(backend)")
        #expect(waits <= rounds + 2, "\(backend): \(waits) waits to report \(count) ready registrations \(capacity) at a time")
    }
}

extension PeerScenarioTests13 {
    /// libevent keeps the events that fired when the buffer was full and looks at them again with
    /// poll(2) before reporting: it looked at every kept one at every wait, so 3,000 ready with a
    /// buffer of 1 cost each wait a poll(2) of 3,000 entries (140 us a wait against epoll's 1 in the
    /// scale reader's release build). Now it looks at the buffer's room's worth, oldest first.
    @Test("libevent's wait with many kept events costs about what epoll's does",
          .enabled(if: Backend.libeventBuiltIn, "libevent is not built in (trait Libevent off)"),
          arguments: [Backend.libevent, .libevent(.epoll), .libevent(.poll)])
    func libeventKeptEventsCostByRoom(backend: Backend) throws {
        raiseDescriptorLimit()
        func medianWait(_ backend: Backend, capacity: Int) throws -> Duration {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            let pairs = try readyRegistrations(3_000, on: poller)
            defer { for (a, b) in pairs { close(a); close(b) } }
            let events = EventBuffer(capacity: capacity)
            try poller.wait(into: events, timeout: .zero)   // the first pass keeps the overflow
            var times: [Duration] = []
            for _ in 0..<300 {
                let start = ContinuousClock.now
                try poller.wait(into: events, timeout: .zero)
                times.append(ContinuousClock.now - start)
            }
            return times.sorted()[times.count / 2]
        }
        for capacity in [1, 64] {
            let epoll = try medianWait(.epoll, capacity: capacity)
            let this = try medianWait(backend, capacity: capacity)
            #expect(this < epoll * 8 + .microseconds(30), "\(backend), buffer of \(capacity): \(this) a wait, epoll \(epoll)")
        }
    }
}

extension PeerScenarioTests13 {
    /// The budget's yield is no wait for room (the diff reviewer): a 32 MiB write that the socket
    /// takes whole, in a task already cancelled or with a zero timeout, sends it all on every backend
    /// and driver, as a write that need not wait does (Docs/Async.md). Before, the yield was a wait:
    /// the cancelled write failed `.cancelled` after 8 MiB and the zero-timeout one `.timedOut`, and
    /// io_uring's completion driver sent every megabyte after the first through the ring, with a
    /// deadline check after each.
    @Test("a large write that need not wait succeeds in a cancelled task and with a zero timeout",
          .enabled(if: canForceSendBuffer(), "SO_SNDBUFFORCE needs CAP_NET_ADMIN"), .timeLimit(.minutes(1)),
          arguments: backends)
    func largeWriteNeedNotWait(backend: Backend) async throws {
        let payload = LargeWritePayload()
        for form in ["[UInt8]", "Bytes", "raw", "vectored"] {
            for mode in ["cancelled", "zero timeout"] {
                let loop = try EventLoop(backend: backend)
                let (socket, b) = try await payload.forcedPair(on: loop)
                defer { close(b) }
                let outcome = await Task(executorPreference: loop) { () async -> String in
                    if mode == "cancelled" { withUnsafeCurrentTask { $0?.cancel() } }
                    let timeout: Duration? = mode == "cancelled" ? nil : .zero
                    do throws(LoopError) { try await payload.write(form, to: socket, timeout: timeout) } catch { return "\(error)" }
                    return "written"
                }.value
                #expect(outcome == "written", "\(backend), \(form), \(mode)")
                await socket.close()
                await loop.shutdown()
            }
        }
    }
}

extension PeerScenarioTests13 {
    /// A write that keeps making progress still meets a cancellation or a deadline that comes while
    /// it runs (Docs/Async.md: a timeout bounds the whole write), at its next yield, as tokio's
    /// `Timeout` looks at its delay once the future spent its budget (the second diff reviewer).
    /// Before, a 32 MiB write the socket took whole succeeded though another task on the loop
    /// cancelled it after its first slice, or its 1 ms timeout had passed.
    @Test("a large write is ended by a cancellation or a deadline that comes while it goes on",
          .enabled(if: canForceSendBuffer(), "SO_SNDBUFFORCE needs CAP_NET_ADMIN"), .timeLimit(.minutes(1)),
          arguments: backends)
    func largeWriteMeetsLaterCancellation(backend: Backend) async throws {
        let payload = LargeWritePayload()
        for mode in ["cancelled", "timed out"] {
            let loop = try EventLoop(backend: backend)
            let (socket, b) = try await payload.forcedPair(on: loop)
            defer { close(b) }
            let flags = TurnCounter()
            // Both on the loop thread: the writer's first slice is one job, so the parent's loop
            // sees the writer started only at its first yield, and cancels it there.
            let outcome = await Task(executorPreference: loop) { () async -> String in
                let writer = Task(executorPreference: loop) { () async -> String in
                    flags.turns.store(1, ordering: .relaxed)
                    do throws(LoopError) {
                        try await payload.write("[UInt8]", to: socket, timeout: mode == "cancelled" ? nil : .milliseconds(1))
                    } catch { return "\(error)" }
                    return "written"
                }
                if mode == "cancelled" {
                    while flags.turns.load(ordering: .relaxed) == 0 { await Task.yield() }
                    writer.cancel()
                }
                return await writer.value
            }.value
            #expect(outcome == mode, "\(backend)")
            await socket.close()
            await loop.shutdown()
        }
    }

    /// A write's timeout counts from its call, not from when its task reached the loop: one called from
    /// another thread while the loop thread is busy for 100 ms, with a 1 ms timeout, still ends with
    /// `.timedOut` at its first yield. Before, every form took "what it was given when it began" after
    /// the hop, saw its deadline passed already, took it for a zero timeout and wrote all 32 MiB (the
    /// class behind a rare failure of the test above under AddressSanitizer).
    @Test("a write whose task waited for a busy loop still meets its timeout, counted from its call",
          .enabled(if: canForceSendBuffer(), "SO_SNDBUFFORCE needs CAP_NET_ADMIN"), .timeLimit(.minutes(1)),
          arguments: backends)
    func writeTimeoutCountsFromCall(backend: Backend) async throws {
        let payload = LargeWritePayload()
        for form in ["[UInt8]", "Bytes", "raw", "vectored"] {
            let loop = try EventLoop(backend: backend)
            let (socket, b) = try await payload.forcedPair(on: loop)
            defer { close(b) }
            let calling = TurnCounter()
            // The loop thread, busy in one job from before the write's call until 100 ms after it.
            let blocker = Task(executorPreference: loop) {
                calling.turns.store(1, ordering: .releasing)
                for _ in 0..<50_000 where !calling.stop.load(ordering: .acquiring) { usleep(100) }
                usleep(100_000)
            }
            while calling.turns.load(ordering: .acquiring) == 0 { usleep(100) }
            // Called on the global executor: the write hops onto the loop once the blocker is done.
            let outcome = await Task.detached { () async -> String in
                calling.stop.store(true, ordering: .releasing)
                do throws(LoopError) { try await payload.write(form, to: socket, timeout: .milliseconds(1)) } catch { return "\(error)" }
                return "written"
            }.value
            await blocker.value
            #expect(outcome == "timed out", "\(backend), \(form)")
            await socket.close()
            await loop.shutdown()
        }
    }
}

/// SO_SNDBUFFORCE refused (`errno`).
struct SendBufferNotForced: Error { let errno: CInt }

/// tokio's and SwiftNIO's datagram tests receive whole datagrams into a buffer that holds them.
extension PeerScenarioTests13 {
    /// A receive into `Bytes` was cut at the 1 MiB reservation cap though the buffer and `maximum`
    /// held more (review, stop 46): a 2 MiB Unix datagram came back as 1 MiB, truncated, and a
    /// datagram cut short cannot be read again. The stream read already read into the room there was.
    @Test("a datagram receive into Bytes takes all the room the buffer has, up to maximum, past the reservation cap",
          .enabled(if: canForceSendBuffer(), "SO_SNDBUFFORCE needs CAP_NET_ADMIN"))
    func datagramReceiveUsesTheRoom() throws {
        let (sender, receiver) = try DatagramSocket.pair()
        defer { sender.close(); receiver.close() }
        var force = CInt(8 << 20)
        #expect(setsockopt(sender.fd, SOL_SOCKET, SO_SNDBUFFORCE, &force, socklen_t(MemoryLayout<CInt>.size)) == 0)
        #expect(setsockopt(receiver.fd, SOL_SOCKET, SO_RCVBUFFORCE, &force, socklen_t(MemoryLayout<CInt>.size)) == 0)
        let size = 2 << 20
        let datagram = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        guard case .transferred(size) = try sender.send(Bytes(datagram)) else { Issue.record("not sent whole"); return }
        var bytes = Bytes(capacity: 4 << 20)
        let received = try receiver.receive(into: &bytes, maximum: 4 << 20).datagram
        #expect(received?.count == size && received?.isTruncated == false, "\(String(describing: received))")
        #expect(bytes.count == size && Array(bytes) == datagram)
    }
}

/// 32 MiB of sevens in the forms a stream write takes, and a socketpair whose send buffer takes it
/// whole (SO_SNDBUFFORCE): a write that never has to wait.
final class LargeWritePayload: @unchecked Sendable {
    let size = 32 << 20
    let array: [UInt8]
    private let storage: UnsafeMutableRawBufferPointer

    init() {
        array = [UInt8](repeating: 7, count: size)
        storage = .allocate(byteCount: size, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 7)
    }

    deinit { storage.deallocate() }

    /// The loop's end (adopted) and the peer's descriptor (the caller closes it).
    func forcedPair(on loop: EventLoop) async throws -> (AsyncSocket, CInt) {
        let (a, b) = try socketPair()
        var force = CInt(size * 2)
        // Without it a write would wait for room, and the scenarios built on it would pin nothing.
        guard setsockopt(a, SOL_SOCKET, SO_SNDBUFFORCE, &force, socklen_t(MemoryLayout<CInt>.size)) == 0 else {
            let error = errno
            close(a); close(b)
            throw SendBufferNotForced(errno: error)
        }
        return (try await loop.adopt(descriptor: a), b)
    }

    /// Writes all of it as `form`: "[UInt8]", "Bytes", "raw" or "vectored" (4 MiB buffers).
    func write(_ form: String, to socket: AsyncSocket, timeout: Duration? = nil) async throws(LoopError) {
        let raw = UnsafeRawBufferPointer(storage)
        switch form {
        case "[UInt8]": try await socket.write(array, timeout: timeout)
        case "Bytes": try await socket.write(Bytes(array), timeout: timeout)
        case "raw": try await socket.write(raw, timeout: timeout)
        default:
            let parts = stride(from: 0, to: size, by: 4 << 20).map { UnsafeRawBufferPointer(rebasing: raw[$0..<min(size, $0 + (4 << 20))]) }
            try await socket.write(vectored: parts, timeout: timeout)
        }
    }
}

/// A counter a yielding task bumps, and its stop flag.
final class TurnCounter: Sendable {
    let turns = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}

/// Whether this process may set a send buffer past the system's maximum (CAP_NET_ADMIN).
func canForceSendBuffer() -> Bool {
    let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var size = CInt(64 << 20)
    return setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<CInt>.size)) == 0
}
