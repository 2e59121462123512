#ifndef READINESS_CSELECT_H
#define READINESS_CSELECT_H
// FD_SET and friends are macros, which Swift does not import. The sets are passed as void * so that
// callers never depend on how a given libc spells fd_set's fields. The per-descriptor ones are inline: a wait
// tests every registered descriptor, and a call each would cost more than the test.
#include <sys/select.h>

/// FD_SETSIZE: select can hold descriptors 0 ..< rd_fd_setsize().
int rd_fd_setsize(void);
/// sizeof(fd_set), for allocating sets.
int rd_fd_set_bytes(void);
void rd_fd_zero(void *set);
/// Callers must have checked 0 <= fd < FD_SETSIZE.
static inline void rd_fd_set(int fd, void *set) { FD_SET(fd, (fd_set *)set); }
static inline void rd_fd_clr(int fd, void *set) { FD_CLR(fd, (fd_set *)set); }
static inline int rd_fd_isset(int fd, const void *set) { return FD_ISSET(fd, (const fd_set *)set); }
/// The bytes of a set that hold descriptors 0 ... fd (a wait copies only those).
static inline int rd_fd_set_bytes_through(int fd) {
    /* fd_set is an array of longs in glibc and musl alike (its element type's name differs). */
    int bits = (int)(8 * sizeof(long));
    return (fd / bits + 1) * (int)sizeof(long);
}
/// select(nfds, readfds, writefds, NULL, timeout); seconds < 0 means no timeout; writefds may be NULL.
int rd_select(int nfds, void *readfds, void *writefds, long seconds, long microseconds);
#endif
