/*
 * http_conn.c - one HTTP connection: reads, the llhttp callbacks, answers and
 * closing.
 *
 * A connection moves through enum tr_http_conn_state:
 *   READING  -> HANDLING  when llhttp completes a request: on_message_complete
 *                         pauses the parser, so the bytes after the request
 *                         (pipelined ones) stay unparsed;
 *   HANDLING -> WRITING   when the request is answered (tr_http__send);
 *   WRITING  -> READING   once the answer is written and the client keeps the
 *                         connection: the parser resumes on what was buffered;
 *   WRITING  -> LINGERING when the connection must end: FIN first, then input
 *                         is drained until EOF, so that a client still sending
 *                         (a refused body) reads our answer instead of a RST;
 *   any      -> CLOSED    on EOF, a socket error, a timeout or server free.
 * The socket stays read in every state but CLOSED, so that a client leaving a
 * long-poll is noticed at once; while the parser is paused the bytes are
 * buffered in `in`, and reading stops past TR_HTTP_PIPELINE_MAX
 * (back-pressure).
 *
 * Deadlines (the connection's one timer): a new connection must start a
 * request within TR_HTTP_REQUEST_MS; a request's head must be whole within
 * TR_HTTP_REQUEST_MS of its first byte, whatever trickles in meanwhile; its
 * body must bring TR_HTTP_PROGRESS bytes in each TR_HTTP_REQUEST_MS; a
 * keep-alive connection may wait TR_HTTP_IDLE_MS for its next request. At the
 * connection cap, a new connection closes the connection that has been
 * READING (idle, or with an incomplete request) the longest, so that a
 * health probe always gets in; requests with their handler are never closed
 * that way, and handlers keep TR_HTTP_RESERVE connections free of long-polls
 * (tr_http_req_may_hold).
 *
 * Invariants: c->req is non-NULL in HANDLING. A request leaves the connection
 * either through tr_http__send (answered: no abort callback) or through
 * tr_http__conn_close (its abort callback runs if it was with its handler).
 * The struct is freed by the close callback of the last of its two handles.
 * Everything runs on the loop's thread.
 */
#include <limits.h>
#include <strings.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"
#include "lib/http/http_int.h"

/* An answer (or a 100 Continue) on its way to the socket. */
struct http_write
{
    uv_write_t req; /* req.handle->data is the connection */
    bool final;     /* the answer to a request, not an interim 100 Continue */
    size_t part;    /* bytes of a streamed answer counted in c->queued, else 0 */
    char data[];    /* the bytes written */
};

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ===================================================================== */
/* Timers and reading                                                    */
/* ===================================================================== */

static void on_timer(uv_timer_t *t)
{
    tr_http__conn_close(t->data);
}

static void arm_timer(struct tr_http_conn *c, uint64_t ms)
{
    (void)uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Every read lands in the server's buffer and is consumed before on_read returns. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tr_http_conn *c = h->data;
    buf->base = c->srv->rbuf;
    buf->len = sizeof(c->srv->rbuf);
}

/* Starts or stops reading as the state and the buffered bytes require. */
static void update_reading(struct tr_http_conn *c)
{
    if (c->state == TR_HTTP_CLOSED)
        return;
    bool want = !c->peer_eof &&
                (c->state == TR_HTTP_READING || c->state == TR_HTTP_LINGERING ||
                 c->state == TR_HTTP_STREAMING || c->in.len < TR_HTTP_PIPELINE_MAX);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            tr_http__conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* ===================================================================== */
/* Closing                                                               */
/* ===================================================================== */

static void on_close(uv_handle_t *h)
{
    struct tr_http_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct tr_http_server *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->n_conns--;
    tr_buf_release(&c->in);
#ifndef NDEBUG
    memset(c, 0xa5, sizeof(*c));
#endif
    tr_free(c);
    tr_http__server_maybe_free(srv);
}

void tr_http__conn_close(struct tr_http_conn *c)
{
    if (c->state == TR_HTTP_CLOSED)
        return;
    enum tr_http_conn_state was = c->state;
    c->state = TR_HTTP_CLOSED;
    if (was == TR_HTTP_HANDLING || was == TR_HTTP_STREAMING)
        c->srv->n_held--;
    if (was == TR_HTTP_STREAMING)
        tr_http__stream_gone(c);
    if (c->counted) {
        c->srv->n_active--;
        c->counted = false;
    }
    struct tr_http_req *req = c->req;
    c->req = NULL;
    /* The state is CLOSED before the callback runs, so that whatever it calls
     * (even tr_http_server_close) cannot close or answer this connection again. */
    if (req != NULL && was == TR_HTTP_HANDLING && req->abort_cb != NULL)
        req->abort_cb(req, req->abort_arg);
    tr_http__req_free(req);
    uv_close((uv_handle_t *)&c->tcp, on_close);
    uv_close((uv_handle_t *)&c->timer, on_close);
}

static void on_shutdown(uv_shutdown_t *sreq, int status)
{
    struct tr_http_conn *c = sreq->handle->data;
    if (status < 0)
        tr_http__conn_close(c);
}

/* Sends FIN and drains the client until it closes too, within TR_HTTP_LINGER_MS. */
static void linger(struct tr_http_conn *c)
{
    c->state = TR_HTTP_LINGERING;
    tr_buf_release(&c->in);
    arm_timer(c, TR_HTTP_LINGER_MS);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        tr_http__conn_close(c);
        return;
    }
    update_reading(c);
}

/* ===================================================================== */
/* Answers                                                               */
/* ===================================================================== */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: break;
    }
    /* Clients act on the class, so an unlisted code still says which one it is. */
    static const char *const classes[] = {"Informational", "Success", "Redirection",
                                          "Client Error", "Server Error"};
    return classes[status / 100 - 1];
}

/* The Date header (RFC 9110 IMF-fixdate), without the locale strftime would use. */
static void http_date(char *out, size_t size)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11) {
        snprintf(out, size, "Thu, 01 Jan 1970 00:00:00 GMT");
        return;
    }
    snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void process(struct tr_http_conn *c);

static void on_write(uv_write_t *wreq, int status)
{
    struct http_write *w = (struct http_write *)wreq;
    struct tr_http_conn *c = wreq->handle->data;
    bool final = w->final;
    c->queued -= w->part;
    tr_free(w);
    if (c->state == TR_HTTP_CLOSED)
        return;
    if (status < 0) {
        tr_http__conn_close(c);
        return;
    }
    /* A streamed answer's stall timer runs only while bytes wait for the client. */
    if (c->state == TR_HTTP_STREAMING && c->queued == 0) {
        (void)uv_timer_stop(&c->timer);
        tr_http__stream_drained(c);
    }
    if (!final || c->state != TR_HTTP_WRITING)
        return;
    if (c->close_after) {
        /* A client that already sent its FIN has nothing left to drain. */
        if (c->peer_eof)
            tr_http__conn_close(c);
        else
            linger(c);
        return;
    }
    c->state = TR_HTTP_READING;
    c->reading_since = uv_now(c->srv->loop);
    llhttp_resume(&c->parser);
    arm_timer(c, TR_HTTP_IDLE_MS);
    process(c);
    /* After the client's FIN, only requests already buffered are served. */
    if (c->state == TR_HTTP_READING && c->peer_eof) {
        tr_http__conn_close(c);
        return;
    }
    update_reading(c);
}

/* Queues bytes on c; false (and nothing queued) on failure. */
static bool write_bytes(struct tr_http_conn *c, struct http_write *w, size_t len)
{
    if (len > UINT_MAX) {
        tr_free(w);
        return false;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        tr_free(w);
        return false;
    }
    return true;
}

int tr_http__write_part(struct tr_http_conn *c, const void *p, size_t len)
{
    if (c->state == TR_HTTP_CLOSED)
        return TR_EIO;
    if (len == 0)
        return 0;
    struct http_write *w = len <= SIZE_MAX - sizeof(*w) ? tr_malloc(sizeof(*w) + len) : NULL;
    if (w == NULL)
        return TR_ENOMEM;
    w->final = false;
    w->part = len;
    memcpy(w->data, p, len);
    if (!write_bytes(c, w, len))
        return TR_EIO;
    c->queued += len;
    /* A client that reads nothing for TR_HTTP_IDLE_MS while bytes wait is gone. */
    if (!uv_is_active((uv_handle_t *)&c->timer))
        arm_timer(c, TR_HTTP_IDLE_MS);
    return 0;
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Tells a client waiting on "Expect: 100-continue" to send its body. */
static void send_continue(struct tr_http_conn *c)
{
    struct http_write *w = tr_malloc(sizeof(*w) + sizeof(continue_line));
    if (w == NULL)
        return; /* Harmless: the client sends the body after its own timeout. */
    w->final = false;
    w->part = 0;
    memcpy(w->data, continue_line, sizeof(continue_line));
    (void)write_bytes(c, w, sizeof(continue_line) - 1);
}

/* A content type with a line break would let a handler inject headers. */
static bool header_value_ok(const char *v)
{
    return strpbrk(v, "\r\n") == NULL;
}

void tr_http__send(struct tr_http_conn *c, int status, const char *content_type,
                   const char *body, size_t len, const char *extra, bool close)
{
    TR_ASSERT(c->state == TR_HTTP_READING || c->state == TR_HTTP_HANDLING);
    if (c->state == TR_HTTP_HANDLING)
        c->srv->n_held--;
    /* body may point into the request: it is freed only once body is copied. */
    struct tr_http_req *req = c->req;
    c->req = NULL;
    bool keep = !close && req != NULL && req->keep_alive;
    bool http10 = req != NULL && req->http_minor == 0;
    /* No route takes HEAD, but its answer (a 405) must still carry no body. */
    bool head = req != NULL && req->method != NULL && strcmp(req->method, "HEAD") == 0;

    if (status < 200 || status > 599)
        status = 500;
    /* RFC 9110: no content and no Content-Length on 204 and 304. */
    bool bodyless = status == 204 || status == 304;
    if (bodyless || body == NULL)
        len = 0;
    char date[40];
    http_date(date, sizeof(date));
    struct tr_buf h;
    tr_buf_init(&h, 0);
    int rc = tr_buf_addf(&h, "HTTP/1.1 %d %s\r\nServer: trellis\r\nDate: %s\r\n", status,
                         reason_phrase(status), date);
    if (rc == 0 && content_type != NULL && !bodyless)
        rc = tr_buf_addf(&h, "Content-Type: %s\r\n",
                         header_value_ok(content_type) ? content_type
                                                       : "application/octet-stream");
    if (rc == 0 && !bodyless)
        rc = tr_buf_addf(&h, "Content-Length: %zu\r\n", len);
    if (rc == 0 && !keep)
        rc = tr_buf_addstr(&h, "Connection: close\r\n");
    else if (rc == 0 && http10)
        rc = tr_buf_addstr(&h, "Connection: keep-alive\r\n");
    if (rc == 0 && extra != NULL)
        rc = tr_buf_addstr(&h, extra);
    if (rc == 0)
        rc = tr_buf_addstr(&h, "\r\n");
    size_t copy = head ? 0 : len;
    struct http_write *w = NULL;
    if (rc == 0 && copy <= SIZE_MAX - sizeof(*w) - h.len)
        w = tr_malloc(sizeof(*w) + h.len + copy);
    if (w == NULL) {
        tr_buf_release(&h);
        tr_http__req_free(req);
        tr_err("cannot answer a request with %d: out of memory", status);
        tr_http__conn_close(c);
        return;
    }
    w->final = true;
    w->part = 0;
    memcpy(w->data, h.buf, h.len);
    if (copy > 0)
        memcpy(w->data + h.len, body, copy);
    size_t total = h.len + copy;
    tr_buf_release(&h);
    tr_http__req_free(req);

    c->state = TR_HTTP_WRITING;
    c->close_after = !keep;
    /* The idle timer now bounds how long a client may take to read the answer. */
    arm_timer(c, TR_HTTP_IDLE_MS);
    if (!write_bytes(c, w, total))
        tr_http__conn_close(c);
}

static void on_stream_finished(uv_write_t *wreq, int status)
{
    struct http_write *w = (struct http_write *)wreq;
    struct tr_http_conn *c = wreq->handle->data;
    tr_free(w);
    if (c->state == TR_HTTP_CLOSED)
        return;
    if (status < 0 || c->peer_eof)
        tr_http__conn_close(c);
    else
        linger(c);
}

void tr_http__stream_finish(struct tr_http_conn *c)
{
    TR_ASSERT(c->state == TR_HTTP_STREAMING);
    c->srv->n_held--;
    c->state = TR_HTTP_WRITING;
    c->close_after = true;
    arm_timer(c, TR_HTTP_IDLE_MS);
    /* An empty write completes after every write queued before it. */
    struct http_write *w = tr_malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init(NULL, 0);
    if (w == NULL) {
        tr_http__conn_close(c);
        return;
    }
    w->final = false;
    w->part = 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_stream_finished) < 0) {
        tr_free(w);
        tr_http__conn_close(c);
    }
}

/* ===================================================================== */
/* llhttp callbacks                                                      */
/* ===================================================================== */

/* Records an error to answer once llhttp_execute returns; stops the parser. */
static int fail(struct tr_http_conn *c, int status, const char *code, const char *fmt, ...)
    TR_PRINTF(4, 5);

static int fail(struct tr_http_conn *c, int status, const char *code, const char *fmt, ...)
{
    c->fail_status = status;
    c->fail_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* Out of memory: there is no way to answer, so the connection just closes. */
static int fail_oom(struct tr_http_conn *c)
{
    c->fail_status = -1;
    return -1;
}

static int add_head(struct tr_http_conn *c, const char *at, size_t len)
{
    int rc = tr_buf_add(&c->req->head, at, len);
    if (rc == TR_E2BIG)
        return fail(c, 431, "headers_too_large",
                    "the request line and headers are larger than %zu bytes",
                    c->srv->max_header_bytes);
    if (rc < 0)
        return fail_oom(c);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct tr_http_conn *c = p->data;
    /* The request's deadline: trickled bytes do not move it. */
    arm_timer(c, TR_HTTP_REQUEST_MS);
    c->in_body = false;
    c->progress = 0;
    tr_http__req_free(c->req);
    c->req = tr_http__req_new(c);
    if (c->req == NULL)
        return fail_oom(c);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct tr_http_conn *c = p->data;
    int rc = add_head(c, at, len);
    if (rc == 0)
        c->req->url_len += len;
    return rc;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct tr_http_conn *c = p->data;
    struct tr_http_req *req = c->req;
    if (req->n_hdrs == 0 || req->in_value) {
        if (req->n_hdrs == TR_HTTP_MAX_HEADERS)
            return fail(c, 431, "headers_too_large", "more than %d header fields",
                        TR_HTTP_MAX_HEADERS);
        if (TR_VEC_RESERVE(req->hdrs, req->cap_hdrs, req->n_hdrs + 1) != 0)
            return fail_oom(c);
        struct tr_http_hdr *h = &req->hdrs[req->n_hdrs++];
        h->name_off = req->head.len;
        h->name_len = 0;
        h->value_off = req->head.len;
        h->value_len = 0;
        req->in_value = false;
    }
    int rc = add_head(c, at, len);
    if (rc == 0)
        req->hdrs[req->n_hdrs - 1].name_len += len;
    return rc;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct tr_http_conn *c = p->data;
    struct tr_http_req *req = c->req;
    if (req->n_hdrs == 0)
        return 0; /* llhttp never sends a value first; nothing to attach it to */
    struct tr_http_hdr *h = &req->hdrs[req->n_hdrs - 1];
    if (!req->in_value) {
        h->value_off = req->head.len;
        h->value_len = 0;
        req->in_value = true;
    }
    int rc = add_head(c, at, len);
    if (rc == 0)
        h->value_len += len;
    return rc;
}

static bool str_ieq(struct tr_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && strncasecmp(s.p, c, n) == 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct tr_http_conn *c = p->data;
    struct tr_http_req *req = c->req;
    req->http_minor = p->http_minor;
    req->method = llhttp_method_name((llhttp_method_t)p->method);
    /* Refuse a declared length at once rather than after reading it all. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->max_body_bytes)
        return fail(c, 413, "body_too_large", "the body is larger than %zu bytes",
                    c->srv->max_body_bytes);
    bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    c->in_body = true;
    arm_timer(c, TR_HTTP_REQUEST_MS);
    if (has_body && p->http_major == 1 && p->http_minor >= 1 &&
        str_ieq(tr_http_req_header(req, "expect"), "100-continue"))
        send_continue(c);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct tr_http_conn *c = p->data;
    int rc = tr_buf_add(&c->req->body, at, len);
    if (rc == TR_E2BIG)
        return fail(c, 413, "body_too_large", "the body is larger than %zu bytes",
                    c->srv->max_body_bytes);
    if (rc < 0)
        return fail_oom(c);
    c->progress += len;
    if (c->progress >= TR_HTTP_PROGRESS) {
        c->progress = 0;
        arm_timer(c, TR_HTTP_REQUEST_MS);
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct tr_http_conn *c = p->data;
    /* After an Upgrade or CONNECT the bytes that follow are another protocol. */
    c->req->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    return HPE_PAUSED;
}

void tr_http__settings_init(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

/* ===================================================================== */
/* Parsing                                                               */
/* ===================================================================== */

/* Answers a request llhttp or a cap refused, and ends the connection. */
static void parse_failed(struct tr_http_conn *c, llhttp_errno_t e, const char *data, size_t len)
{
    if (c->fail_status < 0) {
        tr_err("cannot parse a request: out of memory");
        tr_http__conn_close(c);
        return;
    }
    int status = c->fail_status ? c->fail_status : 400;
    const char *code = c->fail_code ? c->fail_code : "bad_request";
    const char *msg = c->fail_status ? c->fail_msg : llhttp_get_error_reason(&c->parser);
    if (msg == NULL)
        msg = llhttp_errno_name(e);
    char what[256];
    snprintf(what, sizeof(what), "refusing an HTTP request with %d: %s", status, msg);
    const char *pos = llhttp_get_error_pos(&c->parser);
    const char *sample = pos != NULL && pos >= data && pos <= data + len ? pos : data;
    /* Bytes of a header line or of an earlier request may hold a bearer token:
     * the sample is the rest of the request line only. */
    const char *eol = sample;
    while (eol < data + len && *eol != '\n' && *eol != '\r')
        eol++;
    size_t sample_len = (size_t)(eol - sample);
    if (c->req != NULL && c->req->n_hdrs > 0)
        sample_len = 0;
    tr_log_limited(&c->srv->bad_log, what, sample, sample_len);
    tr_http__send_error(c, status, code, msg, NULL, true);
}

/*
 * Runs llhttp over data. Returns true when a request completed: the parser is
 * then paused and *used bytes were consumed. On a parse error the error is
 * answered and the rest of data is dropped.
 */
static bool parse(struct tr_http_conn *c, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK) {
        *used = len;
        return false;
    }
    if (e == HPE_PAUSED && c->req != NULL) {
        *used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        return true;
    }
    *used = len;
    parse_failed(c, e, data, len);
    return false;
}

static void consume(struct tr_buf *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->buf, b->buf + n, b->len - n);
    b->len -= n;
    b->buf[b->len] = '\0';
}

/* Parses buffered bytes; hands at most one request to its handler. */
static void process(struct tr_http_conn *c)
{
    while (c->state == TR_HTTP_READING && c->in.len > 0) {
        size_t used = 0;
        bool complete = parse(c, c->in.buf, c->in.len, &used);
        if (c->state == TR_HTTP_CLOSED)
            return;
        consume(&c->in, used);
        if (complete)
            tr_http__dispatch(c);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tr_http_conn *c = stream->data;
    if (nread == 0 || c->state == TR_HTTP_CLOSED)
        return;
    if (nread < 0) {
        c->reading = false;
        /* A client may half-close after its request: its answer still goes out. */
        if (nread == UV_EOF && c->state == TR_HTTP_WRITING) {
            c->peer_eof = true;
            return;
        }
        tr_http__conn_close(c);
        return;
    }
    if (c->state == TR_HTTP_LINGERING || c->state == TR_HTTP_STREAMING)
        return; /* drained: a streamed answer takes no more requests */
    const char *data = buf->base;
    size_t len = (size_t)nread;
    if (c->state == TR_HTTP_READING && c->in.len == 0) {
        /* The common case: parse straight from the read buffer, keep only the rest. */
        size_t used = 0;
        if (parse(c, data, len, &used)) {
            if (used < len && tr_buf_add(&c->in, data + used, len - used) < 0) {
                tr_http__conn_close(c);
                return;
            }
            tr_http__dispatch(c);
        }
    } else {
        if (tr_buf_add(&c->in, data, len) < 0) {
            tr_http__conn_close(c);
            return;
        }
        if (c->state == TR_HTTP_READING)
            process(c);
    }
    update_reading(c);
}

/* ===================================================================== */
/* Accepting                                                             */
/* ===================================================================== */

static void on_refused_closed(uv_handle_t *h)
{
    struct tr_http_server *srv = h->data;
    srv->refusing = false;
    if (srv->freeing) {
        tr_http__server_maybe_free(srv);
        return;
    }
    /* libuv stopped accepting while a connection waited for us: take it now. */
    if (srv->accept_pending) {
        srv->accept_pending = false;
        tr_http__on_connection((uv_stream_t *)&srv->tcp, 0);
    }
}

/*
 * Accepts the waiting connection only to close it. Uses a handle embedded in
 * the server, so that refusing needs no memory; while it closes, the next
 * connection waits in the kernel backlog.
 */
static void refuse(struct tr_http_server *srv)
{
    if (srv->refusing) {
        srv->accept_pending = true;
        return;
    }
    if (uv_tcp_init(srv->loop, &srv->refused) < 0) {
        srv->accept_pending = true;
        return;
    }
    srv->refusing = true;
    srv->refused.data = srv;
    (void)uv_accept((uv_stream_t *)&srv->tcp, (uv_stream_t *)&srv->refused);
    uv_close((uv_handle_t *)&srv->refused, on_refused_closed);
}

/*
 * At the cap: closes the connection READING the longest (idle between
 * requests, or slow with one), so that a new one, a health probe perhaps,
 * gets in. Connections whose request is with its handler stay.
 */
static void evict_oldest_reading(struct tr_http_server *srv)
{
    struct tr_http_conn *oldest = NULL;
    for (struct tr_http_conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->state == TR_HTTP_READING && c->counted &&
            (oldest == NULL || c->reading_since <= oldest->reading_since))
            oldest = c;
    }
    if (oldest != NULL) {
        tr_log_limited(&srv->conn_log, "closing the oldest idle or incomplete connection",
                       "at the connection cap", 21);
        tr_http__conn_close(oldest);
    }
}

/* A new connection in READING on srv with its handles initialised, or NULL. */
static struct tr_http_conn *conn_new(struct tr_http_server *srv)
{
    struct tr_http_conn *c = tr_calloc(1, sizeof(*c));
    if (c == NULL) {
        tr_err("refusing a connection: out of memory");
        return NULL;
    }
    if (uv_tcp_init(srv->loop, &c->tcp) < 0) {
        tr_free(c);
        return NULL;
    }
    (void)uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->srv = srv;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    c->counted = true;
    srv->n_active++;
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;
    tr_buf_init(&c->in, 0);
    c->state = TR_HTTP_READING;
    return c;
}

/* Starts serving c once its socket is attached. */
static void conn_start(struct tr_http_conn *c)
{
    (void)uv_tcp_nodelay(&c->tcp, 1);
    c->reading_since = uv_now(c->srv->loop);
    arm_timer(c, TR_HTTP_REQUEST_MS);
    update_reading(c);
}

void tr_http__on_connection(uv_stream_t *server, int status)
{
    struct tr_http_server *srv = server->data;
    if (status < 0) {
        const char *e = uv_strerror(status);
        tr_log_limited(&srv->conn_log, "cannot accept a connection", e, strlen(e));
        return;
    }
    if (srv->freeing)
        return;
    if (srv->n_active >= srv->max_connections)
        evict_oldest_reading(srv);
    if (srv->n_active >= srv->max_connections) {
        char limit[32];
        int n = snprintf(limit, sizeof(limit), "%u open", srv->max_connections);
        tr_log_limited(&srv->conn_log, "refusing a connection: too many connections", limit,
                       n > 0 ? (size_t)n : 0);
        refuse(srv);
        return;
    }
    struct tr_http_conn *c = conn_new(srv);
    if (c == NULL) {
        refuse(srv);
        return;
    }
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        tr_http__conn_close(c);
        return;
    }
    conn_start(c);
}

#ifdef TR_TESTING
int tr_http_server_adopt(struct tr_http_server *srv, uv_os_sock_t fd)
{
    struct tr_http_conn *c = srv->freeing ? NULL : conn_new(srv);
    if (c == NULL) {
        close(fd);
        return srv->freeing ? TR_EINVAL : TR_ENOMEM;
    }
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc < 0) {
        close(fd);
        tr_http__conn_close(c);
        return rc;
    }
    conn_start(c);
    return 0;
}
#endif
