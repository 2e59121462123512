#ifndef CREADINESS_BENCH_H
#define CREADINESS_BENCH_H
// The benchmark's contenders written in C, behind plain C functions and opaque pointers: raw loops
// over epoll_wait, poll and select (the physical limit), and libevent's own event loop. No libevent
// (or epoll) header is visible to Swift; the .c files include them.
#include <stdint.h>

/// The mechanism a C contender drives.
enum {
    RB_EPOLL = 0,
    RB_POLL = 1,
    RB_SELECT = 2,
    /// libevent's event loop (method: NULL for libevent's own choice, or "epoll"/"poll"/"select").
    RB_LIBEVENT = 3,
};

/// How the ring handles each event (scenarios 1 and 4).
enum {
    /// Level-triggered, persistent registrations (libevent's test/bench.c).
    RB_RING_PLAIN = 0,
    /// One-shot registrations re-armed after every event (epoll: EPOLL_CTL_MOD; libevent: a
    /// non-persistent event added again).
    RB_RING_REARM = 1,
    /// The connect state machine's pattern: after every event, deregister and register again.
    RB_RING_REREGISTER = 2,
};

/// CLOCK_MONOTONIC in nanoseconds: the one clock every contender is timed with.
int64_t rb_now_ns(void);
/// CLOCK_THREAD_CPUTIME_ID in nanoseconds (diagnostics: on-CPU time of the calling thread).
int64_t rb_thread_cpu_ns(void);
/// FD_SETSIZE.
int rb_fd_setsize(void);
/// The libevent version string and the method libevent picks by default here.
const char *rb_libevent_version(void);
const char *rb_libevent_default_method(void);
/// 1 when this libevent has `method`.
int rb_libevent_supports(const char *method);

// MARK: Descriptors (shared by every contender, so that all do the same system calls)

/// A non-blocking AF_UNIX stream socketpair; 0 or -1 (errno).
int rb_socketpair(int fds[2]);
/// A non-blocking eventfd (never written: an idle descriptor that is never readable).
int rb_idle_fd(void);
/// One byte with send(2) / recv(2).
int rb_send_byte(int fd);
int rb_recv_byte(int fd);
/// Drains everything readable (between rounds, if a round was cut short). Returns bytes read.
long rb_drain(int fd);
/// A non-blocking TCP listener on 127.0.0.1, ephemeral port, SO_REUSEADDR; -1 on failure.
int rb_listener(int backlog, int *port);
/// Accepts (accept4, non-blocking) and closes every pending connection; returns how many.
int rb_accept_drain(int listener);
/// Sets SO_LINGER {1, 0} and closes: an abortive close that leaves no TIME_WAIT behind, so 20,000
/// connects per round do not exhaust the ephemeral ports. Every connect contender closes this way.
void rb_abort_close(int fd);
/// A non-blocking TCP socket connecting to 127.0.0.1:port (in *fd_out, -1 if socket failed): 0 when
/// connected at once, else connect's errno (EINPROGRESS while the kernel connects).
int rb_tcp_connect(int port, int *fd_out);
/// getsockopt(SOL_SOCKET, SO_ERROR): the pending error (0: connected), or getsockopt's errno.
int rb_socket_error(int fd);
/// The highest open descriptor of the process (for the FD_SETSIZE check).
int rb_highest_open_fd(void);
/// One malloc and one free, for the allocation counter's self-test (cannot be optimised away).
void rb_malloc_probe(void);
/// 0 if fd is open, else errno.
int rb_check_fd(int fd);

// MARK: Like-for-like: the system calls the contract adds, made by a C loop too

/// What a like-for-like C loop adds to the plain one, so that its ratio measures the Swift code alone.
enum {
    /// After SO_ERROR says connected: getpeername, then getsockname (Docs/Connect.md, rule 7).
    RB_NAMES = 1,
    /// Before each registration or re-registration: one fstat, refusing regular files and directories
    /// (the contract's descriptor check on backends whose kernel call does not check: poll, select,
    /// libevent).
    RB_CHECKS = 2,
    /// A waker: one more descriptor (an idle eventfd) in the watched set, as every Readiness poller has.
    RB_WAKER = 4,
    /// libevent: the base made with EVENT_BASE_FLAG_PRECISE_TIMER (CLOCK_MONOTONIC, and with the epoll
    /// method a timerfd set on every dispatch), as Readiness's libevent backend makes it.
    RB_PRECISE = 8,
    /// libevent's poll method: for each fired event, fcntl(F_GETFD) (libevent reports POLLNVAL as
    /// read|write, so Readiness must ask whether the descriptor is still open).
    RB_OPEN_CHECK = 16,
};
/// The contract's per-change descriptor check: 0, or -1 (closed, regular file, directory).
int rb_contract_check(int fd);
/// The connect state machine's confirmation beyond SO_ERROR: 0 when the socket has a peer and a name.
int rb_confirm_names(int fd);

// MARK: Scenario 1 and 4: the ring (libevent's test/bench.c)

typedef struct rb_ring rb_ring;
/// Registers every read end (outside the timed part). NULL on failure with a reason in `error`.
rb_ring *rb_ring_new(int kind, const char *method, int flags, int mode, const int *read_fds, const int *write_fds, int n,
                     char *error, int error_length);
/// One round: `active` first writes (untimed), then the timed loop until every event passed along the
/// ring was read. Returns the timed nanoseconds (or -1 on failure); `waits` gets the number of loop
/// passes and `events` the number of events handled.
int64_t rb_ring_round(rb_ring *ring, int active, int writes, int64_t *waits, int64_t *events);
void rb_ring_free(rb_ring *ring);

// MARK: Scenario 2: one ready descriptor among N

typedef struct rb_scale rb_scale;
/// Registers `fds` (readable; `fds[active_index]` is the read end of a socketpair whose other end is
/// `write_fd`).
rb_scale *rb_scale_new(int kind, const char *method, int flags, const int *fds, int n, int active_index, int write_fd,
                       char *error, int error_length);
/// `iterations` times: send one byte, wait (non-blocking), recv it. Returns timed nanoseconds or -1.
int64_t rb_scale_round(rb_scale *scale, int iterations, int64_t *waits);
void rb_scale_free(rb_scale *scale);

// MARK: Scenario 3: connect churn

typedef struct rb_connect rb_connect;
/// A poller with `listener` registered for readable (accept side, same thread).
rb_connect *rb_connect_new(int kind, const char *method, int flags, int listener, int port, int max_in_flight,
                           char *error, int error_length);
/// `total` connects to 127.0.0.1:port, `in_flight` at a time, each confirmed by SO_ERROR, accepted and
/// closed. Returns timed nanoseconds (up to the last event handled) or -1; `failures` gets connects
/// whose SO_ERROR was not 0 (or whose socket/connect failed), `waits` the number of loop passes, and
/// `unaccepted` the connections the client saw succeed but the listener never produced (the client's
/// abortive close can beat the server's handshake processing): the round ends once every connect is
/// done and no accept came for RB_ACCEPT_GRACE_MS.
int64_t rb_connect_round(rb_connect *c, int total, int in_flight, int64_t *failures, int64_t *waits,
                         int64_t *unaccepted, int64_t deadline_ns);
/// How long a round waits for accepts that may never come, once every connect is done.
enum { RB_ACCEPT_GRACE_MS = 100 };
void rb_connect_free(rb_connect *c);

/// The async benchmark's like-for-like C loop (readiness-async-bench --only cpu): client side only (the
/// listener is another thread's), one epoll, `in_flight` connects at a time. Per connect: socket
/// (SOCK_NONBLOCK | SOCK_CLOEXEC), connect, EPOLL_CTL_ADD (EPOLLOUT), epoll_wait, getsockopt(SO_ERROR),
/// getpeername, getsockname, EPOLL_CTL_DEL, close. Returns the connects that failed, or -1 when the
/// loop itself failed (or waited 5 s for nothing).
int64_t rb_client_connect_churn(int port, int total, int in_flight);
// MARK: UDP echo (readiness-udp-bench): the C servers and the one load client every server gets

/// The datagrams one recvmmsg or sendmmsg of the C batched server moves at most (the batch of
/// Examples/readiness-udp-echo and of the Readiness batched contender).
enum { RB_UDP_BATCH = 64 };
/// The bytes of each slot of the C servers (the largest datagram they echo whole).
enum { RB_UDP_SLOT = 2048 };
/// The client's receive timeout: a datagram not back by then is counted lost (the window refilled).
enum { RB_UDP_LOSS_TIMEOUT_MS = 100 };

/// A non-blocking UDP socket bound to 127.0.0.1, port chosen by the kernel (in *port); -1 on failure.
int rb_udp_bound(int *port);
/// Echoes for ever (returns only on an error, -1 with errno): epoll_wait (level-triggered), then
/// recvmmsg of up to RB_UDP_BATCH datagrams and one sendmmsg of them back in place, until recvmmsg
/// would block.
int rb_udp_echo_batched(int fd);
/// The same loop one datagram per system call: recvfrom then sendto, until recvfrom would block.
int rb_udp_echo_single(int fd);

/// What one load run saw. Only datagrams that came back inside the measured interval count.
typedef struct {
    int64_t sent;        ///< datagrams sent in the measured interval
    int64_t echoed;      ///< echoes received intact, in order, in the measured interval
    int64_t lost;        ///< datagrams never seen back (a gap in the sequence, or the timeout)
    int64_t late;        ///< echoes older than one already counted lost (not counted as echoed)
    int64_t corrupt;     ///< echoes of the wrong length or content
    int64_t elapsed_ns;  ///< the measured interval
    int64_t client_cpu_ns; ///< the client thread's CPU over the measured interval
} rb_udp_load_result;

/// The load client: a connected UDP socket to 127.0.0.1:port keeping `window` datagrams of `size`
/// bytes (8 or more: a sequence number, then a pattern) in flight, sending what the window allows
/// with one sendmmsg and receiving with recvmmsg (MSG_WAITFORONE); checks each echo's sequence
/// number, length and last byte. Runs `warmup_ns` unmeasured, then measures `duration_ns` (or, when
/// `datagrams` > 0, until that many are echoed: for the system-call counts). 0, or -1 with a reason.
int rb_udp_load(int port, int size, int window, int64_t warmup_ns, int64_t duration_ns, int64_t datagrams,
                rb_udp_load_result *result, char *error, int error_length);

#endif
