/* SPDX-License-Identifier: MIT */
#ifndef HA_PHYSMEM_H
#define HA_PHYSMEM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Another zone's memory, by physical address, through /dev/mem (O_SYNC:
 * uncached) or, in tests, a regular file standing in for it: the v1
 * channels (service side) and the remote zones (client side) map the
 * regions of an original shm_config.json this way.  A file offset is the
 * physical address minus base.  A regular file's mappings are guarded
 * against a peer that shrinks it (sigbus.h).  Errors: -errno and a
 * one-line reason in err; nothing is logged here.
 */
typedef struct HaPhysMem {
        int fd;
        uint64_t size;          /* a regular file's size; 0: a device */
        uint64_t base;
        char path[256];
} HaPhysMem;

typedef struct HaPhysMap {
        void *addr;
        size_t len;
} HaPhysMap;

int ha_physmem_open(HaPhysMem *m, const char *path, uint64_t base, char *err, size_t errlen);
void ha_physmem_close(HaPhysMem *m);
/* Map len bytes at physical address addr; *ret is addr's byte. */
int ha_physmem_map(HaPhysMem *m, const char *what, uint64_t addr, uint64_t len, HaPhysMap *map,
                   void **ret, char *err, size_t errlen);
void ha_physmap_unmap(HaPhysMap *map);

#endif
