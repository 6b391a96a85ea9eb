/*
 * test_flags.c - lib/base/flags: every type and its bounds, defaults <
 * environment < command line, strict numbers, unknown flags with a
 * suggestion, repeatable lists, operands, and the generated --help.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "lib/base/flags.h"

struct opts
{
    char *name;
    uint32_t slots;
    long delta;
    double ratio;
    bool quiet;
    struct tr_flag_list label;
    int level;
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

static const char *check_kv(const char *v)
{
    const char *eq = strchr(v, '=');
    return eq == NULL || eq == v ? "not K=V" : NULL;
}

static const struct tr_flag table[] = {
    {"name", 'n', TR_FLAG_STR, .off = offsetof(struct opts, name), .dflt = "cpu", .arg = "NAME",
     .help = "a name"},
    {"slots", 0, TR_FLAG_UINT, .off = offsetof(struct opts, slots), .dflt = "16", .arg = "N",
     .min = 1, .max = 1000, .help = "tasks at once"},
    {"delta", 0, TR_FLAG_INT, .off = offsetof(struct opts, delta), .dflt = "0", .arg = "D",
     .min = -50, .max = 50, .help = "a signed number"},
    {"ratio", 0, TR_FLAG_DOUBLE, .off = offsetof(struct opts, ratio), .dflt = "0.5", .arg = "R",
     .dmin = 0, .dmax = 1, .help = "a fraction"},
    {"quiet", 'q', TR_FLAG_BOOL, .off = offsetof(struct opts, quiet), .help = "say less"},
    {"label", 'l', TR_FLAG_LIST, .off = offsetof(struct opts, label), .arg = "K=V",
     .max_items = 3, .check = check_kv, .help = "a label"},
    {"log-level", 0, TR_FLAG_ENUM, .off = offsetof(struct opts, level), .dflt = "info",
     .choices = levels, .help = "least level"},
    {"secret", 0, TR_FLAG_STR, .var = NULL, .off = offsetof(struct opts, name),
     .env = TR_FLAG_NO_ENV, .help = "no variable"},
};

static struct opts o;
static uint8_t source[TR_ARRAY_LEN(table)];
static struct tr_flags flags = {
    .prog = "prog",
    .sets = {{table, TR_ARRAY_LEN(table), &o, "TRELLIS_TEST_", source}},
};
static struct tr_error err;

static const char *const env_names[] = {
    "TRELLIS_TEST_NAME", "TRELLIS_TEST_SLOTS", "TRELLIS_TEST_DELTA", "TRELLIS_TEST_RATIO",
    "TRELLIS_TEST_QUIET", "TRELLIS_TEST_LABEL", "TRELLIS_TEST_LOG_LEVEL", "TRELLIS_TEST_SECRET",
};

static int reset(void **state)
{
    tr_flags_release(&flags);
    memset(&o, 0, sizeof(o));
    tr_error_init(&err);
    for (size_t i = 0; i < TR_ARRAY_LEN(env_names); i++)
        unsetenv(env_names[i]);
    return 0;
}

/* Parses a NULL-terminated list of arguments after "prog"; operands are refused. */
static int parse_v(const char *first, va_list ap)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    return tr_flags_parse(&flags, argc, argv, NULL, &err);
}

static int parse(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = parse_v(first, ap);
    va_end(ap);
    return rc;
}

static void test_defaults(void **state)
{
    assert_int_equal(parse(NULL), 0);
    assert_string_equal(o.name, "cpu");
    assert_int_equal(o.slots, 16);
    assert_int_equal(o.delta, 0);
    assert_true(o.ratio == 0.5);
    assert_false(o.quiet);
    assert_int_equal(o.label.n, 0);
    assert_int_equal(o.level, 1);
    assert_int_equal(source[1], TR_FLAG_FROM_DEFAULT);
}

static void test_types_and_forms(void **state)
{
    assert_int_equal(parse("--name", "gpu", "--slots=1000", "--delta", "-50", "--ratio=1e-1",
                           "-q", "--log-level", "error", NULL), 0);
    assert_string_equal(o.name, "gpu");
    assert_int_equal(o.slots, 1000);
    assert_int_equal(o.delta, -50);
    assert_true(o.ratio == 0.1);
    assert_true(o.quiet);
    assert_int_equal(o.level, 3);
    assert_int_equal(source[1], TR_FLAG_FROM_ARGV);
    /* -xVALUE, --bool=false, and the last of a repeated flag wins. */
    assert_int_equal(parse("-nx", "--quiet=false", "--slots", "2", "--slots", "3", NULL), 0);
    assert_string_equal(o.name, "x");
    assert_false(o.quiet);
    assert_int_equal(o.slots, 3);
}

static void test_bounds(void **state)
{
    assert_int_equal(parse("--slots", "0", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "out of range (from 1 to 1000)"));
    assert_int_equal(parse("--slots", "1001", NULL), TR_EINVAL);
    assert_int_equal(parse("--delta", "51", NULL), TR_EINVAL);
    assert_int_equal(parse("--delta", "-51", NULL), TR_EINVAL);
    assert_int_equal(parse("--ratio", "1.01", NULL), TR_EINVAL);
    assert_int_equal(parse("--log-level", "loud", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "not one of debug, info, warn, error"));
    assert_int_equal(parse("--quiet=maybe", NULL), TR_EINVAL);
    assert_int_equal(parse("--slots", "99999999999999999999999", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "out of range"));
}

static void test_strict_numbers(void **state)
{
    static const char *const bad[] = {"0x10", "12abc", " 12", "12 ", "+12", "", "-", "1.0",
                                      "1e3", "010x"};
    for (size_t i = 0; i < TR_ARRAY_LEN(bad); i++) {
        assert_int_equal(parse("--slots", bad[i], NULL), TR_EINVAL);
        assert_non_null(strstr(err.msg, "--slots"));
        assert_non_null(strstr(err.msg, "TRELLIS_TEST_SLOTS"));
    }
    assert_int_equal(parse("--slots", "0x10", NULL), TR_EINVAL);
    assert_string_equal(err.msg, "bad value '0x10' for --slots (or TRELLIS_TEST_SLOTS): not a "
                                 "decimal number (from 1 to 1000)");
    assert_int_equal(parse("--slots", "-1", NULL), TR_EINVAL); /* unsigned */
    assert_int_equal(parse("--ratio", "0x1p-2", NULL), TR_EINVAL);
    assert_int_equal(parse("--ratio", "nan", NULL), TR_EINVAL);
    assert_int_equal(parse("--ratio", "inf", NULL), TR_EINVAL);
    assert_int_equal(parse("--slots", "010", NULL), 0); /* decimal, not octal */
    assert_int_equal(o.slots, 10);

    long v;
    assert_int_equal(tr_parse_long("-9", -10, 10, &v), 0);
    assert_int_equal(v, -9);
    assert_int_equal(tr_parse_long("9223372036854775808", 0, 10, &v), TR_EINVAL);
    uint32_t u;
    assert_int_equal(tr_parse_u32("4294967295", 0, UINT32_MAX, &u), 0);
    assert_int_equal(u, UINT32_MAX);
    assert_int_equal(tr_parse_u32("4294967296", 0, UINT32_MAX, &u), TR_EINVAL);
}

static void test_env_then_argv(void **state)
{
    setenv("TRELLIS_TEST_SLOTS", "7", 1);
    setenv("TRELLIS_TEST_NAME", "", 1); /* empty counts as unset */
    setenv("TRELLIS_TEST_LOG_LEVEL", "warn", 1);
    setenv("TRELLIS_TEST_SECRET", "ignored", 1); /* the flag has no variable */
    assert_int_equal(parse(NULL), 0);
    assert_int_equal(o.slots, 7);
    assert_string_equal(o.name, "cpu");
    assert_int_equal(o.level, 2);
    assert_int_equal(source[1], TR_FLAG_FROM_ENV);
    assert_int_equal(parse("--slots", "9", NULL), 0);
    assert_int_equal(o.slots, 9);
    assert_int_equal(source[1], TR_FLAG_FROM_ARGV);
    assert_int_equal(o.level, 2);

    setenv("TRELLIS_TEST_SLOTS", "12abc", 1);
    assert_int_equal(parse("--slots", "9", NULL), TR_EINVAL); /* a bad variable is an error */
    assert_string_equal(err.msg, "bad value '12abc' in TRELLIS_TEST_SLOTS (the variable of "
                                 "--slots): not a decimal number (from 1 to 1000)");
}

static void test_lists(void **state)
{
    assert_int_equal(parse("-l", "a=1", "--label", "b=2,c", "--label=d=4", NULL), 0);
    assert_int_equal(o.label.n, 3);
    assert_string_equal(o.label.items[0], "a=1");
    assert_string_equal(o.label.items[1], "b=2,c"); /* one value per flag on the command line */
    assert_string_equal(o.label.items[2], "d=4");
    assert_int_equal(parse("-l", "a=1", "-l", "b=2", "-l", "c=3", "-l", "d=4", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "too many values (at most 3)"));
    assert_int_equal(parse("-l", "nokey", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "not K=V"));

    reset(state);
    setenv("TRELLIS_TEST_LABEL", "x=1,,y=2", 1);
    assert_int_equal(parse(NULL), 0);
    assert_int_equal(o.label.n, 2);
    assert_string_equal(o.label.items[1], "y=2");
    /* The command line replaces the variable's list. */
    assert_int_equal(parse("--label", "z=3", NULL), 0);
    assert_int_equal(o.label.n, 1);
    assert_string_equal(o.label.items[0], "z=3");
}

static void test_unknown_and_operands(void **state)
{
    assert_int_equal(parse("--slot", "3", NULL), TR_EINVAL);
    assert_string_equal(err.msg, "unknown flag '--slot'; did you mean --slots? (see prog --help)");
    assert_int_equal(parse("--lgo-level=info", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "did you mean --log-level?"));
    assert_int_equal(parse("--zzzzzz", NULL), TR_EINVAL);
    assert_null(strstr(err.msg, "did you mean"));
    /* Abbreviations are not accepted, not even unambiguous ones. */
    assert_int_equal(parse("--quie", NULL), TR_EINVAL);
    assert_int_equal(parse("-z", NULL), TR_EINVAL);
    assert_int_equal(parse("--slots", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "needs a value"));
    assert_int_equal(parse("stray", NULL), TR_EINVAL);
    assert_non_null(strstr(err.msg, "unexpected argument 'stray'"));
    assert_int_equal(parse("--help", NULL), TR_FLAGS_HELP);
    assert_int_equal(parse("-h", NULL), TR_FLAGS_HELP);

    char *argv[] = {"prog", "a", "--slots", "5", "b", "--", "--quiet", NULL};
    int n = -1;
    assert_int_equal(tr_flags_parse(&flags, 7, argv, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(argv[1], "a");
    assert_string_equal(argv[2], "b");
    assert_string_equal(argv[3], "--quiet");
    assert_false(o.quiet);
    assert_int_equal(o.slots, 5);

    /* A subcommand's line is left alone. */
    struct tr_flags stop = flags;
    stop.mode = TR_FLAGS_STOP_AT_OPERAND;
    char *argv2[] = {"prog", "-q", "run", "--slots", "zero", NULL};
    assert_int_equal(tr_flags_parse(&stop, 5, argv2, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(argv2[1], "run");
    assert_string_equal(argv2[2], "--slots");
    assert_true(o.quiet);
}

static void test_help_lists_variables(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tr_flags_help(&flags, f);
    fclose(f);
    assert_non_null(strstr(text, "  -n, --name NAME"));
    assert_non_null(strstr(text, "[TRELLIS_TEST_NAME=cpu]"));
    assert_non_null(strstr(text, "--slots N"));
    assert_non_null(strstr(text, "[TRELLIS_TEST_SLOTS=16]"));
    assert_non_null(strstr(text, "[TRELLIS_TEST_QUIET]"));
    assert_non_null(strstr(text, "[repeatable; TRELLIS_TEST_LABEL, comma-separated]"));
    assert_non_null(strstr(text, "--log-level debug|info|warn|error"));
    assert_null(strstr(text, "TRELLIS_TEST_SECRET"));
    assert_non_null(strstr(text, "--help"));
    /* One line per flag, and the help line. */
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, TR_ARRAY_LEN(table) + 1);
    free(text);
}

static void test_default_id(void **state)
{
    char *id = tr_default_id("w-");
    assert_non_null(id);
    assert_true(strncmp(id, "w-", 2) == 0);
    assert_true(strlen(id) <= TR_ID_MAX);
    char pid[32];
    snprintf(pid, sizeof(pid), "-%ld", (long)getpid());
    assert_string_equal(id + strlen(id) - strlen(pid), pid);
    tr_free(id);
    char prefix[TR_ID_MAX];
    memset(prefix, 'p', sizeof(prefix) - 1);
    prefix[sizeof(prefix) - 1] = '\0';
    assert_null(tr_default_id(prefix)); /* no room for the pid */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, reset),
        cmocka_unit_test_setup(test_types_and_forms, reset),
        cmocka_unit_test_setup(test_bounds, reset),
        cmocka_unit_test_setup(test_strict_numbers, reset),
        cmocka_unit_test_setup(test_env_then_argv, reset),
        cmocka_unit_test_setup(test_lists, reset),
        cmocka_unit_test_setup(test_unknown_and_operands, reset),
        cmocka_unit_test_setup(test_help_lists_variables, reset),
        cmocka_unit_test_setup(test_default_id, reset),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    reset(NULL);
    return rc;
}
