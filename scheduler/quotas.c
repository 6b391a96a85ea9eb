/*
 * quotas.c - providers' request and token quotas shared by every worker,
 * and the gate that keeps a task of a provider out of quota in the
 * scheduler rather than in a worker slot (docs/budgets.md "Provider
 * quotas").
 *
 * A quota is a pair of token buckets (requests, tokens) refilled at the
 * providers file's rpm and tpm and holding at most a second's worth, lowered
 * by the providers' rate-limit headers that workers report. The gate
 * (dispatch's `gate` hook) holds an instance of a task that declares, or was
 * seen to call, a quota that cannot take one more request now; a timer
 * readies held instances, first come first served, as the buckets refill.
 *
 * Part of the api layer with budgets.c. Loop thread only.
 */
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"
#include "lib/lua/pipeline.h"
#include "scheduler/budgets_int.h"
#include "scheduler/dispatch.h"

/* Refills q's buckets; the buckets hold at most a second of the rate (at
 * least one request), so calls are spread over the minute rather than sent in
 * a burst the provider would answer with 429s. */
void quota_refill(struct quota *q, double now)
{
    double dt = TR_MAX(now - q->at, 0);
    q->at = now;
    if (q->rpm > 0) {
        double cap = TR_MAX(1.0, q->rpm / 60.0);
        q->req = TR_MIN(cap, q->req + dt * (q->rpm - cap) / 60.0);
    }
    if (q->tpm > 0) {
        double cap = TR_MAX(1.0, q->tpm / 60.0);
        q->tok = TR_MIN(cap, q->tok + dt * (q->tpm - cap) / 60.0);
    }
}

struct quota *quota_get(struct budgets *b, struct tr_str key, double rpm, double tpm)
{
    if (key.len == 0 || key.len >= sizeof(((struct quota *)0)->key))
        return NULL;
    struct quota *q = tr_hmap_get(&b->quotas, key.p, key.len);
    if (q == NULL) {
        if (!(rpm > 0) && !(tpm > 0))
            return NULL; /* no limit known: nothing to share */
        if (tr_hmap_count(&b->quotas) >= QUOTAS_MAX)
            return NULL;
        q = tr_calloc(1, sizeof(*q));
        if (q == NULL)
            return NULL;
        memcpy(q->key, key.p, key.len);
        q->at = bud_mono_s();
        q->req = rpm > 0 ? TR_MAX(1.0, rpm / 60.0) : 0;
        q->tok = tpm > 0 ? TR_MAX(1.0, tpm / 60.0) : 0;
        if (tr_hmap_put(&b->quotas, q->key, key.len, q) < 0) {
            tr_free(q);
            return NULL;
        }
    }
    /* The providers file of the workers says the limit; the latest word wins. */
    if (rpm >= 0 || tpm >= 0)
        q->known = true;
    if (rpm >= 0)
        q->rpm = rpm;
    if (tpm >= 0)
        q->tpm = tpm;
    return q;
}

/* Seconds until q can take one request of tokens (0: now). */
double quota_wait(struct quota *q, double tokens, double now)
{
    quota_refill(q, now);
    double wait = TR_MAX(q->blocked_until - now, 0);
    if (q->rpm > 0 && q->req < 1.0) {
        double rate = (q->rpm - TR_MAX(1.0, q->rpm / 60.0)) / 60.0;
        wait = TR_MAX(wait, rate > 0 ? (1.0 - q->req) / rate : 60.0);
    }
    if (q->tpm > 0) {
        double cap = TR_MAX(1.0, q->tpm / 60.0);
        double need = TR_MIN(tokens, cap); /* a call bigger than the bucket waits for a full one */
        double rate = (q->tpm - cap) / 60.0;
        if (q->tok < need)
            wait = TR_MAX(wait, rate > 0 ? (need - q->tok) / rate : 60.0);
    }
    return wait;
}

/* ====================================================================== */
/* The gate: tasks of a provider out of quota wait in the scheduler        */
/* ====================================================================== */

static void learned_key(const struct inst *in, char *out, size_t size)
{
    snprintf(out, size, "%.64s:%u", in->run->pipe->def->digest, in->task);
}

void quota_learn(struct budgets *b, const struct inst *in, struct quota *q)
{
    char key[sizeof(((struct learned *)0)->key)];
    learned_key(in, key, sizeof(key));
    struct learned *l = tr_hmap_gets(&b->learned, key);
    if (l != NULL) {
        l->q = q;
        return;
    }
    if (tr_hmap_count(&b->learned) >= LEARNED_MAX || (l = tr_calloc(1, sizeof(*l))) == NULL)
        return;
    snprintf(l->key, sizeof(l->key), "%s", key);
    l->q = q;
    if (tr_hmap_put(&b->learned, l->key, strlen(l->key), l) < 0)
        tr_free(l);
}

void quota_unlearn(struct budgets *b, const struct inst *in)
{
    if (tr_hmap_count(&b->learned) == 0)
        return;
    char key[sizeof(((struct learned *)0)->key)];
    learned_key(in, key, sizeof(key));
    struct learned *l = tr_hmap_del(&b->learned, key, strlen(key));
    tr_free(l);
}

/* Whether q lets one more task through now: its buckets hold a request
 * beyond the tasks already let through whose call has not come yet. */
static bool quota_admits(struct quota *q, double now)
{
    quota_refill(q, now);
    if (q->admitted > 0 && now - q->admitted_at > 2.0)
        q->admitted = 0; /* those tasks did not call after all */
    if (!q->known)
        return q->admitted < 1.0; /* one task at a time until its call says the limits */
    if (q->blocked_until > now)
        return false;
    if (q->rpm > 0 && q->req - q->admitted < 1.0)
        return false;
    if (q->tpm > 0 && q->tok <= 0)
        return false;
    return true;
}

static void on_tick(uv_timer_t *h);

/* The quota that holds in back now, or NULL: the providers its task declares
 * (task field `providers`), else the one its calls were seen to use. Quotas
 * the scheduler has not heard of (no call yet) hold nothing. */
static struct quota *gate_quota(struct budgets *b, const struct inst *in, double now,
                                struct quota **pass, size_t *n_pass)
{
    const struct tr_pipeline_def *def = in->run->pipe->def;
    const char *decl = def->task_providers ? def->task_providers[in->task] : NULL;
    *n_pass = 0;
    if (decl != NULL) {
        for (const char *p = decl; *p != '\0';) {
            size_t len = strcspn(p, ",");
            struct quota *q = tr_hmap_get(&b->quotas, p, len);
            if (q == NULL && len < sizeof(q->key) && tr_hmap_count(&b->quotas) < QUOTAS_MAX &&
                (q = tr_calloc(1, sizeof(*q))) != NULL) {
                /* Declared, never called yet: its limits come with its first call. */
                memcpy(q->key, p, len);
                q->at = now;
                if (tr_hmap_put(&b->quotas, q->key, len, q) < 0) {
                    tr_free(q);
                    q = NULL;
                }
            }
            if (q != NULL) {
                if (q->n_parked > q->head || !quota_admits(q, now))
                    return q; /* FIFO: nothing overtakes what is already held */
                if (*n_pass < 16)
                    pass[(*n_pass)++] = q;
            }
            p += len + (p[len] == ',');
        }
        return NULL;
    }
    if (tr_hmap_count(&b->learned) == 0)
        return NULL;
    char key[sizeof(((struct learned *)0)->key)];
    learned_key(in, key, sizeof(key));
    struct learned *l = tr_hmap_gets(&b->learned, key);
    if (l == NULL)
        return NULL;
    if (l->q->n_parked > l->q->head || !quota_admits(l->q, now))
        return l->q;
    pass[(*n_pass)++] = l->q;
    return NULL;
}

bool bud_gate(void *arg, struct inst *in)
{
    struct api *a = arg;
    struct budgets *b = bud_of(a);
    if (b == NULL || b->releasing)
        return false;
    double now = bud_mono_s();
    struct quota *pass[16];
    size_t n_pass;
    struct quota *q = gate_quota(b, in, now, pass, &n_pass);
    if (q == NULL) {
        for (size_t i = 0; i < n_pass; i++) {
            pass[i]->admitted += 1.0;
            pass[i]->admitted_at = now;
        }
        return false;
    }
    if (q->head > 0 && q->head == q->n_parked)
        q->head = q->n_parked = 0;
    struct parked p = {.task = in->task, .index = in->index};
    snprintf(p.run_id, sizeof(p.run_id), "%s", in->run->id);
    if (TR_VEC_PUSH(q->parked, q->n_parked, q->cap_parked, p) < 0)
        return false; /* out of memory: it waits in a worker slot instead */
    b->n_parked++;
    q->held++;
    if (!uv_is_active((uv_handle_t *)&b->tick))
        uv_timer_start(&b->tick, on_tick, GATE_TICK_MS, GATE_TICK_MS);
    return true;
}

static struct inst *parked_inst(struct api *a, const struct parked *p)
{
    struct run *r = run_find(a->core, p->run_id);
    if (r == NULL || run_is_final(r) || p->task >= r->pipe->def->n_tasks)
        return NULL;
    struct task_rt *trt = &r->tasks[p->task];
    struct inst *in;
    if (trt->mapped != NULL) {
        if (p->index == 0 || p->index > trt->n_inst)
            return NULL;
        in = &trt->mapped[p->index - 1];
    } else {
        in = &trt->single;
    }
    return in->state == TR_TASK_PENDING && in->heap_pos < 0 ? in : NULL;
}

static void on_tick(uv_timer_t *h)
{
    struct budgets *b = h->data;
    double now = bud_mono_s();
    size_t it = 0;
    struct quota *q;
    while ((q = tr_hmap_next(&b->quotas, &it)) != NULL) {
        while (q->head < q->n_parked && quota_admits(q, now)) {
            struct parked p = q->parked[q->head++];
            b->n_parked--;
            struct inst *in = parked_inst(b->a, &p);
            if (in == NULL)
                continue; /* cancelled, or its run ended */
            q->admitted += 1.0;
            q->admitted_at = now;
            b->releasing = true;
            dispatch_ready(b->a->dispatch, in);
            b->releasing = false;
        }
        if (q->head == q->n_parked)
            q->head = q->n_parked = 0;
    }
    if (b->n_parked == 0)
        uv_timer_stop(&b->tick);
}


/* x-ratelimit-remaining-* and their reset, as a worker saw them. */
void quota_report(struct budgets *b, struct tr_str key, double rem_req, double rem_tok,
                   double reset_req, double reset_tok)
{
    struct quota *q = key.len > 0 ? tr_hmap_get(&b->quotas, key.p, key.len) : NULL;
    if (q == NULL)
        q = quota_get(b, key, rem_req >= 0 ? 0 : -1, -1); /* learn of a provider with no limits */
    if (q == NULL)
        return;
    double now = bud_mono_s();
    quota_refill(q, now);
    if (rem_req >= 0 && q->rpm > 0)
        q->req = TR_MIN(q->req, rem_req);
    if (rem_tok >= 0 && q->tpm > 0)
        q->tok = TR_MIN(q->tok, rem_tok);
    if (rem_req == 0 && reset_req > 0)
        q->blocked_until = TR_MAX(q->blocked_until, now + TR_MIN(reset_req, 120.0));
    if (rem_tok == 0 && reset_tok > 0)
        q->blocked_until = TR_MAX(q->blocked_until, now + TR_MIN(reset_tok, 120.0));
}


json_t *quotas_json(struct budgets *b)
{
    json_t *quotas = json_array();
    double mono = bud_mono_s();
    size_t it = 0;
    struct quota *q;
    while ((q = tr_hmap_next(&b->quotas, &it)) != NULL) {
        quota_refill(q, mono);
        json_array_append_new(
            quotas, json_pack("{s:s,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I}", "provider", q->key, "rpm",
                              q->rpm, "tpm", q->tpm, "requests_available", q->req,
                              "tokens_available", q->tok, "blocked_for_s",
                              TR_MAX(q->blocked_until - mono, 0), "granted",
                              (json_int_t)q->granted, "waited", (json_int_t)q->waited,
                              "tasks_held", (json_int_t)(q->n_parked - q->head),
                              "tasks_held_total", (json_int_t)q->held));
    }
    return quotas;
}
