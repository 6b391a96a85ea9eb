/*
 * lua_ingest.c - the C half of trellis.ingest (worker/ingest.h for the Lua
 * glue in worker/lua/trellis/ingest.lua), the openers of trellis.prompt and
 * trellis.eval (Lua modules whose only C need is sha256), and the data
 * folder and ingestion roots the retrieval modules share.
 *
 * The C functions reach pipelines only as upvalues of the Lua glue (the
 * table the glue receives as `...`), so the glue decides what pipelines
 * see. File access is confined twice: a root must lie inside an allowed
 * root (TRELLIS_INGEST_ROOTS, default the working folder and the data
 * folder), and a path must stay inside its root (tr_ingest_resolve: no
 * "..", symbolic links followed and checked).
 *
 * C memory that outlives a call that may raise is held by a userdata with
 * a __gc (metatable "trellis.ingest.holder"), so an error leaks nothing.
 *
 * Listing a folder, reading a file and the text transforms (normalize,
 * html_text, chunk: up to 64 MiB of text) run in the thread pool while the
 * task waits (worker/offload.h), on copies of their inputs, so the worker's
 * loop goes on meanwhile.
 *
 * Loop thread only, but for the job functions, which run on pool threads.
 */
#include <jansson.h>
#include <lauxlib.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "worker/ingest.h"
#include "lib/lua/pipeline.h"
#include "worker/lua_embed.h"
#include "worker/lua_rag.h"
#include "worker/offload.h"

#define HOLDER_MT "trellis.ingest.holder"
#define DATA_DIR_DEFAULT "./trellis-data"
#define TEXT_MAX (64u << 20) /* the largest string normalize/html_text/chunk take */

/* ====================================================================== */
/* Anchored C memory                                                      */
/* ====================================================================== */

enum holder_kind
{
    H_NONE,
    H_MEM,     /* p: tr_free */
    H_STRVEC,  /* p: n strings and the array */
    H_BUF,     /* buf */
    H_JSON     /* p: json_decref */
};

struct holder
{
    enum holder_kind kind; /* what p holds */
    void *p;               /* the memory, per kind */
    size_t n;              /* strings in p for H_STRVEC */
    struct tr_buf buf;     /* a buffer, always released */
};

static void holder_release(struct holder *h)
{
    if (h->kind == H_MEM) {
        tr_free(h->p);
    } else if (h->kind == H_STRVEC) {
        char **v = h->p;
        for (size_t i = 0; i < h->n; i++)
            tr_free(v[i]);
        tr_free(v);
    } else if (h->kind == H_JSON) {
        json_decref(h->p);
    }
    tr_buf_release(&h->buf);
    h->p = NULL;
    h->n = 0;
    h->kind = H_NONE;
}

static int holder_gc(lua_State *L)
{
    holder_release(lua_touserdata(L, 1));
    return 0;
}

static struct holder *push_holder(lua_State *L)
{
    struct holder *h = lua_newuserdatauv(L, sizeof(*h), 0);
    memset(h, 0, sizeof(*h));
    tr_buf_init(&h->buf, 0);
    if (luaL_newmetatable(L, HOLDER_MT)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return h;
}

static int raise_code(lua_State *L, int rc, const char *what, const char *subject)
{
    if (rc == TR_ENOMEM)
        return luaL_error(L, "not enough memory to %s '%s'", what, subject);
    return luaL_error(L, "cannot %s '%s': %s", what, subject, tr_strerror(rc));
}

/* ====================================================================== */
/* Folders                                                                */
/* ====================================================================== */

int tr_lua_rag_data_dir(char *out, size_t cap)
{
    const char *d = getenv("TRELLIS_DATA_DIR");
    if (d == NULL || d[0] == '\0')
        d = DATA_DIR_DEFAULT;
    if (mkdir(d, 0755) != 0 && errno != EEXIST)
        return -errno;
    char real[PATH_MAX];
    if (realpath(d, real) == NULL)
        return -errno;
    int w = snprintf(out, cap, "%s", real);
    return w < 0 || (size_t)w >= cap ? TR_E2BIG : 0;
}

static bool under(const char *path, const char *root)
{
    size_t rl = strlen(root);
    if (strcmp(root, "/") == 0)
        return true;
    return strncmp(path, root, rl) == 0 && (path[rl] == '\0' || path[rl] == '/');
}

/* True when the real path real lies inside the allowed root spelled a[0..n). */
static bool allowed_by(const char *real, const char *a, size_t n)
{
    char spec[PATH_MAX], ra[PATH_MAX];
    if (n == 0 || n >= sizeof(spec))
        return false;
    memcpy(spec, a, n);
    spec[n] = '\0';
    return realpath(spec, ra) != NULL && under(real, ra);
}

/* Checks that root is inside an allowed root and writes its real path. May raise. */
static void check_root(lua_State *L, const char *root, char *real)
{
    if (realpath(root, real) == NULL)
        luaL_error(L, "cannot use ingestion root '%s': %s", root, strerror(errno));
    const char *env = getenv("TRELLIS_INGEST_ROOTS");
    if (env != NULL && env[0] != '\0') {
        for (const char *s = env;;) {
            const char *e = strchr(s, ':');
            size_t n = e ? (size_t)(e - s) : strlen(s);
            if (allowed_by(real, s, n))
                return;
            if (e == NULL)
                break;
            s = e + 1;
        }
    } else {
        char dir[PATH_MAX];
        if (allowed_by(real, ".", 1))
            return;
        if (tr_lua_rag_data_dir(dir, sizeof(dir)) == 0 && under(real, dir))
            return;
    }
    luaL_error(L, "ingestion root '%s' is outside the allowed roots (TRELLIS_INGEST_ROOTS)",
               root);
}

/* ====================================================================== */
/* The C half of trellis.ingest                                           */
/* ====================================================================== */

struct list_job
{
    char root[PATH_MAX]; /* real path */
    char *glob;          /* owned copy, or NULL */
    char **v;
    size_t n;
    int rc;
};

static void list_release(void *job)
{
    struct list_job *j = job;
    for (size_t i = 0; i < j->n; i++)
        tr_free(j->v[i]);
    tr_free(j->v);
    tr_free(j->glob);
}

static void list_work(void *job)
{
    struct list_job *j = job;
    j->rc = tr_ingest_list(j->root, j->glob, &j->v, &j->n);
    if (j->rc < 0) {
        j->v = NULL;
        j->n = 0;
    }
}

static int list_done(lua_State *L, int status, lua_KContext ctx)
{
    struct list_job *j = tr_offload_job(L, (int)ctx);
    if (j->rc < 0)
        return raise_code(L, j->rc, "list", lua_tostring(L, 1));
    lua_createtable(L, (int)j->n, 0);
    for (size_t i = 0; i < j->n; i++) {
        lua_pushstring(L, j->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* list(root, glob?) -> sorted array of paths relative to root. May raise. */
static int l_list(lua_State *L)
{
    luaL_checkstring(L, 1);
    const char *glob = luaL_optstring(L, 2, NULL);
    lua_settop(L, 2);
    struct list_job *j = tr_offload_job_new(L, sizeof(*j), list_release); /* 3 */
    check_root(L, lua_tostring(L, 1), j->root);
    if (glob != NULL && (j->glob = tr_strdup(glob)) == NULL)
        return luaL_error(L, "not enough memory");
    return tr_offload_run(L, 3, NULL, list_work, list_done);
}

/* stat(root, rel) -> {mtime, size}, or nil and a message. May raise. */
static int l_stat(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1), *rel = luaL_checkstring(L, 2);
    struct holder *h = push_holder(L);
    char real[PATH_MAX];
    check_root(L, root, real);
    int rc = tr_ingest_resolve(real, rel, &h->buf);
    int64_t mtime = 0, size = 0;
    if (rc == 0)
        rc = tr_ingest_stat(h->buf.buf, &mtime, &size);
    holder_release(h);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot stat '%s': %s", rel, tr_strerror(rc));
        return 2;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, size);
    lua_setfield(L, -2, "size");
    return 1;
}

struct read_job
{
    char root[PATH_MAX]; /* real path */
    char *rel;           /* owned copy */
    struct tr_buf path;  /* the resolved path */
    struct tr_buf data;  /* the file's bytes */
    int64_t mtime, size;
    char digest[65];
    bool resolved;       /* the error, if any, is reading's */
    int rc;
};

static void read_release(void *job)
{
    struct read_job *j = job;
    tr_free(j->rel);
    tr_buf_release(&j->path);
    tr_buf_release(&j->data);
}

static void read_work(void *job)
{
    struct read_job *j = job;
    j->rc = tr_ingest_resolve(j->root, j->rel, &j->path);
    j->resolved = j->rc == 0;
    if (j->rc == 0)
        j->rc = tr_ingest_read_file(j->path.buf, &j->data, &j->mtime, &j->size);
    if (j->rc == 0)
        tr_sha256_hex(j->data.buf, j->data.len, j->digest);
}

static int read_done(lua_State *L, int status, lua_KContext ctx)
{
    struct read_job *j = tr_offload_job(L, (int)ctx);
    const char *root = lua_tostring(L, 1), *rel = lua_tostring(L, 2);
    if (j->rc == TR_EACCES && !j->resolved)
        return luaL_error(L, "path '%s' leaves the ingestion root '%s'", rel, root);
    if (j->rc < 0)
        return raise_code(L, j->rc, j->resolved ? "read" : "open", rel);
    lua_pushlstring(L, j->data.buf, j->data.len);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, j->digest);
    lua_setfield(L, -2, "digest");
    lua_pushinteger(L, j->mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, j->size);
    lua_setfield(L, -2, "size");
    return 2;
}

/* read(root, rel) -> bytes, {digest, mtime, size}. May raise. */
static int l_read(lua_State *L)
{
    luaL_checkstring(L, 1);
    const char *rel = luaL_checkstring(L, 2);
    lua_settop(L, 2);
    struct read_job *j = tr_offload_job_new(L, sizeof(*j), read_release); /* 3 */
    tr_buf_init(&j->path, 0);
    tr_buf_init(&j->data, 0);
    check_root(L, lua_tostring(L, 1), j->root);
    if ((j->rel = tr_strdup(rel)) == NULL)
        return luaL_error(L, "not enough memory");
    return tr_offload_run(L, 3, NULL, read_work, read_done);
}

typedef int (*text_fn)(const char *p, size_t len, struct tr_buf *out);

struct text_job
{
    text_fn fn;                 /* a transform, or NULL: chunk */
    char *in;                   /* owned copy of the text */
    size_t len;
    struct tr_buf out;          /* a transform's result */
    struct tr_chunk_opts opts;  /* chunk's options ... */
    struct tr_chunk *chunks;    /* ... and result */
    size_t n;
    const char *what;           /* for messages */
    int rc;
};

static void text_release(void *job)
{
    struct text_job *j = job;
    tr_free(j->in);
    tr_buf_release(&j->out);
    tr_free(j->chunks);
}

static void text_work(void *job)
{
    struct text_job *j = job;
    if (j->fn != NULL) {
        j->rc = j->fn(j->in, j->len, &j->out);
        return;
    }
    j->rc = tr_ingest_chunk(j->in, j->len, &j->opts, &j->chunks, &j->n);
    if (j->rc < 0) {
        j->chunks = NULL;
        j->n = 0;
    }
}

static int text_done(lua_State *L, int status, lua_KContext ctx)
{
    struct text_job *j = tr_offload_job(L, (int)ctx);
    if (j->rc < 0)
        return raise_code(L, j->rc, j->what, "text");
    if (j->fn != NULL) {
        lua_pushlstring(L, j->out.buf, j->out.len);
        return 1;
    }
    const struct tr_chunk *c = j->chunks;
    lua_createtable(L, (int)j->n, 0);
    for (size_t i = 0; i < j->n; i++) {
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, (lua_Integer)c[i].start);
        lua_setfield(L, -2, "start");
        lua_pushinteger(L, (lua_Integer)c[i].end);
        lua_setfield(L, -2, "stop");
        if (c[i].heading_len > 0) {
            lua_pushlstring(L, j->in + c[i].heading_start, c[i].heading_len);
            lua_setfield(L, -2, "heading");
        }
        lua_pushinteger(L, c[i].heading_level);
        lua_setfield(L, -2, "level");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* A text job on argument 1 (a copy), its userdata at 3. May raise. */
static struct text_job *text_job(lua_State *L, text_fn fn, const char *what)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len <= TEXT_MAX, 1, "text too long");
    lua_settop(L, 2);
    struct text_job *j = tr_offload_job_new(L, sizeof(*j), text_release);
    tr_buf_init(&j->out, 0);
    j->fn = fn;
    j->what = what;
    j->in = tr_malloc(len + 1);
    if (j->in == NULL)
        luaL_error(L, "not enough memory");
    memcpy(j->in, s, len);
    j->in[len] = '\0';
    j->len = len;
    return j;
}

static int l_normalize(lua_State *L)
{
    text_job(L, tr_ingest_normalize, "normalize");
    return tr_offload_run(L, 3, NULL, text_work, text_done);
}

static int l_html_text(lua_State *L)
{
    text_job(L, tr_ingest_html_text, "extract text from");
    return tr_offload_run(L, 3, NULL, text_work, text_done);
}

/* chunk(text, {size=, overlap=, markdown=}) -> array of {start, stop, heading?, level}. */
static int l_chunk(lua_State *L)
{
    struct tr_chunk_opts o = {0};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "size");
        lua_getfield(L, 2, "overlap");
        lua_getfield(L, 2, "markdown");
        lua_Integer size = luaL_optinteger(L, -3, 1000);
        lua_Integer overlap = luaL_optinteger(L, -2, 0);
        luaL_argcheck(L, size >= 16 && size <= (1 << 24), 2, "size must be 16..16777216");
        luaL_argcheck(L, overlap >= 0 && overlap < size, 2, "overlap must be 0..size-1");
        o.size = (size_t)size;
        o.overlap = (size_t)overlap;
        o.markdown = lua_toboolean(L, -1);
        lua_pop(L, 3);
    }
    struct text_job *j = text_job(L, NULL, "chunk");
    j->opts = o;
    return tr_offload_run(L, 3, NULL, text_work, text_done);
}

/* sha256(s) -> 64 hex characters. */
static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char hex[65];
    tr_sha256_hex(s, len, hex);
    lua_pushlstring(L, hex, 64);
    return 1;
}

/*
 * jsonl(text, field?) -> array of {text, start, stop, line}, skipped: each
 * line that is a JSON object with a string `field` (default "text") gives
 * one record; other non-blank lines are counted as skipped. May raise.
 */
static int l_jsonl(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *field = luaL_optstring(L, 2, "text");
    struct holder *h = push_holder(L);
    lua_newtable(L);
    lua_Integer n = 0, skipped = 0, line = 0;
    for (size_t ls = 0; ls < len;) {
        const char *nl = memchr(s + ls, '\n', len - ls);
        size_t le = nl ? (size_t)(nl - s) : len;
        line++;
        size_t a = ls;
        while (a < le && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r'))
            a++;
        if (a < le) {
            json_error_t jerr;
            h->p = json_loadb(s + ls, le - ls, JSON_REJECT_DUPLICATES, &jerr);
            h->kind = h->p ? H_JSON : H_NONE;
            json_t *v = h->p ? json_object_get(h->p, field) : NULL;
            if (v != NULL && json_is_string(v)) {
                lua_createtable(L, 0, 4);
                lua_pushlstring(L, json_string_value(v), json_string_length(v));
                lua_setfield(L, -2, "text");
                lua_pushinteger(L, (lua_Integer)ls);
                lua_setfield(L, -2, "start");
                lua_pushinteger(L, (lua_Integer)le);
                lua_setfield(L, -2, "stop");
                lua_pushinteger(L, line);
                lua_setfield(L, -2, "line");
                lua_rawseti(L, -2, ++n);
            } else {
                skipped++;
            }
            holder_release(h);
        }
        ls = nl ? le + 1 : len;
    }
    lua_pushinteger(L, skipped);
    return 2;
}

int tr_lua_rag_push_native(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"list", l_list},         {"stat", l_stat},     {"read", l_read},
        {"normalize", l_normalize}, {"html_text", l_html_text}, {"chunk", l_chunk},
        {"sha256", l_sha256},     {"jsonl", l_jsonl},   {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

int tr_lua_ingest_open(lua_State *L)
{
    tr_lua_rag_push_native(L);
    tr_lua_embedded_call(L, "trellis.ingest", 1);
    return 1;
}

int tr_lua_prompt_open(lua_State *L)
{
    tr_lua_rag_push_native(L);
    tr_lua_embedded_call(L, "trellis.prompt", 1);
    return 1;
}

int tr_lua_eval_open(lua_State *L)
{
    tr_lua_rag_push_native(L);
    tr_lua_embedded_call(L, "trellis.eval", 1);
    return 1;
}
