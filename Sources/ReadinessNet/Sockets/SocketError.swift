#if canImport(Glibc)
import Glibc
#endif

/// Why a socket operation failed: a kind a caller can act on, the errno behind it and the call.
public struct SocketError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, in terms a caller acts on.
    public enum Kind: String, Hashable, Sendable, Codable {
        /// ECONNRESET, EPIPE: the peer reset the connection, or it is closed for writing.
        case reset
        /// ECONNREFUSED: nothing listens there. For a connected UDP ``DatagramSocket``: an ICMP
        /// port-unreachable came back for an earlier datagram, reported by the next call. For a Unix
        /// datagram socket: the peer socket is gone (closed), reported by this very send; a connected
        /// one is disconnected by the kernel then (the next send without a destination is
        /// ``notConnected``): connect it again once the peer is back.
        case refused
        /// EMSGSIZE: a datagram larger than the protocol allows (65,507 bytes of UDP over IPv4) or than
        /// the socket's send buffer; nothing was sent. For a connected UDP ``DatagramSocket`` it can
        /// also be an ICMP "fragmentation needed" (ICMPv6 "packet too big") for an earlier datagram
        /// sent with don't-fragment, Linux's default: reported once by the next call, as ``refused``
        /// is; the kernel has lowered the path MTU, and smaller datagrams go through.
        case messageTooLarge
        /// ECONNABORTED, ETIMEDOUT: the connection was aborted (by keep-alive, or before accept).
        case aborted
        /// EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or kernel memory. Back off; retry later.
        case resourceExhausted
        /// EADDRINUSE: the address is taken. For a Unix path: a socket is there, live (a listener's bind
        /// removes a stale one first), or any socket file for a datagram socket's bind, which removes
        /// nothing; a file that is not a socket is ``pathNotSocket``.
        case addressInUse
        /// EADDRNOTAVAIL: the address is not local.
        case addressUnavailable
        /// EACCES, EPERM: a privileged port, or file permissions on a Unix path.
        case permissionDenied
        /// ENOTCONN: not connected (or already shut down).
        case notConnected
        /// ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN: no route to the peer. For a connected
        /// ``DatagramSocket``: an ICMP error Linux counts as hard came back for an earlier datagram,
        /// reported by the next call (as ``refused`` reports a port-unreachable): on IPv4
        /// "communication administratively prohibited", a host or network unknown or prohibited.
        /// Without IP_RECVERR (not set here) Linux does not report the soft ones (a plain host- or
        /// network-unreachable) to a datagram socket; ICMPv6's administratively prohibited, policy
        /// failure and reject route come as EACCES (``permissionDenied``), a protocol unreachable or
        /// parameter problem as ENOPROTOOPT or EPROTO (``other``).
        case unreachable
        /// EBADF: the socket was closed (by this object or underneath it).
        case closed
        /// ENOENT, ENOTDIR: a Unix path's directory is missing.
        case noSuchPath
        /// A Unix path is taken by something that is not a socket; it is never removed.
        case pathNotSocket
        /// The caller's argument is out of range (an empty read buffer, an offset outside the array, a
        /// descriptor that is negative or not a stream socket): refused before any system call. Also
        /// the kernel's EPROTOTYPE: a Unix path held by a socket of the other type (a datagram
        /// socket's connect or send to a stream listener's path).
        case invalidArgument
        /// Any other errno.
        case other
    }

    /// What went wrong.
    public var kind: Kind
    /// The errno that proved it (nil for errors this layer decides, such as ``Kind/pathNotSocket``).
    public var errno: CInt?
    /// The system call or operation ("accept", "send", "bind").
    public var operation: String

    /// An error of a known kind.
    public init(_ kind: Kind, errno: CInt? = nil, operation: String) {
        self.kind = kind
        self.errno = errno
        self.operation = operation
    }

    /// An error for `code` as returned by `operation`, classified by ``kind(of:)`` (the package's one errno classification).
    public init(errno code: CInt, operation: String) {
        self.init(Self.kind(of: code), errno: code, operation: operation)
    }

    /// The kind of `code`, from the package's one errno classification.
    public static func kind(of code: CInt) -> Kind {
        if code == EPROTOTYPE { return .invalidArgument }   // the other socket type at a Unix path
        return switch ErrnoTable.category(of: code) {
        case .reset: .reset
        case .aborted, .timedOut: .aborted
        case .resourceExhausted: .resourceExhausted
        case .addressInUse: .addressInUse
        case .addressUnavailable: .addressUnavailable
        case .permissionDenied: .permissionDenied
        case .notConnected: .notConnected
        case .badDescriptor: .closed
        case .noSuchPath: .noSuchPath
        case .refused: .refused
        case .messageTooLarge: .messageTooLarge
        case .unreachable: .unreachable
        case .wouldBlock, .interrupted, .protocolFailure, .other: .other
        }
    }

    /// The errno's symbolic name ("ECONNRESET"), if there is an errno.
    public var errnoName: String? { errno.map(ErrnoTable.name) }

    /// A one-line text for logs.
    public var description: String {
        var text = "\(operation): \(kind.rawValue)"
        if let errno { text += " (\(ErrnoTable.name(errno)): \(ErrnoTable.message(errno)))" }
        return text
    }
}

/// What one read or write did. Errors are thrown (``SocketError``); these are the outcomes a loop
/// handles every time.
public enum IOResult: Hashable, Sendable {
    /// This many bytes were read or written (never 0 for a non-empty buffer).
    case transferred(Int)
    /// EAGAIN: nothing now; wait for readiness.
    case wouldBlock
    /// The peer shut down its sending side (read returned 0). Only reads report it.
    case endOfStream

    /// The byte count, or 0 for ``wouldBlock`` and ``endOfStream``.
    @inlinable public var count: Int {
        if case .transferred(let n) = self { return n }
        return 0
    }
}

/// A direction to shut down.
public enum ShutdownDirection: Sendable, Hashable {
    /// SHUT_RD, SHUT_WR, SHUT_RDWR.
    case read, write, both
}
