/*
 * test_sandbox.c - the pool of sandbox processes (scheduler/sandbox.c) with
 * the real scheduler binary as its child: a graph comes back with its source
 * and digest, Lua and graph errors come back as they are, a file stuck in
 * one C call is killed at the wall-clock limit (limit_exceeded) and its
 * child replaced, a trigger's `when(stats)` gives true, false or an error,
 * and closing the pool cancels what is in flight and reaps every child (the
 * loop then closes with nothing left open).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <msgpack.h>

#include "lib/base/alloc.h"
#include "scheduler/sandbox.h"

#define HEAD "local trellis = require 'trellis'\n"
#define ONE_TASK "tasks = { trellis.task { name = 'a', run = function() end } }"

static char exe[4096];

struct outcome
{
    bool called;
    struct tr_pipeline_def *def;
    int code;
    char msg[TR_ERROR_MSG_MAX];
    int verdict;
};

static void on_load(void *arg, struct tr_pipeline_def *def, struct tr_error *err)
{
    struct outcome *o = arg;
    o->called = true;
    o->def = def;
    o->code = err ? err->code : 0;
    snprintf(o->msg, sizeof(o->msg), "%s", err ? err->msg : "");
}

static void on_when(void *arg, int verdict, struct tr_error *err)
{
    struct outcome *o = arg;
    o->called = true;
    o->verdict = verdict;
    o->code = err ? err->code : 0;
    snprintf(o->msg, sizeof(o->msg), "%s", err ? err->msg : "");
}

static struct sandbox *open_pool(uv_loop_t *loop, double wall)
{
    struct sandbox_config cfg = {
        .exe = exe, .limits = tr_pipeline_default_limits, .warm = 1, .max = 4, .grace_s = 0.3,
    };
    cfg.limits.wall_max_s = wall;
    struct sandbox *sb = NULL;
    struct tr_error err;
    tr_error_init(&err);
    if (sandbox_open(loop, &cfg, &sb, &err) != 0)
        fail_msg("sandbox_open: %s", err.msg);
    return sb;
}

static void run_until(uv_loop_t *loop, struct outcome *o)
{
    while (!o->called)
        uv_run(loop, UV_RUN_ONCE);
}

static void close_pool(uv_loop_t *loop, struct sandbox *sb)
{
    sandbox_close(sb);
    uv_run(loop, UV_RUN_DEFAULT); /* until every child is reaped and closed */
    assert_int_equal(uv_loop_close(loop), 0);
}

static void load(uv_loop_t *loop, struct sandbox *sb, const char *src, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    assert_int_equal(sandbox_load(sb, src, strlen(src), "t.lua", on_load, o), 0);
    run_until(loop, o);
}

static void test_load_and_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sandbox *sb = open_pool(&loop, 10);
    struct outcome o;
    const char *good = HEAD "return trellis.pipeline { name = 'p', version = 2, " ONE_TASK " }";
    load(&loop, sb, good, &o);
    assert_int_equal(o.code, 0);
    assert_non_null(o.def);
    assert_string_equal(o.def->name, "p");
    assert_string_equal(o.def->version, "2");
    assert_string_equal(o.def->source, good);
    char digest[65];
    tr_sha256_hex(good, strlen(good), digest);
    assert_string_equal(o.def->digest, digest);
    tr_pipeline_def_free(o.def);

    load(&loop, sb, HEAD "return trellis.pipeline { name = 'p' tasks = {} }", &o);
    assert_int_equal(o.code, TR_ELUA);
    assert_non_null(strstr(o.msg, "t.lua:2:"));

    load(&loop, sb, HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                         "trellis.task { name = 'a', after = { 'b' }, run = function() end },\n"
                         "trellis.task { name = 'b', after = { 'a' }, run = function() end } } }",
         &o);
    assert_int_equal(o.code, TR_ECYCLE);
    assert_non_null(strstr(o.msg, "cycle: "));

    load(&loop, sb, HEAD "while true do end", &o);
    assert_int_equal(o.code, TR_ELIMIT);
    assert_non_null(strstr(o.msg, "instruction limit"));
    close_pool(&loop, sb);
}

static void test_stuck_in_c_is_killed(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sandbox *sb = open_pool(&loop, 1);
    struct outcome o;
    double t0 = ((double)tr_mono_ns() / 1e9);
    load(&loop, sb, HEAD "string.find(string.rep('a', 3000), '.-.-.-.-b')", &o);
    double took = ((double)tr_mono_ns() / 1e9) - t0;
    assert_int_equal(o.code, TR_ELIMIT);
    assert_non_null(strstr(o.msg, "time limit of 1 s exceeded (the sandbox process was killed)"));
    assert_true(took >= 1.0);
    struct sandbox_stats st;
    sandbox_get_stats(sb, &st);
    assert_int_equal(st.killed, 1);
    /* The pool still answers, from a replacement child. */
    load(&loop, sb, HEAD "return trellis.pipeline { name = 'p', " ONE_TASK " }", &o);
    assert_int_equal(o.code, 0);
    tr_pipeline_def_free(o.def);
    close_pool(&loop, sb);
}

static void when(uv_loop_t *loop, struct sandbox *sb, const char *src, const char *trigger,
                 long failed, struct outcome *o)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "failed", 6);
    msgpack_pack_long(&pk, failed);
    memset(o, 0, sizeof(*o));
    assert_int_equal(sandbox_when(sb, src, strlen(src), "t.lua", trigger, buf.data, buf.size,
                                  on_when, o), 0);
    msgpack_sbuffer_destroy(&buf);
    run_until(loop, o);
}

static void test_trigger_when(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sandbox *sb = open_pool(&loop, 10);
    const char *src = HEAD "return trellis.pipeline { name = 'p', " ONE_TASK ",\n"
                           "  triggers = {\n"
                           "    alarm = { when = function(s) return s.failed > 3 end },\n"
                           "    bare = function(s) return s.failed == 0 end,\n"
                           "    odd = function(s) return 'yes' end,\n"
                           "    boom = function(s) error('no luck') end } }";
    struct outcome o;
    when(&loop, sb, src, "alarm", 5, &o);
    assert_int_equal(o.code, 0);
    assert_int_equal(o.verdict, 1);
    when(&loop, sb, src, "alarm", 1, &o);
    assert_int_equal(o.verdict, 0);
    when(&loop, sb, src, "bare", 0, &o);
    assert_int_equal(o.verdict, 1);
    when(&loop, sb, src, "nope", 0, &o);
    assert_int_equal(o.code, TR_ENOENT);
    assert_int_equal(o.verdict, -1);
    when(&loop, sb, src, "odd", 0, &o);
    assert_int_equal(o.code, TR_EINVAL);
    assert_non_null(strstr(o.msg, "not a boolean"));
    when(&loop, sb, src, "boom", 0, &o);
    assert_int_equal(o.code, TR_ELUA);
    assert_non_null(strstr(o.msg, "no luck"));
    /* A file without triggers loads as before and has no trigger to call. */
    when(&loop, sb, HEAD "return trellis.pipeline { name = 'p', " ONE_TASK " }", "alarm", 0, &o);
    assert_int_equal(o.code, TR_ENOENT);
    close_pool(&loop, sb);
}

static void test_close_cancels(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sandbox *sb = open_pool(&loop, 10);
    struct outcome o[3];
    memset(o, 0, sizeof(o));
    const char *stuck = HEAD "string.find(string.rep('a', 3000), '.-.-.-.-b')";
    for (int i = 0; i < 3; i++)
        assert_int_equal(sandbox_load(sb, stuck, strlen(stuck), "s.lua", on_load, &o[i]), 0);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    sandbox_close(sb);
    for (int i = 0; i < 3; i++) {
        assert_true(o[i].called);
        assert_int_equal(o[i].code, TR_ECANCELED);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const char *build = getenv("TR_BUILD_DIR");
    snprintf(exe, sizeof(exe), "%s/scheduler/trellis-scheduler", build ? build : ".");
    if (access(exe, X_OK) != 0) {
        fprintf(stderr, "test_sandbox: %s is missing: build trellis-scheduler first\n", exe);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_errors),
        cmocka_unit_test(test_stuck_in_c_is_killed),
        cmocka_unit_test(test_trigger_when),
        cmocka_unit_test(test_close_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
