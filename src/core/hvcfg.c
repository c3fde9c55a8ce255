/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "hvcfg.h"
#include "hyperamp/cleanup.h"
#include "hyperamp/wire.h"

#define MAX_HVCFG_BYTES (64u << 10)

int ha_hvcfg_parse_hex(const char *s, uint64_t *ret)
{
        uint64_t v = 0;
        const char *p = s;

        if (!s)
                return -EINVAL;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
                p += 2;
        if (!*p)
                return -EINVAL;
        /* By hand rather than strtoull: it would take spaces, a sign and
         * trailing junk, which in an address is a typo, not a number. */
        for (; *p; p++) {
                unsigned d;

                if (*p >= '0' && *p <= '9')
                        d = (unsigned)(*p - '0');
                else if (*p >= 'a' && *p <= 'f')
                        d = (unsigned)(*p - 'a' + 10);
                else if (*p >= 'A' && *p <= 'F')
                        d = (unsigned)(*p - 'A' + 10);
                else
                        return -EINVAL;
                if (v >> 60)
                        return -ERANGE;
                v = v << 4 | d;
        }
        *ret = v;
        return 0;
}

typedef struct Region {
        const char *flag;
        bool is_buf;
        uint64_t zone0, zonex, size;
} Region;

static int get_hex(const cJSON *o, const char *field, const char *where, uint64_t *ret,
                   char *err, size_t errlen)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
        int r;

        if (!v) {
                snprintf(err, errlen, "%s: \"%s\" is missing", where, field);
                return -EINVAL;
        }
        if (!cJSON_IsString(v)) {
                snprintf(err, errlen, "%s: \"%s\" must be a hex string such as \"0x1000\"",
                         where, field);
                return -EINVAL;
        }
        r = ha_hvcfg_parse_hex(v->valuestring, ret);
        if (r == -ERANGE)
                snprintf(err, errlen, "%s: \"%s\" (\"%.40s\") does not fit in 64 bits",
                         where, field, v->valuestring);
        else if (r < 0)
                snprintf(err, errlen, "%s: \"%s\" (\"%.40s\") is not a hex number", where,
                         field, v->valuestring);
        return r < 0 ? -EINVAL : 0;
}

static int parse_region(const cJSON *o, unsigned i, Region *reg, char *err, size_t errlen)
{
        const cJSON *flag;
        char where[64];
        int r;

        snprintf(where, sizeof(where), "shm_regions[%u]", i);
        if (!cJSON_IsObject(o)) {
                snprintf(err, errlen, "%s: must be an object", where);
                return -EINVAL;
        }
        flag = cJSON_GetObjectItemCaseSensitive(o, "region_flag");
        if (!flag) {
                snprintf(err, errlen, "%s: \"region_flag\" is missing", where);
                return -EINVAL;
        }
        if (!cJSON_IsString(flag)) {
                snprintf(err, errlen, "%s: \"region_flag\" must be a string", where);
                return -EINVAL;
        }
        reg->is_buf = strcmp(flag->valuestring, HA_HV_FLAG_BUF) == 0;
        if (reg->is_buf)
                reg->flag = HA_HV_FLAG_BUF;
        else if (strcmp(flag->valuestring, HA_HV_FLAG_MSG) == 0)
                reg->flag = HA_HV_FLAG_MSG;
        else {
                /* The original spins forever here; we say what we expected. */
                snprintf(err, errlen, "%s: unknown \"region_flag\" \"%.40s\" (expected \""
                         HA_HV_FLAG_BUF "\" or \"" HA_HV_FLAG_MSG "\")", where,
                         flag->valuestring);
                return -EINVAL;
        }
        snprintf(where, sizeof(where), "shm_regions[%u] (%s)", i, reg->flag);
        r = get_hex(o, "zone0_ram_ipa", where, &reg->zone0, err, errlen);
        if (r == 0)
                r = get_hex(o, "zonex_ram_ipa", where, &reg->zonex, err, errlen);
        if (r == 0)
                r = get_hex(o, "mem_size", where, &reg->size, err, errlen);
        if (r < 0)
                return r;
        if (reg->size > UINT64_MAX - reg->zone0) {
                snprintf(err, errlen, "%s: \"zone0_ram_ipa\" + \"mem_size\" wraps past 2^64",
                         where);
                return -EINVAL;
        }
        return 0;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
        /* Ends do not wrap: parse_region checked them. */
        return a < b + blen && b < a + alen;
}

static int check_layout(const HaHvConfig *c, char *err, size_t errlen)
{
        const uint64_t word = sizeof(uint32_t);

        if (c->queue_size < ha_queue_bytes(1)) {
                snprintf(err, errlen, HA_HV_FLAG_MSG ": \"mem_size\" 0x%llx is too small for "
                         "the queue header and one entry (0x%zx bytes)",
                         (unsigned long long)c->queue_size, ha_queue_bytes(1));
                return -EINVAL;
        }
        if (c->queue_addr % word || c->ready_addr % word) {
                snprintf(err, errlen, HA_HV_FLAG_MSG ": \"%s\" must be 4-byte aligned",
                         c->queue_addr % word ? "zone0_ram_ipa" : "zonex_ram_ipa");
                return -EINVAL;
        }
        if (c->ready_addr > UINT64_MAX - word) {
                snprintf(err, errlen, HA_HV_FLAG_MSG ": \"zonex_ram_ipa\" is past the end of "
                         "the address space");
                return -EINVAL;
        }
        /* The service writes into all three: one must not clobber another. */
        if (overlap(c->buf_addr, c->buf_size, c->queue_addr, c->queue_size)) {
                snprintf(err, errlen, "the " HA_HV_FLAG_BUF " region overlaps the root queue "
                         "(" HA_HV_FLAG_MSG " \"zone0_ram_ipa\")");
                return -EINVAL;
        }
        if (overlap(c->ready_addr, word, c->queue_addr, c->queue_size)) {
                snprintf(err, errlen, HA_HV_FLAG_MSG ": the ready page (\"zonex_ram_ipa\") "
                         "lies inside the root queue (\"zone0_ram_ipa\")");
                return -EINVAL;
        }
        if (overlap(c->ready_addr, word, c->buf_addr, c->buf_size)) {
                snprintf(err, errlen, HA_HV_FLAG_MSG ": the ready page (\"zonex_ram_ipa\") "
                         "lies inside the " HA_HV_FLAG_BUF " region");
                return -EINVAL;
        }
        return 0;
}

int ha_hvcfg_parse(const char *text, size_t len, HaHvConfig *ret, char *err, size_t errlen)
{
        HaHvConfig c = { 0 };
        bool have_buf = false, have_msg = false;
        const cJSON *regions, *o;
        cJSON *root;
        unsigned i = 0;
        int r = 0;

        root = cJSON_ParseWithLength(text, len);
        if (!root) {
                snprintf(err, errlen, "not valid JSON");
                return -EINVAL;
        }
        if (!cJSON_IsObject(root)) {
                snprintf(err, errlen, "the top level must be a JSON object");
                r = -EINVAL;
                goto out;
        }
        regions = cJSON_GetObjectItemCaseSensitive(root, "shm_regions");
        if (!cJSON_IsArray(regions)) {
                snprintf(err, errlen, "\"shm_regions\" %s", regions ? "must be an array" :
                         "is missing");
                r = -EINVAL;
                goto out;
        }
        cJSON_ArrayForEach(o, regions) {
                Region reg;
                bool is_buf;

                r = parse_region(o, i, &reg, err, errlen);
                if (r < 0)
                        goto out;
                if (reg.size == 0) {
                        c.skipped++;
                        i++;
                        continue;
                }
                is_buf = reg.is_buf;
                if (is_buf ? have_buf : have_msg) {
                        snprintf(err, errlen, "shm_regions[%u]: a second %s region", i, reg.flag);
                        r = -EINVAL;
                        goto out;
                }
                if (is_buf) {
                        c.buf_addr = reg.zone0;
                        c.buf_size = reg.size;
                        have_buf = true;
                } else {
                        c.queue_addr = reg.zone0;
                        c.queue_size = reg.size;
                        c.ready_addr = reg.zonex;
                        have_msg = true;
                }
                i++;
        }
        if (!have_buf || !have_msg) {
                snprintf(err, errlen, "no %s region with a non-zero \"mem_size\"",
                         have_buf ? HA_HV_FLAG_MSG : HA_HV_FLAG_BUF);
                r = -EINVAL;
                goto out;
        }
        r = check_layout(&c, err, errlen);
        if (r == 0)
                *ret = c;
out:
        cJSON_Delete(root);
        return r;
}

int ha_hvcfg_load(const char *path, HaHvConfig *ret, char *err, size_t errlen)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ char *buf = NULL;
        char perr[256];
        size_t len;
        int r;

        if (!f) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(-r));
                return r;
        }
        buf = malloc(MAX_HVCFG_BYTES + 1);
        if (!buf) {
                snprintf(err, errlen, "%s: out of memory", path);
                return -ENOMEM;
        }
        len = fread(buf, 1, MAX_HVCFG_BYTES + 1, f);
        if (ferror(f)) {
                snprintf(err, errlen, "%s: read error", path);
                return -EIO;
        }
        if (len > MAX_HVCFG_BYTES) {
                snprintf(err, errlen, "%s: larger than %u KiB", path, MAX_HVCFG_BYTES >> 10);
                return -EFBIG;
        }
        r = ha_hvcfg_parse(buf, len, ret, perr, sizeof(perr));
        if (r < 0)
                snprintf(err, errlen, "%s: %s", path, perr);
        return r;
}
