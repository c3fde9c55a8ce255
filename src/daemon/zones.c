/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hyperamp/cleanup.h"
#include "hyperamp/protocol.h"
#include "hyperamp/zone.h"
#include "fault.h"
#include "journal.h"
#include "log.h"
#include "proto.h"
#include "queue.h"
#include "services.h"
#include "zones.h"
#include "zring.h"

#define CTL_OFF   HA_ZONE_CTL_OFF
#define QUEUE_OFF HA_ZONE_QUEUE_OFF
#define DONE_OFF  HA_ZONE_DONE_OFF
#define POOL_OFF  HA_ZONE_POOL_OFF

/* RESUMING: granted to a client whose daemon died; waits for its memory.
 * DRAINING: its client is gone; waits for the entries the pool runs, then
 * for a polling worker inside to leave (`reaping`). */
enum { SLOT_FREE, SLOT_ACTIVE, SLOT_DRAINING, SLOT_RESUMING };

/* The lease's journal page is the journal's records (journal.h). */
#define SAME(zf, jf) (offsetof(ZoneJrec, zf) == offsetof(HaJrec, jf))
_Static_assert(sizeof(ZoneJrec) == sizeof(HaJrec) && SAME(state, state) && SAME(pos, tag) &&
               SAME(seq, seq) && SAME(service, service) && SAME(flag, flag) &&
               SAME(offset, offset) && SAME(length, length) && SAME(stage_off, stage_off) &&
               SAME(stage_len, stage_len) && (int)HA_ZONE_J_TAKEN == (int)HA_J_TAKEN &&
               (int)HA_ZONE_J_COMMIT == (int)HA_J_COMMIT,
               "the lease journal is the journal's layout");
#undef SAME

/* A slot's counters (stats.h): field, JSON key, metric, unit, help. */
#define ZONE_COUNTERS(X)                                                                \
        X(grants, "grants", "zone_grants", "", "Leases granted on a zone slot")         \
        X(requests, "submitted", "source_requests_submitted", "",                       \
          "Requests taken from a source")                                               \
        X(completed, "completed", "source_requests_completed", "",                      \
          "Requests of a source answered")                                              \
        X(inline_runs, "run_by_poller", "zone_run_by_poller", "",                       \
          "Zone requests run by a polling worker itself")                               \
        X(failed, "failed", "source_requests_failed", "",                               \
          "Requests of a source answered with a failure")                               \
        X(wakeups, "wakeups", "source_wakeups", "", "Doorbells taken from a source")    \
        X(bad_index, "bad_index", "source_bad_index", "", "Entries refused: bad index")  \
        X(bad_state, "bad_state", "source_bad_state", "", "Entries refused: bad state")  \
        X(bad_ring, "bad_ring", "zone_bad_ring", "", "Zone rings found corrupt")         \
        X(dispatch_failed, "dispatch_failed", "source_dispatch_failed", "",             \
          "Requests answered without running: executor full or no route")            \
        X(bad_range, "bad_range", "source_bad_range", "",                               \
          "Requests refused: data outside the pool")                                    \
        X(abandoned, "abandoned", "zone_abandoned", "",                                 \
          "Entries of a client that had gone, answered FAIL without running")           \
        X(teardown_deferred, "teardown_deferred", "zone_teardown_deferred", "",         \
          "Slots taken back with a polling worker inside")                              \
        X(resumed, "resumed", "zone_resumed", "", "Leases taken over from a daemon that died") \
        X(resume_refused, "resume_refused", "zone_resume_refused", "",                  \
          "Lease take-overs refused")                                                   \
        X(bad_journal, "bad_journal", "zone_bad_journal", "",                           \
          "Crash journal records found corrupt on a take-over")
/* Of a take-over: "recovered": {...}. */
#define ZONE_RECOVERED(X) HA_JOURNAL_RECOVERED(X)

typedef struct ZoneCounters {
        ZONE_COUNTERS(HA_COUNTER_FIELD)
} ZoneCounters;

typedef struct ZoneRecovered {
        ZONE_RECOVERED(HA_COUNTER_FIELD)
} ZoneRecovered;

struct HaZone {
        HaZones *zs;
        unsigned slot;
        unsigned source;        /* engine source id */
        int state;
        uint32_t epoch;
        pid_t pid;
        uid_t uid;

        int memfd;
        uint64_t ino;                   /* memfd's: the jobs' keys (HaJobKey) */
        /* Datagram socket pairs, not eventfds: the client's ends are its
         * own file descriptions, so it cannot make ours blocking. */
        int bell_fd, bell_peer;         /* client -> daemon doorbell; the daemon rings too */
        int done_fd, done_peer;         /* daemon -> client completions */
        void *base;
        size_t size;
        ZoneView v;             /* the mapped slot's parts */
        uint64_t pool_size;
        struct event *bell_ev;

        /* Dispatched and not yet run: set by the loop, cleared by the worker
         * before the client can see the result, so an honest client may
         * reuse the entry at once while a second submit of a pending one is
         * caught. */
        uint8_t running_entry[HA_ZONE_ENTRIES];
        unsigned running;               /* loop: handed to the pool, not back */
        HaJobReq batch[HA_ZONE_RING];   /* under drain_lock */
        /* Each entry as taken off the ring: the daemon's own record, since
         * the journal's copy lives in memory the client writes too.  By the
         * drainer; read by whoever runs the entry. */
        HaJrec taken[HA_ZONE_ENTRIES];
        HaJournal j;                    /* in the lease; set when it is mapped */
        HaRatelimit rl;                 /* under drain_lock */

        /*
         * Polling workers may drain the ring and run entries inline.  They
         * enter only while `live`, and hold `guard` while they touch the
         * memory.  zone_close() clears `live` and sets GUARD_CLOSING; with
         * a worker inside it does not wait: the last one out activates
         * reap_ev and the loop finishes then (`reaping`).  `closing`: the
         * client is gone, so workers stop taking and running its entries
         * (each one checks before it runs), which bounds that wait by one
         * service call.  One drainer at a time: drain_lock.
         */
        bool live;
        bool closing;
        bool reaping;                   /* loop: waiting for reap_ev */
        struct event *reap_ev;
        uint32_t guard;
        uint32_t drain_lock;
        uint32_t again;                 /* a drain was asked for while locked */
        uint32_t head;                  /* ring head, under drain_lock */
        bool throttled;                 /* entries left on the ring for lack of room */

        ZoneCounters st;                /* loop and workers */
        ZoneRecovered rec;              /* loop only */
};

#define GUARD_CLOSING 0x80000000u

struct HaZones {
        struct event_base *base;
        HaEngine *engine;
        uint64_t pool_size;
        unsigned nslots;
        unsigned active;
        uint32_t next_epoch;
        HaZone *slots;
        void (*idle_cb)(void *);
        void *idle_userdata;
};

static unsigned zones_running(const HaZones *zs)
{
        unsigned n = 0;

        for (unsigned i = 0; i < zs->nslots; i++)
                n += zs->slots[i].running;
        return n;
}

static void maybe_idle(HaZones *zs)
{
        if (zs->idle_cb && zones_running(zs) == 0) {
                void (*cb)(void *) = zs->idle_cb;
                zs->idle_cb = NULL;
                cb(zs->idle_userdata);
        }
}

/* ===== the worker side ===== */

static void futex_wake_all(uint32_t *addr)
{
        (void)syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void publish(HaZone *z, uint16_t idx, uint16_t flag);

static bool range_ok(const HaZone *z, uint32_t off, uint32_t len)
{
        return len != 0 && off <= z->pool_size && len <= z->pool_size - off;
}

static enum ha_result zone_run(void *ctx, uint16_t idx, const HaRun *run)
{
        HaZone *z = ctx;
        /* As taken (drain_pass), from our own record. */
        const HaJrec *t = &z->taken[idx];
        uint32_t off = t->offset, len = t->length;
        const HaService *svc = ha_service_by_id(t->service);
        enum ha_result r;

        if (!range_ok(z, off, len)) {
                /* Checked against the client's own pool slice, first: a
                 * hostile entry is counted even if its client left. */
                HA_INC(&z->st, bad_range);
                r = HA_RESULT_FAIL;
        } else if (__atomic_load_n(&z->closing, __ATOMIC_RELAXED)) {
                /* Nobody waits for it, and the lease is waiting for us. */
                HA_INC(&z->st, abandoned);
                r = HA_RESULT_FAIL;
        } else if (!svc) {
                r = HA_RESULT_NOT_EXITS;
        } else {
                /* Who it is, the same for its run again after a crash: a
                 * remote executor keeps it with the request at the peer. */
                HaJobKey key = { .ino = z->ino, .pid = (uint32_t)z->pid, .pos = t->tag,
                                 .seq = t->seq, .idx = idx, .offset = off, .length = len };
                HaRun keyed = *run;

                keyed.key = &key;
                /* The stage mirrors the pool: t->stage_off is off. */
                r = ha_journal_run(&z->j, t, svc, z->v.pool, &keyed);
                if (r == HA_RESULT_SUCCESS && ha_journal_staged(svc, run))
                        ha_journal_commit(&z->j, idx, t, ha_flag_make(r), len);
        }
        if (r != HA_RESULT_SUCCESS)
                HA_INC(&z->st, failed);
        publish(z, idx, ha_flag_make(r));
        return r;
}

/* Result and done bit in one store, then the completion word. */
static void publish(HaZone *z, uint16_t idx, uint16_t flag)
{
        uint32_t *done = &z->v.done[idx].word;
        uint32_t old;

        ha_zdone_set_flag(&z->v.q->entries[idx], flag);
        ha_crash_point("zone_flag");
        /* Reusable from here; the client learns it only from the word below. */
        __atomic_store_n(&z->running_entry[idx], 0, __ATOMIC_RELEASE);

        /* Bump the completion word; a futex syscall only if someone sleeps. */
        /* seq_cst: the client arms the fd, then looks at this word; we
         * bump it, then look at fd_armed.  One of us sees the other. */
        old = ha_zdone_bump(done);
        if (old & HA_ZONE_WAITER)
                futex_wake_all(done);
        if (__atomic_load_n(&z->v.ctl->fd_armed, __ATOMIC_SEQ_CST) &&
            __atomic_exchange_n(&z->v.ctl->fd_armed, 0, __ATOMIC_ACQ_REL))
                (void)send(z->done_fd, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* ===== the loop side ===== */

/* Unmap and close: no worker is inside and none runs its entries. */
static void zone_finish(HaZone *z)
{
        if (z->base)
                (void)munmap(z->base, z->size);
        z->base = NULL;
        z->v = (ZoneView){ 0 };
        z->j = (HaJournal){ 0 };
        int *fds[] = { &z->memfd, &z->bell_fd, &z->bell_peer, &z->done_fd, &z->done_peer };
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                if (*fds[i] >= 0)
                        close(*fds[i]);
                *fds[i] = -1;
        }
        if (z->state != SLOT_FREE)
                z->zs->active--;
        z->state = SLOT_FREE;
        z->throttled = false;
        z->reaping = false;
        /* Clear only our bit: a late poller's increment and decrement may
         * still be on their way and must balance. */
        __atomic_fetch_and(&z->guard, ~GUARD_CLOSING, __ATOMIC_RELEASE);
}

/*
 * Take the lease back.  The loop never waits for a worker: with a polling
 * worker inside, the slot stays draining and reap_cb finishes it when the
 * last one leaves (guard_leave).  Called again meanwhile, it does nothing.
 */
static void zone_close(HaZone *z)
{
        uint32_t old;

        if (z->reaping)
                return;
        __atomic_store_n(&z->closing, true, __ATOMIC_SEQ_CST);
        __atomic_store_n(&z->live, false, __ATOMIC_SEQ_CST);
        if (z->bell_ev) {
                event_free(z->bell_ev);
                z->bell_ev = NULL;
        }
        old = __atomic_fetch_or(&z->guard, GUARD_CLOSING, __ATOMIC_SEQ_CST);
        if (old & ~GUARD_CLOSING) {
                z->reaping = true;
                HA_INC(&z->st, teardown_deferred);
                if (z->state != SLOT_FREE)
                        z->state = SLOT_DRAINING;
                log_debug("Zone slot %u (pid %d): a polling worker is inside the lease; "
                          "released when it leaves", z->slot, (int)z->pid);
                return;
        }
        zone_finish(z);
}

/* The last polling worker left a lease being closed (or a late one that
 * never went in did): finish, if nobody is inside now. */
static void reap_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaZone *z = userdata;
        (void)fd, (void)what;

        if (z->reaping && !(__atomic_load_n(&z->guard, __ATOMIC_ACQUIRE) & ~GUARD_CLOSING)) {
                log_debug("Zone slot %u (pid %d) released: its polling worker left", z->slot,
                          (int)z->pid);
                zone_finish(z);
        }
}

static void zone_complete(void *ctx, uint16_t idx)
{
        HaZone *z = ctx;
        (void)idx;

        z->running--;
        __atomic_fetch_add(&z->st.completed, 1, __ATOMIC_RELEASE);
        if (z->throttled && z->state == SLOT_ACTIVE && z->bell_ev) {
                z->throttled = false;   /* room again: take what was left */
                event_active(z->bell_ev, EV_READ, 0);
        }
        if (z->state == SLOT_DRAINING && z->running == 0) {
                log_debug("Zone slot %u (pid %d) released", z->slot, (int)z->pid);
                zone_close(z);
        }
        maybe_idle(z->zs);
}

/* Never ran (its executor was full, or no route): answer at once. */
static void zone_fail(void *ctx, uint16_t idx, int err)
{
        HaZone *z = ctx;
        enum ha_result r = err == -ENOENT ? HA_RESULT_NOT_EXITS : HA_RESULT_FAIL;

        HA_INC(&z->st, dispatch_failed);
        HA_INC(&z->st, failed);
        publish(z, idx, ha_flag_make(r));
        zone_complete(z, idx);
}

static void recovered_stats(const ZoneRecovered *blk, HaStats *s)
{
        ha_stats_section(s, "recovered");
        ZONE_RECOVERED(HA_COUNTER_EMIT)
        ha_stats_leave(s);
}

static void zone_stats(void *ctx, HaStats *s)
{
        HaZone *z = ctx;

        static const char *const states[] = {
                [SLOT_FREE] = "free", [SLOT_ACTIVE] = "attached",
                [SLOT_DRAINING] = "draining", [SLOT_RESUMING] = "resuming",
        };
        static const HaMetric state = { "state", "zone_state", HA_MT_GAUGE, "",
                                         "A zone slot's state (1 for the current one)" };
        static const HaMetric pid = { "pid", NULL, HA_MT_GAUGE, "", "" };
        const ZoneCounters *blk = &z->st;

        ha_stat_state(s, &state, states, ELEMENTSOF(states), z->state);
        ha_stat(s, &pid, z->state == SLOT_FREE ? 0 : z->pid);
        ZONE_COUNTERS(HA_COUNTER_EMIT)
        /* Taken and not yet answered, by the pool or by a polling worker
         * inline (which "running" does not count).  completed first, with
         * acquire: its release increments come after those of requests. */
        uint64_t done = __atomic_load_n(&z->st.completed, __ATOMIC_ACQUIRE);
        uint64_t taken = __atomic_load_n(&z->st.requests, __ATOMIC_RELAXED);
        HA_GAUGE_EMIT("in_flight", "source_in_flight", "",
                      "Requests of a source taken, not yet answered",
                      taken > done ? taken - done : 0)
        HA_GAUGE_EMIT("in_pool", "zone_in_pool", "", "Zone requests handed to the worker pool",
                      z->running)
        recovered_stats(&z->rec, s);
}

static long zone_poll(void *ctx, const HaRun *run);
static long zone_poll_end(void *ctx, const HaRun *run);

static const HaSourceOps zone_ops = {
        .kind = "shm",
        .run = zone_run,
        .complete = zone_complete,
        .fail = zone_fail,
        .stats = zone_stats,
        .poll = zone_poll,
        .poll_end = zone_poll_end,
};

static void report(HaZone *z, const char *what, unsigned long long value)
{
        uint64_t suppressed;

        if (ha_ratelimit_ok(&z->rl, &suppressed))
                ha_log_ctx(LOG_WARNING, HA_LOG_CTX(.client_pid = (int)z->pid,
                                                   .client_uid = (uint32_t)z->uid),
                           "Zone client pid %d: %s (%llu), skipped%s", (int)z->pid, what, value,
                           suppressed ? "; similar reports were suppressed" : "");
}

enum drain_mode {
        DRAIN_LOOP,             /* the loop: hand the batch to the pool */
        DRAIN_POLL,             /* a polling worker: run inline, stay awake */
        DRAIN_POLL_END,         /* a worker that stops polling: run inline, then sleep */
};

/* Record what was taken, as the worker will run it: the client's entry,
 * read once, with the ring position and the completion count at the take
 * (zone_recover). */
static void zone_take(HaZone *z, uint16_t idx, uint32_t pos)
{
        const HaMsgEntry *en = &z->v.q->entries[idx];
        HaJrec *t = &z->taken[idx];

        t->tag = pos;
        t->seq = __atomic_load_n(&z->v.done[idx].word, __ATOMIC_RELAXED) & ~HA_ZONE_WAITER;
        t->service = __atomic_load_n(&en->msg.service_id, __ATOMIC_RELAXED);
        t->offset = __atomic_load_n(&en->msg.offset, __ATOMIC_RELAXED);
        t->length = __atomic_load_n(&en->msg.length, __ATOMIC_RELAXED);
        t->stage_off = t->offset;
        t->stage_len = t->length;
        ha_journal_take(&z->j, idx, t);
}

/* Answer an entry FAIL at once (no worker could take it). */
static void fail_now(HaZone *z, uint16_t idx)
{
        HA_INC(&z->st, failed);
        publish(z, idx, ha_flag_make(HA_RESULT_FAIL));
}

/* Hand k entries of z->batch to the executors (the loop: run NULL), or
 * run them here (a polling worker). */
static void hand_over(HaZone *z, size_t k, const HaRun *run)
{
        HA_ADD(&z->st, requests, k);
        if (run) {
                ha_engine_run_inline(z->zs->engine, z->source, z->batch, k, run);
                __atomic_fetch_add(&z->st.completed, k, __ATOMIC_RELEASE);
                HA_ADD(&z->st, inline_runs, k);
        } else {
                /* Each gets zone_complete() or zone_fail(). */
                z->running += (unsigned)k;
                ha_engine_dispatch(z->zs->engine, z->source, z->batch, k);
        }
}

/*
 * One pass over the ring: take what is there, check each index, run it
 * (a worker) or hand it to the pool (the loop, at most HA_ZONE_ENTRIES
 * outstanding per slot, so one client cannot fill the pool).  The ring
 * head is ours: the copy in shared memory is only published, never read.
 * *left: entries were left on the ring for lack of room.
 */
static size_t drain_pass(HaZone *z, const HaRun *run, bool *left)
{
        ZoneCtl *c = z->v.ctl;
        uint32_t head = z->head, tail;
        size_t k = 0, room = run ? HA_ZONE_RING : HA_ZONE_ENTRIES - z->running;

        __atomic_store_n(&c->sleeping, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->bell, 0, __ATOMIC_SEQ_CST);
        tail = ha_zring_tail(c);
        if (tail - head > HA_ZONE_RING) {
                /* A tail no honest client can write: drop the lot. */
                HA_INC(&z->st, bad_ring);
                report(z, "submission ring tail out of range", tail - head);
                head = tail;
        }
        for (; head != tail && k < room; head++) {
                uint16_t idx = ha_zring_at(c, head);

                if (idx >= HA_ZONE_ENTRIES) {
                        HA_INC(&z->st, bad_index);
                        report(z, "entry index out of range", idx);
                        continue;
                }
                if (__atomic_load_n(&z->running_entry[idx], __ATOMIC_ACQUIRE)) {
                        HA_INC(&z->st, bad_state);
                        report(z, "entry submitted twice", idx);
                        continue;
                }
                __atomic_store_n(&z->running_entry[idx], 1, __ATOMIC_RELAXED);
                zone_take(z, idx, head);
                z->batch[k++] = (HaJobReq){ idx, z->taken[idx].service, 0 };
        }
        z->head = head;
        ha_crash_point("zone_taken");
        /* The commit point of the batch's records (zone_recover). */
        __atomic_store_n(&c->sq_head, head, __ATOMIC_RELEASE);
        *left = head != tail;
        if (k == 0)
                return 0;
        hand_over(z, k, run);
        return k;
}

/*
 * Drain the ring, one drainer at a time.  A caller that finds the lock
 * taken leaves a note (`again`) and goes: the holder looks again before it
 * lets go, so no request to drain is ever dropped.  Except for a polling
 * worker, the drainer ends by announcing sleep and looking at the tail once
 * more (pairs with the client's tail store and sleeping load); a bounded
 * number of passes keeps a client that never stops submitting from holding
 * the drainer.  Returns the entries taken; *busy: stopped with work left
 * (the caller comes back: the loop by re-arming, a worker by polling on).
 * A worker that stops polling may not come back, and the requests it left
 * were submitted while `sleeping` was 0, so nobody rang for them: it rings
 * the doorbell itself and the loop takes them.
 */
static size_t zone_drain(HaZone *z, const HaRun *run, enum drain_mode mode, bool *busy)
{
        size_t total = 0;

        *busy = false;
        __atomic_store_n(&z->again, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&z->again, __ATOMIC_SEQ_CST)) {
                if (__atomic_exchange_n(&z->drain_lock, 1, __ATOMIC_ACQUIRE))
                        return total;   /* the holder will see `again` */
                __atomic_store_n(&z->again, 0, __ATOMIC_SEQ_CST);
                *busy = true;
                for (int pass = 0; pass < 4; pass++) {
                        bool left;

                        /* Its client is gone: take nothing more. */
                        if (__atomic_load_n(&z->closing, __ATOMIC_RELAXED)) {
                                *busy = false;
                                break;
                        }
                        total += drain_pass(z, run, &left);
                        if (left) {
                                z->throttled = true;    /* zone_complete() re-arms */
                                *busy = false;
                                break;
                        }
                        if (mode == DRAIN_POLL) {
                                *busy = false;  /* still polling: awake on purpose */
                                break;
                        }
                        __atomic_store_n(&z->v.ctl->sleeping, 1, __ATOMIC_SEQ_CST);
                        if (__atomic_load_n(&z->v.ctl->sq_tail, __ATOMIC_SEQ_CST) == z->head) {
                                *busy = false;
                                break;
                        }
                }
                /* seq_cst, not release: the load of `again` must not pass
                 * this store, or a caller that found the lock taken and we
                 * both leave with its note unread. */
                __atomic_store_n(&z->drain_lock, 0, __ATOMIC_SEQ_CST);
        }
        if (*busy && mode == DRAIN_POLL_END)
                (void)send(z->bell_peer, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        return total;
}

/* A polling worker leaves the lease; the last one out of a lease being
 * closed tells the loop (reap_cb), which then unmaps it. */
static void guard_leave(HaZone *z)
{
        if (__atomic_fetch_sub(&z->guard, 1, __ATOMIC_RELEASE) == (GUARD_CLOSING | 1))
                event_active(z->reap_ev, 0, 0);
}

/* A polling worker enters the lease, if it is live and not being closed. */
static bool guard_enter(HaZone *z)
{
        if (__atomic_fetch_add(&z->guard, 1, __ATOMIC_ACQUIRE) & GUARD_CLOSING ||
            !__atomic_load_n(&z->live, __ATOMIC_ACQUIRE)) {
                guard_leave(z);
                return false;
        }
        return true;
}

/* Worker thread, idle and polling. */
static long zone_poll(void *ctx, const HaRun *run)
{
        HaZone *z = ctx;
        long n = 0;
        bool busy;

        if (!__atomic_load_n(&z->live, __ATOMIC_ACQUIRE))
                return -1;
        if (!guard_enter(z))
                return 0;
        /* sq_head is only a hint here: the drain uses its own copy. */
        if (__atomic_load_n(&z->v.ctl->sq_tail, __ATOMIC_ACQUIRE) !=
            __atomic_load_n(&z->v.ctl->sq_head, __ATOMIC_RELAXED))
                n = (long)zone_drain(z, run, DRAIN_POLL, &busy);
        guard_leave(z);
        return n;
}

/* The poller stops: doorbells are needed again, with the final look.
 * Returns 1 when work turned up meanwhile, so the worker polls on. */
static long zone_poll_end(void *ctx, const HaRun *run)
{
        HaZone *z = ctx;
        bool busy = false;
        size_t n = 0;

        if (!__atomic_load_n(&z->live, __ATOMIC_ACQUIRE) || !guard_enter(z))
                return 0;
        if (!__atomic_load_n(&z->v.ctl->sleeping, __ATOMIC_SEQ_CST))
                n = zone_drain(z, run, DRAIN_POLL_END, &busy);
        guard_leave(z);
        return busy || n ? 1 : 0;
}

/* Loop thread: drain; if work was left for later, come back next pass. */
static void loop_drain(HaZone *z)
{
        bool busy;

        (void)zone_drain(z, NULL, DRAIN_LOOP, &busy);
        if (busy && z->bell_ev)
                event_active(z->bell_ev, EV_READ, 0);
}

static void resume_read(HaZone *z, int fd);

static void bell_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaZone *z = userdata;
        char buf[64];
        (void)what;

        if (z->state == SLOT_RESUMING) {
                resume_read(z, fd);
                return;
        }
        /* Rings coalesce: take them all; a full queue of them is fine too. */
        for (int i = 0; i < 1024 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0; i++)
                ;
        HA_INC(&z->st, wakeups);
        if (z->state == SLOT_ACTIVE)
                loop_drain(z);
}

/* The doorbell and completion socket pairs; the client gets the peers. */
static int zone_channels(HaZone *z)
{
        int bell[2], done[2];

        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, bell) < 0)
                return -errno;
        z->bell_fd = bell[0];
        z->bell_peer = bell[1];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, done) < 0)
                return -errno;
        z->done_fd = done[0];
        z->done_peer = done[1];
        return 0;
}

static void zone_load(void *ctx, uint8_t *dst, uint32_t off, size_t n)
{
        HaZone *z = ctx;

        memcpy(dst, z->v.pool + off, n);
}

static void zone_store(void *ctx, uint32_t off, const uint8_t *src, size_t n)
{
        HaZone *z = ctx;

        memcpy(z->v.pool + off, src, n);
}

/* A TAKEN record at or past sq_head (z->head) belongs to a batch the crash
 * cut short: its entry is still on the ring.  A record whose completion
 * counter moved since the take was answered. */
static enum ha_jentry zone_jstate(void *ctx, uint16_t idx, const HaJrec *r)
{
        HaZone *z = ctx;
        uint32_t word = __atomic_load_n(&z->v.done[idx].word, __ATOMIC_ACQUIRE);

        if (r->state == HA_J_TAKEN && r->tag - z->head < HA_ZONE_RING)
                return HA_JE_UNCOMMITTED;
        return (word & ~HA_ZONE_WAITER) == r->seq ? HA_JE_PENDING : HA_JE_ANSWERED;
}

/* The stage mirrors the pool: the place is implied, whatever the
 * client wrote into the record's stage fields. */
static void zone_jplace(void *ctx, HaJrec *r)
{
        (void)ctx;
        r->stage_off = r->offset;
        r->stage_len = r->length;
}

static const HaJournalOps zone_journal_ops = {
        .kind = "zone",
        .load = zone_load,
        .store = zone_store,
        .place = zone_jplace,
        .state = zone_jstate,
};

/* The parts of the mapped lease, and its journal (the staging area
 * mirrors the pool). */
static void zone_bind(HaZone *z, void *base)
{
        z->v = ha_zone_view(base, z->pool_size);
        ha_journal_init(&z->j, &zone_journal_ops, z, (HaJrec *)(void *)z->v.journal,
                        HA_ZONE_ENTRIES, z->v.stage, z->pool_size, z->pool_size);
}

/* Map a lease's memory; the caller owns memfd until this succeeds. */
static int zone_map(HaZone *z, int memfd)
{
        size_t size = HA_ZONE_SIZE(z->zs->pool_size);
        struct stat st;
        void *base;

        if (fstat(memfd, &st) < 0)
                return -errno;
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
        if (base == MAP_FAILED)
                return -errno;
        z->ino = (uint64_t)st.st_ino;
        z->memfd = memfd;
        z->base = base;
        z->size = size;
        z->pool_size = z->zs->pool_size;
        zone_bind(z, base);
        return 0;
}

static int zone_create(HaZone *z)
{
        off_t size = (off_t)HA_ZONE_SIZE(z->zs->pool_size);
        int fd, r = 0;

        fd = memfd_create("hyperamp-zone", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, size) < 0)
                r = -errno;
        if (r == 0)
                r = -posix_fallocate(fd, 0, size);
        /* The client gets this fd: it must not be able to shrink the memory
         * under the workers (SIGBUS) or grow it. */
        if (r == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
                r = -errno;
        if (r == 0)
                r = zone_map(z, fd);
        if (r < 0) {
                close(fd);
                return r;
        }
        ha_queue_format(z->v.q, HA_ZONE_ENTRIES);
        z->v.ctl->entries = HA_ZONE_ENTRIES;
        z->v.ctl->owner_pid = (uint32_t)z->pid;
        z->v.ctl->epoch = z->epoch;
        z->v.ctl->sleeping = 1;
        __atomic_store_n(&z->v.ctl->magic, HA_ZONE_CTL_MAGIC, __ATOMIC_RELEASE);
        return 0;
}

/*
 * Memory handed back after a restart.  It must be sealed against resizing
 * (truncated under the workers, it would SIGBUS the daemon), be a lease's
 * size, not be a lease attached right now (two slots on one ring would
 * run its entries twice), and start with a lease header.
 */
static int check_memfd(const HaZones *zs, int fd)
{
        const int need = F_SEAL_SHRINK | F_SEAL_GROW;
        struct stat st, other;
        struct statfs fs;
        ZoneCtl hdr;
        int seals, fl;

        if (fstat(fd, &st) < 0 || fstatfs(fd, &fs) < 0)
                return -errno;
        /* shmem: a hugetlbfs memfd could fail a page fault (SIGBUS) when
         * the huge page pool runs dry. */
        if (fs.f_type != TMPFS_MAGIC)
                return -EPERM;
        seals = fcntl(fd, F_GET_SEALS);
        fl = fcntl(fd, F_GETFL);
        if (!S_ISREG(st.st_mode) || seals < 0 || (seals & need) != need)
                return -EPERM;
        if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) || fl < 0 || (fl & O_ACCMODE) != O_RDWR)
                return -EACCES;
        if ((uint64_t)st.st_size != HA_ZONE_SIZE(zs->pool_size))
                return -EMSGSIZE;
        for (unsigned i = 0; i < zs->nslots; i++)
                if (zs->slots[i].memfd >= 0 && fstat(zs->slots[i].memfd, &other) == 0 &&
                    other.st_dev == st.st_dev && other.st_ino == st.st_ino)
                        return -EEXIST;
        if (pread(fd, &hdr, sizeof(hdr), HA_ZONE_CTL_OFF) != (ssize_t)sizeof(hdr) ||
            hdr.magic != HA_ZONE_CTL_MAGIC || hdr.entries != HA_ZONE_ENTRIES)
                return -EPROTO;
        return 0;
}

/*
 * Finish what the previous daemon left in this lease, before the ring is
 * served again.  sq_head is the commit point: a TAKEN record at or past it
 * belongs to a batch the crash cut short, and its entry is still on the
 * ring.  A record whose completion counter moved since the take was
 * answered.  Otherwise COMMIT entries get their staged result copied back
 * (never computed again: XOR would undo itself) and TAKEN entries run
 * again; the buffer was not touched yet.  Returns how many of those are
 * in z->batch, to be handed over.
 */
static size_t zone_recover(HaZone *z)
{
        size_t k = 0;

        /* Our ring head from here on, and the commit point for zone_jstate. */
        z->head = __atomic_load_n(&z->v.ctl->sq_head, __ATOMIC_ACQUIRE);
        for (uint16_t idx = 0; idx < HA_ZONE_ENTRIES; idx++) {
                HaJrec rec;

                switch (ha_journal_recover(&z->j, idx, &rec)) {
                case HA_JR_FREE:
                case HA_JR_UNCOMMITTED:
                        break;
                case HA_JR_BAD_STATE:
                        HA_INC(&z->st, bad_journal);
                        report(z, "journal record in an unknown state", rec.state);
                        break;
                case HA_JR_ANSWERED:
                case HA_JR_GONE:
                        HA_INC(&z->rec, already_published);
                        break;
                case HA_JR_RERUN:
                        /* No record of ours survived the crash: this one
                         * is checked as a fresh submission would be. */
                        z->taken[idx] = rec;
                        __atomic_store_n(&z->running_entry[idx], 1, __ATOMIC_RELAXED);
                        z->batch[k++] = (HaJobReq){ idx, rec.service, 0 };
                        break;
                case HA_JR_REPUBLISH:
                        publish(z, idx, rec.flag);
                        HA_INC(&z->rec, republished);
                        break;
                case HA_JR_BAD_RECORD:
                        HA_INC(&z->st, bad_journal);
                        report(z, "journal record with a range outside the pool or a bad flag",
                               rec.offset);
                        fail_now(z, idx);
                        break;
                }
        }
        HA_ADD(&z->rec, requeued, k);
        return k;
}

/* The verdict on memory handed back: 0 or a negative errno, an int32. */
static void send_verdict(HaZone *z, int r)
{
        int32_t verdict = r;

        (void)send(z->done_fd, &verdict, sizeof(verdict), MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * Take over memory a client hands back: check and map it, then tell the
 * client, before anything can put a completion message on the same socket;
 * then recover and serve.  A crash after the verdict is a hang-up, and the
 * client resumes again.
 */
static int zone_adopt(HaZone *z, int memfd)
{
        int r = check_memfd(z->zs, memfd);
        size_t k;

        if (r == 0)
                r = zone_map(z, memfd);
        if (r < 0)
                return r;
        send_verdict(z, 0);
        /* The client has this memory mapped and may be reading these. */
        __atomic_store_n(&z->v.ctl->owner_pid, (uint32_t)z->pid, __ATOMIC_RELAXED);
        __atomic_store_n(&z->v.ctl->epoch, z->epoch, __ATOMIC_RELAXED);
        z->state = SLOT_ACTIVE;
        k = zone_recover(z);
        if (k)
                hand_over(z, k, NULL);
        __atomic_store_n(&z->live, true, __ATOMIC_RELEASE);
        loop_drain(z);
        return 0;
}

/* A resuming client sends its memfd over the doorbell; it learns the
 * verdict on the completion socket. */
static void resume_read(HaZone *z, int fd)
{
        union {
                char c[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } u;
        char b[16];
        struct iovec iov = { b, sizeof(b) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
                             .msg_controllen = sizeof(u.c) };
        int memfd, r;
        uint64_t suppressed;

        if (recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
                return;
        r = ha_fds_take(&mh, &memfd, 1);
        if (r == 0)
                return;         /* a plain ring: the memory has not come yet */
        if (r == 1)
                r = zone_adopt(z, memfd);
        if (r == 0) {
                HA_INC(&z->st, resumed);
                ha_log_ctx(LOG_INFO,
                           HA_LOG_CTX(.client_pid = (int)z->pid, .client_uid = (uint32_t)z->uid),
                           "Zone client pid %d resumed its lease in slot %u (epoch %u): "
                           "%llu requests run again, %llu results copied back",
                           (int)z->pid, z->slot, z->epoch, (unsigned long long)z->rec.requeued,
                           (unsigned long long)z->rec.republished);
                return;
        }
        if (r != -EINVAL)
                close(memfd);   /* ha_fds_take closed them all on -EINVAL */
        HA_INC(&z->st, resume_refused);
        send_verdict(z, r);
        /* The slot is not live: no drainer shares the rate limit now. */
        if (ha_ratelimit_ok(&z->rl, &suppressed))
                ha_log_ctx(LOG_WARNING,
                           HA_LOG_CTX(.client_pid = (int)z->pid, .client_uid = (uint32_t)z->uid),
                           "Zone client pid %d: the lease memory it handed back was refused: %s%s",
                           (int)z->pid, strerror(-r),
                           suppressed ? "; similar reports were suppressed" : "");
}

/* The attach reply's result and the fds that go with it. */
static int grant_of(HaZone *z, HaAttachGrant *g)
{
        /* A resuming client keeps its memory: only the sockets are new. */
        bool resume = z->state == SLOT_RESUMING;
        cJSON *o = cJSON_CreateObject();

        if (!o || !cJSON_AddNumberToObject(o, "slot", z->slot) ||
            !cJSON_AddNumberToObject(o, "epoch", z->epoch) ||
            !cJSON_AddNumberToObject(o, "size", (double)HA_ZONE_SIZE(z->zs->pool_size)) ||
            !cJSON_AddBoolToObject(o, "resume", resume) ||
            !cJSON_AddNumberToObject(o, "ctl_off", CTL_OFF) ||
            !cJSON_AddNumberToObject(o, "queue_off", QUEUE_OFF) ||
            !cJSON_AddNumberToObject(o, "done_off", DONE_OFF) ||
            !cJSON_AddNumberToObject(o, "pool_off", POOL_OFF) ||
            !cJSON_AddNumberToObject(o, "pool_size", (double)z->zs->pool_size) ||
            !cJSON_AddNumberToObject(o, "entries", HA_ZONE_ENTRIES) ||
            !cJSON_AddNumberToObject(o, "ring", HA_ZONE_RING)) {
                cJSON_Delete(o);
                return -ENOMEM;
        }
        *g = (HaAttachGrant){ .result = o, .fds = { z->bell_peer, z->done_peer, z->memfd },
                              .nfds = resume ? 2 : 3 };
        return 0;
}

int ha_zones_attach(HaZones *zs, pid_t pid, uid_t uid, bool resume, HaAttachGrant *grant,
                    HaZone **ret)
{
        HaZone *z = NULL;
        int r;

        if (zs->nslots == 0)
                return -EOPNOTSUPP;     /* zone_clients 0: for good, unlike -EBUSY */
        for (unsigned i = 0; i < zs->nslots && !z; i++)
                if (zs->slots[i].state == SLOT_FREE)
                        z = &zs->slots[i];
        if (!z)
                return -EBUSY;

        z->state = resume ? SLOT_RESUMING : SLOT_ACTIVE;
        zs->active++;
        z->pid = pid;
        z->uid = uid;
        z->epoch = ++zs->next_epoch;
        HA_INC(&z->st, grants);
        z->running = 0;
        z->head = 0;
        z->throttled = false;
        __atomic_store_n(&z->closing, false, __ATOMIC_RELAXED);        /* no worker sees it yet */
        memset(z->running_entry, 0, sizeof(z->running_entry));
        /* Counters stay: stats show each slot's totals since start. */

        r = zone_channels(z);
        if (r == 0 && !resume)
                r = zone_create(z);
        if (r == 0) {
                z->bell_ev = event_new(zs->base, z->bell_fd, EV_READ | EV_PERSIST, bell_cb, z);
                if (!z->bell_ev || event_add(z->bell_ev, NULL) < 0)
                        r = -ENOMEM;
        }
        if (r == 0)
                r = grant_of(z, grant);
        if (r < 0) {
                zone_close(z);
                return r;
        }
        *ret = z;
        return 0;
}

void ha_zones_attached(HaZone *z, int sent)
{
        bool resume = z->state == SLOT_RESUMING;

        if (sent < 0) {
                zone_close(z);
                return;
        }
        /* The client has its ends now.  We keep a doorbell end to ring
         * ourselves (zone_drain); we only ever send on it with MSG_DONTWAIT. */
        close(z->done_peer);
        z->done_peer = -1;
        /* Polling workers may come in now. */
        if (!resume)
                __atomic_store_n(&z->live, true, __ATOMIC_RELEASE);
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.client_pid = (int)z->pid, .client_uid = (uint32_t)z->uid),
                   "Zone client pid %d uid %u %s slot %u (epoch %u)", (int)z->pid, (unsigned)z->uid,
                   resume ? "is resuming its lease in" : "attached to", z->slot, z->epoch);
}

void ha_zones_detach(HaZone *z)
{
        if (z->state == SLOT_RESUMING) {
                zone_close(z);  /* nothing was adopted, nothing runs */
                return;
        }
        if (z->state != SLOT_ACTIVE)
                return;
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.client_pid = (int)z->pid, .client_uid = (uint32_t)z->uid),
                   "Zone client pid %d detached from slot %u with %u requests running",
                   (int)z->pid, z->slot, z->running);
        /* Stop taking and running its submissions; reclaim once the
         * running ones finish. */
        __atomic_store_n(&z->closing, true, __ATOMIC_SEQ_CST);
        __atomic_store_n(&z->live, false, __ATOMIC_SEQ_CST);
        if (z->bell_ev) {
                event_free(z->bell_ev);
                z->bell_ev = NULL;
        }
        z->state = SLOT_DRAINING;
        if (z->running == 0)
                zone_close(z);
}

unsigned ha_zones_active(const HaZones *zs)
{
        return zs->active;
}

void ha_zones_quiesce(HaZones *zs, void (*cb)(void *), void *userdata)
{
        for (unsigned i = 0; i < zs->nslots; i++) {
                HaZone *z = &zs->slots[i];

                if (z->state == SLOT_RESUMING && z->bell_ev) {
                        /* No memory taken over during shutdown: the client
                         * sees the hang-up and hands it to the next daemon. */
                        event_free(z->bell_ev);
                        z->bell_ev = NULL;
                }
                if (z->state != SLOT_ACTIVE)
                        continue;
                /* Accepted means on the ring: those still get served. */
                loop_drain(z);
                __atomic_store_n(&z->live, false, __ATOMIC_SEQ_CST);
                if (z->bell_ev) {
                        event_free(z->bell_ev);
                        z->bell_ev = NULL;
                }
        }
        zs->idle_cb = cb;
        zs->idle_userdata = userdata;
        maybe_idle(zs);
}

int ha_zones_new(struct event_base *base, HaEngine *engine, const HaConfig *cfg, HaZones **ret)
{
        HaZones *zs = calloc(1, sizeof(*zs));
        int r;

        if (!zs)
                return -ENOMEM;
        zs->base = base;
        zs->engine = engine;
        zs->pool_size = cfg->zone_pool_size;
        zs->nslots = cfg->zone_clients;
        zs->slots = calloc(zs->nslots ? zs->nslots : 1, sizeof(*zs->slots));
        if (!zs->slots) {
                free(zs);
                return -ENOMEM;
        }
        /* Every slot closed first, so a failure below frees only what is set. */
        for (unsigned i = 0; i < zs->nslots; i++)
                zs->slots[i].memfd = zs->slots[i].bell_fd = zs->slots[i].bell_peer =
                        zs->slots[i].done_fd = zs->slots[i].done_peer = -1;
        for (unsigned i = 0; i < zs->nslots; i++) {
                HaZone *z = &zs->slots[i];
                char name[32];

                z->zs = zs;
                z->slot = i;
                z->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
                z->reap_ev = event_new(base, -1, 0, reap_cb, z);
                if (!z->reap_ev) {
                        ha_zones_free(zs);
                        return -ENOMEM;
                }
                snprintf(name, sizeof(name), "zone-%u", i);
                r = ha_engine_add_source(engine, &zone_ops, z, name, HA_ZONE_ENTRIES, &z->source);
                if (r < 0) {
                        ha_zones_free(zs);
                        return r;
                }
        }
        *ret = zs;
        return 0;
}

HaZones *ha_zones_free(HaZones *zs)
{
        if (!zs)
                return NULL;
        /* The workers have been joined: nobody is inside a lease. */
        for (unsigned i = 0; i < zs->nslots; i++) {
                HaZone *z = &zs->slots[i];

                if (z->reaping)
                        zone_finish(z);
                else
                        zone_close(z);
                if (z->reap_ev)
                        event_free(z->reap_ev);
        }
        free(zs->slots);
        free(zs);
        return NULL;
}
