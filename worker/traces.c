/*
 * traces.c - LLM-call spans and traceparent (see traces.h).
 */
#include "worker/traces.h"

#include <stdio.h>

#include "lib/base/log.h"
#include "lib/http/otlp.h"
#include "worker/exec_int.h"

static struct tr_otlp *exporter; /* the loop thread's; NULL when not exporting */
static const char *worker_name;

int tr_traces_open(uv_loop_t *loop, const char *endpoint, const char *worker_id)
{
    worker_name = worker_id;
    if (endpoint == NULL || endpoint[0] == '\0')
        return 0;
    exporter = tr_otlp_new(loop, endpoint, "trellis-worker");
    if (exporter == NULL)
        return TR_ENOMEM;
    tr_info("exporting spans to '%s' worker=%s", endpoint, worker_id);
    return 0;
}

void tr_traces_close(void)
{
    tr_otlp_close(exporter);
    exporter = NULL;
}

void tr_traces_llm_begin(struct tr_task *t)
{
    tr_otlp_random_span(t->llm_span);
    t->llm_span_start = tr_now();
}

static void ids(const struct tr_task *t, char trace[TR_OTLP_TRACE_HEX],
                char attempt[TR_OTLP_SPAN_HEX])
{
    char run_span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids(t->run_id.p, t->run_id.len, trace, run_span);
    tr_otlp_attempt_span(t->run_id.p, t->run_id.len, t->name.p, t->name.len, t->index, t->attempt,
                         attempt);
}

void tr_traces_traceparent(const struct tr_task *t, char out[56])
{
    char trace[TR_OTLP_TRACE_HEX], attempt[TR_OTLP_SPAN_HEX];
    ids(t, trace, attempt);
    tr_otlp_traceparent(trace, t->llm_span[0] ? t->llm_span : attempt, out);
    if (exporter == NULL)
        out[54] = '0'; /* "-00": not sampled, nothing here records it */
}

void tr_traces_llm_end(struct tr_task *t, const struct tr_task_usage *u, const char *request_model,
                       const char *operation, const char *finish_reason)
{
    if (exporter != NULL) {
        char trace[TR_OTLP_TRACE_HEX], attempt[TR_OTLP_SPAN_HEX], span[TR_OTLP_SPAN_HEX];
        ids(t, trace, attempt);
        double now = tr_now();
        if (t->llm_span[0]) {
            memcpy(span, t->llm_span, sizeof(span));
        } else { /* answered without a begin (the response cache) */
            tr_otlp_random_span(span);
            t->llm_span_start = now - u->latency_ms / 1000.0;
        }
        const char *op = operation && operation[0] ? operation : "chat";
        const char *req = request_model && request_model[0] ? request_model : u->model;
        char name[200];
        snprintf(name, sizeof(name), "%s %.150s", op, req);
        char run_id[64], task[128];
        snprintf(run_id, sizeof(run_id), "%.*s", (int)TR_MIN(t->run_id.len, 63), t->run_id.p);
        snprintf(task, sizeof(task), "%.*s", (int)TR_MIN(t->name.len, 127), t->name.p);
        struct tr_otlp_span s = {
            .trace_id = trace,
            .span_id = span,
            .parent_id = attempt,
            .name = name,
            .kind = 3,
            .start = t->llm_span_start,
            .end = now,
        };
        tr_otlp_attr_str(&s, "gen_ai.operation.name", op);
        tr_otlp_attr_str(&s, "gen_ai.system", u->provider);
        tr_otlp_attr_str(&s, "gen_ai.provider.name", u->provider);
        tr_otlp_attr_str(&s, "gen_ai.request.model", req);
        tr_otlp_attr_str(&s, "gen_ai.response.model", u->model);
        tr_otlp_attr_int(&s, "gen_ai.usage.input_tokens", (int64_t)u->prompt_tokens);
        tr_otlp_attr_int(&s, "gen_ai.usage.output_tokens", (int64_t)u->completion_tokens);
        tr_otlp_attr_double(&s, "trellis.llm.cost", u->cost);
        if (finish_reason != NULL && finish_reason[0])
            tr_otlp_attr_strs1(&s, "gen_ai.response.finish_reasons", finish_reason);
        tr_otlp_attr_bool(&s, "trellis.llm.cached", u->cached);
        tr_otlp_attr_str(&s, "trellis.run.id", run_id);
        tr_otlp_attr_str(&s, "trellis.task", task);
        tr_otlp_attr_str(&s, "trellis.worker.id", worker_name ? worker_name : "");
        tr_otlp_add(exporter, &s);
    }
    t->llm_span[0] = '\0';
}
