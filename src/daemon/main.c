/* SPDX-License-Identifier: MIT */
/* hyperampd: the command line.  daemon.c runs the daemon; every other
 * subsystem lives in its own file. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"
#include "daemon.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "sockpath.h"

#define EXIT_CONFIG 78          /* sysexits EX_CONFIG: not restarted by the unit */

static void help(void)
{
        printf("Usage: hyperampd [OPTIONS]\n"
               "\n"
               "Serve HyperAMP requests: own the shared-memory queue and buffer pool,\n"
               "run services on a worker pool, and answer hyperampctl on a Unix socket.\n"
               "Runs in the foreground; SIGTERM or SIGINT stops it after in-flight\n"
               "requests finish, SIGHUP reloads the config.\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE      read JSON config FILE (default: built-in settings)\n"
               "      --socket PATH      control socket path (default: see below)\n"
               "  -w, --workers N        worker threads, 1-256 (default: one per CPU)\n"
               "  -l, --log-level LEVEL  err, warning, notice, info or debug (default: info)\n"
               "      --log-target T     auto, journal, stderr (<N> prefixes) or console\n"
               "                         (default auto: the journal when stderr is its stream)\n"
               "      --check-config     validate the config, print the effective settings\n"
               "                         as JSON and exit (non-zero on error)\n"
               "  -q, --quiet            with --check-config: print only errors\n"
               "  -h, --help             show this help and exit\n"
               "  -V, --version          show the version and exit\n"
               "\n"
               "Socket path, first that applies: --socket, $HYPERAMP_SOCKET,\n"
               "$RUNTIME_DIRECTORY/hyperampd.sock, /run/hyperamp/hyperampd.sock (root),\n"
               "$XDG_RUNTIME_DIR/hyperamp/hyperampd.sock, /tmp/hyperamp-$UID/hyperampd.sock.\n"
               "\n"
               "Exit status: 0 after a clean shutdown, 1 on a start-up error, 2 on a\n"
               "usage error, 78 on a configuration error.\n");
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

int main(int argc, char **argv)
{
        enum { OPT_CHECK_CONFIG = 0x100, OPT_SOCKET, OPT_LOG_TARGET };
        static const struct option longopts[] = {
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, OPT_SOCKET },
                { "workers", required_argument, NULL, 'w' },
                { "log-level", required_argument, NULL, 'l' },
                { "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
                { "log-target", required_argument, NULL, OPT_LOG_TARGET },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        const char *socket_opt = NULL;
        char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        HaDaemonOptions opts = { .log_level = -1 };
        char err[512];
        bool check = false, quiet = false;
        HaConfig cfg;
        int c, r;

        ha_log_open("hyperampd");
        while ((c = getopt_long(argc, argv, "c:w:l:qhV", longopts, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        opts.config_path = optarg;
                        break;
                case OPT_SOCKET:
                        socket_opt = optarg;
                        break;
                case 'w':
                        if (parse_workers(optarg, &opts.workers) < 0) {
                                fprintf(stderr, "hyperampd: --workers: '%s' is not a number from 1 to 256\n", optarg);
                                return 2;
                        }
                        break;
                case 'l':
                        opts.log_level = ha_log_level_parse(optarg);
                        if (opts.log_level < 0) {
                                fprintf(stderr, "hyperampd: --log-level: '%s' is not one of err, warning, notice, info, debug\n", optarg);
                                return 2;
                        }
                        break;
                case OPT_CHECK_CONFIG:
                        check = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case OPT_LOG_TARGET:
                        r = ha_log_target_parse(optarg);
                        if (r < 0) {
                                fprintf(stderr, "hyperampd: --log-target: '%s' is not one of auto, journal, stderr, console\n", optarg);
                                return 2;
                        }
                        ha_log_set_target((enum ha_log_target)r);
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

        if (ha_daemon_load_config(&cfg, &opts, err, sizeof(err)) < 0) {
                log_error("Invalid configuration: %s", err);
                return EXIT_CONFIG;
        }
        ha_log_set_level(cfg.log_level);

        r = ha_socket_path(socket_opt, socket_path, sizeof(socket_path));
        if (r < 0) {
                log_error("The control socket path is too long (at most %zu bytes)",
                          sizeof(socket_path) - 1);
                return EXIT_CONFIG;
        }
        opts.socket_path = socket_path;

        if (check && quiet)
                return 0;
        if (check) {
                _cleanup_free_ char *json = ha_config_to_json(&cfg, socket_path);
                if (!json) {
                        log_error("Out of memory");
                        return 1;
                }
                printf("%s\n", json);
                return 0;
        }
        return ha_daemon_run(&cfg, &opts) < 0 ? 1 : 0;
}
