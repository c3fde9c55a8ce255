/* SPDX-License-Identifier: MIT */
/*
 * Test client for zone channels, built on libhyperamp.
 *   zclient SOCKET race THREADS REQUESTS [pace]
 *                                          every response verified; with pace,
 *                                          each byte on stdin lets every thread
 *                                          start one more request (EOF: no more
 *                                          waiting) and each answer prints
 *                                          "progress N", so a test picks the moment
 *   zclient SOCKET hold STALLED            attach, leave STALLED requests on the
 *                                          stall service and more buffers taken,
 *                                          print "holding", wait to be killed
 *   zclient SOCKET fd N                    N requests waited for through
 *                                          hyperamp_fd() + poll(), not hyperamp_wait()
 *   zclient SOCKET pollhold N              answer one request, then at once put a
 *                                          stall entry and N encrypt entries on the
 *                                          ring with one tail store and no ring, so
 *                                          that a polling worker takes them; print
 *                                          "taken" once they left the ring (if no
 *                                          poller took them within a second, ring:
 *                                          the loop does), wait to be killed
 *   zclient SOCKET pollhold-journal N      the same, then rewrite the taken entries'
 *                                          journal records to echo, print "taken",
 *                                          wait for the answers and check that
 *                                          they ran as encrypt, as submitted
 *   zclient SOCKET hostile MODE            scribble on the lease (ring index out
 *                                          of range, an entry twice, offset past
 *                                          the pool, length 0, garbage ring tail),
 *                                          then check a normal request still works
 *   zclient SOCKET resume-waits            two encrypt requests; on a line from
 *                                          stdin submit them, on the next wait for
 *                                          one with no limit (it resumes) while
 *                                          another thread waits 40 x 50 ms on the
 *                                          other and reports its longest wait
 *   zclient SOCKET one SERVICE TEXT        one request: print "submitted", wait
 *                                          (it resumes across a daemon restart),
 *                                          print "result=R data=HEX" (R: the
 *                                          result code, or a negative errno)
 * Exit 0 when every check passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <time.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "hyperamp/hyperamp.h"
#include "hyperamp/zone.h"
#include "services.h"

static const char *sock;
static hyperamp_t *h;
static unsigned per_thread;
static unsigned long failures;
/* hyperamp_wait() limit: the tests scale it under valgrind */
static int wait_ms = 10000;

/* race ... pace: requests each thread may start, raised by stdin */
static pthread_mutex_t pace_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pace_cond = PTHREAD_COND_INITIALIZER;
static unsigned paced_rounds = UINT_MAX;
static unsigned long answered;
static bool print_progress;

static uint32_t rnd(uint32_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        return *s;
}

static int one_request(uint16_t svc, const uint8_t *in, size_t len, uint8_t *expect)
{
        hyperamp_req_t *r;
        int e;

        while ((e = hyperamp_alloc(h, len, &r)) == -EAGAIN)
                sched_yield();  /* every entry in use by other threads: let them finish */
        if (e < 0)
                return e;
        memcpy(hyperamp_req_data(r), in, len);
        e = hyperamp_submit(r, svc, len);
        if (e == 0)
                e = hyperamp_wait(r, wait_ms);
        if (e == HYPERAMP_SUCCESS)
                e = memcmp(hyperamp_req_data(r), expect, len) == 0 ? 0 : -EBADMSG;
        else if (e >= 0)
                e = -EPROTO;
        hyperamp_release(r);
        return e;
}

static void *race_thread(void *arg)
{
        uint32_t seed = 0x9e3779b9u * ((unsigned)(uintptr_t)arg + 1) ^ (uint32_t)getpid();
        uint8_t in[4096], expect[4096];

        for (unsigned i = 0; i < per_thread; i++) {
                static const uint16_t svcs[] = { 1, 2, 66 };
                uint16_t svc = svcs[rnd(&seed) % 3];
                size_t len = 1 + rnd(&seed) % sizeof(in);
                int e;

                pthread_mutex_lock(&pace_lock);
                while (i >= paced_rounds)
                        pthread_cond_wait(&pace_cond, &pace_lock);
                pthread_mutex_unlock(&pace_lock);

                for (size_t k = 0; k < len; k++)
                        in[k] = (uint8_t)rnd(&seed);
                memcpy(expect, in, len);
                ha_service_run(svc, expect, len);
                e = one_request(svc, in, len, expect);
                if (e == 0 && print_progress) {
                        unsigned long n = __atomic_add_fetch(&answered, 1, __ATOMIC_RELAXED);

                        flockfile(stdout);
                        printf("progress %lu\n", n);
                        fflush(stdout);
                        funlockfile(stdout);
                }
                if (e < 0) {
                        __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
                        fprintf(stderr, "zclient: request failed: %s\n", strerror(-e));
                        if (e == -ECONNRESET)
                                break;  /* no daemon took the lease back: it is over */
                }
        }
        return NULL;
}

static int race(unsigned threads, unsigned total, bool pace)
{
        pthread_t t[64];
        char go;

        per_thread = total;
        if (pace) {
                paced_rounds = 0;
                print_progress = true;
        }
        for (unsigned i = 0; i < threads; i++)
                pthread_create(&t[i], NULL, race_thread, (void *)(uintptr_t)i);
        while (pace) {
                bool more = read(STDIN_FILENO, &go, 1) == 1;

                pthread_mutex_lock(&pace_lock);
                paced_rounds = more ? paced_rounds + 1 : UINT_MAX;
                pthread_cond_broadcast(&pace_cond);
                pthread_mutex_unlock(&pace_lock);
                pace = more && paced_rounds < total;
        }
        for (unsigned i = 0; i < threads; i++)
                pthread_join(t[i], NULL);
        printf("race: %u threads x %u requests, %lu failures\n", threads, total, failures);
        return failures ? 1 : 0;
}

/* The event-loop way: arm, submit, poll() the fd, then hyperamp_poll(). */
static int via_fd(unsigned n)
{
        uint8_t expect[32];

        for (unsigned i = 0; i < n; i++) {
                struct pollfd pfd = { .fd = hyperamp_fd(h), .events = POLLIN };
                hyperamp_req_t *r;
                uint64_t v;
                int e;

                if (hyperamp_alloc(h, sizeof(expect), &r) < 0)
                        return 1;
                memset(hyperamp_req_data(r), (int)i, sizeof(expect));
                memset(expect, (int)i, sizeof(expect));
                ha_service_run(1, expect, sizeof(expect));
                hyperamp_arm(h);
                if (hyperamp_submit(r, 1, sizeof(expect)) < 0)
                        return 1;
                while ((e = hyperamp_poll(r)) == -EAGAIN) {
                        if (poll(&pfd, 1, wait_ms) != 1) {
                                fprintf(stderr, "zclient: the completion fd never became readable\n");
                                return 1;
                        }
                        while (read(pfd.fd, &v, sizeof(v)) > 0)
                                ;       /* drain, then arm, then look */
                        hyperamp_arm(h);
                }
                if (e != HYPERAMP_SUCCESS || memcmp(hyperamp_req_data(r), expect, sizeof(expect))) {
                        fprintf(stderr, "zclient: fd request %u failed (%d)\n", i, e);
                        return 1;
                }
                hyperamp_release(r);
        }
        printf("fd: %u requests, 0 failures\n", n);
        return 0;
}

static hyperamp_req_t *second;

static void *short_waits(void *arg)
{
        int64_t longest = 0;
        int e = 0;
        (void)arg;

        for (int i = 0; i < 40; i++) {
                int64_t t = ha_mono_ms();

                e = hyperamp_wait(second, 50);
                if (ha_mono_ms() - t > longest)
                        longest = ha_mono_ms() - t;
                if (e != -ETIMEDOUT)
                        break;
        }
        printf("short waits: longest %lld ms, last %d\n", (long long)longest, e);
        fflush(stdout);
        return NULL;
}

/* A wait with a short limit returns in time while another thread resumes. */
static int resume_waits(void)
{
        uint8_t expect[64];
        hyperamp_req_t *first;
        pthread_t t;
        int e1, e2;

        if (hyperamp_alloc(h, sizeof(expect), &first) < 0 ||
            hyperamp_alloc(h, sizeof(expect), &second) < 0)
                return 1;
        memset(hyperamp_req_data(first), 'a', sizeof(expect));
        memset(hyperamp_req_data(second), 'a', sizeof(expect));
        memset(expect, 'a', sizeof(expect));
        ha_service_run(1, expect, sizeof(expect));
        printf("ready\n");
        fflush(stdout);
        if (getchar() == EOF || hyperamp_submit(first, 1, sizeof(expect)) < 0 ||
            hyperamp_submit(second, 1, sizeof(expect)) < 0)
                return 1;
        printf("submitted\n");
        fflush(stdout);
        if (getchar() == EOF || pthread_create(&t, NULL, short_waits, NULL) != 0)
                return 1;
        e1 = hyperamp_wait(first, -1);
        pthread_join(t, NULL);
        e2 = hyperamp_wait(second, wait_ms);
        printf("results %d %d, bytes %s\n", e1, e2,
               memcmp(hyperamp_req_data(first), expect, sizeof(expect)) == 0 &&
               memcmp(hyperamp_req_data(second), expect, sizeof(expect)) == 0 ? "right" : "wrong");
        return e1 == HYPERAMP_SUCCESS && e2 == HYPERAMP_SUCCESS ? 0 : 1;
}

static int hold(unsigned stalled)
{
        hyperamp_req_t *r;

        for (unsigned i = 0; i < stalled; i++) {
                if (hyperamp_alloc(h, 100, &r) < 0 || hyperamp_submit(r, HA_SERVICE_STALL, 100) < 0)
                        return 1;
        }
        for (unsigned i = 0; i < 10; i++)       /* buffers taken, never submitted */
                if (hyperamp_alloc(h, 1000, &r) < 0)
                        return 1;
        printf("holding\n");
        fflush(stdout);
        for (;;)
                pause();
}

/* Until the daemon moved the ring's head to t, for at most limit_ms:
 * spin briefly, then back off on a precise timer. */
static bool wait_taken(const ZoneCtl *ctl, uint32_t t, int64_t limit_ms)
{
        struct timespec ts = { 0, 200000 };
        int64_t end = ha_mono_ms() + limit_ms;

        for (unsigned i = 0; ha_mono_ms() < end; i++) {
                if (__atomic_load_n(&ctl->sq_head, __ATOMIC_ACQUIRE) == t)
                        return true;
                if (i > 1000)
                        nanosleep(&ts, NULL);
        }
        return __atomic_load_n(&ctl->sq_head, __ATOMIC_ACQUIRE) == t;
}

/*
 * Hold a polling worker inside the lease (issue 16): it runs the stall
 * entry first and the N encrypt entries after it.  Raw entries behind the
 * library's back: the highest indices (handed out last) and buffers from
 * 64 KiB into the pool (the probe's is at its start).
 */
static int pollhold(unsigned n, bool journal)
{
        const uint32_t chunk = 1024, base = 64 * 1024;
        hyperamp_req_t *probe;
        ZoneCtl *ctl;
        HaMsgQueue *q;
        ZoneJrec *jr;
        uint8_t *pool;
        uint32_t t;
        unsigned wrong = 0;
        int e;

        if (n > 200 || hyperamp_alloc(h, 16, &probe) < 0)
                return 1;
        ctl = (ZoneCtl *)((uint8_t *)hyperamp_req_data(probe) - HA_ZONE_POOL_OFF + HA_ZONE_CTL_OFF);
        q = (HaMsgQueue *)((uint8_t *)hyperamp_req_data(probe) - HA_ZONE_POOL_OFF + HA_ZONE_QUEUE_OFF);
        jr = (ZoneJrec *)((uint8_t *)hyperamp_req_data(probe) - HA_ZONE_POOL_OFF + HA_ZONE_JOURNAL_OFF);
        pool = (uint8_t *)hyperamp_req_data(probe);
        /* The worker that answers this polls the ring for poll_us after. */
        memset(hyperamp_req_data(probe), 'p', 16);
        e = hyperamp_submit(probe, 66, 16);
        if (e == 0)
                e = hyperamp_wait(probe, wait_ms);
        if (e != HYPERAMP_SUCCESS)
                return 1;
        /* The loop's drain ends with sleeping = 1 and a last look at the
         * tail: past that look, only a poller takes what comes next. */
        for (int64_t end = ha_mono_ms() + 1000;
             !__atomic_load_n(&ctl->sleeping, __ATOMIC_SEQ_CST) && ha_mono_ms() < end;)
                sched_yield();
        t = ctl->sq_tail;
        for (unsigned i = 0; i <= n; i++) {
                uint16_t idx = (uint16_t)(HA_ZONE_ENTRIES - 1 - i);
                HaMsg *m = &q->entries[idx].msg;

                memset(pool + base + i * chunk, 'a' + (int)(i % 26), chunk);
                __atomic_store_n(&m->flag, 0, __ATOMIC_RELAXED);
                __atomic_store_n(&m->service_id, i == 0 ? HA_SERVICE_STALL : 1, __ATOMIC_RELAXED);
                __atomic_store_n(&m->offset, base + i * chunk, __ATOMIC_RELAXED);
                __atomic_store_n(&m->length, chunk, __ATOMIC_RELAXED);
                __atomic_store_n(&ctl->sq[(t + i) & (HA_ZONE_RING - 1)], idx, __ATOMIC_RELAXED);
        }
        t += n + 1;
        __atomic_store_n(&ctl->sq_tail, t, __ATOMIC_SEQ_CST);
        if (!wait_taken(ctl, t, 1000)) {
                /* No poller came: a request that rings makes the loop look. */
                if (hyperamp_submit(probe, 66, 16) < 0 || !wait_taken(ctl, t + 1, wait_ms))
                        return 1;
                fprintf(stderr, "zclient: no poller took them, the loop did\n");
        }
        /* The journal is the daemon's crash record, in our memory: what
         * we write there must not change what runs. */
        for (unsigned i = 1; journal && i <= n; i++)
                __atomic_store_n(&jr[HA_ZONE_ENTRIES - 1 - i].service, 66, __ATOMIC_RELAXED);
        printf("taken\n");
        fflush(stdout);
        if (!journal)
                for (;;)
                        pause();
        for (unsigned i = 1; i <= n; i++) {
                const HaMsg *m = &q->entries[HA_ZONE_ENTRIES - 1 - i].msg;
                uint8_t expect[1024];
                int64_t end = ha_mono_ms() + wait_ms;

                while (!(__atomic_load_n(&m->flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE))
                        if (ha_mono_ms() > end)
                                return 1;
                        else
                                sched_yield();
                memset(expect, 'a' + (int)(i % 26), chunk);
                ha_service_run(1, expect, chunk);
                if (m->flag != ha_flag_make(HA_RESULT_SUCCESS) ||
                    memcmp(pool + base + i * chunk, expect, chunk) != 0)
                        wrong++;
        }
        printf("journal: %u ran as submitted, %u did not\n", n - wrong, wrong);
        return wrong ? 1 : 0;
}

/*
 * The lease is ours to scribble on: reach behind the library.  A fresh
 * lease's first buffer sits at the pool's start, and the slot's fixed
 * layout (zone.h) says where the control and queue pages are.
 */
static int hostile(const char *mode)
{
        uint8_t in[16] = "still served?", expect[16];
        hyperamp_req_t *r;
        ZoneCtl *ctl;
        HaMsgQueue *q;
        uint16_t idx = HA_ZONE_ENTRIES - 1;     /* the library hands it out last */
        uint32_t t;
        int e;

        if (hyperamp_alloc(h, 16, &r) < 0)
                return 1;
        ctl = (ZoneCtl *)((uint8_t *)hyperamp_req_data(r) - HA_ZONE_POOL_OFF + HA_ZONE_CTL_OFF);
        q = (HaMsgQueue *)((uint8_t *)hyperamp_req_data(r) - HA_ZONE_POOL_OFF + HA_ZONE_QUEUE_OFF);
        if (ctl->magic != HA_ZONE_CTL_MAGIC) {
                fprintf(stderr, "zclient: cannot find the control page\n");
                return 1;
        }
        t = ctl->sq_tail;
        if (strcmp(mode, "index") == 0) {
                ctl->sq[t & (HA_ZONE_RING - 1)] = 40000;
                __atomic_store_n(&ctl->sq_tail, t + 1, __ATOMIC_SEQ_CST);
        } else if (strcmp(mode, "tail") == 0) {
                __atomic_store_n(&ctl->sq_tail, t + 100000, __ATOMIC_SEQ_CST);
        } else if (strcmp(mode, "range") == 0 || strcmp(mode, "zero") == 0) {
                q->entries[idx].msg.service_id = 66;
                q->entries[idx].msg.offset = strcmp(mode, "range") == 0 ? 0xfffffff0u : 0;
                q->entries[idx].msg.length = strcmp(mode, "zero") == 0 ? 0 : 64;
                ctl->sq[t & (HA_ZONE_RING - 1)] = idx;
                __atomic_store_n(&ctl->sq_tail, t + 1, __ATOMIC_SEQ_CST);
        } else if (strcmp(mode, "flood") == 0) {
                /* Zero-length entries, resubmitted as fast as they come
                 * back, for a second: the daemon must neither abort nor let
                 * this client starve the others. */
                int64_t end = ha_mono_ms() + 1000;
                uint32_t tt = t;
                while (ha_mono_ms() < end) {
                        for (uint16_t i = 0; i < 200; i++) {
                                q->entries[i].msg.length = 0;
                                ctl->sq[tt & (HA_ZONE_RING - 1)] = i;
                                __atomic_store_n(&ctl->sq_tail, ++tt, __ATOMIC_SEQ_CST);
                                while (tt - __atomic_load_n(&ctl->sq_head, __ATOMIC_ACQUIRE) > 200 &&
                                       ha_mono_ms() < end)
                                        sched_yield();
                        }
                }
                printf("hostile %s: done\n", mode);
                return 0;
        } else if (strcmp(mode, "fdblock") == 0) {
                /* Make our end of the completion channel blocking, never
                 * read it, and arm it for many completions, for at least a
                 * second so it overlaps the honest client however fast the
                 * machine: the daemon's workers must not block on it. */
                int fd = hyperamp_fd(h);
                int64_t end = ha_mono_ms() + 1000;

                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                for (int i = 0; i < 5000 || ha_mono_ms() < end; i++) {
                        hyperamp_arm(h);
                        memcpy(hyperamp_req_data(r), in, sizeof(in));
                        if (hyperamp_submit(r, 66, sizeof(in)) < 0 || hyperamp_wait(r, wait_ms) < 0) {
                                fprintf(stderr, "zclient: fdblock request %d failed\n", i);
                                return 1;
                        }
                }
                printf("hostile %s: done\n", mode);
                return 0;
        } else if (strcmp(mode, "twice") == 0) {
                /* the same entry twice in one batch, on a service that holds it */
                q->entries[idx].msg.service_id = 66;
                q->entries[idx].msg.offset = 0;
                q->entries[idx].msg.length = 8;
                ctl->sq[t & (HA_ZONE_RING - 1)] = idx;
                ctl->sq[(t + 1) & (HA_ZONE_RING - 1)] = idx;
                __atomic_store_n(&ctl->sq_tail, t + 2, __ATOMIC_SEQ_CST);
        } else {
                fprintf(stderr, "zclient: unknown hostile mode %s\n", mode);
                return 2;
        }
        if (strcmp(mode, "tail") == 0) {
                /* Our own ring is garbage now: what was on it is lost to us,
                 * by our own doing.  Ring once so the daemon looks. */
                hyperamp_submit(r, 1, sizeof(in));
                (void)hyperamp_wait(r, 200);
                printf("hostile %s: done\n", mode);
                return 0;
        }
        /* Now an honest request, which also rings the doorbell. */
        memcpy(hyperamp_req_data(r), in, sizeof(in));
        memcpy(expect, in, sizeof(in));
        ha_service_run(1, expect, sizeof(expect));
        e = hyperamp_submit(r, 1, sizeof(in));
        if (e == 0)
                e = hyperamp_wait(r, wait_ms);
        if (e != HYPERAMP_SUCCESS || memcmp(hyperamp_req_data(r), expect, sizeof(expect))) {
                fprintf(stderr, "zclient: honest request after '%s' failed (%d)\n", mode, e);
                return 1;
        }
        hyperamp_release(r);
        printf("hostile %s: honest request served\n", mode);
        return 0;
}

static int one(uint16_t svc, const char *text)
{
        size_t len = strlen(text);
        hyperamp_req_t *r;
        int e;

        e = hyperamp_alloc(h, len, &r);
        if (e < 0)
                return 1;
        memcpy(hyperamp_req_data(r), text, len);
        e = hyperamp_submit(r, svc, len);
        printf("submitted\n");
        fflush(stdout);
        if (e == 0)
                e = hyperamp_wait(r, wait_ms);
        printf("result=%d data=", e);
        for (size_t i = 0; e == HYPERAMP_SUCCESS && i < len; i++)
                printf("%02x", ((const uint8_t *)hyperamp_req_data(r))[i]);
        printf("\n");
        hyperamp_release(r);
        return e < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
        int e;

        if (argc < 3) {
                fprintf(stderr, "usage: zclient SOCKET race THREADS REQUESTS [pace] | hold N | hostile MODE\n");
                return 2;
        }
        sock = argv[1];
        if (getenv("ZCLIENT_WAIT_MS"))
                wait_ms = atoi(getenv("ZCLIENT_WAIT_MS"));
        e = hyperamp_attach(sock, &h);
        if (e < 0) {
                fprintf(stderr, "zclient: attach: %s\n", strerror(-e));
                return 3;
        }
        if (strcmp(argv[2], "race") == 0 &&
            (argc == 5 || (argc == 6 && strcmp(argv[5], "pace") == 0)))
                e = race((unsigned)atoi(argv[3]) > 64 ? 64 : (unsigned)atoi(argv[3]),
                         (unsigned)atoi(argv[4]), argc == 6);
        else if (strcmp(argv[2], "fd") == 0 && argc == 4)
                e = via_fd((unsigned)atoi(argv[3]));
        else if (strcmp(argv[2], "hold") == 0 && argc == 4)
                e = hold((unsigned)atoi(argv[3]));
        else if (strcmp(argv[2], "pollhold") == 0 && argc == 4)
                e = pollhold((unsigned)atoi(argv[3]), false);
        else if (strcmp(argv[2], "pollhold-journal") == 0 && argc == 4)
                e = pollhold((unsigned)atoi(argv[3]), true);
        else if (strcmp(argv[2], "hostile") == 0 && argc == 4)
                e = hostile(argv[3]);
        else if (strcmp(argv[2], "one") == 0 && argc == 5)
                e = one((uint16_t)atoi(argv[3]), argv[4]);
        else if (strcmp(argv[2], "resume-waits") == 0 && argc == 3)
                e = resume_waits();
        else {
                fprintf(stderr, "zclient: bad arguments\n");
                e = 2;
        }
        hyperamp_detach(h);
        return e;
}
