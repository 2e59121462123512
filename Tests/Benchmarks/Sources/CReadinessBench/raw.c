// The raw loops: what a careful C programmer writes directly over epoll_wait, poll and select. They
// are the physical limit the Readiness backends are measured against: no waker, no registration
// table, no misuse checks, no normalization, one specialised loop per mechanism.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "CReadinessBench.h"
#include "internal.h"

static int set_too_small(const int *fds, int n, char *error, int error_length) {
    for (int i = 0; i < n; i++) {
        if (fds[i] >= FD_SETSIZE) {
            RB_FAIL(error, error_length, "descriptor %d is not below FD_SETSIZE (%d)", fds[i], FD_SETSIZE);
            return 1;
        }
    }
    return 0;
}

/// select's limit applies to libevent's select method too (Debian's libevent aborts past it).
static int uses_select(int kind, const char *method) {
    return kind == RB_SELECT || (kind == RB_LIBEVENT && method && strcmp(method, "select") == 0);
}

// MARK: - Ring

struct rb_ring {
    int kind, mode, n;
    int *rfd, *wfd;
    int count, fired, writes, flags;
    int waker;  // RB_WAKER: an idle eventfd in the watched set, else -1
    int limited;  // select or libevent's select method: descriptors below FD_SETSIZE only
    rb_lev_ring *lev;
    // epoll
    int epfd;
    struct epoll_event *events;
    // poll: a dense pollfd array; at[k] is the ring index in slot k, slot[i] the slot of index i.
    struct pollfd *pfds;
    int *at, *slot;
    // select
    fd_set master, work;
    int maxfd;
};

static inline void ring_handle(rb_ring *r, int idx) {
    rb_recv_byte(r->rfd[idx]);
    if (r->writes) {
        int next = idx + 1;
        if (next >= r->n) next -= r->n;
        rb_send_byte(r->wfd[next]);
        r->writes--;
        r->fired++;
    }
    r->count++;
}

static int ring_set_flags(rb_ring *r, int flags);

/// Applies the like-for-like additions (`rb_ring_new`'s `flags`) to a new ring, or frees it.
static rb_ring *with_flags(rb_ring *r, int flags, char *error, int error_length) {
    if (ring_set_flags(r, flags) == 0) return r;
    RB_FAIL(error, error_length, "the waker could not be added (errno %d)", errno);
    rb_ring_free(r);
    return NULL;
}

rb_ring *rb_ring_new(int kind, const char *method, int flags, int mode, const int *read_fds, const int *write_fds, int n,
                     char *error, int error_length) {
    rb_ring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->kind = kind;
    r->mode = mode;
    r->n = n;
    r->epfd = -1;
    r->waker = -1;
    r->limited = uses_select(kind, method);
    if (r->limited && set_too_small(read_fds, n, error, error_length)) {
        free(r);
        return NULL;
    }
    if (kind == RB_LIBEVENT) {
        r->lev = rb_lev_ring_new(method, flags, mode, read_fds, write_fds, n, error, error_length);
        if (!r->lev) {
            free(r);
            return NULL;
        }
        return with_flags(r, flags, error, error_length);
    }
    r->rfd = malloc(sizeof(int) * (size_t)n);
    r->wfd = malloc(sizeof(int) * (size_t)n);
    memcpy(r->rfd, read_fds, sizeof(int) * (size_t)n);
    memcpy(r->wfd, write_fds, sizeof(int) * (size_t)n);
    switch (kind) {
    case RB_EPOLL:
        r->epfd = epoll_create1(EPOLL_CLOEXEC);
        r->events = calloc(RB_EVENT_CAPACITY, sizeof(struct epoll_event));
        for (int i = 0; i < n; i++) {
            struct epoll_event ev = {.events = EPOLLIN | (mode == RB_RING_REARM ? EPOLLONESHOT : 0), .data.u32 = (uint32_t)i};
            if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->rfd[i], &ev) != 0) {
                RB_FAIL(error, error_length, "epoll_ctl(ADD): errno %d", errno);
                rb_ring_free(r);
                return NULL;
            }
        }
        break;
    case RB_POLL:
        r->pfds = calloc((size_t)n + 1, sizeof(struct pollfd));  // + the waker's, if any
        r->at = malloc(sizeof(int) * (size_t)n);
        r->slot = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) {
            r->pfds[i].fd = r->rfd[i];
            r->pfds[i].events = POLLIN;
            r->at[i] = i;
            r->slot[i] = i;
        }
        break;
    case RB_SELECT:
        if (set_too_small(read_fds, n, error, error_length)) {
            rb_ring_free(r);
            return NULL;
        }
        FD_ZERO(&r->master);
        r->maxfd = -1;
        for (int i = 0; i < n; i++) {
            FD_SET(r->rfd[i], &r->master);
            if (r->rfd[i] > r->maxfd) r->maxfd = r->rfd[i];
        }
        break;
    default:
        RB_FAIL(error, error_length, "unknown kind %d", kind);
        rb_ring_free(r);
        return NULL;
    }
    return with_flags(r, flags, error, error_length);
}

static int64_t ring_epoll(rb_ring *r, int64_t *waits) {
    const int rearm = r->mode == RB_RING_REARM, rereg = r->mode == RB_RING_REREGISTER;
    int64_t passes = 0, start = rb_now_ns();
    while (r->count != r->fired) {
        int n = epoll_wait(r->epfd, r->events, RB_EVENT_CAPACITY, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (++passes > RB_MAX_IDLE_PASSES) return -1;
        for (int j = 0; j < n; j++) {
            int idx = (int)r->events[j].data.u32;
            ring_handle(r, idx);
            if (rearm) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = (uint32_t)idx};
                epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->rfd[idx], &ev);
            } else if (rereg) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
                epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->rfd[idx], &ev);
                epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->rfd[idx], &ev);
            }
        }
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    return elapsed;
}

static int64_t ring_poll(rb_ring *r, int64_t *waits) {
    const int rearm = r->mode == RB_RING_REARM, rereg = r->mode == RB_RING_REREGISTER;
    const int count = r->n;
    int64_t passes = 0, start = rb_now_ns();
    while (r->count != r->fired) {
        int n = poll(r->pfds, (nfds_t)(count + (r->waker >= 0)), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (++passes > RB_MAX_IDLE_PASSES) return -1;
        for (int k = 0; k < count && n > 0;) {
            if (!r->pfds[k].revents) {
                k++;
                continue;
            }
            n--;
            r->pfds[k].revents = 0;
            int idx = r->at[k];
            if (rearm) r->pfds[k].fd = -1;  // one-shot: disarmed when it fires
            ring_handle(r, idx);
            if (rearm) {
                if (r->flags & RB_CHECKS) rb_contract_check(r->rfd[idx]);
                r->pfds[k].fd = r->rfd[idx];
                k++;
            } else if (rereg) {
                // Deregister (swap-remove) and register again (append); look at slot k again, which
                // now holds the entry that was last (with its own revents).
                int last = count - 1;
                if (r->flags & RB_CHECKS) rb_contract_check(r->rfd[idx]);
                struct pollfd moved = r->pfds[last];
                int moved_idx = r->at[last];
                r->pfds[k] = moved;
                r->at[k] = moved_idx;
                r->slot[moved_idx] = k;
                r->pfds[last].fd = r->rfd[idx];
                r->pfds[last].events = POLLIN;
                r->pfds[last].revents = 0;
                r->at[last] = idx;
                r->slot[idx] = last;
                if (k == last) k++;
            } else {
                k++;
            }
        }
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    return elapsed;
}

static int64_t ring_select(rb_ring *r, int64_t *waits) {
    const int rearm = r->mode == RB_RING_REARM, rereg = r->mode == RB_RING_REREGISTER;
    const int count = r->n;
    int64_t passes = 0, start = rb_now_ns();
    while (r->count != r->fired) {
        memcpy(&r->work, &r->master, sizeof(fd_set));
        struct timeval zero = {0, 0};
        int n = select(r->maxfd + 1, &r->work, NULL, NULL, &zero);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (++passes > RB_MAX_IDLE_PASSES) return -1;
        for (int idx = 0; idx < count && n > 0; idx++) {
            int fd = r->rfd[idx];
            if (!FD_ISSET(fd, &r->work)) continue;
            n--;
            if (rearm) FD_CLR(fd, &r->master);
            ring_handle(r, idx);
            if (rearm) {
                if (r->flags & RB_CHECKS) rb_contract_check(fd);
                FD_SET(fd, &r->master);
            } else if (rereg) {
                FD_CLR(fd, &r->master);
                if (r->flags & RB_CHECKS) rb_contract_check(fd);
                FD_SET(fd, &r->master);
            }
        }
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    return elapsed;
}

int64_t rb_ring_round(rb_ring *r, int active, int writes, int64_t *waits, int64_t *events) {
    *waits = 0;
    *events = 0;
    if (r->kind == RB_LIBEVENT) return rb_lev_ring_round(r->lev, active, writes, waits, events);
    // As test/bench.c: `active` writes spread evenly over the ring, outside the timed part.
    r->count = 0;
    r->fired = 0;
    r->writes = writes;
    int space = r->n / active;
    for (int i = 0; i < active; i++, r->fired++) rb_send_byte(r->wfd[i * space]);
    int64_t elapsed;
    switch (r->kind) {
    case RB_EPOLL: elapsed = ring_epoll(r, waits); break;
    case RB_POLL: elapsed = ring_poll(r, waits); break;
    case RB_SELECT: elapsed = ring_select(r, waits); break;
    default: return -1;
    }
    *events = r->count;
    return elapsed;
}

static int ring_set_flags(rb_ring *r, int flags) {
    r->flags = flags;
    if (r->waker < 0 && (flags & RB_WAKER)) {
        r->waker = rb_idle_fd();
        if (r->waker < 0 || (r->limited && r->waker >= FD_SETSIZE)) return -1;
    } else if (r->kind != RB_LIBEVENT) {
        return 0;
    }
    switch (r->kind) {
    case RB_LIBEVENT: return rb_lev_ring_set_flags(r->lev, flags, r->waker);
    case RB_EPOLL: {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};  // never written: never fires
        return epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->waker, &ev);
    }
    case RB_POLL:
        r->pfds[r->n].fd = r->waker;  // after the ring's entries, outside its scan
        r->pfds[r->n].events = POLLIN;
        return 0;
    case RB_SELECT:
        if (r->waker >= FD_SETSIZE) return -1;
        FD_SET(r->waker, &r->master);
        if (r->waker > r->maxfd) r->maxfd = r->waker;
        return 0;
    }
    return -1;
}

void rb_ring_free(rb_ring *r) {
    if (!r) return;
    if (r->lev) rb_lev_ring_free(r->lev);
    if (r->waker >= 0) close(r->waker);
    if (r->epfd >= 0) close(r->epfd);
    free(r->events);
    free(r->pfds);
    free(r->at);
    free(r->slot);
    free(r->rfd);
    free(r->wfd);
    free(r);
}

// MARK: - Scaling: one ready descriptor among N

struct rb_scale {
    int kind, n, active, active_fd, write_fd;
    int *fds;
    rb_lev_scale *lev;
    int epfd;
    struct epoll_event *events;
    struct pollfd *pfds;
    fd_set master, work;
    int maxfd;
};

rb_scale *rb_scale_new(int kind, const char *method, int flags, const int *fds, int n, int active_index, int write_fd,
                       char *error, int error_length) {
    rb_scale *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->kind = kind;
    s->n = n;
    s->active = active_index;
    s->active_fd = fds[active_index];
    s->write_fd = write_fd;
    s->epfd = -1;
    if (uses_select(kind, method) && set_too_small(fds, n, error, error_length)) {
        free(s);
        return NULL;
    }
    if (kind == RB_LIBEVENT) {
        s->lev = rb_lev_scale_new(method, flags, fds, n, active_index, write_fd, error, error_length);
        if (!s->lev) {
            free(s);
            return NULL;
        }
        return s;
    }
    s->fds = malloc(sizeof(int) * (size_t)n);
    memcpy(s->fds, fds, sizeof(int) * (size_t)n);
    switch (kind) {
    case RB_EPOLL:
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        s->events = calloc(RB_EVENT_CAPACITY, sizeof(struct epoll_event));
        for (int i = 0; i < n; i++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
            if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
                RB_FAIL(error, error_length, "epoll_ctl(ADD): errno %d", errno);
                rb_scale_free(s);
                return NULL;
            }
        }
        break;
    case RB_POLL:
        s->pfds = calloc((size_t)n, sizeof(struct pollfd));
        for (int i = 0; i < n; i++) {
            s->pfds[i].fd = fds[i];
            s->pfds[i].events = POLLIN;
        }
        break;
    case RB_SELECT:
        if (set_too_small(fds, n, error, error_length)) {
            rb_scale_free(s);
            return NULL;
        }
        FD_ZERO(&s->master);
        s->maxfd = -1;
        for (int i = 0; i < n; i++) {
            FD_SET(fds[i], &s->master);
            if (fds[i] > s->maxfd) s->maxfd = fds[i];
        }
        break;
    default:
        rb_scale_free(s);
        return NULL;
    }
    return s;
}

int64_t rb_scale_round(rb_scale *s, int iterations, int64_t *waits) {
    *waits = 0;
    if (s->kind == RB_LIBEVENT) return rb_lev_scale_round(s->lev, iterations, waits);
    int64_t passes = 0, start = rb_now_ns();
    for (int i = 0; i < iterations; i++) {
        rb_send_byte(s->write_fd);
        int got = 0;
        while (!got) {
            if (++passes > RB_MAX_IDLE_PASSES) return -1;
            switch (s->kind) {
            case RB_EPOLL: {
                int n = epoll_wait(s->epfd, s->events, RB_EVENT_CAPACITY, 0);
                for (int j = 0; j < n; j++) {
                    rb_recv_byte(s->fds[s->events[j].data.u32]);
                    got++;
                }
                break;
            }
            case RB_POLL: {
                int n = poll(s->pfds, (nfds_t)s->n, 0);
                for (int k = 0; k < s->n && n > 0; k++) {
                    if (!s->pfds[k].revents) continue;
                    n--;
                    rb_recv_byte(s->pfds[k].fd);
                    got++;
                }
                break;
            }
            case RB_SELECT: {
                memcpy(&s->work, &s->master, sizeof(fd_set));
                struct timeval zero = {0, 0};
                int n = select(s->maxfd + 1, &s->work, NULL, NULL, &zero);
                for (int k = 0; k < s->n && n > 0; k++) {
                    if (!FD_ISSET(s->fds[k], &s->work)) continue;
                    n--;
                    rb_recv_byte(s->fds[k]);
                    got++;
                }
                break;
            }
            default: return -1;
            }
        }
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    return elapsed;
}

void rb_scale_free(rb_scale *s) {
    if (!s) return;
    if (s->lev) rb_lev_scale_free(s->lev);
    if (s->epfd >= 0) close(s->epfd);
    free(s->events);
    free(s->pfds);
    free(s->fds);
    free(s);
}

// MARK: - Connect churn

struct rb_connect {
    int kind, listener, max;
    struct sockaddr_in address;
    rb_lev_connect *lev;
    int *fd;  // per slot: the connecting socket, or -1
    int epfd;
    struct epoll_event *events;
    struct pollfd *pfds;  // [0]: the listener; [1 + slot]: slot's socket (fd -1 while idle)
    fd_set master_read, master_write, work_read, work_write;
    int maxfd;
    // per round
    int total, started, done, succeeded, accepted, flags;
    int64_t failures;
};

#define LISTENER_TOKEN UINT32_MAX

rb_connect *rb_connect_new(int kind, const char *method, int flags, int listener, int port, int max_in_flight,
                           char *error, int error_length) {
    rb_connect *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = kind;
    c->listener = listener;
    c->max = max_in_flight;
    c->flags = flags;
    c->epfd = -1;
    if (uses_select(kind, method) && set_too_small(&listener, 1, error, error_length)) {
        free(c);
        return NULL;
    }
    if (kind == RB_LIBEVENT) {
        c->lev = rb_lev_connect_new(method, flags, listener, port, max_in_flight, error, error_length);
        if (!c->lev) {
            free(c);
            return NULL;
        }
        return c;
    }
    c->address.sin_family = AF_INET;
    c->address.sin_port = htons((uint16_t)port);
    c->address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = malloc(sizeof(int) * (size_t)max_in_flight);
    for (int i = 0; i < max_in_flight; i++) c->fd[i] = -1;
    switch (kind) {
    case RB_EPOLL: {
        c->epfd = epoll_create1(EPOLL_CLOEXEC);
        c->events = calloc(RB_EVENT_CAPACITY, sizeof(struct epoll_event));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER_TOKEN};
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, listener, &ev) != 0) {
            RB_FAIL(error, error_length, "epoll_ctl(ADD listener): errno %d", errno);
            rb_connect_free(c);
            return NULL;
        }
        break;
    }
    case RB_POLL:
        c->pfds = calloc((size_t)max_in_flight + 1, sizeof(struct pollfd));
        c->pfds[0].fd = listener;
        c->pfds[0].events = POLLIN;
        for (int i = 0; i < max_in_flight; i++) {
            c->pfds[1 + i].fd = -1;
            c->pfds[1 + i].events = POLLOUT;
        }
        break;
    case RB_SELECT:
        if (listener >= FD_SETSIZE) {
            RB_FAIL(error, error_length, "listener %d is not below FD_SETSIZE", listener);
            rb_connect_free(c);
            return NULL;
        }
        FD_ZERO(&c->master_read);
        FD_ZERO(&c->master_write);
        FD_SET(listener, &c->master_read);
        c->maxfd = listener;
        break;
    default:
        rb_connect_free(c);
        return NULL;
    }
    return c;
}

static void connect_finish(rb_connect *c, int slot, int registered);

/// Starts connects in `slot` until one is in progress (or all were started).
static void connect_start(rb_connect *c, int slot) {
    while (c->started < c->total) {
        c->started++;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->failures++;
            c->done++;
            continue;
        }
        if (c->kind == RB_SELECT && fd >= FD_SETSIZE) {
            close(fd);
            c->failures++;
            c->done++;
            continue;
        }
        c->fd[slot] = fd;
        if (connect(fd, (struct sockaddr *)&c->address, sizeof c->address) == 0) {
            connect_finish(c, slot, 0);  // connected at once: still confirmed by SO_ERROR
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR) {
            rb_abort_close(fd);
            c->fd[slot] = -1;
            c->failures++;
            c->done++;
            continue;
        }
        if ((c->flags & RB_CHECKS) && rb_contract_check(fd) != 0) {
            rb_abort_close(fd);
            c->fd[slot] = -1;
            c->failures++;
            c->done++;
            continue;
        }
        switch (c->kind) {
        case RB_EPOLL: {
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)slot};
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
            break;
        }
        case RB_POLL: c->pfds[1 + slot].fd = fd; break;
        case RB_SELECT:
            FD_SET(fd, &c->master_write);
            if (fd > c->maxfd) c->maxfd = fd;
            break;
        }
        return;
    }
}

/// The socket in `slot` woke up (or connected at once): confirm with SO_ERROR, deregister, close.
static void connect_finish(rb_connect *c, int slot, int registered) {
    int fd = c->fd[slot];
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0) value = errno;
    if (value == 0 && (c->flags & RB_NAMES) && rb_confirm_names(fd) != 0) value = -1;
    if (value == 0) {
        c->succeeded++;
    } else {
        c->failures++;
    }
    if (registered) {
        switch (c->kind) {
        case RB_EPOLL: epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL); break;
        case RB_POLL: c->pfds[1 + slot].fd = -1; break;
        case RB_SELECT: FD_CLR(fd, &c->master_write); break;
        }
    }
    rb_abort_close(fd);
    c->fd[slot] = -1;
    c->done++;
}

int64_t rb_connect_round(rb_connect *c, int total, int in_flight, int64_t *failures, int64_t *waits,
                         int64_t *unaccepted, int64_t deadline_ns) {
    *failures = 0;
    *waits = 0;
    *unaccepted = 0;
    if (c->kind == RB_LIBEVENT)
        return rb_lev_connect_round(c->lev, total, in_flight, failures, waits, unaccepted, deadline_ns);
    if (in_flight > c->max) return -1;
    c->total = total;
    c->started = c->done = c->succeeded = c->accepted = 0;
    c->failures = 0;
    int64_t passes = 0, start = rb_now_ns();
    for (int s = 0; s < in_flight; s++) connect_start(c, s);
    int64_t last = rb_now_ns();
    while (c->done < c->total || c->accepted < c->succeeded) {
        if (rb_now_ns() > deadline_ns) return -1;
        passes++;
        const int timeout_ms = c->done < c->total ? 1000 : RB_ACCEPT_GRACE_MS;
        int n = 0;
        switch (c->kind) {
        case RB_EPOLL: {
            n = epoll_wait(c->epfd, c->events, RB_EVENT_CAPACITY, timeout_ms);
            for (int j = 0; j < n; j++) {
                uint32_t token = c->events[j].data.u32;
                if (token == LISTENER_TOKEN) {
                    c->accepted += rb_accept_drain(c->listener);
                } else {
                    connect_finish(c, (int)token, 1);
                    connect_start(c, (int)token);
                }
            }
            break;
        }
        case RB_POLL: {
            n = poll(c->pfds, (nfds_t)(in_flight + 1), timeout_ms);
            int left = n;
            for (int k = 0; k <= in_flight && left > 0; k++) {
                if (!c->pfds[k].revents) continue;
                left--;
                c->pfds[k].revents = 0;
                if (k == 0) {
                    c->accepted += rb_accept_drain(c->listener);
                } else {
                    connect_finish(c, k - 1, 1);
                    connect_start(c, k - 1);
                }
            }
            break;
        }
        case RB_SELECT: {
            memcpy(&c->work_read, &c->master_read, sizeof(fd_set));
            memcpy(&c->work_write, &c->master_write, sizeof(fd_set));
            struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            n = select(c->maxfd + 1, &c->work_read, &c->work_write, NULL, &tv);
            int left = n;
            if (left > 0 && FD_ISSET(c->listener, &c->work_read)) {
                left--;
                c->accepted += rb_accept_drain(c->listener);
            }
            for (int s = 0; s < in_flight && left > 0; s++) {
                int fd = c->fd[s];
                if (fd < 0 || !FD_ISSET(fd, &c->work_write)) continue;
                left--;
                connect_finish(c, s, 1);
                connect_start(c, s);
            }
            break;
        }
        }
        if (n > 0) {
            last = rb_now_ns();
        } else if (n == 0 && c->done == c->total) {
            break;  // every connect is done and no accept came for the grace period
        }
    }
    *failures = c->failures;
    *waits = passes;
    *unaccepted = c->succeeded > c->accepted ? c->succeeded - c->accepted : 0;
    return last - start;
}

void rb_connect_free(rb_connect *c) {
    if (!c) return;
    if (c->lev) rb_lev_connect_free(c->lev);
    if (c->fd) {
        for (int i = 0; i < c->max; i++)
            if (c->fd[i] >= 0) close(c->fd[i]);
    }
    if (c->epfd >= 0) close(c->epfd);
    free(c->events);
    free(c->pfds);
    free(c->fd);
    free(c);
}

// MARK: - Client-only connect churn (the async benchmark's C loop)

typedef struct {
    int epfd, *fd, port, started, done, total;
    int64_t failures;
} client_churn;

/// SO_ERROR, then the names; deregistered before the close.
static void client_finish(client_churn *c, int fd, int registered) {
    if (rb_socket_error(fd) != 0 || rb_confirm_names(fd) != 0) c->failures++;
    if (registered) epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    c->done++;
}

/// Starts connects in `slot` until one is in progress (or all were started).
static void client_start(client_churn *c, int slot) {
    c->fd[slot] = -1;
    while (c->started < c->total) {
        c->started++;
        int fd;
        int e = rb_tcp_connect(c->port, &fd);  // socket (non-blocking, close-on-exec) and connect
        if (fd >= 0 && e == 0) {
            client_finish(c, fd, 0);  // connected at once: still confirmed by SO_ERROR
        } else if (fd < 0 || (e != EINPROGRESS && e != EINTR)) {
            if (fd >= 0) close(fd);
            c->failures++;
            c->done++;
        } else {
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)slot};
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
            c->fd[slot] = fd;
            return;
        }
    }
}

int64_t rb_client_connect_churn(int port, int total, int in_flight) {
    if (in_flight < 1 || in_flight > 65536) return -1;
    client_churn c = {.port = port, .total = total};
    c.epfd = epoll_create1(EPOLL_CLOEXEC);
    c.fd = malloc(sizeof(int) * (size_t)in_flight);
    if (c.epfd < 0 || !c.fd) {
        if (c.epfd >= 0) close(c.epfd);
        free(c.fd);
        return -1;
    }
    struct epoll_event events[256];
    for (int s = 0; s < in_flight; s++) client_start(&c, s);
    int64_t result = 0;
    while (c.done < c.total) {
        int n = epoll_wait(c.epfd, events, 256, 5000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            result = -1;
            break;
        }
        for (int j = 0; j < n; j++) {
            int slot = (int)events[j].data.u32;
            client_finish(&c, c.fd[slot], 1);
            client_start(&c, slot);
        }
    }
    for (int s = 0; s < in_flight; s++)
        if (c.fd[s] >= 0) close(c.fd[s]);
    close(c.epfd);
    free(c.fd);
    return result < 0 ? -1 : c.failures;
}
