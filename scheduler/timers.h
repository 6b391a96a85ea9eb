/*
 * timers.h - delayed actions on task instances: a retry becoming ready after
 * its backoff, a dispatch deadline (timers.c).
 *
 * Part "timers", low in the scheduler's order: it knows only the model. What
 * an entry does when due is the callback given at init (the core's).
 */
#ifndef TR_SCHED_TIMERS_H
#define TR_SCHED_TIMERS_H

#include <uv.h>

#include "scheduler/model.h"

/* A due entry: dispatch_id 0 for a retry, else the dispatch it was set for. */
typedef void (*timers_fire_fn)(void *arg, struct inst *in, uint64_t dispatch_id);

struct timer_entry
{
    double when;              /* monotonic seconds (mono_s) */
    struct inst *inst;
    uint64_t dispatch_id;
};

struct timers
{
    struct timer_entry *heap; /* min-heap by when */
    size_t n, cap;
    uv_timer_t timer;         /* armed at the earliest entry */
    timers_fire_fn fire;
    void *arg;
};

void timers_init(struct timers *t, uv_loop_t *loop, timers_fire_fn fire, void *arg);
/* Closes the uv timer (the struct must live until the loop ran its close). */
void timers_release(struct timers *t);
void timers_push(struct timers *t, double when, struct inst *in, uint64_t dispatch_id);
/* Fires every entry due at `now` (monotonic seconds), then re-arms. */
void timers_run(struct timers *t, double now);
/* Removes the entries of a run about to be freed. */
void timers_forget_run(struct timers *t, const struct run *r);

#endif
