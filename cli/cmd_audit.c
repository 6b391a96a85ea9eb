/*
 * cmd_audit.c - `trellis audit [--since T] [--limit N] [--tenant T]`: the
 * audit log, oldest first (GET /v1/audit; admin tokens only).
 */
#include "cli/cli.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"

struct audit_opts
{
    char *since;  /* --since */
    char *limit;  /* --limit */
    char *tenant; /* --tenant */
};

static const struct tr_flag audit_flags[] = {
    {"since", 0, TR_FLAG_STR, .off = offsetof(struct audit_opts, since), .arg = "T",
     .help = "entries after T (seconds since 1970, or RFC 3339 UTC)"},
    {"limit", 0, TR_FLAG_STR, .off = offsetof(struct audit_opts, limit), .arg = "N",
     .help = "at most N entries (default 100, at most 1000)"},
    {"tenant", 0, TR_FLAG_STR, .off = offsetof(struct audit_opts, tenant), .arg = "T",
     .help = "only tenant T's entries (the default tenant's admin sees every tenant's)"},
};

/* Appends "&k=v" (v percent-encoded by tr_cli_path) to the query in b. */
static int add_param(struct tr_buf *b, const char *k, const char *v)
{
    if (v == NULL)
        return 0;
    char *enc = tr_cli_path("", v, "");
    if (enc == NULL)
        return TR_ENOMEM;
    int rc = tr_buf_addf(b, "%s%s=%s", b->len ? "&" : "?", k, enc);
    tr_free(enc);
    return rc;
}

static int print_entries(json_t *ans)
{
    static const char *const hdr[] = {"AT", "TENANT", "TOKEN", "ACTION", "OBJECT"};
    static const char *const keys[] = {"at", "tenant", "token", "action", "object"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ans, "entries"), i, e)
    {
        const char *row[TR_ARRAY_LEN(keys)];
        for (size_t c = 0; c < TR_ARRAY_LEN(keys); c++)
            row[c] = tr_cli_str(json_object_get(e, keys[c]), "-");
        if (t != NULL && tr_table_add(t, row) < 0) {
            tr_table_free(t);
            t = NULL;
        }
    }
    if (t == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    if (tr_table_rows(t) == 0)
        fprintf(stderr, "no audit entries\n");
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

int tr_cmd_audit(struct tr_cli *cli, int argc, char **argv)
{
    struct audit_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, audit_flags, TR_ARRAY_LEN(audit_flags), &o, 0, 0,
                            "", &json_out);
    if (code >= 0)
        goto out;
    struct tr_buf q;
    tr_buf_init(&q, 4096);
    int rc = add_param(&q, "since", o.since);
    if (rc == 0)
        rc = add_param(&q, "limit", o.limit);
    if (rc == 0)
        rc = add_param(&q, "tenant", o.tenant);
    char *path = rc == 0 ? tr_cli_path("/v1/audit", "", q.len ? q.buf : "") : NULL;
    tr_buf_release(&q);
    if (path == NULL) {
        tr_cli_error("out of memory");
        code = TR_EXIT_FAILED;
        goto out;
    }
    json_t *ans = NULL;
    code = tr_cli_call(cli, "GET", path, NULL, &ans, NULL);
    tr_free(path);
    if (code == 0) {
        code = json_out ? tr_cli_print_raw(ans) : print_entries(ans);
        json_decref(ans);
    }
out:
    tr_cli_flags_release(audit_flags, TR_ARRAY_LEN(audit_flags), &o);
    return code;
}
