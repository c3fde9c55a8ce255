/* SPDX-License-Identifier: MIT */
/*
 * The engine as a job multiplexer: every source has room for all of its
 * entries at once (before, a fixed 65536-job quota shared by all but the
 * socket ran out: the ninth v1-sized source got -ENOSPC); a job routed to a
 * full executor or to no executor is answered once, through fail(), never
 * from inside the dispatch; every job is counted per service; a remote
 * executor gets the socket's payload as a private copy; the loop runs a
 * small quick socket job itself only while every local worker sleeps, and
 * never one that is large, slow or routed to a remote executor.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
static unsigned rt_started;
static Src seq, rt, bt;

static enum ha_result src_run(void *ctx, uint16_t idx, const HaRun *run)
{
        uint8_t buf[4] = { 1, 2, 3, 4 };
        (void)idx;

        if (ctx == &rt || ctx == &bt)
                __atomic_fetch_add(&rt_started, 1, __ATOMIC_RELAXED);
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

static void src_stats(void *ctx, HaStats *o)
{
        (void)ctx, (void)o;
}

static const HaSourceOps src_ops = {
        .kind = "test", .run = src_run, .complete = src_complete, .fail = src_fail,
        .stats = src_stats,
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

/* Zones added and retired at run time: each counts its calls and its
 * release (the engine frees it once it has ended). */
typedef struct Zctx {
        unsigned calls, released;
} Zctx;

static enum ha_result zone_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                unsigned worker)
{
        Zctx *z = ctx;
        (void)service, (void)buf, (void)len, (void)worker;

        __atomic_fetch_add(&z->calls, 1, __ATOMIC_RELAXED);
        return HA_RESULT_SUCCESS;
}

static void zone_release(void *ctx)
{
        ((Zctx *)ctx)->released++;
}

static const HaExecutorOps zone_ops = {
        .kind = "v1", .remote = true, .call = zone_call, .release = zone_release,
};

static int socket_result = -1;
static uint8_t socket_data[16];

static void socket_done(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                        const uint8_t *data, size_t len, uint64_t latency_ns)
{
        (void)owner, (void)service, (void)latency_ns;
        CHECK(req_id == 7 || req_id == 8);
        CHECK_EQ(len, req_id == 7 ? 5 : 2000);
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
static HaEngine *engine;

static unsigned answered(const Src *s)
{
        return s->completed + s->failed;
}

/* Entries 0..n-1 each answered exactly once, failed of them through fail(). */
static void check_once(const Src *s, unsigned n, unsigned failed)
{
        CHECK_EQ(s->completed, n - failed);
        CHECK_EQ(s->failed, failed);
        for (unsigned k = 0; k < n; k++)
                CHECK_EQ(s->answers[k], 1);
}

static bool seq_done(void)
{
        return answered(&seq) == 2;
}

static bool rt_done(void)
{
        return answered(&rt) == 4;
}

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

/* The engine's stats as JSON (the caller deletes them). */
static cJSON *engine_stats(HaEngine *e)
{
        cJSON *o = cJSON_CreateObject();
        HaStats *sink = ha_stats_json(o);

        CHECK(sink != NULL);
        ha_engine_stats(e, sink);
        ha_stats_free(sink);
        return o;
}

static double svc_requests(HaEngine *e, unsigned id)
{
        cJSON *o = engine_stats(e), *s;
        double n = -1;

        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(o, "services"))
                if (cJSON_GetObjectItemCaseSensitive(s, "id")->valuedouble == id)
                        n = cJSON_GetObjectItemCaseSensitive(s, "requests")->valuedouble;
        cJSON_Delete(o);
        return n;
}

static double loop_jobs(HaEngine *e)
{
        cJSON *o = engine_stats(e);
        double n;

        n = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "workers"),
                                             "loop_jobs")->valuedouble;
        cJSON_Delete(o);
        return n;
}

/* Poll for a condition that has no event to wait for, without running
 * the loop: spinning briefly, then backing off up to 10 ms, for at most
 * 30 s. */
static bool poll_until(bool (*ok)(const void *), const void *arg)
{
        struct timespec ts = { 0, 0 };

        for (unsigned i = 0; i < 100000; i++) {
                if (ok(arg))
                        return true;
                if (i < 1000)
                        continue;
                ts.tv_nsec = ts.tv_nsec ? (ts.tv_nsec * 2 > 10000000 ? 10000000 : ts.tv_nsec * 2) :
                             1000;
                nanosleep(&ts, NULL);
        }
        return false;
}

static bool asleep_p(const void *e)
{
        return ha_engine_workers_asleep((HaEngine *)e);
}

/* Workers go to sleep on their own. */
static bool wait_asleep(HaEngine *e)
{
        return poll_until(asleep_p, e);
}

static unsigned count_wanted;

static bool count_p(const void *v)
{
        return __atomic_load_n((const unsigned *)v, __ATOMIC_RELAXED) >= count_wanted;
}

/* Wait for *v to reach n while the loop lags behind (does not run). */
static bool wait_count(const unsigned *v, unsigned n)
{
        count_wanted = n;
        return poll_until(count_p, v);
}

/* An executor's element of the stats, as JSON (NULL: none by that name);
 * the caller deletes *root. */
static cJSON *executor_json(HaEngine *e, const char *name, cJSON **root)
{
        cJSON *x;

        *root = engine_stats(e);
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(*root, "executors"))
                if (strcmp(cJSON_GetObjectItemCaseSensitive(x, "name")->valuestring, name) == 0)
                        return x;
        return NULL;
}

static const char *state_of(HaEngine *e, const char *name, char *buf, size_t len)
{
        cJSON *root, *x = executor_json(e, name, &root);

        snprintf(buf, len, "%s",
                 x ? cJSON_GetObjectItemCaseSensitive(x, "state")->valuestring : "(none)");
        cJSON_Delete(root);
        return buf;
}

static double queued_on(HaEngine *e, const char *name)
{
        cJSON *root, *x = executor_json(e, name, &root);
        double n = x ? cJSON_GetObjectItemCaseSensitive(x, "queued")->valuedouble : -1;

        cJSON_Delete(root);
        return n;
}

/* No executor is retiring any more. */
static bool retired_p(void)
{
        cJSON *x, *root = engine_stats(engine);
        bool none = true;

        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(root, "executors"))
                if (strcmp(cJSON_GetObjectItemCaseSensitive(x, "state")->valuestring,
                           "retiring") == 0)
                        none = false;
        cJSON_Delete(root);
        return none;
}

/* The jobs a held executor keeps queued (-1: none held). */
static double held_queued(void)
{
        cJSON *x, *root = engine_stats(engine);
        double n = -1;

        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(root, "executors"))
                if (strcmp(cJSON_GetObjectItemCaseSensitive(x, "state")->valuestring,
                           "waiting-predecessor") == 0)
                        n = cJSON_GetObjectItemCaseSensitive(x, "queued")->valuedouble;
        cJSON_Delete(root);
        return n;
}

static bool held_two_p(void)
{
        return held_queued() == 2;
}

/* A strictly sequential client whose answer comes before the loop has
 * taken the completion: with room for one job, its next job is taken (it
 * was refused -EBUSY while the queue count waited for the loop). */
static unsigned seq_exec;

static void test_sequential_client(HaEngine *e)
{
        static Zctx z;
        HaJobReq r = { 0, 220, 0 };
        unsigned id;

        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &z, "seq", 1, 1, &id), 0);
        seq_exec = id;
        CHECK_EQ(ha_engine_route(e, 220, id), 0);
        set_released(true);
        ha_engine_dispatch(e, seq.id, &r, 1);
        CHECK(wait_count(&z.calls, 1));         /* answered; the loop has not run */
        r.idx = 1;
        ha_engine_dispatch(e, seq.id, &r, 1);
        loop_until(seq_done);
        CHECK_EQ(seq.failed, 0);
        CHECK_EQ(seq.completed, 2);
        CHECK_EQ(z.calls, 2);
        CHECK_EQ(ha_engine_retire(e, id), 0);
}

/* A zone retired with a job running and two queued, replaced by one of the
 * same name: the running job finishes where it is, the queued ones go to
 * the successor, which holds them until the old one has ended; every job
 * is answered once, the counts stay, the id is reused only after. */
static void test_retire(HaEngine *e)
{
        static Zctx old, next, later;
        HaRemoteZoneConfig zone = { .name = "zc", .protocol = HA_PROTOCOL_V1,
                                    .mem = "/x", .shm_config = "/y" };
        HaJobReq r[] = { { 0, 2, 0 }, { 1, 2, 0 }, { 2, 2, 0 } };
        double before = svc_requests(e, 2);
        unsigned a, b, c;

        engine = e;
        char st[32];
        cJSON *o;

        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &old, "zc", 1, 4, &a), 0);
        CHECK_EQ(ha_engine_start_zone(e, a, &zone), 0);
        CHECK_EQ(ha_engine_route(e, 2, a), 0);
        set_released(false);
        ha_engine_dispatch(e, rt.id, r, 1);
        CHECK(wait_count(&rt_started, 1));      /* one runs, two wait */
        ha_engine_dispatch(e, rt.id, r + 1, 2);
        CHECK_EQ(queued_on(e, "zc"), 2);

        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &next, "zc", 1, 4, &b), 0);
        CHECK(b != a);
        CHECK_EQ(ha_engine_retire(e, a), 0);
        CHECK_EQ(ha_engine_retire(e, a), -EINVAL);
        CHECK_EQ(ha_engine_route(e, 2, a), -EINVAL);
        CHECK_EQ(ha_engine_route_of(e, 2), HA_EXECUTOR_LOCAL);
        CHECK_EQ(ha_engine_start_zone(e, b, &zone), 0);
        CHECK_EQ(ha_engine_route(e, 2, b), 0);
        CHECK(strcmp(state_of(e, "zc", st, sizeof(st)), "retiring") == 0);
        /* The two queued jobs move to the successor, which holds them. */
        loop_until(held_two_p);
        CHECK_EQ(held_queued(), 2);
        CHECK_EQ(__atomic_load_n(&rt_started, __ATOMIC_RELAXED), 1);
        o = cJSON_CreateObject();
        ha_engine_route_json(e, 2, o);
        CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(o, "executor_state")->valuestring,
                     "waiting-predecessor") == 0);
        cJSON_Delete(o);
        CHECK_EQ(answered(&rt), 0);
        CHECK_EQ(old.released, 0);

        /* A new job for a third zone while a is retiring: not a's id. */
        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &later, "zl", 1, 4, &c), 0);
        CHECK(c != a);
        CHECK_EQ(ha_engine_retire(e, c), 0);

        set_released(true);
        {
                HaJobReq r4 = { 3, 2, 0 };

                ha_engine_dispatch(e, rt.id, &r4, 1);
        }
        loop_until(rt_done);
        loop_until(retired_p);
        check_once(&rt, 4, 0);
        CHECK_EQ(old.calls, 1);
        CHECK_EQ(next.calls, 3);
        CHECK_EQ(old.released, 1);
        CHECK_EQ(later.released, 1);
        CHECK_EQ(svc_requests(e, 2), before + 4);     /* the retired one's count too */
        CHECK_EQ(ha_engine_retire(e, b), 0);
        loop_until(retired_p);
        CHECK_EQ(next.released, 1);
        CHECK_EQ(svc_requests(e, 2), before + 4);
        CHECK(strcmp(state_of(e, "zc", st, sizeof(st)), "(none)") == 0);
        /* Ended: their ids are free again, the lowest first. */
        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &later, "zl", 1, 4, &c), 0);
        CHECK_EQ(c, seq_exec);
        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &later, "zl2", 1, 4, &c), 0);
        CHECK_EQ(c, a);
}

static bool bt_done(void)
{
        return answered(&bt) == 3;
}

/* Jobs its thread took in one batch but had not started when the zone was
 * retired: they run where the service routes now (the local pool). */
static void test_retire_batch(HaEngine *e)
{
        static Zctx z;
        HaJobReq r[] = { { 0, 2, 0 }, { 1, 2, 0 }, { 2, 2, 0 } };
        unsigned id;

        CHECK_EQ(ha_engine_add_executor(e, &zone_ops, &z, "zb", 1, 4, &id), 0);
        CHECK_EQ(ha_engine_route(e, 2, id), 0);
        set_released(false);
        __atomic_store_n(&rt_started, 0, __ATOMIC_RELAXED);
        ha_engine_dispatch(e, bt.id, r, 3);     /* one submit: one batch */
        CHECK(wait_count(&rt_started, 1));
        CHECK_EQ(queued_on(e, "zb"), 2);
        CHECK_EQ(ha_engine_retire(e, id), 0);
        set_released(true);
        loop_until(bt_done);
        loop_until(retired_p);
        check_once(&bt, 3, 0);
        CHECK_EQ(z.calls, 1);
        CHECK_EQ(z.released, 1);
        CHECK_EQ(ha_engine_route_of(e, 2), HA_EXECUTOR_LOCAL);
}

/* Who runs a socket job: the loop for a small quick local one while every
 * worker sleeps; the pool for a large one; the remote executor for one
 * routed there. */
static void test_loop_policy(HaEngine *e, HaSockq *q)
{
        static uint8_t big[2000];
        double before = loop_jobs(e), echoes = svc_requests(e, ECHO);

        CHECK(ha_service_by_id(ECHO)->quick && ha_service_by_id(1)->quick);
        CHECK(wait_asleep(e));
        socket_result = -1;
        CHECK_EQ(ha_sockq_submit_data(q, ECHO, "hello", 5, NULL, 7), 0);
        loop_until(socket_done_p);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        CHECK_EQ(loop_jobs(e), before + 1);
        CHECK_EQ(svc_requests(e, ECHO), echoes + 1);    /* counted as a worker's */
        /* Over HA_LOOP_JOB_BYTES: the pool, even with every worker asleep. */
        CHECK(wait_asleep(e));
        socket_result = -1;
        CHECK_EQ(ha_sockq_submit_data(q, ECHO, big, sizeof(big), NULL, 8), 0);
        loop_until(socket_done_p);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        CHECK_EQ(loop_jobs(e), before + 1);
}

int main(void)
{
        static HaJobReq reqs[SRC_CAP];
        static const uint8_t cipher[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
        HaEngine *e = NULL;
        HaSockq *q = NULL;
        HaConfig cfg;
        HaConfigSlot slot = { &cfg };
        double ran_on_loop;
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
                reqs[i] = (HaJobReq){ (uint16_t)i, ECHO, 0 };
        in_engine = true;
        for (unsigned i = 0; i < NSRC; i++)
                ha_engine_dispatch(e, srcs[i].id, reqs, SRC_CAP);
        in_engine = false;
        /* A socket request still has room. */
        CHECK_EQ(ha_sockq_submit_data(q, ECHO, "hello", 5, NULL, 7), 0);
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
                HaJobReq r3[] = { { 0, 200, 0 }, { 1, 200, 0 }, { 2, 200, 0 }, { 3, 201, 0 } };

                in_engine = true;
                ha_engine_dispatch(e, small.id, r3, 4);
                in_engine = false;
        }
        CHECK_EQ(small.failed, 0);      /* never from inside the dispatch */
        set_released(true);
        loop_until(small_done);
        check_once(&small, 4, 2);
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
        ran_on_loop = loop_jobs(e);
        CHECK(wait_asleep(e));  /* so only the route keeps it off the loop */
        socket_result = -1;
        CHECK_EQ(ha_sockq_submit_data(q, 1, "hello", 5, NULL, 7), 0);
        loop_until(socket_done_p);
        CHECK_EQ(socket_result, HA_RESULT_SUCCESS);
        CHECK(memcmp(socket_data, cipher, 5) == 0);
        CHECK_EQ(__atomic_load_n(&remote_calls, __ATOMIC_RELAXED), 3);
        CHECK(!__atomic_load_n(&remote_bad_worker, __ATOMIC_RELAXED));   /* one thread */
        /* Small and quick, but routed to the remote executor: never the loop. */
        CHECK_EQ(loop_jobs(e), ran_on_loop);

        test_loop_policy(e, q);

        seq.answers = calloc(2, 1);
        rt.answers = calloc(4, 1);
        CHECK_EQ(ha_engine_add_source(e, &src_ops, &seq, "seq", 2, &seq.id), 0);
        CHECK_EQ(ha_engine_add_source(e, &src_ops, &rt, "rt", 4, &rt.id), 0);
        test_sequential_client(e);
        test_retire(e);
        bt.answers = calloc(3, 1);
        CHECK_EQ(ha_engine_add_source(e, &src_ops, &bt, "bt", 3, &bt.id), 0);
        test_retire_batch(e);

        CHECK_EQ(ha_engine_stop(e, false), 0);
        ha_engine_free(e);
        ha_sockq_free(q);
        for (unsigned i = 0; i < NSRC; i++)
                free(srcs[i].answers);
        free(small.answers);
        free(seq.answers);
        free(rt.answers);
        free(bt.answers);
        event_base_free(base);
        return check_done("engine");
}
