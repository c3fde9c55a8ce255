/* SPDX-License-Identifier: MIT */
/* hyperampctl: one command table drives parsing, --help and validation. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "services.h"
#include "sockpath.h"

#define DEFAULT_TIMEOUT_MS 10000

typedef struct CtlCommand {
        const char *name;
        const char *args;
        const char *help;
        const char *options;    /* its own options, one line each, for COMMAND --help */
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
          "write the result bytes to stdout",
          "  -s, --service SERVICE   service name or id (default echo)\n"
          "  -f, --file FILE         read the payload from FILE (else DATA, else stdin)\n",
          cmd_submit },
        { "stats", "[--watch [SEC] [--count N] | --format openmetrics]",
          "Show the daemon's counters, queue and latency per service; with\n"
          "--watch, rates per second every SEC seconds until Ctrl-C; with\n"
          "--format openmetrics, the text GET /metrics serves",
          "      --watch [SEC]       live view: redraw every SEC seconds (default 1)\n"
          "      --count N           with --watch: stop after N intervals\n"
          "      --format FORMAT     text (default) or openmetrics (for node_exporter's\n"
          "                          textfile collector)\n",
          cmd_stats },
        { "services", "", "List the services the daemon offers", "", cmd_services },
        { "ping", "", "Check that the daemon answers, and how fast", "", cmd_ping },
        { "bench", "[-s SERVICE | --mix] [-c CONCURRENCY] [-n REQUESTS | --duration SEC] [--size BYTES]\n"
          "        [--connections K] [--overload] [--transport socket|shm] [--threads T]\n"
          "        [--spin-us US]",
          "Keep CONCURRENCY requests in flight over K connections, verify every\n"
          "response, report req/s and latency percentiles (defaults: echo,\n"
          "-c 64, -n 10000, 64 bytes, 1 connection); --overload allows more\n"
          "in flight than the queue holds, counting E_BUSY replies; --threads T\n"
          "shares them among T client threads (on the socket each has its own\n"
          "connections); --transport shm submits through shared memory\n"
          "(libhyperamp) (K, --overload and --spin-us are for the socket);\n"
          "each connection keeps its share of CONCURRENCY in flight; a client\n"
          "that finds no reply looks again for --spin-us before it sleeps;\n"
          "--duration runs for SEC seconds instead of a number of requests;\n"
          "--mix cycles through every service and sizes 16, 64, 256, ... up to\n"
          "--size (default 65536 with --mix)",
          "  -s, --service SERVICE   service name or id to run (default echo)\n"
          "      --mix               cycle every service and sizes 16 B up to --size\n"
          "  -c, --concurrency N     requests in flight (default 64)\n"
          "  -n, --requests N        requests in all (default 10000)\n"
          "      --duration SEC      run for SEC seconds instead of -n\n"
          "      --size BYTES        payload bytes (default 64; 65536 with --mix)\n"
          "      --connections K     socket connections to spread them over (default 1)\n"
          "      --overload          allow more in flight than the queue; count E_BUSY\n"
          "      --transport T       socket (default) or shm (libhyperamp)\n"
          "      --threads T         client threads sharing them (default 1; on the\n"
          "                          socket at most K, each with its own connections)\n"
          "      --spin-us US        after a pass with no reply, poll this long before\n"
          "                          sleeping (default 50; 0 sleeps at once)\n",
          cmd_bench },
        { "reload", "", "Make the daemon re-read its config; returns once it confirms\n"
          "(admin: root, the daemon's user or its admin_group)", "", cmd_reload },
        { "shutdown", "", "Stop the daemon gracefully, like SIGTERM (admin)", "", cmd_shutdown },
};

/* The options every command takes, one line each. */
static const char global_help[] =
        "      --socket PATH       control socket (default: where hyperampd puts it)\n"
        "  -j, --json[=pretty|short]\n"
        "                          JSON output: pretty on a terminal, else one line\n"
        "  -t, --timeout SEC       give up after SEC seconds (default 10)\n"
        "  -h, --help              show this help (or a command's: COMMAND --help)\n"
        "  -V, --version           show the version\n";

static const char exit_help[] =
        "Exit status: 0 success; 1 the daemon reported an error or the service\n"
        "failed; 2 usage error; 3 the remote zone serving it did not answer\n"
        "(E_TIMEOUT); 4 no such service (by name or id); 69 daemon\n"
        "unreachable or gone; 75 timed out.\n";

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
        fprintf(f, "\nOptions (before or after the command, or after submit's DATA):\n%s"
                   "Each command's own options: hyperampctl COMMAND --help.\n"
                   "\n"
                   "The socket, unless --socket or $HYPERAMP_SOCKET names one, is where\n"
                   "hyperampd puts it: $RUNTIME_DIRECTORY, /run/hyperamp as root,\n"
                   "$XDG_RUNTIME_DIR/hyperamp, else /tmp/hyperamp-$UID; when no daemon\n"
                   "answers there, the system daemon's %s.\n"
                   "\n%s", global_help, HA_SYSTEM_SOCKET, exit_help);
}

static void command_usage(const CtlCommand *c)
{
        printf("Usage: hyperampctl %s%s%s\n\n", c->name, *c->args ? " " : "", c->args);
        print_indented(stdout, c->help, 2);
        printf("\nOptions:\n%s%s\n%s", c->options, global_help, exit_help);
}


/* Parse a command line that takes only the global options; returns
 * positional count or -EXIT_*. */
static int parse_plain(Ctx *ctx, int argc, char **argv)
{
        const struct option *opts = ctl_options(NULL, 0);
        int c, r;

        optind = 1;
        while ((c = ctl_getopt(argc, argv, "+:jt:hV", opts)) >= 0) {
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

/* Look a name up in the daemon's own table. */
static int resolve_service(Ctx *ctx, const char *name, uint16_t *ret_id)
{
        _cleanup_free_ uint8_t *data = NULL;
        const cJSON *s;
        size_t dlen;
        HaReply rep;
        int r = simple_call(ctx, "services", NULL, NULL, 0, &rep, &data, &dlen);

        if (r)
                return r;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(rep.result, "services")) {
                const char *n = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "name"));
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(s, "id");

                if (n && strcmp(n, name) == 0 && cJSON_IsNumber(id) && id->valuedouble >= 0 &&
                    id->valuedouble <= UINT16_MAX) {
                        *ret_id = (uint16_t)id->valuedouble;
                        ha_reply_done(&rep);
                        return 0;
                }
        }
        ha_reply_done(&rep);
        return ctl_no_such_service(name);
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
        HaReply rep;
        cJSON *params;
        int c, r;

        optind = 0;     /* 0, not 1: glibc re-reads the optstring, so options may follow DATA */
        while ((c = ctl_getopt(argc, argv, ":s:f:jt:hV", opts)) >= 0) {
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
        if (r == -ERANGE)
                return ctl_no_such_service(service);
        if (r == -EINVAL)
                return ctl_usage_error("-s: '%s' is not a service name or an id from 0 to 65535", service);
        /* A name we do not know is the daemon's to resolve: it knows its own table. */
        if (r == -ENOENT) {
                r = resolve_service(ctx, service, &sid);
                if (r)
                        return r;
        }

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
                        ctl_print_json(ctx, o);
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
        bool missing = cJSON_IsString(status) && strcmp(status->valuestring, "NOT_EXITS") == 0;
        bool timeout = cJSON_IsString(status) && strcmp(status->valuestring, "E_TIMEOUT") == 0;
        if (!ok)
                fprintf(stderr, "hyperampctl: service %s: %s%s\n", service,
                        cJSON_IsString(status) ? status->valuestring : "no status",
                        missing ? " (no such service)" :
                        timeout ? " (the remote zone serving it did not answer in time)" : "");
        ha_reply_done(&rep);
        if (fflush(stdout) != 0)
                return EXIT_FAILED;
        return ok ? EXIT_OK : missing ? EXIT_NOSERVICE : timeout ? EXIT_REMOTE_TIMEOUT :
               EXIT_FAILED;
}

/*
 * A command with no arguments of its own: call method, then print the
 * result raw with --json, or through human() for people.
 */
static int run_plain(Ctx *ctx, int argc, char **argv, const char *method,
                     void (*human)(const cJSON *res, double elapsed_us))
{
        _cleanup_free_ uint8_t *data = NULL;
        uint64_t a, b;
        size_t dlen;
        HaReply rep;
        int r;

        r = parse_plain(ctx, argc, argv);
        if (r < 0)
                return r;
        a = ha_now_ns();
        r = simple_call(ctx, method, NULL, NULL, 0, &rep, &data, &dlen);
        if (r)
                return r;
        b = ha_now_ns();
        if (ctx->json)
                ctl_print_json(ctx, rep.result);
        else
                human(rep.result, (double)(b - a) / 1e3);
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
        /* Remote zones (docs/gateway.md): the executors with a protocol. */
        bool header = false;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(res, "executors")) {
                if (!cJSON_GetObjectItemCaseSensitive(s, "protocol"))
                        continue;
                if (!header)
                        printf("\n%-10s %-6s %-13s %9s %8s %8s %8s %9s %9s\n", "ZONE", "PEER",
                               "STATE", "REQUESTS", "FAILED", "TIMEOUTS", "RESTARTS", "RTT P50us",
                               "RTT P99us");
                header = true;
                printf("%-10s %-6s %-13s %9.0f %8.0f %8.0f %8.0f %9.1f %9.1f\n", str(s, "name"),
                       str(s, "peer"), str(s, "state"), num(s, "requests"), num(s, "failures"),
                       num(s, "timeouts"), num(s, "peer_restarts"), num(s, "round_trip_us.p50"),
                       num(s, "round_trip_us.p99"));
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

        printf("%-6s %-10s %-16s %s\n", "ID", "NAME", "RUNS_ON", "SUMMARY");
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(res, "services")) {
                const char *on = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "runs_on"));
                const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s,
                                                                             "executor_state"));
                char where[80];

                /* "local", "zone-b (down)", or "-" for no route. */
                if (!on)
                        snprintf(where, sizeof(where), "-");
                else if (!st || strcmp(st, "ready") == 0)
                        snprintf(where, sizeof(where), "%s", on);
                else
                        snprintf(where, sizeof(where), "%s (%s)", on, st);
                printf("%-6.0f %-10s %-16s %s\n", num(s, "id"), str(s, "name"), where,
                       str(s, "summary"));
        }
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

/* ===== stats --watch: rates between two snapshots ===== */

static volatile sig_atomic_t watch_stop;

static void on_stop_signal(int sig)
{
        (void)sig;
        watch_stop = 1;
}

static const cJSON *find_named(const cJSON *arr, const char *key, const cJSON *like)
{
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(like, key), *e;

        cJSON_ArrayForEach(e, arr) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
                if (cJSON_IsString(v) && cJSON_IsString(want) &&
                    strcmp(v->valuestring, want->valuestring) == 0)
                        return e;
        }
        return NULL;
}

/* Per second, between the same counter in two snapshots: 0 if it went
 * back (the daemon restarted under us) or was not in the last one (a
 * service or source that just appeared has no rate yet). */
static double rate(const cJSON *cur, const cJSON *prev, const char *path, double secs)
{
        double d = prev ? num(cur, path) - num(prev, path) : 0;
        return d > 0 && secs > 0 ? d / secs : 0;
}

static void watch_screen(const cJSON *cur, const cJSON *prev, double secs, double every)
{
        const cJSON *e;

        /* Home and clear: one screen, redrawn, as redis-cli --stat or top. */
        printf("\033[H\033[2J");
        printf("hyperampd %s, pid %.0f, up %.0f s; every %.1f s (Ctrl-C to stop)\n\n",
               str(cur, "version"), num(cur, "pid"), num(cur, "uptime_s"), every);
        printf("requests/s %10.1f   failed/s %8.1f   rejected/s %8.1f   protocol errors/s %6.1f\n",
               rate(cur, prev, "requests.completed", secs), rate(cur, prev, "requests.failed", secs),
               rate(cur, prev, "requests.rejected", secs),
               rate(cur, prev, "connections.protocol_errors", secs));
        printf("queue depth %5.0f of %-5.0f  in flight %5.0f   connections %4.0f\n\n",
               num(cur, "queue.depth"), num(cur, "queue.capacity"), num(cur, "queue.in_flight"),
               num(cur, "connections.current"));
        printf("%-6s %-14s %10s %10s %10s %10s\n", "ID", "SERVICE", "REQ/S", "FAILED/S",
               "P50 us*", "P99 us*");
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(cur, "services")) {
                const cJSON *p = find_named(cJSON_GetObjectItemCaseSensitive(prev, "services"),
                                            "name", e);
                printf("%-6.0f %-14s %10.1f %10.1f %10.1f %10.1f\n", num(e, "id"), str(e, "name"),
                       rate(e, p, "requests", secs), rate(e, p, "failed", secs),
                       num(e, "latency_us.p50"), num(e, "latency_us.p99"));
        }
        printf("\n%-10s %-6s %-9s %10s %10s\n", "SOURCE", "KIND", "STATE", "REQ/S", "FAILED/S");
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(cur, "sources")) {
                const cJSON *p = find_named(cJSON_GetObjectItemCaseSensitive(prev, "sources"),
                                            "name", e);
                const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "state"));
                double r = rate(e, p, "completed", secs);

                if (state && strcmp(state, "free") == 0 && r == 0)
                        continue;
                printf("%-10s %-6s %-9s %10.1f %10.1f\n", str(e, "name"), str(e, "kind"),
                       state ? state : "-", r, rate(e, p, "failed", secs));
        }
        printf("\n* since the daemon started\n");
}

/* A service name as a key: "(unknown id)" -> "unknown_id". */
static void key_of(const char *name, char *buf, size_t size)
{
        size_t n = 0;

        for (; *name && n + 1 < size; name++) {
                bool word = (*name >= 'a' && *name <= 'z') || (*name >= 'A' && *name <= 'Z') ||
                            (*name >= '0' && *name <= '9');
                if (word)
                        buf[n++] = *name;
                else if (n && buf[n - 1] != '_')
                        buf[n++] = '_';
        }
        while (n && buf[n - 1] == '_')
                n--;
        buf[n] = '\0';
}

/* Not a terminal: one line per interval, key=value, for logs and scripts. */
static void watch_line(const cJSON *cur, const cJSON *prev, double secs)
{
        const cJSON *e;
        char when[32];
        time_t now = time(NULL);
        struct tm tm;

        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", localtime_r(&now, &tm));
        printf("time=%s req_per_s=%.1f failed_per_s=%.1f rejected_per_s=%.1f "
               "protocol_errors_per_s=%.1f depth=%.0f in_flight=%.0f connections=%.0f", when,
               rate(cur, prev, "requests.completed", secs), rate(cur, prev, "requests.failed", secs),
               rate(cur, prev, "requests.rejected", secs),
               rate(cur, prev, "connections.protocol_errors", secs), num(cur, "queue.depth"),
               num(cur, "queue.in_flight"), num(cur, "connections.current"));
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(cur, "services")) {
                const cJSON *p = find_named(cJSON_GetObjectItemCaseSensitive(prev, "services"),
                                            "name", e);
                char key[64];

                key_of(str(e, "name"), key, sizeof(key));
                printf(" %s_per_s=%.1f %s_p50_us=%.1f %s_p99_us=%.1f", key,
                       rate(e, p, "requests", secs), key, num(e, "latency_us.p50"), key,
                       num(e, "latency_us.p99"));
        }
        printf("\n");
}

static int stats_watch(Ctx *ctx, double every, unsigned long count)
{
        struct sigaction sa = { .sa_handler = on_stop_signal };  /* no SA_RESTART */
        bool tty = isatty(STDOUT_FILENO) == 1;
        cJSON *prev = NULL;
        uint64_t prev_ns = 0, next_ns;
        unsigned long shown = 0;
        HaClient c;
        int r;

        r = ctl_connect(ctx, &c);
        if (r)
                return r;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        next_ns = ha_now_ns();
        while (!watch_stop) {
                _cleanup_free_ uint8_t *data = NULL;
                size_t dlen;
                HaReply rep;
                uint64_t now;

                r = ha_client_call(&c, "stats", NULL, NULL, 0, &rep, &data, &dlen);
                if (r < 0) {
                        r = ctl_call_error(ctx, r);
                        break;
                }
                if (rep.error_code) {
                        r = ctl_reply_error("stats", &rep);
                        break;
                }
                now = ha_now_ns();
                if (prev) {
                        double secs = (double)(now - prev_ns) / 1e9;
                        if (tty)
                                watch_screen(rep.result, prev, secs, every);
                        else
                                watch_line(rep.result, prev, secs);
                        fflush(stdout);
                        shown++;
                }
                cJSON_Delete(prev);
                prev = cJSON_Duplicate(rep.result, true);
                prev_ns = now;
                ha_reply_done(&rep);
                if (!prev) {
                        r = EXIT_FAILED;
                        break;
                }
                if (count && shown >= count)
                        break;
                /* A display interval, on an absolute clock so it does not drift;
                 * Ctrl-C ends the wait (EINTR) and the loop. */
                next_ns += (uint64_t)(every * 1e9);
                struct timespec ts = { .tv_sec = (time_t)(next_ns / 1000000000u),
                                       .tv_nsec = (long)(next_ns % 1000000000u) };
                while (!watch_stop &&
                       clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                        ;
        }
        cJSON_Delete(prev);
        ha_client_close(&c);
        return r;
}

/* The Prometheus text exposition, as the daemon's metrics listener has it. */
static int stats_openmetrics(Ctx *ctx)
{
        _cleanup_free_ uint8_t *data = NULL;
        cJSON *params = cJSON_CreateObject();
        const char *text;
        size_t dlen;
        HaReply rep;
        int r;

        if (!params || !cJSON_AddStringToObject(params, "format", "openmetrics")) {
                cJSON_Delete(params);
                fprintf(stderr, "hyperampctl: out of memory\n");
                return EXIT_FAILED;
        }
        r = simple_call(ctx, "stats", params, NULL, 0, &rep, &data, &dlen);
        if (r)
                return r;
        text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rep.result, "text"));
        if (!text) {
                ha_reply_done(&rep);
                fprintf(stderr, "hyperampctl: the daemon's stats reply has no \"text\": is it "
                        "older than this hyperampctl?\n");
                return EXIT_FAILED;
        }
        fputs(text, stdout);
        ha_reply_done(&rep);
        return EXIT_OK;
}

static int cmd_stats(Ctx *ctx, int argc, char **argv)
{
        static const struct option own[] = {
                { "watch", optional_argument, NULL, 'w' },
                { "count", required_argument, NULL, 'n' },
                { "format", required_argument, NULL, 'F' },
        };
        bool openmetrics = false;
        const struct option *opts = ctl_options(own, ELEMENTSOF(own));
        const char *sec = NULL;
        unsigned long count = 0;
        bool watch = false;
        double every = 1.0;
        int c, r;

        optind = 0;
        while ((c = ctl_getopt(argc, argv, ":jt:hV", opts)) >= 0) {
                if (c == 'w') {
                        watch = true;
                        sec = optarg;
                } else if (c == 'n') {
                        if (ctl_parse_uint(optarg, 1, 1000000000, &count) < 0)
                                return ctl_usage_error("--count: '%s' is not a number from 1", optarg);
                } else if (c == 'F') {
                        if (strcmp(optarg, "openmetrics") == 0)
                                openmetrics = true;
                        else if (strcmp(optarg, "text") != 0)
                                return ctl_usage_error("--format: '%s' is not text or openmetrics",
                                                       optarg);
                } else if ((r = ctl_global_opt(ctx, c, argv[0])) < 0)
                        return r;
        }
        /* --watch SEC as well as --watch=SEC */
        if (watch && !sec && optind < argc)
                sec = argv[optind++];
        if (optind < argc)
                return ctl_usage_error("stats: unexpected argument '%s'", argv[optind]);
        if (openmetrics) {
                if (watch || count || ctx->json)
                        return ctl_usage_error("%s", "stats: --format openmetrics goes with no "
                                               "--watch, --count or --json");
                return stats_openmetrics(ctx);
        }
        if (!watch) {
                if (count)
                        return ctl_usage_error("%s", "stats: --count goes with --watch");
                return run_plain(ctx, 1, argv, "stats", print_stats);
        }
        if (ctx->json)
                return ctl_usage_error("%s", "stats: --watch shows rates for people; "
                                       "use --json without it, or its one-line output in a pipe");
        if (sec) {
                char *end;
                errno = 0;
                every = strtod(sec, &end);
                if (errno || *end || end == sec || !(every >= 0.1 && every <= 3600))
                        return ctl_usage_error("--watch: '%s' is not a number of seconds "
                                               "from 0.1 to 3600", sec);
        }
        return stats_watch(ctx, every, count);
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

        while ((c = ctl_getopt(argc, argv, "+:jt:hV", opts)) >= 0) {
                r = ctl_global_opt(&ctx, c, NULL);
                if (r == CTL_STOP_HELP)
                        usage(stdout);
                if (r < 0)
                        return r == CTL_STOP_OK || r == CTL_STOP_HELP ? EXIT_OK : -r;
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
        if (r == CTL_STOP_HELP)
                command_usage(cmd);
        if (r < 0)
                return r == CTL_STOP_OK || r == CTL_STOP_HELP ? EXIT_OK : -r;
        return r;
}
