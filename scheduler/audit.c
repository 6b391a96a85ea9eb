/*
 * audit.c - the audit log (audit.h): entries waiting for the turn's commit,
 * and GET /v1/audit.
 *
 * Entries of the turn wait in a list owned by the api; the end-of-turn
 * commit puts them into its transaction with the changes they describe, and
 * forgets them once it committed. A failed commit keeps them, like the
 * changes, for the next try.
 *
 * Who sees what: an admin sees its own tenant's entries; the admin of
 * tenant `default` (and everyone when there is no token file) administers
 * the cluster and sees every tenant's, or one tenant's with ?tenant=.
 */
#include "scheduler/audit.h"

#include <time.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api_int.h"
#include "scheduler/auth.h"

#define AUDIT_LIMIT_DEFAULT 100
#define AUDIT_LIMIT_MAX 1000

struct audit_entry
{
    struct audit_entry *next;
    struct tr_audit_rec rec; /* strings owned */
};

struct audit_log
{
    struct audit_entry *head, **tail;
    uint64_t seq;
};

static struct audit_log *log_of(struct api *a)
{
    if (a->audit == NULL) {
        a->audit = tr_calloc(1, sizeof(*a->audit));
        if (a->audit != NULL)
            a->audit->tail = &a->audit->head;
    }
    return a->audit;
}

static void entry_free(struct audit_entry *e)
{
    tr_free((char *)e->rec.id);
    tr_free((char *)e->rec.tenant);
    tr_free((char *)e->rec.token);
    tr_free((char *)e->rec.role);
    tr_free((char *)e->rec.action);
    tr_free((char *)e->rec.object);
    tr_free((char *)e->rec.detail_json);
    tr_free(e);
}

static char *dup_or_null(const char *s)
{
    return s ? tr_strdup(s) : NULL;
}

void tr_audit_record_as(struct api *a, const char *tenant, const char *who, const char *role,
                        const char *action, const char *object, const char *detail_json)
{
    struct audit_log *l = log_of(a);
    struct audit_entry *e = l ? tr_calloc(1, sizeof(*e)) : NULL;
    if (e == NULL) {
        tr_err("audit: out of memory, entry %s %s lost", action, object ? object : "");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->rec.at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    char id[80];
    /* Sorts by time; the epoch and a counter keep two schedulers' ids apart. */
    snprintf(id, sizeof(id), "%013lld%06ld-%llu-%llu", (long long)ts.tv_sec,
             ts.tv_nsec / 1000, (unsigned long long)a->dispatch->epoch,
             (unsigned long long)++l->seq);
    e->rec.id = tr_strdup(id);
    e->rec.tenant = tr_strdup(tenant && tenant[0] ? tenant : AUTH_DEFAULT_TENANT);
    e->rec.token = tr_strdup(who && who[0] ? who : "anonymous");
    e->rec.role = dup_or_null(role);
    e->rec.action = tr_strdup(action);
    e->rec.object = dup_or_null(object);
    e->rec.detail_json = dup_or_null(detail_json);
    if (!e->rec.id || !e->rec.tenant || !e->rec.token || !e->rec.action ||
        (role && !e->rec.role) || (object && !e->rec.object) ||
        (detail_json && !e->rec.detail_json)) {
        tr_err("audit: out of memory, entry %s %s lost", action, object ? object : "");
        entry_free(e);
        return;
    }
    *l->tail = e;
    l->tail = &e->next;
}

void tr_audit_record_detail(struct api *a, struct tr_http_req *req, const char *action,
                            const char *object, const char *detail_json)
{
    const struct auth_principal *p = auth_of(req);
    tr_audit_record_as(a, p->tenant, p->name, auth_role_name(p->role), action, object,
                       detail_json);
}

void tr_audit_record(struct api *a, struct tr_http_req *req, const char *action,
                     const char *object)
{
    tr_audit_record_detail(a, req, action, object, NULL);
}

bool audit_have_dirty(const struct api *a)
{
    return a->audit != NULL && a->audit->head != NULL;
}

int audit_put_dirty(struct api *a)
{
    if (a->audit == NULL)
        return 0;
    for (struct audit_entry *e = a->audit->head; e != NULL; e = e->next) {
        int rc = tr_state_put_audit(a->state, &e->rec);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void audit_committed(struct api *a)
{
    struct audit_log *l = a->audit;
    if (l == NULL)
        return;
    while (l->head != NULL) {
        struct audit_entry *e = l->head;
        l->head = e->next;
        entry_free(e);
    }
    l->tail = &l->head;
}

void audit_close(struct api *a)
{
    audit_committed(a);
    tr_free(a->audit);
    a->audit = NULL;
}

/* ---------------------------------------------------------------------- */
/* GET /v1/audit                                                           */
/* ---------------------------------------------------------------------- */

struct list_ctx
{
    json_t *arr;
    double since;
    size_t limit;
};

static int list_entry(const struct tr_audit_rec *r, void *arg)
{
    struct list_ctx *c = arg;
    if (!(r->at > c->since))
        return 0;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "at", json_time(r->at));
    json_object_set_new(o, "ts", json_real(r->at));
    json_object_set_new(o, "tenant", json_string(r->tenant));
    json_object_set_new(o, "token", json_str_or_null(r->token));
    json_object_set_new(o, "role", json_str_or_null(r->role));
    json_object_set_new(o, "action", json_string(r->action));
    json_object_set_new(o, "object", json_str_or_null(r->object));
    json_object_set_new(o, "detail", parse_or_null(r->detail_json));
    json_array_append_new(c->arr, o);
    return json_array_size(c->arr) >= c->limit ? 1 : 0; /* enough: stop */
}

/* since: seconds since the epoch (decimal) or RFC 3339 UTC ("...Z"). */
static bool parse_since(const char *s, double *out)
{
    size_t n = strspn(s, "0123456789");
    if (n >= 1 && n <= 12) {
        size_t f = s[n] == '.' ? strspn(s + n + 1, "0123456789") : 0;
        size_t end = s[n] == '.' ? n + 1 + f : n;
        if ((s[n] != '.' || (f >= 1 && f <= 9)) && s[end] == '\0') {
            *out = strtod(s, NULL);
            return true;
        }
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL)
        return false;
    double frac = 0;
    if (*end == '.') {
        char *e2 = NULL;
        frac = strtod(end, &e2);
        end = e2;
    }
    if (strcmp(end, "Z") != 0)
        return false;
    *out = (double)timegm(&tm) + frac;
    return true;
}

void h_audit_list(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    char since_s[64], limit_s[32], tenant[AUTH_TENANT_MAX + 1];
    struct list_ctx c = {.since = 0, .limit = AUDIT_LIMIT_DEFAULT};
    if (tr_http_req_query(req, "since", since_s, sizeof(since_s)) &&
        !parse_since(since_s, &c.since)) {
        tr_http_respond_error(req, 400, "invalid_request",
                              "'since' must be seconds since 1970 or an RFC 3339 UTC time");
        return;
    }
    if (tr_http_req_query(req, "limit", limit_s, sizeof(limit_s))) {
        double v;
        if (!query_decimal(limit_s, false, &v) || v < 1) {
            tr_http_respond_error(req, 400, "invalid_request",
                                  "'limit' must be a decimal number >= 1");
            return;
        }
        c.limit = (size_t)TR_MIN(v, (double)AUDIT_LIMIT_MAX);
    }
    const char *only = auth_tenant(req);
    bool cluster = strcmp(only, AUTH_DEFAULT_TENANT) == 0;
    if (tr_http_req_query(req, "tenant", tenant, sizeof(tenant))) {
        if (!auth_tenant_valid(tenant)) {
            tr_http_respond_error(req, 400, "invalid_request", "'tenant' is not a tenant name");
            return;
        }
        if (!cluster && strcmp(tenant, only) != 0) {
            tr_http_respond_error(req, 403, "forbidden",
                                  "only the admin of tenant 'default' reads other tenants' "
                                  "entries");
            return;
        }
        only = tenant;
    } else if (cluster) {
        only = NULL;
    }
    c.arr = json_array();
    int rc = tr_state_list_audit(a->state, only, list_entry, &c);
    if (rc < 0) {
        json_decref(c.arr);
        tr_http_respond_error(req, 500, "state_error", tr_strerror(rc));
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "entries", c.arr);
    respond_json(req, 200, o);
}
