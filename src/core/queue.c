/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "queue.h"

int ha_walkset_init(HaWalkSet *w, uint16_t n)
{
        w->stamp = calloc(n ? n : 1, sizeof(uint32_t));
        if (!w->stamp)
                return -ENOMEM;
        w->gen = 0;
        w->n = n;
        return 0;
}

void ha_walkset_fini(HaWalkSet *w)
{
        free(w->stamp);
        w->stamp = NULL;
}

static void walkset_next(HaWalkSet *w)
{
        if (++w->gen == 0) {
                memset(w->stamp, 0, (size_t)w->n * sizeof(uint32_t));
                w->gen = 1;
        }
}

size_t ha_list_walk(const HaMsgQueue *q, uint16_t n, uint16_t head, HaWalkSet *w,
                    ha_walk_accept_fn accept, void *userdata,
                    uint16_t *out, size_t max, unsigned *why, uint16_t *next)
{
        size_t k = 0;
        uint16_t idx = head;

        *why = 0;
        walkset_next(w);
        while (k < max && idx != n) {
                if (idx > n) {
                        *why = HA_WALK_BAD_INDEX;
                        break;
                }
                if (w->stamp[idx] == w->gen) {
                        *why = HA_WALK_CYCLE;
                        break;
                }
                if (accept && !accept(userdata, idx)) {
                        *why = HA_WALK_REJECTED;
                        break;
                }
                w->stamp[idx] = w->gen;
                out[k++] = idx;
                idx = ha_ld16(&q->entries[idx].nxt_idx);
        }
        *next = *why ? n : idx;
        return k;
}

void ha_list_cut(HaMsgQueue *q, uint16_t n, uint16_t *headp, const uint16_t *idx, size_t k,
                 uint16_t next)
{
        for (size_t i = 0; i < k; i++)
                ha_st16(&q->entries[idx[i]].nxt_idx, n);
        if (k)
                ha_crash_point("list_cut");
        ha_st16(headp, next);
}

size_t ha_list_take(HaMsgQueue *q, uint16_t n, uint16_t *headp, HaWalkSet *w,
                    ha_walk_accept_fn accept, void *userdata,
                    uint16_t *out, size_t max, unsigned *why)
{
        uint16_t next;
        size_t k = ha_list_walk(q, n, ha_ld16(headp), w, accept, userdata, out, max, why, &next);

        ha_list_cut(q, n, headp, out, k, next);
        return k;
}

void ha_queue_format(HaMsgQueue *q, uint16_t n)
{
        __atomic_store_n(&q->working_mark, HA_MARK_INITIALIZING, __ATOMIC_RELAXED);
        for (unsigned i = 0; i < n; i++) {
                HaMsgEntry *e = &q->entries[i];
                memset(&e->msg, 0, sizeof(e->msg));
                e->cur_idx = (uint16_t)i;
                e->nxt_idx = (uint16_t)(i + 1);
        }
        q->buf_size = n;
        q->empty_h = 0;
        q->wait_h = n;
        q->proc_ing_h = n;
        /* Publish the formatted queue before anyone may see it as ready. */
        __atomic_store_n(&q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
}

int ha_queue_init(HaQueue *hq, void *mem, size_t mem_len, unsigned n)
{
        HaMsgQueue *q = mem;
        int r;

        if (n == 0 || n > HA_QUEUE_MAX_ENTRIES || ha_queue_bytes(n) > mem_len)
                return -EINVAL;

        memset(hq, 0, sizeof(*hq));
        hq->state = calloc(n, 1);
        if (!hq->state)
                return -ENOMEM;
        r = ha_walkset_init(&hq->walk, (uint16_t)n);
        if (r < 0) {
                free(hq->state);
                return r;
        }

        ha_queue_format(q, (uint16_t)n);
        hq->q = q;
        hq->n = (uint16_t)n;
        hq->nfree = (uint16_t)n;
        hq->wait_tail = (uint16_t)n;
        return 0;
}

void ha_queue_fini(HaQueue *hq)
{
        free(hq->state);
        hq->state = NULL;
        ha_walkset_fini(&hq->walk);
        hq->q = NULL;
}

/* Rebuild the free list from the shadow state, lowest index first. */
static void repair_free_list(HaQueue *hq)
{
        uint16_t head = hq->n;

        for (unsigned i = hq->n; i-- > 0;)
                if (hq->state[i] == HA_ENTRY_FREE) {
                        ha_st16(&hq->q->entries[i].nxt_idx, head);
                        ha_st16(&hq->q->entries[i].cur_idx, (uint16_t)i);
                        head = (uint16_t)i;
                }
        ha_st16(&hq->q->empty_h, head);
        hq->st.repairs++;
}

int ha_queue_acquire(HaQueue *hq, uint16_t *ret_idx)
{
        for (int attempt = 0; attempt < 2; attempt++) {
                uint16_t idx = ha_ld16(&hq->q->empty_h);

                if (hq->nfree == 0)
                        return -EAGAIN;
                if (idx >= hq->n) {
                        if (idx > hq->n)
                                hq->st.bad_index++;
                        else
                                hq->st.bad_state++;     /* empty, but entries are free */
                        repair_free_list(hq);
                        continue;
                }
                if (hq->state[idx] != HA_ENTRY_FREE) {
                        hq->st.bad_state++;
                        repair_free_list(hq);
                        continue;
                }
                ha_st16(&hq->q->empty_h, ha_ld16(&hq->q->entries[idx].nxt_idx));
                ha_st16(&hq->q->entries[idx].nxt_idx, hq->n);
                hq->state[idx] = HA_ENTRY_OWNED;
                hq->nfree--;
                *ret_idx = idx;
                return 0;
        }
        /* Unreachable: a repaired list always has a valid free head. */
        return -EIO;
}

void ha_queue_release(HaQueue *hq, uint16_t idx)
{
        HaMsgEntry *e = &hq->q->entries[idx];

        memset(&e->msg, 0, sizeof(e->msg));
        ha_st16(&e->cur_idx, idx);
        ha_st16(&e->nxt_idx, ha_ld16(&hq->q->empty_h));
        ha_st16(&hq->q->empty_h, idx);
        hq->state[idx] = HA_ENTRY_FREE;
        hq->nfree++;
}

void ha_queue_enqueue(HaQueue *hq, uint16_t idx)
{
        HaMsgEntry *e = &hq->q->entries[idx];

        ha_st16(&e->nxt_idx, hq->n);
        /* Append through our private tail; the shared list stays a valid
         * original-format list that a peer can walk from wait_h. */
        /* Release: a peer that follows the link sees the filled-in Msg. */
        if (hq->wait_tail < hq->n && hq->state[hq->wait_tail] == HA_ENTRY_WAITING &&
            ha_ld16(&hq->q->wait_h) != hq->n)
                __atomic_store_n(&hq->q->entries[hq->wait_tail].nxt_idx, idx, __ATOMIC_RELEASE);
        else
                __atomic_store_n(&hq->q->wait_h, idx, __ATOMIC_RELEASE);
        hq->wait_tail = idx;
        hq->state[idx] = HA_ENTRY_WAITING;
        hq->nwaiting++;
}

static bool accept_waiting(void *userdata, uint16_t idx)
{
        HaQueue *hq = userdata;
        return hq->state[idx] == HA_ENTRY_WAITING;
}

size_t ha_queue_collect(HaQueue *hq, uint16_t *out)
{
        HaMsgQueue *q = hq->q;
        unsigned why;
        size_t k;

        if (hq->nwaiting == 0)
                return 0;

        /* transfer: the whole wait list becomes the processing list */
        if (ha_ld16(&q->proc_ing_h) == hq->n) {
                ha_st16(&q->proc_ing_h, ha_ld16(&q->wait_h));
                ha_st16(&q->wait_h, hq->n);
                hq->wait_tail = hq->n;
        }
        k = ha_list_take(q, hq->n, &q->proc_ing_h, &hq->walk, accept_waiting, hq,
                         out, hq->n, &why);
        for (size_t i = 0; i < k; i++)
                hq->state[out[i]] = HA_ENTRY_RUNNING;

        if (why & HA_WALK_BAD_INDEX)
                hq->st.bad_index++;
        if (why & HA_WALK_CYCLE)
                hq->st.cycles++;
        if (why & HA_WALK_REJECTED)
                hq->st.bad_state++;

        if (k != hq->nwaiting) {
                /* The shared lists lied: recover every accepted entry from
                 * the shadow state, so none is lost or run twice. */
                for (unsigned i = 0; i < hq->n; i++)
                        if (hq->state[i] == HA_ENTRY_WAITING) {
                                ha_st16(&q->entries[i].nxt_idx, hq->n);
                                hq->state[i] = HA_ENTRY_RUNNING;
                                out[k++] = (uint16_t)i;
                        }
                ha_st16(&q->wait_h, hq->n);
                ha_st16(&q->proc_ing_h, hq->n);
                hq->wait_tail = hq->n;
                hq->st.repairs++;
        }
        hq->nwaiting = 0;
        return k;
}
