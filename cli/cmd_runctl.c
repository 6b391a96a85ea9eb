/*
 * cmd_runctl.c - `trellis retry RUN` and `trellis delete RUN` (docs/cli.md).
 */
#include <stdio.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"

/* POST or DELETE /v1/runs/RUN[suffix]; prints what `done` says, or the raw answer. */
static int run_call(struct tr_cli *cli, int argc, char **argv, const char *method,
                    const char *suffix, const char *what)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "RUN", &json_out);
    if (code >= 0)
        return code;
    const char *run_id = argv[1];
    char *path = tr_cli_path("/v1/runs/", run_id, suffix);
    if (path == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    char context[256];
    snprintf(context, sizeof(context), "cannot %s run '%s'", what, run_id);
    json_t *ans;
    code = tr_cli_call(cli, method, path, NULL, &ans, context);
    tr_free(path);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else if (strcmp(what, "retry") == 0)
        printf("%s\n", tr_cli_str(json_object_get(ans, "run_id"), "?"));
    else
        printf("deleted run %s\n", run_id);
    json_decref(ans);
    return code;
}

int tr_cmd_retry(struct tr_cli *cli, int argc, char **argv)
{
    return run_call(cli, argc, argv, "POST", "/retry", "retry");
}

int tr_cmd_delete(struct tr_cli *cli, int argc, char **argv)
{
    return run_call(cli, argc, argv, "DELETE", "", "delete");
}
