/* SPDX-License-Identifier: MIT */
/* libhyperamp: the client side of zone channels (src/core/hyperamp/zone.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "clock.h"
#include "client.h"
#include "cpu.h"
#include "hyperamp/cleanup.h"
#include "hyperamp/hyperamp.h"
#include "hyperamp/zone.h"
#include "proto.h"
#include "sockpath.h"
#include "zring.h"

#define EXPORT __attribute__((visibility("default")))
#define SPIN_MIN 64u
#define SPIN_MAX 16384u
#define LIVENESS_MS 100         /* how often a sleeping waiter checks the daemon is there */
#define RESUME_MS 30000         /* how long a wait with no limit waits for a new daemon */

enum { REQ_FREE, REQ_ALLOCATED, REQ_SUBMITTED };

struct hyperamp_req {
        hyperamp_t *h;
        uint16_t idx;
        uint32_t off, cap;
        uint32_t seq;           /* completion word when submitted */
        int state;
};

struct hyperamp {
        int sock, memfd, bell_fd, done_fd;
        struct sockaddr_un addr;
        /* A resume replaces the sockets under the same fd numbers (dup3):
         * a thread in submit or wait keeps using valid ones.  gen counts
         * resumes, so only one thread resumes for one hang-up. */
        pthread_mutex_t resume_lock;
        unsigned gen;
        void *base;
        size_t size;
        ZoneView v;             /* the mapped slot's parts */
        uint64_t pool_size;
        HaAlloc *alloc;
        pthread_mutex_t lock;   /* free entries and the ring's producer side */
        uint16_t free_idx[HA_ZONE_ENTRIES];
        unsigned nfree;
        unsigned spin;          /* adaptive spin budget, relaxed atomic */
        hyperamp_req_t reqs[HA_ZONE_ENTRIES];
};

/* ===== attach ===== */

/*
 * Connect and send attach (or a resume): the connection in *sock and the
 * reply's want fds.  The client core bounds it all by timeout_ms.  A daemon
 * at its connection limit sends E_LIMIT and closes: that reply is read too.
 */
static int call_attach(const char *path, int timeout_ms, bool resume, int *sock, int fds[3],
                       cJSON **ret)
{
        int want = resume ? 2 : 3, nfds = 0, r;
        cJSON *params = NULL;
        HaClient cl;
        HaReply rep;

        r = ha_client_connect(&cl, path, timeout_ms);
        if (r < 0)
                return r;
        if (resume && (!(params = cJSON_CreateObject()) || !cJSON_AddTrueToObject(params, "resume"))) {
                cJSON_Delete(params);
                ha_client_close(&cl);
                return -ENOMEM;
        }
        r = ha_client_call_fds(&cl, HA_METHOD_ATTACH, params, &rep, fds, 3, &nfds);
        if (r == 0) {
                if (rep.error_code)
                        r = strcmp(rep.error_code, "E_LIMIT") == 0 ? -EBUSY :
                            strcmp(rep.error_code, "E_SHUTDOWN") == 0 ? -ESHUTDOWN :
                            strcmp(rep.error_code, "E_DISABLED") == 0 ? -EOPNOTSUPP : -EPROTO;
                else if (nfds != want)
                        r = -EBADMSG;
                else
                        r = (*ret = cJSON_Duplicate(rep.result, true)) ? 0 : -ENOMEM;
                ha_reply_done(&rep);
        }
        if (r < 0) {
                for (int i = 0; i < nfds; i++)
                        close(fds[i]);
                ha_client_close(&cl);
                return r;
        }
        *sock = cl.fd;
        return 0;
}

static double num(const cJSON *o, const char *key)
{
        return cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

EXPORT void hyperamp_detach(hyperamp_t *h)
{
        if (!h)
                return;
        if (h->base)
                munmap(h->base, h->size);
        int fds[] = { h->sock, h->memfd, h->bell_fd, h->done_fd };
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        ha_alloc_free(h->alloc);
        pthread_mutex_destroy(&h->lock);
        pthread_mutex_destroy(&h->resume_lock);
        free(h);
}

/* The layout is fixed by zone.h: a daemon that says otherwise speaks
 * another version. */
static bool layout_ok(const cJSON *res)
{
        double pool = num(res, "pool_size");

        return num(res, "entries") == HA_ZONE_ENTRIES && num(res, "ring") == HA_ZONE_RING &&
               num(res, "ctl_off") == HA_ZONE_CTL_OFF && num(res, "queue_off") == HA_ZONE_QUEUE_OFF &&
               num(res, "done_off") == HA_ZONE_DONE_OFF && num(res, "pool_off") == HA_ZONE_POOL_OFF &&
               pool > 0 && pool <= UINT32_MAX && num(res, "size") == (double)HA_ZONE_SIZE((uint64_t)pool);
}

EXPORT int hyperamp_attach(const char *socket_path, hyperamp_t **ret)
{
        int fds[3] = { -1, -1, -1 };
        cJSON *res = NULL;
        hyperamp_t *h;
        int r;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        pthread_mutex_init(&h->lock, NULL);
        pthread_mutex_init(&h->resume_lock, NULL);
        h->sock = h->memfd = h->bell_fd = h->done_fd = -1;
        h->spin = SPIN_MIN * 4;
        h->addr.sun_family = AF_UNIX;

        r = ha_socket_path(socket_path, h->addr.sun_path, sizeof(h->addr.sun_path));
        if (r < 0)
                goto fail;
        r = call_attach(h->addr.sun_path, 10000, false, &h->sock, fds, &res);
        if (r < 0)
                goto fail;
        h->bell_fd = fds[0];
        h->done_fd = fds[1];
        h->memfd = fds[2];
        if (!layout_ok(res)) {
                r = -EPROTO;
                goto fail;
        }
        h->size = (size_t)num(res, "size");
        h->pool_size = (uint64_t)num(res, "pool_size");
        h->base = mmap(NULL, h->size, PROT_READ | PROT_WRITE, MAP_SHARED, h->memfd, 0);
        if (h->base == MAP_FAILED) {
                h->base = NULL;
                r = -errno;
                goto fail;
        }
        h->v = ha_zone_view(h->base, h->pool_size);
        if (__atomic_load_n(&h->v.ctl->magic, __ATOMIC_ACQUIRE) != HA_ZONE_CTL_MAGIC) {
                r = -EPROTO;
                goto fail;
        }
        r = ha_alloc_new(h->pool_size, &h->alloc);
        if (r < 0)
                goto fail;
        for (unsigned i = 0; i < HA_ZONE_ENTRIES; i++) {
                h->free_idx[i] = (uint16_t)(HA_ZONE_ENTRIES - 1 - i);
                h->reqs[i] = (hyperamp_req_t){ .h = h, .idx = (uint16_t)i, .state = REQ_FREE };
        }
        h->nfree = HA_ZONE_ENTRIES;
        cJSON_Delete(res);
        *ret = h;
        return 0;
fail:
        cJSON_Delete(res);
        hyperamp_detach(h);
        return r;
}

/* ===== requests ===== */

EXPORT int hyperamp_alloc(hyperamp_t *h, size_t size, hyperamp_req_t **ret)
{
        hyperamp_req_t *r;
        uint32_t off;
        int e;

        if (size == 0 || size > h->pool_size)
                return size == 0 ? -EINVAL : -E2BIG;
        e = ha_alloc_get(h->alloc, size, &off);
        if (e < 0)
                return e == -ENOMEM ? -EAGAIN : e;
        pthread_mutex_lock(&h->lock);
        if (h->nfree == 0) {
                pthread_mutex_unlock(&h->lock);
                ha_alloc_put(h->alloc, off);
                return -EAGAIN;
        }
        r = &h->reqs[h->free_idx[--h->nfree]];
        pthread_mutex_unlock(&h->lock);
        r->off = off;
        r->cap = (uint32_t)size;
        r->state = REQ_ALLOCATED;
        *ret = r;
        return 0;
}

EXPORT void *hyperamp_req_data(hyperamp_req_t *r)
{
        return r->h->v.pool + r->off;
}

EXPORT size_t hyperamp_req_capacity(const hyperamp_req_t *r)
{
        return r->cap;
}

EXPORT int hyperamp_submit(hyperamp_req_t *r, uint16_t service, size_t len)
{
        hyperamp_t *h = r->h;
        ZoneCtl *c = h->v.ctl;
        HaMsgEntry *en = &h->v.q->entries[r->idx];

        if (r->state != REQ_ALLOCATED || len == 0 || len > r->cap)
                return r->state == REQ_SUBMITTED ? -EBUSY : -EINVAL;
        /* The daemon reads these from another process: single atomic
         * stores, ordered before the tail by its release. */
        ha_zring_msg_write(en, service, r->off, (uint32_t)len);
        /* Before the push: the counter cannot move until the daemon has it. */
        r->seq = ha_zdone_load(&h->v.done[r->idx].word) & ~HA_ZONE_WAITER;
        r->state = REQ_SUBMITTED;

        pthread_mutex_lock(&h->lock);
        /* seq_cst pairs with the daemon's "sleeping" store and tail load. */
        ha_zring_push(c, r->idx);
        pthread_mutex_unlock(&h->lock);

        /* Ring only if the daemon sleeps and nobody rang since it woke.  A
         * failed ring changes nothing: the request is queued either way,
         * and a daemon that is gone shows in hyperamp_wait(). */
        if (__atomic_load_n(&c->sleeping, __ATOMIC_SEQ_CST) &&
            !__atomic_exchange_n(&c->bell, 1, __ATOMIC_SEQ_CST))
                (void)send(h->bell_fd, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        return 0;
}

static int result_of(hyperamp_req_t *r)
{
        uint16_t flag = ha_zdone_flag(&r->h->v.q->entries[r->idx]);

        r->state = REQ_ALLOCATED;
        if (!(flag & HA_FLAG_DEAL_STATE) || (flag & HA_FLAG_RESERVED))
                return HYPERAMP_FAIL;
        return (flag & HA_FLAG_RESULT_MASK) >> HA_FLAG_RESULT_SHIFT;
}

static bool is_done(const hyperamp_req_t *r, uint32_t *word)
{
        *word = ha_zdone_load(&r->h->v.done[r->idx].word);
        return (*word & ~HA_ZONE_WAITER) != r->seq;
}

EXPORT int hyperamp_poll(hyperamp_req_t *r)
{
        uint32_t w;

        if (r->state != REQ_SUBMITTED)
                return -EINVAL;
        return is_done(r, &w) ? result_of(r) : -EAGAIN;
}

/* Has the daemon closed our connection? */
static bool daemon_gone(hyperamp_t *h)
{
        struct pollfd p = { .fd = h->sock, .events = POLLIN | POLLRDHUP };

        return poll(&p, 1, 0) > 0;
}

/*
 * Hand the lease memory to the new daemon over the new doorbell; its
 * verdict (0 or a negative errno, an int32) comes on the completion socket.
 */
static int hand_back(hyperamp_t *h, int sock, const int fds[2], int64_t deadline)
{
        union {
                char c[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } u;
        struct iovec iov = { (void *)"M", 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c };
        /* A daemon that dies before its verdict hangs up the control socket
         * (a datagram pair says nothing when its peer goes). */
        struct pollfd p[2] = { { .fd = fds[1], .events = POLLIN },
                               { .fd = sock, .events = POLLIN | POLLRDHUP } };
        int32_t verdict;
        int64_t left;

        ha_fds_put(&mh, &h->memfd, 1);
        if (sendmsg(fds[0], &mh, MSG_NOSIGNAL) != 1)
                return -errno;
        left = deadline - ha_mono_ms();
        if (left <= 0 || poll(p, 2, left > INT_MAX ? INT_MAX : (int)left) <= 0)
                return -ETIMEDOUT;
        if (!(p[0].revents & POLLIN))
                return -ECONNRESET;
        if (recv(fds[1], &verdict, sizeof(verdict), MSG_DONTWAIT) != sizeof(verdict))
                return -EPROTO;
        return verdict > 0 ? -EPROTO : verdict;
}

/* One attempt: connect, attach with resume, hand the memory back, and put
 * the new sockets in place. */
static int resume_once(hyperamp_t *h, unsigned gen, int64_t deadline)
{
        int sock, fds[3] = { -1, -1, -1 }, r;
        int64_t left = deadline - ha_mono_ms();
        cJSON *res = NULL;

        if (left <= 0)
                return -ETIMEDOUT;
        r = call_attach(h->addr.sun_path, left > 10000 ? 10000 : (int)left, true, &sock, fds, &res);
        if (r < 0)
                return r;
        if (r == 0 && (!layout_ok(res) || (uint64_t)num(res, "pool_size") != h->pool_size))
                r = -EPROTO;    /* a daemon configured another pool size */
        if (r == 0)
                r = hand_back(h, sock, fds, deadline);
        /* New sockets under the old numbers: threads in submit or wait
         * never see a closed or reused fd.  A thread in poll() on the old
         * completion socket would not notice it go: the shutdown wakes it. */
        if (r == 0) {
                const int from[] = { fds[0], fds[1], sock }, to[] = { h->bell_fd, h->done_fd, h->sock };

                (void)shutdown(h->done_fd, SHUT_RDWR);
                for (int i = 0; i < 3; i++)     /* all three, even after a failure */
                        if (dup3(from[i], to[i], O_CLOEXEC) < 0 && r == 0)
                                r = -errno;
        }
        if (r == 0) {
                __atomic_store_n(&h->gen, gen + 1, __ATOMIC_RELEASE);
                /* A submit that rang the dead doorbell left the bell flag
                 * set: ring the new one once, so nothing sits unseen. */
                __atomic_store_n(&h->v.ctl->bell, 1, __ATOMIC_SEQ_CST);
                (void)send(h->bell_fd, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        for (int i = 0; i < 2; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        close(sock);
        cJSON_Delete(res);
        return r;
}

/*
 * hyperampd went away: reach the one that replaces it (systemd restarts
 * it) and hand it the lease memory, which says what was submitted and what
 * was under way.  One thread does it per hang-up (gen); the others find
 * the lock taken or gen moved, and go on waiting on their words.  Nobody
 * listening yet, a daemon that dies in the middle or is stopping, full
 * slots, or an old slot of ours still draining: try again, with a bounded
 * back-off, until the deadline (-ETIMEDOUT).
 */
static int resume(hyperamp_t *h, unsigned gen, int64_t deadline)
{
        int64_t cap = ha_mono_ms() + RESUME_MS;
        int backoff = 1, r;

        if (deadline > cap)
                deadline = cap;
        /* Another thread is at it: go back to waiting on the word. */
        if (pthread_mutex_trylock(&h->resume_lock) != 0)
                return 0;
        for (;;) {
                int64_t left;

                if (__atomic_load_n(&h->gen, __ATOMIC_ACQUIRE) != gen) {
                        r = 0;
                        break;
                }
                r = resume_once(h, gen, deadline);
                if (r != -ENOENT && r != -ECONNREFUSED && r != -EAGAIN && r != -ECONNRESET &&
                    r != -EPIPE && r != -EEXIST && r != -EBUSY && r != -ESHUTDOWN &&
                    r != -ETIMEDOUT)
                        break;
                left = deadline - ha_mono_ms();
                if (left <= 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                (void)poll(NULL, 0, (int)(backoff < left ? backoff : left));
                backoff = backoff * 2 > LIVENESS_MS ? LIVENESS_MS : backoff * 2;
        }
        pthread_mutex_unlock(&h->resume_lock);
        return r;
}

EXPORT int hyperamp_wait(hyperamp_req_t *r, int timeout_ms)
{
        hyperamp_t *h = r->h;
        uint32_t *word = &h->v.done[r->idx].word;
        unsigned spin = __atomic_load_n(&h->spin, __ATOMIC_RELAXED);
        int64_t deadline = timeout_ms < 0 ? INT64_MAX : ha_mono_ms() + timeout_ms;
        unsigned gen;
        uint32_t v;

        if (r->state != REQ_SUBMITTED)
                return -EINVAL;
        /* Spin first: a cross-core futex wake-up costs tens of microseconds
         * here, a busy daemon answers faster than that.  The budget adapts
         * to whether spinning has been paying off. */
        for (unsigned i = 0; i < spin; i++) {
                if (is_done(r, &v)) {
                        if (spin < SPIN_MAX)
                                __atomic_store_n(&h->spin, spin * 2, __ATOMIC_RELAXED);
                        return result_of(r);
                }
                cpu_relax();
        }
        if (spin > SPIN_MIN)
                __atomic_store_n(&h->spin, spin / 2, __ATOMIC_RELAXED);

        for (;;) {
                struct timespec ts;
                int64_t left;

                if (is_done(r, &v))
                        return result_of(r);
                if (!(v & HA_ZONE_WAITER) &&
                    !__atomic_compare_exchange_n(word, &v, v | HA_ZONE_WAITER, false,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                        continue;       /* it changed under us: look again */
                left = deadline - ha_mono_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                /* Sleep on the word; wake at least every LIVENESS_MS to
                 * notice a daemon that died. */
                if (left > LIVENESS_MS)
                        left = LIVENESS_MS;
                ts = (struct timespec){ left / 1000, (left % 1000) * 1000000 };
                (void)syscall(SYS_futex, word, FUTEX_WAIT, v | HA_ZONE_WAITER, &ts, NULL, 0);
                gen = __atomic_load_n(&h->gen, __ATOMIC_ACQUIRE);
                if (!is_done(r, &v) && daemon_gone(h) && resume(h, gen, deadline) < 0)
                        return ha_mono_ms() >= deadline ? -ETIMEDOUT : -ECONNRESET;
        }
}

EXPORT int hyperamp_fd(hyperamp_t *h)
{
        return h->done_fd;
}

EXPORT void hyperamp_arm(hyperamp_t *h)
{
        __atomic_store_n(&h->v.ctl->fd_armed, 1, __ATOMIC_SEQ_CST);
}

EXPORT int hyperamp_release(hyperamp_req_t *r)
{
        hyperamp_t *h = r->h;

        if (r->state == REQ_FREE)
                return -EINVAL;         /* released twice */
        /* A request still in the daemon's hands keeps its entry and buffer:
         * wait for it, then release again. */
        if (r->state == REQ_SUBMITTED && hyperamp_poll(r) == -EAGAIN)
                return -EBUSY;
        r->state = REQ_FREE;
        ha_alloc_put(h->alloc, r->off);
        pthread_mutex_lock(&h->lock);
        h->free_idx[h->nfree++] = r->idx;
        pthread_mutex_unlock(&h->lock);
        return 0;
}
