import Glibc
import Readiness
import Synchronization
import Testing

/// System calls whose socket() or bind() fails, for the "never finishes" class of connect defects.
struct FailingSetupSyscalls: ConnectSyscalls {
    var socketErrno: CInt = 0
    var bindErrno: CInt = 0
    let base = SystemConnectSyscalls()
    func socket(domain: CInt) -> (fd: CInt, errno: CInt) {
        socketErrno != 0 ? (-1, socketErrno) : base.socket(domain: domain)
    }
    func bind(_ fd: CInt, to address: SocketAddress) -> CInt { bindErrno != 0 ? bindErrno : base.bind(fd, to: address) }
    func connect(_ fd: CInt, to address: SocketAddress) -> CInt { base.connect(fd, to: address) }
    func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult { base.socketError(fd) }
    func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.peerName(fd) }
    func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.localName(fd) }
    func close(_ fd: CInt) { base.close(fd) }
}

/// Issue 9's items that a conformance scenario cannot express (the scenarios are in
/// Sources/ReadinessConformance/Scenarios.swift, group `hardening`).
@Suite("Hardening")
struct HardeningTests {
    /// Item 3: an attempt whose socket() or bind() fails has ended: isFinished, the errno kept, and a
    /// Connector with no timeout returns at once instead of waiting for ever.
    @Test("a failed socket() or bind() ends the connect at once", arguments: backends)
    func setupFailureEnds(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let target = try SocketAddress("127.0.0.1:9")
        for (syscalls, code) in [(FailingSetupSyscalls(socketErrno: EMFILE), EMFILE),
                                 (FailingSetupSyscalls(socketErrno: EAFNOSUPPORT), EAFNOSUPPORT),
                                 (FailingSetupSyscalls(bindErrno: EADDRINUSE), EADDRINUSE)] {
            let attempt = ConnectAttempt(to: target, poller: poller, token: 1, timeout: nil,
                                         localAddress: try SocketAddress("127.0.0.1:0"), syscalls: syscalls)
            guard case .failed(let error) = attempt.start() else { throw TestFailure("expected a failure") }
            #expect(attempt.isFinished)
            #expect(error.errno == code)
            let start = ContinuousClock.now
            #expect(throws: ConnectError.self) {
                try Connector.connect(to: target, on: poller, timeout: nil, localAddress: try SocketAddress("127.0.0.1:0"),
                                      syscalls: syscalls)
            }
            #expect(ContinuousClock.now - start < .seconds(5))
        }
        let exhausted = ConnectAttempt(to: target, poller: poller, token: 1, timeout: nil,
                                       syscalls: FailingSetupSyscalls(socketErrno: EMFILE))
        guard case .failed(let error) = exhausted.start() else { throw TestFailure("expected a failure") }
        #expect(error.cause == .resourceExhausted)
    }

    /// Item 4: tokens above Int.max on the same poller never trap the Connector, which ignores events
    /// that are not its own.
    @Test("the Connector ignores other registrations' tokens, however large", arguments: backends)
    func largeForeignTokens(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var pair: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &pair) == 0 else { throw TestFailure("socketpair") }
        defer { close(pair[0]); close(pair[1]) }
        try poller.register(pair[0], token: Token(UInt64.max - 1), interest: .writable)
        let (listener, address) = try tcpListener()
        defer { close(listener) }
        let socket = try Connector.connect(to: [address], on: poller, timeout: .seconds(9_223_372_030))
        close(socket.fd)
        try poller.deregister(pair[0])
    }

    /// Item 6: wake() races close() from many threads; no wake writes after the close, none traps.
    @Test("wake() from many threads while the poller closes", arguments: backends)
    func wakeRacingClose(backend: Backend) throws {
        for _ in 0..<20 {
            let poller = try backend.makePoller()
            let waker = poller.waker
            let outcomes = Mutex<(woke: Int, closed: Int, other: Int)>((0, 0, 0))
            let threads = (0..<4).map { _ in
                Thread {
                    for _ in 0..<200 {
                        do throws(PollerError) {
                            try waker.wake()
                            outcomes.withLock { $0.woke += 1 }
                        } catch .closed {
                            outcomes.withLock { $0.closed += 1 }
                        } catch {
                            outcomes.withLock { $0.other += 1 }
                        }
                    }
                }
            }
            try poller.close()
            for thread in threads { thread.join() }
            let (woke, closed, other) = outcomes.withLock { $0 }
            #expect(other == 0)
            #expect(woke + closed == 800)
            #expect(throws: PollerError.closed) { try waker.wake() }
        }
    }
}

/// A joinable thread for tests.
final class Thread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
    }
    func join() { pthread_join(thread, nil) }
}
