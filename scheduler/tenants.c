/*
 * tenants.c - the owners of pipeline and model names (tenants.h).
 *
 * The cache is a JSON object: "kind/name" -> tenant, for every name looked
 * up (unowned names too, as "default"), so a run's tenant costs a hash
 * lookup after its pipeline's first. Claims of the turn wait in a JSON
 * array for the commit.
 */
#include "scheduler/tenants.h"

#include <jansson.h>
#include <time.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api.h"
#include "scheduler/auth.h"

#define UNKNOWN_CACHE_MAX 100000 /* entries past which unknown names are not cached */

struct tenants
{
    json_t *cache;   /* "kind/name" -> tenant */
    json_t *pending; /* [{kind, name, tenant, at}] to write at the commit */
};

static struct tenants *tn_of(struct api *a)
{
    if (a->tenants == NULL) {
        struct tenants *t = tr_calloc(1, sizeof(*t));
        if (t == NULL)
            return NULL;
        t->cache = json_object();
        t->pending = json_array();
        if (t->cache == NULL || t->pending == NULL) {
            json_decref(t->cache);
            json_decref(t->pending);
            tr_free(t);
            return NULL;
        }
        a->tenants = t;
    }
    return a->tenants;
}

static int owner_found(const struct tr_owner_rec *rec, void *arg)
{
    snprintf(arg, AUTH_TENANT_MAX, "%s", rec->tenant);
    return 0;
}

static int pipe_found(const struct tr_pipeline_rec *rec, void *arg)
{
    (void)rec;
    *(bool *)arg = true;
    return 0;
}

static int model_found(const struct tr_model_rec *rec, void *arg)
{
    (void)rec;
    *(bool *)arg = true;
    return 0;
}

/* The owner from the cache or the state; *known says whether the name
 * exists at all (an owner record, or a registration of tenant default). */
static const char *lookup(struct api *a, const char *kind, const char *name, bool *known)
{
    struct tenants *t = tn_of(a);
    char key[600];
    snprintf(key, sizeof(key), "%s/%s", kind, name);
    json_t *v = t ? json_object_get(t->cache, key) : NULL;
    if (v != NULL) {
        *known = json_is_true(json_object_get(v, "known"));
        return json_string_value(json_object_get(v, "tenant"));
    }
    char tenant[AUTH_TENANT_MAX] = "";
    int rc = tr_state_get_owner(a->state, kind, name, owner_found, tenant);
    bool exists = rc == 0;
    if (rc == TR_ENOENT) {
        snprintf(tenant, sizeof(tenant), "%s", AUTH_DEFAULT_TENANT);
        if (strcmp(kind, TENANT_PIPELINE) == 0)
            rc = tr_state_get_pipeline(a->state, name, NULL, pipe_found, &exists);
        else
            rc = tr_state_get_model(a->state, name, model_found, &exists);
        if (rc == TR_ENOENT)
            rc = 0;
    }
    *known = exists;
    if (rc < 0) {
        /* Unreadable: not cached, and nobody but default sees it. */
        tr_warn("cannot read the owner of %s '%s': %s", kind, name, tr_strerror(rc));
        return AUTH_DEFAULT_TENANT;
    }
    /* Names nobody has are cached up to a bound: probes must not grow memory. */
    if (!exists && t != NULL && json_object_size(t->cache) >= UNKNOWN_CACHE_MAX)
        return AUTH_DEFAULT_TENANT;
    json_t *o = json_pack("{s:s, s:b}", "tenant", tenant, "known", exists);
    if (t == NULL || o == NULL || json_object_set_new(t->cache, key, o) < 0)
        return AUTH_DEFAULT_TENANT;
    return json_string_value(json_object_get(o, "tenant"));
}

const char *tenant_owner(struct api *a, const char *kind, const char *name)
{
    bool known;
    if (name == NULL || name[0] == '\0')
        return AUTH_DEFAULT_TENANT;
    const char *t = lookup(a, kind, name, &known);
    return t ? t : AUTH_DEFAULT_TENANT;
}

const char *api_run_tenant(void *arg, const struct run *r)
{
    return tenant_owner(arg, TENANT_PIPELINE, r->pipe->def->name);
}

bool tenant_sees(struct api *a, const struct tr_http_req *req, const char *kind,
                 const char *name)
{
    if (!auth_enabled(a->auth))
        return true; /* one tenant: nothing to look up */
    return auth_sees(req, tenant_owner(a, kind, name));
}

bool tenant_claim(struct api *a, struct tr_http_req *req, const char *kind, const char *name)
{
    if (!auth_enabled(a->auth))
        return true;
    const char *mine = auth_tenant(req);
    bool known = false;
    const char *owner = lookup(a, kind, name, &known);
    if (owner == NULL)
        owner = AUTH_DEFAULT_TENANT;
    if (known && strcmp(owner, mine) != 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "the %s name '%.200s' belongs to another tenant", kind, name);
        tr_http_respond_error(req, 409, "conflict", msg);
        return false;
    }
    if (known)
        return true; /* its own */
    struct tenants *t = tn_of(a);
    char key[600];
    snprintf(key, sizeof(key), "%s/%s", kind, name);
    if (strcmp(mine, AUTH_DEFAULT_TENANT) == 0) {
        /* New for default, which writes no owner record: its registration
         * (or model) in the state says it exists; memory knows it now. */
        json_t *o = json_pack("{s:s, s:b}", "tenant", mine, "known", 1);
        if (t != NULL && o != NULL)
            json_object_set_new(t->cache, key, o);
        return true;
    }
    /* New, for a tenant other than default: claim it now (memory) and in the
     * commit of this turn (state). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *o = json_pack("{s:s, s:b}", "tenant", mine, "known", 1);
    json_t *w = json_pack("{s:s, s:s, s:s, s:f}", "kind", kind, "name", name, "tenant", mine,
                          "at", (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    if (t == NULL || o == NULL || w == NULL || json_object_set_new(t->cache, key, o) < 0 ||
        json_array_append_new(t->pending, w) < 0) {
        json_decref(w);
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return false;
    }
    return true;
}

bool tenants_have_dirty(const struct api *a)
{
    return a->tenants != NULL && json_array_size(a->tenants->pending) > 0;
}

int tenants_put_dirty(struct api *a)
{
    if (a->tenants == NULL)
        return 0;
    size_t i;
    json_t *w;
    json_array_foreach(a->tenants->pending, i, w)
    {
        struct tr_owner_rec r = {
            .kind = json_string_value(json_object_get(w, "kind")),
            .name = json_string_value(json_object_get(w, "name")),
            .tenant = json_string_value(json_object_get(w, "tenant")),
            .at = json_real_value(json_object_get(w, "at"))};
        int rc = tr_state_put_owner(a->state, &r);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void tenants_committed(struct api *a)
{
    if (a->tenants != NULL)
        json_array_clear(a->tenants->pending);
}

void tenants_reset(struct api *a)
{
    if (a->tenants != NULL)
        json_object_clear(a->tenants->cache);
}

void tenants_close(struct api *a)
{
    if (a->tenants == NULL)
        return;
    json_decref(a->tenants->cache);
    json_decref(a->tenants->pending);
    tr_free(a->tenants);
    a->tenants = NULL;
}
