/* SPDX-License-Identifier: MIT */
/*
 * libhyperamp: submit HyperAMP requests to hyperampd straight through shared
 * memory.  Link with `pkg-config --cflags --libs hyperamp`.
 *
 *     hyperamp_t *h;
 *     hyperamp_req_t *r;
 *     hyperamp_attach(NULL, &h);               // NULL: the default socket path
 *     hyperamp_alloc(h, 5, &r);
 *     memcpy(hyperamp_req_data(r), "hello", 5);
 *     hyperamp_submit(r, HYPERAMP_SERVICE_ENCRYPT, 5);
 *     if (hyperamp_wait(r, 1000) == HYPERAMP_SUCCESS)
 *             use(hyperamp_req_data(r), 5);   // the result, in place
 *     hyperamp_release(r);
 *     hyperamp_detach(h);
 *
 * Every call returns 0 (or a documented non-negative value) on success and
 * a negative errno on failure.  A handle may be shared by the threads of a
 * process; each process attaches its own.  A request belongs to one thread
 * at a time.  If the process dies, hyperampd takes its lease back whole.
 * If hyperampd dies, hyperamp_wait() hands the lease to the next one, which
 * answers every submitted request exactly once.
 */
#ifndef HYPERAMP_HYPERAMP_H
#define HYPERAMP_HYPERAMP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
        HYPERAMP_SERVICE_ENCRYPT = 1,
        HYPERAMP_SERVICE_DECRYPT = 2,
        HYPERAMP_SERVICE_ECHO = 66,
};

/* Results, as the HyperAMP wire format has them. */
enum {
        HYPERAMP_NONE = 0,
        HYPERAMP_SUCCESS = 1,
        HYPERAMP_FAIL = 2,
        HYPERAMP_NOT_EXITS = 3,         /* no such service (original spelling) */
};

typedef struct hyperamp hyperamp_t;
typedef struct hyperamp_req hyperamp_req_t;

/* Attach to hyperampd listening on socket_path (NULL: resolved as
 * hyperampctl does).  -ENOENT/-ECONNREFUSED: no daemon; -EBUSY: every zone
 * slot is taken (try later); -EOPNOTSUPP: the daemon has zone channels
 * turned off (zone_clients 0). */
int hyperamp_attach(const char *socket_path, hyperamp_t **ret);
/* Give the lease back.  Outstanding requests are abandoned. */
void hyperamp_detach(hyperamp_t *h);

/* Take a queue entry and a buffer of at least size bytes.  -EAGAIN when
 * none is free right now, -E2BIG when size can never fit. */
int hyperamp_alloc(hyperamp_t *h, size_t size, hyperamp_req_t **ret);
void *hyperamp_req_data(hyperamp_req_t *r);
size_t hyperamp_req_capacity(const hyperamp_req_t *r);

/* Run service on the first len bytes of the buffer.  Returns at once;
 * 0 means queued. */
int hyperamp_submit(hyperamp_req_t *r, uint16_t service, size_t len);

/*
 * Wait for the result: a short adaptive spin, then a futex sleep.  Returns
 * the result code (HYPERAMP_SUCCESS...) or -ETIMEDOUT after timeout_ms
 * (negative: no limit).  If hyperampd went away, the wait reconnects and
 * hands the lease to the daemon that replaces it, and waits on; it returns
 * -ECONNRESET if none took the lease back (within 30 s when there is no
 * limit), after which the handle can only be detached.
 */
int hyperamp_wait(hyperamp_req_t *r, int timeout_ms);
/* Non-blocking: the result code if done, -EAGAIN if not yet. */
int hyperamp_poll(hyperamp_req_t *r);

/*
 * For event loops: an fd that becomes readable after a completion that
 * follows hyperamp_arm().  When it is readable, drain it (read() until
 * EAGAIN), call hyperamp_arm() FIRST, and only then check requests with
 * hyperamp_poll(): a completion between a check and a later arm would not
 * make the fd readable.  It does not tell that hyperampd died: hand a
 * request that stays pending to hyperamp_wait(), which resumes.  After a
 * resume the number is the same, the socket behind it new: an epoll set
 * must add it again.
 */
int hyperamp_fd(hyperamp_t *h);
void hyperamp_arm(hyperamp_t *h);

/* Hand the entry and buffer back (after the result was read).  -EBUSY:
 * the request is still running (wait for it, then release); -EINVAL:
 * already released. */
int hyperamp_release(hyperamp_req_t *r);

#ifdef __cplusplus
}
#endif

#endif
