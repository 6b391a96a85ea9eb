/*
 * fuzz_http.c - the HTTP request path (lib/http): llhttp and the server's
 * callbacks, caps, authentication, routing, query and parameter decoding,
 * pipelining, long-poll answers and aborts, and JSON bodies through the
 * converters the API uses.
 *
 * No listening socket: each input is written into one end of a socketpair
 * whose other end the server adopts (tr_http_server_adopt, a TR_TESTING
 * seam), then that end is shut for writing and the loop runs until the
 * server has answered and closed. The first byte selects the configuration:
 * bit 0 configures a bearer token ("fuzz-token"), bit 1 small caps (512
 * bytes of headers, 1 KiB of body). The route table is the scheduler API's
 * (scheduler/api.c); the handlers stand in for the scheduler's, with its
 * body checks, and check what the server promises them: a matched route's
 * parameters are non-empty views into the path, a path holds no CR or LF
 * (the standby redirect copies it into a Location header), a JSON body
 * that parses survives JSON -> msgpack -> JSON.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "lib/base/log.h"
#include "lib/http/http_server.h"
#include "lib/wire/mp_json.h"
#include "tests/fuzz/json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_PENDING 8

static uv_loop_t loop;

/* Long-poll requests waiting for the next loop iteration. */
static struct tr_http_req *pending[MAX_PENDING];
static uv_timer_t later;

/* The client end of the socketpair. */
static uv_pipe_t peer;
static uv_write_t peer_write;
static uv_shutdown_t peer_shutdown;
static char peer_rbuf[65536];
static size_t answered;    /* bytes the server wrote */
static bool answer_ok;     /* they start with a status line */

/* ===================================================================== */
/* Handlers                                                              */
/* ===================================================================== */

static void respond_json(struct tr_http_req *req, int status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

/* Parameters are non-empty views into the path. */
static void check_param(struct tr_http_req *req, const char *name)
{
    struct tr_str v = tr_http_req_param(req, name);
    struct tr_str path = tr_http_req_path(req);
    if (v.p == NULL || v.len == 0 || v.p < path.p || v.p + v.len > path.p + path.len)
        abort();
}

/* The body as a JSON object, as scheduler/api_runs.c reads it; answers 400 otherwise. */
static json_t *body_object(struct tr_http_req *req)
{
    struct tr_str body = tr_http_req_body(req);
    json_error_t jerr;
    json_t *j = json_loadb(body.p, body.len, 0, &jerr);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        tr_http_respond_error(req, 400, "malformed_json", jerr.text);
        return NULL;
    }
    return j;
}

/* params -> msgpack -> JSON must give params back. */
static void check_params(const json_t *params)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (tr_json_to_mp(params, &pk) == 0) {
        struct tr_error err;
        tr_error_init(&err);
        json_t *back = tr_mp_bytes_to_json(sb.data, sb.size, &err);
        if (back == NULL || !json_same(back, params))
            abort();
        json_decref(back);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void h_runs_post(struct tr_http_req *req, void *arg)
{
    json_t *body = body_object(req);
    if (body == NULL)
        return;
    json_t *source = json_object_get(body, "source");
    json_t *pipeline = json_object_get(body, "pipeline");
    json_t *params = json_object_get(body, "params");
    if ((source && !json_is_string(source)) || (pipeline && !json_is_string(pipeline)) ||
        (!source && !pipeline) || (params && !json_is_object(params) && !json_is_null(params))) {
        tr_http_respond_error(req, 400, "invalid_request", "give 'source' or 'pipeline'");
        json_decref(body);
        return;
    }
    if (params && json_is_object(params))
        check_params(params);
    json_decref(body);
    respond_json(req, 201, json_pack("{s:s, s:s}", "run_id", "r-1", "state", "pending"));
}

static void h_runs_list(struct tr_http_req *req, void *arg)
{
    char state[32], limit[16];
    bool by_state = tr_http_req_query(req, "state", state, sizeof(state));
    if (by_state && strlen(state) >= sizeof(state))
        abort();
    long n = 100;
    if (tr_http_req_query(req, "limit", limit, sizeof(limit)))
        n = strtol(limit, NULL, 10);
    respond_json(req, 200, json_pack("{s:[], s:I}", "runs", "limit", (json_int_t)n));
}

static void on_abort(struct tr_http_req *req, void *arg)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        if (pending[i] == req)
            pending[i] = NULL;
    }
}

static void on_later(uv_timer_t *t)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        struct tr_http_req *req = pending[i];
        if (req != NULL) {
            pending[i] = NULL;
            tr_http_req_on_abort(req, NULL, NULL);
            respond_json(req, 200, json_pack("{s:s}", "state", "succeeded"));
        }
    }
}

static void h_run_get(struct tr_http_req *req, void *arg)
{
    check_param(req, "id");
    char wait[16];
    if (tr_http_req_query(req, "wait", wait, sizeof(wait))) {
        /* A long-poll: answered on a later iteration, or aborted before. */
        for (int i = 0; i < MAX_PENDING; i++) {
            if (pending[i] == NULL) {
                pending[i] = req;
                tr_http_req_on_abort(req, on_abort, NULL);
                (void)uv_timer_start(&later, on_later, 0, 0);
                return;
            }
        }
        tr_http_respond_error(req, 503, "busy", "too many waiting");
        return;
    }
    struct tr_str id = tr_http_req_param(req, "id");
    json_t *o = json_object();
    json_t *s = json_stringn(id.p, id.len);
    if (s == NULL) {
        json_decref(o);
        tr_http_respond_error(req, 404, "not_found", "no such run");
        return;
    }
    json_object_set_new(o, "run_id", s);
    respond_json(req, 200, o);
}

static void h_run_tasks(struct tr_http_req *req, void *arg)
{
    check_param(req, "id");
    char task[256];
    if (tr_http_req_query(req, "task", task, sizeof(task)) && strlen(task) >= sizeof(task))
        abort();
    tr_http_respond(req, 200, "application/json", "{\"tasks\":[]}", 12);
}

static void h_run_logs(struct tr_http_req *req, void *arg)
{
    check_param(req, "id");
    /* The content type a client asked for, which must not let it add headers. */
    struct tr_str type = tr_http_req_header(req, "x-fuzz-type");
    char ct[128];
    if (type.p != NULL && type.len < sizeof(ct)) {
        memcpy(ct, type.p, type.len);
        ct[type.len] = '\0';
        tr_http_respond(req, 200, ct, "log", 3);
        return;
    }
    tr_http_respond(req, 204, "text/plain", "ignored", 7);
}

static void h_run_cancel(struct tr_http_req *req, void *arg)
{
    check_param(req, "id");
    if (tr_http_req_body(req).len > 0) {
        json_t *body = body_object(req);
        if (body == NULL)
            return;
        json_decref(body);
    }
    respond_json(req, 202, json_pack("{s:b}", "cancelled", 1));
}

static void h_pipelines_post(struct tr_http_req *req, void *arg)
{
    json_t *body = body_object(req);
    if (body == NULL)
        return;
    json_t *source = json_object_get(body, "source");
    if (!json_is_string(source)) {
        json_decref(body);
        tr_http_respond_error(req, 400, "invalid_request", "'source' is required");
        return;
    }
    json_decref(body);
    respond_json(req, 201, json_pack("{s:s}", "name", "p"));
}

static void h_text(struct tr_http_req *req, void *arg)
{
    struct tr_str m = tr_http_req_method(req);
    if (m.len != 3 || memcmp(m.p, "GET", 3) != 0)
        abort(); /* every route of this table but the POSTs is a GET */
    tr_http_respond(req, 200, "text/plain; version=0.0.4", "ok\n", 3);
}

static const struct tr_http_route routes[] = {
    {"POST", "/v1/runs", h_runs_post, 0},
    {"GET", "/v1/runs", h_runs_list, 0},
    {"GET", "/v1/runs/{id}", h_run_get, 0},
    {"GET", "/v1/runs/{id}/tasks", h_run_tasks, 0},
    {"GET", "/v1/runs/{id}/logs", h_run_logs, 0},
    {"POST", "/v1/runs/{id}/cancel", h_run_cancel, 0},
    {"POST", "/v1/pipelines", h_pipelines_post, 0},
    {"GET", "/v1/pipelines", h_text, 0},
    {"GET", "/v1/workers", h_text, 0},
    {"GET", "/healthz", h_text, 0},
    {"GET", "/readyz", h_text, 0},
    {"GET", "/metrics", h_text, 0},
    {NULL, NULL, NULL, 0},
};

/* A standby's redirect (scheduler/leader.c), for requests with "X-Fuzz-Standby". */
static bool before(struct tr_http_req *req, void *arg)
{
    if (tr_http_req_header(req, "x-fuzz-standby").p == NULL)
        return false;
    struct tr_str path = tr_http_req_path(req);
    struct tr_str query = tr_http_req_query_string(req);
    if (memchr(path.p, '\r', path.len) || memchr(path.p, '\n', path.len) ||
        memchr(query.p, '\r', query.len) || memchr(query.p, '\n', query.len))
        abort(); /* the Location header would end early */
    struct tr_buf h;
    tr_buf_init(&h, 8192);
    int rc = tr_buf_addf(&h, "Location: http://127.0.0.1:1%.*s%s%.*s\r\n", (int)path.len,
                         path.p, query.len ? "?" : "", (int)query.len, query.p);
    if (rc < 0)
        tr_http_respond_error(req, 503, "unavailable", "standby");
    else
        tr_http_respond_extra(req, 307, "application/json", h.buf, "{}", 2);
    tr_buf_release(&h);
    return true;
}

/* ===================================================================== */
/* The client end                                                        */
/* ===================================================================== */

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(peer_rbuf, sizeof(peer_rbuf));
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)&peer))
            uv_close((uv_handle_t *)&peer, NULL);
        return;
    }
    if (nread > 0 && answered == 0)
        answer_ok = nread >= 9 && memcmp(buf->base, "HTTP/1.1 ", 9) == 0;
    answered += (size_t)nread;
}

static void peer_written(uv_write_t *w, int status)
{
}

static void peer_shut(uv_shutdown_t *s, int status)
{
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    tr_log_init("fuzz", TR_LOG_ERROR);
    /* The server may close while the client still writes, as a real client might. */
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) < 0 || uv_timer_init(&loop, &later) < 0)
        abort();
    uv_unref((uv_handle_t *)&later); /* only a started timer keeps the loop going */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *const tokens[] = {"fuzz-token", NULL};
    uint8_t flags = data[0];
    struct tr_http_config cfg = {
        .max_header_bytes = (flags & 2) ? 512 : 0,
        .max_body_bytes = (flags & 2) ? 1024 : (1u << 20),
        .tokens = (flags & 1) ? tokens : NULL,
        .routes = routes,
        .before = before,
    };
    struct tr_http_server *srv = tr_http_server_open(&loop, &cfg);
    if (srv == NULL)
        abort();
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        abort();
    if (tr_http_server_adopt(srv, fds[0]) != 0)
        abort();
    if (uv_pipe_init(&loop, &peer, 0) < 0 || uv_pipe_open(&peer, fds[1]) < 0)
        abort();
    answered = 0;
    answer_ok = false;
    uv_buf_t b = uv_buf_init((char *)data + 1, (unsigned int)(size - 1));
    if (uv_write(&peer_write, (uv_stream_t *)&peer, &b, 1, peer_written) < 0 ||
        uv_shutdown(&peer_shutdown, (uv_stream_t *)&peer, peer_shut) < 0 ||
        uv_read_start((uv_stream_t *)&peer, peer_alloc, peer_read) < 0)
        abort();
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    if (answered > 0 && !answer_ok)
        abort(); /* the server wrote something that is not an answer */
    tr_http_server_close(srv);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < MAX_PENDING; i++) {
        if (pending[i] != NULL)
            abort(); /* a request neither answered nor aborted */
    }
    return 0;
}
