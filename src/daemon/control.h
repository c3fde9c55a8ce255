/* SPDX-License-Identifier: MIT */
#ifndef HA_CONTROL_H
#define HA_CONTROL_H

#include <stdbool.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "engine.h"
#include "sockq.h"

/*
 * The control socket: a Unix stream listener, one bufferevent per client,
 * the frame decoder and the method table.  Runs on the loop thread only.
 */
typedef struct HaControl HaControl;

int ha_control_new(struct event_base *base, HaEngine *engine, HaSockq *sockq,
                   const HaConfig *cfg, const char *path, HaControl **ret);
/* Closes connections and the listener, removes the socket file. */
HaControl *ha_control_free(HaControl *c);

/*
 * What the admin methods do: reload returns 0 and a result object, or a
 * negative errno and a reason in err; shutdown starts a graceful stop.
 */
typedef int (*ha_reload_fn)(void *userdata, cJSON **result, char *err, size_t errlen);
typedef void (*ha_shutdown_fn)(void *userdata);
void ha_control_set_hooks(HaControl *c, ha_reload_fn reload, ha_shutdown_fn shutdown,
                          void *userdata);

/*
 * Zone leases: attach grants one (resume: for memory the client keeps
 * from a daemon that died) and sends the reply itself on fd (it carries
 * file descriptors); detach runs when that connection closes.
 */
typedef int (*ha_attach_fn)(void *userdata, int fd, uint64_t id, bool has_id, pid_t pid,
                            uid_t uid, bool resume, void **lease);
typedef void (*ha_detach_fn)(void *userdata, void *lease);
void ha_control_set_zone_hooks(HaControl *c, ha_attach_fn attach, ha_detach_fn detach,
                               void *userdata);

/* Take the settings that may change while running. */
void ha_control_set_config(HaControl *c, const HaConfig *cfg);

/* Stop accepting and stop reading requests; the socket file is removed
 * (unless systemd passed the socket: then it is systemd's). */
void ha_control_quiesce(HaControl *c);
/* Close every connection once its pending replies are written; done runs
 * when the last one is gone. */
void ha_control_close_all(HaControl *c, void (*done)(void *), void *userdata);

/* The socket queue's refusal callback: an executor's queue was full. */
void ha_control_refused(void *owner, uint64_t req_id, uint16_t service, int err);

/* The socket queue's completion callback (owner is a connection). */
void ha_control_complete(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                         const uint8_t *data, size_t len, uint64_t latency_ns);

#endif
