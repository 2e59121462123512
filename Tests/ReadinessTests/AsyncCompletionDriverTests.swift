import Glibc
@_spi(Backend) import Readiness
import Testing

/// What the io_uring completion driver (Sources/ReadinessAsync/Drivers/CompletionDriver.swift) must
/// keep: an operation given up ends in the kernel before its task resumes, closing a socket with a
/// pending read lets go of its file, provided buffers come back. The behaviour is every driver's, so
/// the first two run on every backend; on io_uring they run the completion driver.
@Suite("Async completion driver", .serialized)
struct AsyncCompletionDriverTests {
    enum GiveUp: String, CaseIterable, Sendable { case deadline, cancellation }

    /// How long a read waits before it is given up, and how long the test then leaves the kernel to
    /// write into a buffer it should no longer hold.
    static let pause: Duration = .milliseconds(50)
    static let sentinel: UInt8 = 0xAA
    static let payload = [UInt8](repeating: 0x11, count: 16)

    @Test("a read into the caller's buffer given up (deadline, cancellation) never writes it afterwards, and the data stays for the next read",
          .timeLimit(.minutes(1)), arguments: backends, GiveUp.allCases)
    func givenUpReadLeavesBuffer(backend: Backend, giveUp: GiveUp) async throws {
        try await withLoop(backend) { loop in
            let (listener, a, b) = try await connectedPair(loop)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: Self.sentinel)
            nonisolated(unsafe) let shared = buffer
            let timeout: Duration? = giveUp == .deadline ? Self.pause : nil
            let reader = Task { () async -> LoopError? in
                do throws(LoopError) { _ = try await a.read(into: shared, timeout: timeout) } catch { return error }
                return nil
            }
            if giveUp == .cancellation {
                try await loop.sleep(for: Self.pause)
                reader.cancel()
            }
            let error = await reader.value
            #expect(error == (giveUp == .deadline ? .timedOut : .cancelled))
            try await b.write(Self.payload)
            try await loop.sleep(for: Self.pause)
            #expect(buffer.allSatisfy { $0 == Self.sentinel }, "the given-up read wrote the buffer after it returned")
            let again = try await a.read(upTo: 64, timeout: .seconds(5))
            #expect(again == Self.payload)
            try await Self.expectNothingInKernel(loop, closing: listener)
            await a.close()
            await b.close()
        }
    }

    /// Closes the listener (whose multishot accept stays armed while it is open) and checks that no
    /// operation is left in the kernel once its cancel completed (a loop iteration later).
    static func expectNothingInKernel(_ loop: EventLoop, closing listener: AsyncListener) async throws {
        await listener.close()
        try await loop.sleep(for: .milliseconds(20))
        #expect(try await loop.ioDriver().operationsInKernel == 0)
    }

    enum ReadForm: String, CaseIterable, Sendable { case callerBuffer, copying }

    @Test("closing a socket whose read is pending ends the read with .closed and releases its file: the peer sees the end of the stream",
          .timeLimit(.minutes(1)), arguments: backends, ReadForm.allCases)
    func closeWithPendingRead(backend: Backend, form: ReadForm) async throws {
        try await withLoop(backend) { loop in
            let (listener, a, b) = try await connectedPair(loop)
            let reader = Task { () async -> LoopError? in
                do throws(LoopError) {
                    switch form {
                    case .callerBuffer: _ = try await readOnce(a)
                    case .copying: _ = try await a.read(upTo: 64)
                    }
                } catch { return error }
                return nil
            }
            try await loop.sleep(for: Self.pause)   // the read is pending (in the kernel on io_uring)
            await a.close()
            #expect(await reader.value == .closed)
            // The file is gone, not only the number: the peer reads the end of the stream at once.
            let bytes = try await b.read(upTo: 64, timeout: .seconds(2))
            #expect(bytes.isEmpty)
            try await Self.expectNothingInKernel(loop, closing: listener)
            await b.close()
        }
    }

    /// One read of the socket in the given form: its bytes, empty at the end of the stream.
    static func readChunk(_ socket: AsyncSocket, _ form: ReadForm, maximum: Int, timeout: Duration?) async throws(LoopError) -> [UInt8] {
        switch form {
        case .copying:
            return try await socket.read(upTo: maximum, timeout: timeout)
        case .callerBuffer:
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: maximum, alignment: 1)
            defer { buffer.deallocate() }
            let n = try await socket.read(into: buffer, timeout: timeout)
            return Array(buffer[..<n])
        }
    }

    /// A read that comes back short (one byte of a large request) leaves the "drained" hint set, so
    /// the next read waits first, in the ring on io_uring, without trying recv(2): the situations below
    /// begin there.
    static func setDrainedHint(_ a: AsyncSocket, _ b: AsyncSocket, _ loop: EventLoop, _ form: ReadForm) async throws {
        try await b.write([0x01])
        try await loop.sleep(for: .milliseconds(20))
        #expect(try await readChunk(a, form, maximum: 1 << 20, timeout: .seconds(5)) == [0x01])
    }

    /// Bytes followed by a reset: every byte is read, then the reset, never an end of stream. On
    /// io_uring a receive whose provided buffer came back full is topped up with what FIONREAD says is
    /// queued: a recv(2) past it took the pending ECONNRESET (and cleared it), and the next read saw an
    /// end of stream. 4 KiB and 64 KiB fill one buffer of either layout exactly.
    @Test("bytes then a reset: every byte, then .reset, never an end of stream (a receive that fills a provided buffer exactly is topped up only with what is queued)",
          .timeLimit(.minutes(1)), arguments: backends, [4_096, 65_536, 100_000])
    func bytesThenReset(backend: Backend, size: Int) async throws {
        for form in ReadForm.allCases {
            try await withLoop(backend) { loop in try await Self.bytesThenReset(loop, size: size, form: form) }
        }
        guard backend == .ioUring, IOUringTests.usable else { return }
        // The 4 KiB buffers of kernels without incremental ones.
        for form in ReadForm.allCases {
            let loop = try EventLoop { () throws(PollerError) -> any Poller in
                try IOUringSeam.makePoller(allowing: BufferLayout.small.allowed)
            }
            do { try await Self.bytesThenReset(loop, size: size, form: form) } catch { await loop.shutdown(); throw error }
            await loop.shutdown()
        }
    }

    static func bytesThenReset(_ loop: EventLoop, size: Int, form: ReadForm) async throws {
        let (listener, a, b) = try await connectedPair(loop)
        try await setDrainedHint(a, b, loop, form)
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 8) }
        try await b.write(data, timeout: .seconds(5))
        // Every byte delivered before the reset (which drops what the sender still holds): b's send
        // queue empty (SIOCOUTQ: bytes not yet acknowledged), a's receive window permitting.
        var unsent = -1
        for _ in 0..<2_000 {
            unsent = try await b.withStreamSocket { (s) throws(SocketError) -> Int in
                var n: CInt = 0
                return ioctl(s.fd, UInt(TIOCOUTQ), &n) == 0 ? Int(n) : -1
            }
            if unsent == 0 { break }
            try await loop.sleep(for: .milliseconds(1))
        }
        #expect(unsent == 0, "\(unsent) bytes still unacknowledged before the reset (\(form))")
        try await b.withStreamSocket { (s) throws(SocketError) in try s.setLinger(.resetOnClose) }
        await b.close()
        try await loop.sleep(for: .milliseconds(50))   // the bytes and the reset are both queued
        var received: [UInt8] = []
        var ending = "nothing"
        for _ in 0..<1_000 {
            do throws(LoopError) {
                let chunk = try await readChunk(a, form, maximum: 1 << 20, timeout: .seconds(5))
                if chunk.isEmpty { ending = "end of stream"; break }
                received += chunk
            } catch {
                if case .socket(let cause) = error, cause.kind == .reset { ending = "reset" } else { ending = "\(error)" }
                break
            }
        }
        #expect(received.count == size && received == data, "\(received.count) of \(size) bytes (\(form))")
        #expect(ending == "reset", "after \(received.count) bytes: \(ending) (\(form))")
        await a.close()
        await listener.close()
    }

    enum LastChance: String, CaseIterable, Sendable { case zeroTimeout, cancelledTask }

    /// A read that must wait (the hint set) and is given up before it waited, by a deadline already
    /// passed or a task already cancelled, still takes what is queued (the kernel was never asked, on
    /// io_uring: the read ends with the last recv(2) the readiness driver makes).
    @Test("a read given up before it waited (zero timeout, cancelled task) still takes the bytes queued, after a short read set the drained hint",
          .timeLimit(.minutes(1)), arguments: backends, LastChance.allCases)
    func givenUpReadTakesQueued(backend: Backend, chance: LastChance) async throws {
        try await withLoop(backend) { loop in
            for form in ReadForm.allCases {
                let (listener, a, b) = try await connectedPair(loop)
                let aFD = try await descriptor(of: a)   // before the hint is set (the hatch clears it)
                try await Self.setDrainedHint(a, b, loop, form)
                try await b.write(Self.payload)
                awaitReadable(aFD)   // queued at a (not a fixed sleep: a loaded host delivers later)
                let got: [UInt8]
                switch chance {
                case .zeroTimeout:
                    got = try await Self.readChunk(a, form, maximum: 64, timeout: .zero)
                case .cancelledTask:
                    let reader = Task(executorPreference: loop) { () async throws(LoopError) -> [UInt8] in
                        withUnsafeCurrentTask { $0?.cancel() }
                        return try await Self.readChunk(a, form, maximum: 64, timeout: .seconds(5))
                    }
                    got = try await reader.value
                }
                #expect(got == Self.payload, "\(got.count) bytes (\(form))")
                await a.close(); await b.close(); await listener.close()
            }
        }
    }

    @Test("io_uring loops use the completion driver; READINESS_IO_DRIVER=readiness keeps the readiness driver")
    func driverChoice() async throws {
        guard IOUringTests.usable else { return }
        let completion = try EventLoop(backend: .ioUring)
        #expect(try await completion.ioDriver().kind == .completion)
        await completion.shutdown()
        setenv("READINESS_IO_DRIVER", "readiness", 1)
        let readiness = try EventLoop(backend: .ioUring)
        unsetenv("READINESS_IO_DRIVER")
        #expect(try await readiness.ioDriver().kind == .readiness)
        await readiness.shutdown()
        if let other = backends.first(where: { $0 != .ioUring }) {
            let loop = try EventLoop(backend: other)
            #expect(try await loop.ioDriver().kind == .readiness)
            await loop.shutdown()
        }
    }

    /// The provided-buffer layouts a kernel may leave the driver with.
    enum BufferLayout: String, CaseIterable, Sendable {
        /// 16 × 64 KiB consumed a receive at a time (Linux 6.12).
        case incremental
        /// 256 × 4 KiB, one receive each (5.19).
        case small
        /// None: copying reads take the readiness path.
        case none
        var allowed: IOUringSeam.Features {
            switch self {
            case .incremental: .all
            case .small: IOUringSeam.Features.all.subtracting(.incrementalBuffers)
            case .none: IOUringSeam.Features.all.subtracting([.providedBuffers, .incrementalBuffers])
            }
        }
    }

    /// More reads than the ring has provided buffers and more bytes than they hold (1 MiB), each read
    /// larger than a small buffer (so that it is cut short there and reads on with recv(2)): each part
    /// is given back after its bytes were copied, or the later reads would find no buffer (ENOBUFS) and
    /// fall back to readiness.
    @Test("every provided buffer is given back: a thousand copying reads of 5 kB, no fallback, nothing left in the kernel",
          .timeLimit(.minutes(1)), arguments: BufferLayout.allCases)
    func providedBuffersReturned(layout: BufferLayout) async throws {
        guard IOUringTests.usable else { return }
        let rounds = 1_000
        let size = 5_000
        let descriptors = openDescriptorCount()
        let allowed = layout.allowed
        let loop = try EventLoop { () throws(PollerError) -> any Poller in try IOUringSeam.makePoller(allowing: allowed) }
        let (listener, a, b) = try await connectedPair(loop)
        let before = try await loop.ioDriver()
        for round in 0..<rounds {
            let message = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: size)
            // Each read asks for a byte more than comes, so it comes back short and the next one waits
            // in the ring without trying recv(2) first (the driver's hint). A read may still take bytes
            // already there at once (the first; without provided buffers, one whose hint a readiness
            // event cleared).
            async let echoed = a.read(upTo: message.count + 1, timeout: .seconds(5))
            try await b.write(message)
            var received = try await echoed
            while received.count < message.count {   // a segment boundary may split it
                received += try await a.read(upTo: message.count - received.count + 1, timeout: .seconds(5))
            }
            #expect(received == message)
        }
        let after = try await loop.ioDriver()
        #expect(after.kind == .completion)
        if layout == .none {
            // None goes through the ring (a 5 kB write is sent at once: no completion either); how
            // many wait first depends on whether a readiness event cleared the hint in between.
            #expect(after.completed == before.completed, "copying reads without provided buffers take the readiness path")
            #expect(after.readinessFallbacks > before.readinessFallbacks)
        } else {
            #expect(after.readinessFallbacks == before.readinessFallbacks, "reads fell back to readiness: a provided buffer was not given back")
            #expect(after.completed - before.completed >= rounds * 9 / 10)
        }
        try await Self.expectNothingInKernel(loop, closing: listener)
        await a.close()
        await b.close()
        await loop.shutdown()
        #expect(await settledDescriptorCount(descriptors) == descriptors)
    }

    /// A blocking loopback client (its connect completes in the listener's backlog).
    static func client(_ address: SocketAddress) throws -> CInt {
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else {
            close(fd)
            throw TestFailure("connect: \(errno)")
        }
        return fd
    }

    /// io_uring's multishot accept takes connections ahead of the `accept` calls (up to a bound): every
    /// one is handed out in order of arrival, none is lost, and those nobody took are closed with the
    /// listener. The same outcome on every backend.
    @Test("connections that arrive while nobody accepts are all accepted later; closing the listener closes the rest, no descriptor left",
          .timeLimit(.minutes(1)), arguments: backends)
    func acceptsAhead(backend: Backend) async throws {
        let clients = 40
        let taken = 30
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            // The first accept arms the multishot accept on io_uring.
            async let first = listener.accept(timeout: .seconds(5))
            var fds = [try Self.client(listener.address)]
            await (try await first).close()
            for _ in 1..<clients { fds.append(try Self.client(listener.address)) }
            try await loop.sleep(for: .milliseconds(50))   // accepted ahead, up to the bound, on io_uring
            for _ in 0..<taken {
                let socket = try await listener.accept(timeout: .seconds(5))
                await socket.close()
            }
            await listener.close()
            // Every client was either accepted and closed or refused with the listener: each reads
            // the end of the stream or a reset, none hangs.
            for fd in fds {
                var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                #expect(poll(&entry, 1, 2_000) == 1, "a client's connection was left open")
                close(fd)
            }
            if backend == .ioUring {
                try await loop.sleep(for: .milliseconds(20))
                #expect(try await loop.ioDriver().operationsInKernel == 0)
            }
        }
    }

    enum Family: String, CaseIterable, Sendable { case ipv4, ipv6 }

    @Test("a connection reset before it is accepted is handed out with its client's address, as accept(2) gives it (the completion driver asks the kernel after the accept: getpeername is ENOTCONN then); the echo example counted it on epoll and waited for it for ever on io_uring",
          .timeLimit(.minutes(1)), arguments: backends, Family.allCases)
    func resetBeforeAcceptKeepsPeer(backend: Backend, family: Family) async throws {
        try await withLoop(backend) { loop in
            let host = family == .ipv4 ? "127.0.0.1" : "::1"
            let listener = try await loop.listen(on: try SocketAddress(ip: host, port: 0))
            for armedFirst in [false, true] {
                // With an accept already waiting, io_uring's multishot accept takes the connection
                // before the reset; without, it is accepted from the kernel's queue after it.
                if armedFirst {
                    await #expect(throws: LoopError.timedOut) { _ = try await listener.accept(timeout: .zero) }
                }
                let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let clientAddress = try await client.withStreamSocket { (s) throws(SocketError) in s.localAddress }
                try await client.withStreamSocket { (s) throws(SocketError) in try s.setLinger(.resetOnClose) }
                await client.close()
                try await loop.sleep(for: .milliseconds(10))
                let accepted = try await listener.accept(timeout: .seconds(5))
                #expect(accepted.peer == clientAddress, "\(String(describing: accepted.peer)) on \(backend)")
                do throws(LoopError) {
                    let bytes = try await accepted.read(upTo: 16, timeout: .seconds(5))
                    Issue.record("read \(bytes.count) bytes from a reset connection on \(backend)")
                } catch {
                    var reset = false
                    if case .socket(let cause) = error, cause.kind == .reset { reset = true }
                    #expect(reset, "\(error) on \(backend)")
                }
                await accepted.close()
            }
            await listener.close()
        }
    }
}
