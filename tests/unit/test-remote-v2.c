/* SPDX-License-Identifier: MIT */
/*
 * The v2 frontend executor against sel4v2, the simulated seL4 peer (a
 * separate process on a file standing in for the window): slot and bulk
 * services, ids the peer never answers, slot 256 during bulk traffic, the
 * signed and JSON services, and the faulty peers (reboot mid-request,
 * silence, garbage indices, a stuck lock, no peer at all).
 *
 *   test-remote-v2 PATH-TO-SEL4V2
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backoff.h"
#include "check.h"
#include "exec-wrapper.h"
#include "remote_v2.h"
#include "v2ring.h"

#define WAIT_MS 20000

static const char *sel4v2;
static char file[64];

typedef struct Peer {
        pid_t pid;
        int fd;
        char out[4096];
        size_t len;
} Peer;

/* Read the peer's output until it holds want (or the bound passes). */
static int peer_wait(Peer *p, const char *want)
{
        uint64_t end = ha_backoff_now() + (uint64_t)WAIT_MS * 1000000u;

        while (!strstr(p->out, want)) {
                struct pollfd pfd = { p->fd, POLLIN, 0 };
                uint64_t now = ha_backoff_now();
                ssize_t n;

                if (now >= end || poll(&pfd, 1, (int)((end - now) / 1000000u) + 1) <= 0)
                        return -ETIMEDOUT;
                n = read(p->fd, p->out + p->len, sizeof(p->out) - 1 - p->len);
                if (n <= 0)
                        return -EPIPE;
                p->len += (size_t)n;
                p->out[p->len] = '\0';
        }
        return 0;
}

/* Start sel4v2 on the test's file with extra options (NULL-terminated). */
static void peer_start(Peer *p, const char *const *opts)
{
        const char *argv[16] = { "sel4v2", "--mem", file, "--offset", "0x1000" };
        int fds[2], n = 5;

        while (*opts && n < 15)
                argv[n++] = *opts++;

        memset(p, 0, sizeof(*p));
        if (pipe(fds) < 0)
                abort();
        p->pid = fork();
        if (p->pid == 0) {
                dup2(fds[1], 1);
                close(fds[0]);
                exec_wrapped(sel4v2, (char *const *)argv);
                _exit(127);
        }
        close(fds[1]);
        p->fd = fds[0];
        CHECK_EQ(peer_wait(p, "sel4v2 ready"), 0);
}

/* SIGTERM, then the peer's own summary line. */
static void peer_stop(Peer *p)
{
        int st = 0;

        kill(p->pid, SIGTERM);
        CHECK_EQ(peer_wait(p, "sel4v2 served"), 0);
        waitpid(p->pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(p->fd);
}

static void fresh_file(void)
{
        int fd;

        snprintf(file, sizeof(file), "/tmp/test-remote-v2.%d", (int)getpid());
        fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, HA_V2_WINDOW_LEN + 0x3000) < 0)
                abort();
        close(fd);
}

static HaRemoteV2 *open_zone(bool creator, unsigned timeout_ms)
{
        HaRemoteZoneConfig cfg = { .protocol = HA_PROTOCOL_V2, .name = "sel4", .address = 0xde001000u, .base = 0xde000000u,
                               .creator = creator, .timeout_ms = timeout_ms };
        HaRemoteV2 *z = NULL;

        snprintf(cfg.mem, sizeof(cfg.mem), "%s", file);
        CHECK_EQ(ha_remote_v2_open(&cfg, 4u << 20, &z), 0);
        return z;
}

static double stat_of(HaRemoteV2 *z, const char *name)
{
        cJSON *o = cJSON_CreateObject(), *v;
        HaStats *s = ha_stats_json(o);
        double d;

        ha_remote_v2_stats(z, s);
        ha_stats_free(s);
        v = strcmp(name, "p50") == 0 ?
            cJSON_GetObjectItem(cJSON_GetObjectItem(o, "round_trip_us"), name) :
            cJSON_GetObjectItem(o, name);
        d = cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1 : -1;
        cJSON_Delete(o);
        return d;
}

static enum ha_result call(HaRemoteV2 *z, uint16_t service, void *buf, uint32_t len)
{
        return ha_remote_v2_call(z, service, buf, len, 0);
}

static bool xored(const uint8_t *out, const uint8_t *in, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (out[i] != (uint8_t)(in[i] ^ 0x5a))
                        return false;
        return true;
}

static void test_services(void)
{
        static uint8_t big[(2u << 20) + 1], in[(2u << 20) + 1];
        uint8_t hello[] = "hello", want[] = { 0x32, 0x3f, 0x36, 0x36, 0x35 };
        unsigned bad = 0;
        HaRemoteV2 *z;
        Peer p;

        fresh_file();
        peer_start(&p, (const char *[]){ NULL });
        z = open_zone(false, 5000);
        CHECK_EQ(call(z, 1, hello, 5), HA_RESULT_SUCCESS);
        CHECK(memcmp(hello, want, 5) == 0);
        CHECK_EQ(call(z, 2, hello, 5), HA_RESULT_SUCCESS);
        CHECK(memcmp(hello, "hello", 5) == 0);
        /* Never answered by the peer: refused, nothing sent. */
        CHECK_EQ(call(z, 0, hello, 5), HA_RESULT_NOT_EXITS);
        CHECK_EQ(call(z, 9, hello, 5), HA_RESULT_NOT_EXITS);
        CHECK_EQ(call(z, 10, hello, 5), HA_RESULT_NOT_EXITS);
        CHECK_EQ(call(z, 13, hello, 5), HA_RESULT_NOT_EXITS);
        CHECK_EQ(stat_of(z, "not_answered"), 4);
        /* The largest slot payload, then the smallest bulk one, then 2 MiB. */
        for (uint32_t len = HA_V2_MAX_SLOT_PAYLOAD; len <= HA_V2_MAX_SLOT_PAYLOAD + 1; len++) {
                for (uint32_t i = 0; i < len; i++)
                        in[i] = big[i] = (uint8_t)(i * 31 + len);
                CHECK_EQ(call(z, 1, big, len), HA_RESULT_SUCCESS);
                CHECK(xored(big, in, len));
        }
        CHECK_EQ(stat_of(z, "bulk"), 1);
        for (uint32_t i = 0; i < sizeof(big); i++)
                in[i] = big[i] = (uint8_t)(i * 7);
        CHECK_EQ(call(z, 2, big, 2u << 20), HA_RESULT_SUCCESS);
        CHECK(xored(big, in, 2u << 20));
        CHECK_EQ(call(z, 2, big, (2u << 20) + 1), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "too_big"), 1);
        /* Slot 256 is data + 0x100000: 600 bulk round trips (each message
         * moves both rings) pass it more than twice, data intact. */
        for (unsigned k = 0; k < 600; k++) {
                for (uint32_t i = 0; i < 5000; i++)
                        in[i] = big[i] = (uint8_t)(i + k);
                if (call(z, 1, big, 5000) != HA_RESULT_SUCCESS || !xored(big, in, 5000))
                        bad++;
                if (k % 3 == 0 && (call(z, 1, hello, 5) != HA_RESULT_SUCCESS))
                        bad++;
        }
        CHECK_EQ(bad, 0);
        CHECK_EQ(stat_of(z, "failures"), 1);
        CHECK_EQ(stat_of(z, "stale_replies"), 0);
        CHECK(stat_of(z, "p50") > 0);
        ha_remote_v2_close(z);
        peer_stop(&p);
        /* The four refused calls never reached the peer. */
        CHECK(strstr(p.out, "silent 0 bad 0") != NULL);
}

static uint32_t signed_msg(uint8_t *b, const char *payload, uint32_t magic, uint16_t sig_len)
{
        uint32_t n = (uint32_t)strlen(payload);

        memset(b, 0, HA_V2_SIG_HDR_LEN);
        memcpy(b, &magic, 4);
        memcpy(b + 4, &sig_len, 2);
        memcpy(b + 8, &n, 4);
        b[12] = 0x30;
        memcpy(b + HA_V2_SIG_HDR_LEN, payload, n);
        return HA_V2_SIG_HDR_LEN + n;
}

static void test_signed_and_json(void)
{
        const char *json = "{\"ts\":1,\"img\":\"x\",\"lvl\":2,\"scr\":3,\"cnt\":4,\"tgt\":5}";
        uint8_t b[512], orig[512];
        uint32_t n;
        HaRemoteV2 *z;
        Peer p;

        fresh_file();
        peer_start(&p, (const char *[]){ NULL });
        z = open_zone(false, 5000);
        /* 3: verify only, the buffer comes back as it went. */
        n = signed_msg(b, "mission", HA_V2_SIG_MAGIC, 70);
        memcpy(orig, b, n);
        CHECK_EQ(call(z, 3, b, n), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, orig, n) == 0);
        /* 4: verified, then the payload (not the header) XORed. */
        CHECK_EQ(call(z, 4, b, n), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, orig, HA_V2_SIG_HDR_LEN) == 0);
        CHECK(xored(b + HA_V2_SIG_HDR_LEN, orig + HA_V2_SIG_HDR_LEN, 7));
        /* Bad magic, bad signature length: the peer's negative status. */
        n = signed_msg(b, "mission", 0x12345678u, 70);
        CHECK_EQ(call(z, 5, b, n), HA_RESULT_FAIL);
        n = signed_msg(b, "mission", HA_V2_SIG_MAGIC, 10);
        CHECK_EQ(call(z, 5, b, n), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "peer_errors"), 2);
        /* 7: keys checked, then XOR; a missing key fails. */
        n = (uint32_t)strlen(json);
        memcpy(b, json, n);
        CHECK_EQ(call(z, 7, b, n), HA_RESULT_SUCCESS);
        CHECK(xored(b, (const uint8_t *)json, n));
        /* 8: XOR first, so the XORed JSON comes back as JSON. */
        CHECK_EQ(call(z, 8, b, n), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, json, n) == 0);
        memcpy(b, "{\"ts\":1}", 8);
        CHECK_EQ(call(z, 7, b, 8), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "peer_errors"), 3);
        /* The rings are still in step. */
        memcpy(b, "hello", 5);
        CHECK_EQ(call(z, 1, b, 5), HA_RESULT_SUCCESS);
        CHECK_EQ(b[0], 0x32);
        ha_remote_v2_close(z);
        peer_stop(&p);
}

static void test_reboot(void)
{
        uint8_t b[8];
        HaRemoteV2 *z;
        Peer p;

        fresh_file();
        peer_start(&p, (const char *[]){ "--fault", "reboot", "--after", "3", NULL });
        z = open_zone(false, 10000);
        for (int i = 0; i < 2; i++) {
                memcpy(b, "abcd", 4);
                CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        }
        /* The third is lost in the reboot: it fails, well before the 10 s
         * timeout (no timeout counted), and the next one is served. */
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "peer_restarts"), 1);
        CHECK_EQ(stat_of(z, "timeouts"), 0);
        memcpy(b, "abcd", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        CHECK_EQ(b[0], 'a' ^ 0x5a);
        ha_remote_v2_close(z);
        peer_stop(&p);
}

static void test_silent(void)
{
        uint8_t b[8] = "abcd";
        uint64_t t0, took;
        HaRemoteV2 *z;
        Peer p;

        fresh_file();
        peer_start(&p, (const char *[]){ "--fault", "silent", "--after", "2", NULL });
        z = open_zone(false, 300);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        /* No reply ever: the call gives up at its timeout, not later. */
        t0 = ha_backoff_now();
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_TIMEOUT);
        took = ha_backoff_now() - t0;
        CHECK(took >= 300000000u);
        CHECK(took < 300000000u + 5000000000u);
        CHECK_EQ(stat_of(z, "timeouts"), 1);
        /* The next waits half its time for the owed reply, then still
         * returns within its own timeout. */
        t0 = ha_backoff_now();
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_TIMEOUT);
        took = ha_backoff_now() - t0;
        CHECK(took < 300000000u + 5000000000u);
        CHECK_EQ(stat_of(z, "timeouts"), 2);
        CHECK_EQ(stat_of(z, "lost_replies"), 1);
        ha_remote_v2_close(z);
        peer_stop(&p);
}

static void test_garbage_lock_down(void)
{
        uint8_t b[8];
        HaRemoteV2 *z;
        Peer p;

        /* Garbage producer index on ring A: a fault, the state says so,
         * nothing read outside; served again once the peer re-creates. */
        fresh_file();
        peer_start(&p, (const char *[]){ "--fault", "garbage", "--after", "2", NULL });
        z = open_zone(false, 10000);
        memcpy(b, "abcd", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "faults"), 1);
        CHECK_EQ(stat_of(z, "timeouts"), 0);
        CHECK(strcmp(ha_remote_v2_state(z), "fault") == 0);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_FAIL);     /* still garbage: fails fast */
        kill(p.pid, SIGUSR1);
        CHECK_EQ(peer_wait(&p, "sel4v2 recreated"), 0);
        memcpy(b, "abcd", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        CHECK_EQ(b[0], 'a' ^ 0x5a);
        CHECK(strcmp(ha_remote_v2_state(z), "ready") == 0);
        ha_remote_v2_close(z);
        peer_stop(&p);

        /* A peer that died holding the fake lock: never waited on. */
        fresh_file();
        peer_start(&p, (const char *[]){ "--fault", "lock", NULL });
        z = open_zone(false, 10000);
        for (int i = 0; i < 10; i++) {
                memcpy(b, "abcd", 4);
                CHECK_EQ(call(z, 2, b, 4), HA_RESULT_SUCCESS);
        }
        CHECK_EQ(stat_of(z, "peer_lock_held"), 1);
        ha_remote_v2_close(z);
        peer_stop(&p);

        /* No peer yet (capacity 0): down, and calls fail at once. */
        fresh_file();
        z = open_zone(false, 10000);
        CHECK(strcmp(ha_remote_v2_state(z), "down") == 0);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(z, "timeouts"), 0);
        ha_remote_v2_close(z);
}

static void test_creator_and_stale(void)
{
        uint8_t b[8];
        HaRemoteV2 *z;
        HaV2Ring a;
        Peer p;

        /* hyperampd creates, the peer connects. */
        fresh_file();
        z = open_zone(true, 10000);
        peer_start(&p, (const char *[]){ "--connector", NULL });
        memcpy(b, "hello", 5);
        CHECK_EQ(call(z, 1, b, 5), HA_RESULT_SUCCESS);
        CHECK_EQ(b[0], 0x32);
        ha_remote_v2_close(z);
        peer_stop(&p);

        /* A reply left on ring A by an earlier run (hyperamp_linux without
         * -w, or a daemon killed mid-request) is not taken for ours. */
        {
                int fd = open(file, O_RDWR);
                uint8_t *m = mmap(NULL, HA_V2_WINDOW_LEN + 0x1000, PROT_READ | PROT_WRITE,
                                  MAP_SHARED, fd, 0);

                CHECK(m != MAP_FAILED);
                CHECK_EQ(ha_v2_attach(&a, m + 0x1000 + HA_V2_PAGE_A, m + 0x1000 + HA_V2_DATA_OFF,
                                      1, 0), 0);
                /* Two: our request on ring B will share the first one's
                 * slot (defect 2), not the second's. */
                CHECK_EQ(ha_v2_send(&a, HA_V2_DATA, 1, 0, "STALE", 5), 0);
                CHECK_EQ(ha_v2_send(&a, HA_V2_DATA, 1, 0, "STALE", 5), 0);
                munmap(m, HA_V2_WINDOW_LEN + 0x1000);
                close(fd);
        }
        peer_start(&p, (const char *[]){ "--connector", NULL });
        z = open_zone(false, 10000);
        memcpy(b, "hello", 5);
        CHECK_EQ(call(z, 1, b, 5), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, "\x32\x3f\x36\x36\x35", 5) == 0);
        ha_remote_v2_close(z);
        peer_stop(&p);
}

static void *release_peer(void *arg)
{
        kill(*(pid_t *)arg, SIGUSR2);
        return NULL;
}

/* A daemon killed with a request at the peer: the next run must not take
 * that request's late reply for its own first one (same service, same
 * length).  The reply lands before or during the new run's attach; either
 * way it is skipped or owed, never returned. */
static void test_restart_mid_request(void)
{
        uint8_t b[8];
        HaRemoteV2 *z;
        pthread_t t;
        Peer p;

        fresh_file();
        peer_start(&p, (const char *[]){ "--fault", "hold", "--after", "2", NULL });
        z = open_zone(false, 300);
        memcpy(b, "abcd", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        memcpy(b, "abcd", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_TIMEOUT);
        CHECK_EQ(peer_wait(&p, "sel4v2 holding"), 0);
        ha_remote_v2_close(z);          /* the old run's private state is gone */

        z = open_zone(false, 10000);
        CHECK_EQ(pthread_create(&t, NULL, release_peer, &p.pid), 0);
        memcpy(b, "wxyz", 4);
        CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
        CHECK_EQ(b[0], 'w' ^ 0x5a);
        pthread_join(t, NULL);
        CHECK_EQ(peer_wait(&p, "sel4v2 released"), 0);
        for (int i = 0; i < 5; i++) {
                memcpy(b, "wxyz", 4);
                CHECK_EQ(call(z, 1, b, 4), HA_RESULT_SUCCESS);
                CHECK_EQ(b[3], 'z' ^ 0x5a);
        }
        CHECK_EQ(stat_of(z, "lost_replies"), 0);
        ha_remote_v2_close(z);
        peer_stop(&p);
}

int main(int argc, char **argv)
{
        if (argc < 2)
                return 2;
        sel4v2 = argv[1];
        signal(SIGPIPE, SIG_IGN);
        test_services();
        test_signed_and_json();
        test_reboot();
        test_silent();
        test_garbage_lock_down();
        test_creator_and_stale();
        test_restart_mid_request();
        unlink(file);
        return check_done("test-remote-v2");
}
