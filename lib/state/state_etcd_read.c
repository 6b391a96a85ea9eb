/*
 * state_etcd_read.c - the reads of the etcd state backend.
 *
 * Every read is a Range (or a series of them) run to completion on the
 * handle's private loop. Listings page through their prefix 512 keys at a
 * time, all pages at the first page's revision, so that a listing is one
 * snapshot. etcd returns keys in byte order only, while the contract orders
 * by fields (runs by creation time, tasks by name then index, pipelines by
 * name then registration): listings decode their records, sort them in
 * memory and only then hand them to the callback, outside the private loop,
 * so that a callback may read again. The memory this costs is bounded by the
 * limit for runs, and is one run's task records for tasks (which recovery
 * reads anyway).
 */
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"
#include "lib/state/state_etcd_int.h"

#define PAGE 512

static struct tr_state_etcd *from(struct tr_state *st)
{
    return (struct tr_state_etcd *)st;
}

/* One record decoded from a listing, its strings in arena. */
struct item
{
    union
    {
        struct tr_pipeline_rec p;
        struct tr_run_rec r;
        struct tr_task_rec t;
        struct tr_state_row row;
    } u;
    uint64_t seq;
    char *arena;
    char *key; /* rows: the etcd key, for ties in the order */
};

struct items
{
    struct item *v;
    size_t n, cap;
};

static void items_release(struct items *it)
{
    for (size_t i = 0; i < it->n; i++) {
        tr_free(it->v[i].arena);
        tr_free(it->v[i].key);
    }
    tr_free(it->v);
    *it = (struct items){0};
}

/* Decodes one value into a new item; fn decides whether to keep it. */
typedef int (*decode_fn)(const struct etcd_kvcopy *kv, struct item *out, void *arg);

/*
 * Reads every key of [start, end) page by page, and decodes each through
 * fn into it (prune, when set, runs after each page to bound memory).
 */
static int scan(struct tr_state_etcd *st, const struct tr_buf *start, decode_fn fn, void *arg,
                struct items *it, void (*prune)(struct items *, void *))
{
    uint8_t *end = tr_malloc(start->len + 1);
    struct tr_buf cur;
    tr_buf_init(&cur, 0);
    int rc = end ? tr_buf_add(&cur, start->buf, start->len) : TR_ENOMEM;
    size_t end_len = end ? tr_etcd_prefix_end(start->buf, start->len, end) : 0;
    int64_t rev = 0;
    while (rc == 0) {
        struct tr_etcd_op op = {.type = TR_ETCD_OP_RANGE, .key = cur.buf, .key_len = cur.len,
                                .range_end = end, .range_end_len = end_len, .limit = PAGE,
                                .revision = rev};
        struct etcd_call *c = NULL;
        if ((rc = etcd_range_sync(st, &op, &c)) < 0)
            break;
        if (rev == 0)
            rev = c->revision;
        for (size_t i = 0; i < c->n_kvs && rc == 0; i++) {
            if ((rc = TR_VEC_RESERVE(it->v, it->cap, it->n + 1)) != 0)
                break;
            struct item *x = &it->v[it->n];
            *x = (struct item){0};
            rc = fn(&c->kvs[i], x, arg);
            if (rc == 1) {
                tr_free(x->arena); /* decoded, but filtered out */
                rc = 0;
            } else if (rc == 0) {
                it->n++;
            }
        }
        bool more = c->more && c->n_kvs > 0;
        if (rc == 0 && more) {
            const struct etcd_kvcopy *last = &c->kvs[c->n_kvs - 1];
            tr_buf_reset(&cur);
            rc = tr_buf_add(&cur, last->key, last->key_len);
            if (rc == 0)
                rc = tr_buf_addch(&cur, '\0'); /* the next key after last */
        }
        etcd_call_free(c);
        if (rc == 0 && prune)
            prune(it, arg);
        if (!more)
            break;
    }
    tr_buf_release(&cur);
    tr_free(end);
    return rc;
}

/* The one value at key, its copy handed over (NUL-terminated), or TR_ENOENT. */
static int get_one(struct tr_state_etcd *st, const struct tr_buf *key, char **value, size_t *len)
{
    struct tr_etcd_op op = {.type = TR_ETCD_OP_RANGE, .key = key->buf, .key_len = key->len};
    struct etcd_call *c = NULL;
    int rc = etcd_range_sync(st, &op, &c);
    if (rc < 0)
        return rc;
    if (c->n_kvs == 0) {
        etcd_call_free(c);
        return TR_ENOENT;
    }
    *value = c->kvs[0].value;
    *len = c->kvs[0].value_len;
    c->kvs[0].value = NULL;
    etcd_call_free(c);
    return 0;
}

static int get_at(struct tr_state_etcd *st, const char *section, const char *const *comps,
                  size_t n, char **value, size_t *len)
{
    struct tr_buf key;
    tr_buf_init(&key, 0);
    int rc = etcd_key(st, &key, section, comps, n);
    if (rc == 0)
        rc = get_one(st, &key, value, len);
    tr_buf_release(&key);
    return rc;
}

/* ===================================================================== */
/* Sources and cache                                                     */
/* ===================================================================== */

int etcd_get_source(struct tr_state *base, const char *digest, char **src, size_t *len)
{
    return get_at(from(base), "sources/", &digest, 1, src, len);
}

int etcd_get_cache(struct tr_state *base, const char *key, void **output, size_t *len)
{
    char *v = NULL;
    int rc = get_at(from(base), "cache/", &key, 1, &v, len);
    if (rc == 0)
        *output = v; /* never NULL: an empty entry is an empty buffer */
    return rc;
}

/* ===================================================================== */
/* Pipelines                                                             */
/* ===================================================================== */

static int decode_pipeline(const struct etcd_kvcopy *kv, struct item *out, void *arg)
{
    return etcd_decode_pipeline(kv->value, kv->value_len, &out->u.p, &out->seq, &out->arena);
}

/* Later registration first: registered_at, then the put order. */
static bool newer(const struct item *a, const struct item *b)
{
    if (a->u.p.registered_at != b->u.p.registered_at)
        return a->u.p.registered_at > b->u.p.registered_at;
    return a->seq > b->seq;
}

static int cmp_pipeline(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    int c = strcmp(a->u.p.name, b->u.p.name);
    if (c != 0)
        return c;
    return newer(a, b) ? 1 : newer(b, a) ? -1 : 0;
}

int etcd_get_pipeline(struct tr_state *base, const char *name, const char *version,
                      tr_state_pipeline_fn cb, void *arg)
{
    struct tr_state_etcd *st = from(base);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    const char *comps[] = {name, version ? version : ""};
    /* A version reads its key; no version reads "pipelines/<name>/" whole. */
    int rc = etcd_key(st, &key, "pipelines/", comps, 2);
    struct items it = {0};
    if (rc == 0 && version != NULL) {
        char *v = NULL;
        size_t len = 0;
        rc = get_one(st, &key, &v, &len);
        if (rc == 0) {
            struct etcd_kvcopy kv = {.value = v, .value_len = len};
            it.v = tr_calloc(1, sizeof(*it.v));
            rc = it.v ? decode_pipeline(&kv, &it.v[0], NULL) : TR_ENOMEM;
            if (rc == 0)
                it.n = 1;
        }
        tr_free(v);
    } else if (rc == 0) {
        rc = scan(st, &key, decode_pipeline, NULL, &it, NULL);
    }
    tr_buf_release(&key);
    if (rc == 0 && it.n == 0)
        rc = TR_ENOENT;
    if (rc < 0) {
        items_release(&it);
        return rc;
    }
    struct item *best = &it.v[0];
    for (size_t i = 1; i < it.n; i++) {
        if (newer(&it.v[i], best))
            best = &it.v[i];
    }
    char *src = NULL;
    size_t src_len = 0;
    rc = etcd_get_source(base, best->u.p.digest, &src, &src_len);
    if (rc == 0 || rc == TR_ENOENT) {
        best->u.p.source = src;
        best->u.p.source_len = src_len;
        rc = cb(&best->u.p, arg);
    }
    tr_free(src);
    items_release(&it);
    return rc;
}

int etcd_list_pipelines(struct tr_state *base, tr_state_pipeline_fn cb, void *arg)
{
    struct tr_state_etcd *st = from(base);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    struct items it = {0};
    int rc = etcd_key(st, &key, "pipelines/", NULL, 0);
    if (rc == 0)
        rc = scan(st, &key, decode_pipeline, NULL, &it, NULL);
    tr_buf_release(&key);
    if (rc == 0 && it.n > 1)
        qsort(it.v, it.n, sizeof(*it.v), cmp_pipeline);
    for (size_t i = 0; rc == 0 && i < it.n; i++)
        rc = cb(&it.v[i].u.p, arg);
    items_release(&it);
    return rc;
}

/* ===================================================================== */
/* Runs                                                                  */
/* ===================================================================== */

struct run_filter
{
    const char *state;
    bool unfinished_only;
    uint32_t limit;
};

static int decode_run(const struct etcd_kvcopy *kv, struct item *out, void *arg)
{
    const struct run_filter *f = arg;
    int rc = etcd_decode_run(kv->value, kv->value_len, &out->u.r, &out->arena);
    if (rc < 0 || f == NULL)
        return rc;
    const char *s = out->u.r.state;
    if (f->state && strcmp(s, f->state) != 0)
        return 1;
    if (f->unfinished_only && strcmp(s, "queued") != 0 && strcmp(s, "running") != 0)
        return 1;
    return 0;
}

/* Newest first: created_at descending, then id descending. */
static int cmp_run(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    if (a->u.r.created_at != b->u.r.created_at)
        return a->u.r.created_at < b->u.r.created_at ? 1 : -1;
    return -strcmp(a->u.r.id, b->u.r.id);
}

/* With a limit, only the newest `limit` seen so far can still be listed. */
static void prune_runs(struct items *it, void *arg)
{
    const struct run_filter *f = arg;
    if (f->limit == 0 || it->n <= (size_t)f->limit * 2 + PAGE)
        return;
    qsort(it->v, it->n, sizeof(*it->v), cmp_run);
    for (size_t i = f->limit; i < it->n; i++)
        tr_free(it->v[i].arena);
    it->n = f->limit;
}

int etcd_get_run(struct tr_state *base, const char *run_id, tr_state_run_fn cb, void *arg)
{
    char *v = NULL;
    size_t len = 0;
    int rc = get_at(from(base), "runs/", &run_id, 1, &v, &len);
    if (rc < 0)
        return rc;
    struct etcd_kvcopy kv = {.value = v, .value_len = len};
    struct item x = {0};
    rc = decode_run(&kv, &x, NULL);
    tr_free(v);
    if (rc == 0)
        rc = cb(&x.u.r, arg);
    tr_free(x.arena);
    return rc;
}

int etcd_list_runs(struct tr_state *base, const char *state, bool unfinished_only, uint32_t limit,
                   tr_state_run_fn cb, void *arg)
{
    struct tr_state_etcd *st = from(base);
    struct run_filter f = {.state = state, .unfinished_only = unfinished_only, .limit = limit};
    struct tr_buf key;
    tr_buf_init(&key, 0);
    struct items it = {0};
    int rc = etcd_key(st, &key, "runs/", NULL, 0);
    if (rc == 0)
        rc = scan(st, &key, decode_run, &f, &it, prune_runs);
    tr_buf_release(&key);
    if (rc == 0 && it.n > 1)
        qsort(it.v, it.n, sizeof(*it.v), cmp_run);
    size_t n = limit && it.n > limit ? limit : it.n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = cb(&it.v[i].u.r, arg);
    items_release(&it);
    return rc;
}

/* ===================================================================== */
/* Tasks                                                                 */
/* ===================================================================== */

static int decode_task(const struct etcd_kvcopy *kv, struct item *out, void *arg)
{
    return etcd_decode_task(kv->value, kv->value_len, &out->u.t, &out->arena);
}

/* By name (bytes), then index: escaped keys alone do not give this order
 * when a name holds a byte below '/' ("b-x" before "b"). */
static int cmp_task(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    int c = strcmp(a->u.t.name, b->u.t.name);
    if (c != 0)
        return c;
    return a->u.t.index < b->u.t.index ? -1 : a->u.t.index > b->u.t.index;
}

int etcd_list_tasks(struct tr_state *base, const char *run_id, tr_state_task_fn cb, void *arg)
{
    struct tr_state_etcd *st = from(base);
    struct tr_buf key;
    tr_buf_init(&key, 0);
    struct items it = {0};
    const char *comps[] = {run_id, ""};
    int rc = etcd_key(st, &key, "tasks/", comps, 2); /* "tasks/<run>/" */
    if (rc == 0)
        rc = scan(st, &key, decode_task, NULL, &it, NULL);
    tr_buf_release(&key);
    if (rc == 0 && it.n > 1)
        qsort(it.v, it.n, sizeof(*it.v), cmp_task);
    for (size_t i = 0; rc == 0 && i < it.n; i++) {
        struct tr_task_rec *t = &it.v[i].u.t;
        if (t->output_len == 0)
            t->output = NULL; /* a zero-length output reads back as none */
        rc = cb(t, arg);
    }
    items_release(&it);
    return rc;
}

/* ===================================================================== */
/* The feedback loop's rows                                              */
/* ===================================================================== */

int etcd_get_row(struct tr_state *base, int kind, const char *const *comps, size_t n,
                 char **value, size_t *len)
{
    char *v = NULL;
    size_t vlen = 0;
    int rc = get_at(from(base), tr_row_kinds[kind].section, comps, n, &v, &vlen);
    if (rc < 0)
        return rc;
    struct tr_state_row row = {0};
    char *arena = NULL;
    rc = etcd_decode_row(v, vlen, &row, &arena);
    tr_free(v);
    if (rc == 0) {
        *value = tr_strndup(row.value, row.value_len);
        *len = row.value_len;
        rc = *value ? 0 : TR_ENOMEM;
    }
    tr_free(arena);
    return rc;
}

struct row_filter
{
    const char *grp, *sub;
    bool desc;
};

static int decode_row(const struct etcd_kvcopy *kv, struct item *out, void *arg)
{
    const struct row_filter *f = arg;
    int rc = etcd_decode_row(kv->value, kv->value_len, &out->u.row, &out->arena);
    if (rc < 0)
        return rc;
    const struct tr_state_row *r = &out->u.row;
    if ((f->grp && (r->grp == NULL || strcmp(r->grp, f->grp) != 0)) ||
        (f->sub && (r->sub == NULL || strcmp(r->sub, f->sub) != 0)))
        return 1;
    out->key = tr_strndup(kv->key, kv->key_len);
    if (out->key == NULL) {
        tr_free(out->arena);
        return TR_ENOMEM;
    }
    return 0;
}

static int cmp_row_asc(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    if (a->u.row.ord != b->u.row.ord)
        return a->u.row.ord < b->u.row.ord ? -1 : 1;
    return strcmp(a->key, b->key);
}

static int cmp_row_desc(const void *x, const void *y)
{
    return cmp_row_asc(y, x);
}

int etcd_list_rows(struct tr_state *base, int kind, const char *grp, const char *sub,
                   uint32_t limit, tr_state_row_fn cb, void *arg)
{
    struct tr_state_etcd *st = from(base);
    const struct tr_row_kind_info *k = &tr_row_kinds[kind];
    struct row_filter f = {.grp = grp, .sub = sub, .desc = k->desc};
    struct tr_buf key;
    tr_buf_init(&key, 0);
    struct items it = {0};
    /* Where grp leads the key, only its keys are read ("<section><grp>/"). */
    const char *comps[] = {grp, ""};
    int rc = grp && k->grp_is_prefix ? etcd_key(st, &key, k->section, comps, 2)
                                     : etcd_key(st, &key, k->section, NULL, 0);
    if (rc == 0)
        rc = scan(st, &key, decode_row, &f, &it, NULL);
    tr_buf_release(&key);
    if (rc == 0 && it.n > 1)
        qsort(it.v, it.n, sizeof(*it.v), k->desc ? cmp_row_desc : cmp_row_asc);
    size_t n = limit && it.n > limit ? limit : it.n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = cb(it.v[i].u.row.value, it.v[i].u.row.value_len, arg);
    items_release(&it);
    return rc;
}

/* ===================================================================== */
/* Run control: finished runs older than a cutoff                        */
/* ===================================================================== */

struct old_filter
{
    double before;
    uint32_t limit;
};

static int decode_old_run(const struct etcd_kvcopy *kv, struct item *out, void *arg)
{
    const struct old_filter *f = arg;
    int rc = etcd_decode_run(kv->value, kv->value_len, &out->u.r, &out->arena);
    if (rc < 0)
        return rc;
    const struct tr_run_rec *r = &out->u.r;
    bool final = strcmp(r->state, "succeeded") == 0 || strcmp(r->state, "failed") == 0 ||
                 strcmp(r->state, "cancelled") == 0;
    return final && r->created_at < f->before && r->finished_at < f->before ? 0 : 1;
}

/* Oldest first: created_at ascending, then id. */
static int cmp_run_old(const void *x, const void *y)
{
    return cmp_run(y, x);
}

static void prune_old(struct items *it, void *arg)
{
    const struct old_filter *f = arg;
    if (f->limit == 0 || it->n <= (size_t)f->limit * 2 + PAGE)
        return;
    qsort(it->v, it->n, sizeof(*it->v), cmp_run_old);
    for (size_t i = f->limit; i < it->n; i++)
        tr_free(it->v[i].arena);
    it->n = f->limit;
}

int etcd_list_finished(struct tr_state *base, double before, uint32_t limit, tr_state_run_fn cb,
                       void *arg)
{
    struct tr_state_etcd *st = from(base);
    struct old_filter f = {.before = before, .limit = limit};
    struct tr_buf key;
    tr_buf_init(&key, 0);
    struct items it = {0};
    int rc = etcd_key(st, &key, "runs/", NULL, 0);
    if (rc == 0)
        rc = scan(st, &key, decode_old_run, &f, &it, prune_old);
    tr_buf_release(&key);
    if (rc == 0 && it.n > 1)
        qsort(it.v, it.n, sizeof(*it.v), cmp_run_old);
    size_t n = limit && it.n > limit ? limit : it.n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = cb(&it.v[i].u.r, arg);
    items_release(&it);
    return rc;
}
