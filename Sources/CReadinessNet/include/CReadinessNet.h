#ifndef CREADINESS_NET_H
#define CREADINESS_NET_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

/// Socket constants and calls that Swift's Glibc module does not export (macros from netinet/tcp.h,
/// _GNU_SOURCE functions) or exports awkwardly. Each returns -1 with errno set on failure.

/// send(2) with MSG_NOSIGNAL: a write to a reset peer fails with EPIPE instead of raising SIGPIPE.
ssize_t rd_net_send(int fd, const void *bytes, size_t count);
/// recv(MSG_PEEK): copies what is queued on a stream socket without taking it.
ssize_t rd_net_peek(int fd, void *bytes, size_t count);
/// sendmsg(2) of `count` buffers with MSG_NOSIGNAL.
ssize_t rd_net_sendv(int fd, const struct iovec *buffers, int count);
/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC, filling the peer's address.
int rd_net_accept(int listener, struct sockaddr *address, socklen_t *length);
/// A stream socket created non-blocking and close-on-exec in one call.
int rd_net_stream_socket(int domain);

/// Option levels and names.
int rd_net_ipproto_tcp(void);
int rd_net_tcp_nodelay(void);
int rd_net_tcp_keepidle(void);
int rd_net_tcp_keepintvl(void);
int rd_net_tcp_keepcnt(void);
int rd_net_so_reuseport(void);
int rd_net_ipv6_v6only(void);
int rd_net_ipproto_ipv6(void);
/// SO_LINGER: `enabled` 0 turns it off; otherwise close waits up to `seconds` (0: reset at once).
int rd_net_set_linger(int fd, int enabled, int seconds);
/// SO_LINGER read back: 0 with `*enabled` and `*seconds` set, or -1 with errno.
int rd_net_get_linger(int fd, int *enabled, int *seconds);
/// Bytes queued to read on a socket (ioctl FIONREAD), or -1 with errno.
int rd_net_bytes_queued(int fd);
/// Whether the peer of the connected Unix socket `fd` is shut down for reading, asked of the kernel's
/// socket diagnostics (NETLINK_SOCK_DIAG, UNIX_DIAG_SHUTDOWN) without sending anything: 1 yes, 0 no,
/// -1 with errno when it cannot be told (no peer, a peer closing, no diagnostics in this kernel or a
/// policy refusing them, a socket of another network namespace). Whether diagnostics answer at all is
/// learnt once per process (EOPNOTSUPP after that when they do not).
int rd_net_unix_peer_reading_shut(int fd);
/// The most buffers one sendmsg takes (IOV_MAX).
int rd_net_iov_max(void);

/// shutdown(2) directions.
int rd_net_shut_rd(void);
int rd_net_shut_wr(void);
int rd_net_shut_rdwr(void);

/// Signals delivered to descriptors (signals.c): a handler that writes each signal's number as one
/// byte to every subscribed descriptor whose mask holds it (bit n-1 for signal n).
#define RD_SIGNAL_SLOTS 256
#define RD_SIGNAL_MAX 64
/// The highest signal number that can be watched (SIGRTMAX, at most RD_SIGNAL_MAX).
int rd_signal_max(void);
/// SIGRTMIN: the first real-time signal the C library leaves to applications (glibc keeps 32 and 33
/// for its threads).
int rd_signal_rtmin(void);
/// How many times this process is a child made by fork (without exec) since the first subscription:
/// a subscription made in another generation is the parent's, its slot freed in the child.
unsigned long rd_signal_generation(void);
/// Claims a slot for `fd` (the non-blocking write end of a pipe) and the signals of `mask`; the slot,
/// or -1 with ENOSPC when all RD_SIGNAL_SLOTS are taken. Callers serialise the calls below.
int rd_signal_subscribe(int fd, uint64_t mask);
/// The signals whose byte a full pipe refused since the last call (bit n-1 for signal n), cleared.
uint64_t rd_signal_take_overflow(int slot);
/// Frees a slot; when it returns no handler writes to its descriptor any more.
void rd_signal_unsubscribe(int slot);
/// Installs the handler for `signo`, saving the action it replaces: 0; 1 when it is installed already
/// (nothing saved); -1 with errno.
int rd_signal_install(int signo);
/// Puts back the action `rd_signal_install` saved for `signo`; 0, or -1 with errno.
int rd_signal_restore(int signo);
/// A pipe whose both ends are non-blocking and close-on-exec (pipe2): 0, or -1 with errno.
int rd_signal_pipe(int ends[2]);
/// The signals pending for the calling thread itself, not the process's shared set (SigPnd in
/// /proc/thread-self/status; bit n-1 for signal n): 0, or -1 when it cannot be read.
int rd_signal_thread_pending(uint64_t *mask);

/// Datagram sockets (DatagramSocket.swift).
/// A datagram socket created non-blocking and close-on-exec in one call.
int rd_net_datagram_socket(int domain);
/// A connected pair of Unix datagram sockets, non-blocking and close-on-exec: 0, or -1 with errno.
int rd_net_datagram_pair(int ends[2]);
/// A connected pair of Unix stream sockets, non-blocking and close-on-exec.
int rd_net_stream_pair(int ends[2]);
/// sendto(2) with MSG_NOSIGNAL; `address` NULL sends to the connected peer.
ssize_t rd_net_sendto(int fd, const void *bytes, size_t count, const struct sockaddr *address, socklen_t length);
/// recvmsg(2) of one datagram with MSG_TRUNC: returns the datagram's real length (which may exceed
/// `count`), fills the source address, and sets `*truncated` to 1 when the datagram did not fit.
/// `peek` non-zero: MSG_PEEK, the datagram stays queued.
ssize_t rd_net_recvfrom(int fd, void *bytes, size_t count, struct sockaddr *address, socklen_t *length, int peek, int *truncated);
/// Dissolves a datagram socket's association (connect(2) to AF_UNSPEC): 0, or -1 with errno.
int rd_net_disconnect(int fd);
/// Joins (`join` 1) or leaves (0) the IPv4 or IPv6 multicast group `group` on interface `interface`
/// (0: the kernel's choice); EAFNOSUPPORT for another family.
int rd_net_multicast_membership(int fd, const struct sockaddr *group, unsigned interface, int join);
/// The interface outgoing multicast uses (IP_MULTICAST_IF by index, or IPV6_MULTICAST_IF).
int rd_net_multicast_interface(int fd, int domain, unsigned interface);
/// IP_TTL or IPV6_UNICAST_HOPS (`multicast` 0), IP_MULTICAST_TTL or IPV6_MULTICAST_HOPS (1).
int rd_net_set_hops(int fd, int domain, int multicast, int value);
/// The value ``rd_net_set_hops`` sets, read back into `*value` (IPv6's -1 reads back as the
/// route's default); 0 or -1 with errno.
int rd_net_get_hops(int fd, int domain, int multicast, int *value);
/// IP_MULTICAST_LOOP or IPV6_MULTICAST_LOOP.
int rd_net_set_multicast_loop(int fd, int domain, int enabled);
/// IP_MULTICAST_LOOP or IPV6_MULTICAST_LOOP read back into `*enabled` (0 or 1); 0 or -1 with errno.
int rd_net_get_multicast_loop(int fd, int domain, int *enabled);
/// The index of the interface named `name` (if_nametoindex), 0 when there is none.
unsigned rd_net_interface_index(const char *name);
/// 1 when a network interface has index `index` (if_indextoname), 0 when none has (ENXIO), -1 when
/// it cannot tell (no descriptor left for the question).
int rd_net_interface_exists(unsigned index);

/// Batched datagram I/O. `scratch` holds the message headers: `rd_net_mmsg_scratch_size(count)` bytes,
/// allocated once by the caller; every array has `count` elements, payload `i` is at
/// `payloads + i * slot`.
size_t rd_net_mmsg_scratch_size(unsigned count);
/// recvmmsg(2) of up to `count` datagrams, each with MSG_TRUNC: the number received (or -1 with
/// errno); for each, `lengths[i]` is its real length, `truncated[i]` 1 when it exceeded `slot`, and
/// `sources[i]`/`source_lengths[i]` its source.
int rd_net_recvmmsg(int fd, void *payloads, size_t slot, unsigned count, struct sockaddr_storage *sources,
                    socklen_t *source_lengths, size_t *lengths, int *truncated, void *scratch);
/// sendmmsg(2) of `count` datagrams with MSG_NOSIGNAL: `lengths[i]` bytes each, to `destinations[i]`
/// (length 0: the connected peer); the number sent, or -1 with errno.
int rd_net_sendmmsg(int fd, const void *payloads, size_t slot, const size_t *lengths,
                    const struct sockaddr_storage *destinations, const socklen_t *destination_lengths,
                    unsigned count, void *scratch);
/// The most messages one recvmmsg/sendmmsg takes (UIO_MAXIOV).
int rd_net_mmsg_max(void);
/// UDP_SEGMENT (GSO): the kernel splits one send into datagrams of `size` bytes (0: off).
int rd_net_set_udp_segment(int fd, int size);
/// UDP_GRO: 0, or -1 with errno (ENOPROTOOPT where the kernel lacks it).
int rd_net_set_udp_gro(int fd, int enabled);

#endif
