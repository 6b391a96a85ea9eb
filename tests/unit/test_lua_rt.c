/*
 * test_lua_rt.c - the sandbox: what is absent, what require resolves, load
 * of binary chunks, states that share nothing, the instruction, memory and
 * time limits (and that pcall cannot swallow them), messages with lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <lauxlib.h>

#include "lib/base/alloc.h"
#include "lib/lua/lua_rt.h"

/* Fixture: a state with small limits, fresh for every test. */
#define MEM_MAX (8u << 20)
#define INSTR_MAX 10000000u

static const struct tr_lua_limits limits = {MEM_MAX, INSTR_MAX, 30};

static int setup(void **state)
{
    lua_State *L = tr_lua_new(&limits);
    if (L == NULL)
        return -1;
    *state = L;
    return 0;
}

static int teardown(void **state)
{
    tr_lua_free(*state);
    return 0;
}

/* Evaluates src and expects success with a boolean true result. */
static void expect_true(lua_State *L, const char *src)
{
    struct tr_error err;
    tr_error_init(&err);
    int top = lua_gettop(L);
    int rc = tr_lua_eval(L, src, strlen(src), "t.lua", &err);
    if (rc != 0)
        fail_msg("eval of [%s] failed: %s", src, err.msg);
    assert_int_equal(lua_gettop(L), top + 1);
    if (!lua_toboolean(L, -1))
        fail_msg("[%s] returned false", src);
    lua_pop(L, 1);
}

/* Evaluates src and expects the code rc with needle in the message. */
static void expect_fail(lua_State *L, const char *src, int code, const char *needle)
{
    struct tr_error err;
    tr_error_init(&err);
    int top = lua_gettop(L);
    int rc = tr_lua_eval(L, src, strlen(src), "w1.lua", &err);
    if (rc != code)
        fail_msg("[%s] gave %d (%s), expected %d", src, rc, err.msg, code);
    assert_int_equal(lua_gettop(L), top);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("[%s]: message [%s] lacks [%s]", src, err.msg, needle);
}

/* ====================================================================== */

static void test_absent_globals(void **state)
{
    lua_State *L = *state;
    expect_true(L, "return io == nil and os == nil and debug == nil and package == nil");
    expect_true(L, "return dofile == nil and loadfile == nil");
    expect_true(L, "return string and table and math and utf8 and coroutine and true");
}

static void test_require_resolves_only_registered(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "return require 'os'", TR_ELUA, "module 'os' not found");
    expect_fail(L, "return require 'io'", TR_ELUA, "module 'io' not found");
    expect_fail(L, "return require 'string'", TR_ELUA, "module 'string' not found");
    expect_fail(L, "return require 'debug'", TR_ELUA, "module 'debug' not found");
    expect_true(L, "local t = require 'trellis' return type(t.task) == 'function' and "
                   "type(t.pipeline) == 'function' and require 'trellis' == t");
}

static int opens;

static int open_extra(lua_State *L)
{
    opens++;
    lua_newtable(L);
    lua_pushinteger(L, 42);
    lua_setfield(L, -2, "answer");
    return 1;
}

static void test_register_module(void **state)
{
    lua_State *L = *state;
    opens = 0;
    assert_int_equal(tr_lua_register_module(L, "trellis.extra", open_extra), 0);
    assert_int_equal(opens, 0); /* opened lazily */
    expect_true(L, "local a = require 'trellis.extra' local b = require 'trellis.extra' "
                   "return a == b and a.answer == 42");
    assert_int_equal(opens, 1);
}

static void test_push_trellis_lets_host_extend(void **state)
{
    lua_State *L = *state;
    tr_lua_push_trellis(L);
    assert_true(lua_istable(L, -1));
    lua_pushinteger(L, 7);
    lua_setfield(L, -2, "host_value");
    lua_pop(L, 1);
    expect_true(L, "return require('trellis').host_value == 7");
}

static void test_binary_chunks_refused(void **state)
{
    lua_State *L = *state;
    /* Through load(), whatever mode is asked for. */
    expect_true(L, "local f, e = load(string.dump(function() return 1 end)) "
                   "return f == nil and e:find('binary') ~= nil");
    expect_true(L, "local f, e = load(string.dump(function() return 1 end), 'x', 'b') "
                   "return f == nil and e:find('binary') ~= nil");
    /* Text chunks still load, with an environment when one is given. */
    expect_true(L, "local f = load('return x', 'c', 't', {x = 5}) return f() == 5");
    expect_true(L, "return load('return 2 + 2')() == 4");

    /* As the source given to tr_lua_eval: bytecode from string.dump. */
    struct tr_error err;
    const char *dump = "return string.dump(function() return 1 end)";
    assert_int_equal(tr_lua_eval(L, dump, strlen(dump), "dump.lua", &err), 0);
    size_t len;
    const char *code = lua_tolstring(L, -1, &len);
    assert_true(len > 4 && code[0] == '\x1b');
    tr_error_init(&err);
    assert_int_equal(tr_lua_eval(L, code, len, "bin.lua", &err), TR_ELUA);
    assert_non_null(strstr(err.msg, "binary"));
    lua_pop(L, 1);
}

static void test_states_share_nothing(void **state)
{
    lua_State *A = *state;
    lua_State *B = tr_lua_new(&limits);
    assert_non_null(B);
    expect_true(A, "shared_global = 1 string.upper = function() return 'pwned' end "
                   "return ('x'):upper() == 'pwned'");
    expect_true(B, "return shared_global == nil and ('x'):upper() == 'X'");
    tr_lua_free(B);
}

static void test_collectgarbage_restricted(void **state)
{
    lua_State *L = *state;
    expect_true(L, "return type(collectgarbage('count')) == 'number'");
    expect_true(L, "collectgarbage() collectgarbage('step') return collectgarbage('isrunning')");
    expect_fail(L, "collectgarbage('stop')", TR_ELUA, "not allowed");
    expect_fail(L, "collectgarbage('generational')", TR_ELUA, "not allowed");
}

static void test_print_is_harmless(void **state)
{
    expect_true(*state, "print('hello', 1, nil, {}) return true");
}

/* ====================================================================== */

static void test_errors_carry_chunk_and_line(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "local x = 1\n\nerror('boom')", TR_ELUA, "w1.lua:3: boom");
    expect_fail(L, "local x = 1\nlocal y = = 2", TR_ELUA, "w1.lua:2:");
    expect_fail(L, "local t = nil\nreturn t.x", TR_ELUA, "w1.lua:2: attempt to index");
    expect_fail(L, "error({})", TR_ELUA, "error object is a table value");
    /* The traceback follows the message. */
    expect_fail(L, "local function f() error('deep') end\nf()", TR_ELUA, "stack traceback");
}

static void test_eval_leaves_first_result(void **state)
{
    lua_State *L = *state;
    struct tr_error err;
    int top = lua_gettop(L);
    assert_int_equal(tr_lua_eval(L, "return 5, 6", 11, "r.lua", &err), 0);
    assert_int_equal(lua_gettop(L), top + 1);
    assert_int_equal(lua_tointeger(L, -1), 5);
    lua_pop(L, 1);
    assert_int_equal(tr_lua_eval(L, "local x = 1", 11, "r.lua", &err), 0);
    assert_true(lua_isnil(L, -1));
    lua_pop(L, 1);
}

static void test_instruction_limit(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "while true do end", TR_ELIMIT, "instruction limit of 10000000 exceeded");
    expect_fail(L, "local n = 0\nwhile true do n = n + 1 end", TR_ELIMIT, "w1.lua:2:");
    /* The budget is per eval: the state is usable again. */
    expect_true(L, "local n = 0 for i = 1, 1000 do n = n + i end return n == 500500");
}

static void test_instruction_limit_survives_pcall(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "while true do pcall(function() while true do end end) end", TR_ELIMIT,
                "instruction limit");
    expect_fail(L, "while true do pcall(error) end", TR_ELIMIT, "instruction limit");
    expect_fail(L, "local ok = pcall(function() while true do end end)\nreturn ok", TR_ELIMIT,
                "instruction limit");
    expect_fail(L, "while true do coroutine.resume(coroutine.create(function() "
                   "while true do end end)) end", TR_ELIMIT, "instruction limit");
    expect_fail(L, "while true do xpcall(function() while true do end end, "
                   "function(m) while true do end end) end", TR_ELIMIT, "instruction limit");
    expect_true(L, "return true");
}

static void test_no_unhooked_escapes(void **state)
{
    lua_State *L = *state;
    /* Finalizers run with hooks off: refused. */
    expect_fail(L, "setmetatable({}, {__gc = function() while true do end end})", TR_ELUA,
                "__gc metamethods are not allowed");
    expect_true(L, "local mt = {} local t = setmetatable({}, mt) "
                   "mt.__gc = function() while true do end end t = nil collectgarbage() "
                   "return getmetatable(setmetatable({}, {__index = {}})) ~= nil");
    /* The __close handlers of a coroutine stopped by the limit. */
    expect_fail(L, "local co = coroutine.create(function() local x <close> = setmetatable({}, "
                   "{__close = function() while true do end end}) while true do end end) "
                   "coroutine.resume(co) coroutine.close(co)", TR_ELIMIT, "instruction limit");
    /* A handler still handles ordinary errors, and __close still runs. */
    expect_true(L, "local ok, e = xpcall(error, function(m) return 'handled ' .. m end, 'x') "
                   "return not ok and e == 'handled x'");
    expect_true(L, "local closed = false do local x <close> = setmetatable({}, "
                   "{__close = function() closed = true end}) end return closed");
    expect_true(L, "local co = coroutine.create(function() error('y') end) "
                   "coroutine.resume(co) return coroutine.close(co) == false");
}

static void test_hook_only_during_eval(void **state)
{
    lua_State *L = *state;
    /* A function defined by an eval and called by the host afterwards runs
     * unhooked, past the budget (the worker calls run this way). */
    struct tr_error err;
    const char *src = "return function() local n = 0 for i = 1, 3000000 do n = n + 1 end "
                      "return n end";
    assert_int_equal(tr_lua_eval(L, src, strlen(src), "f.lua", &err), 0);
    assert_int_equal(lua_pcall(L, 0, 1, 0), LUA_OK);
    assert_int_equal(lua_tointeger(L, -1), 3000000);
    lua_pop(L, 1);
}

static void test_memory_limit_table(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "local t = {} for i = 1, 1e9 do t[i] = i end", TR_ELIMIT,
                "memory limit of 8388608 bytes exceeded");
    lua_gc(L, LUA_GCCOLLECT, 0);
    assert_true(tr_lua_mem_used(L) < MEM_MAX / 2);
    expect_true(L, "return #string.rep('a', 100) == 100");
}

static void test_memory_limit_string(void **state)
{
    lua_State *L = *state;
    expect_fail(L, "return string.rep('x', 1 << 30)", TR_ELIMIT, "memory limit");
    expect_fail(L, "local s = 'x' while true do s = s .. s end", TR_ELIMIT, "memory limit");
    /* A file may catch a memory error itself; the cap still held. */
    expect_true(L, "local ok = pcall(string.rep, 'x', 1 << 30) return not ok");
    expect_true(L, "return #table.concat({'a', 'b'}) == 2");
}

static void test_set_mem_max(void **state)
{
    lua_State *L = *state;
    size_t used = tr_lua_mem_used(L);
    assert_true(used > 0);
    tr_lua_set_mem_max(L, used + (64u << 10));
    expect_fail(L, "return string.rep('x', 1 << 20)", TR_ELIMIT, "memory limit");
    tr_lua_set_mem_max(L, 0);
    expect_true(L, "return #string.rep('x', 1 << 20) == 1 << 20");
}

static void test_time_limit(void **state)
{
    struct tr_lua_limits lim = {MEM_MAX, 0, 0.2};
    lua_State *L = tr_lua_new(&lim);
    assert_non_null(L);
    expect_fail(L, "while true do end", TR_ELIMIT, "time limit of 0.2 s exceeded");
    expect_fail(L, "while true do pcall(function() while true do end end) end", TR_ELIMIT,
                "time limit");
    expect_true(L, "return 1 + 1 == 2");
    tr_lua_free(L);
}

static void test_new_out_of_memory(void **state)
{
    /* Every allocation of setup may fail: NULL, never a crash or a leak. */
    lua_State *L = NULL;
    long n;
    for (n = 1; n < 100000; n++) {
        tr_alloc_fail_at(n, true);
        L = tr_lua_new(&limits);
        tr_alloc_fail_at(0, false);
        if (L != NULL)
            break;
    }
    assert_non_null(L);
    assert_true(n > 10);
    expect_true(L, "return require('trellis') ~= nil");
    tr_lua_free(L);
}

static void test_eval_out_of_memory(void **state)
{
    /* Allocation failures inside an eval (not the cap) are TR_ENOMEM. */
    const char *src = "local t = {} for i = 1, 200 do t[i] = {i, tostring(i)} end return #t";
    int rc = -1;
    for (long n = 1; n < 100000 && rc != 0; n++) {
        lua_State *L = tr_lua_new(&limits);
        assert_non_null(L);
        struct tr_error err;
        tr_error_init(&err);
        tr_alloc_fail_at(n, true);
        rc = tr_lua_eval(L, src, strlen(src), "oom.lua", &err);
        tr_alloc_fail_at(0, false);
        if (rc != 0 && rc != TR_ENOMEM)
            fail_msg("allocation %ld: %d (%s)", n, rc, err.msg);
        if (rc == 0) {
            assert_int_equal(lua_tointeger(L, -1), 200);
            lua_pop(L, 1);
        }
        tr_lua_free(L);
    }
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_absent_globals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_require_resolves_only_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_module, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_trellis_lets_host_extend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_chunks_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_states_share_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collectgarbage_restricted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_is_harmless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_carry_chunk_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_leaves_first_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instruction_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instruction_limit_survives_pcall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_unhooked_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hook_only_during_eval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_limit_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_limit_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_mem_max, setup, teardown),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_new_out_of_memory),
        cmocka_unit_test(test_eval_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
