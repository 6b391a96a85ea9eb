/*
 * test_sse.c - server-sent events split at every byte, line ends, comments,
 * multi-line data, limits; Retry-After as seconds and as an HTTP date.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/retry_after.h"
#include "worker/sse.h"

/* Fixture: the events seen, as "event|data\n" lines. */
struct seen
{
    struct tr_buf out;
    int n;
};

static int on_event(void *arg, struct tr_str event, struct tr_str data)
{
    struct seen *s = arg;
    s->n++;
    if (tr_buf_add(&s->out, event.p, event.len) < 0 || tr_buf_addch(&s->out, '|') < 0 ||
        tr_buf_add(&s->out, data.p, data.len) < 0 || tr_buf_addch(&s->out, '\n') < 0)
        return TR_ENOMEM;
    return 0;
}

/* Feeds text in pieces of `step` bytes and returns what was seen (caller frees). */
static char *parse_in_steps(const char *text, size_t step, int *n)
{
    struct seen s = {.n = 0};
    tr_buf_init(&s.out, 0);
    struct tr_sse p;
    tr_sse_init(&p, 1 << 20, on_event, &s);
    size_t len = strlen(text);
    for (size_t i = 0; i < len; i += step)
        assert_int_equal(tr_sse_feed(&p, text + i, len - i < step ? len - i : step), 0);
    tr_sse_release(&p);
    *n = s.n;
    size_t l;
    char *r = tr_buf_detach(&s.out, &l);
    assert_non_null(r);
    return r;
}

static const char *const OPENAI_STREAM =
    "data: {\"a\":1}\n\n"
    ": keep-alive comment\n\n"
    "data: {\"b\":2}\r\n\r\n"
    "event: delta\rdata: x\rdata:y\r\r"
    "data: [DONE]\n\n"
    "data: unfinished";

static void test_every_split(void **state)
{
    (void)state;
    for (size_t step = 1; step <= strlen(OPENAI_STREAM); step++) {
        int n;
        char *got = parse_in_steps(OPENAI_STREAM, step, &n);
        assert_int_equal(n, 4);
        assert_string_equal(got, "message|{\"a\":1}\nmessage|{\"b\":2}\ndelta|x\ny\n"
                                 "message|[DONE]\n");
        tr_free(got);
    }
}

static void test_crlf_split_between_feeds(void **state)
{
    (void)state;
    struct seen s = {.n = 0};
    tr_buf_init(&s.out, 0);
    struct tr_sse p;
    tr_sse_init(&p, 0, on_event, &s);
    /* CR ends a feed, LF starts the next: one line end, not an empty line. */
    assert_int_equal(tr_sse_feed(&p, "data: a\r", 8), 0);
    assert_int_equal(tr_sse_feed(&p, "\ndata: b\r", 9), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(tr_sse_feed(&p, "\n\r\n", 3), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.out.buf, "message|a\nb\n");
    tr_sse_release(&p);
    tr_buf_release(&s.out);
}

static void test_fields_without_data_are_not_dispatched(void **state)
{
    (void)state;
    int n;
    char *got = parse_in_steps("event: ping\n\nid: 3\nretry: 10\n\ndata\n\n", 3, &n);
    /* "data" alone is a data line with an empty value. */
    assert_int_equal(n, 1);
    assert_string_equal(got, "message|\n");
    tr_free(got);
}

static int stop_at_second(void *arg, struct tr_str event, struct tr_str data)
{
    int *n = arg;
    return ++*n == 2 ? TR_ECANCELED : 0;
}

static void test_limits_and_stop(void **state)
{
    (void)state;
    struct tr_sse p;
    int n = 0;
    tr_sse_init(&p, 16, stop_at_second, &n);
    assert_int_equal(tr_sse_feed(&p, "data: 0123456789abcdefXYZ", 25), TR_E2BIG);
    tr_sse_release(&p);
    tr_sse_init(&p, 0, stop_at_second, &n);
    assert_int_equal(tr_sse_feed(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27), TR_ECANCELED);
    assert_int_equal(n, 2);
    tr_sse_release(&p);
}

static void test_retry_after_seconds(void **state)
{
    (void)state;
    double w = -1;
    assert_int_equal(tr_retry_after_parse(" 120 ", 5, 0, &w), 0);
    assert_true(w == 120.0);
    assert_int_equal(tr_retry_after_parse("0", 1, 0, &w), 0);
    assert_true(w == 0.0);
    assert_int_equal(tr_retry_after_parse("99999999999999999999", 20, 0, &w), 0);
    assert_true(w == TR_RETRY_AFTER_MAX_S);
    assert_int_equal(tr_retry_after_parse("1.5", 3, 0, &w), TR_EINVAL);
    assert_int_equal(tr_retry_after_parse("-1", 2, 0, &w), TR_EINVAL);
    assert_int_equal(tr_retry_after_parse("  ", 2, 0, &w), TR_EINVAL);
}

static void test_retry_after_date(void **state)
{
    (void)state;
    /* 784111777 is Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example). */
    const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";
    double w = -1;
    assert_int_equal(tr_retry_after_parse(d, strlen(d), 784111777.0 - 30, &w), 0);
    assert_true(w == 30.0);
    assert_int_equal(tr_retry_after_parse(d, strlen(d), 784111777.0 + 5, &w), 0);
    assert_true(w == 0.0); /* in the past: retry at once */
    const char *leap = "Thu, 29 Feb 2024 00:00:00 GMT"; /* 1709164800 */
    assert_int_equal(tr_retry_after_parse(leap, strlen(leap), 1709164800.0 - 2, &w), 0);
    assert_true(w == 2.0);
    const char *bad[] = {"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
                         "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT"};
    for (size_t i = 0; i < TR_ARRAY_LEN(bad); i++)
        assert_int_equal(tr_retry_after_parse(bad[i], strlen(bad[i]), 0, &w), TR_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_crlf_split_between_feeds),
        cmocka_unit_test(test_fields_without_data_are_not_dispatched),
        cmocka_unit_test(test_limits_and_stop),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
