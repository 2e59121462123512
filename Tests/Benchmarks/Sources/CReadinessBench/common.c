// Descriptors and helpers shared by every contender (the Swift ones call these too), so that all of
// them make the same system calls outside their event loop.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "CReadinessBench.h"

int64_t rb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rb_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rb_fd_setsize(void) { return FD_SETSIZE; }

int rb_socketpair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds);
}

int rb_idle_fd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int rb_send_byte(int fd) { return (int)send(fd, "e", 1, 0); }

int rb_recv_byte(int fd) {
    unsigned char ch;
    return (int)recv(fd, &ch, 1, 0);
}

long rb_drain(int fd) {
    char buffer[4096];
    long total = 0;
    for (int i = 0; i < 1 << 20; i++) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n <= 0) break;
        total += n;
    }
    return total;
}

int rb_listener(int backlog, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    *port = ntohs(address.sin_port);
    return fd;
}

int rb_accept_drain(int listener) {
    int accepted = 0;
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return accepted;
        }
        close(fd);
        accepted++;
    }
}

void rb_abort_close(int fd) {
    struct linger abort = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    close(fd);
}

int rb_highest_open_fd(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return -1;
    int highest = -1, own = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        int fd = atoi(entry->d_name);
        if (fd != own && fd > highest) highest = fd;
    }
    closedir(dir);
    return highest;
}

int rb_check_fd(int fd) { return fcntl(fd, F_GETFD) >= 0 ? 0 : errno; }

int rb_contract_check(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    mode_t kind = st.st_mode & S_IFMT;
    return kind == S_IFREG || kind == S_IFDIR ? -1 : 0;
}

int rb_confirm_names(int fd) {
    struct sockaddr_storage peer, local;
    socklen_t peer_length = sizeof peer, local_length = sizeof local;
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_length) != 0) return -1;
    return getsockname(fd, (struct sockaddr *)&local, &local_length) != 0 ? -1 : 0;
}

void rb_malloc_probe(void) {
    // Through a volatile pointer, so that the compiler cannot remove the malloc/free pair.
    void *volatile p = malloc(48);
    free(p);
}

int rb_tcp_connect(int port, int *fd_out) {
    *fd_out = -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd_out = fd;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) return 0;
    return errno;
}

int rb_socket_error(int fd) {
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0) return errno;
    return value;
}
