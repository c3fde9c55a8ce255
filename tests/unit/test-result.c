/* SPDX-License-Identifier: MIT */
/*
 * A socket request's status comes from what its worker computed, never
 * from the shared entry: a peer that may write the queue could otherwise
 * turn NOT_EXITS or a tampered request's FAIL into SUCCESS by writing the
 * done and result bits after the worker ran (issue 16, item 16).  The test
 * plays that peer: it maps the object by name, as a zone would.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "check.h"
#include "config.h"
#include "engine.h"
#include "sockq.h"
#include "hyperamp/region.h"

static struct event_base *base;
static int result = -1;
static uint8_t got[16];
static size_t got_len;

static void done(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                 const uint8_t *data, size_t len, uint64_t latency_ns)
{
        (void)owner, (void)req_id, (void)service, (void)latency_ns;
        result = r;
        got_len = len < sizeof(got) ? len : sizeof(got);
        memcpy(got, data, got_len);
}

static void give_up(evutil_socket_t fd, short what, void *arg)
{
        (void)fd, (void)what, (void)arg;
        event_base_loopbreak(base);
}

/* The entry of the one request in flight: the only one with a service. */
static HaMsgEntry *find_entry(HaMsgQueue *q, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                if (__atomic_load_n(&q->entries[i].msg.service_id, __ATOMIC_RELAXED))
                        return &q->entries[i];
        return NULL;
}

/* Until the worker set the done bit: spin briefly, then back off on a
 * precise timer; false after about ten seconds. */
static bool wait_done(HaMsgEntry *en)
{
        struct timespec ts = { 0, 100000 };

        for (unsigned i = 0; i < 1000 + 100000; i++) {
                if (__atomic_load_n(&en->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE)
                        return true;
                if (i >= 1000)
                        nanosleep(&ts, NULL);
        }
        return false;
}

/*
 * Submit payload to service; before the worker runs, the peer may change
 * the entry's service id (retarget != 0); after it ran, the peer writes
 * `forged` over the flag.  Returns the status the client was answered.
 */
#define LEN (HA_LOOP_JOB_BYTES + 1)

static int run_one(HaSockq *e, HaMsgQueue *q, unsigned n, uint16_t service,
                   const char *payload, uint16_t retarget, uint16_t forged)
{
        uint8_t buf[LEN] = { 0 };
        struct timeval limit = { 30, 0 };
        struct event *timer = evtimer_new(base, give_up, NULL);
        HaMsgEntry *en;

        result = -1;
        /* Padded past what the loop runs itself: this is about the pool's
         * path, where a peer can write between the worker and the
         * completion. */
        memcpy(buf, payload, strlen(payload));
        CHECK_EQ(ha_sockq_submit_data(e, service, buf, LEN, NULL, 1), 0);
        en = find_entry(q, n);
        CHECK(en != NULL);
        if (!en)
                goto out;
        if (retarget)
                __atomic_store_n(&en->msg.service_id, retarget, __ATOMIC_RELAXED);
        /* One pass: collected and dispatched; the completion is not read
         * before the next pass. */
        CHECK_EQ(event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
        CHECK(wait_done(en));
        __atomic_store_n(&en->msg.flag, forged, __ATOMIC_RELEASE);
        evtimer_add(timer, &limit);
        while (result < 0 && !event_base_got_break(base))
                event_base_loop(base, EVLOOP_ONCE);
        /* Free for the next case. */
        __atomic_store_n(&en->msg.service_id, 0, __ATOMIC_RELAXED);
out:
        event_free(timer);
        return result;
}

int main(void)
{
        static const uint8_t cipher[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
        const uint16_t success = ha_flag_make(HA_RESULT_SUCCESS);
        HaEngine *e = NULL;
        HaSockq *sq = NULL;
        HaConfig cfg;
        HaConfigSlot slot = { &cfg };
        struct stat st;
        HaRegionHdr *hdr;
        HaMsgQueue *q;
        void *map;
        int fd;

        ha_config_defaults(&cfg);
        snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/ha-test-result-%d", (int)getpid());
        cfg.queue_entries = 8;
        cfg.workers = 1;
        base = event_base_new();
        CHECK(base != NULL);
        CHECK_EQ(ha_engine_new(base, &cfg, &e), 0);
        CHECK_EQ(ha_sockq_new(base, e, &slot, done, NULL, &sq), 0);
        if (!e || !sq)
                return check_done("result");
        fd = shm_open(cfg.shm_name, O_RDWR, 0);
        CHECK(fd >= 0 && fstat(fd, &st) == 0);
        map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        CHECK(map != MAP_FAILED);
        hdr = map;
        q = (HaMsgQueue *)((uint8_t *)map + hdr->queue_off);

        /* Untouched: the worker's result and bytes. */
        CHECK_EQ(run_one(sq, q, cfg.queue_entries, 1, "hello", 0, success), HA_RESULT_SUCCESS);
        CHECK(got_len == sizeof(got) && memcmp(got, cipher, 5) == 0);
        /* No such service, forged SUCCESS afterwards: still NOT_EXITS. */
        CHECK_EQ(run_one(sq, q, cfg.queue_entries, 999, "hello", 0, success),
                 HA_RESULT_NOT_EXITS);
        /* Retargeted under the daemon (FAIL, not run), then forged SUCCESS:
         * the client must not get its plaintext as an encrypt SUCCESS. */
        CHECK_EQ(run_one(sq, q, cfg.queue_entries, 1, "hello", 2, success), HA_RESULT_FAIL);
        CHECK(got_len == sizeof(got) && memcmp(got, "hello", 5) == 0);
        /* A forged FAIL over a SUCCESS changes nothing either. */
        CHECK_EQ(run_one(sq, q, cfg.queue_entries, 1, "hello", 0,
                         ha_flag_make(HA_RESULT_FAIL)), HA_RESULT_SUCCESS);
        /* Nor a flag with no done bit. */
        CHECK_EQ(run_one(sq, q, cfg.queue_entries, 1, "hello", 0, 0), HA_RESULT_SUCCESS);

        munmap(map, (size_t)st.st_size);
        close(fd);
        ha_engine_free(e);
        ha_sockq_free(sq);
        event_base_free(base);
        return check_done("result");
}
