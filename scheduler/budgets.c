/*
 * budgets.c - tenants' and runs' LLM budgets, reservations, and the
 * providers' shared quotas (see budgets.h, docs/budgets.md).
 *
 * A reservation is checked against three things, in this order: the
 * tenant's budget (cost and tokens in its period), the run's pipeline budget
 * (`budget = {...}`), and the provider's quota (a token bucket of requests
 * and one of tokens, refilled at the providers file's rpm and tpm, lowered
 * by what the providers' rate-limit headers say is left). Budgets are
 * checked with what is spent plus what is reserved, so that the calls in
 * flight count at their worst case: spend never passes a limit however many
 * calls race, because this loop answers them one after the other.
 *
 * Reservations live in a map by id, each linked in its run's list so that
 * a run's end releases them without a scan; a lost worker's are found by a
 * scan (rare). The quotas and the gate are in quotas.c.
 *
 * Loop thread only.
 */
#include "scheduler/budgets.h"

#include <jansson.h>
#include <math.h>
#include <time.h>

#include "lib/base/alloc.h"
#include "lib/base/hmap.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/lua/pipeline.h"
#include "lib/wire/mp_read.h"
#include "scheduler/api_int.h"
#include "scheduler/dispatch.h"
#include "scheduler/budgets_int.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"
#include "scheduler/workers.h"

static const char *const period_names[] = {"total", "day", "month"};

const char *bud_run_tenant(struct api *a, const struct run *r)
{
    return api_run_tenant(a, r); /* its pipeline's owner (tenants.h) */
}

/* Whether the caller of req sees tenant's budget: its own tenant's, and an
 * admin of `default` sees every tenant's (as with the audit log). */
static bool caller_sees_tenant(const struct tr_http_req *req, const char *tenant)
{
    const char *mine = auth_tenant(req);
    return strcmp(mine, tenant) == 0 ||
           (strcmp(mine, AUTH_DEFAULT_TENANT) == 0 && auth_has(req, AUTH_ADMIN));
}

static int64_t period_key(uint8_t p, double now)
{
    if (p == P_TOTAL)
        return 0;
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    return p == P_DAY ? (int64_t)(t / 86400) : (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

/* A new day or month starts with nothing spent (reservations carry over). */
static void roll(struct tenant *t, double now)
{
    int64_t k = period_key(t->period, now);
    if (k != t->period_key) {
        t->period_key = k;
        t->spent_cost = t->spent_tokens = 0;
        t->dirty = true;
    }
}

int bud_open(struct api *a, struct tr_error *err)
{
    struct budgets *b = tr_calloc(1, sizeof(*b));
    if (b == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    tr_hmap_init(&b->tenants);
    tr_hmap_init(&b->runs);
    tr_hmap_init(&b->resv);
    tr_hmap_init(&b->quotas);
    tr_hmap_init(&b->learned);
    b->a = a;
    uv_timer_init(a->loop, &b->tick);
    b->tick.data = b;
    b->tick_open = true;
    uint64_t seed = tr_mono_ns() ^ (uint64_t)rand() << 20;
    b->next_id = (seed & 0xffffffffu) << 24 | 1u; /* ids differ across leaders */
    a->bud = b;
    return 0;
}

static void free_all(struct budgets *b)
{
    size_t it = 0;
    void *v;
    while ((v = tr_hmap_next(&b->resv, &it)) != NULL)
        tr_free(v);
    it = 0;
    while ((v = tr_hmap_next(&b->runs, &it)) != NULL)
        tr_free(v);
    it = 0;
    while ((v = tr_hmap_next(&b->tenants, &it)) != NULL)
        tr_free(v);
    it = 0;
    while ((v = tr_hmap_next(&b->quotas, &it)) != NULL) {
        tr_free(((struct quota *)v)->parked);
        tr_free(v);
    }
    it = 0;
    while ((v = tr_hmap_next(&b->learned, &it)) != NULL)
        tr_free(v);
    tr_hmap_release(&b->learned);
    tr_hmap_init(&b->learned);
    b->n_parked = 0;
    tr_hmap_release(&b->resv);
    tr_hmap_release(&b->runs);
    tr_hmap_release(&b->tenants);
    tr_hmap_release(&b->quotas);
    tr_hmap_init(&b->resv);
    tr_hmap_init(&b->runs);
    tr_hmap_init(&b->tenants);
    tr_hmap_init(&b->quotas);
}

static void on_tick_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

void bud_close(struct api *a)
{
    struct budgets *b = bud_of(a);
    if (b == NULL)
        return;
    free_all(b);
    tr_hmap_release(&b->resv);
    tr_hmap_release(&b->runs);
    tr_hmap_release(&b->tenants);
    tr_hmap_release(&b->quotas);
    tr_hmap_release(&b->learned);
    a->bud = NULL;
    uv_close((uv_handle_t *)&b->tick, on_tick_closed); /* frees b */
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static struct tenant *tenant_get(struct budgets *b, const char *name, bool create)
{
    struct tenant *t = tr_hmap_gets(&b->tenants, name);
    if (t != NULL || !create)
        return t;
    if (tr_hmap_count(&b->tenants) >= BUD_TENANTS_MAX || !name_ok(name, strlen(name)))
        return NULL;
    t = tr_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    snprintf(t->name, sizeof(t->name), "%s", name);
    if (tr_hmap_put(&b->tenants, t->name, strlen(t->name), t) < 0) {
        tr_free(t);
        return NULL;
    }
    return t;
}

/* ====================================================================== */
/* Durable rows                                                            */
/* ====================================================================== */

static char *tenant_json(const struct tenant *t)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "cost", t->lim_cost > 0 ? json_real(t->lim_cost) : json_null());
    json_object_set_new(o, "tokens", t->lim_tokens > 0 ? json_real(t->lim_tokens) : json_null());
    json_object_set_new(o, "period", json_string(period_names[t->period]));
    json_object_set_new(o, "period_key", json_integer(t->period_key));
    /* What is reserved counts as spent in the record: a crash can count a
     * call that never happened, never forget one that did. */
    json_object_set_new(o, "spent_cost", json_real(t->spent_cost + t->res_cost));
    json_object_set_new(o, "spent_tokens", json_real(t->spent_tokens + t->res_tokens));
    json_object_set_new(o, "updated_at", json_real(t->updated_at));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}

bool bud_have_dirty(struct api *a)
{
    struct budgets *b = bud_of(a);
    return b != NULL && b->dirty;
}

int bud_put_dirty(struct api *a)
{
    struct budgets *b = bud_of(a);
    if (b == NULL || !b->dirty)
        return 0;
    size_t it = 0;
    struct tenant *t;
    int rc = 0;
    while (rc == 0 && (t = tr_hmap_next(&b->tenants, &it)) != NULL) {
        if (!t->dirty)
            continue;
        char *json = tenant_json(t);
        struct tr_budget_rec rec = {.tenant = t->name, .json = json};
        rc = json ? tr_state_put_budget(a->state, &rec) : TR_ENOMEM;
        free(json);
    }
    return rc;
}

void bud_committed(struct api *a)
{
    struct budgets *b = bud_of(a);
    if (b == NULL || !b->dirty)
        return;
    size_t it = 0;
    struct tenant *t;
    while ((t = tr_hmap_next(&b->tenants, &it)) != NULL)
        t->dirty = false;
    b->dirty = false;
}

static double jnum(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static int load_row(const struct tr_budget_rec *rec, void *arg)
{
    struct budgets *b = arg;
    json_t *o = json_loads(rec->json, 0, NULL);
    struct tenant *t = o ? tenant_get(b, rec->tenant, true) : NULL;
    if (t != NULL) {
        t->lim_cost = jnum(o, "cost");
        t->lim_tokens = jnum(o, "tokens");
        const char *p = json_string_value(json_object_get(o, "period"));
        for (uint8_t i = 0; p != NULL && i < 3; i++) {
            if (strcmp(p, period_names[i]) == 0)
                t->period = i;
        }
        t->period_key = (int64_t)jnum(o, "period_key");
        t->spent_cost = jnum(o, "spent_cost");
        t->spent_tokens = jnum(o, "spent_tokens");
        t->updated_at = jnum(o, "updated_at");
    }
    json_decref(o);
    return 0;
}

int bud_lead(struct api *a, struct tr_error *err)
{
    struct budgets *b = bud_of(a);
    free_all(b);
    b->dirty = false;
    int rc = tr_state_list_budgets(a->state, load_row, b);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot read the budgets from the state: %s",
                            tr_strerror(rc));
    if (tr_hmap_count(&b->tenants) > 0)
        tr_info("budgets loaded tenants=%zu", tr_hmap_count(&b->tenants));
    return 0;
}

/* ====================================================================== */
/* Reservations                                                            */
/* ====================================================================== */

static struct brun *brun_get(struct budgets *b, struct run *run)
{
    struct brun *r = tr_hmap_get(&b->runs, run->id, strlen(run->id));
    if (r != NULL)
        return r;
    r = tr_calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    snprintf(r->id, sizeof(r->id), "%s", run->id);
    const struct tr_pipeline_def *def = run->pipe->def;
    r->lim_cost = def->budget_cost;
    r->lim_tokens = def->budget_tokens;
    r->on_budget = def->on_budget;
    if (tr_hmap_put(&b->runs, r->id, strlen(r->id), r) < 0) {
        tr_free(r);
        return NULL;
    }
    return r;
}

static void release(struct budgets *b, struct resv *v, double cost, double tokens, bool settle)
{
    struct tenant *t = v->t;
    struct brun *r = v->r;
    t->res_cost = TR_MAX(t->res_cost - v->cost, 0);
    t->res_tokens = TR_MAX(t->res_tokens - v->tokens, 0);
    if (settle) {
        roll(t, tr_now());
        t->spent_cost += cost;
        t->spent_tokens += tokens;
    }
    t->updated_at = tr_now();
    t->dirty = b->dirty = true;
    if (r != NULL) {
        r->res_cost = TR_MAX(r->res_cost - v->cost, 0);
        r->res_tokens = TR_MAX(r->res_tokens - v->tokens, 0);
        if (settle) {
            r->spent_cost += cost;
            r->spent_tokens += tokens;
        }
        if (v->prev)
            v->prev->next = v->next;
        else
            r->head = v->next;
        if (v->next)
            v->next->prev = v->prev;
    }
    tr_hmap_del(&b->resv, &v->id, sizeof(v->id));
    tr_free(v);
}

enum { BR_OK, BR_BUDGET, BR_RATE, BR_REFUSED };

struct answer
{
    int code;
    uint64_t id;
    double wait;
    const char *policy;
    char msg[200];
};

static void reserve(struct api *a, struct worker *w, uint64_t dispatch, struct tr_str qkey,
                    double rpm, double tpm, double tokens, double cost, struct answer *ans)
{
    struct budgets *b = bud_of(a);
    struct inst *in = dispatch_find(a->dispatch, dispatch);
    if (in == NULL || in->worker != w) {
        ans->code = BR_REFUSED;
        snprintf(ans->msg, sizeof(ans->msg), "the calling task's dispatch is not current");
        return;
    }
    if (!(tokens >= 0) || !(cost >= 0) || !isfinite(tokens) || !isfinite(cost)) {
        ans->code = BR_REFUSED;
        snprintf(ans->msg, sizeof(ans->msg), "a reservation needs tokens and cost >= 0");
        return;
    }
    double now = tr_now();
    struct tenant *t = tenant_get(b, bud_run_tenant(a, in->run), true);
    struct brun *r = brun_get(b, in->run);
    if (t == NULL || r == NULL || tr_hmap_count(&b->resv) >= BUD_RESERVATIONS_MAX) {
        ans->code = BR_REFUSED;
        snprintf(ans->msg, sizeof(ans->msg), "too many reservations or out of memory");
        return;
    }
    ans->policy = tr_on_budget_names[r->on_budget];
    roll(t, now);
    const char *what = NULL;
    double lim = 0, used = 0, want = 0;
    if (t->lim_cost > 0 && t->spent_cost + t->res_cost + cost > t->lim_cost)
        what = "tenant cost", lim = t->lim_cost, used = t->spent_cost + t->res_cost, want = cost;
    else if (t->lim_tokens > 0 && t->spent_tokens + t->res_tokens + tokens > t->lim_tokens)
        what = "tenant tokens", lim = t->lim_tokens, used = t->spent_tokens + t->res_tokens,
        want = tokens;
    else if (r->lim_cost > 0 && r->spent_cost + r->res_cost + cost > r->lim_cost)
        what = "run cost", lim = r->lim_cost, used = r->spent_cost + r->res_cost, want = cost;
    else if (r->lim_tokens > 0 && r->spent_tokens + r->res_tokens + tokens > r->lim_tokens)
        what = "run tokens", lim = r->lim_tokens, used = r->spent_tokens + r->res_tokens,
        want = tokens;
    if (what != NULL) {
        t->refused++;
        ans->code = BR_BUDGET;
        snprintf(ans->msg, sizeof(ans->msg), "%s budget of %s: %.6g used or reserved, the call "
                 "needs up to %.6g more, the limit is %.6g", what,
                 what[0] == 't' ? t->name : r->id, used, want, lim);
        return;
    }
    struct quota *q = quota_get(b, qkey, rpm, tpm);
    if (q != NULL)
        quota_learn(b, in, q);
    else
        quota_unlearn(b, in); /* this task's calls go to a provider without a quota now */
    if (q != NULL) {
        double wait = quota_wait(q, tokens, bud_mono_s());
        if (wait > 0) {
            q->waited++;
            ans->code = BR_RATE;
            ans->wait = wait;
            snprintf(ans->msg, sizeof(ans->msg), "quota of '%s' used up for %.3g s", q->key,
                     wait);
            return;
        }
        q->admitted = TR_MAX(q->admitted - 1.0, 0);
        if (q->rpm > 0)
            q->req -= 1.0;
        if (q->tpm > 0)
            q->tok -= tokens; /* may go below 0: the next calls wait for it */
        q->granted++;
    }
    struct resv *v = tr_calloc(1, sizeof(*v));
    if (v == NULL) {
        ans->code = BR_REFUSED;
        snprintf(ans->msg, sizeof(ans->msg), "out of memory");
        return;
    }
    v->id = b->next_id++;
    v->t = t;
    v->r = r;
    v->w = w;
    v->cost = cost;
    v->tokens = tokens;
    if (tr_hmap_put(&b->resv, &v->id, sizeof(v->id), v) < 0) {
        tr_free(v);
        ans->code = BR_REFUSED;
        snprintf(ans->msg, sizeof(ans->msg), "out of memory");
        return;
    }
    v->next = r->head;
    if (r->head)
        r->head->prev = v;
    r->head = v;
    t->res_cost += cost;
    t->res_tokens += tokens;
    r->res_cost += cost;
    r->res_tokens += tokens;
    t->updated_at = now;
    t->dirty = b->dirty = true;
    ans->code = BR_OK;
    ans->id = v->id;
}

static void settle(struct api *a, struct worker *w, uint64_t id, double tokens, double cost)
{
    struct budgets *b = bud_of(a);
    struct resv *v = tr_hmap_get(&b->resv, &id, sizeof(id));
    if (v == NULL || v->w != w)
        return; /* released already (the run ended) or not this worker's */
    if (!(tokens >= 0) || !isfinite(tokens))
        tokens = v->tokens;
    if (!(cost >= 0) || !isfinite(cost))
        cost = v->cost;
    release(b, v, cost, tokens, true);
}

/* ====================================================================== */
/* The batched CALL                                                        */
/* ====================================================================== */

static void send_reply(struct api *a, struct worker *w, uint64_t id, uint32_t status,
                       const char *data, size_t len)
{
    struct tr_msg m = {.type = TR_MSG_CALL_REPLY};
    m.u.call_reply.id = id;
    m.u.call_reply.dispatch = 0;
    m.u.call_reply.status = status;
    m.u.call_reply.body = (struct tr_str){data, len};
    int rc = batch_add_msg(a->batch, w->ident, w->ident_len, &m);
    if (rc < 0)
        tr_warn("cannot answer the budget call of worker '%s': %s", w->id, tr_strerror(rc));
}

/*
 * Body: [settlements, reports, reservations]
 *   reservation  [seq, dispatch, quota key, rpm, tpm, tokens, cost]
 *   settlement   [reservation id, tokens, cost]
 *   report       [quota key, remaining requests, remaining tokens, reset s, reset s]
 *                (-1: not said)
 * Reply: [[seq, code, reservation id, wait s, policy, message], ...]
 *   code 0 reserved, 1 budget_exceeded, 2 llm_rate_limited (wait), 3 refused
 */
void bud_on_call(struct api *a, struct worker *w, const struct tr_msg_call *m)
{
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, m->body.p, m->body.len);
    uint32_t parts = tr_mp_rd_array(&r);
    if (r.err != 0 || parts != 3) {
        send_reply(a, w, m->id, 400, NULL, 0);
        return;
    }
    /* Settlements first: a task's next call may fit once its last is settled. */
    uint32_t ns = tr_mp_rd_array(&r);
    for (uint32_t i = 0; i < ns && r.err == 0; i++) {
        uint32_t f = tr_mp_rd_array(&r);
        uint64_t id = tr_mp_rd_uint(&r);
        double tokens = tr_mp_rd_double(&r), cost = tr_mp_rd_double(&r);
        for (uint32_t k = 3; k < f; k++)
            tr_mp_rd_skip(&r);
        if (r.err == 0 && f >= 3)
            settle(a, w, id, tokens, cost);
    }
    uint32_t nq = r.err == 0 ? tr_mp_rd_array(&r) : 0;
    for (uint32_t i = 0; i < nq && r.err == 0; i++) {
        uint32_t f = tr_mp_rd_array(&r);
        struct tr_str key = tr_mp_rd_str(&r);
        double rq = tr_mp_rd_double(&r), rt = tr_mp_rd_double(&r);
        double sq = tr_mp_rd_double(&r), st = tr_mp_rd_double(&r);
        for (uint32_t k = 5; k < f; k++)
            tr_mp_rd_skip(&r);
        if (r.err == 0 && f >= 5)
            quota_report(bud_of(a), key, rq, rt, sq, st);
    }
    uint32_t n = r.err == 0 ? tr_mp_rd_array(&r) : 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n && r.err == 0; i++) {
        uint32_t f = tr_mp_rd_array(&r);
        uint64_t seq = tr_mp_rd_uint(&r), dispatch = tr_mp_rd_uint(&r);
        struct tr_str key = tr_mp_rd_str(&r);
        double rpm = tr_mp_rd_double(&r), tpm = tr_mp_rd_double(&r);
        double tokens = tr_mp_rd_double(&r), cost = tr_mp_rd_double(&r);
        for (uint32_t k = 7; k < f; k++)
            tr_mp_rd_skip(&r);
        struct answer ans = {.code = BR_REFUSED, .policy = "fail"};
        if (r.err != 0 || f < 7)
            snprintf(ans.msg, sizeof(ans.msg), "a malformed reservation");
        else
            reserve(a, w, dispatch, key, rpm, tpm, tokens, cost, &ans);
        msgpack_pack_array(&pk, 6);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_uint8(&pk, (uint8_t)ans.code);
        msgpack_pack_uint64(&pk, ans.id);
        msgpack_pack_double(&pk, ans.wait);
        msgpack_pack_str_with_body(&pk, ans.policy, strlen(ans.policy));
        msgpack_pack_str_with_body(&pk, ans.msg, strlen(ans.msg));
    }
    if (r.err != 0)
        tr_warn("worker '%s' sent a malformed budget call", w->id);
    /* Only a worker that reserves waits for an answer. */
    if (n > 0 || r.err != 0)
        send_reply(a, w, m->id, r.err == 0 ? 200 : 400, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

void bud_worker_down(struct api *a, struct worker *w)
{
    struct budgets *b = bud_of(a);
    if (b == NULL || tr_hmap_count(&b->resv) == 0)
        return;
    struct resv **gone = NULL;
    size_t n = 0, cap = 0, it = 0;
    struct resv *v;
    while ((v = tr_hmap_next(&b->resv, &it)) != NULL) {
        if (v->w == w && TR_VEC_RESERVE(gone, cap, n + 1) == 0)
            gone[n++] = v;
    }
    /* Its calls may have been served: their worst case counts (never under). */
    for (size_t i = 0; i < n; i++)
        release(b, gone[i], gone[i]->cost, gone[i]->tokens, true);
    tr_free(gone);
}

void bud_run_final(struct api *a, struct run *run)
{
    struct budgets *b = bud_of(a);
    struct brun *r = b ? tr_hmap_get(&b->runs, run->id, strlen(run->id)) : NULL;
    if (r == NULL)
        return;
    /* Workers settle a task's calls before its result, so what is left was
     * cut short (a timeout, a cancel): it may have been served, and counts at
     * its worst case. */
    while (r->head != NULL)
        release(b, r->head, r->head->cost, r->head->tokens, true);
    tr_hmap_del(&b->runs, r->id, strlen(r->id));
    tr_free(r);
}

/* ====================================================================== */
/* The API                                                                 */
/* ====================================================================== */

/* A limit of a PUT body: absent or null (none), or a finite number >= 0. */
static bool limit_ok(json_t *b, const char *k, double *out)
{
    json_t *v = json_object_get(b, k);
    if (v == NULL || json_is_null(v)) {
        *out = 0;
        return true;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
        return false;
    *out = json_number_value(v);
    return true;
}

void h_budget_put(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    /* Admins only (the route's role, api.c); one of another tenant than
     * `default` sets its own tenant's budget only. */
    struct tr_str name = tr_http_req_param(req, "tenant");
    if (!name_ok(name.p, name.len)) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "a tenant is 1..63 of A-Z a-z 0-9 . _ -");
        return;
    }
    char tname[NAME_MAX_LEN + 1];
    snprintf(tname, sizeof(tname), "%.*s", (int)name.len, name.p);
    if (!caller_sees_tenant(req, tname)) {
        tr_http_respond_error(req, 403, "forbidden",
                              "an admin of another tenant sets only its own tenant's budget");
        return;
    }
    if (api_writes_paused(a)) {
        tr_http_respond_error(req, 503, "unavailable",
                              "the state backend is not taking writes; try again");
        return;
    }
    json_t *body = api_json_object(req);
    if (body == NULL)
        return;
    double cost, tokens;
    const char *key;
    json_t *v;
    const char *bad = NULL;
    json_object_foreach(body, key, v) {
        if (strcmp(key, "cost") != 0 && strcmp(key, "tokens") != 0 && strcmp(key, "period") != 0)
            bad = "unknown field (cost, tokens and period are known)";
    }
    if (bad == NULL && !limit_ok(body, "cost", &cost))
        bad = "'cost' must be a number >= 0 (USD), or null for no limit";
    if (bad == NULL && !limit_ok(body, "tokens", &tokens))
        bad = "'tokens' must be a number >= 0, or null for no limit";
    json_t *pj = json_object_get(body, "period");
    const char *ps = pj == NULL ? "total" : json_string_value(pj);
    uint8_t period = 255;
    for (uint8_t i = 0; ps != NULL && i < 3; i++) {
        if (strcmp(ps, period_names[i]) == 0)
            period = i;
    }
    if (bad == NULL && period == 255)
        bad = "'period' must be \"day\", \"month\" or \"total\"";
    if (bad != NULL) {
        json_decref(body);
        tr_http_respond_error(req, 400, "invalid_budget", bad);
        return;
    }
    json_decref(body);
    struct budgets *b = bud_of(a);
    struct tenant *t = tenant_get(b, tname, true);
    if (t == NULL) {
        tr_http_respond_error(req, 507, "too_many_tenants", "too many tenants have budgets");
        return;
    }
    double now = tr_now();
    if (t->period != period) {
        t->period = period;
        t->period_key = period_key(period, now);
    }
    roll(t, now);
    t->lim_cost = cost;
    t->lim_tokens = tokens;
    t->updated_at = now;
    t->dirty = b->dirty = true;
    char detail[200];
    snprintf(detail, sizeof(detail), "{\"cost\":%.17g,\"tokens\":%.17g,\"period\":\"%s\"}",
             t->lim_cost, t->lim_tokens, period_names[t->period]);
    tr_audit_record_detail(a, req, "budget.set", t->name, detail);
    batch_add_reply(a->batch, req, 200, json_pack("{s:s,s:o,s:o,s:s}", "tenant", t->name, "cost",
                                                  cost > 0 ? json_real(cost) : json_null(),
                                                  "tokens",
                                                  tokens > 0 ? json_real(tokens) : json_null(),
                                                  "period", period_names[period]));
}

static json_t *pair(double cost, double tokens)
{
    return json_pack("{s:f,s:f}", "cost", cost, "tokens", tokens);
}

void h_budgets_list(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct budgets *b = bud_of(a);
    json_t *list = json_array(), *quotas = quotas_json(b);
    double now = tr_now();
    size_t it = 0;
    struct tenant *t;
    while ((t = tr_hmap_next(&b->tenants, &it)) != NULL) {
        if (!caller_sees_tenant(req, t->name))
            continue;
        roll(t, now);
        json_array_append_new(
            list, json_pack("{s:s,s:o,s:o,s:s,s:o,s:o,s:I,s:o}", "tenant", t->name, "cost",
                            t->lim_cost > 0 ? json_real(t->lim_cost) : json_null(), "tokens",
                            t->lim_tokens > 0 ? json_real(t->lim_tokens) : json_null(), "period",
                            period_names[t->period], "spent", pair(t->spent_cost, t->spent_tokens),
                            "reserved", pair(t->res_cost, t->res_tokens), "refused",
                            (json_int_t)t->refused, "updated_at", json_time(t->updated_at)));
    }
    /* Runs under way that reserved something: their pipeline budget and use. */
    json_t *runs = json_array();
    it = 0;
    struct brun *r;
    while ((r = tr_hmap_next(&b->runs, &it)) != NULL) {
        struct run *run = run_find(a->core, r->id);
        if (run == NULL || !caller_sees_tenant(req, api_run_tenant(a, run)))
            continue;
        json_array_append_new(
            runs, json_pack("{s:s,s:o,s:o,s:s,s:o,s:o}", "run_id", r->id, "cost",
                            r->lim_cost > 0 ? json_real(r->lim_cost) : json_null(), "tokens",
                            r->lim_tokens > 0 ? json_real(r->lim_tokens) : json_null(),
                            "on_budget", tr_on_budget_names[r->on_budget], "spent",
                            pair(r->spent_cost, r->spent_tokens), "reserved",
                            pair(r->res_cost, r->res_tokens)));
    }
    respond_json(req, 200, json_pack("{s:o,s:o,s:o,s:I}", "budgets", list, "runs", runs,
                                     "quotas", quotas, "reservations",
                                     (json_int_t)tr_hmap_count(&b->resv)));
}
