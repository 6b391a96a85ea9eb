/*
 * webhooks.h - outgoing webhooks on run completion (webhooks.c; docs/api.md,
 * "Webhooks").
 *
 * Part "api". When a run ends, one JSON body per configured URL (--webhook,
 * repeatable) is queued, held until the turn that ended the run has
 * committed, then POSTed with curl's multi interface on the scheduler's loop:
 * never a thread, never a blocking call. The body is signed with
 * HMAC-SHA256 under the secret of --webhook-secret-file
 * (X-Trellis-Signature-256: sha256=<hex>). A delivery that fails (no
 * connection, no answer within WH_TIMEOUT_MS, 408, 429 or 5xx) is tried
 * again after 1, 2, 4 and 8 s (with jitter), WH_ATTEMPTS tries in all; at
 * most WH_IN_FLIGHT are in flight (WH_IN_FLIGHT_URL per URL, so that a
 * target that hangs does not hold up the others) and WH_QUEUE_MAX wait, beyond which the
 * oldest waiting one is dropped and counted.
 */
#ifndef TR_SCHED_WEBHOOKS_H
#define TR_SCHED_WEBHOOKS_H

#include <uv.h>

#include "lib/base/error.h"
#include "lib/base/log.h"
#include "scheduler/model.h"

#define WH_ATTEMPTS 5
#define WH_TIMEOUT_MS 10000
#define WH_IN_FLIGHT 32          /* in all */
#define WH_IN_FLIGHT_URL 8       /* per URL: a target that hangs holds no more */
#define WH_URLS_MAX 16
#define WH_QUEUE_MAX 1000

struct wh_delivery;
struct wh_sock;

struct webhooks
{
    uv_loop_t *loop;
    void *multi;                /* CURLM, or NULL without --webhook */
    uv_timer_t curl_timer;      /* curl's timeout */
    uv_timer_t retry_timer;     /* the next delivery due */
    char **urls;                /* borrowed from the configuration */
    size_t n_urls;
    char *secret;               /* owned, scrubbed at close; NULL: unsigned */
    size_t secret_len;
    struct wh_delivery *head;   /* waiting or in flight, oldest first */
    struct wh_delivery *tail;
    uint32_t n_waiting;
    uint32_t in_flight;
    uint32_t url_in_flight[WH_URLS_MAX];
    struct wh_sock *socks;
    bool open;
    bool handles;
    uint64_t next_id;
    /* For /metrics and the tests. */
    uint64_t n_delivered, n_failed, n_dropped, n_retried;
    struct tr_log_limiter log;
};

/* Opens the webhooks of urls (may be 0) with the secret in secret_file (may be NULL). */
int webhooks_open(struct webhooks *wh, uv_loop_t *loop, char **urls, size_t n_urls,
                  const char *secret_file, struct tr_error *err) TR_MUST_CHECK;
/* Stops every delivery (not sent is lost) and frees everything. */
void webhooks_close(struct webhooks *wh);
/* r has just ended: queue its deliveries, held until webhooks_committed. */
void webhooks_run_final(struct webhooks *wh, const struct run *r);
/* The turn's commit is done: send what was held. */
void webhooks_committed(struct webhooks *wh);

#endif
