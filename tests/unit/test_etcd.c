/*
 * test_etcd.c - the etcd client (lib/etcd.h) against a real etcd.
 *
 * The member comes from the CTest fixture (tests/etcd/start-etcd.sh, found
 * through $TR_ETCD_DIR/endpoint); the restart and TLS tests start members
 * of their own on other ports with the same scripts, run with uv_spawn so
 * the loop keeps turning. Each test gets a fresh loop, a client, a
 * watchdog that fails the test instead of hanging, and a key prefix made of
 * the PID, a clock reading and the test's name, so that reruns against one
 * member never collide. Callbacks only record (deep copies of the borrowed
 * results); the test body asserts. Teardown frees the client, runs the
 * loop dry and asserts uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/alloc.h"
#include "lib/etcd.h"

/* ===================================================================== */
/* Fixture                                                               */
/* ===================================================================== */

#define WATCHDOG_MS 60000

struct fx
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool timed_out;
    struct tr_etcd *e;
    char prefix[160]; /* "/tr-test/<pid>-<ns>/<test>/" */
};

static char g_endpoint[128];

#define RUN_UNTIL(f, cond)                                    \
    do {                                                      \
        while (!(cond) && !(f)->timed_out)                    \
            uv_run(&(f)->loop, UV_RUN_ONCE);                  \
        if ((f)->timed_out)                                   \
            fail_msg("timed out waiting for: %s", #cond);     \
    } while (0)

static void on_watchdog(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->timed_out = true;
}

static struct tr_etcd *client(struct fx *f, const char *endpoints, uint32_t deadline_ms)
{
    struct tr_etcd_config cfg = {
        .endpoints = endpoints, .deadline_ms = deadline_ms, .backoff_min_ms = 20,
        .backoff_max_ms = 500};
    struct tr_error err;
    struct tr_etcd *e = tr_etcd_new(&f->loop, &cfg, &err);
    if (!e)
        fail_msg("cannot create the client: %s", err.msg);
    return e;
}

static int group_setup(void **state)
{
    (void)state;
    const char *dir = getenv("TR_ETCD_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/endpoint", dir ? dir : ".");
    FILE *fp = fopen(path, "r");
    if (!fp || !fgets(g_endpoint, sizeof(g_endpoint), fp)) {
        fprintf(stderr, "test_etcd: no etcd endpoint in '%s': run through ctest, whose "
                        "fixture etcd.start starts one (tests/etcd/start-etcd.sh)\n", path);
        if (fp)
            fclose(fp);
        return -1;
    }
    fclose(fp);
    g_endpoint[strcspn(g_endpoint, "\r\n")] = 0;
    return 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    f->watchdog.data = f;
    uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    f->e = client(f, g_endpoint, 5000);
    snprintf(f->prefix, sizeof(f->prefix), "/tr-test/%d-%llu/", (int)getpid(),
             (unsigned long long)tr_mono_ns());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tr_etcd_free(f->e);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* "<prefix><name>" into out. */
static const char *key(struct fx *f, char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s%s", f->prefix, name);
    return out;
}
#define K(f, buf, name) key((f), (buf), sizeof(buf), (name))

/* Runs the loop for ms. */
static void on_nap(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void nap(struct fx *f, uint64_t ms)
{
    uv_timer_t t;
    bool done = false;
    uv_timer_init(&f->loop, &t);
    t.data = &done;
    uv_timer_start(&t, on_nap, ms, 0);
    RUN_UNTIL(f, done);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Runs a script of tests/etcd with uv_spawn; returns its exit status. */
struct proc
{
    uv_process_t p;
    bool exited;
    int64_t status;
};

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct proc *pr = p->data;
    pr->exited = true;
    pr->status = sig ? 128 + sig : status;
}

static int script(struct fx *f, const char *name, const char *a1, const char *a2,
                  const char *tls_dir)
{
    const char *src = getenv("TR_SOURCE_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/etcd/%s", src ? src : ".", name);
    char *args[] = {"bash", path, (char *)a1, (char *)a2, NULL};
    extern char **environ;
    char *env[256];
    char tls[600];
    size_t n = 0;
    for (char **ep = environ; *ep && n < TR_ARRAY_LEN(env) - 2; ep++)
        env[n++] = *ep;
    if (tls_dir) {
        snprintf(tls, sizeof(tls), "TR_ETCD_TLS=%s", tls_dir);
        env[n++] = tls;
    }
    env[n] = NULL;
    struct proc pr = {0};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE}, {.flags = UV_INHERIT_FD, .data.fd = 2},
        {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o = {.exit_cb = on_exit_cb, .file = "bash", .args = args, .env = env,
                              .stdio = stdio, .stdio_count = 3};
    pr.p.data = &pr;
    int rc = uv_spawn(&f->loop, &pr.p, &o);
    assert_int_equal(rc, 0);
    RUN_UNTIL(f, pr.exited);
    uv_close((uv_handle_t *)&pr.p, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return (int)pr.status;
}

static void read_line(const char *path, char *out, size_t size)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(out, (int)size, fp));
    fclose(fp);
    out[strcspn(out, "\r\n")] = 0;
}

/* A loopback port with nothing listening (bound, then closed). */
static int dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* ---- deep copies of results --------------------------------------------- */

struct kvc
{
    char *key; /* NUL-terminated copies (binary-safe with the lengths) */
    size_t key_len;
    unsigned char *value;
    size_t value_len;
    int64_t create, mod, version, lease;
};

struct res
{
    int calls; /* times the callback ran */
    int status;
    enum tr_etcd_op_type type;
    int64_t revision;
    struct kvc *kvs;
    size_t n_kvs;
    bool more;
    int64_t count, deleted;
    struct kvc *prev;
    size_t n_prev;
    bool succeeded;
    struct res *subs;
    size_t n_subs;
    int64_t lease_id, ttl, granted_ttl;
    int grpc_status;
    char message[600];
};

static void kv_copy(struct kvc *d, const struct tr_etcd_kv *s)
{
    d->key = calloc(1, s->key_len + 1);
    memcpy(d->key, s->key, s->key_len);
    d->key_len = s->key_len;
    d->value = calloc(1, s->value_len + 1);
    if (s->value_len)
        memcpy(d->value, s->value, s->value_len);
    d->value_len = s->value_len;
    d->create = s->create_revision;
    d->mod = s->mod_revision;
    d->version = s->version;
    d->lease = s->lease;
}

static void res_copy(struct res *d, int status, const struct tr_etcd_result *r)
{
    d->status = status;
    d->type = r->type;
    d->revision = r->revision;
    d->n_kvs = r->n_kvs;
    d->kvs = calloc(r->n_kvs + 1, sizeof(*d->kvs));
    for (size_t i = 0; i < r->n_kvs; i++)
        kv_copy(&d->kvs[i], &r->kvs[i]);
    d->n_prev = r->n_prev_kvs;
    d->prev = calloc(r->n_prev_kvs + 1, sizeof(*d->prev));
    for (size_t i = 0; i < r->n_prev_kvs; i++)
        kv_copy(&d->prev[i], &r->prev_kvs[i]);
    d->more = r->more;
    d->count = r->count;
    d->deleted = r->deleted;
    d->succeeded = r->succeeded;
    d->n_subs = r->n_responses;
    d->subs = calloc(r->n_responses + 1, sizeof(*d->subs));
    for (size_t i = 0; i < r->n_responses; i++)
        res_copy(&d->subs[i], 0, &r->responses[i]);
    d->lease_id = r->lease_id;
    d->ttl = r->ttl;
    d->granted_ttl = r->granted_ttl;
    d->grpc_status = r->grpc_status;
    snprintf(d->message, sizeof(d->message), "%s", r->message ? r->message : "(null)");
}

static void res_release(struct res *r)
{
    for (size_t i = 0; i < r->n_kvs; i++) {
        free(r->kvs[i].key);
        free(r->kvs[i].value);
    }
    for (size_t i = 0; i < r->n_prev; i++) {
        free(r->prev[i].key);
        free(r->prev[i].value);
    }
    for (size_t i = 0; i < r->n_subs; i++)
        res_release(&r->subs[i]);
    free(r->kvs);
    free(r->prev);
    free(r->subs);
}

static void res_free(struct res *r)
{
    if (r) {
        res_release(r);
        free(r);
    }
}

static void on_res(void *arg, int status, const struct tr_etcd_result *r)
{
    struct res *d = arg;
    if (d->calls++ == 0)
        res_copy(d, status, r);
}

/* ---- synchronous wrappers (the loop turns while they wait) -------------- */

static struct res *wait_res(struct fx *f, int rc, struct res *r)
{
    assert_int_equal(rc, 0);
    RUN_UNTIL(f, r->calls > 0);
    return r;
}

static struct res *do_put(struct fx *f, const char *k, const void *v, size_t vl, int64_t lease,
                          unsigned flags)
{
    struct res *r = calloc(1, sizeof(*r));
    struct tr_etcd_op op = {.key = k, .key_len = strlen(k), .value = v, .value_len = vl,
                            .lease = lease, .flags = flags};
    return wait_res(f, tr_etcd_put(f->e, &op, on_res, r), r);
}

/* A put that must succeed; returns its revision. */
static int64_t put_ok(struct fx *f, const char *k, const char *v)
{
    struct res *r = do_put(f, k, v, strlen(v), 0, 0);
    if (r->status != 0)
        fail_msg("put '%s': %s", k, r->message);
    int64_t rev = r->revision;
    res_free(r);
    return rev;
}

static struct res *do_range(struct fx *f, const struct tr_etcd_op *op)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_range(f->e, op, on_res, r), r);
}

static struct res *get(struct fx *f, const char *k)
{
    struct tr_etcd_op op = {.key = k, .key_len = strlen(k)};
    return do_range(f, &op);
}

static struct res *do_txn(struct fx *f, const struct tr_etcd_txn *t)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_txn(f->e, t, on_res, r), r);
}

static int64_t grant(struct fx *f, int64_t ttl)
{
    struct res r = {0};
    wait_res(f, tr_etcd_lease_grant(f->e, ttl, 0, on_res, &r), &r);
    assert_int_equal(r.status, 0);
    assert_true(r.lease_id > 0);
    assert_int_equal(r.ttl, ttl);
    int64_t id = r.lease_id;
    res_release(&r);
    return id;
}

static struct res *lease_ttl(struct fx *f, int64_t id)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_lease_time_to_live(f->e, id, true, on_res, r), r);
}

/* ---- watch recording ---------------------------------------------------- */

#define MAX_EV 64

struct wrec
{
    int calls;
    int finals;           /* calls with a non-zero status */
    int final_status;
    int64_t compact;
    bool created;
    int progress;         /* progress answers */
    int64_t progress_rev;
    int n;                /* events recorded */
    struct
    {
        enum tr_etcd_event_type type;
        struct kvc kv;
        bool has_prev;
        struct kvc prev;
    } ev[MAX_EV];
    struct tr_etcd_watch *w;
};

static void on_watch(void *arg, int status, const struct tr_etcd_watch_result *r)
{
    struct wrec *rec = arg;
    rec->calls++;
    if (status != 0) {
        rec->finals++;
        rec->final_status = status;
        rec->compact = r->compact_revision;
        return;
    }
    if (r->created)
        rec->created = true;
    if (r->progress) {
        rec->progress++;
        rec->progress_rev = r->revision;
    }
    for (size_t i = 0; i < r->n_events && rec->n < MAX_EV; i++, rec->n++) {
        rec->ev[rec->n].type = r->events[i].type;
        kv_copy(&rec->ev[rec->n].kv, &r->events[i].kv);
        rec->ev[rec->n].has_prev = r->events[i].has_prev_kv;
        if (r->events[i].has_prev_kv)
            kv_copy(&rec->ev[rec->n].prev, &r->events[i].prev_kv);
    }
}

static void wrec_release(struct wrec *rec)
{
    for (int i = 0; i < rec->n; i++) {
        free(rec->ev[i].kv.key);
        free(rec->ev[i].kv.value);
        if (rec->ev[i].has_prev) {
            free(rec->ev[i].prev.key);
            free(rec->ev[i].prev.value);
        }
    }
}

static void watch_prefix(struct fx *f, struct wrec *rec, const char *prefix, int64_t from,
                         unsigned flags)
{
    struct tr_etcd_watch_opts o = {.key = prefix, .key_len = strlen(prefix),
                                   .start_revision = from, .flags = TR_ETCD_PREFIX | flags};
    assert_int_equal(tr_etcd_watch(f->e, &o, on_watch, rec, &rec->w), 0);
}

static void cancel_watch(struct fx *f, struct wrec *rec)
{
    tr_etcd_watch_cancel(rec->w);
    RUN_UNTIL(f, rec->finals > 0);
    assert_int_equal(rec->final_status, TR_ECANCELED);
    nap(f, 20);
    assert_int_equal(rec->finals, 1);
}

/* ===================================================================== */
/* KV                                                                    */
/* ===================================================================== */

static void test_prefix_end(void **state)
{
    (void)state;
    uint8_t out[8];
    assert_int_equal(tr_etcd_prefix_end("abc", 3, out), 3);
    assert_memory_equal(out, "abd", 3);
    assert_int_equal(tr_etcd_prefix_end("a\xff\xff", 3, out), 1);
    assert_memory_equal(out, "b", 1);
    assert_int_equal(tr_etcd_prefix_end("\xff\xff", 2, out), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(tr_etcd_prefix_end("", 0, out), 1);
    assert_int_equal(out[0], 0);
}

static void test_put_range_binary(void **state)
{
    struct fx *f = *state;
    char k[256];
    K(f, k, "bin");
    unsigned char v[300];
    for (size_t i = 0; i < sizeof(v); i++)
        v[i] = (unsigned char)(i * 7);
    v[0] = 0;
    v[1] = 0xff;
    struct res *p = do_put(f, k, v, sizeof(v), 0, 0);
    assert_int_equal(p->status, 0);
    assert_true(p->revision > 0);
    assert_int_equal(p->n_prev, 0);
    struct res *g = get(f, k);
    assert_int_equal(g->status, 0);
    assert_int_equal(g->n_kvs, 1);
    assert_int_equal(g->count, 1);
    assert_false(g->more);
    assert_int_equal(g->kvs[0].key_len, strlen(k));
    assert_memory_equal(g->kvs[0].key, k, strlen(k));
    assert_int_equal(g->kvs[0].value_len, sizeof(v));
    assert_memory_equal(g->kvs[0].value, v, sizeof(v));
    assert_int_equal(g->kvs[0].version, 1);
    assert_int_equal(g->kvs[0].create, p->revision);
    assert_int_equal(g->kvs[0].mod, p->revision);
    assert_int_equal(g->kvs[0].lease, 0);
    assert_true(g->revision >= p->revision);

    /* Overwrite with an empty value, asking for the previous one. */
    struct res *p2 = do_put(f, k, NULL, 0, 0, TR_ETCD_PREV_KV);
    assert_int_equal(p2->status, 0);
    assert_int_equal(p2->n_prev, 1);
    assert_memory_equal(p2->prev[0].value, v, sizeof(v));
    struct res *g2 = get(f, k);
    assert_int_equal(g2->kvs[0].value_len, 0);
    assert_int_equal(g2->kvs[0].version, 2);
    assert_int_equal(g2->kvs[0].create, p->revision);
    assert_int_equal(g2->kvs[0].mod, p2->revision);

    /* A key with a NUL byte inside. */
    char bk[300];
    size_t bl = (size_t)snprintf(bk, sizeof(bk), "%sx", f->prefix);
    bk[bl - 1] = 0;
    struct res pr = {0};
    struct tr_etcd_op op = {.key = bk, .key_len = bl, .value = "nul", .value_len = 3};
    wait_res(f, tr_etcd_put(f->e, &op, on_res, &pr), &pr);
    assert_int_equal(pr.status, 0);
    struct res *g3 = do_range(f, &(struct tr_etcd_op){.key = bk, .key_len = bl});
    assert_int_equal(g3->n_kvs, 1);
    assert_int_equal(g3->kvs[0].key_len, bl);
    assert_memory_equal(g3->kvs[0].value, "nul", 3);

    /* A missing key. */
    K(f, k, "absent");
    struct res *g4 = get(f, k);
    assert_int_equal(g4->status, 0);
    assert_int_equal(g4->n_kvs, 0);
    assert_int_equal(g4->count, 0);
    res_release(&pr);
    res_free(p);
    res_free(g);
    res_free(p2);
    res_free(g2);
    res_free(g3);
    res_free(g4);
}

static void test_prefix_range(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, pfx, "p/");
    int64_t first = 0;
    for (int i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof(name), "p/%02d", i);
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        int64_t rev = put_ok(f, K(f, k, name), v);
        if (i == 0)
            first = rev;
    }
    put_ok(f, K(f, k, "p0"), "outside"); /* shares bytes, not the prefix */

    struct tr_etcd_op op = {.key = pfx, .key_len = strlen(pfx), .flags = TR_ETCD_PREFIX,
                            .limit = 3};
    struct res *r = do_range(f, &op);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->n_kvs, 3);
    assert_true(r->more);
    assert_int_equal(r->count, 10);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "p/%02d", i);
        assert_string_equal(r->kvs[i].key, K(f, k, name));
    }

    op.limit = 0;
    op.flags = TR_ETCD_PREFIX | TR_ETCD_COUNT_ONLY;
    struct res *c = do_range(f, &op);
    assert_int_equal(c->status, 0);
    assert_int_equal(c->n_kvs, 0);
    assert_int_equal(c->count, 10);

    op.flags = TR_ETCD_PREFIX | TR_ETCD_KEYS_ONLY;
    struct res *ko = do_range(f, &op);
    assert_int_equal(ko->n_kvs, 10);
    assert_int_equal(ko->kvs[9].value_len, 0);
    assert_string_equal(ko->kvs[9].key, K(f, k, "p/09"));

    /* Reading at the revision of the first put sees one key. */
    op.flags = TR_ETCD_PREFIX;
    op.revision = first;
    struct res *old = do_range(f, &op);
    assert_int_equal(old->status, 0);
    assert_int_equal(old->n_kvs, 1);
    assert_string_equal((char *)old->kvs[0].value, "v0");

    /* An explicit [start, end) range and a serializable read. */
    struct tr_etcd_op between = {.key = K(f, k, "p/03"), .key_len = strlen(k),
                                 .flags = TR_ETCD_SERIALIZABLE};
    char end[256];
    K(f, end, "p/06");
    between.range_end = end;
    between.range_end_len = strlen(end);
    struct res *b = do_range(f, &between);
    assert_int_equal(b->n_kvs, 3);
    assert_string_equal((char *)b->kvs[2].value, "v5");

    res_free(r);
    res_free(c);
    res_free(ko);
    res_free(old);
    res_free(b);
}

static void test_large_range(void **state)
{
    /* Five 1 MiB values: one answer beyond gRPC's default 4 MiB limit. */
    struct fx *f = *state;
    size_t n = 1u << 20;
    char *v = malloc(n);
    memset(v, 'x', n);
    char k[256], pfx[256];
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "big/%d", i);
        v[0] = (char)('0' + i);
        struct res *p = do_put(f, K(f, k, name), v, n, 0, 0);
        assert_int_equal(p->status, 0);
        res_free(p);
    }
    K(f, pfx, "big/");
    struct res *r = do_range(f, &(struct tr_etcd_op){.key = pfx, .key_len = strlen(pfx),
                                                     .flags = TR_ETCD_PREFIX});
    if (r->status != 0)
        fail_msg("large range: %s", r->message);
    assert_int_equal(r->n_kvs, 5);
    assert_int_equal(r->kvs[4].value_len, n);
    assert_int_equal(r->kvs[4].value[0], '4');
    res_free(r);
    free(v);
}

static void test_delete_prefix(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "d/%d", i);
        put_ok(f, K(f, k, name), "x");
    }
    put_ok(f, K(f, k, "keep"), "y");
    K(f, pfx, "d/");
    struct res dr = {0};
    struct tr_etcd_op op = {.key = pfx, .key_len = strlen(pfx),
                            .flags = TR_ETCD_PREFIX | TR_ETCD_PREV_KV};
    wait_res(f, tr_etcd_delete(f->e, &op, on_res, &dr), &dr);
    assert_int_equal(dr.status, 0);
    assert_int_equal(dr.type, TR_ETCD_OP_DELETE);
    assert_int_equal(dr.deleted, 5);
    assert_int_equal(dr.n_prev, 5);
    assert_string_equal(dr.prev[0].key, K(f, k, "d/0"));
    op.flags = TR_ETCD_PREFIX | TR_ETCD_COUNT_ONLY;
    struct res *c = do_range(f, &op);
    assert_int_equal(c->count, 0);
    struct res *g = get(f, K(f, k, "keep"));
    assert_int_equal(g->n_kvs, 1);

    /* Deleting what is not there deletes nothing. */
    struct res d2 = {0};
    wait_res(f, tr_etcd_delete(f->e, &(struct tr_etcd_op){.key = pfx, .key_len = strlen(pfx),
                                                           .flags = TR_ETCD_PREFIX},
                               on_res, &d2),
             &d2);
    assert_int_equal(d2.status, 0);
    assert_int_equal(d2.deleted, 0);
    res_release(&dr);
    res_release(&d2);
    res_free(c);
    res_free(g);
}

static void test_txn(void **state)
{
    struct fx *f = *state;
    char k[256], other[256];
    K(f, k, "cas");
    K(f, other, "other");
    int64_t r1 = put_ok(f, k, "v1");

    /* CAS on mod_revision: succeeds once... */
    struct tr_etcd_compare cmp = {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_MOD,
                                  .result = TR_ETCD_EQUAL, .number = r1};
    struct tr_etcd_op put2 = {.type = TR_ETCD_OP_PUT, .key = k, .key_len = strlen(k),
                              .value = "v2", .value_len = 2};
    struct tr_etcd_op read = {.type = TR_ETCD_OP_RANGE, .key = k, .key_len = strlen(k)};
    struct tr_etcd_txn t = {.compares = &cmp, .n_compares = 1, .success = &put2,
                            .n_success = 1, .failure = &read, .n_failure = 1};
    struct res *a = do_txn(f, &t);
    assert_int_equal(a->status, 0);
    assert_true(a->succeeded);
    assert_int_equal(a->n_subs, 1);
    assert_int_equal(a->subs[0].type, TR_ETCD_OP_PUT);
    assert_true(a->revision > r1);

    /* ...then fails on the stale revision, with the failure branch's read. */
    put2.value = "v3";
    struct res *b = do_txn(f, &t);
    assert_int_equal(b->status, 0);
    assert_false(b->succeeded);
    assert_int_equal(b->n_subs, 1);
    assert_int_equal(b->subs[0].type, TR_ETCD_OP_RANGE);
    assert_int_equal(b->subs[0].n_kvs, 1);
    assert_string_equal((char *)b->subs[0].kvs[0].value, "v2");
    assert_int_equal(b->subs[0].kvs[0].mod, a->revision);

    /* Every target and relation in one txn that holds; several ops. */
    struct tr_etcd_compare all[] = {
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_VALUE, .result = TR_ETCD_EQUAL,
         .value = "v2", .value_len = 2},
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_VERSION,
         .result = TR_ETCD_GREATER, .number = 1},
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_CREATE, .result = TR_ETCD_EQUAL,
         .number = r1},
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_MOD, .result = TR_ETCD_LESS,
         .number = a->revision + 1},
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_LEASE, .result = TR_ETCD_EQUAL,
         .number = 0},
        {.key = other, .key_len = strlen(other), .target = TR_ETCD_CMP_VERSION,
         .result = TR_ETCD_EQUAL, .number = 0}, /* "does not exist" */
        {.key = k, .key_len = strlen(k), .target = TR_ETCD_CMP_VALUE,
         .result = TR_ETCD_NOT_EQUAL, .value = "zz", .value_len = 2},
    };
    struct tr_etcd_op ops[] = {
        {.type = TR_ETCD_OP_PUT, .key = other, .key_len = strlen(other), .value = "o",
         .value_len = 1},
        {.type = TR_ETCD_OP_DELETE, .key = k, .key_len = strlen(k), .flags = TR_ETCD_PREV_KV},
        {.type = TR_ETCD_OP_RANGE, .key = other, .key_len = strlen(other)},
    };
    struct tr_etcd_txn t2 = {.compares = all, .n_compares = TR_ARRAY_LEN(all), .success = ops,
                             .n_success = TR_ARRAY_LEN(ops)};
    struct res *c = do_txn(f, &t2);
    if (c->status != 0)
        fail_msg("txn: %s", c->message);
    assert_true(c->succeeded);
    assert_int_equal(c->n_subs, 3);
    assert_int_equal(c->subs[1].type, TR_ETCD_OP_DELETE);
    assert_int_equal(c->subs[1].deleted, 1);
    assert_string_equal((char *)c->subs[1].prev[0].value, "v2");
    /* A range inside a txn sees the txn's own earlier writes. */
    assert_int_equal(c->subs[2].n_kvs, 1);
    assert_string_equal((char *)c->subs[2].kvs[0].value, "o");

    /* A compare that fails with an empty failure branch. */
    struct res *d = do_txn(f, &t2);
    assert_int_equal(d->status, 0);
    assert_false(d->succeeded);
    assert_int_equal(d->n_subs, 0);

    /* More ops than etcd allows: refused with etcd's words. */
    struct tr_etcd_op many[TR_ETCD_DEFAULT_MAX_TXN_OPS + 1];
    char names[TR_ETCD_DEFAULT_MAX_TXN_OPS + 1][64];
    for (size_t i = 0; i < TR_ARRAY_LEN(many); i++) {
        snprintf(names[i], sizeof(names[i]), "%smany/%zu", f->prefix, i);
        many[i] = (struct tr_etcd_op){.type = TR_ETCD_OP_PUT, .key = names[i],
                                      .key_len = strlen(names[i]), .value = "m",
                                      .value_len = 1};
    }
    struct tr_etcd_txn big = {.success = many, .n_success = TR_ARRAY_LEN(many)};
    struct res *e = do_txn(f, &big);
    assert_int_equal(e->status, TR_ESTATE);
    assert_int_equal(e->grpc_status, 3); /* INVALID_ARGUMENT */
    assert_non_null(strstr(e->message, "too many operations"));
    big.n_success = TR_ETCD_DEFAULT_MAX_TXN_OPS;
    struct res *g = do_txn(f, &big);
    assert_int_equal(g->status, 0);
    assert_int_equal(g->n_subs, TR_ETCD_DEFAULT_MAX_TXN_OPS);

    res_free(a);
    res_free(b);
    res_free(c);
    res_free(d);
    res_free(e);
    res_free(g);
}

static void test_bad_arguments(void **state)
{
    struct fx *f = *state;
    struct tr_error err;
    struct tr_etcd_config cfg = {.endpoints = ""};
    assert_null(tr_etcd_new(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1";
    assert_null(tr_etcd_new(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1:1,,127.0.0.1:2";
    assert_null(tr_etcd_new(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1:1";
    cfg.cert_file = "/nonexistent/cert.pem";
    assert_null(tr_etcd_new(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL); /* a certificate without its key */
    cfg.key_file = "/nonexistent/key.pem";
    assert_null(tr_etcd_new(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/cert.pem"));

    struct res r = {0};
    char k[256];
    K(f, k, "x");
    struct tr_etcd_op put = {.key = k, .key_len = strlen(k), .flags = TR_ETCD_PREFIX};
    assert_int_equal(tr_etcd_put(f->e, &put, on_res, &r), TR_EINVAL);
    struct tr_etcd_op both = {.key = k, .key_len = strlen(k), .range_end = "z",
                              .range_end_len = 1, .flags = TR_ETCD_PREFIX};
    assert_int_equal(tr_etcd_range(f->e, &both, on_res, &r), TR_EINVAL);
    struct tr_etcd_op nested = {.type = TR_ETCD_OP_TXN, .key = k, .key_len = strlen(k)};
    struct tr_etcd_txn t = {.success = &nested, .n_success = 1};
    assert_int_equal(tr_etcd_txn(f->e, &t, on_res, &r), TR_EINVAL);
    struct tr_etcd_watch *w;
    struct tr_etcd_watch_opts wo = {.key = "", .key_len = 0};
    assert_int_equal(tr_etcd_watch(f->e, &wo, on_watch, NULL, &w), TR_EINVAL);
    struct tr_etcd_keepalive *ka;
    assert_int_equal(tr_etcd_lease_keepalive_start(f->e, 1, 0, NULL, NULL, &ka), TR_EINVAL);
    assert_int_equal(tr_etcd_lease_grant(f->e, 0, 0, on_res, &r), TR_EINVAL);
    nap(f, 20);
    assert_int_equal(r.calls, 0); /* refused calls never call back */
}

/* ===================================================================== */
/* Leases                                                                */
/* ===================================================================== */

static void test_lease(void **state)
{
    struct fx *f = *state;
    char k[256];
    K(f, k, "leased");
    int64_t id = grant(f, 30);
    struct res *p = do_put(f, k, "l", 1, id, 0);
    assert_int_equal(p->status, 0);
    struct res *g = get(f, k);
    assert_int_equal(g->n_kvs, 1);
    assert_int_equal(g->kvs[0].lease, id);
    struct res *t = lease_ttl(f, id);
    assert_int_equal(t->status, 0);
    assert_int_equal(t->lease_id, id);
    assert_true(t->ttl > 0 && t->ttl <= 30);
    assert_int_equal(t->granted_ttl, 30);
    assert_int_equal(t->n_kvs, 1);
    assert_string_equal(t->kvs[0].key, k);

    struct res rv = {0};
    wait_res(f, tr_etcd_lease_revoke(f->e, id, on_res, &rv), &rv);
    assert_int_equal(rv.status, 0);
    struct res *g2 = get(f, k);
    assert_int_equal(g2->n_kvs, 0); /* revoking deleted the key */
    struct res *t2 = lease_ttl(f, id);
    assert_int_equal(t2->status, 0);
    assert_int_equal(t2->ttl, -1);
    /* Revoking an unknown lease is etcd's NOT_FOUND. */
    struct res rv2 = {0};
    wait_res(f, tr_etcd_lease_revoke(f->e, id, on_res, &rv2), &rv2);
    assert_int_equal(rv2.status, TR_ESTATE);
    assert_int_equal(rv2.grpc_status, 5);
    assert_non_null(strstr(rv2.message, "lease not found"));
    /* A put on a lease that does not exist is refused. */
    struct res *p2 = do_put(f, k, "l", 1, id, 0);
    assert_int_equal(p2->status, TR_ESTATE);
    res_release(&rv);
    res_release(&rv2);
    res_free(p);
    res_free(p2);
    res_free(g);
    res_free(g2);
    res_free(t);
    res_free(t2);
}

struct karec
{
    int calls, ok, failures, finals;
    int final_status;
    int64_t last_ttl;
    struct tr_etcd_keepalive *k;
};

static void on_keepalive(void *arg, int status, int64_t ttl, bool final)
{
    struct karec *r = arg;
    r->calls++;
    if (final) {
        r->finals++;
        r->final_status = status;
    } else if (status == 0) {
        r->ok++;
        r->last_ttl = ttl;
    } else {
        r->failures++;
    }
}

static void test_keepalive(void **state)
{
    struct fx *f = *state;
    char k[256];
    K(f, k, "kept");
    int64_t id = grant(f, 2);
    res_free(do_put(f, k, "alive", 5, id, 0));
    struct karec ka = {0};
    assert_int_equal(tr_etcd_lease_keepalive_start(f->e, id, 500, on_keepalive, &ka, &ka.k), 0);
    assert_int_equal(ka.calls, 0); /* never from inside the start */
    nap(f, 5000);                  /* two and a half TTLs */
    assert_int_equal(ka.finals, 0);
    assert_true(ka.ok >= 5);
    assert_int_equal(ka.last_ttl, 2);
    assert_true(tr_etcd_keepalive_expiry_ns(ka.k) > tr_mono_ns());
    struct res *g = get(f, k);
    assert_int_equal(g->n_kvs, 1);
    struct res *t = lease_ttl(f, id);
    assert_true(t->ttl > 0);
    tr_etcd_lease_keepalive_stop(ka.k);
    assert_int_equal(ka.finals, 0); /* from the loop, later */
    RUN_UNTIL(f, ka.finals > 0);
    assert_int_equal(ka.final_status, TR_ECANCELED);

    /* Revoked while kept: the next renewal learns it, final TR_ENOENT. */
    int64_t id2 = grant(f, 10);
    struct karec kb = {0};
    assert_int_equal(tr_etcd_lease_keepalive_start(f->e, id2, 100, on_keepalive, &kb, &kb.k),
                     0);
    RUN_UNTIL(f, kb.ok > 0);
    struct res rv = {0};
    wait_res(f, tr_etcd_lease_revoke(f->e, id2, on_res, &rv), &rv);
    RUN_UNTIL(f, kb.finals > 0);
    assert_int_equal(kb.final_status, TR_ENOENT);
    nap(f, 300);
    assert_int_equal(kb.finals, 1);
    assert_int_equal(ka.finals, 1);
    res_release(&rv);
    res_free(g);
    res_free(t);
}

/* ===================================================================== */
/* Watches                                                               */
/* ===================================================================== */

static void test_watch_prefix(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, pfx, "w/");
    int64_t base = put_ok(f, K(f, k, "before"), "x");
    struct wrec rec = {0};
    watch_prefix(f, &rec, pfx, base + 1, TR_ETCD_PREV_KV);
    int64_t r1 = put_ok(f, K(f, k, "w/a"), "1");
    put_ok(f, K(f, k, "outside"), "no");
    int64_t r2 = put_ok(f, K(f, k, "w/a"), "2");
    struct res dr = {0};
    wait_res(f, tr_etcd_delete(f->e, &(struct tr_etcd_op){.key = k, .key_len = strlen(k)},
                               on_res, &dr), &dr);
    RUN_UNTIL(f, rec.n >= 3);
    assert_int_equal(rec.finals, 0);
    assert_int_equal(rec.ev[0].type, TR_ETCD_EVENT_PUT);
    assert_string_equal(rec.ev[0].kv.key, k);
    assert_string_equal((char *)rec.ev[0].kv.value, "1");
    assert_int_equal(rec.ev[0].kv.mod, r1);
    assert_false(rec.ev[0].has_prev);
    assert_int_equal(rec.ev[1].type, TR_ETCD_EVENT_PUT);
    assert_string_equal((char *)rec.ev[1].kv.value, "2");
    assert_int_equal(rec.ev[1].kv.mod, r2);
    assert_int_equal(rec.ev[1].kv.version, 2);
    assert_true(rec.ev[1].has_prev);
    assert_string_equal((char *)rec.ev[1].prev.value, "1");
    assert_int_equal(rec.ev[2].type, TR_ETCD_EVENT_DELETE);
    assert_string_equal(rec.ev[2].kv.key, k);
    assert_int_equal(rec.ev[2].kv.mod, dr.revision);
    assert_true(rec.ev[2].has_prev);
    assert_string_equal((char *)rec.ev[2].prev.value, "2");
    assert_int_equal(tr_etcd_watch_revision(rec.w), dr.revision);

    /* A progress request answers with the revision reached. */
    assert_int_equal(tr_etcd_watch_progress(rec.w), 0);
    RUN_UNTIL(f, rec.progress > 0);
    assert_true(rec.progress_rev >= dr.revision);
    assert_int_equal(rec.n, 3);
    cancel_watch(f, &rec);

    /* "From now": the creation notice, then only later events. */
    struct wrec now = {0};
    watch_prefix(f, &now, pfx, 0, TR_ETCD_NO_DELETE);
    RUN_UNTIL(f, now.created);
    assert_int_equal(now.n, 0);
    put_ok(f, K(f, k, "w/b"), "3");
    struct res dr2 = {0};
    wait_res(f, tr_etcd_delete(f->e, &(struct tr_etcd_op){.key = k, .key_len = strlen(k)},
                               on_res, &dr2), &dr2);
    int64_t r4 = put_ok(f, K(f, k, "w/c"), "4");
    RUN_UNTIL(f, now.n >= 2);
    assert_string_equal((char *)now.ev[0].kv.value, "3");
    assert_string_equal((char *)now.ev[1].kv.value, "4"); /* the delete was filtered */
    assert_int_equal(now.ev[1].kv.mod, r4);
    cancel_watch(f, &now);
    res_release(&dr);
    res_release(&dr2);
    wrec_release(&rec);
    wrec_release(&now);
}

static void test_watch_history(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, pfx, "h/");
    int64_t revs[3];
    for (int i = 0; i < 3; i++) {
        char name[16], v[16];
        snprintf(name, sizeof(name), "h/%d", i);
        snprintf(v, sizeof(v), "%d", i);
        revs[i] = put_ok(f, K(f, k, name), v);
    }
    struct wrec rec = {0};
    watch_prefix(f, &rec, pfx, revs[0], 0);
    RUN_UNTIL(f, rec.n >= 3);
    for (int i = 0; i < 3; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        assert_string_equal((char *)rec.ev[i].kv.value, v);
        assert_int_equal(rec.ev[i].kv.mod, revs[i]);
    }
    nap(f, 50);
    assert_int_equal(rec.n, 3);
    cancel_watch(f, &rec);
    wrec_release(&rec);
}

static void test_watch_compacted(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, pfx, "c/");
    int64_t old = put_ok(f, K(f, k, "c/a"), "1");
    int64_t now = put_ok(f, K(f, k, "c/a"), "2");
    struct res c = {0};
    wait_res(f, tr_etcd_compact(f->e, now, true, on_res, &c), &c);
    assert_int_equal(c.status, 0);
    struct wrec rec = {0};
    watch_prefix(f, &rec, pfx, old, 0);
    RUN_UNTIL(f, rec.finals > 0);
    assert_int_equal(rec.final_status, TR_ESTALE);
    assert_int_equal(rec.compact, now);
    assert_int_equal(rec.n, 0);
    /* Reading below the compaction fails too, with etcd's words. */
    struct res *r = do_range(f, &(struct tr_etcd_op){.key = k, .key_len = strlen(k),
                                                     .revision = old});
    assert_int_equal(r->status, TR_ESTATE);
    assert_non_null(strstr(r->message, "compacted"));
    nap(f, 50);
    assert_int_equal(rec.finals, 1);
    res_release(&c);
    res_free(r);
}

/* A member of the test's own, restarted while a watch is open. */
static void test_watch_resumes_after_restart(void **state)
{
    struct fx *f = *state;
    char dir[] = "/tmp/tr-etcd-restart-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(script(f, "start-etcd.sh", dir, "--fresh", NULL), 0);
    char path[600], ep[128];
    snprintf(path, sizeof(path), "%s/endpoint", dir);
    read_line(path, ep, sizeof(ep));
    tr_etcd_free(f->e);
    f->e = client(f, ep, 2000);

    char k[256], pfx[256];
    K(f, pfx, "r/");
    struct wrec rec = {0};
    struct karec ka = {0};
    int64_t base = put_ok(f, K(f, k, "r/0"), "before");
    watch_prefix(f, &rec, pfx, base + 1, TR_ETCD_PREV_KV);
    put_ok(f, K(f, k, "r/1"), "a");
    put_ok(f, K(f, k, "r/2"), "b");
    RUN_UNTIL(f, rec.n >= 2);
    int64_t lease = grant(f, 30);
    assert_int_equal(tr_etcd_lease_keepalive_start(f->e, lease, 200, on_keepalive, &ka, &ka.k),
                     0);
    RUN_UNTIL(f, ka.ok > 0);

    assert_int_equal(script(f, "stop-etcd.sh", dir, "--keep", NULL), 0);
    /* While the member is down calls fail fast or time out. */
    struct res *down = get(f, k);
    assert_true(down->status == TR_EUNAVAIL || down->status == TR_ETIMEDOUT);
    res_free(down);
    assert_int_equal(script(f, "start-etcd.sh", dir, NULL, NULL), 0);

    /* Written after the restart: retried until the client is back. */
    struct res *p = NULL;
    for (int i = 0; i < 100; i++) {
        res_free(p);
        p = do_put(f, K(f, k, "r/3"), "c", 1, 0, 0);
        if (p->status == 0)
            break;
        assert_true(p->status == TR_EUNAVAIL || p->status == TR_ETIMEDOUT);
        nap(f, 50);
    }
    assert_int_equal(p->status, 0);
    put_ok(f, K(f, k, "r/4"), "d");
    RUN_UNTIL(f, rec.n >= 4);
    nap(f, 200);
    assert_int_equal(rec.finals, 0);
    assert_int_equal(rec.n, 4); /* nothing repeated */
    const char *want[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal((char *)rec.ev[i].kv.value, want[i]);
        if (i > 0)
            assert_true(rec.ev[i].kv.mod > rec.ev[i - 1].kv.mod);
    }
    assert_int_equal(rec.ev[2].kv.mod, p->revision);
    /* The keep-alive came back on its own and the lease survived. */
    int ok_before = ka.ok;
    RUN_UNTIL(f, ka.ok > ok_before);
    assert_int_equal(ka.finals, 0);
    struct tr_etcd_stats st;
    tr_etcd_get_stats(f->e, &st);
    assert_true(st.stream_restarts >= 2);
    assert_true(st.calls_failed >= 1);
    cancel_watch(f, &rec);
    tr_etcd_lease_keepalive_stop(ka.k);
    RUN_UNTIL(f, ka.finals > 0);
    assert_int_equal(ka.final_status, TR_ECANCELED);
    res_free(p);
    wrec_release(&rec);
    assert_int_equal(script(f, "stop-etcd.sh", dir, NULL, NULL), 0);
}

/* ===================================================================== */
/* Failures, endpoints, shutdown                                         */
/* ===================================================================== */

struct ticker
{
    uv_timer_t t;
    int ticks;
};

static void on_tick(uv_timer_t *t)
{
    ((struct ticker *)t->data)->ticks++;
}

static void test_unreachable(void **state)
{
    struct fx *f = *state;
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", dead_port());
    tr_etcd_free(f->e);
    f->e = client(f, ep, 1000);
    struct ticker tk = {0};
    uv_timer_init(&f->loop, &tk.t);
    tk.t.data = &tk;
    uv_timer_start(&tk.t, on_tick, 5, 5);
    uint64_t t0 = tr_mono_ns();
    struct res *r = get(f, "/tr-test/unreachable");
    uint64_t ms = (tr_mono_ns() - t0) / 1000000u;
    assert_true(r->status == TR_EUNAVAIL || r->status == TR_ETIMEDOUT);
    assert_true(r->grpc_status == 14 || r->grpc_status == 4);
    assert_non_null(strstr(r->message, "etcd Range failed"));
    /* A loose bound that catches a hang, not a performance figure. */
    assert_true(ms < 1000 + 3000);
    /* The loop went on turning while the call was out. */
    assert_true(tk.ticks > 0 || ms < 10);
    uv_close((uv_handle_t *)&tk.t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* tk lives on this stack frame */
    res_free(r);
}

static void test_endpoint_switch(void **state)
{
    /* The first endpoint is dead; calls move on to the live one. */
    struct fx *f = *state;
    char eps[256];
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d, %s", dead_port(), g_endpoint);
    tr_etcd_free(f->e);
    f->e = client(f, eps, 2000);
    char k[256];
    K(f, k, "sw");
    struct res *p = NULL;
    int failures = 0;
    for (int i = 0; i < 20; i++) {
        res_free(p);
        p = do_put(f, k, "v", 1, 0, 0);
        if (p->status == 0)
            break;
        failures++;
        assert_true(p->status == TR_EUNAVAIL || p->status == TR_ETIMEDOUT);
    }
    assert_int_equal(p->status, 0);
    assert_true(failures >= 1);
    assert_string_equal(tr_etcd_endpoint(f->e), g_endpoint);
    struct tr_etcd_stats st;
    tr_etcd_get_stats(f->e, &st);
    assert_true(st.endpoint_switches >= 1);
    /* It stays on the live endpoint. */
    res_free(p);
    p = do_put(f, k, "w", 1, 0, 0);
    assert_int_equal(p->status, 0);
    res_free(p);
}

struct counter
{
    int calls;
    int cancelled;
    struct tr_etcd *free_me; /* freed from inside the first callback */
};

static void on_count(void *arg, int status, const struct tr_etcd_result *r)
{
    (void)r;
    struct counter *c = arg;
    c->calls++;
    if (status == TR_ECANCELED)
        c->cancelled++;
    if (c->free_me) {
        tr_etcd_free(c->free_me);
        /* Calls made from a completing callback are refused. */
        struct tr_etcd_op op = {.key = "x", .key_len = 1};
        if (tr_etcd_range(c->free_me, &op, on_count, c) != TR_ECANCELED)
            c->calls += 1000;
        c->free_me = NULL;
    }
}

static void test_free_in_flight(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, k, "inflight");
    K(f, pfx, "inflight/");
    int64_t lease = grant(f, 30);
    struct counter c = {0};
    for (int i = 0; i < 32; i++) {
        struct tr_etcd_op op = {.key = k, .key_len = strlen(k), .value = "v", .value_len = 1};
        assert_int_equal(tr_etcd_put(f->e, &op, on_count, &c), 0);
    }
    struct wrec rec = {0};
    watch_prefix(f, &rec, pfx, 0, 0);
    struct karec ka = {0};
    assert_int_equal(tr_etcd_lease_keepalive_start(f->e, lease, 1000, on_keepalive, &ka, &ka.k),
                     0);
    tr_etcd_free(f->e);
    f->e = NULL;
    assert_int_equal(c.calls, 0); /* nothing from inside tr_etcd_free */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.calls, 32);
    assert_int_equal(c.cancelled, 32);
    assert_int_equal(rec.finals, 1);
    assert_int_equal(rec.final_status, TR_ECANCELED);
    assert_int_equal(ka.finals, 1);
    assert_int_equal(ka.final_status, TR_ECANCELED);

    /* Freed from inside a callback while other calls are out. */
    f->e = client(f, g_endpoint, 5000);
    struct counter c2 = {.free_me = f->e};
    for (int i = 0; i < 8; i++) {
        struct tr_etcd_op op = {.key = k, .key_len = strlen(k)};
        assert_int_equal(tr_etcd_range(f->e, &op, on_count, &c2), 0);
    }
    f->e = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(c2.calls, 8);
    assert_true(c2.cancelled >= 7);
    wrec_release(&rec);
}

/* Each allocation of a call failing in turn: TR_ENOMEM from the start or
 * in the callback, never a crash or a leak. */
static void test_alloc_failures(void **state)
{
    struct fx *f = *state;
    char k[256], pfx[256];
    K(f, pfx, "oom/");
    put_ok(f, K(f, k, "oom/a"), "1");
    put_ok(f, K(f, k, "oom/b"), "2");
    tr_etcd_free(f->e);
    f->e = NULL;
    bool passed = false;
    for (long n = 1; n < 200 && !passed; n++) {
        struct tr_etcd_config cfg = {.endpoints = g_endpoint};
        struct tr_error err;
        tr_alloc_fail_at(n, false);
        struct tr_etcd *e = tr_etcd_new(&f->loop, &cfg, &err);
        if (!e) {
            tr_alloc_fail_at(0, false);
            assert_int_equal(err.code, TR_ENOMEM);
            continue;
        }
        struct res r = {0};
        struct tr_etcd_op op = {.key = pfx, .key_len = strlen(pfx), .flags = TR_ETCD_PREFIX};
        int rc = tr_etcd_range(e, &op, on_res, &r);
        if (rc == 0) {
            RUN_UNTIL(f, r.calls > 0);
            if (r.status == 0) {
                assert_int_equal(r.n_kvs, 2);
                passed = true;
            } else {
                assert_true(r.status == TR_ENOMEM || r.status == TR_EPROTO);
            }
        } else {
            assert_int_equal(rc, TR_ENOMEM);
        }
        tr_alloc_fail_at(0, false);
        res_release(&r);
        tr_etcd_free(e);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    assert_true(passed);
}

/* Puts with 64 in flight from the loop: a figure for the report. */
struct bench
{
    struct fx *f;
    int started, done, failed;
    int total;
    char key[256];
};

static void on_bench(void *arg, int status, const struct tr_etcd_result *r);

static void bench_start(struct bench *b)
{
    char k[300];
    snprintf(k, sizeof(k), "%s%d", b->key, b->started % 256);
    char v[100];
    memset(v, 'v', sizeof(v));
    struct tr_etcd_op op = {.key = k, .key_len = strlen(k), .value = v, .value_len = sizeof(v)};
    if (tr_etcd_put(b->f->e, &op, on_bench, b) == 0)
        b->started++;
    else
        b->failed++;
}

static void on_bench(void *arg, int status, const struct tr_etcd_result *r)
{
    (void)r;
    struct bench *b = arg;
    b->done++;
    if (status != 0)
        b->failed++;
    if (b->started < b->total)
        bench_start(b);
}

static void test_throughput(void **state)
{
    struct fx *f = *state;
    struct bench b = {.f = f, .total = 4000};
    K(f, b.key, "bench/");
    uint64_t t0 = tr_mono_ns();
    for (int i = 0; i < 64; i++)
        bench_start(&b);
    RUN_UNTIL(f, b.done >= b.total || b.failed > 0);
    double s = (double)(tr_mono_ns() - t0) / 1e9;
    assert_int_equal(b.failed, 0);
    print_message("etcd puts, 64 in flight from the loop: %d in %.2f s = %.0f puts/s\n", b.done,
                  s, b.done / s);
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* TLS with client certificates, on a member of the test's own. */
static void test_tls(void **state)
{
    struct fx *f = *state;
    char dir[] = "/tmp/tr-etcd-tls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char certs[600], data[600], path[700], ep[128];
    snprintf(certs, sizeof(certs), "%s/certs", dir);
    snprintf(data, sizeof(data), "%s/etcd", dir);
    assert_int_equal(script(f, "make-certs.sh", certs, NULL, NULL), 0);
    assert_int_equal(script(f, "start-etcd.sh", data, "--fresh", certs), 0);
    snprintf(path, sizeof(path), "%s/endpoint", data);
    read_line(path, ep, sizeof(ep));

    char ca[700], cert[700], keyf[700];
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(cert, sizeof(cert), "%s/client.pem", certs);
    snprintf(keyf, sizeof(keyf), "%s/client-key.pem", certs);
    tr_etcd_free(f->e);
    struct tr_etcd_config cfg = {.endpoints = ep, .ca_file = ca, .cert_file = cert,
                                 .key_file = keyf, .deadline_ms = 5000};
    struct tr_error err;
    f->e = tr_etcd_new(&f->loop, &cfg, &err);
    assert_non_null(f->e);
    char k[256];
    K(f, k, "tls");
    struct res *p = do_put(f, k, "secret", 6, 0, 0);
    if (p->status != 0)
        fail_msg("put over TLS: %s", p->message);
    struct res *g = get(f, k);
    assert_int_equal(g->n_kvs, 1);
    assert_string_equal((char *)g->kvs[0].value, "secret");

    /* Without a client certificate the member refuses the connection. */
    tr_etcd_free(f->e);
    cfg.cert_file = cfg.key_file = NULL;
    f->e = tr_etcd_new(&f->loop, &cfg, &err);
    assert_non_null(f->e);
    struct res *r = get(f, k);
    assert_true(r->status == TR_EUNAVAIL || r->status == TR_ETIMEDOUT);
    /* Nor does plaintext get through. */
    tr_etcd_free(f->e);
    f->e = client(f, ep, 2000);
    struct res *r2 = get(f, k);
    assert_int_not_equal(r2->status, 0);
    res_free(p);
    res_free(g);
    res_free(r);
    res_free(r2);
    assert_int_equal(script(f, "stop-etcd.sh", data, NULL, NULL), 0);
    assert_int_equal(nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_end),
        cmocka_unit_test_setup_teardown(test_put_range_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_compacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_resumes_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
