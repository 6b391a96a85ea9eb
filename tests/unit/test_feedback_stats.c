/*
 * test_feedback_stats.c - a pipeline's feedback statistics as the scheduler
 * keeps them (scheduler/feedback.c): totals and a sliding window of
 * per-minute buckets, updated one feedback at a time, at times the test
 * chooses: the window keeps the last hour and forgets what is older, a
 * bucket's slot is reused an hour later, a clock that goes back does not
 * corrupt the window, and negatives are counted as DESIGN.md says.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>

#include "scheduler/feedback_int.h"

#define T0 1800000000.0 /* a whole hour, so that buckets start where expected */

static double num(json_t *o, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    assert_non_null(v);
    return json_number_value(v);
}

static void test_totals_and_window(void **state)
{
    struct fb_stats st = {.pipeline = "p"};
    fb_stats_add(&st, -1, true, T0 + 5);
    fb_stats_add(&st, 5, false, T0 + 30);     /* same minute */
    fb_stats_add(&st, 2, true, T0 + 1800);    /* half an hour later */
    assert_true(st.dirty);
    json_t *o = fb_stats_json(&st, T0 + 1800);
    assert_true(num(o, "feedback", "count", NULL) == 3);
    assert_true(num(o, "feedback", "mean_score", NULL) == 2);
    assert_true(fabs(num(o, "feedback", "negative_rate", NULL) - 2.0 / 3) < 1e-9);
    assert_true(num(o, "feedback", "window", "count") == 3);
    assert_true(num(o, "feedback", "window", "seconds") == 3600);
    json_decref(o);

    /* 59 minutes after T0's minute, the first minute is still in the window;
     * at 60 it has slid out, the totals keep it. */
    o = fb_stats_json(&st, T0 + 59 * 60 + 59);
    assert_true(num(o, "feedback", "window", "count") == 3);
    json_decref(o);
    o = fb_stats_json(&st, T0 + 3600);
    assert_true(num(o, "feedback", "window", "count") == 1);
    assert_true(num(o, "feedback", "window", "negative_rate") == 1);
    assert_true(num(o, "feedback", "window", "mean_score") == 2);
    assert_true(num(o, "feedback", "count", NULL) == 3);
    json_decref(o);

    /* Two hours on: an empty window reads as zeros, not NaN. */
    o = fb_stats_json(&st, T0 + 7200);
    assert_true(num(o, "feedback", "window", "count") == 0);
    assert_true(num(o, "feedback", "window", "mean_score") == 0);
    assert_true(num(o, "feedback", "window", "negative_rate") == 0);
    json_decref(o);
}

static void test_slot_reused_an_hour_later(void **state)
{
    struct fb_stats st = {.pipeline = "p"};
    fb_stats_add(&st, 1, false, T0 + 10);
    fb_stats_add(&st, 1, false, T0 + 20);
    /* Exactly an hour later the same slot of the ring: reset, then counted. */
    fb_stats_add(&st, -1, true, T0 + 3600 + 10);
    json_t *o = fb_stats_json(&st, T0 + 3600 + 10);
    assert_true(num(o, "feedback", "window", "count") == 1);
    assert_true(num(o, "feedback", "window", "negative_rate") == 1);
    assert_true(num(o, "feedback", "count", NULL) == 3);
    json_decref(o);
    size_t used = 0;
    for (size_t i = 0; i < FB_BUCKETS; i++)
        used += st.buckets[i].count > 0;
    assert_int_equal(used, 1);
}

static void test_clock_going_back(void **state)
{
    struct fb_stats st = {.pipeline = "p"};
    fb_stats_add(&st, 4, false, T0 + 3600 + 10);
    /* An hour earlier lands in the same slot, which holds a newer minute:
     * the totals take it, the window is left alone. */
    fb_stats_add(&st, 1, false, T0 + 10);
    json_t *o = fb_stats_json(&st, T0 + 3600 + 20);
    assert_true(num(o, "feedback", "count", NULL) == 2);
    assert_true(num(o, "feedback", "window", "count") == 1);
    assert_true(num(o, "feedback", "window", "mean_score") == 4);
    json_decref(o);
}

static void test_labels_in_stats(void **state)
{
    struct fb_stats st = {.pipeline = "rag", .queued = 2, .labelled = 5};
    json_t *o = fb_stats_json(&st, T0);
    assert_string_equal(json_string_value(json_object_get(o, "pipeline")), "rag");
    assert_true(num(o, "labels", "queued", NULL) == 2);
    assert_true(num(o, "labels", "labelled", NULL) == 5);
    assert_true(num(o, "feedback", "count", NULL) == 0);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totals_and_window),
        cmocka_unit_test(test_slot_reused_an_hour_later),
        cmocka_unit_test(test_clock_going_back),
        cmocka_unit_test(test_labels_in_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
