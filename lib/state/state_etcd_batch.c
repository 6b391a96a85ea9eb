/*
 * state_etcd_batch.c - batches and group commit of the etcd state backend.
 *
 * Puts build the batch in memory (encoded keys and values); commit writes it
 * as Txns of at most max_ops puts and max_bytes bytes, up to 16 in flight on
 * the handle's private loop (lib/state/state_etcd.c drives it). A batch over one
 * Txn is not atomic as a whole: docs/state.md ("Group commit in
 * transactions") explains why that is safe for these records, and why runs
 * and pipelines are written in a second phase.
 */
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/state/state_etcd_int.h"

static struct tr_state_etcd *from(struct tr_state *st)
{
    return (struct tr_state_etcd *)st;
}

/* Commit's Txns: the first failure of the batch, with etcd's words. */
struct commit_acc
{
    int status;
    char message[256];
    size_t failed;
};

void etcd_drop_puts(struct tr_state_etcd *st, size_t keep)
{
    for (size_t i = keep; i < st->n_puts; i++) {
        tr_free(st->puts[i].key);
        tr_free(st->puts[i].value);
    }
    st->n_puts = keep;
}

/* ===================================================================== */
/* Batches                                                               */
/* ===================================================================== */

int etcd_begin(struct tr_state *base)
{
    struct tr_state_etcd *st = from(base);
    if (st->in_batch)
        return TR_EINVAL;
    st->in_batch = true;
    st->put_error[0] = '\0';
    return 0;
}

/*
 * Takes key and value into the batch (both released on failure). `what`
 * names the record for the too-large refusal, `payload` the bytes the user
 * controls.
 */
static int add_put(struct tr_state_etcd *st, struct tr_buf *key, struct tr_buf *val,
                   bool if_absent, bool late, const char *what, size_t payload)
{
    int rc = 0;
    size_t need = key->len + val->len + TR_STATE_ETCD_OP_OVERHEAD + TR_STATE_ETCD_REQ_OVERHEAD;
    if (need > st->max_bytes) {
        bool output = strstr(what, "output") != NULL;
        snprintf(st->put_error, sizeof(st->put_error),
                 "%s of %zu bytes is over etcd's request limit of %u bytes%s", what, payload,
                 st->max_bytes,
                 output ? "; an artifact store is needed for outputs this large" : "");
        tr_err("cannot store '%.*s' in etcd: %s", (int)TR_MIN(key->len, 200), key->buf,
               st->put_error);
        rc = TR_E2BIG;
    } else {
        rc = TR_VEC_RESERVE(st->puts, st->cap_puts, st->n_puts + 1);
    }
    if (rc == 0) {
        struct etcd_put *p = &st->puts[st->n_puts];
        size_t klen = 0, vlen = 0;
        p->key = tr_buf_detach(key, &klen);
        p->value = p->key ? tr_buf_detach(val, &vlen) : NULL;
        if (p->value == NULL) {
            tr_free(p->key);
            rc = TR_ENOMEM;
        } else {
            p->key_len = klen;
            p->value_len = vlen;
            p->if_absent = if_absent;
            p->late = late;
            p->del = p->prefix = false;
            st->n_puts++;
        }
    }
    tr_buf_release(key);
    tr_buf_release(val);
    return rc;
}

static int put_source(struct tr_state_etcd *st, const char *digest, const char *src, size_t len)
{
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, "sources/", &digest, 1);
    if (rc == 0)
        rc = tr_buf_add(&val, src, len);
    if (rc < 0) {
        tr_buf_release(&key);
        tr_buf_release(&val);
        return rc;
    }
    return add_put(st, &key, &val, true, false, "pipeline source", len);
}

int etcd_put_source(struct tr_state *base, const char *digest, const char *src, size_t len)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    return put_source(st, digest, src, len);
}

int etcd_put_pipeline(struct tr_state *base, const struct tr_pipeline_rec *rec)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    size_t before = st->n_puts;
    int rc = rec->source ? put_source(st, rec->digest, rec->source, rec->source_len) : 0;
    if (rc < 0)
        return rc;
    /* Registration order across puts, for ties of registered_at: wall-clock
     * nanoseconds, strictly increasing within this process. */
    double wall_ns = tr_now() * 1e9;
    uint64_t seq = wall_ns > 0 ? (uint64_t)wall_ns : 0;
    st->last_seq = seq > st->last_seq ? seq : st->last_seq + 1;
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    const char *comps[] = {rec->name, rec->version};
    rc = etcd_key(st, &key, "pipelines/", comps, 2);
    if (rc == 0)
        rc = etcd_encode_pipeline(&val, rec, st->last_seq);
    if (rc == 0) {
        rc = add_put(st, &key, &val, false, true, "pipeline record", rec->source_len);
    } else {
        tr_buf_release(&key);
        tr_buf_release(&val);
    }
    if (rc < 0)
        etcd_drop_puts(st, before);
    return rc;
}

int etcd_put_run(struct tr_state *base, const struct tr_run_rec *rec)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, "runs/", &rec->id, 1);
    if (rc == 0)
        rc = etcd_encode_run(&val, rec);
    if (rc < 0) {
        tr_buf_release(&key);
        tr_buf_release(&val);
        return rc;
    }
    return add_put(st, &key, &val, false, true, "run record", val.len);
}

int etcd_put_task(struct tr_state *base, const struct tr_task_rec *rec)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    char idx[16];
    snprintf(idx, sizeof(idx), "%010u", (unsigned)rec->index);
    const char *comps[] = {rec->run_id, rec->name, idx};
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, "tasks/", comps, 3);
    if (rc == 0)
        rc = etcd_encode_task(&val, rec);
    if (rc < 0) {
        tr_buf_release(&key);
        tr_buf_release(&val);
        return rc;
    }
    return add_put(st, &key, &val, false, false, "task output", rec->output_len);
}

int etcd_put_cache(struct tr_state *base, const char *k, const void *output, size_t len)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, "cache/", &k, 1);
    if (rc == 0 && len > 0)
        rc = tr_buf_add(&val, output, len);
    if (rc < 0) {
        tr_buf_release(&key);
        tr_buf_release(&val);
        return rc;
    }
    return add_put(st, &key, &val, false, false, "cached output", len);
}

int etcd_put_row(struct tr_state *base, const struct tr_state_row *row)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    const struct tr_row_kind_info *k = &tr_row_kinds[row->kind];
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, k->section, row->comps, row->n_comps);
    if (rc == 0)
        rc = etcd_encode_row(&val, row);
    if (rc < 0) {
        tr_buf_release(&key);
        tr_buf_release(&val);
        return rc;
    }
    return add_put(st, &key, &val, false, k->late, "feedback loop record", row->value_len);
}

void etcd_rollback(struct tr_state *base)
{
    struct tr_state_etcd *st = from(base);
    etcd_drop_puts(st, 0);
    st->in_batch = false;
}

/* Run control: a delete of key (every key under it when prefix) joins the batch. */
static int add_delete(struct tr_state_etcd *st, struct tr_buf *key, bool prefix, bool late)
{
    struct tr_buf val;
    tr_buf_init(&val, 0);
    size_t before = st->n_puts;
    int rc = add_put(st, key, &val, false, late, "delete", 0);
    if (rc == 0 && st->n_puts > before) {
        st->puts[before].del = true;
        st->puts[before].prefix = prefix;
    }
    return rc;
}

int etcd_delete_row(struct tr_state *base, int kind, const char *const *comps, size_t n)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = etcd_key(st, &key, tr_row_kinds[kind].section, comps, n);
    if (rc < 0) {
        tr_buf_release(&key);
        return rc;
    }
    return add_delete(st, &key, false, tr_row_kinds[kind].late);
}

/* The run's record first, its task records in the second phase: a commit
 * cut in between leaves records no listing shows, never a run without them. */
int etcd_delete_run(struct tr_state *base, const char *run_id)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    size_t before = st->n_puts;
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = etcd_key(st, &key, "runs/", &run_id, 1);
    if (rc == 0)
        rc = add_delete(st, &key, false, false);
    else
        tr_buf_release(&key);
    const char *comps[] = {run_id, ""};
    tr_buf_init(&key, 0);
    if (rc == 0 && (rc = etcd_key(st, &key, "tasks/", comps, 2)) == 0)
        rc = add_delete(st, &key, true, true);
    else
        tr_buf_release(&key);
    if (rc < 0)
        etcd_drop_puts(st, before);
    return rc;
}

/* ===================================================================== */
/* Commit                                                                */
/* ===================================================================== */

static int cmp_put(const void *a, const void *b, void *arg)
{
    const struct etcd_put *puts = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const struct etcd_put *p = &puts[i], *q = &puts[j];
    size_t n = TR_MIN(p->key_len, q->key_len);
    int c = memcmp(p->key, q->key, n);
    if (c == 0 && p->key_len != q->key_len)
        c = p->key_len < q->key_len ? -1 : 1;
    if (c == 0)
        c = i < j ? -1 : i > j;
    return c;
}

/*
 * Marks in skip[] the puts a later put of the same key replaces (etcd
 * refuses a key twice in one Txn, and the batch's last word wins), or, for
 * sources, the repeats of the first.
 */
static int dedupe(struct tr_state_etcd *st, bool *skip)
{
    size_t n = st->n_puts;
    size_t *order = tr_reallocarray(NULL, n ? n : 1, sizeof(*order));
    if (order == NULL)
        return TR_ENOMEM;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_put, st->puts);
    for (size_t i = 0; i + 1 < n; i++) {
        const struct etcd_put *p = &st->puts[order[i]], *q = &st->puts[order[i + 1]];
        if (p->key_len != q->key_len || memcmp(p->key, q->key, p->key_len) != 0)
            continue;
        if (p->if_absent)
            skip[order[i + 1]] = true, order[i + 1] = order[i];
        else
            skip[order[i]] = true;
    }
    tr_free(order);
    return 0;
}

static void on_txn_done(void *arg, int status, const struct tr_etcd_result *res)
{
    struct etcd_call *c = arg;
    bool live = c->gen == c->st->gen;
    struct commit_acc *acc = live ? c->st->commit_acc : NULL;
    if (live)
        c->st->pending--;
    if (acc != NULL && status < 0) {
        acc->failed++;
        if (acc->status == 0) {
            acc->status = status;
            snprintf(acc->message, sizeof(acc->message), "%s",
                     res->message && res->message[0] ? res->message : tr_strerror(status));
        }
    }
    etcd_call_free(c);
}

/* Starts one Txn; a source is guarded by "absent" so that a digest keeps its first bytes. */
static int start_txn(struct tr_state_etcd *st, const struct tr_etcd_op *ops, size_t n,
                     bool if_absent)
{
    struct tr_etcd_compare absent = {.key = ops[0].key, .key_len = ops[0].key_len,
                                     .target = TR_ETCD_CMP_CREATE, .result = TR_ETCD_EQUAL};
    struct tr_etcd_txn txn = {.compares = &absent, .n_compares = if_absent ? 1 : 0,
                              .success = ops, .n_success = n};
    struct etcd_call *c = etcd_call_new(st);
    if (c == NULL)
        return TR_ENOMEM;
    int rc = tr_etcd_txn(st->e, &txn, on_txn_done, c);
    if (rc < 0) {
        etcd_call_free(c);
        return rc;
    }
    st->pending++;
    return 0;
}

/*
 * Groups the puts of one phase (late or not) into Txns and runs them with up
 * to 16 in flight, or every put in one pass when phase is -1.
 */
static int write_phase(struct tr_state_etcd *st, const bool *skip, int phase,
                       struct tr_etcd_op *ops, struct commit_acc *acc, size_t *n_txns)
{
    int rc = 0;
    size_t n = 0, bytes = TR_STATE_ETCD_REQ_OVERHEAD;
    for (size_t i = 0; i <= st->n_puts && rc == 0 && acc->status == 0; i++) {
        const struct etcd_put *p = i < st->n_puts ? &st->puts[i] : NULL;
        if (p != NULL && (skip[i] || (phase >= 0 && p->late != (phase == 1))))
            continue;
        size_t cost = p ? p->key_len + p->value_len + TR_STATE_ETCD_OP_OVERHEAD : 0;
        bool flush = n > 0 && (p == NULL || p->if_absent || n == st->max_ops ||
                               bytes + cost > st->max_bytes);
        if (flush) {
            if (st->pending >= TR_STATE_ETCD_MAX_IN_FLIGHT)
                rc = etcd_drive(st, TR_STATE_ETCD_MAX_IN_FLIGHT - 1);
            if (rc == 0 && acc->status == 0 && (rc = start_txn(st, ops, n, false)) == 0)
                (*n_txns)++;
            n = 0;
            bytes = TR_STATE_ETCD_REQ_OVERHEAD;
        }
        if (p == NULL || rc < 0 || acc->status < 0)
            break;
        struct tr_etcd_op op = {.type = TR_ETCD_OP_PUT, .key = p->key, .key_len = p->key_len,
                                .value = p->value, .value_len = p->value_len};
        if (p->del)
            op = (struct tr_etcd_op){.type = TR_ETCD_OP_DELETE, .key = p->key,
                                     .key_len = p->key_len,
                                     .flags = p->prefix ? TR_ETCD_PREFIX : 0};
        if (p->if_absent) {
            if (st->pending >= TR_STATE_ETCD_MAX_IN_FLIGHT)
                rc = etcd_drive(st, TR_STATE_ETCD_MAX_IN_FLIGHT - 1);
            if (rc == 0 && acc->status == 0 && (rc = start_txn(st, &op, 1, true)) == 0)
                (*n_txns)++;
            continue;
        }
        ops[n++] = op;
        bytes += cost;
    }
    if (rc != TR_ETIMEDOUT) {
        int drc = etcd_drive(st, 0); /* every Txn started is awaited */
        if (rc == 0)
            rc = drc;
    }
    return rc;
}

/*
 * A batch that fits one Txn (and holds no source) is written atomically.
 * Otherwise in two phases: task records, cache entries and sources first,
 * then, once all of those are durable, the run and pipeline records that
 * refer to them, so that no partial commit leaves a run marked finished
 * without its task records, or a pipeline without its source.
 */
static int write_batch(struct tr_state_etcd *st, const bool *skip, struct commit_acc *acc,
                       size_t *n_txns)
{
    size_t n = 0, bytes = TR_STATE_ETCD_REQ_OVERHEAD;
    bool guarded = false;
    for (size_t i = 0; i < st->n_puts; i++) {
        if (skip[i])
            continue;
        n++;
        bytes += st->puts[i].key_len + st->puts[i].value_len + TR_STATE_ETCD_OP_OVERHEAD;
        guarded |= st->puts[i].if_absent;
    }
    struct tr_etcd_op *ops = tr_reallocarray(NULL, st->max_ops, sizeof(*ops));
    if (ops == NULL)
        return TR_ENOMEM;
    int rc;
    if (!guarded && n <= st->max_ops && bytes <= st->max_bytes) {
        rc = write_phase(st, skip, -1, ops, acc, n_txns);
    } else {
        rc = write_phase(st, skip, 0, ops, acc, n_txns);
        if (rc == 0 && acc->status == 0)
            rc = write_phase(st, skip, 1, ops, acc, n_txns);
    }
    tr_free(ops);
    return rc;
}

int etcd_commit(struct tr_state *base, struct tr_error *err)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return tr_error_set(err, TR_EINVAL, "cannot commit state batch: no batch begun");
    size_t n = st->n_puts;
    int rc = 0;
    struct commit_acc acc = {0};
    size_t n_txns = 0;
    uint64_t t0 = tr_mono_ns();
    bool *skip = tr_calloc(n ? n : 1, sizeof(*skip));
    if (skip == NULL)
        rc = TR_ENOMEM;
    if (rc == 0)
        rc = dedupe(st, skip);
    if (rc == 0) {
        st->commit_acc = &acc;
        rc = write_batch(st, skip, &acc, &n_txns);
        st->commit_acc = NULL;
    }
    tr_free(skip);
    etcd_drop_puts(st, 0);
    st->in_batch = false;
    if (rc == 0 && acc.status < 0)
        rc = acc.status;
    if (rc < 0) {
        const char *why = acc.status < 0 ? acc.message : tr_strerror(rc);
        tr_error_set(err, rc, "cannot commit state batch of %zu records to etcd '%s': %s "
                              "(%zu of %zu transactions failed)",
                     n, st->endpoints, why, acc.failed, n_txns);
        return rc;
    }
    tr_debug("committed %zu records to etcd in %zu transactions in %.1f ms", n, n_txns,
             (double)(tr_mono_ns() - t0) / 1e6);
    return 0;
}

