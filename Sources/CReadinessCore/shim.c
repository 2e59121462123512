#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CReadinessCore.h"
#include <errno.h>
#include <sys/epoll.h>
#include <sys/vfs.h>
#include <sys/eventfd.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdatomic.h>

int rd_eventfd_nonblocking(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int64_t rd_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rd_pipe_nonblocking(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }
int rd_accept_nonblocking(int listener) { return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int rd_kernel_can_poll(int fd) {
    int probe = epoll_create1(EPOLL_CLOEXEC);
    if (probe < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN};
    int added = epoll_ctl(probe, EPOLL_CTL_ADD, fd, &ev);
    int saved = errno;
    close(probe); /* drops the probe's interest in fd too */
    if (added == 0) return 1;
    if (saved == EPERM) return 0;
    errno = saved;
    return -1;
}

int rd_kernel_can_poll_with(int *probe, int fd) {
    if (*probe < 0) {
        int made = epoll_create1(EPOLL_CLOEXEC);
        if (made < 0) return -1;
        *probe = made;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    if (epoll_ctl(*probe, EPOLL_CTL_ADD, fd, &ev) == 0) {
        epoll_ctl(*probe, EPOLL_CTL_DEL, fd, NULL);
        return 1;
    }
    int saved = errno;
    /* EEXIST: the same file under this number is in the set already (a delete that could not find
       it once its number was closed while a dup kept the file open): it was pollable then. */
    if (saved == EEXIST) return 1;
    if (saved == EPERM) return 0;
    errno = saved;
    return -1;
}

static _Atomic unsigned rd_forks = 0;
static void rd_count_fork(void) { atomic_fetch_add_explicit(&rd_forks, 1, memory_order_relaxed); }
__attribute__((constructor)) static void rd_install_fork_counter(void) { pthread_atfork(NULL, NULL, rd_count_fork); }
unsigned rd_fork_generation(void) { return atomic_load_explicit(&rd_forks, memory_order_relaxed); }

int rd_is_path_only(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return (flags & O_PATH) ? 1 : 0;
}

int rd_name_current_thread(const char *name) {
    enum { room = 15 };   /* the kernel's TASK_COMM_LEN, 16, with its NUL */
    char cut[room + 1];
    size_t full = strlen(name);
    size_t base = full, suffix = 0;
    if (full > room) {
        /* A trailing "-<digits>" (a group's "name-12") is kept whole: the base name is cut instead, so
         * that the loops of a group with a long name stay told apart. */
        size_t digits = full;
        while (digits > 0 && name[digits - 1] >= '0' && name[digits - 1] <= '9') digits--;
        if (digits < full && digits > 1 && name[digits - 1] == '-' && full - (digits - 1) < room)
            suffix = full - (digits - 1);
        base = room - suffix;
        /* Never end inside a character: back off over continuation bytes (10xxxxxx). */
        while (base > 0 && ((unsigned char)name[base] & 0xC0) == 0x80) base--;
        /* "name-" + "-12" would read "name--12". */
        while (suffix > 0 && base > 0 && name[base - 1] == '-') base--;
    }
    memcpy(cut, name, base);
    memcpy(cut + base, name + full - suffix, suffix);
    cut[base + suffix] = 0;
    return pthread_setname_np(pthread_self(), cut);
}

int rd_affinity_cpu_count(void) {
    /* Grown until the mask fits: a machine may have more CPUs than cpu_set_t's 1,024. */
    for (int cpus = CPU_SETSIZE; cpus <= (1 << 20); cpus *= 2) {
        cpu_set_t *set = CPU_ALLOC(cpus);
        if (set == NULL) return -1;
        size_t size = CPU_ALLOC_SIZE(cpus);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count;
        }
        int saved = errno;
        CPU_FREE(set);
        if (saved != EINVAL) return -1;
    }
    return -1;
}

/* pidfs's magic number (linux/magic.h has it from Linux 6.9 on; Debian 12's headers are older). */
#ifndef PID_FS_MAGIC
#define PID_FS_MAGIC 0x50494446
#endif

int rd_is_pidfs_file(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) return -1;
    return fs.f_type == PID_FS_MAGIC ? 1 : 0;
}
