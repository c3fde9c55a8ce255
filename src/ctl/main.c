/* SPDX-License-Identifier: MIT */
/* hyperampctl: one command table drives parsing, --help and validation. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "services.h"
#include "sockpath.h"

#define DEFAULT_TIMEOUT_MS 10000

typedef struct CtlCommand {
        const char *name;
        const char *args;
        const char *help;
        int (*fn)(Ctx *ctx, int argc, char **argv);
} CtlCommand;

static int cmd_submit(Ctx *ctx, int argc, char **argv);
static int cmd_stats(Ctx *ctx, int argc, char **argv);
static int cmd_services(Ctx *ctx, int argc, char **argv);
static int cmd_ping(Ctx *ctx, int argc, char **argv);
static int cmd_reload(Ctx *ctx, int argc, char **argv);
static int cmd_shutdown(Ctx *ctx, int argc, char **argv);

static const CtlCommand commands[] = {
        { "submit", "[-s SERVICE] [DATA | -f FILE]",
          "Run SERVICE (name or id, default echo) on DATA, FILE or stdin;\n"
          "write the result bytes to stdout", cmd_submit },
        { "stats", "", "Show the daemon's counters, queue and latency per service", cmd_stats },
        { "services", "", "List the services the daemon offers", cmd_services },
        { "ping", "", "Check that the daemon answers, and how fast", cmd_ping },
        { "bench", "[-s SERVICE | --mix] [-c CONCURRENCY] [-n REQUESTS | --duration SEC] [--size BYTES]\n"
          "        [--connections K] [--overload] [--transport socket|shm] [--threads T]",
          "Keep CONCURRENCY requests in flight over K connections, verify every\n"
          "response, report req/s and latency percentiles (defaults: echo,\n"
          "-c 64, -n 10000, 64 bytes, 1 connection); --overload allows more\n"
          "in flight than the queue holds, counting E_BUSY replies; --transport shm\n"
          "submits through shared memory (libhyperamp) from T threads (K and\n"
          "--overload are for the socket, T for shm);\n"
          "--duration runs for SEC seconds instead of a number of requests;\n"
          "--mix cycles through every service and sizes 16, 64, 256, ... up to\n"
          "--size (default 65536 with --mix)", cmd_bench },
        { "reload", "", "Make the daemon re-read its config; returns once it confirms\n"
          "(admin: root, the daemon's user or its admin_group)", cmd_reload },
        { "shutdown", "", "Stop the daemon gracefully, like SIGTERM (admin)", cmd_shutdown },
};

/* Print text with every line indented. */
static void print_indented(FILE *f, const char *text, int indent)
{
        for (const char *line = text; *line;) {
                size_t len = strcspn(line, "\n");
                fprintf(f, "%*s%.*s\n", indent, "", (int)len, line);
                line += len + (line[len] == '\n');
        }
}

static void usage(FILE *f)
{
        fprintf(f, "Usage: hyperampctl [OPTIONS] COMMAND [ARGS]\n"
                   "\n"
                   "Talk to hyperampd over its control socket.\n"
                   "\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                fprintf(f, "  %s%s%s\n", commands[i].name, *commands[i].args ? " " : "",
                        commands[i].args);
                print_indented(f, commands[i].help, 6);
        }
        fprintf(f, "\n"
                   "Options (before or after the command, or after submit's DATA):\n"
                   "      --socket PATH   control socket (default: as hyperampd resolves it:\n"
                   "                      $HYPERAMP_SOCKET, $RUNTIME_DIRECTORY, /run/hyperamp as\n"
                   "                      root, $XDG_RUNTIME_DIR/hyperamp, /tmp/hyperamp-$UID)\n"
                   "  -j, --json          machine-readable JSON output\n"
                   "  -t, --timeout SEC   give up after SEC seconds (default 10)\n"
                   "  -h, --help          show this help (or a command's: COMMAND --help)\n"
                   "  -V, --version       show the version\n"
                   "Command options have long forms too: -s --service, -f --file,\n"
                   "-c --concurrency, -n --requests.\n"
                   "\n"
                   "Exit status: 0 success; 1 the daemon reported an error or the service\n"
                   "failed; 2 usage error; 69 daemon unreachable or gone; 75 timed out.\n");
}


static const struct option global_opts[] = {
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
};

static const char *socket_opt;

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
                ctx->json = true;
                return 1;
        case 't':
                if (ctl_parse_uint(optarg, 1, 86400, &v) < 0)
                        return ctl_usage_error("--timeout: '%s' is not a number of seconds from 1 to 86400", optarg);
                ctx->timeout_ms = (int)v * 1000;
                return 1;
        case 'h':
                if (cmd) {
                        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                                if (strcmp(commands[i].name, cmd) == 0) {
                                        printf("Usage: hyperampctl %s%s%s\n\n", cmd,
                                               *commands[i].args ? " " : "", commands[i].args);
                                        print_indented(stdout, commands[i].help, 2);
                                        printf("\nSee 'hyperampctl --help' for the common options.\n");
                                }
                } else
                        usage(stdout);
                return CTL_STOP_OK;
        case 'V':
                printf("hyperampctl %s\n", HA_VERSION);
                return CTL_STOP_OK;
        case '?':
                fprintf(stderr, "Try 'hyperampctl %s--help'.\n", cmd ? cmd : "");
                return -EXIT_USAGE;
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

int ctl_connect(Ctx *ctx, HaClient *c)
{
        int r = ha_socket_path(socket_opt, ctx->socket_path, sizeof(ctx->socket_path));

        if (r < 0) {
                fprintf(stderr, "hyperampctl: the socket path is too long\n");
                return EXIT_USAGE;
        }
        r = ha_client_connect(c, ctx->socket_path, ctx->timeout_ms);
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
                                "Is it running? (start it with 'hyperampd', or pass --socket)\n",
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

/* Parse a command line that takes only the global options; returns
 * positional count or -EXIT_*. */
static int parse_plain(Ctx *ctx, int argc, char **argv)
{
        const struct option *opts = ctl_options(NULL, 0);
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "+jt:hV", opts, NULL)) >= 0) {
                r = ctl_global_opt(ctx, c, argv[0]);
                if (r < 0)
                        return r;
        }
        if (optind < argc)
                return ctl_usage_error("unexpected argument '%s'", argv[optind]);
        return 0;
}

/* Call method and return the reply, or print the failure. */
static int simple_call(Ctx *ctx, const char *method, cJSON *params, const void *payload,
                       size_t plen, HaReply *rep, uint8_t **data, size_t *dlen)
{
        HaClient c;
        int r;

        r = ctl_connect(ctx, &c);
        if (r) {
                cJSON_Delete(params);
                return r;
        }
        r = ha_client_call(&c, method, params, payload, plen, rep, data, dlen);
        ha_client_close(&c);
        if (r < 0)
                return ctl_call_error(ctx, r);
        if (rep->error_code) {
                free(*data);
                *data = NULL;
                return ctl_reply_error(method, rep);
        }
        return 0;
}

static void print_json(const cJSON *o)
{
        char *s = cJSON_Print(o);

        if (s)
                printf("%s\n", s);
        free(s);
}

static double num(const cJSON *o, const char *path)
{
        char buf[128];
        const cJSON *cur = o;

        snprintf(buf, sizeof(buf), "%s", path);
        for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur;
             tok = strtok_r(NULL, ".", &save))
                cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        return cJSON_IsNumber(cur) ? cur->valuedouble : 0;
}

static int read_stream(FILE *f, uint8_t **ret, size_t *ret_len)
{
        size_t cap = 4096, len = 0;
        uint8_t *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        for (;;) {
                size_t n;
                if (len == cap) {
                        uint8_t *nb;
                        if (cap >= (1u << 30)) {
                                free(buf);
                                return -EFBIG;
                        }
                        nb = realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = nb;
                        cap *= 2;
                }
                n = fread(buf + len, 1, cap - len, f);
                len += n;
                if (n == 0) {
                        if (ferror(f)) {
                                free(buf);
                                return -EIO;
                        }
                        break;
                }
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

static int cmd_submit(Ctx *ctx, int argc, char **argv)
{
        static const struct option own[] = {
                { "service", required_argument, NULL, 's' },
                { "file", required_argument, NULL, 'f' },
        };
        const struct option *opts = ctl_options(own, ELEMENTSOF(own));
        const char *service = "echo", *file = NULL;
        _cleanup_free_ uint8_t *payload = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        size_t plen = 0, dlen = 0;
        uint16_t sid = 0;
        bool by_name;
        HaReply rep;
        cJSON *params;
        int c, r;

        optind = 0;     /* 0, not 1: glibc re-reads the optstring, so options may follow DATA */
        while ((c = getopt_long(argc, argv, "s:f:jt:hV", opts, NULL)) >= 0) {
                if (c == 's')
                        service = optarg;
                else if (c == 'f')
                        file = optarg;
                else if ((r = ctl_global_opt(ctx, c, argv[0])) < 0)
                        return r;
        }
        if (argc - optind > 1)
                return ctl_usage_error("submit takes one DATA argument (got extra '%s')", argv[optind + 1]);
        if (argc - optind == 1 && file)
                return ctl_usage_error("give DATA or -f FILE, not both ('%s')", argv[optind]);
        r = ha_service_parse(service, &sid);
        if (r == -EINVAL)
                return ctl_usage_error("-s: '%s' is not a service name or an id from 0 to 65535", service);
        /* An unknown name is left to the daemon, which knows its own table. */
        by_name = r == -ENOENT;

        if (argc - optind == 1) {
                plen = strlen(argv[optind]);
                payload = (uint8_t *)strdup(argv[optind]);
                if (!payload)
                        return EXIT_FAILED;
        } else {
                _cleanup_fclose_ FILE *f = NULL;
                if (file) {
                        f = fopen(file, "re");
                        if (!f) {
                                fprintf(stderr, "hyperampctl: %s: %s\n", file, strerror(errno));
                                return -EXIT_USAGE;
                        }
                }
                r = read_stream(f ? f : stdin, &payload, &plen);
                if (r < 0) {
                        fprintf(stderr, "hyperampctl: reading %s: %s\n", file ? file : "stdin",
                                strerror(-r));
                        return EXIT_FAILED;
                }
        }
        if (plen == 0)
                return ctl_usage_error("%s", "nothing to submit: the payload is empty");

        params = cJSON_CreateObject();
        if (by_name)
                cJSON_AddStringToObject(params, "service", service);
        else
                cJSON_AddNumberToObject(params, "service", sid);
        r = simple_call(ctx, "submit", params, payload, plen, &rep, &data, &dlen);
        if (r)
                return r;

        const cJSON *status = cJSON_GetObjectItemCaseSensitive(rep.result, "status");
        bool ok = cJSON_IsString(status) && strcmp(status->valuestring, "SUCCESS") == 0;
        if (ctx->json) {
                cJSON *o = cJSON_Duplicate(rep.result, true);
                char *hex = malloc(dlen * 2 + 1);
                if (o && hex) {
                        for (size_t i = 0; i < dlen; i++)
                                sprintf(hex + 2 * i, "%02x", data[i]);
                        hex[dlen * 2] = '\0';
                        cJSON_AddNumberToObject(o, "length", (double)dlen);
                        cJSON_AddStringToObject(o, "data_hex", hex);
                        print_json(o);
                }
                free(hex);
                cJSON_Delete(o);
        } else if (ok) {
                if (dlen && fwrite(data, 1, dlen, stdout) != dlen) {
                        fprintf(stderr, "hyperampctl: writing the result: %s\n", strerror(errno));
                        ha_reply_done(&rep);
                        return EXIT_FAILED;
                }
        }
        if (!ok)
                fprintf(stderr, "hyperampctl: service %s: %s%s\n", service,
                        cJSON_IsString(status) ? status->valuestring : "no status",
                        cJSON_IsString(status) && strcmp(status->valuestring, "NOT_EXITS") == 0 ?
                        " (no such service)" : "");
        ha_reply_done(&rep);
        if (fflush(stdout) != 0)
                return EXIT_FAILED;
        return ok ? EXIT_OK : EXIT_FAILED;
}

/*
 * A command with no arguments of its own: call method, then print the
 * result raw with --json, or through human() for people.
 */
static int run_plain(Ctx *ctx, int argc, char **argv, const char *method,
                     void (*human)(const cJSON *res, double elapsed_us))
{
        _cleanup_free_ uint8_t *data = NULL;
        struct timespec a, b;
        size_t dlen;
        HaReply rep;
        int r;

        r = parse_plain(ctx, argc, argv);
        if (r < 0)
                return r;
        clock_gettime(CLOCK_MONOTONIC, &a);
        r = simple_call(ctx, method, NULL, NULL, 0, &rep, &data, &dlen);
        if (r)
                return r;
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (ctx->json)
                print_json(rep.result);
        else
                human(rep.result, (double)(b.tv_sec - a.tv_sec) * 1e6 +
                                  (double)(b.tv_nsec - a.tv_nsec) / 1e3);
        ha_reply_done(&rep);
        return EXIT_OK;
}

static const char *str(const cJSON *o, const char *key)
{
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
        return v ? v : "?";
}

static void print_stats(const cJSON *res, double elapsed_us)
{
        const cJSON *s;
        (void)elapsed_us;

        printf("hyperampd %s, pid %.0f, up %.1f s, %.0f workers\n", str(res, "version"),
               num(res, "pid"), num(res, "uptime_s"), num(res, "workers.count"));
        printf("queue        capacity %.0f, depth %.0f, in flight %.0f, free %.0f\n",
               num(res, "queue.capacity"), num(res, "queue.depth"), num(res, "queue.in_flight"),
               num(res, "queue.free"));
        printf("pool         %.0f bytes, %.0f in use in %.0f buffers, largest free %.0f\n",
               num(res, "pool.size"), num(res, "pool.bytes_in_use"),
               num(res, "pool.buffers_in_use"), num(res, "pool.largest_free"));
        printf("requests     submitted %.0f, completed %.0f, failed %.0f, rejected %.0f\n",
               num(res, "requests.submitted"), num(res, "requests.completed"),
               num(res, "requests.failed"), num(res, "requests.rejected"));
        printf("connections  current %.0f, total %.0f, rejected %.0f, protocol errors %.0f, "
               "timeouts %.0f\n",
               num(res, "connections.current"), num(res, "connections.total"),
               num(res, "connections.rejected"), num(res, "connections.protocol_errors"),
               num(res, "connections.timeouts"));
        printf("shm checks   bad index %.0f, cycles %.0f, bad state %.0f, repairs %.0f, tampered %.0f\n",
               num(res, "queue.bad_index"), num(res, "queue.cycles"), num(res, "queue.bad_state"),
               num(res, "queue.repairs"), num(res, "requests.tampered"));
        printf("\n%-10s %-6s %-9s %8s %10s %10s %8s %8s\n", "SOURCE", "KIND", "STATE", "PID",
               "SUBMITTED", "COMPLETED", "FAILED", "BAD");
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(res, "sources")) {
                const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "state"));
                /* entries refused as hostile: out of range, in a cycle, wrong state */
                double bad = num(s, "bad_index") + num(s, "bad_state") + num(s, "bad_ring") +
                             num(s, "bad_range") + num(s, "cycles") + num(s, "bad_length") +
                             num(s, "bad_flag");
                /* v1 channels call it requests, as docs/hyperamp-v1.md does */
                double submitted = cJSON_GetObjectItemCaseSensitive(s, "submitted") ?
                                   num(s, "submitted") : num(s, "requests");

                /* Idle zone slots that never served anyone are noise. */
                if (state && strcmp(state, "free") == 0 && submitted == 0 && bad == 0)
                        continue;
                printf("%-10s %-6s %-9s %8.0f %10.0f %10.0f %8.0f %8.0f\n", str(s, "name"),
                       str(s, "kind"), state ? state : "-", num(s, "pid"), submitted,
                       num(s, "completed"), num(s, "failed"), bad);
        }
        printf("\n%-6s %-14s %10s %8s %10s %10s %10s\n", "ID", "SERVICE", "REQUESTS", "FAILED",
               "P50 us", "P99 us", "MAX us");
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(res, "services")) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(s, "id");
                char idbuf[16] = "-";

                if (cJSON_IsNumber(id))
                        snprintf(idbuf, sizeof(idbuf), "%.0f", id->valuedouble);
                printf("%-6s %-14s %10.0f %8.0f %10.1f %10.1f %10.1f\n", idbuf, str(s, "name"),
                       num(s, "requests"), num(s, "failed"), num(s, "latency_us.p50"),
                       num(s, "latency_us.p99"), num(s, "latency_us.max"));
        }
}

static void print_services(const cJSON *res, double elapsed_us)
{
        const cJSON *s;
        (void)elapsed_us;

        printf("%-6s %-10s %s\n", "ID", "NAME", "SUMMARY");
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(res, "services"))
                printf("%-6.0f %-10s %s\n", num(s, "id"), str(s, "name"), str(s, "summary"));
}

static void print_ping(const cJSON *res, double elapsed_us)
{
        printf("pong from hyperampd %s (pid %.0f, protocol %.0f) in %.0f us\n",
               str(res, "version"), num(res, "pid"), num(res, "protocol"), elapsed_us);
}

static void print_list(const char *label, const cJSON *a)
{
        const cJSON *v;
        bool first = true;

        printf("%s", label);
        cJSON_ArrayForEach(v, a) {
                printf("%s%s", first ? " " : ", ", cJSON_GetStringValue(v));
                first = false;
        }
        printf("%s\n", first ? " nothing" : "");
}

static void print_reload(const cJSON *res, double elapsed_us)
{
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(res, "config");
        (void)elapsed_us;

        printf("reloaded %s\n", cJSON_IsString(cfg) ? cfg->valuestring : "(built-in defaults)");
        print_list("applied:", cJSON_GetObjectItemCaseSensitive(res, "applied"));
        print_list("needs a restart:", cJSON_GetObjectItemCaseSensitive(res, "restart_required"));
}

static void print_shutdown(const cJSON *res, double elapsed_us)
{
        (void)res, (void)elapsed_us;
        printf("hyperampd is shutting down\n");
}

static int cmd_reload(Ctx *ctx, int argc, char **argv)
{
        return run_plain(ctx, argc, argv, "reload", print_reload);
}

static int cmd_shutdown(Ctx *ctx, int argc, char **argv)
{
        return run_plain(ctx, argc, argv, "shutdown", print_shutdown);
}

static int cmd_stats(Ctx *ctx, int argc, char **argv)
{
        return run_plain(ctx, argc, argv, "stats", print_stats);
}

static int cmd_services(Ctx *ctx, int argc, char **argv)
{
        return run_plain(ctx, argc, argv, "services", print_services);
}

static int cmd_ping(Ctx *ctx, int argc, char **argv)
{
        return run_plain(ctx, argc, argv, "ping", print_ping);
}

int main(int argc, char **argv)
{
        const struct option *opts = ctl_options(NULL, 0);
        Ctx ctx = { .timeout_ms = DEFAULT_TIMEOUT_MS };
        const CtlCommand *cmd = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "+jt:hV", opts, NULL)) >= 0) {
                r = ctl_global_opt(&ctx, c, NULL);
                if (r < 0)
                        return r == CTL_STOP_OK ? EXIT_OK : -r;
        }
        if (optind >= argc) {
                usage(stderr);
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, argv[optind]) == 0)
                        cmd = &commands[i];
        if (!cmd) {
                r = ctl_usage_error("unknown command '%s'", argv[optind]);
                return -r;
        }
        /* Resolve the socket only after the command line is parsed: a
         * command may still carry --socket. */
        argc -= optind;
        argv += optind;
        r = cmd->fn(&ctx, argc, argv);
        if (r < 0)
                return r == CTL_STOP_OK ? EXIT_OK : -r;
        return r;
}
