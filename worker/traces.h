/*
 * traces.h - the worker's spans and trace context (docs/observability.md).
 *
 * One span per LLM call, a child of its task attempt's span (whose id both
 * daemons derive from the run id, lib/http/otlp.h), with the GenAI semantic
 * conventions' attributes; and the W3C traceparent header that trellis.http
 * and trellis.llm requests of a task carry. Loop thread only.
 */
#ifndef TR_WORKER_TRACES_H
#define TR_WORKER_TRACES_H

#include <stdbool.h>
#include <uv.h>

#include "worker/executor.h"

/* Starts the exporter (endpoint NULL or "": spans are not exported). 0 or TR_ENOMEM. */
int tr_traces_open(uv_loop_t *loop, const char *endpoint, const char *worker_id) TR_MUST_CHECK;
/* Sends what is queued (briefly blocking) and closes; run the loop after it. */
void tr_traces_close(void);

/* An LLM call of t begins: a new span id, current until its end. */
void tr_traces_llm_begin(struct tr_task *t);
/* It ended with usage u: exports its span (when exporting) and forgets it. */
void tr_traces_llm_end(struct tr_task *t, const struct tr_task_usage *u, const char *request_model,
                       const char *operation, const char *finish_reason);
/* "traceparent" for a request of t: its LLM call's span, else its attempt's. */
void tr_traces_traceparent(const struct tr_task *t, char out[56]);

#endif
