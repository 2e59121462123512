#ifndef CREADINESS_CORE_H
#define CREADINESS_CORE_H
#include <stdint.h>

/// eventfd(2) is not exported by Swift's Glibc module.
int rd_eventfd_nonblocking(void);
/// CLOCK_MONOTONIC in nanoseconds.
int64_t rd_monotonic_ns(void);
/// The thread's errno, set (Swift cannot assign errno directly on every libc).
void rd_set_errno(int value);

#endif
