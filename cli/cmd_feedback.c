/*
 * cmd_feedback.c - the feedback loop's commands (docs/feedback.md): give
 * feedback on a run and export it for fine-tuning, work the labelling
 * queue, and read and promote models of the registry.
 *
 * Every command is one or a few calls of the API; `feedback export` reads
 * the feedback that carries a correction and the runs it is about, one GET
 * per distinct run.
 */
#include <limits.h>
#include <stddef.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define CELL 64

/* USER from the environment: who gives feedback or moves an alias, unless told. */
static const char *default_user(void)
{
    const char *u = getenv("USER");
    return u && u[0] ? u : NULL;
}

/* A value given on the command line: JSON when it parses as JSON, else a string. */
static json_t *value_arg(const char *s)
{
    json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(s);
}

/* Shortens text to a table cell. */
static void cell(char *out, const char *text)
{
    snprintf(out, CELL, "%s", text ? text : "-");
    if (text && strlen(text) >= CELL)
        memcpy(out + CELL - 4, "...", 4);
    for (char *p = out; *p; p++) {
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    }
}

static void cell_json(char *out, const json_t *v)
{
    char *t = v && !json_is_null(v)
                  ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6))
                  : NULL;
    cell(out, t);
    free(t);
}

/* Prints the answer as a table of the array key, or raw with --json; takes ans. */
typedef void (*row_fn)(const json_t *item, char cells[][CELL]);

static int print_table(json_t *ans, bool json_out, const char *key, const char *const *hdr,
                       size_t ncols, row_fn fill, const char *empty)
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
        char cells[8][CELL] = {{0}};
        const char *row[8];
        fill(item, cells);
        for (size_t c = 0; c < ncols; c++)
            row[c] = cells[c];
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
    return TR_EXIT_OK;
}

/* Appends "&key=value" (the first with '?') to path, value escaped. */
static int add_query(struct tr_buf *path, const char *key, const char *value)
{
    if (value == NULL)
        return 0;
    char *esc = tr_client_escape(value);
    int rc = esc ? tr_buf_addf(path, "%c%s=%s", strchr(path->buf, '?') ? '&' : '?', key, esc)
                 : TR_ENOMEM;
    tr_free(esc);
    return rc;
}

/* ====================================================================== */
/* {=== trellis feedback */

static const char *prompt_of(const json_t *run, char **owned)
{
    const json_t *params = json_object_get(run, "params");
    const char *keys[] = {"question", "input", "prompt"};
    *owned = NULL;
    for (size_t i = 0; i < TR_ARRAY_LEN(keys); i++) {
        const json_t *v = json_object_get(params, keys[i]);
        if (json_is_string(v))
            return json_string_value(v);
        if (v != NULL && !json_is_null(v))
            return *owned = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    return NULL;
}

/*
 * chat-jsonl: one {"messages": [user prompt, assistant correction]} per line
 * for each feedback with a correction, the format fine-tuning services take.
 */
struct export_opts
{
    int format;      /* index in formats */
    char *pipeline;  /* --pipeline, or NULL */
    long limit;      /* --limit */
};

static const char *const formats[] = {"chat-jsonl", NULL};

static const struct tr_flag export_flags[] = {
    {"format", 0, TR_FLAG_ENUM, .off = offsetof(struct export_opts, format), .dflt = "chat-jsonl",
     .choices = formats, .arg = "FORMAT", .help = "the output format (chat-jsonl)"},
    {"pipeline", 0, TR_FLAG_STR, .off = offsetof(struct export_opts, pipeline), .arg = "P",
     .help = "only feedback on runs of pipeline P"},
    {"limit", 0, TR_FLAG_INT, .off = offsetof(struct export_opts, limit), .dflt = "10000",
     .arg = "N", .min = 1, .max = 10000, .help = "at most N feedback records"},
};

static int feedback_export_with(struct tr_cli *cli, const char *pipeline, long limit);

static int feedback_export(struct tr_cli *cli, int argc, char **argv)
{
    struct export_opts o = {0};
    int code = tr_cli_parse(cli, argc, argv, export_flags, TR_ARRAY_LEN(export_flags), &o, 0, 0,
                            "", NULL);
    if (code < 0)
        code = feedback_export_with(cli, o.pipeline, o.limit);
    tr_cli_flags_release(export_flags, TR_ARRAY_LEN(export_flags), &o);
    return code;
}

static int feedback_export_with(struct tr_cli *cli, const char *pipeline, long limit)
{
    struct tr_buf path;
    tr_buf_init(&path, 0);
    int rc = tr_buf_addf(&path, "/v1/feedback?limit=%ld", limit);
    if (rc == 0)
        rc = add_query(&path, "pipeline", pipeline);
    json_t *ans = NULL;
    int code = rc == 0 ? tr_cli_call(cli, "GET", path.buf, NULL, &ans, "cannot read feedback")
                       : TR_EXIT_FAILED;
    tr_buf_release(&path);
    if (code != 0)
        return code;
    json_t *runs = json_object(); /* run id -> the run, fetched once */
    size_t i, written = 0, skipped = 0;
    json_t *fb;
    json_array_foreach(json_object_get(ans, "feedback"), i, fb)
    {
        const char *correction = json_string_value(json_object_get(fb, "correction"));
        const char *run_id = json_string_value(json_object_get(fb, "run_id"));
        if (correction == NULL || run_id == NULL)
            continue;
        json_t *run = json_object_get(runs, run_id);
        if (run == NULL) {
            code = tr_cli_get_one(cli, "/v1/runs/", run_id, "", &run);
            if (code != 0)
                break;
            json_object_set_new(runs, run_id, run);
        }
        char *owned;
        const char *prompt = prompt_of(run, &owned);
        if (prompt == NULL) {
            skipped++;
            continue;
        }
        json_t *line = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "messages", "role", "user",
                                 "content", prompt, "role", "assistant", "content", correction);
        free(owned);
        char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
        json_decref(line);
        if (text == NULL) {
            tr_cli_error("out of memory");
            code = TR_EXIT_FAILED;
            break;
        }
        printf("%s\n", text);
        free(text);
        written++;
    }
    json_decref(runs);
    json_decref(ans);
    if (code == 0)
        fprintf(stderr, "%zu pairs written%s", written, skipped ? "" : "\n");
    if (code == 0 && skipped)
        fprintf(stderr, "; %zu corrections skipped: their run has no params.question, "
                        "params.input or params.prompt\n", skipped);
    return code;
}

struct feedback_opts
{
    long score, index;  /* LONG_MIN: not given */
    char *task, *comment, *correction, *label, *scale, *user;
};

#define FB(field) .off = offsetof(struct feedback_opts, field)

/* The scheduler says which scores it takes; only a whole number is checked here. */
static const struct tr_flag feedback_flags[] = {
    {"score", 0, TR_FLAG_INT, FB(score), .arg = "N", .min = -1000000, .max = 1000000,
     .help = "-1 or 1 (thumbs), 1..5 (stars); required"},
    {"scale", 0, TR_FLAG_STR, FB(scale), .arg = "S",
     .help = "thumbs or stars (1 alone is a thumb up)"},
    {"task", 0, TR_FLAG_STR, FB(task), .arg = "T",
     .help = "the task rated (default: the run's answer)"},
    {"index", 0, TR_FLAG_INT, FB(index), .arg = "I", .min = -1000000, .max = 1000000,
     .help = "its map element"},
    {"comment", 0, TR_FLAG_STR, FB(comment), .arg = "TEXT", .help = "a comment (at most 64 KiB)"},
    {"correction", 0, TR_FLAG_STR, FB(correction), .arg = "TEXT",
     .help = "the answer it should have given"},
    {"label", 0, TR_FLAG_STR, FB(label), .arg = "TEXT", .help = "a short label"},
    {"user", 0, TR_FLAG_STR, FB(user), .arg = "NAME", .help = "who gives it (default $USER)"},
};

static int feedback_give(struct tr_cli *cli, const struct feedback_opts *o, const char *run_id,
                         bool json_out);

int tr_cmd_feedback(struct tr_cli *cli, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "export") == 0)
        return feedback_export(cli, argc - 1, argv + 1);
    struct feedback_opts o = {.score = LONG_MIN, .index = LONG_MIN};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, feedback_flags, TR_ARRAY_LEN(feedback_flags), &o,
                            1, 1, "RUN", &json_out);
    if (code < 0 && o.score == LONG_MIN)
        code = tr_cli_usage_error(cli, "--score is required: -1 or 1 (thumbs), 1..5 (stars)");
    if (code < 0)
        code = feedback_give(cli, &o, argv[1], json_out);
    tr_cli_flags_release(feedback_flags, TR_ARRAY_LEN(feedback_flags), &o);
    return code;
}

static int feedback_give(struct tr_cli *cli, const struct feedback_opts *o, const char *run_id,
                         bool json_out)
{
    json_t *body = json_object();
    if (body == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    json_object_set_new(body, "score", json_integer(o->score));
    if (o->index != LONG_MIN)
        json_object_set_new(body, "index", json_integer(o->index));
    const char *const keys[] = {"task", "comment", "correction", "label", "scale"};
    const char *const vals[] = {o->task, o->comment, o->correction, o->label, o->scale};
    for (size_t i = 0; i < TR_ARRAY_LEN(keys); i++) {
        if (vals[i] != NULL)
            json_object_set_new(body, keys[i], json_string(vals[i]));
    }
    const char *user = o->user ? o->user : default_user();
    json_object_set_new(body, "run_id", json_string(run_id));
    if (user)
        json_object_set_new(body, "user", json_string(user));
    json_t *ans;
    int code = tr_cli_call(cli, "POST", "/v1/feedback", body, &ans, "cannot give feedback");
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else
        printf("%s\n", tr_cli_str(json_object_get(ans, "feedback_id"), "?"));
    json_decref(ans);
    return code;
}

/* ====================================================================== */
/* {=== trellis labels, trellis label */

static void label_row(const json_t *it, char c[][CELL])
{
    cell(c[0], tr_cli_str(json_object_get(it, "item_id"), "-"));
    cell(c[1], tr_cli_str(json_object_get(it, "pipeline"), "-"));
    snprintf(c[2], CELL, "%.3f", json_number_value(json_object_get(it, "uncertainty")));
    cell(c[3], tr_cli_str(json_object_get(it, "state"), "-"));
    cell_json(c[4], json_object_get(it, "item"));
    cell_json(c[5], json_object_get(it, "label"));
}

struct labels_opts
{
    char *pipeline, *state;
    long limit; /* 0: the API's default */
};

static const struct tr_flag labels_flags[] = {
    {"pipeline", 0, TR_FLAG_STR, .off = offsetof(struct labels_opts, pipeline), .arg = "P",
     .help = "only items of pipeline P"},
    {"state", 0, TR_FLAG_STR, .off = offsetof(struct labels_opts, state), .arg = "STATE",
     .help = "queued, labelled or all"},
    {"limit", 0, TR_FLAG_INT, .off = offsetof(struct labels_opts, limit), .arg = "N", .min = 1,
     .max = 10000, .help = "at most N items"},
};

static int labels_list(struct tr_cli *cli, const char *pipeline, const char *state, long limit,
                       bool json_out);

int tr_cmd_labels(struct tr_cli *cli, int argc, char **argv)
{
    struct labels_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, labels_flags, TR_ARRAY_LEN(labels_flags), &o, 0, 0,
                            "", &json_out);
    if (code < 0)
        code = labels_list(cli, o.pipeline, o.state, o.limit, json_out);
    tr_cli_flags_release(labels_flags, TR_ARRAY_LEN(labels_flags), &o);
    return code;
}

static int labels_list(struct tr_cli *cli, const char *pipeline, const char *state, long limit,
                       bool json_out)
{
    struct tr_buf path;
    tr_buf_init(&path, 0);
    int rc = tr_buf_addstr(&path, "/v1/labels");
    if (rc == 0)
        rc = add_query(&path, "pipeline", pipeline);
    if (rc == 0)
        rc = add_query(&path, "state", state);
    if (rc == 0 && limit)
        rc = tr_buf_addf(&path, "%climit=%ld", strchr(path.buf, '?') ? '&' : '?', limit);
    json_t *ans = NULL;
    int code = rc == 0 ? tr_cli_call(cli, "GET", path.buf, NULL, &ans, NULL) : TR_EXIT_FAILED;
    tr_buf_release(&path);
    if (code != 0)
        return code;
    static const char *const hdr[] = {"ITEM", "PIPELINE", "UNCERTAINTY", "STATE", "CONTENT",
                                      "LABEL"};
    return print_table(ans, json_out, "items", hdr, TR_ARRAY_LEN(hdr), label_row,
                       "the labelling queue is empty");
}

struct user_opts
{
    char *user;    /* --user, or NULL: $USER */
    char *reason;  /* models promote --reason */
};

static const struct tr_flag label_flags[] = {
    {"user", 0, TR_FLAG_STR, .off = offsetof(struct user_opts, user), .arg = "NAME",
     .help = "who labels (default $USER)"},
};

static int label_item(struct tr_cli *cli, const char *item, const char *value, const char *user,
                      bool json_out);

int tr_cmd_label(struct tr_cli *cli, int argc, char **argv)
{
    struct user_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, label_flags, TR_ARRAY_LEN(label_flags), &o, 2, 2,
                            "ITEM VALUE", &json_out);
    if (code < 0)
        code = label_item(cli, argv[1], argv[2], o.user ? o.user : default_user(), json_out);
    tr_cli_flags_release(label_flags, TR_ARRAY_LEN(label_flags), &o);
    return code;
}

static int label_item(struct tr_cli *cli, const char *item, const char *value, const char *user,
                      bool json_out)
{
    json_t *body = json_object();
    json_object_set_new(body, "label", value_arg(value));
    if (user)
        json_object_set_new(body, "user", json_string(user));
    char *path = tr_cli_path("/v1/labels/", item, "");
    json_t *ans = NULL;
    int code = path ? tr_cli_call(cli, "POST", path, body, &ans, "cannot label") : TR_EXIT_FAILED;
    tr_free(path);
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else
        printf("%s labelled\n", item);
    json_decref(ans);
    return code;
}

/* ====================================================================== */
/* {=== trellis models */

static void aliases_cell(char *out, const json_t *aliases)
{
    struct tr_buf b;
    tr_buf_init(&b, 0);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)aliases, k, v)
    {
        if (tr_buf_addf(&b, "%s%s=%lld", b.len ? " " : "", k,
                        (long long)json_integer_value(v)) < 0)
            break;
    }
    cell(out, b.len ? b.buf : "-");
    tr_buf_release(&b);
}

static void model_row(const json_t *m, char c[][CELL])
{
    cell(c[0], tr_cli_str(json_object_get(m, "name"), "-"));
    cell_json(c[1], json_object_get(m, "latest_version"));
    aliases_cell(c[2], json_object_get(m, "aliases"));
    char age[CELL];
    tr_cli_fmt_age(json_object_get(m, "updated_at"), age, sizeof(age));
    cell(c[3], age);
}

static void version_row(const json_t *v, char c[][CELL])
{
    const json_t *lin = json_object_get(v, "lineage");
    cell_json(c[0], json_object_get(v, "version"));
    cell_json(c[1], json_object_get(v, "metrics"));
    cell(c[2], tr_cli_str(json_object_get(lin, "run_id"), "-"));
    cell(c[3], tr_cli_str(json_object_get(lin, "data_digest"), "-"));
    cell_json(c[4], json_object_get(lin, "parent"));
    char age[CELL];
    tr_cli_fmt_age(json_object_get(v, "created_at"), age, sizeof(age));
    cell(c[5], age);
}

static void move_row(const json_t *h, char c[][CELL])
{
    char age[CELL];
    tr_cli_fmt_age(json_object_get(h, "at"), age, sizeof(age));
    cell(c[0], age);
    cell(c[1], tr_cli_str(json_object_get(h, "alias"), "-"));
    cell_json(c[2], json_object_get(h, "from"));
    cell_json(c[3], json_object_get(h, "to"));
    cell(c[4], tr_cli_str(json_object_get(h, "user"), "-"));
    cell(c[5], tr_cli_str(json_object_get(h, "reason"), "-"));
}

static int models_promote(struct tr_cli *cli, int argc, char **argv, const char *user,
                          const char *reason, bool json_out)
{
    long version;
    if (argc != 3)
        return tr_cli_usage_error(cli, "promote wants NAME ALIAS VERSION");
    if (tr_parse_long(argv[2], 1, 4294967295L, &version) != 0)
        return tr_cli_usage_error(cli, "VERSION must be a number >= 1, not '%s'", argv[2]);
    json_t *body = json_pack("{s:I}", "version", (json_int_t)version);
    if (user)
        json_object_set_new(body, "user", json_string(user));
    if (reason)
        json_object_set_new(body, "reason", json_string(reason));
    char *esc = tr_client_escape(argv[1]);
    char *path = esc ? tr_cli_path("/v1/models/", argv[0], "/aliases/") : NULL;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    json_t *ans = NULL;
    int code = path && tr_buf_addf(&b, "%s%s", path, esc) == 0
                   ? tr_cli_call(cli, "PUT", b.buf, body, &ans, "cannot promote")
                   : TR_EXIT_FAILED;
    if (code == 0 && json_out)
        code = tr_cli_print_raw(ans);
    json_decref(ans);
    tr_free(esc);
    tr_free(path);
    tr_buf_release(&b);
    json_decref(body);
    if (code == 0 && !json_out)
        printf("%s@%s -> version %ld\n", argv[0], argv[1], version);
    return code;
}

static const struct tr_flag models_flags[] = {
    {"user", 0, TR_FLAG_STR, .off = offsetof(struct user_opts, user), .arg = "NAME",
     .help = "who moves the alias (default $USER)"},
    {"reason", 0, TR_FLAG_STR, .off = offsetof(struct user_opts, reason), .arg = "TEXT",
     .help = "why the alias moves"},
};

static int models(struct tr_cli *cli, int nargs, char **args, const char *user,
                  const char *reason, bool json_out);

int tr_cmd_models(struct tr_cli *cli, int argc, char **argv)
{
    struct user_opts o = {0};
    bool json_out = false;
    int code = tr_cli_parse(cli, argc, argv, models_flags, TR_ARRAY_LEN(models_flags), &o, 0, 4,
                            "", &json_out);
    if (code < 0)
        code = models(cli, cli->n_args, argv + 1, o.user ? o.user : default_user(), o.reason,
                      json_out);
    tr_cli_flags_release(models_flags, TR_ARRAY_LEN(models_flags), &o);
    return code;
}

static int models(struct tr_cli *cli, int nargs, char **args, const char *user,
                  const char *reason, bool json_out)
{
    if (nargs >= 1 && strcmp(args[0], "promote") == 0)
        return models_promote(cli, nargs - 1, args + 1, user, reason, json_out);
    json_t *ans = NULL;
    int code;
    if (nargs == 0) {
        code = tr_cli_call(cli, "GET", "/v1/models", NULL, &ans, NULL);
        if (code != 0)
            return code;
        static const char *const hdr[] = {"MODEL", "LATEST", "ALIASES", "UPDATED"};
        return print_table(ans, json_out, "models", hdr, TR_ARRAY_LEN(hdr), model_row,
                           "no models registered");
    }
    if (nargs == 2 && strcmp(args[0], "history") == 0) {
        code = tr_cli_get_one(cli, "/v1/models/", args[1], "/history", &ans);
        if (code != 0)
            return code;
        static const char *const hdr[] = {"WHEN", "ALIAS", "FROM", "TO", "USER", "REASON"};
        return print_table(ans, json_out, "history", hdr, TR_ARRAY_LEN(hdr), move_row,
                           "no alias was ever moved");
    }
    if (nargs != 1)
        return tr_cli_usage_error(cli, "expected [NAME], history NAME or promote NAME ALIAS "
                                       "VERSION");
    code = tr_cli_get_one(cli, "/v1/models/", args[0], "", &ans);
    if (code != 0)
        return code;
    if (!json_out) {
        char aliases[CELL];
        aliases_cell(aliases, json_object_get(ans, "aliases"));
        printf("model %s, aliases: %s\n", args[0], aliases);
    }
    static const char *const hdr[] = {"VERSION", "METRICS", "RUN", "DATA", "PARENT", "CREATED"};
    return print_table(ans, json_out, "versions", hdr, TR_ARRAY_LEN(hdr), version_row,
                       "no versions");
}
