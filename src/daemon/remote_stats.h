/* SPDX-License-Identifier: MIT */
#ifndef HA_REMOTE_STATS_H
#define HA_REMOTE_STATS_H

#include "stats.h"

/* The counters every remote zone has, v1 or v2 (stats.h X-macros): one
 * JSON key and one metric family for both protocols. */
#define HA_REMOTE_COMMON_COUNTERS(X)                                                    \
        X(requests, "requests", "remote_requests", "", "Requests a remote zone's executor took") \
        X(completed, "succeeded", "remote_succeeded", "", "Remote requests answered SUCCESS") \
        X(failures, "failures", "remote_failures", "",                                  \
          "Remote requests answered otherwise, or refused on a fault")                  \
        X(timeouts, "timeouts", "remote_timeouts", "", "Remote requests that timed out (E_TIMEOUT)") \
        X(peer_restarts, "peer_restarts", "remote_peer_restarts", "",                   \
          "Restarts of a remote zone's service seen (v1: re-format, canary; v2: rings re-created)")

/* The executor's own round trip, nanoseconds (ha_stat_hist). */
#define HA_REMOTE_RTT_METRIC                                                            \
        { "round_trip_us", "remote_round_trip", HA_MT_GAUGE, "",                        \
          "Round trips of a remote zone's requests" }

#endif
