/*
 * obs.h - what the scheduler tells operators about runs beyond the global
 * counters: OpenTelemetry spans (traces.c) and the per-pipeline series of
 * /metrics with the drift signal (metrics_pipeline.c). docs/observability.md.
 *
 * Part "obs", just above usage in the scheduler's order: the core calls it
 * when an attempt's result arrives and when a run ends, the feedback loop
 * when a pipeline's statistics change, and metrics.c renders its series.
 * Everything here is O(1) or O(labels) per call and never blocks: spans are
 * queued into the exporter (lib/http/otlp.h), numbers are added in place.
 * A NULL struct obs is allowed everywhere and does nothing.
 */
#ifndef TR_SCHED_OBS_H
#define TR_SCHED_OBS_H

#include <uv.h>

#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/http/otlp.h"
#include "lib/wire/proto.h"
#include "scheduler/model.h"

/* Bounded cardinality: label sets past these caps fold into "_other". */
#define OBS_MAX_PIPELINES 200
#define OBS_MAX_TASKS 100   /* per pipeline */
#define OBS_MAX_MODELS 50   /* per pipeline */
#define OBS_DUR_BUCKETS 14
#define OBS_DRIFT_BINS 10
#define OBS_DRIFT_REF 500   /* values that make the reference window */

struct obs
{
    struct tr_otlp *otlp;    /* NULL without --otlp-endpoint */
    struct tr_hmap pipes;    /* pipeline name -> struct obs_pipe */
    uint32_t n_pipes;
};

void obs_init(struct obs *o);
/* Starts the span exporter (endpoint NULL or "": none). 0 or TR_ENOMEM. */
int obs_open_traces(struct obs *o, uv_loop_t *loop, const char *endpoint) TR_MUST_CHECK;
/* Flushes the spans (briefly blocking), frees everything. */
void obs_release(struct obs *o);

/* A fenced RESULT of `in` from worker `worker_id` (before the core acts on it). */
void obs_attempt(struct obs *o, const struct inst *in, const char *worker_id,
                 const struct tr_msg_result *m);
/* A run reached its final state. */
void obs_run_final(struct obs *o, const struct run *r);
/* A pipeline's feedback totals changed (the feedback loop's statistics). */
void obs_feedback(struct obs *o, const char *pipeline, uint64_t count, uint64_t negative);

/* Appends the per-pipeline series to a /metrics page: 0 or TR_ENOMEM. */
int obs_metrics_render(const struct obs *o, struct tr_buf *b) TR_MUST_CHECK;

/* The spans alone (traces.c; obs_attempt and obs_run_final call them). */
void obs_trace_attempt(struct obs *o, const struct inst *in, const char *worker_id,
                       const struct tr_msg_result *m);
void obs_trace_run(struct obs *o, const struct run *r);

/* PSI of two histograms of n bins (exposed for the unit test). */
double obs_psi(const uint64_t *ref, const uint64_t *cur, uint32_t n);

#endif
