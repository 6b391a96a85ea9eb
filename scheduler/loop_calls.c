/*
 * loop_calls.c - a task's `trellis.feedback.request_label` and
 * `trellis.registry.get/register/promote`, served for its worker.
 *
 * A CALL names an operation and carries its arguments as msgpack. It is
 * accepted only for a dispatch the calling worker holds (the task is
 * running there now), which also tells the run and the task a label item
 * comes from. Each operation is the HTTP API call it stands for, run
 * in-process through the API's own route table (tr_http_local_request):
 * same checks, same errors, same storage, and a write is answered only
 * after the group commit that makes it durable, exactly as over HTTP. The
 * API's JSON answer goes back as msgpack in CALL_REPLY with its status.
 *
 *   label              POST /v1/labels {run_id, task, item, uncertainty}
 *   registry.get       GET  /v1/models/{name}/versions/{version or alias}
 *   registry.register  POST /v1/models/{name}/versions {artifact, metrics, lineage, tags}
 *                      (lineage.run_id and lineage.pipeline default to the caller's)
 *   registry.promote   PUT  /v1/models/{name}/aliases/{alias} {version, reason}
 *   feedback.list      GET  /v1/feedback?pipeline=P&limit=N
 *   labels.list        GET  /v1/labels?pipeline=P&state=S&limit=N
 *   run.get            GET  /v1/runs/{run_id}
 * (the reads a retraining run needs to build its training set itself, e.g.
 * when a trigger started it)
 *
 * Writes are recorded with user "task:<run>/<task>". The reply is queued
 * like every message to a worker and leaves after the turn's commit; when
 * the worker went away meanwhile it is dropped (the task is gone with it).
 *
 * Loop thread only.
 */
#include "scheduler/loop_calls.h"

#include <jansson.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/wire/mp_json.h"
#include "scheduler/api.h"
#include "scheduler/auth.h"
#include "scheduler/budgets.h"
#include "scheduler/dispatch.h"
#include "scheduler/tenants.h"

struct call
{
    struct api *a;
    char *ident;     /* owned: the worker's connection, looked up again when the answer comes */
    size_t ident_len;
    uint64_t id;
    uint64_t dispatch;
};

/* Sends CALL_REPLY with the API's JSON answer (or status 0 when the server went away). */
static void reply_json(struct api *a, const char *ident, size_t ident_len, uint64_t id,
                       uint64_t dispatch, int status, const char *body, size_t len)
{
    struct worker *w = fleet_find(a->fleet, ident, ident_len);
    if (w == NULL || status == 0)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    json_t *j = len > 0 ? json_loadb(body, len, JSON_DECODE_ANY, NULL) : NULL;
    int rc = j != NULL ? tr_json_to_mp(j, &pk) : msgpack_pack_nil(&pk);
    json_decref(j);
    if (rc == 0 && sb.size > TR_PROTO_CALL_BODY_MAX) {
        /* Only a registry version with a huge inline artifact gets here. */
        msgpack_sbuffer_clear(&sb);
        j = json_pack("{s:{s:s,s:s}}", "error", "code", "too_large", "message",
                      "the answer is over the CALL_REPLY bound of 1 MiB");
        status = 413;
        rc = j != NULL ? tr_json_to_mp(j, &pk) : TR_ENOMEM;
        json_decref(j);
    }
    struct tr_msg m = {.type = TR_MSG_CALL_REPLY};
    m.u.call_reply.id = id;
    m.u.call_reply.dispatch = dispatch;
    m.u.call_reply.status = (uint32_t)status;
    m.u.call_reply.body = (struct tr_str){sb.data, sb.size};
    if (rc == 0)
        rc = batch_add_msg(a->batch, w->ident, w->ident_len, &m);
    if (rc < 0)
        tr_warn("cannot answer call %llu of worker '%s': %s", (unsigned long long)id,
                w->id, tr_strerror(rc));
    msgpack_sbuffer_destroy(&sb);
}

static void reply_error(struct api *a, struct worker *w, const struct tr_msg_call *m,
                        int status, const char *code, const char *msg)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    reply_json(a, w->ident, w->ident_len, m->id, m->dispatch, status, text, text ? strlen(text) : 0);
    free(text);
}

static void on_answer(void *arg, int status, const char *body, size_t len)
{
    struct call *c = arg;
    reply_json(c->a, c->ident, c->ident_len, c->id, c->dispatch, status, body, len);
    tr_free(c->ident);
    tr_free(c);
}

/* Model, alias and version names as the API takes them; also keeps the URL whole. */
static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
            c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

static const char *str_member(json_t *b, const char *k)
{
    return json_string_value(json_object_get(b, k));
}

/*
 * Builds the API request for m into method, url and body (a JSON object the
 * caller frees). Returns NULL on success, else the refusal's message.
 */
static const char *build(struct inst *in, const char *op, json_t *args, const char **method,
                         char *url, size_t url_size, json_t **body, char *msg, size_t msg_size)
{
    struct run *r = in->run;
    const struct tr_task_def *td = &r->pipe->def->tasks[in->task];
    char user[256];
    snprintf(user, sizeof(user), "task:%s/%s", r->id, td->name);
    *body = NULL;
    if (strcmp(op, "label") == 0) {
        json_t *item = json_object_get(args, "item");
        json_t *unc = json_object_get(args, "uncertainty");
        if (item == NULL)
            return "request_label needs 'item'";
        *method = "POST";
        snprintf(url, url_size, "/v1/labels");
        *body = json_pack("{s:s,s:s,s:O,s:O*}", "run_id", r->id, "task", td->name, "item", item,
                          "uncertainty", unc);
        return *body ? NULL : "out of memory";
    }
    if (strcmp(op, "feedback.list") == 0 || strcmp(op, "labels.list") == 0) {
        const char *pipe = str_member(args, "pipeline");
        const char *state = str_member(args, "state");
        json_int_t limit = json_integer_value(json_object_get(args, "limit"));
        if (!name_ok(pipe) || (state != NULL && !name_ok(state))) {
            snprintf(msg, msg_size, "%s needs 'pipeline' (and an optional 'state'): 1-127 of "
                     "A-Z a-z 0-9 . _ -", op);
            return msg;
        }
        *method = "GET";
        int n = snprintf(url, url_size, "/v1/%s?pipeline=%s&limit=%lld",
                         op[0] == 'f' ? "feedback" : "labels", pipe,
                         (long long)(limit > 0 ? limit : 10000));
        if (state != NULL && n > 0 && (size_t)n < url_size)
            snprintf(url + n, url_size - (size_t)n, "&state=%s", state);
        return NULL;
    }
    if (strcmp(op, "run.get") == 0) {
        const char *id = str_member(args, "run_id");
        if (!name_ok(id)) {
            snprintf(msg, msg_size, "run.get needs 'run_id'");
            return msg;
        }
        *method = "GET";
        snprintf(url, url_size, "/v1/runs/%s", id);
        return NULL;
    }
    const char *name = str_member(args, "name");
    if (strcmp(op, "registry.get") == 0) {
        const char *ref = str_member(args, "ref");
        const char *at = ref ? strchr(ref, '@') : NULL;
        char model[128];
        if (at == NULL || (size_t)(at - ref) >= sizeof(model)) {
            snprintf(msg, msg_size, "registry.get takes \"name@alias\" or \"name@version\" "
                     "(\"reranker@production\", \"reranker@3\"), not '%.100s'", ref ? ref : "");
            return msg;
        }
        memcpy(model, ref, (size_t)(at - ref));
        model[at - ref] = '\0';
        if (!name_ok(model) || !name_ok(at + 1)) {
            snprintf(msg, msg_size, "'%.200s' is not name@version: names are 1-127 of "
                     "A-Z a-z 0-9 . _ -", ref);
            return msg;
        }
        *method = "GET";
        snprintf(url, url_size, "/v1/models/%s/versions/%s", model, at + 1);
        return NULL;
    }
    if (!name_ok(name)) {
        snprintf(msg, msg_size, "%s needs 'name': 1-127 of A-Z a-z 0-9 . _ -", op);
        return msg;
    }
    if (strcmp(op, "registry.register") == 0) {
        json_t *b = json_deep_copy(args);
        if (b == NULL)
            return "out of memory";
        json_object_del(b, "name");
        json_t *lin = json_object_get(b, "lineage");
        if (lin == NULL) {
            lin = json_object();
            json_object_set_new(b, "lineage", lin);
        }
        if (json_is_object(lin)) {
            /* What the registry cannot know by itself: who trained it. */
            if (json_object_get(lin, "run_id") == NULL)
                json_object_set_new(lin, "run_id", json_string(r->id));
            if (json_object_get(lin, "pipeline") == NULL) {
                char pv[300];
                const struct tr_pipeline_def *def = r->pipe->def;
                snprintf(pv, sizeof(pv), "%s%s%s", def->name, def->version[0] ? "@" : "",
                         def->version);
                json_object_set_new(lin, "pipeline", json_string(pv));
            }
        }
        if (json_object_get(b, "user") == NULL)
            json_object_set_new(b, "user", json_string(user));
        *method = "POST";
        snprintf(url, url_size, "/v1/models/%s/versions", name);
        *body = b;
        return NULL;
    }
    if (strcmp(op, "registry.promote") == 0) {
        const char *alias = str_member(args, "alias");
        if (!name_ok(alias)) {
            snprintf(msg, msg_size, "registry.promote needs 'alias': 1-127 of A-Z a-z 0-9 . _ -");
            return msg;
        }
        *method = "PUT";
        snprintf(url, url_size, "/v1/models/%s/aliases/%s", name, alias);
        *body = json_pack("{s:O*,s:O*,s:s}", "version", json_object_get(args, "version"),
                          "reason", json_object_get(args, "reason"), "user", user);
        return *body ? NULL : "out of memory";
    }
    snprintf(msg, msg_size, "unknown call '%.64s'", op);
    return msg;
}

void api_on_call(void *arg, struct worker *w, const struct tr_msg_call *m)
{
    struct api *a = arg;
    if (m->dispatch == 0 && tr_str_eq(m->op, BUD_CALL_OP)) {
        bud_on_call(a, w, m); /* the batched reservations of budgets.c */
        return;
    }
    struct inst *in = dispatch_find(a->dispatch, m->dispatch);
    if (in == NULL || in->worker != w) {
        /* Not a task this worker runs now: its result would be refused too. */
        reply_error(a, w, m, 409, "not_current",
                    "the calling task's dispatch is not current on this worker");
        return;
    }
    if (a->http == NULL || tr_http_local_pending(a->http) >= LOOP_CALLS_MAX) {
        reply_error(a, w, m, 429, "too_many_calls", "too many calls from tasks wait; retry");
        return;
    }
    char op[65];
    snprintf(op, sizeof(op), "%.*s", (int)m->op.len, m->op.p);
    struct tr_error err;
    tr_error_init(&err);
    json_t *args = m->body.len ? tr_mp_bytes_to_json(m->body.p, m->body.len, &err) : json_object();
    if (!json_is_object(args)) {
        json_decref(args);
        reply_error(a, w, m, 400, "invalid_argument", "a call's body must be a map");
        return;
    }
    const char *method = NULL;
    char url[400], msg[400];
    json_t *body = NULL;
    const char *why = build(in, op, args, &method, url, sizeof(url), &body, msg, sizeof(msg));
    json_decref(args);
    if (why != NULL) {
        reply_error(a, w, m, 400, "invalid_argument", why);
        return;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(body);
    struct call *c = tr_calloc(1, sizeof(*c));
    if (c != NULL) {
        c->ident = tr_memdup(w->ident, w->ident_len);
        c->ident_len = w->ident_len;
    }
    if (c == NULL || c->ident == NULL || (body != NULL && text == NULL)) {
        if (c != NULL)
            tr_free(c->ident);
        tr_free(c);
        free(text);
        reply_error(a, w, m, 500, "out_of_memory", "out of memory");
        return;
    }
    c->a = a;
    c->id = m->id;
    c->dispatch = m->dispatch;
    /* The call acts for the run's tenant, as an operator (auth.h). */
    const struct auth_principal *as = auth_task_principal(
        a->auth, tenant_owner(a, TENANT_PIPELINE, in->run->pipe->def->name));
    int rc = tr_http_local_request_as(a->http, as, method, url, text, text ? strlen(text) : 0,
                                      on_answer, c);
    free(text);
    if (rc < 0) {
        tr_free(c->ident);
        tr_free(c);
        reply_error(a, w, m, 500, "internal", tr_strerror(rc));
    }
}
