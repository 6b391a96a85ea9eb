/*
 * test_sched_metrics.c - /metrics label values escaped as the Prometheus
 * text format says, and pools freed once nothing refers to them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "scheduler/sched.h"

static void test_label_values_escaped(void **state)
{
    (void)state;
    struct sched s;
    memset(&s, 0, sizeof(s));
    tr_hmap_init(&s.pools);
    tr_hmap_init(&s.runs);
    /* Names are checked where they come in; the exposition must hold anyway. */
    const char *evil = "p\"} 7\napi_injected 1\n#\\";
    assert_non_null(pool_get(&s, evil, strlen(evil)));
    size_t len = 0;
    char *text = metrics_render(&s, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "trellis_ready_tasks{pool=\"p\\\"} 7\\napi_injected 1\\n#\\\\\"} 0\n"));
    assert_null(strstr(text, "\napi_injected"));
    tr_free(text);
    pools_sweep(&s);
    assert_int_equal(tr_hmap_count(&s.pools), 0);
    tr_hmap_release(&s.pools);
    tr_hmap_release(&s.runs);
}

static void test_pool_names(void **state)
{
    (void)state;
    assert_true(pool_name_valid("gpu-a100.x_1", 12));
    assert_false(pool_name_valid("", 0));
    assert_false(pool_name_valid("a b", 3));
    assert_false(pool_name_valid("p\"", 2));
    char long_name[64];
    memset(long_name, 'p', sizeof(long_name));
    assert_true(pool_name_valid(long_name, 63));
    assert_false(pool_name_valid(long_name, 64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_values_escaped),
        cmocka_unit_test(test_pool_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
