/* SPDX-License-Identifier: MIT */
/*
 * Layout of hyperampd's embedded shared-memory region (a POSIX shm object).
 * Page 0 describes the region, so a peer that attaches by name finds the
 * queue and the pool without sharing a config.  The queue itself keeps the
 * original HyperAMP wire layout (wire.h); offsets in Msg are relative to the
 * pool, as in the original's data-buffer region.
 */
#ifndef HYPERAMP_REGION_H
#define HYPERAMP_REGION_H

#include <stddef.h>
#include <stdint.h>

#define HA_REGION_MAGIC   "HYPRAMP"     /* 8 bytes with the NUL */
#define HA_REGION_VERSION 1

typedef struct HaRegionHdr {
        char magic[8];
        uint32_t version;
        uint32_t page_size;
        uint64_t queue_off;
        uint32_t queue_entries;
        uint32_t owner_pid;
        uint64_t pool_off;
        uint64_t pool_size;
} HaRegionHdr;

_Static_assert(sizeof(HaRegionHdr) == 48, "region header is 48 bytes");

#endif
