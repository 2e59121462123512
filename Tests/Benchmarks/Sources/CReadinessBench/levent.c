// libevent's own event loop driven from C: what a user would write instead of Readiness. Events are
// created once at registration (outside the timed part) and the work is done in the callbacks, as in
// libevent's test/bench.c.
#include <sys/select.h>  // first: libevent's event-config.h defines _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "CReadinessBench.h"
#include "internal.h"

static void quiet(int severity, const char *msg) { (void)severity; (void)msg; }

const char *rb_libevent_version(void) { return event_get_version(); }

int rb_libevent_supports(const char *method) {
    const char **methods = event_get_supported_methods();
    for (int i = 0; methods && methods[i]; i++)
        if (strcmp(methods[i], method) == 0) return 1;
    return 0;
}

/// A base with `method` (NULL: libevent's own choice), ignoring EVENT_* environment variables.
static struct event_base *make_base(const char *method, int flags, char *error, int error_length) {
    event_set_log_callback(quiet);
    if (method && !rb_libevent_supports(method)) {
        RB_FAIL(error, error_length, "libevent %s has no %s method", event_get_version(), method);
        return NULL;
    }
    struct event_config *cfg = event_config_new();
    if (!cfg) return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV);
    if (flags & RB_PRECISE) event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    if (method) {
        const char **methods = event_get_supported_methods();
        for (int i = 0; methods && methods[i]; i++)
            if (strcmp(methods[i], method) != 0) event_config_avoid_method(cfg, methods[i]);
    }
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base) RB_FAIL(error, error_length, "event_base_new_with_config failed (%s)", method ? method : "default");
    return base;
}

const char *rb_libevent_default_method(void) {
    static char name[32];
    struct event_base *base = make_base(NULL, 0, NULL, 0);
    if (!base) return "unavailable";
    strncpy(name, event_base_get_method(base), sizeof name - 1);
    event_base_free(base);
    return name;
}

// MARK: - Ring

typedef struct {
    rb_lev_ring *ring;
    int idx;
} ring_arg;

struct rb_lev_ring {
    struct event_base *base;
    struct event **events;
    ring_arg *args;
    int *rfd, *wfd;
    int n, mode, count, fired, writes, flags;
    struct event *waker;
};

static void ring_cb(evutil_socket_t fd, short which, void *arg) {
    (void)which;
    ring_arg *a = arg;
    rb_lev_ring *r = a->ring;
    int idx = a->idx;
    if (r->flags & RB_OPEN_CHECK) rb_check_fd((int)fd);
    rb_recv_byte((int)fd);
    if (r->writes) {
        int next = idx + 1;
        if (next >= r->n) next -= r->n;
        rb_send_byte(r->wfd[next]);
        r->writes--;
        r->fired++;
    }
    r->count++;
    if (r->mode == RB_RING_REARM) {
        if (r->flags & RB_CHECKS) rb_contract_check((int)fd);
        event_add(r->events[idx], NULL);  // a non-persistent event is removed when it fires
    } else if (r->mode == RB_RING_REREGISTER) {
        event_del(r->events[idx]);
        if (r->flags & RB_CHECKS) rb_contract_check((int)fd);
        event_add(r->events[idx], NULL);
    }
}

rb_lev_ring *rb_lev_ring_new(const char *method, int flags, int mode, const int *read_fds, const int *write_fds, int n,
                             char *error, int error_length) {
    rb_lev_ring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->base = make_base(method, flags, error, error_length);
    if (!r->base) {
        free(r);
        return NULL;
    }
    r->n = n;
    r->mode = mode;
    r->events = calloc((size_t)n, sizeof(struct event *));
    r->args = calloc((size_t)n, sizeof(ring_arg));
    r->rfd = malloc(sizeof(int) * (size_t)n);
    r->wfd = malloc(sizeof(int) * (size_t)n);
    memcpy(r->rfd, read_fds, sizeof(int) * (size_t)n);
    memcpy(r->wfd, write_fds, sizeof(int) * (size_t)n);
    short what = EV_READ | (mode == RB_RING_REARM ? 0 : EV_PERSIST);
    for (int i = 0; i < n; i++) {
        r->args[i].ring = r;
        r->args[i].idx = i;
        r->events[i] = event_new(r->base, read_fds[i], what, ring_cb, &r->args[i]);
        if (!r->events[i] || event_add(r->events[i], NULL) != 0) {
            RB_FAIL(error, error_length, "event_new/event_add failed for descriptor %d", read_fds[i]);
            rb_lev_ring_free(r);
            return NULL;
        }
    }
    return r;
}

int64_t rb_lev_ring_round(rb_lev_ring *r, int active, int writes, int64_t *waits, int64_t *events) {
    r->count = 0;
    r->fired = 0;
    r->writes = writes;
    int space = r->n / active;
    for (int i = 0; i < active; i++, r->fired++) rb_send_byte(r->wfd[i * space]);
    int64_t passes = 0, start = rb_now_ns();
    while (r->count != r->fired) {
        if (event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0) return -1;
        if (++passes > RB_MAX_IDLE_PASSES) return -1;
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    *events = r->count;
    return elapsed;
}

static void waker_cb(evutil_socket_t fd, short which, void *arg) {
    (void)fd;
    (void)which;
    (void)arg;
}

int rb_lev_ring_set_flags(rb_lev_ring *r, int flags, int waker_fd) {
    r->flags = flags;
    if (!(flags & RB_WAKER) || r->waker) return 0;
    r->waker = event_new(r->base, waker_fd, EV_READ | EV_PERSIST, waker_cb, NULL);
    return r->waker && event_add(r->waker, NULL) == 0 ? 0 : -1;
}

void rb_lev_ring_free(rb_lev_ring *r) {
    if (!r) return;
    if (r->waker) event_free(r->waker);
    for (int i = 0; i < r->n && r->events; i++)
        if (r->events[i]) event_free(r->events[i]);
    if (r->base) event_base_free(r->base);
    free(r->events);
    free(r->args);
    free(r->rfd);
    free(r->wfd);
    free(r);
}

// MARK: - Scaling

struct rb_lev_scale {
    struct event_base *base;
    struct event **events;
    int n, write_fd, got, flags;
};

static void scale_cb(evutil_socket_t fd, short which, void *arg) {
    (void)which;
    rb_lev_scale *s = arg;
    if (s->flags & RB_OPEN_CHECK) rb_check_fd((int)fd);
    rb_recv_byte((int)fd);
    s->got++;
}

rb_lev_scale *rb_lev_scale_new(const char *method, int flags, const int *fds, int n, int active_index, int write_fd,
                               char *error, int error_length) {
    (void)active_index;
    rb_lev_scale *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = make_base(method, flags, error, error_length);
    if (!s->base) {
        free(s);
        return NULL;
    }
    s->n = n;
    s->flags = flags;
    s->write_fd = write_fd;
    s->events = calloc((size_t)n, sizeof(struct event *));
    for (int i = 0; i < n; i++) {
        s->events[i] = event_new(s->base, fds[i], EV_READ | EV_PERSIST, scale_cb, s);
        if (!s->events[i] || event_add(s->events[i], NULL) != 0) {
            RB_FAIL(error, error_length, "event_new/event_add failed for descriptor %d", fds[i]);
            rb_lev_scale_free(s);
            return NULL;
        }
    }
    return s;
}

int64_t rb_lev_scale_round(rb_lev_scale *s, int iterations, int64_t *waits) {
    int64_t passes = 0, start = rb_now_ns();
    for (int i = 0; i < iterations; i++) {
        rb_send_byte(s->write_fd);
        s->got = 0;
        while (!s->got) {
            if (++passes > RB_MAX_IDLE_PASSES) return -1;
            if (event_base_loop(s->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0) return -1;
        }
    }
    int64_t elapsed = rb_now_ns() - start;
    *waits = passes;
    return elapsed;
}

void rb_lev_scale_free(rb_lev_scale *s) {
    if (!s) return;
    for (int i = 0; i < s->n && s->events; i++)
        if (s->events[i]) event_free(s->events[i]);
    if (s->base) event_base_free(s->base);
    free(s->events);
    free(s);
}

// MARK: - Connect churn

typedef struct {
    rb_lev_connect *c;
    int slot;
    int fd;
    struct event *ev;  // event_assign'ed into preallocated storage: no allocation per connect
} connect_slot;

struct rb_lev_connect {
    struct event_base *base;
    struct event *accept_ev, *tick;
    int listener, max;
    struct sockaddr_in address;
    connect_slot *slots;
    char *event_storage;
    int total, started, done, succeeded, accepted, flags, select_method;
    int64_t failures;
};

static void lev_connect_start(rb_lev_connect *c, int slot);

static void lev_connect_cb(evutil_socket_t fd, short which, void *arg) {
    (void)which;
    connect_slot *s = arg;
    rb_lev_connect *c = s->c;
    if (c->flags & RB_OPEN_CHECK) rb_check_fd((int)fd);
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt((int)fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0) value = errno;
    if (value == 0 && (c->flags & RB_NAMES) && rb_confirm_names((int)fd) != 0) value = -1;
    if (value == 0) {
        c->succeeded++;
    } else {
        c->failures++;
    }
    // The event was not persistent: libevent already removed it from the kernel when it fired.
    rb_abort_close((int)fd);
    s->fd = -1;
    c->done++;
    lev_connect_start(c, s->slot);
}

static void lev_accept_cb(evutil_socket_t fd, short which, void *arg) {
    (void)which;
    rb_lev_connect *c = arg;
    c->accepted += rb_accept_drain((int)fd);
}

static void lev_tick_cb(evutil_socket_t fd, short which, void *arg) {
    (void)fd;
    (void)which;
    (void)arg;
}

static void lev_connect_start(rb_lev_connect *c, int slot) {
    connect_slot *s = &c->slots[slot];
    while (c->started < c->total) {
        c->started++;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->failures++;
            c->done++;
            continue;
        }
        if (c->select_method && fd >= FD_SETSIZE) {  // as the raw select loop: libevent would abort
            close(fd);
            c->failures++;
            c->done++;
            continue;
        }
        int result = connect(fd, (struct sockaddr *)&c->address, sizeof c->address);
        if (result != 0 && errno != EINPROGRESS && errno != EINTR) {
            rb_abort_close(fd);
            c->failures++;
            c->done++;
            continue;
        }
        s->fd = fd;
        // Connected at once or in progress: either way the event fires (a connected socket is
        // writable) and SO_ERROR confirms.
        if ((c->flags & RB_CHECKS) && rb_contract_check(fd) != 0) {
            rb_abort_close(fd);
            s->fd = -1;
            c->failures++;
            c->done++;
            continue;
        }
        event_assign(s->ev, c->base, fd, EV_WRITE, lev_connect_cb, s);
        event_add(s->ev, NULL);
        return;
    }
}

rb_lev_connect *rb_lev_connect_new(const char *method, int flags, int listener, int port, int max_in_flight, char *error,
                                   int error_length) {
    rb_lev_connect *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->select_method = method && strcmp(method, "select") == 0;
    c->flags = flags;
    c->base = make_base(method, flags, error, error_length);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->listener = listener;
    c->max = max_in_flight;
    c->address.sin_family = AF_INET;
    c->address.sin_port = htons((uint16_t)port);
    c->address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->slots = calloc((size_t)max_in_flight, sizeof(connect_slot));
    size_t size = event_get_struct_event_size();
    c->event_storage = calloc((size_t)max_in_flight, size);
    for (int i = 0; i < max_in_flight; i++) {
        c->slots[i].c = c;
        c->slots[i].slot = i;
        c->slots[i].fd = -1;
        c->slots[i].ev = (struct event *)(c->event_storage + size * (size_t)i);
    }
    c->accept_ev = event_new(c->base, listener, EV_READ | EV_PERSIST, lev_accept_cb, c);
    // A one-second tick keeps every loop pass bounded, as the raw loops' 1 s timeout does.
    c->tick = event_new(c->base, -1, EV_PERSIST, lev_tick_cb, c);
    struct timeval second = {1, 0};
    if (!c->accept_ev || event_add(c->accept_ev, NULL) != 0 || !c->tick || event_add(c->tick, &second) != 0) {
        RB_FAIL(error, error_length, "event_add(listener) failed");
        rb_lev_connect_free(c);
        return NULL;
    }
    return c;
}

int64_t rb_lev_connect_round(rb_lev_connect *c, int total, int in_flight, int64_t *failures, int64_t *waits,
                             int64_t *unaccepted, int64_t deadline_ns) {
    if (in_flight > c->max) return -1;
    c->total = total;
    c->started = c->done = c->succeeded = c->accepted = 0;
    c->failures = 0;
    int64_t passes = 0, start = rb_now_ns();
    for (int s = 0; s < in_flight; s++) lev_connect_start(c, s);
    int64_t last = rb_now_ns();
    while (c->done < c->total || c->accepted < c->succeeded) {
        int64_t now = rb_now_ns();
        if (now > deadline_ns) return -1;
        int before = c->done + c->accepted;
        passes++;
        if (c->done < c->total) {
            if (event_base_loop(c->base, EVLOOP_ONCE) < 0) return -1;
        } else {
            // Every connect is done: look (without blocking) for the accepts still owed, for at most
            // the grace period after the last one.
            if (now - last > (int64_t)RB_ACCEPT_GRACE_MS * 1000000) break;
            if (event_base_loop(c->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0) return -1;
        }
        if (c->done + c->accepted != before) last = rb_now_ns();
    }
    *failures = c->failures;
    *waits = passes;
    *unaccepted = c->succeeded > c->accepted ? c->succeeded - c->accepted : 0;
    return last - start;
}

void rb_lev_connect_free(rb_lev_connect *c) {
    if (!c) return;
    for (int i = 0; i < c->max && c->slots; i++) {
        if (c->slots[i].fd >= 0) {
            event_del(c->slots[i].ev);
            close(c->slots[i].fd);
        }
    }
    if (c->accept_ev) event_free(c->accept_ev);
    if (c->tick) event_free(c->tick);
    if (c->base) event_base_free(c->base);
    free(c->slots);
    free(c->event_storage);
    free(c);
}
