#ifndef READINESS_CLIBEVENT_H
#define READINESS_CLIBEVENT_H
// A C shim over libevent with opaque pointers only: no libevent header is visible to Swift.
#include <stdint.h>

typedef struct rd_lev rd_lev;
typedef struct rd_lev_reg rd_lev_reg;

/// Readiness bits of a fired event.
enum { RD_LEV_READ = 1, RD_LEV_WRITE = 2, RD_LEV_CLOSED = 4 };
/// In a fired event's bits: libevent's delete of the fired one-shot was refused by the kernel.
enum { RD_LEV_DELETE_REFUSED = 8 };
/// Triggers.
enum { RD_LEV_LEVEL = 0, RD_LEV_EDGE = 1, RD_LEV_ONESHOT = 2 };
/// Features (event_base_get_features).
enum { RD_LEV_FEATURE_ET = 1, RD_LEV_FEATURE_O1 = 2, RD_LEV_FEATURE_FDS = 4, RD_LEV_FEATURE_EARLY_CLOSE = 8 };

/// FD_SETSIZE as this C library defines it.
int rd_lev_fd_setsize(void);
/// libevent's version string.
const char *rd_lev_version(void);
/// 1 if libevent was built with this method ("epoll", "poll", "select", ...).
int rd_lev_supports_method(const char *method);
/// A base that uses exactly `method` (NULL: libevent's own choice), ignoring EVENT_* environment
/// variables, with precise timers. NULL on failure, with a reason in `error` and, when the cause is
/// an exhausted resource, its errno in `code` (else 0). Never ends the process.
rd_lev *rd_lev_new(const char *method, char *error, int error_length, int *code);
void rd_lev_free(rd_lev *lev);
/// event_base_get_method.
const char *rd_lev_method(const rd_lev *lev);
/// RD_LEV_FEATURE_* bits.
int rd_lev_features(const rd_lev *lev);
/// Makes room for `count` fired events in one loop pass. 0, or -1 when out of memory.
int rd_lev_reserve(rd_lev *lev, int count);

/// Allocates and adds an event for `fd`. NULL on failure (errno set).
rd_lev_reg *rd_lev_reg_new(rd_lev *lev, int fd, int interest, int trigger, int early_close);
/// Reuses a removed registration (its struct event) for `fd`, and adds it: no allocation. 0 or -1.
int rd_lev_reg_reuse(rd_lev_reg *reg, int fd, int interest, int trigger, int early_close);
/// Replaces interest and trigger (re-arming a one-shot event). 0 or -1.
int rd_lev_reg_change(rd_lev_reg *reg, int interest, int trigger, int early_close);
/// 1 when the last change's delete of the old event was refused by the kernel (the epoll method: the
/// number was closed, or names another file now; libevent ignores that).
int rd_lev_reg_change_refused_delete(const rd_lev_reg *reg);
/// Removes from the base (if added) and frees.
void rd_lev_reg_free(rd_lev_reg *reg);
/// event_reinit: rebuilds the method's kernel state (its epoll set) from the registered events. Only in a
/// forked child: it closes the signal pipe twice (see rd_lev_rebuild).
int rd_lev_reinit(rd_lev *lev);
/// A new base of the same method with `regs` (every event of the base: registered, spare, the waker's)
/// moved to it, then the old base freed. -2 with errno: no new base (nothing changed); -1 with errno: an
/// event whose add failed (the others moved).
int rd_lev_rebuild(rd_lev *lev, rd_lev_reg *const *regs, int count);
/// 1 when `fd` is watched by the epoll set `epfd` as libevent watches its waker and timerfd (a MOD to
/// that same event: nothing changes where it is watched, nothing is touched elsewhere).
int rd_lev_epoll_watches(int epfd, int fd);
/// 1 when the process has one thread (/proc/self/status); 0 otherwise or when it cannot be told.
int rd_lev_single_threaded(void);
/// Marks the base unusable without freeing libevent's state (a forked child with threads).
void rd_lev_abandon(rd_lev *lev);
/// 1 when a reinit hit a fatal error and the base can no longer be used.
int rd_lev_is_broken(const rd_lev *lev);
/// Removes from the base without freeing. Returns 1 when the method's kernel call refused the
/// delete (epoll_ctl's ENOENT, EBADF or EPERM, which libevent ignores): the number no longer names
/// the registered file, which may linger in the epoll set. 0 otherwise.
int rd_lev_reg_remove(rd_lev_reg *reg);

/// One loop pass: EVLOOP_ONCE, with EVLOOP_NONBLOCK when timeout_us is 0 and a timer when it is
/// positive (-1: no timeout). Returns the number of fired events, or -1 (errno set).
/// With `measure_cpu`, the thread's CPU time during the pass is kept for rd_lev_last_loop_cpu_ns.
int rd_lev_loop(rd_lev *lev, int64_t timeout_us, int measure_cpu);
/// CPU time the calling thread spent in the last measured rd_lev_loop, in nanoseconds.
int64_t rd_lev_last_loop_cpu_ns(const rd_lev *lev);
int rd_lev_fired_fd(const rd_lev *lev, int i);
int rd_lev_fired_what(const rd_lev *lev, int i);
#endif
