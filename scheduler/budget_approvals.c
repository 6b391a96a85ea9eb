/*
 * budget_approvals.c - LLM calls held for an operator's decision when their
 * reservation does not fit a budget and the policy is on_budget = "approve"
 * (docs/budgets.md).
 *
 * budgets.c answers such a reservation "held" (code 4, with the seconds it
 * may stay held) and records it here; the worker keeps the task's coroutine
 * suspended on it (no polling). An operator decides with the approvals route
 * (api_flow.c asks here first): approve grants the reservation beyond the
 * limit (that one call overspends; spent is counted), reject answers it
 * budget_exceeded naming the decider. Undecided past --budget-approval-timeout
 * (or the task's shorter timeout) it is rejected. A run that ends or a
 * worker that goes away drops its held calls (nobody waits on them).
 *
 * Few calls are ever held: a list, scanned. One timer, running only while
 * something is held, expires them. Part "api", loop thread only.
 */
#include <jansson.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api_int.h"
#include "scheduler/audit.h"
#include "scheduler/budgets_int.h"
#include "scheduler/dispatch.h"
#include "scheduler/gpus.h"
#include "scheduler/workers.h"

#define HELD_MAX 10000u       /* calls held at once; more are refused as budget_exceeded */
#define HELD_TICK_MS 250

struct bheld
{
    struct bheld *next;
    uint64_t dispatch;        /* the calling task's dispatch (fencing token) */
    struct worker *w;
    uint64_t seq, call_id;    /* what the answer carries */
    double tokens, cost;
    double since, expires;    /* wall-clock seconds */
    char run_id[40];
    uint32_t task, index;
    char tenant[NAME_MAX_LEN + 1];
    char msg[200];            /* which budget, how much is used, the limit */
};

static void timer_freed(uv_handle_t *h)
{
    tr_free(h);
}

void bheld_close(struct budgets *b)
{
    while (b->held != NULL) {
        struct bheld *h = b->held;
        b->held = h->next;
        tr_free(h);
    }
    b->n_held = 0;
    if (b->held_timer != NULL)
        uv_close((uv_handle_t *)b->held_timer, timer_freed);
    b->held_timer = NULL;
}

static void unlink_held(struct budgets *b, struct bheld *h)
{
    for (struct bheld **p = &b->held; *p != NULL; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            b->n_held--;
            break;
        }
    }
    if (b->n_held == 0 && b->held_timer != NULL)
        uv_timer_stop(b->held_timer);
}

/* The instance still waiting on h, or NULL (its task ended, or moved). */
static struct inst *held_inst(struct api *a, const struct bheld *h)
{
    struct inst *in = dispatch_find(a->dispatch, h->dispatch);
    return in != NULL && in->worker == h->w && strcmp(in->run->id, h->run_id) == 0 ? in : NULL;
}

/* Answers h and forgets it. approve: granted beyond the limit. */
static void decide(struct api *a, struct bheld *h, bool approve, const char *user)
{
    struct budgets *b = bud_of(a);
    struct inst *in = held_inst(a, h);
    unlink_held(b, h);
    if (in != NULL) {
        uint64_t id = approve ? bud_grant(a, in, h->w, h->tokens, h->cost) : 0;
        char msg[320];
        if (approve && id == 0)
            snprintf(msg, sizeof(msg), "approved by %s but the reservation failed (out of "
                     "memory or too many reservations)", user);
        else
            snprintf(msg, sizeof(msg), "rejected by %s (%s)", user, h->msg);
        bud_send_answer(a, h->w, h->call_id, h->seq, id != 0 ? 0 : 1, id, 0, "approve",
                        id != 0 ? "" : msg);
    }
    tr_free(h);
}

static void on_tick(uv_timer_t *t)
{
    struct api *a = t->data;
    struct budgets *b = bud_of(a);
    double now = tr_now();
    struct bheld *h = b->held;
    while (h != NULL) {
        struct bheld *next = h->next;
        if (now >= h->expires) {
            char object[400], who[64];
            snprintf(object, sizeof(object), "%s/%s", h->run_id,
                     run_find(a->core, h->run_id) != NULL
                         ? run_find(a->core, h->run_id)->pipe->def->tasks[h->task].name
                         : "?");
            snprintf(who, sizeof(who), "timeout after %.0f s", h->expires - h->since);
            tr_audit_record_as(a, h->tenant, "timeout", "system", "budget.reject", object,
                               NULL);
            decide(a, h, false, who);
        } else if (held_inst(a, h) == NULL) {
            unlink_held(b, h); /* its task ended meanwhile (its own timeout, a retry) */
            tr_free(h);
        }
        h = next;
    }
}

int bheld_add(struct api *a, struct inst *in, struct worker *w, uint64_t seq, uint64_t call_id,
              double tokens, double cost, const char *tenant, const char *msg, double *expires_in)
{
    struct budgets *b = bud_of(a);
    if (b->n_held >= HELD_MAX)
        return TR_ELIMIT;
    if (b->held_timer == NULL) {
        b->held_timer = tr_calloc(1, sizeof(*b->held_timer));
        if (b->held_timer == NULL)
            return TR_ENOMEM;
        uv_timer_init(a->loop, b->held_timer);
        b->held_timer->data = a;
    }
    struct bheld *h = tr_calloc(1, sizeof(*h));
    if (h == NULL)
        return TR_ENOMEM;
    double wait = a->cfg->budget_approval_s > 0 ? a->cfg->budget_approval_s : 3600;
    double task_timeout = inst_def(in)->timeout;
    /* Bounded by the task's own timeout, a little before it (the call started after its
     * task did), so the call fails as a rejection rather than the task as a timeout. */
    if (task_timeout > 0)
        wait = TR_MIN(wait, task_timeout - TR_MIN(2.0, task_timeout * 0.2));
    h->dispatch = in->dispatch_id;
    h->w = w;
    h->seq = seq;
    h->call_id = call_id;
    h->tokens = tokens;
    h->cost = cost;
    h->since = tr_now();
    h->expires = h->since + wait;
    snprintf(h->run_id, sizeof(h->run_id), "%s", in->run->id);
    h->task = in->task;
    h->index = in->index;
    snprintf(h->tenant, sizeof(h->tenant), "%s", tenant);
    snprintf(h->msg, sizeof(h->msg), "%s", msg);
    /* Appended: the oldest is decided first when a task has several. */
    struct bheld **p = &b->held;
    while (*p != NULL)
        p = &(*p)->next;
    *p = h;
    if (b->n_held++ == 0)
        uv_timer_start(b->held_timer, on_tick, HELD_TICK_MS, HELD_TICK_MS);
    *expires_in = wait;
    tr_info("LLM call of run %s task %s held for an operator's approval: %s", h->run_id,
            inst_def(in)->name, msg);
    return 0;
}

void bheld_run_final(struct api *a, const char *run_id)
{
    struct budgets *b = bud_of(a);
    struct bheld *h = b != NULL ? b->held : NULL;
    while (h != NULL) {
        struct bheld *next = h->next;
        if (strcmp(h->run_id, run_id) == 0) {
            unlink_held(b, h);
            tr_free(h);
        }
        h = next;
    }
}

void bheld_worker_down(struct api *a, struct worker *w)
{
    struct budgets *b = bud_of(a);
    struct bheld *h = b != NULL ? b->held : NULL;
    while (h != NULL) {
        struct bheld *next = h->next;
        if (h->w == w) {
            unlink_held(b, h);
            tr_free(h);
        }
        h = next;
    }
}

static json_t *held_json(struct api *a, const struct bheld *h, bool with_task)
{
    json_t *o = json_object();
    struct run *r = run_find(a->core, h->run_id);
    if (with_task) {
        json_object_set_new(o, "run_id", json_string(h->run_id));
        json_object_set_new(o, "task", r ? json_string(r->pipe->def->tasks[h->task].name)
                                         : json_null());
        json_object_set_new(o, "index", json_integer(h->index));
    }
    json_object_set_new(o, "tenant", json_string(h->tenant));
    json_object_set_new(o, "cost", json_real(h->cost));
    json_object_set_new(o, "tokens", json_real(h->tokens));
    json_object_set_new(o, "reason", json_string(h->msg));
    json_object_set_new(o, "since", json_time(h->since));
    json_object_set_new(o, "expires_at", json_time(h->expires));
    json_t *st = bud_state_json(a, h->tenant, h->run_id);
    if (st != NULL)
        json_object_set_new(o, "budget", st);
    return o;
}

bool bud_inst_held_json(struct api *a, const struct inst *in, json_t *o)
{
    struct budgets *b = bud_of(a);
    if (b == NULL || b->n_held == 0)
        return false;
    for (struct bheld *h = b->held; h != NULL; h = h->next) {
        if (h->dispatch == in->dispatch_id && h->task == in->task && h->index == in->index &&
            strcmp(h->run_id, in->run->id) == 0) {
            json_object_set_new(o, "waiting", json_string("budget_approval"));
            json_object_set_new(o, "budget_approval", held_json(a, h, false));
            return true;
        }
    }
    return false;
}

json_t *bheld_list_json(struct api *a, bool (*sees)(void *, const char *), void *arg)
{
    struct budgets *b = bud_of(a);
    json_t *arr = json_array();
    for (struct bheld *h = b->held; h != NULL; h = h->next) {
        if (sees(arg, h->tenant) && held_inst(a, h) != NULL)
            json_array_append_new(arr, held_json(a, h, true));
    }
    return arr;
}

int bud_approval_decide(struct api *a, struct tr_http_req *req, const char *run_id,
                        const char *task, bool approve, const char *comment, const char *user)
{
    struct budgets *b = bud_of(a);
    struct run *r = run_find(a->core, run_id);
    if (b == NULL || b->n_held == 0 || r == NULL)
        return TR_ENOENT;
    for (struct bheld *h = b->held; h != NULL; h = h->next) {
        if (strcmp(h->run_id, run_id) != 0 || h->task >= r->pipe->def->n_tasks ||
            strcmp(r->pipe->def->tasks[h->task].name, task) != 0 || held_inst(a, h) == NULL)
            continue;
        char object[400];
        snprintf(object, sizeof(object), "%s/%s", run_id, task);
        json_t *d = json_pack("{s:f,s:f,s:s}", "cost", h->cost, "tokens", h->tokens, "reason",
                              h->msg);
        if (d != NULL && comment != NULL)
            json_object_set_new(d, "comment", json_string(comment));
        char *text = d != NULL ? json_dumps(d, JSON_COMPACT) : NULL;
        tr_audit_record_detail(a, req, approve ? "budget.approve" : "budget.reject", object,
                               text);
        free(text); /* jansson's allocator */
        json_decref(d);
        tr_info("LLM call of run %s task %s %s by %s", run_id, task,
                approve ? "approved beyond its budget" : "rejected", user);
        decide(a, h, approve, user);
        return 0;
    }
    return TR_ENOENT;
}

/* Per tenant: spent and reserved cost, reservations refused; calls held. */
int bud_metrics(struct api *a, struct tr_buf *out)
{
    struct budgets *b = bud_of(a);
    if (b == NULL)
        return 0;
    static const char *const names[] = {"trellis_budget_spent_cost", "trellis_budget_reserved_cost",
                                         "trellis_budget_refused_total"};
    static const char *const help[] = {
        "LLM spend (USD) of a tenant in its budget's period.",
        "LLM calls' worst case (USD) reserved now by a tenant.",
        "LLM call reservations refused by a tenant's or its runs' budget (held ones "
        "included)."};
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        rc = tr_buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", names[k], help[k], names[k],
                         k < 2 ? "gauge" : "counter");
        size_t it = 0;
        struct tenant *t;
        while (rc == 0 && (t = tr_hmap_next(&b->tenants, &it)) != NULL) {
            rc = tr_buf_addf(out, "%s{tenant=\"", names[k]);
            if (rc == 0)
                rc = prom_label(out, t->name);
            if (rc == 0 && k < 2)
                rc = tr_buf_addf(out, "\"} %.9g\n", k == 0 ? t->spent_cost : t->res_cost);
            else if (rc == 0)
                rc = tr_buf_addf(out, "\"} %llu\n", (unsigned long long)t->refused);
        }
    }
    if (rc == 0)
        rc = tr_buf_addf(out, "# HELP trellis_budget_approvals_pending LLM calls held for an "
                         "operator's approval (on_budget = \"approve\").\n"
                         "# TYPE trellis_budget_approvals_pending gauge\n"
                         "trellis_budget_approvals_pending %zu\n", b->n_held);
    return rc;
}
