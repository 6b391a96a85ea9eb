/*
 * etcd_watch.c - watches of the etcd client (see etcd.h).
 *
 * One gRPC Watch stream per watch: no watch-id demultiplexing, and a broken
 * stream affects one watch, which resumes on its own. HTTP/2 carries all of
 * them over the client's one connection, so the cost is a stream, not a
 * socket.
 *
 * Resume rule: last_rev is the highest revision whose events were all
 * delivered (from events, from a progress answer, or from the creation
 * answer of a watch that started "from now"). A new stream asks for
 * last_rev + 1, and events at or below last_rev are dropped, so a resumed
 * watch neither loses nor repeats an event. etcd never splits one revision
 * across answers unless asked to fragment, which this client does not ask.
 *
 * A watch object lives from tr_etcd_watch until its final callback has run
 * and its stream and timer are closed; it is registered on the client all
 * that time. Loop thread only.
 */
#include "lib/etcd/etcd_int.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"

struct tr_etcd_watch
{
    struct etcd_obj obj;       /* registration on the client */
    struct etcd_stream st;     /* the Watch stream, re-opened on resume */
    struct tr_etcd *e;
    uv_timer_t timer;          /* resume backoff; deferred final call */
    uint8_t *key;              /* owned copies of the resolved range */
    size_t key_len;
    uint8_t *end;
    size_t end_len;
    unsigned flags;            /* the caller's TR_ETCD_* flags */
    int64_t last_rev;          /* every event up to here was delivered */
    bool from_now;             /* start_revision 0 and not created yet */
    bool created_reported;     /* the creation notice went out */
    bool progress_wanted;      /* a progress request waits for the send slot */
    bool cancelled;            /* cancel or tr_etcd_close asked */
    bool finished;             /* the final callback ran */
    uint32_t failures;         /* stream failures since the last creation */
    tr_etcd_watch_fn cb;
    void *arg;
};

static void on_timer_closed(uv_handle_t *h)
{
    struct tr_etcd_watch *w = h->data;
    struct tr_etcd *e = w->e;
    tr_free(w->key);
    tr_free(w->end);
    etcd_obj_del(e, &w->obj);
    tr_free(w);
}

/* Delivers the final call once; the object goes when its stream is closed. */
static void finish(struct tr_etcd_watch *w, int status, int grpc_status, int64_t compact,
                   const char *msg)
{
    if (w->finished)
        return;
    w->finished = true;
    struct tr_etcd_watch_result res = {
        .revision = w->last_rev,
        .compact_revision = compact,
        .grpc_status = grpc_status,
        .message = msg,
    };
    w->cb(w->arg, status, &res);
}

/* After finish(): ends the stream if it is open, else frees the object. */
static void release(struct tr_etcd_watch *w)
{
    if (etcd_stream_is_open(&w->st)) {
        etcd_stream_cancel(&w->st); /* on_end comes back here */
        return;
    }
    if (!uv_is_closing((uv_handle_t *)&w->timer))
        uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static int open_stream(struct tr_etcd_watch *w)
{
    Etcdserverpb__WatchCreateRequest c = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    c.key.data = w->key;
    c.key.len = w->key_len;
    c.range_end.data = w->end;
    c.range_end.len = w->end_len;
    c.start_revision = w->from_now ? 0 : w->last_rev + 1;
    c.prev_kv = (w->flags & TR_ETCD_PREV_KV) != 0;
    c.progress_notify = (w->flags & TR_ETCD_PROGRESS_NOTIFY) != 0;
    Etcdserverpb__WatchCreateRequest__FilterType filters[2];
    if (w->flags & TR_ETCD_NO_PUT)
        filters[c.n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
    if (w->flags & TR_ETCD_NO_DELETE)
        filters[c.n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    c.filters = filters;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    r.create_request = &c;
    return etcd_stream_open(&w->st, &r.base);
}

static void send_progress(struct tr_etcd_watch *w)
{
    Etcdserverpb__WatchProgressRequest p = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    r.progress_request = &p;
    if (etcd_stream_send(&w->st, &r.base) == 0)
        w->progress_wanted = false;
}

static void on_sent(struct etcd_stream *s)
{
    struct tr_etcd_watch *w = ETCD_CONTAINER(s, struct tr_etcd_watch, st);
    if (w->progress_wanted)
        send_progress(w);
}

static void on_retry(uv_timer_t *t)
{
    struct tr_etcd_watch *w = t->data;
    if (w->cancelled) {
        finish(w, TR_ECANCELED, GRPC_STATUS_CANCELLED, 0, "etcd watch cancelled");
        release(w);
        return;
    }
    int rc = open_stream(w);
    if (rc < 0) {
        w->failures++;
        uv_timer_start(&w->timer, on_retry, etcd_backoff_ms(w->e, w->failures), 0);
    }
}

static void deliver_events(struct tr_etcd_watch *w, const Etcdserverpb__WatchResponse *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_events; i++)
        if (r->events[i]->kv && r->events[i]->kv->mod_revision > w->last_rev)
            n++;
    if (n == 0)
        return; /* all seen before the stream broke */
    struct tr_etcd_event *evs = tr_calloc(n, sizeof(*evs));
    if (!evs) {
        /* Nothing is delivered, so resuming from last_rev + 1 fetches these
         * events again. */
        etcd_stream_abort(&w->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for events");
        return;
    }
    int64_t top = w->last_rev;
    size_t k = 0;
    for (size_t i = 0; i < r->n_events; i++) {
        const Mvccpb__Event *ev = r->events[i];
        if (!ev->kv || ev->kv->mod_revision <= w->last_rev)
            continue;
        evs[k].type = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? TR_ETCD_EVENT_DELETE
                                                                     : TR_ETCD_EVENT_PUT;
        etcd_kv_view(ev->kv, &evs[k].kv);
        if (ev->prev_kv) {
            evs[k].has_prev_kv = true;
            etcd_kv_view(ev->prev_kv, &evs[k].prev_kv);
        }
        top = TR_MAX(top, ev->kv->mod_revision);
        k++;
    }
    /* Advanced before the callback, which may cancel the watch or read
     * tr_etcd_watch_revision. */
    w->last_rev = top;
    struct tr_etcd_watch_result res = {
        .revision = r->header ? r->header->revision : top,
        .events = evs,
        .n_events = n,
        .message = "",
    };
    w->cb(w->arg, 0, &res);
    tr_free(evs);
}

static void on_msg(struct etcd_stream *s, const ProtobufCMessage *m)
{
    struct tr_etcd_watch *w = ETCD_CONTAINER(s, struct tr_etcd_watch, st);
    const Etcdserverpb__WatchResponse *r = (const void *)m;
    if (w->finished || w->cancelled)
        return;
    int64_t hdr_rev = r->header ? r->header->revision : 0;
    char msg[ETCD_MSG_MAX];
    if (r->compact_revision > 0) {
        snprintf(msg, sizeof(msg),
                 "etcd watch cannot start at revision %lld: compacted up to revision %lld",
                 (long long)(w->from_now ? 0 : w->last_rev + 1),
                 (long long)r->compact_revision);
        finish(w, TR_ESTALE, -1, r->compact_revision, msg);
        release(w);
        return;
    }
    if (r->canceled) {
        char esc[ETCD_MSG_MAX / 2];
        tr_log_escape(esc, sizeof(esc), r->cancel_reason, strlen(r->cancel_reason));
        snprintf(msg, sizeof(msg), "etcd cancelled the watch: %s", esc[0] ? esc : "no reason");
        finish(w, TR_ESTATE, -1, 0, msg);
        release(w);
        return;
    }
    if (r->created) {
        w->failures = 0;
        if (w->from_now) {
            /* "From now" means after the revision etcd created it at. */
            w->from_now = false;
            w->last_rev = hdr_rev;
        }
        if (!w->created_reported) {
            w->created_reported = true;
            struct tr_etcd_watch_result res = {
                .revision = hdr_rev, .created = true, .message = ""};
            w->cb(w->arg, 0, &res);
        }
        return;
    }
    if (r->n_events == 0) {
        /* A progress answer: every event up to hdr_rev has been sent. */
        w->last_rev = TR_MAX(w->last_rev, hdr_rev);
        struct tr_etcd_watch_result res = {
            .revision = hdr_rev, .progress = true, .message = ""};
        w->cb(w->arg, 0, &res);
        return;
    }
    deliver_events(w, r);
}

/* Statuses that another attempt cannot fix. */
static bool permanent(grpc_status_code st)
{
    return st == GRPC_STATUS_INVALID_ARGUMENT || st == GRPC_STATUS_PERMISSION_DENIED ||
           st == GRPC_STATUS_UNAUTHENTICATED || st == GRPC_STATUS_UNIMPLEMENTED ||
           st == GRPC_STATUS_NOT_FOUND || st == GRPC_STATUS_FAILED_PRECONDITION ||
           st == GRPC_STATUS_OUT_OF_RANGE;
}

static void on_end(struct etcd_stream *s, int err, grpc_status_code st, const char *msg)
{
    struct tr_etcd_watch *w = ETCD_CONTAINER(s, struct tr_etcd_watch, st);
    if (w->finished || w->cancelled) {
        finish(w, TR_ECANCELED, GRPC_STATUS_CANCELLED, 0, "etcd watch cancelled");
        release(w);
        return;
    }
    if (permanent(st)) {
        finish(w, TR_ESTATE, (int)st, 0, msg);
        release(w);
        return;
    }
    w->failures++;
    w->e->stats.stream_restarts++;
    uint64_t delay = etcd_backoff_ms(w->e, w->failures);
    tr_warn("etcd watch stream broke (%s: %s), resuming from revision %lld in %llu ms",
            tr_err_name(err), msg, (long long)(w->from_now ? 0 : w->last_rev + 1),
            (unsigned long long)delay);
    uv_timer_start(&w->timer, on_retry, delay, 0);
}

static void cancel(struct tr_etcd_watch *w)
{
    if (w->finished || w->cancelled)
        return;
    w->cancelled = true;
    if (etcd_stream_is_open(&w->st)) {
        etcd_stream_cancel(&w->st);
    } else {
        /* Waiting in a backoff: complete from the loop, not from here. */
        uv_timer_start(&w->timer, on_retry, 0, 0);
    }
}

static void obj_cancel(struct etcd_obj *o)
{
    cancel(ETCD_CONTAINER(o, struct tr_etcd_watch, obj));
}

int tr_etcd_watch(struct tr_etcd *e, const struct tr_etcd_watch_opts *o, tr_etcd_watch_fn cb,
                  void *arg, struct tr_etcd_watch **out)
{
    if (e->closing)
        return TR_ECANCELED;
    if (o->start_revision < 0 || (o->key_len == 0 && !(o->flags & (TR_ETCD_PREFIX |
                                                                    TR_ETCD_FROM_KEY))))
        return TR_EINVAL;
    struct etcd_range keys;
    int rc = etcd_range_make(&keys, o->key, o->key_len, o->range_end, o->range_end_len, o->flags);
    if (rc < 0)
        return rc;
    struct tr_etcd_watch *w = tr_calloc(1, sizeof(*w));
    if (!w)
        goto out_nomem;
    w->key = tr_memdup(keys.key.data, keys.key.len);
    if (!w->key)
        goto out_nomem;
    w->key_len = keys.key.len;
    if (keys.end.len) {
        w->end = tr_memdup(keys.end.data, keys.end.len);
        if (!w->end)
            goto out_nomem;
        w->end_len = keys.end.len;
    }
    etcd_range_release(&keys);
    w->e = e;
    w->flags = o->flags;
    w->from_now = o->start_revision == 0;
    w->last_rev = o->start_revision > 0 ? o->start_revision - 1 : 0;
    w->cb = cb;
    w->arg = arg;
    w->obj.cancel = obj_cancel;
    etcd_stream_init(&w->st, e, ETCD_M_WATCH, &etcdserverpb__watch_response__descriptor, on_msg,
                     on_end, on_sent);
    uv_timer_init(e->loop, &w->timer);
    w->timer.data = w;
    etcd_obj_add(e, &w->obj);
    if (open_stream(w) < 0) {
        /* No channel yet: the backoff path retries. */
        w->failures = 1;
        uv_timer_start(&w->timer, on_retry, etcd_backoff_ms(e, 1), 0);
    }
    *out = w;
    return 0;

out_nomem:
    etcd_range_release(&keys);
    if (w) {
        tr_free(w->key);
        tr_free(w);
    }
    return TR_ENOMEM;
}

int tr_etcd_watch_progress(struct tr_etcd_watch *w)
{
    if (w->finished || w->cancelled || !etcd_stream_is_open(&w->st))
        return TR_EAGAIN;
    w->progress_wanted = true;
    send_progress(w);
    return 0;
}

void tr_etcd_watch_cancel(struct tr_etcd_watch *w)
{
    if (w)
        cancel(w);
}

int64_t tr_etcd_watch_revision(const struct tr_etcd_watch *w)
{
    return w->from_now ? 0 : w->last_rev;
}
