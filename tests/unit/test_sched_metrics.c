/*
 * test_sched_metrics.c - /metrics label values escaped as the Prometheus
 * text format says, pools freed once nothing refers to them, and the pool
 * name rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "scheduler/dispatch.h"
#include "scheduler/metrics.h"

static void no_down(void *arg, struct worker *w)
{
    (void)arg;
    (void)w;
}

static void test_label_values_escaped(void **state)
{
    (void)state;
    struct sched_config cfg = {.heartbeat_ms = 1000, .prefetch = 16};
    struct counters cnt;
    memset(&cnt, 0, sizeof(cnt));
    struct core core;
    memset(&core, 0, sizeof(core));
    tr_hmap_init(&core.runs);
    struct fleet fleet;
    struct fleet_hooks fh = {.down = no_down};
    fleet_init(&fleet, cfg.heartbeat_ms, &fh);
    struct dispatch d;
    struct dispatch_hooks dh = {0};
    dispatch_init(&d, &cfg, &fleet, NULL, NULL, &cnt, &dh);
    struct zmq_router *router = NULL;
    struct metrics_src src = {.cnt = &cnt, .core = &core, .fleet = &fleet, .dispatch = &d,
                              .router = &router};
    /* Names are checked where they come in; the exposition must hold anyway. */
    const char *evil = "p\"} 7\napi_injected 1\n#\\";
    assert_non_null(fleet_pool(&fleet, evil, strlen(evil)));
    size_t len = 0;
    char *text = metrics_render(&src, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "trellis_ready_tasks{pool=\"p\\\"} 7\\napi_injected 1\\n#\\\\\"} 0\n"));
    assert_null(strstr(text, "\napi_injected"));
    tr_free(text);
    /* No worker, no ready task, no run: the sweep frees it. */
    dispatch_sweep(&d);
    assert_int_equal(tr_hmap_count(&fleet.pools), 0);
    dispatch_release(&d);
    fleet_release(&fleet);
    tr_hmap_release(&core.runs);
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
