/*
 * counters.c - counting (counters.h).
 */
#include "scheduler/counters.h"

#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"

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

void counters_guard_blocked(struct counters *c, const char *pipeline, const char *check,
                            const char *stage)
{
    char key[600];
    int kl = snprintf(key, sizeof(key), "%.255s%c%.63s%c%.15s", pipeline, 0, check, 0, stage);
    if (kl < 0 || (size_t)kl >= sizeof(key))
        return;
    struct guard_count *g = tr_hmap_get(&c->guard_blocked, key, (size_t)kl);
    if (g == NULL) {
        if (tr_hmap_count(&c->guard_blocked) >= GUARD_SERIES_MAX)
            return;
        g = tr_malloc(sizeof(*g) + (size_t)kl + 1);
        if (g == NULL)
            return;
        g->n = 0;
        g->len = (uint32_t)kl;
        memcpy(g->key, key, (size_t)kl + 1); /* the stage's NUL too: metrics read it */
        if (tr_hmap_put(&c->guard_blocked, g->key, g->len, g) < 0) {
            tr_free(g);
            return;
        }
    }
    g->n++;
}

void counters_release(struct counters *c)
{
    size_t it = 0;
    struct guard_count *g;
    while ((g = tr_hmap_next(&c->guard_blocked, &it)) != NULL)
        tr_free(g);
    tr_hmap_release(&c->guard_blocked);
}
