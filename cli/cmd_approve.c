/*
 * cmd_approve.c - trellis approve RUN TASK [--reject] [--comment TEXT]: the
 * decision an approval task (trellis.approval) waits for.
 */
#include <stddef.h>
#include <stdio.h>

#include "lib/base/alloc.h"
#include "cli/cli.h"

struct approve_opts
{
    bool reject;
    char *comment;
};

#define AP(field) .off = offsetof(struct approve_opts, field)

static const struct tr_flag approve_flags[] = {
    {"reject", 0, TR_FLAG_BOOL, AP(reject), .help = "reject instead of approving"},
    {"comment", 0, TR_FLAG_STR, AP(comment), .arg = "TEXT",
     .help = "why (at most 4096 bytes); downstream tasks see it"},
};

static int approve_send(struct tr_cli *cli, const struct approve_opts *o, const char *run_id,
                        const char *task, bool json_out)
{
    char *p1 = tr_cli_path("/v1/runs/", run_id, "/approvals/");
    char *path = p1 ? tr_cli_path(p1, task, "") : NULL;
    tr_free(p1);
    json_t *body = json_object();
    if (path == NULL || body == NULL) {
        tr_free(path);
        json_decref(body);
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    json_object_set_new(body, "decision", json_string(o->reject ? "reject" : "approve"));
    if (o->comment != NULL)
        json_object_set_new(body, "comment", json_string(o->comment));
    char context[400];
    snprintf(context, sizeof(context), "cannot decide task '%.150s' of run '%.150s'", task,
             run_id);
    json_t *ans;
    int code = tr_cli_call(cli, "POST", path, body, &ans, context);
    tr_free(path);
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else
        printf("%s task %s of run %s\n", o->reject ? "rejected" : "approved", task, run_id);
    json_decref(ans);
    return code;
}

int tr_cmd_approve(struct tr_cli *cli, int argc, char **argv)
{
    struct approve_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, approve_flags, TR_ARRAY_LEN(approve_flags), &o, 2,
                            2, "RUN TASK", &json_out);
    if (code < 0)
        code = approve_send(cli, &o, argv[1], argv[2], json_out);
    tr_cli_flags_release(approve_flags, TR_ARRAY_LEN(approve_flags), &o);
    return code;
}
