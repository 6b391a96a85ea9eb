/*
 * test_state_runctl.c - the run control's records on every backend
 * (lib/state/state_runctl.c): deleting a run with its tasks, listing the
 * finished runs to purge oldest first, idempotency keys and retry links.
 * The fixture is test_state.c's (a SQLite file, the etcd member of the
 * ctest fixture etcd.start under a prefix of its own).
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

static void commit_ok(struct tr_state *st)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_commit(st, &err);
    if (rc != 0)
        fail_msg("commit failed: %d %s", rc, err.msg);
}

static void put_run(struct tr_state *st, const char *id, const char *state, double created,
                    double finished)
{
    struct tr_run_rec r = {.id = id, .pipeline = "p", .version = "1", .digest = "d",
                           .state = state, .created_at = created, .finished_at = finished};
    assert_int_equal(tr_state_put_run(st, &r), 0);
    struct tr_task_rec t = {.run_id = id, .name = "a", .state = "succeeded", .output = "\x01",
                            .output_len = 1, .logs = "a line"};
    assert_int_equal(tr_state_put_task(st, &t), 0);
    t.name = "b";
    t.index = 2;
    assert_int_equal(tr_state_put_task(st, &t), 0);
}

static int count_cb(const struct tr_task_rec *rec, void *arg)
{
    (void)rec;
    (*(int *)arg)++;
    return 0;
}

static int noop_run(const struct tr_run_rec *rec, void *arg)
{
    (void)rec;
    (void)arg;
    return 0;
}

static void test_delete_run(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(tr_state_begin(f->st), 0);
    put_run(f->st, "r-1", "failed", 10, 11);
    put_run(f->st, "r-10", "succeeded", 12, 13); /* shares r-1's prefix in etcd keys */
    commit_ok(f->st);
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_delete_run(f->st, "r-1"), 0);
    assert_int_equal(tr_state_delete_run(f->st, "r-nope"), 0); /* no error */
    commit_ok(f->st);
    assert_int_equal(tr_state_get_run(f->st, "r-1", noop_run, NULL), TR_ENOENT);
    int n = 0;
    assert_int_equal(tr_state_list_tasks(f->st, "r-1", count_cb, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(tr_state_get_run(f->st, "r-10", noop_run, NULL), 0);
    assert_int_equal(tr_state_list_tasks(f->st, "r-10", count_cb, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(tr_state_delete_run(f->st, "r-10"), TR_EINVAL); /* outside a batch */
    assert_int_equal(tr_state_delete_run(f->st, ""), TR_EINVAL);
}

struct ids
{
    char text[256];
};

static int join_run(const struct tr_run_rec *rec, void *arg)
{
    struct ids *j = arg;
    size_t n = strlen(j->text);
    snprintf(j->text + n, sizeof(j->text) - n, "%s%s", n ? "," : "", rec->id);
    return 0;
}

static void test_list_finished(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(tr_state_begin(f->st), 0);
    put_run(f->st, "r-c", "cancelled", 30, 31);
    put_run(f->st, "r-a", "succeeded", 10, 11);
    put_run(f->st, "r-b", "failed", 20, 21);
    put_run(f->st, "r-run", "running", 5, 0);   /* old but unfinished */
    put_run(f->st, "r-new", "succeeded", 90, 91); /* too young */
    put_run(f->st, "r-late", "succeeded", 40, 95); /* created before, finished after */
    commit_ok(f->st);
    struct ids j = {""};
    assert_int_equal(tr_state_list_finished_runs(f->st, 50, 0, join_run, &j), 0);
    assert_string_equal(j.text, "r-a,r-b,r-c");
    j.text[0] = '\0';
    assert_int_equal(tr_state_list_finished_runs(f->st, 50, 2, join_run, &j), 0);
    assert_string_equal(j.text, "r-a,r-b");
    j.text[0] = '\0';
    assert_int_equal(tr_state_list_finished_runs(f->st, 5, 0, join_run, &j), 0);
    assert_string_equal(j.text, "");
}

static int idem_cb(const struct tr_idem_rec *rec, void *arg)
{
    struct ids *j = arg;
    size_t n = strlen(j->text);
    snprintf(j->text + n, sizeof(j->text) - n, "%s%s=%s/%s", n ? "," : "", rec->key, rec->run_id,
             rec->digest);
    return 0;
}

static int link_cb(const struct tr_run_link_rec *rec, void *arg)
{
    snprintf(arg, 64, "%s<-%s", rec->retry_of, rec->run_id);
    return 0;
}

static void test_idem_and_links(void **state)
{
    struct fixture *f = *state;
    struct tr_idem_rec k1 = {.key = "key/1 with spaces", .run_id = "r-1", .digest = "d1",
                             .created_at = 200};
    struct tr_idem_rec k2 = {.key = "k2", .run_id = "r-2", .digest = "d2", .created_at = 100};
    struct tr_run_link_rec l = {.run_id = "r-2", .retry_of = "r-1", .created_at = 100};
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_put_idem(f->st, &k1), 0);
    assert_int_equal(tr_state_put_idem(f->st, &k2), 0);
    assert_int_equal(tr_state_put_run_link(f->st, &l), 0);
    struct tr_idem_rec bad = {.key = "", .run_id = "r", .digest = "d", .created_at = 1};
    assert_int_equal(tr_state_put_idem(f->st, &bad), TR_EINVAL);
    commit_ok(f->st);
    struct ids j = {""};
    assert_int_equal(tr_state_get_idem(f->st, "key/1 with spaces", idem_cb, &j), 0);
    assert_string_equal(j.text, "key/1 with spaces=r-1/d1");
    assert_int_equal(tr_state_get_idem(f->st, "nope", idem_cb, &j), TR_ENOENT);
    j.text[0] = '\0';
    assert_int_equal(tr_state_list_idem(f->st, 0, idem_cb, &j), 0);
    assert_string_equal(j.text, "k2=r-2/d2,key/1 with spaces=r-1/d1"); /* oldest first */
    char link[64] = "";
    assert_int_equal(tr_state_get_run_link(f->st, "r-2", link_cb, link), 0);
    assert_string_equal(link, "r-1<-r-2");
    assert_int_equal(tr_state_begin(f->st), 0);
    assert_int_equal(tr_state_delete_idem(f->st, "k2"), 0);
    assert_int_equal(tr_state_delete_run_link(f->st, "r-2"), 0);
    commit_ok(f->st);
    j.text[0] = '\0';
    assert_int_equal(tr_state_list_idem(f->st, 0, idem_cb, &j), 0);
    assert_string_equal(j.text, "key/1 with spaces=r-1/d1");
    assert_int_equal(tr_state_get_run_link(f->st, "r-2", link_cb, link), TR_ENOENT);
}

#define RUNCTL(be)                                                                                 \
    cmocka_unit_test_prestate_setup_teardown(test_delete_run, setup, teardown, &be),               \
        cmocka_unit_test_prestate_setup_teardown(test_list_finished, setup, teardown, &be),        \
        cmocka_unit_test_prestate_setup_teardown(test_idem_and_links, setup, teardown, &be)

int main(void)
{
    const struct CMUnitTest file[] = {RUNCTL(backends[0])};
    const struct CMUnitTest etcd[] = {RUNCTL(backends[1])};
    int failed = 0;
    failed += cmocka_run_group_tests_name("run control sqlite:FILE", file, NULL, NULL);
    failed += cmocka_run_group_tests_name("run control etcd://", etcd, NULL, NULL);
    return failed ? 1 : 0;
}
