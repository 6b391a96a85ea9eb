/*
 * workers.c - the fleet (workers.h): the worker registry, pools, heartbeats
 * and in-flight lists.
 *
 * Liveness follows the ZeroMQ guide's Paranoid Pirate pattern: both sides
 * send HEARTBEAT every interval, and a worker silent for three intervals is
 * presumed dead: its in-flight tasks go back to the ready queue with a new
 * dispatch id, so a late result from it is refused as stale.
 */
#include "scheduler/workers.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "scheduler/counters.h"

void worker_inflight_add(struct worker *w, struct inst *in)
{
    in->worker = w;
    in->wnext = NULL;
    in->wprev = w->tail;
    if (w->tail)
        w->tail->wnext = in;
    else
        w->head = in;
    w->tail = in;
    w->inflight++;
}

void worker_inflight_del(struct worker *w, struct inst *in)
{
    if (in->wprev)
        in->wprev->wnext = in->wnext;
    else
        w->head = in->wnext;
    if (in->wnext)
        in->wnext->wprev = in->wprev;
    else
        w->tail = in->wprev;
    in->wprev = in->wnext = NULL;
    w->inflight--;
    worker_gpus_put(&w->g, in->gpu_mask);
    in->gpu_mask = 0;
    if (in->on_slot) {
        in->on_slot = false;
        w->running--;
    }
    /* The worker runs its queue in order: the oldest prefetched task has now
     * taken the freed slot. */
    for (struct inst *q = w->head; q != NULL && w->running < w->slots; q = q->wnext) {
        if (!q->on_slot) {
            if (q->state == TR_TASK_DISPATCHED) {
                inst_set_state(q, TR_TASK_RUNNING);
                q->started_at = tr_now();
            }
            q->on_slot = true;
            w->running++;
        }
    }
}

static void worker_free(struct worker *w)
{
    if (w == NULL)
        return;
    json_decref(w->labels);
    worker_gpus_release(&w->g);
    tr_free(w->version);
    tr_free(w->tenant);
    tr_free(w->ident);
    tr_free(w->id);
    tr_free(w);
}

void fleet_remove(struct fleet *s, struct worker *w, const char *why)
{
    tr_info("worker gone worker=%s pool=%s in_flight=%u: %s", w->id, w->pool->name, w->inflight,
            why);
    s->hooks.down(s->hooks.arg, w); /* requeues w's tasks, which unlinks them from w */
    TR_ASSERT(w->head == NULL);
    struct pool *p = w->pool;
    for (size_t i = 0; i < p->n_workers; i++) {
        if (p->workers[i] == w) {
            p->workers[i] = p->workers[--p->n_workers];
            break;
        }
    }
    tr_hmap_del(&s->workers, w->ident, w->ident_len);
    tr_hmap_del(&s->worker_ids, w->id, w->id_len);
    worker_free(w);
}

struct pool *fleet_pool(struct fleet *s, const char *name, size_t len)
{
    struct pool *p = tr_hmap_get(&s->pools, name, len);
    if (p != NULL)
        return p;
    p = tr_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->name = tr_strndup(name, len);
    if (p->name == NULL || tr_hmap_put(&s->pools, p->name, len, p) < 0) {
        tr_free(p->name);
        tr_free(p);
        return NULL;
    }
    return p;
}

struct worker *fleet_find(struct fleet *s, const void *ident, size_t len)
{
    return tr_hmap_get(&s->workers, ident, len);
}

void fleet_seen(struct worker *w)
{
    w->last_seen = tr_now();
    w->last_seen_ns = tr_mono_ns();
}

void worker_window_grow(struct worker *w)
{
    w->window = w->window > UINT32_MAX - WINDOW_STEP ? UINT32_MAX : w->window + WINDOW_STEP;
}

bool pool_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* Worker ids are names for logs, the API and etcd: printable ASCII, no quotes. */
static bool worker_id_valid(struct tr_str id)
{
    if (id.len == 0 || id.len > 255)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        unsigned char c = (unsigned char)id.p[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static void refuse_hello(struct fleet *s, const void *ident, size_t ident_len,
                         enum drop_reason why, struct tr_str sample, const char *reason)
{
    if (s->cnt != NULL)
        counters_drop(s->cnt, why, sample.p, sample.len);
    struct tr_msg bye = {.type = TR_MSG_BYE};
    bye.u.bye.reason = tr_str_c(reason);
    if (s->tp != NULL)
        transport_send_msg(s->tp, ident, ident_len, &bye);
}

/*
 * A worker is its connection: the routing id of the connection that said
 * HELLO (the ROUTER refuses a second connection with a routing id in use, as
 * ZMQ_ROUTER_HANDOVER is off) and, under CURVE, the key that connection
 * authenticated with. A HELLO claiming the id of a live worker from another
 * connection is refused, unless that worker's connection is gone (a send to
 * it finds no peer: the worker restarted) and the key is the same.
 */
struct worker *fleet_hello(struct fleet *s, const void *ident, size_t ident_len,
                           const struct tr_msg_hello *h)
{
    const char *key = transport_peer_key(s->tp);
    if (key == NULL)
        key = "";
    if (!worker_id_valid(h->worker_id)) {
        refuse_hello(s, ident, ident_len, DROP_BAD_BODY, h->worker_id, "invalid worker id");
        return NULL;
    }
    if (!pool_name_valid(h->pool.p, h->pool.len)) {
        refuse_hello(s, ident, ident_len, DROP_BAD_BODY, h->pool,
                     "invalid pool name (1 to 63 of A-Z a-z 0-9 _ . -)");
        return NULL;
    }
    /* A key allowed only for one pool (and tenant): curve.h. */
    const char *lim_pool, *lim_tenant;
    transport_peer_limits(s->tp, &lim_pool, &lim_tenant);
    if (lim_pool != NULL &&
        (h->pool.len != strlen(lim_pool) || memcmp(h->pool.p, lim_pool, h->pool.len) != 0)) {
        char why[160];
        snprintf(why, sizeof(why), "this worker's key is allowed only for pool '%s'", lim_pool);
        tr_warn("worker %.*s refused: HELLO for pool '%.*s', its key is allowed only for pool "
                "'%s'", (int)TR_MIN(h->worker_id.len, (size_t)64), h->worker_id.p,
                (int)h->pool.len, h->pool.p, lim_pool);
        refuse_hello(s, ident, ident_len, DROP_KEY_RESTRICTED, h->pool, why);
        return NULL;
    }
    struct worker *same_conn = tr_hmap_get(&s->workers, ident, ident_len);
    struct worker *same_id = tr_hmap_get(&s->worker_ids, h->worker_id.p, h->worker_id.len);
    if (same_id != NULL && same_id != same_conn) {
        bool same_key = strcmp(same_id->key, key) == 0;
        bool gone = false;
        if (same_key && s->tp != NULL) {
            struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
            msgpack_sbuffer_clear(&s->tp->sbuf);
            if (tr_proto_encode(&s->tp->sbuf, &hb) == 0)
                gone = transport_send(s->tp, same_id->ident, same_id->ident_len,
                                      s->tp->sbuf.data, s->tp->sbuf.size) == -EHOSTUNREACH;
        }
        if (!gone) {
            refuse_hello(s, ident, ident_len, DROP_IMPERSONATION, h->worker_id,
                         same_key ? "worker id in use by another connection"
                                  : "worker id in use by another key");
            return NULL;
        }
        fleet_remove(s, same_id, "came back on a new connection");
    }
    if (same_conn != NULL)
        fleet_remove(s, same_conn, "said HELLO again (new session)");
    struct worker *w = tr_calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->id = tr_strndup(h->worker_id.p, h->worker_id.len);
    w->id_len = h->worker_id.len;
    w->ident = tr_memdup(ident, ident_len);
    w->ident_len = ident_len;
    snprintf(w->key, sizeof(w->key), "%s", key);
    uint32_t max_slots = s->max_slots ? s->max_slots : MAX_SLOTS_DEFAULT;
    w->slots = TR_MIN(h->slots, max_slots);
    w->window = WINDOW_START;
    w->gpus = h->gpus;
    w->cpus = h->cpus;
    w->mem_mb = h->mem_mb;
    w->version = tr_strndup(h->version.p, h->version.len);
    w->tenant = lim_tenant ? tr_strdup(lim_tenant) : NULL;
    w->labels = json_object();
    w->connected_at = w->last_seen = tr_now();
    w->last_seen_ns = tr_mono_ns();
    w->pool = fleet_pool(s, h->pool.p, h->pool.len);
    worker_gpus_hello(&w->g, w->id ? w->id : "?", h);
    w->gpus = w->g.n;
    for (uint32_t i = 0; w->labels && i < h->n_labels; i++) {
        char *k = tr_strndup(h->labels[i].key.p, h->labels[i].key.len);
        json_t *v = json_stringn(h->labels[i].value.p, h->labels[i].value.len);
        if (k && v)
            json_object_set_new(w->labels, k, v);
        else
            json_decref(v);
        tr_free(k);
    }
    struct pool *p = w->pool;
    if (w->id == NULL || w->ident == NULL || w->version == NULL || w->labels == NULL ||
        p == NULL || tr_hmap_put(&s->workers, w->ident, w->ident_len, w) < 0) {
        worker_free(w);
        tr_err("out of memory registering a worker");
        return NULL;
    }
    if (tr_hmap_put(&s->worker_ids, w->id, w->id_len, w) < 0 ||
        TR_VEC_PUSH(p->workers, p->n_workers, p->cap_workers, w) < 0) {
        tr_hmap_del(&s->workers, w->ident, w->ident_len);
        tr_hmap_del(&s->worker_ids, w->id, w->id_len);
        worker_free(w);
        return NULL;
    }
    if (h->slots > w->slots)
        tr_warn("worker=%s claims %u slots: counted as %u (--max-slots)", w->id, h->slots,
                w->slots);
    tr_info("worker joined worker=%s pool=%s slots=%u gpus=%u", w->id, p->name, w->slots,
            w->gpus);
    if (s->hooks.up != NULL)
        s->hooks.up(s->hooks.arg, w);
    struct tr_msg m = {.type = TR_MSG_WELCOME};
    m.u.welcome.heartbeat_ms = s->heartbeat_ms;
    m.u.welcome.epoch = s->epoch;
    if (s->tp != NULL)
        transport_send_msg(s->tp, ident, ident_len, &m);
    return w;
}

void fleet_sweep_pools(struct fleet *s, bool (*keep)(void *arg, const struct pool *p), void *arg)
{
    size_t it = 0;
    struct pool *p;
    while ((p = tr_hmap_next(&s->pools, &it)) != NULL) {
        if (p->n_workers == 0 && !keep(arg, p)) {
            tr_hmap_del(&s->pools, p->name, strlen(p->name));
            tr_free(p->workers);
            tr_free(p->name);
            tr_free(p);
        }
    }
}

static void on_heartbeat(uv_timer_t *h)
{
    struct fleet *s = h->data;
    uint64_t now = tr_mono_ns();
    uint64_t limit = 3ull * s->heartbeat_ms * 1000000ull;
    struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
    size_t it = 0;
    struct worker *w;
    while ((w = tr_hmap_next(&s->workers, &it)) != NULL) {
        if (now - w->last_seen_ns > limit) {
            fleet_remove(s, w, "missed 3 heartbeats");
            continue;
        }
        transport_send_msg(s->tp, w->ident, w->ident_len, &hb);
    }
    transport_flush(s->tp);
}

void fleet_init(struct fleet *s, uint32_t heartbeat_ms, const struct fleet_hooks *hooks)
{
    memset(s, 0, sizeof(*s));
    tr_hmap_init(&s->workers);
    tr_hmap_init(&s->worker_ids);
    tr_hmap_init(&s->pools);
    s->heartbeat_ms = heartbeat_ms;
    s->hooks = *hooks;
}

void fleet_start(struct fleet *s, uv_loop_t *loop, struct transport *tp, uint64_t epoch)
{
    s->tp = tp;
    s->epoch = epoch;
    uv_timer_init(loop, &s->heartbeat);
    s->heartbeat.data = s;
    s->heartbeat_on = true;
    uv_timer_start(&s->heartbeat, on_heartbeat, s->heartbeat_ms, s->heartbeat_ms);
}


void fleet_release(struct fleet *s)
{
    size_t it = 0;
    struct worker *w;
    while ((w = tr_hmap_next(&s->workers, &it)) != NULL) {
        struct tr_msg bye = {.type = TR_MSG_BYE};
        bye.u.bye.reason = TR_STR("scheduler stopping");
        if (s->tp)
            transport_send_msg(s->tp, w->ident, w->ident_len, &bye);
        while (w->head != NULL)
            worker_inflight_del(w, w->head);
        worker_free(w);
    }
    tr_hmap_release(&s->workers);
    tr_hmap_release(&s->worker_ids);
    it = 0;
    struct pool *p;
    while ((p = tr_hmap_next(&s->pools, &it)) != NULL) {
        tr_free(p->workers);
        tr_free(p->name);
        tr_free(p);
    }
    tr_hmap_release(&s->pools);
    if (s->heartbeat_on)
        uv_close((uv_handle_t *)&s->heartbeat, NULL);
    s->heartbeat_on = false;
    if (s->tp)
        transport_flush(s->tp);
    s->tp = NULL;
}

