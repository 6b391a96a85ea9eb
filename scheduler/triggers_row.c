/*
 * triggers_row.c - a trigger's state row (tr_state_put_trigger): its
 * declaration and durable state as one JSON object, and back, so that a
 * scheduler that starts to lead rebuilds its triggers from the state alone.
 */
#include "scheduler/triggers_int.h"

/* ====================================================================== */
/* The state row                                                           */
/* ====================================================================== */

static json_t *num_or_null(double v)
{
    return v > 0 ? json_real(v) : json_null();
}

char *trg_row_json(const struct trg *t)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_t *params = t->params_json ? json_loads(t->params_json, 0, NULL) : NULL;
    json_object_set_new(o, "on", json_string(tr_trigger_on_names[t->on]));
    json_object_set_new(o, "when", json_boolean(t->has_when));
    json_object_set_new(o, "run", json_string(t->run ? t->run : ""));
    json_object_set_new(o, "params", params ? params : json_object());
    json_object_set_new(o, "cooldown", json_real(t->cooldown));
    json_object_set_new(o, "cron", t->cron ? json_string(t->cron) : json_null());
    json_object_set_new(o, "digest", json_string(t->digest));
    json_object_set_new(o, "version", json_string(t->version ? t->version : ""));
    json_object_set_new(o, "last", json_integer(t->last));
    json_object_set_new(o, "fired_at", num_or_null(t->fired_at));
    json_object_set_new(o, "fired", json_integer((json_int_t)t->fired));
    json_object_set_new(o, "suppressed", json_integer((json_int_t)t->suppressed));
    json_object_set_new(o, "next_due", num_or_null(t->next_due));
    json_object_set_new(o, "error", t->error ? json_string(t->error) : json_null());
    json_object_set_new(o, "last_run", t->last_run ? json_string(t->last_run) : json_null());
    json_object_set_new(o, "removed", json_boolean(t->removed));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static char *dup_member(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? tr_strdup(v) : NULL;
}

int trg_load_row(const struct tr_trigger_rec *r, void *arg)
{
    struct trg_loop *l = arg;
    json_t *o = json_loads(r->json, 0, NULL);
    if (o == NULL)
        return 0; /* a row this build cannot read is skipped, not fatal */
    struct trg *t = trg_find(l, r->pipeline, r->trigger);
    if (t == NULL && (t = trg_add(l, r->pipeline, r->trigger)) == NULL) {
        json_decref(o);
        return TR_ENOMEM;
    }
    const char *on = json_string_value(json_object_get(o, "on"));
    for (uint8_t i = 0; on != NULL && i < 3; i++) {
        if (strcmp(on, tr_trigger_on_names[i]) == 0)
            t->on = i;
    }
    t->has_when = json_is_true(json_object_get(o, "when"));
    t->run = dup_member(o, "run");
    json_t *params = json_object_get(o, "params");
    t->params_json = json_dumps(json_is_object(params) ? params : json_object(), JSON_COMPACT);
    t->cooldown = json_number_value(json_object_get(o, "cooldown"));
    t->cron = dup_member(o, "cron");
    const char *d = json_string_value(json_object_get(o, "digest"));
    snprintf(t->digest, sizeof(t->digest), "%s", d ? d : "");
    t->version = dup_member(o, "version");
    t->last = (int)json_integer_value(json_object_get(o, "last"));
    t->fired_at = json_number_value(json_object_get(o, "fired_at"));
    t->fired = (uint64_t)json_integer_value(json_object_get(o, "fired"));
    t->suppressed = (uint64_t)json_integer_value(json_object_get(o, "suppressed"));
    t->next_due = json_number_value(json_object_get(o, "next_due"));
    t->error = dup_member(o, "error");
    t->last_run = dup_member(o, "last_run");
    t->removed = json_is_true(json_object_get(o, "removed"));
    json_decref(o);
    struct tr_error cerr;
    tr_error_init(&cerr);
    if (t->cron != NULL && tr_cron_parse(t->cron, &t->cr, &cerr) < 0 && t->error == NULL)
        t->error = tr_strdup(cerr.msg);
    if (t->run == NULL || t->params_json == NULL)
        return TR_ENOMEM;
    return 0;
}

