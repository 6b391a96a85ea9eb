/*
 * test_retry.c - backoff arithmetic: doubling, cap, and jitter bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/retry.h"

static void assert_close(double got, double want)
{
    double d = got - want;
    if (d < -1e-9 || d > 1e-9)
        fail_msg("expected %.9f, got %.9f", want, got);
}

static void test_doubles_each_failure(void **state)
{
    (void)state;
    /* rand01 = 0 gives the lower bound base/2; rand01 -> 1 approaches base. */
    assert_close(tr_retry_delay(1.0, 1, 0.0), 0.5);
    assert_close(tr_retry_delay(1.0, 2, 0.0), 1.0);
    assert_close(tr_retry_delay(1.0, 3, 0.0), 2.0);
    assert_close(tr_retry_delay(1.0, 4, 0.5), 6.0); /* base 8: 4 + 0.5 * 4 */
    assert_close(tr_retry_delay(0.25, 1, 0.5), 0.1875);
}

static void test_jitter_bounds(void **state)
{
    (void)state;
    for (int i = 0; i <= 100; i++) {
        double r = i / 100.0;
        double d = tr_retry_delay(2.0, 3, r); /* base 8 */
        assert_true(d >= 4.0 && d < 8.0);
    }
    /* Out-of-range randomness is clamped, never outside [base/2, base). */
    assert_close(tr_retry_delay(2.0, 1, -3), 1.0);
    assert_true(tr_retry_delay(2.0, 1, 7) < 2.0);
}

static void test_cap_and_degenerate(void **state)
{
    (void)state;
    assert_close(tr_retry_delay(10.0, 60, 0.0), TR_RETRY_MAX_DELAY_S / 2);
    assert_true(tr_retry_delay(10.0, 4000000000u, 0.99) < TR_RETRY_MAX_DELAY_S);
    assert_close(tr_retry_delay(0.0, 3, 0.5), 0.0);
    assert_close(tr_retry_delay(-1.0, 3, 0.5), 0.0);
    assert_close(tr_retry_delay(1.0, 0, 0.5), 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_each_failure),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_cap_and_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
