/* SPDX-License-Identifier: MIT */
#include "stats.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH 8
#define LABELS_MAX 1024
#define NAME_MAX_ 128

typedef struct Buf {
        char *p;
        size_t len, cap;
} Buf;

/* One metric family: its samples gathered from every module and element,
 * printed together under one HELP and TYPE. */
typedef struct Family {
        char name[NAME_MAX_];
        const char *type, *help;
        Buf lines;
} Family;

struct HaStats {
        bool metrics;
        bool oom;
        unsigned depth;
        cJSON *obj[DEPTH];
        size_t lablen[DEPTH];
        char labels[LABELS_MAX];
        Family *fam;
        size_t nfam, capfam;
};

static void buf_printf(HaStats *s, Buf *b, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void buf_printf(HaStats *s, Buf *b, const char *fmt, ...)
{
        va_list ap;
        int n;

        for (;;) {
                va_start(ap, fmt);
                n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        s->oom = true;
                        return;
                }
                if (b->p && (size_t)n < b->cap - b->len) {
                        b->len += (size_t)n;
                        return;
                }
                size_t cap = b->cap ? b->cap * 2 : 256;
                while (cap < b->len + (size_t)n + 1)
                        cap *= 2;
                char *p = realloc(b->p, cap);
                if (!p) {
                        s->oom = true;
                        return;
                }
                b->p = p;
                b->cap = cap;
        }
}

HaStats *ha_stats_json(cJSON *root)
{
        HaStats *s = calloc(1, sizeof(*s));

        if (s)
                s->obj[0] = root;
        return s;
}

HaStats *ha_stats_metrics(void)
{
        HaStats *s = calloc(1, sizeof(*s));

        if (s)
                s->metrics = true;
        return s;
}

void ha_stats_free(HaStats *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->nfam; i++)
                free(s->fam[i].lines.p);
        free(s->fam);
        free(s);
}

char *ha_stats_text(HaStats *s, size_t *len)
{
        Buf out = { 0 };

        if (!s->metrics)
                return NULL;
        for (size_t i = 0; i < s->nfam; i++) {
                Family *f = &s->fam[i];
                buf_printf(s, &out, "# HELP %s %s\n# TYPE %s %s\n%s", f->name, f->help, f->name,
                           f->type, f->lines.p ? f->lines.p : "");
        }
        if (!out.p)
                buf_printf(s, &out, "%s", "");
        if (s->oom) {
                free(out.p);
                return NULL;
        }
        if (len)
                *len = out.len;
        return out.p;
}

void ha_stats_escape(char *dst, size_t size, const char *v)
{
        size_t o = 0;

        for (; *v && o + 3 < size; v++) {
                if (*v == '\\' || *v == '"') {
                        dst[o++] = '\\';
                        dst[o++] = *v;
                } else if (*v == '\n') {
                        dst[o++] = '\\';
                        dst[o++] = 'n';
                } else {
                        dst[o++] = *v;
                }
        }
        dst[o] = '\0';
}

static void push(HaStats *s, cJSON *o)
{
        if (s->depth + 1 >= DEPTH) {
                s->oom = true;  /* a programming error: caught by the tests */
                return;
        }
        s->depth++;
        s->obj[s->depth] = o;
        s->lablen[s->depth] = strlen(s->labels);
}

void ha_stats_section(HaStats *s, const char *key)
{
        cJSON *o = NULL;

        if (!s->metrics) {
                o = cJSON_GetObjectItemCaseSensitive(s->obj[s->depth], key);
                if (!o)
                        o = cJSON_AddObjectToObject(s->obj[s->depth], key);
        }
        push(s, o);
}

void ha_stats_label(HaStats *s, const char *label, const char *value)
{
        size_t len = strlen(s->labels);
        char esc[256];

        if (!s->metrics)
                return;
        ha_stats_escape(esc, sizeof(esc), value);
        snprintf(s->labels + len, sizeof(s->labels) - len, "%s%s=\"%s\"", len ? "," : "", label,
                 esc);
}

void ha_stats_element(HaStats *s, const char *key, const char *label, const char *value)
{
        cJSON *o = NULL;

        if (!s->metrics) {
                cJSON *a = cJSON_GetObjectItemCaseSensitive(s->obj[s->depth], key);
                if (!a)
                        a = cJSON_AddArrayToObject(s->obj[s->depth], key);
                o = cJSON_CreateObject();
                if (!cJSON_AddItemToArray(a, o)) {
                        cJSON_Delete(o);
                        o = NULL;
                }
        }
        push(s, o);
        ha_stats_label(s, label, value);
}

void ha_stats_group(HaStats *s, const char *label, const char *value)
{
        push(s, s->obj[s->depth]);
        ha_stats_label(s, label, value);
}

void ha_stats_leave(HaStats *s)
{
        if (s->depth == 0)
                return;
        s->depth--;
        s->labels[s->lablen[s->depth + 1]] = '\0';
}

static Family *family(HaStats *s, const HaMetric *m, const char *suffix, const char *type)
{
        char name[NAME_MAX_];

        snprintf(name, sizeof(name), "hyperamp_%s%s%s%s", m->name, m->unit[0] ? "_" : "",
                 m->unit, suffix);
        for (size_t i = s->nfam; i-- > 0;)
                if (strcmp(s->fam[i].name, name) == 0)
                        return &s->fam[i];
        if (s->nfam == s->capfam) {
                size_t cap = s->capfam ? s->capfam * 2 : 64;
                Family *f = realloc(s->fam, cap * sizeof(*f));
                if (!f) {
                        s->oom = true;
                        return NULL;
                }
                s->fam = f;
                s->capfam = cap;
        }
        Family *f = &s->fam[s->nfam++];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", name);
        f->type = type;
        f->help = m->help;
        return f;
}

static Family *family_of(HaStats *s, const HaMetric *m)
{
        if (m->type == HA_MT_COUNTER)
                return family(s, m, "_total", "counter");
        return family(s, m, "", "gauge");
}

/* The shortest of %.15g and %.17g that reads back as v. */
static const char *shortest(char *buf, size_t size, double v)
{
        snprintf(buf, size, "%.15g", v);
        if (strtod(buf, NULL) != v)
                snprintf(buf, size, "%.17g", v);
        return buf;
}

/* Integers exactly, fractions with full precision. */
static void sample(HaStats *s, Family *f, const char *suffix, const char *extra, double v)
{
        const char *l = s->labels;
        char num[32];
        bool any = l[0] || (extra && extra[0]);

        if (!f)
                return;
        buf_printf(s, &f->lines, "%s%s%s%s%s%s%s ", f->name, suffix, any ? "{" : "", l,
                   l[0] && extra && extra[0] ? "," : "", extra ? extra : "", any ? "}" : "");
        if (v < 9e15 && v > -9e15 && v == (double)(int64_t)v)   /* range first: the cast */
                buf_printf(s, &f->lines, "%lld\n", (long long)v);
        else
                buf_printf(s, &f->lines, "%s\n", shortest(num, sizeof(num), v));
}

void ha_stat(HaStats *s, const HaMetric *m, double v)
{
        if (!s->metrics) {
                if (s->obj[s->depth])
                        cJSON_AddNumberToObject(s->obj[s->depth], m->key, v);
                return;
        }
        if (!m->name)
                return;
        sample(s, family_of(s, m), "", NULL, v);
}

void ha_stat_str(HaStats *s, const char *key, const char *v)
{
        if (!s->metrics && s->obj[s->depth])
                cJSON_AddStringToObject(s->obj[s->depth], key, v);
}

void ha_stat_null(HaStats *s, const char *key)
{
        if (!s->metrics && s->obj[s->depth])
                cJSON_AddNullToObject(s->obj[s->depth], key);
}

void ha_stat_state(HaStats *s, const HaMetric *m, const char *const *names, unsigned n,
                   unsigned cur)
{
        char extra[96];
        Family *f;

        if (!s->metrics) {
                ha_stat_str(s, m->key, cur < n ? names[cur] : "unknown");
                return;
        }
        f = family(s, m, "", "gauge");
        for (unsigned i = 0; i < n; i++) {
                snprintf(extra, sizeof(extra), "state=\"%s\"", names[i]);
                sample(s, f, "", extra, i == cur);
        }
}

void ha_stat_vec(HaStats *s, const HaMetric *m, const char *label, const uint64_t *v, unsigned n)
{
        char extra[64];
        Family *f;

        if (!s->metrics) {
                cJSON *a;

                if (!s->obj[s->depth] || !(a = cJSON_AddArrayToObject(s->obj[s->depth], m->key)))
                        return;
                for (unsigned i = 0; i < n; i++)
                        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
                return;
        }
        f = family_of(s, m);
        for (unsigned i = 0; i < n; i++) {
                snprintf(extra, sizeof(extra), "%s=\"%u\"", label, i);
                sample(s, f, "", extra, (double)v[i]);
        }
}

void ha_stat_hist(HaStats *s, const HaMetric *m, const HaHist *h)
{
        /* Bucket bounds that are bucket edges of HaHist, so every count is
         * exact: 2^k - 1 ns, from about 1 us to 17 s. */
        enum { FIRST = 10, LAST = 34 };
        HaMetric sec = *m;
        char extra[64];
        Family *f;

        if (!s->metrics) {
                cJSON *l;

                if (!m->key || !s->obj[s->depth] ||
                    !(l = cJSON_AddObjectToObject(s->obj[s->depth], m->key)))
                        return;
                cJSON_AddNumberToObject(l, "p50", (double)ha_hist_quantile(h, 0.50) / 1000.0);
                cJSON_AddNumberToObject(l, "p99", (double)ha_hist_quantile(h, 0.99) / 1000.0);
                cJSON_AddNumberToObject(l, "max", (double)h->max / 1000.0);
                return;
        }
        if (!m->name)
                return;
        sec.unit = "seconds";
        f = family(s, &sec, "", "histogram");
        for (unsigned k = FIRST; k <= LAST; k++) {
                uint64_t le = (UINT64_C(1) << k) - 1;
                snprintf(extra, sizeof(extra), "le=\"%.9g\"", (double)le / 1e9);
                sample(s, f, "_bucket", extra, (double)ha_hist_count_le(h, le));
        }
        sample(s, f, "_bucket", "le=\"+Inf\"", (double)h->count);
        sample(s, f, "_sum", NULL, (double)h->sum / 1e9);
        sample(s, f, "_count", NULL, (double)h->count);
}

void ha_stat_labeled(HaStats *s, const HaMetric *m, const char *label, const char *value,
                     double v)
{
        char extra[320], esc[256];

        if (!s->metrics || !m->name)
                return;
        ha_stats_escape(esc, sizeof(esc), value);
        snprintf(extra, sizeof(extra), "%s=\"%s\"", label, esc);
        sample(s, family_of(s, m), "", extra, v);
}

void ha_stat_info(HaStats *s, const HaMetric *m, const char *const *labels, unsigned n)
{
        char extra[512], esc[256];
        size_t o = 0;

        if (!s->metrics)
                return;
        extra[0] = '\0';
        for (unsigned i = 0; i < n && o < sizeof(extra); i++) {
                ha_stats_escape(esc, sizeof(esc), labels[2 * i + 1]);
                o += (size_t)snprintf(extra + o, sizeof(extra) - o, "%s%s=\"%s\"", i ? "," : "",
                                      labels[2 * i], esc);
        }
        sample(s, family(s, m, "", "gauge"), "", extra, 1);
}
