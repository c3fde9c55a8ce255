/* SPDX-License-Identifier: MIT */
#ifndef HA_SIGBUS_H
#define HA_SIGBUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Shared memory that another process can open for writing can also be
 * shrunk under us (ftruncate): the next access to a page past the new end
 * is SIGBUS, and the daemon would die.  For a guarded mapping the handler
 * grows the file back (and allocates it, so tmpfs cannot run out in the
 * retry) and the access is retried on zero-filled pages: to the daemon that
 * is a peer that scribbled on the memory, which it already survives.
 *
 * ha_sigbus_guard: mapping [base, base + len) holds fd's bytes from off.
 * -ENOSPC past the table's size.  ha_sigbus_unguard before munmap.
 * ha_sigbus_restored: how many faults were repaired so far.
 *
 * When the file cannot be grown back or allocated (a full /dev/shm: the
 * truncation freed the pages, so space reserved at start does not help),
 * the part past the file's old end (or the one page that cannot be had)
 * is replaced with private zero pages: the access completes, the daemon
 * lives on, but those pages are no longer shared with peers.
 * ha_sigbus_lost: how many times that was done.
 * A fault outside any guarded mapping, or one even that cannot fix, is the
 * usual SIGBUS.
 */
int ha_sigbus_guard(void *base, size_t len, int fd, off_t off);
void ha_sigbus_unguard(void *base);
uint64_t ha_sigbus_restored(void);
uint64_t ha_sigbus_lost(void);

#endif
