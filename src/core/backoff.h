/* SPDX-License-Identifier: MIT */
#ifndef HA_BACKOFF_H
#define HA_BACKOFF_H

#include <stdint.h>

/*
 * Waiting where a protocol has no event (v1 completion, v2 rings): spin
 * for a short window, then wait on a timerfd whose step doubles up to a
 * cap, never past the deadline.  The caller re-checks its condition (with
 * an acquire load) after every ha_backoff_wait() that returns 0.
 *
 * One HaBackoff per thread that waits: it owns the timerfd.  The counters
 * say what a wait cost (spins vs timer wake-ups), for stats and for the
 * CPU-cost figures in the docs.
 */
typedef struct HaBackoff {
        int tfd;
        uint64_t spin_ns;       /* spin window from begin */
        uint64_t max_step_ns;   /* timer step cap */
        uint64_t deadline;      /* absolute, CLOCK_MONOTONIC ns */
        uint64_t spin_until;
        uint64_t step;
        unsigned turns;         /* spin turns left before the next clock read */
        uint64_t spins;         /* counters over the HaBackoff's life; relaxed
                                 * atomics, since stats read them elsewhere */
        uint64_t timer_waits;
} HaBackoff;

/* -errno if the timerfd cannot be made.  Also asks the kernel for 1 µs
 * timer slack on the calling thread (the default 50 µs would blur the
 * first steps), so call it on the thread that will wait. */
int ha_backoff_init(HaBackoff *b, uint64_t spin_ns, uint64_t max_step_ns);
void ha_backoff_fini(HaBackoff *b);

/* Start one wait that gives up timeout_ns from now. */
void ha_backoff_begin(HaBackoff *b, uint64_t timeout_ns);
/* The same, giving up at an absolute time (ha_backoff_now()'s clock). */
void ha_backoff_begin_until(HaBackoff *b, uint64_t deadline);

/* One step: 0 to re-check the condition, -ETIMEDOUT once past the
 * deadline (the caller re-checks once more before it gives up). */
int ha_backoff_wait(HaBackoff *b);

uint64_t ha_backoff_now(void);

#endif
