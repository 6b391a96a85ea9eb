/*
 * fuzz_mp_json.c - the msgpack <-> JSON converter (lib/wire/mp_json.c), both
 * ways and round trip.
 *
 * Every input is tried as both:
 *   msgpack: tr_mp_bytes_to_json; a value that converts must survive
 *            JSON -> msgpack -> JSON unchanged (the first conversion gives
 *            the canonical JSON: strings made UTF-8, keys made strings);
 *   JSON:    parsed by jansson (any value, NUL allowed in strings); a value
 *            that packs must come back equal from tr_mp_bytes_to_json.
 * The only accepted failure of a conversion is nesting deeper than 32, the
 * converter's documented limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/wire/mp_json.h"
#include "tests/fuzz/json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Packs j and converts it back; NULL when packing refused it (too deep). */
static json_t *through_msgpack(const json_t *j)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = tr_json_to_mp(j, &pk);
    json_t *back = NULL;
    if (rc == 0) {
        struct tr_error err;
        tr_error_init(&err);
        back = tr_mp_bytes_to_json(sb.data, sb.size, &err);
        if (back == NULL)
            abort(); /* what the packer wrote does not convert back */
    } else if (rc != TR_EINVAL) {
        abort();
    }
    msgpack_sbuffer_destroy(&sb);
    return back;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* msgpack first. */
    struct tr_error err;
    tr_error_init(&err);
    json_t *j = tr_mp_bytes_to_json(data, size, &err);
    if (j != NULL) {
        char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL)
            abort(); /* the converter made JSON that cannot print */
        free(text);
        json_t *back = through_msgpack(j);
        if (back == NULL || !json_same(j, back))
            abort();
        json_decref(back);
        json_decref(j);
    } else if (err.code == 0 || err.code == TR_ENOMEM) {
        abort(); /* a refusal without a reason, or a depth error passed off as memory */
    }

    /* Then JSON. */
    json_error_t jerr;
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (in != NULL) {
        json_t *back = through_msgpack(in);
        if (back != NULL && !json_same(in, back))
            abort();
        json_decref(back);
        json_decref(in);
    }
    return 0;
}
