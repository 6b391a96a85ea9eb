/*
 * json_same.h - deep equality of two JSON values for the fuzz harnesses.
 *
 * jansson's json_equal looks keys up with strlen, so two objects whose keys
 * hold a NUL byte (which both converters carry) compare unequal with
 * themselves; this compares keys with their lengths.
 */
#ifndef TR_FUZZ_JSON_SAME_H
#define TR_FUZZ_JSON_SAME_H

#include <stdbool.h>
#include <string.h>

#include <jansson.h>

static bool json_same(const json_t *a, const json_t *b)
{
    if (a == NULL || b == NULL || json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        for (void *it = json_object_iter((json_t *)a); it != NULL;
             it = json_object_iter_next((json_t *)a, it)) {
            const json_t *v = json_object_getn(b, json_object_iter_key(it),
                                               json_object_iter_key_len(it));
            if (!json_same(json_object_iter_value(it), v))
                return false;
        }
        return true;
    }
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!json_same(json_array_get(a, i), json_array_get(b, i)))
                return false;
        }
        return true;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_INTEGER:
        return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL:
        return json_real_value(a) == json_real_value(b);
    default:
        return true; /* true, false, null */
    }
}

#endif
