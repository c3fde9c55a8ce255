/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "services.h"

int main(void)
{
        static const uint8_t vector[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
        uint8_t buf[256], orig[256];
        uint16_t id;

        /* The team's published test vector: "hello" -> 16 4e 2c 2f 12. */
        memcpy(buf, "hello", 5);
        CHECK_EQ(ha_service_run(1, buf, 5), HA_RESULT_SUCCESS);
        CHECK(memcmp(buf, vector, 5) == 0);
        CHECK_EQ(ha_service_run(2, buf, 5), HA_RESULT_SUCCESS);
        CHECK(memcmp(buf, "hello", 5) == 0);

        /* Every byte is transformed, NULs included, and the key wraps at 16. */
        for (unsigned i = 0; i < sizeof(buf); i++)
                orig[i] = buf[i] = (uint8_t)i;
        CHECK_EQ(ha_service_run(1, buf, sizeof(buf)), HA_RESULT_SUCCESS);
        CHECK_EQ(buf[0], 0x00 ^ 0x2b ^ 0x55);
        CHECK_EQ(buf[15], 0x0f ^ 0x3c ^ 0x55);
        CHECK_EQ(buf[16], 0x10 ^ 0x2b ^ 0x55);
        CHECK_EQ(buf[255], 0xff ^ 0x3c ^ 0x55);
        CHECK_EQ(ha_service_run(2, buf, sizeof(buf)), HA_RESULT_SUCCESS);
        CHECK(memcmp(buf, orig, sizeof(buf)) == 0);

        CHECK_EQ(ha_service_run(66, buf, sizeof(buf)), HA_RESULT_SUCCESS);
        CHECK(memcmp(buf, orig, sizeof(buf)) == 0);

        /* Unknown ids are NOT_EXITS (never a silent echo); length 0 fails. */
        CHECK_EQ(ha_service_run(3, buf, 4), HA_RESULT_NOT_EXITS);
        CHECK_EQ(ha_service_run(65535, buf, 4), HA_RESULT_NOT_EXITS);
        CHECK(memcmp(buf, orig, 4) == 0);
        CHECK_EQ(ha_service_run(1, buf, 0), HA_RESULT_FAIL);

        CHECK_EQ(ha_service_parse("encrypt", &id), 0);
        CHECK_EQ(id, 1);
        CHECK_EQ(ha_service_parse("echo", &id), 0);
        CHECK_EQ(id, 66);
        CHECK_EQ(ha_service_parse("2", &id), 0);
        CHECK_EQ(id, 2);
        CHECK_EQ(ha_service_parse("65535", &id), 0);
        CHECK_EQ(id, 65535);
        CHECK_EQ(ha_service_parse("65536", &id), -ERANGE);
        CHECK_EQ(ha_service_parse("99999999999999999999", &id), -ERANGE);
        CHECK_EQ(ha_service_parse("1x", &id), -EINVAL);
        CHECK_EQ(ha_service_parse("", &id), -EINVAL);
        CHECK_EQ(ha_service_parse("nosuch", &id), -ENOENT);

        CHECK(strcmp(ha_result_name(HA_RESULT_NOT_EXITS), "NOT_EXITS") == 0);
        /* The flag word: result and done bit together, as the wire has them. */
        CHECK_EQ(ha_flag_make(HA_RESULT_SUCCESS), 0x0003);
        CHECK_EQ(ha_flag_make(HA_RESULT_FAIL), 0x0005);
        CHECK_EQ(ha_flag_make(HA_RESULT_NOT_EXITS), 0x0007);
        CHECK_EQ(ha_flag_result(0x0007), HA_RESULT_NOT_EXITS);
        /* Issue 12: a remote zone's timeout has a name of its own, and
         * goes on the 2-bit wire as FAIL, never into the reserved bits. */
        CHECK(strcmp(ha_result_name(HA_RESULT_TIMEOUT), "E_TIMEOUT") == 0);
        CHECK_EQ(HA_RESULT_TIMEOUT, 4);
        CHECK_EQ(ha_flag_make(HA_RESULT_TIMEOUT), 0x0005);
        return check_done("test-services");
}
