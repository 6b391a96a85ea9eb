/*
 * cmd_inspect.c - the commands that list and inspect: tasks, logs, runs,
 * workers, pipelines, and register.
 *
 * Each is one API call and a table; with --json the answer is printed as it
 * came, for scripts.
 */
#include "cli/cli.h"
#include "lib/alloc.h"
#include "lib/buf.h"

#define ERROR_COLUMN_MAX 60

/* ====================================================================== */
/* {=== trellis tasks and logs */

static void first_line(const char *s, char *out, size_t n, size_t max)
{
    size_t i = 0, cps = 0;
    while (s[i] != '\0' && s[i] != '\n' && i + 4 < n) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cps == max)
                break;
            cps++;
        }
        i++;
    }
    /* Never end inside a UTF-8 sequence. */
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    bool cut = s[i] != '\0';
    snprintf(out, n, "%.*s%s", (int)i, s, cut ? "..." : "");
}

int tr_cmd_tasks(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "RUN", &json_out);
    if (code >= 0)
        return code;
    json_t *ans;
    code = tr_cli_get_one(cli, "/v1/runs/", argv[optind], "/tasks", &ans);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    static const char *const hdr[] = {"NAME",     "INDEX", "STATE", "ATTEMPTS", "WORKER",
                                      "DURATION", "COST",  "ERROR"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *task;
    json_array_foreach(json_object_get(ans, "tasks"), i, task)
    {
        if (t == NULL)
            break;
        char index[24] = "-", attempts[24], state[64], dur[32], err[ERROR_COLUMN_MAX * 4 + 8] = "";
        long long idx = json_integer_value(json_object_get(task, "index"));
        if (idx > 0)
            snprintf(index, sizeof(index), "%lld", idx);
        snprintf(attempts, sizeof(attempts), "%lld",
                 json_integer_value(json_object_get(task, "attempts")));
        snprintf(state, sizeof(state), "%s%s",
                 tr_cli_str(json_object_get(task, "state"), "?"),
                 json_is_true(json_object_get(task, "cached")) ? " (cached)" : "");
        const json_t *started = json_object_get(task, "started_at");
        const json_t *finished = json_object_get(task, "finished_at");
        double s;
        if (json_is_string(finished) || !tr_cli_parse_time(json_string_value(started), &s))
            tr_cli_fmt_between(started, finished, dur, sizeof(dur));
        else
            tr_cli_fmt_duration(tr_now() - s, dur, sizeof(dur));
        const char *e = json_string_value(json_object_get(task, "error"));
        if (e != NULL)
            first_line(e, err, sizeof(err), ERROR_COLUMN_MAX);
        /* The cost of every LLM call of every attempt; "-" for a task that made none. */
        char cost[32] = "-";
        const json_t *calls = json_object_get(task, "usage");
        if (json_array_size(calls) > 0) {
            double sum = 0;
            size_t k;
            const json_t *call;
            json_array_foreach(calls, k, call)
            {
                sum += json_number_value(json_object_get(call, "cost"));
            }
            snprintf(cost, sizeof(cost), "%.6f", sum);
        }
        const char *row[] = {json_string_value(json_object_get(task, "name")),
                             index,
                             state,
                             attempts,
                             json_string_value(json_object_get(task, "worker")),
                             dur,
                             cost,
                             err};
        if (tr_table_add(t, row) < 0) {
            tr_table_free(t);
            t = NULL;
        }
    }
    json_decref(ans);
    if (t == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

int tr_cmd_logs(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 2, "RUN", &json_out);
    if (code >= 0)
        return code;
    const char *run_id = argv[optind];
    const char *task = optind + 1 < argc ? argv[optind + 1] : NULL;
    char *base = tr_cli_path("/v1/runs/", run_id, "/logs");
    char *q = task ? tr_client_escape(task) : NULL;
    struct tr_buf path;
    tr_buf_init(&path, 0);
    if (base == NULL || (task != NULL && q == NULL) ||
        tr_buf_addf(&path, "%s%s%s", base, q ? "?task=" : "", q ? q : "") < 0) {
        tr_free(base);
        tr_free(q);
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    tr_free(base);
    tr_free(q);
    json_t *ans;
    code = tr_cli_call(cli, "GET", path.buf, NULL, &ans, NULL);
    tr_buf_release(&path);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    size_t i, j;
    json_t *entry, *line;
    json_array_foreach(json_object_get(ans, "logs"), i, entry)
    {
        const char *name = tr_cli_str(json_object_get(entry, "task"), "?");
        long long idx = json_integer_value(json_object_get(entry, "index"));
        char prefix[512];
        if (idx > 0)
            snprintf(prefix, sizeof(prefix), "%s[%lld]", name, idx);
        else
            snprintf(prefix, sizeof(prefix), "%s", name);
        long long dropped = json_integer_value(json_object_get(entry, "dropped"));
        if (dropped > 0)
            printf("%s: (%lld earlier line%s dropped)\n", prefix, dropped,
                   dropped == 1 ? "" : "s");
        json_array_foreach(json_object_get(entry, "lines"), j, line)
            printf("%s: %s\n", prefix, tr_cli_str(line, ""));
    }
    json_decref(ans);
    return TR_EXIT_OK;
}

/* {=== trellis runs */

int tr_cmd_runs(struct tr_cli *cli, int argc, char **argv)
{
    enum
    {
        OPT_STATE = TR_OPT_FIRST_LOCAL,
        OPT_LIMIT
    };
    static const struct option opts[] = {
        {"state", required_argument, NULL, OPT_STATE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {NULL, 0, NULL, 0},
    };
    static const char *const states[] = {"queued", "running", "succeeded", "failed",
                                         "cancelled"};
    const char *state = NULL;
    long limit = 0;
    bool json_out = false;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT)
            return cli->exit_code;
        if (opt == TR_OPT_JSON) {
            json_out = true;
        } else if (opt == OPT_STATE) {
            state = optarg;
            bool known = false;
            for (size_t i = 0; i < TR_ARRAY_LEN(states); i++)
                known = known || strcmp(states[i], state) == 0;
            if (!known)
                return tr_cli_usage_error(cli, "unknown state '%s' (queued, running, succeeded, "
                                               "failed or cancelled)", state);
        } else if (opt == OPT_LIMIT) {
            if (!tr_cli_parse_long(optarg, 1, 1000, &limit))
                return tr_cli_usage_error(cli, "--limit wants a number from 1 to 1000, not '%s'",
                                          optarg);
        }
    }
    if (!tr_cli_operands(cli, argc, argv, 0, 0, ""))
        return cli->exit_code;
    char path[128];
    snprintf(path, sizeof(path), "/v1/runs%s%s%s", state || limit ? "?" : "",
             state ? "state=" : "", state ? state : "");
    if (limit > 0) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof(path) - n, "%slimit=%ld", state ? "&" : "", limit);
    }
    json_t *ans;
    int code = tr_cli_call(cli, "GET", path, NULL, &ans, NULL);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    static const char *const hdr[] = {"RUN", "PIPELINE", "STATE", "TASKS", "CREATED",
                                      "DURATION"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *run;
    json_array_foreach(json_object_get(ans, "runs"), i, run)
    {
        if (t == NULL)
            break;
        char pipeline[256], tasks[48], created[32], dur[32];
        const char *version = json_string_value(json_object_get(run, "version"));
        snprintf(pipeline, sizeof(pipeline), "%s%s%s",
                 tr_cli_str(json_object_get(run, "pipeline"), "?"),
                 version && version[0] ? "@" : "", version && version[0] ? version : "");
        long long done, total;
        tr_cli_task_counts(json_object_get(run, "tasks"), &done, &total);
        snprintf(tasks, sizeof(tasks), "%lld/%lld", done, total);
        tr_cli_fmt_age(json_object_get(run, "created_at"), created, sizeof(created));
        const json_t *started = json_object_get(run, "started_at");
        const json_t *finished = json_object_get(run, "finished_at");
        double s;
        if (json_is_string(finished) || !tr_cli_parse_time(json_string_value(started), &s))
            tr_cli_fmt_between(started, finished, dur, sizeof(dur));
        else
            tr_cli_fmt_duration(tr_now() - s, dur, sizeof(dur));
        const char *row[] = {json_string_value(json_object_get(run, "run_id")),
                             pipeline,
                             json_string_value(json_object_get(run, "state")),
                             tasks,
                             created,
                             dur};
        if (tr_table_add(t, row) < 0) {
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
        fprintf(stderr, "no runs%s%s\n", state ? " in state " : "", state ? state : "");
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

/* ====================================================================== */
/* {=== trellis workers */

/* "k=v,k2=v2" from a labels object, in out. */
static void labels_text(const json_t *labels, char *out, size_t n)
{
    out[0] = '\0';
    size_t used = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)labels, key, v)
    {
        char val[128];
        if (json_is_string(v))
            snprintf(val, sizeof(val), "%s", json_string_value(v));
        else
            snprintf(val, sizeof(val), "%lld", json_integer_value(v));
        int w = snprintf(out + used, n - used, "%s%s=%s", used ? "," : "", key, val);
        if (w < 0 || (size_t)w >= n - used)
            break;
        used += (size_t)w;
    }
    if (used == 0)
        snprintf(out, n, "-");
}

int tr_cmd_workers(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 0, 0, "", &json_out);
    if (code >= 0)
        return code;
    json_t *ans;
    code = tr_cli_call(cli, "GET", "/v1/workers", NULL, &ans, NULL);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    static const char *const hdr[] = {"ID", "POOL", "SLOTS", "BUSY", "GPUS", "LABELS",
                                      "LAST SEEN"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(ans, "workers"), i, w)
    {
        if (t == NULL)
            break;
        char slots[24], busy[24], gpus[24], labels[512], seen[32];
        snprintf(slots, sizeof(slots), "%lld", json_integer_value(json_object_get(w, "slots")));
        snprintf(busy, sizeof(busy), "%lld", json_integer_value(json_object_get(w, "busy")));
        snprintf(gpus, sizeof(gpus), "%lld",
                 json_integer_value(json_object_get(json_object_get(w, "resources"), "gpus")));
        labels_text(json_object_get(w, "labels"), labels, sizeof(labels));
        tr_cli_fmt_age(json_object_get(w, "last_seen"), seen, sizeof(seen));
        const char *row[] = {json_string_value(json_object_get(w, "id")),
                             json_string_value(json_object_get(w, "pool")),
                             slots,
                             busy,
                             gpus,
                             labels,
                             seen};
        if (tr_table_add(t, row) < 0) {
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
        fprintf(stderr, "no workers connected\n");
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

/* ====================================================================== */
/* {=== trellis pipelines and register */

/* The API gives "tasks" as a count or as a list of names. */
static long long task_count(const json_t *tasks)
{
    if (json_is_array(tasks))
        return (long long)json_array_size(tasks);
    return json_integer_value(tasks);
}

int tr_cmd_pipelines(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 0, 0, "", &json_out);
    if (code >= 0)
        return code;
    json_t *ans;
    code = tr_cli_call(cli, "GET", "/v1/pipelines", NULL, &ans, NULL);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    static const char *const hdr[] = {"NAME", "VERSION", "TASKS", "DIGEST", "REGISTERED"};
    struct tr_table *t = tr_table_new(TR_ARRAY_LEN(hdr), hdr);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ans, "pipelines"), i, p)
    {
        if (t == NULL)
            break;
        char tasks[24], digest[16], when[32];
        snprintf(tasks, sizeof(tasks), "%lld", task_count(json_object_get(p, "tasks")));
        snprintf(digest, sizeof(digest), "%.12s", tr_cli_str(json_object_get(p, "digest"), "-"));
        tr_cli_fmt_age(json_object_get(p, "registered_at"), when, sizeof(when));
        const char *row[] = {json_string_value(json_object_get(p, "name")),
                             json_string_value(json_object_get(p, "version")),
                             tasks,
                             digest,
                             when};
        if (tr_table_add(t, row) < 0) {
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
        fprintf(stderr, "no pipelines registered\n");
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

int tr_cmd_register(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "FILE", &json_out);
    if (code >= 0)
        return code;
    const char *file = argv[optind];
    json_t *body = tr_cli_source_body(file);
    if (body == NULL)
        return TR_EXIT_USAGE;
    char context[512];
    snprintf(context, sizeof(context), "cannot register '%s'", file);
    json_t *ans;
    code = tr_cli_call(cli, "POST", "/v1/pipelines", body, &ans, context);
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(ans);
    } else {
        long long n = task_count(json_object_get(ans, "tasks"));
        const char *version = tr_cli_str(json_object_get(ans, "version"), "");
        printf("registered pipeline '%s'%s%s (%lld task%s, digest %.12s)\n",
               tr_cli_str(json_object_get(ans, "name"), "?"), version[0] ? " version " : "",
               version, n, n == 1 ? "" : "s", tr_cli_str(json_object_get(ans, "digest"), "-"));
    }
    json_decref(ans);
    return code;
}
