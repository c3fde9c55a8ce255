/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "hist.h"
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
} Source;

/*
 * Per service: one block per writer, so no job pays for a lock or an
 * atomic read-modify-write.  Each executor thread has its own (the local
 * pool's worker w also for the jobs it runs inline when polling), the loop
 * one for refused jobs.  Writers store with relaxed atomics; stats_json
 * sums.
 */
typedef struct SvcStats {
        uint64_t requests;
        uint64_t failed;
        HaHist latency;
} SvcStats;

typedef struct Executor {
        HaEngine *e;
        SvcStats *svc;                  /* nthreads blocks */
        const HaExecutorOps *ops;
        void *ctx;
        char name[64];
        HaPool *pool;
        struct event *complete_ev;
        unsigned capacity;              /* the pool holds this many */
        unsigned queued;                /* dispatched, not completed */
        uint64_t completed, refused;
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
        Executor *exec[HA_ENGINE_MAX_EXECUTORS];
        unsigned nexec;
        uint8_t route[65536];
        unsigned not_local;             /* services routed elsewhere (polling off) */
        unsigned in_flight;
        uint64_t completed;

        Refused *refused, *refused_run; /* total_capacity each */
        size_t nrefused;
        struct event *refuse_ev;

        size_t nsvc;
        const HaService *svc_table;
        SvcStats *svc;                  /* the loop's block; each block has nsvc + 1
                                         * rows, the last for "unknown id" */
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

static SvcStats *thread_block(HaEngine *e, const Executor *x, unsigned worker)
{
        return &x->svc[(size_t)worker * (e->nsvc + 1)];
}

/* ===== the executors' threads ===== */

typedef struct Done {
        uint64_t t;
        uint16_t service;
        enum ha_result r;
} Done;

static void run_jobs(void *userdata, const HaJob *jobs, size_t n, unsigned worker)
{
        Executor *x = userdata;
        HaEngine *e = x->e;
        HaRun run = { .ops = x->ops, .ctx = x->ctx, .worker = worker };
        SvcStats *block = thread_block(e, x, worker);
        Done d[CHUNK];

        for (size_t i = 0; i < n; i += CHUNK) {
                size_t k = n - i < CHUNK ? n - i : CHUNK;
                uint64_t now;

                for (size_t j = 0; j < k; j++) {
                        Source *s = &e->sources[HA_JOB_SOURCE(jobs[i + j])];
                        uint16_t idx = HA_JOB_INDEX(jobs[i + j]);

                        /* Before run(): from its answer on, the entry may
                         * be the next job's. */
                        d[j].t = __atomic_load_n(&s->rec[idx].t_dispatch, __ATOMIC_RELAXED);
                        d[j].service = __atomic_load_n(&s->rec[idx].service, __ATOMIC_RELAXED);
                        d[j].r = s->ops->run(s->ctx, idx, &run);
                }
                /* One clock read per batch: the batch completes together. */
                now = ha_now_ns();
                for (size_t j = 0; j < k; j++)
                        account(e, block, d[j].service, d[j].r, now - d[j].t);
        }
}

void ha_engine_run_inline(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n,
                          const HaRun *run)
{
        Source *s = &e->sources[source];
        SvcStats *block = thread_block(e, e->exec[HA_EXECUTOR_LOCAL], run->worker);
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

static void complete_cb(evutil_socket_t fd, short what, void *userdata)
{
        Executor *x = userdata;
        HaEngine *e = x->e;
        HaJob jobs[CHUNK];
        size_t n;
        (void)fd, (void)what;

        do {
                n = ha_pool_take_completed(x->pool, jobs, CHUNK);
                for (size_t i = 0; i < n; i++) {
                        Source *s = &e->sources[HA_JOB_SOURCE(jobs[i])];
                        uint16_t idx = HA_JOB_INDEX(jobs[i]);

                        x->queued--;
                        x->completed++;
                        e->in_flight--;
                        e->completed++;
                        s->ops->complete(s->ctx, idx);
                }
        } while (n == CHUNK);
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
                account(e, e->svc, run[i].service, run[i].err == -ENOENT ?
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
        /* Cannot fail: queued never passes capacity, which the pool holds. */
        if (n && ha_pool_submit(x->pool, jobs, n) < 0)
                abort();
}

void ha_engine_dispatch(HaEngine *e, unsigned source, const HaJobReq *reqs, size_t n)
{
        Source *s = &e->sources[source];
        uint64_t now = ha_now_ns();
        HaJob jobs[CHUNK];
        Executor *cur = NULL;
        size_t k = 0;

        e->in_flight += (unsigned)n;
        for (size_t i = 0; i < n; i++) {
                uint16_t idx = reqs[i].idx;
                unsigned id = e->route[reqs[i].service];
                Executor *x;

                if (id == HA_EXECUTOR_NONE) {
                        refuse(e, source, &reqs[i], -ENOENT);
                        continue;
                }
                x = e->exec[id];
                if (x->queued >= x->capacity) {
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
                __atomic_store_n(&s->rec[idx].t_dispatch, now, __ATOMIC_RELAXED);
                __atomic_store_n(&s->rec[idx].service, reqs[i].service, __ATOMIC_RELAXED);
                x->queued++;
                jobs[k++] = HA_JOB(source, idx);
        }
        if (cur)
                submit(cur, jobs, k);
}

/* ===== registration ===== */

int ha_engine_add_executor(HaEngine *e, const HaExecutorOps *ops, void *ctx, const char *name,
                           unsigned nthreads, unsigned capacity, unsigned *ret_id)
{
        Executor *x;
        int r;

        if (e->nexec >= HA_ENGINE_MAX_EXECUTORS)
                return -ENOSPC;
        if (nthreads == 0 || capacity == 0)
                return -EINVAL;
        x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->e = e;
        x->ops = ops;
        x->ctx = ctx;
        x->capacity = capacity;
        snprintf(x->name, sizeof(x->name), "%s", name);
        x->svc = calloc((size_t)nthreads * (e->nsvc + 1), sizeof(*x->svc));
        if (!x->svc) {
                free(x);
                return -ENOMEM;
        }
        r = ha_pool_new(nthreads, capacity, run_jobs, x, &x->pool);
        if (r < 0) {
                free(x->svc);
                free(x);
                return r;
        }
        x->complete_ev = event_new(e->base, ha_pool_fd(x->pool), EV_READ | EV_PERSIST,
                                   complete_cb, x);
        if (!x->complete_ev || event_add(x->complete_ev, NULL) < 0) {
                if (x->complete_ev)
                        event_free(x->complete_ev);
                ha_pool_free(x->pool);
                free(x->svc);
                free(x);
                return -ENOMEM;
        }
        *ret_id = e->nexec;
        e->exec[e->nexec++] = x;
        return 0;
}

int ha_engine_route(HaEngine *e, uint16_t service, unsigned executor)
{
        unsigned old = e->route[service], n = e->not_local;   /* the loop's own */

        if (executor != HA_EXECUTOR_NONE && executor >= e->nexec)
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
        cJSON_AddStringToObject(o, "executor_state", x->ops->state ? x->ops->state(x->ctx) :
                                "ready");
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
        a = realloc(e->refused, total * sizeof(*a));
        if (a)
                e->refused = a;
        b = realloc(e->refused_run, total * sizeof(*b));
        if (b)
                e->refused_run = b;
        if (!s->rec || !a || !b) {
                free(s->rec);
                s->rec = NULL;
                return -ENOMEM;
        }
        /* The local pool holds every source's entries at once. */
        r = ha_pool_grow(local->pool, total);
        if (r < 0) {
                free(s->rec);
                s->rec = NULL;
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
        e->svc = calloc(e->nsvc + 1, sizeof(*e->svc));
        e->refuse_ev = event_new(base, -1, 0, refuse_cb, e);
        if (!e->svc || !e->refuse_ev) {
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
        for (unsigned i = 0; i < e->nexec; i++)
                if (ha_pool_stop(e->exec[i]->pool, abandon, abandon ? 1000 : 10000) < 0)
                        r = -ETIMEDOUT;
        return r;
}

HaEngine *ha_engine_free(HaEngine *e)
{
        if (!e)
                return NULL;
        /* The completion events watch the pools' eventfds: drop them first.
         * Then join the threads: nothing may touch a pool after this. */
        for (unsigned i = 0; i < e->nexec; i++) {
                Executor *x = e->exec[i];

                event_free(x->complete_ev);
                x->pool = ha_pool_free(x->pool);
                free(x->svc);
                free(x);
        }
        if (e->refuse_ev)
                event_free(e->refuse_ev);
        for (unsigned i = 0; i < e->nsources; i++)
                free(e->sources[i].rec);
        free(e->refused);
        free(e->refused_run);
        free(e->svc);
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
                ret->queued += ha_pool_queued(e->exec[i]->pool);
}

int ha_engine_stalled_worker(HaEngine *e, uint64_t min_ns, uint64_t *busy_ns)
{
        return ha_pool_longest_busy(e->exec[HA_EXECUTOR_LOCAL]->pool, ha_now_ns(), min_ns,
                                    busy_ns);
}

/* ===== stats ===== */

static void add_latency(cJSON *o, const HaHist *h)
{
        cJSON *l = cJSON_AddObjectToObject(o, "latency_us");

        cJSON_AddNumberToObject(l, "p50", (double)ha_hist_quantile(h, 0.50) / 1000.0);
        cJSON_AddNumberToObject(l, "p99", (double)ha_hist_quantile(h, 0.99) / 1000.0);
        cJSON_AddNumberToObject(l, "max", (double)h->max / 1000.0);
}

static void sum_block(const SvcStats *ss, uint64_t *requests, uint64_t *failed, HaHist *h)
{
        *requests += __atomic_load_n(&ss->requests, __ATOMIC_RELAXED);
        *failed += __atomic_load_n(&ss->failed, __ATOMIC_RELAXED);
        ha_hist_merge(h, &ss->latency);
}

static void services_json(HaEngine *e, cJSON *o)
{
        cJSON *svcs = cJSON_AddArrayToObject(o, "services");
        HaHist *h = malloc(sizeof(*h));

        if (!h)
                return;
        for (size_t i = 0; i <= e->nsvc; i++) {
                uint64_t requests = 0, failed = 0;
                cJSON *s;

                memset(h, 0, sizeof(*h));
                sum_block(&e->svc[i], &requests, &failed, h);
                for (unsigned x = 0; x < e->nexec; x++)
                        for (unsigned w = 0; w < ha_pool_size(e->exec[x]->pool); w++)
                                sum_block(&thread_block(e, e->exec[x], w)[i], &requests,
                                          &failed, h);
                if (i == e->nsvc && requests == 0)
                        break;
                s = cJSON_CreateObject();
                if (i < e->nsvc) {
                        cJSON_AddNumberToObject(s, "id", e->svc_table[i].id);
                        cJSON_AddStringToObject(s, "name", e->svc_table[i].name);
                } else {
                        cJSON_AddNullToObject(s, "id");
                        cJSON_AddStringToObject(s, "name", "(unknown id)");
                }
                cJSON_AddNumberToObject(s, "requests", (double)requests);
                cJSON_AddNumberToObject(s, "failed", (double)failed);
                add_latency(s, h);
                cJSON_AddItemToArray(svcs, s);
        }
        free(h);
}

void ha_engine_stats_json(HaEngine *e, cJSON *o)
{
        HaPool *local = e->exec[HA_EXECUTOR_LOCAL]->pool;
        cJSON *srcs, *xs, *w, *jobs;

        services_json(e, o);

        srcs = cJSON_AddArrayToObject(o, "sources");
        for (unsigned i = 0; i < e->nsources; i++) {
                cJSON *so = cJSON_CreateObject();
                cJSON_AddStringToObject(so, "name", e->sources[i].name);
                cJSON_AddStringToObject(so, "kind", e->sources[i].ops->kind);
                e->sources[i].ops->stats_json(e->sources[i].ctx, so);
                cJSON_AddItemToArray(srcs, so);
        }

        xs = cJSON_AddArrayToObject(o, "executors");
        for (unsigned i = 0; i < e->nexec; i++) {
                const Executor *x = e->exec[i];
                cJSON *xo = cJSON_CreateObject();

                cJSON_AddStringToObject(xo, "name", x->name);
                cJSON_AddStringToObject(xo, "kind", x->ops->kind);
                cJSON_AddStringToObject(xo, "state", x->ops->state ? x->ops->state(x->ctx) :
                                        "ready");
                cJSON_AddNumberToObject(xo, "threads", ha_pool_size(x->pool));
                cJSON_AddNumberToObject(xo, "capacity", x->capacity);
                cJSON_AddNumberToObject(xo, "in_flight", x->queued);
                cJSON_AddNumberToObject(xo, "completed", (double)x->completed);
                cJSON_AddNumberToObject(xo, "refused", (double)x->refused);
                if (x->ops->stats_json)
                        x->ops->stats_json(x->ctx, xo);
                cJSON_AddItemToArray(xs, xo);
        }

        w = cJSON_AddObjectToObject(o, "workers");
        cJSON_AddNumberToObject(w, "count", ha_pool_size(local));
        jobs = cJSON_AddArrayToObject(w, "jobs");
        for (unsigned i = 0; i < ha_pool_size(local); i++)
                cJSON_AddItemToArray(jobs, cJSON_CreateNumber((double)ha_pool_worker_jobs(local, i)));
}
