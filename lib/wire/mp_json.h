/*
 * mp_json.h - msgpack <-> JSON (jansson), for the API.
 *
 * Outputs travel and are stored as msgpack; the API shows them as JSON.
 * msgpack bin and non-UTF-8 str become JSON strings with invalid bytes
 * replaced; map keys that are not strings are printed as strings (an array
 * or map key as its JSON text, cut at 1 KiB). 64-bit integers are kept
 * exactly (jansson's json_int_t is long long).
 */
#ifndef TR_MP_JSON_H
#define TR_MP_JSON_H

#include <jansson.h>
#include <msgpack.h>

#include "lib/base/error.h"

/* A new JSON value for o (the caller owns the reference); NULL when out of memory. */
json_t *tr_mp_to_json(const msgpack_object *o);

/* Decodes bytes (validated with tr_mp_check) and converts; n == 0 gives JSON null. */
json_t *tr_mp_bytes_to_json(const void *p, size_t n, struct tr_error *err);

/*
 * Packs j. 0 or TR_ENOMEM / TR_EINVAL (nesting deeper than 32, the most
 * msgpack-c's unpacker takes: see TR_LUA_MP_MAX_DEPTH).
 */
int tr_json_to_mp(const json_t *j, msgpack_packer *pk) TR_MUST_CHECK;

#endif
