/*
 * request.c - what the commands share between asking and showing: calling
 * the API with the failure printed, building paths with escaped ids,
 * reading pipeline files and checking operands.
 *
 * Every helper that can fail prints why on stderr and hands back an exit
 * code, so that a command is a straight line of calls.
 */
#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#include <libgen.h>

/* The API refuses bodies above 32 MiB; a pipeline file is far below that. */
#define SOURCE_MAX (32u << 20)

/* ====================================================================== */
/* {=== calls and paths */

/*
 * Calls the API and prints the failure, prefixed with context when given.
 * Returns 0 with *out set, or the exit code.
 */
int tr_cli_call(struct tr_cli *cli, const char *method, const char *path, const json_t *body,
                json_t **out, const char *context)
{
    *out = NULL;
    struct tr_client *c = tr_cli_client(cli);
    if (c == NULL)
        return TR_EXIT_USAGE;
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_client_call(c, method, path, body, 30, out, &err);
    if (rc == 0)
        return 0;
    if (rc == TR_ECANCELED)
        fputs("interrupted\n", stderr);
    else if (context != NULL && rc != TR_EUNAVAIL)
        tr_cli_error("%s: %s", context, err.msg);
    else
        tr_cli_error("%s", err.msg);
    return tr_cli_exit_code(rc);
}

/* Builds a path with one escaped segment: fmt has one %s. NULL when out of memory. */
char *tr_cli_path(const char *prefix, const char *segment, const char *suffix)
{
    char *esc = tr_client_escape(segment);
    if (esc == NULL)
        return NULL;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    char *out = NULL;
    if (tr_buf_addf(&b, "%s%s%s", prefix, esc, suffix) == 0)
        out = tr_buf_detach(&b, NULL);
    tr_buf_release(&b);
    tr_free(esc);
    return out;
}

/* Prints the answer as JSON for --json; returns the exit code. */
int tr_cli_print_raw(const json_t *j)
{
    if (tr_cli_print_json(stdout, j) < 0) {
        tr_cli_error("cannot write the output: %s", strerror(errno));
        return TR_EXIT_FAILED;
    }
    return TR_EXIT_OK;
}

/* Reads a whole file into b. Prints why not and returns false. */
static bool read_source(const char *path, struct tr_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        tr_cli_error("cannot read '%s': %s", path, strerror(errno));
        return false;
    }
    tr_buf_init(b, SOURCE_MAX);
    char chunk[65536];
    bool ok = true;
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0 && tr_buf_add(b, chunk, n) < 0) {
            tr_cli_error("cannot read '%s': larger than %u MiB or out of memory", path,
                         SOURCE_MAX >> 20);
            ok = false;
            break;
        }
        if (n < sizeof(chunk)) {
            if (ferror(f)) {
                tr_cli_error("cannot read '%s': %s", path, strerror(errno));
                ok = false;
            }
            break;
        }
    }
    fclose(f);
    if (!ok)
        tr_buf_release(b);
    return ok;
}

/* A {"source", "name"} body for a pipeline file; NULL after printing why. */
json_t *tr_cli_source_body(const char *path)
{
    struct tr_buf src;
    if (!read_source(path, &src))
        return NULL;
    char *copy = tr_strdup(path);
    json_t *body = json_object();
    json_t *text = json_stringn(src.buf, src.len);
    if (text == NULL && body != NULL && copy != NULL) {
        tr_cli_error("cannot send '%s': the file is not valid UTF-8 text", path);
    } else if (body == NULL || copy == NULL ||
               json_object_set_new(body, "source", text) < 0 ||
               json_object_set_new(body, "name", json_string(basename(copy))) < 0) {
        tr_cli_error("out of memory");
    } else {
        text = NULL;
        tr_free(copy);
        tr_buf_release(&src);
        return body;
    }
    json_decref(text);
    json_decref(body);
    tr_free(copy);
    tr_buf_release(&src);
    return NULL;
}

/* GETs fmt with one escaped segment; returns 0 with *out set, or the exit code. */
int tr_cli_get_one(struct tr_cli *cli, const char *prefix, const char *segment,
                   const char *suffix, json_t **out)
{
    char *path = tr_cli_path(prefix, segment, suffix);
    if (path == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    int code = tr_cli_call(cli, "GET", path, NULL, out, NULL);
    tr_free(path);
    return code;
}

const char *tr_cli_str(const json_t *j, const char *dflt)
{
    const char *s = json_string_value(j);
    return s != NULL ? s : dflt;
}
