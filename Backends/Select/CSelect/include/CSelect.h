#ifndef READINESS_CSELECT_H
#define READINESS_CSELECT_H
// FD_SET and friends are macros, which Swift does not import. The sets are passed as void * so that
// this header never depends on how a given libc spells fd_set.

/// FD_SETSIZE: select can hold descriptors 0 ..< rd_fd_setsize().
int rd_fd_setsize(void);
/// sizeof(fd_set), for allocating sets.
int rd_fd_set_bytes(void);
void rd_fd_zero(void *set);
/// Callers must have checked 0 <= fd < FD_SETSIZE.
void rd_fd_set(int fd, void *set);
void rd_fd_clr(int fd, void *set);
int rd_fd_isset(int fd, const void *set);
/// select(nfds, readfds, writefds, NULL, timeout); seconds < 0 means no timeout.
int rd_select(int nfds, void *readfds, void *writefds, long seconds, long microseconds);
#endif
