/*
 * bench_http.c - the benchmark's client of the scheduler's HTTP API.
 *
 * One curl easy handle per client, reused for every call so that the
 * connection stays open (keep-alive) as a real client's would: W2 measures
 * request latency, not TCP handshakes. Answers are parsed with jansson before
 * a call returns, so a timed call includes holding the decoded result, as the
 * peers' clients do. Single-threaded.
 */
#include <curl/curl.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"

/* Answers larger than this are refused: the biggest expected is W1's output. */
#define RESP_MAX ((size_t)256 << 20)

struct tr_bench_http
{
    CURL *curl;                 /* the one easy handle, kept for keep-alive */
    struct curl_slist *hdrs;    /* Content-Type, and an empty Expect */
    char base[80];              /* "http://127.0.0.1:PORT" */
    struct tr_buf resp;         /* body of the last answer */
    bool too_big;               /* the last answer went past RESP_MAX */
    char curl_err[CURL_ERROR_SIZE]; /* curl's message of the last failure */
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct tr_bench_http *h = ud;
    size_t len = size * n;
    if (tr_buf_add(&h->resp, p, len) < 0) {
        h->too_big = true;
        return 0;
    }
    return len;
}

struct tr_bench_http *tr_bench_http_new(const char *host_port)
{
    struct tr_bench_http *h = tr_calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    tr_buf_init(&h->resp, RESP_MAX);
    snprintf(h->base, sizeof(h->base), "http://%s", host_port);
    h->curl = curl_easy_init();
    if (h->curl == NULL)
        goto fail;
    /*
     * curl sends "Expect: 100-continue" before large bodies and then waits up
     * to a second for an interim answer the server need not give; the empty
     * header turns that off, or L's POST would time a pause of curl's.
     */
    struct curl_slist *s = curl_slist_append(NULL, "Content-Type: application/json");
    if (s == NULL)
        goto fail;
    h->hdrs = s;
    s = curl_slist_append(h->hdrs, "Expect:");
    if (s == NULL)
        goto fail;
    h->hdrs = s;
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(h->curl, CURLOPT_PROXY, "");
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    return h;
fail:
    tr_bench_http_free(h);
    return NULL;
}

void tr_bench_http_free(struct tr_bench_http *h)
{
    if (h == NULL)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->hdrs);
    tr_buf_release(&h->resp);
    tr_free(h);
}

int tr_bench_http_call(struct tr_bench_http *h, const char *method, const char *path,
                       const char *body, size_t body_len, double timeout_s, long *status,
                       json_t **resp, struct tr_error *err)
{
    char url[512];
    *status = 0;
    *resp = NULL;
    if ((size_t)snprintf(url, sizeof(url), "%s%s", h->base, path) >= sizeof(url))
        return tr_error_set(err, TR_EINVAL, "cannot call '%s': path too long", path);
    tr_buf_reset(&h->resp);
    h->too_big = false;
    h->curl_err[0] = '\0';

    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000.0));
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(method, "POST") == 0) {
        /* A bodiless POST (cancel) still sends Content-Length: 0. */
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->hdrs);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        if (strcmp(method, "GET") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (h->too_big)
        return tr_error_set(err, TR_E2BIG, "cannot read answer of %s '%s': over %zu bytes",
                            method, path, RESP_MAX);
    if (cc != CURLE_OK)
        return tr_error_set(err, cc == CURLE_OPERATION_TIMEDOUT ? TR_ETIMEDOUT : TR_EUNAVAIL,
                            "cannot %s '%s': %s", method, url,
                            h->curl_err[0] ? h->curl_err : curl_easy_strerror(cc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (h->resp.len > 0)
        *resp = json_loadb(h->resp.buf, h->resp.len, 0, NULL);
    return 0;
}

/* Turns a non-wanted answer into TR_EPROTO with the API's error code and message. */
static int bad_status(const char *method, const char *path, long status, json_t *resp,
                      struct tr_error *err)
{
    const char *code = json_string_value(json_object_get(json_object_get(resp, "error"),
                                                         "code"));
    const char *msg = json_string_value(json_object_get(json_object_get(resp, "error"),
                                                        "message"));
    return tr_error_set(err, TR_EPROTO, "failed %s '%s': status %ld %s: %s", method, path,
                        status, code ? code : "(no code)", msg ? msg : "(no message)");
}

int tr_bench_post_json(struct tr_bench_http *h, const char *path, json_t *doc, long want_status,
                       json_t **resp, struct tr_error *err)
{
    *resp = NULL;
    char *body = json_dumps(doc, JSON_COMPACT);
    if (body == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot encode the body of POST '%s'", path);
    long status;
    json_t *r;
    int rc = tr_bench_http_call(h, "POST", path, body, strlen(body), 300.0, &status, &r, err);
    free(body); /* jansson's allocator, not ours */
    if (rc < 0)
        return rc;
    if (status != want_status || r == NULL) {
        rc = bad_status("POST", path, status, r, err);
        json_decref(r);
        return rc;
    }
    *resp = r;
    return 0;
}

int tr_bench_get_json(struct tr_bench_http *h, const char *path, double timeout_s,
                      json_t **resp, struct tr_error *err)
{
    *resp = NULL;
    long status;
    json_t *r;
    int rc = tr_bench_http_call(h, "GET", path, NULL, 0, timeout_s, &status, &r, err);
    if (rc < 0)
        return rc;
    if (status != 200 || r == NULL) {
        rc = bad_status("GET", path, status, r, err);
        json_decref(r);
        return rc;
    }
    *resp = r;
    return 0;
}

const char *tr_bench_run_state(json_t *run)
{
    const char *s = json_string_value(json_object_get(run, "state"));
    return s ? s : "";
}

long long tr_bench_run_count(json_t *run, const char *key)
{
    json_t *v = json_object_get(json_object_get(run, "tasks"), key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

static bool finished(const char *state)
{
    return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
           strcmp(state, "cancelled") == 0;
}

int tr_bench_wait_run(struct tr_bench_http *h, const char *run_id, unsigned poll_s,
                      uint64_t deadline_ns, json_t **run, struct tr_error *err)
{
    *run = NULL;
    for (;;) {
        uint64_t now = tr_mono_ns();
        if (now >= deadline_ns)
            return tr_error_set(err, TR_ETIMEDOUT, "run '%s' did not finish in time", run_id);
        unsigned left = (unsigned)((deadline_ns - now) / 1000000000ull);
        unsigned w = TR_MAX(1u, TR_MIN(poll_s, left));
        char path[160];
        snprintf(path, sizeof(path), "/v1/runs/%s?wait=%u", run_id, w);
        json_t *r;
        int rc = tr_bench_get_json(h, path, (double)w + 30.0, &r, err);
        if (rc < 0)
            return rc;
        if (finished(tr_bench_run_state(r))) {
            *run = r;
            return 0;
        }
        json_decref(r);
    }
}

/* Number of runs GET /v1/runs lists in state, or a negative error. */
static int count_runs(struct tr_bench_http *h, const char *state, struct tr_error *err)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/runs?state=%s&limit=10", state);
    json_t *r;
    int rc = tr_bench_get_json(h, path, 30.0, &r, err);
    if (rc < 0)
        return rc;
    json_t *runs = json_object_get(r, "runs");
    int n = json_is_array(runs) ? (int)json_array_size(runs) : 0;
    json_decref(r);
    return n;
}

/* Busy slots over all workers, or a negative error. */
static int busy_slots(struct tr_bench_http *h, struct tr_error *err)
{
    json_t *r;
    int rc = tr_bench_get_json(h, "/v1/workers", 30.0, &r, err);
    if (rc < 0)
        return rc;
    int busy = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(r, "workers"), i, w) {
        busy += (int)json_integer_value(json_object_get(w, "busy"));
    }
    json_decref(r);
    return busy;
}

int tr_bench_wait_idle(struct tr_bench_http *h, double timeout_s, struct tr_error *err)
{
    uint64_t deadline = tr_mono_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        int q = count_runs(h, "queued", err);
        if (q < 0)
            return q;
        int r = count_runs(h, "running", err);
        if (r < 0)
            return r;
        int b = busy_slots(h, err);
        if (b < 0)
            return b;
        if (q == 0 && r == 0 && b == 0)
            return 0;
        if (tr_mono_ns() >= deadline)
            return tr_error_set(err, TR_ETIMEDOUT,
                                "scheduler not idle after %.0f s: %d queued, %d running runs, "
                                "%d busy slots", timeout_s, q, r, b);
        tr_bench_sleep(0.05);
    }
}
