/*
 * otlp.c - OTLP/HTTP JSON span export on a libuv loop (see otlp.h).
 *
 * The queue is the text of the spans joined by commas; a POST wraps it in
 * one resourceSpans envelope. Ownership: the exporter owns one timer (the
 * flush), one timer for curl, one poll handle per socket curl watches, and
 * the body of the POST in flight; tr_otlp_close closes them all and frees
 * the exporter from the last close callback.
 */
#include "lib/http/otlp.h"

#include <curl/curl.h>
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"

#define QUEUE_MAX_SPANS 8192        /* beyond this, spans are dropped and counted */
#define QUEUE_MAX_BYTES (16u << 20)
#define BATCH_SPANS 512             /* a POST leaves once this many wait */
#define FLUSH_MS 1000               /* or after this long */
#define POST_TIMEOUT_MS 5000

struct osock
{
    uv_poll_t poll;
    struct tr_otlp *o;
    struct osock *prev;      /* the exporter's list of open sockets */
    struct osock *next;
};

struct tr_otlp
{
    uv_loop_t *loop;
    char *url;
    char *service;
    struct tr_buf q;          /* span objects joined by ',' */
    uint32_t n_q;
    CURLM *multi;
    CURL *easy;               /* the POST in flight, or NULL */
    struct curl_slist *headers;
    char *body;               /* its body (owned) */
    size_t body_len;
    uint32_t n_body;          /* spans in it */
    uv_timer_t flush;
    uv_timer_t curl_timer;
    uint32_t open_handles;
    struct osock *socks;      /* watched sockets, not closing */
    bool closing;
    struct tr_otlp_stats st;
};

static void post_start(struct tr_otlp *o);

/* ====================================================================== */
/* Ids                                                                    */
/* ====================================================================== */

static void hex(const unsigned char *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void tr_otlp_run_ids(const char *run_id, size_t len, char trace[TR_OTLP_TRACE_HEX],
                     char run_span[TR_OTLP_SPAN_HEX])
{
    /* Results come in runs of the same run: one SHA-256 per run, not per call. */
    static _Thread_local char last_id[64];
    static _Thread_local size_t last_len = SIZE_MAX;
    static _Thread_local char last_trace[TR_OTLP_TRACE_HEX], last_span[TR_OTLP_SPAN_HEX];
    if (len != last_len || memcmp(run_id, last_id, len) != 0) {
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)run_id, len, h);
        h[0] |= 1; /* an all-zero id is invalid in OTLP */
        h[16] |= 1;
        hex(h, 16, last_trace);
        hex(h + 16, 8, last_span);
        if (len <= sizeof(last_id)) {
            memcpy(last_id, run_id, len);
            last_len = len;
        } else {
            last_len = SIZE_MAX;
        }
    }
    memcpy(trace, last_trace, TR_OTLP_TRACE_HEX);
    memcpy(run_span, last_span, TR_OTLP_SPAN_HEX);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}

void tr_otlp_attempt_span(const char *run_id, size_t run_len, const char *task, size_t task_len,
                          uint32_t index, uint32_t attempt, char out[TR_OTLP_SPAN_HEX])
{
    /* Cheap (per attempt, on the scheduler's hot path) and the same in both
     * daemons: FNV-1a over run NUL task NUL index attempt (little-endian),
     * then a splitmix64 finaliser to spread it. */
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv1a(h, run_id, run_len);
    h = fnv1a(h, "", 1);
    h = fnv1a(h, task, task_len);
    h = fnv1a(h, "", 1);
    unsigned char tail[8];
    for (int i = 0; i < 4; i++) {
        tail[i] = (unsigned char)(index >> (8 * i));
        tail[4 + i] = (unsigned char)(attempt >> (8 * i));
    }
    h = fnv1a(h, tail, sizeof(tail));
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    h |= 1; /* never all zero */
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(h >> (56 - 8 * i));
    hex(b, 8, out);
}

void tr_otlp_random_span(char out[TR_OTLP_SPAN_HEX])
{
    /* xorshift64* seeded once per thread: span ids need to be unique, not secret. */
    static _Thread_local uint64_t x;
    if (x == 0 && (getrandom(&x, sizeof(x), 0) != (ssize_t)sizeof(x) || x == 0))
        x = tr_mono_ns() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1DULL;
    if (v == 0)
        v = 1;
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    hex(b, 8, out);
}

void tr_otlp_traceparent(const char *trace, const char *span, char out[56])
{
    snprintf(out, 56, "00-%.32s-%.16s-01", trace, span);
}

/* ====================================================================== */
/* Rendering                                                              */
/* ====================================================================== */

/* s as a JSON string: runs of plain bytes are copied whole (this is per span). */
static int add_json_str(struct tr_buf *b, const char *s)
{
    int rc = tr_buf_addch(b, '"');
    const unsigned char *p = (const unsigned char *)s;
    while (rc == 0 && *p) {
        const unsigned char *q = p;
        while (*q >= 0x20 && *q != '"' && *q != '\\')
            q++;
        if (q > p)
            rc = tr_buf_add(b, p, (size_t)(q - p));
        if (rc == 0 && *q != '\0')
            rc = *q < 0x20 ? tr_buf_addf(b, "\\u%04x", *q) : tr_buf_addf(b, "\\%c", *q);
        p = *q ? q + 1 : q;
    }
    return rc == 0 ? tr_buf_addch(b, '"') : rc;
}

/* Literal text, its length known at compile time. */
#define ADD_LIT(b, lit) tr_buf_add((b), (lit), sizeof(lit) - 1)

/* Spans are rendered on the loop for every attempt: no printf here but for doubles. */
static int add_u64(struct tr_buf *b, uint64_t v)
{
    char d[24];
    size_t n = sizeof(d);
    do {
        d[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return tr_buf_add(b, d + n, sizeof(d) - n);
}

static int add_i64(struct tr_buf *b, int64_t v)
{
    if (v >= 0)
        return add_u64(b, (uint64_t)v);
    int rc = tr_buf_addch(b, '-');
    return rc == 0 ? add_u64(b, (uint64_t)0 - (uint64_t)v) : rc;
}

static int add_attr(struct tr_buf *b, const struct tr_otlp_attr *a)
{
    /* Keys are the callers' constants (attribute names), never input: no escaping. */
    int rc = ADD_LIT(b, "{\"key\":\"");
    if (rc == 0)
        rc = tr_buf_addstr(b, a->key);
    if (rc != 0)
        return rc;
    switch (a->type) {
    case TR_OTLP_STR:
        rc = ADD_LIT(b, "\",\"value\":{\"stringValue\":");
        if (rc == 0)
            rc = add_json_str(b, a->s ? a->s : "");
        return rc == 0 ? ADD_LIT(b, "}}") : rc;
    case TR_OTLP_STR_ARRAY1:
        rc = ADD_LIT(b, "\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":");
        if (rc == 0)
            rc = add_json_str(b, a->s ? a->s : "");
        return rc == 0 ? ADD_LIT(b, "}]}}}") : rc;
    case TR_OTLP_INT:
        /* OTLP JSON carries 64-bit integers as strings. */
        rc = ADD_LIT(b, "\",\"value\":{\"intValue\":\"");
        if (rc == 0)
            rc = add_i64(b, a->i);
        return rc == 0 ? ADD_LIT(b, "\"}}") : rc;
    case TR_OTLP_DOUBLE:
        return tr_buf_addf(b, "\",\"value\":{\"doubleValue\":%.17g}}",
                           isfinite(a->d) ? a->d : 0.0);
    case TR_OTLP_BOOL:
        return a->i ? ADD_LIT(b, "\",\"value\":{\"boolValue\":true}}")
                    : ADD_LIT(b, "\",\"value\":{\"boolValue\":false}}");
    }
    return 0;
}

static int render(struct tr_buf *b, const struct tr_otlp_span *s)
{
    uint64_t t0 = s->start > 0 ? (uint64_t)(s->start * 1e9) : 0;
    uint64_t t1 = s->end > 0 ? (uint64_t)(s->end * 1e9) : 0;
    if (t1 < t0)
        t1 = t0;
    int rc = ADD_LIT(b, "{\"traceId\":\"");
    if (rc == 0)
        rc = tr_buf_add(b, s->trace_id, 32);
    if (rc == 0)
        rc = ADD_LIT(b, "\",\"spanId\":\"");
    if (rc == 0)
        rc = tr_buf_add(b, s->span_id, 16);
    if (rc == 0 && s->parent_id != NULL) {
        rc = ADD_LIT(b, "\",\"parentSpanId\":\"");
        if (rc == 0)
            rc = tr_buf_add(b, s->parent_id, 16);
    }
    if (rc == 0)
        rc = ADD_LIT(b, "\",\"name\":");
    if (rc == 0)
        rc = add_json_str(b, s->name);
    if (rc == 0)
        rc = ADD_LIT(b, ",\"kind\":");
    if (rc == 0)
        rc = add_u64(b, (uint64_t)(s->kind ? s->kind : 1));
    if (rc == 0)
        rc = ADD_LIT(b, ",\"startTimeUnixNano\":\"");
    if (rc == 0)
        rc = add_u64(b, t0);
    if (rc == 0)
        rc = ADD_LIT(b, "\",\"endTimeUnixNano\":\"");
    if (rc == 0)
        rc = add_u64(b, t1);
    if (rc == 0)
        rc = ADD_LIT(b, "\",\"attributes\":[");
    for (uint32_t i = 0; rc == 0 && i < s->n_attrs; i++) {
        if (i > 0)
            rc = tr_buf_addch(b, ',');
        if (rc == 0)
            rc = add_attr(b, &s->attrs[i]);
    }
    if (rc == 0)
        rc = s->error ? ADD_LIT(b, "],\"status\":{\"code\":2") : ADD_LIT(b, "],\"status\":{\"code\":1");
    if (rc == 0 && s->error && s->status_msg != NULL) {
        rc = ADD_LIT(b, ",\"message\":");
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", s->status_msg);
        if (rc == 0)
            rc = add_json_str(b, msg);
    }
    return rc == 0 ? ADD_LIT(b, "}}") : rc;
}

static void attr_push(struct tr_otlp_span *s, struct tr_otlp_attr a)
{
    if (s->n_attrs < TR_OTLP_MAX_ATTRS)
        s->attrs[s->n_attrs++] = a;
}

void tr_otlp_attr_str(struct tr_otlp_span *s, const char *key, const char *v)
{
    attr_push(s, (struct tr_otlp_attr){.key = key, .type = TR_OTLP_STR, .s = v});
}

void tr_otlp_attr_int(struct tr_otlp_span *s, const char *key, int64_t v)
{
    attr_push(s, (struct tr_otlp_attr){.key = key, .type = TR_OTLP_INT, .i = v});
}

void tr_otlp_attr_double(struct tr_otlp_span *s, const char *key, double v)
{
    attr_push(s, (struct tr_otlp_attr){.key = key, .type = TR_OTLP_DOUBLE, .d = v});
}

void tr_otlp_attr_bool(struct tr_otlp_span *s, const char *key, bool v)
{
    attr_push(s, (struct tr_otlp_attr){.key = key, .type = TR_OTLP_BOOL, .i = v});
}

void tr_otlp_attr_strs1(struct tr_otlp_span *s, const char *key, const char *v)
{
    attr_push(s, (struct tr_otlp_attr){.key = key, .type = TR_OTLP_STR_ARRAY1, .s = v});
}

/* ====================================================================== */
/* Sending                                                                */
/* ====================================================================== */

/* The envelope around the spans; the queue starts with its head (no copy at send). */
static int add_head(struct tr_otlp *o)
{
    int rc = ADD_LIT(&o->q, "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
                            "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    if (rc == 0)
        rc = add_json_str(&o->q, o->service);
    return rc == 0 ? ADD_LIT(&o->q, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"trellis\"},"
                                    "\"spans\":[")
                   : rc;
}

/* Makes the queue the POST body; returns false when the queue is empty. */
static bool take_batch(struct tr_otlp *o)
{
    if (o->n_q == 0)
        return false;
    if (ADD_LIT(&o->q, "]}]}]}") != 0) {
        o->st.spans_dropped += o->n_q;
        tr_buf_reset(&o->q);
        o->n_q = 0;
        return false;
    }
    o->body = tr_buf_detach(&o->q, &o->body_len);
    o->n_body = o->n_q;
    tr_buf_init(&o->q, QUEUE_MAX_BYTES);
    o->n_q = 0;
    return o->body != NULL;
}

static void post_done(struct tr_otlp *o, bool ok)
{
    if (ok) {
        o->st.spans_sent += o->n_body;
    } else {
        o->st.spans_dropped += o->n_body;
        o->st.posts_failed++;
        if (o->st.posts_failed == 1 || o->st.posts_failed % 100 == 0)
            tr_warn("cannot export spans to '%s' (%llu failed posts so far)", o->url,
                    (unsigned long long)o->st.posts_failed);
    }
    tr_free(o->body);
    o->body = NULL;
    o->n_body = 0;
}

static void collect(struct tr_otlp *o)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(o->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        bool ok = msg->data.result == CURLE_OK && status >= 200 && status < 300;
        curl_multi_remove_handle(o->multi, msg->easy_handle);
        post_done(o, ok);
    }
    if (!o->closing && o->body == NULL && o->n_q >= BATCH_SPANS)
        post_start(o);
}

static void on_curl_timer(uv_timer_t *h)
{
    struct tr_otlp *o = h->data;
    int running;
    curl_multi_socket_action(o->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect(o);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct osock *s = h->data;
    struct tr_otlp *o = s->o;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int fd;
    uv_fileno((uv_handle_t *)h, &fd);
    int running;
    curl_multi_socket_action(o->multi, fd, flags, &running);
    collect(o);
}

static void on_closed(uv_handle_t *h)
{
    struct tr_otlp *o;
    if (h->type == UV_POLL) {
        struct osock *s = h->data;
        o = s->o;
        tr_free(s);
    } else {
        o = h->data;
    }
    if (--o->open_handles == 0 && o->closing) {
        tr_free(o->url);
        tr_free(o->service);
        tr_free(o);
    }
}

static void sock_close(struct tr_otlp *o, struct osock *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        o->socks = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_closed);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct tr_otlp *o = userp;
    struct osock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(o->multi, fd, NULL);
            sock_close(o, s);
        }
        return 0;
    }
    if (s == NULL) {
        s = tr_calloc(1, sizeof(*s));
        if (s == NULL || uv_poll_init_socket(o->loop, &s->poll, fd) != 0) {
            tr_free(s);
            return -1;
        }
        s->o = o;
        s->poll.data = s;
        uv_unref((uv_handle_t *)&s->poll);
        o->open_handles++;
        s->next = o->socks;
        if (o->socks != NULL)
            o->socks->prev = s;
        o->socks = s;
        curl_multi_assign(o->multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct tr_otlp *o = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&o->curl_timer);
    else
        uv_timer_start(&o->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    return size * n;
}

static void easy_setup(struct tr_otlp *o, CURL *e, long timeout_ms)
{
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, o->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
}

static void post_start(struct tr_otlp *o)
{
    if (o->body != NULL || !take_batch(o))
        return;
    easy_setup(o, o->easy, POST_TIMEOUT_MS);
    if (curl_multi_add_handle(o->multi, o->easy) != CURLM_OK)
        post_done(o, false);
}

static void on_flush(uv_timer_t *h)
{
    post_start(h->data);
}

struct tr_otlp *tr_otlp_new(uv_loop_t *loop, const char *endpoint, const char *service)
{
    /* Called from main() before threads exist (curl's rule for global init). */
    static bool curl_ready;
    if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    curl_ready = true;
    struct tr_otlp *o = tr_calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->loop = loop;
    size_t n = strlen(endpoint);
    while (n > 0 && endpoint[n - 1] == '/')
        n--;
    struct tr_buf u;
    tr_buf_init(&u, 0);
    bool has_path = n >= 10 && memcmp(endpoint + n - 10, "/v1/traces", 10) == 0;
    if (tr_buf_add(&u, endpoint, n) == 0 && (has_path || tr_buf_addstr(&u, "/v1/traces") == 0))
        o->url = tr_buf_detach(&u, NULL);
    tr_buf_release(&u);
    o->service = tr_strdup(service);
    tr_buf_init(&o->q, QUEUE_MAX_BYTES);
    o->multi = curl_multi_init();
    o->easy = curl_easy_init();
    o->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (o->url == NULL || o->service == NULL || o->multi == NULL || o->easy == NULL ||
        o->headers == NULL) {
        if (o->multi)
            curl_multi_cleanup(o->multi);
        if (o->easy)
            curl_easy_cleanup(o->easy);
        curl_slist_free_all(o->headers);
        tr_free(o->url);
        tr_free(o->service);
        tr_free(o);
        return NULL;
    }
    curl_multi_setopt(o->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(o->multi, CURLMOPT_SOCKETDATA, o);
    curl_multi_setopt(o->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(o->multi, CURLMOPT_TIMERDATA, o);
    uv_timer_init(loop, &o->flush);
    uv_timer_init(loop, &o->curl_timer);
    o->flush.data = o->curl_timer.data = o;
    o->open_handles = 2;
    /* The exporter never keeps a daemon's loop alive. */
    uv_unref((uv_handle_t *)&o->flush);
    uv_unref((uv_handle_t *)&o->curl_timer);
    uv_timer_start(&o->flush, on_flush, FLUSH_MS, FLUSH_MS);
    return o;
}

void tr_otlp_add(struct tr_otlp *o, const struct tr_otlp_span *s)
{
    if (o == NULL || o->closing)
        return;
    size_t mark = o->q.len;
    if (o->n_q >= QUEUE_MAX_SPANS || (o->n_q == 0 && add_head(o) != 0) ||
        (o->n_q > 0 && tr_buf_addch(&o->q, ',') != 0) || render(&o->q, s) != 0) {
        o->q.len = mark; /* undo a half-written span */
        o->st.spans_dropped++;
        return;
    }
    o->n_q++;
    o->st.spans_queued++;
    if (o->n_q >= BATCH_SPANS)
        post_start(o);
}

void tr_otlp_get_stats(const struct tr_otlp *o, struct tr_otlp_stats *st)
{
    if (o == NULL)
        memset(st, 0, sizeof(*st));
    else
        *st = o->st;
}

/* Sends the body (if any) with a blocking POST of at most timeout_ms. */
static void post_blocking(struct tr_otlp *o, long timeout_ms)
{
    if (o->body == NULL)
        return;
    easy_setup(o, o->easy, timeout_ms);
    CURLcode cc = curl_easy_perform(o->easy);
    long status = 0;
    curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &status);
    post_done(o, cc == CURLE_OK && status >= 200 && status < 300);
}

void tr_otlp_close(struct tr_otlp *o)
{
    if (o == NULL)
        return;
    o->closing = true;
    /* At exit: what is in flight and what is queued go out now, briefly. */
    if (o->body != NULL) {
        curl_multi_remove_handle(o->multi, o->easy);
        post_blocking(o, 1000);
    }
    if (take_batch(o))
        post_blocking(o, 1000);
    curl_multi_cleanup(o->multi);
    while (o->socks != NULL) /* those curl did not hand back while cleaning up */
        sock_close(o, o->socks);
    curl_easy_cleanup(o->easy);
    curl_slist_free_all(o->headers);
    tr_buf_release(&o->q);
    uv_close((uv_handle_t *)&o->flush, on_closed);
    uv_close((uv_handle_t *)&o->curl_timer, on_closed);
}
