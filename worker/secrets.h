/*
 * secrets.h - trellis.secret("NAME") on a worker (docs/pipelines.md
 * "Secrets"): values read from --secrets-dir (a file per name, as Kubernetes
 * mounts a Secret) or from the variable TRELLIS_SECRET_<NAME>, and the
 * redaction of every value read so far from what leaves the worker: task
 * outputs, errors and ctx.log lines ("[redacted]").
 *
 * A process-wide registry, used from the loop thread only (tasks run there;
 * trellis.secret refuses to run outside a task).
 */
#ifndef TR_WORKER_SECRETS_H
#define TR_WORKER_SECRETS_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/base/buf.h"

#define TR_SECRET_REDACTED "[redacted]"

/* Where secrets files are (NULL: the environment only). The path is copied. 0 or TR_ENOMEM. */
int tr_secrets_init(const char *dir);
/* Forgets every value (scrubbed) and the folder. */
void tr_secrets_free(void);
/* Some value was read: redaction has work to do. */
bool tr_secrets_any(void);
/*
 * Text with every occurrence of a value read so far replaced by
 * TR_SECRET_REDACTED, into out (reset first). Returns 1 when something was
 * replaced, 0 when not (out untouched), TR_ENOMEM.
 */
int tr_secrets_redact(const char *p, size_t len, struct tr_buf *out);
/* The same over the strings (keys and values) of a msgpack value. */
int tr_secrets_redact_mp(const char *p, size_t len, struct tr_buf *out);
/* trellis.secret (registered by tr_lua_worker_open). */
int tr_lua_secret(lua_State *L);

#endif
