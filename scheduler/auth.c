/*
 * auth.c - the token file, its reload on SIGHUP, and the caller of a request
 * (auth.h says the file's format and the rules).
 *
 * A reload builds a whole new set and swaps it in only when the file is
 * good. The old set is kept (retired) until auth_close: a held request
 * (long-poll) may still point at one of its principals, and reloads are
 * rare and small.
 */
#include "scheduler/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

#define TOKEN_LINE_MAX 4096 /* longer lines are refused: a token is not a file */

struct auth_set
{
    struct auth_principal *p;
    size_t n;
    struct auth_set *next; /* in the retired list */
};

/* The principal of tasks' in-process calls, one per tenant. */
struct task_principal
{
    struct auth_principal p;
    struct task_principal *next;
};

struct auth
{
    char *path;               /* NULL: no tokens */
    struct task_principal *tasks;
    struct auth_set *cur;     /* in force; NULL without a file */
    struct auth_set *retired; /* earlier sets, freed at close */
    uv_signal_t sighup;
};

static const struct auth_principal default_admin = {
    .role = AUTH_ADMIN, .tenant = AUTH_DEFAULT_TENANT, .name = "anonymous"};

static const struct auth_principal default_task = {
    .role = AUTH_OPERATOR, .tenant = AUTH_DEFAULT_TENANT, .name = "task"};

static const char *const role_names[] = {"", "viewer", "submitter", "operator", "admin"};

const char *auth_role_name(int role)
{
    return role >= AUTH_VIEWER && role <= AUTH_ADMIN ? role_names[role] : "?";
}

static int role_parse(const char *s)
{
    for (int r = AUTH_VIEWER; r <= AUTH_ADMIN; r++)
        if (strcmp(s, role_names[r]) == 0)
            return r;
    return -1;
}

bool auth_tenant_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= AUTH_TENANT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '-' || c == '_'));
        if (!ok)
            return false;
    }
    return true;
}

static bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static void set_free(struct auth_set *s)
{
    if (s == NULL)
        return;
    if (s->p != NULL)
        OPENSSL_cleanse(s->p, s->n * sizeof(*s->p));
    tr_free(s->p);
    tr_free(s);
}

/* Parses one line (NUL-terminated, not blank, not a comment) into p. */
static int parse_line(char *line, size_t lineno, struct auth_principal *p, const char *path,
                      struct tr_error *err)
{
    char *save = NULL;
    char *tok = strtok_r(line, " \t", &save);
    const char *fields[3] = {NULL, NULL, NULL};
    int n = 0;
    const char *name = NULL;
    for (char *f = strtok_r(NULL, " \t", &save); f != NULL; f = strtok_r(NULL, " \t", &save)) {
        if (strncmp(f, "name=", 5) == 0) {
            if (name != NULL || !name_valid(f + 5))
                return tr_error_set(err, TR_EINVAL,
                                    "token file '%s' line %zu: a bad or repeated name= (1-63 "
                                    "printable bytes, no quotes)",
                                    path, lineno);
            name = f + 5;
            continue;
        }
        if (n == 2 || name != NULL)
            return tr_error_set(err, TR_EINVAL,
                                "token file '%s' line %zu: unexpected field '%.40s' (a line is "
                                "TOKEN [ROLE [TENANT]] [name=NAME])",
                                path, lineno, f);
        fields[n++] = f;
    }
    p->role = AUTH_ADMIN;
    if (fields[0] != NULL && (p->role = role_parse(fields[0])) < 0)
        return tr_error_set(err, TR_EINVAL,
                            "token file '%s' line %zu: unknown role '%.40s' (viewer, submitter, "
                            "operator or admin)",
                            path, lineno, fields[0]);
    const char *tenant = fields[1] ? fields[1] : AUTH_DEFAULT_TENANT;
    if (!auth_tenant_valid(tenant))
        return tr_error_set(err, TR_EINVAL,
                            "token file '%s' line %zu: bad tenant '%.70s' (lower-case letters, "
                            "digits, '-' and '_', at most %d bytes)",
                            path, lineno, tenant, AUTH_TENANT_MAX - 1);
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    if (name != NULL)
        snprintf(p->name, sizeof(p->name), "%s", name);
    else
        snprintf(p->name, sizeof(p->name), "line-%zu", lineno);
    SHA256((const unsigned char *)tok, strlen(tok), p->digest);
    return 0;
}

/* Reads the file into a new set. Lines are read whole: a line longer than
 * TOKEN_LINE_MAX refuses the file, with its number. */
static int read_set(const char *path, struct auth_set **out, struct tr_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tr_error_set(err, -errno, "cannot read token file '%s': %s", path,
                            strerror(errno));
    struct auth_set *s = tr_calloc(1, sizeof(*s));
    size_t cap = 0, lineno = 0, lcap = 0;
    char *line = NULL;
    ssize_t got;
    int rc = s ? 0 : TR_ENOMEM;
    while (rc == 0 && (got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t len = strcspn(line, "\r\n");
        if (len > TOKEN_LINE_MAX || memchr(line, '\0', (size_t)got) != NULL) {
            rc = tr_error_set(err, TR_EINVAL,
                              "token file '%s' line %zu: longer than %d bytes or holds a NUL",
                              path, lineno, TOKEN_LINE_MAX);
            break;
        }
        line[len] = '\0';
        char *p = line + strspn(line, " \t");
        if (*p == '\0' || *p == '#')
            continue;
        if (s->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct auth_principal *np = tr_calloc(ncap, sizeof(*np));
            if (np == NULL) {
                rc = TR_ENOMEM;
                break;
            }
            if (s->n)
                memcpy(np, s->p, s->n * sizeof(*np));
            OPENSSL_cleanse(s->p, s->n * sizeof(*np));
            tr_free(s->p);
            s->p = np;
            cap = ncap;
        }
        struct auth_principal *pr = &s->p[s->n];
        rc = parse_line(p, lineno, pr, path, err);
        for (size_t i = 0; rc == 0 && i < s->n; i++)
            if (CRYPTO_memcmp(s->p[i].digest, pr->digest, sizeof(pr->digest)) == 0)
                rc = tr_error_set(err, TR_EINVAL,
                                  "token file '%s' line %zu: the same token as an earlier line",
                                  path, lineno);
        if (rc == 0)
            s->n++;
    }
    if (line != NULL) {
        explicit_bzero(line, lcap); /* a secret was there */
        free(line);                 /* from getline: the C library's allocator */
    }
    fclose(f);
    if (rc == 0 && s->n == 0)
        rc = tr_error_set(err, TR_EINVAL, "token file '%s' holds no token", path);
    if (rc < 0) {
        set_free(s);
        return rc == TR_ENOMEM ? tr_error_set(err, rc, "out of memory") : rc;
    }
    *out = s;
    return 0;
}

int auth_reload(struct auth *au, struct tr_error *err)
{
    if (au->path == NULL)
        return 0;
    struct auth_set *s = NULL;
    int rc = read_set(au->path, &s, err);
    if (rc < 0)
        return rc;
    if (au->cur != NULL) {
        au->cur->next = au->retired;
        au->retired = au->cur;
    }
    au->cur = s;
    return 0;
}

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    struct auth *au = h->data;
    struct tr_error err;
    tr_error_init(&err);
    if (auth_reload(au, &err) < 0)
        tr_err("token file not reloaded, the tokens in force stay: %s", err.msg);
    else
        tr_info("token file '%s' reloaded: %zu tokens", au->path, au->cur ? au->cur->n : 0);
}

int auth_open(uv_loop_t *loop, const char *path, struct auth **out, struct tr_error *err)
{
    *out = NULL;
    struct auth *au = tr_calloc(1, sizeof(*au));
    if (au == NULL || (path != NULL && (au->path = tr_strdup(path)) == NULL)) {
        tr_free(au);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    int rc = auth_reload(au, err);
    if (rc < 0) {
        tr_free(au->path);
        tr_free(au);
        return rc;
    }
    uv_signal_init(loop, &au->sighup);
    au->sighup.data = au;
    if (path != NULL)
        uv_signal_start(&au->sighup, on_sighup, SIGHUP);
    *out = au;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct auth *au = h->data;
    set_free(au->cur);
    while (au->retired != NULL) {
        struct auth_set *s = au->retired;
        au->retired = s->next;
        set_free(s);
    }
    while (au->tasks != NULL) {
        struct task_principal *t = au->tasks;
        au->tasks = t->next;
        tr_free(t);
    }
    tr_free(au->path);
    tr_free(au);
}

void auth_close(struct auth *au)
{
    if (au == NULL)
        return;
    uv_close((uv_handle_t *)&au->sighup, on_closed);
}

bool auth_enabled(const struct auth *au)
{
    return au != NULL && au->path != NULL;
}

const struct auth_principal *auth_lookup(struct auth *au, const char *token, size_t len)
{
    if (au->cur == NULL || len == 0)
        return NULL;
    unsigned char digest[32];
    SHA256((const unsigned char *)token, len, digest);
    /* Every digest is compared, with no early exit: the time does not say
     * which token (or whether any) matched. */
    const struct auth_principal *found = NULL;
    for (size_t i = 0; i < au->cur->n; i++) {
        int eq = CRYPTO_memcmp(digest, au->cur->p[i].digest, sizeof(digest)) == 0;
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)eq;
        found = (const struct auth_principal *)(((uintptr_t)&au->cur->p[i] & mask) |
                                                ((uintptr_t)found & ~mask));
    }
    OPENSSL_cleanse(digest, sizeof(digest));
    return found;
}

const struct auth_principal *auth_task_principal(struct auth *au, const char *tenant)
{
    if (!auth_enabled(au))
        return NULL;
    for (struct task_principal *t = au->tasks; t != NULL; t = t->next)
        if (strcmp(t->p.tenant, tenant) == 0)
            return &t->p;
    struct task_principal *t = tr_calloc(1, sizeof(*t));
    if (t == NULL)
        return &default_task; /* sees default's names only: fails closed */
    t->p.role = AUTH_OPERATOR;
    snprintf(t->p.tenant, sizeof(t->p.tenant), "%s", tenant);
    snprintf(t->p.name, sizeof(t->p.name), "task");
    t->next = au->tasks;
    au->tasks = t;
    return &t->p;
}

const struct auth_principal *auth_of(const struct tr_http_req *req)
{
    const struct auth_principal *p = tr_http_req_principal(req);
    return p ? p : &default_admin;
}

bool auth_has(const struct tr_http_req *req, int role)
{
    return auth_of(req)->role >= role;
}

const char *auth_tenant(const struct tr_http_req *req)
{
    return auth_of(req)->tenant;
}

bool auth_sees(const struct tr_http_req *req, const char *tenant)
{
    if (tenant == NULL || tenant[0] == '\0')
        tenant = AUTH_DEFAULT_TENANT;
    return strcmp(auth_of(req)->tenant, tenant) == 0;
}

bool auth_authorize(struct tr_http_req *req, int level, void *arg)
{
    (void)arg;
    int need = level == AUTH_UNSET ? AUTH_ADMIN : level;
    if (need == AUTH_OPEN || auth_has(req, need))
        return true;
    char msg[160];
    snprintf(msg, sizeof(msg), "this call needs the role %s; the token has %s",
             auth_role_name(need), auth_role_name(auth_of(req)->role));
    tr_http_respond_error(req, 403, "forbidden", msg);
    return false;
}
