/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hyperamp/cleanup.h"
#include "services.h"

/* The original Linux service: the AES-128 test key, then 0x55. */
static const uint8_t xor_key[16] = {
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
        0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
};

static enum ha_result svc_xor(uint8_t *buf, size_t len)
{
        uint8_t k[16];
        uint64_t k0, k1, w0, w1;
        size_t i = 0;

        /* XOR is its own inverse, so encrypt and decrypt share this.  The
         * key repeats every 16 bytes: do 16 at a time in two words (memcpy
         * keeps it alignment-safe), then the tail byte by byte. */
        for (unsigned j = 0; j < 16; j++)
                k[j] = xor_key[j] ^ 0x55;
        memcpy(&k0, k, 8);
        memcpy(&k1, k + 8, 8);
        for (; i + 16 <= len; i += 16) {
                memcpy(&w0, buf + i, 8);
                memcpy(&w1, buf + i + 8, 8);
                w0 ^= k0;
                w1 ^= k1;
                memcpy(buf + i, &w0, 8);
                memcpy(buf + i + 8, &w1, 8);
        }
        for (; i < len; i++)
                buf[i] ^= k[i & 15];
        return HA_RESULT_SUCCESS;
}

static enum ha_result svc_echo(uint8_t *buf, size_t len)
{
        (void)buf;
        (void)len;
        return HA_RESULT_SUCCESS;
}

static const HaService table[] = {
        { 1, "encrypt", "XOR with the 16-byte HyperAMP key, then 0x55", svc_xor, false, true },
        { 2, "decrypt", "inverse of encrypt", svc_xor, false, true },
        { 66, "echo", "returns the payload unchanged", svc_echo, true, true },
};

#if HA_TEST_SEAMS
static int stall_fd = -1, stall_entered_fd = -1;

static enum ha_result svc_stall(uint8_t *buf, size_t len)
{
        char b;
        ssize_t n;
        (void)buf;
        (void)len;

        /* Best effort: a full FIFO only loses the notice. */
        if (stall_entered_fd >= 0 && write(stall_entered_fd, "e", 1) < 0)
                (void)0;
        do
                n = read(stall_fd, &b, 1);
        while (n < 0 && errno == EINTR);
        return n == 1 ? HA_RESULT_SUCCESS : HA_RESULT_FAIL;
}

static const HaService stall_service = {
        HA_SERVICE_STALL, "stall", "test seam: waits for a byte per request", svc_stall, true,
        false   /* blocks: never on the loop */
};

void ha_services_enable_stall(int fd, int entered_fd)
{
        stall_fd = fd;
        stall_entered_fd = entered_fd;
}
#endif

const HaService *ha_services(size_t *ret_n)
{
        *ret_n = ELEMENTSOF(table);
        return table;
}

const HaService *ha_service_by_id(uint16_t id)
{
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].id == id)
                        return &table[i];
#if HA_TEST_SEAMS
        if (id == HA_SERVICE_STALL && stall_fd >= 0)
                return &stall_service;
#endif
        return NULL;
}

bool ha_service_staged(const HaService *s)
{
        return !s->reads_only;
}

const HaService *ha_service_by_name(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcmp(table[i].name, name) == 0)
                        return &table[i];
        return NULL;
}

enum ha_result ha_service_run(uint16_t id, uint8_t *buf, size_t len)
{
        const HaService *s = ha_service_by_id(id);

        if (!s)
                return HA_RESULT_NOT_EXITS;
        if (len == 0)
                return HA_RESULT_FAIL;
        return s->fn(buf, len);
}

int ha_service_parse(const char *s, uint16_t *ret_id)
{
        const HaService *svc;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] >= '0' && s[0] <= '9') {
                char *end;
                unsigned long v;

                errno = 0;
                v = strtoul(s, &end, 10);
                if (*end)
                        return -EINVAL;
                if (errno || v > UINT16_MAX)
                        return -ERANGE;
                *ret_id = (uint16_t)v;
                return 0;
        }
        svc = ha_service_by_name(s);
        if (!svc)
                return -ENOENT;
        *ret_id = svc->id;
        return 0;
}

const char *ha_result_name(enum ha_result r)
{
        switch (r) {
        case HA_RESULT_NONE:
                return "NONE";
        case HA_RESULT_SUCCESS:
                return "SUCCESS";
        case HA_RESULT_FAIL:
                return "FAIL";
        case HA_RESULT_NOT_EXITS:
                return "NOT_EXITS";
        case HA_RESULT_TIMEOUT:
                return "E_TIMEOUT";
        }
        return "INVALID";
}
