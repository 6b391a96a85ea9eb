/*
 * http_stream.c - streamed answers (http_server.h): a head without a length,
 * then pieces written as the owner has them, the connection closing at the
 * end. The connection is in TR_HTTP_STREAMING meanwhile (http_conn.c): it
 * reads and drops whatever the client sends, notices its close at once, and
 * counts the bytes waiting in libuv's write queue (c->queued) so that the
 * owner can refuse to buffer without bound.
 *
 * Everything runs on the loop's thread.
 */
#include "lib/base/alloc.h"
#include "lib/http/http_int.h"

struct tr_http_stream
{
    struct tr_http_conn *conn;
    tr_http_stream_gone_fn gone;
    tr_http_stream_gone_fn drained;
    void *arg;
};

/* A header value must not carry a line break (header injection). */
static bool one_line(const char *v)
{
    return v == NULL || strpbrk(v, "\r\n") == NULL;
}

struct tr_http_stream *tr_http_stream_start(struct tr_http_req *req, const char *content_type,
                                            const char *extra, tr_http_stream_gone_fn gone,
                                            tr_http_stream_gone_fn drained, void *arg)
{
    struct tr_http_conn *c = req->conn;
    if (c == NULL || c->state != TR_HTTP_HANDLING || !one_line(content_type))
        return NULL;
    struct tr_http_stream *s = tr_calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    struct tr_buf h;
    tr_buf_init(&h, 0);
    int rc = tr_buf_addf(&h,
                         "HTTP/1.1 200 OK\r\nServer: trellis\r\nContent-Type: %s\r\n"
                         "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                         "Connection: close\r\n%s\r\n",
                         content_type, extra != NULL ? extra : "");
    if (rc == 0)
        rc = tr_http__write_part(c, h.buf, h.len);
    tr_buf_release(&h);
    if (rc < 0) {
        tr_free(s);
        return NULL;
    }
    /* The kernel's buffer is fixed rather than grown up to megabytes (tcp_wmem):
     * what a slow client has not read then waits where the owner counts it. */
    int sndbuf = TR_HTTP_STREAM_SNDBUF;
    (void)uv_send_buffer_size((uv_handle_t *)&c->tcp, &sndbuf);
    s->conn = c;
    s->gone = gone;
    s->drained = drained;
    s->arg = arg;
    /* The request is over; the connection stays held (n_held) as a stream. */
    tr_http__req_free(c->req);
    c->req = NULL;
    c->state = TR_HTTP_STREAMING;
    c->stream = s;
    return s;
}

int tr_http_stream_write(struct tr_http_stream *s, const void *p, size_t len)
{
    return tr_http__write_part(s->conn, p, len);
}

size_t tr_http_stream_queued(const struct tr_http_stream *s)
{
    return s->conn->queued;
}

void tr_http_stream_end(struct tr_http_stream *s)
{
    struct tr_http_conn *c = s->conn;
    c->stream = NULL;
    tr_free(s);
    tr_http__stream_finish(c);
}

void tr_http__stream_drained(struct tr_http_conn *c)
{
    struct tr_http_stream *s = c->stream;
    if (s != NULL && s->drained != NULL)
        s->drained(s->arg);
}

void tr_http__stream_gone(struct tr_http_conn *c)
{
    struct tr_http_stream *s = c->stream;
    c->stream = NULL;
    if (s == NULL)
        return;
    tr_http_stream_gone_fn gone = s->gone;
    void *arg = s->arg;
    tr_free(s);
    if (gone != NULL)
        gone(arg);
}
