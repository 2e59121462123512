// Links the system's libevent (pkg-config: libevent; Debian: libevent-dev). Deliberately includes no
// libevent header: event2/event-config.h defines _GNU_SOURCE, which changes glibc's fd_set and clashes
// with Swift's Glibc module. The CLibevent shim includes them in its .c file only.
