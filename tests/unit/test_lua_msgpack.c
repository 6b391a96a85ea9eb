/*
 * test_lua_msgpack.c - Lua values <-> msgpack: round trips of every type,
 * integers against floats, arrays against maps, refusals with their paths
 * (functions, cycles, depth), hostile bytes, and allocation failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <lauxlib.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_rt.h"

/*
 * Fixture: a sandboxed state holding a deep-equality function `deq` and the
 * value under test at the top; packing writes into a tr_buf.
 */
static lua_State *L;
static struct tr_buf out;
static struct tr_error err;

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

static void eval(const char *src)
{
    struct tr_error e;
    if (tr_lua_eval(L, src, strlen(src), "t.lua", &e) != 0)
        fail_msg("eval of [%s]: %s", src, e.msg);
}

static int setup(void **state)
{
    const struct tr_lua_limits lim = {64u << 20, 0, 0};
    L = tr_lua_new(&lim);
    if (L == NULL)
        return -1;
    eval("deq = function(a, b)\n"
         "  if math.type(a) ~= math.type(b) then return false end\n"
         "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
         "  for k, v in pairs(a) do if not deq(v, b[k]) then return false end end\n"
         "  for k in pairs(b) do if a[k] == nil then return false end end\n"
         "  return true\n"
         "end");
    lua_pop(L, 1);
    tr_buf_init(&out, 0);
    tr_error_init(&err);
    return 0;
}

static int teardown(void **state)
{
    tr_buf_release(&out);
    tr_lua_free(L);
    return 0;
}

/* Packs the value at the top into out (emptied first). */
static int pack_top(const char *root)
{
    msgpack_packer pk;
    tr_buf_reset(&out);
    tr_error_init(&err);
    msgpack_packer_init(&pk, &out, buf_write);
    int top = lua_gettop(L);
    int rc = root ? tr_lua_pack_named(L, -1, root, &pk, &err) : tr_lua_pack(L, -1, &pk, &err);
    assert_int_equal(lua_gettop(L), top);
    return rc;
}

/* Evaluates expr, packs it, unpacks it and checks deq(original, copy). */
static void round_trip(const char *expr)
{
    char src[1024];
    snprintf(src, sizeof(src), "return %s", expr);
    eval(src);
    if (pack_top(NULL) != 0)
        fail_msg("pack of %s: %s", expr, err.msg);
    int top = lua_gettop(L);
    assert_int_equal(tr_lua_unpack_bytes(L, out.buf, out.len, &err), 0);
    assert_int_equal(lua_gettop(L), top + 1);
    lua_getglobal(L, "deq");
    lua_insert(L, -3);
    assert_int_equal(lua_pcall(L, 2, 1, 0), LUA_OK);
    if (!lua_toboolean(L, -1))
        fail_msg("round trip changed %s", expr);
    lua_pop(L, 1);
}

/* Packs expr and expects TR_EINVAL with exactly msg. */
static void refuse(const char *expr, const char *root, const char *msg)
{
    char src[1024];
    snprintf(src, sizeof(src), "return %s", expr);
    eval(src);
    int rc = pack_top(root);
    lua_pop(L, 1);
    if (rc != TR_EINVAL || strcmp(err.msg, msg) != 0)
        fail_msg("%s gave %d [%s], expected [%s]", expr, rc, err.msg, msg);
}

/* ====================================================================== */

static void test_scalars_round_trip(void **state)
{
    static const char *const exprs[] = {
        "nil", "true", "false", "0", "-1", "127", "128", "-33", "65536", "2^53",
        "math.maxinteger", "math.mininteger", "1.5", "-0.25", "1e308", "3.0", "1/0", "-1/0",
        "''", "'abc'", "'with\\0nul'", "string.rep('x', 70000)", "'\\xff\\xfe binary'",
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(exprs); i++)
        round_trip(exprs[i]);
}

static void test_tables_round_trip(void **state)
{
    static const char *const exprs[] = {
        "{}", "{1, 2, 3}", "{'a', {true, false}, {x = 1}}", "{a = 1, b = 'two', c = {}}",
        "{[10] = 1, [20] = 2}", "{[1.5] = 'f', [true] = 'b', [-3] = 'n'}", "{1, 2, nil, 4}",
        "{1, a = 2}", "{x = {y = {z = {1, 2, {w = 'deep'}}}}}",
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(exprs); i++)
        round_trip(exprs[i]);
    /* A shared (not cyclic) table is encoded at each place. */
    round_trip("(function() local s = {1, 2} return {a = s, b = s, c = {s}} end)()");
}

static void test_integer_float_and_array_encodings(void **state)
{
    eval("return 3");
    assert_int_equal(pack_top(NULL), 0);
    assert_int_equal(out.len, 1);
    assert_int_equal((unsigned char)out.buf[0], 0x03);
    lua_pop(L, 1);

    eval("return 3.0");
    assert_int_equal(pack_top(NULL), 0);
    assert_int_equal(out.len, 9);
    assert_int_equal((unsigned char)out.buf[0], 0xcb); /* float 64 */
    lua_pop(L, 1);

    eval("return {}");
    assert_int_equal(pack_top(NULL), 0);
    assert_int_equal((unsigned char)out.buf[0], 0x90); /* empty array */
    lua_pop(L, 1);

    eval("return {7, 8}");
    assert_int_equal(pack_top(NULL), 0);
    assert_int_equal((unsigned char)out.buf[0], 0x92);
    lua_pop(L, 1);

    eval("return {[2] = 7}");
    assert_int_equal(pack_top(NULL), 0);
    assert_int_equal((unsigned char)out.buf[0], 0x81); /* keys not 1..n: a map */
    lua_pop(L, 1);

    /* Decoded numbers keep their subtype. */
    const char ints[] = "\x92\x03\xcb\x40\x08\x00\x00\x00\x00\x00\x00";
    assert_int_equal(tr_lua_unpack_bytes(L, ints, sizeof(ints) - 1, &err), 0);
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "type");
    lua_rawgeti(L, -3, 1);
    lua_call(L, 1, 1);
    assert_string_equal(lua_tostring(L, -1), "integer");
    lua_pop(L, 1);
    lua_getfield(L, -1, "type");
    lua_rawgeti(L, -3, 2);
    lua_call(L, 1, 1);
    assert_string_equal(lua_tostring(L, -1), "float");
    lua_pop(L, 3);
}

/* Packs the result of src in a fresh state into b. */
static void pack_in_new_state(const char *src, struct tr_buf *b)
{
    const struct tr_lua_limits lim = {16u << 20, 0, 0};
    lua_State *S = tr_lua_new(&lim);
    assert_non_null(S);
    struct tr_error e;
    assert_int_equal(tr_lua_eval(S, src, strlen(src), "c.lua", &e), 0);
    msgpack_packer p;
    msgpack_packer_init(&p, b, buf_write);
    assert_int_equal(tr_lua_pack(S, -1, &p, &e), 0);
    tr_lua_free(S);
}

static void test_canonical_map_order(void **state)
{
    /* Equal tables give equal bytes, whatever the insertion order and hash seed. */
    struct tr_buf a, b;
    tr_buf_init(&a, 0);
    tr_buf_init(&b, 0);
    pack_in_new_state("local t = {} for i = 1, 50 do t['k' .. i] = {i, {z = i, a = -i}} end "
                      "t[7] = 'seven' t[true] = 1 t[2.5] = 0 return t", &a);
    pack_in_new_state("local t = {} t[2.5] = 0 t[true] = 1 t[7] = 'seven' "
                      "for i = 50, 1, -1 do t['k' .. i] = {i, {a = -i, z = i}} end return t", &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.buf, b.buf, a.len);
    tr_buf_release(&a);
    tr_buf_release(&b);

    /* Shorter encoded keys first, then bytewise: 7 (fixint), "sum", "count". */
    eval("return {count = 2, sum = 1, [7] = 3}");
    assert_int_equal(pack_top(NULL), 0);
    lua_pop(L, 1);
    const char want[] = "\x83\x07\x03\xa3" "sum\x01\xa5" "count\x02";
    assert_int_equal(out.len, sizeof(want) - 1);
    assert_memory_equal(out.buf, want, out.len);
}

static void test_encoded_size_cap(void **state)
{
    /* One 1 MiB string shared 100 times would encode to 100 MiB. */
    refuse("(function() local s = string.rep('x', 1 << 20) local t = {} "
           "for i = 1, 100 do t[i] = s end return t end)()", "output",
           "output[64]: the encoding is larger than 67108864 bytes");
}

static void test_refusals_name_the_path(void **state)
{
    refuse("{items = {1, 2, function() end}}", "output",
           "output.items[3]: cannot encode a function");
    refuse("print", NULL, "value: cannot encode a function");
    refuse("{['a b'] = {f = coroutine.create(print)}}", "output",
           "output[\"a b\"].f: cannot encode a thread");
    refuse("{[{}] = 1}", "params", "params[?]: cannot encode a table key of type table");
    refuse("(function() local t = {} t.self = t return t end)()", "output",
           "output.self: cannot encode a table that contains itself");
    refuse("(function() local t = {1} t[2] = {t} return t end)()", "output",
           "output[2][1]: cannot encode a table that contains itself");
}

static void test_depth_limit(void **state)
{
    /* 32 nested tables pack and unpack; 33 are refused. */
    eval("local t = {} for i = 1, 31 do t = {t} end return t");
    assert_int_equal(pack_top(NULL), 0);
    lua_pop(L, 1);
    assert_int_equal(tr_lua_unpack_bytes(L, out.buf, out.len, &err), 0);
    lua_pop(L, 1);

    eval("local t = {} for i = 1, 32 do t = {t} end return t");
    assert_int_equal(pack_top(NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "nested deeper than 32 tables"));
    lua_pop(L, 1);

    /* The same nesting as bytes: tr_mp_check refuses it before msgpack-c. */
    char deep[80];
    memset(deep, 0x91, 33);
    deep[33] = (char)0xc0;
    int top = lua_gettop(L);
    assert_int_equal(tr_lua_unpack_bytes(L, deep, 34, &err), TR_ELIMIT);
    assert_int_equal(lua_gettop(L), top);

    /* tr_lua_push_mp checks depth too, on objects made by hand. */
    msgpack_object objs[40];
    for (int i = 0; i < 40; i++) {
        objs[i].type = MSGPACK_OBJECT_ARRAY;
        objs[i].via.array.size = i < 39 ? 1 : 0;
        objs[i].via.array.ptr = i < 39 ? &objs[i + 1] : NULL;
    }
    assert_int_equal(tr_lua_push_mp(L, &objs[0]), TR_ELIMIT);
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(tr_lua_push_mp(L, &objs[8]), 0); /* 32 levels */
    lua_pop(L, 1);
}

static void test_msgpack_c_depth(void **state)
{
    /* Why the limit is 32: msgpack-c refuses a 33rd open container. */
    char deep[40];
    memset(deep, 0x91, 33);
    deep[33] = (char)0xc0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, deep, 34, &off), MSGPACK_UNPACK_NOMEM_ERROR);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&u, deep + 1, 33, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_unpacked_destroy(&u);
}

static void test_hostile_bytes(void **state)
{
    int top = lua_gettop(L);
    assert_int_equal(tr_lua_unpack_bytes(L, "", 0, &err), 0); /* nothing: nil */
    assert_true(lua_isnil(L, -1));
    lua_pop(L, 1);
    assert_int_equal(tr_lua_unpack_bytes(L, "\xc1", 1, &err), TR_EPROTO);
    assert_int_equal(tr_lua_unpack_bytes(L, "\x92\x01", 2, &err), TR_EPROTO);
    assert_int_equal(tr_lua_unpack_bytes(L, "\x01\x02", 2, &err), TR_EPROTO); /* trailing */
    assert_non_null(strstr(err.msg, "after the msgpack value"));
    assert_true(tr_lua_unpack_bytes(L, "\xdf\xff\xff\xff\xff", 5, &err) < 0); /* map32 lie */
    assert_true(tr_lua_unpack_bytes(L, "\xdd\x10\x00\x00\x00\x01", 6, &err) < 0);
    /* Keys Lua cannot hold, and ext. */
    assert_int_equal(tr_lua_unpack_bytes(L, "\x81\xc0\x01", 3, &err), TR_EPROTO);
    assert_int_equal(tr_lua_unpack_bytes(L, "\x81\x90\x01", 3, &err), TR_EPROTO);
    assert_int_equal(tr_lua_unpack_bytes(L, "\x81\xcb\x7f\xf8\0\0\0\0\0\0\x01", 11, &err),
                     TR_EPROTO); /* NaN key */
    assert_int_equal(tr_lua_unpack_bytes(L, "\xd4\x01\x02", 3, &err), TR_EPROTO);
    assert_int_equal(lua_gettop(L), top);

    /* bin is a string; uint64 beyond int64 a float. */
    assert_int_equal(tr_lua_unpack_bytes(L, "\xc4\x03\x00\x01\x02", 5, &err), 0);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "\x00\x01\x02", 3);
    lua_pop(L, 1);
    assert_int_equal(tr_lua_unpack_bytes(L, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, &err), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(lua_tonumber(L, -1) > 1.8e19);
    lua_pop(L, 1);
}

static void test_pack_out_of_memory(void **state)
{
    /* Failures of the writer's allocations come back as TR_ENOMEM. */
    eval("local t = {} for i = 1, 300 do t[i] = {k = 'v' .. i, n = i, [i] = {x = i, y = 2}} end "
         "return t");
    int rc = -1;
    long n;
    for (n = 1; n < 100000 && rc != 0; n++) {
        tr_alloc_fail_at(n, true);
        rc = pack_top("output");
        tr_alloc_fail_at(0, false);
        if (rc != 0 && rc != TR_ENOMEM)
            fail_msg("allocation %ld: %d (%s)", n, rc, err.msg);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 2);
    lua_pop(L, 1);
}

static void test_push_over_memory_cap(void **state)
{
    /* A decoded value that does not fit under the heap cap: an error, the stack unchanged. */
    char *big = tr_malloc((1u << 20) + 5);
    assert_non_null(big);
    big[0] = (char)0xc6; /* bin32 of 1 MiB */
    big[1] = 0x00;
    big[2] = 0x10;
    big[3] = 0x00;
    big[4] = 0x00;
    memset(big + 5, 'z', 1u << 20);
    tr_lua_set_mem_max(L, tr_lua_mem_used(L) + (256u << 10));
    int top = lua_gettop(L);
    assert_int_equal(tr_lua_unpack_bytes(L, big, (1u << 20) + 5, &err), TR_ENOMEM);
    assert_int_equal(lua_gettop(L), top);
    tr_lua_set_mem_max(L, 0);
    assert_int_equal(tr_lua_unpack_bytes(L, big, (1u << 20) + 5, &err), 0);
    size_t len;
    lua_tolstring(L, -1, &len);
    assert_int_equal(len, 1u << 20);
    lua_pop(L, 1);
    tr_free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scalars_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tables_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integer_float_and_array_encodings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canonical_map_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encoded_size_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_name_the_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_limit, setup, teardown),
        cmocka_unit_test(test_msgpack_c_depth),
        cmocka_unit_test_setup_teardown(test_hostile_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_over_memory_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
