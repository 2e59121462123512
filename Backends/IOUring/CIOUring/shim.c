#define _GNU_SOURCE
#include "CIOUring.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const uint32_t rd_uring_POLLIN = POLLIN, rd_uring_POLLOUT = POLLOUT, rd_uring_POLLRDHUP = POLLRDHUP,
    rd_uring_POLLHUP = POLLHUP, rd_uring_POLLERR = POLLERR, rd_uring_POLLNVAL = POLLNVAL;
#ifndef IORING_CQE_F_MORE
#define IORING_CQE_F_MORE (1U << 1)
#endif
#ifndef IORING_POLL_ADD_MULTI
#define IORING_POLL_ADD_MULTI (1U << 0)
#endif
const uint32_t rd_uring_CQE_F_MORE = IORING_CQE_F_MORE;
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
// (An enum constant in headers of 6.12 and later, which `#ifndef` cannot see: the macro, defined
// after the header, then stands for it with the same value.)
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
const uint32_t rd_uring_CQE_F_BUFFER = IORING_CQE_F_BUFFER, rd_uring_CQE_BUFFER_SHIFT = IORING_CQE_BUFFER_SHIFT;
const uint32_t rd_uring_CQE_F_BUF_MORE = IORING_CQE_F_BUF_MORE;

// Flags that older kernel headers lack, by their kernel values.
#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
#ifndef IORING_FEAT_RSRC_TAGS
#define IORING_FEAT_RSRC_TAGS (1U << 10)
#endif
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_ANY
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif
#define RD_IORING_REGISTER_PBUF_RING 22
#define RD_IORING_UNREGISTER_PBUF_RING 23

// The provided-buffer ring's ABI (Linux 5.19), declared here rather than taken from the system's
// <linux/io_uring.h>: headers before 5.19 lack these types, and since 6.4 the registration's `pad`
// is named `flags` (a field name either header would refuse to the other). The layout is the
// kernel's stable uapi: a ring of 16-byte entries whose first entry's last two bytes are the tail.
struct rd_uring_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv;   // the ring's tail, in the first entry
};
struct rd_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;   // `pad` before Linux 6.4; IOU_PBUF_RING_INC since 6.12
    uint64_t resv[3];
};
_Static_assert(sizeof(struct rd_uring_buf) == 16, "io_uring_buf is 16 bytes");
_Static_assert(sizeof(struct rd_uring_buf_reg) == 40, "io_uring_buf_reg is 40 bytes");

struct rd_uring {
    int fd;
    uint32_t features, setup_flags;
    int disabled;  // IORING_SETUP_R_DISABLED: enabled by the first submission, which owns the ring
    // Submission ring: head (kernel), tail (ours), mask, and the SQE array.
    unsigned *sq_head, *sq_tail, *sq_flags, sq_mask, sq_entries;
    struct io_uring_sqe *sqes;
    unsigned sq_local_tail;  // SQEs written but not yet published
    unsigned sq_published;   // published but not yet submitted
    // Completion ring: head (ours), tail (kernel), mask, and the CQE array.
    unsigned *cq_head, *cq_tail, cq_mask, cq_entries;
    struct io_uring_cqe *cqes;
    void *ring_map;
    size_t ring_map_size;
    void *sqe_map;
    size_t sqe_map_size;
};

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}
static int sys_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags, void *arg, size_t size) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, arg, size);
}

int rd_uring_disabled_setting(void) {
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (!f) return -1;
    int value = -1;
    if (fscanf(f, "%d", &value) != 1) value = -1;
    fclose(f);
    return value;
}

/// A system call or allocation of the setup failed: `why` names it, the errno is returned.
static int fail(char *why, int size, int code, const char *operation) {
    snprintf(why, (size_t)size, "%s", operation);
    return -code;
}

int rd_uring_open(struct rd_uring **out, unsigned entries, unsigned cq_entries, int allow_deferred,
                  char *why, int why_size) {
    *out = NULL;
    // The best setup the kernel accepts, newest first. Completions are run in our own io_uring_enter
    // (DEFER_TASKRUN, 6.1), not by interrupting whatever system call the thread is in; that needs a
    // single submitting thread, which the ring learns when it is enabled (R_DISABLED until the first
    // submission, so the thread that waits owns it, not the one that created the poller).
    static const uint32_t ladder[] = {
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED,
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL,  // 5.18
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
    };
    struct io_uring_params p;
    int fd = -1;
    for (size_t i = allow_deferred ? 0 : 1; i < sizeof ladder / sizeof ladder[0]; i++) {
        memset(&p, 0, sizeof p);
        p.flags = ladder[i];
        p.cq_entries = cq_entries;
        fd = sys_setup(entries, &p);
        if (fd >= 0 || errno != EINVAL) break;
    }
    if (fd < 0) {  // the caller words the reason (ENOSYS, EPERM and io_uring_disabled, seccomp)
        why[0] = 0;
        return -errno;
    }
    static const struct { uint32_t bit; const char *fact; } needed[] = {
        {IORING_FEAT_SINGLE_MMAP, "IORING_FEAT_SINGLE_MMAP (Linux 5.4)"},
        {IORING_FEAT_NODROP, "IORING_FEAT_NODROP (Linux 5.5): completions could be lost"},
        {IORING_FEAT_EXT_ARG, "IORING_FEAT_EXT_ARG (Linux 5.11): no timeout in io_uring_enter"},
    };
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        if (!(p.features & needed[i].bit)) {
            snprintf(why, (size_t)why_size, "the kernel lacks %s", needed[i].fact);
            close(fd);
            return -ENOTSUP;
        }
    }
    struct rd_uring *r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return fail(why, why_size, ENOMEM, "calloc");
    }
    r->fd = fd;
    r->features = p.features;
    r->setup_flags = p.flags;
    r->disabled = (p.flags & IORING_SETUP_R_DISABLED) != 0;
    // One mapping holds both rings (IORING_FEAT_SINGLE_MMAP); the SQEs are a second one.
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->ring_map_size = sq_size > cq_size ? sq_size : cq_size;
    r->ring_map = mmap(NULL, r->ring_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->ring_map == MAP_FAILED) {
        int e = errno;
        close(fd);
        free(r);
        return fail(why, why_size, e, "mmap(IORING_OFF_SQ_RING)");
    }
    r->sqe_map_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqe_map = mmap(NULL, r->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqe_map == MAP_FAILED) {
        int e = errno;
        munmap(r->ring_map, r->ring_map_size);
        close(fd);
        free(r);
        return fail(why, why_size, e, "mmap(IORING_OFF_SQES)");
    }
    char *base = r->ring_map;
    r->sq_head = (unsigned *)(base + p.sq_off.head);
    r->sq_tail = (unsigned *)(base + p.sq_off.tail);
    r->sq_flags = (unsigned *)(base + p.sq_off.flags);
    r->sq_mask = *(unsigned *)(base + p.sq_off.ring_mask);
    r->sq_entries = p.sq_entries;
    r->sqes = r->sqe_map;
    // The SQ's index array is the identity: slot i holds SQE i.
    unsigned *array = (unsigned *)(base + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++) array[i] = i;
    r->sq_local_tail = *r->sq_tail;
    r->cq_head = (unsigned *)(base + p.cq_off.head);
    r->cq_tail = (unsigned *)(base + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(base + p.cq_off.ring_mask);
    r->cq_entries = p.cq_entries;
    r->cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    *out = r;
    return 0;
}

void rd_uring_close(struct rd_uring *r) {
    if (!r) return;
    munmap(r->sqe_map, r->sqe_map_size);
    munmap(r->ring_map, r->ring_map_size);
    close(r->fd);
    free(r);
}

int rd_uring_fd(const struct rd_uring *r) { return r->fd; }
uint32_t rd_uring_features(const struct rd_uring *r) { return r->features; }
uint32_t rd_uring_setup_flags(const struct rd_uring *r) { return r->setup_flags; }
int rd_uring_defers_completions(const struct rd_uring *r) { return (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0; }
// No feature bit names multishot poll; IORING_FEAT_RSRC_TAGS came with the same release (5.13).
int rd_uring_has_multishot(const struct rd_uring *r) { return (r->features & IORING_FEAT_RSRC_TAGS) != 0; }

/// Enables a ring set up disabled: the calling thread becomes its single submitter.
static int enable(struct rd_uring *r) {
    if (!r->disabled) return 0;
    if (syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) != 0) return -errno;
    r->disabled = 0;
    return 0;
}

/// Makes the written SQEs visible to the kernel (release: their contents before the tail).
static void publish(struct rd_uring *r) {
    unsigned tail = *r->sq_tail;
    if (tail == r->sq_local_tail) return;
    r->sq_published += r->sq_local_tail - tail;
    __atomic_store_n(r->sq_tail, r->sq_local_tail, __ATOMIC_RELEASE);
}

/// The most enters `run_deferred` makes: 64 batches (1,280 deferred completions on 6.13 and later).
#define RD_URING_DEFERRED_ROUNDS 64

/// Runs the completion work the kernel deferred to this thread while IORING_SQ_TASKRUN says some is
/// left, at most RD_URING_DEFERRED_ROUNDS enters. 0, or -errno.
static int run_deferred(struct rd_uring *r) {
    for (int round = 0; round < RD_URING_DEFERRED_ROUNDS; round++) {
        if (!(__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN)) return 0;
        unsigned before = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        if (sys_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR) return -errno;
        // A round that posted no completion made no progress (a peer that never stops writing keeps
        // the flag up with work of its own): stop rather than spend the rounds for nothing.
        if (__atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) == before) return 0;
    }
    return 0;
}

int rd_uring_submit(struct rd_uring *r) {
    publish(r);
    if (r->sq_published == 0) return 0;
    int e = enable(r);
    if (e < 0) return e;
    // Completions the kernel deferred to us (IORING_SQ_TASKRUN) hold their requests: run them first,
    // or a cancel finds its request busy (EALREADY) and the file stays held. One enter runs a batch
    // of them (20 on 6.13 and later, oldest first): as many as it takes, up to a bound.
    int e2 = run_deferred(r);
    if (e2 < 0) return e2;
    // GETEVENTS with no minimum: also runs the completions deferred to us (DEFER_TASKRUN), so a
    // cancelled request lets go of its file before this returns.
    int n = sys_enter(r->fd, r->sq_published, 0, IORING_ENTER_GETEVENTS, NULL, 0);
    if (n < 0) return -errno;
    r->sq_published -= (unsigned)n;
    // A cancel's own completion is deferred work too, queued behind what came before it. The submit
    // succeeded: a failure here changes nothing of that.
    (void)run_deferred(r);
    return n;
}

/// The next free SQE, zeroed; submits the queue first when it is full.
static struct io_uring_sqe *next_sqe(struct rd_uring *r, int *error) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->sq_local_tail - head >= r->sq_entries) {
        int n = rd_uring_submit(r);
        if (n < 0) {
            *error = n;
            return NULL;
        }
        head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        if (r->sq_local_tail - head >= r->sq_entries) {
            *error = -EBUSY;
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = &r->sqes[r->sq_local_tail & r->sq_mask];
    memset(sqe, 0, sizeof *sqe);
    r->sq_local_tail++;
    return sqe;
}

int rd_uring_poll_add(struct rd_uring *r, int fd, uint32_t mask, uint64_t user_data, int multishot,
                      uint32_t *position) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    *position = r->sq_local_tail - 1;
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = mask;  // little-endian Linux: the 32-bit mask as is
    sqe->len = multishot ? IORING_POLL_ADD_MULTI : 0;
    sqe->user_data = user_data;
    return 0;
}

int rd_uring_unqueue(struct rd_uring *r, uint32_t position, uint64_t user_data) {
    // The kernel's head counts the entries it has consumed; the request is still ours if it lies
    // between that and our tail.
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (position - head >= r->sq_local_tail - head) return 0;
    struct io_uring_sqe *sqe = &r->sqes[position & r->sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_NOP;
    sqe->fd = -1;
    sqe->user_data = user_data;
    return 1;
}

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rd_uring_await_final(struct rd_uring *r, uint64_t target, uint64_t cancel, int64_t deadline_ns) {
    // A cancel not yet submitted (a batch cut short) would be waited for in vain.
    if (r->sq_published != 0 || r->sq_local_tail != *r->sq_tail) return 0;
    unsigned seen = *r->cq_head;  // only we consume
    for (;;) {
        unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        for (; seen != tail; seen++) {
            const struct io_uring_cqe *cqe = &r->cqes[seen & r->cq_mask];
            if (cqe->user_data == target && !(cqe->flags & IORING_CQE_F_MORE)) return 1;
            if (cqe->user_data == cancel && cqe->res < 0) return cqe->res == -ENOENT ? 1 : 0;
        }
        unsigned ready = tail - *r->cq_head;
        if (ready > r->cq_entries / 2 || (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW)) return 0;
        int64_t left = deadline_ns - monotonic_ns();
        if (left <= 0) return 0;
        struct __kernel_timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
        struct io_uring_getevents_arg arg;
        memset(&arg, 0, sizeof arg);
        arg.ts = (uint64_t)(uintptr_t)&ts;
        // One more completion than are there: the first new one (or the timeout) ends the wait.
        if (sys_enter(r->fd, 0, ready + 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg) < 0 &&
            errno != ETIME && errno != EINTR) {
            return -errno;
        }
    }
}

int rd_uring_enter(struct rd_uring *r, unsigned min_complete, int64_t timeout_ns) {
    publish(r);
    int e = enable(r);
    if (e < 0) return e;
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    if (min_complete > 0 && timeout_ns >= 0) {
        // The kernel adds the timeout to the current time without saturating (io_cqring_wait, unlike
        // ppoll and epoll_pwait2): past about 292 years less the uptime the sum wraps negative and the
        // wait ends at once, again and again. 100 years is beyond any real wait; the caller waits again.
        const int64_t longest = INT64_C(100) * 365 * 24 * 3600 * 1000000000;
        if (timeout_ns > longest) timeout_ns = longest;
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    unsigned submit = r->sq_published;
    int n = sys_enter(r->fd, submit, min_complete, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
    if (n < 0) return -errno;
    // With something submitted the call returns the number submitted and hides -ETIME or -EINTR of
    // the wait: the caller looks at the completion queue either way.
    r->sq_published -= (unsigned)n < submit ? (unsigned)n : submit;
    // A kernel without IORING_SETUP_SUBMIT_ALL may stop a batch short: the rest goes in now (no
    // wait), so the requests the caller queued are all looked at by this wait.
    while (n > 0 && r->sq_published > 0) {
        submit = r->sq_published;
        n = sys_enter(r->fd, submit, 0, IORING_ENTER_GETEVENTS, NULL, 0);
        if (n < 0) return errno == EINTR || errno == EAGAIN || errno == EBUSY ? 0 : -errno;
        r->sq_published -= (unsigned)n < submit ? (unsigned)n : submit;
    }
    return 0;
}

int rd_uring_work_pending(const struct rd_uring *r) {
    unsigned flags = __atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE);
    // Completions the full queue could not take wait in the kernel's overflow list (any ring): an
    // enter with GETEVENTS flushes them (liburing's cq_ring_needs_flush).
    if (flags & IORING_SQ_CQ_OVERFLOW) return 1;
    if (!(r->setup_flags & IORING_SETUP_DEFER_TASKRUN)) return 0;
    return (flags & IORING_SQ_TASKRUN) != 0;
}

int rd_uring_run_work(struct rd_uring *r) {
    if (sys_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return -errno;
    return 0;
}

unsigned rd_uring_cq_ready(const struct rd_uring *r) {
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

void rd_uring_cq_get(const struct rd_uring *r, unsigned i, uint64_t *user_data, int32_t *res, uint32_t *flags) {
    const struct io_uring_cqe *cqe = &r->cqes[(*r->cq_head + i) & r->cq_mask];
    *user_data = cqe->user_data;
    *res = cqe->res;
    *flags = cqe->flags;
}

void rd_uring_cq_advance(struct rd_uring *r, unsigned n) {
    __atomic_store_n(r->cq_head, *r->cq_head + n, __ATOMIC_RELEASE);
}

// MARK: Completion I/O (operations submitted to the ring; their completions carry the caller's tag)

int rd_uring_prep_recv(struct rd_uring *r, int fd, void *buffer, uint32_t length, uint64_t user_data, int group) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->user_data = user_data;
    if (group >= 0) {
        // The kernel picks a buffer of the group when data is there (IOSQE_BUFFER_SELECT); `length`
        // caps the read.
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = (uint16_t)group;
        sqe->addr = 0;
    }
    return 0;
}

int rd_uring_prep_send(struct rd_uring *r, int fd, const void *buffer, uint32_t length, uint64_t user_data) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = user_data;
    return 0;
}

int rd_uring_prep_sendmsg(struct rd_uring *r, int fd, const struct msghdr *message, uint64_t user_data) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_SENDMSG;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)message;
    sqe->len = 1;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = user_data;
    return 0;
}

int rd_uring_prep_accept(struct rd_uring *r, int fd, uint64_t user_data, int multishot) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_ACCEPT;
    if (multishot) sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->fd = fd;
    sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    sqe->user_data = user_data;
    return 0;
}

int rd_uring_prep_cancel(struct rd_uring *r, uint64_t target, uint64_t user_data) {
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = target;
    sqe->user_data = user_data;
    return 0;
}

int rd_uring_cancel_all(struct rd_uring *r, uint64_t user_data) {
    // What is queued and not yet submitted never runs: a receive or send whose task has ended would
    // read or write memory freed since. Each such entry becomes a NOP before the cancel goes in.
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    for (unsigned i = head; i != r->sq_local_tail; i++) {
        struct io_uring_sqe *sqe = &r->sqes[i & r->sq_mask];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_NOP;
        sqe->user_data = user_data;
    }
    int error = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &error);
    if (!sqe) return error;
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY;
    sqe->user_data = user_data;
    return rd_uring_submit(r);
}

struct rd_uring_buffers {
    struct rd_uring_buf *ring;   // `count` entries; the tail is the first entry's `resv`
    size_t ring_size;
    unsigned char *memory;
    size_t memory_size;
    uint32_t count, size, mask;
    uint16_t group, tail;
};

int rd_uring_buffers_register(struct rd_uring *r, uint16_t group, uint32_t count, uint32_t size, int incremental,
                              struct rd_uring_buffers **out) {
    *out = NULL;
    if (count == 0 || (count & (count - 1)) != 0 || count > 32768) return -EINVAL;
    struct rd_uring_buffers *b = calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    b->ring_size = count * sizeof(struct rd_uring_buf);
    void *ring = mmap(NULL, b->ring_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring == MAP_FAILED) {
        free(b);
        return -ENOMEM;
    }
    // The buffers' memory is mapped, not touched: only the pages data was received into are resident.
    b->memory_size = (size_t)count * size;
    void *memory = mmap(NULL, b->memory_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        munmap(ring, b->ring_size);
        free(b);
        return -ENOMEM;
    }
    b->ring = ring;
    b->memory = memory;
    b->count = count;
    b->size = size;
    b->mask = count - 1;
    b->group = group;
    int e = enable(r);
    struct rd_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)ring;
    reg.ring_entries = count;
    reg.bgid = group;
    reg.flags = incremental ? IOU_PBUF_RING_INC : 0;
    if (e == 0 && syscall(__NR_io_uring_register, r->fd, RD_IORING_REGISTER_PBUF_RING, &reg, 1) != 0) e = -errno;
    if (e < 0) {
        munmap(memory, b->memory_size);
        munmap(ring, b->ring_size);
        free(b);
        return e;
    }
    for (uint32_t i = 0; i < count; i++) rd_uring_buffers_give_back(b, (uint16_t)i);
    *out = b;
    return 0;
}

void rd_uring_buffers_give_back(struct rd_uring_buffers *b, uint16_t id) {
    // An id this ring never handed out would publish an address past its memory (a caller's
    // mistake through the SPI): ignored.
    if (id >= b->count) return;
    struct rd_uring_buf *entry = &b->ring[b->tail & b->mask];
    entry->addr = (uint64_t)(uintptr_t)(b->memory + (size_t)id * b->size);
    entry->len = b->size;
    entry->bid = id;
    b->tail++;
    // Release: the entry before the tail that publishes it.
    __atomic_store_n(&b->ring[0].resv, b->tail, __ATOMIC_RELEASE);
}

void *rd_uring_buffers_address(const struct rd_uring_buffers *b, uint16_t id) {
    if (id >= b->count) return NULL;
    return b->memory + (size_t)id * b->size;
}

void rd_uring_buffers_free(struct rd_uring *r, struct rd_uring_buffers *b) {
    if (!b) return;
    if (r) {
        struct rd_uring_buf_reg reg;
        memset(&reg, 0, sizeof reg);
        reg.bgid = b->group;
        syscall(__NR_io_uring_register, r->fd, RD_IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    munmap(b->memory, b->memory_size);
    munmap(b->ring, b->ring_size);
    free(b);
}
