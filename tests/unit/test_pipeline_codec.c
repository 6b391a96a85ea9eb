/*
 * test_pipeline_codec.c - a loaded graph packed and unpacked is the same
 * graph (every field, with and without its source); truncated or corrupted
 * bytes fail cleanly with TR_EPROTO; the task limit holds; the msgpack cursor
 * reads what msgpack-c packs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "lib/lua/pipeline_codec.h"
#include "lib/wire/mp_read.h"

static const char *const SRC =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'codec', version = 7,\n"
    "  params = { n = 3, label = 'x' },\n"
    "  tasks = {\n"
    "    trellis.task { name = 'split', run = function() end },\n"
    "    trellis.task { name = 'work', map = 'split', pool = 'gpu', retries = 2,\n"
    "                   backoff = 0.5, timeout = 30, priority = -4, cache = true, gpus = 2,\n"
    "                   run = function() end },\n"
    "    trellis.task { name = 'cfg', run = function() end },\n"
    "    trellis.task { name = 'join', after = { 'work', 'cfg' }, priority = 9,\n"
    "                   run = function() end },\n"
    "  },\n"
    "  triggers = {\n"
    "    trellis.trigger { name = 'retrain', on = 'feedback', run = 'train@2',\n"
    "      when = function(s) return s.feedback.count > 3 end,\n"
    "      params = { model = 'reranker' }, cooldown = 3600 },\n"
    "    trellis.trigger { name = 'nightly', on = 'schedule', cron = '0 3 * * *',\n"
    "      run = 'eval' },\n"
    "  } }\n";

static struct tr_pipeline_def *load_src(void)
{
    struct tr_error err;
    tr_error_init(&err);
    struct tr_pipeline_def *def = NULL;
    int rc = tr_pipeline_load(SRC, strlen(SRC), "codec.lua", NULL, &def, &err);
    if (rc != 0)
        fail_msg("load: %s", err.msg);
    return def;
}

static void pack(const struct tr_pipeline_def *def, bool with_source, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(tr_pipeline_def_pack(&pk, def, with_source), 0);
}

static void assert_u32s(const uint32_t *a, const uint32_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(a[i], b[i]);
}

static void assert_same(const struct tr_pipeline_def *a, const struct tr_pipeline_def *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->version, b->version);
    assert_string_equal(a->digest, b->digest);
    assert_int_equal(a->params_len, b->params_len);
    assert_memory_equal(a->params, b->params, a->params_len);
    assert_int_equal(a->n_pools, b->n_pools);
    for (uint32_t i = 0; i < a->n_pools; i++)
        assert_string_equal(a->pools[i], b->pools[i]);
    assert_int_equal(a->n_tasks, b->n_tasks);
    for (uint32_t i = 0; i < a->n_tasks; i++) {
        const struct tr_task_def *x = &a->tasks[i], *y = &b->tasks[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->pool, y->pool);
        assert_int_equal(x->retries, y->retries);
        assert_int_equal(x->priority, y->priority);
        assert_int_equal(x->gpus, y->gpus);
        assert_true(x->backoff == y->backoff);
        assert_true(x->timeout == y->timeout);
        assert_int_equal(x->cache, y->cache);
        assert_int_equal(x->map, y->map);
        assert_int_equal(x->n_after, y->n_after);
        assert_u32s(x->after, y->after, x->n_after);
        assert_int_equal(x->n_upstream, y->n_upstream);
        assert_int_equal(x->n_downstream, y->n_downstream);
        assert_u32s(x->downstream, y->downstream, x->n_downstream);
    }
    assert_u32s(a->topo, b->topo, a->n_tasks);
    assert_int_equal(a->n_sinks, b->n_sinks);
    assert_u32s(a->sinks, b->sinks, a->n_sinks);
    assert_u32s(a->by_name, b->by_name, a->n_tasks);
    assert_int_equal(a->n_triggers, b->n_triggers);
    for (uint32_t i = 0; i < a->n_triggers; i++) {
        const struct tr_trigger_def *x = &a->triggers[i], *y = &b->triggers[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->on, y->on);
        assert_string_equal(x->run, y->run);
        assert_int_equal(x->params_len, y->params_len);
        assert_memory_equal(x->params, y->params, x->params_len);
        assert_true(x->cooldown == y->cooldown);
        assert_int_equal(x->cron == NULL, y->cron == NULL);
        if (x->cron)
            assert_string_equal(x->cron, y->cron);
        assert_int_equal(x->has_when, y->has_when);
    }
}

/* The declarations as read: what the scheduler registers. */
static void test_triggers_read(void **state)
{
    struct tr_pipeline_def *def = load_src();
    assert_int_equal(def->n_triggers, 2);
    const struct tr_trigger_def *t = tr_pipeline_find_trigger(def, "retrain");
    assert_non_null(t);
    assert_int_equal(t->on, TR_TRIGGER_FEEDBACK);
    assert_true(t->has_when);
    assert_string_equal(t->run, "train@2");
    assert_true(t->cooldown == 3600);
    assert_null(t->cron);
    t = tr_pipeline_find_trigger(def, "nightly");
    assert_non_null(t);
    assert_int_equal(t->on, TR_TRIGGER_SCHEDULE);
    assert_false(t->has_when);
    assert_string_equal(t->cron, "0 3 * * *");
    assert_int_equal(t->params_len, 1); /* {} */
    assert_null(tr_pipeline_find_trigger(def, "nope"));
    tr_pipeline_def_free(def);
}

/* Each bad declaration is refused with its code, the message naming the trigger. */
static void test_triggers_refused(void **state)
{
    static const struct
    {
        const char *trig;
        int code;
        const char *says;
    } cases[] = {
        {"trellis.trigger { name = 't', on = 'feedbak', run = 'x', when = function() end }",
         TR_ETRIGGER, "on must be"},
        {"trellis.trigger { name = 't', on = 'schedule', run = 'x', cron = '0 25 * * *' }",
         TR_ECRON, "hour"},
        {"trellis.trigger { name = 't', on = 'schedule', run = 'x', cron = '* * *' }",
         TR_ECRON, "not five"},
        {"trellis.trigger { name = 't', on = 'schedule', run = 'x' }", TR_ETRIGGER, "needs cron"},
        {"trellis.trigger { name = 't', on = 'feedback', run = 'x' }", TR_ETRIGGER, "needs when"},
        {"trellis.trigger { name = 't', on = 'feedback', when = function() end }", TR_ETRIGGER,
         "run must"},
        {"trellis.trigger { name = 't', on = 'labels', run = 'x', when = function() end, "
         "cooldown = -1 }", TR_ETRIGGER, "cooldown"},
        {"trellis.trigger { name = 'a b', on = 'labels', run = 'x', when = function() end }",
         TR_ETRIGGER, "name must"},
        {"{ name = 't' }", TR_ETRIGGER, "not a trellis.trigger"},
        {"trellis.trigger { name = 't', on = 'labels', run = 'x', when = function() end }, "
         "trellis.trigger { name = 't', on = 'labels', run = 'y', when = function() end }",
         TR_ETRIGGER, "two triggers"},
        {"trellis.trigger { name = 't', on = 'labels', run = 'x', wen = function() end }",
         TR_EINVAL, "unknown field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char src[1024];
        snprintf(src, sizeof(src), "local trellis = require 'trellis'\n"
                 "return trellis.pipeline { name = 'p', tasks = { trellis.task { name = 'a', "
                 "run = function() end } }, triggers = { %s } }", cases[i].trig);
        struct tr_error err;
        tr_error_init(&err);
        struct tr_pipeline_def *def = NULL;
        int rc = tr_pipeline_load(src, strlen(src), "p.lua", NULL, &def, &err);
        if (rc != cases[i].code || strstr(err.msg, cases[i].says) == NULL)
            fail_msg("case %zu: rc %d (want %d): %s", i, rc, cases[i].code, err.msg);
        assert_null(def);
    }
}

static void test_round_trip(void **state)
{
    struct tr_pipeline_def *def = load_src();
    for (int with_source = 0; with_source <= 1; with_source++) {
        msgpack_sbuffer sb;
        pack(def, with_source, &sb);
        struct tr_pipeline_def *back = NULL;
        struct tr_error err;
        tr_error_init(&err);
        size_t used = 0;
        assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, &used, &err), 0);
        assert_int_equal(used, sb.size);
        assert_same(def, back);
        if (with_source) {
            assert_int_equal(back->source_len, def->source_len);
            assert_string_equal(back->source, def->source);
        } else {
            assert_null(back->source);
        }
        /* The decoded graph answers lookups like the loaded one. */
        assert_int_equal(tr_pipeline_find_task(back, "join"), tr_pipeline_find_task(def, "join"));
        assert_int_equal(tr_pipeline_find_task(back, "nope"), -1);
        tr_pipeline_def_free(back);
        msgpack_sbuffer_destroy(&sb);
    }
    tr_pipeline_def_free(def);
}

/* Run control's `extra_params` is read, checked and crosses the codec. */
static void test_extra_params(void **state)
{
    (void)state;
#define EXTRA_PARAMS_FMT                                                                           \
    "local trellis = require 'trellis'\n"                                                          \
    "return trellis.pipeline { name = 'p', params = { n = 1 }, %s "                                \
    "tasks = { trellis.task { name = 'a', run = function() end } } }"
    static const struct
    {
        const char *field;
        int code;
        bool value;
    } cases[] = {{"", 0, false}, {"extra_params = true,", 0, true},
                 {"extra_params = false,", 0, false}, {"extra_params = 1,", TR_EINVAL, false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char src[600];
        snprintf(src, sizeof(src), EXTRA_PARAMS_FMT, cases[i].field);
        struct tr_error err;
        tr_error_init(&err);
        struct tr_pipeline_def *def = NULL;
        int rc = tr_pipeline_load(src, strlen(src), "p.lua", NULL, &def, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d (want %d): %s", i, rc, cases[i].code, err.msg);
        if (rc != 0) {
            assert_non_null(strstr(err.msg, "extra_params"));
            continue;
        }
        assert_int_equal(def->extra_params, cases[i].value);
        msgpack_sbuffer sb;
        pack(def, false, &sb);
        struct tr_pipeline_def *back = NULL;
        assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, NULL, &err), 0);
        assert_int_equal(back->extra_params, cases[i].value);
        tr_pipeline_def_free(back);
        tr_pipeline_def_free(def);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void test_truncated_and_corrupted(void **state)
{
    struct tr_pipeline_def *def = load_src();
    msgpack_sbuffer sb;
    pack(def, true, &sb);
    struct tr_error err;
    struct tr_pipeline_def *back = NULL;
    for (size_t n = 0; n < sb.size; n++) {
        tr_error_init(&err);
        assert_int_equal(tr_pipeline_def_unpack(sb.data, n, NULL, &back, NULL, &err), TR_EPROTO);
        assert_null(back);
    }
    /* Every single byte changed: never a crash (ASan watches), and either a
     * clean error or a graph whose indices are in range. */
    char *copy = tr_memdup(sb.data, sb.size);
    for (size_t i = 0; i < sb.size; i++) {
        for (int delta = 1; delta < 256; delta += 37) {
            memcpy(copy, sb.data, sb.size);
            copy[i] = (char)(copy[i] + delta);
            tr_error_init(&err);
            int rc = tr_pipeline_def_unpack(copy, sb.size, NULL, &back, NULL, &err);
            if (rc != 0) {
                assert_null(back);
                continue;
            }
            for (uint32_t t = 0; t < back->n_tasks; t++) {
                assert_true(back->tasks[t].pool < back->n_pools);
                assert_true(back->tasks[t].map < (int32_t)back->n_tasks);
            }
            tr_pipeline_def_free(back);
        }
    }
    tr_free(copy);
    struct tr_pipeline_limits lim = tr_pipeline_default_limits;
    lim.max_tasks = 3;
    tr_error_init(&err);
    assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, &lim, &back, NULL, &err),
                     TR_ELIMIT);
    msgpack_sbuffer_destroy(&sb);
    tr_pipeline_def_free(def);
}

static void test_reader(void **state)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "op", 2);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_int64(&pk, -70000);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_double(&pk, 2.5);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_map(&pk, 1); /* skipped whole */
    msgpack_pack_int8(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_float(&pk, 1.0f);
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "abc", 3);
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, sb.data, sb.size);
    assert_int_equal(tr_mp_rd_map(&r), 1);
    assert_true(tr_str_eq(tr_mp_rd_str(&r), "op"));
    assert_int_equal(tr_mp_rd_array(&r), 6);
    assert_int_equal(tr_mp_rd_int(&r), -70000);
    assert_true(tr_mp_rd_uint(&r) == UINT64_MAX);
    assert_true(tr_mp_rd_double(&r) == 2.5);
    assert_true(tr_mp_rd_nil(&r));
    assert_true(tr_mp_rd_bool(&r));
    tr_mp_rd_skip(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(tr_mp_rd_left(&r), 0);
    /* A count larger than the bytes left is refused before anyone allocates. */
    const unsigned char huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    tr_mp_rd_init(&r, huge, sizeof(huge));
    assert_int_equal(tr_mp_rd_array(&r), 0);
    assert_int_equal(r.err, TR_EPROTO);
    /* Sticky: a failed read leaves every later one failing. */
    assert_int_equal(tr_mp_rd_uint(&r), 0);
    assert_int_equal(r.err, TR_EPROTO);
    tr_mp_rd_init(&r, huge, sizeof(huge));
    tr_mp_rd_skip(&r);
    assert_int_equal(r.err, TR_EPROTO);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_extra_params),
        cmocka_unit_test(test_triggers_read),
        cmocka_unit_test(test_triggers_refused),
        cmocka_unit_test(test_truncated_and_corrupted),
        cmocka_unit_test(test_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
