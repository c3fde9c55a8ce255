/* SPDX-License-Identifier: MIT */
/* The worker pool: every job runs once, completions arrive through the
 * eventfd (waited on with poll, never by sleeping), idle-wait is exact. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "check.h"
#include "workers.h"

#define CAP 255

static unsigned runs[CAP];

static void job(void *userdata, HaJob *jobs, size_t n, unsigned worker)
{
        (void)userdata;
        (void)worker;
        for (size_t i = 0; i < n; i++)
                __atomic_fetch_add(&runs[HA_JOB_INDEX(jobs[i])], 1, __ATOMIC_RELAXED);
}

/* A job that holds its worker until let go: a service stuck for good. */
static pthread_mutex_t stuck_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stuck_cond = PTHREAD_COND_INITIALIZER;
static bool stuck_entered, stuck_released;
static unsigned stuck_runs;

static void stuck_job(void *userdata, HaJob *jobs, size_t n, unsigned worker)
{
        (void)userdata, (void)jobs, (void)worker;
        pthread_mutex_lock(&stuck_lock);
        stuck_runs += (unsigned)n;
        stuck_entered = true;
        pthread_cond_broadcast(&stuck_cond);
        while (!stuck_released)
                pthread_cond_wait(&stuck_cond, &stuck_lock);
        pthread_mutex_unlock(&stuck_lock);
}

/* ha_pool_stop with drop: a worker stuck in a job is reported, not waited
 * for; the jobs no worker had started are not run. */
static void test_stop_with_a_stuck_worker(void)
{
        HaJob jobs[3] = { HA_JOB(0, 0), HA_JOB(0, 1), HA_JOB(0, 2) };
        HaPool *p;

        CHECK_EQ(ha_pool_new(1, CAP, stuck_job, NULL, &p), 0);
        CHECK_EQ(ha_pool_submit(p, jobs, 1), 0);
        pthread_mutex_lock(&stuck_lock);
        while (!stuck_entered)
                pthread_cond_wait(&stuck_cond, &stuck_lock);
        pthread_mutex_unlock(&stuck_lock);
        CHECK_EQ(ha_pool_submit(p, jobs + 1, 2), 0);    /* queued behind it */
        CHECK_EQ(ha_pool_stop(p, true, 50), -ETIMEDOUT);
        pthread_mutex_lock(&stuck_lock);
        stuck_released = true;
        pthread_cond_broadcast(&stuck_cond);
        pthread_mutex_unlock(&stuck_lock);
        CHECK_EQ(ha_pool_stop(p, true, -1), 0);
        CHECK_EQ(stuck_runs, 1);                        /* the two queued were dropped */
        ha_pool_free(p);
}

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static void gated_job(void *userdata, HaJob *jobs, size_t n, unsigned worker)
{
        pthread_mutex_lock(&gate_lock);
        while (!gate_open)
                pthread_cond_wait(&gate_cond, &gate_lock);
        pthread_mutex_unlock(&gate_lock);
        job(userdata, jobs, n, worker);
}

/* Growing a pool with jobs running and done: nothing lost, room for more. */
static void test_grow(void)
{
        HaJob jobs[9], done[16];
        unsigned seen[9] = { 0 };
        size_t have = 0;
        HaPool *p;

        memset(runs, 0, sizeof(runs));
        CHECK_EQ(ha_pool_new(1, 4, gated_job, NULL, &p), 0);
        for (unsigned i = 0; i < 9; i++)
                jobs[i] = HA_JOB(3, i);
        CHECK_EQ(ha_pool_submit(p, jobs, 4), 0);
        CHECK_EQ(ha_pool_submit(p, jobs + 4, 1), -ENOSPC);
        CHECK_EQ(ha_pool_grow(p, 8), 0);
        CHECK_EQ(ha_pool_grow(p, 2), 0);        /* never shrinks */
        CHECK_EQ(ha_pool_submit(p, jobs + 4, 4), 0);
        CHECK_EQ(ha_pool_submit(p, jobs + 8, 1), -ENOSPC);
        pthread_mutex_lock(&gate_lock);
        gate_open = true;
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_lock);
        while (have < 8) {
                struct pollfd pfd = { .fd = ha_pool_fd(p), .events = POLLIN };
                size_t k;

                if (poll(&pfd, 1, 10000) != 1) {
                        CHECK(!"completion eventfd never became readable");
                        break;
                }
                k = ha_pool_take_completed(p, done, 16);
                for (size_t i = 0; i < k; i++)
                        seen[HA_JOB_INDEX(done[i])]++;
                have += k;
        }
        for (unsigned i = 0; i < 8; i++)
                CHECK_EQ(seen[i], 1);
        CHECK_EQ(seen[8], 0);
        ha_pool_free(p);
}

int main(void)
{
        HaPool *p;
        HaJob jobs[CAP], done[CAP];
        unsigned got[CAP] = { 0 };
        size_t total = 0;
        uint64_t sum = 0;

        CHECK_EQ(ha_pool_new(0, CAP, job, NULL, &p), -EINVAL);
        CHECK_EQ(ha_pool_new(4, CAP, job, NULL, &p), 0);
        CHECK_EQ(ha_pool_size(p), 4);

        for (unsigned round = 0; round < 200; round++) {
                unsigned n = 1 + round % CAP;
                size_t have = 0;

                for (unsigned i = 0; i < n; i++)
                        jobs[i] = HA_JOB(round % 3, i);
                CHECK_EQ(ha_pool_submit(p, jobs, n), 0);
                while (have < n) {
                        struct pollfd pfd = { .fd = ha_pool_fd(p), .events = POLLIN };
                        size_t k;

                        if (poll(&pfd, 1, 10000) != 1) {
                                CHECK(!"completion eventfd never became readable");
                                break;
                        }
                        k = ha_pool_take_completed(p, done, CAP);
                        for (size_t i = 0; i < k; i++)
                                got[HA_JOB_INDEX(done[i])]++;
                        have += k;
                }
                CHECK_EQ(have, n);
                total += have;
        }
        ha_pool_wait_idle(p);
        for (unsigned i = 0; i < CAP; i++)
                CHECK_EQ(runs[i], got[i]);      /* each completion is one run */
        for (unsigned w = 0; w < 4; w++)
                sum += ha_pool_worker_jobs(p, w);
        CHECK_EQ(sum, total);

        /* More outstanding than the capacity is refused, not queued. */
        for (unsigned i = 0; i < CAP; i++)
                jobs[i] = HA_JOB(7, i);
        CHECK_EQ(ha_pool_submit(p, jobs, CAP), 0);
        CHECK_EQ(ha_pool_submit(p, jobs, 1), -ENOSPC);
        ha_pool_wait_idle(p);
        CHECK_EQ(ha_pool_queued(p), 0);
        CHECK_EQ(ha_pool_take_completed(p, done, CAP), CAP);
        CHECK_EQ(HA_JOB_SOURCE(done[0]), 7);    /* the source survives the trip */

        /* Freeing a pool with queued work runs it first. */
        memset(runs, 0, sizeof(runs));
        CHECK_EQ(ha_pool_submit(p, jobs, CAP), 0);
        p = ha_pool_free(p);
        for (unsigned i = 0; i < CAP; i++)
                CHECK_EQ(runs[i], 1);

        test_stop_with_a_stuck_worker();
        test_grow();
        return check_done("test-workers");
}
