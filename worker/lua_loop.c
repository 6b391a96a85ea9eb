/*
 * lua_loop.c - the C half of trellis.feedback and trellis.registry in tasks.
 *
 * One C function does the work: call(op, args [, timeout]) sends CALL to
 * the scheduler for the running task and yields until CALL_REPLY
 * (worker/exec_calls.c), returning the API's status and answer. The Lua half
 * (worker/lua/trellis/loop.lua) gets it as an upvalue and builds the
 * functions pipelines see, the promotion gate among them, on top of it.
 *
 * Loop thread only.
 */
#include "worker/lua_loop.h"

#include <lauxlib.h>

#include "lib/lua/lua_rt.h"
#include "worker/exec_calls.h"
#include "worker/executor.h"
#include "worker/lua_embed.h"

/* call(op, args [, timeout_s]) -> status, body. Raises outside a task's own coroutine. */
static int l_call(lua_State *L)
{
    const char *op = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Number timeout = luaL_optnumber(L, 3, TR_CALL_TIMEOUT_S);
    struct tr_task *t = tr_task_of(L);
    if (t == NULL)
        return luaL_error(L, "trellis.%s can only be called from a task's run function (not "
                             "while the pipeline loads, nor inside a coroutine the task created)",
                          op);
    lua_settop(L, 2);
    return tr_task_call(L, t, op, 2, timeout);
}

int tr_lua_loop_open(lua_State *L)
{
    tr_lua_push_trellis(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_call);
    lua_setfield(L, -2, "call");
    tr_lua_embedded_call(L, "trellis.loop", 1);
    lua_getfield(L, -1, "feedback");
    lua_setfield(L, -3, "feedback");
    lua_getfield(L, -1, "registry");
    lua_setfield(L, -3, "registry");
    lua_pop(L, 2);
    return 0;
}
