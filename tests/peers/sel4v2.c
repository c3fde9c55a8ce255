/* SPDX-License-Identifier: MIT */
/*
 * sel4v2: a simulated seL4 HyperAMP v2 peer (weifenjihe/sel4test
 * HighSpeedCProxy `hyperamp-server`), written from the protocol
 * description, on a regular file standing in for the physical window
 * (page A at +0, page B at +0x1000, data at +0x2000).  For tests only.
 *
 * Backend (default): takes SERVICE and BULK messages from ring B and
 * answers on ring A the way the seL4 server does: SERVICE 1/2 XOR 0x5A
 * with a DATA reply; 0, proxy types 0..3 and unknown ids get no reply;
 * BULK processes the data region in place (1/2 XOR, 3 verify a "SIG1"
 * signed payload, 4/5 verify then XOR, 7 check the JSON keys then XOR, 8
 * XOR then check, other ids XOR) and replies with the descriptor.
 * Frontend (--frontend N): sends N SERVICE requests (--bulk: BULK, the
 * input at the original bulk buffer) on ring A and prints each reply taken
 * from ring B.
 *
 * Prints "sel4v2 ready" once the rings are up (and "sel4v2 recreated"
 * after each re-creation); SIGTERM ends it cleanly, SIGUSR1 re-creates the
 * rings (a reboot).  Faults, from the K-th request on (--after K):
 *   reboot   re-create both rings instead of answering request K; with
 *            --stall, stop after the first field a re-creation writes
 *            (ring A's producer index back to 0), print "sel4v2
 *            rebooting" and finish on SIGUSR2: the other side sees the
 *            rings half re-created for as long as a test needs
 *   silent   never answer again
 *   garbage  write a garbage producer index on ring A instead of answering
 *   lock     hold the fake queue lock from the start (a crashed holder)
 *   hold     keep request K unanswered (prints "sel4v2 holding") until
 *            SIGUSR2, then answer it ("sel4v2 released")
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backoff.h"
#include "cpu.h"
#include "v2ring.h"

enum fault { FT_NONE, FT_REBOOT, FT_SILENT, FT_GARBAGE, FT_LOCK, FT_HOLD };

static volatile sig_atomic_t stop, reboot_now, release;
static uint8_t *win;
static HaV2Ring rx, tx;
static int creator = 1, spin, frontend, front_bulk, stall;
static enum fault fault;
static unsigned long after = 1, served, replied, silent, bad;
static HaBackoff bo;

static void on_signal(int sig)
{
        if (sig == SIGUSR1)
                reboot_now = 1;
        else if (sig == SIGUSR2)
                release = 1;
        else
                stop = 1;
}

static volatile uint8_t *page(unsigned off)
{
        return win + off;
}

static volatile uint8_t *data(void)
{
        return win + HA_V2_DATA_OFF;
}

/* One idle turn: a spin, or the adaptive waiter (seL4 itself spins). */
static void idle(void)
{
        if (spin) {
                for (int i = 0; i < 64; i++)
                        cpu_relax();
                return;
        }
        if (ha_backoff_wait(&bo) == -ETIMEDOUT)
                ha_backoff_begin(&bo, 1000000000u);
}

static void busy(void)
{
        if (!spin)
                ha_backoff_begin(&bo, 1000000000u);
}

static void create_rings(void)
{
        ha_v2_create(page(HA_V2_PAGE_A), 0xde000000u, 0x54e000u);
        ha_v2_create(page(HA_V2_PAGE_B), 0xde001000u, 0x54f000u);
        if (fault == FT_LOCK)
                for (unsigned off = HA_V2_PAGE_A; off <= HA_V2_PAGE_B; off += HA_V2_PAGE) {
                        ha_v2_st32(page(off), HA_V2Q_OWNER, 1);
                        ha_v2_st32(page(off), HA_V2Q_LOCK, 1);
                }
}

/* (Re)take both rings: create them or wait for the other side to. */
static int attach(int create)
{
        /* seL4 always produces on A and consumes B, in either role. */
        if (create)
                create_rings();
        for (;;) {
                int a = ha_v2_attach(&tx, page(HA_V2_PAGE_A), data(), 1, 0);
                int b = ha_v2_attach(&rx, page(HA_V2_PAGE_B), data(), 0, 0);

                if (!a && !b)
                        return 0;
                if (stop)
                        return -EINTR;
                idle();
        }
}

static void xor(volatile uint8_t *p, uint32_t len)
{
        for (uint32_t i = 0; i < len; i++)
                p[i] ^= 0x5a;
}

static uint32_t le32(const volatile uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
               (uint32_t)p[3] << 24;
}

/* HyperampSignedHeader: magic, sig_len 64..72, payload_len, signature[0]
 * == 0x30 (DER sequence); the payload follows the 84 bytes. */
static int32_t verify(volatile uint8_t *p, uint32_t len, uint32_t *plen)
{
        uint16_t sig_len;

        if (len < HA_V2_SIG_HDR_LEN || le32(p) != HA_V2_SIG_MAGIC)
                return HA_V2_ERR_BAD_MAGIC;
        sig_len = (uint16_t)(p[4] | p[5] << 8);
        if (sig_len < HA_V2_SIG_MIN || sig_len > HA_V2_SIG_MAX || p[12] != 0x30)
                return HA_V2_ERR_BAD_SIG;
        *plen = le32(p + 8);
        if (*plen > len - HA_V2_SIG_HDR_LEN)
                return HA_V2_ERR_BAD_LEN;
        return 0;
}

static int has_key(volatile uint8_t *p, uint32_t len, const char *key)
{
        size_t k = strlen(key);

        for (uint32_t i = 0; i + k <= len; i++) {
                size_t j = 0;

                while (j < k && p[i + j] == (uint8_t)key[j])
                        j++;
                if (j == k)
                        return 1;
        }
        return 0;
}

static int32_t fields(volatile uint8_t *p, uint32_t len)
{
        static const char *const keys[] = { "\"ts\"", "\"img\"", "\"lvl\"", "\"scr\"",
                                            "\"cnt\"", "\"tgt\"" };

        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                if (!has_key(p, len, keys[i]))
                        return HA_V2_ERR_MISSING;
        return 0;
}

static void bulk(const HaV2Hdr *h, const uint8_t *payload)
{
        HaV2Bulk d;
        uint8_t out[HA_V2_BULK_DESC_LEN];
        volatile uint8_t *p;
        uint32_t plen = 0;
        int32_t st = 0;

        if (h->len < HA_V2_BULK_DESC_LEN) {
                bad++;
                return;
        }
        ha_v2_bulk_unpack(&d, payload);
        if ((uint64_t)d.offset + d.length > HA_V2_DATA_LEN) {
                d.status = (uint32_t)-1;
                goto reply;
        }
        p = data() + d.offset;
        switch (d.service) {
        case 3:
        case 4:
        case 5:
                st = verify(p, d.length, &plen);
                if (st == 0) {
                        if (d.service != 3)
                                xor(p + HA_V2_SIG_HDR_LEN, plen);
                        d.offset += HA_V2_SIG_HDR_LEN;
                        d.length = plen;
                }
                break;
        case 7:
                st = fields(p, d.length);
                if (st == 0)
                        xor(p, d.length);
                break;
        case 8:
                xor(p, d.length);
                st = fields(p, d.length);
                break;
        default:
                xor(p, d.length);
                break;
        }
        d.status = st ? (uint32_t)st : HA_V2_BULK_OK;
reply:
        ha_v2_bulk_pack(out, &d);
        while (ha_v2_send(&tx, HA_V2_BULK, (uint16_t)d.service, 0, out, sizeof(out)) == -EAGAIN &&
               !stop)
                idle();
        replied++;
}

static HaV2Hdr held_hdr;
static uint8_t held[HA_V2_BLOCK];
static int holding;

static void answer(const HaV2Hdr *h, uint8_t *payload);

/* The first store of a re-creation, then a pause until SIGUSR2. */
static void stall_reboot(void)
{
        ha_v2_st16(page(HA_V2_PAGE_A), HA_V2Q_HEADER, 0);
        printf("sel4v2 rebooting\n");
        fflush(stdout);
        while (!release && !stop)
                idle();
        release = 0;
}

static void serve(const HaV2Hdr *h, uint8_t *payload)
{
        served++;
        if (fault == FT_HOLD && served == after) {
                held_hdr = *h;
                memcpy(held, payload, h->len);
                holding = 1;
                printf("sel4v2 holding\n");
                fflush(stdout);
                return;
        }
        if (fault == FT_SILENT && served >= after)
                return;
        if ((fault == FT_REBOOT || fault == FT_GARBAGE) && served == after) {
                if (fault == FT_REBOOT) {
                        if (stall)
                                stall_reboot();
                        (void)attach(1);
                        printf("sel4v2 recreated\n");
                        fflush(stdout);
                        return;
                }
                /* FT_GARBAGE: a producer index no ring has. */
                ha_v2_st16(page(HA_V2_PAGE_A), HA_V2Q_HEADER, 0x7777);
                return;
        }
        answer(h, payload);
}

static void answer(const HaV2Hdr *h, uint8_t *payload)
{
        if (h->type == HA_V2_BULK) {
                bulk(h, payload);
                return;
        }
        if (h->type != HA_V2_SERVICE || (h->fsess != 1 && h->fsess != 2)) {
                silent++;       /* echo, proxy and unknown ids: logged, no reply */
                return;
        }
        for (unsigned i = 0; i < h->len; i++)
                payload[i] ^= 0x5a;
        while (ha_v2_send(&tx, HA_V2_DATA, h->fsess, 0, payload, h->len) == -EAGAIN && !stop)
                idle();
        replied++;
}

static void backend(void)
{
        static uint8_t buf[HA_V2_BLOCK];
        HaV2Hdr h;

        while (!stop) {
                int e;

                if (release && holding) {
                        holding = 0;
                        answer(&held_hdr, held);
                        printf("sel4v2 released\n");
                        fflush(stdout);
                }
                if (reboot_now) {
                        reboot_now = 0;
                        (void)attach(1);
                        printf("sel4v2 recreated\n");
                        fflush(stdout);
                }
                e = ha_v2_recv(&rx, &h, buf, sizeof(buf));
                if (e == 0) {
                        busy();
                        serve(&h, buf);
                } else if (e == -EBADMSG) {
                        bad++;
                } else if (e == -EAGAIN) {
                        idle();
                } else {
                        /* The other side re-created the rings. */
                        if (attach(creator && e != -ECONNRESET) < 0)
                                return;
                }
        }
}

static int frontend_run(unsigned long n, uint16_t service, const char *msg)
{
        static uint8_t buf[HA_V2_BLOCK];
        size_t len = strlen(msg);
        HaV2Hdr h;

        for (unsigned long i = 0; i < n && !stop; i++) {
                int e;

                if (front_bulk) {
                        /* As hyperamp_linux -B: the input at the original
                         * bulk buffer, a descriptor in the slot. */
                        HaV2Bulk d = { HA_V2_BULK_ORIG_OFF, (uint32_t)len, service, 0 };
                        uint8_t desc[HA_V2_BULK_DESC_LEN];

                        for (size_t k = 0; k < len; k++)
                                data()[HA_V2_BULK_ORIG_OFF + k] = (uint8_t)msg[k];
                        ha_v2_bulk_pack(desc, &d);
                        while ((e = ha_v2_send(&tx, HA_V2_BULK, service, 0, desc, sizeof(desc))) ==
                               -EAGAIN && !stop)
                                idle();
                } else {
                        while ((e = ha_v2_send(&tx, HA_V2_SERVICE, service, 0, msg,
                                               (uint16_t)len)) == -EAGAIN && !stop)
                                idle();
                }
                if (e < 0)
                        return e;
                busy();
                while ((e = ha_v2_recv(&rx, &h, buf, sizeof(buf))) == -EAGAIN && !stop)
                        idle();
                if (e < 0)
                        return e;
                if (h.type == HA_V2_BULK && h.len >= HA_V2_BULK_DESC_LEN) {
                        HaV2Bulk d;

                        ha_v2_bulk_unpack(&d, buf);
                        printf("reply bulk service %u status %d offset 0x%x len %u:", d.service,
                               (int32_t)d.status, d.offset, d.length);
                        for (uint32_t k = 0; (uint64_t)d.offset + d.length <= HA_V2_DATA_LEN &&
                                             k < d.length && k < 64; k++)
                                printf(" %02x", data()[d.offset + k]);
                } else {
                        printf("reply type %u service %u status %u len %u:", h.type, h.fsess,
                               h.bsess, h.len);
                        for (unsigned k = 0; k < h.len && k < 64; k++)
                                printf(" %02x", buf[k]);
                }
                printf("\n");
                fflush(stdout);
                replied++;
        }
        return 0;
}

static enum fault parse_fault(const char *s)
{
        static const char *const names[] = { "none", "reboot", "silent", "garbage", "lock",
                                             "hold" };

        for (int i = 0; i < 6; i++)
                if (strcmp(s, names[i]) == 0)
                        return (enum fault)i;
        fprintf(stderr, "sel4v2: unknown fault %s\n", s);
        exit(2);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "mem", required_argument, NULL, 'm' },
                { "offset", required_argument, NULL, 'o' },
                { "connector", no_argument, NULL, 'c' },
                { "spin", no_argument, NULL, 's' },
                { "fault", required_argument, NULL, 'f' },
                { "after", required_argument, NULL, 'k' },
                { "frontend", required_argument, NULL, 'F' },
                { "service", required_argument, NULL, 'S' },
                { "payload", required_argument, NULL, 'p' },
                { "bulk", no_argument, NULL, 'B' },
                { "stall", no_argument, NULL, 'T' },
                { NULL, 0, NULL, 0 },
        };
        const char *mem = NULL, *msg = "hello";
        unsigned long long off = 0;
        unsigned long nfront = 0;
        uint16_t service = 1;
        struct sigaction sa = { .sa_handler = on_signal };
        struct stat st;
        int fd, c, rc = 0;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'm': mem = optarg; break;
                case 'o': off = strtoull(optarg, NULL, 0); break;
                case 'c': creator = 0; break;
                case 's': spin = 1; break;
                case 'f': fault = parse_fault(optarg); break;
                case 'k': after = strtoul(optarg, NULL, 0); break;
                case 'F': frontend = 1; nfront = strtoul(optarg, NULL, 0); break;
                case 'S': service = (uint16_t)strtoul(optarg, NULL, 0); break;
                case 'p': msg = optarg; break;
                case 'B': front_bulk = 1; break;
                case 'T': stall = 1; break;
                default: return 2;
                }
        }
        if (!mem || strlen(msg) > HA_V2_MAX_SLOT_PAYLOAD || after == 0) {
                fprintf(stderr, "usage: sel4v2 --mem FILE [--offset N] [--connector] [--spin] "
                        "[--fault reboot|silent|garbage|lock|hold --after K [--stall]] "
                        "[--frontend N --service S --payload MSG [--bulk]]\n");
                return 2;
        }
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);
        fd = open(mem, O_RDWR | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0 || (off & (HA_V2_PAGE - 1)) ||
            (unsigned long long)st.st_size < off + HA_V2_WINDOW_LEN) {
                fprintf(stderr, "sel4v2: %s must hold 0x%x bytes from a page-aligned offset\n",
                        mem, HA_V2_WINDOW_LEN);
                return 1;
        }
        win = mmap(NULL, HA_V2_WINDOW_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
        close(fd);
        if (win == MAP_FAILED || ha_backoff_init(&bo, 50000, 1000000) < 0) {
                perror("sel4v2");
                return 1;
        }
        busy();
        if (attach(creator) < 0)
                return 0;
        printf("sel4v2 ready\n");
        fflush(stdout);
        if (frontend)
                rc = frontend_run(nfront, service, msg) < 0;
        else
                backend();
        printf("sel4v2 served %lu replied %lu silent %lu bad %lu\n", served, replied, silent, bad);
        fflush(stdout);
        ha_backoff_fini(&bo);
        munmap(win, HA_V2_WINDOW_LEN);
        return rc;
}
