/* SPDX-License-Identifier: MIT */
/*
 * lease-v2: sequential requests through hyperampd's zone channel
 * (libhyperamp) to a service routed to a HyperAMP v2 zone whose peer XORs
 * with 0x5A (the seL4 server, or tests/peers/sel4v2), every result
 * checked.  The daemon side of the v2 benchmark in docs/PERFORMANCE.md,
 * and one of the sources in test_v2.
 *
 *   lease-v2 --socket PATH [-n COUNT] [--size BYTES] [--service ID]
 *
 * Prints "lease-v2 n=... p50_us=... p99_us=... max_us=..."; exit 1 on the
 * first wrong or failed reply.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "hist.h"
#include "hyperamp/hyperamp.h"

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 'S' },
                { "size", required_argument, NULL, 's' },
                { "service", required_argument, NULL, 'v' },
                { NULL, 0, NULL, 0 },
        };
        const char *sock = NULL;
        unsigned long n = 10000, size = 64, service = 1;
        HaHist hist = { 0 };
        hyperamp_t *h;
        hyperamp_req_t *r;
        uint8_t *p;
        int c, e;

        while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
                switch (c) {
                case 'S': sock = optarg; break;
                case 'n': n = strtoul(optarg, NULL, 0); break;
                case 's': size = strtoul(optarg, NULL, 0); break;
                case 'v': service = strtoul(optarg, NULL, 0); break;
                default: return 2;
                }
        }
        if (size == 0 || size > (2u << 20) || (service != 1 && service != 2)) {
                fprintf(stderr, "usage: lease-v2 [--socket PATH] [-n COUNT] [--size 1..2097152] "
                        "[--service 1|2]\n");
                return 2;
        }
        e = hyperamp_attach(sock, &h);
        if (e < 0 || (e = hyperamp_alloc(h, size, &r)) < 0) {
                fprintf(stderr, "lease-v2: cannot attach or allocate: %s\n", strerror(-e));
                return 1;
        }
        p = hyperamp_req_data(r);
        for (unsigned long i = 0; i < n; i++) {
                uint64_t t0;

                for (unsigned long k = 0; k < size; k++)
                        p[k] = (uint8_t)(i * 7 + k);
                t0 = ha_backoff_now();
                e = hyperamp_submit(r, (uint16_t)service, size);
                if (e == 0)
                        e = hyperamp_wait(r, 10000);
                ha_hist_add(&hist, ha_backoff_now() - t0);
                if (e != HYPERAMP_SUCCESS) {
                        fprintf(stderr, "lease-v2: request %lu: result %d\n", i, e);
                        return 1;
                }
                for (unsigned long k = 0; k < size; k++)
                        if (p[k] != (uint8_t)((i * 7 + k) ^ 0x5a)) {
                                fprintf(stderr, "lease-v2: request %lu: wrong byte %lu\n", i, k);
                                return 1;
                        }
        }
        printf("lease-v2 n=%lu size=%lu p50_us=%.1f p99_us=%.1f max_us=%.1f\n", n, size,
               ha_hist_quantile(&hist, 0.5) / 1e3, ha_hist_quantile(&hist, 0.99) / 1e3,
               hist.max / 1e3);
        hyperamp_release(r);
        hyperamp_detach(h);
        return 0;
}
