/*
 * feedback.c - the feedback loop's memory and its part of the turn.
 *
 * Statistics are kept incrementally: a feedback adds to its pipeline's
 * totals and to the bucket of its minute in a ring of FB_BUCKETS buckets,
 * and the pipeline's new statistics are put into the same batch as the
 * feedback. Nothing is ever recomputed from the feedback itself, so a
 * pipeline with a million pieces of feedback costs what one with ten does.
 * A scheduler that starts to lead forgets what it held (fb_reset) and reads
 * the statistics back from the state on first use: with etcd another
 * scheduler may have led in between.
 */
#include "scheduler/feedback_int.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"

static struct fb_loop *loop_of(struct api *s)
{
    return s->fb;
}

/* ====================================================================== */
/* Life cycle and the turn                                                 */
/* ====================================================================== */

int fb_open(struct api *s, struct tr_error *err)
{
    struct fb_loop *l = tr_calloc(1, sizeof(*l));
    if (l == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot start the feedback loop: out of memory");
    tr_hmap_init(&l->stats);
    tr_hmap_init(&l->models);
    tr_hmap_init(&l->labels);
    tr_hmap_init(&l->run_pipes);
    s->fb = l;
    return 0;
}

/* Run id and pipeline in one allocation: "run\0pipeline\0"; the key is its start. */
static void forget_runs(struct fb_loop *l)
{
    size_t it = 0;
    char *v;
    while ((v = tr_hmap_next(&l->run_pipes, &it)) != NULL)
        tr_free(v);
    tr_hmap_release(&l->run_pipes);
    tr_hmap_init(&l->run_pipes);
}

const char *fb_run_pipeline_cached(struct api *s, const char *run_id)
{
    const char *v = tr_hmap_gets(&loop_of(s)->run_pipes, run_id);
    return v ? v + strlen(v) + 1 : NULL;
}

void fb_run_pipeline_remember(struct api *s, const char *run_id, const char *pipeline)
{
    struct fb_loop *l = loop_of(s);
    if (tr_hmap_count(&l->run_pipes) >= FB_RUN_CACHE)
        forget_runs(l);
    size_t a = strlen(run_id), b = strlen(pipeline);
    char *v = tr_malloc(a + b + 2);
    if (v == NULL)
        return;
    memcpy(v, run_id, a + 1);
    memcpy(v + a + 1, pipeline, b + 1);
    if (tr_hmap_put(&l->run_pipes, v, a, v) < 0)
        tr_free(v);
}

static void forget(struct fb_loop *l)
{
    forget_runs(l);
    size_t it = 0;
    struct fb_stats *st;
    while ((st = tr_hmap_next(&l->stats, &it)) != NULL) {
        tr_free(st->pipeline);
        tr_free(st);
    }
    tr_hmap_release(&l->stats);
    tr_hmap_init(&l->stats);
    it = 0;
    struct fb_model *m;
    while ((m = tr_hmap_next(&l->models, &it)) != NULL) {
        tr_free(m->name);
        tr_free(m->aliases);
        tr_free(m);
    }
    tr_hmap_release(&l->models);
    tr_hmap_init(&l->models);
}

static void drop_writes(struct fb_loop *l)
{
    for (size_t i = 0; i < l->n_writes; i++)
        json_decref(l->writes[i].hold);
    l->n_writes = 0;
    tr_hmap_release(&l->labels);
    tr_hmap_init(&l->labels);
}

void fb_close(struct api *s)
{
    struct fb_loop *l = loop_of(s);
    if (l == NULL)
        return;
    drop_writes(l);
    forget(l);
    tr_hmap_release(&l->labels);
    tr_hmap_release(&l->run_pipes);
    tr_free(l->writes);
    tr_free(l);
    s->fb = NULL;
}

void fb_reset(struct api *s)
{
    struct fb_loop *l = loop_of(s);
    /* Writes not yet committed were never answered: they stay for the commit. */
    if (l != NULL && l->n_writes == 0)
        forget(l);
}

bool fb_have_dirty(const struct api *s)
{
    return s->fb != NULL && s->fb->n_writes > 0;
}

static int put_write(struct tr_state *state, const struct fb_write *w)
{
    switch (w->kind) {
    case FB_W_FEEDBACK:
        return tr_state_put_feedback(state, &w->rec.fb);
    case FB_W_LABEL:
        return tr_state_put_label(state, &w->rec.label);
    case FB_W_MODEL:
        return tr_state_put_model(state, &w->rec.model);
    case FB_W_VERSION:
        return tr_state_put_model_version(state, &w->rec.version);
    case FB_W_ALIAS:
        return tr_state_put_model_alias(state, &w->rec.alias);
    case FB_W_MOVE:
        return tr_state_put_alias_move(state, &w->rec.move);
    default:
        return TR_EINVAL;
    }
}

int fb_put_dirty(struct api *s)
{
    struct fb_loop *l = loop_of(s);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->n_writes; i++)
        rc = put_write(s->state, &l->writes[i]);
    /* The statistics the writes changed, in the same batch. */
    size_t it = 0;
    struct fb_stats *st;
    double now = tr_now();
    while (rc == 0 && (st = tr_hmap_next(&l->stats, &it)) != NULL) {
        if (!st->dirty)
            continue;
        struct tr_feedback_stats_rec rec = {
            .pipeline = st->pipeline, .count = st->count, .sum = st->sum,
            .negative = st->negative, .labels_queued = st->queued,
            .labels_labelled = st->labelled, .bucket_seconds = FB_BUCKET_SECONDS,
            .n_buckets = FB_BUCKETS, .buckets = st->buckets, .updated_at = now};
        rc = tr_state_put_feedback_stats(s->state, &rec);
    }
    return rc;
}

void fb_committed(struct api *s)
{
    struct fb_loop *l = loop_of(s);
    drop_writes(l);
    size_t it = 0;
    struct fb_stats *st;
    while ((st = tr_hmap_next(&l->stats, &it)) != NULL)
        st->dirty = false;
}

/* ====================================================================== */
/* Writes                                                                  */
/* ====================================================================== */

struct fb_write *fb_write_new(struct api *s, int kind)
{
    struct fb_loop *l = loop_of(s);
    json_t *hold = json_object();
    if (hold == NULL)
        return NULL;
    struct fb_write w = {.kind = kind, .hold = hold};
    if (TR_VEC_PUSH(l->writes, l->n_writes, l->cap_writes, w) < 0) {
        json_decref(hold);
        return NULL;
    }
    return &l->writes[l->n_writes - 1];
}

void fb_write_drop_last(struct api *s)
{
    struct fb_loop *l = loop_of(s);
    if (l->n_writes == 0)
        return;
    l->n_writes--;
    json_decref(l->writes[l->n_writes].hold);
}

const char *fb_hold(struct fb_write *w, const char *k, const char *v)
{
    if (v == NULL)
        return NULL;
    json_t *j = json_string(v);
    if (j == NULL || json_object_set_new(w->hold, k, j) != 0)
        return NULL;
    return json_string_value(j);
}

const char *fb_hold_json(struct fb_write *w, const char *k, const json_t *j)
{
    if (j == NULL)
        return NULL;
    char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (t == NULL)
        return NULL;
    const char *r = fb_hold(w, k, t);
    free(t);
    return r;
}

void fb_new_id(struct api *s, const char *prefix, char *out, size_t size)
{
    struct fb_loop *l = loop_of(s);
    uint64_t us = (uint64_t)(tr_now() * 1e6);
    snprintf(out, size, "%s-%013llx-%llu-%llu", prefix, (unsigned long long)us,
             (unsigned long long)s->dispatch->epoch, (unsigned long long)++l->next_id);
}

/* ====================================================================== */
/* Statistics                                                              */
/* ====================================================================== */

static int load_stats(const struct tr_feedback_stats_rec *r, void *arg)
{
    struct fb_stats *st = arg;
    st->count = r->count;
    st->sum = r->sum;
    st->negative = r->negative;
    st->queued = r->labels_queued;
    st->labelled = r->labels_labelled;
    /* Buckets of another width or ring size are dropped: the window restarts. */
    if (r->bucket_seconds == FB_BUCKET_SECONDS && r->n_buckets == FB_BUCKETS)
        memcpy(st->buckets, r->buckets, sizeof(st->buckets));
    return 0;
}

int fb_stats_read(struct api *s, const char *pipeline, struct fb_stats *out)
{
    struct fb_stats *st = tr_hmap_gets(&loop_of(s)->stats, pipeline);
    if (st != NULL) {
        *out = *st;
        return 0;
    }
    *out = (struct fb_stats){.pipeline = (char *)pipeline};
    int rc = tr_state_get_feedback_stats(s->state, pipeline, load_stats, out);
    return rc == TR_ENOENT ? 0 : rc;
}

struct fb_stats *fb_stats_get(struct api *s, const char *pipeline, int *rc)
{
    struct fb_loop *l = loop_of(s);
    struct fb_stats *st = tr_hmap_gets(&l->stats, pipeline);
    *rc = 0;
    if (st != NULL)
        return st;
    st = tr_calloc(1, sizeof(*st));
    if (st == NULL || (st->pipeline = tr_strdup(pipeline)) == NULL) {
        tr_free(st);
        *rc = TR_ENOMEM;
        return NULL;
    }
    int r = tr_state_get_feedback_stats(s->state, pipeline, load_stats, st);
    if (r == TR_ENOENT)
        r = 0;
    if (r == 0)
        r = tr_hmap_put(&l->stats, st->pipeline, strlen(st->pipeline), st);
    if (r < 0) {
        tr_free(st->pipeline);
        tr_free(st);
        *rc = r;
        return NULL;
    }
    return st;
}

void fb_stats_add(struct fb_stats *st, int score, bool negative, double now)
{
    st->count++;
    st->sum += score;
    st->negative += negative;
    st->dirty = true;
    int64_t start = (int64_t)floor(now / FB_BUCKET_SECONDS) * FB_BUCKET_SECONDS;
    struct tr_feedback_bucket *b = &st->buckets[(uint64_t)(start / FB_BUCKET_SECONDS) % FB_BUCKETS];
    if (b->start > start)
        return; /* the clock went back past a newer minute: the totals only */
    if (b->start != start)
        *b = (struct tr_feedback_bucket){.start = start};
    b->count++;
    b->sum += score;
    b->negative += negative;
}

static json_t *summary(uint64_t count, double sum, uint64_t negative)
{
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)count));
    json_object_set_new(o, "mean_score", json_real(count ? sum / (double)count : 0));
    json_object_set_new(o, "negative_rate",
                        json_real(count ? (double)negative / (double)count : 0));
    return o;
}

json_t *fb_stats_json(const struct fb_stats *st, double now)
{
    /* The window: the buckets of the current minute and the FB_BUCKETS - 1 before it. */
    int64_t cur = (int64_t)floor(now / FB_BUCKET_SECONDS) * FB_BUCKET_SECONDS;
    int64_t oldest = cur - (int64_t)(FB_BUCKETS - 1) * FB_BUCKET_SECONDS;
    uint64_t wc = 0, wn = 0;
    double ws = 0;
    for (size_t i = 0; i < FB_BUCKETS; i++) {
        const struct tr_feedback_bucket *b = &st->buckets[i];
        if (b->count == 0 || b->start < oldest || b->start > cur)
            continue;
        wc += b->count;
        ws += b->sum;
        wn += b->negative;
    }
    json_t *fb = summary(st->count, st->sum, st->negative);
    json_t *w = summary(wc, ws, wn);
    json_object_set_new(w, "seconds", json_integer(FB_BUCKETS * FB_BUCKET_SECONDS));
    json_object_set_new(fb, "window", w);
    json_t *labels = json_object();
    json_object_set_new(labels, "queued", json_integer((json_int_t)st->queued));
    json_object_set_new(labels, "labelled", json_integer((json_int_t)st->labelled));
    json_t *o = json_object();
    json_object_set_new(o, "pipeline", json_string(st->pipeline));
    json_object_set_new(o, "feedback", fb);
    json_object_set_new(o, "labels", labels);
    return o;
}

/* ====================================================================== */
/* Models                                                                  */
/* ====================================================================== */

static int load_model(const struct tr_model_rec *r, void *arg)
{
    struct fb_model *m = arg;
    m->exists = true;
    m->latest = r->latest;
    m->moves = r->moves;
    m->created_at = r->created_at;
    return 0;
}

int fb_model_set_alias(struct fb_model *m, const char *alias, uint32_t version)
{
    struct fb_alias *a = fb_model_alias(m, alias);
    if (a == NULL) {
        struct fb_alias *v = tr_reallocarray(m->aliases, m->n_aliases + 1, sizeof(*v));
        if (v == NULL)
            return TR_ENOMEM;
        m->aliases = v;
        a = &v[m->n_aliases++];
        snprintf(a->name, sizeof(a->name), "%s", alias);
    }
    a->version = version;
    return 0;
}

static int load_alias(const struct tr_model_alias_rec *r, void *arg)
{
    return fb_model_set_alias(arg, r->alias, r->version);
}

struct fb_alias *fb_model_alias(struct fb_model *m, const char *alias)
{
    for (size_t i = 0; i < m->n_aliases; i++) {
        if (strcmp(m->aliases[i].name, alias) == 0)
            return &m->aliases[i];
    }
    return NULL;
}

void fb_model_forget_unknown(struct api *s, struct fb_model *m)
{
    if (m->exists)
        return;
    tr_hmap_del(&loop_of(s)->models, m->name, strlen(m->name));
    tr_free(m->aliases);
    tr_free(m->name);
    tr_free(m);
}

struct fb_model *fb_model_get(struct api *s, const char *name, int *rc)
{
    struct fb_loop *l = loop_of(s);
    struct fb_model *m = tr_hmap_gets(&l->models, name);
    *rc = 0;
    if (m != NULL)
        return m;
    m = tr_calloc(1, sizeof(*m));
    if (m == NULL || (m->name = tr_strdup(name)) == NULL) {
        tr_free(m);
        *rc = TR_ENOMEM;
        return NULL;
    }
    int r = tr_state_get_model(s->state, name, load_model, m);
    if (r == TR_ENOENT)
        r = 0;
    if (r == 0 && m->exists)
        r = tr_state_list_model_aliases(s->state, name, load_alias, m);
    if (r == 0)
        r = tr_hmap_put(&l->models, m->name, strlen(m->name), m);
    if (r < 0) {
        tr_free(m->aliases);
        tr_free(m->name);
        tr_free(m);
        *rc = r;
        return NULL;
    }
    return m;
}
