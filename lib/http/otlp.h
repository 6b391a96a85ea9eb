/*
 * otlp.h - OpenTelemetry spans exported as OTLP/HTTP JSON, from a libuv loop.
 *
 * Both daemons use it (docs/observability.md). Spans are rendered to JSON at
 * once and queued; a timer (or a full batch) sends the queue with one POST to
 * ENDPOINT/v1/traces through a curl multi driven by the loop, so the loop
 * never waits on the collector. One POST is in flight at a time; the queue is
 * bounded and spans beyond it are dropped and counted. tr_otlp_close sends
 * what is left with a short blocking POST (the daemon is exiting).
 *
 * Ids are deterministic where two processes must agree without talking: the
 * trace id and the run's span id are derived from the run id, an attempt's
 * span id from (run, task, index, attempt), so the scheduler and the worker
 * name the same spans without carrying them in TASK.
 *
 * Loop thread only.
 */
#ifndef TR_HTTP_OTLP_H
#define TR_HTTP_OTLP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "lib/base/base.h"

#define TR_OTLP_TRACE_HEX 33 /* 32 hex digits and NUL */
#define TR_OTLP_SPAN_HEX 17  /* 16 hex digits and NUL */
#define TR_OTLP_MAX_ATTRS 16

enum tr_otlp_attr_type
{
    TR_OTLP_STR,
    TR_OTLP_INT,
    TR_OTLP_DOUBLE,
    TR_OTLP_BOOL,
    TR_OTLP_STR_ARRAY1, /* an array holding the one string s */
};

struct tr_otlp_attr
{
    const char *key;
    enum tr_otlp_attr_type type;
    const char *s;
    int64_t i;
    double d;
};

struct tr_otlp_span
{
    const char *trace_id;    /* hex */
    const char *span_id;     /* hex */
    const char *parent_id;   /* hex, or NULL for a root */
    const char *name;
    int kind;                /* 1 internal, 2 server, 3 client */
    double start;            /* wall-clock seconds */
    double end;
    bool error;              /* status ERROR, else OK */
    const char *status_msg;  /* with error, or NULL */
    uint32_t n_attrs;
    struct tr_otlp_attr attrs[TR_OTLP_MAX_ATTRS];
};

struct tr_otlp_stats
{
    uint64_t spans_queued;   /* accepted into the queue */
    uint64_t spans_sent;     /* in POSTs the collector answered 2xx */
    uint64_t spans_dropped;  /* queue full, or the POST failed */
    uint64_t posts_failed;
};

struct tr_otlp;

/* endpoint: "http://host:port" (the path /v1/traces is added unless given). */
struct tr_otlp *tr_otlp_new(uv_loop_t *loop, const char *endpoint, const char *service);
/* Sends what is queued (blocking, at most ~2 s), closes the handles, frees. */
void tr_otlp_close(struct tr_otlp *o);
/* Queues a span (copied). Never blocks; drops and counts when the queue is full. */
void tr_otlp_add(struct tr_otlp *o, const struct tr_otlp_span *s);
void tr_otlp_get_stats(const struct tr_otlp *o, struct tr_otlp_stats *st);

/* Attribute helpers: append to s->attrs when there is room. */
void tr_otlp_attr_str(struct tr_otlp_span *s, const char *key, const char *v);
void tr_otlp_attr_int(struct tr_otlp_span *s, const char *key, int64_t v);
void tr_otlp_attr_double(struct tr_otlp_span *s, const char *key, double v);
void tr_otlp_attr_bool(struct tr_otlp_span *s, const char *key, bool v);
/* An array of one string (gen_ai.response.finish_reasons). */
void tr_otlp_attr_strs1(struct tr_otlp_span *s, const char *key, const char *v);

/* Ids. */
void tr_otlp_run_ids(const char *run_id, size_t len, char trace[TR_OTLP_TRACE_HEX],
                     char run_span[TR_OTLP_SPAN_HEX]);
void tr_otlp_attempt_span(const char *run_id, size_t run_len, const char *task, size_t task_len,
                          uint32_t index, uint32_t attempt, char out[TR_OTLP_SPAN_HEX]);
/* A random, non-zero span id. */
void tr_otlp_random_span(char out[TR_OTLP_SPAN_HEX]);
/* "00-TRACE-SPAN-01" into out (56 bytes with NUL). */
void tr_otlp_traceparent(const char *trace, const char *span, char out[56]);

#endif
