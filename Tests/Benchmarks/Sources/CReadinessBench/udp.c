// The UDP echo contenders written in C (readiness-udp-bench) and the load client every server gets,
// so that the client is never the difference between two servers.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "CReadinessBench.h"
#include "internal.h"

/// The 8-byte sequence number at the start of every load datagram.
#define RB_UDP_SEQUENCE_BYTES 8
/// How long a run that counts datagrams (`datagrams` > 0) may take at most.
#define RB_UDP_COUNT_DEADLINE_NS (120LL * 1000000000LL)

int rb_udp_bound(int *port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0
        || getsockname(fd, (struct sockaddr *)&address, &length) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    *port = ntohs(address.sin_port);
    return fd;
}

/// An epoll instance watching `fd` for readable, level-triggered.
static int watch(int fd) {
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return -1;
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) < 0) return -1;
    return epfd;
}

/// Blocks in epoll_wait until the one descriptor `epfd` watches is readable: 0, or -1 on an error.
static int wait_readable(int epfd) {
    struct epoll_event event;
    while (epoll_wait(epfd, &event, 1, -1) < 0) {
        if (errno != EINTR) return -1;
    }
    return 0;
}

/// Blocks until `fd` is writable (a send that would block: rare on loopback).
static void wait_writable(int fd) {
    struct pollfd entry = {.fd = fd, .events = POLLOUT};
    while (poll(&entry, 1, -1) < 0 && errno == EINTR) {}
}

int rb_udp_echo_batched(int fd) {
    int epfd = watch(fd);
    if (epfd < 0) return -1;
    char *payloads = malloc((size_t)RB_UDP_BATCH * RB_UDP_SLOT);
    struct mmsghdr headers[RB_UDP_BATCH];
    struct iovec buffers[RB_UDP_BATCH];
    struct sockaddr_storage sources[RB_UDP_BATCH];
    if (!payloads) return -1;
    for (;;) {
        if (wait_readable(epfd) < 0) return -1;
        for (;;) {
            memset(headers, 0, sizeof headers);
            for (int i = 0; i < RB_UDP_BATCH; i++) {
                buffers[i].iov_base = payloads + (size_t)i * RB_UDP_SLOT;
                buffers[i].iov_len = RB_UDP_SLOT;
                headers[i].msg_hdr.msg_iov = &buffers[i];
                headers[i].msg_hdr.msg_iovlen = 1;
                headers[i].msg_hdr.msg_name = &sources[i];
                headers[i].msg_hdr.msg_namelen = sizeof sources[i];
            }
            int n = recvmmsg(fd, headers, RB_UDP_BATCH, 0, NULL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno == EINTR) continue;
                return -1;
            }
            // Echo in place: each header already names its source; the length becomes the datagram's.
            for (int i = 0; i < n; i++) buffers[i].iov_len = headers[i].msg_len;
            int sent = 0;
            while (sent < n) {
                int m = sendmmsg(fd, headers + sent, (unsigned)(n - sent), 0);
                if (m < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) wait_writable(fd);
                    else if (errno != EINTR) return -1;
                    continue;
                }
                sent += m;
            }
        }
    }
}

int rb_udp_echo_single(int fd) {
    int epfd = watch(fd);
    if (epfd < 0) return -1;
    char payload[RB_UDP_SLOT];
    for (;;) {
        if (wait_readable(epfd) < 0) return -1;
        for (;;) {
            struct sockaddr_storage source;
            socklen_t length = sizeof source;
            ssize_t n = recvfrom(fd, payload, sizeof payload, 0, (struct sockaddr *)&source, &length);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno == EINTR) continue;
                return -1;
            }
            while (sendto(fd, payload, (size_t)n, 0, (struct sockaddr *)&source, length) < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) wait_writable(fd);
                else if (errno != EINTR) return -1;
            }
        }
    }
}

/// The last byte of datagram `sequence` (the first 8 carry the sequence number).
static unsigned char tag(uint64_t sequence) { return (unsigned char)(sequence * 31 + 7); }

int rb_udp_load(int port, int size, int window, int64_t warmup_ns, int64_t duration_ns, int64_t datagrams,
                rb_udp_load_result *result, char *error, int error_length) {
    memset(result, 0, sizeof *result);
    if (size < RB_UDP_SEQUENCE_BYTES || size >= RB_UDP_SLOT || window < 1 || window > 1024) {
        RB_FAIL(error, error_length, "size %d (8 to %d) or window %d (1 to 1024) out of range", size, RB_UDP_SLOT - 1, window);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval timeout = {.tv_sec = 0, .tv_usec = RB_UDP_LOSS_TIMEOUT_MS * 1000};
    if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof server) < 0
        || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0) {
        RB_FAIL(error, error_length, "client socket: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    // Received slots one byte larger than a datagram: a longer echo shows as a wrong length.
    size_t receive_slot = (size_t)size + 1;
    char *out = calloc((size_t)window, (size_t)size);
    char *back = calloc((size_t)window, receive_slot);
    struct mmsghdr *send_headers = calloc((size_t)window, sizeof *send_headers);
    struct mmsghdr *receive_headers = calloc((size_t)window, sizeof *receive_headers);
    struct iovec *send_buffers = calloc((size_t)window, sizeof *send_buffers);
    struct iovec *receive_buffers = calloc((size_t)window, sizeof *receive_buffers);
    int status = -1;
    if (!out || !back || !send_headers || !receive_headers || !send_buffers || !receive_buffers) {
        RB_FAIL(error, error_length, "out of memory");
        goto done;
    }
    for (int i = 0; i < window; i++) {
        for (int b = RB_UDP_SEQUENCE_BYTES; b < size; b++) out[(size_t)i * size + b] = (char)b;
        send_buffers[i].iov_base = out + (size_t)i * size;
        send_buffers[i].iov_len = (size_t)size;
        send_headers[i].msg_hdr.msg_iov = &send_buffers[i];
        send_headers[i].msg_hdr.msg_iovlen = 1;
        receive_buffers[i].iov_base = back + (size_t)i * receive_slot;
        receive_buffers[i].iov_len = receive_slot;
        receive_headers[i].msg_hdr.msg_iov = &receive_buffers[i];
        receive_headers[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t next = 0, expected = 0;
    int in_flight = 0, measuring = 0;
    int64_t start = rb_now_ns(), measure_start = start + warmup_ns, measure_end = measure_start + duration_ns;
    int64_t cpu_start = 0;
    rb_udp_load_result counts = {0};
    for (;;) {
        int64_t now = rb_now_ns();
        if (!measuring && now >= measure_start) {
            measuring = 1;
            memset(&counts, 0, sizeof counts);
            measure_start = now;
            cpu_start = rb_thread_cpu_ns();
        }
        if (measuring && (datagrams > 0 ? counts.echoed >= datagrams : now >= measure_end)) {
            counts.elapsed_ns = now - measure_start;
            counts.client_cpu_ns = rb_thread_cpu_ns() - cpu_start;
            break;
        }
        if (datagrams > 0 && now - start > RB_UDP_COUNT_DEADLINE_NS) {
            RB_FAIL(error, error_length, "%lld of %lld datagrams echoed before the deadline", (long long)counts.echoed,
                    (long long)datagrams);
            goto done;
        }
        int room = window - in_flight;
        if (room > 0) {
            for (int i = 0; i < room; i++) {
                char *slot = out + (size_t)i * size;
                uint64_t sequence = next + (uint64_t)i;
                memcpy(slot, &sequence, RB_UDP_SEQUENCE_BYTES);
                slot[size - 1] = (char)tag(sequence);
            }
            int sent = 0;
            while (sent < room) {
                int m = sendmmsg(fd, send_headers + sent, (unsigned)(room - sent), 0);
                if (m < 0) {
                    if (errno == EINTR || errno == EAGAIN) continue;
                    RB_FAIL(error, error_length, "sendmmsg: %s", strerror(errno));
                    goto done;
                }
                sent += m;
            }
            next += (uint64_t)room;
            in_flight = window;
            if (measuring) counts.sent += room;
        }
        for (int i = 0; i < window; i++) receive_buffers[i].iov_len = receive_slot;
        int n = recvmmsg(fd, receive_headers, (unsigned)window, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                // Nothing came back in time: the window is lost (a later echo of it counts as late).
                if (measuring) counts.lost += in_flight;
                expected = next;
                in_flight = 0;
                continue;
            }
            if (errno == EINTR) continue;
            RB_FAIL(error, error_length, "recvmmsg: %s (is the server up?)", strerror(errno));
            goto done;
        }
        for (int i = 0; i < n; i++) {
            const unsigned char *bytes = (const unsigned char *)back + (size_t)i * receive_slot;
            uint64_t sequence;
            memcpy(&sequence, bytes, RB_UDP_SEQUENCE_BYTES);
            int intact = (int)receive_headers[i].msg_len == size && bytes[size - 1] == tag(sequence);
            if (!intact) {
                if (measuring) counts.corrupt++;
                if (expected == next) continue;
                sequence = expected;   // answers something: keep the window moving
            } else if (sequence < expected || sequence >= next) {
                if (measuring) counts.late++;
                continue;
            }
            if (sequence > expected && measuring) counts.lost += (int64_t)(sequence - expected);
            in_flight -= (int)(sequence - expected) + 1;
            expected = sequence + 1;
            if (intact && measuring) counts.echoed++;
        }
    }
    *result = counts;
    status = 0;
done:
    free(out);
    free(back);
    free(send_headers);
    free(receive_headers);
    free(send_buffers);
    free(receive_buffers);
    close(fd);
    return status;
}
