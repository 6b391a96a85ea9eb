/*
 * test_etcd_stream.c - the etcd client's streams and connections against a
 * real etcd: lease keep-alive, watches (events, history, compaction,
 * progress), a member restarted under a watch and a keep-alive, dead
 * endpoints, switching endpoints, and TLS with client certificates. The
 * fixture is etcd_fixture.h.
 */
#include "tests/unit/etcd_fixture.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ===================================================================== */
/* Lease keep-alive                                                      */
/* ===================================================================== */

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
    char dir[400];
    scratch_dir(dir, sizeof(dir), "restart");
    char ep[128];
    start_own_member(f, dir, NULL, ep, sizeof(ep));
    tr_etcd_close(f->e);
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
    stop_own_member(f);
}

/* ===================================================================== */
/* Dead endpoints, switching, TLS                                        */
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
    tr_etcd_close(f->e);
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

/* A peer that accepts connections and never answers: the deadline ends the
 * call, as TR_ETIMEDOUT, and the loop keeps turning meanwhile. */
static void test_deadline(void **state)
{
    struct fx *f = *state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", ntohs(a.sin_port));
    tr_etcd_close(f->e);
    f->e = client(f, ep, 500);
    struct ticker tk = {0};
    uv_timer_init(&f->loop, &tk.t);
    tk.t.data = &tk;
    uv_timer_start(&tk.t, on_tick, 5, 5);
    uint64_t t0 = tr_mono_ns();
    struct res *r = do_put(f, "/tr-test/silent", "v", 1, 0, 0);
    uint64_t ms = (tr_mono_ns() - t0) / 1000000u;
    assert_int_equal(r->status, TR_ETIMEDOUT);
    assert_int_equal(r->grpc_status, 4); /* DEADLINE_EXCEEDED */
    assert_true(ms < 500 + 3000);        /* catches a hang only */
    assert_true(tk.ticks > 0);
    uv_close((uv_handle_t *)&tk.t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    res_free(r);

    /* Silent first, live second: after two timeouts in a row the client
     * moves on, as it would from a member cut off by a partition. */
    char eps[256];
    snprintf(eps, sizeof(eps), "%s,%s", ep, g_endpoint);
    tr_etcd_close(f->e);
    f->e = client(f, eps, 500);
    int timeouts = 0;
    for (int i = 0; i < 5; i++) {
        r = do_put(f, "/tr-test/silent", "v", 1, 0, 0);
        int st = r->status;
        res_free(r);
        if (st == 0)
            break;
        assert_int_equal(st, TR_ETIMEDOUT);
        timeouts++;
        nap(f, 5); /* the switch happens on the next loop turn */
    }
    assert_int_equal(timeouts, 2);
    assert_string_equal(tr_etcd_endpoint(f->e), g_endpoint);
    close(s);
}

static void test_endpoint_switch(void **state)
{
    /* The first endpoint is dead; calls move on to the live one. */
    struct fx *f = *state;
    char eps[256];
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d, %s", dead_port(), g_endpoint);
    tr_etcd_close(f->e);
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
    char dir[400];
    scratch_dir(dir, sizeof(dir), "tls");
    assert_int_equal(mkdir(dir, 0700), 0);
    char certs[600], data[600], ep[128];
    snprintf(certs, sizeof(certs), "%s/certs", dir);
    snprintf(data, sizeof(data), "%s/etcd", dir);
    assert_int_equal(script(f, "make-certs.sh", certs, NULL, NULL), 0);
    start_own_member(f, data, certs, ep, sizeof(ep));

    char ca[700], cert[700], keyf[700];
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(cert, sizeof(cert), "%s/client.pem", certs);
    snprintf(keyf, sizeof(keyf), "%s/client-key.pem", certs);
    tr_etcd_close(f->e);
    struct tr_etcd_config cfg = {.endpoints = ep, .ca_file = ca, .cert_file = cert,
                                 .key_file = keyf, .deadline_ms = 5000};
    struct tr_error err;
    f->e = tr_etcd_open(&f->loop, &cfg, &err);
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
    tr_etcd_close(f->e);
    cfg.cert_file = cfg.key_file = NULL;
    f->e = tr_etcd_open(&f->loop, &cfg, &err);
    assert_non_null(f->e);
    struct res *r = get(f, k);
    assert_true(r->status == TR_EUNAVAIL || r->status == TR_ETIMEDOUT);
    /* Nor does plaintext get through. */
    tr_etcd_close(f->e);
    f->e = client(f, ep, 2000);
    struct res *r2 = get(f, k);
    assert_int_not_equal(r2->status, 0);
    res_free(p);
    res_free(g);
    res_free(r);
    res_free(r2);
    stop_own_member(f);
    assert_int_equal(nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_compacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_resumes_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
