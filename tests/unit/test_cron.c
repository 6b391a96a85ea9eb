/*
 * test_cron.c - cron parsing and next-fire times, as a table of expressions
 * with their expected next firing after a given UTC time, plus the
 * expressions that must be refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "lib/base/cron.h"

/* Seconds since the epoch of a UTC date and time (test helper, Hinnant's algorithm). */
static double utc(int y, unsigned m, unsigned d, unsigned hh, unsigned mm)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + (long)doe - 719468;
    return (double)days * 86400 + hh * 3600 + mm * 60;
}

struct next_case
{
    const char *expr;
    int y;
    unsigned m, d, hh, mm;      /* after this (plus `sec` seconds) */
    double sec;
    int ey;
    unsigned em, ed, ehh, emm;  /* expect this; ey 0: never */
};

/* 2026-12-06 is a Sunday. */
static const struct next_case cases[] = {
    {"* * * * *", 2026, 12, 6, 3, 24, 0, 2026, 12, 6, 3, 25},
    {"* * * * *", 2026, 12, 6, 3, 24, 59.9, 2026, 12, 6, 3, 25},
    {"0 3 * * *", 2026, 12, 6, 3, 0, 0, 2026, 12, 7, 3, 0},     /* strictly after */
    {"0 3 * * *", 2026, 12, 6, 2, 59, 30, 2026, 12, 6, 3, 0},
    {"*/15 * * * *", 2026, 12, 6, 3, 24, 0, 2026, 12, 6, 3, 30},
    {"5/15 * * * *", 2026, 12, 6, 3, 51, 0, 2026, 12, 6, 4, 5},
    {"0 9-17/4 * * *", 2026, 12, 6, 13, 0, 0, 2026, 12, 6, 17, 0},
    {"10,20,40 * * * *", 2026, 12, 6, 3, 20, 0, 2026, 12, 6, 3, 40},
    {"0 0 1 * *", 2026, 12, 6, 0, 0, 0, 2027, 1, 1, 0, 0},      /* year rolls over */
    {"0 0 29 2 *", 2026, 3, 1, 0, 0, 0, 2028, 2, 29, 0, 0},     /* leap day */
    {"0 0 30 2 *", 2026, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0},         /* never */
    {"0 12 * * mon", 2026, 12, 6, 3, 0, 0, 2026, 12, 7, 12, 0},
    {"0 12 * * 7", 2026, 12, 6, 13, 0, 0, 2026, 12, 13, 12, 0}, /* 7 is Sunday too */
    {"0 12 * * SUN", 2026, 12, 6, 3, 0, 0, 2026, 12, 6, 12, 0},
    {"0 12 * * mon-fri", 2026, 12, 11, 13, 0, 0, 2026, 12, 14, 12, 0},
    {"0 0 * jan,jul *", 2026, 12, 6, 0, 0, 0, 2027, 1, 1, 0, 0},
    /* Vixie's OR: both day fields restricted -> the 13th or any Friday. */
    {"0 0 13 * 5", 2026, 12, 6, 0, 0, 0, 2026, 12, 11, 0, 0},
    {"0 0 13 * 5", 2026, 12, 11, 0, 0, 0, 2026, 12, 13, 0, 0},
    /* One day field is '*': AND (here: only the 13th). */
    {"0 0 13 * *", 2026, 12, 6, 0, 0, 0, 2026, 12, 13, 0, 0},
    {"0 0 */10 * 5", 2026, 12, 6, 0, 0, 0, 2026, 12, 11, 0, 0},
    {"59 23 31 12 *", 2026, 12, 31, 23, 59, 0, 2027, 12, 31, 23, 59},
    {"0 0 * * *", 1969, 12, 31, 12, 0, 0, 1970, 1, 1, 0, 0},
};

static void test_next_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct next_case *c = &cases[i];
        struct tr_cron cr;
        struct tr_error err;
        tr_error_init(&err);
        int rc = tr_cron_parse(c->expr, &cr, &err);
        if (rc != 0)
            fail_msg("case %zu '%s': %s", i, c->expr, err.msg);
        double after = utc(c->y, c->m, c->d, c->hh, c->mm) + c->sec;
        double want = c->ey ? utc(c->ey, c->em, c->ed, c->ehh, c->emm) : -1;
        double got = tr_cron_next(&cr, after);
        if (got != want)
            fail_msg("case %zu '%s': next %.0f, want %.0f", i, c->expr, got, want);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *",
        "* * * 13 *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "* * * foo *",
        "1,,2 * * * *", "1, * * * *", "* * * * mon-", "1-2-3 * * * *", "@daily",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tr_cron cr;
        struct tr_error err;
        tr_error_init(&err);
        int rc = tr_cron_parse(bad[i], &cr, &err);
        if (rc != TR_ECRON || err.msg[0] == '\0')
            fail_msg("'%s' was not refused with a message (rc %d)", bad[i], rc);
    }
    struct tr_cron cr;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_cron_parse("0 25 * * *", &cr, &err), TR_ECRON);
    assert_non_null(strstr(err.msg, "hour"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_table),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
