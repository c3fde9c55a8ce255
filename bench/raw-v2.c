/* SPDX-License-Identifier: MIT */
/*
 * raw-v2: the smallest Linux-side driver of the HyperAMP v2 rings, for the
 * benchmark in docs/PERFORMANCE.md: SERVICE requests on ring B, replies
 * from ring A, one at a time, every reply checked (XOR 0x5A).  It waits by
 * spinning (the floor), or like the original hyperamp_linux with a fixed
 * sleep step between looks (--poll-us 1000 / 100000).
 *
 *   raw-v2 --mem FILE [--offset N] [-n COUNT] [--size BYTES] [--poll-us US]
 *
 * Prints "raw-v2 n=... p50_us=... p99_us=... max_us=..."; exit 1 on a
 * wrong or missing reply.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "cpu.h"
#include "hist.h"
#include "v2ring.h"

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "mem", required_argument, NULL, 'm' },
                { "offset", required_argument, NULL, 'o' },
                { "size", required_argument, NULL, 's' },
                { "poll-us", required_argument, NULL, 'p' },
                { NULL, 0, NULL, 0 },
        };
        static uint8_t req[HA_V2_BLOCK], rep[HA_V2_BLOCK];
        const char *mem = NULL;
        unsigned long long off = 0;
        unsigned long n = 10000, size = 64, poll_us = 0;
        HaV2Ring tx, rx;
        HaHist hist = { 0 };
        uint8_t *win;
        int fd, c;

        while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
                switch (c) {
                case 'm': mem = optarg; break;
                case 'o': off = strtoull(optarg, NULL, 0); break;
                case 'n': n = strtoul(optarg, NULL, 0); break;
                case 's': size = strtoul(optarg, NULL, 0); break;
                case 'p': poll_us = strtoul(optarg, NULL, 0); break;
                default: return 2;
                }
        }
        if (!mem || size == 0 || size > HA_V2_MAX_SLOT_PAYLOAD) {
                fprintf(stderr, "usage: raw-v2 --mem FILE [--offset N] [-n COUNT] "
                        "[--size 1..4088] [--poll-us US]\n");
                return 2;
        }
        fd = open(mem, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                perror(mem);
                return 1;
        }
        win = mmap(NULL, HA_V2_WINDOW_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
        close(fd);
        if (win == MAP_FAILED) {
                perror("mmap");
                return 1;
        }
        if (ha_v2_attach(&tx, win + HA_V2_PAGE_B, win + HA_V2_DATA_OFF, 1, 0) < 0 ||
            ha_v2_attach(&rx, win + HA_V2_PAGE_A, win + HA_V2_DATA_OFF, 0, 1) < 0) {
                fprintf(stderr, "raw-v2: rings not ready\n");
                return 1;
        }
        for (unsigned long i = 0; i < n; i++) {
                struct timespec step = { (time_t)(poll_us / 1000000),
                                         (long)(poll_us % 1000000) * 1000 };
                uint64_t t0, deadline;
                HaV2Hdr h;
                int e;

                for (unsigned long k = 0; k < size; k++)
                        req[k] = (uint8_t)(i + k);
                t0 = ha_backoff_now();
                deadline = t0 + 5000000000ull;
                if (ha_v2_send(&tx, HA_V2_SERVICE, 1, 0, req, (uint16_t)size) < 0) {
                        fprintf(stderr, "raw-v2: send %lu failed\n", i);
                        return 1;
                }
                while ((e = ha_v2_recv(&rx, &h, rep, sizeof(rep))) == -EAGAIN) {
                        if (ha_backoff_now() > deadline) {
                                fprintf(stderr, "raw-v2: no reply to %lu\n", i);
                                return 1;
                        }
                        if (poll_us)
                                nanosleep(&step, NULL);  /* the original tools' poll step */
                        else
                                cpu_relax();
                }
                ha_hist_add(&hist, ha_backoff_now() - t0);
                if (e < 0 || h.type != HA_V2_DATA || h.fsess != 1 || h.len != size) {
                        fprintf(stderr, "raw-v2: bad reply to %lu (%d)\n", i, e);
                        return 1;
                }
                for (unsigned long k = 0; k < size; k++)
                        if (rep[k] != (uint8_t)((i + k) ^ 0x5a)) {
                                fprintf(stderr, "raw-v2: wrong byte in reply %lu\n", i);
                                return 1;
                        }
        }
        printf("raw-v2 n=%lu size=%lu poll_us=%lu p50_us=%.1f p99_us=%.1f max_us=%.1f\n", n, size,
               poll_us, ha_hist_quantile(&hist, 0.5) / 1e3, ha_hist_quantile(&hist, 0.99) / 1e3,
               hist.max / 1e3);
        munmap(win, HA_V2_WINDOW_LEN);
        return 0;
}
