import Glibc
import Readiness
import Synchronization
import Testing

/// Ends the delays of a ``ScriptedResolver`` early: lookups share a bounded pool (at most
/// `Resolution.maximumLookupThreads` at once), so a test must not leave one sleeping when it ends.
final class LookupRelease: Sendable {
    let released = Atomic<Bool>(false)
    func release() { released.store(true, ordering: .releasing) }
}

/// A resolver that answers each family after a chosen delay (or once `release` is released), with
/// chosen addresses.
struct ScriptedResolver: HostResolver {
    let v6: [SocketAddress], v6Delay: Duration
    let v4: [SocketAddress], v4Delay: Duration
    var release: LookupRelease? = nil
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        let (addresses, delay) = family == .ipv6 ? (v6, v6Delay) : (v4, v4Delay)
        let end = ContinuousClock.now + delay
        while ContinuousClock.now < end, !(release?.released.load(ordering: .acquiring) ?? false) { usleep(1_000) }
        return addresses.isEmpty ? .failure(ResolutionError(host: host, reason: "no address")) : .success(addresses)
    }
}

/// A caller's loop: one poller, one Timers, a HappyEyeballs among other registrations.
/// Returns the outcome and the other registration's events seen meanwhile.
func runLoop(_ connect: HappyEyeballs, poller: any Poller, timers: Timers,
             otherToken: Token? = nil) throws -> (HappyEyeballs.Progress, otherEvents: Int) {
    let events = EventBuffer(capacity: 32)
    var progress = connect.start()
    var others = 0
    let giveUp = ContinuousClock.now + .seconds(10)
    while progress.isInProgress && ContinuousClock.now < giveUp {
        try poller.wait(into: events, timeout: timers.timeout())
        for event in events {
            if event.token == otherToken { others += 1; continue }
            if event.isWakeup || connect.owns(event.token) { progress = connect.handle(event) }
        }
        let now = MonotonicClock.nowNanoseconds
        while let token = timers.popDue(now: now) {
            if connect.owns(token) { progress = connect.handleTimer(token, now: now) }
        }
    }
    return (progress, others)
}

@Suite("Happy Eyeballs, step by step")
struct HappyEyeballsTests {
    @Test("an attempt whose socket() fails counts as failed: the next starts at once, and all failing ends", arguments: backends)
    func socketFailure(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let timers = Timers()
        let failing = ConnectAttempt(to: listener.address, poller: poller, token: 1, timeout: .seconds(2),
                                     syscalls: FailingSetupSyscalls(socketErrno: EMFILE))
        let good = ConnectAttempt(to: listener.address, poller: poller, token: 2, timeout: .seconds(2))
        let connect = HappyEyeballs(attempts: [failing, good], poller: poller, timers: timers, timerToken: 0,
                                    attemptDelay: .seconds(5))
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        close(socket.fd)
        let alone = HappyEyeballs(attempts: [ConnectAttempt(to: listener.address, poller: poller, token: 1, timeout: .seconds(2),
                                                            syscalls: FailingSetupSyscalls(socketErrno: EMFILE))],
                                  poller: poller, timers: timers, timerToken: 0, attemptDelay: .seconds(5))
        guard case .failed(let error) = alone.start() else { Issue.record("expected a failure at once"); return }
        #expect(error.errno == EMFILE)
    }

    @Test("runs inside the caller's loop: other registrations' events reach the caller; a refusal starts the next at once", arguments: backends)
    func inCallersLoop(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        var fds: [CInt] = [-1, -1]
        socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds)
        defer { close(fds[0]); close(fds[1]) }
        try poller.register(fds[0], token: 5000, interest: .writable)   // always ready
        defer { try? poller.deregister(fds[0]) }
        let timers = Timers()
        let refused = try closedPort()
        // A 5 s attempt delay: "at once, not after the delay" stays clear on a loaded machine (a
        // sanitizer run, CI), where the default 250 ms is within a scheduling stall.
        var options = HappyEyeballs.Options()
        options.attemptDelay = .seconds(5)
        let connect = HappyEyeballs(addresses: [refused, listener.address], poller: poller,
                                    timers: timers, tokenBase: 100, options: options)
        let start = ContinuousClock.now
        let (progress, others) = try runLoop(connect, poller: poller, timers: timers, otherToken: 5000)
        // Section 5: the refusal started the next attempt at once, not after the attempt delay.
        #expect(ContinuousClock.now - start < .seconds(2))
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        #expect(socket.peer == listener.address)
        #expect(others > 0)
        #expect(connect.attempts.map(\.address) == [refused, listener.address])
        #expect(timers.isEmpty)
        close(socket.fd)
    }

    @Test("a hanging attempt is overtaken after the attempt delay; losers are closed", arguments: backends)
    func attemptDelay(backend: Backend) throws {
        let (full, fullAddress, fillers) = try fullTCPListener()
        defer { close(full); for fd in fillers { close(fd) } }
        let good = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        var options = HappyEyeballs.Options()
        options.attemptDelay = .milliseconds(100)
        let timers = Timers()
        let connect = HappyEyeballs(addresses: [fullAddress, good.address], poller: poller, timers: timers,
                                    tokenBase: 0, options: options)
        let start = ContinuousClock.now
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        let took = ContinuousClock.now - start
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        #expect(socket.peer == good.address)
        #expect(took >= .milliseconds(100) && took < .seconds(2))
        #expect(connect.attempts.allSatisfy { $0.isFinished })
        #expect(timers.isEmpty)
        close(socket.fd)
        #expect(openDescriptorCount() == before)
    }

    @Test("cancel in flight deregisters and closes every attempt and cancels its timers", arguments: backends)
    func cancelInFlight(backend: Backend) throws {
        let (full, fullAddress, fillers) = try fullTCPListener()
        defer { close(full); for fd in fillers { close(fd) } }
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let before = openDescriptorCount()
        let timers = Timers()
        let connect = HappyEyeballs(addresses: [fullAddress, fullAddress], poller: poller, timers: timers, tokenBase: 0)
        #expect(connect.start().isInProgress)
        #expect(!timers.isEmpty)                  // the attempt's deadline and the next start
        connect.cancel()
        #expect(connect.attempts.allSatisfy { $0.isFinished })
        #expect(timers.isEmpty)
        #expect(openDescriptorCount() == before)
        let fd = connect.attempts[0].fd
        #expect(fd == -1)
    }

    @Test("RFC 8305 section 3: an AAAA answer within the resolution delay goes first", arguments: backends)
    func aaaaWithinDelay(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let v6 = try SocketAddress(ip: "::1", port: try closedPort().port!)
        let resolver = ScriptedResolver(v6: [v6], v6Delay: .milliseconds(20), v4: [listener.address], v4Delay: .zero)
        let timers = Timers()
        // A 2 s resolution delay: the AAAA answer after 20 ms stays within it on a loaded machine (a
        // lookup thread started late); a connect that used A at once still tries IPv4 first.
        var options = HappyEyeballs.Options()
        options.resolutionDelay = .seconds(2)
        let connect = HappyEyeballs(resolution: Resolution(host: "example.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0, options: options)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        #expect(connect.attempts.map(\.address.family) == [.ipv6, .ipv4])
        close(socket.fd)
    }

    @Test("RFC 8305 section 3: without AAAA, A is used once the 50 ms resolution delay ends", arguments: backends)
    func aAfterDelay(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        let v6 = try SocketAddress(ip: "::1", port: try closedPort().port!)
        let release = LookupRelease()
        defer { release.release() }   // the AAAA lookup is not needed once connected: free its pool thread
        let resolver = ScriptedResolver(v6: [v6], v6Delay: .milliseconds(1500), v4: [listener.address], v4Delay: .zero,
                                        release: release)
        let timers = Timers()
        let start = ContinuousClock.now
        let connect = HappyEyeballs(resolution: Resolution(host: "example.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        let took = ContinuousClock.now - start
        guard case .connected(let socket) = progress else { Issue.record("\(progress)"); return }
        #expect(connect.attempts.map(\.address) == [listener.address])
        #expect(took >= .milliseconds(50) && took < .milliseconds(1000))
        close(socket.fd)
    }

    @Test("a name that does not resolve is reported as such; getaddrinfo never blocks the loop", arguments: backends)
    func unresolved(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        // Lookups of 1 s: a start() that waited for them takes a second; 900 ms is the slack for a loaded machine.
        let resolver = ScriptedResolver(v6: [], v6Delay: .seconds(1), v4: [], v4Delay: .seconds(1))
        let timers = Timers()
        let connect = HappyEyeballs(resolution: Resolution(host: "nowhere.test", port: 1, waker: poller.waker, resolver: resolver),
                                    poller: poller, timers: timers, tokenBase: 0)
        // The loop keeps turning while the lookups run: a zero-timeout wait returns at once.
        let start = ContinuousClock.now
        _ = connect.start()
        try poller.wait(into: EventBuffer(capacity: 4), timeout: .zero)
        #expect(ContinuousClock.now - start < .milliseconds(900))
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .unresolved(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.host == "nowhere.test")
    }

    @Test("the system resolver: localhost answered on this machine (RFC 6761), off the loop thread", arguments: backends)
    func localhost(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:0"))
        // SystemResolver answers "localhost" itself (RFC 6761), never through getaddrinfo: nothing leaves
        // the machine (AddressTests pins it).
        let socket = try Connector.connect(toHost: "localhost:\(listener.address.port!)", on: poller)
        #expect(socket.peer == listener.address)
        close(socket.fd)
        // Refused by the parser before any lookup (no name server is asked in the tests).
        do { _ = try Connector.connect(toHost: ":80", on: poller); Issue.record("an empty host was accepted") } catch {
            if case .invalid = error {} else { Issue.record("\(error)") }
        }
    }
}
