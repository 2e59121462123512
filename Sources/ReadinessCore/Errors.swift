#if canImport(Glibc)
import Glibc
#endif

/// Every error a poller throws. The same misuse gives the same case on every backend, checked in the
/// same order (see Docs/Contract.md), and leaves the poller usable and unchanged.
public enum PollerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The poller was closed; every later call fails this way.
    case closed
    /// A negative descriptor.
    case invalidDescriptor(CInt)
    /// The descriptor is not open (EBADF).
    case badDescriptor(CInt)
    /// The descriptor cannot be polled (a regular file or directory, or the kernel refused it).
    case unsupportedDescriptor(CInt)
    /// The backend cannot hold a descriptor this large (select: FD_SETSIZE).
    case descriptorTooLarge(CInt, limit: CInt)
    /// register() on a descriptor that is already registered.
    case alreadyRegistered(CInt)
    /// reregister() or deregister() on a descriptor that is not registered.
    case notRegistered(CInt)
    /// ``Token/waker`` is reserved for wake-ups.
    case reservedToken
    /// An empty ``Interest``.
    case emptyInterest
    /// The trigger is not available on this backend (edge-triggered where the kernel has no edges).
    case unsupportedTrigger(Trigger, backend: String)
    /// A system call failed in a way the contract does not name.
    case system(operation: String, errno: CInt)
    /// The process or the system ran out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM;
    /// ENOSPC: the kernel's limit of watched descriptors, epoll's per-user `max_user_watches`).
    /// Nothing was changed; the call can succeed once something is released.
    case resourceExhausted(operation: String, errno: CInt)
    /// The backend could not be created here.
    case unavailable(backend: String, reason: String)
    /// The poller (or its waker) was made by the parent of this process, a child made by `fork()`: its
    /// kernel objects (the epoll set, the io_uring ring, the waker's eventfd) are shared with the
    /// parent, so every call but `close()` is refused, touching nothing. `close()` releases the
    /// child's copies, leaving the parent's registrations alone; make a new poller in the child.
    case forked

    /// The error for a system call that failed with `code`: ``resourceExhausted(operation:errno:)``
    /// for EMFILE, ENFILE, ENOBUFS, ENOMEM and ENOSPC (for a poller, the kernel's limit of watched
    /// descriptors: epoll's per-user `max_user_watches`), otherwise ``system(operation:errno:)``.
    @_spi(Backend) public static func failed(_ operation: String, errno code: CInt) -> PollerError {
        code == ENOSPC || ErrnoTable.category(of: code) == .resourceExhausted
            ? .resourceExhausted(operation: operation, errno: code)
            : .system(operation: operation, errno: code)
    }

    /// True for ``resourceExhausted(operation:errno:)``.
    public var isResourceExhausted: Bool {
        if case .resourceExhausted = self { true } else { false }
    }

    /// A message naming the failure.
    public var description: String {
        switch self {
        case .closed: "the poller is closed"
        case .invalidDescriptor(let fd): "descriptor \(fd) is negative"
        case .badDescriptor(let fd): "descriptor \(fd) is not open (EBADF)"
        case .unsupportedDescriptor(let fd): "descriptor \(fd) cannot be polled (regular file, directory or refused by the kernel)"
        case .descriptorTooLarge(let fd, let limit): "descriptor \(fd) is too large for this backend (limit: below \(limit))"
        case .alreadyRegistered(let fd): "descriptor \(fd) is already registered"
        case .notRegistered(let fd): "descriptor \(fd) is not registered"
        case .reservedToken: "token \(UInt64.max) is reserved for the waker"
        case .emptyInterest: "interest must include readable, writable or both"
        case .unsupportedTrigger(let t, let b): "\(t) triggering is not supported by the \(b) backend"
        case .system(let op, let e): "\(op) failed: \(ErrnoTable.name(e)) (\(e)): \(ErrnoTable.message(e))"
        case .resourceExhausted(let op, let e): "\(op) failed: out of resources: \(ErrnoTable.name(e)) (\(e)): \(ErrnoTable.message(e))"
        case .unavailable(let b, let r): "backend \(b) is unavailable: \(r)"
        case .forked: "the poller belongs to the parent process (this is a child made by fork()): close it and make a new one"
        }
    }
}

/// The package's one errno table: what each errno value means (``Category``), its symbolic name and
/// its message. Every error type classifies errno through ``category(of:)`` (``PollerError``,
/// `SocketError`, `ConnectError`, the listener's accept), so a value is classified in one place.
/// Inside the package only: callers outside it see the typed errors, never this table.
package enum ErrnoTable {
    /// What an errno value says, before any one call's error type gives it a name of its own.
    package enum Category: Hashable, Sendable {
        /// EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory; nothing wrong with the request.
        case resourceExhausted
        /// EAGAIN (EWOULDBLOCK): nothing now.
        case wouldBlock
        /// EINTR: a signal arrived.
        case interrupted
        /// ECONNREFUSED: nothing listens there.
        case refused
        /// ECONNRESET, EPIPE: the peer reset the connection, or it is closed for writing.
        case reset
        /// ECONNABORTED: the connection was aborted (before accept, or during a handshake).
        case aborted
        /// ETIMEDOUT: the kernel gave up (a handshake, keep-alive).
        case timedOut
        /// ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN: no route.
        case unreachable
        /// EPROTO, ENOPROTOOPT, ENONET, EOPNOTSUPP: a protocol failure a queued connection can pass
        /// on to accept (accept(2)).
        case protocolFailure
        /// EADDRINUSE: the address is taken.
        case addressInUse
        /// EADDRNOTAVAIL: the address is not local (or no local port is free).
        case addressUnavailable
        /// EACCES, EPERM: forbidden (a privileged port, a firewall rule, file permissions).
        case permissionDenied
        /// ENOTCONN: not connected; EDESTADDRREQ: a datagram sent with no destination on a socket
        /// that is not connected.
        case notConnected
        /// EBADF: the descriptor is not open.
        case badDescriptor
        /// ENOENT, ENOTDIR: a path's file or directory is missing.
        case noSuchPath
        /// EMSGSIZE: a datagram larger than the protocol or the socket's send buffer allows.
        case messageTooLarge
        /// Anything else.
        case other
    }

    /// The category of `code`: the one errno classification.
    package static func category(of code: CInt) -> Category {
        switch code {
        case EMFILE, ENFILE, ENOBUFS, ENOMEM: .resourceExhausted
        case EAGAIN, EWOULDBLOCK: .wouldBlock
        case EINTR: .interrupted
        case ECONNREFUSED: .refused
        case ECONNRESET, EPIPE: .reset
        case ECONNABORTED: .aborted
        case ETIMEDOUT: .timedOut
        case ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN: .unreachable
        case EPROTO, ENOPROTOOPT, ENONET, EOPNOTSUPP: .protocolFailure
        case EADDRINUSE: .addressInUse
        case EADDRNOTAVAIL: .addressUnavailable
        case EACCES, EPERM: .permissionDenied
        case ENOTCONN, EDESTADDRREQ: .notConnected
        case EBADF: .badDescriptor
        case ENOENT, ENOTDIR: .noSuchPath
        case EMSGSIZE: .messageTooLarge
        default: .other
        }
    }

    /// The symbolic name ("ECONNREFUSED"), or "errno N" when unknown.
    package static func name(_ code: CInt) -> String {
        switch code {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case EINTR: "EINTR"
        case EBADF: "EBADF"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case ENOSPC: "ENOSPC"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EEXIST: "EEXIST"
        case EINVAL: "EINVAL"
        case EMFILE: "EMFILE"
        case ENFILE: "ENFILE"
        case EPIPE: "EPIPE"
        case ENOTSOCK: "ENOTSOCK"
        case EAFNOSUPPORT: "EAFNOSUPPORT"
        case EADDRINUSE: "EADDRINUSE"
        case EADDRNOTAVAIL: "EADDRNOTAVAIL"
        case ENETDOWN: "ENETDOWN"
        case ENETUNREACH: "ENETUNREACH"
        case ECONNABORTED: "ECONNABORTED"
        case ECONNRESET: "ECONNRESET"
        case EISCONN: "EISCONN"
        case ENOTCONN: "ENOTCONN"
        case EDESTADDRREQ: "EDESTADDRREQ"
        case ETIMEDOUT: "ETIMEDOUT"
        case ECONNREFUSED: "ECONNREFUSED"
        case EMSGSIZE: "EMSGSIZE"
        case EHOSTDOWN: "EHOSTDOWN"
        case EHOSTUNREACH: "EHOSTUNREACH"
        case EALREADY: "EALREADY"
        case EINPROGRESS: "EINPROGRESS"
        case EPROTOTYPE: "EPROTOTYPE"
        case ENOPROTOOPT: "ENOPROTOOPT"
        case ENOBUFS: "ENOBUFS"
        case ENOTDIR: "ENOTDIR"
        case EISDIR: "EISDIR"
        case ELOOP: "ELOOP"
        case EROFS: "EROFS"
        case ENAMETOOLONG: "ENAMETOOLONG"
        case ENODEV: "ENODEV"
        case ENXIO: "ENXIO"
        case EPROTO: "EPROTO"
        case ENONET: "ENONET"
        case EOPNOTSUPP: "EOPNOTSUPP"
        case ESRCH: "ESRCH"
        case ECANCELED: "ECANCELED"
        case ETIME: "ETIME"
        case EOVERFLOW: "EOVERFLOW"
        case EPROTONOSUPPORT: "EPROTONOSUPPORT"
        case ESOCKTNOSUPPORT: "ESOCKTNOSUPPORT"
        default: "errno \(code)"
        }
    }
    /// strerror(3)'s text.
    package static func message(_ code: CInt) -> String {
        guard let text = strerror(code) else { return "unknown error" }
        return String(cString: text)
    }
}
