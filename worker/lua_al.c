/*
 * lua_al.c - require "trellis.al" (active learning) and require
 * "trellis.rerank" (the learned reranker), written in Lua
 * (worker/lua/trellis/al.lua, rerank.lua); they need nothing from C.
 */
#include "worker/lua_embed.h"
#include "worker/lua_loop.h"

int tr_lua_al_open(lua_State *L)
{
    tr_lua_embedded_call(L, "trellis.al", 0);
    return 1;
}

int tr_lua_rerank_open(lua_State *L)
{
    tr_lua_embedded_call(L, "trellis.rerank", 0);
    return 1;
}
