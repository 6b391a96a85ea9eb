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
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"

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
    for (size_t i = 0; r == 0 && rc && i < rc->n_idem_del; i++) {
        /* An expired key reused since the scan is being written anew: keep it. */
        if (tr_hmap_gets(&rc->idem, rc->idem_del[i]) == NULL)
            r = tr_state_delete_idem(a->state, rc->idem_del[i]);
    }
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
    /* Keys are per tenant: another tenant's key names none of its runs. A
     * tab, which a key cannot hold, separates the tenant from the key. */
    char k[AUTH_TENANT_MAX + IDEM_KEY_MAX + 2];
    const char *tenant = auth_enabled(a->auth) ? auth_tenant(req) : NULL;
    size_t off = 0;
    if (tenant != NULL && strcmp(tenant, AUTH_DEFAULT_TENANT) != 0)
        off = (size_t)snprintf(k, sizeof(k), "%s\t", tenant);
    memcpy(k + off, h.p, h.len);
    k[off + h.len] = '\0';
    size_t klen = off + h.len;
    /* The body byte for byte: a retried request is the same request. */
    struct tr_str body = tr_http_req_body(req);
    char digest[65];
    tr_sha256_hex(body.p ? body.p : "", body.len, digest);
    struct idem_mem *m = tr_hmap_get(&rc->idem, k, klen);
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
        tr_hmap_put(&rc->idem, m->key, klen, m) < 0) {
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

bool rc_route_id(struct tr_http_req *req, char *out, size_t size)
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

void rc_no_run(struct tr_http_req *req, const char *id)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "no run '%.100s'", id);
    tr_http_respond_error(req, 404, "not_found", msg);
}

bool rc_writes_ok(struct api *a, struct tr_http_req *req)
{
    if (!api_writes_paused(a) && a->rc != NULL)
        return true;
    tr_http_respond_error(req, 503, "unavailable",
                          "the state backend is not taking writes; try again");
    return false;
}

int rc_brief_cb(const struct tr_run_rec *rec, void *arg)
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

bool rc_run_visible(struct api *a, struct tr_http_req *req, const char *id)
{
    if (!auth_enabled(a->auth))
        return true;
    struct run *r = run_find(a->core, id);
    struct run_brief b = {0};
    int rc = tr_state_get_run(a->state, id, rc_brief_cb, &b);
    tr_free(b.params_json);
    const char *pipeline = r != NULL ? r->pipe->def->name : rc == 0 && b.found ? b.pipeline : NULL;
    if (pipeline == NULL || tenant_sees(a, req, TENANT_PIPELINE, pipeline))
        return true; /* unknown ids get the handler's own 404 */
    rc_no_run(req, id);
    return false;
}

void h_run_delete(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char id[64];
    if (!rc_route_id(req, id, sizeof(id)) || !rc_run_visible(a, req, id) ||
        !rc_writes_ok(a, req))
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
        int rc = tr_state_get_run(a->state, id, rc_brief_cb, &b);
        tr_free(b.params_json);
        if (rc == TR_ENOENT || (rc == 0 && !b.found)) {
            rc_no_run(req, id);
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
    tr_audit_record(a, req, "run.delete", id);
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

void rc_queue_link(struct api *a, const char *run_id, const char *retry_of)
{
    struct rc_loop *rc = a->rc;
    if (TR_VEC_RESERVE(rc->links, rc->cap_links, rc->n_links + 1) != 0)
        oom_fatal("queueing a retry link");
    struct link *l = &rc->links[rc->n_links++];
    snprintf(l->run_id, sizeof(l->run_id), "%s", run_id);
    snprintf(l->retry_of, sizeof(l->retry_of), "%s", retry_of);
    l->at = tr_now();
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
    if (rc == 0 && f.found && !tenant_sees(a, req, TENANT_PIPELINE, name))
        f.found = false; /* another tenant's: as if there were none */
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
