/*
 * recover.c - resuming unfinished runs after a restart.
 *
 * Recovery is a small state machine on the loop: list the unfinished runs,
 * read each distinct pipeline through the sandbox (loader.c; never Lua in
 * this process, so a hostile file stored in the state costs at most the
 * wall-clock limit, as at submit), then resume the runs whose pipeline
 * loaded. A run whose pipeline cannot be read (a Lua error, a limit, its
 * source missing) is stored as failed with the reason; one that failed for
 * a reason of this process (no sandbox process, out of memory) is left as
 * it is for the next start. Meanwhile the scheduler serves: new runs start
 * and workers connect.
 *
 *
 * Dispatches are not durable; results are. At start-up every run the state
 * lists as queued or running is rebuilt from its pipeline source, and its
 * durable task records are replayed through the ordinary readiness path:
 * when an instance would become ready and a record says it already
 * succeeded (or failed for good), the record is applied instead, which
 * cascades through countdowns and map fan-outs exactly as the live results
 * did. Instances without a record are dispatched again (at least once
 * delivery; ctx.attempt plus the run and task ids make an idempotency key).
 */
#include "scheduler/recover.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/wire/mp_json.h"
#include "scheduler/core_flow.h"
#include "scheduler/usage.h"

struct rec_copy
{
    char key[300];        /* "task\0index" */
    size_t klen;
    uint8_t state;        /* TR_TASK_SUCCEEDED or TR_TASK_FAILED */
    uint32_t attempts;
    double started_at, finished_at;
    char *worker;
    char *output;
    size_t output_len;
    char *error;
    char *logs;
    bool cached;
    char *usage;          /* the instance's LLM calls (msgpack array), NULL when none */
    size_t usage_len;
};

static size_t rec_key(char *out, size_t size, const char *task, uint32_t index)
{
    int n = snprintf(out, size, "%s%c%u", task, '\0', index);
    return n < 0 ? 0 : TR_MIN((size_t)n, size - 1);
}

static void rec_free(struct rec_copy *rc)
{
    tr_free(rc->worker);
    tr_free(rc->output);
    tr_free(rc->error);
    tr_free(rc->logs);
    tr_free(rc->usage);
    tr_free(rc);
}

static int collect_task(const struct tr_task_rec *rec, void *arg)
{
    struct tr_hmap *m = arg;
    uint8_t st;
    if (strcmp(rec->state, "succeeded") == 0)
        st = TR_TASK_SUCCEEDED;
    else if (strcmp(rec->state, "failed") == 0)
        st = TR_TASK_FAILED;
    else if (strcmp(rec->state, "skipped") == 0)
        st = TR_TASK_SKIPPED;   /* trellis.skip: not derived from upstream records */
    else if (strcmp(rec->state, "running") == 0)
        st = TR_TASK_RUNNING;   /* a waiting approval or subrun (core_flow.h) */
    else
        return 0;
    struct rec_copy *rc = tr_calloc(1, sizeof(*rc));
    if (rc == NULL)
        return TR_ENOMEM;
    rc->klen = rec_key(rc->key, sizeof(rc->key), rec->name, rec->index);
    rc->state = st;
    rc->attempts = rec->attempts;
    rc->started_at = rec->started_at;
    rc->finished_at = rec->finished_at;
    rc->cached = rec->cached;
    rc->worker = rec->worker ? tr_strdup(rec->worker) : NULL;
    rc->error = rec->error ? tr_strdup(rec->error) : NULL;
    rc->logs = rec->logs ? tr_strdup(rec->logs) : NULL;
    if (rec->output_len) {
        rc->output = tr_memdup(rec->output, rec->output_len);
        rc->output_len = rec->output_len;
    }
    if (rec->usage_len) {
        rc->usage = tr_memdup(rec->usage, rec->usage_len);
        rc->usage_len = rc->usage ? rec->usage_len : 0;
    }
    if (tr_hmap_put(m, rc->key, rc->klen, rc) < 0) {
        rec_free(rc);
        return TR_ENOMEM;
    }
    return 0;
}

/* The run's replay hook: applies an instance's durable record, if it has one. */
static void replay(void *arg, struct inst *in)
{
    struct tr_hmap *recs = arg;
    char key[300];
    size_t klen = rec_key(key, sizeof(key), inst_def(in)->name, in->index);
    struct rec_copy *rc = tr_hmap_get(recs, key, klen);
    if (rc == NULL)
        return;
    in->attempts = (uint16_t)TR_MIN(rc->attempts, 65535u);
    in->started_at = rc->started_at;
    if (rc->state == TR_TASK_RUNNING) {
        /* A wait in the scheduler: the instance stays pending, and
         * flow_make_ready waits again from the same start, or for the same child. */
        if (inst_def(in)->kind == TR_KIND_SUBRUN && rc->worker != NULL) {
            in->worker_id = rc->worker;
            rc->worker = NULL;
            in->waiting = true;
        }
        return;
    }
    in->finished_at = rc->finished_at;
    in->worker_id = rc->worker;
    rc->worker = NULL;
    if (rc->logs) {
        struct tr_str line = tr_str_c(rc->logs);
        inst_logs_add(in, &line, 1);
    }
    /* The record's list becomes the instance's (re-framed by usage_concat) and
     * counts again in the run's sum, which recovery starts from nothing. */
    inst_usage_add(in, rc->usage, rc->usage_len);
    if (rc->state == TR_TASK_SUCCEEDED) {
        in->has_child = inst_def(in)->kind == TR_KIND_SUBRUN;
        inst_complete(in, rc->output, rc->output_len, rc->cached);
    } else if (rc->state == TR_TASK_SKIPPED) {
        inst_skip_final(in, rc->error, false);
    } else {
        in->error = rc->error;
        rc->error = NULL;
        inst_fail_final(in, NULL);
    }
}

/* ====================================================================== */
/* The recovery state machine                                              */
/* ====================================================================== */

/* An unfinished run as the state lists it (strings owned). */
struct rec_run
{
    char *id, *pipeline, *version, *digest, *params_json, *state;
    double created_at, started_at;
    char *error;               /* set when its pipeline cannot be read */
};

/* A distinct pipeline of the unfinished runs. */
struct rec_pipe
{
    char digest[65];
    struct recovery *rv;
    struct pipeline_entry *pe; /* loaded (a reference held), or NULL */
    int code;                  /* why not, when not */
    char *error;
};

struct recovery
{
    struct recovery **slot;    /* the owner's pointer, cleared when recovery ends */
    struct core *core;
    struct pipes *p;
    struct tr_state *state;
    uv_loop_t *loop;
    struct leader *leader;
    const bool *stopping;
    struct rec_run *runs;
    size_t n_runs, cap_runs;
    struct tr_hmap pipes;      /* digest -> struct rec_pipe */
    uint32_t loading;          /* loads not answered yet */
    bool listing;              /* still starting loads: not finished even at 0 */
    uint32_t resumed, failed, left;
    uv_timer_t retry;          /* writes the failed runs once the leader may commit */
    bool timer_open;
};

static void rec_run_release(struct rec_run *r)
{
    tr_free(r->id);
    tr_free(r->pipeline);
    tr_free(r->version);
    tr_free(r->digest);
    tr_free(r->params_json);
    tr_free(r->state);
    tr_free(r->error);
}

/* Drops the pipeline references at once: the cache may be freed next. */
static void release_pipes(struct recovery *rv)
{
    size_t it = 0;
    struct rec_pipe *rp;
    while ((rp = tr_hmap_next(&rv->pipes, &it)) != NULL) {
        if (rp->pe != NULL)
            pipe_unref(rp->pe);
        tr_free(rp->error);
        tr_free(rp);
    }
    tr_hmap_release(&rv->pipes);
    tr_hmap_init(&rv->pipes);
}

static void recovery_free(struct recovery *rv)
{
    release_pipes(rv);
    for (size_t i = 0; i < rv->n_runs; i++)
        rec_run_release(&rv->runs[i]);
    tr_free(rv->runs);
    if (*rv->slot == rv)
        *rv->slot = NULL;
    tr_free(rv);
}

static void on_retry_closed(uv_handle_t *h)
{
    recovery_free(h->data);
}

/* Frees rv now, or once its timer is closed. */
static void recovery_end(struct recovery *rv)
{
    if (*rv->slot == rv)
        *rv->slot = NULL;
    release_pipes(rv);
    if (rv->timer_open)
        uv_close((uv_handle_t *)&rv->retry, on_retry_closed);
    else
        recovery_free(rv);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? tr_strdup(s) : NULL;
}

static int collect_run(const struct tr_run_rec *rec, void *arg)
{
    struct recovery *rv = arg;
    if (TR_VEC_RESERVE(rv->runs, rv->cap_runs, rv->n_runs + 1) != 0)
        return TR_ENOMEM;
    struct rec_run *r = &rv->runs[rv->n_runs];
    memset(r, 0, sizeof(*r));
    r->id = dup_or_null(rec->id);
    r->pipeline = dup_or_null(rec->pipeline ? rec->pipeline : "pipeline");
    r->version = dup_or_null(rec->version ? rec->version : "");
    r->digest = dup_or_null(rec->digest);
    r->params_json = dup_or_null(rec->params_json);
    r->state = dup_or_null(rec->state);
    r->created_at = rec->created_at;
    r->started_at = rec->started_at;
    rv->n_runs++;
    if (r->id == NULL || r->pipeline == NULL || r->version == NULL || r->digest == NULL ||
        r->state == NULL || (rec->params_json != NULL && r->params_json == NULL))
        return TR_ENOMEM;
    return 0;
}

static int resume_run(struct recovery *rv, const struct rec_run *rec, struct pipeline_entry *pe)
{
    struct core *s = rv->core;
    struct tr_error err;
    tr_error_init(&err);
    pe->stored = true;
    json_t *params = rec->params_json ? json_loads(rec->params_json, 0, NULL) : NULL;
    struct run *r = NULL;
    /* run_new names a new id; a resumed run keeps its own. */
    int rc = run_new(s, pe, params, &r, &err);
    json_decref(params);
    if (rc < 0) {
        tr_err("cannot resume run=%s: %s", rec->id, err.msg);
        return rc;
    }
    s->next_run--;
    if (run_rename(r, rec->id) < 0)
        oom_fatal("resuming a run");
    r->created_at = rec->created_at;
    r->started_at = rec->started_at;
    flow_run_resumed(r); /* a parent resumed before it may wait for it */
    if (strcmp(rec->state, "running") == 0)
        r->state = TR_RUN_RUNNING;
    struct tr_hmap recs;
    tr_hmap_init(&recs);
    rc = tr_state_list_tasks(rv->state, rec->id, collect_task, &recs);
    r->replay = replay;
    r->replay_arg = &recs;
    if (rc == 0)
        run_start(r);
    r->replay = NULL;
    r->replay_arg = NULL;
    size_t it = 0;
    struct rec_copy *c;
    while ((c = tr_hmap_next(&recs, &it)) != NULL)
        rec_free(c);
    tr_hmap_release(&recs);
    if (rc < 0) {
        tr_err("cannot resume run=%s: its task records cannot be read: %s", rec->id,
               tr_strerror(rc));
        return rc;
    }
    tr_info("resumed run=%s pipeline=%s tasks_left=%u", r->id, rec->pipeline, r->n_tasks_left);
    return 0;
}

/* Stores the runs whose pipeline could not be read as failed; TR_EAGAIN while
 * this scheduler may not commit yet. */
static int write_failures(struct recovery *rv)
{
    if (!leader_may_act(rv->leader))
        return TR_EAGAIN;
    int rc = tr_state_begin(rv->state);
    double now = tr_now();
    for (size_t i = 0; rc == 0 && i < rv->n_runs; i++) {
        const struct rec_run *r = &rv->runs[i];
        if (r->error == NULL)
            continue;
        struct tr_run_rec rec = {
            .id = r->id, .pipeline = r->pipeline, .version = r->version, .digest = r->digest,
            .params_json = r->params_json, .state = "failed", .created_at = r->created_at,
            .started_at = r->started_at, .finished_at = now, .error = r->error,
        };
        rc = tr_state_put_run(rv->state, &rec);
    }
    struct tr_error err;
    tr_error_init(&err);
    if (rc == 0)
        return tr_state_commit(rv->state, &err);
    tr_state_rollback(rv->state);
    return rc;
}

static void on_retry(uv_timer_t *t)
{
    struct recovery *rv = t->data;
    if (*rv->stopping || write_failures(rv) == 0)
        recovery_end(rv);
}

/* A load failure that says something about the file, not about this process. */
static bool fails_the_run(int code)
{
    return code != TR_ECANCELED && code != TR_EUNAVAIL && code != TR_ENOMEM && code != TR_EIO &&
           code != TR_EPROTO;
}

/* Every load answered: resume what loaded, fail what cannot. */
static void maybe_finish(struct recovery *rv)
{
    if (rv->listing || rv->loading > 0)
        return;
    if (*rv->stopping) {
        recovery_end(rv);
        return;
    }
    uint32_t to_write = 0;
    for (size_t i = 0; i < rv->n_runs; i++) {
        struct rec_run *r = &rv->runs[i];
        struct rec_pipe *rp = tr_hmap_get(&rv->pipes, r->digest, strlen(r->digest));
        if (rp != NULL && rp->pe != NULL) {
            if (resume_run(rv, r, rp->pe) == 0)
                rv->resumed++;
            else
                rv->left++;
            continue;
        }
        const char *why = rp != NULL && rp->error != NULL ? rp->error : "out of memory";
        if (rp == NULL || !fails_the_run(rp->code)) {
            tr_err("cannot resume run=%s now (left for the next start): %s", r->id, why);
            rv->left++;
            continue;
        }
        size_t n = strlen(why) + 64;
        r->error = tr_malloc(n);
        if (r->error == NULL)
            oom_fatal("recovery");
        snprintf(r->error, n, "cannot resume: the pipeline cannot be read: %s", why);
        tr_err("run=%s failed: %s", r->id, r->error);
        rv->failed++;
        to_write++;
    }
    /* After every resume: a resumed parent may wait for one of these (a subrun). */
    for (size_t i = 0; to_write > 0 && i < rv->n_runs; i++) {
        if (rv->runs[i].error != NULL)
            flow_child_lost(rv->core, rv->runs[i].id, rv->runs[i].error);
    }
    if (rv->n_runs > 0)
        tr_info("recovery: %u runs resumed, %u failed (their pipeline cannot be read), %u left",
                rv->resumed, rv->failed, rv->left);
    if (to_write == 0 || write_failures(rv) == 0) {
        recovery_end(rv);
        return;
    }
    uv_timer_init(rv->loop, &rv->retry);
    rv->retry.data = rv;
    rv->timer_open = true;
    uv_timer_start(&rv->retry, on_retry, 200, 200);
}

static void on_pipe_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct rec_pipe *rp = arg;
    struct recovery *rv = rp->rv;
    if (pe != NULL) {
        pipe_ref(pe); /* kept while the other pipelines load */
        rp->pe = pe;
    } else {
        rp->code = err->code;
        rp->error = tr_strdup(err->msg[0] ? err->msg : tr_strerror(err->code));
    }
    rv->loading--;
    maybe_finish(rv);
}

/* Starts reading one distinct pipeline; its answer may come at once. */
static int load_pipe(struct recovery *rv, const struct rec_run *r)
{
    if (tr_hmap_get(&rv->pipes, r->digest, strlen(r->digest)) != NULL)
        return 0;
    struct rec_pipe *rp = tr_calloc(1, sizeof(*rp));
    if (rp == NULL)
        return TR_ENOMEM;
    rp->rv = rv;
    snprintf(rp->digest, sizeof(rp->digest), "%s", r->digest);
    if (tr_hmap_put(&rv->pipes, rp->digest, strlen(rp->digest), rp) < 0) {
        tr_free(rp);
        return TR_ENOMEM;
    }
    struct pipeline_entry *pe = pipe_lookup(rv->p, r->digest);
    if (pe != NULL) {
        pipe_ref(pe);
        rp->pe = pe;
        return 0;
    }
    char *src = NULL;
    size_t len = 0;
    int rc = tr_state_get_source(rv->state, r->digest, &src, &len);
    if (rc < 0) {
        rp->code = rc == TR_ENOENT ? TR_ENOENT : TR_ESTATE;
        rp->error = tr_strdup(rc == TR_ENOENT ? "its source is missing from the state"
                                              : "its source cannot be read from the state");
        return 0;
    }
    rv->loading++;
    rc = pipe_load_async(rv->p, src, len, r->pipeline, on_pipe_loaded, rp);
    tr_free(src);
    if (rc < 0) {
        rv->loading--;
        rp->code = rc;
        rp->error = tr_strdup(tr_strerror(rc));
    }
    return 0;
}

int recover_start(struct recovery **slot, const struct recover_parts *parts,
                  struct tr_error *err)
{
    struct recovery *rv = tr_calloc(1, sizeof(*rv));
    if (rv == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    rv->slot = slot;
    rv->core = parts->core;
    rv->p = parts->pipes;
    rv->state = parts->state;
    rv->loop = parts->loop;
    rv->leader = parts->leader;
    rv->stopping = parts->stopping;
    rv->listing = true;
    tr_hmap_init(&rv->pipes);
    *slot = rv;
    int rc = tr_state_list_runs(rv->state, NULL, true, 0, collect_run, rv);
    if (rc < 0) {
        recovery_free(rv);
        return tr_error_set(err, rc, "cannot list unfinished runs: %s", tr_strerror(rc));
    }
    for (size_t i = 0; i < rv->n_runs; i++) {
        if (load_pipe(rv, &rv->runs[i]) < 0)
            oom_fatal("recovery");
    }
    if (rv->n_runs > 0)
        tr_info("recovery: %zu unfinished runs, %u pipelines to read", rv->n_runs,
                rv->loading);
    rv->listing = false;
    maybe_finish(rv);
    return 0;
}

void recover_close(struct recovery *rv)
{
    /* Called after sandbox_close, which answered every load (cancelled), so
     * what is left is at most a pending write of failed runs; before the
     * pipeline cache is freed, since recovery holds references into it. */
    if (rv != NULL)
        recovery_end(rv);
}
