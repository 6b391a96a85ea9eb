/*
 * api_flow.c - the HTTP side of control flow: POST /v1/runs/{id}/approvals/{task}
 * and the parent/children links shown with a run (docs/api.md).
 *
 * Part "api". The decision itself is the core's (core_flow.c).
 */
#include "lib/base/alloc.h"
#include "scheduler/api_int.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/budgets.h"
#include "scheduler/tenants.h"
#include "scheduler/core_flow.h"

#define APPROVAL_BODY_MAX (64u << 10) /* bytes of a decision's body */
#define COMMENT_MAX 4096u             /* bytes of its comment */

void api_flow_run_json(struct run *r, json_t *o)
{
    if (r->parent_run != NULL) {
        json_t *p = json_object();
        json_object_set_new(p, "run_id", json_string(r->parent_run));
        json_object_set_new(p, "task", json_string(r->parent_task));
        json_object_set_new(o, "parent", p);
    }
    const struct tr_pipeline_def *def = r->pipe->def;
    json_t *children = NULL;
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        const struct inst *in = &r->tasks[t].single;
        if (def->tasks[t].kind != TR_KIND_SUBRUN || !in->has_child || in->worker_id == NULL)
            continue;
        if (children == NULL)
            children = json_array();
        json_t *c = json_object();
        json_object_set_new(c, "run_id", json_string(in->worker_id));
        json_object_set_new(c, "task", json_string(def->tasks[t].name));
        json_array_append_new(children, c);
    }
    if (children != NULL)
        json_object_set_new(o, "children", children);
}

const char *api_flow_waiting(const struct inst *in)
{
    if (!in->waiting || in->state != TR_TASK_RUNNING)
        return NULL;
    return inst_def(in)->kind == TR_KIND_APPROVAL ? "approval" : "child run";
}

void h_run_approval(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct tr_str id = tr_http_req_param(req, "id");
    struct tr_str task = tr_http_req_param(req, "task");
    char run_id[64], name[300];
    if (id.len == 0 || id.len >= sizeof(run_id) || task.len == 0 || task.len >= sizeof(name)) {
        tr_http_respond_error(req, 404, "not_found", "no such run or task");
        return;
    }
    snprintf(run_id, sizeof(run_id), "%.*s", (int)id.len, id.p);
    snprintf(name, sizeof(name), "%.*s", (int)task.len, task.p);
    if (tr_http_req_body(req).len > APPROVAL_BODY_MAX) {
        tr_http_respond_error(req, 413, "too_large", "the body is too large");
        return;
    }
    json_t *body = api_json_object(req);
    if (body == NULL)
        return;
    json_t *d = json_object_get(body, "decision");
    json_t *cm = json_object_get(body, "comment");
    const char *msg = NULL;
    if (!json_is_string(d) || (strcmp(json_string_value(d), "approve") != 0 &&
                               strcmp(json_string_value(d), "reject") != 0))
        msg = "'decision' must be \"approve\" or \"reject\"";
    else if (cm != NULL && !json_is_null(cm) && !json_is_string(cm))
        msg = "'comment' must be a string";
    else if (json_is_string(cm) && json_string_length(cm) > COMMENT_MAX)
        msg = "'comment' is longer than 4096 bytes";
    if (msg != NULL) {
        json_decref(body);
        tr_http_respond_error(req, 400, "invalid_request", msg);
        return;
    }
    if (api_writes_paused(a)) {
        json_decref(body);
        tr_http_respond_error(req, 503, "unavailable",
                              "the state backend is not taking writes; try again");
        return;
    }
    bool approve = strcmp(json_string_value(d), "approve") == 0;
    const char *comment = json_is_string(cm) ? json_string_value(cm) : NULL;
    /* Another tenant's run answers as an unknown one does. */
    struct run *r = run_find(a->core, run_id);
    if (r != NULL && !tenant_sees(a, req, TENANT_PIPELINE, r->pipe->def->name)) {
        json_decref(body);
        tr_http_respond_error(req, 404, "not_found", "no such run or task");
        return;
    }
    /* Who decided: the token's name (auth.h); without tokens, "anonymous". */
    const struct auth_principal *who = auth_of(req);
    const char *user = who != NULL && who->name[0] != '\0' ? who->name : "anonymous";
    /* A task's LLM call held for an operator (on_budget = "approve") is decided here too. */
    if (r != NULL && bud_approval_decide(a, req, run_id, name, approve, comment, user) == 0) {
        json_decref(body);
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "run_id", run_id, "task", name,
                              "decision", approve ? "approve" : "reject", "user", user, "kind",
                              "budget");
        batch_add_reply(a->batch, req, 200, o);
        return;
    }
    struct tr_error err;
    tr_error_init(&err);
    int rc = flow_approval_decide(a->core, run_id, name, approve, comment, user, &err);
    /* The audit entry's detail, while the comment (in body) is alive. */
    json_t *detail = rc == 0 ? json_object() : NULL;
    if (detail != NULL && comment != NULL)
        json_object_set_new(detail, "comment", json_string(comment));
    json_decref(body);
    if (rc == TR_ENOENT) {
        tr_http_respond_error(req, 404, "not_found", err.msg);
        return;
    }
    if (rc == TR_EINVAL) {
        tr_http_respond_error(req, 400, "not_an_approval", err.msg);
        return;
    }
    if (rc < 0) {
        tr_http_respond_error(req, 409, "conflict", err.msg);
        return;
    }
    char object[400];
    snprintf(object, sizeof(object), "%s/%s", run_id, name);
    char *detail_text = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
    tr_audit_record_detail(a, req, approve ? "run.approve" : "run.reject", object, detail_text);
    free(detail_text); /* jansson's allocator */
    json_decref(detail);
    json_t *o = json_object();
    json_object_set_new(o, "run_id", json_string(run_id));
    json_object_set_new(o, "task", json_string(name));
    json_object_set_new(o, "decision", json_string(approve ? "approve" : "reject"));
    json_object_set_new(o, "user", json_string(user));
    batch_add_reply(a->batch, req, 200, o);
}
