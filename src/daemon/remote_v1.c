/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "backoff.h"
#include "devmem.h"
#include "fault.h"
#include "hist.h"
#include "hvcfg.h"
#include "log.h"
#include "physmem.h"
#include "privshm.h"
#include "queue.h"
#include "remote_stats.h"
#include "remote_v1.h"

/* Payloads start here: the Linux service writes "Test\0" at offset 0 at
 * its start and FreeRTOS A clears 0..63; the canary lives there. */
#define PAYLOAD_START 64
#define ALIGN 64
/* Entries 0-3 share the header's cache line, which FreeRTOS B writes back. */
#define FIRST_ENTRY 4
#define DOWN_AFTER 3                    /* timeouts in a row */
#define SPIN_NS 20000u                  /* then the timerfd backoff */
#define MAX_STEP_NS 1000000u
#define DOWN_PROBE_NS 1000000u          /* how long a down zone is given */
#define CANARY_CHECK 8                  /* bytes of it looked at per check */
#define CHANGE_EVERY 64                 /* spin turns per look at the header */
#define PARK_MIN_NS 60000000000ull      /* an unclaimed recovered answer: kept at least */
#define PARK_TIMEOUTS 10                /* or this many timeout_ms, if longer */

/* hvisor.ko (hvisor-tool include/hvisor.h): the shm signal is the plain
 * request number 10 with a 24-byte argument; the zone list is
 * _IOR(1, 5, zone_list_args_t *) with {u64 cnt; zone_info_t *zones}. */
#define HVISOR_SHM_SIGNAL_NR 10
#define HVISOR_ZONE_LIST_NR _IOR(1, 5, void *)
#define HVISOR_SWI 74
#define ZONE_LIST_MAX 32
#define ZONE_INFO_MAX 64                /* 48 or 56 bytes, by version */

static const char canary[PAYLOAD_START] =
        "hyperampd gateway: root queue owner, payloads from offset 64.";

/* Counters, declared once (stats.h): the JSON key and the metric. */
#define REMOTE_COUNTERS(X)                                                              \
        HA_REMOTE_COMMON_COUNTERS(X)                                                    \
        X(resyncs, "resyncs", "remote_resyncs", "", "Formats of a remote zone's root queue") \
        X(adopted, "adopted", "remote_adopted", "",                                     \
          "Root queues taken over as a previous run left them")                         \
        X(late_answers, "late_answers", "remote_late_answers", "",                      \
          "Answers to timed-out requests, dropped")                                     \
        X(recovered_answers, "recovered_answers", "remote_recovered_answers", "",       \
          "Answers to a dead run's request delivered to its resumed lease client")      \
        X(parked_answers, "parked_answers", "remote_parked_answers", "",                \
          "Answers to a dead run's request kept for its lease client")                  \
        X(unclaimed_answers, "unclaimed_answers", "remote_unclaimed_answers", "",       \
          "Kept answers no lease client claimed in time, dropped")                      \
        X(rings, "rings", "remote_rings", "", "Doorbells rung")                         \
        X(rerings, "rerings", "remote_rerings", "", "Doorbells rung again at half the timeout") \
        X(reasserts, "reasserts", "remote_reasserts", "",                               \
          "Cursors of a polling peer put back under a hand-over")                       \
        X(fast_fails, "fast_fails", "remote_fast_fails", "", "Requests failed while the zone was down") \
        X(not_ready, "not_ready", "remote_not_ready", "", "Requests that found no ready mark") \
        X(cancelled, "cancelled", "remote_cancelled", "", "Requests failed at shutdown") \
        X(spins, "poll_spins", "remote_poll_spins", "", "Spin turns polling for completion") \
        X(timer_waits, "poll_timer_waits", "remote_poll_timer_waits", "",               \
          "Timer wake-ups polling for completion")
#define REMOTE_FAULTS(X)                                                                \
        X(bad_flag, "bad_flag", "remote_bad_flag", "", "Answers with reserved flag bits set") \
        X(bad_entry, "bad_entry", "remote_bad_entry", "",                               \
          "Answers with length, offset or service_id changed")                          \
        X(bad_header, "bad_header", "remote_bad_header", "", "Root queue headers found overwritten") \
        X(no_result, "no_result", "remote_no_result", "", "Answers with no result bits") \
        X(double_answers, "double_answers", "remote_double_answers", "",                \
          "Released entries answered again")                                            \
        X(idle_missing, "idle_missing", "remote_idle_missing", "", "Answers never followed by IDLE") \
        X(profile_mismatch, "profile_mismatch", "remote_profile_mismatch", "",          \
          "Answers that transformed the NUL the peer profile leaves")                   \
        X(too_big, "too_big", "remote_too_big", "", "Requests too big for the buf region") \
        X(bell_errors, "bell_errors", "remote_bell_errors", "", "Doorbells that could not be rung")

typedef struct RemoteCounters {
        REMOTE_COUNTERS(HA_COUNTER_FIELD)
        REMOTE_FAULTS(HA_COUNTER_FIELD)
} RemoteCounters;

typedef struct Record {                 /* what we wrote: never re-read as truth */
        bool active;
        bool keyed;                     /* a dead run's, for the lease job of key */
        uint16_t k, service;
        uint32_t offset, length;
        HaJobKey key;
} Record;

/*
 * The executor's own record, in a private shm object that outlives a crash
 * (privshm.h): the request at the peer (written by publish, before the
 * entry) and the answer to a dead run's request kept for its lease client
 * (with its bytes at KEEP_DATA).  Only this executor writes it; it is
 * checked anyway when read back.  docs/gateway.md, "When the daemon dies".
 */
#define KEEP_MAGIC 0x4b50315au          /* "Z1PK" */
#define KEEP_VERSION 1
#define KEEP_DATA 4096u
enum { KEEP_NONE, KEEP_OUT, KEEP_PARKED };

typedef struct Keep {
        uint32_t magic, version;
        uint64_t queue_addr, buf_addr, buf_len;         /* the queue it is for */
        uint32_t n, half;
        /* The request at the peer. */
        uint32_t out_state;             /* KEEP_NONE, KEEP_OUT */
        uint16_t out_k, out_service;
        uint32_t out_offset, out_length;
        uint32_t out_keyed;
        HaJobKey out_key;
        /* The kept answer. */
        uint32_t park_state;            /* KEEP_NONE, KEEP_PARKED */
        uint32_t park_result;
        uint16_t park_service, park_pad;
        uint32_t park_len;
        uint64_t park_at;               /* ha_backoff_now() */
        HaJobKey park_key;
} Keep;
_Static_assert(sizeof(Keep) <= KEEP_DATA, "the record fits before its data");

struct HaRemoteV1 {
        HaRemoteZoneConfig cfg;
        HaPhysMem mem;
        HaPhysMap buf_map, queue_map, ready_map, bell_map;
        volatile uint8_t *buf;
        size_t buf_len;
        HaMsgQueue *q;
        uint32_t *ready;
        uint32_t *mmio_bell;
        int bell_fd;
        bool bell_zone_ok;              /* ioctl: the target zone was listed */
        uint16_t n;                     /* buf_size we format with */
        uint32_t half;                  /* bytes of each of the two payload slots */
        /* Executor thread only. */
        HaBackoff bo;
        bool bo_ready;
        bool formatted;
        bool adopt_done;                /* the first look at the queue is over */
        Record out;                     /* the request at the peer, if any */
        const HaJobKey *key;            /* the current call's job, if it has one */
        bool parked;                    /* keep->park_* holds an answer */
        int released[2];                /* the entries released last, -1: none */
        uint16_t next_k;
        unsigned slot;
        unsigned in_a_row;              /* timeouts */
        unsigned polls;                 /* check_done calls */
        uint64_t polled_waits;          /* bo.timer_waits at the last look at the header */
        HaRatelimit rl;
        /* The private record: the executor thread only. */
        bool keep_done;                 /* opened, or none to open */
        uint64_t queue_addr, buf_addr;  /* what it is for */
        Keep *keep;
        HaPrivShm keep_shm;
        char keep_name[HA_SHM_NAME_MAX + 80];
        /* Any thread. */
        int state;                      /* enum ha_remote_state, atomic */
        int cancel;                     /* atomic: the daemon is stopping */
        pthread_mutex_t lock;           /* rtt */
        HaHist rtt;
        RemoteCounters st;
};

const char *ha_remote_state_name(enum ha_remote_state s)
{
        static const char *const names[] = {
                [HA_REMOTE_WAITING_READY] = "waiting-ready", [HA_REMOTE_READY] = "ready",
                [HA_REMOTE_BUSY] = "busy", [HA_REMOTE_DOWN] = "down",
                [HA_REMOTE_RESYNCING] = "resyncing",
        };

        return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* Counters have one writer, the zone's thread: a relaxed load and store
 * (no read-modify-write, no lock); stats reads them relaxed. */
#define COUNT(r, field, k) \
        __atomic_store_n(&(r)->st.field, __atomic_load_n(&(r)->st.field, __ATOMIC_RELAXED) + (k), \
                         __ATOMIC_RELAXED)

static int get_state(HaRemoteV1 *r)
{
        return __atomic_load_n(&r->state, __ATOMIC_RELAXED);
}

static void set_state(HaRemoteV1 *r, enum ha_remote_state s)
{
        /* One writer (the zone's thread): no exchange needed. */
        int old = __atomic_load_n(&r->state, __ATOMIC_RELAXED);

        if (old == (int)s)
                return;
        __atomic_store_n(&r->state, (int)s, __ATOMIC_RELAXED);
        /* Transitions a user cares about; busy/ready flip per request. */
        if (s == HA_REMOTE_DOWN || old == HA_REMOTE_DOWN || s == HA_REMOTE_WAITING_READY ||
            old == HA_REMOTE_WAITING_READY) {
                uint64_t dropped;

                if (ha_ratelimit_ok(&r->rl, &dropped))
                        log_notice("remote zone '%s': %s -> %s", r->cfg.name,
                                   ha_remote_state_name((enum ha_remote_state)old),
                                   ha_remote_state_name(s));
        }
}

/* ===== the mapping: aligned 16/32-bit accesses only ===== */

static uint32_t mark(HaRemoteV1 *r)
{
        return __atomic_load_n(&r->q->working_mark, __ATOMIC_ACQUIRE);
}

static bool ready_mark_ok(HaRemoteV1 *r)
{
        uint32_t m = __atomic_load_n(r->ready, __ATOMIC_ACQUIRE);

        return m == HA_MARK_INITIALIZED || m == HA_MARK_IDLE;
}

static HaMsgEntry *entry(HaRemoteV1 *r, uint16_t k)
{
        return &r->q->entries[k];
}

enum { PEER_SAME = 0, PEER_RESTARTED, PEER_SCRIBBLED };

/* The header as we formatted it (the peers only move proc_ing_h and the
 * mark), and the canary in place?  FreeRTOS A and seL4 re-format the
 * queue at their start (buf_size 16, heads 0); the Linux service writes
 * "Test\0" over the canary, FreeRTOS A zeroes it. */
static int peer_changed(HaRemoteV1 *r)
{
        uint8_t c[CANARY_CHECK];
        uint32_t m = mark(r);
        uint16_t bs = ha_ld16(&r->q->buf_size), e = ha_ld16(&r->q->empty_h);
        uint16_t w = ha_ld16(&r->q->wait_h), p = ha_ld16(&r->q->proc_ing_h);

        if (bs != r->n || e != 0 || w != r->n || p > r->n ||
            (m != HA_MARK_IDLE && m != HA_MARK_BUSY)) {
                /* Heads 0 and a small buf_size: a peer's own format. */
                if (e == 0 && w == 0 && bs != r->n && bs > 0 && bs < r->n)
                        return PEER_RESTARTED;
                return PEER_SCRIBBLED;
        }
        /* Its first 8 bytes: every known start-up write covers them, and
         * each look is two uncached loads, not sixteen. */
        ha_devmem_read(c, r->buf, CANARY_CHECK);
        return memcmp(c, canary, CANARY_CHECK) == 0 ? PEER_SAME : PEER_RESTARTED;
}

/* Once per peer lifetime, with nothing at the peer: lists linked as the
 * original does, the canary, then IDLE last. */
static void format(HaRemoteV1 *r)
{
        for (uint16_t i = 0; i < r->n; i++) {
                HaMsgEntry *en = entry(r, i);

                ha_st32(&en->msg.length, 0);
                ha_st16(&en->msg.flag, 0);
                ha_st16(&en->msg.service_id, 0);
                ha_st32(&en->msg.offset, 0);
                ha_st16(&en->cur_idx, i);
                ha_st16(&en->nxt_idx, (uint16_t)(i + 1));
        }
        ha_devmem_write(r->buf, canary, sizeof(canary));
        ha_st16(&r->q->buf_size, r->n);
        ha_st16(&r->q->empty_h, 0);
        ha_st16(&r->q->wait_h, r->n);
        ha_st16(&r->q->proc_ing_h, r->n);
        __atomic_store_n(&r->q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
        r->formatted = true;
        r->out.active = false;
        r->released[0] = r->released[1] = -1;
        COUNT(r, resyncs, 1);
}

/* ===== the doorbell ===== */

static bool zone_listed(HaRemoteV1 *r)
{
        struct { uint64_t cnt; void *zones; } args;
        uint8_t zones[ZONE_LIST_MAX * ZONE_INFO_MAX];
        int n;

        memset(zones, 0, sizeof(zones));
        args.cnt = ZONE_LIST_MAX;
        args.zones = zones;
        n = ioctl(r->bell_fd, HVISOR_ZONE_LIST_NR, &args);
        if (n < 0)
                return false;
        if (n > ZONE_LIST_MAX)
                n = ZONE_LIST_MAX;
        /* zone_info is {u32 zone_id; u64 cpus; char name[32]} (48 bytes),
         * with a trailing u8 is_err in later versions (56): accept either. */
        for (int i = 0; i < n; i++) {
                uint32_t id48, id56;

                memcpy(&id48, zones + (size_t)i * 48, 4);
                memcpy(&id56, zones + (size_t)i * 56, 4);
                if (id48 == r->cfg.bell_zone || id56 == r->cfg.bell_zone)
                        return true;
        }
        return false;
}

static void ring(HaRemoteV1 *r, uint16_t service)
{
        bool ok = true;

        switch (r->cfg.bell) {
        case HA_BELL_NONE:
                return;
        case HA_BELL_MMIO:
                /* Everything before it is visible first: a seq_cst store
                 * (no fence: TSan does not model fences). */
                __atomic_store_n(r->mmio_bell, (uint32_t)r->cfg.bell_zone << 16 | service,
                                 __ATOMIC_SEQ_CST);
                break;
        case HA_BELL_FIFO:
                if (r->bell_fd < 0)
                        r->bell_fd = open(r->cfg.bell_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (r->bell_fd < 0) {
                        ok = false;     /* ENXIO: no peer reading */
                        break;
                }
                if (write(r->bell_fd, "!", 1) < 0 && errno != EAGAIN) {
                        /* EPIPE: the peer went away; reopen next time. */
                        close(r->bell_fd);
                        r->bell_fd = -1;
                        ok = false;
                }
                break;
        case HA_BELL_IOCTL: {
                uint64_t args[3] = { r->cfg.bell_zone, service, HVISOR_SWI };

                /* The driver spins in the kernel for a zone that is not
                 * there: never ring one we have not seen listed. */
                if (!r->bell_zone_ok)
                        r->bell_zone_ok = zone_listed(r);
                ok = r->bell_zone_ok && ioctl(r->bell_fd, HVISOR_SHM_SIGNAL_NR, args) >= 0;
                break;
        }
        }
        COUNT(r, rings, 1);
        if (!ok)
                COUNT(r, bell_errors, 1);
}

/* A polling peer (seL4) moves its cursor to 0 and sets IDLE after 32
 * empty polls, and may do so in the instant we set proc_ing_h: put it back,
 * but only while the entry is not done and no longer at the cursor, so an
 * entry the peer is working on (the cursor stays on it) is never handed
 * over twice. */
static void reassert(HaRemoteV1 *r)
{
        if (mark(r) == HA_MARK_IDLE && ha_ld16(&r->q->proc_ing_h) != r->out.k &&
            !(__atomic_load_n(&entry(r, r->out.k)->msg.flag, __ATOMIC_ACQUIRE) &
              HA_FLAG_DEAL_STATE)) {
                ha_st16(&r->q->proc_ing_h, r->out.k);
                __atomic_store_n(&r->q->working_mark, HA_MARK_BUSY, __ATOMIC_RELEASE);
                COUNT(r, reasserts, 1);
        }
}

/* Half the timeout gone, no answer: ring again (an IRQ lost before the
 * peer's poll is otherwise fatal; duplicates are harmless). */
static void ring_again(HaRemoteV1 *r)
{
        COUNT(r, rerings, 1);
        if (r->cfg.bell != HA_BELL_NONE)
                ring(r, r->out.service);
        else
                reassert(r);
}

/* ===== waiting (executor thread): spin, then the timerfd backoff ===== */

/* check: > 0 done, 0 not yet, < 0 give up with that. */
static int wait_for(HaRemoteV1 *r, int (*check)(HaRemoteV1 *), uint64_t until)
{
        uint64_t spins = r->bo.spins, waits = r->bo.timer_waits;
        int c = check(r);

        /* Most waits are over at the first look: no clock read for them. */
        if (c != 0)
                return c > 0 ? 0 : c;
        ha_backoff_begin_until(&r->bo, until);
        while ((c = check(r)) == 0) {
                if (__atomic_load_n(&r->cancel, __ATOMIC_RELAXED)) {
                        c = -ECANCELED;
                        break;
                }
                if (ha_backoff_wait(&r->bo) < 0) {
                        c = check(r);
                        if (c == 0)
                                c = -ETIMEDOUT;
                        break;
                }
        }
        COUNT(r, spins, r->bo.spins - spins);
        COUNT(r, timer_waits, r->bo.timer_waits - waits);
        return c > 0 ? 0 : c;
}

static int check_ready(HaRemoteV1 *r)
{
        return ready_mark_ok(r);
}

static int check_idle(HaRemoteV1 *r)
{
        uint32_t m = mark(r);

        if (m == HA_MARK_IDLE)
                return 1;
        return m == HA_MARK_BUSY ? 0 : -EPROTO;
}

/* Released entries must stay released: a peer that answers twice sets a
 * flag again (seL4 would also transform it again if length were still
 * set, hence length goes to 0 first on release).  Such a peer answers the
 * old entry when rung for the next one, so the two released last are
 * looked at. */
static void check_released(HaRemoteV1 *r)
{
        for (int i = 0; i < 2; i++) {
                HaMsgEntry *en;

                if (r->released[i] < 0)
                        continue;
                en = entry(r, (uint16_t)r->released[i]);
                if (__atomic_load_n(&en->msg.flag, __ATOMIC_ACQUIRE) != 0 ||
                    ha_ld32(&en->msg.length) != 0) {
                        COUNT(r, double_answers, 1);
                        ha_st32(&en->msg.length, 0);
                        __atomic_store_n(&en->msg.flag, 0, __ATOMIC_RELEASE);
                }
        }
}

static void release(HaRemoteV1 *r, uint16_t k)
{
        HaMsgEntry *en = entry(r, k);

        /* length first: a polling peer never sees "length > 0, not dealt".
         * The release store of flag orders it after (every store before a
         * release store is visible first; no fence: TSan models none). */
        ha_st32(&en->msg.length, 0);
        __atomic_store_n(&en->msg.flag, 0, __ATOMIC_RELEASE);
        r->out.active = false;
        r->released[1] = r->released[0];
        r->released[0] = k;
}

/* The quarantined request: answered late, or gone with a peer restart? */
static int check_out(HaRemoteV1 *r)
{
        if (peer_changed(r) != PEER_SAME)
                return 1;       /* resolved by the re-format that follows */
        if (__atomic_load_n(&entry(r, r->out.k)->msg.flag, __ATOMIC_ACQUIRE) &
            HA_FLAG_DEAL_STATE) {
                if (r->out.keyed)
                        return 1;       /* prepare() parks it for its lease job */
                release(r, r->out.k);
                COUNT(r, late_answers, 1);
                return 1;
        }
        return 0;
}

static void note_peer_change(HaRemoteV1 *r, int why)
{
        uint64_t dropped;

        if (why == PEER_RESTARTED)
                COUNT(r, peer_restarts, 1);
        else
                COUNT(r, bad_header, 1);
        if (ha_ratelimit_ok(&r->rl, &dropped))
                log_notice("remote zone '%s': %s, re-formatting its queue", r->cfg.name,
                           why == PEER_RESTARTED ? "the peer restarted" :
                           "the queue header was overwritten");
}

/* ===== the private record: a dead run's request (crash safety) ===== */

static bool nul_convention(const HaRemoteV1 *r);
static int complete(HaRemoteV1 *r, uint8_t *data, uint32_t len, uint64_t deadline,
                    enum ha_result *res);

static uint8_t *keep_data(HaRemoteV1 *r)
{
        return (uint8_t *)r->keep + KEEP_DATA;
}

/* publish: the request, before the peer can see any of it.  Stores into
 * the mapping, no syscall; KEEP_NONE first, so a crash half-way leaves no
 * record mixing two requests. */
static void keep_out(HaRemoteV1 *r, uint16_t k, uint16_t service, uint32_t off, uint32_t len)
{
        Keep *h = r->keep;

        if (!h)
                return;
        h->out_state = KEEP_NONE;
        ha_crash_order();
        h->out_k = k;
        h->out_service = service;
        h->out_offset = off;
        h->out_length = len;
        h->out_keyed = r->key != NULL;
        if (r->key)
                h->out_key = *r->key;
        ha_crash_order();
        h->out_state = KEEP_OUT;
        ha_crash_order();       /* before the entry's first store */
}

/* adopt: the entry our record says the dead run handed over, if the queue
 * still holds it as written (answered, or at the peer's cursor); -1 when
 * not: then it is not ours to deliver. */
static int keep_held(HaRemoteV1 *r)
{
        const Keep *h = r->keep;
        HaMsgEntry *en;

        if (!h || h->out_state != KEEP_OUT || h->out_k >= r->n || h->out_length == 0 ||
            h->out_offset < PAYLOAD_START || h->out_offset > r->buf_len ||
            h->out_length > r->buf_len - h->out_offset)
                return -1;
        en = entry(r, h->out_k);
        if (ha_ld32(&en->msg.length) != h->out_length ||
            ha_ld32(&en->msg.offset) != h->out_offset ||
            ha_ld16(&en->msg.service_id) != h->out_service)
                return -1;
        if (!(__atomic_load_n(&en->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE) &&
            ha_ld16(&r->q->proc_ing_h) != h->out_k)
                return -1;
        return h->out_k;
}

/* The job got its error answer (timeout, shutdown): a late answer to its
 * request is nobody's, after a crash too.  Unless what is at the peer is
 * a dead run's request no job has claimed yet (this one timed out behind
 * it): that one stays its lease's. */
static void keep_disown(HaRemoteV1 *r)
{
        if (r->keep && !(r->out.active && r->out.keyed))
                r->keep->out_keyed = 0;
}

static Record keep_record(HaRemoteV1 *r)
{
        const Keep *h = r->keep;

        return (Record){ .active = true, .keyed = h->out_keyed != 0, .k = h->out_k,
                         .service = h->out_service, .offset = h->out_offset,
                         .length = h->out_length, .key = h->out_key };
}

/*
 * The first time after a start: a queue that is still as a previous run of
 * the daemon left it (header and canary) is taken over, not re-formatted
 * under the peer: a request that run handed over (BUSY, proc_ing_h on an
 * entry with a length) becomes the quarantined one, answered or timed out
 * before anything else is sent; every other entry still holding a length
 * is released.  Which request that is, and what it must look like, comes
 * from our private record (keep_held): only such an entry's answer is
 * delivered (claim, park).  An entry BUSY at the peer that the record does
 * not vouch for is quarantined just the same, with the values read back,
 * used only to release it, never to deliver anything.
 */
static bool adopt(HaRemoteV1 *r)
{
        bool held;
        uint16_t p;
        int mine;

        if (r->adopt_done)
                return false;
        r->adopt_done = true;
        if (peer_changed(r) != PEER_SAME)
                return false;
        p = ha_ld16(&r->q->proc_ing_h);
        mine = keep_held(r);
        held = mine >= 0 ||
               (mark(r) == HA_MARK_BUSY && p < r->n && ha_ld32(&entry(r, p)->msg.length) != 0);
        if (mine >= 0)
                p = (uint16_t)mine;
        for (uint16_t i = 0; i < r->n; i++)
                if ((!held || i != p) && ha_ld32(&entry(r, i)->msg.length) != 0)
                        release(r, i);
        r->out.active = false;
        if (mine >= 0) {
                r->out = keep_record(r);
        } else if (held) {
                HaMsgEntry *en = entry(r, p);

                r->out = (Record){ .active = true, .k = p, .service = ha_ld16(&en->msg.service_id),
                                   .offset = ha_ld32(&en->msg.offset),
                                   .length = ha_ld32(&en->msg.length) };
        }
        r->released[0] = r->released[1] = -1;
        r->next_k = (uint16_t)(r->out.active && r->out.k + 1 < r->n ? r->out.k + 1 :
                               r->n > FIRST_ENTRY ? FIRST_ENTRY : 0);
        /* And the other payload slot (publish alternates them): a late
         * write of the peer's to the held request's bytes misses the next. */
        if (r->out.active)
                r->slot = r->out.offset >= PAYLOAD_START + r->half ? 0 : 1;
        r->formatted = true;
        COUNT(r, adopted, 1);
        log_notice("remote zone '%s': took over the queue as a previous run left it%s",
                   r->cfg.name, r->out.active ? ", with its request still at the peer" : "");
        return true;
}

/* ===== a dead run's answer for its lease job ===== */

static void unpark(HaRemoteV1 *r)
{
        r->parked = false;
        r->keep->park_state = KEEP_NONE;
}

/* How long a kept answer waits for its lease client. */
static uint64_t park_ttl(const HaRemoteV1 *r)
{
        uint64_t t = (uint64_t)r->cfg.timeout_ms * 1000000u * PARK_TIMEOUTS;

        return t > PARK_MIN_NS ? t : PARK_MIN_NS;
}

/*
 * The dead run's request of a lease job, answered while another request
 * waits behind it (its lease client has not resumed yet): read and checked
 * as any answer, kept in the record with the job's key until claimed (one
 * per zone), and the entry released, so the queue goes on.
 */
static void park(HaRemoteV1 *r, uint64_t deadline)
{
        Keep *h = r->keep;
        Record o = r->out;
        enum ha_result res = HA_RESULT_FAIL;
        uint32_t len = o.length - (nul_convention(r) ? 1 : 0);

        if (!(__atomic_load_n(&entry(r, o.k)->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE))
                return;         /* the peer restarted: the re-format drops it */
        r->out.keyed = false;
        if (r->parked) {
                /* One per zone: the older one goes. */
                COUNT(r, unclaimed_answers, 1);
                unpark(r);
        }
        ha_crash_order();
        if (complete(r, keep_data(r), len, deadline, &res) < 0)
                return;
        h->park_result = res;
        h->park_service = o.service;
        h->park_len = len;
        h->park_at = ha_backoff_now();
        h->park_key = o.key;
        ha_crash_order();
        h->park_state = KEEP_PARKED;
        r->parked = true;
        COUNT(r, parked_answers, 1);
}

static bool same_key(const HaJobKey *a, const HaJobKey *b)
{
        return memcmp(a, b, sizeof(*a)) == 0;
}

/*
 * A lease job run again after a daemon crash (its key, r->key, is the one
 * the dead run recorded): its answer, kept (park) or still to come from the
 * adopted entry, which is waited for within this call's deadline.  The
 * peer never sees the request twice.  0 (answered: *res), -ETIMEDOUT or
 * -EAGAIN as complete(), or -ENOENT: nothing for this job, send it.
 */
static int claim(HaRemoteV1 *r, uint16_t service, uint8_t *buf, uint32_t len, uint64_t deadline,
                 enum ha_result *res)
{
        const HaJobKey *key = r->key;
        Keep *h = r->keep;
        int c;

        if (r->parked) {
                uint64_t now = ha_backoff_now();

                if (key && h->park_service == service && h->park_len == len &&
                    same_key(&h->park_key, key)) {
                        *res = h->park_result == HA_RESULT_SUCCESS ||
                               h->park_result == HA_RESULT_NOT_EXITS ?
                               (enum ha_result)h->park_result : HA_RESULT_FAIL;
                        if (*res == HA_RESULT_SUCCESS)
                                memcpy(buf, keep_data(r), len);
                        unpark(r);
                        COUNT(r, recovered_answers, 1);
                        return 0;
                }
                if (now > h->park_at && now - h->park_at > park_ttl(r)) {
                        unpark(r);
                        COUNT(r, unclaimed_answers, 1);
                        log_notice("remote zone '%s': a previous run's answer was not claimed "
                                   "by its lease client in time, dropped", r->cfg.name);
                }
        }
        /* After the first look at the queue, one test per request. */
        if (!key || (r->formatted && !(r->out.active && r->out.keyed)) || !ready_mark_ok(r))
                return -ENOENT;
        if (!r->formatted)
                (void)adopt(r);
        if (!r->out.active || !r->out.keyed || r->out.service != service ||
            r->out.length != len + (nul_convention(r) ? 1 : 0) || !same_key(&r->out.key, key))
                return -ENOENT;
        r->out.keyed = false;   /* claimed, whatever comes of it */
        set_state(r, HA_REMOTE_BUSY);
        c = complete(r, buf, len, deadline, res);
        if (c == 0)
                COUNT(r, recovered_answers, 1);
        return c;
}

/* Everything before sending: the ready mark, the quarantined request, a
 * peer restart (re-format), IDLE.  0, or -ETIMEDOUT / -ENOTCONN. */
static int prepare(HaRemoteV1 *r, uint64_t deadline)
{
        uint64_t until = deadline;
        int why, c;

        /* A down zone gets a short look; the clock only then. */
        if (get_state(r) == HA_REMOTE_DOWN) {
                uint64_t now = ha_backoff_now();

                if (deadline > now + DOWN_PROBE_NS)
                        until = now + DOWN_PROBE_NS;
        }

        if (!ready_mark_ok(r)) {
                /* Gone or never there: whatever it comes back as, it is a
                 * new lifetime. */
                r->formatted = false;
                r->out.active = false;
                set_state(r, HA_REMOTE_WAITING_READY);
                if (wait_for(r, check_ready, deadline) < 0) {
                        COUNT(r, not_ready, 1);
                        return -ENOTCONN;
                }
        }
        if (!r->formatted && !adopt(r)) {
                set_state(r, HA_REMOTE_RESYNCING);
                format(r);
        }
        if (r->out.active) {
                if (!check_out(r)) {
                        ring_again(r);
                        if (wait_for(r, check_out, until) < 0)
                                return -ETIMEDOUT;
                }
                if (r->out.active && r->out.keyed)
                        park(r, deadline);
        }
        for (int tries = 0;; tries++) {
                if ((why = peer_changed(r)) != PEER_SAME) {
                        note_peer_change(r, why);
                        set_state(r, HA_REMOTE_RESYNCING);
                        format(r);
                }
                check_released(r);
                c = wait_for(r, check_idle, until);
                if (c == 0)
                        return 0;
                if (c != -EPROTO || tries == 2)
                        return -ETIMEDOUT;
                /* Neither IDLE nor BUSY: scribbled, re-format. */
        }
}

/* ===== one request ===== */

static int check_done(HaRemoteV1 *r)
{
        if (__atomic_load_n(&entry(r, r->out.k)->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE)
                return 1;
        if (r->cfg.bell == HA_BELL_NONE)
                reassert(r);
        /* A restart under the request: looked for after every timer
         * wake-up, and every CHANGE_EVERY turns of the spin, so a turn
         * stays one load of the flag. */
        if (++r->polls % CHANGE_EVERY && r->bo.timer_waits == r->polled_waits)
                return 0;
        r->polled_waits = r->bo.timer_waits;
        return peer_changed(r) != PEER_SAME ? -EAGAIN : 0;
}

static int check_result(HaRemoteV1 *r)
{
        uint16_t f = __atomic_load_n(&entry(r, r->out.k)->msg.flag, __ATOMIC_ACQUIRE);

        return ha_flag_result(f) != HA_RESULT_NONE || (f & HA_FLAG_RESERVED);
}

static bool nul_convention(const HaRemoteV1 *r)
{
        return r->cfg.peer != HA_PEER_SEL4;
}

static void publish(HaRemoteV1 *r, uint16_t service, const uint8_t *data, uint32_t len)
{
        static const uint8_t zeros[ALIGN + 1];
        uint32_t wire = len + (nul_convention(r) ? 1 : 0);
        uint32_t padded = (wire + ALIGN - 1) / ALIGN * ALIGN;
        uint32_t off = PAYLOAD_START + (r->slot & 1) * r->half;
        uint16_t k;
        HaMsgEntry *en;

        /* A different entry and slot each time: a late write of the peer's
         * to the previous ones touches nothing in use. */
        k = r->next_k;
        r->next_k = (uint16_t)(k + 1 < r->n ? k + 1 : (r->n > FIRST_ENTRY ? FIRST_ENTRY : 0));
        r->slot++;
        en = entry(r, k);
        keep_out(r, k, service, off, wire);

        ha_devmem_write(r->buf + off, data, len);
        ha_devmem_write(r->buf + off + len, zeros, padded - len);
        ha_st16(&en->msg.flag, 0);
        ha_st16(&en->msg.service_id, service);
        ha_st32(&en->msg.offset, off);
        ha_st16(&en->cur_idx, k);
        ha_st16(&en->nxt_idx, r->n);
        /* length last, a release store: the polling seL4 peer takes the
         * entry on it.  Then proc_ing_h, then BUSY (release). */
        __atomic_store_n(&en->msg.length, wire, __ATOMIC_RELEASE);
        ha_st16(&r->q->proc_ing_h, k);
        __atomic_store_n(&r->q->working_mark, HA_MARK_BUSY, __ATOMIC_RELEASE);
        r->out = (Record){ .active = true, .k = k, .service = service, .offset = off,
                           .length = wire };
        set_state(r, HA_REMOTE_BUSY);
        ring(r, service);
}

/* Completion of r->out: the result (and the bytes into data), or
 * -ETIMEDOUT (left quarantined), or -EAGAIN (the peer restarted under
 * it: withdrawn, send again). */
static int complete(HaRemoteV1 *r, uint8_t *data, uint32_t len, uint64_t deadline,
                    enum ha_result *res)
{
        HaMsgEntry *en = entry(r, r->out.k);
        uint16_t flag;
        uint8_t trailer = 0;
        bool bad;
        int c;

        /* Half the time, then ring again: an IRQ lost before the peer
         * polled is otherwise fatal; duplicates are harmless.  The clock
         * is read only when the first look finds it not done. */
        c = check_done(r);
        if (c == 0) {
                uint64_t now = ha_backoff_now();
                uint64_t half = now < deadline ? now + (deadline - now) / 2 : deadline;

                c = wait_for(r, check_done, half);
                if (c == -ETIMEDOUT) {
                        ring_again(r);
                        c = wait_for(r, check_done, deadline);
                }
        } else if (c > 0) {
                c = 0;
        }
        if (c == -EAGAIN) {
                release(r, r->out.k);
                return -EAGAIN;
        }
        if (c < 0)
                return -ETIMEDOUT;
        /* Peers write deal_state first, the result bits after, in two
         * stores: a peer preempted between them (a loaded machine) must not
         * turn a success into FAIL, so the wait is the request's own. */
        (void)wait_for(r, check_result, deadline);
        flag = __atomic_load_n(&en->msg.flag, __ATOMIC_ACQUIRE);
        bad = false;
        if (flag & HA_FLAG_RESERVED) {
                COUNT(r, bad_flag, 1);
                bad = true;
        }
        if (ha_ld16(&en->msg.service_id) != r->out.service ||
            ha_ld32(&en->msg.offset) != r->out.offset ||
            ha_ld32(&en->msg.length) != r->out.length) {
                COUNT(r, bad_entry, 1);
                bad = true;
        }
        *res = ha_flag_result(flag);
        if (!bad && *res == HA_RESULT_NONE) {
                COUNT(r, no_result, 1);
                bad = true;
        }
        if (!bad && *res == HA_RESULT_SUCCESS) {
                /* Our record's offset, never the peer's. */
                if (nul_convention(r))
                        ha_devmem_read(&trailer, r->buf + r->out.offset + len, 1);
                if (trailer != 0) {
                        /* The peer transformed the NUL it should leave:
                         * not the configured peer profile. */
                        COUNT(r, profile_mismatch, 1);
                        bad = true;
                } else {
                        ha_devmem_read(data, r->buf + r->out.offset, len);
                }
        }
        if (bad)
                *res = HA_RESULT_FAIL;
        /* FreeRTOS B writes the header line back after the flag: wait for
         * IDLE before the queue is touched again. */
        if (wait_for(r, check_idle, deadline) < 0)
                COUNT(r, idle_missing, 1);
        release(r, r->out.k);
        return 0;
}

/* On the executor thread, per request until it works: rate limited. */
static int keep_fail(HaRemoteV1 *r, int rc, const char *msg)
{
        uint64_t dropped;

        if (ha_ratelimit_ok(&r->rl, &dropped))
                log_error("remote zone '%s': %s; failing its requests until it can be "
                          "opened", r->cfg.name, msg);
        return rc;
}

/* The private record (the executor thread, before its first request):
 * made for this zone's queue, or as a previous run left it.  No shm_name:
 * none (tests).  A failure is retried by the next request. */
static int keep_open(HaRemoteV1 *r)
{
        Keep want = { .magic = KEEP_MAGIC, .version = KEEP_VERSION, .queue_addr = r->queue_addr,
                      .buf_addr = r->buf_addr, .buf_len = r->buf_len, .n = r->n,
                      .half = r->half };
        size_t size = KEEP_DATA + r->half;
        bool matched = false;
        char err[512];
        Keep h;
        int rc;

        if (!r->keep_name[0]) {
                r->keep_done = true;
                return 0;
        }
        rc = ha_privshm_open(&r->keep_shm, r->keep_name, "record", err, sizeof(err));
        if (rc < 0)
                return keep_fail(r, rc, err);
        if (r->keep_shm.found_size == size &&
            pread(r->keep_shm.fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h))
                matched = memcmp(&h, &want, offsetof(Keep, out_state)) == 0;
        if (!matched && r->keep_shm.found_size > 0)
                log_warning("remote zone '%s': record /dev/shm%s is not for this zone's queue, "
                            "starting a new one", r->cfg.name, r->keep_name);
        rc = ha_privshm_map(&r->keep_shm, r->keep_name, "record", size, !matched, err,
                            sizeof(err));
        if (rc < 0) {
                ha_privshm_close(&r->keep_shm, r->keep_name, r->keep_shm.created);
                return keep_fail(r, rc, err);
        }
        r->keep_done = true;
        r->keep = r->keep_shm.map.addr;
        if (!matched) {
                memset(r->keep, 0, KEEP_DATA);
                *r->keep = want;
        }
        r->parked = r->keep->park_state == KEEP_PARKED && r->keep->park_len > 0 &&
                    r->keep->park_len <= ha_remote_v1_max_payload(r);
        if (!r->parked)
                r->keep->park_state = KEEP_NONE;
        else
                log_notice("remote zone '%s': a previous run's answer is kept for its lease "
                           "client", r->cfg.name);
        return 0;
}

enum ha_result ha_remote_v1_call_key(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                     unsigned worker, const HaJobKey *key)
{
        HaRemoteV1 *r = ctx;
        uint64_t t0 = ha_backoff_now();
        uint64_t deadline = t0 + (uint64_t)r->cfg.timeout_ms * 1000000u;
        enum ha_result res = HA_RESULT_FAIL;
        int c;

        (void)worker;
        COUNT(r, requests, 1);
        if (__atomic_load_n(&r->cancel, __ATOMIC_RELAXED)) {
                COUNT(r, cancelled, 1);
                COUNT(r, failures, 1);
                return HA_RESULT_FAIL;
        }
        if (!r->bo_ready) {
                if (ha_backoff_init(&r->bo, SPIN_NS, MAX_STEP_NS) < 0) {
                        COUNT(r, failures, 1);
                        return HA_RESULT_FAIL;
                }
                r->bo_ready = true;
        }
        /* The record is opened by the first request, not at new: a zone a
         * reload changed is set up while its predecessor still holds it. */
        if (!r->keep_done && keep_open(r) < 0) {
                COUNT(r, failures, 1);
                return HA_RESULT_FAIL;
        }
        if (len == 0 || len > ha_remote_v1_max_payload(r)) {
                COUNT(r, too_big, 1);
                COUNT(r, failures, 1);
                return HA_RESULT_FAIL;
        }
        r->key = key;
        for (;;) {
                c = claim(r, service, buf, len, deadline, &res);
                if (c == -ENOENT) {
                        c = prepare(r, deadline);
                        if (c == 0) {
                                publish(r, service, buf, len);
                                c = complete(r, buf, len, deadline, &res);
                        }
                }
                if (c == -EAGAIN && ha_backoff_now() < deadline) {
                        note_peer_change(r, PEER_RESTARTED);
                        r->formatted = false;
                        continue;       /* nothing of it was answered: send again */
                }
                break;
        }
        if (c < 0)
                keep_disown(r);
        if (c < 0 && __atomic_load_n(&r->cancel, __ATOMIC_RELAXED)) {
                /* The daemon is stopping: not the zone's fault. */
                COUNT(r, cancelled, 1);
                COUNT(r, failures, 1);
                return HA_RESULT_FAIL;
        }
        if (c < 0) {
                bool was_down = get_state(r) == HA_REMOTE_DOWN;

                COUNT(r, timeouts, 1);
                if (was_down)
                        COUNT(r, fast_fails, 1);
                if (c == -ENOTCONN)
                        return HA_RESULT_TIMEOUT;       /* still waiting-ready */
                if (++r->in_a_row >= DOWN_AFTER)
                        set_state(r, HA_REMOTE_DOWN);
                else
                        set_state(r, r->out.active ? HA_REMOTE_BUSY : HA_REMOTE_READY);
                return HA_RESULT_TIMEOUT;
        }
        r->in_a_row = 0;
        set_state(r, HA_REMOTE_READY);
        if (res == HA_RESULT_SUCCESS)
                COUNT(r, completed, 1);
        else
                COUNT(r, failures, 1);
        pthread_mutex_lock(&r->lock);
        ha_hist_add(&r->rtt, ha_backoff_now() - t0);
        pthread_mutex_unlock(&r->lock);
        return res;
}

enum ha_result ha_remote_v1_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                 unsigned worker)
{
        return ha_remote_v1_call_key(ctx, service, buf, len, worker, NULL);
}

/* ===== set-up (loop thread) ===== */

uint32_t ha_remote_v1_max_payload(const HaRemoteV1 *r)
{
        /* Room for the NUL and the padding in each half. */
        return r->half > ALIGN ? r->half - ALIGN : 0;
}

static int fail(HaRemoteV1 *r, int err, const char *msg)
{
        log_error("remote zone '%s': %s", r->cfg.name, msg);
        return err;
}

static int start(HaRemoteV1 *r, const char *shm_name)
{
        char err[512];
        HaHvConfig hv;
        uint64_t fit;
        void *p;
        int rc;

        rc = ha_hvcfg_load(r->cfg.shm_config, &hv, err, sizeof(err));
        if (rc < 0)
                return fail(r, rc, err);
        fit = (hv.queue_size - sizeof(HaMsgQueue)) / sizeof(HaMsgEntry);
        r->n = (uint16_t)(fit > HA_QUEUE_MAX_ENTRIES - 1 ? HA_QUEUE_MAX_ENTRIES - 1 : fit);
        if (hv.buf_size < PAYLOAD_START + 4 * ALIGN)
                return fail(r, -EINVAL, "the buf region is too small for the gateway "
                            "(at least 320 bytes)");
        /* Two slots, alternating, so a late write to one misses the other. */
        {
                uint64_t h = (hv.buf_size - PAYLOAD_START) / 2 / ALIGN * ALIGN;
                r->half = (uint32_t)(h > (1u << 30) ? (1u << 30) : h);
        }
        rc = ha_physmem_open(&r->mem, r->cfg.mem, r->cfg.base, err, sizeof(err));
        if (rc == 0)
                rc = ha_physmem_map(&r->mem, "the buf region", hv.buf_addr, hv.buf_size,
                                    &r->buf_map, &p, err, sizeof(err));
        if (rc < 0)
                return fail(r, rc, err);
        r->buf = p;
        r->buf_len = (size_t)hv.buf_size;
        rc = ha_physmem_map(&r->mem, "the root queue", hv.queue_addr, ha_queue_bytes(r->n),
                            &r->queue_map, &p, err, sizeof(err));
        if (rc < 0)
                return fail(r, rc, err);
        r->q = p;
        rc = ha_physmem_map(&r->mem, "the ready page", hv.ready_addr, sizeof(uint32_t),
                            &r->ready_map, &p, err, sizeof(err));
        if (rc < 0)
                return fail(r, rc, err);
        r->ready = p;
        r->next_k = r->n > FIRST_ENTRY ? FIRST_ENTRY : 0;
        r->queue_addr = hv.queue_addr;
        r->buf_addr = hv.buf_addr;
        if (shm_name)
                snprintf(r->keep_name, sizeof(r->keep_name), "%s.remote.%s", shm_name,
                         r->cfg.name);

        switch (r->cfg.bell) {
        case HA_BELL_NONE:
        case HA_BELL_FIFO:      /* opened when first rung: the peer may come later */
                break;
        case HA_BELL_MMIO:
                rc = ha_physmem_map(&r->mem, "the doorbell", r->cfg.bell_address,
                                    sizeof(uint32_t), &r->bell_map, &p, err, sizeof(err));
                if (rc < 0)
                        return fail(r, rc, err);
                r->mmio_bell = p;
                /* 0 rings nothing: it only faults the page in. */
                __atomic_store_n(r->mmio_bell, 0, __ATOMIC_RELAXED);
                break;
        case HA_BELL_IOCTL:
                r->bell_fd = open(r->cfg.bell_path, O_RDWR | O_CLOEXEC);
                if (r->bell_fd < 0) {
                        snprintf(err, sizeof(err), "cannot open doorbell %s: %s",
                                 r->cfg.bell_path, strerror(errno));
                        return fail(r, -errno, err);
                }
                r->bell_zone_ok = zone_listed(r);
                if (!r->bell_zone_ok)
                        log_warning("remote zone '%s': zone %u is not in %s's zone list (yet): "
                                    "not ringing it until it is", r->cfg.name,
                                    r->cfg.bell_zone, r->cfg.bell_path);
                break;
        }
        r->state = ready_mark_ok(r) ? HA_REMOTE_READY : HA_REMOTE_WAITING_READY;
        log_info("remote zone '%s': %s peer, root queue 0x%llx (%u entries), buf 0x%llx+0x%llx, "
                 "ready mark at 0x%llx (%s), doorbell %s, timeout %u ms", r->cfg.name,
                 ha_peer_name(r->cfg.peer), (unsigned long long)hv.queue_addr, r->n,
                 (unsigned long long)hv.buf_addr, (unsigned long long)hv.buf_size,
                 (unsigned long long)hv.ready_addr, ha_remote_state_name(r->state),
                 ha_bell_name(r->cfg.bell), r->cfg.timeout_ms);
        return 0;
}

int ha_remote_v1_new(const HaRemoteZoneConfig *cfg, const char *shm_name, HaRemoteV1 **ret)
{
        HaRemoteV1 *r = calloc(1, sizeof(*r));
        int rc;

        if (!r)
                return log_error_errno(-ENOMEM, "remote zone '%s': %m", cfg->name);
        r->cfg = *cfg;
        r->mem.fd = r->bell_fd = r->bo.tfd = r->keep_shm.fd = -1;
        r->released[0] = r->released[1] = -1;
        r->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        pthread_mutex_init(&r->lock, NULL);
        rc = start(r, shm_name);
        if (rc < 0) {
                ha_remote_v1_free(r);
                return rc;
        }
        *ret = r;
        return 0;
}

/* The record goes with the executor unless the next start needs it: a
 * request left at the peer, or an answer kept for a lease client. */
static void keep_close(HaRemoteV1 *r)
{
        bool need;

        if (!r->keep) {
                ha_privshm_close(&r->keep_shm, r->keep_name, r->keep_shm.created);
                return;
        }
        need = r->parked || r->out.active || (!r->adopt_done && r->keep->out_state == KEEP_OUT);
        if (need)
                log_notice("remote zone '%s': %s kept in /dev/shm%s for the next start",
                           r->cfg.name, r->parked ? "an answer for a lease client" :
                           "the record of the request at the peer", r->keep_name);
        ha_privshm_close(&r->keep_shm, r->keep_name, !need);
}

HaRemoteV1 *ha_remote_v1_free(HaRemoteV1 *r)
{
        if (!r)
                return NULL;
        /* Nothing is written to the peer's memory: a request at the peer
         * stays there for the next start to find. */
        ha_physmap_unmap(&r->buf_map);
        ha_physmap_unmap(&r->queue_map);
        ha_physmap_unmap(&r->ready_map);
        ha_physmap_unmap(&r->bell_map);
        ha_physmem_close(&r->mem);
        keep_close(r);
        if (r->bell_fd >= 0)
                close(r->bell_fd);
        if (r->bo_ready)
                ha_backoff_fini(&r->bo);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
}

void ha_remote_v1_cancel(HaRemoteV1 *r)
{
        if (r)
                __atomic_store_n(&r->cancel, 1, __ATOMIC_RELAXED);
}

/* ===== observing (any thread) ===== */

const char *ha_remote_v1_state(void *ctx)
{
        return ha_remote_state_name((enum ha_remote_state)get_state(ctx));
}

void ha_remote_v1_stats(void *ctx, HaStats *s)
{
        static const HaMetric rtt = HA_REMOTE_RTT_METRIC;
        HaRemoteV1 *r = ctx;
        const RemoteCounters *blk = &r->st;

        /* The engine adds name, kind, state and its own job counts. */
        ha_stat_str(s, "protocol", "v1");
        ha_stat_str(s, "peer", ha_peer_name(r->cfg.peer));
        ha_stat_str(s, "doorbell", ha_bell_name(r->cfg.bell));
        REMOTE_COUNTERS(HA_COUNTER_EMIT)
        pthread_mutex_lock(&r->lock);
        ha_stat_hist(s, &rtt, &r->rtt);
        pthread_mutex_unlock(&r->lock);
        ha_stats_section(s, "faults");
        REMOTE_FAULTS(HA_COUNTER_EMIT)
        ha_stats_leave(s);
}

/* The engine's: it owns the zone from the executor's start. */
static void executor_cancel(void *ctx)
{
        ha_remote_v1_cancel(ctx);
}

static void executor_release(void *ctx)
{
        (void)ha_remote_v1_free(ctx);
}

const HaExecutorOps ha_executor_remote_v1 = {
        .kind = "v1",
        .remote = true,
        .call = ha_remote_v1_call,
        .call_key = ha_remote_v1_call_key,
        .stats = ha_remote_v1_stats,
        .state = ha_remote_v1_state,
        .cancel = executor_cancel,
        .release = executor_release,
};
