/* SPDX-License-Identifier: MIT */
#ifndef HA_DEVMEM_H
#define HA_DEVMEM_H

#include <stddef.h>
#include <stdint.h>

#include "shmio.h"

/*
 * Copies to and from a mapping of another zone's memory through /dev/mem.
 * With O_SYNC that is Device memory on arm64, where memcpy's unaligned and
 * SIMD accesses fault (SIGBUS): the original team hit exactly this.  These
 * touch the mapping only with aligned 32-bit or single-byte volatile
 * accesses, never wider and never merged; the private side is plain memory.
 * No ordering is implied: publish with a barrier after them.
 */
void ha_devmem_read(void *dst, const volatile void *src, size_t len);
void ha_devmem_write(volatile void *dst, const void *src, size_t len);

#endif
