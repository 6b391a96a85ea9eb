/*
 * core.c - the scheduling core (core.h): runs and task instances, readiness
 * by countdown, map fan-out, results, retries, failure propagation, cancel.
 *
 * Everything here runs on the scheduler's loop thread. A task's countdown is
 * the number of distinct upstream tasks not finished yet; when it reaches 0
 * the task's instances are made (one per element for a mapped task) and
 * become ready. Results change memory at once and queue their records in
 * the batch; nothing they enable is sent before the loop turn has committed
 * that batch (sched.c): a crash can lose a dispatch, never a result a
 * dependant already saw.
 */
#include "scheduler/core.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/retry.h"
#include "lib/wire/mp_json.h"
#include "scheduler/core_flow.h"
#include "scheduler/usage.h"

/* ====================================================================== */
/* Instances                                                               */
/* ====================================================================== */

static void inst_mark_dirty(struct inst *in)
{
    batch_add_inst(in->run->core->batch, in);
}

static void run_mark_dirty(struct run *r)
{
    batch_add_run(r->core->batch, r);
}

/* The instance's countdown reached 0 (or it is to run again): replay its
 * durable record when recovering, else queue it for dispatch. */
static void inst_make_ready(struct inst *in)
{
    struct run *r = in->run;
    if (r->replay != NULL) {
        r->replay(r->replay_arg, in);
        if (in->state != TR_TASK_PENDING)
            return;
    }
    if (inst_def(in)->kind != TR_KIND_RUN && flow_make_ready(in))
        return; /* waits in the scheduler: an approval, or a subrun's known child */
    dispatch_ready(r->core->dispatch, in);
}

static void run_finish(struct run *r);
static void task_finish(struct run *r, uint32_t t);

void inst_complete(struct inst *in, const char *output, size_t len, bool cached)
{
    struct run *r = in->run;
    tr_free_null(&in->output);
    if (len > 0) {
        in->output = tr_memdup(output, len);
        if (in->output == NULL)
            oom_fatal("storing a task output");
    }
    in->output_len = (uint32_t)len;
    in->cached = cached;
    if (in->conc_held) /* a concurrency key's place (dispatch_place.c) */
        dispatch_conc_release(r->core->dispatch, in);
    if (in->finished_at == 0)
        in->finished_at = tr_now();
    inst_set_state(in, TR_TASK_SUCCEEDED);
    inst_mark_dirty(in);
    r->core->cnt->tasks_succeeded++;
    if (cached)
        r->core->cnt->tasks_cached++;
    struct task_rt *trt = &r->tasks[in->task];
    trt->n_done++;
    if (trt->n_done + trt->n_failed == trt->n_inst)
        task_finish(r, in->task);
}

void inst_fail_final(struct inst *in, const char *error)
{
    struct run *r = in->run;
    if (error != NULL && error != in->error) {
        tr_free(in->error);
        in->error = tr_strdup(error);
    }
    if (in->finished_at == 0)
        in->finished_at = tr_now();
    if (in->conc_held) /* a concurrency key's place (dispatch_place.c) */
        dispatch_conc_release(r->core->dispatch, in);
    inst_set_state(in, TR_TASK_FAILED);
    inst_mark_dirty(in);
    r->core->cnt->tasks_failed++;
    struct task_rt *trt = &r->tasks[in->task];
    trt->n_failed++;
    if (trt->n_done + trt->n_failed == trt->n_inst)
        task_finish(r, in->task);
}

void inst_skip_final(struct inst *in, const char *reason, bool upstream_failed)
{
    struct run *r = in->run;
    dispatch_unready(r->core->dispatch, in);
    if (reason != NULL && reason != in->error) {
        tr_free(in->error);
        in->error = tr_strdup(reason);
    }
    in->upstream_failed = upstream_failed;
    in->waiting = false;
    if (in->finished_at == 0)
        in->finished_at = tr_now();
    inst_set_state(in, TR_TASK_SKIPPED);
    r->core->cnt->tasks_skipped++;
    struct task_rt *trt = &r->tasks[in->task];
    trt->n_failed++;
    if (!upstream_failed) {
        trt->n_skipped++;
        inst_mark_dirty(in); /* not derived from upstream records: keep it */
    }
    if (trt->n_done + trt->n_failed == trt->n_inst)
        task_finish(r, in->task);
}

/* ====================================================================== */
/* Readiness and fan-out                                                   */
/* ====================================================================== */

/* Reads the array header at p; returns element count or -1 when not an array. */
static long mp_array_header(const unsigned char *p, size_t len, size_t *hdr)
{
    if (len == 0)
        return -1;
    if ((p[0] & 0xf0) == 0x90) {
        *hdr = 1;
        return p[0] & 0x0f;
    }
    if (p[0] == 0xdc && len >= 3) {
        *hdr = 3;
        return (long)((uint32_t)p[1] << 8 | p[2]);
    }
    if (p[0] == 0xdd && len >= 5) {
        *hdr = 5;
        return (long)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
    }
    return -1;
}

static const char *mp_type_name(unsigned char b)
{
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
        return "an integer";
    if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb))
        return "a string";
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf)
        return "a table with non-array keys";
    if (b == 0xc0)
        return "nil";
    if (b == 0xc2 || b == 0xc3)
        return "a boolean";
    if (b == 0xca || b == 0xcb)
        return "a number";
    return "a value that is not an array";
}

/* Makes the instances of a mapped task from its map source's output. */
static void task_expand_map(struct run *r, uint32_t t)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    const struct tr_task_def *td = &def->tasks[t];
    struct task_rt *trt = &r->tasks[t];
    struct tr_str src = task_output(r, (uint32_t)td->map);
    size_t hdr = 0;
    long n = mp_array_header((const unsigned char *)src.p, src.len, &hdr);
    if (n < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "task '%s' maps over '%s', whose output is %s, not an array",
                 td->name, def->tasks[td->map].name, mp_type_name((unsigned char)src.p[0]));
        trt->expanded = true;
        trt->n_inst = 1;
        inst_fail_final(&trt->single, msg);
        return;
    }
    trt->expanded = true;
    if (n == 0) {
        /* Nothing to map: the task is done, with an empty array as output. */
        r->counts[TR_TASK_PENDING]--;
        r->counts[TR_TASK_SUCCEEDED]++;
        trt->single.state = TR_TASK_SUCCEEDED;
        task_finish(r, t);
        return;
    }
    trt->mapped = tr_calloc((size_t)n, sizeof(*trt->mapped));
    if (trt->mapped == NULL)
        oom_fatal("expanding a map");
    trt->n_inst = (uint32_t)n;
    r->counts[TR_TASK_PENDING] += (uint32_t)n - 1; /* the one pending entry becomes n instances */
    size_t off = hdr;
    for (long i = 0; i < n; i++) {
        struct inst *in = &trt->mapped[i];
        in->run = r;
        in->task = t;
        in->index = (uint32_t)i + 1;
        in->heap_pos = -1;
        in->state = TR_TASK_PENDING;
        /* The output was checked when it arrived, so every element parses. */
        long sz = tr_mp_check(src.p + off, src.len - off, &tr_mp_default_limits);
        TR_ASSERT(sz > 0);
        in->arg_off = (uint32_t)off;
        in->arg_len = (uint32_t)sz;
        off += (size_t)sz;
    }
    for (long i = 0; i < n && !run_is_final(r); i++)
        inst_make_ready(&trt->mapped[i]);
}

static void task_ready(struct run *r, uint32_t t)
{
    struct task_rt *trt = &r->tasks[t];
    if (trt->finished || trt->readied || run_is_final(r))
        return;
    trt->readied = true;
    if (r->pipe->def->tasks[t].map >= 0)
        task_expand_map(r, t);
    else
        inst_make_ready(&trt->single);
}

/* Marks every instance of task t skipped (its trigger rule said no), then
 * finishes it, which tells its dependants in turn. */
static void task_skip(struct run *r, uint32_t t, bool upstream_failed, const char *why)
{
    struct task_rt *trt = &r->tasks[t];
    if (trt->finished)
        return;
    trt->readied = true;
    uint32_t n = trt->expanded ? trt->n_inst : 1;
    for (uint32_t i = 0; i < n; i++) {
        struct inst *in = task_inst(trt, i);
        if (tr_task_state_final(in->state))
            continue;
        dispatch_unready(r->core->dispatch, in);
        inst_set_state(in, TR_TASK_SKIPPED);
        in->upstream_failed = upstream_failed;
        if (in->error == NULL)
            in->error = tr_strdup(why);
        r->core->cnt->tasks_skipped++;
        if (!upstream_failed)
            trt->n_skipped++;
    }
    trt->n_failed = n - trt->n_done;
    task_finish(r, t);
}

/* The trigger rule of task d, after an upstream task ended (core_flow.h). */
static void task_decide(struct run *r, uint32_t d)
{
    struct task_rt *drt = &r->tasks[d];
    if (drt->finished || drt->readied || run_is_final(r))
        return;
    char why[300];
    switch (flow_rule_decide(r, d, why, sizeof(why))) {
    case FLOW_RUN:
        task_ready(r, d);
        break;
    case FLOW_SKIP:
        task_skip(r, d, false, why);
        break;
    case FLOW_UPSTREAM_FAILED:
        task_skip(r, d, true, why);
        break;
    case FLOW_WAIT:
        break;
    }
}

/* Builds the array of a mapped task's outputs, which its dependants receive. */
static void task_build_agg(struct run *r, struct task_rt *trt)
{
    struct tr_buf b;
    tr_buf_init(&b, 0);
    uint32_t n = trt->n_inst;
    unsigned char hdr[5] = {0xdd, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    int rc = tr_buf_add(&b, hdr, 5);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        struct inst *in = &trt->mapped[i];
        if (in->state == TR_TASK_SUCCEEDED && in->output && in->output_len)
            rc = tr_buf_add(&b, in->output, in->output_len);
        else
            rc = tr_buf_addch(&b, (char)0xc0);
    }
    if (rc < 0)
        oom_fatal("collecting map outputs");
    size_t len;
    trt->agg = tr_buf_detach(&b, &len);
    if (trt->agg == NULL)
        oom_fatal("collecting map outputs");
    trt->agg_len = (uint32_t)len;
}

static void task_finish(struct run *r, uint32_t t)
{
    struct task_rt *trt = &r->tasks[t];
    if (trt->finished)
        return;
    trt->finished = true;
    r->n_tasks_left--;
    const struct tr_task_def *td = &r->pipe->def->tasks[t];
    trt->outcome = flow_task_outcome(trt);
    if (trt->mapped)
        task_build_agg(r, trt); /* nil in place of what did not succeed */
    for (uint32_t i = 0; i < td->n_downstream; i++) {
        uint32_t d = td->downstream[i];
        struct task_rt *drt = &r->tasks[d];
        if (trt->outcome == TR_TASK_SUCCEEDED)
            drt->up_ok++;
        else if (trt->outcome == TR_TASK_FAILED)
            drt->up_failed++;
        else
            drt->up_skipped++;
        if (drt->countdown > 0)
            drt->countdown--;
        task_decide(r, d);
    }
    if (r->n_tasks_left == 0 && !run_is_final(r))
        run_finish(r);
}

/* ====================================================================== */
/* Results                                                                 */
/* ====================================================================== */

void inst_attempt_failed(struct inst *in, struct tr_str error, bool timed_out)
{
    struct core *c = in->run->core;
    const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
    in->failures++;
    in->timed_out = timed_out;
    if (timed_out)
        c->cnt->tasks_timed_out++;
    tr_free(in->error);
    in->error = error.len ? tr_strndup(error.p, error.len)
                          : tr_strdup("task failed without a message");
    if (in->conc_held)
        dispatch_conc_release(c->dispatch, in);
    if (in->failures <= td->retries) {
        double delay = tr_retry_delay(td->backoff, in->failures, (double)rand() / RAND_MAX);
        inst_set_state(in, TR_TASK_RETRY_WAIT);
        c->cnt->tasks_retried++;
        tr_info("task retry run=%s task=%s index=%u failure=%u delay=%.3fs: %.200s",
                in->run->id, td->name, in->index, in->failures, delay, in->error);
        timers_push(c->timers, mono_s() + delay, in, 0);
        return;
    }
    in->finished_at = tr_now();
    inst_fail_final(in, NULL);
}

struct guard_ctx
{
    struct core *c;
    struct inst *in;
};

/* A guard record of a result: counted per pipeline, check and stage, and audited. */
static void on_guard_blocked(void *arg, const char *check, const char *stage)
{
    struct guard_ctx *g = arg;
    struct run *r = g->in->run;
    const char *task = r->pipe->def->tasks[g->in->task].name;
    counters_guard_blocked(g->c->cnt, r->pipe->def->name, check, stage);
    tr_info("guard blocked a model call run=%s task=%s index=%u check=%s stage=%s", r->id, task,
            g->in->index, check, stage);
    if (g->c->hooks.guard_blocked != NULL)
        g->c->hooks.guard_blocked(g->c->hooks.arg, r, task, check, stage);
}

void core_on_result(struct core *c, struct worker *w, const struct tr_msg_result *m)
{
    /* Fencing: only the current dispatch of this leadership, on the worker it
     * was sent to, for the attempt it was sent as, may complete an instance. */
    struct inst *in = dispatch_find(c->dispatch, m->id);
    if (in == NULL || m->epoch != c->dispatch->epoch || in->worker != w ||
        in->attempts != m->attempt) {
        counters_drop(c->cnt, DROP_STALE_RESULT, NULL, 0);
        tr_info("refused stale result id=%llu attempt=%u from worker '%s'",
                (unsigned long long)m->id, m->attempt, w->id);
        return;
    }
    counters_observe_latency(c->cnt, tr_now() - in->dispatched_at);
    worker_window_grow(w);
    double run_s = m->finished_at - m->started_at;
    if (run_s >= 0 && run_s < 86400)
        w->ewma_run_s = w->ewma_run_s > 0 ? 0.8 * w->ewma_run_s + 0.2 * run_s : run_s;
    dispatch_end(c->dispatch, in);
    inst_logs_add(in, m->logs, m->n_logs);
    /* Calls cost money whatever became of the attempt: keep them all. */
    inst_usage_add(in, m->usage.p, m->usage.len);
    struct guard_ctx gc = {c, in};
    usage_guards(m->usage.p, m->usage.len, on_guard_blocked, &gc);
    obs_attempt(c->obs, in, w->id, m);
    if (in->state == TR_TASK_CANCELLED || run_is_final(in->run)) {
        if (m->usage.len > 0 && tr_task_state_final(in->state)) {
            inst_mark_dirty(in);
            run_mark_dirty(in->run);
        }
        return; /* the run was cancelled while this attempt ran */
    }
    tr_free(in->worker_id);
    in->worker_id = tr_strdup(w->id);
    in->started_at = m->started_at;
    in->finished_at = m->finished_at;
    if (m->skipped) {
        char why[1100];
        snprintf(why, sizeof(why), "%.*s", (int)TR_MIN(m->error.len, (size_t)1024), m->error.p);
        inst_skip_final(in, why, false);
        return;
    }
    if (m->ok && inst_def(in)->kind == TR_KIND_SUBRUN) {
        in->finished_at = 0;
        flow_subrun_start(in, m->output); /* the params function's result */
        return;
    }
    if (m->ok) {
        long sz = m->output.len ? tr_mp_check(m->output.p, m->output.len, &tr_mp_default_limits)
                                : 0;
        if (sz < 0 || (size_t)sz != m->output.len) {
            inst_attempt_failed(in, TR_STR("the worker sent an output that is not valid msgpack"),
                                false);
            return;
        }
        const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
        if (td->cache) {
            struct tr_buf args;
            tr_buf_init(&args, 0);
            char key[65];
            if (inst_build_args(in, &args) == 0) {
                struct tr_buf k;
                tr_buf_init(&k, 0);
                if (tr_buf_addstr(&k, in->run->pipe->digest) == 0 &&
                    tr_buf_add(&k, td->name, strlen(td->name) + 1) == 0 &&
                    tr_buf_add(&k, args.buf, args.len) == 0) {
                    tr_sha256_hex(k.buf, k.len, key);
                    if (batch_add_cache(c->batch, key, in) < 0)
                        tr_warn("cannot queue cache entry for task '%s': out of memory", td->name);
                }
                tr_buf_release(&k);
            }
            tr_buf_release(&args);
        }
        inst_complete(in, m->output.p, m->output.len, false);
    } else if (m->cancelled) {
        inst_attempt_failed(in, TR_STR("the worker cancelled the task"), false);
    } else {
        inst_attempt_failed(in, m->error, m->timed_out);
    }
}

void core_on_log(struct core *c, struct worker *w, const struct tr_msg_log *m)
{
    struct inst *in = dispatch_find(c->dispatch, m->id);
    if (in == NULL || in->worker != w)
        return;
    inst_logs_add(in, m->logs, m->n_logs);
}

void inst_requeue(struct inst *in)
{
    struct core *c = in->run->core;
    dispatch_end(c->dispatch, in);
    if (in->state == TR_TASK_CANCELLED || run_is_final(in->run))
        return;
    c->cnt->tasks_requeued++;
    inst_set_state(in, TR_TASK_PENDING);
    inst_make_ready(in);
}

/* ====================================================================== */
/* Runs                                                                    */
/* ====================================================================== */

/* Merges the pipeline's default params with the request's, as JSON and msgpack. */
static int run_set_params(struct run *r, json_t *overrides, struct tr_error *err)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    json_t *params = tr_mp_bytes_to_json(def->params, def->params_len, err);
    if (params == NULL)
        return err && err->code ? err->code : TR_ENOMEM;
    if (!json_is_object(params)) {
        json_decref(params);
        params = json_object();
    }
    if (overrides != NULL && json_object_update(params, overrides) != 0) {
        json_decref(params);
        return TR_ENOMEM;
    }
    r->params_json = json_dumps(params, JSON_COMPACT);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = tr_json_to_mp(params, &pk);
    json_decref(params);
    if (rc == 0 && r->params_json != NULL) {
        r->params_mp = tr_memdup(sb.data, sb.size);
        r->params_mp_len = sb.size;
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot encode params");
    return r->params_json && r->params_mp ? 0 : TR_ENOMEM;
}

void run_free(struct run *r)
{
    if (r == NULL)
        return;
    if (r->obs != NULL)
        r->obs->freed(r->obs->arg, r);
    if (r->tasks != NULL) {
        for (uint32_t t = 0; t < r->pipe->def->n_tasks; t++) {
            struct task_rt *trt = &r->tasks[t];
            uint32_t n = trt->mapped ? trt->n_inst : 1;
            for (uint32_t i = 0; i < n; i++) {
                struct inst *in = task_inst(trt, i);
                tr_free(in->output);
                tr_free(in->error);
                tr_free(in->worker_id);
                tr_free(in->usage);
                if (in->logs) {
                    tr_buf_release(in->logs);
                    tr_free(in->logs);
                }
            }
            tr_free(trt->mapped);
            tr_free(trt->agg);
        }
        tr_free(r->tasks);
    }
    if (r->pipe)
        pipe_unref(r->pipe);
    tr_free(r->parent_run);
    tr_free(r->parent_task);
    tr_free(r->params_json);
    tr_free(r->params_mp);
    tr_free(r->output_json);
    tr_free(r->error);
    json_decref(r->usage_sum);
    tr_free(r->usage_json);
    tr_free(r->retry_of);
    if (r->retry_ctx != NULL && r->retry_ctx_free != NULL)
        r->retry_ctx_free(r->retry_ctx); /* a retry stopped before it ended */
    tr_free(r);
}

int run_new(struct core *s, struct pipeline_entry *pe, json_t *params, struct run **out,
               struct tr_error *err)
{
    const struct tr_pipeline_def *def = pe->def;
    struct run *r = tr_calloc(1, sizeof(*r));
    if (r == NULL)
        return TR_ENOMEM;
    r->core = s;
    r->pipe = pe;
    pipe_ref(pe);
    snprintf(r->id, sizeof(r->id), "r-%04llx%08llx",
             (unsigned long long)(s->dispatch->epoch & 0xffff),
             (unsigned long long)++s->next_run);
    r->created_at = tr_now();
    r->state = TR_RUN_QUEUED;
    r->obs = s->run_obs;
    int rc = run_set_params(r, params, err);
    if (rc < 0)
        goto out_free;
    r->tasks = tr_calloc(def->n_tasks, sizeof(*r->tasks));
    if (r->tasks == NULL) {
        rc = TR_ENOMEM;
        goto out_free;
    }
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        struct task_rt *trt = &r->tasks[t];
        trt->countdown = def->tasks[t].n_upstream;
        trt->n_inst = 1;
        trt->single.run = r;
        trt->single.task = t;
        trt->single.heap_pos = -1;
        trt->expanded = def->tasks[t].map < 0;
    }
    r->counts[TR_TASK_PENDING] = def->n_tasks;
    r->n_tasks_left = def->n_tasks;
    rc = tr_hmap_put(&s->runs, r->id, strlen(r->id), r);
    if (rc < 0)
        goto out_free;
    s->n_active++;
    if (batch_add_source(s->batch, pe) < 0) {
        tr_hmap_del(&s->runs, r->id, strlen(r->id));
        s->n_active--;
        rc = TR_ENOMEM;
        goto out_free;
    }
    r->in_memory_only = true;
    run_mark_dirty(r);
    dispatch_pools_ref(s->dispatch, def, +1);
    *out = r;
    return 0;
out_free:
    run_free(r);
    if (err && !err->code)
        tr_error_set(err, rc, "cannot create run: %s", tr_strerror(rc));
    return rc;
}

void run_start(struct run *r)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    if (def->max_active_runs > 0 && !core_gate_admit(r))
        return; /* queued behind max_active_runs: started by core_gate_leave */
    if (r->ctl_since == 0)
        r->ctl_since = tr_now();
    if (def->n_tasks == 0) {
        run_finish(r);
        return;
    }
    /* Roots by declaration, not by countdown: while recovering, completing a
     * root from its record already readies its dependants. */
    for (uint32_t i = 0; i < def->n_tasks && !run_is_final(r); i++) {
        uint32_t t = def->topo[i];
        if (def->tasks[t].n_upstream == 0)
            task_ready(r, t);
    }
}

struct run *run_find(struct core *s, const char *id)
{
    return tr_hmap_gets(&s->runs, id);
}

static void lru_append(struct core *s, struct run *r)
{
    r->lru_prev = s->lru_tail;
    r->lru_next = NULL;
    if (s->lru_tail)
        s->lru_tail->lru_next = r;
    else
        s->lru_head = r;
    s->lru_tail = r;
    s->n_finished_in_memory++;
}

static void lru_unlink(struct core *s, struct run *r)
{
    if (r->lru_prev)
        r->lru_prev->lru_next = r->lru_next;
    else
        s->lru_head = r->lru_next;
    if (r->lru_next)
        r->lru_next->lru_prev = r->lru_prev;
    else
        s->lru_tail = r->lru_prev;
    s->n_finished_in_memory--;
}

void runs_evict(struct core *s)
{
    struct run *r = s->lru_head;
    while (r != NULL && s->n_finished_in_memory > s->keep_runs) {
        struct run *next = r->lru_next;
        if (!r->dirty && r->waiters == NULL && r->outstanding == 0) {
            lru_unlink(s, r);
            tr_hmap_del(&s->runs, r->id, strlen(r->id));
            timers_forget_run(s->timers, r);
            run_free(r);
        }
        r = next;
    }
}

static int sink_output_json(struct run *r, json_t *out)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t i = 0; i < def->n_sinks; i++) {
        uint32_t t = def->sinks[i];
        struct tr_str o = task_output(r, t);
        struct tr_error err;
        tr_error_init(&err);
        /* Most sinks of wide runs return nothing: skip the decoder for nil. */
        json_t *v = o.len == 1 && (unsigned char)o.p[0] == 0xc0 ? json_null()
                                                                 : tr_mp_bytes_to_json(o.p, o.len, &err);
        if (v == NULL || json_object_set_new(out, def->tasks[t].name, v) != 0)
            return TR_ENOMEM;
    }
    return 0;
}

static void run_finish(struct run *r)
{
    struct core *s = r->core;
    const struct tr_pipeline_def *def = r->pipe->def;
    /* As Airflow's: the run failed when one of its leaves failed or was
     * skipped for an upstream failure; a failure that a downstream rule
     * (all_done, ...) handled does not fail it. The message names the first
     * failed instance, the cause. */
    const struct inst *failed = NULL;
    if (flow_leaf_failed(r)) {
        for (uint32_t i = 0; i < def->n_tasks && failed == NULL; i++) {
            struct task_rt *trt = &r->tasks[def->topo[i]];
            uint32_t n = trt->mapped ? trt->n_inst : 1;
            for (uint32_t j = 0; j < n; j++) {
                if (task_inst(trt, j)->state == TR_TASK_FAILED) {
                    failed = task_inst(trt, j);
                    break;
                }
            }
        }
    }
    r->finished_at = tr_now();
    if (r->started_at == 0)
        r->started_at = r->finished_at;
    if (failed) {
        char msg[1200];
        if (failed->index)
            snprintf(msg, sizeof(msg), "task '%s' [%u] failed: %.1000s",
                     def->tasks[failed->task].name, failed->index,
                     failed->error ? failed->error : "");
        else
            snprintf(msg, sizeof(msg), "task '%s' failed: %.1000s", def->tasks[failed->task].name,
                     failed->error ? failed->error : "");
        r->error = tr_strdup(msg);
    } else {
        json_t *out = json_object();
        if (out == NULL || sink_output_json(r, out) < 0)
            oom_fatal("building a run's output");
        r->output_json = json_dumps(out, JSON_COMPACT);
        json_decref(out);
        if (r->output_json == NULL)
            oom_fatal("building a run's output");
    }
    s->cnt->runs_total[failed ? TR_RUN_FAILED : TR_RUN_SUCCEEDED]++;
    s->n_active--;
    dispatch_pools_ref(s->dispatch, def, -1);
    run_set_state(r, failed ? TR_RUN_FAILED : TR_RUN_SUCCEEDED);
    tr_info("run %s run=%s pipeline=%s", tr_run_state_names[r->state], r->id, def->name);
    run_mark_dirty(r);
    lru_append(s, r);
    obs_run_final(s->obs, r);
    if (s->hooks.run_final != NULL)
        s->hooks.run_final(s->hooks.arg, r);
    flow_run_final(r);
    core_gate_leave(r);
}

int run_cancel(struct run *r, const char *reason)
{
    return run_stop(r, reason, TR_RUN_CANCELLED);
}

int run_stop(struct run *r, const char *reason, uint8_t st)
{
    struct core *s = r->core;
    if (run_is_final(r))
        return TR_ECONFLICT;
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        struct task_rt *trt = &r->tasks[t];
        uint32_t n = trt->mapped ? trt->n_inst : 1;
        for (uint32_t i = 0; i < n; i++) {
            struct inst *in = task_inst(trt, i);
            if (tr_task_state_final(in->state))
                continue;
            dispatch_unready(s->dispatch, in);
            if (in->dispatch_id && in->worker) {
                struct tr_msg m = {.type = TR_MSG_CANCEL};
                m.u.cancel.id = in->dispatch_id;
                m.u.cancel.reason = tr_str_c(reason);
                if (batch_add_msg(s->batch, in->worker->ident, in->worker->ident_len, &m) < 0)
                    tr_warn("cannot queue cancel run=%s: out of memory", r->id);
            }
            if (in->waiting)
                flow_cancel_wait(in, reason); /* a subrun's child is cancelled too */
            inst_set_state(in, TR_TASK_CANCELLED);
            s->cnt->tasks_cancelled++;
        }
    }
    r->finished_at = tr_now();
    tr_free(r->error);
    r->error = tr_strdup(reason);
    run_set_state(r, st);
    s->cnt->runs_total[st]++;
    s->n_active--;
    dispatch_pools_ref(s->dispatch, def, -1);
    tr_info("run %s run=%s pipeline=%s: %.200s", tr_run_state_names[st], r->id, def->name,
            reason);
    run_mark_dirty(r);
    lru_append(s, r);
    obs_run_final(s->obs, r);
    if (s->hooks.run_final != NULL)
        s->hooks.run_final(s->hooks.arg, r);
    flow_run_final(r);
    core_gate_leave(r);
    return 0;
}


int run_rename(struct run *r, const char *id)
{
    struct core *c = r->core;
    tr_hmap_del(&c->runs, r->id, strlen(r->id));
    snprintf(r->id, sizeof(r->id), "%s", id);
    return tr_hmap_put(&c->runs, r->id, strlen(r->id), r);
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

void core_init(struct core *c, const struct core_parts *parts, uint32_t keep_runs,
               const struct core_hooks *hooks)
{
    memset(c, 0, sizeof(*c));
    tr_hmap_init(&c->runs);
    tr_hmap_init(&c->flow_pending);
    c->keep_runs = keep_runs;
    c->state = parts->state;
    c->pipes = parts->pipes;
    c->batch = parts->batch;
    c->dispatch = parts->dispatch;
    c->fleet = parts->fleet;
    c->timers = parts->timers;
    c->cnt = parts->cnt;
    c->hooks = *hooks;
    tr_hmap_init(&c->gates);
}

void core_release(struct core *c)
{
    size_t it = 0;
    struct run *r;
    while ((r = tr_hmap_next(&c->runs, &it)) != NULL)
        run_free(r);
    tr_hmap_release(&c->runs);
    tr_hmap_release(&c->flow_pending);
    core_controls_release(c);
}

/* Drops a finished run from memory before its eviction (DELETE /v1/runs/{id},
 * --retention): TR_EAGAIN while its record is being written, a long-poll
 * waits on it or a dispatch is still registered; TR_ECONFLICT when unfinished. */
int run_forget(struct core *s, struct run *r)
{
    if (!run_is_final(r))
        return TR_ECONFLICT;
    if (r->dirty || r->waiters != NULL || r->outstanding != 0)
        return TR_EAGAIN;
    lru_unlink(s, r);
    tr_hmap_del(&s->runs, r->id, strlen(r->id));
    timers_forget_run(s->timers, r);
    run_free(r);
    return 0;
}
