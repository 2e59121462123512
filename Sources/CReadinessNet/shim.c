#define _GNU_SOURCE
#include "CReadinessNet.h"
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

ssize_t rd_net_send(int fd, const void *bytes, size_t count) { return send(fd, bytes, count, MSG_NOSIGNAL); }

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

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
int rd_net_iov_max(void) { return IOV_MAX; }

int rd_net_shut_rd(void) { return SHUT_RD; }
int rd_net_shut_wr(void) { return SHUT_WR; }
int rd_net_shut_rdwr(void) { return SHUT_RDWR; }
