/* SPDX-License-Identifier: MIT */
#ifndef HA_REGION_H
#define HA_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hyperamp/region.h"

typedef struct HaRegion {
        int fd;
        void *base;
        size_t size;
        bool unlink_on_close;
        char name[128];
        HaRegionHdr *hdr;
        void *queue_mem;
        size_t queue_len;
        unsigned queue_entries;
        uint8_t *pool;
        uint64_t pool_size;
} HaRegion;

/*
 * Create (or take over) the shm object name and lay out a queue of entries
 * and a pool of pool_size bytes in it.  An flock on the object makes a
 * second daemon on the same name fail with -EBUSY instead of corrupting the
 * first one's queue.  -EPERM when the object belongs to another user.
 */
int ha_region_open(HaRegion *r, const char *name, unsigned mode, unsigned entries,
                   uint64_t pool_size, bool persist);
void ha_region_close(HaRegion *r);
/* Write the header peers check (magic last): at start, and again after a
 * peer shrank the object and the SIGBUS guard grew it back zeroed. */
void ha_region_stamp(HaRegion *r);
/* Just the unlink of ha_region_close (unless shm_persist), keeping the
 * mapping: for an exit while a worker may still use it. */
void ha_region_unlink(HaRegion *r);

#endif
