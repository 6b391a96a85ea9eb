/*
 * cmd_triggers.c - `trellis triggers`: the declared triggers with their
 * state, and `trellis triggers firings PIPELINE TRIGGER`: what fired when
 * (GET /v1/triggers, GET /v1/triggers/{pipeline}/{trigger}/firings).
 */
#include "cli/cli.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define CELL 96

static void cell_str(char *out, const json_t *v)
{
    if (json_is_string(v))
        snprintf(out, CELL, "%s", json_string_value(v));
    else if (v == NULL || json_is_null(v))
        snprintf(out, CELL, "-");
    else if (json_is_integer(v))
        snprintf(out, CELL, "%lld", (long long)json_integer_value(v));
    else if (json_is_number(v))
        snprintf(out, CELL, "%g", json_number_value(v));
    else if (json_is_boolean(v))
        snprintf(out, CELL, "%s", json_is_true(v) ? "true" : "false");
    else {
        char *t = json_dumps(v, JSON_COMPACT);
        snprintf(out, CELL, "%s", t ? t : "?");
        free(t);
    }
}

static int print_rows(json_t *ans, const char *key, const char *const *hdr, size_t ncols,
                      const char *const *fields, const char *empty)
{
    struct tr_table *t = tr_table_new(ncols, hdr);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(ans, key), i, item)
    {
        char cells[10][CELL];
        const char *row[10];
        for (size_t c = 0; c < ncols; c++) {
            if (strcmp(fields[c], "pipeline/name") == 0)
                snprintf(cells[c], CELL, "%s/%s",
                         tr_cli_str(json_object_get(item, "pipeline"), "?"),
                         tr_cli_str(json_object_get(item, "name"), "?"));
            else if (strcmp(fields[c], "when") == 0)
                snprintf(cells[c], CELL, "%s",
                         json_is_string(json_object_get(item, "cron"))
                             ? json_string_value(json_object_get(item, "cron"))
                             : tr_cli_str(json_object_get(item, "on"), "?"));
            else
                cell_str(cells[c], json_object_get(item, fields[c]));
            row[c] = cells[c];
        }
        if (t != NULL && tr_table_add(t, row) < 0) {
            tr_table_free(t);
            t = NULL;
        }
    }
    json_decref(ans);
    if (t == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    if (tr_table_rows(t) == 0)
        fprintf(stderr, "%s\n", empty);
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    /* A disabled trigger's error is printed in full under the table. */
    return TR_EXIT_OK;
}

static int list_firings(struct tr_cli *cli, const char *pipeline, const char *trigger,
                        bool json_out)
{
    char *p1 = tr_cli_path("/v1/triggers/", pipeline, "/");
    char *path = p1 ? tr_cli_path(p1, trigger, "/firings") : NULL;
    tr_free(p1);
    if (path == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    json_t *ans = NULL;
    int code = tr_cli_call(cli, "GET", path, NULL, &ans, NULL);
    tr_free(path);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    /* The statistics that caused each firing, as compact JSON in the last column. */
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(ans, "firings"), i, f)
    {
        char *stats = json_dumps(json_object_get(f, "stats"), JSON_COMPACT | JSON_ENCODE_ANY);
        printf("%s  %s  %s\n", tr_cli_str(json_object_get(f, "fired_at"), "-"),
               tr_cli_str(json_object_get(f, "run_id"), "-"), stats ? stats : "null");
        free(stats);
    }
    if (json_array_size(json_object_get(ans, "firings")) == 0)
        fprintf(stderr, "it has not fired yet\n");
    json_decref(ans);
    return TR_EXIT_OK;
}

struct triggers_opts
{
    char *pipeline; /* --pipeline */
};

static const struct tr_flag triggers_flags[] = {
    {"pipeline", 0, TR_FLAG_STR, .off = offsetof(struct triggers_opts, pipeline), .arg = "P",
     .help = "only the triggers of pipeline P"},
};

static int list_triggers(struct tr_cli *cli, const char *pipeline, bool json_out);

int tr_cmd_triggers(struct tr_cli *cli, int argc, char **argv)
{
    struct triggers_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, triggers_flags, TR_ARRAY_LEN(triggers_flags), &o,
                            0, 3, "", &json_out);
    if (code < 0) {
        if (cli->n_args > 0 && strcmp(argv[1], "firings") == 0) {
            if (cli->n_args != 3)
                code = tr_cli_usage_error(cli, "firings wants PIPELINE TRIGGER");
            else
                code = list_firings(cli, argv[2], argv[3], json_out);
        } else if (cli->n_args > 0) {
            code = tr_cli_usage_error(cli, "unexpected '%s'", argv[1]);
        } else {
            code = list_triggers(cli, o.pipeline, json_out);
        }
    }
    tr_cli_flags_release(triggers_flags, TR_ARRAY_LEN(triggers_flags), &o);
    return code;
}

static int list_triggers(struct tr_cli *cli, const char *pipeline, bool json_out)
{
    char *path = pipeline ? tr_cli_path("/v1/triggers?pipeline=", pipeline, "")
                          : tr_strdup("/v1/triggers");
    if (path == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    json_t *ans = NULL;
    int code = tr_cli_call(cli, "GET", path, NULL, &ans, NULL);
    tr_free(path);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    /* Errors of disabled triggers, after the table. */
    json_t *errs = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(ans, "triggers"), i, t)
    {
        if (json_is_string(json_object_get(t, "error")))
            json_array_append(errs, t);
    }
    static const char *const hdr[] = {"TRIGGER", "ON", "RUN", "STATE", "FIRINGS", "LAST FIRED",
                                      "LAST RUN", "NEXT"};
    static const char *const fields[] = {"pipeline/name", "when", "run", "state", "firings",
                                         "last_fired_at", "last_run_id", "next_fire_at"};
    code = print_rows(ans, "triggers", hdr, TR_ARRAY_LEN(hdr), fields,
                      "no triggers are declared");
    json_array_foreach(errs, i, t)
    {
        printf("%s/%s: %s\n", tr_cli_str(json_object_get(t, "pipeline"), "?"),
               tr_cli_str(json_object_get(t, "name"), "?"),
               tr_cli_str(json_object_get(t, "error"), "?"));
    }
    json_decref(errs);
    return code;
}
