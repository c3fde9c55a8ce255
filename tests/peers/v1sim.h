/* SPDX-License-Identifier: MIT */
#ifndef HA_V1SIM_H
#define HA_V1SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hvcfg.h"
#include "hyperamp/wire.h"

/*
 * What the v1 peer simulator (v1peer) and the raw v1 driver (bench/raw-v1)
 * share: the three regions of a shm_config.json mapped from a file standing
 * in for /dev/mem (file offset = physical address - base, as the daemon's
 * v1_channels do), and the peers' payload algorithms.  Test tools only.
 */
typedef struct V1Map {
        HaHvConfig hv;
        int mem_fd;
        volatile uint8_t *buf;
        size_t buf_len;
        HaMsgQueue *q;                  /* root queue, cap entries mapped */
        uint16_t cap;
        uint32_t *ready;                /* the ready mark (service's own page) */
        HaMsgQueue *ready_q;            /* its 12-byte header, NULL when that would
                                         * overlap another region */
        void *map_addr[3];
        size_t map_len[3];
} V1Map;

/*
 * Load shm_config, open mem (created, or grown to cover the regions, when
 * create is set) and map the regions.  -errno with a one-line reason in err.
 */
int v1sim_map(V1Map *m, const char *shm_config, const char *mem, uint64_t base, bool create,
              char *err, size_t errlen);
void v1sim_unmap(V1Map *m);

/* The Linux service's encrypt/decrypt (the same bytes): XOR with the
 * 16-byte AES test key at i % 16, then 0x55. */
void v1sim_linux_cipher(uint8_t *b, size_t n);
/* The FreeRTOS and seL4 services' encrypt/decrypt: XOR 0x5A. */
void v1sim_xor5a(uint8_t *b, size_t n);

/* The peer conventions: how many of length bytes the transform covers. */
enum v1sim_peer { V1SIM_LINUX, V1SIM_FREERTOS, V1SIM_SEL4 };

int v1sim_peer_parse(const char *s, enum v1sim_peer *ret);
/* Payload as the service expects it, and the reply it should leave: data
 * (n bytes) becomes wire (n or n + 1 bytes, *wire_len) and expect (the same
 * length) for service id (1 or 2 encrypt/decrypt, anything else echo). */
void v1sim_expect(enum v1sim_peer p, uint16_t id, const uint8_t *data, size_t n, uint8_t *wire,
                  uint8_t *expect, size_t *wire_len);

uint64_t v1sim_now_ns(void);

/* "PROG: message" on stderr, exit 2 (usage and set-up errors). */
extern const char *v1sim_prog;
void v1sim_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A decimal or 0x number up to max, else v1sim_die naming opt. */
uint64_t v1sim_num(const char *opt, const char *s, uint64_t max);

#endif
