/*
 * http_int.h - what the three files of the HTTP server share; not for other modules.
 *
 * http_server.c owns the server (config, listen, auth, routing, answers),
 * http_conn.c owns connections (reads, llhttp callbacks, writes, closing) and
 * http_req.c owns requests (accessors, route matching, query decoding).
 * Functions named tr_http__* cross those files and nothing else calls them.
 */
#ifndef TR_HTTP_INT_H
#define TR_HTTP_INT_H

#include <llhttp.h>

#include "lib/http/http_server.h"
#include "lib/base/log.h"

#define TR_HTTP_MAX_HEADERS 100         /* header fields per request; more is a 431 */
#define TR_HTTP_IDLE_MS 60000           /* keep-alive wait for the next request; answer writes */
#define TR_HTTP_REQUEST_MS 10000        /* a request's head must be whole within this, and its
                                         * body must bring TR_HTTP_PROGRESS bytes within it */
#define TR_HTTP_PROGRESS (16 * 1024)    /* body bytes that restart the request deadline */
#define TR_HTTP_RESERVE 64              /* connections never held by long-polls */
#define TR_HTTP_LINGER_MS 2000          /* how long to drain a client after our FIN */
#define TR_HTTP_PIPELINE_MAX (64 * 1024) /* bytes buffered while a request is handled */
#define TR_HTTP_READ_SIZE (64 * 1024)   /* the one read buffer the server lends to libuv */
#define TR_HTTP_TOKEN_DIGEST 32         /* SHA-256 of a bearer token */

/* Where one header field sits in req->head. */
struct tr_http_hdr
{
    size_t name_off;  /* offset of the name in head */
    size_t name_len;  /* bytes of the name */
    size_t value_off; /* offset of the value in head */
    size_t value_len; /* bytes of the value, trailing blanks included */
};

struct tr_http_req
{
    struct tr_http_conn *conn; /* the connection it arrived on */
    const char *method;        /* static name from llhttp ("GET") */
    struct tr_buf head;        /* the URL, then header names and values (max_header_bytes) */
    size_t url_len;            /* the URL is head.buf[0, url_len) */
    struct tr_http_hdr *hdrs;  /* header fields, in arrival order */
    size_t n_hdrs;             /* used entries of hdrs */
    size_t cap_hdrs;           /* allocated entries of hdrs */
    bool in_value;             /* the last header bytes were part of a value */
    struct tr_buf body;        /* decoded body (max_body_bytes) */
    struct tr_str path;        /* into head, without query; set once parsed */
    struct tr_str query;       /* into head, after '?', without fragment */
    int n_params;              /* route parameters found */
    struct tr_str param_names[TR_HTTP_MAX_PARAMS];  /* into the server's copied patterns */
    struct tr_str param_values[TR_HTTP_MAX_PARAMS]; /* into head */
    tr_http_abort_fn abort_cb; /* called when the connection goes away first */
    void *abort_arg;           /* passed to abort_cb */
    bool keep_alive;           /* the client lets the connection live after the answer */
    const void *principal;     /* from the authenticate hook, or NULL */
    uint8_t http_minor;        /* 0 for HTTP/1.0 */
    /* In-process requests only (conn is NULL; http_local.c). */
    struct tr_http_server *local_srv; /* the server whose routes it runs through */
    tr_http_local_done_fn local_done; /* gets the answer */
    void *local_arg;
    struct tr_http_req *lprev;        /* in local_srv->locals */
    struct tr_http_req *lnext;
};

enum tr_http_conn_state
{
    TR_HTTP_READING,   /* parsing a request; the parser runs */
    TR_HTTP_HANDLING,  /* a request is with its handler; the parser is paused */
    TR_HTTP_WRITING,   /* the answer is being written; the parser is paused */
    TR_HTTP_LINGERING, /* FIN sent; input is drained until EOF or the linger timer */
    TR_HTTP_CLOSED     /* uv_close called on both handles */
};

struct tr_http_conn
{
    uv_tcp_t tcp;                    /* the socket; data points at the conn */
    uv_timer_t timer;                /* idle or linger timeout; data points at the conn */
    uv_shutdown_t shutdown;          /* the FIN sent before a lingering close */
    int open_handles;                /* handles not yet through their close callback */
    struct tr_http_server *srv;      /* owner */
    struct tr_http_conn *prev;       /* in srv->conns */
    struct tr_http_conn *next;       /* in srv->conns */
    llhttp_t parser;                 /* data points at the conn */
    struct tr_http_req *req;         /* being parsed or handled; NULL between requests */
    struct tr_buf in;                /* bytes received while the parser is paused */
    enum tr_http_conn_state state;   /* see the enum */
    bool reading;                    /* uv_read_start is in effect */
    bool counted;                    /* counts against max_connections */
    bool close_after;                /* close once the answer being written is out */
    bool peer_eof;                   /* the client has sent its FIN */
    bool in_body;                    /* the head of the request being read is whole */
    size_t progress;                 /* body bytes since the request deadline was set */
    uint64_t reading_since;          /* uv_now when READING began: the oldest goes first */
    int fail_status;                 /* set by a parser callback: answer this, then close */
    const char *fail_code;           /* static error code for fail_status */
    char fail_msg[128];              /* message for fail_status */
};

struct tr_http_server
{
    uv_tcp_t tcp;                    /* the listening socket; data points at the server */
    uv_loop_t *loop;                 /* the loop everything runs on */
    size_t max_header_bytes;         /* URL plus headers */
    size_t max_body_bytes;           /* decoded body */
    uint32_t max_connections;        /* more are closed on accept */
    struct tr_http_route *routes;    /* deep copy, terminated by a NULL method */
    size_t n_routes;                 /* entries of routes before the terminator */
    unsigned char (*tokens)[TR_HTTP_TOKEN_DIGEST]; /* SHA-256 of each token, never the text */
    size_t n_tokens;                 /* 0: no authentication */
    void *handler_arg;               /* for every handler */
    bool (*before)(struct tr_http_req *req, void *arg); /* answers before routing, or NULL */
    const void *(*authenticate)(const char *token, size_t len, void *arg); /* or NULL */
    bool (*authorize)(struct tr_http_req *req, int level, void *arg);    /* or NULL */
    llhttp_settings_t settings;      /* shared by every connection's parser */
    struct tr_http_conn *conns;      /* every connection not yet freed */
    uint32_t n_conns;                /* length of conns */
    uint32_t n_active;               /* conns counted against max_connections */
    uint32_t n_held;                 /* requests with their handler (long-polls among them) */
    bool listening;                  /* uv_listen succeeded */
    bool freeing;                    /* tr_http_server_close was called */
    bool tcp_closed;                 /* the close callback of tcp ran */
    uv_tcp_t refused;                /* accepts a connection only to close it */
    bool refusing;                   /* refused is closing */
    bool accept_pending;             /* a connection waits until refused has closed */
    struct tr_http_req *locals;      /* in-process requests not answered yet */
    size_t n_locals;                 /* length of locals */
    struct tr_log_limiter bad_log;   /* rate limit for malformed requests */
    struct tr_log_limiter conn_log;  /* rate limit for refused connections */
    char rbuf[TR_HTTP_READ_SIZE];    /* read buffer; consumed before the read callback returns */
};

/* http_conn.c */
void tr_http__on_connection(uv_stream_t *server, int status);
void tr_http__settings_init(llhttp_settings_t *settings);
/*
 * Writes a final answer on c and ends its request (freed, no abort callback).
 * extra holds whole header lines ("Allow: GET\r\n") or is NULL; close forces
 * "Connection: close". On failure the connection is closed.
 */
void tr_http__send(struct tr_http_conn *c, int status, const char *content_type,
                   const char *body, size_t len, const char *extra, bool close);
/* Closes c; a request with its handler gets its abort callback first. */
void tr_http__conn_close(struct tr_http_conn *c);

/* http_server.c */
/* c->req is complete and the parser paused: authenticate, route, call the handler. */
void tr_http__dispatch(struct tr_http_conn *c);
/* Answers c with the JSON error body; see tr_http__send for extra and close. */
void tr_http__send_error(struct tr_http_conn *c, int status, const char *code,
                         const char *message, const char *extra, bool close);
/*
 * The route table on req (path split, parameters set): calls the handler and
 * returns true, or returns false with *path_known telling 405 from 404.
 */
bool tr_http__route(struct tr_http_server *srv, struct tr_http_req *req, bool *path_known);
/* The JSON error body {"error": {code, message}}, allocated (tr_free); NULL when out of memory. */
char *tr_http__error_body(const char *code, const char *message, size_t *len);
/* Frees srv once it is being freed and its last handle has closed. */
void tr_http__server_maybe_free(struct tr_http_server *srv);

/* http_local.c */
/* Delivers the answer of an in-process request and frees it. */
void tr_http__local_answer(struct tr_http_req *req, int status, const char *body, size_t len);
/* Ends every in-process request not answered yet (abort callback, then done with status 0). */
void tr_http__local_abort_all(struct tr_http_server *srv);

/* http_req.c */
struct tr_http_req *tr_http__req_new(struct tr_http_conn *c) TR_MUST_CHECK;
void tr_http__req_free(struct tr_http_req *req);
/* Splits the URL into path and query once the request is complete. */
void tr_http__req_split_url(struct tr_http_req *req);
/* Records the matched parameters of a route. */
void tr_http__req_set_params(struct tr_http_req *req, const struct tr_str *names,
                             const struct tr_str *values, int n);

#endif
