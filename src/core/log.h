/* SPDX-License-Identifier: MIT */
#ifndef HA_LOG_H
#define HA_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/*
 * One logger for the daemon.  On a terminal it prints plain lines; otherwise
 * every line carries a <N> syslog priority prefix, which journald and most
 * supervisors parse.  Library-level code logs at debug at most; the layer
 * that handles a failure logs it, once.
 */
void ha_log_open(const char *ident);
void ha_log_set_level(int level);
int ha_log_get_level(void);
int ha_log_level_parse(const char *s);
const char *ha_log_level_name(int level);

void ha_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs with errno = -r, so %m names the error; returns r (negative). */
int ha_log_errno(int level, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...)   ha_log(LOG_ERR, __VA_ARGS__)
#define log_warning(...) ha_log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  ha_log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    ha_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   ha_log(LOG_DEBUG, __VA_ARGS__)
#define log_error_errno(r, ...)   ha_log_errno(LOG_ERR, r, __VA_ARGS__)
#define log_warning_errno(r, ...) ha_log_errno(LOG_WARNING, r, __VA_ARGS__)

/*
 * At most burst messages per interval; the rest are counted and reported
 * with the next message that passes.  For per-request errors, so a hostile
 * peer cannot flood the log.  Single-threaded.
 */
typedef struct HaRatelimit {
        uint64_t interval_ns;
        unsigned burst;
        uint64_t begin_ns;
        unsigned n;
        uint64_t suppressed;
} HaRatelimit;

#define HA_RATELIMIT_INIT(ms, b) { (uint64_t)(ms) * 1000000u, (b), 0, 0, 0 }

/* true: log now; *ret_suppressed tells how many were dropped before it */
bool ha_ratelimit_ok(HaRatelimit *rl, uint64_t *ret_suppressed);

uint64_t ha_now_ns(void);

#endif
