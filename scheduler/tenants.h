/*
 * tenants.h - which tenant a pipeline or a model name belongs to
 * (tenants.c; docs/api.md "Tenants").
 *
 * Names are one namespace for the whole cluster: the first tenant to
 * register (or run) a pipeline name, or a model name, owns it, and another
 * tenant's write to it is 409 conflict. A name without an owner record
 * belongs to tenant `default` (so records from before tenants existed are
 * `default`'s, and the default tenant writes no owner record at all). A
 * run, its feedback, its label items belong to its pipeline's tenant; a
 * model's versions and aliases to the model's. Reads of another tenant's
 * names answer as if they did not exist.
 *
 * Owner records are written in the turn's group commit with the write that
 * claimed the name. Memory caches every answer; a scheduler that starts to
 * lead forgets them (tenants_reset). Part "api". Loop thread only.
 */
#ifndef TR_SCHED_TENANTS_H
#define TR_SCHED_TENANTS_H

#include "lib/http/http_server.h"

struct api;
struct run;

#define TENANT_PIPELINE "pipeline"
#define TENANT_MODEL "model"

/* The tenant (kind, name) belongs to; never NULL ("default" when unowned or
 * unreadable). */
const char *tenant_owner(struct api *a, const char *kind, const char *name);
/* Whether the caller of req sees (kind, name). */
bool tenant_sees(struct api *a, const struct tr_http_req *req, const char *kind,
                 const char *name);
/* Before a write that creates or uses (kind, name): true when the caller's
 * tenant owns it, or when it is new (it is then claimed for that tenant, in
 * this turn's commit); false after answering 409 conflict. */
bool tenant_claim(struct api *a, struct tr_http_req *req, const char *kind, const char *name);

/* The tenant of run r (arg: the api): the dispatch hook for workers whose
 * key is restricted to a tenant. */
const char *api_run_tenant(void *arg, const struct run *r);

/* The batch's hooks (sched.c), and the life cycle. */
bool tenants_have_dirty(const struct api *a);
int tenants_put_dirty(struct api *a) TR_MUST_CHECK;
void tenants_committed(struct api *a);
void tenants_reset(struct api *a);
void tenants_close(struct api *a);

#endif
