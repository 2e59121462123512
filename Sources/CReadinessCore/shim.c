#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CReadinessCore.h"
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <pthread.h>
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
    char cut[16];
    size_t length = strnlen(name, sizeof cut - 1);
    // Never end inside a character: back off over continuation bytes (10xxxxxx) when cut short.
    if (name[length] != 0) {
        while (length > 0 && ((unsigned char)name[length] & 0xC0) == 0x80) length--;
    }
    memcpy(cut, name, length);
    cut[length] = 0;
    return pthread_setname_np(pthread_self(), cut);
}
