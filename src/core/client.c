/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "hyperamp/cleanup.h"

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

/* After a send or recv failed with errno: 0 to try again (interrupted, or
 * the socket is ready before the deadline), else why not. */
static int retry(int fd, short events, int64_t deadline_ms)
{
        if (errno == EINTR)
                return 0;
        if (errno == EAGAIN)
                return wait_fd(fd, events, deadline_ms);
        return errno == EPIPE ? -ECONNRESET : -errno;
}

int ha_client_connect(HaClient *c, const char *path, int timeout_ms)
{
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int64_t deadline = ha_mono_ms() + timeout_ms;

        c->fd = -1;
        c->timeout_ms = timeout_ms;
        c->next_id = 1;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* A full backlog (a hung daemon, or one out of descriptors) holds a
         * connect: a blocking one waits in the kernel for room, for at most
         * SO_SNDTIMEO, then says EAGAIN.  Calls then go non-blocking. */
        for (;;) {
                int64_t left = deadline - ha_mono_ms();
                struct timeval tv = { left / 1000, (left % 1000) * 1000 };

                if (left <= 0)
                        return -ETIMEDOUT;
                if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
                        return -errno;
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        break;
                if (errno != EAGAIN && errno != EINTR)
                        return -errno;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;
        c->fd = TAKE_FD(fd);
        return 0;
}

void ha_client_close(HaClient *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

/* All of iov before the deadline. */
static int send_all(int fd, struct iovec *iov, int n, int64_t deadline_ms)
{
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };

        while (mh.msg_iovlen > 0) {
                ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL);

                if (k < 0) {
                        int r = retry(fd, POLLOUT, deadline_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                while (mh.msg_iovlen > 0 && (size_t)k >= mh.msg_iov->iov_len) {
                        k -= (ssize_t)mh.msg_iov->iov_len;
                        mh.msg_iov++;
                        mh.msg_iovlen--;
                }
                if (mh.msg_iovlen > 0) {
                        mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + k;
                        mh.msg_iov->iov_len -= (size_t)k;
                }
        }
        return 0;
}

/* Where received fds go: n of them in fds so far, room for max. */
typedef struct FdSink {
        int *fds;
        int max, n;
} FdSink;

/* All of len bytes before the deadline; fds that come with them into sink
 * (NULL: none wanted, the kernel closes any that come). */
static int recv_all(int fd, void *buf, size_t len, int64_t deadline_ms, FdSink *sink)
{
        uint8_t *p = buf;

        while (len > 0) {
                union {
                        char c[CMSG_SPACE(HA_PROTO_MAX_FDS * sizeof(int))];
                        struct cmsghdr align;
                } u;
                struct iovec iov = { p, len };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                                     .msg_control = sink ? u.c : NULL,
                                     .msg_controllen = sink ? sizeof(u.c) : 0 };
                ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

                if (n > 0 && sink) {
                        int k = ha_fds_take(&mh, sink->fds + sink->n, sink->max - sink->n);

                        if (k < 0)
                                return -EBADMSG;
                        sink->n += k;
                }
                if (n > 0) {
                        p += n;
                        len -= (size_t)n;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET;
                n = retry(fd, POLLIN, deadline_ms);
                if (n < 0)
                        return (int)n;
        }
        return 0;
}

/* One call: data NULL for a reply that must carry no payload. */
static int call(HaClient *c, const char *method, cJSON *params, const void *payload, size_t plen,
                HaReply *rep, uint8_t **data, size_t *dlen, FdSink *sink)
{
        int64_t deadline = ha_mono_ms() + c->timeout_ms;
        uint64_t id = c->next_id++;
        size_t len = 0;
        _cleanup_free_ char *json = ha_request_print(id, method, params, &len);
        _cleanup_free_ char *rjson = NULL;
        _cleanup_free_ uint8_t *rdata = NULL;
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        struct iovec iov[3];
        uint32_t jlen, rdl;
        enum ha_error err;
        int r;

        cJSON_Delete(params);
        if (!json)
                return -ENOMEM;
        r = send_all(c->fd, iov, ha_frame_iov(iov, hdr, json, len, payload, plen), deadline);
        /* A daemon that refuses a frame (E_TOO_BIG) or the connection
         * (E_LIMIT) answers and hangs up without reading the rest: its
         * answer is still ours to read. */
        if (r < 0 && r != -ECONNRESET)
                return r;

        r = recv_all(c->fd, hdr, sizeof(hdr), deadline, sink);
        if (r < 0)
                return r;
        if (ha_frame_hdr_parse(hdr, data ? UINT32_MAX : 0, &jlen, &rdl, &err) < 0)
                return -EBADMSG;
        rjson = malloc(jlen);
        rdata = malloc(rdl ? rdl : 1);
        if (!rjson || !rdata)
                return -ENOMEM;
        r = recv_all(c->fd, rjson, jlen, deadline, sink);
        if (r == 0)
                r = recv_all(c->fd, rdata, rdl, deadline, sink);
        if (r < 0)
                return r;
        if (ha_reply_parse(rjson, jlen, rep) < 0)
                return -EBADMSG;
        if (rep->has_id && rep->id != id) {
                ha_reply_done(rep);
                return -EBADMSG;
        }
        if (data) {
                *dlen = rdl;
                *data = rdl ? TAKE_PTR(rdata) : NULL;
        }
        return 0;
}

int ha_client_call(HaClient *c, const char *method, cJSON *params,
                   const void *payload, size_t plen,
                   HaReply *rep, uint8_t **data, size_t *dlen)
{
        return call(c, method, params, payload, plen, rep, data, dlen, NULL);
}

int ha_client_call_fds(HaClient *c, const char *method, cJSON *params,
                       HaReply *rep, int *fds, int max, int *nfds)
{
        FdSink sink = { fds, max, 0 };
        int r = call(c, method, params, NULL, 0, rep, NULL, NULL, &sink);

        if (r < 0)
                while (sink.n > 0)
                        close(fds[--sink.n]);
        *nfds = sink.n;
        return r;
}
