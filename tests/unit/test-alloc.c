/* SPDX-License-Identifier: MIT */
/*
 * The allocator: sizes from 1 byte to the pool, double frees, coalescing,
 * and 8 threads hammering it while checking that no two live buffers
 * overlap.  This answers the original's open question (is shm_malloc
 * thread-safe?) for ours: yes, and this test is the proof.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "check.h"

#define POOL (4u << 20)
#define THREADS 8
#define ROUNDS 20000
#define LIVE 32

static HaAlloc *shared;
static uint8_t *owner;          /* per pool byte: which thread holds it (0 = none) */
static int overlap_errors;
static int other_errors;

static uint32_t rnd(uint32_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        return *s;
}

static void *hammer(void *arg)
{
        unsigned me = (unsigned)(uintptr_t)arg;
        uint32_t seed = 0x9e3779b9u * (me + 1);
        uint32_t off[LIVE], len[LIVE];
        bool live[LIVE] = { false };

        for (unsigned round = 0; round < ROUNDS; round++) {
                unsigned k = rnd(&seed) % LIVE;

                if (live[k]) {
                        /* Still all ours?  Another thread writing into our
                         * buffer would have changed the marks. */
                        for (uint32_t i = 0; i < len[k]; i++)
                                if (__atomic_load_n(&owner[off[k] + i], __ATOMIC_RELAXED) != me) {
                                        __atomic_fetch_add(&overlap_errors, 1, __ATOMIC_RELAXED);
                                        break;
                                }
                        for (uint32_t i = 0; i < len[k]; i++)
                                __atomic_store_n(&owner[off[k] + i], 0, __ATOMIC_RELAXED);
                        if (ha_alloc_put(shared, off[k]) < 0)
                                __atomic_fetch_add(&other_errors, 1, __ATOMIC_RELAXED);
                        live[k] = false;
                        continue;
                }
                /* Mostly small, sometimes up to 64 KiB. */
                len[k] = rnd(&seed) % 8 ? 1 + rnd(&seed) % 512 : 1 + rnd(&seed) % 65536;
                int r = ha_alloc_get(shared, len[k], &off[k]);
                if (r == -ENOMEM)
                        continue;
                if (r < 0 || off[k] + len[k] > POOL) {
                        __atomic_fetch_add(&other_errors, 1, __ATOMIC_RELAXED);
                        continue;
                }
                for (uint32_t i = 0; i < len[k]; i++) {
                        uint8_t prev = __atomic_exchange_n(&owner[off[k] + i], (uint8_t)me,
                                                           __ATOMIC_RELAXED);
                        if (prev != 0) {
                                __atomic_fetch_add(&overlap_errors, 1, __ATOMIC_RELAXED);
                                break;
                        }
                }
                live[k] = true;
        }
        for (unsigned k = 0; k < LIVE; k++)
                if (live[k]) {
                        for (uint32_t i = 0; i < len[k]; i++)
                                __atomic_store_n(&owner[off[k] + i], 0, __ATOMIC_RELAXED);
                        if (ha_alloc_put(shared, off[k]) < 0)
                                __atomic_fetch_add(&other_errors, 1, __ATOMIC_RELAXED);
                }
        return NULL;
}

static void test_basics(void)
{
        HaAlloc *a;
        HaAllocStats st;
        uint32_t o1, o2, o3, big;

        CHECK_EQ(ha_alloc_new(0, &a), -EINVAL);
        CHECK_EQ(ha_alloc_new(100, &a), -EINVAL);
        CHECK_EQ(ha_alloc_new(POOL, &a), 0);

        CHECK_EQ(ha_alloc_get(a, 0, &o1), -EINVAL);
        CHECK_EQ(ha_alloc_get(a, POOL + 1, &o1), -EINVAL);
        CHECK_EQ(ha_alloc_get(a, 1, &o1), 0);
        CHECK_EQ(ha_alloc_get(a, 64, &o2), 0);
        CHECK_EQ(ha_alloc_get(a, 65, &o3), 0);
        CHECK(o1 != o2 && o2 != o3 && o1 != o3);
        CHECK_EQ(o1 % HA_ALLOC_MIN_BLOCK, 0);
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.buffers_in_use, 3);
        CHECK_EQ(st.requested_in_use, 1 + 64 + 65);
        CHECK_EQ(st.bytes_in_use, 64 + 64 + 128);   /* internal waste < 2x */

        /* Double free and foreign offsets are refused and counted. */
        CHECK_EQ(ha_alloc_put(a, o1), 0);
        CHECK_EQ(ha_alloc_put(a, o1), -EINVAL);
        CHECK_EQ(ha_alloc_put(a, o2 + 1), -EINVAL);
        CHECK_EQ(ha_alloc_put(a, POOL), -EINVAL);
        CHECK_EQ(ha_alloc_put(a, UINT32_MAX - 63), -EINVAL);
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.bad_frees, 4);
        CHECK_EQ(ha_alloc_put(a, o2), 0);
        CHECK_EQ(ha_alloc_put(a, o3), 0);

        /* Everything coalesces back: the whole pool is one block again. */
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.buffers_in_use, 0);
        CHECK_EQ(st.bytes_in_use, 0);
        CHECK_EQ(st.largest_free, POOL);
        CHECK_EQ(ha_alloc_get(a, POOL, &big), 0);
        CHECK_EQ(big, 0);
        CHECK_EQ(ha_alloc_get(a, 1, &o1), -ENOMEM);
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.alloc_failures, 1);
        CHECK_EQ(ha_alloc_put(a, big), 0);
        ha_alloc_free(a);

        /* A pool that is not a power of two is fully usable. */
        CHECK_EQ(ha_alloc_new(3 * 64 * 1024 + 192, &a), 0);
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.largest_free, 128 * 1024);
        uint32_t offs[3 * 1024 + 3];
        unsigned n = 0;
        while (n < 3 * 1024 + 3 && ha_alloc_get(a, 64, &offs[n]) == 0)
                n++;
        CHECK_EQ(n, 3 * 1024 + 3);
        for (unsigned i = 0; i < n; i++)
                CHECK(offs[i] + 64 <= 3 * 64 * 1024 + 192);
        for (unsigned i = 0; i < n; i++)
                ha_alloc_put(a, offs[i]);
        ha_alloc_stats(a, &st);
        CHECK_EQ(st.bytes_in_use, 0);
        CHECK_EQ(st.largest_free, 128 * 1024);
        ha_alloc_free(a);
}

static void test_threads(void)
{
        pthread_t t[THREADS];
        HaAllocStats st;

        CHECK_EQ(ha_alloc_new(POOL, &shared), 0);
        owner = calloc(POOL, 1);
        for (unsigned i = 0; i < THREADS; i++)
                pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)(i + 1));
        for (unsigned i = 0; i < THREADS; i++)
                pthread_join(t[i], NULL);
        CHECK_EQ(overlap_errors, 0);
        CHECK_EQ(other_errors, 0);
        ha_alloc_stats(shared, &st);
        CHECK_EQ(st.buffers_in_use, 0);         /* nothing leaked */
        CHECK_EQ(st.bytes_in_use, 0);
        CHECK_EQ(st.largest_free, POOL);        /* and it all coalesced back */
        CHECK_EQ(st.bad_frees, 0);
        free(owner);
        shared = ha_alloc_free(shared);
}

int main(void)
{
        test_basics();
        test_threads();
        return check_done("test-alloc");
}
