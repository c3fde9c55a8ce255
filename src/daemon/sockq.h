/* SPDX-License-Identifier: MIT */
#ifndef HA_SOCKQ_H
#define HA_SOCKQ_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "engine.h"
#include "stats.h"
#include "hyperamp/wire.h"

/*
 * The socket's source: the shm region with its HyperAMP queue and buffer
 * pool, fed by the control socket.  A request: acquire a free entry + a
 * pool buffer -> write the Msg -> wait list -> collector (one batch per
 * loop pass) -> ha_engine_dispatch -> run on an executor (in place for the
 * local pool, a private copy for a remote one), flag set -> complete() on
 * the loop -> the owner's callback -> buffer and entry released.
 * All functions run on the loop thread.
 */
typedef struct HaSockq HaSockq;

/* Called on the loop for every finished request; data is valid only during
 * the call (it points into the pool). */
typedef void (*ha_complete_fn)(void *owner, uint64_t req_id, uint16_t service,
                               enum ha_result r, const uint8_t *data, size_t len,
                               uint64_t latency_ns);

/* Called on the loop for a request no executor took: err -EBUSY (its
 * executor's queue was full: answer BUSY).  Answers NOT_EXITS (no route)
 * come through ha_complete_fn. */
typedef void (*ha_refused_fn)(void *owner, uint64_t req_id, uint16_t service, int err);

/* Maps the region and registers as the engine's source (queue_entries of
 * capacity). */
int ha_sockq_new(struct event_base *base, HaEngine *e, const HaConfigSlot *cfg,
                 ha_complete_fn complete, ha_refused_fn refused, HaSockq **ret);
/* After ha_engine_free(): releases what is still queued, unmaps (and
 * unlinks) the region. */
HaSockq *ha_sockq_free(HaSockq *q);
/* For an exit past a stuck worker: mark the queue gone, unlink its name. */
void ha_sockq_leave(HaSockq *q);

/*
 * Copy len bytes at data (the caller keeps them) into the pool as the
 * payload of a request to service.  0 once queued; -EAGAIN when no entry
 * or buffer is free; -EINVAL for an empty or oversized payload.
 */
int ha_sockq_submit_data(HaSockq *q, uint16_t service, const void *data, size_t len,
                         void *owner, uint64_t req_id);

unsigned ha_sockq_in_flight(const HaSockq *q);
unsigned ha_sockq_capacity(const HaSockq *q);
uint64_t ha_sockq_completed(const HaSockq *q);
/* cb runs (once) when nothing is in flight any more; now if already so. */
void ha_sockq_on_drained(HaSockq *q, void (*cb)(void *), void *userdata);

/* Its queue, pool and requests sections. */
void ha_sockq_stats(HaSockq *q, HaStats *s);

#endif
