/* SPDX-License-Identifier: MIT */
/*
 * HyperAMP shared-memory wire format.
 *
 * These layouts are shared with other zones (Linux, FreeRTOS, seL4 peers) and
 * must match the original byte for byte: Msg 12 B, MsgEntry 16 B, queue
 * header 12 B, little-endian, 4-byte alignment, u16 indices with buf_size as
 * the end-of-list marker.  The flag word is a plain u16 (not a C bit-field)
 * so that result and done bit are always published in one store.
 */
#ifndef HYPERAMP_WIRE_H
#define HYPERAMP_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Msg.flag bits */
#define HA_FLAG_DEAL_STATE   0x0001u          /* bit 0: entry processed */
#define HA_FLAG_RESULT_SHIFT 1                /* bits 1..2: service result */
#define HA_FLAG_RESULT_MASK  0x0006u
#define HA_FLAG_RESERVED     0xfff8u          /* must be zero */

/* Service results (enum MsgServiceResult of the original; WAIT does not fit) */
enum ha_result {
        HA_RESULT_NONE = 0,
        HA_RESULT_SUCCESS = 1,
        HA_RESULT_FAIL = 2,
        HA_RESULT_NOT_EXITS = 3,       /* sic: original spelling, means "no such service" */
        /* hyperampd's own, never on the v1 wire (the flag has 2 bits):
         * a remote zone did not answer in its timeout_ms ("E_TIMEOUT"). */
        HA_RESULT_TIMEOUT = 4,
};

/* 32-bit marks written in AmpMsgQueue.working_mark */
#define HA_MARK_RAW          0x00000000u
#define HA_MARK_INITIALIZED  0xEEEEEEEEu
#define HA_MARK_INITIALIZING 0xAAAAAAAAu
#define HA_MARK_DESTROYED    0xDDDDDDDDu
#define HA_MARK_BUSY         0xFFFFFFFFu
#define HA_MARK_IDLE         0xBBBBBBBBu

#define HA_QUEUE_MAX_ENTRIES 0xFFFFu

typedef struct __attribute__((aligned(4))) HaMsg {
        uint16_t flag;          /* HA_FLAG_* */
        uint16_t service_id;
        uint32_t offset;        /* from the start of the data buffer region */
        uint32_t length;
} HaMsg;

typedef struct __attribute__((aligned(4))) HaMsgEntry {
        HaMsg msg;              /* must stay first */
        uint16_t cur_idx;
        uint16_t nxt_idx;       /* buf_size terminates a list */
} HaMsgEntry;

typedef struct __attribute__((aligned(4))) HaMsgQueue {
        uint32_t working_mark;
        uint16_t buf_size;      /* number of entries, also the null index */
        uint16_t empty_h;
        uint16_t wait_h;
        uint16_t proc_ing_h;
        HaMsgEntry entries[];
} HaMsgQueue;

_Static_assert(sizeof(HaMsg) == 12, "Msg must be 12 bytes");
_Static_assert(offsetof(HaMsg, service_id) == 2, "Msg.service_id at 2");
_Static_assert(offsetof(HaMsg, offset) == 4, "Msg.offset at 4");
_Static_assert(offsetof(HaMsg, length) == 8, "Msg.length at 8");
_Static_assert(sizeof(HaMsgEntry) == 16, "MsgEntry must be 16 bytes");
_Static_assert(offsetof(HaMsgEntry, cur_idx) == 12, "MsgEntry.cur_idx at 12");
_Static_assert(offsetof(HaMsgEntry, nxt_idx) == 14, "MsgEntry.nxt_idx at 14");
_Static_assert(sizeof(HaMsgQueue) == 12, "queue header must be 12 bytes");
_Static_assert(offsetof(HaMsgQueue, buf_size) == 4, "buf_size at 4");
_Static_assert(offsetof(HaMsgQueue, empty_h) == 6, "empty_h at 6");
_Static_assert(offsetof(HaMsgQueue, wait_h) == 8, "wait_h at 8");
_Static_assert(offsetof(HaMsgQueue, proc_ing_h) == 10, "proc_ing_h at 10");
_Static_assert(offsetof(HaMsgQueue, entries) == 12, "entries at 12");

/* Bytes needed for a queue of n entries; a 4 KiB page holds 255. */
static inline size_t ha_queue_bytes(unsigned n)
{
        return sizeof(HaMsgQueue) + (size_t)n * sizeof(HaMsgEntry);
}

/* A result hyperampd adds (TIMEOUT) goes on the wire as FAIL. */
static inline uint16_t ha_flag_make(enum ha_result r)
{
        if ((unsigned)r > HA_RESULT_NOT_EXITS)
                r = HA_RESULT_FAIL;
        return (uint16_t)(HA_FLAG_DEAL_STATE | ((unsigned)r << HA_FLAG_RESULT_SHIFT));
}

static inline enum ha_result ha_flag_result(uint16_t flag)
{
        return (enum ha_result)((flag & HA_FLAG_RESULT_MASK) >> HA_FLAG_RESULT_SHIFT);
}

#endif
