/*
 * lua_rag.h - the retrieval modules of the worker's pipeline states:
 * trellis.index (C, worker/lua_index.c), trellis.ingest (a C half in
 * worker/lua_ingest.c and Lua glue in worker/lua/trellis/ingest.lua),
 * trellis.prompt and trellis.eval (Lua, with a C half for digests).
 *
 * Calls that touch SQLite, read files or transform big texts run their work
 * in the thread pool while the calling task waits (worker/offload.h); from
 * outside a task (tests, a file's top level) they run in place.
 *
 * Files: an index path is relative to the data folder (TRELLIS_DATA_DIR,
 * default ./trellis-data, created on first use) or an absolute path inside
 * it; ingestion reads only under roots that lie inside an allowed root
 * (TRELLIS_INGEST_ROOTS, a colon-separated list, default the worker's
 * working folder and the data folder). ".." components are refused.
 *
 * Loop thread only, like the states (the jobs' work runs in the pool).
 */
#ifndef TR_WORKER_LUA_RAG_H
#define TR_WORKER_LUA_RAG_H

#include <lua.h>

/* lua_CFunctions for require: each returns its module table; they may raise. */
int tr_lua_index_open(lua_State *L);
int tr_lua_ingest_open(lua_State *L);
int tr_lua_prompt_open(lua_State *L);
int tr_lua_eval_open(lua_State *L);

/*
 * The C half of trellis.ingest, trellis.prompt and trellis.eval as a table
 * (what the Lua glue receives as `...`), for hosts that load the Lua
 * sources themselves, such as the unit tests. May raise.
 */
int tr_lua_rag_push_native(lua_State *L);

/*
 * Sets the worker's index URL (--index-url, a postgres:// URL; NULL or ""
 * for none): index.open(name) then opens the index name in that database
 * instead of a SQLite file. Called once, before any pipeline state exists.
 */
void tr_lua_index_set_url(const char *url);

/*
 * Writes the real path of the data folder to out (creating it when
 * missing). Returns 0, or a negative TR_E* code.
 */
int tr_lua_rag_data_dir(char *out, size_t cap);

#endif
