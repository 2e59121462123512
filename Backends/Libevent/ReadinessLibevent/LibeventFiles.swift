#if Libevent // the package trait; without it this module is empty
#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a libevent base opened for itself, told apart from whatever another thread opened
/// at the same moment (Contract rule 7: the poller's own descriptors are refused).
///
/// libevent does not hand its descriptors out, so they are found among the numbers that were free just
/// before the base was made (the kernel gives the lowest free number) and are open after:
/// - its signal pipe (every method): both ends of one pipe, both among those numbers, non-blocking and
///   close-on-exec as libevent makes them. A pipe's inode names that pipe alone, so a number reused
///   later by another file is never taken for it;
/// - its epoll set (the epoll method): the epoll file among them that watches this poller's waker, which
///   libevent registered at once; and its timerfd: the other number among them that set watches.
///
/// An eventfd, timerfd, epoll set or signalfd that another thread opened meanwhile is not taken for
/// libevent's: those files share one inode (the anonymous inode), so recording one would refuse every
/// such file a caller later opens on that number (outside reader, after CPython's test_selectors
/// `test_unregister_after_fd_close_and_reuse`). Without /proc (or with no descriptor left to read it)
/// the epoll set and its timerfd are not found and are not refused: a caller's mistake is then not
/// caught, rather than a caller's file refused.
enum LibeventFiles {
    /// One of libevent's files: its number, and the file that number named (device and inode).
    struct File: Equatable {
        var fd: CInt
        var device: UInt64
        var inode: UInt64
    }

    /// The numbers a new libevent base's descriptors will get: the lowest free ones, and `closing`, the
    /// numbers a reinit frees before it makes its new ones. Eight: the epoll method makes four (its set,
    /// its timerfd, the signal pipe's two ends), poll and select two.
    static func lowestFree(after closing: [CInt] = []) -> [CInt] {
        var free = closing
        var fd: CInt = 0
        while free.count < closing.count + 8, fd < CInt.max {
            if fcntl(fd, F_GETFD) < 0, errno == EBADF, !free.contains(fd) { free.append(fd) }
            fd += 1
        }
        return free
    }

    /// libevent's files among `candidates` (free before the base was made or reinitialised), for a base
    /// whose waker is `waker`.
    static func find(among candidates: [CInt], waker: CInt) -> [File] {
        var open: [(file: File, kind: mode_t)] = []
        for fd in candidates {
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            open.append((File(fd: fd, device: UInt64(truncatingIfNeeded: st.st_dev),
                              inode: UInt64(truncatingIfNeeded: st.st_ino)), st.st_mode & S_IFMT))
        }
        var own: [File] = []
        // The signal pipe: two numbers naming the same pipe, both non-blocking and close-on-exec, as
        // libevent makes it (pipe2 with O_NONBLOCK | O_CLOEXEC, or pipe then both flags set).
        for entry in open where entry.kind == S_IFIFO {
            let pairs = open.filter { $0.kind == S_IFIFO && $0.file.device == entry.file.device && $0.file.inode == entry.file.inode }
            if pairs.count == 2, pairs.allSatisfy({ fcntl($0.file.fd, F_GETFL) & O_NONBLOCK != 0 && fcntl($0.file.fd, F_GETFD) & FD_CLOEXEC != 0 }) {
                own.append(entry.file)
            }
        }
        // The epoll set that watches the waker, and what else of the candidates it watches (the timerfd).
        for entry in open where entry.kind != S_IFIFO && entry.kind != S_IFSOCK && entry.file.fd != waker {
            guard let watched = epollWatches(entry.file.fd), watched.contains(waker) else { continue }
            own.append(entry.file)
            for other in open where other.file.fd != waker && other.file.fd != entry.file.fd
                && other.kind != S_IFSOCK && watched.contains(other.file.fd) {
                own.append(other.file)
            }
            break
        }
        return own
    }

    /// The numbers the epoll set `fd` watches (its `tfd:` lines in /proc/self/fdinfo), or nil when `fd`
    /// is no epoll set or they cannot be read.
    static func epollWatches(_ fd: CInt) -> Set<CInt>? {
        let path = "/proc/self/fdinfo/\(fd)"
        let file = open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var watched = Set<CInt>()
        var isEpoll = false
        var line: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        let tag = Array("tfd:".utf8)
        func take(_ line: [UInt8]) {
            guard line.starts(with: tag) else { return }
            isEpoll = true
            var value: CInt = 0
            var digits = 0
            for byte in line.dropFirst(tag.count) {
                if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                    if digits > 0 { break } else { continue }
                }
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 10 else { return }
                value = value &* 10 &+ CInt(byte - UInt8(ascii: "0"))
                digits += 1
            }
            if digits > 0 { watched.insert(value) }
        }
        while true {
            let count = chunk.withUnsafeMutableBytes { read(file, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            for byte in chunk[..<count] {
                if byte == UInt8(ascii: "\n") { take(line); line.removeAll(keepingCapacity: true) } else { line.append(byte) }
            }
        }
        take(line)
        return isEpoll ? watched : nil
    }
}
#endif
