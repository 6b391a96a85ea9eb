/*
 * api_models.c - the model registry over HTTP (docs/feedback.md, "Model
 * registry"): versions with their artifact, metrics, lineage and tags;
 * aliases; and the history of every alias move.
 *
 * Version numbers and alias moves are allocated from the model's head kept
 * in memory (feedback.c), so two registrations in one turn get 1 and 2; the
 * head's durable copy (the model record) is written in the same batch as
 * the version or move that changed it.
 */
#include "scheduler/feedback_int.h"
#include "scheduler/audit.h"
#include "scheduler/tenants.h"

#include "lib/base/alloc.h"

static void not_found(struct tr_http_req *req, const char *what, const char *name);

/* {name}, valid and seen by the caller: another tenant's model is answered as
 * an unknown one (404). */
static bool model_param_as(struct api *s, struct tr_http_req *req, char *name, size_t size,
                           bool check)
{
    if (!fb_param(req, "name", name, size, "model"))
        return false;
    if (check && fb_name_ok(name) && !tenant_sees(s, req, TENANT_MODEL, name)) {
        not_found(req, "model", name);
        return false;
    }
    if (!fb_name_ok(name)) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "a model name is 1..127 of A-Z a-z 0-9 . _ -, not only digits");
        return false;
    }
    return true;
}

static bool model_param(struct api *s, struct tr_http_req *req, char *name, size_t size)
{
    return model_param_as(s, req, name, size, true);
}

static void not_found(struct tr_http_req *req, const char *what, const char *name)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "no %s '%.200s'", what, name);
    tr_http_respond_error(req, 404, "not_found", msg);
}

/* Adds the write of the model's head as it will be after this call. */
static bool head_write(struct api *s, const struct fb_model *m, uint32_t latest, uint64_t moves,
                       double now)
{
    struct fb_write *w = fb_write_new(s, FB_W_MODEL);
    if (w == NULL)
        return false;
    w->rec.model = (struct tr_model_rec){.name = fb_hold(w, "name", m->name), .latest = latest,
                                         .moves = moves,
                                         .created_at = m->exists ? m->created_at : now,
                                         .updated_at = now};
    if (w->rec.model.name == NULL) {
        fb_write_drop_last(s);
        return false;
    }
    return true;
}

/* ====================================================================== */
/* Versions                                                                */
/* ====================================================================== */

static bool lineage_ok(json_t *lin, char *msg, size_t size)
{
    if (lin == NULL || json_is_null(lin))
        return true;
    if (!json_is_object(lin)) {
        snprintf(msg, size, "'lineage' must be an object {run_id, data_digest, pipeline, parent}");
        return false;
    }
    static const char *const strs[] = {"run_id", "data_digest", "pipeline"};
    for (size_t i = 0; i < TR_ARRAY_LEN(strs); i++) {
        json_t *v = json_object_get(lin, strs[i]);
        if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 256)) {
            snprintf(msg, size, "'lineage.%s' must be a string of at most 256 bytes", strs[i]);
            return false;
        }
    }
    json_t *p = json_object_get(lin, "parent");
    if (p && !json_is_null(p) &&
        !(json_is_integer(p) && json_integer_value(p) >= 1 && json_integer_value(p) <= UINT32_MAX)) {
        snprintf(msg, size, "'lineage.parent' must be a version number >= 1");
        return false;
    }
    return true;
}

void h_model_version_post(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX];
    /* A new name is the caller's; another tenant's is 409 (tenant_claim). */
    if (!model_param_as(s, req, name, sizeof(name), false) || !fb_writable(s, req) ||
        !tenant_claim(s, req, TENANT_MODEL, name))
        return;
    json_t *b = fb_body(req);
    if (b == NULL)
        return;
    char msg[300] = "";
    const char *code = "invalid_argument";
    json_t *artifact = json_object_get(b, "artifact");
    json_t *metrics = json_object_get(b, "metrics");
    json_t *tags = json_object_get(b, "tags");
    json_t *lin = json_object_get(b, "lineage");
    json_t *user = json_object_get(b, "user");
    size_t art_len = artifact ? json_dumpb(artifact, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY) : 0;
    if (artifact == NULL || json_is_null(artifact)) {
        snprintf(msg, sizeof(msg), "'artifact' is required: a URI, or an inline value");
    } else if (art_len > FB_ARTIFACT_MAX) {
        snprintf(msg, sizeof(msg), "'artifact' is %zu bytes inline, over the limit of %u; "
                 "store it elsewhere and give its URI", art_len, FB_ARTIFACT_MAX);
        code = "too_large";
    } else if (metrics && !json_is_object(metrics) && !json_is_null(metrics)) {
        snprintf(msg, sizeof(msg), "'metrics' must be an object of numbers");
    } else if (tags && !json_is_object(tags) && !json_is_null(tags)) {
        snprintf(msg, sizeof(msg), "'tags' must be an object");
    } else if (user && !json_is_null(user) && (!json_is_string(user) ||
                                               json_string_length(user) > 256)) {
        snprintf(msg, sizeof(msg), "'user' must be a string");
    } else if (json_dumpb(b, NULL, 0, JSON_COMPACT) > FB_ARTIFACT_MAX + FB_TEXT_MAX) {
        snprintf(msg, sizeof(msg), "the version is over %u bytes", FB_ARTIFACT_MAX + FB_TEXT_MAX);
        code = "too_large";
    } else {
        lineage_ok(lin, msg, sizeof(msg));
    }
    if (msg[0] != '\0') {
        tr_http_respond_error(req, 400, code, msg);
        json_decref(b);
        return;
    }
    int rc = 0;
    struct fb_model *m = fb_model_get(s, name, &rc);
    uint32_t parent = (uint32_t)json_integer_value(json_object_get(lin, "parent"));
    if (m == NULL || parent > m->latest) {
        if (m == NULL) {
            fb_state_error(req, rc);
        } else {
            snprintf(msg, sizeof(msg), "no version %u of model '%s' to descend from", parent,
                     name);
            tr_http_respond_error(req, 404, "not_found", msg);
            fb_model_forget_unknown(s, m);
        }
        json_decref(b);
        return;
    }
    double now = tr_now();
    uint32_t version = m->latest + 1;
    struct fb_write *w = fb_write_new(s, FB_W_VERSION);
    bool ok = w != NULL;
    if (ok) {
        struct tr_model_version_rec *r = &w->rec.version;
        r->name = fb_hold(w, "name", name);
        r->version = version;
        r->artifact_json = fb_hold_json(w, "artifact", artifact);
        r->metrics_json = json_is_object(metrics) ? fb_hold_json(w, "metrics", metrics) : NULL;
        r->tags_json = json_is_object(tags) ? fb_hold_json(w, "tags", tags) : NULL;
        r->run_id = fb_hold(w, "run_id", json_string_value(json_object_get(lin, "run_id")));
        r->data_digest =
            fb_hold(w, "data_digest", json_string_value(json_object_get(lin, "data_digest")));
        r->pipeline = fb_hold(w, "pipeline", json_string_value(json_object_get(lin, "pipeline")));
        r->parent = parent;
        r->user = fb_hold(w, "user", json_string_value(user));
        r->created_at = now;
        ok = r->name && r->artifact_json && (r->metrics_json || !json_is_object(metrics)) &&
             (r->tags_json || !json_is_object(tags));
        if (!ok)
            fb_write_drop_last(s);
        else if (!(ok = head_write(s, m, version, m->moves, now)))
            fb_write_drop_last(s);
    }
    json_decref(b);
    if (!ok) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    if (!m->exists)
        m->created_at = now;
    m->exists = true;
    m->latest = version;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "version", json_integer(version));
    char obj[FB_NAME_MAX + 16];
    snprintf(obj, sizeof(obj), "%s/%u", name, (unsigned)version);
    tr_audit_record(s, req, "model.register", obj);
    fb_queue_reply(s, req, 201, o);
}

static json_t *version_json(const struct tr_model_version_rec *r)
{
    json_t *lin = json_object();
    json_object_set_new(lin, "run_id", json_str_or_null(r->run_id));
    json_object_set_new(lin, "data_digest", json_str_or_null(r->data_digest));
    json_object_set_new(lin, "pipeline", json_str_or_null(r->pipeline));
    json_object_set_new(lin, "parent", r->parent ? json_integer(r->parent) : json_null());
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    json_object_set_new(o, "version", json_integer(r->version));
    json_object_set_new(o, "artifact", fb_json_or_null(r->artifact_json));
    json_object_set_new(o, "metrics", r->metrics_json ? fb_json_or_null(r->metrics_json)
                                                      : json_object());
    json_object_set_new(o, "lineage", lin);
    json_object_set_new(o, "tags", r->tags_json ? fb_json_or_null(r->tags_json) : json_object());
    json_object_set_new(o, "user", json_str_or_null(r->user));
    json_object_set_new(o, "created_at", json_time(r->created_at));
    return o;
}

static int version_into_array(const struct tr_model_version_rec *r, void *arg)
{
    json_array_append_new(arg, version_json(r));
    return 0;
}

static int version_into(const struct tr_model_version_rec *r, void *arg)
{
    *(json_t **)arg = version_json(r);
    return 0;
}

static int alias_into(const struct tr_model_alias_rec *r, void *arg)
{
    json_object_set_new(arg, r->alias, json_integer(r->version));
    return 0;
}

static json_t *model_json(const struct tr_model_rec *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    json_object_set_new(o, "latest_version", r->latest ? json_integer(r->latest) : json_null());
    json_object_set_new(o, "created_at", json_time(r->created_at));
    json_object_set_new(o, "updated_at", json_time(r->updated_at));
    return o;
}

struct models_ctx
{
    struct api *s;
    const struct tr_http_req *req;
    json_t *arr;
};

static int model_into_array(const struct tr_model_rec *r, void *arg)
{
    struct models_ctx *c = arg;
    if (tenant_sees(c->s, c->req, TENANT_MODEL, r->name))
        json_array_append_new(c->arr, model_json(r));
    return 0;
}

static int model_into(const struct tr_model_rec *r, void *arg)
{
    *(json_t **)arg = model_json(r);
    return 0;
}

/* Sets "aliases" of the model object o; 0 or an error. */
static int add_aliases(struct api *s, json_t *o)
{
    json_t *aliases = json_object();
    int rc = tr_state_list_model_aliases(s->state, json_string_value(json_object_get(o, "name")),
                                         alias_into, aliases);
    json_object_set_new(o, "aliases", aliases);
    return rc;
}

void h_models_list(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    json_t *arr = json_array();
    struct models_ctx c = {s, req, arr};
    int rc = tr_state_list_models(s->state, model_into_array, &c);
    for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++)
        rc = add_aliases(s, json_array_get(arr, i));
    if (rc < 0) {
        json_decref(arr);
        fb_state_error(req, rc);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "models", arr);
    fb_respond(req, 200, o);
}

void h_model_get(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX];
    if (!model_param(s, req, name, sizeof(name)))
        return;
    json_t *o = NULL;
    int rc = tr_state_get_model(s->state, name, model_into, &o);
    json_t *versions = json_array();
    if (rc == 0)
        rc = add_aliases(s, o);
    if (rc == 0)
        rc = tr_state_list_model_versions(s->state, name, version_into_array, versions);
    if (rc < 0) {
        json_decref(o);
        json_decref(versions);
        if (rc == TR_ENOENT)
            not_found(req, "model", name);
        else
            fb_state_error(req, rc);
        return;
    }
    json_object_set_new(o, "versions", versions);
    fb_respond(req, 200, o);
}

static int alias_version(const struct tr_model_alias_rec *r, void *arg)
{
    *(uint32_t *)arg = r->version;
    return 0;
}

/* GET .../versions/{v}: a number, or an alias ("production"). */
void h_model_version_get(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX], v[FB_NAME_MAX];
    if (!model_param(s, req, name, sizeof(name)) || !fb_param(req, "v", v, sizeof(v), "version"))
        return;
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    uint32_t version = 0;
    int rc = 0;
    if (v[0] >= '1' && v[0] <= '9' && *end == '\0' && n <= UINT32_MAX)
        version = (uint32_t)n;
    else
        rc = tr_state_get_model_alias(s->state, name, v, alias_version, &version);
    json_t *o = NULL;
    if (rc == 0)
        rc = version ? tr_state_get_model_version(s->state, name, version, version_into, &o)
                     : TR_ENOENT;
    if (rc < 0) {
        if (rc != TR_ENOENT) {
            fb_state_error(req, rc);
            return;
        }
        char what[FB_NAME_MAX * 2 + 32];
        snprintf(what, sizeof(what), "%s@%s", name, v);
        not_found(req, "model version", what);
        return;
    }
    json_t *aliases = json_object();
    rc = tr_state_list_model_aliases(s->state, name, alias_into, aliases);
    json_t *mine = json_array();
    const char *k;
    json_t *val;
    json_object_foreach(aliases, k, val) {
        if ((uint32_t)json_integer_value(val) == version)
            json_array_append_new(mine, json_string(k));
    }
    json_decref(aliases);
    json_object_set_new(o, "aliases", mine);
    if (rc < 0) {
        json_decref(o);
        fb_state_error(req, rc);
        return;
    }
    fb_respond(req, 200, o);
}

/* ====================================================================== */
/* Aliases and their history                                               */
/* ====================================================================== */

/* Moves alias to version (0: removes it), with its history entry and the new head. */
static void move_alias(struct api *s, struct tr_http_req *req, const char *name,
                       const char *alias, uint32_t version, const char *user, const char *reason)
{
    int rc = 0;
    struct fb_model *m = fb_model_get(s, name, &rc);
    if (m == NULL) {
        fb_state_error(req, rc);
        return;
    }
    if (!m->exists) {
        fb_model_forget_unknown(s, m);
        not_found(req, "model", name);
        return;
    }
    struct fb_alias *a = fb_model_alias(m, alias);
    uint32_t from = a ? a->version : 0;
    char msg[300];
    if (version > m->latest) {
        snprintf(msg, sizeof(msg), "no version %u of model '%s' (latest: %u)", version, name,
                 m->latest);
        tr_http_respond_error(req, 404, "not_found", msg);
        return;
    }
    if (version == 0 && from == 0) {
        snprintf(msg, sizeof(msg), "%s@%s", name, alias);
        not_found(req, "alias", msg);
        return;
    }
    double now = tr_now();
    size_t before = s->fb->n_writes;
    struct fb_write *w = fb_write_new(s, FB_W_ALIAS);
    bool ok = w != NULL;
    if (ok) {
        w->rec.alias = (struct tr_model_alias_rec){
            .name = fb_hold(w, "name", name), .alias = fb_hold(w, "alias", alias),
            .version = version, .user = fb_hold(w, "user", user),
            .reason = fb_hold(w, "reason", reason), .at = now};
        ok = w->rec.alias.name && w->rec.alias.alias;
    }
    if (ok && (ok = (w = fb_write_new(s, FB_W_MOVE)) != NULL)) {
        w->rec.move = (struct tr_alias_move_rec){
            .name = fb_hold(w, "name", name), .seq = m->moves + 1,
            .alias = fb_hold(w, "alias", alias), .from = from, .to = version,
            .user = fb_hold(w, "user", user), .reason = fb_hold(w, "reason", reason), .at = now};
        ok = w->rec.move.name && w->rec.move.alias;
    }
    if (ok)
        ok = head_write(s, m, m->latest, m->moves + 1, now);
    if (ok)
        ok = fb_model_set_alias(m, alias, version) == 0;
    if (!ok) {
        while (s->fb->n_writes > before)
            fb_write_drop_last(s);
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    m->moves++;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "alias", json_string(alias));
    json_object_set_new(o, "version", version ? json_integer(version) : json_null());
    json_object_set_new(o, "from", from ? json_integer(from) : json_null());
    char obj[2 * FB_NAME_MAX + 2], detail[64];
    snprintf(obj, sizeof(obj), "%s@%s", name, alias);
    snprintf(detail, sizeof(detail), "{\"from\":%u,\"to\":%u}", from, version);
    tr_audit_record_detail(s, req, version ? "alias.move" : "alias.delete", obj, detail);
    fb_queue_reply(s, req, 200, o);
}

static bool alias_params(struct api *s, struct tr_http_req *req, char *name, char *alias)
{
    if (!model_param(s, req, name, FB_NAME_MAX) || !fb_param(req, "alias", alias, FB_NAME_MAX, "alias"))
        return false;
    if (!fb_name_ok(alias)) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "an alias is 1..127 of A-Z a-z 0-9 . _ -, not only digits");
        return false;
    }
    return true;
}

/* user and reason of a body; false after answering 400. */
static bool who_why(struct tr_http_req *req, json_t *b, const char **user, const char **reason)
{
    json_t *u = json_object_get(b, "user"), *r = json_object_get(b, "reason");
    *user = json_string_value(u);
    *reason = json_string_value(r);
    if ((u && !json_is_null(u) && (!*user || strlen(*user) > 256)) ||
        (r && !json_is_null(r) && (!*reason || strlen(*reason) > 4096))) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "'user' (at most 256 bytes) and 'reason' (at most 4096) are strings");
        return false;
    }
    return true;
}

void h_model_alias_put(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX], alias[FB_NAME_MAX];
    if (!alias_params(s, req, name, alias) || !fb_writable(s, req))
        return;
    json_t *b = fb_body(req);
    if (b == NULL)
        return;
    json_t *v = json_object_get(b, "version");
    const char *user, *reason;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > UINT32_MAX) {
        tr_http_respond_error(req, 400, "invalid_argument", "'version' must be a version >= 1");
    } else if (who_why(req, b, &user, &reason)) {
        move_alias(s, req, name, alias, (uint32_t)json_integer_value(v), user, reason);
    }
    json_decref(b);
}

void h_model_alias_delete(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX], alias[FB_NAME_MAX];
    if (!alias_params(s, req, name, alias) || !fb_writable(s, req))
        return;
    /* A body is optional: who removed it, and why. */
    json_t *b = tr_http_req_body(req).len ? fb_body(req) : json_object();
    if (b == NULL)
        return;
    const char *user, *reason;
    if (who_why(req, b, &user, &reason))
        move_alias(s, req, name, alias, 0, user, reason);
    json_decref(b);
}

static int move_into(const struct tr_alias_move_rec *r, void *arg)
{
    json_t *o = json_object();
    json_object_set_new(o, "alias", json_string(r->alias));
    json_object_set_new(o, "from", r->from ? json_integer(r->from) : json_null());
    json_object_set_new(o, "to", r->to ? json_integer(r->to) : json_null());
    json_object_set_new(o, "user", json_str_or_null(r->user));
    json_object_set_new(o, "reason", json_str_or_null(r->reason));
    json_object_set_new(o, "at", json_time(r->at));
    json_array_append_new(arg, o);
    return 0;
}

void h_model_history(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX];
    if (!model_param(s, req, name, sizeof(name)))
        return;
    json_t *m = NULL;
    int rc = tr_state_get_model(s->state, name, model_into, &m);
    json_decref(m);
    json_t *arr = json_array();
    if (rc == 0)
        rc = tr_state_list_alias_moves(s->state, name, move_into, arr);
    if (rc < 0) {
        json_decref(arr);
        if (rc == TR_ENOENT)
            not_found(req, "model", name);
        else
            fb_state_error(req, rc);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "history", arr);
    fb_respond(req, 200, o);
}
