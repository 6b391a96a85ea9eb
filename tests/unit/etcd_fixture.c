/*
 * etcd_fixture.c - the fixture shared by the etcd client's tests (see
 * etcd_fixture.h). Linked into test_etcd and test_etcd_stream only.
 */
#include "tests/unit/etcd_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

char g_endpoint[128];

static void on_watchdog(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->timed_out = true;
}

struct tr_etcd *client(struct fx *f, const char *endpoints, uint32_t deadline_ms)
{
    struct tr_etcd_config cfg = {
        .endpoints = endpoints, .deadline_ms = deadline_ms, .backoff_min_ms = 20,
        .backoff_max_ms = 500};
    struct tr_error err;
    struct tr_etcd *e = tr_etcd_open(&f->loop, &cfg, &err);
    if (!e)
        fail_msg("cannot create the client: %s", err.msg);
    return e;
}

int group_setup(void **state)
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

int setup(void **state)
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

int teardown(void **state)
{
    struct fx *f = *state;
    if (f->own[0])
        stop_own_member(f);
    tr_etcd_close(f->e);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* "<prefix><name>" into out. */
const char *key(struct fx *f, char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s%s", f->prefix, name);
    return out;
}

/* Runs the loop for ms. */
static void on_nap(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

void nap(struct fx *f, uint64_t ms)
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

int script(struct fx *f, const char *name, const char *a1, const char *a2,
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

void scratch_dir(char *out, size_t size, const char *name)
{
    const char *base = getenv("TR_BUILD_DIR");
    snprintf(out, size, "%s/etcd-%s-%d-%llu", base ? base : "/tmp", name, (int)getpid(),
             (unsigned long long)tr_mono_ns());
}

void start_own_member(struct fx *f, const char *dir, const char *tls_dir, char *ep,
                      size_t ep_size)
{
    snprintf(f->own, sizeof(f->own), "%s", dir);
    assert_int_equal(script(f, "start-etcd.sh", dir, "--fresh", tls_dir), 0);
    char path[700];
    snprintf(path, sizeof(path), "%s/endpoint", dir);
    read_line(path, ep, ep_size);
}

void stop_own_member(struct fx *f)
{
    int rc = script(f, "stop-etcd.sh", f->own, NULL, NULL);
    f->own[0] = 0;
    assert_int_equal(rc, 0);
}

void read_line(const char *path, char *out, size_t size)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(out, (int)size, fp));
    fclose(fp);
    out[strcspn(out, "\r\n")] = 0;
}

/* A loopback port with nothing listening (bound, then closed). */
int dead_port(void)
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

void kv_copy(struct kvc *d, const struct tr_etcd_kv *s)
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

void res_copy(struct res *d, int status, const struct tr_etcd_result *r)
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

void res_release(struct res *r)
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

void res_free(struct res *r)
{
    if (r) {
        res_release(r);
        free(r);
    }
}

void on_res(void *arg, int status, const struct tr_etcd_result *r)
{
    struct res *d = arg;
    if (d->calls++ == 0)
        res_copy(d, status, r);
}

/* ---- synchronous wrappers (the loop turns while they wait) -------------- */

struct res *wait_res(struct fx *f, int rc, struct res *r)
{
    assert_int_equal(rc, 0);
    RUN_UNTIL(f, r->calls > 0);
    return r;
}

struct res *do_put(struct fx *f, const char *k, const void *v, size_t vl, int64_t lease,
                          unsigned flags)
{
    struct res *r = calloc(1, sizeof(*r));
    struct tr_etcd_op op = {.key = k, .key_len = strlen(k), .value = v, .value_len = vl,
                            .lease = lease, .flags = flags};
    return wait_res(f, tr_etcd_put(f->e, &op, on_res, r), r);
}

/* A put that must succeed; returns its revision. */
int64_t put_ok(struct fx *f, const char *k, const char *v)
{
    struct res *r = do_put(f, k, v, strlen(v), 0, 0);
    if (r->status != 0)
        fail_msg("put '%s': %s", k, r->message);
    int64_t rev = r->revision;
    res_free(r);
    return rev;
}

struct res *do_range(struct fx *f, const struct tr_etcd_op *op)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_range(f->e, op, on_res, r), r);
}

struct res *get(struct fx *f, const char *k)
{
    struct tr_etcd_op op = {.key = k, .key_len = strlen(k)};
    return do_range(f, &op);
}

struct res *do_txn(struct fx *f, const struct tr_etcd_txn *t)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_txn(f->e, t, on_res, r), r);
}

int64_t grant(struct fx *f, int64_t ttl)
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

struct res *lease_ttl(struct fx *f, int64_t id)
{
    struct res *r = calloc(1, sizeof(*r));
    return wait_res(f, tr_etcd_lease_time_to_live(f->e, id, true, on_res, r), r);
}

/* ---- watch recording ---------------------------------------------------- */

void on_watch(void *arg, int status, const struct tr_etcd_watch_result *r)
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

void wrec_release(struct wrec *rec)
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

void watch_prefix(struct fx *f, struct wrec *rec, const char *prefix, int64_t from,
                         unsigned flags)
{
    struct tr_etcd_watch_opts o = {.key = prefix, .key_len = strlen(prefix),
                                   .start_revision = from, .flags = TR_ETCD_PREFIX | flags};
    assert_int_equal(tr_etcd_watch(f->e, &o, on_watch, rec, &rec->w), 0);
}

void cancel_watch(struct fx *f, struct wrec *rec)
{
    tr_etcd_watch_cancel(rec->w);
    RUN_UNTIL(f, rec->finals > 0);
    assert_int_equal(rec->final_status, TR_ECANCELED);
    nap(f, 20);
    assert_int_equal(rec->finals, 1);
}

void on_keepalive(void *arg, int status, int64_t ttl, bool final)
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
