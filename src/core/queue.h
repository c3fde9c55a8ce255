/* SPDX-License-Identifier: MIT */
#ifndef HA_QUEUE_H
#define HA_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hyperamp/wire.h"
#include "shmio.h"     /* every list head and link goes through ha_ld16/ha_st16 */

/* Why a list walk stopped early. */
enum {
        HA_WALK_BAD_INDEX = 1u << 0,    /* a link pointed past the entry table */
        HA_WALK_CYCLE = 1u << 1,        /* a link led back to a visited entry */
        HA_WALK_REJECTED = 1u << 2,     /* the accept callback refused an entry */
};

/*
 * Visited-set for cycle detection: one generation stamp per entry, so that a
 * walk costs O(entries walked), not O(queue size).
 */
typedef struct HaWalkSet {
        uint32_t *stamp;
        uint32_t gen;
        uint16_t n;
} HaWalkSet;

int ha_walkset_init(HaWalkSet *w, uint16_t n);
void ha_walkset_fini(HaWalkSet *w);

typedef bool (*ha_walk_accept_fn)(void *userdata, uint16_t idx);

/*
 * Unlink up to max entries from the list whose head is *headp and store their
 * indices in out[].  n is the trusted entry count (never the buf_size read
 * back from shared memory).  A bad index, a cycle or an entry refused by
 * accept (may be NULL) ends the walk; the head is then set to the end marker
 * so the bad link is never followed, and the reason is returned in *why.
 * Taken entries get nxt_idx = n.
 */
size_t ha_list_take(HaMsgQueue *q, uint16_t n, uint16_t *headp, HaWalkSet *w,
                    ha_walk_accept_fn accept, void *userdata,
                    uint16_t *out, size_t max, unsigned *why);

/*
 * ha_list_take in two steps, for a caller that must record what it takes
 * before the shared list changes: walk (read only; *next is what the head
 * becomes) and cut (unlink the walked entries, set the head to next).
 */
size_t ha_list_walk(const HaMsgQueue *q, uint16_t n, uint16_t head, HaWalkSet *w,
                    ha_walk_accept_fn accept, void *userdata,
                    uint16_t *out, size_t max, unsigned *why, uint16_t *next);
void ha_list_cut(HaMsgQueue *q, uint16_t n, uint16_t *headp, const uint16_t *idx, size_t k,
                 uint16_t next);

/* Shadow state the owning daemon keeps for each entry it manages. */
enum ha_entry_state {
        HA_ENTRY_FREE = 0,
        HA_ENTRY_OWNED,         /* taken from the free list, being filled */
        HA_ENTRY_WAITING,       /* on the wait list */
        HA_ENTRY_RUNNING,       /* collected, with the service */
};

typedef struct HaQueueStats {
        uint64_t bad_index;     /* out-of-range links seen */
        uint64_t cycles;        /* list cycles seen */
        uint64_t bad_state;     /* links to entries that were not on that list */
        uint64_t repairs;       /* lists rebuilt from the shadow state */
} HaQueueStats;

/*
 * A queue owned by this process: it formats the shared queue once and is the
 * only writer of its free list.  The private shadow state is the truth; the
 * shared lists are checked against it on every use and rebuilt from it when
 * a peer corrupted them, so no accepted entry is ever lost.
 * Not thread-safe: one thread (the event loop) drives it.
 */
typedef struct HaQueue {
        HaMsgQueue *q;
        uint16_t n;
        uint16_t nfree;
        uint16_t nwaiting;
        uint16_t wait_tail;
        uint8_t *state;
        HaWalkSet walk;
        HaQueueStats st;
} HaQueue;

/* Format a queue in the original layout: every entry on the free list,
 * wait and proc_ing empty, working_mark IDLE (published last). */
void ha_queue_format(HaMsgQueue *q, uint16_t n);

/* mem must hold ha_queue_bytes(n) bytes; n in 1..0xFFFF. */
int ha_queue_init(HaQueue *hq, void *mem, size_t mem_len, unsigned n);
void ha_queue_fini(HaQueue *hq);

static inline HaMsgEntry *ha_queue_entry(HaQueue *hq, uint16_t idx)
{
        return &hq->q->entries[idx];
}

/* Take a free entry: 0, or -EAGAIN when every entry is in use. */
int ha_queue_acquire(HaQueue *hq, uint16_t *ret_idx);
/* Return an OWNED or RUNNING entry to the free list. */
void ha_queue_release(HaQueue *hq, uint16_t idx);
/* Append an OWNED entry to the wait list (FIFO). */
void ha_queue_enqueue(HaQueue *hq, uint16_t idx);
/*
 * Hand the wait list to the service side (wait -> proc_ing, as the original
 * protocol does) and take every entry of it.  out must have room for n
 * indices.  Entries come out in submission order, as RUNNING.
 */
size_t ha_queue_collect(HaQueue *hq, uint16_t *out);

#endif
