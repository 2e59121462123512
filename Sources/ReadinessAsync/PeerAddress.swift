#if canImport(Glibc)
import Glibc
#endif
import ReadinessNet

/// The peer address an ``AsyncSocket`` carries, compact: an IPv4 or IPv6 address (a `sockaddr_in6`
/// at most, 28 bytes) inline, a longer one (Unix-domain) in a box. A ``SocketAddress`` is 132 bytes
/// inline (a `sockaddr_storage`), and a socket is copied into every closure context and async frame
/// that uses it, an idle connection's among them (Docs/Async.md, "Memory per idle connection").
enum PeerAddress: Sendable {
    case none
    /// The first `length` bytes of `bytes` are the `sockaddr`.
    case inline(InlineBytes, length: UInt8)
    case boxed(Boxed)

    /// Room for a `sockaddr_in6` (28 bytes), 8-byte aligned.
    typealias InlineBytes = (UInt64, UInt64, UInt64, UInt32)

    /// An address longer than ``InlineBytes``.
    final class Boxed: Sendable {
        let address: SocketAddress
        init(_ address: SocketAddress) { self.address = address }
    }

    init(_ address: SocketAddress?) {
        // The empty address, or a nameless Unix-domain client's: no peer to name.
        guard let address, address.length > 0, !address.isNamelessUnix else { self = .none; return }
        let length = Int(address.length)
        guard length <= MemoryLayout<InlineBytes>.size else { self = .boxed(Boxed(address)); return }
        var bytes: InlineBytes = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &bytes) { target in
            address.withSockaddr { source, _ in target.copyMemory(from: UnsafeRawBufferPointer(start: source, count: length)) }
        }
        self = .inline(bytes, length: UInt8(length))
    }

    /// The address as it was given.
    var address: SocketAddress? {
        switch self {
        case .none:
            return nil
        case .inline(let bytes, let length):
            return withUnsafeBytes(of: bytes) { raw in
                SocketAddress(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length: socklen_t(length))
            }
        case .boxed(let box):
            return box.address
        }
    }
}
