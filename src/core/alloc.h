/* SPDX-License-Identifier: MIT */
#ifndef HA_ALLOC_H
#define HA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/*
 * Buddy allocator for the shared data-buffer pool.  It hands out offsets
 * into the pool, never pointers, so the same allocation means the same
 * thing in every zone that maps the pool.  All bookkeeping lives outside the
 * pool: peers can scribble over buffer bytes but never over the free lists.
 * Thread-safe.
 */

#define HA_ALLOC_MIN_BLOCK 64u

typedef struct HaAlloc HaAlloc;

typedef struct HaAllocStats {
        uint64_t pool_bytes;
        uint64_t bytes_in_use;      /* rounded block sizes */
        uint64_t requested_in_use;  /* bytes callers asked for */
        uint64_t buffers_in_use;
        uint64_t largest_free;      /* biggest single allocation possible now */
        uint64_t alloc_failures;    /* -ENOMEM returns */
        uint64_t bad_frees;         /* -EINVAL returns from ha_alloc_put */
} HaAllocStats;

/* pool_size must be a non-zero multiple of HA_ALLOC_MIN_BLOCK and < 4 GiB. */
int ha_alloc_new(uint64_t pool_size, HaAlloc **ret);
HaAlloc *ha_alloc_free(HaAlloc *a);

/* 0 and *ret_off on success; -EINVAL for size 0 or larger than the pool;
 * -ENOMEM when no block is free right now. */
int ha_alloc_get(HaAlloc *a, size_t size, uint32_t *ret_off);

/* -EINVAL unless off is the start of a live allocation (catches double frees). */
int ha_alloc_put(HaAlloc *a, uint32_t off);

void ha_alloc_stats(HaAlloc *a, HaAllocStats *ret);

#endif
