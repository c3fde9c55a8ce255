/* SPDX-License-Identifier: MIT */
/*
 * The crash journal's state machine (take, run, commit, free, recover)
 * over a stand-in channel: records, staging area and buffer in plain
 * memory, hooks that count their calls, and an entry state the test sets.
 * Recovery gets records as a hostile client could leave them.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "hyperamp-config.h"
#include "journal.h"

#define NREC  8
#define SIZE  256

typedef struct Chan {
        HaJrec rec[NREC];
        uint8_t stage[SIZE];
        uint8_t buf[SIZE];
        enum ha_jentry entry[NREC];
        unsigned loads, stores;
} Chan;

static void t_load(void *ctx, uint8_t *dst, uint32_t off, size_t n)
{
        Chan *c = ctx;

        c->loads++;
        memcpy(dst, c->buf + off, n);
}

static void t_store(void *ctx, uint32_t off, const uint8_t *src, size_t n)
{
        Chan *c = ctx;

        c->stores++;
        memcpy(c->buf + off, src, n);
}

static enum ha_jentry t_state(void *ctx, uint16_t idx, const HaJrec *r)
{
        Chan *c = ctx;
        (void)r;

        return c->entry[idx];
}

/* The place is implied: offset and length, whatever the record says. */
static void t_place(void *ctx, HaJrec *r)
{
        (void)ctx;
        r->stage_off = r->offset;
        r->stage_len = r->length;
}

/* The local executor: the service runs here. */
static const HaRun local = { .ops = &ha_executor_local };

/* A remote executor: records the buffer it was handed. */
static const uint8_t *remote_got;

static enum ha_result remote_call(void *ctx, uint16_t service, uint8_t *buf, uint32_t len,
                                  unsigned worker)
{
        (void)ctx, (void)worker;
        remote_got = buf;
        return ha_service_run(service, buf, len);
}

static const HaExecutorOps remote_ops = { .kind = "v1", .remote = true, .call = remote_call };
static const HaRun remote = { .ops = &remote_ops };

static const HaJournalOps ops = { .kind = "t", .load = t_load, .store = t_store, .state = t_state };
static const HaJournalOps ops_place = {
        .kind = "tp", .load = t_load, .store = t_store, .place = t_place, .state = t_state,
};

static void setup(Chan *c, HaJournal *j, const HaJournalOps *o)
{
        memset(c, 0, sizeof(*c));
        for (unsigned i = 0; i < SIZE; i++)
                c->buf[i] = (uint8_t)i;
        ha_journal_init(j, o, c, c->rec, NREC, c->stage, SIZE, SIZE);
}

static HaJrec req(uint32_t off, uint32_t len, uint16_t service)
{
        return (HaJrec){ .tag = 7, .seq = 41, .service = service, .offset = off, .length = len,
                         .stage_off = off, .stage_len = len };
}

/* buf[off..off+len) encrypted exactly once from its initial i pattern. */
static bool encrypted_once(const Chan *c, uint32_t off, uint32_t len)
{
        uint8_t want[SIZE];

        for (uint32_t i = 0; i < len; i++)
                want[i] = (uint8_t)(off + i);
        (void)ha_service_run(1, want, len);
        return memcmp(c->buf + off, want, len) == 0;
}

/* A real crash at each step of an answer: the process is killed there,
 * and recovery from what it left must answer the entry with its result
 * computed once.  In a child of its own, which forks the one that
 * crashes: a process reads the crash site at its first crash point. */
#if HA_TEST_SEAMS
static void crash_at(const char *site, enum ha_jrecover want);

static void crash_case(const char *site, enum ha_jrecover want)
{
        int status = 0;
        pid_t pid = fork();

        if (pid == 0) {
                crash_at(site, want);
                _exit(check_failures ? 1 : 0);
        }
        CHECK(pid > 0);
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void crash_at(const char *site, enum ha_jrecover want)
{
        Chan *c = mmap(NULL, sizeof(Chan), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
        HaJournal j;
        HaJrec t = req(16, 32, 1), out;
        int status = 0;
        pid_t pid;

        CHECK(c != MAP_FAILED);
        if (c == MAP_FAILED)
                return;
        setup(c, &j, &ops);
        pid = fork();
        if (pid == 0) {
                setenv("HYPERAMP_TEST_CRASH", site, 1);
                ha_journal_take(&j, 3, &t);
                if (ha_journal_run(&j, &t, ha_service_by_id(1), NULL, &local) == HA_RESULT_SUCCESS)
                        ha_journal_commit(&j, 3, &t, ha_flag_make(HA_RESULT_SUCCESS),
                                          t.stage_len);
                _exit(0);
        }
        CHECK(pid > 0);
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        c->entry[3] = HA_JE_PENDING;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), want);
        if (want == HA_JR_RERUN) {
                /* Nothing was written back: running it again is right. */
                CHECK(c->buf[16] == 16 && c->buf[47] == 47);
                CHECK_EQ(ha_journal_run(&j, &out, ha_service_by_id(1), NULL, &local), HA_RESULT_SUCCESS);
                ha_journal_commit(&j, 3, &out, ha_flag_make(HA_RESULT_SUCCESS), out.stage_len);
        } else {
                CHECK_EQ(out.flag, ha_flag_make(HA_RESULT_SUCCESS));
        }
        CHECK(encrypted_once(c, 16, 32));
        /* Killed again during recovery, it is finished the same way. */
        if (want == HA_JR_REPUBLISH) {
                CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_REPUBLISH);
                CHECK(encrypted_once(c, 16, 32));
        }
        munmap(c, sizeof(Chan));
}

#endif

int main(void)
{
        static Chan c;
        HaJournal j;
        HaJrec t, out;
        const HaService *enc = ha_service_by_id(1), *echo = ha_service_by_id(66);

#if HA_TEST_SEAMS
        crash_case("t_taking", HA_JR_RERUN);
        crash_case("t_commit", HA_JR_REPUBLISH);
        crash_case("t_copied", HA_JR_REPUBLISH);
#else
        CHECK_SKIP_NO_SEAMS("crashes at t_taking, t_commit, t_copied ($HYPERAMP_TEST_CRASH)");
#endif

        /* The one run policy comes from reads_only, not from an id. */
        CHECK(ha_service_staged(enc));
        CHECK(!ha_service_staged(echo));

        setup(&c, &j, &ops);
        CHECK(strcmp(j.site[1], "t_commit") == 0);

        /* take: the whole record rewritten, whatever was there. */
        memset(&c.rec[2], 0xee, sizeof(c.rec[2]));
        t = req(64, 16, 1);
        ha_journal_take(&j, 2, &t);
        CHECK_EQ(c.rec[2].state, HA_J_TAKEN);
        CHECK_EQ(c.rec[2].tag, 7);
        CHECK_EQ(c.rec[2].seq, 41);
        CHECK_EQ(c.rec[2].service, 1);
        CHECK_EQ(c.rec[2].flag, 0);
        CHECK_EQ(c.rec[2].offset, 64);
        CHECK_EQ(c.rec[2].length, 16);
        CHECK_EQ(c.rec[2].stage_off, 64);
        CHECK_EQ(c.rec[2].stage_len, 16);

        /* A writer runs staged: the buffer is untouched until the commit. */
        CHECK_EQ(ha_journal_run(&j, &t, enc, c.buf, &local), HA_RESULT_SUCCESS);
        CHECK_EQ(c.loads, 1);
        CHECK(c.buf[64] == 64 && c.buf[79] == 79);
        ha_journal_commit(&j, 2, &t, ha_flag_make(HA_RESULT_SUCCESS), 16);
        CHECK_EQ(c.rec[2].state, HA_J_COMMIT);
        CHECK_EQ(c.rec[2].flag, ha_flag_make(HA_RESULT_SUCCESS));
        CHECK_EQ(c.stores, 1);
        CHECK(encrypted_once(&c, 64, 16));
        ha_journal_free(&j, 2);
        CHECK_EQ(c.rec[2].state, HA_J_FREE);

        /* A reader runs in place when the channel has it, staged otherwise. */
        t = req(0, 8, 66);
        CHECK_EQ(ha_journal_run(&j, &t, echo, c.buf, &local), HA_RESULT_SUCCESS);
        CHECK_EQ(c.loads, 1);
        CHECK_EQ(ha_journal_run(&j, &t, echo, NULL, &local), HA_RESULT_SUCCESS);
        CHECK_EQ(c.loads, 2);
        /* A remote executor is never handed the channel's memory: staged. */
        CHECK_EQ(ha_journal_run(&j, &t, echo, c.buf, &remote), HA_RESULT_SUCCESS);
        CHECK_EQ(c.loads, 3);
        CHECK(remote_got != NULL && remote_got != c.buf + t.offset);
        CHECK(ha_journal_staged(echo, &remote) && !ha_journal_staged(echo, &local));

        /* A take out of range never runs; nor does one of 0 bytes. */
        t = req(250, 16, 1);
        CHECK_EQ(ha_journal_run(&j, &t, enc, NULL, &local), HA_RESULT_FAIL);
        t = req(0, 16, 1);
        t.stage_off = SIZE - 8;
        CHECK_EQ(ha_journal_run(&j, &t, enc, NULL, &local), HA_RESULT_FAIL);
        t = req(0, 0, 1);
        CHECK_EQ(ha_journal_run(&j, &t, enc, NULL, &local), HA_RESULT_FAIL);
        CHECK_EQ(c.loads, 3);    /* none of them loaded */
        /* A commit of more than was staged copies nothing. */
        t = req(128, 8, 1);
        ha_journal_take(&j, 4, &t);
        ha_journal_commit(&j, 4, &t, ha_flag_make(HA_RESULT_FAIL), 9);
        CHECK_EQ(c.rec[4].state, HA_J_COMMIT);
        CHECK_EQ(c.rec[4].stage_len, 0);
        CHECK_EQ(c.stores, 1);

        /* Recovery, record by record, as a hostile peer may leave them. */
        setup(&c, &j, &ops);
        CHECK_EQ(ha_journal_recover(&j, 0, &out), HA_JR_FREE);
        c.rec[1] = req(8, 8, 1);
        c.rec[1].state = 7;
        CHECK_EQ(ha_journal_recover(&j, 1, &out), HA_JR_BAD_STATE);
        c.rec[2] = req(32, 8, 2);
        c.rec[2].state = HA_J_TAKEN;
        CHECK_EQ(ha_journal_recover(&j, 2, &out), HA_JR_RERUN);
        CHECK(memcmp(&out, &c.rec[2], sizeof(out)) == 0);
        c.entry[2] = HA_JE_UNCOMMITTED;
        CHECK_EQ(ha_journal_recover(&j, 2, &out), HA_JR_UNCOMMITTED);
        c.entry[2] = HA_JE_ANSWERED;
        CHECK_EQ(ha_journal_recover(&j, 2, &out), HA_JR_ANSWERED);
        c.entry[2] = HA_JE_GONE;
        CHECK_EQ(ha_journal_recover(&j, 2, &out), HA_JR_GONE);
        /* COMMIT: staged bytes copied back, never computed. */
        c.rec[3] = req(40, 4, 1);
        c.rec[3].state = HA_J_COMMIT;
        c.rec[3].flag = ha_flag_make(HA_RESULT_SUCCESS);
        memcpy(c.stage + 40, "ABCD", 4);
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_REPUBLISH);
        CHECK_EQ(out.flag, ha_flag_make(HA_RESULT_SUCCESS));
        CHECK(memcmp(c.buf + 40, "ABCD", 4) == 0);
        CHECK_EQ(c.loads, 0);
        /* A COMMIT whose flag is not answered, or has a reserved bit. */
        c.rec[3].flag = 0;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        c.rec[3].flag = 0x9;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        CHECK_EQ(c.stores, 1);
        /* Ranges past the stage or the buffer, and ones that wrap. */
        c.rec[3].flag = ha_flag_make(HA_RESULT_FAIL);
        c.rec[3].stage_off = SIZE - 2;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        c.rec[3].stage_off = 0;
        c.rec[3].offset = SIZE;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        c.rec[3].offset = 8;
        c.rec[3].stage_len = UINT32_MAX;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        c.rec[3].stage_off = UINT32_MAX;
        c.rec[3].stage_len = 2;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        /* TAKEN out of range is never run either. */
        c.rec[3].state = HA_J_TAKEN;
        CHECK_EQ(ha_journal_recover(&j, 3, &out), HA_JR_BAD_RECORD);
        CHECK_EQ(c.stores, 1);
        /* A COMMIT that published nothing to copy: the flag alone. */
        c.rec[5] = req(0, 0, 1);
        c.rec[5].state = HA_J_COMMIT;
        c.rec[5].flag = ha_flag_make(HA_RESULT_NOT_EXITS);
        CHECK_EQ(ha_journal_recover(&j, 5, &out), HA_JR_REPUBLISH);
        CHECK_EQ(c.stores, 1);
        /* Recovery leaves every record as it found it. */
        CHECK_EQ(c.rec[1].state, 7);
        CHECK_EQ(c.rec[2].state, HA_J_TAKEN);
        CHECK_EQ(c.rec[5].state, HA_J_COMMIT);

        /* With an implied place, the record's stage fields are not followed. */
        setup(&c, &j, &ops_place);
        c.rec[0] = req(100, 4, 1);
        c.rec[0].state = HA_J_COMMIT;
        c.rec[0].flag = ha_flag_make(HA_RESULT_SUCCESS);
        c.rec[0].stage_off = 0;
        c.rec[0].stage_len = 200;
        memcpy(c.stage + 100, "WXYZ", 4);
        CHECK_EQ(ha_journal_recover(&j, 0, &out), HA_JR_REPUBLISH);
        CHECK_EQ(out.stage_off, 100);
        CHECK_EQ(out.stage_len, 4);
        CHECK(memcmp(c.buf + 100, "WXYZ", 4) == 0);
        CHECK_EQ(c.buf[104], 104);
        CHECK_EQ(c.buf[0], 0);

        return check_done("test-journal");
}
