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
/// unshare(CLONE_NEWNET) for the calling thread.
int rd_unshare_network(void);

#endif
