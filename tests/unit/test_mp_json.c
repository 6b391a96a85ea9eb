/*
 * test_mp_json.c - msgpack <-> JSON: every type, 64-bit integers exact,
 * invalid UTF-8 and bin printed with replacements, non-string keys, round
 * trips through both directions, depth and hostile bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>

#include "lib/base/buf.h"
#include "lib/wire/mp_json.h"

/* Fixture: packing goes into `out`; JSON text is compared compactly with sorted keys. */
static struct tr_buf out;
static msgpack_packer pk;

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    tr_buf_init(&out, 0);
    msgpack_packer_init(&pk, &out, buf_write);
    return 0;
}

static int teardown(void **state)
{
    tr_buf_release(&out);
    return 0;
}

/* The compact JSON text of the msgpack bytes in out; NULL on error. */
static char *bytes_json(struct tr_error *err)
{
    json_t *j = tr_mp_bytes_to_json(out.buf, out.len, err);
    if (j == NULL)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(j);
    return s;
}

static void expect_json(const char *want)
{
    struct tr_error err;
    tr_error_init(&err);
    char *got = bytes_json(&err);
    if (got == NULL)
        fail_msg("conversion failed: %s", err.msg);
    if (strcmp(got, want) != 0)
        fail_msg("got %s, expected %s", got, want);
    free(got); /* json_dumps allocates with malloc */
}

/* JSON text -> msgpack (into out) -> JSON, compared with json_equal. */
static void round_trip(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (j == NULL)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    tr_buf_reset(&out);
    assert_int_equal(tr_json_to_mp(j, &pk), 0);
    struct tr_error err;
    json_t *back = tr_mp_bytes_to_json(out.buf, out.len, &err);
    if (back == NULL)
        fail_msg("%s back to JSON: %s", text, err.msg);
    if (!json_equal(j, back))
        fail_msg("round trip changed %s", text);
    json_decref(back);
    json_decref(j);
}

/* ====================================================================== */

static void test_scalars(void **state)
{
    tr_buf_reset(&out);
    assert_int_equal(msgpack_pack_array(&pk, 10), 0);
    assert_int_equal(msgpack_pack_nil(&pk), 0);
    assert_int_equal(msgpack_pack_true(&pk), 0);
    assert_int_equal(msgpack_pack_false(&pk), 0);
    assert_int_equal(msgpack_pack_int64(&pk, INT64_MAX), 0);
    assert_int_equal(msgpack_pack_int64(&pk, INT64_MIN), 0);
    assert_int_equal(msgpack_pack_uint64(&pk, 7668682494717125937ull), 0);
    assert_int_equal(msgpack_pack_double(&pk, 2.5), 0);
    assert_int_equal(msgpack_pack_float(&pk, 0.5f), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "h\xc3\xa9", 3), 0);
    assert_int_equal(msgpack_pack_double(&pk, NAN), 0);
    expect_json("[null,true,false,9223372036854775807,-9223372036854775808,"
                "7668682494717125937,2.5,0.5,\"h\xc3\xa9\",null]");
}

static void test_uint64_beyond_int64(void **state)
{
    tr_buf_reset(&out);
    assert_int_equal(msgpack_pack_uint64(&pk, UINT64_MAX), 0);
    struct tr_error err;
    json_t *j = tr_mp_bytes_to_json(out.buf, out.len, &err);
    assert_non_null(j);
    assert_true(json_is_real(j));
    assert_true(json_real_value(j) > 1.8e19);
    json_decref(j);
}

static void test_invalid_utf8_and_bin(void **state)
{
    tr_buf_reset(&out);
    assert_int_equal(msgpack_pack_array(&pk, 4), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "a\xff" "b", 3), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "\xc0\x80", 2), 0); /* overlong NUL */
    assert_int_equal(msgpack_pack_str_with_body(&pk, "\xed\xa0\x80", 3), 0); /* surrogate */
    assert_int_equal(msgpack_pack_bin_with_body(&pk, "ok\x80", 3), 0);
    expect_json("[\"a\xef\xbf\xbd" "b\",\"\xef\xbf\xbd\xef\xbf\xbd\","
                "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\",\"ok\xef\xbf\xbd\"]");
}

static void test_non_string_keys(void **state)
{
    tr_buf_reset(&out);
    assert_int_equal(msgpack_pack_map(&pk, 6), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 1), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "one", 3), 0);
    assert_int_equal(msgpack_pack_int64(&pk, -2), 0);
    assert_int_equal(msgpack_pack_nil(&pk), 0);
    assert_int_equal(msgpack_pack_true(&pk), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 3), 0);
    assert_int_equal(msgpack_pack_double(&pk, 1.5), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 4), 0);
    assert_int_equal(msgpack_pack_array(&pk, 1), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 9), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 5), 0);
    assert_int_equal(msgpack_pack_bin_with_body(&pk, "k\xfe", 2), 0);
    assert_int_equal(msgpack_pack_int64(&pk, 6), 0);
    expect_json("{\"-2\":null,\"1\":\"one\",\"1.5\":4,\"[9]\":5,\"k\xef\xbf\xbd\":6,"
                "\"true\":3}");
}

/*
 * Maps as keys of maps as keys...: each level escapes the one inside it, so
 * their text doubles per level; it is cut at 1 KiB (found by
 * tests/fuzz/fuzz_mp_json.c: 62 bytes of msgpack printed 16 GB).
 */
static void test_nested_container_keys(void **state)
{
    char b[64];
    size_t n = 0;
    for (int i = 0; i < 30; i++)
        b[n++] = (char)0x81; /* a map of one pair, whose key follows */
    b[n++] = (char)0xa1;
    b[n++] = 'a';
    for (int i = 0; i < 30; i++)
        b[n++] = (char)0xc0; /* the values */
    struct tr_error err;
    tr_error_init(&err);
    json_t *j = tr_mp_bytes_to_json(b, n, &err);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 1);
    void *it = json_object_iter(j);
    assert_true(json_object_iter_key_len(it) <= 1024);
    assert_true(json_object_iter_key_len(it) > 512);
    json_decref(j);
}

static void test_round_trips(void **state)
{
    static const char *const docs[] = {
        "null", "true", "0", "{\"\":\"\"}", "-1", "9223372036854775807", "-9223372036854775808",
        "7668682494717125937", "1.25", "-1e300", "\"\"", "\"caf\\u00e9 \\u2603\"", "[]", "{}",
        "{\"a\":1,\"b\":[1,2.5,\"x\",null,false],\"c\":{\"d\":{\"e\":[]}}}",
        "\"nul\\u0000inside\"", "[[[[[[[[[[1]]]]]]]]]]",
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(docs); i++)
        round_trip(docs[i]);

    /* A key with a NUL byte (jansson cannot parse one, but can hold one). */
    json_t *o = json_object();
    assert_non_null(o);
    assert_int_equal(json_object_setn_new(o, "k\0ey", 4, json_integer(1)), 0);
    tr_buf_reset(&out);
    assert_int_equal(tr_json_to_mp(o, &pk), 0);
    json_decref(o);
    struct tr_error err;
    json_t *back = tr_mp_bytes_to_json(out.buf, out.len, &err);
    assert_non_null(back);
    assert_int_equal(json_integer_value(json_object_getn(back, "k\0ey", 4)), 1);
    json_decref(back);
}

static void test_integers_stay_integers(void **state)
{
    json_t *j = json_loads("[3, 3.0]", 0, NULL);
    assert_non_null(j);
    tr_buf_reset(&out);
    assert_int_equal(tr_json_to_mp(j, &pk), 0);
    json_decref(j);
    assert_int_equal(out.len, 1 + 1 + 9);
    assert_int_equal((unsigned char)out.buf[1], 0x03);
    assert_int_equal((unsigned char)out.buf[2], 0xcb);
}

static void test_depth(void **state)
{
    char text[256];
    size_t n = 0;
    for (int i = 0; i < 32; i++)
        text[n++] = '[';
    for (int i = 0; i < 32; i++)
        text[n++] = ']';
    text[n] = '\0';
    json_t *ok = json_loads(text, 0, NULL);
    assert_non_null(ok);
    tr_buf_reset(&out);
    assert_int_equal(tr_json_to_mp(ok, &pk), 0);
    json_decref(ok);
    json_t *deep = json_array();
    assert_non_null(deep);
    assert_int_equal(json_array_append_new(deep, json_loads(text, 0, NULL)), 0);
    tr_buf_reset(&out);
    assert_int_equal(tr_json_to_mp(deep, &pk), TR_EINVAL);
    json_decref(deep);
}

static void test_hostile_bytes(void **state)
{
    struct tr_error err;
    json_t *j = tr_mp_bytes_to_json("", 0, &err);
    assert_true(json_is_null(j));
    json_decref(j);
    tr_error_init(&err);
    assert_null(tr_mp_bytes_to_json("\xc1", 1, &err));
    assert_int_equal(err.code, TR_EPROTO);
    assert_null(tr_mp_bytes_to_json("\x93\x01\x02", 3, &err));
    assert_int_equal(err.code, TR_EPROTO);
    assert_null(tr_mp_bytes_to_json("\x01\x01", 2, &err));
    assert_int_equal(err.code, TR_EPROTO);
    assert_null(tr_mp_bytes_to_json("\xdf\xff\xff\xff\xff", 5, &err));
    assert_true(err.code < 0);
    char deep[40];
    memset(deep, 0x91, 33);
    deep[33] = (char)0xc0;
    assert_null(tr_mp_bytes_to_json(deep, 34, &err));
    assert_int_equal(err.code, TR_ELIMIT);
    /* An empty container is a level too (found by tests/fuzz/fuzz_mp_json.c:
     * it used to pass the check and fail the conversion as out of memory). */
    memset(deep, 0x91, 32);
    deep[32] = (char)0x90;
    tr_error_init(&err);
    assert_null(tr_mp_bytes_to_json(deep, 33, &err));
    assert_int_equal(err.code, TR_ELIMIT);
    deep[31] = (char)0x90;
    json_t *ok = tr_mp_bytes_to_json(deep, 32, &err);
    assert_non_null(ok);
    json_decref(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uint64_beyond_int64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_and_bin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_string_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_container_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integers_stay_integers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_bytes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
