/*
 * lua_rt.c - a sandboxed lua_State: capped allocator, library allow-list,
 * a require that resolves only registered modules, and the instruction and
 * wall-clock limits of tr_lua_eval.
 *
 * Each state carries a struct rt_ctx as its allocator's ud, so that every
 * thread of the state (coroutines included) reaches it with lua_getallocf.
 * The allocator counts the bytes Lua believes it holds and refuses growth
 * past the cap; it never refuses a shrink or a free, as Lua requires.
 *
 * Every API call that may allocate runs inside lua_pcall (state setup,
 * module registration), so running out of memory is an error code and never
 * reaches the panic function, which is there only to report a bug.
 *
 * A state, and everything here that takes one, belongs to one thread.
 */
#include "lib/lua/lua_rt.h"

#include <lauxlib.h>
#include <lualib.h>
#include <malloc.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/lua/lua_trellis.h"

#define HOOK_STEP 1000              /* instructions between two hook calls */
#define HANDLER_HEADROOM (1u << 20) /* heap the message handler may use past the cap */
#define TRIM_AFTER_PEAK (16u << 20) /* a state that grew this large gives memory back on close */

enum limit_hit
{
    HIT_NONE = 0,
    HIT_INSTR,
    HIT_TIME
};

enum alloc_fail
{
    FAIL_NONE = 0,
    FAIL_CAP, /* the cap refused a growth */
    FAIL_SYS  /* the system allocator returned NULL */
};

struct rt_ctx
{
    size_t used;               /* bytes Lua holds */
    size_t peak;               /* most bytes ever held */
    size_t mem_max;            /* cap, 0 = none */
    size_t headroom;           /* extra bytes allowed while the message handler runs */
    enum alloc_fail last_fail; /* why the last refused allocation was refused */
    bool in_eval;              /* tr_lua_eval is running: the hook enforces limits */
    enum limit_hit hit;        /* which limit fired during this eval */
    bool any_hit;              /* a limit fired in some eval of this state */
    bool check_error;          /* the eval's error came from a trellis.task/pipeline check */
    uint64_t instr_max;        /* budget of this eval, 0 = none */
    uint64_t instr_used;       /* counted in steps of `step` */
    int step;                  /* instructions between two hook calls */
    double wall_max_s;         /* time limit of this eval, 0 = none */
    uint64_t deadline_ns;      /* tr_mono_ns() at which it fires, 0 = none */
    int hit_line;              /* where the limit fired, -1 when unknown */
    char hit_src[LUA_IDSIZE];
    lua_Hook host_hook;        /* what threads made during an eval switch to afterwards */
    int host_count;
    bool stopping;             /* the host is stopping code from a hook (tr_lua_set_stopping) */
};

/* Registry keys: their addresses are unique. */
static const char loaded_key = 'l';  /* name -> module value */
static const char preload_key = 'p'; /* name -> opener */
static const char trellis_key = 't'; /* the trellis module table */

static struct rt_ctx *ctx_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* ====================================================================== */
/* Allocator                                                              */
/* ====================================================================== */

static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct rt_ctx *c = ud;
    if (ptr == NULL)
        osize = 0; /* osize is then a type tag, not a size */
    if (nsize == 0) {
        tr_free(ptr);
        c->used -= osize;
        return NULL;
    }
    if (nsize > osize && c->mem_max != 0) {
        size_t cap = c->mem_max + c->headroom;
        if (c->used > cap || nsize - osize > cap - c->used) {
            c->last_fail = FAIL_CAP;
            return NULL;
        }
    }
    void *np = tr_realloc(ptr, nsize);
    if (np == NULL) {
        if (nsize <= osize) {
            /* Lua relies on shrinks succeeding: keep the bigger block. */
            c->used -= osize - nsize;
            return ptr;
        }
        c->last_fail = FAIL_SYS;
        return NULL;
    }
    c->used = c->used - osize + nsize;
    if (c->used > c->peak)
        c->peak = c->used;
    return np;
}

/* Reached only by an unprotected error, which this module never makes. */
static int rt_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    tr_err("lua panic: %s", msg ? msg : "(error object is not a string)");
    abort();
}

/* ====================================================================== */
/* The sandboxed base library                                             */
/* ====================================================================== */

/* load(chunk [, chunkname [, mode [, env]]]) with mode forced to "t". */
static int sandbox_load(lua_State *L)
{
    int n = lua_gettop(L);
    if (n < 3)
        lua_settop(L, 3); /* an absent env (arg 4) stays absent */
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* collectgarbage without the options that retune or stop the collector. */
static int sandbox_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = {"collect", "count", "step", "isrunning"};
    const char *opt = luaL_optstring(L, 1, "collect");
    for (size_t i = 0; i < TR_ARRAY_LEN(allowed); i++) {
        if (strcmp(opt, allowed[i]) == 0) {
            lua_pushvalue(L, lua_upvalueindex(1));
            lua_insert(L, 1);
            lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
            return lua_gettop(L);
        }
    }
    return luaL_error(L, "collectgarbage option '%s' is not allowed in the sandbox", opt);
}

/*
 * Lua runs code with hooks off in three places, where the limits could not
 * stop it: finalizers (__gc), the message handler of an error raised by a
 * hook (ours, when a limit fires), and the __close handlers of a coroutine
 * that died of such an error (its hooks stay off). The next three wrappers
 * shut each of them.
 */

/* setmetatable without __gc: a finalizer runs with hooks off. */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in the sandbox");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Stands between xpcall and the file's handler (upvalue 1). */
static int xpcall_guard(lua_State *L)
{
    struct rt_ctx *c = ctx_of(L);
    if ((c->in_eval && c->hit != HIT_NONE) || c->stopping)
        return 1; /* the limit's error, unhandled: the handler would run with hooks off */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sandbox_xpcall(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_guard, 1);
    lua_replace(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* coroutine.close, except for a coroutine that may have died inside a hook. */
static int sandbox_coclose(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    struct rt_ctx *c = ctx_of(L);
    if (co != NULL && (c->any_hit || c->stopping) && lua_status(co) > LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "coroutine stopped by a sandbox limit");
        return 2;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* print goes to the daemon's debug log, never to its stdout. */
static int sandbox_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    char esc[512];
    tr_log_escape(esc, sizeof(esc), s, len);
    tr_debug("lua print: %s", esc);
    return 0;
}

/* require(name): only modules registered with tr_lua_register_module. */
static int sandbox_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &loaded_key); /* 2 */
    if (lua_getfield(L, 2, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &preload_key); /* 3 */
    if (lua_getfield(L, 3, name) != LUA_TFUNCTION)
        return luaL_error(L, "module '%s' not found", name);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

/* Replaces global `name` by fn with the original as its upvalue. */
static void wrap_global(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, name);
    lua_pushcclosure(L, fn, 1);
    lua_setglobal(L, name);
}

/* Runs protected: opens the allowed libraries and the trellis module. */
static int setup(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},          {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table},    {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},    {LUA_COLIBNAME, luaopen_coroutine},
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(libs); i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
    wrap_global(L, "load", sandbox_load);
    wrap_global(L, "collectgarbage", sandbox_collectgarbage);
    wrap_global(L, "setmetatable", sandbox_setmetatable);
    wrap_global(L, "xpcall", sandbox_xpcall);
    lua_getglobal(L, LUA_COLIBNAME);
    lua_getfield(L, -1, "close");
    lua_pushcclosure(L, sandbox_coclose, 1);
    lua_setfield(L, -2, "close");
    lua_pop(L, 1);
    lua_pushcfunction(L, sandbox_print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, sandbox_require);
    lua_setglobal(L, "require");

    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &preload_key);
    lua_newtable(L);
    lua_pushcfunction(L, tr_lua_open_trellis);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &trellis_key);
    lua_setfield(L, -2, "trellis");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loaded_key);
    return 0;
}

/* ====================================================================== */
/* Life cycle                                                             */
/* ====================================================================== */

lua_State *tr_lua_new(const struct tr_lua_limits *lim)
{
    struct rt_ctx *c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    lua_State *L = lua_newstate(rt_alloc, c);
    if (L == NULL) {
        tr_free(c);
        return NULL;
    }
    lua_atpanic(L, rt_panic);
    lua_pushcfunction(L, setup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        tr_lua_free(L);
        return NULL;
    }
    /* The cap applies from here: the sandbox's own tables are the host's. */
    if (lim != NULL) {
        c->mem_max = lim->mem_max;
        c->instr_max = lim->instr_max;
        c->wall_max_s = lim->wall_max_s;
    }
    return L;
}

void tr_lua_free(lua_State *L)
{
    if (L == NULL)
        return;
    struct rt_ctx *c = ctx_of(L);
    lua_close(L);
    /* A big state leaves freed pages in malloc's arenas: give them back so
     * that a scheduler that just read a large pipeline does not keep its RSS. */
    if (c->peak >= TRIM_AFTER_PEAK)
        malloc_trim(0);
    tr_free(c);
}

size_t tr_lua_mem_used(lua_State *L)
{
    return ctx_of(L)->used;
}

void tr_lua_set_mem_max(lua_State *L, size_t mem_max)
{
    ctx_of(L)->mem_max = mem_max;
}

struct reg_args
{
    const char *name;
    lua_CFunction open;
};

static int register_protected(lua_State *L)
{
    struct reg_args *a = lua_touserdata(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &preload_key);
    lua_pushcfunction(L, a->open);
    lua_setfield(L, -2, a->name);
    return 0;
}

int tr_lua_register_module(lua_State *L, const char *name, lua_CFunction open)
{
    struct reg_args a = {name, open};
    if (!lua_checkstack(L, 4))
        return TR_ENOMEM;
    lua_pushcfunction(L, register_protected);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        return TR_ENOMEM;
    }
    return 0;
}

void tr_lua_push_trellis(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &trellis_key);
}

/* ====================================================================== */
/* Evaluation under limits                                                */
/* ====================================================================== */

/* Fires on every HOOK_STEP instructions; once a limit is hit, on every one. */
static void limit_hook(lua_State *L, lua_Debug *ar)
{
    struct rt_ctx *c = ctx_of(L);
    if (!c->in_eval) {
        /* A coroutine created by an earlier eval and resumed later: it takes
         * the host's hook, so that the host's limits hold for it too. */
        lua_sethook(L, c->host_hook, c->host_hook ? LUA_MASKCOUNT : 0, c->host_count);
        if (c->host_hook != NULL)
            c->host_hook(L, ar);
        return;
    }
    if (c->hit == HIT_NONE) {
        c->instr_used += (uint64_t)c->step;
        if (c->instr_max != 0 && c->instr_used >= c->instr_max)
            c->hit = HIT_INSTR;
        else if (c->deadline_ns != 0 && tr_mono_ns() >= c->deadline_ns)
            c->hit = HIT_TIME;
        else
            return;
        c->any_hit = true;
        if (lua_getinfo(L, "Sl", ar)) {
            c->hit_line = ar->currentline;
            snprintf(c->hit_src, sizeof(c->hit_src), "%s", ar->short_src);
        }
    }
    /* Stay armed at every instruction, so that a pcall that swallows this
     * error meets the next one at once. */
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, 1);
    if (c->hit == HIT_INSTR)
        luaL_error(L, "instruction limit of %I exceeded", (lua_Integer)c->instr_max);
    else
        luaL_error(L, "time limit of %f s exceeded", (lua_Number)c->wall_max_s);
}

/* Appends a traceback, as lua.c's msghandler does. */
static int msghandler(lua_State *L)
{
    struct rt_ctx *c = ctx_of(L);
    /* The traceback must not fail for want of the memory the error was about. */
    c->headroom = HANDLER_HEADROOM;
    c->check_error = tr_lua_is_check_error(L, 1);
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* The chunk name for messages, without Lua's '=' or '@' prefix. */
static const char *plain_chunk(const char *chunkname)
{
    if (chunkname == NULL)
        return "chunk";
    return chunkname[0] == '=' || chunkname[0] == '@' ? chunkname + 1 : chunkname;
}

/* Turns a failed load or call (error value at the top) into a code and message. */
static int eval_error(lua_State *L, struct rt_ctx *c, int status, const char *chunk,
                      struct tr_error *err)
{
    if (c->hit != HIT_NONE) {
        char where[LUA_IDSIZE + 16] = "";
        if (c->hit_line >= 0)
            snprintf(where, sizeof(where), "%s:%d: ", c->hit_src, c->hit_line);
        else
            snprintf(where, sizeof(where), "%s: ", chunk);
        if (c->hit == HIT_INSTR)
            return tr_error_set(err, TR_ELIMIT, "%sinstruction limit of %llu exceeded", where,
                                (unsigned long long)c->instr_max);
        return tr_error_set(err, TR_ELIMIT, "%stime limit of %g s exceeded", where,
                            c->wall_max_s);
    }
    bool mem = status == LUA_ERRMEM || (status == LUA_ERRERR && c->last_fail != FAIL_NONE);
    if (mem) {
        if (c->last_fail == FAIL_SYS || c->mem_max == 0)
            return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
        return tr_error_set(err, TR_ELIMIT, "%s: memory limit of %zu bytes exceeded", chunk,
                            c->mem_max);
    }
    const char *msg = lua_tostring(L, -1);
    int code = status == LUA_ERRRUN && c->check_error ? TR_EINVAL : TR_ELUA;
    return tr_error_set(err, code, "%s", msg ? msg : "error object is not a string");
}

static int eval(lua_State *L, const char *src, size_t len, const char *chunkname, bool keep,
                struct tr_error *err)
{
    struct rt_ctx *c = ctx_of(L);
    char name[256];
    const char *chunk = plain_chunk(chunkname);
    snprintf(name, sizeof(name), "=%s", chunk);
    if (!lua_checkstack(L, 4))
        return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);

    int base = lua_gettop(L);
    int top = base;
    c->last_fail = FAIL_NONE;
    c->hit = HIT_NONE;
    c->hit_line = -1;
    c->check_error = false;
    lua_pushcfunction(L, msghandler);
    int status = luaL_loadbufferx(L, src, len, name, "t");
    if (status == LUA_OK && keep) {
        /* The chunk stays below the message handler, for the caller. */
        lua_pushvalue(L, -1);
        lua_insert(L, base + 1);
        base++;
    }
    if (status == LUA_OK) {
        c->instr_used = 0;
        c->deadline_ns = 0;
        if (c->wall_max_s > 0)
            c->deadline_ns = tr_mono_ns() + (uint64_t)(c->wall_max_s * 1e9);
        if (c->instr_max != 0 || c->deadline_ns != 0) {
            c->step = c->instr_max != 0 && c->instr_max < HOOK_STEP ? (int)c->instr_max
                                                                    : HOOK_STEP;
            c->in_eval = true;
            lua_sethook(L, limit_hook, LUA_MASKCOUNT, c->step);
        }
        status = lua_pcall(L, 0, 1, base + 1);
        lua_sethook(L, NULL, 0, 0);
        c->in_eval = false;
        if (status == LUA_OK && c->hit != HIT_NONE)
            status = LUA_ERRRUN; /* a limit fired even if the chunk swallowed it */
    }
    c->headroom = 0;
    if (status != LUA_OK) {
        int rc = eval_error(L, c, status, chunk, err);
        lua_settop(L, top);
        return rc;
    }
    lua_remove(L, base + 1);
    return 0;
}

int tr_lua_eval(lua_State *L, const char *src, size_t len, const char *chunkname,
                struct tr_error *err)
{
    return eval(L, src, len, chunkname, false, err);
}

int tr_lua_eval_chunk(lua_State *L, const char *src, size_t len, const char *chunkname,
                      struct tr_error *err)
{
    return eval(L, src, len, chunkname, true, err);
}

void tr_lua_set_host_hook(lua_State *L, lua_Hook hook, int count)
{
    struct rt_ctx *c = ctx_of(L);
    c->host_hook = hook;
    c->host_count = count;
}

void tr_lua_set_stopping(lua_State *L, bool on)
{
    struct rt_ctx *c = ctx_of(L);
    c->stopping = on;
    if (on)
        c->any_hit = true;
}
