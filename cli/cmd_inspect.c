/*
 * cmd_inspect.c - the commands that list and inspect: tasks, logs, runs,
 * workers, pipelines, and register.
 *
 * Each is one API call and a table; with --json the answer is printed as it
 * came, for scripts.
 */
#include <stddef.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define ERROR_COLUMN_MAX 60

/* ====================================================================== */
/* {=== listings */

#define LIST_COLS_MAX 8
#define CELL_MAX 512

/* Fills row[] for one element of a listing; formatted cells go in cells[]. */
typedef void (*list_row_fn)(const json_t *item, char (*cells)[CELL_MAX], const char **row);

/*
 * Prints an API answer's array `key` as a table (or the raw JSON with
 * --json) and takes ans. empty: the line printed instead of an empty table,
 * or NULL to print the headers alone. Returns the command's exit code.
 */
static int print_list(json_t *ans, bool json_out, const char *key, const char *const *hdr,
                      size_t ncols, list_row_fn fill, const char *empty)
{
    if (json_out) {
        int code = tr_cli_print_raw(ans);
        json_decref(ans);
        return code;
    }
    struct tr_table *t = tr_table_new(ncols, hdr);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(ans, key), i, item)
    {
        if (t == NULL)
            break;
        char cells[LIST_COLS_MAX][CELL_MAX];
        const char *row[LIST_COLS_MAX] = {NULL};
        fill(item, cells, row);
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
    if (empty != NULL && tr_table_rows(t) == 0)
        fprintf(stderr, "%s\n", empty);
    else
        tr_table_print(t, stdout);
    tr_table_free(t);
    return TR_EXIT_OK;
}

/* How long it ran: finished - started, or so far while it still runs. */
static void run_time(const json_t *item, char *out, size_t n)
{
    const json_t *started = json_object_get(item, "started_at");
    const json_t *finished = json_object_get(item, "finished_at");
    double s;
    if (json_is_string(finished) || !tr_cli_parse_time(json_string_value(started), &s))
        tr_cli_fmt_between(started, finished, out, n);
    else
        tr_cli_fmt_duration(tr_now() - s, out, n);
}

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

static void task_row(const json_t *task, char (*cells)[CELL_MAX], const char **row)
{
    char *index = cells[0], *attempts = cells[1], *state = cells[2], *dur = cells[3];
    char *cost = cells[4], *err = cells[5];
    long long idx = json_integer_value(json_object_get(task, "index"));
    if (idx > 0)
        snprintf(index, CELL_MAX, "%lld", idx);
    else
        snprintf(index, CELL_MAX, "-");
    snprintf(attempts, CELL_MAX, "%lld", json_integer_value(json_object_get(task, "attempts")));
    /* An approval or a subrun waits in the scheduler: say for what. */
    const char *w = json_string_value(json_object_get(task, "waiting"));
    bool flow_wait = w != NULL && (strcmp(w, "approval") == 0 || strcmp(w, "child run") == 0);
    snprintf(state, CELL_MAX, "%s%s%s%s%s", tr_cli_str(json_object_get(task, "state"), "?"),
             json_is_true(json_object_get(task, "cached")) ? " (cached)" : "",
             flow_wait ? " (waiting for " : "", flow_wait ? w : "", flow_wait ? ")" : "");
    run_time(task, dur, CELL_MAX);
    const char *e = json_string_value(json_object_get(task, "error"));
    err[0] = '\0';
    if (e != NULL)
        first_line(e, err, ERROR_COLUMN_MAX * 4 + 8, ERROR_COLUMN_MAX);
    /* The cost of every LLM call of every attempt; "-" for a task that made none. */
    snprintf(cost, CELL_MAX, "-");
    const json_t *calls = json_object_get(task, "usage");
    if (json_array_size(calls) > 0) {
        double sum = 0;
        size_t k;
        const json_t *call;
        json_array_foreach(calls, k, call)
        {
            sum += json_number_value(json_object_get(call, "cost"));
        }
        snprintf(cost, CELL_MAX, "%.6f", sum);
    }
    row[0] = json_string_value(json_object_get(task, "name"));
    row[1] = index;
    row[2] = state;
    row[3] = attempts;
    row[4] = json_string_value(json_object_get(task, "worker"));
    row[5] = dur;
    row[6] = cost;
    row[7] = err;
}

int tr_cmd_tasks(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "RUN", &json_out);
    if (code >= 0)
        return code;
    json_t *ans;
    code = tr_cli_get_one(cli, "/v1/runs/", argv[1], "/tasks", &ans);
    if (code != 0)
        return code;
    static const char *const hdr[] = {"NAME",     "INDEX", "STATE", "ATTEMPTS", "WORKER",
                                      "DURATION", "COST",  "ERROR"};
    return print_list(ans, json_out, "tasks", hdr, TR_ARRAY_LEN(hdr), task_row, NULL);
}

int tr_cmd_logs(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 2, "RUN", &json_out);
    if (code >= 0)
        return code;
    const char *run_id = argv[1];
    const char *task = cli->n_args > 1 ? argv[2] : NULL;
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

static void run_row(const json_t *run, char (*cells)[CELL_MAX], const char **row)
{
    char *pipeline = cells[0], *tasks = cells[1], *created = cells[2], *dur = cells[3];
    const char *version = json_string_value(json_object_get(run, "version"));
    snprintf(pipeline, CELL_MAX, "%s%s%s", tr_cli_str(json_object_get(run, "pipeline"), "?"),
             version && version[0] ? "@" : "", version && version[0] ? version : "");
    long long done, total;
    tr_cli_task_counts(json_object_get(run, "tasks"), &done, &total);
    snprintf(tasks, CELL_MAX, "%lld/%lld", done, total);
    tr_cli_fmt_age(json_object_get(run, "created_at"), created, CELL_MAX);
    run_time(run, dur, CELL_MAX);
    row[0] = json_string_value(json_object_get(run, "run_id"));
    row[1] = pipeline;
    row[2] = json_string_value(json_object_get(run, "state"));
    row[3] = tasks;
    row[4] = created;
    row[5] = dur;
}

int tr_cmd_runs(struct tr_cli *cli, int argc, char **argv)
{
    static const char *const states[] = {"queued", "running", "succeeded", "failed",
                                         "cancelled", NULL};
    struct runs_opts
    {
        int state;  /* index in states, or -1 */
        long limit; /* 0: the API's default */
    } o = {-1, 0};
    static const struct tr_flag flags[] = {
        {"state", 0, TR_FLAG_ENUM, .off = offsetof(struct runs_opts, state), .arg = "STATE",
         .choices = states, .help = "only runs in STATE (queued, running, succeeded, failed, "
                                    "cancelled)"},
        {"limit", 0, TR_FLAG_INT, .off = offsetof(struct runs_opts, limit), .arg = "N", .min = 1,
         .max = 1000, .help = "at most N runs (the API's default is 50)"},
    };
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, flags, TR_ARRAY_LEN(flags), &o, 0, 0, "", &json_out);
    if (code >= 0)
        return code;
    const char *state = o.state >= 0 ? states[o.state] : NULL;
    long limit = o.limit;
    char path[128];
    snprintf(path, sizeof(path), "/v1/runs%s%s%s", state || limit ? "?" : "",
             state ? "state=" : "", state ? state : "");
    if (limit > 0) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof(path) - n, "%slimit=%ld", state ? "&" : "", limit);
    }
    json_t *ans;
    code = tr_cli_call(cli, "GET", path, NULL, &ans, NULL);
    if (code != 0)
        return code;
    char empty[64];
    snprintf(empty, sizeof(empty), "no runs%s%s", state ? " in state " : "", state ? state : "");
    static const char *const hdr[] = {"RUN", "PIPELINE", "STATE", "TASKS", "CREATED",
                                      "DURATION"};
    return print_list(ans, json_out, "runs", hdr, TR_ARRAY_LEN(hdr), run_row, empty);
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

static void worker_row(const json_t *w, char (*cells)[CELL_MAX], const char **row)
{
    char *slots = cells[0], *busy = cells[1], *gpus = cells[2], *labels = cells[3];
    char *seen = cells[4];
    snprintf(slots, CELL_MAX, "%lld", json_integer_value(json_object_get(w, "slots")));
    snprintf(busy, CELL_MAX, "%lld", json_integer_value(json_object_get(w, "busy")));
    snprintf(gpus, CELL_MAX, "%lld",
             json_integer_value(json_object_get(json_object_get(w, "resources"), "gpus")));
    labels_text(json_object_get(w, "labels"), labels, CELL_MAX);
    tr_cli_fmt_age(json_object_get(w, "last_seen"), seen, CELL_MAX);
    row[0] = json_string_value(json_object_get(w, "id"));
    row[1] = json_string_value(json_object_get(w, "pool"));
    row[2] = slots;
    row[3] = busy;
    row[4] = gpus;
    row[5] = labels;
    row[6] = seen;
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
    static const char *const hdr[] = {"ID", "POOL", "SLOTS", "BUSY", "GPUS", "LABELS",
                                      "LAST SEEN"};
    return print_list(ans, json_out, "workers", hdr, TR_ARRAY_LEN(hdr), worker_row,
                      "no workers connected");
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

static void pipeline_row(const json_t *p, char (*cells)[CELL_MAX], const char **row)
{
    char *tasks = cells[0], *digest = cells[1], *when = cells[2];
    snprintf(tasks, CELL_MAX, "%lld", task_count(json_object_get(p, "tasks")));
    snprintf(digest, CELL_MAX, "%.12s", tr_cli_str(json_object_get(p, "digest"), "-"));
    tr_cli_fmt_age(json_object_get(p, "registered_at"), when, CELL_MAX);
    row[0] = json_string_value(json_object_get(p, "name"));
    row[1] = json_string_value(json_object_get(p, "version"));
    row[2] = tasks;
    row[3] = digest;
    row[4] = when;
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
    static const char *const hdr[] = {"NAME", "VERSION", "TASKS", "DIGEST", "REGISTERED"};
    return print_list(ans, json_out, "pipelines", hdr, TR_ARRAY_LEN(hdr), pipeline_row,
                      "no pipelines registered");
}

int tr_cmd_register(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "FILE", &json_out);
    if (code >= 0)
        return code;
    const char *file = argv[1];
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
