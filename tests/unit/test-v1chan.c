/* SPDX-License-Identifier: MIT */
/*
 * The v1 channel's per-request rules (ha_v1_serve) against the original
 * Linux service: the length - 1 rule, results, hostile offsets, lengths and
 * flags; and the "v1_channels" config key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hyperamp-config.h"
#include "config.h"
#include "services.h"
#include "v1chan.h"

#define BUFLEN 65536

static const uint8_t key[16] = {
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
        0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
};

static uint8_t *region;

static enum ha_result serve(uint16_t flag, uint16_t svc, uint32_t off, uint32_t len,
                            unsigned *why)
{
        return ha_v1_serve(region, BUFLEN, flag, svc, off, len, why);
}

static void test_vector(void)
{
        static const uint8_t enc[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
        unsigned why = 99;

        memcpy(region + 100, "hello", 6);      /* strlen + 1, as the client sends */
        CHECK_EQ(serve(0, 1, 100, 6, &why), HA_RESULT_SUCCESS);
        CHECK_EQ(why, HA_V1_OK);
        CHECK(memcmp(region + 100, enc, 5) == 0);
        CHECK_EQ(region[105], 0);               /* the NUL is not transformed */
        CHECK_EQ(serve(0, 2, 100, 6, &why), HA_RESULT_SUCCESS);
        CHECK(memcmp(region + 100, "hello", 6) == 0);
        CHECK_EQ(serve(0, 66, 100, 6, &why), HA_RESULT_SUCCESS);
        CHECK(memcmp(region + 100, "hello", 6) == 0);
}

static void test_results(void)
{
        unsigned why;

        memcpy(region, "abc", 4);
        CHECK_EQ(serve(0, 9999, 0, 4, &why), HA_RESULT_NOT_EXITS);
        CHECK_EQ(why, HA_V1_OK);
        CHECK(memcmp(region, "abc", 4) == 0);
        /* "" is one byte on the wire: nothing to transform. */
        CHECK_EQ(serve(0, 1, 0, 1, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_OK);
        CHECK_EQ(serve(0, 2, 0, 1, &why), HA_RESULT_FAIL);
        CHECK_EQ(serve(0, 66, 0, 1, &why), HA_RESULT_SUCCESS);
        CHECK_EQ(serve(0, 9999, 0, 1, &why), HA_RESULT_NOT_EXITS);
        /* Length 0 fails whatever the service, as the original. */
        CHECK_EQ(serve(0, 1, 0, 0, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_ZERO_LENGTH);
        CHECK_EQ(serve(0, 9999, 0, 0, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_ZERO_LENGTH);
        CHECK(memcmp(region, "abc", 4) == 0);
}

static void test_hostile(void)
{
        unsigned why;

        /* Any flag bit set when handed over: garbage or a stale entry. */
        for (unsigned f = 1; f <= 0x8000; f <<= 1) {
                CHECK_EQ(serve((uint16_t)f, 1, 0, 4, &why), HA_RESULT_FAIL);
                CHECK_EQ(why, HA_V1_BAD_FLAG);
        }
        CHECK_EQ(serve(0, 1, BUFLEN - 2, 16, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_BAD_RANGE);
        CHECK_EQ(serve(0, 1, 0xfffffff0u, 0x20, &why), HA_RESULT_FAIL);        /* wraps */
        CHECK_EQ(why, HA_V1_BAD_RANGE);
        CHECK_EQ(serve(0, 1, 0, 0xffffffffu, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_BAD_RANGE);
        CHECK_EQ(serve(0, 66, BUFLEN, 1, &why), HA_RESULT_FAIL);
        CHECK_EQ(why, HA_V1_BAD_RANGE);
        /* Exactly up to the end is fine. */
        region[BUFLEN - 1] = 0;
        CHECK_EQ(serve(0, 1, BUFLEN - 8, 8, &why), HA_RESULT_SUCCESS);
        CHECK_EQ(why, HA_V1_OK);
        CHECK_EQ(region[BUFLEN - 1], 0);
}

/* Every alignment, short and past-the-stack lengths, with guard bytes. */
static void test_sizes(void)
{
        static const size_t lens[] = { 2, 3, 4, 5, 17, 33, 4096, 4097, 4098, 10000, 40000 };
        uint8_t *want = malloc(BUFLEN);
        unsigned bad = 0;

        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++)
                for (uint32_t off = 1000; off < 1004; off++) {
                        size_t len = lens[li];
                        unsigned why;

                        for (size_t i = 0; i < BUFLEN; i++)
                                region[i] = want[i] = (uint8_t)(i * 31 + off);
                        for (size_t i = 0; i + 1 < len; i++)
                                want[off + i] ^= key[i & 15] ^ 0x55;
                        bad += serve(0, 1, off, (uint32_t)len, &why) != HA_RESULT_SUCCESS;
                        bad += memcmp(region, want, BUFLEN) != 0;
                }
        CHECK_EQ(bad, 0);
        free(want);
}

/* ===== config ===== */

#include "config-check.h"

static void test_config(void)
{
        HaConfig c, d;
        char err[512], live[512], restart[512];
        char *json;

        config_check_setup();
        ha_config_defaults(&c);
        CHECK_EQ(c.n_v1_channels, 0);
        json = ha_config_to_json(&c, NULL);
        CHECK(json && !strstr(json, "v1_channels"));
        free(json);

        CHECK_EQ(load("{\"v1_channels\": [{\"name\": \"npu\", \"shm_config\": \"/etc/x.json\","
                      "\"mem\": \"/tmp/mem\", \"doorbell\": \"/tmp/bell\", \"base\": \"0x7e000000\","
                      "\"#\": \"comment\"}, {\"name\": \"b-2\", \"shm_config\": \"/y.json\"}]}",
                      &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_v1_channels, 2);
        CHECK(strcmp(c.v1_channels[0].name, "npu") == 0);
        CHECK(strcmp(c.v1_channels[0].mem, "/tmp/mem") == 0);
        CHECK(strcmp(c.v1_channels[0].doorbell, "/tmp/bell") == 0);
        CHECK_EQ(c.v1_channels[0].base, 0x7e000000);
        CHECK(strcmp(c.v1_channels[1].mem, "/dev/mem") == 0);           /* defaults */
        CHECK(strcmp(c.v1_channels[1].doorbell, "/dev/hshm0") == 0);
        CHECK_EQ(c.v1_channels[1].base, 0);
        json = ha_config_to_json(&c, NULL);
        CHECK(json && strstr(json, "\"v1_channels\"") && strstr(json, "\"0x7e000000\""));
        free(json);

        /* A reload cannot change channels: they need a restart. */
        CHECK_EQ(load("{\"v1_channels\": [{\"name\": \"npu\", \"shm_config\": \"/etc/x.json\"}]}",
                      &d, err, sizeof(err)), 0);
        ha_config_diff(&c, &d, live, sizeof(live), restart, sizeof(restart));
        CHECK(strstr(restart, "v1_channels") != NULL);
        CHECK(strstr(live, "v1_channels") == NULL);
        ha_config_diff(&d, &d, live, sizeof(live), restart, sizeof(restart));
        CHECK_EQ(restart[0], '\0');
        CHECK_EQ(load("{\"v1_channels\": []}", &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_v1_channels, 0);

        expect_error("{\"v1_channels\": {}}", "\"v1_channels\": wrong type");
        expect_error("{\"v1_channels\": [1]}", "\"v1_channels[0]\": must be an object");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\",\"memory\":\"/m\"}]}",
                     "\"v1_channels[0]\": unknown key \"memory\"");
        expect_error("{\"v1_channels\": [{\"shm_config\":\"/a\"}]}", "\"v1_channels[0].name\": missing");
        expect_error("{\"v1_channels\": [{\"name\":\"a b\",\"shm_config\":\"/a\"}]}",
                     "\"v1_channels[0].name\": must be");
        expect_error("{\"v1_channels\": [{\"name\":\"\",\"shm_config\":\"/a\"}]}",
                     "\"v1_channels[0].name\"");
        expect_error("{\"v1_channels\": [{\"name\":\"a\"}]}", "\"v1_channels[0].shm_config\": missing");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"rel.json\"}]}",
                     "\"v1_channels[0].shm_config\": must be an absolute path");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\",\"mem\":5}]}",
                     "\"v1_channels[0].mem\": must be an absolute path");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\",\"base\":4096}]}",
                     "\"v1_channels[0].base\": must be a hex string");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\",\"base\":\"0xg\"}]}",
                     "\"v1_channels[0].base\"");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\"},"
                     "{\"name\":\"a\",\"shm_config\":\"/b\",\"doorbell\":\"/d\"}]}",
                     "\"v1_channels[1]\": same name as v1_channels[0]");
        expect_error("{\"v1_channels\": [{\"name\":\"a\",\"shm_config\":\"/a\"},"
                     "{\"name\":\"b\",\"shm_config\":\"/b\"}]}",
                     "\"v1_channels[1]\": same doorbell as v1_channels[0]");
        {
                char text[4096] = "{\"v1_channels\": [";
                for (int i = 0; i < HA_V1_MAX_CHANNELS + 1; i++) {
                        size_t n = strlen(text);
                        snprintf(text + n, sizeof(text) - n, "%s{\"name\":\"c%d\",\"shm_config\":"
                                 "\"/a\",\"doorbell\":\"/d%d\"}", i ? "," : "", i, i);
                }
                strcat(text, "]}");
                expect_error(text, "at most 8 channels");
        }
        /* A failed load leaves the old config untouched. */
        CHECK_EQ(load("{\"v1_channels\": [{\"name\": \"npu\", \"shm_config\": \"/x\"}]}", &c, err,
                      sizeof(err)), 0);
        {
                FILE *f = fopen(path, "w");
                fputs("{\"v1_channels\": [{\"name\": \"other\", \"shm_config\": \"bad\"}]}", f);
                fclose(f);
        }
        CHECK(ha_config_load(&c, path, err, sizeof(err)) < 0);
        CHECK(strcmp(c.v1_channels[0].name, "npu") == 0);
        unlink(path);
}

#if HA_TEST_SEAMS
/* The run policy comes from the service's reads_only flag, not from echo's
 * id: the stall test seam (reads only, id 65000) gets echo's rules. */
static void test_policy_by_flag(void)
{
        int p[2];
        unsigned why;

        CHECK(pipe(p) == 0);
        ha_services_enable_stall(p[0], -1);
        CHECK(!ha_service_staged(ha_service_by_id(HA_SERVICE_STALL)));
        memcpy(region + 300, "stall", 6);
        /* "" has nothing to read: SUCCESS, as echo, not a transform's FAIL. */
        CHECK_EQ(serve(0, HA_SERVICE_STALL, 300, 1, &why), HA_RESULT_SUCCESS);
        /* With bytes, the service runs (it takes one byte from the pipe). */
        CHECK_EQ(write(p[1], "x", 1), 1);
        CHECK_EQ(serve(0, HA_SERVICE_STALL, 300, 6, &why), HA_RESULT_SUCCESS);
        CHECK(memcmp(region + 300, "stall", 6) == 0);
        ha_services_enable_stall(-1, -1);
        close(p[0]);
        close(p[1]);
}
#endif

int main(void)
{
        region = calloc(1, BUFLEN);
        test_vector();
        test_results();
#if HA_TEST_SEAMS
        test_policy_by_flag();
#else
        CHECK_SKIP_NO_SEAMS("the run policy of the stall service");
#endif
        test_hostile();
        test_sizes();
        test_config();
        free(region);
        return check_done("v1chan");
}
