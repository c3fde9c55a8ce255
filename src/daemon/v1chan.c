/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devmem.h"
#include "hvcfg.h"
#include "hyperamp/cleanup.h"
#include "log.h"
#include "queue.h"
#include "services.h"
#include "v1chan.h"

/* The original Linux service's echo id (NPUCore_SERVICE_ECHO). */
#define V1_SVC_ECHO 66
/* Requests up to this size bounce through the worker's stack. */
#define BOUNCE_STACK 4096
/* Reads per wake-up to empty the doorbell; more wakes us again. */
#define DRAIN_MAX_READS 16

/* What the worker saw and did for one entry; read back in complete(). */
typedef struct Slot {
        uint32_t offset, length;
        uint16_t flag, service;
        uint8_t why;
        uint8_t result;
} Slot;

typedef struct Map {
        void *addr;
        size_t len;
} Map;

struct HaV1Chan {
        HaV1ChannelConfig cfg;
        HaEngine *engine;
        unsigned source;
        int mem_fd, bell_fd;
        bool bell_read;                 /* the doorbell can be drained with read() */
        uint64_t mem_size;              /* a regular file's size; 0: a device */
        Map buf_map, queue_map, ready_map;
        volatile uint8_t *buf;
        size_t buf_len;
        HaMsgQueue *q;
        uint32_t *ready;
        uint16_t cap;                   /* entries that fit the queue mapping */
        uint16_t n;                     /* trusted buf_size; 0 until adopted */
        HaWalkSet walk;
        uint16_t *batch;
        Slot *slots;
        size_t pending;                 /* entries of the batch not completed yet */
        struct event *bell_ev, *rescan_ev;
        HaRatelimit rl;
        struct {
                uint64_t requests, completed, failed, batches, wakeups, spurious;
                uint64_t bad_index, cycles, bad_range, bad_length, bad_flag, bad_header;
                uint64_t no_memory, dispatch_failed;
        } st;
};

/* ===== one request (worker thread) ===== */

enum ha_result ha_v1_serve(volatile uint8_t *buf, size_t buf_len, uint16_t flag,
                           uint16_t service, uint32_t offset, uint32_t length, unsigned *why)
{
        uint8_t stack[BOUNCE_STACK], *b;
        enum ha_result r;
        size_t n;

        *why = HA_V1_OK;
        /* msg_reset cleared the flag before the client sent the entry. */
        if (flag != 0) {
                *why = HA_V1_BAD_FLAG;
                return HA_RESULT_FAIL;
        }
        if (length == 0) {
                *why = HA_V1_ZERO_LENGTH;
                return HA_RESULT_FAIL;
        }
        if (offset > buf_len || length > buf_len - offset) {
                *why = HA_V1_BAD_RANGE;
                return HA_RESULT_FAIL;
        }
        if (!ha_service_by_id(service))
                return HA_RESULT_NOT_EXITS;
        if (service == V1_SVC_ECHO)
                return HA_RESULT_SUCCESS;       /* nothing to change, nothing to copy */
        n = length - 1;                         /* the trailing NUL stays as it is */
        if (n == 0)
                return HA_RESULT_FAIL;          /* the original rejects a non-positive length */

        /* The services use wide and unaligned accesses: never on the mapping. */
        b = n <= sizeof(stack) ? stack : malloc(n);
        if (!b) {
                *why = HA_V1_NO_MEMORY;
                return HA_RESULT_FAIL;
        }
        ha_devmem_read(b, buf + offset, n);
        r = ha_service_run(service, b, n);
        if (r == HA_RESULT_SUCCESS)
                ha_devmem_write(buf + offset, b, n);
        if (b != stack)
                free(b);
        return r;
}

static void v1_run(void *ctx, uint16_t idx, unsigned worker)
{
        HaV1Chan *c = ctx;
        HaMsgEntry *en = &c->q->entries[idx];   /* idx < n <= cap: the walk checked it */
        Slot *s = &c->slots[idx];
        unsigned why;
        enum ha_result r;
        (void)worker;

        /* Each field read once: the peer may rewrite them under us. */
        s->flag = ha_ld16(&en->msg.flag);
        s->service = ha_ld16(&en->msg.service_id);
        s->offset = ha_ld32(&en->msg.offset);
        s->length = ha_ld32(&en->msg.length);
        r = ha_v1_serve(c->buf, c->buf_len, s->flag, s->service, s->offset, s->length, &why);
        s->why = (uint8_t)why;
        s->result = (uint8_t)r;
        /* Result and done bit in one store, after the payload: the client
         * polls deal_state and must never see it before the result. */
        __atomic_store_n(&en->msg.flag, ha_flag_make(r), __ATOMIC_RELEASE);
}

/* ===== the batch (loop thread) ===== */

static void report(HaV1Chan *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Per-entry trouble comes from the peer: rate-limited, so it cannot flood. */
static void report(HaV1Chan *c, const char *fmt, ...)
{
        uint64_t suppressed;
        char msg[256];
        va_list ap;

        if (!ha_ratelimit_ok(&c->rl, &suppressed))
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (suppressed)
                log_warning("v1 channel '%s': %s (%llu similar messages suppressed)",
                            c->cfg.name, msg, (unsigned long long)suppressed);
        else
                log_warning("v1 channel '%s': %s", c->cfg.name, msg);
}

static void publish_idle(HaV1Chan *c)
{
        /* Plain load and store, no compare-and-swap: exclusives are not
         * reliable on Device memory.  Only BUSY (our batch) becomes IDLE. */
        if (__atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) == HA_MARK_BUSY)
                __atomic_store_n(&c->q->working_mark, HA_MARK_IDLE, __ATOMIC_RELEASE);
}

/* Adopt buf_size from the client's header, checked against our mapping. */
static int adopt_buf_size(HaV1Chan *c)
{
        uint16_t bs = ha_ld16(&c->q->buf_size);

        if (bs == c->n)
                return 0;
        if (bs == 0 || bs > c->cap) {
                c->st.bad_header++;
                report(c, "root queue buf_size %u is not 1..%u (what its mem_size holds), "
                       "not serving it", bs, c->cap);
                return -EINVAL;
        }
        if (c->n)
                report(c, "root queue buf_size changed from %u to %u: the client formatted "
                       "the queue again", c->n, bs);
        else
                log_info("v1 channel '%s': root queue has %u entries", c->cfg.name, bs);
        c->n = bs;
        return 0;
}

static void batch_done(HaV1Chan *c);

/* A batch the workers cannot take: fail each entry here. */
static void fail_batch(HaV1Chan *c, size_t k)
{
        for (size_t i = 0; i < k; i++)
                __atomic_store_n(&c->q->entries[c->batch[i]].msg.flag,
                                 ha_flag_make(HA_RESULT_FAIL), __ATOMIC_RELEASE);
        c->st.completed += k;
        c->st.failed += k;
        c->st.dispatch_failed += k;
        c->pending = 0;
        batch_done(c);
}

/* Take and dispatch the proc_ing list; false if the queue was not BUSY. */
static bool scan(HaV1Chan *c)
{
        unsigned why;
        size_t k;
        int r;

        if (c->pending)
                return true;    /* one batch at a time; batch_done looks again */
        if (__atomic_load_n(&c->q->working_mark, __ATOMIC_ACQUIRE) != HA_MARK_BUSY)
                return false;
        if (adopt_buf_size(c) < 0)
                return true;
        k = ha_list_take(c->q, c->n, &c->q->proc_ing_h, &c->walk, NULL, NULL, c->batch,
                         (size_t)c->n + 1, &why);
        if (why & HA_WALK_BAD_INDEX) {
                c->st.bad_index++;
                report(c, "proc_ing list has a link past buf_size %u after %zu entries, "
                       "cut there", c->n, k);
        }
        if (why & HA_WALK_CYCLE) {
                c->st.cycles++;
                report(c, "proc_ing list loops back after %zu entries, cut there", k);
        }
        if (k == 0) {
                publish_idle(c);
                return true;
        }
        c->st.requests += k;
        c->st.batches++;
        c->pending = k;
        r = ha_engine_dispatch(c->engine, c->source, c->batch, k);
        if (r < 0) {
                report(c, "%zu requests failed: the worker pool is full", k);
                fail_batch(c, k);
        }
        return true;
}

static void batch_done(HaV1Chan *c)
{
        /* The original client transfers only when IDLE, so the list is
         * empty now; if a peer added entries anyway, serve them first. */
        if (ha_ld16(&c->q->proc_ing_h) == c->n)
                publish_idle(c);
        else
                event_active(c->rescan_ev, 0, 0);
}

static void v1_complete(void *ctx, uint16_t idx)
{
        HaV1Chan *c = ctx;
        const Slot *s = &c->slots[idx];

        c->st.completed++;
        if (s->result != HA_RESULT_SUCCESS)
                c->st.failed++;
        switch (s->why) {
        case HA_V1_BAD_FLAG:
                c->st.bad_flag++;
                report(c, "entry %u handed over with flag 0x%04x (expected 0), failed", idx,
                       s->flag);
                break;
        case HA_V1_ZERO_LENGTH:
                c->st.bad_length++;
                report(c, "entry %u has length 0, failed", idx);
                break;
        case HA_V1_BAD_RANGE:
                c->st.bad_range++;
                report(c, "entry %u: offset 0x%x + length 0x%x is past the %zu-byte buf "
                       "region, failed", idx, s->offset, s->length, c->buf_len);
                break;
        case HA_V1_NO_MEMORY:
                c->st.no_memory++;
                report(c, "entry %u: no memory for a %u-byte bounce buffer, failed", idx,
                       s->length);
                break;
        }
        /* Not batch_done()'s rescan from here: we are inside the engine's
         * completion pass, which must not be handed new jobs. */
        if (c->pending && --c->pending == 0)
                batch_done(c);
}

static void rescan_cb(evutil_socket_t fd, short what, void *userdata)
{
        (void)fd, (void)what;
        (void)scan(userdata);
}

static void drain_doorbell(HaV1Chan *c)
{
        char b[256];

        for (unsigned i = 0; c->bell_read && i < DRAIN_MAX_READS; i++) {
                ssize_t k = read(c->bell_fd, b, sizeof(b));

                if (k == (ssize_t)sizeof(b) || (k < 0 && errno == EINTR))
                        continue;
                if (k < 0 && errno != EAGAIN) {
                        /* /dev/hshm0 has no read(): its poll() already took
                         * the wake-up. */
                        log_debug("v1 channel '%s': doorbell %s cannot be read (%s), "
                                  "relying on poll alone", c->cfg.name, c->cfg.doorbell,
                                  strerror(errno));
                        c->bell_read = false;
                }
                break;
        }
}

static void bell_cb(evutil_socket_t fd, short what, void *userdata)
{
        HaV1Chan *c = userdata;
        (void)fd, (void)what;

        /* Interrupts coalesce: one wake-up may stand for many notifies. */
        drain_doorbell(c);
        c->st.wakeups++;
        if (!scan(c))
                c->st.spurious++;
}

static void v1_stats(void *ctx, cJSON *o)
{
        HaV1Chan *c = ctx;

        cJSON_AddNumberToObject(o, "buf_size", c->n);
        cJSON_AddNumberToObject(o, "in_flight", (double)c->pending);
        cJSON_AddNumberToObject(o, "requests", (double)c->st.requests);
        cJSON_AddNumberToObject(o, "completed", (double)c->st.completed);
        cJSON_AddNumberToObject(o, "failed", (double)c->st.failed);
        cJSON_AddNumberToObject(o, "batches", (double)c->st.batches);
        cJSON_AddNumberToObject(o, "wakeups", (double)c->st.wakeups);
        cJSON_AddNumberToObject(o, "spurious", (double)c->st.spurious);
        cJSON_AddNumberToObject(o, "bad_index", (double)c->st.bad_index);
        cJSON_AddNumberToObject(o, "cycles", (double)c->st.cycles);
        cJSON_AddNumberToObject(o, "bad_range", (double)c->st.bad_range);
        cJSON_AddNumberToObject(o, "bad_length", (double)c->st.bad_length);
        cJSON_AddNumberToObject(o, "bad_flag", (double)c->st.bad_flag);
        cJSON_AddNumberToObject(o, "bad_header", (double)c->st.bad_header);
        cJSON_AddNumberToObject(o, "no_memory", (double)c->st.no_memory);
        cJSON_AddNumberToObject(o, "dispatch_failed", (double)c->st.dispatch_failed);
}

static const HaSourceOps v1_ops = {
        .kind = "v1",
        .run = v1_run,
        .complete = v1_complete,
        .stats_json = v1_stats,
};

/* ===== start and stop ===== */

static int fail(HaV1Chan *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(HaV1Chan *c, int r, const char *fmt, ...)
{
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_error("v1 channel '%s': %s", c->cfg.name, msg);
        return r;
}

/* Map len bytes at physical address addr (file offset addr - base). */
static int map_phys(HaV1Chan *c, const char *what, uint64_t addr, uint64_t len, Map *m,
                    void **ret)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off, aligned;
        void *p;

        if (addr < c->cfg.base)
                return fail(c, -EINVAL, "%s at 0x%llx lies below base 0x%llx", what,
                            (unsigned long long)addr, (unsigned long long)c->cfg.base);
        off = addr - c->cfg.base;
        aligned = off & ~(page - 1);
        if (len > SIZE_MAX - (off - aligned) || aligned > (uint64_t)INT64_MAX)
                return fail(c, -EINVAL, "%s at 0x%llx (0x%llx bytes) cannot be mapped", what,
                            (unsigned long long)addr, (unsigned long long)len);
        /* Touching a page past the end of a file would be SIGBUS. */
        if (c->mem_size && (off > c->mem_size || len > c->mem_size - off))
                return fail(c, -EINVAL, "%s at 0x%llx + 0x%llx is past the end of %s "
                            "(%llu bytes; base 0x%llx)", what, (unsigned long long)addr,
                            (unsigned long long)len, c->cfg.mem,
                            (unsigned long long)c->mem_size, (unsigned long long)c->cfg.base);
        p = mmap(NULL, (size_t)(off - aligned + len), PROT_READ | PROT_WRITE, MAP_SHARED,
                 c->mem_fd, (off_t)aligned);
        if (p == MAP_FAILED)
                return fail(c, -errno, "cannot map %s at 0x%llx from %s: %s", what,
                            (unsigned long long)addr, c->cfg.mem, strerror(errno));
        m->addr = p;
        m->len = (size_t)(off - aligned + len);
        *ret = (uint8_t *)p + (off - aligned);
        return 0;
}

static int open_mem(HaV1Chan *c)
{
        struct stat st;

        c->mem_fd = open(c->cfg.mem, O_RDWR | O_SYNC | O_CLOEXEC);
        if (c->mem_fd < 0)
                return fail(c, -errno, "cannot open %s: %s", c->cfg.mem, strerror(errno));
        if (fstat(c->mem_fd, &st) < 0)
                return fail(c, -errno, "cannot stat %s: %s", c->cfg.mem, strerror(errno));
        if (S_ISREG(st.st_mode)) {
                if (st.st_size <= 0)
                        return fail(c, -EINVAL, "%s is empty", c->cfg.mem);
                c->mem_size = (uint64_t)st.st_size;
        } else if (!S_ISCHR(st.st_mode))
                return fail(c, -EINVAL, "%s is neither a memory device nor a regular file",
                            c->cfg.mem);
        return 0;
}

static int open_doorbell(HaV1Chan *c)
{
        struct stat st;
        int flags;

        if (stat(c->cfg.doorbell, &st) < 0)
                return fail(c, -errno, "doorbell %s: %s", c->cfg.doorbell, strerror(errno));
        /* A FIFO opened for writing too never reports EOF when the
         * writer goes away, so the loop does not spin on it. */
        if (S_ISFIFO(st.st_mode))
                flags = O_RDWR;
        else if (S_ISCHR(st.st_mode))
                flags = O_RDONLY;
        else
                return fail(c, -EINVAL, "doorbell %s must be a character device "
                            "(/dev/hshm0) or a FIFO", c->cfg.doorbell);
        c->bell_fd = open(c->cfg.doorbell, flags | O_NONBLOCK | O_CLOEXEC);
        if (c->bell_fd < 0)
                return fail(c, -errno, "cannot open doorbell %s: %s", c->cfg.doorbell,
                            strerror(errno));
        if (fstat(c->bell_fd, &st) < 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)))
                return fail(c, -EINVAL, "doorbell %s changed type while opening",
                            c->cfg.doorbell);
        c->bell_read = true;
        return 0;
}

static int start(HaV1Chan *c, struct event_base *base, HaEngine *e)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        HaHvConfig hv;
        char err[512];
        void *p;
        uint16_t bs;
        int r;

        /* Offsets must keep the addresses' alignment: the queue is read
         * with 16- and 32-bit accesses. */
        if (c->cfg.base % page)
                return fail(c, -EINVAL, "base 0x%llx is not a multiple of the page size "
                            "(0x%llx)", (unsigned long long)c->cfg.base,
                            (unsigned long long)page);

        r = ha_hvcfg_load(c->cfg.shm_config, &hv, err, sizeof(err));
        if (r < 0)
                return fail(c, r, "%s", err);
        if (hv.skipped)
                log_warning("v1 channel '%s': %s: %u region(s) with mem_size 0 skipped, "
                            "ignoring", c->cfg.name, c->cfg.shm_config, hv.skipped);

        r = open_mem(c);
        if (r < 0)
                return r;
        r = map_phys(c, "the buf region", hv.buf_addr, hv.buf_size, &c->buf_map, &p);
        if (r < 0)
                return r;
        c->buf = p;
        c->buf_len = (size_t)hv.buf_size;
        /* u16 indices: a bigger region just has unused room at the end. */
        {
                uint64_t fit = (hv.queue_size - sizeof(HaMsgQueue)) / sizeof(HaMsgEntry);
                c->cap = (uint16_t)(fit > HA_QUEUE_MAX_ENTRIES ? HA_QUEUE_MAX_ENTRIES : fit);
        }
        r = map_phys(c, "the root queue", hv.queue_addr, ha_queue_bytes(c->cap), &c->queue_map,
                     &p);
        if (r < 0)
                return r;
        c->q = p;
        r = map_phys(c, "the ready page", hv.ready_addr, sizeof(uint32_t), &c->ready_map, &p);
        if (r < 0)
                return r;
        c->ready = p;

        c->batch = calloc((size_t)c->cap + 1, sizeof(*c->batch));
        c->slots = calloc(c->cap, sizeof(*c->slots));
        if (!c->batch || !c->slots || ha_walkset_init(&c->walk, c->cap) < 0)
                return fail(c, -ENOMEM, "out of memory");

        /* The client formats the queue; before it has, buf_size is 0. */
        bs = ha_ld16(&c->q->buf_size);
        if (bs >= 1 && bs <= c->cap)
                c->n = bs;
        else if (bs == 0)
                log_notice("v1 channel '%s': root queue not formatted yet (buf_size 0), "
                           "taking its size when the client first rings", c->cfg.name);
        else
                log_warning("v1 channel '%s': root queue buf_size %u is more than its "
                            "mem_size holds (%u), waiting for the client to format it",
                            c->cfg.name, bs, c->cap);

        r = open_doorbell(c);
        if (r < 0)
                return r;
        c->bell_ev = event_new(base, c->bell_fd, EV_READ | EV_PERSIST, bell_cb, c);
        c->rescan_ev = event_new(base, -1, 0, rescan_cb, c);
        if (!c->bell_ev || !c->rescan_ev)
                return fail(c, -ENOMEM, "out of memory");
        if (event_add(c->bell_ev, NULL) < 0)
                return fail(c, -EIO, "cannot watch doorbell %s", c->cfg.doorbell);
        c->engine = e;
        r = ha_engine_add_source(e, &v1_ops, c, c->cfg.name, &c->source);
        if (r < 0)
                return fail(c, r, "too many queues for the engine (at most %d)",
                            HA_ENGINE_MAX_SOURCES);

        /* Last: the client may send as soon as it sees this. */
        __atomic_store_n(c->ready, HA_MARK_INITIALIZED, __ATOMIC_RELEASE);
        log_info("v1 channel '%s': serving root queue 0x%llx (room for %u entries), buf "
                 "0x%llx+0x%llx, ready mark at 0x%llx, doorbell %s", c->cfg.name,
                 (unsigned long long)hv.queue_addr, c->cap, (unsigned long long)hv.buf_addr,
                 (unsigned long long)hv.buf_size, (unsigned long long)hv.ready_addr,
                 c->cfg.doorbell);
        /* One pass as if the doorbell rang: serves what was sent while we
         * were not running, and clears a BUSY left by a previous run. */
        event_active(c->rescan_ev, 0, 0);
        return 0;
}

int ha_v1chan_start(struct event_base *base, HaEngine *e, const HaV1ChannelConfig *cfg,
                    HaV1Chan **ret)
{
        HaV1Chan *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return log_error_errno(-ENOMEM, "v1 channel '%s': %m", cfg->name);
        c->cfg = *cfg;
        c->mem_fd = c->bell_fd = -1;
        c->rl = (HaRatelimit)HA_RATELIMIT_INIT(10000, 5);
        r = start(c, base, e);
        if (r < 0) {
                /* Not registered: nothing else refers to c. */
                ha_v1chan_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void unmap(Map *m)
{
        if (m->addr)
                (void)munmap(m->addr, m->len);
        m->addr = NULL;
}

HaV1Chan *ha_v1chan_free(HaV1Chan *c)
{
        if (!c)
                return NULL;
        if (c->bell_ev)
                event_free(c->bell_ev);
        if (c->rescan_ev)
                event_free(c->rescan_ev);
        unmap(&c->buf_map);
        unmap(&c->queue_map);
        unmap(&c->ready_map);
        closep(&c->mem_fd);
        closep(&c->bell_fd);
        ha_walkset_fini(&c->walk);
        free(c->batch);
        free(c->slots);
        free(c);
        return NULL;
}
