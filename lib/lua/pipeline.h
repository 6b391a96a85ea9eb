/*
 * pipeline.h - reads a pipeline file into a validated graph.
 *
 * The scheduler evaluates the Lua file in a sandbox (lib/lua/lua_rt.h: no io, os
 * or debug, a require that resolves only trellis modules, a memory cap, an
 * instruction budget and a wall-clock limit), in a fresh lua_State each time,
 * only to read the graph: `run` functions are never called here. The
 * scheduler calls tr_pipeline_load only in its sandbox child processes
 * (scheduler/sandbox_child.c), which are killed at the wall-clock limit
 * since one C call (a string pattern) can outlast the instruction hook; the
 * graph comes back through lib/lua/pipeline_codec.h. It touches no shared
 * state and may run on any thread.
 *
 * Validation: every task has a unique name and a `run` function; `after` and
 * `map` name existing tasks; the graph has no cycle (the error names the
 * tasks on one cycle, "a -> b -> a"). Triggers have unique names, a known
 * `on`, a `run`, a `when` function (feedback, labels) or a cron that parses
 * (schedule): TR_ETRIGGER and TR_ECRON otherwise. A Lua error is reported with its chunk
 * name and line ("pipeline.lua:3: ...").
 */
#ifndef TR_PIPELINE_H
#define TR_PIPELINE_H

#include "lib/base/error.h"

/* Most GPUs one task may ask for (the devices one worker describes: TR_PROTO_MAX_GPUS). */
#define TR_TASK_GPUS_MAX 64

/* When a task runs after its upstream tasks ended (docs/pipelines.md "Trigger rules"). */
enum tr_trigger_rule
{
    TR_RULE_ALL_SUCCESS = 0, /* every upstream succeeded (the default) */
    TR_RULE_ALL_DONE,        /* every upstream ended, whatever its state */
    TR_RULE_ONE_SUCCESS,     /* at least one upstream succeeded */
    TR_RULE_NONE_FAILED,     /* no upstream failed (skipped ones are fine) */
    TR_RULE_COUNT
};

extern const char *const tr_trigger_rule_names[TR_RULE_COUNT];

/* What runs a task: a worker (its `run`), or the scheduler waiting for a child
 * run (trellis.subrun, whose `run` computes the child's params) or for an
 * operator's decision (trellis.approval, never sent to a worker). */
enum tr_task_kind
{
    TR_KIND_RUN = 0,
    TR_KIND_SUBRUN,
    TR_KIND_APPROVAL,
};

/* One task of a pipeline as declared. Read-only for callers. */
struct tr_task_def
{
    char *name;          /* unique in the pipeline */
    uint32_t *after;     /* indices of the tasks it waits for, in declared order */
    uint32_t n_after;    /* their outputs are its arguments, in that order */
    int32_t map;         /* index of the task it fans out over, or -1 */
    uint16_t pool;       /* index into tr_pipeline_def.pools */
    uint16_t retries;    /* further attempts after a failure */
    int32_t priority;    /* higher runs first; 0 by default */
    double backoff;      /* seconds before the first retry, doubled each time */
    double timeout;      /* seconds per attempt, 0 = none */
    bool cache;          /* reuse an earlier output for the same version, task and inputs */
    uint16_t gpus;       /* GPUs it needs on one worker (ctx.gpus), 0 = none */
    uint32_t *downstream;   /* indices of tasks that depend on it (after or map) */
    uint32_t n_downstream;
    uint32_t n_upstream;    /* distinct tasks it depends on (after plus map): its countdown */
    /* Control flow (lib/lua/lua_flow.c). */
    uint8_t trigger_rule;   /* enum tr_trigger_rule */
    uint8_t kind;           /* enum tr_task_kind */
    bool approve_default;   /* approval: the decision when its timeout passes */
    char *subrun;           /* subrun: "pipeline[@version]" (owned), else NULL */
    /* Placement and concurrency (pipeline_controls.c; docs/pipelines.md). */
    char **labels;          /* key, value, key, value...: n_labels pairs sorted by key; or NULL */
    uint16_t n_labels;      /* a worker must carry every one (--label K=V) */
    char *conc_key;         /* concurrency key, NULL when none */
    uint32_t conc_limit;    /* at most this many instances of the key dispatched at once */
};

/* What a trigger watches (trellis.trigger's `on`). */
enum tr_trigger_on
{
    TR_TRIGGER_FEEDBACK = 0,
    TR_TRIGGER_LABELS,
    TR_TRIGGER_SCHEDULE
};

extern const char *const tr_trigger_on_names[3];

/* One trigger as declared (docs/feedback.md "Triggers"). Read-only for callers. */
struct tr_trigger_def
{
    char *name;          /* unique in the pipeline */
    uint8_t on;          /* enum tr_trigger_on */
    bool has_when;       /* a `when` function exists (only the sandbox calls it) */
    char *run;           /* "pipeline[@version]" to start */
    char *params;        /* msgpack map given to the run (never NULL) */
    size_t params_len;
    double cooldown;     /* seconds after a firing during which it does not fire */
    char *cron;          /* five-field cron (schedule), NULL otherwise */
};

/* A whole pipeline. Owned by whoever loaded it; free with tr_pipeline_def_free. */
struct tr_pipeline_def
{
    char *name;
    char *version;        /* "" when the file gives none */
    char digest[65];      /* sha256 hex of the source */
    char *source;         /* the file's text, NUL-terminated */
    size_t source_len;
    char *params;         /* default params as a msgpack map (never NULL; empty map if none) */
    size_t params_len;
    struct tr_task_def *tasks;
    uint32_t n_tasks;
    char **pools;         /* distinct pool names, "cpu" first when used */
    uint32_t n_pools;
    uint32_t *topo;       /* task indices in a topological order */
    uint32_t *sinks;      /* tasks nothing depends on: the run's output */
    uint32_t n_sinks;
    struct tr_trigger_def *triggers; /* in declared order */
    uint32_t n_triggers;
    /* Private: task indices sorted by name for tr_pipeline_find_task (NULL in a
     * def built by hand, which is then searched linearly). */
    uint32_t *by_name;
    /* Run controls (pipeline_controls.c; docs/pipelines.md). */
    double timeout;            /* seconds for the whole run from its start, 0 = none */
    uint32_t max_active_runs;  /* runs of this name active at once, 0 = no limit */
    /* Run control: a run may pass params the file does not declare (`extra_params = true`);
     * otherwise an unknown or mistyped one is refused at submit (docs/api.md). */
    bool extra_params;
    /* budget = {cost = USD, tokens = N} for one run (0: no limit), and what an
     * LLM call does when it does not fit (docs/budgets.md). */
    double budget_cost;
    double budget_tokens;
    uint8_t on_budget;    /* enum tr_on_budget */
    /* Per task (n_tasks entries, or NULL when no task declares any): the
     * providers its LLM calls use, comma-separated (task field `providers`),
     * or NULL. The scheduler holds a task whose provider is out of quota. */
    char **task_providers;
};

/* on_budget = "fail" (the default) | "fallback" | "approve" */
enum tr_on_budget
{
    TR_ON_BUDGET_FAIL,
    TR_ON_BUDGET_FALLBACK,
    TR_ON_BUDGET_APPROVE,
};
extern const char *const tr_on_budget_names[3];

/* Reads budget and on_budget of the pipeline table at idx into def
 * (pipeline_budget.c). 0 or TR_EINVAL with err naming the field. */
void tr_pipeline_free_budget(struct tr_pipeline_def *def);
struct lua_State;
int tr_pipeline_read_budget(struct lua_State *L, int idx, struct tr_pipeline_def *def,
                            struct tr_error *err) TR_MUST_CHECK;

/* Limits of the sandbox that reads a pipeline. */
struct tr_pipeline_limits
{
    size_t mem_max;       /* bytes of Lua heap (default 256 MiB) */
    uint64_t instr_max;   /* VM instructions (default 200 million) */
    double wall_max_s;    /* seconds, covering C functions too (default 10) */
    uint32_t max_tasks;   /* tasks in one pipeline (default 1,000,000) */
};

extern const struct tr_pipeline_limits tr_pipeline_default_limits;

/*
 * Evaluates src (len bytes; chunkname is used in messages, e.g. "w1.lua") in
 * a fresh sandbox and builds the validated graph into *out.
 * Returns 0, or: TR_ELUA (syntax or runtime error, or the file did not return
 * a pipeline), TR_ELIMIT (instruction, memory or time limit), TR_EDUP,
 * TR_EDEP, TR_ECYCLE, TR_EINVAL (a field of the wrong type, a task without
 * run), TR_ETRIGGER, TR_ECRON, with err->msg saying which task and why;
 * TR_ENOMEM.
 */
int tr_pipeline_load(const char *src, size_t len, const char *chunkname,
                     const struct tr_pipeline_limits *lim, struct tr_pipeline_def **out,
                     struct tr_error *err) TR_MUST_CHECK;

/*
 * Evaluates src like tr_pipeline_load, then calls trigger's `when` function
 * with the stats table (stats_len bytes of a msgpack map) under the same
 * limits, and sets *out to its result, which must be a boolean. The trigger
 * is the element of the returned pipeline's triggers named trigger. Returns 0, or the errors of
 * tr_pipeline_load, TR_ENOENT (no such trigger), TR_EINVAL (not a function,
 * or a result that is not a boolean) or TR_ELUA (an error in `when`).
 * Any thread; for the scheduler's sandbox processes only.
 */
int tr_pipeline_when(const char *src, size_t len, const char *chunkname,
                     const struct tr_pipeline_limits *lim, const char *trigger,
                     const void *stats, size_t stats_len, bool *out,
                     struct tr_error *err) TR_MUST_CHECK;

/* Frees def and everything it owns. NULL-safe. */
void tr_pipeline_def_free(struct tr_pipeline_def *def);

/* The trigger called name, or NULL. */
const struct tr_trigger_def *tr_pipeline_find_trigger(const struct tr_pipeline_def *def,
                                                      const char *name);

/* Index of the task called name, or -1. O(log n) after load. */
int32_t tr_pipeline_find_task(const struct tr_pipeline_def *def, const char *name);

/*
 * sha256 of len bytes at p as 64 lowercase hex digits plus NUL; out is ""
 * in the unlikely case that libcrypto cannot allocate its context.
 */
void tr_sha256_hex(const void *p, size_t len, char out[65]);

#endif
