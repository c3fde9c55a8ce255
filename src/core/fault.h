/* SPDX-License-Identifier: MIT */
#ifndef HA_FAULT_H
#define HA_FAULT_H

#include "hyperamp-config.h"

/* The seams below exist only in a build with -Dtest_seams=true; in any
 * other they are empty inlines, and no $HYPERAMP_TEST_* is ever read. */
#if HA_TEST_SEAMS

/*
 * Fault injection for tests: $HYPERAMP_TEST_FAIL="site:ERRNO[,site:ERRNO]"
 * makes ha_fault("site") return -ERRNO (a number or a name such as ENOMEM),
 * so a test can make shm_open, ftruncate, mmap or an allocation fail at
 * start-up without root or a full disk.  0 when not asked for.
 */
int ha_fault(const char *site);

/*
 * Crash points for recovery tests: $HYPERAMP_TEST_CRASH="site[:N]" makes the
 * Nth pass (default the first) through ha_crash_point("site") SIGKILL the
 * whole process, at the worst moment a real crash could pick.  Does nothing
 * when not asked for.
 */
void ha_crash_point(const char *site);

/*
 * Pause points for race tests: $HYPERAMP_TEST_PAUSE="site" makes the first
 * pass through ha_pause_point("site") stop the whole process (SIGSTOP)
 * until a SIGCONT, so a test can hold it at a chosen moment and act while
 * it is there.  Does nothing when not asked for.
 */
void ha_pause_point(const char *site);
#else
static inline int ha_fault(const char *site)
{
        (void)site;
        return 0;
}

static inline void ha_crash_point(const char *site)
{
        (void)site;
}

static inline void ha_pause_point(const char *site)
{
        (void)site;
}
#endif

/* What a crash leaves in shared memory: one thread's stores in program
 * order (the kill lands between two instructions and the stores before it
 * still drain).  Only the compiler could reorder them; this stops it. */
#define ha_crash_order() __atomic_signal_fence(__ATOMIC_SEQ_CST)

#endif
