/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proto.h"

static const char *const error_names[] = {
#define HA_ERR_NAME(name, text) #name,
        HA_ERRORS(HA_ERR_NAME)
#undef HA_ERR_NAME
};

static const char *const error_texts[] = {
#define HA_ERR_TEXT(name, text) text,
        HA_ERRORS(HA_ERR_TEXT)
#undef HA_ERR_TEXT
};

const char *ha_error_name(enum ha_error e)
{
        return (unsigned)e < _HA_ERROR_MAX ? error_names[e] : "E_INTERNAL";
}

const char *ha_error_text(enum ha_error e)
{
        return (unsigned)e < _HA_ERROR_MAX ? error_texts[e] : "internal error";
}

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void ha_frame_hdr_write(uint8_t hdr[HA_PROTO_HDR_SIZE], uint32_t json_len, uint32_t data_len)
{
        put_be32(hdr, json_len);
        put_be32(hdr + 4, data_len);
}

int ha_frame_iov(struct iovec iov[3], uint8_t hdr[HA_PROTO_HDR_SIZE],
                 const void *json, size_t jlen, const void *data, size_t dlen)
{
        ha_frame_hdr_write(hdr, (uint32_t)jlen, (uint32_t)dlen);
        iov[0] = (struct iovec){ hdr, HA_PROTO_HDR_SIZE };
        iov[1] = (struct iovec){ (void *)json, jlen };
        if (dlen == 0)
                return 2;
        iov[2] = (struct iovec){ (void *)data, dlen };
        return 3;
}

long ha_frame_send(int fd, const char *json, size_t jlen, const int *fds, size_t nfds, int flags)
{
        uint8_t hdr[HA_PROTO_HDR_SIZE];
        struct iovec iov[3];
        union {
                char buf[CMSG_SPACE(HA_PROTO_MAX_FDS * sizeof(int))];
                struct cmsghdr align;
        } u;
        struct msghdr mh = { .msg_iov = iov, .msg_control = u.buf };
        ssize_t n;

        if (nfds > HA_PROTO_MAX_FDS)
                return -EINVAL;
        mh.msg_iovlen = (size_t)ha_frame_iov(iov, hdr, json, jlen, NULL, 0);
        if (nfds > 0)
                ha_fds_put(&mh, fds, nfds);
        else
                mh.msg_control = NULL;
        n = sendmsg(fd, &mh, flags);
        return n < 0 ? -errno : (long)n;
}

int ha_frame_hdr_parse(const uint8_t hdr[HA_PROTO_HDR_SIZE], uint32_t max_data,
                       uint32_t *json_len, uint32_t *data_len, enum ha_error *err)
{
        uint32_t j = get_be32(hdr), d = get_be32(hdr + 4);

        *json_len = j;
        *data_len = d;
        if (j < 2) {
                *err = HA_E_PROTO;
                return -EBADMSG;
        }
        if (j > HA_PROTO_MAX_JSON || d > max_data) {
                *err = HA_E_TOO_BIG;
                return -EMSGSIZE;
        }
        return 0;
}

/* Ids are integers that a double holds exactly, so any JSON library agrees. */
static bool json_get_id(const cJSON *o, uint64_t *ret)
{
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        double v;

        if (!cJSON_IsNumber(id))
                return false;
        v = id->valuedouble;
        if (!(v >= 0 && v <= HA_PROTO_MAX_ID) || floor(v) != v)
                return false;
        *ret = (uint64_t)v;
        return true;
}

static int fail(enum ha_error *err, const char **msg, enum ha_error e, const char *m)
{
        *err = e;
        *msg = m;
        return -EBADMSG;
}

/*
 * The number, in document order (keys and values alike), of the first
 * string in valid JSON text that holds a NUL, raw or as \u0000; -1 when none.
 * cJSON keeps strings NUL-terminated, so "ping\u0000junk" would read as
 * "ping": the raw text is the only place the NUL can be seen.
 */
static long first_nul_string(const char *json, size_t len)
{
        long n = -1;
        bool in = false;

        for (size_t i = 0; i < len; i++) {
                char ch = json[i];

                if (!in) {
                        if (ch == '"') {
                                in = true;
                                n++;
                        }
                        continue;
                }
                if (ch == '"')
                        in = false;
                else if (ch == '\0')
                        return n;
                else if (ch == '\\' && i + 1 < len) {
                        if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0)
                                return n;
                        i++;    /* the escaped character: never a closing quote */
                }
        }
        return -1;
}

/* The node holding string number *n in document order (is_key: its key);
 * counts *n down on the way. */
static const cJSON *nth_string(const cJSON *node, long *n, bool *is_key)
{
        for (const cJSON *it = node->child; it; it = it->next) {
                const cJSON *found;

                if (cJSON_IsObject(node) && (*n)-- == 0) {
                        *is_key = true;
                        return it;
                }
                if (cJSON_IsString(it) && (*n)-- == 0) {
                        *is_key = false;
                        return it;
                }
                found = nth_string(it, n, is_key);
                if (found)
                        return found;
        }
        return NULL;
}

/* A string that names something must not hold a NUL: the method, a
 * service name, any key.  The error says which. */
static int check_nul(const char *json, size_t len, const HaRequest *req, const cJSON *method,
                     enum ha_error *err, const char **msg)
{
        long n = first_nul_string(json, len);
        const cJSON *node;
        bool is_key = false;

        if (n < 0)
                return 0;
        node = nth_string(req->root, &n, &is_key);
        if (!is_key && node == method)
                return fail(err, msg, HA_E_METHOD, "unknown method (it holds a NUL)");
        if (!is_key && req->params &&
            node == cJSON_GetObjectItemCaseSensitive(req->params, "service"))
                return fail(err, msg, HA_E_INVALID, "unknown service (the name holds a NUL)");
        return fail(err, msg, HA_E_PROTO, "a string holds a NUL (\\u0000)");
}

int ha_request_parse(const char *json, size_t len, HaRequest *req,
                     enum ha_error *err, const char **msg)
{
        const cJSON *v, *method, *params;

        const char *end = NULL;

        memset(req, 0, sizeof(*req));
        req->root = cJSON_ParseWithLengthOpts(json, len, &end, false);
        if (!req->root)
                return fail(err, msg, HA_E_PROTO, "request is not valid JSON");
        while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
                end++;
        if (end != json + len)
                return fail(err, msg, HA_E_PROTO, "junk after the JSON object");
        if (!cJSON_IsObject(req->root))
                return fail(err, msg, HA_E_PROTO, "request is not a JSON object");

        if (cJSON_GetObjectItemCaseSensitive(req->root, "id")) {
                if (!json_get_id(req->root, &req->id))
                        return fail(err, msg, HA_E_PROTO,
                                    "\"id\" must be an integer from 0 to 2^53-1");
                req->has_id = true;
        }

        v = cJSON_GetObjectItemCaseSensitive(req->root, "v");
        if (!cJSON_IsNumber(v))
                return fail(err, msg, HA_E_PROTO, "\"v\" (protocol version) is missing");
        if (v->valuedouble != HA_PROTO_VERSION)
                return fail(err, msg, HA_E_VERSION, "this daemon speaks protocol version 1");

        method = cJSON_GetObjectItemCaseSensitive(req->root, "method");
        if (!cJSON_IsString(method) || !method->valuestring)
                return fail(err, msg, HA_E_PROTO, "\"method\" must be a string");
        req->method = method->valuestring;

        params = cJSON_GetObjectItemCaseSensitive(req->root, "params");
        if (params && !cJSON_IsObject(params))
                return fail(err, msg, HA_E_INVALID, "\"params\" must be an object");
        req->params = params;
        return check_nul(json, len, req, method, err, msg);
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), 0 when there is none. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
        unsigned char c = p[0], lo = 0x80, hi = 0xbf;
        size_t n;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef)
                n = 3;
        else if (c >= 0xf0 && c <= 0xf4)
                n = 4;
        else
                return 0;
        if (c == 0xe0)
                lo = 0xa0;
        else if (c == 0xed)
                hi = 0x9f;
        else if (c == 0xf0)
                lo = 0x90;
        else if (c == 0xf4)
                hi = 0x8f;
        if (left < n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
        return n;
}

size_t ha_utf8_valid_prefix(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0, n;

        while (i < len && (n = utf8_seq(p + i, len - i)) > 0)
                i += n;
        return i;
}

size_t ha_utf8_repair(const char *s, size_t len, char *out)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0, o = 0;

        while (i < len) {
                size_t n = utf8_seq(p + i, len - i);

                if (n == 0) {
                        memcpy(out + o, "\xef\xbf\xbd", 3);      /* U+FFFD */
                        o += 3;
                        i++;
                        continue;
                }
                memcpy(out + o, s + i, n);
                o += n;
                i += n;
        }
        return o;
}

/* The envelope's start, {"v":1,"id":N, then fmt, into buf as snprintf.
 * The id is printed as an integer: cJSON prints doubles with 15
 * significant digits, and ids go up to 2^53-1 and must come back exact. */
__attribute__((format(printf, 4, 5)))
static int env_write(char *buf, size_t size, uint64_t id, const char *fmt, ...)
{
        va_list ap;
        size_t off;
        int h, n;

        if (id == HA_NO_ID)
                h = snprintf(buf, size, "{\"v\":%d,", HA_PROTO_VERSION);
        else
                h = snprintf(buf, size, "{\"v\":%d,\"id\":%llu,", HA_PROTO_VERSION,
                             (unsigned long long)id);
        off = (size_t)h < size ? (size_t)h : size;
        va_start(ap, fmt);
        n = vsnprintf(size ? buf + off : NULL, size - off, fmt, ap);
        va_end(ap);
        return h < 0 || n < 0 ? -EINVAL : h + n;
}

/* "key":body} after the start, malloc'd; body is consumed.  Repaired to
 * UTF-8: a message may quote a client's bytes or a config
 * file's, and cJSON copies bytes over 0x7f as they are. */
static char *env_print(uint64_t id, const char *key, char *body, size_t *len)
{
        char *s = NULL, *fixed;
        int n;

        if (!body)
                return NULL;
        n = env_write(NULL, 0, id, "\"%s\":%s}", key, body);
        if (n < 0 || !(s = malloc((size_t)n + 1)))
                goto out;
        env_write(s, (size_t)n + 1, id, "\"%s\":%s}", key, body);
        *len = (size_t)n;
        if (ha_utf8_valid_prefix(s, *len) == *len)
                goto out;
        fixed = malloc(3 * *len + 1);
        if (fixed) {
                *len = ha_utf8_repair(s, *len, fixed);
                fixed[*len] = '\0';
        }
        free(s);
        s = fixed;
out:
        free(body);
        return s;
}

int ha_request_write(char *buf, size_t size, uint64_t id, const char *method, const char *params)
{
        /* Printed as it is: a name that would need escaping is not one of ours. */
        for (const char *p = method; *p; p++)
                if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                        return -EINVAL;
        return env_write(buf, size, id, "\"method\":\"%s\"%s%s}", method,
                         params ? ",\"params\":" : "", params ? params : "");
}

char *ha_request_print(uint64_t id, const char *method, const cJSON *params, size_t *len)
{
        char *p = params ? cJSON_PrintUnformatted(params) : NULL, *s;
        int n;

        if (params && !p)
                return NULL;
        n = ha_request_write(NULL, 0, id, method, p);
        s = n < 0 ? NULL : malloc((size_t)n + 1);
        if (s) {
                ha_request_write(s, (size_t)n + 1, id, method, p);
                *len = (size_t)n;
        }
        free(p);
        return s;
}

char *ha_reply_print(uint64_t id, const cJSON *result, size_t *len)
{
        return env_print(id, "result", cJSON_PrintUnformatted(result), len);
}

char *ha_reply_error_print(uint64_t id, enum ha_error code, const char *message, size_t *len)
{
        cJSON *e = cJSON_CreateObject();
        char *body = NULL;

        if (e && cJSON_AddStringToObject(e, "code", ha_error_name(code)) &&
            cJSON_AddStringToObject(e, "message", message ? message : ha_error_text(code)))
                body = cJSON_PrintUnformatted(e);
        cJSON_Delete(e);
        return env_print(id, "error", body, len);
}

/* ===== the submit hot path: no tree, no snprintf, no allocation ===== */

typedef struct Scan {
        const char *p, *end;
} Scan;

static void scan_ws(Scan *s)
{
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
                s->p++;
}

static bool scan_char(Scan *s, char ch)
{
        scan_ws(s);
        if (s->p >= s->end || *s->p != ch)
                return false;
        s->p++;
        return true;
}

/* Digits only, no leading zero, at most max: what strtod makes of them
 * exactly, since max < 2^53. */
static bool scan_uint(Scan *s, uint64_t max, uint64_t *ret)
{
        const char *start;
        uint64_t v = 0;

        scan_ws(s);
        start = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
                v = v * 10 + (uint64_t)(*s->p - '0');
                if (v > max)
                        return false;
                s->p++;
        }
        if (s->p == start || (*start == '0' && s->p - start > 1))
                return false;
        /* A fraction or an exponent: the general path judges it. */
        if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E'))
                return false;
        *ret = v;
        return true;
}

/* A string of printable ASCII without escapes: *str (not terminated), *n. */
static bool scan_str(Scan *s, const char **str, size_t *n)
{
        if (!scan_char(s, '"'))
                return false;
        *str = s->p;
        while (s->p < s->end && *s->p != '"') {
                if (*s->p < 0x20 || *s->p > 0x7e || *s->p == '\\')
                        return false;
                s->p++;
        }
        if (s->p >= s->end)
                return false;
        *n = (size_t)(s->p++ - *str);
        return true;
}

static bool str_is(const char *str, size_t n, const char *lit)
{
        return n == strlen(lit) && memcmp(str, lit, n) == 0;
}

static bool scan_lit(Scan *s, const char *lit)
{
        size_t n = strlen(lit);

        if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
                return false;
        s->p += n;
        return true;
}

static bool scan_service(Scan *s, HaSubmitFast *f)
{
        const char *str;
        uint64_t v;
        size_t n;

        scan_ws(s);
        if (s->p < s->end && *s->p != '"') {
                if (!scan_uint(s, UINT16_MAX, &v))
                        return false;
                f->service = (uint16_t)v;
                return true;
        }
        if (!scan_str(s, &str, &n) || n == 0 || n >= sizeof(f->name))
                return false;
        memcpy(f->name, str, n);
        f->name[n] = '\0';
        return true;
}

/* "params": exactly {"service": S}. */
static bool scan_params(Scan *s, HaSubmitFast *f)
{
        const char *key;
        size_t n;

        return scan_char(s, '{') && scan_str(s, &key, &n) && str_is(key, n, "service") &&
               scan_char(s, ':') && scan_service(s, f) && scan_char(s, '}');
}

/* The shape ha_request_submit_write makes (hyperampctl's, and the common
 * case), its literal parts compared whole (its numbers by scan_uint, which
 * allows blanks before them as JSON does): a subset of what the scanner
 * below takes, read the same way, at a fraction of its cost. */
static bool submit_canonical(const char *json, size_t len, HaSubmitFast *f)
{
        Scan s = { json, json + len };
        uint64_t id, svc;

        if (!scan_lit(&s, "{\"v\":1,\"id\":") || !scan_uint(&s, HA_PROTO_MAX_ID, &id) ||
            !scan_lit(&s, ",\"method\":\"" HA_METHOD_SUBMIT "\",\"params\":{\"service\":") ||
            !scan_uint(&s, UINT16_MAX, &svc) || !scan_lit(&s, "}}") || s.p != s.end)
                return false;
        f->has_id = true;
        f->id = id;
        f->service = (uint16_t)svc;
        f->name[0] = '\0';
        return true;
}

bool ha_submit_parse_fast(const char *json, size_t len, HaSubmitFast *f)
{
        enum { K_V = 1, K_ID = 2, K_METHOD = 4, K_PARAMS = 8 };
        Scan s = { json, json + len };
        unsigned seen = 0;
        uint64_t v;

        _Static_assert(HA_PROTO_VERSION == 1, "submit_canonical() spells the version out");
        if (submit_canonical(json, len, f))
                return true;
        memset(f, 0, sizeof(*f));
        if (!scan_char(&s, '{'))
                return false;
        for (;;) {
                const char *key, *str;
                size_t n, sn;
                unsigned k;

                if (!scan_str(&s, &key, &n) || !scan_char(&s, ':'))
                        return false;
                if (str_is(key, n, "v"))
                        k = K_V;
                else if (str_is(key, n, "id"))
                        k = K_ID;
                else if (str_is(key, n, "method"))
                        k = K_METHOD;
                else if (str_is(key, n, "params"))
                        k = K_PARAMS;
                else
                        return false;
                if (seen & k)
                        return false;   /* a duplicate: which one wins is the general path's call */
                seen |= k;
                if (k == K_V && (!scan_uint(&s, 1, &v) || v != HA_PROTO_VERSION))
                        return false;
                if (k == K_ID && !scan_uint(&s, HA_PROTO_MAX_ID, &f->id))
                        return false;
                if (k == K_METHOD && (!scan_str(&s, &str, &sn) || !str_is(str, sn, HA_METHOD_SUBMIT)))
                        return false;
                if (k == K_PARAMS && !scan_params(&s, f))
                        return false;
                if (scan_char(&s, '}'))
                        break;
                if (!scan_char(&s, ','))
                        return false;
        }
        scan_ws(&s);
        if (s.p != s.end || (seen | K_ID) != (K_V | K_ID | K_METHOD | K_PARAMS))
                return false;
        f->has_id = seen & K_ID;
        if (!f->has_id)
                f->id = HA_NO_ID;
        return true;
}

bool ha_submit_fast_agrees(const char *json, size_t len)
{
        enum ha_error err;
        const cJSON *svc;
        HaSubmitFast f;
        const char *msg;
        HaRequest req;
        bool same;

        if (!ha_submit_parse_fast(json, len, &f))
                return true;
        if (ha_request_parse(json, len, &req, &err, &msg) < 0) {
                ha_request_done(&req);
                return false;
        }
        svc = req.params ? cJSON_GetObjectItemCaseSensitive(req.params, "service") : NULL;
        same = req.has_id == f.has_id && (!f.has_id || req.id == f.id) &&
               strcmp(req.method, HA_METHOD_SUBMIT) == 0 &&
               (f.name[0] ? cJSON_IsString(svc) && strcmp(svc->valuestring, f.name) == 0 :
                cJSON_IsNumber(svc) && svc->valuedouble == f.service);
        ha_request_done(&req);
        return same;
}

/* Decimal digits of v at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
        char tmp[20];
        int n = 0;

        do {
                tmp[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                *p++ = tmp[--n];
        return p;
}

static char *put_lit(char *p, const char *lit)
{
        size_t n = strlen(lit);

        memcpy(p, lit, n);
        return p + n;
}

/* {"v":1, or {"v":1,"id":N, */
static char *put_env_start(char *p, uint64_t id)
{
        p = put_lit(p, "{\"v\":");
        p = put_u64(p, HA_PROTO_VERSION);
        *p++ = ',';
        if (id != HA_NO_ID) {
                p = put_lit(p, "\"id\":");
                p = put_u64(p, id);
                *p++ = ',';
        }
        return p;
}

int ha_request_submit_write(char *buf, size_t size, uint64_t id, unsigned service)
{
        char *p = buf;

        if (size < HA_SUBMIT_JSON_MAX || service > UINT16_MAX)
                return -EINVAL;
        p = put_env_start(p, id);
        p = put_lit(p, "\"method\":\"" HA_METHOD_SUBMIT "\",\"params\":{\"service\":");
        p = put_u64(p, service);
        p = put_lit(p, "}}");
        return (int)(p - buf);
}

int ha_reply_submit_write(char *buf, size_t size, uint64_t id, unsigned service,
                          const char *status, int code, uint64_t latency_ns)
{
        /* Tenths of a microsecond, rounded half up. */
        uint64_t tenths = latency_ns / 100 + (latency_ns % 100 >= 50);
        size_t slen = strnlen(status, 32);
        char *p = buf;

        if (size < HA_SUBMIT_JSON_MAX || service > UINT16_MAX)
                return -EINVAL;
        p = put_env_start(p, id);
        p = put_lit(p, "\"result\":{\"service\":");
        p = put_u64(p, service);
        p = put_lit(p, ",\"status\":\"");
        memcpy(p, status, slen);
        p += slen;
        p = put_lit(p, "\",\"code\":");
        if (code < 0) {
                *p++ = '-';
                p = put_u64(p, (uint64_t)-(int64_t)code);
        } else {
                p = put_u64(p, (uint64_t)code);
        }
        p = put_lit(p, ",\"latency_us\":");
        p = put_u64(p, tenths / 10);
        *p++ = '.';
        *p++ = (char)('0' + tenths % 10);
        p = put_lit(p, "}}");
        *p = '\0';
        return (int)(p - buf);
}

bool ha_reply_submit_parse_fast(const char *json, size_t len, uint64_t *id, unsigned *service,
                                bool *status_ok)
{
        Scan s = { json, json + len };
        uint64_t v, svc, code;
        const char *status;
        size_t n;

        if (!scan_lit(&s, "{\"v\":1,\"id\":") || !scan_uint(&s, HA_PROTO_MAX_ID, &v) ||
            !scan_lit(&s, ",\"result\":{\"service\":") || !scan_uint(&s, UINT16_MAX, &svc) ||
            !scan_lit(&s, ",\"status\":") || !scan_str(&s, &status, &n) ||
            !scan_lit(&s, ",\"code\":") || !scan_uint(&s, 255, &code) ||
            !scan_lit(&s, ",\"latency_us\":"))
                return false;
        /* The latency only in the writer's form: digits, a point, one digit. */
        while (s.p < s.end && *s.p >= '0' && *s.p <= '9')
                s.p++;
        if (!scan_lit(&s, ".") || s.p >= s.end || *s.p < '0' || *s.p > '9')
                return false;
        s.p++;
        if (!scan_lit(&s, "}}") || s.p != s.end)
                return false;
        *id = v;
        *service = (unsigned)svc;
        *status_ok = str_is(status, n, "SUCCESS");
        return true;
}

void ha_request_done(HaRequest *req)
{
        cJSON_Delete(req->root);
        memset(req, 0, sizeof(*req));
}

int ha_reply_parse(const char *json, size_t len, HaReply *rep)
{
        const cJSON *v, *err;

        memset(rep, 0, sizeof(*rep));
        rep->root = cJSON_ParseWithLength(json, len);
        if (!cJSON_IsObject(rep->root))
                goto bad;
        v = cJSON_GetObjectItemCaseSensitive(rep->root, "v");
        if (!cJSON_IsNumber(v) || v->valuedouble != HA_PROTO_VERSION)
                goto bad;
        rep->has_id = json_get_id(rep->root, &rep->id);
        rep->result = cJSON_GetObjectItemCaseSensitive(rep->root, "result");
        err = cJSON_GetObjectItemCaseSensitive(rep->root, "error");
        if (err) {
                const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
                if (!cJSON_IsString(code))
                        goto bad;
                rep->error_code = code->valuestring;
                rep->error_message = cJSON_IsString(m) ? m->valuestring : "";
                rep->result = NULL;
        } else if (!cJSON_IsObject(rep->result)) {
                goto bad;
        }
        return 0;
bad:
        ha_reply_done(rep);
        return -EBADMSG;
}

void ha_reply_done(HaReply *rep)
{
        cJSON_Delete(rep->root);
        memset(rep, 0, sizeof(*rep));
}

void ha_fds_put(struct msghdr *mh, const int *fds, size_t n)
{
        struct cmsghdr *cm;

        mh->msg_controllen = CMSG_SPACE(n * sizeof(int));
        memset(mh->msg_control, 0, mh->msg_controllen);
        cm = CMSG_FIRSTHDR(mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
}

int ha_fds_take(struct msghdr *mh, int *fds, int max)
{
        bool extra = mh->msg_flags & MSG_CTRUNC;
        int n = 0;

        for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
                const int *in = (const int *)(void *)CMSG_DATA(cm);
                size_t k;

                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                        int fd;

                        memcpy(&fd, in + i, sizeof(fd));
                        if (n < max)
                                fds[n++] = fd;
                        else {
                                close(fd);
                                extra = true;
                        }
                }
        }
        if (!extra)
                return n;
        while (n > 0)
                close(fds[--n]);
        return -EINVAL;
}
