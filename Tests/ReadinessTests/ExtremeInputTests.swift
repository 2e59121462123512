import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing

/// Issue 18, "the class": every public entry that takes a caller's `Int`, `Duration`, descriptor or
/// string is fed extreme values (`Int.min`, `Int.max`, -1, 0, empty, NUL, huge) in a child process (a
/// Swift Testing exit test). The child must end normally: a trap (precondition, overflow, allocation),
/// a hang (an alarm ends the child after a minute), a wrong kind of answer or a leaked descriptor
/// fails it, with what it was doing on its standard error.
///
/// No string here can reach the system resolver: names go to a stub resolver, and the strings given to
/// entries that resolve by themselves are refused by the parser or are numeric.
@Suite("Extreme input")
struct ExtremeInputTests {
    @Test("addresses and names: every parser, any string")
    func strings() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.strings() }
        report.record()
    }

    @Test("connects: any option, any timeout")
    func connects() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.connects() }
        report.record()
    }

    @Test("sockets and listeners: any descriptor, range, option value")
    func sockets() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.sockets() }
        report.record()
    }

    @Test("timers, deadlines and event buffers: any instant, any duration, any capacity")
    func timers() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.timers() }
        report.record()
    }

    @Test("pollers: any descriptor, token, interest and timeout, on every backend")
    func pollers() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.pollers() }
        report.record()
    }

    @Test("the event loop: any descriptor, count, duration and option, on every backend")
    func loops() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { await Extremes.loops() }
        report.record()
    }

    @Test("pollers made and closed on four threads at once, every backend (libevent's method list was not thread-safe)")
    func concurrentCreation() async {
        let report = childReport()
        await #expect(processExitsWith: .success) { Extremes.concurrentCreation() }
        report.record()
    }

    @Test("EventLoopGroup: the round robin never indexes below zero when its counter wraps")
    func groupTurns() {
        for count in [1, 2, 3, 7, 1024] {
            for turn in [Int.min, Int.min + 1, -1, 0, 1, Int.max - 1, Int.max] {
                let index = EventLoopGroup.index(ofTurn: turn, count: count)
                #expect((0..<count).contains(index), "turn \(turn) of \(count) loops gave index \(index)")
            }
        }
    }
}

/// Where a child writes why it failed (the path is handed over in the environment, which the child
/// inherits: an exit test's body captures nothing).
struct ChildReport {
    static let variable = "READINESS_EXTREME_REPORT"
    let path: String
    /// Records what the child wrote, if anything, and removes the file.
    func record() {
        defer { unlink(path) }
        guard let file = fopen(path, "r") else { return }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        if !bytes.isEmpty { Issue.record("the child reported: \(String(decoding: bytes, as: UTF8.self))") }
    }
}

private func childReport() -> ChildReport {
    let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    let path = "\(directory)/readiness-extreme-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    unlink(path)
    setenv(ChildReport.variable, path, 1)
    return ChildReport(path: path)
}

/// The extreme values, and one function per family of entries (each runs in its own child).
enum Extremes {
    static let ints: [Int] = [.min, .min + 1, -65_536, -1, 0, 1, 65_535, 65_536, .max - 1, .max]
    static let int64s: [Int64] = [.min, .min + 1, -1, 0, 1, .max - 1, .max]
    static let durations: [Duration] = [
        .zero, Duration(secondsComponent: 0, attosecondsComponent: 1), Duration(secondsComponent: 0, attosecondsComponent: -1), .nanoseconds(-1), .nanoseconds(1), .milliseconds(-5),
        .seconds(Int64.min), .seconds(Int64.max),
        Duration(secondsComponent: .max, attosecondsComponent: 999_999_999_999_999_999),
        Duration(secondsComponent: .min, attosecondsComponent: -999_999_999_999_999_999),
        // Longer than Int64.max seconds: `components` traps on these (found in review).
        .seconds(Int64.max) * 2, .seconds(Int64.max) + .seconds(1), Duration(attoseconds: .max), Duration(attoseconds: .min),
    ]
    /// Durations that end at once (or never start): safe to wait for.
    static let shortDurations: [Duration] = [.zero, Duration(secondsComponent: 0, attosecondsComponent: 1), Duration(secondsComponent: 0, attosecondsComponent: -1), .nanoseconds(-1), .nanoseconds(1),
                                             .milliseconds(-5), .seconds(Int64.min),
                                             Duration(secondsComponent: .min, attosecondsComponent: -999_999_999_999_999_999),
                                             Duration(attoseconds: .min)]
    static let descriptors: [CInt] = [.min, -2, -1, 1_023, 1_024, 65_535, 1 << 20, .max]
    static let tokens: [UInt64] = [0, 1, UInt64(Int64.max), UInt64(Int64.max) + 1, .max - 1, .max]
    static let longText = String(repeating: "a", count: 100_000)
    static let texts: [String] = [
        "", "\0", "a\0b", ":", "::", ":::", "[", "]", "[]", "[]:", "[]:80", ":80", "[::1", "[::1]", "[::1]:",
        "[::1]:99999", "[::1]:+0080", "[::1]:-1", "::1:80", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-0",
        "1.2.3.4:\(Int.max)", "1.2.3.4:\(Int.min)", "[127.0.0.1]:80", "127.0.0.1:+80", "127.0.0.1\0.example.com:80",
        "[::1%lo]:80", "[::1\0]:80", "unix:", "unix:\0", "unix:\0name", "unix:/tmp/x\0.sock", "unix:" + longText,
        longText, longText + ":80", "💥", "💥:80", "\u{FFFF}:80", " 127.0.0.1:80", "127.0.0.1:80 ", "localhost\0.evil.example:80",
    ]

    static func guardAgainstHang() { alarm(60) }

    static func fail(_ text: String) -> Never {
        let line = "FAILED: \(text)\n"
        FileHandleStderr.write(line)
        if let path = getenv(ChildReport.variable), let file = fopen(path, "w") {
            fputs(line, file)
            fclose(file)
        }
        exit(2)
    }

    // MARK: Strings

    static func strings() {
        guardAgainstHang()
        let waker: Waker
        do { waker = try Waker() } catch { fail("Waker: \(error)") }
        defer { waker.close() }
        let stub = CountingResolver()
        for text in texts {
            let hasNUL = text.utf8.contains(0)
            if let parsed = try? SocketAddress(text), hasNUL { fail("SocketAddress(\(text.debugDescription)) accepted a NUL: \(parsed)") }
            if let parsed = try? SocketAddress(ip: text, port: 80), hasNUL { fail("SocketAddress(ip: \(text.debugDescription)) accepted a NUL: \(parsed)") }
            if let parsed = try? SocketAddress(unixPath: text), hasNUL { fail("SocketAddress(unixPath: \(text.debugDescription)) accepted a NUL: \(parsed)") }
            if let split = try? SocketAddress.splitHostPort(text), hasNUL { fail("splitHostPort(\(text.debugDescription)) accepted a NUL: \(split)") }
            if let split = try? SocketAddress.splitHostPort(text), split.host.isEmpty { fail("splitHostPort(\(text.debugDescription)) gave an empty host") }
            // Only numeric or refused strings reach resolve (a name would leave the machine).
            if (try? SocketAddress(text)) != nil || (try? SocketAddress.splitHostPort(text)) == nil {
                _ = try? SocketAddress.resolve(text)
            }
            if let resolution = try? Resolution(text, waker: waker, resolver: stub) {
                for _ in 0..<200 where !resolution.isComplete { usleep(1_000); _ = resolution.takeAnswers() }
                resolution.cancel()
            }
            let resolution = Resolution(host: text, port: 80, waker: waker, resolver: stub)
            for _ in 0..<200 where !resolution.isComplete { usleep(1_000); _ = resolution.takeAnswers() }
            resolution.cancel()
        }
        if stub.hostsWithNUL > 0 { fail("\(stub.hostsWithNUL) lookups of a name with a NUL byte reached the resolver") }
    }

    // MARK: Connects

    static func connects() {
        guardAgainstHang()
        Backend.available.forEach(warmUp)
        let before = openDescriptorCount()
        targetsBefore = descriptorTargets()
        let refused: SocketAddress
        do { refused = try closedPort() } catch { fail("closedPort: \(error)") }
        for backend in Backend.available {
            let poller: any Poller
            do { poller = try backend.makePoller() } catch { fail("\(backend) makePoller: \(error)") }
            defer { try? poller.close() }
            for attempts in ints {
                var options = HappyEyeballs.Options()
                options.maximumAttempts = attempts
                do {
                    _ = try Connector.connect(toHost: refused.description, on: poller, options: options)
                    fail("connected to a closed port")
                } catch .invalidOptions {
                    if attempts >= 1 { fail("maximumAttempts \(attempts) refused") }
                } catch .connect(let error) {
                    if attempts < 1 { fail("maximumAttempts \(attempts) accepted: \(error)") }
                } catch { fail("maximumAttempts \(attempts): \(error)") }
            }
            for duration in durations {
                var options = HappyEyeballs.Options()
                options.attemptDelay = duration
                options.resolutionDelay = duration
                options.attemptTimeout = duration
                _ = try? Connector.connect(toHost: refused.description, on: poller, options: options)
                _ = try? Connector.connect(to: refused, on: poller, timeout: duration)
                _ = try? Connector.connect(to: [refused, refused], on: poller, timeout: duration, attemptDelay: duration)
            }
            do {
                _ = try Connector.connect(to: [], on: poller, timeout: .seconds(1))
                fail("connected to no address")
            } catch {
                if error.cause != .noAddress { fail("an empty list: \(error)") }
            }
        }
        checkDescriptors(before, "connects")
    }

    // MARK: Sockets

    static func sockets() {
        guardAgainstHang()
        let before = openDescriptorCount()
        targetsBefore = descriptorTargets()
        // Descriptors that are not sockets: refused, and left open (the caller's).
        let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
        // A closed number far above the lowest free one: another thread of the process opening a file
        // meanwhile (the runtime, Dispatch) takes the lowest, and took this one in a CI run
        // (ENOTSOCK where EBADF was expected).
        let closedNumber = fcntl(file, F_DUPFD_CLOEXEC, 1_000)
        close(closedNumber)
        for fd in descriptors + [file, closedNumber] {
            do {
                _ = try StreamSocket(adopting: fd)
                fail("StreamSocket(adopting: \(fd)) accepted")
            } catch {
                // Negative or not a socket: invalidArgument; not open: closed (EBADF).
                let expected: SocketError.Kind = fd < 0 || fd == file ? .invalidArgument : .closed
                if error.kind != expected { fail("StreamSocket(adopting: \(fd)): \(error), expected \(expected)") }
            }
        }
        if fcntl(file, F_GETFD) < 0 { fail("a refused adoption closed the caller's descriptor") }
        close(file)
        // A real socket: every range, option value and duration.
        guard let pair = try? socketPair(), let socket = try? StreamSocket(adopting: pair.0) else { fail("socketpair") }
        let bytes: [UInt8] = [1, 2, 3, 4]
        for offset in ints {
            for end in ints + [nil] {
                let valid = offset >= 0 && offset <= (end ?? 4) && (end ?? 4) <= 4
                do {
                    _ = try socket.write(bytes, from: offset, to: end)
                    if !valid { fail("write(from: \(offset), to: \(String(describing: end))) accepted") }
                } catch {
                    if valid || error.kind != .invalidArgument { fail("write(from: \(offset), to: \(String(describing: end))): \(error)") }
                }
            }
        }
        var empty: [UInt8] = []
        if (try? socket.read(into: &empty)) != nil { fail("a read into an empty array was accepted") }
        for value in ints {
            _ = try? socket.setReceiveBufferSize(value)
            _ = try? socket.setSendBufferSize(value)
            _ = try? socket.setKeepAlive(KeepAlive(idle: .seconds(1), interval: .seconds(1), probes: value))
        }
        for duration in durations {
            _ = try? socket.setKeepAlive(KeepAlive(idle: duration, interval: duration, probes: 1))
            _ = try? socket.setLinger(.wait(duration))
        }
        try? socket.setLinger(.off)
        socket.close()
        close(pair.1)
        // Listeners: any backlog, any back-off.
        for backlog in [CInt.min, -1, 0, 1, CInt.max] {
            var options = Listener.Options()
            options.backlog = backlog
            for duration in durations {
                options.backoff = AcceptBackoff(initial: duration, maximum: duration)
                guard let listener = try? Listener(bind: try SocketAddress("127.0.0.1:0"), options: options) else { continue }
                _ = try? listener.accept()
                try? listener.resume()
                listener.close()
            }
        }
        checkDescriptors(before, "sockets")
    }

    // MARK: Timers

    static func timers() {
        guardAgainstHang()
        let timers = Timers()
        var ids: [TimerID] = []
        for instant in int64s {
            ids.append(timers.schedule(at: instant, token: 1))
            for duration in durations {
                ids.append(timers.schedule(after: duration, token: 2, now: instant))
                _ = Deadline.after(duration, now: instant)
                _ = MonotonicClock.deadline(after: duration.clampedNanoseconds, from: instant)
                if let timeout = timers.timeout(now: instant, limit: duration), timeout < .zero {
                    fail("Timers.timeout(now: \(instant), limit: \(duration)) is negative: \(timeout)")
                }
            }
            for other in int64s where Deadline.timeout(until: instant, now: other) < .zero {
                fail("Deadline.timeout(until: \(instant), now: \(other)) is negative")
            }
            _ = timers.popDue(now: instant)
        }
        for id in ids { timers.cancel(id) }
        for id in ids where timers.cancel(id) { fail("a cancelled timer cancelled twice") }
        while timers.popDue(now: .max) != nil {}
        if !timers.isEmpty { fail("timers left after popping everything") }
        for capacity in ints {
            let buffer = EventBuffer(capacity: capacity)
            if buffer.capacity < 1 || buffer.capacity > EventBuffer.maximumCapacity { fail("EventBuffer(capacity: \(capacity)): \(buffer.capacity)") }
        }
    }

    // MARK: Pollers

    static func pollers() {
        guardAgainstHang()
        Backend.available.forEach(warmUp)
        let before = openDescriptorCount()
        targetsBefore = descriptorTargets()
        let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
        for backend in Backend.available {
            let poller: any Poller
            do { poller = try backend.makePoller() } catch { fail("\(backend) makePoller: \(error)") }
            guard let pair = try? socketPair() else { fail("socketpair") }
            for fd in descriptors + [file, pair.0] {
                for token in tokens {
                    for interest in [Interest(), .readable, .writable, [.readable, .writable], Interest(rawValue: 0xFF)] {
                        for trigger in [Trigger.level, .edge, .oneShot] {
                            _ = try? poller.register(fd, token: Token(token), interest: interest, trigger: trigger)
                            _ = try? poller.reregister(fd, token: Token(token), interest: interest, trigger: trigger)
                            _ = try? poller.deregister(fd)
                        }
                    }
                }
            }
            let events = EventBuffer(capacity: 4)
            for duration in durations {
                // A wait that would block for ever is woken first: only the arithmetic is under test.
                try? poller.waker.wake()
                _ = try? poller.wait(into: events, timeout: duration)
            }
            try? poller.close()
            _ = try? poller.close()
            close(pair.0)
            close(pair.1)
        }
        close(file)
        checkDescriptors(before, "pollers")
    }

    // MARK: Pollers on several threads

    static func concurrentCreation() {
        guardAgainstHang()
        for backend in Backend.available {
            let failures = Mutex(0)
            let threads = (0..<4).map { _ in
                Thread {
                    for _ in 0..<300 {
                        guard let poller = try? backend.makePoller() else { failures.withLock { $0 += 1 }; continue }
                        try? poller.close()
                    }
                }
            }
            threads.forEach { $0.join() }
            if failures.withLock({ $0 }) > 0 { fail("\(backend): \(failures.withLock { $0 }) pollers could not be made") }
        }
    }

    // MARK: The event loop

    static func loops() async {
        guardAgainstHang()
        Backend.available.forEach(warmUp)
        let before = openDescriptorCount()
        targetsBefore = descriptorTargets()
        for count in ints where !(1...8).contains(count) {
            if (try? EventLoopGroup(count: count) { () throws(PollerError) -> any Poller in try Backend.poll.makePoller() }) != nil {
                fail("EventLoopGroup(count: \(count)) was made")
            }
        }
        let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
        for backend in Backend.available {
            let loop: EventLoop
            do { loop = try EventLoop(backend: backend) } catch { fail("\(backend) EventLoop: \(error)") }
            // Sleeps: the short ones end, the long ones are cancelled.
            for duration in durations {
                let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: duration) }
                if !shortDurations.contains(duration) {
                    usleep(2_000)
                    sleeper.cancel()
                }
                _ = await sleeper.result
            }
            // Caller-owned descriptors, any number, any timeout.
            for fd in descriptors + [file] {
                for duration in shortDurations {
                    _ = try? await loop.readable(fd, timeout: duration)
                    _ = try? await loop.writable(fd, timeout: duration)
                }
            }
            // Adoption: refused descriptors stay the caller's.
            for fd in descriptors + [file] {
                do {
                    _ = try await loop.adopt(descriptor: fd)
                    fail("adopt(descriptor: \(fd)) accepted")
                } catch {
                    let expected: SocketError.Kind = fd < 0 || fd == file ? .invalidArgument : .closed
                    guard case .socket(let socketError) = error, socketError.kind == expected else {
                        fail("adopt(descriptor: \(fd)): \(error)")
                    }
                }
            }
            if fcntl(file, F_GETFD) < 0 { fail("a refused adoption closed the caller's descriptor") }
            // A connected pair: reads of any size, writes and accepts with any timeout.
            guard let listener = try? await loop.listen(on: try SocketAddress("127.0.0.1:0")) else { fail("listen") }
            async let accepted = listener.accept(timeout: .seconds(5))
            guard let client = try? await loop.connect(to: listener.address, timeout: .seconds(5)),
                  let server = try? await accepted else { fail("connect") }
            for maximum in ints {
                if maximum > 0 { try? await client.write([7], timeout: .seconds(5)) }
                do {
                    let got = try await server.read(upTo: maximum, timeout: .seconds(5))
                    if maximum < 1 || got != [7] { fail("read(upTo: \(maximum)) gave \(got)") }
                } catch {
                    if maximum > 0 || error != .invalidArgument("read(upTo: \(maximum))") { fail("read(upTo: \(maximum)): \(error)") }
                }
            }
            for duration in shortDurations {
                _ = try? await server.read(upTo: 16, timeout: duration)
                _ = try? await client.write([1], timeout: duration)
                _ = try? await listener.accept(timeout: duration)
                _ = try? await loop.connect(to: listener.address, timeout: duration).close()
            }
            _ = try? await server.read(upTo: 1 << 20, timeout: .milliseconds(50))
            // Happy Eyeballs options: any count, any duration.
            for attempts in ints {
                var options = HappyEyeballs.Options()
                options.maximumAttempts = attempts
                do {
                    let socket = try await loop.connect(host: "127.0.0.1", port: listener.address.port ?? 0, timeout: .seconds(5),
                                                        options: options, resolver: CountingResolver())
                    await socket.close()
                    if attempts < 1 { fail("maximumAttempts \(attempts) accepted") }
                } catch {
                    if attempts >= 1 || error != .invalidArgument("HappyEyeballs.Options.maximumAttempts must be at least 1") {
                        fail("maximumAttempts \(attempts): \(error)")
                    }
                }
            }
            for duration in durations {
                var options = HappyEyeballs.Options()
                options.attemptDelay = duration
                options.resolutionDelay = duration
                options.attemptTimeout = duration
                let address = listener.address
                if let socket = try? await loop.connect(to: [address, address], timeout: .seconds(5), options: options) { await socket.close() }
            }
            await client.close()
            await server.close()
            await listener.close()
            await loop.shutdown()
            // After shutdown: typed errors, nothing taken.
            guard let pair = try? socketPair() else { fail("socketpair") }
            do {
                _ = try await loop.adopt(descriptor: pair.0)
                fail("adopted after shutdown")
            } catch {
                if error != .shutdown { fail("adopt after shutdown: \(error)") }
            }
            if fcntl(pair.0, F_GETFD) < 0 { fail("adopt after shutdown closed the caller's descriptor") }
            close(pair.0)
            close(pair.1)
        }
        close(file)
        checkDescriptors(before, "loops")
    }

    /// What was open when the function began (set once per child, before any other work).
    nonisolated(unsafe) static var targetsBefore: [String] = []

    /// Fails if a descriptor opened since the start is still open. A timerfd is not counted: the test
    /// runtime in the child may open one for itself at any time (libevent's are checked by the
    /// descriptor accounting of the other suites).
    static func checkDescriptors(_ before: Int, _ what: String) {
        func leaked() -> Set<String> {
            Set(descriptorTargets()).subtracting(targetsBefore).filter { !$0.hasSuffix("anon_inode:[timerfd]") }
        }
        for _ in 0..<100 where !leaked().isEmpty { usleep(10_000) }
        let left = leaked()
        if !left.isEmpty { fail("\(what): \(left.count) descriptors leaked: \(left.sorted())") }
    }
}

/// A resolver that never leaves the process: answers loopback, and counts names with a NUL byte.
final class CountingResolver: HostResolver {
    private let nul = Mutex(0)
    var hostsWithNUL: Int { nul.withLock { $0 } }
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        if host.utf8.contains(0) { nul.withLock { $0 += 1 } }
        let text = family == .ipv6 ? "[::1]:\(port)" : "127.0.0.1:\(port)"
        guard let address = try? SocketAddress(text) else { return .failure(ResolutionError(host: host, reason: "stub")) }
        return .success([address])
    }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
