// Signals delivered to descriptors: the handler writes the signal's number as one byte to the write
// end of every subscriber's pipe whose mask holds it (the self-pipe of libevent and libuv). Only
// async-signal-safe calls in the handler (write), errno kept. Slots are lock-free for the handler;
// subscribe/unsubscribe/install/restore are serialised by the caller (ReadinessNet's Signals lock).
#define _GNU_SOURCE
#include "CReadinessNet.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic int slot_fd[RD_SIGNAL_SLOTS];
static _Atomic uint64_t slot_mask[RD_SIGNAL_SLOTS];
/* Per slot, the signals whose byte a full pipe refused: the subscriber learns of them at its next drain
 * (rd_signal_take_overflow), so a full pipe loses repeats, never a kind (as libev's pending flags). */
static _Atomic uint64_t slot_overflow[RD_SIGNAL_SLOTS];
static _Atomic int handlers_running;
/* Bumped in a child made by fork: the subscriptions and counts it inherited are the parent's. */
static _Atomic unsigned long fork_generation;
static struct sigaction saved_action[RD_SIGNAL_MAX + 1];

static void rd_signal_handler(int signo) {
    int saved_errno = errno;
    atomic_fetch_add(&handlers_running, 1);
    if (signo >= 1 && signo <= RD_SIGNAL_MAX) {
        uint64_t bit = UINT64_C(1) << (signo - 1);
        unsigned char byte = (unsigned char)signo;
        for (int i = 0; i < RD_SIGNAL_SLOTS; i++) {
            if ((atomic_load(&slot_mask[i]) & bit) == 0) continue;
            int fd = atomic_load(&slot_fd[i]);
            // A full pipe refuses the byte: the signal is kept in the slot's overflow mask instead
            // (the pipe is readable, so the subscriber drains it and finds the mask).
            // Then one zero byte (which drain skips): a subscriber that emptied the pipe and took the
            // overflow between the refused write and the flag is woken again to find it.
            if (fd >= 0 && write(fd, &byte, 1) != 1) {
                atomic_fetch_or(&slot_overflow[i], bit);
                unsigned char wake = 0;
                (void)!write(fd, &wake, 1);
            }
        }
    }
    atomic_fetch_sub(&handlers_running, 1);
    errno = saved_errno;
}

int rd_signal_max(void) { return SIGRTMAX < RD_SIGNAL_MAX ? SIGRTMAX : RD_SIGNAL_MAX; }

int rd_signal_rtmin(void) { return SIGRTMIN; }

unsigned long rd_signal_generation(void) { return atomic_load(&fork_generation); }

// A child made by fork (without exec) keeps the handler and the parent's pipe write ends: it must
// not tell the parent of its own signals, and a handler that ran in another thread at the fork
// would leave the counter raised for ever. It has no subscription, so each signal gets back the
// action it had before ours (a forked worker's SIGTERM ends it again, as it would have).
static void rd_signal_after_fork_in_child(void) {
    for (int i = 0; i < RD_SIGNAL_SLOTS; i++) {
        atomic_store(&slot_mask[i], 0);
        atomic_store(&slot_fd[i], -1);
        atomic_store(&slot_overflow[i], 0);
    }
    atomic_store(&handlers_running, 0);
    atomic_fetch_add(&fork_generation, 1);
    for (int signo = 1; signo <= RD_SIGNAL_MAX && signo <= SIGRTMAX; signo++) {
        struct sigaction current;
        if (sigaction(signo, NULL, &current) == 0 && current.sa_handler == rd_signal_handler) {
            (void)sigaction(signo, &saved_action[signo], NULL);
        }
    }
}

// At load, not at the first subscription: that runs under the registry's lock, which a fork's prepare
// handler takes, while pthread_atfork may wait for a fork in progress (musl, glibc before 2.36 hold their
// atfork lock across the prepare handlers): each would wait for the other.
__attribute__((constructor)) static void rd_signal_initialise(void) {
    for (int i = 0; i < RD_SIGNAL_SLOTS; i++) atomic_store(&slot_fd[i], -1);
    pthread_atfork(NULL, NULL, rd_signal_after_fork_in_child);
}

int rd_signal_subscribe(int fd, uint64_t mask) {
    for (int i = 0; i < RD_SIGNAL_SLOTS; i++) {
        if (atomic_load(&slot_fd[i]) >= 0) continue;
        atomic_store(&slot_overflow[i], 0);
        atomic_store(&slot_fd[i], fd);
        atomic_store(&slot_mask[i], mask);
        return i;
    }
    errno = ENOSPC;
    return -1;
}

uint64_t rd_signal_take_overflow(int slot) {
    if (slot < 0 || slot >= RD_SIGNAL_SLOTS) return 0;
    return atomic_exchange(&slot_overflow[slot], 0);
}

void rd_signal_unsubscribe(int slot) {
    if (slot < 0 || slot >= RD_SIGNAL_SLOTS) return;
    atomic_store(&slot_mask[slot], 0);
    atomic_store(&slot_fd[slot], -1);
    // A handler that read the old descriptor may still be writing to it: wait until none runs, so
    // that the caller can close it (and its number be reused) safely. Handlers are a few writes long.
    while (atomic_load(&handlers_running) != 0) sched_yield();
}

int rd_signal_install(int signo) {
    if (signo < 1 || signo > rd_signal_max()) { errno = EINVAL; return -1; }
    // Ours already (a child after fork had its actions put back, so the caller's count may say
    // installed when it is not: it installs whenever a subscription wants the signal).
    struct sigaction current;
    if (sigaction(signo, NULL, &current) != 0) return -1;
    if (current.sa_handler == rd_signal_handler) return 1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = rd_signal_handler;
    action.sa_flags = SA_RESTART;
    sigfillset(&action.sa_mask);
    return sigaction(signo, &action, &saved_action[signo]);
}

int rd_signal_restore(int signo) {
    if (signo < 1 || signo > rd_signal_max()) { errno = EINVAL; return -1; }
    // Only over our own handler: an action someone installed after ours stays theirs.
    struct sigaction current;
    if (sigaction(signo, NULL, &current) != 0) return -1;
    if (current.sa_handler != rd_signal_handler) return 0;
    return sigaction(signo, &saved_action[signo], NULL);
}

int rd_signal_pipe(int ends[2]) { return pipe2(ends, O_NONBLOCK | O_CLOEXEC); }

int rd_signal_thread_pending(uint64_t *mask) {
    int fd = open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char text[8192];
    ssize_t n;
    do { n = read(fd, text, sizeof text - 1); } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    const char *line = strstr(text, "\nSigPnd:");
    if (!line) return -1;
    *mask = (uint64_t)strtoull(line + 8, NULL, 16);
    return 0;
}
