/* SPDX-License-Identifier: MIT */
/*
 * Litmus test for the zone channel's lock-free hand-offs, in many threads,
 * on a real lease layout (ha_zone_view, ha_queue_format) through the same
 * zring.h steps that libhyperamp and zones.c use:
 *   - the ring: clients write a payload and a Msg, then push the index and
 *     move the tail (release); drainers load the tail (acquire) and check
 *     every entry's Msg and payload against each other;
 *   - the completion word: the drainer, acting as the worker, rewrites the
 *     payload, publishes the flag and bumps the word; the client sees the
 *     word move and only then checks the flag and the result bytes.
 * Bounded by a count of rounds and by a time budget (a few seconds under
 * qemu-user or valgrind too); no sleeps.
 *
 * What it can catch: on any machine, a missing or misplaced publish in
 * program order (the broken variants below: a tail or word moved before the
 * data); under TSan, any hand-off that lacks a happens-before edge, since
 * payload bytes are plain memory.  What it cannot: on x86 (and under
 * qemu-user on x86, which runs arm64 code on the host's strong order) a
 * relaxed store that the compiler kept in place behaves like a release, so
 * only TSan or a weakly ordered CPU shows that.  docs/memory-ordering.md.
 *
 *   test-litmus                 the real steps: must pass
 *   test-litmus broken-ring     tail moved before the entry is written
 *   test-litmus broken-done     word bumped before the result is written
 * The broken variants must fail under TSan (meson registers them there).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "check.h"
#include "clock.h"
#include "cpu.h"
#include "queue.h"
#include "zring.h"

#define CLIENTS   4
#define DRAINERS  2
#define WINDOW    8             /* requests in flight per client */
#define SLICE     64u           /* payload bytes per entry */
#define POOL      ((uint64_t)HA_ZONE_ENTRIES * SLICE)
#define MAX_ROUNDS 4000u        /* windows per client */
#define BUDGET_NS (1500ull * 1000000ull)
#define LOST_NS   (20ull * 1000000000ull)       /* a completion that never comes */

enum mode { M_OK, M_BROKEN_RING, M_BROKEN_DONE };

static enum mode mode;
static ZoneView v;
static pthread_mutex_t push_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t drain_lock, head;       /* head: under drain_lock */
static unsigned clients_left;           /* atomic */
static unsigned long long errors, checked, rounds;     /* atomic */
static uint64_t t0;

static void fail(const char *what, unsigned idx, uint32_t val)
{
        /* The first few say what went wrong; the count says how often. */
        if (__atomic_fetch_add(&errors, 1, __ATOMIC_RELAXED) < 10)
                fprintf(stderr, "litmus: %s (entry %u, value 0x%08x)\n", what, idx, val);
}

/* One turn of a bounded spin: the hint, and the core for someone else now
 * and then (2 cores, many threads). */
static void spin(unsigned *n)
{
        if (++*n % 64 == 0)
                sched_yield();
        else
                cpu_relax();
}

static uint8_t byte_of(uint32_t val, unsigned i)
{
        return (uint8_t)(val * 2654435761u >> 24) ^ (uint8_t)(i * 7u);
}

static uint16_t service_of(uint32_t val)
{
        return (uint16_t)(val ^ 0xa5a5u);
}

static uint32_t length_of(uint32_t val)
{
        return SLICE - (val & 7u);
}

/* ===== client ===== */

static void client_write(unsigned idx, uint32_t val)
{
        uint8_t *p = v.pool + (size_t)idx * SLICE;

        /* Plain memory, as a client fills hyperamp_req_data(). */
        memcpy(p, &val, sizeof(val));
        for (unsigned i = 4; i < SLICE; i++)
                p[i] = byte_of(val, i);
        ha_zring_msg_write(&v.q->entries[idx], service_of(val), idx * SLICE, length_of(val));
}

static void client_submit(unsigned idx, uint32_t val)
{
        pthread_mutex_lock(&push_lock);
        if (mode == M_BROKEN_RING) {
                /* The tail first, relaxed: as if the compiler had sunk the
                 * entry's stores below it. */
                uint32_t t = __atomic_load_n(&v.ctl->sq_tail, __ATOMIC_RELAXED);

                __atomic_store_n(&v.ctl->sq[t & (HA_ZONE_RING - 1)], (uint16_t)idx,
                                 __ATOMIC_RELAXED);
                __atomic_store_n(&v.ctl->sq_tail, t + 1, __ATOMIC_RELAXED);
                client_write(idx, val);
        } else {
                client_write(idx, val);
                ha_zring_push(v.ctl, (uint16_t)idx);
        }
        pthread_mutex_unlock(&push_lock);
}

/* Wait for the word to move past seq, then check what it published. */
static void client_check(unsigned idx, uint32_t val, uint32_t seq)
{
        const uint32_t *word = &v.done[idx].word;
        const uint8_t *p = v.pool + (size_t)idx * SLICE;
        uint64_t until = ha_now_ns() + (mode == M_OK ? LOST_NS : LOST_NS / 10);
        unsigned n = 0;
        uint32_t len = length_of(val), got;
        uint16_t flag;

        while ((ha_zdone_load(word) & ~HA_ZONE_WAITER) == seq) {
                spin(&n);
                if (n % 1024 == 0 && ha_now_ns() > until) {
                        fail("completion never came", idx, val);
                        return;
                }
        }
        flag = ha_zdone_flag(&v.q->entries[idx]);
        if (flag != ha_flag_make(HA_RESULT_SUCCESS))
                fail("word moved, flag not published", idx, flag);
        memcpy(&got, p, sizeof(got));
        if (got != ~val)
                fail("word moved, result header not written", idx, got);
        for (unsigned i = 4; i < SLICE; i++)
                if (p[i] != (uint8_t)(i < len ? ~byte_of(val, i) : byte_of(val, i))) {
                        fail("word moved, result bytes not written", idx, i);
                        break;
                }
        __atomic_fetch_add(&checked, 1, __ATOMIC_RELAXED);
}

static void *client_main(void *arg)
{
        unsigned k = (unsigned)(uintptr_t)arg, mine = (HA_ZONE_ENTRIES - k + CLIENTS - 1) / CLIENTS;
        unsigned idx[WINDOW];
        uint32_t val[WINDOW], seq[WINDOW];
        unsigned next = 0;

        for (uint32_t r = 0; r < MAX_ROUNDS && ha_now_ns() - t0 < BUDGET_NS; r++) {
                for (unsigned w = 0; w < WINDOW; w++) {
                        /* This client's entries in turn: every index gets used. */
                        idx[w] = k + CLIENTS * (next++ % mine);
                        val[w] = (uint32_t)k << 24 | ((r * WINDOW + w) & 0xffffffu);
                        /* Before the push: the word cannot move until then. */
                        seq[w] = ha_zdone_load(&v.done[idx[w]].word) & ~HA_ZONE_WAITER;
                        client_submit(idx[w], val[w]);
                }
                for (unsigned w = 0; w < WINDOW; w++)
                        client_check(idx[w], val[w], seq[w]);
                __atomic_fetch_add(&rounds, 1, __ATOMIC_RELAXED);
        }
        __atomic_fetch_sub(&clients_left, 1, __ATOMIC_RELEASE);
        return NULL;
}

/* ===== drainer (a polling worker: takes the ring and runs inline) ===== */

static void run_entry(unsigned idx)
{
        const HaMsgEntry *en = &v.q->entries[idx];
        uint16_t sid = __atomic_load_n(&en->msg.service_id, __ATOMIC_RELAXED);
        uint32_t off = __atomic_load_n(&en->msg.offset, __ATOMIC_RELAXED);
        uint32_t len = __atomic_load_n(&en->msg.length, __ATOMIC_RELAXED);
        uint16_t flag0 = __atomic_load_n(&en->msg.flag, __ATOMIC_RELAXED);
        uint8_t *p = v.pool + (size_t)idx * SLICE;
        uint32_t val, inv;

        memcpy(&val, p, sizeof(val));
        if (off != idx * SLICE || len != length_of(val) || sid != service_of(val) || flag0 != 0)
                fail("tail passed an entry whose Msg was not written", idx, val);
        for (unsigned i = 4; i < SLICE; i++)
                if (p[i] != byte_of(val, i)) {
                        fail("tail passed an entry whose payload was not written", idx, val);
                        break;
                }
        if (mode == M_BROKEN_DONE) {
                /* The word first, relaxed: the result after it. */
                __atomic_fetch_add(&v.done[idx].word, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&v.q->entries[idx].msg.flag, ha_flag_make(HA_RESULT_SUCCESS),
                                 __ATOMIC_RELAXED);
        }
        /* The "service": invert the bytes in place. */
        inv = ~val;
        memcpy(p, &inv, sizeof(inv));
        for (unsigned i = 4; i < len && i < SLICE; i++)
                p[i] = (uint8_t)~p[i];
        if (mode != M_BROKEN_DONE) {
                ha_zdone_set_flag(&v.q->entries[idx], ha_flag_make(HA_RESULT_SUCCESS));
                (void)ha_zdone_bump(&v.done[idx].word);
        }
}

static void drain_once(void)
{
        uint32_t tail = ha_zring_tail(v.ctl);

        if (tail - head > HA_ZONE_RING) {
                fail("tail out of range", 0, tail - head);
                head = tail;
        }
        for (; head != tail; head++) {
                uint16_t idx = ha_zring_at(v.ctl, head);

                if (idx >= HA_ZONE_ENTRIES) {
                        fail("index out of range", idx, head);
                        continue;
                }
                run_entry(idx);
        }
        __atomic_store_n(&v.ctl->sq_head, head, __ATOMIC_RELEASE);
}

static void *drainer_main(void *arg)
{
        unsigned n = 0;
        (void)arg;

        for (;;) {
                bool last = __atomic_load_n(&clients_left, __ATOMIC_ACQUIRE) == 0;

                if (!__atomic_exchange_n(&drain_lock, 1, __ATOMIC_ACQUIRE)) {
                        drain_once();
                        __atomic_store_n(&drain_lock, 0, __ATOMIC_RELEASE);
                }
                if (last)
                        return NULL;    /* every push came before that load */
                spin(&n);
        }
}

int main(int argc, char **argv)
{
        pthread_t cl[CLIENTS], dr[DRAINERS];
        void *mem;

        if (argc > 1 && strcmp(argv[1], "broken-ring") == 0)
                mode = M_BROKEN_RING;
        else if (argc > 1 && strcmp(argv[1], "broken-done") == 0)
                mode = M_BROKEN_DONE;
        else if (argc > 1) {
                fprintf(stderr, "usage: %s [broken-ring|broken-done]\n", argv[0]);
                return 2;
        }

        /* Shared memory, as a lease is (zeroed, page-aligned). */
        mem = mmap(NULL, HA_ZONE_SIZE(POOL), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
        CHECK(mem != MAP_FAILED);
        if (mem == MAP_FAILED)
                return check_done("litmus");
        v = ha_zone_view(mem, POOL);
        ha_queue_format(v.q, HA_ZONE_ENTRIES);
        v.ctl->entries = HA_ZONE_ENTRIES;
        __atomic_store_n(&v.ctl->magic, HA_ZONE_CTL_MAGIC, __ATOMIC_RELEASE);

        clients_left = CLIENTS;
        t0 = ha_now_ns();
        for (unsigned i = 0; i < DRAINERS; i++)
                CHECK_EQ(pthread_create(&dr[i], NULL, drainer_main, NULL), 0);
        for (unsigned i = 0; i < CLIENTS; i++)
                CHECK_EQ(pthread_create(&cl[i], NULL, client_main, (void *)(uintptr_t)i), 0);
        for (unsigned i = 0; i < CLIENTS; i++)
                pthread_join(cl[i], NULL);
        for (unsigned i = 0; i < DRAINERS; i++)
                pthread_join(dr[i], NULL);

        printf("litmus (%s): %llu requests checked in %llu windows, %u clients, %u drainers, "
               "%.2f s, %llu errors\n", argc > 1 ? argv[1] : "real steps", checked, rounds,
               CLIENTS, DRAINERS, (double)(ha_now_ns() - t0) / 1e9, errors);
        CHECK_EQ(errors, 0);
        /* Not vacuous: every client got through at least one window. */
        CHECK(rounds >= CLIENTS);
        CHECK_EQ(checked, rounds * WINDOW);
        CHECK_EQ(__atomic_load_n(&v.ctl->sq_tail, __ATOMIC_RELAXED), checked);
        munmap(mem, HA_ZONE_SIZE(POOL));
        return check_done("litmus");
}
