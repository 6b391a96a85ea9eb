/*
 * model.h - the data every part of the scheduler speaks of: runs, the
 * run-time state of their tasks, task instances, and cached pipeline graphs.
 *
 * Part "model", at the bottom of the scheduler's order: plain structs and the
 * few functions of the data alone (model.c). Which part changes which field
 * is written beside the field. One libuv loop thread owns all of it: no locks.
 */
#ifndef TR_SCHED_MODEL_H
#define TR_SCHED_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/base/states.h"
#include "lib/lua/pipeline.h"

struct core;
struct ev_run;
struct run;
struct waiter;
struct worker;

/* A pipeline graph, cached by the digest of its source (loader.c). */
struct pipeline_entry
{
    char digest[65];
    struct tr_pipeline_def *def;  /* owned */
    uint32_t refs;                /* runs using it */
    double last_used;
    bool stored;                  /* its source is durable in the state (or queued to be) */
    char name[128];               /* file name it was first submitted under, for messages */
};

/* One instance of one task in one run (a mapped task has one per element). */
struct inst
{
    struct run *run;          /* owner */
    uint32_t task;            /* index in the pipeline def */
    uint32_t index;           /* map element from 1, 0 when unmapped */
    uint8_t state;            /* enum tr_task_state; changed only by inst_set_state */
    bool cached;              /* output reused from the cache */
    bool timed_out;           /* the last attempt hit its timeout */
    uint16_t attempts;        /* dispatches so far (ctx.attempt of the last one) */
    uint16_t failures;        /* failed attempts (compared with retries) */
    int32_t heap_pos;         /* position in its pool's ready heap (dispatch.c), or -1 */
    int32_t priority;         /* its task's priority, copied here for the heap's sake */
    uint64_t seq;             /* FIFO order among equal priorities */
    uint64_t dispatch_id;     /* current dispatch (fencing token), 0 when none */
    struct worker *worker;    /* worker of the current dispatch (workers.c) */
    struct inst *wprev;       /* in the worker's in-flight list (workers.c) */
    struct inst *wnext;
    double dispatched_at;     /* wall clock of the current dispatch */
    double started_at;
    double finished_at;
    char *worker_id;          /* last worker that ran it (owned) */
    char *output;             /* msgpack value (owned), NULL when none */
    uint32_t output_len;
    uint32_t arg_off;         /* mapped: the element's bytes in the map source's output */
    uint32_t arg_len;
    char *error;              /* owned, NULL when none */
    struct tr_buf *logs;      /* ctx.log lines joined by '\n', NULL when none */
    uint32_t logs_dropped;    /* lines dropped beyond the bound */
    bool dirty;               /* queued in the batch (batch.c) */
    bool on_slot;             /* counted in its worker's running slots (workers.c) */
    char *usage;              /* LLM calls of all attempts: msgpack array (owned), or NULL */
    uint32_t usage_len;
    uint64_t gpu_mask;        /* devices of its worker the current dispatch holds (gpus.h) */
    /* Control flow (core_flow.c). */
    bool upstream_failed;     /* skipped because an upstream failed (counts as failed) */
    bool waiting;             /* held by the scheduler: an approval, or a subrun's child
                               * (worker_id is the child's run id); its record is written */
    bool has_child;           /* a subrun whose child started: worker_id is its run id */
    bool conc_held;           /* holds a place of its concurrency key (dispatch_place.c) */
    bool conc_wait;           /* waits in its concurrency key's heap (dispatch_place.c) */
};

/* The run-time state of one task of the pipeline within a run (core.c). */
struct task_rt
{
    uint32_t countdown;      /* upstream tasks not finished yet */
    uint32_t n_inst;         /* instances (1 unmapped; elements once mapped) */
    uint32_t n_done;         /* instances succeeded */
    uint32_t n_failed;       /* instances failed, skipped or cancelled */
    bool expanded;           /* instances exist (a mapped task after fan-out) */
    bool finished;           /* every instance is final */
    bool readied;            /* its countdown reached 0 and its instances were made */
    struct inst *mapped;     /* array of n_inst instances when mapped, else NULL */
    char *agg;               /* mapped: the msgpack array of outputs, built once */
    uint32_t agg_len;
    struct inst single;      /* the instance of an unmapped task */
    /* Control flow (core_flow.c): trigger rules. */
    uint32_t n_skipped;      /* instances skipped on their own (trellis.skip, a rule), in n_failed */
    uint32_t up_ok;          /* upstream tasks that ended succeeded, */
    uint32_t up_failed;      /* failed (or skipped for an upstream failure), */
    uint32_t up_skipped;     /* or skipped */
    uint8_t outcome;         /* once finished: TR_TASK_SUCCEEDED, _FAILED or _SKIPPED */
};

/*
 * Who is told of what happens to a run (the events part, events.c): set on
 * each run by the core (run_new copies core->run_obs), NULL when nobody listens.
 * Each call is made right after the change, on the loop thread.
 */
struct run_observer
{
    void *arg;
    void (*task)(void *arg, struct inst *in);   /* in->state changed */
    void (*run)(void *arg, struct run *r);      /* r->state changed */
    void (*logs)(void *arg, struct inst *in, const struct tr_str *lines, uint32_t n);
    void (*freed)(void *arg, struct run *r);    /* r is being freed */
    void (*delta)(void *arg, struct inst *in, struct tr_str text); /* LLM tokens (LLM_DELTA) */
};

/*
 * Replays a durable record instead of dispatching (recover.c): called when an
 * instance of a run being recovered would become ready; the instance stays
 * pending when there is no record for it.
 */
typedef void (*run_replay_fn)(void *arg, struct inst *in);

struct run
{
    char id[40];              /* "r-..." */
    struct core *core;        /* the part that owns it (core.c) */
    struct pipeline_entry *pipe; /* holds a reference */
    uint8_t state;            /* enum tr_run_state */
    double created_at;
    double started_at;
    double finished_at;
    char *params_json;        /* merged params (owned) */
    char *params_mp;          /* the same as msgpack (owned) */
    size_t params_mp_len;
    char *output_json;        /* once finished (owned) */
    char *error;              /* failure or cancel reason (owned) */
    struct task_rt *tasks;    /* one per task of the def */
    uint32_t n_tasks_left;    /* tasks not finished yet */
    uint32_t counts[TR_TASK_STATE_COUNT]; /* instances by state */
    struct waiter *waiters;   /* long-polls waiting for the end (api.c) */
    bool dirty;               /* queued in the batch (batch.c) */
    bool in_memory_only;      /* not committed yet: API readers must not see it from state */
    struct run *lru_prev;     /* finished runs, oldest first (core.c) */
    struct run *lru_next;
    run_replay_fn replay;     /* set while recovering only (recover.c) */
    void *replay_arg;
    uint32_t outstanding;     /* dispatches still registered (results awaited) */
    json_t *usage_sum;        /* LLM calls summed (usage.c), NULL before the first */
    char *usage_json;         /* usage_sum as JSON text, for the API to splice */
    /* Control flow (core_flow.c): a subrun's child knows its parent. */
    struct inst *parent_inst; /* the parent's waiting instance, while linked */
    char *parent_run;         /* the parent's run id and task (owned), NULL when none */
    char *parent_task;
    /* Run controls (core_controls.c). */
    double ctl_since;         /* wall clock it was let start (run_start), 0 before */
    struct run *gate_next;    /* in its pipeline's max_active_runs queue */
    bool gate_counted;        /* counted among its pipeline name's active runs */
    bool gate_waiting;        /* queued behind max_active_runs */
    char *retry_of;           /* the run this one retries (owned), NULL when none (api_runctl.c) */
    void *retry_ctx;          /* what it reuses of that run, freed when it ends (api_runctl.c) */
    void (*retry_ctx_free)(void *ctx);
    const struct run_observer *obs; /* events.c, or NULL (core.c sets it) */
    uint64_t ev_seq;          /* events of this run so far: the last event's number */
    struct ev_run *ev;        /* its event log and watchers (events.c), or NULL */
};

static inline struct inst *task_inst(struct task_rt *trt, uint32_t i)
{
    return trt->mapped ? &trt->mapped[i] : &trt->single;
}

static inline const struct tr_task_def *inst_def(const struct inst *in)
{
    return &in->run->pipe->def->tasks[in->task];
}

/* Moves an instance to state st, keeping its run's counts by state. */
static inline void inst_set_state(struct inst *in, uint8_t st)
{
    struct run *r = in->run;
    r->counts[in->state]--;
    r->counts[st]++;
    in->state = st;
    if (r->obs != NULL)
        r->obs->task(r->obs->arg, in);
}

/* Moves a run to state st (enum tr_run_state), telling its observer. */
static inline void run_set_state(struct run *r, uint8_t st)
{
    r->state = st;
    if (r->obs != NULL)
        r->obs->run(r->obs->arg, r);
}

static inline bool run_is_final(const struct run *r)
{
    return tr_run_state_final(r->state);
}

/* Monotonic time in seconds (timers, deadlines). */
double mono_s(void);
/* Out of memory for bookkeeping of work already accepted: logs and exits 70. */
_Noreturn void oom_fatal(const char *what);
/* The output of task t as its dependants see it: a mapped task's is the array. */
struct tr_str task_output(struct run *r, uint32_t t);
/* The msgpack array of an instance's arguments (upstream outputs, map element). */
int inst_build_args(struct inst *in, struct tr_buf *out) TR_MUST_CHECK;
/* Appends ctx.log lines, bounded (drops are counted). */
void inst_logs_add(struct inst *in, const struct tr_str *lines, uint32_t n);

#endif
