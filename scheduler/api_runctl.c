/*
 * api_runctl.c - run control (docs/api.md "Run control"): idempotency keys
 * of POST /v1/runs, retries that reuse what succeeded, deleting runs by
 * request and by age (--retention), the check of a run's params, and the
 * source of a registered pipeline version.
 *
 * Its records join the loop turn's transaction (the batch's extra hooks,
 * chained in sched.c), so a key is durable with its run, and a DELETE is
 * answered only once the run is gone from the state. The purge deletes at
 * most PURGE_STEP runs per tick of its timer, so the commits that carry the
 * deletions stay small and dispatch goes on between them.
 */
#include "scheduler/runctl.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/wire/mp_json.h"
#include "scheduler/api_int.h"

#define IDEM_TTL_S (24.0 * 3600.0)
#define IDEM_KEY_MAX 255u
#define IDEM_SCAN 500u         /* keys read per expiry scan */
#define PURGE_SCAN 1000u       /* old runs listed per scan */
#define PURGE_STEP 100u        /* runs deleted per tick */
#define PURGE_BUSY_MS 50u      /* tick while runs wait to be deleted */
#define PURGE_IDLE_MS 1000u    /* tick otherwise */
#define SCAN_EVERY_S 60.0      /* between scans that found nothing to do */

/* A key of a request in progress, or of a run not committed yet. */
struct idem_mem
{
    char *key;               /* owned; the map's key points here */
    char digest[65];
    char run_id[40];         /* "" while in progress */
    bool in_progress;
    double created_at;
};

struct link
{
    char run_id[40];
    char retry_of[40];
    double at;
};

struct rc_loop
{
    struct api *a;
    struct tr_hmap idem;     /* key -> struct idem_mem */
    struct idem_mem **idem_q; /* to put at the next commit */
    size_t n_idem_q, cap_idem_q;
    char **idem_del;         /* expired keys to delete */
    size_t n_idem_del, cap_idem_del;
    char **run_del;          /* runs to delete */
    size_t n_run_del, cap_run_del;
    struct link *links;      /* retry links to put */
    size_t n_links, cap_links;
    uv_timer_t purge;
    bool timer_open;
    char **cands;            /* old runs listed by the last scan, deleted PURGE_STEP a tick */
    size_t n_cands, cap_cands, i_cand;
    double next_scan, next_idem_scan;
    uint64_t purged;
};

static void free_strs(char **v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        tr_free(v[i]);
    *n = 0;
}

static int push_str(char ***v, size_t *n, size_t *cap, const char *s)
{
    char *d = tr_strdup(s);
    if (d == NULL || TR_VEC_RESERVE(*v, *cap, *n + 1) != 0) {
        tr_free(d);
        return TR_ENOMEM;
    }
    (*v)[(*n)++] = d;
    return 0;
}

/* ====================================================================== */
/* Batch hooks                                                             */
/* ====================================================================== */

bool rc_have_dirty(struct api *a)
{
    struct rc_loop *rc = a->rc;
    return rc != NULL &&
           (rc->n_idem_q || rc->n_idem_del || rc->n_run_del || rc->n_links);
}

int rc_put_dirty(struct api *a)
{
    struct rc_loop *rc = a->rc;
    int r = 0;
    for (size_t i = 0; r == 0 && rc && i < rc->n_idem_q; i++) {
        struct idem_mem *m = rc->idem_q[i];
        struct tr_idem_rec rec = {.key = m->key, .run_id = m->run_id, .digest = m->digest,
                                  .created_at = m->created_at};
        r = tr_state_put_idem(a->state, &rec);
    }
    for (size_t i = 0; r == 0 && rc && i < rc->n_links; i++) {
        struct tr_run_link_rec rec = {.run_id = rc->links[i].run_id,
                                      .retry_of = rc->links[i].retry_of,
                                      .created_at = rc->links[i].at};
        r = tr_state_put_run_link(a->state, &rec);
    }
    for (size_t i = 0; r == 0 && rc && i < rc->n_idem_del; i++)
        r = tr_state_delete_idem(a->state, rc->idem_del[i]);
    for (size_t i = 0; r == 0 && rc && i < rc->n_run_del; i++) {
        r = tr_state_delete_run(a->state, rc->run_del[i]);
        if (r == 0)
            r = tr_state_delete_run_link(a->state, rc->run_del[i]);
    }
    return r;
}

static void idem_mem_free(struct idem_mem *m)
{
    if (m == NULL)
        return;
    tr_free(m->key);
    tr_free(m);
}

void rc_committed(struct api *a)
{
    struct rc_loop *rc = a->rc;
    if (rc == NULL)
        return;
    /* Durable now: later requests with these keys read them from the state. */
    for (size_t i = 0; i < rc->n_idem_q; i++) {
        struct idem_mem *m = rc->idem_q[i];
        tr_hmap_del(&rc->idem, m->key, strlen(m->key));
        idem_mem_free(m);
    }
    rc->n_idem_q = 0;
    rc->n_links = 0;
    free_strs(rc->idem_del, &rc->n_idem_del);
    rc->purged += rc->n_run_del;
    free_strs(rc->run_del, &rc->n_run_del);
}

/* ====================================================================== */
/* Idempotency keys                                                        */
/* ====================================================================== */

static void respond_idem(struct api *a, struct tr_http_req *req, bool in_progress,
                         const char *stored_digest, const char *run_id, const char *digest)
{
    char msg[300];
    if (in_progress) {
        tr_http_respond_error(req, 409, "idempotency_in_progress",
                              "a request with this Idempotency-Key is still being processed; "
                              "retry it shortly");
        return;
    }
    if (strcmp(stored_digest, digest) != 0) {
        snprintf(msg, sizeof(msg),
                 "this Idempotency-Key was used within 24 h with a different request body "
                 "(it made run '%s'); use a new key for a new request", run_id);
        tr_http_respond_error(req, 422, "idempotency_conflict", msg);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(run_id));
    struct run *r = run_find(a->core, run_id);
    if (r != NULL) {
        json_object_set_new(o, "state", json_string(tr_run_state_names[r->state]));
    } else {
        struct rec_ctx c = {0};
        if (tr_state_get_run(a->state, run_id, run_rec_json, &c) == 0 && c.out != NULL)
            json_object_set(o, "state", json_object_get(c.out, "state"));
        json_decref(c.out);
    }
    json_object_set_new(o, "idempotent_replay", json_true());
    /* After the turn's commit, like the answer that created the run. */
    batch_add_reply(a->batch, req, 200, o);
}

struct idem_found
{
    bool found;
    char run_id[40];
    char digest[65];
    double created_at;
};

static int idem_found_cb(const struct tr_idem_rec *rec, void *arg)
{
    struct idem_found *f = arg;
    f->found = true;
    snprintf(f->run_id, sizeof(f->run_id), "%s", rec->run_id);
    snprintf(f->digest, sizeof(f->digest), "%s", rec->digest);
    f->created_at = rec->created_at;
    return 0;
}

bool rc_idem_begin(struct api *a, struct tr_http_req *req, char **key)
{
    *key = NULL;
    struct rc_loop *rc = a->rc;
    struct tr_str h = tr_http_req_header(req, "Idempotency-Key");
    if (h.p == NULL || rc == NULL)
        return false;
    bool ok = h.len >= 1 && h.len <= IDEM_KEY_MAX;
    for (size_t i = 0; ok && i < h.len; i++)
        ok = h.p[i] >= 0x20 && h.p[i] <= 0x7e;
    if (!ok) {
        tr_http_respond_error(req, 400, "invalid_request",
                              "'Idempotency-Key' must be 1 to 255 printable ASCII characters");
        return true;
    }
    char k[IDEM_KEY_MAX + 1];
    memcpy(k, h.p, h.len);
    k[h.len] = '\0';
    /* The body byte for byte: a retried request is the same request. */
    struct tr_str body = tr_http_req_body(req);
    char digest[65];
    tr_sha256_hex(body.p ? body.p : "", body.len, digest);
    struct idem_mem *m = tr_hmap_get(&rc->idem, k, h.len);
    if (m != NULL) {
        respond_idem(a, req, m->in_progress, m->digest, m->run_id, digest);
        return true;
    }
    struct idem_found f = {0};
    int r = tr_state_get_idem(a->state, k, idem_found_cb, &f);
    if (r < 0 && r != TR_ENOENT) {
        tr_http_respond_error(req, 500, "state_error", tr_strerror(r));
        return true;
    }
    if (f.found && f.created_at > tr_now() - IDEM_TTL_S) {
        respond_idem(a, req, false, f.digest, f.run_id, digest);
        return true;
    }
    m = tr_calloc(1, sizeof(*m));
    char *mine = tr_strdup(k);
    if (m != NULL)
        m->key = tr_strdup(k);
    if (m == NULL || m->key == NULL || mine == NULL ||
        tr_hmap_put(&rc->idem, m->key, h.len, m) < 0) {
        idem_mem_free(m);
        tr_free(mine);
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return true;
    }
    memcpy(m->digest, digest, sizeof(digest));
    m->in_progress = true;
    *key = mine;
    return false;
}

void rc_idem_created(struct api *a, const char *key, const struct run *r)
{
    struct rc_loop *rc = a->rc;
    if (key == NULL || rc == NULL)
        return;
    struct idem_mem *m = tr_hmap_gets(&rc->idem, key);
    if (m == NULL || !m->in_progress)
        return;
    if (TR_VEC_RESERVE(rc->idem_q, rc->cap_idem_q, rc->n_idem_q + 1) != 0)
        oom_fatal("queueing an idempotency key");
    m->in_progress = false;
    snprintf(m->run_id, sizeof(m->run_id), "%s", r->id);
    m->created_at = tr_now();
    rc->idem_q[rc->n_idem_q++] = m;
}

void rc_idem_release(struct api *a, char *key)
{
    struct rc_loop *rc = a->rc;
    if (key == NULL)
        return;
    struct idem_mem *m = rc ? tr_hmap_gets(&rc->idem, key) : NULL;
    if (m != NULL && m->in_progress) {
        tr_hmap_del(&rc->idem, m->key, strlen(m->key));
        idem_mem_free(m);
    }
    tr_free(key);
}

/* ====================================================================== */
/* Params                                                                  */
/* ====================================================================== */

/* number, string, boolean or table: what a Lua task sees. */
static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_STRING:
        return "string";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_OBJECT:
    case JSON_ARRAY:
        return "table";
    default:
        return "null";
    }
}

bool rc_params_check(struct tr_http_req *req, const struct tr_pipeline_def *def, json_t *params)
{
    if (params == NULL || !json_is_object(params) || json_object_size(params) == 0 ||
        def->extra_params)
        return true;
    struct tr_error err;
    tr_error_init(&err);
    json_t *dflt = def->params_len ? tr_mp_bytes_to_json(def->params, def->params_len, &err)
                                   : NULL;
    /* A pipeline that declares no params takes any (nothing to check them against). */
    if (!json_is_object(dflt) || json_object_size(dflt) == 0) {
        json_decref(dflt);
        return true;
    }
    char msg[700];
    msg[0] = '\0';
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v)
    {
        json_t *d = json_object_get(dflt, k);
        if (d == NULL) {
            struct tr_buf names;
            tr_buf_init(&names, 300);
            const char *dk;
            json_t *dv;
            json_object_foreach(dflt, dk, dv)
            {
                (void)dv;
                if (tr_buf_addf(&names, "%s%s", names.len ? ", " : "", dk) < 0)
                    break;
            }
            snprintf(msg, sizeof(msg), "unknown parameter '%.100s' (pipeline '%.100s' declares: %s)",
                     k, def->name, names.len ? names.buf : "");
            tr_buf_release(&names);
            break;
        }
        if (strcmp(kind_of(d), kind_of(v)) != 0) {
            snprintf(msg, sizeof(msg),
                     "parameter '%.100s' must be a %s like its default, not a %s", k,
                     kind_of(d), kind_of(v));
            break;
        }
    }
    json_decref(dflt);
    if (msg[0] == '\0')
        return true;
    tr_http_respond_error(req, 400, "invalid_params", msg);
    return false;
}

/* ====================================================================== */
/* Run ids in routes                                                       */
/* ====================================================================== */

static bool route_id(struct tr_http_req *req, char *out, size_t size)
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

static void no_run(struct tr_http_req *req, const char *id)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "no run '%.100s'", id);
    tr_http_respond_error(req, 404, "not_found", msg);
}

static bool writes_ok(struct api *a, struct tr_http_req *req)
{
    if (!api_writes_paused(a) && a->rc != NULL)
        return true;
    tr_http_respond_error(req, 503, "unavailable",
                          "the state backend is not taking writes; try again");
    return false;
}

/* A stored run's state, or TR_ENOENT. */
struct run_brief
{
    bool found;
    char state[16];
    char digest[65];
    char pipeline[128];
    char *params_json;
};

static int brief_cb(const struct tr_run_rec *rec, void *arg)
{
    struct run_brief *b = arg;
    b->found = true;
    snprintf(b->state, sizeof(b->state), "%s", rec->state);
    snprintf(b->digest, sizeof(b->digest), "%s", rec->digest);
    snprintf(b->pipeline, sizeof(b->pipeline), "%s", rec->pipeline);
    b->params_json = rec->params_json ? tr_strdup(rec->params_json) : NULL;
    return 0;
}

/* ====================================================================== */
/* DELETE /v1/runs/{id}                                                    */
/* ====================================================================== */

void h_run_delete(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!route_id(req, id, sizeof(id)) || !writes_ok(a, req))
        return;
    struct run *r = run_find(a->core, id);
    char msg[200];
    if (r != NULL) {
        int rc = run_forget(a->core, r);
        if (rc == TR_ECONFLICT) {
            snprintf(msg, sizeof(msg), "the run is %s: cancel it first, then delete it",
                     tr_run_state_names[r->state]);
            tr_http_respond_error(req, 409, "conflict", msg);
            return;
        }
        if (rc < 0) {
            tr_http_respond_error(req, 409, "conflict",
                                  "the run's last records are being written; try again");
            return;
        }
    } else {
        struct run_brief b = {0};
        int rc = tr_state_get_run(a->state, id, brief_cb, &b);
        tr_free(b.params_json);
        if (rc == TR_ENOENT || (rc == 0 && !b.found)) {
            no_run(req, id);
            return;
        }
        if (rc < 0) {
            tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
            return;
        }
        if (!tr_run_state_final(tr_run_state_parse(b.state))) {
            snprintf(msg, sizeof(msg), "the run is %s: cancel it first, then delete it", b.state);
            tr_http_respond_error(req, 409, "conflict", msg);
            return;
        }
    }
    struct rc_loop *rc = a->rc;
    if (push_str(&rc->run_del, &rc->n_run_del, &rc->cap_run_del, id) < 0) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_info("run deleted run=%s", id);
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(id));
    json_object_set_new(o, "deleted", json_true());
    batch_add_reply(a->batch, req, 200, o);
}

/* ====================================================================== */
/* Retention                                                               */
/* ====================================================================== */

static int cand_cb(const struct tr_run_rec *rec, void *arg)
{
    struct rc_loop *rc = arg;
    return push_str(&rc->cands, &rc->n_cands, &rc->cap_cands, rec->id);
}

static int idem_expired_cb(const struct tr_idem_rec *rec, void *arg)
{
    struct rc_loop *rc = arg;
    if (rec->created_at > tr_now() - IDEM_TTL_S)
        return 1; /* oldest first: the rest are younger */
    return push_str(&rc->idem_del, &rc->n_idem_del, &rc->cap_idem_del, rec->key);
}

static void purge_runs(struct rc_loop *rc, double now)
{
    struct api *a = rc->a;
    double keep_s = a->cfg->retention_days * 86400.0;
    if (rc->i_cand == rc->n_cands && now >= rc->next_scan) {
        free_strs(rc->cands, &rc->n_cands);
        rc->i_cand = 0;
        int r = tr_state_list_finished_runs(a->state, now - keep_s, PURGE_SCAN, cand_cb, rc);
        if (r < 0)
            tr_warn("retention: cannot list old runs: %s", tr_strerror(r));
        /* A full scan means more are waiting: scan again once these are gone. */
        rc->next_scan = rc->n_cands == PURGE_SCAN ? now : now + TR_MIN(SCAN_EVERY_S, keep_s / 4);
    }
    for (uint32_t n = 0; n < PURGE_STEP && rc->i_cand < rc->n_cands; rc->i_cand++) {
        const char *id = rc->cands[rc->i_cand];
        struct run *r = run_find(a->core, id);
        if (r != NULL && run_forget(a->core, r) < 0)
            continue; /* busy: the next scan finds it again */
        if (push_str(&rc->run_del, &rc->n_run_del, &rc->cap_run_del, id) < 0)
            break;
        n++;
    }
}

static void on_purge(uv_timer_t *t)
{
    struct rc_loop *rc = t->data;
    struct api *a = rc->a;
    if (!leader_may_act(a->leader) || api_writes_paused(a) || rc->n_run_del > 0)
        return;
    double now = tr_now();
    if (now >= rc->next_idem_scan && rc->n_idem_del == 0) {
        int r = tr_state_list_idem(a->state, IDEM_SCAN, idem_expired_cb, rc);
        if (r < 0)
            tr_warn("idempotency keys: cannot list them: %s", tr_strerror(r));
        rc->next_idem_scan = rc->n_idem_del == IDEM_SCAN ? now : now + SCAN_EVERY_S;
    }
    if (a->cfg->retention_days > 0)
        purge_runs(rc, now);
    uv_timer_set_repeat(t, rc->i_cand < rc->n_cands ? PURGE_BUSY_MS : PURGE_IDLE_MS);
}

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
    struct rc_loop *rcl = a->rc;
    if (TR_VEC_RESERVE(rcl->links, rcl->cap_links, rcl->n_links + 1) != 0 ||
        (r->retry_of = tr_strdup(s->orig)) == NULL ||
        (s->same = tr_malloc(pe->def->n_tasks ? pe->def->n_tasks : 1)) == NULL)
        oom_fatal("starting a retry");
    memset(s->same, -1, pe->def->n_tasks ? pe->def->n_tasks : 1);
    struct link *l = &rcl->links[rcl->n_links++];
    snprintf(l->run_id, sizeof(l->run_id), "%s", r->id);
    snprintf(l->retry_of, sizeof(l->retry_of), "%s", s->orig);
    l->at = tr_now();
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
    if (!route_id(req, id, sizeof(id)) || !writes_ok(a, req))
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
        rc = tr_state_get_run(a->state, id, brief_cb, &b);
        if (rc == TR_ENOENT || (rc == 0 && !b.found)) {
            tr_free(b.params_json);
            retry_src_free(s);
            no_run(req, id);
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

/* ====================================================================== */
/* GET /v1/pipelines/{name}/versions/{v}/source                            */
/* ====================================================================== */

struct src_found
{
    char digest[65];
    bool found;
};

static int src_found_cb(const struct tr_pipeline_rec *rec, void *arg)
{
    struct src_found *f = arg;
    snprintf(f->digest, sizeof(f->digest), "%s", rec->digest);
    f->found = true;
    return 0;
}

void h_pipeline_source(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct tr_str n = tr_http_req_param(req, "name"), v = tr_http_req_param(req, "v");
    char name[256], version[256], msg[700];
    if (n.len == 0 || n.len >= sizeof(name) || v.len >= sizeof(version)) {
        tr_http_respond_error(req, 404, "not_found", "no such pipeline version");
        return;
    }
    snprintf(name, sizeof(name), "%.*s", (int)n.len, n.p);
    snprintf(version, sizeof(version), "%.*s", (int)v.len, v.p);
    struct src_found f = {0};
    int rc = tr_state_get_pipeline(a->state, name, version, src_found_cb, &f);
    if (rc == TR_ENOENT || (rc == 0 && !f.found)) {
        snprintf(msg, sizeof(msg), "no registered pipeline '%s' version '%s'", name, version);
        tr_http_respond_error(req, 404, "not_found", msg);
        return;
    }
    char *src = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = tr_state_get_source(a->state, f.digest, &src, &len);
    if (rc < 0) {
        tr_http_respond_error(req, 500, "state_error",
                              rc == TR_ENOENT ? "the pipeline's source is missing"
                                              : tr_strerror(rc));
        return;
    }
    char extra[128];
    snprintf(extra, sizeof(extra), "X-Trellis-Digest: %s\r\n", f.digest);
    tr_http_respond_extra(req, 200, "text/plain; charset=utf-8", extra, src, len);
    tr_free(src);
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

int rc_open(struct api *a, struct tr_error *err)
{
    struct rc_loop *rc = tr_calloc(1, sizeof(*rc));
    if (rc == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    rc->a = a;
    tr_hmap_init(&rc->idem);
    uv_timer_init(a->loop, &rc->purge);
    rc->purge.data = rc;
    rc->timer_open = true;
    uv_timer_start(&rc->purge, on_purge, PURGE_IDLE_MS, PURGE_IDLE_MS);
    a->rc = rc;
    return 0;
}

static void on_purge_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

void rc_close(struct api *a)
{
    struct rc_loop *rc = a->rc;
    if (rc == NULL)
        return;
    a->rc = NULL;
    size_t it = 0;
    struct idem_mem *m;
    while ((m = tr_hmap_next(&rc->idem, &it)) != NULL)
        idem_mem_free(m);
    tr_hmap_release(&rc->idem);
    tr_free(rc->idem_q);
    free_strs(rc->idem_del, &rc->n_idem_del);
    tr_free(rc->idem_del);
    free_strs(rc->run_del, &rc->n_run_del);
    tr_free(rc->run_del);
    free_strs(rc->cands, &rc->n_cands);
    tr_free(rc->cands);
    tr_free(rc->links);
    if (rc->timer_open)
        uv_close((uv_handle_t *)&rc->purge, on_purge_closed);
    else
        tr_free(rc);
}
