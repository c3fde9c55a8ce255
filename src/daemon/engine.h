/* SPDX-License-Identifier: MIT */
#ifndef HA_ENGINE_H
#define HA_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "stats.h"
#include "hyperamp/wire.h"

/*
 * The job multiplexer.  Sources produce requests, executors run them:
 *
 *   source (sockq.c, zones.c, v1chan.c) --ha_engine_dispatch--> route table
 *   --> executor's queue (its own HaPool, workers.c) --> source's run() on an
 *   executor thread, which calls the executor (ha_run_call) for the service
 *   --> the executor's completion eventfd --> complete() on the loop.
 *
 * Every job passes the engine (dispatch, its run on an executor thread,
 * completion; or ha_engine_run_inline() for a job a polling worker runs),
 * so the per-service counters and latency are kept here, for every
 * source: on the thread that ran the job, once its run() returned (a zone
 * or v1 client may see its answer just before it is counted).  A job the engine
 * cannot run (no route for its service, its executor's queue full) is
 * answered through the source's fail() instead: every dispatched job gets
 * exactly one complete() or one fail().
 *
 * The re-entrancy rule (the one rule, for every source):
 *  - complete() and fail() run on the loop, from the engine's own events,
 *    never from inside a call the source made into the engine (dispatch
 *    included): a refused job is answered on a later loop pass.
 *  - complete() and fail() may call back into the engine, ha_engine_dispatch
 *    included: the engine keeps a completion pass's jobs apart from a
 *    dispatch.
 * Unless noted, the functions below run on the loop thread.
 */
typedef struct HaEngine HaEngine;

/* ===== executors ===== */

/*
 * An executor runs services: the local worker pool ("local"), or a remote
 * zone reached over shared memory ("v1", "v2") that does a blocking
 * stop-and-wait round trip bounded by its own timeout.
 */
/*
 * Who a job is, for an executor that keeps its request across a daemon
 * crash (remote_v1.c): the same for a zone lease's job as taken and as run
 * again by the next daemon's recovery (zones.c), different for every
 * other job.  Compared whole (memcmp): no padding.
 */
typedef struct HaJobKey {
        uint64_t ino;                   /* the lease memfd's inode */
        uint32_t pid;                   /* its client */
        uint32_t pos;                   /* the ring position of the take */
        uint32_t seq;                   /* the entry's completion count at the take */
        uint16_t idx;                   /* the entry */
        uint16_t zero;
        uint32_t offset, length;        /* its data in the lease's pool */
} HaJobKey;
_Static_assert(sizeof(HaJobKey) == 32, "a job key has no padding");

typedef struct HaExecutorOps {
        const char *kind;               /* "local", "v1", "v2" */
        /* Never given a client's or device memory buffer, only a private
         * staged copy (ha_run_private()): true for every remote executor. */
        bool remote;
        /* On one of the executor's own threads (worker: 0..nthreads-1):
         * transform buf[0..len) in place, same length.  Bounded in time. */
        enum ha_result (*call)(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                               unsigned worker);
        /* Optional: call, for a job with a key (HaRun.key). */
        enum ha_result (*call_key)(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                   unsigned worker, const HaJobKey *key);
        /* Loop: its counters, into its `executors[]` element, through the
         * sink (stats.h; docs/ARCHITECTURE.md).  Optional. */
        void (*stats)(void *ctx, HaStats *s);
        /* Loop: "ready", "down", ... for `services`.  Optional ("ready"). */
        const char *(*state)(void *ctx);
        /* Any thread, at shutdown: calls in progress and later ones stop
         * waiting for a peer and fail at once.  Optional. */
        void (*cancel)(void *ctx);
        /* Loop: the executor has ended, no thread calls it any more: ctx
         * is the engine's to free.  Optional (ctx stays the caller's). */
        void (*release)(void *ctx);
} HaExecutorOps;

/* What a source's run() is handed: the executor its job was routed to. */
typedef struct HaRun {
        const HaExecutorOps *ops;
        void *ctx;
        unsigned worker;                /* the thread within the executor */
        uint64_t since;                 /* a poll: when it began (ha_now_ns()) */
        const HaJobKey *key;            /* set by a source whose jobs have one */
} HaRun;

/* Run the service on the job's executor (from a source's run()). */
static inline enum ha_result ha_run_call(const HaRun *run, uint16_t service, uint8_t *buf,
                                         uint32_t len)
{
        if (run->key && run->ops->call_key)
                return run->ops->call_key(run->ctx, service, buf, len, run->worker, run->key);
        return run->ops->call(run->ctx, service, buf, len, run->worker);
}

/* True when run() must hand the executor a private staged copy. */
static inline bool ha_run_private(const HaRun *run)
{
        return run->ops->remote;
}

/* The local worker pool's: runs the service in the calling thread. */
extern const HaExecutorOps ha_executor_local;

#define HA_ENGINE_MAX_EXECUTORS 32
#define HA_EXECUTOR_LOCAL 0             /* the worker pool; every route's default */
#define HA_EXECUTOR_NONE  0xff          /* no route: jobs fail with -ENOENT */

/*
 * Add an executor with its own pool of nthreads threads (a remote zone: 1,
 * stop-and-wait) and completion eventfd, at start or at run time (a
 * reload), under the lowest free id.  capacity bounds its queue (jobs
 * dispatched to it that none of its threads has started; each thread runs
 * one more): past it a job is answered through its source's fail() with
 * -EBUSY.  From success on, ops->release (if any) frees ctx when the
 * executor ends.
 */
int ha_engine_add_executor(HaEngine *e, const HaExecutorOps *ops, void *ctx, const char *name,
                           unsigned nthreads, unsigned capacity, unsigned *ret_id);
/*
 * A remote zone's executor, before any route to it: record its zone, and
 * hold its jobs (state "waiting-predecessor") while a retiring executor
 * has the same name, queue or rings (one owner at a time); they start when
 * the last of those has ended.
 */
int ha_engine_start_zone(HaEngine *e, unsigned id, const HaRemoteZoneConfig *zone);
/* -EINVAL only (not an executor, the local pool, retiring already). */
/*
 * Retire an executor, without waiting (a reload that removes a zone): its
 * services route to the local pool (where an id no local service has is
 * answered NOT_EXITS) at once, it takes no new job, and the jobs none of
 * its threads started are dispatched again on a later loop pass, where
 * their services route then (set the new routes before returning to the
 * loop).  The job at the peer finishes or times out; then its threads
 * leave, their last completion wakes the loop, and it ends there: counts
 * folded into the totals, the pool joined (its threads have returned),
 * ops->release, the id free again.  Until then stats show it "retiring".
 */
int ha_engine_retire(HaEngine *e, unsigned id);
/* Route a service id to an executor (HA_EXECUTOR_NONE: no route), never
 * a retiring one.  At start, or on the loop between dispatches (a
 * reload); while any service routes elsewhere than the local pool, idle
 * local workers do not poll sources (a polled job would run locally). */
int ha_engine_route(HaEngine *e, uint16_t service, unsigned executor);
/* The executor a service id is routed to (HA_EXECUTOR_LOCAL unless set). */
unsigned ha_engine_route_of(const HaEngine *e, uint16_t service);
/* "local", or the executor's name and state: for `services`. */
void ha_engine_route_json(HaEngine *e, uint16_t service, cJSON *o);

/* ===== sources ===== */

typedef struct HaSourceOps {
        const char *kind;
        /* On the executor's thread: run entry idx by the one run policy
         * (ha_journal_run(), ha_service_staged(), ha_run_private()),
         * obtaining the service's result from ha_run_call(run, ...), never
         * from ha_service_run().  Returns the result, for the counters. */
        enum ha_result (*run)(void *ctx, uint16_t idx, const HaRun *run);
        /* Loop: entry idx ran (the re-entrancy rule above). */
        void (*complete)(void *ctx, uint16_t idx);
        /* Loop: entry idx never ran.  err: -EBUSY (its executor's queue was
         * full: the client gets BUSY where its protocol has it, else FAIL)
         * or -ENOENT (no route for its service: NOT_EXITS). */
        void (*fail)(void *ctx, uint16_t idx, int err);
        /* Loop: its counters, into the element of sources[] made for it. */
        void (*stats)(void *ctx, HaStats *s);
        /* Optional, on an idle local worker: take and run whatever waits,
         * inline, through ha_engine_run_inline(); returns how many it ran,
         * or -1 when there is nothing to poll at all (no client attached). */
        long (*poll)(void *ctx, const HaRun *run);
        /* The worker stops polling: whatever poll set aside, restore.
         * Non-zero when work turned up meanwhile (the worker polls on). */
        long (*poll_end)(void *ctx, const HaRun *run);
} HaSourceOps;

#define HA_ENGINE_MAX_SOURCES 64

/*
 * Register a source whose entries are indices 0..capacity-1, with at most
 * capacity of its jobs outstanding (dispatched, no complete() or fail()
 * yet); *ret_id tags its jobs.  The local pool's
 * capacity grows by capacity.  -ENOSPC past the limit, -EINVAL for a
 * capacity of 0 or past 65536.
 */
int ha_engine_add_source(HaEngine *e, const HaSourceOps *ops, void *ctx, const char *name,
                         unsigned capacity, unsigned *ret_id);

/* One job: an entry of a source and its service id, from the source's own
 * record (never re-read from shared memory). */
typedef struct HaJobReq {
        uint16_t idx;
        uint16_t service;
        /* Its payload's bytes, for a source whose small jobs may run on the
         * loop (the socket's); 0: never on the loop. */
        uint32_t len;
} HaJobReq;

/*
 * Hand n entries to the executors their services route to.  Every entry
 * is taken: each gets one complete() or fail() later, on the loop.
 *
 * The hand-off that scales down: a job routed to the local executor, for a
 * quick service (services.h; never the stall seam or an unknown id), with
 * a len of 1 to HA_LOOP_JOB_BYTES, dispatched while every local worker
 * sleeps, is run by the loop itself on a later pass (its own event), at
 * most HA_LOOP_PASS_JOBS jobs and HA_LOOP_PASS_BYTES bytes a pass: two
 * thread hand-offs cost far more than such a job.  Everything else, and
 * everything routed to a remote executor, goes to the executor's pool, so
 * an expensive job never holds the loop.  stats: workers.loop_jobs.
 */
#define HA_LOOP_JOB_BYTES 1024u
#define HA_LOOP_PASS_JOBS 256u
#define HA_LOOP_PASS_BYTES (64u << 10)
/* The policy's condition: every local worker sleeps (for tests). */
bool ha_engine_workers_asleep(HaEngine *e);
void ha_engine_dispatch(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n);

/* On a local worker that polls (run is what poll was handed): run n
 * entries of a source here, counted as dispatched ones are.  The source
 * answers them itself; no complete() follows. */
void ha_engine_run_inline(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n,
                          const HaRun *run);

/* ===== the engine ===== */

int ha_engine_new(struct event_base *base, const HaConfig *cfg, HaEngine **ret);
/* Joins the executors' threads, then frees. */
HaEngine *ha_engine_free(HaEngine *e);
/* Stops the executors first.  abandon: drop what no thread has started and
 * give a running job a second (else ten); -ETIMEDOUT if a thread is stuck
 * in a service: then do not free the engine or the sources (their memory
 * is in use), leave. */
int ha_engine_stop(HaEngine *e, bool abandon);

typedef struct HaEngineCounts {
        uint64_t completed;             /* jobs of every source */
        unsigned in_flight, workers;
        unsigned queued;                /* dispatched, no thread has picked up yet */
} HaEngineCounts;

void ha_engine_counts(HaEngine *e, HaEngineCounts *ret);

/* A local worker stuck on one batch for more than min_ns, or -1. */
int ha_engine_stalled_worker(HaEngine *e, uint64_t min_ns, uint64_t *busy_ns);

/* The services, sources, executors and workers sections. */
void ha_engine_stats(HaEngine *e, HaStats *s);

#endif
