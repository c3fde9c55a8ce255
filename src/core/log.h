/* SPDX-License-Identifier: MIT */
#ifndef HA_LOG_H
#define HA_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#include "clock.h"

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

/*
 * The caller's place, for the journal's CODE_FILE=, CODE_LINE= and
 * CODE_FUNC= fields: the public entry points are macros that pass it.
 */
typedef struct HaLogLoc {
        const char *file;
        int line;
        const char *func;
} HaLogLoc;

#define HA_LOG_LOC (&(const HaLogLoc){ __FILE__, __LINE__, __func__ })

void ha_log_at(const HaLogLoc *loc, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
#define ha_log(level, ...) ha_log_at(HA_LOG_LOC, level, __VA_ARGS__)

/*
 * Structured context for one message.  In the journal each set field
 * becomes a field of the entry; on stderr they are left out.
 */
typedef struct HaLogCtx {
        const char *message_id;         /* MESSAGE_ID=, for lifecycle events */
        int32_t service_1;              /* HYPERAMP_SERVICE= id + 1; 0: none */
        int64_t request_1;              /* HYPERAMP_REQUEST= id + 1; 0: none */
        int client_pid;                 /* > 0: HYPERAMP_CLIENT_PID= and _UID= */
        uint32_t client_uid;
} HaLogCtx;

/* Unset fields are zero, which means "absent" (ids are stored + 1). */
#define HA_LOG_CTX(...) (&(const HaLogCtx){ __VA_ARGS__ })

void ha_log_ctx_at(const HaLogLoc *loc, int level, const HaLogCtx *ctx, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
#define ha_log_ctx(level, ctx, ...) ha_log_ctx_at(HA_LOG_LOC, level, ctx, __VA_ARGS__)

/* Message ids of lifecycle events (journalctl MESSAGE_ID=...).  Each has an
 * entry in units/hyperamp.catalog, which journalctl -x shows. */
#define HA_MID_STARTED   "943de71f94bd476f9229d43c551b26fc"
#define HA_MID_READY     "9bbb1190bd834ad0b98f5477f619002e"
#define HA_MID_STOPPING  "e00cb3a41ff1451b9f308a2fe3f793d1"
#define HA_MID_STOPPED   "65e1ff7b5fcb467787bee6c44c354519"
#define HA_MID_RELOADED  "22b631cccf6542739d5447498e3a856c"
#define HA_MID_RELOAD_FAILED "0e0fb447bbcb4e2daac4e867d4fa2853"
#define HA_MID_DENIED    "8cae42a66f8744ba97ecc144a34f2049"
#define HA_MID_STALLED   "cbb3c8f109a746a0921df596e8a6646c"

/* Where messages go; "auto" picks the journal when stderr is its stream. */
enum ha_log_target { HA_LOG_AUTO, HA_LOG_JOURNAL, HA_LOG_STDERR, HA_LOG_CONSOLE };
int ha_log_target_parse(const char *s);
void ha_log_set_target(enum ha_log_target t);
const char *ha_log_target_name(void);
/* Logs with errno = -r, so %m names the error; returns r (negative). */
int ha_log_errno_at(const HaLogLoc *loc, int level, int r, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
#define ha_log_errno(level, r, ...) ha_log_errno_at(HA_LOG_LOC, level, r, __VA_ARGS__)

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

#endif
