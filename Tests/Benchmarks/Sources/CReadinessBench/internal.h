#ifndef CREADINESS_BENCH_INTERNAL_H
#define CREADINESS_BENCH_INTERNAL_H
// Between raw.c (which dispatches) and levent.c (libevent's loop). Not visible to Swift.
#include <stdint.h>
#include <stdio.h>

/// The most events one raw wait returns (the Swift contenders use an EventBuffer of the same size).
#define RB_EVENT_CAPACITY 256

/// A loop that makes no progress for this many passes has a bug: fail instead of spinning for ever.
#define RB_MAX_IDLE_PASSES 100000000LL

#define RB_FAIL(error, length, ...) \
    do { \
        if (error && length > 0) snprintf(error, (size_t)length, __VA_ARGS__); \
    } while (0)

typedef struct rb_lev_ring rb_lev_ring;
rb_lev_ring *rb_lev_ring_new(const char *method, int flags, int mode, const int *read_fds, const int *write_fds, int n,
                             char *error, int error_length);
int64_t rb_lev_ring_round(rb_lev_ring *ring, int active, int writes, int64_t *waits, int64_t *events);
void rb_lev_ring_free(rb_lev_ring *ring);
int rb_lev_ring_set_flags(rb_lev_ring *ring, int flags, int waker_fd);

typedef struct rb_lev_scale rb_lev_scale;
rb_lev_scale *rb_lev_scale_new(const char *method, int flags, const int *fds, int n, int active_index, int write_fd,
                               char *error, int error_length);
int64_t rb_lev_scale_round(rb_lev_scale *scale, int iterations, int64_t *waits);
void rb_lev_scale_free(rb_lev_scale *scale);

typedef struct rb_lev_connect rb_lev_connect;
rb_lev_connect *rb_lev_connect_new(const char *method, int flags, int listener, int port, int max_in_flight, char *error,
                                   int error_length);
int64_t rb_lev_connect_round(rb_lev_connect *c, int total, int in_flight, int64_t *failures, int64_t *waits,
                             int64_t *unaccepted, int64_t deadline_ns);
void rb_lev_connect_free(rb_lev_connect *c);

#endif
