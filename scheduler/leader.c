/*
 * leader.c - which scheduler leads, and what a standby does meanwhile.
 *
 * With a state that coordinates (etcd, lib/state/coord.h) every scheduler
 * campaigns for the leader key under a lease of --leader-ttl seconds. The
 * winner takes a new epoch, recovers unfinished runs and binds the worker
 * port (the lead hook: sched_lead in sched.c); until then, and for as long
 * as another member leads, a scheduler is a standby: it serves /healthz,
 * /readyz (503) and /metrics, and answers every other call with 307 to the
 * leader's API URL, or 503 when no leader is known. A standby never binds
 * the worker port, so workers given every scheduler's endpoint rotate until
 * they reach the leader.
 *
 * A leader acts (commits, dispatches, sends) only while its lease is known
 * to be alive for another third of the TTL: the renewals come every third,
 * so in health that margin always holds; when etcd stops answering, the
 * leader pauses before its lease can have expired, and resumes if etcd
 * renews the same lease again (etcd extends leases across its own restart).
 * When the lease is gone for good (expired, revoked) or the key was taken,
 * the leader logs and stops with exit status 3 without committing anything
 * more; its supervisor restarts it, and it comes back as a standby.
 *
 * With SQLite there is no election: the scheduler always leads.
 *
 * Worker registrations: the leader puts <prefix>workers/<id> under a lease
 * of three heartbeats kept alive while the worker is registered, and revokes
 * it when the worker is removed (BYE, missed heartbeats).
 *
 * Loop thread only.
 */
#include "scheduler/leader.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/state/coord.h"

struct leader
{
    uv_loop_t *loop;
    const struct sched_config *cfg;
    struct leader_hooks hooks;
    uint64_t epoch;           /* of this leadership, once promoted */
    struct tr_coord *coord;   /* NULL: no election (SQLite), always the leader */
    char *advert;             /* {"id","api","workers"} this member campaigns with (owned) */
    bool promoted;            /* sched_lead ran: this process leads */
    bool suspended;           /* the lease could not be confirmed in time: not acting */
    bool lost;                /* leadership lost for good: stopping */
    char leader_api[512];     /* the known leader's API URL, "" when none is known */
    char leader_id[128];      /* and its id */
    uint64_t no_leader_ns;    /* when the leader key was last seen gone, 0 when not */
    bool decided;             /* the first campaign had an outcome (led, or found a leader) */
};

/* How long start-up waits for the first outcome of the election. */
#define FIRST_OUTCOME_MS 5000

/* ====================================================================== */
/* Roles                                                                   */
/* ====================================================================== */

bool leader_acting(const struct leader *l)
{
    return l == NULL || l->coord == NULL || (l->promoted && !l->lost);
}

const char *leader_role_name(const struct leader *l)
{
    if (l != NULL && l->lost)
        return "stopping";
    return leader_acting(l) ? "leader" : "standby";
}

bool leader_suspended(const struct leader *l)
{
    return l != NULL && l->suspended;
}

bool leader_may_act(struct leader *l)
{
    if (l == NULL || l->coord == NULL)
        return true;
    if (!l->promoted || l->lost)
        return false;
    uint64_t expiry = tr_coord_lease_expiry_ns(l->coord);
    if (expiry == 0)
        return false; /* elected before the first renewal answered: wait for it */
    uint64_t margin = (uint64_t)l->cfg->leader_ttl_s * 1000000000ull / 3;
    bool ok = expiry > tr_mono_ns() + margin;
    if (!ok && !l->suspended) {
        l->suspended = true;
        /* Writes answer 503 (leader_suspended) and dispatch pauses. */
        tr_warn("cannot confirm the leader lease in time: pausing commits and dispatch until "
                "etcd renews it");
    } else if (ok && l->suspended) {
        l->suspended = false;
        tr_info("leader lease renewed again: resuming");
    }
    return ok;
}

/* Copies the fields of a leader's advertisement, refusing what could not go
 * into a Location header. */
static void learn_leader(struct leader *l, const char *advert, size_t len)
{
    l->leader_api[0] = l->leader_id[0] = '\0';
    json_t *o = json_loadb(advert, len, 0, NULL);
    const char *api = json_string_value(json_object_get(o, "api"));
    const char *id = json_string_value(json_object_get(o, "id"));
    if (api != NULL && strlen(api) < sizeof(l->leader_api) && strpbrk(api, "\r\n") == NULL)
        snprintf(l->leader_api, sizeof(l->leader_api), "%s", api);
    if (id != NULL)
        snprintf(l->leader_id, sizeof(l->leader_id), "%s", id);
    json_decref(o);
}

static void stop_lost(struct leader *l, const char *why)
{
    l->lost = true;
    tr_err("lost leadership: %s; stopping at once without committing (exit status 3): "
           "restarted, this scheduler comes back as a standby", why);
    l->hooks.stop(l->hooks.arg, 3);
}

static void on_coord(void *arg, const struct tr_coord_event *ev)
{
    struct leader *l = arg;
    switch (ev->type) {
    case TR_COORD_LEADER: {
        l->decided = true;
        l->leader_api[0] = l->leader_id[0] = '\0';
        uint64_t waited = l->no_leader_ns ? tr_mono_ns() - l->no_leader_ns : 0;
        struct tr_error err;
        tr_error_init(&err);
        int rc = l->hooks.lead(l->hooks.arg, &l->epoch, &err);
        if (rc < 0) {
            tr_err("cannot take over as leader: %s", err.msg[0] ? err.msg : tr_strerror(rc));
            l->lost = true;
            l->hooks.stop(l->hooks.arg, 1);
            return;
        }
        l->promoted = true;
        tr_info("leading id=%s epoch=%llu workers=%s (elected %.0f ms after the campaign "
                "began)", l->cfg->id, (unsigned long long)l->epoch, l->cfg->listen,
                (double)waited / 1e6);
        break;
    }
    case TR_COORD_FOLLOWER:
        l->decided = true;
        learn_leader(l, ev->leader, ev->len);
        l->no_leader_ns = 0;
        tr_info("standby id=%s: leader is '%s' at %s", l->cfg->id, l->leader_id,
                l->leader_api[0] ? l->leader_api : "(no API URL)");
        break;
    case TR_COORD_NO_LEADER:
        l->leader_api[0] = l->leader_id[0] = '\0';
        l->no_leader_ns = tr_mono_ns();
        tr_info("no leader (%s): campaigning id=%s", ev->why ? ev->why : "key gone", l->cfg->id);
        break;
    case TR_COORD_LOST:
        stop_lost(l, ev->why ? ev->why : "lease lost");
        break;
    }
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

int leader_open(struct leader **out, uv_loop_t *loop, const struct sched_config *cfg,
                const struct leader_hooks *hooks, struct tr_error *err)
{
    struct leader *l = *out = tr_calloc(1, sizeof(*l));
    if (l == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    l->loop = loop;
    l->cfg = cfg;
    l->hooks = *hooks;
    return tr_coord_open(loop, cfg->state_url, &l->coord, err);
}

int leader_start(struct leader *l, int api_port, const bool *stopping, struct tr_error *err)
{
    const struct sched_config *cfg = l->cfg;
    if (l->coord == NULL) {
        int rc = l->hooks.lead(l->hooks.arg, &l->epoch, err);
        if (rc == 0)
            l->promoted = true;
        return rc;
    }
    char api[300];
    if (cfg->advertise_api != NULL)
        snprintf(api, sizeof(api), "%s", cfg->advertise_api);
    else
        snprintf(api, sizeof(api), "http://%s:%d", cfg->api_host, api_port);
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", cfg->id, "api", api, "workers",
                          cfg->listen);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    l->advert = text ? tr_strdup(text) : NULL;
    free(text);
    if (l->advert == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = tr_coord_campaign(l->coord, cfg->leader_ttl_s, l->advert, strlen(l->advert),
                               on_coord, l);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot campaign for leadership");
    l->no_leader_ns = tr_mono_ns();
    tr_info("standby id=%s: campaigning for leadership (lease %u s) api=%s", cfg->id,
            cfg->leader_ttl_s, api);
    /*
     * Start-up waits (bounded) for the first outcome, so that by the time the
     * API answers, this scheduler knows whether it leads or where the leader
     * is: a client that saw /healthz answer must not meet "no leader known"
     * on its next call. The coordination's own timers (retries, the
     * registration sweep every second) keep each turn of the loop bounded.
     */
    uint64_t deadline = tr_mono_ns() + FIRST_OUTCOME_MS * 1000000ull;
    while (!l->decided && !*stopping && !l->lost && tr_mono_ns() < deadline)
        uv_run(l->loop, UV_RUN_ONCE);
    if (*stopping) {
        /* The signal's uv_stop was used up by the run above: again for main's. */
        uv_stop(l->loop);
    } else if (!l->decided) {
        tr_warn("no election outcome after %d ms (is etcd reachable?): serving as a standby "
                "meanwhile", FIRST_OUTCOME_MS);
    }
    return 0;
}

void leader_close(struct leader *l)
{
    if (l == NULL)
        return;
    tr_coord_close(l->coord);
    l->coord = NULL;
    tr_free(l->advert);
    tr_free(l);
}

/* ====================================================================== */
/* Worker registrations                                                    */
/* ====================================================================== */

void leader_worker_up(struct leader *l, const struct worker *w)
{
    if (l == NULL || l->coord == NULL)
        return;
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:O, s:s, s:s, s:f}", "id", w->id, "pool",
                          w->pool->name, "slots", (json_int_t)w->slots, "gpus",
                          (json_int_t)w->gpus, "cpus", (json_int_t)w->cpus, "labels", w->labels,
                          "version", w->version, "endpoint", l->cfg->listen, "connected_at",
                          w->connected_at);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    /* A lease of three heartbeats, the same silence after which the worker
     * is presumed dead; etcd rounds short TTLs up to its minimum. */
    uint32_t ttl = (uint32_t)((3ull * l->cfg->heartbeat_ms + 999) / 1000);
    if (text == NULL ||
        tr_coord_worker_up(l->coord, w->id, text, strlen(text), TR_MAX(ttl, 2u)) < 0)
        tr_warn("cannot register worker=%s in etcd: out of memory", w->id);
    free(text);
}

void leader_worker_down(struct leader *l, const struct worker *w)
{
    if (l != NULL && l->coord != NULL)
        tr_coord_worker_down(l->coord, w->id);
}

/* ====================================================================== */
/* HTTP                                                                    */
/* ====================================================================== */

static bool is_probe(struct tr_str path)
{
    return tr_http_route_match("/healthz", path, NULL, NULL, NULL) ||
           tr_http_route_match("/readyz", path, NULL, NULL, NULL) ||
           tr_http_route_match("/metrics", path, NULL, NULL, NULL);
}

bool leader_gate(struct tr_http_req *req, void *arg)
{
    struct leader *l = arg;
    if (leader_acting(l) || is_probe(tr_http_req_path(req)))
        return false;
    char msg[700];
    if (l->leader_api[0] == '\0') {
        snprintf(msg, sizeof(msg), "this scheduler (%s) is a standby and no leader is known "
                 "yet; retry shortly", l->cfg->id);
        tr_http_respond_error(req, 503, "unavailable", msg);
        return true;
    }
    struct tr_str path = tr_http_req_path(req);
    struct tr_str query = tr_http_req_query_string(req);
    struct tr_buf h;
    tr_buf_init(&h, 8192);
    size_t n = strlen(l->leader_api);
    while (n > 0 && l->leader_api[n - 1] == '/')
        n--;
    int rc = tr_buf_addf(&h, "Location: %.*s%.*s%s%.*s\r\n", (int)n, l->leader_api,
                         (int)path.len, path.p, query.len ? "?" : "", (int)query.len, query.p);
    snprintf(msg, sizeof(msg), "this scheduler (%s) is a standby; the leader (%s) is at %s",
             l->cfg->id, l->leader_id, l->leader_api);
    json_t *o = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "not_leader", "message", msg,
                          "leader", l->leader_api);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (rc < 0 || text == NULL)
        tr_http_respond_error(req, 503, "unavailable", msg);
    else
        tr_http_respond_extra(req, 307, "application/json", h.buf, text, strlen(text));
    free(text);
    tr_buf_release(&h);
    return true;
}

void leader_h_readyz(struct tr_http_req *req, void *arg)
{
    struct leader *l = arg;
    bool ready = leader_acting(l) && !leader_suspended(l);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(ready ? "ready" : "not_ready"));
    json_object_set_new(o, "role", json_string(leader_role_name(l)));
    if (l->cfg->id != NULL)
        json_object_set_new(o, "id", json_string(l->cfg->id));
    if (!leader_acting(l) && l->leader_api[0])
        json_object_set_new(o, "leader", json_string(l->leader_api));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    tr_http_respond(req, ready ? 200 : 503, "application/json", text, strlen(text));
    free(text);
}
