/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devmem.h"
#include "fault.h"
#include "hvcfg.h"
#include "hyperamp/cleanup.h"
#include "journal.h"
#include "log.h"
#include "queue.h"
#include "services.h"
#include "privshm.h"
#include "physmem.h"
#include "sigbus.h"
#include "v1chan.h"

/* ha_v1_serve(): requests up to this size bounce through the stack. */
#define BOUNCE_STACK 4096
/* Reads per wake-up to empty the doorbell; more wakes us again. */
#define DRAIN_MAX_READS 16

/* What the worker did with one entry, for complete(); what it saw is in
 * the entry's journal record. */
typedef struct Slot {
        uint8_t why;
        uint8_t result;
} Slot;

typedef HaPhysMap Map;

/*
 * The journal (journal.h): what this channel has taken from the client's
 * queue and not yet answered, in a shm object of its own that outlives a
 * crash (docs/hyperamp-v1.md, "Crashes and restarts").  Taking a batch
 * records each entry as handed over (TAKEN, with a place in the staging
 * area), then batch_k as the commit mark, and only then cuts the list.  A
 * worker computes into the staging area, records COMMIT with the flag to
 * publish, writes the result back, publishes the flag, and records FREE.
 * At start COMMIT entries are finished from the staged bytes, never run
 * twice, and TAKEN entries that are still ours run again.  The records
 * are in a private file: they are also the channel's own record of the
 * take (tag: the flag word as handed over).  Version 3: journal.c's
 * 32-byte records.
 */
#define JOURNAL_MAGIC "HAV1JNL3"

typedef struct JHdr {
        char magic[8];
        uint64_t queue_addr, buf_addr, buf_len;         /* whose queue this is */
        uint64_t ent_off, stage_off, stage_size;
        uint32_t cap;
        uint32_t batch_k;               /* entries of the batch; 0: none, or not all recorded */
        uint16_t n;                     /* buf_size when taken */
        uint16_t batch_head;            /* proc_ing_h when taken */
} JHdr;

/* A channel's counters (stats.h): field, JSON key, metric, unit, help;
 * docs/hyperamp-v1.md says what each counts. */
#define V1_COUNTERS(X)                                                                  \
        X(requests, "requests", "source_requests_submitted", "",                        \
          "Requests taken from a source")                                               \
        X(completed, "completed", "source_requests_completed", "",                      \
          "Requests of a source answered")                                              \
        X(failed, "failed", "source_requests_failed", "",                               \
          "Requests of a source answered with a failure")                               \
        X(batches, "batches", "v1_batches", "", "Batches taken from a v1 root queue")   \
        X(wakeups, "wakeups", "source_wakeups", "", "Doorbells taken from a source")    \
        X(spurious, "spurious", "v1_spurious_wakeups", "", "v1 wake-ups with no batch")  \
        X(bad_index, "bad_index", "source_bad_index", "", "Entries refused: bad index")  \
        X(cycles, "cycles", "v1_cycles", "", "Cycles found in a v1 list")               \
        X(bad_range, "bad_range", "source_bad_range", "",                               \
          "Requests refused: data outside the pool")                                    \
        X(bad_length, "bad_length", "v1_bad_length", "", "v1 requests of length 0")     \
        X(bad_flag, "bad_flag", "v1_bad_flag", "", "v1 requests with a bad flag word")  \
        X(bad_header, "bad_header", "v1_bad_header", "", "v1 root queue headers refused") \
        X(no_memory, "no_memory", "v1_no_memory", "", "v1 requests failed out of memory") \
        X(dispatch_failed, "dispatch_failed", "source_dispatch_failed", "",             \
          "Requests answered without running: executor full or no route")            \
        X(reformats, "reformats", "v1_reformats", "",                                   \
          "Batches cut by the client formatting the queue")                             \
        X(lost, "lost", "v1_lost", "", "v1 entries failed unpublished (a reformat)")    \
        X(bad_layout, "bad_layout", "v1_bad_layout", "", "v1 layouts refused")
#define V1_RECOVERED(X)                                                                 \
        HA_JOURNAL_RECOVERED(X)                                                         \
        X(abandoned, "abandoned", "recovered_abandoned", "",                            \
          "Recovered entries the client had reused")

typedef struct V1Counters {
        V1_COUNTERS(HA_COUNTER_FIELD)
        V1_RECOVERED(HA_COUNTER_FIELD)
} V1Counters;

struct HaV1Chan {
        HaV1ChannelConfig cfg;
        HaEngine *engine;
        unsigned source;
        HaPhysMem mem;
        int bell_fd;
        bool bell_read;                 /* the doorbell can be drained with read() */
        Map buf_map, queue_map, ready_map;
        volatile uint8_t *buf;
        size_t buf_len;
        HaMsgQueue *q;
        uint32_t *ready;
        char jname[HA_SHM_NAME_MAX + 80];
        HaPrivShm js;                   /* the journal object */
        JHdr *jh;
        HaJrec *jent;                   /* the journal's records */
        uint8_t *stage;                 /* jh->stage_size bytes, one batch's results */
        HaJournal j;
        uint16_t cap;                   /* entries that fit the queue mapping */
        uint16_t n;                     /* trusted buf_size; 0 until adopted */
        HaWalkSet walk;
        uint16_t *batch;
        HaJobReq *reqs;                 /* the batch, with each entry's service */
        uint16_t *scratch;              /* list walks beside c->batch */
        uint8_t *held;                  /* entries on the client's lists */
        Slot *slots;
        size_t pending;                 /* entries of the batch not completed yet */
        size_t batch_lost;              /* of them, failed unpublished */
        /* Shared with the workers, atomics: entries of the batch not yet
         * published or dropped (the last one sets IDLE), and whether the
         * client formatted the queue under the batch (nothing more of it
         * is published).  Set by the loop before the batch is dispatched. */
        size_t left;
        bool lost;
        bool bad_layout;                /* not the original layout: not served */
        struct event *bell_ev, *rescan_ev;
        HaRatelimit rl;
        V1Counters st;                  /* loop only */
};

/* ===== one request (worker thread) ===== */

/* The original's rules for one entry: SUCCESS with *n bytes to transform
 * (0: nothing to change), or the failure to publish. */
static enum ha_result v1_check(size_t buf_len, uint16_t flag, uint16_t service,
                               uint32_t offset, uint32_t length, unsigned *why, size_t *n,
                               const HaService **svc)
{
        *why = HA_V1_OK;
        *n = 0;
        *svc = NULL;
        /* msg_reset cleared the flag before the client sent the entry. */
        if (flag != 0) {
                *why = HA_V1_BAD_FLAG;
                return HA_RESULT_FAIL;
        }
        if (length == 0) {
                *why = HA_V1_ZERO_LENGTH;
                return HA_RESULT_FAIL;
        }
        if (offset > buf_len || length > buf_len - offset) {
                *why = HA_V1_BAD_RANGE;
                return HA_RESULT_FAIL;
        }
        *svc = ha_service_by_id(service);
        if (!*svc)
                return HA_RESULT_NOT_EXITS;
        /* The original rejects a non-positive length to transform; a
         * service that only reads has nothing to read (its echo). */
        if (length == 1)
                return ha_service_staged(*svc) ? HA_RESULT_FAIL : HA_RESULT_SUCCESS;
        *n = length - 1;                        /* the trailing NUL stays as it is */
        return HA_RESULT_SUCCESS;
}

/* The services use wide and unaligned accesses: never on the mapping.
 * Every service reads a copy (there is no in place on device memory);
 * only a staged one's result is written back (ha_service_staged). */
enum ha_result ha_v1_serve(volatile uint8_t *buf, size_t buf_len, uint16_t flag,
                           uint16_t service, uint32_t offset, uint32_t length, unsigned *why)
{
        uint8_t stack[BOUNCE_STACK], *b;
        const HaService *svc;
        enum ha_result r;
        size_t n;

        r = v1_check(buf_len, flag, service, offset, length, why, &n, &svc);
        if (r != HA_RESULT_SUCCESS || n == 0)
                return r;
        b = n <= sizeof(stack) ? stack : malloc(n);
        if (!b) {
                *why = HA_V1_NO_MEMORY;
                return HA_RESULT_FAIL;
        }
        ha_devmem_read(b, buf + offset, n);
        r = svc->fn(b, n);
        if (r == HA_RESULT_SUCCESS && ha_service_staged(svc))
                ha_devmem_write(buf + offset, b, n);
        if (b != stack)
                free(b);
        return r;
}

/* The entry still holds what was handed over: nobody has reset or reused it. */
static bool entry_unchanged(const HaMsgEntry *en, const HaJrec *j)
{
        return ha_ld16(&en->msg.flag) == j->tag && ha_ld16(&en->msg.service_id) == j->service &&
               ha_ld32(&en->msg.offset) == j->offset && ha_ld32(&en->msg.length) == j->length;
}

/* The entry entries[idx] and the queue are still as the batch left them
 * (any thread).  Handed over, the entry is the daemon's until its flag is
 * published: the client waits for IDLE before it touches proc_ing_h again,
 * and leaves the entry alone.  Anything else means it formatted the queue
 * (the original does at every process start, and forces IDLE) and may be
 * re-using the entry and its buf offset: then the whole batch is lost.
 * Checked before the result bytes and again before the flag; the protocol
 * has no lock, so a format between the check and the store still wins. */
static bool still_ours(HaV1Chan *c, uint16_t idx)
{
        const HaMsgEntry *en = &c->q->entries[idx];
        bool ok;

        if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
                return false;
        ok = __atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_BUSY &&
             ha_ld16(&c->q->buf_size) == c->n && ha_ld16(&c->q->proc_ing_h) == c->n &&
             ha_ld16(&en->cur_idx) == idx && ha_ld16(&en->nxt_idx) == c->n &&
             entry_unchanged(en, &c->jent[idx]);
        if (!ok)
                __atomic_store_n(&c->lost, true, __ATOMIC_RELEASE);
        return ok;
}

/* Answer one entry: journal, result bytes, flag, journal.  A crash between
 * any two steps is finished by journal_recover() at the next start.  False
 * when the entry is no longer ours: nothing published, FREE again. */
static bool publish(HaV1Chan *c, uint16_t idx, uint16_t flag, size_t n)
{
        if (!still_ours(c, idx))
                goto lost;
        /* Every result is committed, a failure too: its flag is out after a
         * crash without a rerun that the batch's checks could refuse. */
        ha_journal_commit(&c->j, idx, &c->jent[idx], flag, (uint32_t)n);
        if (!still_ours(c, idx))
                goto lost;
        /* Result and done bit in one store, after the payload: the client
         * polls deal_state and must never see it before the result. */
        __atomic_store_n(&c->q->entries[idx].msg.flag, flag, __ATOMIC_RELEASE);
        ha_crash_point("v1_published");
        ha_journal_free(&c->j, idx);
        return true;
lost:
        ha_journal_free(&c->j, idx);
        return false;
}

static void publish_idle(HaV1Chan *c)
{
        /* Plain load and store, no compare-and-swap: exclusives are not
         * reliable on Device memory.  Only BUSY (our batch) becomes IDLE. */
        if (__atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_BUSY)
                __atomic_store_n(&c->q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
}

/*
 * After each entry's flag store (or its drop), on the thread that made it.
 * The last entry of the batch ends it for the client at once, as the
 * original service does after its done flag: a client looks at the mark
 * right after its answer and sleeps 5 s if it still says BUSY.
 *
 * Ordering: every flag store of the batch is a release store made before
 * its thread's decrement of c->left; the decrement is acq_rel, so the one
 * that reaches 0 comes after all of them, and the IDLE store that follows
 * is a release store too.  A client that sees IDLE sees every flag; one
 * that sees its flag may still read BUSY for the few instructions between
 * the two stores, never for a trip through the loop thread.
 */
static void entry_end(HaV1Chan *c)
{
        if (__atomic_sub_fetch(&c->left, 1, __ATOMIC_ACQ_REL) != 0)
                return;
        /* Every entry is FREE: nothing of this batch to recover. */
        ha_crash_order();
        c->jh->batch_k = 0;
        ha_crash_order();
        /* The client's list is empty (we cut it), unless the client formatted
         * the queue and handed a new one over: then the BUSY is its own. */
        if (!__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE) && ha_ld16(&c->q->proc_ing_h) == c->n)
                publish_idle(c);
}

static enum ha_result v1_run(void *ctx, uint16_t idx, const HaRun *run)
{
        HaV1Chan *c = ctx;
        const HaJrec *j = &c->jent[idx];        /* idx < n <= cap: the walk checked it */
        Slot *s = &c->slots[idx];
        const HaService *svc;
        enum ha_result r;
        unsigned why;
        size_t n;

        /* The fields as read once when the batch was taken: the peer may
         * rewrite the entry under us. */
        r = v1_check(c->buf_len, (uint16_t)j->tag, j->service, j->offset, j->length, &why, &n,
                     &svc);
        if (n && j->stage_len != n) {
                why = HA_V1_NO_MEMORY;          /* the batch overflowed the staging area */
                r = HA_RESULT_FAIL;
                n = 0;
        }
        if (n) {
                /* No in place on device memory: the staged copy. */
                r = ha_journal_run(&c->j, j, svc, NULL, run);
                if (r != HA_RESULT_SUCCESS || !ha_journal_staged(svc, run))
                        n = 0;
        }
        if (!publish(c, idx, ha_flag_make(r), n)) {
                why = HA_V1_LOST;
                r = HA_RESULT_FAIL;
        }
        s->why = (uint8_t)why;
        s->result = (uint8_t)r;
        entry_end(c);
        return r;
}

/* ===== the batch (loop thread) ===== */

static void report(HaV1Chan *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Per-entry trouble comes from the peer: rate-limited, so it cannot flood. */
static void report(HaV1Chan *c, const char *fmt, ...)
{
        uint64_t suppressed;
        char msg[256];
        va_list ap;

        if (!ha_ratelimit_ok(&c->rl, &suppressed))
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (suppressed)
                log_warning("v1 channel '%s': %s (%llu similar messages suppressed)",
                            c->cfg.name, msg, (unsigned long long)suppressed);
        else
                log_warning("v1 channel '%s': %s", c->cfg.name, msg);
}

/* Adopt buf_size from the client's header, checked against our mapping. */
static int adopt_buf_size(HaV1Chan *c)
{
        uint16_t bs = ha_ld16(&c->q->buf_size);

        if (bs == c->n)
                return 0;
        if (bs == 0 || bs > c->cap) {
                HA_INC(&c->st, bad_header);
                report(c, "root queue buf_size %u is not 1..%u (what its mem_size holds), "
                       "not serving it", bs, c->cap);
                return -EINVAL;
        }
        if (c->n)
                report(c, "root queue buf_size changed from %u to %u: the client formatted "
                       "the queue again", c->n, bs);
        else
                log_info("v1 channel '%s': root queue has %u entries", c->cfg.name, bs);
        c->n = bs;
        return 1;
}

/*
 * The original client writes cur_idx = i into every entry when it formats
 * the queue, and nothing writes it after.  The qos branch's 16-byte header
 * (a lock byte at 12) moves every entry by 4 bytes: there our cur_idx is
 * the low half of a length, and the lists read as loops.  Checked when a
 * buf_size is adopted, when a batch holds an entry that is off, and on each
 * BUSY wake-up while in the error state.  True when the queue may be served.
 */
static bool layout_ok(HaV1Chan *c)
{
        uint16_t i, cur = 0;

        for (i = 0; i < c->n; i++) {
                cur = ha_ld16(&c->q->entries[i].cur_idx);
                if (cur != i)
                        break;
        }
        if (i == c->n) {
                if (c->bad_layout)
                        log_notice("v1 channel '%s': the queue layout is right again (a client "
                                   "formatted it), serving it", c->cfg.name);
                c->bad_layout = false;
                return true;
        }
        /* Once per episode, not per wake-up: the client will not change. */
        if (!c->bad_layout) {
                HA_INC(&c->st, bad_layout);
                log_error("v1 channel '%s': incompatible queue layout: entry %u has cur_idx %u, "
                          "not its own index (the qos branch's 16-byte header with a lock moves "
                          "every entry by 4 bytes); not serving this queue until a client "
                          "formats it in the original layout (12-byte header, 16-byte entries)",
                          c->cfg.name, i, cur);
        }
        c->bad_layout = true;
        return false;
}

static void client_held(HaV1Chan *c, uint16_t n, unsigned lists, uint16_t *buf);

/*
 * A batch is entries handed over, never the client's free or wait list.
 * Caught half-way through a format, a previous process's stale proc_ing_h
 * and BUSY lead into the new free list (links i -> i + 1), whose entries
 * have length 0.  An entry the original client would not hand over (length
 * 0, a cur_idx not its index) makes us walk those lists, which an honest
 * batch never costs.
 */
static bool batch_plausible(HaV1Chan *c, size_t k)
{
        bool look = false, off = false;

        for (size_t i = 0; i < k; i++) {
                const HaMsgEntry *en = &c->q->entries[c->batch[i]];

                off |= ha_ld16(&en->cur_idx) != c->batch[i];
                look |= ha_ld32(&en->msg.length) == 0;
        }
        if (off && !layout_ok(c))
                return false;
        if (!look && !off)
                return true;
        client_held(c, c->n, 2, c->scratch);
        for (size_t i = 0; i < k; i++) {
                if (!c->held[c->batch[i]])
                        continue;
                HA_INC(&c->st, reformats);
                report(c, "proc_ing list runs into the free list or the wait list at entry %u "
                       "(the client is formatting the queue again?): not served", c->batch[i]);
                return false;
        }
        return true;
}

static void batch_done(HaV1Chan *c);

/* Record the batch in c->batch as handed over, before the list changes. */
static void journal_take(HaV1Chan *c, size_t k, uint16_t head)
{
        uint64_t used = 0;

        c->jh->batch_k = 0;
        c->jh->n = c->n;
        c->jh->batch_head = head;
        ha_crash_order();
        for (size_t i = 0; i < k; i++) {
                const HaMsgEntry *en = &c->q->entries[c->batch[i]];
                const HaService *svc;
                HaJrec t = { 0 };
                unsigned why;
                size_t n;

                t.tag = ha_ld16(&en->msg.flag);
                t.service = ha_ld16(&en->msg.service_id);
                t.offset = ha_ld32(&en->msg.offset);
                t.length = ha_ld32(&en->msg.length);
                (void)v1_check(c->buf_len, (uint16_t)t.tag, t.service, t.offset, t.length, &why,
                               &n, &svc);
                /* Honest entries of one batch do not overlap, so their
                 * results fit a staging area the size of the buf region. */
                t.stage_off = (uint32_t)used;
                t.stage_len = n <= c->jh->stage_size - used ? (uint32_t)n : 0;
                /* 8-aligned; stays within stage_size, a multiple of the page. */
                used += (t.stage_len + 7u) & ~(uint64_t)7;
                ha_journal_take(&c->j, c->batch[i], &t);
        }
        ha_crash_order();
        c->jh->batch_k = (uint32_t)k;
        ha_crash_order();
}

static void dispatch(HaV1Chan *c, size_t k)
{
        c->pending = k;
        /* The workers see these through the engine's hand-over. */
        __atomic_store_n(&c->left, k, __ATOMIC_RELAXED);
        __atomic_store_n(&c->lost, false, __ATOMIC_RELAXED);
        /* The service as recorded at the take, never re-read. */
        for (size_t i = 0; i < k; i++)
                c->reqs[i] = (HaJobReq){ c->batch[i], c->jent[c->batch[i]].service, 0 };
        ha_engine_dispatch(c->engine, c->source, c->reqs, k);
}

/* Take and dispatch the proc_ing list; false if the queue was not BUSY. */
static bool scan(HaV1Chan *c)
{
        uint16_t head, next;
        unsigned why;
        size_t k;
        int r;

        if (c->pending)
                return true;    /* one batch at a time; batch_done looks again */
        if (__atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) != HA_MARK_BUSY)
                return false;
        r = adopt_buf_size(c);
        if (r < 0 || ((r > 0 || c->bad_layout) && !layout_ok(c)))
                return true;
        head = ha_ld16(&c->q->proc_ing_h);
        k = ha_list_walk(c->q, c->n, head, &c->walk, NULL, NULL, c->batch, (size_t)c->n + 1,
                         &why, &next);
        /* Not work: leave the list and the mark to the client. */
        if (k && !batch_plausible(c, k))
                return true;
        /* Recorded before the list changes: a crash from here on loses
         * nothing (journal_recover). */
        if (k) {
                journal_take(c, k, head);
                ha_crash_point("v1_taken");
        }
        ha_list_cut(c->q, c->n, &c->q->proc_ing_h, c->batch, k, next);
        if (k)
                ha_crash_point("v1_cut");
        if (why & HA_WALK_BAD_INDEX) {
                HA_INC(&c->st, bad_index);
                report(c, "proc_ing list has a link past buf_size %u after %zu entries, "
                       "cut there", c->n, k);
        }
        if (why & HA_WALK_CYCLE) {
                HA_INC(&c->st, cycles);
                report(c, "proc_ing list loops back after %zu entries, cut there", k);
        }
        if (k == 0) {
                publish_idle(c);
                return true;
        }
        HA_ADD(&c->st, requests, k);
        HA_INC(&c->st, batches);
        dispatch(c, k);
        return true;
}

/* Every entry of the batch has completed; entry_end() set IDLE already. */
static void batch_done(HaV1Chan *c)
{
        if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE)) {
                HA_INC(&c->st, reformats);
                report(c, "the client formatted the queue again while %zu requests were being "
                       "served: they failed, nothing of them was published", c->batch_lost);
        }
        c->batch_lost = 0;
        /* BUSY again since the IDLE (or after a format): a doorbell that
         * came while the batch was completing was passed over.  Taken now:
         * complete() may dispatch (engine.h). */
        if (__atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_BUSY)
                (void)scan(c);
}

static void v1_complete(void *ctx, uint16_t idx)
{
        HaV1Chan *c = ctx;
        const Slot *s = &c->slots[idx];
        const HaJrec *j = &c->jent[idx];        /* kept until the next batch is taken */

        HA_INC(&c->st, completed);
        if (s->result != HA_RESULT_SUCCESS)
                HA_INC(&c->st, failed);
        switch (s->why) {
        case HA_V1_BAD_FLAG:
                HA_INC(&c->st, bad_flag);
                report(c, "entry %u handed over with flag 0x%04x (expected 0), failed", idx,
                       (unsigned)j->tag);
                break;
        case HA_V1_ZERO_LENGTH:
                HA_INC(&c->st, bad_length);
                report(c, "entry %u has length 0, failed", idx);
                break;
        case HA_V1_BAD_RANGE:
                HA_INC(&c->st, bad_range);
                report(c, "entry %u: offset 0x%x + length 0x%x is past the %zu-byte buf "
                       "region, failed", idx, j->offset, j->length, c->buf_len);
                break;
        case HA_V1_NO_MEMORY:
                HA_INC(&c->st, no_memory);
                report(c, "entry %u: no room for its %u-byte result in the staging area "
                       "(entries of the batch overlap?), failed", idx, j->length);
                break;
        case HA_V1_LOST:
                HA_INC(&c->st, lost);
                c->batch_lost++;
                break;
        }
        if (c->pending && --c->pending == 0)
                batch_done(c);
}

/* Never ran (its executor was full, or no route): answer here. */
static void v1_fail(void *ctx, uint16_t idx, int err)
{
        HaV1Chan *c = ctx;
        Slot *s = &c->slots[idx];
        enum ha_result r = err == -ENOENT ? HA_RESULT_NOT_EXITS : HA_RESULT_FAIL;

        HA_INC(&c->st, dispatch_failed);
        report(c, "entry %u not run: %s", idx, ha_result_name(r));
        s->why = HA_V1_OK;
        s->result = (uint8_t)r;
        if (!publish(c, idx, ha_flag_make(r), 0)) {
                s->why = HA_V1_LOST;
                s->result = HA_RESULT_FAIL;
        }
        entry_end(c);
        v1_complete(c, idx);
}

static void rescan_cb(evutil_socket_t fd, short what, void *userdata)
{
        (void)fd, (void)what;
        (void)scan(userdata);
}

static void drain_doorbell(HaV1Chan *c)
{
        char b[256];

        for (unsigned i = 0; c->bell_read && i < DRAIN_MAX_READS; i++) {
                ssize_t k = read(c->bell_fd, b, sizeof(b));

                if (k == (ssize_t)sizeof(b) || (k < 0 && errno == EINTR))
                        continue;
                if (k < 0 && errno != EAGAIN) {
                        /* /dev/hshm0 has no read(): its poll() already took
                         * the wake-up. */
                        log_debug("v1 channel '%s': doorbell %s cannot be read (%s), "
                                  "relying on poll alone", c->cfg.name, c->cfg.doorbell,
                                  strerror(errno));
                        c->bell_read = false;
                }
                break;
        }
}

static void bell_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaV1Chan *c = userdata;
        (void)fd, (void)what;

        /* Interrupts coalesce: one wake-up may stand for many notifies. */
        drain_doorbell(c);
        HA_INC(&c->st, wakeups);
        if (!scan(c))
                HA_INC(&c->st, spurious);
}

static void v1_stats(void *ctx, HaStats *s)
{
        static const char *const states[] = { "serving", "bad_layout" };
        static const HaMetric state = { "state", "v1_state", HA_MT_GAUGE, "",
                                         "A v1 channel's state (1 for the current one)" };
        HaV1Chan *c = ctx;
        const V1Counters *blk = &c->st;

        ha_stat_state(s, &state, states, ELEMENTSOF(states), c->bad_layout);
        HA_GAUGE_EMIT("buf_size", "v1_buf_size", "", "Entries of a v1 root queue", c->n)
        HA_GAUGE_EMIT("in_flight", "source_in_flight", "",
                      "Requests of a source taken, not yet answered", c->pending)
        V1_COUNTERS(HA_COUNTER_EMIT)
        ha_stats_section(s, "recovered");
        V1_RECOVERED(HA_COUNTER_EMIT)
        ha_stats_leave(s);
}

static const HaSourceOps v1_ops = {
        .kind = "v1",
        .run = v1_run,
        .complete = v1_complete,
        .fail = v1_fail,
        .stats = v1_stats,
};

/* ===== start and stop ===== */

static int fail(HaV1Chan *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(HaV1Chan *c, int r, const char *fmt, ...)
{
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_error("v1 channel '%s': %s", c->cfg.name, msg);
        return r;
}

/* Map len bytes at physical address addr (file offset addr - base). */
static int map_phys(HaV1Chan *c, const char *what, uint64_t addr, uint64_t len, Map *m,
                    void **ret)
{
        char err[512];
        int r = ha_physmem_map(&c->mem, what, addr, len, m, ret, err, sizeof(err));

        return r < 0 ? fail(c, r, "%s", err) : 0;
}

/* ===== the journal (loop thread, at start and stop) ===== */

static size_t round_page(size_t v)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE);

        return (v + page - 1) & ~(page - 1);
}

static void journal_layout(const HaV1Chan *c, JHdr *h, const HaHvConfig *hv)
{
        memset(h, 0, sizeof(*h));
        memcpy(h->magic, JOURNAL_MAGIC, sizeof(h->magic));
        h->queue_addr = hv->queue_addr;
        h->buf_addr = hv->buf_addr;
        h->buf_len = c->buf_len;
        h->cap = c->cap;
        h->ent_off = round_page(sizeof(JHdr));
        h->stage_off = h->ent_off + round_page((size_t)c->cap * sizeof(HaJrec));
        h->stage_size = round_page(c->buf_len);
}

static void v1_load(void *ctx, uint8_t *dst, uint32_t off, size_t n)
{
        HaV1Chan *c = ctx;

        ha_devmem_read(dst, c->buf + off, n);
}

static void v1_store(void *ctx, uint32_t off, const uint8_t *src, size_t n)
{
        HaV1Chan *c = ctx;

        ha_devmem_write(c->buf + off, src, n);
}

/* A TAKEN record of a batch not all recorded; or still as handed over; or
 * answered; or reused by the client. */
static enum ha_jentry v1_jstate(void *ctx, uint16_t idx, const HaJrec *r)
{
        HaV1Chan *c = ctx;
        const HaMsgEntry *en = &c->q->entries[idx];

        /* Not all recorded: the list was never cut. */
        if (r->state == HA_J_TAKEN && !c->jh->batch_k)
                return HA_JE_UNCOMMITTED;
        if (entry_unchanged(en, r))
                return HA_JE_PENDING;
        return ha_ld16(&en->msg.flag) & HA_FLAG_DEAL_STATE ? HA_JE_ANSWERED : HA_JE_GONE;
}

static const HaJournalOps v1_journal_ops = {
        .kind = "v1",
        .load = v1_load,
        .store = v1_store,
        .state = v1_jstate,
};

/* The journal over the mapped records and staging area. */
static void journal_bind(HaV1Chan *c, uint64_t stage_size)
{
        ha_journal_init(&c->j, &v1_journal_ops, c, c->jent, c->cap, c->stage, stage_size,
                        c->buf_len);
}

/* Mark in c->held the entries on the first lists of the client's (free,
 * wait, proc_ing): not ours, or handed over again.  Walks into buf (n + 1
 * entries). */
static void client_held(HaV1Chan *c, uint16_t n, unsigned lists, uint16_t *buf)
{
        uint16_t *heads[] = { &c->q->empty_h, &c->q->wait_h, &c->q->proc_ing_h }, next;
        unsigned why;

        memset(c->held, 0, n);
        for (unsigned h = 0; h < lists; h++) {
                size_t k = ha_list_walk(c->q, n, ha_ld16(heads[h]), &c->walk, NULL, NULL,
                                        buf, (size_t)n + 1, &why, &next);
                for (size_t i = 0; i < k; i++)
                        c->held[buf[i]] = 1;
        }
}

/*
 * Finish what a previous run left.  COMMIT entries get their staged result
 * and flag if the entry is still as handed over.  TAKEN entries run again
 * if the batch was fully recorded, the queue is still BUSY with it, and the
 * entry is still as handed over and on none of the client's lists;
 * otherwise the client has moved on (formatted the queue again, reused the
 * entry) and they are left alone.  Returns how many are in c->batch.
 */
static size_t journal_recover(HaV1Chan *c)
{
        uint16_t n = c->jh->n;
        bool busy = __atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_BUSY;
        bool all_ours = true, check;
        size_t k = 0;

        if (n == 0 || n > c->cap || n != ha_ld16(&c->q->buf_size)) {
                for (unsigned i = 0; i < c->cap; i++)
                        HA_ADD(&c->st, abandoned, c->jent[i].state != HA_J_FREE);
                log_warning("v1 channel '%s': journal is for a queue of %u entries, the queue "
                            "now has %u: the client formatted it again, nothing to recover",
                            c->cfg.name, n, ha_ld16(&c->q->buf_size));
                memset(c->jent, 0, (size_t)c->cap * sizeof(HaJrec));
                c->jh->batch_k = 0;
                return 0;
        }
        /* Nothing past buf_size can be ours, nor a state we never write. */
        for (unsigned i = 0; i < c->cap; i++)
                if (i >= n || c->jent[i].state > HA_J_COMMIT)
                        c->jent[i].state = HA_J_FREE;

        /* COMMIT first: the staged bytes must be out before anything else
         * can use the staging area.  The flag goes last, then FREE, so a
         * crash in here is finished by the next start just the same. */
        for (uint16_t i = 0; i < n; i++) {
                HaJrec rec;

                if (c->jent[i].state != HA_J_COMMIT)
                        continue;
                switch (ha_journal_recover(&c->j, i, &rec)) {
                case HA_JR_ANSWERED:
                        HA_INC(&c->st, already_published);
                        break;
                case HA_JR_REPUBLISH:
                        __atomic_store_n(&c->q->entries[i].msg.flag, rec.flag, __ATOMIC_RELEASE);
                        HA_INC(&c->st, republished);
                        break;
                default:
                        HA_INC(&c->st, abandoned);      /* published, seen and reused */
                        break;
                }
                ha_journal_free(&c->j, i);
        }

        check = c->jh->batch_k && busy;
        /* proc_ing too, unless it is still our uncut batch.  c->batch is
         * free until recovery fills it. */
        if (check)
                client_held(c, n, ha_ld16(&c->q->proc_ing_h) == c->jh->batch_head ? 2 : 3,
                            c->batch);
        for (uint16_t i = 0; i < n; i++) {
                enum ha_jrecover r;
                HaJrec rec;

                if (c->jent[i].state != HA_J_TAKEN)
                        continue;
                r = ha_journal_recover(&c->j, i, &rec);
                if (r == HA_JR_RERUN && check && !c->held[i]) {
                        c->batch[k++] = i;
                        continue;
                }
                /* Not all recorded (the list was never cut), or not ours. */
                if (r != HA_JR_UNCOMMITTED)
                        HA_INC(&c->st, abandoned);
                all_ours = false;
                ha_journal_free(&c->j, i);
        }
        /* The cut may not have finished: redo it, but only on a list that
         * is still exactly the batch we recorded. */
        if (k && all_ours && ha_ld16(&c->q->proc_ing_h) == c->jh->batch_head)
                ha_list_cut(c->q, n, &c->q->proc_ing_h, c->batch, k, n);
        ha_crash_order();
        c->jh->batch_k = (uint32_t)k;
        c->n = n;
        HA_ADD(&c->st, requeued, k);
        return k;
}

/* Open (or create) the journal and finish what it holds; *requeue is the
 * number of entries left in c->batch to run again. */
static int journal_open(HaV1Chan *c, const char *shm_name, const HaHvConfig *hv,
                        size_t *requeue)
{
        JHdr want, h;
        bool matched = false;
        char err[512];
        size_t size;
        void *p;
        int r;

        *requeue = 0;
        journal_layout(c, &want, hv);
        size = want.stage_off + want.stage_size;
        snprintf(c->jname, sizeof(c->jname), "%s.v1.%s", shm_name, c->cfg.name);
        r = ha_privshm_open(&c->js, c->jname, "journal", err, sizeof(err));
        if (r < 0)
                return fail(c, r, "%s", err);
        if (c->js.found_size >= size &&
            pread(c->js.fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h)) {
                JHdr cmp = h;

                cmp.batch_k = want.batch_k;
                cmp.n = want.n;
                cmp.batch_head = want.batch_head;
                matched = memcmp(&cmp, &want, sizeof(want)) == 0;
        }
        if (!matched && c->js.found_size > 0)
                log_warning("v1 channel '%s': journal /dev/shm%s is not for this channel's "
                            "layout, starting a new one", c->cfg.name, c->jname);
        r = ha_privshm_map(&c->js, c->jname, "journal", size, !matched, err, sizeof(err));
        if (r < 0)
                return fail(c, r, "%s", err);
        p = c->js.map.addr;
        c->jh = p;
        c->jent = (HaJrec *)(void *)((uint8_t *)p + want.ent_off);
        c->stage = (uint8_t *)p + want.stage_off;
        journal_bind(c, want.stage_size);
        if (!matched) {
                memset(p, 0, want.stage_off);
                memcpy(c->jh, &want, sizeof(want));
                return 0;
        }
        *requeue = journal_recover(c);
        if (c->st.requeued || c->st.republished || c->st.already_published || c->st.abandoned)
                log_notice("v1 channel '%s': recovered from the journal: %llu to run again, "
                           "%llu results published, %llu already published, %llu left to "
                           "the client", c->cfg.name, (unsigned long long)c->st.requeued,
                           (unsigned long long)c->st.republished,
                           (unsigned long long)c->st.already_published,
                           (unsigned long long)c->st.abandoned);
        return 0;
}

static int open_doorbell(HaV1Chan *c)
{
        struct stat st;
        int flags;

        if (stat(c->cfg.doorbell, &st) < 0)
                return fail(c, -errno, "doorbell %s: %s", c->cfg.doorbell, strerror(errno));
        /* A FIFO opened for writing too never reports EOF when the
         * writer goes away, so the loop does not spin on it. */
        if (S_ISFIFO(st.st_mode))
                flags = O_RDWR;
        else if (S_ISCHR(st.st_mode))
                flags = O_RDONLY;
        else
                return fail(c, -EINVAL, "doorbell %s must be a character device "
                            "(/dev/hshm0) or a FIFO", c->cfg.doorbell);
        c->bell_fd = open(c->cfg.doorbell, flags | O_NONBLOCK | O_CLOEXEC);
        if (c->bell_fd < 0)
                return fail(c, -errno, "cannot open doorbell %s: %s", c->cfg.doorbell,
                            strerror(errno));
        if (fstat(c->bell_fd, &st) < 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)))
                return fail(c, -EINVAL, "doorbell %s changed type while opening",
                            c->cfg.doorbell);
        c->bell_read = true;
        return 0;
}

static int start(HaV1Chan *c, struct event_base *base, HaEngine *e, const char *shm_name)
{
        size_t requeue;
        HaHvConfig hv;
        char err[512];
        void *p;
        uint16_t bs;
        int r;

        r = ha_hvcfg_load(c->cfg.shm_config, &hv, err, sizeof(err));
        if (r < 0)
                return fail(c, r, "%s", err);
        if (hv.skipped)
                log_warning("v1 channel '%s': %s: %u region(s) with mem_size 0 skipped, "
                            "ignoring", c->cfg.name, c->cfg.shm_config, hv.skipped);

        r = ha_physmem_open(&c->mem, c->cfg.mem, c->cfg.base, err, sizeof(err));
        if (r < 0)
                return fail(c, r, "%s", err);
        r = map_phys(c, "the buf region", hv.buf_addr, hv.buf_size, &c->buf_map, &p);
        if (r < 0)
                return r;
        c->buf = p;
        c->buf_len = (size_t)hv.buf_size;
        /* u16 indices: a bigger region just has unused room at the end. */
        {
                uint64_t fit = (hv.queue_size - sizeof(HaMsgQueue)) / sizeof(HaMsgEntry);
                c->cap = (uint16_t)(fit > HA_QUEUE_MAX_ENTRIES ? HA_QUEUE_MAX_ENTRIES : fit);
        }
        r = map_phys(c, "the root queue", hv.queue_addr, ha_queue_bytes(c->cap), &c->queue_map,
                     &p);
        if (r < 0)
                return r;
        c->q = p;
        r = map_phys(c, "the ready page", hv.ready_addr, sizeof(uint32_t), &c->ready_map, &p);
        if (r < 0)
                return r;
        c->ready = p;

        c->batch = calloc((size_t)c->cap + 1, sizeof(*c->batch));
        c->reqs = calloc((size_t)c->cap + 1, sizeof(*c->reqs));
        c->scratch = calloc((size_t)c->cap + 1, sizeof(*c->scratch));
        c->slots = calloc(c->cap, sizeof(*c->slots));
        c->held = calloc(c->cap, 1);
        if (!c->batch || !c->reqs || !c->scratch || !c->slots || !c->held || ha_walkset_init(&c->walk, c->cap) < 0)
                return fail(c, -ENOMEM, "out of memory");

        /* The client formats the queue; before it has, buf_size is 0. */
        bs = ha_ld16(&c->q->buf_size);
        if (bs >= 1 && bs <= c->cap) {
                c->n = bs;
                (void)layout_ok(c);     /* the error state, logged; the daemon serves on */
        } else if (bs == 0)
                log_notice("v1 channel '%s': root queue not formatted yet (buf_size 0), "
                           "taking its size when the client first rings", c->cfg.name);
        else
                log_warning("v1 channel '%s': root queue buf_size %u is more than its "
                            "mem_size holds (%u), waiting for the client to format it",
                            c->cfg.name, bs, c->cap);

        r = journal_open(c, shm_name, &hv, &requeue);
        if (r < 0)
                return r;
        r = open_doorbell(c);
        if (r < 0)
                return r;
        c->bell_ev = event_new(base, c->bell_fd, EV_READ | EV_PERSIST, bell_cb, c);
        c->rescan_ev = event_new(base, -1, 0, rescan_cb, c);
        if (!c->bell_ev || !c->rescan_ev)
                return fail(c, -ENOMEM, "out of memory");
        if (event_add(c->bell_ev, NULL) < 0)
                return fail(c, -EIO, "cannot watch doorbell %s", c->cfg.doorbell);
        c->engine = e;
        r = ha_engine_add_source(e, &v1_ops, c, c->cfg.name, c->cap, &c->source);
        if (r == -ENOSPC)
                return fail(c, r, "too many queues for the engine (at most %d)",
                            HA_ENGINE_MAX_SOURCES);
        if (r < 0)
                return fail(c, r, "cannot register with the engine: %s", strerror(-r));
        if (requeue) {
                HA_ADD(&c->st, requests, requeue);
                HA_INC(&c->st, batches);
                dispatch(c, requeue);
        }

        /* Last: the client may send as soon as it sees this. */
        __atomic_store_n(c->ready, HA_MARK_INITIALIZED, __ATOMIC_RELEASE);
        log_info("v1 channel '%s': serving root queue 0x%llx (room for %u entries), buf "
                 "0x%llx+0x%llx, ready mark at 0x%llx, doorbell %s", c->cfg.name,
                 (unsigned long long)hv.queue_addr, c->cap, (unsigned long long)hv.buf_addr,
                 (unsigned long long)hv.buf_size, (unsigned long long)hv.ready_addr,
                 c->cfg.doorbell);
        /* One pass as if the doorbell rang: serves what was sent while we
         * were not running, and clears a BUSY left by a previous run. */
        event_active(c->rescan_ev, 0, 0);
        return 0;
}

int ha_v1chan_start(struct event_base *base, HaEngine *e, const HaV1ChannelConfig *cfg,
                    const char *shm_name, HaV1Chan **ret)
{
        HaV1Chan *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return log_error_errno(-ENOMEM, "v1 channel '%s': %m", cfg->name);
        c->cfg = *cfg;
        c->mem.fd = c->bell_fd = c->js.fd = -1;
        c->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        r = start(c, base, e, shm_name);
        if (r < 0) {
                /* Not registered: nothing else refers to c. */
                ha_v1chan_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void unmap(Map *m)
{
        ha_physmap_unmap(m);
}

HaV1Chan *ha_v1chan_free(HaV1Chan *c)
{
        if (!c)
                return NULL;
        if (c->bell_ev)
                event_free(c->bell_ev);
        if (c->rescan_ev)
                event_free(c->rescan_ev);
        if (c->jent) {
                size_t open = 0;

                for (unsigned i = 0; i < c->cap; i++)
                        open += c->jent[i].state != HA_J_FREE;
                /* Nothing unanswered: nothing to keep. */
                if (open)
                        log_notice("v1 channel '%s': %zu requests not answered, kept in "
                                   "/dev/shm%s for the next start", c->cfg.name, open, c->jname);
                ha_privshm_close(&c->js, c->jname, !open);
        } else {
                ha_privshm_close(&c->js, c->jname, c->js.created);      /* ours, never used */
        }
        unmap(&c->buf_map);
        unmap(&c->queue_map);
        unmap(&c->ready_map);
        ha_physmem_close(&c->mem);
        closep(&c->bell_fd);
        ha_walkset_fini(&c->walk);
        free(c->batch);
        free(c->reqs);
        free(c->scratch);
        free(c->slots);
        free(c->held);
        free(c);
        return NULL;
}
