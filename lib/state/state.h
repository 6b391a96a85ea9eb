/*
 * state.h - the durable state of a scheduler, behind one interface.
 *
 * The scheduler core includes only this header; it never knows which backend
 * it talks to. Backends: `sqlite:PATH` (lib/state/state_sqlite.c, one machine) and
 * `etcd://HOST:PORT[,...]` (lib/state/state_etcd.c, shared by several schedulers;
 * docs/state.md, docs/ha.md). Each backend fills a
 * struct tr_state_ops (the vtable, as curl's vtls and SQLite's VFS do);
 * lib/state/state.c picks one from the URL and forwards to it.
 *
 * What is durable: registered pipelines, pipeline sources by digest, runs,
 * the results of task instances (outputs, errors, logs), the cache of task
 * outputs, and the scheduler epoch. Dispatches are not: after a crash every
 * instance without a durable result is dispatched again.
 *
 * Writes are group-committed: the scheduler calls tr_state_begin once per
 * loop turn, then any number of put calls, then tr_state_commit. Nothing put
 * is visible to readers or durable before commit returns 0; when commit
 * fails, nothing of the batch is kept and the caller must not act on it.
 *
 * Records handed to put calls are borrowed for the duration of the call.
 * Records handed to callbacks by list/get calls are borrowed for the duration
 * of the callback. A callback returns 0 to go on, or non-zero to stop the
 * listing (that value is returned by the list call).
 *
 * One thread (the scheduler's loop) uses a struct tr_state.
 */
#ifndef TR_STATE_H
#define TR_STATE_H

#include "lib/base/error.h"

struct tr_state;

/* A registered pipeline (POST /v1/pipelines). */
struct tr_pipeline_rec
{
    const char *name;
    const char *version;
    const char *digest;      /* sha256 hex of source */
    const char *source;
    size_t source_len;
    double registered_at;    /* wall-clock seconds */
    uint32_t n_tasks;        /* tasks declared (for listings) */
};

/* A run. Strings may be NULL where noted. */
struct tr_run_rec
{
    const char *id;
    const char *pipeline;    /* pipeline name */
    const char *version;
    const char *digest;      /* source digest: the source is kept by tr_state_put_source */
    const char *params_json; /* the run's params as JSON (after defaults are merged) */
    const char *state;       /* queued | running | succeeded | failed | cancelled */
    double created_at;
    double started_at;       /* 0 when not started */
    double finished_at;      /* 0 when not finished */
    const char *output_json; /* NULL until finished */
    const char *error;       /* NULL unless failed or cancelled */
    const char *usage_json;  /* the LLM calls of its tasks summed, as JSON text (written
                                when it finishes, for listings); NULL when unknown */
};

/* The durable record of one task instance: written when it reaches a final state. */
struct tr_task_rec
{
    const char *run_id;
    const char *name;        /* task name */
    uint32_t index;          /* map element from 1, 0 when not mapped */
    const char *state;       /* succeeded | failed | skipped | cancelled */
    uint32_t attempts;
    const char *worker;      /* NULL when it never ran */
    double started_at;
    double finished_at;
    const void *output;      /* msgpack value, NULL/0 when none */
    size_t output_len;
    const char *error;       /* NULL unless failed */
    const char *logs;        /* ctx.log lines joined with '\n', NULL when none */
    bool cached;             /* output reused from the cache */
    const void *usage;       /* msgpack array of LLM call records of every attempt (maps:
                                provider, model, prompt_digest, prompt_tokens,
                                completion_tokens, cost, latency_ms, cached); NULL when none */
    size_t usage_len;
};

typedef int (*tr_state_pipeline_fn)(const struct tr_pipeline_rec *rec, void *arg);
typedef int (*tr_state_run_fn)(const struct tr_run_rec *rec, void *arg);
typedef int (*tr_state_task_fn)(const struct tr_task_rec *rec, void *arg);

/* The backend vtable. Every function returns 0 or a negative TR_E* code. */
struct tr_state_ops
{
    const char *scheme; /* "sqlite", "etcd" */
    int (*open)(const char *location, struct tr_state **out, struct tr_error *err);
    void (*close)(struct tr_state *st);
    int (*next_epoch)(struct tr_state *st, uint64_t *epoch);
    int (*begin)(struct tr_state *st);
    int (*put_pipeline)(struct tr_state *st, const struct tr_pipeline_rec *rec);
    int (*put_source)(struct tr_state *st, const char *digest, const char *src, size_t len);
    int (*put_run)(struct tr_state *st, const struct tr_run_rec *rec);
    int (*put_task)(struct tr_state *st, const struct tr_task_rec *rec);
    int (*put_cache)(struct tr_state *st, const char *key, const void *output, size_t len);
    int (*commit)(struct tr_state *st, struct tr_error *err);
    void (*rollback)(struct tr_state *st);
    int (*get_source)(struct tr_state *st, const char *digest, char **src, size_t *len);
    int (*get_pipeline)(struct tr_state *st, const char *name, const char *version,
                        tr_state_pipeline_fn cb, void *arg);
    int (*list_pipelines)(struct tr_state *st, tr_state_pipeline_fn cb, void *arg);
    int (*get_run)(struct tr_state *st, const char *run_id, tr_state_run_fn cb, void *arg);
    int (*list_runs)(struct tr_state *st, const char *state, bool unfinished_only,
                     uint32_t limit, tr_state_run_fn cb, void *arg);
    int (*list_tasks)(struct tr_state *st, const char *run_id, tr_state_task_fn cb, void *arg);
    int (*get_cache)(struct tr_state *st, const char *key, void **output, size_t *len);
};

/*
 * Opens the backend named by url ("sqlite:PATH", "sqlite::memory:").
 * TR_EINVAL with a message for an unknown scheme, TR_ESTATE when the store
 * cannot be opened or migrated. The caller frees with tr_state_close.
 */
int tr_state_open(const char *url, struct tr_state **out, struct tr_error *err) TR_MUST_CHECK;

/* Closes st; a batch in progress is rolled back. NULL-safe. */
void tr_state_close(struct tr_state *st);

/* Increments and returns the durable scheduler epoch (one per scheduler start). */
int tr_state_next_epoch(struct tr_state *st, uint64_t *epoch) TR_MUST_CHECK;

/* Group commit: begin, puts, commit (see the file comment). */
int tr_state_begin(struct tr_state *st) TR_MUST_CHECK;
int tr_state_put_pipeline(struct tr_state *st, const struct tr_pipeline_rec *rec) TR_MUST_CHECK;
/* Stores a source by digest; storing the same digest again is a no-op. */
int tr_state_put_source(struct tr_state *st, const char *digest, const char *src,
                        size_t len) TR_MUST_CHECK;
/* Inserts or replaces the run with rec->id. */
int tr_state_put_run(struct tr_state *st, const struct tr_run_rec *rec) TR_MUST_CHECK;
/* Inserts or replaces the instance (run_id, name, index). */
int tr_state_put_task(struct tr_state *st, const struct tr_task_rec *rec) TR_MUST_CHECK;
/* Stores a cached output under key (a digest of pipeline, task and inputs). */
int tr_state_put_cache(struct tr_state *st, const char *key, const void *output,
                       size_t len) TR_MUST_CHECK;
int tr_state_commit(struct tr_state *st, struct tr_error *err) TR_MUST_CHECK;
/* Drops the batch in progress. */
void tr_state_rollback(struct tr_state *st);

/*
 * Reads. They see committed data only. get_* return TR_ENOENT when nothing
 * matches (the callback is then not called). *src and *output are the
 * caller's to free with tr_free.
 */
int tr_state_get_source(struct tr_state *st, const char *digest, char **src,
                        size_t *len) TR_MUST_CHECK;
/* version NULL: the most recently registered version of name. */
int tr_state_get_pipeline(struct tr_state *st, const char *name, const char *version,
                          tr_state_pipeline_fn cb, void *arg) TR_MUST_CHECK;
/* All registered pipelines, by name then registration time. */
int tr_state_list_pipelines(struct tr_state *st, tr_state_pipeline_fn cb,
                            void *arg) TR_MUST_CHECK;
int tr_state_get_run(struct tr_state *st, const char *run_id, tr_state_run_fn cb,
                     void *arg) TR_MUST_CHECK;
/*
 * Runs, newest first. state NULL: any state; unfinished_only: queued or
 * running (used to resume after a restart); limit 0: no limit.
 */
int tr_state_list_runs(struct tr_state *st, const char *state, bool unfinished_only,
                       uint32_t limit, tr_state_run_fn cb, void *arg) TR_MUST_CHECK;
/* The durable task records of a run, by name then index. */
int tr_state_list_tasks(struct tr_state *st, const char *run_id, tr_state_task_fn cb,
                        void *arg) TR_MUST_CHECK;
int tr_state_get_cache(struct tr_state *st, const char *key, void **output,
                       size_t *len) TR_MUST_CHECK;

#endif
