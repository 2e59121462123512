#define _GNU_SOURCE
#include <sched.h>
#include "CReadinessConformance.h"

int rd_unshare_network(void) { return unshare(CLONE_NEWNET); }
