/*
 * test_text_index.c - the retrieval index: BM25 on a corpus with known
 * answers (and one score computed by hand), cosine top-k against a brute
 * force reference, RRF against hand-computed fusions, hybrid search,
 * upsert/delete, sources, the manifest, persistence and the dimension check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "worker/text_index.h"

/* ---- fixture: a scratch folder with one index file ---- */

struct fx
{
    char dir[256];
    char path[300];
    struct tr_text_index *ix;
};

static int setup(void **state)
{
    struct fx *f = tr_calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/trellis-index-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/idx.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tr_text_index_free(f->ix);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < TR_ARRAY_LEN(suffixes); i++) {
        char p[320];
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    tr_free(f);
    return 0;
}

static void open_ix(struct fx *f, size_t dim)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_text_index_open(f->path, dim, &f->ix, &err);
    if (rc != 0)
        fail_msg("open failed: %d %s", rc, err.msg);
}

static struct tr_text_doc doc(const char *id, const char *text, const float *vec, size_t dim)
{
    return (struct tr_text_doc){.id = id, .id_len = strlen(id), .text = text,
                                .text_len = strlen(text), .vec = vec, .dim = dim};
}

static void upsert(struct fx *f, const struct tr_text_doc *d, size_t n)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_text_index_upsert(f->ix, d, n, &err);
    if (rc != 0)
        fail_msg("upsert failed: %d %s", rc, err.msg);
}

/* Runs a search and checks the ids of the hits, best first. */
static void expect_ids(struct fx *f, const struct tr_text_query *q, const char *const *want,
                       size_t nwant, struct tr_text_hits *keep)
{
    struct tr_text_hits h;
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_text_index_search(f->ix, q, &h, &err);
    if (rc != 0)
        fail_msg("search failed: %d %s", rc, err.msg);
    if (h.n != nwant) {
        for (size_t i = 0; i < h.n; i++)
            print_message("hit %zu: %s %f\n", i, h.v[i].id, h.v[i].score);
        fail_msg("expected %zu hits, got %zu", nwant, h.n);
    }
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(h.v[i].id, want[i]);
    if (keep != NULL)
        *keep = h;
    else
        tr_text_hits_release(&h);
}

static struct tr_text_query text_q(const char *t, size_t k)
{
    return (struct tr_text_query){.mode = TR_TEXT_BM25, .text = t, .text_len = strlen(t), .k = k};
}

static void assert_near(double got, double want, double eps)
{
    if (fabs(got - want) > eps)
        fail_msg("expected %.9f, got %.9f", want, got);
}

/* ---- BM25 ---- */

static void load_corpus(struct fx *f)
{
    /* Token counts: 6, 7, 4, 4 (average length 5.25). */
    struct tr_text_doc d[] = {
        doc("d1", "the cat sat on the mat", NULL, 0),
        doc("d2", "dogs chase cats and the cat runs", NULL, 0),
        doc("d3", "a cat cat cat", NULL, 0),
        doc("d4", "quantum physics lecture notes", NULL, 0),
    };
    upsert(f, d, TR_ARRAY_LEN(d));
}

static void test_bm25_known_answers(void **state)
{
    struct fx *f = *state;
    open_ix(f, 0);
    load_corpus(f);

    /* tf 3 in the shortest document first; then equal tf, shorter document (6 < 7). */
    struct tr_text_query q = text_q("Cat!", 10);
    expect_ids(f, &q, (const char *[]){"d3", "d1", "d2"}, 3, NULL);
    q = text_q("mat OR dogs", 10); /* "OR" is a plain word: quoted, matches nothing */
    expect_ids(f, &q, (const char *[]){"d1", "d2"}, 2, NULL);
    q = text_q("cat", 2);
    expect_ids(f, &q, (const char *[]){"d3", "d1"}, 2, NULL);
    q = text_q("\"quantum\" NEAR( -- *", 10); /* operators in the text are words or ignored */
    struct tr_text_hits h;
    expect_ids(f, &q, (const char *[]){"d4"}, 1, &h);
    /*
     * FTS5's BM25 (k1 = 1.2, b = 0.75) for "quantum" in d4:
     *   idf = ln((N - n + 0.5) / (n + 0.5)) = ln(3.5 / 1.5) = 0.847298
     *   tf part = tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))
     *           = 2.2 / (1 + 1.2 (0.25 + 0.75 * 4 / 5.25)) = 2.2 / 1.985714 = 1.107914
     *   score = 0.847298 * 1.107914 = 0.938734
     */
    assert_near(h.v[0].score, 0.938734, 1e-4);
    assert_string_equal(h.v[0].text, "quantum physics lecture notes");
    tr_text_hits_release(&h);

    /* No vector stored yet: vector search finds nothing, hybrid is BM25 alone. */
    float v[3] = {1, 2, 3};
    q = (struct tr_text_query){.mode = TR_TEXT_VECTOR, .vec = v, .dim = 3, .k = 10};
    expect_ids(f, &q, NULL, 0, NULL);
    q = (struct tr_text_query){.mode = TR_TEXT_HYBRID, .text = "cat", .text_len = 3, .vec = v,
                               .dim = 3, .k = 10};
    expect_ids(f, &q, (const char *[]){"d3", "d1", "d2"}, 3, &h);
    assert_near(h.v[0].score, 1.0 / 61, 1e-12); /* rank 1 in the only ranking */
    tr_text_hits_release(&h);

    q = text_q("  ,;  ", 10); /* no word at all */
    expect_ids(f, &q, NULL, 0, NULL);
    q = text_q("zebra", 10);
    expect_ids(f, &q, NULL, 0, NULL);
}

/* ---- cosine top-k ---- */

static uint64_t rng_state = 88172645463325252ull;
static double rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void test_cosine_topk_brute_force(void **state)
{
    enum { N = 500, DIM = 16, K = 10 };
    float *rows = tr_calloc(N * DIM, sizeof(float));
    assert_non_null(rows);
    float q[DIM];
    for (size_t i = 0; i < N * DIM; i++)
        rows[i] = (float)rnd();
    for (size_t i = 0; i < DIM; i++)
        q[i] = (float)rnd();
    memset(rows + 7 * DIM, 0, DIM * sizeof(float)); /* a zero row scores 0 */
    for (size_t r = 0; r < N; r++)
        tr_vec_normalize(rows + r * DIM, DIM);
    tr_vec_normalize(q, DIM);

    /* The reference: every score, then K rounds of "take the best left". */
    double all[N];
    bool taken[N] = {false};
    for (size_t r = 0; r < N; r++) {
        double s = 0;
        for (size_t i = 0; i < DIM; i++)
            s += (double)rows[r * DIM + i] * q[i];
        all[r] = s;
    }
    assert_near(all[7], 0.0, 0.0);
    size_t idx[K];
    double score[K];
    size_t n = tr_cosine_topk(rows, N, DIM, q, K, idx, score);
    assert_int_equal(n, K);
    for (size_t j = 0; j < K; j++) {
        size_t best = N;
        for (size_t r = 0; r < N; r++)
            if (!taken[r] && (best == N || all[r] > all[best]))
                best = r;
        taken[best] = true;
        assert_int_equal(idx[j], best);
        /* The kernel sums in float lanes: about 1e-7 relative to the double reference. */
        assert_near(score[j], all[best], 1e-6);
    }
    /* 19 dimensions: two 8-float blocks and a tail of 3, against a hand sum. */
    float a19[19], b19[19];
    for (int i = 0; i < 19; i++) {
        a19[i] = (float)(i + 1);
        b19[i] = (i % 2) ? -0.5f : 1.0f;
    }
    /* Odd values 1 + 3 + ... + 19 = 100, minus half the even ones (2 + ... + 18 = 90): 55. */
    size_t i19;
    double s19;
    assert_int_equal(tr_cosine_topk(a19, 1, 19, b19, 1, &i19, &s19), 1);
    assert_near(s19, 55.0, 0.0);

    /* k above n returns n, sorted; equal scores keep the lower row first. */
    float same[3 * 2] = {1, 0, 1, 0, 0, 1};
    float q2[2] = {1, 0};
    size_t idx2[5];
    double sc2[5];
    assert_int_equal(tr_cosine_topk(same, 3, 2, q2, 5, idx2, sc2), 3);
    assert_int_equal(idx2[0], 0);
    assert_int_equal(idx2[1], 1);
    assert_int_equal(idx2[2], 2);
    tr_free(rows);
}

/* ---- reciprocal rank fusion ---- */

static void test_rrf_hand_computed(void **state)
{
    const int64_t a[] = {10, 20, 30}, b[] = {30, 40, 10};
    const int64_t *lists[] = {a, b};
    size_t lens[] = {3, 3};
    struct tr_rrf_item *out;
    size_t n;
    assert_int_equal(tr_rrf_fuse(lists, lens, 2, 60, &out, &n), 0);
    assert_int_equal(n, 4);
    /*
     * 10: 1/61 + 1/63 = 0.016393443 + 0.015873016 = 0.032266459 (best rank 1)
     * 30: 1/63 + 1/61 = 0.032266459 (best rank 1): tie, lower key first
     * 20: 1/62 = 0.016129032 (best rank 2)
     * 40: 1/62 = 0.016129032 (best rank 2): tie, lower key first
     */
    int64_t want[] = {10, 30, 20, 40};
    double wscore[] = {0.032266459, 0.032266459, 0.016129032, 0.016129032};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(out[i].key, want[i]);
        assert_near(out[i].score, wscore[i], 1e-9);
    }
    tr_free(out);

    /* k = 1, [1, 2] and [2, 3]: 2 = 1/3 + 1/2 = 0.833333, 1 = 1/2, 3 = 1/3. */
    const int64_t c[] = {1, 2}, d[] = {2, 3};
    const int64_t *l2[] = {c, d};
    size_t n2[] = {2, 2};
    assert_int_equal(tr_rrf_fuse(l2, n2, 2, 1, &out, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].key, 2);
    assert_near(out[0].score, 0.833333333, 1e-8);
    assert_int_equal(out[1].key, 1);
    assert_near(out[1].score, 0.5, 1e-12);
    assert_int_equal(out[2].key, 3);
    tr_free(out);

    /* Out of memory: the only failure, and nothing leaks. */
    tr_alloc_fail_at(1, false);
    assert_int_equal(tr_rrf_fuse(l2, n2, 2, 1, &out, &n), TR_ENOMEM);
    tr_alloc_fail_at(2, false);
    assert_int_equal(tr_rrf_fuse(l2, n2, 2, 1, &out, &n), TR_ENOMEM);
    tr_alloc_fail_at(0, false);
}

static void test_vector_and_hybrid(void **state)
{
    struct fx *f = *state;
    open_ix(f, 2);
    float v1[2] = {1, 0}, v2[2] = {0, 1}, v3[2] = {0.6f, 0.8f}, big[2] = {0, 5};
    struct tr_text_doc d[] = {
        doc("d1", "apple banana", v1, 2),
        doc("d2", "apple", big, 2), /* normalised at load: the same direction as v2 */
        doc("d3", "cherry", v3, 2),
    };
    upsert(f, d, 3);

    struct tr_text_query q = {.mode = TR_TEXT_VECTOR, .vec = v2, .dim = 2, .k = 3};
    struct tr_text_hits h;
    /* cos(v2, d2) = 1, cos(v2, d3) = 0.8, cos(v2, d1) = 0. */
    expect_ids(f, &q, (const char *[]){"d2", "d3", "d1"}, 3, &h);
    assert_near(h.v[0].score, 1.0, 1e-6);
    assert_near(h.v[1].score, 0.8, 1e-6);
    tr_text_hits_release(&h);

    /*
     * Hybrid, "banana" and v2, k = 60: BM25 ranks [d1]; vectors [d2, d3, d1].
     * d1 = 1/61 + 1/63 = 0.032266, d2 = 1/61 = 0.016393, d3 = 1/62 = 0.016129.
     */
    q = (struct tr_text_query){.mode = TR_TEXT_HYBRID, .text = "banana", .text_len = 6,
                               .vec = v2, .dim = 2, .k = 3};
    expect_ids(f, &q, (const char *[]){"d1", "d2", "d3"}, 3, &h);
    assert_near(h.v[0].score, 1.0 / 61 + 1.0 / 63, 1e-12);
    assert_near(h.v[2].score, 1.0 / 62, 1e-12);
    tr_text_hits_release(&h);

    /* A wrong dimension is refused, in queries and documents alike. */
    float v3d[3] = {1, 2, 3};
    struct tr_error err;
    q = (struct tr_text_query){.mode = TR_TEXT_VECTOR, .vec = v3d, .dim = 3, .k = 3};
    assert_int_equal(tr_text_index_search(f->ix, &q, &h, &err), TR_EINVAL);
    struct tr_text_doc bad = doc("d9", "x", v3d, 3);
    assert_int_equal(tr_text_index_upsert(f->ix, &bad, 1, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "dimension 3"));
    q.k = 0;
    assert_int_equal(tr_text_index_search(f->ix, &q, &h, &err), TR_EINVAL);

    /* Reopening with another dimension fails; with 0 it takes the file's. */
    tr_text_index_free(f->ix);
    f->ix = NULL;
    assert_int_equal(tr_text_index_open(f->path, 3, &f->ix, &err), TR_EINVAL);
    assert_null(f->ix);
    open_ix(f, 0);
    assert_int_equal(tr_text_index_dim(f->ix), 2);
    q = (struct tr_text_query){.mode = TR_TEXT_VECTOR, .vec = v1, .dim = 2, .k = 1};
    expect_ids(f, &q, (const char *[]){"d1"}, 1, NULL);
}

/* Out of memory in a hybrid search: the only failure, nothing leaks, then it works. */
static void test_search_out_of_memory(void **state)
{
    struct fx *f = *state;
    open_ix(f, 2);
    float v1[2] = {1, 0}, v2[2] = {0, 1};
    struct tr_text_doc d[] = {doc("d1", "apple banana", v1, 2), doc("d2", "apple", v2, 2)};
    d[0].meta = "\x80";
    d[0].meta_len = 1;
    d[0].source = "s";
    d[0].source_len = 1;
    upsert(f, d, 2);
    struct tr_text_query q = {.mode = TR_TEXT_HYBRID, .text = "apple", .text_len = 5,
                              .vec = v2, .dim = 2, .k = 2};
    long n;
    for (n = 1;; n++) {
        struct tr_text_hits h;
        struct tr_error err;
        tr_alloc_fail_at(n, true);
        int rc = tr_text_index_search(f->ix, &q, &h, &err);
        tr_alloc_fail_at(0, false);
        if (rc == 0) {
            assert_int_equal(h.n, 2);
            tr_text_hits_release(&h);
            break;
        }
        assert_int_equal(rc, TR_ENOMEM);
        assert_int_equal(h.n, 0);
    }
    assert_true(n > 5);
}

/* ---- writes ---- */

static void test_upsert_delete_sources(void **state)
{
    struct fx *f = *state;
    open_ix(f, 0);
    load_corpus(f);
    size_t n;
    assert_int_equal(tr_text_index_count(f->ix, &n), 0);
    assert_int_equal(n, 4);

    /* Replacing d4's text: the old words no longer find it, the new ones do. */
    struct tr_text_doc d = doc("d4", "a recipe for cat food", NULL, 0);
    d.source = "notes.md";
    d.source_len = 8;
    d.meta = "\x81\xa1k\x01";
    d.meta_len = 4;
    upsert(f, &d, 1);
    assert_int_equal(tr_text_index_count(f->ix, &n), 0);
    assert_int_equal(n, 4);
    struct tr_text_query q = text_q("quantum", 5);
    expect_ids(f, &q, NULL, 0, NULL);
    q = text_q("recipe", 5);
    struct tr_text_hits h;
    expect_ids(f, &q, (const char *[]){"d4"}, 1, &h);
    assert_int_equal(h.v[0].meta_len, 4);
    assert_memory_equal(h.v[0].meta, "\x81\xa1k\x01", 4);
    assert_string_equal(h.v[0].source, "notes.md");
    tr_text_hits_release(&h);

    struct tr_error err;
    assert_int_equal(tr_text_index_delete(f->ix, "d3", 2, &err), 1);
    assert_int_equal(tr_text_index_delete(f->ix, "d3", 2, &err), 0);
    q = text_q("cat", 10);
    /* One "cat" each: the shortest first (d4 has 5 tokens, d1 6, d2 7). */
    expect_ids(f, &q, (const char *[]){"d4", "d1", "d2"}, 3, NULL);

    struct tr_text_doc more[] = {doc("s1", "alpha", NULL, 0), doc("s2", "alpha beta", NULL, 0)};
    more[0].source = more[1].source = "notes.md";
    more[0].source_len = more[1].source_len = 8;
    upsert(f, more, 2);
    assert_int_equal(tr_text_index_delete_source(f->ix, "notes.md", 8, &err), 3);
    assert_int_equal(tr_text_index_count(f->ix, &n), 0);
    assert_int_equal(n, 2);

    /* A batch with one bad document writes nothing. */
    struct tr_text_doc batch[] = {doc("ok", "fine", NULL, 0), doc("", "empty id", NULL, 0)};
    assert_int_equal(tr_text_index_upsert(f->ix, batch, 2, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "document 2"));
    assert_int_equal(tr_text_index_count(f->ix, &n), 0);
    assert_int_equal(n, 2);
}

static int collect(const char *path, void *arg)
{
    char *acc = arg;
    size_t l = strlen(acc);
    snprintf(acc + l, 64 - l, "%s;", path);
    return 0;
}

static void test_manifest(void **state)
{
    struct fx *f = *state;
    open_ix(f, 0);
    struct tr_text_manifest m = {.mtime = 1700000000, .size = 42};
    memset(m.digest, 'a', 64);
    m.digest[64] = '\0';
    assert_int_equal(tr_text_index_manifest_put(f->ix, "b/x.md", &m), 0);
    m.size = 7;
    assert_int_equal(tr_text_index_manifest_put(f->ix, "a.txt", &m), 0);
    struct tr_text_manifest got;
    assert_int_equal(tr_text_index_manifest_get(f->ix, "b/x.md", &got), 1);
    assert_string_equal(got.digest, m.digest);
    assert_int_equal(got.mtime, 1700000000);
    assert_int_equal(got.size, 42);
    assert_int_equal(tr_text_index_manifest_get(f->ix, "nope", &got), 0);
    char acc[64] = "";
    assert_int_equal(tr_text_index_manifest_each(f->ix, collect, acc), 0);
    assert_string_equal(acc, "a.txt;b/x.md;");
    assert_int_equal(tr_text_index_manifest_del(f->ix, "a.txt"), 1);
    assert_int_equal(tr_text_index_manifest_del(f->ix, "a.txt"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bm25_known_answers, setup, teardown),
        cmocka_unit_test(test_cosine_topk_brute_force),
        cmocka_unit_test(test_rrf_hand_computed),
        cmocka_unit_test_setup_teardown(test_vector_and_hybrid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsert_delete_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
