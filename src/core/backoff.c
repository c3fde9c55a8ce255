/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "cpu.h"

#define FIRST_STEP_NS 2000u
#define TURNS_PER_CLOCK 16u     /* spin turns per clock read */

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

static void start(HaBackoff *b, uint64_t now, uint64_t deadline)
{
        b->deadline = deadline;
        b->spin_until = now + b->spin_ns;
        b->step = FIRST_STEP_NS;
        /* The clock was just read: the first turns need not read it. */
        b->turns = b->spin_ns && deadline > now ? TURNS_PER_CLOCK : 0;
}

void ha_backoff_begin(HaBackoff *b, uint64_t timeout_ns)
{
        uint64_t now = ha_backoff_now();

        start(b, now, now + timeout_ns);
}

void ha_backoff_begin_until(HaBackoff *b, uint64_t deadline)
{
        start(b, ha_backoff_now(), deadline);
}

static void spin_turn(HaBackoff *b)
{
        cpu_relax();
        /* One writer (this thread): no read-modify-write in the spin. */
        __atomic_store_n(&b->spins, __atomic_load_n(&b->spins, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
}

int ha_backoff_wait(HaBackoff *b)
{
        struct itimerspec its = { 0 };
        uint64_t now, at, expirations;

        /* Spinning: one turn per call, so the caller looks again within a
         * turn of its condition turning true (32 turns per look cost up to
         * 0.7 µs on a core whose pause is 65 cycles); the clock only every
         * TURNS_PER_CLOCK turns. */
        if (b->turns) {
                b->turns--;
                spin_turn(b);
                return 0;
        }
        now = ha_backoff_now();
        if (now >= b->deadline)
                return -ETIMEDOUT;
        if (now < b->spin_until) {
                b->turns = TURNS_PER_CLOCK - 1;
                spin_turn(b);
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
