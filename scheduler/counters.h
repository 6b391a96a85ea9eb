/*
 * counters.h - the counters behind /metrics: plain integers bumped by every
 * part on the loop thread (counters.c); metrics.c renders them.
 *
 * Part "counters", near the bottom of the scheduler's order: it knows no
 * other part.
 */
#ifndef TR_SCHED_COUNTERS_H
#define TR_SCHED_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/base/log.h"
#include "lib/base/states.h"

#define LAT_BUCKETS 14

/* Upper bounds of the dispatch-to-result latency histogram, in seconds. */
extern const double counters_lat_bounds[LAT_BUCKETS];

enum drop_reason
{
    DROP_BAD_MSGPACK = 0,
    DROP_TOO_LARGE,
    DROP_BAD_VERSION,
    DROP_UNKNOWN_TYPE,
    DROP_BAD_BODY,
    DROP_UNKNOWN_WORKER,
    DROP_STALE_RESULT,
    DROP_BAD_FRAMES,
    DROP_IMPERSONATION,      /* a HELLO for a live worker id from another connection or key */
    DROP_KEY_RESTRICTED,     /* a HELLO for a pool its CURVE key is not allowed for */
    DROP_COUNT
};

extern const char *const drop_reason_names[DROP_COUNT];

struct counters
{
    uint64_t runs_total[TR_RUN_STATE_COUNT]; /* by final state (the final ones used) */
    uint64_t tasks_succeeded, tasks_failed, tasks_retried, tasks_timed_out;
    uint64_t tasks_cancelled, tasks_skipped, tasks_requeued, tasks_cached;
    uint64_t dropped[DROP_COUNT];
    uint64_t commits, commit_errors;
    uint64_t lat_buckets[LAT_BUCKETS + 1];
    double lat_sum;
    uint64_t lat_count;
    uint64_t dispatched;
    uint64_t tasks_unschedulable;  /* failed: no worker with their labels joined in time */
    uint64_t runs_timed_out;       /* failed at their pipeline's timeout */
    struct tr_log_limiter garbage_log; /* bounds the log lines of dropped frames */
};

void counters_observe_latency(struct counters *c, double seconds);
/* Counts a dropped worker frame, and logs a sample of it (rate-limited). */
void counters_drop(struct counters *c, enum drop_reason why, const void *sample, size_t len);

#endif
