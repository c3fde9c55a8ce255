/* SPDX-License-Identifier: MIT */
#ifndef HA_FAULT_H
#define HA_FAULT_H

/*
 * Fault injection for tests: $HYPERAMP_TEST_FAIL="site:ERRNO[,site:ERRNO]"
 * makes ha_fault("site") return -ERRNO (a number or a name such as ENOMEM),
 * so a test can make shm_open, ftruncate, mmap or an allocation fail at
 * start-up without root or a full disk.  0 when not asked for.
 */
int ha_fault(const char *site);

#endif
