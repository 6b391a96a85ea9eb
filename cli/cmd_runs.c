/*
 * cmd_runs.c - the commands that start and follow one run: run, status and
 * cancel, and the wait loop that `trellis dev --run` shares.
 *
 * Waiting follows the run's event stream (GET /v1/runs/{id}/events): progress
 * moves as tasks finish, the end is seen at once, and a broken connection is
 * resumed with the id of the last event read. A scheduler without the
 * stream, and `trellis dev --run` (which checks its cluster between polls),
 * use the long poll (GET /v1/runs/{id}?wait=2) instead.
 */
#include <sys/stat.h>
#include <unistd.h>

#include <stddef.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/base/states.h"

#define WAIT_POLL_S 2 /* seconds of long poll: one digit */
#define UNREACHABLE_RETRY_S 15.0

/* ====================================================================== */
/* {=== trellis run */

int tr_cli_add_param(json_t *params, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv) {
        tr_cli_error("parameter '%s' is not KEY=VALUE", kv);
        return TR_EXIT_USAGE;
    }
    const char *val = eq + 1;
    json_error_t jerr;
    json_t *v = json_loads(val, JSON_DECODE_ANY, &jerr);
    if (v == NULL) {
        v = json_string(val);
        if (v == NULL) {
            tr_cli_error("parameter '%.*s' is not valid UTF-8", (int)(eq - kv), kv);
            return TR_EXIT_USAGE;
        }
    }
    char *key = tr_strndup(kv, (size_t)(eq - kv));
    if (key == NULL || json_object_set_new(params, key, v) < 0) {
        tr_free(key);
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    tr_free(key);
    return 0;
}

/* A registered pipeline name looks like "rag-answer" or "rag-answer@3": no path, no suffix. */
static bool looks_like_name(const char *what)
{
    size_t n = strlen(what);
    return n > 0 && strchr(what, '/') == NULL && !(n > 4 && strcmp(what + n - 4, ".lua") == 0);
}

int tr_cli_start_run(struct tr_cli *cli, const char *what, const json_t *params, char **run_id)
{
    *run_id = NULL;
    json_t *body;
    struct stat st;
    if (stat(what, &st) != 0 && errno == ENOENT && looks_like_name(what)) {
        body = json_pack("{s:s}", "pipeline", what);
        if (body == NULL) {
            tr_cli_error("out of memory");
            return TR_EXIT_FAILED;
        }
    } else {
        body = tr_cli_source_body(what);
        if (body == NULL)
            return TR_EXIT_USAGE;
    }
    if (params != NULL && json_object_size(params) > 0 &&
        json_object_set(body, "params", (json_t *)params) < 0) {
        json_decref(body);
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    char context[512];
    snprintf(context, sizeof(context), "cannot start a run of '%s'", what);
    json_t *ans;
    int code = tr_cli_call(cli, "POST", "/v1/runs", body, &ans, context);
    json_decref(body);
    if (code != 0)
        return code;
    const char *id = json_string_value(json_object_get(ans, "run_id"));
    if (id == NULL) {
        tr_cli_error("unexpected answer from %s: no run_id", cli->api);
        json_decref(ans);
        return TR_EXIT_FAILED;
    }
    *run_id = tr_strdup(id);
    json_decref(ans);
    if (*run_id == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    return 0;
}

static bool is_final(const char *state)
{
    return state != NULL && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                             strcmp(state, "cancelled") == 0);
}

/* Progress on stderr: one rewritten line on a terminal, a line per change otherwise. */
struct progress
{
    bool tty;          /* stderr is a terminal */
    size_t shown;      /* width of the line currently on the terminal */
    char last[256];    /* the last text shown */
};

static void progress_show(struct progress *p, const char *text)
{
    if (strcmp(text, p->last) == 0)
        return;
    snprintf(p->last, sizeof(p->last), "%s", text);
    if (!p->tty) {
        fprintf(stderr, "%s\n", text);
        return;
    }
    size_t n = strlen(text);
    fprintf(stderr, "\r%s", text);
    for (size_t i = n; i < p->shown; i++)
        fputc(' ', stderr);
    p->shown = n;
    fflush(stderr);
}

static void progress_end(struct progress *p)
{
    if (p->tty && p->shown > 0) {
        fputc('\n', stderr);
        p->shown = 0;
    }
}

/* Prints every failed task instance of a run with its error, on stderr. */
static void print_failed_tasks(struct tr_cli *cli, const char *run_id)
{
    char *path = tr_cli_path("/v1/runs/", run_id, "/tasks");
    json_t *ans = NULL;
    if (path == NULL ||
        tr_cli_call(cli, "GET", path, NULL, &ans, "cannot list the run's tasks") != 0) {
        tr_free(path);
        return;
    }
    tr_free(path);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(ans, "tasks"), i, t)
    {
        if (strcmp(tr_cli_str(json_object_get(t, "state"), ""), "failed") != 0)
            continue;
        const char *name = tr_cli_str(json_object_get(t, "name"), "?");
        long long index = json_integer_value(json_object_get(t, "index"));
        long long attempts = json_integer_value(json_object_get(t, "attempts"));
        const char *error = tr_cli_str(json_object_get(t, "error"), "(no message)");
        char where[256] = "";
        if (index > 0)
            snprintf(where, sizeof(where), "[%lld]", index);
        fprintf(stderr, "task '%s%s' failed after %lld attempt%s:\n", name, where, attempts,
                attempts == 1 ? "" : "s");
        /* Tracebacks span lines: indent them all under the task. */
        for (const char *p = error; *p;) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(stderr, "    %.*s\n", len, p);
            p += len + (nl ? 1 : 0);
        }
    }
    json_decref(ans);
}

static void cancel_hint(const struct tr_cli *cli, const char *run_id)
{
    if (strcmp(cli->api, TR_CLI_DEFAULT_API) == 0)
        fprintf(stderr, "stopped waiting; run %s goes on (cancel it with 'trellis cancel %s')\n",
                run_id, run_id);
    else
        fprintf(stderr,
                "stopped waiting; run %s goes on (cancel it with 'trellis --api %s cancel %s')\n",
                run_id, cli->api, run_id);
}

/* Shows a finished run: output, or what failed. Returns the exit code. */
static int finish(struct tr_cli *cli, const char *run_id, const json_t *run, bool json_out)
{
    const char *state = json_string_value(json_object_get(run, "state"));
    char took[32];
    tr_cli_fmt_between(json_object_get(run, "created_at"), json_object_get(run, "finished_at"),
                       took, sizeof(took));
    long long done, total;
    tr_cli_task_counts(json_object_get(run, "tasks"), &done, &total);
    int code = TR_EXIT_OK;
    if (strcmp(state, "succeeded") == 0) {
        fprintf(stderr, "run %s succeeded in %s (%lld task%s)\n", run_id, took, total,
                total == 1 ? "" : "s");
    } else if (strcmp(state, "cancelled") == 0) {
        fprintf(stderr, "run %s was cancelled\n", run_id);
        code = TR_EXIT_FAILED;
    } else {
        /* Its first line only: the failed tasks' tracebacks follow in full. */
        const char *error = tr_cli_str(json_object_get(run, "error"), "");
        int len = (int)strcspn(error, "\n");
        fprintf(stderr, "run %s failed after %s%s%.*s\n", run_id, took, len ? ": " : "", len,
                error);
        print_failed_tasks(cli, run_id);
        code = TR_EXIT_FAILED;
    }
    if (json_out || code == TR_EXIT_OK) {
        const json_t *what = json_out ? run : json_object_get(run, "output");
        if (tr_cli_print_raw(what ? what : json_null()) != TR_EXIT_OK)
            code = TR_EXIT_FAILED;
    }
    return code;
}

struct seen_inst
{
    bool final;
    char key[];
};

/* What following a run's events has seen. */
struct follow
{
    struct progress *prog;
    const char *run_id;
    struct tr_hmap insts;      /* "name[index]" -> struct seen_inst (the map borrows its key) */
    long long done, seen, total;
    char state[16];            /* the run's last state */
    char last_id[64];          /* the id of the last event read */
    bool ended;                /* the run's final event came */
};

static int on_follow_event(void *arg, const char *type, const char *data, const char *id)
{
    struct follow *f = arg;
    snprintf(f->last_id, sizeof(f->last_id), "%s", id);
    json_error_t jerr;
    json_t *j = json_loads(data, 0, &jerr);
    const char *state = json_string_value(json_object_get(j, "state"));
    if (state != NULL && strcmp(type, "task") == 0) {
        char key[300];
        snprintf(key, sizeof(key), "%s[%lld]", tr_cli_str(json_object_get(j, "name"), "?"),
                 json_integer_value(json_object_get(j, "index")));
        int st = tr_task_state_parse(state);
        bool final = st >= 0 && tr_task_state_final(st);
        struct seen_inst *si = tr_hmap_gets(&f->insts, key);
        if (si == NULL) {
            size_t n = strlen(key);
            si = tr_malloc(sizeof(*si) + n + 1);
            if (si != NULL) {
                memcpy(si->key, key, n + 1);
                si->final = false;
                if (tr_hmap_put(&f->insts, si->key, n, si) == 0)
                    f->seen++;
                else
                    tr_free_null(&si);
            }
        }
        if (si != NULL && si->final != final) {
            f->done += final ? 1 : -1;
            si->final = final;
        }
    } else if (state != NULL && strcmp(type, "run") == 0) {
        snprintf(f->state, sizeof(f->state), "%s", state);
        f->ended = is_final(state);
    }
    json_decref(j);
    char text[256];
    snprintf(text, sizeof(text), "run %s: %s, %lld/%lld tasks done", f->run_id,
             f->state[0] ? f->state : "?", f->done, f->total > f->seen ? f->total : f->seen);
    progress_show(f->prog, text);
    return f->ended ? 1 : 0;
}

/*
 * Follows the run's events until its final one. Returns 0 once it came, a
 * negative code when the scheduler has no event stream (the caller polls),
 * or an exit code (> 0) after printing why it stopped.
 */
static int follow_run(struct tr_cli *cli, struct tr_client *c, const char *path,
                      struct follow *f)
{
    double lost_since = 0;
    for (;;) {
        struct tr_error err;
        tr_error_init(&err);
        int rc = tr_client_stream(c, path, f->last_id[0] ? f->last_id : NULL, on_follow_event,
                                  f, &err);
        if (f->ended)
            return 0;
        if (rc == TR_ECANCELED || tr_cli_interrupted)
            return TR_EXIT_INTERRUPTED;
        long status = tr_client_status(c);
        if (rc < 0 && (status == 404 || status == 405) && f->last_id[0] == '\0')
            return -1; /* an older scheduler, or a run it does not know: let the poll say */
        if (rc == 0 || rc == TR_EUNAVAIL || (rc == TR_EIO && status == 503)) {
            /* The stream ended early (restart, slow client): resume after the last event. */
            double now = tr_now();
            if (rc != 0 && lost_since == 0) {
                lost_since = now;
                progress_end(f->prog);
                fprintf(stderr, "lost contact with the scheduler (%s); retrying for %.0f s\n",
                        err.msg[0] ? err.msg : "stream ended", UNREACHABLE_RETRY_S);
                f->prog->last[0] = '\0';
            } else if (rc != 0 && now - lost_since > UNREACHABLE_RETRY_S) {
                progress_end(f->prog);
                return tr_cli_fail(rc, &err);
            } else if (rc == 0) {
                lost_since = 0;
            }
            tr_cli_nap(rc == 0 ? 100 : 500);
            continue;
        }
        progress_end(f->prog);
        (void)cli;
        return tr_cli_fail(rc < 0 ? rc : TR_EPROTO, &err);
    }
}

/* Waits through the event stream: 0 with *code set, or -1 to fall back to polling. */
static int wait_by_events(struct tr_cli *cli, const char *run_id,
                          const struct tr_cli_wait_opts *o, int *code)
{
    struct tr_client *c = tr_cli_client(cli);
    json_t *run = NULL;
    *code = tr_cli_get_one(cli, "/v1/runs/", run_id, "?wait=0", &run);
    if (*code != 0)
        return 0;
    struct progress prog = {.tty = isatty(STDERR_FILENO) == 1};
    struct follow f = {.prog = &prog, .run_id = run_id};
    tr_hmap_init(&f.insts);
    long long done = 0;
    tr_cli_task_counts(json_object_get(run, "tasks"), &done, &f.total);
    const char *state = json_string_value(json_object_get(run, "state"));
    int rc = 0;
    if (!is_final(state)) {
        json_decref(run);
        run = NULL;
        char *path = tr_cli_path("/v1/runs/", run_id, "/events");
        rc = path ? follow_run(cli, c, path, &f) : TR_EXIT_FAILED;
        tr_free(path);
        if (rc == 0)
            rc = tr_cli_get_one(cli, "/v1/runs/", run_id, "?wait=0", &run);
    }
    size_t it = 0;
    struct seen_inst *si;
    while ((si = tr_hmap_next(&f.insts, &it)) != NULL)
        tr_free(si);
    tr_hmap_release(&f.insts);
    progress_end(&prog);
    if (rc < 0) {
        json_decref(run);
        return -1;
    }
    if (rc == TR_EXIT_INTERRUPTED && !o->no_cancel_hint)
        cancel_hint(cli, run_id);
    *code = rc != 0 ? rc : finish(cli, run_id, run, o->json_out);
    json_decref(run);
    return 0;
}

int tr_cli_wait_run(struct tr_cli *cli, const char *run_id, const struct tr_cli_wait_opts *o)
{
    int evcode = 0;
    if (o->tick == NULL && tr_cli_client(cli) != NULL && wait_by_events(cli, run_id, o, &evcode) == 0)
        return evcode;
    struct tr_client *c = tr_cli_client(cli);
    if (c == NULL)
        return TR_EXIT_USAGE;
    struct tr_buf pb;
    tr_buf_init(&pb, 0);
    char *esc = tr_client_escape(run_id);
    /* The path ends in the wait digit: 0 for the first look, then the long poll. */
    if (esc == NULL || tr_buf_addf(&pb, "/v1/runs/%s?wait=0", esc) < 0) {
        tr_free(esc);
        tr_buf_release(&pb);
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    tr_free(esc);

    struct progress prog = {.tty = isatty(STDERR_FILENO) == 1};
    double lost_since = 0;
    int code = TR_EXIT_FAILED;
    for (;;) {
        if (o->tick != NULL)
            o->tick(o->tick_arg);
        json_t *run = NULL;
        struct tr_error err;
        tr_error_init(&err);
        int rc = TR_ECANCELED;
        double asked = tr_now();
        if (!tr_cli_interrupted)
            rc = tr_client_call(c, "GET", pb.buf, NULL, WAIT_POLL_S + 30, &run, &err);
        if (rc == TR_ECANCELED || tr_cli_interrupted) {
            json_decref(run);
            progress_end(&prog);
            if (!o->no_cancel_hint)
                cancel_hint(cli, run_id);
            code = TR_EXIT_INTERRUPTED;
            break;
        }
        if (rc == TR_EUNAVAIL) {
            /* A scheduler restarting keeps its runs: give it a moment to come back. */
            double now = tr_now();
            if (lost_since == 0) {
                lost_since = now;
                progress_end(&prog);
                fprintf(stderr, "lost contact with the scheduler (%s); retrying for %.0f s\n",
                        err.msg, UNREACHABLE_RETRY_S);
                prog.last[0] = '\0';
            } else if (now - lost_since > UNREACHABLE_RETRY_S) {
                code = tr_cli_fail(rc, &err);
                break;
            }
            tr_cli_nap(500);
            continue;
        }
        if (rc < 0) {
            progress_end(&prog);
            code = tr_cli_fail(rc, &err);
            break;
        }
        pb.buf[pb.len - 1] = (char)('0' + WAIT_POLL_S);
        lost_since = 0;
        const char *state = json_string_value(json_object_get(run, "state"));
        long long done, total;
        tr_cli_task_counts(json_object_get(run, "tasks"), &done, &total);
        char text[256];
        snprintf(text, sizeof(text), "run %s: %s, %lld/%lld tasks done", run_id,
                 state ? state : "?", done, total);
        progress_show(&prog, text);
        if (is_final(state)) {
            progress_end(&prog);
            code = finish(cli, run_id, run, o->json_out);
            json_decref(run);
            break;
        }
        json_decref(run);
        /* A server that answers long polls at once must not make this loop spin. */
        if (tr_now() - asked < 0.2)
            tr_cli_nap(200);
    }
    tr_buf_release(&pb);
    return code;
}

struct run_opts
{
    struct tr_flag_list params; /* -p KEY=VALUE, in order */
    bool wait;                  /* -w */
};

static const struct tr_flag run_flags[] = {
    {"param", 'p', TR_FLAG_LIST, .off = offsetof(struct run_opts, params), .arg = "KEY=VALUE",
     .help = "override a pipeline parameter (VALUE is JSON, or else a string)"},
    {"wait", 'w', TR_FLAG_BOOL, .off = offsetof(struct run_opts, wait),
     .help = "wait for the run to finish and print its output"},
};

int tr_cmd_run(struct tr_cli *cli, int argc, char **argv)
{
    struct run_opts o = {0};
    bool json_out = false;
    json_t *params = NULL;
    int code = tr_cli_parse(cli, argc, argv, run_flags, TR_ARRAY_LEN(run_flags), &o, 1, 1,
                            "FILE", &json_out);
    if (code >= 0)
        goto out;
    code = 0;
    params = json_object();
    if (params == NULL) {
        tr_cli_error("out of memory");
        code = TR_EXIT_FAILED;
        goto out;
    }
    for (size_t i = 0; i < o.params.n && code == 0; i++)
        code = tr_cli_add_param(params, o.params.items[i]);
    if (code != 0)
        goto out;
    bool wait = o.wait;
    char *run_id = NULL;
    code = tr_cli_start_run(cli, argv[1], params, &run_id);
    if (code != 0)
        goto out;
    if (wait) {
        fprintf(stderr, "started run %s\n", run_id);
        struct tr_cli_wait_opts wo = {.json_out = json_out};
        code = tr_cli_wait_run(cli, run_id, &wo);
    } else if (json_out) {
        json_t *j = json_pack("{s:s,s:s}", "run_id", run_id, "state", "queued");
        code = j ? tr_cli_print_raw(j) : TR_EXIT_FAILED;
        json_decref(j);
    } else {
        printf("%s\n", run_id);
    }
    tr_free(run_id);
out:
    json_decref(params);
    tr_cli_flags_release(run_flags, TR_ARRAY_LEN(run_flags), &o);
    return code;
}

/* ====================================================================== */
/* {=== trellis status, tasks, logs, cancel */
static void print_counts(const json_t *tasks)
{
    /* The order a reader wants: outcomes first, then work in flight, then waiting. */
    static const enum tr_task_state order[] = {
        TR_TASK_SUCCEEDED, TR_TASK_FAILED,     TR_TASK_RUNNING, TR_TASK_DISPATCHED, TR_TASK_READY,
        TR_TASK_RETRY_WAIT, TR_TASK_PENDING, TR_TASK_SKIPPED, TR_TASK_CANCELLED};
    printf("tasks:     %lld total", json_integer_value(json_object_get(tasks, "total")));
    const char *sep = ": ";
    for (size_t i = 0; i < TR_ARRAY_LEN(order); i++) {
        const char *name = tr_task_state_names[order[i]];
        long long n = json_integer_value(json_object_get(tasks, name));
        if (n > 0) {
            printf("%s%lld %s", sep, n, name);
            sep = ", ";
        }
    }
    putchar('\n');
}

/* "usage:     3 LLM calls, 9 prompt + 12 completion tokens, cost 0.000033"; nothing
 * without calls. */
static void print_usage(const json_t *usage)
{
    long long calls = json_integer_value(json_object_get(usage, "calls"));
    if (calls <= 0)
        return;
    printf("usage:     %lld LLM call%s, %lld prompt + %lld completion tokens, cost %.6f\n", calls,
           calls == 1 ? "" : "s", json_integer_value(json_object_get(usage, "prompt_tokens")),
           json_integer_value(json_object_get(usage, "completion_tokens")),
           json_number_value(json_object_get(usage, "cost")));
}

int tr_cmd_status(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "RUN", &json_out);
    if (code >= 0)
        return code;
    json_t *run;
    code = tr_cli_get_one(cli, "/v1/runs/", argv[1], "", &run);
    if (code != 0)
        return code;
    if (json_out) {
        code = tr_cli_print_raw(run);
        json_decref(run);
        return code;
    }
    const json_t *created = json_object_get(run, "created_at");
    const json_t *started = json_object_get(run, "started_at");
    const json_t *finished = json_object_get(run, "finished_at");
    const char *version = json_string_value(json_object_get(run, "version"));
    char d[32];
    printf("run:       %s\n", tr_cli_str(json_object_get(run, "run_id"), argv[1]));
    printf("pipeline:  %s", tr_cli_str(json_object_get(run, "pipeline"), "?"));
    if (version != NULL && version[0] != '\0')
        printf(" (version %s)", version);
    putchar('\n');
    printf("state:     %s\n", tr_cli_str(json_object_get(run, "state"), "?"));
    printf("created:   %s\n", tr_cli_str(created, "-"));
    tr_cli_fmt_between(created, started, d, sizeof(d));
    printf("started:   %s", tr_cli_str(started, "-"));
    printf(json_is_string(started) ? " (queued %s)\n" : "\n", d);
    tr_cli_fmt_between(started, finished, d, sizeof(d));
    printf("finished:  %s", tr_cli_str(finished, "-"));
    printf(json_is_string(finished) ? " (took %s)\n" : "\n", d);
    print_counts(json_object_get(run, "tasks"));
    print_usage(json_object_get(run, "usage"));
    const char *error = json_string_value(json_object_get(run, "error"));
    if (error != NULL)
        printf("error:     %s\n", error);
    const json_t *output = json_object_get(run, "output");
    if (output != NULL && !json_is_null(output)) {
        printf("output:\n");
        if (tr_cli_print_json(stdout, output) < 0)
            code = TR_EXIT_FAILED;
    }
    json_decref(run);
    return code;
}

/* The first line of s cut to max code points, with "..." when cut; in out. */
int tr_cmd_cancel(struct tr_cli *cli, int argc, char **argv)
{
    bool json_out;
    int code = tr_cli_parse_simple(cli, argc, argv, 1, 1, "RUN", &json_out);
    if (code >= 0)
        return code;
    const char *run_id = argv[1];
    char *path = tr_cli_path("/v1/runs/", run_id, "/cancel");
    if (path == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    char context[256];
    snprintf(context, sizeof(context), "cannot cancel run '%s'", run_id);
    json_t *ans;
    code = tr_cli_call(cli, "POST", path, NULL, &ans, context);
    tr_free(path);
    if (code != 0)
        return code;
    if (json_out)
        code = tr_cli_print_raw(ans);
    else
        printf("cancelled run %s\n", run_id);
    json_decref(ans);
    return code;
}

/* ====================================================================== */