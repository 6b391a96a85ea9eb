/*
 * test_etcd.c - the etcd client's requests against a real etcd: KV, txn,
 * leases, argument checks, shutdown with calls in flight, allocation
 * failures and a throughput figure. Watches, keep-alives and connection
 * behaviour are in test_etcd_stream.c; the fixture is etcd_fixture.h.
 */
#include "tests/unit/etcd_fixture.h"

#include "lib/base/alloc.h"

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
    assert_null(tr_etcd_open(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1";
    assert_null(tr_etcd_open(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1:1,,127.0.0.1:2";
    assert_null(tr_etcd_open(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL);
    cfg.endpoints = "127.0.0.1:1";
    cfg.cert_file = "/nonexistent/cert.pem";
    assert_null(tr_etcd_open(&f->loop, &cfg, &err));
    assert_int_equal(err.code, TR_EINVAL); /* a certificate without its key */
    cfg.key_file = "/nonexistent/key.pem";
    assert_null(tr_etcd_open(&f->loop, &cfg, &err));
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

/* ===================================================================== */
/* Shutdown, allocation failures, throughput                             */
/* ===================================================================== */

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
        tr_etcd_close(c->free_me);
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
    tr_etcd_close(f->e);
    f->e = NULL;
    assert_int_equal(c.calls, 0); /* nothing from inside tr_etcd_close */
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
    tr_etcd_close(f->e);
    f->e = NULL;
    bool passed = false;
    for (long n = 1; n < 200 && !passed; n++) {
        struct tr_etcd_config cfg = {.endpoints = g_endpoint};
        struct tr_error err;
        tr_alloc_fail_at(n, false);
        struct tr_etcd *e = tr_etcd_open(&f->loop, &cfg, &err);
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
        tr_etcd_close(e);
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
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
