/* SPDX-License-Identifier: MIT */
/* libFuzzer: the daemon's JSON config parser and the original shm_config.json parser. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "hvcfg.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        HaConfig c;
        HaHvConfig hv;
        char err[512];

        ha_log_set_level(LOG_EMERG);
        ha_config_defaults(&c);
        if (ha_config_parse(&c, "fuzz", (const char *)data, size, err, sizeof(err)) == 0) {
                char *json = ha_config_to_json(&c, NULL);
                free(json);
        }
        (void)ha_hvcfg_parse((const char *)data, size, &hv, err, sizeof(err));
        return 0;
}
