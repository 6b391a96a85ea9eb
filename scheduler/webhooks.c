/*
 * webhooks.c - outgoing webhooks on run completion (webhooks.h).
 *
 * curl's multi interface on the loop (as curl's docs/examples/multi-uv.c):
 * curl names the sockets to watch (one uv_poll each) and when to wake it
 * (one timer); a second timer wakes the queue when the next retry is due.
 */
#include "scheduler/webhooks.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define WH_SECRET_MAX 4096

struct wh_delivery
{
    struct wh_delivery *next;
    const char *url;            /* one of wh->urls */
    size_t url_idx;             /* its index */
    char *body;                 /* owned JSON */
    size_t len;
    char id[48];                /* X-Trellis-Delivery */
    char sig[80];               /* "sha256=<hex>", "" without a secret */
    uint32_t attempt;           /* tries so far */
    uint64_t due_ms;            /* loop time of its next try */
    bool held;                  /* its run's end is not committed yet */
    CURL *easy;                 /* while in flight */
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
};

struct wh_sock
{
    uv_poll_t poll;
    curl_socket_t fd;
    struct webhooks *wh;
    struct wh_sock *prev, *next;
};

static void kick(struct webhooks *wh);

/* ====================================================================== */
/* The queue                                                               */
/* ====================================================================== */

static void unlink_delivery(struct webhooks *wh, struct wh_delivery *d)
{
    struct wh_delivery *prev = NULL;
    for (struct wh_delivery *p = wh->head; p != NULL; prev = p, p = p->next) {
        if (p != d)
            continue;
        if (prev)
            prev->next = d->next;
        else
            wh->head = d->next;
        if (wh->tail == d)
            wh->tail = prev;
        d->next = NULL;
        return;
    }
}

static void delivery_free(struct wh_delivery *d)
{
    if (d->easy != NULL)
        curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->hdrs);
    tr_free(d->body);
    tr_free(d);
}

static void sign(struct webhooks *wh, struct wh_delivery *d)
{
    d->sig[0] = '\0';
    if (wh->secret == NULL)
        return;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (HMAC(EVP_sha256(), wh->secret, (int)wh->secret_len, (const unsigned char *)d->body,
             d->len, mac, &n) == NULL)
        return;
    static const char hex[] = "0123456789abcdef";
    memcpy(d->sig, "sha256=", 7);
    for (unsigned i = 0; i < n && 7 + 2 * i + 2 < sizeof(d->sig); i++) {
        d->sig[7 + 2 * i] = hex[mac[i] >> 4];
        d->sig[7 + 2 * i + 1] = hex[mac[i] & 15];
        d->sig[7 + 2 * i + 2] = '\0';
    }
}

/* A body for r: {"event": "run.finished", "delivery", "run": {...}}. NULL when out of memory. */
static char *run_body(const struct run *r, const char *id, size_t *len)
{
    json_t *run = json_pack("{s:s,s:s,s:s,s:s,s:f,s:f,s:f}", "id", r->id, "pipeline",
                            r->pipe->def->name, "version",
                            r->pipe->def->version ? r->pipe->def->version : "", "state",
                            tr_run_state_names[r->state], "created_at", r->created_at,
                            "started_at", r->started_at, "finished_at", r->finished_at);
    if (run == NULL)
        return NULL;
    if (r->error != NULL)
        json_object_set_new(run, "error", json_string(r->error));
    /* Outputs are bounded by the API, not small: a large one is fetched by id. */
    if (r->output_json != NULL && strlen(r->output_json) <= 64 * 1024) {
        json_error_t jerr;
        json_t *out = json_loads(r->output_json, JSON_DECODE_ANY, &jerr);
        if (out != NULL)
            json_object_set_new(run, "output", out);
    }
    json_t *root = json_pack("{s:s,s:s,s:f,s:o}", "event", "run.finished", "delivery", id,
                             "sent_at", tr_now(), "run", run);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    char *copy = text ? tr_strdup(text) : NULL;
    free(text);
    *len = copy ? strlen(copy) : 0;
    return copy;
}

void webhooks_run_final(struct webhooks *wh, const struct run *r)
{
    if (!wh->open || wh->n_urls == 0)
        return;
    for (size_t i = 0; i < wh->n_urls; i++) {
        struct wh_delivery *d = tr_calloc(1, sizeof(*d));
        if (d == NULL) {
            wh->n_dropped++;
            continue;
        }
        snprintf(d->id, sizeof(d->id), "%s-%llu", r->id, (unsigned long long)++wh->next_id);
        d->url = wh->urls[i];
        d->url_idx = i;
        d->body = run_body(r, d->id, &d->len);
        if (d->body == NULL) {
            tr_free(d);
            wh->n_dropped++;
            continue;
        }
        sign(wh, d);
        d->held = true;
        if (wh->tail)
            wh->tail->next = d;
        else
            wh->head = d;
        wh->tail = d;
        wh->n_waiting++;
    }
    /* Bounded: the oldest deliveries waiting (not in flight) go first. */
    while (wh->n_waiting > WH_QUEUE_MAX) {
        struct wh_delivery *d = wh->head;
        while (d != NULL && d->easy != NULL)
            d = d->next;
        if (d == NULL)
            break;
        unlink_delivery(wh, d);
        wh->n_waiting--;
        wh->n_dropped++;
        tr_log_limited(&wh->log, "dropping a webhook delivery: too many waiting", d->id,
                       strlen(d->id));
        delivery_free(d);
    }
}

void webhooks_committed(struct webhooks *wh)
{
    if (!wh->open || wh->head == NULL)
        return;
    uint64_t now = uv_now(wh->loop);
    bool any = false;
    for (struct wh_delivery *d = wh->head; d != NULL; d = d->next) {
        if (d->held) {
            d->held = false;
            d->due_ms = now;
            any = true;
        }
    }
    if (any)
        kick(wh);
}

/* ====================================================================== */
/* Sending                                                                 */
/* ====================================================================== */

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static bool start(struct webhooks *wh, struct wh_delivery *d)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return false;
    char h[160];
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *ok = l;
    ok = ok ? curl_slist_append(l, "User-Agent: trellis-scheduler") : NULL;
    ok = ok ? curl_slist_append(l, "X-Trellis-Event: run.finished") : NULL;
    snprintf(h, sizeof(h), "X-Trellis-Delivery: %s", d->id);
    ok = ok ? curl_slist_append(l, h) : NULL;
    ok = ok ? curl_slist_append(l, "Expect:") : NULL;
    if (ok != NULL && d->sig[0] != '\0') {
        snprintf(h, sizeof(h), "X-Trellis-Signature-256: %s", d->sig);
        ok = curl_slist_append(l, h);
    }
    if (ok == NULL) {
        curl_slist_free_all(l);
        curl_easy_cleanup(e);
        return false;
    }
    d->hdrs = l;
    d->easy = e;
    d->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, d->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->len);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)WH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)WH_TIMEOUT_MS / 2);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(wh->multi, e) != CURLM_OK) {
        curl_slist_free_all(l);
        d->hdrs = NULL;
        curl_easy_cleanup(e);
        d->easy = NULL;
        return false;
    }
    d->attempt++;
    wh->in_flight++;
    wh->url_in_flight[d->url_idx]++;
    return true;
}

static void on_retry_timer(uv_timer_t *h)
{
    kick(h->data);
}

/* Starts what is due, within WH_IN_FLIGHT; wakes up for the next one due. */
static void kick(struct webhooks *wh)
{
    uint64_t now = uv_now(wh->loop);
    uint64_t next = UINT64_MAX;
    for (struct wh_delivery *d = wh->head; d != NULL; d = d->next) {
        if (d->held || d->easy != NULL)
            continue;
        if (d->due_ms <= now) {
            /* Due, but at a limit: a delivery that ends calls kick again. */
            if (wh->in_flight >= WH_IN_FLIGHT || wh->url_in_flight[d->url_idx] >= WH_IN_FLIGHT_URL)
                continue;
            if (start(wh, d)) {
                wh->n_waiting--;
                continue;
            }
            d->due_ms = now + 1000; /* out of memory: later */
        }
        if (d->due_ms < next)
            next = d->due_ms;
    }
    if (next != UINT64_MAX)
        uv_timer_start(&wh->retry_timer, on_retry_timer, next > now ? next - now : 1, 0);
}

static void finished(struct webhooks *wh, struct wh_delivery *d, CURLcode cc)
{
    long status = 0;
    curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(wh->multi, d->easy);
    curl_easy_cleanup(d->easy);
    d->easy = NULL;
    curl_slist_free_all(d->hdrs);
    d->hdrs = NULL;
    wh->in_flight--;
    wh->url_in_flight[d->url_idx]--;
    if (cc == CURLE_OK && status >= 200 && status < 300) {
        wh->n_delivered++;
        unlink_delivery(wh, d);
        delivery_free(d);
        return;
    }
    bool retry = cc != CURLE_OK || status == 408 || status == 429 || status >= 500;
    char why[CURL_ERROR_SIZE + 64];
    if (cc != CURLE_OK)
        snprintf(why, sizeof(why), "%s", d->errbuf[0] ? d->errbuf : curl_easy_strerror(cc));
    else
        snprintf(why, sizeof(why), "HTTP %ld", status);
    if (retry && d->attempt < WH_ATTEMPTS) {
        /* 1, 2, 4, 8 s, each within +-25%. */
        uint64_t base = 1000ull << (d->attempt - 1);
        uint64_t jitter = (uint64_t)rand() % (base / 2 + 1);
        d->due_ms = uv_now(wh->loop) + base - base / 4 + jitter;
        wh->n_retried++;
        wh->n_waiting++;
        tr_warn("webhook delivery %s to %s failed (%s); try %u of %d in %.1f s", d->id, d->url,
                why, d->attempt + 1, WH_ATTEMPTS,
                (double)(d->due_ms - uv_now(wh->loop)) / 1000.0);
        return;
    }
    wh->n_failed++;
    tr_warn("webhook delivery %s to %s failed (%s) after %u tr%s; giving up", d->id, d->url, why,
            d->attempt, d->attempt == 1 ? "y" : "ies");
    unlink_delivery(wh, d);
    delivery_free(d);
}

static void collect(struct webhooks *wh)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(wh->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct wh_delivery *d = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
        finished(wh, d, msg->data.result);
    }
    kick(wh);
}

static void on_curl_timer(uv_timer_t *h)
{
    struct webhooks *wh = h->data;
    int running;
    curl_multi_socket_action(wh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect(wh);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct wh_sock *s = h->data;
    int flags = status < 0 ? CURL_CSELECT_ERR : 0;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    struct webhooks *wh = s->wh;
    curl_multi_socket_action(wh->multi, s->fd, flags, &running);
    collect(wh);
}

static void on_sock_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

static void sock_close(struct webhooks *wh, struct wh_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        wh->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct webhooks *wh = userp;
    struct wh_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(wh->multi, fd, NULL);
            sock_close(wh, s);
        }
        return 0;
    }
    if (s == NULL) {
        s = tr_calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        if (uv_poll_init_socket(wh->loop, &s->poll, fd) != 0) {
            tr_free(s);
            return -1;
        }
        s->fd = fd;
        s->wh = wh;
        s->poll.data = s;
        s->next = wh->socks;
        if (wh->socks)
            wh->socks->prev = s;
        wh->socks = s;
        curl_multi_assign(wh->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct webhooks *wh = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&wh->curl_timer);
    else
        uv_timer_start(&wh->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

static int read_secret(struct webhooks *wh, const char *path, struct tr_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return tr_error_set(err, -errno, "cannot read the webhook secret file '%s': %s", path,
                            strerror(errno));
    char *buf = tr_malloc(WH_SECRET_MAX + 1);
    size_t n = buf ? fread(buf, 1, WH_SECRET_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0 || n > WH_SECRET_MAX) {
        OPENSSL_cleanse(buf, WH_SECRET_MAX + 1);
        tr_free(buf);
        return tr_error_set(err, TR_EINVAL,
                            "the webhook secret file '%s' is empty or longer than %d bytes",
                            path, WH_SECRET_MAX);
    }
    wh->secret = buf;
    wh->secret_len = n;
    return 0;
}

static const char *no_secret_in_url(const char *u)
{
    return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0 ? NULL : u;
}

int webhooks_open(struct webhooks *wh, uv_loop_t *loop, char **urls, size_t n_urls,
                  const char *secret_file, struct tr_error *err)
{
    memset(wh, 0, sizeof(*wh));
    wh->loop = loop;
    wh->urls = urls;
    wh->n_urls = n_urls;
    wh->open = true;
    if (n_urls > WH_URLS_MAX)
        return tr_error_set(err, TR_EINVAL, "at most %d --webhook URLs", WH_URLS_MAX);
    for (size_t i = 0; i < n_urls; i++) {
        if (no_secret_in_url(urls[i]) != NULL)
            return tr_error_set(err, TR_EINVAL, "--webhook: '%s' is not an http:// or https:// URL",
                                urls[i]);
    }
    if (secret_file != NULL) {
        int rc = read_secret(wh, secret_file, err);
        if (rc < 0)
            return rc;
    }
    if (n_urls == 0)
        return 0;
    if (wh->secret == NULL)
        tr_warn("webhooks are sent unsigned: no --webhook-secret-file");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return tr_error_set(err, TR_EIO, "cannot start curl for webhooks");
    wh->multi = curl_multi_init();
    if (wh->multi == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot start curl for webhooks");
    uv_timer_init(loop, &wh->curl_timer);
    uv_timer_init(loop, &wh->retry_timer);
    wh->curl_timer.data = wh->retry_timer.data = wh;
    wh->handles = true;
    curl_multi_setopt(wh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(wh->multi, CURLMOPT_SOCKETDATA, wh);
    curl_multi_setopt(wh->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(wh->multi, CURLMOPT_TIMERDATA, wh);
    tr_info("webhooks: %zu URL%s, deliveries %s", n_urls, n_urls == 1 ? "" : "s",
            wh->secret ? "signed" : "unsigned");
    return 0;
}

static int ignore_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy, (void)fd, (void)what, (void)userp, (void)socketp;
    return 0;
}

void webhooks_close(struct webhooks *wh)
{
    if (!wh->open)
        return;
    wh->open = false;
    if (wh->multi != NULL) {
        /* Polls close before curl closes its sockets; curl stays silent meanwhile. */
        curl_multi_setopt(wh->multi, CURLMOPT_SOCKETFUNCTION, ignore_socket);
        while (wh->socks != NULL)
            sock_close(wh, wh->socks);
    }
    while (wh->head != NULL) {
        struct wh_delivery *d = wh->head;
        wh->head = d->next;
        if (d->easy != NULL)
            curl_multi_remove_handle(wh->multi, d->easy);
        delivery_free(d);
    }
    wh->tail = NULL;
    if (wh->multi != NULL) {
        curl_multi_cleanup(wh->multi);
        wh->multi = NULL;
    }
    if (wh->handles) {
        uv_close((uv_handle_t *)&wh->curl_timer, NULL);
        uv_close((uv_handle_t *)&wh->retry_timer, NULL);
        wh->handles = false;
    }
    if (wh->secret != NULL) {
        OPENSSL_cleanse(wh->secret, wh->secret_len);
        tr_free(wh->secret);
        wh->secret = NULL;
    }
}
