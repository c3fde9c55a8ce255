/* SPDX-License-Identifier: MIT */
/* Minimal test helpers: every check prints on failure, main returns non-zero. */
#ifndef HA_CHECK_H
#define HA_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                             \
        do {                                                                    \
                check_count++;                                                  \
                if (!(cond)) {                                                  \
                        check_failures++;                                       \
                        fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,  \
                                __LINE__, #cond);                               \
                }                                                               \
        } while (0)

#define CHECK_EQ(a, b)                                                          \
        do {                                                                    \
                long long _a = (long long)(a), _b = (long long)(b);             \
                check_count++;                                                  \
                if (_a != _b) {                                                 \
                        check_failures++;                                       \
                        fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", \
                                __FILE__, __LINE__, #a, _a, #b, _b);            \
                }                                                               \
        } while (0)

/* A part that needs a test seam (fault.h) in a build without them. */
#define CHECK_SKIP_NO_SEAMS(what)                                               \
        printf("SKIP %s: built without -Dtest_seams=true\n", (what))

static inline int check_done(const char *name)
{
        printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
        return check_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
