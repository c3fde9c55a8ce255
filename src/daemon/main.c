/* SPDX-License-Identifier: MIT */
/* hyperampd: argument parsing, start-up in dependency order, the loop, and
 * the scripted shutdown.  Everything else lives in its own subsystem. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "control.h"
#include "engine.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "sockpath.h"

#define SHUTDOWN_DEADLINE_S 10

typedef struct Daemon {
        struct event_base *base;
        HaEngine *engine;
        HaControl *control;
        struct event *sig_term, *sig_int, *sig_hup, *deadline;
        bool stopping;
} Daemon;

static void help(void)
{
        printf("Usage: hyperampd [OPTIONS]\n"
               "\n"
               "Serve HyperAMP requests: own the shared-memory queue and buffer pool,\n"
               "run services on a worker pool, and answer hyperampctl on a Unix socket.\n"
               "Runs in the foreground; SIGTERM or SIGINT stops it after in-flight\n"
               "requests finish.\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE      read JSON config FILE (default: built-in settings)\n"
               "      --socket PATH      control socket path (default: see below)\n"
               "  -w, --workers N        worker threads, 1-256 (default: one per CPU)\n"
               "  -l, --log-level LEVEL  err, warning, notice, info or debug (default: info)\n"
               "      --check-config     validate the config, print the effective settings\n"
               "                         as JSON and exit (non-zero on error)\n"
               "  -h, --help             show this help and exit\n"
               "  -V, --version          show the version and exit\n"
               "\n"
               "Socket path, first that applies: --socket, $HYPERAMP_SOCKET,\n"
               "$RUNTIME_DIRECTORY/hyperampd.sock, /run/hyperamp/hyperampd.sock (root),\n"
               "$XDG_RUNTIME_DIR/hyperamp/hyperampd.sock, /tmp/hyperamp-$UID/hyperampd.sock.\n"
               "\n"
               "Exit status: 0 after a clean shutdown, 1 on a start-up or config error,\n"
               "2 on a usage error.\n");
}

static void shutdown_closed(void *userdata)
{
        Daemon *d = userdata;

        event_base_loopexit(d->base, NULL);
}

static void shutdown_drained(void *userdata)
{
        Daemon *d = userdata;

        ha_control_close_all(d->control, shutdown_closed, d);
}

static void deadline_cb(evutil_socket_t fd, short what, void *userdata)
{
        Daemon *d = userdata;
        (void)fd, (void)what;

        log_warning("Shutdown deadline (%d s) passed with %u requests in flight, exiting anyway",
                    SHUTDOWN_DEADLINE_S, ha_engine_in_flight(d->engine));
        event_base_loopexit(d->base, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *userdata)
{
        Daemon *d = userdata;
        struct timeval tv = { SHUTDOWN_DEADLINE_S, 0 };
        (void)what;

        if (sig == SIGHUP) {
                log_notice("SIGHUP received; configuration reload is not supported yet, ignoring");
                return;
        }
        if (d->stopping) {
                log_notice("Signal %d again, stopping now", (int)sig);
                event_base_loopbreak(d->base);
                return;
        }
        d->stopping = true;
        (void)sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
        log_info("Signal %d received, finishing %u requests in flight", (int)sig,
                 ha_engine_in_flight(d->engine));
        ha_control_quiesce(d->control);
        evtimer_add(d->deadline, &tv);
        ha_engine_on_drained(d->engine, shutdown_drained, d);
}

static int parse_workers(const char *s, unsigned *ret)
{
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || !*s || *end || v < 1 || v > 256)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

static int run(const HaConfig *cfg, const char *socket_path)
{
        Daemon d = { 0 };
        struct event_config *ec;
        sigset_t mask, old;
        int r = 0;

        /* Workers inherit a mask with our signals blocked, so only the loop
         * thread ever sees them. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, &old);
        signal(SIGPIPE, SIG_IGN);

        evthread_use_pthreads();
        ec = event_config_new();
        if (ec)
                event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);  /* loop thread only */
        d.base = ec ? event_base_new_with_config(ec) : NULL;
        if (ec)
                event_config_free(ec);
        if (!d.base) {
                log_error("Failed to create the event loop");
                return -ENOMEM;
        }
        log_info("hyperampd %s starting (libevent %s, %s backend; cJSON %s)", HA_VERSION,
                 event_get_version(), event_base_get_method(d.base), cJSON_Version());

        r = ha_engine_new(d.base, cfg, ha_control_complete, &d.engine);
        if (r < 0)
                goto out;

        r = ha_control_new(d.base, d.engine, cfg, socket_path, &d.control);
        if (r < 0)
                goto out;

        d.sig_term = evsignal_new(d.base, SIGTERM, signal_cb, &d);
        d.sig_int = evsignal_new(d.base, SIGINT, signal_cb, &d);
        d.sig_hup = evsignal_new(d.base, SIGHUP, signal_cb, &d);
        d.deadline = evtimer_new(d.base, deadline_cb, &d);
        if (!d.sig_term || !d.sig_int || !d.sig_hup || !d.deadline ||
            evsignal_add(d.sig_term, NULL) < 0 || evsignal_add(d.sig_int, NULL) < 0 ||
            evsignal_add(d.sig_hup, NULL) < 0) {
                r = log_error_errno(-ENOMEM, "Failed to set up signal handling: %m");
                goto out;
        }
        /* Only now: a signal before this point waits, blocked, for the loop. */
        pthread_sigmask(SIG_SETMASK, &old, NULL);

        (void)sd_notifyf(0, "READY=1\nSTATUS=Serving on %s, %u queue entries",
                         socket_path, cfg->queue_entries);
        log_info("Ready");
        if (event_base_dispatch(d.base) < 0)
                r = log_error_errno(-EIO, "Event loop failed");
        else
                log_info("Stopped cleanly");
out:
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        /* Reverse order of start-up: the engine joins its workers first, so
         * no completion can reach a freed connection. */
        d.engine = ha_engine_free(d.engine);
        d.control = ha_control_free(d.control);
        if (d.sig_term)
                event_free(d.sig_term);
        if (d.sig_int)
                event_free(d.sig_int);
        if (d.sig_hup)
                event_free(d.sig_hup);
        if (d.deadline)
                event_free(d.deadline);
        event_base_free(d.base);
        libevent_global_shutdown();
        return r;
}

int main(int argc, char **argv)
{
        enum { OPT_CHECK_CONFIG = 0x100, OPT_SOCKET };
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, OPT_SOCKET },
                { "workers", required_argument, NULL, 'w' },
                { "log-level", required_argument, NULL, 'l' },
                { "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        const char *config_path = NULL, *socket_opt = NULL;
        char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char err[512];
        bool check = false;
        unsigned workers = 0;
        int log_level = -1;
        HaConfig cfg;
        int c, r;

        ha_log_open("hyperampd");
        while ((c = getopt_long(argc, argv, "c:w:l:hV", opts, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case OPT_SOCKET:
                        socket_opt = optarg;
                        break;
                case 'w':
                        if (parse_workers(optarg, &workers) < 0) {
                                fprintf(stderr, "hyperampd: --workers: '%s' is not a number from 1 to 256\n", optarg);
                                return 2;
                        }
                        break;
                case 'l':
                        log_level = ha_log_level_parse(optarg);
                        if (log_level < 0) {
                                fprintf(stderr, "hyperampd: --log-level: '%s' is not one of err, warning, notice, info, debug\n", optarg);
                                return 2;
                        }
                        break;
                case OPT_CHECK_CONFIG:
                        check = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("hyperampd %s\n", HA_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'hyperampd --help'.\n");
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "hyperampd: unexpected argument '%s'\nTry 'hyperampd --help'.\n",
                        argv[optind]);
                return 2;
        }

        ha_config_defaults(&cfg);
        if (config_path && ha_config_load(&cfg, config_path, err, sizeof(err)) < 0) {
                log_error("Invalid configuration: %s", err);
                return 1;
        }
        if (workers)
                cfg.workers = workers;
        if (log_level >= 0)
                cfg.log_level = log_level;
        ha_log_set_level(cfg.log_level);

        r = ha_socket_path(socket_opt, socket_path, sizeof(socket_path));
        if (r < 0) {
                log_error("The control socket path is too long (at most %zu bytes)",
                          sizeof(socket_path) - 1);
                return 1;
        }

        if (check) {
                _cleanup_free_ char *json = ha_config_to_json(&cfg, socket_path);
                if (!json) {
                        log_error("Out of memory");
                        return 1;
                }
                printf("%s\n", json);
                return 0;
        }
        return run(&cfg, socket_path) < 0 ? 1 : 0;
}
