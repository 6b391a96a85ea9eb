/*
 * pg_int.h - what the files of the PostgreSQL index share: the index
 * object, the connection pool and small libpq helpers.
 */
#ifndef TR_PG_INT_H
#define TR_PG_INT_H

#include <libpq-fe.h>

#include "worker/pg_index.h"

struct tr_pg_index
{
    char *conninfo;    /* the URL, handed to libpq only (never logged) */
    char *name;        /* the index name */
    long long num;     /* its number in trellis_indexes */
    char docs[48];     /* "trellis_ix_<num>_docs" */
    char manifest[48]; /* "trellis_ix_<num>_manifest" */
    size_t dim;        /* as last read */
    bool hnsw;         /* pgvector holds the vectors (column emb) */
    /* The exact path's vectors: valid for vec_version of the index. */
    bool vec_valid;
    long long vec_version;
    float *vec_rows; /* vec_n unit vectors of dim floats */
    int64_t *vec_ids; /* their rids, ascending */
    size_t vec_n;
    /* BM25's collection statistics, valid for stats_version. */
    bool stats_valid;
    long long stats_version;
    double n_docs, avgdl;
};

/* A connection for url from the pool (or a new one); NULL with err set. */
PGconn *tr_pg_pool_get(const char *url, struct tr_error *err);

/* Gives c back (kept when healthy and idle, else closed). NULL-safe. */
void tr_pg_pool_put(const char *url, PGconn *c);

/*
 * Sets err from a failed result or connection: code, "cannot <what>: " and
 * the server's message (never the URL). Clears r. Returns code.
 */
int tr_pg_fail(PGconn *c, PGresult *r, struct tr_error *err, int code, const char *what);

/* Runs a command without parameters; 0, or TR_EIO with err set. */
int tr_pg_exec(PGconn *c, const char *sql, struct tr_error *err, const char *what);

/* Rolls back a failed transaction, ignoring the outcome. */
void tr_pg_rollback(PGconn *c);

/* A big-endian int8 of a binary result. */
int64_t tr_pg_int8(const char *p);

/* Drops the exact path's vectors. */
void tr_pg_vec_invalidate(struct tr_pg_index *ix);

#endif
