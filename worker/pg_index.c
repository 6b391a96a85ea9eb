/*
 * pg_index.c - the PostgreSQL index (pg_index.h): the tables, opening,
 * writes and the manifest. Search is in pg_index_search.c.
 *
 * Invariants: a document's rid never changes while it exists (an upsert of
 * an existing id updates the row in place), so "older first" tie-breaks are
 * rid order, as the SQLite index's rowid order. Every write bumps the
 * index's version in the same transaction (or statement), which is what
 * tells every worker's exact-path vector copy that it is stale. Creating
 * the tables takes a transaction-scoped advisory lock, so that two workers
 * opening a new index at once do not race on CREATE ... IF NOT EXISTS.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "worker/pg_int.h"

/* Any constant: the key of the advisory lock around creating tables. */
#define SCHEMA_LOCK "7330211"
/* pgvector's HNSW index takes vectors of at most this many dimensions. */
#define HNSW_DIM_MAX 2000

static const char registry_sql[] =
    "CREATE TABLE IF NOT EXISTS trellis_indexes(num bigserial PRIMARY KEY,"
    " name text NOT NULL UNIQUE, dim integer NOT NULL DEFAULT 0,"
    " version bigint NOT NULL DEFAULT 0, vector_ext boolean NOT NULL DEFAULT false)";

/*
 * trellis_tsv: a text's lexemes, split as SQLite's unicode61 tokenizer
 * splits (any character that is not a letter or a digit separates, so
 * "rrf_k" and "docs/rag.md" are several words, as they are for FTS5), then
 * PostgreSQL's 'simple' configuration (lower case, no stemming, no stop
 * words). trellis_ntok: a document's length in tokens, BM25's |D| (what
 * FTS5 counts): the positions of every lexeme.
 */
static const char funcs_sql[] =
    "CREATE OR REPLACE FUNCTION trellis_tsv(text) RETURNS tsvector LANGUAGE sql IMMUTABLE"
    " PARALLEL SAFE AS $$ SELECT to_tsvector('simple',"
    " regexp_replace($1, '[^[:alnum:]]+', ' ', 'g')) $$;"
    "CREATE OR REPLACE FUNCTION trellis_ntok(tsvector) RETURNS integer LANGUAGE sql IMMUTABLE"
    " PARALLEL SAFE AS $$ SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)::integer"
    " FROM unnest($1) $$";

/* ====================================================================== */
/* Opening                                                                */
/* ====================================================================== */

static void set_tables(struct tr_pg_index *ix, long long num)
{
    ix->num = num;
    snprintf(ix->docs, sizeof(ix->docs), "trellis_ix_%lld_docs", num);
    snprintf(ix->manifest, sizeof(ix->manifest), "trellis_ix_%lld_manifest", num);
}

/* Reads the registry row: 1 when found, 0 when not (or no registry yet), or < 0. */
static int lookup(struct tr_pg_index *ix, PGconn *c, struct tr_error *err)
{
    const char *v[1] = {ix->name};
    PGresult *r = PQexecParams(c,
                               "SELECT num, dim, vector_ext FROM trellis_indexes WHERE name = $1",
                               1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, "42P01") == 0) { /* undefined_table */
            PQclear(r);
            return 0;
        }
        return tr_pg_fail(c, r, err, TR_EIO, "read the index registry");
    }
    int found = PQntuples(r) == 1;
    if (found) {
        set_tables(ix, strtoll(PQgetvalue(r, 0, 0), NULL, 10));
        ix->dim = (size_t)strtoull(PQgetvalue(r, 0, 1), NULL, 10);
        ix->hnsw = PQgetvalue(r, 0, 2)[0] == 't' && ix->dim > 0;
    }
    PQclear(r);
    return found;
}

/* True when the server can and will create pgvector's extension (in a savepoint). */
static bool try_vector(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'");
    bool avail = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!avail)
        return false;
    PQclear(PQexec(c, "SAVEPOINT trellis_vec"));
    r = PQexec(c, "CREATE EXTENSION IF NOT EXISTS vector");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQclear(PQexec(c, ok ? "RELEASE SAVEPOINT trellis_vec" : "ROLLBACK TO SAVEPOINT trellis_vec"));
    return ok;
}

/* Creates the registry, the row and the tables of ix->name (one transaction). */
static int create(struct tr_pg_index *ix, PGconn *c, struct tr_error *err)
{
    int rc = tr_pg_exec(c, "BEGIN", err, "begin a transaction");
    if (rc == 0)
        rc = tr_pg_exec(c, "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ")", err,
                        "lock the index registry");
    if (rc == 0)
        rc = tr_pg_exec(c, registry_sql, err, "create the index registry");
    if (rc == 0)
        rc = tr_pg_exec(c, funcs_sql, err, "create the text functions");
    if (rc < 0)
        goto out_rollback;
    bool vec = try_vector(c);
    const char *v[2] = {ix->name, vec ? "t" : "f"};
    PGresult *r = PQexecParams(c, "INSERT INTO trellis_indexes(name, vector_ext) VALUES ($1, $2) "
                               "ON CONFLICT (name) DO NOTHING", 2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = tr_pg_fail(c, r, err, TR_EIO, "register the index");
        goto out_rollback;
    }
    PQclear(r);
    rc = lookup(ix, c, err);
    if (rc == 0)
        rc = tr_error_set(err, TR_EIO, "cannot register the index '%s'", ix->name);
    if (rc < 0)
        goto out_rollback;
    char sql[1200];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS %s(rid bigserial PRIMARY KEY, id text NOT NULL UNIQUE,"
             " source text, meta bytea, body text NOT NULL, vec bytea,"
             " tsv tsvector GENERATED ALWAYS AS (trellis_tsv(body)) STORED,"
             " ntok integer GENERATED ALWAYS AS (trellis_ntok(trellis_tsv(body))) STORED);"
             "CREATE INDEX IF NOT EXISTS %s_tsv ON %s USING gin(tsv);"
             "CREATE INDEX IF NOT EXISTS %s_src ON %s(source);"
             "CREATE TABLE IF NOT EXISTS %s(path text PRIMARY KEY, digest text NOT NULL,"
             " mtime bigint NOT NULL, size bigint NOT NULL)",
             ix->docs, ix->docs, ix->docs, ix->docs, ix->docs, ix->manifest);
    rc = tr_pg_exec(c, sql, err, "create the index tables");
    if (rc == 0)
        rc = tr_pg_exec(c, "COMMIT", err, "commit");
    if (rc == 0)
        return 0;

out_rollback:
    tr_pg_rollback(c);
    return rc;
}

/*
 * Fixes the dimension of the index at dim, inside the caller's transaction
 * that holds the registry row locked; with pgvector, adds the emb column
 * and its HNSW index (or gives pgvector up above its dimension limit).
 */
static int fix_dim(struct tr_pg_index *ix, PGconn *c, size_t dim, bool vector_ext,
                   struct tr_error *err)
{
    char sql[512];
    bool hnsw = vector_ext && dim <= HNSW_DIM_MAX;
    snprintf(sql, sizeof(sql),
             "UPDATE trellis_indexes SET dim = %zu, vector_ext = %s WHERE num = %lld",
             dim, hnsw ? "true" : "false", ix->num);
    int rc = tr_pg_exec(c, sql, err, "store the index dimension");
    if (rc == 0 && hnsw) {
        snprintf(sql, sizeof(sql),
                 "ALTER TABLE %s ADD COLUMN IF NOT EXISTS emb vector(%zu);"
                 "CREATE INDEX IF NOT EXISTS %s_emb ON %s USING hnsw (emb vector_cosine_ops)",
                 ix->docs, dim, ix->docs, ix->docs);
        rc = tr_pg_exec(c, sql, err, "create the vector index");
    }
    return rc;
}

/* Locks the registry row and bumps the version (in a transaction): reads dim and pgvector. */
static int lock_row(struct tr_pg_index *ix, PGconn *c, size_t *dim, bool *vector_ext,
                    struct tr_error *err)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "UPDATE trellis_indexes SET version = version + 1 "
             "WHERE num = %lld RETURNING dim, vector_ext", ix->num);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "lock the index");
    if (PQntuples(r) != 1) {
        PQclear(r);
        return tr_error_set(err, TR_EIO, "the index '%s' was dropped", ix->name);
    }
    *dim = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    *vector_ext = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    return 0;
}

/* Sets the dimension of a fresh index (dim given at open). */
static int open_dim(struct tr_pg_index *ix, PGconn *c, size_t dim, struct tr_error *err)
{
    size_t cur;
    bool ext;
    int rc = tr_pg_exec(c, "BEGIN", err, "begin a transaction");
    if (rc == 0)
        rc = lock_row(ix, c, &cur, &ext, err);
    if (rc == 0 && cur != 0 && cur != dim)
        rc = tr_error_set(err, TR_EINVAL, "index '%s' has dimension %zu, not %zu", ix->name, cur,
                          dim);
    if (rc == 0 && cur == 0)
        rc = fix_dim(ix, c, dim, ext, err);
    if (rc == 0)
        rc = tr_pg_exec(c, "COMMIT", err, "commit");
    if (rc < 0) {
        tr_pg_rollback(c);
        return rc;
    }
    ix->dim = dim;
    ix->hnsw = ext && dim <= HNSW_DIM_MAX;
    return 0;
}

int tr_pg_index_open(const char *url, const char *name, size_t dim, struct tr_pg_index **out,
                     struct tr_error *err)
{
    *out = NULL;
    if (dim > TR_TEXT_INDEX_DIM_MAX)
        return tr_error_set(err, TR_EINVAL, "dimension %zu is above the limit of %d", dim,
                            TR_TEXT_INDEX_DIM_MAX);
    size_t nl = strlen(name);
    if (nl == 0 || nl > TR_PG_NAME_MAX)
        return tr_error_set(err, TR_EINVAL, "an index name needs 1 to %d bytes", TR_PG_NAME_MAX);
    struct tr_pg_index *ix = tr_calloc(1, sizeof(*ix));
    if (ix == NULL || (ix->conninfo = tr_strdup(url)) == NULL ||
        (ix->name = tr_strdup(name)) == NULL) {
        tr_pg_index_free(ix);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    PGconn *c = tr_pg_pool_get(url, err);
    if (c == NULL) {
        tr_pg_index_free(ix);
        return err->code;
    }
    int rc = lookup(ix, c, err);
    if (rc == 0)
        rc = create(ix, c, err);
    else if (rc > 0)
        rc = 0;
    if (rc == 0 && dim != 0 && ix->dim != dim) {
        if (ix->dim != 0)
            rc = tr_error_set(err, TR_EINVAL, "index '%s' has dimension %zu, not %zu", name,
                              ix->dim, dim);
        else
            rc = open_dim(ix, c, dim, err);
    }
    tr_pg_pool_put(url, c);
    if (rc < 0) {
        tr_pg_index_free(ix);
        return rc;
    }
    *out = ix;
    return 0;
}

void tr_pg_index_free(struct tr_pg_index *ix)
{
    if (ix == NULL)
        return;
    tr_pg_vec_invalidate(ix);
    tr_free(ix->conninfo);
    tr_free(ix->name);
    tr_free(ix);
}

size_t tr_pg_index_dim(const struct tr_pg_index *ix)
{
    return ix->dim;
}

bool tr_pg_index_hnsw(const struct tr_pg_index *ix)
{
    return ix->hnsw;
}

/* A statement naming one table, printed into the caller's char sqlbuf[]. */
#define SQLF(fmt, table) (snprintf(sqlbuf, sizeof(sqlbuf), fmt, table), sqlbuf)

/* ====================================================================== */
/* Simple statements                                                      */
/* ====================================================================== */

/*
 * Runs sql with up
 * to 4 text parameters, and hands the tuples result to *out (or clears it).
 * 0 or TR_EIO / TR_EUNAVAIL with err set.
 */
static int query(struct tr_pg_index *ix, const char *sql, int n, const char *const *vals,
                 const int *lens, PGresult **out, struct tr_error *err, const char *what)
{
    PGconn *c = tr_pg_pool_get(ix->conninfo, err);
    if (c == NULL)
        return err->code;
    int fmts[4] = {0, 0, 0, 0};
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, 0);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        rc = tr_pg_fail(c, r, err, TR_EIO, what);
    else if (out != NULL)
        *out = r;
    else
        PQclear(r);
    tr_pg_pool_put(ix->conninfo, c);
    return rc;
}

int tr_pg_index_count(struct tr_pg_index *ix, size_t *n)
{
    char sqlbuf[320];
    struct tr_error err;
    tr_error_init(&err);
    PGresult *r = NULL;
    int rc = query(ix, SQLF("SELECT count(*) FROM %s", ix->docs), 0, NULL, NULL, &r, &err,
                   "count documents");
    if (rc < 0)
        return rc;
    *n = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

/* Deletes by id or source with the version bump; returns the rows deleted. */
static int delete_where(struct tr_pg_index *ix, const char *col, const char *key, size_t len,
                        struct tr_error *err)
{
    if (memchr(key, '\0', len) != NULL)
        return 0; /* no stored id or source holds a NUL */
    char fmt[256];
    snprintf(fmt, sizeof(fmt),
             "WITH d AS (DELETE FROM %s WHERE %s = $1 RETURNING 1), "
             "v AS (UPDATE trellis_indexes SET version = version + 1 WHERE num = %lld) "
             "SELECT count(*) FROM d", ix->docs, col, ix->num);
    char *k = tr_strndup(key, len);
    if (k == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    const char *v[1] = {k};
    PGresult *r = NULL;
    int rc = query(ix, fmt, 1, v, NULL, &r, err, "delete");
    tr_free(k);
    if (rc < 0)
        return rc;
    rc = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

int tr_pg_index_delete(struct tr_pg_index *ix, const char *id, size_t id_len,
                       struct tr_error *err)
{
    int rc = delete_where(ix, "id", id, id_len, err);
    return rc > 0 ? 1 : rc;
}

int tr_pg_index_delete_source(struct tr_pg_index *ix, const char *source, size_t len,
                              struct tr_error *err)
{
    return delete_where(ix, "source", source, len, err);
}

/* ====================================================================== */
/* Manifest                                                               */
/* ====================================================================== */

int tr_pg_index_manifest_get(struct tr_pg_index *ix, const char *path, struct tr_text_manifest *m)
{
    char sqlbuf[320];
    struct tr_error err;
    tr_error_init(&err);
    const char *v[1] = {path};
    PGresult *r = NULL;
    int rc = query(ix, SQLF("SELECT digest, mtime, size FROM %s WHERE path = $1", ix->manifest),
                   1, v, NULL, &r,
                   &err, "read the manifest");
    if (rc < 0)
        return rc;
    rc = PQntuples(r) == 1;
    if (rc) {
        snprintf(m->digest, sizeof(m->digest), "%s", PQgetvalue(r, 0, 0));
        m->mtime = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        m->size = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    return rc;
}

int tr_pg_index_manifest_put(struct tr_pg_index *ix, const char *path,
                             const struct tr_text_manifest *m)
{
    char sqlbuf[320];
    struct tr_error err;
    tr_error_init(&err);
    char mt[24], sz[24];
    snprintf(mt, sizeof(mt), "%" PRId64, m->mtime);
    snprintf(sz, sizeof(sz), "%" PRId64, m->size);
    const char *v[4] = {path, m->digest, mt, sz};
    return query(ix, SQLF("INSERT INTO %s(path, digest, mtime, size) VALUES ($1, $2, $3, $4) "
                 "ON CONFLICT (path) DO UPDATE SET digest = EXCLUDED.digest, "
                 "mtime = EXCLUDED.mtime, size = EXCLUDED.size", ix->manifest),
                 4, v, NULL, NULL, &err, "write the manifest");
}

int tr_pg_index_manifest_del(struct tr_pg_index *ix, const char *path)
{
    char sqlbuf[320];
    struct tr_error err;
    tr_error_init(&err);
    const char *v[1] = {path};
    PGresult *r = NULL;
    int rc = query(ix, SQLF("DELETE FROM %s WHERE path = $1", ix->manifest), 1, v, NULL, &r, &err,
                   "write the manifest");
    if (rc < 0)
        return rc;
    rc = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return rc;
}

int tr_pg_index_manifest_each(struct tr_pg_index *ix, int (*fn)(const char *path, void *arg),
                              void *arg)
{
    char sqlbuf[320];
    struct tr_error err;
    tr_error_init(&err);
    PGresult *r = NULL;
    int rc = query(ix, SQLF("SELECT path FROM %s ORDER BY path COLLATE \"C\"", ix->manifest),
                   0, NULL, NULL, &r,
                   &err, "read the manifest");
    if (rc < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++)
        rc = fn(PQgetvalue(r, i, 0), arg);
    PQclear(r);
    return rc;
}

/* ====================================================================== */
/* Upsert                                                                 */
/* ====================================================================== */

/* Checks every document first (as the SQLite index does); *dim gets the batch's. */
static int check_docs(const struct tr_pg_index *ix, const struct tr_text_doc *docs, size_t n,
                      size_t *dim, struct tr_error *err)
{
    *dim = 0;
    for (size_t i = 0; i < n; i++) {
        const struct tr_text_doc *d = &docs[i];
        if (d->id == NULL || d->id_len == 0)
            return tr_error_set(err, TR_EINVAL, "document %zu has an empty id", i + 1);
        if (d->text == NULL || d->text_len > TR_TEXT_INDEX_TEXT_MAX)
            return tr_error_set(err, TR_EINVAL, "document %zu has no text or one above %u bytes",
                                i + 1, TR_TEXT_INDEX_TEXT_MAX);
        if (d->meta_len > TR_TEXT_INDEX_TEXT_MAX)
            return tr_error_set(err, TR_EINVAL, "document %zu has meta above %u bytes", i + 1,
                                TR_TEXT_INDEX_TEXT_MAX);
        /* PostgreSQL's text holds no NUL byte. */
        if (memchr(d->id, '\0', d->id_len) || memchr(d->text, '\0', d->text_len) ||
            (d->source && memchr(d->source, '\0', d->source_len)))
            return tr_error_set(err, TR_EINVAL,
                                "document %zu has a NUL byte in its id, text or source", i + 1);
        if (d->vec == NULL)
            continue;
        if (d->dim == 0 || d->dim > TR_TEXT_INDEX_DIM_MAX)
            return tr_error_set(err, TR_EINVAL, "document %zu has a vector of dimension %zu",
                                i + 1, d->dim);
        size_t want = *dim ? *dim : ix->dim;
        if (want != 0 && d->dim != want)
            return tr_error_set(err, TR_EINVAL,
                                "document %zu has a vector of dimension %zu, the index %zu",
                                i + 1, d->dim, want);
        *dim = d->dim;
    }
    return 0;
}

/* pgvector's text form of v: "[1,2,3]". */
static int vector_text(struct tr_buf *b, const float *v, size_t dim)
{
    int rc = tr_buf_addch(b, '[');
    for (size_t i = 0; i < dim && rc == 0; i++)
        rc = tr_buf_addf(b, i ? ",%.9g" : "%.9g", (double)v[i]);
    if (rc == 0)
        rc = tr_buf_add(b, "]", 2); /* with its NUL */
    return rc;
}

/* One INSERT ... ON CONFLICT of docs[0..n) (distinct ids). */
static int insert_rows(struct tr_pg_index *ix, PGconn *c, const struct tr_text_doc *docs,
                       size_t n, struct tr_error *err)
{
    const int per = ix->hnsw ? 6 : 5;
    struct tr_buf sql, emb;
    tr_buf_init(&sql, 0);
    tr_buf_init(&emb, 0);
    const char **vals = tr_calloc(n * (size_t)per, sizeof(*vals));
    int *lens = tr_calloc(n * (size_t)per, sizeof(*lens));
    int *fmts = tr_calloc(n * (size_t)per, sizeof(*fmts));
    char **texts = tr_calloc(n * 3, sizeof(*texts)); /* NUL-terminated id, source, body */
    size_t *emb_off = tr_calloc(n, sizeof(*emb_off));
    int rc = vals && lens && fmts && texts && emb_off ? 0 : TR_ENOMEM;
    if (rc == 0)
        rc = tr_buf_addf(&sql, "INSERT INTO %s(id, source, meta, body, vec%s) VALUES ", ix->docs,
                         ix->hnsw ? ", emb" : "");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tr_text_doc *d = &docs[i];
        int p = (int)i * per;
        rc = tr_buf_addf(&sql, "%s($%d, $%d, $%d, $%d, $%d", i ? ", " : "", p + 1, p + 2, p + 3,
                         p + 4, p + 5);
        if (rc == 0)
            rc = tr_buf_addstr(&sql, ix->hnsw ? "" : ")");
        if (rc == 0 && ix->hnsw)
            rc = tr_buf_addf(&sql, ", $%d::vector)", p + 6);
        texts[i * 3] = tr_strndup(d->id, d->id_len);
        texts[i * 3 + 1] = d->source ? tr_strndup(d->source, d->source_len) : NULL;
        texts[i * 3 + 2] = tr_strndup(d->text, d->text_len);
        if (rc == 0 && (!texts[i * 3] || !texts[i * 3 + 2] || (d->source && !texts[i * 3 + 1])))
            rc = TR_ENOMEM;
        vals[p] = texts[i * 3];
        vals[p + 1] = texts[i * 3 + 1];
        vals[p + 2] = d->meta;
        lens[p + 2] = (int)d->meta_len;
        fmts[p + 2] = 1;
        vals[p + 3] = texts[i * 3 + 2];
        vals[p + 4] = (const char *)d->vec;
        lens[p + 4] = d->vec ? (int)(d->dim * sizeof(float)) : 0;
        fmts[p + 4] = 1;
        emb_off[i] = SIZE_MAX;
        if (rc == 0 && ix->hnsw && d->vec) {
            emb_off[i] = emb.len;
            rc = vector_text(&emb, d->vec, d->dim);
        }
    }
    if (rc == 0)
        rc = tr_buf_addstr(&sql, " ON CONFLICT (id) DO UPDATE SET source = EXCLUDED.source, "
                                 "meta = EXCLUDED.meta, body = EXCLUDED.body, vec = EXCLUDED.vec");
    if (rc == 0 && ix->hnsw)
        rc = tr_buf_addstr(&sql, ", emb = EXCLUDED.emb");
    if (rc == 0)
        rc = tr_buf_addch(&sql, '\0');
    if (rc < 0) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out_free;
    }
    for (size_t i = 0; ix->hnsw && i < n; i++)
        vals[i * (size_t)per + 5] = emb_off[i] == SIZE_MAX ? NULL : emb.buf + emb_off[i];
    PGresult *r = PQexecParams(c, sql.buf, (int)n * per, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = tr_pg_fail(c, r, err, TR_EIO, "write documents");
    else
        PQclear(r);

out_free:
    for (size_t i = 0; texts != NULL && i < n * 3; i++)
        tr_free(texts[i]);
    tr_free(texts);
    tr_free(vals);
    tr_free(lens);
    tr_free(fmts);
    tr_free(emb_off);
    tr_buf_release(&sql);
    tr_buf_release(&emb);
    return rc;
}

/*
 * Writes docs in statements of at most TR_PG_BATCH_ROWS rows. A statement
 * ends before an id it already holds (ON CONFLICT may not touch a row
 * twice), so that a later copy of an id replaces the earlier one, in order.
 */
static int insert_batches(struct tr_pg_index *ix, PGconn *c, const struct tr_text_doc *docs,
                          size_t n, struct tr_error *err)
{
    struct tr_hmap seen;
    tr_hmap_init(&seen);
    int rc = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        bool flush = i == n || i - start == TR_PG_BATCH_ROWS ||
                     tr_hmap_get(&seen, docs[i].id, docs[i].id_len) != NULL;
        if (flush && i > start) {
            rc = insert_rows(ix, c, docs + start, i - start, err);
            tr_hmap_release(&seen);
            tr_hmap_init(&seen);
            start = i;
        }
        if (rc == 0 && i < n && tr_hmap_put(&seen, docs[i].id, docs[i].id_len, (void *)1) < 0)
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    tr_hmap_release(&seen);
    return rc;
}

int tr_pg_index_upsert(struct tr_pg_index *ix, const struct tr_text_doc *docs, size_t n,
                       struct tr_error *err)
{
    size_t dim;
    int rc = check_docs(ix, docs, n, &dim, err);
    if (rc < 0 || n == 0)
        return rc;
    PGconn *c = tr_pg_pool_get(ix->conninfo, err);
    if (c == NULL)
        return err->code;
    size_t cur = 0;
    bool ext = false;
    rc = tr_pg_exec(c, "BEGIN", err, "begin a transaction");
    if (rc == 0)
        rc = lock_row(ix, c, &cur, &ext, err);
    if (rc == 0 && dim != 0 && cur != 0 && dim != cur)
        rc = tr_error_set(err, TR_EINVAL, "document 1 has a vector of dimension %zu, the index %zu",
                          dim, cur);
    if (rc == 0 && dim != 0 && cur == 0) {
        rc = fix_dim(ix, c, dim, ext, err);
        cur = dim;
        ext = ext && dim <= HNSW_DIM_MAX;
    }
    if (rc == 0) {
        ix->dim = cur;
        ix->hnsw = ext && cur > 0;
        rc = insert_batches(ix, c, docs, n, err);
    }
    if (rc == 0)
        rc = tr_pg_exec(c, "COMMIT", err, "commit");
    if (rc < 0)
        tr_pg_rollback(c);
    tr_pg_pool_put(ix->conninfo, c);
    tr_pg_vec_invalidate(ix);
    return rc;
}
