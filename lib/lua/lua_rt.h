/*
 * lua_rt.h - a sandboxed lua_State for pipelines.
 *
 * One state per use: the scheduler makes a fresh one for each pipeline it
 * reads, the worker one per pipeline version it runs (library tables shared
 * inside one state would let one pipeline tamper with another).
 *
 * The sandbox by construction: base functions without dofile, loadfile,
 * collectgarbage tampering of the host, or load of binary chunks; the string,
 * table, math, utf8 and coroutine libraries; no io, os, debug or package. A
 * `require` that resolves only modules registered with tr_lua_register_module
 * (the built-in "trellis" module is always there: trellis.task,
 * trellis.pipeline, and what the host adds to it). The allocator caps the
 * heap (LUA_ERRMEM, never an abort). An instruction budget and a wall-clock
 * limit stop evaluation; once the budget fires the hook stays armed so that
 * pcall cannot swallow it.
 *
 * A lua_State is used by one thread.
 */
#ifndef TR_LUA_RT_H
#define TR_LUA_RT_H

#include <lua.h>

#include "lib/base/error.h"

struct tr_lua_limits
{
    size_t mem_max;     /* bytes of heap; 0 = unlimited */
    uint64_t instr_max; /* instructions for tr_lua_eval; 0 = unlimited */
    double wall_max_s;  /* seconds for tr_lua_eval; 0 = unlimited */
};

/* A new sandboxed state with the trellis module; NULL when out of memory. */
lua_State *tr_lua_new(const struct tr_lua_limits *lim) TR_MUST_CHECK;

/* Closes L. NULL-safe. */
void tr_lua_free(lua_State *L);

/* Bytes of heap in use by L. */
size_t tr_lua_mem_used(lua_State *L);

/* Changes the heap cap of L (0 = unlimited). */
void tr_lua_set_mem_max(lua_State *L, size_t mem_max);

/*
 * Makes `require(name)` return what open returns (called once, lazily), as
 * luaL_requiref does. Names outside the sandbox's list raise "module 'x' not
 * found". Returns 0 or TR_ENOMEM.
 */
int tr_lua_register_module(lua_State *L, const char *name, lua_CFunction open) TR_MUST_CHECK;

/* Pushes the trellis module table, so that a host can add functions to it. */
void tr_lua_push_trellis(lua_State *L);

/*
 * Loads src as a text chunk (binary chunks are refused) and calls it under the
 * instruction and wall-clock limits, with a message handler that appends a
 * traceback. On success leaves the chunk's first result on the stack and
 * returns 0. On failure leaves nothing on the stack and returns TR_ELUA
 * (err: "chunk:line: message"), TR_EINVAL (the same, when the error is a
 * check of trellis.task or trellis.pipeline: a field of the wrong type, a
 * task without run), TR_ELIMIT (err names the limit) or TR_ENOMEM.
 */
int tr_lua_eval(lua_State *L, const char *src, size_t len, const char *chunkname,
                struct tr_error *err) TR_MUST_CHECK;

/*
 * As tr_lua_eval, and on success the chunk function itself is left below
 * the result (two values), so that a host can reach the chunk's _ENV
 * upvalue afterwards. On failure nothing is left.
 */
int tr_lua_eval_chunk(lua_State *L, const char *src, size_t len, const char *chunkname,
                      struct tr_error *err) TR_MUST_CHECK;

/*
 * The count hook (and its count) that coroutines created while tr_lua_eval
 * ran take when they are resumed after it; NULL: none. Without it they run
 * with no hook, beyond the host's limits.
 */
void tr_lua_set_host_hook(lua_State *L, lua_Hook hook, int count);

/*
 * Tells the sandbox that the host is stopping the running code by raising
 * from a hook (on) or that it is done (off). Meanwhile xpcall message
 * handlers are skipped and coroutine.close refuses dead coroutines, because
 * Lua runs both with hooks off after a hook's error; coroutine.close keeps
 * refusing dead coroutines for the state's life.
 */
void tr_lua_set_stopping(lua_State *L, bool on);

#endif
