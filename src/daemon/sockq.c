/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fault.h"
#include "log.h"
#include "queue.h"
#include "region.h"
#include "sigbus.h"
#include "sockq.h"

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
        /* What the executor computed: the completion answers this, never
         * the shared flag, which a peer can rewrite.  Written by the
         * executor's thread, read by the loop after the pool's hand-back
         * (its locks order it). */
        uint8_t result;
} ReqCtx;

/* The socket queue's scalar counters (stats.h): field, JSON key in
 * "requests", metric, unit, help. */
#define SOCKQ_COUNTERS(X)                                                               \
        X(submitted, "submitted", "requests_submitted", "",                             \
          "Socket requests that entered the queue")                                     \
        X(completed, "completed", "requests_completed", "", "Socket requests answered")  \
        X(failed, "failed", "requests_failed", "", "Socket requests answered with a failure") \
        X(busy, "busy", "requests_busy", "",                                            \
          "Socket requests refused for lack of an entry or buffer")                     \
        X(tampered, "tampered", "requests_tampered", "",                                \
          "Requests whose shared entry was changed under the daemon")

typedef struct SockqCounters {
        SOCKQ_COUNTERS(HA_COUNTER_FIELD)
} SockqCounters;

struct HaSockq {
        HaEngine *engine;
        unsigned source;
        const HaConfigSlot *cfg;        /* the daemon's: read, never copied */
        HaRegion region;
        HaQueue queue;
        HaAlloc *alloc;
        ReqCtx *ctx;
        uint16_t *batch;
        HaJobReq *reqs;
        struct event *collect_ev;
        bool collect_pending;
        uint64_t burst_ns;      /* when the burst the collector will take began */
        ha_complete_fn complete;
        ha_refused_fn refused;
        unsigned in_flight;

        SockqCounters st;               /* loop; tampered by executors too */

        HaQueueStats reported;
        HaRatelimit rl;
        uint64_t sigbus_seen;           /* ha_sigbus_restored() last looked at */
        uint64_t sigbus_lost;           /* ha_sigbus_lost() last looked at */

        void (*drained_cb)(void *);
        void *drained_userdata;
};

/* Executor thread: run one entry, from our own record. */
static enum ha_result sockq_run(void *ctx, uint16_t idx, const HaRun *run)
{
        HaSockq *q = ctx;
        HaMsgEntry *en = &q->queue.q->entries[idx];
        ReqCtx *c = &q->ctx[idx];
        uint16_t sid = __atomic_load_n(&en->msg.service_id, __ATOMIC_RELAXED);
        uint32_t off = __atomic_load_n(&en->msg.offset, __ATOMIC_RELAXED);
        uint32_t len = __atomic_load_n(&en->msg.length, __ATOMIC_RELAXED);
        uint8_t *buf = q->region.pool + off;
        enum ha_result r;

        if (sid != c->service || off != c->off || len != c->len) {
                HA_INC(&q->st, tampered);
                r = HA_RESULT_FAIL;
        } else if (!ha_run_private(run)) {
                r = ha_run_call(run, sid, buf, len);
        } else {
                /* The pool is shared memory: a remote executor gets a copy. */
                uint8_t *copy = malloc(len);

                if (!copy)
                        r = HA_RESULT_FAIL;
                else {
                        memcpy(copy, buf, len);
                        r = ha_run_call(run, sid, copy, len);
                        if (r == HA_RESULT_SUCCESS)
                                memcpy(buf, copy, len);
                        free(copy);
                }
        }
        c->result = (uint8_t)r;
        /* Result and done bit in one store, after the payload. */
        __atomic_store_n(&en->msg.flag, ha_flag_make(r), __ATOMIC_RELEASE);
        return r;
}

/* A peer shrank the object and the SIGBUS guard grew it back, or (no
 * space) put private pages there: the pages it cut read as zeros.  Put
 * back what peers check before they use the queue; the lists and entries
 * heal as any scribble does. */
static void check_region(HaSockq *q)
{
        uint64_t n = ha_sigbus_restored(), lost = ha_sigbus_lost(), suppressed;
        HaMsgQueue *mq = q->queue.q;

        if (n == q->sigbus_seen && lost == q->sigbus_lost)
                return;
        if (lost != q->sigbus_lost)
                /* Once per check that saw it: no heal until a restart. */
                log_error("Shared memory was shrunk by another process and could not be grown "
                          "back (no space in /dev/shm?): the cut part is now private to "
                          "hyperampd (%llu times so far); socket clients are still served, "
                          "peers of the shared memory no longer are until a restart",
                          (unsigned long long)lost);
        else if (ha_ratelimit_ok(&q->rl, &suppressed))
                log_warning("Shared memory was shrunk by another process under hyperampd; "
                            "grown back (%llu faults repaired so far%s): what was cut reads as "
                            "zeros, and requests whose entries changed are answered FAIL",
                            (unsigned long long)n,
                            suppressed ? "; earlier reports suppressed" : "");
        q->sigbus_seen = n;
        q->sigbus_lost = lost;
        ha_region_stamp(&q->region);
        if (__atomic_load_n(&mq->working_mark, __ATOMIC_RELAXED) == HA_MARK_RAW)
                __atomic_store_n(&mq->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
        ha_st16(&mq->buf_size, q->queue.n);
}

static void report_queue_anomalies(HaSockq *q)
{
        const HaQueueStats *s = &q->queue.st;
        uint64_t suppressed;

        check_region(q);
        if (memcmp(s, &q->reported, sizeof(*s)) == 0)
                return;
        if (ha_ratelimit_ok(&q->rl, &suppressed))
                log_warning("Shared queue corrupted by a peer (bad index %llu, cycles %llu, "
                            "bad state %llu, repairs %llu so far%s), lists rebuilt from own "
                            "records, no request lost",
                            (unsigned long long)s->bad_index, (unsigned long long)s->cycles,
                            (unsigned long long)s->bad_state, (unsigned long long)s->repairs,
                            suppressed ? "; earlier reports suppressed" : "");
        q->reported = *s;
}

static void collect_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaSockq *q = userdata;
        size_t n;
        (void)fd, (void)what;

        q->collect_pending = false;
        n = ha_queue_collect(&q->queue, q->batch);
        report_queue_anomalies(q);
        /* The service from our own record, never the shared entry. */
        for (size_t i = 0; i < n; i++)
                q->reqs[i] = (HaJobReq){ q->batch[i], q->ctx[q->batch[i]].service,
                                         q->ctx[q->batch[i]].len };
        ha_engine_dispatch(q->engine, q->source, q->reqs, n);
}

static void release_entry(HaSockq *q, uint16_t idx)
{
        ReqCtx *c = &q->ctx[idx];

        if (ha_alloc_put(q->alloc, c->off) < 0)
                abort();        /* our own record: a failure here is a bug */
        ha_queue_release(&q->queue, idx);
        c->live = false;
        q->in_flight--;
}

/* err: -EBUSY for a request refused BUSY, else 0 and r. */
static void finish(HaSockq *q, uint16_t idx, enum ha_result r, int err)
{
        ReqCtx *c = &q->ctx[idx];

        HA_INC(&q->st, completed);
        if (r != HA_RESULT_SUCCESS)
                HA_INC(&q->st, failed);
        if (err == -EBUSY) {
                HA_INC(&q->st, busy);
                q->refused(c->owner, c->req_id, c->service, err);
        } else
                q->complete(c->owner, c->req_id, c->service, r, q->region.pool + c->off,
                            c->len, ha_now_ns() - c->t_submit);
        release_entry(q, idx);
        if (q->in_flight == 0 && q->drained_cb) {
                void (*cb)(void *) = q->drained_cb;
                q->drained_cb = NULL;
                cb(q->drained_userdata);
        }
}

static void sockq_complete(void *ctx, uint16_t idx)
{
        HaSockq *q = ctx;

        finish(q, idx, (enum ha_result)q->ctx[idx].result, 0);
}

static void sockq_fail(void *ctx, uint16_t idx, int err)
{
        HaSockq *q = ctx;
        enum ha_result r = err == -ENOENT ? HA_RESULT_NOT_EXITS : HA_RESULT_FAIL;

        __atomic_store_n(&q->queue.q->entries[idx].msg.flag, ha_flag_make(r), __ATOMIC_RELEASE);
        finish(q, idx, r, err);
}

#define SOCKQ_SOURCE_COUNTERS(X)                                                        \
        X("submitted", "source_requests_submitted", "", "Requests taken from a source", \
          HA_GET(&q->st, submitted))                                                    \
        X("completed", "source_requests_completed", "", "Requests of a source answered", \
          HA_GET(&q->st, completed))                                                    \
        X("failed", "source_requests_failed", "", "Requests of a source answered with a failure", \
          HA_GET(&q->st, failed))

static void sockq_source_stats(void *ctx, HaStats *s)
{
        HaSockq *q = ctx;

        SOCKQ_SOURCE_COUNTERS(HA_COUNTER_EXPR_EMIT)
}

static const HaSourceOps sockq_ops = {
        .kind = "socket",
        .run = sockq_run,
        .complete = sockq_complete,
        .fail = sockq_fail,
        .stats = sockq_source_stats,
};

int ha_sockq_new(struct event_base *base, HaEngine *e, const HaConfigSlot *slot,
                 ha_complete_fn complete, ha_refused_fn refused, HaSockq **ret)
{
        const HaConfig *cfg;
        HaSockq *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->engine = e;
        q->cfg = slot;
        cfg = ha_config_get(slot);
        q->complete = complete;
        q->refused = refused;
        q->region.fd = -1;
        q->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);

        r = ha_region_open(&q->region, cfg->shm_name, cfg->shm_mode, cfg->queue_entries,
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
        r = ha_queue_init(&q->queue, q->region.queue_mem, q->region.queue_len,
                          cfg->queue_entries);
        if (r < 0)
                goto fail_log;
        r = ha_fault("alloc");
        if (r == 0)
                r = ha_alloc_new(cfg->pool_size, &q->alloc);
        if (r < 0)
                goto fail_log;
        q->ctx = calloc(cfg->queue_entries, sizeof(*q->ctx));
        q->batch = calloc(cfg->queue_entries, sizeof(*q->batch));
        q->reqs = calloc(cfg->queue_entries, sizeof(*q->reqs));
        q->collect_ev = event_new(base, -1, 0, collect_cb, q);
        if (!q->ctx || !q->batch || !q->reqs || !q->collect_ev) {
                r = -ENOMEM;
                goto fail_log;
        }
        r = ha_engine_add_source(e, &sockq_ops, q, "socket", cfg->queue_entries, &q->source);
        if (r < 0)
                goto fail_log;
        log_info("Queue '%s' ready: %u entries, %llu byte pool", cfg->shm_name,
                 cfg->queue_entries, (unsigned long long)cfg->pool_size);
        *ret = q;
        return 0;

fail_log:
        log_error_errno(r, "Failed to set up the request queue: %m");
fail:
        ha_sockq_free(q);
        return r;
}

void ha_sockq_leave(HaSockq *q)
{
        __atomic_store_n(&q->queue.q->working_mark, HA_MARK_DESTROYED, __ATOMIC_RELEASE);
        ha_region_unlink(&q->region);
}

HaSockq *ha_sockq_free(HaSockq *q)
{
        if (!q)
                return NULL;
        if (q->collect_ev)
                event_free(q->collect_ev);
        if (q->ctx && q->alloc && q->queue.q) {
                unsigned released = 0;
                for (unsigned i = 0; i < q->queue.n; i++)
                        if (q->ctx[i].live) {
                                release_entry(q, (uint16_t)i);
                                released++;
                        }
                if (released)
                        log_warning("Dropped %u requests still queued at shutdown", released);
        }
        if (q->queue.q)
                __atomic_store_n(&q->queue.q->working_mark, HA_MARK_DESTROYED, __ATOMIC_RELEASE);
        ha_queue_fini(&q->queue);
        q->alloc = ha_alloc_free(q->alloc);
        ha_region_close(&q->region);
        free(q->ctx);
        free(q->batch);
        free(q->reqs);
        free(q);
        return NULL;
}

int ha_sockq_submit_data(HaSockq *q, uint16_t service, const void *data, size_t len,
                         void *owner, uint64_t req_id)
{
        HaMsgEntry *en;
        ReqCtx *c;
        uint16_t idx;
        uint32_t off;
        int r;

        if (len == 0 || len > ha_config_get(q->cfg)->max_payload)
                return -EINVAL;
        if (ha_queue_acquire(&q->queue, &idx) < 0) {
                HA_INC(&q->st, busy);
                return -EAGAIN;
        }
        r = ha_alloc_get(q->alloc, len, &off);
        if (r < 0) {
                ha_queue_release(&q->queue, idx);
                if (r != -ENOMEM)
                        return r;       /* can never fit: not worth a retry */
                HA_INC(&q->st, busy);
                return -EAGAIN;
        }
        memcpy(q->region.pool + off, data, len);

        en = ha_queue_entry(&q->queue, idx);
        en->msg.service_id = service;
        en->msg.offset = off;
        en->msg.length = (uint32_t)len;
        en->msg.flag = 0;

        c = &q->ctx[idx];
        /* One clock read a burst: the requests one loop pass reads came
         * together (a later one's latency counts from the first's). */
        if (!q->collect_pending)
                q->burst_ns = ha_now_ns();
        *c = (ReqCtx){ .owner = owner, .req_id = req_id, .t_submit = q->burst_ns,
                       .off = off, .len = (uint32_t)len, .service = service, .live = true };
        ha_queue_enqueue(&q->queue, idx);
        q->in_flight++;
        HA_INC(&q->st, submitted);
        if (!q->collect_pending) {
                /* One collector pass per loop iteration takes the whole burst. */
                q->collect_pending = true;
                event_active(q->collect_ev, 0, 0);
        }
        return 0;
}

unsigned ha_sockq_in_flight(const HaSockq *q)
{
        return q->in_flight;
}

unsigned ha_sockq_capacity(const HaSockq *q)
{
        return q->queue.n;
}

uint64_t ha_sockq_completed(const HaSockq *q)
{
        return HA_GET(&q->st, completed);
}

void ha_sockq_on_drained(HaSockq *q, void (*cb)(void *), void *userdata)
{
        if (q->in_flight == 0) {
                cb(userdata);
                return;
        }
        q->drained_cb = cb;
        q->drained_userdata = userdata;
}

/* The socket queue's part of stats (stats.h): JSON key, metric, unit, help,
 * value. */
#define SOCKQ_QUEUE_GAUGES(X)                                                           \
        X("capacity", "queue_capacity", "", "Entries of the socket's HyperAMP queue",   \
          q->queue.n)                                                                   \
        X("depth", "queue_depth", "", "Entries accepted, not yet picked up by a worker", \
          q->queue.nwaiting + n.queued)                                                 \
        X("in_flight", "queue_in_flight", "", "Entries accepted, not yet answered",     \
          q->in_flight)                                                                 \
        X("free", "queue_free", "", "Free entries of the queue", q->queue.nfree)
#define SOCKQ_QUEUE_CHECKS(X)                                                           \
        X("bad_index", "shm_bad_index", "", "Bad indexes found in the shared queue lists", \
          q->queue.st.bad_index)                                                        \
        X("cycles", "shm_cycles", "", "Cycles found in the shared queue lists",         \
          q->queue.st.cycles)                                                           \
        X("bad_state", "shm_bad_state", "", "Entries found in a bad state in the shared queue", \
          q->queue.st.bad_state)                                                        \
        X("repairs", "shm_repairs", "", "Times the shared queue lists were rebuilt",    \
          q->queue.st.repairs)                                                          \
        X("sigbus_repaired", "shm_sigbus_repaired", "",                                 \
          "Accesses to shrunk shared memory repaired by growing the file back",         \
          q->sigbus_seen)                                                               \
        X("sigbus_lost", "shm_sigbus_lost", "",                                         \
          "Accesses to shrunk shared memory covered by private pages", q->sigbus_lost)
#define SOCKQ_POOL_GAUGES(X)                                                            \
        X("size", "pool_size", "bytes", "Bytes of the socket's data buffer pool", as.pool_bytes) \
        X("bytes_in_use", "pool_in_use", "bytes", "Bytes of the pool in use", as.bytes_in_use) \
        X("buffers_in_use", "pool_buffers_in_use", "", "Buffers of the pool in use",     \
          as.buffers_in_use)                                                            \
        X("largest_free", "pool_largest_free", "bytes", "Largest free block of the pool", \
          as.largest_free)
#define SOCKQ_POOL_COUNTERS(X)                                                          \
        X("alloc_failures", "pool_alloc_failures", "", "Pool allocations that failed",   \
          as.alloc_failures)

void ha_sockq_stats(HaSockq *q, HaStats *s)
{
        HaEngineCounts n;
        HaAllocStats as;

        ha_engine_counts(q->engine, &n);
        ha_stats_section(s, "queue");
        ha_stat_str(s, "shm_name", ha_config_get(q->cfg)->shm_name);
        SOCKQ_QUEUE_GAUGES(HA_GAUGE_EMIT)
        check_region(q);
        SOCKQ_QUEUE_CHECKS(HA_COUNTER_EXPR_EMIT)
        ha_stats_leave(s);

        ha_alloc_stats(q->alloc, &as);
        ha_stats_section(s, "pool");
        SOCKQ_POOL_GAUGES(HA_GAUGE_EMIT)
        SOCKQ_POOL_COUNTERS(HA_COUNTER_EXPR_EMIT)
        ha_stats_leave(s);

        ha_stats_section(s, "requests");
        {
                const SockqCounters *blk = &q->st;
                SOCKQ_COUNTERS(HA_COUNTER_EMIT)
        }
        ha_stats_leave(s);
}
