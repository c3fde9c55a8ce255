/* SPDX-License-Identifier: MIT */
/*
 * The original shm_config.json: the shipped examples, every field error a
 * user can make, layouts that would let one region clobber another, and
 * mangled input (run under ASan: the parser must never read past len).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hvcfg.h"

/* Phytium Pi / i.MX8MP, as in Baozixu99/hvisor platform configs. */
static const char phytium[] =
        "{ \"shm_regions\": [\n"
        "  { \"region_flag\": \"linux-2-npucore-buf\", \"zone0_ram_ipa\": \"0xde000000\",\n"
        "    \"zonex_ram_ipa\": \"0xde000000\", \"mem_size\": \"0x400000\" },\n"
        "  { \"region_flag\": \"linux-2-npucore-msg\", \"zone0_ram_ipa\": \"0xde400000\",\n"
        "    \"zonex_ram_ipa\": \"0xde410000\", \"mem_size\": \"0x1000\" } ] }\n";

/* Parse a copy without a terminating NUL, so ASan catches any over-read. */
static int parse(const char *text, HaHvConfig *hv, char *err, size_t errlen)
{
        size_t len = strlen(text);
        char *copy = malloc(len ? len : 1);
        int r;

        memcpy(copy, text, len);
        r = ha_hvcfg_parse(copy, len, hv, err, errlen);
        free(copy);
        return r;
}

static void expect_error(const char *text, const char *needle)
{
        HaHvConfig hv;
        char err[512] = "";

        CHECK_EQ(parse(text, &hv, err, sizeof(err)), -EINVAL);
        if (!strstr(err, needle)) {
                fprintf(stderr, "error '%s' does not mention '%s'\n", err, needle);
                CHECK(!"error message names the problem");
        }
}

/* Two regions from field values; NULL leaves a field out. */
static char *two(const char *flag1, const char *z0a, const char *zxa, const char *sizea,
                 const char *flag2, const char *z0b, const char *zxb, const char *sizeb)
{
        static char buf[2048];
        char a[512] = "", b[512] = "";
        size_t n;

#define FIELD(dst, k, v) \
        if (v) { n = strlen(dst); snprintf(dst + n, sizeof(dst) - n, "%s\"%s\": %s", n ? ", " : "", k, v); }
        FIELD(a, "region_flag", flag1);
        FIELD(a, "zone0_ram_ipa", z0a);
        FIELD(a, "zonex_ram_ipa", zxa);
        FIELD(a, "mem_size", sizea);
        FIELD(b, "region_flag", flag2);
        FIELD(b, "zone0_ram_ipa", z0b);
        FIELD(b, "zonex_ram_ipa", zxb);
        FIELD(b, "mem_size", sizeb);
#undef FIELD
        snprintf(buf, sizeof(buf), "{\"shm_regions\": [{%s}, {%s}]}", a, b);
        return buf;
}

#define BUF "\"linux-2-npucore-buf\""
#define MSG "\"linux-2-npucore-msg\""

static void test_examples(void)
{
        HaHvConfig hv;
        char err[512];

        CHECK_EQ(parse(phytium, &hv, err, sizeof(err)), 0);
        CHECK_EQ(hv.buf_addr, 0xde000000);
        CHECK_EQ(hv.buf_size, 0x400000);
        CHECK_EQ(hv.queue_addr, 0xde400000);
        CHECK_EQ(hv.queue_size, 0x1000);
        CHECK_EQ(hv.ready_addr, 0xde410000);
        CHECK_EQ(hv.skipped, 0);

        /* QEMU addresses, msg first, no 0x, upper case, unknown keys ignored
         * (the original reads only the four it knows). */
        CHECK_EQ(parse(two(MSG, "\"7E400000\"", "\"0X7e410000\"", "\"1000\"",
                           BUF, "\"0x7e000000\"", "\"0\"", "\"0x00400000\""), &hv, err,
                       sizeof(err)), 0);
        CHECK_EQ(hv.buf_addr, 0x7e000000);
        CHECK_EQ(hv.queue_addr, 0x7e400000);
        CHECK_EQ(hv.ready_addr, 0x7e410000);
        CHECK_EQ(hv.buf_size, 0x400000);
        CHECK_EQ(parse("{\"#\":\"x\",\"shm_regions\":[{\"region_flag\":" BUF ",\"zone0_ram_ipa\":"
                       "\"0\",\"zonex_ram_ipa\":\"0\",\"mem_size\":\"1000\",\"note\":1},"
                       "{\"region_flag\":" MSG ",\"zone0_ram_ipa\":\"1000\",\"zonex_ram_ipa\":"
                       "\"2000\",\"mem_size\":\"1c\"}]}", &hv, err, sizeof(err)), 0);
        CHECK_EQ(hv.queue_size, 28);    /* header + exactly one entry */

        /* mem_size 0: skipped and counted, the caller warns. */
        CHECK_EQ(parse("{\"shm_regions\":[{\"region_flag\":" MSG ",\"zone0_ram_ipa\":\"5\","
                       "\"zonex_ram_ipa\":\"5\",\"mem_size\":\"0x0\"},"
                       "{\"region_flag\":" BUF ",\"zone0_ram_ipa\":\"0\",\"zonex_ram_ipa\":\"0\","
                       "\"mem_size\":\"1000\"},{\"region_flag\":" MSG ",\"zone0_ram_ipa\":"
                       "\"1000\",\"zonex_ram_ipa\":\"2000\",\"mem_size\":\"1000\"}]}", &hv, err,
                       sizeof(err)), 0);
        CHECK_EQ(hv.skipped, 1);
        CHECK_EQ(hv.queue_addr, 0x1000);
}

static void test_hex(void)
{
        uint64_t v = 1;

        CHECK_EQ(ha_hvcfg_parse_hex("0", &v), 0);
        CHECK_EQ(v, 0);
        CHECK_EQ(ha_hvcfg_parse_hex("0xffffffffffffffff", &v), 0);
        CHECK(v == UINT64_MAX);
        CHECK_EQ(ha_hvcfg_parse_hex("000000000000000000001F", &v), 0);
        CHECK_EQ(v, 0x1f);
        CHECK_EQ(ha_hvcfg_parse_hex("0x10000000000000000", &v), -ERANGE);
        const char *bad[] = { "", "0x", "0X", " 1", "1 ", "-1", "+1", "0x-1", "1g", "0xx1",
                              "1.0", "1\n", "x10", "0x1\t" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = ha_hvcfg_parse_hex(bad[i], &v);
                CHECK_EQ(r, -EINVAL);
                if (r != -EINVAL)
                        fprintf(stderr, "  accepted '%s'\n", bad[i]);
        }
        CHECK_EQ(ha_hvcfg_parse_hex(NULL, &v), -EINVAL);
}

static void test_errors(void)
{
        const char *ok_buf = "\"0x7e000000\"", *ok_msg = "\"0x7e400000\"";

        expect_error("", "not valid JSON");
        expect_error("{\"shm_regions\": [", "not valid JSON");
        expect_error("[]", "top level");
        expect_error("{}", "\"shm_regions\" is missing");
        expect_error("{\"shm_regions\": {}}", "must be an array");
        expect_error("{\"shm_regions\": []}", "no linux-2-npucore-buf region");
        expect_error("{\"shm_regions\": [1]}", "shm_regions[0]: must be an object");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", "\"linux-2-npucore-cmd\"", ok_msg,
                         ok_msg, "\"1000\""), "unknown \"region_flag\" \"linux-2-npucore-cmd\"");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", NULL, ok_msg, ok_msg, "\"1000\""),
                     "shm_regions[1]: \"region_flag\" is missing");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", "7", ok_msg, ok_msg, "\"1000\""),
                     "\"region_flag\" must be a string");
        /* Each field: missing, a JSON number, not hex, too big. */
        expect_error(two(BUF, NULL, ok_buf, "\"400000\"", MSG, ok_msg, ok_msg, "\"1000\""),
                     "shm_regions[0] (linux-2-npucore-buf): \"zone0_ram_ipa\" is missing");
        expect_error(two(BUF, ok_buf, NULL, "\"400000\"", MSG, ok_msg, ok_msg, "\"1000\""),
                     "\"zonex_ram_ipa\" is missing");
        expect_error(two(BUF, ok_buf, ok_buf, NULL, MSG, ok_msg, ok_msg, "\"1000\""),
                     "\"mem_size\" is missing");
        expect_error(two(BUF, ok_buf, ok_buf, "4194304", MSG, ok_msg, ok_msg, "\"1000\""),
                     "\"mem_size\" must be a hex string");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, "\"0xde40zz00\"", ok_msg,
                         "\"1000\""),
                     "shm_regions[1] (linux-2-npucore-msg): \"zone0_ram_ipa\" (\"0xde40zz00\") "
                     "is not a hex number");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, "\" 0x10\"", "\"1000\""),
                     "\"zonex_ram_ipa\" (\" 0x10\") is not a hex number");
        expect_error(two(BUF, ok_buf, ok_buf, "\"-1\"", MSG, ok_msg, ok_msg, "\"1000\""),
                     "\"mem_size\" (\"-1\") is not a hex number");
        expect_error(two(BUF, ok_buf, ok_buf, "\"\"", MSG, ok_msg, ok_msg, "\"1000\""),
                     "\"mem_size\" (\"\") is not a hex number");
        expect_error(two(BUF, "\"0x1ffffffffffffffff\"", ok_buf, "\"400000\"", MSG, ok_msg,
                         ok_msg, "\"1000\""), "\"zone0_ram_ipa\" (\"0x1ffffffffffffffff\") "
                     "does not fit in 64 bits");
        expect_error(two(BUF, "\"0xfffffffffff00000\"", ok_buf, "\"400000\"", MSG, ok_msg,
                         ok_msg, "\"1000\""), "wraps past 2^64");
        /* Layout. */
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", BUF, ok_msg, ok_msg, "\"1000\""),
                     "shm_regions[1]: a second linux-2-npucore-buf region");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, ok_msg, "\"0\""),
                     "no linux-2-npucore-msg region with a non-zero");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, "\"7e410000\"",
                         "\"1b\""), "too small for the queue header and one entry");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, "\"7e400002\"", "\"7e410000\"",
                         "\"1000\""), "\"zone0_ram_ipa\" must be 4-byte aligned");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, "\"7e410001\"",
                         "\"1000\""), "\"zonex_ram_ipa\" must be 4-byte aligned");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, "\"fffffffffffffffc\"",
                         "\"1000\""), "past the end of the address space");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400001\"", MSG, ok_msg, "\"7e410000\"",
                         "\"1000\""), "overlaps the root queue");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, ok_msg, "\"1000\""),
                     "ready page (\"zonex_ram_ipa\") lies inside the root queue");
        expect_error(two(BUF, ok_buf, ok_buf, "\"400000\"", MSG, ok_msg, "\"7e000100\"",
                         "\"1000\""), "lies inside the linux-2-npucore-buf region");
}

static void test_load(void)
{
        char path[] = "/tmp/hyperamp-test-hvcfg-XXXXXX";
        HaHvConfig hv;
        char err[512];
        FILE *f;
        int fd = mkstemp(path);

        CHECK(fd >= 0);
        f = fdopen(fd, "w");
        fputs(phytium, f);
        fclose(f);
        CHECK_EQ(ha_hvcfg_load(path, &hv, err, sizeof(err)), 0);
        CHECK_EQ(hv.ready_addr, 0xde410000);

        f = fopen(path, "w");
        fputs("{\"shm_regions\": 5}", f);
        fclose(f);
        CHECK_EQ(ha_hvcfg_load(path, &hv, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, path) && strstr(err, "must be an array"));

        f = fopen(path, "w");
        for (int i = 0; i < 70000; i++)
                fputc(' ', f);
        fclose(f);
        CHECK_EQ(ha_hvcfg_load(path, &hv, err, sizeof(err)), -EFBIG);
        CHECK(strstr(err, "larger than 64 KiB") != NULL);

        unlink(path);
        CHECK_EQ(ha_hvcfg_load(path, &hv, err, sizeof(err)), -ENOENT);
        CHECK(strstr(err, path) && strstr(err, "No such file"));
}

/* Mangled copies of a good file: each parses or fails cleanly. */
static void test_mangled(void)
{
        size_t len = strlen(phytium);
        unsigned ok = 0, failed = 0;
        char err[512];

        srand(12345);
        for (unsigned round = 0; round < 20000; round++) {
                char *t = malloc(len);
                size_t cut = round % 3 == 0 ? (size_t)rand() % len : len;
                HaHvConfig hv;
                int r;

                memcpy(t, phytium, len);
                for (unsigned k = 0; k < 1 + round % 4; k++)
                        t[(size_t)rand() % len] = (char)(rand() % 256);
                r = ha_hvcfg_parse(t, cut, &hv, err, sizeof(err));
                CHECK(r == 0 || r == -EINVAL);
                if (r == 0) {
                        ok++;
                        /* Whatever got through still satisfies the layout rules. */
                        CHECK(hv.queue_size >= 28 && hv.queue_addr % 4 == 0 &&
                              hv.ready_addr % 4 == 0);
                } else {
                        failed++;
                        CHECK(err[0] != '\0');
                }
                free(t);
        }
        CHECK(failed > 0);
        printf("mangled: %u parsed, %u rejected\n", ok, failed);
}

int main(void)
{
        test_examples();
        test_hex();
        test_errors();
        test_load();
        test_mangled();
        return check_done("hvcfg");
}
