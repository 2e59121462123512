import Glibc
import Readiness
import Testing

/// Every rule of the connect state machine as a transition, without sockets (Docs/Connect.md).
@Suite("Connect state machine")
struct ConnectStateMachineTests {
    let tcp = try! SocketAddress("127.0.0.1:9")
    let unix = try! SocketAddress(unixPath: "/tmp/readiness-test.sock")
    let local = try! SocketAddress("127.0.0.1:50000")
    let peer = try! SocketAddress("127.0.0.1:9")

    @Test("rule 2: connect returning 0 is still confirmed by SO_ERROR")
    func immediateSuccess() {
        var m = ConnectStateMachine(address: unix)
        #expect(m.handle(.connectReturned(errno: 0)) == .readSocketError)
        #expect(m.handle(.socketError(.value(0))) == .readAddresses)
        #expect(m.handle(.addresses(peerErrno: 0, local: nil, peer: unix)) == .succeed(deregister: false))
        #expect(m.state == .connected)
    }

    @Test("rule 2: connect returning 0 with a pending error fails")
    func immediateButFailed() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: 0))
        #expect(m.handle(.socketError(.value(ECONNRESET))) == .fail(ConnectError(errno: ECONNRESET, address: tcp), deregister: false))
    }

    @Test("rules 3 and 6: writability is only a reason to look; SO_ERROR decides", arguments: [Ready.writable, [.readable, .writable], [.readable, .writable, .error, .hangup], .readable])
    func wakeupIsNotSuccess(ready: Ready) {
        var m = ConnectStateMachine(address: tcp)
        #expect(m.handle(.connectReturned(errno: EINPROGRESS)) == .registerForWritable)
        m.didRegister()
        #expect(m.handle(.woke(ready)) == .readSocketError)
        #expect(m.state == .readingSocketError)
        #expect(m.handle(.socketError(.value(ECONNREFUSED))) == .fail(ConnectError(.refused, errno: ECONNREFUSED, address: tcp), deregister: true))
    }

    @Test("rule 3: a success whose peer already wrote (readable and writable) is a success")
    func peerWroteFirst() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        #expect(m.handle(.woke([.readable, .writable])) == .readSocketError)
        #expect(m.handle(.socketError(.value(0))) == .readAddresses)
        #expect(m.handle(.addresses(peerErrno: 0, local: local, peer: peer)) == .succeed(deregister: true))
    }

    @Test("rule 4: EINTR from connect means in progress, exactly like EINPROGRESS")
    func eintrMeansInProgress() {
        var a = ConnectStateMachine(address: tcp)
        var b = ConnectStateMachine(address: tcp)
        #expect(a.handle(.connectReturned(errno: EINTR)) == b.handle(.connectReturned(errno: EINPROGRESS)))
        #expect(a.state == .waiting)
    }

    @Test("rule 5: getsockopt returning -1 carries the error in errno (Solaris)")
    func solarisSocketError() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        _ = m.handle(.woke(.writable))
        #expect(m.handle(.socketError(.callFailed(ECONNREFUSED))) == .fail(ConnectError(.refused, errno: ECONNREFUSED, address: tcp), deregister: true))
    }

    @Test("rule 6: ENOTCONN from getpeername is a spurious wake-up: keep waiting")
    func spuriousWakeup() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        _ = m.handle(.woke(.writable))
        _ = m.handle(.socketError(.value(0)))
        #expect(m.handle(.addresses(peerErrno: ENOTCONN, local: nil, peer: nil)) == .waitForWakeup)
        #expect(m.state == .waiting)
        #expect(m.handle(.woke(.writable)) == .readSocketError)
        _ = m.handle(.socketError(.value(0)))
        #expect(m.handle(.addresses(peerErrno: 0, local: local, peer: peer)) == .succeed(deregister: true))
    }

    @Test("rule 6: a spurious result before any registration registers")
    func spuriousBeforeRegistration() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: 0))
        _ = m.handle(.socketError(.value(0)))
        #expect(m.handle(.addresses(peerErrno: ENOTCONN, local: nil, peer: nil)) == .registerForWritable)
    }

    @Test("rule 7: a socket connected to itself fails as selfConnect")
    func selfConnect() {
        var m = ConnectStateMachine(address: local)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        _ = m.handle(.woke(.writable))
        _ = m.handle(.socketError(.value(0)))
        #expect(m.handle(.addresses(peerErrno: 0, local: local, peer: local)) == .fail(ConnectError(.selfConnect, address: local), deregister: true))
    }

    @Test("rule 8: EAGAIN is never in progress: backlog full on Unix, no free port on TCP")
    func eagain() {
        var u = ConnectStateMachine(address: unix)
        #expect(u.handle(.connectReturned(errno: EAGAIN)) == .fail(ConnectError(.backlogFull, errno: EAGAIN, address: unix), deregister: false))
        var t = ConnectStateMachine(address: tcp)
        #expect(t.handle(.connectReturned(errno: EAGAIN)) == .fail(ConnectError(.addressUnavailable, errno: EAGAIN, address: tcp), deregister: false))
    }

    @Test("rule 9: any other connect error fails at once", arguments: [
        (ECONNREFUSED, ConnectError.Cause.refused), (ENETUNREACH, .unreachable), (EHOSTUNREACH, .unreachable),
        (EACCES, .permissionDenied), (EPERM, .permissionDenied), (EADDRNOTAVAIL, .addressUnavailable),
        (ECONNRESET, .reset), (ETIMEDOUT, .timedOut), (EALREADY, .other),
    ])
    func immediateFailure(code: CInt, cause: ConnectError.Cause) {
        var m = ConnectStateMachine(address: tcp)
        #expect(m.handle(.connectReturned(errno: code)) == .fail(ConnectError(cause, errno: code, address: tcp), deregister: false))
        #expect(m.state.isFinal)
    }

    @Test("rule 10: the deadline and cancel end the attempt, deregistering first when registered")
    func deadlineAndCancel() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        m.didRegister()
        #expect(m.handle(.deadlinePassed) == .fail(ConnectError(.timedOut, address: tcp), deregister: true))
        #expect(m.handle(.woke(.writable)) == .none)
        #expect(m.handle(.cancel) == .none)

        var c = ConnectStateMachine(address: tcp)
        _ = c.handle(.connectReturned(errno: EINPROGRESS))
        #expect(c.handle(.cancel) == .cancel(deregister: false))
        #expect(c.state == .cancelled)
    }

    @Test("a failed registration fails the attempt without deregistering")
    func registrationFailure() {
        var m = ConnectStateMachine(address: tcp)
        _ = m.handle(.connectReturned(errno: EINPROGRESS))
        #expect(m.handle(.registrationFailed(.descriptorTooLarge(2000, limit: 1024)))
            == .fail(ConnectError(.poller, address: tcp, pollerError: .descriptorTooLarge(2000, limit: 1024)), deregister: false))
    }

    @Test("a Unix-domain ECONNREFUSED names the missing listener")
    func unixRefused() {
        #expect(ConnectError.cause(of: ECONNREFUSED, family: .unix) == .noSuchPath)
        #expect(ConnectError.cause(of: ENOENT, family: .unix) == .noSuchPath)
    }
}
