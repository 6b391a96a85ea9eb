/*
 * etcd.c - the etcd client itself: configuration, the completion queue
 * thread, channels and endpoint switching, shutdown (see etcd.h).
 *
 * Owns the gRPC completion queue, the thread that drains it, the uv_async_t
 * that thread rings, the channels and the list of live calls and streams
 * (struct etcd_obj). Calls live in etcd_call.c, KV and lease requests in
 * etcd_kv.c, watches in etcd_watch.c and keep-alives in etcd_lease.c.
 *
 * Threads: the completion thread touches only cq, mu and the done list, and
 * calls uv_async_send. Everything else belongs to the loop thread, which
 * starts every gRPC call and runs every completion.
 *
 * Shutdown, in the order gRPC's C core requires (calls finished and
 * unreferenced, channels, queue shut down and drained, queue destroyed,
 * grpc_shutdown): tr_etcd_close cancels every object; each one
 * unregisters once all its batches are back and its callback has run. When
 * the last one goes, teardown() destroys the channels, shuts the queue down,
 * joins the thread (which exits on GRPC_QUEUE_SHUTDOWN), destroys the queue,
 * calls grpc_shutdown and closes the uv handles; the client is freed in the
 * last close callback.
 */
#include "lib/etcd/etcd_int.h"

#include <signal.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"
#include "lib/base/retry.h"

#define TLS_FILE_MAX (1u << 20)

/* ===================================================================== */
/* Errors and time                                                       */
/* ===================================================================== */

const char *etcd_status_name(grpc_status_code st)
{
    static const char *const names[] = {
        "OK",          "CANCELLED",        "UNKNOWN",           "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",    "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((unsigned)st < TR_ARRAY_LEN(names))
        return names[st];
    return "status";
}

int etcd_status_err(grpc_status_code st)
{
    switch (st) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_UNAVAILABLE:
        return TR_EUNAVAIL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return TR_ETIMEDOUT;
    case GRPC_STATUS_CANCELLED:
        /* Only our own cancels end calls with CANCELLED: callers who did not
         * cancel map it themselves. */
        return TR_ECANCELED;
    default:
        return TR_ESTATE;
    }
}

void etcd_status_msg(char *out, size_t size, const char *what, grpc_status_code st,
                     grpc_slice details)
{
    size_t n = GRPC_SLICE_LENGTH(details);
    char esc[ETCD_MSG_MAX];
    tr_log_escape(esc, sizeof(esc), GRPC_SLICE_START_PTR(details), n);
    snprintf(out, size, "etcd %s failed: %s%s%s", what, etcd_status_name(st), n ? ": " : "",
             n ? esc : "");
}

gpr_timespec etcd_deadline(uint32_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

uint64_t etcd_backoff_ms(struct tr_etcd *e, uint32_t failures)
{
    /* xorshift64: jitter only, no need for quality or a global state. */
    e->rng ^= e->rng << 13;
    e->rng ^= e->rng >> 7;
    e->rng ^= e->rng << 17;
    double rand01 = (double)(e->rng >> 11) / 9007199254740992.0;
    double s = tr_retry_delay(e->backoff_min_ms / 1000.0, failures, rand01);
    uint64_t ms = (uint64_t)(s * 1000.0);
    return TR_MIN(ms, (uint64_t)e->backoff_max_ms);
}

/* ===================================================================== */
/* Completion queue thread and the loop side of it                       */
/* ===================================================================== */

static void *cq_thread(void *p)
{
    struct tr_etcd *e = p;
    /* Signals are the loop thread's business (uv_signal_t). */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(e->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct etcd_tag *t = ev.tag;
        t->ok = ev.success != 0;
        t->next = NULL;
        pthread_mutex_lock(&e->mu);
        if (e->done_tail)
            e->done_tail->next = t;
        else
            e->done_head = t;
        e->done_tail = t;
        pthread_mutex_unlock(&e->mu);
        uv_async_send(&e->wake);
    }
    return NULL;
}

/*
 * uv_async_send coalesces, so one wake-up takes the whole list. Every entry
 * is a batch of a registered object, which stays registered until the batch
 * is handled here, so the client cannot be torn down under this loop.
 */
static void on_wake(uv_async_t *h)
{
    struct tr_etcd *e = h->data;
    pthread_mutex_lock(&e->mu);
    struct etcd_tag *t = e->done_head;
    e->done_head = NULL;
    e->done_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    while (t) {
        struct etcd_tag *next = t->next;
        t->done(t, t->ok);
        t = next;
    }
}

/* ===================================================================== */
/* Channels and endpoint switching                                       */
/* ===================================================================== */

static struct etcd_chan *chan_new(struct tr_etcd *e, uint32_t ep)
{
    struct etcd_chan *c = tr_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    grpc_arg args[] = {
        /* etcd answers can exceed gRPC's 4 MiB default (a large range). */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = -1},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
         .value.integer = (int)e->keepalive_ms},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
         .value.integer = (int)e->keepalive_timeout_ms},
        /* etcd (grpc-go) counts pings without open streams as abuse. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
         .value.integer = 0},
        /* A quiet watch is a stream without data: keep pinging it. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
         .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
         .value.integer = (int)e->backoff_min_ms},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         .value.integer = (int)e->backoff_max_ms},
        /* Without this, channels to one address share a global subchannel
         * and its reconnect backoff: a new channel would not reconnect. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
    };
    grpc_channel_args ca = {.num_args = TR_ARRAY_LEN(args), .args = args};
    c->ch = grpc_channel_create(e->endpoints[ep], e->creds, &ca);
    if (!c->ch) {
        tr_free(c);
        return NULL;
    }
    c->ep = ep;
    c->refs = 1;
    return c;
}

void etcd_chan_release(struct tr_etcd *e, struct etcd_chan *c)
{
    if (!c)
        return;
    TR_ASSERT(c->refs > 0);
    if (--c->refs == 0) {
        grpc_channel_destroy(c->ch);
        tr_free(c);
    }
}

struct etcd_chan *etcd_chan_get(struct tr_etcd *e)
{
    if (!e->chan) {
        e->chan = chan_new(e, e->next_ep);
        if (!e->chan)
            return NULL;
        e->next_ep = (e->next_ep + 1) % e->n_endpoints;
    }
    e->chan->refs++;
    return e->chan;
}

static void on_rotate(uv_timer_t *t)
{
    struct tr_etcd *e = t->data;
    if (e->closing || !e->chan)
        return;
    /* Drop the current channel; the next call makes one to the next
     * endpoint. Calls still open on the old one keep it alive. */
    const char *from = e->endpoints[e->chan->ep];
    if (e->n_endpoints == 1)
        tr_info("etcd endpoint '%s' unavailable, reconnecting", from);
    else
        tr_info("etcd endpoint '%s' unavailable, switching to '%s'", from,
                e->endpoints[e->next_ep]);
    etcd_chan_release(e, e->chan);
    e->chan = NULL;
    e->switch_failures++;
    e->timeouts_in_row = 0;
    e->stats.endpoint_switches++;
}

void etcd_chan_report(struct tr_etcd *e, struct etcd_chan *c, grpc_status_code st)
{
    if (e->closing || c != e->chan || st == GRPC_STATUS_CANCELLED)
        return;
    if (st == GRPC_STATUS_DEADLINE_EXCEEDED) {
        /* A member behind a partition swallows packets and never refuses
         * anything: two timeouts in a row with no answer between them count
         * as unavailable. One alone may just be a slow request. */
        if (++e->timeouts_in_row < 2)
            return;
    } else if (st != GRPC_STATUS_UNAVAILABLE) {
        /* etcd answered through this channel, even if to refuse: it works. */
        e->switch_failures = 0;
        e->timeouts_in_row = 0;
        uv_timer_stop(&e->rotate);
        return;
    }
    if (uv_is_active((uv_handle_t *)&e->rotate))
        return;
    /* The first switch is immediate; switches that keep failing (every
     * endpoint down) back off, so a caller retrying in a tight loop does not
     * make channels in one. */
    uint64_t delay = e->switch_failures ? etcd_backoff_ms(e, e->switch_failures) : 0;
    uv_timer_start(&e->rotate, on_rotate, delay, 0);
}

/* ===================================================================== */
/* Object registry and shutdown                                          */
/* ===================================================================== */

static void update_ref(struct tr_etcd *e)
{
    /* Like a libuv request, a call in flight keeps the loop running. */
    if (e->n_objs > 0)
        uv_ref((uv_handle_t *)&e->wake);
    else
        uv_unref((uv_handle_t *)&e->wake);
}

void etcd_obj_add(struct tr_etcd *e, struct etcd_obj *o)
{
    o->next = e->objs.next;
    o->prev = &e->objs;
    e->objs.next->prev = o;
    e->objs.next = o;
    e->n_objs++;
    update_ref(e);
}

static void teardown(struct tr_etcd *e);

void etcd_obj_del(struct tr_etcd *e, struct etcd_obj *o)
{
    o->prev->next = o->next;
    o->next->prev = o->prev;
    o->prev = o->next = NULL;
    TR_ASSERT(e->n_objs > 0);
    e->n_objs--;
    update_ref(e);
    if (e->closing && e->n_objs == 0)
        teardown(e);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tr_etcd *e = h->data;
    if (--e->open_handles > 0)
        return;
    for (uint32_t i = 0; i < e->n_endpoints; i++)
        tr_free(e->endpoints[i]);
    pthread_mutex_destroy(&e->mu);
    tr_free(e);
}

/* Empties a shut-down queue nobody else drains. */
static void drain_queue(grpc_completion_queue *cq)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
}

/* Releases the gRPC side in the order gRPC's C core requires (channels,
 * queue shutdown and drain, queue, grpc_shutdown); every call is finished
 * and unreferenced by now. */
static void teardown(struct tr_etcd *e)
{
    if (e->torn_down)
        return;
    e->torn_down = true;
    uv_timer_stop(&e->rotate);
    etcd_chan_release(e, e->chan);
    e->chan = NULL;
    grpc_completion_queue_shutdown(e->cq);
    pthread_join(e->thread, NULL);
    grpc_completion_queue_destroy(e->cq);
    e->cq = NULL;
    grpc_channel_credentials_release(e->creds);
    e->creds = NULL;
    grpc_shutdown();
    uv_close((uv_handle_t *)&e->wake, on_handle_closed);
    uv_close((uv_handle_t *)&e->rotate, on_handle_closed);
}

void tr_etcd_close(struct tr_etcd *e)
{
    if (!e || e->closing)
        return;
    e->closing = true;
    /* cancel() may unregister the object at once (a stream waiting in its
     * backoff), so step with a saved next pointer. */
    struct etcd_obj *o = e->objs.next;
    while (o != &e->objs) {
        struct etcd_obj *next = o->next;
        o->cancel(o);
        o = next;
    }
    if (e->n_objs == 0)
        teardown(e);
}

/* ===================================================================== */
/* Construction                                                          */
/* ===================================================================== */

static int read_file(const char *path, char **out, struct tr_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return tr_error_set(err, TR_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct tr_buf b;
    tr_buf_init(&b, TLS_FILE_MAX);
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        rc = tr_buf_add(&b, chunk, n);
        if (rc < 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = TR_EIO;
    fclose(f);
    if (rc < 0) {
        tr_buf_release(&b);
        return tr_error_set(err, rc, "cannot read '%s': %s", path, tr_strerror(rc));
    }
    *out = tr_buf_detach(&b, NULL);
    if (!*out)
        return tr_error_set(err, TR_ENOMEM, "cannot read '%s': out of memory", path);
    return 0;
}

/* Splits "a:1, http://b:2" into e->endpoints; notes whether one said https. */
static int parse_endpoints(struct tr_etcd *e, const char *list, bool *https,
                           struct tr_error *err)
{
    if (!list)
        return tr_error_set(err, TR_EINVAL, "no etcd endpoints given");
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len >= 8 && memcmp(p, "https://", 8) == 0) {
            *https = true;
            p += 8;
            len -= 8;
        } else if (len >= 7 && memcmp(p, "http://", 7) == 0) {
            p += 7;
            len -= 7;
        }
        while (len > 0 && p[len - 1] == '/')
            len--;
        if (len == 0 || !memchr(p, ':', len) || memchr(p, '/', len))
            return tr_error_set(err, TR_EINVAL, "bad etcd endpoint list '%s': want host:port",
                                list);
        if (e->n_endpoints == ETCD_MAX_ENDPOINTS)
            return tr_error_set(err, TR_EINVAL, "bad etcd endpoint list '%s': more than %d",
                                list, ETCD_MAX_ENDPOINTS);
        e->endpoints[e->n_endpoints] = tr_strndup(p, len);
        if (!e->endpoints[e->n_endpoints])
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        e->n_endpoints++;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

static int make_creds(struct tr_etcd *e, const struct tr_etcd_config *cfg, bool https,
                      struct tr_error *err)
{
    if ((cfg->cert_file != NULL) != (cfg->key_file != NULL))
        return tr_error_set(err, TR_EINVAL, "etcd client certificate and key go together");
    if (!https && !cfg->ca_file && !cfg->cert_file) {
        e->creds = grpc_insecure_credentials_create();
        return e->creds ? 0 : tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    char *ca = NULL, *cert = NULL, *key = NULL;
    int rc = 0;
    if (cfg->ca_file)
        rc = read_file(cfg->ca_file, &ca, err);
    if (rc == 0 && cfg->cert_file)
        rc = read_file(cfg->cert_file, &cert, err);
    if (rc == 0 && cfg->key_file)
        rc = read_file(cfg->key_file, &key, err);
    if (rc == 0) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        /* gRPC copies what it needs. */
        e->creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (!e->creds)
            rc = tr_error_set(err, TR_EINVAL, "cannot set up TLS for etcd");
    }
    if (key) {
        /* Private key bytes do not linger in freed memory. */
        memset(key, 0, strlen(key));
    }
    tr_free(ca);
    tr_free(cert);
    tr_free(key);
    return rc;
}

struct tr_etcd *tr_etcd_open(uv_loop_t *loop, const struct tr_etcd_config *cfg,
                            struct tr_error *err)
{
    tr_error_init(err);
    struct tr_etcd *e = tr_calloc(1, sizeof(*e));
    if (!e) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    e->loop = loop;
    e->objs.next = e->objs.prev = &e->objs;
    e->deadline_ms = cfg->deadline_ms ? cfg->deadline_ms : 5000;
    e->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : 100;
    e->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : 5000;
    e->backoff_max_ms = TR_MAX(e->backoff_max_ms, e->backoff_min_ms);
    e->keepalive_ms = cfg->keepalive_ms ? cfg->keepalive_ms : 10000;
    e->keepalive_timeout_ms = cfg->keepalive_timeout_ms ? cfg->keepalive_timeout_ms : 5000;
    e->rng = tr_mono_ns() ^ (uint64_t)(uintptr_t)e ^ 0x9e3779b97f4a7c15ull;
    if (e->rng == 0)
        e->rng = 1;
    bool https = false;
    if (parse_endpoints(e, cfg->endpoints, &https, err) < 0)
        goto out_free_endpoints;
    if (pthread_mutex_init(&e->mu, NULL) != 0) {
        tr_error_set(err, TR_ENOMEM, "cannot create a mutex");
        goto out_free_endpoints;
    }
    grpc_init();
    if (make_creds(e, cfg, https, err) < 0)
        goto out_grpc;
    e->cq = grpc_completion_queue_create_for_next(NULL);
    if (!e->cq) {
        tr_error_set(err, TR_ENOMEM, "cannot create a gRPC completion queue");
        goto out_grpc;
    }
    /* The thread touches e->wake only for completions, and there is none
     * before the first call: it may start before the handle exists. */
    int prc = pthread_create(&e->thread, NULL, cq_thread, e);
    if (prc != 0) {
        tr_error_set(err, -prc, "cannot start the etcd completion thread: %s", strerror(prc));
        goto out_grpc;
    }
    e->thread_started = true;
    int uvrc = uv_async_init(loop, &e->wake, on_wake);
    if (uvrc < 0) {
        tr_error_set(err, TR_EIO, "cannot create a uv_async: %s", uv_strerror(uvrc));
        goto out_grpc;
    }
    e->wake.data = e;
    uv_timer_init(loop, &e->rotate);
    e->rotate.data = e;
    e->open_handles = 2;
    uv_unref((uv_handle_t *)&e->wake);
    uv_unref((uv_handle_t *)&e->rotate);
    return e;

out_grpc:
    if (e->cq) {
        grpc_completion_queue_shutdown(e->cq);
        if (e->thread_started)
            pthread_join(e->thread, NULL);
        else
            drain_queue(e->cq);
        grpc_completion_queue_destroy(e->cq);
    }
    if (e->creds)
        grpc_channel_credentials_release(e->creds);
    grpc_shutdown();
    pthread_mutex_destroy(&e->mu);
out_free_endpoints:
    for (uint32_t i = 0; i < e->n_endpoints; i++)
        tr_free(e->endpoints[i]);
    tr_free(e);
    return NULL;
}

const char *tr_etcd_endpoint(const struct tr_etcd *e)
{
    return e->endpoints[e->chan ? e->chan->ep : e->next_ep];
}

void tr_etcd_get_stats(const struct tr_etcd *e, struct tr_etcd_stats *out)
{
    *out = e->stats;
}
