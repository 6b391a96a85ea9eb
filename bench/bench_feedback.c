/*
 * bench_feedback.c - F: feedback posts per second through the API, with
 * many clients at once (issue 8's target: 5,000/s on SQLite with 64).
 *
 * On a cluster of its own: one no-op run to rate, then --f POST
 * /v1/feedback calls from --f-clients keep-alive connections driven by one
 * libcurl multi handle (each client posts again as soon as its answer
 * arrives: a closed loop, so the rate is what the scheduler sustains). Every
 * answer must be 201; the pipeline's statistics must count every post at
 * the end. Each answer comes only after the group commit that made it
 * durable, so this measures durable posts. TRELLIS_BENCH_STATE=etcd://...
 * measures the etcd backend (bench_cluster.c).
 */
#include <curl/curl.h>
#include <stdlib.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"

struct client
{
    CURL *easy;
    uint64_t t0;             /* when its current post was sent */
    char body[160];
    long status;
};

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The one run the feedback is about. */
static int make_run(struct tr_bench_cluster *c, const struct tr_bench_opts *o, char *id,
                    size_t size, struct tr_error *err)
{
    struct tr_buf src;
    tr_buf_init(&src, 0);
    int rc = tr_bench_src_single(&src, "bench-feedback");
    json_t *doc = rc == 0 ? json_pack("{s:s,s:s}", "source", src.buf, "name", "bench-feedback.lua")
                          : NULL;
    tr_buf_release(&src);
    if (doc == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    json_t *resp = NULL;
    rc = tr_bench_post_json(c->http, "/v1/runs", doc, 201, &resp, err);
    json_decref(doc);
    if (rc < 0)
        return rc;
    const char *rid = json_string_value(json_object_get(resp, "run_id"));
    snprintf(id, size, "%s", rid ? rid : "");
    json_decref(resp);
    json_t *run = NULL;
    rc = tr_bench_wait_run(c->http, id, 2,
                           tr_mono_ns() + (uint64_t)o->deadline_s * 1000000000u, &run, err);
    json_decref(run);
    return rc;
}

static int send_one(CURLM *m, struct client *cl, uint32_t seq, const char *url,
                    const char *run_id)
{
    /* Scores cycle through -1, 1..5 so that the statistics have something to count. */
    static const int scores[] = {-1, 1, 2, 3, 4, 5};
    snprintf(cl->body, sizeof(cl->body), "{\"run_id\":\"%s\",\"score\":%d,\"user\":\"bench\"}",
             run_id, scores[seq % 6]);
    curl_easy_setopt(cl->easy, CURLOPT_URL, url);
    curl_easy_setopt(cl->easy, CURLOPT_POSTFIELDS, cl->body);
    cl->t0 = tr_mono_ns();
    return curl_multi_add_handle(m, cl->easy) == CURLM_OK ? 0 : TR_EIO;
}

/* Posts n feedbacks from k clients; fills lat (n entries) and *wall_ns. */
static int post_all(const char *api, const char *run_id, uint32_t n, uint32_t k, uint64_t *lat,
                    uint64_t *wall_ns, uint64_t deadline, struct tr_error *err)
{
    char url[128];
    snprintf(url, sizeof(url), "http://%s/v1/feedback", api);
    CURLM *m = curl_multi_init();
    struct client *cls = tr_calloc(k, sizeof(*cls));
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (m == NULL || cls == NULL || hdr == NULL) {
        curl_multi_cleanup(m);
        tr_free(cls);
        curl_slist_free_all(hdr);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    int rc = 0;
    uint32_t sent = 0, done = 0;
    uint64_t t0 = tr_mono_ns();
    for (uint32_t i = 0; i < k && rc == 0; i++) {
        cls[i].easy = curl_easy_init();
        if (cls[i].easy == NULL) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            break;
        }
        curl_easy_setopt(cls[i].easy, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(cls[i].easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(cls[i].easy, CURLOPT_PRIVATE, &cls[i]);
        curl_easy_setopt(cls[i].easy, CURLOPT_TIMEOUT, 30L);
        if (sent < n && send_one(m, &cls[i], sent, url, run_id) == 0)
            sent++;
    }
    while (rc == 0 && done < n) {
        int running = 0;
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = tr_error_set(err, TR_EIO, "curl_multi_perform failed");
            break;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct client *cl;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&cl);
            CURLcode res = msg->data.result;
            curl_easy_getinfo(cl->easy, CURLINFO_RESPONSE_CODE, &cl->status);
            curl_multi_remove_handle(m, cl->easy);
            if (res != CURLE_OK || cl->status != 201) {
                if (rc == 0)
                    rc = tr_error_set(err, TR_EPROTO, "POST /v1/feedback: %s (status %ld)",
                                      curl_easy_strerror(res), cl->status);
                continue;
            }
            lat[done++] = tr_mono_ns() - cl->t0;
            if (sent < n && send_one(m, cl, sent, url, run_id) == 0)
                sent++;
        }
        if (tr_mono_ns() > deadline && rc == 0)
            rc = tr_error_set(err, TR_ETIMEDOUT, "only %u of %u posts answered in time", done, n);
        if (rc == 0 && done < n)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    *wall_ns = tr_mono_ns() - t0;
    for (uint32_t i = 0; i < k; i++) {
        if (cls[i].easy != NULL) {
            curl_multi_remove_handle(m, cls[i].easy);
            curl_easy_cleanup(cls[i].easy);
        }
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    tr_free(cls);
    return rc;
}

void tr_bench_run_f(const struct tr_bench_opts *o, struct tr_bench_result *r)
{
    r->ran = true;
    r->ok = true;
    uint32_t n = o->n[TR_BENCH_FEEDBACK], k = o->f_clients;
    struct tr_bench_cluster c;
    struct tr_error err;
    tr_error_init(&err);
    char run_id[64];
    uint64_t *lat = tr_calloc(n, sizeof(*lat));
    uint64_t wall = 0;
    int rc = lat ? 0 : tr_error_set(&err, TR_ENOMEM, "out of memory");
    bool started = false;
    if (rc == 0) {
        started = true; /* stopped also after a failed start: it may have spawned some */
        rc = tr_bench_cluster_start(&c, o, "f", &err);
    }
    if (rc == 0)
        rc = make_run(&c, o, run_id, sizeof(run_id), &err);
    tr_bench_log("F: %u POST /v1/feedback from %u clients", n, k);
    if (rc == 0)
        rc = post_all(c.api, run_id, n, k, lat, &wall,
                      tr_mono_ns() + (uint64_t)o->deadline_s * 1000000000u, &err);
    json_t *stats = NULL;
    if (rc == 0)
        rc = tr_bench_get_json(c.http, "/v1/pipelines/bench-feedback/stats", 30, &stats, &err);
    long long counted = rc == 0 ? json_integer_value(json_object_get(
                                      json_object_get(stats, "feedback"), "count"))
                                : 0;
    json_decref(stats);
    if (rc == 0 && counted != (long long)n)
        rc = tr_error_set(&err, TR_EPROTO, "the statistics count %lld feedbacks, not %u", counted,
                          n);
    if (rc == 0) {
        qsort(lat, n, sizeof(*lat), cmp_u64);
        tr_bench_field_add(r, "n", n, 0);
        tr_bench_field_add(r, "clients", k, 0);
        tr_bench_field_add(r, "wall_s", (double)wall / 1e9, 3);
        tr_bench_field_add(r, "posts_per_s", (double)n / ((double)wall / 1e9), 0);
        tr_bench_field_add(r, "p50_us", (double)lat[n / 2] / 1e3, 0);
        tr_bench_field_add(r, "p99_us", (double)lat[(size_t)((double)n * 0.99)] / 1e3, 0);
    } else {
        tr_bench_fail(r, &err);
    }
    tr_free(lat);
    if (started)
        tr_bench_cluster_stop(&c, o->keep || rc < 0);
}
