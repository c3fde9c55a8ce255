/* SPDX-License-Identifier: MIT */
#ifndef HA_ZONES_H
#define HA_ZONES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "control.h"
#include "engine.h"

/*
 * Zone channels (src/core/hyperamp/zone.h): leases of shared memory through
 * which attached clients submit without the socket.  Loop thread only,
 * except the source callbacks the workers call.
 */
typedef struct HaZones HaZones;
typedef struct HaZone HaZone;

int ha_zones_new(struct event_base *base, HaEngine *engine, const HaConfig *cfg, HaZones **ret);
/* Waits for nothing: call after the engine stopped its workers. */
HaZones *ha_zones_free(HaZones *zs);

/*
 * Grant a lease: its attach reply's result and the fds to send with it in
 * *grant (control sends them).  resume: the client keeps the memory of a
 * lease whose daemon died and sends it over the new doorbell; only the
 * sockets go out.  0 and *ret, or -EBUSY (no free slot), -EOPNOTSUPP
 * (zone_clients 0), or another negative errno.  Then ha_zones_attached.
 */
int ha_zones_attach(HaZones *zs, pid_t pid, uid_t uid, bool resume, HaAttachGrant *grant,
                    HaZone **ret);
/* The reply went out (sent 0: the client has its fds), or did not (sent
 * -errno: the slot is freed, z is gone). */
void ha_zones_attached(HaZone *z, int sent);
/* The client's connection closed: take the lease back once its running
 * entries are done. */
void ha_zones_detach(HaZone *z);

unsigned ha_zones_active(const HaZones *zs);

/* Shutdown: take what is already on every ring one last time and stop
 * listening to doorbells; cb runs once no zone request is running (now, if
 * none is). */
void ha_zones_quiesce(HaZones *zs, void (*cb)(void *), void *userdata);

#endif
