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
 * outputs, the scheduler epoch, and the feedback loop's records (feedback,
 * its statistics, label items, the model registry, trigger firings). Dispatches are not: after a crash every
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

/* The durable record of one task instance: written when it reaches a final state, and
 * as `running` while an approval or a subrun waits in the scheduler (core_flow.h). */
struct tr_task_rec
{
    const char *run_id;
    const char *name;        /* task name */
    uint32_t index;          /* map element from 1, 0 when not mapped */
    const char *state;       /* succeeded | failed | skipped | cancelled (| running) */
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

/*
 * The feedback loop's records (docs/feedback.md). Strings may be NULL unless
 * noted; fields named *_json hold JSON text. Times are wall-clock seconds.
 */

/* One piece of feedback on a run (POST /v1/feedback). */
struct tr_feedback_rec
{
    const char *id;          /* required; ids sort in creation order */
    const char *run_id;      /* required */
    const char *pipeline;    /* required: the run's pipeline name */
    const char *task;        /* the task it is about, NULL: the run's answer */
    uint32_t index;          /* map element, 0 when not mapped */
    int32_t score;           /* -1 or 1 (thumbs), 1..5 (stars) */
    const char *label;
    const char *correction;  /* the corrected answer */
    const char *comment;
    const char *user;
    double created_at;
};

/* One per-minute bucket of the sliding window. */
struct tr_feedback_bucket
{
    int64_t start;           /* bucket start, seconds since the epoch (a multiple of width) */
    uint64_t count;
    double sum;              /* of scores */
    uint64_t negative;       /* -1, or 1..2 stars */
};

#define TR_FEEDBACK_BUCKETS_MAX 1440u

/*
 * The statistics of one pipeline, kept incrementally by the scheduler and
 * written in the same batch as the feedback or label that changed them.
 */
struct tr_feedback_stats_rec
{
    const char *pipeline;    /* required */
    uint64_t count;          /* every feedback ever */
    double sum;
    uint64_t negative;
    uint64_t labels_queued;  /* label items waiting */
    uint64_t labels_labelled;
    uint32_t bucket_seconds; /* width of a bucket (60) */
    uint32_t n_buckets;      /* at most TR_FEEDBACK_BUCKETS_MAX; the window is their span */
    const struct tr_feedback_bucket *buckets; /* a ring, indexed by (start / width) % n */
    double updated_at;
};

/* An item of the labelling queue. */
struct tr_label_rec
{
    const char *id;          /* required */
    const char *pipeline;    /* required */
    const char *run_id;
    const char *task;
    const char *item_json;   /* required: what is to be labelled */
    double uncertainty;      /* the queue is ordered by it, highest first */
    const char *state;       /* required: "queued" | "labelled" */
    const char *label_json;  /* NULL until labelled */
    const char *user;        /* who labelled it */
    double created_at;
    double labelled_at;
};

/* A model of the registry. */
struct tr_model_rec
{
    const char *name;        /* required */
    uint32_t latest;         /* its highest version, 0 when none */
    uint64_t moves;          /* alias moves recorded, the seq of the last one */
    double created_at;
    double updated_at;
};

/* One version of a model. */
struct tr_model_version_rec
{
    const char *name;        /* required */
    uint32_t version;        /* required: from 1 */
    const char *artifact_json; /* a URI (a JSON string) or an inline value */
    const char *metrics_json;
    const char *tags_json;
    const char *run_id;      /* lineage: the run that trained it */
    const char *data_digest; /* lineage: digest of the training data */
    const char *pipeline;    /* lineage: "name@version" of the training pipeline */
    uint32_t parent;         /* lineage: the version it descends from, 0 when none */
    const char *user;
    double created_at;
};

/* Where an alias points; version 0 is a removed alias (listings skip it). */
struct tr_model_alias_rec
{
    const char *name;        /* required */
    const char *alias;       /* required */
    uint32_t version;
    const char *user;
    const char *reason;
    double at;
};

/* One move of an alias, kept forever (the history). */
struct tr_alias_move_rec
{
    const char *name;        /* required */
    uint64_t seq;            /* required: from 1, per model */
    const char *alias;       /* required */
    uint32_t from;           /* 0: the alias did not exist */
    uint32_t to;             /* 0: the alias was removed */
    const char *user;
    const char *reason;
    double at;
};

/* A trigger's firing: put in the same batch as the run it starts. */
struct tr_firing_rec
{
    const char *pipeline;    /* required: the pipeline declaring the trigger */
    const char *trigger;     /* required */
    double fired_at;         /* required, > 0 */
    const char *run_id;
    const char *stats_json;  /* what made it fire */
};

/*
 * A trigger's declaration and durable state, as the scheduler encodes them
 * (a JSON object; scheduler/triggers.c): written in the batch of the
 * firing it changes, so a standby that takes over neither loses nor repeats
 * one.
 */
struct tr_trigger_rec
{
    const char *pipeline;    /* required */
    const char *trigger;     /* required */
    const char *json;        /* required: a JSON object (pipeline and trigger are added) */
};

/*
 * Run control (docs/api.md "Run control"). An idempotency key of POST
 * /v1/runs: the run it created and a digest of the request, kept 24 h.
 */
struct tr_idem_rec
{
    const char *key;         /* required: the Idempotency-Key header */
    const char *run_id;      /* required */
    const char *digest;      /* required: sha256 hex of the request's canonical JSON */
    double created_at;       /* required, > 0 */
};

/* A run started by POST /v1/runs/{id}/retry: which run it retries. */
struct tr_run_link_rec
{
    const char *run_id;      /* required */
    const char *retry_of;    /* required */
    double created_at;
};

typedef int (*tr_state_idem_fn)(const struct tr_idem_rec *rec, void *arg);
typedef int (*tr_state_run_link_fn)(const struct tr_run_link_rec *rec, void *arg);
typedef int (*tr_state_trigger_fn)(const struct tr_trigger_rec *rec, void *arg);

/* One entry of the audit log (scheduler/audit.c): a change, who made it, when. */
struct tr_audit_rec
{
    const char *id;          /* required: unique, sorts by time */
    const char *tenant;      /* required */
    const char *token;       /* required: the token's name ("anonymous" without tokens) */
    const char *role;
    const char *action;      /* required: "run.start", "pipeline.register", ... */
    const char *object;      /* what it changed: a run id, a pipeline name, ... */
    const char *detail_json; /* NULL or a JSON object */
    double at;               /* wall-clock seconds */
};

typedef int (*tr_state_audit_fn)(const struct tr_audit_rec *rec, void *arg);

/* The tenant a name belongs to (scheduler/tenants.c): a name of kind
 * "pipeline" or "model" without such a record belongs to tenant `default`. */
struct tr_owner_rec
{
    const char *kind;        /* required */
    const char *name;        /* required */
    const char *tenant;      /* required */
    double at;
};

typedef int (*tr_state_owner_fn)(const struct tr_owner_rec *rec, void *arg);
typedef int (*tr_state_pipeline_fn)(const struct tr_pipeline_rec *rec, void *arg);
typedef int (*tr_state_run_fn)(const struct tr_run_rec *rec, void *arg);
typedef int (*tr_state_task_fn)(const struct tr_task_rec *rec, void *arg);
typedef int (*tr_state_feedback_fn)(const struct tr_feedback_rec *rec, void *arg);
typedef int (*tr_state_feedback_stats_fn)(const struct tr_feedback_stats_rec *rec, void *arg);
typedef int (*tr_state_label_fn)(const struct tr_label_rec *rec, void *arg);
typedef int (*tr_state_model_fn)(const struct tr_model_rec *rec, void *arg);
typedef int (*tr_state_model_version_fn)(const struct tr_model_version_rec *rec, void *arg);
typedef int (*tr_state_model_alias_fn)(const struct tr_model_alias_rec *rec, void *arg);
typedef int (*tr_state_alias_move_fn)(const struct tr_alias_move_rec *rec, void *arg);
typedef int (*tr_state_firing_fn)(const struct tr_firing_rec *rec, void *arg);

struct tr_state_row;
/* A stored row's value (JSON text, NUL-terminated), borrowed for the call. */
typedef int (*tr_state_row_fn)(const char *value, size_t len, void *arg);

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
    /* The feedback loop's records, stored as rows (state_backend.h). */
    int (*put_row)(struct tr_state *st, const struct tr_state_row *row);
    int (*get_row)(struct tr_state *st, int kind, const char *const *comps, size_t n,
                   char **value, size_t *len);
    int (*list_rows)(struct tr_state *st, int kind, const char *grp, const char *sub,
                     uint32_t limit, tr_state_row_fn cb, void *arg);
    /* Run control: deletes join the batch in progress. */
    int (*delete_row)(struct tr_state *st, int kind, const char *const *comps, size_t n);
    int (*delete_run)(struct tr_state *st, const char *run_id);
    int (*list_finished)(struct tr_state *st, double before, uint32_t limit, tr_state_run_fn cb,
                         void *arg);
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

/*
 * The feedback loop (docs/feedback.md, docs/state.md "Feedback loop records").
 * Puts join the batch in progress like the puts above; reads see committed
 * data only. Listings take limit 0 for no limit.
 */
/* Inserts or replaces the feedback with rec->id. */
int tr_state_put_feedback(struct tr_state *st, const struct tr_feedback_rec *rec) TR_MUST_CHECK;
/* Replaces the statistics of rec->pipeline. */
int tr_state_put_feedback_stats(struct tr_state *st,
                                const struct tr_feedback_stats_rec *rec) TR_MUST_CHECK;
/* Inserts or replaces the label item with rec->id. */
int tr_state_put_label(struct tr_state *st, const struct tr_label_rec *rec) TR_MUST_CHECK;
int tr_state_put_model(struct tr_state *st, const struct tr_model_rec *rec) TR_MUST_CHECK;
int tr_state_put_model_version(struct tr_state *st,
                               const struct tr_model_version_rec *rec) TR_MUST_CHECK;
/* Sets (or with version 0 removes) an alias. */
int tr_state_put_model_alias(struct tr_state *st,
                             const struct tr_model_alias_rec *rec) TR_MUST_CHECK;
int tr_state_put_alias_move(struct tr_state *st, const struct tr_alias_move_rec *rec) TR_MUST_CHECK;
/* A firing; with etcd it is written with the runs of the batch (docs/state.md). */
int tr_state_put_firing(struct tr_state *st, const struct tr_firing_rec *rec) TR_MUST_CHECK;

/* Replaces the trigger (rec->pipeline, rec->trigger); late with etcd like firings. */
int tr_state_put_trigger(struct tr_state *st, const struct tr_trigger_rec *rec) TR_MUST_CHECK;

/* Feedback newest first; pipeline and run_id NULL: any. */
int tr_state_list_feedback(struct tr_state *st, const char *pipeline, const char *run_id,
                           uint32_t limit, tr_state_feedback_fn cb, void *arg) TR_MUST_CHECK;
int tr_state_get_feedback_stats(struct tr_state *st, const char *pipeline,
                                tr_state_feedback_stats_fn cb, void *arg) TR_MUST_CHECK;
/* Every pipeline's statistics (a scheduler loads them when it starts to lead). */
/* Decodes a statistics record as the state stores it (JSON text: what
 * tr_coord_watch_stats delivers) and hands it to cb. 0, TR_EPROTO, TR_ENOMEM. */
int tr_state_decode_feedback_stats(const char *json, size_t len, tr_state_feedback_stats_fn cb,
                                   void *arg) TR_MUST_CHECK;
int tr_state_list_feedback_stats(struct tr_state *st, tr_state_feedback_stats_fn cb,
                                 void *arg) TR_MUST_CHECK;
int tr_state_get_label(struct tr_state *st, const char *id, tr_state_label_fn cb,
                       void *arg) TR_MUST_CHECK;
/* Label items, most uncertain first (then newest); pipeline and state NULL: any. */
int tr_state_list_labels(struct tr_state *st, const char *pipeline, const char *state,
                         uint32_t limit, tr_state_label_fn cb, void *arg) TR_MUST_CHECK;
int tr_state_get_model(struct tr_state *st, const char *name, tr_state_model_fn cb,
                       void *arg) TR_MUST_CHECK;
/* Models by name. */
int tr_state_list_models(struct tr_state *st, tr_state_model_fn cb, void *arg) TR_MUST_CHECK;
int tr_state_get_model_version(struct tr_state *st, const char *name, uint32_t version,
                               tr_state_model_version_fn cb, void *arg) TR_MUST_CHECK;
/* Versions of a model, oldest first. */
int tr_state_list_model_versions(struct tr_state *st, const char *name,
                                 tr_state_model_version_fn cb, void *arg) TR_MUST_CHECK;
/* TR_ENOENT for an alias never set or removed. */
int tr_state_get_model_alias(struct tr_state *st, const char *name, const char *alias,
                             tr_state_model_alias_fn cb, void *arg) TR_MUST_CHECK;
/* The aliases of a model that point at a version, by alias name. */
int tr_state_list_model_aliases(struct tr_state *st, const char *name,
                                tr_state_model_alias_fn cb, void *arg) TR_MUST_CHECK;
/* Every alias move of a model, oldest first. */
int tr_state_list_alias_moves(struct tr_state *st, const char *name, tr_state_alias_move_fn cb,
                              void *arg) TR_MUST_CHECK;
/* Firings newest first; trigger NULL: every trigger of pipeline. */
int tr_state_list_firings(struct tr_state *st, const char *pipeline, const char *trigger,
                          uint32_t limit, tr_state_firing_fn cb, void *arg) TR_MUST_CHECK;

/* Triggers by pipeline then name; pipeline NULL: all. */
int tr_state_list_triggers(struct tr_state *st, const char *pipeline, tr_state_trigger_fn cb,
                           void *arg) TR_MUST_CHECK;

/* An audit entry (inserted in the batch in progress). */
int tr_state_put_audit(struct tr_state *st, const struct tr_audit_rec *rec) TR_MUST_CHECK;
/* Audit entries oldest first; tenant NULL: every tenant's. The callback may
 * return a positive value to stop early (the listing then returns it). */
int tr_state_list_audit(struct tr_state *st, const char *tenant, tr_state_audit_fn cb,
                        void *arg) TR_MUST_CHECK;

/* The owner record of (kind, name); TR_ENOENT when there is none. */
int tr_state_put_owner(struct tr_state *st, const struct tr_owner_rec *rec) TR_MUST_CHECK;
int tr_state_get_owner(struct tr_state *st, const char *kind, const char *name,
                       tr_state_owner_fn cb, void *arg) TR_MUST_CHECK;
/*
 * Run control (docs/api.md "Run control"). Puts and deletes join the batch
 * in progress; reads see committed data only.
 */
/* Deletes the run with run_id and every task record of it (outputs, errors,
 * logs); a run that does not exist is no error. */
int tr_state_delete_run(struct tr_state *st, const char *run_id) TR_MUST_CHECK;
/* Finished runs (succeeded, failed, cancelled) created and finished before
 * `before` (wall-clock seconds), oldest first, at most limit (0: no limit). */
int tr_state_list_finished_runs(struct tr_state *st, double before, uint32_t limit,
                                tr_state_run_fn cb, void *arg) TR_MUST_CHECK;
/* Inserts or replaces the key rec->key; with etcd it is written with the runs. */
int tr_state_put_idem(struct tr_state *st, const struct tr_idem_rec *rec) TR_MUST_CHECK;
/* TR_ENOENT when the key was never stored (or was deleted). */
int tr_state_get_idem(struct tr_state *st, const char *key, tr_state_idem_fn cb,
                      void *arg) TR_MUST_CHECK;
/* Keys oldest first, at most limit (0: no limit). */
int tr_state_list_idem(struct tr_state *st, uint32_t limit, tr_state_idem_fn cb,
                       void *arg) TR_MUST_CHECK;
int tr_state_delete_idem(struct tr_state *st, const char *key) TR_MUST_CHECK;
int tr_state_put_run_link(struct tr_state *st, const struct tr_run_link_rec *rec) TR_MUST_CHECK;
/* TR_ENOENT for a run that retries none. */
int tr_state_get_run_link(struct tr_state *st, const char *run_id, tr_state_run_link_fn cb,
                          void *arg) TR_MUST_CHECK;
int tr_state_delete_run_link(struct tr_state *st, const char *run_id) TR_MUST_CHECK;
/*
 * A tenant's budget: its limits and what it spent in the current period, as
 * the scheduler encodes them (a JSON object; scheduler/budgets.c). Put in
 * the batch of the reservations that changed it.
 */
struct tr_budget_rec
{
    const char *tenant;      /* required */
    const char *json;        /* required: a JSON object (tenant is added) */
};

typedef int (*tr_state_budget_fn)(const struct tr_budget_rec *rec, void *arg);

/* Inserts or replaces the budget of rec->tenant. */
int tr_state_put_budget(struct tr_state *st, const struct tr_budget_rec *rec) TR_MUST_CHECK;
/* Every budget, by tenant. */
int tr_state_list_budgets(struct tr_state *st, tr_state_budget_fn cb, void *arg) TR_MUST_CHECK;

#endif
