/* SPDX-License-Identifier: MIT */
/*
 * The client core (src/core/client.c): its deadline holds against a
 * daemon that never answers or never accepts, and calls put the bytes
 * proto.c writes on the wire and take replies with their fds.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "client.h"

#define TIMEOUT_MS 200
/* How late past its deadline a call may come back: generous, so a loaded
 * machine does not fail it; a call without a deadline never comes back. */
#define SLACK_MS 10000

static char dir[] = "/tmp/test-client-XXXXXX";

static int open_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        while (d && readdir(d))
                n++;
        if (d)
                closedir(d);
        return n;
}

static int listener(const char *name, int backlog, char *path, size_t size)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(path, size, "%s/%s", dir, name);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        CHECK(fd >= 0);
        CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        CHECK_EQ(listen(fd, backlog), 0);
        return fd;
}

/* A daemon that accepts (the backlog does) and never answers. */
static void test_silent_daemon(void)
{
        char path[108];
        int l = listener("silent", 8, path, sizeof(path));
        uint8_t *data = NULL;
        size_t dlen = 0;
        HaClient c;
        HaReply rep;
        int64_t t0, took;

        CHECK_EQ(ha_client_connect(&c, path, TIMEOUT_MS), 0);
        t0 = ha_mono_ms();
        CHECK_EQ(ha_client_call(&c, HA_METHOD_PING, NULL, NULL, 0, &rep, &data, &dlen), -ETIMEDOUT);
        took = ha_mono_ms() - t0;
        CHECK(took >= TIMEOUT_MS);
        CHECK(took < TIMEOUT_MS + SLACK_MS);
        /* The same for a call that waits for fds. */
        {
                int fds[3], nfds = -1;

                t0 = ha_mono_ms();
                CHECK_EQ(ha_client_call_fds(&c, HA_METHOD_ATTACH, NULL, &rep, fds, 3, &nfds),
                         -ETIMEDOUT);
                took = ha_mono_ms() - t0;
                CHECK(took >= TIMEOUT_MS && took < TIMEOUT_MS + SLACK_MS);
                CHECK_EQ(nfds, 0);
        }
        ha_client_close(&c);
        close(l);
}

/* A daemon whose backlog is full: connect waits for room until its
 * deadline, then says so. */
static void test_full_backlog(void)
{
        char path[108];
        int l = listener("full", 0, path, sizeof(path)), fillers[64], n = 0;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        HaClient c;
        int64_t t0, took;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        for (; n < 64; n++) {
                fillers[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (connect(fillers[n], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                        CHECK_EQ(errno, EAGAIN);
                        close(fillers[n]);
                        break;
                }
        }
        CHECK(n < 64);
        t0 = ha_mono_ms();
        CHECK_EQ(ha_client_connect(&c, path, TIMEOUT_MS), -ETIMEDOUT);
        took = ha_mono_ms() - t0;
        CHECK(took >= TIMEOUT_MS && took < TIMEOUT_MS + SLACK_MS);
        CHECK_EQ(c.fd, -1);
        while (n > 0)
                close(fillers[--n]);
        close(l);
        CHECK_EQ(ha_client_connect(&c, dir, TIMEOUT_MS), -ECONNREFUSED);
}

/* A client on one end of a pair; the test plays the daemon on sv[1]. */
static void pair(HaClient *c, int sv[2])
{
        CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        CHECK_EQ(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
        *c = (HaClient){ .fd = sv[0], .timeout_ms = 5000, .next_id = 1 };
}

/* What the client sent: one frame's JSON and payload. */
static void expect_request(int fd, const char *json, const char *payload)
{
        char buf[512];
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        size_t plen = payload ? strlen(payload) : 0, n = HA_PROTO_HDR_SIZE + strlen(json) + plen;

        ha_frame_hdr_write(hdr, (uint32_t)strlen(json), (uint32_t)plen);
        CHECK_EQ(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), n);
        CHECK(memcmp(buf, hdr, sizeof(hdr)) == 0);
        CHECK(memcmp(buf + sizeof(hdr), json, strlen(json)) == 0);
        CHECK(plen == 0 || memcmp(buf + sizeof(hdr) + strlen(json), payload, plen) == 0);
}

static void reply(int fd, uint64_t id, const char *data, const int *fds, size_t nfds)
{
        cJSON *res = cJSON_CreateObject();
        size_t len = 0;
        char *s;

        cJSON_AddNumberToObject(res, "slot", 4);
        s = ha_reply_print(id, res, &len);
        if (data) {
                uint8_t hdr[HA_PROTO_HDR_SIZE];
                struct iovec iov[3];
                struct msghdr mh = { .msg_iov = iov };

                mh.msg_iovlen = (size_t)ha_frame_iov(iov, hdr, s, len, data, strlen(data));
                CHECK(sendmsg(fd, &mh, 0) > 0);
        } else {
                CHECK(ha_frame_send(fd, s, len, fds, nfds, 0) > 0);
        }
        free(s);
        cJSON_Delete(res);
}

static void test_call(void)
{
        uint8_t *data = NULL;
        size_t dlen = 0;
        cJSON *p = cJSON_CreateObject();
        HaClient c;
        HaReply rep;
        int sv[2];

        pair(&c, sv);
        cJSON_AddNumberToObject(p, "service", 1);
        reply(sv[1], 1, "dcba", NULL, 0);
        CHECK_EQ(ha_client_call(&c, HA_METHOD_SUBMIT, p, "abcd", 4, &rep, &data, &dlen), 0);
        expect_request(sv[1], "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                       "abcd");
        CHECK(dlen == 4 && data && memcmp(data, "dcba", 4) == 0);
        CHECK(rep.has_id && rep.id == 1);
        ha_reply_done(&rep);
        free(data);
        /* Another call's id: not ours. */
        reply(sv[1], 7, NULL, NULL, 0);
        CHECK_EQ(ha_client_call(&c, HA_METHOD_PING, NULL, NULL, 0, &rep, &data, &dlen), -EBADMSG);
        expect_request(sv[1], "{\"v\":1,\"id\":2,\"method\":\"ping\"}", NULL);
        /* A daemon that answers and hangs up (E_LIMIT) before it reads. */
        reply(sv[1], HA_NO_ID, NULL, NULL, 0);
        close(sv[1]);
        CHECK_EQ(ha_client_call(&c, HA_METHOD_PING, NULL, NULL, 0, &rep, &data, &dlen), 0);
        CHECK(!rep.has_id);
        ha_reply_done(&rep);
        /* And then nothing more. */
        CHECK_EQ(ha_client_call(&c, HA_METHOD_PING, NULL, NULL, 0, &rep, &data, &dlen), -ECONNRESET);
        ha_client_close(&c);
}

static void test_call_fds(void)
{
        int fds[3], got[3], nfds = -1, before;
        cJSON *p = cJSON_CreateObject();
        HaClient c;
        HaReply rep;
        int sv[2];

        pair(&c, sv);
        for (int i = 0; i < 3; i++)
                fds[i] = dup(STDERR_FILENO);
        before = open_fds();
        cJSON_AddTrueToObject(p, "resume");
        reply(sv[1], 1, NULL, fds, 2);
        CHECK_EQ(ha_client_call_fds(&c, HA_METHOD_ATTACH, p, &rep, got, 3, &nfds), 0);
        /* The bytes libhyperamp sent before the client core. */
        expect_request(sv[1], "{\"v\":1,\"id\":1,\"method\":\"attach\",\"params\":{\"resume\":true}}",
                       NULL);
        CHECK_EQ(nfds, 2);
        CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rep.result, "slot")), 4);
        CHECK(fcntl(got[0], F_GETFD) == FD_CLOEXEC && fcntl(got[1], F_GETFD) == FD_CLOEXEC);
        ha_reply_done(&rep);
        close(got[0]);
        close(got[1]);
        ha_client_close(&c);
        close(sv[1]);
        /* More fds than asked for, another id, a payload: refused, and
         * nothing that came stays open.  A new connection each: the
         * stream is out of step after a refusal. */
        for (int i = 0; i < 3; i++) {
                pair(&c, sv);
                before = open_fds();
                reply(sv[1], i == 1 ? 99 : 1, i == 2 ? "data" : NULL, fds, i == 2 ? 0 : 3);
                CHECK_EQ(ha_client_call_fds(&c, HA_METHOD_ATTACH, NULL, &rep, got, i == 0 ? 2 : 3,
                                            &nfds), -EBADMSG);
                CHECK_EQ(nfds, 0);
                CHECK_EQ(open_fds(), before);
                ha_client_close(&c);
                close(sv[1]);
        }
        for (int i = 0; i < 3; i++)
                close(fds[i]);
}

int main(void)
{
        char path[128];

        if (!mkdtemp(dir))
                return EXIT_FAILURE;
        test_silent_daemon();
        test_full_backlog();
        test_call();
        test_call_fds();
        snprintf(path, sizeof(path), "%s/silent", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/full", dir);
        unlink(path);
        rmdir(dir);
        return check_done("test-client");
}
