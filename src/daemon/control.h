/* SPDX-License-Identifier: MIT */
#ifndef HA_CONTROL_H
#define HA_CONTROL_H

#include <event2/event.h>

#include "config.h"
#include "engine.h"

/*
 * The control socket: a Unix stream listener, one bufferevent per client,
 * the frame decoder and the method table.  Runs on the loop thread only.
 */
typedef struct HaControl HaControl;

int ha_control_new(struct event_base *base, HaEngine *engine, const HaConfig *cfg,
                   const char *path, HaControl **ret);
/* Closes connections and the listener, removes the socket file. */
HaControl *ha_control_free(HaControl *c);

/* Stop accepting and stop reading requests; the socket file is removed. */
void ha_control_quiesce(HaControl *c);
/* Close every connection once its pending replies are written; done runs
 * when the last one is gone. */
void ha_control_close_all(HaControl *c, void (*done)(void *), void *userdata);

/* The engine's completion callback (owner is a connection). */
void ha_control_complete(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                         const uint8_t *data, size_t len, uint64_t latency_ns);

#endif
