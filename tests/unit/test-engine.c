/* SPDX-License-Identifier: MIT */
/*
 * The engine as a job multiplexer: every source has room for all of its
 * entries at once (before, a fixed 65536-job quota shared by all but the
 * socket ran out: the ninth v1-sized source got -ENOSPC); a job routed to a
 * full executor or to no executor is answered once, through fail(), never
 * from inside the dispatch; every job is counted per service; a remote
 * executor gets the socket's payload as a private copy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "check.h"
#include "config.h"
#include "engine.h"
#include "services.h"
#include "sockq.h"

#define NSRC 8
#define SRC_CAP 16384u          /* 8 of these: twice the old shared quota */
#define ECHO 66

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool released;
static struct event_base *base;
static bool in_engine;          /* the test is inside a call into the engine */

typedef struct Src {
        unsigned id;
        unsigned completed, failed, last_err;
        uint8_t *answers;               /* per entry: how often answered */
} Src;

static void wait_release(void)
{
        pthread_mutex_lock(&lock);
        while (!released)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
}

static void set_released(bool v)
{
        pthread_mutex_lock(&lock);
        released = v;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
}

/* A job holds its thread until the test lets go, then runs echo through
 * its executor. */
static enum ha_result src_run(void *ctx, uint16_t idx, const HaRun *run)
{
        uint8_t buf[4] = { 1, 2, 3, 4 };
        (void)ctx, (void)idx;

        wait_release();
        return ha_run_call(run, ECHO, buf, sizeof(buf));
}

static void src_complete(void *ctx, uint16_t idx)
{
        Src *s = ctx;

        CHECK(!in_engine);
        s->completed++;
        s->answers[idx]++;
}

static void src_fail(void *ctx, uint16_t idx, int err)
{
        Src *s = ctx;

        CHECK(!in_engine);
        s->failed++;
        s->last_err = (unsigned)-err;
        s->answers[idx]++;
}

static void src_stats(void *ctx, cJSON *o)
{
        (void)ctx, (void)o;
}

static const HaSourceOps src_ops = {
        .kind = "test", .run = src_run, .complete = src_complete, .fail = src_fail,
        .stats_json = src_stats,
};

/* A remote executor: one thread, stop-and-wait; records what it got. */
static unsigned remote_calls;
static bool remote_bad_worker;

static enum ha_result remote_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                  unsigned worker)
{
        (void)ctx;
        /* Checked on the main thread: CHECK is not thread-safe. */
        if (worker != 0)
                __atomic_store_n(&remote_bad_worker, true, __ATOMIC_RELAXED);
        __atomic_fetch_add(&remote_calls, 1, __ATOMIC_RELAXED);
        return ha_service_run(service, buf, len);
}

static const char *remote_state(void *ctx)
{
        (void)ctx;
        return "down";
}

static const HaExecutorOps remote_ops = {
        .kind = "v1", .remote = true, .call = remote_call, .state = remote_state,
};

static int socket_result = -1;
static uint8_t socket_data[16];

static void socket_done(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                        const uint8_t *data, size_t len, uint64_t latency_ns)
{
        (void)owner, (void)service, (void)latency_ns;
        CHECK_EQ(req_id, 7);
        CHECK_EQ(len, 5);
        memcpy(socket_data, data, len < sizeof(socket_data) ? len : sizeof(socket_data));
        socket_result = r;
}

static void socket_refused(void *owner, uint64_t req_id, uint16_t service, int err)
{
        (void)owner, (void)req_id, (void)service, (void)err;
        CHECK(!"no socket request is refused here");
}

static void give_up(evutil_socket_t fd, short what, void *arg)
{
        (void)fd, (void)what, (void)arg;
        event_base_loopbreak(base);
}

/* Run the loop until done() or 30 s. */
static void loop_until(bool (*done)(void))
{
        struct timeval limit = { 30, 0 };
        struct event *timer = evtimer_new(base, give_up, NULL);

        evtimer_add(timer, &limit);
        while (!done() && !event_base_got_break(base))
                event_base_loop(base, EVLOOP_ONCE);
        event_free(timer);
}

static Src srcs[NSRC];
static Src small;

static bool all_done(void)
{
        for (unsigned i = 0; i < NSRC; i++)
                if (srcs[i].completed + srcs[i].failed < SRC_CAP)
                        return false;
        return socket_result >= 0;
}

static bool small_done(void)
{
        return small.completed + small.failed == 4;
}

static bool socket_done_p(void)
{
        return socket_result >= 0;
}

static double svc_requests(HaEngine *e, unsigned id)
{
        cJSON *o = cJSON_CreateObject(), *s;
        double n = -1;

        ha_engine_stats_json(e, o);
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(o, "services"))
                if (cJSON_GetObjectItemCaseSensitive(s, "id")->valuedouble == id)
                        n = cJSON_GetObjectItemCaseSensitive(s, "requests")->valuedouble;
        cJSON_Delete(o);
        return n;
}

int main(void)
{
        static HaJobReq reqs[SRC_CAP];
        static const uint8_t cipher[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
        struct evbuffer *payload;
        HaEngine *e = NULL;
        HaSockq *q = NULL;
        HaConfig cfg;
        HaConfigSlot slot = { &cfg };
        unsigned remote;
        cJSON *o;

        ha_config_defaults(&cfg);
        snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/ha-test-engine-%d", (int)getpid());
        cfg.queue_entries = 8;
        cfg.workers = 2;
        base = event_base_new();
        CHECK(base != NULL);
        CHECK_EQ(ha_engine_new(base, &cfg, &e), 0);
        if (!e)
                return check_done("engine");
        CHECK_EQ(ha_sockq_new(base, e, &slot, socket_done, socket_refused, &q), 0);
        CHECK_EQ(ha_engine_add_source(e, &src_ops, &small, "zero", 0, &small.id), -EINVAL);
        for (unsigned i = 0; i < NSRC; i++) {
                char name[16];

                snprintf(name, sizeof(name), "v1-%u", i);
                srcs[i].answers = calloc(SRC_CAP, 1);
                CHECK_EQ(ha_engine_add_source(e, &src_ops, &srcs[i], name, SRC_CAP, &srcs[i].id),
                         0);
        }

        /* Every source full at once: all of it taken, nothing refused. */
        for (unsigned i = 0; i < SRC_CAP; i++)
                reqs[i] = (HaJobReq){ (uint16_t)i, ECHO };
        in_engine = true;
        for (unsigned i = 0; i < NSRC; i++)
                ha_engine_dispatch(e, srcs[i].id, reqs, SRC_CAP);
        in_engine = false;
        /* A socket request still has room. */
        payload = evbuffer_new();
        evbuffer_add(payload, "hello", 5);
        CHECK_EQ(ha_sockq_submit(q, ECHO, payload, 5, NULL, 7), 0);
        set_released(true);
        loop_until(all_done);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        for (unsigned i = 0; i < NSRC; i++) {
                CHECK_EQ(srcs[i].completed, SRC_CAP);
                CHECK_EQ(srcs[i].failed, 0);
                for (unsigned k = 0; k < SRC_CAP; k++)
                        CHECK_EQ(srcs[i].answers[k], 1);
        }
        /* Counted per service, whatever the source. */
        CHECK_EQ(svc_requests(e, ECHO), NSRC * SRC_CAP + 1);

        /* A remote executor with room for 2, and a service with no route. */
        CHECK_EQ(ha_engine_add_executor(e, &remote_ops, NULL, "zone-b", 1, 2, &remote), 0);
        CHECK_EQ(ha_engine_route(e, 200, remote), 0);
        CHECK_EQ(ha_engine_route(e, 201, HA_EXECUTOR_NONE), 0);
        CHECK_EQ(ha_engine_route(e, 202, 31), -EINVAL);
        small.answers = calloc(4, 1);
        CHECK_EQ(ha_engine_add_source(e, &src_ops, &small, "small", 4, &small.id), 0);
        set_released(false);
        {
                HaJobReq r3[] = { { 0, 200 }, { 1, 200 }, { 2, 200 }, { 3, 201 } };

                in_engine = true;
                ha_engine_dispatch(e, small.id, r3, 4);
                in_engine = false;
        }
        CHECK_EQ(small.failed, 0);      /* never from inside the dispatch */
        set_released(true);
        loop_until(small_done);
        CHECK_EQ(small.completed, 2);
        CHECK_EQ(small.failed, 2);
        for (unsigned k = 0; k < 4; k++)
                CHECK_EQ(small.answers[k], 1);
        CHECK_EQ(__atomic_load_n(&remote_calls, __ATOMIC_RELAXED), 2);

        /* services shows where each id runs. */
        o = cJSON_CreateObject();
        ha_engine_route_json(e, 200, o);
        CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(o, "runs_on")->valuestring, "zone-b") == 0);
        CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(o, "executor_state")->valuestring,
                     "down") == 0);
        cJSON_Delete(o);
        o = cJSON_CreateObject();
        ha_engine_route_json(e, ECHO, o);
        CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(o, "runs_on")->valuestring, "local") == 0);
        cJSON_Delete(o);

        /* A socket request routed to the remote executor: it computes on a
         * private copy, never the shared pool, and the client gets it. */
        CHECK_EQ(ha_engine_route(e, 1, remote), 0);
        socket_result = -1;
        evbuffer_add(payload, "hello", 5);
        CHECK_EQ(ha_sockq_submit(q, 1, payload, 5, NULL, 7), 0);
        loop_until(socket_done_p);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        CHECK(memcmp(socket_data, cipher, 5) == 0);
        CHECK_EQ(__atomic_load_n(&remote_calls, __ATOMIC_RELAXED), 3);
        CHECK(!__atomic_load_n(&remote_bad_worker, __ATOMIC_RELAXED));   /* one thread */

        CHECK_EQ(ha_engine_stop(e, false), 0);
        ha_engine_free(e);
        ha_sockq_free(q);
        evbuffer_free(payload);
        for (unsigned i = 0; i < NSRC; i++)
                free(srcs[i].answers);
        free(small.answers);
        event_base_free(base);
        return check_done("engine");
}
