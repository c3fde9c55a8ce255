/* SPDX-License-Identifier: MIT */
#ifndef HA_ZRING_H
#define HA_ZRING_H

#include <stdint.h>

#include "hyperamp/zone.h"

/*
 * The lock-free steps of a zone channel (src/core/hyperamp/zone.h), shared by
 * libhyperamp (client), zones.c (daemon) and tests/unit/test-litmus.c, each
 * with the ordering it needs; docs/memory-ordering.md has the table.  Every
 * access to the lease memory here is an atomic: the other side is another
 * process, and a plain access could be torn, merged or reordered by the
 * compiler; the order between them comes only from the acquire/release
 * (seq_cst) operations named below, never from the CPU's own order.
 */

/* Client: fill in an entry's Msg.  Published by ha_zring_push(). */
static inline void ha_zring_msg_write(HaMsgEntry *en, uint16_t service, uint32_t offset,
                                      uint32_t length)
{
        __atomic_store_n(&en->msg.service_id, service, __ATOMIC_RELAXED);
        __atomic_store_n(&en->msg.offset, offset, __ATOMIC_RELAXED);
        __atomic_store_n(&en->msg.length, length, __ATOMIC_RELAXED);
        __atomic_store_n(&en->msg.flag, 0, __ATOMIC_RELAXED);
}

/*
 * Client, one producer at a time (the caller's lock): put idx on the ring
 * and move the tail.  The tail store releases the slot, the Msg and the
 * payload written before it; seq_cst because the doorbell handshake (the
 * daemon's `sleeping`) needs a total order with the load that follows.
 */
static inline void ha_zring_push(ZoneCtl *c, uint16_t idx)
{
        uint32_t t = __atomic_load_n(&c->sq_tail, __ATOMIC_RELAXED);

        __atomic_store_n(&c->sq[t & (HA_ZONE_RING - 1)], idx, __ATOMIC_RELAXED);
        __atomic_store_n(&c->sq_tail, t + 1, __ATOMIC_SEQ_CST);
}

/* Daemon: the tail.  Acquire (seq_cst, for the doorbell handshake): every
 * slot, Msg and payload pushed before it is visible after it. */
static inline uint32_t ha_zring_tail(const ZoneCtl *c)
{
        return __atomic_load_n(&c->sq_tail, __ATOMIC_SEQ_CST);
}

/* Daemon: the index at ring position pos, once ha_zring_tail() passed it. */
static inline uint16_t ha_zring_at(const ZoneCtl *c, uint32_t pos)
{
        return __atomic_load_n(&c->sq[pos & (HA_ZONE_RING - 1)], __ATOMIC_RELAXED);
}

/* Worker: result and done bit in one store, released after the result bytes. */
static inline void ha_zdone_set_flag(HaMsgEntry *en, uint16_t flag)
{
        __atomic_store_n(&en->msg.flag, flag, __ATOMIC_RELEASE);
}

/*
 * Worker, after ha_zdone_set_flag(): bump the entry's completion counter,
 * keeping it clear of HA_ZONE_WAITER.  Returns the old word: with
 * HA_ZONE_WAITER set, a futex waiter sleeps on it.  seq_cst: a release for
 * the flag, and in one total order with the client's fd_armed store and
 * word load (the daemon looks at fd_armed next).
 */
static inline uint32_t ha_zdone_bump(uint32_t *word)
{
        uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED), new;

        do
                new = ((old & ~HA_ZONE_WAITER) + 1) & ~HA_ZONE_WAITER;
        while (!__atomic_compare_exchange_n(word, &old, new, true, __ATOMIC_SEQ_CST,
                                            __ATOMIC_RELAXED));
        return old;
}

/* Client: the completion word (counter + HA_ZONE_WAITER).  Acquire
 * (seq_cst, for fd_armed): once the counter moved, the flag and the
 * result bytes published before it are visible. */
static inline uint32_t ha_zdone_load(const uint32_t *word)
{
        return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}

/* Client: the flag, once the counter moved. */
static inline uint16_t ha_zdone_flag(const HaMsgEntry *en)
{
        return __atomic_load_n(&en->msg.flag, __ATOMIC_ACQUIRE);
}

#endif
