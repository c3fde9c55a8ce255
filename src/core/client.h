/* SPDX-License-Identifier: MIT */
#ifndef HA_CLIENT_H
#define HA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "clock.h"
#include "proto.h"

/*
 * The blocking control-socket client shared by hyperampctl, its bench and
 * libhyperamp.  Each connect and each call has one absolute deadline on
 * CLOCK_MONOTONIC (now + timeout_ms when it starts) that bounds every wait
 * inside it; nothing sleeps: a wait is on the socket, or in the kernel's
 * connect for room in a full backlog.
 */
typedef struct HaClient {
        int fd;
        int timeout_ms;
        uint64_t next_id;
} HaClient;

/* -errno: -ENOENT/-ECONNREFUSED (no daemon), -EACCES, -ETIMEDOUT, ... */
int ha_client_connect(HaClient *c, const char *path, int timeout_ms);
void ha_client_close(HaClient *c);

/*
 * Send one request and wait for its reply.  params is consumed (may be
 * NULL).  On success *rep holds the decoded reply and *data (malloc'd, may
 * be NULL) its payload.  -ETIMEDOUT, -ECONNRESET (daemon went away),
 * -EBADMSG (not a hyperampd reply).
 */
int ha_client_call(HaClient *c, const char *method, cJSON *params,
                   const void *payload, size_t plen,
                   HaReply *rep, uint8_t **data, size_t *dlen);

/*
 * The same for a reply that carries fds (SCM_RIGHTS) and no payload (zone
 * attach): at most max of them into fds, how many in *nfds.  On failure
 * none is left open; -EBADMSG when more than max came.
 */
int ha_client_call_fds(HaClient *c, const char *method, cJSON *params,
                       HaReply *rep, int *fds, int max, int *nfds);

#endif
