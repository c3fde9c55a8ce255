/* SPDX-License-Identifier: MIT */
#ifndef HA_WORKERS_H
#define HA_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The worker pool.  Jobs are queue-entry indices.  The loop thread submits
 * them in batches; each worker takes a share of the queued jobs per wake-up,
 * runs them, and hands the finished indices back through a completion list
 * and an eventfd that the loop watches.  The eventfd is written only when the
 * completion list goes from empty to non-empty, so a burst costs one wake-up.
 */
typedef struct HaPool HaPool;

/* A job names a queue entry: the source (which queue) in the high half,
 * the entry index in the low half. */
typedef uint32_t HaJob;
#define HA_JOB(source, idx) ((HaJob)(source) << 16 | (uint16_t)(idx))
#define HA_JOB_SOURCE(j)    ((unsigned)(((j) & ~HA_JOB_MARK) >> 16))
#define HA_JOB_INDEX(j)     ((uint16_t)((j) & 0xffff))

/* Runs on a worker thread.  It may mark a job with HA_JOB_MARK: the mark
 * comes back with the job through ha_pool_take_completed. */
typedef void (*ha_job_fn)(void *userdata, HaJob *jobs, size_t n, unsigned worker);
#define HA_JOB_MARK 0x80000000u

int ha_pool_new(unsigned nworkers, unsigned capacity, ha_job_fn fn, void *userdata,
                HaPool **ret);

/*
 * Busy polling: a worker that runs out of jobs first calls poll (for at
 * most one worker at a time) until poll has found nothing for spin_us,
 * and only then sleeps.  poll returns how much work it did.  While the
 * daemon is busy this takes cross-core wake-ups off the request path.
 */
/* now_ns: when this poll began (CLOCK_MONOTONIC), for the poller's latency
 * figures without a clock read of its own. */
typedef long (*ha_poll_fn)(void *userdata, unsigned worker,
                           uint64_t now_ns);   /* -1: nothing to poll */
typedef long (*ha_poll_end_fn)(void *userdata, unsigned worker);  /* non-zero: poll on */
void ha_pool_set_poll(HaPool *p, ha_poll_fn poll, ha_poll_end_fn poll_end, void *userdata,
                      unsigned spin_us);
/* Finishes every queued and running job, then joins the workers. */
HaPool *ha_pool_free(HaPool *p);
/* Stop the workers: they finish what is queued (with drop, only what they
 * run now) and leave.  wait_ms < 0 waits for ever; -ETIMEDOUT if one is
 * still busy after wait_ms: it may still touch the jobs' memory, so the
 * pool must not be freed. */
int ha_pool_stop(HaPool *p, bool drop, int wait_ms);

/* Room for capacity queued and capacity outstanding jobs from now on
 * (never shrinks). */
int ha_pool_grow(HaPool *p, unsigned capacity);
/* Room for n outstanding jobs (submitted, not yet taken back through
 * ha_pool_take_completed), the queue staying as it is. */
int ha_pool_grow_done(HaPool *p, unsigned n);

/* -ENOSPC when more than the capacity would be queued (submitted, no
 * worker has taken them), or more than the outstanding room outstanding. */
int ha_pool_submit(HaPool *p, const HaJob *jobs, size_t n);

/* The pool's end without a wait (the loop): take back every job no worker
 * has taken, into out (room for its queue's capacity), and tell the workers
 * to leave once their current jobs are done.  Each worker writes the
 * eventfd as it leaves. */
size_t ha_pool_retire(HaPool *p, HaJob *out);
/* After ha_pool_retire: every worker has left (joined here, at once) and
 * every completion was taken.  Never waits. */
bool ha_pool_retired(HaPool *p);
/* Held: the workers leave queued jobs where they are until released. */
void ha_pool_hold(HaPool *p, bool held);

/* Readable when completions are waiting. */
int ha_pool_fd(HaPool *p);

/* Take up to max finished jobs (reads the eventfd first, then the list). */
size_t ha_pool_take_completed(HaPool *p, HaJob *out, size_t max);

/* Block until no job is queued or running (condition variable, no polling). */
void ha_pool_wait_idle(HaPool *p);

unsigned ha_pool_size(const HaPool *p);
uint64_t ha_pool_worker_jobs(const HaPool *p, unsigned worker);
/* Every worker sleeps (none runs, polls or has a job waiting): a job
 * submitted now would cost a wake-up. */
bool ha_pool_asleep(HaPool *p);
/* Jobs queued for the workers but not yet picked up. */
unsigned ha_pool_queued(HaPool *p);

/* The worker that has been on its current batch the longest, if that is
 * more than min_ns: its index and *busy_ns; otherwise -1. */
int ha_pool_longest_busy(const HaPool *p, uint64_t now_ns, uint64_t min_ns, uint64_t *busy_ns);

#endif
