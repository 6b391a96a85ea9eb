/*
 * triggers.c - declared triggers, their evaluation and their firings
 * (triggers.h, docs/feedback.md "Triggers").
 *
 * What memory holds: every trigger registered (its declaration copied from
 * the pipeline def, and its durable state), keyed "pipeline\x1ftrigger".
 * The state row of a trigger (tr_state_put_trigger) holds both, so a
 * scheduler that starts to lead rebuilds everything from the state without
 * reading any pipeline file.
 *
 * Invariants:
 * - A trigger fires on a crossing: `when` gives true while its durable
 *   `last` is not true. The firing, the trigger's new state (last = true,
 *   fired_at, the next cron time) and the run it starts are put into one
 *   batch (trg_put_dirty, called from the end-of-turn commit that also
 *   writes the run), so after any crash either all of them are durable or
 *   none is, and a new leader that re-evaluates finds `last` as the firing
 *   left it: it fires a lost crossing once and a kept one never again.
 * - Every change of `last` is written (a re-arming too): otherwise a
 *   restart could miss a crossing whose false half was never stored.
 * - At most one evaluation per trigger is in flight (`in_flight`); a change
 *   meanwhile sets `again`, and one more evaluation follows the answer.
 * - `when` runs only in a sandbox process (sandbox_when), never on the loop.
 *   A `when` that raises, returns a non-boolean, or hits a limit disables
 *   its trigger with the error, until the pipeline is registered again.
 *
 * Loop thread only.
 */
#include "scheduler/triggers_int.h"

#include <math.h>
#include <stdio.h>

#include "lib/base/cron.h"
#include "lib/base/vec.h"
#include "lib/wire/mp_json.h"
#include "scheduler/audit.h"
#include "scheduler/auth.h"
#include "scheduler/feedback_int.h"
#include "scheduler/tenants.h"
#include "scheduler/sandbox.h"

#define TICK_MS 1000u       /* cron resolution is a minute; a second is ample */
#define TICK_TEST_MS 50u    /* with the test clock, which jumps */

/* An evaluation in flight. */
struct eval_ctx
{
    struct api *s;
    struct trg *t;
    uint64_t gen;
    char *stats;              /* what `when` was given, JSON text */
};

/* A firing whose run's pipeline is being read. */
struct fire_ctx
{
    struct api *s;
    struct trg *t;
    uint64_t gen;
    double at;
    char *stats;
};


/* "Now" for triggers: the wall clock, or the test clock's file. */
double trg_now(struct trg_loop *l)
{
    if (l->clock_file == NULL)
        return tr_now();
    FILE *f = fopen(l->clock_file, "r");
    double v = 0;
    if (f != NULL) {
        if (fscanf(f, "%lf", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v > 0 ? v : tr_now();
}

/* ====================================================================== */
/* Memory                                                                  */
/* ====================================================================== */

static void trg_free(struct trg *t)
{
    if (t == NULL)
        return;
    tr_free(t->key);
    tr_free(t->pipeline);
    tr_free(t->name);
    tr_free(t->run);
    tr_free(t->params_json);
    tr_free(t->cron);
    tr_free(t->version);
    tr_free(t->error);
    tr_free(t->last_run);
    tr_free(t->src);
    tr_free(t);
}

static char *make_key(const char *pipeline, const char *name)
{
    size_t a = strlen(pipeline), b = strlen(name);
    char *k = tr_malloc(a + b + 2);
    if (k != NULL) {
        memcpy(k, pipeline, a);
        k[a] = '\x1f';
        memcpy(k + a + 1, name, b + 1);
    }
    return k;
}

struct trg *trg_find(struct trg_loop *l, const char *pipeline, const char *name)
{
    char *k = make_key(pipeline, name);
    struct trg *t = k ? tr_hmap_gets(&l->map, k) : NULL;
    tr_free(k);
    return t;
}

struct trg *trg_add(struct trg_loop *l, const char *pipeline, const char *name)
{
    struct trg *t = tr_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->last = -1;
    t->key = make_key(pipeline, name);
    t->pipeline = tr_strdup(pipeline);
    t->name = tr_strdup(name);
    if (t->key == NULL || t->pipeline == NULL || t->name == NULL ||
        TR_VEC_PUSH(l->all, l->n_all, l->cap_all, t) < 0) {
        trg_free(t);
        return NULL;
    }
    if (tr_hmap_put(&l->map, t->key, strlen(t->key), t) < 0) {
        l->n_all--;
        trg_free(t);
        return NULL;
    }
    return t;
}

static void forget_all(struct trg_loop *l)
{
    for (size_t i = 0; i < l->n_all; i++)
        trg_free(l->all[i]);
    l->n_all = 0;
    tr_hmap_release(&l->map);
    tr_hmap_init(&l->map);
    for (size_t i = 0; i < l->n_firings; i++)
        tr_free(l->firings[i].stats);
    l->n_firings = 0;
    for (size_t i = 0; i < l->n_changed; i++)
        tr_free(l->changed[i]);
    l->n_changed = 0;
    l->gen++;
}

static void on_tick(uv_timer_t *h);

int trg_open(struct api *s, struct tr_error *err)
{
    struct trg_loop *l = tr_calloc(1, sizeof(*l));
    if (l == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    tr_hmap_init(&l->map);
    const char *cf = getenv(TRG_CLOCK_ENV);
    if (cf != NULL && cf[0] != '\0' && (l->clock_file = tr_strdup(cf)) == NULL) {
        tr_free(l);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    uv_timer_init(s->loop, &l->tick);
    l->tick.data = s;
    s->trg = l;
    return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct trg_loop *l = h->data;
    tr_free(l->clock_file);
    tr_free(l->all);
    tr_free(l->firings);
    tr_free(l->changed);
    tr_free(l);
}

void trg_close(struct api *s)
{
    struct trg_loop *l = loop_of(s);
    if (l == NULL)
        return;
    /* Answers still to come (sandbox_close cancels them) see a new generation. */
    forget_all(l);
    tr_hmap_release(&l->map);
    uv_timer_stop(&l->tick);
    l->tick.data = l;
    uv_close((uv_handle_t *)&l->tick, on_tick_closed);
    s->trg = NULL;
}

/* ====================================================================== */
/* Registration                                                            */
/* ====================================================================== */

/* Splits "name[@version]" into name (out, size) and the version or NULL. */
static const char *split_ref(const char *ref, char *name, size_t size)
{
    const char *at = strchr(ref, '@');
    size_t n = at ? (size_t)(at - ref) : strlen(ref);
    snprintf(name, size, "%.*s", (int)TR_MIN(n, size - 1), ref);
    return at ? at + 1 : NULL;
}

struct reg_find
{
    char digest[65];
    bool found;
};

static int reg_found(const struct tr_pipeline_rec *rec, void *arg)
{
    struct reg_find *f = arg;
    snprintf(f->digest, sizeof(f->digest), "%s", rec->digest);
    f->found = true;
    return 0;
}

/* The digest the registered ref points at, from this turn's registrations or the state. */
static int resolve_ref(struct api *s, const char *ref, struct reg_find *f)
{
    char name[256];
    const char *version = split_ref(ref, name, sizeof(name));
    f->found = false;
    for (size_t i = s->batch->n_pipes; i-- > 0;) {
        const struct tr_pipeline_rec *p = &s->batch->pipes[i];
        if (strcmp(p->name, name) == 0 && (version == NULL || strcmp(p->version, version) == 0))
            return reg_found(p, f);
    }
    int rc = tr_state_get_pipeline(s->state, name, version, reg_found, f);
    return rc == TR_ENOENT ? 0 : rc;
}

bool trg_check(struct api *s, const struct tr_pipeline_def *def, struct tr_http_req *req)
{
    for (uint32_t i = 0; i < def->n_triggers; i++) {
        const struct tr_trigger_def *t = &def->triggers[i];
        char name[256];
        const char *version = split_ref(t->run, name, sizeof(name));
        if (strcmp(name, def->name) == 0 && (version == NULL || strcmp(version, def->version) == 0))
            continue; /* the pipeline itself, being registered */
        struct reg_find f;
        int rc = resolve_ref(s, t->run, &f);
        if (rc < 0) {
            tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
            return false;
        }
        /* A trigger starts runs in its pipeline's tenant: only of its pipelines. */
        if (!f.found || !tenant_sees(s, req, TENANT_PIPELINE, name)) {
            char msg[600];
            snprintf(msg, sizeof(msg), "pipeline '%s': trigger '%s': run names no registered "
                     "pipeline '%s'", def->name, t->name, t->run);
            tr_http_respond_error(req, 400, "unknown_pipeline", msg);
            return false;
        }
    }
    return true;
}

/* Copies declaration d of def into t (its state is kept). */
static int set_decl(struct trg *t, const struct tr_pipeline_def *def,
                    const struct tr_trigger_def *d, double now)
{
    struct tr_error err;
    tr_error_init(&err);
    json_t *params = tr_mp_bytes_to_json(d->params, d->params_len, &err);
    char *pj = params ? json_dumps(params, JSON_COMPACT) : NULL;
    json_decref(params);
    char *run = tr_strdup(d->run), *version = tr_strdup(def->version);
    char *cron = d->cron ? tr_strdup(d->cron) : NULL;
    if (pj == NULL || run == NULL || version == NULL || (d->cron && cron == NULL)) {
        tr_free(pj);
        tr_free(run);
        tr_free(version);
        tr_free(cron);
        return TR_ENOMEM;
    }
    bool new_cron = cron != NULL && (t->cron == NULL || strcmp(t->cron, cron) != 0);
    tr_free(t->params_json);
    tr_free(t->run);
    tr_free(t->version);
    tr_free(t->cron);
    t->params_json = pj;
    t->run = run;
    t->version = version;
    t->cron = cron;
    t->on = d->on;
    t->has_when = d->has_when;
    t->cooldown = d->cooldown;
    if (strcmp(t->digest, def->digest) != 0) {
        memcpy(t->digest, def->digest, sizeof(t->digest));
        tr_free(t->src);
        t->src = NULL;
    }
    if (cron != NULL && tr_cron_parse(cron, &t->cr, &err) == 0 && (new_cron || t->next_due <= 0))
        t->next_due = tr_cron_next(&t->cr, now);
    if (cron == NULL)
        t->next_due = 0;
    /* A new registration is a new chance: an error that disabled it is cleared. */
    tr_free(t->error);
    t->error = NULL;
    t->removed = false;
    t->dirty = true;
    return 0;
}

int trg_register(struct api *s, const struct tr_pipeline_def *def)
{
    struct trg_loop *l = loop_of(s);
    double now = trg_now(l);
    for (uint32_t i = 0; i < def->n_triggers; i++) {
        const struct tr_trigger_def *d = &def->triggers[i];
        struct trg *t = trg_find(l, def->name, d->name);
        if (t == NULL && (t = trg_add(l, def->name, d->name)) == NULL)
            return TR_ENOMEM;
        int rc = set_decl(t, def, d, now);
        if (rc < 0)
            return rc;
        tr_info("trigger registered pipeline=%s trigger=%s on=%s run=%s", def->name, d->name,
                tr_trigger_on_names[d->on], d->run);
    }
    for (size_t i = 0; i < l->n_all; i++) {
        struct trg *t = l->all[i];
        if (!t->removed && strcmp(t->pipeline, def->name) == 0 &&
            tr_pipeline_find_trigger(def, t->name) == NULL) {
            t->removed = true;
            t->dirty = true;
        }
    }
    if (def->n_triggers > 0 && !uv_is_active((uv_handle_t *)&l->tick))
        uv_timer_start(&l->tick, on_tick, 0, l->clock_file ? TICK_TEST_MS : TICK_MS);
    return 0;
}

/* ====================================================================== */
/* Firing                                                                  */
/* ====================================================================== */

static void disable(struct trg *t, const char *why)
{
    tr_warn("trigger disabled pipeline=%s trigger=%s: %s", t->pipeline, t->name, why);
    tr_free(t->error);
    t->error = tr_strdup(why);
    t->dirty = true;
}

/* The run's params: the trigger's, plus trigger = {pipeline, name, stats}. */
static json_t *run_params(const struct trg *t, const char *stats)
{
    json_t *p = json_loads(t->params_json ? t->params_json : "{}", 0, NULL);
    json_t *trig = json_object();
    json_t *st = stats ? json_loads(stats, 0, NULL) : NULL;
    if (p == NULL || !json_is_object(p) || trig == NULL) {
        json_decref(p);
        json_decref(trig);
        json_decref(st);
        return NULL;
    }
    json_object_set_new(trig, "pipeline", json_string(t->pipeline));
    json_object_set_new(trig, "name", json_string(t->name));
    json_object_set_new(trig, "stats", st ? st : json_null());
    json_object_set_new(p, "trigger", trig);
    return p;
}

/*
 * Starts the run and records the firing, both for this turn's commit: the
 * run (dirty_runs), the firing and the trigger's state (trg_put_dirty) are
 * one transaction.
 */
static void start_run(struct api *s, struct trg *t, struct pipeline_entry *pe, double at,
                      const char *stats)
{
    struct trg_loop *l = loop_of(s);
    t->last = 1;
    t->dirty = true;
    json_t *params = run_params(t, stats);
    char *stats_copy = tr_strdup(stats ? stats : "null");
    struct tr_error err;
    tr_error_init(&err);
    struct run *r = NULL;
    int rc = params && stats_copy ? run_new(s->core, pe, params, &r, &err) : TR_ENOMEM;
    json_decref(params);
    if (rc == 0 && TR_VEC_RESERVE(l->firings, l->cap_firings, l->n_firings + 1) != 0) {
        /* The run exists in memory only; it is cancelled before any commit. */
        if (run_cancel(r, "out of memory while recording its trigger's firing") < 0)
            tr_warn("cannot cancel run=%s", r->id);
        rc = TR_ENOMEM;
    }
    if (rc < 0) {
        tr_free(stats_copy);
        tr_err("trigger cannot start its run pipeline=%s trigger=%s run=%s: %s", t->pipeline,
               t->name, t->run, err.msg[0] ? err.msg : tr_strerror(rc));
        return;
    }
    struct firing *f = &l->firings[l->n_firings++];
    f->t = t;
    f->at = at;
    snprintf(f->run_id, sizeof(f->run_id), "%s", r->id);
    f->stats = stats_copy;
    t->fired_at = at;
    t->fired++;
    tr_free(t->last_run);
    t->last_run = tr_strdup(r->id);
    run_start(r);
    tr_info("trigger fired pipeline=%s trigger=%s run=%s started=%s", t->pipeline, t->name,
            r->id, pe->def->name);
    char who[AUTH_NAME_MAX];
    snprintf(who, sizeof(who), "trigger:%.50s", t->name);
    tr_audit_record_as(s, tenant_owner(s, TENANT_PIPELINE, pe->def->name), who, NULL,
                       "run.start", r->id, NULL);
}

static void fire_ctx_free(struct fire_ctx *c)
{
    tr_free(c->stats);
    tr_free(c);
}

static void evaluate(struct api *s, struct trg *t);

static void on_run_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct fire_ctx *c = arg;
    struct api *s = c->s;
    struct trg_loop *l = loop_of(s);
    if (l == NULL || c->gen != l->gen) {
        fire_ctx_free(c);
        return;
    }
    struct trg *t = c->t;
    t->firing = false;
    if (pe == NULL && err->code == TR_ECANCELED) {
        fire_ctx_free(c); /* the pool is closing: nothing more is started */
        return;
    }
    if (pe == NULL) {
        {
            char why[600];
            snprintf(why, sizeof(why), "cannot read the pipeline of run '%s': %s", t->run,
                     err->msg);
            disable(t, why);
        }
    } else if (leader_acting(s->leader)) {
        start_run(s, t, pe, c->at, c->stats);
    }
    if (t->again) {
        t->again = false;
        evaluate(s, t);
    }
    fire_ctx_free(c);
}

/* Fires t now (its checks passed): finds the run's pipeline, then start_run. */
static void fire(struct api *s, struct trg *t, double at, const char *stats)
{
    struct trg_loop *l = loop_of(s);
    struct reg_find f;
    int rc = resolve_ref(s, t->run, &f);
    if (rc < 0) {
        tr_err("trigger cannot read the state pipeline=%s trigger=%s: %s", t->pipeline, t->name,
               tr_strerror(rc));
        return;
    }
    if (!f.found) {
        char why[400];
        snprintf(why, sizeof(why), "run names no registered pipeline '%s'", t->run);
        disable(t, why);
        return;
    }
    struct pipeline_entry *pe = pipe_lookup(s->pipes, f.digest);
    if (pe != NULL) {
        start_run(s, t, pe, at, stats);
        return;
    }
    char *src = NULL;
    size_t len = 0;
    rc = tr_state_get_source(s->state, f.digest, &src, &len);
    struct fire_ctx *c = rc == 0 ? tr_calloc(1, sizeof(*c)) : NULL;
    if (c != NULL) {
        *c = (struct fire_ctx){.s = s, .t = t, .gen = l->gen, .at = at,
                               .stats = tr_strdup(stats ? stats : "null")};
        t->firing = true;
        char name[160];
        snprintf(name, sizeof(name), "%s.lua", t->run);
        rc = c->stats ? pipe_load_async(s->pipes, src, len, name, on_run_loaded, c) : TR_ENOMEM;
        if (rc < 0) {
            t->firing = false;
            fire_ctx_free(c);
        }
    } else if (rc == 0) {
        rc = TR_ENOMEM;
    }
    tr_free(src);
    if (rc < 0)
        tr_err("trigger cannot read the pipeline of its run pipeline=%s trigger=%s run=%s: %s",
               t->pipeline, t->name, t->run, tr_strerror(rc));
}

/* A crossing seen (when turned true): fires unless within the cooldown. */
static void crossed(struct api *s, struct trg *t, double now, const char *stats)
{
    if (t->fired > 0 && now - t->fired_at < t->cooldown) {
        t->last = 1; /* the crossing is spent: the next one comes after a false */
        t->suppressed++;
        t->dirty = true;
        tr_info("trigger crossing within its cooldown pipeline=%s trigger=%s", t->pipeline,
                t->name);
        return;
    }
    fire(s, t, now, stats);
}

/* ====================================================================== */
/* Evaluation                                                              */
/* ====================================================================== */

/* The statistics `when` gets, as JSON text and msgpack; counts into t->seen_*. */
static int stats_of(struct api *s, struct trg *t, double now, char **json_text,
                    msgpack_sbuffer *mp)
{
    struct fb_stats st;
    int rc = fb_stats_read(s, t->pipeline, &st);
    if (rc < 0)
        return rc;
    t->seen_fb = st.count;
    t->seen_lq = st.queued;
    t->seen_ll = st.labelled;
    (void)now;
    /* The window is the wall clock's last hour, whatever clock triggers run on. */
    json_t *j = fb_stats_json(&st, tr_now());
    if (j == NULL)
        return TR_ENOMEM;
    *json_text = json_dumps(j, JSON_COMPACT);
    rc = *json_text ? 0 : TR_ENOMEM;
    if (rc == 0 && mp != NULL) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, mp, msgpack_sbuffer_write);
        rc = tr_json_to_mp(j, &pk);
    }
    json_decref(j);
    return rc;
}

static void eval_ctx_free(struct eval_ctx *c)
{
    tr_free(c->stats);
    tr_free(c);
}

static void on_verdict(void *arg, int verdict, struct tr_error *err)
{
    struct eval_ctx *c = arg;
    struct api *s = c->s;
    struct trg_loop *l = loop_of(s);
    if (l == NULL || c->gen != l->gen || (err != NULL && err->code == TR_ECANCELED)) {
        eval_ctx_free(c);
        return;
    }
    struct trg *t = c->t;
    t->in_flight = false;
    if (!leader_acting(s->leader) || t->removed || t->error != NULL) {
        /* nothing: a new leader evaluates again */
    } else if (verdict < 0) {
        int code = err ? err->code : TR_EIO;
        if (code == TR_ELIMIT || code == TR_ELUA || code == TR_EINVAL || code == TR_ENOENT ||
            code == TR_EPROTO) {
            char why[TR_ERROR_MSG_MAX + 32];
            snprintf(why, sizeof(why), "when: %s", err && err->msg[0] ? err->msg
                                                                       : tr_strerror(code));
            disable(t, why);
        } else {
            /* The pool's own trouble (no process could start): not the trigger's fault. */
            tr_warn("trigger not evaluated pipeline=%s trigger=%s: %s", t->pipeline, t->name,
                    err && err->msg[0] ? err->msg : tr_strerror(code));
        }
    } else if (verdict == 1) {
        if (t->last != 1)
            crossed(s, t, trg_now(l), c->stats);
    } else if (t->last != 0) {
        t->last = 0;
        t->dirty = true;
    }
    if (t->again && !t->firing) {
        t->again = false;
        evaluate(s, t);
    }
    eval_ctx_free(c);
}

/* The declaring pipeline's source, read once per digest. */
static int source_of(struct api *s, struct trg *t)
{
    if (t->src != NULL)
        return 0;
    struct pipeline_entry *pe = pipe_lookup(s->pipes, t->digest);
    if (pe != NULL && pe->def->source != NULL) {
        t->src = tr_strndup(pe->def->source, pe->def->source_len);
        t->src_len = pe->def->source_len;
        return t->src ? 0 : TR_ENOMEM;
    }
    return tr_state_get_source(s->state, t->digest, &t->src, &t->src_len);
}

static void evaluate(struct api *s, struct trg *t)
{
    struct trg_loop *l = loop_of(s);
    if (t->removed || t->error != NULL || !t->has_when || t->on == TR_TRIGGER_SCHEDULE)
        return;
    if (t->in_flight || t->firing) {
        t->again = true;
        return;
    }
    int rc = source_of(s, t);
    if (rc < 0) {
        tr_err("trigger cannot read its pipeline's source pipeline=%s trigger=%s: %s",
               t->pipeline, t->name, tr_strerror(rc));
        return;
    }
    struct eval_ctx *c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    *c = (struct eval_ctx){.s = s, .t = t, .gen = l->gen};
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    rc = stats_of(s, t, trg_now(l), &c->stats, &mp);
    char chunk[160];
    snprintf(chunk, sizeof(chunk), "%s.lua", t->pipeline);
    if (rc == 0)
        rc = sandbox_when(s->pipes->sandbox, t->src, t->src_len, chunk, t->name, mp.data, mp.size,
                          on_verdict, c);
    msgpack_sbuffer_destroy(&mp);
    if (rc < 0) {
        tr_err("trigger cannot be evaluated pipeline=%s trigger=%s: %s", t->pipeline, t->name,
               tr_strerror(rc));
        eval_ctx_free(c);
        return;
    }
    t->in_flight = true;
}

/* ====================================================================== */
/* Schedule                                                                */
/* ====================================================================== */

static void on_tick(uv_timer_t *h)
{
    struct api *s = h->data;
    struct trg_loop *l = loop_of(s);
    if (l == NULL || !leader_acting(s->leader) || s->batch->failing)
        return;
    double now = -1;
    for (size_t i = 0; i < l->n_all; i++) {
        struct trg *t = l->all[i];
        if (t->on != TR_TRIGGER_SCHEDULE || t->removed || t->error || t->firing ||
            t->cron == NULL || !(t->next_due > 0))
            continue;
        if (now < 0)
            now = trg_now(l);
        if (now < t->next_due)
            continue;
        /* Every slot missed while no scheduler led is covered by this one firing. */
        t->next_due = tr_cron_next(&t->cr, now); /* written with the firing (start_run) */
        char *stats = NULL;
        if (stats_of(s, t, now, &stats, NULL) < 0) {
            tr_free(stats);
            stats = NULL;
        }
        if (t->fired > 0 && now - t->fired_at < t->cooldown) {
            t->suppressed++;
            t->dirty = true;
        } else
            fire(s, t, now, stats);
        tr_free(stats);
    }
}

/* ====================================================================== */
/* The turn                                                                */
/* ====================================================================== */

bool trg_have_dirty(const struct api *s)
{
    const struct trg_loop *l = loop_of(s);
    if (l == NULL)
        return false;
    if (l->n_firings > 0)
        return true;
    for (size_t i = 0; i < l->n_all; i++) {
        if (l->all[i]->dirty)
            return true;
    }
    return false;
}

static bool has_triggers(const struct trg_loop *l, const char *pipeline)
{
    for (size_t i = 0; i < l->n_all; i++) {
        if (!l->all[i]->removed && strcmp(l->all[i]->pipeline, pipeline) == 0)
            return true;
    }
    return false;
}

/* Notes the pipelines whose statistics this batch changes (fb's dirty ones). */
static void note_changed(struct api *s, struct trg_loop *l)
{
    for (size_t i = 0; i < l->n_changed; i++)
        tr_free(l->changed[i]);
    l->n_changed = 0;
    if (s->fb == NULL || l->n_all == 0)
        return;
    size_t it = 0;
    struct fb_stats *st;
    while ((st = tr_hmap_next(&s->fb->stats, &it)) != NULL) {
        if (!st->dirty || !has_triggers(l, st->pipeline))
            continue;
        char *p = tr_strdup(st->pipeline);
        if (p == NULL || TR_VEC_PUSH(l->changed, l->n_changed, l->cap_changed, p) < 0)
            tr_free(p); /* benign: the trigger is evaluated at the next change */
    }
}

int trg_put_dirty(struct api *s)
{
    struct trg_loop *l = loop_of(s);
    if (l == NULL)
        return 0;
    note_changed(s, l);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->n_firings; i++) {
        const struct firing *f = &l->firings[i];
        struct tr_firing_rec rec = {.pipeline = f->t->pipeline, .trigger = f->t->name,
                                    .fired_at = f->at, .run_id = f->run_id,
                                    .stats_json = f->stats};
        rc = tr_state_put_firing(s->state, &rec);
    }
    for (size_t i = 0; rc == 0 && i < l->n_all; i++) {
        struct trg *t = l->all[i];
        if (!t->dirty)
            continue;
        char *json = trg_row_json(t);
        struct tr_trigger_rec rec = {.pipeline = t->pipeline, .trigger = t->name, .json = json};
        rc = json ? tr_state_put_trigger(s->state, &rec) : TR_ENOMEM;
        free(json);
    }
    return rc;
}

/* Whether the statistics t watches moved since its last evaluation. */
static bool watched_changed(struct api *s, const struct trg *t)
{
    struct fb_stats st;
    if (fb_stats_read(s, t->pipeline, &st) < 0)
        return true;
    if (t->on == TR_TRIGGER_FEEDBACK)
        return st.count != t->seen_fb;
    return st.queued != t->seen_lq || st.labelled != t->seen_ll;
}

void trg_committed(struct api *s)
{
    struct trg_loop *l = loop_of(s);
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n_firings; i++)
        tr_free(l->firings[i].stats);
    l->n_firings = 0;
    for (size_t i = 0; i < l->n_all; i++)
        l->all[i]->dirty = false;
    /* Evaluated only now, on durable statistics: a firing never rests on a
     * feedback that a failed commit did not keep. */
    for (size_t c = 0; c < l->n_changed; c++) {
        for (size_t i = 0; i < l->n_all; i++) {
            struct trg *t = l->all[i];
            if (strcmp(t->pipeline, l->changed[c]) == 0 && watched_changed(s, t))
                evaluate(s, t);
        }
        tr_free(l->changed[c]);
    }
    l->n_changed = 0;
}

void trg_on_stats(void *arg, const char *json, size_t len)
{
    struct api *s = arg;
    struct trg_loop *l = loop_of(s);
    if (l == NULL)
        return;
    if (json == NULL) {
        /* History was lost: read the statistics again and look at everything. */
        fb_reset(s);
        for (size_t i = 0; i < l->n_all; i++) {
            if (!l->all[i]->removed)
                evaluate(s, l->all[i]);
        }
        return;
    }
    char *pipeline = NULL;
    int rc = fb_stats_seen(s, json, len, &pipeline);
    if (rc < 0)
        tr_warn("statistics seen on the state's watch: %s", tr_strerror(rc));
    if (pipeline == NULL)
        return;
    for (size_t i = 0; i < l->n_all; i++) {
        struct trg *t = l->all[i];
        if (!t->removed && strcmp(t->pipeline, pipeline) == 0 && watched_changed(s, t))
            evaluate(s, t);
    }
    tr_free(pipeline);
}

int trg_lead(struct api *s, struct tr_error *err)
{
    struct trg_loop *l = loop_of(s);
    forget_all(l);
    int rc = tr_state_list_triggers(s->state, NULL, trg_load_row, l);
    if (rc < 0) {
        forget_all(l);
        return tr_error_set(err, rc, "cannot read the triggers from the state: %s",
                            tr_strerror(rc));
    }
    size_t live = 0;
    for (size_t i = 0; i < l->n_all; i++) {
        struct trg *t = l->all[i];
        if (t->removed)
            continue;
        live++;
        /* What the old leader may have seen but not acted on is seen again. */
        evaluate(s, t);
    }
    if (live > 0) {
        tr_info("triggers loaded count=%zu", live);
        uv_timer_start(&l->tick, on_tick, 0, l->clock_file ? TICK_TEST_MS : TICK_MS);
    }
    return 0;
}
