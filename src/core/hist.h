/* SPDX-License-Identifier: MIT */
#ifndef HA_HIST_H
#define HA_HIST_H

#include <stdint.h>

/*
 * Log-linear histogram: 8 sub-buckets per power of two, so a percentile is
 * within 12.5% of the true value, in fixed memory and O(1) per sample.
 */
#define HA_HIST_BUCKETS 512

typedef struct HaHist {
        uint64_t count;
        uint64_t max;
        uint64_t b[HA_HIST_BUCKETS];
} HaHist;

void ha_hist_add(HaHist *h, uint64_t v);
/* One writer, readers on other threads: relaxed atomic stores, no
 * read-modify-write.  Read such a histogram with ha_hist_merge(). */
void ha_hist_add_shared(HaHist *h, uint64_t v);
/* dst += src (src may be written meanwhile by ha_hist_add_shared). */
void ha_hist_merge(HaHist *dst, const HaHist *src);
/* The upper bound of the bucket holding the p-quantile (0 < p <= 1),
 * clamped to the maximum seen; 0 when empty. */
uint64_t ha_hist_quantile(const HaHist *h, double p);

#endif
