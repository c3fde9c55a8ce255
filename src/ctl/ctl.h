/* SPDX-License-Identifier: MIT */
#ifndef HACTL_CTL_H
#define HACTL_CTL_H

#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>

#include "client.h"

/* Exit status, documented in --help and the README. */
enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,        /* the daemon answered with an error, or the service failed */
        EXIT_USAGE = 2,
        EXIT_REMOTE_TIMEOUT = 3, /* E_TIMEOUT: the remote zone serving it did not answer */
        EXIT_NOSERVICE = 4,     /* no such service, by name or id (as systemctl's "no such unit") */
        EXIT_UNAVAILABLE = 69,  /* cannot reach the daemon, or it went away */
        EXIT_TIMEOUT = 75,      /* no answer within --timeout */
};

typedef struct Ctx {
        char socket_path[108];
        bool json;
        bool json_pretty;       /* --json=pretty, or --json with stdout a terminal */
        int timeout_ms;
} Ctx;

/* Print o as --json asked: pretty or on one line. */
void ctl_print_json(const Ctx *ctx, const cJSON *o);

/* Connects, or prints why not and returns the exit status to use. */
int ctl_connect(Ctx *ctx, HaClient *c);
/* The --socket value given, or NULL. */
const char *ctl_socket_opt(void);
/* Maps a ha_client_call failure to a message and an exit status. */
int ctl_call_error(const Ctx *ctx, int r);
/* Prints the daemon's error reply to method, frees it, returns the exit
 * status (69 for E_LIMIT, else 1). */
int ctl_reply_error(const char *method, HaReply *rep);

/* Says there is no such service; returns EXIT_NOSERVICE. */
int ctl_no_such_service(const char *service);

int cmd_bench(Ctx *ctx, int argc, char **argv);

/* Shared by the commands (common.c). */
enum { OPT_SOCKET = 0x100, OPT_SIZE, OPT_CONNECTIONS, OPT_OVERLOAD, OPT_TRANSPORT, OPT_THREADS,
       OPT_DURATION, OPT_MIX, OPT_SPIN_US };
#define CTL_STOP_OK (-1000)     /* --version printed: exit 0 */
#define CTL_STOP_HELP (-1001)   /* --help: main() prints it, exits 0 */
int ctl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret);
/* getopt_long that reports errors itself, naming the program, not its path;
 * shortopts must start with "+:" or ":" for a missing argument to show. */
int ctl_getopt(int argc, char **argv, const char *shortopts, const struct option *opts);
int ctl_global_opt(Ctx *ctx, int c, const char *cmd);
const struct option *ctl_options(const struct option *own, size_t n);
/* Prints the message and a hint; returns -EXIT_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
