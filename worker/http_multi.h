/*
 * http_multi.h - one curl multi handle per worker loop, driven by libuv
 * (curl's docs/examples/multi-uv.c): curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION, one uv_poll each) and when to wake it
 * (CURLMOPT_TIMERFUNCTION, one uv timer), so a thousand requests in flight
 * cost a thousand sockets, not a thousand threads, and no loop ever polls.
 *
 * The multi is shared by every pipeline state of the loop's thread and
 * reference-counted: each state that opened trellis.http holds one
 * reference, each request another, and the last release closes it (its
 * handles die through their close callbacks, so the loop must run after).
 * Connections are kept by the multi between requests, and easy handles are
 * pooled, so calls to one server reuse their connections.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_HTTP_MULTI_H
#define TR_WORKER_HTTP_MULTI_H

#include <curl/curl.h>
#include <uv.h>

#include "lib/base/buf.h"
#include "worker/sse.h"

struct tr_http_multi;
struct tr_http_call;

/* Called once when a started request ends (done, failed or timed out). */
typedef void (*tr_http_done_fn)(struct tr_http_call *r, void *arg);

struct tr_http_call
{
    struct tr_http_multi *m;      /* owner (a reference is held) */
    CURL *easy;                   /* configured by the caller between new and start */
    struct curl_slist *headers;   /* request headers, freed with the request */
    char *body;                   /* owned copy of the request body */
    struct tr_buf resp;           /* response body (when not parsed as events) */
    struct tr_buf resp_headers;   /* header lines of the last response, raw */
    struct tr_sse parser;         /* when sse: a 2xx body is parsed as events */
    struct tr_buf events;         /* events: [u32 len][type][u32 len][data]... */
    bool sse;                     /* parse a 2xx body as server-sent events */
    bool too_big;                 /* the response went over max_bytes: refused */
    bool bad_stream;              /* the event stream was malformed */
    bool in_multi;                /* added to the multi, not finished */
    size_t max_bytes;             /* response size limit */
    CURLcode result;              /* once done */
    long status;                  /* once done: HTTP status, 0 without a response */
    char errbuf[CURL_ERROR_SIZE]; /* curl's detailed message */
    tr_http_done_fn done;
    void *done_arg;
    /* Optional: told of each event of a 2xx event stream as it arrives (views valid
     * for the call only), before it is kept in events. Set between new and start. */
    void (*on_event)(void *arg, struct tr_str event, struct tr_str data);
    void *on_event_arg;
    struct tr_http_call *next;     /* the pool's link */
};

/*
 * The multi of loop, created at the first call (one per thread), with one
 * more reference; NULL when curl or memory fails.
 */
struct tr_http_multi *tr_http_multi_ref(uv_loop_t *loop) TR_MUST_CHECK;

/* Drops a reference; the last one closes the multi. NULL-safe. */
void tr_http_multi_unref(struct tr_http_multi *m);

/* Requests in flight on m. */
uint32_t tr_http_multi_in_flight(const struct tr_http_multi *m);

/*
 * A request with a fresh (reset) easy handle that collects the response
 * into r->resp (at most max_bytes) and r->resp_headers; the caller sets the
 * URL, method, body and options on r->easy. NULL when out of memory.
 */
struct tr_http_call *tr_http_call_new(struct tr_http_multi *m, size_t max_bytes) TR_MUST_CHECK;

/*
 * Starts r; done(r, arg) is called later from a loop callback, never from
 * inside this call. Returns 0, or TR_ENOMEM / TR_EIO when curl refuses it
 * (r is then still the caller's to free).
 */
int tr_http_call_start(struct tr_http_call *r, tr_http_done_fn done, void *arg) TR_MUST_CHECK;

/*
 * Frees r: a request still in flight is removed from the multi first (its
 * done is never called), and the easy handle goes back to the pool. Must
 * not be called from inside curl's callbacks. NULL-safe.
 */
void tr_http_call_free(struct tr_http_call *r);

#endif
