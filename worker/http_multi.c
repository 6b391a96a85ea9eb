/*
 * http_multi.c - curl multi on the worker's libuv loop (see http_multi.h).
 *
 * Ownership: the multi owns one uv timer and one struct sock per socket curl
 * asked us to watch; each is freed from its close callback, and the multi
 * itself once the last of them closed. A request owns its easy handle while
 * it lives and gives it back to the multi's pool when freed.
 *
 * Re-entrancy: finished requests are collected after curl_multi_socket_action
 * returns, never inside curl's callbacks, and their done callbacks resume
 * tasks that may start or free requests and release references; `depth`
 * defers the close of the multi until the outermost collection is over.
 *
 * Loop thread only (the thread-local pointer makes the multi per thread).
 */
#include "worker/http_multi.h"

#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

#define EASY_POOL_MAX 256 /* idle easy handles kept for reuse */

struct sock
{
    uv_poll_t poll;          /* data: the struct sock */
    struct tr_http_multi *m;
    curl_socket_t fd;
    struct sock *prev;       /* the multi's list of open socks */
    struct sock *next;
};

struct tr_http_multi
{
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;        /* curl's timeout */
    uint32_t refs;           /* states using it plus live requests */
    uint32_t in_flight;      /* requests added and not done */
    uint32_t depth;          /* nested collections of finished requests */
    uint32_t closing_handles; /* handles whose close callback has not run */
    bool closing;            /* the last reference is gone */
    struct sock *socks;      /* watched sockets, not closing */
    struct tr_http_call *pool; /* freed requests with their easy handles */
    uint32_t n_pool;
};

static _Thread_local struct tr_http_multi *thread_multi;

/* ====================================================================== */
/* Closing                                                                */
/* ====================================================================== */

static void on_handle_closed(uv_handle_t *h)
{
    struct tr_http_multi *m = h->type == UV_TIMER ? h->data : ((struct sock *)h->data)->m;
    if (h->type != UV_TIMER)
        tr_free(h->data);
    if (--m->closing_handles == 0 && m->closing)
        tr_free(m);
}

static void sock_close(struct sock *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->m->socks = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->m->closing_handles++;
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static int ignore_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    return 0;
}

/* Runs when the last reference is gone and no collection is running. */
static void multi_close(struct tr_http_multi *m)
{
    if (thread_multi == m)
        thread_multi = NULL;
    while (m->pool != NULL) {
        struct tr_http_call *r = m->pool;
        m->pool = r->next;
        curl_easy_cleanup(r->easy);
        tr_free(r);
    }
    /* The polls are closed before curl closes its sockets, so that no fd is
     * watched after it was closed; curl is told to stay silent meanwhile. */
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, ignore_socket);
    while (m->socks != NULL)
        sock_close(m->socks);
    curl_multi_cleanup(m->multi);
    m->closing_handles++;
    uv_close((uv_handle_t *)&m->timer, on_handle_closed);
}

static void maybe_close(struct tr_http_multi *m)
{
    if (m->refs == 0 && m->depth == 0 && !m->closing) {
        m->closing = true;
        multi_close(m);
    }
}

/* ====================================================================== */
/* curl's callbacks and the loop's                                        */
/* ====================================================================== */

/* Hands finished transfers to their owners, outside curl's callbacks. */
static void collect_done(struct tr_http_multi *m)
{
    m->depth++;
    CURLMsg *msg;
    int left;
    while (!m->closing && (msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct tr_http_call *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode result = msg->data.result;
        curl_multi_remove_handle(m->multi, r->easy);
        r->in_multi = false;
        m->in_flight--;
        r->result = result;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        r->done(r, r->done_arg);
    }
    m->depth--;
    maybe_close(m);
}

static void on_timer(uv_timer_t *h)
{
    struct tr_http_multi *m = h->data;
    int running;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(m);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = h->data;
    struct tr_http_multi *m = s->m;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(m->multi, s->fd, flags, &running);
    collect_done(m);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct tr_http_multi *m = userp;
    struct sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(m->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (s == NULL) {
        s = tr_calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        if (uv_poll_init_socket(m->loop, &s->poll, fd) != 0) {
            tr_free(s);
            return -1;
        }
        s->m = m;
        s->fd = fd;
        s->poll.data = s;
        s->next = m->socks;
        if (m->socks != NULL)
            m->socks->prev = s;
        m->socks = s;
        curl_multi_assign(m->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct tr_http_multi *m = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&m->timer);
    else
        uv_timer_start(&m->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ====================================================================== */
/* The multi                                                              */
/* ====================================================================== */

struct tr_http_multi *tr_http_multi_ref(uv_loop_t *loop)
{
    struct tr_http_multi *m = thread_multi;
    if (m != NULL && m->loop == loop && !m->closing) {
        m->refs++;
        return m;
    }
    m = tr_calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->multi = curl_multi_init();
    if (m->multi == NULL) {
        tr_free(m);
        return NULL;
    }
    m->loop = loop;
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    /* Keep enough idle connections for a thousand calls to one server. */
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, 1024L);
    m->refs = 1;
    thread_multi = m;
    return m;
}

void tr_http_multi_unref(struct tr_http_multi *m)
{
    if (m == NULL)
        return;
    TR_ASSERT(m->refs > 0);
    m->refs--;
    maybe_close(m);
}

uint32_t tr_http_multi_in_flight(const struct tr_http_multi *m)
{
    return m->in_flight;
}

/* ====================================================================== */
/* Requests                                                               */
/* ====================================================================== */

/* Appends an event to r->events as [u32 len][type][u32 len][data]. */
static int on_event(void *arg, struct tr_str event, struct tr_str data)
{
    struct tr_http_call *r = arg;
    if (r->on_event != NULL)
        r->on_event(r->on_event_arg, event, data);
    uint32_t el = (uint32_t)event.len, dl = (uint32_t)data.len;
    int rc = tr_buf_add(&r->events, &el, sizeof(el));
    if (rc == 0)
        rc = tr_buf_add(&r->events, event.p, event.len);
    if (rc == 0)
        rc = tr_buf_add(&r->events, &dl, sizeof(dl));
    if (rc == 0)
        rc = tr_buf_add(&r->events, data.p, data.len);
    return rc;
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
    struct tr_http_call *r = arg;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    int rc;
    if (r->sse && status >= 200 && status < 300) {
        /* Events are bounded like a body: by what the stream carried. */
        if (len > r->max_bytes || r->events.len > r->max_bytes - len) {
            r->too_big = true;
            return 0;
        }
        rc = tr_sse_feed(&r->parser, p, len);
        if (rc == TR_E2BIG) {
            r->too_big = true;
            return 0;
        }
        if (rc < 0)
            r->bad_stream = true;
    } else {
        rc = tr_buf_add(&r->resp, p, len);
        if (rc == TR_E2BIG)
            r->too_big = true;
    }
    return rc == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct tr_http_call *r = arg;
    size_t len = size * n;
    /* A new status line starts another response (a redirect, a 100
     * Continue): only the last response's headers are kept. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        tr_buf_reset(&r->resp_headers);
    return tr_buf_add(&r->resp_headers, p, len) == 0 ? len : 0;
}

struct tr_http_call *tr_http_call_new(struct tr_http_multi *m, size_t max_bytes)
{
    struct tr_http_call *r = m->pool;
    if (r != NULL) {
        m->pool = r->next;
        m->n_pool--;
        CURL *easy = r->easy;
        curl_easy_reset(easy);
        memset(r, 0, sizeof(*r));
        r->easy = easy;
    } else {
        r = tr_calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
        r->easy = curl_easy_init();
        if (r->easy == NULL) {
            tr_free(r);
            return NULL;
        }
    }
    r->m = m;
    m->refs++;
    r->max_bytes = max_bytes;
    tr_buf_init(&r->resp, max_bytes);
    tr_buf_init(&r->resp_headers, 256u << 10);
    tr_buf_init(&r->events, 0);
    tr_sse_init(&r->parser, max_bytes, on_event, r);
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    return r;
}

int tr_http_call_start(struct tr_http_call *r, tr_http_done_fn done, void *arg)
{
    r->done = done;
    r->done_arg = arg;
    r->errbuf[0] = '\0';
    CURLMcode mc = curl_multi_add_handle(r->m->multi, r->easy);
    if (mc != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? TR_ENOMEM : TR_EIO;
    r->in_multi = true;
    r->m->in_flight++;
    return 0;
}

void tr_http_call_free(struct tr_http_call *r)
{
    if (r == NULL)
        return;
    struct tr_http_multi *m = r->m;
    if (r->in_multi) {
        curl_multi_remove_handle(m->multi, r->easy);
        r->in_multi = false;
        m->in_flight--;
    }
    curl_slist_free_all(r->headers);
    tr_free(r->body);
    tr_buf_release(&r->resp);
    tr_buf_release(&r->resp_headers);
    tr_buf_release(&r->events);
    tr_sse_release(&r->parser);
    r->headers = NULL;
    r->body = NULL;
    if (m->closing || m->n_pool >= EASY_POOL_MAX) {
        curl_easy_cleanup(r->easy);
        tr_free(r);
    } else {
        r->next = m->pool;
        m->pool = r;
        m->n_pool++;
    }
    tr_http_multi_unref(m);
}
