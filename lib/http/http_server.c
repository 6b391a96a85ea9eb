/*
 * http_server.c - the HTTP server: configuration, listening, authentication,
 * routing and answers.
 *
 * The server owns its listening socket and every connection (http_conn.c);
 * requests live in http_req.c. A complete request goes through
 * tr_http__dispatch: bearer token, then the route table, then the handler.
 *
 * Authentication: when tokens are configured every request needs
 * "Authorization: Bearer <token>", except GET /healthz, which liveness probes
 * call without credentials and which reveals nothing. Only SHA-256 digests of
 * the tokens are kept; the presented token is hashed and compared with every
 * digest by CRYPTO_memcmp, so that neither the content nor the length of a
 * token leaks through timing.
 *
 * The struct is freed when the listening socket, the refusal handle and every
 * connection have gone through their close callbacks. Everything runs on the
 * loop's thread.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <strings.h>

#include "lib/base/alloc.h"
#include "lib/http/http_int.h"

#define DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define DEFAULT_MAX_BODY_BYTES (32u << 20)
#define DEFAULT_MAX_CONNECTIONS 1024
#define LISTEN_BACKLOG 511

/* ===================================================================== */
/* Lifetime                                                              */
/* ===================================================================== */

static void free_config(struct tr_http_server *srv)
{
    for (size_t i = 0; srv->routes != NULL && i < srv->n_routes; i++) {
        tr_free((char *)srv->routes[i].method);
        tr_free((char *)srv->routes[i].pattern);
    }
    tr_free_null(&srv->routes);
    if (srv->tokens != NULL)
        OPENSSL_cleanse(srv->tokens, srv->n_tokens * sizeof(*srv->tokens));
    tr_free_null(&srv->tokens);
}

static int copy_config(struct tr_http_server *srv, const struct tr_http_config *cfg)
{
    srv->max_header_bytes = cfg->max_header_bytes ? cfg->max_header_bytes
                                                  : DEFAULT_MAX_HEADER_BYTES;
    srv->max_body_bytes = cfg->max_body_bytes ? cfg->max_body_bytes : DEFAULT_MAX_BODY_BYTES;
    srv->max_connections = cfg->max_connections ? cfg->max_connections
                                                : DEFAULT_MAX_CONNECTIONS;
    srv->handler_arg = cfg->handler_arg;
    srv->before = cfg->before;
    srv->authenticate = cfg->authenticate;
    srv->authorize = cfg->authorize;

    size_t n = 0;
    while (cfg->routes != NULL && cfg->routes[n].method != NULL)
        n++;
    srv->routes = tr_calloc(n + 1, sizeof(*srv->routes));
    if (srv->routes == NULL)
        return TR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct tr_http_route *r = &srv->routes[i];
        r->handler = cfg->routes[i].handler;
        r->level = cfg->routes[i].level;
        r->method = tr_strdup(cfg->routes[i].method);
        r->pattern = tr_strdup(cfg->routes[i].pattern ? cfg->routes[i].pattern : "");
        srv->n_routes = i + 1;
        if (r->method == NULL || r->pattern == NULL)
            return TR_ENOMEM;
    }

    /* An empty token would make "Bearer " a credential: it is not one. */
    size_t nt = 0;
    for (size_t i = 0; cfg->tokens != NULL && cfg->tokens[i] != NULL; i++)
        nt += cfg->tokens[i][0] != '\0';
    if (nt == 0)
        return 0;
    srv->tokens = tr_calloc(nt, sizeof(*srv->tokens));
    if (srv->tokens == NULL)
        return TR_ENOMEM;
    for (size_t i = 0; cfg->tokens[i] != NULL; i++) {
        const char *t = cfg->tokens[i];
        if (t[0] != '\0')
            SHA256((const unsigned char *)t, strlen(t), srv->tokens[srv->n_tokens++]);
    }
    return 0;
}

struct tr_http_server *tr_http_server_open(uv_loop_t *loop, const struct tr_http_config *cfg)
{
    struct tr_http_server *srv = tr_calloc(1, sizeof(*srv));
    if (srv == NULL)
        return NULL;
    srv->loop = loop;
    if (copy_config(srv, cfg) < 0) {
        free_config(srv);
        tr_free(srv);
        return NULL;
    }
    tr_http__settings_init(&srv->settings);
    /* Cannot fail for AF_UNSPEC: the socket is created at bind time. */
    (void)uv_tcp_init(loop, &srv->tcp);
    srv->tcp.data = srv;
    return srv;
}

void tr_http__server_maybe_free(struct tr_http_server *srv)
{
    if (!srv->freeing || !srv->tcp_closed || srv->refusing || srv->n_conns > 0)
        return;
    free_config(srv);
#ifndef NDEBUG
    memset(srv, 0xa5, sizeof(*srv));
#endif
    tr_free(srv);
}

static void on_server_closed(uv_handle_t *h)
{
    struct tr_http_server *srv = h->data;
    srv->tcp_closed = true;
    tr_http__server_maybe_free(srv);
}

void tr_http_server_close(struct tr_http_server *srv)
{
    if (srv == NULL || srv->freeing)
        return;
    srv->freeing = true;
    tr_http__local_abort_all(srv);
    /* Connections unlink themselves only from their close callbacks, so the
     * walk stays valid even when an abort callback answers other requests. */
    for (struct tr_http_conn *c = srv->conns; c != NULL; c = c->next)
        tr_http__conn_close(c);
    uv_close((uv_handle_t *)&srv->tcp, on_server_closed);
}

/* ===================================================================== */
/* Listening                                                             */
/* ===================================================================== */

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
        return true;
    /* ::ffff:127.x.y.z is IPv4 loopback seen through an IPv6 socket. */
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
}

/* Fills ss from an IP literal, "[v6]" or "localhost"; no name resolution on the loop. */
static int parse_host(const char *host, int port, struct sockaddr_storage *ss)
{
    char h[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else if (n < sizeof(h)) {
        memcpy(h, host, n + 1);
    } else {
        return TR_EINVAL;
    }
    if (strcasecmp(h, "localhost") == 0)
        snprintf(h, sizeof(h), "127.0.0.1");
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(h, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(h, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return TR_EINVAL;
}

int tr_http_server_listen(struct tr_http_server *srv, const char *host, int port,
                          struct tr_error *err)
{
    if (host == NULL || host[0] == '\0')
        return tr_error_set(err, TR_EINVAL, "cannot listen: no host given");
    if (port < 0 || port > 65535)
        return tr_error_set(err, TR_EINVAL, "cannot listen on '%s': port %d is out of range",
                            host, port);
    if (srv->listening || srv->freeing)
        return tr_error_set(err, TR_EINVAL, "cannot listen on '%s': already listening", host);
    struct sockaddr_storage ss;
    if (parse_host(host, port, &ss) < 0)
        return tr_error_set(err, TR_EINVAL,
                            "cannot listen on '%s': not an IP address or 'localhost'", host);
    if (!is_loopback((const struct sockaddr *)&ss) && srv->n_tokens == 0 &&
        srv->authenticate == NULL)
        return tr_error_set(err, TR_EADDR,
                            "refusing to listen on '%s' without API tokens: anyone who can "
                            "reach it could run pipelines; give tokens with --token-file, "
                            "or listen on 127.0.0.1",
                            host);
    int rc = uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->tcp, LISTEN_BACKLOG, tr_http__on_connection);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot listen on '%s' port %d: %s", host, port,
                            uv_strerror(rc));
    srv->listening = true;
    return 0;
}

int tr_http_server_port(const struct tr_http_server *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (!srv->listening ||
        uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &len) < 0)
        return TR_EINVAL;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* ===================================================================== */
/* Answers                                                               */
/* ===================================================================== */

/* A JSON string from bytes that may not be UTF-8: invalid bytes become '?'. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = tr_strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    }
    j = json_string(copy);
    tr_free(copy);
    return j;
}

char *tr_http__error_body(const char *code, const char *message, size_t *lenp)
{
    json_t *inner = json_object();
    json_t *root = json_object();
    char *text = NULL;
    size_t len = 0;
    if (inner != NULL && root != NULL &&
        json_object_set_new(inner, "code", json_text(code ? code : "error")) == 0 &&
        json_object_set_new(inner, "message", json_text(message ? message : "")) == 0 &&
        json_object_set(root, "error", inner) == 0) {
        len = json_dumpb(root, NULL, 0, JSON_COMPACT);
        text = len > 0 ? tr_malloc(len) : NULL;
        if (text != NULL && json_dumpb(root, text, len, JSON_COMPACT) != len)
            tr_free_null(&text);
    }
    json_decref(inner);
    json_decref(root);
    *lenp = text != NULL ? len : 0;
    return text;
}

static const char oom_body[] =
    "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";

void tr_http__send_error(struct tr_http_conn *c, int status, const char *code,
                         const char *message, const char *extra, bool close)
{
    size_t len = 0;
    char *text = tr_http__error_body(code, message, &len);
    if (text == NULL)
        tr_http__send(c, status, "application/json", oom_body, sizeof(oom_body) - 1, extra,
                      close);
    else
        tr_http__send(c, status, "application/json", text, len, extra, close);
    tr_free(text);
}

void tr_http_respond(struct tr_http_req *req, int status, const char *content_type,
                     const char *body, size_t len)
{
    if (req->conn == NULL) {
        tr_http__local_answer(req, status, body, len);
        return;
    }
    tr_http__send(req->conn, status, content_type, body, len, NULL, false);
}

void tr_http_respond_extra(struct tr_http_req *req, int status, const char *content_type,
                           const char *extra, const char *body, size_t len)
{
    if (req->conn == NULL) {
        tr_http__local_answer(req, status, body, len);
        return;
    }
    tr_http__send(req->conn, status, content_type, body, len, extra, false);
}

void tr_http_respond_error(struct tr_http_req *req, int status, const char *code,
                           const char *message)
{
    if (req->conn == NULL) {
        size_t len = 0;
        char *text = tr_http__error_body(code, message, &len);
        if (text == NULL)
            tr_http__local_answer(req, status, oom_body, sizeof(oom_body) - 1);
        else
            tr_http__local_answer(req, status, text, len);
        tr_free(text);
        return;
    }
    tr_http__send_error(req->conn, status, code, message, NULL, false);
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

/* The bearer token of req, {NULL, 0} when none. */
static struct tr_str bearer(const struct tr_http_req *req)
{
    struct tr_str none = {NULL, 0};
    struct tr_str v = tr_http_req_header(req, "authorization");
    if (v.p == NULL || v.len < 7 || strncasecmp(v.p, "Bearer ", 7) != 0)
        return none;
    size_t i = 7;
    while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
        i++;
    if (i == v.len)
        return none;
    return (struct tr_str){v.p + i, v.len - i};
}

static bool token_ok(struct tr_http_server *srv, struct tr_http_req *req)
{
    struct tr_str t = bearer(req);
    if (t.p == NULL)
        return false;
    if (srv->authenticate != NULL) {
        req->principal = srv->authenticate(t.p, t.len, srv->handler_arg);
        return req->principal != NULL;
    }
    unsigned char digest[TR_HTTP_TOKEN_DIGEST];
    SHA256((const unsigned char *)t.p, t.len, digest);
    /* Every digest is compared, with no early exit. */
    int match = 0;
    for (size_t k = 0; k < srv->n_tokens; k++)
        match |= CRYPTO_memcmp(digest, srv->tokens[k], sizeof(digest)) == 0;
    OPENSSL_cleanse(digest, sizeof(digest));
    return match != 0;
}

/* Probes (liveness and readiness) answer without a token, as orchestrators
 * send none. */
static bool is_healthz(const struct tr_http_req *req)
{
    return strcmp(req->method, "GET") == 0 &&
           (tr_http_route_match("/healthz", req->path, NULL, NULL, NULL) ||
            tr_http_route_match("/readyz", req->path, NULL, NULL, NULL));
}

/* Answers 405 with the methods the path does accept. */
static void method_not_allowed(struct tr_http_conn *c, const struct tr_http_server *srv)
{
    struct tr_http_req *req = c->req;
    struct tr_buf allow;
    tr_buf_init(&allow, 4096);
    int rc = tr_buf_addstr(&allow, "Allow: ");
    size_t listed = 0;
    for (size_t i = 0; rc == 0 && i < srv->n_routes; i++) {
        const struct tr_http_route *r = &srv->routes[i];
        if (!tr_http_route_match(r->pattern, req->path, NULL, NULL, NULL))
            continue;
        /* Skip a method an earlier route already listed. */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(srv->routes[j].method, r->method) == 0 &&
                   tr_http_route_match(srv->routes[j].pattern, req->path, NULL, NULL, NULL);
        if (seen)
            continue;
        if (listed++ > 0)
            rc = tr_buf_addstr(&allow, ", ");
        if (rc == 0)
            rc = tr_buf_addstr(&allow, r->method);
    }
    if (rc == 0)
        rc = tr_buf_addstr(&allow, "\r\n");
    char msg[160];
    snprintf(msg, sizeof(msg), "method %s is not allowed here", req->method);
    tr_http__send_error(c, 405, "method_not_allowed", msg, rc == 0 ? allow.buf : NULL, false);
    tr_buf_release(&allow);
}

bool tr_http__route(struct tr_http_server *srv, struct tr_http_req *req, bool *path_known)
{
    *path_known = false;
    for (size_t i = 0; i < srv->n_routes; i++) {
        const struct tr_http_route *r = &srv->routes[i];
        struct tr_str names[TR_HTTP_MAX_PARAMS];
        struct tr_str values[TR_HTTP_MAX_PARAMS];
        int n = 0;
        if (!tr_http_route_match(r->pattern, req->path, names, values, &n))
            continue;
        *path_known = true;
        if (strcmp(r->method, req->method) != 0)
            continue;
        tr_http__req_set_params(req, names, values, n);
        if (srv->authorize != NULL && !srv->authorize(req, r->level, srv->handler_arg))
            return true;
        r->handler(req, srv->handler_arg);
        return true;
    }
    return false;
}

void tr_http__dispatch(struct tr_http_conn *c)
{
    struct tr_http_server *srv = c->srv;
    struct tr_http_req *req = c->req;
    c->state = TR_HTTP_HANDLING;
    srv->n_held++;
    /* A handler may hold the request (long-poll): no idle timeout meanwhile. */
    (void)uv_timer_stop(&c->timer);
    tr_http__req_split_url(req);

    if ((srv->n_tokens > 0 || srv->authenticate != NULL) && !is_healthz(req) &&
        !token_ok(srv, req)) {
        tr_http__send_error(c, 401, "unauthorized",
                            "a valid 'Authorization: Bearer <token>' header is required",
                            "WWW-Authenticate: Bearer\r\n", false);
        return;
    }
    if (srv->before != NULL && srv->before(req, srv->handler_arg))
        return;
    bool path_known = false;
    if (tr_http__route(srv, req, &path_known))
        return;
    if (path_known) {
        method_not_allowed(c, srv);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "no route for %s %.*s", req->method,
             (int)TR_MIN(req->path.len, (size_t)100), req->path.p);
    tr_http__send_error(c, 404, "not_found", msg, NULL, false);
}
