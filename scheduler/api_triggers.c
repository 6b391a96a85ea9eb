/*
 * api_triggers.c - GET /v1/triggers and GET /v1/triggers/{pipeline}/{trigger}/firings
 * (docs/api.md, docs/feedback.md "Triggers"): the declared triggers from the
 * leader's memory, their firings from the state.
 */
#include "scheduler/triggers_int.h"
#include "scheduler/tenants.h"

/* ====================================================================== */
/* API                                                                     */
/* ====================================================================== */

static int cmp_trg(const void *a, const void *b)
{
    const struct trg *x = *(struct trg *const *)a, *y = *(struct trg *const *)b;
    int c = strcmp(x->pipeline, y->pipeline);
    return c ? c : strcmp(x->name, y->name);
}

static const char *state_name(const struct trg *t, double now)
{
    if (t->error != NULL)
        return "disabled";
    if (t->fired > 0 && now - t->fired_at < t->cooldown)
        return "cooling";
    if (t->on == TR_TRIGGER_SCHEDULE)
        return "scheduled";
    if (t->last == 1)
        return "fired";
    return "armed";
}

static json_t *trg_json(const struct trg *t, double now)
{
    json_t *o = json_object();
    json_object_set_new(o, "pipeline", json_string(t->pipeline));
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "on", json_string(tr_trigger_on_names[t->on]));
    json_object_set_new(o, "run", json_string(t->run ? t->run : ""));
    json_t *params = t->params_json ? json_loads(t->params_json, 0, NULL) : NULL;
    json_object_set_new(o, "params", params ? params : json_object());
    json_object_set_new(o, "cooldown", json_real(t->cooldown));
    json_object_set_new(o, "cron", t->cron ? json_string(t->cron) : json_null());
    json_object_set_new(o, "version", json_string(t->version ? t->version : ""));
    json_object_set_new(o, "state", json_string(state_name(t, now)));
    json_object_set_new(o, "last_value", t->last < 0 ? json_null() : json_boolean(t->last));
    json_object_set_new(o, "firings", json_integer((json_int_t)t->fired));
    json_object_set_new(o, "suppressed", json_integer((json_int_t)t->suppressed));
    json_object_set_new(o, "last_fired_at", t->fired_at > 0 ? json_time(t->fired_at)
                                                            : json_null());
    json_object_set_new(o, "last_run_id", t->last_run ? json_string(t->last_run) : json_null());
    json_object_set_new(o, "next_fire_at", t->next_due > 0 && t->on == TR_TRIGGER_SCHEDULE
                                               ? json_time(t->next_due) : json_null());
    json_object_set_new(o, "error", t->error ? json_string(t->error) : json_null());
    return o;
}

void h_triggers_list(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    struct trg_loop *l = loop_of(s);
    char pipeline[FB_NAME_MAX * 2] = "";
    bool one = tr_http_req_query(req, "pipeline", pipeline, sizeof(pipeline));
    struct trg **v = tr_reallocarray(NULL, l->n_all ? l->n_all : 1, sizeof(*v));
    if (v == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < l->n_all; i++) {
        if (!l->all[i]->removed && (!one || strcmp(l->all[i]->pipeline, pipeline) == 0) &&
            tenant_sees(s, req, TENANT_PIPELINE, l->all[i]->pipeline))
            v[n++] = l->all[i];
    }
    qsort(v, n, sizeof(*v), cmp_trg);
    json_t *arr = json_array();
    double now = trg_now(l);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, trg_json(v[i], now));
    tr_free(v);
    json_t *o = json_object();
    json_object_set_new(o, "triggers", arr);
    /* A state change not durable yet is shown once it is. */
    if (trg_have_dirty(s))
        fb_queue_reply(s, req, 200, o);
    else
        fb_respond(req, 200, o);
}

static int firing_json(const struct tr_firing_rec *r, void *arg)
{
    json_t *o = json_object();
    json_object_set_new(o, "fired_at", json_time(r->fired_at));
    json_object_set_new(o, "run_id", r->run_id ? json_string(r->run_id) : json_null());
    json_object_set_new(o, "stats", fb_json_or_null(r->stats_json));
    json_array_append_new(arg, o);
    return 0;
}

void h_trigger_firings(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char pipeline[FB_NAME_MAX * 2], name[FB_NAME_MAX * 2];
    uint32_t limit;
    if (!fb_param(req, "pipeline", pipeline, sizeof(pipeline), "pipeline") ||
        !fb_param(req, "trigger", name, sizeof(name), "trigger") || !fb_limit(req, &limit))
        return;
    if (!tenant_sees(s, req, TENANT_PIPELINE, pipeline)) {
        tr_http_respond_error(req, 404, "not_found", "no such trigger");
        return;
    }
    struct trg *t = trg_find(loop_of(s), pipeline, name);
    json_t *arr = json_array();
    int rc = tr_state_list_firings(s->state, pipeline, name, limit, firing_json, arr);
    if (rc < 0) {
        json_decref(arr);
        fb_state_error(req, rc);
        return;
    }
    if (t == NULL && json_array_size(arr) == 0) {
        json_decref(arr);
        tr_http_respond_error(req, 404, "not_found", "no such trigger");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "pipeline", json_string(pipeline));
    json_object_set_new(o, "trigger", json_string(name));
    json_object_set_new(o, "firings", arr);
    if (trg_have_dirty(s))
        fb_queue_reply(s, req, 200, o);
    else
        fb_respond(req, 200, o);
}
