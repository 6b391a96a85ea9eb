/*
 * modules.h - the Lua modules the worker adds to every pipeline state
 * (`require "trellis.http"`, `require "trellis.llm"`, ...).
 */
#ifndef TR_WORKER_MODULES_H
#define TR_WORKER_MODULES_H

#include <lua.h>

/*
 * lua_CFunction: registers every worker module in L (each opens lazily, at
 * its first require). Run it protected: it raises on out of memory.
 */
int tr_worker_open_modules(lua_State *L);

#endif
