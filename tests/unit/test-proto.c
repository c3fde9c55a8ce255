/* SPDX-License-Identifier: MIT */
/* The protocol codec on well-formed, malformed and oversize input. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "hyperamp/cleanup.h"
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

/* The bytes every envelope had before proto.c wrote them all: old clients
 * and tests match on them. */
static void test_envelopes(void)
{
        char buf[256], small[12];
        cJSON *p = cJSON_CreateObject(), *res;
        size_t len = 0;
        char *s;
        HaReply rep;
        HaRequest req;
        enum ha_error err;
        const char *msg;
        int n;

        /* Requests: bench's submit, lib's attach, ctl's tree. */
        n = ha_request_write(buf, sizeof(buf), 7, HA_METHOD_SUBMIT, "{\"service\":1}");
        CHECK(strcmp(buf, "{\"v\":1,\"id\":7,\"method\":\"submit\",\"params\":{\"service\":1}}") == 0);
        CHECK_EQ(n, strlen(buf));
        CHECK_EQ(ha_request_parse(buf, (size_t)n, &req, &err, &msg), 0);
        CHECK(req.has_id && req.id == 7 && strcmp(req.method, "submit") == 0);
        ha_request_done(&req);
        n = ha_request_write(buf, sizeof(buf), HA_NO_ID, HA_METHOD_PING, NULL);
        CHECK(strcmp(buf, "{\"v\":1,\"method\":\"ping\"}") == 0);
        /* Too small: snprintf's rules, the length it needs and a cut string. */
        CHECK_EQ(ha_request_write(small, sizeof(small), 7, HA_METHOD_PING, NULL), 30);
        CHECK_EQ(strlen(small), sizeof(small) - 1);
        CHECK_EQ(ha_request_write(NULL, 0, 123456789012345ull, HA_METHOD_PING, NULL), 44);
        CHECK_EQ(ha_request_write(buf, sizeof(buf), 1, "pi\"ng", NULL), -EINVAL);
        CHECK_EQ(ha_request_write(buf, sizeof(buf), 1, "pi\\ng", NULL), -EINVAL);
        CHECK_EQ(ha_request_write(buf, sizeof(buf), 1, "pi\nng", NULL), -EINVAL);
        CHECK(ha_request_print(1, "a\"b", NULL, &len) == NULL);
        cJSON_AddTrueToObject(p, "resume");
        s = ha_request_print(1, HA_METHOD_ATTACH, p, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":1,\"method\":\"attach\",\"params\":{\"resume\":true}}") == 0);
        CHECK(s && len == strlen(s));
        free(s);
        s = ha_request_print(1, HA_METHOD_ATTACH, NULL, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":1,\"method\":\"attach\"}") == 0);
        free(s);
        cJSON_Delete(p);

        /* Replies: ids up to 2^53-1 come back exact. */
        res = cJSON_CreateObject();
        cJSON_AddBoolToObject(res, "pong", true);
        s = ha_reply_print(9007199254740991ull, res, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":9007199254740991,\"result\":{\"pong\":true}}") == 0);
        CHECK(s && ha_reply_parse(s, len, &rep) == 0 && rep.has_id && rep.id == 9007199254740991ull &&
              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep.result, "pong")));
        ha_reply_done(&rep);
        free(s);
        s = ha_reply_print(HA_NO_ID, res, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"result\":{\"pong\":true}}") == 0);
        free(s);
        cJSON_Delete(res);

        /* Errors: the connection-limit refusal, a default text, quoting. */
        s = ha_reply_error_print(HA_NO_ID, HA_E_LIMIT, "connection limit (8) reached", &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"error\":{\"code\":\"E_LIMIT\",\"message\":"
                             "\"connection limit (8) reached\"}}") == 0);
        free(s);
        s = ha_reply_error_print(5, HA_E_BUSY, NULL, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":5,\"error\":{\"code\":\"E_BUSY\",\"message\":"
                             "\"queue or buffer pool full, try again\"}}") == 0);
        free(s);
        s = ha_reply_error_print(5, HA_E_INVALID, "bad \"x\xff\"", &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":5,\"error\":{\"code\":\"E_INVALID\",\"message\":"
                             "\"bad \\\"x\xef\xbf\xbd\\\"\"}}") == 0);
        CHECK(s && len == strlen(s) && ha_utf8_valid_prefix(s, len) == len);
        free(s);

        /* The submit reply, formatted without a tree. */
        n = ha_reply_submit_write(buf, sizeof(buf), 42, 3, "SUCCESS", 1, 12345);
        CHECK(strcmp(buf, "{\"v\":1,\"id\":42,\"result\":{\"service\":3,\"status\":\"SUCCESS\","
                          "\"code\":1,\"latency_us\":12.3}}") == 0);
        CHECK_EQ(n, strlen(buf));
        ha_reply_submit_write(buf, sizeof(buf), HA_NO_ID, 65535, "FAIL", 2, 0);
        CHECK(strcmp(buf, "{\"v\":1,\"result\":{\"service\":65535,\"status\":\"FAIL\","
                          "\"code\":2,\"latency_us\":0.0}}") == 0);

        /* The attach result zones builds as a tree prints as the format it
         * replaced did, sizes past 2^31 too. */
        res = cJSON_CreateObject();
        cJSON_AddNumberToObject(res, "slot", 1);
        cJSON_AddNumberToObject(res, "size", (double)4294971392ull);
        cJSON_AddBoolToObject(res, "resume", false);
        s = ha_reply_print(3, res, &len);
        CHECK(s && strcmp(s, "{\"v\":1,\"id\":3,\"result\":{\"slot\":1,\"size\":4294971392,"
                             "\"resume\":false}}") == 0);
        free(s);
        cJSON_Delete(res);
}

/* A frame with fds goes out in one message, the fds on its first byte. */
static void test_frame_send(void)
{
        static const char json[] = "{\"v\":1,\"result\":{}}";
        uint8_t buf[64], want[64];
        int sv[2], fds[3], got[3];
        union {
                char c[CMSG_SPACE(3 * sizeof(int))];
                struct cmsghdr align;
        } u;
        struct iovec iov = { buf, sizeof(buf) }, fiov[3];
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
                             .msg_controllen = sizeof(u.c) };
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        ssize_t n;

        CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        for (int i = 0; i < 3; i++)
                fds[i] = dup(STDERR_FILENO);
        CHECK_EQ(ha_frame_send(sv[0], json, strlen(json), fds, 3, MSG_NOSIGNAL),
                 HA_PROTO_HDR_SIZE + strlen(json));
        CHECK_EQ(ha_frame_send(sv[0], json, strlen(json), fds, 4, 0), -EINVAL);
        n = recvmsg(sv[1], &mh, MSG_CMSG_CLOEXEC);
        CHECK_EQ(n, HA_PROTO_HDR_SIZE + strlen(json));
        CHECK_EQ(ha_fds_take(&mh, got, 3), 3);
        ha_frame_hdr_write(want, (uint32_t)strlen(json), 0);
        memcpy(want + HA_PROTO_HDR_SIZE, json, strlen(json));
        CHECK(memcmp(buf, want, (size_t)n) == 0);
        for (int i = 0; i < 3; i++) {
                close(fds[i]);
                close(got[i]);
        }
        /* Without fds, with a payload: the iovecs in wire order. */
        CHECK_EQ(ha_frame_iov(fiov, hdr, json, 5, "data", 4), 3);
        CHECK(fiov[0].iov_base == hdr && fiov[0].iov_len == HA_PROTO_HDR_SIZE);
        CHECK(fiov[1].iov_base == json && fiov[1].iov_len == 5);
        CHECK(fiov[2].iov_len == 4 && hdr[3] == 5 && hdr[7] == 4);
        CHECK_EQ(ha_frame_iov(fiov, hdr, json, 5, NULL, 0), 2);
        close(sv[0]);
        close(sv[1]);
}

static bool fast(const char *json, HaSubmitFast *f)
{
        bool ok = ha_submit_parse_fast(json, strlen(json), f);

        CHECK(ha_submit_fast_agrees(json, strlen(json)));
        return ok;
}

/* The daemon's submit fast path: it takes the plain shape only, and only
 * what the general parser reads the same way; old clients' frames (any
 * key order, spaces, a name, no id) are taken or go the general way. */
static void test_submit_fast(void)
{
        HaSubmitFast f;
        static const char *const taken[] = {
                "{\"v\":1,\"id\":42,\"method\":\"submit\",\"params\":{\"service\":1}}",
                " { \"method\" : \"submit\" ,\"params\":{ \"service\" :\"echo\"},\"id\":0,\"v\":1}\r\n",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":65535}}",
                "{\"v\":1,\"id\":9007199254740991,\"method\":\"submit\",\"params\":{\"service\":\"7\"}}",
        };
        static const char *const declined[] = {
                "{\"v\":1,\"id\":1,\"method\":\"ping\"}",
                "{\"v\":2,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1.0,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":1.5,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":1.0,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":1e3,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":-1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":01,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":9007199254740992,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":99999999999999999999999,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":\"1\",\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":1,\"id\":2,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"method\":\"ping\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1,\"service\":2}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":65536}}",
                /* The writer's own shape, one thing off (its matcher's edges). */
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":65536}}",
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":01}}",
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1e2}}",
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1.0}}",
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":}}",
                "{\"v\":1,\"id\":,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1}}}",
                "{\"v\":1,\"id\":1,\"method\":\"submits\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":true}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"\"}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"ec\\u0068o\"}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"echo\\u0000x\"}}",
                "{\"v\":1,\"method\":\"sub\\u006dit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\\u0000\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"\xc3\xa9\"}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1},\"x\":0}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1,\"x\":0}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":[1]}",
                "{\"v\":1,\"method\":\"submit\"}",
                "{\"id\":1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1}} x",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1},}",
                "{\"v\":1,,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "\x01{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1}}",
                "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":1}}\x0b",
                "{}",
                "",
        };
        static const char nul[] = "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"ec\0ho\"}}";
        char big[256];
        int n;

        for (size_t i = 0; i < ELEMENTSOF(taken); i++)
                CHECK(fast(taken[i], &f));
        CHECK(fast(taken[0], &f) && f.has_id && f.id == 42 && f.service == 1 && !f.name[0]);
        CHECK(fast(taken[1], &f) && f.has_id && f.id == 0 && strcmp(f.name, "echo") == 0);
        CHECK(fast(taken[2], &f) && !f.has_id && f.id == HA_NO_ID && f.service == 65535);
        CHECK(fast(taken[3], &f) && f.id == 9007199254740991ull && strcmp(f.name, "7") == 0);
        /* The writer's shape after a named one: no name left over. */
        CHECK(fast(taken[0], &f) && !f.name[0] && f.service == 1);
        /* The writer's shape with a blank before a number (the matcher's)
         * and a newline after it (the scanner's): read the same. */
        CHECK(fast("{\"v\":1,\"id\":7,\"method\":\"submit\",\"params\":{\"service\": 3}}\n", &f) &&
              f.has_id && f.id == 7 && f.service == 3 && !f.name[0]);
        for (size_t i = 0; i < ELEMENTSOF(declined); i++) {
                if (fast(declined[i], &f))
                        fprintf(stderr, "taken: %s\n", declined[i]);
                CHECK(!ha_submit_parse_fast(declined[i], strlen(declined[i]), &f));
        }
        /* What the bench client writes is what the fast path takes. */
        n = ha_request_submit_write(big, sizeof(big), 9007199254740991ull, 65535);
        CHECK(n > 0 && ha_submit_parse_fast(big, (size_t)n, &f) && f.has_id &&
              f.id == 9007199254740991ull && f.service == 65535 && !f.name[0]);
        CHECK(ha_submit_fast_agrees(big, (size_t)n));
        {
                /* The writer puts no NUL after the frame: compare n bytes. */
                static const char want[] = "{\"v\":1,\"id\":9007199254740991,\"method\":\"submit\","
                                           "\"params\":{\"service\":65535}}";

                CHECK(n == (int)strlen(want) && memcmp(big, want, strlen(want)) == 0);
        }
        CHECK_EQ(ha_request_submit_write(big, 16, 1, 1), -EINVAL);
        /* A raw NUL inside the frame: the frame length covers it. */
        CHECK(!ha_submit_parse_fast(nul, sizeof(nul) - 1, &f));
        CHECK(ha_submit_fast_agrees(nul, sizeof(nul) - 1));
        /* Truncated at every length: never taken, never read past len. */
        for (size_t k = 0; k < strlen(taken[0]); k++)
                CHECK(!ha_submit_parse_fast(taken[0], k, &f));
        /* A name longer than the room for it is the general path's. */
        snprintf(big, sizeof(big), "{\"v\":1,\"method\":\"submit\",\"params\":{\"service\":\"%0100d\"}}", 7);
        CHECK(!fast(big, &f));
}

/* The submit reply without snprintf: exact text, rounding, the client's
 * fast reader, and the general parser agreeing. */
static void test_submit_reply(void)
{
        char out[HA_SUBMIT_JSON_MAX];
        unsigned svc;
        HaReply rep;
        uint64_t id;
        bool ok;
        int n;

        n = ha_reply_submit_write(out, sizeof(out), 9007199254740991ull, 65535, "SUCCESS", 1, 41549);
        CHECK(n > 0 && strcmp(out, "{\"v\":1,\"id\":9007199254740991,\"result\":{\"service\":65535,"
                              "\"status\":\"SUCCESS\",\"code\":1,\"latency_us\":41.5}}") == 0);
        CHECK_EQ(ha_reply_parse(out, (size_t)n, &rep), 0);
        CHECK(rep.has_id && rep.id == 9007199254740991ull && rep.result);
        ha_reply_done(&rep);
        CHECK(ha_reply_submit_parse_fast(out, (size_t)n, &id, &svc, &ok));
        CHECK(id == 9007199254740991ull && svc == 65535 && ok);
        for (int k = 0; k < n; k++)
                CHECK(!ha_reply_submit_parse_fast(out, (size_t)k, &id, &svc, &ok));
        /* Rounded half up to tenths: 0.04 -> 0.0, 0.05 -> 0.1. */
        n = ha_reply_submit_write(out, sizeof(out), HA_NO_ID, 0, "SERVICE_ERROR", 4, 40);
        CHECK(n > 0 && strcmp(out, "{\"v\":1,\"result\":{\"service\":0,\"status\":\"SERVICE_ERROR\","
                              "\"code\":4,\"latency_us\":0.0}}") == 0);
        CHECK(!ha_reply_submit_parse_fast(out, (size_t)n, &id, &svc, &ok));   /* no id */
        n = ha_reply_submit_write(out, sizeof(out), 1, 0, "SUCCESS", 1, 50);
        CHECK(n > 0 && strstr(out, "\"latency_us\":0.1}") != NULL);
        n = ha_reply_submit_write(out, sizeof(out), 0, 3, "SERVICE_ERROR", 4, 123456789050ull);
        CHECK_EQ(ha_reply_parse(out, (size_t)n, &rep), 0);
        CHECK(fabs(cJSON_GetObjectItem(rep.result, "latency_us")->valuedouble - 123456789.1) < 1e-6);
        ha_reply_done(&rep);
        CHECK(ha_reply_submit_parse_fast(out, (size_t)n, &id, &svc, &ok) && id == 0 && svc == 3 && !ok);
        CHECK_EQ(ha_reply_submit_write(out, 64, 1, 1, "SUCCESS", 1, 0), -EINVAL);
        /* Anything else is the general parser's. */
        CHECK(!ha_reply_submit_parse_fast("{\"v\":1,\"id\":3,\"result\":{\"pong\":true}}", 35,
                                          &id, &svc, &ok));
}

int main(void)
{
        test_header();
        test_requests();
        test_replies();
        test_nul_in_strings();
        test_utf8();
        test_envelopes();
        test_frame_send();
        test_submit_fast();
        test_submit_reply();
        return check_done("test-proto");
}
