/*
 * lua_index.c - trellis.index: worker/text_index.h for pipelines.
 *
 *   local index = require "trellis.index"
 *   local idx = index.open("docs.db", { dim = 384 })
 *   idx:upsert { { id = "a", text = "...", vector = { ... }, meta = { source = "x.md" } } }
 *   local hits = idx:search { query = "words", vector = { ... }, k = 5, mode = "hybrid" }
 *   idx:delete("a"); idx:close()
 *
 * An index object is a userdata (metatable "trellis.index.index") holding
 * one SQLite connection. Every call is synchronous and no callback can
 * still reach the connection afterwards, so __gc and __close may close it
 * themselves: there is nothing for the loop to wait for (contrast with
 * trellis.http, whose __gc only detaches a transfer in flight).
 *
 * C memory that must live across calls that may raise (packed meta, query
 * vectors, search hits) is held by userdata with their own __gc, so a Lua
 * error raised midway leaks nothing.
 *
 * Loop thread only.
 */
#include <lauxlib.h>
#include <limits.h>
#include <sys/stat.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/lua_msgpack.h"
#include "worker/text_index.h"
#include "worker/lua_rag.h"

#define INDEX_MT "trellis.index.index"
#define SCRATCH_MT "trellis.index.scratch"
#define HITS_MT "trellis.index.hits"

/* The largest batch one upsert takes. */
#define UPSERT_MAX 100000

struct lindex
{
    struct tr_text_index *ix; /* NULL once closed */
};

/* ====================================================================== */
/* Anchored scratch memory                                                */
/* ====================================================================== */

static int scratch_gc(lua_State *L)
{
    tr_buf_release(lua_touserdata(L, 1));
    return 0;
}

/* Pushes a userdata holding an empty tr_buf, freed by its __gc. */
static struct tr_buf *push_scratch(lua_State *L)
{
    struct tr_buf *b = lua_newuserdatauv(L, sizeof(*b), 0);
    tr_buf_init(b, 0);
    luaL_setmetatable(L, SCRATCH_MT);
    return b;
}

static int hits_gc(lua_State *L)
{
    tr_text_hits_release(lua_touserdata(L, 1));
    return 0;
}

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

/* ====================================================================== */
/* Paths                                                                  */
/* ====================================================================== */

static bool has_dotdot(const char *p)
{
    for (const char *s = p; *s != '\0';) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.')
            return true;
        s += l + (e != NULL);
    }
    return false;
}

/*
 * Resolves an index path into out: relative to the data folder, or absolute
 * inside it; creates the folders on the way. May raise.
 */
static void index_path(lua_State *L, const char *path, char *out, size_t cap)
{
    char dir[PATH_MAX];
    int rc = tr_lua_rag_data_dir(dir, sizeof(dir));
    if (rc < 0)
        luaL_error(L, "cannot use the data folder: %s", tr_strerror(rc));
    size_t dl = strlen(dir);
    if (path[0] == '\0' || has_dotdot(path))
        luaL_error(L, "index path '%s' must not be empty nor hold '..'", path);
    const char *rel = path;
    if (path[0] == '/') {
        if (strncmp(path, dir, dl) != 0 || path[dl] != '/')
            luaL_error(L, "index path '%s' is outside the data folder '%s'", path, dir);
        rel = path + dl + 1;
    }
    int w = snprintf(out, cap, "%s/%s", dir, rel);
    if (w < 0 || (size_t)w >= cap)
        luaL_error(L, "index path '%s' is too long", path);
    /* Create the folders between the data folder and the file. */
    for (char *s = out + dl + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            *s = '/';
            luaL_error(L, "cannot create the folder of index '%s': %s", path, strerror(errno));
        }
        *s = '/';
    }
}

/* ====================================================================== */
/* Methods                                                                */
/* ====================================================================== */

static struct tr_text_index *check_open(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    if (li->ix == NULL)
        luaL_error(L, "the index is closed");
    return li->ix;
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

/* idx:upsert(docs): inserts or replaces each {id, text, vector?, meta?, source?}. May raise. */
static int l_upsert(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    luaL_argcheck(L, n >= 0 && n <= UPSERT_MAX, 2, "too many documents in one upsert");
    if (n == 0)
        return 0;
    struct tr_text_doc *docs = lua_newuserdatauv(L, (size_t)n * sizeof(*docs), 0); /* 3 */
    memset(docs, 0, (size_t)n * sizeof(*docs));
    struct tr_buf *b = push_scratch(L); /* 4 */
    size_t *meta_off = lua_newuserdatauv(L, 2 * (size_t)n * sizeof(size_t), 0); /* 5 */
    size_t *vec_off = meta_off + n;
    lua_newtable(L); /* 6: keeps the string forms of numeric ids */
    char what[48];
    for (lua_Integer i = 1; i <= n; i++) {
        struct tr_text_doc *d = &docs[i - 1];
        snprintf(what, sizeof(what), "document %d", (int)i);
        if (lua_geti(L, 2, i) != LUA_TTABLE)
            return luaL_error(L, "%s is not a table", what);
        int t = lua_gettop(L);
        d->id = opt_field(L, t, "id", &d->id_len, what, 6);
        d->text = opt_field(L, t, "text", &d->text_len, what, 0);
        if (d->id == NULL || d->text == NULL)
            return luaL_error(L, "%s needs an id and a text", what);
        d->source = opt_field(L, t, "source", &d->source_len, what, 0);
        if (lua_getfield(L, t, "meta") != LUA_TNIL) {
            int m = lua_gettop(L);
            if (!lua_istable(L, m))
                return luaL_error(L, "%s: field 'meta' must be a table", what);
            /* meta.source is the document's source unless one was given. */
            if (d->source == NULL)
                d->source = opt_field(L, m, "source", &d->source_len, what, 0);
            meta_off[i - 1] = b->len;
            msgpack_packer pk;
            msgpack_packer_init(&pk, b, buf_write);
            struct tr_error err;
            tr_error_init(&err);
            int rc = tr_lua_pack_named(L, m, "meta", &pk, &err);
            if (rc < 0)
                return luaL_error(L, "%s: %s", what,
                                  rc == TR_ENOMEM ? "not enough memory" : err.msg);
            d->meta_len = b->len - meta_off[i - 1];
            d->meta = b; /* marks "has meta"; fixed below, once b stops moving */
        }
        lua_pop(L, 1);
        if (lua_getfield(L, t, "vector") != LUA_TNIL) {
            if (!lua_istable(L, -1))
                return luaL_error(L, "%s: field 'vector' must be an array of numbers", what);
            vec_off[i - 1] = read_vector(L, lua_gettop(L), b, &d->dim, what);
            d->vec = (const float *)b;
        }
        lua_pop(L, 2);
    }
    for (lua_Integer i = 0; i < n; i++) {
        if (docs[i].meta != NULL)
            docs[i].meta = b->buf + meta_off[i];
        if (docs[i].vec != NULL)
            docs[i].vec = (const float *)(void *)(b->buf + vec_off[i]);
    }
    struct tr_error err;
    tr_error_init(&err);
    if (tr_text_index_upsert(ix, docs, (size_t)n, &err) < 0)
        return luaL_error(L, "cannot upsert: %s", err.msg);
    tr_buf_release(b);
    return 0;
}

/* idx:delete(id) -> true when the document existed. May raise. */
static int l_delete(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    size_t len;
    const char *id = luaL_checklstring(L, 2, &len);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_text_index_delete(ix, id, len, &err);
    if (rc < 0)
        return luaL_error(L, "cannot delete '%s': %s", id, err.msg);
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* idx:delete_source(source) -> how many documents went. May raise. */
static int l_delete_source(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_text_index_delete_source(ix, s, len, &err);
    if (rc < 0)
        return luaL_error(L, "cannot delete source '%s': %s", s, err.msg);
    lua_pushinteger(L, rc);
    return 1;
}

static int l_count(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    size_t n;
    if (tr_text_index_count(ix, &n) < 0)
        return luaL_error(L, "cannot count documents");
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int l_dim(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)tr_text_index_dim(check_open(L)));
    return 1;
}

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

/* idx:search{query=, vector=, k=, mode=, rrf_k=} -> array of hits, best first. May raise. */
static int l_search(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct tr_text_query q = {0};
    q.text = opt_field(L, 2, "query", &q.text_len, "search", 0);
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
    q.k = (size_t)k;
    if (lua_getfield(L, 2, "rrf_k") != LUA_TNIL)
        q.rrf_k = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    struct tr_buf *b = push_scratch(L);
    if (lua_getfield(L, 2, "vector") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "search: field 'vector' must be an array of numbers");
        size_t off = read_vector(L, lua_gettop(L), b, &q.dim, "search");
        q.vec = (const float *)(void *)(b->buf + off);
    }
    lua_pop(L, 1);
    size_t ml;
    const char *mode = opt_field(L, 2, "mode", &ml, "search", 0);
    if (mode == NULL)
        q.mode = q.vec && q.text ? TR_TEXT_HYBRID : q.vec ? TR_TEXT_VECTOR : TR_TEXT_BM25;
    else if (strcmp(mode, "bm25") == 0)
        q.mode = TR_TEXT_BM25;
    else if (strcmp(mode, "vector") == 0)
        q.mode = TR_TEXT_VECTOR;
    else if (strcmp(mode, "hybrid") == 0)
        q.mode = TR_TEXT_HYBRID;
    else
        return luaL_error(L, "search: mode must be \"bm25\", \"vector\" or \"hybrid\", not '%s'",
                          mode);
    struct tr_text_hits *hits = lua_newuserdatauv(L, sizeof(*hits), 0);
    hits->v = NULL;
    hits->n = 0;
    luaL_setmetatable(L, HITS_MT);
    struct tr_error err;
    tr_error_init(&err);
    if (tr_text_index_search(ix, &q, hits, &err) < 0)
        return luaL_error(L, "cannot search: %s", err.msg);
    lua_createtable(L, (int)hits->n, 0);
    for (size_t i = 0; i < hits->n; i++) {
        push_hit(L, &hits->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    tr_text_hits_release(hits);
    return 1;
}

/* idx:manifest_get(path) -> {digest, mtime, size} or nil. May raise. */
static int l_manifest_get(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    const char *path = luaL_checkstring(L, 2);
    struct tr_text_manifest m;
    int rc = tr_text_index_manifest_get(ix, path, &m);
    if (rc < 0)
        return luaL_error(L, "cannot read the manifest");
    if (rc == 0)
        return 0;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, m.digest);
    lua_setfield(L, -2, "digest");
    lua_pushinteger(L, m.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, m.size);
    lua_setfield(L, -2, "size");
    return 1;
}

/* idx:manifest_put(path, {digest=, mtime=, size=}). May raise. */
static int l_manifest_put(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    const char *path = luaL_checkstring(L, 2);
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
    if (tr_text_index_manifest_put(ix, path, &m) < 0)
        return luaL_error(L, "cannot write the manifest");
    return 0;
}

static int l_manifest_del(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    int rc = tr_text_index_manifest_del(ix, luaL_checkstring(L, 2));
    if (rc < 0)
        return luaL_error(L, "cannot write the manifest");
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* Appends one manifest path and its NUL to the scratch buffer; never raises. */
static int each_path(const char *path, void *arg)
{
    return tr_buf_add(arg, path, strlen(path) + 1) == 0 ? 0 : TR_ENOMEM;
}

/*
 * idx:manifest_paths() -> sorted array of every path in the manifest. The
 * paths are gathered in C first: pushing strings may raise, and a raise
 * must not leave SQLite's statement (and its read transaction) open. May
 * raise.
 */
static int l_manifest_paths(lua_State *L)
{
    struct tr_text_index *ix = check_open(L);
    struct tr_buf *b = push_scratch(L);
    int rc = tr_text_index_manifest_each(ix, each_path, b);
    if (rc != 0)
        return luaL_error(L, "cannot read the manifest: %s", tr_strerror(rc));
    lua_newtable(L);
    lua_Integer n = 0;
    for (size_t off = 0; off < b->len;) {
        size_t l = strlen(b->buf + off);
        lua_pushlstring(L, b->buf + off, l);
        lua_rawseti(L, -2, ++n);
        off += l + 1;
    }
    tr_buf_release(b);
    return 1;
}

/* idx:close(), also __gc and __close: closes the connection once. */
static int l_close(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    tr_text_index_free(li->ix);
    li->ix = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    struct lindex *li = luaL_checkudata(L, 1, INDEX_MT);
    lua_pushfstring(L, "trellis.index (%s)", li->ix ? "open" : "closed");
    return 1;
}

/* index.open(path, {dim = N}) -> index. May raise. */
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
    char full[PATH_MAX];
    index_path(L, path, full, sizeof(full));
    struct lindex *li = lua_newuserdatauv(L, sizeof(*li), 0);
    li->ix = NULL;
    luaL_setmetatable(L, INDEX_MT);
    struct tr_error err;
    tr_error_init(&err);
    if (tr_text_index_open(full, (size_t)dim, &li->ix, &err) < 0)
        return luaL_error(L, "cannot open index '%s': %s", path, err.msg);
    return 1;
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
    if (luaL_newmetatable(L, SCRATCH_MT)) {
        lua_pushcfunction(L, scratch_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HITS_MT)) {
        lua_pushcfunction(L, hits_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    return 1;
}
