/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hyperamp/cleanup.h"
#include "hyperamp/wire.h"
#include "region.h"

static size_t round_up(size_t v, size_t to)
{
        return (v + to - 1) / to * to;
}

int ha_region_open(HaRegion *r, const char *name, unsigned mode, unsigned entries,
                   uint64_t pool_size, bool persist)
{
        _cleanup_close_ int fd = -1;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t queue_off = page, queue_len, pool_off, size;
        struct stat st;
        void *base;

        memset(r, 0, sizeof(*r));
        r->fd = -1;
        if (strlen(name) >= sizeof(r->name))
                return -ENAMETOOLONG;

        queue_len = round_up(ha_queue_bytes(entries), page);
        pool_off = queue_off + queue_len;
        size = pool_off + round_up(pool_size, page);

        fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_uid != geteuid())
                return -EPERM;
        /* shm_open's mode is filtered by umask and ignored for an old object. */
        if (fchmod(fd, mode) < 0)
                return -errno;
        if (ftruncate(fd, (off_t)size) < 0)
                return -errno;
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
                return -errno;

        r->base = base;
        r->size = size;
        r->unlink_on_close = !persist;
        snprintf(r->name, sizeof(r->name), "%s", name);
        r->hdr = base;
        r->queue_mem = (uint8_t *)base + queue_off;
        r->queue_len = queue_len;
        r->pool = (uint8_t *)base + pool_off;
        r->pool_size = pool_size;

        memset(r->hdr, 0, sizeof(*r->hdr));
        r->hdr->version = HA_REGION_VERSION;
        r->hdr->page_size = (uint32_t)page;
        r->hdr->queue_off = queue_off;
        r->hdr->queue_entries = entries;
        r->hdr->owner_pid = (uint32_t)getpid();
        r->hdr->pool_off = pool_off;
        r->hdr->pool_size = pool_size;
        /* The magic goes last: a peer that sees it sees the rest. */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        memcpy(r->hdr->magic, HA_REGION_MAGIC, sizeof(r->hdr->magic));
        r->fd = TAKE_FD(fd);
        return 0;
}

void ha_region_close(HaRegion *r)
{
        if (r->base) {
                if (r->unlink_on_close)
                        (void)shm_unlink(r->name);
                else
                        memset(r->hdr->magic, 0, sizeof(r->hdr->magic));
                (void)munmap(r->base, r->size);
                r->base = NULL;
        }
        if (r->fd >= 0) {
                (void)close(r->fd);
                r->fd = -1;
        }
}
