/*
 * sched.h - the scheduler's state, shared by the files of scheduler/.
 *
 * One libuv loop thread owns everything here: no locks. The files split the
 * work: sched.c (runs, task instances, readiness by countdown, results,
 * retries, cancel, the end-of-turn commit), dispatch.c (ready queues per
 * pool, credit, TASK messages), workers.c (worker registry, heartbeats, the
 * ROUTER socket), loader.c (pipeline graphs by digest, read by the sandbox
 * processes of sandbox.c), recover.c (resume after a restart, a state
 * machine over sandbox loads), api.c (HTTP routes),
 * metrics.c (counters for /metrics).
 */
#ifndef TR_SCHED_H
#define TR_SCHED_H

#include <jansson.h>
#include <msgpack.h>
#include <uv.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/http/http_server.h"
#include "lib/base/log.h"
#include "lib/lua/pipeline.h"
#include "lib/wire/proto.h"
#include "lib/state/state.h"

struct sched;
struct sandbox;
struct recovery;
struct run;
struct worker;

/* ---------------------------------------------------------------------- */
/* Configuration                                                           */
/* ---------------------------------------------------------------------- */

struct sched_config
{
    char *api_host;           /* --api host part */
    int api_port;             /* --api port (0 = pick a free one) */
    char *listen;             /* --listen tcp://HOST:PORT for workers */
    char *state_url;          /* --state */
    char *token_file;         /* --token-file */
    char *curve_key;          /* --curve-key: the scheduler's key pair file */
    char *curve_allow;        /* --curve-allow: allowed worker public keys (file or dir) */
    char *etcd_cacert;        /* --etcd-cacert, folded into an etcd:// state_url */
    char *etcd_cert;          /* --etcd-cert */
    char *etcd_key;           /* --etcd-key */
    uint32_t heartbeat_ms;    /* worker heartbeat interval */
    uint32_t prefetch;        /* cap on tasks sent to a worker beyond its slots (adaptive) */
    uint32_t max_slots;       /* --max-slots: slots a worker's HELLO may claim (0: 10,000) */
    uint32_t keep_runs;       /* finished runs kept in memory for the API */
    uint32_t max_params_bytes; /* --max-params-bytes: a run's params as JSON (0: 1 MiB) */
    uint32_t max_params_keys; /* --max-params-keys: keys and elements in them (0: 10,000) */
    double timeout_grace_s;   /* after a task's timeout, before the scheduler gives up on it */
    struct tr_pipeline_limits limits; /* sandbox for reading pipelines */
    char *id;                 /* --id: this scheduler's name in the election */
    char *advertise_api;      /* --advertise-api: API URL standbys redirect to (NULL: --api) */
    uint32_t leader_ttl_s;    /* --leader-ttl: lease of the leader key, seconds */
};

/* ---------------------------------------------------------------------- */
/* Task instances and runs                                                 */
/* ---------------------------------------------------------------------- */

enum inst_state
{
    ST_PENDING = 0,
    ST_READY,
    ST_DISPATCHED,
    ST_RUNNING,
    ST_RETRY_WAIT,
    ST_SUCCEEDED,
    ST_FAILED,
    ST_SKIPPED,
    ST_CANCELLED,
    ST_COUNT
};

extern const char *const inst_state_names[ST_COUNT];

static inline bool inst_state_final(uint8_t s)
{
    return s >= ST_SUCCEEDED;
}

/* One instance of one task in one run (a mapped task has one per element). */
struct inst
{
    struct run *run;          /* owner */
    uint32_t task;            /* index in the pipeline def */
    uint32_t index;           /* map element from 1, 0 when unmapped */
    uint8_t state;            /* enum inst_state */
    bool cached;              /* output reused from the cache */
    bool timed_out;           /* the last attempt hit its timeout */
    uint16_t attempts;        /* dispatches so far (ctx.attempt of the last one) */
    uint16_t failures;        /* failed attempts (compared with retries) */
    int32_t heap_pos;         /* position in its pool's ready heap, or -1 */
    int32_t priority;         /* its task's priority, copied here for the heap's sake */
    uint64_t seq;             /* FIFO order among equal priorities */
    uint64_t dispatch_id;     /* current dispatch (fencing token), 0 when none */
    struct worker *worker;    /* worker of the current dispatch */
    struct inst *wprev;       /* in the worker's in-flight list */
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
    bool dirty;               /* queued for the next commit */
    bool on_slot;             /* counted in its worker's running slots */
    char *usage;              /* LLM calls of all attempts: msgpack array (owned), or NULL */
    uint32_t usage_len;
};

/* The run-time state of one task of the pipeline within a run. */
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
};

enum run_state
{
    RUN_QUEUED = 0,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    RUN_FAILED,
    RUN_CANCELLED
};

extern const char *const run_state_names[5];

struct waiter;

struct run
{
    char id[40];              /* "r-..." */
    struct sched *sched;
    struct pipeline_entry *pipe; /* holds a reference */
    uint8_t state;            /* enum run_state */
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
    uint32_t counts[ST_COUNT]; /* instances by state */
    struct waiter *waiters;   /* long-polls waiting for the end */
    bool dirty;               /* queued for the next commit */
    bool in_memory_only;      /* not committed yet: API readers must not see it from state */
    struct run *lru_prev;     /* finished runs, oldest first */
    struct run *lru_next;
    struct tr_hmap *recovering; /* "task\0index" -> durable record, during recovery only */
    uint32_t outstanding;     /* dispatches still registered (results awaited) */
    json_t *usage_sum;        /* LLM calls summed (usage.c), NULL before the first */
    char *usage_json;         /* usage_sum as JSON text, for the API to splice */
};

/* ---------------------------------------------------------------------- */
/* Pipelines                                                               */
/* ---------------------------------------------------------------------- */

struct pipeline_entry
{
    char digest[65];
    struct tr_pipeline_def *def;  /* owned */
    uint32_t refs;                /* runs using it, plus one while cached */
    double last_used;
    bool stored;                  /* its source is durable in the state */
    char name[128];               /* file name it was first submitted under, for messages */
};

typedef void (*load_done_fn)(struct sched *s, struct pipeline_entry *pe, struct tr_error *err,
                             void *arg);

/* ---------------------------------------------------------------------- */
/* Workers and pools                                                       */
/* ---------------------------------------------------------------------- */

struct pool
{
    char *name;
    struct inst **heap;      /* ready instances, highest priority first */
    size_t n_heap;
    size_t cap_heap;
    struct worker **workers; /* connected workers of this pool */
    size_t n_workers;
    size_t cap_workers;
    size_t rr;               /* round-robin position for dispatch */
    uint32_t runs;           /* unfinished runs with a task in this pool */
};

struct worker
{
    char *id;                /* worker id from its HELLO (owned); key of sched.worker_ids */
    size_t id_len;
    char *ident;             /* routing id of the connection that said HELLO (owned); key
                              * of sched.workers: messages count as this worker's only
                              * when they come on that connection */
    size_t ident_len;
    char key[41];            /* CURVE public key of that connection (Z85), "" without CURVE */
    struct pool *pool;
    uint32_t slots;          /* claimed in HELLO, at most --max-slots */
    uint32_t window;         /* tasks it may hold now: grows with the results it returns */
    uint32_t inflight;       /* dispatched, no result yet */
    uint32_t running;        /* of those, counted as running (within slots) */
    uint32_t gpus, cpus;
    uint64_t mem_mb;
    json_t *labels;          /* object */
    char *version;
    double connected_at;
    double last_seen;        /* wall clock */
    uint64_t last_seen_ns;   /* monotonic */
    double ewma_run_s;       /* moving average of its tasks' run time, 0 until known */
    struct inst *head;       /* in-flight list, oldest first */
    struct inst *tail;
};

/* ---------------------------------------------------------------------- */
/* Metrics                                                                 */
/* ---------------------------------------------------------------------- */

#define LAT_BUCKETS 14

struct metrics
{
    uint64_t runs_total[5];            /* by final run_state (index 2..4 used) */
    uint64_t tasks_succeeded, tasks_failed, tasks_retried, tasks_timed_out;
    uint64_t tasks_cancelled, tasks_skipped, tasks_requeued, tasks_cached;
    uint64_t dropped[9];               /* by enum drop_reason */
    uint64_t commits, commit_errors;
    uint64_t http_by_class[6];         /* 1xx..5xx */
    uint64_t lat_buckets[LAT_BUCKETS + 1];
    double lat_sum;
    uint64_t lat_count;
    uint64_t dispatched;
};

enum drop_reason
{
    DROP_BAD_MSGPACK = 0,
    DROP_TOO_LARGE,
    DROP_BAD_VERSION,
    DROP_UNKNOWN_TYPE,
    DROP_BAD_BODY,
    DROP_UNKNOWN_WORKER,
    DROP_STALE_RESULT,
    DROP_BAD_FRAMES,
    DROP_IMPERSONATION,      /* a HELLO for a live worker id from another connection or key */
    DROP_COUNT
};

extern const char *const drop_reason_names[DROP_COUNT];

/* ---------------------------------------------------------------------- */
/* The scheduler                                                           */
/* ---------------------------------------------------------------------- */

/* A message waiting for the end-of-turn commit before it may be sent. */
struct outmsg
{
    uint32_t ident_off, ident_len; /* in sched.out_bytes */
    uint32_t data_off, data_len;
};

/* An HTTP answer waiting for the end-of-turn commit. */
struct pending_reply
{
    struct tr_http_req *req;  /* NULL once the client went away */
    int status;
    char *body;               /* owned JSON */
    size_t len;
    struct pending_reply *next;
};

/* An output to store in the cache at the next commit. */
struct cache_put
{
    char key[65];
    struct inst *in;
};

/* A delayed action: a retry becoming ready, or a dispatch deadline. */
struct timer_entry
{
    double when;              /* wall clock */
    struct inst *inst;
    uint64_t dispatch_id;     /* deadline: the dispatch it was set for; 0 for a retry */
};

struct sched
{
    uv_loop_t *loop;
    struct sched_config cfg;
    struct tr_state *state;
    uint64_t epoch;
    uint64_t next_run;        /* counter for run ids */
    uint64_t next_seq;
    bool stopping;

    /* Workers */
    void *zctx;
    void *router;
    struct tr_zmq_uv *zuv;
    struct tr_proto_decoder decoder;
    struct tr_hmap workers;   /* connection routing id -> struct worker */
    struct tr_hmap worker_ids; /* worker id -> struct worker */
    struct tr_hmap pools;     /* name -> struct pool */
    struct tr_hmap dispatches; /* dispatch id (8 bytes) -> struct inst */
    struct tr_log_limiter garbage_log;
    int worker_port;          /* bound port for workers */
    struct tr_zap *zap;       /* worker authentication, NULL without CURVE */

    /* Pipelines */
    struct tr_hmap pipes;     /* digest -> struct pipeline_entry */
    uint32_t loads_in_flight;
    struct sandbox *sandbox;  /* the processes that read pipeline files (sandbox.h) */
    struct recovery *recovery; /* resuming runs after a restart (recover.c), or NULL */

    /* Runs */
    struct tr_hmap runs;      /* id -> struct run (active and recently finished) */
    struct run *lru_head;     /* finished runs, oldest first */
    struct run *lru_tail;
    uint32_t n_finished_in_memory;
    uint32_t n_active;

    /* The turn: what waits for the commit */
    struct inst **dirty_insts;
    size_t n_dirty_insts, cap_dirty_insts;
    struct run **dirty_runs;
    size_t n_dirty_runs, cap_dirty_runs;
    struct tr_pipeline_rec *dirty_pipes; /* registrations (strings owned) */
    size_t n_dirty_pipes, cap_dirty_pipes;
    struct pipeline_entry **dirty_sources; /* pipelines whose source must be stored */
    size_t n_dirty_sources, cap_dirty_sources;
    struct cache_put *dirty_cache; /* outputs to store in the task cache */
    size_t n_dirty_cache, cap_dirty_cache;
    uv_timer_t commit_retry;  /* retries a failed commit */
    struct outmsg *out;
    size_t n_out, cap_out;
    struct tr_buf out_bytes;
    struct pending_reply *replies;
    struct pending_reply **replies_tail;
    bool commit_failing;      /* the last commit failed: writes answer 503 */
    msgpack_sbuffer sbuf;     /* scratch for encoding */

    /* Timers */
    struct timer_entry *timers; /* min-heap by when */
    size_t n_timers, cap_timers;
    uv_timer_t timer;         /* fires at the earliest timer entry */
    uv_timer_t heartbeat;     /* heartbeats and dead-worker checks */
    uv_prepare_t turn;        /* end of turn: schedule, commit, send, reply */
    uv_check_t turn_check;    /* same, after I/O, so work done in poll is flushed at once */
    uv_signal_t sigint, sigterm;

    /* API */
    struct tr_http_server *http;
    char **tokens;            /* NULL-terminated, owned */

    struct metrics m;

    /* High availability (leader.c) */
    struct leader *ha;        /* election state; never NULL between sched_init and close */
    struct fb_loop *fb;       /* the feedback loop (feedback.h) */
    int exit_code;            /* the process's exit status once the loop stops */
};

/* sched.c */
/* Appends to a growable array of pointers or structs; 0 or TR_ENOMEM. */
#define VEC_PUSH(arr, n, cap, val)                                               \
    ({                                                                           \
        int rc_ = 0;                                                             \
        if ((n) == (cap)) {                                                      \
            size_t ncap_ = (cap) ? (cap) * 2 : 64;                               \
            void *p_ = tr_reallocarray((arr), ncap_, sizeof(*(arr)));            \
            if (p_ == NULL)                                                      \
                rc_ = TR_ENOMEM;                                                 \
            else {                                                               \
                (arr) = p_;                                                      \
                (cap) = ncap_;                                                   \
            }                                                                    \
        }                                                                        \
        if (rc_ == 0)                                                            \
            (arr)[(n)++] = (val);                                                \
        rc_;                                                                     \
    })

double mono_s(struct sched *s);
void oom_fatal(const char *what);
void inst_attempt_failed(struct inst *in, struct tr_str error, bool timed_out);
void inst_end_dispatch(struct inst *in);
void runs_evict(struct sched *s);
void run_free(struct run *r);

/* timers.c */
void timers_push(struct sched *s, double when, struct inst *in, uint64_t dispatch_id);
void timers_forget_run(struct sched *s, struct run *r);
void on_timer(uv_timer_t *h);

/* turn.c */
int sched_init(struct sched *s, uv_loop_t *loop, const struct sched_config *cfg,
               struct tr_error *err) TR_MUST_CHECK;
void sched_close(struct sched *s);
struct inst *task_inst(struct task_rt *trt, uint32_t i);
void inst_set_state(struct inst *in, uint8_t st);
int run_create(struct sched *s, struct pipeline_entry *pe, json_t *params, struct run **out,
               struct tr_error *err) TR_MUST_CHECK;
void run_start(struct run *r);
struct run *run_find(struct sched *s, const char *id);
int run_cancel(struct run *r, const char *reason);
void sched_on_result(struct sched *s, struct worker *w, const struct tr_msg_result *m);
void sched_on_log(struct sched *s, struct worker *w, const struct tr_msg_log *m);
void inst_requeue(struct inst *in);
void inst_mark_dirty(struct inst *in);
void run_mark_dirty(struct run *r);
int sched_queue_reply(struct sched *s, struct tr_http_req *req, int status, json_t *body);
/* The same with a JSON text (taken; tr_free'd). NULL text answers 500. */
int sched_queue_reply_text(struct sched *s, struct tr_http_req *req, int status, char *text);
void inst_complete(struct inst *in, const char *output, size_t len, bool cached);
void inst_fail_final(struct inst *in, const char *error);
bool run_is_final(const struct run *r);
int inst_build_args(struct inst *in, struct tr_buf *out) TR_MUST_CHECK;
void inst_logs_add(struct inst *in, const struct tr_str *lines, uint32_t n);

/* dispatch.c */
/* Pool names go into metrics and logs: 1 to 63 of [A-Za-z0-9_.-]. */
bool pool_name_valid(const char *name, size_t len);
struct pool *pool_get(struct sched *s, const char *name, size_t len);
int pool_push_ready(struct pool *p, struct inst *in) TR_MUST_CHECK;
void pool_remove(struct pool *p, struct inst *in);
/* Dispatches what credit allows; true when it stopped at the turn's byte
 * bound with work left (the caller makes another turn come at once). */
bool sched_dispatch_all(struct sched *s);
/* Takes (+1) or drops (-1) a reference to each pool of the run's pipeline. */
void pools_ref_run(struct run *r, int delta);
/* Frees the pools nothing refers to (no ready task, no worker, no unfinished
 * run); called from the heartbeat timer, never while pools are iterated. */
void pools_sweep(struct sched *s);
int sched_queue_msg(struct sched *s, const struct worker *w, const struct tr_msg *m) TR_MUST_CHECK;
void sched_send_queued(struct sched *s);
struct pool *inst_pool(struct inst *in);
void inst_make_ready(struct inst *in);
/* Tasks a worker may hold beyond its slots now (adaptive, at most --prefetch). */
uint32_t worker_prefetch(const struct sched *s, const struct worker *w);
/*
 * Slow start: a worker's claimed slots are not trusted until it runs tasks.
 * It may hold WINDOW_START tasks at first and WINDOW_STEP more for each
 * result it returns (never more than its slots plus prefetch), so one that
 * claims much and returns nothing holds little, while a real one reaches its
 * slots within two of its task run times.
 */
#define WINDOW_START 16
#define WINDOW_STEP 64
#define MAX_SLOTS_DEFAULT 10000
void worker_window_grow(struct worker *w);

/* workers.c */
int workers_init(struct sched *s, struct tr_error *err) TR_MUST_CHECK;
void workers_close(struct sched *s);
void worker_remove(struct sched *s, struct worker *w, const char *why);
void worker_inflight_add(struct worker *w, struct inst *in);
void worker_inflight_del(struct worker *w, struct inst *in);

/* loader.c */
struct pipeline_entry *pipe_lookup(struct sched *s, const char *digest);
void pipe_ref(struct pipeline_entry *pe);
void pipe_unref(struct sched *s, struct pipeline_entry *pe);
/* Loads src (copied) in a sandbox process (sandbox.h); done is called on the
 * loop, exactly once, possibly before this returns. */
int pipe_load_async(struct sched *s, const char *src, size_t len, const char *name,
                    load_done_fn done, void *arg) TR_MUST_CHECK;
void pipes_close(struct sched *s);

/* recover.c */
/* Starts resuming the unfinished runs (asynchronously: their pipelines are
 * read by the sandbox first); fails only when they cannot be listed. */
int sched_recover(struct sched *s, struct tr_error *err) TR_MUST_CHECK;
/* After sandbox_close: drops what recovery still holds. */
void recover_close(struct sched *s);
void recover_apply(struct inst *in);

/* usage.c */
/* The text of usage_sum_new(): a run that made no LLM call. */
#define USAGE_EMPTY_JSON                                                                       \
    "{\"calls\":0,\"prompt_tokens\":0,\"completion_tokens\":0,\"cost\":0.0,\"latency_ms\":0.0," \
    "\"by_model\":{},\"prompt_digests\":[]}"
/*
 * Appends the calls of one attempt (calls: a msgpack array) to an
 * instance's list (*list: a msgpack array with a 32-bit header, or NULL).
 * TR_EPROTO when calls is not a valid array (the list is unchanged);
 * TR_E2BIG when the bounds left some calls out (those that fit were added);
 * TR_ENOMEM.
 */
int usage_concat(char **list, uint32_t *list_len, const void *calls, size_t len) TR_MUST_CHECK;
/* The empty sum: {calls, prompt_tokens, completion_tokens, cost, latency_ms, by_model,
 * prompt_digests}; NULL when out of memory. */
json_t *usage_sum_new(void);
/* Adds the call records of a msgpack array to sum; 0 or a negative TR_E* code. */
int usage_sum_add(json_t *sum, const void *calls, size_t len) TR_MUST_CHECK;
/* The totals of a sum without by_model and prompt_digests (for listings). */
json_t *usage_sum_brief(const json_t *sum);
/* The call records of a msgpack array as a JSON array ([] when none or unreadable). */
json_t *usage_records_json(const void *calls, size_t len);
/* Keeps an attempt's calls with the instance and adds them to its run's sum. */
void inst_usage_add(struct inst *in, const void *calls, size_t len);
/* Adds calls to the run's sum and refreshes its text. */
void run_usage_add(struct run *r, const void *calls, size_t len);

/* api.c */
int api_init(struct sched *s, struct tr_error *err) TR_MUST_CHECK;
void api_close(struct sched *s);
json_t *run_to_json(struct run *r, bool with_output);
/* The run's whole JSON as text (caller frees with tr_free); NULL when out of memory. */
char *run_json_text(struct run *r, size_t *len);
void waiters_wake(struct run *r);
void waiters_close_all(struct sched *s);

/* turn.c: takes an epoch, recovers unfinished runs and binds the worker
 * port; what a scheduler does once it leads. */
int sched_lead(struct sched *s, struct tr_error *err) TR_MUST_CHECK;

/* leader.c */
struct leader;
int leader_open(struct sched *s, struct tr_error *err) TR_MUST_CHECK;
/* After the API listens: leads at once without coordination, else campaigns. */
int leader_start(struct sched *s, struct tr_error *err) TR_MUST_CHECK;
void leader_close(struct sched *s);
/* This process leads (always true without coordination). */
bool leader_acting(const struct sched *s);
/* "leader", "standby" or "stopping", for /healthz and /readyz. */
const char *leader_role_name(const struct sched *s);
/* May commit, dispatch and send now: leads, and the lease is known alive for a
 * third of its TTL more. Pauses (and resumes) with a log line. */
bool leader_may_act(struct sched *s);
void leader_worker_up(struct sched *s, const struct worker *w);
void leader_worker_down(struct sched *s, const struct worker *w);
/* The HTTP server's before hook: a standby redirects every non-probe call. */
bool leader_gate(struct tr_http_req *req, void *arg);
void leader_h_readyz(struct tr_http_req *req, void *arg);

/* metrics.c */
void metrics_observe_latency(struct metrics *m, double seconds);
char *metrics_render(struct sched *s, size_t *len);
void metrics_drop(struct sched *s, enum drop_reason why, const void *sample, size_t len);

/* Time as RFC 3339 UTC with milliseconds into out (at least 32 bytes); "" for 0. */
void fmt_time(double t, char *out, size_t size);
json_t *json_time(double t);

#endif
