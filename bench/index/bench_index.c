/*
 * trellis-bench-index: ingestion and query throughput of the retrieval
 * index on its two backends, SQLite (worker/text_index.h) and PostgreSQL
 * (worker/pg_index.h), through the C functions the worker's trellis.index
 * calls in its thread pool (no Lua, no scheduler: the backends alone).
 *
 * A repeat: a fresh index; --docs synthetic documents (--words words each,
 * drawn from a skewed vocabulary, as chunks of prose are) with a random
 * vector of --dim floats, upserted in batches of --batch; then --queries
 * queries of three words (and a random vector) in each mode, bm25, vector
 * and hybrid, k = 10, one at a time. Output: one line per backend and
 * repeat, then "# median" lines. bench/index.sh starts a PostgreSQL of its
 * own and runs this; docs/performance.md has the figures.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "worker/pg_index.h"
#include "worker/text_index.h"

struct opts
{
    size_t docs, words, batch, queries, dim, repeat;
    const char *url; /* NULL: SQLite only */
    const char *dir;
};

struct fig
{
    double ingest, bm25, vector, hybrid; /* per second */
};

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double uniform(void)
{
    return (double)(next() >> 11) / 9007199254740992.0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A word of the vocabulary: rank r (skewed: small ranks are frequent). */
static int word(char *out, size_t cap)
{
    size_t r = (size_t)(5000 * pow(uniform(), 3));
    return snprintf(out, cap, "w%zx", r * 2654435761u % 1000003u);
}

static void text(char *out, size_t cap, size_t words)
{
    size_t n = 0;
    for (size_t i = 0; i < words && n + 16 < cap; i++) {
        if (i)
            out[n++] = ' ';
        n += (size_t)word(out + n, cap - n);
    }
    out[n] = '\0';
}

static void vector(float *v, size_t dim)
{
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)(uniform() * 2 - 1);
}

/* The backend under test, one of the two. */
struct backend
{
    struct tr_text_index *sq;
    struct tr_pg_index *pg;
};

static int upsert(struct backend *b, const struct tr_text_doc *d, size_t n, struct tr_error *err)
{
    return b->pg ? tr_pg_index_upsert(b->pg, d, n, err) : tr_text_index_upsert(b->sq, d, n, err);
}

static int search(struct backend *b, const struct tr_text_query *q, struct tr_text_hits *h,
                  struct tr_error *err)
{
    return b->pg ? tr_pg_index_search(b->pg, q, h, err) : tr_text_index_search(b->sq, q, h, err);
}

static int run_one(const struct opts *o, struct backend *b, struct fig *f)
{
    struct tr_error err;
    tr_error_init(&err);
    size_t tcap = o->words * 12 + 16;
    struct tr_text_doc *docs = tr_calloc(o->batch, sizeof(*docs));
    char *texts = tr_malloc(o->batch * tcap);
    char *ids = tr_malloc(o->batch * 24);
    float *vecs = tr_malloc(o->batch * o->dim * sizeof(float));
    if (!docs || !texts || !ids || !vecs)
        return -1;
    double t0 = now();
    for (size_t done = 0; done < o->docs;) {
        size_t n = o->docs - done < o->batch ? o->docs - done : o->batch;
        for (size_t i = 0; i < n; i++) {
            struct tr_text_doc *d = &docs[i];
            char *id = ids + i * 24;
            d->id = id;
            d->id_len = (size_t)snprintf(id, 24, "d%zu", done + i);
            d->text = texts + i * tcap;
            text(texts + i * tcap, tcap, o->words);
            d->text_len = strlen(d->text);
            d->source = id;
            d->source_len = d->id_len;
            d->vec = vecs + i * o->dim;
            vector(vecs + i * o->dim, o->dim);
            d->dim = o->dim;
        }
        if (upsert(b, docs, n, &err) < 0) {
            fprintf(stderr, "upsert: %s\n", err.msg);
            return -1;
        }
        done += n;
    }
    f->ingest = (double)o->docs / (now() - t0);
    const enum tr_text_mode modes[] = {TR_TEXT_BM25, TR_TEXT_VECTOR, TR_TEXT_HYBRID};
    double *out[] = {&f->bm25, &f->vector, &f->hybrid};
    char qt[64];
    float *qv = vecs;
    for (size_t m = 0; m < 3; m++) {
        /* One query first, untimed: the exact path loads its vectors once. */
        for (size_t i = 0; i <= o->queries; i++) {
            if (i == 1)
                t0 = now();
            text(qt, sizeof(qt), 3);
            vector(qv, o->dim);
            struct tr_text_query q = {.mode = modes[m], .text = qt, .text_len = strlen(qt),
                                      .vec = qv, .dim = o->dim, .k = 10};
            struct tr_text_hits h;
            if (search(b, &q, &h, &err) < 0) {
                fprintf(stderr, "search: %s\n", err.msg);
                return -1;
            }
            tr_text_hits_release(&h);
        }
        *out[m] = (double)o->queries / (now() - t0);
    }
    tr_free(docs);
    tr_free(texts);
    tr_free(ids);
    tr_free(vecs);
    return 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print(const char *name, const struct opts *o, const char *tag, const struct fig *f)
{
    printf("%sindex %s docs=%zu dim=%zu batch=%zu ingest_docs_per_s=%.0f bm25_q_per_s=%.0f "
           "vector_q_per_s=%.0f hybrid_q_per_s=%.0f\n",
           tag, name, o->docs, o->dim, o->batch, f->ingest, f->bm25, f->vector, f->hybrid);
}

static int bench(const struct opts *o, bool pg)
{
    const char *name = pg ? "postgres" : "sqlite";
    struct fig *figs = tr_calloc(o->repeat, sizeof(*figs));
    for (size_t r = 0; r < o->repeat; r++) {
        struct backend b = {0};
        struct tr_error err;
        tr_error_init(&err);
        char path[512];
        int rc;
        if (pg) {
            snprintf(path, sizeof(path), "bench-%ld-%zu", (long)getpid(), r);
            rc = tr_pg_index_open(o->url, path, o->dim, &b.pg, &err);
        } else {
            snprintf(path, sizeof(path), "%s/bench-%zu.db", o->dir, r);
            rc = tr_text_index_open(path, o->dim, &b.sq, &err);
        }
        if (rc < 0) {
            fprintf(stderr, "open %s: %s\n", name, err.msg);
            return 1;
        }
        rc = run_one(o, &b, &figs[r]);
        tr_text_index_free(b.sq);
        tr_pg_index_free(b.pg);
        if (!pg)
            unlink(path);
        if (rc < 0)
            return 1;
        print(name, o, "", &figs[r]);
        fflush(stdout);
    }
    double v[4][64];
    size_t n = o->repeat < 64 ? o->repeat : 64;
    for (size_t r = 0; r < n; r++) {
        v[0][r] = figs[r].ingest;
        v[1][r] = figs[r].bm25;
        v[2][r] = figs[r].vector;
        v[3][r] = figs[r].hybrid;
    }
    struct fig m = {median(v[0], n), median(v[1], n), median(v[2], n), median(v[3], n)};
    char tag[32];
    snprintf(tag, sizeof(tag), "# median of=%zu ", n);
    print(name, o, tag, &m);
    tr_free(figs);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.docs = 20000, .words = 120, .batch = 500, .queries = 300, .dim = 64,
                     .repeat = 3, .dir = "/tmp"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t *num = strcmp(a, "--docs") == 0      ? &o.docs
                      : strcmp(a, "--words") == 0   ? &o.words
                      : strcmp(a, "--batch") == 0   ? &o.batch
                      : strcmp(a, "--queries") == 0 ? &o.queries
                      : strcmp(a, "--dim") == 0     ? &o.dim
                      : strcmp(a, "--repeat") == 0  ? &o.repeat
                                                    : NULL;
        if (num != NULL && v != NULL) {
            *num = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--url") == 0 && v != NULL) {
            o.url = v;
            i++;
        } else if (strcmp(a, "--dir") == 0 && v != NULL) {
            o.dir = v;
            i++;
        } else {
            fprintf(stderr, "usage: trellis-bench-index [--url postgres://...] [--dir DIR] "
                            "[--docs N] [--words N] [--batch N] [--queries N] [--dim N] "
                            "[--repeat R]\n");
            return 2;
        }
    }
    if (o.docs == 0 || o.batch == 0 || o.dim == 0 || o.repeat == 0 || o.queries == 0 ||
        o.repeat > 64) {
        fprintf(stderr, "trellis-bench-index: sizes must be positive, --repeat at most 64\n");
        return 2;
    }
    printf("# trellis-bench-index docs=%zu words=%zu batch=%zu queries=%zu dim=%zu repeat=%zu\n",
           o.docs, o.words, o.batch, o.queries, o.dim, o.repeat);
    int rc = bench(&o, false);
    if (rc == 0 && o.url != NULL)
        rc = bench(&o, true);
    tr_pg_pool_drain();
    return rc;
}
