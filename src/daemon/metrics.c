/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <systemd/sd-daemon.h>

#include "hyperamp/cleanup.h"
#include "listenfds.h"
#include "log.h"
#include "metrics.h"
#include "ownpath.h"

#define MAX_HEADERS_SIZE 8192
#define MAX_BODY_SIZE 4096
#define IDLE_TIMEOUT_S 10

/* The listener's counters (stats.h): field, JSON key, metric, unit, help. */
#define METRICS_COUNTERS(X)                                                             \
        X(accepted, "total", "metrics_connections_accepted", "",                        \
          "Connections accepted on the metrics listener")                               \
        X(scrapes, "requests", "metrics_requests", "", "GET or HEAD /metrics answered")  \
        X(not_found, "not_found", "metrics_not_found", "",                              \
          "Metrics requests for another path (404)")                                    \
        X(bad_method, "bad_method", "metrics_bad_method", "",                           \
          "Metrics requests with a method other than GET or HEAD (405)")                \
        X(rejected, "rejected", "metrics_connections_rejected", "",                     \
          "Metrics requests on a connection over metrics_max_connections (503)")        \
        X(malformed, "malformed", "metrics_malformed", "",                              \
          "Metrics connections closed with no request answered (malformed, too large, idle)") \
        X(no_memory, "no_memory", "metrics_no_memory", "",                              \
          "Metrics requests answered 500 for lack of memory")

typedef struct MetricsCounters {
        METRICS_COUNTERS(HA_COUNTER_FIELD)
} MetricsCounters;

typedef struct MConn MConn;

struct HaMetrics {
        struct event_base *base;
        struct evhttp *http;
        struct evconnlistener *listener;        /* evhttp's to free */
        HaSocketOwner own;                      /* a unix path we bound */
        char addr[sizeof(struct sockaddr_storage) + 32];
        unsigned max_conns, nconns;
        bool paused;                            /* listener off: 2 x max_conns open */
        ha_metrics_render_fn render;
        void *userdata;
        LIST_HEAD(, MConn) conns;
        MetricsCounters st;
};

/* One connection, from its accept (evhttp_set_bevcb) to its close
 * (evhttp_connection_set_closecb, set once evhttp has made it). */
struct MConn {
        HaMetrics *m;
        struct bufferevent *bev;
        struct evhttp_connection *evcon;        /* NULL until adopted */
        struct event *adopt;
        bool over;                      /* opened over max_conns: answered 503 */
        bool answered;                  /* the handler answered a request on it */
        LIST_ENTRY(MConn) link;
};

int ha_metrics_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
        struct sockaddr_storage tmp;
        char host[64];
        const char *colon, *h;
        size_t hlen;
        unsigned long port;
        char *end;

        if (!ss)
                ss = &tmp;
        memset(ss, 0, sizeof(*ss));
        if (strncmp(spec, "unix:", 5) == 0) {
                struct sockaddr_un *un = (struct sockaddr_un *)ss;
                const char *path = spec + 5;

                if (path[0] != '/' || strlen(path) >= sizeof(un->sun_path))
                        return -EINVAL;
                un->sun_family = AF_UNIX;
                memcpy(un->sun_path, path, strlen(path) + 1);
                if (len)
                        *len = (socklen_t)sizeof(*un);
                return 0;
        }
        colon = strrchr(spec, ':');
        if (!colon || colon == spec)
                return -EINVAL;
        h = spec;
        hlen = (size_t)(colon - spec);
        if (spec[0] == '[') {
                if (hlen < 3 || spec[hlen - 1] != ']')
                        return -EINVAL;
                h++;
                hlen -= 2;
        }
        if (hlen >= sizeof(host))
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        if (!colon[1] || colon[1] < '0' || colon[1] > '9')
                return -EINVAL;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno || *end || port > 65535)
                return -EINVAL;
        if (spec[0] == '[') {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

                if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
                        return -EINVAL;
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)port);
                if (len)
                        *len = (socklen_t)sizeof(*in6);
        } else {
                struct sockaddr_in *in = (struct sockaddr_in *)ss;

                if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
                        return -EINVAL;
                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t)port);
                if (len)
                        *len = (socklen_t)sizeof(*in);
        }
        return 0;
}

/* The address as a scraper would name it (the port the kernel chose for 0). */
static void describe(HaMetrics *m, int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char host[INET6_ADDRSTRLEN];

        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return;
        if (ss.ss_family == AF_UNIX)
                snprintf(m->addr, sizeof(m->addr), "unix:%s",
                         ((struct sockaddr_un *)&ss)->sun_path);
        else if (ss.ss_family == AF_INET6 &&
                 inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host)))
                snprintf(m->addr, sizeof(m->addr), "[%s]:%u", host,
                         ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        else if (ss.ss_family == AF_INET &&
                 inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host)))
                snprintf(m->addr, sizeof(m->addr), "%s:%u", host,
                         ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

static int listen_inet(const struct sockaddr_storage *ss, socklen_t len)
{
        int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;

        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 64) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

/* ===== connections ===== */

static void update_listener(HaMetrics *m)
{
        bool full = m->nconns >= 2 * m->max_conns;

        /* Past twice the limit, the backlog holds the rest: up to the
         * limit are served, the next as many answered 503. */
        if (full == m->paused)
                return;
        m->paused = full;
        if (full)
                evconnlistener_disable(m->listener);
        else
                evconnlistener_enable(m->listener);
}

static void conn_drop(MConn *mc)
{
        HaMetrics *m = mc->m;

        LIST_REMOVE(mc, link);
        m->nconns--;
        event_free(mc->adopt);
        free(mc);
        update_listener(m);
}

static void conn_closed(struct evhttp_connection *evcon, void *ctx)
{
        MConn *mc = ctx;
        (void)evcon;

        /* Idle, malformed, too large or cut short: evhttp closed it
         * before the handler saw a request (400 for what it could parse). */
        if (!mc->answered)
                HA_INC(&mc->m->st, malformed);
        conn_drop(mc);
}

/* Right after the accept, once evhttp has set up the connection: the
 * bufferevent's callback argument is it (there is no other way to it). */
static void conn_adopt(evutil_socket_t fd, short what, void *ctx)
{
        MConn *mc = ctx;
        void *evcon = NULL;
        (void)fd, (void)what;

        bufferevent_getcb(mc->bev, NULL, NULL, NULL, &evcon);
        if (!evcon) {
                conn_drop(mc);
                return;
        }
        mc->evcon = evcon;
        evhttp_connection_set_closecb(mc->evcon, conn_closed, mc);
}

static struct bufferevent *new_bev(struct event_base *base, void *userdata)
{
        HaMetrics *m = userdata;
        MConn *mc = calloc(1, sizeof(*mc));

        if (mc)
                mc->adopt = event_new(base, -1, 0, conn_adopt, mc);
        if (mc && mc->adopt)
                mc->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!mc || !mc->bev) {
                /* evhttp makes one itself: served, not counted. */
                if (mc && mc->adopt)
                        event_free(mc->adopt);
                free(mc);
                return NULL;
        }
        mc->m = m;
        mc->over = m->nconns >= m->max_conns;
        LIST_INSERT_HEAD(&m->conns, mc, link);
        m->nconns++;
        HA_INC(&m->st, accepted);
        event_active(mc->adopt, EV_TIMEOUT, 1);
        update_listener(m);
        return mc->bev;
}

static MConn *conn_of(HaMetrics *m, struct evhttp_request *req)
{
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        MConn *mc;

        LIST_FOREACH(mc, &m->conns, link)
                if (mc->evcon == evcon)
                        return mc;
        return NULL;
}

/* ===== requests ===== */

static void reply_text(struct evhttp_request *req, int code, const char *reason,
                       const char *text, bool close_conn)
{
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        struct evbuffer *b = evbuffer_new();

        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
        if (close_conn)
                evhttp_add_header(h, "Connection", "close");
        if (code == 405)
                evhttp_add_header(h, "Allow", "GET, HEAD");
        if (b)
                evbuffer_add_printf(b, "%s\n", text);
        evhttp_send_reply(req, code, reason, b);
        if (b)
                evbuffer_free(b);
}

static void handle(struct evhttp_request *req, void *userdata)
{
        HaMetrics *m = userdata;
        MConn *mc = conn_of(m, req);
        enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
        struct evbuffer *body;
        HaStats *s;
        char *text;
        size_t len;

        if (mc)
                mc->answered = true;
        if (mc && mc->over) {
                HA_INC(&m->st, rejected);
                reply_text(req, 503, "Service Unavailable",
                           "too many connections to the metrics listener", true);
                return;
        }
        if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
                HA_INC(&m->st, bad_method);
                reply_text(req, 405, "Method Not Allowed", "only GET and HEAD are served here",
                           false);
                return;
        }
        if (!path || strcmp(path, "/metrics") != 0) {
                HA_INC(&m->st, not_found);
                reply_text(req, 404, "Not Found", "the metrics are at /metrics", false);
                return;
        }
        HA_INC(&m->st, scrapes);
        s = ha_stats_metrics();
        if (s)
                m->render(m->userdata, s);
        text = s ? ha_stats_text(s, &len) : NULL;
        ha_stats_free(s);
        body = text ? evbuffer_new() : NULL;
        if (!body || evbuffer_add(body, text, len) < 0) {
                free(text);
                if (body)
                        evbuffer_free(body);
                HA_INC(&m->st, no_memory);
                reply_text(req, 500, "Internal Server Error", "out of memory", true);
                return;
        }
        free(text);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", body);
        evbuffer_free(body);
}

/* ===== set-up ===== */

static int take_fd(HaMetrics *m, const HaConfig *cfg)
{
        struct sockaddr_storage ss;
        socklen_t len;
        int fd = ha_listen_fd_take("metrics", false);

        if (fd >= 0) {
                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
                    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                        log_error("systemd passed a socket for 'metrics' (fd %d) that is not "
                                  "a listening stream socket", fd);
                        close(fd);
                        return -EINVAL;
                }
                log_info("Metrics: using the listening socket passed by systemd (fd %d)", fd);
                return fd;
        }
        if (!cfg->metrics_listen[0])
                return -ENOENT;
        if (ha_metrics_parse_listen(cfg->metrics_listen, &ss, &len) < 0)
                return log_error_errno(-EINVAL, "metrics_listen \"%s\" is not an address",
                                       cfg->metrics_listen);
        if (ss.ss_family == AF_UNIX) {
                fd = ha_socket_listen(((struct sockaddr_un *)&ss)->sun_path, &m->own);
                if (fd == -EADDRINUSE)
                        log_error("Metrics: another daemon is listening on %s",
                                  cfg->metrics_listen);
                else if (fd == -EEXIST)
                        log_error("Metrics: %s exists and is not a socket, refusing to "
                                  "replace it", cfg->metrics_listen);
                else if (fd < 0)
                        log_error_errno(fd, "Metrics: failed to listen on %s: %m",
                                        cfg->metrics_listen);
                return fd;
        }
        fd = listen_inet(&ss, len);
        if (fd < 0)
                log_error_errno(fd, "Metrics: failed to listen on %s: %m", cfg->metrics_listen);
        return fd;
}

int ha_metrics_new(struct event_base *base, const HaConfig *cfg, ha_metrics_render_fn render,
                   void *userdata, HaMetrics **ret)
{
        HaMetrics *m = calloc(1, sizeof(*m));
        int fd;

        *ret = NULL;
        if (!m)
                return -ENOMEM;
        m->base = base;
        m->render = render;
        m->userdata = userdata;
        m->max_conns = cfg->metrics_max_connections;
        m->own.lock_fd = -1;
        LIST_INIT(&m->conns);
        fd = take_fd(m, cfg);
        if (fd == -ENOENT) {
                free(m);
                return 0;
        }
        if (fd < 0) {
                ha_metrics_free(m);
                return fd;
        }
        describe(m, fd);
        m->http = evhttp_new(base);
        m->listener = m->http ? evconnlistener_new(base, NULL, NULL,
                                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                                   0, fd) : NULL;
        if (!m->listener || !evhttp_bind_listener(m->http, m->listener)) {
                if (m->listener)
                        evconnlistener_free(m->listener);
                else
                        close(fd);
                m->listener = NULL;
                ha_metrics_free(m);
                return log_error_errno(-ENOMEM, "Metrics: failed to set up the listener: %m");
        }
        /* Every method reaches handle(), which answers 405 and counts it. */
        evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                   EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
        evhttp_set_max_headers_size(m->http, MAX_HEADERS_SIZE);
        evhttp_set_max_body_size(m->http, MAX_BODY_SIZE);
        evhttp_set_timeout(m->http, IDLE_TIMEOUT_S);
        evhttp_set_bevcb(m->http, new_bev, m);
        evhttp_set_gencb(m->http, handle, m);
        log_info("Metrics: serving GET /metrics on %s (at most %u connections)", m->addr,
                 m->max_conns);
        *ret = m;
        return 0;
}

HaMetrics *ha_metrics_free(HaMetrics *m)
{
        MConn *mc;

        if (!m)
                return NULL;
        if (m->http)
                evhttp_free(m->http);   /* its connections (closecb) and listener */
        /* Accepted, not adopted yet: evhttp freed them untold. */
        while ((mc = LIST_FIRST(&m->conns))) {
                LIST_REMOVE(mc, link);
                event_free(mc->adopt);
                free(mc);
        }
        ha_socket_release(&m->own);
        free(m);
        return NULL;
}

void ha_metrics_stats(void *userdata, HaStats *s)
{
        HaMetrics *m = userdata;
        const MetricsCounters *blk = &m->st;

        ha_stats_section(s, "metrics");
        ha_stat_str(s, "listen", m->addr);
        HA_GAUGE_EMIT("current", "metrics_connections", "", "Open metrics connections",
                      m->nconns)
        HA_GAUGE_EMIT("max", "metrics_connections_max", "", "metrics_max_connections",
                      m->max_conns)
        METRICS_COUNTERS(HA_COUNTER_EMIT)
        ha_stats_leave(s);
}
