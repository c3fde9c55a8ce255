/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the v1 channel against a hostile client zone and a damaged
 * journal.  The input supplies the client's root queue (header and
 * entries), the data buffer, and the journal left by a "previous run"
 * (header fields and per-entry records).  The target runs the channel's
 * own code on it: crash recovery, then as many take/run rounds as the queue
 * offers, the same steps scan() and the workers take (without the event
 * loop and the worker pool).  ASan catches any access outside the buffer,
 * the queue or the journal; the checks below catch a recovered batch with
 * an index out of range, twice, or not TAKEN, and an entry left unanswered.
 *
 * v1chan.c is compiled into this target, so its static functions are the
 * ones under test.
 */
#include "../src/daemon/v1chan.c"

#define CAP_MAX 32
#define BUF_LEN 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t take(const uint8_t **data, size_t *size, void *out, size_t n)
{
        size_t k = n < *size ? n : *size;

        memset(out, 0, n);
        memcpy(out, *data, k);
        *data += k;
        *size -= k;
        return k;
}

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz-v1: %s\n", what);
                abort();
        }
}

/* Run a batch the way the workers do, then finish it as batch_done() does.
 * Each entry is answered, unless the queue is no longer as the batch left
 * it (the client formatted it: the batch is lost), and then its flag is
 * left exactly as it was. */
static void run_batch(HaV1Chan *c, size_t k)
{
        static const HaRun run = { .ops = &ha_executor_local };

        __atomic_store_n(&c->lost, false, __ATOMIC_RELAXED);    /* as dispatch() */
        for (size_t i = 0; i < k; i++) {
                uint16_t before;

                check(c->batch[i] < c->n, "batch index out of range");
                before = c->q->entries[c->batch[i]].msg.flag;
                v1_run(c, c->batch[i], &run);
                check(c->jent[c->batch[i]].state == HA_J_FREE, "entry not FREE after its run");
                if (c->slots[c->batch[i]].why == HA_V1_LOST)
                        check(c->lost && c->q->entries[c->batch[i]].msg.flag == before,
                              "a lost entry was published");
                else
                        check(c->q->entries[c->batch[i]].msg.flag & HA_FLAG_DEAL_STATE,
                              "entry not answered");
        }
        c->jh->batch_k = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t jmem[4096 * 3];          /* header page, records, staging */
        uint8_t cap_byte = 0, seen[CAP_MAX];
        HaV1Chan c;
        JHdr want;
        HaHvConfig hv = { .queue_addr = 0x1000, .buf_addr = 0x2000 };
        size_t k;

        ha_log_set_level(LOG_EMERG);
        memset(&c, 0, sizeof(c));
        snprintf(c.cfg.name, sizeof(c.cfg.name), "fuzz");
        take(&data, &size, &cap_byte, 1);
        c.cap = (uint16_t)(1 + cap_byte % CAP_MAX);
        c.buf_len = BUF_LEN;
        c.q = calloc(1, ha_queue_bytes(c.cap));
        c.buf = calloc(1, BUF_LEN);
        c.batch = calloc((size_t)c.cap + 1, sizeof(*c.batch));
        c.slots = calloc(c.cap, sizeof(*c.slots));
        c.held = calloc(c.cap, 1);
        if (!c.q || !c.buf || !c.batch || !c.slots || !c.held ||
            ha_walkset_init(&c.walk, c.cap) < 0)
                abort();

        /* The client's memory and the previous run's journal, as given. */
        take(&data, &size, c.q, ha_queue_bytes(c.cap));
        take(&data, &size, (void *)c.buf, 256);
        journal_layout(&c, &want, &hv);
        check(want.stage_off + want.stage_size <= sizeof(jmem), "journal layout");
        memset(jmem, 0, sizeof(jmem));
        c.jh = (JHdr *)(void *)jmem;
        *c.jh = want;
        c.jent = (HaJrec *)(void *)(jmem + want.ent_off);
        c.stage = jmem + want.stage_off;
        journal_bind(&c, want.stage_size);
        take(&data, &size, &c.jh->batch_k, sizeof(c.jh->batch_k));
        take(&data, &size, &c.jh->n, sizeof(c.jh->n));
        take(&data, &size, &c.jh->batch_head, sizeof(c.jh->batch_head));
        take(&data, &size, c.jent, (size_t)c.cap * sizeof(HaJrec));
        take(&data, &size, c.stage, 256);

        c.n = ha_ld16(&c.q->buf_size);
        if (c.n == 0 || c.n > c.cap)
                c.n = c.cap;
        k = journal_recover(&c);
        check(k <= c.n, "recovered more than the queue holds");
        memset(seen, 0, sizeof(seen));
        for (size_t i = 0; i < k; i++) {
                check(c.batch[i] < c.n, "recovered index out of range");
                check(!seen[c.batch[i]], "recovered twice");
                check(c.jent[c.batch[i]].state == HA_J_TAKEN, "recovered entry not TAKEN");
                seen[c.batch[i]] = 1;
        }
        for (unsigned i = 0; i < c.cap; i++)
                check(c.jent[i].state == HA_J_FREE || (i < c.n && seen[i]),
                      "a record left neither FREE nor queued to run");
        run_batch(&c, k);

        /* Then what scan() does, while the client rewrites its queue. */
        for (unsigned round = 0; round < 4 && size; round++) {
                uint16_t head, next;
                unsigned why;

                take(&data, &size, c.q, sizeof(HaMsgQueue) + (size_t)c.n * sizeof(HaMsgEntry) / 2);
                head = ha_ld16(&c.q->proc_ing_h);
                k = ha_list_walk(c.q, c.n, head, &c.walk, NULL, NULL, c.batch, (size_t)c.n + 1,
                                 &why, &next);
                check(k <= c.n, "walk longer than the queue");
                if (k)
                        journal_take(&c, k, head);
                ha_list_cut(c.q, c.n, &c.q->proc_ing_h, c.batch, k, next);
                run_batch(&c, k);
        }

        ha_walkset_fini(&c.walk);
        free(c.q);
        free((void *)c.buf);
        free(c.batch);
        free(c.slots);
        free(c.held);
        return 0;
}
