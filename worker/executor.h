/*
 * executor.h - runs the tasks a worker receives.
 *
 * The executor owns the pipeline states (one lua_State per pipeline digest,
 * kept in an LRU cache) and every task the scheduler sent: those waiting for
 * their pipeline's source, those queued for a slot (FIFO) and those running.
 * A running task is a coroutine of its pipeline's state. When it calls an
 * operation that waits (trellis.sleep, and later trellis.http), the C side
 * registers a pending operation with a cancel function and yields; the loop
 * resumes the coroutine when the operation completes. A count hook on every
 * task coroutine preempts a task that computes for long (it yields, and is
 * resumed on a later loop turn) and stops one whose timeout passed. Timeouts
 * and CANCEL stop a suspended or preempted task at once.
 *
 * It speaks to the scheduler only through the send callback it is given
 * (RESULT, LOG, PIPELINE_GET), so it knows nothing of the connection.
 *
 * Loop thread only; nothing here is thread-safe.
 */
#ifndef TR_WORKER_EXECUTOR_H
#define TR_WORKER_EXECUTOR_H

#include <lua.h>
#include <uv.h>

#include "lib/wire/proto.h"
#include "worker/watchdog.h"

struct tr_executor;
struct tr_task;

/*
 * Sends m to the scheduler now. The views in m are valid during the call
 * only. Called from the loop thread, never re-entrantly from inside another
 * executor call that is sending.
 */
typedef void (*tr_exec_send_fn)(void *arg, const struct tr_msg *m);

struct tr_executor_config
{
    uint32_t slots;       /* tasks running at once, at least 1 */
    size_t lua_mem_max;   /* heap cap of each pipeline state in bytes, 0 = none */
    uint32_t max_states;  /* idle pipeline states kept (LRU); 0 = 16 */
    tr_exec_send_fn send; /* how messages reach the scheduler */
    void *send_arg;
    struct tr_watchdog *watchdog; /* told when task code runs, or NULL */
    lua_CFunction open_modules;   /* registers the worker's Lua modules in a new
                                   * state (may raise; pool thread), or NULL */
};

/* A new executor on loop; NULL when out of memory. */
struct tr_executor *tr_executor_new(uv_loop_t *loop, const struct tr_executor_config *cfg)
    TR_MUST_CHECK;

/*
 * Drops every task without sending anything, closes the pipeline states and
 * closes the executor's handles; the memory is freed from their close
 * callbacks, so the loop must run afterwards. NULL-safe.
 */
void tr_executor_free(struct tr_executor *e);

/*
 * Takes one TASK (copies what it needs). It starts at once when its pipeline
 * is loaded and a slot is free, otherwise it waits: for the pipeline (a
 * PIPELINE_GET is sent once per digest) or in the FIFO. Every task ends with
 * exactly one RESULT, unless tr_executor_abort_all drops it first.
 */
void tr_executor_on_task(struct tr_executor *e, const struct tr_msg_task *m);

/*
 * CANCEL: a waiting task is dropped and a running one stopped; both answer
 * RESULT with cancelled=true. An unknown id is ignored.
 */
void tr_executor_on_cancel(struct tr_executor *e, const struct tr_msg_cancel *m);

/* PIPELINE: loads the source into a new state and starts the tasks waiting for it. */
void tr_executor_on_pipeline(struct tr_executor *e, const struct tr_msg_pipeline *m);

/*
 * Drops every task without a RESULT (the scheduler that sent them is gone or
 * forgot us, and re-dispatches them). Loaded pipeline states are kept.
 * Returns how many tasks were dropped.
 */
uint32_t tr_executor_abort_all(struct tr_executor *e);

/*
 * Called on every heartbeat tick: sends the log lines of running tasks in
 * LOG messages and asks again for pipelines whose source is slow to come.
 */
void tr_executor_tick(struct tr_executor *e);

/* Tasks running, and tasks waiting (for a slot or for their pipeline). */
uint32_t tr_executor_running(const struct tr_executor *e);
uint32_t tr_executor_waiting(const struct tr_executor *e);

/* ====================================================================== */
/* For the Lua functions that tasks call (lua_worker.c, lua_http.c)       */
/* ====================================================================== */

/*
 * Stops the pending operation op of task t: it must release what it holds
 * (or arrange for its release from the loop) and never resume t afterwards.
 */
typedef void (*tr_task_cancel_fn)(struct tr_task *t, void *op);

/* The executor that owns the pipeline state L belongs to, or NULL. Never raises. */
struct tr_executor *tr_executor_of(lua_State *L);

/*
 * The task being run right now when L is that task's own coroutine, else
 * NULL: outside any task (a pipeline's top level), or inside a coroutine the
 * task created, where a yield would go to the task's code, not to the loop.
 * Never raises.
 */
struct tr_task *tr_task_of(lua_State *L);

/*
 * The task being run right now in any coroutine of the state L (ctx.log,
 * hooks), or NULL. Never raises.
 */
struct tr_task *tr_task_running(lua_State *L);

/*
 * Suspends task t (whose coroutine is L, see tr_task_of) on the pending
 * operation op. Use as the return statement of a lua_CFunction:
 * `return tr_task_yield(L, t, op, cancel, kctx, k);`. Later exactly one of
 * these happens: op completes and calls tr_task_resume(t), and then k runs
 * in the coroutine and returns the operation's results to Lua (it may raise
 * there); or the task is stopped (timeout, CANCEL, lost scheduler) and
 * cancel(t, op) is called instead. Does not return to the caller (lua_yieldk).
 */
int tr_task_yield(lua_State *L, struct tr_task *t, void *op, tr_task_cancel_fn cancel,
                  lua_KContext kctx, lua_KFunction k);

/*
 * Resumes t after its pending operation completed. Call from a loop callback,
 * never from inside the task's own coroutine. The task may finish (and t be
 * reused) before this returns.
 */
void tr_task_resume(struct tr_task *t);

/*
 * A timer that belongs to t, free for its pending operation (trellis.sleep
 * uses it). Its data pointer is t. The executor stops it when the task ends.
 */
uv_timer_t *tr_task_timer(struct tr_task *t);

/* Appends one ctx.log line (truncated to 1 KiB). Never raises; out of memory drops it. */
void tr_task_log(struct tr_task *t, const char *line, size_t len);

/*
 * Tokens of a streamed LLM call of t as they arrive: gathered and sent to the
 * scheduler in one LLM_DELTA per task every TR_TASK_DELTA_MS (and before the
 * task's RESULT), at most TR_PROTO_DELTA_MAX bytes per message; more is
 * dropped and a note says how much. Loop thread only.
 */
#define TR_TASK_DELTA_MS 25
void tr_task_llm_delta(struct tr_task *t, const char *text, size_t len);

/* The device indices given to t (ctx.gpus): *n of them, valid while t runs. */
const uint32_t *tr_task_gpus(const struct tr_task *t, uint32_t *n);

/* The task's name, for error messages; NUL-terminated, valid while t runs. */
const char *tr_task_name(const struct tr_task *t);

/* The loop the executor runs on (trellis.http puts its sockets there). */
uv_loop_t *tr_executor_loop(const struct tr_executor *e);

/* One model call, for the usage list that travels in RESULT (trellis.llm). */
struct tr_task_usage
{
    const char *provider;       /* NUL-terminated */
    const char *model;
    const char *prompt_digest;  /* sha256 hex of the request's messages */
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    double cost;                /* USD, from the provider's prices; 0 when unknown */
    double latency_ms;
    bool cached;                /* answered from the response cache */
};

/* Most usage entries one attempt carries; later calls are counted, not listed. */
#define TR_TASK_USAGE_MAX 1000

/*
 * Appends one entry (copied) to t's usage list, sent as RESULT.usage when
 * the attempt ends. 0, TR_E2BIG past TR_TASK_USAGE_MAX entries, TR_ENOMEM.
 * Never raises.
 */
int tr_task_usage_add(struct tr_task *t, const struct tr_task_usage *u) TR_MUST_CHECK;

/*
 * Appends a guard record {guard = check, stage = stage} to t's usage list:
 * a model call that trellis.guard blocked (the scheduler counts them in
 * trellis_guard_blocked_total and does not sum them as calls). Same results
 * as tr_task_usage_add.
 */
int tr_task_guard_add(struct tr_task *t, const char *check, const char *stage) TR_MUST_CHECK;

/*
 * Pushes the guards the pipeline declares for the running task t (the
 * pipeline's `guards` field) and the task's own (its `guards` field): two
 * values, each a table or nil. Never raises.
 */
void tr_task_push_guards(lua_State *L, const struct tr_task *t);

#endif
