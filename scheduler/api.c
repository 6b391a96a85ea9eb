/*
 * api.c - the /v1 HTTP API (docs/api.md) over the scheduler's state.
 *
 * Handlers run on the loop thread. Reads answer at once from memory, or from
 * the state backend for runs no longer held in memory. Writes (new runs,
 * cancels, registrations) change memory and queue their answer with
 * batch_add_reply, which is sent only after the turn's commit has made the
 * change durable. Long-polls (`wait`) are waiters on the run, answered
 * when it finishes or when their timer runs out.
 */
#include "scheduler/api_int.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"
#include "scheduler/budgets.h"
#include "scheduler/feedback.h"
#include "scheduler/triggers.h"
#include "scheduler/runctl.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"
#include "lib/wire/mp_json.h"

/* ====================================================================== */
/* JSON helpers                                                            */
/* ====================================================================== */

void fmt_time(double t, char *out, size_t size)
{
    if (t <= 0) {
        out[0] = '\0';
        return;
    }
    time_t sec = (time_t)t;
    struct tm tm;
    gmtime_r(&sec, &tm);
    int ms = (int)((t - (double)sec) * 1000);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms < 0 ? 0 : ms % 1000);
}

json_t *json_time(double t)
{
    char buf[40];
    fmt_time(t, buf, sizeof(buf));
    return buf[0] ? json_string(buf) : json_null();
}

json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

void respond_json(struct tr_http_req *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

json_t *api_json_object(struct tr_http_req *req)
{
    struct tr_str body = tr_http_req_body(req);
    json_error_t jerr;
    json_t *j = json_loadb(body.p, body.len, 0, &jerr);
    if (j == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        tr_http_respond_error(req, 400, "malformed_json", msg);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        tr_http_respond_error(req, 400, "malformed_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

int status_of(int code)
{
    switch (code) {
    case TR_ENOENT:
        return 404;
    case TR_ECONFLICT:
        return 409;
    case TR_E2BIG:
        return 413;
    case TR_ENOMEM:
    case TR_ESTATE:
    case TR_EIO:
        return 500;
    case TR_EUNAVAIL:
        return 503;
    default:
        return 400;
    }
}

void respond_err(struct tr_http_req *req, const struct tr_error *err)
{
    const char *code = tr_err_name(err->code);
    if (err->code == TR_EINVAL)
        code = "invalid_argument";
    tr_http_respond_error(req, status_of(err->code), code,
                          err->msg[0] ? err->msg : tr_strerror(err->code));
}

json_t *counts_json(const uint32_t *counts)
{
    json_t *o = json_object();
    uint32_t total = 0;
    for (int i = 0; i < TR_TASK_STATE_COUNT; i++)
        total += counts[i];
    json_object_set_new(o, "total", json_integer(total));
    for (int i = 0; i < TR_TASK_STATE_COUNT; i++)
        json_object_set_new(o, tr_task_state_names[i], json_integer(counts[i]));
    return o;
}

json_t *parse_or_null(const char *text)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

/*
 * The run as JSON text, with params and output spliced in as the JSON text
 * they are kept as: a run of 10,000 sink tasks has a large output, and
 * parsing it only to print it again would cost more than the whole answer.
 */
char *run_json_text(struct run *r, size_t *len)
{
    json_t *o = run_to_json(r, false);
    json_object_set_new(o, "error", json_str_or_null(r->error));
    char why[320];
    if (core_run_waiting(r->core, r, why, sizeof(why)) ||
        dispatch_run_waiting(r->core->dispatch, r, why, sizeof(why)))
        json_object_set_new(o, "waiting", json_string(why));
    char *head = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (head == NULL)
        return NULL;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    size_t hl = strlen(head);
    const char *params = r->params_json ? r->params_json : "null";
    const char *output = r->output_json ? r->output_json : "null";
    const char *usage = r->usage_json ? r->usage_json : USAGE_EMPTY_JSON;
    int rc = tr_buf_add(&b, head, hl - 1); /* without the closing brace */
    if (rc == 0)
        rc = tr_buf_addf(&b, ",\"params\":%s,\"output\":%s,\"usage\":%s}", params, output,
                         usage);
    free(head);
    if (rc < 0) {
        tr_buf_release(&b);
        return NULL;
    }
    return tr_buf_detach(&b, len);
}

void respond_run(struct tr_http_req *req, struct run *r)
{
    size_t len = 0;
    char *text = run_json_text(r, &len);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, 200, "application/json", text, len);
    tr_free(text);
}

json_t *run_to_json(struct run *r, bool with_output)
{
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(r->id));
    json_object_set_new(o, "pipeline", json_string(r->pipe->def->name));
    json_object_set_new(o, "version", json_string(r->pipe->def->version));
    json_object_set_new(o, "digest", json_string(r->pipe->digest));
    json_object_set_new(o, "state", json_string(tr_run_state_names[r->state]));
    json_object_set_new(o, "created_at", json_time(r->created_at));
    json_object_set_new(o, "started_at", json_time(r->started_at));
    json_object_set_new(o, "finished_at", json_time(r->finished_at));
    json_object_set_new(o, "tasks", counts_json(r->counts));
    api_flow_run_json(r, o);
    if (r->retry_of != NULL)
        json_object_set_new(o, "retry_of", json_string(r->retry_of));
    if (with_output) {
        json_object_set_new(o, "params", parse_or_null(r->params_json));
        json_object_set_new(o, "output", parse_or_null(r->output_json));
        json_object_set_new(o, "error", json_str_or_null(r->error));
    }
    return o;
}


int count_task(const struct tr_task_rec *rec, void *arg)
{
    struct rec_ctx *c = arg;
    for (int i = 0; i < TR_TASK_STATE_COUNT; i++) {
        if (strcmp(rec->state, tr_task_state_names[i]) == 0)
            c->counts[i]++;
    }
    return 0;
}

int run_rec_json(const struct tr_run_rec *rec, void *arg)
{
    struct rec_ctx *c = arg;
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(rec->id));
    json_object_set_new(o, "pipeline", json_string(rec->pipeline));
    json_object_set_new(o, "version", json_string(rec->version ? rec->version : ""));
    json_object_set_new(o, "digest", json_str_or_null(rec->digest));
    json_object_set_new(o, "state", json_string(rec->state));
    json_object_set_new(o, "created_at", json_time(rec->created_at));
    json_object_set_new(o, "started_at", json_time(rec->started_at));
    json_object_set_new(o, "finished_at", json_time(rec->finished_at));
    if (c->with_output) {
        json_object_set_new(o, "params", parse_or_null(rec->params_json));
        json_object_set_new(o, "output", parse_or_null(rec->output_json));
        json_object_set_new(o, "error", json_str_or_null(rec->error));
    }
    c->out = o;
    return 0;
}

/* ====================================================================== */
/* Waiters (long-poll)                                                     */
/* ====================================================================== */

static void waiter_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

static void waiter_unlink(struct waiter *w)
{
    if (w->run == NULL)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->run->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->run = NULL;
}

static void waiter_end(struct waiter *w)
{
    waiter_unlink(w);
    if (w->req)
        tr_http_req_on_abort(w->req, NULL, NULL);
    w->req = NULL;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

void on_waiter_timeout(uv_timer_t *h)
{
    struct waiter *w = h->data;
    struct tr_http_req *req = w->req;
    struct run *r = w->run;
    waiter_end(w);
    if (req && r)
        respond_run(req, r);
}

void on_waiter_abort(struct tr_http_req *req, void *arg)
{
    struct waiter *w = arg;
    w->req = NULL;
    waiter_end(w);
}

void api_run_final(void *arg, struct run *r)
{
    struct api *a = arg;
    rc_run_final(a, r);
    bud_run_final(a, r); /* its reservations are released */
    while (r->waiters != NULL) {
        struct waiter *w = r->waiters;
        struct tr_http_req *req = w->req;
        waiter_end(w);
        /* After the commit: the client must not see a state a crash could undo. */
        if (req)
            batch_add_reply_text(a->batch, req, 200, run_json_text(r, NULL));
    }
}

void api_waiters_close(struct api *a)
{
    if (a->core == NULL)
        return; /* never opened */
    size_t it = 0;
    struct run *r;
    while ((r = tr_hmap_next(&a->core->runs, &it)) != NULL) {
        while (r->waiters != NULL) {
            struct waiter *w = r->waiters;
            struct tr_http_req *req = w->req;
            waiter_end(w);
            if (req)
                tr_http_respond_error(req, 503, "unavailable", "scheduler stopping");
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Pipelines, workers, health                                              */
/* ---------------------------------------------------------------------- */

struct pipes_ctx
{
    struct api *a;
    const struct tr_http_req *req;
    json_t *arr;
};

static int list_pipe(const struct tr_pipeline_rec *rec, void *arg)
{
    struct pipes_ctx *c = arg;
    if (!tenant_sees(c->a, c->req, TENANT_PIPELINE, rec->name))
        return 0;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(rec->name));
    json_object_set_new(o, "version", json_string(rec->version));
    json_object_set_new(o, "digest", json_string(rec->digest));
    json_object_set_new(o, "tasks", json_integer(rec->n_tasks));
    json_object_set_new(o, "registered_at", json_time(rec->registered_at));
    json_array_append_new(c->arr, o);
    return 0;
}

static void h_pipelines_list(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    json_t *arr = json_array();
    struct pipes_ctx c = {a, req, arr};
    int rc = tr_state_list_pipelines(a->state, list_pipe, &c);
    if (rc < 0) {
        json_decref(arr);
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "pipelines", arr);
    respond_json(req, 200, o);
}

static void h_workers(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    json_t *arr = json_array();
    size_t it = 0;
    struct worker *w;
    while ((w = tr_hmap_next(&a->fleet->workers, &it)) != NULL) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(w->id));
        json_object_set_new(o, "pool", json_string(w->pool->name));
        json_object_set_new(o, "slots", json_integer(w->slots));
        json_object_set_new(o, "busy", json_integer(w->inflight));
        json_object_set_new(o, "labels", json_incref(w->labels));
        json_t *res = json_object();
        json_object_set_new(res, "cpus", json_integer(w->cpus));
        json_object_set_new(res, "mem_mb", json_integer((json_int_t)w->mem_mb));
        json_object_set_new(res, "gpus", json_integer(w->gpus));
        json_object_set_new(o, "resources", res);
        json_object_set_new(o, "gpus", worker_gpus_json(&w->g));
        json_object_set_new(o, "version", json_string(w->version));
        json_object_set_new(o, "tenant", json_str_or_null(w->tenant));
        json_object_set_new(o, "last_seen", json_time(w->last_seen));
        json_object_set_new(o, "connected_at", json_time(w->connected_at));
        json_array_append_new(arr, o);
    }
    json_t *o = json_object();
    json_object_set_new(o, "workers", arr);
    respond_json(req, 200, o);
}

static void h_healthz(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(api_writes_paused(a) ? "degraded" : "ok"));
    json_object_set_new(o, "epoch", json_integer((json_int_t)a->dispatch->epoch));
    json_object_set_new(o, "role", json_string(leader_role_name(a->leader)));
    respond_json(req, 200, o);
}

static void h_metrics(struct tr_http_req *req, void *arg)
{
    size_t len = 0;
    struct api *a = arg;
    char *text = metrics_render(&a->metrics, &len);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, 200, "text/plain; version=0.0.4", text, len);
    tr_free(text);
}

static void h_readyz(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    leader_h_readyz(req, a->leader);
}

static bool gate(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    return leader_gate(req, a->leader);
}

bool api_writes_paused(const struct api *a)
{
    return a->batch->failing || leader_suspended(a->leader);
}

/* A token's role gives it this route (auth.h); kept in one place. */
static const void *authenticate(const char *token, size_t len, void *arg)
{
    struct api *a = arg;
    return auth_lookup(a->auth, token, len);
}

/*
 * Every route with the least role it needs (auth.h): viewer reads;
 * submitter also starts runs and gives feedback and labels; operator also
 * cancels, registers pipelines and models and moves aliases; admin also
 * sets budgets and reads the audit log. A route added without a role needs
 * admin. docs/api.md lists the same table.
 */
#define VIEWER AUTH_VIEWER
#define SUBMITTER AUTH_SUBMITTER
#define OPERATOR AUTH_OPERATOR
#define ADMIN AUTH_ADMIN
#define OPEN AUTH_OPEN
static const struct tr_http_route routes[] = {
    {"POST", "/v1/runs", h_runs_post, SUBMITTER},
    {"GET", "/v1/runs", h_runs_list, VIEWER},
    {"GET", "/v1/runs/{id}", h_run_get, VIEWER},
    {"GET", "/v1/runs/{id}/tasks", h_run_tasks, VIEWER},
    {"GET", "/v1/runs/{id}/logs", h_run_logs, VIEWER},
    {"POST", "/v1/runs/{id}/cancel", h_run_cancel, OPERATOR},
    {"POST", "/v1/runs/{id}/approvals/{task}", h_run_approval, OPERATOR},
    {"POST", "/v1/runs/{id}/retry", h_run_retry, OPERATOR},
    {"DELETE", "/v1/runs/{id}", h_run_delete, OPERATOR},
    {"POST", "/v1/pipelines", h_pipelines_post, OPERATOR},
    {"GET", "/v1/pipelines", h_pipelines_list, VIEWER},
    {"GET", "/v1/pipelines/{name}/versions/{v}/source", h_pipeline_source, VIEWER},
    {"GET", "/v1/workers", h_workers, VIEWER},
    {"GET", "/healthz", h_healthz, OPEN},
    {"GET", "/readyz", h_readyz, OPEN},
    {"GET", "/metrics", h_metrics, VIEWER},
    {"POST", "/v1/feedback", h_feedback_post, SUBMITTER},
    {"GET", "/v1/feedback", h_feedback_list, VIEWER},
    {"GET", "/v1/pipelines/{name}/stats", h_pipeline_stats, VIEWER},
    {"POST", "/v1/labels", h_labels_post, SUBMITTER},
    {"GET", "/v1/labels", h_labels_list, VIEWER},
    {"POST", "/v1/labels/{id}", h_label_post, SUBMITTER},
    {"GET", "/v1/models", h_models_list, VIEWER},
    {"GET", "/v1/models/{name}", h_model_get, VIEWER},
    {"POST", "/v1/models/{name}/versions", h_model_version_post, OPERATOR},
    {"GET", "/v1/models/{name}/versions/{v}", h_model_version_get, VIEWER},
    {"PUT", "/v1/models/{name}/aliases/{alias}", h_model_alias_put, OPERATOR},
    {"DELETE", "/v1/models/{name}/aliases/{alias}", h_model_alias_delete, OPERATOR},
    {"GET", "/v1/models/{name}/history", h_model_history, VIEWER},
    {"GET", "/v1/triggers", h_triggers_list, VIEWER},
    {"GET", "/v1/triggers/{pipeline}/{trigger}/firings", h_trigger_firings, VIEWER},
    {"GET", "/v1/audit", h_audit_list, ADMIN},
    {"PUT", "/v1/budgets/{tenant}", h_budget_put, ADMIN},
    {"GET", "/v1/budgets", h_budgets_list, VIEWER},
    {NULL, NULL, NULL, 0},
};

int api_open(struct api *a, struct tr_error *err)
{
    int rc = auth_open(a->loop, a->cfg->token_file, &a->auth, err);
    if (rc < 0)
        return rc;
    struct tr_http_config cfg = {
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 32u << 20,
        .max_connections = 1024,
        .routes = routes,
        .handler_arg = a,
        .before = gate,
        .authenticate = auth_enabled(a->auth) ? authenticate : NULL,
        .authorize = auth_authorize,
    };
    a->http = tr_http_server_open(a->loop, &cfg);
    if (a->http == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot create the HTTP server");
    return tr_http_server_listen(a->http, a->cfg->api_host, a->cfg->api_port, err);
}

void api_close(struct api *a)
{
    tr_http_server_close(a->http);
    a->http = NULL;
    auth_close(a->auth);
    a->auth = NULL;
    audit_close(a);
    tenants_close(a);
}
