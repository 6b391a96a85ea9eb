/*
 * state_etcd.c - the etcd state backend: opening, the blocking driver, the
 * epoch, and group commit.
 *
 * URL: etcd://HOST:PORT[,HOST:PORT...][?OPTIONS] (docs/state.md, "etcd").
 * The scheduler calls lib/state.h synchronously from its own loop thread,
 * while lib/etcd.h is asynchronous. Each handle therefore owns a private
 * uv_loop_t that only its client lives on: a call starts its requests and
 * runs that loop until their callbacks have fired or a watchdog (the request
 * deadline plus a margin) gives up, so an unreachable etcd costs a call at
 * most about one deadline and never hangs the scheduler. Callbacks only copy
 * what they need; records reach the caller's callbacks after the private
 * loop has stopped, so a caller's callback may read again (a nested wait).
 *
 * A batch is kept in memory and written at commit as Txns of at most
 * max_ops puts and max_bytes bytes, up to 16 in flight. The batch is then not
 * atomic as a whole; docs/state.md explains why that is safe for these
 * records (idempotent inserts-or-replaces keyed by identity).
 */
#include <stdlib.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/state_etcd_int.h"

#define WATCHDOG_MARGIN_MS 1000u

/* ===================================================================== */
/* The driver                                                            */
/* ===================================================================== */

struct etcd_call *etcd_call_new(struct tr_state_etcd *st)
{
    struct etcd_call *c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->st = st;
    c->gen = st->gen;
    return c;
}

void etcd_call_free(struct etcd_call *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_kvs; i++) {
        tr_free(c->kvs[i].key);
        tr_free(c->kvs[i].value);
    }
    tr_free(c->kvs);
    tr_free(c);
}

static int copy_kvs(struct etcd_call *c, const struct tr_etcd_kv *kvs, size_t n)
{
    c->kvs = tr_calloc(n ? n : 1, sizeof(*c->kvs));
    if (c->kvs == NULL)
        return TR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct etcd_kvcopy *d = &c->kvs[c->n_kvs];
        d->key = tr_malloc(kvs[i].key_len + 1);
        d->value = tr_malloc(kvs[i].value_len + 1);
        if (d->key == NULL || d->value == NULL) {
            tr_free(d->key);
            tr_free(d->value);
            return TR_ENOMEM;
        }
        c->n_kvs++;
        memcpy(d->key, kvs[i].key, kvs[i].key_len);
        d->key[kvs[i].key_len] = '\0';
        d->key_len = kvs[i].key_len;
        if (kvs[i].value_len)
            memcpy(d->value, kvs[i].value, kvs[i].value_len);
        d->value[kvs[i].value_len] = '\0';
        d->value_len = kvs[i].value_len;
        d->mod_revision = kvs[i].mod_revision;
    }
    return 0;
}

/* Commit's Txns: the first failure of the batch, with etcd's words. */
struct commit_acc
{
    int status;
    char message[256];
    size_t failed;
};

void etcd_call_done(void *arg, int status, const struct tr_etcd_result *res)
{
    struct etcd_call *c = arg;
    struct tr_state_etcd *st = c->st;
    if (c->gen != st->gen) {
        /* Its wait gave up: nobody is looking at it any more. */
        etcd_call_free(c);
        return;
    }
    st->pending--;
    c->done = true;
    c->status = status;
    c->revision = res->revision;
    c->succeeded = res->succeeded;
    snprintf(c->message, sizeof(c->message), "%s",
             res->message && res->message[0] ? res->message : tr_strerror(status));
    const struct tr_etcd_result *r = res;
    if (res->type == TR_ETCD_OP_TXN && res->n_responses > 0 &&
        res->responses[0].type == TR_ETCD_OP_RANGE)
        r = &res->responses[0];
    c->more = r->more;
    if (status == 0 && r->n_kvs > 0 && copy_kvs(c, r->kvs, r->n_kvs) < 0) {
        c->status = TR_ENOMEM;
        snprintf(c->message, sizeof(c->message), "out of memory");
    }
}

static void on_watchdog(uv_timer_t *t)
{
    struct tr_state_etcd *st = t->data;
    st->watchdog_fired = true;
}

int etcd_drive(struct tr_state_etcd *st, size_t until)
{
    st->watchdog_fired = false;
    uv_timer_start(&st->watchdog, on_watchdog, (uint64_t)st->timeout_ms + WATCHDOG_MARGIN_MS, 0);
    while (st->pending > until && !st->watchdog_fired)
        uv_run(&st->loop, UV_RUN_ONCE);
    uv_timer_stop(&st->watchdog);
    if (st->pending > until) {
        st->gen++;
        st->pending = 0;
        return TR_ETIMEDOUT;
    }
    return 0;
}

static int range_once(struct tr_state_etcd *st, const struct tr_etcd_op *op,
                      struct etcd_call **out)
{
    struct etcd_call *c = etcd_call_new(st);
    if (c == NULL)
        return TR_ENOMEM;
    int rc = tr_etcd_range(st->e, op, etcd_call_done, c);
    if (rc < 0) {
        etcd_call_free(c);
        return rc;
    }
    st->pending++;
    rc = etcd_drive(st, 0);
    if (rc < 0)
        return rc; /* c is abandoned: its callback frees it */
    if (c->status < 0) {
        rc = c->status;
        etcd_call_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/*
 * A read is idempotent, so an answer that does not decode is asked for once
 * more: protobuf-c reports running out of memory while unpacking exactly as
 * it reports bytes it cannot parse, and the first is worth a second try.
 */
int etcd_range_sync(struct tr_state_etcd *st, const struct tr_etcd_op *op, struct etcd_call **out)
{
    *out = NULL;
    int rc = range_once(st, op, out);
    if (rc == TR_EPROTO)
        rc = range_once(st, op, out);
    return rc;
}

int etcd_status(const struct etcd_call *c)
{
    return c->status;
}

static struct tr_state_etcd *from(struct tr_state *st)
{
    return (struct tr_state_etcd *)st;
}

const char *tr_state_etcd_put_error(const struct tr_state *st)
{
    return ((const struct tr_state_etcd *)st)->put_error;
}

/* ===================================================================== */
/* Open and close                                                        */
/* ===================================================================== */

struct url_opts
{
    char *cacert, *cert, *key, *prefix;
    uint32_t timeout_ms, max_ops, max_bytes;
};

static int parse_u32(const char *name, const char *v, uint32_t lo, uint32_t hi, uint32_t *out,
                     struct tr_error *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || x < lo || x > hi)
        return tr_error_set(err, TR_EINVAL, "cannot open state: option '%s' must be a number "
                                            "from %u to %u, not '%s'", name, lo, hi, v);
    *out = (uint32_t)x;
    return 0;
}

/* Splits "a=1&b=2" (modified in place) into o. */
static int parse_opts(char *q, struct url_opts *o, struct tr_error *err)
{
    for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL)
            return tr_error_set(err, TR_EINVAL, "cannot open state: option '%s' has no value "
                                                "(expected name=value)", kv);
        *eq = '\0';
        const char *v = eq + 1;
        int rc = 0;
        if (strcmp(kv, "cacert") == 0)
            o->cacert = (char *)v;
        else if (strcmp(kv, "cert") == 0)
            o->cert = (char *)v;
        else if (strcmp(kv, "key") == 0)
            o->key = (char *)v;
        else if (strcmp(kv, "prefix") == 0)
            o->prefix = (char *)v;
        else if (strcmp(kv, "timeout_ms") == 0)
            rc = parse_u32(kv, v, 1, 600000, &o->timeout_ms, err);
        else if (strcmp(kv, "max_ops") == 0)
            rc = parse_u32(kv, v, 1, 1000000, &o->max_ops, err);
        else if (strcmp(kv, "max_bytes") == 0)
            rc = parse_u32(kv, v, 1024, 1u << 30, &o->max_bytes, err);
        else
            return tr_error_set(err, TR_EINVAL, "cannot open state: unknown etcd option '%s' "
                                                "(known: cacert, cert, key, prefix, timeout_ms, "
                                                "max_ops, max_bytes)", kv);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* "/trellis/v1" -> "/trellis/v1/": the one form the key builders expect. */
static int set_prefix(struct tr_state_etcd *st, const char *p, struct tr_error *err)
{
    if (p[0] != '/')
        return tr_error_set(err, TR_EINVAL, "cannot open state: prefix '%s' must start with '/'",
                            p);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        n--;
    st->prefix = tr_malloc(n + 2);
    if (st->prefix == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot open state: out of memory");
    memcpy(st->prefix, p, n);
    if (n > 1 || p[0] != '/')
        st->prefix[n++] = '/';
    st->prefix[n] = '\0';
    st->prefix_len = n;
    return 0;
}

static void etcd_close(struct tr_state *base);

static int etcd_open(const char *location, struct tr_state **out, struct tr_error *err)
{
    if (strncmp(location, "//", 2) != 0 || location[2] == '\0' || location[2] == '?')
        return tr_error_set(err, TR_EINVAL, "cannot open state 'etcd:%s': expected "
                                            "etcd://HOST:PORT[,HOST:PORT...][?OPTIONS]", location);
    char *copy = tr_strdup(location + 2);
    struct tr_state_etcd *st = tr_calloc(1, sizeof(*st));
    if (copy == NULL || st == NULL) {
        tr_free(copy);
        tr_free(st);
        return tr_error_set(err, TR_ENOMEM, "cannot open state: out of memory");
    }
    struct url_opts o = {.timeout_ms = TR_STATE_ETCD_DEFAULT_TIMEOUT_MS,
                         .max_ops = TR_ETCD_DEFAULT_MAX_TXN_OPS,
                         .max_bytes = TR_ETCD_DEFAULT_MAX_REQUEST_BYTES,
                         .prefix = (char *)TR_STATE_ETCD_DEFAULT_PREFIX};
    char *q = strchr(copy, '?');
    if (q != NULL)
        *q++ = '\0';
    int rc = q ? parse_opts(q, &o, err) : 0;
    if (rc == 0)
        rc = set_prefix(st, o.prefix, err);
    if (rc == 0 && (st->endpoints = tr_strdup(copy)) == NULL)
        rc = tr_error_set(err, TR_ENOMEM, "cannot open state: out of memory");
    if (rc == 0 && uv_loop_init(&st->loop) != 0)
        rc = tr_error_set(err, TR_ENOMEM, "cannot open state: cannot create an event loop");
    if (rc < 0) {
        tr_free(st->prefix);
        tr_free(st->endpoints);
        tr_free(st);
        tr_free(copy);
        return rc;
    }
    uv_timer_init(&st->loop, &st->watchdog);
    st->watchdog.data = st;
    st->timeout_ms = o.timeout_ms;
    st->max_ops = o.max_ops;
    st->max_bytes = o.max_bytes;
    struct tr_etcd_config cfg = {.endpoints = copy,
                                 .ca_file = o.cacert,
                                 .cert_file = o.cert,
                                 .key_file = o.key,
                                 .deadline_ms = o.timeout_ms,
                                 .backoff_min_ms = 50,
                                 .backoff_max_ms = 1000};
    struct tr_error cerr;
    tr_error_init(&cerr);
    st->e = tr_etcd_new(&st->loop, &cfg, &cerr);
    tr_free(copy);
    if (st->e == NULL) {
        rc = cerr.code == TR_ENOMEM || cerr.code == TR_EINVAL ? cerr.code : TR_ESTATE;
        tr_error_set(err, rc, "cannot open state 'etcd://%s': %s", st->endpoints, cerr.msg);
        etcd_close(&st->base);
        return rc;
    }
    *out = &st->base;
    return 0;
}

static void drop_puts(struct tr_state_etcd *st, size_t keep)
{
    for (size_t i = keep; i < st->n_puts; i++) {
        tr_free(st->puts[i].key);
        tr_free(st->puts[i].value);
    }
    st->n_puts = keep;
}

static void etcd_close(struct tr_state *base)
{
    struct tr_state_etcd *st = from(base);
    drop_puts(st, 0);
    tr_free(st->puts);
    /* Whatever is still in flight completes with TR_ECANCELED and is dropped. */
    st->gen++;
    st->pending = 0;
    tr_etcd_free(st->e);
    uv_close((uv_handle_t *)&st->watchdog, NULL);
    uv_run(&st->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&st->loop);
    if (rc != 0)
        tr_warn("cannot close the etcd state loop of '%s': %s", st->endpoints, uv_strerror(rc));
    tr_free(st->prefix);
    tr_free(st->endpoints);
    tr_free(st);
}

/* ===================================================================== */
/* Epoch                                                                 */
/* ===================================================================== */

/*
 * Read, then compare-and-swap on mod_revision; a lost race reads the winner's
 * value in the Txn's failure branch and tries again, until the deadline.
 */
static int etcd_next_epoch(struct tr_state *base, uint64_t *epoch)
{
    struct tr_state_etcd *st = from(base);
    struct tr_buf key, val;
    tr_buf_init(&key, 0);
    tr_buf_init(&val, 0);
    int rc = etcd_key(st, &key, "meta/epoch", NULL, 0);
    struct tr_etcd_op get = {.type = TR_ETCD_OP_RANGE, .key = key.buf, .key_len = key.len};
    struct etcd_call *c = NULL;
    if (rc == 0)
        rc = etcd_range_sync(st, &get, &c);
    uint64_t deadline = tr_mono_ns() + (uint64_t)st->timeout_ms * 1000000u;
    while (rc == 0) {
        uint64_t cur = 0;
        int64_t mod = 0;
        if (c->n_kvs > 0) {
            mod = c->kvs[0].mod_revision;
            rc = etcd_decode_uint(c->kvs[0].value, c->kvs[0].value_len, &cur);
        }
        etcd_call_free(c);
        c = NULL;
        tr_buf_reset(&val);
        if (rc == 0)
            rc = etcd_encode_uint(&val, cur + 1);
        if (rc < 0)
            break;
        struct tr_etcd_compare cmp = {.key = key.buf, .key_len = key.len,
                                      .target = TR_ETCD_CMP_MOD, .result = TR_ETCD_EQUAL,
                                      .number = mod};
        struct tr_etcd_op put = {.type = TR_ETCD_OP_PUT, .key = key.buf, .key_len = key.len,
                                 .value = val.buf, .value_len = val.len};
        struct tr_etcd_txn txn = {.compares = &cmp, .n_compares = 1, .success = &put,
                                  .n_success = 1, .failure = &get, .n_failure = 1};
        if ((c = etcd_call_new(st)) == NULL) {
            rc = TR_ENOMEM;
            break;
        }
        if ((rc = tr_etcd_txn(st->e, &txn, etcd_call_done, c)) < 0) {
            etcd_call_free(c);
            c = NULL;
            break;
        }
        st->pending++;
        if ((rc = etcd_drive(st, 0)) < 0) {
            c = NULL; /* abandoned */
            break;
        }
        if ((rc = c->status) < 0)
            break;
        if (c->succeeded) {
            *epoch = cur + 1;
            break;
        }
        if (tr_mono_ns() > deadline) {
            rc = TR_ETIMEDOUT;
            break;
        }
    }
    if (rc < 0)
        tr_warn("cannot take a new epoch from etcd '%s': %s", st->endpoints,
                c ? c->message : tr_strerror(rc));
    etcd_call_free(c);
    tr_buf_release(&key);
    tr_buf_release(&val);
    return rc;
}

/* ===================================================================== */
/* Batches                                                               */
/* ===================================================================== */

static int etcd_begin(struct tr_state *base)
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
    } else if (st->n_puts == st->cap_puts) {
        size_t cap = st->cap_puts ? st->cap_puts * 2 : 64;
        struct etcd_put *p = tr_reallocarray(st->puts, cap, sizeof(*p));
        if (p == NULL) {
            rc = TR_ENOMEM;
        } else {
            st->puts = p;
            st->cap_puts = cap;
        }
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

static int etcd_put_source(struct tr_state *base, const char *digest, const char *src, size_t len)
{
    struct tr_state_etcd *st = from(base);
    if (!st->in_batch)
        return TR_EINVAL;
    return put_source(st, digest, src, len);
}

static int etcd_put_pipeline(struct tr_state *base, const struct tr_pipeline_rec *rec)
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
        drop_puts(st, before);
    return rc;
}

static int etcd_put_run(struct tr_state *base, const struct tr_run_rec *rec)
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

static int etcd_put_task(struct tr_state *base, const struct tr_task_rec *rec)
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

static int etcd_put_cache(struct tr_state *base, const char *k, const void *output, size_t len)
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

static void etcd_rollback(struct tr_state *base)
{
    struct tr_state_etcd *st = from(base);
    drop_puts(st, 0);
    st->in_batch = false;
}

/* ===================================================================== */
/* Commit                                                                */
/* ===================================================================== */

static const struct etcd_put *g_sort_puts; /* qsort has no argument pointer */

static int cmp_put(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const struct etcd_put *p = &g_sort_puts[i], *q = &g_sort_puts[j];
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
    g_sort_puts = st->puts;
    qsort(order, n, sizeof(*order), cmp_put);
    g_sort_puts = NULL;
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

static int etcd_commit(struct tr_state *base, struct tr_error *err)
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
    drop_puts(st, 0);
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

const struct tr_state_ops tr_state_etcd_ops = {
    .scheme = "etcd",
    .open = etcd_open,
    .close = etcd_close,
    .next_epoch = etcd_next_epoch,
    .begin = etcd_begin,
    .put_pipeline = etcd_put_pipeline,
    .put_source = etcd_put_source,
    .put_run = etcd_put_run,
    .put_task = etcd_put_task,
    .put_cache = etcd_put_cache,
    .commit = etcd_commit,
    .rollback = etcd_rollback,
    .get_source = etcd_get_source,
    .get_pipeline = etcd_get_pipeline,
    .list_pipelines = etcd_list_pipelines,
    .get_run = etcd_get_run,
    .list_runs = etcd_list_runs,
    .list_tasks = etcd_list_tasks,
    .get_cache = etcd_get_cache,
};
