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
