import CReadinessBench
import Glibc
import Readiness

/// n non-blocking socketpairs: read ends (watched) and write ends. Made per contender and closed
/// after it, so that at most one contender's 8000 pairs (16,000 descriptors) are open at a time.
final class Pairs {
    var read: [CInt] = []
    var write: [CInt] = []

    init(_ n: Int) throws {
        read.reserveCapacity(n)
        write.reserveCapacity(n)
        for _ in 0..<n {
            var fds: [CInt] = [-1, -1]
            guard rb_socketpair(&fds) == 0 else {
                let e = errno
                close()
                throw BenchError("socketpair: errno \(e)")
            }
            read.append(fds[0])
            write.append(fds[1])
        }
    }

    func close() {
        for fd in read + write { Glibc.close(fd) }
        read = []
        write = []
    }
}

/// How the ring handles an event: scenario 1 (plain) or scenario 4 (interest churn).
enum RingMode: CInt, Sendable {
    case plain = 0  // RB_RING_PLAIN
    case rearm = 1  // RB_RING_REARM
    case reregister = 2  // RB_RING_REREGISTER

    var title: String {
        switch self {
        case .plain: "ring"
        case .rearm: "interest churn: one-shot, re-armed after every event"
        case .reregister: "interest churn: deregistered and registered again after every event"
        }
    }
}

/// A C contender on the ring.
final class CRing: Instance {
    let pairs: Pairs
    let ring: OpaquePointer
    let active: Int32, writes: Int32

    init(kind: CInt, method: String?, flags: CInt, mode: RingMode, n: Int, active: Int, writes: Int) throws {
        let pairs = try Pairs(n)
        self.pairs = pairs
        var message = [CChar](repeating: 0, count: 256)
        let made: OpaquePointer? = pairs.read.withUnsafeBufferPointer { r in
            pairs.write.withUnsafeBufferPointer { w in
                if let method {
                    return rb_ring_new(kind, method, flags, mode.rawValue, r.baseAddress, w.baseAddress, CInt(n), &message, 256)
                }
                return rb_ring_new(kind, nil, flags, mode.rawValue, r.baseAddress, w.baseAddress, CInt(n), &message, 256)
            }
        }
        guard let made else {
            pairs.close()
            throw BenchError(string(fromCBuffer: message))
        }
        ring = made
        self.active = Int32(active)
        self.writes = Int32(writes)
    }

    func round() throws -> Round {
        var waits: Int64 = 0, events: Int64 = 0
        let ns = rb_ring_round(ring, active, writes, &waits, &events)
        guard ns >= 0 else { throw BenchError("C ring round failed (errno \(errno))") }
        return Round(nanoseconds: ns, waits: waits, units: events)
    }

    func close() {
        rb_ring_free(ring)
        pairs.close()
    }
}

/// A Readiness backend on the ring.
final class ReadinessRing: PollerLoop {
    let pairs: Pairs
    let poller: any Poller
    let specialised: Bool
    let buffer = EventBuffer(capacity: 256)
    let mode: RingMode
    let n: Int, active: Int, writes: Int
    let rfd: UnsafeMutablePointer<CInt>
    let wfd: UnsafeMutablePointer<CInt>
    var count = 0, fired = 0, remaining = 0

    init(poller: any Poller, specialised: Bool, mode: RingMode, n: Int, active: Int, writes: Int) throws {
        self.poller = poller
        self.specialised = specialised
        do {
            pairs = try Pairs(n)
        } catch {
            try? poller.close()
            throw error
        }
        self.mode = mode
        self.n = n
        self.active = active
        self.writes = writes
        rfd = .allocate(capacity: n)
        wfd = .allocate(capacity: n)
        for i in 0..<n {
            rfd[i] = pairs.read[i]
            wfd[i] = pairs.write[i]
        }
        let trigger: Trigger = mode == .rearm ? .oneShot : .level
        do {
            for i in 0..<n {
                try poller.register(rfd[i], token: Token(UInt64(i)), interest: .readable, trigger: trigger)
            }
        } catch {
            close()
            throw BenchError("register: \(error)")
        }
    }

    @inline(__always)
    private func handle(_ idx: Int) {
        rb_recv_byte(rfd[idx])
        if remaining > 0 {
            var next = idx + 1
            if next >= n { next -= n }
            rb_send_byte(wfd[next])
            remaining -= 1
            fired += 1
        }
        count += 1
    }

    func round<P: Poller>(on poller: P) throws -> Round {
        count = 0
        fired = 0
        remaining = writes
        let space = n / active
        for i in 0..<active {
            rb_send_byte(wfd[i * space])
            fired += 1
        }
        var passes: Int64 = 0
        let start = rb_now_ns()
        while count != fired {
            let got = try poller.wait(into: buffer, timeout: .zero)
            passes += 1
            if passes > 100_000_000 { throw BenchError("no progress") }
            for i in 0..<got {
                let token = buffer[i].token
                let idx = Int(token.rawValue)
                handle(idx)
                switch mode {
                case .plain: break
                case .rearm:
                    try poller.reregister(rfd[idx], token: token, interest: .readable, trigger: .oneShot)
                case .reregister:
                    try poller.deregister(rfd[idx])
                    try poller.register(rfd[idx], token: token, interest: .readable, trigger: .level)
                }
            }
        }
        let elapsed = rb_now_ns() - start
        return Round(nanoseconds: elapsed, waits: passes, units: Int64(count))
    }

    func close() {
        try? poller.close()
        pairs.close()
        rfd.deallocate()
        wfd.deallocate()
    }
}
