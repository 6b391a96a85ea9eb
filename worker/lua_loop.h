/*
 * lua_loop.h - the feedback loop in tasks: trellis.feedback.request_label,
 * trellis.registry.get/register/promote/gate (worker/lua_loop.c, with the
 * Lua half worker/lua/trellis/loop.lua), and the active-learning module
 * trellis.al (worker/lua/trellis/al.lua). docs/feedback.md says what they do.
 */
#ifndef TR_WORKER_LUA_LOOP_H
#define TR_WORKER_LUA_LOOP_H

#include <lua.h>

/*
 * lua_CFunction: adds feedback and registry to the trellis module table of
 * L. Call it protected, like tr_lua_worker_open: it may raise (memory).
 */
int tr_lua_loop_open(lua_State *L);

/* lua_CFunctions for require "trellis.al" and "trellis.rerank": return the module; may raise. */
int tr_lua_al_open(lua_State *L);
int tr_lua_rerank_open(lua_State *L);

#endif
