/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ownpath.h"

int ha_shm_unlink_if_ours(const char *name, int fd)
{
        struct stat ours, now;
        int r, cur;

        if (fd < 0)
                return -EBADF;
        if (fstat(fd, &ours) < 0)
                return -errno;
        /* shm_open adds O_NOFOLLOW; read-only needs no more than we had. */
        cur = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        if (cur < 0)
                return -errno;
        r = fstat(cur, &now) < 0 ? -errno : 0;
        (void)close(cur);
        if (r < 0)
                return r;
        if (now.st_dev != ours.st_dev || now.st_ino != ours.st_ino)
                return -ESTALE;
        return shm_unlink(name) < 0 ? -errno : 0;
}

int ha_unlink_if_same(const char *path, dev_t dev, ino_t ino)
{
        struct stat st;

        if (lstat(path, &st) < 0)
                return -errno;
        if (st.st_dev != dev || st.st_ino != ino)
                return -ESTALE;
        return unlink(path) < 0 ? -errno : 0;
}
