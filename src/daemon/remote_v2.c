/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "devmem.h"
#include "hist.h"
#include "log.h"
#include "physmem.h"
#include "remote_stats.h"
#include "remote_v2.h"
#include "v2ring.h"

/* Polling: the seL4 peer answers in microseconds when it spins, so spin
 * about that long, then a timer step from 2 µs doubling to this cap. */
#define SPIN_NS         50000u
#define MAX_STEP_NS     500000u

enum { ST_DOWN, ST_READY, ST_FAULT };

/* Counters, declared once (stats.h); the shared ones mean what a v1
 * zone's do (remote_stats.h). */
#define V2_COUNTERS(X)                                                                  \
        HA_REMOTE_COMMON_COUNTERS(X)                                                    \
        X(refused, "not_answered", "remote_v2_not_answered", "",                        \
          "Requests for ids the v2 peer never answers, refused unsent")                 \
        X(too_big, "too_big", "remote_v2_too_big", "", "Requests too big for a v2 transfer") \
        X(faults, "faults", "remote_v2_faults", "", "v2 rings found broken by the peer") \
        X(peer_errors, "peer_errors", "remote_v2_peer_errors", "",                      \
          "Negative statuses a v2 peer answered")                                       \
        X(stale_replies, "stale_replies", "remote_v2_stale_replies", "",                \
          "Replies a v2 peer left from an earlier run, skipped")                        \
        X(lost_replies, "lost_replies", "remote_v2_lost_replies", "",                   \
          "Replies owed to timed-out v2 requests, written off")                         \
        X(bulk, "bulk", "remote_v2_bulk", "", "v2 requests sent as bulk transfers")

typedef struct Counts {
        V2_COUNTERS(HA_COUNTER_FIELD)
} Counts;

struct HaRemoteV2 {
        HaRemoteZoneConfig cfg;
        uint64_t bulk_max;
        HaPhysMem mem;
        HaPhysMap map;
        volatile uint8_t *win;
        /* The executor's thread only. */
        HaV2Ring tx, rx;        /* ring B (we produce), ring A (we consume) */
        bool attached;
        unsigned owed;          /* replies still due to requests that timed out */
        bool resync;            /* the peer re-created a ring: see attach() */
        uint16_t old_a, old_b;  /* our indices before that */
        bool bo_ready;
        HaBackoff bo;
        uint64_t half;          /* the call's point to stop waiting for owed replies */
        uint64_t settle_ns;     /* how long a half re-created ring may take */
        bool zero_real;         /* ring A's index stayed 0 past settle_ns: real */
        HaRatelimit rl;
        uint8_t slot[HA_V2_BLOCK];
        /* Read by the loop. */
        int state;              /* atomic */
        int cancel;             /* atomic: the daemon stops, waits end now */
        Counts c;               /* atomic adds */
        pthread_mutex_t lock;   /* rtt */
        HaHist rtt;
};

static void bump(uint64_t *counter)
{
        __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static void set_state(HaRemoteV2 *z, int st)
{
        __atomic_store_n(&z->state, st, __ATOMIC_RELAXED);
}

/* One poll step; -ETIMEDOUT past the deadline or once cancelled. */
static int step(HaRemoteV2 *z)
{
        if (__atomic_load_n(&z->cancel, __ATOMIC_RELAXED))
                return -ETIMEDOUT;
        return ha_backoff_wait(&z->bo);
}

static volatile uint8_t *data(HaRemoteV2 *z)
{
        return z->win + HA_V2_DATA_OFF;
}

int ha_remote_v2_transport(uint16_t service)
{
        switch (service) {
        case 1:
        case 2:
                return 1;       /* XOR: a SERVICE reply, or BULK when large */
        case 3:
        case 4:
        case 5:
        case 7:
        case 8:
                return 2;       /* answered only as BULK */
        default:
                return 0;       /* 0 echo, proxy, unknown: never answered */
        }
}

static void note(HaRemoteV2 *z, int level, const char *what, int e)
{
        uint64_t suppressed;

        if (ha_ratelimit_ok(&z->rl, &suppressed))
                ha_log(level, "v2 zone '%s': %s (%s)%s", z->cfg.name, what, strerror(-e),
                       suppressed ? " (and earlier messages suppressed)" : "");
}

/*
 * Take up the rings on the executor's thread.  Replies already on ring A
 * are skipped: nobody waits for them any more.  Replies still to come for
 * requests an earlier run sent (a daemon killed mid-request) are owed:
 * every request hyperampd sends has exactly one reply, so while the rings
 * are in step that is how far ring B's producer index is ahead of ring
 * A's.  A wrong guess (another client drifted the rings) costs at most
 * half of one call's time, in settle().
 */
static int attach(HaRemoteV2 *z)
{
        int e;

        /* After a re-creation, give the peer (bounded) the time to redo
         * the other ring too: it formats one control block, then the next,
         * and an index of ours still in one of them is the old ring. */
        while (z->resync && ha_backoff_now() < z->half &&
               ((z->old_b && ha_v2_ld16(z->win + HA_V2_PAGE_B, HA_V2Q_HEADER) == z->old_b) ||
                (z->old_a && ha_v2_ld16(z->win + HA_V2_PAGE_A, HA_V2Q_TAIL) == z->old_a)) &&
               step(z) == 0)
                ;
        for (;;) {
                e = ha_v2_attach(&z->tx, z->win + HA_V2_PAGE_B, data(z), 1, 0);
                if (e == 0)
                        e = ha_v2_attach(&z->rx, z->win + HA_V2_PAGE_A, data(z), 0, 1);
                /* Capacity 0 mid-way through that formatting: wait too. */
                if (e != -EAGAIN || !z->resync || ha_backoff_now() >= z->half || step(z) < 0)
                        break;
        }
        z->resync = false;
        z->zero_real = false;
        if (e == 0)
                z->owed = (unsigned)(z->tx.mine + HA_V2_CAPACITY - z->rx.mine) % HA_V2_CAPACITY;
        if (e < 0) {
                set_state(z, e == -EAGAIN ? ST_DOWN : ST_FAULT);
                return e;
        }
        z->attached = true;
        set_state(z, ST_READY);
        return 0;
}

/* Has the peer started re-creating the rings?  Within a few stores it
 * zeroes a capacity or an index that only we write. */
static bool recreating(HaRemoteV2 *z)
{
        volatile uint8_t *a = z->win + HA_V2_PAGE_A, *b = z->win + HA_V2_PAGE_B;

        return ha_v2_ld16(a, HA_V2Q_CAPACITY) == 0 || ha_v2_ld16(b, HA_V2Q_CAPACITY) == 0 ||
               ha_v2_ld16(a, HA_V2Q_TAIL) != z->rx.mine ||
               ha_v2_ld16(b, HA_V2Q_HEADER) != z->tx.mine;
}

static uint16_t head_a(HaRemoteV2 *z)
{
        return __atomic_load_n((volatile uint16_t *)(volatile void *)
                               (z->win + HA_V2_PAGE_A + HA_V2Q_HEADER), __ATOMIC_ACQUIRE);
}

/* Ring A's producer index just read as 0, the first field a re-creation
 * writes, with more replies (n) than we have requests out: no peer that
 * answers each request once gets there, one re-creating ring A passes
 * through it.  Judged on the value the ring itself read, so nothing is
 * taken on a later read. */
static bool index_zeroed(HaRemoteV2 *z, unsigned n)
{
        return z->rx.seen == 0 && !z->zero_real &&
               n > (z->tx.mine + HA_V2_CAPACITY - z->rx.mine) % HA_V2_CAPACITY;
}

/*
 * The peer re-creates the rings one store at a time and we may look in
 * between, when an index no longer fits (e) or ring A's has just gone
 * back to 0 (e == 0).  Give it a bounded while to show the re-creation:
 * -ECONNRESET when it does; 0 when ring A's index moves on or stays (then
 * it was real, and the ring's own checks judge it); e for a bad index.
 */
static int settle_peer(HaRemoteV2 *z, int e)
{
        uint64_t end = ha_backoff_now() + z->settle_ns;
        bool told = false;

        for (;;) {
                if (recreating(z))
                        return -ECONNRESET;
                if (e == 0 && head_a(z) != 0)
                        return 0;
                if (!told) {
                        note(z, LOG_INFO, "the rings look mid-way through a re-creation: "
                             "waiting for the peer", e ? e : -EINPROGRESS);
                        told = true;
                }
                if (ha_backoff_now() >= end || step(z) < 0) {
                        z->zero_real = e == 0;
                        return e;
                }
        }
}

/* The next message on ring A; while there is none, also look at ring B
 * (a peer that re-created the rings shows there first). */
static int next_reply(HaRemoteV2 *z, HaV2Hdr *h)
{
        int e = ha_v2_pending(&z->rx);

        if (z->rx.seen)
                z->zero_real = false;
        if (e > 0 && index_zeroed(z, (unsigned)e)) {
                e = settle_peer(z, 0);
                if (e == 0)
                        e = 1;
        }
        /* Only what that read showed: a later one is judged next time. */
        if (e > 0)
                e = ha_v2_recv(&z->rx, h, z->slot, sizeof(z->slot));
        else if (e == 0)
                e = -EAGAIN;
        if (e == -EAGAIN) {
                int p = ha_v2_pending(&z->tx);

                if (p < 0)
                        e = p;
        }
        return e == -EPROTO ? settle_peer(z, e) : e;
}

/* Replies owed by timed-out requests come before ours: take them, for at
 * most half the call's time, then write them off. */
static int settle(HaRemoteV2 *z)
{
        HaV2Hdr h;

        while (z->owed) {
                int e = next_reply(z, &h);

                if (e == 0 || e == -EBADMSG) {
                        z->owed--;
                        bump(&z->c.stale_replies);
                        continue;
                }
                if (e != -EAGAIN)
                        return e;
                if (ha_backoff_now() >= z->half || step(z) < 0) {
                        __atomic_fetch_add(&z->c.lost_replies, z->owed, __ATOMIC_RELAXED);
                        z->owed = 0;
                        break;
                }
        }
        return 0;
}

static int send_request(HaRemoteV2 *z, uint16_t service, const uint8_t *buf, uint32_t len,
                        bool bulk)
{
        uint8_t desc[HA_V2_BULK_DESC_LEN];
        int e;

        if (bulk) {
                /* Past slot 256 (data + 0x100000), which every 256th message
                 * on either ring would write over (defect 1). */
                HaV2Bulk d = { HA_V2_BULK_OFF, len, service, HA_V2_BULK_REQUEST };

                ha_devmem_write(data(z) + HA_V2_BULK_OFF, buf, len);
                ha_v2_bulk_pack(desc, &d);
                bump(&z->c.bulk);
        }
        /* Full only while the peer consumes nothing: wait, bounded. */
        while ((e = bulk ? ha_v2_send(&z->tx, HA_V2_BULK, service, 0, desc, sizeof(desc)) :
                           ha_v2_send(&z->tx, HA_V2_SERVICE, service, 0, buf, (uint16_t)len)) ==
               -EAGAIN)
                if (step(z) < 0)
                        return -ETIMEDOUT;
        return e == -EPROTO ? settle_peer(z, e) : e;
}

/* Is h the reply to our request?  1 and the result in buf when it is, 0
 * for a reply to something else, 2 for ours with an error status, 3 for
 * ours with a descriptor out of bounds. */
static int match(HaRemoteV2 *z, const HaV2Hdr *h, uint16_t service, uint8_t *buf, uint32_t len,
                 bool bulk)
{
        HaV2Bulk d;

        if (!bulk) {
                if (h->type != HA_V2_DATA || h->fsess != service || h->len != len)
                        return 0;
                memcpy(buf, z->slot, len);
                return 1;
        }
        if (h->type != HA_V2_BULK || h->len < HA_V2_BULK_DESC_LEN)
                return 0;
        ha_v2_bulk_unpack(&d, z->slot);
        if (d.service != service)
                return 0;
        if (!ha_v2_bulk_ok(d.status)) {
                log_debug("v2 zone '%s': service %u: the peer's status %d", z->cfg.name,
                          service, ha_v2_bulk_code(d.status));
                return 2;
        }
        /* The result lies inside our buffer (a signed payload's past its
         * 84-byte header); we read back the whole buffer, processed in
         * place, so the length stays the request's. */
        if (ha_v2_range_ok(d.offset, d.length, HA_V2_DATA_LEN) < 0 || d.offset < HA_V2_BULK_OFF ||
            (uint64_t)d.offset + d.length > (uint64_t)HA_V2_BULK_OFF + len)
                return 3;
        ha_devmem_read(buf, data(z) + HA_V2_BULK_OFF, len);
        return 1;
}

/* 0 with the result in buf, 2/3 as match(), or a negative errno. */
static int await(HaRemoteV2 *z, uint16_t service, uint8_t *buf, uint32_t len, bool bulk)
{
        bool last = false;
        HaV2Hdr h;

        for (;;) {
                int e = next_reply(z, &h), m;

                if (e == -EAGAIN) {
                        if (last) {
                                z->owed++;
                                return -ETIMEDOUT;
                        }
                        last = step(z) < 0;
                        continue;
                }
                if (e < 0)
                        return e;
                m = match(z, &h, service, buf, len, bulk);
                if (m == 1)
                        return 0;
                if (m > 1)
                        return m;
                /* Left by a request that timed out, or by an earlier run. */
                bump(&z->c.stale_replies);
                if (z->owed)
                        z->owed--;
        }
}

static enum ha_result finish(HaRemoteV2 *z, int e, uint64_t t0)
{
        if (e == 0) {
                uint64_t rtt = ha_backoff_now() - t0;

                bump(&z->c.completed);
                pthread_mutex_lock(&z->lock);
                ha_hist_add(&z->rtt, rtt);
                pthread_mutex_unlock(&z->lock);
                return HA_RESULT_SUCCESS;
        }
        bump(&z->c.failures);
        switch (e) {
        case 2:
                bump(&z->c.peer_errors);
                return HA_RESULT_FAIL;
        case 3:
                bump(&z->c.faults);
                note(z, LOG_WARNING, "a bulk reply names bytes outside the request", -ERANGE);
                return HA_RESULT_FAIL;
        case -ETIMEDOUT:
                bump(&z->c.timeouts);
                note(z, LOG_WARNING, "no reply within timeout_ms", e);
                return HA_RESULT_TIMEOUT;
        case -ECONNRESET:
                bump(&z->c.peer_restarts);
                z->attached = false;
                z->resync = true;
                z->old_b = z->tx.mine;
                z->old_a = z->rx.mine;
                z->owed = 0;
                note(z, LOG_WARNING, "the peer re-created the rings: the request in flight is lost",
                     e);
                return HA_RESULT_FAIL;
        case -EAGAIN:
                note(z, LOG_INFO, "the peer has not created the rings", e);
                return HA_RESULT_FAIL;
        default:
                /* -EPROTO, -EBADMSG: garbage in the control block or the
                 * reply; take the rings up afresh on the next call. */
                bump(&z->c.faults);
                z->attached = false;
                set_state(z, ST_FAULT);
                note(z, LOG_WARNING, "garbage from the peer", e);
                return HA_RESULT_FAIL;
        }
}

enum ha_result ha_remote_v2_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                 unsigned worker)
{
        HaRemoteV2 *z = ctx;
        int how = ha_remote_v2_transport(service), e;
        uint64_t t0 = ha_backoff_now(), budget = (uint64_t)z->cfg.timeout_ms * 1000000u;
        bool bulk = how == 2 || len > HA_V2_MAX_SLOT_PAYLOAD;

        (void)worker;
        bump(&z->c.requests);
        if (!how) {
                bump(&z->c.refused);
                return HA_RESULT_NOT_EXITS;
        }
        if (len == 0 || (bulk && len > z->bulk_max)) {
                bump(&z->c.too_big);
                bump(&z->c.failures);
                return HA_RESULT_FAIL;
        }
        /* The waiter's timerfd belongs to the thread that waits. */
        if (!z->bo_ready) {
                if (ha_backoff_init(&z->bo, SPIN_NS, MAX_STEP_NS) < 0) {
                        bump(&z->c.failures);
                        return HA_RESULT_FAIL;
                }
                z->bo_ready = true;
        }
        ha_backoff_begin(&z->bo, budget);
        z->half = t0 + budget / 2;
        z->settle_ns = budget / 2;
        e = z->attached ? 0 : attach(z);
        if (e == 0)
                e = settle(z);
        if (e == 0)
                e = send_request(z, service, buf, len, bulk);
        if (e == 0)
                e = await(z, service, buf, len, bulk);
        return finish(z, e, t0);
}

void ha_remote_v2_cancel(HaRemoteV2 *z)
{
        if (z)
                __atomic_store_n(&z->cancel, 1, __ATOMIC_RELAXED);
}

const char *ha_remote_v2_state(void *ctx)
{
        HaRemoteV2 *z = ctx;

        switch (__atomic_load_n(&z->state, __ATOMIC_RELAXED)) {
        case ST_READY:
                return "ready";
        case ST_FAULT:
                return "fault";
        default:
                return "down";
        }
}

void ha_remote_v2_stats(void *ctx, HaStats *s)
{
        static const HaMetric rtt = HA_REMOTE_RTT_METRIC;
        HaRemoteV2 *z = ctx;
        const Counts *blk = &z->c;

        /* The engine adds name, kind, state and its own job counts; the
         * keys shared with a v1 zone's row mean the same. */
        ha_stat_str(s, "protocol", "v2");
        ha_stat_str(s, "peer", "sel4");
        V2_COUNTERS(HA_COUNTER_EMIT)
        pthread_mutex_lock(&z->lock);
        ha_stat_hist(s, &rtt, &z->rtt);
        pthread_mutex_unlock(&z->lock);
        /* Informational: the fake lock is never taken nor waited on. */
        HA_GAUGE_EMIT("peer_lock_held", "remote_v2_peer_lock_held", "",
                      "1 while a v2 peer's lock word is set (never taken nor waited on)",
                      ha_v2_ld32(z->win + HA_V2_PAGE_A, HA_V2Q_LOCK) != 0 ||
                      ha_v2_ld32(z->win + HA_V2_PAGE_B, HA_V2Q_LOCK) != 0)
}

/* The engine's: it owns the zone from the executor's start. */
static void executor_cancel(void *ctx)
{
        ha_remote_v2_cancel(ctx);
}

static void executor_release(void *ctx)
{
        (void)ha_remote_v2_close(ctx);
}

const HaExecutorOps ha_executor_v2 = {
        .kind = "v2",
        .remote = true,
        .call = ha_remote_v2_call,
        .stats = ha_remote_v2_stats,
        .state = ha_remote_v2_state,
        .cancel = executor_cancel,
        .release = executor_release,
};

static int fail(HaRemoteV2 *z, int r, const char *what)
{
        log_error("v2 zone '%s': %s", z->cfg.name, what);
        ha_remote_v2_close(z);
        return r;
}

int ha_remote_v2_open(const HaRemoteZoneConfig *cfg, uint64_t bulk_max, HaRemoteV2 **ret)
{
        char err[512];
        HaRemoteV2 *z;
        void *p;
        int r;

        z = calloc(1, sizeof(*z));
        if (!z)
                return -ENOMEM;
        z->cfg = *cfg;
        z->mem.fd = -1;
        z->bulk_max = bulk_max < HA_V2_BULK_MAX ? bulk_max : HA_V2_BULK_MAX;
        z->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        pthread_mutex_init(&z->lock, NULL);
        r = ha_physmem_open(&z->mem, cfg->mem, cfg->base, err, sizeof(err));
        if (r == 0)
                r = ha_physmem_map(&z->mem, "the v2 window", cfg->address, HA_V2_WINDOW_LEN,
                                   &z->map, &p, err, sizeof(err));
        if (r < 0)
                return fail(z, r, err);
        /* Page aligned (config), so every control field is naturally aligned. */
        z->win = p;
        if (cfg->creator) {
                ha_v2_create(z->win + HA_V2_PAGE_A, cfg->address + HA_V2_PAGE_A,
                             (uintptr_t)(z->win + HA_V2_PAGE_A));
                ha_v2_create(z->win + HA_V2_PAGE_B, cfg->address + HA_V2_PAGE_B,
                             (uintptr_t)(z->win + HA_V2_PAGE_B));
        }
        r = ha_v2_check(z->win + HA_V2_PAGE_A);
        if (r == 0)
                r = ha_v2_check(z->win + HA_V2_PAGE_B);
        set_state(z, r == 0 ? ST_READY : r == -EAGAIN ? ST_DOWN : ST_FAULT);
        log_info("v2 zone '%s': window 0x%llx as %s, %s", cfg->name,
                 (unsigned long long)cfg->address, cfg->creator ? "creator" : "connector",
                 r == 0 ? "rings ready" : r == -EAGAIN ? "waiting for the peer to create the rings" :
                 "the control blocks hold garbage");
        *ret = z;
        return 0;
}

HaRemoteV2 *ha_remote_v2_close(HaRemoteV2 *z)
{
        if (!z)
                return NULL;
        /* Nothing is written to the rings: the peer keeps its state. */
        ha_physmap_unmap(&z->map);
        if (z->mem.fd >= 0)
                ha_physmem_close(&z->mem);
        if (z->bo_ready)
                ha_backoff_fini(&z->bo);
        pthread_mutex_destroy(&z->lock);
        free(z);
        return NULL;
}
