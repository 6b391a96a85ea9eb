/*
 * mp_json.c - msgpack <-> JSON (jansson), for the API.
 *
 * JSON strings must be UTF-8, msgpack's need not be: invalid sequences (and
 * all of bin) are carried with each bad byte replaced by U+FFFD, so an output
 * always prints. Integers stay exact both ways (json_int_t is long long);
 * only unsigned values above INT64_MAX become reals. JSON has no NaN or
 * infinity, so those floats print as null, as JSON.stringify does.
 *
 * Stateless; any thread.
 */
#include "lib/wire/mp_json.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/wire/proto.h"

#define JSON_MAX_DEPTH 32 /* as TR_LUA_MP_MAX_DEPTH: msgpack-c unpacks no deeper */
#define KEY_TEXT_MAX 1024 /* bytes of an array or map key's JSON text */

/* ====================================================================== */
/* UTF-8                                                                  */
/* ====================================================================== */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char b = p[0];
    if (b < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2;
        cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        cp = b & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and values past U+10FFFF. */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * A copy of p with each byte that starts no valid sequence replaced by
 * U+FFFD, in b (initialised by the caller). 0 or TR_ENOMEM.
 */
static int utf8_sanitize(const char *p, size_t n, struct tr_buf *b)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        size_t len;
        while (run < n && (len = utf8_seq(u + run, n - run)) != 0)
            run += len;
        if (tr_buf_add(b, p + i, run - i) != 0)
            return TR_ENOMEM;
        if (run < n) {
            if (tr_buf_add(b, "\xef\xbf\xbd", 3) != 0)
                return TR_ENOMEM;
            run++;
        }
        i = run;
    }
    return 0;
}

static bool utf8_valid(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_seq(u + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* ====================================================================== */
/* msgpack -> JSON                                                        */
/* ====================================================================== */

static json_t *string_json(const char *p, size_t n)
{
    if (n == 0)
        return json_string(""); /* msgpack-c may give a NULL pointer for "" */
    if (utf8_valid(p, n))
        return json_stringn_nocheck(p, n);
    struct tr_buf b;
    tr_buf_init(&b, 0);
    json_t *j = NULL;
    if (utf8_sanitize(p, n, &b) == 0)
        j = json_stringn_nocheck(b.buf, b.len);
    tr_buf_release(&b);
    return j;
}

static json_t *to_json(const msgpack_object *o, int depth);

/* Sets obj[key as text] = val (stolen). 0 or -1. */
static int set_keyed(json_t *obj, const msgpack_object *k, json_t *val, int depth)
{
    char num[64];
    const char *kp = num;
    size_t kn;
    char *dumped = NULL;
    switch (k->type) {
    case MSGPACK_OBJECT_STR:
        kp = k->via.str.ptr;
        kn = k->via.str.size;
        break;
    case MSGPACK_OBJECT_BIN:
        kp = k->via.bin.ptr;
        kn = k->via.bin.size;
        break;
    case MSGPACK_OBJECT_NIL:
        kn = (size_t)snprintf(num, sizeof(num), "null");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        kn = (size_t)snprintf(num, sizeof(num), "%s", k->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        kn = (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)k->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        kn = (size_t)snprintf(num, sizeof(num), "%lld", (long long)k->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        kn = (size_t)snprintf(num, sizeof(num), "%.17g", k->via.f64);
        break;
    default: {
        /* An array or map key: its JSON text. */
        json_t *kj = to_json(k, depth);
        dumped = kj ? json_dumps(kj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        json_decref(kj);
        if (dumped == NULL) {
            json_decref(val);
            return -1;
        }
        kp = dumped;
        kn = strlen(dumped);
        /* Each level of such keys escapes the text of the level inside it,
         * doubling its backslashes: cut, or 32 levels in a few bytes of
         * msgpack would print gigabytes. At a character boundary: the text
         * is UTF-8. */
        if (kn > KEY_TEXT_MAX) {
            kn = KEY_TEXT_MAX;
            while (kn > 0 && ((unsigned char)dumped[kn] & 0xc0) == 0x80)
                kn--;
        }
        break;
    }
    }
    int rc;
    if (kn == 0) {
        rc = json_object_set_new_nocheck(obj, "", val);
    } else if (utf8_valid(kp, kn)) {
        rc = json_object_setn_new_nocheck(obj, kp, kn, val);
    } else {
        struct tr_buf b;
        tr_buf_init(&b, 0);
        rc = utf8_sanitize(kp, kn, &b) == 0 ? json_object_setn_new_nocheck(obj, b.buf, b.len, val)
                                             : (json_decref(val), -1);
        tr_buf_release(&b);
    }
    if (dumped != NULL) {
        json_free_t jfree;
        json_get_alloc_funcs(NULL, &jfree); /* json_dumps allocated it with jansson's */
        jfree(dumped);
    }
    return rc;
}

static json_t *to_json(const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR:
        return string_json(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return string_json(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        return string_json(o->via.ext.ptr, o->via.ext.size);
    case MSGPACK_OBJECT_ARRAY: {
        if (depth >= JSON_MAX_DEPTH)
            return NULL;
        json_t *a = json_array();
        for (uint32_t i = 0; a != NULL && i < o->via.array.size; i++) {
            if (json_array_append_new(a, to_json(&o->via.array.ptr[i], depth + 1)) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        if (depth >= JSON_MAX_DEPTH)
            return NULL;
        json_t *m = json_object();
        for (uint32_t i = 0; m != NULL && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_t *v = to_json(&kv->val, depth + 1);
            if (v == NULL || set_keyed(m, &kv->key, v, depth + 1) != 0) {
                json_decref(m);
                m = NULL;
            }
        }
        return m;
    }
    }
    return NULL;
}

json_t *tr_mp_to_json(const msgpack_object *o)
{
    return to_json(o, 0);
}

json_t *tr_mp_bytes_to_json(const void *p, size_t n, struct tr_error *err)
{
    if (n == 0)
        return json_null();
    struct tr_mp_limits lim = tr_mp_default_limits;
    lim.max_depth = JSON_MAX_DEPTH;
    long size = tr_mp_check(p, n, &lim);
    if (size < 0) {
        tr_error_set(err, (int)size, "%s",
                     size == TR_ELIMIT ? "msgpack value exceeds a limit (size, count, or nesting "
                                         "deeper than 32)"
                                       : "malformed msgpack value");
        return NULL;
    }
    if ((size_t)size != n) {
        tr_error_set(err, TR_EPROTO, "%zu bytes after the msgpack value", n - (size_t)size);
        return NULL;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, p, n, &off);
    json_t *j = NULL;
    if (ur == MSGPACK_UNPACK_SUCCESS) {
        j = tr_mp_to_json(&u.data);
        if (j == NULL)
            tr_error_set(err, TR_ENOMEM, "out of memory while converting msgpack to JSON");
    } else if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        tr_error_set(err, TR_ENOMEM, "out of memory while decoding msgpack");
    } else {
        tr_error_set(err, TR_EPROTO, "malformed msgpack value");
    }
    msgpack_unpacked_destroy(&u);
    return j;
}

/* ====================================================================== */
/* JSON -> msgpack                                                        */
/* ====================================================================== */

static int from_json(const json_t *j, msgpack_packer *pk, int depth)
{
    int w = 0;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (depth >= JSON_MAX_DEPTH)
            return TR_EINVAL;
        w = msgpack_pack_map(pk, json_object_size(j));
        for (void *it = json_object_iter((json_t *)j); w == 0 && it != NULL;
             it = json_object_iter_next((json_t *)j, it)) {
            const char *k = json_object_iter_key(it);
            size_t kn = json_object_iter_key_len(it);
            w = msgpack_pack_str(pk, kn);
            if (w == 0)
                w = msgpack_pack_str_body(pk, k, kn);
            if (w == 0) {
                int rc = from_json(json_object_iter_value(it), pk, depth + 1);
                if (rc != 0)
                    return rc;
            }
        }
        break;
    }
    case JSON_ARRAY: {
        if (depth >= JSON_MAX_DEPTH)
            return TR_EINVAL;
        size_t n = json_array_size(j);
        w = msgpack_pack_array(pk, n);
        for (size_t i = 0; w == 0 && i < n; i++) {
            int rc = from_json(json_array_get(j, i), pk, depth + 1);
            if (rc != 0)
                return rc;
        }
        break;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        w = msgpack_pack_str(pk, n);
        if (w == 0)
            w = msgpack_pack_str_body(pk, json_string_value(j), n);
        break;
    }
    case JSON_INTEGER:
        w = msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
        break;
    case JSON_REAL:
        w = msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        w = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        w = msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        w = msgpack_pack_nil(pk);
        break;
    }
    return w == 0 ? 0 : TR_ENOMEM;
}

int tr_json_to_mp(const json_t *j, msgpack_packer *pk)
{
    return from_json(j, pk, 0);
}
