/*
 * counters.c - counting (counters.h).
 */
#include "scheduler/counters.h"

#include <stdio.h>

const char *const drop_reason_names[DROP_COUNT] = {
    "bad_msgpack", "too_large", "bad_version", "unknown_type",
    "bad_body",    "unknown_worker", "stale_result", "bad_frames",
    "impersonation", "key_restricted"};

const double counters_lat_bounds[LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                 0.025,  0.05,  0.1,    0.25,  0.5,
                                                 1,      2.5,   10,     60};

void counters_observe_latency(struct counters *c, double seconds)
{
    size_t i = 0;
    while (i < LAT_BUCKETS && seconds > counters_lat_bounds[i])
        i++;
    c->lat_buckets[i]++;
    c->lat_sum += seconds > 0 ? seconds : 0;
    c->lat_count++;
}

void counters_drop(struct counters *c, enum drop_reason why, const void *sample, size_t len)
{
    c->dropped[why]++;
    if (why == DROP_STALE_RESULT || why == DROP_UNKNOWN_WORKER)
        return; /* expected after failovers; logged by the caller at info */
    char what[80];
    snprintf(what, sizeof(what), "dropped frame from a worker: %s", drop_reason_names[why]);
    tr_log_limited(&c->garbage_log, what, sample ? sample : "", sample ? len : 0);
}
