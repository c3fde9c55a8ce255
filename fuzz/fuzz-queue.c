/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the shared-memory queue walker fed arbitrary queue bytes, as a
 * hostile zone would write them.  The input is a queue page (header and
 * entries) plus a script of operations; between operations the fuzzer's
 * bytes are written over the shared page again.  Invariants checked: no
 * index out of range is ever returned, every entry enqueued comes out of
 * collect exactly once, the free count balances.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

#define N 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        size_t qlen = ha_queue_bytes(N);
        HaMsgQueue *q = calloc(1, qlen);
        uint16_t out[N], held[N];
        unsigned nheld = 0;
        HaWalkSet w;
        HaQueue hq;
        unsigned why;

        if (!q || ha_queue_init(&hq, q, qlen, N) < 0) {
                free(q);
                return 0;
        }
        /* Part 1: a foreign queue of arbitrary bytes, walked from each head. */
        if (size >= qlen && ha_walkset_init(&w, N) == 0) {
                HaMsgQueue *f = malloc(qlen);
                memcpy(f, data, qlen);
                uint16_t *heads[] = { &f->empty_h, &f->wait_h, &f->proc_ing_h };
                for (unsigned i = 0; i < 3; i++) {
                        size_t k = ha_list_take(f, N, heads[i], &w, NULL, NULL, out, N, &why);
                        for (size_t j = 0; j < k; j++)
                                if (out[j] >= N)
                                        abort();
                }
                free(f);
                ha_walkset_fini(&w);
                data += qlen;
                size -= qlen;
        }
        /* Part 2: our own queue, scribbled on between operations. */
        for (size_t i = 0; i + 3 <= size; i += 3) {
                uint8_t op = data[i] % 4;
                uint16_t at = (uint16_t)((data[i + 1] | data[i + 2] << 8) % (qlen / 2));

                switch (op) {
                case 0: {
                        uint16_t idx;
                        if (ha_queue_acquire(&hq, &idx) == 0) {
                                if (idx >= N)
                                        abort();
                                ha_queue_enqueue(&hq, idx);
                                held[nheld++] = idx;
                        }
                        break;
                }
                case 1: {
                        size_t k = ha_queue_collect(&hq, out);
                        if (k != nheld)
                                abort();        /* an accepted entry lost or doubled */
                        for (size_t j = 0; j < k; j++) {
                                unsigned found = 0;
                                for (unsigned m = 0; m < nheld; m++)
                                        found += held[m] == out[j];
                                if (found != 1)
                                        abort();
                        }
                        for (size_t j = 0; j < k; j++)
                                ha_queue_release(&hq, out[j]);
                        nheld = 0;
                        break;
                }
                default:
                        /* the peer writes a halfword anywhere in the page */
                        ((uint16_t *)q)[at] = (uint16_t)(data[i + 1] ^ data[i + 2] << 3);
                        break;
                }
        }
        if (ha_queue_collect(&hq, out) != nheld)
                abort();
        ha_queue_fini(&hq);
        free(q);
        return 0;
}
