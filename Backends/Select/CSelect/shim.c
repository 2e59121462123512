#include "CSelect.h"
#include <stddef.h>
#include <sys/select.h>

int rd_fd_setsize(void) { return FD_SETSIZE; }
int rd_fd_set_bytes(void) { return (int)sizeof(fd_set); }
void rd_fd_zero(void *set) { FD_ZERO((fd_set *)set); }

int rd_select(int nfds, void *readfds, void *writefds, long seconds, long microseconds) {
    struct timeval tv = {.tv_sec = seconds, .tv_usec = microseconds};
    return select(nfds, (fd_set *)readfds, (fd_set *)writefds, NULL, seconds < 0 ? NULL : &tv);
}
