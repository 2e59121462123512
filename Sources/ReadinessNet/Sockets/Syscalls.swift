#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import CReadinessNet

/// The socket layer's system calls. EINTR is retried in one place, ``Sys/retryingEINTR(_:)``,
/// except for `close` (never retried on Linux) and `connect` (the connect state machine's rule 4).
enum NetSys {
    static let optionSize = socklen_t(MemoryLayout<CInt>.size)

    /// A buffer size for SO_RCVBUF / SO_SNDBUF, saturated to `0...CInt.max`: a negative one is the
    /// smallest buffer (the kernel, reading it unsigned, would take the largest it allows).
    static func bufferSize(_ bytes: Int) -> CInt { CInt(clamping: Swift.max(0, bytes)) }

    /// setsockopt of an int; 0 or an errno.
    static func setOption(_ fd: CInt, level: CInt, name: CInt, value: CInt) -> CInt {
        var value = value
        return setsockopt(fd, level, name, &value, optionSize) == 0 ? 0 : errno
    }

    /// getsockopt of an int, or an errno.
    static func option(_ fd: CInt, level: CInt, name: CInt) -> Result<CInt, SocketError> {
        var value: CInt = 0
        var length = optionSize
        guard getsockopt(fd, level, name, &value, &length) == 0 else {
            return .failure(SocketError(errno: errno, operation: "getsockopt"))
        }
        return .success(value)
    }

    /// SO_ERROR read and cleared: nil when there is none.
    static func takePendingError(_ fd: CInt) -> SocketError? {
        switch NetSys.option(fd, level: SOL_SOCKET, name: SO_ERROR) {
        case .success(0): return nil
        case .success(let code): return SocketError(errno: code, operation: "SO_ERROR")
        case .failure(let error): return error
        }
    }

    @inline(__always)
    static func read(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        Sys.retryingEINTR { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// shutdown(2) of one direction or both, for a stream or a datagram socket.
    static func shutdown(_ fd: CInt, _ direction: ShutdownDirection) throws(SocketError) {
        let how: CInt = switch direction {
        case .read: rd_net_shut_rd()
        case .write: rd_net_shut_wr()
        case .both: rd_net_shut_rdwr()
        }
        if Glibc.shutdown(fd, how) != 0 { throw SocketError(errno: errno, operation: "shutdown") }
    }

    @inline(__always)
    static func readv(_ fd: CInt, _ buffers: UnsafePointer<iovec>, _ count: Int) -> Int {
        Sys.retryingEINTR { Glibc.readv(fd, buffers, CInt(count)) }
    }

    @inline(__always)
    static func peek(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        Sys.retryingEINTR { rd_net_peek(fd, buffer.baseAddress, buffer.count) }
    }

    @inline(__always)
    static func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer) -> Int {
        Sys.retryingEINTR { rd_net_send(fd, buffer.baseAddress, buffer.count) }
    }

    @inline(__always)
    static func sendv(_ fd: CInt, _ buffers: UnsafePointer<iovec>, _ count: Int) -> Int {
        Sys.retryingEINTR { rd_net_sendv(fd, buffers, CInt(count)) }
    }

    @inline(__always)
    static func accept(_ fd: CInt, _ address: inout SocketAddress) -> CInt {
        Sys.retryingEINTR { address.withMutableSockaddr { rd_net_accept(fd, $0, $1) } }
    }

    /// The outcome of a read or write that returned `n` (errno is read only when n < 0).
    @inline(__always)
    static func result(_ n: Int, operation: StaticString, isRead: Bool) throws(SocketError) -> IOResult {
        if n > 0 { return .transferred(n) }
        if n == 0 { return isRead ? .endOfStream : .transferred(0) }
        let code = errno
        if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
        throw SocketError(errno: code, operation: String(describing: operation))
    }
}

extension SocketError {
    /// A failed bind(2) of `address`: EADDRINUSE on a Unix path that holds a file which is not a
    /// socket (a regular file, a directory, a symbolic link) is ``Kind/pathNotSocket``, for every
    /// kind of socket, as a listener's bind says; otherwise the errno's kind.
    static func bindFailure(_ code: CInt, _ address: SocketAddress) -> SocketError {
        if code == EADDRINUSE, let path = address.filesystemPath {
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFSOCK {
                return SocketError(.pathNotSocket, operation: "bind \(address.unixPath ?? "\(address)")")
            }
        }
        return SocketError(errno: code, operation: "bind \(address)")
    }
}

/// The Unix-domain path a socket bound (its file's device and inode read right after the bind): it is
/// unlinked on close only while it is still that file, and only by the process that bound it. An
/// operator's `rm`, or another process that bound the same path since, keeps what is now there (Go's
/// UnixListener notes that race; this closes it); a child made by `fork()` that closes its copy of the
/// socket (a pre-fork worker, or a loop the child inherited) leaves the parent's path where it is.
struct BoundPath: Sendable {
    /// The path's bytes with a NUL after them (a path need not be UTF-8).
    private let path: [CChar]
    private let device: UInt
    private let inode: UInt
    /// ``Sys/forkGeneration`` at the bind: a child's copy of the socket never unlinks the path.
    private let forkGeneration = Sys.forkGeneration

    /// The path `fd`'s address names, if it is a filesystem path (not abstract, not nameless) and it is
    /// a socket now.
    ///
    /// A relative path is kept with the working directory of the bind before it (the directory the
    /// kernel resolved it in): a `chdir` between the bind and the close (a daemon's `chdir("/")`)
    /// would otherwise look for it elsewhere, find nothing, and leave the socket file behind (Go's
    /// TestUnixUnlink; the inode check below still guards another file on that path).
    init?(_ address: SocketAddress) {
        guard let given = address.filesystemPath else { return nil }
        var st = stat()
        guard lstat(given, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK else { return nil }
        var path = given
        if given.first != CChar(UInt8(ascii: "/")) {
            var directory = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            if getcwd(&directory, directory.count) != nil {
                path = Array(directory.prefix { $0 != 0 }) + [CChar(UInt8(ascii: "/"))] + given
            }
        }
        self.path = path
        device = UInt(truncatingIfNeeded: st.st_dev)
        inode = UInt(truncatingIfNeeded: st.st_ino)
    }

    /// Unlinks the path if it is still the file bound. Call it before closing the socket: while the
    /// socket holds the file, no other file can have its inode number.
    func unlinkIfOurs() {
        guard Sys.forkGeneration == forkGeneration else { return }
        var st = stat()
        guard lstat(path, &st) == 0, UInt(truncatingIfNeeded: st.st_dev) == device, UInt(truncatingIfNeeded: st.st_ino) == inode else { return }
        unlink(path)
    }
}
