/* SPDX-License-Identifier: MIT */
/*
 * execv() for a test that starts another program of this build: in a cross
 * build that program runs under the emulator too (meson puts it in
 * MESON_EXE_WRAPPER, the harness in HYPERAMP_EXE_WRAPPER), since an
 * emulated process cannot exec a foreign binary by itself.  Only returns
 * on failure.
 */
#ifndef HA_TEST_EXEC_WRAPPER_H
#define HA_TEST_EXEC_WRAPPER_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline void exec_wrapped(const char *path, char *const argv[])
{
        const char *w = getenv("HYPERAMP_EXE_WRAPPER");
        char *words, *save = NULL, *t;
        char *args[64];
        int n = 0;

        if (!w || !*w)
                w = getenv("MESON_EXE_WRAPPER");
        if (!w || !*w || !(words = strdup(w))) {
                execv(path, argv);
                return;
        }
        for (t = strtok_r(words, " ", &save); t && n < 40; t = strtok_r(NULL, " ", &save))
                args[n++] = t;
        args[n++] = (char *)path;
        for (int i = 1; argv[i] && n < 63; i++)
                args[n++] = argv[i];
        args[n] = NULL;
        execvp(args[0], args);
}

#endif
