/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the control-protocol frame header, request and reply decoders,
 * and the envelope writers: whatever decodes is written again, and what is
 * written must decode to the same id and method.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
        if (!ok)
                abort();
}

/* A decoded request, written again through proto.c. */
static void rewrite_request(const HaRequest *req)
{
        uint64_t id = req->has_id ? req->id : HA_NO_ID;
        enum ha_error err;
        const char *msg;
        HaRequest again;
        size_t len = 0;
        char *s = ha_request_print(id, req->method, req->params, &len);

        if (!s) {       /* a method that would need escaping is refused */
                check(ha_request_write(NULL, 0, id, req->method, NULL) == -EINVAL);
                return;
        }
        check(len == strlen(s));
        check(ha_request_parse(s, len, &again, &err, &msg) == 0);
        check(again.has_id == req->has_id && (!req->has_id || again.id == req->id));
        check(strcmp(again.method, req->method) == 0);
        ha_request_done(&again);
        free(s);
}

/* A decoded reply, written again: the id stays, the text is UTF-8. */
static void rewrite_reply(const HaReply *rep)
{
        uint64_t id = rep->has_id ? rep->id : HA_NO_ID;
        size_t len = 0;
        char *s = rep->result ? ha_reply_print(id, rep->result, &len) :
                  ha_reply_error_print(id, HA_E_INTERNAL, rep->error_message, &len);
        HaReply again;

        check(s != NULL);
        check(ha_utf8_valid_prefix(s, len) == len);
        check(ha_reply_parse(s, len, &again) == 0);
        check(again.has_id == rep->has_id && (!rep->has_id || again.id == rep->id));
        check(!again.result == !rep->result);
        ha_reply_done(&again);
        free(s);
}

/* The submit reply's format, from fuzzed numbers. */
static void submit_reply(const uint8_t *data, size_t size)
{
        uint64_t id = 0;
        uint16_t svc = 0;
        char buf[256];
        HaReply rep;
        int n;

        if (size < 10)
                return;
        memcpy(&id, data, 8);
        memcpy(&svc, data + 8, 2);
        id %= (uint64_t)HA_PROTO_MAX_ID + 1;
        n = ha_reply_submit_write(buf, sizeof(buf), id, svc, "SUCCESS", 1, (double)(id % 1000000));
        check(n > 0 && (size_t)n < sizeof(buf));
        check(ha_reply_parse(buf, (size_t)n, &rep) == 0 && rep.has_id && rep.id == id);
        ha_reply_done(&rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint32_t jlen, dlen;
        enum ha_error err;
        const char *msg;
        HaRequest req;
        HaReply rep;

        submit_reply(data, size);
        if (size < HA_PROTO_HDR_SIZE)
                return 0;
        if (ha_frame_hdr_parse(data, 1u << 20, &jlen, &dlen, &err) < 0)
                return 0;
        data += HA_PROTO_HDR_SIZE;
        size -= HA_PROTO_HDR_SIZE;
        if (jlen > size)
                jlen = (uint32_t)size;  /* as much as arrived */
        if (ha_request_parse((const char *)data, jlen, &req, &err, &msg) == 0)
                rewrite_request(&req);
        ha_request_done(&req);
        if (ha_reply_parse((const char *)data, jlen, &rep) == 0) {
                rewrite_reply(&rep);
                ha_reply_done(&rep);
        }
        return 0;
}
