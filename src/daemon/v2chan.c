/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "backoff.h"
#include "devmem.h"
#include "log.h"
#include "physmem.h"
#include "stats.h"
#include "v2chan.h"
#include "hyperamp/cleanup.h"
#include "v2ring.h"

#define SPIN_NS         50000u
#define MAX_STEP_NS     1000000u        /* idle: a look every millisecond */
#define REPLY_WAIT_NS   1000000000u     /* a peer that never consumes ring B */

/* Counters, declared once (stats.h): the JSON key and the metric. */
#define V2C_COUNTERS(X)                                                                 \
        X(requests, "requests", "v2chan_requests", "", "Requests a v2 frontend sent")   \
        X(succeeded, "succeeded", "v2chan_succeeded", "", "v2 frontend requests answered SUCCESS") \
        X(failed, "failed", "v2chan_failed", "", "v2 frontend requests answered otherwise") \
        X(bulk, "bulk", "v2chan_bulk", "", "v2 frontend requests that were bulk transfers") \
        X(bad_messages, "bad_messages", "v2chan_bad_messages", "",                      \
          "v2 frontend messages refused (length, type)")                                \
        X(bad_ranges, "bad_ranges", "v2chan_bad_ranges", "",                            \
          "v2 bulk ranges refused (past the region, on the slots)")                     \
        X(faults, "faults", "v2chan_faults", "", "v2 rings found broken by the frontend") \
        X(peer_restarts, "peer_restarts", "v2chan_peer_restarts", "",                   \
          "v2 frontends seen re-creating their rings")                                  \
        X(replies_dropped, "replies_dropped", "v2chan_replies_dropped", "",             \
          "v2 replies dropped: the frontend never made room")

typedef struct Counts {
        V2C_COUNTERS(HA_COUNTER_FIELD)
} Counts;

struct HaV2Chan {
        HaV2ChannelConfig cfg;
        struct event_base *base;
        HaEngine *e;
        unsigned source;
        HaPhysMem mem;
        HaPhysMap map;
        volatile uint8_t *win;
        int job_fd;                     /* eventfd: the poller has a request */
        struct event *job_ev;           /* the loop's side of it (the base has no lock) */
        pthread_t thread;
        bool started;
        /* The one request: written by the poller before job_ev, read by
         * the executor (ordered by the engine's queue) and the loop. */
        uint16_t service;
        uint8_t type;                   /* HA_V2_SERVICE or HA_V2_BULK */
        uint32_t len;
        uint8_t *staging;               /* HA_V2_BULK_MAX bytes */
        enum ha_result result;          /* set by run() or fail() */
        /* poller <-> loop */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done, stop;
        Counts c;                       /* atomic adds */
        int state;                      /* atomic: 0 down, 1 ready, 2 fault */
        HaRatelimit rl;                 /* the poller's */
};

static void bump(uint64_t *v)
{
        __atomic_fetch_add(v, 1, __ATOMIC_RELAXED);
}

static bool stopping(HaV2Chan *c)
{
        bool s;

        pthread_mutex_lock(&c->lock);
        s = c->stop;
        pthread_mutex_unlock(&c->lock);
        return s;
}

static void note(HaV2Chan *c, const char *what)
{
        uint64_t suppressed;

        if (ha_ratelimit_ok(&c->rl, &suppressed))
                log_warning("v2 channel '%s': %s%s", c->cfg.name, what,
                            suppressed ? " (and earlier messages suppressed)" : "");
}

/* ===== engine side ===== */

static enum ha_result v2c_run(void *ctx, uint16_t idx, const HaRun *run)
{
        HaV2Chan *c = ctx;

        (void)idx;
        /* The staging buffer is ours alone: fine for any executor. */
        c->result = ha_run_call(run, c->service, c->staging, c->len);
        return c->result;
}

static void finish(HaV2Chan *c)
{
        pthread_mutex_lock(&c->lock);
        c->done = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

static void v2c_complete(void *ctx, uint16_t idx)
{
        (void)idx;
        finish(ctx);
}

static void v2c_fail(void *ctx, uint16_t idx, int err)
{
        HaV2Chan *c = ctx;

        (void)idx;
        c->result = err == -ENOENT ? HA_RESULT_NOT_EXITS : HA_RESULT_FAIL;
        finish(c);
}

static void v2c_stats(void *ctx, HaStats *s)
{
        static const char *const states[] = { "down", "ready", "fault" };
        static const HaMetric state = { "state", "v2chan_state", HA_MT_GAUGE, "",
                                         "A v2 channel's state (1 for the current one)" };
        HaV2Chan *c = ctx;
        const Counts *blk = &c->c;

        ha_stat_str(s, "protocol", "v2");
        ha_stat_state(s, &state, states, ELEMENTSOF(states),
                      (unsigned)__atomic_load_n(&c->state, __ATOMIC_RELAXED));
        V2C_COUNTERS(HA_COUNTER_EMIT)
}

static const HaSourceOps v2c_ops = {
        .kind = "v2",
        .run = v2c_run,
        .complete = v2c_complete,
        .fail = v2c_fail,
        .stats = v2c_stats,
};

/* Loop: the poller has a request ready. */
static void job_cb(evutil_socket_t fd, short what, void *arg)
{
        HaV2Chan *c = arg;
        HaJobReq req = { 0, 0, 0 };   /* len 0: never run on the loop */
        uint64_t n;

        (void)what;
        if (read(fd, &n, sizeof(n)) != sizeof(n))
                return;         /* EAGAIN: nothing new */
        /* The lock orders the poller's copy before us (and, through the
         * engine's queue, before the executor), as the eventfd does for
         * the CPU but not for the race detector. */
        pthread_mutex_lock(&c->lock);
        req.service = c->service;
        pthread_mutex_unlock(&c->lock);
        ha_engine_dispatch(c->e, c->source, &req, 1);
}

/* ===== the poller thread ===== */

static void set_state(HaV2Chan *c, int st)
{
        __atomic_store_n(&c->state, st, __ATOMIC_RELAXED);
}

/* Wait until both rings are created and sane (or we stop). */
static int attach(HaV2Chan *c, HaV2Ring *rx, HaV2Ring *tx, HaBackoff *bo)
{
        volatile uint8_t *data = c->win + HA_V2_DATA_OFF;

        for (;;) {
                int e = ha_v2_attach(rx, c->win + HA_V2_PAGE_A, data, 0, 0);

                if (e == 0)
                        e = ha_v2_attach(tx, c->win + HA_V2_PAGE_B, data, 1, 0);
                if (e == 0) {
                        set_state(c, 1);
                        return 0;
                }
                set_state(c, e == -EAGAIN ? 0 : 2);
                if (stopping(c))
                        return -EINTR;
                if (ha_backoff_wait(bo) == -ETIMEDOUT)
                        ha_backoff_begin(bo, REPLY_WAIT_NS);
        }
}

/* Copy the request out; false when it cannot be run (answered FAIL). */
static bool take(HaV2Chan *c, const HaV2Hdr *h, const uint8_t *slot, HaV2Bulk *d)
{
        c->type = h->type;
        if (h->type == HA_V2_SERVICE) {
                c->service = h->fsess;
                c->len = h->len;
                memcpy(c->staging, slot, h->len);
                return h->len > 0;
        }
        bump(&c->c.bulk);
        ha_v2_bulk_unpack(d, slot);
        c->service = (uint16_t)d->service;
        /* The peer's buffer must lie in the data region, and past the
         * slots' bytes, which both rings reuse. */
        if (h->len < HA_V2_BULK_DESC_LEN || d->service > 0xffff ||
            ha_v2_range_ok(d->offset, d->length, HA_V2_DATA_LEN) < 0 ||
            d->length > HA_V2_BULK_MAX || d->offset < HA_V2_BLOCK) {
                bump(&c->c.bad_ranges);
                note(c, "a bulk request names bytes outside the data region");
                return false;
        }
        c->len = d->length;
        ha_devmem_read(c->staging, c->win + HA_V2_DATA_OFF + d->offset, d->length);
        return true;
}

static int reply(HaV2Chan *c, HaV2Ring *tx, HaBackoff *bo, const HaV2Bulk *req, bool ran)
{
        bool ok = ran && c->result == HA_RESULT_SUCCESS;
        uint8_t desc[HA_V2_BULK_DESC_LEN];
        int e;

        if (c->type == HA_V2_BULK) {
                /* The result goes past slot 256 (defect 1), whatever
                 * offset the request came from; the descriptor says so. */
                HaV2Bulk d = { HA_V2_BULK_OFF, ok ? c->len : 0, req->service,
                               ok ? HA_V2_BULK_OK : (uint32_t)-(int32_t)(ran ? c->result :
                                                                        HA_RESULT_FAIL) };

                if (ok)
                        ha_devmem_write(c->win + HA_V2_DATA_OFF + HA_V2_BULK_OFF, c->staging,
                                        c->len);
                ha_v2_bulk_pack(desc, &d);
        }
        ha_backoff_begin(bo, REPLY_WAIT_NS);
        for (;;) {
                if (c->type == HA_V2_BULK)
                        e = ha_v2_send(tx, HA_V2_BULK, (uint16_t)req->service, 0, desc,
                                       sizeof(desc));
                else
                        e = ha_v2_send(tx, HA_V2_DATA, c->service,
                                       ok ? 0 : (uint16_t)(ran ? c->result : HA_RESULT_FAIL),
                                       c->staging, ok ? (uint16_t)c->len : 0);
                if (e != -EAGAIN || ha_backoff_wait(bo) < 0 || stopping(c))
                        break;
        }
        if (e < 0) {
                bump(&c->c.replies_dropped);
                note(c, "a reply could not be written (ring B full, re-created or garbage)");
        }
        return e;
}

/* Hand the request to the loop and wait for its result (or our stop). */
static bool run_one(HaV2Chan *c)
{
        pthread_mutex_lock(&c->lock);
        c->done = false;
        pthread_mutex_unlock(&c->lock);
        {
                uint64_t one = 1;

                /* Only the loop touches the base: it is woken by the fd. */
                while (write(c->job_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                        ;
        }
        pthread_mutex_lock(&c->lock);
        while (!c->done && !c->stop)
                pthread_cond_wait(&c->cond, &c->lock);
        pthread_mutex_unlock(&c->lock);
        return c->done;
}

static void *poller(void *arg)
{
        static const uint64_t idle = 3600ull * 1000000000u;
        HaV2Chan *c = arg;
        uint8_t slot[HA_V2_BLOCK];
        HaV2Ring rx, tx;
        HaBackoff bo;
        HaV2Hdr h;
        HaV2Bulk d = { 0 };

        if (ha_backoff_init(&bo, SPIN_NS, MAX_STEP_NS) < 0) {
                log_error("v2 channel '%s': no timer for polling", c->cfg.name);
                return NULL;
        }
        ha_backoff_begin(&bo, idle);
        if (attach(c, &rx, &tx, &bo) < 0)
                goto out;
        while (!stopping(c)) {
                int e = ha_v2_recv(&rx, &h, slot, sizeof(slot));
                bool ran;

                if (e == -EAGAIN) {
                        if (ha_backoff_wait(&bo) == -ETIMEDOUT)
                                ha_backoff_begin(&bo, idle);
                        continue;
                }
                if (e == -ECONNRESET || e == -EPROTO) {
                        bump(e == -ECONNRESET ? &c->c.peer_restarts : &c->c.faults);
                        note(c, e == -ECONNRESET ? "the peer re-created the rings" :
                             "garbage in ring A's control block");
                        if (attach(c, &rx, &tx, &bo) < 0)
                                break;
                        continue;
                }
                bump(&c->c.requests);
                if (e == -EBADMSG || (h.type != HA_V2_SERVICE && h.type != HA_V2_BULK)) {
                        /* Answered FAIL, so the peer's replies stay in order. */
                        bump(&c->c.bad_messages);
                        note(c, "a message with a bad version, length or type");
                        c->type = HA_V2_SERVICE;
                        c->service = h.fsess;
                        c->len = 0;
                        ran = false;
                } else {
                        ran = take(c, &h, slot, &d) && run_one(c);
                }
                if (stopping(c))
                        break;
                bump(ran && c->result == HA_RESULT_SUCCESS ? &c->c.succeeded : &c->c.failed);
                (void)reply(c, &tx, &bo, &d, ran);
                ha_backoff_begin(&bo, idle);
        }
out:
        ha_backoff_fini(&bo);
        return NULL;
}

/* ===== start and stop ===== */

int ha_v2chan_start(struct event_base *base, HaEngine *e, const HaV2ChannelConfig *cfg,
                    HaV2Chan **ret)
{
        char err[512];
        HaV2Chan *c;
        void *p;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return log_error_errno(-ENOMEM, "v2 channel '%s': %m", cfg->name);
        c->cfg = *cfg;
        c->base = base;
        c->e = e;
        c->mem.fd = -1;
        c->job_fd = -1;
        c->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        c->staging = malloc(HA_V2_BULK_MAX);
        c->job_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        c->job_ev = c->job_fd < 0 ? NULL :
                    event_new(base, c->job_fd, EV_READ | EV_PERSIST, job_cb, c);
        if (!c->staging || !c->job_ev || event_add(c->job_ev, NULL) < 0) {
                r = -ENOMEM;
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        r = ha_physmem_open(&c->mem, cfg->mem, cfg->base, err, sizeof(err));
        if (r == 0)
                r = ha_physmem_map(&c->mem, "the v2 window", cfg->address, HA_V2_WINDOW_LEN,
                                   &c->map, &p, err, sizeof(err));
        if (r < 0)
                goto fail;
        c->win = p;
        if (cfg->creator) {
                ha_v2_create(c->win + HA_V2_PAGE_A, cfg->address, 0);
                ha_v2_create(c->win + HA_V2_PAGE_B, cfg->address + HA_V2_PAGE_B, 0);
        }
        r = ha_engine_add_source(e, &v2c_ops, c, cfg->name, 1, &c->source);
        if (r < 0) {
                snprintf(err, sizeof(err), "cannot register as a source: %s", strerror(-r));
                goto fail;
        }
        r = -pthread_create(&c->thread, NULL, poller, c);
        if (r < 0) {
                snprintf(err, sizeof(err), "cannot start the poller: %s", strerror(-r));
                goto fail;      /* registered: freed after the engine, like the rest */
        }
        c->started = true;
        log_info("v2 channel '%s': window 0x%llx as %s, serving the peer's requests",
                 cfg->name, (unsigned long long)cfg->address,
                 cfg->creator ? "creator" : "connector");
        *ret = c;
        return 0;
fail:
        log_error("v2 channel '%s': %s", cfg->name, err);
        *ret = c;       /* the caller frees it, after the engine */
        return r;
}

void ha_v2chan_stop(HaV2Chan *c)
{
        if (!c || !c->started)
                return;
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        c->started = false;
}

HaV2Chan *ha_v2chan_free(HaV2Chan *c)
{
        if (!c)
                return NULL;
        ha_v2chan_stop(c);
        ha_physmap_unmap(&c->map);
        ha_physmem_close(&c->mem);
        if (c->job_ev)
                event_free(c->job_ev);
        if (c->job_fd >= 0)
                close(c->job_fd);
        free(c->staging);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}
