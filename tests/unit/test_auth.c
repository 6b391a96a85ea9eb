/*
 * test_auth.c - the token file (scheduler/auth.c): roles, tenants and names
 * parsed, refusals with the line, lookups by whole token only, reloads that
 * keep the tokens in force when the file is bad, the role order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/auth.h"

static char path[64];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/trellis-auth-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static struct auth *open_ok(uv_loop_t *loop)
{
    struct auth *au = NULL;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(auth_open(loop, path, &au, &err), 0);
    assert_non_null(au);
    return au;
}

static void close_auth(uv_loop_t *loop, struct auth *au)
{
    auth_close(au);
    uv_run(loop, UV_RUN_DEFAULT);
}

static const struct auth_principal *find(struct auth *au, const char *tok)
{
    return auth_lookup(au, tok, strlen(tok));
}

static void test_fields(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    write_file("# tokens\n"
               "  bare-token\n"
               "\n"
               "v-tok viewer research name=dash\n"
               "s-tok submitter\n"
               "o-tok\toperator\tteam_2\n");
    struct auth *au = open_ok(&loop);
    assert_true(auth_enabled(au));
    const struct auth_principal *p = find(au, "bare-token");
    assert_non_null(p);
    assert_int_equal(p->role, AUTH_ADMIN);
    assert_string_equal(p->tenant, "default");
    assert_string_equal(p->name, "line-2");
    p = find(au, "v-tok");
    assert_non_null(p);
    assert_int_equal(p->role, AUTH_VIEWER);
    assert_string_equal(p->tenant, "research");
    assert_string_equal(p->name, "dash");
    p = find(au, "s-tok");
    assert_int_equal(p->role, AUTH_SUBMITTER);
    assert_string_equal(p->tenant, "default");
    p = find(au, "o-tok");
    assert_int_equal(p->role, AUTH_OPERATOR);
    assert_string_equal(p->tenant, "team_2");
    /* Whole tokens only: no prefix, no extension, no empty token. */
    assert_null(find(au, "v-to"));
    assert_null(find(au, "v-tok "));
    assert_null(find(au, "v-tok viewer"));
    assert_null(auth_lookup(au, "", 0));
    close_auth(&loop, au);
    uv_loop_close(&loop);
}

static void refused(const char *text, const char *needle)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    write_file(text);
    struct auth *au = NULL;
    struct tr_error err;
    tr_error_init(&err);
    assert_true(auth_open(&loop, path, &au, &err) < 0);
    assert_null(au);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, err.msg);
    uv_loop_close(&loop);
}

static void test_refusals(void **state)
{
    (void)state;
    refused("a\nb chief\n", "line 2: unknown role 'chief'");
    refused("a viewer Research\n", "line 1: bad tenant");
    refused("a viewer -x\n", "line 1: bad tenant");
    refused("a viewer x y\n", "line 1: unexpected field 'y'");
    refused("a name=one name=two\n", "line 1: a bad or repeated name=");
    refused("a\n# c\na viewer\n", "line 3: the same token");
    refused("# only comments\n\n", "holds no token");
    char long_line[5000];
    memset(long_line, 'x', sizeof(long_line) - 2);
    long_line[sizeof(long_line) - 2] = '\n';
    long_line[sizeof(long_line) - 1] = '\0';
    refused(long_line, "line 1: longer than");
}

static void test_reload(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    write_file("old-tok viewer a\n");
    struct auth *au = open_ok(&loop);
    const struct auth_principal *held = find(au, "old-tok");
    assert_non_null(held);
    write_file("new-tok operator b\n");
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(auth_reload(au, &err), 0);
    assert_null(find(au, "old-tok"));
    assert_non_null(find(au, "new-tok"));
    /* A principal a held request points at stays readable until close. */
    assert_string_equal(held->tenant, "a");
    write_file("new-tok\nbad-tok root\n");
    assert_true(auth_reload(au, &err) < 0);
    assert_non_null(strstr(err.msg, "line 2"));
    const struct auth_principal *p = find(au, "new-tok");
    assert_non_null(p);
    assert_int_equal(p->role, AUTH_OPERATOR); /* the set in force stayed */
    close_auth(&loop, au);
    uv_loop_close(&loop);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(auth_tenant_valid("default"));
    assert_true(auth_tenant_valid("a-b_9"));
    assert_false(auth_tenant_valid(""));
    assert_false(auth_tenant_valid("_a"));
    assert_false(auth_tenant_valid("a/b"));
    char big[AUTH_TENANT_MAX + 1];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(auth_tenant_valid(big));
    assert_string_equal(auth_role_name(AUTH_VIEWER), "viewer");
    assert_string_equal(auth_role_name(AUTH_ADMIN), "admin");
    assert_true(AUTH_VIEWER < AUTH_SUBMITTER && AUTH_SUBMITTER < AUTH_OPERATOR &&
                AUTH_OPERATOR < AUTH_ADMIN);
}

static void test_no_file(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct auth *au = NULL;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(auth_open(&loop, NULL, &au, &err), 0);
    assert_false(auth_enabled(au));
    assert_null(find(au, "anything"));
    assert_null(auth_task_principal(au, "research"));
    close_auth(&loop, au);
    uv_loop_close(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_no_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
