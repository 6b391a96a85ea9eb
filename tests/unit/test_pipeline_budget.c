/*
 * test_pipeline_budget.c - a pipeline's budget, on_budget and its tasks'
 * providers are read, checked with clear errors, and cross the codec (the
 * graph comes back from the sandbox child through it) unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "lib/lua/pipeline_codec.h"

static struct tr_pipeline_def *load(const char *fields, const char *task_fields, int *rc,
                                    struct tr_error *err)
{
    char src[2048];
    snprintf(src, sizeof(src), "local trellis = require 'trellis'\n"
             "return trellis.pipeline { name = 'b', %s tasks = {\n"
             "  trellis.task { name = 'a', run = function() end },\n"
             "  trellis.task { name = 'c', %s run = function() end } } }\n", fields, task_fields);
    tr_error_init(err);
    struct tr_pipeline_def *def = NULL;
    *rc = tr_pipeline_load(src, strlen(src), "b.lua", NULL, &def, err);
    return def;
}

static void test_read_and_round_trip(void **state)
{
    (void)state;
    int rc;
    struct tr_error err;
    struct tr_pipeline_def *def =
        load("budget = { cost = 0.5, tokens = 1000 }, on_budget = 'fallback',",
             "providers = { 'openai', 'claude' },", &rc, &err);
    if (rc != 0)
        fail_msg("load: %s", err.msg);
    assert_true(def->budget_cost == 0.5);
    assert_true(def->budget_tokens == 1000);
    assert_int_equal(def->on_budget, TR_ON_BUDGET_FALLBACK);
    assert_non_null(def->task_providers);
    assert_null(def->task_providers[0]);
    assert_string_equal(def->task_providers[1], "openai,claude");

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(tr_pipeline_def_pack(&pk, def, false), 0);
    struct tr_pipeline_def *back = NULL;
    size_t used = 0;
    assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, &used, &err), 0);
    assert_true(back->budget_cost == 0.5);
    assert_true(back->budget_tokens == 1000);
    assert_int_equal(back->on_budget, TR_ON_BUDGET_FALLBACK);
    assert_null(back->task_providers[0]);
    assert_string_equal(back->task_providers[1], "openai,claude");
    tr_pipeline_def_free(back);
    msgpack_sbuffer_destroy(&sb);
    tr_pipeline_def_free(def);

    /* None of it: no limits, "fail", no providers, and the same after the codec. */
    def = load("", "", &rc, &err);
    assert_int_equal(rc, 0);
    assert_true(def->budget_cost == 0 && def->budget_tokens == 0);
    assert_int_equal(def->on_budget, TR_ON_BUDGET_FAIL);
    assert_null(def->task_providers);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(tr_pipeline_def_pack(&pk, def, false), 0);
    assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, &used, &err), 0);
    assert_null(back->task_providers);
    tr_pipeline_def_free(back);
    msgpack_sbuffer_destroy(&sb);
    tr_pipeline_def_free(def);
}

static void test_refused(void **state)
{
    (void)state;
    static const struct
    {
        const char *fields, *task, *says;
    } cases[] = {
        {"budget = { cost = -1 },", "", "budget.cost must be a number > 0"},
        {"budget = { tokens = 'many' },", "", "budget.tokens must be a number > 0"},
        {"budget = { dollars = 3 },", "", "unknown field"},
        {"budget = 5,", "", "budget must be a table"},
        {"on_budget = 'beg',", "", "on_budget must be"},
        {"", "providers = 'openai',", "field 'providers' must be an array"},
        {"", "providers = {},", "field 'providers' must be an array"},
        {"", "providers = { 'a,b' },", "field 'providers' must be an array"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        struct tr_error err;
        struct tr_pipeline_def *def = load(cases[i].fields, cases[i].task, &rc, &err);
        if (rc == 0 || strstr(err.msg, cases[i].says) == NULL)
            fail_msg("case %zu: rc %d: %s", i, rc, err.msg);
        assert_null(def);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_and_round_trip),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
