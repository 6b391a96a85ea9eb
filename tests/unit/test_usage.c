/*
 * test_usage.c - the scheduler's LLM usage accounting (scheduler/usage.c):
 * call lists of several attempts concatenated under their bounds, hostile
 * lists refused without harm, an allocation failure leaving the list as it
 * was, and sums per run (totals, by model, distinct prompt digests) from
 * records whose fields may be missing or wrong.
 *
 * usage.c is compiled into this test: it uses nothing of the scheduler but
 * its header's types, and lib/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "scheduler/usage.c"

/* ===================================================================== */
/* Fixture: call records packed into `mp`                                */
/* ===================================================================== */

static struct tr_buf mp;
static msgpack_packer pk;

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    tr_buf_init(&mp, 0);
    msgpack_packer_init(&pk, &mp, buf_write);
    return 0;
}

static int teardown(void **state)
{
    tr_alloc_fail_at(0, false);
    tr_buf_release(&mp);
    return 0;
}

static void pack_kstr(const char *k, const char *v)
{
    assert_int_equal(msgpack_pack_str_with_body(&pk, k, strlen(k)), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, v, strlen(v)), 0);
}

static void pack_kint(const char *k, int64_t v)
{
    assert_int_equal(msgpack_pack_str_with_body(&pk, k, strlen(k)), 0);
    assert_int_equal(msgpack_pack_int64(&pk, v), 0);
}

static void pack_kdouble(const char *k, double v)
{
    assert_int_equal(msgpack_pack_str_with_body(&pk, k, strlen(k)), 0);
    assert_int_equal(msgpack_pack_double(&pk, v), 0);
}

/* One call record as a worker sends it. */
static void pack_call(const char *provider, const char *model, const char *digest, int64_t pt,
                      int64_t ct, double cost, double latency_ms)
{
    assert_int_equal(msgpack_pack_map(&pk, 8), 0);
    pack_kstr("provider", provider);
    pack_kstr("model", model);
    pack_kstr("prompt_digest", digest);
    pack_kint("prompt_tokens", pt);
    pack_kint("completion_tokens", ct);
    pack_kdouble("cost", cost);
    pack_kdouble("latency_ms", latency_ms);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "cached", 6), 0);
    assert_int_equal(msgpack_pack_false(&pk), 0);
}

static json_int_t int_at(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static double real_at(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    assert_true(json_is_real(v));
    return json_real_value(v);
}

/* The element count of an instance's list (always a 32-bit header). */
static uint32_t list_count(const char *list, uint32_t len)
{
    assert_true(len >= 5);
    assert_int_equal((unsigned char)list[0], 0xdd);
    const unsigned char *p = (const unsigned char *)list;
    return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
}

/* ===================================================================== */
/* Lists of calls                                                        */
/* ===================================================================== */

static void test_concat_attempts(void **state)
{
    char *list = NULL;
    uint32_t len = 0;
    /* Attempt 1: one call; attempt 2: two calls. */
    assert_int_equal(msgpack_pack_array(&pk, 1), 0);
    pack_call("fake", "a", "d1", 3, 4, 0.5, 10);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), 0);
    assert_int_equal(list_count(list, len), 1);
    tr_buf_reset(&mp);
    assert_int_equal(msgpack_pack_array(&pk, 2), 0);
    pack_call("fake", "b", "d2", 1, 2, 0.25, 5);
    pack_call("fake", "a", "d1", 3, 4, 0.5, 7);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), 0);
    assert_int_equal(list_count(list, len), 3);
    assert_int_equal(tr_mp_check(list, len, &tr_mp_default_limits), (long)len);

    /* The list reads back as the three records, in order. */
    json_t *arr = usage_records_json(list, len);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "model")), "a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "model")), "b");
    assert_int_equal(int_at(json_array_get(arr, 2), "completion_tokens"), 4);
    json_decref(arr);

    /* An empty array adds nothing. */
    assert_int_equal(usage_concat(&list, &len, "\x90", 1), 0);
    assert_int_equal(list_count(list, len), 3);
    tr_free(list);

    /* No list: an empty JSON array. */
    arr = usage_records_json(NULL, 0);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_concat_refuses_garbage(void **state)
{
    char *list = NULL;
    uint32_t len = 0;
    assert_int_equal(msgpack_pack_array(&pk, 1), 0);
    pack_call("fake", "a", "d1", 3, 4, 0.5, 10);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), 0);
    uint32_t before = len;
    /* Not an array; an array whose length lies; trailing bytes; nothing at all. */
    static const char *const bad[] = {"\x81\xa1x\x01", "\x93\x01", "\x91\x01\x02", "\xdd\xff"};
    static const size_t bad_len[] = {4, 2, 3, 2};
    for (size_t i = 0; i < TR_ARRAY_LEN(bad); i++)
        assert_int_equal(usage_concat(&list, &len, bad[i], bad_len[i]), TR_EPROTO);
    assert_int_equal(usage_concat(&list, &len, "", 0), TR_EPROTO);
    assert_int_equal(len, before);
    assert_int_equal(list_count(list, len), 1);
    /* Unreadable bytes never reach the API as anything but an empty list. */
    json_t *arr = usage_records_json("\xc1", 1);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    tr_free(list);
}

static void test_concat_bounds(void **state)
{
    char *list = NULL;
    uint32_t len = 0;
    /* Two attempts of 3,000 calls: the list stops at USAGE_MAX_CALLS. */
    for (int attempt = 0; attempt < 2; attempt++) {
        tr_buf_reset(&mp);
        assert_int_equal(msgpack_pack_array(&pk, 3000), 0);
        for (int i = 0; i < 3000; i++)
            pack_call("fake", "a", "d", 1, 1, 0.001, 1);
        assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), attempt == 0 ? 0 : TR_E2BIG);
    }
    assert_int_equal(list_count(list, len), USAGE_MAX_CALLS);
    assert_int_equal(tr_mp_check(list, len, &tr_mp_default_limits), (long)len);
    /* Full: nothing more fits. */
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), TR_E2BIG);
    assert_int_equal(list_count(list, len), USAGE_MAX_CALLS);
    tr_free(list);
    list = NULL;
    len = 0;

    /* Bytes: calls of 200 KiB digests stop under USAGE_MAX_BYTES. */
    static char big[200 * 1024];
    memset(big, 'x', sizeof(big) - 1);
    tr_buf_reset(&mp);
    assert_int_equal(msgpack_pack_array(&pk, 8), 0);
    for (int i = 0; i < 8; i++)
        pack_call("fake", "a", big, 1, 1, 0, 1);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), TR_E2BIG);
    assert_true(len <= USAGE_MAX_BYTES);
    assert_int_equal(list_count(list, len), 5);
    tr_free(list);
}

static void test_concat_out_of_memory(void **state)
{
    char *list = NULL;
    uint32_t len = 0;
    assert_int_equal(msgpack_pack_array(&pk, 1), 0);
    pack_call("fake", "a", "d1", 3, 4, 0.5, 10);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), 0);
    char *before = tr_memdup(list, len);
    assert_non_null(before);
    uint32_t before_len = len;
    tr_alloc_fail_at(1, true);
    int rc = usage_concat(&list, &len, mp.buf, mp.len);
    tr_alloc_fail_at(0, false);
    assert_int_equal(rc, TR_ENOMEM);
    assert_int_equal(len, before_len);
    assert_memory_equal(list, before, len);
    assert_int_equal(usage_concat(&list, &len, mp.buf, mp.len), 0);
    assert_int_equal(list_count(list, len), 2);
    tr_free(before);
    tr_free(list);
}

/* ===================================================================== */
/* Sums                                                                  */
/* ===================================================================== */

static void test_sums(void **state)
{
    json_t *sum = usage_sum_new();
    assert_non_null(sum);
    /* The empty sum prints as the text the API splices for a run without calls. */
    char *text = json_dumps(sum, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(text, USAGE_EMPTY_JSON);
    tr_free(text);

    assert_int_equal(msgpack_pack_array(&pk, 3), 0);
    pack_call("fake", "a", "d1", 3, 4, 0.5, 10.5);
    pack_call("fake", "b", "d2", 1, 2, 0.25, 5);
    pack_call("fake", "a", "d1", 30, 40, 1.0, 1);
    assert_int_equal(usage_sum_add(sum, mp.buf, mp.len), 0);
    /* A second batch: one more call, plus records with missing or wrong fields. */
    tr_buf_reset(&mp);
    assert_int_equal(msgpack_pack_array(&pk, 4), 0);
    pack_call("other", "a", "d3", 2, 0, 0.125, 0);
    assert_int_equal(msgpack_pack_map(&pk, 2), 0);
    pack_kint("prompt_tokens", -5);
    pack_kstr("cost", "lots");
    assert_int_equal(msgpack_pack_int(&pk, 7), 0);
    assert_int_equal(msgpack_pack_nil(&pk), 0);
    assert_int_equal(usage_sum_add(sum, mp.buf, mp.len), 0);
    assert_int_equal(usage_sum_add(sum, NULL, 0), 0);

    /* Five records are maps: the one without fields counts as a call of nothing. */
    assert_int_equal(int_at(sum, "calls"), 5);
    assert_int_equal(int_at(sum, "prompt_tokens"), 36);
    assert_int_equal(int_at(sum, "completion_tokens"), 46);
    assert_true(real_at(sum, "cost") == 1.875);
    assert_true(real_at(sum, "latency_ms") == 16.5);
    json_t *models = json_object_get(sum, "by_model");
    assert_int_equal(json_object_size(models), 4);
    json_t *a = json_object_get(models, "fake/a");
    assert_int_equal(int_at(a, "calls"), 2);
    assert_int_equal(int_at(a, "prompt_tokens"), 33);
    assert_int_equal(int_at(a, "completion_tokens"), 44);
    assert_true(real_at(a, "cost") == 1.5);
    assert_non_null(json_object_get(models, "other/a"));
    assert_non_null(json_object_get(models, "/"));
    json_t *digests = json_object_get(sum, "prompt_digests");
    assert_int_equal(json_array_size(digests), 3);
    assert_string_equal(json_string_value(json_array_get(digests, 0)), "d1");
    assert_string_equal(json_string_value(json_array_get(digests, 2)), "d3");

    json_t *brief = usage_sum_brief(sum);
    assert_int_equal(json_object_size(brief), 5);
    assert_null(json_object_get(brief, "by_model"));
    assert_int_equal(int_at(brief, "calls"), 5);
    json_decref(brief);

    /* Not an array of calls: an error, and the sum is unchanged. */
    assert_true(usage_sum_add(sum, "\xc1", 1) < 0);
    assert_int_equal(int_at(sum, "calls"), 5);
    json_decref(sum);
}

static void test_sum_bounds(void **state)
{
    json_t *sum = usage_sum_new();
    assert_non_null(sum);
    /* 300 distinct models and digests: both lists stop at USAGE_MAX_KEYS, the totals don't. */
    assert_int_equal(msgpack_pack_array(&pk, 300), 0);
    for (int i = 0; i < 300; i++) {
        char model[16], digest[16];
        snprintf(model, sizeof(model), "m%d", i);
        snprintf(digest, sizeof(digest), "d%d", i);
        pack_call("p", model, digest, 1, 1, 0, 0);
    }
    assert_int_equal(usage_sum_add(sum, mp.buf, mp.len), 0);
    assert_int_equal(int_at(sum, "calls"), 300);
    assert_int_equal(json_object_size(json_object_get(sum, "by_model")), USAGE_MAX_KEYS);
    assert_int_equal(json_array_size(json_object_get(sum, "prompt_digests")), USAGE_MAX_KEYS);
    json_decref(sum);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concat_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concat_refuses_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concat_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concat_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sum_bounds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
