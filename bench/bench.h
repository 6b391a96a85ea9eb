/*
 * bench.h - what the files of trellis-bench share.
 *
 * trellis-bench measures a real cluster (one trellis-scheduler, two
 * trellis-worker --slots 1, all on 127.0.0.1) on the peers' workloads W1-W4
 * (WORKLOADS.md of the peers' folder, ../shared/bench/peers beside the
 * repository: bench/README.md) plus L, the reading of a large
 * pipeline, and H, slow HTTP calls in flight on one worker (issue 4). The
 * program is single-threaded; the only asynchronous code is the signal
 * handler of bench_cluster.c, which stops the children it started.
 *
 *   trellis_bench.c    options, the repeat loop, medians, text and JSON output
 *   bench_cluster.c    child processes, free ports, watchdog, /proc readings
 *   bench_http.c       the API client (libcurl easy handle + jansson)
 *   bench_workloads.c  the pipelines and the measurement of each workload
 *   bench_h.c          workload H: its HTTP server and its cluster of one worker
 */
#ifndef TR_BENCH_H
#define TR_BENCH_H

#include <sys/types.h>

#include <jansson.h>

#include "lib/base/buf.h"
#include "lib/base/error.h"

/* ===================== options ===================== */

enum tr_bench_wl
{
    TR_BENCH_W1 = 0,
    TR_BENCH_W2,
    TR_BENCH_W3,
    TR_BENCH_W4,
    TR_BENCH_L,
    TR_BENCH_HTTP, /* H (TR_BENCH_H is this header's guard) */
    TR_BENCH_FEEDBACK, /* F: feedback posts per second (bench_feedback.c) */
    TR_BENCH_N_WL
};

struct tr_bench_opts
{
    char *scheduler_bin;        /* path of trellis-scheduler */
    char *worker_bin;           /* path of trellis-worker */
    uint32_t n[TR_BENCH_N_WL];  /* size of each workload (tasks; W2: round trips) */
    uint32_t w2_discard;        /* W2 round trips run first and discarded (50) */
    uint32_t warmup;            /* no-op tasks of the warm-up run (200) */
    uint32_t workers;           /* trellis-worker processes (2) */
    uint32_t slots;             /* --slots of each worker (1) */
    uint32_t l_loads;           /* in-process loads of L, median taken (5) */
    uint32_t l_posts;           /* POST /v1/pipelines of L, median taken (3) */
    bool only[TR_BENCH_N_WL];   /* workloads to run */
    uint32_t repeat;            /* runs of the whole set */
    uint32_t deadline_s;        /* bound on one workload's wait, seconds (300) */
    uint32_t watchdog_s;        /* bound on one repeat, seconds; then all is stopped */
    bool json;                  /* one JSON document on stdout instead of lines */
    bool keep;                  /* keep the temporary directory (logs, state) */
    uint32_t h_slots;           /* --slots of H's one worker (1000) */
    uint32_t h_latency_ms;      /* how long H's server takes to answer (200) */
    char *h_server;             /* H's server: bench/slow_server.py */
    uint32_t f_clients;         /* F: concurrent API clients (64) */
};

/* ===================== results ===================== */

#define TR_BENCH_MAX_FIELDS 12

struct tr_bench_field
{
    const char *key;  /* static string, e.g. "tasks_per_s" */
    double v;
    int prec;         /* digits after the point when printed */
};

/* One workload's outcome in one repeat. */
struct tr_bench_result
{
    bool ran;                                         /* the workload was attempted */
    bool ok;                                          /* and measured */
    char error[TR_ERROR_MSG_MAX];                     /* why not, when !ok */
    struct tr_bench_field f[TR_BENCH_MAX_FIELDS];     /* in output order */
    int n_fields;
};

/* Appends key=v to r (printed with prec decimals). Static key strings only. */
void tr_bench_field_add(struct tr_bench_result *r, const char *key, double v, int prec);

/* Marks r failed with the message of err (the first failure is kept). */
void tr_bench_fail(struct tr_bench_result *r, const struct tr_error *err);

/* Sorts v (n > 0) in place and returns its median (mean of the middle two when n is even). */
double tr_bench_median(double *v, size_t n);

/* ===================== HTTP client ===================== */

struct tr_bench_http;

/*
 * A client of the API at http://host:port (one curl easy handle, so one
 * keep-alive connection reused across calls). NULL when out of memory or
 * when curl cannot make a handle.
 */
struct tr_bench_http *tr_bench_http_new(const char *host_port) TR_MUST_CHECK;

/* Frees h (closes its connection). NULL-safe. */
void tr_bench_http_free(struct tr_bench_http *h);

/*
 * method path with an optional JSON body (body NULL: none). Waits at most
 * timeout_s. On a transfer that completed, sets *status and, when the answer
 * parses as JSON, *resp (owned by the caller; NULL otherwise) and returns 0.
 * Returns TR_EUNAVAIL (connection or timeout; err says which) or TR_ENOMEM.
 */
int tr_bench_http_call(struct tr_bench_http *h, const char *method, const char *path,
                       const char *body, size_t body_len, double timeout_s, long *status,
                       json_t **resp, struct tr_error *err) TR_MUST_CHECK;

/*
 * POST path with the JSON doc as its body; 0 when the answer has status
 * want_status (its JSON in *resp), else TR_EPROTO with the API's error in err.
 */
int tr_bench_post_json(struct tr_bench_http *h, const char *path, json_t *doc, long want_status,
                       json_t **resp, struct tr_error *err) TR_MUST_CHECK;

/* GET path, expecting 200 and JSON in *resp; TR_EPROTO otherwise. */
int tr_bench_get_json(struct tr_bench_http *h, const char *path, double timeout_s,
                      json_t **resp, struct tr_error *err) TR_MUST_CHECK;

/*
 * Long-polls GET /v1/runs/{id}?wait=poll_s until the run is finished
 * (succeeded, failed or cancelled) or deadline (tr_mono_ns clock) passes.
 * On 0, *run is the last answer (owned by the caller). TR_ETIMEDOUT after the
 * deadline, or an error of the calls.
 */
int tr_bench_wait_run(struct tr_bench_http *h, const char *run_id, unsigned poll_s,
                      uint64_t deadline_ns, json_t **run, struct tr_error *err) TR_MUST_CHECK;

/*
 * Waits until the scheduler has no queued or running run and no worker has a
 * busy slot (the "let it go idle between workloads" of the peers), at most
 * timeout_s. 0, TR_ETIMEDOUT or an error of the calls.
 */
int tr_bench_wait_idle(struct tr_bench_http *h, double timeout_s,
                       struct tr_error *err) TR_MUST_CHECK;

/* A run's "state" member, or "" when absent. */
const char *tr_bench_run_state(json_t *run);

/* run.tasks[key] as an integer, or -1 when absent. */
long long tr_bench_run_count(json_t *run, const char *key);

/* ===================== cluster ===================== */

#define TR_BENCH_MAX_WORKERS 16

struct tr_bench_cluster
{
    char dir[256];                              /* temporary directory: state and logs */
    char api[64];                               /* "127.0.0.1:PORT" of the HTTP API */
    char listen[64];                            /* "tcp://127.0.0.1:PORT" for workers */
    pid_t sched_pid;                            /* 0 when not running */
    pid_t worker_pid[TR_BENCH_MAX_WORKERS];     /* 0 when not running */
    uint32_t n_workers;
    struct tr_bench_http *http;                 /* client of api, keep-alive */
};

/*
 * Installs the handlers that stop every child on SIGINT, SIGTERM and the
 * watchdog's SIGALRM (then exit 130, 143 or 124), and ignores SIGPIPE.
 */
void tr_bench_signals_init(void);

/* Arms the watchdog: after seconds, children are stopped and we exit 124; 0 disarms. */
void tr_bench_watchdog(unsigned seconds);

/*
 * Makes a temporary directory, starts the scheduler (sqlite state in it, free
 * ports on 127.0.0.1) and the workers, and waits until /healthz answers and
 * /v1/workers lists them all (bounded). Every process it started is stopped
 * again on failure. tag names the cluster in the directory name.
 */
int tr_bench_cluster_start(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                           const char *tag, struct tr_error *err) TR_MUST_CHECK;

/*
 * Stops the workers, then the scheduler (SIGTERM, SIGKILL after a grace
 * period, by PID), frees the client, and removes the directory unless keep.
 * Safe on a cluster that never started or is already stopped.
 */
void tr_bench_cluster_stop(struct tr_bench_cluster *c, bool keep);

/*
 * Starts argv (argv[0] a path) in dir, in a process group of its own, its
 * output appended to log_path; the signal handler stops it like the
 * cluster's processes. 0 or TR_EIO.
 */
int tr_bench_spawn(char *const argv[], const char *dir, const char *log_path, pid_t *out,
                   struct tr_error *err) TR_MUST_CHECK;

/* Stops *pid (SIGTERM, SIGKILL after a grace period) and sets it to 0. No-op on 0. */
void tr_bench_stop_pid(pid_t *pid, const char *what);

/* Checks that every process of the cluster is still alive; TR_EIO naming the dead one. */
int tr_bench_cluster_check(struct tr_bench_cluster *c, struct tr_error *err) TR_MUST_CHECK;

/* VmRSS / VmHWM (field "VmRSS") of pid in bytes, or -1. */
long long tr_bench_proc_bytes(pid_t pid, const char *field);

/* Sleeps seconds (resumed after signals). */
void tr_bench_sleep(double seconds);

/* Progress line on stderr, "[bench HH:MM:SS] ..." */
void tr_bench_log(const char *fmt, ...) TR_PRINTF(1, 2);

/* ===================== workloads ===================== */

/*
 * The pipelines, as Lua source (WORKLOADS.md's sketch with n substituted).
 * Appended to out; 0, TR_ENOMEM or TR_E2BIG.
 */
int tr_bench_src_independent(struct tr_buf *out, const char *name, uint32_t n) TR_MUST_CHECK;
int tr_bench_src_single(struct tr_buf *out, const char *name) TR_MUST_CHECK;
int tr_bench_src_map_reduce(struct tr_buf *out, const char *name, uint32_t n) TR_MUST_CHECK;
int tr_bench_src_blocked(struct tr_buf *out, const char *name, uint32_t n) TR_MUST_CHECK;

/* Runs the warm-up (a run of o->warmup no-op tasks), then waits until idle. */
int tr_bench_warmup(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                    struct tr_error *err) TR_MUST_CHECK;

/* Each measures one workload on c into r (r->ok, or r->error). */
void tr_bench_w1(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r);
void tr_bench_w2(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r);
void tr_bench_w3(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r);
void tr_bench_w4(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r);

/*
 * H's pipeline: n tasks, each one POST of a chat completion for the model
 * "latency-<ms>" to url (bench/slow_server.py answers after the ms of url's
 * query, tests/llm/fake_llm.py after the model's).
 */
int tr_bench_src_http(struct tr_buf *out, const char *name, uint32_t n, const char *url,
                      uint32_t ms) TR_MUST_CHECK;

/* Measures H on c (a cluster of one worker) against the server at url. */
void tr_bench_h(struct tr_bench_cluster *c, const struct tr_bench_opts *o, const char *url,
                struct tr_bench_result *r);

/* H from start to end: server, cluster, warm-up, measure, stop. Sets r->ran. */
void tr_bench_run_h(const struct tr_bench_opts *o, struct tr_bench_result *r);
/* F on a cluster of its own (bench_feedback.c). */
void tr_bench_run_f(const struct tr_bench_opts *o, struct tr_bench_result *r);

/* L through the API (POST /v1/pipelines); adds api_s to r. */
void tr_bench_l_api(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                    struct tr_bench_result *r);

/* L in this process (tr_pipeline_load); adds load_s and friends to r. */
void tr_bench_l_load(const struct tr_bench_opts *o, struct tr_bench_result *r);

#endif
