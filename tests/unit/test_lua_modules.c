/*
 * test_lua_modules.c - trellis.index, trellis.ingest, trellis.prompt and
 * trellis.eval as pipelines see them: a sandboxed state from tr_lua_new
 * with the modules registered, running the Lua assertions of
 * tests/lua/<name>_test.lua.
 *
 * The bindings live in the worker, which the unit tests do not link, so
 * their sources are compiled into this test (they use nothing of the worker
 * but worker/lua_embed.h). The Lua halves are read from the source tree
 * ($TR_SOURCE_DIR/worker/lua/...) by this file's tr_lua_embedded_call,
 * where the worker uses the copies compiled into it.
 *
 * Fixture: a scratch folder that is both TRELLIS_DATA_DIR and the only
 * ingestion root; the Lua tests write files there with test_write(path,
 * text) and remove them with test_remove(path), and find it in TEST_DIR.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <ftw.h>
#include <lauxlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/lua/lua_rt.h"
#include "worker/lua_embed.h"
#include "worker/lua_index.c"
#include "worker/lua_ingest.c"
#include "worker/lua_al.c"
#include "worker/lua_rag.h"
#include "worker/pg_index.h"

static char test_dir[256];

/* ---- the embedded-source loader, reading the source tree ---- */

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (tr_buf_add(&b, chunk, n) < 0)
            break;
    }
    fclose(f);
    return tr_buf_detach(&b, len);
}

void tr_lua_embedded_call(lua_State *L, const char *name, int nargs)
{
    const char *srcdir = getenv("TR_SOURCE_DIR");
    char path[512], rel[128];
    snprintf(rel, sizeof(rel), "%s", name);
    for (char *s = rel; *s != '\0'; s++)
        if (*s == '.')
            *s = '/';
    snprintf(path, sizeof(path), "%s/worker/lua/%s.lua", srcdir ? srcdir : ".", rel);
    size_t len;
    char *src = read_all(path, &len);
    if (src == NULL)
        luaL_error(L, "no Lua source for module '%s' at '%s'", name, path);
    char chunk[160];
    snprintf(chunk, sizeof(chunk), "=%s", name);
    int rc = luaL_loadbufferx(L, src, len, chunk, "t");
    tr_free(src);
    if (rc != LUA_OK)
        lua_error(L);
    lua_insert(L, -nargs - 1);
    lua_call(L, nargs, 1);
}

/* ---- helpers the Lua tests call ---- */

static void test_path(lua_State *L, const char *rel, char *out, size_t cap)
{
    if (strstr(rel, "..") != NULL)
        luaL_error(L, "test paths stay in the fixture");
    snprintf(out, cap, "%s/%s", test_dir, rel);
}

/* test_write(path, text): creates folders on the way. */
static int l_test_write(lua_State *L)
{
    char p[512];
    size_t len;
    test_path(L, luaL_checkstring(L, 1), p, sizeof(p));
    const char *s = luaL_checklstring(L, 2, &len);
    for (char *c = p + strlen(test_dir) + 1; (c = strchr(c, '/')) != NULL; c++) {
        *c = '\0';
        mkdir(p, 0700);
        *c = '/';
    }
    FILE *f = fopen(p, "wb");
    if (f == NULL)
        return luaL_error(L, "cannot write '%s'", p);
    fwrite(s, 1, len, f);
    fclose(f);
    return 0;
}

static int l_test_remove(lua_State *L)
{
    char p[512];
    test_path(L, luaL_checkstring(L, 1), p, sizeof(p));
    lua_pushboolean(L, unlink(p) == 0);
    return 1;
}

/* ---- fixture ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/trellis-luamod-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(test_dir) == NULL)
        return -1;
    setenv("TRELLIS_DATA_DIR", test_dir, 1);
    setenv("TRELLIS_INGEST_ROOTS", test_dir, 1);
    return 0;
}

static int teardown(void **state)
{
    nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* load_embedded(name, native): the Lua half of a module, with a fake C half. */
static int l_load_embedded(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 2);
    tr_lua_embedded_call(L, name, 1);
    return 1;
}

static void run_lua_test(const char *name)
{
    const char *srcdir = getenv("TR_SOURCE_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/lua/%s_test.lua", srcdir ? srcdir : ".", name);
    size_t len;
    char *src = read_all(path, &len);
    if (src == NULL)
        fail_msg("cannot read %s (is TR_SOURCE_DIR set?)", path);
    struct tr_lua_limits lim = {.mem_max = 256u << 20};
    lua_State *L = tr_lua_new(&lim);
    assert_non_null(L);
    assert_int_equal(tr_lua_register_module(L, "trellis.index", tr_lua_index_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.ingest", tr_lua_ingest_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.prompt", tr_lua_prompt_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.eval", tr_lua_eval_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.al", tr_lua_al_open), 0);
    lua_pushcfunction(L, l_load_embedded);
    lua_setglobal(L, "load_embedded");
    lua_pushcfunction(L, l_test_write);
    lua_setglobal(L, "test_write");
    lua_pushcfunction(L, l_test_remove);
    lua_setglobal(L, "test_remove");
    lua_pushstring(L, test_dir);
    lua_setglobal(L, "TEST_DIR");
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_lua_eval(L, src, len, path, &err);
    tr_free(src);
    if (rc != 0) {
        tr_lua_free(L);
        fail_msg("%s failed: %s", name, err.msg);
    }
    /* The chunk returns how many checks it made: a test that ran nothing fails. */
    lua_Integer checks = lua_tointeger(L, -1);
    tr_lua_free(L);
    if (checks <= 0)
        fail_msg("%s made no checks", name);
}

static void test_prompt(void **state)
{
    run_lua_test("prompt");
}

static void test_eval(void **state)
{
    run_lua_test("eval");
}

static void test_al(void **state)
{
    (void)state;
    run_lua_test("al");
}

static void test_index(void **state)
{
    run_lua_test("index");
}

static void test_ingest(void **state)
{
    run_lua_test("ingest");
}

/*
 * Under a tight heap cap, allocations fail inside the C functions (between
 * C allocations and Lua pushes): errors are caught, nothing leaks (ASan's
 * leak check), nothing crashes, and the index stays usable.
 */
static const char capped_src[] =
    "local index, ingest = require 'trellis.index', require 'trellis.ingest'\n"
    "local idx = index.open('cap.db', { dim = 4 })\n"
    "local last, done = nil, 0\n"
    "for i = 1, 40 do\n"
    "  local ok, e = pcall(function()\n"
    "    local docs = {}\n"
    "    for j = 1, 20 do\n"
    "      docs[j] = { id = i * 1000 + j, text = ('word' .. j .. ' '):rep(30),\n"
    "                  vector = { j, 1, 2, i }, meta = { n = j, pad = ('m'):rep(200) } }\n"
    "    end\n"
    "    idx:upsert(docs)\n"
    "    local hits = idx:search { query = 'word1', vector = { 1, 1, 1, 1 }, k = 40 }\n"
    "    local ch = ingest.text(('a paragraph of words\\n\\n'):rep(100), { size = 64 })\n"
    "    return #hits + #ch\n"
    "  end)\n"
    "  if ok then done = done + 1 else last = e end\n"
    "end\n"
    "idx:close()\n"
    "return { done = done, last = tostring(last) }\n";

static void test_memory_cap(void **state)
{
    const size_t caps[] = {24u << 10, 64u << 10, 160u << 10, 400u << 10, 64u << 20};
    for (size_t i = 0; i < TR_ARRAY_LEN(caps); i++) {
        lua_State *L = tr_lua_new(NULL);
        assert_non_null(L);
        assert_int_equal(tr_lua_register_module(L, "trellis.index", tr_lua_index_open), 0);
        assert_int_equal(tr_lua_register_module(L, "trellis.ingest", tr_lua_ingest_open), 0);
        tr_lua_set_mem_max(L, tr_lua_mem_used(L) + caps[i]);
        struct tr_error err;
        tr_error_init(&err);
        int rc = tr_lua_eval(L, capped_src, sizeof(capped_src) - 1, "capped", &err);
        if (caps[i] == (64u << 20)) {
            /* With room, every round succeeds. */
            if (rc != 0)
                fail_msg("uncapped run failed: %s", err.msg);
            lua_getfield(L, -1, "done");
            lua_getfield(L, -2, "last");
            if (lua_tointeger(L, -2) != 40)
                fail_msg("%d rounds of 40 done, last error: %s", (int)lua_tointeger(L, -2),
                         lua_tostring(L, -1));
        } else if (rc == 0) {
            lua_getfield(L, -1, "done");
            print_message("cap %zu: %d rounds of 40 done\n", caps[i], (int)lua_tointeger(L, -1));
        } else {
            if (rc != TR_ELIMIT && rc != TR_ENOMEM && rc != TR_ELUA)
                fail_msg("cap %zu: rc %d: %s", caps[i], rc, err.msg);
        }
        tr_lua_free(L);
    }
}

/*
 * With TRELLIS_TEST_PG_URL (tests/pg/with_pg.sh sets it: a PostgreSQL the
 * test started), the index's contract runs again on PostgreSQL: the same
 * Lua files, with index.open(name) going to that database as a worker's
 * --index-url makes it.
 */
static int setup_pg(void **state)
{
    tr_lua_index_set_url(getenv("TRELLIS_TEST_PG_URL"));
    return setup(state);
}

static int teardown_pg(void **state)
{
    tr_lua_index_set_url(NULL);
    tr_pg_pool_drain();
    return teardown(state);
}

int main(void)
{
    if (getenv("TRELLIS_TEST_PG_URL") != NULL) {
        const struct CMUnitTest pg[] = {
            cmocka_unit_test_setup_teardown(test_index, setup_pg, teardown_pg),
            cmocka_unit_test_setup_teardown(test_ingest, setup_pg, teardown_pg),
            cmocka_unit_test_setup_teardown(test_memory_cap, setup_pg, teardown_pg),
        };
        return cmocka_run_group_tests_name("postgres", pg, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_al, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
