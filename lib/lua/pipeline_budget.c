/*
 * pipeline_budget.c - the pipeline's `budget = {cost = ..., tokens = ...}`
 * and `on_budget = "fail" | "fallback" | "approve"` (docs/budgets.md): what
 * one run may spend on LLM calls, and what a call that does not fit does.
 * The scheduler checks every call's reservation against them
 * (scheduler/budgets.c).
 */
#include <lua.h>
#include <math.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/pipeline.h"

const char *const tr_on_budget_names[3] = {"fail", "fallback", "approve"};

void tr_pipeline_free_budget(struct tr_pipeline_def *def)
{
    for (uint32_t i = 0; def->task_providers != NULL && i < def->n_tasks; i++)
        tr_free(def->task_providers[i]);
    tr_free(def->task_providers);
    def->task_providers = NULL;
}

/* A limit: absent, or a finite number >= 0. */
static int limit_of(lua_State *L, int t, const char *k, const char *pipe, double *out,
                    struct tr_error *err)
{
    lua_getfield(L, t, k);
    int rc = 0;
    if (lua_isnil(L, -1)) {
        *out = 0;
    } else if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)) ||
               lua_tonumber(L, -1) <= 0) {
        rc = tr_error_set(err, TR_EINVAL, "pipeline '%s': budget.%s must be a number > 0", pipe,
                          k);
    } else {
        *out = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return rc;
}

/* The tasks' `providers` (checked by trellis.task), joined by commas. */
static int read_task_providers(lua_State *L, int idx, struct tr_pipeline_def *def,
                               struct tr_error *err)
{
    lua_getfield(L, idx, "tasks");
    int tasks = lua_gettop(L);
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < def->n_tasks; i++) {
        lua_rawgeti(L, tasks, (lua_Integer)i + 1);
        lua_getfield(L, -1, "providers");
        if (lua_istable(L, -1)) {
            if (def->task_providers == NULL &&
                (def->task_providers = tr_calloc(def->n_tasks, sizeof(char *))) == NULL)
                rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            struct tr_buf b;
            tr_buf_init(&b, 4096);
            size_t n = lua_rawlen(L, -1);
            for (size_t k = 1; rc == 0 && k <= n; k++) {
                lua_rawgeti(L, -1, (lua_Integer)k);
                size_t len = 0;
                const char *s = lua_tolstring(L, -1, &len);
                if ((k > 1 && tr_buf_addch(&b, ',') != 0) || s == NULL ||
                    tr_buf_add(&b, s, len) != 0)
                    rc = tr_error_set(err, TR_EINVAL, "task '%s': bad providers",
                                      def->tasks[i].name);
                lua_pop(L, 1);
            }
            if (rc == 0 && (tr_buf_addch(&b, '\0') != 0 ||
                            (def->task_providers[i] = tr_buf_detach(&b, NULL)) == NULL))
                rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            tr_buf_release(&b);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return rc;
}

int tr_pipeline_read_budget(lua_State *L, int idx, struct tr_pipeline_def *def,
                            struct tr_error *err)
{
    idx = lua_absindex(L, idx);
    int rc = read_task_providers(L, idx, def, err);
    if (rc != 0)
        return rc;
    lua_getfield(L, idx, "budget");
    if (!lua_isnil(L, -1)) {
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) {
            rc = tr_error_set(err, TR_EINVAL, "pipeline '%s': budget must be a table {cost = "
                              "USD, tokens = N}", def->name);
        } else {
            lua_pushnil(L);
            while (rc == 0 && lua_next(L, t) != 0) {
                const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
                if (k == NULL || (strcmp(k, "cost") != 0 && strcmp(k, "tokens") != 0))
                    rc = tr_error_set(err, TR_EINVAL, "pipeline '%s': budget has an unknown "
                                      "field (cost and tokens are known)", def->name);
                lua_pop(L, 1);
            }
            if (rc == 0)
                rc = limit_of(L, t, "cost", def->name, &def->budget_cost, err);
            if (rc == 0)
                rc = limit_of(L, t, "tokens", def->name, &def->budget_tokens, err);
        }
    }
    lua_pop(L, 1);
    if (rc != 0)
        return rc;
    lua_getfield(L, idx, "on_budget");
    def->on_budget = TR_ON_BUDGET_FAIL;
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        bool found = false;
        for (uint8_t i = 0; i < 3; i++) {
            if (strcmp(s, tr_on_budget_names[i]) == 0) {
                def->on_budget = i;
                found = true;
            }
        }
        if (!found)
            rc = tr_error_set(err, TR_EINVAL, "pipeline '%s': on_budget must be \"fail\", "
                              "\"fallback\" or \"approve\"", def->name);
    }
    lua_pop(L, 1);
    return rc;
}
