/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "v1sim.h"

static const uint8_t linux_key[16] = {
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
        0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
};

void v1sim_linux_cipher(uint8_t *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                b[i] ^= linux_key[i % 16] ^ 0x55;
}

void v1sim_xor5a(uint8_t *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                b[i] ^= 0x5a;
}

int v1sim_peer_parse(const char *s, enum v1sim_peer *ret)
{
        if (!strcmp(s, "linux"))
                *ret = V1SIM_LINUX;
        else if (!strcmp(s, "freertos"))
                *ret = V1SIM_FREERTOS;
        else if (!strcmp(s, "sel4"))
                *ret = V1SIM_SEL4;
        else
                return -EINVAL;
        return 0;
}

void v1sim_expect(enum v1sim_peer p, uint16_t id, const uint8_t *data, size_t n, uint8_t *wire,
                  uint8_t *expect, size_t *wire_len)
{
        bool cipher = id == 1 || id == 2;

        memcpy(wire, data, n);
        /* Linux and FreeRTOS services take C strings: a NUL they leave alone. */
        *wire_len = p == V1SIM_SEL4 ? n : n + 1;
        if (*wire_len > n)
                wire[n] = 0;
        memcpy(expect, wire, *wire_len);
        if (!cipher)
                return;
        if (p == V1SIM_LINUX)
                v1sim_linux_cipher(expect, n);
        else
                v1sim_xor5a(expect, n);
}

uint64_t v1sim_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int map_one(V1Map *m, int i, uint64_t base, uint64_t addr, uint64_t len, void **ret,
                   char *err, size_t errlen)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off = addr - base;
        uint64_t aligned = off & ~(page - 1);
        uint8_t *p;

        if (addr < base) {
                snprintf(err, errlen, "address 0x%llx lies below base 0x%llx",
                         (unsigned long long)addr, (unsigned long long)base);
                return -EINVAL;
        }
        p = mmap(NULL, (size_t)(off - aligned + len), PROT_READ | PROT_WRITE, MAP_SHARED,
                 m->mem_fd, (off_t)aligned);
        if (p == MAP_FAILED) {
                snprintf(err, errlen, "cannot map 0x%llx: %s", (unsigned long long)addr,
                         strerror(errno));
                return -errno;
        }
        m->map_addr[i] = p;
        m->map_len[i] = (size_t)(off - aligned + len);
        *ret = p + (off - aligned);
        return 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
        return a < b + blen && b < a + alen;
}

int v1sim_map(V1Map *m, const char *shm_config, const char *mem, uint64_t base, bool create,
              char *err, size_t errlen)
{
        uint64_t end, fit, qlen;
        struct stat st;
        void *p;
        int r;

        memset(m, 0, sizeof(*m));
        m->mem_fd = -1;
        r = ha_hvcfg_load(shm_config, &m->hv, err, errlen);
        if (r < 0)
                return r;
        fit = (m->hv.queue_size - sizeof(HaMsgQueue)) / sizeof(HaMsgEntry);
        m->cap = (uint16_t)(fit > HA_QUEUE_MAX_ENTRIES ? HA_QUEUE_MAX_ENTRIES : fit);
        qlen = ha_queue_bytes(m->cap);
        end = m->hv.buf_addr + m->hv.buf_size;
        if (m->hv.queue_addr + qlen > end)
                end = m->hv.queue_addr + qlen;
        if (m->hv.ready_addr + sizeof(HaMsgQueue) > end)
                end = m->hv.ready_addr + sizeof(HaMsgQueue);
        m->mem_fd = open(mem, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
        if (m->mem_fd < 0 || fstat(m->mem_fd, &st) < 0) {
                snprintf(err, errlen, "cannot open %s: %s", mem, strerror(errno));
                return -errno;
        }
        if (S_ISREG(st.st_mode) && end > base && (uint64_t)st.st_size < end - base) {
                if (!create) {
                        snprintf(err, errlen, "%s is smaller than the regions need", mem);
                        return -EINVAL;
                }
                if (ftruncate(m->mem_fd, (off_t)(end - base)) < 0) {
                        snprintf(err, errlen, "cannot size %s: %s", mem, strerror(errno));
                        return -errno;
                }
        }
        r = map_one(m, 0, base, m->hv.buf_addr, m->hv.buf_size, &p, err, errlen);
        if (r < 0)
                return r;
        m->buf = p;
        m->buf_len = (size_t)m->hv.buf_size;
        r = map_one(m, 1, base, m->hv.queue_addr, qlen, &p, err, errlen);
        if (r < 0)
                return r;
        m->q = p;
        r = map_one(m, 2, base, m->hv.ready_addr, sizeof(HaMsgQueue), &p, err, errlen);
        if (r < 0)
                return r;
        m->ready = p;
        /* The RTOS peers write a whole queue header on their page; only
         * where that cannot land on the other regions. */
        if (!overlaps(m->hv.ready_addr, sizeof(HaMsgQueue), m->hv.buf_addr, m->hv.buf_size) &&
            !overlaps(m->hv.ready_addr, sizeof(HaMsgQueue), m->hv.queue_addr, qlen))
                m->ready_q = p;
        return 0;
}

void v1sim_unmap(V1Map *m)
{
        for (int i = 0; i < 3; i++)
                if (m->map_addr[i])
                        (void)munmap(m->map_addr[i], m->map_len[i]);
        if (m->mem_fd >= 0)
                close(m->mem_fd);
        memset(m, 0, sizeof(*m));
        m->mem_fd = -1;
}

const char *v1sim_prog = "v1sim";

void v1sim_die(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "%s: ", v1sim_prog);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

uint64_t v1sim_num(const char *opt, const char *s, uint64_t max)
{
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno || end == s || *end || *s == '-' || v > max)
                v1sim_die("%s: bad value '%s'", opt, s);
        return v;
}
