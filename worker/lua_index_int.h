/*
 * lua_index_int.h - what trellis.index's files share (worker/lua_index.c,
 * worker/lua_index_target.c).
 */
#ifndef TR_WORKER_LUA_INDEX_INT_H
#define TR_WORKER_LUA_INDEX_INT_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Resolves an index path into out: relative to the data folder, or absolute
 * inside it, with no "..". With file, out is the file's full path and the
 * folders on the way are created; without (a PostgreSQL index name), out
 * is the path relative to the data folder. May raise.
 */
void tr_lua_index_path(lua_State *L, const char *path, char *out, size_t cap, bool file);

/*
 * The target of index.open(arg, opts) (opts at stack index 2, a table or
 * nil): a postgres:// URL (the index named by its #fragment, opts.name or
 * "default"), or, with the worker's --index-url, the index named by the
 * path arg, or else the SQLite file at path arg. Fills out (the file path
 * or the index name) and *url (an allocated copy of the URL without its
 * fragment, or NULL for SQLite). May raise, leaving *url NULL.
 */
void tr_lua_index_target(lua_State *L, const char *arg, char *out, size_t cap, char **url);

#endif
