/* SPDX-License-Identifier: MIT */
#ifndef HA_PRIVSHM_H
#define HA_PRIVSHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "physmem.h"

/*
 * A POSIX shm object the daemon keeps for itself across its own crash: a
 * v1 channel's journal, a remote zone's record of its request at the
 * peer.  A plain object of ours (uid, mode 0600, one link), locked
 * (flock) by the one daemon that uses it, so a second daemon on the same
 * name fails instead of sharing it.  Opened, checked by the caller (its
 * header, by pread), then sized and mapped.
 */
typedef struct HaPrivShm {
        int fd;                         /* -1: not open */
        bool created;                   /* we created the object */
        uint64_t found_size;            /* its size when opened */
        HaPhysMap map;
} HaPrivShm;

#define HA_PRIVSHM_INIT { .fd = -1 }

/* Open or create name ("/..."); what names it in err ("journal").  On
 * failure nothing is kept (no fd; an object it created is removed).
 * -EPERM (not ours alone), -EBUSY (locked by another process), or another
 * negative errno, with the reason in err. */
int ha_privshm_open(HaPrivShm *s, const char *name, const char *what, char *err, size_t errlen);
/* Size it (resize: truncate to size first, zero-filled), allocate every
 * byte (a full /dev/shm is an error now, not a SIGBUS later), map it. */
int ha_privshm_map(HaPrivShm *s, const char *name, const char *what, size_t size, bool resize,
                   char *err, size_t errlen);
/* Unmap and close; with remove, unlink name if it is still this object. */
void ha_privshm_close(HaPrivShm *s, const char *name, bool remove);

#endif
