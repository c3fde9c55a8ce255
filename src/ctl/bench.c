/* SPDX-License-Identifier: MIT */
/*
 * hyperampctl bench: keep C requests in flight over K connections from T
 * threads (each its own connections on its own epoll), or from T threads
 * through shared memory, verify every
 * response against the reference service, and report throughput and
 * latency percentiles.  -n runs a number of requests, --duration a time;
 * --mix cycles through every service and a ladder of sizes.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl.h"
#include "hist.h"
#include "hyperamp/cleanup.h"
#include "hyperamp/hyperamp.h"
#include "log.h"
#include "services.h"
#include "sockpath.h"

typedef struct BConn {
        HaClient cl;
        uint8_t *out;
        size_t out_len, out_off, out_cap;
        uint8_t *in;
        size_t in_len, in_cap;
        unsigned long cap;      /* requests it keeps in flight */
        unsigned long inflight;
        bool want_out;          /* EPOLLOUT armed: the socket was full */
        bool refill;            /* on the list of connections to top up */
} BConn;

/* One kind of request: request id uses var[id % nvar]. */
typedef struct Variant {
        uint16_t service;
        size_t size;
        size_t off;             /* into payload and expect */
} Variant;

typedef struct Bench {
        uint16_t service;
        unsigned long conc, total, size, nconns;
        bool overload;          /* --overload: past the queue on purpose */
        bool shm;               /* --transport shm: through libhyperamp */
        bool mix;               /* --mix: every service, sizes 16 B .. size */
        unsigned long threads;
        uint64_t spin_ns;       /* --spin-us: look again this long before sleeping */
        unsigned long duration_s;       /* --duration: run this long instead of -n */
        uint64_t deadline_ns;   /* with --duration: no request starts after it */
        Variant *var;
        unsigned long nvar;
        uint8_t *payload;       /* every variant's bytes */
        uint8_t *expect;        /* each payload run through the reference service */
        /* Socket requests outstanding, at id % ring: id + 1, or 0 when free. */
        unsigned long ring;
        unsigned long *owner;
        uint64_t *t_sent;       /* ns, by the same slot */
        uint32_t *conn_of;      /* the connection it was sent on, by the same slot */
        BConn *conns;           /* the socket loop's */
        unsigned long *refill;  /* connections below their cap, to top up this pass */
        unsigned long nrefill;
        uint64_t now_ns;        /* the socket loop's clock: read once a pass */
        /* Latencies: each one with -n (exact percentiles); with --duration a
         * histogram, so memory stays fixed however long it runs. */
        uint64_t *lat;
        unsigned long nlat;
        HaHist hist;
        unsigned long sent, done, failures, busy;
        char first_error[256];
        bool at_limit;          /* a connection refused with E_LIMIT */
        bool *stop;             /* --threads: set when one thread failed, so all stop */
        bool quiet;             /* no progress bar: another thread draws it */
} Bench;

static const Variant *variant_of(const Bench *b, unsigned long id)
{
        return &b->var[id % b->nvar];
}

static bool socket_more(const Bench *b)
{
        return b->duration_s ? b->now_ns < b->deadline_ns : b->sent < b->total;
}

/* Threads may call this at once (shm): each takes its own lat slot. */
static void record_latency(Bench *b, HaHist *h, uint64_t ns)
{
        if (b->lat)
                b->lat[__atomic_fetch_add(&b->nlat, 1, __ATOMIC_RELAXED)] = ns;
        else
                ha_hist_add(h, ns);
}

static int buf_reserve(uint8_t **buf, size_t *cap, size_t need)
{
        size_t ncap = *cap ? *cap : 4096;
        uint8_t *nb;

        if (need <= *cap)
                return 0;
        while (ncap < need)
                ncap *= 2;
        nb = realloc(*buf, ncap);
        if (!nb)
                return -ENOMEM;
        *buf = nb;
        *cap = ncap;
        return 0;
}

static void fail(Bench *b, unsigned long id, const char *what, const char *detail)
{
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

        /* shm threads report too */
        pthread_mutex_lock(&lock);
        b->failures++;
        if (!b->first_error[0])
                snprintf(b->first_error, sizeof(b->first_error), "request %lu: %s%s", id, what,
                         detail);
        pthread_mutex_unlock(&lock);
}

/* id is answered (or given up): its slot is free, and its connection is
 * topped up on this pass. */
static void retire(Bench *b, unsigned long id)
{
        unsigned long slot = id % b->ring, i = b->conn_of[slot];
        BConn *bc = &b->conns[i];

        b->owner[slot] = 0;
        b->done++;
        bc->inflight--;
        if (!bc->refill) {
                bc->refill = true;
                b->refill[b->nrefill++] = i;
        }
}

static int queue_request(Bench *b, unsigned long conn, unsigned long id)
{
        BConn *bc = &b->conns[conn];
        const Variant *v = variant_of(b, id);
        unsigned long slot = id % b->ring;
        char json[HA_SUBMIT_JSON_MAX];
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        size_t need;
        /* The shape the daemon's fast path takes, without snprintf. */
        int n = ha_request_submit_write(json, sizeof(json), id, v->service);

        if (b->owner[slot]) {
                /* Its slot came round again: that request is lost, and a
                 * late reply to it will be refused as unsent. */
                fail(b, b->owner[slot] - 1, "no reply", " while a ring of later requests went by");
                retire(b, b->owner[slot] - 1);
        }
        if (bc->out_off > 0 && bc->out_off >= bc->out_len / 2) {
                /* Drop what was already sent, so the buffer stays within
                 * twice what is pending (amortised: at most one copy of
                 * each byte). */
                memmove(bc->out, bc->out + bc->out_off, bc->out_len - bc->out_off);
                bc->out_len -= bc->out_off;
                bc->out_off = 0;
        }
        need = bc->out_len + sizeof(hdr) + (size_t)n + v->size;
        if (buf_reserve(&bc->out, &bc->out_cap, need) < 0)
                return -ENOMEM;
        ha_frame_hdr_write(hdr, (uint32_t)n, (uint32_t)v->size);
        memcpy(bc->out + bc->out_len, hdr, sizeof(hdr));
        memcpy(bc->out + bc->out_len + sizeof(hdr), json, (size_t)n);
        memcpy(bc->out + bc->out_len + sizeof(hdr) + n, b->payload + v->off, v->size);
        bc->out_len = need;
        b->owner[slot] = id + 1;
        b->t_sent[slot] = b->now_ns;
        b->conn_of[slot] = (uint32_t)conn;
        bc->inflight++;
        return 0;
}

/* The reply to id, known to be outstanding, read on connection conn: check
 * it against the reference. */
static void check_reply(Bench *b, unsigned long conn, unsigned long id, uint16_t service,
                        bool success, const char *status, const uint8_t *data, uint32_t dlen)
{
        unsigned long slot = id % b->ring;
        const Variant *v = variant_of(b, id);
        bool elsewhere = b->conn_of[slot] != conn;

        retire(b, id);
        if (elsewhere)
                fail(b, id, "answered on another connection", "");
        else if (service != v->service)
                fail(b, id, "answered by another service", "");
        else if (!success)
                fail(b, id, "status ", status);
        else if (dlen != v->size || memcmp(data, b->expect + v->off, v->size) != 0)
                fail(b, id, "result bytes differ from the reference", "");
        else
                record_latency(b, &b->hist, b->now_ns - b->t_sent[slot]);
}

static bool outstanding(const Bench *b, uint64_t id)
{
        return id < b->sent && b->owner[id % b->ring] == id + 1;
}

/* Check one reply frame; returns -EBADMSG for a stream we cannot follow. */
static int handle_reply(Bench *b, unsigned long conn, const char *json, uint32_t jlen,
                        const uint8_t *data, uint32_t dlen)
{
        HaReply rep;
        const cJSON *st, *svc;
        uint64_t fid;
        uint16_t want;
        unsigned fsvc;
        bool ok;

        /* The daemon's own shape for a submit reply: no JSON tree. */
        if (ha_reply_submit_parse_fast(json, jlen, &fid, &fsvc, &ok) && ok && outstanding(b, fid)) {
                check_reply(b, conn, (unsigned long)fid, (uint16_t)fsvc, true, "SUCCESS", data,
                            dlen);
                return 0;
        }
        if (ha_reply_parse(json, jlen, &rep) < 0) {
                snprintf(b->first_error, sizeof(b->first_error), "a reply that is not hyperampd's");
                return -EBADMSG;
        }
        if (!rep.has_id && rep.error_code) {
                /* A refusal of the connection or the stream, not of one request. */
                snprintf(b->first_error, sizeof(b->first_error), "the daemon refused: %s (%s)",
                         rep.error_message, rep.error_code);
                b->at_limit = strcmp(rep.error_code, "E_LIMIT") == 0;
                ha_reply_done(&rep);
                return -ECONNREFUSED;
        }
        if (!rep.has_id || !outstanding(b, rep.id)) {
                snprintf(b->first_error, sizeof(b->first_error),
                         "reply with a missing, unsent or repeated id");
                ha_reply_done(&rep);
                return -EBADMSG;
        }
        if (rep.error_code) {
                unsigned long id = (unsigned long)rep.id;
                bool elsewhere = b->conn_of[id % b->ring] != conn;

                retire(b, id);
                if (strcmp(rep.error_code, "E_BUSY") == 0)
                        b->busy++;
                /* One failure a request, as on the success path. */
                fail(b, id, elsewhere ? "answered on another connection" : "error ",
                     elsewhere ? "" : rep.error_code);
                ha_reply_done(&rep);
                return 0;
        }
        svc = cJSON_GetObjectItemCaseSensitive(rep.result, "service");
        st = cJSON_GetObjectItemCaseSensitive(rep.result, "status");
        want = variant_of(b, rep.id)->service;
        check_reply(b, conn, (unsigned long)rep.id,
                    cJSON_IsNumber(svc) && svc->valuedouble == want ? want : (uint16_t)(want + 1u),
                    cJSON_IsString(st) && strcmp(st->valuestring, "SUCCESS") == 0,
                    cJSON_IsString(st) ? st->valuestring : "missing", data, dlen);
        ha_reply_done(&rep);
        return 0;
}

static int drain_input(Bench *b, unsigned long conn)
{
        BConn *bc = &b->conns[conn];
        size_t off = 0;

        for (;;) {
                uint32_t jlen, dlen;
                enum ha_error err;

                if (bc->in_len - off < HA_PROTO_HDR_SIZE)
                        break;
                if (ha_frame_hdr_parse(bc->in + off, UINT32_MAX, &jlen, &dlen, &err) < 0)
                        return -EBADMSG;
                if (bc->in_len - off < HA_PROTO_HDR_SIZE + (size_t)jlen + dlen)
                        break;
                int r = handle_reply(b, conn, (const char *)bc->in + off + HA_PROTO_HDR_SIZE, jlen,
                                     bc->in + off + HA_PROTO_HDR_SIZE + jlen, dlen);

                if (r < 0)
                        return r;       /* -EBADMSG, or -ECONNREFUSED: the daemon refused */
                off += HA_PROTO_HDR_SIZE + (size_t)jlen + dlen;
        }
        memmove(bc->in, bc->in + off, bc->in_len - off);
        bc->in_len -= off;
        return 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* The p-quantile in microseconds (p = 1: the maximum); b->lat sorted. */
static double pct_us(const Bench *b, double p)
{
        size_t i;

        if (!b->lat)
                return (double)ha_hist_quantile(&b->hist, p) / 1000.0;
        if (b->nlat == 0)
                return 0;
        i = (size_t)(p * (double)b->nlat);
        if (i >= b->nlat)
                i = b->nlat - 1;
        return (double)b->lat[i] / 1000.0;
}

/* The bar on a terminal, with the rate over the last quarter second or
 * more (the whole run's once it is over). */
static void progress(const Bench *b, uint64_t start, bool final)
{
        static uint64_t last_ns;
        static unsigned long last_done;
        static double rate;
        uint64_t now = ha_now_ns();
        int width = 40, filled;

        if (!last_ns)
                last_ns = start;
        if ((final || last_ns == start) && now > start)
                rate = (double)b->done / ((double)(now - start) / 1e9);
        if (!final && now - last_ns >= 250000000ull) {
                rate = (double)(b->done - last_done) / ((double)(now - last_ns) / 1e9);
                last_ns = now;
                last_done = b->done;
        }
        if (b->duration_s) {
                double secs = (double)(now - start) / 1e9;

                filled = final ? width : (int)(secs / (double)b->duration_s * width);
                filled = filled > width ? width : filled;
                fprintf(stderr, "\r[%.*s%*s] %.0f/%lu s, %lu, %.0f req/s  ", filled,
                        "########################################", width - filled, "",
                        final ? (double)b->duration_s : secs, b->duration_s, b->done, rate);
        } else {
                filled = (int)((double)b->done / (double)b->total * width);
                fprintf(stderr, "\r[%.*s%*s] %lu/%lu, %.0f req/s  ", filled,
                        "########################################", width - filled, "",
                        b->done, b->total, rate);
        }
        if (final)
                fputc('\n', stderr);
}

/* Write what bc holds; arm EPOLLOUT only while the socket is full. */
static void flush_conn(int ep, BConn *bc, unsigned long i)
{
        bool full = false;

        while (bc->out_len > bc->out_off) {
                ssize_t n = send(bc->cl.fd, bc->out + bc->out_off, bc->out_len - bc->out_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        full = true;
                        break;
                }
                if (n < 0) {
                        /* The daemon went: its last words are read as EPOLLIN. */
                        bc->out_off = bc->out_len = 0;
                        break;
                }
                bc->out_off += (size_t)n;
        }
        if (bc->out_off == bc->out_len)
                bc->out_off = bc->out_len = 0;
        if (full != bc->want_out) {
                struct epoll_event ev = { .events = EPOLLIN | (full ? EPOLLOUT : 0), .data.u64 = i };

                bc->want_out = full;
                (void)epoll_ctl(ep, EPOLL_CTL_MOD, bc->cl.fd, &ev);
        }
}

/* Read what bc's socket holds and check every whole reply in it; returns
 * how many bytes came. */
static ssize_t read_conn(Bench *b, unsigned long conn)
{
        BConn *bc = &b->conns[conn];
        ssize_t got = 0;

        for (;;) {
                size_t room;
                ssize_t n;
                int e;

                if (buf_reserve(&bc->in, &bc->in_cap, bc->in_len + 65536) < 0)
                        return -ENOMEM;
                room = bc->in_cap - bc->in_len;
                n = recv(bc->cl.fd, bc->in + bc->in_len, room, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return got;
                if (n <= 0)
                        return -ECONNRESET;
                got += n;
                bc->in_len += (size_t)n;
                e = drain_input(b, conn);
                if (e < 0)
                        return e;   /* -EBADMSG, or -ECONNREFUSED: the daemon refused */
                if ((size_t)n < room)
                        return got; /* short of the room: nothing more waits */
        }
}

/*
 * One thread, every connection on one epoll set.  Connection i keeps its
 * own share of the requests in flight (-c over --connections), as
 * redis-benchmark's -c with -P does.  A pass reads the clock once, reads
 * the replies that came, and tops up each connection they came on with
 * one send, so a batch answered together goes back together.  When a
 * pass finds nothing it looks again without sleeping for up to spin_ns
 * before it blocks: a reply that comes meanwhile costs no wake-up.
 */
static int run(Bench *b, Ctx *ctx, BConn *conns, double *ret_secs)
{
        _cleanup_free_ struct epoll_event *evs = calloc(b->nconns, sizeof(*evs));
        _cleanup_free_ unsigned long *refill = calloc(b->nconns, sizeof(*refill));
        _cleanup_close_ int ep = epoll_create1(EPOLL_CLOEXEC);
        bool tty = !b->quiet && isatty(STDERR_FILENO) == 1;
        unsigned long shown = 0;
        uint64_t start, idle_ns = (uint64_t)ctx->timeout_ms * 1000000u, idle_deadline;

        if (!evs || !refill)
                return -ENOMEM;
        if (ep < 0)
                return -errno;
        b->conns = conns;
        b->refill = refill;
        b->nrefill = 0;
        for (unsigned long i = 0; i < b->nconns; i++) {
                struct epoll_event ev = { .events = EPOLLIN, .data.u64 = i };

                if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].cl.fd, &ev) < 0)
                        return -errno;
                conns[i].cap = b->conc / b->nconns + (i < b->conc % b->nconns);
                conns[i].refill = true;
                /* Popped from the top: the first fill goes in connection
                 * order (ids 0, 1, ... on connection 0 first). */
                refill[b->nrefill++] = b->nconns - 1 - i;
        }
        start = b->now_ns = ha_now_ns();
        /* From the same instant as the elapsed time: a run is never shorter. */
        b->deadline_ns = start + (uint64_t)b->duration_s * 1000000000ull;
        idle_deadline = start + idle_ns;
        for (;;) {
                bool more = socket_more(b), progressed = false;
                int r;

                if (!more && b->done >= b->sent)
                        break;
                if (b->stop && __atomic_load_n(b->stop, __ATOMIC_RELAXED))
                        return -ECANCELED;      /* another thread failed: its error is the run's */
                /* A stack of the connections whose flag is set, each once:
                 * a request given up for lost in queue_request() may put
                 * one back, popped already, so it never holds more than
                 * nconns. */
                while (b->nrefill) {
                        unsigned long i = refill[--b->nrefill];
                        BConn *bc = &conns[i];

                        bc->refill = false;
                        while (more && bc->inflight < bc->cap) {
                                if (queue_request(b, i, b->sent) < 0)
                                        return -ENOMEM;
                                b->sent++;
                                more = b->duration_s || b->sent < b->total;
                        }
                        flush_conn(ep, bc, i);
                }
                /* The pass's clock (b->now_ns) is fresh enough here. */
                if (b->now_ns >= idle_deadline)
                        return -ETIMEDOUT;
                r = epoll_wait(ep, evs, (int)b->nconns, 0);
                if (r == 0 && b->spin_ns) {
                        uint64_t until = ha_now_ns() + b->spin_ns;

                        do
                                r = epoll_wait(ep, evs, (int)b->nconns, 0);
                        while (r == 0 && ha_now_ns() < until);
                }
                if (r == 0) {
                        /* After the spin: --timeout is not overshot by it. */
                        uint64_t now = ha_now_ns(), left_ms;

                        if (now >= idle_deadline)
                                return -ETIMEDOUT;
                        left_ms = (idle_deadline - now + 999999u) / 1000000u;
                        r = epoll_wait(ep, evs, (int)b->nconns,
                                       (int)(left_ms > INT32_MAX ? INT32_MAX : left_ms));
                }
                if (r < 0 && errno != EINTR)
                        return -errno;
                b->now_ns = ha_now_ns();
                for (int k = 0; k < r; k++) {
                        unsigned long i = (unsigned long)evs[k].data.u64;
                        BConn *bc = &conns[i];

                        if (evs[k].events & EPOLLOUT)
                                flush_conn(ep, bc, i);
                        if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                                ssize_t n = read_conn(b, i);

                                if (n < 0)
                                        return (int)n;
                                progressed |= n > 0;
                        }
                }
                if (progressed)
                        idle_deadline = b->now_ns + idle_ns;
                if (tty && !ctx->json) {
                        unsigned long pct = b->duration_s ?
                                (unsigned long)((b->now_ns - start) / 10000000ull / b->duration_s) :
                                b->done * 100 / b->total;
                        if (pct != shown) {
                                shown = pct;
                                progress(b, start, false);
                        }
                }
        }
        *ret_secs = (double)(ha_now_ns() - start) / 1e9;
        b->total = b->sent;
        if (tty && !ctx->json)
                progress(b, start, true);
        return 0;
}

/* Socket requests are tracked by id % ring: every one with -n up to the
 * ring's size, else a window far wider than what is in flight.  0 or
 * -ENOMEM. */
static int alloc_tracking(Bench *b)
{
        b->ring = b->conc * 4 > 65536 ? b->conc * 4 : 65536;
        if (!b->duration_s && b->total < b->ring)
                b->ring = b->total;
        b->owner = calloc(b->ring, sizeof(*b->owner));
        b->t_sent = calloc(b->ring, sizeof(*b->t_sent));
        b->conn_of = calloc(b->ring, sizeof(*b->conn_of));
        if (!b->duration_s)
                b->lat = calloc(b->total, sizeof(uint64_t));
        return !b->owner || !b->t_sent || !b->conn_of || (!b->duration_s && !b->lat) ?
                -ENOMEM : 0;
}

static void free_tracking(Bench *b)
{
        free(b->owner);
        free(b->t_sent);
        free(b->conn_of);
        free(b->lat);
}

/* One socket thread: its share of the connections and requests, a Bench
 * of its own (ring, counters, latencies), the same payloads. */
typedef struct SockThread {
        Bench b;
        Ctx *ctx;
        BConn *conns;
        double secs;
        int r;
        pthread_t thread;
} SockThread;

static void *sock_thread(void *arg)
{
        SockThread *t = arg;

        t->r = run(&t->b, t->ctx, t->conns, &t->secs);
        if (t->r < 0)
                __atomic_store_n(t->b.stop, true, __ATOMIC_RELAXED);
        return NULL;
}

/* The per-thread histograms and counters into b. */
static void merge_hist(HaHist *to, const HaHist *from)
{
        for (unsigned k = 0; k < HA_HIST_BUCKETS; k++)
                to->b[k] += from->b[k];
        to->count += from->count;
        if (from->max > to->max)
                to->max = from->max;
}

/* run() over b->threads threads, each with its own connections; the
 * results merged into b.  A negative errno as run's. */
static int run_socket(Bench *b, Ctx *ctx, BConn *conns, double *ret_secs)
{
        SockThread *ts;
        unsigned long T = b->threads, first_conn = 0, started = 0, from = T;
        bool stop = false;
        uint64_t start;
        int r = 0;

        if (T == 1)
                return run(b, ctx, conns, ret_secs);
        ts = calloc(T, sizeof(*ts));
        if (!ts)
                return -ENOMEM;
        for (unsigned long i = 0; i < T && r == 0; i++) {
                Bench *s = &ts[i].b;

                *s = *b;        /* the payloads and settings, shared read-only */
                s->nconns = b->nconns / T + (i < b->nconns % T);
                /* The caps of its own connections, as if one thread ran
                 * them all: none over the ceiling the preflight checks. */
                s->conc = 0;
                for (unsigned long g = first_conn; g < first_conn + s->nconns; g++)
                        s->conc += b->conc / b->nconns + (g < b->conc % b->nconns);
                s->total = b->total / T + (i < b->total % T);
                s->owner = NULL, s->t_sent = NULL, s->conn_of = NULL, s->lat = NULL;
                s->nlat = s->sent = s->done = s->failures = s->busy = 0;
                s->first_error[0] = '\0';
                memset(&s->hist, 0, sizeof(s->hist));
                s->quiet = i > 0;       /* the first thread's share draws the bar */
                s->stop = &stop;
                ts[i].ctx = ctx;
                ts[i].conns = conns + first_conn;
                first_conn += s->nconns;
                r = alloc_tracking(s);
        }
        start = ha_now_ns();
        for (; r == 0 && started < T; started++) {
                int e = pthread_create(&ts[started].thread, NULL, sock_thread, &ts[started]);

                if (e) {
                        fprintf(stderr, "hyperampctl: cannot start a thread: %s\n", strerror(e));
                        __atomic_store_n(&stop, true, __ATOMIC_RELAXED);
                        r = -e;
                        break;
                }
        }
        b->sent = b->done = 0;
        for (unsigned long i = 0; i < T; i++) {
                Bench *s = &ts[i].b;

                if (i < started) {
                        pthread_join(ts[i].thread, NULL);
                        /* The first real failure, not the stops it caused. */
                        if (ts[i].r < 0 && (r == 0 || (r == -ECANCELED && ts[i].r != -ECANCELED))) {
                                r = ts[i].r;
                                from = i;
                        }
                        b->sent += s->sent;
                        b->done += s->done;
                        b->failures += s->failures;
                        b->busy += s->busy;
                        b->at_limit |= s->at_limit;
                        if (!b->first_error[0] && s->first_error[0])
                                memcpy(b->first_error, s->first_error, sizeof(b->first_error));
                        if (b->lat)
                                memcpy(b->lat + b->nlat, s->lat, s->nlat * sizeof(uint64_t));
                        b->nlat += s->nlat;
                        merge_hist(&b->hist, &s->hist);
                }
                free_tracking(s);
        }
        /* The message goes with the exit status: the failed thread's. */
        if (from < T && ts[from].b.first_error[0])
                memcpy(b->first_error, ts[from].b.first_error, sizeof(b->first_error));
        free(ts);
        *ret_secs = (double)(ha_now_ns() - start) / 1e9;
        b->total = b->sent;
        return r;
}

/* ===== --transport shm: zone channel through libhyperamp ===== */

typedef struct ShmSlot {
        hyperamp_req_t *r;
        unsigned long id;
        uint64_t t_sent;
        bool busy;              /* submitted, not collected yet */
} ShmSlot;

typedef struct ShmThread {
        Bench *b;
        hyperamp_t *h;
        int timeout_ms;         /* --timeout: per request, and for a stalled pool */
        /* request ids first + k * stride for k < count (unbounded with --duration) */
        unsigned long first, stride, count;
        unsigned long window, done;
        HaHist hist;            /* its own: no sharing between threads */
        pthread_t thread;
        int error;
} ShmThread;

static bool shm_more(const ShmThread *t, unsigned long next)
{
        return t->b->duration_s ? ha_now_ns() < t->b->deadline_ns : next < t->count;
}

static void *shm_thread(void *arg)
{
        ShmThread *t = arg;
        Bench *b = t->b;
        ShmSlot *s = calloc(t->window, sizeof(*s));
        unsigned long next = 0, inflight = 0;
        uint64_t stalled_since = 0;     /* no room in the pool, nothing in flight */
        int e;

        if (!s) {
                t->error = -ENOMEM;
                return NULL;
        }
        /* Go round the window oldest first: collect a slot's request, then
         * refill the slot while there is more to send. */
        for (unsigned long w = 0;; w = (w + 1) % t->window) {
                ShmSlot *sl = &s[w];
                const Variant *v;

                if (sl->busy) {
                        v = variant_of(b, sl->id);
                        e = hyperamp_wait(sl->r, t->timeout_ms);
                        if (e < 0) {
                                t->error = e;
                                break;
                        }
                        if (e != HYPERAMP_SUCCESS)
                                fail(b, sl->id, "status ", ha_result_name((enum ha_result)e));
                        else if (memcmp(hyperamp_req_data(sl->r), b->expect + v->off, v->size) != 0)
                                fail(b, sl->id, "result bytes differ from the reference", "");
                        else
                                record_latency(b, &t->hist, ha_now_ns() - sl->t_sent);
                        sl->busy = false;
                        inflight--;
                        t->done++;
                        if (b->mix) {
                                /* The next request has another size. */
                                hyperamp_release(sl->r);
                                sl->r = NULL;
                        }
                }
                if (!shm_more(t, next)) {
                        if (inflight == 0)
                                break;
                        continue;
                }
                sl->id = t->first + next * t->stride;
                v = variant_of(b, sl->id);
                if (!sl->r) {
                        e = hyperamp_alloc(t->h, v->size, &sl->r);
                        if (e == -EAGAIN) {
                                /* Requests in flight hold the pool or the
                                 * entries: collect ours first, or let the
                                 * other threads collect theirs.  Not for
                                 * ever: a pool that never comes back is a
                                 * failure, not a slow run. */
                                if (inflight == 0) {
                                        if (!stalled_since)
                                                stalled_since = ha_now_ns();
                                        else if (ha_now_ns() - stalled_since >
                                                 (uint64_t)t->timeout_ms * 1000000u) {
                                                t->error = -ETIMEDOUT;
                                                break;
                                        }
                                        sched_yield();
                                }
                                continue;
                        }
                        if (e < 0) {
                                t->error = e;
                                break;
                        }
                }
                stalled_since = 0;
                memcpy(hyperamp_req_data(sl->r), b->payload + v->off, v->size);
                sl->t_sent = ha_now_ns();
                if ((e = hyperamp_submit(sl->r, v->service, v->size)) < 0) {
                        t->error = e;
                        break;
                }
                sl->busy = true;
                inflight++;
                next++;
        }
        for (unsigned long w = 0; w < t->window; w++)
                if (s[w].r)
                        hyperamp_release(s[w].r);
        free(s);
        return NULL;
}

static int run_shm(Bench *b, Ctx *ctx, double *ret_secs)
{
        ShmThread *ts = calloc(b->threads, sizeof(*ts));
        hyperamp_t *h = NULL;
        unsigned long per = b->total / b->threads, extra = b->total % b->threads, first = 0;
        uint64_t start;
        int e, ret = 0;

        if (!ts)
                return EXIT_FAILED;
        if (ha_socket_path(ctl_socket_opt(), ctx->socket_path, sizeof(ctx->socket_path)) < 0) {
                free(ts);
                return EXIT_USAGE;
        }
        e = hyperamp_attach(ctx->socket_path, &h);
        if (e < 0) {
                fprintf(stderr, "hyperampctl: cannot attach to hyperampd at %s: %s\n",
                        ctx->socket_path,
                        e == -EBUSY ? "the daemon is at its limit of zone slots or connections" :
                        e == -EOPNOTSUPP ? "zone channels are turned off (zone_clients is 0)" :
                        strerror(-e));
                free(ts);
                return e == -ENOENT || e == -ECONNREFUSED || e == -EBUSY ? EXIT_UNAVAILABLE : EXIT_FAILED;
        }
        start = ha_now_ns();
        b->deadline_ns = start + (uint64_t)b->duration_s * 1000000000ull;
        for (unsigned long i = 0; i < b->threads; i++) {
                ts[i] = (ShmThread){ .b = b, .h = h, .timeout_ms = ctx->timeout_ms,
                                     .window = b->conc / b->threads +
                                     (i < b->conc % b->threads) };
                if (b->duration_s) {
                        /* Interleaved ids: together the threads run the
                         * whole mix (each one a share of it). */
                        ts[i].first = i, ts[i].stride = b->threads, ts[i].count = ULONG_MAX;
                } else {
                        ts[i].first = first, ts[i].stride = 1, ts[i].count = per + (i < extra);
                        first += ts[i].count;
                }
                e = pthread_create(&ts[i].thread, NULL, shm_thread, &ts[i]);
                if (e) {
                        fprintf(stderr, "hyperampctl: cannot start a thread: %s\n", strerror(e));
                        b->threads = i;         /* join only those that run */
                        ret = EXIT_FAILED;
                        break;
                }
        }
        b->done = 0;
        for (unsigned long i = 0; i < b->threads; i++) {
                pthread_join(ts[i].thread, NULL);
                if (ts[i].error == -E2BIG && !ret) {
                        /* the socket's preflight, for the lease's limit */
                        fprintf(stderr, "hyperampctl: --size %lu does not fit in a lease's pool "
                                "(the daemon's zone_pool_size)\n", b->size);
                        ret = EXIT_USAGE;
                } else if (ts[i].error && !ret) {
                        fprintf(stderr, "hyperampctl: shared-memory request failed: %s\n",
                                strerror(-ts[i].error));
                        ret = ts[i].error == -ECONNRESET ? EXIT_UNAVAILABLE :
                              ts[i].error == -ETIMEDOUT ? EXIT_TIMEOUT : EXIT_FAILED;
                }
                b->done += ts[i].done;
                merge_hist(&b->hist, &ts[i].hist);
        }
        *ret_secs = (double)(ha_now_ns() - start) / 1e9;
        hyperamp_detach(h);
        free(ts);
        b->total = b->done;             /* what was answered, not what was asked */
        return ret;
}

/* Check the run against the daemon's limits before sending anything. */
static int preflight(Bench *b, Ctx *ctx, HaClient *cl)
{
        _cleanup_free_ uint8_t *data = NULL;
        double max_payload, capacity, per_conn;
        size_t dlen;
        HaReply rep;
        int r;

        r = ha_client_call(cl, "ping", NULL, NULL, 0, &rep, &data, &dlen);
        if (r < 0)
                return ctl_call_error(ctx, r);
        if (rep.error_code)
                return ctl_reply_error("ping", &rep);
        max_payload = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rep.result, "max_payload"));
        capacity = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rep.result, "queue_capacity"));
        per_conn = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rep.result, "max_inflight_per_conn"));
        ha_reply_done(&rep);
        if ((double)b->size > max_payload) {
                fprintf(stderr, "hyperampctl: --size %lu is over the daemon's max_payload (%.0f)\n",
                        b->size, max_payload);
                return EXIT_USAGE;
        }
        if ((double)b->conc > capacity && !b->overload) {
                fprintf(stderr, "hyperampctl: -c %lu is over the daemon's queue capacity (%.0f): "
                        "requests past it would be refused with E_BUSY (--overload to do that on purpose)\n", b->conc, capacity);
                return EXIT_USAGE;
        }
        if ((double)((b->conc + b->nconns - 1) / b->nconns) > per_conn && !b->overload) {
                fprintf(stderr, "hyperampctl: %lu in flight per connection is over the daemon's "
                        "max_inflight_per_conn (%.0f): use more --connections\n",
                        (b->conc + b->nconns - 1) / b->nconns, per_conn);
                return EXIT_USAGE;
        }
        return 0;
}

/*
 * The kinds of request to cycle through, their payloads and the expected
 * results.  Without --mix: one service and size, up to 64 distinct payloads
 * (a reply that carries another request's bytes is caught).  With --mix:
 * every service in the table (each has its reference here) times sizes
 * 16, 64, 256, ... up to b->size, twice over with different bytes.
 */
static int setup_variants(Bench *b)
{
        const HaService *svcs = NULL;
        size_t nsvc = 1, nsizes = 0, sizes[32], total = 0;

        if (b->mix) {
                svcs = ha_services(&nsvc);
                for (size_t s = 16; s < b->size && nsizes < ELEMENTSOF(sizes) - 1; s *= 4)
                        sizes[nsizes++] = s;
                sizes[nsizes++] = b->size;
                b->nvar = nsvc * nsizes * 2;
        } else {
                sizes[nsizes++] = b->size;
                /* bounded to 32 MiB of buffers in all */
                b->nvar = (16ul << 20) / b->size;
                b->nvar = b->nvar < 1 ? 1 : b->nvar > 64 ? 64 : b->nvar;
        }
        b->var = calloc(b->nvar, sizeof(*b->var));
        if (!b->var)
                return -ENOMEM;
        for (unsigned long k = 0; k < b->nvar; k++) {
                /* services vary fastest, then sizes */
                b->var[k].service = svcs ? svcs[k % nsvc].id : b->service;
                b->var[k].size = sizes[(k / nsvc) % nsizes];
                b->var[k].off = total;
                total += b->var[k].size;
        }
        b->payload = malloc(total);
        b->expect = malloc(total);
        if (!b->payload || !b->expect)
                return -ENOMEM;
        for (unsigned long k = 0; k < b->nvar; k++)
                for (size_t j = 0; j < b->var[k].size; j++) {
                        size_t i = b->var[k].off + j;
                        b->payload[i] = (uint8_t)(i * 131u + k * 29u + 7u);
                }
        memcpy(b->expect, b->payload, total);
        for (unsigned long k = 0; k < b->nvar; k++)
                if (ha_service_run(b->var[k].service, b->expect + b->var[k].off,
                                   b->var[k].size) != HA_RESULT_SUCCESS)
                        return -ENOENT;
        return 0;
}

int cmd_bench(Ctx *ctx, int argc, char **argv)
{
        static const struct option own[] = {
                { "service", required_argument, NULL, 's' },
                { "concurrency", required_argument, NULL, 'c' },
                { "requests", required_argument, NULL, 'n' },
                { "size", required_argument, NULL, OPT_SIZE },
                { "connections", required_argument, NULL, OPT_CONNECTIONS },
                { "overload", no_argument, NULL, OPT_OVERLOAD },
                { "transport", required_argument, NULL, OPT_TRANSPORT },
                { "threads", required_argument, NULL, OPT_THREADS },
                { "duration", required_argument, NULL, OPT_DURATION },
                { "mix", no_argument, NULL, OPT_MIX },
                { "spin-us", required_argument, NULL, OPT_SPIN_US },
        };
        const struct option *opts = ctl_options(own, ELEMENTSOF(own));
        Bench b = { .service = 66, .conc = 64, .total = 10000, .size = 64, .nconns = 1,
                    .threads = 1 };
        unsigned long spin_us = 50;
        const char *service = "echo";
        bool have_n = false, have_s = false, have_size = false, have_conns = false;
        bool have_spin = false;
        BConn *conns = NULL;
        double secs = 0;
        int c, r, ret = EXIT_FAILED;

        optind = 1;
        while ((c = ctl_getopt(argc, argv, "+:s:c:n:jt:hV", opts)) >= 0) {
                unsigned long *dst = NULL, min = 1, max = 0;
                const char *what = NULL;

                switch (c) {
                case 's':
                        service = optarg;
                        have_s = true;
                        continue;
                case OPT_OVERLOAD:
                        b.overload = true;
                        continue;
                case OPT_MIX:
                        b.mix = true;
                        continue;
                case OPT_TRANSPORT:
                        if (strcmp(optarg, "shm") != 0 && strcmp(optarg, "socket") != 0)
                                return ctl_usage_error("--transport: '%s' is not socket or shm", optarg);
                        b.shm = strcmp(optarg, "shm") == 0;
                        continue;
                case OPT_THREADS:
                        dst = &b.threads, max = 64, what = "--threads: not a number from 1 to 64";
                        break;
                case OPT_SPIN_US:
                        dst = &spin_us, min = 0, max = 1000000,
                        what = "--spin-us: not a number of microseconds from 0 to 1000000";
                        have_spin = true;
                        break;
                case OPT_DURATION:
                        dst = &b.duration_s, max = 30ul * 86400,
                        what = "--duration: not a number of seconds from 1 to 2592000 (30 days)";
                        break;
                case 'c':
                        dst = &b.conc, max = 65535, what = "-c: not a concurrency from 1 to 65535";
                        break;
                case 'n':
                        dst = &b.total, max = 100000000, what = "-n: not a request count from 1 to 100000000";
                        have_n = true;
                        break;
                case OPT_SIZE:
                        dst = &b.size, max = 1u << 30, what = "--size: not a size in bytes from 1 to 2^30";
                        have_size = true;
                        break;
                case OPT_CONNECTIONS:
                        dst = &b.nconns, max = 1024, what = "--connections: not a number from 1 to 1024";
                        have_conns = true;
                        break;
                default:
                        r = ctl_global_opt(ctx, c, argv[0]);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (ctl_parse_uint(optarg, min, max, dst) < 0)
                        return ctl_usage_error("%s ('%s')", what, optarg);
        }
        if (optind < argc)
                return ctl_usage_error("bench: unexpected argument '%s'", argv[optind]);
        if (have_n && b.duration_s)
                return ctl_usage_error("%s", "bench: give -n or --duration, not both");
        if (b.mix && have_s)
                return ctl_usage_error("%s", "bench: --mix runs every service; it takes no -s");
        if (b.shm && (have_conns || b.overload || have_spin))
                return ctl_usage_error("bench: %s is for --transport socket",
                                       have_conns ? "--connections" :
                                       b.overload ? "--overload" : "--spin-us");
        b.spin_ns = (uint64_t)spin_us * 1000u;
        r = ha_service_parse(service, &b.service);
        if (r == -ENOENT || r == -ERANGE)
                return ctl_no_such_service(service);
        if (r < 0)
                return ctl_usage_error("-s: '%s' is not a service name or an id", service);
        if (b.mix && !have_size)
                b.size = 65536;         /* the top of the mix's size ladder */
        if (b.nconns > b.conc)
                b.nconns = b.conc;
        if (b.threads > b.conc)
                b.threads = b.conc;
        /* A socket thread needs a connection and a request of its own. */
        if (!b.shm && b.threads > b.nconns)
                b.threads = b.nconns;
        if (!b.shm && !b.duration_s && b.threads > b.total)
                b.threads = b.total;

        r = setup_variants(&b);
        if (r == -ENOENT) {
                ret = -ctl_usage_error("bench: service '%s' has no reference "
                                       "implementation here to verify against", service);
                goto out;
        }
        conns = calloc(b.nconns, sizeof(*conns));
        if (r < 0 || alloc_tracking(&b) < 0 || !conns) {
                fprintf(stderr, "hyperampctl: out of memory\n");
                goto out;
        }
        for (unsigned long i = 0; i < b.nconns; i++)
                conns[i].cl.fd = -1;
        if (b.shm) {
                r = run_shm(&b, ctx, &secs);
                if (r > 0) {
                        ret = r;
                        goto out;
                }
                goto report;
        }
        for (unsigned long i = 0; i < b.nconns; i++) {
                r = ctl_connect(ctx, &conns[i].cl);
                if (r) {
                        ret = r;
                        goto out;
                }
        }

        r = preflight(&b, ctx, &conns[0].cl);
        if (r) {
                ret = r;
                goto out;
        }
        r = run_socket(&b, ctx, conns, &secs);
        if (r == -ECONNREFUSED) {
                /* Refused at the door, as a missing daemon is, when at its limit. */
                fprintf(stderr, "hyperampctl: %s\n", b.first_error);
                ret = b.at_limit ? EXIT_UNAVAILABLE : EXIT_FAILED;
                goto out;
        }
        if (r < 0) {
                ret = ctl_call_error(ctx, r);
                if (r == -EBADMSG && b.first_error[0])
                        fprintf(stderr, "hyperampctl: %s\n", b.first_error);
                goto out;
        }
report:
        if (b.lat)
                qsort(b.lat, b.nlat, sizeof(uint64_t), cmp_u64);
        if (ctx->json) {
                printf("{\"transport\":\"%s\",\"threads\":%lu,", b.shm ? "shm" : "socket",
                       b.threads);
                if (b.mix)
                        printf("\"service\":null,\"mix\":true,");
                else
                        printf("\"service\":%u,\"mix\":false,", b.service);
                if (!b.shm)
                        printf("\"spin_us\":%lu,", (unsigned long)(b.spin_ns / 1000u));
                printf("\"concurrency\":%lu,\"connections\":%lu,\"size\":%lu,"
                       "\"requests\":%lu,\"failures\":%lu,\"busy\":%lu,\"seconds\":%.6f,"
                       "\"req_per_s\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,"
                       "\"p99\":%.1f,\"max\":%.1f}}\n",
                       b.conc, b.nconns, b.size, b.total, b.failures, b.busy, secs,
                       (double)b.total / secs, pct_us(&b, 0.50), pct_us(&b, 0.90),
                       pct_us(&b, 0.99), pct_us(&b, 1.0));
        } else {
                char what[64];

                if (b.mix)
                        snprintf(what, sizeof(what), "every service, %lu to %lu bytes",
                                 b.size < 16 ? b.size : 16ul, b.size);
                else
                        snprintf(what, sizeof(what), "service %u, %lu bytes", b.service, b.size);
                if (b.shm)
                        printf("%s, concurrency %lu over %lu thread%s, shared memory\n",
                               what, b.conc, b.threads, b.threads == 1 ? "" : "s");
                else
                        printf("%s, concurrency %lu over %lu connection%s, %lu thread%s, "
                               "spin %lu us\n", what, b.conc, b.nconns, b.nconns == 1 ? "" : "s",
                               b.threads, b.threads == 1 ? "" : "s",
                               (unsigned long)(b.spin_ns / 1000u));
                printf("requests  %lu, failures %lu (busy %lu), %.3f s\n", b.total, b.failures,
                       b.busy, secs);
                printf("throughput %.1f req/s\n", (double)b.total / secs);
                printf("latency us  p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", pct_us(&b, 0.50),
                       pct_us(&b, 0.90), pct_us(&b, 0.99), pct_us(&b, 1.0));
        }
        if (b.failures)
                fprintf(stderr, "hyperampctl: %lu of %lu responses failed verification; first: %s\n",
                        b.failures, b.total, b.first_error);
        ret = b.failures ? EXIT_FAILED : EXIT_OK;
out:
        for (unsigned long i = 0; conns && i < b.nconns; i++) {
                ha_client_close(&conns[i].cl);
                free(conns[i].out);
                free(conns[i].in);
        }
        free(conns);
        free(b.var);
        free(b.payload);
        free(b.expect);
        free_tracking(&b);
        return ret;
}
