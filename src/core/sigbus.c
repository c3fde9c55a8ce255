/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sigbus.h"

#define MAX_GUARDS 32

/* Read by the handler on any thread: each field is set before `fd` is
 * published with release, and `fd` is cleared first on the way out. */
typedef struct Guard {
        uintptr_t start, end;
        off_t off;
        size_t page;
        int fd;                 /* atomic; -1: free slot */
} Guard;

static Guard guards[MAX_GUARDS] = { [0 ... MAX_GUARDS - 1] = { .fd = -1 } };
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t restored;       /* atomic */
static uint64_t lost;           /* atomic */
static bool installed;

/* The default action, for a SIGBUS that is not ours to repair: for a
 * fault, returning re-runs the access and it dies of it with a core; a
 * SIGBUS sent with kill(2) is raised again. */
static void die_of_it(const siginfo_t *si)
{
        signal(SIGBUS, SIG_DFL);
        if (si->si_code <= 0)
                raise(SIGBUS);
}

/*
 * The last resort, when the file cannot be grown back or its pages cannot
 * be allocated (a full tmpfs): private zero pages over [from, end) of the
 * mapping, so the access completes and the daemon lives on.  Those pages
 * are no longer shared with peers: counted, for the owner to report.
 */
static bool cut_loose(uintptr_t from, uintptr_t end)
{
        if (mmap((void *)from, end - from, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
                return false;
        __atomic_fetch_add(&lost, 1, __ATOMIC_RELAXED);
        return true;
}

/* Only async-signal-safe calls: fstat, ftruncate, fallocate and mmap (plain
 * syscalls), signal, raise. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
        /* Per thread: a second fault at the same address, with the file
         * long enough and no repair anywhere since, is not a truncation (a
         * hole that cannot be allocated, an I/O error): that page is cut
         * loose rather than retried for ever. */
        static __thread uintptr_t last;
        static __thread uint64_t last_gen;
        uint64_t gen = __atomic_load_n(&restored, __ATOMIC_RELAXED);
        uintptr_t a = (uintptr_t)si->si_addr;
        int saved = errno;
        (void)sig, (void)uctx;

        if (si->si_code != BUS_ADRERR) {
                die_of_it(si);
                errno = saved;
                return;
        }
        for (unsigned i = 0; i < MAX_GUARDS; i++) {
                int fd = __atomic_load_n(&guards[i].fd, __ATOMIC_ACQUIRE);
                Guard *g = &guards[i];
                off_t need = g->off + (off_t)(g->end - g->start);
                uintptr_t page, from;
                struct stat st;

                if (fd < 0 || a < g->start || a >= g->end)
                        continue;
                page = a & ~(uintptr_t)(g->page - 1);
                if (fstat(fd, &st) < 0)
                        break;
                if (st.st_size >= need) {
                        /* Another thread grew it back just now: retry once.
                         * Again with no repair since: the page itself cannot
                         * be had (a hole punched in a full tmpfs). */
                        if (last != a || last_gen != gen)
                                last = a, last_gen = gen;
                        else if (!cut_loose(page, page + g->page))
                                break;
                        errno = saved;
                        return;
                }
                /* Only ever grow: other mappings of the file may end later.
                 * Allocate too, so tmpfs cannot fail the retry for space. */
                if (ftruncate(fd, need) < 0 ||
                    (fallocate(fd, 0, g->off, (off_t)(g->end - g->start)) < 0 &&
                     errno != EOPNOTSUPP)) {
                        /* No room: everything past the old end goes private. */
                        from = st.st_size > g->off ?
                               g->start + ((uintptr_t)(st.st_size - g->off) + g->page - 1) /
                               g->page * g->page : g->start;
                        if (!cut_loose(from < page ? from : page, g->end))
                                break;
                        errno = saved;
                        return;
                }
                __atomic_fetch_add(&restored, 1, __ATOMIC_RELAXED);
                errno = saved;
                return;         /* the access is retried, now on a page */
        }
        die_of_it(si);
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
                        guards[i].page = (size_t)sysconf(_SC_PAGESIZE);
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

uint64_t ha_sigbus_lost(void)
{
        return __atomic_load_n(&lost, __ATOMIC_RELAXED);
}
