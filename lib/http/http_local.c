/*
 * http_local.c - in-process requests: a request without a connection, run
 * through the server's before hook and route table, whose answer goes to a
 * callback instead of a socket.
 *
 * The scheduler serves the registry and label calls of tasks this way, so a
 * task's `trellis.registry.register` is checked, stored and answered (after
 * its group commit) by the very handler `POST /v1/models/{name}/versions`
 * runs. Handlers cannot tell the difference: tr_http_respond* sees that the
 * request has no connection and calls tr_http__local_answer.
 *
 * Such requests are kept in a list on the server until answered, so that
 * freeing the server ends them (abort callback first, as a lost connection
 * would, then done with status 0): nothing leaks at shutdown.
 *
 * Loop thread only.
 */
#include "lib/base/alloc.h"
#include "lib/http/http_int.h"

static const char *method_name(const char *m)
{
    /* req->method must be a static string, as llhttp's names are. */
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
    for (size_t i = 0; i < TR_ARRAY_LEN(names); i++) {
        if (strcmp(names[i], m) == 0)
            return names[i];
    }
    return NULL;
}

static void unlink_local(struct tr_http_req *req)
{
    struct tr_http_server *srv = req->local_srv;
    if (req->lprev != NULL)
        req->lprev->lnext = req->lnext;
    else
        srv->locals = req->lnext;
    if (req->lnext != NULL)
        req->lnext->lprev = req->lprev;
    req->lprev = req->lnext = NULL;
    srv->n_locals--;
}

void tr_http__local_answer(struct tr_http_req *req, int status, const char *body, size_t len)
{
    tr_http_local_done_fn done = req->local_done;
    void *arg = req->local_arg;
    unlink_local(req);
    if (status < 200 || status > 599)
        status = 500;
    /* body may point into the request: the callback runs before the free. */
    done(arg, status, body, body != NULL ? len : 0);
    tr_http__req_free(req);
}

void tr_http__local_abort_all(struct tr_http_server *srv)
{
    while (srv->locals != NULL) {
        struct tr_http_req *req = srv->locals;
        unlink_local(req);
        if (req->abort_cb != NULL)
            req->abort_cb(req, req->abort_arg);
        req->local_done(req->local_arg, 0, NULL, 0);
        tr_http__req_free(req);
    }
}

int tr_http_local_request(struct tr_http_server *srv, const char *method, const char *url,
                          const char *body, size_t len, tr_http_local_done_fn done, void *arg)
{
    return tr_http_local_request_as(srv, NULL, method, url, body, len, done, arg);
}

int tr_http_local_request_as(struct tr_http_server *srv, const void *principal,
                             const char *method, const char *url, const char *body, size_t len,
                             tr_http_local_done_fn done, void *arg)
{
    const char *m = method_name(method);
    if (m == NULL || url == NULL || url[0] != '/' || done == NULL)
        return TR_EINVAL;
    if (srv->freeing)
        return TR_ECANCELED;
    struct tr_http_req *req = tr_calloc(1, sizeof(*req));
    if (req == NULL)
        return TR_ENOMEM;
    req->method = m;
    tr_buf_init(&req->head, srv->max_header_bytes);
    tr_buf_init(&req->body, srv->max_body_bytes);
    size_t url_len = strlen(url);
    if (tr_buf_add(&req->head, url, url_len) < 0 ||
        (len > 0 && tr_buf_add(&req->body, body, len) < 0)) {
        tr_http__req_free(req);
        return len > srv->max_body_bytes || url_len > srv->max_header_bytes ? TR_ELIMIT
                                                                             : TR_ENOMEM;
    }
    req->url_len = url_len;
    req->keep_alive = true;
    req->http_minor = 1;
    req->principal = principal;
    req->local_srv = srv;
    req->local_done = done;
    req->local_arg = arg;
    req->lnext = srv->locals;
    if (srv->locals != NULL)
        srv->locals->lprev = req;
    srv->locals = req;
    srv->n_locals++;
    tr_http__req_split_url(req);

    /* From here on req belongs to whoever answers it: never touch it after
     * the hook or a handler ran, it may be freed already. */
    if (srv->before != NULL && srv->before(req, srv->handler_arg))
        return 0;
    bool path_known = false;
    if (tr_http__route(srv, req, &path_known))
        return 0;
    char msg[160];
    snprintf(msg, sizeof(msg), "no route for %s %.*s", req->method,
             (int)TR_MIN(req->path.len, (size_t)100), req->path.p);
    tr_http_respond_error(req, path_known ? 405 : 404,
                          path_known ? "method_not_allowed" : "not_found", msg);
    return 0;
}

size_t tr_http_local_pending(const struct tr_http_server *srv)
{
    return srv->n_locals;
}
