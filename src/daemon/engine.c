/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "hist.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "services.h"
#include "workers.h"

/* Jobs handed to or taken from a pool per call: bounds the stack. */
#define CHUNK 256

/* The engine's record of one dispatched job: written by the loop at
 * dispatch, read by the executor's thread before it runs the job (the
 * pool's lock orders the two).  Relaxed atomics: a zone may reuse the
 * entry as soon as the job published its answer, before the completion
 * reaches the loop, and the loop then writes the next job's record. */
typedef struct JobRec {
        uint64_t t_dispatch;
        uint16_t service;
} JobRec;

typedef struct Source {
        const HaSourceOps *ops;
        void *ctx;
        char name[64];
        unsigned capacity;
        JobRec *rec;                    /* capacity */
        struct SvcStats *loop;          /* the loop's block: jobs it refused or ran */
} Source;

/*
 * Per source and service: one block per writer, so no job pays for a lock
 * or an atomic read-modify-write.  Each executor thread has its own for
 * each source (the local pool's worker w also for the jobs it runs inline
 * when polling), the loop one per source for the jobs it refuses or runs.
 * Writers store with relaxed atomics; the stats sum.
 */
typedef struct SvcStats {
        uint64_t requests;
        uint64_t failed;
        HaHist latency;
} SvcStats;

typedef struct Executor {
        HaEngine *e;
        SvcStats *svc[HA_ENGINE_MAX_SOURCES];   /* per source: nthreads blocks */
        const HaExecutorOps *ops;
        void *ctx;
        char name[64];
        HaPool *pool;
        struct event *complete_ev;
        unsigned id;
        unsigned capacity;              /* jobs waiting, at most */
        /* Atomic: dispatched, no thread has started them.  The loop adds,
         * the thread takes one off as it starts a job: never more than
         * what really waits, so an answered client's next job finds room
         * however far the loop lags behind the completions. */
        unsigned queued;
        unsigned in_flight;             /* the loop's: dispatched, not completed */
        uint64_t completed, refused;
        bool has_zone;                  /* zone: ha_engine_start_zone's */
        HaRemoteZoneConfig zone;
        bool retiring;                  /* ha_engine_retire: no new jobs, ends alone */
        uint32_t waits_for;             /* held until these executors have retired */
        HaJob *requeue;                 /* retiring: the jobs it never started */
        size_t nrequeue;
} Executor;

/* A job answered without running (no route, executor full). */
typedef struct Refused {
        uint16_t source, idx, service;
        int err;
} Refused;

struct HaEngine {
        struct event_base *base;
        unsigned poll_us;               /* restart-only: read at start */
        Source sources[HA_ENGINE_MAX_SOURCES];
        unsigned nsources;
        unsigned total_capacity;        /* of every source: the local pool's capacity */
        Executor *exec[HA_ENGINE_MAX_EXECUTORS];       /* NULL: a free id */
        unsigned nexec;                 /* ids below this may be in use */
        struct event *retire_ev;        /* a retiring executor may be done */
        uint8_t route[65536];
        unsigned not_local;             /* services routed elsewhere (polling off) */
        unsigned in_flight;
        uint64_t completed;

        Refused *refused, *refused_run; /* total_capacity each */
        size_t nrefused;
        struct event *refuse_ev;

        /* Jobs the loop runs itself (ha_engine_dispatch): this pass's list
         * and the one being run, HA_LOOP_PASS_JOBS each. */
        HaJobReq loopq[2][HA_LOOP_PASS_JOBS];
        uint16_t loopq_src[2][HA_LOOP_PASS_JOBS];
        size_t nloop, loop_bytes;
        unsigned loopq_cur;
        struct event *loop_ev;
        uint64_t loop_jobs;

        size_t nsvc;                    /* each block has nsvc + 1 rows, the last
                                         * for "unknown id" */
        const HaService *svc_table;
};

static const char *local_state(void *ctx)
{
        (void)ctx;
        return "ready";
}

static enum ha_result local_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                 unsigned worker)
{
        (void)ctx, (void)worker;
        return ha_service_run(service, buf, len);
}

const HaExecutorOps ha_executor_local = {
        .kind = "local",
        .call = local_call,
        .state = local_state,
};

/* ===== per-service counters ===== */

static SvcStats *svc_stats(HaEngine *e, SvcStats *b, uint16_t id)
{
        for (size_t i = 0; i < e->nsvc; i++)
                if (e->svc_table[i].id == id)
                        return &b[i];
        return &b[e->nsvc];
}

/* ns: the latency, or 0 for a job that never ran (no sample). */
static void account(HaEngine *e, SvcStats *block, uint16_t service, enum ha_result r,
                    uint64_t ns)
{
        SvcStats *s = svc_stats(e, block, service);

        __atomic_store_n(&s->requests, s->requests + 1, __ATOMIC_RELAXED);
        if (r != HA_RESULT_SUCCESS)
                __atomic_store_n(&s->failed, s->failed + 1, __ATOMIC_RELAXED);
        if (ns)
                ha_hist_add_shared(&s->latency, ns);
}

static SvcStats *thread_block(HaEngine *e, const Executor *x, unsigned source, unsigned worker)
{
        return &x->svc[source][(size_t)worker * (e->nsvc + 1)];
}

/* A source's blocks on executor x (loop, before any of its jobs). */
static int alloc_blocks(HaEngine *e, Executor *x, unsigned source)
{
        x->svc[source] = calloc((size_t)ha_pool_size(x->pool) * (e->nsvc + 1),
                                sizeof(SvcStats));
        return x->svc[source] ? 0 : -ENOMEM;
}

/* ===== the executors' threads ===== */

typedef struct Done {
        uint64_t t;
        uint16_t source, service;
        enum ha_result r;
} Done;

static void run_jobs(void *userdata, HaJob *jobs, size_t n, unsigned worker)
{
        Executor *x = userdata;
        HaEngine *e = x->e;
        HaRun run = { .ops = x->ops, .ctx = x->ctx, .worker = worker };
        Done d[CHUNK];

        for (size_t i = 0; i < n; i += CHUNK) {
                size_t k = n - i < CHUNK ? n - i : CHUNK;
                uint64_t now;

                for (size_t j = 0; j < k; j++) {
                        Source *s = &e->sources[HA_JOB_SOURCE(jobs[i + j])];
                        uint16_t idx = HA_JOB_INDEX(jobs[i + j]);

                        /* Before run(): from its answer on, the entry may
                         * be the next job's. */
                        d[j].source = (uint16_t)HA_JOB_SOURCE(jobs[i + j]);
                        d[j].t = __atomic_load_n(&s->rec[idx].t_dispatch, __ATOMIC_RELAXED);
                        d[j].service = __atomic_load_n(&s->rec[idx].service, __ATOMIC_RELAXED);
                        __atomic_fetch_sub(&x->queued, 1, __ATOMIC_RELAXED);
                        /* Taken in a batch, then retired: the loop sends
                         * it where its service routes now. */
                        if (__atomic_load_n(&x->retiring, __ATOMIC_ACQUIRE)) {
                                jobs[i + j] |= HA_JOB_MARK;
                                continue;
                        }
                        d[j].r = s->ops->run(s->ctx, idx, &run);
                }
                /* One clock read per batch: the batch completes together. */
                now = ha_now_ns();
                for (size_t j = 0; j < k; j++)
                        if (!(jobs[i + j] & HA_JOB_MARK))
                                account(e, thread_block(e, x, d[j].source, worker),
                                        d[j].service, d[j].r, now - d[j].t);
        }
}

void ha_engine_run_inline(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n,
                          const HaRun *run)
{
        Source *s = &e->sources[source];
        SvcStats *block = thread_block(e, e->exec[HA_EXECUTOR_LOCAL], source, run->worker);
        uint64_t t = run->since, now;
        enum ha_result r[CHUNK];

        /* Taken together in this poll: the latency is from the poll's
         * start to the end of the batch. */
        for (size_t i = 0; i < n; i += CHUNK) {
                size_t k = n - i < CHUNK ? n - i : CHUNK;

                for (size_t j = 0; j < k; j++)
                        r[j] = s->ops->run(s->ctx, reqs[i + j].idx, run);
                now = ha_now_ns();
                for (size_t j = 0; j < k; j++)
                        account(e, block, reqs[i + j].service, r[j], now - t);
        }
}

/* Local worker, idle: let the sources that can poll do so.  -1 when none
 * has anything to poll, so the worker does not spin for nothing. */
static long poll_sources(void *userdata, unsigned worker, uint64_t now)
{
        HaEngine *e = userdata;
        unsigned n = __atomic_load_n(&e->nsources, __ATOMIC_ACQUIRE);
        HaRun run = { .ops = &ha_executor_local, .worker = worker, .since = now };
        long done = 0;
        bool any = false;

        if (__atomic_load_n(&e->not_local, __ATOMIC_RELAXED))
                return -1;
        for (unsigned i = 0; i < n; i++)
                if (e->sources[i].ops->poll) {
                        long r = e->sources[i].ops->poll(e->sources[i].ctx, &run);
                        if (r >= 0) {
                                any = true;
                                done += r;
                        }
                }
        return any ? done : -1;
}

static long poll_sources_end(void *userdata, unsigned worker)
{
        HaEngine *e = userdata;
        unsigned n = __atomic_load_n(&e->nsources, __ATOMIC_ACQUIRE);
        HaRun run = { .ops = &ha_executor_local, .worker = worker, .since = ha_now_ns() };
        long more = 0;

        for (unsigned i = 0; i < n; i++)
                if (e->sources[i].ops->poll_end)
                        more |= e->sources[i].ops->poll_end(e->sources[i].ctx, &run);
        return more;
}

/* ===== the loop ===== */

static void complete_one(Executor *x, unsigned source, uint16_t idx)
{
        HaEngine *e = x->e;
        Source *s = &e->sources[source];

        x->in_flight--;
        x->completed++;
        e->in_flight--;
        e->completed++;
        s->ops->complete(s->ctx, idx);
}

static void route_jobs(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n,
                       bool fresh);

/* A retiring executor's job that no thread started: dispatched again, as
 * if it came now, where its service routes after the change (the record
 * keeps its first dispatch time). */
static void requeue(Executor *x, HaJob job)
{
        HaEngine *e = x->e;
        unsigned src = HA_JOB_SOURCE(job);
        uint16_t idx = HA_JOB_INDEX(job);
        HaJobReq req = { idx, __atomic_load_n(&e->sources[src].rec[idx].service,
                                              __ATOMIC_RELAXED), 0 };

        route_jobs(e, src, &req, 1, false);
}

static void complete_cb(evutil_socket_t fd, short what, void *userdata)
{
        Executor *x = userdata;
        HaJob jobs[CHUNK];
        size_t n;
        (void)fd, (void)what;

        do {
                n = ha_pool_take_completed(x->pool, jobs, CHUNK);
                for (size_t i = 0; i < n; i++) {
                        if (!(jobs[i] & HA_JOB_MARK)) {
                                complete_one(x, HA_JOB_SOURCE(jobs[i]), HA_JOB_INDEX(jobs[i]));
                                continue;
                        }
                        x->in_flight--;
                        requeue(x, jobs[i]);
                }
        } while (n == CHUNK);
        if (x->retiring) {
                for (size_t i = 0; i < x->nrequeue; i++)
                        requeue(x, x->requeue[i]);
                x->nrequeue = 0;
                /* Its threads write the eventfd as they leave: the
                 * retirement ends on its own event, not under this one. */
                event_active(x->e->retire_ev, 0, 0);
        }
}

/* The jobs the loop runs itself: as a worker would (the source's run()
 * through the local executor), counted in the loop's block, then
 * completed.  complete() may dispatch: those go to the other list. */
static void loop_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaEngine *e = userdata;
        Executor *x = e->exec[HA_EXECUTOR_LOCAL];
        HaRun run = { .ops = &ha_executor_local, .worker = ha_pool_size(x->pool) };
        unsigned cur = e->loopq_cur;
        const HaJobReq *reqs = e->loopq[cur];
        const uint16_t *src = e->loopq_src[cur];
        size_t n = e->nloop;
        enum ha_result r[HA_LOOP_PASS_JOBS];
        uint64_t t[HA_LOOP_PASS_JOBS], now;
        (void)fd, (void)what;

        e->loopq_cur ^= 1;
        e->nloop = 0;
        e->loop_bytes = 0;
        for (size_t i = 0; i < n; i++) {
                Source *s = &e->sources[src[i]];

                t[i] = __atomic_load_n(&s->rec[reqs[i].idx].t_dispatch, __ATOMIC_RELAXED);
                __atomic_fetch_sub(&x->queued, 1, __ATOMIC_RELAXED);
                r[i] = s->ops->run(s->ctx, reqs[i].idx, &run);
        }
        now = ha_now_ns();
        e->loop_jobs += n;
        for (size_t i = 0; i < n; i++) {
                account(e, e->sources[src[i]].loop, reqs[i].service, r[i], now - t[i]);
                complete_one(x, src[i], reqs[i].idx);
        }
}

bool ha_engine_workers_asleep(HaEngine *e)
{
        return ha_pool_asleep(e->exec[HA_EXECUTOR_LOCAL]->pool);
}

/* The policy in engine.h: whether the loop runs this job itself.  asleep:
 * every local worker sleeps, asked once per dispatch (-1: not yet). */
static bool loop_takes(HaEngine *e, const HaJobReq *req, int *asleep)
{
        const HaService *svc;

        if (req->len == 0 || req->len > HA_LOOP_JOB_BYTES || e->nloop >= HA_LOOP_PASS_JOBS ||
            e->loop_bytes + req->len > HA_LOOP_PASS_BYTES ||
            e->route[req->service] != HA_EXECUTOR_LOCAL)
                return false;
        svc = ha_service_by_id(req->service);
        if (!svc || !svc->quick)
                return false;
        if (*asleep < 0)
                *asleep = ha_engine_workers_asleep(e);
        return *asleep;
}

static void refuse_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaEngine *e = userdata;
        Refused *run = e->refused;
        size_t n = e->nrefused;
        (void)fd, (void)what;

        /* fail() may dispatch, and so refuse more: those go to the other
         * list and come on the next pass. */
        e->refused = e->refused_run;
        e->refused_run = run;
        e->nrefused = 0;
        for (size_t i = 0; i < n; i++) {
                Source *s = &e->sources[run[i].source];

                e->in_flight--;
                account(e, s->loop, run[i].service, run[i].err == -ENOENT ?
                        HA_RESULT_NOT_EXITS : HA_RESULT_FAIL, 0);
                s->ops->fail(s->ctx, run[i].idx, run[i].err);
        }
}

static void refuse(HaEngine *e, unsigned source, const HaJobReq *req, int err)
{
        /* Cannot overflow: no source has more than its capacity outstanding. */
        e->refused[e->nrefused++] = (Refused){ (uint16_t)source, req->idx, req->service, err };
        if (e->nrefused == 1)
                event_active(e->refuse_ev, 0, 0);
}

static void submit(Executor *x, const HaJob *jobs, size_t n)
{
        /* Cannot fail: queued never passes capacity, which the pool's
         * queue holds, and no source has more than its capacity
         * outstanding, which every pool's done list holds. */
        if (n && ha_pool_submit(x->pool, jobs, n) < 0)
                abort();
}

/* fresh: a new job (its dispatch time recorded), else one requeued. */
static void route_jobs(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n,
                       bool fresh)
{
        Source *s = &e->sources[source];
        uint64_t now = fresh ? ha_now_ns() : 0;
        HaJob jobs[CHUNK];
        Executor *cur = NULL;
        int asleep = -1;
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                uint16_t idx = reqs[i].idx;
                unsigned id = e->route[reqs[i].service];
                Executor *x;

                if (id == HA_EXECUTOR_NONE) {
                        refuse(e, source, &reqs[i], -ENOENT);
                        continue;
                }
                x = e->exec[id];
                if (__atomic_load_n(&x->queued, __ATOMIC_RELAXED) >= x->capacity) {
                        x->refused++;
                        refuse(e, source, &reqs[i], -EBUSY);
                        continue;
                }
                if (x != cur || k == CHUNK) {
                        if (cur)
                                submit(cur, jobs, k);
                        cur = x;
                        k = 0;
                }
                if (fresh) {
                        __atomic_store_n(&s->rec[idx].t_dispatch, now, __ATOMIC_RELAXED);
                        __atomic_store_n(&s->rec[idx].service, reqs[i].service,
                                         __ATOMIC_RELAXED);
                }
                __atomic_fetch_add(&x->queued, 1, __ATOMIC_RELAXED);
                x->in_flight++;
                if (loop_takes(e, &reqs[i], &asleep)) {
                        e->loopq[e->loopq_cur][e->nloop] = reqs[i];
                        e->loopq_src[e->loopq_cur][e->nloop] = (uint16_t)source;
                        e->loop_bytes += reqs[i].len;
                        if (e->nloop++ == 0)
                                event_active(e->loop_ev, 0, 0);
                        continue;
                }
                jobs[k++] = HA_JOB(source, idx);
        }
        if (cur)
                submit(cur, jobs, k);
}

void ha_engine_dispatch(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n)
{
        e->in_flight += (unsigned)n;
        route_jobs(e, source, reqs, n, true);
}

/* ===== registration ===== */

/* The executor's memory, its pool's threads gone (or never started). */
static void executor_free(HaEngine *e, Executor *x)
{
        if (x->complete_ev)
                event_free(x->complete_ev);
        x->pool = ha_pool_free(x->pool);
        if (x->ops->release)
                x->ops->release(x->ctx);
        for (unsigned j = 0; j < e->nsources; j++)
                free(x->svc[j]);
        free(x->requeue);
        free(x);
}

int ha_engine_add_executor(HaEngine *e, const HaExecutorOps *ops, void *ctx, const char *name,
                           unsigned nthreads, unsigned capacity, unsigned *ret_id)
{
        unsigned id = 0;
        Executor *x;
        int r;

        /* The lowest free id: one retired is free once it fully ended. */
        while (id < HA_ENGINE_MAX_EXECUTORS && e->exec[id])
                id++;
        if (id >= HA_ENGINE_MAX_EXECUTORS)
                return -ENOSPC;
        if (nthreads == 0 || capacity == 0)
                return -EINVAL;
        x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->e = e;
        x->id = id;
        x->ops = ops;
        x->ctx = ctx;
        x->capacity = capacity;
        snprintf(x->name, sizeof(x->name), "%s", name);
        r = ha_pool_new(nthreads, capacity, run_jobs, x, &x->pool);
        /* Done but not yet taken: up to every source's entries at once. */
        if (r == 0)
                r = ha_pool_grow_done(x->pool, e->total_capacity);
        /* Taken now, so that retiring it cannot fail. */
        if (r == 0 && id != HA_EXECUTOR_LOCAL && !(x->requeue = calloc(capacity, sizeof(HaJob))))
                r = -ENOMEM;
        for (unsigned i = 0; i < e->nsources && r == 0; i++)
                r = alloc_blocks(e, x, i);
        if (r == 0) {
                x->complete_ev = event_new(e->base, ha_pool_fd(x->pool), EV_READ | EV_PERSIST,
                                           complete_cb, x);
                if (!x->complete_ev || event_add(x->complete_ev, NULL) < 0)
                        r = -ENOMEM;
        }
        if (r < 0) {
                x->ctx = NULL;  /* the caller's still */
                x->ops = &ha_executor_local;
                executor_free(e, x);
                return r;
        }
        *ret_id = id;
        e->exec[id] = x;
        if (id >= e->nexec)
                e->nexec = id + 1;
        return 0;
}

/* Held executors that waited only for executor id start. */
static void release_waiters(HaEngine *e, unsigned id)
{
        for (unsigned i = 0; i < e->nexec; i++) {
                Executor *w = e->exec[i];

                if (!w || !(w->waits_for & (UINT32_C(1) << id)))
                        continue;
                w->waits_for &= ~(UINT32_C(1) << id);
                if (!w->waits_for) {
                        ha_pool_hold(w->pool, false);
                        log_info("remote zone '%s': its predecessor has retired, starting",
                                 w->name);
                }
        }
}

int ha_engine_start_zone(HaEngine *e, unsigned id, const HaRemoteZoneConfig *zone)
{
        Executor *x = id < e->nexec ? e->exec[id] : NULL;

        if (!x || x->retiring || x->has_zone)
                return -EINVAL;
        x->zone = *zone;
        x->has_zone = true;
        for (unsigned i = 0; i < e->nexec; i++) {
                const Executor *o = e->exec[i];

                if (o && o->retiring && o->has_zone && ha_remote_zones_shared(&o->zone, zone))
                        x->waits_for |= UINT32_C(1) << i;
        }
        if (x->waits_for) {
                ha_pool_hold(x->pool, true);
                log_info("remote zone '%s': its jobs wait until the zone it replaces has "
                         "retired", x->name);
        }
        return 0;
}

/* The retired executor's per-service counts stay in the totals: folded
 * into the loop's block of each source (the loop writes both). */
static void fold_counts(HaEngine *e, const Executor *x)
{
        for (unsigned src = 0; src < e->nsources; src++)
                for (unsigned w = 0; w < ha_pool_size(x->pool); w++) {
                        const SvcStats *from = &x->svc[src][(size_t)w * (e->nsvc + 1)];
                        SvcStats *to = e->sources[src].loop;

                        for (size_t i = 0; i <= e->nsvc; i++) {
                                __atomic_store_n(&to[i].requests, to[i].requests +
                                                 from[i].requests, __ATOMIC_RELAXED);
                                __atomic_store_n(&to[i].failed, to[i].failed + from[i].failed,
                                                 __ATOMIC_RELAXED);
                                ha_hist_merge(&to[i].latency, &from[i].latency);
                        }
                }
}

/* Every retiring executor whose threads have left and whose completions
 * were all taken ends here; the others come back on a later event. */
static void retire_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaEngine *e = userdata;
        (void)fd, (void)what;

        for (unsigned i = 0; i < e->nexec; i++) {
                Executor *x = e->exec[i];

                if (!x || !x->retiring || x->in_flight || !ha_pool_retired(x->pool))
                        continue;
                log_info("executor '%s' (id %u) retired: %llu jobs completed", x->name, x->id,
                         (unsigned long long)x->completed);
                fold_counts(e, x);
                e->exec[i] = NULL;
                /* Freed first: what it holds (a zone's record, its lock)
                 * is let go before a successor's thread can want it. */
                executor_free(e, x);
                release_waiters(e, i);
        }
        while (e->nexec > 0 && !e->exec[e->nexec - 1])
                e->nexec--;
}

int ha_engine_retire(HaEngine *e, unsigned id)
{
        Executor *x = id < e->nexec ? e->exec[id] : NULL;

        if (!x || id == HA_EXECUTOR_LOCAL || x->retiring)
                return -EINVAL;
        for (unsigned s = 0; s <= UINT16_MAX; s++)
                if (e->route[s] == id)
                        (void)ha_engine_route(e, (uint16_t)s, HA_EXECUTOR_LOCAL);
        __atomic_store_n(&x->retiring, true, __ATOMIC_RELEASE);
        x->nrequeue = ha_pool_retire(x->pool, x->requeue);
        __atomic_fetch_sub(&x->queued, (unsigned)x->nrequeue, __ATOMIC_RELAXED);
        x->in_flight -= (unsigned)x->nrequeue;
        log_info("executor '%s' (id %u) retiring: %zu queued jobs go where their services "
                 "route now, %u taken by its thread", x->name, x->id, x->nrequeue,
                 x->in_flight);
        /* Requeued and ended on the loop's next pass, after the caller's
         * routes are in place. */
        event_active(x->complete_ev, EV_READ, 0);
        return 0;
}

int ha_engine_route(HaEngine *e, uint16_t service, unsigned executor)
{
        unsigned old = e->route[service], n = e->not_local;   /* the loop's own */

        if (executor != HA_EXECUTOR_NONE &&
            (executor >= e->nexec || !e->exec[executor] || e->exec[executor]->retiring))
                return -EINVAL;
        if (old != HA_EXECUTOR_LOCAL && executor == HA_EXECUTOR_LOCAL)
                n--;
        else if (old == HA_EXECUTOR_LOCAL && executor != HA_EXECUTOR_LOCAL)
                n++;
        /* Pollers look: a job they run inline runs locally. */
        __atomic_store_n(&e->not_local, n, __ATOMIC_RELAXED);
        e->route[service] = (uint8_t)executor;
        return 0;
}

unsigned ha_engine_route_of(const HaEngine *e, uint16_t service)
{
        return e->route[service];
}

static const char *executor_state(const Executor *x)
{
        if (x->retiring)
                return "retiring";
        if (x->waits_for)
                return "waiting-predecessor";
        return x->ops->state ? x->ops->state(x->ctx) : "ready";
}

void ha_engine_route_json(HaEngine *e, uint16_t service, cJSON *o)
{
        unsigned id = e->route[service];
        const Executor *x;

        if (id == HA_EXECUTOR_NONE) {
                cJSON_AddNullToObject(o, "runs_on");
                return;
        }
        x = e->exec[id];
        cJSON_AddStringToObject(o, "runs_on", x->name);
        cJSON_AddStringToObject(o, "executor_state", executor_state(x));
}

int ha_engine_add_source(HaEngine *e, const HaSourceOps *ops, void *ctx, const char *name,
                         unsigned capacity, unsigned *ret_id)
{
        Executor *local = e->exec[HA_EXECUTOR_LOCAL];
        unsigned total;
        Refused *a, *b;
        Source *s;
        int r;

        if (e->nsources >= HA_ENGINE_MAX_SOURCES)
                return -ENOSPC;
        if (capacity == 0 || capacity > 65536)
                return -EINVAL;
        total = e->total_capacity + capacity;
        s = &e->sources[e->nsources];
        s->rec = calloc(capacity, sizeof(*s->rec));
        s->loop = calloc(e->nsvc + 1, sizeof(*s->loop));
        a = realloc(e->refused, total * sizeof(*a));
        if (a)
                e->refused = a;
        b = realloc(e->refused_run, total * sizeof(*b));
        if (b)
                e->refused_run = b;
        r = !s->rec || !s->loop || !a || !b ? -ENOMEM : 0;
        for (unsigned i = 0; i < e->nexec && r == 0; i++)
                if (e->exec[i])
                        r = alloc_blocks(e, e->exec[i], e->nsources);
        /* The local pool holds every source's entries at once; any pool's
         * done list may have to. */
        if (r == 0)
                r = ha_pool_grow(local->pool, total);
        for (unsigned i = 1; i < e->nexec && r == 0; i++)
                if (e->exec[i])
                        r = ha_pool_grow_done(e->exec[i]->pool, total);
        if (r < 0) {
                for (unsigned i = 0; i < e->nexec; i++) {
                        if (!e->exec[i])
                                continue;
                        free(e->exec[i]->svc[e->nsources]);
                        e->exec[i]->svc[e->nsources] = NULL;
                }
                free(s->rec);
                free(s->loop);
                s->rec = NULL;
                s->loop = NULL;
                return r;
        }
        local->capacity = total;
        e->total_capacity = total;
        s->ops = ops;
        s->ctx = ctx;
        s->capacity = capacity;
        snprintf(s->name, sizeof(s->name), "%s", name);
        *ret_id = e->nsources;
        /* Published after the entry is filled: polling workers read it. */
        __atomic_store_n(&e->nsources, e->nsources + 1, __ATOMIC_RELEASE);
        if (ops->poll && e->poll_us)
                ha_pool_set_poll(local->pool, poll_sources, poll_sources_end, e, e->poll_us);
        return 0;
}

/* ===== the engine ===== */

int ha_engine_new(struct event_base *base, const HaConfig *cfg, HaEngine **ret)
{
        unsigned workers = ha_config_workers(cfg), id;
        HaEngine *e;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->base = base;
        e->poll_us = cfg->poll_us;
        e->svc_table = ha_services(&e->nsvc);
        e->refuse_ev = event_new(base, -1, 0, refuse_cb, e);
        e->loop_ev = event_new(base, -1, 0, loop_cb, e);
        e->retire_ev = event_new(base, -1, 0, retire_cb, e);
        if (!e->refuse_ev || !e->loop_ev || !e->retire_ev) {
                r = -ENOMEM;
                goto fail;
        }
        /* Everything runs on the local pool until a route says otherwise;
         * its capacity grows with each source. */
        r = ha_engine_add_executor(e, &ha_executor_local, NULL, "local", workers, 1, &id);
        if (r < 0) {
                log_error_errno(r, "Failed to start %u workers: %m", workers);
                goto fail;
        }
        *ret = e;
        return 0;
fail:
        ha_engine_free(e);
        return r;
}

int ha_engine_stop(HaEngine *e, bool abandon)
{
        int r = 0;

        /* Past the deadline a second is plenty for a service that is not
         * stuck; after a clean drain the workers are idle, and ten seconds
         * only bound a worker stuck where nothing counted it (a poller). */
        if (!e)
                return 0;
        /* A dead remote zone would hold every job queued for it for its
         * timeout: they fail now instead (a retiring one's too). */
        for (unsigned i = 0; i < e->nexec; i++)
                if (e->exec[i] && e->exec[i]->ops->cancel)
                        e->exec[i]->ops->cancel(e->exec[i]->ctx);
        for (unsigned i = 0; i < e->nexec; i++)
                if (e->exec[i] &&
                    ha_pool_stop(e->exec[i]->pool, abandon, abandon ? 1000 : 10000) < 0)
                        r = -ETIMEDOUT;
        return r;
}

HaEngine *ha_engine_free(HaEngine *e)
{
        if (!e)
                return NULL;
        /* The completion events watch the pools' eventfds: drop them first.
         * Then join the threads: nothing may touch a pool after this. */
        for (unsigned i = 0; i < e->nexec; i++)
                if (e->exec[i])
                        executor_free(e, e->exec[i]);
        if (e->retire_ev)
                event_free(e->retire_ev);
        if (e->refuse_ev)
                event_free(e->refuse_ev);
        if (e->loop_ev)
                event_free(e->loop_ev);
        for (unsigned i = 0; i < e->nsources; i++) {
                free(e->sources[i].rec);
                free(e->sources[i].loop);
        }
        free(e->refused);
        free(e->refused_run);
        free(e);
        return NULL;
}

void ha_engine_counts(HaEngine *e, HaEngineCounts *ret)
{
        ret->completed = e->completed;
        ret->in_flight = e->in_flight;
        ret->workers = ha_pool_size(e->exec[HA_EXECUTOR_LOCAL]->pool);
        ret->queued = 0;
        for (unsigned i = 0; i < e->nexec; i++)
                if (e->exec[i])
                        ret->queued += ha_pool_queued(e->exec[i]->pool);
}

int ha_engine_stalled_worker(HaEngine *e, uint64_t min_ns, uint64_t *busy_ns)
{
        return ha_pool_longest_busy(e->exec[HA_EXECUTOR_LOCAL]->pool, ha_now_ns(), min_ns,
                                    busy_ns);
}

/* ===== stats ===== */

static void sum_block(const SvcStats *ss, uint64_t *requests, uint64_t *failed, HaHist *h)
{
        *requests += __atomic_load_n(&ss->requests, __ATOMIC_RELAXED);
        *failed += __atomic_load_n(&ss->failed, __ATOMIC_RELAXED);
        if (h)
                ha_hist_merge(h, &ss->latency);
}

/* Service row i of source src, summed over every writer, added to the
 * totals (h: NULL for the counts only). */
static void sum_source(HaEngine *e, unsigned src, size_t i, uint64_t *requests,
                       uint64_t *failed, HaHist *h)
{
        sum_block(&e->sources[src].loop[i], requests, failed, h);
        for (unsigned x = 0; x < e->nexec; x++)
                for (unsigned w = 0; e->exec[x] && w < ha_pool_size(e->exec[x]->pool); w++)
                        sum_block(&thread_block(e, e->exec[x], src, w)[i], requests, failed, h);
}

/*
 * services[]: JSON has each service's totals over every source; the
 * metrics have one row per service and source (a source's row once it
 * counted a job of that service; the socket's always).  The rows are
 * metrics only and the totals JSON only, so each source is summed once.
 */
static void services_stats(HaEngine *e, HaStats *s, HaHist *h, HaHist *hs)
{
        static const HaMetric id = { "id", NULL, HA_MT_GAUGE, "", "" };
        static const HaMetric requests_m = { "requests", NULL, HA_MT_COUNTER, "", "" };
        static const HaMetric failed_m = { "failed", NULL, HA_MT_COUNTER, "", "" };
        static const HaMetric latency_json = { "latency_us", NULL, HA_MT_GAUGE, "", "" };
        static const HaMetric by_result = { NULL, "requests", HA_MT_COUNTER, "",
                                            "Requests answered, by service, source and result" };
        static const HaMetric latency = { NULL, "request_duration", HA_MT_GAUGE, "",
                                          "Time from submit to completion" };

        for (size_t i = 0; i <= e->nsvc; i++) {
                const char *name = i < e->nsvc ? e->svc_table[i].name : "(unknown id)";
                uint64_t requests = 0, failed = 0;

                if (i == e->nsvc) {
                        for (unsigned src = 0; src < e->nsources; src++)
                                sum_source(e, src, i, &requests, &failed, NULL);
                        if (requests == 0)
                                break;
                        requests = failed = 0;
                }
                ha_stats_element(s, "services", "service", name);
                if (i < e->nsvc)
                        ha_stat(s, &id, e->svc_table[i].id);
                else
                        ha_stat_null(s, "id");
                ha_stat_str(s, "name", name);
                memset(h, 0, sizeof(*h));
                for (unsigned src = 0; src < e->nsources; src++) {
                        uint64_t r = 0, f = 0;

                        memset(hs, 0, sizeof(*hs));
                        sum_source(e, src, i, &r, &f, hs);
                        requests += r;
                        failed += f;
                        ha_hist_merge(h, hs);
                        if (r == 0 && strcmp(e->sources[src].ops->kind, "socket") != 0)
                                continue;
                        ha_stats_group(s, "source", e->sources[src].name);
                        ha_stat_labeled(s, &by_result, "result", "success", (double)(r - f));
                        ha_stat_labeled(s, &by_result, "result", "failure", (double)f);
                        ha_stat_hist(s, &latency, hs);
                        ha_stats_leave(s);
                }
                ha_stat(s, &requests_m, (double)requests);
                ha_stat(s, &failed_m, (double)failed);
                ha_stat_hist(s, &latency_json, h);
                ha_stats_leave(s);
        }
}

/* An executor's part (stats.h): JSON key, metric, unit, help, value. */
#define EXECUTOR_GAUGES(X)                                                              \
        X("threads", "executor_threads", "", "Threads of an executor", ha_pool_size(x->pool)) \
        X("capacity", "executor_capacity", "", "Jobs an executor holds at most", x->capacity) \
        X("in_flight", "executor_in_flight", "", "Jobs dispatched to an executor, not completed", \
          x->in_flight)                                                                 \
        X("queued", "executor_queued", "", "Jobs waiting for an executor's threads",     \
          __atomic_load_n(&x->queued, __ATOMIC_RELAXED))
#define EXECUTOR_COUNTERS(X)                                                            \
        X("completed", "executor_jobs_completed", "", "Jobs an executor completed",     \
          x->completed)                                                                 \
        X("refused", "executor_jobs_refused", "", "Jobs refused with its queue full",   \
          x->refused)

void ha_engine_stats(HaEngine *e, HaStats *s)
{
        static const HaMetric workers = { "count", "workers", HA_MT_GAUGE, "", "Worker threads" };
        static const HaMetric jobs = { "jobs", "worker_jobs", HA_MT_COUNTER, "",
                                       "Jobs run by each worker" };
        static const HaMetric loop_jobs = { "loop_jobs", "loop_jobs", HA_MT_COUNTER, "",
                                            "Socket jobs the loop ran itself" };
        HaPool *local = e->exec[HA_EXECUTOR_LOCAL]->pool;
        HaHist *h = malloc(2 * sizeof(*h));
        uint64_t wjobs[256];
        unsigned nw = ha_pool_size(local);

        if (h) {
                services_stats(e, s, h, h + 1);
                free(h);
        }

        for (unsigned i = 0; i < e->nsources; i++) {
                const char *kind = e->sources[i].ops->kind;

                ha_stats_element(s, "sources", "source", e->sources[i].name);
                ha_stats_label(s, "kind", kind);
                ha_stat_str(s, "name", e->sources[i].name);
                ha_stat_str(s, "kind", kind);
                e->sources[i].ops->stats(e->sources[i].ctx, s);
                ha_stats_leave(s);
        }

        for (unsigned i = 0; i < e->nexec; i++) {
                const Executor *x = e->exec[i];

                if (!x)
                        continue;
                ha_stats_element(s, "executors", "executor", x->name);
                ha_stats_label(s, "kind", x->ops->kind);
                ha_stat_str(s, "name", x->name);
                ha_stat_str(s, "kind", x->ops->kind);
                ha_stat_str(s, "state", executor_state(x));
                EXECUTOR_GAUGES(HA_GAUGE_EMIT)
                EXECUTOR_COUNTERS(HA_COUNTER_EXPR_EMIT)
                if (x->ops->stats)
                        x->ops->stats(x->ctx, s);
                ha_stats_leave(s);
        }

        if (nw > ELEMENTSOF(wjobs))
                nw = ELEMENTSOF(wjobs);
        for (unsigned i = 0; i < nw; i++)
                wjobs[i] = ha_pool_worker_jobs(local, i);
        ha_stats_section(s, "workers");
        ha_stat(s, &workers, ha_pool_size(local));
        ha_stat(s, &loop_jobs, e->loop_jobs);
        ha_stat_vec(s, &jobs, "worker", wjobs, nw);
        ha_stats_leave(s);
}
