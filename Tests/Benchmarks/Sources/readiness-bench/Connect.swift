import CReadinessBench
import Glibc
import Readiness

/// The loopback listener every connect contender but SwiftNIO's own server connects to. It is
/// registered in the contender's poller and accepted from the same thread.
final class Listener {
    let fd: CInt
    let port: Int

    init() throws {
        var port: CInt = 0
        fd = rb_listener(4096, &port)
        guard fd >= 0 else { throw BenchError("listener: errno \(errno)") }
        self.port = Int(port)
    }

    func close() { Glibc.close(fd) }
}

/// Scenario 3 for a C contender.
final class CConnect: ConnectInstance {
    let listener: Listener
    let connect: OpaquePointer
    var total: Int
    var warmupTotal: Int
    let inFlight: Int32

    init(kind: CInt, method: String?, flags: CInt, total: Int, inFlight: Int) throws {
        listener = try Listener()
        var message = [CChar](repeating: 0, count: 256)
        let made: OpaquePointer?
        if let method {
            made = rb_connect_new(kind, method, flags, listener.fd, CInt(listener.port), CInt(inFlight), &message, 256)
        } else {
            made = rb_connect_new(kind, nil, flags, listener.fd, CInt(listener.port), CInt(inFlight), &message, 256)
        }
        guard let made else {
            listener.close()
            throw BenchError(string(fromCBuffer: message))
        }
        connect = made
        self.total = total
        warmupTotal = total
        self.inFlight = Int32(inFlight)
    }

    func round() throws -> Round {
        var failures: Int64 = 0, waits: Int64 = 0, unaccepted: Int64 = 0
        let ns = rb_connect_round(connect, Int32(total), inFlight, &failures, &waits, &unaccepted, rb_now_ns() + 120_000_000_000)
        guard ns >= 0 else { throw BenchError("C connect round failed or took over 120 s") }
        return Round(nanoseconds: ns, waits: waits, units: Int64(total), failures: failures, unaccepted: unaccepted)
    }

    func close() {
        rb_connect_free(connect)
        listener.close()
    }
}

/// Scenario 3 for a Readiness backend: `ConnectAttempt`s (SO_ERROR, then getpeername/getsockname),
/// many in flight on one poller with distinct tokens, the listener on the same poller.
///
/// With `stateMachine` false (a diagnostic contender) the poller is driven by hand exactly as the raw
/// C loop does (socket, connect, register writable, SO_ERROR, deregister, close), which separates the
/// poller's cost from the connect state machine's extra system calls.
final class ReadinessConnect: ConnectInstance {
    let listener: Listener
    let poller: any Poller
    let buffer = EventBuffer(capacity: 256)
    let address: SocketAddress
    var total: Int
    var warmupTotal: Int
    let inFlight: Int
    var attempts: [ConnectAttempt?]
    let stateMachine: Bool
    var sockets: [CInt]
    static var listenerToken: Token { Token(1 << 40) }
    var started = 0, done = 0, succeeded = 0, accepted = 0, failures = 0

    init(poller: any Poller, total: Int, inFlight: Int, stateMachine: Bool = true) throws {
        self.poller = poller
        self.stateMachine = stateMachine
        sockets = Array(repeating: -1, count: inFlight)
        do {
            listener = try Listener()
            address = try SocketAddress("127.0.0.1:\(listener.port)")
            try poller.register(listener.fd, token: Self.listenerToken, interest: .readable)
        } catch {
            try? poller.close()
            throw BenchError("set-up: \(error)")
        }
        self.total = total
        warmupTotal = total
        self.inFlight = inFlight
        attempts = Array(repeating: nil, count: inFlight)
    }

    private func finished(_ progress: ConnectProgress) -> Bool {
        switch progress {
        case .inProgress:
            return false
        case .connected(let socket):
            rb_abort_close(socket.fd)
            succeeded += 1
        case .failed:
            failures += 1
        }
        done += 1
        return true
    }

    /// Starts connects in `slot` until one is in progress (or all were started).
    private func start(_ slot: Int) {
        if !stateMachine {
            startByHand(slot)
            return
        }
        while started < total {
            started += 1
            let attempt = ConnectAttempt(to: address, poller: poller, token: Token(UInt64(slot)), timeout: .seconds(10))
            if !finished(attempt.start()) {
                attempts[slot] = attempt
                return
            }
        }
        attempts[slot] = nil
    }

    private func startByHand(_ slot: Int) {
        while started < total {
            started += 1
            var fd: CInt = -1
            let result = rb_tcp_connect(CInt(listener.port), &fd)
            if result == EINPROGRESS || result == EINTR {
                do {
                    try poller.register(fd, token: Token(UInt64(slot)), interest: .writable)
                    sockets[slot] = fd
                    return
                } catch {
                    failures += 1
                }
            } else if result == 0, rb_socket_error(fd) == 0 {
                succeeded += 1
            } else {
                failures += 1
            }
            if fd >= 0 { rb_abort_close(fd) }
            done += 1
        }
        sockets[slot] = -1
    }

    private func finishByHand(_ slot: Int) {
        let fd = sockets[slot]
        guard fd >= 0 else { return }
        if rb_socket_error(fd) == 0 { succeeded += 1 } else { failures += 1 }
        try? poller.deregister(fd)
        rb_abort_close(fd)
        sockets[slot] = -1
        done += 1
        startByHand(slot)
    }

    func round() throws -> Round {
        started = 0
        done = 0
        succeeded = 0
        accepted = 0
        failures = 0
        let deadline = rb_now_ns() + 120_000_000_000
        var passes: Int64 = 0
        let begin = rb_now_ns()
        for slot in 0..<inFlight { start(slot) }
        var last = rb_now_ns()
        while done < total || accepted < succeeded {
            if rb_now_ns() > deadline { throw BenchError("connect round took over 120 s") }
            passes += 1
            let n = try poller.wait(into: buffer, timeout: done < total ? .seconds(1) : .milliseconds(Int64(RB_ACCEPT_GRACE_MS)))
            if n == 0, done == total { break }  // no accept came for the grace period
            for i in 0..<n {
                let event = buffer[i]
                if event.token == Self.listenerToken {
                    accepted += Int(rb_accept_drain(listener.fd))
                    continue
                }
                let slot = Int(event.token.rawValue)
                if !stateMachine {
                    finishByHand(slot)
                    continue
                }
                guard let attempt = attempts[slot] else { continue }
                if finished(attempt.handle(event.ready)) { start(slot) }
            }
            if n > 0 { last = rb_now_ns() }
        }
        return Round(nanoseconds: last - begin, waits: passes, units: Int64(total), failures: Int64(failures),
                     unaccepted: Int64(max(0, succeeded - accepted)))
    }

    func close() {
        for attempt in attempts { attempt?.cancel() }
        attempts = []
        for fd in sockets where fd >= 0 {
            try? poller.deregister(fd)
            Glibc.close(fd)
        }
        sockets = []
        try? poller.close()
        listener.close()
    }
}

