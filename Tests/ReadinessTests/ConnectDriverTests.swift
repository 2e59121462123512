import Glibc
@_spi(Backend) import Readiness
import Synchronization
import Testing

/// The driver with its system calls and poller replaced: any result and errno, deterministically.
final class ScriptedSyscalls: ConnectSyscalls, @unchecked Sendable {
    var log: [String] = []
    var connectResult: CInt = EINPROGRESS
    var socketErrors: [ConnectStateMachine.SocketErrorResult] = [.value(0)]
    var peerErrnos: [CInt] = [0]
    var local = try! SocketAddress("127.0.0.1:40000")
    var peer = try! SocketAddress("127.0.0.1:40001")
    let fd: CInt = 4242

    func socket(domain: CInt) -> (fd: CInt, errno: CInt) { log.append("socket"); return (fd, 0) }
    func bind(_ fd: CInt, to address: SocketAddress) -> CInt { log.append("bind"); return 0 }
    func connect(_ fd: CInt, to address: SocketAddress) -> CInt { log.append("connect"); return connectResult }
    func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult {
        log.append("getsockopt")
        return socketErrors.count > 1 ? socketErrors.removeFirst() : socketErrors[0]
    }
    func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) {
        log.append("getpeername")
        let e = peerErrnos.count > 1 ? peerErrnos.removeFirst() : peerErrnos[0]
        return (e, e == 0 ? peer : nil)
    }
    func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { log.append("getsockname"); return (0, local) }
    func close(_ fd: CInt) { log.append("close") }
}

/// A poller that records calls and can refuse registrations.
final class RecordingPoller: Poller {
    var log: [String] = []
    var registerError: PollerError?
    let waker: Waker
    init() throws { waker = try Waker() }
    deinit { waker.close() }
    var capabilities: Capabilities {
        Capabilities(name: "recording", edgeTriggered: false, oneShot: .emulated, timeoutResolution: .milliseconds(1),
                     maxDescriptor: .max, reportsReadClosed: true, reportsHangupAndError: true)
    }
    func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        if let registerError { throw registerError }
        log.append("register \(interest)")
    }
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) { log.append("reregister") }
    func deregister(_ fd: CInt) throws(PollerError) { log.append("deregister") }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int { events.removeAll(); return 0 }
    func close() throws(PollerError) {}
}

@Suite("Connect driver (injected)")
struct ConnectDriverTests {
    /// A destination port inside the ephemeral range, where a socket can meet itself.
    let target = try! SocketAddress("127.0.0.1:40001")

    func attempt(_ sys: ScriptedSyscalls, _ poller: RecordingPoller, timeout: Duration? = .seconds(5)) -> ConnectAttempt {
        ConnectAttempt(to: target, poller: poller, token: 1, timeout: timeout, syscalls: sys, trace: true)
    }

    @Test("EINTR: connect is called once, never again; the wake-up is checked with SO_ERROR")
    func eintr() throws {
        let sys = ScriptedSyscalls()
        sys.connectResult = EINTR
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        #expect(a.start() == .inProgress)
        guard case .connected(let socket) = a.handle(.writable) else { Issue.record("expected connected"); return }
        #expect(socket.fd == sys.fd)
        #expect(sys.log == ["socket", "connect", "getsockopt", "getpeername", "getsockname"])
        #expect(sys.log.filter { $0 == "connect" }.count == 1)
        #expect(poller.log == ["register writable", "deregister"])
    }

    @Test("Solaris: getsockopt returns -1 with the error in errno")
    func solaris() throws {
        let sys = ScriptedSyscalls()
        sys.socketErrors = [.callFailed(ECONNREFUSED)]
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        _ = a.start()
        #expect(a.handle([.readable, .writable, .error]) == .failed(ConnectError(.refused, errno: ECONNREFUSED, address: target)))
        #expect(sys.log == ["socket", "connect", "getsockopt", "close"])
        #expect(poller.log == ["register writable", "deregister"])
    }

    @Test("Linux and BSD: getsockopt returns 0 with the error in the value")
    func linuxSocketError() throws {
        let sys = ScriptedSyscalls()
        sys.socketErrors = [.value(EHOSTUNREACH)]
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        _ = a.start()
        #expect(a.handle(.writable) == .failed(ConnectError(.unreachable, errno: EHOSTUNREACH, address: target)))
    }

    @Test("spurious wake-ups (ENOTCONN) keep waiting, then succeed")
    func spurious() throws {
        let sys = ScriptedSyscalls()
        sys.peerErrnos = [ENOTCONN, ENOTCONN, 0]
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        _ = a.start()
        #expect(a.handle(.writable) == .inProgress)
        #expect(a.handle(.readable) == .inProgress)
        guard case .connected = a.handle(.writable) else { Issue.record("expected connected"); return }
        #expect(sys.log.filter { $0 == "getsockopt" }.count == 3)
        #expect(poller.log == ["register writable", "deregister"])
    }

    @Test("a poller that refuses the registration fails the attempt and closes the socket once")
    func pollerError() throws {
        let sys = ScriptedSyscalls()
        let poller = try RecordingPoller()
        poller.registerError = .descriptorTooLarge(4242, limit: 1024)
        let a = attempt(sys, poller)
        #expect(a.start() == .failed(ConnectError(.poller, address: target, pollerError: .descriptorTooLarge(4242, limit: 1024))))
        #expect(sys.log == ["socket", "connect", "close"])
        #expect(poller.log.isEmpty)
    }

    @Test("the deadline deregisters, then closes, exactly once")
    func deadline() throws {
        let sys = ScriptedSyscalls()
        let poller = try RecordingPoller()
        let a = attempt(sys, poller, timeout: .zero)
        _ = a.start()
        #expect(a.checkDeadline() == .failed(ConnectError(.timedOut, address: target)))
        #expect(a.checkDeadline() == .failed(ConnectError(.timedOut, address: target)))
        a.cancel()
        #expect(sys.log == ["socket", "connect", "close"])
        #expect(poller.log == ["register writable", "deregister"])
    }

    @Test("cancel, and dropping an attempt in flight, release the socket")
    func cancel() throws {
        let sys = ScriptedSyscalls()
        let poller = try RecordingPoller()
        do {
            let a = attempt(sys, poller)
            _ = a.start()
        }
        #expect(sys.log.last == "close")
        #expect(poller.log == ["register writable", "deregister"])
    }

    @Test("self-connect is detected from the two addresses")
    func selfConnect() throws {
        let sys = ScriptedSyscalls()
        sys.peer = sys.local
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        _ = a.start()
        #expect(a.handle(.writable) == .failed(ConnectError(.selfConnect, address: target)))
        #expect(sys.log.last == "close")
    }

    @Test("rule 7 costs no getsockname where a socket cannot meet itself (port outside the ephemeral range)")
    func noSelfConnectCheckOutsideEphemeralRange() throws {
        let sys = ScriptedSyscalls()
        let poller = try RecordingPoller()
        let a = ConnectAttempt(to: try SocketAddress("127.0.0.1:443"), poller: poller, token: 1, timeout: nil, syscalls: sys)
        _ = a.start()
        guard case .connected = a.handle(.writable) else { Issue.record("expected connected"); return }
        #expect(!sys.log.contains("getsockname"))
    }

    @Test("the trace records every step")
    func trace() throws {
        let sys = ScriptedSyscalls()
        let poller = try RecordingPoller()
        let a = attempt(sys, poller)
        _ = a.start()
        _ = a.handle(.writable)
        #expect(a.trace.map(\.action) == [.registerForWritable, .readSocketError, .readAddresses, .succeed(deregister: true)])
    }
}
