/*
 * test_coord.c - lib/state/coord.h on etcd: election between two members, the
 * standby taking over when the leader closes, a leader losing its lease,
 * worker registrations under leases, and no coordination for SQLite.
 *
 * Runs on the etcd client's fixture (tests/unit/etcd_fixture.h): the member
 * ctest's etcd.start started; each test writes under its own prefix. The
 * coordination handles live on the fixture's loop, which teardown runs dry
 * before asserting uv_loop_close() == 0.
 */
#include "tests/unit/etcd_fixture.h"

#include "lib/base/alloc.h"
#include "lib/state/coord.h"

/* ===================================================================== */
/* Fixture helpers                                                       */
/* ===================================================================== */

/* What one member's event callback saw. */
struct events
{
    int n;
    enum tr_coord_event_type type[32];
    char leader[256];      /* the last FOLLOWER advertisement */
};

static void on_event(void *arg, const struct tr_coord_event *ev)
{
    struct events *e = arg;
    if (e->n < 32)
        e->type[e->n] = ev->type;
    e->n++;
    if (ev->type == TR_COORD_FOLLOWER)
        snprintf(e->leader, sizeof(e->leader), "%.*s", (int)ev->len, ev->leader);
}

static bool saw(const struct events *e, enum tr_coord_event_type t)
{
    for (int i = 0; i < e->n && i < 32; i++) {
        if (e->type[i] == t)
            return true;
    }
    return false;
}

static struct tr_coord *open_coord(struct fx *f, const char *url_tail)
{
    char url[512];
    snprintf(url, sizeof(url), "etcd://%s?prefix=%scoord%s", g_endpoint, f->prefix,
             url_tail ? url_tail : "");
    struct tr_error err;
    tr_error_init(&err);
    struct tr_coord *c = NULL;
    int rc = tr_coord_open(&f->loop, url, &c, &err);
    if (rc != 0 || c == NULL)
        fail_msg("cannot open coordination '%s': %d %s", url, rc, err.msg);
    return c;
}

static void campaign(struct tr_coord *c, const char *advert, struct events *ev)
{
    assert_int_equal(tr_coord_campaign(c, 2, advert, strlen(advert), on_event, ev), 0);
}

/* ===================================================================== */
/* Tests                                                                 */
/* ===================================================================== */

static void test_no_coordination_for_sqlite(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tr_coord *c = (struct tr_coord *)&loop;
    assert_int_equal(tr_coord_open(&loop, "sqlite::memory:", &c, NULL), 0);
    assert_null(c);
    tr_coord_close(NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_election_and_takeover(void **state)
{
    struct fx *f = *state;
    struct events e1 = {0}, e2 = {0};
    struct tr_coord *c1 = open_coord(f, NULL);
    struct tr_coord *c2 = open_coord(f, NULL);
    campaign(c1, "{\"id\":\"one\"}", &e1);
    RUN_UNTIL(f, e1.n >= 1);
    assert_int_equal(e1.type[0], TR_COORD_LEADER);
    assert_true(tr_coord_is_leader(c1));
    RUN_UNTIL(f, tr_coord_lease_expiry_ns(c1) != 0);
    assert_true(tr_coord_lease_expiry_ns(c1) > tr_mono_ns());

    campaign(c2, "{\"id\":\"two\"}", &e2);
    RUN_UNTIL(f, e2.n >= 1);
    assert_int_equal(e2.type[0], TR_COORD_FOLLOWER);
    assert_string_equal(e2.leader, "{\"id\":\"one\"}");
    assert_false(tr_coord_is_leader(c2));
    /* A second campaign on one handle is refused. */
    assert_int_equal(tr_coord_campaign(c2, 2, "x", 1, on_event, &e2), TR_EINVAL);

    char k[256];
    struct res *r = get(f, K(f, k, "coord/leader"));
    assert_int_equal(r->n_kvs, 1);
    assert_memory_equal(r->kvs[0].value, "{\"id\":\"one\"}", 11);
    assert_true(r->kvs[0].lease != 0);
    res_free(r);

    /* A clean close revokes the lease: the standby takes over at once. */
    tr_coord_close(c1);
    RUN_UNTIL(f, tr_coord_is_leader(c2));
    assert_true(saw(&e2, TR_COORD_NO_LEADER));
    assert_true(saw(&e2, TR_COORD_LEADER));
    assert_false(saw(&e1, TR_COORD_LOST));
    r = get(f, k);
    assert_int_equal(r->n_kvs, 1);
    assert_memory_equal(r->kvs[0].value, "{\"id\":\"two\"}", 11);
    res_free(r);
    tr_coord_close(c2);
}

static void test_leader_loses_its_lease(void **state)
{
    struct fx *f = *state;
    struct events e1 = {0};
    struct tr_coord *c1 = open_coord(f, NULL);
    campaign(c1, "{\"id\":\"one\"}", &e1);
    RUN_UNTIL(f, tr_coord_is_leader(c1));
    char k[256];
    struct res *r = get(f, K(f, k, "coord/leader"));
    assert_int_equal(r->n_kvs, 1);
    int64_t lease = r->kvs[0].lease;
    res_free(r);
    struct res rv = {0};
    r = wait_res(f, tr_etcd_lease_revoke(f->e, lease, on_res, &rv), &rv);
    assert_int_equal(r->status, 0);
    res_release(r);
    RUN_UNTIL(f, saw(&e1, TR_COORD_LOST));
    assert_false(tr_coord_is_leader(c1));
    /* LOST is final: the handle does not campaign again. */
    nap(f, 300);
    r = get(f, k);
    assert_int_equal(r->n_kvs, 0);
    res_free(r);
    tr_coord_close(c1);
}

static void test_worker_keys(void **state)
{
    struct fx *f = *state;
    struct tr_coord *c = open_coord(f, "&timeout_ms=2000");
    char k[256], k2[256];
    K(f, k, "coord/workers/w-1");
    K(f, k2, "coord/workers/a%2Fb");
    assert_int_equal(tr_coord_worker_up(c, "w-1", "{\"pool\":\"cpu\"}", 14, 2), 0);
    /* An id that holds a '/' stays one path component. */
    assert_int_equal(tr_coord_worker_up(c, "a/b", "{}", 2, 2), 0);
    struct res *r = NULL;
    for (int i = 0; i < 200; i++) {
        res_free(r);
        r = get(f, k2);
        if (r->n_kvs == 1)
            break;
        nap(f, 20);
    }
    assert_int_equal(r->n_kvs, 1);
    res_free(r);
    r = get(f, k);
    assert_int_equal(r->n_kvs, 1);
    assert_memory_equal(r->kvs[0].value, "{\"pool\":\"cpu\"}", 14);
    int64_t lease = r->kvs[0].lease;
    assert_true(lease != 0);
    res_free(r);

    /* Kept alive past its TTL. */
    nap(f, 2600);
    r = get(f, k);
    assert_int_equal(r->n_kvs, 1);
    assert_int_equal(r->kvs[0].lease, lease);
    res_free(r);

    /* Registered again: a new lease, the old one revoked. */
    assert_int_equal(tr_coord_worker_up(c, "w-1", "{\"pool\":\"gpu\"}", 14, 2), 0);
    for (int i = 0; i < 200; i++) {
        r = get(f, k);
        bool moved = r->n_kvs == 1 && r->kvs[0].lease != lease;
        res_free(r);
        if (moved)
            break;
        nap(f, 20);
    }
    r = get(f, k);
    assert_int_equal(r->n_kvs, 1);
    assert_memory_equal(r->kvs[0].value, "{\"pool\":\"gpu\"}", 14);
    res_free(r);

    /* Down: the revoke deletes the key. */
    tr_coord_worker_down(c, "w-1");
    tr_coord_worker_down(c, "never-registered");
    for (int i = 0; i < 200; i++) {
        r = get(f, k);
        bool gone = r->n_kvs == 0;
        res_free(r);
        if (gone)
            break;
        nap(f, 20);
    }
    r = get(f, k);
    assert_int_equal(r->n_kvs, 0);
    res_free(r);

    /* Close revokes the rest. */
    tr_coord_close(c);
    for (int i = 0; i < 200; i++) {
        r = get(f, k2);
        bool gone = r->n_kvs == 0;
        res_free(r);
        if (gone)
            break;
        nap(f, 20);
    }
    r = get(f, k2);
    assert_int_equal(r->n_kvs, 0);
    res_free(r);
}

/* A worker that goes down while its grant is in flight leaves no key. */
static void test_worker_down_before_grant(void **state)
{
    struct fx *f = *state;
    struct tr_coord *c = open_coord(f, NULL);
    assert_int_equal(tr_coord_worker_up(c, "w-2", "{}", 2, 2), 0);
    tr_coord_worker_down(c, "w-2");
    nap(f, 500);
    char k[256];
    struct res *r = get(f, K(f, k, "coord/workers/w-2"));
    assert_int_equal(r->n_kvs, 0);
    res_free(r);
    tr_coord_close(c);
}

/* A registration made while etcd is down is written once it is back, and an
 * election started then completes: both retry by themselves. */
static void test_etcd_down_then_back(void **state)
{
    struct fx *f = *state;
    char dir[512], ep[128], url[700];
    scratch_dir(dir, sizeof(dir), "coord-restart");
    start_own_member(f, dir, NULL, ep, sizeof(ep));
    snprintf(url, sizeof(url), "etcd://%s?prefix=%scoord&timeout_ms=500", ep, f->prefix);
    struct tr_coord *c = NULL;
    assert_int_equal(tr_coord_open(&f->loop, url, &c, NULL), 0);
    assert_int_equal(script(f, "stop-etcd.sh", dir, "--keep", NULL), 0);
    struct events ev = {0};
    campaign(c, "{\"id\":\"one\"}", &ev);
    assert_int_equal(tr_coord_worker_up(c, "w-3", "{}", 2, 2), 0);
    nap(f, 1500);
    assert_int_equal(ev.n, 0);
    assert_int_equal(script(f, "start-etcd.sh", dir, NULL, NULL), 0);
    RUN_UNTIL(f, tr_coord_is_leader(c));

    struct tr_etcd *e = client(f, ep, 2000);
    char k[256];
    K(f, k, "coord/workers/w-3");
    bool found = false;
    for (int i = 0; i < 250 && !found; i++) {
        struct res r = {0};
        struct tr_etcd_op op = {.key = k, .key_len = strlen(k)};
        wait_res(f, tr_etcd_range(e, &op, on_res, &r), &r);
        found = r.status == 0 && r.n_kvs == 1;
        res_release(&r);
        if (!found)
            nap(f, 20);
    }
    assert_true(found);
    tr_coord_close(c);
    tr_etcd_close(e);
    nap(f, 200);
    stop_own_member(f);
}

/* Every allocation of open and of a registration may fail: TR_ENOMEM and
 * nothing leaked, until one succeeds. */
static void test_out_of_memory(void **state)
{
    struct fx *f = *state;
    char url[512];
    snprintf(url, sizeof(url), "etcd://%s?prefix=%scoord", g_endpoint, f->prefix);
    struct tr_coord *c = NULL;
    long n = 1;
    for (; n < 500; n++) {
        tr_alloc_fail_at(n, false);
        int rc = tr_coord_open(&f->loop, url, &c, NULL);
        tr_alloc_fail_at(0, false);
        if (rc == 0)
            break;
        assert_int_equal(rc, TR_ENOMEM);
        assert_null(c);
    }
    assert_non_null(c);
    for (n = 1; n < 100; n++) {
        tr_alloc_fail_at(n, false);
        int rc = tr_coord_worker_up(c, "w-oom", "{}", 2, 2);
        tr_alloc_fail_at(0, false);
        if (rc == 0)
            break;
        assert_int_equal(rc, TR_ENOMEM);
    }
    assert_true(n < 100);
    tr_coord_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_coordination_for_sqlite),
        cmocka_unit_test_setup_teardown(test_election_and_takeover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_loses_its_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_down_before_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_etcd_down_then_back, setup, teardown),
    };
    return cmocka_run_group_tests_name("coord", tests, group_setup, NULL);
}
