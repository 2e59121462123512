import Glibc
@_spi(Backend) @testable import Readiness
import Testing

/// Issue 21's surface: one errno classification behind every error type, `Deadline` as a type, and
/// the wait helpers every backend's seam shares.
@Suite("Surface")
struct SurfaceTests {
    @Test("SocketError, ConnectError and PollerError classify errno as their tables did before they shared one")
    func oneErrnoTable() {
        let socketKinds: [(CInt, SocketError.Kind)] = [
            (ECONNRESET, .reset), (EPIPE, .reset), (ECONNABORTED, .aborted), (ETIMEDOUT, .aborted),
            (EMFILE, .resourceExhausted), (ENFILE, .resourceExhausted), (ENOBUFS, .resourceExhausted),
            (ENOMEM, .resourceExhausted), (EADDRINUSE, .addressInUse), (EADDRNOTAVAIL, .addressUnavailable),
            (EACCES, .permissionDenied), (EPERM, .permissionDenied), (ENOTCONN, .notConnected),
            (EBADF, .closed), (ENOENT, .noSuchPath), (ENOTDIR, .noSuchPath), (EAGAIN, .other),
            (EINVAL, .other),
            // Stop 33: no route is a kind of its own (ConnectError had the cause already).
            (EHOSTUNREACH, .unreachable), (ENETUNREACH, .unreachable), (ENETDOWN, .unreachable), (EHOSTDOWN, .unreachable),
            // Issue 23 (datagrams): a connected datagram socket's refusal, and a datagram too large.
            (ECONNREFUSED, .refused), (EMSGSIZE, .messageTooLarge),
        ]
        for (code, kind) in socketKinds { #expect(SocketError.kind(of: code) == kind, "\(ErrnoTable.name(code))") }
        let tcp = SocketAddress.Family.ipv4, unix = SocketAddress.Family.unix
        let causes: [(CInt, SocketAddress.Family?, ConnectError.Cause)] = [
            (ECONNREFUSED, tcp, .refused), (ECONNREFUSED, unix, .noSuchPath), (ENOENT, unix, .noSuchPath),
            (ENOTDIR, unix, .noSuchPath), (ETIMEDOUT, tcp, .timedOut), (ENETUNREACH, tcp, .unreachable),
            (EHOSTUNREACH, tcp, .unreachable), (ENETDOWN, tcp, .unreachable), (EHOSTDOWN, tcp, .unreachable),
            (ECONNRESET, tcp, .reset), (ECONNABORTED, tcp, .reset), (EPIPE, tcp, .reset),
            (EAGAIN, unix, .backlogFull), (EAGAIN, tcp, .addressUnavailable), (EAGAIN, nil, .addressUnavailable),
            (EADDRNOTAVAIL, tcp, .addressUnavailable), (EACCES, tcp, .permissionDenied), (EPERM, tcp, .permissionDenied),
            (EMFILE, tcp, .resourceExhausted), (ENOMEM, tcp, .resourceExhausted), (EINVAL, tcp, .invalidAddress), (EAFNOSUPPORT, unix, .invalidAddress),
            (EADDRINUSE, tcp, .addressInUse), (EBADF, tcp, .other), (EMSGSIZE, tcp, .other),
        ]
        for (code, family, cause) in causes {
            #expect(ConnectError.cause(of: code, family: family) == cause, "\(ErrnoTable.name(code)) \(String(describing: family))")
        }
        #expect(PollerError.failed("x", errno: ENOBUFS) == .resourceExhausted(operation: "x", errno: ENOBUFS))
        #expect(PollerError.failed("x", errno: EINVAL) == .system(operation: "x", errno: EINVAL))
        // The errors accept(2) passes on from a queued connection that is gone: retried, not thrown.
        for code in [ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH] {
            #expect([.aborted, .protocolFailure, .unreachable].contains(ErrnoTable.category(of: code)), "\(ErrnoTable.name(code))")
        }
    }

    @Test("Deadline saturates, orders, subtracts and turns into a timeout that is never negative")
    func deadline() {
        let start = Deadline(nanoseconds: 1_000)
        #expect(Deadline.after(.seconds(1), now: start) == Deadline(nanoseconds: 1_000_001_000))
        #expect(Deadline.after(.seconds(Int64.max) * 2, now: start) == .distantFuture)
        #expect(Deadline.after(.seconds(-5), now: start) == start)
        #expect(start.timeout(now: Deadline(nanoseconds: 500)) == .nanoseconds(500))
        #expect(start.timeout(now: Deadline(nanoseconds: 2_000)) == .zero)
        #expect(start.hasPassed(now: start) && !start.hasPassed(now: Deadline(nanoseconds: 999)))
        #expect(Deadline(nanoseconds: 3_000) - start == .nanoseconds(2_000))
        #expect(Deadline.distantFuture - Deadline(nanoseconds: .min) == .nanoseconds(Int64.max))
        #expect(Deadline.now < .distantFuture)
    }

    @Test("the shared wait helpers: poll bits, report (normalised, one-shot disarmed), stale registrations")
    func waitHelpers() {
        #expect(Ready(pollBits: UInt32(POLLIN) | UInt32(POLLOUT)) == [.readable, .writable])
        #expect(Ready(pollBits: Ready.pollRDHUP | UInt32(POLLHUP) | UInt32(POLLERR)) == [.readClosed, .hangup, .error])
        var table = RegistrationTable()
        table.insert(5, Registration(token: 1, interest: .readable, trigger: .oneShot))
        table.insert(6, Registration(token: 2, interest: .writable, trigger: .level))
        let events = EventBuffer(capacity: 4)
        #expect(table.report(5, [.readable, .writable], into: events)?.trigger == .oneShot)
        #expect(table[5]?.armed == false)
        #expect(table.report(5, .readable, into: events) == nil, "a disarmed one-shot registration reports nothing")
        #expect(table.report(7, .readable, into: events) == nil, "nothing registered")
        table.markStale(6)
        #expect(table.report(6, .writable, into: events) == nil, "a stale registration reports nothing")
        #expect(Array(events) == [Event(token: 1, ready: .readable)])   // normalised to the interest
    }
}
