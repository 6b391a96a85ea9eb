/*
 * bench_trigger.c - T: how long from the answer to the feedback that crosses
 * a trigger's threshold until the run it starts is `running` (issue 8's
 * target: p50 under 50 ms on SQLite, under 250 ms on etcd).
 *
 * On a cluster of its own: a target pipeline (one no-op task) and a watched
 * one whose trigger is `when = count % 2 == 0`, so that each feedback flips
 * it. A round posts one feedback (odd count), waits until GET /v1/triggers
 * shows the trigger re-armed (false), then posts the crossing feedback and
 * notes the wall clock when its 201 arrives; the latency is the triggered
 * run's `started_at` (set by the scheduler when its first task is
 * dispatched) minus that time. Both clocks are this machine's. What it
 * covers: the commit, the evaluation of `when` in a sandbox process, the
 * firing's commit with its run, and the dispatch. TRELLIS_BENCH_STATE=
 * etcd://... measures the etcd backend (bench_cluster.c).
 */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <time.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"

static const char WATCHED[] =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'bench-watched',\n"
    "  tasks = { trellis.task { name = 'a', run = function() return 1 end } },\n"
    "  triggers = { trellis.trigger { name = 'flip', on = 'feedback', run = 'bench-retrain',\n"
    "    when = function(s) return s.feedback.count > 0 and s.feedback.count % 2 == 0 end } } }\n";

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "2026-12-06T03:00:00.123Z" as seconds; -1 when it is not one. */
static double parse_time(const char *s)
{
    struct tm tm = {0};
    int ms = 0;
    if (s == NULL || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}

static int post_src(struct tr_bench_cluster *c, const char *src, const char *name,
                    struct tr_error *err)
{
    json_t *doc = json_pack("{s:s,s:s}", "source", src, "name", name);
    if (doc == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    json_t *resp = NULL;
    int rc = tr_bench_post_json(c->http, "/v1/pipelines", doc, 201, &resp, err);
    json_decref(doc);
    json_decref(resp);
    return rc;
}

/* The trigger's entry of GET /v1/triggers (owned by *all). */
static json_t *get_trigger(struct tr_bench_cluster *c, json_t **all, struct tr_error *err)
{
    json_decref(*all);
    *all = NULL;
    if (tr_bench_get_json(c->http, "/v1/triggers?pipeline=bench-watched", 10, all, err) < 0)
        return NULL;
    return json_array_get(json_object_get(*all, "triggers"), 0);
}

/* Polls until pred(trigger) holds, at most deadline. */
static int wait_trigger(struct tr_bench_cluster *c, const char *key, json_t *want,
                        uint64_t deadline, json_t **all, struct tr_error *err)
{
    for (;;) {
        json_t *t = get_trigger(c, all, err);
        if (t == NULL)
            return err->code ? err->code : tr_error_set(err, TR_EPROTO, "no trigger listed");
        if (json_is_string(json_object_get(t, "error")))
            return tr_error_set(err, TR_EPROTO, "the trigger was disabled: %s",
                                json_string_value(json_object_get(t, "error")));
        if (json_equal(json_object_get(t, key), want))
            return 0;
        if (tr_mono_ns() > deadline)
            return tr_error_set(err, TR_ETIMEDOUT, "the trigger's %s did not change", key);
        tr_bench_sleep(0.001);
    }
}

static int rounds(struct tr_bench_cluster *c, const struct tr_bench_opts *o, const char *run_id,
                  double *lat, double *lat_sent, uint32_t n, struct tr_error *err)
{
    uint64_t deadline = tr_mono_ns() + (uint64_t)o->deadline_s * 1000000000u;
    char body[160];
    snprintf(body, sizeof(body), "{\"run_id\":\"%s\",\"score\":-1}", run_id);
    json_t *all = NULL, *fb = json_loads(body, 0, NULL);
    json_t *f = json_false();
    int rc = fb ? 0 : tr_error_set(err, TR_ENOMEM, "out of memory");
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        json_t *resp = NULL;
        rc = tr_bench_post_json(c->http, "/v1/feedback", fb, 201, &resp, err); /* odd */
        json_decref(resp);
        if (rc == 0)
            rc = wait_trigger(c, "last_value", f, deadline, &all, err);
        if (rc < 0)
            break;
        resp = NULL;
        double sent = tr_now();
        rc = tr_bench_post_json(c->http, "/v1/feedback", fb, 201, &resp, err); /* crossing */
        double answered = tr_now();
        json_decref(resp);
        json_t *want = json_integer((json_int_t)i + 1);
        if (rc == 0)
            rc = wait_trigger(c, "firings", want, deadline, &all, err);
        json_decref(want);
        const char *rid = rc == 0 ? json_string_value(json_object_get(
                                        json_array_get(json_object_get(all, "triggers"), 0),
                                        "last_run_id"))
                                  : NULL;
        double started = -1;
        while (rc == 0 && started < 0) {
            char path[128];
            snprintf(path, sizeof(path), "/v1/runs/%s", rid ? rid : "none");
            json_t *run = NULL;
            rc = tr_bench_get_json(c->http, path, 10, &run, err);
            started = rc == 0 ? parse_time(json_string_value(json_object_get(run, "started_at")))
                              : -1;
            json_decref(run);
            if (rc == 0 && started < 0) {
                if (tr_mono_ns() > deadline)
                    rc = tr_error_set(err, TR_ETIMEDOUT, "run %s did not start", rid);
                tr_bench_sleep(0.002);
            }
        }
        /* started_at has whole milliseconds: a run started within the
         * millisecond of the answer reads as 0. */
        if (rc == 0) {
            lat[i] = started > answered ? (started - answered) * 1e3 : 0;
            lat_sent[i] = started > sent ? (started - sent) * 1e3 : 0;
        }
    }
    json_decref(all);
    json_decref(fb);
    json_decref(f);
    return rc;
}

void tr_bench_run_t(const struct tr_bench_opts *o, struct tr_bench_result *r)
{
    r->ran = true;
    r->ok = true;
    uint32_t n = o->n[TR_BENCH_TRIGGER];
    struct tr_bench_cluster c;
    struct tr_error err;
    tr_error_init(&err);
    double *lat = tr_calloc(n ? n : 1, sizeof(*lat));
    double *lat_sent = tr_calloc(n ? n : 1, sizeof(*lat_sent));
    int rc = lat && lat_sent ? 0 : tr_error_set(&err, TR_ENOMEM, "out of memory");
    bool started = false;
    if (rc == 0) {
        started = true;
        rc = tr_bench_cluster_start(&c, o, "t", &err);
    }
    struct tr_buf src;
    tr_buf_init(&src, 0);
    if (rc == 0)
        rc = tr_bench_src_single(&src, "bench-retrain");
    if (rc == 0)
        rc = post_src(&c, src.buf, "bench-retrain.lua", &err);
    tr_buf_release(&src);
    if (rc == 0)
        rc = post_src(&c, WATCHED, "bench-watched.lua", &err);
    char run_id[64] = "";
    if (rc == 0) {
        json_t *doc = json_pack("{s:s}", "pipeline", "bench-watched"), *resp = NULL;
        rc = tr_bench_post_json(c.http, "/v1/runs", doc, 201, &resp, &err);
        snprintf(run_id, sizeof(run_id), "%s",
                 rc == 0 ? json_string_value(json_object_get(resp, "run_id")) : "");
        json_decref(doc);
        json_decref(resp);
    }
    tr_bench_log("T: %u trigger crossings", n);
    if (rc == 0)
        rc = rounds(&c, o, run_id, lat, lat_sent, n, &err);
    if (rc == 0 && n > 0) {
        qsort(lat, n, sizeof(*lat), cmp_d);
        tr_bench_field_add(r, "n", n, 0);
        tr_bench_field_add(r, "p50_ms", lat[n / 2], 1);
        tr_bench_field_add(r, "p99_ms", lat[(size_t)((double)(n - 1) * 0.99)], 1);
        tr_bench_field_add(r, "max_ms", lat[n - 1], 1);
        /* From the crossing post being sent: its own commit and answer included. */
        qsort(lat_sent, n, sizeof(*lat_sent), cmp_d);
        tr_bench_field_add(r, "sent_p50_ms", lat_sent[n / 2], 1);
        tr_bench_field_add(r, "sent_p99_ms", lat_sent[(size_t)((double)(n - 1) * 0.99)], 1);
    } else if (rc < 0) {
        tr_bench_fail(r, &err);
    }
    tr_free(lat);
    tr_free(lat_sent);
    if (started)
        tr_bench_cluster_stop(&c, o->keep || rc < 0);
}
