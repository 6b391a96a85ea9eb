/*
 * core_flow.c - control flow in the scheduling core (core_flow.h): trigger
 * rules, approvals and subruns.
 *
 * Trigger rules follow Airflow's: a task's rule is read each time one of its
 * upstream tasks ends, with the outcomes so far (succeeded, failed, skipped;
 * a task skipped because of an upstream failure counts as failed, Airflow's
 * upstream_failed). all_success and none_failed give up at the first failure
 * (all_success also at the first skip), one_success runs at the first
 * success, all_done waits for every upstream task.
 *
 * Approvals and subruns hold no worker slot: the instance is `running` with
 * `waiting` set. A subrun's params function runs on a worker as the task's
 * first part (the scheduler runs no Lua); its result becomes the child run's
 * params and the child starts here, from the registered pipeline it names.
 */
#include "scheduler/core_flow.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/wire/mp_json.h"
#include "scheduler/core.h"

/* ====================================================================== */
/* Trigger rules                                                           */
/* ====================================================================== */

uint8_t flow_task_outcome(const struct task_rt *trt)
{
    if (trt->n_failed > trt->n_skipped)
        return TR_TASK_FAILED;
    if (trt->n_skipped > 0 && trt->n_skipped >= trt->n_inst)
        return TR_TASK_SKIPPED;
    return TR_TASK_SUCCEEDED;
}

/* The name of an upstream task of d that ended with outcome, or "?". */
static const char *upstream_named(struct run *r, uint32_t d, uint8_t outcome)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    const struct tr_task_def *td = &def->tasks[d];
    for (uint32_t k = 0; k <= td->n_after; k++) {
        int64_t u = k < td->n_after ? (int64_t)td->after[k] : td->map;
        if (u >= 0 && r->tasks[u].finished && r->tasks[u].outcome == outcome)
            return def->tasks[u].name;
    }
    return "?";
}

enum flow_decision flow_rule_decide(struct run *r, uint32_t d, char *why, size_t why_len)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    const struct tr_task_def *td = &def->tasks[d];
    const struct task_rt *drt = &r->tasks[d];
    bool done = drt->countdown == 0;
    enum flow_decision dec = FLOW_WAIT;
    switch (td->trigger_rule) {
    case TR_RULE_ALL_SUCCESS:
        dec = drt->up_failed ? FLOW_UPSTREAM_FAILED : drt->up_skipped ? FLOW_SKIP
                             : done ? FLOW_RUN : FLOW_WAIT;
        break;
    case TR_RULE_NONE_FAILED:
        dec = drt->up_failed ? FLOW_UPSTREAM_FAILED : done ? FLOW_RUN : FLOW_WAIT;
        break;
    case TR_RULE_ALL_DONE:
        dec = done ? FLOW_RUN : FLOW_WAIT;
        break;
    case TR_RULE_ONE_SUCCESS:
        dec = drt->up_ok ? FLOW_RUN : !done ? FLOW_WAIT
                         : drt->up_failed ? FLOW_UPSTREAM_FAILED : FLOW_SKIP;
        break;
    }
    if (dec == FLOW_UPSTREAM_FAILED) {
        snprintf(why, why_len, "upstream_failed: task '%s' failed",
                 upstream_named(r, d, TR_TASK_FAILED));
    } else if (dec == FLOW_SKIP) {
        snprintf(why, why_len, "skipped: upstream task '%s' was skipped (trigger_rule %s)",
                 upstream_named(r, d, TR_TASK_SKIPPED), tr_trigger_rule_names[td->trigger_rule]);
    } else if (dec == FLOW_RUN && td->map >= 0) {
        /* Nothing to fan out over unless the map source succeeded. */
        const struct task_rt *src = &r->tasks[td->map];
        if (!src->finished) {
            dec = FLOW_WAIT;
        } else if (src->outcome != TR_TASK_SUCCEEDED) {
            dec = src->outcome == TR_TASK_FAILED ? FLOW_UPSTREAM_FAILED : FLOW_SKIP;
            snprintf(why, why_len, "%s: its map source '%s' %s",
                     dec == FLOW_SKIP ? "skipped" : "upstream_failed", def->tasks[td->map].name,
                     dec == FLOW_SKIP ? "was skipped" : "failed");
        }
    }
    return dec;
}

bool flow_leaf_failed(struct run *r)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t i = 0; i < def->n_sinks; i++) {
        if (r->tasks[def->sinks[i]].outcome == TR_TASK_FAILED)
            return true;
    }
    return false;
}

/* ====================================================================== */
/* Approvals                                                               */
/* ====================================================================== */

static void wait_start(struct inst *in)
{
    struct run *r = in->run;
    inst_set_state(in, TR_TASK_RUNNING);
    in->waiting = true;
    if (in->started_at == 0)
        in->started_at = tr_now();
    if (r->state == TR_RUN_QUEUED) {
        r->state = TR_RUN_RUNNING;
        r->started_at = in->started_at;
        batch_add_run(r->core->batch, r);
    }
}

static void approval_wait(struct inst *in)
{
    struct core *c = in->run->core;
    const struct tr_task_def *td = inst_def(in);
    wait_start(in);
    batch_add_inst(c->batch, in); /* the waiting record: its start is the deadline's base */
    if (td->timeout > 0) {
        double left = in->started_at + td->timeout - tr_now();
        timers_push(c->timers, mono_s() + (left > 0 ? left : 0), in, FLOW_TIMER_ID);
    }
    tr_info("approval waiting run=%s task=%s timeout=%g", in->run->id, td->name, td->timeout);
}

static int pack_kstr(msgpack_packer *pk, const char *k, const char *v)
{
    size_t kl = strlen(k);
    if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl))
        return -1;
    if (v == NULL)
        return msgpack_pack_nil(pk);
    size_t vl = strlen(v);
    return msgpack_pack_str(pk, vl) || msgpack_pack_str_body(pk, v, vl) ? -1 : 0;
}

/* Ends a waiting approval with its decision, which is also its output. */
static void approval_apply(struct inst *in, bool approve, const char *comment, const char *user)
{
    struct core *c = in->run->core;
    const struct tr_task_def *td = inst_def(in);
    double at = tr_now();
    const char *decision = approve ? "approve" : "reject";
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 4) || pack_kstr(&pk, "decision", decision) ||
        pack_kstr(&pk, "comment", comment) || pack_kstr(&pk, "user", user) ||
        msgpack_pack_str(&pk, 2) || msgpack_pack_str_body(&pk, "at", 2) ||
        msgpack_pack_double(&pk, at))
        oom_fatal("recording an approval");
    in->waiting = false;
    in->finished_at = at;
    tr_info("approval %s run=%s task=%s user=%s", decision, in->run->id, td->name, user);
    /* The audit log's point of entry (issue #11): who decided what. */
    if (c->hooks.approval != NULL)
        c->hooks.approval(c->hooks.arg, in->run, td->name, decision, user, comment);
    if (approve) {
        inst_complete(in, sb.data, sb.size, false);
    } else {
        tr_free(in->output);
        in->output = tr_memdup(sb.data, sb.size);
        if (in->output == NULL)
            oom_fatal("recording an approval");
        in->output_len = (uint32_t)sb.size;
        char msg[600];
        snprintf(msg, sizeof(msg), "rejected by %.64s%s%.400s", user, comment ? ": " : "",
                 comment ? comment : "");
        inst_fail_final(in, msg);
    }
    msgpack_sbuffer_destroy(&sb);
}

int flow_approval_decide(struct core *c, const char *run_id, const char *task, bool approve,
                         const char *comment, const char *user, struct tr_error *err)
{
    struct run *r = run_find(c, run_id);
    if (r == NULL)
        return tr_error_set(err, TR_ENOENT, "no run '%s'", run_id);
    int32_t t = tr_pipeline_find_task(r->pipe->def, task);
    if (t < 0)
        return tr_error_set(err, TR_ENOENT, "run '%s' has no task '%s'", run_id, task);
    const struct tr_task_def *td = &r->pipe->def->tasks[t];
    if (td->kind != TR_KIND_APPROVAL)
        return tr_error_set(err, TR_EINVAL, "task '%s' is not an approval", task);
    struct inst *in = &r->tasks[t].single;
    if (run_is_final(r) || in->state != TR_TASK_RUNNING || !in->waiting)
        return tr_error_set(err, TR_ECONFLICT, "task '%s' is not waiting for a decision (%s)",
                            task, run_is_final(r) ? tr_run_state_names[r->state]
                                                  : tr_task_state_names[in->state]);
    approval_apply(in, approve, comment, user);
    return 0;
}

void flow_timer_fire(struct core *c, struct inst *in)
{
    (void)c;
    const struct tr_task_def *td = inst_def(in);
    if (td->kind != TR_KIND_APPROVAL || in->state != TR_TASK_RUNNING || !in->waiting ||
        run_is_final(in->run))
        return;
    char comment[100];
    snprintf(comment, sizeof(comment), "no decision within %g s", td->timeout);
    approval_apply(in, td->approve_default, comment, "timeout");
}

/* ====================================================================== */
/* Subruns                                                                 */
/* ====================================================================== */

static void link_child(struct inst *in, struct run *child)
{
    child->parent_inst = in;
    if (child->parent_run == NULL) {
        child->parent_run = tr_strdup(in->run->id);
        child->parent_task = tr_strdup(inst_def(in)->name);
        if (child->parent_run == NULL || child->parent_task == NULL)
            oom_fatal("linking a subrun");
    }
}

/* Ends a waiting subrun from its child's end. */
static void subrun_end(struct inst *in, const char *child_id, int state, const char *output_json,
                       const char *error)
{
    in->waiting = false;
    in->finished_at = tr_now();
    if (state == TR_RUN_SUCCEEDED) {
        json_t *out = output_json ? json_loads(output_json, 0, NULL) : json_object();
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (out == NULL || tr_json_to_mp(out, &pk) < 0)
            oom_fatal("taking a child run's output");
        json_decref(out);
        inst_complete(in, sb.data, sb.size, false);
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    char msg[1300];
    snprintf(msg, sizeof(msg), "child run %s %s: %.1000s", child_id,
             state == TR_RUN_CANCELLED ? "was cancelled" : "failed", error ? error : "");
    inst_fail_final(in, msg);
}

static void subrun_fail(struct inst *in, const char *msg)
{
    in->waiting = false;
    in->finished_at = tr_now();
    tr_free_null(&in->worker_id);
    inst_fail_final(in, msg);
}

static void child_create(struct inst *in, struct pipeline_entry *pe, json_t *params)
{
    struct core *c = in->run->core;
    struct tr_error err;
    tr_error_init(&err);
    struct run *child = NULL;
    if (run_new(c, pe, params, &child, &err) < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "cannot start the child run of '%s': %s",
                 inst_def(in)->subrun, err.msg);
        subrun_fail(in, msg);
        return;
    }
    tr_free(in->worker_id);
    in->worker_id = tr_strdup(child->id);
    if (in->worker_id == NULL)
        oom_fatal("linking a subrun");
    in->has_child = true;
    link_child(in, child);
    batch_add_inst(c->batch, in); /* the link, durable with the child's first record */
    tr_info("subrun started run=%s task=%s child=%s pipeline=%s", in->run->id,
            inst_def(in)->name, child->id, pe->def->name);
    run_start(child);
}

struct child_load
{
    struct core *core;
    char run_id[40];
    uint32_t task;
    uint32_t index;
    json_t *params;
};

static void on_child_loaded(struct pipeline_entry *pe, struct tr_error *err, void *arg)
{
    struct child_load *cl = arg;
    struct run *r = run_find(cl->core, cl->run_id);
    struct inst *in = r ? task_inst(&r->tasks[cl->task], cl->index ? cl->index - 1 : 0) : NULL;
    if (in != NULL && !run_is_final(r) && in->state == TR_TASK_RUNNING && in->waiting &&
        in->worker_id == NULL) {
        if (pe == NULL) {
            char msg[700];
            snprintf(msg, sizeof(msg), "cannot read pipeline '%s': %s", inst_def(in)->subrun,
                     err && err->msg[0] ? err->msg : "load failed");
            subrun_fail(in, msg);
        } else {
            child_create(in, pe, cl->params);
        }
    }
    json_decref(cl->params);
    tr_free(cl);
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

void flow_subrun_start(struct inst *in, struct tr_str output)
{
    struct core *c = in->run->core;
    const struct tr_task_def *td = inst_def(in);
    json_t *params = NULL;
    bool nil = output.len == 0 || (output.len == 1 && (unsigned char)output.p[0] == 0xc0);
    if (!nil) {
        struct tr_error err;
        tr_error_init(&err);
        params = tr_mp_bytes_to_json(output.p, output.len, &err);
        if (json_is_array(params) && json_array_size(params) == 0) {
            json_decref(params); /* {} in Lua packs as an empty array */
            params = json_object();
        }
        if (!json_is_object(params)) {
            json_decref(params);
            char msg[300];
            snprintf(msg, sizeof(msg), "the params function of subrun '%s' must return a table "
                     "of params or nil", td->name);
            inst_attempt_failed(in, tr_str_c(msg), false);
            return;
        }
    }
    tr_free_null(&in->worker_id); /* from now on: the child's run id */
    wait_start(in);
    const char *ref = td->subrun;
    const char *at = strchr(ref, '@');
    char name[300];
    snprintf(name, sizeof(name), "%.*s", at ? (int)(at - ref) : (int)strlen(ref), ref);
    struct reg_find f = {0};
    int rc = tr_state_get_pipeline(c->state, name, at ? at + 1 : NULL, reg_found, &f);
    char msg[600];
    if (rc < 0 || !f.found) {
        /* Checked when the task runs, as Airflow's TriggerDagRunOperator does: the
         * child may be registered after the parent. */
        snprintf(msg, sizeof(msg), rc == TR_ENOENT || rc == 0 ? "no registered pipeline '%s'"
                 : "cannot read pipeline '%s' from the state", ref);
        json_decref(params);
        subrun_fail(in, msg);
        return;
    }
    struct pipeline_entry *pe = pipe_lookup(c->pipes, f.digest);
    if (pe != NULL) {
        child_create(in, pe, params);
        json_decref(params);
        return;
    }
    char *src = NULL;
    size_t len = 0;
    struct child_load *cl = tr_calloc(1, sizeof(*cl));
    rc = cl ? tr_state_get_source(c->state, f.digest, &src, &len) : TR_ENOMEM;
    if (rc == 0) {
        cl->core = c;
        snprintf(cl->run_id, sizeof(cl->run_id), "%s", in->run->id);
        cl->task = in->task;
        cl->index = in->index;
        cl->params = params;
        params = NULL;
        struct child_load *owned = cl;
        cl = NULL;
        rc = pipe_load_async(c->pipes, src, len, name, on_child_loaded, owned);
        if (rc < 0) { /* else the callback owns it (it may have run already) */
            json_decref(owned->params);
            tr_free(owned);
        }
    }
    tr_free(src);
    tr_free(cl);
    json_decref(params);
    if (rc < 0 && in->waiting && in->worker_id == NULL) {
        snprintf(msg, sizeof(msg), "cannot read pipeline '%s': %s", ref, tr_strerror(rc));
        subrun_fail(in, msg);
    }
}

/* A run record read back (recovery): the parts a parent's wait needs. */
struct child_rec
{
    bool found;
    int state;
    char *output_json;
    char *error;
};

static int child_rec_copy(const struct tr_run_rec *rec, void *arg)
{
    struct child_rec *cr = arg;
    cr->found = true;
    cr->state = tr_run_state_parse(rec->state);
    cr->output_json = rec->output_json ? tr_strdup(rec->output_json) : NULL;
    cr->error = rec->error ? tr_strdup(rec->error) : NULL;
    return 0;
}

/* A recovered subrun whose record names its child: wait for it again. */
static void subrun_reattach(struct inst *in)
{
    struct core *c = in->run->core;
    const char *id = in->worker_id;
    in->has_child = true;
    wait_start(in);
    struct run *child = run_find(c, id);
    if (child != NULL) {
        link_child(in, child);
        if (run_is_final(child))
            flow_run_final(child);
        return;
    }
    struct child_rec cr = {0};
    int rc = tr_state_get_run(c->state, id, child_rec_copy, &cr);
    if (rc == 0 && cr.found && tr_run_state_final(cr.state)) {
        char cid[40];
        snprintf(cid, sizeof(cid), "%s", id);
        subrun_end(in, cid, cr.state, cr.output_json, cr.error);
    } else if (rc == 0 && cr.found) {
        /* Not resumed yet: recovery links it when it does (flow_run_resumed). */
        if (tr_hmap_put(&c->flow_pending, in->worker_id, strlen(in->worker_id), in) < 0)
            oom_fatal("waiting for a child run");
    } else {
        char msg[200];
        snprintf(msg, sizeof(msg), "its child run %s cannot be found", id);
        subrun_fail(in, msg);
    }
    tr_free(cr.output_json);
    tr_free(cr.error);
}

bool flow_make_ready(struct inst *in)
{
    const struct tr_task_def *td = inst_def(in);
    if (td->kind == TR_KIND_APPROVAL) {
        approval_wait(in);
        return true;
    }
    if (td->kind == TR_KIND_SUBRUN && in->worker_id != NULL && in->waiting) {
        subrun_reattach(in);
        return true;
    }
    return false; /* a subrun's params function runs on a worker first */
}

void flow_run_resumed(struct run *r)
{
    struct core *c = r->core;
    struct inst *in = tr_hmap_get(&c->flow_pending, r->id, strlen(r->id));
    if (in == NULL)
        return;
    tr_hmap_del(&c->flow_pending, r->id, strlen(r->id));
    if (in->state == TR_TASK_RUNNING && in->waiting)
        link_child(in, r);
}

void flow_run_final(struct run *r)
{
    struct inst *in = r->parent_inst;
    if (in == NULL)
        return;
    r->parent_inst = NULL;
    if (in->state != TR_TASK_RUNNING || !in->waiting || run_is_final(in->run))
        return;
    subrun_end(in, r->id, r->state, r->output_json, r->error);
}

void flow_cancel_wait(struct inst *in, const char *reason)
{
    struct core *c = in->run->core;
    in->waiting = false;
    batch_add_inst(c->batch, in); /* replaces its waiting record */
    if (inst_def(in)->kind != TR_KIND_SUBRUN || in->worker_id == NULL)
        return;
    tr_hmap_del(&c->flow_pending, in->worker_id, strlen(in->worker_id));
    struct run *child = run_find(c, in->worker_id);
    if (child == NULL || child->parent_inst != in)
        return;
    child->parent_inst = NULL;
    if (!run_is_final(child)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "parent run %s was cancelled: %.200s", in->run->id,
                 reason ? reason : "");
        if (run_cancel(child, msg) < 0)
            tr_warn("cannot cancel child run=%s", child->id);
    }
}

void flow_child_lost(struct core *c, const char *id, const char *why)
{
    struct inst *in = tr_hmap_get(&c->flow_pending, id, strlen(id));
    if (in == NULL)
        return;
    tr_hmap_del(&c->flow_pending, id, strlen(id));
    if (in->state == TR_TASK_RUNNING && in->waiting && !run_is_final(in->run))
        subrun_end(in, id, TR_RUN_FAILED, NULL, why);
}
