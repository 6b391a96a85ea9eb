/*
 * cli.h - what the `trellis` subcommands share: the command context, exit
 * codes, option parsing, output helpers (tables, times, JSON) and the run
 * helpers that both `trellis run` and `trellis dev --run` use.
 *
 * Everything here runs on the CLI's only thread.
 */
#ifndef TR_CLI_CLI_H
#define TR_CLI_CLI_H

#include <jansson.h>
#include <signal.h>

#include "cli/client.h"
#include "lib/base/flags.h"

#define TR_CLI_VERSION "0.1.0" /* kept in step with project(VERSION) in CMakeLists.txt */
#define TR_CLI_DEFAULT_API "http://127.0.0.1:8420"

/* Exit codes, documented in docs/cli.md. */
enum tr_exit
{
    TR_EXIT_OK = 0,            /* success */
    TR_EXIT_FAILED = 1,        /* the run failed or was cancelled, or the scheduler said no */
    TR_EXIT_USAGE = 2,         /* bad command line */
    TR_EXIT_UNREACHABLE = 3,   /* no answer from the scheduler */
    TR_EXIT_INTERRUPTED = 130  /* Ctrl-C (128 + SIGINT), as shells report it */
};

struct tr_cli_cmd;

/* The context of one invocation. */
struct tr_cli
{
    const char *api;                /* base URL of the scheduler (opt_api, or dev's) */
    const struct tr_cli_cmd *cmd;   /* the subcommand being run */
    struct tr_client *client;       /* made by tr_cli_client() on first use */
    int n_args;                     /* operands after tr_cli_parse: argv[1..n_args] */
    /* private: the global options' values, owned; see main.c */
    char *opt_api;                  /* --api / TRELLIS_API */
    char *opt_token_file;           /* --token-file / TRELLIS_TOKEN_FILE, or NULL */
    bool token_file_from_env;       /* TRELLIS_TOKEN then beats it */
    bool opt_version;               /* --version */
    bool opt_json;                  /* --json */
};

/* A subcommand: returns the process's exit code. argv[0] is the command's name. */
typedef int (*tr_cli_fn)(struct tr_cli *cli, int argc, char **argv);

struct tr_cli_cmd
{
    const char *name;     /* "run" */
    tr_cli_fn fn;         /* does it; `trellis help CMD` calls it with --help */
    const char *usage;    /* argument synopsis after the name */
    const char *summary;  /* one line for `trellis --help` */
};

/* Set by the SIGINT/SIGTERM handler that main installs; read by loops and the client. */
extern volatile sig_atomic_t tr_cli_interrupted;
/* The signal that set tr_cli_interrupted (SIGINT or SIGTERM), 0 before. */
extern volatile sig_atomic_t tr_cli_signal;

/* Prints "error: ..." on stderr. */
void tr_cli_error(const char *fmt, ...) TR_PRINTF(1, 2);

/* Prints "error: ..." and the command's usage line on stderr; returns TR_EXIT_USAGE. */
int tr_cli_usage_error(const struct tr_cli *cli, const char *fmt, ...) TR_PRINTF(2, 3);

/* The exit code for a client failure: TR_EXIT_UNREACHABLE, TR_EXIT_INTERRUPTED or FAILED. */
int tr_cli_exit_code(int rc);

/* Prints err's message as an error and returns tr_cli_exit_code(rc). */
int tr_cli_fail(int rc, const struct tr_error *err);

/*
 * The client for cli->api, made on first use (reading the token from
 * --token-file, TRELLIS_TOKEN or TRELLIS_TOKEN_FILE). NULL after printing
 * the reason; the caller exits with TR_EXIT_USAGE.
 */
struct tr_client *tr_cli_client(struct tr_cli *cli);

/* ====================================================================== */
/* {=== option parsing */

/*
 * Parses a command's line (argv[0] the command's name) with lib/base/flags:
 * its own flags (flags/n, stored into base; a command's flags have no
 * TRELLIS_* variable unless the entry names one, because --slots or --state
 * would otherwise read the daemons' TRELLIS_SLOTS or TRELLIS_STATE), the
 * global --api and --token-file (also accepted after the command), --json
 * and --help. Operands may come anywhere; they end up in argv[1..n_args]
 * and their count is checked against [min, max] (what names the first
 * missing one). *json_out (may be NULL) tells whether --json was given.
 * Returns -1 to go on, or the exit code after printing the help (0) or the
 * error (2). The caller frees what flags stored with tr_cli_flags_release.
 */
int tr_cli_parse(struct tr_cli *cli, int argc, char **argv, const struct tr_flag *flags,
                 size_t n, void *base, int min, int max, const char *what, bool *json_out);

/* Frees the strings and lists tr_cli_parse stored into base. */
void tr_cli_flags_release(const struct tr_flag *flags, size_t n, void *base);

/* ====================================================================== */
/* {=== output */

/* Prints j as indented JSON followed by a newline; 0 or TR_EIO. */
int tr_cli_print_json(FILE *f, const json_t *j) TR_MUST_CHECK;

/* Parses an RFC 3339 UTC time ("2026-11-27T02:55:00.123Z"); false when s is not one. */
bool tr_cli_parse_time(const char *s, double *out);

/* "850ms", "12.3s", "2m03s", "1h02m", "3d04h". */
void tr_cli_fmt_duration(double secs, char *out, size_t n);

/* The time between two API timestamps as a duration, or "-" when either is missing. */
void tr_cli_fmt_between(const json_t *from, const json_t *to, char *out, size_t n);

/* How long ago an API timestamp was ("12s ago"), or "-" when it is null. */
void tr_cli_fmt_age(const json_t *when, char *out, size_t n);

/* Finished tasks (succeeded, failed, skipped, cancelled) and the total of a "tasks" object. */
void tr_cli_task_counts(const json_t *tasks, long long *done, long long *total);

struct tr_table;

/* A table with the given column headers (copied). NULL when out of memory. */
struct tr_table *tr_table_new(size_t ncols, const char *const *headers) TR_MUST_CHECK;
void tr_table_free(struct tr_table *t);

/* Adds a row of ncols cells (copied; NULL prints "-"). 0 or TR_ENOMEM. */
int tr_table_add(struct tr_table *t, const char *const *cells) TR_MUST_CHECK;

/* Number of rows added. */
size_t tr_table_rows(const struct tr_table *t);

/* Prints headers and rows in aligned columns, two spaces apart. */
void tr_table_print(const struct tr_table *t, FILE *f);

/* ====================================================================== */
/* {=== requests (request.c) */

/*
 * Calls the API (30-second timeout) and prints a failure as an error,
 * prefixed with context when given (context is not used when the scheduler
 * cannot be reached: that message stands alone). Returns 0 with *out set (the
 * caller's reference), or the exit code.
 */
int tr_cli_call(struct tr_cli *cli, const char *method, const char *path, const json_t *body,
                json_t **out, const char *context);

/* tr_cli_call("GET") of tr_cli_path(prefix, segment, suffix). */
int tr_cli_get_one(struct tr_cli *cli, const char *prefix, const char *segment,
                   const char *suffix, json_t **out);

/* prefix, segment percent-encoded, suffix (tr_free); NULL when out of memory. */
char *tr_cli_path(const char *prefix, const char *segment, const char *suffix) TR_MUST_CHECK;

/* Prints j as JSON on stdout for --json; returns the exit code. */
int tr_cli_print_raw(const json_t *j);

/*
 * A {"source", "name"} body for the pipeline file at path (name is its base
 * name), or NULL after printing why (unreadable, too large, not UTF-8).
 */
json_t *tr_cli_source_body(const char *path) TR_MUST_CHECK;

/* tr_cli_parse with no flags but the common ones. */
int tr_cli_parse_simple(struct tr_cli *cli, int argc, char **argv, int min, int max,
                        const char *what, bool *json_out);

/* j's string value, or dflt when j is not a string. Borrowed from j. */
const char *tr_cli_str(const json_t *j, const char *dflt);

/* ====================================================================== */
/* {=== system helpers (sys.c) */

/* Sleeps up to ms milliseconds; a signal (Ctrl-C) ends it early, as wanted. */
void tr_cli_nap(long ms);

/*
 * The path of a program that ships with trellis (tr_free): next to this
 * executable, then where a build tree puts it (../scheduler, ../worker), then
 * on PATH. NULL when not found.
 */
char *tr_cli_find_binary(const char *name) TR_MUST_CHECK;

/* A TCP port on 127.0.0.1 that is free right now, or -1 with errno set. */
int tr_cli_free_port(void);

/* mkdir -p dir; false after printing why not (also when dir is not a directory). */
bool tr_cli_make_dirs(const char *dir);

/*
 * Our environment for the daemons we start (the array is tr_free'd, the
 * strings are borrowed from environ), without TRELLIS_API: to the CLI it is a
 * URL, to the scheduler HOST:PORT. NULL when out of memory.
 */
char **tr_cli_child_environment(void) TR_MUST_CHECK;

/* "exited with status 1" or "was killed by signal 9 (Killed)" for a wait status. */
void tr_cli_describe_status(int status, char *out, size_t n);

/* Prints the last lines of a log file, indented, on stderr. */
void tr_cli_print_log_tail(const char *path);

/* ====================================================================== */
/* {=== runs (cmd_runs.c), shared with `trellis dev --run` */

/*
 * Adds "KEY=VALUE" to the params object: VALUE as JSON when it parses as
 * JSON (number, true, false, null, array, object, "quoted string"), else as
 * a plain string; a repeated key replaces the earlier value. Prints the
 * reason and returns TR_EXIT_USAGE when kv has no '=' or an empty key,
 * TR_EXIT_FAILED when out of memory, 0 otherwise.
 */
int tr_cli_add_param(json_t *params, const char *kv);

/*
 * Starts a run of what (a file, or a registered NAME[@VERSION] when no such
 * file exists) with params (may be NULL). On success *run_id is the new
 * run's id (the caller frees it with tr_free) and 0 is returned; otherwise
 * the reason was printed and the exit code is returned.
 */
int tr_cli_start_run(struct tr_cli *cli, const char *what, const json_t *params, char **run_id);

/* Called between polls of tr_cli_wait_run, e.g. to supervise child processes. */
typedef void (*tr_cli_tick_fn)(void *arg);

/* How tr_cli_wait_run behaves. Zero-initialise, then set what is needed. */
struct tr_cli_wait_opts
{
    bool json_out;       /* print the whole run object instead of its output */
    bool no_cancel_hint; /* on Ctrl-C, do not explain how to cancel (the caller will) */
    tr_cli_tick_fn tick; /* called between polls, or NULL */
    void *tick_arg;      /* passed to tick */
};

/*
 * Waits for a run to finish, showing progress on stderr, then prints its
 * output as JSON on stdout (or the whole run object) and returns 0; on
 * failure prints the failed tasks and their errors on stderr and returns
 * TR_EXIT_FAILED (cancelled runs too). Ctrl-C stops waiting (the run goes
 * on) and returns TR_EXIT_INTERRUPTED. A scheduler that stops answering is
 * retried for 15 s before TR_EXIT_UNREACHABLE.
 */
int tr_cli_wait_run(struct tr_cli *cli, const char *run_id, const struct tr_cli_wait_opts *o);

/* The commands. */
int tr_cmd_run(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_status(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_tasks(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_logs(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_cancel(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_approve(struct tr_cli *cli, int argc, char **argv);
/* cmd_runctl.c */
int tr_cmd_retry(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_delete(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_runs(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_workers(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_pipelines(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_register(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_dev(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_keygen(struct tr_cli *cli, int argc, char **argv);
/* cmd_feedback.c */
int tr_cmd_feedback(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_labels(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_label(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_models(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_triggers(struct tr_cli *cli, int argc, char **argv);
int tr_cmd_audit(struct tr_cli *cli, int argc, char **argv);

#endif
