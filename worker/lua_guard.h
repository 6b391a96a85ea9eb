/*
 * lua_guard.h - `require "trellis.guard"`: guardrails for model calls (PII
 * detection and redaction, prompt-injection heuristics, JSON Schema
 * validation, blocked words and topics, length limits), usable alone and as
 * the hooks trellis.llm runs around each call when the pipeline declares
 * `guards` (docs/guardrails.md). The logic is Lua
 * (worker/lua/trellis/guard.lua); the PII scan is C (worker/guard_pii.c).
 */
#ifndef TR_WORKER_LUA_GUARD_H
#define TR_WORKER_LUA_GUARD_H

#include <lua.h>

/* lua_CFunction for require: returns the module. May raise. */
int tr_lua_guard_open(lua_State *L);

/* The C half as a table (what guard.lua receives as `...`), for hosts that
 * load the Lua source themselves (the unit tests). May raise. */
int tr_lua_guard_push_native(lua_State *L);

#endif
