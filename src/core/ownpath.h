/* SPDX-License-Identifier: MIT */
#ifndef HA_OWNPATH_H
#define HA_OWNPATH_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

/*
 * Remove a name only while it still refers to our object.  Between our
 * start and our exit someone may have unlinked the name and another daemon
 * created its own object or socket there; removing that would let a third
 * daemon start beside the second.  There is no unlink-if-inode syscall, so
 * a replacement in the instant between the check and the unlink still
 * wins; everything before that is caught.
 *
 * ha_shm_unlink_if_ours: shm_unlink(name) if it names the object open on fd.
 * ha_unlink_if_same: unlink(path) if it is still the inode (dev, ino).
 * Both return 0 when removed, -ESTALE when the name is another object's
 * now, or a negative errno (-ENOENT: already gone).
 */
int ha_shm_unlink_if_ours(const char *name, int fd);
int ha_unlink_if_same(const char *path, dev_t dev, ino_t ino);

/*
 * What a daemon owns at its socket path: an flock on "<path>.lock", held
 * from before the bind until the release, and the inode it bound.
 */
typedef struct HaSocketOwner {
        int lock_fd;            /* -1: nothing owned */
        dev_t dev;
        ino_t ino;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char lock_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
} HaSocketOwner;

/*
 * Take path and listen on it (non-blocking, close-on-exec, born 0660):
 * first the lock, so two daemons starting at once cannot both bind, then
 * a stale socket left by a daemon that died is replaced.  Returns the fd,
 * or -EADDRINUSE (another daemon holds the lock, or answers on the path),
 * -EEXIST (the path is not a socket), -EPERM (the directory or the lock
 * file is not ours), or another negative errno; nothing is owned then.
 */
int ha_socket_listen(const char *path, HaSocketOwner *own);

/* Remove the socket if the path is still the inode we bound, then the
 * lock file, and drop the lock.  Safe on an owner that holds nothing. */
void ha_socket_release(HaSocketOwner *own);

#endif
