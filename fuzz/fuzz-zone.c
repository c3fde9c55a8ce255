/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: a zone lease handed back after a daemon crash, written by a
 * hostile client.  The input supplies the lease's control page (ring, head,
 * tail), the first entries' Msgs, their completion words and journal
 * records, and the pool and staging bytes.  The target runs the daemon's
 * own code on it: zone_recover(), the re-runs it hands over, then the
 * ring, the way a polling worker serves it (inline, no pool).  ASan catches
 * any access outside the lease; the checks below catch an entry answered
 * that the rules say must not be, one left unanswered that must be, or one
 * left marked running.
 *
 * zones.c is compiled into this target, so its static functions are the
 * ones under test.
 */
#include "../src/daemon/zones.c"

#define POOL 4096u
#define NENT 16u                /* entries the input describes; the rest stay zero */
#define WORD_MASK 0x7fffffffu

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void take(const uint8_t **data, size_t *size, void *out, size_t n)
{
        size_t k = n < *size ? n : *size;

        memcpy(out, *data, k);
        *data += k;
        *size -= k;
}

static void check(bool ok, const char *what, unsigned idx)
{
        if (!ok) {
                fprintf(stderr, "fuzz-zone: entry %u: %s\n", idx, what);
                abort();
        }
}

/* What the recovery must do with a record, from the rules in docs/zones.md:
 * 1 answer it, 0 leave it alone. */
static unsigned must_answer(const ZoneJrec *j, uint32_t word, uint32_t head)
{
        if (j->state == HA_ZONE_J_TAKEN && j->pos - head < HA_ZONE_RING)
                return 0;       /* its batch never committed: still on the ring */
        if (j->state != HA_ZONE_J_TAKEN && j->state != HA_ZONE_J_COMMIT)
                return 0;       /* damaged */
        return (word & WORD_MASK) == j->seq;
}

/* A real engine with the zone registered as its source, made once: the
 * ring pass below runs entries through ha_engine_run_inline() as a polling
 * worker does.  No polling of its own (poll_us 0), one idle worker. */
static bool engine_for(HaZones *zs, HaZone *z, unsigned *source)
{
        static HaEngine *e;
        static unsigned id;
        static HaConfig cfg;

        if (!e) {
                struct event_base *base = event_base_new();

                ha_config_defaults(&cfg);
                cfg.workers = 1;
                cfg.poll_us = 0;
                if (!base || ha_engine_new(base, &cfg, &e) < 0 ||
                    ha_engine_add_source(e, &zone_ops, z, "zone-fuzz", HA_ZONE_ENTRIES, &id) < 0)
                        return false;
        }
        zs->engine = e;
        *source = id;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t mem[HA_ZONE_SIZE(POOL)] __attribute__((aligned(4096)));
        static HaZones zs;
        static HaZone z;
        static const HaRun run = { .ops = &ha_executor_local };
        uint32_t before[HA_ZONE_ENTRIES], head, tail;
        unsigned expect[HA_ZONE_ENTRIES] = { 0 }, on_ring[HA_ZONE_ENTRIES] = { 0 };
        ZoneView v = ha_zone_view(mem, POOL);
        size_t k;
        bool left;

        memset(mem, 0, sizeof(mem));
        take(&data, &size, &v.ctl->sq_tail, sizeof(v.ctl->sq_tail));
        take(&data, &size, &v.ctl->sq_head, sizeof(v.ctl->sq_head));
        take(&data, &size, v.ctl->sq, sizeof(v.ctl->sq));
        for (unsigned i = 0; i < NENT; i++) {
                take(&data, &size, &v.q->entries[i].msg, sizeof(v.q->entries[i].msg));
                take(&data, &size, &v.done[i].word, sizeof(v.done[i].word));
                take(&data, &size, &v.journal[i], sizeof(v.journal[i]));
        }
        take(&data, &size, v.pool, POOL);
        take(&data, &size, v.stage, POOL);
        v.ctl->magic = HA_ZONE_CTL_MAGIC;
        v.ctl->entries = HA_ZONE_ENTRIES;

        head = v.ctl->sq_head;
        tail = v.ctl->sq_tail;
        for (unsigned i = 0; i < HA_ZONE_ENTRIES; i++) {
                before[i] = v.done[i].word;
                expect[i] = must_answer(&v.journal[i], before[i], head);
        }
        if (tail - head <= HA_ZONE_RING)
                for (uint32_t p = head; p != tail; p++)
                        if (v.ctl->sq[p & (HA_ZONE_RING - 1)] < HA_ZONE_ENTRIES)
                                on_ring[v.ctl->sq[p & (HA_ZONE_RING - 1)]]++;

        memset(&z, 0, sizeof(z));
        if (!engine_for(&zs, &z, &z.source))
                abort();
        zs.pool_size = POOL;
        z.zs = &zs;
        z.memfd = z.bell_fd = z.bell_peer = z.done_fd = z.done_peer = -1;
        z.base = mem;
        z.size = sizeof(mem);
        z.pool_size = POOL;
        zone_bind(&z, mem);
        z.state = SLOT_ACTIVE;
        z.rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 0);

        k = zone_recover(&z);
        check(k <= HA_ZONE_ENTRIES, "more re-runs than entries", 0);
        for (size_t i = 0; i < k; i++) {
                uint16_t idx = z.batch[i].idx;

                check(idx < HA_ZONE_ENTRIES, "re-run index out of range", idx);
                check(expect[idx] == 1, "re-run against the rules", idx);
                zone_run(&z, idx, &run);
        }
        /* The ring after recovery, as a polling worker takes it. */
        (void)drain_pass(&z, &run, &left);
        check(!left, "ring left unserved", 0);

        for (unsigned i = 0; i < HA_ZONE_ENTRIES; i++) {
                uint32_t bumps = (v.done[i].word - before[i]) & WORD_MASK;

                check(!z.running_entry[i], "left marked running", i);
                check(bumps >= expect[i], "must be answered, was not", i);
                check(bumps <= expect[i] + on_ring[i], "answered more often than asked", i);
                if (bumps)
                        check(v.q->entries[i].msg.flag & HA_FLAG_DEAL_STATE, "answered without a result",
                              i);
        }
        return 0;
}
