/* SPDX-License-Identifier: MIT */
#ifndef HA_PROTO_H
#define HA_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "hyperamp/protocol.h"

void ha_frame_hdr_write(uint8_t hdr[HA_PROTO_HDR_SIZE], uint32_t json_len, uint32_t data_len);

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
 * The hot path: a submit request in its plain shape, without a JSON tree
 * or an allocation.  Accepts only an object with the keys "v" (exactly 1),
 * "id" (optional, digits only, at most 2^53-1), "method" (exactly "submit")
 * and "params" (an object whose one key "service" is an id of digits up to
 * 65535, or a name of 1 to 63 printable ASCII bytes without escapes),
 * each once, in any order, JSON whitespace between tokens.  true: what
 * ha_request_parse makes of it (name[0]: the service by that name, for
 * ha_service_parse; else the id in service).  false for anything else,
 * which then takes the general path (and its errors).
 */
typedef struct HaSubmitFast {
        bool has_id;
        uint64_t id;
        uint16_t service;
        char name[64];
} HaSubmitFast;

bool ha_submit_parse_fast(const char *json, size_t len, HaSubmitFast *f);
/* For tests and the fuzzer: false when the fast parser takes json and
 * ha_request_parse makes something else of it. */
bool ha_submit_fast_agrees(const char *json, size_t len);

/* A client's: {"v":1,"id":ID,"method":"submit","params":{"service":S}}
 * into out (at least HA_SUBMIT_REPLY_MAX bytes); returns the length. */
size_t ha_submit_request_write(char *out, uint64_t id, uint16_t service);

/*
 * Its reply, for success and failure alike, written without snprintf or an
 * allocation: {"v":1[,"id":ID],"result":{"service":S,"status":"NAME",
 * "code":C,"latency_us":X.Y}}; has_id false: no "id".  out needs
 * HA_SUBMIT_REPLY_MAX bytes; returns the length.
 */
#define HA_SUBMIT_REPLY_MAX 192
size_t ha_submit_reply_write(char *out, bool has_id, uint64_t id, uint16_t service,
                             const char *status, int code, uint64_t latency_ns);

/*
 * A client's hot path: a reply in exactly the shape ha_submit_reply_write
 * makes, with an id.  true with *id, *service and *status_ok (status
 * "SUCCESS"); false for anything else: use ha_reply_parse.
 */
bool ha_submit_reply_parse_fast(const char *json, size_t len, uint64_t *id, uint16_t *service,
                                bool *status_ok);

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
