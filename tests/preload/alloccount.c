/* SPDX-License-Identifier: MIT */
/*
 * LD_PRELOAD allocation counter for tests and bench scripts: counts every
 * malloc, calloc and realloc of the process into a file named by
 * $HA_ALLOC_COUNT (MAP_SHARED, so a test reads it while the process runs).
 * The file holds two little-endian uint64: allocations, frees.  glibc only
 * (__libc_malloc and friends); not for sanitizer builds, whose runtime
 * owns malloc.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static uint64_t *counts;        /* [0] allocations, [1] frees; NULL: not counting */

__attribute__((constructor)) static void alloccount_init(void)
{
        const char *path = getenv("HA_ALLOC_COUNT");
        void *p;
        int fd;

        if (!path)
                return;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        if (ftruncate(fd, 2 * sizeof(uint64_t)) == 0) {
                p = mmap(NULL, 2 * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p != MAP_FAILED)
                        counts = p;
        }
        close(fd);
}

static void count(int i)
{
        if (counts)
                __atomic_fetch_add(&counts[i], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
        count(0);
        return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
        count(0);
        return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
        count(0);
        return __libc_realloc(p, n);
}

void free(void *p)
{
        if (p)
                count(1);
        __libc_free(p);
}
