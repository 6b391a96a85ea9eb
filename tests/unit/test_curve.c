/*
 * test_curve.c - CURVE key files and the ZAP handler: a listed worker key
 * gets through a CURVE server socket, any other key is refused and counted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "lib/wire/curve.h"

/* Fixture: a scratch folder with a server pair and two client pairs. */
struct fixture
{
    char dir[64];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/trellis-curve.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    struct tr_error err;
    assert_int_equal(tr_curve_keygen(f->dir, "server", &err), 0);
    assert_int_equal(tr_curve_keygen(f->dir, "good", &err), 0);
    assert_int_equal(tr_curve_keygen(f->dir, "bad", &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void path_of(const struct fixture *f, const char *file, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->dir, file);
}

static void test_key_files(void **state)
{
    struct fixture *f = *state;
    char path[128], pub[41], sec[41], pub2[41];
    struct tr_error err;
    path_of(f, "good.key", path, sizeof(path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(tr_curve_load_pair(path, pub, sec, &err), 0);
    assert_int_equal(strlen(pub), 40);
    assert_int_equal(strlen(sec), 40);
    /* The .pub file and the pair agree; the pair also serves as a public key file. */
    path_of(f, "good.pub", path, sizeof(path));
    assert_int_equal(tr_curve_load_public(path, pub2, &err), 0);
    assert_string_equal(pub, pub2);
    path_of(f, "good.key", path, sizeof(path));
    assert_int_equal(tr_curve_load_public(path, pub2, &err), 0);
    assert_string_equal(pub, pub2);
    /* Refusals. */
    assert_int_equal(tr_curve_keygen(f->dir, "good", &err), TR_EEXIST);
    path_of(f, "missing.key", path, sizeof(path));
    assert_true(tr_curve_load_pair(path, pub, sec, &err) < 0);
    assert_non_null(strstr(err.msg, "missing.key"));
    path_of(f, "garbage.pub", path, sizeof(path));
    FILE *g = fopen(path, "w");
    fputs("not a key\n", g);
    fclose(g);
    assert_int_equal(tr_curve_load_public(path, pub, &err), TR_EINVAL);
}

/* A client with key pair `who` that has sent one message; the caller closes it. */
static void *client_send(struct fixture *f, void *ctx, const char *endpoint, const char *who)
{
    char path[128], pub[41], sec[41], spub[41];
    struct tr_error err;
    snprintf(path, sizeof(path), "%s/%s.key", f->dir, who);
    assert_int_equal(tr_curve_load_pair(path, pub, sec, &err), 0);
    path_of(f, "server.pub", path, sizeof(path));
    assert_int_equal(tr_curve_load_public(path, spub, &err), 0);
    void *c = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, spub, 41);
    zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, pub, 41);
    zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, sec, 41);
    assert_int_equal(zmq_connect(c, endpoint), 0);
    zmq_send(c, who, strlen(who), 0);
    return c;
}

static void test_zap_admits_listed_keys_only(void **state)
{
    struct fixture *f = *state;
    void *ctx = zmq_ctx_new();
    struct tr_error err;
    tr_error_init(&err);
    char allow[128];
    path_of(f, "allowed", allow, sizeof(allow));
    mkdir(allow, 0700);
    char from[160], to[160];
    path_of(f, "good.pub", from, sizeof(from));
    snprintf(to, sizeof(to), "%s/good.pub", allow);
    assert_int_equal(link(from, to), 0);
    struct tr_zap *zap = tr_zap_open(ctx, allow, &err);
    assert_non_null(zap);
    assert_int_equal(tr_zap_allowed(zap), 1);

    char path[128], spub[41], ssec[41];
    path_of(f, "server.key", path, sizeof(path));
    assert_int_equal(tr_curve_load_pair(path, spub, ssec, &err), 0);
    void *srv = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, linger = 0, timeout = 3000;
    zmq_setsockopt(srv, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(srv, ZMQ_CURVE_SERVER, &one, sizeof(one));
    zmq_setsockopt(srv, ZMQ_CURVE_SECRETKEY, ssec, 41);
    zmq_setsockopt(srv, ZMQ_ZAP_DOMAIN, "trellis", 7);
    zmq_setsockopt(srv, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    assert_int_equal(zmq_bind(srv, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t sz = sizeof(ep);
    zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &sz);

    void *bad = client_send(f, ctx, ep, "bad");
    void *good = client_send(f, ctx, ep, "good");
    /* Only the good client's message arrives: [identity, "good"]. */
    char id[256], body[64];
    assert_true(zmq_recv(srv, id, sizeof(id), 0) >= 0);
    int n = zmq_recv(srv, body, sizeof(body), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(body, "good", 4);
    for (int i = 0; i < 100 && tr_zap_refused(zap) == 0; i++)
        usleep(10000);
    assert_int_equal(tr_zap_refused(zap), 1);
    timeout = 200;
    zmq_setsockopt(srv, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    assert_int_equal(zmq_recv(srv, id, sizeof(id), 0), -1); /* nothing from "bad" */

    zmq_close(bad);
    zmq_close(good);
    zmq_close(srv);
    zmq_ctx_shutdown(ctx);
    tr_zap_close(zap);
    zmq_ctx_term(ctx);
}

static void test_zap_refuses_bad_lists(void **state)
{
    struct fixture *f = *state;
    void *ctx = zmq_ctx_new();
    struct tr_error err;
    tr_error_init(&err);
    char path[128];
    path_of(f, "empty.list", path, sizeof(path));
    FILE *e = fopen(path, "w");
    fputs("# no keys here\n\n", e);
    fclose(e);
    assert_null(tr_zap_open(ctx, path, &err));
    assert_non_null(strstr(err.msg, "no worker key"));
    path_of(f, "nope", path, sizeof(path));
    assert_null(tr_zap_open(ctx, path, &err));
    assert_non_null(strstr(err.msg, "nope"));
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zap_admits_listed_keys_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zap_refuses_bad_lists, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
