import CReadinessBench
import Glibc
import Readiness

/// N watched descriptors: one socketpair's read end (at index N/2, so that a scan from the start
/// looks at half of them) and N-1 eventfds that are never written (idle, never readable; one
/// descriptor each, so that N=1000 stays below select's FD_SETSIZE).
final class ScaleFixture {
    var fds: [CInt] = []
    let activeIndex: Int
    var writeFD: CInt = -1

    /// `extra` more idle eventfds at the end (a C loop's stand-in for a Readiness poller's waker).
    init(_ n: Int, extra: Int = 0) throws {
        activeIndex = n / 2
        var pair: [CInt] = [-1, -1]
        guard rb_socketpair(&pair) == 0 else { throw BenchError("socketpair: errno \(errno)") }
        writeFD = pair[1]
        fds.reserveCapacity(n + extra)
        for i in 0..<(n + extra) {
            if i == activeIndex {
                fds.append(pair[0])
                continue
            }
            let fd = rb_idle_fd()
            guard fd >= 0 else {
                let e = errno
                close()
                throw BenchError("eventfd: errno \(e)")
            }
            fds.append(fd)
        }
    }

    func close() {
        for fd in fds { Glibc.close(fd) }
        if writeFD >= 0 { Glibc.close(writeFD) }
        fds = []
        writeFD = -1
    }
}

final class CScale: Instance {
    let fixture: ScaleFixture
    let scale: OpaquePointer
    let iterations: Int32

    init(kind: CInt, method: String?, flags: CInt, n: Int, iterations: Int) throws {
        let fixture = try ScaleFixture(n, extra: flags & CInt(RB_WAKER) != 0 ? 1 : 0)
        let n = fixture.fds.count
        self.fixture = fixture
        var message = [CChar](repeating: 0, count: 256)
        let made: OpaquePointer? = fixture.fds.withUnsafeBufferPointer { f in
            if let method {
                return rb_scale_new(kind, method, flags, f.baseAddress, CInt(n), CInt(fixture.activeIndex), fixture.writeFD, &message, 256)
            }
            return rb_scale_new(kind, nil, flags, f.baseAddress, CInt(n), CInt(fixture.activeIndex), fixture.writeFD, &message, 256)
        }
        guard let made else {
            fixture.close()
            throw BenchError(string(fromCBuffer: message))
        }
        scale = made
        self.iterations = Int32(iterations)
    }

    func round() throws -> Round {
        var waits: Int64 = 0
        let ns = rb_scale_round(scale, iterations, &waits)
        guard ns >= 0 else { throw BenchError("C scaling round failed") }
        return Round(nanoseconds: ns, waits: waits, units: Int64(iterations))
    }

    func close() {
        rb_scale_free(scale)
        fixture.close()
    }
}

final class ReadinessScale: PollerLoop {
    let fixture: ScaleFixture
    let poller: any Poller
    let specialised: Bool
    let buffer = EventBuffer(capacity: 256)
    let iterations: Int
    let fds: UnsafeMutablePointer<CInt>
    let writeFD: CInt

    init(poller: any Poller, specialised: Bool, n: Int, iterations: Int) throws {
        self.poller = poller
        self.specialised = specialised
        do {
            fixture = try ScaleFixture(n)
        } catch {
            try? poller.close()
            throw error
        }
        self.iterations = iterations
        fds = .allocate(capacity: n)
        for i in 0..<n { fds[i] = fixture.fds[i] }
        writeFD = fixture.writeFD
        do {
            for i in 0..<n { try poller.register(fds[i], token: Token(UInt64(i)), interest: .readable) }
        } catch {
            close()
            throw BenchError("register: \(error)")
        }
    }

    func round<P: Poller>(on poller: P) throws -> Round {
        var passes: Int64 = 0
        let start = rb_now_ns()
        for _ in 0..<iterations {
            rb_send_byte(writeFD)
            var got = 0
            while got == 0 {
                passes += 1
                if passes > 100_000_000 { throw BenchError("no progress") }
                let n = try poller.wait(into: buffer, timeout: .zero)
                for i in 0..<n {
                    rb_recv_byte(fds[Int(buffer[i].token.rawValue)])
                    got += 1
                }
            }
        }
        let elapsed = rb_now_ns() - start
        return Round(nanoseconds: elapsed, waits: passes, units: Int64(iterations))
    }

    func close() {
        try? poller.close()
        fixture.close()
        fds.deallocate()
    }
}
