/* SPDX-License-Identifier: MIT */
#ifndef HA_CONFIG_V2_H
#define HA_CONFIG_V2_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"

/* One "remote_zones" entry whose "protocol" is "v2": keys name, protocol,
 * address, mem, base, role, services, timeout_ms.  i names it in err. */
int ha_config_v2_zone(HaV2ZoneConfig *z, const cJSON *o, unsigned i, char *err, size_t errlen);
/* The entry as the effective config shows it. */
void ha_config_v2_zone_json(const HaV2ZoneConfig *z, cJSON *co);

#endif
