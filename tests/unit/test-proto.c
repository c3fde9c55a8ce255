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

/* Issue 16 item 6: cJSON ends a string at its first NUL, so "ping\u0000junk"
 * read as ping.  A NUL is refused wherever it is, with the error its
 * place calls for. */
static enum ha_error parse_len(const char *json, size_t len)
{
        HaRequest req;
        enum ha_error err = _HA_ERROR_MAX;
        const char *msg = NULL;

        if (ha_request_parse(json, len, &req, &err, &msg) == 0)
                err = _HA_ERROR_MAX;
        ha_request_done(&req);
        return err;
}

#define PARSE(lit) parse_len(lit, sizeof(lit) - 1)

static void test_nul_in_strings(void)
{
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"ping\\u0000junk\"}"), HA_E_METHOD);
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"shutdown\\u0000\"}"), HA_E_METHOD);
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"ping\0\"}"), HA_E_METHOD);     /* raw */
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"submit\",\"params\":"
                       "{\"service\":\"encrypt\\u0000x\"}}"), HA_E_INVALID);
        CHECK_EQ(PARSE("{\"v\":1,\"method\\u0000x\":\"ping\",\"method\":\"ping\"}"),
                 HA_E_PROTO);
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"ping\",\"x\":[\"a\",{\"b\":\"\\u0000\"}]}"),
                 HA_E_PROTO);
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"submit\",\"params\":"
                       "{\"x\":\"\\u0000\",\"service\":\"encrypt\"}}"), HA_E_PROTO);
        /* Not a NUL: an escaped backslash, then text; other escapes. */
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"ping\",\"x\":\"\\\\u0000\"}"), _HA_ERROR_MAX);
        CHECK_EQ(PARSE("{\"v\":1,\"method\":\"ping\",\"x\":\"\\\"\\u0001\\u00e9\"}"),
                 _HA_ERROR_MAX);
}

/* Issue 16 item 5: every reply is valid UTF-8, whatever it quotes. */
static void test_utf8(void)
{
        static const struct {
                const char *in;
                size_t valid;   /* well-formed prefix */
                const char *fixed;
        } cases[] = {
                { "plain", 5, "plain" },
                { "caf\xc3\xa9", 5, "caf\xc3\xa9" },
                { "\xf0\x9f\x98\x80!", 5, "\xf0\x9f\x98\x80!" },
                { "cut \xe2\x82", 4, "cut \xef\xbf\xbd\xef\xbf\xbd" },        /* %.64s cut a sequence */
                { "\xff\xfe", 0, "\xef\xbf\xbd\xef\xbf\xbd" },
                { "\xc0\xaf", 0, "\xef\xbf\xbd\xef\xbf\xbd" },                /* overlong '/' */
                { "\xed\xa0\x80", 0, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },    /* surrogate */
                { "\xf4\x90\x80\x80", 0,
                  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },         /* > U+10FFFF */
                { "a\x80" "b", 1, "a\xef\xbf\xbd" "b" },
        };
        char out[64];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                size_t len = strlen(cases[i].in), n;

                CHECK_EQ(ha_utf8_valid_prefix(cases[i].in, len), cases[i].valid);
                n = ha_utf8_repair(cases[i].in, len, out);
                CHECK_EQ(n, strlen(cases[i].fixed));
                CHECK(memcmp(out, cases[i].fixed, n) == 0);
                CHECK_EQ(ha_utf8_valid_prefix(out, n), n);
        }
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
        test_nul_in_strings();
        test_utf8();
        return check_done("test-proto");
}
