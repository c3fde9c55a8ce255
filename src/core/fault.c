/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

static int errno_of(const char *s, size_t len)
{
        static const struct { const char *name; int e; } names[] = {
                { "ENOMEM", ENOMEM }, { "ENOSPC", ENOSPC }, { "EACCES", EACCES },
                { "EMFILE", EMFILE }, { "EIO", EIO }, { "EPERM", EPERM },
        };

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (strlen(names[i].name) == len && strncmp(s, names[i].name, len) == 0)
                        return names[i].e;
        return len && s[0] >= '0' && s[0] <= '9' ? atoi(s) : EIO;
}

int ha_fault(const char *site)
{
        const char *spec = getenv("HYPERAMP_TEST_FAIL");
        size_t n = strlen(site);

        for (const char *p = spec; p && *p;) {
                size_t len = strcspn(p, ",");
                const char *colon = memchr(p, ':', len);

                if (colon && (size_t)(colon - p) == n && strncmp(p, site, n) == 0)
                        return -errno_of(colon + 1, len - (size_t)(colon - p) - 1);
                p += len + (p[len] == ',');
        }
        return 0;
}
