#define _GNU_SOURCE
#include "CReadinessNet.h"
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>

ssize_t rd_net_send(int fd, const void *bytes, size_t count) { return send(fd, bytes, count, MSG_NOSIGNAL); }
ssize_t rd_net_peek(int fd, void *bytes, size_t count) { return recv(fd, bytes, count, MSG_PEEK); }

ssize_t rd_net_sendv(int fd, const struct iovec *buffers, int count) {
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = (struct iovec *)buffers;
    message.msg_iovlen = (size_t)count;
    return sendmsg(fd, &message, MSG_NOSIGNAL);
}

int rd_net_accept(int listener, struct sockaddr *address, socklen_t *length) {
    return accept4(listener, address, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int rd_net_stream_socket(int domain) { return socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

int rd_net_ipproto_tcp(void) { return IPPROTO_TCP; }
int rd_net_tcp_nodelay(void) { return TCP_NODELAY; }
int rd_net_tcp_keepidle(void) { return TCP_KEEPIDLE; }
int rd_net_tcp_keepintvl(void) { return TCP_KEEPINTVL; }
int rd_net_tcp_keepcnt(void) { return TCP_KEEPCNT; }
int rd_net_so_reuseport(void) { return SO_REUSEPORT; }
int rd_net_ipv6_v6only(void) { return IPV6_V6ONLY; }
int rd_net_ipproto_ipv6(void) { return IPPROTO_IPV6; }

int rd_net_set_linger(int fd, int enabled, int seconds) {
    struct linger value = { .l_onoff = enabled, .l_linger = seconds };
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, sizeof value);
}

int rd_net_get_linger(int fd, int *enabled, int *seconds) {
    struct linger value = { 0 };
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &value, &length) != 0) return -1;
    *enabled = value.l_onoff != 0;
    *seconds = value.l_linger;
    return 0;
}

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
int rd_net_iov_max(void) { return IOV_MAX; }

int rd_net_shut_rd(void) { return SHUT_RD; }
int rd_net_shut_wr(void) { return SHUT_WR; }
int rd_net_shut_rdwr(void) { return SHUT_RDWR; }


int rd_net_datagram_socket(int domain) { return socket(domain, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

int rd_net_datagram_pair(int ends[2]) {
    return socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends);
}

int rd_net_stream_pair(int ends[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends);
}

ssize_t rd_net_sendto(int fd, const void *bytes, size_t count, const struct sockaddr *address, socklen_t length) {
    return sendto(fd, bytes, count, MSG_NOSIGNAL, address, address ? length : 0);
}

ssize_t rd_net_recvfrom(int fd, void *bytes, size_t count, struct sockaddr *address, socklen_t *length, int peek, int *truncated) {
    struct iovec buffer = { .iov_base = bytes, .iov_len = count };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_name = address;
    message.msg_namelen = length ? *length : 0;
    message.msg_iov = &buffer;
    message.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &message, MSG_TRUNC | (peek ? MSG_PEEK : 0));
    if (n >= 0) {
        if (length) *length = message.msg_namelen;
        *truncated = (message.msg_flags & MSG_TRUNC) ? 1 : 0;
    }
    return n;
}

int rd_net_disconnect(int fd) {
    struct sockaddr unspecified;
    memset(&unspecified, 0, sizeof unspecified);
    unspecified.sa_family = AF_UNSPEC;
    return connect(fd, &unspecified, sizeof unspecified);
}

int rd_net_multicast_membership(int fd, const struct sockaddr *group, unsigned interface, int join) {
    if (group->sa_family == AF_INET) {
        struct ip_mreqn request;
        memset(&request, 0, sizeof request);
        request.imr_multiaddr = ((const struct sockaddr_in *)group)->sin_addr;
        request.imr_ifindex = (int)interface;
        return setsockopt(fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &request, sizeof request);
    }
    if (group->sa_family == AF_INET6) {
        struct ipv6_mreq request;
        memset(&request, 0, sizeof request);
        request.ipv6mr_multiaddr = ((const struct sockaddr_in6 *)group)->sin6_addr;
        request.ipv6mr_interface = interface;
        return setsockopt(fd, IPPROTO_IPV6, join ? IPV6_ADD_MEMBERSHIP : IPV6_DROP_MEMBERSHIP, &request, sizeof request);
    }
    errno = EAFNOSUPPORT;
    return -1;
}

int rd_net_multicast_interface(int fd, int domain, unsigned interface) {
    if (domain == AF_INET) {
        struct ip_mreqn request;
        memset(&request, 0, sizeof request);
        request.imr_ifindex = (int)interface;
        return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &request, sizeof request);
    }
    if (domain == AF_INET6) {
        int value = (int)interface;
        return setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &value, sizeof value);
    }
    errno = EAFNOSUPPORT;
    return -1;
}

int rd_net_set_hops(int fd, int domain, int multicast, int value) {
    if (domain == AF_INET) {
        if (multicast) {
            unsigned char ttl = (unsigned char)value;
            return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
        }
        return setsockopt(fd, IPPROTO_IP, IP_TTL, &value, sizeof value);
    }
    if (domain == AF_INET6)
        return setsockopt(fd, IPPROTO_IPV6, multicast ? IPV6_MULTICAST_HOPS : IPV6_UNICAST_HOPS, &value, sizeof value);
    errno = EAFNOSUPPORT;
    return -1;
}

int rd_net_get_hops(int fd, int domain, int multicast, int *value) {
    /* An int for every one of them: Linux answers IP_MULTICAST_TTL with an int when the buffer
       holds one (a byte only for a smaller buffer). */
    int result = 0;
    socklen_t length = sizeof result;
    int status;
    if (domain == AF_INET)
        status = getsockopt(fd, IPPROTO_IP, multicast ? IP_MULTICAST_TTL : IP_TTL, &result, &length);
    else if (domain == AF_INET6)
        status = getsockopt(fd, IPPROTO_IPV6, multicast ? IPV6_MULTICAST_HOPS : IPV6_UNICAST_HOPS, &result, &length);
    else {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (status != 0) return -1;
    *value = length == 1 ? (int)*(unsigned char *)&result : result;
    return 0;
}

int rd_net_get_multicast_loop(int fd, int domain, int *enabled) {
    int result = 0;
    socklen_t length = sizeof result;
    int status;
    if (domain == AF_INET)
        status = getsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &result, &length);
    else if (domain == AF_INET6)
        status = getsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &result, &length);
    else {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (status != 0) return -1;
    *enabled = (length == 1 ? *(unsigned char *)&result : result) != 0;
    return 0;
}

int rd_net_set_multicast_loop(int fd, int domain, int enabled) {
    if (domain == AF_INET) {
        unsigned char value = enabled ? 1 : 0;
        return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &value, sizeof value);
    }
    if (domain == AF_INET6) {
        unsigned value = enabled ? 1 : 0;
        return setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &value, sizeof value);
    }
    errno = EAFNOSUPPORT;
    return -1;
}

unsigned rd_net_interface_index(const char *name) { return if_nametoindex(name); }

int rd_net_interface_exists(unsigned index) {
    char name[IF_NAMESIZE];
    if (if_indextoname(index, name) != NULL) return 1;
    /* ENXIO: no such interface. Anything else (if_indextoname opens a socket: EMFILE) says nothing. */
    return errno == ENXIO ? 0 : -1;
}

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024
#endif

size_t rd_net_mmsg_scratch_size(unsigned count) { return (size_t)count * (sizeof(struct mmsghdr) + sizeof(struct iovec)); }

int rd_net_recvmmsg(int fd, void *payloads, size_t slot, unsigned count, struct sockaddr_storage *sources,
                    socklen_t *source_lengths, size_t *lengths, int *truncated, void *scratch) {
    struct mmsghdr *headers = scratch;
    struct iovec *buffers = (struct iovec *)(headers + count);
    memset(headers, 0, sizeof *headers * count);
    for (unsigned i = 0; i < count; i++) {
        buffers[i].iov_base = (char *)payloads + (size_t)i * slot;
        buffers[i].iov_len = slot;
        headers[i].msg_hdr.msg_iov = &buffers[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &sources[i];
        headers[i].msg_hdr.msg_namelen = sizeof sources[i];
    }
    int n = recvmmsg(fd, headers, count, MSG_TRUNC | MSG_WAITFORONE, NULL);
    for (int i = 0; i < n; i++) {
        lengths[i] = headers[i].msg_len;
        truncated[i] = (headers[i].msg_hdr.msg_flags & MSG_TRUNC) ? 1 : 0;
        source_lengths[i] = headers[i].msg_hdr.msg_namelen;
    }
    return n;
}

int rd_net_sendmmsg(int fd, const void *payloads, size_t slot, const size_t *lengths,
                    const struct sockaddr_storage *destinations, const socklen_t *destination_lengths,
                    unsigned count, void *scratch) {
    struct mmsghdr *headers = scratch;
    struct iovec *buffers = (struct iovec *)(headers + count);
    memset(headers, 0, sizeof *headers * count);
    for (unsigned i = 0; i < count; i++) {
        buffers[i].iov_base = (char *)payloads + (size_t)i * slot;
        buffers[i].iov_len = lengths[i] < slot ? lengths[i] : slot;   // a truncated slot: what it holds
        headers[i].msg_hdr.msg_iov = &buffers[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        if (destination_lengths[i] > 0) {
            headers[i].msg_hdr.msg_name = (void *)&destinations[i];
            headers[i].msg_hdr.msg_namelen = destination_lengths[i];
        }
    }
    return sendmmsg(fd, headers, count, MSG_NOSIGNAL);
}

int rd_net_mmsg_max(void) { return UIO_MAXIOV; }

int rd_net_set_udp_segment(int fd, int size) { return setsockopt(fd, SOL_UDP, UDP_SEGMENT, &size, sizeof size); }

int rd_net_set_udp_gro(int fd, int enabled) { return setsockopt(fd, SOL_UDP, UDP_GRO, &enabled, sizeof enabled); }

int rd_net_bytes_queued(int fd) {
    int count = 0;
    return ioctl(fd, FIONREAD, &count) == 0 ? count : -1;
}

/* The kernel's sk_shutdown bit for a side that reads no more (include/net/sock.h). */
enum { rd_receive_shut_down = 1 };
/* A diagnostics request's cookie that matches any socket (INET_DIAG_NOCOOKIE). */
static const unsigned int rd_any_cookie = ~0U;

/* One exact UNIX_DIAG lookup of the socket whose inode is `inode`: its shutdown bits and its peer's
   inode (0: none). 0, or -1 with errno. */
static int rd_unix_diag(int netlink, unsigned int inode, unsigned int *peer, int *shutdown_bits) {
    struct { struct nlmsghdr header; struct unix_diag_req request; } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST;
    message.request.sdiag_family = AF_UNIX;
    message.request.udiag_states = ~0U;
    message.request.udiag_ino = inode;
    message.request.udiag_show = UDIAG_SHOW_PEER;
    message.request.udiag_cookie[0] = rd_any_cookie;
    message.request.udiag_cookie[1] = rd_any_cookie;
    struct sockaddr_nl kernel;
    memset(&kernel, 0, sizeof kernel);
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do { sent = sendto(netlink, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel); } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -1;
    long reply[1024];
    ssize_t n;
    /* The kernel answers within sendto: the reply is queued, a receive never waits for it. */
    do { n = recv(netlink, reply, sizeof reply, MSG_DONTWAIT); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    struct nlmsghdr *header = (struct nlmsghdr *)reply;
    if (!NLMSG_OK(header, (size_t)n)) { errno = EPROTO; return -1; }
    if (header->nlmsg_type == NLMSG_ERROR) {
        if (header->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) { errno = EPROTO; return -1; }
        const struct nlmsgerr *failure = NLMSG_DATA(header);
        errno = failure->error < 0 ? -failure->error : EPROTO;
        return -1;
    }
    if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY || header->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg))) {
        errno = EPROTO;
        return -1;
    }
    const struct unix_diag_msg *found = NLMSG_DATA(header);
    int left = (int)(header->nlmsg_len - NLMSG_LENGTH(sizeof *found));
    *peer = 0;
    *shutdown_bits = -1;
    for (const struct rtattr *attribute = (const struct rtattr *)(found + 1); RTA_OK(attribute, left); attribute = RTA_NEXT(attribute, left)) {
        if (attribute->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(attribute) >= sizeof(unsigned int)) {
            memcpy(peer, RTA_DATA(attribute), sizeof(unsigned int));
        } else if (attribute->rta_type == UNIX_DIAG_SHUTDOWN && RTA_PAYLOAD(attribute) >= 1) {
            *shutdown_bits = *(const unsigned char *)RTA_DATA(attribute);
        }
    }
    if (*shutdown_bits < 0) { errno = EPROTO; return -1; }
    return 0;
}

static int rd_peer_reading_shut(int fd) {
    struct stat status;
    if (fstat(fd, &status) != 0) return -1;
    int netlink = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (netlink < 0) return -1;
    unsigned int peer = 0;
    int bits = 0, result = -1;
    if (rd_unix_diag(netlink, (unsigned int)status.st_ino, &peer, &bits) == 0) {
        if (peer == 0) errno = ENOTCONN;
        else if (rd_unix_diag(netlink, peer, &peer, &bits) == 0) result = (bits & rd_receive_shut_down) != 0;
    }
    int saved = errno;
    close(netlink);
    errno = saved;
    return result;
}

/* Whether this process can ask Unix socket diagnostics (0: not yet known, 1: yes, -1: no), learnt
   once with a pair of its own: a kernel without them, or a policy refusing them, costs no more than
   that one question (the first may load the kernel's unix_diag module). */
static int rd_unix_diagnostics;

int rd_net_unix_peer_reading_shut(int fd) {
    int known = __atomic_load_n(&rd_unix_diagnostics, __ATOMIC_RELAXED);
    if (known == 0) {
        int pair[2];
        known = -1;
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) == 0) {
            if (rd_peer_reading_shut(pair[0]) == 0) known = 1;
            close(pair[0]);
            close(pair[1]);
        }
        __atomic_store_n(&rd_unix_diagnostics, known, __ATOMIC_RELAXED);
    }
    if (known < 0) { errno = EOPNOTSUPP; return -1; }
    return rd_peer_reading_shut(fd);
}
