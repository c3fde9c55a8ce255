/* SPDX-License-Identifier: MIT */
#ifndef HA_METRICS_H
#define HA_METRICS_H

#include <sys/socket.h>

#include <event2/event.h>

#include "config.h"
#include "stats.h"

/*
 * The metrics listener: GET /metrics in the Prometheus text exposition
 * format (version 0.0.4, which OpenMetrics parsers read too), served by
 * libevent's evhttp on the loop thread from the same counter declarations
 * as `stats`.  Read-only; its own connection limit; every refusal gets an
 * HTTP status and is counted.
 */
typedef struct HaMetrics HaMetrics;

/* Write the whole exposition into s (a metrics sink). */
typedef void (*ha_metrics_render_fn)(void *userdata, HaStats *s);

/*
 * Check a metrics_listen value: "" (off), "A.B.C.D:PORT", "[V6]:PORT" or
 * "unix:/PATH".  With ss, fill in the address.  0, or -EINVAL.
 */
int ha_metrics_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len);

/*
 * Listen on the socket systemd passed as "metrics", else on
 * cfg->metrics_listen; *ret = NULL when neither is set.  A negative errno
 * when the address cannot be taken (logged).
 */
int ha_metrics_new(struct event_base *base, const HaConfig *cfg, ha_metrics_render_fn render,
                   void *userdata, HaMetrics **ret);
HaMetrics *ha_metrics_free(HaMetrics *m);

/* Its own counters, a "metrics" section (for ha_control_add_stats). */
void ha_metrics_stats(void *m, HaStats *s);

#endif
