/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "engine.h"
#include "fault.h"
#include "hist.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "queue.h"
#include "region.h"
#include "services.h"
#include "sigbus.h"
#include "workers.h"

/* What the daemon itself knows about each entry it put on the queue; the
 * shared copy is checked against it, since another zone may rewrite it. */
typedef struct ReqCtx {
        void *owner;
        uint64_t req_id;
        uint64_t t_submit;
        uint32_t off;
        uint32_t len;
        uint16_t service;
        bool live;
        /* What the worker computed: the completion answers this, never the
         * shared flag, which a peer can rewrite.  Written by the worker,
         * read by the loop after the pool's hand-back (its locks order it). */
        uint8_t result;
} ReqCtx;

typedef struct Source {
        const HaSourceOps *ops;
        void *ctx;
        char name[64];
} Source;

/* Room in the worker pool for other sources' entries, on top of ours.  They
 * may never take more (other_jobs), so the socket's queue always fits. */
#define EXTRA_JOBS 65536u

typedef struct SvcStats {
        uint64_t requests;
        uint64_t failed;
        HaHist latency;
} SvcStats;

/* The engine's scalar counters (stats.h): field, JSON key in "requests",
 * metric, unit, help. */
#define ENGINE_COUNTERS(X)                                                              \
        X(submitted, "submitted", "requests_submitted", "",                             \
          "Socket requests that entered the queue")                                     \
        X(completed, "completed", "requests_completed", "", "Socket requests answered")  \
        X(failed, "failed", "requests_failed", "", "Socket requests answered with a failure") \
        X(busy, "busy", "requests_busy", "",                                            \
          "Socket requests refused for lack of an entry or buffer")                     \
        X(tampered, "tampered", "requests_tampered", "",                                \
          "Requests whose shared entry was changed under the daemon")

typedef struct EngineCounters {
        ENGINE_COUNTERS(HA_COUNTER_FIELD)
} EngineCounters;

struct HaEngine {
        struct event_base *base;
        HaConfig cfg;
        HaRegion region;
        HaQueue queue;
        HaAlloc *alloc;
        HaPool *pool;
        ReqCtx *ctx;
        uint16_t *batch;
        HaJob *jobs;            /* completions being handed back */
        HaJob *djobs;           /* a batch being dispatched (may happen during the above) */
        Source sources[HA_ENGINE_MAX_SOURCES];
        unsigned nsources;
        struct event *collect_ev;
        struct event *complete_ev;
        bool collect_pending;
        ha_complete_fn complete;
        unsigned in_flight;
        unsigned other_jobs;            /* other sources' jobs in the pool */

        EngineCounters st;              /* loop; tampered by workers too */

        size_t nsvc;
        const HaService *svc_table;
        SvcStats *svc;                  /* nsvc + 1: the last is "unknown id" */

        HaQueueStats reported;
        HaRatelimit rl;
        uint64_t sigbus_seen;           /* ha_sigbus_restored() last looked at */
        uint64_t sigbus_lost;           /* ha_sigbus_lost() last looked at */

        void (*drained_cb)(void *);
        void *drained_userdata;
};

static SvcStats *svc_stats(HaEngine *e, uint16_t id)
{
        for (size_t i = 0; i < e->nsvc; i++)
                if (e->svc_table[i].id == id)
                        return &e->svc[i];
        return &e->svc[e->nsvc];
}

/* Worker thread: run the services of a batch in place. */
static void run_jobs(void *userdata, const HaJob *jobs, size_t n, unsigned worker)
{
        HaEngine *e = userdata;

        for (size_t i = 0; i < n; i++) {
                unsigned src = HA_JOB_SOURCE(jobs[i]);
                uint16_t idx = HA_JOB_INDEX(jobs[i]);

                if (src != HA_SOURCE_SOCKET) {
                        e->sources[src].ops->run(e->sources[src].ctx, idx, worker);
                        continue;
                }
                HaMsgEntry *en = &e->queue.q->entries[idx];
                ReqCtx *c = &e->ctx[idx];
                uint16_t sid = __atomic_load_n(&en->msg.service_id, __ATOMIC_RELAXED);
                uint32_t off = __atomic_load_n(&en->msg.offset, __ATOMIC_RELAXED);
                uint32_t len = __atomic_load_n(&en->msg.length, __ATOMIC_RELAXED);
                enum ha_result r;

                if (sid != c->service || off != c->off || len != c->len) {
                        HA_INC(&e->st, tampered);
                        r = HA_RESULT_FAIL;
                } else
                        r = ha_service_run(sid, e->region.pool + off, len);
                c->result = (uint8_t)r;
                /* Result and done bit in one store, after the payload. */
                __atomic_store_n(&en->msg.flag, ha_flag_make(r), __ATOMIC_RELEASE);
        }
}

/* A peer shrank the object and the SIGBUS guard grew it back, or (no
 * space) put private pages there: the pages it cut read as zeros.  Put
 * back what peers check before they use the queue; the lists and entries
 * heal as any scribble does. */
static void check_region(HaEngine *e)
{
        uint64_t n = ha_sigbus_restored(), lost = ha_sigbus_lost(), suppressed;
        HaMsgQueue *q = e->queue.q;

        if (n == e->sigbus_seen && lost == e->sigbus_lost)
                return;
        if (lost != e->sigbus_lost)
                /* Once per check that saw it: no heal until a restart. */
                log_error("Shared memory was shrunk by another process and could not be grown "
                          "back (no space in /dev/shm?): the cut part is now private to "
                          "hyperampd (%llu times so far); socket clients are still served, "
                          "peers of the shared memory no longer are until a restart",
                          (unsigned long long)lost);
        else if (ha_ratelimit_ok(&e->rl, &suppressed))
                log_warning("Shared memory was shrunk by another process under hyperampd; "
                            "grown back (%llu faults repaired so far%s): what was cut reads as "
                            "zeros, and requests whose entries changed are answered FAIL",
                            (unsigned long long)n,
                            suppressed ? "; earlier reports suppressed" : "");
        e->sigbus_seen = n;
        e->sigbus_lost = lost;
        ha_region_stamp(&e->region);
        if (__atomic_load_n(&q->working_mark, __ATOMIC_RELAXED) == HA_MARK_RAW)
                __atomic_store_n(&q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
        ha_st16(&q->buf_size, e->queue.n);
}

static void report_queue_anomalies(HaEngine *e)
{
        const HaQueueStats *s = &e->queue.st;
        uint64_t suppressed;

        check_region(e);
        if (memcmp(s, &e->reported, sizeof(*s)) == 0)
                return;
        if (ha_ratelimit_ok(&e->rl, &suppressed))
                log_warning("Shared queue corrupted by a peer (bad index %llu, cycles %llu, "
                            "bad state %llu, repairs %llu so far%s), lists rebuilt from own "
                            "records, no request lost",
                            (unsigned long long)s->bad_index, (unsigned long long)s->cycles,
                            (unsigned long long)s->bad_state, (unsigned long long)s->repairs,
                            suppressed ? "; earlier reports suppressed" : "");
        e->reported = *s;
}

static void collect_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaEngine *e = userdata;
        size_t n;
        (void)fd;
        (void)what;

        e->collect_pending = false;
        n = ha_queue_collect(&e->queue, e->batch);
        report_queue_anomalies(e);
        /* Cannot fail: in_flight never exceeds the queue size, and other
         * sources leave that much of the pool free. */
        if (ha_engine_dispatch(e, HA_SOURCE_SOCKET, e->batch, n) < 0)
                abort();
}

int ha_engine_dispatch(HaEngine *e, unsigned source, const uint16_t *idx, size_t n)
{
        bool other = source != HA_SOURCE_SOCKET;
        int r;

        if (n > (other ? EXTRA_JOBS - e->other_jobs : e->queue.n))
                return -ENOSPC;
        for (size_t i = 0; i < n; i++)
                e->djobs[i] = HA_JOB(source, idx[i]);
        r = ha_pool_submit(e->pool, e->djobs, n);
        if (r == 0 && other)
                e->other_jobs += (unsigned)n;
        return r;
}

/* Worker thread, idle: let the sources that can poll do so.  -1 when
 * none has anything to poll, so the worker does not spin for nothing. */
static long poll_sources(void *userdata, unsigned worker)
{
        HaEngine *e = userdata;
        unsigned n = __atomic_load_n(&e->nsources, __ATOMIC_ACQUIRE);
        long done = 0;
        bool any = false;

        for (unsigned i = 1; i < n; i++)
                if (e->sources[i].ops->poll) {
                        long r = e->sources[i].ops->poll(e->sources[i].ctx, worker);
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
        long more = 0;

        for (unsigned i = 1; i < n; i++)
                if (e->sources[i].ops->poll_end)
                        more |= e->sources[i].ops->poll_end(e->sources[i].ctx, worker);
        return more;
}

int ha_engine_add_source(HaEngine *e, const HaSourceOps *ops, void *ctx, const char *name,
                         unsigned *ret_id)
{
        Source *s;

        if (e->nsources >= HA_ENGINE_MAX_SOURCES)
                return -ENOSPC;
        s = &e->sources[e->nsources];
        s->ops = ops;
        s->ctx = ctx;
        snprintf(s->name, sizeof(s->name), "%s", name);
        *ret_id = e->nsources;
        /* Published after the entry is filled: polling workers read it. */
        __atomic_store_n(&e->nsources, e->nsources + 1, __ATOMIC_RELEASE);
        if (ops->poll && e->cfg.poll_us)
                ha_pool_set_poll(e->pool, poll_sources, poll_sources_end, e, e->cfg.poll_us);
        return 0;
}

static void release_entry(HaEngine *e, uint16_t idx)
{
        ReqCtx *c = &e->ctx[idx];

        if (ha_alloc_put(e->alloc, c->off) < 0)
                abort();        /* our own record: a failure here is a bug */
        ha_queue_release(&e->queue, idx);
        c->live = false;
        e->in_flight--;
}

static void complete_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaEngine *e = userdata;
        uint64_t now = ha_now_ns();
        size_t n;
        (void)fd;
        (void)what;

        n = ha_pool_take_completed(e->pool, e->jobs, e->queue.n + EXTRA_JOBS);
        for (size_t i = 0; i < n; i++) {
                unsigned src = HA_JOB_SOURCE(e->jobs[i]);
                uint16_t idx = HA_JOB_INDEX(e->jobs[i]);

                if (src != HA_SOURCE_SOCKET) {
                        e->other_jobs--;
                        e->sources[src].ops->complete(e->sources[src].ctx, idx);
                        continue;
                }
                ReqCtx *c = &e->ctx[idx];
                enum ha_result r = (enum ha_result)c->result;
                SvcStats *ss = svc_stats(e, c->service);
                uint64_t lat = now - c->t_submit;

                HA_INC(&e->st, completed);
                ss->requests++;
                if (r != HA_RESULT_SUCCESS) {
                        HA_INC(&e->st, failed);
                        ss->failed++;
                }
                ha_hist_add(&ss->latency, lat);
                e->complete(c->owner, c->req_id, c->service, r,
                            e->region.pool + c->off, c->len, lat);
                release_entry(e, idx);
        }
        if (e->in_flight == 0 && e->drained_cb) {
                void (*cb)(void *) = e->drained_cb;
                e->drained_cb = NULL;
                cb(e->drained_userdata);
        }
}

int ha_engine_new(struct event_base *base, const HaConfig *cfg, ha_complete_fn complete,
                  HaEngine **ret)
{
        HaEngine *e;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->base = base;
        e->cfg = *cfg;
        e->complete = complete;
        e->region.fd = -1;
        e->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        e->svc_table = ha_services(&e->nsvc);

        r = ha_region_open(&e->region, cfg->shm_name, cfg->shm_mode, cfg->queue_entries,
                           cfg->pool_size, cfg->shm_persist);
        if (r == -EBUSY)
                log_error("Shared memory '%s' is in use by another hyperampd", cfg->shm_name);
        else if (r == -EPERM)
                log_error("Shared memory '%s' belongs to another user", cfg->shm_name);
        else if (r == -ENOSPC)
                log_error("No room for shared memory '%s' (%zu bytes): lower pool_size or "
                          "enlarge /dev/shm", cfg->shm_name, (size_t)cfg->pool_size);
        else if (r < 0)
                log_error_errno(r, "Failed to set up shared memory '%s': %m", cfg->shm_name);
        if (r < 0)
                goto fail;
        r = ha_queue_init(&e->queue, e->region.queue_mem, e->region.queue_len,
                          cfg->queue_entries);
        if (r < 0)
                goto fail_log;
        r = ha_fault("alloc");
        if (r == 0)
                r = ha_alloc_new(cfg->pool_size, &e->alloc);
        if (r < 0)
                goto fail_log;
        e->ctx = calloc(cfg->queue_entries, sizeof(*e->ctx));
        e->batch = calloc(cfg->queue_entries, sizeof(*e->batch));
        e->jobs = calloc(cfg->queue_entries + EXTRA_JOBS, sizeof(*e->jobs));
        e->djobs = calloc(cfg->queue_entries + EXTRA_JOBS, sizeof(*e->djobs));
        e->svc = calloc(e->nsvc + 1, sizeof(*e->svc));
        if (!e->ctx || !e->batch || !e->jobs || !e->djobs || !e->svc) {
                r = -ENOMEM;
                goto fail_log;
        }
        /* Source 0 is our own queue, fed by the control socket. */
        e->nsources = 1;
        snprintf(e->sources[0].name, sizeof(e->sources[0].name), "socket");
        r = ha_pool_new(ha_config_workers(cfg), cfg->queue_entries + EXTRA_JOBS, run_jobs, e,
                        &e->pool);
        if (r < 0) {
                log_error_errno(r, "Failed to start %u workers: %m", ha_config_workers(cfg));
                goto fail;
        }
        e->collect_ev = event_new(base, -1, 0, collect_cb, e);
        e->complete_ev = event_new(base, ha_pool_fd(e->pool), EV_READ | EV_PERSIST,
                                   complete_cb, e);
        if (!e->collect_ev || !e->complete_ev || event_add(e->complete_ev, NULL) < 0) {
                r = -ENOMEM;
                goto fail_log;
        }
        log_info("Queue '%s' ready: %u entries, %llu byte pool, %u workers",
                 cfg->shm_name, cfg->queue_entries, (unsigned long long)cfg->pool_size,
                 ha_pool_size(e->pool));
        *ret = e;
        return 0;

fail_log:
        log_error_errno(r, "Failed to set up the request queue: %m");
fail:
        ha_engine_free(e);
        return r;
}

int ha_engine_stop(HaEngine *e, bool abandon)
{
        /* Past the deadline a second is plenty for a service that is not
         * stuck; after a clean drain the workers are idle, and ten seconds
         * only bound a worker stuck where nothing counted it (a poller). */
        if (!e || !e->pool)
                return 0;
        return ha_pool_stop(e->pool, abandon, abandon ? 1000 : 10000);
}

void ha_engine_leave(HaEngine *e)
{
        __atomic_store_n(&e->queue.q->working_mark, HA_MARK_DESTROYED, __ATOMIC_RELEASE);
        ha_region_unlink(&e->region);
}

HaEngine *ha_engine_free(HaEngine *e)
{
        if (!e)
                return NULL;
        /* The completion event watches the pool's eventfd: drop it first.
         * Then join the workers: nothing may touch the pool after this. */
        if (e->collect_ev)
                event_free(e->collect_ev);
        if (e->complete_ev)
                event_free(e->complete_ev);
        e->pool = ha_pool_free(e->pool);
        if (e->ctx && e->alloc && e->queue.q) {
                unsigned released = 0;
                for (unsigned i = 0; i < e->queue.n; i++)
                        if (e->ctx[i].live) {
                                release_entry(e, (uint16_t)i);
                                released++;
                        }
                if (released)
                        log_warning("Dropped %u requests still queued at shutdown", released);
        }
        if (e->queue.q)
                __atomic_store_n(&e->queue.q->working_mark, HA_MARK_DESTROYED, __ATOMIC_RELEASE);
        ha_queue_fini(&e->queue);
        e->alloc = ha_alloc_free(e->alloc);
        ha_region_close(&e->region);
        free(e->ctx);
        free(e->batch);
        free(e->jobs);
        free(e->djobs);
        free(e->svc);
        free(e);
        return NULL;
}

int ha_engine_submit(HaEngine *e, uint16_t service, struct evbuffer *src, size_t len,
                     void *owner, uint64_t req_id)
{
        HaMsgEntry *en;
        ReqCtx *c;
        uint16_t idx;
        uint32_t off;
        int r;

        if (len == 0 || len > e->cfg.max_payload)
                return -EINVAL;
        if (ha_queue_acquire(&e->queue, &idx) < 0) {
                HA_INC(&e->st, busy);
                return -EAGAIN;
        }
        r = ha_alloc_get(e->alloc, len, &off);
        if (r < 0) {
                ha_queue_release(&e->queue, idx);
                if (r != -ENOMEM)
                        return r;       /* can never fit: not worth a retry */
                HA_INC(&e->st, busy);
                return -EAGAIN;
        }
        if (evbuffer_remove(src, e->region.pool + off, len) != (int)len)
                abort();        /* caller guarantees len bytes are buffered */

        en = ha_queue_entry(&e->queue, idx);
        en->msg.service_id = service;
        en->msg.offset = off;
        en->msg.length = (uint32_t)len;
        en->msg.flag = 0;

        c = &e->ctx[idx];
        *c = (ReqCtx){ .owner = owner, .req_id = req_id, .t_submit = ha_now_ns(),
                       .off = off, .len = (uint32_t)len, .service = service, .live = true };
        ha_queue_enqueue(&e->queue, idx);
        e->in_flight++;
        HA_INC(&e->st, submitted);
        if (!e->collect_pending) {
                /* One collector pass per loop iteration takes the whole burst. */
                e->collect_pending = true;
                event_active(e->collect_ev, 0, 0);
        }
        return 0;
}

unsigned ha_engine_in_flight(const HaEngine *e)
{
        return e->in_flight;
}

void ha_engine_counts(HaEngine *e, HaEngineCounts *ret)
{
        ret->completed = HA_GET(&e->st, completed);
        ret->in_flight = e->in_flight;
        ret->capacity = e->queue.n;
        ret->workers = ha_pool_size(e->pool);
}

int ha_engine_stalled_worker(HaEngine *e, uint64_t min_ns, uint64_t *busy_ns)
{
        return ha_pool_longest_busy(e->pool, ha_now_ns(), min_ns, busy_ns);
}

void ha_engine_set_config(HaEngine *e, const HaConfig *cfg)
{
        e->cfg.max_payload = cfg->max_payload;
}

void ha_engine_on_drained(HaEngine *e, void (*cb)(void *), void *userdata)
{
        if (e->in_flight == 0) {
                cb(userdata);
                return;
        }
        e->drained_cb = cb;
        e->drained_userdata = userdata;
}

/* The engine's part of stats (stats.h): JSON key, metric, unit, help, value. */
#define ENGINE_QUEUE_GAUGES(X)                                                          \
        X("capacity", "queue_capacity", "", "Entries of the socket's HyperAMP queue",   \
          e->queue.n)                                                                   \
        X("depth", "queue_depth", "", "Entries accepted, not yet picked up by a worker", \
          e->queue.nwaiting + ha_pool_queued(e->pool))                                  \
        X("in_flight", "queue_in_flight", "", "Entries accepted, not yet answered",     \
          e->in_flight)                                                                 \
        X("free", "queue_free", "", "Free entries of the queue", e->queue.nfree)
#define ENGINE_QUEUE_CHECKS(X)                                                          \
        X("bad_index", "shm_bad_index", "", "Bad indexes found in the shared queue lists", \
          e->queue.st.bad_index)                                                        \
        X("cycles", "shm_cycles", "", "Cycles found in the shared queue lists",         \
          e->queue.st.cycles)                                                           \
        X("bad_state", "shm_bad_state", "", "Entries found in a bad state in the shared queue", \
          e->queue.st.bad_state)                                                        \
        X("repairs", "shm_repairs", "", "Times the shared queue lists were rebuilt",    \
          e->queue.st.repairs)                                                          \
        X("sigbus_repaired", "shm_sigbus_repaired", "",                                 \
          "Accesses to shrunk shared memory repaired by growing the file back",         \
          e->sigbus_seen)                                                               \
        X("sigbus_lost", "shm_sigbus_lost", "",                                         \
          "Accesses to shrunk shared memory covered by private pages", e->sigbus_lost)
#define ENGINE_POOL_GAUGES(X)                                                           \
        X("size", "pool_size", "bytes", "Bytes of the socket's data buffer pool", as.pool_bytes) \
        X("bytes_in_use", "pool_in_use", "bytes", "Bytes of the pool in use", as.bytes_in_use) \
        X("buffers_in_use", "pool_buffers_in_use", "", "Buffers of the pool in use",     \
          as.buffers_in_use)                                                            \
        X("largest_free", "pool_largest_free", "bytes", "Largest free block of the pool", \
          as.largest_free)
#define ENGINE_POOL_COUNTERS(X)                                                         \
        X("alloc_failures", "pool_alloc_failures", "", "Pool allocations that failed",   \
          as.alloc_failures)
#define ENGINE_SOCKET_SOURCE_COUNTERS(X)                                                \
        X("submitted", "source_requests_submitted", "", "Requests taken from a source", \
          HA_GET(&e->st, submitted))                                                    \
        X("completed", "source_requests_completed", "", "Requests of a source answered", \
          HA_GET(&e->st, completed))                                                    \
        X("failed", "source_requests_failed", "", "Requests of a source answered with a failure", \
          HA_GET(&e->st, failed))

static void service_stats(HaStats *s, const SvcStats *ss)
{
        static const HaMetric requests = { "requests", NULL, HA_MT_COUNTER, "", "" };
        static const HaMetric failed = { "failed", NULL, HA_MT_COUNTER, "", "" };
        static const HaMetric by_result = { NULL, "requests", HA_MT_COUNTER, "",
                                            "Requests answered, by service, source and result" };
        static const HaMetric latency = { "latency_us", "request_duration", HA_MT_GAUGE, "",
                                          "Time from submit to completion" };

        ha_stat(s, &requests, (double)ss->requests);
        ha_stat(s, &failed, (double)ss->failed);
        /* The service table counts socket requests. */
        ha_stats_label(s, "source", "socket");
        ha_stat_labeled(s, &by_result, "result", "success", (double)(ss->requests - ss->failed));
        ha_stat_labeled(s, &by_result, "result", "failure", (double)ss->failed);
        ha_stat_hist(s, &latency, &ss->latency);
}

void ha_engine_stats(HaEngine *e, HaStats *s)
{
        static const HaMetric id = { "id", NULL, HA_MT_GAUGE, "", "" };
        static const HaMetric workers = { "count", "workers", HA_MT_GAUGE, "", "Worker threads" };
        static const HaMetric jobs = { "jobs", "worker_jobs", HA_MT_COUNTER, "",
                                       "Jobs run by each worker" };
        uint64_t wjobs[256];
        unsigned nw = ha_pool_size(e->pool);
        HaAllocStats as;

        ha_stats_section(s, "queue");
        ha_stat_str(s, "shm_name", e->cfg.shm_name);
        ENGINE_QUEUE_GAUGES(HA_GAUGE_EMIT)
        check_region(e);
        ENGINE_QUEUE_CHECKS(HA_COUNTER_EXPR_EMIT)
        ha_stats_leave(s);

        ha_alloc_stats(e->alloc, &as);
        ha_stats_section(s, "pool");
        ENGINE_POOL_GAUGES(HA_GAUGE_EMIT)
        ENGINE_POOL_COUNTERS(HA_COUNTER_EXPR_EMIT)
        ha_stats_leave(s);

        ha_stats_section(s, "requests");
        {
                const EngineCounters *blk = &e->st;
                ENGINE_COUNTERS(HA_COUNTER_EMIT)
        }
        ha_stats_leave(s);

        for (size_t i = 0; i <= e->nsvc; i++) {
                if (i == e->nsvc && e->svc[i].requests == 0)
                        break;
                ha_stats_element(s, "services", "service",
                                 i < e->nsvc ? e->svc_table[i].name : "(unknown id)");
                if (i < e->nsvc)
                        ha_stat(s, &id, e->svc_table[i].id);
                else
                        ha_stat_null(s, "id");
                ha_stat_str(s, "name", i < e->nsvc ? e->svc_table[i].name : "(unknown id)");
                service_stats(s, &e->svc[i]);
                ha_stats_leave(s);
        }

        for (unsigned i = 0; i < e->nsources; i++) {
                const char *kind = i == HA_SOURCE_SOCKET ? "socket" : e->sources[i].ops->kind;

                ha_stats_element(s, "sources", "source", e->sources[i].name);
                ha_stats_label(s, "kind", kind);
                ha_stat_str(s, "name", e->sources[i].name);
                ha_stat_str(s, "kind", kind);
                if (i == HA_SOURCE_SOCKET) {
                        ENGINE_SOCKET_SOURCE_COUNTERS(HA_COUNTER_EXPR_EMIT)
                } else {
                        e->sources[i].ops->stats(e->sources[i].ctx, s);
                }
                ha_stats_leave(s);
        }

        if (nw > ELEMENTSOF(wjobs))
                nw = ELEMENTSOF(wjobs);
        for (unsigned i = 0; i < nw; i++)
                wjobs[i] = ha_pool_worker_jobs(e->pool, i);
        ha_stats_section(s, "workers");
        ha_stat(s, &workers, ha_pool_size(e->pool));
        ha_stat_vec(s, &jobs, "worker", wjobs, nw);
        ha_stats_leave(s);
}
