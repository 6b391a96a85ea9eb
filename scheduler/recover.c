/*
 * recover.c - resuming unfinished runs after a restart.
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
#include "scheduler/usage.h"
#include "lib/wire/mp_json.h"

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
        inst_complete(in, rc->output, rc->output_len, rc->cached);
    } else {
        in->error = rc->error;
        rc->error = NULL;
        inst_fail_final(in, NULL);
    }
}

struct recover_ctx
{
    struct core *core;
    struct pipes *pipes;
    struct tr_state *state;
    uint32_t resumed;
    uint32_t failed;
};

static int resume_run(const struct tr_run_rec *rec, void *arg)
{
    struct recover_ctx *ctx = arg;
    struct core *s = ctx->core;
    struct tr_error err;
    tr_error_init(&err);
    char *src = NULL;
    size_t len = 0;
    struct pipeline_entry *pe = NULL;
    int rc = tr_state_get_source(ctx->state, rec->digest, &src, &len);
    if (rc == 0)
        rc = pipe_load_sync(ctx->pipes, src, len, rec->pipeline, &pe, &err);
    tr_free(src);
    if (rc < 0) {
        tr_err("cannot resume run=%s: %s", rec->id, err.msg[0] ? err.msg : tr_strerror(rc));
        ctx->failed++;
        return 0;
    }
    pe->stored = true;
    json_t *params = rec->params_json ? json_loads(rec->params_json, 0, NULL) : NULL;
    struct run *r = NULL;
    /* run_new names a new id; a resumed run keeps its own. */
    rc = run_new(s, pe, params, &r, &err);
    json_decref(params);
    if (rc < 0) {
        tr_err("cannot resume run=%s: %s", rec->id, err.msg);
        ctx->failed++;
        return 0;
    }
    s->next_run--;
    if (run_rename(r, rec->id) < 0)
        return TR_ENOMEM;
    r->created_at = rec->created_at;
    r->started_at = rec->started_at;
    if (strcmp(rec->state, "running") == 0)
        r->state = TR_RUN_RUNNING;
    struct tr_hmap recs;
    tr_hmap_init(&recs);
    rc = tr_state_list_tasks(ctx->state, rec->id, collect_task, &recs);
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
    if (rc < 0)
        return rc;
    tr_info("resumed run=%s pipeline=%s tasks_left=%u", r->id, rec->pipeline, r->n_tasks_left);
    ctx->resumed++;
    return 0;
}

int recover_runs(struct core *c, struct pipes *p, struct tr_state *st, struct tr_error *err)
{
    struct recover_ctx ctx = {.core = c, .pipes = p, .state = st};
    int rc = tr_state_list_runs(st, NULL, true, 0, resume_run, &ctx);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot list unfinished runs: %s", tr_strerror(rc));
    if (ctx.resumed || ctx.failed)
        tr_info("recovery: %u runs resumed, %u could not be", ctx.resumed, ctx.failed);
    return 0;
}
