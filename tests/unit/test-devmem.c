/* SPDX-License-Identifier: MIT */
/*
 * The /dev/mem copy helpers: every alignment of either side and every short
 * length comes out byte-exact, and no byte outside the range is touched.
 */
#include <string.h>

#include "check.h"
#include "devmem.h"

#define AREA 96
#define GUARD 0xa5

static void test_copies(void)
{
        uint8_t src[AREA], dst[AREA], want[AREA];
        unsigned bad = 0;

        for (unsigned i = 0; i < AREA; i++)
                src[i] = (uint8_t)(i * 7 + 1);
        for (unsigned so = 0; so < 8; so++)
                for (unsigned d0 = 0; d0 < 8; d0++)
                        for (size_t len = 0; len <= 64; len++) {
                                /* read: the mapping is the source */
                                memset(dst, GUARD, sizeof(dst));
                                memset(want, GUARD, sizeof(want));
                                memcpy(want + d0, src + so, len);
                                ha_devmem_read(dst + d0, src + so, len);
                                bad += memcmp(dst, want, sizeof(dst)) != 0;
                                /* write: the mapping is the destination */
                                memset(dst, GUARD, sizeof(dst));
                                ha_devmem_write(dst + d0, src + so, len);
                                bad += memcmp(dst, want, sizeof(dst)) != 0;
                        }
        CHECK_EQ(bad, 0);
}

static void test_words(void)
{
        uint32_t w[2] = { 0, 0 };

        ha_st32(&w[1], 0xEEEEEEEEu);
        CHECK_EQ(ha_ld32(&w[1]), 0xEEEEEEEEu);
        CHECK_EQ(w[0], 0);
}

int main(void)
{
        test_copies();
        test_words();
        return check_done("devmem");
}
