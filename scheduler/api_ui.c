/*
 * api_ui.c - the web view's files, and the read it needs beyond the rest of
 * the API: a run's graph.
 *
 * The files are served with an ETag (a digest computed at build time) and
 * "Cache-Control: no-cache", so that a browser revalidates and gets 304 until
 * the scheduler is upgraded, and with a Content-Security-Policy that allows
 * only the scheduler's own scripts, styles and API: the page runs no inline
 * script and loads nothing from elsewhere.
 */
#include "scheduler/api_ui.h"

#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api_int.h"

#define UI_HEADERS                                                                                 \
    "Cache-Control: no-cache\r\n"                                                                  \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "          \
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'\r\n"

const struct ui_asset *ui_asset_find(const char *path, size_t len)
{
    for (size_t i = 0; i < ui_n_assets; i++)
        if (strlen(ui_assets[i].path) == len && memcmp(ui_assets[i].path, path, len) == 0)
            return &ui_assets[i];
    return NULL;
}

/* Whether If-None-Match names etag (a list, or "*"). */
static bool etag_matches(struct tr_http_req *req, const char *etag)
{
    struct tr_str inm = tr_http_req_header(req, "if-none-match");
    if (inm.p == NULL)
        return false;
    size_t el = strlen(etag);
    for (size_t i = 0; i < inm.len; i++) {
        if (inm.p[i] == '*')
            return true;
        if (inm.len - i >= el && memcmp(inm.p + i, etag, el) == 0)
            return true;
    }
    return false;
}

void h_ui(struct tr_http_req *req, void *arg)
{
    (void)arg;
    struct tr_str path = tr_http_req_path(req);
    const struct ui_asset *f = ui_asset_find(path.p, path.len);
    if (f == NULL) {
        /* The files all sit directly under /ui/: a name there with a dot is
         * a file that is not there; any other path is a view of the app
         * (a pipeline named "rag.v2" included), answered by its shell. */
        size_t skip = strlen("/ui/");
        size_t n = path.len > skip ? path.len - skip : 0;
        const char *rest = n > 0 ? path.p + skip : path.p;
        if (n > 0 && memchr(rest, '/', n) == NULL && memchr(rest, '.', n) != NULL) {
            tr_http_respond_error(req, 404, "not_found", "no such file in the web view");
            return;
        }
        f = ui_asset_find("/ui/index.html", strlen("/ui/index.html"));
        if (f == NULL) {
            tr_http_respond_error(req, 404, "not_found", "this build has no web view");
            return;
        }
    }
    char extra[600];
    snprintf(extra, sizeof(extra), "ETag: %s\r\n" UI_HEADERS, f->etag);
    if (etag_matches(req, f->etag)) {
        tr_http_respond_extra(req, 304, f->content_type, extra, NULL, 0);
        return;
    }
    tr_http_respond_extra(req, 200, f->content_type, extra, (const char *)f->data, f->len);
}

/* ===================================================================== */
/* GET /v1/runs/{id}/graph                                               */
/* ===================================================================== */

static json_t *graph_json(const char *run_id, const struct tr_pipeline_def *def)
{
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(run_id));
    json_object_set_new(o, "pipeline", json_string(def->name));
    json_object_set_new(o, "version", json_string(def->version));
    json_object_set_new(o, "digest", json_string(def->digest));
    json_t *tasks = json_array();
    for (uint32_t k = 0; k < def->n_tasks; k++) {
        const struct tr_task_def *t = &def->tasks[def->topo[k]];
        json_t *after = json_array();
        for (uint32_t j = 0; j < t->n_after; j++)
            json_array_append_new(after, json_string(def->tasks[t->after[j]].name));
        json_t *to = json_object();
        json_object_set_new(to, "name", json_string(t->name));
        json_object_set_new(to, "after", after);
        json_object_set_new(to, "map", t->map >= 0 ? json_string(def->tasks[t->map].name)
                                                   : json_null());
        json_object_set_new(to, "pool", json_string(def->pools[t->pool]));
        json_object_set_new(to, "gpus", json_integer(t->gpus));
        json_object_set_new(to, "retries", json_integer(t->retries));
        json_object_set_new(to, "timeout", json_real(t->timeout));
        json_object_set_new(to, "priority", json_integer(t->priority));
        json_object_set_new(to, "cache", json_boolean(t->cache));
        json_array_append_new(tasks, to);
    }
    json_object_set_new(o, "tasks", tasks);
    return o;
}

/* A graph read from the state: the run's digest, then its source loaded. */
struct graph_ctx
{
    struct tr_http_req *req;  /* NULL once the client went away */
    char run_id[64];
    char digest[65];
    bool found;
};

static int graph_run_found(const struct tr_run_rec *rec, void *arg)
{
    struct graph_ctx *c = arg;
    snprintf(c->digest, sizeof(c->digest), "%s", rec->digest ? rec->digest : "");
    c->found = true;
    return 0;
}

static void graph_abort(struct tr_http_req *req, void *arg)
{
    (void)req;
    struct graph_ctx *c = arg;
    c->req = NULL;
}

static void graph_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct graph_ctx *c = arg;
    if (c->req != NULL) {
        tr_http_req_on_abort(c->req, NULL, NULL);
        if (pe == NULL)
            respond_err(c->req, err);
        else
            respond_json(c->req, 200, graph_json(c->run_id, pe->def));
    }
    tr_free(c);
}

void h_run_graph(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct tr_str id = tr_http_req_param(req, "id");
    struct graph_ctx *c = tr_calloc(1, sizeof(*c));
    if (c == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    c->req = req;
    if (id.len == 0 || id.len >= sizeof(c->run_id)) {
        tr_http_respond_error(req, 404, "not_found", "no such run");
        tr_free(c);
        return;
    }
    memcpy(c->run_id, id.p, id.len);
    struct run *r = run_find(a->core, c->run_id);
    if (r != NULL) {
        respond_json(req, 200, graph_json(c->run_id, r->pipe->def));
        tr_free(c);
        return;
    }
    int rc = tr_state_get_run(a->state, c->run_id, graph_run_found, c);
    if (rc == TR_ENOENT || (rc == 0 && !c->found)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no run '%.100s'", c->run_id);
        tr_http_respond_error(req, 404, "not_found", msg);
        tr_free(c);
        return;
    }
    struct pipeline_entry *pe = rc == 0 ? pipe_lookup(a->pipes, c->digest) : NULL;
    if (pe != NULL) {
        graph_loaded(pe, NULL, c);
        return;
    }
    char *src = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = tr_state_get_source(a->state, c->digest, &src, &len);
    if (rc < 0) {
        tr_http_respond_error(req, 500, "state_error", "the run's pipeline source is missing");
        tr_free(c);
        return;
    }
    tr_http_req_on_abort(req, graph_abort, c);
    rc = pipe_load_async(a->pipes, src, len, "pipeline.lua", graph_loaded, c);
    tr_free(src);
    if (rc < 0) {
        tr_http_req_on_abort(req, NULL, NULL);
        tr_http_respond_error(req, 500, "internal_error", tr_strerror(rc));
        tr_free(c);
    }
}
