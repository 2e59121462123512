#ifndef CREADINESS_CORE_H
#define CREADINESS_CORE_H
#include <stdint.h>

/// eventfd(2) is not exported by Swift's Glibc module.
int rd_eventfd_nonblocking(void);
/// CLOCK_MONOTONIC in nanoseconds.
int64_t rd_monotonic_ns(void);

/// pipe2(fds, O_NONBLOCK | O_CLOEXEC) (needs _GNU_SOURCE, hidden from Swift's Glibc).
int rd_pipe_nonblocking(int fds[2]);
/// accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC).
int rd_accept_nonblocking(int listener);
/// Whether the kernel can report readiness for `fd` (its file has a poll method): 1 yes, 0 no
/// (epoll_ctl refuses it with EPERM, as for /dev/null), -1 with errno when it could not be told.
/// Asks a throwaway epoll set, so it costs three system calls: used for character and block
/// devices only, whose support varies device by device.
int rd_kernel_can_poll(int fd);
/// `rd_kernel_can_poll` with a probe epoll set kept in `*probe` (made on first use, -1 before;
/// the caller closes it): two system calls (EPOLL_CTL_ADD then DEL) and no descriptor once made, so
/// a process out of descriptors can still re-arm a device or eventfd it registered before.
int rd_kernel_can_poll_with(int *probe, int fd);
/// Whether `fd` is a pidfd whose file the kernel calls regular (S_IFREG): Linux 6.9 moved pidfds to
/// their own file system (pidfs) and some releases since report its files as regular ones, which the
/// contract otherwise refuses. 1 yes, 0 no, -1 with errno. One fstatfs.
int rd_is_pidfs_file(int fd);
/// Whether `fd` was opened with O_PATH (a location, not an open file: no I/O, and poll(2) calls it
/// POLLNVAL, select(2) always ready, epoll_ctl EBADF): 1 yes, 0 no, -1 with errno (EBADF: not open).
/// One fcntl(F_GETFL).
int rd_is_path_only(int fd);
/// How many fork() calls this process is the child of (0 in the original process): a pthread_atfork
/// child handler installed when the library loads counts them. A poller and its waker remember the
/// value they were made with, to refuse use in a child (Docs/Contract.md, "fork()").
unsigned rd_fork_generation(void);
/// Names the calling thread (as `ps -L`, `top -H`, gdb and perf show it): `name` up to its first NUL,
/// cut to the kernel's 15 bytes on a UTF-8 character boundary, a trailing `-<digits>` (a group's
/// `name-12`) kept whole. 0, or an errno.
int rd_name_current_thread(const char *name);
/// The CPUs in the calling thread's affinity mask (sched_getaffinity), or -1.
int rd_affinity_cpu_count(void);

#endif
