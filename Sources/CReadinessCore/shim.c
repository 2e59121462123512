#include "CReadinessCore.h"
#include <errno.h>
#include <sys/eventfd.h>
#include <time.h>

int rd_eventfd_nonblocking(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int64_t rd_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void rd_set_errno(int value) { errno = value; }
