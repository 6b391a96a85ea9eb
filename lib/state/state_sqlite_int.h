/*
 * state_sqlite_int.h - what the three files of the SQLite backend share.
 *
 * Private to lib/state/state_sqlite.c (the handle: open, schema, statements,
 * close), lib/state/state_sqlite_batch.c (group commit) and lib/state/state_sqlite_read.c
 * (reads); nothing else includes it. See lib/state/state_sqlite.c for the design.
 */
#ifndef TR_STATE_SQLITE_INT_H
#define TR_STATE_SQLITE_INT_H

#include <sqlite3.h>

#include "lib/base/buf.h"
#include "lib/state/state_backend.h"

/* The statements prepared at open and kept for the life of the handle. */
enum tr_sqlite_stmt
{
    TR_SQ_BEGIN,
    TR_SQ_COMMIT,
    TR_SQ_PUT_PIPELINE, /* the puts, TR_SQ_PUT_PIPELINE .. TR_SQ_PUT_ROW, are contiguous */
    TR_SQ_PUT_SOURCE,
    TR_SQ_PUT_RUN,
    TR_SQ_PUT_TASK,
    TR_SQ_PUT_CACHE,
    TR_SQ_PUT_ROW,
    TR_SQ_NEXT_EPOCH,
    TR_SQ_GET_SOURCE,
    TR_SQ_GET_PIPELINE,
    TR_SQ_GET_PIPELINE_LATEST,
    TR_SQ_LIST_PIPELINES,
    TR_SQ_GET_RUN,
    TR_SQ_LIST_RUNS,
    TR_SQ_LIST_RUNS_BY_STATE,
    TR_SQ_LIST_RUNS_UNFINISHED,
    TR_SQ_LIST_TASKS,
    TR_SQ_GET_CACHE,
    TR_SQ_GET_ROW,
    TR_SQ_LIST_ROWS, /* 8 statements: + 1 with grp, + 2 with sub, + 4 descending */
    /* Run control (state_runctl.c): the deletes are buffered like the puts. */
    TR_SQ_DEL_RUN = TR_SQ_LIST_ROWS + 8,
    TR_SQ_DEL_TASKS,
    TR_SQ_DEL_ROW,
    TR_SQ_LIST_FINISHED,
    TR_SQ_COUNT
};

/* The SQL of each statement, for the reads that need a second copy. */
extern const char *const tr_sqlite_sql[TR_SQ_COUNT];

struct tr_sqlite_val; /* one bound parameter of a buffered put (state_sqlite_batch.c) */
struct tr_sqlite_op;  /* one buffered put */

/* The batch in progress, buffered until commit (state_sqlite_batch.c). */
struct tr_sqlite_batch
{
    bool open;                  /* between begin and commit/rollback */
    struct tr_buf bytes;        /* the batch's strings and blobs */
    struct tr_sqlite_val *vals; /* the batch's parameters */
    size_t nvals, cap_vals;
    struct tr_sqlite_op *ops; /* the batch's puts, in order */
    size_t nops, cap_ops;
};

/* The handle. */
struct tr_sqlite
{
    struct tr_state base;             /* lib/state/state.c's head: must stay first */
    sqlite3 *db;                      /* the connection, owned */
    char *path;                       /* the database path as given, for messages */
    sqlite3_stmt *stmts[TR_SQ_COUNT]; /* prepared at open, finalized at close */
    struct tr_sqlite_batch batch;     /* the batch in progress, if any */
    char errmsg[256];                 /* the last SQLite failure, kept across rollback */
};

static inline struct tr_sqlite *tr_sqlite_of(struct tr_state *st)
{
    return (struct tr_sqlite *)st;
}

/* TR_ENOMEM for SQLITE_NOMEM, TR_ESTATE for every other SQLite failure. */
int tr_sqlite_rc(int rc);

/* Steps s once, keeps the SQLite message in errmsg on failure, resets s. SQLITE_OK on DONE/ROW. */
int tr_sqlite_step(struct tr_sqlite *ss, sqlite3_stmt *s);

/* Ends a failed transaction unless SQLite has already rolled it back itself. */
void tr_sqlite_rollback_open(struct tr_sqlite *ss);

/* Group commit and the epoch (state_sqlite_batch.c). */
void tr_sqlite_batch_release(struct tr_sqlite_batch *b);
int tr_sqlite_next_epoch(struct tr_state *st, uint64_t *epoch);
int tr_sqlite_begin(struct tr_state *st);
int tr_sqlite_put_pipeline(struct tr_state *st, const struct tr_pipeline_rec *rec);
int tr_sqlite_put_source(struct tr_state *st, const char *digest, const char *src, size_t len);
int tr_sqlite_put_run(struct tr_state *st, const struct tr_run_rec *rec);
int tr_sqlite_put_task(struct tr_state *st, const struct tr_task_rec *rec);
int tr_sqlite_put_cache(struct tr_state *st, const char *key, const void *output, size_t len);
int tr_sqlite_put_row(struct tr_state *st, const struct tr_state_row *row);
int tr_sqlite_commit(struct tr_state *st, struct tr_error *err);
int tr_sqlite_delete_row(struct tr_state *st, int kind, const char *const *comps, size_t n);
int tr_sqlite_delete_run(struct tr_state *st, const char *run_id);
int tr_sqlite_list_finished(struct tr_state *st, double before, uint32_t limit,
                            tr_state_run_fn cb, void *arg);
void tr_sqlite_rollback(struct tr_state *st);

/* Reads (state_sqlite_read.c). */
int tr_sqlite_get_source(struct tr_state *st, const char *digest, char **src, size_t *len);
int tr_sqlite_get_pipeline(struct tr_state *st, const char *name, const char *version,
                           tr_state_pipeline_fn cb, void *arg);
int tr_sqlite_list_pipelines(struct tr_state *st, tr_state_pipeline_fn cb, void *arg);
int tr_sqlite_get_run(struct tr_state *st, const char *run_id, tr_state_run_fn cb, void *arg);
int tr_sqlite_list_runs(struct tr_state *st, const char *state, bool unfinished_only,
                        uint32_t limit, tr_state_run_fn cb, void *arg);
int tr_sqlite_list_tasks(struct tr_state *st, const char *run_id, tr_state_task_fn cb, void *arg);
int tr_sqlite_get_cache(struct tr_state *st, const char *key, void **output, size_t *len);
int tr_sqlite_get_row(struct tr_state *st, int kind, const char *const *comps, size_t n,
                      char **value, size_t *len);
int tr_sqlite_list_rows(struct tr_state *st, int kind, const char *grp, const char *sub,
                        uint32_t limit, tr_state_row_fn cb, void *arg);
/* A row's key as stored: the components joined by '/', each with '%' and '/' escaped. */
int tr_sqlite_row_key(struct tr_buf *b, const char *const *comps, size_t n) TR_MUST_CHECK;

#endif
