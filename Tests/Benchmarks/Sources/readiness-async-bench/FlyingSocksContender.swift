// FlyingSocks (FlyingFox's socket layer), the async contender: `AsyncSocket.connected` on its shared
// client pool, as a FlyingSocks user connects. In a file of its own: its names (AsyncSocket,
// SocketAddress, Socket) would clash with Readiness's.
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

/// 127.0.0.1:port for FlyingSocks. (Its own `sockaddr_in` conformance is not seen from this package:
/// netinet/in.h is owned by another C module here, so `sockaddr_in` is another type.)
struct Loopback4: FlyingSocks.SocketAddress {
    static var family: sa_family_t { sa_family_t(AF_INET) }
    private var storage = sockaddr_storage()

    init(port: UInt16) {
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: sa_family_t(AF_INET), as: sa_family_t.self)
            raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
            raw.storeBytes(of: UInt32(0x7f00_0001).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes(of: storage) { (raw) throws(E) -> R in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), 16)
        }
    }
}
