/* SPDX-License-Identifier: MIT */
#ifndef HA_V2RING_H
#define HA_V2RING_H

/*
 * HyperAMP v2 ("HighSpeedCProxy-compatible") rings, as the seL4 peer and
 * hvisor-tool's hyperamp_linux use them (docs/gateway.md):
 *
 *   window + 0x0000  page A: control block of the ring seL4 -> Linux
 *   window + 0x1000  page B: control block of the ring Linux -> seL4
 *   window + 0x2000  4 MiB data region, shared by BOTH rings
 *
 * Each ring: 256 indices, producer index `header`, consumer index `tail`,
 * the message at index i lives in slot i + 1, at data + (i + 1) * 4096, so
 * slots 1..256 (slot 256 = data + 0x100000 = the original bulk buffer).
 *
 * The peer owns half of every control block and writes the data region at
 * will: every index, length and offset it writes is checked here before
 * use, each failure is counted by the caller, and nothing outside the
 * mapping is ever touched.  The indices we write ourselves are kept in a
 * private record (HaV2Ring.mine); a shared value that differs from it means
 * the peer re-created the ring (or scribbled on it).
 *
 * Accesses to the mapping are aligned 16/32-bit atomics or ha_devmem_*
 * (aligned 32-bit words), never memcpy: on hardware the window is Device
 * memory.  Ordering (docs/memory-ordering.md, v2 rows): a producer writes
 * the slot, then stores `header` with release; a consumer loads `header`
 * with acquire, reads the slot, then stores `tail` with release so the
 * producer (acquire load of `tail`) cannot reuse the slot under the read.
 */
#include <stddef.h>
#include <stdint.h>

#define HA_V2_PAGE              0x1000u
#define HA_V2_PAGE_A            0x0000u         /* seL4 -> Linux */
#define HA_V2_PAGE_B            0x1000u         /* Linux -> seL4 */
#define HA_V2_DATA_OFF          0x2000u
#define HA_V2_DATA_LEN          0x400000u
#define HA_V2_WINDOW_LEN        (HA_V2_DATA_OFF + HA_V2_DATA_LEN)

#define HA_V2_CAPACITY          256u
#define HA_V2_BLOCK             4096u
#define HA_V2_QUEUE_BYTES       4068u
#define HA_V2_MAGIC             0x48415150u     /* "HAQP", never checked by the peers */
#define HA_V2_VERSION           1u

#define HA_V2_HDR_LEN           8u
#define HA_V2_MAX_SLOT_PAYLOAD  (HA_V2_BLOCK - HA_V2_HDR_LEN)   /* 4088 */

/* The original tools' bulk buffer: data + 1 MiB, up to 2 MiB.  It is slot
 * 256 (defect 1), so hyperampd puts its own bulk input just past it. */
#define HA_V2_BULK_ORIG_OFF     0x100000u
#define HA_V2_BULK_OFF          (HA_V2_BULK_ORIG_OFF + HA_V2_BLOCK)
#define HA_V2_BULK_MAX          0x200000u

/* proxy_msg_type */
enum ha_v2_type {
        HA_V2_DEV = 0,
        HA_V2_STRGY = 1,
        HA_V2_SESS = 2,
        HA_V2_DATA = 3,
        HA_V2_SERVICE = 0x10,
        HA_V2_BULK = 0x20,
};

/* Bulk status: 0 request, 1 done, negative an error; the imx8mp branch and
 * HighSpeedCProxy declare it unsigned, so only exactly 1 means success. */
#define HA_V2_BULK_REQUEST      0u
#define HA_V2_BULK_OK           1u

/* The seL4 peer's signed-payload header (services 3/4/5), packed. */
#define HA_V2_SIG_MAGIC         0x53494731u     /* "SIG1" */
#define HA_V2_SIG_HDR_LEN       84u
#define HA_V2_SIG_MAX           72u
#define HA_V2_SIG_MIN           64u
#define HA_V2_ERR_BAD_MAGIC     (-1)
#define HA_V2_ERR_BAD_SIG       (-2)
#define HA_V2_ERR_BAD_LEN       (-3)
#define HA_V2_ERR_MISSING       (-10)

/* The control block, for its layout only (asserted below): fields are
 * reached through the HA_V2Q_* offsets with aligned accesses, never
 * through packed members. */
typedef struct __attribute__((packed)) HaV2QueueLayout {
        uint8_t map_mode1;
        uint8_t map_mode2;
        uint16_t header;
        uint16_t tail;
        uint16_t capacity;
        uint16_t block_size;
        uint16_t reserved;
        uint64_t phy_addr;
        uint64_t virt_addr1;
        uint64_t virt_addr2;
        uint64_t table1[125][2];
        uint64_t table2[125][2];
        uint32_t lock_value;
        uint32_t owner_zone_id;
        uint32_t lock_count;
        uint32_t contention_count;
        uint32_t magic;
        uint32_t version;
        uint32_t enqueue_count;
        uint32_t dequeue_count;
} HaV2QueueLayout;

#define HA_V2Q_HEADER           2u
#define HA_V2Q_TAIL             4u
#define HA_V2Q_CAPACITY         6u
#define HA_V2Q_BLOCK            8u
#define HA_V2Q_PHY              12u
#define HA_V2Q_VIRT1            20u
#define HA_V2Q_VIRT2            28u
#define HA_V2Q_TABLE1           36u
#define HA_V2Q_TABLE2           2036u
#define HA_V2Q_LOCK             4036u
#define HA_V2Q_OWNER            4040u
#define HA_V2Q_LOCK_COUNT       4044u
#define HA_V2Q_CONTENTION       4048u
#define HA_V2Q_MAGIC            4052u
#define HA_V2Q_VERSION          4056u
#define HA_V2Q_ENQ              4060u
#define HA_V2Q_DEQ              4064u

_Static_assert(sizeof(HaV2QueueLayout) == HA_V2_QUEUE_BYTES, "control block is 4068 bytes");
_Static_assert(offsetof(HaV2QueueLayout, map_mode2) == 1, "map_mode2 at 1");
_Static_assert(offsetof(HaV2QueueLayout, header) == HA_V2Q_HEADER, "header at 2");
_Static_assert(offsetof(HaV2QueueLayout, tail) == HA_V2Q_TAIL, "tail at 4");
_Static_assert(offsetof(HaV2QueueLayout, capacity) == HA_V2Q_CAPACITY, "capacity at 6");
_Static_assert(offsetof(HaV2QueueLayout, block_size) == HA_V2Q_BLOCK, "block_size at 8");
_Static_assert(offsetof(HaV2QueueLayout, reserved) == 10, "_reserved at 10");
_Static_assert(offsetof(HaV2QueueLayout, phy_addr) == HA_V2Q_PHY, "phy_addr at 12");
_Static_assert(offsetof(HaV2QueueLayout, virt_addr1) == HA_V2Q_VIRT1, "virt_addr1 at 20");
_Static_assert(offsetof(HaV2QueueLayout, virt_addr2) == HA_V2Q_VIRT2, "virt_addr2 at 28");
_Static_assert(offsetof(HaV2QueueLayout, table1) == HA_V2Q_TABLE1, "table1 at 36");
_Static_assert(offsetof(HaV2QueueLayout, table2) == HA_V2Q_TABLE2, "table2 at 2036");
_Static_assert(offsetof(HaV2QueueLayout, lock_value) == HA_V2Q_LOCK, "queue_lock at 4036");
_Static_assert(offsetof(HaV2QueueLayout, owner_zone_id) == HA_V2Q_OWNER, "owner at 4040");
_Static_assert(offsetof(HaV2QueueLayout, lock_count) == HA_V2Q_LOCK_COUNT, "lock_count at 4044");
_Static_assert(offsetof(HaV2QueueLayout, contention_count) == HA_V2Q_CONTENTION,
               "contention_count at 4048");
_Static_assert(offsetof(HaV2QueueLayout, magic) == HA_V2Q_MAGIC, "magic at 4052");
_Static_assert(offsetof(HaV2QueueLayout, version) == HA_V2Q_VERSION, "version at 4056");
_Static_assert(offsetof(HaV2QueueLayout, enqueue_count) == HA_V2Q_ENQ, "enqueue_count at 4060");
_Static_assert(offsetof(HaV2QueueLayout, dequeue_count) == HA_V2Q_DEQ, "dequeue_count at 4064");
_Static_assert(HA_V2Q_HEADER % 2 == 0 && HA_V2Q_TAIL % 2 == 0 && HA_V2Q_CAPACITY % 2 == 0,
               "16-bit indices are naturally aligned");
_Static_assert(HA_V2Q_PHY % 4 == 0 && HA_V2Q_LOCK % 4 == 0 && HA_V2Q_DEQ % 4 == 0,
               "wide fields are reached as aligned 32-bit words");
_Static_assert((uint64_t)HA_V2_CAPACITY * HA_V2_BLOCK + HA_V2_BLOCK <= HA_V2_BULK_OFF,
               "slots 1..256 end where hyperampd's bulk buffer starts");
_Static_assert((uint64_t)HA_V2_BULK_OFF + HA_V2_BULK_MAX <= HA_V2_DATA_LEN,
               "the bulk buffer fits the data region");

/* The 8-byte message header, host order (little-endian on the wire: the
 * boards and the peers are little-endian). */
typedef struct HaV2Hdr {
        uint8_t version;
        uint8_t type;
        uint16_t fsess;         /* SERVICE: the service id */
        uint16_t bsess;
        uint16_t len;           /* payload bytes, <= 4088 */
} HaV2Hdr;

/* The 16-byte bulk descriptor (natural alignment). */
typedef struct HaV2Bulk {
        uint32_t offset;        /* from the data region's start */
        uint32_t length;
        uint32_t service;
        uint32_t status;        /* int32 or uint32 depending on the peer */
} HaV2Bulk;
#define HA_V2_BULK_DESC_LEN 16u

/*
 * One direction.  q: its control page, data: the 4 MiB data region.
 * mine: the index this side writes (header when producing, tail when
 * consuming), private; seen: the peer's index as last read.
 */
typedef struct HaV2Ring {
        volatile uint8_t *q;
        volatile uint8_t *data;
        uint16_t mine;
        uint16_t seen;
        int producer;           /* 1: we write header, 0: we write tail */
} HaV2Ring;

/* Why an operation failed (negative errno from the functions below):
 *   -EAGAIN     ring full (send) or empty (recv), or not created yet
 *   -ECONNRESET our own index changed under us or the peer's went back:
 *               the peer re-created the ring; re-attach
 *   -EPROTO     capacity/block size/index out of range (garbage)
 *   -EBADMSG    recv: a message with a bad version or length; it was
 *               consumed (the ring stays in step) and *h describes it
 */

/* Write a fresh control block (creator): indices 0, capacity 256. */
void ha_v2_create(volatile uint8_t *q, uint64_t phy, uint64_t virt);

/* 0 when capacity and block size are the ones we speak, -EAGAIN while
 * capacity is 0 (the creator has not run), -EPROTO otherwise. */
int ha_v2_check(volatile uint8_t *q);

/* Take up the ring as it is now (connector, or after a reset): our index
 * from the shared one, checked.  The consumer side starts where the
 * producer is (stale messages are skipped) only when skip is set. */
int ha_v2_attach(HaV2Ring *r, volatile uint8_t *q, volatile uint8_t *data, int producer,
                 int skip);

/* Messages waiting (consumer) or not yet consumed by the peer (producer). */
int ha_v2_pending(HaV2Ring *r);

/* Producer: one message, payload len <= 4088 (h->len is set from len). */
int ha_v2_send(HaV2Ring *r, uint8_t type, uint16_t fsess, uint16_t bsess, const void *payload,
               uint16_t len);

/* Consumer: one message into *h and payload (cap bytes at least
 * h->len; payload bytes past cap are not copied). */
int ha_v2_recv(HaV2Ring *r, HaV2Hdr *h, void *payload, size_t cap);

/* The slot (1..256) the next message from this ring's producer uses. */
static inline unsigned ha_v2_next_slot(const HaV2Ring *r)
{
        return (unsigned)(r->producer ? r->mine : r->seen) + 1u;
}

/* Bulk descriptors to and from a slot payload (16 bytes). */
void ha_v2_bulk_pack(uint8_t out[HA_V2_BULK_DESC_LEN], const HaV2Bulk *b);
void ha_v2_bulk_unpack(HaV2Bulk *b, const uint8_t in[HA_V2_BULK_DESC_LEN]);

/* A range of the data region the peer named: 0 when [off, off+len) lies
 * inside the region and len > 0, -ERANGE otherwise (no overflow). */
int ha_v2_range_ok(uint64_t off, uint64_t len, uint64_t region);

/* The bulk status as the peer wrote it means success (exactly 1, whether
 * the peer declares it signed or unsigned). */
static inline int ha_v2_bulk_ok(uint32_t status)
{
        return status == HA_V2_BULK_OK;
}

/* The error code of a failed bulk status, as a signed value. */
static inline int32_t ha_v2_bulk_code(uint32_t status)
{
        return (int32_t)status;
}

/* Relaxed reads of shared control fields, for stats and checks. */
uint16_t ha_v2_ld16(volatile uint8_t *q, unsigned off);
uint32_t ha_v2_ld32(volatile uint8_t *q, unsigned off);
void ha_v2_st16(volatile uint8_t *q, unsigned off, uint16_t v);
void ha_v2_st32(volatile uint8_t *q, unsigned off, uint32_t v);

#endif
