/*
 * etcd_lease.c - lease keep-alive of the etcd client (see etcd.h).
 *
 * One LeaseKeepAlive stream per kept lease, driven by one uv timer: every
 * interval the loop sends a renewal unless one is still unanswered, so each
 * answer belongs to a known send time and expiry_ns (send time + granted
 * TTL) is a safe bound on the lease's life. A renewal unanswered after the
 * client deadline aborts the stream; a broken stream is re-opened after an
 * exponential backoff and the failure is reported (not final). TTL 0 in an
 * answer means etcd no longer knows the lease: final TR_ENOENT.
 *
 * The object lives from tr_etcd_lease_keepalive_start until its final
 * callback ran and its stream and timer are closed, registered on the
 * client all that time. Loop thread only.
 */
#include "lib/etcd/etcd_int.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"

struct tr_etcd_keepalive
{
    struct etcd_obj obj;     /* registration on the client */
    struct etcd_stream st;   /* the LeaseKeepAlive stream */
    struct tr_etcd *e;
    uv_timer_t timer;        /* renewal ticks, reopen backoff, deferred end */
    int64_t id;              /* the lease */
    uint32_t interval_ms;    /* between renewals */
    uint64_t sent_ns;        /* send time of the unanswered renewal; 0 none */
    uint64_t expiry_ns;      /* the lease is alive at least until then */
    bool cancelled;          /* stop or tr_etcd_close asked */
    bool finished;           /* the final callback ran */
    uint32_t failures;       /* stream failures since the last answer */
    tr_etcd_keepalive_fn cb;
    void *arg;
};

static void on_tick(uv_timer_t *t);

static void on_timer_closed(uv_handle_t *h)
{
    struct tr_etcd_keepalive *k = h->data;
    etcd_obj_del(k->e, &k->obj);
    tr_free(k);
}

static void finish(struct tr_etcd_keepalive *k, int status)
{
    if (k->finished)
        return;
    k->finished = true;
    k->cb(k->arg, status, 0, true);
}

/* After finish(): ends the stream if open, else frees the object. */
static void release(struct tr_etcd_keepalive *k)
{
    if (etcd_stream_is_open(&k->st)) {
        etcd_stream_cancel(&k->st);
        return;
    }
    if (!uv_is_closing((uv_handle_t *)&k->timer))
        uv_close((uv_handle_t *)&k->timer, on_timer_closed);
}

static void renewal(struct tr_etcd_keepalive *k, Etcdserverpb__LeaseKeepAliveRequest *r)
{
    Etcdserverpb__LeaseKeepAliveRequest init = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    *r = init;
    r->id = k->id;
}

/* Opens the stream with a renewal as its first message and starts ticking;
 * on failure waits a backoff. */
static void reopen(struct tr_etcd_keepalive *k)
{
    Etcdserverpb__LeaseKeepAliveRequest r;
    renewal(k, &r);
    if (etcd_stream_open(&k->st, &r.base) < 0) {
        k->failures++;
        uv_timer_start(&k->timer, on_tick, etcd_backoff_ms(k->e, k->failures), 0);
        return;
    }
    k->sent_ns = tr_mono_ns();
    uv_timer_start(&k->timer, on_tick, k->interval_ms, k->interval_ms);
}

static void on_tick(uv_timer_t *t)
{
    struct tr_etcd_keepalive *k = t->data;
    if (k->cancelled) {
        if (!etcd_stream_is_open(&k->st)) {
            finish(k, TR_ECANCELED);
            release(k);
        }
        return;
    }
    if (!etcd_stream_is_open(&k->st)) {
        reopen(k);
        return;
    }
    uint64_t now = tr_mono_ns();
    if (k->sent_ns) {
        if (now - k->sent_ns >= (uint64_t)k->e->deadline_ms * 1000000u)
            etcd_stream_abort(&k->st, GRPC_STATUS_DEADLINE_EXCEEDED,
                              "no keep-alive answer within the deadline");
        return;
    }
    Etcdserverpb__LeaseKeepAliveRequest r;
    renewal(k, &r);
    if (etcd_stream_send(&k->st, &r.base) == 0)
        k->sent_ns = now;
}

static void on_msg(struct etcd_stream *s, const ProtobufCMessage *m)
{
    struct tr_etcd_keepalive *k = ETCD_CONTAINER(s, struct tr_etcd_keepalive, st);
    const Etcdserverpb__LeaseKeepAliveResponse *r = (const void *)m;
    if (k->finished || k->cancelled)
        return;
    if (r->ttl <= 0) {
        tr_warn("etcd lease %lld expired or was revoked", (long long)k->id);
        finish(k, TR_ENOENT);
        release(k);
        return;
    }
    uint64_t sent = k->sent_ns ? k->sent_ns : tr_mono_ns();
    k->expiry_ns = sent + (uint64_t)r->ttl * 1000000000u;
    k->sent_ns = 0;
    k->failures = 0;
    k->cb(k->arg, 0, r->ttl, false);
}

static void on_end(struct etcd_stream *s, int err, grpc_status_code st, const char *msg)
{
    TR_UNUSED(st);
    struct tr_etcd_keepalive *k = ETCD_CONTAINER(s, struct tr_etcd_keepalive, st);
    if (k->finished || k->cancelled) {
        finish(k, TR_ECANCELED);
        release(k);
        return;
    }
    k->failures++;
    k->sent_ns = 0;
    k->e->stats.stream_restarts++;
    uint64_t delay = etcd_backoff_ms(k->e, k->failures);
    tr_warn("etcd keep-alive of lease %lld broke (%s), retrying in %llu ms", (long long)k->id,
            msg, (unsigned long long)delay);
    uv_timer_start(&k->timer, on_tick, delay, 0);
    /* Reported after the timer is set: the callback may stop k. */
    k->cb(k->arg, err, 0, false);
}

static void cancel(struct tr_etcd_keepalive *k)
{
    if (k->finished || k->cancelled)
        return;
    k->cancelled = true;
    if (etcd_stream_is_open(&k->st))
        etcd_stream_cancel(&k->st);
    else
        uv_timer_start(&k->timer, on_tick, 0, 0); /* end from the loop */
}

static void obj_cancel(struct etcd_obj *o)
{
    cancel(ETCD_CONTAINER(o, struct tr_etcd_keepalive, obj));
}

int tr_etcd_lease_keepalive_start(struct tr_etcd *e, int64_t id, uint32_t interval_ms,
                                  tr_etcd_keepalive_fn cb, void *arg,
                                  struct tr_etcd_keepalive **out)
{
    if (e->closing)
        return TR_ECANCELED;
    if (id <= 0 || interval_ms == 0)
        return TR_EINVAL;
    struct tr_etcd_keepalive *k = tr_calloc(1, sizeof(*k));
    if (!k)
        return TR_ENOMEM;
    k->e = e;
    k->id = id;
    k->interval_ms = interval_ms;
    k->cb = cb;
    k->arg = arg;
    k->obj.cancel = obj_cancel;
    etcd_stream_init(&k->st, e, ETCD_M_LEASE_KEEPALIVE,
                     &etcdserverpb__lease_keep_alive_response__descriptor, on_msg, on_end, NULL);
    uv_timer_init(e->loop, &k->timer);
    k->timer.data = k;
    etcd_obj_add(e, &k->obj);
    reopen(k);
    *out = k;
    return 0;
}

void tr_etcd_lease_keepalive_stop(struct tr_etcd_keepalive *k)
{
    if (k)
        cancel(k);
}

uint64_t tr_etcd_keepalive_expiry_ns(const struct tr_etcd_keepalive *k)
{
    return k->expiry_ns;
}
