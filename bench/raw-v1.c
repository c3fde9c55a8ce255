/* SPDX-License-Identifier: MIT */
/*
 * raw-v1: the smallest correct HyperAMP v1 root-zone client, for measuring
 * what the protocol itself costs (the baseline for hyperampd's v1 gateway)
 * and for checking the peer simulators (tests/peers/v1peer).  One process,
 * one request at a time (stop-and-wait), spinning for completion.
 *
 *   raw-v1 --shm-config F --mem F [--base HEX] --peer linux|freertos|sel4
 *          [--doorbell FIFO] [--service ID] [--data TEXT | --size N]
 *          [--requests N] [--timeout-ms N] [--rering-ms N] [--show]
 *
 * Each request, in the order the peers need:
 *   wait for IDLE; check the queue still has the size we formatted (a peer
 *   that restarted re-formats it: wait for its ready mark, format again and
 *   resend); payload at buf offset 64 (64-aligned, padded to 64); entries 4
 *   and 6 in turn; service_id, offset, barrier, length last; nxt_idx, then
 *   proc_ing_h, then BUSY, then the doorbell; spin until deal_state, then
 *   until service_result is set, then until IDLE; check what came back;
 *   release: length 0, barrier, flag 0.  Not answered after --rering-ms:
 *   ring again; after --timeout-ms: fail (exit 3).  The seL4 peer polls and
 *   may move its cursor to 0 under us: proc_ing_h is put back while the
 *   entry is not done.
 *
 * Prints one line:
 *   raw-v1: requests=N ok=N failed=N timeouts=N req_s=R p50_us=P p99_us=Q
 *           hist_p50_us=P hist_p99_us=Q reformats=N rerings=N reasserts=N twice=N idle_early=N
 *           result_first=N done_no_result=N scribbled=N bad_readback=N
 * p50_us/p99_us are exact (sorted samples); hist_* are the same samples
 * through hyperampd's histogram (src/core/hist.c: a bucket's upper bound,
 * up to 12.5% high), as the gateway's round_trip_us is reported, so the
 * two compare like with like (bench/gateway.py).
 * (--show: first the first reply, "reply: 16 4e 2c 2f 12").  Exit 0 when
 * every reply was right, 1 when one was wrong, 3 on a timeout, 2 on usage
 * or set-up errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "devmem.h"
#include "hist.h"
#include "queue.h"
#include "v1sim.h"

#define PAYLOAD_OFF 64u         /* past the Linux "Test" and FreeRTOS A's memset */
#define ALIGN 64u
#define ENTRY_A 4               /* past the header's cache line; never k+1 of each other */
#define ENTRY_B 6
#define RESULT_WAIT_NS 100000000u
#define MAX_RESENDS 3

typedef struct Drv {
        V1Map m;
        enum v1sim_peer peer;
        int bell_fd;
        uint16_t n;                     /* buf_size we formatted */
        uint16_t service;
        uint64_t timeout_ns, rering_ns, ready_timeout_ns;
        struct {
                uint64_t ok, failed, timeouts, reformats, rerings, reasserts, twice;
                uint64_t idle_early, result_first, done_no_result, scribbled, bad_readback;
        } st;
} Drv;

static uint32_t mark(const uint32_t *w)
{
        return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

static void ring(Drv *d)
{
        uint8_t b = 1;

        /* A full FIFO already holds rings the peer has not read. */
        if (d->bell_fd >= 0 && write(d->bell_fd, &b, 1) < 0 && errno != EAGAIN)
                v1sim_die("doorbell write: %s", strerror(errno));
}

/* Spin until cond holds or the deadline passes (the clock read every 256
 * turns). */
static bool spin_until(bool (*cond)(Drv *, void *), Drv *d, void *arg, uint64_t deadline)
{
        for (unsigned i = 0;; i++) {
                if (cond(d, arg))
                        return true;
                if ((i & 255) == 0 && v1sim_now_ns() >= deadline)
                        return cond(d, arg);
                cpu_relax();
        }
}

static bool is_idle(Drv *d, void *arg)
{
        (void)arg;
        return mark(&d->m.q->working_mark) == HA_MARK_IDLE;
}

static bool is_ready(Drv *d, void *arg)
{
        uint32_t v = mark(d->m.ready);

        (void)arg;
        return v == HA_MARK_INITIALIZED || v == HA_MARK_IDLE;
}

static bool has_result(Drv *d, void *arg)
{
        HaMsgEntry *e = arg;

        (void)d;
        return __atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_RESULT_MASK;
}

/* Once per peer lifetime: every entry free and linked, IDLE last. */
static void format(Drv *d)
{
        HaMsgQueue *q = d->m.q;

        for (unsigned i = 0; i < d->n; i++) {
                HaMsgEntry *e = &q->entries[i];

                ha_st32(&e->msg.length, 0);
                ha_st16(&e->msg.flag, 0);
                ha_st16(&e->msg.service_id, 0);
                ha_st32(&e->msg.offset, 0);
                ha_st16(&e->cur_idx, (uint16_t)i);
                ha_st16(&e->nxt_idx, (uint16_t)(i + 1));
        }
        ha_st16(&q->buf_size, d->n);
        ha_st16(&q->empty_h, 0);
        ha_st16(&q->wait_h, d->n);
        ha_st16(&q->proc_ing_h, d->n);
        __atomic_store_n(&q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
}

/* The peer (re)started: wait for its ready mark and for it to stop
 * writing the root queue (IDLE is its last store), then format. */
static bool resync(Drv *d, uint64_t deadline)
{
        if (!spin_until(is_ready, d, NULL, deadline) || !spin_until(is_idle, d, NULL, deadline))
                return false;
        format(d);
        d->st.reformats++;
        return true;
}

static bool formatted(Drv *d)
{
        return ha_ld16(&d->m.q->buf_size) == d->n;
}

/* Release: length first, so a polling peer never sees "length > 0, not
 * dealt" on an entry we are done with. */
static void release(HaMsgEntry *e)
{
        __atomic_store_n(&e->msg.length, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&e->msg.flag, 0, __ATOMIC_RELEASE);
}

static bool clean(HaMsgEntry *e)
{
        return __atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE) == 0 &&
               __atomic_load_n(&e->msg.length, __ATOMIC_ACQUIRE) == 0;
}

enum outcome { OK, WRONG, TIMEOUT, RESEND };

static enum outcome wait_done(Drv *d, HaMsgEntry *e, uint16_t k, uint64_t deadline)
{
        uint64_t next_ring = v1sim_now_ns() + d->rering_ns;
        bool saw_rf = false, saw_ie = false;
        HaMsgQueue *q = d->m.q;

        for (unsigned i = 0;; i++) {
                uint16_t f = __atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE);

                if (f & HA_FLAG_DEAL_STATE)
                        return OK;
                if (!formatted(d))
                        return RESEND;
                if ((f & HA_FLAG_RESULT_MASK) && !saw_rf) {
                        saw_rf = true;
                        d->st.result_first++;
                }
                if (d->peer == V1SIM_SEL4) {
                        if (ha_ld16(&q->proc_ing_h) != k) {
                                __atomic_store_n(&q->proc_ing_h, k, __ATOMIC_RELEASE);
                                d->st.reasserts++;
                        }
                } else if (!saw_ie && mark(&q->working_mark) == HA_MARK_IDLE &&
                           !(__atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE) &
                             HA_FLAG_DEAL_STATE)) {
                        /* The flag again after the mark: a peer that
                         * answered before IDLE shows it done here. */
                        saw_ie = true;
                        d->st.idle_early++;
                }
                if ((i & 255) == 0) {
                        uint64_t now = v1sim_now_ns();

                        if (now >= deadline)
                                return TIMEOUT;
                        if (now >= next_ring) {
                                /* Duplicate rings are harmless; a lost one is not. */
                                ring(d);
                                d->st.rerings++;
                                next_ring = now + d->rering_ns;
                        }
                }
                cpu_relax();
        }
}

/* One request; resent when the peer restarted under it. */
static enum outcome one(Drv *d, unsigned i, const uint8_t *data, size_t len, uint8_t *wire,
                        uint8_t *expect, uint8_t *got, bool show)
{
        uint16_t k = (i & 1) ? ENTRY_B : ENTRY_A, prev = (i & 1) ? ENTRY_A : ENTRY_B;
        HaMsgQueue *q = d->m.q;
        HaMsgEntry *e = &q->entries[k];
        uint64_t deadline = v1sim_now_ns() + d->timeout_ns;
        size_t wlen, padded;
        enum outcome o;
        uint16_t f;
        bool bad;

        v1sim_expect(d->peer, d->service, data, len, wire, expect, &wlen);
        padded = (wlen + ALIGN - 1) / ALIGN * ALIGN;
        memset(wire + wlen, 0, padded - wlen);
        for (unsigned tries = 0;; tries++) {
                if (!spin_until(is_idle, d, NULL, deadline)) {
                        fprintf(stderr, "raw-v1: request %u: the peer never set IDLE\n", i);
                        return TIMEOUT;
                }
                if (!formatted(d) && !resync(d, deadline))
                        return TIMEOUT;
                if (!clean(e))
                        release(e);
                ha_devmem_write(d->m.buf + PAYLOAD_OFF, wire, padded);
                ha_st16(&e->msg.service_id, d->service);
                ha_st32(&e->msg.offset, PAYLOAD_OFF);
                ha_st16(&e->nxt_idx, d->n);
                /* Length last: a polling peer serves as soon as it is set. */
                __atomic_store_n(&e->msg.length, (uint32_t)wlen, __ATOMIC_RELEASE);
                __atomic_store_n(&q->proc_ing_h, k, __ATOMIC_RELEASE);
                __atomic_store_n(&q->working_mark, HA_MARK_BUSY, __ATOMIC_RELEASE);
                ring(d);
                o = wait_done(d, e, k, deadline);
                if (o != RESEND)
                        break;
                if (tries == MAX_RESENDS || !resync(d, deadline))
                        return TIMEOUT;
        }
        if (o == TIMEOUT) {
                fprintf(stderr, "raw-v1: request %u timed out (flag 0x%04x, mark 0x%08x)\n", i,
                        ha_ld16(&e->msg.flag), mark(&q->working_mark));
                return TIMEOUT;
        }
        /* Every peer writes deal_state before the result. */
        if (!has_result(d, e)) {
                d->st.done_no_result++;
                (void)spin_until(has_result, d, e, v1sim_now_ns() + RESULT_WAIT_NS);
        }
        /* The peer touches the queue until IDLE. */
        if (!spin_until(is_idle, d, NULL, deadline)) {
                fprintf(stderr, "raw-v1: request %u: done but never IDLE\n", i);
                return TIMEOUT;
        }
        f = __atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE);
        bad = (f & HA_FLAG_RESERVED) || ha_ld16(&e->msg.service_id) != d->service ||
              ha_ld32(&e->msg.offset) != PAYLOAD_OFF || ha_ld32(&e->msg.length) != wlen;
        if (bad)
                d->st.bad_readback++;
        ha_devmem_read(got, d->m.buf + PAYLOAD_OFF, wlen);
        release(e);
        if (!clean(&q->entries[prev])) {
                /* A late second answer to the previous request. */
                d->st.twice++;
                release(&q->entries[prev]);
        }
        if (ha_ld16(&q->empty_h) != 0 || ha_ld16(&q->wait_h) != d->n) {
                d->st.scribbled++;
                ha_st16(&q->empty_h, 0);
                ha_st16(&q->wait_h, d->n);
        }
        if (show) {
                printf("reply:");
                for (size_t j = 0; j < len; j++)
                        printf(" %02x", got[j]);
                printf("\n");
        }
        if (bad || ha_flag_result(f) != HA_RESULT_SUCCESS || memcmp(got, expect, wlen)) {
                fprintf(stderr, "raw-v1: request %u: wrong reply (flag 0x%04x%s)\n", i, f,
                        bad ? ", entry fields changed" : "");
                return WRONG;
        }
        return OK;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "shm-config", required_argument, NULL, 'c' },
                { "mem", required_argument, NULL, 'm' },
                { "base", required_argument, NULL, 'b' },
                { "peer", required_argument, NULL, 'p' },
                { "doorbell", required_argument, NULL, 'd' },
                { "service", required_argument, NULL, 's' },
                { "data", required_argument, NULL, 'D' },
                { "size", required_argument, NULL, 'S' },
                { "requests", required_argument, NULL, 'n' },
                { "timeout-ms", required_argument, NULL, 't' },
                { "rering-ms", required_argument, NULL, 'r' },
                { "ready-timeout-ms", required_argument, NULL, 'R' },
                { "show", no_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        const char *cfg = NULL, *mem = NULL, *bell = NULL, *text = NULL, *peer = NULL;
        Drv d = { .bell_fd = -1, .service = 1 };
        uint64_t base = 0, size = 64, requests = 1000, timeout_ms = 1000, rering_ms = 0;
        uint64_t ready_ms = 5000, *lat, t0, total, p50, p99;
        static HaHist hist;
        uint8_t *data, *wire, *expect, *got;
        enum outcome worst = OK;
        bool show = false;
        char err[512];
        size_t len, cap;
        int c;

        v1sim_prog = "raw-v1";
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'c': cfg = optarg; break;
                case 'm': mem = optarg; break;
                case 'b':
                        if (ha_hvcfg_parse_hex(optarg, &base) < 0)
                                v1sim_die("--base: not a hex number: %s", optarg);
                        break;
                case 'p': peer = optarg; break;
                case 'd': bell = optarg; break;
                case 's': d.service = (uint16_t)v1sim_num("--service", optarg, 65535); break;
                case 'D': text = optarg; break;
                case 'S': size = v1sim_num("--size", optarg, 1u << 20); break;
                case 'n': requests = v1sim_num("--requests", optarg, 100000000u); break;
                case 't': timeout_ms = v1sim_num("--timeout-ms", optarg, 3600000u); break;
                case 'r': rering_ms = v1sim_num("--rering-ms", optarg, 3600000u); break;
                case 'R': ready_ms = v1sim_num("--ready-timeout-ms", optarg, 3600000u); break;
                case 'w': show = true; break;
                case 'h':
                        printf("see the comment at the top of bench/raw-v1.c\n");
                        return 0;
                default: return 2;
                }
        }
        if (optind != argc || !cfg || !mem || !peer || v1sim_peer_parse(peer, &d.peer) < 0)
                v1sim_die("usage: raw-v1 --shm-config F --mem F --peer linux|freertos|sel4 "
                    "[--base HEX] [--doorbell FIFO] [--service ID] [--data TEXT | --size N] "
                    "[--requests N] [--timeout-ms N] [--rering-ms N] [--show]");
        if (!requests || !timeout_ms)
                v1sim_die("--requests and --timeout-ms must be at least 1");
        d.timeout_ns = timeout_ms * 1000000u;
        d.rering_ns = (rering_ms ? rering_ms : (timeout_ms + 3) / 4) * 1000000u;
        d.ready_timeout_ns = ready_ms * 1000000u;

        if (v1sim_map(&d.m, cfg, mem, base, false, err, sizeof(err)) < 0)
                v1sim_die("%s", err);
        if (d.m.cap <= ENTRY_B + 1)
                v1sim_die("the root queue holds %u entries, raw-v1 needs %u", d.m.cap, ENTRY_B + 2);
        d.n = d.m.cap;
        if (bell && strcmp(bell, "none")) {
                d.bell_fd = open(bell, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (d.bell_fd < 0)
                        v1sim_die("cannot open doorbell %s: %s", bell, strerror(errno));
        }

        len = text ? strlen(text) : (size_t)size;
        if (!len)
                v1sim_die("the payload must have at least one byte");
        cap = (len + 1 + ALIGN - 1) / ALIGN * ALIGN;
        if (PAYLOAD_OFF + cap > d.m.buf_len)
                v1sim_die("a %zu-byte payload does not fit the buf region", len);
        data = malloc(len);
        wire = malloc(cap);
        expect = malloc(cap);
        got = malloc(cap);
        lat = malloc(requests * sizeof(*lat));
        if (!data || !wire || !expect || !got || !lat)
                v1sim_die("out of memory");

        if (!spin_until(is_ready, &d, NULL, v1sim_now_ns() + d.ready_timeout_ns)) {
                fprintf(stderr, "raw-v1: the peer never marked itself ready\n");
                return 3;
        }
        format(&d);

        t0 = v1sim_now_ns();
        for (uint64_t i = 0; i < requests; i++) {
                uint64_t s = v1sim_now_ns();
                enum outcome o;

                /* A different payload each time: a stale reply cannot pass. */
                if (text)
                        memcpy(data, text, len);
                else
                        for (size_t j = 0; j < len; j++)
                                data[j] = (uint8_t)('a' + (j * 7 + i) % 26);
                o = one(&d, (unsigned)i, data, len, wire, expect, got, show && i == 0);
                lat[i] = v1sim_now_ns() - s;
                if (o == OK)
                        d.st.ok++;
                else if (o == WRONG)
                        d.st.failed++;
                if (o > worst)
                        worst = o;
                if (o == TIMEOUT) {
                        d.st.timeouts++;
                        requests = i + 1;
                        break;
                }
        }
        total = v1sim_now_ns() - t0;
        for (uint64_t i = 0; i < requests; i++)
                ha_hist_add(&hist, lat[i]);
        qsort(lat, requests, sizeof(*lat), cmp_u64);
        p50 = lat[(requests - 1) / 2];
        p99 = lat[(requests * 99 + 99) / 100 - 1];
        printf("raw-v1: requests=%llu ok=%llu failed=%llu timeouts=%llu req_s=%.0f "
               "p50_us=%.2f p99_us=%.2f hist_p50_us=%.2f hist_p99_us=%.2f reformats=%llu rerings=%llu reasserts=%llu twice=%llu "
               "idle_early=%llu result_first=%llu done_no_result=%llu scribbled=%llu "
               "bad_readback=%llu\n",
               (unsigned long long)requests, (unsigned long long)d.st.ok,
               (unsigned long long)d.st.failed, (unsigned long long)d.st.timeouts,
               (double)requests * 1e9 / (double)(total ? total : 1), (double)p50 / 1e3,
               (double)p99 / 1e3, (double)ha_hist_quantile(&hist, 0.50) / 1e3,
               (double)ha_hist_quantile(&hist, 0.99) / 1e3, (unsigned long long)d.st.reformats,
               (unsigned long long)d.st.rerings, (unsigned long long)d.st.reasserts,
               (unsigned long long)d.st.twice, (unsigned long long)d.st.idle_early,
               (unsigned long long)d.st.result_first, (unsigned long long)d.st.done_no_result,
               (unsigned long long)d.st.scribbled, (unsigned long long)d.st.bad_readback);
        fflush(stdout);
        free(data);
        free(wire);
        free(expect);
        free(got);
        free(lat);
        if (d.bell_fd >= 0)
                close(d.bell_fd);
        v1sim_unmap(&d.m);
        return worst == TIMEOUT ? 3 : worst == WRONG ? 1 : 0;
}
