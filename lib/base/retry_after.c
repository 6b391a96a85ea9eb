/*
 * retry_after.c - Retry-After values: delta-seconds or IMF-fixdate.
 *
 * The date is converted by hand (days from civil date) rather than with
 * timegm or strptime, whose behaviour depends on the locale and the TZ.
 */
#include "lib/base/retry_after.h"

#include <string.h>

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Reads exactly `digits` decimal digits at *p. */
static bool read_num(const char **p, const char *end, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (*p >= end || **p < '0' || **p > '9')
            return false;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return true;
}

static bool expect(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long days_from_civil(long y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool parse_date(const char *p, const char *end, double *epoch)
{
    static const char *const wdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    bool wday_ok = false;
    for (size_t i = 0; i < TR_ARRAY_LEN(wdays) && !wday_ok; i++)
        wday_ok = expect(&p, end, wdays[i]);
    int day, year, hh, mm, ss, mon = -1;
    if (!wday_ok || !expect(&p, end, ", ") || !read_num(&p, end, 2, &day) ||
        !expect(&p, end, " "))
        return false;
    for (int i = 0; i < 12 && mon < 0; i++) {
        if (expect(&p, end, months[i]))
            mon = i + 1;
    }
    if (mon < 0 || !expect(&p, end, " ") || !read_num(&p, end, 4, &year) ||
        !expect(&p, end, " ") || !read_num(&p, end, 2, &hh) || !expect(&p, end, ":") ||
        !read_num(&p, end, 2, &mm) || !expect(&p, end, ":") || !read_num(&p, end, 2, &ss) ||
        !expect(&p, end, " GMT") || p != end)
        return false;
    if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return false;
    *epoch = (double)days_from_civil(year, mon, day) * 86400.0 + hh * 3600.0 + mm * 60.0 + ss;
    return true;
}

int tr_retry_after_parse(const char *s, size_t n, double now, double *wait)
{
    const char *p = s, *end = s + n;
    while (p < end && blank(*p))
        p++;
    while (end > p && blank(end[-1]))
        end--;
    if (p == end)
        return TR_EINVAL;
    double w;
    if (*p >= '0' && *p <= '9') {
        w = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return TR_EINVAL;
            if (w < TR_RETRY_AFTER_MAX_S)
                w = w * 10 + (*p - '0');
        }
    } else {
        double at;
        if (!parse_date(p, end, &at))
            return TR_EINVAL;
        w = at - now;
        if (w < 0)
            w = 0;
    }
    *wait = w > TR_RETRY_AFTER_MAX_S ? TR_RETRY_AFTER_MAX_S : w;
    return 0;
}
