/* SPDX-License-Identifier: MIT */
/* The adaptive waiter: it sees a condition that turns up late, gives up
 * at its deadline and not before, and past the spin window it wakes only
 * as often as its doubling step allows (no busy loop). */
#include <errno.h>
#include <pthread.h>

#include "backoff.h"
#include "check.h"
#include "cpu.h"

static HaBackoff waiter;
static int flag;

/* Sets the flag once the waiter is on its timer, so the test covers both
 * phases; bounded so a broken waiter fails rather than hangs. */
static void *setter(void *arg)
{
        uint64_t until = ha_backoff_now() + 10ull * 1000000000u;

        (void)arg;
        while (__atomic_load_n(&waiter.timer_waits, __ATOMIC_RELAXED) < 3 &&
               ha_backoff_now() < until)
                cpu_relax();
        __atomic_store_n(&flag, 1, __ATOMIC_RELEASE);
        return NULL;
}

static void test_sees_late_condition(void)
{
        pthread_t t;
        int r = 0;

        CHECK_EQ(ha_backoff_init(&waiter, 2000000, 1000000), 0);
        pthread_create(&t, NULL, setter, NULL);
        ha_backoff_begin(&waiter, 30ull * 1000000000u);
        while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
                if ((r = ha_backoff_wait(&waiter)) < 0)
                        break;
        pthread_join(t, NULL);
        CHECK_EQ(r, 0);
        CHECK(waiter.spins > 0);
        CHECK(waiter.timer_waits >= 3);
        ha_backoff_fini(&waiter);
}

static void test_deadline(void)
{
        HaBackoff b;
        const uint64_t timeout = 20000000, max_step = 1000000;  /* 20 ms, 1 ms */
        uint64_t t0, elapsed;
        int r;

        CHECK_EQ(ha_backoff_init(&b, 10000, max_step), 0);
        t0 = ha_backoff_now();
        ha_backoff_begin(&b, timeout);
        while ((r = ha_backoff_wait(&b)) == 0)
                ;
        elapsed = ha_backoff_now() - t0;
        CHECK_EQ(r, -ETIMEDOUT);
        CHECK(elapsed >= timeout);
        /* The step doubles per timer wait from 2 µs, up to the cap: how
         * far it got depends on the machine (qemu's timers are coarse), what
         * it is after k waits does not. */
        {
                uint64_t want = 2000;

                for (uint64_t k = 0; k < b.timer_waits && want < max_step; k++)
                        want = want * 2 > max_step ? max_step : want * 2;
                CHECK_EQ(b.step, want);
        }
        /* An absolute timer never fires early, so each wait lasts at least
         * its step: 2,4,..,512 µs then 1 ms steps fit the 20 ms at most
         * 9 + 20 + 1 times.  A busy loop would wake thousands of times. */
        CHECK(b.timer_waits <= 30);
        CHECK(b.timer_waits >= 1);
        ha_backoff_fini(&b);
}

int main(void)
{
        test_sees_late_condition();
        test_deadline();
        return check_done("backoff");
}
