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
        let starts = try attemptStarts(backend, Array(repeating: full.address, count: 5), delay: 100, timeout: 100, for: 330)
        let gaps = zip(starts.dropFirst(), starts).map { $0 - $1 }
        // Attempts at about 0, 100, 200 and 300 ms: four, each gap near the 100 ms delay.
        #expect(starts.count == 4, "\(backend): attempts at \(starts) ms")
        #expect(gaps.allSatisfy { $0 >= 10 }, "\(backend): gaps \(gaps) ms")
    }

    /// The newest attempt refused at once while an earlier one still connects: the next starts
    /// without waiting for the step, but 10 ms after the refused one's start (before: 0.1 ms after).
    @Test("a refusal beside a running attempt starts the next 10 ms after its own start", arguments: backends)
    func refusalBesideRunningAttempt(backend: Backend) throws {
        let full = try fullTCPListener()
        defer { close(full.fd); full.fillers.forEach { close($0) } }
        let refused = try closedPort()
        let starts = try attemptStarts(backend, [full.address, refused, full.address, full.address], delay: 150, timeout: nil, for: 250)
        // 0, 150 (refused), 160: the third well before the step at 300, and not with the refusal.
        #expect(starts.count == 3, "\(backend): attempts at \(starts) ms")
        if starts.count >= 3 { #expect(starts[2] - starts[1] >= 9 && starts[2] - starts[1] < 100, "\(backend): attempts at \(starts) ms") }
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
                var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 10_000) == 1 else { return }
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { return }
                if accepted == 2 {
                    var reset = linger(l_onoff: 1, l_linger: 0)
                    setsockopt(connection, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
                    close(connection)
                    continue
                }
                defer { close(connection) }
                var pending: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 4096)
                var served = 0
                reading: while accepted != 1 || served < 2 {
                    var reader = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
                    guard poll(&reader, 1, 10_000) == 1 else { return }
                    let n = recv(connection, &chunk, chunk.count, 0)
                    if n <= 0 { break reading }
                    pending += chunk[0..<n]
                    while let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                        pending.removeSubrange(0..<end.upperBound)
                        _ = answer.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        served += 1
                    }
                }
            }
        }
        let client = try Spawned([try builtExecutable(example), "--url", "http://\(listener.address)/",
                                  "--connections", "1", "--requests", "6", "--timeout", "5"])
        let (status, output) = client.finish()
        shutdown(fd, CInt(SHUT_RDWR))
        join()
        #expect(status == 0, "\(output)")
        #expect(output.contains("requests 6 ok"), "\(output)")
    }
}
