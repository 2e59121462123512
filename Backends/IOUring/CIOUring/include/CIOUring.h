#ifndef READINESS_CIOURING_H
#define READINESS_CIOURING_H
// A small io_uring shim over the raw system calls (no liburing): set up and map the rings, queue
// poll requests, submit and wait in one io_uring_enter, read completions. Swift keeps the logic.
#include <stdint.h>

/// One ring (opaque to Swift).
struct rd_uring;

/// Poll bits io_uring reports (the poll(2) bits; POLLRDHUP needs _GNU_SOURCE, hence here).
extern const uint32_t rd_uring_POLLIN, rd_uring_POLLOUT, rd_uring_POLLRDHUP, rd_uring_POLLHUP,
    rd_uring_POLLERR, rd_uring_POLLNVAL;
/// IORING_CQE_F_MORE: the request (multishot) stays armed after this completion.
extern const uint32_t rd_uring_CQE_F_MORE;

/// Creates a ring with `entries` submission slots and `cq_entries` completion slots. Returns 0, or a
/// negative errno: io_uring_setup's (`why` empty), a later step's (`why` names it: "mmap(...)",
/// "calloc"; nothing is left open), or -ENOTSUP with the missing kernel feature in `why`.
/// `allow_deferred` 0 sets the ring up as a kernel without IORING_SETUP_DEFER_TASKRUN would (tests).
int rd_uring_open(struct rd_uring **out, unsigned entries, unsigned cq_entries, int allow_deferred,
                  char *why, int why_size);
void rd_uring_close(struct rd_uring *ring);
/// The ring's descriptor and the kernel's IORING_FEAT_* bits and setup flags actually used.
int rd_uring_fd(const struct rd_uring *ring);
uint32_t rd_uring_features(const struct rd_uring *ring);
uint32_t rd_uring_setup_flags(const struct rd_uring *ring);
/// Whether completions run inside our own io_uring_enter (IORING_SETUP_DEFER_TASKRUN, Linux 6.1).
int rd_uring_defers_completions(const struct rd_uring *ring);
/// Whether the kernel has multishot poll (IORING_POLL_ADD_MULTI, Linux 5.13).
int rd_uring_has_multishot(const struct rd_uring *ring);

/// Queues IORING_OP_POLL_ADD of `fd` for `mask`; multishot when `multishot`; its place in the
/// submission order goes to `position`. Submits the queue first when it is full. 0, or a negative
/// errno (from that submission).
int rd_uring_poll_add(struct rd_uring *ring, int fd, uint32_t mask, uint64_t user_data, int multishot,
                      uint32_t *position);
/// Turns the request queued at `position` into a IORING_OP_NOP carrying `user_data` if the kernel has
/// not taken it yet: 1 if it did, 0 if the request was already submitted.
int rd_uring_unqueue(struct rd_uring *ring, uint32_t position, uint64_t user_data);
/// Submits what is queued without waiting. The number submitted, or a negative errno: -EEXIST when
/// the ring belongs to another thread (DEFER_TASKRUN rings have a single submitter: make a new one).
int rd_uring_submit(struct rd_uring *ring);
/// Waits, until `deadline_ns` (CLOCK_MONOTONIC) at the latest, for the request tagged `target`, whose
/// cancel (tagged `cancel`) was submitted, to end: its final completion (no IORING_CQE_F_MORE) in the
/// completion queue, or the cancel's own completion saying it found nothing (-ENOENT: the request had
/// ended already). Nothing is consumed: each round looks at the completions not yet consumed, then
/// enters with GETEVENTS for one more than are there (which also runs the completion work deferred to
/// this thread, DEFER_TASKRUN). For a cancelled poll whose wake-up on another CPU had claimed it: the
/// cancel only marks it, and its last step, which lets go of its file, is queued to this thread by
/// that wake-up, possibly after the submit that sent the cancel has returned. 1 ended; 0 not known to
/// have ended: the deadline passed, the cancel failed otherwise (-EALREADY), a submission is still
/// queued here, or the queue is half full (its completions are the next wait's to consume; waiting
/// here could overflow it); or a negative errno.
int rd_uring_await_final(struct rd_uring *ring, uint64_t target, uint64_t cancel, int64_t deadline_ns);
/// Submits what is queued and waits in the same io_uring_enter for at least `min_complete`
/// completions or `timeout_ns` (negative: no timeout; ignored when `min_complete` is 0).
/// 0, or a negative errno (-EINTR, -ETIME, -EEXIST as for rd_uring_submit, ...).
int rd_uring_enter(struct rd_uring *ring, unsigned min_complete, int64_t timeout_ns);

/// Whether completions deferred to us (IORING_SETUP_DEFER_TASKRUN) are still waiting to be run: the
/// kernel runs a bounded batch of them per pass (IO_LOCAL_TW_DEFAULT_MAX, 20, or min_complete if more;
/// Linux 6.13 and later), and raises IORING_SQ_TASKRUN when it leaves some; or, on any ring, whether
/// completions overflowed the completion queue (IORING_SQ_CQ_OVERFLOW: more than its 4,096 entries
/// were ready at once) and wait in the kernel's list for an enter with GETEVENTS to flush them.
int rd_uring_work_pending(const struct rd_uring *ring);
/// Runs another batch of those completions into the completion queue, without waiting (one
/// io_uring_enter with GETEVENTS and no minimum). 0, or a negative errno.
int rd_uring_run_work(struct rd_uring *ring);

/// Completions ready to be read, then the `i`th of them (0 = oldest), then consume `n`.
unsigned rd_uring_cq_ready(const struct rd_uring *ring);
void rd_uring_cq_get(const struct rd_uring *ring, unsigned i, uint64_t *user_data, int32_t *res, uint32_t *flags);
void rd_uring_cq_advance(struct rd_uring *ring, unsigned n);

// MARK: Completion I/O: operations queued like the polls (submitted by the next rd_uring_enter or
// rd_uring_submit); each completion carries `user_data`. 0, or a negative errno.

/// IORING_CQE_F_BUFFER: the completion used provided buffer `flags >> rd_uring_CQE_BUFFER_SHIFT`.
extern const uint32_t rd_uring_CQE_F_BUFFER, rd_uring_CQE_BUFFER_SHIFT;
/// IORING_CQE_F_BUF_MORE: an incrementally consumed buffer (IOU_PBUF_RING_INC) is not used up: the
/// kernel goes on filling it after this completion's bytes.
extern const uint32_t rd_uring_CQE_F_BUF_MORE;
struct msghdr;
/// IORING_OP_RECV of up to `length` bytes into `buffer`, or (`group` >= 0) into a buffer the kernel
/// takes from provided-buffer group `group` when data is there.
int rd_uring_prep_recv(struct rd_uring *ring, int fd, void *buffer, uint32_t length, uint64_t user_data, int group);
/// IORING_OP_SEND (MSG_NOSIGNAL).
int rd_uring_prep_send(struct rd_uring *ring, int fd, const void *buffer, uint32_t length, uint64_t user_data);
/// IORING_OP_SENDMSG (MSG_NOSIGNAL); `message` and its iovecs must stay valid until the completion.
int rd_uring_prep_sendmsg(struct rd_uring *ring, int fd, const struct msghdr *message, uint64_t user_data);
/// IORING_OP_ACCEPT (SOCK_NONBLOCK | SOCK_CLOEXEC; the peer is not asked for); `multishot`: it stays
/// armed, a completion per connection with IORING_CQE_F_MORE (Linux 5.19).
int rd_uring_prep_accept(struct rd_uring *ring, int fd, uint64_t user_data, int multishot);
/// IORING_OP_ASYNC_CANCEL of the request whose user_data is `target`.
int rd_uring_prep_cancel(struct rd_uring *ring, uint64_t target, uint64_t user_data);
/// Cancels every request of the ring (IORING_ASYNC_CANCEL_ANY, Linux 5.19) and submits: what the
/// requests held is let go before this returns. The submit's count, or a negative errno.
int rd_uring_cancel_all(struct rd_uring *ring, uint64_t user_data);

/// A ring of provided buffers (IORING_REGISTER_PBUF_RING, Linux 5.19): `count` (a power of two)
/// buffers of `size` bytes in group `group`, all given to the kernel; `incremental`: each buffer is
/// consumed a receive at a time (IOU_PBUF_RING_INC, Linux 6.12). 0, or a negative errno (-EINVAL from
/// a kernel without provided-buffer rings, or without incremental consumption).
struct rd_uring_buffers;
int rd_uring_buffers_register(struct rd_uring *ring, uint16_t group, uint32_t count, uint32_t size, int incremental,
                              struct rd_uring_buffers **out);
/// Gives buffer `id` back to the kernel.
void rd_uring_buffers_give_back(struct rd_uring_buffers *buffers, uint16_t id);
/// Where buffer `id` is.
void *rd_uring_buffers_address(const struct rd_uring_buffers *buffers, uint16_t id);
/// Unregisters (when `ring` is not NULL) and frees the buffers.
void rd_uring_buffers_free(struct rd_uring *ring, struct rd_uring_buffers *buffers);

/// /proc/sys/kernel/io_uring_disabled (0 allowed, 1 group only, 2 disabled), or -1 when absent.
int rd_uring_disabled_setting(void);
#endif
