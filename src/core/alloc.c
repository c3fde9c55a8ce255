/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"

#define NIL UINT32_MAX

enum {
        BLK_INNER = 0,          /* part of a larger block */
        BLK_FREE = 1,
        BLK_USED = 2,
};

struct HaAlloc {
        pthread_mutex_t lock;
        uint32_t nblocks;
        unsigned max_order;
        uint8_t *kind;          /* per min-block: BLK_* for block heads */
        uint8_t *order;         /* per head: log2 of size in min-blocks */
        uint32_t *req;          /* per used head: requested bytes */
        uint32_t *next, *prev;  /* free-list links, per free head */
        uint32_t head[33];
        HaAllocStats st;
};

static unsigned ceil_log2(uint32_t v)
{
        unsigned k = 0;
        while ((UINT32_C(1) << k) < v)
                k++;
        return k;
}

static void list_push(HaAlloc *a, uint32_t b, unsigned k)
{
        a->kind[b] = BLK_FREE;
        a->order[b] = (uint8_t)k;
        a->prev[b] = NIL;
        a->next[b] = a->head[k];
        if (a->head[k] != NIL)
                a->prev[a->head[k]] = b;
        a->head[k] = b;
}

static void list_remove(HaAlloc *a, uint32_t b, unsigned k)
{
        if (a->prev[b] != NIL)
                a->next[a->prev[b]] = a->next[b];
        else
                a->head[k] = a->next[b];
        if (a->next[b] != NIL)
                a->prev[a->next[b]] = a->prev[b];
        a->kind[b] = BLK_INNER;
}

static uint64_t largest_free_locked(const HaAlloc *a)
{
        for (int k = (int)a->max_order; k >= 0; k--)
                if (a->head[k] != NIL)
                        return (uint64_t)HA_ALLOC_MIN_BLOCK << k;
        return 0;
}

int ha_alloc_new(uint64_t pool_size, HaAlloc **ret)
{
        HaAlloc *a;

        if (pool_size == 0 || pool_size % HA_ALLOC_MIN_BLOCK || pool_size > UINT32_MAX)
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        pthread_mutex_init(&a->lock, NULL);
        a->nblocks = (uint32_t)(pool_size / HA_ALLOC_MIN_BLOCK);
        a->max_order = 31 - (unsigned)__builtin_clz(a->nblocks);
        a->kind = calloc(a->nblocks, 1);
        a->order = calloc(a->nblocks, 1);
        a->req = calloc(a->nblocks, sizeof(uint32_t));
        a->next = calloc(a->nblocks, sizeof(uint32_t));
        a->prev = calloc(a->nblocks, sizeof(uint32_t));
        if (!a->kind || !a->order || !a->req || !a->next || !a->prev) {
                ha_alloc_free(a);
                return -ENOMEM;
        }
        for (unsigned k = 0; k < (unsigned)(sizeof(a->head) / sizeof(a->head[0])); k++)
                a->head[k] = NIL;

        /* Cover the pool with the largest naturally aligned blocks that fit. */
        for (uint32_t b = 0; b < a->nblocks;) {
                unsigned k = b ? (unsigned)__builtin_ctz(b) : a->max_order;
                if (k > a->max_order)
                        k = a->max_order;
                while ((uint64_t)b + (UINT32_C(1) << k) > a->nblocks)
                        k--;
                list_push(a, b, k);
                b += UINT32_C(1) << k;
        }
        a->st.pool_bytes = pool_size;
        *ret = a;
        return 0;
}

HaAlloc *ha_alloc_free(HaAlloc *a)
{
        if (!a)
                return NULL;
        pthread_mutex_destroy(&a->lock);
        free(a->kind);
        free(a->order);
        free(a->req);
        free(a->next);
        free(a->prev);
        free(a);
        return NULL;
}

int ha_alloc_get(HaAlloc *a, size_t size, uint32_t *ret_off)
{
        uint32_t need, b;
        unsigned k, j;

        if (size == 0 || size > (uint64_t)a->nblocks * HA_ALLOC_MIN_BLOCK)
                return -EINVAL;
        need = (uint32_t)((size + HA_ALLOC_MIN_BLOCK - 1) / HA_ALLOC_MIN_BLOCK);
        k = ceil_log2(need);
        if (k > a->max_order)
                return -EINVAL;

        pthread_mutex_lock(&a->lock);
        for (j = k; j <= a->max_order && a->head[j] == NIL; j++)
                ;
        if (j > a->max_order) {
                a->st.alloc_failures++;
                pthread_mutex_unlock(&a->lock);
                return -ENOMEM;
        }
        b = a->head[j];
        list_remove(a, b, j);
        while (j > k) {
                j--;
                list_push(a, b + (UINT32_C(1) << j), j);
        }
        a->kind[b] = BLK_USED;
        a->order[b] = (uint8_t)k;
        a->req[b] = (uint32_t)size;
        a->st.bytes_in_use += (uint64_t)HA_ALLOC_MIN_BLOCK << k;
        a->st.requested_in_use += size;
        a->st.buffers_in_use++;
        pthread_mutex_unlock(&a->lock);

        *ret_off = b * HA_ALLOC_MIN_BLOCK;
        return 0;
}

int ha_alloc_put(HaAlloc *a, uint32_t off)
{
        uint32_t b = off / HA_ALLOC_MIN_BLOCK;
        unsigned k;

        pthread_mutex_lock(&a->lock);
        if (off % HA_ALLOC_MIN_BLOCK || b >= a->nblocks || a->kind[b] != BLK_USED) {
                a->st.bad_frees++;
                pthread_mutex_unlock(&a->lock);
                return -EINVAL;
        }
        k = a->order[b];
        a->st.bytes_in_use -= (uint64_t)HA_ALLOC_MIN_BLOCK << k;
        a->st.requested_in_use -= a->req[b];
        a->st.buffers_in_use--;
        a->kind[b] = BLK_INNER;

        while (k < a->max_order) {
                uint32_t buddy = b ^ (UINT32_C(1) << k);
                if ((uint64_t)buddy + (UINT32_C(1) << k) > a->nblocks ||
                    a->kind[buddy] != BLK_FREE || a->order[buddy] != k)
                        break;
                list_remove(a, buddy, k);
                if (buddy < b)
                        b = buddy;
                k++;
        }
        list_push(a, b, k);
        pthread_mutex_unlock(&a->lock);
        return 0;
}

void ha_alloc_stats(HaAlloc *a, HaAllocStats *ret)
{
        pthread_mutex_lock(&a->lock);
        *ret = a->st;
        ret->largest_free = largest_free_locked(a);
        pthread_mutex_unlock(&a->lock);
}
