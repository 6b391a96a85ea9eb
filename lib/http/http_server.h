/*
 * http_server.h - HTTP/1.1 on a libuv loop, parsed by llhttp.
 *
 * The server owns its connections. Each connection handles one request at a
 * time (pipelined requests wait in the socket buffer): it parses the request
 * with caps on URL, headers and body, checks the bearer token when tokens are
 * configured (constant-time comparison; 401 otherwise), matches the route
 * table and calls the route's handler. The handler answers with
 * tr_http_respond, at once or later (long-poll): the request stays valid
 * until it is answered, or until its connection goes away, in which case the
 * request's abort callback is called instead (and the request must not be
 * used after it returns). Errors detected by the server itself (bad request,
 * too large, no route, wrong method, unauthorized) are answered as JSON
 * {"error": {"code", "message"}}.
 *
 * Authentication: when tokens are configured, every request needs
 * "Authorization: Bearer <token>" matching one of them, except GET /healthz,
 * which stays open because liveness probes carry no token (it must reveal
 * nothing). Without a valid token the answer is 401 before any routing, so
 * an unauthenticated client cannot tell which paths exist.
 *
 * Slow or idle clients cannot hold the connection cap: requests have a
 * deadline, and at the cap a new connection closes the oldest idle or
 * incomplete one (http_conn.c says how).
 *
 * Listening on an address other than loopback is refused (TR_EADDR) unless
 * tokens (or an authenticate hook) are configured.
 *
 * With an authenticate hook the server does not check tokens itself: it
 * hands the presented bearer token to the hook, which returns the caller's
 * principal (kept on the request, tr_http_req_principal) or NULL (401). An
 * authorize hook then sees each matched route's level before its handler.
 *
 * Everything runs on the loop's thread.
 */
#ifndef TR_HTTP_SERVER_H
#define TR_HTTP_SERVER_H

#include <uv.h>

#include "lib/base/buf.h"
#include "lib/base/error.h"

struct tr_http_server;
struct tr_http_req;

typedef void (*tr_http_handler_fn)(struct tr_http_req *req, void *arg);
typedef void (*tr_http_abort_fn)(struct tr_http_req *req, void *arg);

#define TR_HTTP_MAX_PARAMS 4

/*
 * One route: method ("GET"), pattern ("/v1/runs/{id}/tasks") and handler;
 * level is the caller's own number (the scheduler's required role), handed
 * to the authorize hook when the route matches (0 when left out).
 */
struct tr_http_route
{
    const char *method;
    const char *pattern;
    tr_http_handler_fn handler;
    int level;
};

struct tr_http_config
{
    size_t max_header_bytes;  /* URL plus headers (default 16 KiB) */
    size_t max_body_bytes;    /* default 32 MiB */
    uint32_t max_connections; /* default 1024; more are closed on accept */
    const char *const *tokens; /* NULL-terminated bearer tokens, or NULL for none */
    const struct tr_http_route *routes; /* terminated by a route with NULL method */
    void *handler_arg;        /* passed to every handler */
    /* Optional: called with handler_arg for every authorised request before
     * routing; returning true means it answered the request (a standby
     * scheduler redirecting to its leader), and routing is skipped. */
    bool (*before)(struct tr_http_req *req, void *arg);
    /* Optional, instead of tokens: maps the bearer token presented (len bytes,
     * not NUL-terminated) to the caller's principal, or NULL for 401. The
     * principal is the caller's (the server never frees it) and must stay
     * valid while requests that carry it are held. */
    const void *(*authenticate)(const char *token, size_t len, void *arg);
    /* Optional: called with handler_arg and the matched route's level before
     * its handler; returning false means it answered the request (403). */
    bool (*authorize)(struct tr_http_req *req, int level, void *arg);
};

/* A server on loop; NULL when out of memory. cfg is copied (tokens too). */
struct tr_http_server *tr_http_server_open(uv_loop_t *loop, const struct tr_http_config *cfg)
    TR_MUST_CHECK;

/*
 * Binds and listens on host:port (port 0 picks a free port; see
 * tr_http_server_port). TR_EADDR when host is not loopback and no token is
 * configured, or a negative errno-style code from libuv.
 */
int tr_http_server_listen(struct tr_http_server *srv, const char *host, int port,
                          struct tr_error *err) TR_MUST_CHECK;

/* The port actually bound, after a successful listen. */
int tr_http_server_port(const struct tr_http_server *srv);

/*
 * Stops listening and closes every connection (pending requests get their
 * abort callback); frees srv once the handles are closed. NULL-safe.
 */
void tr_http_server_close(struct tr_http_server *srv);

/* Request accessors: views valid until the request is answered or aborted. */
struct tr_str tr_http_req_method(const struct tr_http_req *req);
struct tr_str tr_http_req_path(const struct tr_http_req *req);   /* without the query */
struct tr_str tr_http_req_body(const struct tr_http_req *req);
/* The raw query string after '?' (not decoded, no fragment); {"", 0} when none. */
struct tr_str tr_http_req_query_string(const struct tr_http_req *req);
/* The route parameter called name ("id" for "{id}"); {NULL, 0} when absent. */
struct tr_str tr_http_req_param(const struct tr_http_req *req, const char *name);
/*
 * A query parameter, percent-decoded ('+' is a space) into out; false when
 * absent, and also when the decoded value holds a NUL byte or does not fit in
 * out (out is then empty): a cut value must not pass for a whole one.
 */
bool tr_http_req_query(const struct tr_http_req *req, const char *name, char *out, size_t out_size);
/* The principal authenticate returned for req; NULL without authenticate, for
 * the open probes and for in-process requests. */
const void *tr_http_req_principal(const struct tr_http_req *req);
/* A request header (case-insensitive name); {NULL, 0} when absent. */
struct tr_str tr_http_req_header(const struct tr_http_req *req, const char *name);

/*
 * Whether a handler may hold req unanswered (a long-poll): false once all
 * but a reserve of the connection cap are held, so that new connections
 * (health probes) always find room. A handler then answers at once.
 */
bool tr_http_req_may_hold(const struct tr_http_req *req);

/* Registers the callback for a connection lost before the answer. */
void tr_http_req_on_abort(struct tr_http_req *req, tr_http_abort_fn cb, void *arg);

/*
 * Answers req with status, content type and body (copied). Ends the request:
 * req must not be used afterwards. Keeps the connection open when the client
 * asked for keep-alive.
 */
void tr_http_respond(struct tr_http_req *req, int status, const char *content_type,
                     const char *body, size_t len);

/*
 * The same with extra header lines (each ending in "\r\n", as in
 * "Location: http://h/x\r\n"); the caller has checked that they hold no
 * other CR or LF. extra may be NULL.
 */
void tr_http_respond_extra(struct tr_http_req *req, int status, const char *content_type,
                           const char *extra, const char *body, size_t len);

/* Answers with {"error": {"code": code, "message": message}}. */
void tr_http_respond_error(struct tr_http_req *req, int status, const char *code,
                           const char *message);

/*
 * In-process requests: another part of the same program (the scheduler
 * serving calls from tasks) runs a request through srv's before hook and
 * route table, so that it is served by exactly the handlers HTTP clients
 * reach. There is no connection and no token check: the caller vouches for
 * it. done gets the answer exactly once: from inside this call when the
 * handler answers at once, later when it holds the request (a write answered
 * after its commit), or with status 0 and no body when the server is freed
 * first. An unknown route is answered 404, a known path with another method
 * 405. The body must be what the route takes (JSON); it is copied.
 * Returns 0, or TR_ENOMEM (done is then not called). Loop thread only.
 */
typedef void (*tr_http_local_done_fn)(void *arg, int status, const char *body, size_t len);
int tr_http_local_request(struct tr_http_server *srv, const char *method, const char *url,
                          const char *body, size_t len, tr_http_local_done_fn done, void *arg)
    TR_MUST_CHECK;
/* The same on behalf of principal (what tr_http_req_principal then gives the
 * handlers; it must outlive the request). */
int tr_http_local_request_as(struct tr_http_server *srv, const void *principal,
                             const char *method, const char *url, const char *body, size_t len,
                             tr_http_local_done_fn done, void *arg) TR_MUST_CHECK;
/* In-process requests not answered yet (callers bound them with it). */
size_t tr_http_local_pending(const struct tr_http_server *srv);

/*
 * Matches path against pattern ("/v1/runs/{id}"), segment by segment; on a
 * match fills up to TR_HTTP_MAX_PARAMS names and values and returns true.
 * One trailing slash is ignored on either side; a {param} never matches an
 * empty segment; values are views into path, not decoded. names, values and
 * n_params may be NULL. Exposed for the routing unit test.
 */
bool tr_http_route_match(const char *pattern, struct tr_str path, struct tr_str *names,
                         struct tr_str *values, int *n_params);

#ifdef TR_TESTING
/*
 * Serves fd, a connected stream socket (one end of a socketpair), as if it
 * had been accepted: the fuzzer drives the whole request path through it
 * without a listening socket. The server owns fd from then on, even on
 * failure (0, TR_ENOMEM, TR_EINVAL or a libuv error).
 */
int tr_http_server_adopt(struct tr_http_server *srv, uv_os_sock_t fd) TR_MUST_CHECK;
#endif

#endif
