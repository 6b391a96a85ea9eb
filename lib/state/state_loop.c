/*
 * state_loop.c - the feedback loop's records (feedback, statistics, label
 * items, the model registry, trigger firings) over the backends' rows.
 *
 * Each typed put checks the record, encodes it as one JSON object and hands
 * the backend a row (state_backend.h): its key, the two fields listings
 * filter on and the one they sort on. Each read asks the backend for rows
 * and decodes them back; the record's strings point into the decoded JSON
 * (or into copies freed after the callback), so they are borrowed for the
 * callback as lib/state/state.h says. One codec for both backends keeps what
 * SQLite and etcd store, and the order they list it in, the same.
 */
#include <jansson.h>
#include <math.h>

#include "lib/base/alloc.h"
#include "lib/state/state_backend.h"

const struct tr_row_kind_info tr_row_kinds[TR_ROW_KIND_COUNT] = {
    [TR_ROW_FEEDBACK] = {"feedback/", true, true, false},
    [TR_ROW_STATS] = {"feedback_stats/", true, false, false},
    [TR_ROW_LABEL] = {"labels/", false, true, false},
    [TR_ROW_MODEL] = {"models/", false, false, false},
    [TR_ROW_MODEL_VERSION] = {"model_versions/", true, false, false},
    [TR_ROW_MODEL_ALIAS] = {"model_aliases/", true, false, false},
    [TR_ROW_ALIAS_MOVE] = {"model_history/", true, false, false},
    [TR_ROW_FIRING] = {"firings/", true, true, true},
    /* Late like firings: a trigger's state goes with the firing and its run. */
    [TR_ROW_TRIGGER] = {"triggers/", true, false, true},
    [TR_ROW_AUDIT] = {"audit/", true, false, false},
    [TR_ROW_OWNER] = {"owners/", true, false, false},
    /* Run control (state_runctl.c): late, so a key is never durable before its run. */
    [TR_ROW_IDEM] = {"idempotency/", false, false, true},
    [TR_ROW_RUN_LINK] = {"run_links/", false, false, true},
    [TR_ROW_BUDGET] = {"budgets/", false, false, false},
};

/* ===================================================================== */
/* Encoding                                                              */
/* ===================================================================== */

/* Sets a string member; NULL leaves it out. */
static int enc_str(json_t *o, const char *k, const char *v)
{
    if (v == NULL)
        return 0;
    json_t *s = json_string(v);
    if (s == NULL)
        return TR_EINVAL; /* not UTF-8 */
    return json_object_set_new(o, k, s) == 0 ? 0 : TR_ENOMEM;
}

/* Sets a member from JSON text; NULL leaves it out, text that is not JSON is refused. */
static int enc_json(json_t *o, const char *k, const char *text)
{
    if (text == NULL)
        return 0;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        return TR_EINVAL;
    return json_object_set_new(o, k, v) == 0 ? 0 : TR_ENOMEM;
}

static int enc_num(json_t *o, const char *k, double v)
{
    return json_object_set_new(o, k, json_real(v)) == 0 ? 0 : TR_ENOMEM;
}

static int enc_int(json_t *o, const char *k, int64_t v)
{
    return json_object_set_new(o, k, json_integer((json_int_t)v)) == 0 ? 0 : TR_ENOMEM;
}

/* Hands the row to the backend with o as its value (o is released). */
static int put(struct tr_state *st, struct tr_state_row *row, json_t *o, int rc)
{
    char *text = NULL;
    if (rc == 0) {
        text = json_dumps(o, JSON_COMPACT);
        if (text == NULL)
            rc = TR_ENOMEM;
    }
    json_decref(o);
    if (rc == 0) {
        row->value = text;
        row->value_len = strlen(text);
        rc = st->ops->put_row(st, row);
    }
    free(text);
    return rc;
}

#define ENC(expr)              \
    do {                       \
        if (rc == 0)           \
            rc = (expr);       \
    } while (0)

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

int tr_state_put_feedback(struct tr_state *st, const struct tr_feedback_rec *r)
{
    if (st == NULL || r == NULL || empty(r->id) || empty(r->run_id) || empty(r->pipeline))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "id", r->id));
    ENC(enc_str(o, "run_id", r->run_id));
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_str(o, "task", r->task));
    ENC(enc_int(o, "index", r->index));
    ENC(enc_int(o, "score", r->score));
    ENC(enc_str(o, "label", r->label));
    ENC(enc_str(o, "correction", r->correction));
    ENC(enc_str(o, "comment", r->comment));
    ENC(enc_str(o, "user", r->user));
    ENC(enc_num(o, "created_at", r->created_at));
    struct tr_state_row row = {.kind = TR_ROW_FEEDBACK, .comps = {r->pipeline, r->id},
                               .n_comps = 2, .grp = r->pipeline, .sub = r->run_id,
                               .ord = r->created_at};
    return put(st, &row, o, rc);
}

int tr_state_put_feedback_stats(struct tr_state *st, const struct tr_feedback_stats_rec *r)
{
    if (st == NULL || r == NULL || empty(r->pipeline) || r->n_buckets > TR_FEEDBACK_BUCKETS_MAX ||
        (r->n_buckets > 0 && r->buckets == NULL))
        return TR_EINVAL;
    json_t *o = json_object();
    json_t *b = json_array();
    int rc = o && b ? 0 : TR_ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < r->n_buckets; i++) {
        const struct tr_feedback_bucket *x = &r->buckets[i];
        json_t *e = json_pack("[IIfI]", (json_int_t)x->start, (json_int_t)x->count, x->sum,
                              (json_int_t)x->negative);
        if (e == NULL || json_array_append_new(b, e) != 0)
            rc = TR_ENOMEM;
    }
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_int(o, "count", (int64_t)r->count));
    ENC(enc_num(o, "sum", r->sum));
    ENC(enc_int(o, "negative", (int64_t)r->negative));
    ENC(enc_int(o, "labels_queued", (int64_t)r->labels_queued));
    ENC(enc_int(o, "labels_labelled", (int64_t)r->labels_labelled));
    ENC(enc_int(o, "bucket_seconds", r->bucket_seconds));
    ENC(enc_num(o, "updated_at", r->updated_at));
    if (rc == 0 && json_object_set(o, "buckets", b) != 0)
        rc = TR_ENOMEM;
    json_decref(b);
    struct tr_state_row row = {.kind = TR_ROW_STATS, .comps = {r->pipeline}, .n_comps = 1,
                               .grp = r->pipeline};
    return put(st, &row, o, rc);
}

static bool label_state_ok(const char *s)
{
    return s != NULL && (strcmp(s, "queued") == 0 || strcmp(s, "labelled") == 0);
}

int tr_state_put_label(struct tr_state *st, const struct tr_label_rec *r)
{
    if (st == NULL || r == NULL || empty(r->id) || empty(r->pipeline) || r->item_json == NULL ||
        !label_state_ok(r->state) || !isfinite(r->uncertainty))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "id", r->id));
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_str(o, "run_id", r->run_id));
    ENC(enc_str(o, "task", r->task));
    ENC(enc_json(o, "item", r->item_json));
    ENC(enc_num(o, "uncertainty", r->uncertainty));
    ENC(enc_str(o, "state", r->state));
    ENC(enc_json(o, "label", r->label_json));
    ENC(enc_str(o, "user", r->user));
    ENC(enc_num(o, "created_at", r->created_at));
    ENC(enc_num(o, "labelled_at", r->labelled_at));
    struct tr_state_row row = {.kind = TR_ROW_LABEL, .comps = {r->id}, .n_comps = 1,
                               .grp = r->pipeline, .sub = r->state, .ord = r->uncertainty};
    return put(st, &row, o, rc);
}

int tr_state_put_model(struct tr_state *st, const struct tr_model_rec *r)
{
    if (st == NULL || r == NULL || empty(r->name))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "name", r->name));
    ENC(enc_int(o, "latest", r->latest));
    ENC(enc_int(o, "moves", (int64_t)r->moves));
    ENC(enc_num(o, "created_at", r->created_at));
    ENC(enc_num(o, "updated_at", r->updated_at));
    struct tr_state_row row = {.kind = TR_ROW_MODEL, .comps = {r->name}, .n_comps = 1};
    return put(st, &row, o, rc);
}

int tr_state_put_model_version(struct tr_state *st, const struct tr_model_version_rec *r)
{
    if (st == NULL || r == NULL || empty(r->name) || r->version == 0)
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "name", r->name));
    ENC(enc_int(o, "version", r->version));
    ENC(enc_json(o, "artifact", r->artifact_json));
    ENC(enc_json(o, "metrics", r->metrics_json));
    ENC(enc_json(o, "tags", r->tags_json));
    ENC(enc_str(o, "run_id", r->run_id));
    ENC(enc_str(o, "data_digest", r->data_digest));
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_int(o, "parent", r->parent));
    ENC(enc_str(o, "user", r->user));
    ENC(enc_num(o, "created_at", r->created_at));
    char v[16];
    snprintf(v, sizeof(v), "%010u", (unsigned)r->version);
    struct tr_state_row row = {.kind = TR_ROW_MODEL_VERSION, .comps = {r->name, v}, .n_comps = 2,
                               .grp = r->name, .ord = r->version};
    return put(st, &row, o, rc);
}

int tr_state_put_model_alias(struct tr_state *st, const struct tr_model_alias_rec *r)
{
    if (st == NULL || r == NULL || empty(r->name) || empty(r->alias))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "name", r->name));
    ENC(enc_str(o, "alias", r->alias));
    ENC(enc_int(o, "version", r->version));
    ENC(enc_str(o, "user", r->user));
    ENC(enc_str(o, "reason", r->reason));
    ENC(enc_num(o, "at", r->at));
    struct tr_state_row row = {.kind = TR_ROW_MODEL_ALIAS, .comps = {r->name, r->alias},
                               .n_comps = 2, .grp = r->name};
    return put(st, &row, o, rc);
}

int tr_state_put_alias_move(struct tr_state *st, const struct tr_alias_move_rec *r)
{
    if (st == NULL || r == NULL || empty(r->name) || empty(r->alias) || r->seq == 0)
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "name", r->name));
    ENC(enc_int(o, "seq", (int64_t)r->seq));
    ENC(enc_str(o, "alias", r->alias));
    ENC(enc_int(o, "from", r->from));
    ENC(enc_int(o, "to", r->to));
    ENC(enc_str(o, "user", r->user));
    ENC(enc_str(o, "reason", r->reason));
    ENC(enc_num(o, "at", r->at));
    char seq[24];
    snprintf(seq, sizeof(seq), "%020llu", (unsigned long long)r->seq);
    struct tr_state_row row = {.kind = TR_ROW_ALIAS_MOVE, .comps = {r->name, seq}, .n_comps = 2,
                               .grp = r->name, .ord = (double)r->seq};
    return put(st, &row, o, rc);
}

int tr_state_put_firing(struct tr_state *st, const struct tr_firing_rec *r)
{
    if (st == NULL || r == NULL || empty(r->pipeline) || empty(r->trigger) ||
        !(r->fired_at > 0))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_str(o, "trigger", r->trigger));
    ENC(enc_num(o, "fired_at", r->fired_at));
    ENC(enc_str(o, "run_id", r->run_id));
    ENC(enc_json(o, "stats", r->stats_json));
    char t[32];
    snprintf(t, sizeof(t), "%020.6f", r->fired_at);
    struct tr_state_row row = {.kind = TR_ROW_FIRING, .comps = {r->pipeline, r->trigger, t},
                               .n_comps = 3, .grp = r->pipeline, .sub = r->trigger,
                               .ord = r->fired_at};
    return put(st, &row, o, rc);
}

int tr_state_put_trigger(struct tr_state *st, const struct tr_trigger_rec *r)
{
    if (st == NULL || r == NULL || empty(r->pipeline) || empty(r->trigger) || r->json == NULL)
        return TR_EINVAL;
    json_t *o = json_loads(r->json, 0, NULL);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return TR_EINVAL;
    }
    int rc = 0;
    ENC(enc_str(o, "pipeline", r->pipeline));
    ENC(enc_str(o, "trigger", r->trigger));
    struct tr_state_row row = {.kind = TR_ROW_TRIGGER, .comps = {r->pipeline, r->trigger},
                               .n_comps = 2, .grp = r->pipeline, .sub = r->trigger};
    return put(st, &row, o, rc);
}

int tr_state_put_audit(struct tr_state *st, const struct tr_audit_rec *r)
{
    if (st == NULL || r == NULL || empty(r->id) || empty(r->tenant) || empty(r->token) ||
        empty(r->action))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "id", r->id));
    ENC(enc_str(o, "tenant", r->tenant));
    ENC(enc_str(o, "token", r->token));
    ENC(enc_str(o, "role", r->role));
    ENC(enc_str(o, "action", r->action));
    ENC(enc_str(o, "object", r->object));
    ENC(enc_json(o, "detail", r->detail_json));
    ENC(enc_num(o, "at", r->at));
    struct tr_state_row row = {.kind = TR_ROW_AUDIT, .comps = {r->tenant, r->id}, .n_comps = 2,
                               .grp = r->tenant, .ord = r->at};
    return put(st, &row, o, rc);
}

int tr_state_put_owner(struct tr_state *st, const struct tr_owner_rec *r)
{
    if (st == NULL || r == NULL || empty(r->kind) || empty(r->name) || empty(r->tenant))
        return TR_EINVAL;
    json_t *o = json_object();
    int rc = o ? 0 : TR_ENOMEM;
    ENC(enc_str(o, "kind", r->kind));
    ENC(enc_str(o, "name", r->name));
    ENC(enc_str(o, "tenant", r->tenant));
    ENC(enc_num(o, "at", r->at));
    struct tr_state_row row = {.kind = TR_ROW_OWNER, .comps = {r->kind, r->name}, .n_comps = 2,
                               .grp = r->kind};
    return put(st, &row, o, rc);
}

/* ===================================================================== */
/* Decoding                                                              */
/* ===================================================================== */

/* A decoded value and the copies its record points into. */
struct dec
{
    json_t *o;
    char *owned[6];
    size_t n_owned;
    void *buckets;
};

static void dec_release(struct dec *d)
{
    json_decref(d->o);
    for (size_t i = 0; i < d->n_owned; i++)
        free(d->owned[i]);
    tr_free(d->buckets);
    *d = (struct dec){0};
}

static int dec_open(struct dec *d, const char *value, size_t len)
{
    *d = (struct dec){0};
    d->o = json_loadb(value, len, 0, NULL);
    if (!json_is_object(d->o)) {
        json_decref(d->o);
        d->o = NULL;
        return TR_EPROTO;
    }
    return 0;
}

static const char *dstr(struct dec *d, const char *k)
{
    return json_string_value(json_object_get(d->o, k));
}

static double dnum(struct dec *d, const char *k)
{
    return json_number_value(json_object_get(d->o, k));
}

static uint64_t duint(struct dec *d, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(d->o, k));
    return v > 0 ? (uint64_t)v : 0;
}

/* A member as JSON text (a copy freed with d), NULL when absent. */
static const char *djson(struct dec *d, const char *k, int *rc)
{
    json_t *v = json_object_get(d->o, k);
    if (v == NULL || *rc < 0)
        return NULL;
    /* 15 digits give back what a user wrote (0.6, not 0.59999999999999998). */
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (t == NULL || d->n_owned == TR_ARRAY_LEN(d->owned)) {
        free(t);
        *rc = TR_ENOMEM;
        return NULL;
    }
    d->owned[d->n_owned++] = t;
    return t;
}

/* A typed callback, cast back by kind (function pointers convert among themselves). */
typedef void (*any_fn)(void);

/* The typed callback a listing hands decoded records to. */
struct read_ctx
{
    int kind;
    any_fn cb;
    void *arg;
    const char *skip_alias_zero; /* aliases: removed ones are not listed */
};

static int emit(const char *value, size_t len, void *arg)
{
    struct read_ctx *c = arg;
    struct dec d;
    int rc = dec_open(&d, value, len);
    if (rc < 0)
        return rc;
    switch (c->kind) {
    case TR_ROW_FEEDBACK: {
        struct tr_feedback_rec r = {
            .id = dstr(&d, "id"), .run_id = dstr(&d, "run_id"), .pipeline = dstr(&d, "pipeline"),
            .task = dstr(&d, "task"), .index = (uint32_t)duint(&d, "index"),
            .score = (int32_t)json_integer_value(json_object_get(d.o, "score")),
            .label = dstr(&d, "label"), .correction = dstr(&d, "correction"),
            .comment = dstr(&d, "comment"), .user = dstr(&d, "user"),
            .created_at = dnum(&d, "created_at")};
        rc = r.id && r.run_id && r.pipeline ? ((tr_state_feedback_fn)c->cb)(&r, c->arg)
                                            : TR_EPROTO;
        break;
    }
    case TR_ROW_STATS: {
        json_t *b = json_object_get(d.o, "buckets");
        size_t n = json_array_size(b);
        struct tr_feedback_bucket *bk = NULL;
        if (n > TR_FEEDBACK_BUCKETS_MAX) {
            rc = TR_EPROTO;
            break;
        }
        if (n > 0 && (bk = d.buckets = tr_calloc(n, sizeof(*bk))) == NULL) {
            rc = TR_ENOMEM;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(b, i);
            bk[i].start = json_integer_value(json_array_get(e, 0));
            bk[i].count = (uint64_t)json_integer_value(json_array_get(e, 1));
            bk[i].sum = json_number_value(json_array_get(e, 2));
            bk[i].negative = (uint64_t)json_integer_value(json_array_get(e, 3));
        }
        struct tr_feedback_stats_rec r = {
            .pipeline = dstr(&d, "pipeline"), .count = duint(&d, "count"),
            .sum = dnum(&d, "sum"), .negative = duint(&d, "negative"),
            .labels_queued = duint(&d, "labels_queued"),
            .labels_labelled = duint(&d, "labels_labelled"),
            .bucket_seconds = (uint32_t)duint(&d, "bucket_seconds"), .n_buckets = (uint32_t)n,
            .buckets = bk, .updated_at = dnum(&d, "updated_at")};
        rc = r.pipeline ? ((tr_state_feedback_stats_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_LABEL: {
        struct tr_label_rec r = {
            .id = dstr(&d, "id"), .pipeline = dstr(&d, "pipeline"), .run_id = dstr(&d, "run_id"),
            .task = dstr(&d, "task"), .item_json = djson(&d, "item", &rc),
            .uncertainty = dnum(&d, "uncertainty"), .state = dstr(&d, "state"),
            .label_json = djson(&d, "label", &rc), .user = dstr(&d, "user"),
            .created_at = dnum(&d, "created_at"), .labelled_at = dnum(&d, "labelled_at")};
        if (rc == 0)
            rc = r.id && r.pipeline && r.state && r.item_json
                     ? ((tr_state_label_fn)c->cb)(&r, c->arg)
                     : TR_EPROTO;
        break;
    }
    case TR_ROW_MODEL: {
        struct tr_model_rec r = {.name = dstr(&d, "name"), .latest = (uint32_t)duint(&d, "latest"),
                                 .moves = duint(&d, "moves"),
                                 .created_at = dnum(&d, "created_at"),
                                 .updated_at = dnum(&d, "updated_at")};
        rc = r.name ? ((tr_state_model_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_MODEL_VERSION: {
        struct tr_model_version_rec r = {
            .name = dstr(&d, "name"), .version = (uint32_t)duint(&d, "version"),
            .artifact_json = djson(&d, "artifact", &rc), .metrics_json = djson(&d, "metrics", &rc),
            .tags_json = djson(&d, "tags", &rc), .run_id = dstr(&d, "run_id"),
            .data_digest = dstr(&d, "data_digest"), .pipeline = dstr(&d, "pipeline"),
            .parent = (uint32_t)duint(&d, "parent"), .user = dstr(&d, "user"),
            .created_at = dnum(&d, "created_at")};
        if (rc == 0)
            rc = r.name ? ((tr_state_model_version_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_MODEL_ALIAS: {
        struct tr_model_alias_rec r = {
            .name = dstr(&d, "name"), .alias = dstr(&d, "alias"),
            .version = (uint32_t)duint(&d, "version"), .user = dstr(&d, "user"),
            .reason = dstr(&d, "reason"), .at = dnum(&d, "at")};
        if (r.name == NULL || r.alias == NULL)
            rc = TR_EPROTO;
        else if (r.version == 0)
            rc = c->skip_alias_zero ? 0 : TR_ENOENT;
        else
            rc = ((tr_state_model_alias_fn)c->cb)(&r, c->arg);
        break;
    }
    case TR_ROW_ALIAS_MOVE: {
        struct tr_alias_move_rec r = {
            .name = dstr(&d, "name"), .seq = duint(&d, "seq"), .alias = dstr(&d, "alias"),
            .from = (uint32_t)duint(&d, "from"), .to = (uint32_t)duint(&d, "to"),
            .user = dstr(&d, "user"), .reason = dstr(&d, "reason"), .at = dnum(&d, "at")};
        rc = r.name && r.alias ? ((tr_state_alias_move_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_FIRING: {
        struct tr_firing_rec r = {
            .pipeline = dstr(&d, "pipeline"), .trigger = dstr(&d, "trigger"),
            .fired_at = dnum(&d, "fired_at"), .run_id = dstr(&d, "run_id"),
            .stats_json = djson(&d, "stats", &rc)};
        if (rc == 0)
            rc = r.pipeline && r.trigger ? ((tr_state_firing_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_TRIGGER: {
        struct tr_trigger_rec r = {.pipeline = dstr(&d, "pipeline"),
                                   .trigger = dstr(&d, "trigger"), .json = value};
        rc = r.pipeline && r.trigger ? ((tr_state_trigger_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_AUDIT: {
        struct tr_audit_rec r = {.id = dstr(&d, "id"), .tenant = dstr(&d, "tenant"),
                                 .token = dstr(&d, "token"), .role = dstr(&d, "role"),
                                 .action = dstr(&d, "action"), .object = dstr(&d, "object"),
                                 .detail_json = djson(&d, "detail", &rc), .at = dnum(&d, "at")};
        if (rc == 0)
            rc = r.id && r.tenant && r.action ? ((tr_state_audit_fn)c->cb)(&r, c->arg)
                                              : TR_EPROTO;
        break;
    }
    case TR_ROW_OWNER: {
        struct tr_owner_rec r = {.kind = dstr(&d, "kind"), .name = dstr(&d, "name"),
                                 .tenant = dstr(&d, "tenant"), .at = dnum(&d, "at")};
        rc = r.kind && r.name && r.tenant ? ((tr_state_owner_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    case TR_ROW_BUDGET: {
        struct tr_budget_rec r = {.tenant = dstr(&d, "tenant"), .json = value};
        rc = r.tenant ? ((tr_state_budget_fn)c->cb)(&r, c->arg) : TR_EPROTO;
        break;
    }
    default:
        rc = TR_EINVAL;
    }
    dec_release(&d);
    return rc;
}

/* Reads the one row at key and hands it to cb; TR_ENOENT when there is none. */
static int get(struct tr_state *st, int kind, const char *const *comps, size_t n, any_fn cb,
               void *arg)
{
    for (size_t i = 0; i < n; i++) {
        if (empty(comps[i]))
            return TR_EINVAL;
    }
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    char *v = NULL;
    size_t len = 0;
    int rc = st->ops->get_row(st, kind, comps, n, &v, &len);
    if (rc == 0) {
        struct read_ctx c = {.kind = kind, .cb = cb, .arg = arg};
        rc = emit(v, len, &c);
    }
    tr_free(v);
    return rc;
}

static int list(struct tr_state *st, int kind, const char *grp, const char *sub, uint32_t limit,
                any_fn cb, void *arg)
{
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    struct read_ctx c = {.kind = kind, .cb = cb, .arg = arg, .skip_alias_zero = "yes"};
    return st->ops->list_rows(st, kind, grp, sub, limit, emit, &c);
}

int tr_state_list_feedback(struct tr_state *st, const char *pipeline, const char *run_id,
                           uint32_t limit, tr_state_feedback_fn cb, void *arg)
{
    return list(st, TR_ROW_FEEDBACK, pipeline, run_id, limit, (any_fn)cb, arg);
}

int tr_state_get_feedback_stats(struct tr_state *st, const char *pipeline,
                                tr_state_feedback_stats_fn cb, void *arg)
{
    return get(st, TR_ROW_STATS, &pipeline, 1, (any_fn)cb, arg);
}

int tr_state_decode_feedback_stats(const char *json, size_t len, tr_state_feedback_stats_fn cb,
                                   void *arg)
{
    struct read_ctx c = {.kind = TR_ROW_STATS, .cb = (any_fn)cb, .arg = arg};
    return json != NULL && cb != NULL ? emit(json, len, &c) : TR_EINVAL;
}

int tr_state_list_feedback_stats(struct tr_state *st, tr_state_feedback_stats_fn cb, void *arg)
{
    return list(st, TR_ROW_STATS, NULL, NULL, 0, (any_fn)cb, arg);
}

int tr_state_get_label(struct tr_state *st, const char *id, tr_state_label_fn cb, void *arg)
{
    return get(st, TR_ROW_LABEL, &id, 1, (any_fn)cb, arg);
}

int tr_state_list_labels(struct tr_state *st, const char *pipeline, const char *state,
                         uint32_t limit, tr_state_label_fn cb, void *arg)
{
    return list(st, TR_ROW_LABEL, pipeline, state, limit, (any_fn)cb, arg);
}

int tr_state_get_model(struct tr_state *st, const char *name, tr_state_model_fn cb, void *arg)
{
    return get(st, TR_ROW_MODEL, &name, 1, (any_fn)cb, arg);
}

int tr_state_list_models(struct tr_state *st, tr_state_model_fn cb, void *arg)
{
    return list(st, TR_ROW_MODEL, NULL, NULL, 0, (any_fn)cb, arg);
}

int tr_state_get_model_version(struct tr_state *st, const char *name, uint32_t version,
                               tr_state_model_version_fn cb, void *arg)
{
    char v[16];
    snprintf(v, sizeof(v), "%010u", (unsigned)version);
    const char *comps[] = {name, v};
    return get(st, TR_ROW_MODEL_VERSION, comps, 2, (any_fn)cb, arg);
}

int tr_state_list_model_versions(struct tr_state *st, const char *name,
                                 tr_state_model_version_fn cb, void *arg)
{
    if (empty(name))
        return TR_EINVAL;
    return list(st, TR_ROW_MODEL_VERSION, name, NULL, 0, (any_fn)cb, arg);
}

int tr_state_get_model_alias(struct tr_state *st, const char *name, const char *alias,
                             tr_state_model_alias_fn cb, void *arg)
{
    const char *comps[] = {name, alias};
    return get(st, TR_ROW_MODEL_ALIAS, comps, 2, (any_fn)cb, arg);
}

int tr_state_list_model_aliases(struct tr_state *st, const char *name,
                                tr_state_model_alias_fn cb, void *arg)
{
    if (empty(name))
        return TR_EINVAL;
    return list(st, TR_ROW_MODEL_ALIAS, name, NULL, 0, (any_fn)cb, arg);
}

int tr_state_list_alias_moves(struct tr_state *st, const char *name, tr_state_alias_move_fn cb,
                              void *arg)
{
    if (empty(name))
        return TR_EINVAL;
    return list(st, TR_ROW_ALIAS_MOVE, name, NULL, 0, (any_fn)cb, arg);
}

int tr_state_list_firings(struct tr_state *st, const char *pipeline, const char *trigger,
                          uint32_t limit, tr_state_firing_fn cb, void *arg)
{
    if (empty(pipeline))
        return TR_EINVAL;
    return list(st, TR_ROW_FIRING, pipeline, trigger, limit, (any_fn)cb, arg);
}

int tr_state_list_triggers(struct tr_state *st, const char *pipeline, tr_state_trigger_fn cb,
                           void *arg)
{
    return list(st, TR_ROW_TRIGGER, pipeline, NULL, 0, (any_fn)cb, arg);
}

int tr_state_list_audit(struct tr_state *st, const char *tenant, tr_state_audit_fn cb, void *arg)
{
    return list(st, TR_ROW_AUDIT, tenant, NULL, 0, (any_fn)cb, arg);
}

int tr_state_get_owner(struct tr_state *st, const char *kind, const char *name,
                       tr_state_owner_fn cb, void *arg)
{
    const char *comps[2] = {kind, name};
    return get(st, TR_ROW_OWNER, comps, 2, (any_fn)cb, arg);
}

/* ===================================================================== */
/* Budgets (scheduler/budgets.c)                                         */
/* ===================================================================== */

int tr_state_put_budget(struct tr_state *st, const struct tr_budget_rec *r)
{
    if (st == NULL || r == NULL || empty(r->tenant) || r->json == NULL)
        return TR_EINVAL;
    json_t *o = json_loads(r->json, 0, NULL);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return TR_EINVAL;
    }
    int rc = 0;
    ENC(enc_str(o, "tenant", r->tenant));
    struct tr_state_row row = {.kind = TR_ROW_BUDGET, .comps = {r->tenant}, .n_comps = 1};
    return put(st, &row, o, rc);
}

int tr_state_list_budgets(struct tr_state *st, tr_state_budget_fn cb, void *arg)
{
    return list(st, TR_ROW_BUDGET, NULL, NULL, 0, (any_fn)cb, arg);
}
