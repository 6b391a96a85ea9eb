/*
 * modules.c - the table of worker Lua modules, and the loader of the Lua
 * sources compiled into the worker.
 *
 * One plain table, so that adding a module is adding a line: its name and
 * the lua_CFunction that opens it (run by require, with the name as its
 * argument, and returning the module).
 */
#include "worker/modules.h"

#include <lauxlib.h>
#include <string.h>

#include "lib/lua/lua_rt.h"
#include "worker/lua_embed.h"
#include "worker/lua_guard.h"
#include "worker/lua_http.h"
#include "worker/lua_llm.h"
#include "worker/lua_loop.h"
#include "worker/lua_rag.h"

static const struct
{
    const char *name;
    lua_CFunction open;
} modules[] = {
    {"trellis.http", tr_lua_http_open},
    {"trellis.llm", tr_lua_llm_open},
    {"trellis.json", tr_lua_json_open},
    {"trellis.index", tr_lua_index_open},
    {"trellis.ingest", tr_lua_ingest_open},
    {"trellis.prompt", tr_lua_prompt_open},
    {"trellis.eval", tr_lua_eval_open},
    {"trellis.al", tr_lua_al_open},
    {"trellis.rerank", tr_lua_rerank_open},
    {"trellis.guard", tr_lua_guard_open},
};

int tr_worker_open_modules(lua_State *L)
{
    for (size_t i = 0; i < TR_ARRAY_LEN(modules); i++) {
        if (tr_lua_register_module(L, modules[i].name, modules[i].open) < 0)
            return luaL_error(L, "not enough memory to register module '%s'", modules[i].name);
    }
    return 0;
}

void tr_lua_embedded_call(lua_State *L, const char *name, int nargs)
{
    for (const struct tr_lua_embedded *m = tr_lua_embedded; m->name != NULL; m++) {
        if (strcmp(m->name, name) != 0)
            continue;
        char chunk[128];
        snprintf(chunk, sizeof(chunk), "=%s", name);
        if (luaL_loadbufferx(L, m->src, m->len, chunk, "t") != LUA_OK)
            lua_error(L);
        lua_insert(L, -nargs - 1);
        lua_call(L, nargs, 1);
        return;
    }
    luaL_error(L, "no embedded Lua source for module '%s'", name);
}
