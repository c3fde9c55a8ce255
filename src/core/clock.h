/* SPDX-License-Identifier: MIT */
#ifndef HA_CLOCK_H
#define HA_CLOCK_H

#include <stdint.h>
#include <time.h>

/*
 * The one clock for timeouts, deadlines and latencies: CLOCK_MONOTONIC,
 * which no wall-clock step moves.  Header-only, so libhyperamp and the
 * test clients use the same one without linking core.
 */
static inline uint64_t ha_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int64_t ha_mono_ms(void)
{
        return (int64_t)(ha_now_ns() / 1000000u);
}

/* ms from now as an absolute CLOCK_MONOTONIC time, for a timed wait on a
 * condition variable set to that clock. */
static inline struct timespec ha_mono_deadline(unsigned ms)
{
        uint64_t t = ha_now_ns() + (uint64_t)ms * 1000000u;

        return (struct timespec){ (time_t)(t / 1000000000u), (long)(t % 1000000000u) };
}

#endif
