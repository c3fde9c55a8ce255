/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "devmem.h"
#include "v2ring.h"

uint16_t ha_v2_ld16(volatile uint8_t *q, unsigned off)
{
        return __atomic_load_n((volatile uint16_t *)(volatile void *)(q + off), __ATOMIC_RELAXED);
}

uint32_t ha_v2_ld32(volatile uint8_t *q, unsigned off)
{
        return __atomic_load_n((volatile uint32_t *)(volatile void *)(q + off), __ATOMIC_RELAXED);
}

void ha_v2_st16(volatile uint8_t *q, unsigned off, uint16_t v)
{
        __atomic_store_n((volatile uint16_t *)(volatile void *)(q + off), v, __ATOMIC_RELAXED);
}

void ha_v2_st32(volatile uint8_t *q, unsigned off, uint32_t v)
{
        __atomic_store_n((volatile uint32_t *)(volatile void *)(q + off), v, __ATOMIC_RELAXED);
}

static uint16_t acquire16(volatile uint8_t *q, unsigned off)
{
        return __atomic_load_n((volatile uint16_t *)(volatile void *)(q + off), __ATOMIC_ACQUIRE);
}

static void release16(volatile uint8_t *q, unsigned off, uint16_t v)
{
        __atomic_store_n((volatile uint16_t *)(volatile void *)(q + off), v, __ATOMIC_RELEASE);
}

/* 64-bit fields sit at offsets that are 4 but not 8 aligned (packed). */
static void st64(volatile uint8_t *q, unsigned off, uint64_t v)
{
        ha_v2_st32(q, off, (uint32_t)v);
        ha_v2_st32(q, off + 4, (uint32_t)(v >> 32));
}

void ha_v2_create(volatile uint8_t *q, uint64_t phy, uint64_t virt)
{
        /* Whole block zeroed word by word (tables, lock, counters). */
        for (unsigned off = 0; off < HA_V2_QUEUE_BYTES; off += 4)
                ha_v2_st32(q, off, 0);
        ha_v2_st16(q, HA_V2Q_BLOCK, HA_V2_BLOCK);
        st64(q, HA_V2Q_PHY, phy);
        st64(q, HA_V2Q_VIRT1, virt);
        ha_v2_st32(q, HA_V2Q_MAGIC, HA_V2_MAGIC);
        ha_v2_st32(q, HA_V2Q_VERSION, HA_V2_VERSION);
        /* Capacity last: it is what the other side waits on. */
        release16(q, HA_V2Q_CAPACITY, HA_V2_CAPACITY);
}

int ha_v2_check(volatile uint8_t *q)
{
        uint16_t cap = acquire16(q, HA_V2Q_CAPACITY);

        if (cap == 0)
                return -EAGAIN;
        if (cap != HA_V2_CAPACITY || ha_v2_ld16(q, HA_V2Q_BLOCK) != HA_V2_BLOCK)
                return -EPROTO;
        return 0;
}

static unsigned own_off(const HaV2Ring *r)
{
        return r->producer ? HA_V2Q_HEADER : HA_V2Q_TAIL;
}

static unsigned peer_off(const HaV2Ring *r)
{
        return r->producer ? HA_V2Q_TAIL : HA_V2Q_HEADER;
}

static unsigned dist(unsigned from, unsigned to)
{
        return (to + HA_V2_CAPACITY - from) % HA_V2_CAPACITY;
}

int ha_v2_attach(HaV2Ring *r, volatile uint8_t *q, volatile uint8_t *data, int producer,
                 int skip)
{
        uint16_t own, peer;
        int e;

        r->q = q;
        r->data = data;
        r->producer = producer;
        e = ha_v2_check(q);
        if (e < 0)
                return e;
        peer = acquire16(q, producer ? HA_V2Q_TAIL : HA_V2Q_HEADER);
        own = ha_v2_ld16(q, producer ? HA_V2Q_HEADER : HA_V2Q_TAIL);
        if (peer >= HA_V2_CAPACITY || own >= HA_V2_CAPACITY)
                return -EPROTO;
        r->mine = own;
        r->seen = peer;
        if (!producer && skip && own != peer) {
                r->mine = peer;
                release16(q, HA_V2Q_TAIL, peer);
        }
        return 0;
}

/*
 * Everything the peer may have changed since the last look: the capacity,
 * our own index (which only we write) and the peer's index, which may only
 * move forward, and for the producer's tail never past our header.
 */
static int refresh(HaV2Ring *r)
{
        uint16_t cap = acquire16(r->q, HA_V2Q_CAPACITY), peer;

        if (cap == 0 || ha_v2_ld16(r->q, own_off(r)) != r->mine)
                return -ECONNRESET;
        if (cap != HA_V2_CAPACITY)
                return -EPROTO;
        peer = acquire16(r->q, peer_off(r));
        if (peer >= HA_V2_CAPACITY)
                return -EPROTO;
        if (r->producer) {
                if (dist(r->seen, peer) > dist(r->seen, r->mine))
                        return -EPROTO;
        } else if (dist(r->mine, peer) < dist(r->mine, r->seen)) {
                return -EPROTO;
        }
        r->seen = peer;
        return 0;
}

int ha_v2_pending(HaV2Ring *r)
{
        int e = refresh(r);

        if (e < 0)
                return e;
        return r->producer ? (int)dist(r->seen, r->mine) : (int)dist(r->mine, r->seen);
}

static volatile uint8_t *slot(const HaV2Ring *r, unsigned idx)
{
        return r->data + ((size_t)idx + 1) * HA_V2_BLOCK;
}

static void count(volatile uint8_t *q, unsigned off)
{
        ha_v2_st32(q, off, ha_v2_ld32(q, off) + 1);
}

int ha_v2_send(HaV2Ring *r, uint8_t type, uint16_t fsess, uint16_t bsess, const void *payload,
               uint16_t len)
{
        uint8_t hdr[HA_V2_HDR_LEN];
        uint16_t next;
        int e;

        if (len > HA_V2_MAX_SLOT_PAYLOAD || !r->producer)
                return -EINVAL;
        e = refresh(r);
        if (e < 0)
                return e;
        next = (uint16_t)((r->mine + 1) % HA_V2_CAPACITY);
        if (next == r->seen)
                return -EAGAIN;
        hdr[0] = HA_V2_VERSION;
        hdr[1] = type;
        hdr[2] = (uint8_t)fsess;
        hdr[3] = (uint8_t)(fsess >> 8);
        hdr[4] = (uint8_t)bsess;
        hdr[5] = (uint8_t)(bsess >> 8);
        hdr[6] = (uint8_t)len;
        hdr[7] = (uint8_t)(len >> 8);
        ha_devmem_write(slot(r, r->mine), hdr, sizeof(hdr));
        if (len)
                ha_devmem_write(slot(r, r->mine) + HA_V2_HDR_LEN, payload, len);
        r->mine = next;
        release16(r->q, HA_V2Q_HEADER, next);
        count(r->q, HA_V2Q_ENQ);
        return 0;
}

int ha_v2_recv(HaV2Ring *r, HaV2Hdr *h, void *payload, size_t cap)
{
        uint8_t hdr[HA_V2_HDR_LEN];
        int e, bad;

        if (r->producer)
                return -EINVAL;
        e = refresh(r);
        if (e < 0)
                return e;
        if (r->seen == r->mine)
                return -EAGAIN;
        ha_devmem_read(hdr, slot(r, r->mine), sizeof(hdr));
        h->version = hdr[0];
        h->type = hdr[1];
        h->fsess = (uint16_t)(hdr[2] | hdr[3] << 8);
        h->bsess = (uint16_t)(hdr[4] | hdr[5] << 8);
        h->len = (uint16_t)(hdr[6] | hdr[7] << 8);
        bad = h->version != HA_V2_VERSION || h->len > HA_V2_MAX_SLOT_PAYLOAD;
        if (!bad && h->len)
                ha_devmem_read(payload, slot(r, r->mine) + HA_V2_HDR_LEN,
                               h->len < cap ? h->len : cap);
        /* Consumed either way, so the ring stays in step. */
        r->mine = (uint16_t)((r->mine + 1) % HA_V2_CAPACITY);
        release16(r->q, HA_V2Q_TAIL, r->mine);
        count(r->q, HA_V2Q_DEQ);
        return bad ? -EBADMSG : 0;
}

void ha_v2_bulk_pack(uint8_t out[HA_V2_BULK_DESC_LEN], const HaV2Bulk *b)
{
        const uint32_t w[4] = { b->offset, b->length, b->service, b->status };

        for (unsigned i = 0; i < 4; i++)
                for (unsigned k = 0; k < 4; k++)
                        out[i * 4 + k] = (uint8_t)(w[i] >> (8 * k));
}

void ha_v2_bulk_unpack(HaV2Bulk *b, const uint8_t in[HA_V2_BULK_DESC_LEN])
{
        uint32_t w[4];

        for (unsigned i = 0; i < 4; i++)
                w[i] = (uint32_t)in[i * 4] | (uint32_t)in[i * 4 + 1] << 8 |
                       (uint32_t)in[i * 4 + 2] << 16 | (uint32_t)in[i * 4 + 3] << 24;
        b->offset = w[0];
        b->length = w[1];
        b->service = w[2];
        b->status = w[3];
}

int ha_v2_range_ok(uint64_t off, uint64_t len, uint64_t region)
{
        if (len == 0 || off > region || len > region - off)
                return -ERANGE;
        return 0;
}
