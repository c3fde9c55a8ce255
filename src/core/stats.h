/* SPDX-License-Identifier: MIT */
#ifndef HA_STATS_H
#define HA_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "hist.h"

/*
 * Counters declared once.  A module lists its counters in an X-macro:
 *
 *   #define FOO_COUNTERS(X) \
 *           X(field, "json_key", "prom_name", "unit", "help")
 *
 * HA_COUNTER_FIELD makes the struct, HA_INC/HA_ADD the increments and
 * HA_COUNTER_EMIT the output; values computed from state (gauges) are rows
 * of a second list with the expression last, emitted by HA_GAUGE_EMIT.  Both
 * go through one sink, HaStats, which writes either the JSON tree of
 * `stats` or the Prometheus text exposition of /metrics: so every JSON key
 * and every metric come from the same row.
 *
 * The Prometheus name is "hyperamp_" + prom_name + "_" + unit (when one is
 * given) + "_total" for a counter.  A NULL prom_name: JSON only.
 */
enum ha_mtype { HA_MT_COUNTER, HA_MT_GAUGE };

typedef struct HaMetric {
        const char *key;        /* JSON key in its object */
        const char *name;       /* Prometheus name without prefix and suffixes */
        enum ha_mtype type;
        const char *unit;       /* "" or a base unit: "seconds", "bytes" */
        const char *help;
} HaMetric;

#define HA_COUNTER_FIELD(field, key, name, unit, help) uint64_t field;

/* Relaxed: a counter is only ever read for reporting. */
#define HA_ADD(blk, field, n) __atomic_fetch_add(&(blk)->field, (n), __ATOMIC_RELAXED)
#define HA_INC(blk, field) HA_ADD(blk, field, 1)
#define HA_GET(blk, field) __atomic_load_n(&(blk)->field, __ATOMIC_RELAXED)

/* For the X-macros: emit into the HaStats *s in scope, the block at blk. */
#define HA_COUNTER_EMIT(field, key, name, unit, help)                                   \
        do {                                                                            \
                static const HaMetric m_ = { key, name, HA_MT_COUNTER, unit, help };    \
                ha_stat(s, &m_, (double)__atomic_load_n(&(blk)->field, __ATOMIC_RELAXED)); \
        } while (0);
#define HA_GAUGE_EMIT(key, name, unit, help, expr)                                      \
        do {                                                                            \
                static const HaMetric m_ = { key, name, HA_MT_GAUGE, unit, help };      \
                ha_stat(s, &m_, (double)(expr));                                        \
        } while (0);
#define HA_COUNTER_EXPR_EMIT(key, name, unit, help, expr)                               \
        do {                                                                            \
                static const HaMetric m_ = { key, name, HA_MT_COUNTER, unit, help };    \
                ha_stat(s, &m_, (double)(expr));                                        \
        } while (0);

typedef struct HaStats HaStats;

/* A sink writing into the JSON object root (not taken). */
HaStats *ha_stats_json(cJSON *root);
/* A sink collecting the Prometheus text exposition. */
HaStats *ha_stats_metrics(void);
/* The text (malloc'd, NUL-terminated), or NULL out of memory or for a
 * JSON sink; the sink stays usable. */
char *ha_stats_text(HaStats *s, size_t *len);
void ha_stats_free(HaStats *s);

/* Enter the object key of the current object (made once, shared by every
 * module that adds to it): metrics keep their labels. */
void ha_stats_section(HaStats *s, const char *key);
/* Enter a new element of the array key; metrics get label="value". */
void ha_stats_element(HaStats *s, const char *key, const char *label, const char *value);
/* One more label for the current element (metrics only). */
void ha_stats_label(HaStats *s, const char *label, const char *value);
/* Metrics only: the next samples get one more label, until the matching
 * leave (JSON stays in the current object). */
void ha_stats_group(HaStats *s, const char *label, const char *value);
void ha_stats_leave(HaStats *s);

void ha_stat(HaStats *s, const HaMetric *m, double v);
/* JSON only: a string or a null. */
void ha_stat_str(HaStats *s, const char *key, const char *v);
void ha_stat_null(HaStats *s, const char *key);
/* A state: JSON "key": names[cur]; metrics one 0/1 sample per state. */
void ha_stat_state(HaStats *s, const HaMetric *m, const char *const *names, unsigned n,
                   unsigned cur);
/* JSON: "key": [v...]; metrics: one sample per index, label="index". */
void ha_stat_vec(HaStats *s, const HaMetric *m, const char *label, const uint64_t *v,
                 unsigned n);
/* A latency histogram of nanoseconds.  JSON: "key": {p50, p99, max} in
 * microseconds; metrics: a histogram in seconds (name gets _seconds).  A
 * NULL key: metrics only; a NULL name: JSON only. */
void ha_stat_hist(HaStats *s, const HaMetric *m, const HaHist *h);
/* Metrics only: one sample with one more label, e.g. result="failure". */
void ha_stat_labeled(HaStats *s, const HaMetric *m, const char *label, const char *value,
                     double v);
/* Metrics only: name{labels} 1, e.g. build info. */
void ha_stat_info(HaStats *s, const HaMetric *m, const char *const *labels, unsigned n);

/* Escape v for a label value into dst (always terminated). */
void ha_stats_escape(char *dst, size_t size, const char *v);

#endif
