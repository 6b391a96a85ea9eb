/*
 * metrics_pipeline.c - the per-pipeline series of /metrics (see obs.h):
 * runs by outcome, task durations, LLM tokens and cost by model, the share
 * of negative feedback, and drift.
 *
 * Drift: the population stability index of a task's numeric output (a
 * number, or the number under "score" in a table) in the current clock hour
 * against a reference window: the first OBS_DRIFT_REF values the scheduler
 * saw for that task. The reference's deciles become the bin edges, once;
 * after that each value costs a binary search over 9 edges and an increment.
 * docs/observability.md says what the values mean.
 *
 * Cardinality is bounded: past OBS_MAX_PIPELINES pipelines, OBS_MAX_TASKS
 * tasks or OBS_MAX_MODELS models per pipeline, the rest count as "_other".
 */
#include "scheduler/obs.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/usage.h"

#define OTHER "_other"
#define DRIFT_MIN_LIVE 50 /* values in the live window before its PSI is shown */

static const double dur_bounds[OBS_DUR_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                   1,     2.5,  5,     10,   30,  60,  300};

struct obs_task
{
    char *name;
    uint64_t dur[OBS_DUR_BUCKETS + 1]; /* the last is +Inf */
    double dur_sum;
    uint64_t dur_count;
    /* Drift. */
    double *ref_vals;        /* the reference window while it fills, then NULL */
    uint32_t n_ref_vals;
    bool have_ref;
    double edges[OBS_DRIFT_BINS - 1];
    uint64_t ref[OBS_DRIFT_BINS];
    uint64_t cur[OBS_DRIFT_BINS];  /* this clock hour */
    uint64_t prev[OBS_DRIFT_BINS]; /* the hour before */
    int64_t hour;                  /* of cur */
};

struct obs_model
{
    char *name;
    uint64_t in, out;
    double cost;
};

struct obs_pipe
{
    char *name;
    uint64_t runs[TR_RUN_STATE_COUNT];
    bool have_fb;
    uint64_t fb_count, fb_negative;
    struct obs_task **tasks;  /* in order of appearance, for the page */
    uint32_t n_tasks;
    struct tr_hmap task_map;  /* name -> struct obs_task (a result looks its task up) */
    struct obs_model *models;
    uint32_t n_models;
};

void obs_init(struct obs *o)
{
    memset(o, 0, sizeof(*o));
    tr_hmap_init(&o->pipes);
}

void obs_release(struct obs *o)
{
    tr_otlp_close(o->otlp);
    o->otlp = NULL;
    size_t it = 0;
    struct obs_pipe *p;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (uint32_t i = 0; i < p->n_tasks; i++) {
            tr_free(p->tasks[i]->ref_vals);
            tr_free(p->tasks[i]->name);
            tr_free(p->tasks[i]);
        }
        for (uint32_t i = 0; i < p->n_models; i++)
            tr_free(p->models[i].name);
        tr_free(p->tasks);
        tr_hmap_release(&p->task_map);
        tr_free(p->models);
        tr_free(p->name);
        tr_free(p);
    }
    tr_hmap_release(&o->pipes);
}

/* ====================================================================== */
/* Label sets                                                             */
/* ====================================================================== */

static struct obs_pipe *pipe_get(struct obs *o, const char *name)
{
    struct obs_pipe *p = tr_hmap_gets(&o->pipes, name);
    if (p != NULL)
        return p;
    if (o->n_pipes >= OBS_MAX_PIPELINES) {
        name = OTHER;
        if ((p = tr_hmap_gets(&o->pipes, name)) != NULL)
            return p;
    }
    p = tr_calloc(1, sizeof(*p));
    if (p != NULL)
        tr_hmap_init(&p->task_map);
    if (p == NULL || (p->name = tr_strdup(name)) == NULL ||
        tr_hmap_put(&o->pipes, p->name, strlen(p->name), p) != 0) {
        if (p)
            tr_free(p->name);
        tr_free(p);
        return NULL;
    }
    o->n_pipes++;
    return p;
}

static struct obs_task *task_get(struct obs_pipe *p, const char *name)
{
    struct obs_task *t = tr_hmap_gets(&p->task_map, name);
    if (t != NULL)
        return t;
    if (p->n_tasks >= OBS_MAX_TASKS) {
        name = OTHER;
        if ((t = tr_hmap_gets(&p->task_map, name)) != NULL)
            return t;
    }
    struct obs_task **ts = tr_reallocarray(p->tasks, p->n_tasks + 1, sizeof(*ts));
    if (ts == NULL)
        return NULL;
    p->tasks = ts;
    t = tr_calloc(1, sizeof(*t));
    if (t == NULL || (t->name = tr_strdup(name)) == NULL ||
        tr_hmap_put(&p->task_map, t->name, strlen(t->name), t) != 0) {
        if (t)
            tr_free(t->name);
        tr_free(t);
        return NULL;
    }
    p->tasks[p->n_tasks++] = t;
    return t;
}

static struct obs_model *model_get(struct obs_pipe *p, const char *name)
{
    for (uint32_t i = 0; i < p->n_models; i++) {
        if (strcmp(p->models[i].name, name) == 0)
            return &p->models[i];
    }
    if (p->n_models >= OBS_MAX_MODELS) {
        name = OTHER;
        for (uint32_t i = 0; i < p->n_models; i++) {
            if (strcmp(p->models[i].name, name) == 0)
                return &p->models[i];
        }
    }
    struct obs_model *ms = tr_reallocarray(p->models, p->n_models + 1, sizeof(*ms));
    if (ms == NULL)
        return NULL;
    p->models = ms;
    struct obs_model *m = &ms[p->n_models];
    memset(m, 0, sizeof(*m));
    if ((m->name = tr_strdup(name)) == NULL)
        return NULL;
    p->n_models++;
    return m;
}

/* ====================================================================== */
/* Drift                                                                  */
/* ====================================================================== */

double obs_psi(const uint64_t *ref, const uint64_t *cur, uint32_t n)
{
    uint64_t nr = 0, nc = 0;
    for (uint32_t i = 0; i < n; i++) {
        nr += ref[i];
        nc += cur[i];
    }
    if (nr == 0 || nc == 0)
        return 0;
    /* An empty bin would make the logarithm infinite: give it a floor. */
    const double eps = 1e-4;
    double psi = 0;
    for (uint32_t i = 0; i < n; i++) {
        double r = TR_MAX((double)ref[i] / (double)nr, eps);
        double c = TR_MAX((double)cur[i] / (double)nc, eps);
        psi += (c - r) * log(c / r);
    }
    return psi;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint32_t bin_of(const struct obs_task *t, double v)
{
    uint32_t lo = 0, hi = OBS_DRIFT_BINS - 1; /* v goes after edges[0..lo) */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (v <= t->edges[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void drift_add(struct obs_task *t, double v, double now)
{
    if (!isfinite(v))
        return;
    if (!t->have_ref) {
        if (t->ref_vals == NULL && (t->ref_vals = tr_calloc(OBS_DRIFT_REF, sizeof(double))) == NULL)
            return;
        t->ref_vals[t->n_ref_vals++] = v;
        if (t->n_ref_vals < OBS_DRIFT_REF)
            return;
        /* The reference is full: its deciles become the edges, once. */
        qsort(t->ref_vals, OBS_DRIFT_REF, sizeof(double), cmp_double);
        for (uint32_t i = 0; i < OBS_DRIFT_BINS - 1; i++)
            t->edges[i] = t->ref_vals[(size_t)(i + 1) * OBS_DRIFT_REF / OBS_DRIFT_BINS - 1];
        for (uint32_t i = 0; i < OBS_DRIFT_REF; i++)
            t->ref[bin_of(t, t->ref_vals[i])]++;
        tr_free(t->ref_vals);
        t->ref_vals = NULL;
        t->have_ref = true;
        t->hour = (int64_t)(now / 3600);
        return;
    }
    int64_t hour = (int64_t)(now / 3600);
    if (hour != t->hour) {
        if (hour == t->hour + 1)
            memcpy(t->prev, t->cur, sizeof(t->cur));
        else
            memset(t->prev, 0, sizeof(t->prev));
        memset(t->cur, 0, sizeof(t->cur));
        t->hour = hour;
    }
    t->cur[bin_of(t, v)]++;
}

/* A number at the top of a msgpack value, or under "score" in a map. */
static bool mp_number(const unsigned char *p, size_t len, double *out, int depth)
{
    if (len == 0)
        return false;
    unsigned char b = p[0];
    if (b <= 0x7f) {
        *out = b;
        return true;
    }
    if (b >= 0xe0) {
        *out = (int8_t)b;
        return true;
    }
    uint64_t u = 0;
    size_t w = b == 0xca || b == 0xce || b == 0xd2 ? 4 : b == 0xcb || b == 0xcf || b == 0xd3 ? 8
             : b == 0xcc || b == 0xd0 ? 1 : b == 0xcd || b == 0xd1 ? 2 : 0;
    if (w > 0) {
        if (len < 1 + w)
            return false;
        for (size_t i = 0; i < w; i++)
            u = u << 8 | p[1 + i];
        if (b == 0xca) {
            uint32_t u32 = (uint32_t)u;
            float f;
            memcpy(&f, &u32, 4);
            *out = f;
        } else if (b == 0xcb) {
            double d;
            memcpy(&d, &u, 8);
            *out = d;
        } else if (b >= 0xcc && b <= 0xcf) {
            *out = (double)u;
        } else {
            int64_t s = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
            *out = (double)s;
        }
        return true;
    }
    if (depth > 0 || (b & 0xf0) != 0x80)
        return false; /* only a small map (fixmap) at the top is searched */
    uint32_t n = b & 0x0f;
    size_t off = 1;
    for (uint32_t i = 0; i < n && off < len; i++) {
        long ks = tr_mp_check(p + off, len - off, &tr_mp_default_limits);
        if (ks <= 0)
            return false;
        bool is_score = p[off] == 0xa5 && ks == 6 && memcmp(p + off + 1, "score", 5) == 0;
        off += (size_t)ks;
        if (is_score)
            return mp_number(p + off, len - off, out, depth + 1);
        long vs = tr_mp_check(p + off, len - off, &tr_mp_default_limits);
        if (vs <= 0)
            return false;
        off += (size_t)vs;
    }
    return false;
}

/* ====================================================================== */
/* Events                                                                 */
/* ====================================================================== */

static void usage_to_models(struct obs_pipe *p, const struct tr_str usage)
{
    json_t *arr = usage_records_json(usage.p, usage.len);
    size_t i;
    json_t *call;
    json_array_foreach(arr, i, call)
    {
        const char *model = json_string_value(json_object_get(call, "model"));
        struct obs_model *m = model_get(p, model && model[0] ? model : "unknown");
        if (m == NULL)
            break;
        json_t *pt = json_object_get(call, "prompt_tokens");
        json_t *ct = json_object_get(call, "completion_tokens");
        json_t *cost = json_object_get(call, "cost");
        m->in += json_is_integer(pt) && json_integer_value(pt) > 0 ? (uint64_t)json_integer_value(pt)
                                                                  : 0;
        m->out += json_is_integer(ct) && json_integer_value(ct) > 0
                      ? (uint64_t)json_integer_value(ct)
                      : 0;
        double c = json_is_number(cost) ? json_number_value(cost) : 0;
        m->cost += isfinite(c) && c > 0 ? c : 0;
    }
    json_decref(arr);
}

void obs_attempt(struct obs *o, const struct inst *in, const char *worker_id,
                 const struct tr_msg_result *m)
{
    if (o == NULL)
        return;
    obs_trace_attempt(o, in, worker_id, m);
    const struct run *r = in->run;
    struct obs_pipe *p = pipe_get(o, r->pipe->def->name);
    struct obs_task *t = p ? task_get(p, r->pipe->def->tasks[in->task].name) : NULL;
    if (t == NULL)
        return;
    double d = m->finished_at - m->started_at;
    if (d >= 0 && d < 86400 * 30) {
        size_t i = 0;
        while (i < OBS_DUR_BUCKETS && d > dur_bounds[i])
            i++;
        t->dur[i]++;
        t->dur_sum += d;
        t->dur_count++;
    }
    if (m->usage.len > 0)
        usage_to_models(p, m->usage);
    double v;
    if (m->ok && mp_number((const unsigned char *)m->output.p, m->output.len, &v, 0))
        drift_add(t, v, m->finished_at > 0 ? m->finished_at : tr_now());
}

void obs_run_final(struct obs *o, const struct run *r)
{
    if (o == NULL)
        return;
    obs_trace_run(o, r);
    struct obs_pipe *p = pipe_get(o, r->pipe->def->name);
    if (p != NULL && r->state < TR_RUN_STATE_COUNT)
        p->runs[r->state]++;
}

void obs_feedback(struct obs *o, const char *pipeline, uint64_t count, uint64_t negative)
{
    struct obs_pipe *p = o ? pipe_get(o, pipeline) : NULL;
    if (p == NULL)
        return;
    p->have_fb = true;
    p->fb_count = count;
    p->fb_negative = negative;
}

/* ====================================================================== */
/* Rendering                                                              */
/* ====================================================================== */

static int label(struct tr_buf *b, const char *v)
{
    int rc = 0;
    for (const char *s = v; rc == 0 && *s; s++) {
        if (*s == '\\' || *s == '"')
            rc = tr_buf_addf(b, "\\%c", *s);
        else if (*s == '\n')
            rc = tr_buf_addstr(b, "\\n");
        else
            rc = tr_buf_addch(b, *s);
    }
    return rc;
}

#define ADD(...)                                 \
    do {                                         \
        if (tr_buf_addf(b, __VA_ARGS__) != 0)    \
            return TR_ENOMEM;                    \
    } while (0)
#define LABEL(v)                                 \
    do {                                         \
        if (label(b, (v)) != 0)                  \
            return TR_ENOMEM;                    \
    } while (0)

static int render_runs(const struct obs *o, struct tr_buf *b)
{
    ADD("# HELP trellis_pipeline_runs_total Runs finished, by pipeline and final state.\n"
        "# TYPE trellis_pipeline_runs_total counter\n");
    size_t it = 0;
    const struct obs_pipe *p;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (int s = TR_RUN_SUCCEEDED; s <= TR_RUN_CANCELLED; s++) {
            ADD("trellis_pipeline_runs_total{pipeline=\"");
            LABEL(p->name);
            ADD("\",state=\"%s\"} %llu\n", tr_run_state_names[s], (unsigned long long)p->runs[s]);
        }
    }
    return 0;
}

static int render_durations(const struct obs *o, struct tr_buf *b)
{
    ADD("# HELP trellis_task_duration_seconds Task attempts' run time on the worker, by "
        "pipeline and task.\n# TYPE trellis_task_duration_seconds histogram\n");
    size_t it = 0;
    const struct obs_pipe *p;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (uint32_t i = 0; i < p->n_tasks; i++) {
            const struct obs_task *t = p->tasks[i];
            uint64_t acc = 0;
            for (int k = 0; k <= OBS_DUR_BUCKETS; k++) {
                acc += t->dur[k];
                ADD("trellis_task_duration_seconds_bucket{pipeline=\"");
                LABEL(p->name);
                ADD("\",task=\"");
                LABEL(t->name);
                if (k < OBS_DUR_BUCKETS)
                    ADD("\",le=\"%g\"} %llu\n", dur_bounds[k], (unsigned long long)acc);
                else
                    ADD("\",le=\"+Inf\"} %llu\n", (unsigned long long)acc);
            }
            ADD("trellis_task_duration_seconds_sum{pipeline=\"");
            LABEL(p->name);
            ADD("\",task=\"");
            LABEL(t->name);
            ADD("\"} %.9g\ntrellis_task_duration_seconds_count{pipeline=\"", t->dur_sum);
            LABEL(p->name);
            ADD("\",task=\"");
            LABEL(t->name);
            ADD("\"} %llu\n", (unsigned long long)t->dur_count);
        }
    }
    return 0;
}

static int render_llm(const struct obs *o, struct tr_buf *b)
{
    ADD("# HELP trellis_llm_tokens_total LLM tokens, by pipeline, model and kind "
        "(input, output).\n# TYPE trellis_llm_tokens_total counter\n");
    size_t it = 0;
    const struct obs_pipe *p;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (uint32_t i = 0; i < p->n_models; i++) {
            for (int k = 0; k < 2; k++) {
                ADD("trellis_llm_tokens_total{pipeline=\"");
                LABEL(p->name);
                ADD("\",model=\"");
                LABEL(p->models[i].name);
                ADD("\",kind=\"%s\"} %llu\n", k ? "output" : "input",
                    (unsigned long long)(k ? p->models[i].out : p->models[i].in));
            }
        }
    }
    ADD("# HELP trellis_llm_cost_total LLM cost in USD (the providers file's prices), by "
        "pipeline and model.\n# TYPE trellis_llm_cost_total counter\n");
    it = 0;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (uint32_t i = 0; i < p->n_models; i++) {
            ADD("trellis_llm_cost_total{pipeline=\"");
            LABEL(p->name);
            ADD("\",model=\"");
            LABEL(p->models[i].name);
            ADD("\"} %.9g\n", p->models[i].cost);
        }
    }
    return 0;
}

static int render_quality(const struct obs *o, struct tr_buf *b)
{
    ADD("# HELP trellis_feedback_negative_ratio Share of a pipeline's feedback that is "
        "negative (all time).\n# TYPE trellis_feedback_negative_ratio gauge\n");
    size_t it = 0;
    const struct obs_pipe *p;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        if (!p->have_fb || p->fb_count == 0)
            continue;
        ADD("trellis_feedback_negative_ratio{pipeline=\"");
        LABEL(p->name);
        ADD("\"} %.6g\n", (double)p->fb_negative / (double)p->fb_count);
    }
    ADD("# HELP trellis_drift_psi Population stability index of a task's numeric output, this "
        "hour against its reference window (0.1: watch, 0.25: shifted).\n"
        "# TYPE trellis_drift_psi gauge\n");
    it = 0;
    while ((p = tr_hmap_next(&o->pipes, &it)) != NULL) {
        for (uint32_t i = 0; i < p->n_tasks; i++) {
            const struct obs_task *t = p->tasks[i];
            if (!t->have_ref)
                continue;
            uint64_t n = 0;
            for (int k = 0; k < OBS_DRIFT_BINS; k++)
                n += t->cur[k];
            /* The hour just begun says little: the last one speaks until it has enough. */
            const uint64_t *live = n >= DRIFT_MIN_LIVE ? t->cur : t->prev;
            uint64_t nl = 0;
            for (int k = 0; k < OBS_DRIFT_BINS; k++)
                nl += live[k];
            if (nl < DRIFT_MIN_LIVE)
                continue;
            ADD("trellis_drift_psi{pipeline=\"");
            LABEL(p->name);
            ADD("\",task=\"");
            LABEL(t->name);
            ADD("\"} %.6g\n", obs_psi(t->ref, live, OBS_DRIFT_BINS));
        }
    }
    return 0;
}

int obs_metrics_render(const struct obs *o, struct tr_buf *b)
{
    if (o == NULL)
        return 0;
    int rc = render_runs(o, b);
    if (rc == 0)
        rc = render_durations(o, b);
    if (rc == 0)
        rc = render_llm(o, b);
    return rc == 0 ? render_quality(o, b) : rc;
}
