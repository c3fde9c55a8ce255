/* SPDX-License-Identifier: MIT */
/*
 * The queue walk against corrupt shared memory: out-of-range indices,
 * cycles, links to entries on other lists, garbage heads.  Whatever a peer
 * writes, every accepted entry is collected exactly once and no bad index is
 * ever dereferenced (ASan would catch a stray access past the table).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "queue.h"

#define N 16

static HaMsgQueue *new_mem(unsigned n, size_t *len)
{
        *len = ha_queue_bytes(n);
        return calloc(1, *len);
}

static void test_layout(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(255, &len);
        const uint8_t *raw = (const uint8_t *)q;
        HaQueue hq;

        CHECK_EQ(len, 4092);    /* (4096 - 12) / 16 = 255 entries fit one page */
        CHECK_EQ(ha_queue_init(&hq, q, len - 1, 255), -EINVAL);
        CHECK_EQ(ha_queue_init(&hq, q, len, 0), -EINVAL);
        CHECK_EQ(ha_queue_init(&hq, q, len, 255), 0);
        /* Little-endian wire bytes, as the original zones read them. */
        CHECK_EQ(raw[0] | raw[1] << 8 | raw[2] << 16 | (uint32_t)raw[3] << 24, HA_MARK_IDLE);
        CHECK_EQ(raw[4] | raw[5] << 8, 255);    /* buf_size */
        CHECK_EQ(raw[6] | raw[7] << 8, 0);      /* empty_h */
        CHECK_EQ(raw[8] | raw[9] << 8, 255);    /* wait_h */
        CHECK_EQ(raw[10] | raw[11] << 8, 255);  /* proc_ing_h */
        /* entries[1] starts at byte 28: cur_idx 1 at 28+12, nxt_idx 2 at 28+14 */
        CHECK_EQ(raw[40] | raw[41] << 8, 1);
        CHECK_EQ(raw[42] | raw[43] << 8, 2);
        CHECK_EQ(q->entries[254].nxt_idx, 255);
        ha_queue_fini(&hq);
        free(q);
}

static void test_lifecycle(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(N, &len);
        uint16_t idx[N + 1], out[N];
        HaQueue hq;

        CHECK_EQ(ha_queue_init(&hq, q, len, N), 0);
        for (unsigned i = 0; i < N; i++)
                CHECK_EQ(ha_queue_acquire(&hq, &idx[i]), 0);
        CHECK_EQ(ha_queue_acquire(&hq, &idx[N]), -EAGAIN);
        CHECK_EQ(q->empty_h, N);
        for (unsigned i = 0; i < 3; i++)
                ha_queue_enqueue(&hq, idx[i]);
        /* Still a valid original-format list for a peer to walk. */
        CHECK_EQ(q->wait_h, idx[0]);
        CHECK_EQ(q->entries[idx[0]].nxt_idx, idx[1]);
        CHECK_EQ(q->entries[idx[2]].nxt_idx, N);
        CHECK_EQ(ha_queue_collect(&hq, out), 3);
        CHECK(out[0] == idx[0] && out[1] == idx[1] && out[2] == idx[2]);   /* FIFO */
        CHECK_EQ(q->wait_h, N);
        CHECK_EQ(q->proc_ing_h, N);
        CHECK_EQ(ha_queue_collect(&hq, out), 0);
        for (unsigned i = 0; i < N; i++)
                ha_queue_release(&hq, idx[i]);
        CHECK_EQ(hq.nfree, N);
        CHECK_EQ(hq.st.repairs, 0);
        ha_queue_fini(&hq);
        free(q);
}

/* Enqueue k entries, let corrupt() scribble, collect, and check that each
 * enqueued entry came out exactly once and nothing else did. */
static void run_corrupt(HaQueue *hq, unsigned k, void (*corrupt)(HaMsgQueue *q, const uint16_t *idx))
{
        uint16_t idx[N], out[N];
        unsigned seen[N] = { 0 };
        size_t got;

        for (unsigned i = 0; i < k; i++) {
                CHECK_EQ(ha_queue_acquire(hq, &idx[i]), 0);
                ha_queue_enqueue(hq, idx[i]);
        }
        corrupt(hq->q, idx);
        got = ha_queue_collect(hq, out);
        CHECK_EQ(got, k);
        for (size_t i = 0; i < got; i++) {
                CHECK(out[i] < N);
                if (out[i] < N)
                        seen[out[i]]++;
        }
        for (unsigned i = 0; i < k; i++)
                CHECK_EQ(seen[idx[i]], 1);
        for (unsigned i = 0; i < k; i++)
                ha_queue_release(hq, idx[i]);
        CHECK_EQ(hq->nfree, N);
}

static void c_out_of_range(HaMsgQueue *q, const uint16_t *idx)
{
        q->entries[idx[1]].nxt_idx = 300;
}

static void c_cycle(HaMsgQueue *q, const uint16_t *idx)
{
        q->entries[idx[3]].nxt_idx = idx[1];
}

static void c_self_loop(HaMsgQueue *q, const uint16_t *idx)
{
        q->entries[idx[0]].nxt_idx = idx[0];
}

static void c_head_garbage(HaMsgQueue *q, const uint16_t *idx)
{
        (void)idx;
        q->wait_h = 0xFFFF;
}

static void c_truncated(HaMsgQueue *q, const uint16_t *idx)
{
        q->entries[idx[0]].nxt_idx = N;        /* drops the rest of the list */
}

static void c_link_to_free(HaMsgQueue *q, const uint16_t *idx)
{
        /* Point into the free list: those entries are not ours to run. */
        q->entries[idx[1]].nxt_idx = q->empty_h;
}

static void c_proc_garbage(HaMsgQueue *q, const uint16_t *idx)
{
        (void)idx;
        q->proc_ing_h = 5;     /* a peer claims entry 5 is being processed */
}

static void test_corrupt_lists(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(N, &len);
        HaQueue hq;

        CHECK_EQ(ha_queue_init(&hq, q, len, N), 0);
        run_corrupt(&hq, 5, c_out_of_range);
        CHECK_EQ(hq.st.bad_index, 1);
        run_corrupt(&hq, 5, c_cycle);
        CHECK_EQ(hq.st.cycles, 1);
        run_corrupt(&hq, 3, c_self_loop);
        CHECK_EQ(hq.st.cycles, 2);
        run_corrupt(&hq, 4, c_head_garbage);
        CHECK_EQ(hq.st.bad_index, 2);
        run_corrupt(&hq, 4, c_truncated);
        run_corrupt(&hq, 4, c_link_to_free);
        CHECK(hq.st.bad_state >= 1);
        run_corrupt(&hq, 2, c_proc_garbage);
        CHECK_EQ(hq.st.repairs, 7);
        ha_queue_fini(&hq);
        free(q);
}

static void test_corrupt_free_list(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(N, &len);
        uint16_t a, b, c, all[N];
        HaQueue hq;

        CHECK_EQ(ha_queue_init(&hq, q, len, N), 0);
        q->empty_h = 999;
        CHECK_EQ(ha_queue_acquire(&hq, &a), 0);
        CHECK_EQ(hq.st.bad_index, 1);
        q->empty_h = a;         /* an entry that is already taken */
        CHECK_EQ(ha_queue_acquire(&hq, &b), 0);
        CHECK(b != a);
        CHECK_EQ(hq.st.bad_state, 1);
        q->entries[q->empty_h].nxt_idx = q->empty_h;    /* a cycle on the free list */
        CHECK_EQ(ha_queue_acquire(&hq, &c), 0);
        CHECK(c != a && c != b);
        /* Drain it: every entry is handed out once, then -EAGAIN. */
        unsigned n = 0;
        bool dup = false;
        all[n++] = a, all[n++] = b, all[n++] = c;
        while (n < N && ha_queue_acquire(&hq, &all[n]) == 0) {
                for (unsigned i = 0; i < n; i++)
                        dup |= all[i] == all[n];
                n++;
        }
        CHECK(!dup);
        CHECK_EQ(n, N);
        CHECK_EQ(ha_queue_acquire(&hq, &a), -EAGAIN);
        q->empty_h = 3;         /* a peer pretends something is free */
        CHECK_EQ(ha_queue_acquire(&hq, &a), -EAGAIN);
        ha_queue_fini(&hq);
        free(q);
}

/* A foreign queue (no shadow state): the walk alone must stay in bounds. */
static void test_foreign_walk(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(N, &len);
        uint16_t out[N];
        HaWalkSet w;
        unsigned why;

        CHECK_EQ(ha_walkset_init(&w, N), 0);
        for (unsigned i = 0; i < N; i++)
                q->entries[i].nxt_idx = (uint16_t)(i + 1);
        q->proc_ing_h = 2;
        q->entries[4].nxt_idx = 40000;
        CHECK_EQ(ha_list_take(q, N, &q->proc_ing_h, &w, NULL, NULL, out, N, &why), 3);
        CHECK_EQ(why, HA_WALK_BAD_INDEX);
        CHECK(out[0] == 2 && out[1] == 3 && out[2] == 4);
        CHECK_EQ(q->proc_ing_h, N);     /* the bad link is dropped, not kept */
        CHECK_EQ(q->entries[2].nxt_idx, N);

        q->proc_ing_h = 7;
        q->entries[9].nxt_idx = 8;
        CHECK_EQ(ha_list_take(q, N, &q->proc_ing_h, &w, NULL, NULL, out, N, &why), 3);
        CHECK_EQ(why, HA_WALK_CYCLE);

        /* max bounds a walk; the rest stays on the list */
        for (unsigned i = 0; i < N; i++)
                q->entries[i].nxt_idx = (uint16_t)(i + 1);
        q->proc_ing_h = 0;
        CHECK_EQ(ha_list_take(q, N, &q->proc_ing_h, &w, NULL, NULL, out, 4, &why), 4);
        CHECK_EQ(why, 0);
        CHECK_EQ(q->proc_ing_h, 4);
        CHECK_EQ(ha_list_take(q, N, &q->proc_ing_h, &w, NULL, NULL, out, N, &why), N - 4);
        CHECK_EQ(q->proc_ing_h, N);

        /* Generation stamps survive wrap-around. */
        w.gen = UINT32_MAX;
        q->proc_ing_h = 0;
        q->entries[0].nxt_idx = N;
        CHECK_EQ(ha_list_take(q, N, &q->proc_ing_h, &w, NULL, NULL, out, N, &why), 1);
        CHECK_EQ(why, 0);
        ha_walkset_fini(&w);
        free(q);
}

/* Random scribbles over the whole queue between enqueue and collect. */
static void test_random_scribbles(void)
{
        size_t len;
        HaMsgQueue *q = new_mem(N, &len);
        uint32_t seed = 12345;
        HaQueue hq;

        CHECK_EQ(ha_queue_init(&hq, q, len, N), 0);
        for (unsigned round = 0; round < 2000; round++) {
                uint16_t idx[N], out[N];
                unsigned k = 1 + round % N, seen[N] = { 0 };
                size_t got;
                bool ok = true;

                for (unsigned i = 0; i < k; i++) {
                        if (ha_queue_acquire(&hq, &idx[i]) < 0)
                                ok = false;
                        else
                                ha_queue_enqueue(&hq, idx[i]);
                }
                CHECK(ok);
                for (unsigned s = 0; s < 4; s++) {
                        seed = seed * 1103515245u + 12345u;
                        size_t at = (seed >> 8) % (len / 2);
                        ((uint16_t *)q)[at] = (uint16_t)(seed >> 16);
                }
                got = ha_queue_collect(&hq, out);
                for (size_t i = 0; i < got; i++)
                        if (out[i] < N)
                                seen[out[i]]++;
                for (unsigned i = 0; i < k; i++)
                        ok &= seen[idx[i]] == 1;
                ok &= got == k;
                CHECK(ok);
                for (unsigned i = 0; i < k; i++)
                        ha_queue_release(&hq, idx[i]);
        }
        CHECK_EQ(hq.nfree, N);
        ha_queue_fini(&hq);
        free(q);
}

int main(void)
{
        test_layout();
        test_lifecycle();
        test_corrupt_lists();
        test_corrupt_free_list();
        test_foreign_walk();
        test_random_scribbles();
        return check_done("test-queue");
}
