/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#if HA_TEST_SEAMS

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

static struct {
        pthread_once_t once;
        char site[32];
        long left;              /* passes until the kill; 0: not armed */
} crash = { .once = PTHREAD_ONCE_INIT };

static void crash_parse(void)
{
        const char *spec = getenv("HYPERAMP_TEST_CRASH");
        const char *colon = spec ? strchr(spec, ':') : NULL;
        size_t len = colon ? (size_t)(colon - spec) : spec ? strlen(spec) : 0;

        if (!spec || len == 0 || len >= sizeof(crash.site))
                return;
        memcpy(crash.site, spec, len);
        crash.left = colon ? atol(colon + 1) : 1;
}

void ha_crash_point(const char *site)
{
        (void)pthread_once(&crash.once, crash_parse);
        if (__atomic_load_n(&crash.left, __ATOMIC_RELAXED) <= 0 || strcmp(site, crash.site) != 0)
                return;
        if (__atomic_sub_fetch(&crash.left, 1, __ATOMIC_RELAXED) == 0) {
                fprintf(stderr, "HYPERAMP_TEST_CRASH: killed at %s\n", site);
                (void)raise(SIGKILL);
        }
}

void ha_pause_point(const char *site)
{
        static bool done;       /* atomic: only the first pass stops */
        const char *spec = getenv("HYPERAMP_TEST_PAUSE");

        if (!spec || strcmp(spec, site) != 0 || __atomic_exchange_n(&done, true, __ATOMIC_RELAXED))
                return;
        fprintf(stderr, "HYPERAMP_TEST_PAUSE: stopped at %s\n", site);
        (void)raise(SIGSTOP);
}
#endif
