/*
 * metrics.h - GET /metrics in Prometheus text format (metrics.c).
 *
 * Part "metrics", just below the API in the scheduler's order: it reads the
 * counters and the live structures of the other parts (gauges) when the page
 * is rendered, and changes nothing.
 */
#ifndef TR_SCHED_METRICS_H
#define TR_SCHED_METRICS_H

#include "scheduler/core.h"
#include "scheduler/counters.h"
#include "scheduler/leader.h"
#include "scheduler/transport.h"

/* What the page is rendered from. */
struct metrics_src
{
    struct counters *cnt;
    struct core *core;
    struct fleet *fleet;
    struct dispatch *dispatch;
    struct leader *leader;
    struct zmq_router **router; /* NULL until leading */
};

/* The page (tr_free it), or NULL when out of memory. */
char *metrics_render(const struct metrics_src *src, size_t *len);

#endif
