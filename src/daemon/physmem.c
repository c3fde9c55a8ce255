/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "physmem.h"
#include "sigbus.h"

int ha_physmem_open(HaPhysMem *m, const char *path, uint64_t base, char *err, size_t errlen)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        struct stat st;

        m->size = 0;
        m->base = base;
        snprintf(m->path, sizeof(m->path), "%s", path);
        /* Offsets must keep the addresses' alignment: the queue is read
         * with 16- and 32-bit accesses. */
        if (base % page) {
                snprintf(err, errlen, "base 0x%llx is not a multiple of the page size (0x%llx)",
                         (unsigned long long)base, (unsigned long long)page);
                return -EINVAL;
        }
        m->fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
        if (m->fd < 0 || fstat(m->fd, &st) < 0) {
                int r = -errno;

                snprintf(err, errlen, "cannot open %s: %s", path, strerror(-r));
                return r;
        }
        if (S_ISREG(st.st_mode)) {
                if (st.st_size <= 0) {
                        snprintf(err, errlen, "%s is empty", path);
                        return -EINVAL;
                }
                m->size = (uint64_t)st.st_size;
        } else if (!S_ISCHR(st.st_mode)) {
                snprintf(err, errlen, "%s is neither a memory device nor a regular file", path);
                return -EINVAL;
        }
        return 0;
}

void ha_physmem_close(HaPhysMem *m)
{
        if (m->fd >= 0)
                close(m->fd);
        m->fd = -1;
}

int ha_physmem_map(HaPhysMem *m, const char *what, uint64_t addr, uint64_t len, HaPhysMap *map,
                   void **ret, char *err, size_t errlen)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off, aligned;
        void *p;

        if (addr < m->base) {
                snprintf(err, errlen, "%s at 0x%llx lies below base 0x%llx", what,
                         (unsigned long long)addr, (unsigned long long)m->base);
                return -EINVAL;
        }
        off = addr - m->base;
        aligned = off & ~(page - 1);
        if (len > SIZE_MAX - (off - aligned) || aligned > (uint64_t)INT64_MAX) {
                snprintf(err, errlen, "%s at 0x%llx (0x%llx bytes) cannot be mapped", what,
                         (unsigned long long)addr, (unsigned long long)len);
                return -EINVAL;
        }
        /* Touching a page past the end of a file would be SIGBUS. */
        if (m->size && (off > m->size || len > m->size - off)) {
                snprintf(err, errlen, "%s at 0x%llx + 0x%llx is past the end of %s (%llu bytes; "
                         "base 0x%llx)", what, (unsigned long long)addr, (unsigned long long)len,
                         m->path, (unsigned long long)m->size, (unsigned long long)m->base);
                return -EINVAL;
        }
        p = mmap(NULL, (size_t)(off - aligned + len), PROT_READ | PROT_WRITE, MAP_SHARED, m->fd,
                 (off_t)aligned);
        if (p == MAP_FAILED) {
                int r = -errno;

                snprintf(err, errlen, "cannot map %s at 0x%llx from %s: %s", what,
                         (unsigned long long)addr, m->path, strerror(-r));
                return r;
        }
        /* A file the peer can write, it can also shrink: grow it back. */
        if (m->size && ha_sigbus_guard(p, (size_t)(off - aligned + len), m->fd,
                                       (off_t)aligned) < 0) {
                (void)munmap(p, (size_t)(off - aligned + len));
                snprintf(err, errlen, "cannot guard the mapping of %s", what);
                return -ENOSPC;
        }
        map->addr = p;
        map->len = (size_t)(off - aligned + len);
        *ret = (uint8_t *)p + (off - aligned);
        return 0;
}

void ha_physmap_unmap(HaPhysMap *map)
{
        if (map->addr) {
                ha_sigbus_unguard(map->addr);
                (void)munmap(map->addr, map->len);
        }
        map->addr = NULL;
}
