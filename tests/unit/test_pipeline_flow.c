/*
 * test_pipeline_flow.c - the control-flow fields of a pipeline
 * (lib/lua/lua_flow.c): trigger_rule, trellis.subrun, trellis.approval and
 * trellis.skip are read, checked with clear errors, and cross the codec.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include <lauxlib.h>

#include "lib/lua/lua_rt.h"
#include "lib/lua/lua_trellis.h"
#include "lib/lua/pipeline.h"
#include "lib/lua/pipeline_codec.h"

static int load(const char *src, struct tr_pipeline_def **def, struct tr_error *err)
{
    tr_error_init(err);
    *def = NULL;
    return tr_pipeline_load(src, strlen(src), "flow.lua", &tr_pipeline_default_limits, def, err);
}

static const char *GOOD =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'flow', tasks = {\n"
    "  trellis.task { name = 'a', run = function() return trellis.skip('x') end },\n"
    "  trellis.approval { name = 'gate', after = 'a', timeout = 60, default = 'approve',\n"
    "                     trigger_rule = 'none_failed' },\n"
    "  trellis.subrun { name = 'sub', pipeline = 'child@2', after = 'gate',\n"
    "                   params = function(ctx, g) return { q = 1 } end },\n"
    "  trellis.subrun { name = 'sub2', pipeline = 'child' },\n"
    "  trellis.task { name = 'z', after = { 'sub', 'sub2' }, trigger_rule = 'all_done',\n"
    "                 run = function() end },\n"
    "} }\n";

static void check_good(const struct tr_pipeline_def *def)
{
    const struct tr_task_def *t = def->tasks;
    assert_int_equal(t[0].kind, TR_KIND_RUN);
    assert_int_equal(t[0].trigger_rule, TR_RULE_ALL_SUCCESS);
    assert_int_equal(t[1].kind, TR_KIND_APPROVAL);
    assert_true(t[1].approve_default);
    assert_true(t[1].timeout == 60);
    assert_int_equal(t[1].trigger_rule, TR_RULE_NONE_FAILED);
    assert_int_equal(t[2].kind, TR_KIND_SUBRUN);
    assert_string_equal(t[2].subrun, "child@2");
    assert_string_equal(t[3].subrun, "child");
    assert_int_equal(t[4].trigger_rule, TR_RULE_ALL_DONE);
    assert_null(t[4].subrun);
}

static void test_read_and_codec(void **state)
{
    (void)state;
    struct tr_pipeline_def *def;
    struct tr_error err;
    int rc = load(GOOD, &def, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    check_good(def);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(tr_pipeline_def_pack(&pk, def, false), 0);
    struct tr_pipeline_def *back = NULL;
    assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, NULL, &err), 0);
    check_good(back);
    tr_pipeline_def_free(back);
    msgpack_sbuffer_destroy(&sb);
    tr_pipeline_def_free(def);
}

static void refused(const char *body, const char *want)
{
    char src[1000];
    snprintf(src, sizeof(src),
             "local trellis = require 'trellis'\n"
             "return trellis.pipeline { name = 'bad', tasks = {\n"
             "  trellis.task { name = 'l', run = function() end },\n"
             "  %s\n"
             "} }\n", body);
    struct tr_pipeline_def *def;
    struct tr_error err;
    assert_true(load(src, &def, &err) < 0);
    print_message("%s\n", err.msg);
    if (strstr(err.msg, want) == NULL)
        fail_msg("'%s' does not say '%s'", err.msg, want);
    assert_null(def);
}

static void test_refused(void **state)
{
    (void)state;
    refused("trellis.task { name = 'x', run = function() end, trigger_rule = 'sometimes' },",
            "flow.lua:4: task 'x': field 'trigger_rule' must be one of all_success, all_done, "
            "one_success, none_failed (got 'sometimes')");
    refused("trellis.task { name = 'x', run = function() end, trigger_rule = 3 },",
            "(got number)");
    refused("trellis.subrun { name = 'x' },", "flow.lua:4: subrun 'x': field 'pipeline'");
    refused("trellis.subrun { name = 'x', pipeline = 'a b' },", "malformed");
    refused("trellis.subrun { name = 'x', pipeline = 'c', params = 5 },",
            "field 'params' must be a function");
    refused("trellis.subrun { name = 'x', pipeline = 'c', run = function() end },",
            "give 'params'");
    refused("trellis.approval { name = 'x', default = 'maybe' },",
            "approval 'x': field 'default' must be \"approve\" or \"reject\"");
    refused("trellis.approval { name = 'x', map = 'l' },", "an approval cannot have 'map'");
    refused("trellis.subrun { name = 'x', pipeline = 'c', map = 'l' },",
            "a subrun cannot have 'map'");
}

/* trellis.skip's value is recognised; any other table is not. */
static void test_skip_value(void **state)
{
    (void)state;
    lua_State *L = luaL_newstate();
    luaL_requiref(L, "trellis", tr_lua_open_trellis, 1);
    assert_int_equal(luaL_dostring(L, "return trellis.skip('no data'), trellis.skip(), "
                                      "{ reason = 'x' }"), 0);
    const char *why;
    size_t len;
    assert_true(tr_lua_skip_reason(L, -3, &why, &len));
    assert_string_equal(why, "no data");
    assert_true(tr_lua_skip_reason(L, -2, &why, &len));
    assert_string_equal(why, "skipped");
    assert_false(tr_lua_skip_reason(L, -1, &why, &len));
    lua_close(L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_and_codec),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_skip_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
