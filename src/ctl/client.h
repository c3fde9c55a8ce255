/* SPDX-License-Identifier: MIT */
#ifndef HACTL_CLIENT_H
#define HACTL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "clock.h"
#include "proto.h"

/* A blocking control-socket client with a deadline on every call. */
typedef struct HaClient {
        int fd;
        int timeout_ms;
        uint64_t next_id;
} HaClient;

/* -errno: -ENOENT/-ECONNREFUSED (no daemon), -EACCES, -ETIMEDOUT, ... */
int ha_client_connect(HaClient *c, const char *path, int timeout_ms);
void ha_client_close(HaClient *c);

/* Write all of buf before the deadline (absolute, ms on CLOCK_MONOTONIC). */
int ha_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms);

/*
 * Send one request and wait for its reply.  params is consumed (may be
 * NULL).  On success *rep holds the decoded reply and *data (malloc'd, may
 * be NULL) its payload.  -ETIMEDOUT, -ECONNRESET (daemon went away),
 * -EBADMSG (not a hyperampd reply).
 */
int ha_client_call(HaClient *c, const char *method, cJSON *params,
                   const void *payload, size_t plen,
                   HaReply *rep, uint8_t **data, size_t *dlen);

#endif
