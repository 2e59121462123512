// Compiled only with the Libevent trait (Package.swift defines READINESS_LIBEVENT); without it, empty.
#ifdef READINESS_LIBEVENT
#include <sys/select.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include "CLibevent.h"
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <unistd.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <event2/event.h>

struct rd_lev {
    struct event_base *base;
    struct event *timer;
    int *fired_fd;
    short *fired_what;
    int fired, capacity;
    /* A reinit hit a fatal error: the base is half rebuilt and must not be used or freed. */
    int broken;
    /* CPU time of the calling thread during the last loop pass (to tell a spinning pass). */
    int64_t last_loop_cpu_ns;
};

struct rd_lev_reg {
    rd_lev *lev;
    struct event *ev;
    int fd;
    /* The last change's delete was refused by the kernel (the epoll method: the number was closed, or
     * names another file now), read by rd_lev_reg_change_refused_delete. */
    int delete_refused;
};

static void rd_lev_quiet(int severity, const char *msg) { (void)severity; (void)msg; }

/* libevent ends the process on a "fatal" error (exit(1) after its fatal callback), and creating a base
 * is one: its signal pipe failing with EMFILE is fatal in poll_init/select_init. A library must never
 * end its host. Base creation checks first that the descriptors it needs are there; should another
 * thread take them in between, the fatal callback jumps back out of libevent to this thread's
 * creation, which fails with EMFILE (leaking the half-made base's memory, never the process). Outside
 * a guarded creation the callback returns, and libevent does what it always did. */
static __thread jmp_buf *rd_lev_escape;
static void rd_lev_fatal(int code) {
    (void)code;
    if (rd_lev_escape) longjmp(*rd_lev_escape, 1);
}

/* libevent 2.1's event_get_supported_methods() frees and rebuilds a static array on every call, so two
 * threads making pollers at once read freed memory or free it twice (found by FlyingFox's suite on the
 * forced methods). The list is read once, in the one-time set-up, and kept here. */
enum { RD_LEV_MAX_METHODS = 16, RD_LEV_METHOD_NAME = 32 };
static char rd_lev_methods[RD_LEV_MAX_METHODS][RD_LEV_METHOD_NAME];
static int rd_lev_method_count;

static pthread_once_t rd_lev_once = PTHREAD_ONCE_INIT;
static void rd_lev_setup(void) {
    event_set_log_callback(rd_lev_quiet);
    event_set_fatal_callback(rd_lev_fatal);
    const char **methods = event_get_supported_methods();
    for (int i = 0; methods && methods[i] && rd_lev_method_count < RD_LEV_MAX_METHODS; i++) {
        snprintf(rd_lev_methods[rd_lev_method_count], RD_LEV_METHOD_NAME, "%s", methods[i]);
        rd_lev_method_count++;
    }
}

/* The most descriptors a base takes: the method's own (epoll set, its timerfd) and the signal pipe. */
enum { RD_LEV_BASE_DESCRIPTORS = 4 };

/* 0 when `count` descriptors can be opened now (they are closed again), else -1 with errno. */
static int rd_lev_descriptors_available(int count) {
    int fds[RD_LEV_BASE_DESCRIPTORS];
    int opened = 0, failure = 0;
    while (opened < count) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0) { failure = errno; break; }
        fds[opened++] = fd;
    }
    while (opened > 0) close(fds[--opened]);
    if (failure) { errno = failure; return -1; }
    return 0;
}

int rd_lev_fd_setsize(void) { return FD_SETSIZE; }

const char *rd_lev_version(void) { return event_get_version(); }

int rd_lev_supports_method(const char *method) {
    pthread_once(&rd_lev_once, rd_lev_setup);
    for (int i = 0; i < rd_lev_method_count; i++)
        if (strcmp(rd_lev_methods[i], method) == 0) return 1;
    return 0;
}

static void rd_lev_timer_fired(evutil_socket_t fd, short what, void *arg) { (void)fd; (void)what; (void)arg; }

/* A base of `method` (NULL: libevent's choice) with this package's flags, or NULL with *code (an errno, or
 * 0 for a method that is not there) and a message in `error`. */
static struct event_base *rd_lev_make_base(const char *method, char *error, int error_length, int *code) {
    pthread_once(&rd_lev_once, rd_lev_setup);
    *code = 0;
    if (method && !rd_lev_supports_method(method)) {
        snprintf(error, (size_t)error_length, "libevent %s was built without the %s method", event_get_version(), method);
        return NULL;
    }
    if (rd_lev_descriptors_available(RD_LEV_BASE_DESCRIPTORS) != 0) {
        *code = errno;
        snprintf(error, (size_t)error_length, "no descriptor left for libevent's base: %s", strerror(errno));
        return NULL;
    }
    struct event_config *cfg = event_config_new();
    if (!cfg) { *code = ENOMEM; snprintf(error, (size_t)error_length, "event_config_new failed"); return NULL; }
    /* PRECISE_TIMER: CLOCK_MONOTONIC (and a timerfd for epoll), not the 4 ms coarse clock, so that
     * timeouts keep the resolution the capabilities state. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_IGNORE_ENV | EVENT_BASE_FLAG_PRECISE_TIMER);
    if (method) {
        for (int i = 0; i < rd_lev_method_count; i++)
            if (strcmp(rd_lev_methods[i], method) != 0) event_config_avoid_method(cfg, rd_lev_methods[i]);
    }
    jmp_buf escape;
    struct event_base *volatile base = NULL;
    if (setjmp(escape) == 0) {
        rd_lev_escape = &escape;
        base = event_base_new_with_config(cfg);
        rd_lev_escape = NULL;
    } else {
        rd_lev_escape = NULL;
        event_config_free(cfg);
        *code = EMFILE;
        snprintf(error, (size_t)error_length, "libevent's base creation hit a fatal error (descriptors exhausted)");
        return NULL;
    }
    event_config_free(cfg);
    if (!base) {
        *code = errno == EMFILE || errno == ENFILE || errno == ENOMEM ? errno : 0;
        snprintf(error, (size_t)error_length, "event_base_new_with_config failed for method %s", method ? method : "(default)");
        return NULL;
    }
    return base;
}

rd_lev *rd_lev_new(const char *method, char *error, int error_length, int *code) {
    struct event_base *base = rd_lev_make_base(method, error, error_length, code);
    if (!base) return NULL;
    rd_lev *lev = calloc(1, sizeof *lev);
    if (lev) lev->timer = evtimer_new(base, rd_lev_timer_fired, lev);
    if (!lev || !lev->timer || rd_lev_reserve(lev, 64) != 0) {
        if (lev && lev->timer) event_free(lev->timer);
        if (lev) { free(lev->fired_fd); free(lev->fired_what); free(lev); }
        event_base_free(base);
        snprintf(error, (size_t)error_length, "out of memory");
        return NULL;
    }
    lev->base = base;
    return lev;
}

void rd_lev_free(rd_lev *lev) {
    if (!lev) return;
    if (!lev->broken) {
        event_free(lev->timer);
        event_base_free(lev->base);
    }
    free(lev->fired_fd);
    free(lev->fired_what);
    free(lev);
}

const char *rd_lev_method(const rd_lev *lev) { return event_base_get_method(lev->base); }

int rd_lev_features(const rd_lev *lev) {
    int f = event_base_get_features(lev->base), out = 0;
    if (f & EV_FEATURE_ET) out |= RD_LEV_FEATURE_ET;
    if (f & EV_FEATURE_O1) out |= RD_LEV_FEATURE_O1;
    if (f & EV_FEATURE_FDS) out |= RD_LEV_FEATURE_FDS;
    if (f & EV_FEATURE_EARLY_CLOSE) out |= RD_LEV_FEATURE_EARLY_CLOSE;
    return out;
}

int rd_lev_reserve(rd_lev *lev, int count) {
    if (count <= lev->capacity) return 0;
    int capacity = lev->capacity ? lev->capacity : 64;
    while (capacity < count) capacity *= 2;
    int *fds = realloc(lev->fired_fd, sizeof(int) * (size_t)capacity);
    if (!fds) return -1;
    lev->fired_fd = fds;
    short *what = realloc(lev->fired_what, sizeof(short) * (size_t)capacity);
    if (!what) return -1;
    lev->fired_what = what;
    lev->capacity = capacity;
    return 0;
}

static void rd_lev_fired(evutil_socket_t fd, short what, void *arg) {
    rd_lev_reg *reg = arg;
    rd_lev *lev = reg->lev;
    /* libevent deletes a fired event that is not persistent (a one-shot) just before this call, and
     * ignores the kernel's refusal (the epoll method: the number was closed, a dup keeping the file in
     * the set); errno, cleared before the loop and after every call here, is what that delete left. */
    int refused = !(event_get_events(reg->ev) & EV_PERSIST) && (errno == ENOENT || errno == EBADF || errno == EPERM);
    errno = 0;
    if (lev->fired >= lev->capacity) return; /* cannot happen: capacity covers every registration */
    short bits = refused ? RD_LEV_DELETE_REFUSED : 0;
    if (what & EV_READ) bits |= RD_LEV_READ;
    if (what & EV_WRITE) bits |= RD_LEV_WRITE;
    if (what & EV_CLOSED) bits |= RD_LEV_CLOSED;
    lev->fired_fd[lev->fired] = (int)fd;
    lev->fired_what[lev->fired] = bits;
    lev->fired++;
}

static short rd_lev_what(int interest, int trigger, int early_close) {
    short what = 0;
    if (interest & RD_LEV_READ) what |= EV_READ | (early_close ? EV_CLOSED : 0);
    if (interest & RD_LEV_WRITE) what |= EV_WRITE;
    if (trigger != RD_LEV_ONESHOT) what |= EV_PERSIST;
    if (trigger == RD_LEV_EDGE) what |= EV_ET;
    return what;
}

rd_lev_reg *rd_lev_reg_new(rd_lev *lev, int fd, int interest, int trigger, int early_close) {
    if (lev->broken) { errno = EBADFD; return NULL; }
    rd_lev_reg *reg = calloc(1, sizeof *reg);
    if (!reg) { errno = ENOMEM; return NULL; }
    reg->lev = lev;
    reg->fd = fd;
    reg->ev = event_new(lev->base, fd, rd_lev_what(interest, trigger, early_close), rd_lev_fired, reg);
    if (!reg->ev) { free(reg); errno = ENOMEM; return NULL; }
    if (event_add(reg->ev, NULL) != 0) {
        int saved = errno;
        event_free(reg->ev);
        free(reg);
        errno = saved ? saved : EINVAL;
        return NULL;
    }
    return reg;
}

int rd_lev_reg_change(rd_lev_reg *reg, int interest, int trigger, int early_close) {
    if (reg->lev->broken) { errno = EBADFD; return -1; }
    /* The event as it was, put back if the new one cannot be added (ENOMEM, ENOSPC): a failed change
     * leaves the registration watched as before (the contract's rollback). */
    short old_what = event_get_events(reg->ev);
    int was_pending = event_pending(reg->ev, EV_READ | EV_WRITE, NULL) != 0;   /* a fired one-shot is not */
    /* As in rd_lev_reg_remove: errno is what the kernel said to the epoll method's delete. */
    errno = 0;
    event_del(reg->ev);
    reg->delete_refused = was_pending && (errno == ENOENT || errno == EBADF || errno == EPERM);
    if (event_assign(reg->ev, reg->lev->base, reg->fd, rd_lev_what(interest, trigger, early_close), rd_lev_fired, reg) == 0
        && event_add(reg->ev, NULL) == 0)
        return 0;
    int saved = errno;
    if (event_assign(reg->ev, reg->lev->base, reg->fd, old_what, rd_lev_fired, reg) == 0 && was_pending)
        (void)event_add(reg->ev, NULL);
    errno = saved;
    return -1;
}

int rd_lev_is_broken(const rd_lev *lev) { return lev->broken; }

int rd_lev_reinit(rd_lev *lev) {
    if (lev->broken) { errno = EBADFD; return -1; }
    /* event_reinit closes the method's descriptors before it makes new ones, so it needs none spare;
     * a fatal error all the same (another thread took them) leaves the base unusable, not the
     * process ended. */
    jmp_buf escape;
    volatile int result = -1;
    if (setjmp(escape) == 0) {
        rd_lev_escape = &escape;
        result = event_reinit(lev->base);
        rd_lev_escape = NULL;
    } else {
        rd_lev_escape = NULL;
        lev->broken = 1;
        errno = EMFILE;
        return -1;
    }
    return result;
}

/* libevent 2.1's event_reinit closes the signal pipe twice: once itself, then again in the epoll
 * method's dealloc (evsig_dealloc_), the numbers not reset in between. In a process with other threads,
 * a descriptor one of them opened between the two closes got that number and was closed by libevent
 * (outside reader). So event_reinit serves only a forked child, which has one thread; a running
 * process's rebuild makes a new base (its own epoll set, timerfd and pipe), moves every event to it
 * (those that were pending are added there, the others only assigned), and frees the old base, which
 * closes each of its descriptors once. Returns 0; -2 with errno when the new base could not be made
 * (nothing changed then); -1 with errno when an event could not be added to it (that one is left
 * unadded, as event_reinit leaves a re-add that fails; the others are moved). */
int rd_lev_rebuild(rd_lev *lev, rd_lev_reg *const *regs, int count) {
    if (lev->broken) { errno = EBADFD; return -1; }
    char error[256];
    int code = 0;
    struct event_base *fresh = rd_lev_make_base(event_base_get_method(lev->base), error, (int)sizeof error, &code);
    if (!fresh) { errno = code ? code : EIO; return -2; }
    struct event *timer = evtimer_new(fresh, rd_lev_timer_fired, lev);
    if (!timer) { event_base_free(fresh); errno = ENOMEM; return -2; }
    int failure = 0;
    for (int i = 0; i < count; i++) {
        struct event *ev = regs[i]->ev;
        short what = event_get_events(ev);
        int pending = event_pending(ev, EV_READ | EV_WRITE | EV_CLOSED, NULL) != 0;
        event_del(ev);   /* from the old base (a kernel refusal is why the rebuild is made) */
        if (event_assign(ev, fresh, regs[i]->fd, what, rd_lev_fired, regs[i]) != 0) { failure = EINVAL; continue; }
        errno = 0;
        if (pending && event_add(ev, NULL) != 0 && !failure) failure = errno ? errno : EINVAL;
    }
    event_free(lev->timer);
    event_base_free(lev->base);
    lev->base = fresh;
    lev->timer = timer;
    if (failure) { errno = failure; return -1; }
    return 0;
}

/* 1 when `fd` is in the epoll set `epfd` (0 for another set, a file that is not one, a closed number).
 * Asked with EPOLL_CTL_MOD to the very event libevent's epoll method adds for its waker and its timerfd
 * (EPOLLIN, data.fd = fd): where it is watched, the change changes nothing; elsewhere it fails (ENOENT,
 * EINVAL, EBADF) and touches nothing. Used only on the poller's own waker and on numbers that were free
 * before libevent's base was made, none of them a caller's registration. */
int rd_lev_epoll_watches(int epfd, int fd) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.fd = fd;
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event) == 0;
}

/* 1 when the process has one thread (/proc/self/status), 0 otherwise or when it cannot be told. */
int rd_lev_single_threaded(void) {
    FILE *status = fopen("/proc/self/status", "re");
    if (!status) return 0;
    char line[128];
    int threads = 0;
    while (fgets(line, sizeof line, status))
        if (strncmp(line, "Threads:", 8) == 0) { threads = atoi(line + 8); break; }
    fclose(status);
    return threads == 1;
}

/* Marks the base unusable without freeing anything of libevent's (the frees then skip libevent). */
void rd_lev_abandon(rd_lev *lev) { lev->broken = 1; }

int rd_lev_reg_change_refused_delete(const rd_lev_reg *reg) { return reg->delete_refused; }


int rd_lev_reg_reuse(rd_lev_reg *reg, int fd, int interest, int trigger, int early_close) {
    reg->fd = fd;
    return rd_lev_reg_change(reg, interest, trigger, early_close);
}

int rd_lev_reg_remove(rd_lev_reg *reg) {
    if (reg->lev->broken) return 0;
    /* libevent's epoll method returns success when EPOLL_CTL_DEL fails with ENOENT, EBADF or EPERM
     * (epoll.c, epoll_apply_one_change) and makes no other system call on the way back, so errno is
     * what the kernel said. The poll and select methods make no system call here. */
    errno = 0;
    event_del(reg->ev);
    return errno == ENOENT || errno == EBADF || errno == EPERM;
}

void rd_lev_reg_free(rd_lev_reg *reg) {
    if (!reg) return;
    if (!reg->lev->broken) event_free(reg->ev); /* event_free deletes it first */
    free(reg);
}

static int64_t rd_lev_thread_cpu_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

int64_t rd_lev_last_loop_cpu_ns(const rd_lev *lev) { return lev->last_loop_cpu_ns; }

int rd_lev_loop(rd_lev *lev, int64_t timeout_us, int measure_cpu) {
    lev->fired = 0;
    lev->last_loop_cpu_ns = 0;
    if (lev->broken) { errno = EBADFD; return -1; }
    int64_t cpu_start = measure_cpu ? rd_lev_thread_cpu_ns() : 0;
    int flags = EVLOOP_ONCE;
    if (timeout_us == 0) {
        flags |= EVLOOP_NONBLOCK;
    } else if (timeout_us > 0) {
        struct timeval tv = {.tv_sec = (time_t)(timeout_us / 1000000), .tv_usec = (suseconds_t)(timeout_us % 1000000)};
        evtimer_add(lev->timer, &tv);
    }
    errno = 0;
    int result = event_base_loop(lev->base, flags);
    int saved = errno;
    if (timeout_us > 0) evtimer_del(lev->timer);
    if (measure_cpu) lev->last_loop_cpu_ns = rd_lev_thread_cpu_ns() - cpu_start;
    if (result < 0) { errno = saved ? saved : EIO; return -1; }
    return lev->fired;
}

int rd_lev_fired_fd(const rd_lev *lev, int i) { return lev->fired_fd[i]; }
int rd_lev_fired_what(const rd_lev *lev, int i) { return lev->fired_what[i]; }
#endif // READINESS_LIBEVENT
