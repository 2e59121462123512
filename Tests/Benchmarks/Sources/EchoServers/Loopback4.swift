// What the FlyingSocks contenders of readiness-async-bench, readiness-net-bench and readiness-idle-bench share.
import FlyingSocks
#if canImport(Glibc)
import Glibc
#endif

/// 127.0.0.1:port for FlyingSocks. (Its own `sockaddr_in` conformance is not seen from this package:
/// netinet/in.h is owned by another C module here, so `sockaddr_in` is another type.)
public struct Loopback4: FlyingSocks.SocketAddress {
    public static var family: sa_family_t { sa_family_t(AF_INET) }
    private var storage = sockaddr_storage()

    public init(port: UInt16) {
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: sa_family_t(AF_INET), as: sa_family_t.self)
            raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
            raw.storeBytes(of: UInt32(0x7f00_0001).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    public func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes(of: storage) { (raw) throws(E) -> R in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), 16)
        }
    }
}
