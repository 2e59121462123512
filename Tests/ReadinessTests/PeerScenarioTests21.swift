import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites, the differential generator and the outside readers of stop 52.
@Suite("Peer scenarios 21", .serialized)
struct PeerScenarioTests21 {
    // MARK: taking turns when the buffer is too small (the differential generator; epoll's ready list)

    /// More registrations always ready than a wait's buffer holds: each is reported within every run
    /// of ceil(n / capacity) consecutive waits, as epoll's ready list (a reported level registration
    /// goes to its tail) and poll's rotor give. libevent kept what a pass could not report for the next
    /// waits, then started its next pass one place after where the previous pass had started: one of
    /// five went 9 waits with a buffer of 1 unreported (differential seed 778058, libevent and
    /// libevent:epoll).
    @Test("ready registrations beyond the buffer take turns: each within every ceil(n / capacity) waits",
          .timeLimit(.minutes(1)), arguments: backends)
    func readyRegistrationsTakeTurns(backend: Backend) throws {
        let n = 5
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for _ in 0..<n {
            var fds: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            pairs.append((fds[0], fds[1]))
        }
        for capacity in [1, 2] {
            let poller = try backend.makePoller()
            defer { try? poller.close() }
            for (i, (a, b)) in pairs.enumerated() {
                try poller.register(a, token: Token(UInt64(i + 1)), interest: .readable)
                var byte: UInt8 = 1
                if i == 0 && capacity == 1 { _ = write(b, &byte, 1) }
            }
            var seen: [Set<UInt64>] = []
            let events = EventBuffer(capacity: capacity)
            // The first waits see the one ready; the others become ready between waits, as in the
            // generator's script (a descriptor's readiness arriving while others are kept).
            for round in 0..<(6 * n) {
                if round == 1 && capacity == 1 { for (_, b) in pairs.dropFirst() { var byte: UInt8 = 1; _ = write(b, &byte, 1) } }
                if round == 0 && capacity == 2 { for (_, b) in pairs { var byte: UInt8 = 1; _ = write(b, &byte, 1) } }
                _ = try poller.wait(into: events, timeout: .zero)
                seen.append(Set(events.map(\.token.rawValue)))
            }
            let window = (n + capacity - 1) / capacity
            var starved: [String] = []
            for start in 2..<(seen.count - window + 1) {
                let covered = seen[start..<(start + window)].reduce(into: Set<UInt64>()) { $0.formUnion($1) }
                if covered.count != n { starved.append("waits \(start)..<\(start + window): \(covered.sorted())") }
            }
            #expect(starved.isEmpty, "\(backend), buffer of \(capacity): \(starved.prefix(3)); waits \(seen.map { $0.sorted() })")
        }
    }
}
