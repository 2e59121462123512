#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include "CReadinessConformance.h"

int rd_unshare_network(void) { return unshare(CLONE_NEWNET); }

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
/* LANDLOCK_ACCESS_FS_EXECUTE: any handled right makes a valid ruleset. */
#define RD_LANDLOCK_ACCESS_FS_EXECUTE 1ULL

int rd_landlock_ruleset(void) {
    struct { uint64_t handled_access_fs; } attribute = { RD_LANDLOCK_ACCESS_FS_EXECUTE };
    return (int)syscall(SYS_landlock_create_ruleset, &attribute, sizeof attribute, 0);
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
extern char **environ;

int rd_spawn_pidfd_child(int *release, int *pid) {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) return -1;
    posix_spawn_file_actions_t actions;
    int status = posix_spawn_file_actions_init(&actions);
    if (status == 0) {
        status = posix_spawn_file_actions_adddup2(&actions, ends[0], STDIN_FILENO);
        /* What it copies goes nowhere: the parent's standard output may be a JSON report. */
        if (status == 0) status = posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        char *argv[] = { "head", "-c", "1", NULL };
        pid_t child = -1;
        if (status == 0) status = posix_spawnp(&child, "head", &actions, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&actions);
        if (status == 0) {
            close(ends[0]);
            int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
            if (pidfd >= 0) {
                *release = ends[1];
                *pid = child;
                return pidfd;
            }
            int saved = errno;
            kill(child, SIGKILL);   /* not reaped yet: the number is still the child's */
            while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
            close(ends[1]);
            errno = saved;
            return -1;
        }
    }
    close(ends[0]);
    close(ends[1]);
    errno = status;
    return -1;
}

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

void rd_end_pidfd_child(int pidfd, int pid) {
    /* Through the pidfd, not the number: a child already reaped (SIGCHLD ignored) may have given
       its number to another process. */
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    siginfo_t info;
    int status;
    while ((status = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED)) < 0 && errno == EINTR) {}
    if (status < 0 && errno == EINVAL) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    close(pidfd);
}
