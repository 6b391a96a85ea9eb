/*
 * test_pipeline.c - the pipeline loader: errors with their lines and codes,
 * graph checks (duplicates, unknown dependencies, cycles), the def it builds
 * (edges, map fan-out, pools, params, topo order, sinks, name index), the
 * table shape the worker reads, a 100,000-task file, and allocation failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <msgpack.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_rt.h"
#include "lib/lua/pipeline.h"

/* Fixture: each test loads sources with this helper; the def is freed in teardown. */
static struct tr_pipeline_def *def;
static struct tr_error err;

static int load_lim(const char *src, const struct tr_pipeline_limits *lim)
{
    tr_pipeline_def_free(def);
    def = NULL;
    tr_error_init(&err);
    int rc = tr_pipeline_load(src, strlen(src), "w1.lua", lim, &def, &err);
    if (rc == 0)
        assert_non_null(def);
    else
        assert_null(def);
    return rc;
}

static int load(const char *src)
{
    return load_lim(src, NULL);
}

static int teardown(void **state)
{
    tr_pipeline_def_free(def);
    def = NULL;
    return 0;
}

#define HEAD "local trellis = require 'trellis'\n"
#define RUN "run = function() end"

static void expect(const char *src, int code, const char *needle)
{
    int rc = load(src);
    if (rc != code)
        fail_msg("gave %d (%s), expected %d for:\n%s", rc, err.msg, code, src);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("message [%s] lacks [%s]", err.msg, needle);
}

static uint32_t idx(const char *name)
{
    int32_t i = tr_pipeline_find_task(def, name);
    if (i < 0)
        fail_msg("no task '%s'", name);
    return (uint32_t)i;
}

/* Position of task name in the topological order. */
static uint32_t topo_pos(const char *name)
{
    uint32_t t = idx(name);
    for (uint32_t k = 0; k < def->n_tasks; k++) {
        if (def->topo[k] == t)
            return k;
    }
    fail_msg("'%s' is not in the order", name);
    return 0;
}

/* ====================================================================== */
/* Lua errors                                                             */
/* ====================================================================== */

static void test_syntax_error_has_line(void **state)
{
    expect(HEAD "local x = 1\nreturn trellis.pipeline {\n  name = 'p' tasks = {}\n}", TR_ELUA,
           "w1.lua:4:");
}

static void test_runtime_error_has_line(void **state)
{
    expect(HEAD "local t = {}\n\nlocal y = t.a.b\n", TR_ELUA, "w1.lua:4: attempt to index");
    expect(HEAD "error('no pipeline here')", TR_ELUA, "w1.lua:2: no pipeline here");
}

static void test_not_a_pipeline(void **state)
{
    expect(HEAD "return { name = 'p', tasks = {} }", TR_ELUA, "must return trellis.pipeline");
    expect(HEAD "return 5", TR_ELUA, "returned number");
    expect(HEAD "local x = 1", TR_ELUA, "returned nil");
}

static void test_limits(void **state)
{
    struct tr_pipeline_limits lim = tr_pipeline_default_limits;
    lim.instr_max = 1000000;
    lim.mem_max = 16u << 20;
    assert_int_equal(load_lim(HEAD "while true do end", &lim), TR_ELIMIT);
    assert_non_null(strstr(err.msg, "instruction limit of 1000000 exceeded"));
    lim.instr_max = 0;
    assert_int_equal(load_lim(HEAD "local t = {} for i = 1, 1e8 do t[i] = i end", &lim),
                     TR_ELIMIT);
    assert_non_null(strstr(err.msg, "memory limit of 16777216 bytes exceeded"));
    lim.max_tasks = 2;
    const char *three = HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                             "trellis.task { name = 'a', " RUN " },\n"
                             "trellis.task { name = 'b', " RUN " },\n"
                             "trellis.task { name = 'c', " RUN " } } }";
    assert_int_equal(load_lim(three, &lim), TR_ELIMIT);
    assert_non_null(strstr(err.msg, "more than the limit of 2"));
}

/* ====================================================================== */
/* Field checks                                                           */
/* ====================================================================== */

static void test_task_without_run(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a' },\n} }",
           TR_EINVAL, "w1.lua:3: task 'a': field 'run' must be a function (got nil)");
}

static void test_unknown_field(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a', retires = 2, " RUN " },\n} }",
           TR_EINVAL, "w1.lua:3: task 'a': unknown field 'retires'");
    expect(HEAD "return trellis.pipeline { name = 'p', task = {} }", TR_EINVAL,
           "w1.lua:2: trellis.pipeline: unknown field 'task'");
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { 'a', " RUN " } } }",
           TR_EINVAL, "w1.lua:3:");
}

static void test_wrong_field_types(void **state)
{
    static const struct
    {
        const char *fields;
        const char *needle;
    } cases[] = {
        {"name = '', " RUN, "field 'name' must not be empty"},
        {"name = 5, " RUN, "field 'name' must be a non-empty string (got number)"},
        {"name = 'a', run = 'x'", "field 'run' must be a function (got string)"},
        {"name = 'a', after = 3, " RUN, "field 'after' must be a name or an array of names"},
        {"name = 'a', after = { 1 }, " RUN, "after[1] must be a string"},
        {"name = 'a', after = { x = 'b' }, " RUN, "found key 'x'"},
        {"name = 'a', pool = 1, " RUN, "field 'pool' must be a string (got number)"},
        {"name = 'a', pool = '', " RUN, "field 'pool' must not be empty"},
        {"name = 'a', pool = 'p\"} 7\\napi_injected 1\\n#', " RUN,
         "field 'pool' may hold only A-Z a-z 0-9 _ . -"},
        {"name = 'a', pool = string.rep('p', 64), " RUN, "field 'pool' is longer than 63 bytes"},
        {"name = 'a', retries = -1, " RUN, "field 'retries' must be an integer from 0 to 65535"},
        {"name = 'a', retries = 1.5, " RUN, "field 'retries' must be an integer (got number)"},
        {"name = 'a', backoff = 'x', " RUN, "field 'backoff' must be a number (got string)"},
        {"name = 'a', timeout = -2, " RUN, "field 'timeout' must be a finite number"},
        {"name = 'a', timeout = math.huge, " RUN, "field 'timeout' must be a finite number"},
        {"name = 'a', map = true, " RUN, "field 'map' must be a task name (got boolean)"},
        {"name = 'a', cache = 'yes', " RUN, "field 'cache' must be a boolean (got string)"},
        {"name = 'a', priority = 1 << 40, " RUN, "field 'priority' must fit in 32 bits"},
        {"name = 'a', priority = 0.5, " RUN, "field 'priority' must be an integer"},
        {"name = 'a', gpus = 65, " RUN, "field 'gpus' must be an integer from 0 to 64"},
        {"name = 'a', gpus = -1, " RUN, "field 'gpus' must be an integer from 0 to 64"},
        {"name = 'a', gpus = 1.5, " RUN, "field 'gpus' must be an integer"},
        {"name = 'a', gpus = '1', " RUN, "field 'gpus' must be an integer"},
    };
    char src[512];
    for (size_t i = 0; i < TR_ARRAY_LEN(cases); i++) {
        snprintf(src, sizeof(src), HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                 "  trellis.task { %s } } }", cases[i].fields);
        expect(src, TR_EINVAL, cases[i].needle);
        assert_non_null(strstr(err.msg, "w1.lua:3:"));
    }
}

static void test_pipeline_field_checks(void **state)
{
    expect(HEAD "return trellis.pipeline { tasks = { trellis.task { name = 'a', " RUN " } } }",
           TR_EINVAL, "field 'name' must be a non-empty string");
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {} }", TR_EINVAL,
           "field 'tasks' must be a non-empty array of tasks");
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = { { name = 'a', " RUN " } } }",
           TR_EINVAL, "tasks[1] is not a trellis.task");
    expect(HEAD "return trellis.pipeline { name = 'p', version = {}, tasks = {\n"
                "trellis.task { name = 'a', " RUN " } } }",
           TR_EINVAL, "field 'version' must be a string or a number");
    expect(HEAD "return trellis.pipeline { name = 'p', params = { [1] = 2 }, tasks = {\n"
                "trellis.task { name = 'a', " RUN " } } }",
           TR_EINVAL, "params must have string keys");
    expect(HEAD "return trellis.pipeline { name = 'p', params = { f = print }, tasks = {\n"
                "trellis.task { name = 'a', " RUN " } } }",
           TR_EINVAL, "params.f: cannot encode a function");
}

static void test_changed_after_check(void **state)
{
    /* A file may change a task after trellis.task accepted it: the loader checks again. */
    expect(HEAD "local a = trellis.task { name = 'a', " RUN " }\n"
                "local p = trellis.pipeline { name = 'p', tasks = { a } }\n"
                "a.retries = -5\nreturn p",
           TR_EINVAL, "task 'a': field 'retries'");
    expect(HEAD "local a = trellis.task { name = 'a', " RUN " }\n"
                "local p = trellis.pipeline { name = 'p', tasks = { a } }\n"
                "p.tasks[2] = {}\nreturn p",
           TR_EINVAL, "tasks[2] is not a trellis.task");
}

/* ====================================================================== */
/* Graph checks                                                           */
/* ====================================================================== */

static void test_duplicate_name(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a', " RUN " },\n"
                "  trellis.task { name = 'b', " RUN " },\n"
                "  trellis.task { name = 'a', " RUN " } } }",
           TR_EDUP, "duplicate task name 'a'");
}

static void test_unknown_dependency(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a', " RUN " },\n"
                "  trellis.task { name = 'b', after = { 'a', 'x' }, " RUN " } } }",
           TR_EDEP, "task 'b' depends on unknown task 'x'");
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'b', map = 'nope', " RUN " } } }",
           TR_EDEP, "task 'b' depends on unknown task 'nope'");
}

static void test_duplicate_after(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a', " RUN " },\n"
                "  trellis.task { name = 'b', after = { 'a', 'a' }, " RUN " } } }",
           TR_EINVAL, "task 'b' lists 'a' twice in after");
}

static void test_cycle_names_tasks(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'start', " RUN " },\n"
                "  trellis.task { name = 'a', after = { 'start', 'c' }, " RUN " },\n"
                "  trellis.task { name = 'b', after = 'a', " RUN " },\n"
                "  trellis.task { name = 'c', after = { 'b' }, " RUN " },\n"
                "  trellis.task { name = 'end', after = { 'c' }, " RUN " } } }",
           TR_ECYCLE, "cycle: ");
    /* One cycle, in the direction outputs flow, whichever task it starts at. */
    const char *const forms[] = {"cycle: a -> b -> c -> a", "cycle: b -> c -> a -> b",
                                 "cycle: c -> a -> b -> c"};
    bool found = false;
    for (size_t i = 0; i < TR_ARRAY_LEN(forms); i++)
        found |= strcmp(err.msg, forms[i]) == 0;
    if (!found)
        fail_msg("unexpected cycle message [%s]", err.msg);
}

static void test_self_dependency_is_cycle(void **state)
{
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'a', after = 'a', " RUN " } } }",
           TR_ECYCLE, "cycle: a -> a");
    expect(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                "  trellis.task { name = 'm', map = 'm', " RUN " } } }",
           TR_ECYCLE, "cycle: m -> m");
}

/* ====================================================================== */
/* The def                                                                */
/* ====================================================================== */

static const char *diamond =
    HEAD "return trellis.pipeline {\n"
    "  name = 'diamond', version = 3,\n"
    "  params = { x = 2, name = 'n', list = { 1, 2.5 }, deep = { k = true } },\n"
    "  tasks = {\n"
    "    trellis.task { name = 'd', after = { 'b', 'c' }, pool = 'gpu', " RUN " },\n"
    "    trellis.task { name = 'b', after = 'a', retries = 3, backoff = 1.5, " RUN " },\n"
    "    trellis.task { name = 'c', after = { 'a' }, timeout = 20, cache = true,\n"
    "                   priority = -4, gpus = 3, " RUN " },\n"
    "    trellis.task { name = 'a', " RUN " },\n"
    "  },\n"
    "}\n";

static void test_diamond(void **state)
{
    assert_int_equal(load(diamond), 0);
    assert_string_equal(def->name, "diamond");
    assert_string_equal(def->version, "3");
    assert_int_equal(def->n_tasks, 4);
    uint32_t a = idx("a"), b = idx("b"), c = idx("c"), d = idx("d");
    assert_int_equal(d, 0); /* declared order is kept */
    assert_int_equal(a, 3);

    assert_int_equal(def->tasks[d].n_after, 2);
    assert_int_equal(def->tasks[d].after[0], b);
    assert_int_equal(def->tasks[d].after[1], c);
    assert_int_equal(def->tasks[d].n_upstream, 2);
    assert_int_equal(def->tasks[a].n_upstream, 0);
    assert_int_equal(def->tasks[a].n_downstream, 2);
    assert_int_equal(def->tasks[a].downstream[0], b);
    assert_int_equal(def->tasks[a].downstream[1], c);
    assert_int_equal(def->tasks[b].n_downstream, 1);
    assert_int_equal(def->tasks[b].downstream[0], d);
    assert_int_equal(def->tasks[d].map, -1);

    assert_int_equal(topo_pos("a"), 0);
    assert_int_equal(topo_pos("d"), 3);
    assert_true(topo_pos("b") < topo_pos("d") && topo_pos("c") < topo_pos("d"));
    assert_int_equal(def->n_sinks, 1);
    assert_int_equal(def->sinks[0], d);

    /* Fields and their defaults. */
    assert_int_equal(def->tasks[b].retries, 3);
    assert_true(def->tasks[b].backoff == 1.5);
    assert_true(def->tasks[c].timeout == 20);
    assert_true(def->tasks[c].cache);
    assert_int_equal(def->tasks[c].priority, -4);
    assert_int_equal(def->tasks[c].gpus, 3);
    assert_int_equal(def->tasks[a].gpus, 0);
    assert_int_equal(def->tasks[a].retries, 0);
    assert_true(def->tasks[a].timeout == 0 && def->tasks[a].backoff == 0);
    assert_false(def->tasks[a].cache);

    /* "cpu" first even though the first task declared uses "gpu". */
    assert_int_equal(def->n_pools, 2);
    assert_string_equal(def->pools[0], "cpu");
    assert_string_equal(def->pools[1], "gpu");
    assert_int_equal(def->tasks[d].pool, 1);
    assert_int_equal(def->tasks[a].pool, 0);

    /* Source and digest. */
    assert_int_equal(def->source_len, strlen(diamond));
    assert_memory_equal(def->source, diamond, def->source_len);
    char hex[65];
    tr_sha256_hex(diamond, strlen(diamond), hex);
    assert_string_equal(def->digest, hex);

    assert_int_equal(tr_pipeline_find_task(def, "zz"), -1);
    assert_int_equal(tr_pipeline_find_task(def, ""), -1);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static void test_params_packed(void **state)
{
    assert_int_equal(load(diamond), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, def->params, def->params_len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, def->params_len);
    const msgpack_object *m = &u.data;
    assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(m->via.map.size, 4);
    const msgpack_object *x = map_get(m, "x");
    assert_non_null(x);
    assert_int_equal(x->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(x->via.u64, 2);
    const msgpack_object *list = map_get(m, "list");
    assert_non_null(list);
    assert_int_equal(list->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(list->via.array.ptr[1].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(list->via.array.ptr[1].via.f64 == 2.5);
    const msgpack_object *deep = map_get(m, "deep");
    assert_non_null(deep);
    assert_non_null(map_get(deep, "k"));
    msgpack_unpacked_destroy(&u);
}

static void test_defaults_without_params_or_version(void **state)
{
    assert_int_equal(load(HEAD "return trellis.pipeline { name = 'p', tasks = {\n"
                              "  trellis.task { name = 'only', pool = 'io', " RUN " } } }"),
                     0);
    assert_string_equal(def->version, "");
    assert_int_equal(def->params_len, 1);
    assert_int_equal((unsigned char)def->params[0], 0x80); /* empty map */
    assert_int_equal(def->n_pools, 1);
    assert_string_equal(def->pools[0], "io");
    assert_int_equal(def->n_sinks, 1);
    assert_int_equal(def->topo[0], 0);

    /* An empty params table is a map too. */
    assert_int_equal(load(HEAD "return trellis.pipeline { name = 'p', params = {}, "
                              "version = 'v1.2', tasks = {\n"
                              "  trellis.task { name = 'only', " RUN " } } }"),
                     0);
    assert_string_equal(def->version, "v1.2");
    assert_int_equal(def->params_len, 1);
    assert_int_equal((unsigned char)def->params[0], 0x80);
}

static void test_map_fan_out(void **state)
{
    const char *src = HEAD "return trellis.pipeline { name = 'mr', tasks = {\n"
                           "  trellis.task { name = 'split', " RUN " },\n"
                           "  trellis.task { name = 'work', map = 'split', " RUN " },\n"
                           "  trellis.task { name = 'both', map = 'split', after = { 'split' },"
                           " " RUN " },\n"
                           "  trellis.task { name = 'sum', after = { 'work', 'both' }, " RUN " },\n"
                           "} }";
    assert_int_equal(load(src), 0);
    uint32_t split = idx("split"), work = idx("work"), both = idx("both"), sum = idx("sum");
    assert_int_equal(def->tasks[work].map, (int32_t)split);
    assert_int_equal(def->tasks[work].n_after, 0);
    assert_int_equal(def->tasks[work].n_upstream, 1);
    /* Its map source listed in after as well counts once. */
    assert_int_equal(def->tasks[both].map, (int32_t)split);
    assert_int_equal(def->tasks[both].n_after, 1);
    assert_int_equal(def->tasks[both].n_upstream, 1);
    assert_int_equal(def->tasks[split].n_downstream, 2);
    assert_int_equal(def->tasks[split].downstream[0], work);
    assert_int_equal(def->tasks[split].downstream[1], both);
    assert_int_equal(def->tasks[sum].map, -1);
    assert_int_equal(def->tasks[sum].n_upstream, 2);
    assert_int_equal(def->n_sinks, 1);
    assert_int_equal(def->sinks[0], sum);
    assert_int_equal(topo_pos("split"), 0);
    assert_int_equal(topo_pos("sum"), 3);
}

static void test_table_shape_for_workers(void **state)
{
    /* The worker evaluates the same file and reads run by name from p.tasks. */
    const struct tr_lua_limits lim = {64u << 20, 10000000, 10};
    lua_State *L = tr_lua_new(&lim);
    assert_non_null(L);
    struct tr_error e;
    assert_int_equal(tr_lua_eval(L, diamond, strlen(diamond), "w1.lua", &e), 0);
    const char *check =
        "local p = ...\n"
        "assert(p.name == 'diamond' and p.version == '3' and p.params.x == 2)\n"
        "assert(#p.tasks == 4)\n"
        "local byname = {}\n"
        "for _, t in ipairs(p.tasks) do byname[t.name] = t end\n"
        "assert(type(byname.a.run) == 'function')\n"
        "assert(byname.a.pool == 'cpu' and byname.a.retries == 0 and byname.a.cache == false)\n"
        "assert(byname.d.pool == 'gpu' and byname.b.retries == 3)\n"
        "assert(getmetatable(byname.a) == 'trellis.task')\n"
        "return true";
    assert_int_equal(luaL_loadstring(L, check), LUA_OK);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fail_msg("%s", lua_tostring(L, -1));
    assert_true(lua_toboolean(L, -1));
    tr_lua_free(L);
}

static void test_hundred_thousand_tasks(void **state)
{
    /* The W4 shape: a root and 100,000 tasks after it, built by a loop. */
    const char *src = HEAD "local tasks = { trellis.task { name = 'root', " RUN " } }\n"
                           "for i = 1, 100000 do\n"
                           "  tasks[#tasks + 1] = trellis.task { name = 't' .. i,\n"
                           "    after = { 'root' }, run = function(ctx, x) return x + i end }\n"
                           "end\n"
                           "return trellis.pipeline { name = 'w4', tasks = tasks }\n";
    assert_int_equal(load(src), 0);
    assert_int_equal(def->n_tasks, 100001);
    assert_int_equal(def->tasks[0].n_downstream, 100000);
    assert_int_equal(def->n_sinks, 100000);
    assert_int_equal(def->topo[0], 0);
    assert_int_equal(tr_pipeline_find_task(def, "t77777"), 77777);
    assert_int_equal(tr_pipeline_find_task(def, "root"), 0);
    assert_int_equal(tr_pipeline_find_task(def, "t100001"), -1);
    assert_int_equal(def->tasks[100000].after[0], 0);
}

static void test_find_task_without_index(void **state)
{
    assert_int_equal(load(diamond), 0);
    /* A def built by hand has no index: the search falls back to a scan. */
    uint32_t *index = def->by_name;
    def->by_name = NULL;
    assert_int_equal(tr_pipeline_find_task(def, "c"), 2);
    assert_int_equal(tr_pipeline_find_task(def, "nope"), -1);
    def->by_name = index;
}

static void test_worker_modules_at_top_level(void **state)
{
    /* Requiring worker modules at the top level is fine: the scheduler
     * never calls run, where they are used. */
    assert_int_equal(load(HEAD "local llm = require 'trellis.llm'\n"
                              "local index = require 'trellis.index'\n"
                              "return trellis.pipeline { name = 'p', tasks = {\n"
                              "  trellis.task { name = 'a', run = function(ctx)\n"
                              "    return llm.chat { messages = {} } end } } }\n"),
                     0);
    assert_int_equal(def->n_tasks, 1);
    /* Calling one while reading the graph is refused with a clear message. */
    assert_int_equal(load(HEAD "local llm = require 'trellis.llm'\n"
                              "local r = llm.chat { messages = {} }\n"),
                     TR_ELUA);
    assert_non_null(strstr(err.msg, "trellis.llm.chat runs on workers only"));
    assert_non_null(strstr(err.msg, "w1.lua:3:"));
    /* Unknown modules are still unknown. */
    assert_int_equal(load(HEAD "require 'trellis.nope'\n"), TR_ELUA);
    assert_non_null(strstr(err.msg, "not found"));
}

static void test_sha256(void **state)
{
    char hex[65];
    tr_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    tr_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* Reads $TR_SOURCE_DIR/lua-pipelines/<name> into b; false when the tree is not known. */
static bool read_example(const char *name, struct tr_buf *b)
{
    const char *dir = getenv("TR_SOURCE_DIR");
    if (dir == NULL)
        return false;
    char path[1024];
    snprintf(path, sizeof(path), "%s/lua-pipelines/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open '%s'", path);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(tr_buf_add(b, chunk, n), 0);
    fclose(f);
    return true;
}

/*
 * Runs an example the way a worker would, in one sandbox: each task's run in
 * topological order with a ctx, a mapped task once per element, and checks
 * the sinks' outputs with the Lua expression `check` (over `out` and `logs`).
 */
static void run_example(const char *file, const char *check)
{
    struct tr_buf src;
    tr_buf_init(&src, 0);
    if (!read_example(file, &src)) {
        tr_buf_release(&src);
        fail_msg("cannot read lua-pipelines/%s (run through ctest, which sets TR_SOURCE_DIR)",
                 file);
    }
    tr_error_init(&err);
    tr_pipeline_def_free(def);
    def = NULL;
    int rc = tr_pipeline_load(src.buf, src.len, file, NULL, &def, &err);
    if (rc != 0)
        fail_msg("%s: %s", file, err.msg);

    const struct tr_lua_limits lim = {64u << 20, 10000000, 10};
    lua_State *L = tr_lua_new(&lim);
    assert_non_null(L);
    const char *driver =
        "return function(p, params, order, check)\n"
        "  local byname, out, logs = {}, {}, {}\n"
        "  for _, t in ipairs(p.tasks) do byname[t.name] = t end\n"
        "  local function ctx(name, index)\n"
        "    return { params = params, run_id = 'r-test', task = name, index = index,\n"
        "             attempt = 1, log = function(...)\n"
        "               local parts = table.pack(...)\n"
        "               for i = 1, parts.n do parts[i] = tostring(parts[i]) end\n"
        "               logs[#logs + 1] = table.concat(parts, ' ') end }\n"
        "  end\n"
        "  for _, name in ipairs(order) do\n"
        "    local t = byname[name]\n"
        "    local args = {}\n"
        "    for i, up in ipairs(type(t.after) == 'string' and { t.after } or t.after or {}) do\n"
        "      args[i] = out[up]\n"
        "    end\n"
        "    if t.map then\n"
        "      local each = {}\n"
        "      for i, v in ipairs(out[t.map]) do\n"
        "        each[i] = t.run(ctx(name, i), v, table.unpack(args))\n"
        "      end\n"
        "      out[name] = each\n"
        "    else\n"
        "      out[name] = t.run(ctx(name, 0), table.unpack(args))\n"
        "    end\n"
        "  end\n"
        "  return load('local out, logs = ... return ' .. check)(out, logs)\n"
        "end\n";
    struct tr_error e;
    assert_int_equal(tr_lua_eval(L, driver, strlen(driver), "driver.lua", &e), 0);
    assert_int_equal(tr_lua_eval(L, src.buf, src.len, file, &e), 0);
    assert_int_equal(tr_lua_unpack_bytes(L, def->params, def->params_len, &e), 0);
    lua_createtable(L, (int)def->n_tasks, 0);
    for (uint32_t k = 0; k < def->n_tasks; k++) {
        lua_pushstring(L, def->tasks[def->topo[k]].name);
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushstring(L, check);
    if (lua_pcall(L, 4, 1, 0) != LUA_OK)
        fail_msg("%s: %s", file, lua_tostring(L, -1));
    if (!lua_toboolean(L, -1))
        fail_msg("%s: outputs fail the check %s", file, check);
    tr_lua_free(L);
    tr_buf_release(&src);
}

static void test_example_diamond(void **state)
{
    run_example("diamond.lua", "out.d == 6 and out.b == 2 and out.c == 4 and #logs == 1 "
                               "and logs[1] == 'sum of 2 and 4'");
    assert_string_equal(def->name, "diamond");
    assert_string_equal(def->version, "1");
    assert_int_equal(def->n_sinks, 1);
    assert_int_equal(def->sinks[0], idx("d"));
}

static void test_example_map_reduce(void **state)
{
    run_example("map_reduce.lua", "out.total.sum == 173 and out.total.count == 8 and "
                                  "#out.square == 8 and out.square[6] == 81 and "
                                  "logs[1] == 'added 8 squares' and #logs == 1");
    assert_int_equal(def->tasks[idx("square")].map, (int32_t)idx("split"));
    assert_int_equal(def->n_sinks, 1);
    assert_int_equal(def->sinks[0], idx("total"));
}

static void test_load_out_of_memory(void **state)
{
    /* Sticky: every allocation from the nth on fails. TR_ENOMEM until n
     * passes the load's last allocation. */
    int rc = -1;
    long n;
    for (n = 1; n < 200000 && rc != 0; n++) {
        tr_alloc_fail_at(n, true);
        rc = load(diamond);
        tr_alloc_fail_at(0, false);
        if (rc != 0 && rc != TR_ENOMEM)
            fail_msg("allocation %ld: %d (%s)", n, rc, err.msg);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 100); /* the loop did reach the loader's own allocations */
    assert_int_equal(def->n_tasks, 4);
    /* Once: Lua retries after an emergency collection, C code reports it. */
    long total = n;
    for (n = 1; n <= total; n++) {
        tr_alloc_fail_at(n, false);
        rc = load(diamond);
        tr_alloc_fail_at(0, false);
        if (rc != 0 && rc != TR_ENOMEM)
            fail_msg("allocation %ld (once): %d (%s)", n, rc, err.msg);
        if (rc == 0)
            assert_int_equal(def->sinks[0], idx("d"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_modules_at_top_level, teardown),
        cmocka_unit_test_teardown(test_syntax_error_has_line, teardown),
        cmocka_unit_test_teardown(test_runtime_error_has_line, teardown),
        cmocka_unit_test_teardown(test_not_a_pipeline, teardown),
        cmocka_unit_test_teardown(test_limits, teardown),
        cmocka_unit_test_teardown(test_task_without_run, teardown),
        cmocka_unit_test_teardown(test_unknown_field, teardown),
        cmocka_unit_test_teardown(test_wrong_field_types, teardown),
        cmocka_unit_test_teardown(test_pipeline_field_checks, teardown),
        cmocka_unit_test_teardown(test_changed_after_check, teardown),
        cmocka_unit_test_teardown(test_duplicate_name, teardown),
        cmocka_unit_test_teardown(test_unknown_dependency, teardown),
        cmocka_unit_test_teardown(test_duplicate_after, teardown),
        cmocka_unit_test_teardown(test_cycle_names_tasks, teardown),
        cmocka_unit_test_teardown(test_self_dependency_is_cycle, teardown),
        cmocka_unit_test_teardown(test_diamond, teardown),
        cmocka_unit_test_teardown(test_params_packed, teardown),
        cmocka_unit_test_teardown(test_defaults_without_params_or_version, teardown),
        cmocka_unit_test_teardown(test_map_fan_out, teardown),
        cmocka_unit_test_teardown(test_table_shape_for_workers, teardown),
        cmocka_unit_test_teardown(test_hundred_thousand_tasks, teardown),
        cmocka_unit_test_teardown(test_find_task_without_index, teardown),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test_teardown(test_example_diamond, teardown),
        cmocka_unit_test_teardown(test_example_map_reduce, teardown),
        cmocka_unit_test_teardown(test_load_out_of_memory, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
