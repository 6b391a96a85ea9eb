/*
 * test_state_etcd.c - what only the etcd state backend can be asked.
 *
 * The contract itself runs in test_state.c. Here: how a batch is split into
 * Txns, the refusal of a record over etcd's request limit, an unreachable
 * or restarted etcd, the epoch's compare-and-swap under two clients racing,
 * URL options, and a throughput figure (printed, never asserted). Uses the
 * etcd client's fixture (tests/unit/etcd_fixture.h): the member ctest's
 * etcd.start started, or one of the test's own for the restart; each test
 * writes under the fixture's fresh per-test prefix.
 */
#include "tests/unit/etcd_fixture.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/state/state_etcd_int.h"

/* ===================================================================== */
/* Fixture helpers                                                       */
/* ===================================================================== */

/* "etcd://<endpoint>?prefix=<this test's prefix>state<opts>" */
static void state_url(struct fx *f, char *out, size_t size, const char *endpoint,
                      const char *opts)
{
    snprintf(out, size, "etcd://%s?prefix=%sstate%s", endpoint, f->prefix, opts ? opts : "");
}

static struct tr_state *open_state(struct fx *f, const char *endpoint, const char *opts)
{
    char url[512];
    state_url(f, url, sizeof(url), endpoint, opts);
    struct tr_error err;
    tr_error_init(&err);
    struct tr_state *st = NULL;
    int rc = tr_state_open(url, &st, &err);
    if (rc != 0)
        fail_msg("cannot open '%s': %s", url, err.msg);
    return st;
}

static int commit(struct tr_state *st, struct tr_error *err)
{
    tr_error_init(err);
    return tr_state_commit(st, err);
}

static void commit_ok(struct tr_state *st)
{
    struct tr_error err;
    int rc = commit(st, &err);
    if (rc != 0)
        fail_msg("commit failed: %d %s", rc, err.msg);
}

static uint64_t etcd_calls(struct tr_state *st)
{
    struct tr_etcd_stats s;
    tr_etcd_get_stats(((struct tr_state_etcd *)st)->e, &s);
    return s.calls;
}

static struct tr_task_rec task(const char *run, uint32_t index, const void *out, size_t len)
{
    return (struct tr_task_rec){.run_id = run,
                                .name = "map",
                                .index = index,
                                .state = "succeeded",
                                .attempts = 1,
                                .worker = "w-1",
                                .output = out,
                                .output_len = len};
}

struct count
{
    size_t n;
    uint32_t last_index;
    bool ordered;
    bool outputs_ok;
};

static int count_task(const struct tr_task_rec *r, void *arg)
{
    struct count *c = arg;
    if (c->n > 0 && r->index <= c->last_index)
        c->ordered = false;
    if (r->output_len != 8 || memcmp(r->output, &r->index, sizeof(r->index)) != 0)
        c->outputs_ok = false;
    c->last_index = r->index;
    c->n++;
    return 0;
}

/* ===================================================================== */
/* Batches                                                               */
/* ===================================================================== */

/* 1,000 task records: 8 Txns of at most 128 puts, every one readable after. */
static void test_batch_split_into_txns(void **state)
{
    struct fx *f = *state;
    struct tr_state *st = open_state(f, g_endpoint, NULL);
    assert_int_equal(tr_state_begin(st), 0);
    for (uint32_t i = 1; i <= 1000; i++) {
        uint32_t out[2] = {i, 0};
        struct tr_task_rec t = task("r-1000", i, out, sizeof(out));
        assert_int_equal(tr_state_put_task(st, &t), 0);
    }
    uint64_t before = etcd_calls(st);
    commit_ok(st);
    assert_int_equal(etcd_calls(st) - before, 8); /* ceil(1000 / 128) */

    struct count c = {.ordered = true, .outputs_ok = true};
    assert_int_equal(tr_state_list_tasks(st, "r-1000", count_task, &c), 0);
    assert_int_equal(c.n, 1000);
    assert_true(c.ordered);
    assert_true(c.outputs_ok);

    /* A smaller request limit splits by bytes instead: 1,000 records of ~100
     * bytes in requests of at most 8 KiB. */
    tr_state_close(st);
    st = open_state(f, g_endpoint, "&max_bytes=8192&max_ops=1000");
    assert_int_equal(tr_state_begin(st), 0);
    for (uint32_t i = 1; i <= 1000; i++) {
        uint32_t out[2] = {i, 0};
        struct tr_task_rec t = task("r-bytes", i, out, sizeof(out));
        assert_int_equal(tr_state_put_task(st, &t), 0);
    }
    before = etcd_calls(st);
    commit_ok(st);
    assert_true(etcd_calls(st) - before >= 12);
    memset(&c, 0, sizeof(c));
    c.ordered = c.outputs_ok = true;
    assert_int_equal(tr_state_list_tasks(st, "r-bytes", count_task, &c), 0);
    assert_int_equal(c.n, 1000);
    assert_true(c.ordered && c.outputs_ok);
    tr_state_close(st);
}

/* A batch that fits one Txn is one (atomic) Txn; a larger one writes its run
 * records in a second phase, after the task records they describe. */
static void test_batch_phases(void **state)
{
    struct fx *f = *state;
    struct tr_state *st = open_state(f, g_endpoint, NULL);
    struct tr_run_rec run = {.id = "r-ph", .pipeline = "p", .version = "1", .digest = "d",
                             .state = "succeeded", .created_at = 1};
    uint32_t out[2] = {1, 0};
    assert_int_equal(tr_state_begin(st), 0);
    for (uint32_t i = 1; i <= 10; i++) {
        struct tr_task_rec t = task("r-ph", i, out, sizeof(out));
        assert_int_equal(tr_state_put_task(st, &t), 0);
    }
    assert_int_equal(tr_state_put_run(st, &run), 0);
    uint64_t before = etcd_calls(st);
    commit_ok(st);
    assert_int_equal(etcd_calls(st) - before, 1);

    assert_int_equal(tr_state_begin(st), 0);
    assert_int_equal(tr_state_put_run(st, &run), 0);
    for (uint32_t i = 1; i <= 200; i++) {
        struct tr_task_rec t = task("r-ph", i, out, sizeof(out));
        assert_int_equal(tr_state_put_task(st, &t), 0);
    }
    before = etcd_calls(st);
    commit_ok(st);
    assert_int_equal(etcd_calls(st) - before, 3); /* 128 + 72 tasks, then the run */
    tr_state_close(st);
}

/* The same key twice in one batch: the last put wins (etcd refuses a key
 * twice in one Txn, so the batch is deduplicated first). */
static void test_batch_same_key_twice(void **state)
{
    struct fx *f = *state;
    struct tr_state *st = open_state(f, g_endpoint, NULL);
    assert_int_equal(tr_state_begin(st), 0);
    uint32_t first[2] = {7, 0}, second[2] = {7, 1};
    struct tr_task_rec a = task("r-dup", 7, first, sizeof(first));
    struct tr_task_rec b = task("r-dup", 7, second, sizeof(second));
    b.attempts = 2;
    assert_int_equal(tr_state_put_task(st, &a), 0);
    assert_int_equal(tr_state_put_task(st, &b), 0);
    assert_int_equal(tr_state_put_source(st, "dg", "one", 3), 0);
    assert_int_equal(tr_state_put_source(st, "dg", "two", 3), 0);
    commit_ok(st);
    struct count c = {.ordered = true, .outputs_ok = true};
    assert_int_equal(tr_state_list_tasks(st, "r-dup", count_task, &c), 0);
    assert_int_equal(c.n, 1);
    char *src = NULL;
    size_t len = 0;
    assert_int_equal(tr_state_get_source(st, "dg", &src, &len), 0);
    assert_string_equal(src, "one");
    tr_free(src);
    tr_state_close(st);
}

/* An output over the request limit is refused at put, with its numbers. */
static void test_output_over_limit(void **state)
{
    struct fx *f = *state;
    struct tr_state *st = open_state(f, g_endpoint, NULL);
    size_t big = TR_ETCD_DEFAULT_MAX_REQUEST_BYTES;
    unsigned char *out = tr_calloc(1, big);
    assert_non_null(out);
    assert_int_equal(tr_state_begin(st), 0);
    struct tr_task_rec t = task("r-big", 1, out, big);
    assert_int_equal(tr_state_put_task(st, &t), TR_E2BIG);
    assert_string_equal(tr_state_etcd_put_error(st),
                        "task output of 1572864 bytes is over etcd's request limit of 1572864 "
                        "bytes; an artifact store is needed for outputs this large");
    /* The batch goes on without it; one just under the limit fits alone. */
    struct tr_task_rec fits = task("r-big", 2, out, big - 1024);
    assert_int_equal(tr_state_put_task(st, &fits), 0);
    assert_int_equal(tr_state_put_cache(st, "k", out, big), TR_E2BIG);
    assert_non_null(strstr(tr_state_etcd_put_error(st), "cached output of 1572864 bytes"));
    commit_ok(st);
    struct count c = {.ordered = true, .outputs_ok = true};
    assert_int_equal(tr_state_list_tasks(st, "r-big", count_task, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.last_index, 2);
    tr_free(out);
    tr_state_close(st);
}

/* ===================================================================== */
/* Unreachable and restarted etcd                                        */
/* ===================================================================== */

static bool unavailable(int rc)
{
    return rc == TR_EUNAVAIL || rc == TR_ETIMEDOUT;
}

/* Nothing listening: calls fail within about a deadline, never hang. */
static void test_nothing_listening(void **state)
{
    struct fx *f = *state;
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", dead_port());
    struct tr_state *st = open_state(f, ep, "&timeout_ms=300");
    struct tr_error err;
    assert_int_equal(tr_state_begin(st), 0);
    uint32_t out[2] = {1, 0};
    struct tr_task_rec t = task("r-dead", 1, out, sizeof(out));
    assert_int_equal(tr_state_put_task(st, &t), 0);
    uint64_t t0 = tr_mono_ns();
    int rc = commit(st, &err);
    double ms = (double)(tr_mono_ns() - t0) / 1e6;
    if (!unavailable(rc))
        fail_msg("commit against nothing: %d %s", rc, err.msg);
    assert_non_null(strstr(err.msg, "cannot commit state batch of 1 records to etcd"));
    print_message("commit against nothing listening failed in %.0f ms: %s\n", ms, err.msg);
    uint64_t epoch = 0;
    assert_true(unavailable(tr_state_next_epoch(st, &epoch)));
    struct count c = {0};
    assert_true(unavailable(tr_state_list_tasks(st, "r-dead", count_task, &c)));
    tr_state_close(st);

    /* A list of endpoints whose first is dead: the client moves on, and the
     * handle works once it reaches the live one. */
    char eps[256];
    snprintf(eps, sizeof(eps), "%s,%s", ep, g_endpoint);
    st = open_state(f, eps, "&timeout_ms=300");
    rc = TR_EUNAVAIL;
    for (int i = 0; i < 20 && rc != 0; i++) {
        assert_int_equal(tr_state_begin(st), 0);
        assert_int_equal(tr_state_put_task(st, &t), 0);
        rc = commit(st, &err);
        if (rc != 0 && !unavailable(rc))
            fail_msg("commit: %d %s", rc, err.msg);
    }
    assert_int_equal(rc, 0);
    memset(&c, 0, sizeof(c));
    c.ordered = c.outputs_ok = true;
    assert_int_equal(tr_state_list_tasks(st, "r-dead", count_task, &c), 0);
    assert_int_equal(c.n, 1);
    tr_state_close(st);
}

/* A port that accepts connections and never answers (a hung member): calls
 * end at the deadline with TR_ETIMEDOUT (or TR_EUNAVAIL), never hang. */
static void test_silent_member(void **state)
{
    struct fx *f = *state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", ntohs(a.sin_port));
    struct tr_state *st = open_state(f, ep, "&timeout_ms=300");
    assert_int_equal(tr_state_begin(st), 0);
    uint32_t out[2] = {1, 0};
    struct tr_task_rec t = task("r-silent", 1, out, sizeof(out));
    assert_int_equal(tr_state_put_task(st, &t), 0);
    struct tr_error err;
    uint64_t t0 = tr_mono_ns();
    int rc = commit(st, &err);
    double ms = (double)(tr_mono_ns() - t0) / 1e6;
    if (!unavailable(rc))
        fail_msg("commit against a silent member: %d %s", rc, err.msg);
    print_message("commit against a silent member failed in %.0f ms (deadline 300 ms): %s\n", ms,
                  err.msg);
    uint64_t epoch = 0;
    assert_true(unavailable(tr_state_next_epoch(st, &epoch)));
    tr_state_close(st);
    close(s);
}

/* etcd stopped: commits fail with a retryable code; started again on the
 * same ports and data: the same handle commits, and nothing was lost. */
static void test_etcd_restart(void **state)
{
    struct fx *f = *state;
    char dir[512], ep[128];
    scratch_dir(dir, sizeof(dir), "state-restart");
    start_own_member(f, dir, NULL, ep, sizeof(ep));
    struct tr_state *st = open_state(f, ep, "&timeout_ms=500");
    uint64_t e1 = 0;
    assert_int_equal(tr_state_next_epoch(st, &e1), 0);
    assert_int_equal(e1, 1);
    uint32_t out[2] = {1, 0};
    struct tr_task_rec t1 = task("r-rs", 1, out, sizeof(out));
    assert_int_equal(tr_state_begin(st), 0);
    assert_int_equal(tr_state_put_task(st, &t1), 0);
    commit_ok(st);

    assert_int_equal(script(f, "stop-etcd.sh", dir, "--keep", NULL), 0);
    uint32_t out2[2] = {2, 0};
    struct tr_task_rec t2 = task("r-rs", 2, out2, sizeof(out2));
    struct tr_error err;
    assert_int_equal(tr_state_begin(st), 0);
    assert_int_equal(tr_state_put_task(st, &t2), 0);
    int rc = commit(st, &err);
    if (!unavailable(rc))
        fail_msg("commit with etcd stopped: %d %s", rc, err.msg);

    assert_int_equal(script(f, "start-etcd.sh", dir, NULL, NULL), 0);
    /* The scheduler retries the whole batch every 200 ms: so does this. */
    for (int i = 0; i < 50 && rc != 0; i++) {
        assert_int_equal(tr_state_begin(st), 0);
        assert_int_equal(tr_state_put_task(st, &t2), 0);
        rc = commit(st, &err);
        if (rc != 0 && !unavailable(rc))
            fail_msg("commit after restart: %d %s", rc, err.msg);
        if (rc != 0)
            nap(f, 200);
    }
    assert_int_equal(rc, 0);
    struct count c = {.ordered = true, .outputs_ok = true};
    assert_int_equal(tr_state_list_tasks(st, "r-rs", count_task, &c), 0);
    assert_int_equal(c.n, 2);
    assert_true(c.outputs_ok);
    uint64_t e2 = 0;
    assert_int_equal(tr_state_next_epoch(st, &e2), 0);
    assert_int_equal(e2, 2);
    tr_state_close(st);
    stop_own_member(f);
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* cacert, cert and key: TLS with a client certificate, on a member of the
 * test's own; without the certificate the member refuses the backend. */
static void test_tls(void **state)
{
    struct fx *f = *state;
    char dir[400], certs[600], data[600], ep[128];
    scratch_dir(dir, sizeof(dir), "state-tls");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(certs, sizeof(certs), "%s/certs", dir);
    snprintf(data, sizeof(data), "%s/etcd", dir);
    assert_int_equal(script(f, "make-certs.sh", certs, NULL, NULL), 0);
    start_own_member(f, data, certs, ep, sizeof(ep));

    char opts[2200];
    snprintf(opts, sizeof(opts), "&cacert=%s/ca.pem&cert=%s/client.pem&key=%s/client-key.pem",
             certs, certs, certs);
    struct tr_state *st = open_state(f, ep, opts);
    assert_int_equal(tr_state_begin(st), 0);
    uint32_t out[2] = {1, 0};
    struct tr_task_rec t = task("r-tls", 1, out, sizeof(out));
    assert_int_equal(tr_state_put_task(st, &t), 0);
    commit_ok(st);
    struct count c = {.ordered = true, .outputs_ok = true};
    assert_int_equal(tr_state_list_tasks(st, "r-tls", count_task, &c), 0);
    assert_int_equal(c.n, 1);
    tr_state_close(st);

    snprintf(opts, sizeof(opts), "&cacert=%s/ca.pem&timeout_ms=1000", certs);
    st = open_state(f, ep, opts);
    memset(&c, 0, sizeof(c));
    assert_true(unavailable(tr_state_list_tasks(st, "r-tls", count_task, &c)));
    tr_state_close(st);
    stop_own_member(f);
    assert_int_equal(nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

/* ===================================================================== */
/* Epoch                                                                 */
/* ===================================================================== */

#define EPOCHS_PER_CLIENT 25

struct racer
{
    struct tr_state *st;
    uint64_t got[EPOCHS_PER_CLIENT];
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < EPOCHS_PER_CLIENT && r->rc == 0; i++)
        r->rc = tr_state_next_epoch(r->st, &r->got[i]);
    return NULL;
}

/* Two handles, each on its own thread, take epochs at once: every epoch
 * is handed out exactly once. */
static void test_epoch_cas_two_clients(void **state)
{
    struct fx *f = *state;
    struct racer r[2] = {{.st = open_state(f, g_endpoint, NULL)},
                         {.st = open_state(f, g_endpoint, NULL)}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    bool seen[2 * EPOCHS_PER_CLIENT + 1] = {0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].rc, 0);
        for (int j = 0; j < EPOCHS_PER_CLIENT; j++) {
            uint64_t e = r[i].got[j];
            assert_true(e >= 1 && e <= 2 * EPOCHS_PER_CLIENT);
            assert_false(seen[e]);
            seen[e] = true;
            if (j > 0)
                assert_true(e > r[i].got[j - 1]);
        }
        tr_state_close(r[i].st);
    }
}

/* ===================================================================== */
/* URLs                                                                  */
/* ===================================================================== */

static void expect_refused(const char *url, int code, const char *needle)
{
    struct tr_state *st = NULL;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_state_open(url, &st, &err), code);
    assert_null(st);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("open '%s': message '%s' does not name '%s'", url, err.msg, needle);
}

static void test_urls(void **state)
{
    expect_refused("etcd:127.0.0.1:2379", TR_EINVAL, "expected etcd://HOST:PORT");
    expect_refused("etcd://", TR_EINVAL, "expected etcd://HOST:PORT");
    expect_refused("etcd://127.0.0.1:1?nope=1", TR_EINVAL, "unknown etcd option 'nope'");
    expect_refused("etcd://127.0.0.1:1?timeout_ms=0", TR_EINVAL, "'timeout_ms' must be");
    expect_refused("etcd://127.0.0.1:1?max_ops=x", TR_EINVAL, "'max_ops' must be");
    expect_refused("etcd://127.0.0.1:1?prefix", TR_EINVAL, "has no value");
    expect_refused("etcd://127.0.0.1:1?prefix=rel", TR_EINVAL, "must start with '/'");
    expect_refused("etcd://127.0.0.1:1?key=/k.pem", TR_EINVAL, "");
    expect_refused("etcd://127.0.0.1:1?cacert=/nonexistent/ca.pem", TR_ESTATE,
                   "/nonexistent/ca.pem");
    /* The prefix is normalised: trailing slashes dropped, one added. */
    struct tr_state *st = NULL;
    assert_int_equal(tr_state_open("etcd://127.0.0.1:1?prefix=/a/b//", &st, NULL), 0);
    assert_string_equal(((struct tr_state_etcd *)st)->prefix, "/a/b/");
    tr_state_close(st);
    assert_int_equal(tr_state_open("etcd://127.0.0.1:1", &st, NULL), 0);
    assert_string_equal(((struct tr_state_etcd *)st)->prefix, "/trellis/v1/");
    tr_state_close(st);
}

/* ===================================================================== */
/* Throughput (a figure for docs/state.md, never asserted)               */
/* ===================================================================== */

static void measure(struct fx *f, size_t out_len, int batches)
{
    struct tr_state *st = open_state(f, g_endpoint, NULL);
    unsigned char *out = tr_calloc(1, out_len);
    assert_non_null(out);
    char run[32];
    snprintf(run, sizeof(run), "r-perf-%zu", out_len);
    uint64_t t0 = tr_mono_ns();
    for (int b = 0; b < batches; b++) {
        assert_int_equal(tr_state_begin(st), 0);
        for (uint32_t i = 0; i < 1000; i++) {
            struct tr_task_rec t = task(run, (uint32_t)b * 1000 + i + 1, out, out_len);
            assert_int_equal(tr_state_put_task(st, &t), 0);
        }
        commit_ok(st);
    }
    double s = (double)(tr_mono_ns() - t0) / 1e9;
    print_message("etcd state: %d batches of 1000 task records with %zu-byte outputs: "
                  "%.0f records/s (%.1f ms per batch)\n",
                  batches, out_len, batches * 1000 / s, s * 1000 / batches);
    tr_free(out);
    tr_state_close(st);
}

static void test_throughput(void **state)
{
    struct fx *f = *state;
    measure(f, 64, 20);
    measure(f, 1024, 10);
}

/* ===================================================================== */
/* Codec                                                                 */
/* ===================================================================== */

/* Task values: usage rides as a fifteenth field, and values without it decode. */
static void test_task_codec_usage(void **state)
{
    static const unsigned char usage[] = {0x91, 0x81, 0xa5, 'm', 'o', 'd', 'e', 'l', 0xa1, 'm'};
    struct tr_task_rec in = {.run_id = "r-1", .name = "gen", .index = 2, .state = "failed",
                             .attempts = 3, .worker = "w", .started_at = 1, .finished_at = 2,
                             .error = "boom", .usage = usage, .usage_len = sizeof(usage)};
    struct tr_buf b;
    tr_buf_init(&b, 0);
    assert_int_equal(etcd_encode_task(&b, &in), 0);
    assert_int_equal((unsigned char)b.buf[0], 0x9f);
    struct tr_task_rec out;
    char *arena = NULL;
    assert_int_equal(etcd_decode_task(b.buf, b.len, &out, &arena), 0);
    assert_string_equal(out.name, "gen");
    assert_string_equal(out.error, "boom");
    assert_int_equal(out.usage_len, sizeof(usage));
    assert_memory_equal(out.usage, usage, sizeof(usage));
    tr_free(arena);

    /* Without usage the value is the older fourteen-field one. */
    tr_buf_reset(&b);
    in.usage = NULL;
    in.usage_len = 0;
    assert_int_equal(etcd_encode_task(&b, &in), 0);
    assert_int_equal((unsigned char)b.buf[0], 0x9e);
    assert_int_equal(etcd_decode_task(b.buf, b.len, &out, &arena), 0);
    assert_string_equal(out.state, "failed");
    assert_null(out.usage);
    assert_int_equal(out.usage_len, 0);
    tr_free(arena);

    /* Runs likewise: usage_json is a thirteenth field, only when there is one. */
    struct tr_run_rec run = {.id = "r-1", .pipeline = "p", .version = "1", .digest = "dd",
                             .state = "succeeded", .usage_json = "{\"calls\":1}"};
    struct tr_run_rec run_out;
    tr_buf_reset(&b);
    assert_int_equal(etcd_encode_run(&b, &run), 0);
    assert_int_equal((unsigned char)b.buf[0], 0x9d);
    assert_int_equal(etcd_decode_run(b.buf, b.len, &run_out, &arena), 0);
    assert_string_equal(run_out.usage_json, "{\"calls\":1}");
    tr_free(arena);
    tr_buf_reset(&b);
    run.usage_json = NULL;
    assert_int_equal(etcd_encode_run(&b, &run), 0);
    assert_int_equal((unsigned char)b.buf[0], 0x9c);
    assert_int_equal(etcd_decode_run(b.buf, b.len, &run_out, &arena), 0);
    assert_null(run_out.usage_json);
    assert_string_equal(run_out.state, "succeeded");
    tr_free(arena);

    /* Thirteen or sixteen fields are not a task. */
    tr_buf_reset(&b);
    assert_int_equal(etcd_encode_task(&b, &in), 0);
    b.buf[0] = (char)0x9d;
    assert_int_equal(etcd_decode_task(b.buf, b.len, &out, &arena), TR_EPROTO);
    b.buf[0] = (char)0xdc;
    assert_int_equal(etcd_decode_task(b.buf, b.len, &out, &arena), TR_EPROTO);
    tr_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_task_codec_usage),
        cmocka_unit_test_setup_teardown(test_batch_split_into_txns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_phases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_same_key_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_listening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_etcd_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epoch_cas_two_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
    };
    return cmocka_run_group_tests_name("state etcd", tests, group_setup, NULL);
}
