/*
 * state_etcd.c - the etcd state backend: opening, the blocking driver, the
 * epoch, and group commit.
 *
 * URL: etcd://HOST:PORT[,HOST:PORT...][?OPTIONS] (docs/state.md, "etcd").
 * The scheduler calls lib/state/state.h synchronously from its own loop thread,
 * while lib/etcd/etcd.h is asynchronous. Each handle therefore owns a private
 * uv_loop_t that only its client lives on: a call starts its requests and
 * runs that loop until their callbacks have fired or a watchdog (the request
 * deadline plus a margin) gives up, so an unreachable etcd costs a call at
 * most about one deadline and never hangs the scheduler. Callbacks only copy
 * what they need; records reach the caller's callbacks after the private
 * loop has stopped, so a caller's callback may read again (a nested wait).
 *
 * Batches and commit are in lib/state/state_etcd_batch.c, reads in
 * lib/state/state_etcd_read.c.
 */
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/state/state_etcd_int.h"

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
    st->e = tr_etcd_open(&st->loop, &cfg, &cerr);
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

static void etcd_close(struct tr_state *base)
{
    struct tr_state_etcd *st = from(base);
    etcd_drop_puts(st, 0);
    tr_free(st->puts);
    /* Whatever is still in flight completes with TR_ECANCELED and is dropped. */
    st->gen++;
    st->pending = 0;
    tr_etcd_close(st->e);
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
    .put_row = etcd_put_row,
    .get_row = etcd_get_row,
    .list_rows = etcd_list_rows,
    .delete_row = etcd_delete_row,
    .delete_run = etcd_delete_run,
    .list_finished = etcd_list_finished,
};
