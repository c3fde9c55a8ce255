/* SPDX-License-Identifier: MIT */
#ifndef HA_CONTROL_H
#define HA_CONTROL_H

#include <stdbool.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "engine.h"
#include "proto.h"
#include "sockq.h"
#include "stats.h"

/*
 * The control socket: a Unix stream listener, one bufferevent per client,
 * the frame decoder and the method table.  Runs on the loop thread only.
 */
typedef struct HaControl HaControl;

/* cfg: the daemon's config slot, read for the life of the control socket. */
int ha_control_new(struct event_base *base, HaEngine *engine, HaSockq *sockq,
                   const HaConfigSlot *cfg, const char *path, HaControl **ret);
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
 * from a daemon that died) and fills *grant; control writes the reply with
 * the grant's fds on the client's socket, then calls attached with 0 (the
 * client has them) or the send's -errno (the lease is undone).  detach runs
 * when that connection closes.
 */
typedef struct HaAttachGrant {
        cJSON *result;                  /* the reply's result: control frees it */
        int fds[HA_PROTO_MAX_FDS];      /* lent: the lease keeps them */
        unsigned nfds;
} HaAttachGrant;
typedef int (*ha_attach_fn)(void *userdata, pid_t pid, uid_t uid, bool resume,
                            HaAttachGrant *grant, void **lease);
typedef void (*ha_attached_fn)(void *userdata, void *lease, int sent);
typedef void (*ha_detach_fn)(void *userdata, void *lease);
void ha_control_set_zone_hooks(HaControl *c, ha_attach_fn attach, ha_attached_fn attached,
                               ha_detach_fn detach, void *userdata);

/* A reload swapped the config: apply client_timeout_ms to the open
 * connections too (new ones read it anyway). */
void ha_control_config_changed(HaControl *c);
/* Reads that brought bytes so far (loop thread): a pass that changed it
 * served a client. */
uint64_t ha_control_reads(const HaControl *ctl);

/* The whole of `stats`: the process, the socket queue, the engine (with its
 * sources and executors), the control socket, then each part added by
 * ha_control_add_stats, in that order; each owner writes only its own
 * counters. */
void ha_control_stats(HaControl *c, HaStats *s);
/* Another owner's part (up to 4), e.g. the metrics listener's counters. */
void ha_control_add_stats(HaControl *c, void (*fn)(void *userdata, HaStats *s),
                          void *userdata);

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
