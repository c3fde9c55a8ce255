/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "cpu.h"

#define FIRST_STEP_NS 2000u

uint64_t ha_backoff_now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int ha_backoff_init(HaBackoff *b, uint64_t spin_ns, uint64_t max_step_ns)
{
        *b = (HaBackoff){ .spin_ns = spin_ns,
                          .max_step_ns = max_step_ns < FIRST_STEP_NS ? FIRST_STEP_NS : max_step_ns };
        b->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        if (b->tfd < 0)
                return -errno;
        /* Best effort: without it a 2 µs step can last 50 µs. */
        (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
        return 0;
}

void ha_backoff_fini(HaBackoff *b)
{
        if (b->tfd >= 0)
                close(b->tfd);
        b->tfd = -1;
}

void ha_backoff_begin(HaBackoff *b, uint64_t timeout_ns)
{
        uint64_t now = ha_backoff_now();

        b->deadline = now + timeout_ns;
        b->spin_until = now + b->spin_ns;
        b->step = FIRST_STEP_NS;
}

int ha_backoff_wait(HaBackoff *b)
{
        uint64_t now = ha_backoff_now(), at;
        struct itimerspec its = { 0 };
        uint64_t expirations;

        if (now >= b->deadline)
                return -ETIMEDOUT;
        if (now < b->spin_until) {
                /* A handful of relaxes per call keeps the clock reads cheap
                 * relative to the spin. */
                for (int i = 0; i < 32; i++)
                        cpu_relax();
                __atomic_fetch_add(&b->spins, 1, __ATOMIC_RELAXED);
                return 0;
        }
        at = now + b->step;
        if (at > b->deadline)
                at = b->deadline;
        if (b->step < b->max_step_ns) {
                b->step *= 2;
                if (b->step > b->max_step_ns)
                        b->step = b->max_step_ns;
        }
        its.it_value.tv_sec = (time_t)(at / 1000000000u);
        its.it_value.tv_nsec = (long)(at % 1000000000u);
        if (timerfd_settime(b->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
                return -errno;
        /* Blocks until the timer fires: an absolute time, so EINTR just
         * means read again. */
        while (read(b->tfd, &expirations, sizeof(expirations)) < 0)
                if (errno != EINTR && errno != EAGAIN)
                        return -errno;
        __atomic_fetch_add(&b->timer_waits, 1, __ATOMIC_RELAXED);
        return 0;
}
