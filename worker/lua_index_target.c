/*
 * lua_index_target.c - where index.open(path_or_url) goes: a SQLite file
 * under the data folder (worker/lua_rag.h's rules), or an index in
 * PostgreSQL, by the URL in the call or the worker's --index-url.
 *
 * Loop thread only.
 */
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/base/alloc.h"
#include "worker/lua_index_int.h"
#include "worker/lua_rag.h"
#include "worker/pg_index.h"

/* ====================================================================== */
/* Paths                                                                  */
/* ====================================================================== */

static bool has_dotdot(const char *p)
{
    for (const char *s = p; *s != '\0';) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.')
            return true;
        s += l + (e != NULL);
    }
    return false;
}

/*
 * Resolves an index path into out: relative to the data folder, or absolute
 * inside it; creates the folders on the way. Without file (a PostgreSQL
 * index name), out is the path relative to the data folder and nothing is
 * created. May raise.
 */
void tr_lua_index_path(lua_State *L, const char *path, char *out, size_t cap, bool file)
{
    char dir[PATH_MAX];
    int rc = tr_lua_rag_data_dir(dir, sizeof(dir));
    if (rc < 0)
        luaL_error(L, "cannot use the data folder: %s", tr_strerror(rc));
    size_t dl = strlen(dir);
    if (path[0] == '\0' || has_dotdot(path))
        luaL_error(L, "index path '%s' must not be empty nor hold '..'", path);
    const char *rel = path;
    if (path[0] == '/') {
        if (strncmp(path, dir, dl) != 0 || path[dl] != '/')
            luaL_error(L, "index path '%s' is outside the data folder '%s'", path, dir);
        rel = path + dl + 1;
    }
    int w = file ? snprintf(out, cap, "%s/%s", dir, rel) : snprintf(out, cap, "%s", rel);
    if (w < 0 || (size_t)w >= cap || (!file && (size_t)w > TR_PG_NAME_MAX))
        luaL_error(L, "index path '%s' is too long", path);
    if (!file)
        return;
    /* Create the folders between the data folder and the file. */
    for (char *s = out + dl + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            *s = '/';
            luaL_error(L, "cannot create the folder of index '%s': %s", path, strerror(errno));
        }
        *s = '/';
    }
}

/*
 * The PostgreSQL side of index.open: url is "postgres[ql]://...[#name]"
 * (the name from the fragment, or opts.name, or "default"); path, when the
 * worker has an index URL, names the index the way it would name a file
 * under the data folder. Fills out and *url_out (allocated last, so that
 * nothing leaks when this raises). May raise.
 */
static void pg_target(lua_State *L, const char *url, const char *path, char *out, size_t cap,
                      char **url_out)
{
    const char *hash = strchr(url, '#');
    size_t ul = hash ? (size_t)(hash - url) : strlen(url);
    const char *name = NULL;
    if (path != NULL) {
        tr_lua_index_path(L, path, out, cap, false);
    } else {
        if (hash != NULL && hash[1] != '\0')
            name = hash + 1;
        if (lua_istable(L, 2) && lua_getfield(L, 2, "name") != LUA_TNIL)
            name = luaL_checkstring(L, -1); /* kept alive by the table */
        if (lua_istable(L, 2))
            lua_pop(L, 1);
        if (name == NULL)
            name = "default";
        size_t nl = strlen(name);
        if (nl == 0 || nl > TR_PG_NAME_MAX || nl >= cap)
            luaL_error(L, "an index name needs 1 to %d bytes", TR_PG_NAME_MAX);
        memcpy(out, name, nl + 1);
    }
    *url_out = tr_strndup(url, ul);
    if (*url_out == NULL)
        luaL_error(L, "not enough memory");
}

/* The worker's index URL (--index-url), or NULL for SQLite files. */
static char *default_url;

void tr_lua_index_set_url(const char *url)
{
    if (default_url != NULL)
        explicit_bzero(default_url, strlen(default_url));
    tr_free(default_url);
    default_url = url != NULL && url[0] != '\0' ? tr_strdup(url) : NULL;
}

void tr_lua_index_target(lua_State *L, const char *arg, char *out, size_t cap, char **url)
{
    *url = NULL;
    if (tr_pg_is_url(arg))
        pg_target(L, arg, NULL, out, cap, url);
    else if (default_url != NULL)
        pg_target(L, default_url, arg, out, cap, url);
    else
        tr_lua_index_path(L, arg, out, cap, true);
}
