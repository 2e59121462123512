import Glibc
@_spi(Backend) import Readiness
import Synchronization
import Testing

/// The input audit (review, 2026-12-04): caller values at public entries that the "Extreme input",
/// hardening and ownership suites did not reach. Each test failed before its fix, or pins a rule of
/// the docs that was found misstated.
@Suite("Input audit", .serialized)
struct InputAuditTests {
    // MARK: Vectored writes and empty buffers

    /// IOV_MAX empty buffers, then one byte: before, the iovec array took the first IOV_MAX buffers
    /// whatever their size, so the call wrote nothing (`.transferred(0)`) however often it was made:
    /// a caller's "write until done" loop spun for ever on a writable socket.
    @Test("write(vectored:): empty buffers are skipped, so IOV_MAX empty ones before a byte still write it")
    func vectoredEmptyBuffers() throws {
        let pair = try socketPair()
        let socket = try StreamSocket(adopting: pair.0)
        defer { socket.close(); close(pair.1) }
        var byte: UInt8 = 42
        let result = withUnsafeBytes(of: &byte) { raw in
            let empty = UnsafeRawBufferPointer(start: nil, count: 0)
            let buffers = Array(repeating: empty, count: StreamSocket.maximumVectoredBuffers) + [raw]
            return Result { () throws(SocketError) -> IOResult in try socket.write(vectored: buffers) }
        }
        #expect(try result.get() == .transferred(1))
        var received: UInt8 = 0
        #expect(recv(pair.1, &received, 1, CInt(MSG_DONTWAIT)) == 1)
        #expect(received == 42)
        // Nothing but empty buffers: nothing to write, no system call (a closed socket is not asked).
        let nothing = [UnsafeRawBufferPointer](repeating: UnsafeRawBufferPointer(start: nil, count: 0), count: 3)
        #expect(try socket.write(vectored: nothing) == .transferred(0))
    }

    @Test("async write(vectored:): more than IOV_MAX buffers, empty ones among them, arrive whole and in order", arguments: backends)
    func asyncVectored(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        async let accepted = listener.accept(timeout: .seconds(5))
        let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
        let server = try await accepted
        let count = StreamSocket.maximumVectoredBuffers * 2 + 5
        let payload = (0..<count).map { UInt8(truncatingIfNeeded: $0) }
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        defer { raw.deallocate() }
        raw.copyBytes(from: payload)
        var buffers: [UnsafeRawBufferPointer] = []
        for index in 0..<count {
            buffers.append(UnsafeRawBufferPointer(start: nil, count: 0))   // an empty one before each byte
            buffers.append(UnsafeRawBufferPointer(rebasing: raw[index..<(index + 1)]))
        }
        try await client.write(vectored: buffers, timeout: .seconds(5))
        var received: [UInt8] = []
        while received.count < count {
            let chunk = try await server.read(upTo: count, timeout: .seconds(5))
            if chunk.isEmpty { break }
            received += chunk
        }
        #expect(received == payload)
        await client.close()
        await server.close()
        await listener.close()
        await loop.shutdown()
    }

    // MARK: The empty address

    /// Before: `socket(AF_UNSPEC)` failed with EAFNOSUPPORT, reported as `.other`, where every entry
    /// that sends or connects refuses the empty address with `invalidArgument` (OwnershipHardeningTests).
    @Test("the empty address (SocketAddress()) is nothing to bind: Listener and DatagramSocket refuse it with invalidArgument, opening nothing")
    func emptyBind() throws {
        let before = openDescriptorCount()
        #expect { _ = try Listener(bind: SocketAddress()) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        #expect { _ = try DatagramSocket(bind: SocketAddress()) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        var options = Listener.Options()
        options.reusePort = true
        #expect { _ = try Listener(bind: SocketAddress(), options: options) } throws: { ($0 as? SocketError)?.kind == .invalidArgument }
        #expect(openDescriptorCount() == before)
    }

    @Test("the event loop's listen and bindDatagram refuse the empty address with .socket(invalidArgument)", arguments: backends)
    func emptyBindOnLoop(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        do {
            _ = try await loop.listen(on: SocketAddress())
            Issue.record("listen on SocketAddress() succeeded")
        } catch {
            guard case .socket(let socketError) = error, socketError.kind == .invalidArgument else {
                Issue.record("listen on SocketAddress(): \(error)")
                return
            }
        }
        do {
            _ = try await loop.bindDatagram(to: SocketAddress())
            Issue.record("bindDatagram to SocketAddress() succeeded")
        } catch {
            guard case .socket(let socketError) = error, socketError.kind == .invalidArgument else {
                Issue.record("bindDatagram to SocketAddress(): \(error)")
                return
            }
        }
        #expect(try await loop.entryCount() == 0)
        await loop.shutdown()
    }

    /// Before: a connect to the empty address made a socket, called connect (EINVAL) and failed as
    /// `other`; now it is `invalidAddress`, before any socket exists, on the poller and the loop alike.
    @Test("a connect to the empty address fails with invalidAddress, opening nothing", arguments: backends)
    func emptyConnect(backend: Backend) async throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        #expect { _ = try Connector.connect(to: SocketAddress(), on: poller, timeout: .seconds(1)) } throws: {
            ($0 as? ConnectError)?.cause == .invalidAddress
        }
        #expect(openDescriptorCount() == before)
        let loop = try EventLoop(backend: backend)
        do {
            _ = try await loop.connect(to: SocketAddress(), timeout: .seconds(1))
            Issue.record("connect to SocketAddress() succeeded")
        } catch {
            guard case .connect(let connectError) = error, connectError.cause == .invalidAddress else {
                Issue.record("connect to SocketAddress(): \(error)")
                await loop.shutdown()
                return
            }
        }
        #expect(try await loop.entryCount() == 0)
        await loop.shutdown()
    }

    // MARK: The contract's misuse table

    /// Docs/Contract.md, "Misuse", rule 9: reregister checks the descriptor's kind too (the number may
    /// name a new file), so a number that now names a regular file is `unsupportedDescriptor` on every
    /// backend, and the registration is left as it was (deregister still works).
    @Test("reregister of a number that now names a regular file is unsupportedDescriptor (misuse rule 9)", arguments: backends)
    func reregisterRegularFile(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let pair = try socketPair()
        defer { close(pair.1) }
        try poller.register(pair.0, token: 1, interest: .readable)
        close(pair.0)
        let path = "/tmp/readiness-audit-\(getpid())"
        let file = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        unlink(path)
        #expect(file == pair.0, "the lowest free number is reused")
        defer { close(file) }
        #expect(throws: PollerError.unsupportedDescriptor(file)) {
            try poller.reregister(file, token: 2, interest: .readable)
        }
        try poller.deregister(file)
    }

    /// Docs/Contract.md, "Misuse", rule 5: interest bits other than readable and writable are refused
    /// as `emptyInterest`, as an empty interest is.
    @Test("an interest with bits other than readable and writable is emptyInterest (misuse rule 5)", arguments: backends)
    func unknownInterestBits(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let pair = try socketPair()
        defer { close(pair.0); close(pair.1) }
        #expect(throws: PollerError.emptyInterest) { try poller.register(pair.0, token: 1, interest: Interest(rawValue: 0x80)) }
        #expect(throws: PollerError.emptyInterest) { try poller.register(pair.0, token: 1, interest: [.readable, Interest(rawValue: 0x80)]) }
    }

    // MARK: Connector.run and HappyEyeballs(attempts:): the caller's list

    /// Runs `Connector.run(attempts)` on another thread; if it has not ended after 3 s (it hung), the
    /// poller is closed under it (the contract lets close() end a wait on another thread) so that the
    /// test ends. Returns the error and whether it ended by itself.
    static func runGuarded(_ attempts: [ConnectAttempt], on poller: any Poller) -> (error: ConnectError?, endedAlone: Bool) {
        final class Box: @unchecked Sendable {
            var attempts: [ConnectAttempt] = []
            var poller: (any Poller)?
            var error: ConnectError?
            let done = Mutex(false)
        }
        let box = Box()
        box.attempts = attempts
        box.poller = poller
        let thread = Thread {
            do throws(ConnectError) { _ = try Connector.run(box.attempts, on: box.poller!, attemptDelay: .zero) } catch { box.error = error }
            box.done.withLock { $0 = true }
        }
        for _ in 0..<300 where !box.done.withLock({ $0 }) { usleep(10_000) }
        let endedAlone = box.done.withLock { $0 }
        if !endedAlone { try? poller.close() }
        thread.join()
        return (box.error, endedAlone)
    }

    /// The same attempt twice in the list: before, the second entry's start() found it already
    /// started and it was counted as a second attempt that never ended (its events and its deadline
    /// timer went to the first entry): the connect never ended, deadline or not.
    @Test("Connector.run with the same attempt twice ends with the attempt's outcome (it hung)", arguments: backends)
    func duplicateAttempt(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let refused = try closedPort()
        let before = openDescriptorCount()
        let attempt = ConnectAttempt(to: refused, poller: poller, token: 5, timeout: .seconds(2))
        let (error, endedAlone) = Self.runGuarded([attempt, attempt], on: poller)
        #expect(endedAlone, "the connect never ended")
        #expect(error?.cause == .refused, "\(String(describing: error))")
        #expect(openDescriptorCount() == before)
    }

    /// Two attempts under one token: before, every event and deadline of that token went to the first
    /// attempt that had it, so once that one had ended the second was never told of its own: the
    /// connect never ended.
    @Test("Connector.run with two attempts under one token ends with their outcome (it hung)", arguments: backends)
    func sharedToken(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let refused = try closedPort()
        let before = openDescriptorCount()
        let attempts = [ConnectAttempt(to: refused, poller: poller, token: 5, timeout: .seconds(2)),
                        ConnectAttempt(to: refused, poller: poller, token: 5, timeout: .seconds(2))]
        let (error, endedAlone) = Self.runGuarded(attempts, on: poller)
        #expect(endedAlone, "the connect never ended")
        #expect(error?.cause == .refused, "\(String(describing: error))")
        #expect(openDescriptorCount() == before)
    }

    /// The step timer's token equal to an attempt's: before, the attempt's deadline timer was taken
    /// for the step timer, so an attempt to an address that never answers was never timed out.
    @Test("HappyEyeballs(attempts:) whose timer token is an attempt's still times the attempt out (it hung)", arguments: backends)
    func timerTokenShared(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let full = try fullTCPListener()   // its accept queue is full: SYNs are dropped, the connect hangs
        defer { close(full.fd); full.fillers.forEach { close($0) } }
        let attempt = ConnectAttempt(to: full.address, poller: poller, token: 5, timeout: .milliseconds(200))
        let timers = Timers()
        let connect = HappyEyeballs(attempts: [attempt], poller: poller, timers: timers, timerToken: 5, attemptDelay: .zero)
        let events = EventBuffer(capacity: 8)
        var progress = connect.start()
        let start = ContinuousClock.now
        while progress.isInProgress, ContinuousClock.now - start < .seconds(3) {
            _ = try poller.wait(into: events, timeout: timers.timeout(limit: .milliseconds(100)))
            for event in events where connect.owns(event.token) { progress = connect.handle(event) }
            while progress.isInProgress, let token = timers.popDue() { progress = connect.handleTimer(token) }
        }
        guard case .failed(let error) = progress else {
            Issue.record("the attempt did not time out: \(progress)")
            connect.cancel()
            return
        }
        #expect(error.cause == .timedOut)
    }

    // MARK: The loop's own descriptors

    /// A connect in progress holds its attempt's socket, which the loop closes when the connect ends.
    /// Before, the loop did not count it as one of its own: `adopt(descriptor:)` of that number was
    /// accepted, and the socket had two owners that would each close it (the second close perhaps
    /// another file's). Now refused as for a descriptor a socket of the loop owns.
    @Test("adopt(descriptor:) of the socket of a connect in progress on the same loop is invalidArgument (one address, and Happy Eyeballs)",
          arguments: backends)
    func adoptConnecting(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let full = try fullTCPListener()   // its accept queue is full: the connects stay in progress
        defer { close(full.fd); full.fillers.forEach { close($0) } }
        for addresses in [[full.address], [full.address, full.address]] {
            let before = OwnershipHardeningTests.openDescriptors()
            let connecting = Task { try await loop.connect(to: addresses, timeout: .seconds(10)) }
            var fresh: Set<CInt> = []
            for _ in 0..<200 where fresh.isEmpty {
                try await Task.sleep(for: .milliseconds(5))
                fresh = Self.sockets(OwnershipHardeningTests.openDescriptors().subtracting(before))
            }
            #expect(fresh.count == 1, "the connect's socket: \(fresh)")
            for fd in fresh {
                do {
                    let adopted = try await loop.adopt(descriptor: fd)
                    Issue.record("adopted descriptor \(fd) of a connect in progress (\(addresses.count) addresses)")
                    _ = try? await adopted.withStreamSocket { (socket) throws(SocketError) in socket.release() }   // not ours: give it back
                } catch {
                    if case .invalidArgument = error {} else { Issue.record("adopt(descriptor: \(fd)): \(error)") }
                }
                do {
                    _ = try await loop.adoptDatagram(descriptor: fd)
                    Issue.record("adoptDatagram of descriptor \(fd) of a connect in progress")
                } catch {
                    switch error {   // refused: as the loop's own, or as not a datagram socket
                    case .invalidArgument: break
                    case .socket(let socketError) where socketError.kind == .invalidArgument: break
                    default: Issue.record("adoptDatagram(descriptor: \(fd)): \(error)")
                    }
                }
            }
            connecting.cancel()
            _ = await connecting.result
            #expect(Self.sockets(OwnershipHardeningTests.openDescriptors().subtracting(before)).isEmpty)
        }
        await loop.shutdown()
    }

    /// io_uring's completion driver accepts ahead of the calls (a multishot accept) and keeps the
    /// connections no `accept` has taken yet; the loop closes them with the listener. Before, they
    /// were not counted as the loop's: `adopt(descriptor:)` of one was accepted (two owners).
    @Test("adopt(descriptor:) of a connection the loop accepted ahead (io_uring's multishot accept) is invalidArgument", arguments: backends)
    func adoptQueuedConnection(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
        // The first accept arms the multishot accept (completion driver) and takes the first client.
        async let first = listener.accept(timeout: .seconds(5))
        let client1 = try Self.tcpConnect(listener.address)
        let server1 = try await first
        let known = OwnershipHardeningTests.openDescriptors()
        let client2 = try Self.tcpConnect(listener.address)
        var queued: Set<CInt> = []
        for _ in 0..<100 where queued.isEmpty {   // accepted ahead only where a completion driver runs
            try await Task.sleep(for: .milliseconds(5))
            queued = Self.sockets(OwnershipHardeningTests.openDescriptors().subtracting(known).subtracting([client2]))
            if (try await loop.ioDriver()).kind != .completion { break }
        }
        for fd in queued {
            do {
                let adopted = try await loop.adopt(descriptor: fd)
                Issue.record("adopted descriptor \(fd), a connection the loop accepted ahead")
                _ = try? await adopted.withStreamSocket { (socket) throws(SocketError) in socket.release() }
            } catch {
                if case .invalidArgument = error {} else { Issue.record("adopt(descriptor: \(fd)): \(error)") }
            }
        }
        let server2 = try await listener.accept(timeout: .seconds(5))   // still handed out
        await server1.close()
        await server2.close()
        await listener.close()
        close(client1)
        close(client2)
        await loop.shutdown()
    }

    /// A blocking TCP connect (loopback: it completes at once): the client's descriptor.
    static func tcpConnect(_ address: SocketAddress) throws -> CInt {
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else { close(fd); throw TestFailure("connect: \(errno)") }
        return fd
    }

    /// The sockets among `descriptors` (the test runtime may open other kinds meanwhile).
    static func sockets(_ descriptors: Set<CInt>) -> Set<CInt> {
        descriptors.filter { fd in
            var target = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
            return n > 0 && String(decoding: target[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("socket:")
        }
    }

    /// Docs/Async.md, "Misuse": a loop count outside 1...1024 is `PollerError.system(EINVAL)`; from the
    /// umbrella's `EventLoopGroup(count:)` (no backend named) it comes inside `SelectionError.creationFailed`.
    @Test("EventLoopGroup: a count outside 1...1024 is PollerError.system(EINVAL), or SelectionError.creationFailed holding it")
    func groupCount() {
        for count in [Int.min, -1, 0, EventLoopGroup.maximumLoops + 1, Int.max] {
            do {
                _ = try EventLoopGroup(backend: .poll, count: count)
                Issue.record("EventLoopGroup(backend:count: \(count)) was made")
            } catch {
                guard case .system(_, let code) = error, code == EINVAL else { Issue.record("count \(count): \(error)"); continue }
            }
            do {
                _ = try EventLoopGroup(count: count)
                Issue.record("EventLoopGroup(count: \(count)) was made")
            } catch {
                guard case .creationFailed(_, .system(_, let code)) = error, code == EINVAL else { Issue.record("count \(count): \(error)"); continue }
            }
        }
    }

    // MARK: Backend probes

    /// `Backend.probe()` promises not to cache a failure that says nothing about the backend (out of
    /// descriptors or memory). io_uring's probe also runs a self-test (a pipe registered and written);
    /// before, a self-test that could not make its pipe (EMFILE) was cached, so io_uring stayed
    /// unavailable for the life of the process once a probe had run short of descriptors. In a child
    /// process: the probe cache is per process.
    @Test("a backend probe that ran out of descriptors in io_uring's self-test is probed again, not cached")
    func probeNotCachedWhenExhausted() async {
        let path = "/tmp/readiness-audit-report-\(getpid())"
        unlink(path)
        setenv(ChildReport.variable, path, 1)
        await #expect(processExitsWith: .success) { InputAuditChild.probeAfterExhaustion() }
        ChildReport(path: path).record()
    }
}

enum InputAuditChild {
    static func fail(_ text: String) -> Never { Extremes.fail(text) }

    static func probeAfterExhaustion() {
        alarm(60)
        // Skipped where io_uring cannot run here at all (made directly: the probe cache is untouched).
        let before = openDescriptorCount()
        guard let poller = try? Backend.ioUring.makePoller() else { exit(0) }
        let used = openDescriptorCount() - before
        try? poller.close()
        // Every number below the limit taken but `used + 1`: the poller can be made, its self-test's
        // pipe (two descriptors) cannot.
        var limit = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        var lowered = limit
        lowered.rlim_cur = 512
        guard setrlimit(CInt(RLIMIT_NOFILE.rawValue), &lowered) == 0 else { fail("setrlimit") }
        // The test runtime may take a descriptor of its own meanwhile: then the poller itself cannot
        // be made (not cached either) and the setup is tried again.
        for _ in 0..<5 {
            var fillers: [CInt] = []
            while true {
                let fd = dup(0)
                if fd < 0 { break }
                fillers.append(fd)
            }
            guard errno == EMFILE, fillers.count > used + 1 else { fail("could not fill the descriptor table (\(fillers.count))") }
            for _ in 0..<(used + 1) { close(fillers.removeLast()) }
            let first = Backend.ioUring.probe()
            for fd in fillers { close(fd) }
            // More room than planned: the verdict (available) is cached and nothing is left to show.
            guard let first else { exit(0) }
            guard first.contains("pipe2") else { continue }
            guard setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { fail("setrlimit back") }
            if let second = Backend.ioUring.probe() {
                fail("descriptors are free again, but io_uring is still unavailable: \(second)")
            }
            exit(0)
        }
        exit(0)
    }
}
