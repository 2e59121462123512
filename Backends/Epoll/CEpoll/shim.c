#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include "CEpoll.h"
#include <stdlib.h>

void *rd_epoll_events_allocate(int count) { return calloc((size_t)count, sizeof(struct epoll_event)); }
void rd_epoll_events_free(void *events) { free(events); }
int rd_epoll_replace(int fresh, int old) { return dup3(fresh, old, O_CLOEXEC); }
