/*
 * coord_etcd.c - lib/state/coord.h on etcd: a leader elected through a lease and a
 * transaction, and worker registrations under leases of their own.
 *
 * The election (etcd's own recipe, as in its concurrency package): each
 * member grants a lease and keeps it alive; it campaigns with one Txn
 * "create_revision(<prefix>leader) == 0 ? put leader = advert with my lease
 * : get leader". The loser watches the key from the Txn's revision + 1 and
 * campaigns again when it is deleted (the leader's lease expired or was
 * revoked). The winner watches it too: a DELETE, or a PUT under another
 * lease, means it no longer leads. Because the key lives on the leader's
 * lease, only one member can hold it at a time; the leader itself stops
 * acting before its lease can have expired (tr_coord_lease_expiry_ns).
 *
 * Lifetime: every call and stream in flight holds a reference on the handle
 * (refs); tr_coord_close frees the client, which completes them all with
 * TR_ECANCELED, and the handle is freed when the last one has returned.
 * A worker registration is referenced by its own calls the same way.
 *
 * Loop thread only; a client of lib/etcd/etcd.h on the caller's loop.
 */
#include "lib/state/coord.h"

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/etcd/etcd.h"
#include "lib/base/hmap.h"
#include "lib/base/log.h"
#include "lib/state/state_etcd_int.h"

#define RETRY_MIN_MS 200
#define RETRY_MAX_MS 2000
#define CLOSE_WAIT_MS 1000

struct wreg;

struct tr_coord
{
    uv_loop_t *loop;          /* the caller's */
    struct tr_etcd *e;        /* the client, on loop */
    char *endpoints;          /* for messages */
    char *prefix;             /* "/trellis/v1/" with its final slash */
    char *leader_key;         /* prefix + "leader" */
    uint32_t refs;            /* calls and streams in flight, plus one while open */
    bool closing;             /* tr_coord_close was called */
    bool freed_client;        /* e is freed */

    /* The election */
    tr_coord_event_fn cb;     /* election events */
    void *cb_arg;             /* for cb */
    char *advert;             /* this member's advertisement (owned) */
    size_t advert_len;
    uint32_t ttl_s;           /* of the member's lease */
    int64_t lease;            /* this member's lease, 0 until granted */
    struct tr_etcd_keepalive *ka; /* renews lease, NULL when not running */
    struct tr_etcd_watch *watch;  /* of leader_key, NULL when not running */
    int64_t watch_from;       /* revision the current watch started at */
    bool leader;              /* holds the leader key */
    bool campaigning;         /* a grant or Txn is in flight */
    uint32_t backoff_ms;      /* the next campaign retry's delay */
    uv_timer_t retry;         /* campaign retries after a failure */
    uv_timer_t close_timer;   /* bounds the revokes of close */
    uv_timer_t sweep;         /* every second: registrations that still lack a lease or key */
    uint32_t close_pending;   /* revokes of close not yet answered */
    uint32_t handles_open;    /* uv handles not yet closed */

    struct tr_hmap workers;   /* worker id -> struct wreg */

    /* The watch of the feedback statistics (tr_coord_watch_stats) */
    struct tr_etcd_watch *swatch; /* NULL when not running */
    tr_coord_stats_fn stats_cb;   /* NULL: not wanted */
    void *stats_arg;
};

/* One worker registration: its key, value, lease and keep-alive. */
struct wreg
{
    struct tr_coord *c;       /* holds a reference on it */
    char *id;                 /* the worker id, also the map key */
    size_t id_len;
    char *key;                /* <prefix>workers/<escaped id> */
    size_t key_len;
    char *value;              /* the registration (JSON from the scheduler) */
    size_t value_len;
    uint32_t ttl_s;           /* of its lease */
    int64_t lease;            /* 0 until granted (and again once expired) */
    struct tr_etcd_keepalive *ka; /* renews lease, NULL when not running */
    uint32_t refs;            /* calls in flight, plus one while in the map */
    bool down;                /* tr_coord_worker_down was called (or replaced) */
    bool busy;                /* a grant or put is in flight */
    bool stored;              /* the put with the current lease succeeded */
    bool warned;              /* a failure was logged already */
};

static void coord_unref(struct tr_coord *c);
static void campaign(struct tr_coord *c);
static void finish_close(uv_timer_t *t);

/* ===================================================================== */
/* References                                                            */
/* ===================================================================== */

static void coord_free(struct tr_coord *c)
{
    tr_hmap_release(&c->workers);
    tr_free(c->endpoints);
    tr_free(c->prefix);
    tr_free(c->leader_key);
    tr_free(c->advert);
    tr_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tr_coord *c = h->data;
    c->handles_open--;
    coord_unref(c);
}

static void coord_unref(struct tr_coord *c)
{
    TR_ASSERT(c->refs > 0);
    if (--c->refs == 0)
        coord_free(c);
}

static void wreg_unref(struct wreg *w)
{
    if (--w->refs > 0)
        return;
    struct tr_coord *c = w->c;
    tr_free(w->id);
    tr_free(w->key);
    tr_free(w->value);
    tr_free(w);
    coord_unref(c);
}

static void emit(struct tr_coord *c, enum tr_coord_event_type type, const char *leader,
                 size_t len, const char *why)
{
    if (c->closing || c->cb == NULL)
        return;
    struct tr_coord_event ev = {.type = type, .leader = leader, .len = len, .why = why};
    c->cb(c->cb_arg, &ev);
}

/* ===================================================================== */
/* The election                                                          */
/* ===================================================================== */

static void on_retry(uv_timer_t *t);

static void retry_later(struct tr_coord *c)
{
    if (c->closing)
        return;
    c->backoff_ms = c->backoff_ms ? TR_MIN(c->backoff_ms * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
    uv_timer_start(&c->retry, on_retry, c->backoff_ms, 0);
}

static void on_retry(uv_timer_t *t)
{
    campaign(t->data);
}

/* A leader that no longer may lead: said once, then the handle stays quiet. */
static void lose(struct tr_coord *c, const char *why)
{
    if (!c->leader)
        return;
    c->leader = false;
    emit(c, TR_COORD_LOST, NULL, 0, why);
}

static void on_keepalive(void *arg, int status, int64_t ttl, bool final)
{
    struct tr_coord *c = arg;
    if (final) {
        c->ka = NULL;
        if (status == TR_ENOENT && !c->closing) {
            tr_warn("lost the scheduler lease %llx on etcd '%s': it expired or was revoked",
                    (unsigned long long)c->lease, c->endpoints);
            int64_t old = c->lease;
            c->lease = 0;
            if (c->leader) {
                lose(c, "the leader lease expired or was revoked");
            } else if (old != 0) {
                /* A standby without a lease cannot win: take a new one. */
                campaign(c);
            }
        }
        coord_unref(c);
        return;
    }
    if (status != 0)
        tr_debug("cannot renew the scheduler lease on etcd '%s': %s; retrying", c->endpoints,
                 tr_strerror(status));
    (void)ttl;
}

static void on_watch(void *arg, int status, const struct tr_etcd_watch_result *res);

static void start_watch(struct tr_coord *c, int64_t from)
{
    if (c->watch != NULL || c->closing)
        return;
    struct tr_etcd_watch_opts o = {.key = c->leader_key,
                                   .key_len = strlen(c->leader_key),
                                   .start_revision = from};
    if (tr_etcd_watch(c->e, &o, on_watch, c, &c->watch) < 0) {
        c->watch = NULL;
        retry_later(c);
        return;
    }
    c->watch_from = from;
    c->refs++;
}

static void on_watch(void *arg, int status, const struct tr_etcd_watch_result *res)
{
    struct tr_coord *c = arg;
    if (status != 0) {
        c->watch = NULL;
        if (!c->closing) {
            /* Compacted or refused: read the key afresh through a campaign. */
            tr_warn("the watch of '%s' on etcd '%s' ended: %s; campaigning again",
                    c->leader_key, c->endpoints, res->message[0] ? res->message
                                                                  : tr_strerror(status));
            campaign(c);
        }
        coord_unref(c);
        return;
    }
    for (size_t i = 0; i < res->n_events && !c->closing; i++) {
        const struct tr_etcd_event *ev = &res->events[i];
        if (ev->type == TR_ETCD_EVENT_DELETE) {
            if (c->leader) {
                lose(c, "the leader key was deleted");
                return;
            }
            emit(c, TR_COORD_NO_LEADER, NULL, 0, "the leader key was deleted");
            campaign(c);
            continue;
        }
        if (c->lease != 0 && ev->kv.lease == c->lease)
            continue;
        if (c->leader) {
            lose(c, "another member put the leader key");
            return;
        }
        char *v = tr_strndup(ev->kv.value ? ev->kv.value : "", ev->kv.value_len);
        if (v != NULL)
            emit(c, TR_COORD_FOLLOWER, v, ev->kv.value_len, NULL);
        tr_free(v);
    }
}

static void on_campaign(void *arg, int status, const struct tr_etcd_result *res)
{
    struct tr_coord *c = arg;
    c->campaigning = false;
    if (c->closing) {
        coord_unref(c);
        return;
    }
    if (status < 0) {
        tr_debug("cannot campaign on etcd '%s': %s; retrying", c->endpoints,
                 res->message[0] ? res->message : tr_strerror(status));
        retry_later(c);
        coord_unref(c);
        return;
    }
    c->backoff_ms = 0;
    if (res->succeeded) {
        c->leader = true;
        tr_info("elected leader on etcd '%s' (lease %llx, revision %lld)", c->endpoints,
                (unsigned long long)c->lease, (long long)res->revision);
        emit(c, TR_COORD_LEADER, NULL, 0, NULL);
        start_watch(c, res->revision + 1);
        coord_unref(c);
        return;
    }
    const struct tr_etcd_result *r = res->n_responses > 0 ? &res->responses[0] : NULL;
    if (r == NULL || r->n_kvs == 0) {
        /* Deleted between the compare and the read: run again at once. */
        campaign(c);
        coord_unref(c);
        return;
    }
    const struct tr_etcd_kv *kv = &r->kvs[0];
    if (kv->lease == c->lease) {
        /* Our own key from before a reconnection. */
        c->leader = true;
        emit(c, TR_COORD_LEADER, NULL, 0, NULL);
    } else {
        char *v = tr_strndup(kv->value ? kv->value : "", kv->value_len);
        if (v != NULL)
            emit(c, TR_COORD_FOLLOWER, v, kv->value_len, NULL);
        tr_free(v);
    }
    start_watch(c, res->revision + 1);
    coord_unref(c);
}

static void on_grant(void *arg, int status, const struct tr_etcd_result *res)
{
    struct tr_coord *c = arg;
    c->campaigning = false;
    if (c->closing) {
        coord_unref(c);
        return;
    }
    if (status < 0) {
        tr_debug("cannot grant a lease on etcd '%s': %s; retrying", c->endpoints,
                 res->message[0] ? res->message : tr_strerror(status));
        retry_later(c);
        coord_unref(c);
        return;
    }
    c->lease = res->lease_id;
    uint32_t every = TR_MAX(c->ttl_s * 1000u / 3u, 100u);
    if (tr_etcd_lease_keepalive_start(c->e, c->lease, every, on_keepalive, c, &c->ka) == 0)
        c->refs++;
    else
        c->ka = NULL;
    campaign(c);
    coord_unref(c);
}

/* Grants the lease if there is none, else runs the campaign Txn. */
static void campaign(struct tr_coord *c)
{
    if (c->closing || c->campaigning || c->leader)
        return;
    int rc;
    if (c->lease == 0 || c->ka == NULL) {
        if (c->ka != NULL) {
            tr_etcd_lease_keepalive_stop(c->ka);
            c->ka = NULL;
        }
        rc = tr_etcd_lease_grant(c->e, c->ttl_s, 0, on_grant, c);
    } else {
        struct tr_etcd_compare cmp = {.key = c->leader_key,
                                      .key_len = strlen(c->leader_key),
                                      .target = TR_ETCD_CMP_CREATE,
                                      .result = TR_ETCD_EQUAL,
                                      .number = 0};
        struct tr_etcd_op put = {.type = TR_ETCD_OP_PUT,
                                 .key = c->leader_key,
                                 .key_len = strlen(c->leader_key),
                                 .value = c->advert,
                                 .value_len = c->advert_len,
                                 .lease = c->lease};
        struct tr_etcd_op get = {.type = TR_ETCD_OP_RANGE,
                                 .key = c->leader_key,
                                 .key_len = strlen(c->leader_key)};
        struct tr_etcd_txn txn = {.compares = &cmp, .n_compares = 1, .success = &put,
                                  .n_success = 1, .failure = &get, .n_failure = 1};
        rc = tr_etcd_txn(c->e, &txn, on_campaign, c);
    }
    if (rc < 0) {
        retry_later(c);
        return;
    }
    c->campaigning = true;
    c->refs++;
}

int tr_coord_campaign(struct tr_coord *c, uint32_t ttl_s, const char *advert, size_t len,
                      tr_coord_event_fn cb, void *arg)
{
    if (ttl_s == 0 || c->advert != NULL)
        return TR_EINVAL;
    c->advert = tr_strndup(advert, len);
    if (c->advert == NULL)
        return TR_ENOMEM;
    c->advert_len = len;
    c->ttl_s = ttl_s;
    c->cb = cb;
    c->cb_arg = arg;
    campaign(c);
    return 0;
}

uint64_t tr_coord_lease_expiry_ns(const struct tr_coord *c)
{
    return c->ka ? tr_etcd_keepalive_expiry_ns(c->ka) : 0;
}

bool tr_coord_is_leader(const struct tr_coord *c)
{
    return c->leader;
}

/* ===================================================================== */
/* Worker registrations                                                  */
/* ===================================================================== */

static void on_worker_revoked(void *arg, int status, const struct tr_etcd_result *res)
{
    struct wreg *w = arg;
    struct tr_coord *c = w->c;
    if (status < 0 && status != TR_ECANCELED && status != TR_ESTATE)
        tr_debug("cannot revoke the lease of worker '%s' on etcd '%s': %s (it expires by "
                 "itself)", w->id, c->endpoints, res->message[0] ? res->message
                                                               : tr_strerror(status));
    if (c->closing && c->close_pending > 0 && --c->close_pending == 0 && !c->freed_client)
        uv_timer_start(&c->close_timer, finish_close, 0, 0);
    wreg_unref(w);
}

/* Ends w's lease: the keep-alive stops and the key goes with the revoke. */
static void wreg_end(struct wreg *w)
{
    struct tr_coord *c = w->c;
    if (w->ka != NULL) {
        tr_etcd_lease_keepalive_stop(w->ka);
        w->ka = NULL;
    }
    if (w->lease != 0 && !c->freed_client &&
        tr_etcd_lease_revoke(c->e, w->lease, on_worker_revoked, w) == 0) {
        w->refs++;
        if (c->closing)
            c->close_pending++;
    }
    w->lease = 0;
}

static void wreg_advance(struct wreg *w);

static void on_worker_keepalive(void *arg, int status, int64_t ttl, bool final)
{
    struct wreg *w = arg;
    (void)ttl;
    if (!final) {
        return;
    }
    w->ka = NULL;
    if (status == TR_ENOENT && !w->down && !w->c->closing) {
        /* Expired (etcd unreachable past its TTL): the sweep grants anew. */
        tr_warn("the registration of worker '%s' on etcd '%s' expired; registering it again",
                w->id, w->c->endpoints);
        w->lease = 0;
        w->stored = false;
    }
    wreg_unref(w);
}

/* Failures are said once per registration, not at every sweep. */
static void worker_warn(struct wreg *w, const char *what, int status,
                        const struct tr_etcd_result *res)
{
    if (w->warned || w->down || w->c->closing)
        return;
    w->warned = true;
    tr_warn("cannot %s worker '%s' on etcd '%s': %s; retrying every second", what, w->id,
            w->c->endpoints, res->message[0] ? res->message : tr_strerror(status));
}

static void on_worker_put(void *arg, int status, const struct tr_etcd_result *res)
{
    struct wreg *w = arg;
    w->busy = false;
    if (status < 0)
        worker_warn(w, "register", status, res);
    else
        w->stored = true;
    wreg_unref(w);
}

static void on_worker_grant(void *arg, int status, const struct tr_etcd_result *res)
{
    struct wreg *w = arg;
    w->busy = false;
    if (status < 0) {
        worker_warn(w, "grant a lease for", status, res);
        wreg_unref(w);
        return;
    }
    w->lease = res->lease_id;
    if (w->down || w->c->closing)
        wreg_end(w); /* gone while the grant was in flight: end the lease at once */
    else
        wreg_advance(w);
    wreg_unref(w);
}

/* Starts what w still lacks: a lease, then its keep-alive and the put. At
 * most one grant or put in flight; the sweep calls it again after failures. */
static void wreg_advance(struct wreg *w)
{
    struct tr_coord *c = w->c;
    if (w->down || c->closing || c->freed_client || w->busy)
        return;
    if (w->lease == 0) {
        if (tr_etcd_lease_grant(c->e, w->ttl_s, 0, on_worker_grant, w) == 0) {
            w->refs++;
            w->busy = true;
        }
        return;
    }
    if (w->ka == NULL) {
        uint32_t every = TR_MAX(w->ttl_s * 1000u / 3u, 100u);
        if (tr_etcd_lease_keepalive_start(c->e, w->lease, every, on_worker_keepalive, w,
                                          &w->ka) == 0)
            w->refs++;
        else
            w->ka = NULL;
    }
    if (!w->stored) {
        struct tr_etcd_op put = {.key = w->key, .key_len = w->key_len, .value = w->value,
                                 .value_len = w->value_len, .lease = w->lease};
        if (tr_etcd_put(c->e, &put, on_worker_put, w) == 0) {
            w->refs++;
            w->busy = true;
        }
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct tr_coord *c = t->data;
    size_t it = 0;
    struct wreg *w;
    while ((w = tr_hmap_next(&c->workers, &it)) != NULL)
        wreg_advance(w);
}

int tr_coord_worker_up(struct tr_coord *c, const char *id, const char *value, size_t len,
                       uint32_t ttl_s)
{
    if (c->closing)
        return 0;
    tr_coord_worker_down(c, id);
    struct wreg *w = tr_calloc(1, sizeof(*w));
    if (w == NULL)
        return TR_ENOMEM;
    w->c = c;
    w->id_len = strlen(id);
    w->id = tr_strndup(id, w->id_len);
    w->value = tr_strndup(value, len);
    w->value_len = len;
    w->ttl_s = TR_MAX(ttl_s, 1u);
    struct tr_buf k;
    tr_buf_init(&k, 0);
    int rc = w->id && w->value ? tr_buf_addf(&k, "%sworkers/", c->prefix) : TR_ENOMEM;
    /* The id becomes one path component: escape what could forge another. */
    for (size_t i = 0; rc == 0 && i < w->id_len; i++) {
        unsigned char ch = (unsigned char)id[i];
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || strchr("._-:@+", ch) != NULL;
        rc = plain ? tr_buf_addf(&k, "%c", ch) : tr_buf_addf(&k, "%%%02X", ch);
    }
    if (rc == 0) {
        w->key_len = k.len;
        w->key = tr_buf_detach(&k, NULL);
        rc = w->key ? 0 : TR_ENOMEM;
    }
    tr_buf_release(&k);
    if (rc == 0)
        rc = tr_hmap_put(&c->workers, w->id, w->id_len, w);
    if (rc < 0) {
        tr_free(w->id);
        tr_free(w->key);
        tr_free(w->value);
        tr_free(w);
        return TR_ENOMEM;
    }
    w->refs = 1; /* the map's */
    c->refs++;
    wreg_advance(w);
    return 0;
}

void tr_coord_worker_down(struct tr_coord *c, const char *id)
{
    struct wreg *w = tr_hmap_del(&c->workers, id, strlen(id));
    if (w == NULL)
        return;
    w->down = true;
    wreg_end(w);
    wreg_unref(w);
}

/* ===================================================================== */
/* Open and close                                                        */
/* ===================================================================== */

struct url_opts
{
    const char *cacert, *cert, *key, *prefix;
    uint32_t timeout_ms;
};

/* The options of docs/state.md that concern the client; the rest belong to
 * the state backend, which has already checked them all. */
static int parse_opts(char *q, struct url_opts *o, struct tr_error *err)
{
    for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL)
            return tr_error_set(err, TR_EINVAL, "cannot coordinate: option '%s' has no value",
                                kv);
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(kv, "cacert") == 0)
            o->cacert = v;
        else if (strcmp(kv, "cert") == 0)
            o->cert = v;
        else if (strcmp(kv, "key") == 0)
            o->key = v;
        else if (strcmp(kv, "prefix") == 0)
            o->prefix = v;
        else if (strcmp(kv, "timeout_ms") == 0)
            o->timeout_ms = (uint32_t)strtoul(v, NULL, 10);
    }
    return 0;
}

int tr_coord_open(uv_loop_t *loop, const char *state_url, struct tr_coord **out,
                  struct tr_error *err)
{
    *out = NULL;
    if (state_url == NULL || strncmp(state_url, "etcd://", 7) != 0)
        return 0;
    char *copy = tr_strdup(state_url + 7);
    struct tr_coord *c = tr_calloc(1, sizeof(*c));
    if (copy == NULL || c == NULL) {
        tr_free(copy);
        tr_free(c);
        return tr_error_set(err, TR_ENOMEM, "cannot coordinate: out of memory");
    }
    c->loop = loop;
    tr_hmap_init(&c->workers);
    struct url_opts o = {.prefix = "/trellis/v1", .timeout_ms = 2000};
    char *q = strchr(copy, '?');
    if (q != NULL)
        *q++ = '\0';
    int rc = q ? parse_opts(q, &o, err) : 0;
    size_t pl = strlen(o.prefix);
    while (pl > 1 && o.prefix[pl - 1] == '/')
        pl--;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    if (rc == 0 && o.prefix[0] != '/')
        rc = tr_error_set(err, TR_EINVAL, "cannot coordinate: bad prefix '%s'", o.prefix);
    if (rc == 0 && tr_buf_addf(&b, "%.*s%s", (int)pl, o.prefix, pl > 1 ? "/" : "") < 0)
        rc = tr_error_set(err, TR_ENOMEM, "cannot coordinate: out of memory");
    c->prefix = rc == 0 ? tr_buf_detach(&b, NULL) : NULL;
    tr_buf_release(&b);
    c->endpoints = tr_strdup(copy);
    if (rc == 0 && c->prefix != NULL)
        c->leader_key = tr_malloc(strlen(c->prefix) + 7);
    if (rc == 0 && (c->prefix == NULL || c->endpoints == NULL || c->leader_key == NULL))
        rc = tr_error_set(err, TR_ENOMEM, "cannot coordinate: out of memory");
    if (rc == 0) {
        snprintf(c->leader_key, strlen(c->prefix) + 7, "%sleader", c->prefix);
        struct tr_etcd_config cfg = {.endpoints = copy,
                                     .ca_file = o.cacert,
                                     .cert_file = o.cert,
                                     .key_file = o.key,
                                     .deadline_ms = o.timeout_ms ? o.timeout_ms : 2000,
                                     .backoff_min_ms = 50,
                                     .backoff_max_ms = 1000};
        c->e = tr_etcd_open(loop, &cfg, err);
        if (c->e == NULL)
            rc = err && err->code ? err->code : TR_ENOMEM;
    }
    tr_free(copy);
    if (rc < 0) {
        coord_free(c);
        return rc;
    }
    c->refs = 1;
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    uv_timer_init(loop, &c->close_timer);
    c->close_timer.data = c;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uv_timer_start(&c->sweep, on_sweep, 1000, 1000);
    c->handles_open = 3;
    c->refs += 3;
    *out = c;
    return 0;
}

static void finish_close(uv_timer_t *t)
{
    struct tr_coord *c = t->data;
    if (c->freed_client)
        return;
    c->freed_client = true;
    tr_etcd_close(c->e);
    c->e = NULL;
    uv_close((uv_handle_t *)&c->retry, on_handle_closed);
    uv_close((uv_handle_t *)&c->close_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->sweep, on_handle_closed);
    coord_unref(c); /* the open reference */
}

static void on_leader_revoked(void *arg, int status, const struct tr_etcd_result *res)
{
    struct tr_coord *c = arg;
    if (status < 0 && status != TR_ECANCELED)
        tr_warn("cannot revoke the leader lease on etcd '%s': %s; a standby takes over when "
                "it expires", c->endpoints, res->message[0] ? res->message : tr_strerror(status));
    else if (status == 0)
        tr_info("gave up leadership: lease revoked on etcd '%s'", c->endpoints);
    if (c->close_pending > 0 && --c->close_pending == 0 && !c->freed_client)
        uv_timer_start(&c->close_timer, finish_close, 0, 0);
    coord_unref(c);
}

static void on_stats_watch(void *arg, int status, const struct tr_etcd_watch_result *res);

static int start_stats_watch(struct tr_coord *c)
{
    char *from = NULL, *to = NULL;
    struct tr_buf k, e;
    tr_buf_init(&k, 0);
    tr_buf_init(&e, 0);
    int rc = tr_buf_addf(&k, "%sfeedback_stats/", c->prefix);
    /* The range's end: the prefix with its last byte ('/') one higher. */
    if (rc == 0)
        rc = tr_buf_addf(&e, "%sfeedback_stats0", c->prefix);
    if (rc == 0) {
        from = k.buf;
        to = e.buf;
        struct tr_etcd_watch_opts o = {.key = from, .key_len = k.len, .range_end = to,
                                       .range_end_len = e.len, .flags = TR_ETCD_NO_DELETE};
        rc = tr_etcd_watch(c->e, &o, on_stats_watch, c, &c->swatch);
        if (rc == 0)
            c->refs++;
        else
            c->swatch = NULL;
    }
    tr_buf_release(&k);
    tr_buf_release(&e);
    return rc;
}

static void on_stats_watch(void *arg, int status, const struct tr_etcd_watch_result *res)
{
    struct tr_coord *c = arg;
    if (status != 0) {
        c->swatch = NULL;
        if (!c->closing && c->stats_cb != NULL && status != TR_ECANCELED) {
            tr_warn("the watch of the feedback statistics on etcd '%s' ended: %s; reading "
                    "them again", c->endpoints,
                    res->message[0] ? res->message : tr_strerror(status));
            c->stats_cb(c->stats_arg, NULL, 0);
            if (c->stats_cb != NULL && start_stats_watch(c) < 0)
                tr_warn("cannot watch the feedback statistics on etcd '%s' again",
                        c->endpoints);
        }
        coord_unref(c);
        return;
    }
    for (size_t i = 0; i < res->n_events && c->stats_cb != NULL && !c->closing; i++) {
        const struct tr_etcd_event *ev = &res->events[i];
        if (ev->type != TR_ETCD_EVENT_PUT || ev->kv.value == NULL)
            continue;
        struct tr_state_row row = {0};
        char *arena = NULL;
        if (etcd_decode_row(ev->kv.value, ev->kv.value_len, &row, &arena) == 0)
            c->stats_cb(c->stats_arg, row.value, row.value_len);
        else
            tr_warn("a feedback statistics value on etcd '%s' does not decode; ignored",
                    c->endpoints);
        tr_free(arena);
    }
}

int tr_coord_watch_stats(struct tr_coord *c, tr_coord_stats_fn cb, void *arg)
{
    if (c->closing)
        return TR_ECANCELED;
    tr_coord_unwatch_stats(c);
    c->stats_cb = cb;
    c->stats_arg = arg;
    int rc = start_stats_watch(c);
    if (rc < 0)
        c->stats_cb = NULL;
    return rc;
}

void tr_coord_unwatch_stats(struct tr_coord *c)
{
    if (c == NULL)
        return;
    c->stats_cb = NULL;
    c->stats_arg = NULL;
    if (c->swatch != NULL)
        tr_etcd_watch_cancel(c->swatch);
    c->swatch = NULL;
}

void tr_coord_close(struct tr_coord *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    uv_timer_stop(&c->retry);
    uv_timer_stop(&c->sweep);
    size_t it = 0;
    struct wreg *w;
    while ((w = tr_hmap_next(&c->workers, &it)) != NULL) {
        w->down = true;
        wreg_end(w);
        wreg_unref(w);
    }
    tr_hmap_release(&c->workers);
    tr_hmap_init(&c->workers);
    if (c->watch != NULL)
        tr_etcd_watch_cancel(c->watch);
    c->watch = NULL;
    tr_coord_unwatch_stats(c);
    if (c->ka != NULL)
        tr_etcd_lease_keepalive_stop(c->ka);
    c->ka = NULL;
    /* Revoking ends the leader key with the lease, so that a standby need not
     * wait for the TTL. A standby's lease goes the same way. */
    if (c->lease != 0 && tr_etcd_lease_revoke(c->e, c->lease, on_leader_revoked, c) == 0) {
        c->refs++;
        c->close_pending++;
    }
    c->leader = false;
    uv_timer_start(&c->close_timer, finish_close, c->close_pending ? CLOSE_WAIT_MS : 0, 0);
}
