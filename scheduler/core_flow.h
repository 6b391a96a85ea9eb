/*
 * core_flow.h - control flow in the scheduling core: trigger rules, skipped
 * tasks, approvals and subruns (docs/pipelines.md "Control flow").
 *
 * Part "core" (core.c calls these; they call core.c's instance functions).
 * Approvals and subruns wait in the scheduler, holding no worker slot: the
 * instance is `running` with `waiting` set, and its record is written while
 * it waits (state running; started_at for an approval's deadline, worker =
 * the child's run id for a subrun), so that recovery finds the same wait
 * again: the deadline is not moved, and no second child is started.
 */
#ifndef TR_SCHED_CORE_FLOW_H
#define TR_SCHED_CORE_FLOW_H

#include "scheduler/model.h"

struct core;

/* What a task's trigger rule says once some of its upstream tasks ended. */
enum flow_decision
{
    FLOW_WAIT = 0,          /* not decided until more upstream tasks end */
    FLOW_RUN,
    FLOW_SKIP,              /* skipped */
    FLOW_UPSTREAM_FAILED,   /* skipped, counting as failed for the run */
};

/* The dispatch id of an approval's deadline in the timers (never a real dispatch). */
#define FLOW_TIMER_ID UINT64_MAX

/* TR_TASK_SUCCEEDED, _FAILED or _SKIPPED for a task whose instances all ended. */
uint8_t flow_task_outcome(const struct task_rt *trt);
/* Task d's rule over its upstream outcomes so far; why says why not, when not. */
enum flow_decision flow_rule_decide(struct run *r, uint32_t d, char *why, size_t why_len);
/* True when a leaf of the run (a sink task) ended failed (the run fails). */
bool flow_leaf_failed(struct run *r);

/* An approval or subrun instance is to start: true when it now waits in the
 * scheduler (an approval; a subrun whose child is known from its record). */
bool flow_make_ready(struct inst *in);
/* A subrun's params function returned output (msgpack): start its child. */
void flow_subrun_start(struct inst *in, struct tr_str output);
/* A run ended (succeeded, failed or cancelled): its parent's task ends with it. */
void flow_run_final(struct run *r);
/* A waiting instance is being cancelled with its run: cancels a subrun's child. */
void flow_cancel_wait(struct inst *in, const char *reason);
/* An approval's deadline passed (timers, FLOW_TIMER_ID). */
void flow_timer_fire(struct core *c, struct inst *in);
/* A run is being resumed (recover.c): links it to a parent that already waits for it. */
void flow_run_resumed(struct run *r);
/* Recovery stores run id as failed (its pipeline cannot be read): a parent that
 * waits for it fails its subrun with why. */
void flow_child_lost(struct core *c, const char *id, const char *why);

/*
 * Decides the approval task of run_id: approve or reject, with comment (may
 * be NULL) by user. Returns 0, TR_ENOENT (no such run in memory or task:
 * err says which), TR_EINVAL (the task is not an approval), TR_ECONFLICT
 * (not waiting: not reached yet, decided, or its run ended).
 */
int flow_approval_decide(struct core *c, const char *run_id, const char *task, bool approve,
                         const char *comment, const char *user,
                         struct tr_error *err) TR_MUST_CHECK;

#endif
