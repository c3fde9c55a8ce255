/* SPDX-License-Identifier: MIT */
/* The protocol codec on well-formed, malformed and oversize input. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "proto.h"

static enum ha_error parse_err(const char *json, HaRequest *req)
{
        enum ha_error err = _HA_ERROR_MAX;
        const char *msg = NULL;
        int r = ha_request_parse(json, strlen(json), req, &err, &msg);

        if (r == 0)
                return _HA_ERROR_MAX;
        CHECK(msg && *msg);
        return err;
}

static void test_header(void)
{
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        uint32_t j, d;
        enum ha_error err;

        ha_frame_hdr_write(hdr, 0x01020304, 0x0a0b0c0d);
        CHECK(hdr[0] == 1 && hdr[3] == 4 && hdr[4] == 0x0a && hdr[7] == 0x0d);   /* big-endian */

        ha_frame_hdr_write(hdr, 40, 100);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 100, &j, &d, &err), 0);
        CHECK_EQ(j, 40);
        CHECK_EQ(d, 100);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 99, &j, &d, &err), -EMSGSIZE);
        CHECK_EQ(err, HA_E_TOO_BIG);
        ha_frame_hdr_write(hdr, HA_PROTO_MAX_JSON, 0);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 0, &j, &d, &err), 0);
        ha_frame_hdr_write(hdr, HA_PROTO_MAX_JSON + 1, 0);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 0, &j, &d, &err), -EMSGSIZE);
        CHECK_EQ(err, HA_E_TOO_BIG);
        ha_frame_hdr_write(hdr, 0xffffffff, 0xffffffff);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 1u << 20, &j, &d, &err), -EMSGSIZE);
        ha_frame_hdr_write(hdr, 1, 0);
        CHECK_EQ(ha_frame_hdr_parse(hdr, 0, &j, &d, &err), -EBADMSG);
        CHECK_EQ(err, HA_E_PROTO);
}

static void test_requests(void)
{
        HaRequest req;
        enum ha_error err;
        const char *msg;
        static const char ok[] = "{\"v\":1,\"id\":42,\"method\":\"submit\",\"params\":{\"service\":1}}";

        CHECK_EQ(ha_request_parse(ok, strlen(ok), &req, &err, &msg), 0);
        CHECK(req.has_id && req.id == 42);
        CHECK(strcmp(req.method, "submit") == 0);
        CHECK(cJSON_IsObject(req.params));
        ha_request_done(&req);

        /* Not NUL-terminated: the parser must stop at len. */
        char buf[sizeof(ok) + 8];
        memcpy(buf, ok, sizeof(ok) - 1);
        memset(buf + sizeof(ok) - 1, 'x', 9);
        CHECK_EQ(ha_request_parse(buf, sizeof(ok) - 1, &req, &err, &msg), 0);
        ha_request_done(&req);

        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"ping\"}", &req), _HA_ERROR_MAX);
        CHECK(!req.has_id);
        ha_request_done(&req);

        CHECK_EQ(parse_err("not json", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"ping\"", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("[1,2]", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"method\":\"ping\"}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":2,\"id\":7,\"method\":\"ping\"}", &req), HA_E_VERSION);
        CHECK(req.has_id && req.id == 7);       /* so the error can carry it */
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":5}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"submit\",\"params\":[]}", &req), HA_E_INVALID);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"id\":-1,\"method\":\"ping\"}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"id\":1.5,\"method\":\"ping\"}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"id\":1e300,\"method\":\"ping\"}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"id\":\"7\",\"method\":\"ping\"}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"id\":9007199254740991,\"method\":\"ping\"}", &req), _HA_ERROR_MAX);
        CHECK(req.id == 9007199254740991ull);
        ha_request_done(&req);
        CHECK_EQ(parse_err("", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"ping\"} junk", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"ping\"}{}", &req), HA_E_PROTO);
        ha_request_done(&req);
        CHECK_EQ(parse_err("{\"v\":1,\"method\":\"ping\"} \r\n", &req), _HA_ERROR_MAX);
        ha_request_done(&req);
}

static void test_replies(void)
{
        HaReply rep;
        static const char ok[] = "{\"v\":1,\"id\":3,\"result\":{\"pong\":true}}";
        static const char err[] = "{\"v\":1,\"error\":{\"code\":\"E_BUSY\",\"message\":\"full\"}}";

        CHECK_EQ(ha_reply_parse(ok, strlen(ok), &rep), 0);
        CHECK(rep.has_id && rep.id == 3 && rep.result && !rep.error_code);
        ha_reply_done(&rep);
        CHECK_EQ(ha_reply_parse(err, strlen(err), &rep), 0);
        CHECK(!rep.has_id && !rep.result && strcmp(rep.error_code, "E_BUSY") == 0);
        CHECK(strcmp(rep.error_message, "full") == 0);
        ha_reply_done(&rep);
        CHECK_EQ(ha_reply_parse("{\"v\":1}", 7, &rep), -EBADMSG);
        CHECK_EQ(ha_reply_parse("{\"v\":2,\"result\":{}}", 19, &rep), -EBADMSG);
        CHECK_EQ(ha_reply_parse("{\"v\":1,\"error\":{}}", 18, &rep), -EBADMSG);

        CHECK(strcmp(ha_error_name(HA_E_TOO_BIG), "E_TOO_BIG") == 0);
        CHECK(strcmp(ha_error_name(_HA_ERROR_MAX), "E_INTERNAL") == 0);
        /* Append-only: the first codes keep their numbers. */
        CHECK_EQ(HA_E_PROTO, 0);
        CHECK_EQ(HA_E_BUSY, 5);
}

int main(void)
{
        test_header();
        test_requests();
        test_replies();
        return check_done("test-proto");
}
