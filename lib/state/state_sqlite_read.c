/*
 * state_sqlite_read.c - the reads of the SQLite backend.
 *
 * Each read steps one of the statements prepared at open and hands every row
 * to the caller's callback as a record whose strings point into SQLite's row
 * (valid until the next step, so for the duration of the callback). Reads run
 * in autocommit mode: each sees the committed state as of its first step,
 * never a batch in progress (that is buffered by state_sqlite_batch.c).
 */
#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/state/state_sqlite_int.h"

/*
 * The statement for one read. A callback may read again (list the tasks of
 * each run it is handed); when it reads with the statement still stepping
 * above it, that inner read gets a statement of its own.
 */
static int read_start(struct tr_sqlite *ss, enum tr_sqlite_stmt id, sqlite3_stmt **s)
{
    *s = ss->stmts[id];
    if (!sqlite3_stmt_busy(*s))
        return 0;
    int rc = sqlite3_prepare_v2(ss->db, tr_sqlite_sql[id], -1, s, NULL);
    if (rc != SQLITE_OK) {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        return tr_sqlite_rc(rc);
    }
    return 0;
}

static void read_end(struct tr_sqlite *ss, enum tr_sqlite_stmt id, sqlite3_stmt *s)
{
    if (s != ss->stmts[id]) {
        sqlite3_finalize(s);
        return;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

/* The caller's callback, whichever record type it takes. */
union any_cb
{
    tr_state_pipeline_fn pipeline;
    tr_state_run_fn run;
    tr_state_task_fn task;
};

/*
 * Turns the current row into a record and calls back; returns the callback's
 * value, or TR_ENOMEM when SQLite could not materialise a NOT NULL column.
 */
typedef int (*emit_fn)(sqlite3_stmt *s, const union any_cb *cb, void *arg);

static int emit_pipeline(sqlite3_stmt *s, const union any_cb *cb, void *arg)
{
    struct tr_pipeline_rec r = {
        .name = col_text(s, 0),
        .version = col_text(s, 1),
        .digest = col_text(s, 2),
        .registered_at = sqlite3_column_double(s, 3),
        .n_tasks = (uint32_t)sqlite3_column_int64(s, 4),
        /* Text first, then its length: the text is NUL-terminated for the reader. */
        .source = col_text(s, 5),
    };
    r.source_len = r.source ? (size_t)sqlite3_column_bytes(s, 5) : 0;
    if (r.name == NULL || r.version == NULL || r.digest == NULL)
        return TR_ENOMEM;
    return cb->pipeline(&r, arg);
}

static int emit_run(sqlite3_stmt *s, const union any_cb *cb, void *arg)
{
    struct tr_run_rec r = {
        .id = col_text(s, 0),
        .pipeline = col_text(s, 1),
        .version = col_text(s, 2),
        .digest = col_text(s, 3),
        .params_json = col_text(s, 4),
        .state = col_text(s, 5),
        .created_at = sqlite3_column_double(s, 6),
        .started_at = sqlite3_column_double(s, 7),
        .finished_at = sqlite3_column_double(s, 8),
        .output_json = col_text(s, 9),
        .error = col_text(s, 10),
        .usage_json = col_text(s, 11),
    };
    if (r.id == NULL || r.pipeline == NULL || r.version == NULL || r.digest == NULL ||
        r.state == NULL)
        return TR_ENOMEM;
    return cb->run(&r, arg);
}

static int emit_task(sqlite3_stmt *s, const union any_cb *cb, void *arg)
{
    struct tr_task_rec r = {
        .run_id = col_text(s, 0),
        .name = col_text(s, 1),
        .index = (uint32_t)sqlite3_column_int64(s, 2),
        .state = col_text(s, 3),
        .attempts = (uint32_t)sqlite3_column_int64(s, 4),
        .worker = col_text(s, 5),
        .started_at = sqlite3_column_double(s, 6),
        .finished_at = sqlite3_column_double(s, 7),
        .output = sqlite3_column_blob(s, 8),
        .error = col_text(s, 9),
        .logs = col_text(s, 10),
        .cached = sqlite3_column_int64(s, 11) != 0,
    };
    r.output_len = r.output ? (size_t)sqlite3_column_bytes(s, 8) : 0;
    r.usage = sqlite3_column_blob(s, 12);
    r.usage_len = r.usage ? (size_t)sqlite3_column_bytes(s, 12) : 0;
    if (r.usage_len == 0)
        r.usage = NULL;
    if (r.run_id == NULL || r.name == NULL || r.state == NULL)
        return TR_ENOMEM;
    return cb->task(&r, arg);
}

/*
 * Steps a bound statement to its end, handing each row to emit. Returns 0,
 * the first non-zero callback value, or an error; *rows counts the rows.
 */
static int read_rows(struct tr_sqlite *ss, sqlite3_stmt *s, emit_fn emit, const union any_cb *cb,
                     void *arg, size_t *rows)
{
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW) {
            tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
            return tr_sqlite_rc(rc);
        }
        (*rows)++;
        int r = emit(s, cb, arg);
        if (r != 0)
            return r;
    }
}

/* Runs read statement id: its parameters are limit (0: none), then p1 and p2 (NULL: none). */
static int read_query(struct tr_sqlite *ss, enum tr_sqlite_stmt id, const char *p1, const char *p2,
                      int64_t limit, emit_fn emit, const union any_cb *cb, void *arg, size_t *rows)
{
    sqlite3_stmt *s = NULL;
    int rc = read_start(ss, id, &s);
    if (rc < 0)
        return rc;
    int brc = SQLITE_OK;
    int p = 1;
    if (limit != 0)
        brc = sqlite3_bind_int64(s, p++, limit);
    if (brc == SQLITE_OK && p1 != NULL)
        brc = sqlite3_bind_text(s, p++, p1, -1, SQLITE_STATIC);
    if (brc == SQLITE_OK && p2 != NULL)
        brc = sqlite3_bind_text(s, p++, p2, -1, SQLITE_STATIC);
    if (brc != SQLITE_OK) {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        rc = tr_sqlite_rc(brc);
    } else {
        rc = read_rows(ss, s, emit, cb, arg, rows);
    }
    read_end(ss, id, s);
    return rc;
}

int tr_sqlite_get_pipeline(struct tr_state *st, const char *name, const char *version,
                           tr_state_pipeline_fn cb, void *arg)
{
    union any_cb u = {.pipeline = cb};
    size_t rows = 0;
    int rc = read_query(tr_sqlite_of(st), version ? TR_SQ_GET_PIPELINE : TR_SQ_GET_PIPELINE_LATEST,
                        name, version, 0, emit_pipeline, &u, arg, &rows);
    return rc == 0 && rows == 0 ? TR_ENOENT : rc;
}

int tr_sqlite_list_pipelines(struct tr_state *st, tr_state_pipeline_fn cb, void *arg)
{
    union any_cb u = {.pipeline = cb};
    size_t rows = 0;
    return read_query(tr_sqlite_of(st), TR_SQ_LIST_PIPELINES, NULL, NULL, 0, emit_pipeline, &u, arg,
                      &rows);
}

int tr_sqlite_get_run(struct tr_state *st, const char *run_id, tr_state_run_fn cb, void *arg)
{
    union any_cb u = {.run = cb};
    size_t rows = 0;
    int rc = read_query(tr_sqlite_of(st), TR_SQ_GET_RUN, run_id, NULL, 0, emit_run, &u, arg, &rows);
    return rc == 0 && rows == 0 ? TR_ENOENT : rc;
}

int tr_sqlite_list_runs(struct tr_state *st, const char *state, bool unfinished_only,
                        uint32_t limit, tr_state_run_fn cb, void *arg)
{
    union any_cb u = {.run = cb};
    size_t rows = 0;
    /* LIMIT -1 is SQLite's "no limit"; the limit is always the first parameter. */
    int64_t lim = limit ? (int64_t)limit : -1;
    enum tr_sqlite_stmt id = TR_SQ_LIST_RUNS;
    if (state != NULL) {
        /* Both filters: only an unfinished state can match both. */
        if (unfinished_only && strcmp(state, "queued") != 0 && strcmp(state, "running") != 0)
            return 0;
        id = TR_SQ_LIST_RUNS_BY_STATE;
    } else if (unfinished_only) {
        id = TR_SQ_LIST_RUNS_UNFINISHED;
    }
    return read_query(tr_sqlite_of(st), id, state, NULL, lim, emit_run, &u, arg, &rows);
}

int tr_sqlite_list_tasks(struct tr_state *st, const char *run_id, tr_state_task_fn cb, void *arg)
{
    union any_cb u = {.task = cb};
    size_t rows = 0;
    return read_query(tr_sqlite_of(st), TR_SQ_LIST_TASKS, run_id, NULL, 0, emit_task, &u, arg,
                      &rows);
}

/* Copies the blob in column 0 of the row keyed by key; NUL-terminated for text users. */
static int read_blob(struct tr_sqlite *ss, enum tr_sqlite_stmt id, const char *key, void **out,
                     size_t *len)
{
    sqlite3_stmt *s = NULL;
    int rc = read_start(ss, id, &s);
    if (rc < 0)
        return rc;
    int src = sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (src == SQLITE_OK)
        src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(s, 0);
        size_t n = (size_t)sqlite3_column_bytes(s, 0);
        char *copy = tr_malloc(n + 1);
        if (copy == NULL) {
            rc = TR_ENOMEM;
        } else {
            if (n)
                memcpy(copy, p, n);
            copy[n] = '\0';
            *out = copy;
            *len = n;
        }
    } else if (src == SQLITE_DONE) {
        rc = TR_ENOENT;
    } else {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        rc = tr_sqlite_rc(src);
    }
    read_end(ss, id, s);
    return rc;
}

int tr_sqlite_get_source(struct tr_state *st, const char *digest, char **src, size_t *len)
{
    void *p = NULL;
    int rc = read_blob(tr_sqlite_of(st), TR_SQ_GET_SOURCE, digest, &p, len);
    *src = p;
    return rc;
}

int tr_sqlite_get_cache(struct tr_state *st, const char *key, void **output, size_t *len)
{
    return read_blob(tr_sqlite_of(st), TR_SQ_GET_CACHE, key, output, len);
}

/* ===================================================================== */
/* The feedback loop's rows                                              */
/* ===================================================================== */

int tr_sqlite_row_key(struct tr_buf *b, const char *const *comps, size_t n)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0)
            rc = tr_buf_addch(b, '/');
        for (const char *p = comps[i]; rc == 0 && *p; p++) {
            if (*p == '%')
                rc = tr_buf_addstr(b, "%25");
            else if (*p == '/')
                rc = tr_buf_addstr(b, "%2F");
            else
                rc = tr_buf_addch(b, *p);
        }
    }
    return rc;
}

int tr_sqlite_get_row(struct tr_state *st, int kind, const char *const *comps, size_t n,
                      char **value, size_t *len)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = tr_sqlite_row_key(&key, comps, n);
    sqlite3_stmt *s = NULL;
    if (rc == 0)
        rc = read_start(ss, TR_SQ_GET_ROW, &s);
    if (rc < 0) {
        tr_buf_release(&key);
        return rc;
    }
    int src = sqlite3_bind_int(s, 1, kind);
    if (src == SQLITE_OK)
        src = sqlite3_bind_text(s, 2, key.buf, (int)key.len, SQLITE_STATIC);
    if (src == SQLITE_OK)
        src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        const char *p = col_text(s, 0);
        size_t m = (size_t)sqlite3_column_bytes(s, 0);
        *value = p ? tr_strndup(p, m) : NULL;
        *len = m;
        rc = *value ? 0 : TR_ENOMEM;
    } else if (src == SQLITE_DONE) {
        rc = TR_ENOENT;
    } else {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        rc = tr_sqlite_rc(src);
    }
    read_end(ss, TR_SQ_GET_ROW, s);
    tr_buf_release(&key);
    return rc;
}

int tr_sqlite_list_rows(struct tr_state *st, int kind, const char *grp, const char *sub,
                        uint32_t limit, tr_state_row_fn cb, void *arg)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    enum tr_sqlite_stmt id = TR_SQ_LIST_ROWS + (grp ? 1 : 0) + (sub ? 2 : 0) +
                             (tr_row_kinds[kind].desc ? 4 : 0);
    sqlite3_stmt *s = NULL;
    int rc = read_start(ss, id, &s);
    if (rc < 0)
        return rc;
    int src = sqlite3_bind_int(s, 1, kind);
    if (src == SQLITE_OK && grp)
        src = sqlite3_bind_text(s, 2, grp, -1, SQLITE_STATIC);
    if (src == SQLITE_OK && sub)
        src = sqlite3_bind_text(s, 3, sub, -1, SQLITE_STATIC);
    if (src == SQLITE_OK)
        src = sqlite3_bind_int64(s, 4, limit ? (int64_t)limit : -1);
    while (src == SQLITE_OK && rc == 0) {
        int step = sqlite3_step(s);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            src = step;
            break;
        }
        const char *p = col_text(s, 0);
        if (p == NULL) {
            rc = TR_ENOMEM;
            break;
        }
        rc = cb(p, (size_t)sqlite3_column_bytes(s, 0), arg);
    }
    if (src != SQLITE_OK) {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        rc = tr_sqlite_rc(src);
    }
    read_end(ss, id, s);
    return rc;
}

/* Run control: finished runs older than a cutoff, oldest first. */
int tr_sqlite_list_finished(struct tr_state *st, double before, uint32_t limit,
                            tr_state_run_fn cb, void *arg)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    sqlite3_stmt *s = NULL;
    int rc = read_start(ss, TR_SQ_LIST_FINISHED, &s);
    if (rc < 0)
        return rc;
    int brc = sqlite3_bind_double(s, 1, before);
    if (brc == SQLITE_OK)
        brc = sqlite3_bind_int64(s, 2, limit ? (int64_t)limit : -1);
    union any_cb u = {.run = cb};
    size_t rows = 0;
    if (brc != SQLITE_OK) {
        tr_err("cannot read state '%s': %s", ss->path, sqlite3_errmsg(ss->db));
        rc = tr_sqlite_rc(brc);
    } else {
        rc = read_rows(ss, s, emit_run, &u, arg, &rows);
    }
    read_end(ss, TR_SQ_LIST_FINISHED, s);
    return rc;
}
