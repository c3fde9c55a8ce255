/* SPDX-License-Identifier: MIT */
/*
 * v1peer: a simulated HyperAMP v1 *service* zone (the far end of the root
 * queue), written from the protocol description, for testing the root-zone
 * side: hyperampd's v1 gateway and bench/raw-v1.  A regular file stands in
 * for /dev/mem (file offset = physical address - base, the regions from a
 * shm_config.json) and a FIFO for the doorbell (one byte per ring).
 *
 *   v1peer --profile P --shm-config F --mem F [--base HEX] [--doorbell FIFO]
 *          [--spin] [--hold-ms N] [--restart-at N] [--gate FIFO] [-v]
 *
 * Good profiles behave as the peers do (tests/peers/README.md):
 *   linux        one head per doorbell, IDLE after each, deal_state then
 *                result in two writes, "Test\0" written at buf offset 0 at
 *                start, the 16-byte-key cipher over length - 1 bytes
 *   freertos-a   re-formats the root queue at start (buf_size 16, heads 0)
 *                and clears buf[0..63]; per doorbell, serves entries while
 *                the one at proc_ing_h is valid; XOR 0x5A, a trailing NUL
 *                left alone
 *   freertos-b   as freertos-a, one entry per doorbell, no start-up writes
 *                to the root queue
 *   sel4         polls (no doorbell), reads offset 12 as nxt_idx (its entry
 *                has no cur_idx), XOR 0x5A over the full length, after 32
 *                empty polls proc_ing_h = 0 and IDLE; re-formats the root
 *                queue at start as freertos-a
 * Faulty ones (linux behaviour, except restart: freertos-a behaviour):
 *   mute          marks itself ready, reads doorbells, never answers
 *   twice         on every doorbell first answers the entry it answered last
 *                 time again (its flag word), then the new head
 *   result-first  writes service_result, then deal_state
 *   idle-early    advances proc_ing_h and sets IDLE, then serves the entry
 *   restart       at the Nth request (--restart-at, default 1) drops it and
 *                 starts again: ready mark cleared, root queue re-formatted,
 *                 ready mark written again; then serves normally
 *   scribble      answers, and writes junk over empty_h, wait_h and the
 *                 entry's cur_idx/nxt_idx before IDLE
 * --hold-ms N: result-first and idle-early keep their half-written state
 * until the next doorbell byte or N ms (default 0: no hold), so a client
 * can see the fault.
 * --gate FIFO (linux profile): each entry waits, once taken, until a byte
 * arrives on FIFO (created if missing), after one line on stdout
 *   v1peer: holding entry=K service=S
 * and once answered, another:
 *   v1peer: answered entry=K served=S
 * so a test decides when the peer answers, with no clock.
 *
 * Ready: the ready page gets 0xEEEEEEEE last (RTOS profiles: also buf_size
 * 16 and heads 0 there), then one line on stdout:
 *   v1peer: ready profile=NAME pid=PID
 * SIGTERM or SIGINT: exits 0 after one summary line on stdout:
 *   v1peer: exit profile=NAME doorbells=D served=S failed=F polls=P
 * Waits block on the FIFO (or poll it without blocking with --spin); the
 * polling profile backs off on a timerfd (src/core/backoff.h), or spins
 * with --spin.  Every value read from the mapping is bounds-checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "cpu.h"
#include "devmem.h"
#include "queue.h"
#include "v1sim.h"

enum style { LINUX, RTOS, SEL4 };
enum fault { NONE, MUTE, TWICE, RESULT_FIRST, IDLE_EARLY, RESTART, SCRIBBLE };

typedef struct Profile {
        const char *name;
        enum style style;
        bool loops;             /* serves while the head is valid */
        bool reformats;         /* re-formats the root queue at start */
        bool polls;             /* no doorbell */
        enum fault fault;
} Profile;

static const Profile profiles[] = {
        { "linux", LINUX, false, false, false, NONE },
        { "freertos-a", RTOS, true, true, false, NONE },
        { "freertos-b", RTOS, false, false, false, NONE },
        { "sel4", SEL4, false, true, true, NONE },
        { "mute", LINUX, false, false, false, MUTE },
        { "twice", LINUX, false, false, false, TWICE },
        { "result-first", LINUX, false, false, false, RESULT_FIRST },
        { "idle-early", LINUX, false, false, false, IDLE_EARLY },
        { "restart", RTOS, true, true, false, RESTART },
        { "scribble", LINUX, false, false, false, SCRIBBLE },
};

/* seL4 resets its cursor after this many polls that found nothing. */
#define SEL4_EMPTY_POLLS 32
/* The polling profile's back-off: spin this long, then timer steps up to
 * the cap (the peer is idle most of the time in tests). */
#define POLL_SPIN_NS 50000u
#define POLL_STEP_NS 1000000u

typedef struct Peer {
        const Profile *p;
        V1Map m;
        int bell_fd;
        int gate_fd;            /* --gate, -1: none */
        bool spin, verbose;
        unsigned hold_ms;
        unsigned restart_at;
        bool restarted;
        int last_head;          /* twice: the entry answered last, -1: none */
        unsigned empty_polls;   /* sel4 */
        sigset_t waitmask;      /* signals unblocked while blocked on the FIFO */
        struct {
                uint64_t doorbells, served, failed, polls, spurious;
        } st;
} Peer;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
        (void)sig;
        stop = 1;
}

static void note(Peer *pr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(Peer *pr, const char *fmt, ...)
{
        va_list ap;

        if (!pr->verbose)
                return;
        va_start(ap, fmt);
        fputs("v1peer: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

static void set_mark(uint32_t *w, uint32_t v)
{
        __atomic_store_n(w, v, __ATOMIC_RELEASE);
}

/* ===== doorbell ===== */

/* Read what is in the FIFO: rings since the last look, coalesced as shm.ko's
 * poll() does.  true if there was at least one. */
static bool bell_drain(Peer *pr)
{
        uint8_t b[64];
        bool rang = false;
        ssize_t n;

        while ((n = read(pr->bell_fd, b, sizeof(b))) > 0) {
                pr->st.doorbells += (uint64_t)n;
                rang = true;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
                v1sim_die("doorbell read: %s", strerror(errno));
        return rang;
}

/* Wait for a ring until deadline_ns (0: none).  false on a signal or the
 * deadline. */
static bool bell_wait(Peer *pr, uint64_t deadline_ns)
{
        for (;;) {
                struct pollfd pfd = { .fd = pr->bell_fd, .events = POLLIN };
                struct timespec ts, *tsp = NULL;
                uint64_t now;

                if (stop)
                        return false;
                if (bell_drain(pr))
                        return true;
                now = v1sim_now_ns();
                if (deadline_ns && now >= deadline_ns)
                        return false;
                if (pr->spin) {
                        cpu_relax();
                        continue;
                }
                if (deadline_ns) {
                        ts.tv_sec = (time_t)((deadline_ns - now) / 1000000000u);
                        ts.tv_nsec = (long)((deadline_ns - now) % 1000000000u);
                        tsp = &ts;
                }
                /* Signals are blocked except inside ppoll: none is missed. */
                if (ppoll(&pfd, 1, tsp, &pr->waitmask) < 0 && errno != EINTR)
                        v1sim_die("ppoll: %s", strerror(errno));
        }
}

/* --gate: one byte lets the entry taken be answered.  false on a signal. */
static bool gate_wait(Peer *pr, uint16_t head, uint16_t id)
{
        uint8_t b;

        if (pr->gate_fd < 0)
                return true;
        printf("v1peer: holding entry=%u service=%u\n", head, id);
        fflush(stdout);
        for (;;) {
                struct pollfd pfd = { .fd = pr->gate_fd, .events = POLLIN };

                if (stop)
                        return false;
                if (read(pr->gate_fd, &b, 1) == 1)
                        return true;
                if (ppoll(&pfd, 1, NULL, &pr->waitmask) < 0 && errno != EINTR)
                        v1sim_die("ppoll: %s", strerror(errno));
        }
}

/* The faulty profiles' half-written state lasts until the next ring. */
static void hold(Peer *pr)
{
        if (pr->hold_ms)
                (void)bell_wait(pr, v1sim_now_ns() + (uint64_t)pr->hold_ms * 1000000u);
}

/* ===== start-up ===== */

/* What FreeRTOS A and seL4 do at start when the root queue is not marked
 * INITIALIZED: a 16-entry queue, every head 0 (entries not linked). */
static void reformat_root(Peer *pr)
{
        HaMsgQueue *q = pr->m.q;

        if (__atomic_load_n(&q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_INITIALIZED)
                return;
        ha_st16(&q->empty_h, 0);
        ha_st16(&q->wait_h, 0);
        ha_st16(&q->proc_ing_h, 0);
        ha_st16(&q->buf_size, 16);
        set_mark(&q->working_mark, HA_MARK_IDLE);
}

static void start_up(Peer *pr)
{
        const Profile *p = pr->p;

        if (p->style == LINUX) {
                static const uint8_t test[5] = "Test";  /* with its NUL */

                if (pr->m.buf_len >= sizeof(test))
                        ha_devmem_write(pr->m.buf, test, sizeof(test));
        }
        if (p->reformats) {
                reformat_root(pr);
                if (p->style == RTOS && pr->m.buf_len >= 64) {
                        static const uint8_t zero[64];

                        ha_devmem_write(pr->m.buf, zero, sizeof(zero));
                }
        }
        if (p->style != LINUX && pr->m.ready_q) {
                HaMsgQueue *r = pr->m.ready_q;

                ha_st16(&r->buf_size, 16);
                ha_st16(&r->empty_h, 0);
                ha_st16(&r->wait_h, 0);
                ha_st16(&r->proc_ing_h, 0);
        }
        /* Last: a client may go as soon as it sees this. */
        set_mark(pr->m.ready, HA_MARK_INITIALIZED);
}

/* ===== one entry ===== */

/* Run the service on the payload through a private copy: the mapping gets
 * aligned accesses only.  The result to publish. */
static enum ha_result run_service(Peer *pr, uint16_t id, uint32_t off, uint32_t len)
{
        size_t n = len;
        uint8_t *b;

        if (len == 0 || off > pr->m.buf_len || len > pr->m.buf_len - off)
                return HA_RESULT_FAIL;
        if (pr->p->style != LINUX && len >= pr->m.buf_len - off)
                return HA_RESULT_FAIL;          /* the RTOS peers' own bound */
        if (id != 1 && id != 2)
                return HA_RESULT_SUCCESS;       /* echo, or proxy ids: untouched */
        b = malloc(len);
        if (!b)
                return HA_RESULT_FAIL;
        ha_devmem_read(b, pr->m.buf + off, len);
        if (pr->p->style == LINUX) {
                /* Its cipher refuses a non-positive length: "" fails. */
                n = len - 1;
                if (!n) {
                        free(b);
                        return HA_RESULT_FAIL;
                }
                v1sim_linux_cipher(b, n);
        } else {
                if (pr->p->style == RTOS && b[len - 1] == 0)
                        n = len - 1;
                v1sim_xor5a(b, n);
        }
        if (n)
                ha_devmem_write(pr->m.buf + off, b, n);
        free(b);
        return HA_RESULT_SUCCESS;
}

/* deal_state, then the result: two separate stores, as every peer does
 * (result-first: the other way round). */
static void publish(Peer *pr, HaMsgEntry *e, enum ha_result r)
{
        uint16_t f = ha_ld16(&e->msg.flag), res = (uint16_t)((unsigned)r << HA_FLAG_RESULT_SHIFT);

        if (pr->p->fault == RESULT_FIRST) {
                __atomic_store_n(&e->msg.flag, (uint16_t)(f | res), __ATOMIC_RELEASE);
                hold(pr);
                __atomic_store_n(&e->msg.flag, (uint16_t)(f | res | HA_FLAG_DEAL_STATE),
                                 __ATOMIC_RELEASE);
        } else {
                __atomic_store_n(&e->msg.flag, (uint16_t)(f | HA_FLAG_DEAL_STATE),
                                 __ATOMIC_RELEASE);
                __atomic_store_n(&e->msg.flag, (uint16_t)(f | HA_FLAG_DEAL_STATE | res),
                                 __ATOMIC_RELEASE);
        }
        pr->st.served++;
        if (r != HA_RESULT_SUCCESS)
                pr->st.failed++;
}

static enum ha_result serve_entry(Peer *pr, uint16_t head, HaMsgEntry *e)
{
        uint32_t len = __atomic_load_n(&e->msg.length, __ATOMIC_ACQUIRE);
        uint32_t off = ha_ld32(&e->msg.offset);
        uint16_t id = ha_ld16(&e->msg.service_id);
        enum ha_result r = run_service(pr, id, off, len);

        note(pr, "entry %u: service %u offset %u length %u -> %s", head, id, off, len,
             r == HA_RESULT_SUCCESS ? "success" : "fail");
        return r;
}

/* Linux: the proc_ing_h head only; unlink it, IDLE after it. */
static void serve_linux(Peer *pr)
{
        HaMsgQueue *q = pr->m.q;
        uint16_t bs = ha_ld16(&q->buf_size), head = ha_ld16(&q->proc_ing_h);
        HaMsgEntry *e;
        enum ha_result r;

        if (pr->p->fault == TWICE && pr->last_head >= 0) {
                HaMsgEntry *old = &q->entries[pr->last_head];

                /* The answer again, over whatever the client did since. */
                __atomic_store_n(&old->msg.flag, ha_flag_make(HA_RESULT_SUCCESS),
                                 __ATOMIC_RELEASE);
                note(pr, "entry %d answered again", pr->last_head);
                pr->last_head = -1;
        }
        if (head >= bs || head >= pr->m.cap) {
                pr->st.spurious++;
                return;
        }
        e = &q->entries[head];
        if (pr->p->fault == IDLE_EARLY) {
                ha_st16(&q->proc_ing_h, ha_ld16(&e->nxt_idx));
                ha_st16(&e->nxt_idx, bs);
                set_mark(&q->working_mark, HA_MARK_IDLE);
                hold(pr);
        }
        if (!gate_wait(pr, head, ha_ld16(&e->msg.service_id)))
                return;
        r = serve_entry(pr, head, e);
        publish(pr, e, r);
        if (pr->p->fault != IDLE_EARLY) {
                ha_st16(&q->proc_ing_h, ha_ld16(&e->nxt_idx));
                ha_st16(&e->nxt_idx, bs);
        }
        if (pr->p->fault == SCRIBBLE) {
                ha_st16(&q->empty_h, 0xfff0);
                ha_st16(&q->wait_h, 0x1234);
                ha_st16(&e->cur_idx, 0xbeef);
                ha_st16(&e->nxt_idx, 0xdead);
        }
        if (pr->p->fault == TWICE)
                pr->last_head = head;
        set_mark(&q->working_mark, HA_MARK_IDLE);
        if (pr->gate_fd >= 0) {
                printf("v1peer: answered entry=%u served=%llu\n", head,
                       (unsigned long long)pr->st.served);
                fflush(stdout);
        }
}

/* The RTOS peers' test for an entry to serve. */
static bool rtos_valid(Peer *pr, HaMsgEntry *e)
{
        uint16_t f = __atomic_load_n(&e->msg.flag, __ATOMIC_ACQUIRE);
        uint32_t len = __atomic_load_n(&e->msg.length, __ATOMIC_ACQUIRE);
        uint32_t off = ha_ld32(&e->msg.offset);

        return len > 0 && len < pr->m.buf_len && off < pr->m.buf_len &&
               !(f & HA_FLAG_DEAL_STATE);
}

/* A restart between taking a request and answering it. */
static void restart(Peer *pr)
{
        note(pr, "restarting");
        set_mark(pr->m.ready, HA_MARK_RAW);
        start_up(pr);
        pr->restarted = true;
}

/* FreeRTOS and seL4: the entry at proc_ing_h while it is valid; advance to
 * its link, or to the next index when the link is the end marker (seL4
 * reads its own index there: it stays put).  true if one was served. */
static bool serve_rtos(Peer *pr)
{
        HaMsgQueue *q = pr->m.q;
        bool any = false;

        do {
                uint16_t bs = ha_ld16(&q->buf_size), head = ha_ld16(&q->proc_ing_h), nxt;
                HaMsgEntry *e;

                if (stop || head >= bs || head >= pr->m.cap)
                        break;
                e = &q->entries[head];
                if (!rtos_valid(pr, e))
                        break;
                if (pr->p->fault == RESTART && !pr->restarted &&
                    pr->st.served + 1 >= pr->restart_at) {
                        restart(pr);
                        return any;
                }
                publish(pr, e, serve_entry(pr, head, e));
                nxt = pr->p->style == SEL4 ? ha_ld16(&e->cur_idx) : ha_ld16(&e->nxt_idx);
                ha_st16(&q->proc_ing_h, nxt < bs ? nxt : (uint16_t)((head + 1u) % bs));
                set_mark(&q->working_mark, HA_MARK_IDLE);
                any = true;
        } while (pr->p->loops);
        return any;
}

static void on_ring(Peer *pr)
{
        if (pr->p->fault == MUTE)
                return;
        if (pr->p->style == LINUX)
                serve_linux(pr);
        else if (!serve_rtos(pr))
                pr->st.spurious++;
}

/* seL4: one look per poll; after 32 empty ones the cursor goes back to 0. */
static bool poll_once(Peer *pr)
{
        pr->st.polls++;
        if (serve_rtos(pr)) {
                pr->empty_polls = 0;
                return true;
        }
        if (++pr->empty_polls >= SEL4_EMPTY_POLLS) {
                pr->empty_polls = 0;
                ha_st16(&pr->m.q->proc_ing_h, 0);
                set_mark(&pr->m.q->working_mark, HA_MARK_IDLE);
        }
        return false;
}

static void run_polling(Peer *pr)
{
        HaBackoff b;
        int r;

        if (pr->spin) {
                while (!stop)
                        if (!poll_once(pr))
                                cpu_relax();
                return;
        }
        r = ha_backoff_init(&b, POLL_SPIN_NS, POLL_STEP_NS);
        if (r < 0)
                v1sim_die("backoff: %s", strerror(-r));
        /* The waits are bounded timer steps: a signal is seen within one. */
        sigprocmask(SIG_SETMASK, &pr->waitmask, NULL);
        ha_backoff_begin(&b, 1000000000u);
        while (!stop) {
                if (poll_once(pr)) {
                        ha_backoff_begin(&b, 1000000000u);
                        continue;
                }
                r = ha_backoff_wait(&b);
                if (r == -ETIMEDOUT)
                        ha_backoff_begin(&b, 1000000000u);
                else if (r < 0)
                        v1sim_die("backoff: %s", strerror(-r));
        }
        ha_backoff_fini(&b);
}

/* A FIFO, made if missing, read-write: never EOF when a writer closes. */
static int open_fifo(const char *path, const char *what)
{
        struct stat st;
        int fd;

        if (mkfifo(path, 0600) < 0 && errno != EEXIST)
                v1sim_die("mkfifo %s: %s", path, strerror(errno));
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                v1sim_die("cannot open %s %s: %s", what, path, strerror(errno));
        if (!S_ISFIFO(st.st_mode))
                v1sim_die("%s %s is not a FIFO", what, path);
        return fd;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: v1peer --profile P --shm-config F --mem F [--base HEX]\n"
                   "              [--doorbell FIFO] [--spin] [--hold-ms N] [--restart-at N]\n"
                   "              [--gate FIFO] [-v]\n"
                   "profiles:");
        for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
                fprintf(f, " %s", profiles[i].name);
        fputc('\n', f);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "profile", required_argument, NULL, 'p' },
                { "shm-config", required_argument, NULL, 'c' },
                { "mem", required_argument, NULL, 'm' },
                { "base", required_argument, NULL, 'b' },
                { "doorbell", required_argument, NULL, 'd' },
                { "spin", no_argument, NULL, 's' },
                { "hold-ms", required_argument, NULL, 'H' },
                { "restart-at", required_argument, NULL, 'R' },
                { "gate", required_argument, NULL, 'g' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        const char *profile = NULL, *cfg = NULL, *mem = NULL, *bell = NULL, *gate = NULL;
        Peer pr = { .bell_fd = -1, .gate_fd = -1, .restart_at = 1, .last_head = -1 };
        struct sigaction sa = { .sa_handler = on_signal };
        uint64_t base = 0;
        sigset_t block;
        char err[512];
        int c, r;

        v1sim_prog = "v1peer";
        while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
                switch (c) {
                case 'p': profile = optarg; break;
                case 'c': cfg = optarg; break;
                case 'm': mem = optarg; break;
                case 'b':
                        if (ha_hvcfg_parse_hex(optarg, &base) < 0)
                                v1sim_die("--base: not a hex number: %s", optarg);
                        break;
                case 'd': bell = optarg; break;
                case 'g': gate = optarg; break;
                case 's': pr.spin = true; break;
                case 'H': pr.hold_ms = (unsigned)v1sim_num("--hold-ms", optarg, 3600000u); break;
                case 'R':
                        pr.restart_at = (unsigned)v1sim_num("--restart-at", optarg, 1000000000u);
                        if (!pr.restart_at)
                                v1sim_die("--restart-at: at least 1");
                        break;
                case 'v': pr.verbose = true; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind != argc || !profile || !cfg || !mem) {
                usage(stderr);
                return 2;
        }
        for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
                if (!strcmp(profiles[i].name, profile))
                        pr.p = &profiles[i];
        if (!pr.p)
                v1sim_die("unknown profile '%s'", profile);
        if (!pr.p->polls && !bell)
                v1sim_die("profile %s needs --doorbell", profile);

        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        sigprocmask(SIG_BLOCK, &block, &pr.waitmask);
        sigdelset(&pr.waitmask, SIGTERM);
        sigdelset(&pr.waitmask, SIGINT);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        r = v1sim_map(&pr.m, cfg, mem, base, true, err, sizeof(err));
        if (r < 0)
                v1sim_die("%s", err);
        if (bell && !pr.p->polls)
                pr.bell_fd = open_fifo(bell, "doorbell");
        if (gate) {
                if (pr.p->style != LINUX)
                        v1sim_die("--gate: linux-style profiles only");
                pr.gate_fd = open_fifo(gate, "gate");
        }

        /* Spinning never blocks in ppoll: take signals at any time. */
        if (pr.spin)
                sigprocmask(SIG_SETMASK, &pr.waitmask, NULL);
        start_up(&pr);
        printf("v1peer: ready profile=%s pid=%ld\n", pr.p->name, (long)getpid());
        fflush(stdout);

        if (pr.p->polls)
                run_polling(&pr);
        else
                while (bell_wait(&pr, 0))
                        on_ring(&pr);

        printf("v1peer: exit profile=%s doorbells=%llu served=%llu failed=%llu polls=%llu\n",
               pr.p->name, (unsigned long long)pr.st.doorbells,
               (unsigned long long)pr.st.served, (unsigned long long)pr.st.failed,
               (unsigned long long)pr.st.polls);
        fflush(stdout);
        if (pr.bell_fd >= 0)
                close(pr.bell_fd);
        if (pr.gate_fd >= 0)
                close(pr.gate_fd);
        v1sim_unmap(&pr.m);
        return 0;
}
