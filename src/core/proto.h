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
