/*
 * transport.c - the ZeroMQ ROUTER the workers connect to (transport.h).
 *
 * Frames are bounded by ZMQ_MAXMSGSIZE before they are read, decoded by
 * lib/wire/proto.c, and what does not decode is counted by reason and
 * dropped: nothing a peer sends can stop the scheduler. Sends go through
 * lib/wire/zmq_uv.c, which batches them per loop turn.
 */
#include "scheduler/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/wire/curve.h"
#include "lib/wire/zmq_uv.h"

/* ====================================================================== */
/* The interface                                                           */
/* ====================================================================== */

void transport_init(struct transport *t, const struct transport_ops *ops, void *impl)
{
    t->ops = ops;
    t->impl = impl;
    msgpack_sbuffer_init(&t->sbuf);
}

void transport_release(struct transport *t)
{
    msgpack_sbuffer_destroy(&t->sbuf);
}

const char *transport_peer_key(struct transport *t)
{
    return t != NULL && t->ops->peer_key != NULL ? t->ops->peer_key(t->impl) : NULL;
}

void transport_peer_limits(struct transport *t, const char **pool, const char **tenant)
{
    *pool = *tenant = NULL;
    if (t != NULL && t->ops->peer_limits != NULL)
        t->ops->peer_limits(t->impl, pool, tenant);
}

int transport_send(struct transport *t, const void *ident, size_t ident_len, const void *data,
                   size_t len)
{
    return t->ops->send(t->impl, ident, ident_len, data, len);
}

void transport_send_msg(struct transport *t, const void *ident, size_t ident_len,
                        const struct tr_msg *m)
{
    msgpack_sbuffer_clear(&t->sbuf);
    if (tr_proto_encode(&t->sbuf, m) < 0)
        return;
    int rc = transport_send(t, ident, ident_len, t->sbuf.data, t->sbuf.size);
    if (rc < 0 && rc != -EHOSTUNREACH)
        tr_warn("cannot send %s: %s", tr_msg_type_name(m->type), tr_strerror(rc));
}

void transport_flush(struct transport *t)
{
    if (t->ops->flush)
        t->ops->flush(t->impl);
}

/* ====================================================================== */
/* The ZeroMQ ROUTER                                                       */
/* ====================================================================== */

struct zmq_router
{
    struct transport t;       /* what the other parts hold */
    void *zctx;
    void *router;
    struct tr_zmq_uv *zuv;
    struct tr_zap *zap;       /* worker authentication, NULL without CURVE */
    struct tr_proto_decoder decoder;
    struct counters *cnt;
    transport_msg_fn on_msg;
    void *arg;
};

static int zr_send(void *impl, const void *ident, size_t ident_len, const void *data, size_t len)
{
    struct zmq_router *z = impl;
    return tr_zmq_uv_send(z->zuv, ident, ident_len, data, len);
}

static void zr_flush(void *impl)
{
    struct zmq_router *z = impl;
    tr_zmq_uv_kick(z->zuv);
}

static const char *zr_peer_key(void *impl)
{
    struct zmq_router *z = impl;
    return z->zap != NULL ? tr_zmq_uv_peer_user(z->zuv) : NULL;
}

static void zr_peer_limits(void *impl, const char **pool, const char **tenant)
{
    struct zmq_router *z = impl;
    const struct tr_zap_limits *l = tr_zap_limits(z->zap, zr_peer_key(impl));
    *pool = l && l->pool[0] ? l->pool : NULL;
    *tenant = l && l->tenant[0] ? l->tenant : NULL;
}

static const struct transport_ops zr_ops = {zr_send, zr_flush, zr_peer_key, zr_peer_limits};

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
    struct zmq_router *z = arg;
    if (data == NULL || nparts != 2) {
        counters_drop(z->cnt, DROP_BAD_FRAMES, ident, ident_len);
        return;
    }
    struct tr_msg m;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_proto_decode(&z->decoder, data, len, &m, &err) < 0) {
        counters_drop(z->cnt, drop_reason_of(err.msg), data, len);
        return;
    }
    z->on_msg(z->arg, ident, ident_len, &m, data, len);
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
static int setup_curve(struct zmq_router *s, const struct sched_config *cfg,
                       struct tr_error *err)
{
    bool has_key = cfg->curve_key != NULL, has_allow = cfg->curve_allow != NULL;
    if (has_key != has_allow)
        return tr_error_set(err, TR_EINVAL, "--curve-key and --curve-allow go together");
    if (!has_key) {
        if (!endpoint_is_loopback(cfg->listen))
            return tr_error_set(err, TR_EADDR,
                                "refusing to listen for workers on '%s': without worker keys "
                                "the worker port stays on loopback (use tcp://127.0.0.1:PORT, "
                                "or --curve-key and --curve-allow)",
                                cfg->listen);
        return 0;
    }
    char pub[TR_CURVE_KEY_LEN + 1], sec[TR_CURVE_KEY_LEN + 1];
    int rc = tr_curve_load_pair(cfg->curve_key, pub, sec, err);
    if (rc < 0)
        return rc;
    s->zap = tr_zap_open(s->zctx, cfg->curve_allow, err);
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

int zmq_router_open(struct zmq_router **out, uv_loop_t *loop, const struct sched_config *cfg,
                    struct counters *cnt, transport_msg_fn on_msg, void *arg,
                    struct tr_error *err)
{
    struct zmq_router *s = tr_calloc(1, sizeof(*s));
    *out = s;
    if (s == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    transport_init(&s->t, &zr_ops, s);
    s->cnt = cnt;
    s->on_msg = on_msg;
    s->arg = arg;
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
    int rc = setup_curve(s, cfg, err);
    if (rc < 0)
        return rc;
    if (zmq_bind(s->router, cfg->listen) != 0)
        return tr_error_set(err, TR_EIO, "cannot listen for workers on '%s': %s", cfg->listen,
                            zmq_strerror(errno));
    s->zuv = tr_zmq_uv_open(loop, s->router, true, 4096, on_frame, s);
    if (s->zuv == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot watch the worker socket");
    return 0;
}

struct transport *zmq_router_transport(struct zmq_router *z)
{
    return z ? &z->t : NULL;
}

uint64_t zmq_router_auth_refused(const struct zmq_router *z)
{
    return z ? tr_zap_refused(z->zap) : 0;
}

void zmq_router_close(struct zmq_router *s)
{
    if (s == NULL)
        return;
    tr_zmq_uv_close(s->zuv);
    if (s->router)
        zmq_close(s->router);
    if (s->zctx) {
        /* Shutdown unblocks the authentication thread before the join. */
        zmq_ctx_shutdown(s->zctx);
        tr_zap_close(s->zap);
        zmq_ctx_term(s->zctx);
    }
    tr_proto_decoder_release(&s->decoder);
    transport_release(&s->t);
    tr_free(s);
}
