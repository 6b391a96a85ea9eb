/*
 * api_feedback.c - feedback, statistics and the labelling queue over HTTP
 * (docs/feedback.md, docs/api.md), plus the helpers api_models.c shares.
 *
 * A write is checked whole before anything changes, so a refused call
 * leaves nothing behind; then it becomes a write of the turn (feedback.c)
 * and its answer waits for the commit that makes it durable.
 */
#include "scheduler/feedback_int.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"

#include <math.h>

#include "lib/base/alloc.h"

/* ====================================================================== */
/* Helpers                                                                 */
/* ====================================================================== */

static char *dump(json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(body);
    char *copy = text ? tr_strdup(text) : NULL;
    free(text);
    return copy;
}

void fb_respond(struct tr_http_req *req, int status, json_t *body)
{
    char *text = dump(body);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, status, "application/json", text, strlen(text));
    tr_free(text);
}

void fb_queue_reply(struct api *s, struct tr_http_req *req, int status, json_t *body)
{
    batch_add_reply_text(s->batch, req, status, dump(body));
}

/* Values a feedback or model body may hold: its texts are 64 KiB at most. */
#define FB_BODY_VALUES_MAX 100000

json_t *fb_body(struct tr_http_req *req)
{
    struct tr_str body = tr_http_req_body(req);
    /* Refused before jansson spends the loop's time building them all. */
    if (json_count_values(body.p, body.len, FB_BODY_VALUES_MAX) > FB_BODY_VALUES_MAX) {
        tr_http_respond_error(req, 400, "too_large", "the body holds more than 100000 values");
        return NULL;
    }
    return api_json_object(req);
}

bool fb_param(struct tr_http_req *req, const char *name, char *out, size_t size, const char *what)
{
    struct tr_str v = tr_http_req_param(req, name);
    if (v.len == 0 || v.len >= size || memchr(v.p, '\0', v.len) != NULL) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no such %s", what);
        tr_http_respond_error(req, 404, "not_found", msg);
        return false;
    }
    memcpy(out, v.p, v.len);
    out[v.len] = '\0';
    return true;
}

bool fb_limit(struct tr_http_req *req, uint32_t *limit)
{
    char v[32];
    *limit = FB_LIST_DEFAULT;
    if (!tr_http_req_query(req, "limit", v, sizeof(v)))
        return true;
    double n;
    if (!query_decimal(v, false, &n) || n < 1) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "'limit' must be a decimal number >= 1");
        return false;
    }
    *limit = (uint32_t)TR_MIN(n, (double)FB_LIST_MAX);
    return true;
}

bool fb_writable(struct api *s, struct tr_http_req *req)
{
    if (!api_writes_paused(s))
        return true;
    tr_http_respond_error(req, 503, "unavailable",
                          "the state backend is not taking writes; try again");
    return false;
}

void fb_state_error(struct tr_http_req *req, int rc)
{
    if (rc == TR_ENOMEM)
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
    else
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
}

json_t *fb_json_or_null(const char *text)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

bool fb_name_ok(const char *s)
{
    size_t n = strlen(s);
    bool digits = true;
    if (n == 0 || n >= FB_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool digit = c >= '0' && c <= '9';
        digits &= digit;
        if (!digit && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '.' &&
            c != '_' && c != '-')
            return false;
    }
    return !digits;
}

/* An optional string member of at most max bytes; false (and *msg, *code) otherwise. */
static bool opt_str(json_t *b, const char *k, size_t max, const char **out, char *msg,
                    size_t size, const char **code)
{
    json_t *v = json_object_get(b, k);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        snprintf(msg, size, "'%s' must be a string", k);
        *code = "invalid_argument";
        return false;
    }
    if (json_string_length(v) > max) {
        snprintf(msg, size, "'%s' is %zu bytes, over the limit of %zu", k, json_string_length(v),
                 max);
        *code = "too_large";
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* The pipeline of a run, in memory or in the state: 0, TR_ENOENT or an error. */
static int copy_pipeline(const struct tr_run_rec *r, void *arg)
{
    snprintf(arg, FB_NAME_MAX * 2, "%s", r->pipeline);
    return 0;
}

static int run_pipeline(struct api *s, const char *run_id, char out[FB_NAME_MAX * 2])
{
    struct run *r = run_find(s->core, run_id);
    if (r != NULL) {
        snprintf(out, FB_NAME_MAX * 2, "%s", r->pipe->def->name);
        return 0;
    }
    /* Feedback comes long after its run left memory; a run read once (with
     * etcd a round trip that blocks the loop) is remembered. */
    const char *known = fb_run_pipeline_cached(s, run_id);
    if (known != NULL) {
        snprintf(out, FB_NAME_MAX * 2, "%s", known);
        return 0;
    }
    int rc = tr_state_get_run(s->state, run_id, copy_pipeline, out);
    if (rc == 0)
        fb_run_pipeline_remember(s, run_id, out);
    return rc;
}

static void run_error(struct tr_http_req *req, const char *run_id, int rc)
{
    if (rc != TR_ENOENT) {
        fb_state_error(req, rc);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof(msg), "no run '%.100s'", run_id);
    tr_http_respond_error(req, 404, "not_found", msg);
}

/* ====================================================================== */
/* Feedback                                                                */
/* ====================================================================== */

/* -1 or 1 (thumbs), 1..5 (stars); with "scale" the score must be of that scale. */
static bool score_of(json_t *b, int *score, bool *negative, char *msg, size_t size)
{
    json_t *v = json_object_get(b, "score");
    json_t *scale = json_object_get(b, "scale");
    const char *sc = json_string_value(scale);
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    bool thumbs = sc && strcmp(sc, "thumbs") == 0, stars = sc && strcmp(sc, "stars") == 0;
    bool ok = d == floor(d) && (d == -1 || (d >= 1 && d <= 5)) && (scale == NULL || thumbs || stars) &&
              (!thumbs || d == -1 || d == 1) && (!stars || d >= 1);
    if (!ok) {
        char *t = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
        snprintf(msg, size, "'score' must be -1 or 1 (thumbs) or 1..5 (stars)%s%s%s, not %s",
                 sc ? " on the scale '" : "", sc ? sc : "", sc ? "'" : "", t ? t : "none");
        free(t);
        return false;
    }
    *score = (int)d;
    /* 1 alone is a thumb up; 1 on the stars scale is one star. */
    *negative = d == -1 || (d == 2) || (d == 1 && stars);
    return true;
}

void h_feedback_post(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    if (!fb_writable(s, req))
        return;
    json_t *b = fb_body(req);
    if (b == NULL)
        return;
    char msg[300] = "";
    const char *code = "invalid_argument";
    const char *run_id = json_string_value(json_object_get(b, "run_id"));
    json_t *index = json_object_get(b, "index");
    const char *task = NULL, *label = NULL, *correction = NULL, *comment = NULL, *user = NULL;
    int score = 0;
    bool negative = false;
    if (run_id == NULL || run_id[0] == '\0' || strlen(run_id) > 64) {
        snprintf(msg, sizeof(msg), "'run_id' is required: the run the feedback is about");
    } else if (!score_of(b, &score, &negative, msg, sizeof(msg))) {
        code = "invalid_score";
    } else if (index && !(json_is_integer(index) && json_integer_value(index) >= 0 &&
                          json_integer_value(index) <= UINT32_MAX)) {
        snprintf(msg, sizeof(msg), "'index' must be a map index >= 0");
    } else if (!opt_str(b, "task", FB_NAME_MAX, &task, msg, sizeof(msg), &code) ||
               !opt_str(b, "label", 1024, &label, msg, sizeof(msg), &code) ||
               !opt_str(b, "correction", FB_TEXT_MAX, &correction, msg, sizeof(msg), &code) ||
               !opt_str(b, "comment", FB_TEXT_MAX, &comment, msg, sizeof(msg), &code) ||
               !opt_str(b, "user", 256, &user, msg, sizeof(msg), &code)) {
        /* msg and code are set */
    }
    if (msg[0] != '\0') {
        tr_http_respond_error(req, 400, code, msg);
        json_decref(b);
        return;
    }
    char pipeline[FB_NAME_MAX * 2];
    int rc = run_pipeline(s, run_id, pipeline);
    if (rc == 0 && !tenant_sees(s, req, TENANT_PIPELINE, pipeline))
        rc = TR_ENOENT; /* another tenant's run: as if there were none */
    struct fb_stats *st = rc == 0 ? fb_stats_get(s, pipeline, &rc) : NULL;
    if (rc < 0) {
        run_error(req, run_id, rc);
        json_decref(b);
        return;
    }
    char id[80];
    fb_new_id(s, "fb", id, sizeof(id));
    double now = tr_now();
    struct fb_write *w = fb_write_new(s, FB_W_FEEDBACK);
    bool ok = w != NULL;
    if (ok) {
        struct tr_feedback_rec *r = &w->rec.fb;
        r->id = fb_hold(w, "id", id);
        r->run_id = fb_hold(w, "run_id", run_id);
        r->pipeline = fb_hold(w, "pipeline", pipeline);
        r->task = fb_hold(w, "task", task);
        r->index = index ? (uint32_t)json_integer_value(index) : 0;
        r->score = score;
        r->label = fb_hold(w, "label", label);
        r->correction = fb_hold(w, "correction", correction);
        r->comment = fb_hold(w, "comment", comment);
        r->user = fb_hold(w, "user", user);
        r->created_at = now;
        ok = r->id && r->run_id && r->pipeline && (r->task || !task) && (r->label || !label) &&
             (r->correction || !correction) && (r->comment || !comment) && (r->user || !user);
        if (!ok)
            fb_write_drop_last(s);
    }
    json_decref(b);
    if (!ok) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    fb_stats_add(st, score, negative, now);
    obs_feedback(s->core->obs, st->pipeline, st->count, st->negative);
    json_t *o = json_object();
    json_object_set_new(o, "feedback_id", json_string(id));
    tr_audit_record(s, req, "feedback.create", id);
    fb_queue_reply(s, req, 201, o);
}

/* A listing filtered by tenant: what the callbacks see. */
struct seen_ctx
{
    struct api *api;
    const struct tr_http_req *req;
    json_t *arr;
    uint32_t limit; /* 0: all */
};

/* Whether a listed record of pipeline is shown; *stop when enough are. */
static bool seen(struct seen_ctx *c, const char *pipeline, int *stop)
{
    if (c->limit && json_array_size(c->arr) >= c->limit) {
        *stop = 1;
        return false;
    }
    return tenant_sees(c->api, c->req, TENANT_PIPELINE, pipeline);
}

/* The limit to ask the state for: with tenants, others' records are skipped
 * by the callback, which stops at the caller's limit. */
static uint32_t state_limit(struct api *s, uint32_t limit)
{
    return auth_enabled(s->auth) ? 0 : limit;
}

static int feedback_json(const struct tr_feedback_rec *r, void *arg)
{
    struct seen_ctx *c = arg;
    int stop = 0;
    if (!seen(c, r->pipeline, &stop))
        return stop;
    json_t *o = json_object();
    json_object_set_new(o, "feedback_id", json_string(r->id));
    json_object_set_new(o, "run_id", json_string(r->run_id));
    json_object_set_new(o, "pipeline", json_string(r->pipeline));
    json_object_set_new(o, "task", json_str_or_null(r->task));
    json_object_set_new(o, "index", json_integer(r->index));
    json_object_set_new(o, "score", json_integer(r->score));
    json_object_set_new(o, "label", json_str_or_null(r->label));
    json_object_set_new(o, "correction", json_str_or_null(r->correction));
    json_object_set_new(o, "comment", json_str_or_null(r->comment));
    json_object_set_new(o, "user", json_str_or_null(r->user));
    json_object_set_new(o, "created_at", json_time(r->created_at));
    json_array_append_new(c->arr, o);
    return 0;
}

void h_feedback_list(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char pipeline[FB_NAME_MAX * 2], run_id[80];
    uint32_t limit;
    if (!fb_limit(req, &limit))
        return;
    bool by_pipe = tr_http_req_query(req, "pipeline", pipeline, sizeof(pipeline));
    bool by_run = tr_http_req_query(req, "run_id", run_id, sizeof(run_id));
    json_t *arr = json_array();
    struct seen_ctx c = {s, req, arr, limit};
    int rc = tr_state_list_feedback(s->state, by_pipe ? pipeline : NULL, by_run ? run_id : NULL,
                                    state_limit(s, limit), feedback_json, &c);
    if (rc > 0)
        rc = 0;
    if (rc < 0) {
        json_decref(arr);
        fb_state_error(req, rc);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "feedback", arr);
    fb_respond(req, 200, o);
}

void h_pipeline_stats(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char name[FB_NAME_MAX * 2];
    if (!fb_param(req, "name", name, sizeof(name), "pipeline"))
        return;
    struct fb_stats st;
    /* Another tenant's pipeline reads as one nobody has given feedback on. */
    int rc = tenant_sees(s, req, TENANT_PIPELINE, name)
                 ? fb_stats_read(s, name, &st)
                 : (st = (struct fb_stats){.pipeline = name}, 0);
    if (rc < 0) {
        fb_state_error(req, rc);
        return;
    }
    json_t *o = fb_stats_json(&st, tr_now());
    /* Changes not durable yet are shown once they are. */
    if (st.dirty)
        fb_queue_reply(s, req, 200, o);
    else
        fb_respond(req, 200, o);
}

/* ====================================================================== */
/* The labelling queue                                                     */
/* ====================================================================== */

/* A JSON value of at most FB_TEXT_MAX bytes as text; false (msg) otherwise. */
static bool value_ok(json_t *v, const char *k, char *msg, size_t size, const char **code)
{
    if (v == NULL || json_is_null(v)) {
        snprintf(msg, size, "'%s' is required", k);
        return false;
    }
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n > FB_TEXT_MAX) {
        snprintf(msg, size, "'%s' is %zu bytes of JSON, over the limit of %u", k, n, FB_TEXT_MAX);
        *code = "too_large";
        return false;
    }
    return true;
}

void h_labels_post(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    if (!fb_writable(s, req))
        return;
    json_t *b = fb_body(req);
    if (b == NULL)
        return;
    char msg[300] = "";
    const char *code = "invalid_argument";
    const char *pipe_in = NULL, *run_id = NULL, *task = NULL;
    json_t *item = json_object_get(b, "item");
    json_t *unc = json_object_get(b, "uncertainty");
    if (!opt_str(b, "pipeline", FB_NAME_MAX, &pipe_in, msg, sizeof(msg), &code) ||
        !opt_str(b, "run_id", 64, &run_id, msg, sizeof(msg), &code) ||
        !opt_str(b, "task", FB_NAME_MAX, &task, msg, sizeof(msg), &code) ||
        !value_ok(item, "item", msg, sizeof(msg), &code)) {
        /* msg and code are set */
    } else if (!json_is_number(unc) || !isfinite(json_number_value(unc))) {
        snprintf(msg, sizeof(msg), "'uncertainty' must be a number (higher: labelled sooner)");
    } else if (pipe_in == NULL && run_id == NULL) {
        snprintf(msg, sizeof(msg), "give 'pipeline' or 'run_id'");
    }
    char pipeline[FB_NAME_MAX * 2];
    if (msg[0] == '\0' && run_id != NULL) {
        int rc = run_pipeline(s, run_id, pipeline);
        if (rc == 0 && !tenant_sees(s, req, TENANT_PIPELINE, pipeline))
            rc = TR_ENOENT; /* another tenant's run: as if there were none */
        if (rc < 0) {
            run_error(req, run_id, rc);
            json_decref(b);
            return;
        }
        if (pipe_in != NULL && strcmp(pipe_in, pipeline) != 0)
            snprintf(msg, sizeof(msg), "run '%s' is of pipeline '%s', not '%s'", run_id, pipeline,
                     pipe_in);
    } else if (msg[0] == '\0') {
        snprintf(pipeline, sizeof(pipeline), "%s", pipe_in);
    }
    if (msg[0] != '\0') {
        tr_http_respond_error(req, 400, code, msg);
        json_decref(b);
        return;
    }
    if (!tenant_claim(s, req, TENANT_PIPELINE, pipeline)) {
        json_decref(b);
        return; /* answered: another tenant's pipeline */
    }
    int rc = 0;
    struct fb_stats *st = fb_stats_get(s, pipeline, &rc);
    if (st == NULL) {
        fb_state_error(req, rc);
        json_decref(b);
        return;
    }
    char id[80];
    fb_new_id(s, "lb", id, sizeof(id));
    struct fb_write *w = fb_write_new(s, FB_W_LABEL);
    bool ok = w != NULL;
    if (ok) {
        struct tr_label_rec *r = &w->rec.label;
        r->id = fb_hold(w, "id", id);
        r->pipeline = fb_hold(w, "pipeline", pipeline);
        r->run_id = fb_hold(w, "run_id", run_id);
        r->task = fb_hold(w, "task", task);
        r->item_json = fb_hold_json(w, "item", item);
        r->uncertainty = json_number_value(unc);
        r->state = "queued";
        r->created_at = tr_now();
        ok = r->id && r->pipeline && r->item_json && (r->run_id || !run_id) &&
             (r->task || !task) &&
             tr_hmap_put(&s->fb->labels, r->id, strlen(r->id),
                         (void *)(uintptr_t)s->fb->n_writes) == 0;
        if (!ok)
            fb_write_drop_last(s);
    }
    json_decref(b);
    if (!ok) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    st->queued++;
    st->dirty = true;
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_string(id));
    json_object_set_new(o, "state", json_string("queued"));
    tr_audit_record(s, req, "label.create", id);
    fb_queue_reply(s, req, 201, o);
}

/* Copies a durable label item into a new write. */
static int label_into_write(const struct tr_label_rec *r, void *arg)
{
    struct fb_write *w = arg;
    struct tr_label_rec *x = &w->rec.label;
    *x = *r;
    x->id = fb_hold(w, "id", r->id);
    x->pipeline = fb_hold(w, "pipeline", r->pipeline);
    x->run_id = fb_hold(w, "run_id", r->run_id);
    x->task = fb_hold(w, "task", r->task);
    x->item_json = fb_hold(w, "item", r->item_json);
    x->state = strcmp(r->state, "labelled") == 0 ? "labelled" : "queued";
    x->label_json = x->user = NULL;
    return x->id && x->pipeline && x->item_json ? 0 : TR_ENOMEM;
}

void h_label_post(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char id[128];
    if (!fb_param(req, "id", id, sizeof(id), "label item") || !fb_writable(s, req))
        return;
    json_t *b = fb_body(req);
    if (b == NULL)
        return;
    char msg[300] = "";
    const char *code = "invalid_argument", *user;
    json_t *label = json_object_get(b, "label");
    if (!value_ok(label, "label", msg, sizeof(msg), &code) ||
        !opt_str(b, "user", 256, &user, msg, sizeof(msg), &code)) {
        tr_http_respond_error(req, 400, code, msg);
        json_decref(b);
        return;
    }
    /* An item of this turn is labelled in its own write; a durable one gets a new write. */
    uintptr_t at = (uintptr_t)tr_hmap_gets(&s->fb->labels, id);
    struct fb_write *w = at ? &s->fb->writes[at - 1] : fb_write_new(s, FB_W_LABEL);
    int rc = w ? 0 : TR_ENOMEM;
    if (rc == 0 && !at)
        rc = tr_state_get_label(s->state, id, label_into_write, w);
    if (rc == 0 && !tenant_sees(s, req, TENANT_PIPELINE, w->rec.label.pipeline))
        rc = TR_ENOENT; /* another tenant's item: as if there were none */
    if (rc == 0 && strcmp(w->rec.label.state, "labelled") == 0)
        rc = TR_ECONFLICT;
    struct fb_stats *st = NULL;
    if (rc == 0)
        st = fb_stats_get(s, w->rec.label.pipeline, &rc);
    struct tr_label_rec *r = w ? &w->rec.label : NULL;
    const char *label_json = NULL, *user_h = NULL;
    if (rc == 0) {
        label_json = fb_hold_json(w, "label", label);
        user_h = fb_hold(w, "user", user);
        if (label_json == NULL || (user && user_h == NULL))
            rc = TR_ENOMEM;
    }
    if (rc == 0 && !at &&
        tr_hmap_put(&s->fb->labels, r->id, strlen(r->id), (void *)(uintptr_t)s->fb->n_writes) < 0)
        rc = TR_ENOMEM;
    if (rc < 0) {
        if (w && !at)
            fb_write_drop_last(s);
        json_decref(b);
        if (rc == TR_ENOENT) {
            snprintf(msg, sizeof(msg), "no label item '%.100s'", id);
            tr_http_respond_error(req, 404, "not_found", msg);
        } else if (rc == TR_ECONFLICT) {
            snprintf(msg, sizeof(msg), "label item '%.100s' is labelled already", id);
            tr_http_respond_error(req, 409, "conflict", msg);
        } else {
            fb_state_error(req, rc);
        }
        return;
    }
    r->state = "labelled";
    r->label_json = label_json;
    r->user = user_h;
    r->labelled_at = tr_now();
    if (st->queued > 0)
        st->queued--;
    st->labelled++;
    st->dirty = true;
    json_decref(b);
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_string(id));
    json_object_set_new(o, "state", json_string("labelled"));
    tr_audit_record(s, req, "label.set", id);
    fb_queue_reply(s, req, 200, o);
}

static int label_json(const struct tr_label_rec *r, void *arg)
{
    struct seen_ctx *c = arg;
    int stop = 0;
    if (!seen(c, r->pipeline, &stop))
        return stop;
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_string(r->id));
    json_object_set_new(o, "pipeline", json_string(r->pipeline));
    json_object_set_new(o, "run_id", json_str_or_null(r->run_id));
    json_object_set_new(o, "task", json_str_or_null(r->task));
    json_object_set_new(o, "uncertainty", json_real(r->uncertainty));
    json_object_set_new(o, "item", fb_json_or_null(r->item_json));
    json_object_set_new(o, "state", json_string(r->state));
    json_object_set_new(o, "label", fb_json_or_null(r->label_json));
    json_object_set_new(o, "user", json_str_or_null(r->user));
    json_object_set_new(o, "created_at", json_time(r->created_at));
    json_object_set_new(o, "labelled_at", json_time(r->labelled_at));
    json_array_append_new(c->arr, o);
    return 0;
}

void h_labels_list(struct tr_http_req *req, void *arg)
{
    struct api *s = arg;
    char pipeline[FB_NAME_MAX * 2], state[32] = "queued";
    uint32_t limit;
    if (!fb_limit(req, &limit))
        return;
    bool by_pipe = tr_http_req_query(req, "pipeline", pipeline, sizeof(pipeline));
    if (tr_http_req_query(req, "state", state, sizeof(state)) && strcmp(state, "queued") != 0 &&
        strcmp(state, "labelled") != 0 && strcmp(state, "all") != 0) {
        tr_http_respond_error(req, 400, "invalid_argument",
                              "'state' must be queued, labelled or all");
        return;
    }
    json_t *arr = json_array();
    struct seen_ctx c = {s, req, arr, limit};
    int rc = tr_state_list_labels(s->state, by_pipe ? pipeline : NULL,
                                  strcmp(state, "all") == 0 ? NULL : state,
                                  state_limit(s, limit), label_json, &c);
    if (rc > 0)
        rc = 0;
    if (rc < 0) {
        json_decref(arr);
        fb_state_error(req, rc);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "items", arr);
    fb_respond(req, 200, o);
}
