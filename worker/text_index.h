/*
 * text_index.h - a retrieval index in one SQLite file: BM25 over FTS5,
 * exact cosine top-k over float32 vectors, and reciprocal rank fusion.
 *
 * A document is an id (unique, upsert replaces), a text (indexed by FTS5's
 * unicode61 tokenizer with diacritics removed), an optional vector of the
 * index's dimension, a source (what delete_source removes) and opaque meta
 * bytes that are stored and returned with every hit (the Lua binding keeps
 * msgpack there). The file also holds a manifest of ingested files (path,
 * digest, mtime, size) so that re-ingesting an unchanged folder does no work.
 *
 * Vectors are normalised once, when the index loads them into memory for
 * the first vector search after a change; a search is then one dot product
 * per document and a bounded min-heap of k entries.
 *
 * Calls block on SQLite (a local file) and scan vectors: the worker runs
 * them in its thread pool (worker/lua_index.c). An index is used by one
 * thread at a time.
 */
#ifndef TR_TEXT_INDEX_H
#define TR_TEXT_INDEX_H

#include "lib/base/error.h"

struct tr_text_index;

/* Caps: one document's text and meta, one query, and the largest dimension. */
#define TR_TEXT_INDEX_TEXT_MAX (16u << 20)
#define TR_TEXT_INDEX_DIM_MAX 65536
#define TR_TEXT_INDEX_K_MAX 10000

/* One document to upsert; every pointer is borrowed for the call. */
struct tr_text_doc
{
    const char *id;     /* unique key (any bytes, not empty) */
    size_t id_len;      /* bytes at id */
    const char *text;   /* indexed text (UTF-8) */
    size_t text_len;    /* bytes at text */
    const char *source; /* what the document came from, or NULL */
    size_t source_len;  /* bytes at source */
    const void *meta;   /* opaque bytes returned with hits, or NULL */
    size_t meta_len;    /* bytes at meta */
    const float *vec;   /* dim floats, or NULL for no vector */
    size_t dim;         /* must equal the index's dimension when vec is set */
};

enum tr_text_mode
{
    TR_TEXT_BM25 = 0,
    TR_TEXT_VECTOR = 1,
    TR_TEXT_HYBRID = 2
};

struct tr_text_query
{
    enum tr_text_mode mode; /* which ranking */
    const char *text;       /* for BM25 and hybrid: words, any punctuation is ignored */
    size_t text_len;        /* bytes at text */
    const float *vec;       /* for vector and hybrid: dim floats */
    size_t dim;             /* floats at vec */
    size_t k;     /* hits wanted, 1..TR_TEXT_INDEX_K_MAX */
    double rrf_k; /* hybrid: the constant of 1/(rrf_k + rank); 0 means 60 */
};

/* One hit; every pointer is owned by the hits array. */
struct tr_text_hit
{
    char *id;          /* NUL-terminated copy of the id */
    size_t id_len;     /* its length */
    char *text;        /* NUL-terminated copy of the text */
    size_t text_len;   /* its length */
    char *source;      /* copy of the source, or NULL */
    size_t source_len; /* its length */
    void *meta;        /* copy of the meta bytes, or NULL */
    size_t meta_len;   /* their length */
    double score; /* BM25: -bm25() (higher is better); vector: cosine; hybrid: RRF sum */
};

struct tr_text_hits
{
    struct tr_text_hit *v; /* best first */
    size_t n;              /* hits at v */
};

/*
 * Opens (creating when missing) the index at path. dim is the vector
 * dimension; 0 takes the file's (or means "no vectors yet" for a new file:
 * the first upserted vector fixes it). A dim that differs from the file's
 * fails with TR_EINVAL. Returns 0 and *out, or TR_EIO / TR_EINVAL / TR_ENOMEM
 * with err set.
 */
int tr_text_index_open(const char *path, size_t dim, struct tr_text_index **out,
                       struct tr_error *err) TR_MUST_CHECK;

/* Closes the file and frees everything. NULL-safe. */
void tr_text_index_free(struct tr_text_index *ix);

/* The vector dimension (0 while no vector was stored). */
size_t tr_text_index_dim(const struct tr_text_index *ix);

/* Documents in the index. */
int tr_text_index_count(struct tr_text_index *ix, size_t *n) TR_MUST_CHECK;

/*
 * Inserts or replaces n documents in one transaction: all or none. Returns
 * 0, TR_EINVAL (err names the document: a wrong dimension, a text too long,
 * an empty id), TR_EIO or TR_ENOMEM.
 */
int tr_text_index_upsert(struct tr_text_index *ix, const struct tr_text_doc *docs, size_t n,
                         struct tr_error *err) TR_MUST_CHECK;

/* Deletes the document id. Returns 1 when it existed, 0 when not, or TR_EIO. */
int tr_text_index_delete(struct tr_text_index *ix, const char *id, size_t id_len,
                         struct tr_error *err) TR_MUST_CHECK;

/* Deletes every document of source. Returns how many, or TR_EIO. */
int tr_text_index_delete_source(struct tr_text_index *ix, const char *source, size_t len,
                                struct tr_error *err) TR_MUST_CHECK;

/*
 * Runs q and fills *hits (release with tr_text_hits_release), best first,
 * at most q->k. Equal scores are ordered by insertion (older first). A BM25
 * query with no word matches nothing; while no vector is stored, vector
 * search matches nothing and hybrid is BM25 alone. Returns 0, TR_EINVAL (bad k, missing
 * text or vector, wrong dimension), TR_EIO or TR_ENOMEM.
 */
int tr_text_index_search(struct tr_text_index *ix, const struct tr_text_query *q,
                         struct tr_text_hits *hits, struct tr_error *err) TR_MUST_CHECK;

/* Frees what a search put in hits and empties it. */
void tr_text_hits_release(struct tr_text_hits *hits);

/* One manifest row: what an ingested file looked like. */
struct tr_text_manifest
{
    char digest[65]; /* sha256 hex of the file's bytes */
    int64_t mtime;   /* seconds */
    int64_t size;    /* bytes */
};

/* Looks path up in the manifest: 1 and *m when found, 0 when not, or TR_EIO. */
int tr_text_index_manifest_get(struct tr_text_index *ix, const char *path,
                               struct tr_text_manifest *m) TR_MUST_CHECK;

/* Records (replacing) path's row. 0 or TR_EIO. */
int tr_text_index_manifest_put(struct tr_text_index *ix, const char *path,
                               const struct tr_text_manifest *m) TR_MUST_CHECK;

/* Removes path's row: 1 when it existed, 0 when not, or TR_EIO. */
int tr_text_index_manifest_del(struct tr_text_index *ix, const char *path) TR_MUST_CHECK;

/*
 * Calls fn(path, arg) for each manifest path in byte order; stops early
 * when fn returns non-zero and returns that value. Otherwise 0 or TR_EIO.
 * fn must not modify the index.
 */
int tr_text_index_manifest_each(struct tr_text_index *ix, int (*fn)(const char *path, void *arg),
                                void *arg) TR_MUST_CHECK;

/* ---------------------------------------------------------------------- */
/* The ranking kernels, usable on their own                               */
/* ---------------------------------------------------------------------- */

/*
 * Exact top-k by cosine similarity: rows holds n unit vectors of dim floats
 * (row-major), q a unit query. Writes at most k row numbers and their
 * scores to idx/score, best first (ties: lower row first), and returns how
 * many. Rows of zeros score 0.
 */
size_t tr_cosine_topk(const float *rows, size_t n, size_t dim, const float *q, size_t k,
                      size_t *idx, double *score);

/* Scales v to unit length in place (a zero vector stays zero). */
void tr_vec_normalize(float *v, size_t dim);

/* One fused item: a key (document rowid) and its RRF score. */
struct tr_rrf_item
{
    int64_t key;  /* the key given in the lists */
    double score; /* its fused score */
};

/*
 * Reciprocal rank fusion of nlists ranked key lists (best first): each key
 * scores the sum over the lists holding it of 1 / (k + rank), rank from 1.
 * Writes the distinct keys to *out (tr_free it), best first, ties by the
 * best rank they reached and then by key; *n is their count. Returns 0 or
 * TR_ENOMEM.
 */
int tr_rrf_fuse(const int64_t *const *lists, const size_t *lens, size_t nlists, double k,
                struct tr_rrf_item **out, size_t *n) TR_MUST_CHECK;

#endif
