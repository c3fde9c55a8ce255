/* SPDX-License-Identifier: MIT */
#ifndef HA_PROTO_H
#define HA_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

#include "hyperamp/protocol.h"

/* A request or reply without "id" (none sent, or none could be read). */
#define HA_NO_ID UINT64_MAX
/* The most fds one frame carries (zone attach). */
#define HA_PROTO_MAX_FDS 3

void ha_frame_hdr_write(uint8_t hdr[HA_PROTO_HDR_SIZE], uint32_t json_len, uint32_t data_len);

/*
 * A whole frame as iovecs: hdr (the caller's room for the header), json,
 * then data when dlen > 0.  Returns how many of iov[3] it filled.
 */
int ha_frame_iov(struct iovec iov[3], uint8_t hdr[HA_PROTO_HDR_SIZE],
                 const void *json, size_t jlen, const void *data, size_t dlen);

/*
 * Send a frame without payload in one sendmsg, with nfds fds
 * (SCM_RIGHTS, at most HA_PROTO_MAX_FDS) on its first byte.  Returns the
 * bytes sent (maybe short) or -errno.
 */
long ha_frame_send(int fd, const char *json, size_t jlen, const int *fds, size_t nfds, int flags);

/*
 * Envelopes.  Every request and reply on the wire is written here, so the
 * keys and their order live in one place:
 *
 *   {"v":1,"id":N,"method":"M","params":{...}}          request
 *   {"v":1,"id":N,"result":{...}}                       reply
 *   {"v":1,"id":N,"error":{"code":"E_X","message":"..."}}
 *
 * "id" is left out for HA_NO_ID, "params" for NULL.  The _write calls
 * format into buf as snprintf does (the length needed is returned, and
 * nothing past size is written); the _print calls return a malloc'd,
 * NUL-terminated string and its length (NULL when out of memory, or for
 * a request, a bad method).
 */
/* method: a name from protocol.h (-EINVAL for one that would need
 * escaping); params: a JSON object's text or NULL. */
int ha_request_write(char *buf, size_t size, uint64_t id, const char *method, const char *params);
char *ha_request_print(uint64_t id, const char *method, const cJSON *params, size_t *len);

/* Replies are UTF-8 even where a message quotes a client's bytes. */
char *ha_reply_print(uint64_t id, const cJSON *result, size_t *len);
char *ha_reply_error_print(uint64_t id, enum ha_error code, const char *message, size_t *len);
/* The submit reply, the hot path: no tree.  status is ha_result_name(code). */
int ha_reply_submit_write(char *buf, size_t size, uint64_t id, unsigned service,
                          const char *status, int code, double latency_us);

/*
 * Check a received header.  0 on success; otherwise *err says why:
 * E_PROTO (a JSON part too short to be an object), E_TOO_BIG (json_len over
 * HA_PROTO_MAX_JSON or data_len over max_data).
 */
int ha_frame_hdr_parse(const uint8_t hdr[HA_PROTO_HDR_SIZE], uint32_t max_data,
                       uint32_t *json_len, uint32_t *data_len, enum ha_error *err);

/* A decoded request; owns the cJSON tree. */
typedef struct HaRequest {
        cJSON *root;
        bool has_id;
        uint64_t id;
        const char *method;
        const cJSON *params;    /* an object, or NULL */
} HaRequest;

/*
 * Decode and validate the JSON part of a request frame.  On failure returns
 * -EBADMSG with *err and a static *msg; the id is still filled in when it
 * could be read, so the error reply can carry it.
 */
int ha_request_parse(const char *json, size_t len, HaRequest *req,
                     enum ha_error *err, const char **msg);
void ha_request_done(HaRequest *req);

/*
 * Replies are UTF-8 and may quote what a client sent.  valid_prefix: how
 * many leading bytes of s are well-formed UTF-8 (len: all of it).  repair:
 * s into out (room for 3 * len bytes) with each byte that starts no
 * well-formed sequence replaced by U+FFFD; returns the bytes written.
 */
size_t ha_utf8_valid_prefix(const char *s, size_t len);
size_t ha_utf8_repair(const char *s, size_t len, char *out);

/* A decoded reply, for clients and tests. */
typedef struct HaReply {
        cJSON *root;
        bool has_id;
        uint64_t id;
        const cJSON *result;        /* set on success */
        const char *error_code;     /* set on error */
        const char *error_message;
} HaReply;

int ha_reply_parse(const char *json, size_t len, HaReply *rep);
void ha_reply_done(HaReply *rep);

/*
 * File descriptors passed with SCM_RIGHTS (zone attach and resume).
 * ha_fds_put: n fds into mh, whose msg_control holds CMSG_SPACE(n * int).
 * ha_fds_take: those received with mh, at most max into fds; returns how
 * many, or -EINVAL after closing them all when more came (or the control
 * buffer was too small for them).
 */
struct msghdr;
void ha_fds_put(struct msghdr *mh, const int *fds, size_t n);
int ha_fds_take(struct msghdr *mh, int *fds, int max);

#endif
