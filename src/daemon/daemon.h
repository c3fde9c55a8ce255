/* SPDX-License-Identifier: MIT */
#ifndef HA_DAEMON_H
#define HA_DAEMON_H

#include "config.h"

/* What main() settled from the command line. */
typedef struct HaDaemonOptions {
        const char *config_path;        /* NULL: built-in defaults */
        const char *socket_path;        /* resolved */
        unsigned workers;               /* --workers, 0 if not given */
        int log_level;                  /* --log-level, -1 if not given */
} HaDaemonOptions;

/*
 * Run the daemon until it is stopped: start-up in dependency order, the
 * event loop, systemd notifications (READY, STATUS, RELOADING, STOPPING,
 * WATCHDOG), reload on SIGHUP or request, and the scripted shutdown.
 * Returns 0 after a clean stop, negative errno on a start-up failure.
 */
int ha_daemon_run(const HaConfig *cfg, const HaDaemonOptions *opts);

/* The config as the command line leaves it: file (if any) then overrides. */
int ha_daemon_load_config(HaConfig *cfg, const HaDaemonOptions *opts, char *err, size_t errlen);

#endif
