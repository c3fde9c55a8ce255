/* SPDX-License-Identifier: MIT */
#ifndef HA_V2CHAN_H
#define HA_V2CHAN_H

#include <event2/event.h>

#include "config.h"
#include "engine.h"

/*
 * A HyperAMP v2 backend channel: hyperampd as the *backend* of a seL4 zone
 * acting as the HighSpeedCProxy frontend (the mirror of remote_v2.h).  The
 * peer sends SERVICE (or BULK) messages on ring A; each runs on the
 * executor its service id routes to (local or a remote zone), one at a
 * time, and is answered on ring B in order, the way the seL4 backend
 * answers: a DATA message with the service id in frontend_sess_id and the
 * result bytes (backend_sess_id 0 on success, else the result code), or a
 * BULK descriptor (status 1, or the negative result code).
 *
 * A thread of its own polls ring A (spin, then a timerfd step up to 1 ms:
 * there is no doorbell) and copies each request out before the loop
 * dispatches it.  Everything the peer writes is checked (indices, lengths,
 * types, bulk ranges) and counted; a request is taken at most once (the
 * ring's tail moves when it is copied out), so a crash loses it rather
 * than answering it twice.
 */
typedef struct HaV2Chan HaV2Chan;

/* Map the window, register as a source, start the poller.  Logs why on
 * failure.  Loop thread. */
int ha_v2chan_start(struct event_base *base, HaEngine *e, const HaV2ChannelConfig *cfg,
                    HaV2Chan **ret);
/* Stop the poller; call it before ha_engine_stop(), so that no reply
 * waits on a job that will never complete. */
void ha_v2chan_stop(HaV2Chan *c);
/* After ha_engine_free(): unmap and free. */
HaV2Chan *ha_v2chan_free(HaV2Chan *c);

#endif
