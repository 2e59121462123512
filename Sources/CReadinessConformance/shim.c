#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
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
