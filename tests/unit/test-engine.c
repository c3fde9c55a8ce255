/* SPDX-License-Identifier: MIT */
/*
 * The engine's worker pool is shared by every source: other sources (zone
 * and v1 channels) may fill their share, never the socket's.  Before the
 * fix a socket batch found the pool full and collect_cb aborted.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "check.h"
#include "config.h"
#include "engine.h"

#define OTHER_SHARE 65536u

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool released;
static unsigned other_completed;
static int socket_result = -1;
static struct event_base *base;

/* A job of the other source: holds its worker until the test lets go. */
static void other_run(void *ctx, uint16_t idx, unsigned worker)
{
        (void)ctx, (void)idx, (void)worker;
        pthread_mutex_lock(&lock);
        while (!released)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
}

static void other_complete(void *ctx, uint16_t idx)
{
        (void)ctx, (void)idx;
        other_completed++;
}

static void other_stats(void *ctx, HaStats *o)
{
        (void)ctx, (void)o;
}

static const HaSourceOps other_ops = {
        .kind = "test", .run = other_run, .complete = other_complete, .stats = other_stats,
};

static void socket_done(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                        const uint8_t *data, size_t len, uint64_t latency_ns)
{
        (void)owner, (void)service, (void)latency_ns;
        CHECK_EQ(req_id, 7);
        CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
        socket_result = r;
}

static void give_up(evutil_socket_t fd, short what, void *arg)
{
        (void)fd, (void)what, (void)arg;
        event_base_loopbreak(base);
}

int main(void)
{
        static uint16_t idx[OTHER_SHARE];
        struct timeval limit = { 30, 0 };
        struct evbuffer *payload;
        struct event *timer;
        HaEngine *e = NULL;
        HaConfig cfg;
        unsigned src;

        ha_config_defaults(&cfg);
        snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/ha-test-engine-%d", (int)getpid());
        cfg.queue_entries = 8;
        cfg.workers = 2;
        base = event_base_new();
        CHECK(base != NULL);
        CHECK_EQ(ha_engine_new(base, &cfg, socket_done, &e), 0);
        if (!e)
                return check_done("engine");
        CHECK_EQ(ha_engine_add_source(e, &other_ops, NULL, "test", &src), 0);

        for (unsigned i = 0; i < OTHER_SHARE; i++)
                idx[i] = (uint16_t)(i % 8);
        /* The other source fills its share, and no more. */
        CHECK_EQ(ha_engine_dispatch(e, src, idx, OTHER_SHARE - 1), 0);
        CHECK_EQ(ha_engine_dispatch(e, src, idx, 2), -ENOSPC);
        CHECK_EQ(ha_engine_dispatch(e, src, idx, 1), 0);
        CHECK_EQ(ha_engine_dispatch(e, src, idx, 1), -ENOSPC);

        /* A socket request still has room: collected on the loop, run once
         * the workers are free, answered. */
        payload = evbuffer_new();
        evbuffer_add(payload, "hello", 5);
        CHECK_EQ(ha_engine_submit(e, 66, payload, 5, NULL, 7), 0);
        CHECK_EQ(event_base_loop(base, EVLOOP_NONBLOCK), 0);   /* collects and dispatches */
        pthread_mutex_lock(&lock);
        released = true;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);

        timer = evtimer_new(base, give_up, NULL);
        evtimer_add(timer, &limit);
        while ((socket_result < 0 || other_completed < OTHER_SHARE) &&
               !event_base_got_break(base))
                event_base_loop(base, EVLOOP_ONCE);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        CHECK_EQ(other_completed, OTHER_SHARE);
        /* Their share is free again. */
        CHECK_EQ(ha_engine_dispatch(e, src, idx, 1), 0);

        ha_engine_free(e);
        event_free(timer);
        evbuffer_free(payload);
        event_base_free(base);
        return check_done("engine");
}
