/*
 * state_sqlite.c - the SQLite state backend (`sqlite:PATH[?OPTIONS]`): the
 * handle's life, from the URL's options through WAL, the sync level and the
 * schema migrations to the statements, and close.
 *
 * One connection in WAL mode, owned by the scheduler's loop thread. Every
 * statement is prepared once at open and kept until close, because the
 * scheduler commits tens of thousands of task records per second and a
 * prepare costs more than the insert it serves.
 *
 * The backend's other two files: lib/state/state_sqlite_batch.c (group commit:
 * a batch is buffered in memory and replayed in one transaction at commit)
 * and lib/state/state_sqlite_read.c (reads, which see committed data only).
 *
 * Invariants between calls: the connection is in autocommit mode, every
 * statement is reset, and no batch holds a SQLite lock.
 */
#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/state/state_sqlite_int.h"

/* ===================================================================== */
/* Schema and statements                                                 */
/* ===================================================================== */

/*
 * Migrations, applied in order inside one transaction at open; meta's
 * schema_version names the last one applied. Append, never edit: a database
 * written by this build must open under every later one.
 */
static const struct
{
    int version;
    const char *sql;
} migrations[] = {
    {1, "CREATE TABLE pipelines("
        "  name TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL,"
        "  registered_at REAL NOT NULL, n_tasks INTEGER NOT NULL,"
        "  PRIMARY KEY (name, version));"
        "CREATE TABLE sources(digest TEXT PRIMARY KEY, source BLOB NOT NULL);"
        "CREATE TABLE runs("
        "  id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, version TEXT NOT NULL,"
        "  digest TEXT NOT NULL, params TEXT, state TEXT NOT NULL,"
        "  created_at REAL NOT NULL, started_at REAL, finished_at REAL,"
        "  output TEXT, error TEXT);"
        "CREATE INDEX runs_by_created ON runs(created_at DESC, id DESC);"
        "CREATE INDEX runs_by_state ON runs(state, created_at DESC, id DESC);"
        "CREATE TABLE tasks("
        "  run_id TEXT NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL,"
        "  state TEXT NOT NULL, attempts INTEGER NOT NULL, worker TEXT,"
        "  started_at REAL, finished_at REAL, output BLOB, error TEXT, logs TEXT,"
        "  cached INTEGER NOT NULL, PRIMARY KEY (run_id, name, idx));"
        "CREATE TABLE cache(key TEXT PRIMARY KEY, output BLOB NOT NULL,"
        "  created_at REAL NOT NULL);"},
    /* The LLM calls of each instance (struct tr_task_rec.usage); NULL in older rows. */
    {2, "ALTER TABLE tasks ADD COLUMN usage BLOB;"},
    /* The sum of those calls per run (struct tr_run_rec.usage_json), for listings. */
    {3, "ALTER TABLE runs ADD COLUMN usage TEXT;"},
    /* The feedback loop's records as rows (state_backend.h): one table for the
     * nine kinds, each row its record as JSON plus what listings filter and sort on. */
    {4, "CREATE TABLE loop_rows(kind INTEGER NOT NULL, key TEXT NOT NULL, grp TEXT, sub TEXT,"
        "  ord REAL NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key));"
        "CREATE INDEX loop_rows_by_grp ON loop_rows(kind, grp, sub, ord);"
        "CREATE INDEX loop_rows_by_sub ON loop_rows(kind, sub, ord);"},
};

#define PIPELINE_COLS "p.name, p.version, p.digest, p.registered_at, p.n_tasks"
#define RUN_COLS                                                                                   \
    "id, pipeline, version, digest, params, state, created_at, started_at, "                       \
    "finished_at, output, error, usage"
#define TASK_COLS                                                                                  \
    "run_id, name, idx, state, attempts, worker, started_at, finished_at, output, "                \
    "error, logs, cached, usage"
#define RUNS_NEWEST " ORDER BY created_at DESC, id DESC LIMIT ?1"
/* A listing of rows: ?1 kind, ?2 grp, ?3 sub, ?4 limit (-1: none). */
#define ROWS(where, dir)                                                                           \
    "SELECT value FROM loop_rows WHERE kind = ?1" where " ORDER BY ord " dir ", key " dir           \
    " LIMIT ?4"

const char *const tr_sqlite_sql[TR_SQ_COUNT] = {
    [TR_SQ_BEGIN] = "BEGIN IMMEDIATE",
    [TR_SQ_COMMIT] = "COMMIT",
    [TR_SQ_PUT_PIPELINE] = "INSERT OR REPLACE INTO pipelines(name, version, digest, registered_at,"
                           " n_tasks) VALUES (?1, ?2, ?3, ?4, ?5)",
    [TR_SQ_PUT_SOURCE] = "INSERT OR IGNORE INTO sources(digest, source) VALUES (?1, ?2)",
    /* An upsert rather than a replace keeps the row (and its rowid) in place. */
    [TR_SQ_PUT_RUN] = "INSERT INTO runs(" RUN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                      " ?10, ?11, ?12) ON CONFLICT(id) DO UPDATE SET pipeline = excluded.pipeline,"
                      " version = excluded.version, digest = excluded.digest,"
                      " params = excluded.params, state = excluded.state,"
                      " created_at = excluded.created_at, started_at = excluded.started_at,"
                      " finished_at = excluded.finished_at, output = excluded.output,"
                      " error = excluded.error, usage = excluded.usage",
    [TR_SQ_PUT_TASK] = "INSERT OR REPLACE INTO tasks(" TASK_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
                       " ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [TR_SQ_PUT_CACHE] = "INSERT OR REPLACE INTO cache(key, output, created_at) VALUES (?1, ?2, ?3)",
    [TR_SQ_NEXT_EPOCH] = "INSERT INTO meta(key, value) VALUES ('epoch', 1)"
                         " ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value",
    [TR_SQ_GET_SOURCE] = "SELECT source FROM sources WHERE digest = ?1",
    [TR_SQ_GET_PIPELINE] = "SELECT " PIPELINE_COLS ", s.source FROM pipelines p"
                           " LEFT JOIN sources s ON s.digest = p.digest"
                           " WHERE p.name = ?1 AND p.version = ?2",
    /* A replace gives the row a new rowid, so rowid breaks ties in registration order. */
    [TR_SQ_GET_PIPELINE_LATEST] = "SELECT " PIPELINE_COLS ", s.source FROM pipelines p"
                                  " LEFT JOIN sources s ON s.digest = p.digest WHERE p.name = ?1"
                                  " ORDER BY p.registered_at DESC, p.rowid DESC LIMIT 1",
    [TR_SQ_LIST_PIPELINES] = "SELECT " PIPELINE_COLS ", NULL FROM pipelines p"
                             " ORDER BY p.name, p.registered_at, p.rowid",
    [TR_SQ_GET_RUN] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
    [TR_SQ_LIST_RUNS] = "SELECT " RUN_COLS " FROM runs" RUNS_NEWEST,
    [TR_SQ_LIST_RUNS_BY_STATE] = "SELECT " RUN_COLS " FROM runs WHERE state = ?2" RUNS_NEWEST,
    [TR_SQ_LIST_RUNS_UNFINISHED] = "SELECT " RUN_COLS " FROM runs"
                                   " WHERE state IN ('queued', 'running')" RUNS_NEWEST,
    [TR_SQ_LIST_TASKS] = "SELECT " TASK_COLS " FROM tasks WHERE run_id = ?1 ORDER BY name, idx",
    [TR_SQ_GET_CACHE] = "SELECT output FROM cache WHERE key = ?1",
    [TR_SQ_PUT_ROW] = "INSERT OR REPLACE INTO loop_rows(kind, key, grp, sub, ord, value)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [TR_SQ_GET_ROW] = "SELECT value FROM loop_rows WHERE kind = ?1 AND key = ?2",
    [TR_SQ_LIST_ROWS + 0] = ROWS("", "ASC"),
    [TR_SQ_LIST_ROWS + 1] = ROWS(" AND grp = ?2", "ASC"),
    [TR_SQ_LIST_ROWS + 2] = ROWS(" AND sub = ?3", "ASC"),
    [TR_SQ_LIST_ROWS + 3] = ROWS(" AND grp = ?2 AND sub = ?3", "ASC"),
    [TR_SQ_LIST_ROWS + 4] = ROWS("", "DESC"),
    [TR_SQ_LIST_ROWS + 5] = ROWS(" AND grp = ?2", "DESC"),
    [TR_SQ_LIST_ROWS + 6] = ROWS(" AND sub = ?3", "DESC"),
    [TR_SQ_LIST_ROWS + 7] = ROWS(" AND grp = ?2 AND sub = ?3", "DESC"),
    [TR_SQ_DEL_RUN] = "DELETE FROM runs WHERE id = ?1",
    [TR_SQ_DEL_TASKS] = "DELETE FROM tasks WHERE run_id = ?1",
    [TR_SQ_DEL_ROW] = "DELETE FROM loop_rows WHERE kind = ?1 AND key = ?2",
    /* Oldest first along runs_by_created; ?1 the cutoff, ?2 the limit. */
    [TR_SQ_LIST_FINISHED] = "SELECT " RUN_COLS " FROM runs WHERE created_at < ?1"
                            " AND state IN ('succeeded', 'failed', 'cancelled')"
                            " AND finished_at < ?1 ORDER BY created_at, id LIMIT ?2",
};

#define DEFAULT_BUSY_MS 5000

/* ===================================================================== */
/* Shared helpers                                                        */
/* ===================================================================== */

int tr_sqlite_rc(int rc)
{
    return (rc & 0xff) == SQLITE_NOMEM ? TR_ENOMEM : TR_ESTATE;
}

int tr_sqlite_step(struct tr_sqlite *ss, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        rc = SQLITE_OK;
    } else {
        snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
    }
    sqlite3_reset(s);
    return rc;
}

/* Runs SQL text with no result; keeps the SQLite message on failure. */
static int exec_sql(struct tr_sqlite *ss, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(ss->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

void tr_sqlite_rollback_open(struct tr_sqlite *ss)
{
    if (sqlite3_get_autocommit(ss->db))
        return;
    char *msg = NULL;
    if (sqlite3_exec(ss->db, "ROLLBACK", NULL, NULL, &msg) != SQLITE_OK)
        tr_warn("cannot roll back state transaction in '%s': %s", ss->path, msg ? msg : "?");
    sqlite3_free(msg);
}

/* ===================================================================== */
/* Open and close                                                        */
/* ===================================================================== */

static void sqlite_close(struct tr_state *st)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    for (size_t i = 0; i < TR_SQ_COUNT; i++)
        sqlite3_finalize(ss->stmts[i]);
    /* Closing the last connection checkpoints the WAL into the database file. */
    if (sqlite3_close(ss->db) != SQLITE_OK)
        tr_warn("cannot close state database '%s': %s", ss->path, sqlite3_errmsg(ss->db));
    tr_free(ss->path);
    tr_sqlite_batch_release(&ss->batch);
    tr_free(ss);
}

/*
 * Splits "PATH?sync=full&busy_timeout=MS" into the path and options. Only a
 * final "?" followed by known options is taken as options, so that a path
 * with a "?" of its own still fails loudly rather than silently.
 */
static int parse_location(struct tr_sqlite *ss, const char *loc, int *sync, int *busy_ms,
                          struct tr_error *err)
{
    const char *q = strrchr(loc, '?');
    size_t path_len = q ? (size_t)(q - loc) : strlen(loc);
    if (path_len == 0) {
        return tr_error_set(err, TR_EINVAL,
                            "cannot open state 'sqlite:%s': no path (use sqlite:PATH or "
                            "sqlite::memory:)",
                            loc);
    }
    ss->path = tr_strndup(loc, path_len);
    if (ss->path == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot open state 'sqlite:%s': out of memory", loc);
    *sync = 1;
    *busy_ms = DEFAULT_BUSY_MS;
    for (const char *opt = q ? q + 1 : NULL; opt != NULL && *opt != '\0';) {
        const char *end = strchr(opt, '&');
        size_t len = end ? (size_t)(end - opt) : strlen(opt);
        static const char *const sync_names[] = {"off", "normal", "full"};
        bool ok = false;
        if (len > 5 && memcmp(opt, "sync=", 5) == 0) {
            for (int i = 0; i < 3; i++) {
                const char *name = sync_names[i];
                if (strlen(name) == len - 5 && memcmp(opt + 5, name, len - 5) == 0) {
                    *sync = i;
                    ok = true;
                }
            }
        } else if (len > 13 && memcmp(opt, "busy_timeout=", 13) == 0) {
            char *num_end = NULL;
            long ms = strtol(opt + 13, &num_end, 10);
            ok = num_end == opt + len && ms >= 0 && ms <= 600000;
            *busy_ms = (int)ms;
        }
        if (!ok) {
            return tr_error_set(err, TR_EINVAL,
                                "cannot open state 'sqlite:%s': bad option '%.*s' (expected "
                                "sync=full|normal|off or busy_timeout=MS)",
                                loc, (int)len, opt);
        }
        opt = end ? end + 1 : NULL;
    }
    return 0;
}

/* Reads one integer from a query; *out stays as it was when there is no row. */
static int query_int(struct tr_sqlite *ss, const char *sql, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(ss->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
        return rc;
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    } else {
        snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
    }
    sqlite3_finalize(s);
    return rc;
}

/* Brings the schema up to the last migration, in one transaction. */
static int migrate(struct tr_sqlite *ss, struct tr_error *err)
{
    int latest = migrations[TR_ARRAY_LEN(migrations) - 1].version;
    int64_t version = 0;
    int rc = exec_sql(ss, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = exec_sql(ss, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)");
    if (rc == SQLITE_OK)
        rc = query_int(ss, "SELECT value FROM meta WHERE key = 'schema_version'", &version);
    if (rc == SQLITE_OK && version > latest) {
        tr_sqlite_rollback_open(ss);
        return tr_error_set(err, TR_ESTATE,
                            "cannot open state database '%s': schema version %lld is newer "
                            "than this build's %d",
                            ss->path, (long long)version, latest);
    }
    for (size_t i = 0; rc == SQLITE_OK && i < TR_ARRAY_LEN(migrations); i++) {
        if (migrations[i].version > version)
            rc = exec_sql(ss, migrations[i].sql);
    }
    if (rc == SQLITE_OK && version < latest) {
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', %d)", latest);
        rc = exec_sql(ss, sql);
    }
    if (rc == SQLITE_OK)
        rc = exec_sql(ss, "COMMIT");
    if (rc != SQLITE_OK) {
        tr_sqlite_rollback_open(ss);
        return tr_error_set(err, tr_sqlite_rc(rc), "cannot migrate state database '%s': %s",
                            ss->path, ss->errmsg);
    }
    return 0;
}

/* WAL, the sync level and the busy timeout; then the schema and the statements. */
static int configure(struct tr_sqlite *ss, int sync, int busy_ms, struct tr_error *err)
{
    static const char *const sync_pragmas[] = {
        "PRAGMA synchronous = OFF", "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"};
    sqlite3_busy_timeout(ss->db, busy_ms);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(ss->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(s, 0);
        /* An in-memory database reports "memory"; a file that cannot do WAL keeps
         * its rollback journal, which is as durable but blocks readers longer. */
        if (mode != NULL && strcmp(mode, "wal") != 0 && strcmp(ss->path, ":memory:") != 0)
            tr_warn("cannot use WAL for state database '%s': journal mode is '%s'", ss->path, mode);
        rc = SQLITE_OK;
    } else {
        snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_OK)
        rc = exec_sql(ss, sync_pragmas[sync]);
    if (rc != SQLITE_OK) {
        return tr_error_set(err, tr_sqlite_rc(rc), "cannot open state database '%s': %s", ss->path,
                            ss->errmsg);
    }
    int mrc = migrate(ss, err);
    if (mrc < 0)
        return mrc;
    for (size_t i = 0; i < TR_SQ_COUNT; i++) {
        rc = sqlite3_prepare_v3(ss->db, tr_sqlite_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &ss->stmts[i], NULL);
        if (rc != SQLITE_OK) {
            return tr_error_set(err, tr_sqlite_rc(rc), "cannot prepare state statement in '%s': %s",
                                ss->path, sqlite3_errmsg(ss->db));
        }
    }
    return 0;
}

static int sqlite_open(const char *location, struct tr_state **out, struct tr_error *err)
{
    struct tr_sqlite *ss = tr_calloc(1, sizeof(*ss));
    if (ss == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot open state 'sqlite:%s': out of memory",
                            location);
    tr_buf_init(&ss->batch.bytes, 0);
    int sync = 1;
    int busy_ms = DEFAULT_BUSY_MS;
    int rc = parse_location(ss, location, &sync, &busy_ms, err);
    if (rc < 0)
        goto out_close;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int src = sqlite3_open_v2(ss->path, &ss->db, flags, NULL);
    if (src != SQLITE_OK) {
        int sys = ss->db ? sqlite3_system_errno(ss->db) : 0;
        rc = tr_error_set(err, tr_sqlite_rc(src), "cannot open state database '%s': %s%s%s%s",
                          ss->path, ss->db ? sqlite3_errmsg(ss->db) : sqlite3_errstr(src),
                          sys ? " (" : "", sys ? strerror(sys) : "", sys ? ")" : "");
        goto out_close;
    }
    rc = configure(ss, sync, busy_ms, err);
    if (rc < 0)
        goto out_close;
    *out = &ss->base;
    return 0;

out_close:
    sqlite_close(&ss->base);
    return rc;
}

const struct tr_state_ops tr_state_sqlite_ops = {
    .scheme = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .next_epoch = tr_sqlite_next_epoch,
    .begin = tr_sqlite_begin,
    .put_pipeline = tr_sqlite_put_pipeline,
    .put_source = tr_sqlite_put_source,
    .put_run = tr_sqlite_put_run,
    .put_task = tr_sqlite_put_task,
    .put_cache = tr_sqlite_put_cache,
    .commit = tr_sqlite_commit,
    .rollback = tr_sqlite_rollback,
    .get_source = tr_sqlite_get_source,
    .get_pipeline = tr_sqlite_get_pipeline,
    .list_pipelines = tr_sqlite_list_pipelines,
    .get_run = tr_sqlite_get_run,
    .list_runs = tr_sqlite_list_runs,
    .list_tasks = tr_sqlite_list_tasks,
    .get_cache = tr_sqlite_get_cache,
    .put_row = tr_sqlite_put_row,
    .get_row = tr_sqlite_get_row,
    .list_rows = tr_sqlite_list_rows,
    .delete_row = tr_sqlite_delete_row,
    .delete_run = tr_sqlite_delete_run,
    .list_finished = tr_sqlite_list_finished,
};
