/*
 * test_state_sqlite.c - what only the SQLite state backend can be asked: its
 * URL options, its file (unopenable, not a database, a newer schema, WAL),
 * commits that fail (a lock held by another connection, a put failing half
 * way through a batch, a write error) and a process killed with SIGKILL. The behaviour every
 * backend shares is tests/unit/test_state.c's contract.
 *
 * The fixture is a temporary directory with a database opened in it; the
 * tests reach the same file through a second, raw SQLite connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/state/state.h"

/* ===================================================================== */
/* Fixture                                                               */
/* ===================================================================== */

struct fixture
{
    char dir[256];  /* temporary directory, removed at teardown */
    char path[512]; /* dir/state.db */
    char url[600];  /* sqlite:dir/state.db */
    struct tr_state *st;
};

static void open_ok(struct fixture *f, const char *options)
{
    char url[700];
    snprintf(url, sizeof(url), "%s%s", f->url, options);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_open(url, &f->st, &err);
    if (rc != 0)
        fail_msg("cannot open '%s': %s", url, err.msg);
}

static int setup(void **state)
{
    struct fixture *f = tr_calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/trellis-sqlite-XXXXXX", tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    open_ok(f, "");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tr_state_close(f->st);
    static const char *const names[] = {"state.db", "state.db-wal", "state.db-shm", "garbage.db"};
    char p[600];
    for (size_t i = 0; i < TR_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    rmdir(f->dir);
    tr_free(f);
    return 0;
}

static void reopen(struct fixture *f, const char *options)
{
    tr_state_close(f->st);
    f->st = NULL;
    open_ok(f, options);
}

static void commit_ok(struct tr_state *st)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_commit(st, &err);
    if (rc != 0)
        fail_msg("commit failed: %d %s", rc, err.msg);
}

static struct tr_run_rec run_rec(const char *id, const char *state, double created_at)
{
    return (struct tr_run_rec){.id = id,
                               .pipeline = "rag",
                               .version = "1",
                               .digest = "d1",
                               .state = state,
                               .created_at = created_at};
}

static void put_run(struct tr_state *st, const char *id, const char *state, double created_at)
{
    struct tr_run_rec r = run_rec(id, state, created_at);
    assert_int_equal(tr_state_begin(st), 0);
    assert_int_equal(tr_state_put_run(st, &r), 0);
    commit_ok(st);
}

/* What the callbacks saw: how many records, and copies from the first one. */
struct seen
{
    size_t n;
    char first[64];  /* run id, or task name */
    char output[16]; /* the first task's output */
    size_t output_len;
};

static int on_run(const struct tr_run_rec *r, void *arg)
{
    struct seen *s = arg;
    if (s->n++ == 0)
        snprintf(s->first, sizeof(s->first), "%s", r->id);
    return 0;
}

static int on_task(const struct tr_task_rec *r, void *arg)
{
    struct seen *s = arg;
    if (s->n++ == 0) {
        snprintf(s->first, sizeof(s->first), "%s", r->name);
        s->output_len = r->output_len;
        if (r->output != NULL)
            memcpy(s->output, r->output, TR_MIN(r->output_len, sizeof(s->output)));
    }
    return 0;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("'%s': %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
}

static void expect_open_error(const char *url, int code, const char *needle)
{
    struct tr_state *st = (struct tr_state *)&st;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_state_open(url, &st, &err), code);
    assert_null(st);
    assert_int_equal(err.code, code);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("open '%s': message '%s' does not name '%s'", url, err.msg, needle);
}

/* ===================================================================== */
/* Failing commits                                                       */
/* ===================================================================== */

static void test_commit_fails_when_locked(void **state)
{
    struct fixture *f = *state;
    reopen(f, "?busy_timeout=50");
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "BEGIN EXCLUSIVE");

    struct tr_run_rec r = run_rec("r-lost", "queued", 1);
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_run(f->st, &r), 0);
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_state_commit(f->st, &err), TR_ESTATE);
    assert_int_equal(err.code, TR_ESTATE);
    assert_non_null(strstr(err.msg, "database is locked"));
    assert_non_null(strstr(err.msg, f->path));
    uint64_t epoch = 0;
    assert_int_equal(tr_state_next_epoch(f->st, &epoch), TR_ESTATE);

    raw_exec(db, "ROLLBACK");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* The failed batch left nothing; the handle works on. */
    struct seen s = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-lost", on_run, &s), TR_ENOENT);
    put_run(f->st, "r-kept", "queued", 2);
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.first, "r-kept");
    assert_int_equal(tr_state_next_epoch(f->st, &epoch), 0);
    assert_int_equal(epoch, 1);
}

static void test_commit_fails_midway(void **state)
{
    struct fixture *f = *state;
    /* A trigger makes the third put of the batch fail after two have been applied. */
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "CREATE TRIGGER boom BEFORE INSERT ON tasks WHEN NEW.name = 'boom'"
                 " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    struct tr_run_rec r = run_rec("r-1", "running", 1);
    struct tr_task_rec ok = {.run_id = "r-1", .name = "ok", .state = "succeeded"};
    struct tr_task_rec boom = {.run_id = "r-1", .name = "boom", .state = "succeeded"};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_run(f->st, &r), 0);
    assert_int_equal(tr_state_put_task(f->st, &ok), 0);
    assert_int_equal(tr_state_put_task(f->st, &boom), 0);
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_state_commit(f->st, &err), TR_ESTATE);
    assert_non_null(strstr(err.msg, "disk on fire"));

    struct seen s = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-1", on_run, &s), TR_ENOENT);
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 0);
    assert_int_equal(s.n, 0);

    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_run(f->st, &r), 0);
    assert_int_equal(tr_state_put_task(f->st, &ok), 0);
    commit_ok(f->st);
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 0);
    assert_int_equal(s.n, 1);
}

/*
 * Runs in a child, since it shrinks the file size limit: a batch that cannot
 * be written (EFBIG, which SQLite reports as SQLITE_IOERR) fails and leaves
 * nothing; once the limit is lifted the same handle commits again. Returns
 * the step that went wrong, 0 when all went as it should.
 */
static int write_error_child(const char *url)
{
    struct tr_state *st = NULL;
    struct tr_error err;
    if (tr_state_open(url, &st, &err) != 0)
        return 1;
    static unsigned char out[64 * 1024];
    struct rlimit lim;
    if (getrlimit(RLIMIT_FSIZE, &lim) != 0)
        return 2;
    struct rlimit small = {.rlim_cur = 256 * 1024, .rlim_max = lim.rlim_max};
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &small) != 0 || tr_state_begin(st) != 0)
        return 3;
    for (uint32_t i = 0; i < 64; i++) {
        struct tr_task_rec t = {.run_id = "r-big",
                                .name = "t",
                                .index = i,
                                .state = "succeeded",
                                .output = out,
                                .output_len = sizeof(out)};
        if (tr_state_put_task(st, &t) != 0)
            return 4;
    }
    tr_error_init(&err);
    if (tr_state_commit(st, &err) != TR_ESTATE || strstr(err.msg, "disk I/O error") == NULL)
        return 5;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
        return 6;
    struct tr_run_rec r = run_rec("r-after", "queued", 1);
    if (tr_state_begin(st) != 0 || tr_state_put_run(st, &r) != 0 || tr_state_commit(st, &err) != 0)
        return 7;
    tr_state_close(st);
    return 0;
}

static void test_commit_fails_on_write_error(void **state)
{
    struct fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(write_error_child(f->url));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    struct seen s = {0};
    assert_int_equal(tr_state_list_tasks(f->st, "r-big", on_task, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(tr_state_get_run(f->st, "r-after", on_run, &s), 0);
    assert_int_equal(s.n, 1);
}

/* A child commits, begins another batch, and is killed before it can close anything. */
static void test_survives_kill(void **state)
{
    struct fixture *f = *state;
    tr_state_close(f->st);
    f->st = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct tr_state *st = NULL;
        struct tr_error err;
        struct tr_run_rec r = run_rec("r-crash", "running", 5);
        struct tr_task_rec t = {.run_id = "r-crash",
                                .name = "a",
                                .state = "succeeded",
                                .output = "\x01\x00\x02",
                                .output_len = 3};
        if (tr_state_open(f->url, &st, &err) != 0 || tr_state_begin(st) != 0 ||
            tr_state_put_run(st, &r) != 0 || tr_state_put_task(st, &t) != 0 ||
            tr_state_commit(st, &err) != 0)
            _exit(1);
        struct tr_run_rec lost = run_rec("r-lost", "queued", 6);
        if (tr_state_begin(st) != 0 || tr_state_put_run(st, &lost) != 0)
            _exit(1);
        raise(SIGKILL);
        _exit(2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    open_ok(f, "");
    struct seen s = {0};
    assert_int_equal(tr_state_list_runs(f->st, NULL, true, 0, on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.first, "r-crash");
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_tasks(f->st, "r-crash", on_task, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.output_len, 3);
    assert_memory_equal(s.output, "\x01\x00\x02", 3);
}

/* ===================================================================== */
/* URLs and files                                                        */
/* ===================================================================== */

static void test_bad_options(void **state)
{
    struct fixture *f = *state;
    expect_open_error("sqlite:", TR_EINVAL, "no path");
    expect_open_error("sqlite:?sync=full", TR_EINVAL, "no path");
    char url[700];
    snprintf(url, sizeof(url), "%s?sync=sometimes", f->url);
    expect_open_error(url, TR_EINVAL, "sync=sometimes");
    snprintf(url, sizeof(url), "%s?busy_timeout=soon", f->url);
    expect_open_error(url, TR_EINVAL, "busy_timeout=soon");
    snprintf(url, sizeof(url), "%s?busy_timeout=-1", f->url);
    expect_open_error(url, TR_EINVAL, "busy_timeout=-1");
    snprintf(url, sizeof(url), "%s?sync=full&color=blue", f->url);
    expect_open_error(url, TR_EINVAL, "color=blue");
}

static void test_unopenable(void **state)
{
    struct fixture *f = *state;
    char url[800];
    snprintf(url, sizeof(url), "sqlite:%s/no-such-dir/state.db", f->dir);
    char path[700];
    snprintf(path, sizeof(path), "'%s/no-such-dir/state.db'", f->dir);
    expect_open_error(url, TR_ESTATE, path);
    expect_open_error(url, TR_ESTATE, "No such file or directory");

    /* A file that is not a database is named too, and left alone. */
    snprintf(path, sizeof(path), "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("not a database ", fp);
    fclose(fp);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    expect_open_error(url, TR_ESTATE, path);
    expect_open_error(url, TR_ESTATE, "not a database");

    /* A schema newer than this build is refused rather than written over. */
    tr_state_close(f->st);
    f->st = NULL;
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    expect_open_error(f->url, TR_ESTATE, "schema version 99");
}

static int first_column(void *arg, int ncol, char **vals, char **names)
{
    snprintf(arg, 16, "%s", vals[0] ? vals[0] : "");
    return 0;
}

static void test_sync_modes_and_wal(void **state)
{
    struct fixture *f = *state;
    static const char *const opts[] = {"?sync=off", "?sync=normal", "?sync=full&busy_timeout=10",
                                       "?busy_timeout=0&sync=normal"};
    for (size_t i = 0; i < TR_ARRAY_LEN(opts); i++) {
        reopen(f, opts[i]);
        char id[16];
        snprintf(id, sizeof(id), "r-%zu", i);
        put_run(f->st, id, "queued", (double)i + 1);
    }
    reopen(f, "");
    struct seen s = {0};
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 0);
    assert_int_equal(s.n, TR_ARRAY_LEN(opts));
    assert_string_equal(s.first, "r-3");

    /* WAL is a property of the file, and the schema version is recorded in meta. */
    sqlite3 *db = raw_open(f->path);
    char got[16] = "";
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode", first_column, got, NULL), SQLITE_OK);
    assert_string_equal(got, "wal");
    assert_int_equal(sqlite3_exec(db, "SELECT value FROM meta WHERE key = 'schema_version'",
                                  first_column, got, NULL),
                     SQLITE_OK);
    assert_string_equal(got, "4");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int count_feedback(const struct tr_feedback_rec *r, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

/* A task record of the migration test, copied out of the callback. */
struct old_task
{
    int n;
    char state[16];
    size_t output_len;
    bool has_usage;
    char usage[16];
    size_t usage_len;
};

static int on_old_task(const struct tr_task_rec *rec, void *arg)
{
    struct old_task *t = arg;
    t->n++;
    snprintf(t->state, sizeof(t->state), "%s", rec->state);
    t->output_len = rec->output_len;
    t->has_usage = rec->usage != NULL;
    t->usage_len = rec->usage_len;
    if (rec->usage_len > 0 && rec->usage_len <= sizeof(t->usage))
        memcpy(t->usage, rec->usage, rec->usage_len);
    return 0;
}

struct old_run
{
    int n;
    bool has_usage;
};

static int on_old_run(const struct tr_run_rec *rec, void *arg)
{
    struct old_run *r = arg;
    r->n++;
    r->has_usage = rec->usage_json != NULL;
    return 0;
}

static void test_migrates_schema_1(void **state)
{
    struct fixture *f = *state;
    tr_state_close(f->st);
    f->st = NULL;
    unlink(f->path);
    /* A database as the first schema wrote it, with one task row. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     NULL),
                     SQLITE_OK);
    raw_exec(db, "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
                 "INSERT INTO meta VALUES ('schema_version', 1);"
                 "CREATE TABLE pipelines(name TEXT NOT NULL, version TEXT NOT NULL,"
                 " digest TEXT NOT NULL, registered_at REAL NOT NULL, n_tasks INTEGER NOT NULL,"
                 " PRIMARY KEY (name, version));"
                 "CREATE TABLE sources(digest TEXT PRIMARY KEY, source BLOB NOT NULL);"
                 "CREATE TABLE runs(id TEXT PRIMARY KEY, pipeline TEXT NOT NULL,"
                 " version TEXT NOT NULL, digest TEXT NOT NULL, params TEXT, state TEXT NOT NULL,"
                 " created_at REAL NOT NULL, started_at REAL, finished_at REAL, output TEXT,"
                 " error TEXT);"
                 "CREATE INDEX runs_by_created ON runs(created_at DESC, id DESC);"
                 "CREATE INDEX runs_by_state ON runs(state, created_at DESC, id DESC);"
                 "CREATE TABLE tasks(run_id TEXT NOT NULL, name TEXT NOT NULL,"
                 " idx INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,"
                 " worker TEXT, started_at REAL, finished_at REAL, output BLOB, error TEXT,"
                 " logs TEXT, cached INTEGER NOT NULL, PRIMARY KEY (run_id, name, idx));"
                 "CREATE TABLE cache(key TEXT PRIMARY KEY, output BLOB NOT NULL,"
                 " created_at REAL NOT NULL);"
                 "INSERT INTO tasks VALUES ('r-old', 'a', 0, 'succeeded', 1, 'w1', 1.0, 2.0,"
                 " x'2a', NULL, NULL, 0);"
                 "INSERT INTO runs VALUES ('r-old', 'p', '1', 'dd', NULL, 'succeeded', 1.0, 1.5,"
                 " 2.0, '{}', NULL);");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    open_ok(f, "");
    struct old_task t = {0};
    assert_int_equal(tr_state_list_tasks(f->st, "r-old", on_old_task, &t), 0);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.state, "succeeded");
    assert_int_equal(t.output_len, 1);
    assert_false(t.has_usage);
    assert_int_equal(t.usage_len, 0);
    struct old_run r = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-old", on_old_run, &r), 0);
    assert_int_equal(r.n, 1);
    assert_false(r.has_usage);

    /* The migrated table takes usage like a new one. */
    static const char usage[] = "\x91\x81\xa5model\xa1m";
    struct tr_task_rec rec = {.run_id = "r-old", .name = "a", .state = "failed", .attempts = 2,
                              .usage = usage, .usage_len = sizeof(usage) - 1};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_task(f->st, &rec), 0);
    assert_int_equal(tr_state_commit(f->st, NULL), 0);
    memset(&t, 0, sizeof(t));
    assert_int_equal(tr_state_list_tasks(f->st, "r-old", on_old_task, &t), 0);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.state, "failed");
    assert_true(t.has_usage);
    assert_int_equal(t.usage_len, sizeof(usage) - 1);
    assert_memory_equal(t.usage, usage, sizeof(usage) - 1);

    /* And the feedback loop's table (version 4) is there. */
    struct tr_feedback_rec fb = {.id = "fb-1", .run_id = "r-old", .pipeline = "p", .score = 5};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_feedback(f->st, &fb), 0);
    assert_int_equal(tr_state_commit(f->st, NULL), 0);
    size_t n = 0;
    assert_int_equal(tr_state_list_feedback(f->st, "p", "r-old", 0, count_feedback, &n), 0);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_fails_when_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_fails_midway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_fails_on_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unopenable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_modes_and_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrates_schema_1, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
