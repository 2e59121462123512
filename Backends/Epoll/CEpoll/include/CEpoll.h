#ifndef READINESS_CEPOLL_H
#define READINESS_CEPOLL_H
// Swift's Glibc module does not export epoll; these wrappers also hide the packed epoll_event.
#include <stdint.h>
#include <sys/epoll.h>

static const uint32_t rd_EPOLLIN = EPOLLIN, rd_EPOLLOUT = EPOLLOUT, rd_EPOLLRDHUP = EPOLLRDHUP,
    rd_EPOLLHUP = EPOLLHUP, rd_EPOLLERR = EPOLLERR, rd_EPOLLET = EPOLLET, rd_EPOLLONESHOT = EPOLLONESHOT;

static inline int rd_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static const int rd_EPOLL_CTL_ADD = EPOLL_CTL_ADD, rd_EPOLL_CTL_MOD = EPOLL_CTL_MOD, rd_EPOLL_CTL_DEL = EPOLL_CTL_DEL;

/// epoll_ctl with the event built here (the packed struct epoll_event stays in C).
static inline int rd_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

/// An array of `count` epoll_events (opaque to Swift).
void *rd_epoll_events_allocate(int count);
void rd_epoll_events_free(void *events);
/// dup3(fresh, old, O_CLOEXEC): puts a new epoll set under the old one's number.
int rd_epoll_replace(int fresh, int old);

static inline int rd_epoll_wait(int epfd, void *events, int max, int timeout_ms) {
    return epoll_wait(epfd, (struct epoll_event *)events, max, timeout_ms);
}
static inline uint32_t rd_epoll_event_bits(const void *events, int i) {
    return ((const struct epoll_event *)events)[i].events;
}
static inline uint64_t rd_epoll_event_data(const void *events, int i) {
    return ((const struct epoll_event *)events)[i].data.u64;
}
#endif
