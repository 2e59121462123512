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

    init(kind: CInt, method: String?, total: Int, inFlight: Int) throws {
        listener = try Listener()
        var message = [CChar](repeating: 0, count: 256)
        let made: OpaquePointer?
        if let method {
            made = rb_connect_new(kind, method, listener.fd, CInt(listener.port), CInt(inFlight), &message, 256)
        } else {
            made = rb_connect_new(kind, nil, listener.fd, CInt(listener.port), CInt(inFlight), &message, 256)
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
        var failures: Int64 = 0, waits: Int64 = 0
        let ns = rb_connect_round(connect, Int32(total), inFlight, &failures, &waits, rb_now_ns() + 120_000_000_000)
        guard ns >= 0 else { throw BenchError("C connect round failed or took over 120 s") }
        return Round(nanoseconds: ns, waits: waits, units: Int64(total), failures: failures)
    }

    func close() {
        rb_connect_free(connect)
        listener.close()
    }
}

/// Scenario 3 for a Readiness backend: `ConnectAttempt`s (SO_ERROR, then getpeername/getsockname),
/// many in flight on one poller with distinct tokens, the listener on the same poller.
final class ReadinessConnect<Seam: PollerSeam>: ConnectInstance {
    let listener: Listener
    let poller: SeamPoller<Seam>
    let buffer = EventBuffer(capacity: 256)
    let address: SocketAddress
    var total: Int
    var warmupTotal: Int
    let inFlight: Int
    var attempts: [ConnectAttempt?]
    static var listenerToken: Token { Token(1 << 40) }
    var started = 0, done = 0, succeeded = 0, accepted = 0, failures = 0

    init(poller: SeamPoller<Seam>, total: Int, inFlight: Int) throws {
        self.poller = poller
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
        while done < total || accepted < succeeded {
            if rb_now_ns() > deadline { throw BenchError("connect round took over 120 s") }
            passes += 1
            let n = try poller.wait(into: buffer, timeout: .seconds(1))
            for i in 0..<n {
                let event = buffer[i]
                if event.token == Self.listenerToken {
                    accepted += Int(rb_accept_drain(listener.fd))
                    continue
                }
                let slot = Int(event.token.rawValue)
                guard let attempt = attempts[slot] else { continue }
                if finished(attempt.handle(event.ready)) { start(slot) }
            }
        }
        let elapsed = rb_now_ns() - begin
        return Round(nanoseconds: elapsed, waits: passes, units: Int64(total), failures: Int64(failures))
    }

    func close() {
        for attempt in attempts { attempt?.cancel() }
        attempts = []
        try? poller.close()
        listener.close()
    }
}

