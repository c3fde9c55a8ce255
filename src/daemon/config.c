/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "hvcfg.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "metrics.h"

#define MAX_CONFIG_BYTES (1u << 20)

void ha_config_defaults(HaConfig *c)
{
        memset(c, 0, sizeof(*c));
        c->workers = 0;
        if (geteuid() == 0)
                snprintf(c->shm_name, sizeof(c->shm_name), "/hyperampd");
        else
                snprintf(c->shm_name, sizeof(c->shm_name), "/hyperampd-%u", (unsigned)geteuid());
        c->shm_mode = 0600;
        c->shm_persist = false;
        c->queue_entries = 255;         /* one 4 KiB page, as the original */
        c->pool_size = 4u << 20;        /* 4 MiB, as the original buf region */
        c->max_payload = 1u << 20;
        c->max_connections = 256;
        c->max_connections_per_uid = 0;
        c->output_budget = 64u << 20;
        c->max_inflight_per_conn = 128;  /* below the queue: no one client takes it all */
        c->client_timeout_ms = 60000;
        c->status_interval_ms = 5000;
        c->worker_stall_ms = 10000;
        c->zone_clients = 16;
        c->poll_us = 50;
        c->socket_poll_us = 50;
        c->zone_pool_size = 1u << 20;
        c->admin_group[0] = '\0';
        c->admin_gid = (gid_t)-1;
        c->log_level = LOG_INFO;
        c->metrics_listen[0] = '\0';
        c->metrics_max_connections = 16;
}

unsigned ha_config_workers(const HaConfig *c)
{
        long n;

        if (c->workers)
                return c->workers;
        n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (unsigned)n : 1;
}

enum key_type { K_UINT, K_U64, K_BOOL, K_SHM_NAME, K_MODE, K_LOGLEVEL, K_GROUP, K_V1CHANNELS,
                K_LISTEN, K_REMOTE_ZONES, K_V2CHANNELS };

static const struct config_key {
        const char *name;
        enum key_type type;
        size_t off;
        uint64_t min, max;
        bool live;      /* applied by a reload without a restart */
} keys[] = {
        { "workers", K_UINT, offsetof(HaConfig, workers), 0, 256, false },
        { "shm_name", K_SHM_NAME, offsetof(HaConfig, shm_name), 0, 0, false },
        { "shm_mode", K_MODE, offsetof(HaConfig, shm_mode), 0, 0, false },
        { "shm_persist", K_BOOL, offsetof(HaConfig, shm_persist), 0, 0, false },
        { "queue_entries", K_UINT, offsetof(HaConfig, queue_entries), 1, 65535, false },
        { "pool_size", K_U64, offsetof(HaConfig, pool_size), 4096, 1u << 30, false },
        { "max_payload", K_U64, offsetof(HaConfig, max_payload), 1, 1u << 30, true },
        { "max_connections", K_UINT, offsetof(HaConfig, max_connections), 1, 65536, true },
        { "max_connections_per_uid", K_UINT, offsetof(HaConfig, max_connections_per_uid), 0, 65536, true },
        { "output_budget", K_U64, offsetof(HaConfig, output_budget), 65536, 1ull << 40, true },
        { "max_inflight_per_conn", K_UINT, offsetof(HaConfig, max_inflight_per_conn), 1, 65535, true },
        { "client_timeout_ms", K_UINT, offsetof(HaConfig, client_timeout_ms), 10, 86400000, true },
        { "status_interval_ms", K_UINT, offsetof(HaConfig, status_interval_ms), 100, 3600000, true },
        { "worker_stall_ms", K_UINT, offsetof(HaConfig, worker_stall_ms), 10, 3600000, true },
        { "zone_clients", K_UINT, offsetof(HaConfig, zone_clients), 0, 32, false },
        { "poll_us", K_UINT, offsetof(HaConfig, poll_us), 0, 100000, false },
        { "socket_poll_us", K_UINT, offsetof(HaConfig, socket_poll_us), 0, 100000, true },
        { "zone_pool_size", K_U64, offsetof(HaConfig, zone_pool_size), 4096, 1u << 30, false },
        { "admin_group", K_GROUP, offsetof(HaConfig, admin_group), 0, 0, true },
        { "log_level", K_LOGLEVEL, offsetof(HaConfig, log_level), 0, 0, true },
        { "v1_channels", K_V1CHANNELS, offsetof(HaConfig, v1_channels), 0, 0, false },
        { "metrics_listen", K_LISTEN, offsetof(HaConfig, metrics_listen), 0, 0, false },
        { "metrics_max_connections", K_UINT, offsetof(HaConfig, metrics_max_connections), 1, 1024, false },
        { "remote_zones", K_REMOTE_ZONES, offsetof(HaConfig, remote_zones), 0, 0, true },
        { "v2_channels", K_V2CHANNELS, offsetof(HaConfig, v2_channels), 0, 0, false },
};

static bool shm_name_ok(const char *s)
{
        size_t len = strlen(s);

        if (len < 2 || len >= HA_SHM_NAME_MAX || s[0] != '/')
                return false;
        /* shm_open refuses these: they name /dev/shm itself and its parent. */
        if (strcmp(s, "/.") == 0 || strcmp(s, "/..") == 0)
                return false;
        for (size_t i = 1; i < len; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.'))
                        return false;
        }
        return true;
}

/* ===== v1_channels: [{"name", "shm_config", "mem", "doorbell", "base"}] ===== */

static int v1_path(const cJSON *o, unsigned i, const char *field, const char *def, char *dst,
                   char *err, size_t errlen)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

        if (!v && def) {
                snprintf(dst, HA_V1_PATH_MAX, "%s", def);
                return 0;
        }
        if (!v || !cJSON_IsString(v) || v->valuestring[0] != '/' ||
            strlen(v->valuestring) >= HA_V1_PATH_MAX) {
                snprintf(err, errlen, "\"v1_channels[%u].%s\": %s", i, field,
                         !v ? "missing" : "must be an absolute path (a string, under 256 bytes)");
                return -EINVAL;
        }
        snprintf(dst, HA_V1_PATH_MAX, "%s", v->valuestring);
        return 0;
}

static int set_v1_channel(HaV1ChannelConfig *ch, const cJSON *o, unsigned i, char *err,
                          size_t errlen)
{
        static const char *const fields[] = { "name", "shm_config", "mem", "doorbell", "base" };
        const cJSON *item, *name, *base;
        int r;

        if (!cJSON_IsObject(o)) {
                snprintf(err, errlen, "\"v1_channels[%u]\": must be an object", i);
                return -EINVAL;
        }
        cJSON_ArrayForEach(item, o) {
                bool known = false;
                if (!item->string || item->string[0] == '#')
                        continue;
                for (size_t f = 0; f < ELEMENTSOF(fields); f++)
                        known = known || strcmp(item->string, fields[f]) == 0;
                if (!known) {
                        snprintf(err, errlen, "\"v1_channels[%u]\": unknown key \"%.64s\"", i,
                                 item->string);
                        return -EINVAL;
                }
        }
        name = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsString(name) || !name->valuestring[0] ||
            strlen(name->valuestring) >= sizeof(ch->name) ||
            strspn(name->valuestring, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789._-") != strlen(name->valuestring)) {
                snprintf(err, errlen, "\"v1_channels[%u].name\": %s", i, !name ? "missing" :
                         "must be 1-63 of [A-Za-z0-9._-]");
                return -EINVAL;
        }
        snprintf(ch->name, sizeof(ch->name), "%s", name->valuestring);
        r = v1_path(o, i, "shm_config", NULL, ch->shm_config, err, errlen);
        if (r == 0)
                r = v1_path(o, i, "mem", "/dev/mem", ch->mem, err, errlen);
        if (r == 0)
                r = v1_path(o, i, "doorbell", "/dev/hshm0", ch->doorbell, err, errlen);
        if (r < 0)
                return r;
        base = cJSON_GetObjectItemCaseSensitive(o, "base");
        ch->base = 0;
        if (base && (!cJSON_IsString(base) || ha_hvcfg_parse_hex(base->valuestring, &ch->base) < 0)) {
                snprintf(err, errlen, "\"v1_channels[%u].base\": must be a hex string such as "
                         "\"0x7e000000\"", i);
                return -EINVAL;
        }
        return 0;
}

static int set_v1_channels(HaConfig *c, const cJSON *v, char *err, size_t errlen)
{
        const cJSON *o;
        unsigned n = 0;
        int r;

        if (!cJSON_IsArray(v)) {
                snprintf(err, errlen, "\"v1_channels\": wrong type (an array expected)");
                return -EINVAL;
        }
        /* Zeroed first, so that ha_config_diff can compare the array bytes. */
        memset(c->v1_channels, 0, sizeof(c->v1_channels));
        c->n_v1_channels = 0;
        cJSON_ArrayForEach(o, v) {
                HaV1ChannelConfig *ch = &c->v1_channels[n];

                if (n == HA_V1_MAX_CHANNELS) {
                        snprintf(err, errlen, "\"v1_channels\": at most %d channels",
                                 HA_V1_MAX_CHANNELS);
                        return -EINVAL;
                }
                r = set_v1_channel(ch, o, n, err, errlen);
                if (r < 0)
                        return r;
                /* Two channels on one doorbell would steal each other's wake-ups. */
                for (unsigned j = 0; j < n; j++)
                        if (strcmp(c->v1_channels[j].name, ch->name) == 0 ||
                            strcmp(c->v1_channels[j].doorbell, ch->doorbell) == 0) {
                                snprintf(err, errlen, "\"v1_channels[%u]\": same %s as "
                                         "v1_channels[%u]", n,
                                         strcmp(c->v1_channels[j].name, ch->name) == 0 ?
                                         "name" : "doorbell", j);
                                return -EINVAL;
                        }
                n++;
        }
        c->n_v1_channels = n;
        return 0;
}

static int set_key(HaConfig *c, const struct config_key *k, const cJSON *v,
                   char *err, size_t errlen)
{
        char *field = (char *)c + k->off;
        double d;

        switch (k->type) {
        case K_UINT:
        case K_U64:
                if (!cJSON_IsNumber(v))
                        goto type;
                d = v->valuedouble;
                /* Range first: casting an out-of-range double is undefined. */
                if (!(d >= (double)k->min && d <= (double)k->max) || d != floor(d)) {
                        snprintf(err, errlen, "\"%s\": must be an integer from %llu to %llu",
                                 k->name, (unsigned long long)k->min, (unsigned long long)k->max);
                        return -ERANGE;
                }
                if (k->type == K_UINT)
                        *(unsigned *)field = (unsigned)d;
                else
                        *(uint64_t *)field = (uint64_t)d;
                return 0;
        case K_BOOL:
                if (!cJSON_IsBool(v))
                        goto type;
                *(bool *)field = cJSON_IsTrue(v);
                return 0;
        case K_SHM_NAME:
                if (!cJSON_IsString(v))
                        goto type;
                if (!shm_name_ok(v->valuestring)) {
                        snprintf(err, errlen, "\"%s\": must be \"/\" then 1-126 of "
                                 "[A-Za-z0-9._-], not \".\" or \"..\"", k->name);
                        return -EINVAL;
                }
                snprintf(field, HA_SHM_NAME_MAX, "%s", v->valuestring);
                return 0;
        case K_MODE:
                if (!cJSON_IsString(v))
                        goto type;
                if (strcmp(v->valuestring, "0600") == 0)
                        *(unsigned *)field = 0600;
                else if (strcmp(v->valuestring, "0660") == 0)
                        *(unsigned *)field = 0660;
                else {
                        snprintf(err, errlen, "\"%s\": must be \"0600\" or \"0660\" "
                                 "(the queue is never world-accessible)", k->name);
                        return -EINVAL;
                }
                return 0;
        case K_GROUP: {
                struct group *g;
                if (!cJSON_IsString(v))
                        goto type;
                if (v->valuestring[0] == '\0') {
                        c->admin_group[0] = '\0';
                        c->admin_gid = (gid_t)-1;
                        return 0;
                }
                g = strlen(v->valuestring) < sizeof(c->admin_group) ? getgrnam(v->valuestring) : NULL;
                if (!g) {
                        snprintf(err, errlen, "\"%s\": no group named \"%.64s\"", k->name,
                                 v->valuestring);
                        return -EINVAL;
                }
                snprintf(c->admin_group, sizeof(c->admin_group), "%s", v->valuestring);
                c->admin_gid = g->gr_gid;
                return 0;
        }
        case K_LOGLEVEL: {
                int l;
                if (!cJSON_IsString(v))
                        goto type;
                l = ha_log_level_parse(v->valuestring);
                if (l < 0) {
                        snprintf(err, errlen, "\"%s\": must be one of err, warning, notice, info, debug",
                                 k->name);
                        return -EINVAL;
                }
                *(int *)field = l;
                return 0;
        }
        case K_V1CHANNELS:
                return set_v1_channels(c, v, err, errlen);
        case K_LISTEN:
                if (!cJSON_IsString(v))
                        goto type;
                if (strlen(v->valuestring) >= sizeof(c->metrics_listen) ||
                    (v->valuestring[0] && ha_metrics_parse_listen(v->valuestring, NULL, NULL) < 0)) {
                        snprintf(err, errlen, "\"%s\": must be \"\" (off), \"A.B.C.D:PORT\", "
                                 "\"[IPV6]:PORT\" or \"unix:/PATH\" (under 108 bytes)", k->name);
                        return -EINVAL;
                }
                snprintf(field, sizeof(c->metrics_listen), "%s", v->valuestring);
                return 0;
        case K_REMOTE_ZONES:
                return ha_config_set_remote_zones(c, v, err, errlen);
        case K_V2CHANNELS:
                return ha_config_set_v2_channels(c, v, err, errlen);
        }
type:
        snprintf(err, errlen, "\"%s\": wrong type (%s expected)", k->name,
                 k->type == K_BOOL ? "true or false" :
                 (k->type == K_UINT || k->type == K_U64) ? "a number" : "a string");
        return -EINVAL;
}

int ha_config_validate(const HaConfig *c, char *err, size_t errlen)
{
        if (c->pool_size % 64) {
                snprintf(err, errlen, "\"pool_size\": must be a multiple of 64");
                return -EINVAL;
        }
        /* The pool hands out power-of-two blocks: the largest is the
         * biggest power of two that fits in pool_size. */
        uint64_t largest = UINT64_C(1) << (63 - __builtin_clzll(c->pool_size));
        if (c->max_payload > largest) {
                snprintf(err, errlen, "\"max_payload\" (%llu) exceeds the largest buffer "
                         "\"pool_size\" (%llu) can hold (%llu)",
                         (unsigned long long)c->max_payload, (unsigned long long)c->pool_size,
                         (unsigned long long)largest);
                return -EINVAL;
        }
        if (c->zone_pool_size % 64) {
                snprintf(err, errlen, "\"zone_pool_size\": must be a multiple of 64");
                return -EINVAL;
        }
        if (!shm_name_ok(c->shm_name)) {
                snprintf(err, errlen, "\"shm_name\": invalid");
                return -EINVAL;
        }
        return 0;
}

/* Non-blocking and only a regular file: a FIFO or a device as the config
 * would hold the loop thread on a reload until someone writes to it. */
static char *read_file(const char *path, size_t *ret_len, int *ret_err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                *ret_err = -errno;
                return NULL;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_err = -EINVAL;
                return NULL;
        }
        if (st.st_size > (off_t)MAX_CONFIG_BYTES) {
                *ret_err = -EFBIG;
                return NULL;
        }
        buf = malloc(MAX_CONFIG_BYTES + 1);
        if (!buf) {
                *ret_err = -ENOMEM;
                return NULL;
        }
        /* Up to one byte past the limit: a file that grew since fstat. */
        while (len <= MAX_CONFIG_BYTES) {
                ssize_t n = read(fd, buf + len, MAX_CONFIG_BYTES + 1 - len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        *ret_err = -errno;
                        return NULL;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        if (len > MAX_CONFIG_BYTES) {
                *ret_err = -EFBIG;
                return NULL;
        }
        buf[len] = '\0';
        *ret_len = len;
        return TAKE_PTR(buf);
}

int ha_config_load(HaConfig *c, const char *path, char *err, size_t errlen)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = 0;

        text = read_file(path, &len, &r);
        if (!text) {
                snprintf(err, errlen, "%s: %s", path,
                         r == -EFBIG ? "larger than 1 MiB" :
                         r == -EINVAL ? "not a regular file" : strerror(-r));
                return r;
        }
        return ha_config_parse(c, path, text, len, err, errlen);
}

/* The 1-based line of at in text (1 when at is not in it). */
static unsigned line_of(const char *text, size_t len, const char *at)
{
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        unsigned line = 1;

        for (size_t i = 0; i < off; i++)
                line += text[i] == '\n';
        return line;
}

/*
 * cJSON decodes "\u0000" into a C string, which ends there: "admin_group":
 * "wheel\u0000x" would read as "wheel", and a key "workers\u0000x" as
 * "workers".  Every string in the config names something, so a NUL in
 * one (escaped, or a raw byte anywhere in the file) is an error.
 */
static int check_text(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
        bool in_string = false;

        for (size_t i = 0; i < len; i++) {
                if (text[i] == '\0') {
                        snprintf(err, errlen, "%s:%u: a NUL byte at offset %zu", path,
                                 line_of(text, len, text + i), i);
                        return -EINVAL;
                }
                if (text[i] == '"')
                        in_string = !in_string;
                else if (in_string && text[i] == '\\' && i + 1 < len) {
                        if (len - i >= 6 && text[i + 1] == 'u' &&
                            strncmp(text + i + 2, "0000", 4) == 0) {
                                snprintf(err, errlen, "%s:%u: a string holds \\u0000 (NUL) at "
                                         "offset %zu: not allowed in a name or a path", path,
                                         line_of(text, len, text + i), i);
                                return -EINVAL;
                        }
                        i++;    /* an escaped quote or backslash ends nothing */
                }
        }
        return 0;
}

int ha_config_parse(HaConfig *c, const char *path, const char *text, size_t len, char *err,
                    size_t errlen)
{
        HaConfig n = *c;
        cJSON *root, *item;
        const char *end = NULL;
        int r = 0;

        r = check_text(path, text, len, err, errlen);
        if (r < 0)
                return r;
        root = cJSON_ParseWithLengthOpts(text, len, &end, false);
        if (!root) {
                snprintf(err, errlen, "%s:%u: not valid JSON", path,
                         line_of(text, len, cJSON_GetErrorPtr()));
                return -EINVAL;
        }
        /* cJSON stops after the first value: anything but blanks after it is
         * a second document or junk, not something to ignore. */
        while (end < text + len && strchr(" \t\r\n", *end) && *end)
                end++;
        if (end < text + len) {
                snprintf(err, errlen, "%s:%u: unexpected data after the JSON object, at "
                         "offset %zu", path, line_of(text, len, end), (size_t)(end - text));
                r = -EINVAL;
                goto out;
        }
        if (!cJSON_IsObject(root)) {
                snprintf(err, errlen, "%s: the top level must be a JSON object", path);
                r = -EINVAL;
                goto out;
        }
        cJSON_ArrayForEach(item, root) {
                const struct config_key *k = NULL;
                char kerr[256];

                if (!item->string || item->string[0] == '#')
                        continue;       /* "#key": documentation */
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        if (strcmp(keys[i].name, item->string) == 0)
                                k = &keys[i];
                if (!k) {
                        snprintf(err, errlen, "%s: unknown key \"%s\"", path, item->string);
                        r = -EINVAL;
                        goto out;
                }
                r = set_key(&n, k, item, kerr, sizeof(kerr));
                if (r < 0) {
                        snprintf(err, errlen, "%s: %s", path, kerr);
                        goto out;
                }
        }
        r = ha_config_validate(&n, err, errlen);
        if (r == 0)
                *c = n;
out:
        cJSON_Delete(root);
        return r;
}

char *ha_config_to_json(const HaConfig *c, const char *socket_path)
{
        cJSON *o = cJSON_CreateObject();
        char *s;

        if (!o)
                return NULL;
        if (socket_path)
                cJSON_AddStringToObject(o, "socket", socket_path);
        cJSON_AddNumberToObject(o, "workers", ha_config_workers(c));
        cJSON_AddStringToObject(o, "shm_name", c->shm_name);
        cJSON_AddStringToObject(o, "shm_mode", c->shm_mode == 0660 ? "0660" : "0600");
        cJSON_AddBoolToObject(o, "shm_persist", c->shm_persist);
        cJSON_AddNumberToObject(o, "queue_entries", c->queue_entries);
        cJSON_AddNumberToObject(o, "pool_size", (double)c->pool_size);
        cJSON_AddNumberToObject(o, "max_payload", (double)c->max_payload);
        cJSON_AddNumberToObject(o, "max_connections", c->max_connections);
        cJSON_AddNumberToObject(o, "max_connections_per_uid", c->max_connections_per_uid);
        cJSON_AddNumberToObject(o, "output_budget", (double)c->output_budget);
        cJSON_AddNumberToObject(o, "max_inflight_per_conn", c->max_inflight_per_conn);
        cJSON_AddNumberToObject(o, "client_timeout_ms", c->client_timeout_ms);
        cJSON_AddNumberToObject(o, "status_interval_ms", c->status_interval_ms);
        cJSON_AddNumberToObject(o, "worker_stall_ms", c->worker_stall_ms);
        cJSON_AddNumberToObject(o, "zone_clients", c->zone_clients);
        cJSON_AddNumberToObject(o, "poll_us", c->poll_us);
        cJSON_AddNumberToObject(o, "socket_poll_us", c->socket_poll_us);
        cJSON_AddNumberToObject(o, "zone_pool_size", (double)c->zone_pool_size);
        cJSON_AddStringToObject(o, "admin_group", c->admin_group);
        cJSON_AddStringToObject(o, "log_level", ha_log_level_name(c->log_level));
        cJSON_AddStringToObject(o, "metrics_listen", c->metrics_listen);
        cJSON_AddNumberToObject(o, "metrics_max_connections", c->metrics_max_connections);
        if (c->n_v1_channels) {
                cJSON *a = cJSON_AddArrayToObject(o, "v1_channels");
                for (unsigned i = 0; i < c->n_v1_channels; i++) {
                        const HaV1ChannelConfig *ch = &c->v1_channels[i];
                        cJSON *co = cJSON_CreateObject();
                        char base[24];

                        snprintf(base, sizeof(base), "0x%llx", (unsigned long long)ch->base);
                        cJSON_AddStringToObject(co, "name", ch->name);
                        cJSON_AddStringToObject(co, "shm_config", ch->shm_config);
                        cJSON_AddStringToObject(co, "mem", ch->mem);
                        cJSON_AddStringToObject(co, "doorbell", ch->doorbell);
                        cJSON_AddStringToObject(co, "base", base);
                        cJSON_AddItemToArray(a, co);
                }
        }
        ha_config_remote_zones_json(c, o);
        ha_config_v2_channels_json(c, o);
        s = cJSON_Print(o);
        cJSON_Delete(o);
        return s;
}

/* Bytes of a scalar or string key's field; the channel arrays never change
 * live, remote_zones does (with its count). */
static size_t key_size(const struct config_key *k)
{
        switch (k->type) {
        case K_UINT:
        case K_MODE:
                return sizeof(unsigned);
        case K_U64:
                return sizeof(uint64_t);
        case K_BOOL:
                return sizeof(bool);
        case K_LOGLEVEL:
                return sizeof(int);
        case K_SHM_NAME:
                return HA_SHM_NAME_MAX;
        case K_GROUP:
                return sizeof(((HaConfig *)0)->admin_group);
        case K_LISTEN:
                return sizeof(((HaConfig *)0)->metrics_listen);
        case K_V1CHANNELS:
        case K_REMOTE_ZONES:
        case K_V2CHANNELS:
                break;
        }
        return 0;
}

/* ===== the running snapshot ===== */

typedef struct Snapshot {
        unsigned refs;
        HaConfig cfg;
} Snapshot;

static Snapshot *snapshot_of(const HaConfig *c)
{
        return (Snapshot *)((char *)c - offsetof(Snapshot, cfg));
}

HaConfig *ha_config_new(const HaConfig *src)
{
        Snapshot *s = malloc(sizeof(*s));

        if (!s)
                return NULL;
        s->refs = 1;
        s->cfg = *src;
        return &s->cfg;
}

const HaConfig *ha_config_ref(const HaConfig *c)
{
        if (c)
                __atomic_add_fetch(&snapshot_of(c)->refs, 1, __ATOMIC_RELAXED);
        return c;
}

void ha_config_unref(const HaConfig *c)
{
        /* acq_rel: the last holder sees every other holder's reads done. */
        if (c && __atomic_sub_fetch(&snapshot_of(c)->refs, 1, __ATOMIC_ACQ_REL) == 0)
                free(snapshot_of(c));
}

void ha_config_swap(HaConfigSlot *s, const HaConfig *snap)
{
        ha_config_unref(__atomic_exchange_n(&s->cur, snap, __ATOMIC_ACQ_REL));
}

void ha_config_apply_live(HaConfig *dst, const HaConfig *src)
{
        /* The daemon opens, retires and re-routes the zones (daemon.c). */
        dst->n_remote_zones = src->n_remote_zones;
        memcpy(dst->remote_zones, src->remote_zones, sizeof(dst->remote_zones));
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (keys[i].live)
                        memcpy((char *)dst + keys[i].off, (const char *)src + keys[i].off,
                               key_size(&keys[i]));
        dst->admin_gid = src->admin_gid;        /* resolved with admin_group */
}

static bool key_differs(const struct config_key *k, const HaConfig *a, const HaConfig *b)
{
        const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

        switch (k->type) {
        case K_UINT:
        case K_MODE:
                return *(const unsigned *)fa != *(const unsigned *)fb;
        case K_U64:
                return *(const uint64_t *)fa != *(const uint64_t *)fb;
        case K_BOOL:
                return *(const bool *)fa != *(const bool *)fb;
        case K_LOGLEVEL:
                return *(const int *)fa != *(const int *)fb;
        case K_SHM_NAME:
        case K_GROUP:
        case K_LISTEN:
                return strcmp(fa, fb) != 0;
        case K_V1CHANNELS:
                return a->n_v1_channels != b->n_v1_channels ||
                       memcmp(a->v1_channels, b->v1_channels, sizeof(a->v1_channels)) != 0;
        case K_REMOTE_ZONES:
                return a->n_remote_zones != b->n_remote_zones ||
                       memcmp(a->remote_zones, b->remote_zones, sizeof(a->remote_zones)) != 0;
        case K_V2CHANNELS:
                return a->n_v2_channels != b->n_v2_channels ||
                       memcmp(a->v2_channels, b->v2_channels, sizeof(a->v2_channels)) != 0;
        }
        return false;
}

static void append(char *buf, size_t len, const char *name)
{
        size_t used = strlen(buf);

        snprintf(buf + used, len - used, "%s%s", used ? "," : "", name);
}

void ha_config_diff(const HaConfig *old, const HaConfig *new, char *live, size_t live_len,
                    char *restart, size_t restart_len)
{
        live[0] = restart[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (key_differs(&keys[i], old, new))
                        append(keys[i].live ? live : restart,
                               keys[i].live ? live_len : restart_len, keys[i].name);
}
