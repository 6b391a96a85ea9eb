/*
 * lua_msgpack.c - Lua values <-> msgpack.
 *
 * Packing walks the value with raw access only (lua_next, lua_rawgeti), so
 * no metamethod runs and nothing raises: a packer may be called on a task's
 * output without a protected call around it. The walk keeps the tables on
 * the current path to refuse cycles, and the key of each level, so that an
 * error names where the bad value sits ("output.items[3]"). A table that is
 * shared but not cyclic is encoded each time it appears; the number of values
 * and the encoded size are capped so that a small table cannot expand into an
 * unbounded encoding.
 *
 * The encoding is canonical: map entries are sorted by their encoded key,
 * shorter keys first (canonical CBOR's order, RFC 7049 section 3.9). Lua's
 * iteration order depends on a hash seed that differs from state to state,
 * and equal outputs must give equal bytes: the scheduler's cache keys hash
 * them, and the API prints maps in this order. The value is encoded into a
 * buffer of its own, where each map's entries are reordered once complete,
 * and handed to the caller's packer in one write.
 *
 * Pushing allocates Lua objects, which may raise a memory error, so it runs
 * inside lua_pcall.
 */
#include "lib/lua/lua_msgpack.h"

#include <lauxlib.h>
#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "lib/wire/proto.h"

#define PACK_MAX_VALUES (16u << 20) /* values in one encoding, shared tables counted each time */

/* ====================================================================== */
/* Lua -> msgpack                                                         */
/* ====================================================================== */

enum step_kind
{
    STEP_INDEX, /* an array element: [i] */
    STEP_KEY    /* a map entry: the key sits at stack index key_idx */
};

struct pack_step
{
    enum step_kind kind;
    lua_Integer index;
    int key_idx;
};

/* A map entry written into out: the key at [key_off, key_off + key_len), then the value. */
struct map_entry
{
    size_t key_off;
    size_t key_len;
    size_t end;
};

struct pack_ctx
{
    lua_State *L;
    struct tr_buf out;     /* the encoding so far */
    msgpack_packer pk;     /* writes into out */
    int write_rc;          /* out's error when a write failed */
    struct map_entry *ents; /* entries of the maps being written, innermost last */
    size_t n_ents;
    size_t cap_ents;
    struct tr_buf tmp;     /* a map's entries while they are reordered */
    struct tr_error *err;
    const char *root;
    uint64_t values;                                /* values packed so far */
    const void *path_tables[TR_LUA_MP_MAX_DEPTH];   /* tables on the current path */
    struct pack_step path[TR_LUA_MP_MAX_DEPTH];     /* how each level was reached */
};

static bool is_alpha_(char ch)
{
    return ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_identifier(const char *s, size_t len)
{
    if (len == 0 || len > 64 || !is_alpha_(s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!is_alpha_(s[i]) && !(s[i] >= '0' && s[i] <= '9'))
            return false;
    }
    return true;
}

/* Formats root plus the first depth steps of the path into out. */
static void format_path(struct pack_ctx *c, int depth, char *out, size_t n)
{
    size_t pos = (size_t)snprintf(out, n, "%s", c->root);
    for (int d = 0; d < depth && pos < n; d++) {
        const struct pack_step *s = &c->path[d];
        int w;
        if (s->kind == STEP_INDEX) {
            w = snprintf(out + pos, n - pos, "[%lld]", (long long)s->index);
        } else {
            lua_State *L = c->L;
            int k = s->key_idx;
            switch (lua_type(L, k)) {
            case LUA_TSTRING: {
                size_t len;
                const char *ks = lua_tolstring(L, k, &len);
                if (is_identifier(ks, len)) {
                    w = snprintf(out + pos, n - pos, ".%.*s", (int)len, ks);
                } else {
                    char esc[80];
                    tr_log_escape(esc, sizeof(esc), ks, TR_MIN(len, 48));
                    w = snprintf(out + pos, n - pos, "[\"%s\"]", esc);
                }
                break;
            }
            case LUA_TNUMBER:
                if (lua_isinteger(L, k))
                    w = snprintf(out + pos, n - pos, "[%lld]", (long long)lua_tointeger(L, k));
                else
                    w = snprintf(out + pos, n - pos, "[%g]", (double)lua_tonumber(L, k));
                break;
            case LUA_TBOOLEAN:
                w = snprintf(out + pos, n - pos, "[%s]", lua_toboolean(L, k) ? "true" : "false");
                break;
            default:
                w = snprintf(out + pos, n - pos, "[?]");
                break;
            }
        }
        if (w < 0)
            break;
        pos += (size_t)w;
    }
}

static int pack_fail(struct pack_ctx *c, int depth, const char *fmt, ...) TR_PRINTF(3, 4);

static int pack_fail(struct pack_ctx *c, int depth, const char *fmt, ...)
{
    char path[400];
    char why[200];
    format_path(c, depth, path, sizeof(path));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return tr_error_set(c->err, TR_EINVAL, "%s: %s", path, why);
}

static int nomem(struct pack_ctx *c)
{
    return tr_error_set(c->err, TR_ENOMEM, "%s: out of memory while encoding", c->root);
}

static int buf_write(void *data, const char *p, size_t n)
{
    struct pack_ctx *c = data;
    int rc = tr_buf_add(&c->out, p, n);
    if (rc != 0) {
        c->write_rc = rc;
        return -1;
    }
    return 0;
}

/* A failed write: past the size cap, or out of memory. */
static int write_fail(struct pack_ctx *c, int depth)
{
    if (c->write_rc == TR_E2BIG)
        return pack_fail(c, depth, "the encoding is larger than %zu bytes", c->out.max);
    return nomem(c);
}

static int cmp_entries(const void *a, const void *b, void *buf)
{
    const struct map_entry *x = a;
    const struct map_entry *y = b;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return memcmp((const char *)buf + x->key_off, (const char *)buf + y->key_off, x->key_len);
}

/* Rewrites the n entries that start at `from` in key order. */
static int sort_entries(struct pack_ctx *c, size_t from, struct map_entry *ents, size_t n)
{
    size_t len = c->out.len - from;
    tr_buf_reset(&c->tmp);
    if (tr_buf_add(&c->tmp, c->out.buf + from, len) != 0)
        return nomem(c);
    qsort_r(ents, n, sizeof(*ents), cmp_entries, c->out.buf);
    size_t pos = from;
    for (size_t i = 0; i < n; i++) {
        size_t elen = ents[i].end - ents[i].key_off;
        memcpy(c->out.buf + pos, c->tmp.buf + (ents[i].key_off - from), elen);
        pos += elen;
    }
    return 0;
}

static int push_entry(struct pack_ctx *c, struct map_entry e)
{
    if (TR_VEC_PUSH(c->ents, c->n_ents, c->cap_ents, e) != 0)
        return nomem(c);
    return 0;
}

static int pack_value(struct pack_ctx *c, int idx, int depth);

/* Packs a map key (at idx); depth is the level of the table holding it. */
static int pack_key(struct pack_ctx *c, int idx, int depth)
{
    int t = lua_type(c->L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        return pack_fail(c, depth, "cannot encode a table key of type %s",
                         lua_typename(c->L, t));
    return pack_value(c, idx, depth);
}

static int pack_table(struct pack_ctx *c, int idx, int depth)
{
    lua_State *L = c->L;
    if (depth >= TR_LUA_MP_MAX_DEPTH)
        return pack_fail(c, depth, "nested deeper than %d tables", TR_LUA_MP_MAX_DEPTH);
    const void *self = lua_topointer(L, idx);
    for (int d = 0; d < depth; d++) {
        if (c->path_tables[d] == self)
            return pack_fail(c, depth, "%s", "cannot encode a table that contains itself");
    }
    if (!lua_checkstack(L, 4))
        return nomem(c);
    c->path_tables[depth] = self;

    /* First pass: count the keys and see whether they are exactly 1..n. */
    lua_Integer n = 0;
    lua_Integer max = 0;
    bool array = true;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        if (array && lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1)
            max = TR_MAX(max, lua_tointeger(L, -2));
        else
            array = false;
        lua_pop(L, 1);
    }
    if ((uint64_t)n > tr_mp_default_limits.max_elements)
        return pack_fail(c, depth, "%s", "a table has more than 1000000 elements");

    int rc;
    if (array && max == n) {
        if (msgpack_pack_array(&c->pk, (size_t)n) != 0)
            return write_fail(c, depth);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            c->path[depth] = (struct pack_step){.kind = STEP_INDEX, .index = i};
            rc = pack_value(c, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    if (msgpack_pack_map(&c->pk, (size_t)n) != 0)
        return write_fail(c, depth);
    /* This map's entries sit above base in c->ents; nested maps push theirs
     * above those and pop them when they are done. */
    size_t base = c->n_ents;
    size_t from = c->out.len;
    rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int top = lua_gettop(L);
        size_t key_off = c->out.len;
        c->path[depth] = (struct pack_step){.kind = STEP_KEY, .key_idx = top - 1};
        rc = pack_key(c, top - 1, depth + 1);
        size_t key_len = c->out.len - key_off;
        if (rc == 0)
            rc = pack_value(c, top, depth + 1);
        if (rc == 0)
            rc = push_entry(c, (struct map_entry){key_off, key_len, c->out.len});
        if (rc != 0) {
            lua_pop(L, 2);
            break;
        }
        lua_pop(L, 1);
    }
    if (rc == 0 && c->n_ents - base > 1)
        rc = sort_entries(c, from, c->ents + base, c->n_ents - base);
    c->n_ents = base;
    return rc;
}

static int pack_value(struct pack_ctx *c, int idx, int depth)
{
    lua_State *L = c->L;
    if (++c->values > PACK_MAX_VALUES)
        return pack_fail(c, depth, "%s", "more than 16777216 values to encode");
    int t = lua_type(L, idx);
    int w = 0;
    switch (t) {
    case LUA_TNIL:
        w = msgpack_pack_nil(&c->pk);
        break;
    case LUA_TBOOLEAN:
        w = lua_toboolean(L, idx) ? msgpack_pack_true(&c->pk) : msgpack_pack_false(&c->pk);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            w = msgpack_pack_int64(&c->pk, (int64_t)lua_tointeger(L, idx));
        else
            w = msgpack_pack_double(&c->pk, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > tr_mp_default_limits.max_str)
            return pack_fail(c, depth, "%s", "a string is longer than 64 MiB");
        w = msgpack_pack_str(&c->pk, len);
        if (w == 0)
            w = msgpack_pack_str_body(&c->pk, s, len);
        break;
    }
    case LUA_TTABLE:
        return pack_table(c, idx, depth);
    default:
        return pack_fail(c, depth, "cannot encode a %s", lua_typename(L, t));
    }
    return w == 0 ? 0 : write_fail(c, depth);
}

int tr_lua_pack_named(lua_State *L, int idx, const char *root, msgpack_packer *pk,
                      struct tr_error *err)
{
    struct pack_ctx c = {.L = L, .err = err, .root = root ? root : "value"};
    tr_buf_init(&c.out, tr_mp_default_limits.max_str);
    tr_buf_init(&c.tmp, 0);
    msgpack_packer_init(&c.pk, &c, buf_write);
    int rc = pack_value(&c, lua_absindex(L, idx), 0);
    if (rc == 0 && pk->callback(pk->data, c.out.buf, c.out.len) != 0)
        rc = nomem(&c);
    tr_buf_release(&c.out);
    tr_buf_release(&c.tmp);
    tr_free(c.ents);
    return rc;
}

int tr_lua_pack(lua_State *L, int idx, msgpack_packer *pk, struct tr_error *err)
{
    return tr_lua_pack_named(L, idx, "value", pk, err);
}

/* ====================================================================== */
/* msgpack -> Lua                                                         */
/* ====================================================================== */

/* Pushes o; returns 0 or a TR_E* code with nothing pushed. May raise (memory). */
static int push_obj(lua_State *L, const msgpack_object *o, int depth, bool key)
{
    if (!lua_checkstack(L, 3))
        return TR_ENOMEM;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        if (key)
            return TR_EPROTO;
        lua_pushnil(L);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* Beyond int64, a Lua integer would wrap: a float is the closest value. */
        if (o->via.u64 > (uint64_t)INT64_MAX)
            lua_pushnumber(L, (lua_Number)o->via.u64);
        else
            lua_pushinteger(L, (lua_Integer)o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (key && isnan(o->via.f64))
            return TR_EPROTO;
        lua_pushnumber(L, (lua_Number)o->via.f64);
        return 0;
    case MSGPACK_OBJECT_STR: /* msgpack-c may give a NULL pointer for "" */
        lua_pushlstring(L, o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.size ? o->via.bin.ptr : "", o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY: {
        if (key)
            return TR_EPROTO;
        if (depth >= TR_LUA_MP_MAX_DEPTH)
            return TR_ELIMIT;
        uint32_t n = o->via.array.size;
        lua_createtable(L, (int)TR_MIN(n, (uint32_t)INT32_MAX), 0);
        for (uint32_t i = 0; i < n; i++) {
            int rc = push_obj(L, &o->via.array.ptr[i], depth + 1, false);
            if (rc != 0) {
                lua_pop(L, 1);
                return rc;
            }
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 0;
    }
    case MSGPACK_OBJECT_MAP: {
        if (key)
            return TR_EPROTO;
        if (depth >= TR_LUA_MP_MAX_DEPTH)
            return TR_ELIMIT;
        uint32_t n = o->via.map.size;
        lua_createtable(L, 0, (int)TR_MIN(n, (uint32_t)INT32_MAX));
        for (uint32_t i = 0; i < n; i++) {
            int rc = push_obj(L, &o->via.map.ptr[i].key, depth + 1, true);
            if (rc == 0) {
                rc = push_obj(L, &o->via.map.ptr[i].val, depth + 1, false);
                if (rc != 0)
                    lua_pop(L, 1);
            }
            if (rc != 0) {
                lua_pop(L, 1);
                return rc;
            }
            lua_rawset(L, -3);
        }
        return 0;
    }
    default:
        return TR_EPROTO; /* ext: no Lua counterpart */
    }
}

struct push_args
{
    const msgpack_object *o;
    int rc;
};

static int push_protected(lua_State *L)
{
    struct push_args *a = lua_touserdata(L, 1);
    lua_pop(L, 1);
    a->rc = push_obj(L, a->o, 0, false);
    return a->rc == 0 ? 1 : 0;
}

int tr_lua_push_mp(lua_State *L, const msgpack_object *o)
{
    struct push_args a = {o, 0};
    if (!lua_checkstack(L, 3))
        return TR_ENOMEM;
    lua_pushcfunction(L, push_protected);
    lua_pushlightuserdata(L, &a);
    int status = lua_pcall(L, 1, 1, 0);
    if (status != LUA_OK || a.rc != 0) {
        lua_pop(L, 1);
        return status != LUA_OK ? TR_ENOMEM : a.rc;
    }
    return 0;
}

int tr_lua_unpack_bytes(lua_State *L, const void *p, size_t n, struct tr_error *err)
{
    if (n == 0) {
        if (!lua_checkstack(L, 1))
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        lua_pushnil(L);
        return 0;
    }
    struct tr_mp_limits lim = tr_mp_default_limits;
    lim.max_depth = TR_LUA_MP_MAX_DEPTH;
    long size = tr_mp_check(p, n, &lim);
    if (size < 0)
        return tr_error_set(err, (int)size, "%s",
                            size == TR_ELIMIT ? "msgpack value exceeds a limit (size, count, "
                                                "or nesting deeper than 32)"
                                              : "malformed msgpack value");
    if ((size_t)size != n)
        return tr_error_set(err, TR_EPROTO, "%zu bytes after the msgpack value",
                            n - (size_t)size);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, p, n, &off);
    int rc;
    if (ur == MSGPACK_UNPACK_SUCCESS) {
        rc = tr_lua_push_mp(L, &u.data);
        if (rc == TR_ENOMEM)
            tr_error_set(err, rc, "out of memory while decoding msgpack");
        else if (rc == TR_ELIMIT)
            tr_error_set(err, rc, "msgpack value nested deeper than %d", TR_LUA_MP_MAX_DEPTH);
        else if (rc != 0)
            tr_error_set(err, rc, "msgpack value has no Lua form (ext, or a nil, NaN or "
                         "container map key)");
    } else if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory while decoding msgpack");
    } else {
        rc = tr_error_set(err, TR_EPROTO, "malformed msgpack value");
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}
