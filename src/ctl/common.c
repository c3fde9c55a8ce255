/* SPDX-License-Identifier: MIT */
/* What every hyperampctl command shares (main.c's commands and bench.c):
 * the global options, connecting, and reporting a failed call. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "sockpath.h"

static const struct option global_opts[] = {
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "json", optional_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
};

static const char *socket_opt;
static char **opt_argv;         /* what ctl_getopt parses, for its messages */

int ctl_getopt(int argc, char **argv, const char *shortopts, const struct option *opts)
{
        opterr = 0;
        opt_argv = argv;
        return getopt_long(argc, argv, shortopts, opts, NULL);
}

void ctl_print_json(const Ctx *ctx, const cJSON *o)
{
        char *s = ctx->json_pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);

        if (s)
                printf("%s\n", s);
        free(s);
}

int ctl_usage_error(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "hyperampctl: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'hyperampctl --help'.\n");
        return -EXIT_USAGE;
}

/* Parse a non-negative integer in [min, max]. */
int ctl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret)
{
        char *end;
        unsigned long v;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/*
 * Handle an option every command accepts.  Returns 1 if handled, 0 if not
 * a global option, -EXIT_* to stop.
 */
int ctl_global_opt(Ctx *ctx, int c, const char *cmd)
{
        unsigned long v;

        switch (c) {
        case OPT_SOCKET:
                socket_opt = optarg;
                return 1;
        case 'j':
                if (!optarg)
                        ctx->json_pretty = isatty(STDOUT_FILENO) == 1;
                else if (strcmp(optarg, "pretty") == 0 || strcmp(optarg, "short") == 0)
                        ctx->json_pretty = optarg[0] == 'p';
                else
                        return ctl_usage_error("--json: '%s' is not pretty or short", optarg);
                ctx->json = true;
                return 1;
        case 't':
                if (ctl_parse_uint(optarg, 1, 86400, &v) < 0)
                        return ctl_usage_error("--timeout: '%s' is not a number of seconds from 1 to 86400", optarg);
                ctx->timeout_ms = (int)v * 1000;
                return 1;
        case 'h':
                return CTL_STOP_HELP;   /* main() has the command table */
        case 'V':
                printf("hyperampctl %s\n", HA_VERSION);
                return CTL_STOP_OK;
        case '?':
        case ':': {
                /* getopt's own message would name argv[0]: a path, or the
                 * command.  A long option shows as typed, a short one alone
                 * (it may sit in a cluster such as -jx). */
                const char *arg = optind > 0 ? opt_argv[optind - 1] : "";
                char shortopt[3] = { '-', (char)optopt, '\0' };
                bool is_long = strncmp(arg, "--", 2) == 0;

                fprintf(stderr, "hyperampctl: %s '%s'\n",
                        c == ':' ? "missing argument for" : "unknown option",
                        is_long || optopt <= 0 || optopt > 0xff ? arg : shortopt);
                fprintf(stderr, "Try 'hyperampctl %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
                return -EXIT_USAGE;
        }
        }
        return 0;
}

/* Merge a command's options with the global ones (static storage). */
const struct option *ctl_options(const struct option *own, size_t n)
{
        static struct option all[32];
        size_t k = 0;

        for (size_t i = 0; i < n && k < ELEMENTSOF(all) - 1; i++)
                all[k++] = own[i];
        for (size_t i = 0; i < ELEMENTSOF(global_opts) && k < ELEMENTSOF(all) - 1; i++)
                all[k++] = global_opts[i];
        memset(&all[k], 0, sizeof(all[k]));
        return all;
}

const char *ctl_socket_opt(void)
{
        return socket_opt;
}

/* Neither --socket nor $HYPERAMP_SOCKET: the path is only our guess. */
static bool socket_guessed(void)
{
        const char *env = getenv("HYPERAMP_SOCKET");

        return !(socket_opt && *socket_opt) && !(env && *env);
}

int ctl_connect(Ctx *ctx, HaClient *c)
{
        char first[sizeof(ctx->socket_path)];
        int r = ha_socket_path(socket_opt, ctx->socket_path, sizeof(ctx->socket_path));

        if (r < 0) {
                fprintf(stderr, "hyperampctl: the socket path is too long\n");
                return EXIT_USAGE;
        }
        r = ha_client_connect(c, ctx->socket_path, ctx->timeout_ms);
        /* No daemon of our own: the system one, as chronyc falls back to
         * chronyd's socket.  Its group decides whether we may talk to it. */
        if ((r == -ENOENT || r == -ECONNREFUSED) && socket_guessed() &&
            strcmp(ctx->socket_path, HA_SYSTEM_SOCKET) != 0 &&
            access(HA_SYSTEM_SOCKET, F_OK) == 0) {
                snprintf(first, sizeof(first), "%s", ctx->socket_path);
                snprintf(ctx->socket_path, sizeof(ctx->socket_path), "%s", HA_SYSTEM_SOCKET);
                r = ha_client_connect(c, ctx->socket_path, ctx->timeout_ms);
                if (r == -ENOENT || r == -ECONNREFUSED || r == -EACCES) {
                        fprintf(stderr, "hyperampctl: cannot reach hyperampd at %s (no daemon "
                                        "of yours), nor the system daemon at %s: %s\n"
                                        "For the system daemon: 'systemctl start hyperampd'%s; "
                                        "for your own: run 'hyperampd', or pass --socket.\n",
                                first, ctx->socket_path, strerror(-r),
                                r == -EACCES ? ", and be in the daemon's socket group "
                                               "(hyperamp by default)" : "");
                        return EXIT_UNAVAILABLE;
                }
        }
        if (r == 0)
                return 0;
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "hyperampctl: %s accepts no connection within %d s "
                                "(daemon hung or overloaded?)\n", ctx->socket_path,
                        ctx->timeout_ms / 1000);
                return EXIT_TIMEOUT;
        }
        if (r == -ENOENT || r == -ECONNREFUSED)
                fprintf(stderr, "hyperampctl: cannot reach hyperampd at %s: %s\n"
                                "Is it running? For the system daemon: 'systemctl start "
                                "hyperampd' (its socket is %s); for your own: run 'hyperampd', "
                                "or pass --socket.\n",
                        ctx->socket_path, strerror(-r), HA_SYSTEM_SOCKET);
        else if (r == -EACCES)
                fprintf(stderr, "hyperampctl: cannot connect to %s: %s\n"
                                "The system daemon's socket is for its group (hyperamp by "
                                "default): ask to be added to it, or run your own 'hyperampd'.\n",
                        ctx->socket_path, strerror(-r));
        else
                fprintf(stderr, "hyperampctl: cannot connect to %s: %s\n", ctx->socket_path,
                        strerror(-r));
        return EXIT_UNAVAILABLE;
}

int ctl_call_error(const Ctx *ctx, int r)
{
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "hyperampctl: no answer from %s within %d s\n", ctx->socket_path,
                        ctx->timeout_ms / 1000);
                return EXIT_TIMEOUT;
        }
        if (r == -EBADMSG) {
                fprintf(stderr, "hyperampctl: %s did not answer with a hyperampd reply\n",
                        ctx->socket_path);
                return EXIT_FAILED;
        }
        if (r == -ECONNRESET || r == -EPIPE) {
                fprintf(stderr, "hyperampctl: connection to hyperampd lost\n");
                return EXIT_UNAVAILABLE;
        }
        fprintf(stderr, "hyperampctl: %s\n", strerror(-r));
        return EXIT_FAILED;
}

int ctl_reply_error(const char *method, HaReply *rep)
{
        /* Refused at the door: as unreachable as a missing daemon. */
        int r = strcmp(rep->error_code, "E_LIMIT") == 0 ? EXIT_UNAVAILABLE : EXIT_FAILED;

        fprintf(stderr, "hyperampctl: %s failed: %s (%s)\n", method, rep->error_message,
                rep->error_code);
        ha_reply_done(rep);
        return r;
}

int ctl_no_such_service(const char *service)
{
        fprintf(stderr, "hyperampctl: no such service '%s' (see 'hyperampctl services')\n",
                service);
        return EXIT_NOSERVICE;
}
