/* SPDX-License-Identifier: MIT */
#ifndef HA_ENGINE_H
#define HA_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/buffer.h>

#include "config.h"
#include "stats.h"
#include "hyperamp/wire.h"

/*
 * The request pipeline: the shm region with its HyperAMP queue and buffer
 * pool, the collector on the event loop and the worker pool.  Every request,
 * whatever its source, takes the same path:
 *   acquire a free entry + a pool buffer -> write the Msg -> wait list
 *   -> collector (one batch per loop pass) -> workers run the service in
 *   place and set the flag -> eventfd -> completion on the loop -> the
 *   owner's callback -> buffer and entry released.
 * All functions run on the loop thread.
 */
typedef struct HaEngine HaEngine;

/* Called on the loop for every finished request; data is valid only during
 * the call (it points into the pool). */
typedef void (*ha_complete_fn)(void *owner, uint64_t req_id, uint16_t service,
                               enum ha_result r, const uint8_t *data, size_t len,
                               uint64_t latency_ns);

int ha_engine_new(struct event_base *base, const HaConfig *cfg, ha_complete_fn complete,
                  HaEngine **ret);
/* Waits for running jobs, then unmaps (and unlinks) the region. */
HaEngine *ha_engine_free(HaEngine *e);
/* Stops the workers first.  abandon: drop what no worker has started and
 * give a running job a second (else ten); -ETIMEDOUT if a worker is stuck
 * in a service: then do not free the engine (its memory is in use), leave. */
int ha_engine_stop(HaEngine *e, bool abandon);
/* For an exit past a stuck worker: mark the queue gone, unlink its name. */
void ha_engine_leave(HaEngine *e);

/*
 * Take len bytes from the front of src as the payload of a request to
 * service.  0 once queued; -EAGAIN when no entry or buffer is free (src is
 * left untouched); -EINVAL for an empty or oversized payload.
 */
int ha_engine_submit(HaEngine *e, uint16_t service, struct evbuffer *src, size_t len,
                     void *owner, uint64_t req_id);

unsigned ha_engine_in_flight(const HaEngine *e);
/* cb runs (once) when nothing is in flight any more; now if already so. */
void ha_engine_on_drained(HaEngine *e, void (*cb)(void *), void *userdata);

/*
 * Another queue whose entries the workers run: a zone channel.  Its entries
 * reach the workers as jobs tagged with the source id; the source says how
 * to run one (worker thread) and what to do once it ran (loop thread).
 */
typedef struct HaSourceOps {
        const char *kind;
        void (*run)(void *ctx, uint16_t idx, unsigned worker);
        void (*complete)(void *ctx, uint16_t idx);
        /* Its counters, into the element of sources[] made for it. */
        void (*stats)(void *ctx, HaStats *s);
        /* Optional, on a worker with nothing queued: take and run whatever
         * waits, inline; returns how many it ran, or -1 when there is
         * nothing to poll at all (no client attached). */
        long (*poll)(void *ctx, unsigned worker);
        /* The worker stops polling: whatever poll set aside, restore.
         * Non-zero when work turned up meanwhile (the worker polls on). */
        long (*poll_end)(void *ctx, unsigned worker);
} HaSourceOps;

#define HA_ENGINE_MAX_SOURCES 64
#define HA_SOURCE_SOCKET 0

/* Register a source; *ret_id tags its jobs.  -ENOSPC past the limit. */
int ha_engine_add_source(HaEngine *e, const HaSourceOps *ops, void *ctx, const char *name,
                         unsigned *ret_id);
/* Hand entries of a source to the workers, in one batch.  -ENOSPC when the
 * other sources already have 65536 jobs in the pool: the rest of it stays
 * for the socket's queue. */
int ha_engine_dispatch(HaEngine *e, unsigned source, const uint16_t *idx, size_t n);

typedef struct HaEngineCounts {
        uint64_t completed;
        unsigned in_flight, capacity, workers;
} HaEngineCounts;

void ha_engine_counts(HaEngine *e, HaEngineCounts *ret);

/* A worker stuck on one batch for more than min_ns, or -1. */
int ha_engine_stalled_worker(HaEngine *e, uint64_t min_ns, uint64_t *busy_ns);

/* Take the settings that may change while running (max_payload). */
void ha_engine_set_config(HaEngine *e, const HaConfig *cfg);

/* Adds the queue, pool, requests, services, sources and workers sections. */
void ha_engine_stats(HaEngine *e, HaStats *s);

#endif
