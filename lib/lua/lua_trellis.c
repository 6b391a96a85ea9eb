/*
 * lua_trellis.c - the built-in "trellis" module: trellis.task and
 * trellis.pipeline.
 *
 * trellis.task{...} checks the table it is given and returns that same table
 * marked with the protected metatable "trellis.task", whose __index supplies
 * the defaults (pool "cpu", retries 0, ...). Returning the user's table
 * rather than a normalised copy keeps a task at a few hundred bytes of Lua
 * heap, which is what lets a file declare a million of them under the heap
 * cap. trellis.pipeline{...} returns a new table {name, version, params,
 * tasks} marked "trellis.pipeline", with version always a string and params
 * always a table; tasks is the array the file passed.
 *
 * Check failures are raised at level 1, so the message carries the file and
 * line of the call in the pipeline ("w1.lua:4: task 'a': ..."). The raised
 * string is also kept in the registry so that the loader can tell these
 * failures (TR_EINVAL) from other Lua errors (TR_ELUA).
 */
#include "lib/lua/lua_trellis.h"

#include <lauxlib.h>
#include <math.h>

#include "lib/lua/pipeline.h"
#include "lib/lua/pipeline_controls.h"

/* Registry keys: their addresses are unique. */
static const char task_mt_key = 't';
static const char pipeline_mt_key = 'p';
static const char check_error_key = 'e';
static const char trigger_mt_key = 'g';

enum task_field
{
    F_NAME,
    F_RUN,
    F_AFTER,
    F_POOL,
    F_RETRIES,
    F_BACKOFF,
    F_TIMEOUT,
    F_MAP,
    F_CACHE,
    F_PRIORITY,
    F_GPUS,
    F_LABELS,
    F_CONCURRENCY,
    F_PROVIDERS,
    F_FLOW,      /* trigger_rule, subrun, approval: lua_flow.c; not in task_field_names */
    F_UNKNOWN
};

static const char *const task_field_names[] = {
    "name", "run", "after", "pool", "retries", "backoff", "timeout", "map", "cache", "priority",
    "gpus", "labels", "concurrency", "providers",
};

static enum task_field task_field_of(const char *k, size_t len)
{
    if (tr_flow_field_of(k, len) != 0)
        return F_FLOW;
    for (size_t i = 0; i < TR_ARRAY_LEN(task_field_names); i++) {
        if (strlen(task_field_names[i]) == len && memcmp(task_field_names[i], k, len) == 0)
            return (enum task_field)i;
    }
    return F_UNKNOWN;
}

/* ====================================================================== */
/* Checks shared with the loader                                          */
/* ====================================================================== */

/* A name: non-empty, bounded, without NUL (names become C strings). */
static const char *name_problem(const char *s, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (len > TR_TASK_NAME_MAX)
        return "is longer than 256 bytes";
    if (memchr(s, '\0', len) != NULL)
        return "must not contain a NUL byte";
    return NULL;
}

/* Pool names become metric labels and log fields: 1 to 63 of [A-Za-z0-9_.-]. */
static const char *pool_problem(const char *s, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (len > 63)
        return "is longer than 63 bytes";
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return "may hold only A-Z a-z 0-9 _ . -";
    }
    return NULL;
}

/* Prints the key at idx for a message; never converts the stack value. */
static void key_text(lua_State *L, int idx, char *out, size_t n)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        snprintf(out, n, "'%.*s'", (int)TR_MIN(len, 64), s);
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            snprintf(out, n, "%lld", (long long)lua_tointeger(L, idx));
        else
            snprintf(out, n, "%g", (double)lua_tonumber(L, idx));
        break;
    default:
        snprintf(out, n, "of type %s", luaL_typename(L, idx));
        break;
    }
}

/* Messages name the task being checked; formatted only when a check fails. */
#define WHO "task '%.*s'"
#define WHO_ARGS(f) (int)(f)->name_len, (f)->name

/* Checks an `after` array at idx (keys exactly 1..n, values valid names). */
static int check_after_array(lua_State *L, int idx, const struct tr_task_fields *who,
                             uint32_t *n_out, char *why, size_t why_len)
{
    lua_Integer n = 0;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1) {
            char k[96];
            key_text(L, -2, k, sizeof(k));
            snprintf(why, why_len, WHO ": field 'after' must be a name or an array of names "
                     "(found key %s)", WHO_ARGS(who), k);
            lua_pop(L, 2);
            return -1;
        }
        max = TR_MAX(max, lua_tointeger(L, -2));
        size_t len;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        const char *bad = s ? name_problem(s, len) : "must be a string";
        if (bad != NULL) {
            snprintf(why, why_len, WHO ": after[%lld] %s (got %s)", WHO_ARGS(who),
                     (long long)lua_tointeger(L, -2), bad, luaL_typename(L, -1));
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    if (max != n) {
        snprintf(why, why_len, WHO ": field 'after' must be an array of names without holes",
                 WHO_ARGS(who));
        return -1;
    }
    if (n > (lua_Integer)UINT32_MAX) {
        snprintf(why, why_len, WHO ": field 'after' has too many names", WHO_ARGS(who));
        return -1;
    }
    *n_out = (uint32_t)n;
    return 0;
}

/* Checks the value at the top of the stack for field fld; fills f. */
static int check_task_field(lua_State *L, enum task_field fld, struct tr_task_fields *f,
                            char *why, size_t why_len)
{
    const struct tr_task_fields *who = f;
    int t = lua_type(L, -1);
    const char *fname = fld < F_FLOW ? task_field_names[fld] : "";
    switch (fld) {
    case F_NAME:
        break; /* checked first, by the caller */
    case F_RUN:
        if (t != LUA_TFUNCTION)
            goto wrong_type;
        break;
    case F_AFTER:
        if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            const char *bad = name_problem(s, len);
            if (bad != NULL) {
                snprintf(why, why_len, WHO ": field 'after' %s", WHO_ARGS(who), bad);
                return -1;
            }
            f->after_type = LUA_TSTRING;
            f->n_after = 1;
        } else if (t == LUA_TTABLE) {
            if (check_after_array(L, lua_gettop(L), who, &f->n_after, why, why_len) != 0)
                return -1;
            f->after_type = LUA_TTABLE;
        } else {
            snprintf(why, why_len, WHO ": field 'after' must be a name or an array of names "
                     "(got %s)", WHO_ARGS(who), luaL_typename(L, -1));
            return -1;
        }
        break;
    case F_POOL:
    case F_MAP: {
        if (t != LUA_TSTRING)
            goto wrong_type;
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        const char *bad = fld == F_POOL ? pool_problem(s, len) : name_problem(s, len);
        if (bad != NULL) {
            snprintf(why, why_len, WHO ": field '%s' %s", WHO_ARGS(who), fname, bad);
            return -1;
        }
        if (fld == F_POOL) {
            f->pool = s;
            f->pool_len = len;
        } else {
            f->map = s;
            f->map_len = len;
        }
        break;
    }
    case F_RETRIES:
    case F_PRIORITY: {
        int isint = 0;
        lua_Integer v = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        if (!isint)
            goto wrong_type;
        if (fld == F_RETRIES) {
            if (v < 0 || v > UINT16_MAX) {
                snprintf(why, why_len, WHO ": field 'retries' must be an integer from 0 to "
                         "65535 (got %lld)", WHO_ARGS(who), (long long)v);
                return -1;
            }
            f->retries = (uint16_t)v;
        } else {
            if (v < INT32_MIN || v > INT32_MAX) {
                snprintf(why, why_len, WHO ": field 'priority' must fit in 32 bits (got %lld)",
                         WHO_ARGS(who), (long long)v);
                return -1;
            }
            f->priority = (int32_t)v;
        }
        break;
    }
    case F_GPUS: {
        int isint = 0;
        lua_Integer v = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        if (!isint)
            goto wrong_type;
        if (v < 0 || v > TR_TASK_GPUS_MAX) {
            snprintf(why, why_len, WHO ": field 'gpus' must be an integer from 0 to %d "
                     "(got %lld)", WHO_ARGS(who), TR_TASK_GPUS_MAX, (long long)v);
            return -1;
        }
        f->gpus = (uint16_t)v;
        break;
    }
    case F_BACKOFF:
    case F_TIMEOUT: {
        if (t != LUA_TNUMBER)
            goto wrong_type;
        double v = (double)lua_tonumber(L, -1);
        if (!isfinite(v) || v < 0) {
            snprintf(why, why_len, WHO ": field '%s' must be a finite number of seconds >= 0 "
                     "(got %g)", WHO_ARGS(who), fname, v);
            return -1;
        }
        if (fld == F_BACKOFF)
            f->backoff = v;
        else
            f->timeout = v;
        break;
    }
    case F_CACHE:
        if (t != LUA_TBOOLEAN)
            goto wrong_type;
        f->cache = lua_toboolean(L, -1);
        break;
    case F_PROVIDERS: {
        /* The LLM providers (quota keys) its calls use: budgets and quotas. */
        size_t n = t == LUA_TTABLE ? lua_rawlen(L, -1) : 0;
        bool good = t == LUA_TTABLE && n > 0 && n <= 16;
        for (size_t i = 1; good && i <= n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            size_t len = 0;
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            good = s != NULL && len > 0 && len <= 120 && memchr(s, ',', len) == NULL &&
                   memchr(s, '\0', len) == NULL;
            lua_pop(L, 1);
        }
        if (!good) {
            snprintf(why, why_len, WHO ": field 'providers' must be an array of 1 to 16 provider "
                     "names", WHO_ARGS(who));
            return -1;
        }
        break;
    }
    case F_FLOW: {
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        return tr_flow_check_field(L, tr_flow_field_of(k, klen), f, why, why_len);
    }
    case F_LABELS:
        return tr_check_task_labels(L, who->name, who->name_len, why, why_len);
    case F_CONCURRENCY:
        return tr_check_task_concurrency(L, who->name, who->name_len, why, why_len);
    case F_UNKNOWN:
        TR_ASSERT(!"unreachable");
        break;
    }
    return 0;

wrong_type: {
    static const char *const expected[] = {
        [F_RUN] = "a function", [F_POOL] = "a string", [F_MAP] = "a task name",
        [F_RETRIES] = "an integer", [F_PRIORITY] = "an integer", [F_GPUS] = "an integer", [F_BACKOFF] = "a number",
        [F_TIMEOUT] = "a number", [F_CACHE] = "a boolean", [F_PROVIDERS] = "an array",
    };
    snprintf(why, why_len, WHO ": field '%s' must be %s (got %s)", WHO_ARGS(who), fname,
             expected[fld], luaL_typename(L, -1));
    return -1;
}
}

int tr_task_check(lua_State *L, int idx, struct tr_task_fields *f, char *why, size_t why_len)
{
    idx = lua_absindex(L, idx);
    *f = (struct tr_task_fields){.after_type = LUA_TNIL, .pool = "cpu", .pool_len = 3};
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(why, why_len, "trellis.task: expected a table (got %s)", luaL_typename(L, idx));
        return -1;
    }
    /* The name first, so that every later message can say which task. */
    int name_type = LUA_TNIL;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen;
        if (lua_type(L, -2) == LUA_TSTRING && (lua_tolstring(L, -2, &klen), klen == 4) &&
            memcmp(lua_tostring(L, -2), "name", 4) == 0) {
            name_type = lua_type(L, -1);
            if (name_type == LUA_TSTRING)
                f->name = lua_tolstring(L, -1, &f->name_len); /* the table keeps it alive */
            lua_pop(L, 2);
            break;
        }
        lua_pop(L, 1);
    }
    if (name_type != LUA_TSTRING) {
        snprintf(why, why_len, "trellis.task: field 'name' must be a non-empty string (got %s)",
                 lua_typename(L, name_type));
        return -1;
    }
    const char *bad = name_problem(f->name, f->name_len);
    if (bad != NULL) {
        snprintf(why, why_len, "trellis.task: field 'name' %s", bad);
        return -1;
    }
    bool has_run = false;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        enum task_field fld = F_UNKNOWN;
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            fld = task_field_of(k, klen);
        }
        if (fld == F_UNKNOWN) {
            char k[96];
            key_text(L, -2, k, sizeof(k));
            snprintf(why, why_len, WHO ": unknown field %s", WHO_ARGS(f), k);
            lua_pop(L, 2);
            return -1;
        }
        if (check_task_field(L, fld, f, why, why_len) != 0) {
            lua_pop(L, 2);
            return -1;
        }
        has_run |= fld == F_RUN;
        lua_pop(L, 1);
    }
    if (!has_run) {
        snprintf(why, why_len, WHO ": field 'run' must be a function (got nil)", WHO_ARGS(f));
        return -1;
    }
    if (f->kind != TR_KIND_RUN && f->map != NULL) {
        snprintf(why, why_len, WHO ": %s cannot have 'map'", WHO_ARGS(f),
                 f->kind == TR_KIND_SUBRUN ? "a subrun" : "an approval");
        return -1;
    }
    return 0;
}

static bool has_mark(lua_State *L, int idx, const void *key)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

bool tr_lua_is_task(lua_State *L, int idx)
{
    return has_mark(L, idx, &task_mt_key);
}

bool tr_lua_is_pipeline(lua_State *L, int idx)
{
    return has_mark(L, idx, &pipeline_mt_key);
}

bool tr_lua_is_trigger(lua_State *L, int idx)
{
    return has_mark(L, idx, &trigger_mt_key);
}

bool tr_lua_is_check_error(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TSTRING)
        return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &check_error_key);
    bool same = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return same;
}

/* ====================================================================== */
/* trellis.task and trellis.pipeline                                      */
/* ====================================================================== */

/* Raises why with the caller's position, remembering it as a check error. May raise. */
static int raise_check(lua_State *L, const char *why)
{
    luaL_where(L, 1);
    lua_pushstring(L, why);
    lua_concat(L, 2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &check_error_key);
    return lua_error(L);
}

int tr_lua_task(lua_State *L)
{
    char why[TR_TASK_WHY_MAX];
    struct tr_task_fields f;
    lua_settop(L, 1);
    luaL_checkstack(L, 8, NULL);
    if (tr_lua_is_task(L, 1))
        return 1; /* already checked and marked */
    if (tr_task_check(L, 1, &f, why, sizeof(why)) != 0)
        return raise_check(L, why);
    if (lua_getmetatable(L, 1)) {
        snprintf(why, sizeof(why), "task '%.*s': the table already has a metatable",
                 (int)f.name_len, f.name);
        return raise_check(L, why);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &task_mt_key);
    lua_setmetatable(L, 1);
    return 1;
}

/* Checks that tasks (at idx) is a non-empty array of task tables. */
static int check_tasks_array(lua_State *L, int idx, char *why, size_t why_len)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n == 0) {
        snprintf(why, why_len, "trellis.pipeline: field 'tasks' must be a non-empty array of "
                 "tasks");
        return -1;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        bool ok = tr_lua_is_task(L, -1);
        if (!ok)
            snprintf(why, why_len, "trellis.pipeline: tasks[%lld] is not a trellis.task "
                     "(got %s)", (long long)i, luaL_typename(L, -1));
        lua_pop(L, 1);
        if (!ok)
            return -1;
    }
    lua_Integer keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        keys++;
        lua_pop(L, 1);
    }
    if (keys != n) {
        snprintf(why, why_len, "trellis.pipeline: field 'tasks' must be an array of tasks "
                 "without holes or named keys");
        return -1;
    }
    return 0;
}

/* Checks params (at idx): a table whose keys are strings. */
static int check_params(lua_State *L, int idx, char *why, size_t why_len)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            char k[96];
            key_text(L, -2, k, sizeof(k));
            snprintf(why, why_len, "trellis.pipeline: params must have string keys (found key "
                     "%s)", k);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Checks the run controls of the pipeline table (1) and copies them into the result (2). */
static int pipeline_controls(lua_State *L, char *why, size_t why_len)
{
    static const char *const fields[] = {"timeout", "max_active_runs"};
    for (size_t i = 0; i < TR_ARRAY_LEN(fields); i++) {
        lua_pushstring(L, fields[i]);
        lua_rawget(L, 1);
        if (tr_check_pipeline_control(L, fields[i], why, why_len) != 0)
            return -1;
        lua_setfield(L, 2, fields[i]);
    }
    return 0;
}

static int l_pipeline(lua_State *L)
{
    char why[TR_TASK_WHY_MAX];
    lua_settop(L, 1);
    luaL_checkstack(L, 8, NULL);
    if (lua_type(L, 1) != LUA_TTABLE) {
        snprintf(why, sizeof(why), "trellis.pipeline: expected a table (got %s)",
                 luaL_typename(L, 1));
        return raise_check(L, why);
    }
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : "";
        bool known = false;
        static const char *const fields[] = {"name", "version", "params", "tasks", "triggers",
                                             "timeout", "max_active_runs", "extra_params",
                                             "budget", "on_budget"};
        for (size_t i = 0; i < TR_ARRAY_LEN(fields); i++)
            known |= strlen(fields[i]) == klen && memcmp(fields[i], k, klen) == 0;
        if (!known) {
            char kt[96];
            key_text(L, -2, kt, sizeof(kt));
            snprintf(why, sizeof(why), "trellis.pipeline: unknown field %s", kt);
            return raise_check(L, why);
        }
        lua_pop(L, 1);
    }

    lua_createtable(L, 0, 4); /* 2: the result */
    lua_pushliteral(L, "name");
    lua_rawget(L, 1);
    size_t nlen = 0;
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &nlen) : NULL;
    const char *bad = name ? name_problem(name, nlen) : "must be a non-empty string";
    if (bad != NULL) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'name' %s (got %s)", bad,
                 luaL_typename(L, -1));
        return raise_check(L, why);
    }
    lua_setfield(L, 2, "name");

    lua_pushliteral(L, "version");
    lua_rawget(L, 1);
    int vt = lua_type(L, -1);
    if (vt == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "");
    } else if (vt == LUA_TNUMBER) {
        lua_tolstring(L, -1, NULL); /* 3 -> "3", like tostring */
    } else if (vt != LUA_TSTRING) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'version' must be a string or a "
                 "number (got %s)", luaL_typename(L, -1));
        return raise_check(L, why);
    }
    size_t vlen;
    const char *ver = lua_tolstring(L, -1, &vlen);
    if (vlen > TR_TASK_NAME_MAX || memchr(ver, '\0', vlen) != NULL) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'version' must be at most 256 bytes "
                 "without NUL");
        return raise_check(L, why);
    }
    lua_setfield(L, 2, "version");

    lua_pushliteral(L, "params");
    lua_rawget(L, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    } else if (!lua_istable(L, -1)) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'params' must be a table (got %s)",
                 luaL_typename(L, -1));
        return raise_check(L, why);
    } else if (check_params(L, lua_gettop(L), why, sizeof(why)) != 0) {
        return raise_check(L, why);
    }
    lua_setfield(L, 2, "params");

    lua_pushliteral(L, "tasks");
    lua_rawget(L, 1);
    if (!lua_istable(L, -1)) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'tasks' must be an array of tasks "
                 "(got %s)", luaL_typename(L, -1));
        return raise_check(L, why);
    }
    if (check_tasks_array(L, lua_gettop(L), why, sizeof(why)) != 0)
        return raise_check(L, why);
    lua_setfield(L, 2, "tasks");

    /* Triggers: an array of trellis.trigger{...}; their fields are checked by
     * the loader (pipeline.c), which gives their errors codes of their own. */
    lua_pushliteral(L, "triggers");
    lua_rawget(L, 1);
    if (!lua_isnil(L, -1) && !lua_istable(L, -1)) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'triggers' must be an array of "
                 "trellis.trigger{...} (got %s)", luaL_typename(L, -1));
        return raise_check(L, why);
    }
    lua_setfield(L, 2, "triggers");

    if (pipeline_controls(L, why, sizeof(why)) != 0)
        return raise_check(L, why);
    /* Run control: params it does not declare are taken (docs/pipelines.md). */
    lua_pushliteral(L, "extra_params");
    lua_rawget(L, 1);
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
        snprintf(why, sizeof(why), "trellis.pipeline: field 'extra_params' must be a boolean "
                 "(got %s)", luaL_typename(L, -1));
        return raise_check(L, why);
    }
    lua_setfield(L, 2, "extra_params");
    /* budget and on_budget: checked by the loader (pipeline_budget.c). */
    lua_pushliteral(L, "budget");
    lua_rawget(L, 1);
    lua_setfield(L, 2, "budget");
    lua_pushliteral(L, "on_budget");
    lua_rawget(L, 1);
    lua_setfield(L, 2, "on_budget");

    lua_rawgetp(L, LUA_REGISTRYINDEX, &pipeline_mt_key);
    lua_setmetatable(L, 2);
    return 1;
}

/*
 * trellis.trigger{name, on, when, run, params, cooldown, cron}: a copy of the
 * table, marked. Only unknown fields are refused here; the values are
 * checked when the pipeline is read (pipeline.c), so that a wrong `on` or
 * cron has an error code of its own.
 */
static int l_trigger(lua_State *L)
{
    char why[TR_TASK_WHY_MAX];
    lua_settop(L, 1);
    luaL_checkstack(L, 8, NULL);
    if (lua_type(L, 1) != LUA_TTABLE) {
        snprintf(why, sizeof(why), "trellis.trigger: expected a table (got %s)",
                 luaL_typename(L, 1));
        return raise_check(L, why);
    }
    static const char *const fields[] = {"name", "on", "when", "run", "params", "cooldown",
                                         "cron"};
    lua_createtable(L, 0, 8);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : "";
        bool known = false;
        for (size_t i = 0; i < TR_ARRAY_LEN(fields); i++)
            known |= strlen(fields[i]) == klen && memcmp(fields[i], k, klen) == 0;
        if (!known) {
            char kt[96];
            key_text(L, -2, kt, sizeof(kt));
            snprintf(why, sizeof(why), "trellis.trigger: unknown field %s", kt);
            return raise_check(L, why);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, 2);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &trigger_mt_key);
    lua_setmetatable(L, 2);
    return 1;
}

/* Creates a protected metatable, stores it at registry[key] and under name. */
static void new_mark(lua_State *L, const char *name, const void *key)
{
    luaL_newmetatable(L, name);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

int tr_lua_open_trellis(lua_State *L)
{
    new_mark(L, TR_LUA_TASK_MT, &task_mt_key);
    /* Absent fields read as their defaults, so a host indexing t.pool or
     * t.retries sees what the loader applied. */
    lua_createtable(L, 0, 6);
    lua_pushliteral(L, "cpu");
    lua_setfield(L, -2, "pool");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "retries");
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "backoff");
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "timeout");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "cache");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "priority");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "gpus");
    lua_pushliteral(L, "all_success");
    lua_setfield(L, -2, "trigger_rule");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    new_mark(L, TR_LUA_PIPELINE_MT, &pipeline_mt_key);
    lua_pop(L, 1);
    new_mark(L, TR_LUA_TRIGGER_MT, &trigger_mt_key);
    lua_pop(L, 1);

    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, tr_lua_task);
    lua_setfield(L, -2, "task");
    lua_pushcfunction(L, l_pipeline);
    lua_setfield(L, -2, "pipeline");
    lua_pushcfunction(L, l_trigger);
    lua_setfield(L, -2, "trigger");
    tr_flow_open(L);
    return 1;
}
