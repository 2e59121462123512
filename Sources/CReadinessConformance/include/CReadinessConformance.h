#ifndef CREADINESS_CONFORMANCE_H
#define CREADINESS_CONFORMANCE_H

/// unshare(CLONE_NEWNET) for the calling thread (needs _GNU_SOURCE, hidden from Swift's Glibc): the
/// conformance suite's isolated-network fixture. 0, or -1 with errno set.
int rd_unshare_network(void);

#endif
