/*
 * lua_al.c - require "trellis.al": active learning, written in Lua
 * (worker/lua/trellis/al.lua); it needs nothing from C.
 */
#include "worker/lua_embed.h"
#include "worker/lua_loop.h"

int tr_lua_al_open(lua_State *L)
{
    tr_lua_embedded_call(L, "trellis.al", 0);
    return 1;
}
