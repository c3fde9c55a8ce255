/* SPDX-License-Identifier: MIT */
/*
 * v1client: a HyperAMP v1 *client* (the root-zone side) written from the
 * protocol description (reference §1.5), to drive hyperampd's v1 channel in
 * tests the way an unmodified original client would, and to misbehave on
 * purpose.  It maps the same file at the same offsets as the daemon.  A test
 * tool: waits are bounded back-off polls.
 *
 *   v1client --shm-config F --mem F --doorbell FIFO [options] COMMAND ...
 *
 * Commands:
 *   send SERVICE TEXT      one request (TEXT + NUL, as the original sends);
 *                          prints "result=NAME flag=0xNNNN data=HEX"
 *   seq N                  N sequential requests over services 1, 2, 66, checked
 *   batch K                K requests on the wait list, then one notify, checked
 *   backtoback N           N sequential requests as the original client sends
 *                          them: after each answer, the next request is
 *                          prepared and the mark looked at once, where the
 *                          original (2fc7047) would sleep 5 s on BUSY;
 *                          prints "busy=B" (how often that look saw BUSY)
 *   rounds R K             R batches of K, each entry checked and released as
 *                          soon as it is done (as the original does); prints
 *                          progress to stdout; survives service restarts.
 *                          With --pace, each batch waits for a byte on stdin
 *                          (EOF: no more waiting), so a test can pick the
 *                          moment
 *   hostile MODE           bad-head, bad-link, cycle, self-cycle, bad-range,
 *                          wrap-range, zero-length, bad-flag (see usage)
 *   dump                   the queue header and ready mark as JSON
 * Exit status 0 when every result was as expected.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "devmem.h"
#include "hvcfg.h"
#include "hyperamp/wire.h"
#include "queue.h"

static const uint8_t xor_key[16] = {
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
        0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
};

typedef struct Client {
        HaHvConfig hv;
        uint64_t base;
        int mem_fd, bell_fd;
        volatile uint8_t *buf;
        HaMsgQueue *q;
        uint32_t *ready;
        uint16_t n;             /* buf_size */
        uint64_t area, area_end, bump;
        int timeout_ms;
        bool pace;              /* rounds: one batch per byte on stdin */
} Client;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fputs("v1client: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

/* Bounded wait: a few yields, then poll() sleeps growing to 10 ms. */
static bool wait_for(Client *c, bool (*cond)(Client *, void *), void *arg)
{
        int64_t deadline = ha_mono_ms() + (int64_t)c->timeout_ms;
        int delay = 1;

        for (unsigned spins = 0; !cond(c, arg); spins++) {
                if (ha_mono_ms() >= deadline)
                        return false;
                if (spins < 200) {
                        sched_yield();
                        continue;
                }
                (void)poll(NULL, 0, delay);
                delay = delay < 10 ? delay * 2 : 10;
        }
        return true;
}

static void *map_at(Client *c, uint64_t addr, uint64_t len)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off = addr - c->base;
        uint64_t aligned = off & ~(page - 1);
        uint8_t *p;

        if (addr < c->base)
                die("address 0x%llx below base", (unsigned long long)addr);
        p = mmap(NULL, off - aligned + len, PROT_READ | PROT_WRITE, MAP_SHARED, c->mem_fd,
                 (off_t)aligned);
        if (p == MAP_FAILED)
                die("mmap 0x%llx: %s", (unsigned long long)addr, strerror(errno));
        return p + (off - aligned);
}

static uint32_t mark(Client *c)
{
        return __atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE);
}

static void set_mark(Client *c, uint32_t m)
{
        __atomic_store_n(&c->q->working_mark, m, __ATOMIC_RELEASE);
}

static HaMsgEntry *entry(Client *c, uint16_t idx)
{
        return &c->q->entries[idx];
}

/* Format the queue as the original client's init does: all entries on the
 * free list; working_mark is left alone. */
static void init_queue(Client *c, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                HaMsgEntry *e = entry(c, (uint16_t)i);
                memset((void *)&e->msg, 0, sizeof(e->msg));
                e->cur_idx = (uint16_t)i;
                e->nxt_idx = (uint16_t)(i + 1);
        }
        c->q->buf_size = (uint16_t)n;
        c->q->empty_h = 0;
        c->q->wait_h = (uint16_t)n;
        /* The last field with release: the formatted queue is published. */
        __atomic_store_n(&c->q->proc_ing_h, (uint16_t)n, __ATOMIC_RELEASE);
}

/* ===== the three list primitives of the original (head insertion) ===== */

static uint16_t pop(Client *c, uint16_t *head)
{
        uint16_t idx = ha_ld16(head);

        if (idx >= c->n)
                return c->n;
        ha_st16(head, ha_ld16(&entry(c, idx)->nxt_idx));
        ha_st16(&entry(c, idx)->nxt_idx, c->n);
        return idx;
}

static void push(Client *c, uint16_t *head, uint16_t idx)
{
        ha_st16(&entry(c, idx)->nxt_idx, ha_ld16(head));
        ha_st16(head, idx);
}

/* ===== one request ===== */

static bool is_idle(Client *c, void *arg)
{
        (void)arg;
        return mark(c) == HA_MARK_IDLE;
}

static bool is_done(Client *c, void *arg)
{
        uint16_t idx = *(uint16_t *)arg;
        return __atomic_load_n(&entry(c, idx)->msg.flag, __ATOMIC_ACQUIRE) & HA_FLAG_DEAL_STATE;
}

static uint32_t put_payload(Client *c, const uint8_t *data, size_t len)
{
        uint64_t off;

        if (len > c->area_end - c->area)
                die("payload of %zu bytes does not fit the area", len);
        if (len > c->area_end - c->bump)
                c->bump = c->area;      /* sequential use: the oldest is done */
        off = c->bump;
        c->bump += (len + 3) & ~(size_t)3;
        ha_devmem_write(c->buf + off, data, len);
        return (uint32_t)off;
}

/* empty_msg_get + fill: an entry with service, payload (text + NUL). */
static uint16_t new_request(Client *c, uint16_t service, const uint8_t *text, size_t tlen)
{
        uint16_t idx = pop(c, &c->q->empty_h);
        HaMsgEntry *e;
        uint8_t *tmp;

        if (idx >= c->n)
                die("no free entry (empty_h %u)", ha_ld16(&c->q->empty_h));
        e = entry(c, idx);
        tmp = malloc(tlen + 1);
        if (!tmp)
                die("out of memory");
        memcpy(tmp, text, tlen);
        tmp[tlen] = 0;
        ha_st16(&e->msg.flag, 0);
        ha_st16(&e->msg.service_id, service);
        ha_st32(&e->msg.offset, put_payload(c, tmp, tlen + 1));
        ha_st32(&e->msg.length, (uint32_t)(tlen + 1));
        free(tmp);
        return idx;
}

static void ring(Client *c)
{
        ssize_t k;

        do
                k = write(c->bell_fd, "!", 1);
        while (k < 0 && errno == EINTR);
        /* A full FIFO already holds a wake-up; with no reader the service
         * is not running, and it looks at the queue when it starts. */
        if (k < 0 && errno != EAGAIN && errno != EPIPE)
                die("doorbell: %s", strerror(errno));
}

/* msg_notify: wait for IDLE, hand wait -> proc_ing, BUSY, doorbell. */
static void notify(Client *c)
{
        if (!wait_for(c, is_idle, NULL))
                die("timed out waiting for IDLE (mark 0x%08x)", mark(c));
        ha_st16(&c->q->proc_ing_h, ha_ld16(&c->q->wait_h));
        ha_st16(&c->q->wait_h, c->n);
        set_mark(c, HA_MARK_BUSY);
        ring(c);
}

static uint16_t wait_done(Client *c, uint16_t idx)
{
        if (!wait_for(c, is_done, &idx))
                die("timed out waiting for entry %u (flag 0x%04x)", idx,
                    ha_ld16(&entry(c, idx)->msg.flag));
        return __atomic_load_n(&entry(c, idx)->msg.flag, __ATOMIC_ACQUIRE);
}

/* empty_msg_put */
static void release(Client *c, uint16_t idx)
{
        HaMsgEntry *e = entry(c, idx);

        ha_st16(&e->msg.flag, 0);
        ha_st32(&e->msg.length, 0);
        push(c, &c->q->empty_h, idx);
}

static const char *result_name(unsigned r)
{
        static const char *const names[] = { "NONE", "SUCCESS", "FAIL", "NOT_EXITS" };
        return names[r & 3];
}

static void expected(uint16_t service, const uint8_t *in, size_t len, uint8_t *out)
{
        for (size_t i = 0; i < len; i++)
                out[i] = (service == 1 || service == 2) ? in[i] ^ xor_key[i & 15] ^ 0x55 : in[i];
}

/* Check a finished request: result, transformed bytes, NUL untouched. */
static bool verify(Client *c, uint16_t idx, uint16_t flag, uint16_t service,
                   const uint8_t *text, size_t tlen)
{
        const HaMsgEntry *e = entry(c, idx);
        uint32_t off = ha_ld32(&e->msg.offset);
        uint8_t *got = malloc(tlen + 1), *want = malloc(tlen + 1);
        bool ok;

        if (!got || !want)
                die("out of memory");
        ha_devmem_read(got, c->buf + off, tlen + 1);
        expected(service, text, tlen, want);
        want[tlen] = 0;
        ok = flag == ha_flag_make(HA_RESULT_SUCCESS) && memcmp(got, want, tlen + 1) == 0;
        if (!ok)
                fprintf(stderr, "v1client: entry %u service %u (%zu bytes): flag 0x%04x, "
                        "data %s\n", idx, service, tlen, flag,
                        memcmp(got, want, tlen + 1) ? "wrong" : "right");
        free(got);
        free(want);
        return ok;
}

/* ===== commands ===== */

static int cmd_send(Client *c, uint16_t service, const char *text)
{
        size_t tlen = strlen(text);
        uint16_t idx, flag;
        uint8_t *got;
        uint32_t off;

        idx = new_request(c, service, (const uint8_t *)text, tlen);
        push(c, &c->q->wait_h, idx);
        notify(c);
        flag = wait_done(c, idx);
        off = ha_ld32(&entry(c, idx)->msg.offset);
        got = malloc(tlen + 1);
        if (!got)
                die("out of memory");
        ha_devmem_read(got, c->buf + off, tlen + 1);
        printf("result=%s flag=0x%04x data=", result_name(ha_flag_result(flag)), flag);
        for (size_t i = 0; i < tlen; i++)
                printf("%02x", got[i]);
        printf(" nul=%s\n", got[tlen] == 0 ? "kept" : "clobbered");
        free(got);
        release(c, idx);
        return 0;
}

static size_t make_text(unsigned i, uint8_t *buf, size_t max)
{
        /* Mostly short strings; now and then one past the 4 KiB bounce. */
        size_t len = i % 97 == 5 ? 5000 + i % 7 : 1 + (i * 37) % 300;

        if (len > max)
                len = max;
        for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)('!' + (i * 7 + j * 13) % 90);   /* printable, no NUL */
        return len;
}

static const uint16_t seq_services[] = { 1, 2, 66 };

static int cmd_seq(Client *c, unsigned count)
{
        static uint8_t text[8192];
        unsigned bad = 0;

        for (unsigned i = 0; i < count; i++) {
                uint16_t svc = seq_services[i % 3], idx, flag;
                size_t tlen = make_text(i, text, sizeof(text));

                idx = new_request(c, svc, text, tlen);
                push(c, &c->q->wait_h, idx);
                notify(c);
                flag = wait_done(c, idx);
                if (!verify(c, idx, flag, svc, text, tlen))
                        bad++;
                release(c, idx);
        }
        printf("seq %u: %u ok, %u bad\n", count, count - bad, bad);
        return bad ? 1 : 0;
}

/*
 * The original's msg_send_and_notify looks at the mark once before it
 * sleeps 5 s: count how often that look, made right after the previous
 * answer, finds the queue still BUSY.  Between the two the client does
 * what the original does: check the result, put the entry back, take the
 * next one and fill it.  Then it waits (bounded) as notify() does.
 */
static int cmd_backtoback(Client *c, unsigned count)
{
        static uint8_t text[64];
        unsigned bad = 0, busy = 0;
        uint16_t idx, flag, svc = seq_services[0];
        size_t tlen = make_text(0, text, sizeof(text));

        idx = new_request(c, svc, text, tlen);
        for (unsigned i = 0; i < count; i++) {
                push(c, &c->q->wait_h, idx);
                if (i > 0 && mark(c) == HA_MARK_BUSY)
                        busy++;
                notify(c);
                flag = wait_done(c, idx);
                if (!verify(c, idx, flag, svc, text, tlen))
                        bad++;
                release(c, idx);
                svc = seq_services[(i + 1) % 3];
                tlen = make_text(i + 1, text, sizeof(text));
                idx = new_request(c, svc, text, tlen);
        }
        release(c, idx);
        printf("backtoback %u: %u ok, %u bad, busy=%u\n", count, count - bad, bad, busy);
        return bad ? 1 : 0;
}

static int cmd_batch(Client *c, unsigned k)
{
        static uint8_t texts[256][64];
        size_t lens[256];
        uint16_t idx[256];
        unsigned bad = 0;

        if (k == 0 || k > 256 || k > c->n)
                die("batch size must be 1..min(256, buf_size)");
        for (unsigned i = 0; i < k; i++) {
                lens[i] = make_text(i + 1, texts[i], sizeof(texts[i]));
                idx[i] = new_request(c, seq_services[i % 3], texts[i], lens[i]);
                push(c, &c->q->wait_h, idx[i]);         /* msg_send: no notify yet */
        }
        notify(c);                                      /* one doorbell for all */
        for (unsigned i = 0; i < k; i++) {
                uint16_t flag = wait_done(c, idx[i]);
                if (!verify(c, idx[i], flag, seq_services[i % 3], texts[i], lens[i]))
                        bad++;
        }
        if (!wait_for(c, is_idle, NULL))
                die("batch done but the queue never went IDLE");
        for (unsigned i = 0; i < k; i++)
                release(c, idx[i]);
        printf("batch %u: %u ok, %u bad\n", k, k - bad, bad);
        return bad ? 1 : 0;
}

static int cmd_rounds(Client *c, unsigned rounds, unsigned k)
{
        static uint8_t texts[256][8192];
        size_t lens[256];
        uint16_t idx[256], svc[256];
        unsigned bad = 0, seen = 0;

        if (k == 0 || k > 256 || k > c->n)
                die("batch size must be 1..min(256, buf_size)");
        for (unsigned r = 0; r < rounds; r++) {
                char go;

                if (c->pace && read(STDIN_FILENO, &go, 1) != 1)
                        c->pace = false;
                for (unsigned i = 0; i < k; i++) {
                        unsigned seed = r * k + i;

                        svc[i] = seq_services[seed % 3];
                        lens[i] = make_text(seed, texts[i], sizeof(texts[i]));
                        idx[i] = new_request(c, svc[i], texts[i], lens[i]);
                        push(c, &c->q->wait_h, idx[i]);
                }
                notify(c);
                for (unsigned i = 0; i < k; i++) {
                        uint16_t flag = wait_done(c, idx[i]);

                        if (!verify(c, idx[i], flag, svc[i], texts[i], lens[i]))
                                bad++;
                        release(c, idx[i]);     /* reusable at once, mid-batch */
                        seen++;
                }
                printf("progress %u\n", seen);
                fflush(stdout);
        }
        printf("rounds %u x %u: %u ok, %u bad\n", rounds, k, seen - bad, bad);
        return bad ? 1 : 0;
}

/* Expect one entry to come back FAIL, with a clean flag word. */
static int expect_fail(Client *c, uint16_t idx, const char *what)
{
        uint16_t flag = wait_done(c, idx);

        printf("%s: result=%s flag=0x%04x\n", what, result_name(ha_flag_result(flag)), flag);
        release(c, idx);
        return flag == ha_flag_make(HA_RESULT_FAIL) ? 0 : 1;
}

static int cmd_hostile(Client *c, const char *mode)
{
        static const uint8_t hello[] = "hello";
        uint16_t a, b;
        int r = 0;

        if (!wait_for(c, is_idle, NULL))
                die("timed out waiting for IDLE");
        if (strcmp(mode, "bad-head") == 0) {
                /* proc_ing_h itself out of range; no entry involved. */
                ha_st16(&c->q->proc_ing_h, 0xfff0);
                set_mark(c, HA_MARK_BUSY);
                ring(c);
        } else if (strcmp(mode, "bad-link") == 0 || strcmp(mode, "cycle") == 0 ||
                   strcmp(mode, "self-cycle") == 0) {
                /* Real requests whose links go wrong: each one taken before
                 * the bad link is still served. */
                a = new_request(c, 1, hello, 5);
                push(c, &c->q->wait_h, a);
                b = c->n;
                if (strcmp(mode, "cycle") == 0) {
                        b = new_request(c, 1, hello, 5);
                        push(c, &c->q->wait_h, b);      /* b -> a */
                        ha_st16(&entry(c, a)->nxt_idx, b);      /* a -> b */
                } else
                        ha_st16(&entry(c, a)->nxt_idx, strcmp(mode, "bad-link") == 0 ?
                                0xfff0 : a);
                notify(c);
                if (!verify(c, a, wait_done(c, a), 1, hello, 5))
                        r = 1;
                if (b != c->n && !verify(c, b, wait_done(c, b), 1, hello, 5))
                        r = 1;
                if (!wait_for(c, is_idle, NULL))
                        die("never went IDLE after %s", mode);
                release(c, a);
                if (b != c->n)
                        release(c, b);
                printf("%s: served\n", mode);
                return r;
        } else {
                a = new_request(c, 1, hello, 5);
                if (strcmp(mode, "bad-range") == 0) {
                        ha_st32(&entry(c, a)->msg.offset, (uint32_t)c->hv.buf_size - 2);
                        ha_st32(&entry(c, a)->msg.length, 16);
                } else if (strcmp(mode, "wrap-range") == 0) {
                        ha_st32(&entry(c, a)->msg.offset, 0xfffffff0u);
                        ha_st32(&entry(c, a)->msg.length, 0x20);
                } else if (strcmp(mode, "zero-length") == 0) {
                        ha_st32(&entry(c, a)->msg.length, 0);
                } else if (strcmp(mode, "bad-flag") == 0) {
                        ha_st16(&entry(c, a)->msg.flag, 0x8000);
                } else
                        die("unknown hostile mode '%s'", mode);
                push(c, &c->q->wait_h, a);
                notify(c);
                r = expect_fail(c, a, mode);
        }
        if (!wait_for(c, is_idle, NULL))
                die("never went IDLE after %s", mode);
        if (ha_ld16(&c->q->proc_ing_h) != c->n) {
                fprintf(stderr, "v1client: proc_ing_h %u after %s\n",
                        ha_ld16(&c->q->proc_ing_h), mode);
                r = 1;
        }
        printf("%s: idle\n", mode);
        return r;
}

static int cmd_dump(Client *c)
{
        printf("{\"working_mark\": %u, \"buf_size\": %u, \"empty_h\": %u, \"wait_h\": %u, "
               "\"proc_ing_h\": %u, \"ready\": %u}\n", mark(c), ha_ld16(&c->q->buf_size),
               ha_ld16(&c->q->empty_h), ha_ld16(&c->q->wait_h), ha_ld16(&c->q->proc_ing_h),
               __atomic_load_n(c->ready, __ATOMIC_ACQUIRE));
        return 0;
}

static bool is_ready(Client *c, void *arg)
{
        uint32_t m = __atomic_load_n(c->ready, __ATOMIC_ACQUIRE);
        (void)arg;
        return m == HA_MARK_INITIALIZED || m == HA_MARK_IDLE;
}

static void usage(void)
{
        fputs("usage: v1client --shm-config FILE --mem FILE --doorbell FIFO [--base HEX]\n"
              "                [--init=N | --no-init] [--area OFF:LEN] [--timeout-ms MS]\n"
              "                [--no-ready] [--pace] COMMAND ...\n"
              "  send SERVICE TEXT | seq N | backtoback N | batch K | rounds R K | dump\n"
              "  hostile bad-head|bad-link|cycle|self-cycle|bad-range|wrap-range|"
              "zero-length|bad-flag\n", stderr);
        exit(2);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "shm-config", required_argument, NULL, 'c' },
                { "mem", required_argument, NULL, 'm' },
                { "doorbell", required_argument, NULL, 'd' },
                { "base", required_argument, NULL, 'b' },
                { "init", optional_argument, NULL, 'i' },
                { "no-init", no_argument, NULL, 'I' },
                { "area", required_argument, NULL, 'a' },
                { "timeout-ms", required_argument, NULL, 't' },
                { "no-ready", no_argument, NULL, 'R' },
                { "pace", no_argument, NULL, 'P' },
                {}
        };
        const char *cfg = NULL, *mem = NULL, *bell = NULL, *area = NULL;
        Client c = { .timeout_ms = 10000 };
        bool init = true, wait_ready = true;
        unsigned init_n = 0;
        char err[512];
        int o;

        while ((o = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (o) {
                case 'c': cfg = optarg; break;
                case 'm': mem = optarg; break;
                case 'd': bell = optarg; break;
                case 'b':
                        if (ha_hvcfg_parse_hex(optarg, &c.base) < 0)
                                die("--base: not hex");
                        break;
                case 'i': init = true; init_n = optarg ? (unsigned)atoi(optarg) : 0; break;
                case 'I': init = false; break;
                case 'a': area = optarg; break;
                case 't': c.timeout_ms = atoi(optarg); break;
                case 'R': wait_ready = false; break;
                case 'P': c.pace = true; break;
                default: usage();
                }
        }
        if (!cfg || !mem || !bell || optind >= argc)
                usage();
        if (ha_hvcfg_load(cfg, &c.hv, err, sizeof(err)) < 0)
                die("%s", err);

        c.mem_fd = open(mem, O_RDWR | O_SYNC | O_CLOEXEC);
        if (c.mem_fd < 0)
                die("%s: %s", mem, strerror(errno));
        c.buf = map_at(&c, c.hv.buf_addr, c.hv.buf_size);
        c.q = map_at(&c, c.hv.queue_addr, c.hv.queue_size);
        c.ready = map_at(&c, c.hv.ready_addr, 4);
        c.area = 0;
        c.area_end = c.hv.buf_size;
        if (area) {
                unsigned long long off, len;
                if (sscanf(area, "%lli:%lli", &off, &len) != 2 || off + len > c.hv.buf_size)
                        die("--area OFF:LEN inside the buf region");
                c.area = off;
                c.area_end = off + len;
        }
        c.bump = c.area;

        if (strcmp(argv[optind], "dump") == 0)
                return cmd_dump(&c);

        /* The doorbell: the daemon holds the FIFO open for reading; while
         * it is down a ring is EPIPE, not a reason to die. */
        (void)signal(SIGPIPE, SIG_IGN);
        c.bell_fd = open(bell, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (c.bell_fd < 0)
                die("doorbell %s: %s", bell, strerror(errno));
        if (init) {
                unsigned fit = (unsigned)((c.hv.queue_size - 12) / 16);
                if (fit > HA_QUEUE_MAX_ENTRIES)
                        fit = HA_QUEUE_MAX_ENTRIES;
                init_queue(&c, init_n && init_n < fit ? init_n : fit);
        }
        c.n = ha_ld16(&c.q->buf_size);
        if (c.n == 0)
                die("the queue is not formatted (buf_size 0)");
        /* Unlike the original (10 s, then on regardless), fail on no ready mark. */
        if (wait_ready && !wait_for(&c, is_ready, NULL))
                die("no ready mark from the service (0x%08x)", *c.ready);
        if (init)
                set_mark(&c, HA_MARK_IDLE);

        if (strcmp(argv[optind], "send") == 0 && argc - optind == 3) {
                int svc = atoi(argv[optind + 1]);
                if (svc < 0 || svc > 0xffff)
                        die("bad service");
                return cmd_send(&c, (uint16_t)svc, argv[optind + 2]);
        }
        if (strcmp(argv[optind], "seq") == 0 && argc - optind == 2)
                return cmd_seq(&c, (unsigned)atoi(argv[optind + 1]));
        if (strcmp(argv[optind], "backtoback") == 0 && argc - optind == 2)
                return cmd_backtoback(&c, (unsigned)atoi(argv[optind + 1]));
        if (strcmp(argv[optind], "rounds") == 0 && argc - optind == 3)
                return cmd_rounds(&c, (unsigned)atoi(argv[optind + 1]),
                                  (unsigned)atoi(argv[optind + 2]));
        if (strcmp(argv[optind], "batch") == 0 && argc - optind == 2)
                return cmd_batch(&c, (unsigned)atoi(argv[optind + 1]));
        if (strcmp(argv[optind], "hostile") == 0 && argc - optind == 2)
                return cmd_hostile(&c, argv[optind + 1]);
        usage();
}
