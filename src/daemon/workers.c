/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cpu.h"
#include "log.h"
#include "workers.h"

#define BATCH_MAX 64
/* ha_pool_submit wakes one sleeper per this many jobs; a worker that leaves
 * jobs behind wakes the next (the chain scales up): for cheap jobs a
 * second wake-up costs more than it saves. */
#define WAKE_JOBS 8

typedef struct Worker {
        HaPool *pool;
        pthread_t thread;
        unsigned id;
        bool gone;              /* left worker_main (under lock) */
        bool joined;
        uint64_t jobs;          /* relaxed atomic */
        uint64_t busy_since;    /* relaxed atomic: ns on CLOCK_MONOTONIC, 0 when idle */
} Worker;

struct HaPool {
        pthread_mutex_t lock;
        pthread_cond_t work;    /* jobs queued, or stop */
        pthread_cond_t idle;    /* nothing queued or running */
        pthread_cond_t gone;    /* a worker left (CLOCK_MONOTONIC) */
        HaJob *ring;
        unsigned capacity, head, count, running, idle_workers;
        /* Submitted, not yet taken back: at most done_cap, the done
         * list's size. */
        unsigned outstanding, done_cap;
        bool stop;
        bool held;              /* queued jobs wait (ha_pool_hold) */

        pthread_mutex_t done_lock;
        HaJob *done;
        unsigned ndone;
        int efd;

        ha_job_fn fn;
        void *userdata;
        ha_poll_fn poll;
        ha_poll_end_fn poll_end;
        void *poll_userdata;
        uint64_t spin_ns;
        unsigned polling;       /* atomic: a worker is polling */
        unsigned count_hint;    /* atomic copy of count, for the poller */
        bool stop_hint;         /* atomic copy of stop */
        unsigned nworkers;
        Worker *workers;
};

/* Poll until nothing has turned up for spin_ns, or jobs arrive. */
static void poll_while_busy(HaPool *p, Worker *w)
{
        uint64_t quiet_since = ha_now_ns();

        while (!__atomic_load_n(&p->stop_hint, __ATOMIC_RELAXED) &&
               __atomic_load_n(&p->count_hint, __ATOMIC_RELAXED) == 0) {
                long n;

                uint64_t now = ha_now_ns();

                __atomic_store_n(&w->busy_since, now, __ATOMIC_RELAXED);
                n = p->poll(p->poll_userdata, w->id, now);
                __atomic_store_n(&w->busy_since, 0, __ATOMIC_RELAXED);
                if (n < 0)
                        break;          /* nobody to poll for */
                if (n > 0) {
                        __atomic_fetch_add(&w->jobs, (uint64_t)n, __ATOMIC_RELAXED);
                        quiet_since = ha_now_ns();
                } else if (ha_now_ns() - quiet_since > p->spin_ns) {
                        /* Going to sleep: the final look may find work. */
                        if (!p->poll_end(p->poll_userdata, w->id))
                                return;
                        quiet_since = ha_now_ns();
                } else
                        cpu_relax();
        }
        (void)p->poll_end(p->poll_userdata, w->id);
}

static void *worker_main(void *arg)
{
        Worker *w = arg;
        HaPool *p = w->pool;
        HaJob batch[BATCH_MAX];

        pthread_mutex_lock(&p->lock);
        for (;;) {
                unsigned take;

                /* Poll once per idle spell, then sleep: a poll that found
                 * nothing must not turn into spinning on the lock. */
                bool polled = false;
                while ((p->count == 0 || p->held) && !p->stop) {
                        if (!polled && p->poll &&
                            !__atomic_exchange_n(&p->polling, 1, __ATOMIC_ACQUIRE)) {
                                pthread_mutex_unlock(&p->lock);
                                poll_while_busy(p, w);
                                __atomic_store_n(&p->polling, 0, __ATOMIC_RELEASE);
                                pthread_mutex_lock(&p->lock);
                                polled = true;
                                continue;
                        }
                        p->idle_workers++;
                        pthread_cond_wait(&p->work, &p->lock);
                        p->idle_workers--;
                        polled = false;
                }
                if (p->count == 0)
                        break;          /* stopping, and nothing left to run */

                /* A fair share, so one worker does not hog a burst. */
                take = (p->count + p->nworkers - 1) / p->nworkers;
                if (take > BATCH_MAX)
                        take = BATCH_MAX;
                if (p->count > take && p->idle_workers > 0)
                        pthread_cond_signal(&p->work);
                for (unsigned i = 0; i < take; i++) {
                        batch[i] = p->ring[p->head];
                        p->head = (p->head + 1) % p->capacity;
                }
                p->count -= take;
                __atomic_store_n(&p->count_hint, p->count, __ATOMIC_RELAXED);
                p->running += take;
                pthread_mutex_unlock(&p->lock);

                __atomic_store_n(&w->busy_since, ha_now_ns(), __ATOMIC_RELAXED);
                p->fn(p->userdata, batch, take, w->id);
                __atomic_store_n(&w->busy_since, 0, __ATOMIC_RELAXED);
                __atomic_fetch_add(&w->jobs, take, __ATOMIC_RELAXED);

                pthread_mutex_lock(&p->done_lock);
                bool was_empty = p->ndone == 0;
                memcpy(p->done + p->ndone, batch, take * sizeof(batch[0]));
                p->ndone += take;
                pthread_mutex_unlock(&p->done_lock);
                if (was_empty) {
                        uint64_t one = 1;
                        /* Cannot fail short of a bug: the counter cannot overflow here. */
                        (void)!write(p->efd, &one, sizeof(one));
                }

                pthread_mutex_lock(&p->lock);
                p->running -= take;
                if (p->count == 0 && p->running == 0)
                        pthread_cond_broadcast(&p->idle);
        }
        w->gone = true;
        pthread_cond_broadcast(&p->gone);
        /* Under the lock, so the loop that sees gone (ha_pool_retired) and
         * closes the eventfd comes after this write. */
        {
                uint64_t one = 1;
                (void)!write(p->efd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int ha_pool_new(unsigned nworkers, unsigned capacity, ha_job_fn fn, void *userdata,
                HaPool **ret)
{
        pthread_condattr_t ca;
        HaPool *p;
        int r;

        if (nworkers == 0 || capacity == 0)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_mutex_init(&p->done_lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->gone, &ca);
        pthread_condattr_destroy(&ca);
        pthread_cond_init(&p->work, NULL);
        pthread_cond_init(&p->idle, NULL);
        p->efd = -1;
        p->capacity = p->done_cap = capacity;
        p->fn = fn;
        p->userdata = userdata;
        p->ring = calloc(capacity, sizeof(HaJob));
        p->done = calloc(capacity, sizeof(HaJob));
        p->workers = calloc(nworkers, sizeof(Worker));
        if (!p->ring || !p->done || !p->workers) {
                ha_pool_free(p);
                return -ENOMEM;
        }
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->efd < 0) {
                r = -errno;
                ha_pool_free(p);
                return r;
        }
        for (unsigned i = 0; i < nworkers; i++) {
                Worker *w = &p->workers[i];
                char name[16];

                w->pool = p;
                w->id = i;
                r = -pthread_create(&w->thread, NULL, worker_main, w);
                if (r < 0) {
                        ha_pool_free(p);
                        return r;
                }
                p->nworkers++;
                snprintf(name, sizeof(name), "ha-worker-%u", i % 1000u);
                (void)pthread_setname_np(w->thread, name);
        }
        *ret = p;
        return 0;
}

/* Under the lock: joins the workers that have left; true if all have. */
static bool join_gone(HaPool *p)
{
        bool all = true;

        for (unsigned i = 0; i < p->nworkers; i++) {
                Worker *w = &p->workers[i];

                if (!w->gone)
                        all = false;
                else if (!w->joined) {
                        pthread_join(w->thread, NULL);  /* it has left: returns at once */
                        w->joined = true;
                }
        }
        return all;
}

int ha_pool_stop(HaPool *p, bool drop, int wait_ms)
{
        struct timespec until = ha_mono_deadline((unsigned)wait_ms);
        bool all;
        int e = 0;

        pthread_mutex_lock(&p->lock);
        p->stop = true;
        __atomic_store_n(&p->stop_hint, true, __ATOMIC_RELAXED);
        if (drop) {
                p->count = 0;
                __atomic_store_n(&p->count_hint, 0, __ATOMIC_RELAXED);
        }
        pthread_cond_broadcast(&p->work);
        /* Those that left are joined even when one is stuck. */
        while (!(all = join_gone(p)) && e != ETIMEDOUT)
                e = wait_ms < 0 ? pthread_cond_wait(&p->gone, &p->lock) :
                                  pthread_cond_timedwait(&p->gone, &p->lock, &until);
        pthread_mutex_unlock(&p->lock);
        return all ? 0 : -ETIMEDOUT;
}

HaPool *ha_pool_free(HaPool *p)
{
        if (!p)
                return NULL;
        (void)ha_pool_stop(p, false, -1);
        if (p->efd >= 0)
                close(p->efd);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->idle);
        pthread_cond_destroy(&p->gone);
        pthread_mutex_destroy(&p->lock);
        pthread_mutex_destroy(&p->done_lock);
        free(p->ring);
        free(p->done);
        free(p->workers);
        free(p);
        return NULL;
}

/* Swap in a bigger array of n jobs holding the first keep of *a (from
 * head, wrapping at old_cap). */
static void regrow(HaJob **a, HaJob *n, unsigned head, unsigned keep, unsigned old_cap)
{
        for (unsigned i = 0; i < keep; i++)
                n[i] = (*a)[(head + i) % old_cap];
        free(*a);
        *a = n;
}

int ha_pool_grow(HaPool *p, unsigned capacity)
{
        int r = ha_pool_grow_done(p, capacity);
        HaJob *ring;

        if (r < 0 || capacity <= p->capacity)
                return r;
        ring = calloc(capacity, sizeof(HaJob));
        if (!ring)
                return -ENOMEM;
        pthread_mutex_lock(&p->lock);
        regrow(&p->ring, ring, p->head, p->count, p->capacity);
        p->head = 0;
        p->capacity = capacity;
        pthread_mutex_unlock(&p->lock);
        return 0;
}

int ha_pool_grow_done(HaPool *p, unsigned outstanding)
{
        HaJob *done;

        if (outstanding <= p->done_cap)
                return 0;
        done = calloc(outstanding, sizeof(HaJob));
        if (!done)
                return -ENOMEM;
        /* Lock order as in the workers: the queue, then the done list. */
        pthread_mutex_lock(&p->lock);
        pthread_mutex_lock(&p->done_lock);
        regrow(&p->done, done, 0, p->ndone, p->done_cap);
        p->done_cap = outstanding;
        pthread_mutex_unlock(&p->done_lock);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

int ha_pool_submit(HaPool *p, const HaJob *jobs, size_t n)
{
        if (n == 0)
                return 0;
        pthread_mutex_lock(&p->lock);
        if (p->count + n > p->capacity || p->outstanding + n > p->done_cap) {
                pthread_mutex_unlock(&p->lock);
                return -ENOSPC;
        }
        for (size_t i = 0; i < n; i++)
                p->ring[(p->head + p->count + i) % p->capacity] = jobs[i];
        p->count += (unsigned)n;
        __atomic_store_n(&p->count_hint, p->count, __ATOMIC_RELAXED);
        p->outstanding += (unsigned)n;
        for (size_t i = 0; i < n && i / WAKE_JOBS < p->idle_workers; i += WAKE_JOBS)
                pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

bool ha_pool_asleep(HaPool *p)
{
        bool r;

        pthread_mutex_lock(&p->lock);
        r = p->count == 0 && p->running == 0 && p->idle_workers == p->nworkers;
        pthread_mutex_unlock(&p->lock);
        return r;
}

void ha_pool_set_poll(HaPool *p, ha_poll_fn poll, ha_poll_end_fn poll_end, void *userdata,
                      unsigned spin_us)
{
        pthread_mutex_lock(&p->lock);
        p->poll = poll;
        p->poll_end = poll_end;
        p->poll_userdata = userdata;
        p->spin_ns = (uint64_t)spin_us * 1000u;
        pthread_mutex_unlock(&p->lock);
}

int ha_pool_fd(HaPool *p)
{
        return p->efd;
}

size_t ha_pool_take_completed(HaPool *p, HaJob *out, size_t max)
{
        uint64_t v;
        size_t n;

        /* Reset the eventfd before looking at the list: a worker that
         * appends after our look will write it again, so no wake-up is lost. */
        (void)!read(p->efd, &v, sizeof(v));

        pthread_mutex_lock(&p->done_lock);
        n = p->ndone < max ? p->ndone : max;
        memcpy(out, p->done, n * sizeof(out[0]));
        memmove(p->done, p->done + n, (p->ndone - n) * sizeof(out[0]));
        p->ndone -= (unsigned)n;
        if (p->ndone > 0) {
                /* Left some behind: keep the loop awake for them. */
                v = 1;
                (void)!write(p->efd, &v, sizeof(v));
        }
        pthread_mutex_unlock(&p->done_lock);

        pthread_mutex_lock(&p->lock);
        p->outstanding -= (unsigned)n;
        pthread_mutex_unlock(&p->lock);
        return n;
}

size_t ha_pool_retire(HaPool *p, HaJob *out)
{
        size_t n;

        pthread_mutex_lock(&p->lock);
        n = p->count;
        for (size_t i = 0; i < n; i++)
                out[i] = p->ring[(p->head + i) % p->capacity];
        p->count = 0;
        p->outstanding -= (unsigned)n;
        __atomic_store_n(&p->count_hint, 0, __ATOMIC_RELAXED);
        p->stop = true;
        __atomic_store_n(&p->stop_hint, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
        return n;
}

bool ha_pool_retired(HaPool *p)
{
        bool all;

        pthread_mutex_lock(&p->lock);
        all = join_gone(p);     /* a worker that set gone has as good as returned */
        pthread_mutex_unlock(&p->lock);
        if (!all)
                return false;
        pthread_mutex_lock(&p->done_lock);
        all = p->ndone == 0;
        pthread_mutex_unlock(&p->done_lock);
        return all;
}

void ha_pool_hold(HaPool *p, bool held)
{
        pthread_mutex_lock(&p->lock);
        p->held = held;
        if (!held && p->count > 0)
                pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
}

void ha_pool_wait_idle(HaPool *p)
{
        pthread_mutex_lock(&p->lock);
        while (p->count > 0 || p->running > 0)
                pthread_cond_wait(&p->idle, &p->lock);
        pthread_mutex_unlock(&p->lock);
}

unsigned ha_pool_size(const HaPool *p)
{
        return p->nworkers;
}

uint64_t ha_pool_worker_jobs(const HaPool *p, unsigned worker)
{
        return __atomic_load_n(&p->workers[worker].jobs, __ATOMIC_RELAXED);
}

unsigned ha_pool_queued(HaPool *p)
{
        unsigned n;

        pthread_mutex_lock(&p->lock);
        n = p->count;
        pthread_mutex_unlock(&p->lock);
        return n;
}

int ha_pool_longest_busy(const HaPool *p, uint64_t now_ns, uint64_t min_ns, uint64_t *busy_ns)
{
        int worst = -1;
        uint64_t longest = 0;

        for (unsigned i = 0; i < p->nworkers; i++) {
                uint64_t since = __atomic_load_n(&p->workers[i].busy_since, __ATOMIC_RELAXED);
                if (since && now_ns > since && now_ns - since > min_ns &&
                    now_ns - since > longest) {
                        longest = now_ns - since;
                        worst = (int)i;
                }
        }
        *busy_ns = longest;
        return worst;
}
