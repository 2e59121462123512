#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore

/// The system calls a connect performs, as a seam: ``SystemConnectSyscalls`` makes the real calls,
/// and tests substitute their own to inject any result and any errno deterministically.
/// Each returns 0 or an errno (never relies on the thread's errno afterwards).
public protocol ConnectSyscalls {
    /// A non-blocking, close-on-exec stream socket: the descriptor, or -1 and an errno.
    func socket(domain: CInt) -> (fd: CInt, errno: CInt)
    /// Binds `fd` to `address` (the self-connect test): 0 or an errno.
    func bind(_ fd: CInt, to address: SocketAddress) -> CInt
    /// connect(2): 0 or an errno.
    func connect(_ fd: CInt, to address: SocketAddress) -> CInt
    /// getsockopt(SOL_SOCKET, SO_ERROR), in either convention.
    func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult
    /// getpeername: 0 and the address, or an errno.
    func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?)
    /// getsockname: 0 and the address, or an errno.
    func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?)
    /// Closes `fd`.
    func close(_ fd: CInt)
}

/// The real system calls.
public struct SystemConnectSyscalls: ConnectSyscalls {
    /// The real system calls.
    public init() {}

    /// socket(2) with SOCK_NONBLOCK and SOCK_CLOEXEC.
    public func socket(domain: CInt) -> (fd: CInt, errno: CInt) {
        let fd = Glibc.socket(domain, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        return (fd, fd < 0 ? errno : 0)
    }

    /// bind(2) of the connecting socket's local address, without SO_REUSEADDR (as Go's dialer and
    /// tokio's `TcpSocket` bind it): a fixed local port another socket holds is EADDRINUSE
    /// (`addressInUse`). With SO_REUSEADDR (before), two connects from one port shared it silently,
    /// or the second failed with EADDRNOTAVAIL when both went to the same destination.
    public func bind(_ fd: CInt, to address: SocketAddress) -> CInt {
        address.withSockaddr { Glibc.bind(fd, $0, $1) } == 0 ? 0 : errno
    }

    /// connect(2) once. EINTR is returned as it is: the state machine treats it as "in progress"
    /// and connect is never called again on this socket.
    public func connect(_ fd: CInt, to address: SocketAddress) -> CInt {
        address.withSockaddr { Glibc.connect(fd, $0, $1) } == 0 ? 0 : errno
    }

    /// getsockopt(SOL_SOCKET, SO_ERROR).
    public func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 ? .value(value) : .callFailed(errno)
    }

    /// getpeername(2).
    public func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) {
        var address = SocketAddress()
        let status = address.withMutableSockaddr { getpeername(fd, $0, $1) }
        return status == 0 ? (0, address) : (errno, nil)
    }

    /// getsockname(2).
    public func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) {
        var address = SocketAddress()
        let status = address.withMutableSockaddr { getsockname(fd, $0, $1) }
        return status == 0 ? (0, address) : (errno, nil)
    }

    /// close(2).
    public func close(_ fd: CInt) { Sys.close(fd) }
}
