/*
 * pg_index.h - the retrieval index of worker/text_index.h on PostgreSQL
 * (libpq), so that every worker of a cluster shares one index.
 *
 * Same contract as the SQLite index (the functions mirror tr_text_index_*,
 * and the Lua binding, worker/lua_index.c, calls one or the other): a
 * document is an id (upsert replaces), a text, an optional vector, a source
 * and opaque meta bytes; a manifest of ingested files sits beside it.
 *
 * Layout in the database: a registry table trellis_indexes (one row per
 * index name: its number, dimension, a version bumped by every write, and
 * whether the server has pgvector), and per index trellis_ix_<num>_docs and
 * trellis_ix_<num>_manifest. The text is ranked by BM25 as FTS5 computes
 * it, in SQL over PostgreSQL's text search (a stored tsvector of words split
 * as unicode61 splits them, the 'simple' configuration, a GIN index; see
 * pg_index_search.c); vectors by pgvector's HNSW index (cosine) when
 * `CREATE EXTENSION IF NOT EXISTS vector` succeeds, otherwise exactly: the
 * float32 vectors are loaded once into this process (and again only when
 * the index's version moved) and scored by tr_cosine_topk. Hybrid is the
 * same reciprocal rank fusion as the SQLite index (tr_rrf_fuse).
 *
 * Connections come from a small pool per worker process (per URL, at most
 * TR_PG_POOL_IDLE idle ones kept), taken for one call and given back. The
 * password is the URL's, or libpq's PGPASSWORD / PGPASSFILE; no message of
 * this module holds the URL.
 *
 * Calls block on the network: the worker runs them in its thread pool
 * (worker/offload.h) like the SQLite index's. An index object is used by
 * one thread at a time; the pool is thread-safe.
 */
#ifndef TR_PG_INDEX_H
#define TR_PG_INDEX_H

#include <stdbool.h>

#include "worker/text_index.h"

struct tr_pg_index;

/* Idle connections kept per URL. */
#define TR_PG_POOL_IDLE 4
/* Rows per INSERT statement of an upsert (all in one transaction). */
#define TR_PG_BATCH_ROWS 500
/* Longest index name. */
#define TR_PG_NAME_MAX 200

/* True when s is a PostgreSQL URL (postgres:// or postgresql://). */
bool tr_pg_is_url(const char *s);

/*
 * Opens (creating when missing) the index name in the database of url
 * (a libpq URL; a '#fragment' is not allowed here, the caller strips it).
 * dim as in tr_text_index_open. Returns 0 and *out, or TR_EIO / TR_EINVAL /
 * TR_ENOMEM / TR_EUNAVAIL (cannot connect) with err set.
 */
int tr_pg_index_open(const char *url, const char *name, size_t dim, struct tr_pg_index **out,
                     struct tr_error *err) TR_MUST_CHECK;

/* Frees the object (its connection went back to the pool). NULL-safe. */
void tr_pg_index_free(struct tr_pg_index *ix);

/* The dimension as last read from the database (0: no vector yet). */
size_t tr_pg_index_dim(const struct tr_pg_index *ix);

/* True when vector search goes through pgvector's HNSW index. */
bool tr_pg_index_hnsw(const struct tr_pg_index *ix);

int tr_pg_index_count(struct tr_pg_index *ix, size_t *n) TR_MUST_CHECK;
int tr_pg_index_upsert(struct tr_pg_index *ix, const struct tr_text_doc *docs, size_t n,
                       struct tr_error *err) TR_MUST_CHECK;
int tr_pg_index_delete(struct tr_pg_index *ix, const char *id, size_t id_len,
                       struct tr_error *err) TR_MUST_CHECK;
int tr_pg_index_delete_source(struct tr_pg_index *ix, const char *source, size_t len,
                              struct tr_error *err) TR_MUST_CHECK;
int tr_pg_index_search(struct tr_pg_index *ix, const struct tr_text_query *q,
                       struct tr_text_hits *hits, struct tr_error *err) TR_MUST_CHECK;
int tr_pg_index_manifest_get(struct tr_pg_index *ix, const char *path,
                             struct tr_text_manifest *m) TR_MUST_CHECK;
int tr_pg_index_manifest_put(struct tr_pg_index *ix, const char *path,
                             const struct tr_text_manifest *m) TR_MUST_CHECK;
int tr_pg_index_manifest_del(struct tr_pg_index *ix, const char *path) TR_MUST_CHECK;
int tr_pg_index_manifest_each(struct tr_pg_index *ix, int (*fn)(const char *path, void *arg),
                              void *arg) TR_MUST_CHECK;

/* Closes every idle pooled connection (at exit; tests). */
void tr_pg_pool_drain(void);

#endif
