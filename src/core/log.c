/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "log.h"

static const char *log_ident = "hyperamp";
static int log_level = LOG_INFO;
static enum ha_log_target log_target = HA_LOG_STDERR;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
        [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* $JOURNAL_STREAM names the journal's stream as dev:ino; it counts only
 * if that is still our stderr (a parent may have redirected it). */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void ha_log_open(const char *ident)
{
        log_ident = ident;
        ha_log_set_target(HA_LOG_AUTO);
}

void ha_log_set_target(enum ha_log_target t)
{
        if (t == HA_LOG_AUTO)
                t = stderr_is_journal() ? HA_LOG_JOURNAL :
                    isatty(STDERR_FILENO) == 1 ? HA_LOG_CONSOLE : HA_LOG_STDERR;
        log_target = t;
}

int ha_log_target_parse(const char *s)
{
        static const char *const names[] = { "auto", "journal", "stderr", "console" };

        for (int i = 0; i < 4; i++)
                if (strcmp(s, names[i]) == 0)
                        return i;
        return -EINVAL;
}

const char *ha_log_target_name(void)
{
        return log_target == HA_LOG_JOURNAL ? "journal" :
               log_target == HA_LOG_CONSOLE ? "console" : "stderr";
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

/* __FILE__ is the compiler's path, relative to the build directory
 * ("../src/daemon/daemon.c"): keep it from the source root on. */
static const char *source_path(const char *file)
{
        while (strncmp(file, "../", 3) == 0 || strncmp(file, "./", 2) == 0)
                file += file[1] == '/' ? 2 : 3;
        return file;
}

static void log_journal(const HaLogLoc *loc, int level, const HaLogCtx *ctx, const char *msg)
{
        char f[8][80], file[256], line[32];
        struct iovec iov[10];
        int n = 0, k = 0;
        char *m;

        /* MESSAGE= may be long: build it apart from the fixed-size fields. */
        if (asprintf(&m, "MESSAGE=%s", msg) < 0)
                return;
        iov[n++] = (struct iovec){ m, strlen(m) };
#define FIELD(...) do { \
                snprintf(f[k], sizeof(f[k]), __VA_ARGS__); \
                iov[n++] = (struct iovec){ f[k], strlen(f[k]) }; \
                k++; \
        } while (0)
        FIELD("PRIORITY=%d", level);
        FIELD("SYSLOG_IDENTIFIER=%s", log_ident);
        if (ctx && ctx->message_id)
                FIELD("MESSAGE_ID=%s", ctx->message_id);
        if (ctx && ctx->service_1 > 0)
                FIELD("HYPERAMP_SERVICE=%d", ctx->service_1 - 1);
        if (ctx && ctx->request_1 > 0)
                FIELD("HYPERAMP_REQUEST=%lld", (long long)ctx->request_1 - 1);
        if (ctx && ctx->client_pid > 0) {
                FIELD("HYPERAMP_CLIENT_PID=%d", ctx->client_pid);
                FIELD("HYPERAMP_CLIENT_UID=%u", ctx->client_uid);
        }
#undef FIELD
        /* The caller's place, not this function's (sd_journal_sendv()
         * would record log.c). */
        snprintf(file, sizeof(file), "CODE_FILE=%s", source_path(loc->file));
        snprintf(line, sizeof(line), "CODE_LINE=%d", loc->line);
        (void)sd_journal_sendv_with_location(file, line, loc->func, iov, n);
        free(m);
}

__attribute__((format(printf, 4, 0)))
static void log_va(const HaLogLoc *loc, int level, const HaLogCtx *ctx, const char *fmt, va_list ap)
{
        char msg[2048];

        vsnprintf(msg, sizeof(msg), fmt, ap);
        /* One call per line: stdio's lock keeps threads' lines whole. */
        switch (log_target) {
        case HA_LOG_JOURNAL:
                log_journal(loc, level, ctx, msg);
                break;
        case HA_LOG_CONSOLE:
                fprintf(stderr, "%s: %s%s\n", log_ident,
                        level <= LOG_ERR ? "error: " : level == LOG_WARNING ? "warning: " : "",
                        msg);
                break;
        default:
                fprintf(stderr, "<%d>%s\n", level, msg);
                break;
        }
}

/* Level filter, and errno kept for the caller. */
__attribute__((format(printf, 4, 0)))
static void log_filtered(const HaLogLoc *loc, int level, const HaLogCtx *ctx, const char *fmt,
                         va_list ap)
{
        int saved = errno;

        if (level <= ha_log_get_level())
                log_va(loc, level, ctx, fmt, ap);
        errno = saved;
}

void ha_log_at(const HaLogLoc *loc, int level, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_filtered(loc, level, NULL, fmt, ap);
        va_end(ap);
}

void ha_log_ctx_at(const HaLogLoc *loc, int level, const HaLogCtx *ctx, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_filtered(loc, level, ctx, fmt, ap);
        va_end(ap);
}

int ha_log_errno_at(const HaLogLoc *loc, int level, int r, const char *fmt, ...)
{
        va_list ap;

        if (level > ha_log_get_level())
                return r;
        errno = r < 0 ? -r : r;
        va_start(ap, fmt);
        log_va(loc, level, NULL, fmt, ap);
        va_end(ap);
        return r;
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
