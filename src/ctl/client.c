/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "hyperamp/cleanup.h"
#include "log.h"

static int wait_fd(int fd, short events, int64_t deadline_ms)
{
        for (;;) {
                struct pollfd p = { .fd = fd, .events = events };
                int64_t left = deadline_ms - ha_mono_ms();
                int r;

                if (left <= 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return -errno;
        }
}

int ha_client_connect(HaClient *c, const char *path, int timeout_ms)
{
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int64_t deadline;

        c->fd = -1;
        c->timeout_ms = timeout_ms;
        c->next_id = 1;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* A full backlog (a hung daemon, or one out of descriptors) makes a
         * non-blocking connect fail with EAGAIN: retry with a bounded
         * back-off until the deadline rather than block without one. */
        deadline = ha_mono_ms() + timeout_ms;
        for (int delay_ms = 1; connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0;) {
                if (errno != EAGAIN && errno != EINTR)
                        return -errno;
                if (ha_mono_ms() + delay_ms > deadline)
                        return -ETIMEDOUT;
                (void)poll(NULL, 0, delay_ms);
                delay_ms = delay_ms < 64 ? delay_ms * 2 : 64;
        }
        c->fd = TAKE_FD(fd);
        return 0;
}

void ha_client_close(HaClient *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

int ha_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms)
{
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n > 0) {
                        p += n;
                        len -= (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        int r = wait_fd(fd, POLLOUT, deadline_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                return n < 0 && errno != EPIPE ? -errno : -ECONNRESET;
        }
        return 0;
}

static int read_all(int fd, void *buf, size_t len, int64_t deadline_ms)
{
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = recv(fd, p, len, 0);
                if (n > 0) {
                        p += n;
                        len -= (size_t)n;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN) {
                        int r = wait_fd(fd, POLLIN, deadline_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                return -errno;
        }
        return 0;
}

int ha_client_call(HaClient *c, const char *method, cJSON *params,
                   const void *payload, size_t plen,
                   HaReply *rep, uint8_t **data, size_t *dlen)
{
        int64_t deadline = ha_mono_ms() + c->timeout_ms;
        _cleanup_free_ char *json = NULL;
        _cleanup_free_ char *rjson = NULL;
        _cleanup_free_ uint8_t *rdata = NULL;
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        uint32_t jlen, rdl;
        enum ha_error err;
        uint64_t id = c->next_id++;
        cJSON *req = cJSON_CreateObject();
        int r;

        if (!req) {
                cJSON_Delete(params);
                return -ENOMEM;
        }
        cJSON_AddNumberToObject(req, "v", HA_PROTO_VERSION);
        cJSON_AddNumberToObject(req, "id", (double)id);
        cJSON_AddStringToObject(req, "method", method);
        if (params)
                cJSON_AddItemToObject(req, "params", params);
        json = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
        if (!json)
                return -ENOMEM;

        ha_frame_hdr_write(hdr, (uint32_t)strlen(json), (uint32_t)plen);
        r = ha_write_all(c->fd, hdr, sizeof(hdr), deadline);
        if (r == 0)
                r = ha_write_all(c->fd, json, strlen(json), deadline);
        if (r == 0 && plen)
                r = ha_write_all(c->fd, payload, plen, deadline);
        /* A daemon that refuses a frame (E_TOO_BIG) answers and hangs up
         * without reading the rest: its answer is still ours to read. */
        if (r < 0 && r != -ECONNRESET)
                return r;

        r = read_all(c->fd, hdr, sizeof(hdr), deadline);
        if (r < 0)
                return r;
        if (ha_frame_hdr_parse(hdr, UINT32_MAX, &jlen, &rdl, &err) < 0)
                return -EBADMSG;
        rjson = malloc(jlen);
        rdata = malloc(rdl ? rdl : 1);
        if (!rjson || !rdata)
                return -ENOMEM;
        r = read_all(c->fd, rjson, jlen, deadline);
        if (r == 0)
                r = read_all(c->fd, rdata, rdl, deadline);
        if (r < 0)
                return r;
        if (ha_reply_parse(rjson, jlen, rep) < 0)
                return -EBADMSG;
        if (rep->has_id && rep->id != id) {
                ha_reply_done(rep);
                return -EBADMSG;
        }
        *dlen = rdl;
        *data = rdl ? TAKE_PTR(rdata) : NULL;
        return 0;
}
