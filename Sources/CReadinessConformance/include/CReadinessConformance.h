#ifndef CREADINESS_CONFORMANCE_H
#define CREADINESS_CONFORMANCE_H

/// unshare(CLONE_NEWNET) for the calling thread (needs _GNU_SOURCE, hidden from Swift's Glibc): the
/// conformance suite's isolated-network fixture. 0, or -1 with errno set.
int rd_unshare_network(void);

/// A Landlock ruleset (landlock_create_ruleset, no privilege needed): an anonymous-inode file with no
/// poll method, the conformance suite's `anonymousUnpollable` fixture. The descriptor (close-on-exec),
/// or -1 with errno set (ENOSYS, EOPNOTSUPP: no Landlock here).
int rd_landlock_ruleset(void);

/// A child process (`/usr/bin/head -c 1`, made with posix_spawn) that exits once a byte is written
/// to `*release` (a blocking pipe's write end, close-on-exec; closing it ends the child too), and a
/// pidfd for it (pidfd_open): the conformance suite's `childProcess` fixture. The pidfd, with the
/// child's process id in `*pid`, or -1 with errno set (ENOSYS: no pidfd_open here) and nothing left
/// open or running.
int rd_spawn_pidfd_child(int *release, int *pid);

/// Ends and reaps a child of `rd_spawn_pidfd_child` through `pidfd` (pidfd_send_signal, waitid
/// P_PIDFD; `pid` only where the kernel lacks waitid on a pidfd), then closes `pidfd`.
void rd_end_pidfd_child(int pidfd, int pid);

#endif
