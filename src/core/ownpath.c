/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "hyperamp/cleanup.h"
#include "ownpath.h"
#include "sockpath.h"

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

/* The lock, on a file beside the socket: the socket itself cannot be
 * locked before it exists, and bind() cannot replace a stale one. */
static int take_lock(HaSocketOwner *own)
{
        for (;;) {
                _cleanup_close_ int fd = -1;
                struct stat st, now;

                fd = open(own->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                          0600);
                if (fd < 0)
                        return -errno;
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        return errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
                        return -EPERM;
                /* A stopping daemon unlinks the file while it holds the
                 * lock: ours must still be the one at the path. */
                if (lstat(own->lock_path, &now) == 0 && now.st_dev == st.st_dev &&
                    now.st_ino == st.st_ino)
                        return TAKE_FD(fd);
        }
}

int ha_socket_listen(const char *path, HaSocketOwner *own)
{
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        mode_t old;
        int r;

        *own = (HaSocketOwner){ .lock_fd = -1 };
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        snprintf(own->path, sizeof(own->path), "%s", path);
        snprintf(own->lock_path, sizeof(own->lock_path), "%s.lock", path);

        r = ha_socket_dir_prepare(path);
        if (r < 0)
                return r;
        r = take_lock(own);
        if (r < 0)
                return r;
        own->lock_fd = r;

        if (lstat(path, &st) == 0) {
                _cleanup_close_ int probe = -1;

                r = -EEXIST;
                if (!S_ISSOCK(st.st_mode))
                        goto fail;
                /* With the lock, a socket here is stale, unless something
                 * that takes no lock answers on it (systemd's socket unit,
                 * an older hyperampd). */
                probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                r = probe < 0 ? -errno : -EADDRINUSE;
                if (probe < 0 || connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        goto fail;
                (void)ha_unlink_if_same(path, st.st_dev, st.st_ino);
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        old = umask(0117);      /* born 0660: no window with wider access */
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
        umask(old);
        if (r < 0)
                goto fail;
        if (lstat(path, &st) < 0) {
                r = -errno;
                goto fail;
        }
        own->dev = st.st_dev;
        own->ino = st.st_ino;
        ha_pause_point("socket_bound");
        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                goto fail;
        }
        return TAKE_FD(fd);

fail:
        ha_socket_release(own);
        return r;
}

void ha_socket_release(HaSocketOwner *own)
{
        if (own->lock_fd < 0)
                return;
        if (own->ino)
                (void)ha_unlink_if_same(own->path, own->dev, own->ino);
        /* Unlinked while still locked: see take_lock. */
        (void)unlink(own->lock_path);
        (void)close(own->lock_fd);
        *own = (HaSocketOwner){ .lock_fd = -1 };
}
