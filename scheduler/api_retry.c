/*
 * api_retry.c - POST /v1/runs/{id}/retry (docs/api.md "Run control"): a new
 * run of a failed or cancelled run's pipeline version and params whose
 * instances take the original's outputs when they succeeded there and their
 * inputs came out the same, through the core's replay hook (the one
 * recovery uses), so reused instances are never dispatched.
 *
 * Part "api"; the run control's records are queued through runctl.h.
 */
#include "scheduler/runctl.h"
#include "scheduler/audit.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api_int.h"

/* ====================================================================== */
/* POST /v1/runs/{id}/retry                                                */
/* ====================================================================== */

/* A succeeded instance of the original run. */
struct reuse
{
    char key[300];           /* "task\0index" */
    size_t klen;
    char *output;
    size_t len;
    double started_at, finished_at;
    char *worker;
};

/* What a retry reuses (the new run's retry_ctx). */
struct retry_src
{
    struct api *a;
    struct tr_http_req *req; /* NULL once the client went away or answered */
    char orig[40];
    struct tr_hmap recs;     /* key -> struct reuse */
    int8_t *same;            /* per task of the new run: -1 unknown, 0/1 outputs as before */
    uint32_t reused;
    char *params_json;
};

static size_t reuse_key(char *out, size_t size, const char *task, uint32_t index)
{
    int n = snprintf(out, size, "%s%c%u", task, '\0', index);
    return n < 0 ? 0 : TR_MIN((size_t)n, size - 1);
}

static void retry_src_free(void *arg)
{
    struct retry_src *s = arg;
    if (s == NULL)
        return;
    size_t it = 0;
    struct reuse *u;
    while ((u = tr_hmap_next(&s->recs, &it)) != NULL) {
        tr_free(u->output);
        tr_free(u->worker);
        tr_free(u);
    }
    tr_hmap_release(&s->recs);
    tr_free(s->same);
    tr_free(s->params_json);
    tr_free(s);
}

static int add_reuse(struct retry_src *s, const char *task, uint32_t index, const void *out,
                     size_t len, double started, double finished, const char *worker)
{
    struct reuse *u = tr_calloc(1, sizeof(*u));
    if (u == NULL)
        return TR_ENOMEM;
    u->klen = reuse_key(u->key, sizeof(u->key), task, index);
    u->output = len ? tr_memdup(out, len) : NULL;
    u->len = len;
    u->started_at = started;
    u->finished_at = finished;
    u->worker = worker ? tr_strdup(worker) : NULL;
    if ((len && u->output == NULL) || tr_hmap_put(&s->recs, u->key, u->klen, u) < 0) {
        tr_free(u->output);
        tr_free(u->worker);
        tr_free(u);
        return TR_ENOMEM;
    }
    return 0;
}

static int collect_rec(const struct tr_task_rec *rec, void *arg)
{
    if (strcmp(rec->state, "succeeded") != 0)
        return 0;
    return add_reuse(arg, rec->name, rec->index, rec->output, rec->output_len, rec->started_at,
                     rec->finished_at, rec->worker);
}

static struct reuse *find_reuse(struct retry_src *s, const char *task, uint32_t index)
{
    char key[300];
    size_t klen = reuse_key(key, sizeof(key), task, index);
    return tr_hmap_get(&s->recs, key, klen);
}

/* Every instance of finished task u gave the bytes the original run's did. */
static bool task_same(struct retry_src *s, struct run *r, uint32_t u)
{
    if (s->same[u] >= 0)
        return s->same[u] == 1;
    struct task_rt *trt = &r->tasks[u];
    const char *name = r->pipe->def->tasks[u].name;
    bool same = trt->finished && trt->n_failed == 0;
    uint32_t n = trt->mapped ? trt->n_inst : 1;
    for (uint32_t i = 0; same && i < n; i++) {
        struct inst *in = task_inst(trt, i);
        struct reuse *o = find_reuse(s, name, in->index);
        same = o != NULL && o->len == in->output_len &&
               (o->len == 0 || memcmp(o->output, in->output, o->len) == 0);
    }
    /* A map that had more elements before is not the same either. */
    if (same && trt->mapped)
        same = find_reuse(s, name, n + 1) == NULL;
    s->same[u] = same ? 1 : 0;
    return same;
}

/* The new run's replay hook: an instance about to become ready takes the
 * original's output when it succeeded there and its inputs are the same. */
static void retry_replay(void *arg, struct inst *in)
{
    struct retry_src *s = arg;
    struct run *r = in->run;
    const struct tr_task_def *td = inst_def(in);
    struct reuse *u = find_reuse(s, td->name, in->index);
    if (u == NULL)
        return;
    for (uint32_t i = 0; i < td->n_after; i++) {
        if (!task_same(s, r, td->after[i]))
            return;
    }
    if (td->map >= 0 && !task_same(s, r, (uint32_t)td->map))
        return;
    in->started_at = u->started_at;
    in->finished_at = u->finished_at;
    if (u->worker != NULL && in->worker_id == NULL)
        in->worker_id = tr_strdup(u->worker);
    s->reused++;
    inst_complete(in, u->output, u->len, true);
}

void rc_run_final(struct api *a, struct run *r)
{
    (void)a;
    if (r->retry_ctx == NULL)
        return;
    r->replay = NULL;
    r->replay_arg = NULL;
    void *ctx = r->retry_ctx;
    r->retry_ctx = NULL;
    r->retry_ctx_free = NULL;
    retry_src_free(ctx);
}

static void retry_start(struct retry_src *s, struct pipeline_entry *pe)
{
    struct api *a = s->a;
    struct tr_http_req *req = s->req;
    s->req = NULL;
    struct tr_error err;
    tr_error_init(&err);
    json_t *params = s->params_json ? json_loads(s->params_json, 0, NULL) : NULL;
    struct run *r = NULL;
    int rc = dispatch_gpu_check(a->dispatch, pe->def, &err);
    if (rc == 0)
        rc = run_new(a->core, pe, params, &r, &err);
    json_decref(params);
    if (rc < 0) {
        respond_err(req, &err);
        retry_src_free(s);
        return;
    }
    if ((r->retry_of = tr_strdup(s->orig)) == NULL ||
        (s->same = tr_malloc(pe->def->n_tasks ? pe->def->n_tasks : 1)) == NULL)
        oom_fatal("starting a retry");
    memset(s->same, -1, pe->def->n_tasks ? pe->def->n_tasks : 1);
    rc_queue_link(a, r->id, s->orig);
    r->retry_ctx = s;
    r->retry_ctx_free = retry_src_free;
    r->replay = retry_replay;
    r->replay_arg = s;
    run_start(r); /* may finish it: then rc_run_final has freed s */
    uint32_t reused = r->retry_ctx ? s->reused : 0;
    if (r->retry_ctx == NULL) {
        /* counted before it was freed: the run's cached instances */
        reused = r->counts[TR_TASK_SUCCEEDED];
    }
    tr_info("run created run=%s pipeline=%s retry_of=%s reused=%u", r->id, pe->def->name,
            r->retry_of, reused);
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(r->id));
    json_object_set_new(o, "state", json_string(tr_run_state_names[r->state]));
    json_object_set_new(o, "retry_of", json_string(r->retry_of));
    json_object_set_new(o, "reused", json_integer(reused));
    char detail[160];
    snprintf(detail, sizeof(detail), "{\"retry_of\":\"%s\"}", r->retry_of);
    tr_audit_record_detail(a, req, "run.retry", r->id, detail);
    batch_add_reply(a->batch, req, 201, o);
}

static void retry_abort(struct tr_http_req *req, void *arg)
{
    (void)req;
    struct retry_src *s = arg;
    s->req = NULL;
}

static void on_retry_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct retry_src *s = arg;
    if (s->req == NULL) {
        retry_src_free(s);
        return;
    }
    tr_http_req_on_abort(s->req, NULL, NULL);
    if (pe == NULL) {
        respond_err(s->req, err);
        retry_src_free(s);
    } else if (api_writes_paused(s->a)) {
        tr_http_respond_error(s->req, 503, "unavailable",
                              "the state backend is not taking writes; try again");
        retry_src_free(s);
    } else {
        retry_start(s, pe);
    }
}

/* The original's succeeded instances, from memory. */
static int collect_mem(struct retry_src *s, struct run *r)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        struct task_rt *trt = &r->tasks[t];
        uint32_t n = trt->mapped ? trt->n_inst : 1;
        for (uint32_t i = 0; i < n; i++) {
            struct inst *in = task_inst(trt, i);
            if (in->state != TR_TASK_SUCCEEDED)
                continue;
            const char *w = in->worker ? in->worker->id : in->worker_id;
            int rc = add_reuse(s, def->tasks[t].name, in->index, in->output, in->output_len,
                               in->started_at, in->finished_at, w);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

void h_run_retry(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!rc_route_id(req, id, sizeof(id)) || !rc_run_visible(a, req, id) ||
        !rc_writes_ok(a, req))
        return;
    struct retry_src *s = tr_calloc(1, sizeof(*s));
    if (s == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    s->a = a;
    s->req = req;
    tr_hmap_init(&s->recs);
    snprintf(s->orig, sizeof(s->orig), "%s", id);
    struct run *r = run_find(a->core, id);
    char digest[65], state[16], msg[300];
    int rc;
    if (r != NULL) {
        snprintf(state, sizeof(state), "%s", tr_run_state_names[r->state]);
        snprintf(digest, sizeof(digest), "%s", r->pipe->digest);
        s->params_json = r->params_json ? tr_strdup(r->params_json) : NULL;
        rc = run_is_final(r) && r->state != TR_RUN_SUCCEEDED ? collect_mem(s, r) : 0;
    } else {
        struct run_brief b = {0};
        rc = tr_state_get_run(a->state, id, rc_brief_cb, &b);
        if (rc == TR_ENOENT || (rc == 0 && !b.found)) {
            tr_free(b.params_json);
            retry_src_free(s);
            rc_no_run(req, id);
            return;
        }
        snprintf(state, sizeof(state), "%s", b.state);
        snprintf(digest, sizeof(digest), "%s", b.digest);
        s->params_json = b.params_json;
        int st = tr_run_state_parse(b.state);
        if (rc == 0 && tr_run_state_final(st) && st != TR_RUN_SUCCEEDED)
            rc = tr_state_list_tasks(a->state, id, collect_rec, s);
    }
    if (rc < 0) {
        retry_src_free(s);
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
        return;
    }
    int st = tr_run_state_parse(state);
    if (!tr_run_state_final(st) || st == TR_RUN_SUCCEEDED) {
        retry_src_free(s);
        snprintf(msg, sizeof(msg),
                 "the run is %s: only a failed or cancelled run can be retried%s", state,
                 st == TR_RUN_SUCCEEDED ? " (start a new run instead)" : "");
        tr_http_respond_error(req, 409, "conflict", msg);
        return;
    }
    struct pipeline_entry *pe = pipe_lookup(a->pipes, digest);
    if (pe != NULL) {
        retry_start(s, pe);
        return;
    }
    char *src = NULL;
    size_t len = 0;
    rc = tr_state_get_source(a->state, digest, &src, &len);
    if (rc < 0) {
        retry_src_free(s);
        tr_http_respond_error(req, 500, "state_error", "the run's pipeline source is missing");
        return;
    }
    tr_http_req_on_abort(req, retry_abort, s);
    rc = pipe_load_async(a->pipes, src, len, "pipeline.lua", on_retry_loaded, s);
    tr_free(src);
    if (rc < 0) {
        tr_http_req_on_abort(req, NULL, NULL);
        retry_src_free(s);
        tr_http_respond_error(req, 500, "internal_error", tr_strerror(rc));
    }
}

static int link_cb(const struct tr_run_link_rec *rec, void *arg)
{
    json_object_set_new(arg, "retry_of", json_string(rec->retry_of));
    return 0;
}

void rc_add_retry_of(struct api *a, json_t *run)
{
    const char *id = json_string_value(json_object_get(run, "run_id"));
    /* A run that retries none has no link (TR_ENOENT): no "retry_of", as in memory. */
    if (id != NULL && tr_state_get_run_link(a->state, id, link_cb, run) < 0)
        return;
}
