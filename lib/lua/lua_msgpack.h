/*
 * lua_msgpack.h - Lua values <-> msgpack, with limits.
 *
 * Encoding: nil, booleans, integers (kept as integers), floats, strings, and
 * tables: a table whose keys are exactly 1..n is an array, an empty table is
 * an empty array, any other table is a map (keys must be strings, numbers or
 * booleans). Functions, userdata, threads, cycles and nesting deeper than
 * TR_LUA_MP_MAX_DEPTH are refused with a message naming the path ("output.items[3]:
 * cannot encode a function").
 *
 * Decoding pushes the value; bin is pushed as a string. Callers validate
 * untrusted bytes first (tr_mp_check) or use tr_lua_unpack_bytes, which does.
 */
#ifndef TR_LUA_MSGPACK_H
#define TR_LUA_MSGPACK_H

#include <lua.h>
#include <msgpack.h>

#include "lib/base/error.h"

/*
 * Nesting of tables / arrays and maps. msgpack-c's unpacker opens at most 32
 * containers (MSGPACK_EMBED_STACK_SIZE, compiled into libmsgpackc) and fails
 * past that, so nothing deeper is packed or accepted.
 */
#define TR_LUA_MP_MAX_DEPTH 32

/* Packs the value at idx. Does not raise. 0, TR_EINVAL (err says why), TR_ENOMEM. */
int tr_lua_pack(lua_State *L, int idx, msgpack_packer *pk, struct tr_error *err) TR_MUST_CHECK;

/*
 * tr_lua_pack, with root naming the value in messages ("output" gives
 * "output.items[3]: cannot encode a function"); tr_lua_pack uses "value".
 */
int tr_lua_pack_named(lua_State *L, int idx, const char *root, msgpack_packer *pk,
                      struct tr_error *err) TR_MUST_CHECK;

/*
 * Pushes o. Does not raise (stack space is checked). 0, TR_ENOMEM, TR_ELIMIT
 * (nesting deeper than TR_LUA_MP_MAX_DEPTH) or TR_EPROTO (a map key Lua
 * cannot hold: nil, NaN, an array or a map; or an ext value); nothing is
 * pushed on failure.
 */
int tr_lua_push_mp(lua_State *L, const msgpack_object *o) TR_MUST_CHECK;

/*
 * Validates and decodes one msgpack value from bytes and pushes it.
 * n == 0 pushes nil. 0, TR_EPROTO, TR_ELIMIT or TR_ENOMEM.
 */
int tr_lua_unpack_bytes(lua_State *L, const void *p, size_t n, struct tr_error *err) TR_MUST_CHECK;

#endif
