/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "fault.h"
#include "journal.h"

enum { SITE_TAKING, SITE_COMMIT, SITE_COPIED, SITE_RECOVER };

void ha_journal_init(HaJournal *j, const HaJournalOps *ops, void *ctx, HaJrec *rec,
                     unsigned nrec, uint8_t *stage, uint64_t stage_size, uint64_t buf_len)
{
        static const char *const steps[] = {
                [SITE_TAKING] = "taking", [SITE_COMMIT] = "commit",
                [SITE_COPIED] = "copied", [SITE_RECOVER] = "recover",
        };

        *j = (HaJournal){ .ops = ops, .ctx = ctx, .rec = rec, .nrec = nrec, .stage = stage,
                          .stage_size = stage_size, .buf_len = buf_len };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
                snprintf(j->site[i], sizeof(j->site[i]), "%s_%s", ops->kind, steps[i]);
}

bool ha_journal_flag_ok(uint16_t flag)
{
        return flag == ha_flag_make(HA_RESULT_SUCCESS) || flag == ha_flag_make(HA_RESULT_FAIL) ||
               flag == ha_flag_make(HA_RESULT_NOT_EXITS);
}

/* The staged bytes and their place in the client's buffer are in range. */
static bool range_ok(const HaJournal *j, const HaJrec *r)
{
        return r->stage_len <= j->stage_size && r->stage_off <= j->stage_size - r->stage_len &&
               r->offset <= j->buf_len && r->stage_len <= j->buf_len - r->offset;
}

void ha_journal_take(HaJournal *j, uint16_t idx, const HaJrec *t)
{
        HaJrec *r = &j->rec[idx];

        __atomic_store_n(&r->state, HA_J_FREE, __ATOMIC_RELAXED);
        ha_crash_order();
        __atomic_store_n(&r->tag, t->tag, __ATOMIC_RELAXED);
        __atomic_store_n(&r->seq, t->seq, __ATOMIC_RELAXED);
        __atomic_store_n(&r->service, t->service, __ATOMIC_RELAXED);
        __atomic_store_n(&r->flag, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->offset, t->offset, __ATOMIC_RELAXED);
        __atomic_store_n(&r->length, t->length, __ATOMIC_RELAXED);
        __atomic_store_n(&r->stage_off, t->stage_off, __ATOMIC_RELAXED);
        __atomic_store_n(&r->stage_len, t->stage_len, __ATOMIC_RELAXED);
        ha_crash_order();
        __atomic_store_n(&r->state, HA_J_TAKEN, __ATOMIC_RELEASE);
        ha_crash_point(j->site[SITE_TAKING]);
}

bool ha_journal_staged(const HaService *svc, const HaRun *run)
{
        return ha_service_staged(svc) || ha_run_private(run);
}

enum ha_result ha_journal_run(HaJournal *j, const HaJrec *t, const HaService *svc,
                              uint8_t *in_place, const HaRun *run)
{
        uint8_t *s = j->stage + t->stage_off;

        /* t is the channel's own record; checked anyway, as it steers
         * writes into the client's memory.  Services never see 0 bytes. */
        if (t->stage_len == 0 || !range_ok(j, t))
                return HA_RESULT_FAIL;
        if (!ha_journal_staged(svc, run) && in_place)
                return ha_run_call(run, svc->id, in_place + t->offset, t->stage_len);
        /* Compute aside: a crash must never leave a half-done buffer that a
         * rerun would transform again. */
        j->ops->load(j->ctx, s, t->offset, t->stage_len);
        return ha_run_call(run, svc->id, s, t->stage_len);
}

void ha_journal_commit(HaJournal *j, uint16_t idx, const HaJrec *t, uint16_t flag, uint32_t n)
{
        HaJrec *r = &j->rec[idx];

        if (n > t->stage_len || !range_ok(j, t))
                n = 0;
        __atomic_store_n(&r->flag, flag, __ATOMIC_RELAXED);
        __atomic_store_n(&r->stage_len, n, __ATOMIC_RELAXED);
        ha_crash_order();
        __atomic_store_n(&r->state, HA_J_COMMIT, __ATOMIC_RELEASE);
        ha_crash_order();       /* no byte of the copy before the mark */
        ha_crash_point(j->site[SITE_COMMIT]);
        if (n)
                j->ops->store(j->ctx, t->offset, j->stage + t->stage_off, n);
        ha_crash_point(j->site[SITE_COPIED]);
}

void ha_journal_free(HaJournal *j, uint16_t idx)
{
        ha_crash_order();
        __atomic_store_n(&j->rec[idx].state, HA_J_FREE, __ATOMIC_RELAXED);
}

enum ha_jrecover ha_journal_recover(HaJournal *j, uint16_t idx, HaJrec *out)
{
        const HaJrec *r = &j->rec[idx];
        HaJrec c;

        /* Read once: the record may be in memory someone else writes. */
        c.state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
        c.tag = __atomic_load_n(&r->tag, __ATOMIC_RELAXED);
        c.seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
        c.service = __atomic_load_n(&r->service, __ATOMIC_RELAXED);
        c.flag = __atomic_load_n(&r->flag, __ATOMIC_RELAXED);
        c.offset = __atomic_load_n(&r->offset, __ATOMIC_RELAXED);
        c.length = __atomic_load_n(&r->length, __ATOMIC_RELAXED);
        c.stage_off = __atomic_load_n(&r->stage_off, __ATOMIC_RELAXED);
        c.stage_len = __atomic_load_n(&r->stage_len, __ATOMIC_RELAXED);
        if (j->ops->place)
                j->ops->place(j->ctx, &c);
        *out = c;
        if (c.state == HA_J_FREE)
                return HA_JR_FREE;
        if (c.state != HA_J_TAKEN && c.state != HA_J_COMMIT)
                return HA_JR_BAD_STATE;
        switch (j->ops->state(j->ctx, idx, &c)) {
        case HA_JE_PENDING:
                break;
        case HA_JE_UNCOMMITTED:
                return HA_JR_UNCOMMITTED;
        case HA_JE_ANSWERED:
                return HA_JR_ANSWERED;
        case HA_JE_GONE:
                return HA_JR_GONE;
        }
        if (!range_ok(j, &c))
                return HA_JR_BAD_RECORD;
        if (c.state == HA_J_TAKEN)
                return HA_JR_RERUN;
        if (!ha_journal_flag_ok(c.flag))
                return HA_JR_BAD_RECORD;
        /* Copied back, never computed again: XOR would undo itself. */
        ha_crash_point(j->site[SITE_RECOVER]);
        if (c.stage_len)
                j->ops->store(j->ctx, c.offset, j->stage + c.stage_off, c.stage_len);
        return HA_JR_REPUBLISH;
}
