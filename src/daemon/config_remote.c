/* SPDX-License-Identifier: MIT */
/*
 * remote_zones: the service zones hyperampd forwards requests to (the v1
 * gateway, remote_v1.c).  A config file is hostile input: every field is
 * checked, unknown keys are refused, and the error names the key.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "hvcfg.h"
#include "hyperamp/cleanup.h"

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

static const char *const peer_names[] = {
        [HA_PEER_LINUX] = "linux", [HA_PEER_FREERTOS] = "freertos", [HA_PEER_SEL4] = "sel4",
};
static const char *const bell_names[] = {
        [HA_BELL_NONE] = "none", [HA_BELL_IOCTL] = "ioctl", [HA_BELL_MMIO] = "mmio",
        [HA_BELL_FIFO] = "fifo",
};

static const char *const role_names[] = { "connector", "creator" };

const char *ha_peer_name(enum ha_peer p)
{
        return (unsigned)p < ELEMENTSOF(peer_names) ? peer_names[p] : "?";
}

const char *ha_bell_name(enum ha_bell b)
{
        return (unsigned)b < ELEMENTSOF(bell_names) ? bell_names[b] : "?";
}

/* Errors are "array[i].key: why". */
typedef struct Ctx {
        const char *array;
        unsigned i;
        char *err;
        size_t errlen;
} Ctx;

__attribute__((format(printf, 3, 4)))
static int bad(const Ctx *x, const char *key, const char *fmt, ...)
{
        char why[200];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        snprintf(x->err, x->errlen, "\"%s[%u]%s%s\": %s", x->array, x->i, key[0] ? "." : "",
                 key, why);
        return -EINVAL;
}

/* Only the keys in known (NULL-terminated); "#..." keys are comments. */
static int only_keys(const Ctx *x, const char *where, const cJSON *o, const char *const *known)
{
        const cJSON *item;

        cJSON_ArrayForEach(item, o) {
                bool ok = false;

                if (!item->string || item->string[0] == '#')
                        continue;
                for (size_t k = 0; known[k]; k++)
                        ok = ok || strcmp(item->string, known[k]) == 0;
                if (!ok)
                        return bad(x, where, "unknown key \"%.64s\"", item->string);
        }
        return 0;
}

static int get_path(const Ctx *x, const cJSON *o, const char *key, const char *shown,
                    const char *def, char *dst)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

        if (!v && def) {
                snprintf(dst, HA_V1_PATH_MAX, "%s", def);
                return 0;
        }
        if (!v)
                return bad(x, shown, "missing");
        if (!cJSON_IsString(v) || v->valuestring[0] != '/' ||
            strlen(v->valuestring) >= HA_V1_PATH_MAX)
                return bad(x, shown, "must be an absolute path (a string, under 256 bytes)");
        snprintf(dst, HA_V1_PATH_MAX, "%s", v->valuestring);
        return 0;
}

/* An integer in [min, max]; *ret untouched when absent and not required. */
static int get_uint(const Ctx *x, const cJSON *v, const char *shown, bool required,
                    double min, double max, unsigned *ret)
{
        if (!v)
                return required ? bad(x, shown, "missing") : 0;
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= min && v->valuedouble <= max) ||
            v->valuedouble != floor(v->valuedouble))
                return bad(x, shown, "must be an integer from %.0f to %.0f", min, max);
        *ret = (unsigned)v->valuedouble;
        return 0;
}

static int get_hex(const Ctx *x, const cJSON *v, const char *shown, uint64_t *ret)
{
        if (!cJSON_IsString(v) || ha_hvcfg_parse_hex(v->valuestring, ret) < 0)
                return bad(x, shown, "must be a hex string such as \"0x6e410000\"");
        return 0;
}

static int get_choice(const Ctx *x, const cJSON *v, const char *shown,
                      const char *const *names, size_t n, unsigned *ret)
{
        if (!v)
                return bad(x, shown, "missing");
        for (size_t k = 0; cJSON_IsString(v) && k < n; k++)
                if (strcmp(v->valuestring, names[k]) == 0) {
                        *ret = (unsigned)k;
                        return 0;
                }
        return bad(x, shown, "must be one of %s%s%s%s%s%s%s", names[0], n > 1 ? ", " : "",
                   n > 1 ? names[1] : "", n > 2 ? ", " : "", n > 2 ? names[2] : "",
                   n > 3 ? ", " : "", n > 3 ? names[3] : "");
}

static int get_name(const Ctx *x, const cJSON *o, char *dst, size_t size)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "name");

        if (!v)
                return bad(x, "name", "missing");
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= size ||
            strspn(v->valuestring, NAME_CHARS) != strlen(v->valuestring))
                return bad(x, "name", "must be 1-63 of [A-Za-z0-9._-]");
        snprintf(dst, size, "%s", v->valuestring);
        return 0;
}

/* A v2 window: "address" (required) and "base", 4 KiB apart at least. */
static int get_window(const Ctx *x, const cJSON *o, uint64_t *address, uint64_t *base)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "address");
        int r;

        if (!v)
                return bad(x, "address", "missing (the window's physical address)");
        r = get_hex(x, v, "address", address);
        v = cJSON_GetObjectItemCaseSensitive(o, "base");
        *base = 0;
        if (r == 0 && v)
                r = get_hex(x, v, "base", base);
        if (r < 0)
                return r;
        if (*address < *base || ((*address - *base) & 0xfff))
                return bad(x, "address", "must be 4 KiB aligned and not below base");
        return 0;
}

/* "role": connector (the default) or creator. */
static int get_role(const Ctx *x, const cJSON *o, bool *creator)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "role");
        unsigned role = 0;
        int r = 0;

        if (v)
                r = get_choice(x, v, "role", role_names, ELEMENTSOF(role_names), &role);
        *creator = role == 1;
        return r;
}

/* Each element of array v (at most max of size bytes at elems) set, then
 * checked against those before it; *n: how many. */
typedef int (*SetFn)(void *elem, const Ctx *x, const cJSON *o);
typedef int (*PairFn)(const void *a, unsigned ia, const void *b, const Ctx *x);

static int set_array(const cJSON *v, const char *array, void *elems, size_t size,
                     unsigned max, SetFn set, PairFn pair, unsigned *n, char *err,
                     size_t errlen)
{
        const cJSON *o;
        unsigned k = 0;
        int r;

        if (!cJSON_IsArray(v)) {
                snprintf(err, errlen, "\"%s\": wrong type (an array expected)", array);
                return -EINVAL;
        }
        /* Zeroed first, so that ha_config_diff can compare the array bytes. */
        memset(elems, 0, size * max);
        *n = 0;
        cJSON_ArrayForEach(o, v) {
                char *e = (char *)elems + size * k;
                Ctx x = { array, k, err, errlen };

                if (k == max) {
                        snprintf(err, errlen, "\"%s\": at most %u entries", array, max);
                        return -EINVAL;
                }
                if (!cJSON_IsObject(o))
                        return bad(&x, "", "must be an object");
                r = set(e, &x, o);
                for (unsigned j = 0; r == 0 && j < k; j++)
                        r = pair((char *)elems + size * j, j, e, &x);
                if (r < 0)
                        return r;
                k++;
        }
        *n = k;
        return 0;
}

static int set_doorbell(HaRemoteZoneConfig *z, const Ctx *x, const cJSON *d)
{
        static const char *const k_none[] = { "kind", NULL };
        static const char *const k_ioctl[] = { "kind", "device", "zone", NULL };
        static const char *const k_mmio[] = { "kind", "address", "zone", NULL };
        static const char *const k_fifo[] = { "kind", "path", NULL };
        static const char *const *const per_kind[] = {
                [HA_BELL_NONE] = k_none, [HA_BELL_IOCTL] = k_ioctl,
                [HA_BELL_MMIO] = k_mmio, [HA_BELL_FIFO] = k_fifo,
        };
        unsigned kind;
        int r;

        if (!d)
                return bad(x, "doorbell", "missing (an object with \"kind\": ioctl, mmio, "
                           "fifo or none)");
        if (!cJSON_IsObject(d))
                return bad(x, "doorbell", "must be an object");
        r = get_choice(x, cJSON_GetObjectItemCaseSensitive(d, "kind"), "doorbell.kind",
                       bell_names, ELEMENTSOF(bell_names), &kind);
        if (r < 0)
                return r;
        z->bell = (enum ha_bell)kind;
        r = only_keys(x, "doorbell", d, per_kind[kind]);
        if (r < 0)
                return r;
        switch (z->bell) {
        case HA_BELL_NONE:
                return 0;
        case HA_BELL_IOCTL:
                r = get_path(x, d, "device", "doorbell.device", "/dev/hvisor", z->bell_path);
                break;
        case HA_BELL_FIFO:
                return get_path(x, d, "path", "doorbell.path", NULL, z->bell_path);
        case HA_BELL_MMIO: {
                const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, "address");

                if (!a)
                        return bad(x, "doorbell.address", "missing");
                r = get_hex(x, a, "doorbell.address", &z->bell_address);
                if (r == 0 && z->bell_address % 4)
                        r = bad(x, "doorbell.address", "must be 4-byte aligned");
                break;
        }
        }
        if (r < 0)
                return r;
        /* The MMIO word carries the zone in its top 16 bits. */
        return get_uint(x, cJSON_GetObjectItemCaseSensitive(d, "zone"), "doorbell.zone", true,
                        0, 65535, &z->bell_zone);
}

static int set_services(HaRemoteZoneConfig *z, const Ctx *x, const cJSON *v)
{
        const cJSON *s;
        unsigned n = 0;

        if (!v)
                return bad(x, "services", "missing (the service ids routed to this zone)");
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
                return bad(x, "services", "must be a non-empty array of ids 0-65535");
        cJSON_ArrayForEach(s, v) {
                unsigned id;
                int r;

                if (n == HA_REMOTE_MAX_SERVICES)
                        return bad(x, "services", "at most %d ids", HA_REMOTE_MAX_SERVICES);
                r = get_uint(x, s, "services", true, 0, 65535, &id);
                if (r < 0)
                        return r;
                for (unsigned j = 0; j < n; j++)
                        if (z->services[j] == id)
                                return bad(x, "services", "id %u listed twice", id);
                z->services[n++] = (uint16_t)id;
        }
        z->n_services = n;
        return 0;
}

/* "protocol": "v2": the rings' window instead of a queue and doorbell. */
/* timeout_ms and max_pending, both protocols' (defaults 1000 and 64). */
static int get_limits(HaRemoteZoneConfig *z, const Ctx *x, const cJSON *o)
{
        int r;

        z->timeout_ms = 1000;
        z->max_pending = 64;
        r = get_uint(x, cJSON_GetObjectItemCaseSensitive(o, "timeout_ms"), "timeout_ms", false,
                     1, 3600000, &z->timeout_ms);
        if (r == 0)
                r = get_uint(x, cJSON_GetObjectItemCaseSensitive(o, "max_pending"),
                             "max_pending", false, 1, 65535, &z->max_pending);
        return r;
}

static int set_zone_v2(HaRemoteZoneConfig *z, const Ctx *x, const cJSON *o)
{
        static const char *const keys[] = { "name", "protocol", "address", "mem", "base",
                                            "role", "services", "timeout_ms", "max_pending",
                                            NULL };
        int r;

        z->protocol = HA_PROTOCOL_V2;
        r = only_keys(x, "", o, keys);
        if (r == 0)
                r = get_path(x, o, "mem", "mem", "/dev/mem", z->mem);
        if (r == 0)
                r = get_window(x, o, &z->address, &z->base);
        if (r == 0)
                r = get_role(x, o, &z->creator);
        if (r == 0)
                r = set_services(z, x, cJSON_GetObjectItemCaseSensitive(o, "services"));
        return r == 0 ? get_limits(z, x, o) : r;
}

static int set_zone(void *elem, const Ctx *x, const cJSON *o)
{
        static const char *const keys[] = { "name", "protocol", "peer", "shm_config", "mem",
                                            "base", "doorbell", "services", "timeout_ms",
                                            "max_pending", NULL };
        HaRemoteZoneConfig *z = elem;
        const cJSON *proto, *base;
        unsigned peer;
        int r;

        r = get_name(x, o, z->name, sizeof(z->name));
        if (r < 0)
                return r;
        proto = cJSON_GetObjectItemCaseSensitive(o, "protocol");
        if (!proto)
                return bad(x, "protocol", "missing (\"v1\" or \"v2\")");
        if (cJSON_IsString(proto) && strcmp(proto->valuestring, "v2") == 0)
                return set_zone_v2(z, x, o);
        if (!cJSON_IsString(proto) || strcmp(proto->valuestring, "v1") != 0)
                return bad(x, "protocol", "must be \"v1\" or \"v2\"");
        r = only_keys(x, "", o, keys);
        if (r < 0)
                return r;
        r = get_choice(x, cJSON_GetObjectItemCaseSensitive(o, "peer"), "peer", peer_names,
                       ELEMENTSOF(peer_names), &peer);
        if (r < 0)
                return r;
        z->peer = (enum ha_peer)peer;
        r = get_path(x, o, "shm_config", "shm_config", NULL, z->shm_config);
        if (r == 0)
                r = get_path(x, o, "mem", "mem", "/dev/mem", z->mem);
        if (r < 0)
                return r;
        base = cJSON_GetObjectItemCaseSensitive(o, "base");
        z->base = 0;
        if (base && (r = get_hex(x, base, "base", &z->base)) < 0)
                return r;
        r = set_doorbell(z, x, cJSON_GetObjectItemCaseSensitive(o, "doorbell"));
        if (r == 0)
                r = set_services(z, x, cJSON_GetObjectItemCaseSensitive(o, "services"));
        return r == 0 ? get_limits(z, x, o) : r;
}

const char *ha_remote_zones_shared(const HaRemoteZoneConfig *a, const HaRemoteZoneConfig *b)
{
        if (strcmp(a->name, b->name) == 0)
                return "name";
        if (a->protocol == HA_PROTOCOL_V2 && b->protocol == HA_PROTOCOL_V2 &&
            strcmp(a->mem, b->mem) == 0 && a->address - a->base == b->address - b->base)
                return "address";
        if (a->protocol == HA_PROTOCOL_V1 && b->protocol == HA_PROTOCOL_V1 &&
            strcmp(a->shm_config, b->shm_config) == 0 && strcmp(a->mem, b->mem) == 0 &&
            a->base == b->base)
                return "shm_config";
        return NULL;
}

/* What two zones must not share: a name, a queue, a doorbell, a service id. */
static int check_pair(const void *pa, unsigned ia, const void *pb, const Ctx *x)
{
        const HaRemoteZoneConfig *a = pa, *b = pb;
        const char *key = ha_remote_zones_shared(a, b);

        if (key && strcmp(key, "name") == 0)
                return bad(x, "name", "\"%s\" is also remote_zones[%u]'s", b->name, ia);
        if (key && strcmp(key, "address") == 0)
                return bad(x, "address", "same window as remote_zones[%u] (one owner per "
                           "ring)", ia);
        if (key)
                return bad(x, "shm_config", "same queue as remote_zones[%u] (one owner per "
                           "queue)", ia);
        if (a->bell == b->bell && a->bell == HA_BELL_FIFO &&
            strcmp(a->bell_path, b->bell_path) == 0)
                return bad(x, "doorbell.path", "same FIFO as remote_zones[%u]", ia);
        for (unsigned s = 0; s < b->n_services; s++)
                for (unsigned t = 0; t < a->n_services; t++)
                        if (a->services[t] == b->services[s])
                                return bad(x, "services", "id %u is routed to remote_zones[%u] "
                                           "already", b->services[s], ia);
        return 0;
}

int ha_config_set_remote_zones(HaConfig *c, const cJSON *v, char *err, size_t errlen)
{
        return set_array(v, "remote_zones", c->remote_zones, sizeof(c->remote_zones[0]),
                         HA_REMOTE_MAX_ZONES, set_zone, check_pair, &c->n_remote_zones,
                         err, errlen);
}

static void zone_v2_json(const HaRemoteZoneConfig *z, cJSON *zo)
{
        char hex[24];
        cJSON *s;

        cJSON_AddStringToObject(zo, "protocol", "v2");
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)z->address);
        cJSON_AddStringToObject(zo, "address", hex);
        cJSON_AddStringToObject(zo, "mem", z->mem);
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)z->base);
        cJSON_AddStringToObject(zo, "base", hex);
        cJSON_AddStringToObject(zo, "role", role_names[z->creator]);
        s = cJSON_AddArrayToObject(zo, "services");
        for (unsigned k = 0; s && k < z->n_services; k++)
                cJSON_AddItemToArray(s, cJSON_CreateNumber(z->services[k]));
        cJSON_AddNumberToObject(zo, "timeout_ms", z->timeout_ms);
        cJSON_AddNumberToObject(zo, "max_pending", z->max_pending);
}

void ha_config_remote_zones_json(const HaConfig *c, cJSON *o)
{
        cJSON *a;

        if (!c->n_remote_zones)
                return;
        a = cJSON_AddArrayToObject(o, "remote_zones");
        for (unsigned i = 0; a && i < c->n_remote_zones; i++) {
                const HaRemoteZoneConfig *z = &c->remote_zones[i];
                cJSON *zo = cJSON_CreateObject(), *d, *s;
                char hex[24];

                if (!zo)
                        return;
                cJSON_AddItemToArray(a, zo);
                cJSON_AddStringToObject(zo, "name", z->name);
                if (z->protocol == HA_PROTOCOL_V2) {
                        zone_v2_json(z, zo);
                        continue;
                }
                cJSON_AddStringToObject(zo, "protocol", "v1");
                cJSON_AddStringToObject(zo, "peer", ha_peer_name(z->peer));
                cJSON_AddStringToObject(zo, "shm_config", z->shm_config);
                cJSON_AddStringToObject(zo, "mem", z->mem);
                snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)z->base);
                cJSON_AddStringToObject(zo, "base", hex);
                d = cJSON_AddObjectToObject(zo, "doorbell");
                if (d) {
                        cJSON_AddStringToObject(d, "kind", ha_bell_name(z->bell));
                        if (z->bell == HA_BELL_IOCTL)
                                cJSON_AddStringToObject(d, "device", z->bell_path);
                        if (z->bell == HA_BELL_FIFO)
                                cJSON_AddStringToObject(d, "path", z->bell_path);
                        if (z->bell == HA_BELL_MMIO) {
                                snprintf(hex, sizeof(hex), "0x%llx",
                                         (unsigned long long)z->bell_address);
                                cJSON_AddStringToObject(d, "address", hex);
                        }
                        if (z->bell == HA_BELL_IOCTL || z->bell == HA_BELL_MMIO)
                                cJSON_AddNumberToObject(d, "zone", z->bell_zone);
                }
                s = cJSON_AddArrayToObject(zo, "services");
                for (unsigned k = 0; s && k < z->n_services; k++)
                        cJSON_AddItemToArray(s, cJSON_CreateNumber(z->services[k]));
                cJSON_AddNumberToObject(zo, "timeout_ms", z->timeout_ms);
                cJSON_AddNumberToObject(zo, "max_pending", z->max_pending);
        }
}

/* ===== v2_channels: [{"name", "address", "mem", "base", "role"}] ===== */

static int set_v2_channel(void *elem, const Ctx *x, const cJSON *o)
{
        static const char *const keys[] = { "name", "address", "mem", "base", "role", NULL };
        HaV2ChannelConfig *ch = elem;
        int r;

        r = only_keys(x, "", o, keys);
        if (r == 0)
                r = get_name(x, o, ch->name, sizeof(ch->name));
        if (r == 0)
                r = get_path(x, o, "mem", "mem", "/dev/mem", ch->mem);
        if (r == 0)
                r = get_window(x, o, &ch->address, &ch->base);
        if (r == 0)
                r = get_role(x, o, &ch->creator);
        return r;
}

/* One owner per name and per window. */
static int check_channels(const void *pa, unsigned ia, const void *pb, const Ctx *x)
{
        const HaV2ChannelConfig *a = pa, *b = pb;

        if (strcmp(a->name, b->name) == 0)
                return bad(x, "name", "\"%s\" is also v2_channels[%u]'s", b->name, ia);
        if (strcmp(a->mem, b->mem) == 0 && a->address - a->base == b->address - b->base)
                return bad(x, "address", "same window as v2_channels[%u]", ia);
        return 0;
}

int ha_config_set_v2_channels(HaConfig *c, const cJSON *v, char *err, size_t errlen)
{
        return set_array(v, "v2_channels", c->v2_channels, sizeof(c->v2_channels[0]),
                         HA_V2_MAX_CHANNELS, set_v2_channel, check_channels, &c->n_v2_channels,
                         err, errlen);
}

void ha_config_v2_channels_json(const HaConfig *c, cJSON *o)
{
        cJSON *a;

        if (!c->n_v2_channels)
                return;
        a = cJSON_AddArrayToObject(o, "v2_channels");
        for (unsigned i = 0; a && i < c->n_v2_channels; i++) {
                const HaV2ChannelConfig *ch = &c->v2_channels[i];
                cJSON *co = cJSON_CreateObject();
                char hex[24];

                if (!co)
                        return;
                cJSON_AddItemToArray(a, co);
                cJSON_AddStringToObject(co, "name", ch->name);
                snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)ch->address);
                cJSON_AddStringToObject(co, "address", hex);
                cJSON_AddStringToObject(co, "mem", ch->mem);
                snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)ch->base);
                cJSON_AddStringToObject(co, "base", hex);
                cJSON_AddStringToObject(co, "role", role_names[ch->creator]);
        }
}
