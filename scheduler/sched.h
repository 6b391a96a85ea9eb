/*
 * sched.h - the scheduler: its parts put together, its life cycle and the
 * loop turn (sched.c). main.c is its only user.
 *
 * The parts, and the one direction of calls between them (a part includes
 * only the headers of parts below it; tests/lint/check_includes.sh enforces
 * it; docs/architecture.md explains it):
 *
 *   sched      life cycle, the loop turn                 sched.c
 *   api        HTTP routes, long-polls; the feedback     api.c api_runs.c
 *              loop (feedback, statistics, labels,     api_feedback.c api_models.c
 *              models, triggers); live events (SSE)   feedback.c triggers.c
 *              and webhooks                            triggers_row.c api_triggers.c
 *                                                      loop_calls.c (tasks' CALLs)
 *                                                      api_runctl.c api_retry.c (run
 *                                                      control: idempotency, retry, delete,
 *                                                      retention, params checks)
 *                                                      budgets.c quotas.c (LLM budgets, quotas)
 *                                                      events.c webhooks.c
 *   metrics    GET /metrics                              metrics.c
 *   recover    resume unfinished runs                    recover.c
 *   leader     election, standby redirects               leader.c
 *   core       runs, instances, readiness, results,      core.c core_events.c
 *              retries, cancel, fencing; trigger rules,  core_flow.c
 *              approvals, subruns; max_active_runs and   core_controls.c
 *              run timeouts
 *   dispatch   ready queues per pool, priority, credit,  dispatch.c
 *              GPU tasks' queues and placement;          dispatch_place.c
 *              labels and concurrency keys
 *   fleet      workers, pools, heartbeats                workers.c
 *   gpus       a worker's devices and which are held     gpus.c
 *   timers     retry and deadline timers                 timers.c
 *   batch      what waits for the group commit           batch.c
 *   transport  the ZeroMQ ROUTER behind an interface     transport.c
 *   loader     pipeline graphs by digest                 loader.c
 *   sandbox    child processes that read pipeline files  sandbox.c sandbox_child.c
 *   obs        spans, per-pipeline metrics and drift     traces.c metrics_pipeline.c
 *   usage      LLM call records and sums                 usage.c
 *   counters   the numbers behind /metrics               counters.c
 *   model      runs, instances, pipeline entries         model.c
 *   config     flags and TRELLIS_* variables             (main.c fills it)
 *
 * A lower part reaches a higher one only through a hook (a function pointer
 * given at init): the fleet's `down` (requeue a lost worker's tasks),
 * dispatch's `cached`/`fail`, the timers' `fire`, the core's `run_final`
 * (wake long-polls), the transport's message callback, leadership's `lead`,
 * the batch's `extra` (the feedback loop's records, and the triggers'
 * firings, join the transaction), the model's run observer (events.c).
 *
 * One libuv loop thread owns all of it: no locks.
 */
#ifndef TR_SCHED_H
#define TR_SCHED_H

#include <uv.h>

#include "lib/state/state.h"
#include "scheduler/api.h"
#include "scheduler/batch.h"
#include "scheduler/config.h"
#include "scheduler/core.h"
#include "scheduler/counters.h"
#include "scheduler/dispatch.h"
#include "scheduler/leader.h"
#include "scheduler/loader.h"
#include "scheduler/recover.h"
#include "scheduler/sandbox.h"
#include "scheduler/timers.h"
#include "scheduler/transport.h"
#include "scheduler/workers.h"

struct sched
{
    uv_loop_t *loop;
    struct sched_config cfg;
    struct tr_state *state;
    bool stopping;
    int exit_code;            /* the process's exit status once the loop stops */

    /* The parts, lowest first. */
    struct counters cnt;
    struct sandbox *sandbox;  /* the processes that read pipeline files */
    struct pipes pipes;
    struct zmq_router *router; /* NULL until leading */
    struct batch batch;
    struct timers timers;
    struct fleet fleet;
    struct dispatch dispatch;
    struct core core;
    struct obs obs;           /* spans, per-pipeline metrics (obs.h) */
    struct leader *leader;    /* never NULL between sched_open and sched_close */
    struct recovery *recovery; /* resuming runs after taking over, or NULL */
    struct api api;

    /* The loop turn. */
    uv_prepare_t turn;        /* end of turn: schedule, commit, send, reply */
    uv_check_t turn_check;    /* same, after I/O, so work done in poll is flushed at once */
    uv_timer_t commit_retry;  /* retries a failed commit; also the next turn at once */
    uint64_t last_sweep_ms;   /* loop time of the last sweep of unused pools */
    uint64_t last_controls_ms; /* loop time of the last run controls check */
    uv_signal_t sigint, sigterm;
    bool handles_open;
};

/* Opens the state, the election and the API; leads at once with SQLite. On
 * failure sched_close must still be called. */
int sched_open(struct sched *s, uv_loop_t *loop, const struct sched_config *cfg,
               struct tr_error *err) TR_MUST_CHECK;
/* Commits what it can, answers what waits, closes every part. Run the loop
 * afterwards for the close callbacks. */
void sched_close(struct sched *s);

#endif
