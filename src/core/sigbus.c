/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sigbus.h"

#define MAX_GUARDS 32

/* Read by the handler on any thread: each field is set before `fd` is
 * published with release, and `fd` is cleared first on the way out. */
typedef struct Guard {
        uintptr_t start, end;
        off_t off;
        int fd;                 /* atomic; -1: free slot */
} Guard;

static Guard guards[MAX_GUARDS] = { [0 ... MAX_GUARDS - 1] = { .fd = -1 } };
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t restored;       /* atomic */
static bool installed;

/* Only async-signal-safe calls: fstat, ftruncate, fallocate (a plain
 * syscall), sigaction. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
        uintptr_t a = (uintptr_t)si->si_addr;
        int saved = errno;
        (void)sig, (void)uctx;

        for (unsigned i = 0; i < MAX_GUARDS; i++) {
                int fd = __atomic_load_n(&guards[i].fd, __ATOMIC_ACQUIRE);
                Guard *g = &guards[i];
                off_t need = g->off + (off_t)(g->end - g->start);
                struct stat st;

                if (fd < 0 || a < g->start || a >= g->end)
                        continue;
                /* Only ever grow: other mappings of the file may end later. */
                if (fstat(fd, &st) == 0 && (st.st_size >= need || ftruncate(fd, need) == 0) &&
                    fallocate(fd, 0, g->off, (off_t)(g->end - g->start)) == 0) {
                        __atomic_fetch_add(&restored, 1, __ATOMIC_RELAXED);
                        errno = saved;
                        return;         /* the access is retried, now on a page */
                }
                break;
        }
        /* Not ours, or beyond repair: die of it as if no handler were set
         * (the access faults again with the default action). */
        signal(SIGBUS, SIG_DFL);
        errno = saved;
}

int ha_sigbus_guard(void *base, size_t len, int fd, off_t off)
{
        int r = -ENOSPC;

        pthread_mutex_lock(&lock);
        if (!installed) {
                struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };

                sigemptyset(&sa.sa_mask);
                if (sigaction(SIGBUS, &sa, NULL) < 0) {
                        r = -errno;
                        goto out;
                }
                installed = true;
        }
        for (unsigned i = 0; i < MAX_GUARDS; i++)
                if (__atomic_load_n(&guards[i].fd, __ATOMIC_RELAXED) < 0) {
                        guards[i].start = (uintptr_t)base;
                        guards[i].end = (uintptr_t)base + len;
                        guards[i].off = off;
                        __atomic_store_n(&guards[i].fd, fd, __ATOMIC_RELEASE);
                        r = 0;
                        break;
                }
out:
        pthread_mutex_unlock(&lock);
        return r;
}

void ha_sigbus_unguard(void *base)
{
        pthread_mutex_lock(&lock);
        for (unsigned i = 0; i < MAX_GUARDS; i++)
                if (__atomic_load_n(&guards[i].fd, __ATOMIC_RELAXED) >= 0 &&
                    guards[i].start == (uintptr_t)base)
                        __atomic_store_n(&guards[i].fd, -1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&lock);
}

uint64_t ha_sigbus_restored(void)
{
        return __atomic_load_n(&restored, __ATOMIC_RELAXED);
}
