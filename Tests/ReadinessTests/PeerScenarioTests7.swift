import Glibc
import Readiness
import ReadinessConformance
import Synchronization
import Testing

/// Scenarios from the peers' test suites and the outside readers of stop 35.
@Suite("Peer scenarios 7", .serialized)
struct PeerScenarioTests7 {
    // MARK: Caller values in the conformance product (review: each trapped the whole process)

    /// A third party's scripts are caller values too: a negative count, a signal count whose gap
    /// overflowed, or an `after` beyond `usleep`'s 32 bits trapped (on a worker thread, out of the
    /// watchdog's reach). Now each is a note, and a long wait with no signal is just a wait.
    @Test("conformance steps with a negative count, or more signals than a wait splits into, are notes, not traps")
    func conformanceStepValues() throws {
        let invalid: [Step] = [
            .write("a", bytes: -1), .waitRounds(capacity: 4, rounds: -1), .wake(times: -1, threads: 1),
            .wake(times: 1, threads: -1), .waitInterrupted(.seconds(1), signals: -1),
            .waitInterrupted(.seconds(1), signals: .max), .wakeReenteredBySignalHandler(signals: -3),
            .createPollersExhausted(upTo: -1), .registerEach("p", count: -1, firstToken: 1, interest: .readable),
            .writeEach("p", count: -1), .closeEach("p", count: -1), .deregisterEach("p", count: -1),
        ]
        let steps: [Step] = invalid + [
            .write("b", bytes: 1),
            .register("a", token: 1, interest: .readable, trigger: .level),
            // 5,000 s is past usleep's 32 bits: the gap's conversion trapped even with no signal to send.
            .waitInterrupted(.seconds(5_000), signals: 0),
        ]
        let scenario = Scenario("caller-values", checks: "invalid values", fixtures: [.socketPair("a", "b")],
                                steps.map { ScriptLine($0) })
        let result = Conformance.record(scenario, backend: "epoll", timeLimit: .seconds(30)) { try Backend.epoll.makePoller() }
        #expect(result.trace.count == steps.count, "\(result.outcome)")
        for line in result.trace.prefix(invalid.count) {
            guard case .note(let text) = line.observed, text.hasPrefix("invalid step") else {
                Issue.record("\(line.step): \(line.observed)")
                continue
            }
        }
        if let last = result.trace.last {
            #expect("\(last.observed)".contains("readable"), "\(last.observed)")
        }
        // A negative fixture count is a set-up failure, not a trap.
        let pairs = Scenario("caller-values", checks: "negative fixture", fixtures: [.socketPairs("s", count: -1)], [])
        let setUp = Conformance.record(pairs, backend: "epoll") { try Backend.epoll.makePoller() }
        guard case .failed(let why) = setUp.outcome else { Issue.record("\(setUp.outcome)"); return }
        #expect(why.contains("negative count"), "\(why)")
        // The script generators take any length (a negative one is an empty script).
        #expect(Differential.script(seed: 1, length: -1) == Differential.script(seed: 1, length: 0))
        #expect(AsyncDifferential.script(seed: 1, length: Int.min) == AsyncDifferential.script(seed: 1, length: 0))
    }

    @Test("async conformance steps with a negative byte count are notes, not traps (review: each trapped)")
    func asyncConformanceStepValues() async throws {
        let steps: [AsyncStep] = [
            .socketPair("a", "b"), .run(.write("a", bytes: -1, timeout: nil)),
            .udpPair("u", "v"), .run(.send("u", bytes: -5, to: "v", timeout: nil)),
            .callerPair("c", "d"), .callerWrite("c", bytes: -1),
        ]
        let result = await AsyncConformance.record(steps, backend: "epoll", timeLimit: .seconds(30)) { () throws(PollerError) -> any Poller in try Backend.epoll.makePoller() }
        let notes = result.trace.map { "\($0.observed)" }.filter { $0.contains("invalid step") }
        #expect(notes.count == 3, "\(result.trace.map { "\($0.step): \($0.observed)" })")
    }

    // MARK: Happy Eyeballs token blocks (review)

    /// `TokenBlock` handed out `Token.waker` when a block reached it: that attempt's socket was made
    /// and its SYN sent, then its registration failed with `reservedToken`, so its address was never
    /// really tried.
    @Test("a token block never hands out the waker's token; it goes on at 0")
    func tokenBlockSkipsWaker() {
        let block = TokenBlock(first: Token(rawValue: .max - 1))
        #expect(block.makeToken() == Token(rawValue: .max - 1))
        #expect(block.makeToken() == Token(rawValue: 0))
        #expect(block.makeToken() == Token(rawValue: 1))
        #expect(TokenBlock(first: .waker).makeToken() == Token(rawValue: 0))
    }

    // MARK: A listener registered while backing off (review)

    /// The same misuse, the same error, whatever the listener's state: registered during a back-off
    /// with the waker's token (or a number above select's limit), it was stored, and every later
    /// `resume()` failed and started another back-off, so the listener never accepted again.
    @Test("Listener.register during a back-off refuses the waker's token at once", arguments: backends)
    func registerWhileBackingOff(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        defer { listener.close() }
        let client = try driveIntoBackOff(listener)
        defer { close(client) }
        #expect(throws: PollerError.reservedToken) { try listener.register(on: poller, token: .waker) }
        // A proper registration still works, and resume() watches it.
        try listener.register(on: poller, token: 7)
        try listener.resume()
        #expect(!listener.isBackingOff)
    }

    // MARK: Peeking (tokio tcp_peek.rs, udp.rs peek_from; CPython recv(MSG_PEEK))

    @Test("tokio tcp_peek: an async peek waits for bytes, returns them without taking them, and the read gets them again; 0 at end of stream",
          arguments: backends)
    func asyncStreamPeek(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                // A peek that waits: the bytes come after it began.
                let waiting = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    var buffer = [UInt8](repeating: 0, count: 16)
                    let n = try await server.peek(into: &buffer, timeout: .seconds(5))
                    return Array(buffer.prefix(n))
                }
                try await loop.sleep(for: .milliseconds(20))
                try await client.write(Array("hello".utf8), timeout: .seconds(5))
                #expect(try await waiting.value == Array("hello".utf8))
                // Again: the same bytes (a shorter buffer gets their start), then the read takes them.
                var short = [UInt8](repeating: 0, count: 3)
                #expect(try await server.peek(into: &short) == 3 && short == Array("hel".utf8))
                #expect(try await server.read(upTo: 64, timeout: .seconds(5)) == Array("hello".utf8))
                // Nothing queued: a peek with a deadline times out; an empty buffer is refused.
                var buffer = [UInt8](repeating: 0, count: 8)
                await #expect(throws: LoopError.timedOut) { _ = try await server.peek(into: &buffer, timeout: .milliseconds(20)) }
                var empty: [UInt8] = []
                await #expect(throws: LoopError.invalidArgument("peek into an empty buffer")) { _ = try await server.peek(into: &empty) }
                // A peek and a read at once take turns: the read waits for the peek, then meets the end
                // of the stream as the peek did.
                let peeking = Task(executorPreference: loop) { () async throws(LoopError) -> Int in
                    var buffer = [UInt8](repeating: 0, count: 8)
                    return try await server.peek(into: &buffer, timeout: .seconds(5))
                }
                try await loop.sleep(for: .milliseconds(10))
                let reading = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                    try await server.read(upTo: 8, timeout: .seconds(5))
                }
                try await loop.sleep(for: .milliseconds(10))
                try await client.shutdown(.write)
                #expect(try await peeking.value == 0)
                #expect(try await reading.value.isEmpty)
                #expect(try await server.peek(into: &buffer) == 0)
                #expect(try await server.read(upTo: 8, timeout: .seconds(5)).isEmpty)
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    @Test("tokio udp peek_from: an async datagram peek waits, tells the source and truncation, and the receive gets the datagram again",
          arguments: backends)
    func asyncDatagramPeek(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let server = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let client = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let waiting = Task(executorPreference: loop) { () async throws -> (ReceivedDatagram, [UInt8]) in
                    var buffer = [UInt8](repeating: 0, count: 4)
                    let datagram = try await server.peek(into: &buffer, timeout: .seconds(5))
                    return (datagram, buffer)
                }
                try await loop.sleep(for: .milliseconds(20))
                try await client.send(Array("datagram".utf8), to: try #require(server.localAddress), timeout: .seconds(5))
                let (peeked, start) = try await waiting.value
                #expect(peeked.isTruncated && peeked.count == 4 && peeked.length == 8 && start == Array("data".utf8))
                #expect(peeked.source == client.localAddress)
                var whole = [UInt8](repeating: 0, count: 64)
                let received = try await server.receive(into: &whole, timeout: .seconds(5))
                #expect(!received.isTruncated && received.count == 8 && whole.prefix(8) == Array("datagram".utf8)[...])
                var buffer = [UInt8](repeating: 0, count: 8)
                await #expect(throws: LoopError.timedOut) { _ = try await server.peek(into: &buffer, timeout: .milliseconds(20)) }
                await client.close(); await server.close()
            }.value
        }
    }

    // MARK: Destinations that name nobody (review)

    /// The same misuse, the same kind: a send or a batch slot to port 0 was the kernel's EINVAL
    /// (`.other`) while a connect to it was `.invalidArgument` (Docs/Sockets.md said "as a send to port
    /// 0 is"); a nameless Unix address (an unbound client's, from accept) was EINVAL for all three.
    @Test("a send, a connect and a batch slot to port 0 or to a nameless Unix address are invalidArgument, before any system call")
    func destinationsNamingNobody() throws {
        let udp = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        defer { udp.close() }
        let portZero = try SocketAddress("127.0.0.1:0")
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let nameless = try SocketAddress.peer(of: a)
        #expect(nameless.isNamelessUnix)
        let unix = try DatagramSocket(bind: try SocketAddress(unixPath: "/tmp/readiness-p7-\(getpid()).sock"))
        defer { unix.close(); unlink("/tmp/readiness-p7-\(getpid()).sock") }
        for (socket, target) in [(udp, portZero), (unix, nameless)] {
            #expect(throws: SocketError.self) { _ = try socket.send([1], to: target) }
            do { _ = try socket.send([1], to: target) } catch { #expect(error.kind == .invalidArgument, "\(error)") }
            do { try socket.connect(to: target); Issue.record("connect to \(target)") } catch {
                #expect(error.kind == .invalidArgument, "\(error)")
            }
            let batch = try DatagramBatch(capacity: 2, slotSize: 16)
            do { try batch.append([1], to: target); Issue.record("append to \(target)") } catch {
                #expect(error.kind == .invalidArgument, "\(error)")
            }
        }
    }

    // MARK: A Unix peer that shuts down its reading side (review: three readers)

    /// Linux's poll never tells a Unix stream writer of its peer's `shutdown(SHUT_RD)` (no POLLOUT,
    /// POLLHUP or POLLERR), while each send fails with EPIPE. Before: a write waiting for room slept
    /// to its deadline on every readiness backend, while io_uring's completion driver failed at once.
    @Test("a write waiting for room on a Unix stream socket ends with EPIPE soon after the peer shuts down reading, on every backend",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixPeerShutsDownReading(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                for form in ["raw", "array", "vectored"] {
                    let (a, b) = try socketPair()
                    let writer = try await loop.adopt(descriptor: a)
                    let reader = try await loop.adopt(descriptor: b)
                    let bytes = [UInt8](repeating: 7, count: 8 << 20)
                    nonisolated(unsafe) let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
                    raw.copyMemory(from: UnsafeRawBufferPointer(start: bytes, count: bytes.count))
                    defer { raw.deallocate() }
                    let writing = Task(executorPreference: loop) { () async throws in
                        switch form {
                        case "raw": try await writer.write(UnsafeRawBufferPointer(raw), timeout: .seconds(20))
                        case "array": try await writer.write(bytes, timeout: .seconds(20))
                        default:
                            try await writer.write(vectored: [UnsafeRawBufferPointer(rebasing: raw[..<4]), UnsafeRawBufferPointer(rebasing: raw[4...])],
                                                   timeout: .seconds(20))
                        }
                    }
                    try await loop.sleep(for: .milliseconds(50))
                    let start = ContinuousClock.now
                    try await reader.withStreamSocket { (socket) throws(SocketError) in try socket.shutdown(.read) }
                    let outcome = await writing.result
                    let elapsed = ContinuousClock.now - start
                    guard case .failure(let failure) = outcome, case .socket(let error)? = failure as? LoopError else {
                        Issue.record("\(form): \(outcome) after \(elapsed)")
                        continue
                    }
                    #expect(error.errno == EPIPE, "\(form): \(error)")
                    #expect(elapsed < .seconds(2), "\(form): \(elapsed)")
                    await writer.close(); await reader.close()
                }
            }.value
        }
    }

    // MARK: A full buffer of level events, drained by the handler (review: libevent EVLOOP_NONBLOCK)

    /// A busy loop polls with a zero timeout after handling a full buffer of level events. On
    /// io_uring the descriptors the last wait reported were looked at again first and, found drained,
    /// still took the buffer's room: the wait returned nothing while another descriptor was ready.
    @Test("a zero-timeout wait after a full buffer of drained level events reports the descriptor that is ready now", arguments: backends)
    func zeroTimeoutAfterFullBuffer(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a0, a1) = try socketPair()
        let (b0, b1) = try socketPair()
        defer { [a0, a1, b0, b1].forEach { close($0) } }
        try poller.register(a0, token: 1, interest: .readable)
        try poller.register(b0, token: 2, interest: .readable)
        let one = EventBuffer(capacity: 1)
        _ = write(a1, "x", 1)
        #expect(try poller.wait(into: one, timeout: .zero) == 1 && one.first?.token == 1)
        var byte: UInt8 = 0
        #expect(read(a0, &byte, 1) == 1)
        _ = write(b1, "y", 1)
        for round in 0..<3 {
            let n = try poller.wait(into: one, timeout: .zero)
            #expect(n == 1 && one.first?.token == 2, "round \(round): \(n) events")
        }
    }

    // MARK: A hang-up with a full send queue (review: libevent regress test_simpleclose_rw)

    /// A Unix socket whose peer is gone while its own send queue is full: the kernel reports IN|HUP|RDHUP
    /// without OUT. A hang-up adds every direction asked for, so a registration for both is writable
    /// too; libevent's epoll method reported only readable and read-closed (the documented select
    /// corner aside: select sees a hang-up only through the read set).
    @Test("a hang-up with a full send queue wakes the writer of a registration for both directions", arguments: backends)
    func hangupWithFullQueueWakesWriter(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (s0, s1) = try socketPair()
        defer { close(s0); close(s1) }
        let chunk = [UInt8](repeating: 1, count: 65_536)
        while send(s1, chunk, chunk.count, CInt(MSG_DONTWAIT)) > 0 {}
        shutdown(s0, CInt(SHUT_RDWR))
        try poller.register(s1, token: 1, interest: .both)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .seconds(1)) == 1)
        let ready = events.first?.ready ?? []
        #expect(ready.contains(.readable), "\(ready)")
        if !backend.name.hasSuffix("select") {
            #expect(ready.contains(.writable), "\(backend.name): \(ready)")
        }
    }

    // MARK: serve when the loop's poller fails (review: SwiftNIO's channel close on selector failure)

    /// A loop whose poller fails ends as a shutdown does (Docs/Async.md); `serve` cancelled its
    /// connections' tasks only for `.shutdown`, so a handler waiting on something else than the loop
    /// held `serve` for as long as it waited (an hour here).
    @Test("serve: a loop that ends because its poller failed cancels the connections' tasks, then throws the failure",
          .timeLimit(.minutes(1)), arguments: backends)
    func serveWhenThePollerFails(backend: Backend) async throws {
        let failing = FailingWaitPoller.Switch()
        let loop = try EventLoop { () throws(PollerError) -> any Poller in
            FailingWaitPoller(try backend.makePoller(), failing: failing)
        }
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        let handlers = Atomic<Int>(0)
        let serving = Task { () async -> LoopError? in
            do throws(LoopError) {
                try await listener.serve { _ in
                    handlers.add(1, ordering: .relaxed)
                    try? await Task.sleep(for: .seconds(3_600))
                }
                return nil
            } catch { return error }
        }
        let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
        for _ in 0..<500 where handlers.load(ordering: .relaxed) == 0 { usleep(10_000) }
        #expect(handlers.load(ordering: .relaxed) == 1)
        failing.on.store(true, ordering: .releasing)
        await Task(executorPreference: loop) {}.value   // wakes the loop, whose next wait fails
        let start = ContinuousClock.now
        let outcome = await serving.value
        #expect(ContinuousClock.now - start < .seconds(5))
        guard case .poller? = outcome else { Issue.record("\(String(describing: outcome))"); return }
        await loop.shutdown()
    }

    // MARK: More ready registrations than the soft descriptor limit (review: libuv emfile set-ups)

    /// poll(2) refuses more entries than the soft RLIMIT_NOFILE (EINVAL). io_uring's re-check of its
    /// kept completions ignored the failure and took every entry for not ready: the events were lost
    /// (a multishot request does not fire again without a new wake-up). Backends whose own wait is a
    /// poll(2) over every registration (poll, libevent's poll method) fail that wait loudly instead,
    /// which is the kernel's refusal; they are not asked here.
    @Test("300 ready registrations with the soft descriptor limit lowered to 256: every one is reported",
          arguments: backends.filter { $0.name != "poll" && $0.name != "libevent:poll" })
    func readyAboveSoftLimit(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let pairs = try readyRegistrations(300, on: poller)
        defer { for (a, b) in pairs { close(a); close(b) } }
        let events = EventBuffer(capacity: 512)
        var seen = Set<Token>()
        try withSoftDescriptorLimit(256) { () throws in
            for _ in 0..<5 where seen.count < 300 {
                _ = try poller.wait(into: events, timeout: .milliseconds(200))
                for event in events { seen.insert(event.token) }
            }
        }
        #expect(seen.count == 300, "\(backend.name): \(seen.count) of 300 reported")
    }

    /// The same scenario, an equal error on both drivers: io_uring's completion driver named the
    /// failure "write after shutdown(.write)", the readiness driver's retry "send" (review).
    @Test("a raw write waiting for room ends with the same error on every backend when the socket is shut down for writing",
          .timeLimit(.minutes(1)), arguments: backends)
    func writeEndedByShutdownSameError(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, client, server) = try await connectedPair(loop)
                nonisolated(unsafe) let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 20, alignment: 1)
                raw.initializeMemory(as: UInt8.self, repeating: 1)
                defer { raw.deallocate() }
                let writing = Task(executorPreference: loop) { () async -> LoopError? in
                    do throws(LoopError) { try await client.write(UnsafeRawBufferPointer(raw), timeout: .seconds(20)) } catch { return error }
                    return nil
                }
                try await loop.sleep(for: .milliseconds(50))
                try await client.shutdown(.write)
                let error = await writing.value
                #expect(error == .socket(SocketError(errno: EPIPE, operation: "send")), "\(String(describing: error))")
                await client.close(); await server.close(); await listener.close()
            }.value
        }
    }

    // MARK: Unix datagram senders poll cannot tell the truth to (review: Go CloseRead, a restarted daemon)

    /// Fills `receiver`'s queue from `sender` (sending to `to`, nil: its peer) with zero-deadline sends.
    private static func fill(_ sender: AsyncDatagramSocket, to: SocketAddress? = nil) async {
        for _ in 0..<1_000 {
            do throws(LoopError) { try await sender.send([1, 2, 3], to: to, timeout: .zero) } catch { return }
        }
    }

    /// The receiver shuts down reading: poll never tells the connected sender (each send is then
    /// EPIPE). Before: a send waiting for the full queue slept to its deadline on every backend.
    @Test("a connected Unix datagram send waiting for a full receiver ends with EPIPE soon after the receiver shuts down reading",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixDatagramReceiverShutsDownReading(backend: Backend) async throws {
        let path = "/tmp/readiness-p7-dgram-\(getpid())"
        unlink(path)
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let receiver = try await loop.bindDatagram(to: try SocketAddress(unixPath: path))
                let sender = try await loop.connectDatagram(to: try SocketAddress(unixPath: path))
                await Self.fill(sender)
                let sending = Task(executorPreference: loop) { () async -> LoopError? in
                    do throws(LoopError) { try await sender.send([9], timeout: .seconds(20)) } catch { return error }
                    return nil
                }
                try await loop.sleep(for: .milliseconds(30))
                let start = ContinuousClock.now
                try await receiver.withDatagramSocket { (socket) throws(SocketError) in _ = shutdown(socket.fd, CInt(SHUT_RD)) }
                let error = await sending.value
                #expect(ContinuousClock.now - start < .seconds(3))
                guard case .socket(let failure)? = error else { Issue.record("\(String(describing: error))"); return }
                #expect(failure.errno == EPIPE, "\(failure)")
                await sender.close(); await receiver.close()
            }.value
        }
    }

    /// A daemon restarted on the same path: the connected sender's poll looks at the dead receiver
    /// (its queue purged: writable for ever), while a send naming the path reaches the new one, whose
    /// queue is full. Before: the send was woken every loop iteration until its deadline (a spin).
    @Test("a Unix datagram send naming its peer's path, now a restarted receiver's with a full queue, waits without spinning",
          .timeLimit(.minutes(1)), arguments: backends)
    func unixDatagramRestartedReceiver(backend: Backend) async throws {
        let path = "/tmp/readiness-p7-restart-\(getpid())"
        unlink(path)
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let address = try SocketAddress(unixPath: path)
                let first = try await loop.bindDatagram(to: address)
                let sender = try await loop.connectDatagram(to: address)
                await first.close()
                let second = try await loop.bindDatagram(to: address)
                let filler = try await loop.bindDatagram(to: try SocketAddress(unixPath: path + "-filler"))
                await Self.fill(filler, to: address)
                // The loop thread's CPU (this task prefers the loop: it runs there, where a spin
                // would be), not the process's: other threads of the test run count there.
                let before = PollerTests.threadCPU()
                await #expect(throws: LoopError.timedOut) { try await sender.send([9], to: address, timeout: .milliseconds(300)) }
                let cpu = (PollerTests.threadCPU() - before) / 1_000
                #expect(cpu < 150_000, "\(backend.name): \(cpu) us of the loop thread's CPU in a 300 ms send")
                await sender.close(); await second.close(); await filler.close()
                unlink(path + "-filler")
            }.value
        }
    }

    // MARK: Options a family does not have; adopting a listener as a stream (review: libuv)

    @Test("options a family does not have are invalidArgument before any system call; a listening socket is not adopted as a stream")
    func optionsAndListeningAdoption() async throws {
        let before = openDescriptorCount()
        func expectInvalid(_ what: String, _ body: () throws -> Void) {
            do { try body(); Issue.record("\(what) was taken") } catch {
                #expect((error as? SocketError)?.kind == .invalidArgument, "\(what): \(error)")
            }
        }
        let unix = try SocketAddress(unixPath: "/tmp/readiness-p7-options-\(getpid())")
        for (name, set) in [("broadcast", { (o: inout DatagramSocket.Options) in o.broadcast = true }),
                            ("reuseAddress", { (o: inout DatagramSocket.Options) in o.reuseAddress = true }),
                            ("reusePort", { (o: inout DatagramSocket.Options) in o.reusePort = true })] {
            var options = DatagramSocket.Options()
            set(&options)
            expectInvalid("Unix datagram \(name)") { _ = try DatagramSocket(bind: unix, options: options) }
            expectInvalid("Unix datagram \(name), unbound") { _ = try DatagramSocket(family: .unix, options: options) }
        }
        var v6 = DatagramSocket.Options()
        v6.v6Only = true
        expectInvalid("v6Only on IPv4 datagram") { _ = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"), options: v6) }
        var listenV6 = Listener.Options()
        listenV6.v6Only = true
        expectInvalid("v6Only on an IPv4 listener") { _ = try Listener(bind: try SocketAddress("127.0.0.1:0"), options: listenV6) }
        var unixReuse = Listener.Options()
        unixReuse.reusePort = true
        expectInvalid("reusePort on a Unix listener") { _ = try Listener(bind: unix, options: unixReuse) }
        // A listening socket handed over (socket activation) is not a stream to read from.
        let listening = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(listening) }
        var any = sockaddr_in()
        any.sin_family = sa_family_t(AF_INET)
        any.sin_addr.s_addr = in_addr_t(0x0100007f)   // 127.0.0.1, network order on little-endian
        _ = withUnsafePointer(to: &any) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(listen(listening, 4) == 0)
        expectInvalid("adopting a listening socket") { _ = try StreamSocket(adopting: listening) }
        #expect(fcntl(listening, F_GETFD) >= 0)   // still the caller's, open
        // A group of two loops checks the options first too (review: it tried SO_REUSEPORT sharing
        // first, and a port in use answered addressInUse where one loop answered invalidArgument).
        let taken = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let group = try EventLoopGroup(backend: .epoll, count: 2)
        do {
            _ = try await group.listen(on: taken.address, options: listenV6)
            Issue.record("the group listened with v6Only on IPv4")
        } catch {
            guard case .socket(let failure) = error else { Issue.record("\(error)"); return }
            #expect(failure.kind == .invalidArgument, "\(failure)")
        }
        await group.shutdown()
        taken.close()
        let loop = try EventLoop(backend: .epoll)
        do {
            _ = try await loop.adopt(descriptor: listening)
            Issue.record("the loop adopted a listening socket")
        } catch {
            guard case .socket(let failure) = error else { Issue.record("\(error)"); await loop.shutdown(); return }
            #expect(failure.kind == .invalidArgument)
        }
        await loop.shutdown()
        unlink("/tmp/readiness-p7-options-\(getpid())")
        #expect(await settledDescriptorCount(before + 1) == before + 1)
    }
}
