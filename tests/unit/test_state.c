/*
 * test_state.c - the state backend contract, run against every backend URL.
 *
 * Every test gets a fresh store from the fixture: a backend from `backends`
 * (the prestate), a temporary directory, and an open handle. Adding a backend
 * to the contract is one line in `backends`. What only one backend can be
 * asked (SQLite's locks, files and crashes) is in test_state_<backend>.c.
 *
 * The etcd backend runs against the member ctest's fixture etcd.start
 * started ($TR_ETCD_DIR/endpoint), each test under a prefix of its own
 * (PID and clock), so that tests and reruns never see each other's keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/state/state.h"

/* ===================================================================== */
/* Fixture                                                               */
/* ===================================================================== */

struct backend
{
    const char *url; /* "%s" is replaced by a fresh temporary directory, or for
                        etcd by the fixture's endpoint and a fresh prefix */
    bool persistent; /* data survives close and reopen */
    bool etcd;
};

static struct backend backends[] = {
    {"sqlite::memory:", false, false},
    {"sqlite:%s/state.db", true, false},
    {"etcd://%s", true, true},
};

/* "HOST:PORT?prefix=/tr-test/state-<pid>-<ns>" of the fixture's member. */
static void etcd_location(char *out, size_t size)
{
    const char *dir = getenv("TR_ETCD_DIR");
    char path[512], ep[128] = "";
    snprintf(path, sizeof(path), "%s/endpoint", dir ? dir : ".");
    FILE *fp = fopen(path, "r");
    if (fp == NULL || fgets(ep, sizeof(ep), fp) == NULL) {
        if (fp)
            fclose(fp);
        fail_msg("no etcd endpoint in '%s': run through ctest, whose fixture etcd.start "
                 "starts one", path);
    }
    fclose(fp);
    ep[strcspn(ep, "\r\n")] = '\0';
    snprintf(out, size, "%s?prefix=/tr-test/state-%d-%llu", ep, (int)getpid(),
             (unsigned long long)tr_mono_ns());
}

struct fixture
{
    const struct backend *be;
    char dir[256];  /* temporary directory, removed at teardown */
    char path[512]; /* dir/state.db, for the SQLite-only tests */
    char url[600];  /* the backend URL with dir filled in */
    struct tr_state *st;
};

static int setup(void **state)
{
    struct fixture *f = tr_calloc(1, sizeof(*f));
    assert_non_null(f);
    f->be = *state;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/trellis-state-XXXXXX", tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
    char etcd[300];
    if (f->be->etcd)
        etcd_location(etcd, sizeof(etcd));
    if (strstr(f->be->url, "%s") != NULL) {
        const char *at = strstr(f->be->url, "%s");
        snprintf(f->url, sizeof(f->url), "%.*s%s%s", (int)(at - f->be->url), f->be->url,
                 f->be->etcd ? etcd : f->dir, at + 2);
    } else {
        snprintf(f->url, sizeof(f->url), "%s", f->be->url);
    }
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_open(f->url, &f->st, &err);
    if (rc != 0)
        fail_msg("cannot open '%s': %s", f->url, err.msg);
    *state = f;
    return 0;
}

static void remove_files(const char *dir)
{
    static const char *const names[] = {"state.db", "state.db-wal", "state.db-shm",
                                        "state.db-journal"};
    char p[600];
    for (size_t i = 0; i < TR_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tr_state_close(f->st);
    remove_files(f->dir);
    tr_free(f);
    return 0;
}

static void reopen(struct fixture *f, const char *options)
{
    tr_state_close(f->st);
    f->st = NULL;
    char url[700];
    snprintf(url, sizeof(url), "%s%s", f->url, options);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_open(url, &f->st, &err);
    if (rc != 0)
        fail_msg("cannot reopen '%s': %s", url, err.msg);
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
                               .params_json = "{\"q\":\"why\"}",
                               .state = state,
                               .created_at = created_at};
}

static void put_runs(struct tr_state *st, const struct tr_run_rec *runs, size_t n)
{
    assert_int_equal(tr_state_begin(st), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tr_state_put_run(st, &runs[i]), 0);
    commit_ok(st);
}

/* What callbacks collect: copies, since records are borrowed for the callback only. */
#define MAX_SEEN 16
struct seen
{
    size_t n;
    int stop_after;          /* return 42 after this many records (0: never) */
    char ids[MAX_SEEN][64];  /* run ids, task "name#idx", pipeline "name@version" */
    char text[MAX_SEEN][64]; /* digest (pipelines), state (runs), error (tasks) */
    double when[MAX_SEEN];   /* registered_at / created_at / finished_at */
    char blob[MAX_SEEN][32]; /* source (pipelines), output (tasks), with its length */
    size_t blob_len[MAX_SEEN];
    struct tr_task_rec task; /* the last task, its strings pointed into task_strs */
    char task_strs[6][64];
    char task_usage[128];  /* the last task's usage, which task.usage points into */
    struct tr_run_rec run; /* the last run, likewise */
    char run_strs[9][64];
    char run_usage[256];   /* the last run's usage_json, which run.usage_json points into */
};

static const char *keep(char *dst, const char *s)
{
    if (s == NULL)
        return NULL;
    snprintf(dst, 64, "%s", s);
    return dst;
}

static int seen_next(struct seen *s)
{
    assert_true(s->n < MAX_SEEN);
    s->n++;
    return s->stop_after != 0 && (int)s->n == s->stop_after ? 42 : 0;
}

static int on_pipeline(const struct tr_pipeline_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->ids[s->n], 64, "%s@%s", r->name, r->version);
    snprintf(s->text[s->n], 64, "%s", r->digest);
    s->when[s->n] = r->registered_at;
    s->blob_len[s->n] = r->source_len;
    if (r->source != NULL) {
        assert_true(r->source_len < sizeof(s->blob[0]));
        memcpy(s->blob[s->n], r->source, r->source_len);
        assert_int_equal(r->source[r->source_len], '\0');
    }
    assert_true(r->source != NULL || r->source_len == 0);
    return seen_next(s);
}

static int on_run(const struct tr_run_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->ids[s->n], 64, "%s", r->id);
    snprintf(s->text[s->n], 64, "%s", r->state);
    s->when[s->n] = r->created_at;
    s->run = *r;
    s->run.id = keep(s->run_strs[0], r->id);
    s->run.pipeline = keep(s->run_strs[1], r->pipeline);
    s->run.version = keep(s->run_strs[2], r->version);
    s->run.digest = keep(s->run_strs[3], r->digest);
    s->run.params_json = keep(s->run_strs[4], r->params_json);
    s->run.state = keep(s->run_strs[5], r->state);
    s->run.output_json = keep(s->run_strs[6], r->output_json);
    s->run.error = keep(s->run_strs[7], r->error);
    s->run.usage_json = NULL;
    if (r->usage_json != NULL) {
        snprintf(s->run_usage, sizeof(s->run_usage), "%s", r->usage_json);
        s->run.usage_json = s->run_usage;
    }
    return seen_next(s);
}

static int on_task(const struct tr_task_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->ids[s->n], 64, "%s#%u", r->name, (unsigned)r->index);
    snprintf(s->text[s->n], 64, "%s", r->error ? r->error : "(null)");
    s->when[s->n] = r->finished_at;
    s->blob_len[s->n] = r->output_len;
    if (r->output != NULL)
        memcpy(s->blob[s->n], r->output, TR_MIN(r->output_len, sizeof(s->blob[0])));
    s->task = *r;
    s->task.run_id = keep(s->task_strs[0], r->run_id);
    s->task.name = keep(s->task_strs[1], r->name);
    s->task.state = keep(s->task_strs[2], r->state);
    s->task.worker = keep(s->task_strs[3], r->worker);
    s->task.error = keep(s->task_strs[4], r->error);
    s->task.logs = keep(s->task_strs[5], r->logs);
    s->task.output = r->output ? s->blob[s->n] : NULL;
    assert_true(r->usage_len <= sizeof(s->task_usage));
    assert_true((r->usage == NULL) == (r->usage_len == 0));
    if (r->usage != NULL)
        memcpy(s->task_usage, r->usage, r->usage_len);
    s->task.usage = r->usage ? s->task_usage : NULL;
    return seen_next(s);
}

/* ===================================================================== */
/* Contract: pipelines and sources                                       */
/* ===================================================================== */

static void test_pipeline_round_trip(void **state)
{
    struct fixture *f = *state;
    struct tr_pipeline_rec p = {.name = "rag",
                                .version = "1.0",
                                .digest = "aa11",
                                .source = "return {}",
                                .source_len = 9,
                                .registered_at = 1700000000.25,
                                .n_tasks = 7};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &p), 0);
    commit_ok(f->st);

    struct seen s = {0};
    assert_int_equal(tr_state_get_pipeline(f->st, "rag", "1.0", on_pipeline, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "rag@1.0");
    assert_string_equal(s.text[0], "aa11");
    assert_true(s.when[0] == 1700000000.25);
    assert_int_equal(s.blob_len[0], 9);
    assert_memory_equal(s.blob[0], "return {}", 9);

    /* The source put with the pipeline is reachable by digest too. */
    char *src = NULL;
    size_t len = 0;
    assert_int_equal(tr_state_get_source(f->st, "aa11", &src, &len), 0);
    assert_int_equal(len, 9);
    assert_string_equal(src, "return {}");
    tr_free(src);

    /* n_tasks survives; a pipeline put without source has none joined. */
    struct tr_pipeline_rec q = {
        .name = "bare", .version = "2", .digest = "nosuch", .registered_at = 5, .n_tasks = 3};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &q), 0);
    commit_ok(f->st);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_pipeline(f->st, "bare", NULL, on_pipeline, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.blob_len[0], 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_pipeline(f->st, "rag", "9.9", on_pipeline, &s), TR_ENOENT);
    assert_int_equal(tr_state_get_pipeline(f->st, "nope", NULL, on_pipeline, &s), TR_ENOENT);
    assert_int_equal(s.n, 0);
}

static int capture_n_tasks(const struct tr_pipeline_rec *r, void *arg)
{
    *(uint32_t *)arg = r->n_tasks;
    return 0;
}

static void test_pipeline_replace_and_latest(void **state)
{
    struct fixture *f = *state;
    struct tr_pipeline_rec v1 = {
        .name = "rag", .version = "1", .digest = "d-one", .registered_at = 100, .n_tasks = 1};
    struct tr_pipeline_rec v2 = {
        .name = "rag", .version = "2", .digest = "d-two", .registered_at = 200, .n_tasks = 2};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &v1), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &v2), 0);
    commit_ok(f->st);

    struct seen s = {0};
    assert_int_equal(tr_state_get_pipeline(f->st, "rag", NULL, on_pipeline, &s), 0);
    assert_string_equal(s.ids[0], "rag@2");

    /* Registering version 1 again with another digest replaces it and makes it the latest. */
    struct tr_pipeline_rec v1b = {
        .name = "rag", .version = "1", .digest = "d-one-b", .registered_at = 300, .n_tasks = 5};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &v1b), 0);
    commit_ok(f->st);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_pipeline(f->st, "rag", NULL, on_pipeline, &s), 0);
    assert_string_equal(s.ids[0], "rag@1");
    assert_string_equal(s.text[0], "d-one-b");
    uint32_t n_tasks = 0;
    assert_int_equal(tr_state_get_pipeline(f->st, "rag", "1", capture_n_tasks, &n_tasks), 0);
    assert_int_equal(n_tasks, 5);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_pipelines(f->st, on_pipeline, &s), 0);
    assert_int_equal(s.n, 2);

    /* Equal registration times: the one registered last wins. */
    struct tr_pipeline_rec a = {.name = "tie", .version = "a", .digest = "x", .registered_at = 7};
    struct tr_pipeline_rec b = {.name = "tie", .version = "b", .digest = "y", .registered_at = 7};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &b), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &a), 0);
    commit_ok(f->st);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_pipeline(f->st, "tie", NULL, on_pipeline, &s), 0);
    assert_string_equal(s.ids[0], "tie@a");
}

static void test_list_pipelines_order(void **state)
{
    struct fixture *f = *state;
    struct tr_pipeline_rec recs[] = {
        {.name = "zeta", .version = "1", .digest = "z1", .registered_at = 1},
        {.name = "alpha",
         .version = "2",
         .digest = "a2",
         .registered_at = 20,
         .source = "src",
         .source_len = 3},
        {.name = "alpha", .version = "10", .digest = "a10", .registered_at = 10},
        {.name = "mid", .version = "1", .digest = "m1", .registered_at = 5},
    };
    assert_int_equal(tr_state_begin(f->st), 0);
    for (size_t i = 0; i < TR_ARRAY_LEN(recs); i++)
        assert_int_equal(tr_state_put_pipeline(f->st, &recs[i]), 0);
    commit_ok(f->st);

    struct seen s = {0};
    assert_int_equal(tr_state_list_pipelines(f->st, on_pipeline, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[0], "alpha@10");
    assert_string_equal(s.ids[1], "alpha@2");
    assert_string_equal(s.ids[2], "mid@1");
    assert_string_equal(s.ids[3], "zeta@1");
    /* Listings leave the source out; get_pipeline carries it. */
    assert_int_equal(s.blob_len[1], 0);

    memset(&s, 0, sizeof(s));
    s.stop_after = 2;
    assert_int_equal(tr_state_list_pipelines(f->st, on_pipeline, &s), 42);
    assert_int_equal(s.n, 2);
}

static void test_source_round_trip(void **state)
{
    struct fixture *f = *state;
    static const char bin[] = {'a', '\0', 'b', '\0', '\xff', 'c'};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_source(f->st, "bin", bin, sizeof(bin)), 0);
    assert_int_equal(tr_state_put_source(f->st, "empty", "", 0), 0);
    commit_ok(f->st);

    /* The same digest again is a no-op: the first bytes stay. */
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_source(f->st, "bin", "other", 5), 0);
    commit_ok(f->st);

    char *src = NULL;
    size_t len = 0;
    assert_int_equal(tr_state_get_source(f->st, "bin", &src, &len), 0);
    assert_int_equal(len, sizeof(bin));
    assert_memory_equal(src, bin, sizeof(bin));
    assert_int_equal(src[len], '\0');
    tr_free(src);

    assert_int_equal(tr_state_get_source(f->st, "empty", &src, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(src, "");
    tr_free(src);

    src = (char *)"untouched";
    assert_int_equal(tr_state_get_source(f->st, "missing", &src, &len), TR_ENOENT);
    assert_null(src);
    assert_int_equal(len, 0);
}

/* ===================================================================== */
/* Contract: runs                                                        */
/* ===================================================================== */

static void test_run_round_trip(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec full = {.id = "r-1",
                              .pipeline = "rag",
                              .version = "3",
                              .digest = "dd",
                              .params_json = "{\"k\":[1,2]}",
                              .state = "failed",
                              .created_at = 10.5,
                              .started_at = 11.25,
                              .finished_at = 12.75,
                              .output_json = "{\"answer\":\"no\"}",
                              .error = "task 'b' failed",
                              .usage_json = "{\"calls\":3,\"cost\":0.5}"};
    struct tr_run_rec bare = {.id = "r-2",
                              .pipeline = "rag",
                              .version = "3",
                              .digest = "dd",
                              .state = "queued",
                              .created_at = 20};
    put_runs(f->st, (struct tr_run_rec[]){full, bare}, 2);

    struct seen s = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-1", on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.run.id, "r-1");
    assert_string_equal(s.run.pipeline, "rag");
    assert_string_equal(s.run.version, "3");
    assert_string_equal(s.run.digest, "dd");
    assert_string_equal(s.run.params_json, "{\"k\":[1,2]}");
    assert_string_equal(s.run.state, "failed");
    assert_true(s.run.created_at == 10.5);
    assert_true(s.run.started_at == 11.25);
    assert_true(s.run.finished_at == 12.75);
    assert_string_equal(s.run.output_json, "{\"answer\":\"no\"}");
    assert_string_equal(s.run.error, "task 'b' failed");
    assert_string_equal(s.run.usage_json, "{\"calls\":3,\"cost\":0.5}");

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_run(f->st, "r-2", on_run, &s), 0);
    assert_null(s.run.params_json);
    assert_null(s.run.output_json);
    assert_null(s.run.error);
    assert_null(s.run.usage_json);
    assert_true(s.run.started_at == 0);
    assert_true(s.run.finished_at == 0);

    /* Putting the same id again replaces the record. */
    struct tr_run_rec done = bare;
    done.state = "succeeded";
    done.started_at = 21;
    done.finished_at = 22;
    done.output_json = "42";
    done.usage_json = "{\"calls\":0}";
    put_runs(f->st, &done, 1);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_run(f->st, "r-2", on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.run.state, "succeeded");
    assert_string_equal(s.run.output_json, "42");
    assert_string_equal(s.run.usage_json, "{\"calls\":0}");
    assert_true(s.run.finished_at == 22);

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_run(f->st, "r-404", on_run, &s), TR_ENOENT);
    assert_int_equal(s.n, 0);
}

static void test_list_runs_order_and_filters(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec runs[] = {
        run_rec("r-a", "succeeded", 100), run_rec("r-b", "queued", 300),
        run_rec("r-c", "running", 200),   run_rec("r-d", "failed", 300),
        run_rec("r-e", "queued", 50),     run_rec("r-f", "cancelled", 400),
    };
    put_runs(f->st, runs, TR_ARRAY_LEN(runs));

    struct seen s = {0};
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 0);
    assert_int_equal(s.n, 6);
    /* Newest first; equal created_at falls back to id, descending. */
    static const char *const all[] = {"r-f", "r-d", "r-b", "r-c", "r-a", "r-e"};
    for (size_t i = 0; i < TR_ARRAY_LEN(all); i++)
        assert_string_equal(s.ids[i], all[i]);

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 2, on_run, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[1], "r-d");

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, "queued", false, 0, on_run, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "r-b");
    assert_string_equal(s.ids[1], "r-e");

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, NULL, true, 0, on_run, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "r-b");
    assert_string_equal(s.ids[1], "r-c");
    assert_string_equal(s.ids[2], "r-e");

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, NULL, true, 1, on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "r-b");

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, "running", true, 0, on_run, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "r-c");
    assert_int_equal(tr_state_list_runs(f->st, "failed", true, 0, on_run, &s), 0);
    assert_int_equal(s.n, 1);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_runs(f->st, "nosuchstate", false, 0, on_run, &s), 0);
    assert_int_equal(s.n, 0);

    s.stop_after = 3;
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 42);
    assert_int_equal(s.n, 3);
}

/* ===================================================================== */
/* Contract: tasks and cache                                             */
/* ===================================================================== */

static void test_task_round_trip(void **state)
{
    struct fixture *f = *state;
    static const unsigned char out[] = {0x82, 0x00, 0xa1, 'x', 0x00, 0xc0};
    /* [{model: "m", prompt_tokens: 12, cost: 0.5}, {model: "n"}] */
    static const unsigned char usage[] = {0x92, 0x83, 0xa5, 'm', 'o', 'd', 'e', 'l', 0xa1, 'm',
                                          0xad, 'p', 'r', 'o', 'm', 'p', 't', '_', 't', 'o', 'k',
                                          'e', 'n', 's', 0x0c, 0xa4, 'c', 'o', 's', 't', 0xcb,
                                          0x3f, 0xe0, 0, 0, 0, 0, 0, 0, 0x81, 0xa5, 'm', 'o',
                                          'd', 'e', 'l', 0xa1, 'n'};
    struct tr_task_rec full = {.run_id = "r-1",
                               .name = "embed",
                               .index = 3,
                               .state = "succeeded",
                               .attempts = 2,
                               .worker = "w-7",
                               .started_at = 1.5,
                               .finished_at = 2.5,
                               .output = out,
                               .output_len = sizeof(out),
                               .logs = "line one\nline two",
                               .cached = true,
                               .usage = usage,
                               .usage_len = sizeof(usage)};
    struct tr_task_rec bare = {.run_id = "r-1", .name = "skip", .state = "skipped"};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_task(f->st, &full), 0);
    assert_int_equal(tr_state_put_task(f->st, &bare), 0);
    commit_ok(f->st);

    struct seen s = {0};
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "embed#3");
    assert_int_equal(s.blob_len[0], sizeof(out));
    assert_memory_equal(s.blob[0], out, sizeof(out));
    assert_string_equal(s.ids[1], "skip#0");
    assert_null(s.task.usage);
    assert_int_equal(s.task.usage_len, 0);
    /* The last task seen is the bare one: everything optional reads back empty. */
    assert_string_equal(s.task.run_id, "r-1");
    assert_string_equal(s.task.state, "skipped");
    assert_null(s.task.worker);
    assert_null(s.task.output);
    assert_int_equal(s.task.output_len, 0);
    assert_null(s.task.error);
    assert_null(s.task.logs);
    assert_false(s.task.cached);
    assert_int_equal(s.task.attempts, 0);
    assert_true(s.task.started_at == 0 && s.task.finished_at == 0);

    /* Replace the full one with a failure and read every field back. */
    struct tr_task_rec failed = full;
    failed.state = "failed";
    failed.attempts = 3;
    failed.output = NULL;
    failed.output_len = 0;
    failed.error = "timeout after 30s";
    failed.cached = false;
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_task(f->st, &failed), 0);
    commit_ok(f->st);
    memset(&s, 0, sizeof(s));
    s.stop_after = 1;
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 42);
    assert_string_equal(s.task.name, "embed");
    assert_int_equal(s.task.index, 3);
    assert_string_equal(s.task.state, "failed");
    assert_int_equal(s.task.attempts, 3);
    assert_string_equal(s.task.worker, "w-7");
    assert_true(s.task.started_at == 1.5 && s.task.finished_at == 2.5);
    assert_null(s.task.output);
    assert_string_equal(s.task.error, "timeout after 30s");
    assert_string_equal(s.task.logs, "line one\nline two");
    assert_false(s.task.cached);
    /* The calls of every attempt stay with the record, whatever its state. */
    assert_int_equal(s.task.usage_len, sizeof(usage));
    assert_memory_equal(s.task.usage, usage, sizeof(usage));

    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_tasks(f->st, "r-none", on_task, &s), 0);
    assert_int_equal(s.n, 0);
}

static void test_list_tasks_order(void **state)
{
    struct fixture *f = *state;
    static const struct
    {
        const char *run, *name;
        uint32_t index;
    } order[] = {{"r-1", "b", 10}, {"r-1", "b", 2}, {"r-2", "a", 0},
                 {"r-1", "a", 0},  {"r-1", "b", 1}, {"r-1", "c", 0}};
    assert_int_equal(tr_state_begin(f->st), 0);
    for (size_t i = 0; i < TR_ARRAY_LEN(order); i++) {
        struct tr_task_rec t = {.run_id = order[i].run,
                                .name = order[i].name,
                                .index = order[i].index,
                                .state = "succeeded"};
        assert_int_equal(tr_state_put_task(f->st, &t), 0);
    }
    commit_ok(f->st);

    struct seen s = {0};
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 0);
    assert_int_equal(s.n, 5);
    static const char *const want[] = {"a#0", "b#1", "b#2", "b#10", "c#0"};
    for (size_t i = 0; i < TR_ARRAY_LEN(want); i++)
        assert_string_equal(s.ids[i], want[i]);
}

static void test_cache_round_trip(void **state)
{
    struct fixture *f = *state;
    static const unsigned char v1[] = {0x00, 0x01, 0x00, 0x02};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_cache(f->st, "k1", v1, sizeof(v1)), 0);
    assert_int_equal(tr_state_put_cache(f->st, "empty", NULL, 0), 0);
    commit_ok(f->st);

    void *out = NULL;
    size_t len = 0;
    assert_int_equal(tr_state_get_cache(f->st, "k1", &out, &len), 0);
    assert_int_equal(len, sizeof(v1));
    assert_memory_equal(out, v1, sizeof(v1));
    tr_free(out);

    assert_int_equal(tr_state_get_cache(f->st, "empty", &out, &len), 0);
    assert_int_equal(len, 0);
    assert_non_null(out);
    tr_free(out);

    /* A later put under the same key replaces the output. */
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_cache(f->st, "k1", "\xc3", 1), 0);
    commit_ok(f->st);
    assert_int_equal(tr_state_get_cache(f->st, "k1", &out, &len), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(out, "\xc3", 1);
    tr_free(out);

    assert_int_equal(tr_state_get_cache(f->st, "k2", &out, &len), TR_ENOENT);
    assert_null(out);
}

/* ===================================================================== */
/* Contract: batches, epochs, restarts                                   */
/* ===================================================================== */

static void test_batch_rules(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec r = run_rec("r-1", "queued", 1);
    struct tr_task_rec t = {.run_id = "r-1", .name = "a", .state = "succeeded"};
    struct tr_pipeline_rec p = {.name = "p", .version = "1", .digest = "d"};

    /* Puts outside a batch are refused. */
    assert_int_equal(tr_state_put_run(f->st, &r), TR_EINVAL);
    assert_int_equal(tr_state_put_task(f->st, &t), TR_EINVAL);
    assert_int_equal(tr_state_put_pipeline(f->st, &p), TR_EINVAL);
    assert_int_equal(tr_state_put_source(f->st, "d", "x", 1), TR_EINVAL);
    assert_int_equal(tr_state_put_cache(f->st, "k", "x", 1), TR_EINVAL);
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_state_commit(f->st, &err), TR_EINVAL);
    assert_int_equal(err.code, TR_EINVAL);
    tr_state_rollback(f->st);

    /* No nesting; an empty batch commits. */
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_begin(f->st), TR_EINVAL);
    commit_ok(f->st);

    /* Records missing what they cannot do without are refused; the batch goes on. */
    assert_int_equal(tr_state_begin(f->st), 0);
    struct tr_run_rec no_id = r;
    no_id.id = NULL;
    assert_int_equal(tr_state_put_run(f->st, &no_id), TR_EINVAL);
    struct tr_run_rec bad_state = r;
    bad_state.state = "sleeping";
    assert_int_equal(tr_state_put_run(f->st, &bad_state), TR_EINVAL);
    struct tr_task_rec pending = t;
    pending.state = "pending";
    assert_int_equal(tr_state_put_task(f->st, &pending), TR_EINVAL);
    struct tr_task_rec lying = t;
    lying.output_len = 3;
    assert_int_equal(tr_state_put_task(f->st, &lying), TR_EINVAL);
    assert_int_equal(tr_state_put_task(f->st, NULL), TR_EINVAL);
    assert_int_equal(tr_state_put_cache(f->st, NULL, "x", 1), TR_EINVAL);
    assert_int_equal(tr_state_put_run(f->st, &r), 0);
    commit_ok(f->st);
    struct seen s = {0};
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 0);
    assert_int_equal(s.n, 1);

    /* NULL handles are refused, not dereferenced. */
    assert_int_equal(tr_state_begin(NULL), TR_EINVAL);
    assert_int_equal(tr_state_commit(NULL, &err), TR_EINVAL);
    tr_state_rollback(NULL);
    tr_state_close(NULL);
}

static void test_rollback_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec r = run_rec("r-1", "running", 1);
    struct tr_task_rec t = {.run_id = "r-1", .name = "a", .state = "succeeded"};
    struct tr_pipeline_rec p = {
        .name = "p", .version = "1", .digest = "d", .source = "s", .source_len = 1};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_run(f->st, &r), 0);
    assert_int_equal(tr_state_put_task(f->st, &t), 0);
    assert_int_equal(tr_state_put_pipeline(f->st, &p), 0);
    assert_int_equal(tr_state_put_cache(f->st, "k", "v", 1), 0);

    /* Reads in the middle of a batch see committed data only. */
    struct seen s = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-1", on_run, &s), TR_ENOENT);
    tr_state_rollback(f->st);

    assert_int_equal(tr_state_get_run(f->st, "r-1", on_run, &s), TR_ENOENT);
    assert_int_equal(tr_state_list_runs(f->st, NULL, false, 0, on_run, &s), 0);
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", on_task, &s), 0);
    assert_int_equal(tr_state_list_pipelines(f->st, on_pipeline, &s), 0);
    assert_int_equal(s.n, 0);
    char *src = NULL;
    size_t len = 0;
    assert_int_equal(tr_state_get_source(f->st, "d", &src, &len), TR_ENOENT);
    void *out = NULL;
    assert_int_equal(tr_state_get_cache(f->st, "k", &out, &len), TR_ENOENT);

    /* After a rollback puts are refused again until the next begin. */
    assert_int_equal(tr_state_put_run(f->st, &r), TR_EINVAL);
    put_runs(f->st, &r, 1);
    assert_int_equal(tr_state_get_run(f->st, "r-1", on_run, &s), 0);
    assert_int_equal(s.n, 1);
}

/* A callback that reads again: each run's tasks, and the runs list itself. */
struct nested
{
    struct tr_state *st;
    size_t runs, tasks, inner_runs;
};

static int count_task(const struct tr_task_rec *r, void *arg)
{
    ((struct nested *)arg)->tasks++;
    return 0;
}

static int count_inner_run(const struct tr_run_rec *r, void *arg)
{
    ((struct nested *)arg)->inner_runs++;
    return 0;
}

static int nested_run(const struct tr_run_rec *r, void *arg)
{
    struct nested *n = arg;
    n->runs++;
    assert_int_equal(tr_state_list_tasks(n->st, r->id, count_task, n), 0);
    assert_int_equal(tr_state_list_runs(n->st, NULL, false, 0, count_inner_run, n), 0);
    return 0;
}

static void test_nested_reads(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec runs[] = {run_rec("r-1", "running", 1), run_rec("r-2", "queued", 2)};
    put_runs(f->st, runs, 2);
    assert_int_equal(tr_state_begin(f->st), 0);
    for (uint32_t i = 0; i < 3; i++) {
        struct tr_task_rec t = {.run_id = "r-1", .name = "m", .index = i + 1, .state = "succeeded"};
        assert_int_equal(tr_state_put_task(f->st, &t), 0);
    }
    commit_ok(f->st);
    struct nested n = {.st = f->st};
    assert_int_equal(tr_state_list_runs(f->st, NULL, true, 0, nested_run, &n), 0);
    assert_int_equal(n.runs, 2);
    assert_int_equal(n.tasks, 3);
    assert_int_equal(n.inner_runs, 4);
}

static void test_epoch(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = 0, e2 = 0, e3 = 0;
    assert_int_equal(tr_state_next_epoch(f->st, &e1), 0);
    assert_int_equal(tr_state_next_epoch(f->st, &e2), 0);
    assert_int_equal(e1, 1);
    assert_int_equal(e2, 2);
    /* An open batch does not hold the epoch back, and the epoch does not join the batch. */
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_next_epoch(f->st, &e3), 0);
    assert_int_equal(e3, 3);
    tr_state_rollback(f->st);
    if (f->be->persistent) {
        reopen(f, "");
        assert_int_equal(tr_state_next_epoch(f->st, &e3), 0);
        assert_int_equal(e3, 4);
    }
}

static void test_restart_resumes_unfinished(void **state)
{
    struct fixture *f = *state;
    if (!f->be->persistent)
        skip();
    uint64_t epoch = 0;
    assert_int_equal(tr_state_next_epoch(f->st, &epoch), 0);
    assert_int_equal(epoch, 1);
    struct tr_run_rec runs[] = {run_rec("r-done", "succeeded", 1), run_rec("r-run", "running", 2),
                                run_rec("r-queued", "queued", 3)};
    put_runs(f->st, runs, TR_ARRAY_LEN(runs));
    static const unsigned char out[] = {0x92, 0x00, 0x01};
    struct tr_task_rec t = {.run_id = "r-run",
                            .name = "fetch",
                            .state = "succeeded",
                            .output = out,
                            .output_len = sizeof(out),
                            .attempts = 1};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_task(f->st, &t), 0);
    commit_ok(f->st);

    reopen(f, "");
    assert_int_equal(tr_state_next_epoch(f->st, &epoch), 0);
    assert_int_equal(epoch, 2);
    struct seen s = {0};
    assert_int_equal(tr_state_list_runs(f->st, NULL, true, 0, on_run, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "r-queued");
    assert_string_equal(s.ids[1], "r-run");
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_list_tasks(f->st, "r-run", on_task, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.blob_len[0], sizeof(out));
    assert_memory_equal(s.blob[0], out, sizeof(out));
}

/* Fails the nth allocation from now for each n until the call succeeds. */
static void test_alloc_failure(void **state)
{
    struct fixture *f = *state;
    struct tr_state *st = NULL;
    struct tr_error err;
    long n = 1;
    for (;; n++) {
        tr_error_init(&err);
        tr_alloc_fail_at(n, false);
        int rc = tr_state_open(f->url, &st, &err);
        tr_alloc_fail_at(0, false);
        if (rc == 0)
            break;
        assert_int_equal(rc, TR_ENOMEM);
        assert_null(st);
        assert_int_equal(err.code, TR_ENOMEM);
    }
    assert_true(n > 1);
    tr_state_close(st);

    /* A put that runs out of memory leaves the batch as it was. */
    static const char big[300] = "payload";
    for (n = 1;; n++) {
        assert_int_equal(tr_state_begin(f->st), 0);
        tr_alloc_fail_at(n, false);
        int rc = 0;
        for (int i = 0; rc == 0 && i < 200; i++) {
            char id[16];
            snprintf(id, sizeof(id), "t%03d", i);
            struct tr_task_rec t = {.run_id = "r",
                                    .name = id,
                                    .state = "succeeded",
                                    .output = big,
                                    .output_len = sizeof(big)};
            struct tr_pipeline_rec p = {
                .name = id, .version = "1", .digest = id, .source = big, .source_len = sizeof(big)};
            rc = tr_state_put_task(f->st, &t);
            if (rc == 0)
                rc = tr_state_put_pipeline(f->st, &p);
        }
        tr_alloc_fail_at(0, false);
        if (rc == 0) {
            commit_ok(f->st);
            break;
        }
        assert_int_equal(rc, TR_ENOMEM);
        tr_state_rollback(f->st);
    }
    assert_true(n > 1);
    struct seen s = {0};
    s.stop_after = 1;
    assert_int_equal(tr_state_list_tasks(f->st, "r", on_task, &s), 42);

    for (n = 1;; n++) {
        char *src = NULL;
        size_t len = 0;
        tr_alloc_fail_at(n, false);
        int rc = tr_state_get_source(f->st, "t007", &src, &len);
        tr_alloc_fail_at(0, false);
        if (rc == 0) {
            assert_int_equal(len, sizeof(big));
            tr_free(src);
            break;
        }
        assert_int_equal(rc, TR_ENOMEM);
        assert_null(src);
    }
}

/* Many records and large outputs in one batch; the next batch starts clean. */
static void test_large_batch(void **state)
{
    struct fixture *f = *state;
    enum
    {
        N = 3000,
        OUT = 4000
    };
    unsigned char *out = tr_malloc(OUT);
    assert_non_null(out);
    for (size_t i = 0; i < OUT; i++)
        out[i] = (unsigned char)(i * 7);
    assert_int_equal(tr_state_begin(f->st), 0);
    for (uint32_t i = 0; i < N; i++) {
        struct tr_task_rec t = {.run_id = "r-big",
                                .name = "map",
                                .index = i + 1,
                                .state = "succeeded",
                                .output = out,
                                .output_len = OUT};
        assert_int_equal(tr_state_put_task(f->st, &t), 0);
    }
    commit_ok(f->st);
    tr_free(out);

    struct seen s = {0};
    s.stop_after = MAX_SEEN;
    assert_int_equal(tr_state_list_tasks(f->st, "r-big", on_task, &s), 42);
    assert_string_equal(s.ids[0], "map#1");
    assert_int_equal(s.blob_len[0], OUT);
    assert_memory_equal(s.blob[0], "\x00\x07\x0e\x15", 4);
    struct tr_run_rec r = run_rec("r-big", "succeeded", 1);
    put_runs(f->st, &r, 1);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tr_state_get_run(f->st, "r-big", on_run, &s), 0);
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

/* The front end's own errors, whatever backends exist. */
static void test_bad_urls(void **state)
{
    expect_open_error("postgres://db/trellis", TR_EINVAL, "unknown scheme 'postgres'");
    expect_open_error("postgres://db/trellis", TR_EINVAL, "known: sqlite:");
    expect_open_error("trellis.db", TR_EINVAL, "no scheme");
    expect_open_error(":memory:", TR_EINVAL, "no scheme");
    expect_open_error("", TR_EINVAL, "empty");
    struct tr_state *st = NULL;
    assert_int_equal(tr_state_open(NULL, &st, NULL), TR_EINVAL);
    assert_int_equal(tr_state_open("sqlite::memory:", NULL, NULL), TR_EINVAL);
}


/* ===================================================================== */
/* The feedback loop's records                                           */
/* ===================================================================== */

/* What a listing handed over, as "a,b,c" of one field per record. */
struct joined
{
    char text[1024];
    size_t n;
};

static void join(struct joined *j, const char *s)
{
    size_t len = strlen(j->text);
    snprintf(j->text + len, sizeof(j->text) - len, "%s%s", j->n ? "," : "", s ? s : "-");
    j->n++;
}

static int on_fb(const struct tr_feedback_rec *r, void *arg)
{
    join(arg, r->id);
    return 0;
}

static int on_fb_full(const struct tr_feedback_rec *r, void *arg)
{
    char b[512];
    snprintf(b, sizeof(b), "%s|%s|%s|%s|%u|%d|%s|%s|%s|%s|%.1f", r->id, r->run_id, r->pipeline,
             r->task ? r->task : "-", (unsigned)r->index, (int)r->score, r->label ? r->label : "-",
             r->correction ? r->correction : "-", r->comment ? r->comment : "-",
             r->user ? r->user : "-", r->created_at);
    join(arg, b);
    return 0;
}

static void test_feedback_round_trip_and_order(void **state)
{
    struct fixture *f = *state;
    struct tr_feedback_rec fb[] = {
        {.id = "fb-01", .run_id = "r1", .pipeline = "rag", .score = -1, .created_at = 10},
        {.id = "fb-02", .run_id = "r2", .pipeline = "rag", .task = "answer", .index = 2,
         .score = 4, .label = "good", .correction = "Paris", .comment = "ok \xc3\xa9",
         .user = "ann", .created_at = 11},
        {.id = "fb-03", .run_id = "r1", .pipeline = "rag", .score = 1, .created_at = 12},
        {.id = "fb-04", .run_id = "r9", .pipeline = "sum/x", .score = 5, .created_at = 11.5},
    };
    assert_int_equal(tr_state_begin(f->st), 0);
    for (size_t i = 0; i < TR_ARRAY_LEN(fb); i++)
        assert_int_equal(tr_state_put_feedback(f->st, &fb[i]), 0);
    struct tr_feedback_rec bad = {.id = "x", .run_id = "r1", .score = 1};
    assert_int_equal(tr_state_put_feedback(f->st, &bad), TR_EINVAL); /* no pipeline */
    commit_ok(f->st);

    struct joined j = {0};
    assert_int_equal(tr_state_list_feedback(f->st, NULL, NULL, 0, on_fb, &j), 0);
    assert_string_equal(j.text, "fb-03,fb-04,fb-02,fb-01"); /* newest first */
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback(f->st, "rag", NULL, 2, on_fb, &j), 0);
    assert_string_equal(j.text, "fb-03,fb-02");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback(f->st, NULL, "r1", 0, on_fb, &j), 0);
    assert_string_equal(j.text, "fb-03,fb-01");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback(f->st, "sum/x", "r9", 0, on_fb, &j), 0);
    assert_string_equal(j.text, "fb-04");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback(f->st, "rag", "r2", 0, on_fb_full, &j), 0);
    assert_string_equal(j.text, "fb-02|r2|rag|answer|2|4|good|Paris|ok \xc3\xa9|ann|11.0");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback(f->st, "none", NULL, 0, on_fb, &j), 0);
    assert_int_equal(j.n, 0);
}

static int on_stats(const struct tr_feedback_stats_rec *r, void *arg)
{
    char b[512];
    int n = snprintf(b, sizeof(b), "%s:%llu:%.1f:%llu:%llu:%llu:%u:%u", r->pipeline,
                     (unsigned long long)r->count, r->sum, (unsigned long long)r->negative,
                     (unsigned long long)r->labels_queued, (unsigned long long)r->labels_labelled,
                     (unsigned)r->bucket_seconds, (unsigned)r->n_buckets);
    for (uint32_t i = 0; i < r->n_buckets && n > 0 && (size_t)n < sizeof(b); i++)
        n += snprintf(b + n, sizeof(b) - (size_t)n, ":[%lld %llu %.1f %llu]",
                      (long long)r->buckets[i].start, (unsigned long long)r->buckets[i].count,
                      r->buckets[i].sum, (unsigned long long)r->buckets[i].negative);
    join(arg, b);
    return 0;
}

static void test_feedback_stats_round_trip(void **state)
{
    struct fixture *f = *state;
    struct tr_feedback_bucket b[3] = {{60, 2, 3, 1}, {0, 0, 0, 0}, {1800000060, 5, -1, 3}};
    struct tr_feedback_stats_rec st = {.pipeline = "rag", .count = 7, .sum = 2, .negative = 4,
                                       .labels_queued = 3, .labels_labelled = 1,
                                       .bucket_seconds = 60, .n_buckets = 3, .buckets = b};
    struct tr_feedback_stats_rec other = {.pipeline = "a", .count = 1, .sum = 5,
                                          .bucket_seconds = 60};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_feedback_stats(f->st, &st), 0);
    assert_int_equal(tr_state_put_feedback_stats(f->st, &other), 0);
    commit_ok(f->st);
    struct joined j = {0};
    assert_int_equal(tr_state_get_feedback_stats(f->st, "rag", on_stats, &j), 0);
    assert_string_equal(j.text, "rag:7:2.0:4:3:1:60:3:[60 2 3.0 1]:[0 0 0.0 0]:"
                                "[1800000060 5 -1.0 3]");
    /* Replaced, not accumulated. */
    st.count = 8;
    st.n_buckets = 1;
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_feedback_stats(f->st, &st), 0);
    commit_ok(f->st);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_feedback_stats(f->st, on_stats, &j), 0);
    assert_string_equal(j.text, "a:1:5.0:0:0:0:60:0,rag:8:2.0:4:3:1:60:1:[60 2 3.0 1]");
    j = (struct joined){0};
    assert_int_equal(tr_state_get_feedback_stats(f->st, "nope", on_stats, &j), TR_ENOENT);
}

static int on_label(const struct tr_label_rec *r, void *arg)
{
    char b[512];
    snprintf(b, sizeof(b), "%s:%s:%.2f:%s:%s:%s", r->id, r->state, r->uncertainty, r->item_json,
             r->label_json ? r->label_json : "-", r->user ? r->user : "-");
    join(arg, b);
    return 0;
}

static void test_labels_order_and_state(void **state)
{
    struct fixture *f = *state;
    struct tr_label_rec l[] = {
        {.id = "l1", .pipeline = "rag", .run_id = "r1", .task = "t", .item_json = "{\"q\":1}",
         .uncertainty = 0.2, .state = "queued", .created_at = 1},
        {.id = "l2", .pipeline = "rag", .item_json = "\"text\"", .uncertainty = 0.9,
         .state = "queued", .created_at = 2},
        {.id = "l3", .pipeline = "other", .item_json = "[1,2]", .uncertainty = 0.5,
         .state = "queued", .created_at = 3},
    };
    assert_int_equal(tr_state_begin(f->st), 0);
    for (size_t i = 0; i < TR_ARRAY_LEN(l); i++)
        assert_int_equal(tr_state_put_label(f->st, &l[i]), 0);
    struct tr_label_rec bad = l[0];
    bad.state = "done";
    assert_int_equal(tr_state_put_label(f->st, &bad), TR_EINVAL);
    bad = l[0];
    bad.item_json = "{not json";
    assert_int_equal(tr_state_put_label(f->st, &bad), TR_EINVAL);
    commit_ok(f->st);
    struct joined j = {0};
    assert_int_equal(tr_state_list_labels(f->st, NULL, "queued", 0, on_label, &j), 0);
    assert_string_equal(j.text, "l2:queued:0.90:\"text\":-:-,l3:queued:0.50:[1,2]:-:-,"
                                "l1:queued:0.20:{\"q\":1}:-:-");
    /* Labelling moves it out of the queue. */
    struct tr_label_rec done = l[1];
    done.state = "labelled";
    done.label_json = "{\"relevant\":true}";
    done.user = "bob";
    done.labelled_at = 5;
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_label(f->st, &done), 0);
    commit_ok(f->st);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_labels(f->st, "rag", "queued", 0, on_label, &j), 0);
    assert_string_equal(j.text, "l1:queued:0.20:{\"q\":1}:-:-");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_labels(f->st, "rag", NULL, 1, on_label, &j), 0);
    assert_string_equal(j.text, "l2:labelled:0.90:\"text\":{\"relevant\":true}:bob");
    j = (struct joined){0};
    assert_int_equal(tr_state_get_label(f->st, "l2", on_label, &j), 0);
    assert_int_equal(j.n, 1);
    assert_int_equal(tr_state_get_label(f->st, "zz", on_label, &j), TR_ENOENT);
}

static int on_model(const struct tr_model_rec *r, void *arg)
{
    char b[128];
    snprintf(b, sizeof(b), "%s@%u", r->name, (unsigned)r->latest);
    join(arg, b);
    return 0;
}

static int on_version(const struct tr_model_version_rec *r, void *arg)
{
    char b[512];
    snprintf(b, sizeof(b), "%s/%u:%s:%s:%s:%s:%s:%s:%u", r->name, (unsigned)r->version,
             r->artifact_json ? r->artifact_json : "-", r->metrics_json ? r->metrics_json : "-",
             r->tags_json ? r->tags_json : "-", r->run_id ? r->run_id : "-",
             r->data_digest ? r->data_digest : "-", r->pipeline ? r->pipeline : "-",
             (unsigned)r->parent);
    join(arg, b);
    return 0;
}

static int on_alias(const struct tr_model_alias_rec *r, void *arg)
{
    char b[256];
    snprintf(b, sizeof(b), "%s=%u:%s:%s", r->alias, (unsigned)r->version, r->user ? r->user : "-",
             r->reason ? r->reason : "-");
    join(arg, b);
    return 0;
}

static int on_move(const struct tr_alias_move_rec *r, void *arg)
{
    char b[256];
    snprintf(b, sizeof(b), "%llu:%s:%u>%u:%s", (unsigned long long)r->seq, r->alias,
             (unsigned)r->from, (unsigned)r->to, r->reason ? r->reason : "-");
    join(arg, b);
    return 0;
}

static void test_model_registry(void **state)
{
    struct fixture *f = *state;
    struct tr_model_version_rec v1 = {.name = "reranker", .version = 1,
                                      .artifact_json = "\"s3://m/1\"",
                                      .metrics_json = "{\"mrr\":0.5}", .run_id = "r1",
                                      .data_digest = "sha256:aa", .pipeline = "train@1"};
    struct tr_model_version_rec v2 = {.name = "reranker", .version = 2,
                                      .artifact_json = "{\"w\":[0.5,1]}",
                                      .metrics_json = "{\"mrr\":0.6}", .tags_json = "{\"k\":\"v\"}",
                                      .run_id = "r2", .parent = 1};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_model(f->st, &(struct tr_model_rec){.name = "reranker",
                                                                       .latest = 2}), 0);
    assert_int_equal(tr_state_put_model(f->st, &(struct tr_model_rec){.name = "a", .latest = 0}),
                     0);
    assert_int_equal(tr_state_put_model_version(f->st, &v2), 0);
    assert_int_equal(tr_state_put_model_version(f->st, &v1), 0);
    v1.version = 0;
    assert_int_equal(tr_state_put_model_version(f->st, &v1), TR_EINVAL);
    struct tr_model_alias_rec prod = {.name = "reranker", .alias = "production", .version = 2,
                                      .user = "ann", .reason = "better", .at = 3};
    struct tr_model_alias_rec chal = {.name = "reranker", .alias = "challenger", .version = 1};
    assert_int_equal(tr_state_put_model_alias(f->st, &prod), 0);
    assert_int_equal(tr_state_put_model_alias(f->st, &chal), 0);
    struct tr_alias_move_rec m1 = {.name = "reranker", .seq = 1, .alias = "production", .to = 1};
    struct tr_alias_move_rec m2 = {.name = "reranker", .seq = 2, .alias = "production",
                                   .from = 1, .to = 2, .reason = "better"};
    assert_int_equal(tr_state_put_alias_move(f->st, &m2), 0);
    assert_int_equal(tr_state_put_alias_move(f->st, &m1), 0);
    commit_ok(f->st);

    struct joined j = {0};
    assert_int_equal(tr_state_list_models(f->st, on_model, &j), 0);
    assert_string_equal(j.text, "a@0,reranker@2");
    j = (struct joined){0};
    assert_int_equal(tr_state_get_model(f->st, "reranker", on_model, &j), 0);
    assert_string_equal(j.text, "reranker@2");
    assert_int_equal(tr_state_get_model(f->st, "b", on_model, &j), TR_ENOENT);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_model_versions(f->st, "reranker", on_version, &j), 0);
    assert_string_equal(j.text, "reranker/1:\"s3://m/1\":{\"mrr\":0.5}:-:r1:sha256:aa:train@1:0,"
                                "reranker/2:{\"w\":[0.5,1]}:{\"mrr\":0.6}:{\"k\":\"v\"}:r2:-:-:1");
    j = (struct joined){0};
    assert_int_equal(tr_state_get_model_version(f->st, "reranker", 2, on_version, &j), 0);
    assert_int_equal(j.n, 1);
    assert_int_equal(tr_state_get_model_version(f->st, "reranker", 3, on_version, &j), TR_ENOENT);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_model_aliases(f->st, "reranker", on_alias, &j), 0);
    assert_string_equal(j.text, "challenger=1:-:-,production=2:ann:better");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_alias_moves(f->st, "reranker", on_move, &j), 0);
    assert_string_equal(j.text, "1:production:0>1:-,2:production:1>2:better");

    /* A removed alias (version 0) is neither listed nor found. */
    chal.version = 0;
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_model_alias(f->st, &chal), 0);
    commit_ok(f->st);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_model_aliases(f->st, "reranker", on_alias, &j), 0);
    assert_string_equal(j.text, "production=2:ann:better");
    assert_int_equal(tr_state_get_model_alias(f->st, "reranker", "challenger", on_alias, &j),
                     TR_ENOENT);
    j = (struct joined){0};
    assert_int_equal(tr_state_get_model_alias(f->st, "reranker", "production", on_alias, &j), 0);
    assert_string_equal(j.text, "production=2:ann:better");
}

static int on_firing(const struct tr_firing_rec *r, void *arg)
{
    char b[256];
    snprintf(b, sizeof(b), "%s/%s@%.1f:%s:%s", r->pipeline, r->trigger, r->fired_at,
             r->run_id ? r->run_id : "-", r->stats_json ? r->stats_json : "-");
    join(arg, b);
    return 0;
}

/* A firing and the run it starts go into one batch: both or neither. */
static void test_firing_with_its_run(void **state)
{
    struct fixture *f = *state;
    struct tr_run_rec run = run_rec("r-fire", "queued", 100);
    struct tr_firing_rec fire = {.pipeline = "rag", .trigger = "retrain", .fired_at = 100,
                                 .run_id = "r-fire", .stats_json = "{\"count\":20}"};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_firing(f->st, &fire), 0);
    assert_int_equal(tr_state_put_run(f->st, &run), 0);
    tr_state_rollback(f->st);
    struct joined j = {0};
    assert_int_equal(tr_state_list_firings(f->st, "rag", NULL, 0, on_firing, &j), 0);
    assert_int_equal(j.n, 0);

    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_firing(f->st, &fire), 0);
    assert_int_equal(tr_state_put_run(f->st, &run), 0);
    struct tr_firing_rec later = {.pipeline = "rag", .trigger = "retrain", .fired_at = 200.5};
    struct tr_firing_rec nightly = {.pipeline = "rag", .trigger = "nightly", .fired_at = 150};
    assert_int_equal(tr_state_put_firing(f->st, &later), 0);
    assert_int_equal(tr_state_put_firing(f->st, &nightly), 0);
    fire.fired_at = 0;
    assert_int_equal(tr_state_put_firing(f->st, &fire), TR_EINVAL);
    commit_ok(f->st);
    j = (struct joined){0};
    assert_int_equal(tr_state_list_firings(f->st, "rag", "retrain", 0, on_firing, &j), 0);
    assert_string_equal(j.text, "rag/retrain@200.5:-:-,rag/retrain@100.0:r-fire:{\"count\":20}");
    j = (struct joined){0};
    assert_int_equal(tr_state_list_firings(f->st, "rag", NULL, 2, on_firing, &j), 0);
    assert_string_equal(j.text, "rag/retrain@200.5:-:-,rag/nightly@150.0:-:-");
    struct seen s = {0};
    assert_int_equal(tr_state_get_run(f->st, "r-fire", on_run, &s), 0);
}

static int on_trigger(const struct tr_trigger_rec *r, void *arg)
{
    char b[512];
    snprintf(b, sizeof(b), "%s/%s=%s", r->pipeline, r->trigger, r->json);
    join(arg, b);
    return 0;
}

/* A trigger's state is replaced in place and listed by pipeline, then name. */
static void test_trigger_state(void **state)
{
    struct fixture *f = *state;
    struct tr_trigger_rec a = {.pipeline = "rag", .trigger = "retrain", .json = "{\"last\":0}"};
    struct tr_trigger_rec b = {.pipeline = "rag", .trigger = "nightly", .json = "{\"last\":-1}"};
    struct tr_trigger_rec c = {.pipeline = "eval", .trigger = "x", .json = "{}"};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_trigger(f->st, &a), 0);
    assert_int_equal(tr_state_put_trigger(f->st, &b), 0);
    assert_int_equal(tr_state_put_trigger(f->st, &c), 0);
    struct tr_trigger_rec bad = {.pipeline = "rag", .trigger = "t", .json = "[1]"};
    assert_int_equal(tr_state_put_trigger(f->st, &bad), TR_EINVAL);
    commit_ok(f->st);
    a.json = "{\"last\":1,\"fired_at\":5.5}";
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_trigger(f->st, &a), 0);
    commit_ok(f->st);
    struct joined j = {0};
    assert_int_equal(tr_state_list_triggers(f->st, "rag", on_trigger, &j), 0);
    assert_int_equal(j.n, 2);
    assert_non_null(strstr(j.text, "rag/retrain="));
    assert_non_null(strstr(j.text, "\"fired_at\":5.5"));
    assert_non_null(strstr(j.text, "rag/nightly="));
    j = (struct joined){0};
    assert_int_equal(tr_state_list_triggers(f->st, NULL, on_trigger, &j), 0);
    assert_int_equal(j.n, 3);
}

static int on_budget(const struct tr_budget_rec *r, void *arg)
{
    char b[512];
    snprintf(b, sizeof(b), "%s=%s", r->tenant, r->json);
    join(arg, b);
    return 0;
}

/* A tenant's budget row is replaced in place and listed by tenant. */
static void test_budget_rows(void **state)
{
    struct fixture *f = *state;
    struct tr_budget_rec a = {.tenant = "default", .json = "{\"spent_tokens\":3}"};
    struct tr_budget_rec b = {.tenant = "research", .json = "{\"spent_tokens\":0}"};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_budget(f->st, &a), 0);
    assert_int_equal(tr_state_put_budget(f->st, &b), 0);
    struct tr_budget_rec bad = {.tenant = "x", .json = "[1]"};
    assert_int_equal(tr_state_put_budget(f->st, &bad), TR_EINVAL);
    bad = (struct tr_budget_rec){.tenant = "", .json = "{}"};
    assert_int_equal(tr_state_put_budget(f->st, &bad), TR_EINVAL);
    commit_ok(f->st);
    a.json = "{\"spent_tokens\":9.5}";
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_budget(f->st, &a), 0);
    commit_ok(f->st);
    struct joined j = {0};
    assert_int_equal(tr_state_list_budgets(f->st, on_budget, &j), 0);
    assert_int_equal(j.n, 2);
    assert_non_null(strstr(j.text, "default="));
    assert_non_null(strstr(j.text, "\"spent_tokens\":9.5"));
    assert_non_null(strstr(j.text, "research="));
    assert_null(strstr(j.text, "\"spent_tokens\":3"));
}

/* The records survive a close and reopen (a restart). */
static void test_loop_records_persist(void **state)
{
    struct fixture *f = *state;
    if (!f->be->persistent)
        skip();
    struct tr_feedback_rec fb = {.id = "fb-1", .run_id = "r", .pipeline = "p", .score = 3};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_feedback(f->st, &fb), 0);
    commit_ok(f->st);
    reopen(f, "");
    struct joined j = {0};
    assert_int_equal(tr_state_list_feedback(f->st, "p", NULL, 0, on_fb, &j), 0);
    assert_string_equal(j.text, "fb-1");
}

/* ===================================================================== */

#define LOOP_CONTRACT(be)                                                                          \
    cmocka_unit_test_prestate_setup_teardown(test_feedback_round_trip_and_order, setup, teardown,  \
                                             &be),                                                 \
        cmocka_unit_test_prestate_setup_teardown(test_feedback_stats_round_trip, setup, teardown,  \
                                                 &be),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_labels_order_and_state, setup, teardown,     \
                                                 &be),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_model_registry, setup, teardown, &be),       \
        cmocka_unit_test_prestate_setup_teardown(test_trigger_state, setup, teardown, &be),        \
        cmocka_unit_test_prestate_setup_teardown(test_firing_with_its_run, setup, teardown, &be),  \
        cmocka_unit_test_prestate_setup_teardown(test_loop_records_persist, setup, teardown, &be), \
        cmocka_unit_test_prestate_setup_teardown(test_budget_rows, setup, teardown, &be)

#define CONTRACT(be)                                                                               \
    cmocka_unit_test_prestate_setup_teardown(test_pipeline_round_trip, setup, teardown, &be),      \
        cmocka_unit_test_prestate_setup_teardown(test_pipeline_replace_and_latest, setup,          \
                                                 teardown, &be),                                   \
        cmocka_unit_test_prestate_setup_teardown(test_list_pipelines_order, setup, teardown, &be), \
        cmocka_unit_test_prestate_setup_teardown(test_source_round_trip, setup, teardown, &be),    \
        cmocka_unit_test_prestate_setup_teardown(test_run_round_trip, setup, teardown, &be),       \
        cmocka_unit_test_prestate_setup_teardown(test_list_runs_order_and_filters, setup,          \
                                                 teardown, &be),                                   \
        cmocka_unit_test_prestate_setup_teardown(test_task_round_trip, setup, teardown, &be),      \
        cmocka_unit_test_prestate_setup_teardown(test_list_tasks_order, setup, teardown, &be),     \
        cmocka_unit_test_prestate_setup_teardown(test_cache_round_trip, setup, teardown, &be),     \
        cmocka_unit_test_prestate_setup_teardown(test_batch_rules, setup, teardown, &be),          \
        cmocka_unit_test_prestate_setup_teardown(test_rollback_leaves_nothing, setup, teardown,    \
                                                 &be),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_nested_reads, setup, teardown, &be),         \
        cmocka_unit_test_prestate_setup_teardown(test_epoch, setup, teardown, &be),                \
        cmocka_unit_test_prestate_setup_teardown(test_restart_resumes_unfinished, setup, teardown, \
                                                 &be),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_large_batch, setup, teardown, &be),          \
        cmocka_unit_test_prestate_setup_teardown(test_alloc_failure, setup, teardown, &be),        \
        LOOP_CONTRACT(be)

int main(void)
{
    const struct CMUnitTest front[] = {cmocka_unit_test(test_bad_urls)};
    const struct CMUnitTest memory[] = {CONTRACT(backends[0])};
    const struct CMUnitTest file[] = {CONTRACT(backends[1])};
    const struct CMUnitTest etcd[] = {CONTRACT(backends[2])};
    int failed = 0;
    failed += cmocka_run_group_tests_name("state urls", front, NULL, NULL);
    failed += cmocka_run_group_tests_name("contract sqlite::memory:", memory, NULL, NULL);
    failed += cmocka_run_group_tests_name("contract sqlite:FILE", file, NULL, NULL);
    failed += cmocka_run_group_tests_name("contract etcd://", etcd, NULL, NULL);
    return failed ? 1 : 0;
}
