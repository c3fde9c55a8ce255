/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "hyperamp";
static int log_level = LOG_INFO;
static bool log_tty;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
        [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void ha_log_open(const char *ident)
{
        log_ident = ident;
        log_tty = isatty(STDERR_FILENO) == 1;
}

void ha_log_set_level(int level)
{
        __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int ha_log_get_level(void)
{
        return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

int ha_log_level_parse(const char *s)
{
        for (int i = 0; i <= LOG_DEBUG; i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        return -EINVAL;
}

const char *ha_log_level_name(int level)
{
        return level >= 0 && level <= LOG_DEBUG ? level_names[level] : "?";
}

static void log_va(int level, const char *fmt, va_list ap)
{
        char msg[2048];

        vsnprintf(msg, sizeof(msg), fmt, ap);
        /* One fprintf per line: stdio's lock keeps threads' lines whole. */
        if (log_tty)
                fprintf(stderr, "%s: %s%s\n", log_ident,
                        level <= LOG_ERR ? "error: " : level == LOG_WARNING ? "warning: " : "",
                        msg);
        else
                fprintf(stderr, "<%d>%s\n", level, msg);
}

void ha_log(int level, const char *fmt, ...)
{
        va_list ap;
        int saved = errno;

        if (level > ha_log_get_level())
                return;
        va_start(ap, fmt);
        log_va(level, fmt, ap);
        va_end(ap);
        errno = saved;
}

int ha_log_errno(int level, int r, const char *fmt, ...)
{
        va_list ap;

        if (level > ha_log_get_level())
                return r;
        errno = r < 0 ? -r : r;
        va_start(ap, fmt);
        log_va(level, fmt, ap);
        va_end(ap);
        return r;
}

uint64_t ha_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool ha_ratelimit_ok(HaRatelimit *rl, uint64_t *ret_suppressed)
{
        uint64_t now = ha_now_ns();

        *ret_suppressed = 0;
        if (rl->begin_ns == 0 || now - rl->begin_ns >= rl->interval_ns) {
                *ret_suppressed = rl->suppressed;
                rl->begin_ns = now;
                rl->n = 0;
                rl->suppressed = 0;
        }
        if (rl->n < rl->burst) {
                rl->n++;
                return true;
        }
        rl->suppressed++;
        return false;
}
