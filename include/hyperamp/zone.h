/* SPDX-License-Identifier: MIT */
/*
 * Zone channels: how a client process (a "zone peer", through libhyperamp)
 * submits straight through shared memory, with no socket in the data path.
 *
 * A client attaches over the control socket ("attach") and is granted a
 * lease: one slot of the region, for as long as that connection stays open.
 * A slot holds
 *   - a control page (ZoneCtl): the submission ring,
 *   - per-entry completion words, one cache line each (a client spinning on
 *     one must not slow the worker writing the next),
 *   - an AmpMsgQueue page in the original wire layout (wire.h): the Msg of
 *     each entry says service, offset and length, and its flag the result,
 *   - a data pool slice the client allocates from on its own.
 * The client writes an entry, pushes its index on the ring and rings the
 * doorbell (a datagram socket) only if the daemon sleeps and nobody rang
 * yet, so a burst costs one wake-up.  A worker runs the service in place, publishes
 * the result in the entry's flag, bumps the entry's completion word and
 * wakes a futex waiter only if one sleeps there.  When the connection
 * closes, for whatever reason, the daemon waits for the lease's running
 * entries and takes the whole slot back: a killed client leaks nothing.
 */
#ifndef HYPERAMP_ZONE_H
#define HYPERAMP_ZONE_H

#include <stdint.h>

#include "hyperamp/wire.h"

#define HA_ZONE_RING      256u          /* submission ring slots, a power of two */
#define HA_ZONE_ENTRIES   255u          /* entries per slot: one wire page */
#define HA_ZONE_WAITER    0x80000000u   /* in a completion word: a futex waiter sleeps */
#define HA_ZONE_CTL_MAGIC 0x5a4f4e45u   /* "ZONE" */

typedef struct ZoneCtl {
        uint32_t magic;
        uint32_t epoch;                 /* grant number of this slot */
        uint32_t owner_pid;
        uint32_t entries;               /* HA_ZONE_ENTRIES */
        uint8_t pad0[48];

        /* client -> daemon */
        uint32_t sq_tail;               /* written by the client */
        uint32_t bell;                  /* 1: a doorbell write is on its way */
        uint8_t pad1[56];
        uint32_t sq_head;               /* written by the daemon */
        uint32_t sleeping;              /* 1: the daemon waits for the doorbell */
        uint32_t fd_armed;              /* 1: the client wants a completion message */
        uint8_t pad2[52];
        uint16_t sq[HA_ZONE_RING];
} ZoneCtl;

/* daemon -> client: a counter per entry, + HA_ZONE_WAITER */
typedef struct ZoneDone {
        uint32_t word;
        uint8_t pad[60];
} ZoneDone;

/* The slot's layout (the attach reply repeats it). */
#define HA_ZONE_CTL_OFF   0u
#define HA_ZONE_QUEUE_OFF 4096u
#define HA_ZONE_DONE_OFF  8192u
#define HA_ZONE_POOL_OFF  (HA_ZONE_DONE_OFF + 16384u)

_Static_assert(sizeof(ZoneDone) == 64, "a completion word per cache line");

/* Where the parts of a mapped slot are. */
typedef struct ZoneView {
        ZoneCtl *ctl;
        HaMsgQueue *q;
        ZoneDone *done;
        uint8_t *pool;
} ZoneView;

static inline ZoneView ha_zone_view(void *base)
{
        uint8_t *b = (uint8_t *)base;

        return (ZoneView){ (ZoneCtl *)(b + HA_ZONE_CTL_OFF), (HaMsgQueue *)(b + HA_ZONE_QUEUE_OFF),
                           (ZoneDone *)(b + HA_ZONE_DONE_OFF), b + HA_ZONE_POOL_OFF };
}
_Static_assert(HA_ZONE_ENTRIES * sizeof(ZoneDone) <= 16384, "completion words fit");

_Static_assert(sizeof(ZoneCtl) <= 4096, "ZoneCtl fits one page");
_Static_assert((HA_ZONE_RING & (HA_ZONE_RING - 1)) == 0, "ring size is a power of two");

#endif
