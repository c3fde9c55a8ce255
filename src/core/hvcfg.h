/* SPDX-License-Identifier: MIT */
#ifndef HA_HVCFG_H
#define HA_HVCFG_H

#include <stddef.h>
#include <stdint.h>

/*
 * The original HyperAMP shm_config.json (hvisor-tool tools/shm/addr.c):
 *
 *   { "shm_regions": [
 *       { "region_flag": "linux-2-npucore-buf", "zone0_ram_ipa": "0xde000000",
 *         "zonex_ram_ipa": "0xde000000", "mem_size": "0x400000" },
 *       { "region_flag": "linux-2-npucore-msg", "zone0_ram_ipa": "0xde400000",
 *         "zonex_ram_ipa": "0xde410000", "mem_size": "0x1000" } ] }
 *
 * Every number is a hex string, with or without 0x.  The buf region starts
 * at its zone0_ram_ipa (zonex is ignored, as the original does); the msg
 * region gives the root queue (zone0_ram_ipa, mem_size bytes) and the
 * service's own page that carries the ready mark (zonex_ram_ipa).
 */
#define HA_HV_FLAG_BUF "linux-2-npucore-buf"
#define HA_HV_FLAG_MSG "linux-2-npucore-msg"

typedef struct HaHvConfig {
        uint64_t buf_addr, buf_size;            /* data buffer */
        uint64_t queue_addr, queue_size;        /* root -> service queue */
        uint64_t ready_addr;                    /* service's own page (ready mark) */
        unsigned skipped;                       /* regions with mem_size 0 */
} HaHvConfig;

/*
 * Parse the JSON text (len bytes, need not be NUL-terminated).  Both regions
 * must be present once; sizes and addresses must not overflow; the root
 * queue must hold at least one entry and be 4-byte aligned, as must the
 * ready word; no two of buf, root queue and ready word may overlap.  On
 * error returns -EINVAL and a one-line reason naming the region and field.
 * Never logs: the caller reports *skipped.
 */
int ha_hvcfg_parse(const char *text, size_t len, HaHvConfig *ret, char *err, size_t errlen);

/* Read and parse a file (at most 64 KiB); -errno on I/O errors, with err set. */
int ha_hvcfg_load(const char *path, HaHvConfig *ret, char *err, size_t errlen);

/* "1f", "0x1F", "0X0": hex digits after an optional 0x, nothing else (no
 * sign, no spaces).  -EINVAL for anything else, -ERANGE past 64 bits. */
int ha_hvcfg_parse_hex(const char *s, uint64_t *ret);

#endif
