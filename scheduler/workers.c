/*
 * workers.c - the ROUTER socket, the worker registry and heartbeats.
 *
 * Liveness follows the ZeroMQ guide's Paranoid Pirate pattern: both sides
 * send HEARTBEAT every interval, and a worker silent for three intervals is
 * presumed dead: its in-flight tasks go back to the ready queue with a new
 * dispatch id, so a late result from it is refused as stale. Frames that do
 * not decode are counted by reason and dropped; nothing a peer sends can
 * stop the scheduler.
 */
#include "scheduler/sched.h"

#include <arpa/inet.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/wire/curve.h"
#include "lib/wire/zmq_uv.h"

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
    if (in->on_slot) {
        in->on_slot = false;
        w->running--;
    }
    /* The worker runs its queue in order: the oldest prefetched task has now
     * taken the freed slot. */
    for (struct inst *q = w->head; q != NULL && w->running < w->slots; q = q->wnext) {
        if (!q->on_slot) {
            if (q->state == ST_DISPATCHED) {
                inst_set_state(q, ST_RUNNING);
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
    tr_free(w->version);
    tr_free(w->ident);
    tr_free(w->id);
    tr_free(w);
}

void worker_remove(struct sched *s, struct worker *w, const char *why)
{
    tr_info("worker gone worker=%s pool=%s in_flight=%u: %s", w->id, w->pool->name, w->inflight,
            why);
    leader_worker_down(s, w);
    while (w->head != NULL) {
        inst_requeue(w->head); /* unlinks it from w */
    }
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

static void send_now(struct sched *s, const void *ident, size_t ident_len, const struct tr_msg *m)
{
    msgpack_sbuffer_clear(&s->sbuf);
    if (tr_proto_encode(&s->sbuf, m) < 0)
        return;
    int rc = tr_zmq_uv_send(s->zuv, ident, ident_len, s->sbuf.data, s->sbuf.size);
    if (rc < 0 && rc != -EHOSTUNREACH)
        tr_warn("cannot send %s: %s", tr_msg_type_name(m->type), tr_strerror(rc));
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

static void refuse_hello(struct sched *s, const void *ident, size_t ident_len, const char *why)
{
    struct tr_msg bye = {.type = TR_MSG_BYE};
    bye.u.bye.reason = tr_str_c(why);
    send_now(s, ident, ident_len, &bye);
}

/*
 * A worker is its connection: the routing id of the connection that said
 * HELLO (the ROUTER refuses a second connection with a routing id in use, as
 * ZMQ_ROUTER_HANDOVER is off) and, under CURVE, the key that connection
 * authenticated with. A HELLO claiming the id of a live worker from another
 * connection is refused, unless that worker's connection is gone (a send to
 * it finds no peer: the worker restarted) and the key is the same.
 */
static void worker_hello(struct sched *s, const void *ident, size_t ident_len,
                         const struct tr_msg_hello *h)
{
    const char *key = s->zap != NULL ? tr_zmq_uv_peer_user(s->zuv) : NULL;
    if (key == NULL)
        key = "";
    if (!worker_id_valid(h->worker_id)) {
        metrics_drop(s, DROP_BAD_BODY, h->worker_id.p, h->worker_id.len);
        refuse_hello(s, ident, ident_len, "invalid worker id");
        return;
    }
    if (!pool_name_valid(h->pool.p, h->pool.len)) {
        metrics_drop(s, DROP_BAD_BODY, h->pool.p, h->pool.len);
        refuse_hello(s, ident, ident_len,
                     "invalid pool name (1 to 63 of A-Z a-z 0-9 _ . -)");
        return;
    }
    struct worker *same_conn = tr_hmap_get(&s->workers, ident, ident_len);
    struct worker *same_id = tr_hmap_get(&s->worker_ids, h->worker_id.p, h->worker_id.len);
    if (same_id != NULL && same_id != same_conn) {
        struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
        bool gone = false;
        msgpack_sbuffer_clear(&s->sbuf);
        if (strcmp(same_id->key, key) == 0 && tr_proto_encode(&s->sbuf, &hb) == 0)
            gone = tr_zmq_uv_send(s->zuv, same_id->ident, same_id->ident_len, s->sbuf.data,
                                  s->sbuf.size) == -EHOSTUNREACH;
        if (!gone) {
            metrics_drop(s, DROP_IMPERSONATION, h->worker_id.p, h->worker_id.len);
            refuse_hello(s, ident, ident_len,
                         strcmp(same_id->key, key) != 0
                             ? "worker id in use by another key"
                             : "worker id in use by another connection");
            return;
        }
        worker_remove(s, same_id, "came back on a new connection");
    }
    if (same_conn != NULL)
        worker_remove(s, same_conn, "said HELLO again (new session)");
    struct worker *w = tr_calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    w->id = tr_strndup(h->worker_id.p, h->worker_id.len);
    w->id_len = h->worker_id.len;
    w->ident = tr_memdup(ident, ident_len);
    w->ident_len = ident_len;
    snprintf(w->key, sizeof(w->key), "%s", key);
    uint32_t max_slots = s->cfg.max_slots ? s->cfg.max_slots : MAX_SLOTS_DEFAULT;
    w->slots = TR_MIN(h->slots, max_slots);
    w->window = WINDOW_START;
    w->gpus = h->gpus;
    w->cpus = h->cpus;
    w->mem_mb = h->mem_mb;
    w->version = tr_strndup(h->version.p, h->version.len);
    w->labels = json_object();
    w->connected_at = w->last_seen = tr_now();
    w->last_seen_ns = tr_mono_ns();
    w->pool = pool_get(s, h->pool.p, h->pool.len);
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
        return;
    }
    if (tr_hmap_put(&s->worker_ids, w->id, w->id_len, w) < 0) {
        tr_hmap_del(&s->workers, w->ident, w->ident_len);
        worker_free(w);
        tr_err("out of memory registering a worker");
        return;
    }
    if (p->n_workers == p->cap_workers) {
        size_t cap = p->cap_workers ? p->cap_workers * 2 : 8;
        struct worker **a = tr_reallocarray(p->workers, cap, sizeof(*a));
        if (a == NULL) {
            tr_hmap_del(&s->workers, w->ident, w->ident_len);
            tr_hmap_del(&s->worker_ids, w->id, w->id_len);
            worker_free(w);
            return;
        }
        p->workers = a;
        p->cap_workers = cap;
    }
    p->workers[p->n_workers++] = w;
    if (h->slots > w->slots)
        tr_warn("worker=%s claims %u slots: counted as %u (--max-slots)", w->id, h->slots,
                w->slots);
    tr_info("worker joined worker=%s pool=%s slots=%u gpus=%u", w->id, p->name, w->slots,
            w->gpus);
    leader_worker_up(s, w);
    struct tr_msg m = {.type = TR_MSG_WELCOME};
    m.u.welcome.heartbeat_ms = s->cfg.heartbeat_ms;
    m.u.welcome.epoch = s->epoch;
    send_now(s, ident, ident_len, &m);
}

static void answer_pipeline_get(struct sched *s, struct worker *w, struct tr_str digest)
{
    char d[65];
    struct tr_msg m = {.type = TR_MSG_PIPELINE};
    m.u.pipeline.digest = digest;
    if (digest.len != 64) {
        m.u.pipeline.error = TR_STR("bad digest");
        send_now(s, w->ident, w->ident_len, &m);
        return;
    }
    memcpy(d, digest.p, 64);
    d[64] = '\0';
    struct pipeline_entry *pe = pipe_lookup(s, d);
    char *src = NULL;
    size_t len = 0;
    if (pe != NULL) {
        m.u.pipeline.source = (struct tr_str){pe->def->source, pe->def->source_len};
        m.u.pipeline.name = tr_str_c(pe->name);
    } else if (tr_state_get_source(s->state, d, &src, &len) == 0) {
        m.u.pipeline.source = (struct tr_str){src, len};
    } else {
        m.u.pipeline.error = TR_STR("unknown pipeline digest");
    }
    send_now(s, w->ident, w->ident_len, &m);
    tr_free(src);
}

static enum drop_reason drop_reason_of(const char *label)
{
    static const struct
    {
        const char *label;
        enum drop_reason why;
    } map[] = {{"too_large", DROP_TOO_LARGE},     {"bad_version", DROP_BAD_VERSION},
               {"unknown_type", DROP_UNKNOWN_TYPE}, {"bad_body", DROP_BAD_BODY}};
    for (size_t i = 0; i < TR_ARRAY_LEN(map); i++) {
        if (strcmp(label, map[i].label) == 0)
            return map[i].why;
    }
    return DROP_BAD_MSGPACK;
}

static void on_frame(void *arg, const void *ident, size_t ident_len, const void *data, size_t len,
                     int nparts)
{
    struct sched *s = arg;
    if (data == NULL || nparts != 2) {
        metrics_drop(s, DROP_BAD_FRAMES, ident, ident_len);
        return;
    }
    struct tr_msg m;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_proto_decode(&s->decoder, data, len, &m, &err) < 0) {
        metrics_drop(s, drop_reason_of(err.msg), data, len);
        return;
    }
    struct worker *w = tr_hmap_get(&s->workers, ident, ident_len);
    if (m.type == TR_MSG_HELLO) {
        worker_hello(s, ident, ident_len, &m.u.hello);
        return;
    }
    if (w == NULL) {
        /* A worker of a previous scheduler (or one we presumed dead): tell it
         * to introduce itself, so it comes back without waiting for its own
         * heartbeat timeout. */
        metrics_drop(s, DROP_UNKNOWN_WORKER, NULL, 0);
        if (m.type != TR_MSG_BYE) {
            struct tr_msg bye = {.type = TR_MSG_BYE};
            bye.u.bye.reason = TR_STR("unknown worker: say HELLO");
            send_now(s, ident, ident_len, &bye);
        }
        return;
    }
    if (w->key[0] != '\0') {
        /* Under CURVE a connection carries one key; a routing id reused by
         * another connection after the worker's went away is not the worker. */
        const char *key = tr_zmq_uv_peer_user(s->zuv);
        if (key == NULL || strcmp(key, w->key) != 0) {
            metrics_drop(s, DROP_IMPERSONATION, NULL, 0);
            return;
        }
    }
    w->last_seen = tr_now();
    w->last_seen_ns = tr_mono_ns();
    switch (m.type) {
    case TR_MSG_HEARTBEAT:
        break;
    case TR_MSG_RESULT:
        sched_on_result(s, w, &m.u.result);
        break;
    case TR_MSG_LOG:
        sched_on_log(s, w, &m.u.log);
        break;
    case TR_MSG_PIPELINE_GET:
        answer_pipeline_get(s, w, m.u.pipeline_get.digest);
        break;
    case TR_MSG_BYE:
        worker_remove(s, w, "said BYE");
        break;
    default:
        metrics_drop(s, DROP_UNKNOWN_TYPE, data, len);
        break;
    }
}

static void on_heartbeat(uv_timer_t *h)
{
    struct sched *s = h->data;
    uint64_t now = tr_mono_ns();
    uint64_t limit = 3ull * s->cfg.heartbeat_ms * 1000000ull;
    struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
    size_t it = 0;
    struct worker *w;
    while ((w = tr_hmap_next(&s->workers, &it)) != NULL) {
        if (now - w->last_seen_ns > limit) {
            worker_remove(s, w, "missed 3 heartbeats");
            continue;
        }
        send_now(s, w->ident, w->ident_len, &hb);
    }
    tr_zmq_uv_kick(s->zuv);
    pools_sweep(s);
}

static bool endpoint_is_loopback(const char *ep)
{
    const char *host = strstr(ep, "://");
    if (host == NULL)
        return false;
    host += 3;
    if (strncmp(host, "localhost:", 10) == 0 || strncmp(host, "[::1]:", 6) == 0)
        return true;
    char ip[64];
    const char *colon = strrchr(host, ':');
    if (colon == NULL || (size_t)(colon - host) >= sizeof(ip))
        return false;
    memcpy(ip, host, (size_t)(colon - host));
    ip[colon - host] = '\0';
    struct in_addr a;
    return inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/*
 * With a key pair and an allow list the worker port speaks CURVE (encrypted,
 * and only listed worker keys get in); without them it stays on loopback.
 */
static int setup_curve(struct sched *s, struct tr_error *err)
{
    bool has_key = s->cfg.curve_key != NULL, has_allow = s->cfg.curve_allow != NULL;
    if (has_key != has_allow)
        return tr_error_set(err, TR_EINVAL, "--curve-key and --curve-allow go together");
    if (!has_key) {
        if (!endpoint_is_loopback(s->cfg.listen))
            return tr_error_set(err, TR_EADDR,
                                "refusing to listen for workers on '%s': without worker keys "
                                "the worker port stays on loopback (use tcp://127.0.0.1:PORT, "
                                "or --curve-key and --curve-allow)",
                                s->cfg.listen);
        return 0;
    }
    char pub[TR_CURVE_KEY_LEN + 1], sec[TR_CURVE_KEY_LEN + 1];
    int rc = tr_curve_load_pair(s->cfg.curve_key, pub, sec, err);
    if (rc < 0)
        return rc;
    s->zap = tr_zap_start(s->zctx, s->cfg.curve_allow, err);
    if (s->zap == NULL) {
        explicit_bzero(sec, sizeof(sec));
        return err->code ? err->code : TR_EIO;
    }
    int one = 1;
    rc = zmq_setsockopt(s->router, ZMQ_CURVE_SERVER, &one, sizeof(one)) == 0 &&
                 zmq_setsockopt(s->router, ZMQ_CURVE_SECRETKEY, sec, sizeof(sec)) == 0 &&
                 zmq_setsockopt(s->router, ZMQ_ZAP_DOMAIN, "trellis", 7) == 0
             ? 0
             : tr_error_set(err, TR_EINVAL, "cannot set CURVE options: %s", zmq_strerror(errno));
    explicit_bzero(sec, sizeof(sec));
    if (rc == 0)
        tr_info("worker port uses CURVE: %zu worker keys allowed, server key %s",
                tr_zap_allowed(s->zap), pub);
    return rc;
}

int workers_init(struct sched *s, struct tr_error *err)
{
    tr_proto_decoder_init(&s->decoder, NULL);
    s->zctx = zmq_ctx_new();
    if (s->zctx == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot create zmq context");
    s->router = zmq_socket(s->zctx, ZMQ_ROUTER);
    if (s->router == NULL)
        return tr_error_set(err, TR_EIO, "cannot create zmq socket: %s", zmq_strerror(errno));
    int one = 1, zero = 0, hwm = 1000000;
    int64_t maxmsg = (int64_t)tr_mp_default_limits.max_frame;
    zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    /* No ZMQ_ROUTER_HANDOVER: a connection claiming the routing id of a live
     * one must not take its place (and its results). */
    zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s->router, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(s->router, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
    int rc = setup_curve(s, err);
    if (rc < 0)
        return rc;
    if (zmq_bind(s->router, s->cfg.listen) != 0)
        return tr_error_set(err, TR_EIO, "cannot listen for workers on '%s': %s", s->cfg.listen,
                            zmq_strerror(errno));
    char last[256];
    size_t sz = sizeof(last);
    if (zmq_getsockopt(s->router, ZMQ_LAST_ENDPOINT, last, &sz) == 0) {
        const char *colon = strrchr(last, ':');
        s->worker_port = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
    }
    s->zuv = tr_zmq_uv_new(s->loop, s->router, true, 4096, on_frame, s);
    if (s->zuv == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot watch the worker socket");
    uv_timer_init(s->loop, &s->heartbeat);
    s->heartbeat.data = s;
    uv_timer_start(&s->heartbeat, on_heartbeat, s->cfg.heartbeat_ms, s->cfg.heartbeat_ms);
    return 0;
}

void workers_close(struct sched *s)
{
    size_t it = 0;
    struct worker *w;
    while ((w = tr_hmap_next(&s->workers, &it)) != NULL) {
        struct tr_msg bye = {.type = TR_MSG_BYE};
        bye.u.bye.reason = TR_STR("scheduler stopping");
        if (s->zuv)
            send_now(s, w->ident, w->ident_len, &bye);
        while (w->head != NULL)
            worker_inflight_del(w, w->head);
        worker_free(w);
    }
    tr_hmap_release(&s->workers);
    tr_hmap_release(&s->worker_ids);
    it = 0;
    struct pool *p;
    while ((p = tr_hmap_next(&s->pools, &it)) != NULL) {
        p->runs = 0;
        p->n_workers = 0;
        p->n_heap = 0;
    }
    pools_sweep(s);
    tr_hmap_release(&s->pools);
    if (uv_is_active((uv_handle_t *)&s->heartbeat) || s->heartbeat.loop)
        uv_close((uv_handle_t *)&s->heartbeat, NULL);
    tr_zmq_uv_free(s->zuv);
    s->zuv = NULL;
    if (s->router)
        zmq_close(s->router);
    s->router = NULL;
    if (s->zctx) {
        /* Shutdown unblocks the authentication thread before the join. */
        zmq_ctx_shutdown(s->zctx);
        tr_zap_stop(s->zap);
        s->zap = NULL;
        zmq_ctx_term(s->zctx);
        s->zctx = NULL;
    }
    tr_proto_decoder_release(&s->decoder);
}
