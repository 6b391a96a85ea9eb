/*
 * lua_flow.c - control flow in the "trellis" module: trellis.skip,
 * trellis.subrun, trellis.approval and the task fields behind them
 * (trigger_rule, subrun, approval).
 *
 * trellis.subrun{...} and trellis.approval{...} are ordinary task tables
 * rewritten in place before trellis.task checks them: a subrun's `pipeline`
 * becomes the field `subrun` and its `params` function becomes `run` (a
 * worker calls it, and its result is the child run's params: the scheduler
 * runs no Lua); an approval's `default` becomes the field `approval` and its
 * `run` a function that refuses to run (the scheduler never sends it to a
 * worker). trellis.skip(reason) returns a table marked with a private
 * metatable that the worker recognises as a task's result.
 */
#include <lauxlib.h>
#include <string.h>

#include "lib/lua/lua_trellis.h"
#include "lib/lua/pipeline.h"

const char *const tr_trigger_rule_names[TR_RULE_COUNT] = {
    [TR_RULE_ALL_SUCCESS] = "all_success",
    [TR_RULE_ALL_DONE] = "all_done",
    [TR_RULE_ONE_SUCCESS] = "one_success",
    [TR_RULE_NONE_FAILED] = "none_failed",
};

static const char skip_mt_key = 's';

#define SKIP_REASON_MAX 1024

int tr_flow_field_of(const char *k, size_t len)
{
    static const char *const names[] = {"trigger_rule", "subrun", "approval"};
    for (int i = 0; i < 3; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], k, len) == 0)
            return i + 1;
    }
    return 0;
}

/* A "name[@version]": a non-empty name without NUL, '/' or spaces. */
static bool pipeline_ref_ok(const char *s, size_t len)
{
    if (len == 0 || len > TR_TASK_NAME_MAX || s[0] == '@')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '/' || c == 0x7f)
            return false;
    }
    return s[len - 1] != '@';
}

int tr_flow_check_field(lua_State *L, int which, struct tr_task_fields *f, char *why,
                        size_t why_len)
{
    size_t len = 0;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    switch (which) {
    case 1:
        for (int r = 0; s != NULL && r < TR_RULE_COUNT; r++) {
            if (strlen(tr_trigger_rule_names[r]) == len &&
                memcmp(tr_trigger_rule_names[r], s, len) == 0) {
                f->trigger_rule = (uint8_t)r;
                return 0;
            }
        }
        {
            char got[80];
            if (s != NULL)
                snprintf(got, sizeof(got), "'%.*s'", (int)(len > 64 ? 64 : len), s);
            else
                snprintf(got, sizeof(got), "%s", luaL_typename(L, -1));
            snprintf(why, why_len, "task '%.*s': field 'trigger_rule' must be one of "
                     "all_success, all_done, one_success, none_failed (got %s)",
                     (int)f->name_len, f->name, got);
        }
        return -1;
    case 2:
        if (s == NULL || !pipeline_ref_ok(s, len)) {
            snprintf(why, why_len, "subrun '%.*s': field 'pipeline' must be \"name\" or "
                     "\"name@version\" (got %s)", (int)f->name_len, f->name,
                     s ? "a malformed string" : luaL_typename(L, -1));
            return -1;
        }
        f->kind = TR_KIND_SUBRUN;
        f->subrun = s;
        f->subrun_len = len;
        return 0;
    case 3:
        if (s == NULL || (strcmp(s, "approve") != 0 && strcmp(s, "reject") != 0)) {
            snprintf(why, why_len, "approval '%.*s': field 'default' must be \"approve\" or "
                     "\"reject\" (got %s)", (int)f->name_len, f->name,
                     s ? "another string" : luaL_typename(L, -1));
            return -1;
        }
        f->kind = TR_KIND_APPROVAL;
        f->approve_default = strcmp(s, "approve") == 0;
        return 0;
    default:
        snprintf(why, why_len, "task '%.*s': unknown field", (int)f->name_len, f->name);
        return -1;
    }
}

/* ====================================================================== */
/* trellis.skip                                                            */
/* ====================================================================== */

static int l_skip(lua_State *L)
{
    size_t len = 0;
    const char *reason = luaL_optlstring(L, 1, "skipped", &len);
    if (len > SKIP_REASON_MAX)
        len = SKIP_REASON_MAX;
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, reason, len);
    lua_setfield(L, -2, "reason");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &skip_mt_key);
    lua_setmetatable(L, -2);
    return 1;
}

bool tr_lua_skip_reason(lua_State *L, int idx, const char **reason, size_t *len)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 3) || !lua_getmetatable(L, idx))
        return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &skip_mt_key);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same)
        return false;
    lua_pushliteral(L, "reason");
    lua_rawget(L, idx);
    *reason = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1); /* the table keeps the string alive */
    if (*reason == NULL) {
        *reason = "skipped";
        *len = 7;
    }
    return true;
}

/* ====================================================================== */
/* trellis.subrun and trellis.approval                                     */
/* ====================================================================== */

static int no_params(lua_State *L)
{
    (void)L;
    return 0; /* nil: the child runs with its pipeline's default params */
}

static int approval_run(lua_State *L)
{
    return luaL_error(L, "an approval task runs in the scheduler, not on a worker");
}

/* Moves t[from] to t[to] (t at index 1), leaving t[from] nil. */
static void move_field(lua_State *L, const char *from, const char *to)
{
    lua_getfield(L, 1, from);
    lua_setfield(L, 1, to);
    lua_pushnil(L);
    lua_setfield(L, 1, from);
}

static int l_subrun(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1))
        return luaL_error(L, "trellis.subrun: the table already has a metatable");
    lua_getfield(L, 1, "run");
    if (!lua_isnil(L, -1))
        return luaL_error(L, "trellis.subrun: give 'params' (a function), not 'run'");
    lua_pop(L, 1);
    lua_getfield(L, 1, "pipeline");
    if (lua_isnil(L, -1)) {
        lua_getfield(L, 1, "name");
        return luaL_error(L, "subrun '%s': field 'pipeline' is required (\"name\" or "
                          "\"name@version\")", lua_type(L, -1) == LUA_TSTRING
                          ? lua_tostring(L, -1) : "?");
    }
    lua_setfield(L, 1, "subrun");
    lua_pushnil(L);
    lua_setfield(L, 1, "pipeline");
    lua_getfield(L, 1, "params");
    int pt = lua_type(L, -1);
    if (pt != LUA_TNIL && pt != LUA_TFUNCTION)
        return luaL_error(L, "trellis.subrun: field 'params' must be a function (got %s)",
                          lua_typename(L, pt));
    if (pt == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushcfunction(L, no_params);
    }
    lua_setfield(L, 1, "run");
    lua_pushnil(L);
    lua_setfield(L, 1, "params");
    lua_settop(L, 1);
    return tr_lua_task(L); /* called directly: its errors point at the file's line */
}

static int l_approval(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "run");
    if (!lua_isnil(L, -1))
        return luaL_error(L, "trellis.approval: an approval has no 'run'");
    lua_pop(L, 1);
    lua_getfield(L, 1, "default");
    bool absent = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (absent) {
        lua_pushliteral(L, "reject");
        lua_setfield(L, 1, "default");
    }
    move_field(L, "default", "approval");
    lua_pushcfunction(L, approval_run);
    lua_setfield(L, 1, "run");
    lua_settop(L, 1);
    return tr_lua_task(L); /* called directly: its errors point at the file's line */
}

void tr_flow_open(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "trellis.skip");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &skip_mt_key);
    lua_pushcfunction(L, l_skip);
    lua_setfield(L, -2, "skip");
    lua_pushcfunction(L, l_subrun);
    lua_setfield(L, -2, "subrun");
    lua_pushcfunction(L, l_approval);
    lua_setfield(L, -2, "approval");
}
