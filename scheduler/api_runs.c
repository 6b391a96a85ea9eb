/*
 * api_runs.c - the /v1/runs and /v1/pipelines handlers (docs/api.md).
 *
 * Writes answer through batch_add_reply, after the turn's commit;
 * reads answer at once, from memory or, for runs no longer held there, from
 * the state backend.
 */
#include "scheduler/api_int.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/wire/mp_json.h"
#include "scheduler/runctl.h"
#include "scheduler/triggers.h"

/* ====================================================================== */
/* Runs                                                                    */
/* ====================================================================== */

struct start_ctx
{
    struct api *api;
    struct tr_http_req *req; /* NULL once the client went away */
    json_t *params;          /* owned */
    bool register_only;      /* POST /v1/pipelines */
    char *idem_key;          /* its Idempotency-Key (runctl.h), NULL when none */
};

static void start_ctx_abort(struct tr_http_req *req, void *arg)
{
    struct start_ctx *c = arg;
    c->req = NULL;
}

static void start_ctx_free(struct start_ctx *c)
{
    rc_idem_release(c->api, c->idem_key);
    json_decref(c->params);
    tr_free(c);
}

static void finish_register(struct api *a, struct pipeline_entry *pe, struct tr_http_req *req)
{
    const struct tr_pipeline_def *def = pe->def;
    /* The source is stored with it, so that runs by name and restarts find it. */
    if (batch_add_pipeline(a->batch, pe) < 0 || batch_add_source(a->batch, pe) < 0) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    /* Its triggers are written with it, in the same commit. */
    if (trg_register(a, def) < 0) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(def->name));
    json_object_set_new(o, "version", json_string(def->version));
    json_object_set_new(o, "digest", json_string(def->digest));
    json_object_set_new(o, "tasks", json_integer(def->n_tasks));
    char detail[200];
    snprintf(detail, sizeof(detail), "{\"version\":\"%s\",\"digest\":\"%s\"}",
             def->version, def->digest);
    json_t *chk = json_loads(detail, 0, NULL); /* a version is any string: only if it is JSON */
    tr_audit_record_detail(a, req, "pipeline.register", def->name, chk ? detail : NULL);
    json_decref(chk);
    batch_add_reply(a->batch, req, 201, o);
}

static void finish_start(struct api *a, struct pipeline_entry *pe, json_t *params,
                         struct tr_http_req *req, const char *idem_key)
{
    /* The pipeline's defaults are merged into every run's params on the loop. */
    uint32_t max_bytes = a->cfg->max_params_bytes ? a->cfg->max_params_bytes : (1u << 20);
    if (pe->def->params_len > max_bytes) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the pipeline's default params are %zu bytes, more than %u "
                 "(--max-params-bytes)", (size_t)pe->def->params_len, max_bytes);
        tr_http_respond_error(req, 400, "invalid_params", msg);
        return;
    }
    if (!rc_params_check(req, pe->def, params))
        return;
    struct tr_error err;
    tr_error_init(&err);
    struct run *r = NULL;
    int rc = dispatch_gpu_check(a->dispatch, pe->def, &err);
    if (rc == 0)
        rc = run_new(a->core, pe, params, &r, &err);
    if (rc < 0) {
        respond_err(req, &err);
        return;
    }
    rc_idem_created(a, idem_key, r);
    run_start(r);
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(r->id));
    json_object_set_new(o, "state", json_string(tr_run_state_names[r->state]));
    tr_info("run created run=%s pipeline=%s tasks=%u", r->id, pe->def->name, pe->def->n_tasks);
    tr_audit_record(a, req, "run.start", r->id);
    batch_add_reply(a->batch, req, 201, o);
}

static void on_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct start_ctx *c = arg;
    struct api *a = c->api;
    if (c->req != NULL) {
        tr_http_req_on_abort(c->req, NULL, NULL);
        if (pe == NULL) {
            respond_err(c->req, err);
        } else if (api_writes_paused(a)) {
            tr_http_respond_error(c->req, 503, "unavailable",
                                  "the state backend is not taking writes; try again");
        } else if (!tenant_claim(a, c->req, TENANT_PIPELINE, pe->def->name)) {
            /* answered: the name is another tenant's */
        } else if (!trg_check(a, pe->def, c->req)) {
            /* answered: a trigger's run names no registered pipeline */
        } else if (c->register_only) {
            finish_register(a, pe, c->req);
        } else {
            finish_start(a, pe, c->params, c->req, c->idem_key);
        }
    }
    start_ctx_free(c);
}

#define PARAMS_BYTES_DEFAULT (1u << 20)
#define PARAMS_KEYS_DEFAULT 10000u
#define BODY_VALUES_SLACK 1024u /* values a body may hold beyond its params' */

static uint32_t params_keys_max(const struct api *a)
{
    return a->cfg->max_params_keys ? a->cfg->max_params_keys : PARAMS_KEYS_DEFAULT;
}

/*
 * Counts the separators and openers outside strings (',' '[' '{'): at least
 * the values of a JSON text less one. A linear byte scan, so that a body of
 * millions of tiny values is refused before the parser spends the loop's
 * seconds building them.
 */
size_t json_count_values(const char *p, size_t n, size_t stop)
{
    size_t count = 0;
    bool in_str = false;
    for (size_t i = 0; i < n && count <= stop; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == '[' || c == '{') {
            count++;
        }
    }
    return count;
}

/* Keys and elements in v at every depth; stops counting past stop. */
static size_t json_count_elems(json_t *v, size_t stop)
{
    size_t n = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e)
        {
            n += 1 + json_count_elems(e, stop);
            if (n > stop)
                break;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && n <= stop; i++)
            n += 1 + json_count_elems(json_array_get(v, i), stop);
    }
    return n;
}

/* A run's params within --max-params-keys and --max-params-bytes; 400 otherwise. */
static bool params_ok(struct api *a, struct tr_http_req *req, json_t *params)
{
    if (params == NULL || !json_is_object(params))
        return true;
    uint32_t max_keys = params_keys_max(a);
    uint32_t max_bytes = a->cfg->max_params_bytes ? a->cfg->max_params_bytes
                                                  : PARAMS_BYTES_DEFAULT;
    char msg[200];
    if (json_count_elems(params, max_keys) > max_keys) {
        snprintf(msg, sizeof(msg),
                 "'params' holds more than %u keys and elements (--max-params-keys)", max_keys);
        tr_http_respond_error(req, 400, "invalid_params", msg);
        return false;
    }
    size_t bytes = json_dumpb(params, NULL, 0, JSON_COMPACT);
    if (bytes > max_bytes) {
        snprintf(msg, sizeof(msg),
                 "'params' is %zu bytes as JSON, more than %u (--max-params-bytes)", bytes,
                 max_bytes);
        tr_http_respond_error(req, 400, "invalid_params", msg);
        return false;
    }
    return true;
}

/* Parses the body as a JSON object; answers 400 and returns NULL otherwise. */
static json_t *body_object(struct api *a, struct tr_http_req *req)
{
    struct tr_str body = tr_http_req_body(req);
    size_t max_values = (size_t)params_keys_max(a) + BODY_VALUES_SLACK;
    if (json_count_values(body.p, body.len, max_values) > max_values) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the body holds more than %zu values ('params' may hold %u keys and "
                 "elements: --max-params-keys)", max_values, params_keys_max(a));
        tr_http_respond_error(req, 400, "invalid_params", msg);
        return NULL;
    }
    return api_json_object(req);
}

/* The source a registered "name[@version]" points at: its digest, loaded or stored. */
struct reg_lookup
{
    char digest[65];
    char *source;
    size_t len;
    bool found;
};

static int reg_found(const struct tr_pipeline_rec *rec, void *arg)
{
    struct reg_lookup *l = arg;
    snprintf(l->digest, sizeof(l->digest), "%s", rec->digest);
    l->found = true;
    return 0;
}

static void start_or_register(struct api *a, struct tr_http_req *req, bool register_only)
{
    if (api_writes_paused(a)) {
        tr_http_respond_error(req, 503, "unavailable",
                              "the state backend is not taking writes; try again");
        return;
    }
    json_t *body = body_object(a, req);
    if (body == NULL)
        return;
    json_t *source = json_object_get(body, "source");
    json_t *pipeline = json_object_get(body, "pipeline");
    json_t *params = json_object_get(body, "params");
    json_t *name = json_object_get(body, "name");
    const char *msg = NULL;
    if (source && !json_is_string(source))
        msg = "'source' must be a string";
    else if (pipeline && !json_is_string(pipeline))
        msg = "'pipeline' must be a string";
    else if (!source && (!pipeline || register_only))
        msg = register_only ? "'source' is required" : "give 'source' or 'pipeline'";
    else if (params && !json_is_object(params) && !json_is_null(params))
        msg = "'params' must be an object";
    else if (name && !json_is_string(name))
        msg = "'name' must be a string";
    if (msg != NULL) {
        tr_http_respond_error(req, 400, "invalid_request", msg);
        json_decref(body);
        return;
    }
    if (!params_ok(a, req, params)) {
        json_decref(body);
        return;
    }
    char *idem_key = NULL;
    if (!register_only && rc_idem_begin(a, req, &idem_key)) {
        json_decref(body); /* answered: a replay, a conflict or a bad key */
        return;
    }
    struct start_ctx *c = tr_calloc(1, sizeof(*c));
    if (c == NULL) {
        rc_idem_release(a, idem_key);
        json_decref(body);
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    c->idem_key = idem_key;
    c->api = a;
    c->req = req;
    c->register_only = register_only;
    c->params = params && json_is_object(params) ? json_incref(params) : NULL;
    char digest[65];
    const char *src = NULL;
    size_t len = 0;
    char *stored_src = NULL;
    if (source) {
        src = json_string_value(source);
        len = json_string_length(source);
        tr_sha256_hex(src, len, digest);
    } else {
        const char *ref = json_string_value(pipeline);
        const char *at = strchr(ref, '@');
        char pname[256];
        snprintf(pname, sizeof(pname), "%.*s", at ? (int)(at - ref) : (int)strlen(ref), ref);
        struct reg_lookup l = {0};
        int rc = tr_state_get_pipeline(a->state, pname, at ? at + 1 : NULL, reg_found, &l);
        if (rc == 0 && l.found && !tenant_sees(a, req, TENANT_PIPELINE, pname))
            l.found = false; /* another tenant's: as if there were none */
        if (rc < 0 || !l.found) {
            char m[400];
            snprintf(m, sizeof(m), "no registered pipeline '%s'", ref);
            tr_http_respond_error(req, rc == TR_ENOENT || !l.found ? 404 : 500,
                                  rc == TR_ENOENT || !l.found ? "not_found" : "state_error", m);
            start_ctx_free(c);
            json_decref(body);
            return;
        }
        memcpy(digest, l.digest, sizeof(digest));
        if (pipe_lookup(a->pipes, digest) == NULL &&
            tr_state_get_source(a->state, digest, &stored_src, &len) == 0)
            src = stored_src;
    }
    struct pipeline_entry *pe = pipe_lookup(a->pipes, digest);
    if (pe != NULL) {
        on_loaded(pe, NULL, c);
    } else if (src == NULL) {
        tr_http_respond_error(req, 500, "state_error", "the pipeline's source is missing");
        start_ctx_free(c);
    } else {
        const char *chunk = name ? json_string_value(name) : "pipeline.lua";
        tr_http_req_on_abort(req, start_ctx_abort, c);
        int rc = pipe_load_async(a->pipes, src, len, chunk, on_loaded, c);
        if (rc < 0) {
            tr_http_req_on_abort(req, NULL, NULL);
            tr_http_respond_error(req, 500, "internal_error", tr_strerror(rc));
            start_ctx_free(c);
        }
    }
    tr_free(stored_src);
    json_decref(body);
}

void h_runs_post(struct tr_http_req *req, void *arg)
{
    start_or_register(arg, req, false);
}

void h_pipelines_post(struct tr_http_req *req, void *arg)
{
    start_or_register(arg, req, true);
}

/* Copies the {id} route parameter into out; false (and 404) when too long. */
static bool param_id(struct tr_http_req *req, char *out, size_t size)
{
    struct tr_str id = tr_http_req_param(req, "id");
    if (id.len == 0 || id.len >= size) {
        tr_http_respond_error(req, 404, "not_found", "no such run");
        return false;
    }
    memcpy(out, id.p, id.len);
    out[id.len] = '\0';
    return true;
}

static void not_found_run(struct tr_http_req *req, const char *id)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "no run '%.100s'", id);
    tr_http_respond_error(req, 404, "not_found", msg);
}

/*
 * The caller's view of run id: its run in memory (*r), or its state record
 * in c->out (0); TR_ENOENT when there is none or when it is another
 * tenant's. Another tenant's run in memory is read from the state like an
 * unknown id, so a probe of another tenant's ids costs what a random id
 * costs and gets the same answer.
 */
static int run_lookup(struct api *a, const struct tr_http_req *req, const char *id,
                      struct run **r, struct rec_ctx *c)
{
    *r = run_find(a->core, id);
    if (*r != NULL && tenant_sees(a, req, TENANT_PIPELINE, (*r)->pipe->def->name))
        return 0;
    *r = NULL;
    int rc = tr_state_get_run(a->state, id, run_rec_json, c);
    if (rc == 0 && (c->out == NULL ||
                    !tenant_sees(a, req, TENANT_PIPELINE,
                                 json_string_value(json_object_get(c->out, "pipeline"))))) {
        json_decref(c->out);
        c->out = NULL;
        rc = TR_ENOENT;
    }
    return rc;
}

/* count_task, and the records' LLM calls summed into c->usage (when it is not NULL). */
static int count_task_usage(const struct tr_task_rec *rec, void *arg)
{
    struct rec_ctx *c = arg;
    if (c->usage != NULL && usage_sum_add(c->usage, rec->usage, rec->usage_len) < 0)
        tr_warn("cannot sum usage run=%s task=%s: unreadable record", rec->run_id, rec->name);
    return count_task(rec, arg);
}

/*
 * A query number, strictly decimal: 1 to 9 digits, then (when frac) an
 * optional '.' and 1 to 6 digits. No sign, space, exponent, hex, inf or nan,
 * which strtod and strtol would take.
 */
bool query_decimal(const char *q, bool frac, double *out)
{
    size_t n = strspn(q, "0123456789");
    if (n == 0 || n > 9)
        return false;
    if (q[n] == '.' && frac) {
        size_t f = strspn(q + n + 1, "0123456789");
        if (f == 0 || f > 6)
            return false;
        n += 1 + f;
    }
    if (q[n] != '\0')
        return false;
    *out = strtod(q, NULL);
    return true;
}

void h_run_get(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!param_id(req, id, sizeof(id)))
        return;
    char wait_s[32];
    double wait = 0;
    if (tr_http_req_query(req, "wait", wait_s, sizeof(wait_s))) {
        if (!query_decimal(wait_s, true, &wait)) {
            tr_http_respond_error(req, 400, "invalid_request",
                                  "'wait' must be decimal seconds >= 0 (e.g. 5 or 0.5)");
            return;
        }
        wait = fmin(wait, WAIT_MAX_S);
    }
    struct rec_ctx c = {.with_output = true};
    struct run *r = NULL;
    int rc = run_lookup(a, req, id, &r, &c);
    if (r != NULL) {
        /* Long-polls leave the HTTP server a reserve of connections: past
         * it, the answer is the current state at once. */
        if (run_is_final(r) || wait <= 0 || !tr_http_req_may_hold(req)) {
            /* A change not committed yet is shown after the commit, like the
             * answer to the write that made it. */
            if (r->dirty)
                batch_add_reply_text(a->batch, req, 200, run_json_text(r, NULL));
            else
                respond_run(req, r);
            return;
        }
        struct waiter *w = tr_calloc(1, sizeof(*w));
        if (w == NULL) {
            tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
            return;
        }
        w->req = req;
        w->run = r;
        w->next = r->waiters;
        if (r->waiters)
            r->waiters->prev = w;
        r->waiters = w;
        uv_timer_init(a->loop, &w->timer);
        w->timer.data = w;
        uv_timer_start(&w->timer, on_waiter_timeout, (uint64_t)(wait * 1000), 0);
        tr_http_req_on_abort(req, on_waiter_abort, w);
        return;
    }
    if (rc == TR_ENOENT || (rc == 0 && c.out == NULL)) {
        not_found_run(req, id);
        return;
    }
    if (rc < 0) {
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
        return;
    }
    rc_add_retry_of(a, c.out);
    c.usage = usage_sum_new();
    if (tr_state_list_tasks(a->state, id, count_task_usage, &c) == 0) {
        json_object_set_new(c.out, "tasks", counts_json(c.counts));
        if (c.usage != NULL)
            json_object_set(c.out, "usage", c.usage);
    }
    json_decref(c.usage);
    respond_json(req, 200, c.out);
}

/* ---------------------------------------------------------------------- */
/* Tasks and logs                                                          */
/* ---------------------------------------------------------------------- */

static json_t *output_json(const char *p, size_t len)
{
    if (p == NULL || len == 0)
        return json_null();
    struct tr_error err;
    tr_error_init(&err);
    json_t *v = tr_mp_bytes_to_json(p, len, &err);
    return v ? v : json_null();
}

static json_t *inst_json(struct api *a, struct run *r, struct inst *in)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->pipe->def->tasks[in->task].name));
    json_object_set_new(o, "index", json_integer(in->index));
    json_object_set_new(o, "state", json_string(tr_task_state_names[in->state]));
    json_object_set_new(o, "attempts", json_integer(in->attempts));
    const char *worker = in->worker ? in->worker->id : in->worker_id;
    json_object_set_new(o, "worker", json_str_or_null(worker));
    json_object_set_new(o, "started_at", json_time(in->started_at));
    json_object_set_new(o, "finished_at", json_time(in->finished_at));
    json_object_set_new(o, "error", json_str_or_null(in->error));
    json_object_set_new(o, "output", output_json(in->output, in->output_len));
    json_object_set_new(o, "cached", json_boolean(in->cached));
    json_object_set_new(o, "usage", usage_records_json(in->usage, in->usage_len));
    char why[320];
    if (dispatch_gpu_waiting(a->dispatch, in, why, sizeof(why)) ||
        dispatch_place_waiting(a->dispatch, in, why, sizeof(why)))
        json_object_set_new(o, "waiting", json_string(why));
    else if (api_flow_waiting(in) != NULL)
        json_object_set_new(o, "waiting", json_string(api_flow_waiting(in)));
    return o;
}

static int task_rec_json(const struct tr_task_rec *rec, void *arg)
{
    json_t *arr = arg;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(rec->name));
    json_object_set_new(o, "index", json_integer(rec->index));
    json_object_set_new(o, "state", json_string(rec->state));
    json_object_set_new(o, "attempts", json_integer(rec->attempts));
    json_object_set_new(o, "worker", json_str_or_null(rec->worker));
    json_object_set_new(o, "started_at", json_time(rec->started_at));
    json_object_set_new(o, "finished_at", json_time(rec->finished_at));
    json_object_set_new(o, "error", json_str_or_null(rec->error));
    json_object_set_new(o, "output", output_json(rec->output, rec->output_len));
    json_object_set_new(o, "cached", json_boolean(rec->cached));
    json_object_set_new(o, "usage", usage_records_json(rec->usage, rec->usage_len));
    json_array_append_new(arr, o);
    return 0;
}

void h_run_tasks(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!param_id(req, id, sizeof(id)))
        return;
    json_t *arr = json_array();
    struct rec_ctx c = {0};
    struct run *r = NULL;
    int rc = run_lookup(a, req, id, &r, &c);
    json_decref(c.out);
    if (r != NULL) {
        const struct tr_pipeline_def *def = r->pipe->def;
        for (uint32_t i = 0; i < def->n_tasks; i++) {
            struct task_rt *trt = &r->tasks[def->topo[i]];
            uint32_t n = trt->mapped ? trt->n_inst : 1;
            for (uint32_t j = 0; j < n; j++)
                json_array_append_new(arr, inst_json(a, r, task_inst(trt, j)));
        }
    } else {
        if (rc < 0) {
            json_decref(arr);
            if (rc == TR_ENOENT)
                not_found_run(req, id);
            else
                tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
            return;
        }
        if (tr_state_list_tasks(a->state, id, task_rec_json, arr) < 0) {
            json_decref(arr);
            tr_http_respond_error(req, 500, "state_error", "cannot read tasks");
            return;
        }
    }
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(id));
    json_object_set_new(o, "tasks", arr);
    respond_json(req, 200, o);
}

/* Splits joined log lines into a JSON array, keeping the last LOG_LINES_MAX. */
static json_t *lines_json(const char *text, size_t len, uint32_t *dropped)
{
    json_t *arr = json_array();
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        json_array_append_new(arr, json_stringn_nocheck(p, (size_t)(e - p)));
        p = nl ? nl + 1 : end;
    }
    while (json_array_size(arr) > LOG_LINES_MAX) {
        json_array_remove(arr, 0);
        (*dropped)++;
    }
    return arr;
}

struct logs_ctx
{
    json_t *arr;
    const char *task; /* filter, or NULL */
};

static void logs_append(json_t *arr, const char *task, uint32_t index, const char *text,
                        size_t len, uint32_t dropped)
{
    json_t *o = json_object();
    json_object_set_new(o, "task", json_string(task));
    json_object_set_new(o, "index", json_integer(index));
    json_object_set_new(o, "lines", lines_json(text, len, &dropped));
    json_object_set_new(o, "dropped", json_integer(dropped));
    json_array_append_new(arr, o);
}

static int logs_rec(const struct tr_task_rec *rec, void *arg)
{
    struct logs_ctx *c = arg;
    if (rec->logs == NULL || (c->task && strcmp(c->task, rec->name) != 0))
        return 0;
    logs_append(c->arr, rec->name, rec->index, rec->logs, strlen(rec->logs), 0);
    return 0;
}

void h_run_logs(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64], task[256];
    if (!param_id(req, id, sizeof(id)))
        return;
    bool filter = tr_http_req_query(req, "task", task, sizeof(task));
    struct logs_ctx c = {json_array(), filter ? task : NULL};
    struct rec_ctx rc0 = {0};
    struct run *r = NULL;
    int rc = run_lookup(a, req, id, &r, &rc0);
    json_decref(rc0.out);
    if (r != NULL) {
        const struct tr_pipeline_def *def = r->pipe->def;
        for (uint32_t i = 0; i < def->n_tasks; i++) {
            uint32_t t = def->topo[i];
            if (filter && strcmp(def->tasks[t].name, task) != 0)
                continue;
            struct task_rt *trt = &r->tasks[t];
            uint32_t n = trt->mapped ? trt->n_inst : 1;
            for (uint32_t j = 0; j < n; j++) {
                struct inst *in = task_inst(trt, j);
                if (in->logs)
                    logs_append(c.arr, def->tasks[t].name, in->index, in->logs->buf,
                                in->logs->len, in->logs_dropped);
            }
        }
    } else {
        if (rc < 0 || tr_state_list_tasks(a->state, id, logs_rec, &c) < 0) {
            json_decref(c.arr);
            if (rc == TR_ENOENT)
                not_found_run(req, id);
            else
                tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
            return;
        }
    }
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(id));
    json_object_set_new(o, "logs", c.arr);
    respond_json(req, 200, o);
}

void h_run_cancel(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!param_id(req, id, sizeof(id)))
        return;
    struct rec_ctx c = {0};
    struct run *r = NULL;
    int rc = run_lookup(a, req, id, &r, &c);
    json_decref(c.out);
    if (r == NULL) {
        if (rc == 0)
            tr_http_respond_error(req, 409, "conflict", "the run has already finished");
        else
            not_found_run(req, id);
        return;
    }
    if (api_writes_paused(a)) {
        tr_http_respond_error(req, 503, "unavailable",
                              "the state backend is not taking writes; try again");
        return;
    }
    if (run_cancel(r, "cancelled by request") < 0) {
        char msg[100];
        snprintf(msg, sizeof(msg), "the run has already finished (%s)",
                 tr_run_state_names[r->state]);
        tr_http_respond_error(req, 409, "conflict", msg);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(r->id));
    json_object_set_new(o, "state", json_string(tr_run_state_names[r->state]));
    tr_audit_record(a, req, "run.cancel", r->id);
    batch_add_reply(a->batch, req, 200, o);
}

struct list_ctx
{
    struct api *api;
    json_t *arr;
    const struct tr_http_req *req;
    size_t limit; /* runs to list (others' runs are skipped, not counted) */
};

static int list_run(const struct tr_run_rec *rec, void *arg)
{
    struct list_ctx *c = arg;
    if (!tenant_sees(c->api, c->req, TENANT_PIPELINE, rec->pipeline))
        return 0;
    if (json_array_size(c->arr) >= c->limit)
        return 1; /* enough: stops the listing */
    struct run *r = run_find(c->api->core, rec->id);
    if (r != NULL) {
        json_t *o = run_to_json(r, false);
        json_t *sum = r->usage_sum ? json_incref(r->usage_sum) : usage_sum_new();
        json_object_set_new(o, "usage", usage_sum_brief(sum));
        json_decref(sum);
        json_array_append_new(c->arr, o);
        return 0;
    }
    struct rec_ctx rc = {.with_output = false};
    run_rec_json(rec, &rc);
    /* Its task counts from its task records, as GET /v1/runs/{id} gives them:
     * a run read back after a restart is listed like one still in memory. */
    if (rc.out != NULL && tr_state_list_tasks(c->api->state, rec->id, count_task, &rc) == 0)
        json_object_set_new(rc.out, "tasks", counts_json(rc.counts));
    /* The sum its record kept when it finished; runs from before that have none. */
    json_t *sum = rec->usage_json ? json_loads(rec->usage_json, 0, NULL) : NULL;
    if (sum != NULL && rc.out != NULL)
        json_object_set_new(rc.out, "usage", usage_sum_brief(sum));
    json_decref(sum);
    json_array_append_new(c->arr, rc.out);
    return 0;
}

void h_runs_list(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char state[32], limit_s[32];
    bool by_state = tr_http_req_query(req, "state", state, sizeof(state));
    long limit = 50;
    if (tr_http_req_query(req, "limit", limit_s, sizeof(limit_s))) {
        double v;
        if (!query_decimal(limit_s, false, &v) || v < 1) {
            tr_http_respond_error(req, 400, "invalid_request",
                                  "'limit' must be a decimal number >= 1");
            return;
        }
        limit = (long)TR_MIN(v, 1000.0);
    }
    if (by_state) {
        bool known = false;
        for (size_t i = 0; i < TR_ARRAY_LEN(tr_run_state_names); i++)
            known |= strcmp(state, tr_run_state_names[i]) == 0;
        if (!known) {
            tr_http_respond_error(req, 400, "invalid_request",
                                  "'state' must be queued, running, succeeded, failed or "
                                  "cancelled");
            return;
        }
    }
    struct list_ctx c = {a, json_array(), req, (size_t)limit};
    /* With tenants, others' runs are skipped: the listing goes on until it
     * has limit of the caller's (stopped by list_run). */
    uint32_t want = auth_enabled(a->auth) ? 0 : (uint32_t)limit;
    int rc = tr_state_list_runs(a->state, by_state ? state : NULL, false, want, list_run, &c);
    if (rc > 0)
        rc = 0;
    if (rc < 0) {
        json_decref(c.arr);
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "runs", c.arr);
    respond_json(req, 200, o);
}

