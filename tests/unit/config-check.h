/* SPDX-License-Identifier: MIT */
/* Config-file test helpers: write a file, load it, check the error. */
#ifndef HA_CONFIG_CHECK_H
#define HA_CONFIG_CHECK_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char path[] = "/tmp/hyperamp-test-config-XXXXXX";  /* mkstemp()ed by main */

/* Create the scratch file load() writes to; remove it with unlink(path). */
static void config_check_setup(void)
{
        int fd = mkstemp(path);

        CHECK(fd >= 0);
        if (fd >= 0)
                close(fd);
}

static int load(const char *text, HaConfig *c, char *err, size_t errlen)
{
        FILE *f = fopen(path, "w");

        fputs(text, f);
        fclose(f);
        ha_config_defaults(c);
        return ha_config_load(c, path, err, errlen);
}

static void expect_error(const char *text, const char *needle)
{
        HaConfig c;
        char err[512] = "";

        CHECK(load(text, &c, err, sizeof(err)) < 0);
        if (!strstr(err, needle)) {
                fprintf(stderr, "error '%s' does not mention '%s'\n", err, needle);
                CHECK(!"error message names the problem");
        }
}

#endif
