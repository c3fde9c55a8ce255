/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "devmem.h"

void ha_devmem_read(void *dst, const volatile void *src, size_t len)
{
        const volatile uint8_t *s = src;
        uint8_t *d = dst;

        /* Bytes up to the first 4-byte boundary of the mapping, then whole
         * aligned words, then the tail; memcpy only on our own side. */
        for (; len && ((uintptr_t)s & 3); len--)
                *d++ = *s++;
        for (; len >= 4; len -= 4, s += 4, d += 4) {
                uint32_t w = *(const volatile uint32_t *)(const volatile void *)s;
                memcpy(d, &w, 4);
        }
        for (; len; len--)
                *d++ = *s++;
}

void ha_devmem_write(volatile void *dst, const void *src, size_t len)
{
        volatile uint8_t *d = dst;
        const uint8_t *s = src;

        for (; len && ((uintptr_t)d & 3); len--)
                *d++ = *s++;
        for (; len >= 4; len -= 4, s += 4, d += 4) {
                uint32_t w;
                memcpy(&w, s, 4);
                *(volatile uint32_t *)(volatile void *)d = w;
        }
        for (; len; len--)
                *d++ = *s++;
}
