/* SPDX-License-Identifier: MIT */
#ifndef HA_SERVICES_H
#define HA_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hyperamp-config.h"
#include "hyperamp/wire.h"

/* A service transforms len bytes in place; it never sees len == 0. */
typedef enum ha_result (*ha_service_fn)(uint8_t *buf, size_t len);

typedef struct HaService {
        uint16_t id;
        const char *name;
        const char *summary;
        ha_service_fn fn;
        bool reads_only;        /* never writes buf: may run where a crash could interrupt it */
        bool quick;             /* never blocks, a few ns a byte: a small one may run on the loop */
} HaService;

/*
 * The one run policy, for every channel: a service that writes its buffer
 * runs on a staged copy whose result is committed whole (a crash never
 * leaves a half-transformed buffer to be run again); one that only reads
 * may run in place.  Decided by reads_only, never by a service's id.
 */
bool ha_service_staged(const HaService *s);

/* The service table, in id order. */
const HaService *ha_services(size_t *ret_n);
const HaService *ha_service_by_id(uint16_t id);
const HaService *ha_service_by_name(const char *name);

/*
 * Run service id over buf.  Unknown id -> NOT_EXITS, len 0 -> FAIL (as the
 * original), otherwise the service's own result.
 */
enum ha_result ha_service_run(uint16_t id, uint8_t *buf, size_t len);

/* Parse "encrypt" or "1" (0..65535).  -ENOENT: an unknown name; -ERANGE: a
 * number past 65535; -EINVAL: neither a name nor a number. */
int ha_service_parse(const char *s, uint16_t *ret_id);

const char *ha_result_name(enum ha_result r);

/*
 * Test seam: service HA_SERVICE_STALL, hidden from the table, blocks its
 * worker until one byte can be read from fd per request.  It lets tests
 * wedge a worker (watchdog) or slow a service down, without sleeping.
 * entered_fd (-1: none, else non-blocking) gets one byte as each request
 * starts to wait, so a test knows a worker is inside.  Only with
 * -Dtest_seams=true (fault.h).
 */
#define HA_SERVICE_STALL 65000
#if HA_TEST_SEAMS
void ha_services_enable_stall(int fd, int entered_fd);
#endif

#endif
