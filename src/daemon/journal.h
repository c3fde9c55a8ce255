/* SPDX-License-Identifier: MIT */
#ifndef HA_JOURNAL_H
#define HA_JOURNAL_H

/*
 * The crash journal of a channel: one record per entry of the client's
 * queue, saying what the daemon took and how far it got, and a staging
 * area where services that write their buffer compute, so that a crash
 * never leaves a half-transformed buffer to be run again.  A record goes
 *
 *   FREE -> TAKEN (take) -> COMMIT (commit: the staged result is whole)
 *        -> FREE (free, or the next take)
 *
 * and after a crash each record is finished once (recover): TAKEN runs
 * again, COMMIT gets its staged bytes copied back and its flag published,
 * never computed again.  The records live wherever the channel keeps them
 * (a zone lease's memory, which its client can write too; a v1 channel's
 * private file): nothing read back from them is trusted, and a channel
 * runs an entry from its own record of the take, never from the journal.
 *
 * A channel supplies the hooks: where the client's buffer is (load and
 * store), and whether an entry is still as taken (state).  It keeps its
 * own batch commit point (a zone's sq_head, a v1 journal's batch_k).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "services.h"

enum { HA_J_FREE, HA_J_TAKEN, HA_J_COMMIT };

/* One record, 32 bytes: a zone lease's journal page holds them in this
 * layout (hyperamp/zone.h, ZoneJrec). */
typedef struct HaJrec {
        uint32_t state;
        uint32_t tag;                   /* the channel's: zone: ring position; v1: flag seen */
        uint32_t seq;                   /* the channel's: a zone's completion counter at the take */
        uint16_t service;
        uint16_t flag;                  /* COMMIT: the flag to publish */
        uint32_t offset, length;        /* the request, as taken */
        uint32_t stage_off, stage_len;  /* where its result is staged, and how many bytes */
} HaJrec;
_Static_assert(sizeof(HaJrec) == 32, "journal records pack");

/* What recovery finds of an entry (the state hook). */
enum ha_jentry {
        HA_JE_PENDING,                  /* as taken, not answered: finish it */
        HA_JE_UNCOMMITTED,              /* TAKEN by a batch short of its commit point:
                                         * still the client's, served from its queue */
        HA_JE_ANSWERED,                 /* its answer is out */
        HA_JE_GONE,                     /* the client reused it: not ours */
};

/* What recovery did with a record. */
enum ha_jrecover {
        HA_JR_FREE,                     /* nothing under way */
        HA_JR_BAD_STATE,                /* a state no daemon writes: left alone */
        HA_JR_UNCOMMITTED,
        HA_JR_ANSWERED,
        HA_JR_GONE,
        HA_JR_RERUN,                    /* TAKEN: run it again, from *out */
        HA_JR_REPUBLISH,                /* COMMIT: copied back, publish out->flag */
        HA_JR_BAD_RECORD,               /* a bad range, or COMMIT with a bad flag: nothing copied */
};

typedef struct HaJournalOps {
        const char *kind;               /* crash points: "<kind>_taking", "_commit", ... */
        /* The client's buffer: n bytes at off, to and from local memory. */
        void (*load)(void *ctx, uint8_t *dst, uint32_t off, size_t n);
        void (*store)(void *ctx, uint32_t off, const uint8_t *src, size_t n);
        /* Optional, recovery: where a record's result is staged, when the
         * channel implies it rather than records it (sets stage_off and
         * stage_len of a record read back). */
        void (*place)(void *ctx, HaJrec *r);
        /* Entry idx against the record of its take (recovery only), and
         * a TAKEN record against the channel's batch commit point. */
        enum ha_jentry (*state)(void *ctx, uint16_t idx, const HaJrec *r);
} HaJournalOps;

typedef struct HaJournal {
        const HaJournalOps *ops;
        void *ctx;
        HaJrec *rec;                    /* nrec records: where they live */
        unsigned nrec;
        uint8_t *stage;
        uint64_t stage_size;
        uint64_t buf_len;               /* the client's buffer: what offsets may reach */
        char site[4][24];               /* crash point names */
} HaJournal;

void ha_journal_init(HaJournal *j, const HaJournalOps *ops, void *ctx, HaJrec *rec,
                     unsigned nrec, uint8_t *stage, uint64_t stage_size, uint64_t buf_len);

/* Record entry idx as taken (*t: the channel's own record of it).  FREE
 * first, so a crash half-way leaves no record mixing two requests. */
void ha_journal_take(HaJournal *j, uint16_t idx, const HaJrec *t);

/*
 * Run svc on the entry taken as *t by the one run policy
 * (ha_service_staged), on the executor of run: a service that only reads
 * runs on in_place if the channel has it (NULL: no direct access, it reads
 * a staged copy) and the executor is local; one that writes, or any on a
 * remote executor, computes on a staged copy, and the caller commits a
 * success of a writing service (ha_journal_staged()).
 */
enum ha_result ha_journal_run(HaJournal *j, const HaJrec *t, const HaService *svc,
                              uint8_t *in_place, const HaRun *run);
/* Whether ha_journal_run() computes svc on a staged copy, on run's executor. */
bool ha_journal_staged(const HaService *svc, const HaRun *run);

/* COMMIT: the staged result is whole, with the flag to publish; then its
 * first n bytes are copied back (0: nothing to copy).  From here it is
 * copied back, never computed again. */
void ha_journal_commit(HaJournal *j, uint16_t idx, const HaJrec *t, uint16_t flag, uint32_t n);

/* The entry is answered (or dropped): nothing to finish after a crash. */
void ha_journal_free(HaJournal *j, uint16_t idx);

/*
 * After a crash: look at record idx, checked as hostile input, and finish
 * what it says.  RERUN: *out is the take, to run as a fresh submission is.
 * REPUBLISH: the staged bytes are copied back; publish out->flag.  The
 * record is left as found: the caller frees it or leaves it to the next
 * take.
 */
enum ha_jrecover ha_journal_recover(HaJournal *j, uint16_t idx, HaJrec *out);

/* A flag a daemon publishes: done, with one of the results. */
bool ha_journal_flag_ok(uint16_t flag);

#endif
