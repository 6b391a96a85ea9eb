/*
 * cmd_feedback.c - the feedback loop's commands (docs/feedback.md): give
 * feedback on a run and export it for fine-tuning, work the labelling
 * queue, and read and promote models of the registry.
 *
 * Every command is one or a few calls of the API; `feedback export` reads
 * the feedback that carries a correction and the runs it is about, one GET
 * per distinct run.
 */
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
static int feedback_export(struct tr_cli *cli, int argc, char **argv)
{
    enum
    {
        OPT_FORMAT = TR_OPT_FIRST_LOCAL,
        OPT_PIPELINE,
        OPT_LIMIT
    };
    static const struct option opts[] = {
        {"format", required_argument, NULL, OPT_FORMAT},
        {"pipeline", required_argument, NULL, OPT_PIPELINE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL;
    long limit = 10000;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT)
            return cli->exit_code;
        if (opt == OPT_FORMAT && strcmp(optarg, "chat-jsonl") != 0)
            return tr_cli_usage_error(cli, "unknown format '%s' (known: chat-jsonl)", optarg);
        if (opt == OPT_PIPELINE)
            pipeline = optarg;
        if (opt == OPT_LIMIT && !tr_cli_parse_long(optarg, 1, 10000, &limit))
            return tr_cli_usage_error(cli, "--limit wants a number from 1 to 10000");
    }
    if (!tr_cli_operands(cli, argc, argv, 0, 0, ""))
        return cli->exit_code;
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

int tr_cmd_feedback(struct tr_cli *cli, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "export") == 0)
        return feedback_export(cli, argc - 1, argv + 1);
    enum
    {
        OPT_SCORE = TR_OPT_FIRST_LOCAL,
        OPT_TASK,
        OPT_INDEX,
        OPT_COMMENT,
        OPT_CORRECTION,
        OPT_LABEL,
        OPT_USER,
        OPT_SCALE
    };
    static const struct option opts[] = {
        {"score", required_argument, NULL, OPT_SCORE},
        {"task", required_argument, NULL, OPT_TASK},
        {"index", required_argument, NULL, OPT_INDEX},
        {"comment", required_argument, NULL, OPT_COMMENT},
        {"correction", required_argument, NULL, OPT_CORRECTION},
        {"label", required_argument, NULL, OPT_LABEL},
        {"user", required_argument, NULL, OPT_USER},
        {"scale", required_argument, NULL, OPT_SCALE},
        {NULL, 0, NULL, 0},
    };
    json_t *body = json_object();
    bool json_out = false, scored = false;
    const char *user = default_user();
    long n = 0;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT) {
            json_decref(body);
            return cli->exit_code;
        }
        static const char *const keys[] = {
            [OPT_TASK - OPT_SCORE] = "task", [OPT_COMMENT - OPT_SCORE] = "comment",
            [OPT_CORRECTION - OPT_SCORE] = "correction", [OPT_LABEL - OPT_SCORE] = "label",
            [OPT_SCALE - OPT_SCORE] = "scale"};
        if (opt == TR_OPT_JSON) {
            json_out = true;
        } else if (opt == OPT_SCORE || opt == OPT_INDEX) {
            /* The scheduler says which scores it takes; only a number is checked here. */
            if (!tr_cli_parse_long(optarg[0] == '-' ? optarg + 1 : optarg, 0, 1000000, &n)) {
                json_decref(body);
                return tr_cli_usage_error(cli, "--%s wants a whole number, not '%s'",
                                          opt == OPT_SCORE ? "score" : "index", optarg);
            }
            json_object_set_new(body, opt == OPT_SCORE ? "score" : "index",
                                json_integer(optarg[0] == '-' ? -n : n));
            scored |= opt == OPT_SCORE;
        } else if (opt == OPT_USER) {
            user = optarg;
        } else {
            json_object_set_new(body, keys[opt - OPT_SCORE], json_string(optarg));
        }
    }
    if (!scored) {
        json_decref(body);
        return tr_cli_usage_error(cli, "--score is required: -1 or 1 (thumbs), 1..5 (stars)");
    }
    if (!tr_cli_operands(cli, argc, argv, 1, 1, "RUN")) {
        json_decref(body);
        return cli->exit_code;
    }
    json_object_set_new(body, "run_id", json_string(argv[optind]));
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

int tr_cmd_labels(struct tr_cli *cli, int argc, char **argv)
{
    enum
    {
        OPT_PIPELINE = TR_OPT_FIRST_LOCAL,
        OPT_STATE,
        OPT_LIMIT
    };
    static const struct option opts[] = {
        {"pipeline", required_argument, NULL, OPT_PIPELINE},
        {"state", required_argument, NULL, OPT_STATE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL, *state = NULL;
    long limit = 0;
    bool json_out = false;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT)
            return cli->exit_code;
        if (opt == TR_OPT_JSON)
            json_out = true;
        else if (opt == OPT_PIPELINE)
            pipeline = optarg;
        else if (opt == OPT_STATE)
            state = optarg;
        else if (opt == OPT_LIMIT && !tr_cli_parse_long(optarg, 1, 10000, &limit))
            return tr_cli_usage_error(cli, "--limit wants a number from 1 to 10000");
    }
    if (!tr_cli_operands(cli, argc, argv, 0, 0, ""))
        return cli->exit_code;
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

int tr_cmd_label(struct tr_cli *cli, int argc, char **argv)
{
    enum
    {
        OPT_USER = TR_OPT_FIRST_LOCAL
    };
    static const struct option opts[] = {
        {"user", required_argument, NULL, OPT_USER},
        {NULL, 0, NULL, 0},
    };
    const char *user = default_user();
    bool json_out = false;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT)
            return cli->exit_code;
        if (opt == TR_OPT_JSON)
            json_out = true;
        else if (opt == OPT_USER)
            user = optarg;
    }
    if (!tr_cli_operands(cli, argc, argv, 2, 2, "ITEM VALUE"))
        return cli->exit_code;
    json_t *body = json_object();
    json_object_set_new(body, "label", value_arg(argv[optind + 1]));
    if (user)
        json_object_set_new(body, "user", json_string(user));
    char *path = tr_cli_path("/v1/labels/", argv[optind], "");
    json_t *ans = NULL;
    int code = path ? tr_cli_call(cli, "POST", path, body, &ans, "cannot label") : TR_EXIT_FAILED;
    tr_free(path);
    json_decref(body);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else
        printf("%s labelled\n", argv[optind]);
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
    if (!tr_cli_parse_long(argv[2], 1, 4294967295L, &version))
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

int tr_cmd_models(struct tr_cli *cli, int argc, char **argv)
{
    enum
    {
        OPT_USER = TR_OPT_FIRST_LOCAL,
        OPT_REASON
    };
    static const struct option opts[] = {
        {"user", required_argument, NULL, OPT_USER},
        {"reason", required_argument, NULL, OPT_REASON},
        {NULL, 0, NULL, 0},
    };
    const char *user = default_user(), *reason = NULL;
    bool json_out = false;
    for (;;) {
        int opt = tr_cli_getopt(cli, argc, argv, "", opts);
        if (opt == -1)
            break;
        if (opt == TR_OPT_EXIT)
            return cli->exit_code;
        if (opt == TR_OPT_JSON)
            json_out = true;
        else if (opt == OPT_USER)
            user = optarg;
        else if (opt == OPT_REASON)
            reason = optarg;
    }
    int nargs = argc - optind;
    char **args = argv + optind;
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
