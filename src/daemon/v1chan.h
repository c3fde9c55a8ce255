/* SPDX-License-Identifier: MIT */
#ifndef HA_V1CHAN_H
#define HA_V1CHAN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "engine.h"
#include "hyperamp/wire.h"

/*
 * A HyperAMP v1 compatibility channel: hyperampd as the *service* zone of an
 * unmodified original client (hvisor-tool `hvisor shm hyper_amp*`), over the
 * original shared-memory layout described by its shm_config.json.
 *
 * The client owns the root queue (it formats it, owns empty_h and wait_h);
 * we never re-format it.  On each doorbell wake-up, if the queue is BUSY we
 * take the whole proc_ing list (validated walk), run the entries on the
 * engine's workers, publish each result and done bit in one 16-bit store,
 * and set IDLE right after the last of them, on the same worker.  A client
 * that formats the queue under a batch loses that batch, and nothing of it
 * is published; a queue in another layout (qos) is refused.  Every
 * value read from the mapping is checked before use.  docs/hyperamp-v1.md
 * has the details.
 */
typedef struct HaV1Chan HaV1Chan;

/*
 * Map the regions, check the queue, open the journal (the shm object
 * "<shm_name>.v1.<name>", with a staging area the size of the buf region)
 * and finish what a previous run left in it, open the doorbell, register as
 * an engine source, then write the ready mark.  Logs the reason on failure
 * (and leaves nothing registered or mapped).  Runs on the loop thread.
 */
int ha_v1chan_start(struct event_base *base, HaEngine *e, const HaV1ChannelConfig *cfg,
                    const char *shm_name, HaV1Chan **ret);

/*
 * Unmap and close; writes nothing to the client's queue.  Removes the
 * journal unless it still holds requests not answered.  Call it after
 * ha_engine_free(): until the engine has joined its workers they may still
 * run this channel's entries.
 */
HaV1Chan *ha_v1chan_free(HaV1Chan *c);

/* Why one entry was refused (ha_v1_serve's *why). */
enum ha_v1_why {
        HA_V1_OK = 0,
        HA_V1_BAD_FLAG,         /* flag word not 0 when handed over */
        HA_V1_ZERO_LENGTH,      /* length 0 */
        HA_V1_BAD_RANGE,        /* offset + length past the buf region */
        HA_V1_NO_MEMORY,        /* no room for the result (staging area, bounce buffer) */
        HA_V1_LOST,             /* the client formatted the queue under it: not published */
};

/*
 * Serve one request the way the original Linux service does, on the buf
 * mapping (buf_len bytes) of the peer: the client sends strlen + 1 bytes, so
 * services see length - 1 bytes and leave the trailing NUL alone; one that
 * only reads (reads_only: echo) has nothing written back; an unknown id
 * gives NOT_EXITS; length 1 (an empty string) succeeds for a service that
 * only reads and fails for the transforms.  The bytes
 * are copied through a private bounce buffer with ha_devmem_read/write only.
 * Thread-safe.  The workers use the same checks and transform, through the
 * journal's staging area instead of the bounce buffer; this composition of
 * them is what the unit tests check against the original's rules.
 */
enum ha_result ha_v1_serve(volatile uint8_t *buf, size_t buf_len, uint16_t flag,
                           uint16_t service, uint32_t offset, uint32_t length, unsigned *why);

#endif
