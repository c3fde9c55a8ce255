/* SPDX-License-Identifier: MIT */
/* Config files: defaults, every key, and the errors a user will make. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "log.h"

#include "config-check.h"

/* Issue 12: remote_zones, every key and the mistakes a user will make. */
#define RZ(body) "{\"remote_zones\":[" body "]}"
#define RZ_OK "\"name\":\"rtos\",\"protocol\":\"v1\",\"peer\":\"freertos\"," \
              "\"shm_config\":\"/etc/shm.json\",\"services\":[1,2,66]"
static void test_remote_zones(void)
{
        HaConfig c;
        char err[512], *json;

        CHECK_EQ(load(RZ("{" RZ_OK ",\"mem\":\"/tmp/m\",\"base\":\"0xde000000\","
                         "\"doorbell\":{\"kind\":\"ioctl\",\"zone\":1},\"timeout_ms\":250}"),
                      &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_remote_zones, 1);
        CHECK(strcmp(c.remote_zones[0].name, "rtos") == 0);
        CHECK_EQ(c.remote_zones[0].peer, HA_PEER_FREERTOS);
        CHECK_EQ(c.remote_zones[0].base, 0xde000000u);
        CHECK_EQ(c.remote_zones[0].bell, HA_BELL_IOCTL);
        CHECK(strcmp(c.remote_zones[0].bell_path, "/dev/hvisor") == 0);
        CHECK_EQ(c.remote_zones[0].bell_zone, 1);
        CHECK_EQ(c.remote_zones[0].n_services, 3);
        CHECK_EQ(c.remote_zones[0].services[2], 66);
        CHECK_EQ(c.remote_zones[0].timeout_ms, 250);
        CHECK_EQ(c.remote_zones[0].max_pending, 64);
        json = ha_config_to_json(&c, NULL);
        CHECK(json && strstr(json, "\"remote_zones\"") && strstr(json, "\"freertos\"") &&
              strstr(json, "\"0xde000000\""));
        free(json);
        /* Defaults: mem /dev/mem, timeout 1 s; each doorbell kind. */
        CHECK_EQ(load(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"mmio\",\"address\":\"0x6e410000\","
                         "\"zone\":1}},{\"name\":\"s\",\"protocol\":\"v1\",\"peer\":\"sel4\","
                         "\"shm_config\":\"/b.json\",\"services\":[10,11,12,13,0,65535],"
                         "\"doorbell\":{\"kind\":\"none\"}},{\"name\":\"l\",\"protocol\":\"v1\","
                         "\"peer\":\"linux\",\"shm_config\":\"/c.json\",\"services\":[3],"
                         "\"doorbell\":{\"kind\":\"fifo\",\"path\":\"/tmp/bell\"}}"),
                      &c, err, sizeof(err)), 0);
        CHECK_EQ(c.n_remote_zones, 3);
        CHECK(strcmp(c.remote_zones[0].mem, "/dev/mem") == 0);
        CHECK_EQ(c.remote_zones[0].timeout_ms, 1000);
        CHECK_EQ(c.remote_zones[0].bell_address, 0x6e410000u);
        CHECK_EQ(c.remote_zones[1].bell, HA_BELL_NONE);
        CHECK_EQ(c.remote_zones[1].services[5], 65535);
        CHECK(strcmp(c.remote_zones[2].bell_path, "/tmp/bell") == 0);

        expect_error("{\"remote_zones\":{}}", "\"remote_zones\": wrong type");
        expect_error(RZ("1"), "\"remote_zones[0]\": must be an object");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"},\"color\":1}"),
                     "\"remote_zones[0]\": unknown key \"color\"");
        expect_error(RZ("{\"protocol\":\"v1\"}"), "\"remote_zones[0].name\": missing");
        expect_error(RZ("{\"name\":\"a b\"}"), "\"remote_zones[0].name\": must be 1-63");
        expect_error(RZ("{\"name\":\"\"}"), "must be 1-63");
        expect_error(RZ("{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}"),
                     "must be 1-63");
        expect_error(RZ("{\"name\":\"a\"}"), "\"remote_zones[0].protocol\": missing");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v3\"}"), "must be \"v1\"");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"zephyr\"}"),
                     "\"remote_zones[0].peer\": must be one of linux, freertos, sel4");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\"}"),
                     "\"remote_zones[0].shm_config\": missing");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"rel.json\"}"), "must be an absolute path");
        expect_error(RZ("{" RZ_OK ",\"base\":\"-1\",\"doorbell\":{\"kind\":\"none\"}}"),
                     "\"remote_zones[0].base\": must be a hex string");
        expect_error(RZ("{" RZ_OK "}"), "\"remote_zones[0].doorbell\": missing");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":\"fifo\"}"), "must be an object");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"irq\"}}"),
                     "\"remote_zones[0].doorbell.kind\": must be one of none, ioctl, mmio, fifo");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\",\"zone\":1}}"),
                     "\"remote_zones[0].doorbell\": unknown key \"zone\"");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"ioctl\"}}"),
                     "\"remote_zones[0].doorbell.zone\": missing");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"ioctl\",\"zone\":65536}}"),
                     "\"remote_zones[0].doorbell.zone\": must be an integer from 0 to 65535");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"mmio\",\"zone\":1}}"),
                     "\"remote_zones[0].doorbell.address\": missing");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"mmio\",\"zone\":1,"
                        "\"address\":\"0x6e410002\"}}"), "must be 4-byte aligned");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"fifo\"}}"),
                     "\"remote_zones[0].doorbell.path\": missing");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"}}"),
                     "\"remote_zones[0].services\": missing");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"},\"services\":[]}"),
                     "non-empty array");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"},"
                        "\"services\":[1,65536]}"), "must be an integer from 0 to 65535");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"},"
                        "\"services\":[1,\"2\"]}"), "\"remote_zones[0].services\"");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"},"
                        "\"services\":[1,1.5]}"), "\"remote_zones[0].services\"");
        expect_error(RZ("{\"name\":\"a\",\"protocol\":\"v1\",\"peer\":\"linux\","
                        "\"shm_config\":\"/a\",\"doorbell\":{\"kind\":\"none\"},"
                        "\"services\":[7,7]}"), "id 7 listed twice");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"},\"timeout_ms\":0}"),
                     "\"remote_zones[0].timeout_ms\": must be an integer from 1");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"},\"max_pending\":0}"),
                     "\"remote_zones[0].max_pending\"");
        /* Two zones: no shared name, queue, FIFO or service id. */
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"}},{" RZ_OK
                        ",\"doorbell\":{\"kind\":\"none\"}}"),
                     "\"remote_zones[1].name\": \"rtos\" is also remote_zones[0]'s");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"}},{\"name\":\"b\","
                        "\"protocol\":\"v1\",\"peer\":\"linux\",\"shm_config\":\"/etc/shm.json\","
                        "\"services\":[9],\"doorbell\":{\"kind\":\"none\"}}"),
                     "same queue as remote_zones[0]");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"}},{\"name\":\"b\","
                        "\"protocol\":\"v1\",\"peer\":\"linux\",\"shm_config\":\"/b.json\","
                        "\"services\":[9,66],\"doorbell\":{\"kind\":\"none\"}}"),
                     "\"remote_zones[1].services\": id 66 is routed to remote_zones[0]");
        expect_error(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"fifo\",\"path\":\"/f\"}},{\"name\":"
                        "\"b\",\"protocol\":\"v1\",\"peer\":\"linux\",\"shm_config\":\"/b.json\","
                        "\"services\":[9],\"doorbell\":{\"kind\":\"fifo\",\"path\":\"/f\"}}"),
                     "same FIFO as remote_zones[0]");
        expect_error("{\"remote_zones\":[{\"name\":\"a\\u0000b\"}]}", "\\u0000");
        /* A reload applies them (the daemon opens and retires the zones). */
        {
                HaConfig a, b;
                char live[256], restart[256];

                CHECK_EQ(load(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"}}"), &a, err,
                              sizeof(err)), 0);
                CHECK_EQ(load(RZ("{" RZ_OK ",\"doorbell\":{\"kind\":\"none\"},\"timeout_ms\":5}"),
                              &b, err, sizeof(err)), 0);
                ha_config_diff(&a, &b, live, sizeof(live), restart, sizeof(restart));
                CHECK(strcmp(live, "remote_zones") == 0 && restart[0] == '\0');
                ha_config_diff(&a, &a, live, sizeof(live), restart, sizeof(restart));
                CHECK(restart[0] == '\0' && live[0] == '\0');
        }
}

int main(void)
{
        HaConfig c;
        char err[512];
        char *json;

        config_check_setup();
        ha_config_defaults(&c);
        CHECK_EQ(c.queue_entries, 255);
        CHECK_EQ(c.pool_size, 4u << 20);
        CHECK_EQ(c.shm_mode, 0600);
        CHECK(!c.shm_persist);
        CHECK(ha_config_workers(&c) >= 1);
        CHECK_EQ(ha_config_validate(&c, err, sizeof(err)), 0);

        CHECK_EQ(load("{\"#workers\":\"a comment\",\"workers\":3,\"shm_name\":\"/x-y.z\","
                      "\"shm_mode\":\"0660\",\"shm_persist\":true,\"queue_entries\":1000,"
                      "\"pool_size\":1048576,\"max_payload\":4096,\"max_connections\":10,"
                      "\"max_inflight_per_conn\":5,\"log_level\":\"debug\"}", &c, err, sizeof(err)), 0);
        CHECK_EQ(c.workers, 3);
        CHECK(strcmp(c.shm_name, "/x-y.z") == 0);
        CHECK_EQ(c.shm_mode, 0660);
        CHECK(c.shm_persist);
        CHECK_EQ(c.queue_entries, 1000);
        CHECK_EQ(c.pool_size, 1048576);
        CHECK_EQ(c.max_payload, 4096);
        CHECK_EQ(c.max_connections, 10);
        CHECK_EQ(c.max_inflight_per_conn, 5);
        CHECK_EQ(c.log_level, LOG_DEBUG);
        json = ha_config_to_json(&c, "/run/x.sock");
        CHECK(json && strstr(json, "\"queue_entries\":\t1000") && strstr(json, "/run/x.sock"));
        free(json);

        expect_error("{\"wokers\":2}", "unknown key \"wokers\"");
        expect_error("{\"workers\":-1}", "\"workers\"");
        expect_error("{\"workers\":1.5}", "\"workers\"");
        expect_error("{\"workers\":\"2\"}", "wrong type");
        expect_error("{\"queue_entries\":65536}", "\"queue_entries\"");
        expect_error("{\"queue_entries\":0}", "\"queue_entries\"");
        expect_error("{\"shm_mode\":\"0666\"}", "never world-accessible");
        expect_error("{\"shm_name\":\"no-slash\"}", "\"shm_name\"");
        expect_error("{\"shm_name\":\"/a/b\"}", "\"shm_name\"");
        expect_error("{\"shm_persist\":1}", "true or false");
        expect_error("{\"log_level\":\"loud\"}", "\"log_level\"");
        expect_error("{\"pool_size\":100000}", "multiple of 64");
        expect_error("{\"pool_size\":65536,\"max_payload\":65537}", "exceeds");
        /* 12288 = 8192 + 4096: the largest buffer is 8192 */
        expect_error("{\"pool_size\":12288,\"max_payload\":12288}", "can hold (8192)");
        CHECK_EQ(load("{\"pool_size\":12288,\"max_payload\":8192}", &c, err, sizeof(err)), 0);
        expect_error("{\"workers\":2,}", ":1: not valid JSON");
        expect_error("{\n\"workers\":\n2\n,,}", ":4: not valid JSON");
        expect_error("[]", "top level must be a JSON object");
        expect_error("", "not valid JSON");

        /* A failed load leaves the old config untouched. */
        ha_config_defaults(&c);
        c.workers = 7;
        {
                FILE *f = fopen(path, "w");
                fputs("{\"workers\":2,\"bogus\":1}", f);
                fclose(f);
        }
        CHECK(ha_config_load(&c, path, err, sizeof(err)) < 0);
        CHECK_EQ(c.workers, 7);
        CHECK(ha_config_load(&c, "/nonexistent/hyperampd.json", err, sizeof(err)) == -ENOENT);
        CHECK(strstr(err, "No such file") != NULL);

        /* Issue 16: a second document or junk after the object is an error
         * naming its offset; blanks after it are not. */
        expect_error("{\"workers\":2} junk {\"workers\":3}", "after the JSON object, at offset 14");
        expect_error("{\"workers\":2}{\"workers\":3}", "at offset 13");
        expect_error("{\"workers\":2}\n\n]", ":3: unexpected data");
        CHECK_EQ(load("{\"workers\":2}\n \t\r\n", &c, err, sizeof(err)), 0);

        /* Issue 16: "\u0000" would end the C string cJSON hands over. */
        expect_error("{\"admin_group\":\"root\\u0000junk\"}", "\\u0000 (NUL) at offset 20");
        expect_error("{\"workers\\u0000x\":2}", "\\u0000");
        expect_error("{\"shm_name\":\"/a\\u0000b\"}", "\\u0000");
        expect_error("{\"v1_channels\":[{\"name\":\"a\\u0000b\",\"shm_config\":\"/x\"}]}",
                     "\\u0000");
        expect_error("{\"v1_channels\":[{\"name\":\"a\",\"shm_config\":\"/x\\u0000/y\"}]}",
                     "\\u0000");
        /* An escaped backslash, then the text u0000: no NUL. */
        CHECK_EQ(load("{\"#c\":\"\\\\u0000\",\"workers\":2}", &c, err, sizeof(err)), 0);
        CHECK_EQ(c.workers, 2);
        CHECK_EQ(ha_config_parse(&c, "mem", "{\"workers\":2}\0{}", 16, err, sizeof(err)),
                 -EINVAL);
        CHECK(strstr(err, "NUL byte at offset 13") != NULL);

        /* Issue 16: names shm_open refuses. */
        expect_error("{\"shm_name\":\"/.\"}", "\"shm_name\"");
        expect_error("{\"shm_name\":\"/..\"}", "\"shm_name\"");
        CHECK_EQ(load("{\"shm_name\":\"/...\"}", &c, err, sizeof(err)), 0);

        /* Issue 16: a FIFO as the config must not block (alarm: a hang fails). */
        {
                char fifo[sizeof(path) + 8];

                snprintf(fifo, sizeof(fifo), "%s.fifo", path);
                CHECK_EQ(mkfifo(fifo, 0600), 0);
                alarm(10);
                CHECK_EQ(ha_config_load(&c, fifo, err, sizeof(err)), -EINVAL);
                alarm(0);
                CHECK(strstr(err, "not a regular file") != NULL);
                unlink(fifo);
                CHECK_EQ(ha_config_load(&c, "/dev/null", err, sizeof(err)), -EINVAL);
                CHECK(strstr(err, "not a regular file") != NULL);
        }
        /* Bounded: 1 MiB + 1 byte is refused before it is read. */
        {
                FILE *f = fopen(path, "w");

                CHECK(f != NULL);
                fputs("{\"#c\":\"", f);
                for (unsigned i = 0; i < (1u << 20); i++)
                        fputc('x', f);
                fputs("\"}", f);
                fclose(f);
                CHECK_EQ(ha_config_load(&c, path, err, sizeof(err)), -EFBIG);
                CHECK(strstr(err, "larger than 1 MiB") != NULL);
        }

        test_remote_zones();
        unlink(path);
        /* The running snapshot: a copy, refcounted; a reader's reference
         * outlives the swap that replaces it (ASan and valgrind see a use
         * after free or a leak). */
        {
                HaConfig src;
                HaConfigSlot slot;
                const HaConfig *held;

                ha_config_defaults(&src);
                src.max_payload = 111;
                slot.cur = ha_config_new(&src);
                CHECK(slot.cur != NULL && slot.cur != &src);
                src.max_payload = 222;
                CHECK_EQ(ha_config_get(&slot)->max_payload, 111);
                held = ha_config_ref(ha_config_get(&slot));
                ha_config_swap(&slot, ha_config_new(&src));
                CHECK_EQ(ha_config_get(&slot)->max_payload, 222);
                CHECK_EQ(held->max_payload, 111);
                ha_config_unref(held);
                ha_config_swap(&slot, NULL);
                CHECK(ha_config_get(&slot) == NULL);
        }
        return check_done("test-config");
}
