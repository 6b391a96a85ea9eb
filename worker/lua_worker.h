/*
 * lua_worker.h - what the worker adds to the trellis Lua module of its
 * pipeline states: trellis.sleep(seconds), trellis.now(), and the function
 * that becomes ctx.log in every task's ctx.
 *
 * trellis.sleep yields the calling task's coroutine (worker/executor.h,
 * tr_task_yield) and a loop timer resumes it, so a thousand sleeping tasks
 * cost a thousand timers, not a thousand threads.
 *
 * Loop thread only, like the states themselves.
 */
#ifndef TR_WORKER_LUA_WORKER_H
#define TR_WORKER_LUA_WORKER_H

#include <lua.h>

#include "lib/base/error.h"

/*
 * lua_CFunction: adds sleep and now to the trellis module table of L (which
 * tr_lua_new made). Call it with lua_pcall: it may raise (memory).
 */
int tr_lua_worker_open(lua_State *L);

/* Pushes the ctx.log function (a light C function: no allocation). Never raises. */
void tr_lua_worker_push_log(lua_State *L);

/* Longest ctx.log line in bytes; longer lines are cut. */
#define TR_TASK_LOG_LINE_MAX 1024

#endif
