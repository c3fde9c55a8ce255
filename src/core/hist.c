/* SPDX-License-Identifier: MIT */
#include "hist.h"

static unsigned bucket_of(uint64_t v)
{
        unsigned msb;

        if (v < 8)
                return (unsigned)v;
        msb = 63u - (unsigned)__builtin_clzll(v);
        return (msb - 2) * 8 + (unsigned)((v >> (msb - 3)) & 7);
}

static uint64_t bucket_upper(unsigned idx)
{
        unsigned msb, minor;

        if (idx < 8)
                return idx;
        msb = idx / 8 + 2;
        minor = idx % 8;
        return ((UINT64_C(8) + minor) << (msb - 3)) + (UINT64_C(1) << (msb - 3)) - 1;
}

void ha_hist_add(HaHist *h, uint64_t v)
{
        h->b[bucket_of(v)]++;
        h->count++;
        if (v > h->max)
                h->max = v;
}

void ha_hist_add_shared(HaHist *h, uint64_t v)
{
        unsigned b = bucket_of(v);

        __atomic_store_n(&h->b[b], h->b[b] + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
        if (v > h->max)
                __atomic_store_n(&h->max, v, __ATOMIC_RELAXED);
}

void ha_hist_merge(HaHist *dst, const HaHist *src)
{
        uint64_t max = __atomic_load_n(&src->max, __ATOMIC_RELAXED);

        for (unsigned i = 0; i < HA_HIST_BUCKETS; i++) {
                uint64_t n = __atomic_load_n(&src->b[i], __ATOMIC_RELAXED);

                dst->b[i] += n;
                dst->count += n;        /* the buckets, so quantiles stay in range */
        }
        if (max > dst->max)
                dst->max = max;
}

uint64_t ha_hist_quantile(const HaHist *h, double p)
{
        uint64_t rank, seen = 0;

        if (h->count == 0)
                return 0;
        rank = (uint64_t)(p * (double)h->count);
        if (rank < 1)
                rank = 1;
        if (rank > h->count)
                rank = h->count;
        for (unsigned i = 0; i < HA_HIST_BUCKETS; i++) {
                seen += h->b[i];
                if (seen >= rank) {
                        uint64_t u = bucket_upper(i);
                        return u < h->max ? u : h->max;
                }
        }
        return h->max;
}
