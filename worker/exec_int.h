/*
 * exec_int.h - the executor's private structures, shared by executor.c
 * (tasks: queue, coroutines, timeouts), result.c (how a task ends),
 * task_log.c (ctx.log lines) and pipes.c (pipeline states: load, index of
 * run functions, LRU). Nothing outside those files includes it.
 *
 * Ownership: the executor owns every task and every pipeline state. A task
 * sits in exactly one list at a time (its pipeline's waiting list, the run
 * queue, or the running list), or in the free pool. Task structs are pooled
 * and only freed when the executor is, so that their embedded timers never
 * need closing on the hot path.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_EXEC_INT_H
#define TR_WORKER_EXEC_INT_H

#include <msgpack.h>

#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/base/log.h"
#include "worker/executor.h"

#define TR_EXEC_LOG_LINES 200        /* unsent ctx.log lines a task keeps */
#define TR_EXEC_IDLE_COROUTINES 256  /* finished coroutines a state keeps for reuse */

enum task_where
{
    T_FREE = 0,  /* in the executor's pool */
    T_WAIT_PIPE, /* in its pipeline's waiting list: the source has not come yet */
    T_QUEUED,    /* in the run queue, waiting for a slot */
    T_RUNNING    /* in the running list: its coroutine exists */
};

enum task_kill
{
    KILL_NONE = 0,
    KILL_TIMEOUT, /* its timeout expired */
    KILL_CANCEL   /* the scheduler sent CANCEL */
};

struct task_list
{
    struct tr_task *head;
    struct tr_task *tail;
    uint32_t n;
};

struct log_line
{
    char *p;      /* owned copy, not NUL-terminated */
    uint32_t len;
};

struct tr_task
{
    struct tr_executor *exec; /* owner */
    enum task_where where;    /* which list holds it */
    struct task_list *list;   /* that list (NULL when free) */
    struct tr_task *prev;     /* list links; next also links the free pool */
    struct tr_task *next;

    /* From TASK, echoed in RESULT. */
    uint64_t id;             /* dispatch id: the fencing token and the map key */
    uint64_t epoch;
    uint32_t attempt;
    uint32_t index;
    double timeout;          /* seconds, 0 = none */
    uint32_t n_gpus;         /* devices given to this attempt (ctx.gpus) */
    uint32_t gpus[TR_PROTO_MAX_GPUS];
    struct tr_buf data;      /* run id NUL, task name NUL, params, args */
    struct tr_str run_id;    /* views into data, set once data is complete */
    struct tr_str name;
    struct tr_str params;
    struct tr_str args;
    struct pipe *pipe;       /* its pipeline state (counts it in active) */

    /* While running. */
    lua_State *co;           /* its coroutine, pinned by co_ref */
    int co_ref;
    void *op;                /* pending operation while suspended, else NULL */
    tr_task_cancel_fn op_cancel;
    bool preempted;          /* yielded by the hook: in the ready queue */
    bool hook_raised;        /* the hook raised in its coroutines: never reuse them */
    struct tr_task *ready_next; /* the ready queue's link */
    struct run_env *env;     /* its run's globals in its pipeline state (counts it) */
    enum task_kill kill;     /* set once it must stop */
    char kill_reason[128];   /* CANCEL's reason, for the error message */
    uint64_t start_ns;       /* monotonic start */
    uint64_t deadline_ns;    /* monotonic deadline, 0 = none */
    double started_at;       /* wall clock, for RESULT */
    uv_timer_t timeout_timer;
    uv_timer_t op_timer;     /* free for the pending operation (tr_task_timer) */
    int closing;             /* handles still closing when the executor is freed */

    /* ctx.log lines not sent yet: a ring of TR_EXEC_LOG_LINES. */
    struct log_line *logs;   /* allocated at the first line, kept while pooled */
    uint32_t log_head;       /* oldest line */
    uint32_t log_n;
    uint64_t log_dropped;    /* lines dropped since the last report */

    /* Model calls of this attempt (tr_task_usage_add): a msgpack array32
     * header whose count is written when RESULT is sent, then the maps. */
    struct tr_buf usage;
    uint32_t n_usage;
    uint64_t usage_dropped;  /* calls past TR_TASK_USAGE_MAX */

    /* Tokens of streamed LLM calls not sent yet (task_delta.c). */
    struct tr_buf delta;     /* at most TR_PROTO_DELTA_MAX bytes */
    uint64_t delta_dropped;  /* bytes dropped since the last LLM_DELTA */
    /* The LLM call in progress, for its span and traceparent (traces.c). */
    char llm_span[17];       /* hex span id, "" when none */
    double llm_span_start;   /* wall clock */
};

enum pipe_state
{
    P_LOADING = 0, /* PIPELINE_GET sent, source not here yet */
    P_READY        /* state built, run functions indexed */
};

struct run_fn
{
    char *name; /* owned, NUL-terminated; the by_name key */
    int ref;    /* registry ref of the run function */
    int guards_ref; /* registry ref of the task's `guards` table, or LUA_NOREF */
};

/* The globals of one run in one pipeline state: a table whose misses read the
 * state's shared globals. Dropped when the run has no task left here. */
struct run_env
{
    int ref;        /* registry ref of the table */
    uint32_t tasks; /* tasks of the run holding it */
    uint32_t len;   /* bytes of key */
    char key[];     /* the run id: the by-run key */
};

struct idle_co
{
    lua_State *co;
    int ref;
};

struct pipe
{
    char digest[65];            /* sha256 hex of the source: the map key */
    enum pipe_state state;
    lua_State *L;               /* NULL until loaded */
    char *label;                /* "name@version" for logs */
    struct run_fn *runs;        /* one per task of the pipeline */
    uint32_t n_runs;
    struct tr_hmap by_name;     /* task name -> struct run_fn */
    struct task_list waiting;   /* tasks that came before the source */
    uint32_t active;            /* tasks waiting, queued or running on it */
    uint64_t used_tick;         /* executor clock at its last use, for the LRU */
    uint64_t requested_ns;      /* when PIPELINE_GET was last sent */
    struct idle_co *idle;       /* finished coroutines to reuse */
    uint32_t n_idle;
    int chunk_ref;              /* the chunk function: its upvalue 1 is the file's _ENV */
    int globals_ref;            /* the shared globals (what _ENV holds outside tasks) */
    int env_mt_ref;             /* metatable of the run tables: reads fall back to globals */
    struct tr_hmap run_envs;    /* run id -> struct run_env */
    struct load_job *job;       /* the file's evaluation in the thread pool, or NULL */
    bool orphaned;              /* forgotten while loading: the job's end frees it */
    int guards_ref;             /* the pipeline's `guards` table, or LUA_NOREF */
};

struct tr_executor
{
    uv_loop_t *loop;
    struct tr_executor_config cfg;
    struct tr_hmap pipes;       /* digest -> struct pipe */
    struct pipe *last_pipe;     /* the most recent lookup: most tasks share a digest */
    struct tr_hmap tasks;       /* dispatch id -> struct tr_task (every task not free) */
    struct task_list queue;     /* FIFO of tasks waiting for a slot */
    struct task_list running;
    struct tr_task *pool;       /* free task structs, linked by next */
    uint32_t n_alloc;           /* task structs allocated */
    struct tr_task *current;    /* the task whose coroutine runs right now */
    uint64_t slice_start_ns;    /* when current was resumed (preemption) */
    uint64_t guard_ns;          /* deadline of pipeline code run outside tasks, 0 = none */
    struct tr_task *ready_head; /* tasks preempted by the hook, resumed in order */
    struct tr_task *ready_tail;
    uv_idle_t ready_idle;       /* runs while ready_head != NULL */
    uint32_t closing;           /* handles and jobs still to end when the executor is freed */
    uint32_t n_jobs;            /* pipeline evaluations in the thread pool */
    bool pumping;               /* re-entrancy guard of the slot filler */
    bool freeing;               /* tr_executor_free is running */
    uint64_t clock;             /* bumped at each use of a state (LRU) */
    msgpack_sbuffer out;        /* a task's output, packed; reused */
    msgpack_zone zone;          /* params and args decoding; reused */
    struct tr_buf msg;          /* error messages being built; reused */
    struct tr_log_limiter refused; /* TASKs answered without being stored */
    uv_timer_t delta_timer;     /* sends the tokens tasks gathered (task_delta.c) */
};

/* Lists (executor.c). */
void task_list_push(struct task_list *l, struct tr_task *t);
void task_list_remove(struct tr_task *t);

/*
 * Ends t with a failure before or instead of running it, sending RESULT
 * (result.c). The message is formatted like printf.
 */
void exec_fail_task(struct tr_task *t, const char *fmt, ...) TR_PRINTF(2, 3);

/* Sends t's gathered LLM tokens as one LLM_DELTA (task_delta.c); none: nothing. */
void task_delta_flush(struct tr_executor *e, struct tr_task *t);
/* The delta timer's callback (task_delta.c). */
void task_delta_on_timer(uv_timer_t *h);

/* Frees every unsent log line of t (task_log.c). */
void task_logs_clear(struct tr_task *t);

/*
 * Fills views (at most TR_PROTO_MAX_LOGS) with t's oldest lines, a note about
 * dropped lines first, written into the caller's note buffer. Returns how many
 * views were filled and, in *taken, how many ring lines they use.
 */
uint32_t task_logs_take(struct tr_task *t, struct tr_str *views, char *note, size_t note_size,
                        uint32_t *taken);

/* Forgets the first `taken` lines once they were sent, and the dropped count. */
void task_logs_consume(struct tr_task *t, uint32_t taken);

/* Sends LOG messages until at most `keep` lines remain unsent. */
void task_logs_flush(struct tr_executor *e, struct tr_task *t, uint32_t keep);

/*
 * Takes t out of every structure and back to the pool: stops its timers,
 * resets and recycles its coroutine. Sends nothing (executor.c).
 */
void exec_release(struct tr_executor *e, struct tr_task *t);

/*
 * Ends a running task (result.c): finish_ok with the nres results on top of
 * its coroutine, finish_error after lua_resume returned status, and
 * finish_killed for a task stopped by its timeout or by CANCEL (t->kill).
 * Each sends RESULT, releases t and fills the freed slot.
 */
void exec_finish_ok(struct tr_executor *e, struct tr_task *t, int nres);
void exec_finish_error(struct tr_executor *e, struct tr_task *t, int status);
void exec_finish_killed(struct tr_executor *e, struct tr_task *t);

/* Starts queued tasks while slots are free (executor.c). */
void exec_pump(struct tr_executor *e);

/* The state for digest, or NULL (pipes.c). */
struct pipe *pipe_find(struct tr_executor *e, struct tr_str digest);

/* A new state for digest in P_LOADING; sends PIPELINE_GET. NULL when out of memory. */
struct pipe *pipe_request(struct tr_executor *e, struct tr_str digest);

/*
 * Forgets p and frees it with its Lua state, or once its evaluation in the
 * thread pool ends; p must have no task (pipes.c).
 */
void pipe_free(struct tr_executor *e, struct pipe *p);

/* Frees p's memory and state; p is in no map and has no job. */
void pipe_destroy(struct pipe *p);

/* One more handle or job of a freed executor has ended (executor.c). */
void exec_closed_one(struct tr_executor *e);

/* Frees idle ready states beyond cfg.max_states, least recently used first. */
void pipe_evict(struct tr_executor *e);

/* The run function's registry ref for a task name, or LUA_NOREF. */
int pipe_run_ref(struct pipe *p, struct tr_str name);

/*
 * A coroutine for a new task: a reused one, or a new one pushed and pinned.
 * May raise (memory): call inside lua_pcall on p->L.
 */
void pipe_take_coroutine(struct pipe *p, lua_State **co, int *ref);

/* Gives a finished (reset) coroutine back for reuse, or unpins it. Never raises. */
void pipe_give_coroutine(struct pipe *p, lua_State *co, int ref);

/* Re-sends PIPELINE_GET for states whose source is slow to come (pipes.c). */
void pipe_tick(struct tr_executor *e);

/*
 * Points the _ENV of t's pipeline file at t's run globals (enter) or back at
 * the shared globals (leave), around everything that runs the file's code
 * for t. Never raise (pipes.c).
 */
void pipe_env_enter(struct pipe *p, struct tr_task *t);
void pipe_env_leave(struct pipe *p);

/* Attaches t to its run's globals, creating them. May raise: call protected on p->L. */
void pipe_env_attach(struct pipe *p, struct tr_task *t);

/* Detaches t from its run's globals, dropping them with the run's last task. Never raises. */
void pipe_env_detach(struct pipe *p, struct tr_task *t);

/* The count hook of every task coroutine (executor.c), and its count. */
void exec_task_hook(lua_State *L, lua_Debug *ar);
#define TR_EXEC_HOOK_COUNT 1000

/* Sends one message through the executor's send callback. */
static inline void exec_send(struct tr_executor *e, const struct tr_msg *m)
{
    e->cfg.send(e->cfg.send_arg, m);
}

#endif
