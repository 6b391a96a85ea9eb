/*
 * pg_index_search.c - search in the PostgreSQL index (pg_index.h): the
 * text ranking by PostgreSQL's text search, vectors through pgvector's HNSW
 * index or exactly in this process, and the same fusion as the SQLite
 * index's hybrid mode, then one query for the hits' rows.
 */
#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "worker/pg_int.h"

/* As in text_index.c: the same depth and constant make the same fusion. */
#define HYBRID_DEPTH_MIN 50
#define QUERY_WORDS_MAX 64
#define RRF_K_DEFAULT 60.0
/* pgvector's largest hnsw.ef_search. */
#define EF_SEARCH_MAX 1000

/*
 * The text ranking is BM25 as SQLite's FTS5 computes it (k1 = 1.2,
 * b = 0.75, idf = ln((N - df + 0.5) / (df + 0.5)) floored at 1e-6, |D| the
 * document's tokens), over the lexemes of trellis_tsv (pg_index.c). df is
 * one count per query lexeme on the GIN index; tf comes from the
 * candidate's tsvector cut down to the query's lexemes (setweight then
 * ts_filter, in C). Candidates: the documents holding a lexeme of fewer
 * than half the documents (idf above its floor), or, when those are fewer
 * than the limit, every document holding any query lexeme; a document that
 * holds only lexemes at the floor scores at most 64 * 2.2e-6 and cannot
 * pass one holding a rarer lexeme but in an index of several 100,000s. N
 * and the average |D| are read once per version of the index. $1 the
 * query words, $2 N, $3 avgdl, $4 the limit; %s the docs table, three
 * times. A lexeme becomes a tsquery through its quoted literal ('' and \\
 * doubled), never parsed.
 */
static const char bm25_sql[] =
    "WITH ql AS MATERIALIZED (SELECT lex, lit, lit::tsquery AS tq FROM (SELECT DISTINCT"
    " lexeme AS lex, '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || ''''"
    " AS lit FROM unnest(trellis_tsv($1))) w),"
    " qd AS MATERIALIZED (SELECT lex, lit, (SELECT count(*) FROM %s WHERE tsv @@ tq) AS df"
    "  FROM ql),"
    " qi AS MATERIALIZED (SELECT lex, lit, greatest(ln(($2::float8 - df + 0.5) / (df + 0.5)),"
    "  1e-6) AS idf FROM qd),"
    " rq AS MATERIALIZED (SELECT (SELECT string_agg(lit, ' | ')::tsquery FROM qi"
    "  WHERE idf > 1e-6) AS rare, (SELECT string_agg(lit, ' | ')::tsquery FROM qi) AS anyq,"
    "  (SELECT array_agg(lex) FROM qi) AS lexes),"
    " cand AS (SELECT rid, tsv, ntok FROM %s WHERE tsv @@ (SELECT CASE WHEN"
    "  (SELECT count(*) FROM (SELECT 1 FROM %s WHERE tsv @@ rq.rare LIMIT $4) x) >= $4"
    "  THEN rq.rare ELSE rq.anyq END FROM rq))"
    " SELECT c.rid, sum(qi.idf * u.tf * 2.2 / (u.tf + 1.2 * (0.25 + 0.75 * c.ntok / $3::float8)))"
    "  AS s FROM cand c CROSS JOIN LATERAL (SELECT lexeme,"
    "  coalesce(array_length(positions, 1), 1) AS tf FROM unnest(ts_filter(setweight(c.tsv, 'A',"
    "  (SELECT lexes FROM rq)), '{a}'))) u"
    "  JOIN qi ON qi.lex = u.lexeme GROUP BY c.rid ORDER BY s DESC, c.rid LIMIT $4";

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
 * The query's words, as the SQLite index takes them (at most 64; any other
 * byte separates), joined by spaces: to_tsvector makes them lexemes, so
 * that no operator of the user's reaches a tsquery. Empty when the text has
 * no word.
 */
static int ts_query(const char *p, size_t len, struct tr_buf *q)
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
        int rc = tr_buf_addf(q, "%s%.*s", words++ ? " " : "", (int)(j - i), p + i);
        if (rc < 0)
            return rc;
        i = j;
    }
    return tr_buf_addch(q, '\0');
}

/*
 * Runs sql as the connection's prepared statement of this index (planning
 * the BM25 statement costs more than running it on a small index),
 * preparing it on the first use on this connection: a pooled connection
 * may or may not have it, and "no such statement" (26000) says which.
 */
static PGresult *exec_prepared(PGconn *c, const struct tr_pg_index *ix, const char *sql,
                               int n, const char *const *v)
{
    char name[64];
    snprintf(name, sizeof(name), "trellis_bm25_%lld", ix->num);
    PGresult *r = PQexecPrepared(c, name, n, v, NULL, NULL, 0);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (PQresultStatus(r) == PGRES_TUPLES_OK || state == NULL || strcmp(state, "26000") != 0)
        return r;
    PQclear(r);
    r = PQprepare(c, name, sql, n, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return r;
    PQclear(r);
    return PQexecPrepared(c, name, n, v, NULL, NULL, 0);
}

/* N and the average |D|, read again when the index's version moved. */
static int stats(struct tr_pg_index *ix, PGconn *c, long long version, struct tr_error *err)
{
    if (ix->stats_valid && ix->stats_version == version)
        return 0;
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*), coalesce(avg(ntok), 0) FROM %s", ix->docs);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "read the index statistics");
    ix->n_docs = strtod(PQgetvalue(r, 0, 0), NULL);
    ix->avgdl = strtod(PQgetvalue(r, 0, 1), NULL);
    PQclear(r);
    ix->stats_valid = true;
    ix->stats_version = version;
    return 0;
}

static int rank_text(struct tr_pg_index *ix, PGconn *c, long long version,
                     const struct tr_text_query *q, size_t depth, struct ranked *out,
                     struct tr_error *err)
{
    struct tr_buf tq;
    tr_buf_init(&tq, 1u << 20);
    int rc = ts_query(q->text, q->text_len, &tq);
    if (rc == 0)
        rc = ranked_alloc(out, depth);
    if (rc < 0) {
        tr_buf_release(&tq);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    if (tq.len <= 1) {
        tr_buf_release(&tq);
        return 0;
    }
    int rc2 = stats(ix, c, version, err);
    if (rc2 < 0) {
        tr_buf_release(&tq);
        return rc2;
    }
    char sql[sizeof(bm25_sql) + 3 * sizeof(ix->docs)], n[32], avg[32], lim[24];
    snprintf(sql, sizeof(sql), bm25_sql, ix->docs, ix->docs, ix->docs);
    snprintf(n, sizeof(n), "%.17g", ix->n_docs);
    snprintf(avg, sizeof(avg), "%.17g", ix->avgdl > 0 ? ix->avgdl : 1.0);
    snprintf(lim, sizeof(lim), "%zu", depth);
    const char *v[4] = {tq.buf, n, avg, lim};
    PGresult *r = exec_prepared(c, ix, sql, 4, v);
    tr_buf_release(&tq);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "run a text query");
    for (int i = 0; i < PQntuples(r) && out->n < depth; i++) {
        out->ids[out->n] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        out->scores[out->n] = strtod(PQgetvalue(r, i, 1), NULL);
        out->n++;
    }
    PQclear(r);
    return 0;
}

/* The exact path: loads every vector (binary rows of float32) when the version moved. */
static int load_vectors(struct tr_pg_index *ix, PGconn *c, long long version,
                        struct tr_error *err)
{
    tr_pg_vec_invalidate(ix);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT rid, vec FROM %s WHERE vec IS NOT NULL ORDER BY rid",
             ix->docs);
    PGresult *r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "read vectors");
    size_t n = (size_t)PQntuples(r), dim = ix->dim;
    ix->vec_ids = tr_calloc(n ? n : 1, sizeof(*ix->vec_ids));
    ix->vec_rows = tr_calloc(n && dim ? n * dim : 1, sizeof(*ix->vec_rows));
    if (ix->vec_ids == NULL || ix->vec_rows == NULL) {
        PQclear(r);
        tr_pg_vec_invalidate(ix);
        return tr_error_set(err, TR_ENOMEM, "out of memory for %zu vectors", n);
    }
    for (size_t i = 0; i < n; i++) {
        if ((size_t)PQgetlength(r, (int)i, 1) != dim * sizeof(float) ||
            PQgetlength(r, (int)i, 0) != 8)
            continue; /* only a row written by something else can hold one */
        float *row = ix->vec_rows + ix->vec_n * dim;
        memcpy(row, PQgetvalue(r, (int)i, 1), dim * sizeof(float));
        tr_vec_normalize(row, dim);
        ix->vec_ids[ix->vec_n++] = tr_pg_int8(PQgetvalue(r, (int)i, 0));
    }
    PQclear(r);
    ix->vec_valid = true;
    ix->vec_version = version;
    return 0;
}

static int rank_exact(struct tr_pg_index *ix, PGconn *c, long long version, const float *vec,
                      size_t depth, struct ranked *out, struct tr_error *err)
{
    if (!ix->vec_valid || ix->vec_version != version) {
        int rc = load_vectors(ix, c, version, err);
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

/* pgvector's HNSW index: cosine distance, ef_search raised to the depth wanted. */
static int rank_hnsw(struct tr_pg_index *ix, PGconn *c, const float *vec, size_t depth,
                     struct ranked *out, struct tr_error *err)
{
    struct tr_buf v;
    tr_buf_init(&v, 0);
    int rc = tr_buf_addch(&v, '[');
    for (size_t i = 0; i < ix->dim && rc == 0; i++)
        rc = tr_buf_addf(&v, i ? ",%.9g" : "%.9g", (double)vec[i]);
    if (rc == 0)
        rc = tr_buf_add(&v, "]", 2);
    if (rc == 0)
        rc = ranked_alloc(out, depth);
    if (rc < 0) {
        tr_buf_release(&v);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    char sql[256], lim[24];
    snprintf(sql, sizeof(sql), "SELECT set_config('hnsw.ef_search', '%zu', false)",
             TR_MIN(TR_MAX(depth, 40), EF_SEARCH_MAX));
    rc = tr_pg_exec(c, sql, err, "set hnsw.ef_search");
    snprintf(sql, sizeof(sql),
             "SELECT rid, 1 - (emb <=> $1::vector) FROM %s WHERE emb IS NOT NULL "
             "ORDER BY emb <=> $1::vector, rid LIMIT $2",
             ix->docs);
    snprintf(lim, sizeof(lim), "%zu", depth);
    const char *p[2] = {v.buf, lim};
    PGresult *r = rc == 0 ? PQexecParams(c, sql, 2, NULL, p, NULL, NULL, 0) : NULL;
    tr_buf_release(&v);
    if (rc < 0)
        return rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "run a vector query");
    for (int i = 0; i < PQntuples(r) && out->n < depth; i++) {
        out->ids[out->n] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        out->scores[out->n] = strtod(PQgetvalue(r, i, 1), NULL);
        out->n++;
    }
    PQclear(r);
    return 0;
}

static char *dup_val(const PGresult *r, int row, int col, size_t *len)
{
    *len = 0;
    if (PQgetisnull(r, row, col))
        return NULL;
    size_t n = (size_t)PQgetlength(r, row, col);
    char *c = tr_malloc(n + 1);
    if (c == NULL)
        return NULL;
    memcpy(c, PQgetvalue(r, row, col), n);
    c[n] = '\0';
    *len = n;
    return c;
}

/* Finds rid among the rows of r (sorted by rid); -1 when gone. */
static int find_row(const PGresult *r, int64_t rid)
{
    int lo = 0, hi = PQntuples(r) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int64_t v = tr_pg_int8(PQgetvalue(r, mid, 0));
        if (v == rid)
            return mid;
        if (v < rid)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Reads the rows of ids[0..n) in one query and fills hits in that order (skipping gone ones). */
static int fill_hits(struct tr_pg_index *ix, PGconn *c, const int64_t *ids, const double *scores,
                     size_t n, struct tr_text_hits *hits, struct tr_error *err)
{
    hits->v = tr_calloc(n ? n : 1, sizeof(*hits->v));
    struct tr_buf arr;
    tr_buf_init(&arr, 0);
    int rc = hits->v != NULL ? tr_buf_addch(&arr, '{') : TR_ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = tr_buf_addf(&arr, i ? ",%lld" : "%lld", (long long)ids[i]);
    if (rc == 0)
        rc = tr_buf_add(&arr, "}", 2);
    if (rc < 0) {
        tr_buf_release(&arr);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    if (n == 0) {
        tr_buf_release(&arr);
        return 0;
    }
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT rid, id, source, meta, body FROM %s WHERE rid = ANY($1::bigint[]) "
             "ORDER BY rid",
             ix->docs);
    const char *v[1] = {arr.buf};
    PGresult *r = PQexecParams(c, sql, 1, NULL, v, NULL, NULL, 1);
    tr_buf_release(&arr);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "read hits");
    for (size_t i = 0; i < n; i++) {
        int row = find_row(r, ids[i]);
        if (row < 0)
            continue; /* deleted between the ranking and now */
        struct tr_text_hit *h = &hits->v[hits->n++];
        h->score = scores[i];
        h->id = dup_val(r, row, 1, &h->id_len);
        h->source = dup_val(r, row, 2, &h->source_len);
        h->meta = dup_val(r, row, 3, &h->meta_len);
        h->text = dup_val(r, row, 4, &h->text_len);
        if (h->id == NULL || h->text == NULL || (h->source == NULL && !PQgetisnull(r, row, 2)) ||
            (h->meta == NULL && !PQgetisnull(r, row, 3))) {
            PQclear(r);
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
    }
    PQclear(r);
    return 0;
}

/* Reads the index's dimension, version and pgvector flag. */
static int read_state(struct tr_pg_index *ix, PGconn *c, long long *version,
                      struct tr_error *err)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT dim, version, vector_ext FROM trellis_indexes "
             "WHERE num = %lld", ix->num);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, "read the index registry");
    if (PQntuples(r) != 1) {
        PQclear(r);
        return tr_error_set(err, TR_EIO, "the index '%s' was dropped", ix->name);
    }
    ix->dim = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    *version = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    ix->hnsw = PQgetvalue(r, 0, 2)[0] == 't' && ix->dim > 0;
    PQclear(r);
    return 0;
}

static int search(struct tr_pg_index *ix, PGconn *c, const struct tr_text_query *q,
                  struct tr_text_hits *hits, struct tr_error *err)
{
    bool want_text = q->mode != TR_TEXT_VECTOR, want_vec = q->mode != TR_TEXT_BM25;
    long long version = 0;
    int rc = read_state(ix, c, &version, err);
    if (rc < 0)
        return rc;
    bool have_vecs = ix->dim != 0;
    if (want_vec && have_vecs && q->dim != ix->dim)
        return tr_error_set(err, TR_EINVAL, "the query vector has dimension %zu, the index %zu",
                            q->dim, ix->dim);
    size_t depth = q->mode == TR_TEXT_HYBRID ? TR_MAX(q->k, HYBRID_DEPTH_MIN) : q->k;
    depth = TR_MIN(depth, TR_TEXT_INDEX_K_MAX);

    struct ranked lex = {0}, vec = {0};
    struct tr_rrf_item *fused = NULL;
    size_t nfused = 0;
    if (want_text)
        rc = rank_text(ix, c, version, q, depth, &lex, err);
    if (rc == 0 && want_vec && have_vecs)
        rc = ix->hnsw ? rank_hnsw(ix, c, q->vec, depth, &vec, err)
                      : rank_exact(ix, c, version, q->vec, depth, &vec, err);
    if (rc < 0)
        goto out_release;
    const struct ranked *one = q->mode == TR_TEXT_BM25 ? &lex : &vec;
    int64_t *ids = one->ids;
    double *scores = one->scores;
    size_t n = one->n;
    if (q->mode == TR_TEXT_HYBRID) {
        const int64_t *lists[2] = {lex.ids, vec.ids};
        size_t lens[2] = {lex.n, vec.n};
        rc = tr_rrf_fuse(lists, lens, 2, q->rrf_k > 0 ? q->rrf_k : RRF_K_DEFAULT, &fused,
                         &nfused);
        n = TR_MIN(nfused, q->k);
        ids = tr_calloc(n ? n : 1, sizeof(*ids));
        scores = tr_calloc(n ? n : 1, sizeof(*scores));
        if (rc < 0 || ids == NULL || scores == NULL) {
            tr_free(ids);
            tr_free(scores);
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out_release;
        }
        for (size_t i = 0; i < n; i++) {
            ids[i] = fused[i].key;
            scores[i] = fused[i].score;
        }
    }
    rc = fill_hits(ix, c, ids, scores, TR_MIN(n, q->k), hits, err);
    if (q->mode == TR_TEXT_HYBRID) {
        tr_free(ids);
        tr_free(scores);
    }

out_release:
    ranked_release(&lex);
    ranked_release(&vec);
    tr_free(fused);
    return rc;
}

int tr_pg_index_search(struct tr_pg_index *ix, const struct tr_text_query *q,
                       struct tr_text_hits *hits, struct tr_error *err)
{
    hits->v = NULL;
    hits->n = 0;
    if (q->k == 0 || q->k > TR_TEXT_INDEX_K_MAX)
        return tr_error_set(err, TR_EINVAL, "k must be between 1 and %d", TR_TEXT_INDEX_K_MAX);
    if (q->mode != TR_TEXT_VECTOR && q->text == NULL)
        return tr_error_set(err, TR_EINVAL, "this search mode needs a query text");
    if (q->mode != TR_TEXT_BM25 && q->vec == NULL)
        return tr_error_set(err, TR_EINVAL, "this search mode needs a query vector");
    PGconn *c = tr_pg_pool_get(ix->conninfo, err);
    if (c == NULL)
        return err->code;
    int rc = search(ix, c, q, hits, err);
    tr_pg_pool_put(ix->conninfo, c);
    if (rc < 0)
        tr_text_hits_release(hits);
    return rc;
}
