/*
 * text_index.c - the retrieval index: documents in SQLite (a plain table for
 * ids, sources, meta and vectors, an FTS5 table for the text, sharing the
 * rowid), the manifest of ingested files, and the ranking kernels.
 *
 * Invariants: a document's rowid never changes while it exists (an upsert of
 * an existing id updates in place), so "older first" tie-breaks are rowid
 * order. The in-memory matrix of unit vectors mirrors the file whenever
 * `vec_valid` is set; every write clears it, and the next vector search
 * reloads. One thread.
 */
#include "worker/text_index.h"

#include <math.h>
#include <sqlite3.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"

/* Candidates each ranker contributes to a hybrid fusion, before the top k. */
#define HYBRID_DEPTH_MIN 50
/* Words of a BM25 query kept (a longer query is cut: FTS5 cost grows with it). */
#define QUERY_WORDS_MAX 64
#define RRF_K_DEFAULT 60.0

enum stmt_id
{
    S_FIND,
    S_INS_DOC,
    S_UPD_DOC,
    S_DEL_FTS,
    S_INS_FTS,
    S_DEL_DOC,
    S_GET_HIT,
    S_BM25,
    S_VECS,
    S_MAN_GET,
    S_MAN_PUT,
    S_MAN_DEL,
    S_MAN_EACH,
    S_DEL_SRC_FTS,
    S_DEL_SRC,
    S_SET_DIM,
    S_COUNT,
    S__N
};

static const char *const stmt_sql[S__N] = {
    [S_FIND] = "SELECT rowid FROM docs WHERE id = ?1",
    [S_INS_DOC] = "INSERT INTO docs(id, source, meta, vec) VALUES (?1, ?2, ?3, ?4)",
    [S_UPD_DOC] = "UPDATE docs SET source = ?2, meta = ?3, vec = ?4 WHERE rowid = ?1",
    [S_DEL_FTS] = "DELETE FROM docs_fts WHERE rowid = ?1",
    [S_INS_FTS] = "INSERT INTO docs_fts(rowid, text) VALUES (?1, ?2)",
    [S_DEL_DOC] = "DELETE FROM docs WHERE rowid = ?1",
    [S_GET_HIT] = "SELECT d.id, d.source, d.meta, f.text FROM docs d, docs_fts f "
                  "WHERE d.rowid = ?1 AND f.rowid = ?1",
    [S_BM25] = "SELECT rowid, bm25(docs_fts) AS s FROM docs_fts WHERE docs_fts MATCH ?1 "
               "ORDER BY s, rowid LIMIT ?2",
    [S_VECS] = "SELECT rowid, vec FROM docs WHERE vec IS NOT NULL ORDER BY rowid",
    [S_MAN_GET] = "SELECT digest, mtime, size FROM manifest WHERE path = ?1",
    [S_MAN_PUT] = "INSERT OR REPLACE INTO manifest(path, digest, mtime, size) "
                  "VALUES (?1, ?2, ?3, ?4)",
    [S_MAN_DEL] = "DELETE FROM manifest WHERE path = ?1",
    [S_MAN_EACH] = "SELECT path FROM manifest ORDER BY path",
    [S_DEL_SRC_FTS] = "DELETE FROM docs_fts WHERE rowid IN (SELECT rowid FROM docs "
                      "WHERE source = ?1)",
    [S_DEL_SRC] = "DELETE FROM docs WHERE source = ?1",
    [S_SET_DIM] = "INSERT OR REPLACE INTO ti_meta(key, value) VALUES ('dim', ?1)",
    [S_COUNT] = "SELECT count(*) FROM docs",
};

static const char schema_sql[] =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;"
    "CREATE TABLE IF NOT EXISTS ti_meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE IF NOT EXISTS docs(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " source TEXT, meta BLOB, vec BLOB);"
    "CREATE INDEX IF NOT EXISTS docs_source ON docs(source);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(text,"
    " tokenize = 'unicode61 remove_diacritics 2');"
    "CREATE TABLE IF NOT EXISTS manifest(path TEXT PRIMARY KEY, digest TEXT NOT NULL,"
    " mtime INTEGER NOT NULL, size INTEGER NOT NULL);";

struct tr_text_index
{
    sqlite3 *db;
    sqlite3_stmt *st[S__N]; /* prepared on first use */
    size_t dim;             /* 0 until a vector is stored or a dim given */
    bool vec_valid;         /* vec_rows/vec_ids mirror the file */
    float *vec_rows;        /* vec_n unit vectors of dim floats */
    int64_t *vec_ids;       /* their rowids, ascending */
    size_t vec_n;
};

/* ====================================================================== */
/* SQLite plumbing                                                        */
/* ====================================================================== */

static int db_err(struct tr_text_index *ix, struct tr_error *err, const char *what)
{
    int code = sqlite3_errcode(ix->db) == SQLITE_NOMEM ? TR_ENOMEM : TR_EIO;
    return tr_error_set(err, code, "cannot %s: %s", what, sqlite3_errmsg(ix->db));
}

/* The cached statement s, reset and unbound; NULL on failure. */
static sqlite3_stmt *stmt(struct tr_text_index *ix, enum stmt_id s)
{
    if (ix->st[s] == NULL) {
        if (sqlite3_prepare_v3(ix->db, stmt_sql[s], -1, SQLITE_PREPARE_PERSISTENT, &ix->st[s],
                               NULL) != SQLITE_OK)
            return NULL;
    } else {
        sqlite3_reset(ix->st[s]);
        sqlite3_clear_bindings(ix->st[s]);
    }
    return ix->st[s];
}

static int exec(struct tr_text_index *ix, const char *sql)
{
    return sqlite3_exec(ix->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : TR_EIO;
}

static void blob_or_null(sqlite3_stmt *s, int i, const void *p, size_t n)
{
    if (p == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_blob64(s, i, p, n, SQLITE_TRANSIENT);
}

static void text_or_null(sqlite3_stmt *s, int i, const char *p, size_t n)
{
    if (p == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_text64(s, i, p, n, SQLITE_TRANSIENT, SQLITE_UTF8);
}

static void invalidate_vectors(struct tr_text_index *ix)
{
    ix->vec_valid = false;
    tr_free_null(&ix->vec_rows);
    tr_free_null(&ix->vec_ids);
    ix->vec_n = 0;
}

/* ====================================================================== */
/* Life cycle                                                             */
/* ====================================================================== */

static int store_dim(struct tr_text_index *ix, size_t dim)
{
    sqlite3_stmt *s = stmt(ix, S_SET_DIM);
    if (s == NULL)
        return TR_EIO;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)dim);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : TR_EIO;
    sqlite3_reset(s);
    if (rc == 0)
        ix->dim = dim;
    return rc;
}

int tr_text_index_open(const char *path, size_t dim, struct tr_text_index **out,
                       struct tr_error *err)
{
    *out = NULL;
    if (dim > TR_TEXT_INDEX_DIM_MAX)
        return tr_error_set(err, TR_EINVAL, "dimension %zu is above the limit of %d", dim,
                            TR_TEXT_INDEX_DIM_MAX);
    struct tr_text_index *ix = tr_calloc(1, sizeof(*ix));
    if (ix == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc;
    if (sqlite3_open_v2(path, &ix->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = tr_error_set(err, TR_EIO, "cannot open index '%s': %s", path,
                          ix->db ? sqlite3_errmsg(ix->db) : "out of memory");
        goto out_free;
    }
    sqlite3_busy_timeout(ix->db, 5000);
    if (exec(ix, schema_sql) < 0) {
        rc = db_err(ix, err, "create the index tables");
        goto out_free;
    }
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(ix->db, "SELECT value FROM ti_meta WHERE key = 'dim'", -1, &s,
                           NULL) != SQLITE_OK) {
        rc = db_err(ix, err, "read the index dimension");
        goto out_free;
    }
    size_t file_dim = 0;
    if (sqlite3_step(s) == SQLITE_ROW)
        file_dim = (size_t)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (dim != 0 && file_dim != 0 && dim != file_dim) {
        rc = tr_error_set(err, TR_EINVAL, "index '%s' has dimension %zu, not %zu", path,
                          file_dim, dim);
        goto out_free;
    }
    ix->dim = file_dim;
    if (dim != 0 && file_dim == 0 && store_dim(ix, dim) < 0) {
        rc = db_err(ix, err, "store the index dimension");
        goto out_free;
    }
    *out = ix;
    return 0;

out_free:
    tr_text_index_free(ix);
    return rc;
}

void tr_text_index_free(struct tr_text_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < S__N; i++)
        sqlite3_finalize(ix->st[i]);
    sqlite3_close_v2(ix->db);
    invalidate_vectors(ix);
    tr_free(ix);
}

size_t tr_text_index_dim(const struct tr_text_index *ix)
{
    return ix->dim;
}

int tr_text_index_count(struct tr_text_index *ix, size_t *n)
{
    sqlite3_stmt *s = stmt(ix, S_COUNT);
    if (s == NULL || sqlite3_step(s) != SQLITE_ROW)
        return TR_EIO;
    *n = (size_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return 0;
}

/* ====================================================================== */
/* Writes                                                                 */
/* ====================================================================== */

static int upsert_one(struct tr_text_index *ix, const struct tr_text_doc *d, struct tr_error *err)
{
    sqlite3_stmt *s = stmt(ix, S_FIND);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    sqlite3_bind_text64(s, 1, d->id, d->id_len, SQLITE_STATIC, SQLITE_UTF8);
    int64_t rowid = -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        rowid = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE)
        return db_err(ix, err, "look a document up");
    sqlite3_reset(s);

    s = stmt(ix, rowid < 0 ? S_INS_DOC : S_UPD_DOC);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    if (rowid < 0)
        sqlite3_bind_text64(s, 1, d->id, d->id_len, SQLITE_TRANSIENT, SQLITE_UTF8);
    else
        sqlite3_bind_int64(s, 1, rowid);
    text_or_null(s, 2, d->source, d->source_len);
    blob_or_null(s, 3, d->meta, d->meta_len);
    blob_or_null(s, 4, d->vec, d->vec ? d->dim * sizeof(float) : 0);
    if (sqlite3_step(s) != SQLITE_DONE)
        return db_err(ix, err, "write a document");
    sqlite3_reset(s);
    if (rowid < 0) {
        rowid = sqlite3_last_insert_rowid(ix->db);
    } else {
        s = stmt(ix, S_DEL_FTS);
        if (s == NULL)
            return db_err(ix, err, "prepare");
        sqlite3_bind_int64(s, 1, rowid);
        if (sqlite3_step(s) != SQLITE_DONE)
            return db_err(ix, err, "replace a document's text");
        sqlite3_reset(s);
    }
    s = stmt(ix, S_INS_FTS);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    sqlite3_bind_int64(s, 1, rowid);
    sqlite3_bind_text64(s, 2, d->text, d->text_len, SQLITE_STATIC, SQLITE_UTF8);
    if (sqlite3_step(s) != SQLITE_DONE)
        return db_err(ix, err, "index a document's text");
    sqlite3_reset(s);
    return 0;
}

int tr_text_index_upsert(struct tr_text_index *ix, const struct tr_text_doc *docs, size_t n,
                         struct tr_error *err)
{
    /* Check everything first, so that a bad document costs no transaction. */
    size_t dim = ix->dim;
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
        if (d->vec == NULL)
            continue;
        if (d->dim == 0 || d->dim > TR_TEXT_INDEX_DIM_MAX)
            return tr_error_set(err, TR_EINVAL, "document %zu has a vector of dimension %zu",
                                i + 1, d->dim);
        if (dim == 0)
            dim = d->dim;
        if (d->dim != dim)
            return tr_error_set(err, TR_EINVAL,
                                "document %zu has a vector of dimension %zu, the index %zu",
                                i + 1, d->dim, dim);
    }
    if (exec(ix, "BEGIN IMMEDIATE") < 0)
        return db_err(ix, err, "begin a transaction");
    invalidate_vectors(ix);
    size_t old_dim = ix->dim;
    int rc = 0;
    if (dim != ix->dim && store_dim(ix, dim) < 0)
        rc = db_err(ix, err, "store the index dimension");
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = upsert_one(ix, &docs[i], err);
    if (rc == 0 && exec(ix, "COMMIT") < 0)
        rc = db_err(ix, err, "commit");
    if (rc < 0) {
        if (!sqlite3_get_autocommit(ix->db) && exec(ix, "ROLLBACK") < 0)
            tr_error_set(err, TR_EIO, "cannot roll back: %s", sqlite3_errmsg(ix->db));
        ix->dim = old_dim;
    }
    return rc;
}

/* Runs statement s with one text binding (and an optional rowid); returns changes or TR_EIO. */
static int run_changes(struct tr_text_index *ix, enum stmt_id id, const char *p, size_t n,
                       int64_t rowid)
{
    sqlite3_stmt *s = stmt(ix, id);
    if (s == NULL)
        return TR_EIO;
    if (p != NULL)
        sqlite3_bind_text64(s, 1, p, n, SQLITE_STATIC, SQLITE_UTF8);
    else
        sqlite3_bind_int64(s, 1, rowid);
    int rc = sqlite3_step(s) == SQLITE_DONE ? sqlite3_changes(ix->db) : TR_EIO;
    sqlite3_reset(s);
    return rc;
}

int tr_text_index_delete(struct tr_text_index *ix, const char *id, size_t id_len,
                         struct tr_error *err)
{
    sqlite3_stmt *s = stmt(ix, S_FIND);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    sqlite3_bind_text64(s, 1, id, id_len, SQLITE_STATIC, SQLITE_UTF8);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return 0;
    }
    if (rc != SQLITE_ROW)
        return db_err(ix, err, "look a document up");
    int64_t rowid = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (exec(ix, "BEGIN IMMEDIATE") < 0)
        return db_err(ix, err, "begin a transaction");
    invalidate_vectors(ix);
    if (run_changes(ix, S_DEL_FTS, NULL, 0, rowid) < 0 ||
        run_changes(ix, S_DEL_DOC, NULL, 0, rowid) < 0 || exec(ix, "COMMIT") < 0) {
        rc = db_err(ix, err, "delete a document");
        if (!sqlite3_get_autocommit(ix->db))
            (void)exec(ix, "ROLLBACK");
        return rc;
    }
    return 1;
}

int tr_text_index_delete_source(struct tr_text_index *ix, const char *source, size_t len,
                                struct tr_error *err)
{
    if (exec(ix, "BEGIN IMMEDIATE") < 0)
        return db_err(ix, err, "begin a transaction");
    invalidate_vectors(ix);
    int n = -1;
    if (run_changes(ix, S_DEL_SRC_FTS, source, len, 0) >= 0)
        n = run_changes(ix, S_DEL_SRC, source, len, 0);
    if (n < 0 || exec(ix, "COMMIT") < 0) {
        int rc = db_err(ix, err, "delete a source's documents");
        if (!sqlite3_get_autocommit(ix->db))
            (void)exec(ix, "ROLLBACK");
        return rc;
    }
    return n;
}

/* ====================================================================== */
/* Manifest                                                               */
/* ====================================================================== */

int tr_text_index_manifest_get(struct tr_text_index *ix, const char *path,
                               struct tr_text_manifest *m)
{
    sqlite3_stmt *s = stmt(ix, S_MAN_GET);
    if (s == NULL)
        return TR_EIO;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *d = sqlite3_column_text(s, 0);
        int dl = sqlite3_column_bytes(s, 0);
        memset(m->digest, 0, sizeof(m->digest));
        if (d != NULL)
            memcpy(m->digest, d, (size_t)TR_MIN(dl, 64));
        m->mtime = sqlite3_column_int64(s, 1);
        m->size = sqlite3_column_int64(s, 2);
        rc = 1;
    } else {
        rc = rc == SQLITE_DONE ? 0 : TR_EIO;
    }
    sqlite3_reset(s);
    return rc;
}

int tr_text_index_manifest_put(struct tr_text_index *ix, const char *path,
                               const struct tr_text_manifest *m)
{
    sqlite3_stmt *s = stmt(ix, S_MAN_PUT);
    if (s == NULL)
        return TR_EIO;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, m->digest, (int)strnlen(m->digest, 64), SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, m->mtime);
    sqlite3_bind_int64(s, 4, m->size);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : TR_EIO;
    sqlite3_reset(s);
    return rc;
}

int tr_text_index_manifest_del(struct tr_text_index *ix, const char *path)
{
    return run_changes(ix, S_MAN_DEL, path, strlen(path), 0);
}

int tr_text_index_manifest_each(struct tr_text_index *ix, int (*fn)(const char *path, void *arg),
                                void *arg)
{
    /* Not the cached statement: fn may look rows up while this one steps. */
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(ix->db, stmt_sql[S_MAN_EACH], -1, &s, NULL) != SQLITE_OK)
        return TR_EIO;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int r = fn((const char *)sqlite3_column_text(s, 0), arg);
        if (r != 0) {
            sqlite3_finalize(s);
            return r;
        }
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : TR_EIO;
}

/* ====================================================================== */
/* Ranking kernels                                                        */
/* ====================================================================== */

void tr_vec_normalize(float *v, size_t dim)
{
    double ss = 0;
    for (size_t i = 0; i < dim; i++)
        ss += (double)v[i] * v[i];
    if (ss <= 0 || !isfinite(ss))
        return;
    double inv = 1.0 / sqrt(ss);
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] * inv);
}

/* True when (sa, ia) ranks below (sb, ib): lower score, or equal and later row. */
static bool worse(double sa, size_t ia, double sb, size_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

/* Restores the min-heap (the worst kept entry on top) below position i. */
static void sift_down(size_t *idx, double *score, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(score[l], idx[l], score[m], idx[m]))
            m = l;
        if (r < n && worse(score[r], idx[r], score[m], idx[m]))
            m = r;
        if (m == i)
            return;
        size_t ti = idx[i];
        idx[i] = idx[m];
        idx[m] = ti;
        double ts = score[i];
        score[i] = score[m];
        score[m] = ts;
        i = m;
    }
}

/*
 * The dot product in eight independent float lanes, which the compiler
 * turns into SIMD without -ffast-math (one accumulator would be a serial
 * chain it may not reorder). Unit vectors keep each lane's sum small, so
 * float precision costs about 1e-7 relative, far below what separates
 * neighbours in a ranking.
 */
static double dot_f32(const float *a, const float *b, size_t dim)
{
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (size_t l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    double dot = 0;
    for (; i < dim; i++)
        dot += (double)a[i] * b[i];
    for (size_t l = 0; l < 8; l++)
        dot += acc[l];
    return dot;
}

size_t tr_cosine_topk(const float *rows, size_t n, size_t dim, const float *q, size_t k,
                      size_t *idx, double *score)
{
    if (k == 0)
        return 0;
    size_t h = 0;
    for (size_t r = 0; r < n; r++) {
        double dot = dot_f32(rows + r * dim, q, dim);
        if (h < k) {
            /* Sift up the new entry. */
            size_t i = h++;
            idx[i] = r;
            score[i] = dot;
            while (i > 0) {
                size_t p = (i - 1) / 2;
                if (!worse(score[i], idx[i], score[p], idx[p]))
                    break;
                size_t ti = idx[i];
                idx[i] = idx[p];
                idx[p] = ti;
                double ts = score[i];
                score[i] = score[p];
                score[p] = ts;
                i = p;
            }
        } else if (worse(score[0], idx[0], dot, r)) {
            idx[0] = r;
            score[0] = dot;
            sift_down(idx, score, h, 0);
        }
    }
    /* Heap sort in place: popping the worst to the end leaves best first. */
    for (size_t end = h; end > 1; end--) {
        size_t ti = idx[0];
        idx[0] = idx[end - 1];
        idx[end - 1] = ti;
        double ts = score[0];
        score[0] = score[end - 1];
        score[end - 1] = ts;
        sift_down(idx, score, end - 1, 0);
    }
    return h;
}

struct rrf_acc
{
    int64_t key;
    double score;
    size_t best_rank;
};

static int cmp_key(const void *a, const void *b)
{
    const struct rrf_acc *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->best_rank < y->best_rank ? -1 : x->best_rank > y->best_rank;
}

static int cmp_fused(const void *a, const void *b)
{
    const struct rrf_acc *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->best_rank != y->best_rank)
        return x->best_rank < y->best_rank ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

int tr_rrf_fuse(const int64_t *const *lists, const size_t *lens, size_t nlists, double k,
                struct tr_rrf_item **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t total = 0;
    for (size_t l = 0; l < nlists; l++)
        total += lens[l];
    struct rrf_acc *acc = tr_calloc(total ? total : 1, sizeof(*acc));
    if (acc == NULL)
        return TR_ENOMEM;
    size_t m = 0;
    for (size_t l = 0; l < nlists; l++) {
        for (size_t r = 0; r < lens[l]; r++) {
            acc[m].key = lists[l][r];
            acc[m].best_rank = r + 1;
            acc[m].score = 1.0 / (k + (double)(r + 1));
            m++;
        }
    }
    /* Group equal keys, sum their contributions into the first of each run. */
    qsort(acc, m, sizeof(*acc), cmp_key);
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        if (w > 0 && acc[w - 1].key == acc[i].key) {
            acc[w - 1].score += acc[i].score;
            continue;
        }
        acc[w++] = acc[i];
    }
    qsort(acc, w, sizeof(*acc), cmp_fused);
    struct tr_rrf_item *items = tr_calloc(w ? w : 1, sizeof(*items));
    if (items == NULL) {
        tr_free(acc);
        return TR_ENOMEM;
    }
    for (size_t i = 0; i < w; i++) {
        items[i].key = acc[i].key;
        items[i].score = acc[i].score;
    }
    tr_free(acc);
    *out = items;
    *n = w;
    return 0;
}

/* ====================================================================== */
/* Search                                                                 */
/* ====================================================================== */

/* A ranked list of rowids with their scores, best first. */
struct ranked
{
    int64_t *ids;
    double *scores;
    size_t n;
};

static void ranked_release(struct ranked *r)
{
    tr_free_null(&r->ids);
    tr_free_null(&r->scores);
    r->n = 0;
}

static int ranked_alloc(struct ranked *r, size_t cap)
{
    r->ids = tr_calloc(cap ? cap : 1, sizeof(*r->ids));
    r->scores = tr_calloc(cap ? cap : 1, sizeof(*r->scores));
    r->n = 0;
    return r->ids && r->scores ? 0 : TR_ENOMEM;
}

static bool word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c >= 0x80 || c == '_';
}

/*
 * The FTS5 query for free text: each word quoted (so that no operator or
 * column filter of the user's reaches FTS5) and joined with OR, which is
 * what BM25 over a bag of words means. Empty when the text has no word.
 */
TR_TESTABLE int fts_query(const char *p, size_t len, struct tr_buf *q)
{
    size_t words = 0;
    for (size_t i = 0; i < len && words < QUERY_WORDS_MAX;) {
        if (!word_byte((unsigned char)p[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && word_byte((unsigned char)p[j]))
            j++;
        int rc = 0;
        if (words++ > 0)
            rc = tr_buf_addstr(q, " OR ");
        if (rc == 0)
            rc = tr_buf_addch(q, '"');
        if (rc == 0)
            rc = tr_buf_add(q, p + i, j - i);
        if (rc == 0)
            rc = tr_buf_addch(q, '"');
        if (rc < 0)
            return rc;
        i = j;
    }
    return 0;
}

static int rank_bm25(struct tr_text_index *ix, const char *text, size_t len, size_t depth,
                     struct ranked *out, struct tr_error *err)
{
    struct tr_buf q;
    tr_buf_init(&q, 1u << 20);
    int rc = fts_query(text, len, &q);
    if (rc < 0)
        goto out_release;
    rc = ranked_alloc(out, depth);
    if (rc < 0 || q.len == 0)
        goto out_release;
    sqlite3_stmt *s = stmt(ix, S_BM25);
    if (s == NULL) {
        rc = db_err(ix, err, "prepare");
        goto out_release;
    }
    sqlite3_bind_text64(s, 1, q.buf, q.len, SQLITE_STATIC, SQLITE_UTF8);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)depth);
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW && out->n < depth) {
        out->ids[out->n] = sqlite3_column_int64(s, 0);
        /* bm25() is negated so that higher is better, like the other modes. */
        out->scores[out->n] = -sqlite3_column_double(s, 1);
        out->n++;
    }
    if (st != SQLITE_ROW && st != SQLITE_DONE)
        rc = db_err(ix, err, "run a BM25 query");
    sqlite3_reset(s);

out_release:
    tr_buf_release(&q);
    if (rc == TR_ENOMEM || rc == TR_E2BIG)
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    return rc;
}

static int load_vectors(struct tr_text_index *ix, struct tr_error *err)
{
    size_t cap = 0;
    if (tr_text_index_count(ix, &cap) < 0)
        return db_err(ix, err, "count documents");
    invalidate_vectors(ix);
    if (ix->dim == 0) {
        ix->vec_valid = true;
        return 0;
    }
    ix->vec_ids = tr_calloc(cap ? cap : 1, sizeof(*ix->vec_ids));
    ix->vec_rows = tr_calloc(cap ? cap * ix->dim : 1, sizeof(*ix->vec_rows));
    if (ix->vec_ids == NULL || ix->vec_rows == NULL) {
        invalidate_vectors(ix);
        return tr_error_set(err, TR_ENOMEM, "out of memory for %zu vectors", cap);
    }
    sqlite3_stmt *s = stmt(ix, S_VECS);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW && ix->vec_n < cap) {
        const void *b = sqlite3_column_blob(s, 1);
        size_t bl = (size_t)sqlite3_column_bytes(s, 1);
        if (b == NULL || bl != ix->dim * sizeof(float))
            continue; /* only a file written by something else can hold one */
        float *row = ix->vec_rows + ix->vec_n * ix->dim;
        memcpy(row, b, bl);
        tr_vec_normalize(row, ix->dim);
        ix->vec_ids[ix->vec_n++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_reset(s);
    if (st != SQLITE_ROW && st != SQLITE_DONE) {
        invalidate_vectors(ix);
        return db_err(ix, err, "read vectors");
    }
    ix->vec_valid = true;
    return 0;
}

static int rank_vector(struct tr_text_index *ix, const float *vec, size_t depth,
                       struct ranked *out, struct tr_error *err)
{
    if (!ix->vec_valid) {
        int rc = load_vectors(ix, err);
        if (rc < 0)
            return rc;
    }
    float *q = tr_memdup(vec, ix->dim * sizeof(*q));
    size_t *rows = tr_calloc(depth, sizeof(*rows));
    int rc = ranked_alloc(out, depth);
    if (q == NULL || rows == NULL || rc < 0) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out_free;
    }
    tr_vec_normalize(q, ix->dim);
    out->n = tr_cosine_topk(ix->vec_rows, ix->vec_n, ix->dim, q, depth, rows, out->scores);
    for (size_t i = 0; i < out->n; i++)
        out->ids[i] = ix->vec_ids[rows[i]];

out_free:
    tr_free(q);
    tr_free(rows);
    return rc;
}

static char *dup_col(sqlite3_stmt *s, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    *len = n;
    if (p == NULL)
        return NULL;
    char *c = tr_malloc(n + 1);
    if (c == NULL)
        return NULL;
    memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

static int fill_hit(struct tr_text_index *ix, int64_t rowid, double score, struct tr_text_hit *h,
                    struct tr_error *err)
{
    sqlite3_stmt *s = stmt(ix, S_GET_HIT);
    if (s == NULL)
        return db_err(ix, err, "prepare");
    sqlite3_bind_int64(s, 1, rowid);
    int st = sqlite3_step(s);
    if (st != SQLITE_ROW) {
        sqlite3_reset(s);
        return st == SQLITE_DONE ? 1 : db_err(ix, err, "read a hit");
    }
    h->score = score;
    h->id = dup_col(s, 0, &h->id_len);
    h->source = dup_col(s, 1, &h->source_len);
    h->meta = dup_col(s, 2, &h->meta_len);
    h->text = dup_col(s, 3, &h->text_len);
    bool oom = h->id == NULL || h->text == NULL ||
               (h->source == NULL && sqlite3_column_type(s, 1) != SQLITE_NULL) ||
               (h->meta == NULL && sqlite3_column_type(s, 2) != SQLITE_NULL);
    sqlite3_reset(s);
    return oom ? tr_error_set(err, TR_ENOMEM, "out of memory") : 0;
}

void tr_text_hits_release(struct tr_text_hits *hits)
{
    for (size_t i = 0; i < hits->n; i++) {
        tr_free(hits->v[i].id);
        tr_free(hits->v[i].text);
        tr_free(hits->v[i].source);
        tr_free(hits->v[i].meta);
    }
    tr_free_null(&hits->v);
    hits->n = 0;
}

int tr_text_index_search(struct tr_text_index *ix, const struct tr_text_query *q,
                         struct tr_text_hits *hits, struct tr_error *err)
{
    hits->v = NULL;
    hits->n = 0;
    if (q->k == 0 || q->k > TR_TEXT_INDEX_K_MAX)
        return tr_error_set(err, TR_EINVAL, "k must be between 1 and %d", TR_TEXT_INDEX_K_MAX);
    bool want_text = q->mode != TR_TEXT_VECTOR, want_vec = q->mode != TR_TEXT_BM25;
    if (want_text && q->text == NULL)
        return tr_error_set(err, TR_EINVAL, "this search mode needs a query text");
    if (want_vec && q->vec == NULL)
        return tr_error_set(err, TR_EINVAL, "this search mode needs a query vector");
    /* With no vector stored yet, the vector ranking is empty: a hybrid
     * search is then BM25 alone, not an error. */
    bool have_vecs = ix->dim != 0;
    if (want_vec && have_vecs && q->dim != ix->dim)
        return tr_error_set(err, TR_EINVAL, "the query vector has dimension %zu, the index %zu",
                            q->dim, ix->dim);
    size_t depth = q->mode == TR_TEXT_HYBRID ? TR_MAX(q->k, HYBRID_DEPTH_MIN) : q->k;
    depth = TR_MIN(depth, TR_TEXT_INDEX_K_MAX);

    struct ranked lex = {0}, vec = {0};
    struct tr_rrf_item *fused = NULL;
    size_t nfused = 0;
    int rc = 0;
    if (want_text)
        rc = rank_bm25(ix, q->text, q->text_len, depth, &lex, err);
    if (rc == 0 && want_vec && have_vecs)
        rc = rank_vector(ix, q->vec, depth, &vec, err);
    if (rc < 0)
        goto out_release;

    const struct ranked *one = q->mode == TR_TEXT_BM25 ? &lex : &vec;
    if (q->mode == TR_TEXT_HYBRID) {
        const int64_t *lists[2] = {lex.ids, vec.ids};
        size_t lens[2] = {lex.n, vec.n};
        rc = tr_rrf_fuse(lists, lens, 2, q->rrf_k > 0 ? q->rrf_k : RRF_K_DEFAULT, &fused,
                         &nfused);
        if (rc < 0) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out_release;
        }
    }
    size_t n = q->mode == TR_TEXT_HYBRID ? nfused : one->n;
    n = TR_MIN(n, q->k);
    hits->v = tr_calloc(n ? n : 1, sizeof(*hits->v));
    if (hits->v == NULL) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out_release;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t id = q->mode == TR_TEXT_HYBRID ? fused[i].key : one->ids[i];
        double sc = q->mode == TR_TEXT_HYBRID ? fused[i].score : one->scores[i];
        rc = fill_hit(ix, id, sc, &hits->v[hits->n], err);
        if (rc < 0) {
            hits->n++; /* the partly filled hit is released below */
            tr_text_hits_release(hits);
            goto out_release;
        }
        if (rc == 0)
            hits->n++;
        rc = 0;
    }

out_release:
    ranked_release(&lex);
    ranked_release(&vec);
    tr_free(fused);
    return rc;
}
