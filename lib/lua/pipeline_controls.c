/*
 * pipeline_controls.c - a task's `labels` and `concurrency`, a pipeline's
 * `timeout` and `max_active_runs`: their checks and their copy into the def
 * (pipeline_controls.h).
 *
 * A task's labels are kept sorted by key, so that two tasks asking for the
 * same labels in any order share one ready queue in the scheduler.
 */
#include "lib/lua/pipeline_controls.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/lua/lua_trellis.h"

#define WHO "task '%.*s'"

static bool key_ok(const char *s, size_t len)
{
    return len > 0 && len <= TR_LABEL_KEY_MAX && memchr(s, '\0', len) == NULL &&
           memchr(s, '=', len) == NULL && memchr(s, ',', len) == NULL;
}

int tr_check_task_labels(lua_State *L, const char *who, size_t who_len, char *why,
                         size_t why_len)
{
    int idx = lua_gettop(L);
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(why, why_len, WHO ": field 'labels' must be a table of string keys and string "
                 "values, like { zone = \"a\" } (got %s)", (int)who_len, who,
                 luaL_typename(L, idx));
        return -1;
    }
    uint32_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen = 0, vlen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
        if (k == NULL || !key_ok(k, klen)) {
            snprintf(why, why_len, WHO ": field 'labels' must have string keys of 1 to %d bytes "
                     "without '=', ',' or NUL (found a key of type %s)", (int)who_len, who,
                     TR_LABEL_KEY_MAX, luaL_typename(L, -2));
            lua_pop(L, 2);
            return -1;
        }
        if (v == NULL || vlen == 0 || vlen > TR_LABEL_VALUE_MAX || memchr(v, '\0', vlen)) {
            snprintf(why, why_len, WHO ": labels.%.*s must be a string of 1 to %d bytes without "
                     "NUL (got %s)", (int)who_len, who, (int)klen, k, TR_LABEL_VALUE_MAX,
                     luaL_typename(L, -1));
            lua_pop(L, 2);
            return -1;
        }
        if (++n > TR_TASK_LABELS_MAX) {
            snprintf(why, why_len, WHO ": field 'labels' has more than %d labels", (int)who_len,
                     who, TR_TASK_LABELS_MAX);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

int tr_check_task_concurrency(lua_State *L, const char *who, size_t who_len, char *why,
                              size_t why_len)
{
    int idx = lua_gettop(L);
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(why, why_len, WHO ": field 'concurrency' must be a table like { key = \"gpu\", "
                 "limit = 4 } (got %s)", (int)who_len, who, luaL_typename(L, idx));
        return -1;
    }
    bool has_key = false, has_limit = false;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : "";
        if (klen == 3 && memcmp(k, "key", 3) == 0) {
            size_t vlen = 0;
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
            if (v == NULL || vlen == 0 || vlen > TR_CONC_KEY_MAX || memchr(v, '\0', vlen)) {
                snprintf(why, why_len, WHO ": concurrency.key must be a string of 1 to %d bytes "
                         "without NUL (got %s)", (int)who_len, who, TR_CONC_KEY_MAX,
                         luaL_typename(L, -1));
                lua_pop(L, 2);
                return -1;
            }
            has_key = true;
        } else if (klen == 5 && memcmp(k, "limit", 5) == 0) {
            int isint = 0;
            lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint || v < 1 || v > TR_CONC_LIMIT_MAX) {
                snprintf(why, why_len, WHO ": concurrency.limit must be an integer from 1 to %d "
                         "(got %s)", (int)who_len, who, TR_CONC_LIMIT_MAX,
                         lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
                                                        : luaL_typename(L, -1));
                lua_pop(L, 2);
                return -1;
            }
            has_limit = true;
        } else {
            snprintf(why, why_len, WHO ": field 'concurrency' has an unknown field (only key and "
                     "limit)", (int)who_len, who);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    if (!has_key || !has_limit) {
        snprintf(why, why_len, WHO ": field 'concurrency' needs both key and limit, like "
                 "{ key = \"gpu\", limit = 4 } (missing %s)", (int)who_len, who,
                 has_key ? "limit" : "key");
        return -1;
    }
    return 0;
}

int tr_check_pipeline_control(lua_State *L, const char *field, char *why, size_t why_len)
{
    int t = lua_type(L, -1);
    if (t == LUA_TNIL)
        return 0;
    if (strcmp(field, "timeout") == 0) {
        double v = t == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
        if (t != LUA_TNUMBER || !isfinite(v) || v < 0) {
            snprintf(why, why_len, "trellis.pipeline: field 'timeout' must be a finite number of "
                     "seconds >= 0 (got %s)", t == LUA_TNUMBER ? lua_tostring(L, -1)
                                                              : luaL_typename(L, -1));
            return -1;
        }
        return 0;
    }
    int isint = 0;
    lua_Integer v = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
    if (!isint || v < 1 || v > TR_CONC_LIMIT_MAX) {
        snprintf(why, why_len, "trellis.pipeline: field '%s' must be an integer from 1 to %d "
                 "(got %s)", field, TR_CONC_LIMIT_MAX,
                 t == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        return -1;
    }
    return 0;
}

/* ====================================================================== */
/* Into the def                                                            */
/* ====================================================================== */

static int cmp_pair(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Copies the checked labels table at the top of the stack into t. */
static int copy_labels(lua_State *L, struct tr_task_def *t)
{
    int idx = lua_gettop(L);
    uint32_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        lua_pop(L, 1);
    }
    if (n == 0)
        return 0;
    t->labels = tr_calloc(2 * (size_t)n, sizeof(char *));
    if (t->labels == NULL)
        return TR_ENOMEM;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl);
        const char *v = lua_tolstring(L, -1, &vl);
        char **pair = &t->labels[2 * t->n_labels++];
        pair[0] = tr_strndup(k, kl);
        pair[1] = tr_strndup(v, vl);
        lua_pop(L, 1);
        if (pair[0] == NULL || pair[1] == NULL) {
            lua_pop(L, 1);
            return TR_ENOMEM;
        }
    }
    qsort(t->labels, t->n_labels, 2 * sizeof(char *), cmp_pair);
    return 0;
}

static int copy_concurrency(lua_State *L, struct tr_task_def *t)
{
    lua_pushliteral(L, "key");
    lua_rawget(L, -2);
    t->conc_key = tr_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushliteral(L, "limit");
    lua_rawget(L, -2);
    t->conc_limit = (uint32_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return t->conc_key == NULL ? TR_ENOMEM : 0;
}

static int read_task_controls(lua_State *L, struct tr_task_def *t, struct tr_error *err)
{
    char why[TR_TASK_WHY_MAX];
    size_t nl = strlen(t->name);
    int rc = 0;
    lua_pushliteral(L, "labels");
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        rc = tr_check_task_labels(L, t->name, nl, why, sizeof(why)) != 0
                 ? tr_error_set(err, TR_EINVAL, "%s", why)
                 : copy_labels(L, t);
    }
    lua_pop(L, 1);
    if (rc != 0)
        return rc;
    lua_pushliteral(L, "concurrency");
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        rc = tr_check_task_concurrency(L, t->name, nl, why, sizeof(why)) != 0
                 ? tr_error_set(err, TR_EINVAL, "%s", why)
                 : copy_concurrency(L, t);
    }
    lua_pop(L, 1);
    return rc;
}

int tr_pipeline_read_controls(lua_State *L, int idx, struct tr_pipeline_def *def,
                              struct tr_error *err)
{
    char why[TR_TASK_WHY_MAX];
    idx = lua_absindex(L, idx);
    static const char *const fields[] = {"timeout", "max_active_runs"};
    for (size_t i = 0; i < 2; i++) {
        lua_pushstring(L, fields[i]);
        lua_rawget(L, idx);
        if (tr_check_pipeline_control(L, fields[i], why, sizeof(why)) != 0)
            return tr_error_set(err, TR_EINVAL, "%s", why);
        if (!lua_isnil(L, -1)) {
            if (i == 0)
                def->timeout = (double)lua_tonumber(L, -1);
            else
                def->max_active_runs = (uint32_t)lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "tasks");
    lua_rawget(L, idx);
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < def->n_tasks; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        rc = read_task_controls(L, &def->tasks[i], err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc == TR_ENOMEM)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    return rc;
}

void tr_pipeline_free_controls(struct tr_pipeline_def *def)
{
    for (uint32_t i = 0; def->tasks != NULL && i < def->n_tasks; i++) {
        struct tr_task_def *t = &def->tasks[i];
        for (uint32_t k = 0; t->labels != NULL && k < 2u * t->n_labels; k++)
            tr_free(t->labels[k]);
        tr_free_null(&t->labels);
        tr_free_null(&t->conc_key);
    }
}
