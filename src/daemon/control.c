/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <systemd/sd-daemon.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "control.h"
#include "hyperamp-config.h"
#include "hyperamp/cleanup.h"
#include "listenfds.h"
#include "log.h"
#include "ownpath.h"
#include "proto.h"
#include "services.h"
#include "sockpath.h"
#include "stats.h"

#define NO_ID HA_NO_ID
#define OUTPUT_HIGH (4u << 20)  /* stop reading a client that does not read replies */
#define READ_CHUNK (64u << 10)  /* one read takes up to this much */
#define OBUF_MAX (64u << 10)    /* replies gathered in a pass; more go to the bufferevent */
/* Admins get in beyond max_connections while they hold fewer than this,
 * so that no one holding every connection can lock out reload. */
#define ADMIN_RESERVE 4u

typedef struct Conn Conn;

/* Where a connection is in its life.  It only moves down this list, by
 * conn_to(); being paused for its backlog is flow control, not a state. */
enum conn_state {
        CONN_OPEN,              /* reading frames, answering them */
        CONN_EOF,               /* the client half-closed: answer, then close */
        CONN_CLOSING,           /* close once the output is written; shutting
                                 * down, frames are still read (E_SHUTDOWN) */
        CONN_SWEPT,             /* closing, shutting down: its socket was read a
                                 * last time */
        CONN_BROKEN,            /* bad header: the stream cannot re-sync; close
                                 * once the output is written, read no more */
        CONN_DOOMED,            /* conn_close while in use: done at conn_leave */
        CONN_CLOSED,            /* the socket is gone; waits for its requests */
};

struct Conn {
        HaControl *ctl;
        struct bufferevent *bev;        /* its buffers, writes and write timeout */
        struct event *rev;              /* reads, and the idle timeout (conn_rev_cb) */
        LIST_ENTRY(Conn) link;
        unsigned pending;       /* requests in the engine */
        enum conn_state state;
        bool have_hdr;
        bool paused;            /* reading stopped: output backlog */
        struct evbuffer_cb_entry *out_cb;       /* counts its output in ctl->out_bytes */
        bool in_use;            /* a callback has it on the stack (conn_enter) */
        bool admin;             /* an admin when it connected: the reserve, no uid cap */
        bool flush_queued;      /* on ctl->flushq: replies to write this loop pass */
        LIST_ENTRY(Conn) flush_link;
        void *lease;            /* a zone lease held by this connection */
        uint32_t jlen, dlen;
        /* Frames read, not yet handled (ibuf[ihead..itail)), and the
         * replies of this pass not yet written (obuf[0..olen)): flat
         * buffers the connection keeps, so a request costs no malloc (an
         * evbuffer frees its chain each time it empties).  obuf holds
         * bytes only while the bufferevent's output is empty: they go
         * out first. */
        uint8_t *ibuf, *obuf;
        uint32_t icap, ihead, itail;
        uint32_t ocap, olen;
        /* Reply bytes on their way: the payloads of its requests in
         * flight (a failure's reply carries none, so this may overcount
         * until pending is 0 again).  Counted against its share of the
         * output budget before they land. */
        uint64_t inflight_bytes;
        pid_t pid;
        uid_t uid;
        gid_t gid;
};

/* Control's counters (stats.h): field, JSON key, metric, unit, help. */
#define CONTROL_REQUEST_COUNTERS(X)                                                     \
        X(rejected_requests, "rejected", "control_requests_rejected", "",               \
          "Requests refused before the queue (invalid, busy, limits, shutting down)")   \
        X(orphaned_replies, "orphaned", "control_replies_orphaned", "",                 \
          "Replies whose client had gone")
#define CONTROL_CONN_COUNTERS(X)                                                        \
        X(accepted, "total", "control_connections_accepted", "",                        \
          "Control connections accepted")                                               \
        X(rejected_conns, "rejected", "control_connections_rejected", "",               \
          "Control connections refused at a connection limit")                          \
        X(rejected_per_uid, "rejected_per_uid", "control_connections_rejected_per_uid", "", \
          "Control connections refused over max_connections_per_uid")                   \
        X(budget_pauses, "budget_pauses", "control_budget_pauses", "",                  \
          "Times a client was not read for its backlog of replies (output_budget)")     \
        X(protocol_errors, "protocol_errors", "control_protocol_errors", "",            \
          "Malformed frames or requests on the control socket")                         \
        X(timeouts, "timeouts", "control_timeouts", "",                                 \
          "Control connections closed idle or stalled mid-frame")                       \
        X(denied, "denied", "control_denied", "",                                       \
          "Admin calls refused to a client that is not an admin")
/* Gauges: JSON key, metric, unit, help, value (ctl in scope). */
#define CONTROL_CONN_GAUGES(X)                                                          \
        X("current", "control_connections", "", "Open control connections", ctl->nconns) \
        X("max", "control_connections_max", "", "max_connections",                      \
          cfg_of(ctl)->max_connections)                                                     \
        X("max_per_uid", "control_connections_max_per_uid", "",                         \
          "Effective max_connections_per_uid", per_uid_cap(ctl))                        \
        X("output_bytes", "control_output", "bytes", "Reply bytes waiting for clients",  \
          ctl->out_bytes)                                                               \
        X("output_bytes_max", "control_output_max", "bytes",                            \
          "Most reply bytes ever waiting for clients", ctl->out_bytes_max)              \
        X("output_budget", "control_output_budget", "bytes", "output_budget",           \
          cfg_of(ctl)->output_budget)                                                       \
        X("output_paused", "control_connections_paused", "",                            \
          "Clients not read now for their backlog of replies", ctl->npaused)

typedef struct ControlCounters {
        CONTROL_REQUEST_COUNTERS(HA_COUNTER_FIELD)
        CONTROL_CONN_COUNTERS(HA_COUNTER_FIELD)
} ControlCounters;

typedef struct StatsHook {
        void (*fn)(void *userdata, HaStats *s);
        void *userdata;
} StatsHook;

struct HaControl {
        struct event_base *base;
        HaEngine *engine;
        HaSockq *sockq;
        const HaConfigSlot *cfg;        /* the daemon's: read, never copied */
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct evconnlistener *listener;
        struct event *retry_ev;
        LIST_HEAD(, Conn) conns;
        LIST_HEAD(, Conn) orphans;      /* closed, waiting for their requests */
        LIST_HEAD(, Conn) flushq;       /* with replies added this pass */
        struct event *flush_ev;         /* writes them, once per pass */
        uint64_t reads;                 /* that brought bytes: ha_control_reads() */
        unsigned nconns;
        unsigned nadmins;       /* of them, admins */
        unsigned npaused;       /* of them, not read for their backlog of replies */
        uint64_t out_bytes, out_bytes_max;      /* replies buffered, all connections */
        uint64_t started_ns;
        bool quiesced;
        bool activated;         /* systemd owns the socket and its path */
        HaSocketOwner own;      /* the path, when we bound it */
        ha_reload_fn reload;
        ha_shutdown_fn shutdown;
        void *hooks_userdata;
        ha_attach_fn attach;
        ha_attached_fn attached;
        ha_detach_fn detach;
        void *zone_userdata;
        void (*closed_cb)(void *);
        void *closed_userdata;
        /* One per kind of warning, so a flood of one cannot hide another. */
        HaRatelimit rl_denied, rl_limit, rl_accept;
        HaRatelimit rl_req;     /* per-request errors: a bad peer cannot flood the log */
        HaRatelimit rl_budget;
        ControlCounters st;
        StatsHook stats_hooks[4];       /* other owners' parts of stats */
        unsigned nstats_hooks;
};

static const HaConfig *cfg_of(const HaControl *ctl)
{
        return ha_config_get(ctl->cfg);
}

/* ===== connections ===== */

/* The one transition: forward only, so a lesser event that comes late
 * (the client's EOF on a closing connection) changes nothing. */
static void conn_to(Conn *c, enum conn_state s)
{
        if (s > c->state)
                c->state = s;
}

static void conn_free(Conn *c)
{
        free(c->ibuf);
        free(c->obuf);
        free(c);
}

static size_t in_len(const Conn *c)
{
        return c->itail - c->ihead;
}

static int in_room(Conn *c, size_t want);

static void in_take(Conn *c, size_t n)
{
        c->ihead += (uint32_t)n;
        if (c->ihead != c->itail)
                return;
        c->ihead = c->itail = 0;
        /* A large frame's room goes with it, not at the next read: a
         * client that goes quiet (a lease, a long request) would keep it.
         * A failed shrink keeps the larger buffer. */
        if (c->icap > READ_CHUNK)
                (void)in_room(c, READ_CHUNK / 2);
}

/* Room after the bytes held for want more, moving them to the front;
 * the buffer grows past READ_CHUNK only for a frame larger than that,
 * and shrinks back once it is empty.  0 or -ENOMEM. */
static int in_room(Conn *c, size_t want)
{
        size_t len = in_len(c), cap = len + want > READ_CHUNK ? len + want : READ_CHUNK;
        uint8_t *p;

        if (c->icap - c->itail >= want && (len > 0 || c->icap == READ_CHUNK))
                return 0;
        if (c->ihead > 0) {
                memmove(c->ibuf, c->ibuf + c->ihead, len);
                c->ihead = 0;
                c->itail = (uint32_t)len;
        }
        if (c->icap == cap || (len > 0 && c->icap >= cap))
                return 0;
        p = realloc(c->ibuf, cap);
        if (!p)
                return -ENOMEM;
        c->ibuf = p;
        c->icap = (uint32_t)cap;
        return 0;
}

/* Reply bytes not yet written, gathered and in the bufferevent. */
static size_t out_len(const Conn *c)
{
        return c->olen + evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void maybe_all_closed(HaControl *ctl)
{
        if (ctl->closed_cb && ctl->nconns == 0) {
                void (*cb)(void *) = ctl->closed_cb;
                ctl->closed_cb = NULL;
                cb(ctl->closed_userdata);
        }
}

/* Drop the socket now; the struct lives on until its requests come back. */
static void conn_close(Conn *c)
{
        HaControl *ctl = c->ctl;

        if (!c->bev)
                return;
        if (c->in_use) {
                /* Code below us still reads c->bev's buffers: no free yet. */
                conn_to(c, CONN_DOOMED);
                bufferevent_disable(c->bev, EV_READ | EV_WRITE);
                event_del(c->rev);
                return;
        }
        if (c->lease && ctl->detach)
                ctl->detach(ctl->zone_userdata, c->lease);
        c->lease = NULL;
        if (c->flush_queued) {
                LIST_REMOVE(c, flush_link);
                c->flush_queued = false;
        }
        /* Its unsent replies leave the budget with it. */
        evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
        ctl->out_bytes -= out_len(c);
        event_free(c->rev);
        c->rev = NULL;
        bufferevent_free(c->bev);
        c->bev = NULL;
        free(c->ibuf);
        free(c->obuf);
        c->ibuf = c->obuf = NULL;
        c->icap = c->ihead = c->itail = c->ocap = c->olen = 0;
        conn_to(c, CONN_CLOSED);
        LIST_REMOVE(c, link);
        ctl->nconns--;
        ctl->nadmins -= c->admin;
        ctl->npaused -= c->paused;
        if (c->pending > 0)
                LIST_INSERT_HEAD(&ctl->orphans, c, link);
        else
                conn_free(c);
        if (ctl->listener && ctl->quiesced == false && ctl->retry_ev &&
            evtimer_pending(ctl->retry_ev, NULL)) {
                /* A descriptor came free: accept again right away. */
                evtimer_del(ctl->retry_ev);
                evconnlistener_enable(ctl->listener);
        }
        maybe_all_closed(ctl);
}

/* c stays allocated, and its bufferevent too, until conn_leave.  Never
 * nested: ha_control_quiesce skips a connection in use. */
static void conn_enter(Conn *c)
{
        c->in_use = true;
}

/* false when c was closed meanwhile (and may be freed): do not touch it. */
static bool conn_leave(Conn *c)
{
        c->in_use = false;
        if (c->state != CONN_DOOMED)
                return true;
        conn_close(c);
        return false;
}

/*
 * Reading is c->rev's, not the bufferevent's: libevent 2.1's evbuffer_read
 * asks FIONREAD before each read and takes at most 4 KiB.  A persistent
 * event whose timeout restarts at each read is the idle timeout.
 */
static void conn_read_on(Conn *c)
{
        unsigned ms = cfg_of(c->ctl)->client_timeout_ms;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

        event_add(c->rev, &tv);
}

static void conn_read_off(Conn *c)
{
        event_del(c->rev);
}

/* Whether c reads frames.  A closing connection still does while the
 * daemon shuts down: each frame it reads is answered E_SHUTDOWN. */
static bool conn_may_read(const Conn *c)
{
        return c->state < CONN_BROKEN && (c->state < CONN_CLOSING || c->ctl->quiesced);
}

static bool conn_read(Conn *c);

/* Take what the client has sent so far, and read its socket no more.
 * Bounded by what is there now, however fast the client goes on sending. */
static size_t conn_sweep(Conn *c)
{
        int fd = bufferevent_getfd(c->bev), waiting = 0;
        size_t got = 0;
        ssize_t n;

        conn_to(c, CONN_SWEPT);
        conn_read_off(c);
        if (ioctl(fd, FIONREAD, &waiting) < 0 || waiting <= 0 || in_room(c, (size_t)waiting) < 0)
                return 0;
        while (got < (size_t)waiting && (n = read(fd, c->ibuf + c->itail, (size_t)waiting - got)) > 0) {
                c->itail += (uint32_t)n;
                got += (size_t)n;
        }
        return got;
}

/*
 * A closing connection goes once its replies are written.  Shutting down,
 * it was read on meanwhile (every frame answered E_SHUTDOWN); then, once,
 * what the client sent up to now is answered too, and only then it goes:
 * a client that never stops sending cannot hold the stop up.  false when
 * c was closed (and may be freed).
 */
static bool conn_close_if_done(Conn *c)
{
        if (!c->bev || c->state < CONN_CLOSING || c->state == CONN_DOOMED || out_len(c) > 0)
                return true;
        if (conn_may_read(c) && c->state != CONN_SWEPT && !c->in_use && conn_sweep(c) > 0)
                return conn_read(c);    /* comes back here, swept */
        conn_close(c);
        return false;
}

static bool conn_close_after_flush(Conn *c)
{
        if (!c->bev)
                return false;
        conn_to(c, CONN_CLOSING);
        if (!conn_may_read(c))
                conn_read_off(c);
        return conn_close_if_done(c);
}

/* A half-closed client is done once every request it sent is answered. */
static bool conn_check_eof(Conn *c)
{
        if (c->bev && c->state >= CONN_EOF && !c->paused && c->pending == 0)
                return conn_close_after_flush(c);
        return true;
}

/*
 * Replies are written once per loop pass, not one by one: send_frame
 * queues c for flush_cb, which writes each connection's replies with one
 * writev.  The bufferevent's EV_WRITE stays disabled while that keeps up,
 * so a reply costs no epoll_ctl; only a socket that is full hands the rest
 * to the bufferevent (EV_WRITE and its write timeout) until it drains.
 */

static void out_count(HaControl *ctl, size_t added, size_t deleted)
{
        ctl->out_bytes += added;
        ctl->out_bytes -= deleted;
        if (ctl->out_bytes > ctl->out_bytes_max)
                ctl->out_bytes_max = ctl->out_bytes;
}

/* Whether obuf takes len more bytes, grown up to OBUF_MAX. */
static bool obuf_fits(Conn *c, size_t len)
{
        size_t cap = c->ocap ? c->ocap : 4096;
        uint8_t *p;

        if (c->olen + len <= c->ocap)
                return true;
        if (c->olen + len > OBUF_MAX)
                return false;
        while (cap < c->olen + len)
                cap *= 2;
        p = realloc(c->obuf, cap < OBUF_MAX ? cap : OBUF_MAX);
        if (!p)
                return false;
        c->obuf = p;
        c->ocap = cap < OBUF_MAX ? (uint32_t)cap : OBUF_MAX;
        return true;
}

/* off bytes of obuf were written: move the rest into the bufferevent's
 * output (which counts them in out_bytes itself).  0 or -ENOMEM. */
static int obuf_spill(Conn *c, size_t off)
{
        size_t left = c->olen - off;

        if (c->olen == 0)
                return 0;
        out_count(c->ctl, 0, c->olen);
        c->olen = 0;
        if (left && evbuffer_add(bufferevent_get_output(c->bev), c->obuf + off, left) < 0)
                return -ENOMEM;
        return 0;
}

static void queue_flush(Conn *c)
{
        HaControl *ctl = c->ctl;

        if (c->flush_queued)
                return;
        c->flush_queued = true;
        LIST_INSERT_HEAD(&ctl->flushq, c, flush_link);
        if (LIST_NEXT(c, flush_link) == NULL)
                event_active(ctl->flush_ev, EV_WRITE, 0);
}

static void send_frame(Conn *c, const char *json, size_t jlen, const void *data, size_t dlen)
{
        struct evbuffer *out = bufferevent_get_output(c->bev);
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        struct iovec iov[3];
        int n = ha_frame_iov(iov, hdr, json, jlen, data, dlen);
        size_t len = HA_PROTO_HDR_SIZE + jlen + dlen;

        if (evbuffer_get_length(out) == 0 && obuf_fits(c, len)) {
                for (int i = 0; i < n; i++) {
                        memcpy(c->obuf + c->olen, iov[i].iov_base, iov[i].iov_len);
                        c->olen += (uint32_t)iov[i].iov_len;
                }
                out_count(c->ctl, len, 0);
                queue_flush(c);
                return;
        }
        /* Large, or behind replies a full socket holds back: the
         * bufferevent's, after what was gathered. */
        if (obuf_spill(c, 0) < 0)
                goto oom;
        for (int i = 0; i < n; i++)
                if (evbuffer_add(out, iov[i].iov_base, iov[i].iov_len) < 0)
                        goto oom;
        queue_flush(c);
        return;
oom:
        log_warning("Out of memory queueing a reply, closing the connection");
        conn_close(c);
}

/* s: a reply printed by proto.c, consumed. */
static void send_reply(Conn *c, char *s, size_t len)
{
        if (!s) {
                log_warning("Out of memory building a reply, closing the connection");
                conn_close(c);
                return;
        }
        send_frame(c, s, len, NULL, 0);
        free(s);
}

static void send_error(Conn *c, uint64_t id, enum ha_error code, const char *message)
{
        size_t len = 0;
        char *s = ha_reply_error_print(id, code, message, &len);

        send_reply(c, s, len);
}

static void send_result(Conn *c, uint64_t id, cJSON *result)
{
        size_t len = 0;
        char *s = ha_reply_print(id, result, &len);

        cJSON_Delete(result);
        send_reply(c, s, len);
}

/* One failed request, with its context in the journal; rate-limited. */
static void log_request_error(Conn *c, uint64_t id, int service, const char *what)
{
        uint64_t suppressed;

        if (!ha_ratelimit_ok(&c->ctl->rl_req, &suppressed))
                return;
        ha_log_ctx(LOG_NOTICE, HA_LOG_CTX(.service_1 = service + 1,
                                          .request_1 = id == NO_ID ? 0 : (int64_t)id + 1,
                                          .client_pid = (int)c->pid,
                                          .client_uid = (uint32_t)c->uid),
                   "Request %lld (service %d) from pid %d uid %u: %s%s",
                   id == NO_ID ? -1LL : (long long)id, service, (int)c->pid, (unsigned)c->uid,
                   what, suppressed ? " (similar messages were suppressed)" : "");
}

/* max_connections_per_uid; 0 is a quarter of max_connections. */
static unsigned per_uid_cap(const HaControl *ctl)
{
        unsigned n = cfg_of(ctl)->max_connections_per_uid;

        return n ? n : cfg_of(ctl)->max_connections / 4 ? cfg_of(ctl)->max_connections / 4 : 1;
}

/* ===== methods ===== */

static int parse_service(const cJSON *v, uint16_t *ret, char *err, size_t errlen)
{
        int r;

        if (cJSON_IsNumber(v)) {
                double d = v->valuedouble;
                if (d >= 0 && d <= UINT16_MAX && d == (double)(uint16_t)d) {
                        *ret = (uint16_t)d;
                        return 0;
                }
                snprintf(err, errlen, "\"service\" must be an id from 0 to 65535 or a name");
                return -EINVAL;
        }
        if (!cJSON_IsString(v)) {
                snprintf(err, errlen, "\"service\" (a name or an id) is required");
                return -EINVAL;
        }
        r = ha_service_parse(v->valuestring, ret);
        if (r < 0)
                snprintf(err, errlen, "unknown service \"%.64s\" (see the services method)",
                         v->valuestring);
        return r;
}

/* A submit whose service is known: the fast path's and the general one's. */
static void submit(Conn *c, uint64_t id, uint16_t sid, const uint8_t *data, uint32_t dlen)
{
        HaControl *ctl = c->ctl;
        int r;

        if (dlen == 0) {
                HA_INC(&ctl->st, rejected_requests);
                send_error(c, id, HA_E_INVALID, "the payload is empty");
                return;
        }
        if (c->pending >= cfg_of(ctl)->max_inflight_per_conn) {
                HA_INC(&ctl->st, rejected_requests);
                send_error(c, id, HA_E_BUSY, "too many requests in flight on this connection");
                return;
        }
        r = ha_sockq_submit_data(ctl->sockq, sid, data, dlen, c, id);
        if (r < 0) {
                HA_INC(&ctl->st, rejected_requests);
                log_request_error(c, id, sid, r == -EAGAIN ? "refused, queue or pool full" :
                                  "refused, larger than the pool can hold");
                send_error(c, id, r == -EAGAIN ? HA_E_BUSY : HA_E_TOO_BIG,
                           r == -EAGAIN ? "queue or buffer pool full, try again" :
                           "payload larger than the pool can hold");
                return;
        }
        c->pending++;
        c->inflight_bytes += dlen;
}

static void m_submit(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        char err[128];
        uint16_t sid;

        if (parse_service(cJSON_GetObjectItemCaseSensitive(req->params, "service"), &sid,
                          err, sizeof(err)) < 0) {
                HA_INC(&c->ctl->st, rejected_requests);
                send_error(c, id, HA_E_INVALID, err);
                return;
        }
        submit(c, id, sid, data, dlen);
}

static void m_ping(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        cJSON *r = cJSON_CreateObject();
        (void)req, (void)data, (void)dlen;

        cJSON_AddBoolToObject(r, "pong", true);
        cJSON_AddStringToObject(r, "version", HA_VERSION);
        cJSON_AddNumberToObject(r, "protocol", HA_PROTO_VERSION);
        cJSON_AddNumberToObject(r, "pid", getpid());
        cJSON_AddNumberToObject(r, "max_payload", (double)cfg_of(c->ctl)->max_payload);
        cJSON_AddNumberToObject(r, "queue_capacity", cfg_of(c->ctl)->queue_entries);
        cJSON_AddNumberToObject(r, "max_inflight_per_conn", cfg_of(c->ctl)->max_inflight_per_conn);
        send_result(c, id, r);
}

static void m_services(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        cJSON *r = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(r, "services");
        const HaService *t;
        size_t n;
        (void)req, (void)data, (void)dlen;

        t = ha_services(&n);
        for (size_t i = 0; i < n; i++) {
                cJSON *s = cJSON_CreateObject();
                cJSON_AddNumberToObject(s, "id", t[i].id);
                cJSON_AddStringToObject(s, "name", t[i].name);
                cJSON_AddStringToObject(s, "summary", t[i].summary);
                ha_engine_route_json(c->ctl->engine, t[i].id, s);
                cJSON_AddItemToArray(a, s);
        }
        /* Ids routed to a remote zone that no local service has (seL4's
         * proxy ids 10-13): named "-". */
        for (unsigned sid = 0; sid <= 0xffff; sid++) {
                unsigned x = ha_engine_route_of(c->ctl->engine, (uint16_t)sid);
                cJSON *s;

                if (x == HA_EXECUTOR_LOCAL || x == HA_EXECUTOR_NONE ||
                    ha_service_by_id((uint16_t)sid))
                        continue;
                s = cJSON_CreateObject();
                cJSON_AddNumberToObject(s, "id", sid);
                cJSON_AddStringToObject(s, "name", "-");
                cJSON_AddStringToObject(s, "summary", "only in the remote zone");
                ha_engine_route_json(c->ctl->engine, (uint16_t)sid, s);
                cJSON_AddItemToArray(a, s);
        }
        send_result(c, id, r);
}

void ha_control_add_stats(HaControl *ctl, void (*fn)(void *userdata, HaStats *s),
                          void *userdata)
{
        if (ctl->nstats_hooks < ELEMENTSOF(ctl->stats_hooks))
                ctl->stats_hooks[ctl->nstats_hooks++] = (StatsHook){ fn, userdata };
}

void ha_control_stats(HaControl *ctl, HaStats *s)
{
        static const HaMetric pid = { "pid", NULL, HA_MT_GAUGE, "", "" };
        static const HaMetric uptime = { "uptime_s", "uptime", HA_MT_GAUGE, "seconds",
                                         "Seconds since hyperampd started" };
        static const HaMetric build = { NULL, "build_info", HA_MT_GAUGE, "",
                                        "hyperampd's version (the value is always 1)" };
        static const char *const build_labels[] = { "version", HA_VERSION };
        const ControlCounters *blk = &ctl->st;

        ha_stat_str(s, "version", HA_VERSION);
        ha_stat(s, &pid, getpid());
        ha_stat(s, &uptime, (double)((ha_now_ns() - ctl->started_ns) / 1000000) / 1000.0);
        ha_stat_info(s, &build, build_labels, 1);
        ha_sockq_stats(ctl->sockq, s);
        ha_engine_stats(ctl->engine, s);
        ha_stats_section(s, "requests");
        CONTROL_REQUEST_COUNTERS(HA_COUNTER_EMIT)
        ha_stats_leave(s);
        ha_stats_section(s, "connections");
        CONTROL_CONN_GAUGES(HA_GAUGE_EMIT)
        CONTROL_CONN_COUNTERS(HA_COUNTER_EMIT)
        ha_stats_leave(s);
        for (unsigned i = 0; i < ctl->nstats_hooks; i++)
                ctl->stats_hooks[i].fn(ctl->stats_hooks[i].userdata, s);
}

static void m_stats(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        const cJSON *format = cJSON_GetObjectItemCaseSensitive(req->params, "format");
        bool text = cJSON_IsString(format) && strcmp(format->valuestring, "openmetrics") == 0;
        cJSON *r = cJSON_CreateObject();
        HaStats *s;
        (void)data, (void)dlen;

        if (format && !text &&
            !(cJSON_IsString(format) && strcmp(format->valuestring, "json") == 0)) {
                cJSON_Delete(r);
                send_error(c, id, HA_E_INVALID, "\"format\" must be \"json\" or \"openmetrics\"");
                return;
        }
        s = r ? (text ? ha_stats_metrics() : ha_stats_json(r)) : NULL;
        if (!s) {
                cJSON_Delete(r);
                send_error(c, id, HA_E_INTERNAL, "out of memory");
                return;
        }
        ha_control_stats(c->ctl, s);
        if (text) {
                char *t = ha_stats_text(s, NULL);

                if (!t || !cJSON_AddStringToObject(r, "format", "openmetrics") ||
                    !cJSON_AddStringToObject(r, "text", t)) {
                        free(t);
                        ha_stats_free(s);
                        cJSON_Delete(r);
                        send_error(c, id, HA_E_INTERNAL, "out of memory");
                        return;
                }
                free(t);
        }
        ha_stats_free(s);
        send_result(c, id, r);
}

static void m_reload(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        HaControl *ctl = c->ctl;
        cJSON *result = NULL;
        char err[512] = "";
        (void)req, (void)data, (void)dlen;

        if (!ctl->reload) {
                send_error(c, id, HA_E_INTERNAL, "reload is not available");
                return;
        }
        if (ctl->reload(ctl->hooks_userdata, &result, err, sizeof(err)) < 0) {
                send_error(c, id, HA_E_CONFIG, err);
                return;
        }
        send_result(c, id, result);
}

static void shutdown_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaControl *ctl = userdata;
        (void)fd, (void)what;

        ctl->shutdown(ctl->hooks_userdata);
}

static void m_shutdown(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        HaControl *ctl = c->ctl;
        cJSON *r = cJSON_CreateObject();
        (void)req, (void)data, (void)dlen;

        cJSON_AddBoolToObject(r, "stopping", true);
        send_result(c, id, r);
        /* Frames behind this one get E_SHUTDOWN now, on this connection too.
         * The shutdown itself closes connections, so it runs from the loop
         * once this reader is done with c. */
        ha_control_quiesce(ctl);
        if (ctl->shutdown && event_base_once(ctl->base, -1, EV_TIMEOUT, shutdown_cb, ctl, NULL) < 0)
                ctl->shutdown(ctl->hooks_userdata);
}

/* The attach reply goes straight out, with its fds, in one sendmsg: 0, or
 * -errno (-EIO: only part of it went out).  Frees grant's result. */
static int send_with_fds(Conn *c, uint64_t id, HaAttachGrant *grant)
{
        size_t len = 0;
        char *json = ha_reply_print(id, grant->result, &len);
        long n = json ? ha_frame_send(bufferevent_getfd(c->bev), json, len, grant->fds, grant->nfds,
                                      MSG_NOSIGNAL | MSG_DONTWAIT) : -ENOMEM;

        cJSON_Delete(grant->result);
        free(json);
        if (n < 0)
                return (int)n;
        return (size_t)n == HA_PROTO_HDR_SIZE + len ? 0 : -EIO;
}

static void m_attach(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen)
{
        HaControl *ctl = c->ctl;
        const cJSON *resume = cJSON_GetObjectItemCaseSensitive(req->params, "resume");
        HaAttachGrant grant;
        void *lease;
        int r;
        (void)data, (void)dlen;

        if (resume && !cJSON_IsBool(resume)) {
                send_error(c, id, HA_E_INVALID, "\"resume\" must be true or false");
                return;
        }
        if (!ctl->attach) {
                send_error(c, id, HA_E_INTERNAL, "zone channels are not available");
                return;
        }
        if (c->lease) {
                send_error(c, id, HA_E_INVALID, "this connection already holds a lease");
                return;
        }
        /* The reply goes straight out with its fds: nothing may be queued
         * before it. */
        if (out_len(c) > 0) {
                send_error(c, id, HA_E_BUSY, "attach must wait for earlier replies");
                return;
        }
        r = ctl->attach(ctl->zone_userdata, c->pid, c->uid, cJSON_IsTrue(resume), &grant, &lease);
        if (r == 0) {
                r = send_with_fds(c, id, &grant);
                ctl->attached(ctl->zone_userdata, lease, r);
                if (r == 0)
                        c->lease = lease;
        }
        if (r == -EBUSY)
                send_error(c, id, HA_E_LIMIT, "every zone slot is taken (zone_clients)");
        else if (r == -EOPNOTSUPP)
                send_error(c, id, HA_E_DISABLED, "zone channels are turned off (zone_clients is 0)");
        else if (r == -EAGAIN)
                send_error(c, id, HA_E_BUSY, "the connection's send buffer is full: read the "
                           "earlier replies, then attach");
        else if (r == -EIO)
                conn_close(c);  /* part of the reply went out: the stream is out of step */
        else if (r < 0)
                send_error(c, id, HA_E_INTERNAL, "could not set up the zone channel");
}

/* Whether gid is among the peer's supplementary groups, as the kernel saw
 * them at connect time.  A peer may have up to NGROUPS_MAX (65536): on
 * ERANGE the kernel says how many bytes it needs, and the list is fixed. */
static bool peer_in_group(int fd, gid_t gid)
{
        gid_t stack[64], *groups = stack;
        socklen_t len = sizeof(stack);
        bool found = false;

        for (int tries = 0; getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0; tries++) {
                gid_t *bigger;

                if (errno != ERANGE || tries > 0 || len <= sizeof(stack))
                        goto out;
                bigger = malloc(len);
                if (!bigger) {
                        log_warning("Out of memory reading a client's %zu groups, treating it "
                                    "as outside admin_group", len / sizeof(gid_t));
                        goto out;
                }
                groups = bigger;
        }
        for (size_t i = 0; i < len / sizeof(gid_t) && !found; i++)
                found = groups[i] == gid;
out:
        if (groups != stack)
                free(groups);
        return found;
}

/* Admin calls: root, the daemon's own user, or a member of admin_group. */
static bool cred_is_admin(const HaControl *ctl, int fd, uid_t uid, gid_t gid)
{
        if (uid == 0 || uid == geteuid())
                return true;
        if (cfg_of(ctl)->admin_gid == (gid_t)-1)
                return false;
        return gid == cfg_of(ctl)->admin_gid || peer_in_group(fd, cfg_of(ctl)->admin_gid);
}

static bool peer_is_admin(const Conn *c)
{
        return cred_is_admin(c->ctl, bufferevent_getfd(c->bev), c->uid, c->gid);
}

enum { M_ADMIN = 1 << 0 };

static const struct method {
        const char *name;
        void (*fn)(Conn *c, const HaRequest *req, uint64_t id, const uint8_t *data, uint32_t dlen);
        unsigned flags;
} methods[] = {
        { HA_METHOD_SUBMIT, m_submit, 0 },
        { HA_METHOD_STATS, m_stats, 0 },
        { HA_METHOD_SERVICES, m_services, 0 },
        { HA_METHOD_PING, m_ping, 0 },
        { HA_METHOD_ATTACH, m_attach, 0 },
        { HA_METHOD_RELOAD, m_reload, M_ADMIN },
        { HA_METHOD_SHUTDOWN, m_shutdown, M_ADMIN },
};

/* ===== frame decoding ===== */

/*
 * A submit in its plain shape, decoded without a JSON tree: true when it
 * was taken (answered or queued).  What the fast parser does not take, a
 * name it does not know, or any frame while shutting down goes the general
 * way, so both make the same of every frame.
 */
static bool handle_submit_fast(Conn *c, const char *json, const uint8_t *data)
{
        HaSubmitFast f;

        if (c->ctl->quiesced || !ha_submit_parse_fast(json, c->jlen, &f) ||
            (f.name[0] && ha_service_parse(f.name, &f.service) < 0))
                return false;
        submit(c, f.id, f.service, data, c->dlen);
        return true;
}

/* The frame at the front of c's input; its caller consumes it.  Nothing
 * reads into the input meanwhile (c is in use). */
static void handle_frame(Conn *c)
{
        HaControl *ctl = c->ctl;
        uint32_t jlen = c->jlen, dlen = c->dlen;
        const char *json = (const char *)c->ibuf + c->ihead;
        const uint8_t *data = c->ibuf + c->ihead + jlen;
        const struct method *m = NULL;
        enum ha_error err;
        const char *msg;
        HaRequest req;
        uint64_t id;

        if (handle_submit_fast(c, json, data))
                return;
        if (ha_request_parse(json, jlen, &req, &err, &msg) < 0) {
                HA_INC(&ctl->st, protocol_errors);
                send_error(c, req.has_id ? req.id : NO_ID, err, msg);
                goto out;
        }
        id = req.has_id ? req.id : NO_ID;
        if (ctl->quiesced) {
                HA_INC(&ctl->st, rejected_requests);
                send_error(c, id, HA_E_SHUTDOWN, "the daemon is shutting down");
                goto out;
        }
        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (strcmp(methods[i].name, req.method) == 0)
                        m = &methods[i];
        if (!m) {
                HA_INC(&ctl->st, protocol_errors);
                send_error(c, id, HA_E_METHOD,
                           "unknown method (try ping, services, stats, submit, attach, reload, shutdown)");
                goto out;
        }
        if ((m->flags & M_ADMIN) && !peer_is_admin(c)) {
                uint64_t suppressed;

                HA_INC(&ctl->st, denied);
                if (ha_ratelimit_ok(&ctl->rl_denied, &suppressed))
                        ha_log_ctx(LOG_WARNING, HA_LOG_CTX(.message_id = HA_MID_DENIED,
                                                           .client_pid = (int)c->pid,
                                                           .client_uid = (uint32_t)c->uid),
                                   "Denied '%s' to pid %d uid %u: admin calls need root, "
                                   "uid %u or group '%s'", m->name, (int)c->pid,
                                   (unsigned)c->uid, (unsigned)geteuid(),
                                   cfg_of(ctl)->admin_group[0] ? cfg_of(ctl)->admin_group :
                                   "(none set)");
                send_error(c, id, HA_E_DENIED, "admin calls need root, the daemon's user "
                           "or its admin_group");
                goto out;
        }
        m->fn(c, &req, id, data, dlen);
out:
        ha_request_done(&req);
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *userdata)
{
        (void)buf;

        out_count(((Conn *)userdata)->ctl, info->n_added, info->n_deleted);
}

/*
 * Whether to stop reading c until its replies are written: it holds more
 * than OUTPUT_HIGH, or all connections together hold more than
 * output_budget and c has at least its share (the budget over the
 * connections): those that hold the most stop first, those that read
 * their replies go on.  c's share counts the replies of its requests in
 * flight too, so a connection whose output went into its socket reads
 * at most a share and a frame more, not the pool's worth.
 */
static bool conn_backlogged(Conn *c)
{
        HaControl *ctl = c->ctl;
        /* With the replies on their way: a connection whose output went
         * into its socket may not read a pool's worth more at once. */
        uint64_t out = out_len(c) + c->inflight_bytes;
        uint64_t suppressed;

        if (out > OUTPUT_HIGH)
                return true;
        if (ctl->out_bytes <= cfg_of(ctl)->output_budget || out == 0 ||
            out < cfg_of(ctl)->output_budget / ctl->nconns)
                return false;
        HA_INC(&ctl->st, budget_pauses);
        if (ha_ratelimit_ok(&ctl->rl_budget, &suppressed))
                ha_log_ctx(LOG_WARNING, HA_LOG_CTX(.client_pid = (int)c->pid,
                                                   .client_uid = (uint32_t)c->uid),
                           "Replies waiting for clients passed output_budget (%llu bytes): not "
                           "reading pid %d uid %u, which holds %llu bytes of them, until it "
                           "reads them%s", (unsigned long long)cfg_of(ctl)->output_budget,
                           (int)c->pid, (unsigned)c->uid, (unsigned long long)out,
                           suppressed ? " (similar messages were suppressed)" : "");
        return true;
}

static void conn_pause(Conn *c)
{
        c->paused = true;
        c->ctl->npaused++;
        conn_read_off(c);
}

/* false when c was closed (and may be freed). */
static bool conn_read(Conn *c)
{
        HaControl *ctl = c->ctl;

        conn_enter(c);
        while (conn_may_read(c) && !c->paused) {
                if (conn_backlogged(c)) {
                        /* Not one more frame: write_cb reads on once it is drained. */
                        conn_pause(c);
                        break;
                }
                if (!c->have_hdr) {
                        enum ha_error err;
                        int r;

                        if (in_len(c) < HA_PROTO_HDR_SIZE)
                                break;
                        r = ha_frame_hdr_parse(c->ibuf + c->ihead, (uint32_t)cfg_of(ctl)->max_payload,
                                               &c->jlen, &c->dlen, &err);
                        in_take(c, HA_PROTO_HDR_SIZE);
                        if (r < 0) {
                                char m[128];
                                HA_INC(&ctl->st, protocol_errors);
                                snprintf(m, sizeof(m), "frame of %u+%u bytes refused "
                                         "(JSON at most %u, payload at most %llu)",
                                         c->jlen, c->dlen, HA_PROTO_MAX_JSON,
                                         (unsigned long long)cfg_of(ctl)->max_payload);
                                send_error(c, NO_ID, err, err == HA_E_TOO_BIG ? m : NULL);
                                /* The stream cannot be trusted to re-sync. */
                                conn_to(c, CONN_BROKEN);
                                conn_close_after_flush(c);
                                break;
                        }
                        c->have_hdr = true;
                }
                if (in_len(c) < (size_t)c->jlen + c->dlen)
                        break;
                c->have_hdr = false;
                handle_frame(c);
                /* Taken or not, the frame is consumed. */
                in_take(c, (size_t)c->jlen + c->dlen);
        }
        /* Nor read its socket while its replies pile up. */
        if (c->state != CONN_DOOMED && !c->paused && conn_backlogged(c))
                conn_pause(c);
        /* Shutting down, c may have read the last of its frames. */
        return conn_leave(c) && conn_check_eof(c) && conn_close_if_done(c);
}

static void conn_idle(Conn *c);

/* Room to make before a read: half a chunk at least; for the rest of a
 * large frame, at most as much again as is held, so a header alone does
 * not buy its whole payload's memory. */
static size_t read_want(const Conn *c)
{
        size_t len = in_len(c), need = c->have_hdr ? (size_t)c->jlen + c->dlen : 0;
        size_t want = len < READ_CHUNK / 2 ? READ_CHUNK / 2 : len < READ_CHUNK ? READ_CHUNK - len : 1;

        if (need > len + want) {
                size_t more = need - len < len ? need - len : len;

                if (more > want)
                        want = more;
        }
        return want;
}

static void conn_rev_cb(evutil_socket_t fd, short what, void *userdata)
{
        Conn *c = userdata;
        ssize_t n;

        if (what & EV_TIMEOUT) {
                conn_idle(c);
                return;
        }
        if (in_room(c, read_want(c)) < 0) {
                log_warning("Out of memory reading a request, closing the connection");
                conn_close(c);
                return;
        }
        n = read(fd, c->ibuf + c->itail, c->icap - c->itail);
        if (n > 0) {
                c->itail += (uint32_t)n;
                c->ctl->reads++;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n < 0) {
                if (c->pending)
                        log_debug("Client pid %d went away with %u requests in flight",
                                  (int)c->pid, c->pending);
                conn_close(c);
                return;
        }
        if (n == 0) {
                /* A half-close ("send everything, then read until EOF"):
                 * what was sent is still answered. */
                conn_read_off(c);
                conn_to(c, CONN_EOF);
                conn_check_eof(c);
                return;
        }
        (void)conn_read(c);
}

/* The output has been fully written. */
static void conn_written(Conn *c)
{
        if (c->paused && conn_may_read(c)) {
                c->paused = false;
                c->ctl->npaused--;
                if (c->state != CONN_EOF && c->state != CONN_SWEPT)
                        conn_read_on(c);
                if (!conn_read(c))      /* frames that waited for room */
                        return;
        }
        (void)conn_close_if_done(c);
}

static void conn_write_cb(struct bufferevent *bev, void *userdata)
{
        /* The socket drained: flush_cb writes again. */
        bufferevent_disable(bev, EV_WRITE);
        conn_written(userdata);
}

/* Write what c holds; false when c was closed (and may be freed). */
static bool conn_flush(Conn *c)
{
        struct bufferevent *bev = c->bev;
        struct evbuffer *out = bufferevent_get_output(bev);
        int fd = bufferevent_getfd(bev), n = 0;

        if (c->flush_queued) {
                LIST_REMOVE(c, flush_link);
                c->flush_queued = false;
        }
        if (bufferevent_get_enabled(bev) & EV_WRITE)
                return true;    /* the bufferevent writes it as the socket drains */
        if (c->state == CONN_DOOMED)
                return true;    /* conn_leave closes it */
        if (c->olen > 0) {
                /* The pass's replies, with one send; what the socket does
                 * not take waits in the bufferevent. */
                ssize_t w = send(fd, c->obuf, c->olen, MSG_DONTWAIT | MSG_NOSIGNAL);

                if (w < 0 && errno != EAGAIN && errno != EINTR)
                        n = -1;
                else if (obuf_spill(c, w > 0 ? (size_t)w : 0) < 0) {
                        log_warning("Out of memory queueing a reply, closing the connection");
                        conn_close(c);
                        return false;
                }
        }
        if (n == 0 && evbuffer_get_length(out) > 0) {
                /* The bufferevent keeps its output's front frozen outside its own writes. */
                evbuffer_unfreeze(out, 1);
                while (evbuffer_get_length(out) > 0 && (n = evbuffer_write(out, fd)) > 0)
                        ;
                evbuffer_freeze(out, 1);
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
                log_debug("Client pid %d: writing replies failed: %m, closing", (int)c->pid);
                conn_close(c);
                return false;
        }
        if (evbuffer_get_length(out) > 0) {
                bufferevent_enable(bev, EV_WRITE);      /* full: wait for room, with a timeout */
                return true;
        }
        conn_written(c);
        return true;
}

static void flush_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaControl *ctl = userdata;
        Conn *c;
        (void)fd, (void)what;

        while ((c = LIST_FIRST(&ctl->flushq)))
                (void)conn_flush(c);
}

/* Writing failed, or a client read none of its replies for client_timeout_ms. */
static void conn_event_cb(struct bufferevent *bev, short what, void *userdata)
{
        Conn *c = userdata;
        HaControl *ctl = c->ctl;
        (void)bev;

        if (what & BEV_EVENT_TIMEOUT) {
                HA_INC(&ctl->st, timeouts);
                log_debug("Client pid %d read none of its replies for %u ms, closing",
                          (int)c->pid, cfg_of(ctl)->client_timeout_ms);
        } else if (c->pending) {
                log_debug("Client pid %d went away with %u requests in flight",
                          (int)c->pid, c->pending);
        }
        conn_close(c);
}

/* Nothing read for client_timeout_ms. */
static void conn_idle(Conn *c)
{
        HaControl *ctl = c->ctl;

        if ((c->pending > 0 || c->lease) && !c->have_hdr && in_len(c) == 0) {
                /* Quiet because it waits for replies, or because it holds
                 * a zone lease and talks through shared memory: closing
                 * would take its lease away.  Fine: the timeout restarts. */
                return;
        }
        HA_INC(&ctl->st, timeouts);
        log_debug("Client pid %d %s for %u ms, closing", (int)c->pid,
                  c->have_hdr || in_len(c) ? "stalled mid-frame" : "idle",
                  cfg_of(ctl)->client_timeout_ms);
        conn_close(c);
}

/* A request came back: false when its client has gone (the reply is
 * dropped, and the last one frees the connection). */
static bool reply_due(Conn *c, uint64_t req_id, uint16_t service, const char *failure)
{
        c->pending--;
        if (c->pending == 0)
                c->inflight_bytes = 0;
        if (failure)
                log_request_error(c, req_id, service, failure);
        if (!c->bev) {
                HA_INC(&c->ctl->st, orphaned_replies);
                if (c->pending == 0) {
                        LIST_REMOVE(c, link);
                        conn_free(c);
                }
                return false;
        }
        return true;
}

void ha_control_refused(void *owner, uint64_t req_id, uint16_t service, int err)
{
        Conn *c = owner;
        (void)err;      /* -EBUSY, the only one */

        if (!reply_due(c, req_id, service, "refused, executor queue full"))
                return;
        conn_enter(c);
        send_error(c, req_id, HA_E_BUSY, "executor queue full, try again");
        if (conn_leave(c))
                conn_check_eof(c);
}

void ha_control_complete(void *owner, uint64_t req_id, uint16_t service, enum ha_result r,
                         const uint8_t *data, size_t len, uint64_t latency_ns)
{
        Conn *c = owner;
        char json[HA_SUBMIT_JSON_MAX];
        int n;

        if (!reply_due(c, req_id, service, r != HA_RESULT_SUCCESS ? ha_result_name(r) : NULL))
                return;
        c->inflight_bytes -= len < c->inflight_bytes ? len : c->inflight_bytes;
        /* The hot path: written directly, no JSON tree, snprintf or allocation. */
        n = ha_reply_submit_write(json, sizeof(json), req_id, service, ha_result_name(r), (int)r,
                                  latency_ns);
        conn_enter(c);
        send_frame(c, json, (size_t)n, data, r == HA_RESULT_SUCCESS ? len : 0);
        if (conn_leave(c))
                conn_check_eof(c);
}

/* ===== listening ===== */

/* uid_cap: refused by max_connections_per_uid, not max_connections. */
static void reject_conn(HaControl *ctl, int fd, uid_t uid, bool uid_cap)
{
        char m[64];
        unsigned limit = uid_cap ? per_uid_cap(ctl) : cfg_of(ctl)->max_connections;
        uint64_t suppressed;
        size_t len = 0;
        char *json;

        snprintf(m, sizeof(m), "connection limit %s(%u) reached", uid_cap ? "per uid " : "", limit);
        json = ha_reply_error_print(NO_ID, HA_E_LIMIT, m, &len);
        if (json)
                (void)ha_frame_send(fd, json, len, NULL, 0, MSG_DONTWAIT | MSG_NOSIGNAL);
        free(json);
        close(fd);
        HA_INC(&ctl->st, rejected_conns);
        HA_ADD(&ctl->st, rejected_per_uid, uid_cap);
        if (!ha_ratelimit_ok(&ctl->rl_limit, &suppressed))
                return;
        if (uid_cap)
                log_warning("uid %u holds max_connections_per_uid (%u) connections, refusing "
                            "another, ignoring", (unsigned)uid, limit);
        else
                log_warning("Connection limit (%u) reached, refusing a client, ignoring", limit);
}

/* Whether max_connections_per_uid refuses a non-admin uid one more. */
static bool uid_at_cap(const HaControl *ctl, uid_t uid)
{
        unsigned cap = per_uid_cap(ctl), n = 0;
        const Conn *c;

        if (ctl->nconns < cap)
                return false;
        LIST_FOREACH(c, &ctl->conns, link)
                if (c->uid == uid && ++n >= cap)
                        return true;
        return false;
}

/* Bounds how long a stalled half frame, an idle client or one that reads
 * none of its replies holds a connection slot and its buffers.  libevent
 * runs the write timeout only while output waits, from the last progress. */
static void conn_set_timeouts(Conn *c)
{
        unsigned ms = cfg_of(c->ctl)->client_timeout_ms;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

        bufferevent_set_timeouts(c->bev, NULL, &tv);
        if (event_pending(c->rev, EV_READ, NULL))
                conn_read_on(c);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *userdata)
{
        HaControl *ctl = userdata;
        struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
        socklen_t clen = sizeof(cred);
        bool admin;
        Conn *c;
        (void)l, (void)sa, (void)salen;

        (void)getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen);
        admin = cred_is_admin(ctl, fd, cred.uid, cred.gid);
        if (ctl->nconns >= cfg_of(ctl)->max_connections &&
            !(admin && ctl->nadmins < ADMIN_RESERVE)) {
                reject_conn(ctl, fd, cred.uid, false);
                return;
        }
        if (!admin && uid_at_cap(ctl, cred.uid)) {
                reject_conn(ctl, fd, cred.uid, true);
                return;
        }
        c = calloc(1, sizeof(*c));
        if (c)
                c->bev = bufferevent_socket_new(ctl->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!c || !c->bev) {
                log_warning("Out of memory accepting a client, ignoring");
                free(c);
                close(fd);
                return;
        }
        c->ctl = ctl;
        c->pid = cred.pid;
        c->uid = cred.uid;
        c->gid = cred.gid;
        c->admin = admin;
        c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev), out_cb, c);
        if (!c->out_cb) {
                log_warning("Out of memory accepting a client, ignoring");
                bufferevent_free(c->bev);
                free(c);
                return;
        }
        c->rev = event_new(ctl->base, fd, EV_READ | EV_PERSIST, conn_rev_cb, c);
        if (!c->rev) {
                log_warning("Out of memory accepting a client, ignoring");
                evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
                bufferevent_free(c->bev);
                free(c);
                return;
        }
        bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
        conn_set_timeouts(c);
        /* Larger writes for large replies. */
        bufferevent_set_max_single_write(c->bev, 256 * 1024);
        /* The bufferevent neither reads (c->rev does) nor writes until a
         * full socket holds replies back (conn_flush); a new one has
         * EV_WRITE enabled. */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        conn_read_on(c);
        LIST_INSERT_HEAD(&ctl->conns, c, link);
        ctl->nconns++;
        ctl->nadmins += admin;
        HA_INC(&ctl->st, accepted);
}

static void retry_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaControl *ctl = userdata;
        (void)fd, (void)what;

        if (ctl->listener && !ctl->quiesced)
                evconnlistener_enable(ctl->listener);
}

static void accept_error_cb(struct evconnlistener *l, void *userdata)
{
        HaControl *ctl = userdata;
        int err = EVUTIL_SOCKET_ERROR();
        struct timeval tv = { 0, 100000 };
        uint64_t suppressed;

        if (ha_ratelimit_ok(&ctl->rl_accept, &suppressed))
                log_warning_errno(-err, "Failed to accept a client: %m, pausing accepts");
        /* Out of descriptors: retry when one is freed, or after a bounded back-off. */
        evconnlistener_disable(l);
        evtimer_add(ctl->retry_ev, &tv);
}

/*
 * The listening socket systemd passed: the one named "control", or a lone
 * unnamed one.  -ENOENT when we were not socket-activated.
 */
static int inherited_socket(void)
{
        int fd = ha_listen_fd_take("control", true);

        if (fd < 0)
                return fd;
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                log_warning("systemd passed a socket for 'control' (fd %d) that is not a "
                            "listening Unix stream socket, ignoring it", fd);
                close(fd);
                return -ENOENT;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

int ha_control_new(struct event_base *base, HaEngine *engine, HaSockq *sockq,
                   const HaConfigSlot *cfg, const char *path, HaControl **ret)
{
        HaControl *ctl;
        int fd;

        ctl = calloc(1, sizeof(*ctl));
        if (!ctl)
                return -ENOMEM;
        ctl->base = base;
        ctl->engine = engine;
        ctl->sockq = sockq;
        ctl->cfg = cfg;
        ctl->started_ns = ha_now_ns();
        ctl->rl_denied = ctl->rl_limit = ctl->rl_accept = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        ctl->rl_req = (HaRatelimit)HA_RATELIMIT_INIT(10000, 10);
        ctl->own.lock_fd = -1;
        ctl->rl_budget = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        LIST_INIT(&ctl->conns);
        LIST_INIT(&ctl->orphans);
        LIST_INIT(&ctl->flushq);
        snprintf(ctl->path, sizeof(ctl->path), "%s", path);

        fd = inherited_socket();
        if (fd >= 0) {
                ctl->activated = true;
                ctl->path[0] = '\0';   /* systemd's: never unlinked by us */
                log_info("Using the listening socket passed by systemd (fd %d); %s is not "
                         "bound", fd, path);
        } else
                fd = ha_socket_listen(path, &ctl->own);
        if (fd < 0) {
                if (fd == -EADDRINUSE)
                        log_error("Another hyperampd is already listening on %s", path);
                else if (fd == -EEXIST)
                        log_error("%s exists and is not a socket, refusing to replace it", path);
                else if (fd == -EPERM)
                        log_error("%s: the directory must be ours and closed to others", path);
                else
                        log_error_errno(fd, "Failed to listen on %s: %m", path);
                ctl->path[0] = '\0';    /* not ours to unlink */
                ha_control_free(ctl);
                return fd;
        }
        ctl->retry_ev = evtimer_new(base, retry_cb, ctl);
        ctl->flush_ev = event_new(base, -1, 0, flush_cb, ctl);
        ctl->listener = evconnlistener_new(base, accept_cb, ctl,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
        if (!ctl->retry_ev || !ctl->flush_ev || !ctl->listener) {
                if (!ctl->listener)
                        close(fd);
                ha_control_free(ctl);
                return log_error_errno(-ENOMEM, "Failed to set up the listener: %m");
        }
        evconnlistener_set_error_cb(ctl->listener, accept_error_cb);
        if (!ctl->activated)
                log_info("Listening on %s", path);
        *ret = ctl;
        return 0;
}

void ha_control_quiesce(HaControl *ctl)
{
        if (ctl->quiesced)
                return;
        ctl->quiesced = true;
        if (ctl->listener) {
                evconnlistener_free(ctl->listener);
                ctl->listener = NULL;
        }
        if (ctl->path[0]) {
                ha_socket_release(&ctl->own);
                ctl->path[0] = '\0';
        }
        /* Reading goes on: from now on every frame read is answered
         * E_SHUTDOWN, until ha_control_close_all closes the connection. */
}

void ha_control_close_all(HaControl *ctl, void (*done)(void *), void *userdata)
{
        Conn *c, *next;

        ctl->closed_cb = done;
        ctl->closed_userdata = userdata;
        for (c = LIST_FIRST(&ctl->conns); c; c = next) {
                next = LIST_NEXT(c, link);
                conn_close_after_flush(c);
        }
        maybe_all_closed(ctl);
}

HaControl *ha_control_free(HaControl *ctl)
{
        Conn *c;

        if (!ctl)
                return NULL;
        ctl->closed_cb = NULL;
        ha_control_quiesce(ctl);
        while ((c = LIST_FIRST(&ctl->conns)))
                conn_close(c);
        /* The workers are joined and the loop is over: these replies will
         * never come. */
        while ((c = LIST_FIRST(&ctl->orphans))) {
                LIST_REMOVE(c, link);
                conn_free(c);
        }
        if (ctl->retry_ev)
                event_free(ctl->retry_ev);
        if (ctl->flush_ev)
                event_free(ctl->flush_ev);
        free(ctl);
        return NULL;
}

void ha_control_set_hooks(HaControl *ctl, ha_reload_fn reload, ha_shutdown_fn shutdown,
                          void *userdata)
{
        ctl->reload = reload;
        ctl->shutdown = shutdown;
        ctl->hooks_userdata = userdata;
}

void ha_control_set_zone_hooks(HaControl *ctl, ha_attach_fn attach, ha_attached_fn attached,
                               ha_detach_fn detach, void *userdata)
{
        ctl->attach = attach;
        ctl->attached = attached;
        ctl->detach = detach;
        ctl->zone_userdata = userdata;
}

uint64_t ha_control_reads(const HaControl *ctl)
{
        return ctl->reads;
}

void ha_control_config_changed(HaControl *ctl)
{
        Conn *c;

        LIST_FOREACH(c, &ctl->conns, link)
                conn_set_timeouts(c);
}
