/*
 * cmd_budgets.c - `trellis budgets`: the tenants' LLM budgets, what they
 * spent and reserved, and the calls held for an operator's approval
 * (GET /v1/budgets); `trellis budgets set TENANT [--cost X] [--tokens N]
 * [--period day|month|total]` sets one (PUT /v1/budgets/{tenant}; admins).
 * docs/budgets.md.
 */
#include "cli/cli.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base/alloc.h"

struct budgets_opts
{
    char *cost, *tokens, *period;
};

#define BO(field) .off = offsetof(struct budgets_opts, field)

static const struct tr_flag budgets_flags[] = {
    {"cost", 0, TR_FLAG_STR, BO(cost), .arg = "X",
     .help = "set: the cost limit in USD (absent: no limit)"},
    {"tokens", 0, TR_FLAG_STR, BO(tokens), .arg = "N",
     .help = "set: the token limit, prompt plus completion (absent: no limit)"},
    {"period", 0, TR_FLAG_STR, BO(period), .arg = "P",
     .help = "set: day, month (UTC) or total (the default: never resets)"},
};

/* A number of the command line into o[key]: false when it is not one >= 0. */
static bool put_limit(json_t *o, const char *key, const char *s)
{
    if (s == NULL)
        return true;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v) || v < 0)
        return false;
    json_object_set_new(o, key, json_real(v));
    return true;
}

static void fmt_num(const json_t *v, char *out, size_t n)
{
    if (json_is_number(v))
        snprintf(out, n, "%.6g", json_number_value(v));
    else
        snprintf(out, n, "-");
}

static int print_budgets(json_t *ans)
{
    static const char *const hdr[] = {"TENANT", "PERIOD", "COST", "TOKENS", "SPENT_COST",
                                      "SPENT_TOKENS", "RESERVED_COST", "REFUSED"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ans, "budgets"), i, e)
    {
        char c[6][32];
        json_t *spent = json_object_get(e, "spent"), *res = json_object_get(e, "reserved");
        fmt_num(json_object_get(e, "cost"), c[0], sizeof(c[0]));
        fmt_num(json_object_get(e, "tokens"), c[1], sizeof(c[1]));
        fmt_num(json_object_get(spent, "cost"), c[2], sizeof(c[2]));
        fmt_num(json_object_get(spent, "tokens"), c[3], sizeof(c[3]));
        fmt_num(json_object_get(res, "cost"), c[4], sizeof(c[4]));
        fmt_num(json_object_get(e, "refused"), c[5], sizeof(c[5]));
        const char *row[] = {tr_cli_str(json_object_get(e, "tenant"), "-"),
                             tr_cli_str(json_object_get(e, "period"), "-"),
                             c[0], c[1], c[2], c[3], c[4], c[5]};
        if (t != NULL && tr_table_add(t, row) < 0) {
            tr_table_free(t);
            t = NULL;
        }
    }
    static const char *const phdr[] = {"RUN", "TASK", "COST", "TOKENS", "REASON"};
    struct tr_table *p = tr_table_new(TR_ARRAY_LEN(phdr), phdr);
    json_array_foreach(json_object_get(ans, "pending"), i, e)
    {
        char c[2][32];
        fmt_num(json_object_get(e, "cost"), c[0], sizeof(c[0]));
        fmt_num(json_object_get(e, "tokens"), c[1], sizeof(c[1]));
        const char *row[] = {tr_cli_str(json_object_get(e, "run_id"), "-"),
                             tr_cli_str(json_object_get(e, "task"), "-"), c[0], c[1],
                             tr_cli_str(json_object_get(e, "reason"), "-")};
        if (p != NULL && tr_table_add(p, row) < 0) {
            tr_table_free(p);
            p = NULL;
        }
    }
    int code = TR_EXIT_OK;
    if (t == NULL || p == NULL) {
        tr_cli_error("out of memory");
        code = TR_EXIT_FAILED;
    } else {
        if (tr_table_rows(t) == 0)
            fprintf(stderr, "no budgets\n");
        else
            tr_table_print(t, stdout);
        if (tr_table_rows(p) > 0) {
            printf("\nLLM calls waiting for an approval (trellis approve RUN TASK [--reject]):\n");
            tr_table_print(p, stdout);
        }
    }
    tr_table_free(t);
    tr_table_free(p);
    return code;
}

static int budgets_set(struct tr_cli *cli, const struct budgets_opts *o, const char *tenant,
                       bool json_out)
{
    json_t *body = json_object();
    if (body == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    if (!put_limit(body, "cost", o->cost) || !put_limit(body, "tokens", o->tokens)) {
        json_decref(body);
        return tr_cli_usage_error(cli, "--cost and --tokens take a number >= 0");
    }
    if (o->period != NULL)
        json_object_set_new(body, "period", json_string(o->period));
    char *path = tr_cli_path("/v1/budgets/", tenant, "");
    char context[200];
    snprintf(context, sizeof(context), "cannot set the budget of '%.100s'", tenant);
    json_t *ans = NULL;
    int code = path != NULL ? tr_cli_call(cli, "PUT", path, body, &ans, context) : TR_EXIT_FAILED;
    tr_free(path);
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
    } else {
        char c[2][32];
        fmt_num(json_object_get(ans, "cost"), c[0], sizeof(c[0]));
        fmt_num(json_object_get(ans, "tokens"), c[1], sizeof(c[1]));
        printf("budget of %s: cost %s, tokens %s, period %s\n", tenant, c[0], c[1],
               tr_cli_str(json_object_get(ans, "period"), "-"));
    }
    json_decref(ans);
    return code;
}

int tr_cmd_budgets(struct tr_cli *cli, int argc, char **argv)
{
    struct budgets_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, budgets_flags, TR_ARRAY_LEN(budgets_flags), &o, 0,
                            2, "[list | set TENANT]", &json_out);
    if (code >= 0)
        goto out;
    int n = cli->n_args;
    if (n >= 1 && strcmp(argv[1], "set") == 0) {
        code = n == 2 ? budgets_set(cli, &o, argv[2], json_out)
                      : tr_cli_usage_error(cli, "budgets set needs a TENANT");
    } else if (n == 0 || (n == 1 && strcmp(argv[1], "list") == 0)) {
        if (o.cost != NULL || o.tokens != NULL || o.period != NULL) {
            code = tr_cli_usage_error(cli, "--cost, --tokens and --period go with 'set'");
            goto out;
        }
        json_t *ans = NULL;
        code = tr_cli_call(cli, "GET", "/v1/budgets", NULL, &ans, NULL);
        if (code == 0) {
            code = json_out ? tr_cli_print_raw(ans) : print_budgets(ans);
            json_decref(ans);
        }
    } else {
        code = tr_cli_usage_error(cli, "unknown budgets command '%s' (list, set)", argv[1]);
    }
out:
    tr_cli_flags_release(budgets_flags, TR_ARRAY_LEN(budgets_flags), &o);
    return code;
}
