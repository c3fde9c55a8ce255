/* SPDX-License-Identifier: MIT */
#ifndef HA_OWNPATH_H
#define HA_OWNPATH_H

#include <stdbool.h>
#include <sys/types.h>

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

#endif
