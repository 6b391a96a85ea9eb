/*
 * pipeline_guards.c - checks the `guards` field of a pipeline or a task
 * (docs/guardrails.md) when the file is read, so that a guard naming an
 * unknown check, a pii action other than redact or block, a threshold out
 * of range or a schema keyword outside the supported subset is refused at
 * submit time with the file's line, not at the first model call.
 *
 * The worker runs the checks (worker/lua/trellis/guard.lua); the two lists
 * of names here and there must agree.
 */
#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "lib/lua/lua_trellis.h"

#define SCHEMA_DEPTH_MAX 32

static const char *const stage_input[] = {"pii", "injection", "max_length", "blocked"};
static const char *const stage_output[] = {"pii", "injection", "max_length", "blocked",
                                           "schema"};
static const char *const schema_keys[] = {
    "type",     "properties", "required",  "items",     "enum",
    "minimum",  "maximum",    "minLength", "maxLength", "pattern",
    "additionalProperties",   "minItems",  "maxItems",  "description",
    "title",    "$schema",    "const"};
static const char *const schema_types[] = {"object",  "array",   "string", "number",
                                           "integer", "boolean", "null"};

static bool in_list(const char *k, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(list[i]) == len && memcmp(list[i], k, len) == 0)
            return true;
    }
    return false;
}

static bool key_is(lua_State *L, const char *k)
{
    size_t len;
    const char *s = lua_tolstring(L, -2, &len);
    return strlen(k) == len && memcmp(k, s, len) == 0;
}

/* The value on top is an array of strings (an empty one allowed). */
static bool string_array(lua_State *L)
{
    if (!lua_istable(L, -1))
        return false;
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    bool ok = true;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        ok &= lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n &&
              lua_type(L, -1) == LUA_TSTRING;
        lua_pop(L, 1);
    }
    return ok;
}

static bool positive_integer(lua_State *L)
{
    return lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0;
}

/* The JSON Schema regex subset of guard.lua (no alternation, groups, counted repeats). */
static const char *pattern_problem(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\') {
            i++;
            continue;
        }
        if (strchr("|(){}", s[i]) != NULL)
            return "uses alternation, groups or counted repeats (outside the supported subset)";
    }
    return NULL;
}

/* Checks the schema on top of the stack; path names it in messages. */
static int check_schema(lua_State *L, const char *path, int depth, char *why, size_t why_len)
{
    if (depth > SCHEMA_DEPTH_MAX) {
        snprintf(why, why_len, "%.120s: nested more than %d levels", path, SCHEMA_DEPTH_MAX);
        return -1;
    }
    if (!lua_istable(L, -1)) {
        snprintf(why, why_len, "%.120s must be a table (got %s)", path, luaL_typename(L, -1));
        return -1;
    }
    luaL_checkstack(L, 6, NULL);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        if (k == NULL || !in_list(k, klen, schema_keys, TR_ARRAY_LEN(schema_keys))) {
            snprintf(why, why_len, "%.120s: unsupported keyword '%.40s' (see the subset in "
                     "docs/guardrails.md)", path, k ? k : luaL_typename(L, -2));
            lua_pop(L, 2);
            return -1;
        }
        char sub[512];
        const char *bad = NULL;
        if (key_is(L, "type")) {
            size_t tl;
            if (lua_type(L, -1) == LUA_TSTRING) {
                const char *t = lua_tolstring(L, -1, &tl);
                if (!in_list(t, tl, schema_types, TR_ARRAY_LEN(schema_types)))
                    bad = "type must be one of object, array, string, number, integer, "
                          "boolean, null";
            } else if (!string_array(L)) {
                bad = "type must be a type name or an array of them";
            }
        } else if (key_is(L, "properties")) {
            if (!lua_istable(L, -1)) {
                bad = "properties must be a table of schemas";
            } else {
                lua_pushnil(L);
                while (lua_next(L, -2) != 0) {
                    snprintf(sub, sizeof(sub), "%.300s.properties.%.100s", path,
                             lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
                    if (check_schema(L, sub, depth + 1, why, why_len) != 0) {
                        lua_pop(L, 4);
                        return -1;
                    }
                    lua_pop(L, 1);
                }
            }
        } else if (key_is(L, "items") ||
                   (key_is(L, "additionalProperties") && lua_istable(L, -1))) {
            snprintf(sub, sizeof(sub), "%.300s.%s", path, lua_tostring(L, -2));
            if (check_schema(L, sub, depth + 1, why, why_len) != 0) {
                lua_pop(L, 2);
                return -1;
            }
        } else if (key_is(L, "additionalProperties")) {
            if (!lua_isboolean(L, -1))
                bad = "additionalProperties must be a boolean or a schema";
        } else if (key_is(L, "required")) {
            if (!string_array(L))
                bad = "required must be an array of property names";
        } else if (key_is(L, "enum")) {
            if (!lua_istable(L, -1))
                bad = "enum must be an array of values";
        } else if (key_is(L, "minimum") || key_is(L, "maximum")) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                bad = "minimum and maximum must be numbers";
        } else if (key_is(L, "minLength") || key_is(L, "maxLength") || key_is(L, "minItems") ||
                   key_is(L, "maxItems")) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
                bad = "minLength, maxLength, minItems and maxItems must be integers >= 0";
        } else if (key_is(L, "pattern")) {
            size_t pl;
            const char *pat = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &pl) : NULL;
            bad = pat == NULL ? "pattern must be a string" : pattern_problem(pat, pl);
        }
        if (bad != NULL) {
            snprintf(why, why_len, "%.120s: %s", path, bad);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Pushes t[name] of the table on top, raw: no metamethod runs while a file is read. */
static int raw_field(lua_State *L, const char *name)
{
    lua_pushstring(L, name);
    return lua_rawget(L, -2);
}

/* What is wrong with the `blocked` value on top, or NULL. */
static const char *blocked_problem(lua_State *L)
{
    static const char msg[] = "blocked must be an array of words or {words = {...}, topics = "
                              "{name = {...}}}";
    if (!lua_istable(L, -1))
        return msg;
    bool has_words = raw_field(L, "words") != LUA_TNIL;
    bool ok = !has_words || string_array(L);
    lua_pop(L, 1);
    int tt = raw_field(L, "topics");
    bool has_topics = tt != LUA_TNIL;
    if (has_topics && tt != LUA_TTABLE) {
        ok = false;
    } else if (has_topics) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            ok &= lua_type(L, -2) == LUA_TSTRING && string_array(L);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (!has_words && !has_topics)
        ok = string_array(L);
    return ok ? NULL : msg;
}

/* Checks one stage's table (on top of the stack). */
static int check_stage(lua_State *L, const char *stage, bool output, char *why, size_t why_len)
{
    if (!lua_istable(L, -1)) {
        snprintf(why, why_len, "guards.%s must be a table of checks (got %s)", stage,
                 luaL_typename(L, -1));
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        bool known = k != NULL && (output ? in_list(k, klen, stage_output,
                                                    TR_ARRAY_LEN(stage_output))
                                          : in_list(k, klen, stage_input,
                                                    TR_ARRAY_LEN(stage_input)));
        if (!known) {
            snprintf(why, why_len, "guards.%s: unknown check '%.64s' (known: %s)", stage,
                     k ? k : luaL_typename(L, -2),
                     output ? "pii, injection, max_length, blocked, schema"
                            : "pii, injection, max_length, blocked");
            lua_pop(L, 2);
            return -1;
        }
        const char *bad = NULL;
        if (key_is(L, "pii")) {
            const char *a = NULL;
            if (lua_type(L, -1) == LUA_TSTRING) {
                a = lua_tostring(L, -1);
            } else if (lua_istable(L, -1)) {
                int at = raw_field(L, "action");
                a = at == LUA_TNIL ? "redact" : at == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
                lua_pop(L, 1);
                raw_field(L, "kinds");
                if (!lua_isnil(L, -1)) {
                    bool ok = string_array(L);
                    lua_Integer n = ok ? (lua_Integer)lua_rawlen(L, -1) : 0;
                    for (lua_Integer i = 1; ok && i <= n; i++) {
                        lua_rawgeti(L, -1, i);
                        const char *kind = lua_tostring(L, -1);
                        ok = strcmp(kind, "email") == 0 || strcmp(kind, "phone") == 0 ||
                             strcmp(kind, "card") == 0 || strcmp(kind, "iban") == 0;
                        lua_pop(L, 1);
                    }
                    if (!ok)
                        bad = "pii.kinds must list some of email, phone, card, iban";
                }
                lua_pop(L, 1);
            }
            if (bad == NULL &&
                (a == NULL || (strcmp(a, "redact") != 0 && strcmp(a, "block") != 0)))
                bad = "pii must be \"redact\" or \"block\" (or {action = ..., kinds = {...}})";
        } else if (key_is(L, "injection")) {
            double th = -1;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                th = lua_tonumber(L, -1);
            } else if (lua_istable(L, -1)) {
                raw_field(L, "threshold");
                th = lua_isnil(L, -1) ? 0.7 : lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1)
                                                                              : -1;
                lua_pop(L, 1);
            } else if (lua_isboolean(L, -1) && lua_toboolean(L, -1)) {
                th = 0.7;
            }
            if (!(th > 0 && th <= 1))
                bad = "injection must be true, a threshold in (0, 1] or {threshold = ...}";
        } else if (key_is(L, "max_length")) {
            if (!positive_integer(L))
                bad = "max_length must be a positive integer (characters)";
        } else if (key_is(L, "blocked")) {
            bad = blocked_problem(L);
        } else if (key_is(L, "schema")) {
            char path[64];
            snprintf(path, sizeof(path), "guards.%s.schema", stage);
            if (check_schema(L, path, 0, why, why_len) != 0) {
                lua_pop(L, 2);
                return -1;
            }
        }
        if (bad != NULL) {
            snprintf(why, why_len, "guards.%s.%s", stage, bad);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

int tr_guards_check(lua_State *L, int idx, char *why, size_t why_len)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 16, NULL);
    if (!lua_istable(L, idx)) {
        snprintf(why, why_len, "guards must be a table { input = {...}, output = {...}, "
                 "fallback = \"...\" } (got %s)", luaL_typename(L, idx));
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int rc = 0;
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(why, why_len, "guards: unknown field of type %s (known: input, output, "
                     "fallback)", luaL_typename(L, -2));
            rc = -1;
        } else if (key_is(L, "input")) {
            rc = check_stage(L, "input", false, why, why_len);
        } else if (key_is(L, "output")) {
            rc = check_stage(L, "output", true, why, why_len);
        } else if (key_is(L, "fallback")) {
            if (lua_type(L, -1) != LUA_TSTRING) {
                snprintf(why, why_len, "guards.fallback must be a string (the answer a blocked "
                         "call returns)");
                rc = -1;
            }
        } else {
            snprintf(why, why_len, "guards: unknown field '%.64s' (known: input, output, "
                     "fallback)", lua_tostring(L, -2));
            rc = -1;
        }
        if (rc != 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}
