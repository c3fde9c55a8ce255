/* SPDX-License-Identifier: MIT */
/*
 * The v2 rings: the control block's bytes where the peers expect them, the
 * slot arithmetic (slot index + 1, 255 usable), and every value a peer can
 * scribble (capacity, indices, lengths, versions, bulk ranges) refused
 * without touching memory outside the window.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "v2ring.h"

static uint8_t *window;

static volatile uint8_t *page_b(void)
{
        return window + HA_V2_PAGE_B;
}

static volatile uint8_t *data(void)
{
        return window + HA_V2_DATA_OFF;
}

static void fresh(HaV2Ring *tx, HaV2Ring *rx)
{
        memset(window, 0, HA_V2_WINDOW_LEN);
        ha_v2_create(page_b(), 0xde001000u, 0x54f000u);
        CHECK_EQ(ha_v2_attach(tx, page_b(), data(), 1, 0), 0);
        CHECK_EQ(ha_v2_attach(rx, page_b(), data(), 0, 0), 0);
}

static void test_layout(void)
{
        uint8_t *q = window + HA_V2_PAGE_B;

        memset(window, 0xee, HA_V2_WINDOW_LEN);
        ha_v2_create(page_b(), 0x1122334455667788ull, 0x54f000u);
        /* Little-endian bytes at the offsets the C headers give. */
        CHECK_EQ(q[0], 0);
        CHECK_EQ(q[2] | q[3] << 8, 0);
        CHECK_EQ(q[6] | q[7] << 8, 256);
        CHECK_EQ(q[8] | q[9] << 8, 4096);
        CHECK_EQ(q[12], 0x88);
        CHECK_EQ(q[19], 0x11);
        CHECK_EQ(q[20] | q[21] << 8 | q[22] << 16, 0x54f000);
        CHECK_EQ(q[4052] | q[4053] << 8 | q[4054] << 16 | (uint32_t)q[4055] << 24, 0x48415150u);
        CHECK_EQ(q[4056], 1);
        CHECK_EQ(q[4036], 0);
        /* Nothing written past the 4068-byte block. */
        CHECK_EQ(q[HA_V2_QUEUE_BYTES], 0xee);
        CHECK_EQ(ha_v2_check(page_b()), 0);
}

static void test_slots(void)
{
        HaV2Ring tx, rx;
        HaV2Hdr h;
        uint8_t buf[HA_V2_BLOCK];
        unsigned ok = 0, full = 0;

        fresh(&tx, &rx);
        CHECK_EQ(ha_v2_next_slot(&tx), 1);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "hello", 5), 0);
        /* Index 0 lives in slot 1, at data + 0x1000. */
        CHECK_EQ(window[HA_V2_DATA_OFF + 0x1000], 1);
        CHECK_EQ(window[HA_V2_DATA_OFF + 0x1001], HA_V2_SERVICE);
        CHECK_EQ(window[HA_V2_DATA_OFF + 0x1002], 1);
        CHECK_EQ(window[HA_V2_DATA_OFF + 0x1006], 5);
        CHECK(memcmp(window + HA_V2_DATA_OFF + 0x1008, "hello", 5) == 0);
        CHECK_EQ(ha_v2_ld32(page_b(), HA_V2Q_ENQ), 1);
        CHECK_EQ(ha_v2_pending(&rx), 1);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), 0);
        CHECK_EQ(h.type, HA_V2_SERVICE);
        CHECK_EQ(h.fsess, 1);
        CHECK_EQ(h.len, 5);
        CHECK(memcmp(buf, "hello", 5) == 0);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), -EAGAIN);

        /* 255 usable: the 256th send finds the ring full. */
        for (unsigned i = 0; i < 256; i++) {
                int e = ha_v2_send(&tx, HA_V2_DATA, (uint16_t)i, 0, &i, sizeof(i));

                ok += e == 0;
                full += e == -EAGAIN;
        }
        CHECK_EQ(ok, 255);
        CHECK_EQ(full, 1);
        /* Wrap-around, in order, many times. */
        ok = 0;
        for (unsigned i = 0; i < 3000; i++) {
                unsigned v = 0;

                if (ha_v2_recv(&rx, &h, &v, sizeof(v)) == 0 && h.fsess == (uint16_t)(i % 65536) &&
                    v == i)
                        ok++;
                (void)ha_v2_send(&tx, HA_V2_DATA, (uint16_t)(i + 255), 0, &(unsigned){ i + 255 },
                                 sizeof(unsigned));
        }
        CHECK_EQ(ok, 3000);

        /* Index 255 is slot 256: the original bulk buffer (defect 1). */
        fresh(&tx, &rx);
        for (unsigned i = 0; i < 255; i++) {
                CHECK_EQ(ha_v2_send(&tx, HA_V2_DATA, 0, 0, NULL, 0), 0);
                CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), 0);
        }
        CHECK_EQ(ha_v2_next_slot(&tx), 256);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_DATA, 7, 0, NULL, 0), 0);
        CHECK_EQ(window[HA_V2_DATA_OFF + HA_V2_BULK_ORIG_OFF + 2], 7);
        CHECK_EQ(ha_v2_next_slot(&tx), 1);
        CHECK(HA_V2_BULK_OFF >= HA_V2_BULK_ORIG_OFF + HA_V2_BLOCK);
}

static void test_reset(void)
{
        HaV2Ring tx, rx;
        HaV2Hdr h;
        uint8_t buf[16];

        fresh(&tx, &rx);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), 0);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), 0);
        /* The peer boots again and re-creates the ring: both sides see it. */
        ha_v2_create(page_b(), 0, 0);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), -ECONNRESET);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), -ECONNRESET);
        CHECK_EQ(ha_v2_pending(&tx), -ECONNRESET);
        /* Re-created but not yet ready: capacity 0. */
        ha_v2_st16(page_b(), HA_V2Q_CAPACITY, 0);
        CHECK_EQ(ha_v2_check(page_b()), -EAGAIN);
        CHECK_EQ(ha_v2_attach(&tx, page_b(), data(), 1, 0), -EAGAIN);
        ha_v2_create(page_b(), 0, 0);
        CHECK_EQ(ha_v2_attach(&tx, page_b(), data(), 1, 0), 0);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), 0);
}

static void test_garbage(void)
{
        HaV2Ring tx, rx;
        HaV2Hdr h;
        uint8_t buf[32];

        /* Capacity other than 256 or a block size other than 4096. */
        fresh(&tx, &rx);
        ha_v2_st16(page_b(), HA_V2Q_CAPACITY, 0xffff);
        CHECK_EQ(ha_v2_check(page_b()), -EPROTO);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), -EPROTO);
        CHECK_EQ(ha_v2_attach(&tx, page_b(), data(), 1, 0), -EPROTO);
        fresh(&tx, &rx);
        ha_v2_st16(page_b(), HA_V2Q_BLOCK, 64);
        CHECK_EQ(ha_v2_check(page_b()), -EPROTO);

        /* A producer index past capacity: nothing is read. */
        fresh(&tx, &rx);
        ha_v2_st16(page_b(), HA_V2Q_HEADER, 0x4000);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, sizeof(buf)), -EPROTO);
        CHECK_EQ(ha_v2_attach(&rx, page_b(), data(), 0, 1), -EPROTO);

        /* A consumer index past the producer's: refused. */
        fresh(&tx, &rx);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), 0);
        ha_v2_st16(page_b(), HA_V2Q_TAIL, 9);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), -EPROTO);
        ha_v2_st16(page_b(), HA_V2Q_TAIL, 300);
        CHECK_EQ(ha_v2_pending(&tx), -EPROTO);
        ha_v2_st16(page_b(), HA_V2Q_TAIL, 1);
        CHECK_EQ(ha_v2_pending(&tx), 0);

        /* A producer index that goes backwards. */
        fresh(&tx, &rx);
        for (int i = 0; i < 3; i++)
                CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), 0);
        CHECK_EQ(ha_v2_pending(&rx), 3);
        ha_v2_st16(page_b(), HA_V2Q_HEADER, 1);
        CHECK_EQ(ha_v2_pending(&rx), -EPROTO);

        /* Our own index moved by the peer: reset, never trusted. */
        fresh(&tx, &rx);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), 0);
        ha_v2_st16(page_b(), HA_V2Q_HEADER, 5);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "x", 1), -ECONNRESET);

        /* Bad length and bad version: consumed, reported, no overrun. */
        fresh(&tx, &rx);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "abc", 3), 0);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, "abc", 3), 0);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 2, 0, "abcdefgh", 8), 0);
        window[HA_V2_DATA_OFF + 0x1000 + 6] = 0xff;     /* len 0x0fff > 4088 */
        window[HA_V2_DATA_OFF + 0x1000 + 7] = 0x0f;
        window[HA_V2_DATA_OFF + 0x2000] = 9;            /* version 9 */
        memset(buf, 0xa5, sizeof(buf));
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, 4), -EBADMSG);
        CHECK_EQ(h.len, 0x0fff);
        CHECK_EQ(buf[0], 0xa5);
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, 4), -EBADMSG);
        CHECK_EQ(h.version, 9);
        /* A payload longer than the caller's buffer is cut, not overrun. */
        CHECK_EQ(ha_v2_recv(&rx, &h, buf, 4), 0);
        CHECK_EQ(h.len, 8);
        CHECK(memcmp(buf, "abcd", 4) == 0);
        CHECK_EQ(buf[4], 0xa5);
        CHECK_EQ(ha_v2_pending(&rx), 0);
        CHECK_EQ(ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, buf, HA_V2_MAX_SLOT_PAYLOAD + 1), -EINVAL);
}

static void test_bulk(void)
{
        HaV2Bulk b = { 0x101000, 5000, 4, (uint32_t)-2 }, c;
        uint8_t raw[HA_V2_BULK_DESC_LEN];

        ha_v2_bulk_pack(raw, &b);
        CHECK_EQ(raw[0], 0x00);
        CHECK_EQ(raw[1], 0x10);
        CHECK_EQ(raw[2], 0x10);
        CHECK_EQ(raw[12], 0xfe);
        CHECK_EQ(raw[15], 0xff);
        ha_v2_bulk_unpack(&c, raw);
        CHECK(memcmp(&b, &c, sizeof(b)) == 0);
        /* Signed or unsigned, only 1 is success. */
        CHECK(!ha_v2_bulk_ok(c.status));
        CHECK_EQ(ha_v2_bulk_code(c.status), -2);
        CHECK(ha_v2_bulk_ok(1));
        CHECK(!ha_v2_bulk_ok(0));
        CHECK(!ha_v2_bulk_ok(0x80000001u));
        CHECK_EQ(ha_v2_range_ok(0x101000, HA_V2_BULK_MAX, HA_V2_DATA_LEN), 0);
        CHECK_EQ(ha_v2_range_ok(0, HA_V2_DATA_LEN, HA_V2_DATA_LEN), 0);
        CHECK_EQ(ha_v2_range_ok(1, HA_V2_DATA_LEN, HA_V2_DATA_LEN), -ERANGE);
        CHECK_EQ(ha_v2_range_ok(0xfffffff0u, 0x20, HA_V2_DATA_LEN), -ERANGE);
        CHECK_EQ(ha_v2_range_ok(UINT64_MAX, 2, HA_V2_DATA_LEN), -ERANGE);
        CHECK_EQ(ha_v2_range_ok(16, 0, HA_V2_DATA_LEN), -ERANGE);
}

int main(void)
{
        window = aligned_alloc(HA_V2_PAGE, HA_V2_WINDOW_LEN);
        if (!window)
                return EXIT_FAILURE;
        test_layout();
        test_slots();
        test_reset();
        test_garbage();
        test_bulk();
        free(window);
        return check_done("test-v2ring");
}
