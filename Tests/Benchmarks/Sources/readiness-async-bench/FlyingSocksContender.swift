// FlyingSocks (FlyingFox's socket layer), the async contender: `AsyncSocket.connected` on its shared
// client pool, as a FlyingSocks user connects. In a file of its own: its names (AsyncSocket,
// SocketAddress, Socket) would clash with Readiness's.
import BenchSupport
import EchoServers
import FlyingSocks
import Glibc
import Synchronization

/// Connects `total` times to 127.0.0.1:`port` from `inFlight` tasks; returns connects per second.
func flyingSocksChurn(port: UInt16, total: Int, inFlight: Int) async throws -> Double {
    let taken = Taken()
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<inFlight {
            group.addTask {
                while taken.value.add(1, ordering: .relaxed).newValue <= total {
                    let socket = try await AsyncSocket.connected(to: Loopback4(port: port))
                    try? socket.close()
                }
            }
        }
        try await group.waitForAll()
    }
    let elapsed = ContinuousClock.now - start
    return Double(total) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

private final class Taken: Sendable {
    let value = Atomic<Int>(0)
}
