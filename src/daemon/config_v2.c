/* SPDX-License-Identifier: MIT */
/* "remote_zones" entries with "protocol": "v2" (remote_v2.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_v2.h"
#include "hvcfg.h"
#include "services.h"

static int bad(char *err, size_t errlen, unsigned i, const char *field, const char *why)
{
        snprintf(err, errlen, "\"remote_zones[%u].%s\": %s", i, field, why);
        return -EINVAL;
}

static int hex(const cJSON *o, const char *field, bool required, uint64_t *ret, unsigned i,
               char *err, size_t errlen)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

        *ret = 0;
        if (!v && !required)
                return 0;
        if (!cJSON_IsString(v) || ha_hvcfg_parse_hex(v->valuestring, ret) < 0)
                return bad(err, errlen, i, field, !v ? "missing" :
                           "must be a hex string such as \"0xde000000\"");
        return 0;
}

static int services(HaV2ZoneConfig *z, const cJSON *v, unsigned i, char *err, size_t errlen)
{
        const cJSON *s;

        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
                return bad(err, errlen, i, "services", !v ? "missing" :
                           "must be a non-empty array of service ids or names");
        cJSON_ArrayForEach(s, v) {
                uint16_t id;

                if (z->n_services == HA_V2_MAX_SERVICES)
                        return bad(err, errlen, i, "services", "too many (at most 16)");
                if (cJSON_IsNumber(s) && s->valuedouble >= 0 && s->valuedouble <= 65535 &&
                    s->valuedouble == floor(s->valuedouble))
                        id = (uint16_t)s->valuedouble;
                else if (!cJSON_IsString(s) || ha_service_parse(s->valuestring, &id) < 0)
                        return bad(err, errlen, i, "services",
                                   "each must be an id 0-65535 or a service name");
                for (unsigned k = 0; k < z->n_services; k++)
                        if (z->services[k] == id)
                                return bad(err, errlen, i, "services", "lists an id twice");
                z->services[z->n_services++] = id;
        }
        return 0;
}

int ha_config_v2_zone(HaV2ZoneConfig *z, const cJSON *o, unsigned i, char *err, size_t errlen)
{
        static const char *const fields[] = { "name", "protocol", "address", "mem", "base",
                                              "role", "services", "timeout_ms" };
        const cJSON *item, *v;
        int r;

        memset(z, 0, sizeof(*z));
        cJSON_ArrayForEach(item, o) {
                bool known = false;

                if (!item->string || item->string[0] == '#')
                        continue;
                for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
                        known = known || strcmp(item->string, fields[f]) == 0;
                if (!known) {
                        snprintf(err, errlen, "\"remote_zones[%u]\": unknown key \"%.64s\" "
                                 "for protocol v2", i, item->string);
                        return -EINVAL;
                }
        }
        v = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= sizeof(z->name) ||
            strspn(v->valuestring, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789._-") != strlen(v->valuestring))
                return bad(err, errlen, i, "name", !v ? "missing" : "must be 1-63 of [A-Za-z0-9._-]");
        snprintf(z->name, sizeof(z->name), "%s", v->valuestring);
        v = cJSON_GetObjectItemCaseSensitive(o, "mem");
        if (!v)
                snprintf(z->mem, sizeof(z->mem), "/dev/mem");
        else if (!cJSON_IsString(v) || v->valuestring[0] != '/' ||
                 strlen(v->valuestring) >= sizeof(z->mem))
                return bad(err, errlen, i, "mem", "must be an absolute path (under 256 bytes)");
        else
                snprintf(z->mem, sizeof(z->mem), "%s", v->valuestring);
        r = hex(o, "address", true, &z->address, i, err, errlen);
        if (r == 0)
                r = hex(o, "base", false, &z->base, i, err, errlen);
        if (r < 0)
                return r;
        if (z->address < z->base || ((z->address - z->base) & 0xfff))
                return bad(err, errlen, i, "address",
                           "must be 4 KiB aligned and not below \"base\"");
        v = cJSON_GetObjectItemCaseSensitive(o, "role");
        if (v && (!cJSON_IsString(v) || (strcmp(v->valuestring, "connector") != 0 &&
                                         strcmp(v->valuestring, "creator") != 0)))
                return bad(err, errlen, i, "role", "must be \"connector\" or \"creator\"");
        z->creator = v && strcmp(v->valuestring, "creator") == 0;
        v = cJSON_GetObjectItemCaseSensitive(o, "timeout_ms");
        z->timeout_ms = 1000;
        if (v) {
                if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= 600000) ||
                    v->valuedouble != floor(v->valuedouble))
                        return bad(err, errlen, i, "timeout_ms", "must be an integer from 1 to 600000");
                z->timeout_ms = (unsigned)v->valuedouble;
        }
        return services(z, cJSON_GetObjectItemCaseSensitive(o, "services"), i, err, errlen);
}

void ha_config_v2_zone_json(const HaV2ZoneConfig *z, cJSON *co)
{
        char buf[24];
        cJSON *a;

        cJSON_AddStringToObject(co, "name", z->name);
        cJSON_AddStringToObject(co, "protocol", "v2");
        snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)z->address);
        cJSON_AddStringToObject(co, "address", buf);
        cJSON_AddStringToObject(co, "mem", z->mem);
        snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)z->base);
        cJSON_AddStringToObject(co, "base", buf);
        cJSON_AddStringToObject(co, "role", z->creator ? "creator" : "connector");
        a = cJSON_AddArrayToObject(co, "services");
        for (unsigned k = 0; k < z->n_services; k++)
                cJSON_AddItemToArray(a, cJSON_CreateNumber(z->services[k]));
        cJSON_AddNumberToObject(co, "timeout_ms", z->timeout_ms);
}
