/*
 * auth.h - who calls the API: tokens with a role and a tenant (auth.c).
 *
 * The token file (--token-file) holds one token a line:
 *
 *     TOKEN [ROLE [TENANT]] [name=NAME]
 *
 * ROLE one of viewer, submitter, operator, admin (the default), TENANT a
 * tenant name (`default` when left out), NAME what the audit log calls the
 * token (default "line-N", N its line number). A file of bare tokens keeps
 * working: each is an admin of tenant `default`. Blank lines and '#'
 * comments are skipped. An unknown role, a bad tenant or name, a repeated
 * token or an unknown field refuses the whole file with its line number.
 *
 * Only SHA-256 digests of the tokens are kept; a presented token is hashed
 * and compared with every digest (CRYPTO_memcmp, no early exit). SIGHUP
 * reloads the file on the loop; a bad file then keeps the tokens in force
 * and logs why. Without a token file every caller is admin of `default`.
 *
 * Part "api" of the scheduler's order. Loop thread only.
 */
#ifndef TR_SCHED_AUTH_H
#define TR_SCHED_AUTH_H

#include <signal.h>
#include <uv.h>

#include "lib/base/error.h"
#include "lib/http/http_server.h"

/* Roles, lowest first; a route's level is the least role it needs. A route
 * that names no level (0) needs admin: a route added without a role is
 * closed rather than open. */
enum auth_role
{
    AUTH_UNSET = 0, /* in a route table: admin */
    AUTH_VIEWER = 1,
    AUTH_SUBMITTER = 2,
    AUTH_OPERATOR = 3,
    AUTH_ADMIN = 4,
    AUTH_OPEN = 5 /* in a route table: no token needed (/healthz, /readyz) */
};

#define AUTH_TENANT_MAX 64 /* bytes of a tenant name, NUL included */
#define AUTH_NAME_MAX 64   /* bytes of a token's name, NUL included */
#define AUTH_DEFAULT_TENANT "default"

struct auth_principal
{
    unsigned char digest[32]; /* SHA-256 of the token */
    int role;                 /* enum auth_role */
    char tenant[AUTH_TENANT_MAX];
    char name[AUTH_NAME_MAX];
};

struct auth;

/* Reads path (NULL: no tokens, everyone is admin of `default`) and listens
 * for SIGHUP on loop. *out NULL on error (err says the file and line). */
int auth_open(uv_loop_t *loop, const char *path, struct auth **out, struct tr_error *err)
    TR_MUST_CHECK;
void auth_close(struct auth *au);
/* Whether tokens are configured. */
bool auth_enabled(const struct auth *au);
/* Reads the file again; on an error keeps the tokens in force. */
int auth_reload(struct auth *au, struct tr_error *err) TR_MUST_CHECK;
/* The principal of a presented token, or NULL (the http authenticate hook). */
const struct auth_principal *auth_lookup(struct auth *au, const char *token, size_t len);

/* The principal of a task's in-process API calls (an operator of its run's
 * tenant, named "task"); NULL without tokens. Valid until auth_close. */
const struct auth_principal *auth_task_principal(struct auth *au, const char *tenant);
/* The caller of req: its principal, or admin of `default` for requests that
 * carry none (no token file, in-process calls from tasks). */
const struct auth_principal *auth_of(const struct tr_http_req *req);
/* Whether the caller of req has at least role (enum auth_role). */
bool auth_has(const struct tr_http_req *req, int role);
/* The caller's tenant. */
const char *auth_tenant(const struct tr_http_req *req);
/* Whether the caller may see what belongs to tenant (NULL or "" is `default`). */
bool auth_sees(const struct tr_http_req *req, const char *tenant);
/* A valid tenant name: [a-z0-9][a-z0-9_-]*, under AUTH_TENANT_MAX bytes. */
bool auth_tenant_valid(const char *s);
/* "viewer" ... "admin". */
const char *auth_role_name(int role);
/* The authorize hook: 403 forbidden when the caller's role is below level. */
bool auth_authorize(struct tr_http_req *req, int level, void *arg);

#endif
