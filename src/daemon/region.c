/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hyperamp/cleanup.h"
#include "hyperamp/wire.h"
#include "log.h"
#include "fault.h"
#include "ownpath.h"
#include "region.h"
#include "sigbus.h"

static size_t round_up(size_t v, size_t to)
{
        return (v + to - 1) / to * to;
}

void ha_region_stamp(HaRegion *reg)
{
        HaRegionHdr *h = reg->hdr;
        uint64_t magic;

        /* In place, the magic last: a peer never sees it over other fields. */
        h->version = HA_REGION_VERSION;
        h->page_size = (uint32_t)sysconf(_SC_PAGESIZE);
        h->queue_off = (uint64_t)((uint8_t *)reg->queue_mem - (uint8_t *)reg->base);
        h->queue_entries = reg->queue_entries;
        h->owner_pid = (uint32_t)getpid();
        h->pool_off = (uint64_t)(reg->pool - (uint8_t *)reg->base);
        h->pool_size = reg->pool_size;
        /* The magic goes last, with release: a peer that sees it sees the
         * rest (the header is page-aligned, so this is one 8-byte store). */
        memcpy(&magic, HA_REGION_MAGIC, sizeof(magic));
        __atomic_store_n((uint64_t *)(void *)h->magic, magic, __ATOMIC_RELEASE);
}

int ha_region_open(HaRegion *reg, const char *name, unsigned mode, unsigned entries,
                   uint64_t pool_size, bool persist)
{
        _cleanup_close_ int fd = -1;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t queue_off = page, queue_len, pool_off, size;
        struct stat st;
        bool created;
        void *base;
        int r;

        memset(reg, 0, sizeof(*reg));
        reg->fd = -1;
        if (strlen(name) >= sizeof(reg->name))
                return -ENAMETOOLONG;

        queue_len = round_up(ha_queue_bytes(entries), page);
        pool_off = queue_off + queue_len;
        size = pool_off + round_up(pool_size, page);

        r = ha_fault("shm_open");
        if (r < 0)
                return r;
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        created = fd >= 0;
        if (!created && errno == EEXIST)
                fd = shm_open(name, O_RDWR | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                goto fail;      /* never unlink another daemon's object */
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto fail;
        }
        if (st.st_uid != geteuid()) {
                r = -EPERM;
                goto fail;
        }
        /* shm_open's mode is filtered by umask and ignored for an old object. */
        if (fchmod(fd, mode) < 0 || ftruncate(fd, (off_t)size) < 0) {
                r = -errno;
                goto fail;
        }
        r = ha_fault("ftruncate");
        if (r < 0)
                goto fail;
        /* tmpfs reserves nothing on ftruncate: without this a full /dev/shm
         * is a SIGBUS on the first write instead of an error now. */
        r = -posix_fallocate(fd, 0, (off_t)size);
        if (r < 0)
                goto fail;
        r = ha_fault("mmap");
        if (r < 0)
                goto fail;
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
                r = -errno;
                goto fail;
        }

        /* Peers may shrink the object: grow it back rather than die. */
        r = ha_sigbus_guard(base, size, fd, 0);
        if (r < 0) {
                (void)munmap(base, size);
                goto fail;
        }
        reg->base = base;
        reg->size = size;
        reg->unlink_on_close = !persist;
        snprintf(reg->name, sizeof(reg->name), "%s", name);
        reg->hdr = base;
        reg->queue_mem = (uint8_t *)base + queue_off;
        reg->queue_len = queue_len;
        reg->queue_entries = entries;
        reg->pool = (uint8_t *)base + pool_off;
        reg->pool_size = pool_size;
        memset(reg->hdr, 0, sizeof(*reg->hdr));        /* a kept object's old header */
        ha_region_stamp(reg);
        reg->fd = TAKE_FD(fd);
        return 0;

fail:
        if (created && r != -EBUSY)
                (void)ha_shm_unlink_if_ours(name, fd);
        return r;
}

/* The name may have been unlinked and taken by another daemon since we
 * started: leave that one alone. */
void ha_region_unlink(HaRegion *r)
{
        if (r->unlink_on_close && ha_shm_unlink_if_ours(r->name, r->fd) == -ESTALE)
                log_warning("Shared memory %s is another object now, not ours: left in place",
                            r->name);
}

void ha_region_close(HaRegion *r)
{
        if (r->base) {
                if (r->unlink_on_close)
                        ha_region_unlink(r);
                else
                        memset(r->hdr->magic, 0, sizeof(r->hdr->magic));
                ha_sigbus_unguard(r->base);
                (void)munmap(r->base, r->size);
                r->base = NULL;
        }
        if (r->fd >= 0) {
                (void)close(r->fd);
                r->fd = -1;
        }
}
