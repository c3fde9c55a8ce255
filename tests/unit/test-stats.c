/* SPDX-License-Identifier: MIT */
/* The stats sink: one declaration gives the JSON key and the metric. */
#include <string.h>

#include "check.h"
#include "stats.h"

#define T_COUNTERS(X)                                                                   \
        X(hits, "hits", "t_hits", "", "Hits")                                           \
        X(sent, "sent_bytes", "t_sent", "bytes", "Bytes sent")

typedef struct TCounters {
        T_COUNTERS(HA_COUNTER_FIELD)
} TCounters;

static void emit(HaStats *s, const TCounters *blk, const char *name, const HaHist *h)
{
        static const HaMetric lat = { "latency_us", "t_duration", HA_MT_GAUGE, "", "Latency" };
        static const HaMetric st = { "state", "t_state", HA_MT_GAUGE, "", "State" };
        static const char *const states[] = { "up", "down" };

        ha_stats_element(s, "things", "thing", name);
        ha_stat_str(s, "name", name);
        T_COUNTERS(HA_COUNTER_EMIT)
        HA_GAUGE_EMIT("depth", "t_depth", "", "Depth", 7)
        ha_stat_state(s, &st, states, 2, 1);
        ha_stat_hist(s, &lat, h);
        ha_stats_leave(s);
}

/* A group inside an element; histograms for one side only. */
static void emit_group(HaStats *s, const HaHist *h)
{
        static const HaMetric m_only = { NULL, "t_group", HA_MT_GAUGE, "", "Group" };
        static const HaMetric j_only = { "lat", NULL, HA_MT_GAUGE, "", "" };
        static const HaMetric n = { "n", "t_n", HA_MT_GAUGE, "", "N" };

        ha_stats_element(s, "things", "thing", "g");
        ha_stats_group(s, "source", "x");
        ha_stat_hist(s, &m_only, h);
        ha_stat_hist(s, &j_only, h);
        ha_stats_leave(s);
        ha_stat(s, &n, 4);
        ha_stats_leave(s);
}

static bool has_line(const char *text, const char *line)
{
        size_t n = strlen(line);

        for (const char *p = text; (p = strstr(p, line)); p++)
                if ((p == text || p[-1] == '\n') && p[n] == '\n')
                        return true;
        return false;
}

int main(void)
{
        TCounters a = { 0 }, b = { 0 };
        HaHist h = { 0 };
        cJSON *root = cJSON_CreateObject();
        HaStats *s;
        char *t;

        HA_INC(&a, hits);
        HA_ADD(&a, sent, 10);
        HA_ADD(&b, hits, 3);
        ha_hist_add(&h, 500);           /* 0.5 us */
        ha_hist_add(&h, 3000000);       /* 3 ms */

        /* JSON: the keys of the declarations, sections shared. */
        s = ha_stats_json(root);
        emit(s, &a, "a", &h);
        emit(s, &b, "b\"\\\n", &h);
        ha_stats_free(s);
        const cJSON *things = cJSON_GetObjectItem(root, "things");
        CHECK_EQ(cJSON_GetArraySize(things), 2);
        const cJSON *t0 = cJSON_GetArrayItem(things, 0);
        CHECK_EQ(cJSON_GetObjectItem(t0, "hits")->valuedouble, 1);
        CHECK_EQ(cJSON_GetObjectItem(t0, "sent_bytes")->valuedouble, 10);
        CHECK_EQ(cJSON_GetObjectItem(t0, "depth")->valuedouble, 7);
        CHECK(strcmp(cJSON_GetObjectItem(t0, "state")->valuestring, "down") == 0);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(t0, "latency_us"), "p99") != NULL);
        cJSON_Delete(root);

        /* Metrics: one family per name, samples of both elements under it. */
        s = ha_stats_metrics();
        emit(s, &a, "a", &h);
        emit(s, &b, "b\"\\\n", &h);
        t = ha_stats_text(s, NULL);
        CHECK(t != NULL);
        if (t) {
                CHECK(has_line(t, "# TYPE hyperamp_t_hits_total counter"));
                CHECK(has_line(t, "hyperamp_t_hits_total{thing=\"a\"} 1"));
                CHECK(has_line(t, "hyperamp_t_hits_total{thing=\"b\\\"\\\\\\n\"} 3"));
                CHECK(has_line(t, "hyperamp_t_sent_bytes_total{thing=\"a\"} 10"));
                CHECK(has_line(t, "hyperamp_t_depth{thing=\"a\"} 7"));
                CHECK(has_line(t, "hyperamp_t_state{thing=\"a\",state=\"up\"} 0"));
                CHECK(has_line(t, "hyperamp_t_state{thing=\"a\",state=\"down\"} 1"));
                CHECK(has_line(t, "# TYPE hyperamp_t_duration_seconds histogram"));
                /* 2^10 - 1 ns: only the 0.5 us sample; 2^22 - 1 ns: both. */
                CHECK(has_line(t, "hyperamp_t_duration_seconds_bucket{thing=\"a\",le=\"1.023e-06\"} 1"));
                CHECK(has_line(t, "hyperamp_t_duration_seconds_bucket{thing=\"a\",le=\"0.004194303\"} 2"));
                CHECK(has_line(t, "hyperamp_t_duration_seconds_bucket{thing=\"a\",le=\"+Inf\"} 2"));
                CHECK(has_line(t, "hyperamp_t_duration_seconds_count{thing=\"a\"} 2"));
                CHECK(has_line(t, "hyperamp_t_duration_seconds_sum{thing=\"a\"} 0.0030005"));
                /* One HELP per family although two elements emitted it. */
                const char *p = strstr(t, "# HELP hyperamp_t_hits_total");
                CHECK(p && !strstr(p + 1, "# HELP hyperamp_t_hits_total"));
                /* JSON-only values stay out. */
                CHECK(!strstr(t, "name"));
        }
        free(t);
        ha_stats_free(s);

        /* A group: metrics get one more label until its leave; JSON stays
         * in the element.  A histogram written and merged across threads
         * keeps its sum; a NULL key or name leaves one side out. */
        {
                HaHist sh = { 0 }, sum = { 0 };

                ha_hist_add_shared(&sh, 500);
                ha_hist_add_shared(&sh, 1500);
                ha_hist_merge(&sum, &sh);
                CHECK_EQ(sum.sum, 2000);
                CHECK_EQ(sum.count, 2);

                s = ha_stats_metrics();
                emit_group(s, &sum);
                t = ha_stats_text(s, NULL);
                CHECK(t != NULL);
                if (t) {
                        CHECK(has_line(t, "hyperamp_t_group_seconds_count{thing=\"g\",source=\"x\"} 2"));
                        CHECK(has_line(t, "hyperamp_t_group_seconds_sum{thing=\"g\",source=\"x\"} 2e-06"));
                        CHECK(has_line(t, "hyperamp_t_n{thing=\"g\"} 4"));
                        CHECK(!strstr(t, "(null)"));
                }
                free(t);
                ha_stats_free(s);

                root = cJSON_CreateObject();
                s = ha_stats_json(root);
                emit_group(s, &sum);
                ha_stats_free(s);
                t0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "things"), 0);
                CHECK_EQ(cJSON_GetArraySize(t0), 2);    /* lat and n */
                CHECK(cJSON_GetObjectItem(t0, "lat") != NULL);
                CHECK_EQ(cJSON_GetObjectItem(t0, "n")->valuedouble, 4);
                cJSON_Delete(root);
        }
        return check_done("stats");
}
