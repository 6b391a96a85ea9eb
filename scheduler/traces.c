/*
 * traces.c - the scheduler's spans (see obs.h): one per run, the root of its
 * trace, and one per task attempt, its child, named after the task. Ids come
 * from the run id (lib/http/otlp.h), so the worker's LLM-call spans find
 * their parent attempt without anything carried in TASK.
 */
#include "scheduler/obs.h"

#include <stdio.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

int obs_open_traces(struct obs *o, uv_loop_t *loop, const char *endpoint)
{
    if (endpoint == NULL || endpoint[0] == '\0')
        return 0;
    o->otlp = tr_otlp_new(loop, endpoint, "trellis-scheduler");
    if (o->otlp == NULL)
        return TR_ENOMEM;
    tr_info("exporting spans to '%s'", endpoint);
    return 0;
}

void obs_trace_attempt(struct obs *o, const struct inst *in, const char *worker_id,
                       const struct tr_msg_result *m)
{
    if (o == NULL || o->otlp == NULL)
        return;
    const struct run *r = in->run;
    const struct tr_task_def *td = &r->pipe->def->tasks[in->task];
    char trace[TR_OTLP_TRACE_HEX], run_span[TR_OTLP_SPAN_HEX], span[TR_OTLP_SPAN_HEX];
    size_t rl = strlen(r->id);
    tr_otlp_run_ids(r->id, rl, trace, run_span);
    tr_otlp_attempt_span(r->id, rl, td->name, strlen(td->name), in->index, m->attempt, span);
    char msg[256] = "";
    if (!m->ok)
        snprintf(msg, sizeof(msg), "%.*s", (int)TR_MIN(m->error.len, sizeof(msg) - 1),
                 m->error.p ? m->error.p : "");
    struct tr_otlp_span s = {
        .trace_id = trace,
        .span_id = span,
        .parent_id = run_span,
        .name = td->name,
        .kind = 1,
        .start = m->started_at > 0 ? m->started_at : in->dispatched_at,
        .end = m->finished_at > 0 ? m->finished_at : tr_now(),
        .error = !m->ok,
        .status_msg = msg,
    };
    /* The pipeline is on the run's span, the task is the name. */
    tr_otlp_attr_str(&s, "trellis.run.id", r->id);
    tr_otlp_attr_int(&s, "trellis.task.index", in->index);
    tr_otlp_attr_int(&s, "trellis.task.attempt", m->attempt);
    tr_otlp_attr_str(&s, "trellis.worker.id", worker_id);
    tr_otlp_attr_str(&s, "trellis.task.outcome", m->ok ? "succeeded"
                                                 : m->timed_out ? "timed_out"
                                                 : m->cancelled ? "cancelled"
                                                                : "failed");
    tr_otlp_add(o->otlp, &s);
}

void obs_trace_run(struct obs *o, const struct run *r)
{
    if (o == NULL || o->otlp == NULL)
        return;
    char trace[TR_OTLP_TRACE_HEX], run_span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids(r->id, strlen(r->id), trace, run_span);
    char name[160];
    snprintf(name, sizeof(name), "run %.150s", r->pipe->def->name);
    struct tr_otlp_span s = {
        .trace_id = trace,
        .span_id = run_span,
        .name = name,
        .kind = 2,
        .start = r->created_at > 0 ? r->created_at : r->started_at,
        .end = r->finished_at > 0 ? r->finished_at : tr_now(),
        .error = r->state != TR_RUN_SUCCEEDED,
        .status_msg = r->error,
    };
    tr_otlp_attr_str(&s, "trellis.run.id", r->id);
    tr_otlp_attr_str(&s, "trellis.pipeline", r->pipe->def->name);
    tr_otlp_attr_str(&s, "trellis.pipeline.digest", r->pipe->digest);
    tr_otlp_attr_str(&s, "trellis.run.state", tr_run_state_names[r->state]);
    tr_otlp_add(o->otlp, &s);
}
