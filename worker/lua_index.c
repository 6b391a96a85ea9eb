/*
 * lua_index.c - trellis.index: worker/text_index.h for pipelines.
 *
 *   local index = require "trellis.index"
 *   local idx = index.open("docs.db", { dim = 384 })
 *   idx:upsert { { id = "a", text = "...", vector = { ... }, meta = { source = "x.md" } } }
 *   local hits = idx:search { query = "words", vector = { ... }, k = 5, mode = "hybrid" }
 *   idx:delete("a"); idx:close()
 *
 * An index object is a userdata (metatable "trellis.index.index") pointing
 * at a struct ixref: one SQLite connection and the lane (worker/offload.h)
 * that gives it to one thread at a time. Every call that touches SQLite or
 * scans vectors runs in the thread pool while the task waits, so the loop
 * (heartbeats, other tasks) goes on during a long search or upsert. Each
 * such call copies what it needs into its job first: a task stopped while
 * its job runs leaves nothing the job still reads. Closing an index whose
 * lane is busy (__gc of an index a stopped task held, say) closes the
 * connection once its last job ended.
 *
 * C memory that must live across calls that may raise (packed meta, query
 * vectors, search hits) is the job's, held by its userdata (offload.h), so
 * a Lua error raised midway leaks nothing.
 *
 * Loop thread only, but for the job functions, which run on pool threads.
 */
#include <lauxlib.h>
#include <limits.h>
#include <sys/stat.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/lua_msgpack.h"
#include "worker/lua_index_int.h"
#include "worker/lua_rag.h"
#include "worker/offload.h"
#include "worker/pg_index.h"
#include "worker/text_index.h"

#define INDEX_MT "trellis.index.index"

/* The largest batch one upsert takes. */
#define UPSERT_MAX 100000

/* One connection, shared by the index object and the jobs that use it. */
struct ixref
{
    struct tr_offload_lane lane; /* first: the lane's on_idle finds the ixref */
    struct tr_text_index *ix;    /* SQLite, or */
    struct tr_pg_index *pg;      /* PostgreSQL */
    bool closed;                 /* closed by Lua: freed once the lane is idle */
};

struct lindex
{
    struct ixref *ref; /* NULL once closed */
};

static void ixref_free(struct ixref *r)
{
    tr_text_index_free(r->ix);
    tr_pg_index_free(r->pg);
    tr_free(r);
}

static void ixref_idle(struct tr_offload_lane *lane)
{
    struct ixref *r = (struct ixref *)(void *)lane;
    if (r->closed)
        ixref_free(r);
}

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

/* ====================================================================== */
/* Methods                                                                */
/* ====================================================================== */

static struct ixref *check_open(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    if (li->ref == NULL)
        luaL_error(L, "the index is closed");
    return li->ref;
}

/* Raises err's message (after what) when rc is negative; returns rc. */
static int check_rc(lua_State *L, int rc, const struct tr_error *err, const char *what)
{
    if (rc < 0)
        luaL_error(L, "%s: %s", what, err->msg[0] ? err->msg : tr_strerror(rc));
    return rc;
}

/* Reads the array at idx into floats appended to b (4-byte aligned); returns their offset. */
static size_t read_vector(lua_State *L, int idx, struct tr_buf *b, size_t *dim, const char *what)
{
    lua_Integer n = luaL_len(L, idx);
    if (n <= 0 || n > TR_TEXT_INDEX_DIM_MAX)
        luaL_error(L, "%s: a vector needs 1 to %d numbers", what, TR_TEXT_INDEX_DIM_MAX);
    while (b->len % sizeof(float) != 0) {
        if (tr_buf_addch(b, 0) < 0)
            luaL_error(L, "not enough memory");
    }
    size_t off = b->len;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        int isnum;
        lua_Number v = lua_tonumberx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum)
            luaL_error(L, "%s: vector element %d is not a number", what, (int)i);
        float f = (float)v;
        if (tr_buf_add(b, &f, sizeof(f)) < 0)
            luaL_error(L, "not enough memory");
    }
    *dim = (size_t)n;
    return off;
}

/*
 * A string field of the table at idx, or NULL when absent. With an anchor
 * table (its stack index, or 0 for none), a number is accepted too: its
 * string form is kept alive in the anchor. Strings stay alive in the table.
 * May raise.
 */
static const char *opt_field(lua_State *L, int idx, const char *k, size_t *len, const char *what,
                             int anchor)
{
    int t = lua_getfield(L, idx, k);
    const char *s = NULL;
    if (t == LUA_TSTRING) {
        s = lua_tolstring(L, -1, len);
    } else if (t == LUA_TNUMBER && anchor != 0) {
        s = lua_tolstring(L, -1, len);
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: field '%s' must be a string", what, k);
    }
    lua_pop(L, 1);
    return s;
}

/* ---------------------------------------------------------------------- */
/* upsert                                                                 */
/* ---------------------------------------------------------------------- */

enum
{
    OFF_ID,
    OFF_TEXT,
    OFF_SOURCE,
    OFF_META,
    OFF_VEC,
    N_OFF
};

struct upsert_job
{
    struct ixref *ref;
    struct tr_text_doc *docs;
    size_t n;
    size_t *off;         /* N_OFF offsets into b per document */
    struct tr_buf b;     /* copies of every string, meta and vector */
    int rc;
    struct tr_error err;
};

static void upsert_release(void *job)
{
    struct upsert_job *j = job;
    tr_free(j->docs);
    tr_free(j->off);
    tr_buf_release(&j->b);
}

static void upsert_work(void *job)
{
    struct upsert_job *j = job;
    struct ixref *r = j->ref;
    j->rc = r->pg ? tr_pg_index_upsert(r->pg, j->docs, j->n, &j->err)
                  : tr_text_index_upsert(r->ix, j->docs, j->n, &j->err);
}

static int upsert_done(lua_State *L, int status, lua_KContext ctx)
{
    struct upsert_job *j = tr_offload_job(L, (int)ctx);
    check_rc(L, j->rc, &j->err, "cannot upsert");
    return 0;
}

/* Appends len bytes of p to b (4-byte aligned when align); returns their offset. May raise. */
static size_t copy_in(lua_State *L, struct tr_buf *b, const void *p, size_t len)
{
    size_t off = b->len;
    if (tr_buf_add(b, p, len) < 0)
        luaL_error(L, "not enough memory");
    return off;
}

/* idx:upsert(docs): inserts or replaces each {id, text, vector?, meta?, source?}. May raise. */
static int l_upsert(lua_State *L)
{
    struct ixref *ref = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    luaL_argcheck(L, n >= 0 && n <= UPSERT_MAX, 2, "too many documents in one upsert");
    if (n == 0)
        return 0;
    lua_settop(L, 2);
    struct upsert_job *j = tr_offload_job_new(L, sizeof(*j), upsert_release); /* 3 */
    tr_buf_init(&j->b, 0);
    j->ref = ref;
    j->n = (size_t)n;
    j->docs = tr_calloc((size_t)n, sizeof(*j->docs));
    j->off = tr_calloc((size_t)n * N_OFF, sizeof(*j->off));
    if (j->docs == NULL || j->off == NULL)
        return luaL_error(L, "not enough memory");
    struct tr_buf *b = &j->b;
    char what[48];
    for (lua_Integer i = 1; i <= n; i++) {
        struct tr_text_doc *d = &j->docs[i - 1];
        size_t *off = &j->off[(i - 1) * N_OFF];
        snprintf(what, sizeof(what), "document %d", (int)i);
        if (lua_geti(L, 2, i) != LUA_TTABLE)
            return luaL_error(L, "%s is not a table", what);
        int t = lua_gettop(L);
        lua_newtable(L); /* keeps the string form of a numeric id */
        int anchor = t + 1;
        const char *id = opt_field(L, t, "id", &d->id_len, what, anchor);
        const char *text = opt_field(L, t, "text", &d->text_len, what, 0);
        if (id == NULL || text == NULL)
            return luaL_error(L, "%s needs an id and a text", what);
        off[OFF_ID] = copy_in(L, b, id, d->id_len);
        off[OFF_TEXT] = copy_in(L, b, text, d->text_len);
        const char *source = opt_field(L, t, "source", &d->source_len, what, 0);
        if (lua_getfield(L, t, "meta") != LUA_TNIL) {
            int m = lua_gettop(L);
            if (!lua_istable(L, m))
                return luaL_error(L, "%s: field 'meta' must be a table", what);
            /* meta.source is the document's source unless one was given. */
            if (source == NULL)
                source = opt_field(L, m, "source", &d->source_len, what, 0);
            off[OFF_META] = b->len;
            msgpack_packer pk;
            msgpack_packer_init(&pk, b, buf_write);
            struct tr_error err;
            tr_error_init(&err);
            int rc = tr_lua_pack_named(L, m, "meta", &pk, &err);
            if (rc < 0)
                return luaL_error(L, "%s: %s", what,
                                  rc == TR_ENOMEM ? "not enough memory" : err.msg);
            d->meta_len = b->len - off[OFF_META];
            d->meta = b; /* marks "has meta"; fixed below, once b stops moving */
        }
        lua_pop(L, 1);
        if (source != NULL) {
            off[OFF_SOURCE] = copy_in(L, b, source, d->source_len);
            d->source = (const char *)b; /* marks "has source" */
        }
        if (lua_getfield(L, t, "vector") != LUA_TNIL) {
            if (!lua_istable(L, -1))
                return luaL_error(L, "%s: field 'vector' must be an array of numbers", what);
            off[OFF_VEC] = read_vector(L, lua_gettop(L), b, &d->dim, what);
            d->vec = (const float *)b;
        }
        lua_settop(L, 3);
    }
    for (size_t i = 0; i < j->n; i++) {
        struct tr_text_doc *d = &j->docs[i];
        const size_t *off = &j->off[i * N_OFF];
        d->id = b->buf + off[OFF_ID];
        d->text = b->buf + off[OFF_TEXT];
        if (d->source != NULL)
            d->source = b->buf + off[OFF_SOURCE];
        if (d->meta != NULL)
            d->meta = b->buf + off[OFF_META];
        if (d->vec != NULL)
            d->vec = (const float *)(void *)(b->buf + off[OFF_VEC]);
    }
    return tr_offload_run(L, 3, &ref->lane, upsert_work, upsert_done);
}

/* ---------------------------------------------------------------------- */
/* Calls on one key: delete, delete_source, count, manifest               */
/* ---------------------------------------------------------------------- */

enum key_op
{
    K_DELETE,
    K_DELETE_SOURCE,
    K_COUNT,
    K_MANIFEST_GET,
    K_MANIFEST_PUT,
    K_MANIFEST_DEL,
    K_MANIFEST_PATHS
};

struct key_job
{
    struct ixref *ref;
    enum key_op op;
    char *key;                   /* owned copy (NUL-terminated) */
    size_t key_len;
    struct tr_text_manifest m;   /* manifest_get's answer, manifest_put's row */
    size_t count;
    struct tr_buf paths;         /* manifest_paths: NUL-separated */
    int rc;
    struct tr_error err;
};

static void key_release(void *job)
{
    struct key_job *j = job;
    tr_free(j->key);
    tr_buf_release(&j->paths);
}

/* Appends one manifest path and its NUL; never raises. */
static int each_path(const char *path, void *arg)
{
    return tr_buf_add(arg, path, strlen(path) + 1) == 0 ? 0 : TR_ENOMEM;
}

static void key_work(void *job)
{
    struct key_job *j = job;
    struct tr_text_index *ix = j->ref->ix;
    struct tr_pg_index *pg = j->ref->pg;
    switch (j->op) {
    case K_DELETE:
        j->rc = pg ? tr_pg_index_delete(pg, j->key, j->key_len, &j->err)
                   : tr_text_index_delete(ix, j->key, j->key_len, &j->err);
        break;
    case K_DELETE_SOURCE:
        j->rc = pg ? tr_pg_index_delete_source(pg, j->key, j->key_len, &j->err)
                   : tr_text_index_delete_source(ix, j->key, j->key_len, &j->err);
        break;
    case K_COUNT:
        j->rc = pg ? tr_pg_index_count(pg, &j->count) : tr_text_index_count(ix, &j->count);
        break;
    case K_MANIFEST_GET:
        j->rc = pg ? tr_pg_index_manifest_get(pg, j->key, &j->m)
                   : tr_text_index_manifest_get(ix, j->key, &j->m);
        break;
    case K_MANIFEST_PUT:
        j->rc = pg ? tr_pg_index_manifest_put(pg, j->key, &j->m)
                   : tr_text_index_manifest_put(ix, j->key, &j->m);
        break;
    case K_MANIFEST_DEL:
        j->rc = pg ? tr_pg_index_manifest_del(pg, j->key) : tr_text_index_manifest_del(ix, j->key);
        break;
    case K_MANIFEST_PATHS:
        j->rc = pg ? tr_pg_index_manifest_each(pg, each_path, &j->paths)
                   : tr_text_index_manifest_each(ix, each_path, &j->paths);
        break;
    }
}

static int key_done(lua_State *L, int status, lua_KContext ctx)
{
    struct key_job *j = tr_offload_job(L, (int)ctx);
    switch (j->op) {
    case K_DELETE:
        check_rc(L, j->rc, &j->err, "cannot delete");
        lua_pushboolean(L, j->rc == 1);
        return 1;
    case K_DELETE_SOURCE:
        check_rc(L, j->rc, &j->err, "cannot delete source");
        lua_pushinteger(L, j->rc);
        return 1;
    case K_COUNT:
        if (j->rc < 0)
            return luaL_error(L, "cannot count documents");
        lua_pushinteger(L, (lua_Integer)j->count);
        return 1;
    case K_MANIFEST_GET:
        if (j->rc < 0)
            return luaL_error(L, "cannot read the manifest");
        if (j->rc == 0)
            return 0;
        lua_createtable(L, 0, 3);
        lua_pushstring(L, j->m.digest);
        lua_setfield(L, -2, "digest");
        lua_pushinteger(L, j->m.mtime);
        lua_setfield(L, -2, "mtime");
        lua_pushinteger(L, j->m.size);
        lua_setfield(L, -2, "size");
        return 1;
    case K_MANIFEST_PUT:
        if (j->rc < 0)
            return luaL_error(L, "cannot write the manifest");
        return 0;
    case K_MANIFEST_DEL:
        if (j->rc < 0)
            return luaL_error(L, "cannot write the manifest");
        lua_pushboolean(L, j->rc == 1);
        return 1;
    case K_MANIFEST_PATHS:
        break;
    }
    if (j->rc != 0)
        return luaL_error(L, "cannot read the manifest: %s", tr_strerror(j->rc));
    lua_newtable(L);
    lua_Integer n = 0;
    for (size_t off = 0; off < j->paths.len;) {
        size_t l = strlen(j->paths.buf + off);
        lua_pushlstring(L, j->paths.buf + off, l);
        lua_rawseti(L, -2, ++n);
        off += l + 1;
    }
    return 1;
}

/*
 * Starts a key job: argument 2 (a string) is its key when key is true.
 * Leaves the job's userdata at index 4 (after the optional argument 3).
 */
static struct key_job *key_job(lua_State *L, enum key_op op, bool key)
{
    struct ixref *ref = check_open(L);
    size_t len = 0;
    const char *k = key ? luaL_checklstring(L, 2, &len) : NULL;
    lua_settop(L, 3);
    struct key_job *j = tr_offload_job_new(L, sizeof(*j), key_release);
    tr_buf_init(&j->paths, 0);
    j->ref = ref;
    j->op = op;
    if (k != NULL) {
        j->key = tr_strndup(k, len);
        if (j->key == NULL)
            luaL_error(L, "not enough memory");
        j->key_len = len;
    }
    return j;
}

static int run_key(lua_State *L, struct key_job *j)
{
    return tr_offload_run(L, 4, &j->ref->lane, key_work, key_done);
}

/* idx:delete(id) -> true when the document existed. May raise. */
static int l_delete(lua_State *L)
{
    return run_key(L, key_job(L, K_DELETE, true));
}

/* idx:delete_source(source) -> how many documents went. May raise. */
static int l_delete_source(lua_State *L)
{
    return run_key(L, key_job(L, K_DELETE_SOURCE, true));
}

static int l_count(lua_State *L)
{
    return run_key(L, key_job(L, K_COUNT, false));
}

static int l_dim(lua_State *L)
{
    struct ixref *ref = check_open(L);
    if (tr_offload_lane_busy(&ref->lane))
        return luaL_error(L, "the index is in use by a call of another task");
    lua_pushinteger(L, (lua_Integer)(ref->pg ? tr_pg_index_dim(ref->pg)
                                             : tr_text_index_dim(ref->ix)));
    return 1;
}

/* idx:manifest_get(path) -> {digest, mtime, size} or nil. May raise. */
static int l_manifest_get(lua_State *L)
{
    return run_key(L, key_job(L, K_MANIFEST_GET, true));
}

/* idx:manifest_put(path, {digest=, mtime=, size=}). May raise. */
static int l_manifest_put(lua_State *L)
{
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    struct tr_text_manifest m = {0};
    lua_getfield(L, 3, "digest");
    size_t dl;
    const char *d = lua_tolstring(L, -1, &dl);
    luaL_argcheck(L, d != NULL && dl == 64, 3, "digest must be 64 hex characters");
    memcpy(m.digest, d, 64);
    lua_getfield(L, 3, "mtime");
    lua_getfield(L, 3, "size");
    m.mtime = luaL_checkinteger(L, -2);
    m.size = luaL_checkinteger(L, -1);
    struct key_job *j = key_job(L, K_MANIFEST_PUT, true);
    j->m = m;
    return run_key(L, j);
}

static int l_manifest_del(lua_State *L)
{
    return run_key(L, key_job(L, K_MANIFEST_DEL, true));
}

/* idx:manifest_paths() -> sorted array of every path in the manifest. May raise. */
static int l_manifest_paths(lua_State *L)
{
    return run_key(L, key_job(L, K_MANIFEST_PATHS, false));
}

/* ---------------------------------------------------------------------- */
/* search                                                                 */
/* ---------------------------------------------------------------------- */

/* Pushes one hit as {id, text, score, source, meta}. May raise. */
static void push_hit(lua_State *L, const struct tr_text_hit *h)
{
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, h->id, h->id_len);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, h->text, h->text_len);
    lua_setfield(L, -2, "text");
    lua_pushnumber(L, h->score);
    lua_setfield(L, -2, "score");
    if (h->source != NULL) {
        lua_pushlstring(L, h->source, h->source_len);
        lua_setfield(L, -2, "source");
    }
    if (h->meta != NULL) {
        struct tr_error err;
        tr_error_init(&err);
        int rc = tr_lua_unpack_bytes(L, h->meta, h->meta_len, &err);
        if (rc < 0)
            luaL_error(L, "cannot decode the meta of '%s': %s", h->id, err.msg);
        lua_setfield(L, -2, "meta");
    }
}

struct search_job
{
    struct ixref *ref;
    struct tr_text_query q;
    struct tr_buf b;          /* the query's text and vector */
    struct tr_text_hits hits;
    int rc;
    struct tr_error err;
};

static void search_release(void *job)
{
    struct search_job *j = job;
    tr_buf_release(&j->b);
    tr_text_hits_release(&j->hits);
}

static void search_work(void *job)
{
    struct search_job *j = job;
    struct ixref *r = j->ref;
    j->rc = r->pg ? tr_pg_index_search(r->pg, &j->q, &j->hits, &j->err)
                  : tr_text_index_search(r->ix, &j->q, &j->hits, &j->err);
}

static int search_done(lua_State *L, int status, lua_KContext ctx)
{
    struct search_job *j = tr_offload_job(L, (int)ctx);
    check_rc(L, j->rc, &j->err, "cannot search");
    lua_createtable(L, (int)j->hits.n, 0);
    for (size_t i = 0; i < j->hits.n; i++) {
        push_hit(L, &j->hits.v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* idx:search{query=, vector=, k=, mode=, rrf_k=} -> array of hits, best first. May raise. */
static int l_search(lua_State *L)
{
    struct ixref *ref = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct search_job *j = tr_offload_job_new(L, sizeof(*j), search_release); /* 3 */
    tr_buf_init(&j->b, 0);
    j->ref = ref;
    struct tr_text_query *q = &j->q;
    size_t tl = 0;
    const char *text = opt_field(L, 2, "query", &tl, "search", 0);
    lua_Integer k = 10;
    if (lua_getfield(L, 2, "k") != LUA_TNIL) {
        int isnum;
        k = lua_tointegerx(L, -1, &isnum);
        if (!isnum)
            return luaL_error(L, "search: k must be an integer");
    }
    lua_pop(L, 1);
    if (k < 1 || k > TR_TEXT_INDEX_K_MAX)
        return luaL_error(L, "search: k must be between 1 and %d", TR_TEXT_INDEX_K_MAX);
    q->k = (size_t)k;
    if (lua_getfield(L, 2, "rrf_k") != LUA_TNIL)
        q->rrf_k = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    size_t voff = 0;
    bool has_vec = false;
    if (lua_getfield(L, 2, "vector") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "search: field 'vector' must be an array of numbers");
        voff = read_vector(L, lua_gettop(L), &j->b, &q->dim, "search");
        has_vec = true;
    }
    lua_pop(L, 1);
    size_t toff = text ? copy_in(L, &j->b, text, tl) : 0;
    q->vec = has_vec ? (const float *)(void *)(j->b.buf + voff) : NULL;
    q->text = text ? j->b.buf + toff : NULL;
    q->text_len = tl;
    size_t ml;
    const char *mode = opt_field(L, 2, "mode", &ml, "search", 0);
    if (mode == NULL)
        q->mode = q->vec && q->text ? TR_TEXT_HYBRID : q->vec ? TR_TEXT_VECTOR : TR_TEXT_BM25;
    else if (strcmp(mode, "bm25") == 0)
        q->mode = TR_TEXT_BM25;
    else if (strcmp(mode, "vector") == 0)
        q->mode = TR_TEXT_VECTOR;
    else if (strcmp(mode, "hybrid") == 0)
        q->mode = TR_TEXT_HYBRID;
    else
        return luaL_error(L, "search: mode must be \"bm25\", \"vector\" or \"hybrid\", not '%s'",
                          mode);
    return tr_offload_run(L, 3, &ref->lane, search_work, search_done);
}

/* ---------------------------------------------------------------------- */
/* open and close                                                         */
/* ---------------------------------------------------------------------- */

/* idx:close(), also __gc and __close: closes the connection once (after its last job). */
static int l_close(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    struct ixref *r = li->ref;
    li->ref = NULL;
    if (r == NULL)
        return 0;
    if (tr_offload_lane_busy(&r->lane))
        r->closed = true; /* ixref_idle frees it */
    else
        ixref_free(r);
    return 0;
}

static int l_tostring(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    lua_pushfstring(L, "trellis.index (%s%s)", li->ref ? "open" : "closed",
                    li->ref && li->ref->pg ? ", postgres" : "");
    return 1;
}

struct open_job
{
    char path[PATH_MAX];      /* the SQLite file, or the PostgreSQL index name */
    char *url;                /* PostgreSQL: the URL (owned), or NULL for SQLite */
    size_t dim;
    struct tr_text_index *ix; /* until done takes it */
    struct tr_pg_index *pg;   /* likewise */
    int rc;
    struct tr_error err;
};

static void open_release(void *job)
{
    struct open_job *j = job;
    tr_text_index_free(j->ix);
    tr_pg_index_free(j->pg);
    if (j->url != NULL)
        explicit_bzero(j->url, strlen(j->url)); /* it may hold a password */
    tr_free(j->url);
}

static void open_work(void *job)
{
    struct open_job *j = job;
    if (j->url != NULL)
        j->rc = tr_pg_index_open(j->url, j->path, j->dim, &j->pg, &j->err);
    else
        j->rc = tr_text_index_open(j->path, j->dim, &j->ix, &j->err);
}

static int open_done(lua_State *L, int status, lua_KContext ctx)
{
    struct open_job *j = tr_offload_job(L, (int)ctx);
    if (j->rc < 0)
        return luaL_error(L, "cannot open index '%s': %s", /* never the URL: its password */
                          j->url != NULL ? j->path : lua_tostring(L, 1), j->err.msg);
    struct lindex *li = lua_newuserdatauv(L, sizeof(*li), 0);
    li->ref = NULL;
    luaL_setmetatable(L, INDEX_MT);
    struct ixref *r = tr_calloc(1, sizeof(*r));
    if (r == NULL)
        return luaL_error(L, "not enough memory");
    tr_offload_lane_init(&r->lane);
    r->lane.on_idle = ixref_idle;
    r->ix = j->ix;
    r->pg = j->pg;
    j->ix = NULL;
    j->pg = NULL;
    li->ref = r;
    return 1;
}

/* index.open(path_or_url, {dim = N, name = S}) -> index. May raise. */
static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer dim = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "dim") != LUA_TNIL)
            dim = luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    luaL_argcheck(L, dim >= 0 && dim <= TR_TEXT_INDEX_DIM_MAX, 2, "dim out of range");
    lua_settop(L, 2);
    struct open_job *j = tr_offload_job_new(L, sizeof(*j), open_release); /* 3 */
    tr_lua_index_target(L, path, j->path, sizeof(j->path), &j->url);
    j->dim = (size_t)dim;
    return tr_offload_run(L, 3, NULL, open_work, open_done);
}

int tr_lua_index_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"upsert", l_upsert},
        {"delete", l_delete},
        {"delete_source", l_delete_source},
        {"search", l_search},
        {"count", l_count},
        {"dim", l_dim},
        {"manifest_get", l_manifest_get},
        {"manifest_put", l_manifest_put},
        {"manifest_del", l_manifest_del},
        {"manifest_paths", l_manifest_paths},
        {"close", l_close},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, INDEX_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    return 1;
}
