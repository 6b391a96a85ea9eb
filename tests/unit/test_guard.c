/*
 * test_guard.c - trellis.guard: the PII scanner in C (worker/guard_pii.c),
 * the module as pipelines see it (tests/lua/guard_test.lua, which also
 * measures the detection and false-positive rates on the labelled cases of
 * tests/guard/cases.jsonl and asserts them), the `guards` field checks of
 * trellis.pipeline and trellis.task, and the PII scan's throughput (printed,
 * not asserted: the machine is shared).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/lua/lua_rt.h"
#include "lib/lua/pipeline.h"
#include "worker/guard_pii.h"
#include "worker/lua_guard.h"
#include "worker/lua_llm.h"

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

/* The kinds found in s, as "email,card" */
static void kinds(const char *s, char *out, size_t cap)
{
    struct tr_pii_span sp[16];
    size_t n = tr_pii_scan(s, strlen(s), 0xf, sp, 16);
    out[0] = '\0';
    for (size_t i = 0; i < n && i < 16; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", i ? "," : "", tr_pii_kind_names[sp[i].kind]);
    }
}

static void test_scan(void **state)
{
    (void)state;
    char k[128];
    kinds("mail jane.doe@example.com.", k, sizeof(k));
    assert_string_equal(k, "email");
    kinds("+1 (555) 123-4567 and 4111 1111 1111 1111", k, sizeof(k));
    assert_string_equal(k, "phone,card");
    kinds("4111 1111 1111 1112", k, sizeof(k));
    assert_string_equal(k, "");
    kinds("on 2024-01-15 10 30", k, sizeof(k));
    assert_string_equal(k, "");
    kinds("ip 10.200.300.400", k, sizeof(k));
    assert_string_equal(k, "");
    kinds("DE89 3704 0044 0532 0130 00 Danke", k, sizeof(k));
    assert_string_equal(k, "iban");
    kinds("DE89 3704 0044 0532 0130 01", k, sizeof(k));
    assert_string_equal(k, "");

    /* Spans cover the finding exactly. */
    const char *s = "x (555) 987-6543.";
    struct tr_pii_span sp[2];
    assert_int_equal(tr_pii_scan(s, strlen(s), 0xf, sp, 2), 1);
    assert_int_equal(sp[0].start, 2);
    assert_int_equal(sp[0].end, 16);

    /* The checks themselves. */
    assert_true(tr_pii_luhn("79927398713", 11));
    assert_false(tr_pii_luhn("79927398710", 11));
    assert_true(tr_pii_iban_ok("GB82WEST12345698765432", 22));
    assert_false(tr_pii_iban_ok("GB82WEST12345698765433", 22));

    /* The mask limits the kinds. */
    assert_int_equal(tr_pii_scan("a@b.com 4111111111111111", 24, 1u << TR_PII_CARD, sp, 2), 1);
    assert_int_equal(sp[0].kind, TR_PII_CARD);
}

static void test_redact(void **state)
{
    (void)state;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    size_t n = 0;
    const char *s = "write to bob@example.org, card 4111-1111-1111-1111, or +44 20 7946 0958";
    assert_int_equal(tr_pii_redact(s, strlen(s), 0xf, &b, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(tr_buf_addch(&b, '\0'), 0);
    assert_string_equal(b.buf, "write to [EMAIL], card [CARD], or [PHONE]");
    tr_buf_release(&b);

    /* More findings than one window holds: all replaced. */
    tr_buf_init(&b, 0);
    struct tr_buf in;
    tr_buf_init(&in, 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(tr_buf_addf(&in, "u%d@example.com ", i), 0);
    assert_int_equal(tr_pii_redact(in.buf, in.len, 0xf, &b, &n), 0);
    assert_int_equal(n, 300);
    assert_int_equal(b.len, 300 * strlen("[EMAIL] "));
    tr_buf_release(&b);
    tr_buf_release(&in);
}

/* Throughput over a mixed text with a finding every ~2 KB. */
static void test_throughput(void **state)
{
    (void)state;
    struct tr_buf in;
    tr_buf_init(&in, 0);
    static const char para[] =
        "The quarterly report shows revenue of 12,345,678 dollars in 2024-03-31, up 4.5% "
        "from the previous quarter. Customers in region 7 (ids 100-2000) renewed at 93%; "
        "see https://example.com/reports/q1 for the breakdown and table 3.2.1 for details. ";
    while (in.len < (8u << 20)) {
        for (int i = 0; i < 8; i++)
            assert_int_equal(tr_buf_add(&in, para, sizeof(para) - 1), 0);
        assert_int_equal(tr_buf_add(&in, "Contact ops@example.com or +1 555 123 4567. ", 44), 0);
    }
    struct timespec a, b;
    size_t found = 0;
    int rounds = 3;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < rounds; r++)
        found = tr_pii_scan(in.buf, in.len, 0xf, NULL, 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("pii scan: %.1f MB/s over %.1f MB (%zu findings)\n",
           (double)in.len * rounds / s / 1e6, (double)in.len / 1e6, found);
    assert_true(found > 1000);
    tr_buf_release(&in);
}

/* The cost of guard.injection on a 20 KB prompt (printed, not asserted). */
static void test_injection_cost(void **state)
{
    (void)state;
    lua_State *L = tr_lua_new(NULL);
    assert_non_null(L);
    assert_int_equal(tr_lua_register_module(L, "trellis.guard", tr_lua_guard_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.json", tr_lua_json_open), 0);
    static const char src[] =
        "local g = require 'trellis.guard'\n"
        "local t = ('Please summarise the invoices of March; totals are in column D. '):rep(300)\n"
        "local s = 0\n"
        "for i = 1, 20 do s = s + g.injection(t).score end\n"
        "return {len = #t, score = s}\n";
    struct tr_error err;
    tr_error_init(&err);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = tr_lua_eval(L, src, sizeof(src) - 1, "cost", &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (rc != 0)
        fail_msg("%s", err.msg);
    double ms = ((double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6) / 20;
    lua_getfield(L, -1, "len");
    lua_getfield(L, -2, "score");
    printf("guard.injection: %.2f ms per call on %lld bytes\n", ms,
           (long long)lua_tointeger(L, -2));
    assert_true(lua_tonumber(L, -1) == 0); /* an ordinary prompt scores 0 */
    tr_lua_free(L);
}

static void run_lua_test(const char *name)
{
    const char *srcdir = getenv("TR_SOURCE_DIR");
    char path[512], cases_path[512], holdout_path[512];
    snprintf(path, sizeof(path), "%s/tests/lua/%s_test.lua", srcdir ? srcdir : ".", name);
    snprintf(cases_path, sizeof(cases_path), "%s/tests/guard/cases.jsonl",
             srcdir ? srcdir : ".");
    snprintf(holdout_path, sizeof(holdout_path), "%s/tests/guard/holdout.jsonl",
             srcdir ? srcdir : ".");
    size_t len, clen, hlen;
    char *src = read_all(path, &len);
    char *cases = read_all(cases_path, &clen);
    char *holdout = read_all(holdout_path, &hlen);
    if (src == NULL || cases == NULL || holdout == NULL)
        fail_msg("cannot read %s or %s (is TR_SOURCE_DIR set?)", path, cases_path);
    struct tr_lua_limits lim = {.mem_max = 256u << 20};
    lua_State *L = tr_lua_new(&lim);
    assert_non_null(L);
    assert_int_equal(tr_lua_register_module(L, "trellis.guard", tr_lua_guard_open), 0);
    assert_int_equal(tr_lua_register_module(L, "trellis.json", tr_lua_json_open), 0);
    lua_pushlstring(L, cases, clen);
    lua_setglobal(L, "CASES");
    tr_free(cases);
    lua_pushlstring(L, holdout, hlen);
    lua_setglobal(L, "HOLDOUT");
    tr_free(holdout);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_lua_eval(L, src, len, path, &err);
    tr_free(src);
    /* The rates, printed for docs/guardrails.md (and to see what a failure missed). */
    if (lua_getglobal(L, "REPORT") == LUA_TSTRING)
        printf("%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (rc != 0) {
        tr_lua_free(L);
        fail_msg("%s failed: %s", name, err.msg);
    }
    lua_Integer checks = lua_tointeger(L, -1);
    tr_lua_free(L);
    if (checks <= 0)
        fail_msg("%s made no checks", name);
}

static void test_module(void **state)
{
    (void)state;
    run_lua_test("guard");
}

/* The `guards` field: refused at load with the line when it names what does not exist. */
static void expect_load(const char *src, int want, const char *needle)
{
    struct tr_pipeline_def *def = NULL;
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_pipeline_load(src, strlen(src), "g.lua", NULL, &def, &err);
    if (rc != want || (needle != NULL && strstr(err.msg, needle) == NULL))
        fail_msg("rc %d (want %d): %s", rc, want, err.msg);
    tr_pipeline_def_free(def);
}

static void test_pipeline_field(void **state)
{
    (void)state;
#define HEAD "local trellis = require 'trellis'\n"
#define TASK "trellis.task{name = 'a', run = function() end}"
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {input = {pii = 'redact', injection = {threshold = 0.7}, "
                "max_length = 20000, blocked = {words = {'x'}, topics = {t = {'y'}}}},\n"
                "output = {schema = {type = 'object', required = {'a'}, properties = {a = "
                "{type = 'string', pattern = '^[a-z]+$'}}, additionalProperties = false}, "
                "pii = 'block'}, fallback = 'no'}}",
                0, NULL);
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {input = {toxicity = true}}}",
                TR_EINVAL, "g.lua:2: trellis.pipeline: guards.input: unknown check 'toxicity'");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {input = {schema = {}}}}",
                TR_EINVAL, "guards.input: unknown check 'schema'");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {input = {pii = 'mask'}}}",
                TR_EINVAL, "guards.input.pii must be");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {input = {injection = 2}}}",
                TR_EINVAL, "injection must be");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {output = {schema = {type = 'object', oneOf = {}}}}}",
                TR_EINVAL, "guards.output.schema: unsupported keyword 'oneOf'");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {output = {schema = {properties = {a = {pattern = 'a|b'}}}}}}",
                TR_EINVAL, "guards.output.schema.properties.a: uses alternation");
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {" TASK "},\n"
                "guards = {inputs = {}}}",
                TR_EINVAL, "guards: unknown field 'inputs'");
    /* Per task. */
    expect_load(HEAD "return trellis.pipeline{name = 'p', tasks = {\n"
                "trellis.task{name = 'a', run = function() end, guards = {output = {pii = "
                "'redact'}}},\n"
                "trellis.task{name = 'b', run = function() end,\n"
                "guards = {output = {max_length = 0}}}}}",
                TR_EINVAL, "g.lua:4: task 'b': guards.output.max_length must be");
#undef HEAD
#undef TASK
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_injection_cost),
        cmocka_unit_test(test_module),
        cmocka_unit_test(test_pipeline_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
