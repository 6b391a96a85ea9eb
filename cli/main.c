/*
 * main.c - the `trellis` command: global flags, the subcommand table and
 * exit codes.
 *
 * Dispatch follows git.c: a table of {name, function}, the global flags
 * before the subcommand, each subcommand parsing the rest of the line with
 * its own flag table (tr_cli_parse, on lib/base/flags.h, which also prints
 * the command's --help from that table). The global flags --api and
 * --token-file are also accepted after the subcommand, where users tend to
 * type them; only they have TRELLIS_* variables. SIGINT and SIGTERM only set a
 * flag (tr_cli_interrupted) so that a waiting command can stop cleanly and
 * `trellis dev` can take its children down before exiting.
 */
#include <stddef.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"

volatile sig_atomic_t tr_cli_interrupted;
volatile sig_atomic_t tr_cli_signal;

static int cmd_help(struct tr_cli *cli, int argc, char **argv);
static int cmd_version(struct tr_cli *cli, int argc, char **argv);

static const struct tr_cli_cmd commands[] = {
    {"run", tr_cmd_run, "FILE|NAME[@VERSION] [-p KEY=VALUE]... [--wait] [--json]",
     "start a run of a pipeline file or of a registered pipeline"},
    {"status", tr_cmd_status, "RUN [--json]", "show a run's state, times, task counts and output"},
    {"tasks", tr_cmd_tasks, "RUN [--json]", "list a run's task instances"},
    {"logs", tr_cmd_logs, "RUN [TASK] [--json]", "print the lines tasks wrote with ctx.log"},
    {"cancel", tr_cmd_cancel, "RUN [--json]", "cancel a queued or running run"},
    {"approve", tr_cmd_approve, "RUN TASK [--reject] [--comment TEXT] [--json]",
     "decide an approval task that waits (approve, or reject with --reject)"},
    {"runs", tr_cmd_runs, "[--state STATE] [--limit N] [--json]", "list runs, newest first"},
    {"workers", tr_cmd_workers, "[--json]", "list connected workers"},
    {"pipelines", tr_cmd_pipelines, "[--json]", "list registered pipelines"},
    {"register", tr_cmd_register, "FILE [--json]", "register a pipeline file by name and version"},
    {"dev", tr_cmd_dev,
     "[--workers N] [--gpu-workers M] [--gpus-per-worker auto|K] [--data DIR]\n"
     "                   [--api HOST:PORT] [--slots N] [--run FILE [-p KEY=VALUE]... [--json]]",
     "start a local cluster (scheduler and workers) in the foreground"},
    {"keygen", tr_cmd_keygen, "NAME [--dir DIR]",
     "make a CURVE key pair for the worker port (NAME.key, NAME.pub)"},
    {"feedback", tr_cmd_feedback,
     "RUN --score N [--task T] [--comment TEXT] [--correction TEXT] | export [--format chat-jsonl]",
     "rate a run's answer, or export corrections for fine-tuning"},
    {"labels", tr_cmd_labels, "[--pipeline P] [--state queued|labelled|all] [--limit N]",
     "list the labelling queue, most uncertain first"},
    {"label", tr_cmd_label, "ITEM VALUE [--user NAME]",
     "label a queued item (VALUE is JSON, or else a string)"},
    {"models", tr_cmd_models,
     "[NAME | history NAME | promote NAME ALIAS VERSION [--reason TEXT] [--user NAME]]",
     "list the model registry, a model's versions, its alias history; move an alias"},
    {"triggers", tr_cmd_triggers, "[--pipeline P] | firings PIPELINE TRIGGER",
     "list declared triggers with their state; what a trigger fired"},
    {"audit", tr_cmd_audit, "[--since T] [--limit N] [--tenant T] [--json]",
     "list the audit log: who changed what, when (admin tokens)"},
    {"retry", tr_cmd_retry, "RUN [--json]",
     "start a new run of a finished run's pipeline and params, reusing what succeeded"},
    {"delete", tr_cmd_delete, "RUN [--json]", "delete a finished run, its outputs and logs"},
    {"help", cmd_help, "[COMMAND]", "show help for trellis or a command"},
    {"version", cmd_version, "", "print the version"},
};

/*
 * The global options, with their variables; read before the command. The
 * copy for after the command has no variables and no defaults, so that it
 * changes only what is written there.
 */
static const struct tr_flag global_flags[] = {
    {"api", 0, TR_FLAG_STR, .off = offsetof(struct tr_cli, opt_api), .dflt = TR_CLI_DEFAULT_API,
     .arg = "URL", .help = "the scheduler's API"},
    {"token-file", 0, TR_FLAG_STR, .off = offsetof(struct tr_cli, opt_token_file), .arg = "FILE",
     .help = "read the bearer token from FILE (or give the token itself in TRELLIS_TOKEN)"},
    {"version", 0, TR_FLAG_BOOL, .off = offsetof(struct tr_cli, opt_version),
     .env = TR_FLAG_NO_ENV, .help = "print the version"},
};

static const struct tr_flag common_flags[] = {
    {"api", 0, TR_FLAG_STR, .off = offsetof(struct tr_cli, opt_api), .arg = "URL",
     .env = TR_FLAG_NO_ENV, .help = "the scheduler's API"},
    {"token-file", 0, TR_FLAG_STR, .off = offsetof(struct tr_cli, opt_token_file), .arg = "FILE",
     .env = TR_FLAG_NO_ENV, .help = "read the bearer token from FILE"},
    {"json", 0, TR_FLAG_BOOL, .off = offsetof(struct tr_cli, opt_json), .env = TR_FLAG_NO_ENV,
     .help = "print the API's JSON answer"},
};

/* ====================================================================== */
/* {=== messages and exit codes */

void tr_cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int tr_cli_usage_error(const struct tr_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (cli->cmd != NULL)
        fprintf(stderr, "usage: trellis %s %s\n", cli->cmd->name, cli->cmd->usage);
    return TR_EXIT_USAGE;
}

int tr_cli_exit_code(int rc)
{
    if (rc == TR_EUNAVAIL)
        return TR_EXIT_UNREACHABLE;
    if (rc == TR_ECANCELED)
        return TR_EXIT_INTERRUPTED;
    return TR_EXIT_FAILED;
}

int tr_cli_fail(int rc, const struct tr_error *err)
{
    if (rc == TR_ECANCELED)
        fputs("interrupted\n", stderr);
    else
        tr_cli_error("%s", err->msg);
    return tr_cli_exit_code(rc);
}

static void print_globals(FILE *f)
{
    struct tr_flag_set g = {global_flags, 2, NULL, "TRELLIS_", NULL};
    tr_flags_help_set(&g, f);
}

/* A command's help: usage, summary, its flags from its table, then the global options. */
static void print_command_help(const struct tr_cli_cmd *c, const struct tr_flag_set *own,
                               FILE *f)
{
    fprintf(f, "usage: trellis %s %s\n\n%s\n\n", c->name, c->usage, c->summary);
    if (own != NULL)
        tr_flags_help_set(own, f);
    tr_flags_help_set(&(struct tr_flag_set){common_flags + 2, 1, NULL, NULL, NULL}, f);
    fputs("  -h, --help                  print this help\n"
          "\nGlobal options (also accepted after the command):\n", f);
    print_globals(f);
}

static void print_main_help(FILE *f)
{
    fputs("usage: trellis [--api URL] [--token-file FILE] [--help] [--version] COMMAND [ARGS]\n"
          "\nCommands:\n",
          f);
    for (size_t i = 0; i < TR_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nGlobal options:\n", f);
    print_globals(f);
    fputs("\nRun 'trellis COMMAND --help' for a command's options. Only the global options\n"
          "have TRELLIS_* variables.\n"
          "Exit codes: 0 success, 1 the run failed or the scheduler refused, 2 usage error,\n"
          "3 the scheduler cannot be reached, 130 interrupted.\n",
          f);
}

static const struct tr_cli_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < TR_ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

static int cmd_help(struct tr_cli *cli, int argc, char **argv)
{
    if (argc < 2) {
        print_main_help(stdout);
        return TR_EXIT_OK;
    }
    const struct tr_cli_cmd *c = find_command(argv[1]);
    if (c == NULL)
        return tr_cli_usage_error(cli, "unknown command '%s'", argv[1]);
    if (c->fn == cmd_help || c->fn == cmd_version) {
        print_command_help(c, NULL, stdout);
        return TR_EXIT_OK;
    }
    /* The command prints its own help, from its table. */
    cli->cmd = c;
    char *sub[] = {(char *)c->name, "--help", NULL};
    return c->fn(cli, 2, sub);
}

static int cmd_version(struct tr_cli *cli, int argc, char **argv)
{
    printf("trellis %s\n", TR_CLI_VERSION);
    return TR_EXIT_OK;
}

/* ====================================================================== */
/* {=== options */

int tr_cli_parse(struct tr_cli *cli, int argc, char **argv, const struct tr_flag *flags,
                 size_t n, void *base, int min, int max, const char *what, bool *json_out)
{
    uint8_t source[TR_ARRAY_LEN(common_flags)];
    struct tr_flags f = {
        .prog = "trellis",
        .sets = {{flags, n, base, NULL, NULL},
                 {common_flags, TR_ARRAY_LEN(common_flags), cli, NULL, source}},
    };
    char prog[64];
    snprintf(prog, sizeof(prog), "trellis %s", cli->cmd ? cli->cmd->name : "");
    f.prog = prog;
    struct tr_error err;
    tr_error_init(&err);
    cli->opt_json = false;
    int rc = tr_flags_parse(&f, argc, argv, &cli->n_args, &err);
    if (rc == TR_FLAGS_HELP) {
        print_command_help(cli->cmd, &f.sets[0], stdout);
        return TR_EXIT_OK;
    }
    if (rc != 0)
        return tr_cli_usage_error(cli, "%s", err.msg);
    cli->api = cli->opt_api;
    if (source[1] == TR_FLAG_FROM_ARGV)
        cli->token_file_from_env = false;
    if (json_out != NULL)
        *json_out = cli->opt_json;
    if (cli->n_args < min)
        return tr_cli_usage_error(cli, "missing %s", what);
    if (cli->n_args > max)
        return tr_cli_usage_error(cli, "unexpected argument '%s'", argv[1 + max]);
    return -1;
}

int tr_cli_parse_simple(struct tr_cli *cli, int argc, char **argv, int min, int max,
                        const char *what, bool *json_out)
{
    return tr_cli_parse(cli, argc, argv, NULL, 0, NULL, min, max, what, json_out);
}

void tr_cli_flags_release(const struct tr_flag *flags, size_t n, void *base)
{
    struct tr_flag_set s = {flags, n, base, NULL, NULL};
    tr_flag_set_release(&s);
}

/* ====================================================================== */
/* {=== client and token */

/* Reads the first non-empty line of path into *out (tr_free); prints why not. */
static bool read_token_file(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        tr_cli_error("cannot read token file '%s': %s", path, strerror(errno));
        return false;
    }
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        size_t a = 0;
        size_t b = strlen(line);
        while (a < b && (line[a] == ' ' || line[a] == '\t'))
            a++;
        while (b > a && (line[b - 1] == '\n' || line[b - 1] == '\r' || line[b - 1] == ' ' ||
                         line[b - 1] == '\t'))
            b--;
        if (b > a && line[a] != '#') {
            /* The token is the line's first field: a line of the scheduler's
             * file ("TOKEN ROLE TENANT") works as it is. */
            size_t t = a;
            while (t < b && line[t] != ' ' && line[t] != '\t')
                t++;
            *out = tr_strndup(line + a, t - a);
            found = true;
        }
    }
    memset(line, 0, sizeof(line));
    fclose(f);
    if (!found) {
        tr_cli_error("token file '%s' holds no token", path);
        return false;
    }
    if (*out == NULL) {
        tr_cli_error("out of memory");
        return false;
    }
    return true;
}

struct tr_client *tr_cli_client(struct tr_cli *cli)
{
    if (cli->client != NULL)
        return cli->client;
    char *token = NULL;
    const char *file = cli->opt_token_file;
    const char *env_token = getenv("TRELLIS_TOKEN");
    /* --token-file beats TRELLIS_TOKEN, which beats TRELLIS_TOKEN_FILE. */
    if (cli->token_file_from_env && env_token != NULL && env_token[0] != '\0')
        file = NULL;
    if (file != NULL && file[0] != '\0') {
        if (!read_token_file(file, &token))
            return NULL;
    } else if (env_token != NULL && env_token[0] != '\0') {
        token = tr_strdup(env_token);
        if (token == NULL) {
            tr_cli_error("out of memory");
            return NULL;
        }
    }
    cli->client = tr_client_open(cli->api, token);
    if (token != NULL) {
        memset(token, 0, strlen(token));
        tr_free(token);
    }
    if (cli->client == NULL) {
        tr_cli_error("cannot set up an HTTP client for '%s'", cli->api);
        return NULL;
    }
    tr_client_set_interrupt(cli->client, &tr_cli_interrupted);
    return cli->client;
}

/* ====================================================================== */
/* {=== main */

static void on_signal(int sig)
{
    tr_cli_interrupted = 1;
    tr_cli_signal = sig;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking poll or sleep must return so the flag is seen. */
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv)
{
    struct tr_cli cli;
    memset(&cli, 0, sizeof(cli));
    uint8_t source[TR_ARRAY_LEN(global_flags)];
    /* Stop at the command: what follows is its own. */
    struct tr_flags f = {
        .prog = "trellis",
        .sets = {{global_flags, TR_ARRAY_LEN(global_flags), &cli, "TRELLIS_", source}},
        .mode = TR_FLAGS_STOP_AT_OPERAND,
    };
    struct tr_error err;
    tr_error_init(&err);
    int n_args = 0;
    int code = TR_EXIT_USAGE;
    int rc = tr_flags_parse(&f, argc, argv, &n_args, &err);
    if (rc == TR_FLAGS_HELP) {
        print_main_help(stdout);
        code = TR_EXIT_OK;
        goto out;
    }
    if (rc != 0) {
        tr_cli_error("%s", err.msg);
        fputs("usage: trellis [--api URL] [--token-file FILE] COMMAND [ARGS]\n", stderr);
        goto out;
    }
    if (cli.opt_version) {
        code = cmd_version(&cli, argc, argv);
        goto out;
    }
    cli.api = cli.opt_api;
    cli.token_file_from_env = source[1] == TR_FLAG_FROM_ENV;
    if (n_args == 0) {
        print_main_help(stderr);
        goto out;
    }
    const struct tr_cli_cmd *cmd = find_command(argv[1]);
    if (cmd == NULL) {
        tr_cli_error("'%s' is not a trellis command; see 'trellis --help'", argv[1]);
        goto out;
    }
    cli.cmd = cmd;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        tr_cli_error("cannot initialise libcurl");
        code = TR_EXIT_FAILED;
        goto out;
    }
    install_signals();
    code = cmd->fn(&cli, n_args, argv + 1);
    tr_client_close(cli.client);
    curl_global_cleanup();
    if (fflush(stdout) != 0 && code == TR_EXIT_OK) {
        tr_cli_error("cannot write the output: %s", strerror(errno));
        code = TR_EXIT_FAILED;
    }
out:
    tr_flags_release(&f);
    return code;
}
