import Glibc
import Readiness
import Synchronization
import Testing

private final class P5Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// Scenarios from the peers' test suites (tokio, libuv, SwiftNIO, Go, CPython), stop 32.
@Suite("Peer scenarios 5", .serialized)
struct PeerScenarioTests5 {
    /// tokio tests/coop_budget.rs: a task whose every operation completes at once never suspends, so
    /// without a budget it holds the loop thread for ever: the loop's other tasks and its timers never
    /// run. Before: the other task and the timer had not run after 50,000 rounds on the readiness
    /// driver (every backend but io_uring's completion waits).
    @Test("a task whose I/O is always ready lets the loop's other tasks and timers run (tokio coop budget)", arguments: backends)
    func busyTaskLetsOthersRun(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let datagrams = try await loop.bindDatagram(to: try SocketAddress(ip: "127.0.0.1", port: 0))
                let address = try #require(datagrams.localAddress)
                let listener = try await loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0))
                let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let server = try await listener.accept(timeout: .seconds(5))
                for streams in [false, true] {
                    let ran = P5Counter()
                    let other = Task(executorPreference: loop) { ran.add() }
                    let timer = Task(executorPreference: loop) { () async throws in
                        try await loop.sleep(for: .milliseconds(1))
                        ran.add()
                    }
                    var rounds = 0
                    var buffer = [UInt8](repeating: 0, count: 16)
                    while rounds < 50_000, ran.value < 2 {
                        if streams {
                            try await client.write([1])
                            _ = try await server.read(upTo: 16)
                        } else {
                            try await datagrams.send([1], to: address)
                            _ = try await datagrams.receive(into: &buffer)
                        }
                        rounds += 1
                    }
                    #expect(ran.value == 2, "\(streams ? "stream" : "datagram"): after \(rounds) rounds")
                    await other.value
                    try await timer.value
                }
                await client.close()
                await server.close()
                await listener.close()
                await datagrams.close()
            }.value
        }
    }
}
