/*
 * lua_worker.c - trellis.sleep, trellis.now and ctx.log for the worker's
 * pipeline states.
 *
 * trellis.sleep is the simplest user of the executor's pending operations:
 * its operation is the task's own timer (tr_task_timer), so sleeping costs
 * no allocation. The timer's callback resumes the task; a timeout, a CANCEL
 * or a lost scheduler cancels the operation instead, which only stops the
 * timer. Every check that can fail runs before the timer starts, so an
 * error raised here never leaves a timer running.
 *
 * ctx.log is one light C function shared by every task: it finds the task
 * it logs for through the executor (the task being run right now), so it
 * works from inside coroutines a task created, and ctx needs no closure.
 *
 * Loop thread only.
 */
#include "worker/lua_worker.h"

#include <lauxlib.h>
#include <math.h>

#include "lib/lua/lua_rt.h"
#include "worker/executor.h"
#include "worker/lua_exec.h"
#include "worker/secrets.h"

/* Longest sleep: 30 days, so that the milliseconds fit any timer. */
#define SLEEP_MAX_S (30.0 * 24 * 3600)

static void on_sleep_done(uv_timer_t *h)
{
    tr_task_resume(h->data);
}

static void sleep_cancel(struct tr_task *t, void *op)
{
    uv_timer_stop(op);
}

/* Runs in the task's coroutine after the timer resumed it: sleep returns nothing. */
static int sleep_done(lua_State *L, int status, lua_KContext kctx)
{
    return 0;
}

/* trellis.sleep(seconds): may raise (bad argument, called outside a task). */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "non-negative number of seconds expected");
    struct tr_task *t = tr_task_of(L);
    if (t == NULL)
        return luaL_error(L, "trellis.sleep can only be called from a task's run function "
                             "(not while the pipeline loads, nor inside a coroutine the task "
                             "created)");
    if (s > SLEEP_MAX_S)
        s = SLEEP_MAX_S;
    uv_timer_t *timer = tr_task_timer(t);
    /* The loop's clock is from the start of this turn, and a task may have
     * run long since: without the update the sleep would end early. */
    uv_update_time(timer->loop);
    uv_timer_start(timer, on_sleep_done, (uint64_t)ceil(s * 1000.0), 0);
    return tr_task_yield(L, t, timer, sleep_cancel, 0, sleep_done);
}

/* trellis.now(): wall-clock seconds since the epoch, with a fraction. */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)tr_now());
    return 1;
}

/*
 * ctx.log(...): joins tostring() of the arguments with spaces, cut at
 * TR_TASK_LOG_LINE_MAX bytes. May raise (a __tostring that fails, memory).
 */
static int l_log(lua_State *L)
{
    struct tr_task *t = tr_task_running(L);
    if (t == NULL)
        return luaL_error(L, "ctx.log can only be called while a task runs");
    char line[TR_TASK_LOG_LINE_MAX];
    size_t len = 0;
    int n = lua_gettop(L);
    for (int i = 1; i <= n && len < sizeof(line); i++) {
        if (i > 1)
            line[len++] = ' ';
        size_t sl;
        const char *s = luaL_tolstring(L, i, &sl);
        size_t take = TR_MIN(sl, sizeof(line) - len);
        memcpy(line + len, s, take);
        len += take;
        lua_pop(L, 1);
    }
    tr_task_log(t, line, len);
    return 0;
}

int tr_lua_worker_open(lua_State *L)
{
    tr_lua_push_trellis(L);
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, tr_lua_exec);
    lua_setfield(L, -2, "exec");
    lua_pushcfunction(L, tr_lua_secret);
    lua_setfield(L, -2, "secret");
    lua_pop(L, 1);
    return 0;
}

void tr_lua_worker_push_log(lua_State *L)
{
    lua_pushcfunction(L, l_log);
}
