/* SPDX-License-Identifier: MIT */
/*
 * The v1 gateway's executor (remote_v1.c) against the simulated service
 * zones (tests/peers/v1peer): every peer profile gives the peer's own
 * result for every byte, and every faulty one is survived, counted and
 * answered once.  A regular file stands in for /dev/mem, a FIFO for the
 * doorbell.  No sleeps: the peer says when it is ready on its stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "queue.h"
#include "remote_v1.h"
#include "v1sim.h"

static char dir[] = "/tmp/hyperamp-test-remote-XXXXXX";
static char cfg_path[64], mem_path[64], bell_path[64];
static const char *v1peer;

#define MEM_SIZE 0x12000

static void fresh_memory(void)
{
        int fd = open(mem_path, O_RDWR | O_CREAT | O_TRUNC, 0600);

        CHECK(fd >= 0 && ftruncate(fd, MEM_SIZE) == 0);
        close(fd);
}

static void setup(void)
{
        FILE *f;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(cfg_path, sizeof(cfg_path), "%s/shm.json", dir);
        snprintf(mem_path, sizeof(mem_path), "%s/mem", dir);
        snprintf(bell_path, sizeof(bell_path), "%s/bell", dir);
        f = fopen(cfg_path, "w");
        CHECK(f != NULL);
        fputs("{\"shm_regions\":[{\"region_flag\":\"linux-2-npucore-buf\",\"zone0_ram_ipa\":"
              "\"0x0\",\"zonex_ram_ipa\":\"0x0\",\"mem_size\":\"0x10000\"},{\"region_flag\":"
              "\"linux-2-npucore-msg\",\"zone0_ram_ipa\":\"0x10000\",\"zonex_ram_ipa\":"
              "\"0x11000\",\"mem_size\":\"0x1000\"}]}", f);
        fclose(f);
        CHECK_EQ(mkfifo(bell_path, 0600), 0);
        fresh_memory();
}

typedef struct Peer {
        pid_t pid;
        int out;
} Peer;

/* Start v1peer and wait for its "ready" line (bounded). */
static Peer peer_start(const char *profile, const char *extra1, const char *extra2)
{
        Peer p = { -1, -1 };
        char line[256];
        size_t n = 0;
        int fds[2];

        CHECK_EQ(pipe(fds), 0);
        p.pid = fork();
        if (p.pid == 0) {
                dup2(fds[1], 1);
                close(fds[0]);
                execl(v1peer, "v1peer", "--profile", profile, "--shm-config", cfg_path, "--mem",
                      mem_path, "--doorbell", bell_path, extra1, extra2, (char *)NULL);
                _exit(127);
        }
        close(fds[1]);
        p.out = fds[0];
        while (n < sizeof(line) - 1) {
                struct pollfd pfd = { .fd = p.out, .events = POLLIN };
                ssize_t k;

                if (poll(&pfd, 1, 20000) != 1)
                        break;
                k = read(p.out, line + n, 1);
                if (k != 1 || line[n] == '\n')
                        break;
                n++;
        }
        line[n] = '\0';
        CHECK(strstr(line, "v1peer: ready") != NULL);
        return p;
}

static void peer_stop(Peer *p)
{
        int st = 0;

        if (p->pid <= 0)
                return;
        kill(p->pid, SIGTERM);
        CHECK_EQ(waitpid(p->pid, &st, 0), p->pid);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(p->out);
        p->pid = -1;
}

static HaRemoteV1 *gateway(enum ha_peer peer, enum ha_bell bell, unsigned timeout_ms)
{
        HaRemoteZoneConfig z = { .peer = peer, .bell = bell, .timeout_ms = timeout_ms,
                                 .max_pending = 8, .n_services = 1, .services = { 1 } };
        HaRemoteV1 *r = NULL;

        snprintf(z.name, sizeof(z.name), "test");
        snprintf(z.shm_config, sizeof(z.shm_config), "%s", cfg_path);
        snprintf(z.mem, sizeof(z.mem), "%s", mem_path);
        snprintf(z.bell_path, sizeof(z.bell_path), "%s", bell_path);
        CHECK_EQ(ha_remote_v1_new(&z, &r), 0);
        return r;
}

/* One submit; the bytes on SUCCESS. */
static enum ha_result submit(HaRemoteV1 *r, uint16_t svc, const char *in, uint8_t *out)
{
        uint32_t len = (uint32_t)strlen(in);

        memcpy(out, in, len);
        return ha_remote_v1_call(r, svc, out, len, 0);
}

static double stat_of(HaRemoteV1 *r, const char *key)
{
        cJSON *o = cJSON_CreateObject(), *v;
        double d = -1;

        ha_remote_v1_stats_json(r, o);
        v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!v)
                v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "faults"),
                                                     key);
        if (cJSON_IsNumber(v))
                d = v->valuedouble;
        cJSON_Delete(o);
        return d;
}

static const uint8_t xor5a_hello[] = { 0x32, 0x3f, 0x36, 0x36, 0x35 };
static const uint8_t linux_hello[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };

/* n good round trips of "hello" through encrypt; returns how many matched. */
static int hellos(HaRemoteV1 *r, int n, const uint8_t *want)
{
        uint8_t b[16];
        int ok = 0;

        for (int i = 0; i < n; i++)
                ok += submit(r, 1, "hello", b) == HA_RESULT_SUCCESS && memcmp(b, want, 5) == 0;
        return ok;
}

static void test_profile(const char *profile, enum ha_peer peer, enum ha_bell bell,
                         const uint8_t *want)
{
        static uint8_t b[4096], wire[4097], expect[4097];
        Peer p;
        HaRemoteV1 *r;
        HaMsgQueue q;
        size_t wire_len;
        int fd;

        fresh_memory();
        p = peer_start(profile, NULL, NULL);
        r = gateway(peer, bell, 5000);
        CHECK(strcmp(ha_remote_v1_state(r), "ready") == 0);
        CHECK_EQ(hellos(r, 20, want), 20);
        /* Echo (66): every byte back, none touched; a NUL inside too. */
        memcpy(b, "a\0b", 3);
        CHECK_EQ(ha_remote_v1_call(r, 66, b, 3, 0), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, "a\0b", 3) == 0);
        /* A large payload: every byte transformed, the peer's own way. */
        for (size_t i = 0; i < sizeof(b); i++)
                b[i] = (uint8_t)(i * 7 + 1);
        v1sim_expect(peer == HA_PEER_LINUX ? V1SIM_LINUX : peer == HA_PEER_SEL4 ? V1SIM_SEL4 :
                     V1SIM_FREERTOS, 1, b, sizeof(b), wire, expect, &wire_len);
        CHECK_EQ(ha_remote_v1_call(r, 1, b, sizeof(b), 0), HA_RESULT_SUCCESS);
        CHECK(memcmp(b, expect, sizeof(b)) == 0);
        CHECK(strcmp(ha_remote_v1_state(r), "ready") == 0);
        CHECK_EQ(stat_of(r, "completed"), 22);
        CHECK_EQ(stat_of(r, "failures"), 0);
        CHECK_EQ(stat_of(r, "timeouts"), 0);
        CHECK_EQ(stat_of(r, "bad_entry") + stat_of(r, "bad_flag") + stat_of(r, "bad_header"), 0);
        /* The queue as we formatted it, IDLE, everything released. */
        fd = open(mem_path, O_RDONLY);
        CHECK(pread(fd, &q, sizeof(q), 0x10000) == (ssize_t)sizeof(q));
        close(fd);
        CHECK_EQ(q.buf_size, 255);
        CHECK_EQ(q.working_mark, HA_MARK_IDLE);
        ha_remote_v1_free(r);
        peer_stop(&p);
}

static void test_not_ready_then_down_then_back(void)
{
        Peer p;
        HaRemoteV1 *r;
        uint8_t b[16];

        fresh_memory();
        /* No peer yet: waiting-ready, and a request fails with E_TIMEOUT. */
        r = gateway(HA_PEER_LINUX, HA_BELL_FIFO, 50);
        CHECK(strcmp(ha_remote_v1_state(r), "waiting-ready") == 0);
        CHECK_EQ(submit(r, 1, "hello", b), HA_RESULT_TIMEOUT);
        CHECK(strcmp(ha_remote_v1_state(r), "waiting-ready") == 0);
        CHECK_EQ(stat_of(r, "not_ready"), 1);
        /* A peer that never answers: three timeouts make the zone down. */
        p = peer_start("mute", NULL, NULL);
        for (int i = 0; i < 3; i++)
                CHECK_EQ(submit(r, 1, "hello", b), HA_RESULT_TIMEOUT);
        CHECK(strcmp(ha_remote_v1_state(r), "down") == 0);
        CHECK(stat_of(r, "rerings") >= 1);
        /* Down: the peer is given a short look only. */
        CHECK_EQ(submit(r, 1, "hello", b), HA_RESULT_TIMEOUT);
        CHECK_EQ(stat_of(r, "fast_fails"), 1);
        CHECK_EQ(stat_of(r, "timeouts"), 5);
        peer_stop(&p);
        /* A working peer takes its place ("Test" over the canary): the
         * zone comes back by itself, re-formatted. */
        p = peer_start("linux", NULL, NULL);
        CHECK_EQ(hellos(r, 3, linux_hello), 3);
        CHECK(strcmp(ha_remote_v1_state(r), "ready") == 0);
        CHECK_EQ(stat_of(r, "peer_restarts"), 1);
        ha_remote_v1_free(r);
        peer_stop(&p);
}

static void test_faulty(const char *profile, const char *a1, const char *a2, const char *counter,
                        double at_least)
{
        Peer p;
        HaRemoteV1 *r;

        fresh_memory();
        p = peer_start(profile, a1, a2);
        r = gateway(HA_PEER_LINUX, HA_BELL_FIFO, 5000);
        /* Each answered once, with the right bytes, or not at all. */
        CHECK_EQ(hellos(r, 6, strcmp(profile, "restart") ? linux_hello : xor5a_hello), 6);
        if (counter && stat_of(r, counter) < at_least)
                fprintf(stderr, "%s: %s = %g\n", profile, counter, stat_of(r, counter));
        if (counter)
                CHECK(stat_of(r, counter) >= at_least);
        CHECK_EQ(stat_of(r, "timeouts"), 0);
        ha_remote_v1_free(r);
        peer_stop(&p);
}

static void test_too_big(void)
{
        Peer p;
        HaRemoteV1 *r;
        uint32_t max;
        uint8_t *b;

        fresh_memory();
        p = peer_start("freertos-b", NULL, NULL);
        r = gateway(HA_PEER_FREERTOS, HA_BELL_FIFO, 5000);
        max = ha_remote_v1_max_payload(r);
        CHECK(max >= 16384 && max < 0x8000);
        b = calloc(1, max + 1);
        CHECK_EQ(ha_remote_v1_call(r, 66, b, max + 1, 0), HA_RESULT_FAIL);
        CHECK_EQ(stat_of(r, "too_big"), 1);
        CHECK_EQ(ha_remote_v1_call(r, 66, b, max, 0), HA_RESULT_SUCCESS);
        free(b);
        ha_remote_v1_free(r);
        peer_stop(&p);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        ha_log_set_target(HA_LOG_STDERR);
        v1peer = getenv("V1PEER");
        if (!v1peer) {
                fprintf(stderr, "test-remote: V1PEER not set\n");
                return 77;
        }
        setup();
        test_profile("freertos-b", HA_PEER_FREERTOS, HA_BELL_FIFO, xor5a_hello);
        test_profile("freertos-a", HA_PEER_FREERTOS, HA_BELL_FIFO, xor5a_hello);
        test_profile("linux", HA_PEER_LINUX, HA_BELL_FIFO, linux_hello);
        test_profile("sel4", HA_PEER_SEL4, HA_BELL_NONE, xor5a_hello);
        test_not_ready_then_down_then_back();
        test_faulty("twice", NULL, NULL, "double_answers", 1);
        test_faulty("result-first", "--hold-ms", "20", NULL, 0);
        test_faulty("idle-early", "--hold-ms", "20", NULL, 0);
        test_faulty("restart", "--restart-at", "2", "peer_restarts", 1);
        test_faulty("scribble", NULL, NULL, "bad_header", 1);
        test_too_big();
        unlink(cfg_path);
        unlink(mem_path);
        unlink(bell_path);
        rmdir(dir);
        return check_done("test-remote");
}
