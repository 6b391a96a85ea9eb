/*
 * state_sqlite_batch.c - group commit for the SQLite backend, and the epoch.
 *
 * A batch is buffered in memory, not kept in an open SQLite transaction: put
 * calls copy their record into `bytes` (strings and blobs) and `vals` (one
 * bound parameter each), and commit replays them inside one BEGIN IMMEDIATE
 * ... COMMIT with the statements prepared at open. So puts fail only for want
 * of memory; reads on this connection see committed data only even in the
 * middle of a batch, as lib/state/state.h promises; the write lock is held only
 * for the length of the commit; and a failed commit leaves nothing behind:
 * the transaction is rolled back, the buffer dropped, and the next batch
 * starts clean. The buffer's memory is kept from one batch to the next
 * unless a batch made it large.
 *
 * Invariant: outside a batch the buffer is empty.
 */
#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/state/state_sqlite_int.h"

/* How a buffered parameter is bound. */
enum val_type
{
    VAL_NULL,
    VAL_INT,
    VAL_REAL,
    VAL_TEXT,
    VAL_BLOB
};

/* One parameter of a buffered put: a number, or bytes kept in the batch's `bytes`. */
struct tr_sqlite_val
{
    enum val_type type; /* which member of u is set (none for VAL_NULL) */
    union
    {
        int64_t i; /* VAL_INT */
        double d;  /* VAL_REAL */
        struct
        {
            size_t off; /* offset in the batch's bytes, which may move as they grow */
            size_t len; /* bytes, no NUL */
        } b;            /* VAL_TEXT, VAL_BLOB */
    } u;
};

/* One buffered put. */
struct tr_sqlite_op
{
    enum tr_sqlite_stmt stmt; /* the put statement to run */
    size_t first;             /* its parameters are vals[first .. first + n) */
    size_t n;
};

/* Where a batch stood, to undo a put that failed half way. */
struct mark
{
    size_t nops;   /* ops in the batch */
    size_t nvals;  /* vals in use */
    size_t nbytes; /* length of bytes */
};

/* A batch buffer that grew past these is freed at the end of the batch. */
#define KEEP_BYTES (8u << 20)
#define KEEP_VALS  (1u << 16)

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

void tr_sqlite_batch_release(struct tr_sqlite_batch *b)
{
    tr_buf_release(&b->bytes);
    tr_free_null(&b->vals);
    tr_free_null(&b->ops);
    b->nvals = b->cap_vals = b->nops = b->cap_ops = 0;
    b->open = false;
}

static void batch_end(struct tr_sqlite *ss)
{
    ss->batch.open = false;
    ss->batch.nops = 0;
    ss->batch.nvals = 0;
    if (ss->batch.bytes.alloc > KEEP_BYTES)
        tr_buf_release(&ss->batch.bytes);
    else
        tr_buf_reset(&ss->batch.bytes);
    if (ss->batch.cap_vals > KEEP_VALS) {
        tr_free_null(&ss->batch.vals);
        ss->batch.cap_vals = 0;
        tr_free_null(&ss->batch.ops);
        ss->batch.cap_ops = 0;
    }
}

int tr_sqlite_begin(struct tr_state *st)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    if (ss->batch.open)
        return TR_EINVAL;
    ss->batch.open = true;
    return 0;
}

void tr_sqlite_rollback(struct tr_state *st)
{
    batch_end(tr_sqlite_of(st));
}

/*
 * Makes room for one put of n parameters and nbytes of strings and blobs, so
 * that filling it in cannot fail; returns its parameters through *v.
 */
static int put_start(struct tr_sqlite *ss, enum tr_sqlite_stmt id, size_t n, size_t nbytes,
                     struct tr_sqlite_val **v)
{
    if (!ss->batch.open)
        return TR_EINVAL;
    if (TR_VEC_RESERVE(ss->batch.ops, ss->batch.cap_ops, ss->batch.nops + 1) != 0 ||
        TR_VEC_RESERVE(ss->batch.vals, ss->batch.cap_vals, ss->batch.nvals + n) != 0)
        return TR_ENOMEM;
    int rc = tr_buf_grow(&ss->batch.bytes, nbytes);
    if (rc < 0)
        return rc;
    ss->batch.ops[ss->batch.nops] =
        (struct tr_sqlite_op){.stmt = id, .first = ss->batch.nvals, .n = n};
    *v = &ss->batch.vals[ss->batch.nvals];
    return 0;
}

static void put_end(struct tr_sqlite *ss)
{
    ss->batch.nvals += ss->batch.ops[ss->batch.nops].n;
    ss->batch.nops++;
}

/* Copies bytes into the room put_start made; NULL p stores SQL NULL. */
static void set_bytes(struct tr_sqlite *ss, struct tr_sqlite_val *v, enum val_type type,
                      const void *p, size_t len)
{
    if (p == NULL) {
        v->type = VAL_NULL;
        return;
    }
    v->type = type;
    v->u.b.off = ss->batch.bytes.len;
    v->u.b.len = len;
    if (len)
        memcpy(ss->batch.bytes.buf + ss->batch.bytes.len, p, len);
    ss->batch.bytes.len += len;
    ss->batch.bytes.buf[ss->batch.bytes.len] = '\0';
}

static void set_text(struct tr_sqlite *ss, struct tr_sqlite_val *v, const char *s)
{
    set_bytes(ss, v, VAL_TEXT, s, slen(s));
}

static void set_int(struct tr_sqlite_val *v, int64_t i)
{
    v->type = VAL_INT;
    v->u.i = i;
}

static void set_real(struct tr_sqlite_val *v, double d)
{
    v->type = VAL_REAL;
    v->u.d = d;
}

/* Times not reached yet are 0 in records and NULL in the tables. */
static void set_time(struct tr_sqlite_val *v, double d)
{
    if (d == 0)
        v->type = VAL_NULL;
    else
        set_real(v, d);
}

static int put_source_op(struct tr_sqlite *ss, const char *digest, const char *src, size_t len)
{
    struct tr_sqlite_val *v = NULL;
    int rc = put_start(ss, TR_SQ_PUT_SOURCE, 2, slen(digest) + len, &v);
    if (rc < 0)
        return rc;
    set_text(ss, &v[0], digest);
    set_bytes(ss, &v[1], VAL_BLOB, src, len);
    put_end(ss);
    return 0;
}

int tr_sqlite_put_source(struct tr_state *st, const char *digest, const char *src, size_t len)
{
    return put_source_op(tr_sqlite_of(st), digest, src, len);
}

int tr_sqlite_put_pipeline(struct tr_state *st, const struct tr_pipeline_rec *r)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    struct mark m = {ss->batch.nops, ss->batch.nvals, ss->batch.bytes.len};
    if (r->source != NULL) {
        int rc = put_source_op(ss, r->digest, r->source, r->source_len);
        if (rc < 0)
            return rc;
    }
    struct tr_sqlite_val *v = NULL;
    int rc = put_start(ss, TR_SQ_PUT_PIPELINE, 5,
                       slen(r->name) + slen(r->version) + slen(r->digest), &v);
    if (rc < 0) {
        /* The source put above must not outlive its failed pipeline put. */
        ss->batch.nops = m.nops;
        ss->batch.nvals = m.nvals;
        ss->batch.bytes.len = m.nbytes;
        ss->batch.bytes.buf[m.nbytes] = '\0';
        return rc;
    }
    set_text(ss, &v[0], r->name);
    set_text(ss, &v[1], r->version);
    set_text(ss, &v[2], r->digest);
    set_real(&v[3], r->registered_at);
    set_int(&v[4], r->n_tasks);
    put_end(ss);
    return 0;
}

int tr_sqlite_put_run(struct tr_state *st, const struct tr_run_rec *r)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    size_t nbytes = slen(r->id) + slen(r->pipeline) + slen(r->version) + slen(r->digest) +
                    slen(r->params_json) + slen(r->state) + slen(r->output_json) + slen(r->error) +
                    slen(r->usage_json);
    struct tr_sqlite_val *v = NULL;
    int rc = put_start(ss, TR_SQ_PUT_RUN, 12, nbytes, &v);
    if (rc < 0)
        return rc;
    set_text(ss, &v[0], r->id);
    set_text(ss, &v[1], r->pipeline);
    set_text(ss, &v[2], r->version);
    set_text(ss, &v[3], r->digest);
    set_text(ss, &v[4], r->params_json);
    set_text(ss, &v[5], r->state);
    set_real(&v[6], r->created_at);
    set_time(&v[7], r->started_at);
    set_time(&v[8], r->finished_at);
    set_text(ss, &v[9], r->output_json);
    set_text(ss, &v[10], r->error);
    set_text(ss, &v[11], r->usage_json);
    put_end(ss);
    return 0;
}

int tr_sqlite_put_task(struct tr_state *st, const struct tr_task_rec *r)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    size_t nbytes = slen(r->run_id) + slen(r->name) + slen(r->state) + slen(r->worker) +
                    r->output_len + slen(r->error) + slen(r->logs) + r->usage_len;
    struct tr_sqlite_val *v = NULL;
    int rc = put_start(ss, TR_SQ_PUT_TASK, 13, nbytes, &v);
    if (rc < 0)
        return rc;
    set_text(ss, &v[0], r->run_id);
    set_text(ss, &v[1], r->name);
    set_int(&v[2], r->index);
    set_text(ss, &v[3], r->state);
    set_int(&v[4], r->attempts);
    set_text(ss, &v[5], r->worker);
    set_time(&v[6], r->started_at);
    set_time(&v[7], r->finished_at);
    set_bytes(ss, &v[8], VAL_BLOB, r->output, r->output_len);
    set_text(ss, &v[9], r->error);
    set_text(ss, &v[10], r->logs);
    set_int(&v[11], r->cached ? 1 : 0);
    set_bytes(ss, &v[12], VAL_BLOB, r->usage_len ? r->usage : NULL, r->usage_len);
    put_end(ss);
    return 0;
}

int tr_sqlite_put_cache(struct tr_state *st, const char *key, const void *output, size_t len)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    struct tr_sqlite_val *v = NULL;
    int rc = put_start(ss, TR_SQ_PUT_CACHE, 3, slen(key) + len, &v);
    if (rc < 0)
        return rc;
    set_text(ss, &v[0], key);
    /* An empty output is still an entry: store a zero-length blob, not NULL. */
    set_bytes(ss, &v[1], VAL_BLOB, output ? output : "", len);
    set_real(&v[2], tr_now());
    put_end(ss);
    return 0;
}

int tr_sqlite_put_row(struct tr_state *st, const struct tr_state_row *r)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = tr_sqlite_row_key(&key, r->comps, r->n_comps);
    struct tr_sqlite_val *v = NULL;
    if (rc == 0)
        rc = put_start(ss, TR_SQ_PUT_ROW, 6, key.len + slen(r->grp) + slen(r->sub) + r->value_len,
                       &v);
    if (rc == 0) {
        set_int(&v[0], r->kind);
        set_bytes(ss, &v[1], VAL_TEXT, key.buf, key.len);
        set_text(ss, &v[2], r->grp);
        set_text(ss, &v[3], r->sub);
        set_real(&v[4], r->ord);
        set_bytes(ss, &v[5], VAL_TEXT, r->value, r->value_len);
        put_end(ss);
    }
    tr_buf_release(&key);
    return rc;
}

/* Binds one buffered put's parameters and runs it. */
static int apply_op(struct tr_sqlite *ss, const struct tr_sqlite_op *op)
{
    sqlite3_stmt *s = ss->stmts[op->stmt];
    for (size_t k = 0; k < op->n; k++) {
        const struct tr_sqlite_val *v = &ss->batch.vals[op->first + k];
        int p = (int)k + 1;
        int rc = SQLITE_OK;
        switch (v->type) {
        case VAL_NULL:
            rc = sqlite3_bind_null(s, p);
            break;
        case VAL_INT:
            rc = sqlite3_bind_int64(s, p, v->u.i);
            break;
        case VAL_REAL:
            rc = sqlite3_bind_double(s, p, v->u.d);
            break;
        case VAL_TEXT:
            rc = sqlite3_bind_text64(s, p, ss->batch.bytes.buf + v->u.b.off, v->u.b.len,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case VAL_BLOB:
            rc = sqlite3_bind_blob64(s, p, ss->batch.bytes.buf + v->u.b.off, v->u.b.len,
                                     SQLITE_STATIC);
            break;
        }
        if (rc != SQLITE_OK) {
            snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
            return rc;
        }
    }
    return tr_sqlite_step(ss, s);
}

int tr_sqlite_commit(struct tr_state *st, struct tr_error *err)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    if (!ss->batch.open)
        return tr_error_set(err, TR_EINVAL, "cannot commit state batch: no batch begun");
    if (ss->batch.nops == 0) {
        batch_end(ss);
        return 0;
    }
    int rc = tr_sqlite_step(ss, ss->stmts[TR_SQ_BEGIN]);
    for (size_t i = 0; rc == SQLITE_OK && i < ss->batch.nops; i++)
        rc = apply_op(ss, &ss->batch.ops[i]);
    if (rc == SQLITE_OK)
        rc = tr_sqlite_step(ss, ss->stmts[TR_SQ_COMMIT]);
    /* The statements point into the buffer that batch_end is about to reuse. */
    for (size_t i = TR_SQ_PUT_PIPELINE; i <= TR_SQ_PUT_ROW; i++)
        sqlite3_clear_bindings(ss->stmts[i]);
    for (size_t i = TR_SQ_DEL_RUN; i <= TR_SQ_DEL_ROW; i++)
        sqlite3_clear_bindings(ss->stmts[i]);
    size_t nops = ss->batch.nops;
    batch_end(ss);
    if (rc == SQLITE_OK)
        return 0;
    /* A failed COMMIT (SQLITE_BUSY) leaves the transaction open; IOERR and FULL
     * may already have rolled it back. Either way nothing of the batch stays. */
    tr_sqlite_rollback_open(ss);
    return tr_error_set(err, TR_ESTATE, "cannot commit state batch of %zu records to '%s': %s",
                        nops, ss->path, ss->errmsg);
}

int tr_sqlite_next_epoch(struct tr_state *st, uint64_t *epoch)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    int rc = tr_sqlite_step(ss, ss->stmts[TR_SQ_BEGIN]);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *s = ss->stmts[TR_SQ_NEXT_EPOCH];
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *epoch = (uint64_t)sqlite3_column_int64(s, 0);
            rc = SQLITE_OK;
        } else {
            snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", sqlite3_errmsg(ss->db));
        }
        sqlite3_reset(s);
    }
    if (rc == SQLITE_OK)
        rc = tr_sqlite_step(ss, ss->stmts[TR_SQ_COMMIT]);
    if (rc != SQLITE_OK) {
        tr_sqlite_rollback_open(ss);
        tr_err("cannot advance scheduler epoch in '%s': %s", ss->path, ss->errmsg);
        return tr_sqlite_rc(rc);
    }
    return 0;
}

/* ===================================================================== */
/* Run control: deletes, buffered like the puts                          */
/* ===================================================================== */

int tr_sqlite_delete_row(struct tr_state *st, int kind, const char *const *comps, size_t n)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = tr_sqlite_row_key(&key, comps, n);
    struct tr_sqlite_val *v = NULL;
    if (rc == 0)
        rc = put_start(ss, TR_SQ_DEL_ROW, 2, key.len, &v);
    if (rc == 0) {
        set_int(&v[0], kind);
        set_bytes(ss, &v[1], VAL_TEXT, key.buf, key.len);
        put_end(ss);
    }
    tr_buf_release(&key);
    return rc;
}

int tr_sqlite_delete_run(struct tr_state *st, const char *run_id)
{
    struct tr_sqlite *ss = tr_sqlite_of(st);
    static const enum tr_sqlite_stmt stmts[] = {TR_SQ_DEL_TASKS, TR_SQ_DEL_RUN};
    for (size_t i = 0; i < TR_ARRAY_LEN(stmts); i++) {
        struct tr_sqlite_val *v = NULL;
        int rc = put_start(ss, stmts[i], 1, slen(run_id), &v);
        if (rc < 0)
            return rc; /* the tasks' delete alone is harmless: the run is final */
        set_text(ss, &v[0], run_id);
        put_end(ss);
    }
    return 0;
}
