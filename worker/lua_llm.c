/*
 * lua_llm.c - the C half of trellis.llm (see lua_llm.h); the Lua half is
 * worker/lua/trellis/llm.lua, which receives these functions as `...`.
 *
 * What lives here and why: JSON (jansson through msgpack, so Lua tables
 * encode the way task outputs do, with canonical map order and therefore
 * stable cache keys), sha256, the providers file (parsed once, kept as
 * msgpack bytes that every state decodes), API keys (read from the
 * environment by provider name only, so pipeline code cannot read other
 * variables), Retry-After, jittered backoff, the response cache and the
 * usage list of the running task.
 *
 * The cache is per worker thread, an LRU of packed responses keyed by the
 * sha256 of the request; it lives while at least one pipeline state of the
 * thread has opened trellis.llm. Packed bytes, not Lua values, so that the
 * pipeline states of the thread share it.
 *
 * Loop thread only, except tr_llm_providers_load (before the loops start).
 */
#include "worker/lua_llm.h"

#include <jansson.h>
#include <lauxlib.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/wire/mp_json.h"
#include "lib/lua/pipeline.h"
#include "lib/base/retry.h"
#include "lib/base/retry_after.h"
#include "worker/budget_client.h"
#include "worker/executor.h"
#include "worker/lua_embed.h"
#include "worker/traces.h"

#define CACHE_MT "trellis.llm.cache"

/* The providers file as msgpack, or NULL: set before the loops start. */
static char *providers_mp;
static size_t providers_len;

/* ====================================================================== */
/* The providers file                                                     */
/* ====================================================================== */

static int check_prices(json_t *p, const char *where, struct tr_error *err)
{
    if (p == NULL)
        return 0;
    json_t *in = json_object_get(p, "input"), *out = json_object_get(p, "output");
    if (!json_is_object(p) || (in && (!json_is_number(in) || json_number_value(in) < 0)) ||
        (out && (!json_is_number(out) || json_number_value(out) < 0)))
        return tr_error_set(err, TR_EINVAL, "bad prices of %s: expected {\"input\": USD per "
                            "million tokens, \"output\": USD per million tokens}", where);
    return 0;
}

/* rpm, tpm, quota_key, on_budget, budget_fallback, max_output_tokens (docs/budgets.md). */
static int check_budget_fields(const char *name, json_t *p, struct tr_error *err)
{
    static const char *const nums[] = {"rpm", "tpm", "max_output_tokens"};
    for (size_t i = 0; i < TR_ARRAY_LEN(nums); i++) {
        json_t *v = json_object_get(p, nums[i]);
        if (v != NULL && (!json_is_number(v) || !(json_number_value(v) > 0)))
            return tr_error_set(err, TR_EINVAL, "provider '%s': %s must be a number > 0", name,
                                nums[i]);
    }
    json_t *k = json_object_get(p, "quota_key");
    if (k != NULL && (!json_is_string(k) || json_string_length(k) == 0 ||
                      json_string_length(k) > 120))
        return tr_error_set(err, TR_EINVAL, "provider '%s': quota_key must be a name of 1 to "
                            "120 bytes", name);
    json_t *ob = json_object_get(p, "on_budget");
    const char *s = json_string_value(ob);
    if (ob != NULL && (s == NULL || (strcmp(s, "fail") != 0 && strcmp(s, "fallback") != 0 &&
                                     strcmp(s, "approve") != 0)))
        return tr_error_set(err, TR_EINVAL, "provider '%s': on_budget must be \"fail\", "
                            "\"fallback\" or \"approve\"", name);
    json_t *fb = json_object_get(p, "budget_fallback");
    if (fb != NULL && (!json_is_object(fb) || !json_is_string(json_object_get(fb, "model")) ||
                       (json_object_get(fb, "provider") != NULL &&
                        !json_is_string(json_object_get(fb, "provider")))))
        return tr_error_set(err, TR_EINVAL, "provider '%s': budget_fallback must be {\"model\": "
                            "NAME [, \"provider\": NAME]}", name);
    return 0;
}

static int check_provider(const char *name, json_t *p, struct tr_error *err)
{
    if (!json_is_object(p))
        return tr_error_set(err, TR_EINVAL, "provider '%s' is not an object", name);
    const char *kind = json_string_value(json_object_get(p, "kind"));
    if (kind == NULL || (strcmp(kind, "openai") != 0 && strcmp(kind, "anthropic") != 0 &&
                         strcmp(kind, "extractive") != 0))
        return tr_error_set(err, TR_EINVAL, "provider '%s' has no valid kind (openai, "
                            "anthropic or extractive)", name);
    const char *url = json_string_value(json_object_get(p, "base_url"));
    if (strcmp(kind, "extractive") != 0 &&
        (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)))
        return tr_error_set(err, TR_EINVAL, "provider '%s' needs a base_url starting with "
                            "http:// or https://", name);
    json_t *env = json_object_get(p, "api_key_env");
    if (env != NULL && !json_is_string(env))
        return tr_error_set(err, TR_EINVAL, "provider '%s': api_key_env must name an "
                            "environment variable", name);
    if (json_object_get(p, "api_key") != NULL)
        return tr_error_set(err, TR_EINVAL, "provider '%s': keys are read from the environment "
                            "only: name the variable in api_key_env", name);
    char where[300];
    snprintf(where, sizeof(where), "provider '%s'", name);
    int rc = check_prices(json_object_get(p, "prices"), where, err);
    if (rc == 0)
        rc = check_budget_fields(name, p, err);
    json_t *models = json_object_get(p, "models");
    if (rc == 0 && models != NULL) {
        if (json_is_array(models)) {
            size_t i;
            json_t *m;
            json_array_foreach(models, i, m) {
                if (!json_is_string(m))
                    return tr_error_set(err, TR_EINVAL, "provider '%s': models must be names",
                                        name);
            }
        } else if (json_is_object(models)) {
            const char *mn;
            json_t *m;
            json_object_foreach(models, mn, m) {
                snprintf(where, sizeof(where), "model '%s' of provider '%s'", mn, name);
                if (!json_is_object(m))
                    return tr_error_set(err, TR_EINVAL, "%s is not an object", where);
                rc = check_prices(json_object_get(m, "prices"), where, err);
                if (rc < 0)
                    return rc;
            }
        } else {
            return tr_error_set(err, TR_EINVAL, "provider '%s': models must be an array of "
                                "names or an object", name);
        }
    }
    return rc;
}

int tr_llm_providers_load(const char *path, struct tr_error *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return tr_error_set(err, TR_EJSON, "cannot read providers file '%s': line %d: %s", path,
                            je.line, je.text);
    int rc = 0;
    if (!json_is_object(root) || json_object_size(root) == 0)
        rc = tr_error_set(err, TR_EINVAL, "providers file '%s' must be an object of providers",
                          path);
    const char *name;
    json_t *p;
    json_object_foreach(root, name, p) {
        if (rc == 0)
            rc = check_provider(name, p, err);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (rc == 0 && tr_json_to_mp(root, &pk) < 0)
        rc = tr_error_set(err, TR_EINVAL, "providers file '%s' is too deeply nested", path);
    if (rc == 0 && sb.size > TR_LLM_PROVIDERS_MAX)
        rc = tr_error_set(err, TR_E2BIG, "providers file '%s' is over 1 MiB", path);
    if (rc == 0) {
        tr_free(providers_mp);
        providers_mp = tr_memdup(sb.data, sb.size);
        providers_len = sb.size;
        if (providers_mp == NULL)
            rc = tr_error_set(err, TR_ENOMEM, "not enough memory for the providers file");
    }
    msgpack_sbuffer_destroy(&sb);
    json_decref(root);
    return rc;
}

void tr_llm_providers_free(void)
{
    tr_free(providers_mp);
    providers_mp = NULL;
    providers_len = 0;
}

/* ====================================================================== */
/* Helpers for llm.lua                                                    */
/* ====================================================================== */

/* Protected: pushes the NUL-terminated string at light userdata 1. */
static int push_string_protected(lua_State *L)
{
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

/* json_encode(value) -> string | nil, message */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_lua_pack(L, 1, &pk, &err);
    json_t *j = rc == 0 ? tr_mp_bytes_to_json(sb.data, sb.size, &err) : NULL;
    msgpack_sbuffer_destroy(&sb);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (s == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, rc < 0 ? err.msg : "cannot encode JSON");
        return 2;
    }
    /* Pushing the string may raise (the state's memory cap): push it under
     * lua_pcall so that s is freed whatever happens, then re-raise. */
    if (!lua_checkstack(L, 4)) {
        free(s);
        return luaL_error(L, "not enough memory to encode JSON");
    }
    lua_pushcfunction(L, push_string_protected);
    lua_pushlightuserdata(L, s);
    int status = lua_pcall(L, 1, 1, 0);
    free(s);
    if (status != LUA_OK)
        return lua_error(L);
    return 1;
}

/* json_decode(string) -> value | nil, message. JSON null becomes nil. */
static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (n > TR_LLM_JSON_MAX) {
        lua_pushnil(L);
        lua_pushliteral(L, "JSON text over the size limit");
        return 2;
    }
    json_error_t je;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY, &je);
    if (j == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "malformed JSON at line %d column %d: %s", je.line, je.column,
                        je.text);
        return 2;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = tr_json_to_mp(j, &pk);
    json_decref(j);
    struct tr_error err;
    tr_error_init(&err);
    /* Decoding pushes without raising, so sb cannot leak. */
    if (rc == 0)
        rc = tr_lua_unpack_bytes(L, sb.data, sb.size, &err);
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "JSON too deeply nested or too large");
        return 2;
    }
    return 1;
}

/* sha256(string) -> 64 hex digits */
static int l_sha256(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char hex[65];
    tr_sha256_hex(s, n, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* providers() -> the providers file as a table, or nil without one */
static int l_providers(lua_State *L)
{
    if (providers_mp == NULL)
        return 0;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_lua_unpack_bytes(L, providers_mp, providers_len, &err) < 0)
        return luaL_error(L, "cannot decode the providers file: %s", err.msg);
    return 1;
}

/* env_config() -> {base_url, model, kind, provider} from TRELLIS_LLM_*, or nil */
static int l_env_config(lua_State *L)
{
    const char *url = getenv("TRELLIS_LLM_BASE_URL");
    if (url == NULL || *url == '\0')
        return 0;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, url);
    lua_setfield(L, -2, "base_url");
    const char *model = getenv("TRELLIS_LLM_MODEL");
    if (model != NULL && *model)
        lua_pushstring(L, model);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "model");
    const char *kind = getenv("TRELLIS_LLM_KIND");
    lua_pushstring(L, kind != NULL && *kind ? kind : "openai");
    lua_setfield(L, -2, "kind");
    const char *name = getenv("TRELLIS_LLM_PROVIDER");
    lua_pushstring(L, name != NULL && *name ? name : "default");
    lua_setfield(L, -2, "provider");
    return 1;
}

/*
 * api_key(env_name) -> the key, or nil. Only names the configuration holds
 * reach here: llm.lua passes the provider's api_key_env (or
 * TRELLIS_LLM_API_KEY), and pipeline code never sees this function.
 */
static int l_api_key(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return 0;
    lua_pushstring(L, v);
    return 1;
}

/* retry_after(header value) -> seconds, or nil */
static int l_retry_after(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    double w;
    if (tr_retry_after_parse(s, n, tr_now(), &w) < 0)
        return 0;
    lua_pushnumber(L, w);
    return 1;
}

/* backoff(base_seconds, failures) -> seconds, jittered (lib/base/retry.h) */
static int l_backoff(lua_State *L)
{
    double base = luaL_checknumber(L, 1);
    lua_Integer failures = luaL_checkinteger(L, 2);
    /* Seeded per thread from the clock and the pid, so that workers that
     * failed together do not draw the same jitter. */
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned)(tr_mono_ns() ^ ((uint64_t)getpid() << 16)) | 1u;
    double r = (double)(rand_r(&seed) % 1000000) / 1000000.0;
    lua_pushnumber(L, tr_retry_delay(base, (uint32_t)TR_MAX(failures, 1), r));
    return 1;
}

/* mono_ms() -> monotonic milliseconds */
static int l_mono_ms(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)tr_mono_ns() / 1e6);
    return 1;
}

/*
 * usage_add{provider, model, prompt_tokens, completion_tokens, cost,
 * latency_ms, prompt_digest, cached} -> true, or false outside a task
 */
static int l_usage_add(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct tr_task *t = tr_task_running(L);
    if (t == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    struct tr_task_usage u;
    memset(&u, 0, sizeof(u));
    lua_getfield(L, 1, "provider");
    u.provider = luaL_optstring(L, -1, "");
    lua_getfield(L, 1, "model");
    u.model = luaL_optstring(L, -1, "");
    lua_getfield(L, 1, "prompt_digest");
    u.prompt_digest = luaL_optstring(L, -1, "");
    lua_getfield(L, 1, "prompt_tokens");
    u.prompt_tokens = (uint64_t)TR_MAX(luaL_optinteger(L, -1, 0), 0);
    lua_getfield(L, 1, "completion_tokens");
    u.completion_tokens = (uint64_t)TR_MAX(luaL_optinteger(L, -1, 0), 0);
    lua_getfield(L, 1, "cost");
    u.cost = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 1, "latency_ms");
    u.latency_ms = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 1, "cached");
    u.cached = lua_toboolean(L, -1);
    lua_getfield(L, 1, "request_model");
    lua_getfield(L, 1, "operation");
    lua_getfield(L, 1, "finish_reason");
    tr_traces_llm_end(t, &u, lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pushboolean(L, tr_task_usage_add(t, &u) == 0);
    return 1;
}

/* guards() -> the pipeline's guards, the running task's guards (tables or nil) */
static int l_guards(lua_State *L)
{
    struct tr_task *t = tr_task_running(L);
    if (t == NULL)
        return 0;
    tr_task_push_guards(L, t);
    return 2;
}

/* span_begin(): an LLM call of the running task starts (its span, its traceparent) */
static int l_span_begin(lua_State *L)
{
    struct tr_task *t = tr_task_running(L);
    if (t != NULL)
        tr_traces_llm_begin(t);
    return 0;
}

/* ====================================================================== */
/* The response cache                                                     */
/* ====================================================================== */

struct centry
{
    char key[65];          /* sha256 hex: the map key */
    char *val;             /* packed response */
    size_t len;
    struct centry *prev;   /* LRU list, most recent first */
    struct centry *next;
};

struct cache
{
    struct tr_hmap map;    /* key -> struct centry */
    struct centry *head;
    struct centry *tail;
    size_t bytes;
    uint32_t refs;         /* pipeline states that opened trellis.llm */
    uint64_t hits;
    uint64_t misses;
};

static _Thread_local struct cache *thread_cache;

static void centry_unlink(struct cache *c, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void centry_push(struct cache *c, struct centry *e)
{
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void centry_drop(struct cache *c, struct centry *e)
{
    centry_unlink(c, e);
    tr_hmap_del(&c->map, e->key, 64);
    c->bytes -= e->len;
    tr_free(e->val);
    tr_free(e);
}

struct cache_ref
{
    struct cache *c; /* one reference */
};

static int cache_ref_gc(lua_State *L)
{
    struct cache_ref *r = luaL_checkudata(L, 1, CACHE_MT);
    struct cache *c = r->c;
    r->c = NULL;
    if (c == NULL || --c->refs > 0)
        return 0;
    while (c->head)
        centry_drop(c, c->head);
    tr_hmap_release(&c->map);
    if (thread_cache == c)
        thread_cache = NULL;
    tr_free(c);
    return 0;
}

/*
 * The cache of the thread that runs the state's tasks, taken at first use:
 * the module may have been required while the file loaded in the thread
 * pool. May raise (memory).
 */
static struct cache *cache_of(lua_State *L)
{
    struct cache_ref *r = lua_touserdata(L, lua_upvalueindex(1));
    if (r->c != NULL)
        return r->c;
    struct cache *c = thread_cache;
    if (c == NULL) {
        c = tr_calloc(1, sizeof(*c));
        if (c == NULL)
            luaL_error(L, "not enough memory for the LLM cache");
        tr_hmap_init(&c->map);
        thread_cache = c;
    }
    c->refs++;
    r->c = c;
    return c;
}

/* cache_get(key) -> value, or nil */
static int l_cache_get(lua_State *L)
{
    struct cache *c = cache_of(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 1, &kl);
    struct centry *e = kl == 64 ? tr_hmap_get(&c->map, k, kl) : NULL;
    if (e == NULL) {
        c->misses++;
        return 0;
    }
    c->hits++;
    centry_unlink(c, e);
    centry_push(c, e);
    struct tr_error err;
    tr_error_init(&err);
    if (tr_lua_unpack_bytes(L, e->val, e->len, &err) < 0)
        return 0;
    return 1;
}

/* cache_put(key, value) -> true if stored */
static int l_cache_put(lua_State *L)
{
    struct cache *c = cache_of(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 1, &kl);
    luaL_checkany(L, 2);
    luaL_argcheck(L, kl == 64, 1, "sha256 hex expected");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    struct tr_error err;
    tr_error_init(&err);
    struct centry *e = NULL;
    bool ok = tr_lua_pack(L, 2, &pk, &err) == 0 && sb.size <= TR_LLM_CACHE_BYTES / 4 &&
              (e = tr_calloc(1, sizeof(*e))) != NULL;
    if (ok) {
        memcpy(e->key, k, 64);
        e->len = sb.size;
        e->val = tr_memdup(sb.data, sb.size);
        struct centry *old = tr_hmap_get(&c->map, k, 64);
        if (old != NULL)
            centry_drop(c, old);
        ok = e->val != NULL && tr_hmap_put(&c->map, e->key, 64, e) == 0;
        if (ok) {
            centry_push(c, e);
            c->bytes += e->len;
        } else {
            tr_free(e->val);
            tr_free(e);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    while (c->tail != NULL && (c->bytes > TR_LLM_CACHE_BYTES ||
                               tr_hmap_count(&c->map) > TR_LLM_CACHE_ENTRIES))
        centry_drop(c, c->tail);
    lua_pushboolean(L, ok);
    return 1;
}

/* Pushes a userdata that will hold a reference on the cache (cache_of). */
static void push_cache_ref(lua_State *L)
{
    if (luaL_newmetatable(L, CACHE_MT)) {
        lua_pushcfunction(L, cache_ref_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    struct cache_ref *r = lua_newuserdatauv(L, sizeof(*r), 0);
    r->c = NULL;
    luaL_setmetatable(L, CACHE_MT);
}

int tr_lua_json_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_json_encode},
        {"decode", l_json_decode},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

int tr_lua_llm_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"json_encode", l_json_encode}, {"json_decode", l_json_decode},
        {"sha256", l_sha256},           {"providers", l_providers},
        {"env_config", l_env_config},   {"api_key", l_api_key},
        {"retry_after", l_retry_after}, {"backoff", l_backoff},
        {"mono_ms", l_mono_ms},         {"usage_add", l_usage_add},
        {"span_begin", l_span_begin},
        {"budget_reserve", tr_budget_l_reserve}, {"budget_settle", tr_budget_l_settle},
        {"budget_report", tr_budget_l_report},
        {"guards", l_guards},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    push_cache_ref(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_cache_get, 1);
    lua_setfield(L, -3, "cache_get");
    lua_pushcclosure(L, l_cache_put, 1);
    lua_setfield(L, -2, "cache_put");
    tr_lua_embedded_call(L, "trellis.llm", 1);
    return 1;
}
