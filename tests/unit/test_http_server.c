/*
 * test_http_server.c - the HTTP server end to end on 127.0.0.1, plus the
 * route matcher.
 *
 * Each test gets a fresh uv loop, a server created from the fixture's
 * config (tests adjust f->cfg and call start()), a watchdog timer that fails
 * the test instead of hanging, and a pool of raw libuv TCP clients on the
 * same loop. Clients parse answers with llhttp in response mode and never
 * allocate through lib/base/alloc.h, so that fault injection hits the server only.
 * Teardown frees the server and asserts uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <strings.h>

#include "lib/base/alloc.h"
#include "lib/http/http_int.h"

/* ===================================================================== */
/* Fixture                                                               */
/* ===================================================================== */

#define MAX_CLIENTS 8
#define DETAILED 4         /* responses kept whole per client */
#define MAX_STATUSES 4096  /* statuses kept per client */
#define WATCHDOG_MS 20000

struct resp
{
    int status;
    char headers[1024]; /* "\nname: value" per header, names lowercased */
    size_t hlen;
    char body[4096];
    size_t blen;
};

struct client
{
    struct fixture *f;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
    uv_write_t write;
    bool in_use;     /* slot taken until the close callback */
    bool connected;  /* connect callback ran with 0 */
    bool written;    /* the last write completed */
    bool eof;        /* the server closed (EOF or reset) */
    int read_error;  /* UV_ECONNRESET and friends */
    bool closing;    /* uv_close called */
    llhttp_t parser;
    bool parse_error;
    bool in_value;
    int heads_pending;             /* answers to HEAD still to come: no body */
    int n_resps;                   /* complete responses */
    struct resp resps[DETAILED];   /* the first DETAILED responses */
    int statuses[MAX_STATUSES];    /* every status, in order */
};

struct fixture
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool timed_out;
    struct tr_http_config cfg;
    const char *tokens[4];
    struct tr_http_server *srv;
    int port;
    struct client clients[MAX_CLIENTS];
    /* Handler side. */
    int handled;                 /* handler calls */
    struct tr_http_req *held;    /* a deferred request not yet answered */
    int aborts;                  /* abort callbacks */
    uint64_t defer_ms;           /* > 0: /defer answers from answer_timer */
    uv_timer_t answer_timer;
};

static llhttp_settings_t client_settings;

#define RUN_UNTIL(f, cond)                                     \
    do {                                                       \
        while (!(cond) && !(f)->timed_out)                     \
            uv_run(&(f)->loop, UV_RUN_ONCE);                   \
        if ((f)->timed_out)                                    \
            fail_msg("timed out waiting for: %s", #cond);      \
    } while (0)

static void on_watchdog(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->timed_out = true;
}

/* Handlers --------------------------------------------------------------- */

static void h_echo(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    struct tr_str a = tr_http_req_param(req, "a");
    struct tr_str b = tr_http_req_param(req, "b");
    struct tr_str none = tr_http_req_param(req, "none");
    struct tr_str h = tr_http_req_header(req, "x-TEST");
    struct tr_str m = tr_http_req_method(req);
    struct tr_str p = tr_http_req_path(req);
    char q[64], empty[8], flag[8], bad[16], small[3], nul[16];
    bool has_q = tr_http_req_query(req, "q", q, sizeof(q));
    bool has_empty = tr_http_req_query(req, "empty", empty, sizeof(empty));
    bool has_flag = tr_http_req_query(req, "flag", flag, sizeof(flag));
    bool has_bad = tr_http_req_query(req, "bad", bad, sizeof(bad));
    bool has_small = tr_http_req_query(req, "q", small, sizeof(small));
    bool has_nul = tr_http_req_query(req, "nul", nul, sizeof(nul));
    bool has_missing = tr_http_req_query(req, "missing", nul, sizeof(nul));
    char out[512];
    int n = snprintf(out, sizeof(out),
                     "%.*s %.*s a=%.*s b=%.*s none=%d q=%s empty=%s flag=%s bad=%s small=%d "
                     "nul=%d missing=%d h=%.*s",
                     (int)m.len, m.p, (int)p.len, p.p, (int)a.len, a.p, (int)b.len, b.p,
                     none.p != NULL, has_q ? q : "-", has_empty ? empty : "-",
                     has_flag ? flag : "-", has_bad ? bad : "-", has_small, has_nul,
                     has_missing, (int)h.len, h.p ? h.p : "");
    tr_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_body(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    struct tr_str b = tr_http_req_body(req);
    tr_http_respond(req, 200, "application/octet-stream", b.p, b.len);
}

static void h_path(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    struct tr_str x = tr_http_req_param(req, "x");
    tr_http_respond(req, 200, "text/plain", x.p, x.len);
}

static void h_item(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    tr_http_respond(req, 204, "text/plain", "ignored", 7);
}

static void h_healthz(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    tr_http_respond(req, 200, "text/plain", "ok", 2);
}

static void h_error(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    tr_http_respond_error(req, 409, "conflict", "quote \" backslash \\ newline \n bad \xff end");
}

static void on_req_abort(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    assert_ptr_equal(req, f->held);
    f->aborts++;
    f->held = NULL;
    uv_timer_stop(&f->answer_timer);
}

static void on_answer(uv_timer_t *t)
{
    struct fixture *f = t->data;
    struct tr_http_req *req = f->held;
    assert_non_null(req);
    f->held = NULL;
    tr_http_respond(req, 200, "text/plain", "deferred", 8);
}

static void h_defer(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    assert_null(f->held);
    f->held = req;
    tr_http_req_on_abort(req, on_req_abort, f);
    if (f->defer_ms > 0)
        uv_timer_start(&f->answer_timer, on_answer, f->defer_ms, 0);
}

static const struct tr_http_route routes[] = {
    {"GET", "/echo/{a}/{b}", h_echo, 0},
    {"POST", "/body", h_body, 0},
    {"GET", "/path/{x}", h_path, 0},
    {"GET", "/items/{id}", h_item, 0},
    {"DELETE", "/items/{id}", h_item, 0},
    {"GET", "/items/{id}", h_item, 0},
    {"GET", "/defer", h_defer, 0},
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/error", h_error, 0},
    {NULL, NULL, NULL, 0},
};

static int setup(void **state)
{
    struct fixture *f = tr_calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    f->watchdog.data = f;
    uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0);
    uv_timer_init(&f->loop, &f->answer_timer);
    f->answer_timer.data = f;
    f->cfg.routes = routes;
    f->cfg.handler_arg = f;
    *state = f;
    return 0;
}

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->in_use = false;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tr_alloc_fail_at(0, false);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *c = &f->clients[i];
        if (c->in_use && !c->closing) {
            c->closing = true;
            uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        }
    }
    tr_http_server_close(f->srv);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_close((uv_handle_t *)&f->answer_timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    tr_free(f);
    return 0;
}

static void start(struct fixture *f)
{
    f->srv = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(f->srv);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_http_server_listen(f->srv, "127.0.0.1", 0, &err);
    if (rc != 0)
        fail_msg("cannot listen: %s", err.msg);
    f->port = tr_http_server_port(f->srv);
    assert_true(f->port > 0);
}

/* Test client ------------------------------------------------------------ */

static struct resp *cur_resp(struct client *c)
{
    return c->n_resps < DETAILED ? &c->resps[c->n_resps] : NULL;
}

static void append(char *dst, size_t *len, size_t cap, const char *p, size_t n, bool lower)
{
    for (size_t i = 0; i < n && *len + 1 < cap; i++)
        dst[(*len)++] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
    dst[*len] = '\0';
}

static int c_on_begin(llhttp_t *p)
{
    struct client *c = p->data;
    struct resp *r = cur_resp(c);
    if (r != NULL)
        memset(r, 0, sizeof(*r));
    c->in_value = true;
    return 0;
}

static int c_on_field(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = p->data;
    struct resp *r = cur_resp(c);
    if (r != NULL && c->in_value)
        append(r->headers, &r->hlen, sizeof(r->headers), "\n", 1, false);
    if (r != NULL)
        append(r->headers, &r->hlen, sizeof(r->headers), at, n, true);
    c->in_value = false;
    return 0;
}

static int c_on_value(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = p->data;
    struct resp *r = cur_resp(c);
    if (r != NULL && !c->in_value)
        append(r->headers, &r->hlen, sizeof(r->headers), ": ", 2, false);
    if (r != NULL)
        append(r->headers, &r->hlen, sizeof(r->headers), at, n, false);
    c->in_value = true;
    return 0;
}

static int c_on_headers_complete(llhttp_t *p)
{
    struct client *c = p->data;
    if (c->heads_pending > 0 && p->status_code >= 200) {
        c->heads_pending--;
        return 1; /* llhttp: this response has no body */
    }
    return 0;
}

static int c_on_body(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = p->data;
    struct resp *r = cur_resp(c);
    if (r != NULL)
        append(r->body, &r->blen, sizeof(r->body), at, n, false);
    return 0;
}

static int c_on_complete(llhttp_t *p)
{
    struct client *c = p->data;
    struct resp *r = cur_resp(c);
    if (r != NULL)
        r->status = p->status_code;
    if (c->n_resps < MAX_STATUSES)
        c->statuses[c->n_resps] = p->status_code;
    c->n_resps++;
    return 0;
}

static void c_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[65536];
    buf->base = rbuf;
    buf->len = sizeof(rbuf);
}

static void c_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (nread < 0) {
        c->eof = true;
        if (nread != UV_EOF)
            c->read_error = (int)nread;
        uv_read_stop(s);
        return;
    }
    if (nread > 0 && !c->parse_error &&
        llhttp_execute(&c->parser, buf->base, (size_t)nread) != HPE_OK)
        c->parse_error = true;
}

static void c_on_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    assert_int_equal(status, 0);
    c->connected = true;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, c_alloc, c_on_read), 0);
}

static struct client *client_open(struct fixture *f)
{
    struct client *c = NULL;
    for (int i = 0; i < MAX_CLIENTS && c == NULL; i++) {
        if (!f->clients[i].in_use)
            c = &f->clients[i];
    }
    assert_non_null(c);
    memset(c, 0, sizeof(*c));
    c->f = f;
    c->in_use = true;
    llhttp_init(&c->parser, HTTP_RESPONSE, &client_settings);
    c->parser.data = c;
    assert_int_equal(uv_tcp_init(&f->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->connect.data = c;
    struct sockaddr_in addr;
    assert_int_equal(uv_ip4_addr("127.0.0.1", f->port, &addr), 0);
    assert_int_equal(
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, c_on_connect), 0);
    RUN_UNTIL(f, c->connected);
    return c;
}

static void c_on_write(uv_write_t *w, int status)
{
    struct client *c = w->data;
    c->written = true;
    if (status < 0)
        c->eof = true;
}

/* Writes len bytes and runs the loop until they are in the kernel (or the peer left). */
static void client_send_n(struct client *c, const char *data, size_t len)
{
    c->written = false;
    c->write.data = c;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
    assert_int_equal(uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, c_on_write), 0);
    RUN_UNTIL(c->f, c->written);
}

static void client_send(struct client *c, const char *data)
{
    client_send_n(c, data, strlen(data));
}

static void c_on_shutdown(uv_shutdown_t *req, int status)
{
}

static void client_shutdown(struct client *c)
{
    assert_int_equal(uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, c_on_shutdown), 0);
}

static void client_close(struct client *c)
{
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    RUN_UNTIL(c->f, !c->in_use);
}

static void wait_resps(struct client *c, int n)
{
    RUN_UNTIL(c->f, c->n_resps >= n || c->eof);
    assert_false(c->parse_error);
    assert_int_equal(c->n_resps, n);
}

static void wait_eof(struct client *c)
{
    RUN_UNTIL(c->f, c->eof);
}

/* The value of header name (lowercase) in r, or NULL. */
static const char *header(const struct resp *r, const char *name, char *out, size_t size)
{
    char key[64];
    snprintf(key, sizeof(key), "\n%s: ", name);
    const char *p = strstr(r->headers, key);
    if (p == NULL)
        return NULL;
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    snprintf(out, size, "%.*s", (int)n, p);
    return out;
}

static void assert_header(const struct resp *r, const char *name, const char *want)
{
    char v[256];
    const char *got = header(r, name, v, sizeof(v));
    if (want == NULL) {
        if (got != NULL)
            fail_msg("header '%s' should be absent, is '%s'", name, got);
        return;
    }
    if (got == NULL)
        fail_msg("header '%s' missing in '%s'", name, r->headers);
    assert_string_equal(got, want);
}

/* Checks a JSON error body: {"error":{"code":code,"message":...}}. */
static void assert_json_error(const struct resp *r, const char *code, const char *msg_part)
{
    json_error_t jerr;
    json_t *j = json_loadb(r->body, r->blen, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON (%s): %s", jerr.text, r->body);
    const char *got_code = NULL;
    const char *got_msg = NULL;
    assert_int_equal(json_unpack(j, "{s:{s:s,s:s}}", "error", "code", &got_code, "message",
                                 &got_msg),
                     0);
    assert_string_equal(got_code, code);
    if (msg_part != NULL && strstr(got_msg, msg_part) == NULL)
        fail_msg("message '%s' lacks '%s'", got_msg, msg_part);
    json_decref(j);
    assert_header(r, "content-type", "application/json");
}

/* A whole exchange on a fresh connection: the first response. */
static struct resp *exchange(struct fixture *f, const char *request, struct client **out)
{
    struct client *c = client_open(f);
    client_send(c, request);
    wait_resps(c, 1);
    if (out != NULL)
        *out = c;
    return &c->resps[0];
}

static void wait_server_idle(struct fixture *f)
{
    RUN_UNTIL(f, f->srv->n_conns == 0);
}

/* ===================================================================== */
/* Route matching                                                        */
/* ===================================================================== */

static void test_route_match(void **state)
{
    static const struct
    {
        const char *pattern;
        const char *path;
        bool match;
        int n;
        const char *name0, *value0, *value1;
    } cases[] = {
        {"/v1/runs/{id}", "/v1/runs/abc", true, 1, "id", "abc", NULL},
        {"/v1/runs/{id}/tasks", "/v1/runs/r1/tasks", true, 1, "id", "r1", NULL},
        {"/v1/runs/{id}/tasks", "/v1/runs/r1/tasks/", true, 1, "id", "r1", NULL},
        {"/v1/runs/{id}", "/v1/runs/abc/", true, 1, "id", "abc", NULL},
        {"/v1/runs/", "/v1/runs", true, 0, NULL, NULL, NULL},
        {"/v1/runs", "/v1/runs/", true, 0, NULL, NULL, NULL},
        {"/v1/runs", "/v1/runs//", false, 0, NULL, NULL, NULL},
        {"/v1/runs/{id}", "/v1/runs/", false, 0, NULL, NULL, NULL},
        {"/v1/runs/{id}", "/v1/runs", false, 0, NULL, NULL, NULL},
        {"/v1/runs/{id}", "/v1/runs//", false, 0, NULL, NULL, NULL},
        {"/v1/runs/{id}", "/v1/runs/a/b", false, 0, NULL, NULL, NULL},
        {"/v1/runs/{id}/tasks", "/v1/runs/a", false, 0, NULL, NULL, NULL},
        {"/v1/runs", "/v1//runs", false, 0, NULL, NULL, NULL},
        {"/v1/runs", "/v1/runsx", false, 0, NULL, NULL, NULL},
        {"/v1/runs", "/V1/runs", false, 0, NULL, NULL, NULL},
        {"/a/{x}/b/{y}", "/a/1/b/2", true, 2, "x", "1", "2"},
        {"/{a}/{b}/{c}/{d}", "/1/2/3/4", true, 4, "a", "1", "2"},
        {"/{a}/{b}/{c}/{d}/{e}", "/1/2/3/4/5", false, 0, NULL, NULL, NULL},
        {"/a/{x}", "/a/%2F", true, 1, "x", "%2F", NULL},
        {"/", "/", true, 0, NULL, NULL, NULL},
        {"/", "", false, 0, NULL, NULL, NULL},
        {"/", "/x", false, 0, NULL, NULL, NULL},
        {"/", "//", false, 0, NULL, NULL, NULL},
        {"/x", "/", false, 0, NULL, NULL, NULL},
        {"/x", "x", false, 0, NULL, NULL, NULL},
        {"", "/", false, 0, NULL, NULL, NULL},
        {"/healthz", "/healthz", true, 0, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(cases); i++) {
        struct tr_str names[TR_HTTP_MAX_PARAMS];
        struct tr_str values[TR_HTTP_MAX_PARAMS];
        int n = -1;
        struct tr_str path = {cases[i].path, strlen(cases[i].path)};
        bool m = tr_http_route_match(cases[i].pattern, path, names, values, &n);
        if (m != cases[i].match)
            fail_msg("case %zu: '%s' vs '%s': got %d", i, cases[i].pattern, cases[i].path, m);
        assert_int_equal(n, cases[i].match ? cases[i].n : 0);
        if (cases[i].name0 != NULL) {
            assert_true(tr_str_eq(names[0], cases[i].name0));
            assert_true(tr_str_eq(values[0], cases[i].value0));
        }
        if (cases[i].value1 != NULL)
            assert_true(tr_str_eq(values[1], cases[i].value1));
        /* NULL outputs are allowed when only the verdict matters. */
        assert_int_equal(tr_http_route_match(cases[i].pattern, path, NULL, NULL, NULL),
                         cases[i].match);
    }
    /* The path is a view: bytes past its length are not part of it. */
    const char *longer = "/v1/runs/abcXYZ/tasks";
    struct tr_str names[TR_HTTP_MAX_PARAMS];
    struct tr_str values[TR_HTTP_MAX_PARAMS];
    int n = 0;
    assert_true(tr_http_route_match("/v1/runs/{id}", (struct tr_str){longer, 12}, names, values,
                                    &n));
    assert_int_equal(n, 1);
    assert_true(tr_str_eq(values[0], "abc"));
}

/* ===================================================================== */
/* Requests and answers                                                  */
/* ===================================================================== */

static void test_get_params_query(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct resp *r = exchange(f,
                              "GET /echo/r%201/two?q=a%20b+c&empty=&flag&bad=%zz%4&nul=x%00y "
                              "HTTP/1.1\r\nHost: t\r\nX-Test: hello  \r\n\r\n",
                              NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "GET /echo/r%201/two a=r%201 b=two none=0 q=a b c empty= "
                                 "flag= bad=%zz%4 small=0 nul=0 missing=0 h=hello");
    assert_header(r, "server", "trellis");
    assert_header(r, "content-type", "text/plain");
    char len[16];
    snprintf(len, sizeof(len), "%zu", r->blen);
    assert_header(r, "content-length", len);
    assert_header(r, "connection", NULL);
    char date[64];
    assert_non_null(header(r, "date", date, sizeof(date)));
    assert_non_null(strstr(date, " GMT"));

    /* Absolute form, as proxies send it, routes on its path. */
    r = exchange(f, "GET http://127.0.0.1/path/abs?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "abs");
}

static void test_post_body_pieces(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c = client_open(f);
    /* Pieces split inside a header name, a value and the body. */
    const char *pieces[] = {"POST /bo", "dy HTTP/1.1\r\nHost: t\r\nContent-", "Length: 11\r\n",
                            "\r\nhello", " wor", "ld"};
    for (size_t i = 0; i < TR_ARRAY_LEN(pieces); i++) {
        client_send(c, pieces[i]);
        for (int k = 0; k < 3; k++)
            uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    wait_resps(c, 1);
    assert_int_equal(c->resps[0].status, 200);
    assert_string_equal(c->resps[0].body, "hello world");
    assert_header(&c->resps[0], "content-type", "application/octet-stream");

    /* A chunked body on the same connection, with a trailer. */
    client_send(c, "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    client_send(c, "6\r\n worl");
    client_send(c, "d\r\n0\r\nX-Trailer: t\r\n\r\n");
    wait_resps(c, 2);
    assert_int_equal(c->resps[1].status, 200);
    assert_string_equal(c->resps[1].body, "hello world");

    /* 100 Continue before the body when the client asks for it. */
    client_send(c, "POST /body HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    wait_resps(c, 3);
    assert_int_equal(c->resps[2].status, 100);
    client_send(c, "abc");
    wait_resps(c, 4);
    assert_int_equal(c->statuses[3], 200);
    assert_int_equal(f->handled, 3);
}

static void test_keep_alive(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c = client_open(f);
    client_send(c, "GET /path/one HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_resps(c, 1);
    client_send(c, "GET /path/two HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_resps(c, 2);
    assert_string_equal(c->resps[0].body, "one");
    assert_string_equal(c->resps[1].body, "two");
    assert_header(&c->resps[1], "connection", NULL);
    assert_false(c->eof);
    assert_int_equal(f->srv->n_conns, 1);

    /* Connection: close is honoured: the answer says so and the server closes. */
    client_send(c, "GET /path/three HTTP/1.1\r\nConnection: close\r\n\r\n");
    wait_resps(c, 3);
    assert_header(&c->resps[2], "connection", "close");
    wait_eof(c);
    client_close(c);

    /* HTTP/1.0 closes unless it asks for keep-alive. */
    struct resp *r = exchange(f, "GET /path/old HTTP/1.0\r\n\r\n", &c);
    assert_header(r, "connection", "close");
    wait_eof(c);
    client_close(c);
    r = exchange(f, "GET /path/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &c);
    assert_header(r, "connection", "keep-alive");
    client_send(c, "GET /path/again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    wait_resps(c, 2);
    assert_string_equal(c->resps[1].body, "again");
}

static void test_pipelined(void **state)
{
    struct fixture *f = *state;
    f->defer_ms = 20;
    start(f);
    struct client *c = client_open(f);
    /* The first is answered later; the others must wait for it, in order. */
    client_send(c, "GET /defer HTTP/1.1\r\n\r\nGET /path/a HTTP/1.1\r\n\r\n"
                   "POST /body HTTP/1.1\r\nContent-Length: 1\r\n\r\nbGET /path/c HTTP/1.1\r\n\r\n");
    wait_resps(c, 4);
    assert_string_equal(c->resps[0].body, "deferred");
    assert_string_equal(c->resps[1].body, "a");
    assert_string_equal(c->resps[2].body, "b");
    assert_string_equal(c->resps[3].body, "c");
    assert_int_equal(f->aborts, 0);

    /* Half-close after pipelined requests: all are answered, then the server closes. */
    struct client *d = client_open(f);
    client_send(d, "GET /path/x HTTP/1.1\r\n\r\nGET /path/y HTTP/1.1\r\n\r\n");
    client_shutdown(d);
    wait_eof(d);
    assert_int_equal(d->n_resps, 2);
    assert_string_equal(d->resps[1].body, "y");
}

static void test_backpressure(void **state)
{
    struct fixture *f = *state;
    f->defer_ms = 30;
    start(f);
    struct client *c = client_open(f);
    /* More than TR_HTTP_PIPELINE_MAX bytes queue behind a held request. */
    static char many[3000 * 32];
    size_t len = 0;
    len += (size_t)snprintf(many + len, sizeof(many) - len, "GET /defer HTTP/1.1\r\n\r\n");
    int n = 1;
    while (len + 32 < sizeof(many)) {
        len += (size_t)snprintf(many + len, sizeof(many) - len, "GET /path/%d HTTP/1.1\r\n\r\n",
                                n % 10);
        n++;
    }
    assert_true(len > TR_HTTP_PIPELINE_MAX);
    client_send_n(c, many, len);
    wait_resps(c, n);
    assert_string_equal(c->resps[0].body, "deferred");
    for (int i = 0; i < n && i < MAX_STATUSES; i++)
        assert_int_equal(c->statuses[i], 200);
    assert_int_equal(f->handled, n);
}

static void test_not_found_and_method(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c;
    struct resp *r = exchange(f, "GET /nope HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(r->status, 404);
    assert_json_error(r, "not_found", "/nope");
    assert_false(c->eof);

    client_send(c, "PUT /items/7 HTTP/1.1\r\n\r\n");
    wait_resps(c, 2);
    r = &c->resps[1];
    assert_int_equal(r->status, 405);
    assert_json_error(r, "method_not_allowed", "PUT");
    assert_header(r, "allow", "GET, DELETE");

    client_send(c, "DELETE /items/7 HTTP/1.1\r\n\r\n");
    wait_resps(c, 3);
    r = &c->resps[2];
    assert_int_equal(r->status, 204);
    assert_header(r, "content-length", NULL);
    assert_int_equal(r->blen, 0);

    /* Handler errors are JSON-escaped, invalid UTF-8 included. */
    client_send(c, "GET /error HTTP/1.1\r\n\r\n");
    wait_resps(c, 4);
    r = &c->resps[3];
    assert_int_equal(r->status, 409);
    assert_json_error(r, "conflict", "quote \" backslash \\ newline \n bad ? end");
    assert_false(c->eof);
    assert_int_equal(f->handled, 2);

    /* HEAD has no route; its 405 carries no body, so keep-alive framing holds. */
    struct client *d = client_open(f);
    d->heads_pending = 1;
    client_send(d, "HEAD /path/x HTTP/1.1\r\n\r\nGET /path/after HTTP/1.1\r\n\r\n");
    wait_resps(d, 2);
    assert_int_equal(d->resps[0].status, 405);
    assert_int_equal(d->resps[0].blen, 0);
    assert_header(&d->resps[0], "allow", "GET");
    assert_string_equal(d->resps[1].body, "after");
}

static void test_too_large(void **state)
{
    struct fixture *f = *state;
    f->cfg.max_body_bytes = 16;
    f->cfg.max_header_bytes = 256;
    start(f);
    struct client *c;
    /* Refused on the declared length, before any byte of the body. */
    struct resp *r = exchange(f, "POST /body HTTP/1.1\r\nContent-Length: 17\r\n\r\n", &c);
    assert_int_equal(r->status, 413);
    assert_json_error(r, "body_too_large", "16 bytes");
    assert_header(r, "connection", "close");
    wait_eof(c);
    client_close(c);

    /* No 100 Continue for a body that will be refused. */
    r = exchange(f, "POST /body HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n",
                 &c);
    assert_int_equal(r->status, 413);
    client_close(c);

    /* Chunked: refused when the body grows past the cap. */
    r = exchange(f,
                 "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
                 &c);
    assert_int_equal(r->status, 413);
    wait_eof(c);
    client_close(c);

    /* Exactly at the cap is fine. */
    r = exchange(f, "POST /body HTTP/1.1\r\nContent-Length: 16\r\n\r\n0123456789abcdef", &c);
    assert_int_equal(r->status, 200);
    client_close(c);

    /* Headers past max_header_bytes, in one field or in many. */
    char big[1024];
    snprintf(big, sizeof(big), "GET /path/x HTTP/1.1\r\nX-Big: %0600d\r\n\r\n", 7);
    r = exchange(f, big, &c);
    assert_int_equal(r->status, 431);
    assert_json_error(r, "headers_too_large", "256 bytes");
    wait_eof(c);
    client_close(c);
    assert_int_equal(f->handled, 1);
}

static void test_bad_request(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c;
    struct resp *r = exchange(f, "GARBAGE\r\n\r\n", &c);
    assert_int_equal(r->status, 400);
    assert_json_error(r, "bad_request", "Invalid method");
    assert_header(r, "connection", "close");
    wait_eof(c);
    client_close(c);

    /* Content-Length and Transfer-Encoding together: request smuggling, refused. */
    r = exchange(f,
                 "POST /body HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n0\r\n\r\n",
                 &c);
    assert_int_equal(r->status, 400);
    wait_eof(c);
    client_close(c);
    assert_int_equal(f->handled, 0);
}

static void test_auth(void **state)
{
    struct fixture *f = *state;
    f->tokens[0] = "s3cret";
    f->tokens[1] = "";
    f->tokens[2] = "second-token";
    f->cfg.tokens = f->tokens;
    start(f);
    static const struct
    {
        const char *auth; /* header line or "" */
        int status;
    } cases[] = {
        {"", 401},
        {"Authorization: Bearer s3cre\r\n", 401},
        {"Authorization: Bearer s3cretX\r\n", 401},
        {"Authorization: Bearer \r\n", 401},
        {"Authorization: Basic s3cret\r\n", 401},
        {"Authorization: s3cret\r\n", 401},
        {"Authorization: Bearer s3cret\r\n", 200},
        {"Authorization: bearer second-token\r\n", 200},
        {"Authorization: Bearer   second-token  \r\n", 200},
    };
    struct client *c = client_open(f);
    for (size_t i = 0; i < TR_ARRAY_LEN(cases); i++) {
        char req[256];
        snprintf(req, sizeof(req), "GET /path/ok HTTP/1.1\r\n%s\r\n", cases[i].auth);
        client_send(c, req);
        wait_resps(c, (int)i + 1);
        if (c->statuses[i] != cases[i].status)
            fail_msg("case %zu '%s': status %d", i, cases[i].auth, c->statuses[i]);
        if (i < DETAILED && cases[i].status == 401) {
            assert_json_error(&c->resps[i], "unauthorized", "Bearer");
            assert_header(&c->resps[i], "www-authenticate", "Bearer");
        }
    }
    assert_false(c->eof);
    client_close(c);

    /* Liveness needs no token; the rest of the API, unknown paths included, does. */
    struct resp *r = exchange(f, "GET /healthz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ok");
    client_send(c, "POST /healthz HTTP/1.1\r\n\r\n");
    client_send(c, "GET /nope HTTP/1.1\r\n\r\n");
    wait_resps(c, 3);
    assert_int_equal(c->resps[1].status, 401);
    assert_int_equal(c->resps[2].status, 401);
    assert_int_equal(f->handled, 4);
}

/* A standby scheduler's gate: answers /gate/... itself with a redirect that
 * keeps the path and the raw query, and lets everything else through. */
static bool before_gate(struct tr_http_req *req, void *arg)
{
    struct fixture *f = arg;
    struct tr_str p = tr_http_req_path(req);
    if (p.len < 5 || memcmp(p.p, "/gate", 5) != 0)
        return false;
    f->handled++;
    struct tr_str q = tr_http_req_query_string(req);
    char h[256];
    snprintf(h, sizeof(h), "Location: http://leader%.*s%s%.*s\r\n", (int)p.len, p.p,
             q.len ? "?" : "", (int)q.len, q.p);
    tr_http_respond_extra(req, 307, "application/json", h, "{}", 2);
    return true;
}

static void test_before_hook(void **state)
{
    struct fixture *f = *state;
    f->tokens[0] = "s3cret";
    f->tokens[1] = NULL;
    f->cfg.tokens = f->tokens;
    f->cfg.before = before_gate;
    start(f);
    struct client *c = client_open(f);
    client_send(c, "GET /gate/x?a=1&b=%2F HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    client_send(c, "GET /gate/y HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    client_send(c, "GET /path/ok HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    /* The gate runs after authentication. */
    client_send(c, "GET /gate/z HTTP/1.1\r\n\r\n");
    wait_resps(c, 4);
    assert_int_equal(c->resps[0].status, 307);
    assert_header(&c->resps[0], "location", "http://leader/gate/x?a=1&b=%2F");
    assert_string_equal(c->resps[0].body, "{}");
    assert_int_equal(c->resps[1].status, 307);
    assert_header(&c->resps[1], "location", "http://leader/gate/y");
    assert_int_equal(c->resps[2].status, 200);
    assert_string_equal(c->resps[2].body, "ok");
    assert_int_equal(c->resps[3].status, 401);
    assert_int_equal(f->handled, 3);
    client_close(c);
    /* Readiness, like liveness, needs no token (here no route: 404, not 401). */
    struct resp *r = exchange(f, "GET /readyz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(r->status, 404);
    client_close(c);
}

/* ===================================================================== */
/* Long-poll                                                             */
/* ===================================================================== */

static void test_deferred(void **state)
{
    struct fixture *f = *state;
    f->defer_ms = 10;
    start(f);
    struct client *c;
    struct resp *r = exchange(f, "GET /defer HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "deferred");
    /* Answered, so leaving afterwards is no abort. */
    client_close(c);
    wait_server_idle(f);
    assert_int_equal(f->aborts, 0);
    assert_null(f->held);
}

static void test_abort(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c = client_open(f);
    client_send(c, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    client_close(c);
    RUN_UNTIL(f, f->aborts > 0);
    assert_int_equal(f->aborts, 1);
    assert_null(f->held);
    wait_server_idle(f);
    tr_http_server_close(f->srv);
    f->srv = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->aborts, 1);
}

static void test_free_with_pending(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct client *c = client_open(f);
    client_send(c, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    tr_http_server_close(f->srv);
    f->srv = NULL;
    assert_int_equal(f->aborts, 1);
    assert_null(f->held);
    wait_eof(c);
    assert_int_equal(c->n_resps, 0);
}

/* ===================================================================== */
/* In-process requests                                                   */
/* ===================================================================== */

struct local_answer
{
    int calls;
    int status;
    char body[512];
};

static void on_local(void *arg, int status, const char *body, size_t len)
{
    struct local_answer *a = arg;
    a->calls++;
    a->status = status;
    snprintf(a->body, sizeof(a->body), "%.*s", (int)len, body ? body : "");
}

/* The handlers HTTP clients reach, without a connection; answers to a callback. */
static void test_local_requests(void **state)
{
    struct fixture *f = *state;
    start(f);
    struct local_answer a = {0};
    /* Answered at once: the callback runs inside the call. */
    assert_int_equal(tr_http_local_request(f->srv, "GET", "/path/xyz?q=1", NULL, 0, on_local, &a),
                     0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "xyz");
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "POST", "/body", "{\"k\":1}", 7, on_local, &a), 0);
    assert_string_equal(a.body, "{\"k\":1}");
    /* Errors keep their JSON body, 404 and 405 as over HTTP. */
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "GET", "/error", NULL, 0, on_local, &a), 0);
    assert_int_equal(a.status, 409);
    assert_non_null(strstr(a.body, "\"code\":\"conflict\""));
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "GET", "/nowhere", NULL, 0, on_local, &a), 0);
    assert_int_equal(a.status, 404);
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "PUT", "/body", NULL, 0, on_local, &a), 0);
    assert_int_equal(a.status, 405);
    assert_int_equal(tr_http_local_request(f->srv, "BREW", "/body", NULL, 0, on_local, &a),
                     TR_EINVAL);
    assert_int_equal(tr_http_local_pending(f->srv), 0);
    /* Held by its handler (a write answered after its commit): answered later. */
    f->defer_ms = 5;
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "GET", "/defer", NULL, 0, on_local, &a), 0);
    assert_int_equal(a.calls, 0);
    assert_int_equal(tr_http_local_pending(f->srv), 1);
    RUN_UNTIL(f, a.calls > 0);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "deferred");
    assert_int_equal(tr_http_local_pending(f->srv), 0);
    /* Still held when the server goes: abort callback, then status 0, nothing leaks. */
    f->defer_ms = 0;
    a = (struct local_answer){0};
    assert_int_equal(tr_http_local_request(f->srv, "GET", "/defer", NULL, 0, on_local, &a), 0);
    assert_non_null(f->held);
    tr_http_server_close(f->srv);
    f->srv = NULL;
    assert_int_equal(f->aborts, 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 0);
}

/* ===================================================================== */
/* Listening and connections                                             */
/* ===================================================================== */

static void test_listen_policy(void **state)
{
    struct fixture *f = *state;
    struct tr_error err;
    f->srv = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(f->srv);
    assert_int_equal(tr_http_server_listen(f->srv, "0.0.0.0", 0, &err), TR_EADDR);
    assert_int_equal(err.code, TR_EADDR);
    assert_non_null(strstr(err.msg, "--token-file"));
    assert_non_null(strstr(err.msg, "0.0.0.0"));
    assert_int_equal(tr_http_server_listen(f->srv, "::", 0, &err), TR_EADDR);
    assert_int_equal(tr_http_server_listen(f->srv, "192.168.1.1", 0, &err), TR_EADDR);
    assert_int_equal(tr_http_server_listen(f->srv, "::ffff:10.0.0.1", 0, &err), TR_EADDR);
    assert_int_equal(tr_http_server_listen(f->srv, "example.com", 0, &err), TR_EINVAL);
    assert_int_equal(tr_http_server_listen(f->srv, "127.0.0.1", 70000, &err), TR_EINVAL);
    assert_int_equal(tr_http_server_port(f->srv), TR_EINVAL);
    assert_int_equal(tr_http_server_listen(f->srv, "localhost", 0, &err), 0);
    f->port = tr_http_server_port(f->srv);
    assert_true(f->port > 0);
    struct resp *r = exchange(f, "GET /healthz HTTP/1.1\r\n\r\n", NULL);
    assert_int_equal(r->status, 200);
    assert_int_equal(tr_http_server_listen(f->srv, "127.0.0.1", 0, &err), TR_EINVAL);

    /* Any address of 127.0.0.0/8 is loopback. */
    struct tr_http_server *s2 = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(s2);
    assert_int_equal(tr_http_server_listen(s2, "127.0.0.2", 0, &err), 0);
    tr_http_server_close(s2);

    /* ::1 is loopback too: the policy lets it through, whether or not IPv6 is up. */
    s2 = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(s2);
    tr_error_init(&err);
    int rc = tr_http_server_listen(s2, "[::1]", 0, &err);
    if (rc != 0)
        assert_null(strstr(err.msg, "token"));
    tr_http_server_close(s2);

    /* With tokens, any address. */
    f->tokens[0] = "t0k3n";
    f->cfg.tokens = f->tokens;
    s2 = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(s2);
    assert_int_equal(tr_http_server_listen(s2, "0.0.0.0", 0, &err), 0);
    assert_true(tr_http_server_port(s2) > 0);
    tr_http_server_close(s2);

    /* Tokens that are all empty are no tokens. */
    const char *empty[] = {"", NULL};
    f->cfg.tokens = empty;
    s2 = tr_http_server_open(&f->loop, &f->cfg);
    assert_non_null(s2);
    assert_int_equal(tr_http_server_listen(s2, "0.0.0.0", 0, &err), TR_EADDR);
    tr_http_server_close(s2);
}

static void test_max_connections(void **state)
{
    struct fixture *f = *state;
    f->cfg.max_connections = 1;
    start(f);
    struct client *a;
    struct resp *r = exchange(f, "GET /path/a HTTP/1.1\r\n\r\n", &a);
    assert_int_equal(r->status, 200);
    /* At the cap, a new connection closes the one idle the longest (a health
     * probe must get in), and is served. */
    struct client *b = client_open(f);
    wait_eof(a);
    client_send(b, "GET /path/b HTTP/1.1\r\n\r\n");
    wait_resps(b, 1);
    assert_string_equal(b->resps[0].body, "b");
    client_close(a);
    client_close(b);
    RUN_UNTIL(f, f->srv->n_active == 0);
    /* A connection with an incomplete request goes the same way. */
    struct client *slow = client_open(f);
    client_send(slow, "GET /path/slow HTTP/1.1\r\nX-Slow: ");
    struct client *c = client_open(f);
    wait_eof(slow);
    client_send(c, "GET /path/c HTTP/1.1\r\n\r\n");
    wait_resps(c, 1);
    client_close(slow);
    client_close(c);
    RUN_UNTIL(f, f->srv->n_active == 0);
    /* A request with its handler is never closed that way: the newcomer is. */
    struct client *h = client_open(f);
    client_send(h, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    struct client *d = client_open(f);
    wait_eof(d);
    assert_int_equal(d->n_resps, 0);
    assert_non_null(f->held);
    client_close(d);
    client_close(h);
    RUN_UNTIL(f, f->aborts > 0);
    RUN_UNTIL(f, f->srv->n_active == 0);
    r = exchange(f, "GET /path/e HTTP/1.1\r\n\r\n", NULL);
    assert_int_equal(r->status, 200);
}

/* Handlers may hold requests only while a reserve of connections stays free. */
static void test_may_hold(void **state)
{
    struct fixture *f = *state;
    f->cfg.max_connections = 4; /* small caps keep half free */
    start(f);
    struct client *c1 = client_open(f);
    client_send(c1, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    assert_true(tr_http_req_may_hold(f->held)); /* 1 held of 2 allowed */
    struct tr_http_req *first = f->held;
    f->held = NULL;
    struct client *c2 = client_open(f);
    client_send(c2, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    assert_true(tr_http_req_may_hold(f->held)); /* 2 of 2 */
    struct tr_http_req *second = f->held;
    f->held = NULL;
    struct client *c3 = client_open(f);
    client_send(c3, "GET /defer HTTP/1.1\r\n\r\n");
    RUN_UNTIL(f, f->held != NULL);
    assert_false(tr_http_req_may_hold(f->held)); /* a third would leave no reserve */
    tr_http_respond(f->held, 200, "text/plain", "now", 3);
    f->held = NULL;
    tr_http_respond(first, 200, "text/plain", "1", 1);
    tr_http_respond(second, 200, "text/plain", "2", 1);
    wait_resps(c1, 1);
    wait_resps(c2, 1);
    wait_resps(c3, 1);
    assert_string_equal(c3->resps[0].body, "now");
    client_close(c1);
    client_close(c2);
    client_close(c3);
}

/* ===================================================================== */
/* Hostile input                                                         */
/* ===================================================================== */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Sends data, half-closes and waits for the server to close: no answer is required. */
static void throw_at(struct fixture *f, const char *data, size_t len)
{
    struct client *c = client_open(f);
    if (len > 0)
        client_send_n(c, data, len);
    client_shutdown(c);
    wait_eof(c);
    for (int i = 0; i < c->n_resps && i < MAX_STATUSES; i++) {
        int s = c->statuses[i];
        if (s != 200 && s != 204 && s != 400 && s != 404 && s != 405 && s != 413 && s != 431)
            fail_msg("unexpected status %d", s);
    }
    client_close(c);
}

static void test_fuzz(void **state)
{
    struct fixture *f = *state;
    f->cfg.max_header_bytes = 2048;
    f->cfg.max_body_bytes = 1024;
    start(f);
    static const char valid[] = "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                "X-A: b\r\n\r\nhelloGET /path/z?q=1 HTTP/1.1\r\n\r\n";
    static char buf[128 * 1024];
    /* Random bytes, NULs included. */
    for (int i = 0; i < 60; i++) {
        size_t len = 1 + rnd() % 700;
        for (size_t k = 0; k < len; k++)
            buf[k] = (char)rnd();
        throw_at(f, buf, len);
    }
    /* Every truncation of a valid pipeline, and mutations of it. */
    for (size_t cut = 0; cut < sizeof(valid) - 1; cut += 3)
        throw_at(f, valid, cut);
    for (int i = 0; i < 120; i++) {
        memcpy(buf, valid, sizeof(valid));
        for (int m = 0; m < 1 + (int)(rnd() % 4); m++) {
            size_t at = rnd() % (sizeof(valid) - 1);
            static const char interesting[] = {'\0', '\r', '\n', ' ', ':', '%', '\xff', '0'};
            buf[at] = rnd() % 2 ? (char)rnd() : interesting[rnd() % sizeof(interesting)];
        }
        throw_at(f, buf, sizeof(valid) - 1 - rnd() % 8);
    }
    /* A huge header, many headers, NUL bytes in the URL and in a value. */
    size_t len = (size_t)snprintf(buf, sizeof(buf), "GET /path/x HTTP/1.1\r\nX: ");
    memset(buf + len, 'a', 100 * 1024);
    len += 100 * 1024;
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\r\n\r\n");
    throw_at(f, buf, len);
    len = (size_t)snprintf(buf, sizeof(buf), "GET /path/x HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "X%d: v\r\n", i);
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\r\n");
    throw_at(f, buf, len);
    static const char nul_url[] = "GET /path/\0x HTTP/1.1\r\n\r\n";
    throw_at(f, nul_url, sizeof(nul_url) - 1);
    static const char nul_value[] = "GET /path/x HTTP/1.1\r\nX: a\0b\r\n\r\n";
    throw_at(f, nul_value, sizeof(nul_value) - 1);
    static const char upgrade[] = "GET /path/u HTTP/1.1\r\nConnection: upgrade\r\n"
                                  "Upgrade: websocket\r\n\r\n\x81\x05hello";
    throw_at(f, upgrade, sizeof(upgrade) - 1);
    static const char connect[] = "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\nxyz";
    throw_at(f, connect, sizeof(connect) - 1);

    /* Still serving, and nothing left behind. */
    wait_server_idle(f);
    struct resp *r = exchange(f, "GET /path/alive HTTP/1.1\r\n\r\n", NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "alive");
}

/* ===================================================================== */
/* Allocation failures                                                   */
/* ===================================================================== */

static void test_oom_new(void **state)
{
    struct fixture *f = *state;
    f->tokens[0] = "tok";
    f->cfg.tokens = f->tokens;
    for (long n = 1;; n++) {
        assert_true(n < 100);
        tr_alloc_fail_at(n, false);
        struct tr_http_server *srv = tr_http_server_open(&f->loop, &f->cfg);
        tr_alloc_fail_at(0, false);
        if (srv != NULL) {
            f->srv = srv;
            break;
        }
    }
}

static void test_oom_request(void **state)
{
    struct fixture *f = *state;
    start(f);
    int answered = 0;
    for (long n = 1;; n++) {
        assert_true(n < 200);
        struct client *c = client_open(f);
        tr_alloc_fail_at(n, false);
        client_send(c, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        RUN_UNTIL(f, c->n_resps > 0 || c->eof);
        /* The failure hit nothing when the next allocation is the one that fails. */
        void *probe = tr_malloc(1);
        bool untouched = probe == NULL;
        tr_free(probe);
        tr_alloc_fail_at(0, false);
        if (c->n_resps > 0) {
            assert_int_equal(c->resps[0].status, 200);
            assert_string_equal(c->resps[0].body, "abc");
            answered++;
        }
        client_close(c);
        wait_server_idle(f);
        if (untouched) {
            assert_int_equal(c->n_resps, 1);
            break;
        }
    }
    assert_true(answered >= 1);
}

int main(void)
{
    llhttp_settings_init(&client_settings);
    client_settings.on_message_begin = c_on_begin;
    client_settings.on_header_field = c_on_field;
    client_settings.on_header_value = c_on_value;
    client_settings.on_headers_complete = c_on_headers_complete;
    client_settings.on_body = c_on_body;
    client_settings.on_message_complete = c_on_complete;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_match),
        cmocka_unit_test_setup_teardown(test_get_params_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_body_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_before_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_may_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fuzz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_request, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
