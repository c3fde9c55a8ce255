/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "control.h"
#include "daemon.h"
#include "engine.h"
#include "hyperamp-config.h"
#include "listenfds.h"
#include "log.h"
#include "metrics.h"
#include "services.h"
#include "sockq.h"
#include "remote_v1.h"
#include "remote_v2.h"
#include "v1chan.h"
#include "v2chan.h"
#include "zones.h"

#define SHUTDOWN_DEADLINE_S 10

#define LOOP_COUNTERS(X)                                                                \
        X(polls, "socket_polls", "loop_socket_polls", "",                               \
          "Times the loop polled without sleeping after serving a socket client (socket_poll_us)") \
        X(poll_found, "socket_poll_found", "loop_socket_poll_found", "",                \
          "Passes in those polls that read a socket request again")

typedef struct LoopCounters {
        LOOP_COUNTERS(HA_COUNTER_FIELD)
        uint64_t poll_ns;               /* in poll windows, working or looking: a CPU busy */
} LoopCounters;

typedef struct Daemon {
        const HaDaemonOptions *opts;
        HaConfigSlot cfg;               /* the one running config */
        struct event_base *base;
        HaEngine *engine;
        HaSockq *sockq;                 /* the socket's queue: a source */
        HaControl *control;
        HaMetrics *metrics;
        HaV1Chan *v1[HA_V1_MAX_CHANNELS];       /* v1 compatibility channels */
        /* The executor of each of the config's remote zones (the engine
         * owns the zones themselves). */
        unsigned remote_exec[HA_REMOTE_MAX_ZONES];
        HaV2Chan *v2chan[HA_V2_MAX_CHANNELS];   /* v2 backend channels: sources */
        HaZones *zones;
        struct event *sig_term, *sig_int, *sig_hup;
        struct event *deadline, *status_timer, *watchdog_timer;
        sigset_t sigs, old_sigs;        /* ours, blocked outside the loop; the rest */
        unsigned draining;              /* the next subsystem to drain */
        int result;                     /* what ha_daemon_run returns */
        bool stopping;
        bool abandoned;                 /* deadline or second signal: stop now */
        bool stuck;                     /* a worker did not come back: leave its memory */
        bool wedged;                    /* the watchdog is holding back pings */
        uint64_t status_completed;      /* for req/s between STATUS= updates */
        uint64_t status_ns;
        LoopCounters loop;              /* run_loop's: the loop thread's own */
} Daemon;

static const HaConfig *cfg_of(const Daemon *d)
{
        return ha_config_get(&d->cfg);
}

int ha_daemon_load_config(HaConfig *cfg, const HaDaemonOptions *opts, char *err, size_t errlen)
{
        int r;

        ha_config_defaults(cfg);
        if (opts->config_path) {
                r = ha_config_load(cfg, opts->config_path, err, errlen);
                if (r < 0)
                        return r;
        }
        if (opts->workers)
                cfg->workers = opts->workers;
        if (opts->log_level >= 0)
                cfg->log_level = opts->log_level;
        return 0;
}

/* ===== systemd status and watchdog ===== */

static void notify_status(Daemon *d, const char *extra)
{
        HaEngineCounts n;
        uint64_t now = ha_now_ns();
        double rate = 0;

        uint64_t completed = ha_sockq_completed(d->sockq);

        ha_engine_counts(d->engine, &n);
        if (d->status_ns && now > d->status_ns)
                rate = (double)(completed - d->status_completed) * 1e9 / (double)(now - d->status_ns);
        d->status_completed = completed;
        d->status_ns = now;
        (void)sd_notifyf(0, "%sSTATUS=serving: %.0f req/s, queue %u/%u, %u workers",
                         extra ? extra : "", rate, ha_sockq_in_flight(d->sockq), ha_sockq_capacity(d->sockq),
                         n.workers);
}

static void status_cb(evutil_socket_t fd, short what, void *userdata)
{
        Daemon *d = userdata;
        (void)fd, (void)what;

        if (!d->stopping && !d->wedged)
                notify_status(d, NULL);
}

static void arm_status_timer(Daemon *d)
{
        struct timeval tv = { cfg_of(d)->status_interval_ms / 1000,
                              (cfg_of(d)->status_interval_ms % 1000) * 1000 };

        evtimer_add(d->status_timer, &tv);     /* re-adding moves the deadline */
}

static void status_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        Daemon *d = userdata;

        status_cb(fd, what, d);
        arm_status_timer(d);
}

/* Ping only while the workers make progress: a job stuck for longer than
 * worker_stall_ms holds the pings back, and systemd's watchdog fires. */
static void watchdog_cb(evutil_socket_t fd, short what, void *userdata)
{
        Daemon *d = userdata;
        uint64_t busy_ns;
        int w;
        (void)fd, (void)what;

        w = ha_engine_stalled_worker(d->engine, (uint64_t)cfg_of(d)->worker_stall_ms * 1000000u,
                                     &busy_ns);
        if (w >= 0) {
                if (!d->wedged)
                        ha_log_ctx(LOG_ERR, HA_LOG_CTX(.message_id = HA_MID_STALLED),
                                   "Worker %d stuck on one job for %.1f s, holding back "
                                   "watchdog pings", w, (double)busy_ns / 1e9);
                d->wedged = true;
                (void)sd_notifyf(0, "STATUS=worker %d stuck for %.0f s", w, (double)busy_ns / 1e9);
                return;
        }
        if (d->wedged)
                log_notice("Workers make progress again, watchdog pings resume");
        d->wedged = false;
        (void)sd_notify(0, "WATCHDOG=1");
}

/* ===== remote zones ===== */

/* A remote zone: an executor with one thread (stop-and-wait; for v2,
 * also because the rings have no correlation id) and a queue of
 * max_pending, not routed yet.  The engine owns the zone from here. */
static int remote_open(Daemon *d, const HaRemoteZoneConfig *z, unsigned *id)
{
        const bool v2 = z->protocol == HA_PROTOCOL_V2;
        HaRemoteV1 *r1 = NULL;
        HaRemoteV2 *r2 = NULL;
        int r;

        r = v2 ? ha_remote_v2_open(z, HA_V2_BULK_MAX, &r2) :
                 ha_remote_v1_new(z, cfg_of(d)->shm_name, &r1);
        if (r < 0)
                return r;
        r = ha_engine_add_executor(d->engine, v2 ? &ha_executor_v2 : &ha_executor_remote_v1,
                                   v2 ? (void *)r2 : (void *)r1, z->name, 1, z->max_pending,
                                   id);
        if (r < 0) {
                ha_remote_v2_close(r2);
                ha_remote_v1_free(r1);
                return log_error_errno(r, "remote zone '%s': cannot add its executor: %m",
                                       z->name);
        }
        return 0;
}

/* Its service ids go to it from now on (after a predecessor on the same
 * queue has retired: ha_engine_start_zone). */
static void remote_route(Daemon *d, const HaRemoteZoneConfig *z, unsigned id)
{
        /* Cannot fail: id is a live executor, not retiring. */
        (void)ha_engine_start_zone(d->engine, id, z);
        for (unsigned k = 0; k < z->n_services; k++)
                (void)ha_engine_route(d->engine, z->services[k], id);
        log_info("remote zone '%s': services %u%s routed to it", z->name, z->services[0],
                 z->n_services > 1 ? " and more" : "");
}

/* Before any source runs a job. */
static int remote_start(Daemon *d)
{
        for (unsigned i = 0; i < cfg_of(d)->n_remote_zones; i++) {
                const HaRemoteZoneConfig *z = &cfg_of(d)->remote_zones[i];
                int r = remote_open(d, z, &d->remote_exec[i]);

                if (r < 0)
                        return r;
                remote_route(d, z, d->remote_exec[i]);
        }
        return 0;
}

/* The zone of c named name, or -1. */
static int zone_index(const HaConfig *c, const char *name)
{
        for (unsigned i = 0; i < c->n_remote_zones; i++)
                if (strcmp(c->remote_zones[i].name, name) == 0)
                        return (int)i;
        return -1;
}

static bool zone_same(const HaRemoteZoneConfig *a, const HaRemoteZoneConfig *b)
{
        return strcmp(a->name, b->name) == 0 && a->protocol == b->protocol &&
               a->address == b->address && a->creator == b->creator && a->peer == b->peer &&
               strcmp(a->shm_config, b->shm_config) == 0 && strcmp(a->mem, b->mem) == 0 &&
               a->base == b->base && a->bell == b->bell &&
               strcmp(a->bell_path, b->bell_path) == 0 && a->bell_zone == b->bell_zone &&
               a->bell_address == b->bell_address && a->timeout_ms == b->timeout_ms &&
               a->max_pending == b->max_pending && a->n_services == b->n_services &&
               memcmp(a->services, b->services, a->n_services * sizeof(a->services[0])) == 0;
}

/* n's zone i runs on as it is: same name, same keys. */
static bool zone_kept(const HaConfig *old, const HaConfig *n, unsigned i)
{
        int k = zone_index(old, n->remote_zones[i].name);

        return k >= 0 && zone_same(&old->remote_zones[k], &n->remote_zones[i]);
}

/* Undo step one for n's zones below upto: those opened are retired again
 * (never routed, they had no job). */
static void remote_abandon(Daemon *d, const HaConfig *old, const HaConfig *n,
                           const unsigned *ids, unsigned upto)
{
        for (unsigned i = 0; i < upto; i++)
                if (!zone_kept(old, n, i))
                        (void)ha_engine_retire(d->engine, ids[i]);
}

/* A reload's remote zones, step one, with nothing changed yet: open each
 * zone of n that is new or changed (ids[i]; a kept one keeps its
 * executor).  On failure, nothing is left changed and the reload is
 * refused. */
static int remote_prepare(Daemon *d, const HaConfig *old, const HaConfig *n, unsigned *ids,
                          char *err, size_t errlen)
{
        for (unsigned i = 0; i < n->n_remote_zones; i++) {
                const HaRemoteZoneConfig *z = &n->remote_zones[i];
                int r;

                if (zone_kept(old, n, i)) {
                        ids[i] = d->remote_exec[zone_index(old, z->name)];
                        continue;
                }
                r = remote_open(d, z, &ids[i]);
                if (r < 0) {
                        snprintf(err, errlen, "remote zone '%s' cannot be set up: %s (the log "
                                 "says why)", z->name, strerror(-r));
                        remote_abandon(d, old, n, ids, i);
                        return r;
                }
        }
        return 0;
}

/* Step two, on the loop with no job dispatched in between: retire the
 * zones removed or changed (their services route back to the local pool),
 * then route the new ones. */
static void remote_commit(Daemon *d, const HaConfig *old, const HaConfig *n,
                          const unsigned *ids)
{
        for (unsigned k = 0; k < old->n_remote_zones; k++) {
                const char *name = old->remote_zones[k].name;
                int i = zone_index(n, name);

                if (i >= 0 && zone_kept(old, n, (unsigned)i))
                        continue;
                log_info("remote zone '%s' %s by the reload: retiring its executor", name,
                         i < 0 ? "removed" : "changed");
                (void)ha_engine_retire(d->engine, d->remote_exec[k]);
        }
        for (unsigned i = 0; i < n->n_remote_zones; i++) {
                if (!zone_kept(old, n, i))
                        remote_route(d, &n->remote_zones[i], ids[i]);
                d->remote_exec[i] = ids[i];
        }
}

/* ===== reload ===== */

static int reload(void *userdata, cJSON **ret, char *err, size_t errlen)
{
        Daemon *d = userdata;
        char live[512], restart[512];
        unsigned ids[HA_REMOTE_MAX_ZONES];
        HaConfig n, eff;
        HaConfig *snap = NULL;
        cJSON *o, *a;
        int r;

        (void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading configuration",
                         (unsigned long long)(ha_now_ns() / 1000));
        r = ha_daemon_load_config(&n, d->opts, err, errlen);
        if (r == 0) {
                /* Take only what can change live; validate that against the
                 * pool and queue that exist now. */
                eff = *cfg_of(d);
                ha_config_diff(cfg_of(d), &n, live, sizeof(live), restart, sizeof(restart));
                ha_config_apply_live(&eff, &n);
                r = ha_config_validate(&eff, err, errlen);
        }
        /* The zones it adds are set up first: one that cannot be refuses
         * the reload, with nothing changed. */
        if (r == 0)
                r = remote_prepare(d, cfg_of(d), &eff, ids, err, errlen);
        if (r == 0 && !(snap = ha_config_new(&eff))) {
                snprintf(err, errlen, "out of memory");
                remote_abandon(d, cfg_of(d), &eff, ids, eff.n_remote_zones);
                r = -ENOMEM;
        }
        if (r < 0) {
                ha_log_ctx(LOG_ERR, HA_LOG_CTX(.message_id = HA_MID_RELOAD_FAILED),
                           "Reload failed, keeping the running configuration: %s", err);
                notify_status(d, "READY=1\n");
                return r;
        }

        remote_commit(d, cfg_of(d), snap, ids);
        /* Everyone reads the slot: the engine and control see it from here on. */
        ha_config_swap(&d->cfg, snap);
        ha_log_set_level(eff.log_level);
        ha_control_config_changed(d->control);
        arm_status_timer(d);
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.message_id = HA_MID_RELOADED),
                   "Configuration reloaded from %s; applied: %s; needs a restart: %s",
                   d->opts->config_path ? d->opts->config_path : "built-in defaults",
                   live[0] ? live : "nothing", restart[0] ? restart : "nothing");
        notify_status(d, "READY=1\n");

        o = cJSON_CreateObject();
        if (d->opts->config_path)
                cJSON_AddStringToObject(o, "config", d->opts->config_path);
        else
                cJSON_AddNullToObject(o, "config");
        a = cJSON_AddArrayToObject(o, "applied");
        for (char *save = NULL, *t = strtok_r(live, ",", &save); t; t = strtok_r(NULL, ",", &save))
                cJSON_AddItemToArray(a, cJSON_CreateString(t));
        a = cJSON_AddArrayToObject(o, "restart_required");
        for (char *save = NULL, *t = strtok_r(restart, ",", &save); t; t = strtok_r(NULL, ",", &save))
                cJSON_AddItemToArray(a, cJSON_CreateString(t));
        *ret = o;
        return 0;
}

/* ===== subsystems ===== */

static void drain_next(void *userdata);

static void deadline_cb(evutil_socket_t fd, short what, void *userdata)
{
        Daemon *d = userdata;
        (void)fd, (void)what;

        log_warning("Shutdown deadline (%d s) passed with %u requests in flight, exiting anyway",
                    SHUTDOWN_DEADLINE_S, ha_sockq_in_flight(d->sockq));
        d->abandoned = true;
        event_base_loopexit(d->base, NULL);
}

static void begin_shutdown(void *userdata);

static void signal_cb(evutil_socket_t sig, short what, void *userdata)
{
        Daemon *d = userdata;
        char err[512];
        cJSON *res = NULL;
        (void)what;

        if (sig == SIGHUP) {
                log_info("SIGHUP received, reloading the configuration");
                if (reload(d, &res, err, sizeof(err)) == 0)
                        cJSON_Delete(res);
                return;
        }
        if (d->stopping) {
                log_notice("Signal %d again, stopping now", (int)sig);
                d->abandoned = true;
                event_base_loopbreak(d->base);
                return;
        }
        log_info("Signal %d received", (int)sig);
        begin_shutdown(d);
}

/* ===== zone channels ===== */

static int zone_attach(void *userdata, pid_t pid, uid_t uid, bool resume, HaAttachGrant *grant,
                       void **lease)
{
        return ha_zones_attach(userdata, pid, uid, resume, grant, (HaZone **)lease);
}

static void zone_attached(void *userdata, void *lease, int sent)
{
        (void)userdata;
        ha_zones_attached(lease, sent);
}

static void zone_detach(void *userdata, void *lease)
{
        (void)userdata;
        ha_zones_detach(lease);
}

static struct event_base *new_base(void)
{
        struct event_config *ec = event_config_new();
        struct event_base *base;

        if (!ec)
                return NULL;
        /* Only the loop thread touches the base. */
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        base = event_base_new_with_config(ec);
        event_config_free(ec);
        return base;
}

static int loop_start(Daemon *d)
{
        evthread_use_pthreads();
        d->base = new_base();
        if (!d->base)
                return log_error_errno(-ENOMEM, "Failed to create the event loop: %m");
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.message_id = HA_MID_STARTED),
                   "hyperampd %s starting (libevent %s, %s backend; cJSON %s; logging to %s)",
                   HA_VERSION, event_get_version(), event_base_get_method(d->base),
                   cJSON_Version(), ha_log_target_name());
        return 0;
}

static void loop_free(Daemon *d)
{
        if (d->base)
                event_base_free(d->base);
        d->base = NULL;
        libevent_global_shutdown();
}

#if HA_TEST_SEAMS
/* $HYPERAMP_TEST_STALL_FIFO turns on the stall service (services.h), and
 * $HYPERAMP_TEST_STALL_ENTERED names a FIFO told of each stall begun; the
 * fds stay open for the life of the process, on purpose. */
static int seams_start(Daemon *d)
{
        const char *fifo = getenv("HYPERAMP_TEST_STALL_FIFO");
        const char *entered = getenv("HYPERAMP_TEST_STALL_ENTERED");
        int fd, efd = -1;
        (void)d;

        if (!fifo || !*fifo)
                return 0;
        fd = open(fifo, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                log_warning_errno(-errno, "HYPERAMP_TEST_STALL_FIFO=%s: %m, ignoring", fifo);
                return 0;
        }
        if (entered && *entered) {
                efd = open(entered, O_RDWR | O_NONBLOCK | O_CLOEXEC);
                if (efd < 0)
                        log_warning_errno(-errno, "HYPERAMP_TEST_STALL_ENTERED=%s: %m, ignoring",
                                          entered);
        }
        ha_services_enable_stall(fd, efd);
        log_warning("Test seam enabled: service %d blocks on %s", HA_SERVICE_STALL, fifo);
        return 0;
}
#endif

static int engine_start(Daemon *d)
{
        return ha_engine_new(d->base, cfg_of(d), &d->engine);
}

static void engine_free(Daemon *d)
{
        d->engine = ha_engine_free(d->engine);
}

/* The socket's queue: a source like the others, registered first. */
static int sockq_start(Daemon *d)
{
        return ha_sockq_new(d->base, d->engine, &d->cfg, ha_control_complete,
                            ha_control_refused, &d->sockq);
}

static void sockq_drain(Daemon *d)
{
        ha_sockq_on_drained(d->sockq, drain_next, d);
}

static void sockq_free(Daemon *d)
{
        d->sockq = ha_sockq_free(d->sockq);
}

static int zones_start(Daemon *d)
{
        int r = ha_zones_new(d->base, d->engine, cfg_of(d), &d->zones);

        if (r < 0)
                log_error_errno(r, "Failed to set up zone channels: %m");
        return r;
}

/* After the engine's requests: what is on every ring is taken a last time. */
static void zones_drain(Daemon *d)
{
        ha_zones_quiesce(d->zones, drain_next, d);
}

static void zones_free(Daemon *d)
{
        d->zones = ha_zones_free(d->zones);
}

static void loop_stats(void *userdata, HaStats *s)
{
        const Daemon *d = userdata;
        const LoopCounters *blk = &d->loop;

        ha_stats_section(s, "loop");
        LOOP_COUNTERS(HA_COUNTER_EMIT)
        HA_COUNTER_EXPR_EMIT("socket_poll_seconds", "loop_socket_poll", "seconds",
                             "Time the loop spent in those polls, working or looking: a CPU kept busy",
                             (double)blk->poll_ns / 1e9)
        ha_stats_leave(s);
}

static int control_start(Daemon *d)
{
        int r = ha_control_new(d->base, d->engine, d->sockq, &d->cfg, d->opts->socket_path,
                               &d->control);

        if (r < 0)
                return r;
        ha_control_add_stats(d->control, loop_stats, d);
        ha_control_set_hooks(d->control, reload, begin_shutdown, d);
        ha_control_set_zone_hooks(d->control, zone_attach, zone_attached, zone_detach, d->zones);
        return 0;
}

static void control_quiesce(Daemon *d)
{
        ha_control_quiesce(d->control);
}

/* Last: the connections carry the replies and hold the zone leases. */
static void control_drain(Daemon *d)
{
        ha_control_close_all(d->control, drain_next, d);
}

static void control_free(Daemon *d)
{
        d->control = ha_control_free(d->control);
}

static void render_metrics(void *userdata, HaStats *s)
{
        ha_control_stats(userdata, s);
}

/* After control: it renders through ha_control_stats.  Read-only, so it
 * serves on through the drain; freed before control. */
static int metrics_start(Daemon *d)
{
        int r = ha_metrics_new(d->base, cfg_of(d), render_metrics, d->control, &d->metrics);

        if (r < 0)
                return r;
        if (d->metrics)
                ha_control_add_stats(d->control, ha_metrics_stats, d->metrics);
        /* Control and metrics have taken theirs: the rest would leak. */
        ha_listen_fds_close_rest();
        return 0;
}

static void metrics_free(Daemon *d)
{
        d->metrics = ha_metrics_free(d->metrics);
}

static int v1_start(Daemon *d)
{
        for (unsigned i = 0; i < cfg_of(d)->n_v1_channels; i++) {
                int r = ha_v1chan_start(d->base, d->engine, &cfg_of(d)->v1_channels[i],
                                        cfg_of(d)->shm_name, &d->v1[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void v1_free(Daemon *d)
{
        for (unsigned i = 0; i < HA_V1_MAX_CHANNELS; i++)
                d->v1[i] = ha_v1chan_free(d->v1[i]);
}

/* v2 backend channels: a seL4 frontend's requests, a poller thread each. */
static int v2chan_start(Daemon *d)
{
        for (unsigned i = 0; i < cfg_of(d)->n_v2_channels; i++) {
                int r = ha_v2chan_start(d->base, d->engine, &cfg_of(d)->v2_channels[i],
                                        &d->v2chan[i]);

                if (r < 0)
                        return r;
        }
        return 0;
}

/* After the barrier: a poller waiting for a job the loop will not
 * complete any more stops waiting. */
static void v2chan_stop(Daemon *d)
{
        for (unsigned i = 0; i < HA_V2_MAX_CHANNELS; i++)
                ha_v2chan_stop(d->v2chan[i]);
}

static void v2chan_free(Daemon *d)
{
        for (unsigned i = 0; i < HA_V2_MAX_CHANNELS; i++)
                d->v2chan[i] = ha_v2chan_free(d->v2chan[i]);
}

static int signals_start(Daemon *d)
{
        d->sig_term = evsignal_new(d->base, SIGTERM, signal_cb, d);
        d->sig_int = evsignal_new(d->base, SIGINT, signal_cb, d);
        d->sig_hup = evsignal_new(d->base, SIGHUP, signal_cb, d);
        if (!d->sig_term || !d->sig_int || !d->sig_hup || evsignal_add(d->sig_term, NULL) < 0 ||
            evsignal_add(d->sig_int, NULL) < 0 || evsignal_add(d->sig_hup, NULL) < 0)
                return log_error_errno(-ENOMEM, "Failed to set up signal handling: %m");
        /* Only now: a signal before this point waits, blocked, for the loop. */
        pthread_sigmask(SIG_SETMASK, &d->old_sigs, NULL);
        return 0;
}

static void free_event(struct event **ev)
{
        if (*ev)
                event_free(*ev);
        *ev = NULL;
}

static void signals_free(Daemon *d)
{
        free_event(&d->sig_term);
        free_event(&d->sig_int);
        free_event(&d->sig_hup);
}

static int systemd_start(Daemon *d)
{
        uint64_t wd_usec = 0;

        d->deadline = evtimer_new(d->base, deadline_cb, d);
        d->status_timer = evtimer_new(d->base, status_timer_cb, d);
        d->watchdog_timer = event_new(d->base, -1, EV_PERSIST, watchdog_cb, d);
        if (!d->deadline || !d->status_timer || !d->watchdog_timer)
                return log_error_errno(-ENOMEM, "Failed to set up the timers: %m");
        if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
                struct timeval tv = { (time_t)(wd_usec / 2 / 1000000),
                                      (suseconds_t)(wd_usec / 2 % 1000000) };
                event_add(d->watchdog_timer, &tv);
                log_info("Watchdog enabled: pinging every %.3f s while workers make progress",
                         (double)wd_usec / 2e6);
        }
        arm_status_timer(d);
        notify_status(d, "READY=1\n");
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.message_id = HA_MID_READY),
                   "Ready: serving on %s", d->opts->socket_path);
        return 0;
}

static void systemd_quiesce(Daemon *d)
{
        struct timeval tv = { SHUTDOWN_DEADLINE_S, 0 };

        (void)sd_notifyf(0, "STOPPING=1\nSTATUS=Shutting down, finishing %u requests",
                         ha_sockq_in_flight(d->sockq));
        ha_log_ctx(LOG_INFO, HA_LOG_CTX(.message_id = HA_MID_STOPPING),
                   "Shutting down, finishing %u requests in flight",
                   ha_sockq_in_flight(d->sockq));
        evtimer_add(d->deadline, &tv);
}

/* How it ended, once the workers are joined. */
static void systemd_stop(Daemon *d)
{
        if (d->result < 0 || d->stuck)
                return;         /* said where it failed */
        if (d->abandoned)
                log_warning("Stopped at the shutdown deadline; requests still in flight "
                            "were dropped");
        else
                ha_log_ctx(LOG_INFO, HA_LOG_CTX(.message_id = HA_MID_STOPPED), "Stopped cleanly");
}

static void systemd_free(Daemon *d)
{
        free_event(&d->deadline);
        free_event(&d->status_timer);
        free_event(&d->watchdog_timer);
}

/*
 * The subsystems, in start-up order: each may use those above it.
 *
 * Start-up runs the table forward.  Shutdown runs quiesce (take no new
 * work) forward, then drain (finish what was taken: each calls
 * drain_next once idle) forward: the socket queue's requests first, then a
 * zone's last look at its rings, then control closes its connections,
 * which carry the replies and hold the leases.  The loop ends; the one
 * barrier joins the workers; stop and free run in strict reverse.
 *
 * A new subsystem is one row (and its functions above): any slot may be
 * NULL, free must take what a failed start left.  worker_memory: the
 * workers may be inside its memory, so a stuck worker means it is left
 * to exit() rather than freed.
 */
static const struct Subsystem {
        const char *name;
        int (*start)(Daemon *d);
        void (*quiesce)(Daemon *d);
        void (*drain)(Daemon *d);
        void (*stop)(Daemon *d);
        void (*free)(Daemon *d);
        bool worker_memory;
} subsystems[] = {
        { "loop", loop_start, NULL, NULL, NULL, loop_free, false },
#if HA_TEST_SEAMS
        { "test seams", seams_start, NULL, NULL, NULL, NULL, false },
#endif
        { "engine", engine_start, NULL, NULL, NULL, engine_free, true },
        { "remote zones", remote_start, NULL, NULL, NULL, NULL, true },
        { "socket queue", sockq_start, NULL, sockq_drain, NULL, sockq_free, true },
        { "zones", zones_start, NULL, zones_drain, NULL, zones_free, true },
        { "control", control_start, control_quiesce, control_drain, NULL, control_free, false },
        { "metrics", metrics_start, NULL, NULL, NULL, metrics_free, false },
        { "v1", v1_start, NULL, NULL, NULL, v1_free, true },
        { "v2 channels", v2chan_start, NULL, NULL, v2chan_stop, v2chan_free, true },
        { "signals", signals_start, NULL, NULL, NULL, signals_free, false },
        { "systemd", systemd_start, systemd_quiesce, NULL, systemd_stop, systemd_free, false },
};

#define N_SUBSYSTEMS (sizeof(subsystems) / sizeof(subsystems[0]))

static void drain_next(void *userdata)
{
        Daemon *d = userdata;

        while (d->draining < N_SUBSYSTEMS) {
                const struct Subsystem *s = &subsystems[d->draining++];

                if (s->drain) {
                        s->drain(d);    /* calls back here once idle, maybe at once */
                        return;
                }
        }
        event_base_loopexit(d->base, NULL);
}

static void begin_shutdown(void *userdata)
{
        Daemon *d = userdata;

        if (d->stopping)
                return;
        d->stopping = true;
        for (size_t i = 0; i < N_SUBSYSTEMS; i++)
                if (subsystems[i].quiesce)
                        subsystems[i].quiesce(d);
        drain_next(d);
}

/* The barrier: no worker runs after it, so nothing is freed under one. */
static void join_workers(Daemon *d)
{
        if (ha_engine_stop(d->engine, d->abandoned) < 0) {
                /* Its memory (engine, leases, v1 buffers) stays mapped for
                 * it; exit() ends it. */
                d->result = log_error_errno(-ETIMEDOUT, "A worker is stuck in a service; "
                                            "exiting without it");
                if (d->sockq)
                        ha_sockq_leave(d->sockq);
                d->stuck = true;
        }
}

static bool loop_over(const Daemon *d)
{
        return event_base_got_exit(d->base) || event_base_got_break(d->base);
}

/*
 * The event loop.  After a pass that read from a control-socket client it
 * looks again without sleeping (non-blocking passes) for up to
 * socket_poll_us, the window starting over at each read: a client that
 * sends again within it costs no wake-up, which on a VM is a cross-CPU
 * interrupt of tens of microseconds.  0 sleeps at once, as
 * event_base_dispatch does.  Each non-blocking call is one pass
 * (EVLOOP_ONCE: NONBLOCK alone goes on until a pass finds nothing, and
 * the window would not see its reads).  0, or -EIO when libevent failed.
 */
static int run_loop(Daemon *d)
{
        for (;;) {
                uint64_t reads = ha_control_reads(d->control), window, last, now, until;
                int r = event_base_loop(d->base, EVLOOP_ONCE);

                if (r != 0 || loop_over(d))
                        return r < 0 ? -EIO : 0;
                window = (uint64_t)cfg_of(d)->socket_poll_us * 1000u;
                if (!window || ha_control_reads(d->control) == reads)
                        continue;
                d->loop.polls++;
                last = ha_now_ns();
                until = last + window;
                do {
                        reads = ha_control_reads(d->control);
                        r = event_base_loop(d->base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
                        now = ha_now_ns();
                        d->loop.poll_ns += now - last;
                        last = now;
                        if (r != 0 || loop_over(d))
                                return r < 0 ? -EIO : 0;
                        if (ha_control_reads(d->control) != reads) {
                                /* Again from the config: a reload read
                                 * in this window may have changed it. */
                                window = (uint64_t)cfg_of(d)->socket_poll_us * 1000u;
                                d->loop.poll_found++;
                                until = now + window;
                        }
                } while (now < until);
        }
}

int ha_daemon_run(const HaConfig *cfg, const HaDaemonOptions *opts)
{
        Daemon d = { .opts = opts };
        size_t started = 0;
        int r = 0;

        d.cfg.cur = ha_config_new(cfg);
        if (!d.cfg.cur)
                return log_error_errno(-ENOMEM, "Failed to start: %m");
        /* Workers inherit a mask with our signals blocked, so only the loop
         * thread ever sees them. */
        sigemptyset(&d.sigs);
        sigaddset(&d.sigs, SIGTERM);
        sigaddset(&d.sigs, SIGINT);
        sigaddset(&d.sigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &d.sigs, &d.old_sigs);
        signal(SIGPIPE, SIG_IGN);

        /* A failed start leaves its own half to its free, like the rest. */
        while (started < N_SUBSYSTEMS && r == 0) {
                const struct Subsystem *s = &subsystems[started++];

                r = s->start ? s->start(&d) : 0;
        }
        if (r == 0 && run_loop(&d) < 0)
                r = log_error_errno(-EIO, "Event loop failed");

        /* Stopping already: a late SIGTERM must not kill the teardown. */
        pthread_sigmask(SIG_BLOCK, &d.sigs, NULL);
        if (r < 0)
                (void)sd_notifyf(0, "ERRNO=%d\nSTATUS=Failed to start: %s", -r, strerror(-r));
        d.result = r;
        join_workers(&d);
        for (size_t i = started; i-- > 0;)
                if (subsystems[i].stop)
                        subsystems[i].stop(&d);
        for (size_t i = started; i-- > 0;)
                if (subsystems[i].free && !(d.stuck && subsystems[i].worker_memory))
                        subsystems[i].free(&d);
        /* Even past a stuck worker: workers never read the config. */
        ha_config_swap(&d.cfg, NULL);
        return d.result;
}
