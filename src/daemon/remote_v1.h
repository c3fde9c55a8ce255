/* SPDX-License-Identifier: MIT */
#ifndef HA_REMOTE_V1_H
#define HA_REMOTE_V1_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "engine.h"
#include "stats.h"
#include "hyperamp/wire.h"

/*
 * A remote service zone over HyperAMP v1: hyperampd as the root-zone
 * owner of the zone's root queue, the client of its unmodified service
 * (Linux, FreeRTOS, seL4), one request at a time (stop-and-wait), as
 * hyperamp-peers.md §5 describes and docs/gateway.md explains:
 *
 *   wait for the peer's ready mark -> format the queue once per peer
 *   lifetime -> write the payload at offset >= 64 (64-aligned, padded),
 *   the entry, length last after a barrier -> proc_ing_h, BUSY ->
 *   doorbell -> poll the flag (spin, then a timerfd backoff) -> re-read
 *   until the result bits are set -> read the result in place -> wait
 *   for IDLE -> release: length 0, barrier, flag 0.
 *
 * Everything the peer writes is checked against the gateway's own record
 * (flag bits; service_id, offset and length unchanged; the queue header
 * and a canary at buf offset 0 that a restarting peer overwrites) and
 * counted.  A request not answered in timeout_ms is rung once more at
 * half time, then fails with HA_RESULT_TIMEOUT; its entry stays
 * quarantined (nothing else is sent) until the peer answers it late or
 * restarts.  Three timeouts in a row mark the zone down: from then on a
 * request that finds the peer still silent fails at once.
 *
 * Threads: new/free on the loop thread; call on one executor thread (the
 * zone's only one); stats and state on any thread.
 */
typedef struct HaRemoteV1 HaRemoteV1;

enum ha_remote_state {
        HA_REMOTE_WAITING_READY,        /* no ready mark from the peer yet */
        HA_REMOTE_READY,                /* formatted, nothing at the peer */
        HA_REMOTE_BUSY,                 /* a request is at the peer */
        HA_REMOTE_DOWN,                 /* timeouts in a row: failing fast */
        HA_REMOTE_RESYNCING,            /* re-formatting after a peer restart */
};

/* Parse the shm_config, map the regions, open the doorbell and the
 * private record "<shm_name>.remote.<name>" in /dev/shm (NULL: none, no
 * answer survives a crash).  Does not wait for the peer.  Logs the reason
 * on failure. */
int ha_remote_v1_new(const HaRemoteZoneConfig *cfg, const char *shm_name, HaRemoteV1 **ret);
HaRemoteV1 *ha_remote_v1_free(HaRemoteV1 *r);
/* Any thread, at shutdown: the request at the peer and those queued stop
 * waiting (within a poll step) and fail, rather than each taking up to
 * timeout_ms while the engine waits for them.  Nothing is written to the
 * peer: a request left there is found by the next start (adopt). */
void ha_remote_v1_cancel(HaRemoteV1 *r);

/* The executor's call: buf holds len bytes, transformed in place on
 * SUCCESS.  Returns within the zone's timeout_ms (plus one poll step). */
enum ha_result ha_remote_v1_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                 unsigned worker);
/* The same for a job with a key (a zone lease's, HaJobKey): the key goes
 * into the private record with the request, so that after a daemon crash
 * the job run again gets the answer to the request the peer already had. */
enum ha_result ha_remote_v1_call_key(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                     unsigned worker, const HaJobKey *key);
void ha_remote_v1_stats(void *ctx, HaStats *s);
const char *ha_remote_v1_state(void *ctx);
const char *ha_remote_state_name(enum ha_remote_state s);

/* The executor ops (kind "v1", remote: handed private copies only). */
extern const HaExecutorOps ha_executor_remote_v1;

/* The largest payload this zone takes (half the buf region past 64). */
uint32_t ha_remote_v1_max_payload(const HaRemoteV1 *r);

#endif
