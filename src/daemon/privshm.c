/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ownpath.h"
#include "privshm.h"

static int fail(int r, char *err, size_t errlen, const char *verb, const char *what,
                const char *name)
{
        snprintf(err, errlen, "cannot %s %s /dev/shm%s: %s", verb, what, name, strerror(-r));
        return r;
}

/* A failed open keeps nothing: the fd closed, an object we made removed
 * (a remote zone tries again at its next request). */
static int refuse(HaPrivShm *s, const char *name, int r)
{
        if (s->created)
                (void)ha_shm_unlink_if_ours(name, s->fd);
        close(s->fd);
        s->fd = -1;
        s->created = false;
        return r;
}

int ha_privshm_open(HaPrivShm *s, const char *name, const char *what, char *err, size_t errlen)
{
        struct stat st;

        s->fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        s->created = s->fd >= 0;
        if (s->fd < 0 && errno == EEXIST)
                s->fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
        if (s->fd < 0)
                return fail(-errno, err, errlen, "open", what, name);
        if (fstat(s->fd, &st) < 0)
                return refuse(s, name, fail(-errno, err, errlen, "stat", what, name));
        /* It holds copies of what clients sent and steers writes into
         * their memory: a plain object of ours, linked once, for us alone. */
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != geteuid() ||
            (st.st_mode & 077)) {
                snprintf(err, errlen, "%s /dev/shm%s belongs to uid %u with mode %04o and %u "
                         "links; expected uid %u, mode 0600 and one link: remove it", what, name,
                         (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                         (unsigned)st.st_nlink, (unsigned)geteuid());
                return refuse(s, name, -EPERM);
        }
        if (flock(s->fd, LOCK_EX | LOCK_NB) < 0) {
                int r = errno == EWOULDBLOCK ? -EBUSY : -errno;

                snprintf(err, errlen, "%s /dev/shm%s is in use by another process", what, name);
                return refuse(s, name, r);
        }
        s->found_size = (uint64_t)st.st_size;
        return 0;
}

int ha_privshm_map(HaPrivShm *s, const char *name, const char *what, size_t size, bool resize,
                   char *err, size_t errlen)
{
        void *p;
        int r;

        if (resize && ftruncate(s->fd, (off_t)size) < 0)
                return fail(-errno, err, errlen, "size", what, name);
        r = -posix_fallocate(s->fd, 0, (off_t)size);
        if (r < 0)
                return fail(r, err, errlen, "allocate", what, name);
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
        if (p == MAP_FAILED)
                return fail(-errno, err, errlen, "map", what, name);
        s->map = (HaPhysMap){ p, size };
        return 0;
}

void ha_privshm_close(HaPrivShm *s, const char *name, bool remove)
{
        if (remove && s->fd >= 0)
                (void)ha_shm_unlink_if_ours(name, s->fd);
        ha_physmap_unmap(&s->map);
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -1;
}
