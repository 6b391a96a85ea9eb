/*
 * test_http_multi.c - the worker's curl multi on a libuv loop
 * (worker/http_multi.c) against lib/http/http_server.h on 127.0.0.1:0: hundreds
 * of requests in flight at once, requests freed while in flight, the
 * response size limit, server-sent events, and a loop that closes cleanly
 * once the last reference is gone; allocation failure.
 *
 * The worker is not a library the unit tests link, so its source is
 * compiled into this test, as test_lua_modules.c does for its modules.
 *
 * Fixture: a loop, a server whose /hold route keeps requests unanswered
 * until the test releases them, and one reference on the loop's multi.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "lib/http/http_server.h"
#include "worker/http_multi.c"

#define HELD_MAX 512

struct fixture
{
    uv_loop_t loop;
    struct tr_http_server *srv;
    int port;
    struct tr_http_multi *m;
    struct tr_http_req *held[HELD_MAX]; /* server side: requests not answered yet */
    int n_held;
    int aborted;                        /* held requests whose client went away */
    int done;                           /* client side: calls that ended */
};

static void on_hold_abort(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    for (int i = 0; i < f->n_held; i++) {
        if (f->held[i] == req) {
            f->held[i] = f->held[--f->n_held];
            f->aborted++;
            return;
        }
    }
}

static void h_hold(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    assert_true(f->n_held < HELD_MAX);
    f->held[f->n_held++] = req;
    tr_http_req_on_abort(req, on_hold_abort, f);
}

static void h_big(struct tr_http_req *req, void *arg)
{
    static char body[100000];
    memset(body, 'x', sizeof(body));
    tr_http_respond(req, 200, "text/plain", body, sizeof(body));
}

static void h_sse(struct tr_http_req *req, void *arg)
{
    static const char body[] = "data: {\"a\":1}\n\n: comment\n\nevent: end\ndata: [DONE]\n\n";
    tr_http_respond(req, 200, "text/event-stream", body, sizeof(body) - 1);
}

static void h_echo(struct tr_http_req *req, void *arg)
{
    struct tr_str b = tr_http_req_body(req);
    tr_http_respond(req, 201, "text/plain", b.p, b.len);
}

static const struct tr_http_route routes[] = {
    {"GET", "/hold", h_hold, 0},
    {"GET", "/big", h_big, 0},
    {"GET", "/sse", h_sse, 0},
    {"POST", "/echo", h_echo, 0},
    {NULL, NULL, NULL, 0},
};

static int setup(void **state)
{
    struct fixture *f = tr_calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct tr_http_config cfg = {.routes = routes, .handler_arg = f};
    f->srv = tr_http_server_open(&f->loop, &cfg);
    assert_non_null(f->srv);
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_http_server_listen(f->srv, "127.0.0.1", 0, &err), 0);
    f->port = tr_http_server_port(f->srv);
    f->m = tr_http_multi_ref(&f->loop);
    assert_non_null(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tr_http_multi_unref(f->m);
    tr_http_server_close(f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    tr_free(f);
    return 0;
}

static void on_done(struct tr_http_call *c, void *arg)
{
    struct fixture *f = arg;
    f->done++;
}

/* Runs the loop until *counter reaches want; fails after 10 s (a bound, not a timing check). */
static void run_until(struct fixture *f, int *counter, int want)
{
    uint64_t limit = uv_now(&f->loop) + 10000;
    while (*counter < want) {
        assert_true(uv_now(&f->loop) < limit);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static struct tr_http_call *call_to(struct fixture *f, const char *path, size_t max)
{
    struct tr_http_call *c = tr_http_call_new(f->m, max);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->port, path);
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, 20000L);
    return c;
}

static void test_hundreds_in_flight(void **state)
{
    struct fixture *f = *state;
    enum { N = 300 };
    struct tr_http_call *calls[N];
    for (int i = 0; i < N; i++) {
        calls[i] = call_to(f, "/hold", 1024);
        assert_int_equal(tr_http_call_start(calls[i], on_done, f), 0);
    }
    run_until(f, &f->n_held, N);
    /* Every request reached the server and none is answered: all in flight. */
    assert_int_equal(tr_http_multi_in_flight(f->m), N);
    assert_int_equal(f->done, 0);
    while (f->n_held > 0)
        tr_http_respond(f->held[--f->n_held], 200, "text/plain", "held", 4);
    run_until(f, &f->done, N);
    assert_int_equal(tr_http_multi_in_flight(f->m), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(calls[i]->result, CURLE_OK);
        assert_int_equal(calls[i]->status, 200);
        assert_string_equal(calls[i]->resp.buf, "held");
        tr_http_call_free(calls[i]);
    }
}

static void test_free_while_in_flight(void **state)
{
    struct fixture *f = *state;
    enum { N = 20 };
    struct tr_http_call *calls[N];
    for (int i = 0; i < N; i++) {
        calls[i] = call_to(f, "/hold", 1024);
        assert_int_equal(tr_http_call_start(calls[i], on_done, f), 0);
    }
    run_until(f, &f->n_held, N);
    for (int i = 0; i < N; i++)
        tr_http_call_free(calls[i]);
    assert_int_equal(tr_http_multi_in_flight(f->m), 0);
    /* The connections close: the server sees every request abandoned, and
     * no done callback ever runs for a freed call. */
    run_until(f, &f->aborted, N);
    assert_int_equal(f->done, 0);
}

static void test_size_limit_and_events(void **state)
{
    struct fixture *f = *state;
    struct tr_http_call *big = call_to(f, "/big", 1000);
    struct tr_http_call *ok = call_to(f, "/big", 200000);
    struct tr_http_call *sse = call_to(f, "/sse", 1024);
    sse->sse = true;
    struct tr_http_call *post = call_to(f, "/echo", 1024);
    post->body = tr_strdup("payload");
    curl_easy_setopt(post->easy, CURLOPT_POSTFIELDS, post->body);
    assert_int_equal(tr_http_call_start(big, on_done, f), 0);
    assert_int_equal(tr_http_call_start(ok, on_done, f), 0);
    assert_int_equal(tr_http_call_start(sse, on_done, f), 0);
    assert_int_equal(tr_http_call_start(post, on_done, f), 0);
    run_until(f, &f->done, 4);
    /* Refused by its declared length, before a byte of the body. */
    assert_int_equal(big->result, CURLE_FILESIZE_EXCEEDED);
    assert_int_equal(big->resp.len, 0);
    assert_int_equal(ok->result, CURLE_OK);
    assert_int_equal(ok->resp.len, 100000);
    assert_int_equal(post->status, 201);
    assert_string_equal(post->resp.buf, "payload");
    /* Two events, [u32 len][type][u32 len][data] each; the comment is not one. */
    assert_int_equal(sse->result, CURLE_OK);
    assert_int_equal(sse->resp.len, 0);
    const char want[] = "\x07\0\0\0message\x07\0\0\0{\"a\":1}\x03\0\0\0end\x06\0\0\0[DONE]";
    assert_int_equal(sse->events.len, sizeof(want) - 1);
    assert_memory_equal(sse->events.buf, want, sizeof(want) - 1);
    tr_http_call_free(big);
    tr_http_call_free(ok);
    tr_http_call_free(sse);
    tr_http_call_free(post);
}

static void test_shared_per_loop_and_closed_by_last_ref(void **state)
{
    struct fixture *f = *state;
    struct tr_http_multi *again = tr_http_multi_ref(&f->loop);
    assert_ptr_equal(again, f->m);
    /* A call keeps the multi alive after the states' references are gone. */
    struct tr_http_call *c = call_to(f, "/big", 200000);
    assert_int_equal(tr_http_call_start(c, on_done, f), 0);
    tr_http_multi_unref(again);
    tr_http_multi_unref(f->m);
    f->m = NULL;
    run_until(f, &f->done, 1);
    assert_int_equal(c->result, CURLE_OK);
    tr_http_call_free(c); /* the last reference: the multi closes */
    struct tr_http_multi *fresh = tr_http_multi_ref(&f->loop);
    assert_non_null(fresh);
    f->m = fresh;
}

static void test_out_of_memory(void **state)
{
    struct fixture *f = *state;
    tr_alloc_fail_at(1, false);
    assert_null(tr_http_call_new(f->m, 1024));
    /* The multi is unchanged: a call made after works. */
    struct tr_http_call *c = call_to(f, "/big", 200000);
    assert_int_equal(tr_http_call_start(c, on_done, f), 0);
    run_until(f, &f->done, 1);
    assert_int_equal(c->result, CURLE_OK);
    tr_http_call_free(c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hundreds_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limit_and_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_per_loop_and_closed_by_last_ref, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
