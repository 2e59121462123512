#if Libevent // the package trait; without it this module is empty
#if canImport(Glibc)
import Glibc
#endif
import CLibevent

/// The descriptors a libevent base opened for itself that a registration could disturb, told apart
/// from whatever another thread opened at the same moment (Contract rule 7: the poller's own
/// descriptors are refused): its epoll method's epoll set and the timerfd that set waits on (this
/// package asks for the precise timer). Registering the timerfd made libevent's ADD meet EEXIST and
/// become a MOD to the caller's mask, and every later timed wait hung.
///
/// libevent does not hand them out, so they are found among the numbers that were free just before the
/// base was made (the kernel gives the lowest free number) and are open after: the epoll set is the
/// one that watches this poller's waker, which libevent registered at once, and the timerfd the other
/// of those numbers it watches (``/CLibevent/rd_lev_epoll_watches``: an `EPOLL_CTL_MOD` to the event
/// libevent gave them, which changes nothing where it is watched and touches nothing elsewhere).
///
/// An eventfd, timerfd, epoll set or pipe another thread opened meanwhile is not taken for libevent's
/// (outside readers: an eventfd was, and since those files share one inode, every such file a caller
/// later got on that number was refused). libevent's signal pipe is not recorded: libevent never adds
/// an event of its own on it (only a signal event would), so a registration of its number disturbs
/// nothing, and a pipe another thread made at that moment could not be told from it.
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

    /// libevent's epoll set and timerfd among `candidates` (free before the base was made or rebuilt),
    /// for a base whose waker is `waker`; none for the poll and select methods.
    static func find(among candidates: [CInt], waker: CInt) -> [File] {
        var open: [(file: File, kind: mode_t)] = []
        for fd in candidates where fd != waker {
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            open.append((File(fd: fd, device: UInt64(truncatingIfNeeded: st.st_dev),
                              inode: UInt64(truncatingIfNeeded: st.st_ino)), st.st_mode & S_IFMT))
        }
        let files = open.filter { $0.kind != S_IFSOCK && $0.kind != S_IFIFO && $0.kind != S_IFREG && $0.kind != S_IFDIR }
        guard let set = files.first(where: { rd_lev_epoll_watches($0.file.fd, waker) != 0 }) else { return [] }
        return [set.file] + files.filter { $0.file.fd != set.file.fd && rd_lev_epoll_watches(set.file.fd, $0.file.fd) != 0 }.map(\.file)
    }
}
#endif
