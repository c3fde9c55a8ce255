/* SPDX-License-Identifier: MIT */
/* "remote_zones" entries with "protocol": "v2": defaults, every key, and
 * each bad value refused with the key named. */
#include <stdlib.h>

#include "config-check.h"

#define ZONE_AT(addr, extra) "{\"remote_zones\":[{\"name\":\"sel4\",\"protocol\":\"v2\"," \
                             "\"address\":\"" addr "\",\"services\":[1,2]" extra "}]}"
#define ZONE(extra) ZONE_AT("0xde000000", extra)

int main(void)
{
        HaConfig c, d;
        char err[512], live[256], restart[256];
        char *json;

        config_check_setup();
        CHECK_EQ(load(ZONE(""), &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_remote_zones, 1);
        CHECK(strcmp(c.remote_zones[0].name, "sel4") == 0);
        CHECK_EQ(c.remote_zones[0].protocol, HA_PROTOCOL_V2);
        CHECK(strcmp(c.remote_zones[0].mem, "/dev/mem") == 0);
        CHECK_EQ(c.remote_zones[0].address, 0xde000000u);
        CHECK_EQ(c.remote_zones[0].base, 0);
        CHECK(!c.remote_zones[0].creator);
        CHECK_EQ(c.remote_zones[0].timeout_ms, 1000);
        CHECK_EQ(c.remote_zones[0].n_services, 2);
        CHECK_EQ(c.remote_zones[0].services[1], 2);

        CHECK_EQ(load(ZONE_AT("0x7e001000", ",\"mem\":\"/tmp/w\",\"base\":\"0x7e000000\","
                              "\"role\":\"creator\",\"timeout_ms\":250"), &c, err,
                      sizeof(err)), 0);
        CHECK_EQ(c.remote_zones[0].base, 0x7e000000u);
        CHECK_EQ(c.remote_zones[0].address, 0x7e001000u);
        CHECK(c.remote_zones[0].creator);
        CHECK_EQ(c.remote_zones[0].timeout_ms, 250);
        json = ha_config_to_json(&c, NULL);
        CHECK(json && strstr(json, "\"role\":\t\"creator\"") && strstr(json, "\"0x7e001000\""));
        free(json);
        /* Seen as changed, and applied by a reload (daemon.c). */
        d = c;
        d.remote_zones[0].timeout_ms = 251;
        ha_config_diff(&c, &d, live, sizeof(live), restart, sizeof(restart));
        CHECK(strstr(live, "remote_zones") != NULL);
        CHECK(strstr(restart, "remote_zones") == NULL);

        expect_error("{\"remote_zones\":{}}", "remote_zones");
        expect_error("{\"remote_zones\":[{\"name\":\"x\",\"protocol\":\"v9\"}]}", "protocol");
        expect_error(ZONE(",\"shm_config\":\"/x\""), "shm_config");
        expect_error("{\"remote_zones\":[1]}", "remote_zones[0]");
        expect_error(ZONE(",\"bogus\":1"), "bogus");
        expect_error(ZONE(",\"role\":\"master\""), "role");
        expect_error(ZONE(",\"timeout_ms\":0"), "timeout_ms");
        expect_error(ZONE(",\"timeout_ms\":1.5"), "timeout_ms");
        expect_error(ZONE(",\"mem\":\"relative\""), "mem");
        expect_error(ZONE(",\"base\":\"0xdf000000\""), "address");
        expect_error(ZONE_AT("0xde000800", ""), "address");
        expect_error(ZONE_AT("nope", ""), "address");
        expect_error("{\"remote_zones\":[{\"name\":\"a b\",\"protocol\":\"v2\","
                     "\"address\":\"0x1000\",\"services\":[1]}]}", "name");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\","
                     "\"services\":[1]}]}", "address");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\","
                     "\"address\":\"0x1000\"}]}", "services");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\","
                     "\"address\":\"0x1000\",\"services\":[1,1]}]}", "twice");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\","
                     "\"address\":\"0x1000\",\"services\":[70000]}]}", "services");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\","
                     "\"address\":\"0x1000\",\"services\":[\"nosuch\"]}]}", "services");
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\",\"address\":\"0x1000\","
                     "\"services\":[1]},{\"name\":\"a\",\"protocol\":\"v2\",\"address\":\"0x2000\","
                     "\"services\":[2]}]}", "is also remote_zones[0]");
        /* One owner per window. */
        expect_error("{\"remote_zones\":[{\"name\":\"a\",\"protocol\":\"v2\",\"address\":\"0x1000\","
                     "\"services\":[1]},{\"name\":\"b\",\"protocol\":\"v2\",\"address\":\"0x1000\","
                     "\"services\":[2]}]}", "same window");
        /* v2_channels: the backend role. */
        CHECK_EQ(load("{\"v2_channels\":[{\"name\":\"fe\",\"address\":\"0x7e000000\","
                      "\"role\":\"creator\"}]}", &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_v2_channels, 1);
        CHECK(c.v2_channels[0].creator);
        CHECK(strcmp(c.v2_channels[0].mem, "/dev/mem") == 0);
        json = ha_config_to_json(&c, NULL);
        CHECK(json && strstr(json, "\"v2_channels\"") && strstr(json, "\"0x7e000000\""));
        free(json);
        expect_error("{\"v2_channels\":[{\"name\":\"fe\"}]}", "address");
        expect_error("{\"v2_channels\":[{\"name\":\"fe\",\"address\":\"0x1001\"}]}",
                     "aligned");
        expect_error("{\"v2_channels\":[{\"name\":\"fe\",\"address\":\"0x1000\","
                     "\"services\":[1]}]}", "services");
        expect_error("{\"v2_channels\":[{\"name\":\"fe\",\"address\":\"0x1000\","
                     "\"role\":\"x\"}]}", "role");
        expect_error("{\"v2_channels\":[{\"name\":\"a\",\"address\":\"0x1000\"},"
                     "{\"name\":\"b\",\"address\":\"0x1000\"}]}", "same window");
        expect_error("{\"v2_channels\":[{\"name\":\"a\",\"address\":\"0x1000\"},"
                     "{\"name\":\"a\",\"address\":\"0x2000\"}]}", "is also v2_channels[0]");
        expect_error("{\"v2_channels\":[{\"name\":\"a\",\"address\":\"0x1000\",\"x\":1}]}",
                     "v2_channels[0]\": unknown key");
        expect_error("{\"v2_channels\":[7]}", "v2_channels[0]\": must be an object");
        expect_error("{\"v2_channels\":{}}", "v2_channels");
        unlink(path);
        return check_done("test-config-v2");
}
