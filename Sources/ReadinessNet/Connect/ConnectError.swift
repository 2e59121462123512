#if canImport(Glibc)
import Glibc
#endif

/// Why a connect failed: a cause a caller can act on, the errno behind it, and the address.
public struct ConnectError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, in terms a caller can act on.
    public enum Cause: String, Hashable, Sendable, Codable {
        /// ECONNREFUSED: nothing listens there.
        case refused
        /// The deadline passed before the kernel finished.
        case timedOut
        /// ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN: no route.
        case unreachable
        /// ECONNRESET, ECONNABORTED, EPIPE: the peer reset the connection during the handshake.
        case reset
        /// The socket connected to itself (TCP simultaneous open on a loopback port).
        case selfConnect
        /// Unix-domain EAGAIN: the listener's backlog is full and nothing is in progress.
        case backlogFull
        /// TCP EAGAIN or EADDRNOTAVAIL: no local port or address is free, the local address asked for
        /// is not this machine's, or a connection with the same local and remote address exists (Linux
        /// says EADDRNOTAVAIL for that).
        case addressUnavailable
        /// EADDRINUSE: the local address asked for is taken (bind).
        case addressInUse
        /// ENOENT or ENOTDIR (a Unix-domain path or one of its directories missing), or ECONNREFUSED on a
        /// path nobody listens on.
        case noSuchPath
        /// EACCES, EPERM: a firewall rule or file permissions forbid it.
        case permissionDenied
        /// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the system is out of descriptors or memory.
        /// Nothing is wrong with the destination: retry once something was released.
        case resourceExhausted
        /// The caller cancelled the attempt.
        case cancelled
        /// There was no address to try: an empty address list.
        case noAddress
        /// EINVAL, EAFNOSUPPORT, EPROTOTYPE: the address cannot be a destination (an empty
        /// ``SocketAddress/init()``, a family the socket cannot reach, a Unix path held by a datagram
        /// socket), or the local address asked for is of another family than the destination. Refused before any socket exists for an empty address and for a family
        /// mismatch.
        case invalidAddress
        /// The poller failed (see ``ConnectError/pollerError``).
        case poller
        /// Any other errno.
        case other
    }

    /// What went wrong.
    public var cause: Cause
    /// The errno that proved the failure (nil for timeouts, cancels and self-connects).
    public var errno: CInt?
    /// The address that failed, when known.
    public var address: SocketAddress?
    /// The poller's error, for ``Cause/poller``.
    public var pollerError: PollerError?
    /// For a connect over several addresses: every attempt's error, in the order they failed.
    public var attempts: [ConnectError]

    /// An error with its cause and whatever else is known.
    public init(_ cause: Cause, errno: CInt? = nil, address: SocketAddress? = nil,
                pollerError: PollerError? = nil, attempts: [ConnectError] = []) {
        self.cause = cause
        self.errno = errno
        self.address = address
        self.pollerError = pollerError
        self.attempts = attempts
    }

    /// The cause of `code` (returned by a connect to an address of `family`), from the package's one
    /// errno classification.
    public static func cause(of code: CInt, family: SocketAddress.Family?) -> Cause {
        switch ErrnoTable.category(of: code) {
        case .refused: family == .unix ? .noSuchPath : .refused
        case .noSuchPath: .noSuchPath
        case .timedOut: .timedOut
        case .unreachable: .unreachable
        case .reset, .aborted: .reset
        case .wouldBlock: family == .unix ? .backlogFull : .addressUnavailable
        case .addressUnavailable: .addressUnavailable
        case .permissionDenied: .permissionDenied
        case .resourceExhausted: .resourceExhausted
        // EPROTOTYPE: a Unix path held by a socket of the other type (a datagram socket's).
        case .other where code == EINVAL || code == EAFNOSUPPORT || code == EPROTOTYPE: .invalidAddress
        case .addressInUse: .addressInUse
        case .interrupted, .protocolFailure, .notConnected, .badDescriptor, .messageTooLarge, .other: .other
        }
    }

    /// An error for `code` as returned by connect, SO_ERROR or getpeername.
    public init(errno code: CInt, address: SocketAddress?) {
        self.init(Self.cause(of: code, family: address?.family), errno: code, address: address)
    }

    /// The symbolic name of ``errno`` ("ECONNREFUSED"), if any.
    public var errnoName: String? { errno.map(ErrnoTable.name) }

    /// The cause, errno and address on one line.
    public var description: String {
        var text = cause.rawValue
        if let errno { text += " (\(ErrnoTable.name(errno)): \(ErrnoTable.message(errno)))" }
        if let address { text += " connecting to \(address)" }
        if let pollerError { text += ": \(pollerError)" }
        if !attempts.isEmpty { text += "; attempts: " + attempts.map(\.description).joined(separator: "; ") }
        return text
    }
}
