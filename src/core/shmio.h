/* SPDX-License-Identifier: MIT */
#ifndef HA_SHMIO_H
#define HA_SHMIO_H

#include <stdint.h>

/*
 * Single accesses to memory another party may rewrite at any moment (a
 * queue another zone shares, a /dev/mem mapping): one aligned load or
 * store of exactly that width, never torn, cached or merged.  They imply
 * no ordering: publish with acquire/release or a fence as well, and
 * validate every value read before using it.
 */
static inline uint16_t ha_ld16(const uint16_t *p)
{
        return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void ha_st16(uint16_t *p, uint16_t v)
{
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline uint32_t ha_ld32(const uint32_t *p)
{
        return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void ha_st32(uint32_t *p, uint32_t v)
{
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

#endif
