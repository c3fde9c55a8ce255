/* SPDX-License-Identifier: MIT */
#ifndef HA_REMOTE_V2_H
#define HA_REMOTE_V2_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "engine.h"
#include "stats.h"
#include "hyperamp/wire.h"
#include "v2ring.h"

/*
 * A remote zone over the HyperAMP v2 rings (src/core/v2ring.h), hyperampd
 * as the frontend: a request routed here becomes a SERVICE message on ring
 * B (payload <= 4088 bytes) or a BULK message with its bytes in the data
 * region (up to max_payload and 2 MiB), and its reply is the next message
 * on ring A.  The rings carry no correlation id, so there is exactly one
 * request outstanding (one executor thread) and replies are matched in
 * FIFO order, each checked for its type, service id and length.
 *
 * The seL4 peer answers SERVICE 1/2 and BULK for any id; ids it never
 * answers over the slot (0 echo, proxy types, unknown ids) are refused with
 * NOT_EXITS before anything is sent, so the rings never drift apart; the
 * signed (3/4/5) and mission-data (7/8) services always go as BULK.
 * docs/gateway.md has the defects of the protocol and how each is avoided.
 */
typedef struct HaRemoteV2 HaRemoteV2;

/* The executor: kind "v2", remote (handed private staged copies). */
extern const HaExecutorOps ha_executor_v2;

/* Map the window (cfg->mem at cfg->address - cfg->base); a creator also
 * formats both control blocks.  A connector whose peer has not created the
 * rings yet still opens (state "down": calls fail fast until it has).
 * Logs the reason on failure.  bulk_max: the daemon's max_payload. */
int ha_remote_v2_open(const HaRemoteZoneConfig *cfg, uint64_t bulk_max, HaRemoteV2 **ret);
HaRemoteV2 *ha_remote_v2_close(HaRemoteV2 *z);
/* Any thread, at shutdown: the call in progress and every later one stop
 * waiting for the peer (they fail at once) instead of using timeout_ms. */
void ha_remote_v2_cancel(HaRemoteV2 *z);

/* The executor's call, on its one thread: buf[0..len) is a private copy,
 * transformed in place; returns within the zone's timeout. */
enum ha_result ha_remote_v2_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                 unsigned worker);
/* Any thread: counters and round-trip percentiles. */
void ha_remote_v2_stats(void *ctx, HaStats *s);
/* "ready", "down" (rings not created), "fault" (garbage seen). */
const char *ha_remote_v2_state(void *ctx);

/* How a service id travels: 0 never (refused), 1 slot or bulk by size,
 * 2 bulk only. */
int ha_remote_v2_transport(uint16_t service);

#endif
