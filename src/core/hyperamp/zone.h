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
 *
 * If the daemon dies instead, the client keeps the memory and hands it to
 * the next daemon ("attach" with "resume"); that one finishes what the
 * journal says was under way and serves the rest of the ring.  The journal
 * is the daemon's: a record per entry, and a staging area as large as the
 * pool where services that change the data compute, so that a crash
 * half-way through never leaves a half-transformed buffer to be run again.
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

/*
 * The daemon's record of an entry it took off the ring (the daemon's crash
 * journal, src/daemon/journal.h, in this layout).  FREE and TAKEN records
 * are rewritten on the next take; COMMIT says the staging area holds the
 * whole result, to be copied back (the stage mirrors the pool: stage_off
 * and stage_len are written, never read back: the place is offset and
 * length).  seq is the completion counter
 * at the take: once it moved, the result is out.
 */
enum { HA_ZONE_J_FREE, HA_ZONE_J_TAKEN, HA_ZONE_J_COMMIT };

typedef struct ZoneJrec {
        uint32_t state;
        uint32_t pos;                   /* ring position it was taken from */
        uint32_t seq;
        uint16_t service;
        uint16_t flag;                  /* COMMIT: the flag to publish */
        uint32_t offset, length;
        uint32_t stage_off, stage_len;
} ZoneJrec;

/* daemon -> client: a counter per entry, + HA_ZONE_WAITER */
typedef struct ZoneDone {
        uint32_t word;
        uint8_t pad[60];
} ZoneDone;

/* The slot's layout (the attach reply repeats it). */
#define HA_ZONE_CTL_OFF   0u
#define HA_ZONE_QUEUE_OFF 4096u
#define HA_ZONE_DONE_OFF  8192u
#define HA_ZONE_JOURNAL_OFF (HA_ZONE_DONE_OFF + 16384u)
#define HA_ZONE_POOL_OFF  (HA_ZONE_JOURNAL_OFF + 8192u)
/* then the staging area, as large as the pool */
#define HA_ZONE_STAGE_OFF(pool_size) (HA_ZONE_POOL_OFF + (pool_size))
#define HA_ZONE_SIZE(pool_size)      (HA_ZONE_STAGE_OFF(pool_size) + (pool_size))

_Static_assert(sizeof(ZoneDone) == 64, "a completion word per cache line");

/* Where the parts of a mapped slot are. */
typedef struct ZoneView {
        ZoneCtl *ctl;
        HaMsgQueue *q;
        ZoneDone *done;
        ZoneJrec *journal;
        uint8_t *pool;
        uint8_t *stage;
} ZoneView;

static inline ZoneView ha_zone_view(void *base, uint64_t pool_size)
{
        uint8_t *b = (uint8_t *)base;

        return (ZoneView){ (ZoneCtl *)(b + HA_ZONE_CTL_OFF), (HaMsgQueue *)(b + HA_ZONE_QUEUE_OFF),
                           (ZoneDone *)(b + HA_ZONE_DONE_OFF),
                           (ZoneJrec *)(b + HA_ZONE_JOURNAL_OFF), b + HA_ZONE_POOL_OFF,
                           b + HA_ZONE_STAGE_OFF(pool_size) };
}
_Static_assert(HA_ZONE_ENTRIES * sizeof(ZoneDone) <= 16384, "completion words fit");
_Static_assert(sizeof(ZoneJrec) == 32, "journal records pack");
_Static_assert(HA_ZONE_ENTRIES * sizeof(ZoneJrec) <= 8192, "the journal fits");

_Static_assert(sizeof(ZoneCtl) <= 4096, "ZoneCtl fits one page");
_Static_assert((HA_ZONE_RING & (HA_ZONE_RING - 1)) == 0, "ring size is a power of two");

#endif
