/*
 * state_etcd_int.h - what the files of the etcd state backend share.
 *
 * Private to lib/state/state_etcd*.c (and the backend's own test). The
 * backend is split by responsibility: state_etcd.c opens the handle, drives
 * the private loop and takes epochs; state_etcd_batch.c builds and commits
 * batches; state_etcd_read.c reads; state_etcd_codec.c turns records into
 * keys and values and back.
 * docs/state.md ("etcd") describes the key layout, the encoding and the
 * blocking model.
 */
#ifndef TR_STATE_ETCD_INT_H
#define TR_STATE_ETCD_INT_H

#include <uv.h>

#include "lib/base/buf.h"
#include "lib/etcd/etcd.h"
#include "lib/state/state_backend.h"

#define TR_STATE_ETCD_DEFAULT_PREFIX "/trellis/v1"
#define TR_STATE_ETCD_DEFAULT_TIMEOUT_MS 2000u
#define TR_STATE_ETCD_MAX_IN_FLIGHT 16u
/* What one op adds to a Txn request beyond its key and value (protobuf
 * tags and lengths, generously), and what a request adds once. */
#define TR_STATE_ETCD_OP_OVERHEAD 32u
#define TR_STATE_ETCD_REQ_OVERHEAD 64u

/* One put of the batch in progress: key and value owned. */
struct etcd_put
{
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    bool if_absent; /* sources: a no-op when the key exists */
    bool late;      /* runs and pipelines: written after the rest of the batch */
    bool del;       /* run control: a delete of key (no value) */
    bool prefix;    /* with del: of every key under key */
};

/* A key-value copied out of a callback (values are borrowed there). */
struct etcd_kvcopy
{
    char *key;
    size_t key_len;
    char *value; /* NUL-terminated copy; never NULL after a successful copy */
    size_t value_len;
    int64_t mod_revision;
};

struct commit_acc;

struct tr_state_etcd
{
    struct tr_state base; /* first: lib/state/state.c reaches ops through it */
    uv_loop_t loop;       /* private: runs only inside a call of this backend */
    uv_timer_t watchdog;  /* bounds each wait on the loop */
    bool watchdog_fired;
    struct tr_etcd *e;
    char *endpoints;      /* for messages */
    char *prefix;         /* "/trellis/v1/": normalised, with the final slash */
    size_t prefix_len;
    uint32_t timeout_ms;  /* deadline of every etcd request */
    uint32_t max_ops;     /* ops per Txn */
    uint32_t max_bytes;   /* bytes per request */
    uint64_t gen;         /* bumped when a wait gives up: late answers are dropped */
    size_t pending;       /* requests of the current wait not yet answered */
    bool in_batch;
    struct commit_acc *commit_acc; /* the commit in progress, NULL between commits */
    struct etcd_put *puts;
    size_t n_puts, cap_puts;
    uint64_t last_seq;    /* pipeline registration order (see the codec) */
    char put_error[256];  /* why the last put was refused, "" when it was not */
};

/* ---- the loop driver (lib/state/state_etcd.c) ------------------------------- */

/* A request in flight, heap-allocated so that an answer after its wait gave
 * up lands somewhere (and is dropped). */
struct etcd_call
{
    struct tr_state_etcd *st;
    uint64_t gen;
    bool done;
    int status;
    bool succeeded;        /* txn */
    bool more;             /* range */
    int64_t revision;
    struct etcd_kvcopy *kvs; /* range, or the first range of a txn's responses */
    size_t n_kvs;
    size_t lo, hi;         /* commit: the puts this txn carries */
    char message[256];
};

/* A call ready to be handed to tr_etcd_*(st->e, ..., etcd_call_done, c). */
struct etcd_call *etcd_call_new(struct tr_state_etcd *st) TR_MUST_CHECK;
void etcd_call_done(void *arg, int status, const struct tr_etcd_result *res);
void etcd_call_free(struct etcd_call *c);

/*
 * Runs the private loop until st->pending is at most `until`, or until the
 * watchdog (the request deadline plus a margin) fires: then every request of
 * the wait is abandoned and TR_ETIMEDOUT returned.
 */
int etcd_drive(struct tr_state_etcd *st, size_t until) TR_MUST_CHECK;

/* One range (a key, or [key, end) when end is set) read to completion,
 * synchronously; *out is the caller's to free with etcd_call_free. */
int etcd_range_sync(struct tr_state_etcd *st, const struct tr_etcd_op *op,
                    struct etcd_call **out) TR_MUST_CHECK;


/* ---- batches and commit (lib/state/state_etcd_batch.c) --------------------- */

/* Frees the puts of the batch from index keep on. */
void etcd_drop_puts(struct tr_state_etcd *st, size_t keep);
int etcd_begin(struct tr_state *st);
int etcd_put_pipeline(struct tr_state *st, const struct tr_pipeline_rec *rec);
int etcd_put_source(struct tr_state *st, const char *digest, const char *src, size_t len);
int etcd_put_run(struct tr_state *st, const struct tr_run_rec *rec);
int etcd_put_task(struct tr_state *st, const struct tr_task_rec *rec);
int etcd_put_cache(struct tr_state *st, const char *key, const void *output, size_t len);
int etcd_put_row(struct tr_state *st, const struct tr_state_row *row);
int etcd_commit(struct tr_state *st, struct tr_error *err);
void etcd_rollback(struct tr_state *st);
int etcd_delete_row(struct tr_state *st, int kind, const char *const *comps, size_t n);
int etcd_delete_run(struct tr_state *st, const char *run_id);

/* ---- keys and values (lib/state/state_etcd_codec.c) ------------------------- */

/* Appends c to b with every byte outside [A-Za-z0-9._:@+-] as %XX, so that a
 * component never holds the '/' that separates components. */
int etcd_key_escape(struct tr_buf *b, const char *c) TR_MUST_CHECK;

/* "<prefix><section>" then each of the n components, escaped and joined by '/'. */
int etcd_key(const struct tr_state_etcd *st, struct tr_buf *b, const char *section,
             const char *const *comps, size_t n) TR_MUST_CHECK;

int etcd_encode_pipeline(struct tr_buf *b, const struct tr_pipeline_rec *r,
                         uint64_t seq) TR_MUST_CHECK;
int etcd_encode_run(struct tr_buf *b, const struct tr_run_rec *r) TR_MUST_CHECK;
int etcd_encode_task(struct tr_buf *b, const struct tr_task_rec *r) TR_MUST_CHECK;
int etcd_encode_uint(struct tr_buf *b, uint64_t v) TR_MUST_CHECK;
/* A feedback-loop row's value: [format, grp, sub, ord, value]. */
int etcd_encode_row(struct tr_buf *b, const struct tr_state_row *r) TR_MUST_CHECK;

/*
 * Decoders fill a record whose strings point into *arena (one allocation,
 * freed by the caller with tr_free after use). TR_EPROTO for a value that is
 * not what this build writes, TR_ENOMEM.
 */
int etcd_decode_pipeline(const void *v, size_t n, struct tr_pipeline_rec *r, uint64_t *seq,
                         char **arena) TR_MUST_CHECK;
int etcd_decode_run(const void *v, size_t n, struct tr_run_rec *r, char **arena) TR_MUST_CHECK;
int etcd_decode_task(const void *v, size_t n, struct tr_task_rec *r, char **arena) TR_MUST_CHECK;
int etcd_decode_uint(const void *v, size_t n, uint64_t *out) TR_MUST_CHECK;
/* Fills grp, sub, ord and value of r (into *arena, as above). */
int etcd_decode_row(const void *v, size_t n, struct tr_state_row *r, char **arena) TR_MUST_CHECK;

/* ---- reads (lib/state/state_etcd_read.c) ------------------------------------ */

int etcd_get_source(struct tr_state *st, const char *digest, char **src, size_t *len);
int etcd_get_pipeline(struct tr_state *st, const char *name, const char *version,
                      tr_state_pipeline_fn cb, void *arg);
int etcd_list_pipelines(struct tr_state *st, tr_state_pipeline_fn cb, void *arg);
int etcd_get_run(struct tr_state *st, const char *run_id, tr_state_run_fn cb, void *arg);
int etcd_list_runs(struct tr_state *st, const char *state, bool unfinished_only, uint32_t limit,
                   tr_state_run_fn cb, void *arg);
int etcd_list_tasks(struct tr_state *st, const char *run_id, tr_state_task_fn cb, void *arg);
int etcd_get_cache(struct tr_state *st, const char *key, void **output, size_t *len);
int etcd_get_row(struct tr_state *st, int kind, const char *const *comps, size_t n, char **value,
                 size_t *len);
int etcd_list_rows(struct tr_state *st, int kind, const char *grp, const char *sub, uint32_t limit,
                   tr_state_row_fn cb, void *arg);
int etcd_list_finished(struct tr_state *st, double before, uint32_t limit, tr_state_run_fn cb,
                       void *arg);

/* Why the last put on st was refused ("" when it was not): a put returns a
 * code only, and "over etcd's request limit" needs its numbers. */
const char *tr_state_etcd_put_error(const struct tr_state *st);

extern const struct tr_state_ops tr_state_etcd_ops;

#endif
