/*
 * main.c - the `trellis` command: global flags, the subcommand table and
 * exit codes.
 *
 * Dispatch follows git.c: a table of {name, function}, the global flags
 * before the subcommand, each subcommand parsing the rest of the line. The
 * global flags --api and --token-file are also accepted after the
 * subcommand, where users tend to type them. SIGINT and SIGTERM only set a
 * flag (tr_cli_interrupted) so that a waiting command can stop cleanly and
 * `trellis dev` can take its children down before exiting.
 */
#include <curl/curl.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"

volatile sig_atomic_t tr_cli_interrupted;
volatile sig_atomic_t tr_cli_signal;

static int cmd_help(struct tr_cli *cli, int argc, char **argv);
static int cmd_version(struct tr_cli *cli, int argc, char **argv);

static const struct tr_cli_cmd commands[] = {
    {"run", tr_cmd_run, "FILE|NAME[@VERSION] [-p KEY=VALUE]... [--wait] [--json]",
     "start a run of a pipeline file or of a registered pipeline",
     "  -p, --param KEY=VALUE  override a pipeline parameter (VALUE is JSON, or else a string)\n"
     "  -w, --wait             wait for the run to finish and print its output\n"
     "      --json             print the API's JSON answer\n"},
    {"status", tr_cmd_status, "RUN [--json]", "show a run's state, times, task counts and output",
     "      --json             print the API's JSON answer\n"},
    {"tasks", tr_cmd_tasks, "RUN [--json]", "list a run's task instances",
     "      --json             print the API's JSON answer\n"},
    {"logs", tr_cmd_logs, "RUN [TASK] [--json]", "print the lines tasks wrote with ctx.log",
     "      --json             print the API's JSON answer\n"},
    {"cancel", tr_cmd_cancel, "RUN [--json]", "cancel a queued or running run",
     "      --json             print the API's JSON answer\n"},
    {"runs", tr_cmd_runs, "[--state STATE] [--limit N] [--json]", "list runs, newest first",
     "      --state STATE      only runs in STATE (queued, running, succeeded, failed,\n"
     "                         cancelled)\n"
     "      --limit N          at most N runs (default 50, at most 1000)\n"
     "      --json             print the API's JSON answer\n"},
    {"workers", tr_cmd_workers, "[--json]", "list connected workers",
     "      --json             print the API's JSON answer\n"},
    {"pipelines", tr_cmd_pipelines, "[--json]", "list registered pipelines",
     "      --json             print the API's JSON answer\n"},
    {"register", tr_cmd_register, "FILE [--json]", "register a pipeline file by name and version",
     "      --json             print the API's JSON answer\n"},
    {"dev", tr_cmd_dev,
     "[--workers N] [--gpu-workers M] [--data DIR] [--api HOST:PORT] [--slots N]\n"
     "                   [--run FILE [-p KEY=VALUE]... [--json]]",
     "start a local cluster (scheduler and workers) in the foreground",
     "      --workers N        CPU workers to start (default 2)\n"
     "      --gpu-workers M    GPU workers to start (default 1)\n"
     "      --data DIR         state and logs directory (default ./.trellis)\n"
     "      --api HOST:PORT    where the scheduler serves the API (default 127.0.0.1:8420)\n"
     "      --slots N          task slots per worker (default 16)\n"
     "      --timeout SECONDS  how long to wait for the cluster to be ready (default 15)\n"
     "      --run FILE         run FILE once the cluster is ready, print its output, stop\n"
     "  -p, --param KEY=VALUE  a parameter for --run\n"
     "      --json             with --run: print the whole run object\n"},
    {"keygen", tr_cmd_keygen, "NAME [--dir DIR]",
     "make a CURVE key pair for the worker port (NAME.key, NAME.pub)",
     "      --dir DIR          where to write the files (default .)\n"},
    {"feedback", tr_cmd_feedback,
     "RUN --score N [--task T] [--comment TEXT] [--correction TEXT] | export [--format chat-jsonl]",
     "rate a run's answer, or export corrections for fine-tuning",
     "      --score N          -1 or 1 (thumbs), 1..5 (stars)\n"
     "      --scale S          thumbs or stars (1 alone is a thumb up)\n"
     "      --task T           the task rated (default: the run's answer)\n"
     "      --index I          its map element\n"
     "      --comment TEXT     a comment (at most 64 KiB)\n"
     "      --correction TEXT  the answer it should have given\n"
     "      --label TEXT       a short label\n"
     "      --user NAME        who gives it (default $USER)\n"
     "  export [--format chat-jsonl] [--pipeline P] [--limit N]\n"
     "                         print prompt and corrected-answer pairs, one JSON a line\n"},
    {"labels", tr_cmd_labels, "[--pipeline P] [--state queued|labelled|all] [--limit N]",
     "list the labelling queue, most uncertain first", NULL},
    {"label", tr_cmd_label, "ITEM VALUE [--user NAME]",
     "label a queued item (VALUE is JSON, or else a string)", NULL},
    {"models", tr_cmd_models,
     "[NAME | history NAME | promote NAME ALIAS VERSION [--reason TEXT] [--user NAME]]",
     "list the model registry, a model's versions, its alias history; move an alias", NULL},
    {"help", cmd_help, "[COMMAND]", "show help for trellis or a command", NULL},
    {"version", cmd_version, "", "print the version", NULL},
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

static void print_command_help(const struct tr_cli_cmd *c, FILE *f)
{
    fprintf(f, "usage: trellis %s %s\n\n%s\n", c->name, c->usage, c->summary);
    if (c->help != NULL)
        fprintf(f, "\n%s", c->help);
    fputs("\nGlobal options (also accepted after the command):\n"
          "      --api URL          the scheduler's API (env TRELLIS_API, default "
          TR_CLI_DEFAULT_API ")\n"
          "      --token-file FILE  read the bearer token from FILE (env TRELLIS_TOKEN_FILE,\n"
          "                         or the token itself in TRELLIS_TOKEN)\n",
          f);
}

static void print_main_help(FILE *f)
{
    fputs("usage: trellis [--api URL] [--token-file FILE] [--help] [--version] COMMAND [ARGS]\n"
          "\nCommands:\n",
          f);
    for (size_t i = 0; i < TR_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'trellis COMMAND --help' for a command's options.\n"
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
    print_command_help(c, stdout);
    return TR_EXIT_OK;
}

static int cmd_version(struct tr_cli *cli, int argc, char **argv)
{
    printf("trellis %s\n", TR_CLI_VERSION);
    return TR_EXIT_OK;
}

/* ====================================================================== */
/* {=== options */

bool tr_cli_parse_long(const char *s, long min, long max, long *out)
{
    if (s == NULL || s[0] == '\0')
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

#define MAX_LONGOPTS 32

int tr_cli_getopt(struct tr_cli *cli, int argc, char **argv, const char *shortopts,
                  const struct option *longopts)
{
    static const struct option common[] = {
        {"api", required_argument, NULL, TR_OPT_API},
        {"token-file", required_argument, NULL, TR_OPT_TOKEN_FILE},
        {"json", no_argument, NULL, TR_OPT_JSON},
        {"help", no_argument, NULL, 'h'},
    };
    struct option all[MAX_LONGOPTS];
    size_t n = 0;
    for (size_t i = 0; longopts != NULL && longopts[i].name != NULL; i++) {
        TR_ASSERT(n < MAX_LONGOPTS - TR_ARRAY_LEN(common) - 1);
        all[n++] = longopts[i];
    }
    for (size_t i = 0; i < TR_ARRAY_LEN(common); i++) {
        bool overridden = false;
        for (size_t j = 0; j < n; j++)
            overridden = overridden || strcmp(all[j].name, common[i].name) == 0;
        if (!overridden)
            all[n++] = common[i];
    }
    memset(&all[n], 0, sizeof(all[n]));

    char shorts[64];
    int sn = snprintf(shorts, sizeof(shorts), ":h%s", shortopts ? shortopts : "");
    TR_ASSERT(sn > 0 && (size_t)sn < sizeof(shorts));

    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, shorts, all, NULL);
        switch (opt) {
        case TR_OPT_API:
            cli->api = optarg;
            continue;
        case TR_OPT_TOKEN_FILE:
            cli->token_file = optarg;
            continue;
        case 'h':
            print_command_help(cli->cmd, stdout);
            cli->exit_code = TR_EXIT_OK;
            return TR_OPT_EXIT;
        case ':':
            cli->exit_code = tr_cli_usage_error(cli, "option '%s' needs a value",
                                                argv[optind - 1]);
            return TR_OPT_EXIT;
        case '?': {
            const char *bad = optopt ? NULL : argv[optind - 1];
            if (bad == NULL) {
                cli->exit_code = tr_cli_usage_error(cli, "unknown option '-%c'", optopt);
            } else {
                /* With --opt=value, show the option only. */
                const char *eq = strchr(bad, '=');
                int len = eq ? (int)(eq - bad) : (int)strlen(bad);
                cli->exit_code = tr_cli_usage_error(cli, "unknown option '%.*s'", len, bad);
            }
            return TR_OPT_EXIT;
        }
        default:
            return opt;
        }
    }
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
            *out = tr_strndup(line + a, b - a);
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
    const char *file = cli->token_file;
    const char *env_token = getenv("TRELLIS_TOKEN");
    if (file == NULL && (env_token == NULL || env_token[0] == '\0'))
        file = getenv("TRELLIS_TOKEN_FILE");
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
    cli->client = tr_client_new(cli->api, token);
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
    cli.api = getenv("TRELLIS_API");
    if (cli.api == NULL || cli.api[0] == '\0')
        cli.api = TR_CLI_DEFAULT_API;

    static const struct option global[] = {
        {"api", required_argument, NULL, TR_OPT_API},
        {"token-file", required_argument, NULL, TR_OPT_TOKEN_FILE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    for (;;) {
        /* '+': stop at the subcommand, whose options are its own. */
        int opt = getopt_long(argc, argv, "+:h", global, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case TR_OPT_API:
            cli.api = optarg;
            break;
        case TR_OPT_TOKEN_FILE:
            cli.token_file = optarg;
            break;
        case 'h':
            print_main_help(stdout);
            return TR_EXIT_OK;
        case 'V':
            return cmd_version(&cli, argc, argv);
        case ':':
            tr_cli_error("option '%s' needs a value", argv[optind - 1]);
            return TR_EXIT_USAGE;
        default:
            tr_cli_error("unknown option '%s'", argv[optind - 1]);
            fputs("usage: trellis [--api URL] [--token-file FILE] COMMAND [ARGS]\n", stderr);
            return TR_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        print_main_help(stderr);
        return TR_EXIT_USAGE;
    }
    const struct tr_cli_cmd *cmd = find_command(argv[optind]);
    if (cmd == NULL) {
        tr_cli_error("'%s' is not a trellis command; see 'trellis --help'", argv[optind]);
        return TR_EXIT_USAGE;
    }
    cli.cmd = cmd;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        tr_cli_error("cannot initialise libcurl");
        return TR_EXIT_FAILED;
    }
    install_signals();
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    /* optind = 0 makes glibc's getopt start over for the subcommand's argv. */
    optind = 0;
    int code = cmd->fn(&cli, sub_argc, sub_argv);
    tr_client_free(cli.client);
    curl_global_cleanup();
    if (fflush(stdout) != 0 && code == TR_EXIT_OK) {
        tr_cli_error("cannot write the output: %s", strerror(errno));
        code = TR_EXIT_FAILED;
    }
    return code;
}
