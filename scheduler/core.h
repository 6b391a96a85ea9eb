/*
 * core.h - the scheduling core: runs, task instances, readiness by countdown,
 * map fan-out, results, retries, cancel and fencing (core.c), and the
 * events that reach it: worker messages, due timers, lost workers (core_events.c).
 *
 * Part "core", above dispatch in the scheduler's order: it calls dispatch,
 * the fleet, the timers, the batch, the loader, usage and the counters, and
 * is called by recovery, the API and the loop turn. What it tells those
 * above it (a run ended: wake its long-polls) goes up through its hooks.
 */
#ifndef TR_SCHED_CORE_H
#define TR_SCHED_CORE_H

#include <jansson.h>

#include "lib/state/state.h"
#include "scheduler/batch.h"
#include "scheduler/dispatch.h"
#include "scheduler/loader.h"
#include "scheduler/model.h"
#include "scheduler/obs.h"
#include "scheduler/timers.h"
#include "scheduler/workers.h"

struct core_hooks
{
    void *arg;
    /* A run reached a final state (its record is queued in the batch). May be NULL. */
    void (*run_final)(void *arg, struct run *r);
    /* A task's CALL (registry, labels: loop_calls.h), from a known worker. May be NULL. */
    void (*call)(void *arg, struct worker *w, const struct tr_msg_call *m);
    /* An approval was decided (core_flow.c): the audit log's point of entry.
     * user is the token's name or "anonymous", "timeout" for the default. May be NULL. */
    void (*approval)(void *arg, const struct run *r, const char *task, const char *decision,
                     const char *user, const char *comment);
    /* A model call of task was blocked by a guard (counted already): the audit
     * log's point of entry. May be NULL. */
    void (*guard_blocked)(void *arg, const struct run *r, const char *task, const char *check,
                          const char *stage);
};

struct core
{
    struct tr_hmap runs;      /* id -> struct run (active and recently finished) */
    struct run *lru_head;     /* finished runs, oldest first */
    struct run *lru_tail;
    uint32_t n_finished_in_memory;
    uint32_t n_active;        /* runs queued or running */
    uint64_t next_run;        /* counter for run ids */
    uint32_t keep_runs;       /* --keep-runs */
    struct tr_state *state;   /* reads: the task cache, pipeline sources */
    struct pipes *pipes;
    struct batch *batch;
    struct dispatch *dispatch;
    struct fleet *fleet;
    struct timers *timers;
    struct counters *cnt;
    struct transport *tp;     /* answers sent at once (PIPELINE, BYE); NULL until leading */
    struct core_hooks hooks;
    struct obs *obs;          /* spans and per-pipeline metrics (obs.h), or NULL */
    struct tr_hmap flow_pending; /* child run id -> waiting subrun instance, while recovering
                                  * (core_flow.c) */
    struct tr_hmap gates;     /* pipeline name -> struct run_gate (max_active_runs) */
    const struct run_observer *run_obs; /* given to every new run (events.c), or NULL */
};

/* The parts the core works with, all initialized by the caller. */
struct core_parts
{
    struct tr_state *state;
    struct pipes *pipes;
    struct batch *batch;
    struct dispatch *dispatch;
    struct fleet *fleet;
    struct timers *timers;
    struct counters *cnt;
};

void core_init(struct core *c, const struct core_parts *parts, uint32_t keep_runs,
               const struct core_hooks *hooks);
/* Frees every run in memory. */
void core_release(struct core *c);
/* The dispatch hooks to give dispatch_init, and the fleet hooks' `down`. */
extern const struct dispatch_hooks core_dispatch_hooks; /* arg: the struct core */
void core_timer_fire(void *arg, struct inst *in, uint64_t dispatch_id); /* arg: core */
void core_worker_down(struct core *c, struct worker *w);

/* Runs. run_new queues the run's record (and its pipeline's source). */
int run_new(struct core *c, struct pipeline_entry *pe, json_t *params, struct run **out,
               struct tr_error *err) TR_MUST_CHECK;
/* Readies the run's roots (replaying durable records while r->replay is set). */
void run_start(struct run *r);
struct run *run_find(struct core *c, const char *id);
int run_cancel(struct run *r, const char *reason) TR_MUST_CHECK;
/* Drops finished runs beyond --keep-runs; the API reads them from the state. */
void runs_evict(struct core *c);
void run_free(struct run *r);
/* Gives a run a new id (recovery keeps the stored one): 0 or TR_ENOMEM. */
int run_rename(struct run *r, const char *id) TR_MUST_CHECK;
/* Frees a finished run now (it is being deleted): 0, TR_EAGAIN (its record is
 * not written yet, or a result is awaited: try later), TR_ECONFLICT (unfinished). */
int run_forget(struct core *c, struct run *r) TR_MUST_CHECK;

/* Instances. */
void inst_complete(struct inst *in, const char *output, size_t len, bool cached);
void inst_fail_final(struct inst *in, const char *error);
/* Ends an instance skipped (trellis.skip, or upstream_failed: its trigger rule
 * after an upstream failure) with reason as its error text. */
void inst_skip_final(struct inst *in, const char *reason, bool upstream_failed);
void inst_attempt_failed(struct inst *in, struct tr_str error, bool timed_out);
/* The current dispatch is lost (its worker is gone): ready again. */
void inst_requeue(struct inst *in);

/* Run controls (core_controls.c): max_active_runs and the pipeline timeout. */

/* run_start's gate: true when r may start now (it is counted among its
 * pipeline's active runs), false when it waits for one to finish (it starts
 * later, in submission order). Always true without max_active_runs. */
bool core_gate_admit(struct run *r);
/* r is final: it leaves its gate, and the next runs waiting there start. */
void core_gate_leave(struct run *r);
/* Once a second: fails runs past their pipeline's timeout (`run_timeout`),
 * and starts gated runs that may start (after recovery). */
void core_controls_tick(struct core *c, double now);
/* For a run held back by max_active_runs: why into why; false otherwise. */
bool core_run_waiting(struct core *c, const struct run *r, char *why, size_t size);
/* Stops a run as run_cancel does (pending tasks cancelled, running ones told
 * to stop) but final in state st with reason as its error. */
int run_stop(struct run *r, const char *reason, uint8_t st) TR_MUST_CHECK;
void core_controls_release(struct core *c);

/* Events (core_events.c). A decoded frame from the transport: */
void core_on_message(void *arg, const void *ident, size_t ident_len, const struct tr_msg *m,
                     const void *data, size_t len); /* arg: the struct core */
void core_on_result(struct core *c, struct worker *w, const struct tr_msg_result *m);
void core_on_log(struct core *c, struct worker *w, const struct tr_msg_log *m);

#endif
