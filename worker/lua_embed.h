/*
 * lua_embed.h - the Lua sources compiled into the worker (the .lua files under worker/lua,
 * turned into byte arrays at build time by worker/embed_lua.cmake), and the
 * loader that lets a module be written half in C, half in Lua.
 *
 * A module written in Lua receives, as the `...` of its chunk, a table of
 * C functions from its C half: those stay upvalues of the Lua code, out of
 * reach of pipeline code (there is no debug library in the sandbox), which
 * is where functions that read the environment or the host belong.
 */
#ifndef TR_WORKER_LUA_EMBED_H
#define TR_WORKER_LUA_EMBED_H

#include <lua.h>
#include <stddef.h>

struct tr_lua_embedded
{
    const char *name; /* module name, "trellis.llm"; NULL ends the table */
    const char *src;
    size_t len;
};

/* Every embedded source; the generated worker/lua_embedded.c defines it. */
extern const struct tr_lua_embedded tr_lua_embedded[];

/*
 * Runs the embedded source of module `name` with the nargs values on top of
 * the stack as its `...` (they are popped) and leaves its one result.
 * Raises a Lua error when there is no such source or the chunk fails, so
 * call it from a lua_CFunction (a module's open function).
 */
void tr_lua_embedded_call(lua_State *L, const char *name, int nargs);

#endif
