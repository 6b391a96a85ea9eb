/*
 * bench_workloads.c - the pipelines of W1-W4 and L, and how each is timed.
 *
 * The definitions are the peers' (WORKLOADS.md in ../shared/bench/peers, see
 * bench/README.md): no-op
 * tasks, the monotonic clock read in the client, submit = the first call that
 * hands tasks to the system (POST /v1/runs), result = the moment the client
 * holds the run's final answer (GET /v1/runs/{id}?wait= says it finished,
 * output included, decoded). Request bodies are encoded before the clock
 * starts; answers are decoded before it stops. A figure is reported only
 * when the run ended as expected and its task counts add up; otherwise the
 * workload fails with the reason.
 */
#include "bench/bench.h"
#include "lib/base/alloc.h"
#include "lib/lua/pipeline.h"

/* GET ?wait= per long poll of a long run. */
#define LONG_POLL_S 60u
/* The W2 definition: one GET ?wait=10 per round trip. */
#define W2_WAIT_S 10u

/* ===================== the pipelines ===================== */

static const char src_head[] =
    "local trellis = require \"trellis\"\n"
    "local function noop(ctx) return nil end\n";

int tr_bench_src_independent(struct tr_buf *out, const char *name, uint32_t n)
{
    return tr_buf_addf(out,
                       "%s"
                       "local N, tasks = %u, {}\n"
                       "for i = 1, N do tasks[i] = trellis.task { name = \"t\" .. i, "
                       "run = noop } end\n"
                       "return trellis.pipeline { name = \"%s\", version = \"1\", "
                       "tasks = tasks }\n",
                       src_head, n, name);
}

int tr_bench_src_single(struct tr_buf *out, const char *name)
{
    return tr_buf_addf(out,
                       "%s"
                       "return trellis.pipeline { name = \"%s\", version = \"1\",\n"
                       "  tasks = { trellis.task { name = \"noop\", run = noop } } }\n",
                       src_head, name);
}

int tr_bench_src_map_reduce(struct tr_buf *out, const char *name, uint32_t n)
{
    return tr_buf_addf(out,
                       "local trellis = require \"trellis\"\n"
                       "local N = %u\n"
                       "return trellis.pipeline { name = \"%s\", version = \"1\", tasks = {\n"
                       "  trellis.task { name = \"root\", run = function(ctx)\n"
                       "    local t = {}; for i = 1, N do t[i] = i end; return t end },\n"
                       "  trellis.task { name = \"map\", map = \"root\", "
                       "run = function(ctx, i) return nil end },\n"
                       "  trellis.task { name = \"reduce\", after = { \"map\" }, "
                       "run = function(ctx, outs) return nil end },\n"
                       "} }\n",
                       n, name);
}

int tr_bench_src_blocked(struct tr_buf *out, const char *name, uint32_t n)
{
    return tr_buf_addf(out,
                       "%s"
                       "local N = %u\n"
                       "local tasks = { trellis.task { name = \"root\", "
                       "run = function(ctx) trellis.sleep(3600) end } }\n"
                       "for i = 1, N do\n"
                       "  tasks[#tasks + 1] = trellis.task { name = \"p\" .. i, "
                       "after = { \"root\" }, run = noop }\n"
                       "end\n"
                       "return trellis.pipeline { name = \"%s\", version = \"1\", "
                       "tasks = tasks }\n",
                       src_head, n, name);
}

int tr_bench_src_http(struct tr_buf *out, const char *name, uint32_t n, const char *url,
                      uint32_t ms)
{
    return tr_buf_addf(out,
                       "local trellis = require \"trellis\"\n"
                       "local URL = \"%s\"\n"
                       "local BODY = '{\"model\": \"latency-%u\", \"messages\": "
                       "[{\"role\": \"user\", \"content\": \"ping\"}]}'\n"
                       "local function call(ctx)\n"
                       "  local res = require(\"trellis.http\").request { method = \"POST\", "
                       "url = URL, body = BODY,\n"
                       "    headers = { [\"Content-Type\"] = \"application/json\" }, "
                       "timeout = 120 }\n"
                       "  if res.status ~= 200 then error(\"status \" .. res.status) end\n"
                       "end\n"
                       "local N, tasks = %u, {}\n"
                       "for i = 1, N do tasks[i] = trellis.task { name = \"t\" .. i, "
                       "run = call } end\n"
                       "return trellis.pipeline { name = \"%s\", version = \"1\", "
                       "tasks = tasks }\n",
                       url, ms, n, name);
}

/* ===================== helpers ===================== */

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* The JSON text of {"source": src, "name": name ".lua"}; free() it. */
static char *source_body(const struct tr_buf *src, const char *name)
{
    char file[96];
    snprintf(file, sizeof(file), "%s.lua", name);
    json_t *doc = json_pack("{s:s%, s:s}", "source", src->buf, src->len, "name", file);
    if (doc == NULL)
        return NULL;
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return body;
}

/*
 * POSTs an encoded body to path, expecting want; on 0, *resp holds the answer.
 * The clock reads around the call are the caller's.
 */
static int post_body(struct tr_bench_http *h, const char *path, const char *body,
                     long want, json_t **resp, struct tr_error *err)
{
    long status;
    json_t *r;
    *resp = NULL;
    int rc = tr_bench_http_call(h, "POST", path, body, strlen(body), 300.0, &status, &r, err);
    if (rc < 0)
        return rc;
    if (status != want || r == NULL) {
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"),
                                                             "code"));
        const char *msg = json_string_value(json_object_get(json_object_get(r, "error"),
                                                            "message"));
        tr_error_set(err, TR_EPROTO, "failed POST '%s': status %ld %s: %s", path, status,
                     code ? code : "(no code)", msg ? msg : "(no message)");
        json_decref(r);
        return TR_EPROTO;
    }
    *resp = r;
    return 0;
}

/* POST /v1/runs with body; copies the new run's id into id. */
static int start_run(struct tr_bench_http *h, const char *body, char *id, size_t id_size,
                     struct tr_error *err)
{
    json_t *r;
    int rc = post_body(h, "/v1/runs", body, 201, &r, err);
    if (rc < 0)
        return rc;
    const char *s = json_string_value(json_object_get(r, "run_id"));
    if (s == NULL || strlen(s) >= id_size) {
        json_decref(r);
        return tr_error_set(err, TR_EPROTO, "POST '/v1/runs' answered without a usable run_id");
    }
    snprintf(id, id_size, "%s", s);
    json_decref(r);
    return 0;
}

/* Checks that a finished run succeeded with `want` task instances succeeded. */
static int check_succeeded(json_t *run, const char *id, long long want, struct tr_error *err)
{
    const char *state = tr_bench_run_state(run);
    if (strcmp(state, "succeeded") != 0) {
        const char *why = json_string_value(json_object_get(run, "error"));
        return tr_error_set(err, TR_EPROTO, "run '%s' ended '%s': %s", id, state,
                            why ? why : "(no error given)");
    }
    long long ok = tr_bench_run_count(run, "succeeded");
    if (ok != want)
        return tr_error_set(err, TR_EPROTO,
                            "run '%s' succeeded with %lld task instances succeeded, not %lld",
                            id, ok, want);
    return 0;
}

/*
 * One whole run of body, timed from the POST until the client holds the
 * finished run; *submit_ns is the POST alone.
 */
static int timed_run(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                     const char *body, long long want_tasks, uint64_t *wall_ns,
                     uint64_t *submit_ns, struct tr_error *err)
{
    char id[128];
    json_t *run;
    uint64_t t0 = tr_mono_ns();
    int rc = start_run(c->http, body, id, sizeof(id), err);
    if (rc < 0)
        return rc;
    uint64_t t1 = tr_mono_ns();
    rc = tr_bench_wait_run(c->http, id, LONG_POLL_S, t0 + (uint64_t)(o->deadline_s * 1e9),
                           &run, err);
    uint64_t t2 = tr_mono_ns();
    if (rc < 0)
        return rc;
    rc = check_succeeded(run, id, want_tasks, err);
    json_decref(run);
    if (rc < 0)
        return rc;
    *wall_ns = t2 - t0;
    *submit_ns = t1 - t0;
    return 0;
}

/* ===================== warm-up, W1, W3 ===================== */

int tr_bench_warmup(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                    struct tr_error *err)
{
    struct tr_buf src;
    tr_buf_init(&src, 0);
    if (tr_bench_src_independent(&src, "bench-warmup", o->warmup) < 0)
        return tr_error_set(err, TR_ENOMEM, "cannot build the warm-up pipeline");
    char *body = source_body(&src, "bench-warmup");
    tr_buf_release(&src);
    if (body == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot encode the warm-up pipeline");
    uint64_t wall, submit;
    int rc = timed_run(c, o, body, o->warmup, &wall, &submit, err);
    free(body);
    if (rc < 0)
        return rc;
    tr_bench_log("warm-up: %u no-op tasks in %.3f s (discarded)", o->warmup, secs(wall));
    return tr_bench_wait_idle(c->http, 30.0, err);
}

/* W1 and W3: one run of a whole graph. */
static void whole_run(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                      struct tr_bench_result *r, bool dag)
{
    uint32_t n = o->n[dag ? TR_BENCH_W3 : TR_BENCH_W1];
    const char *name = dag ? "bench-w3" : "bench-w1";
    long long tasks = dag ? (long long)n + 2 : (long long)n;
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    int rc = dag ? tr_bench_src_map_reduce(&src, name, n)
                 : tr_bench_src_independent(&src, name, n);
    char *body = rc == 0 ? source_body(&src, name) : NULL;
    tr_buf_release(&src);
    if (body == NULL) {
        tr_error_set(&err, TR_ENOMEM, "cannot build pipeline '%s'", name);
        tr_bench_fail(r, &err);
        return;
    }
    uint64_t wall, submit;
    rc = timed_run(c, o, body, tasks, &wall, &submit, &err);
    free(body);
    if (rc < 0) {
        tr_bench_fail(r, &err);
        return;
    }
    tr_bench_field_add(r, "n", n, 0);
    if (dag)
        tr_bench_field_add(r, "tasks", (double)tasks, 0);
    tr_bench_field_add(r, "wall_s", secs(wall), 3);
    tr_bench_field_add(r, "tasks_per_s", (double)tasks / secs(wall), 0);
    tr_bench_field_add(r, "submit_s", secs(submit), 3);
}

void tr_bench_w1(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r)
{
    whole_run(c, o, r, false);
}

void tr_bench_w3(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r)
{
    whole_run(c, o, r, true);
}

/* ===================== W2 ===================== */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the value at 1-based rank ceil(p/100 * n) of the sorted samples. */
static uint64_t nearest_rank(const uint64_t *sorted, size_t n, unsigned p)
{
    size_t rank = ((size_t)p * n + 99) / 100;
    return sorted[rank ? rank - 1 : 0];
}

/* One round trip: POST the run, then GET ?wait=10 until it is finished. */
static int round_trip(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                      const char *body, uint64_t *ns, struct tr_error *err)
{
    char id[128], path[160];
    json_t *run;
    uint64_t t0 = tr_mono_ns();
    int rc = start_run(c->http, body, id, sizeof(id), err);
    if (rc < 0)
        return rc;
    snprintf(path, sizeof(path), "/v1/runs/%s?wait=%u", id, W2_WAIT_S);
    rc = tr_bench_get_json(c->http, path, W2_WAIT_S + 30.0, &run, err);
    if (rc < 0)
        return rc;
    const char *state = tr_bench_run_state(run);
    if (strcmp(state, "succeeded") != 0 && strcmp(state, "failed") != 0 &&
        strcmp(state, "cancelled") != 0) {
        /* Slower than the long poll: keep waiting, the sample is what it is. */
        json_decref(run);
        rc = tr_bench_wait_run(c->http, id, W2_WAIT_S, t0 + (uint64_t)(o->deadline_s * 1e9),
                               &run, err);
        if (rc < 0)
            return rc;
    }
    *ns = tr_mono_ns() - t0;
    rc = check_succeeded(run, id, 1, err);
    json_decref(run);
    return rc;
}

void tr_bench_w2(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r)
{
    uint32_t n = o->n[TR_BENCH_W2];
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    char *reg = tr_bench_src_single(&src, "bench-w2") == 0 ? source_body(&src, "bench-w2")
                                                           : NULL;
    tr_buf_release(&src);
    uint64_t *samples = tr_calloc(n ? n : 1, sizeof(*samples));
    if (reg == NULL || samples == NULL) {
        free(reg);
        tr_free(samples);
        tr_error_set(&err, TR_ENOMEM, "cannot prepare W2");
        tr_bench_fail(r, &err);
        return;
    }
    json_t *resp;
    int rc = post_body(c->http, "/v1/pipelines", reg, 201, &resp, &err);
    free(reg);
    json_decref(resp);
    const char *body = "{\"pipeline\":\"bench-w2\"}";
    for (uint32_t i = 0; rc == 0 && i < o->w2_discard + n; i++) {
        uint64_t ns;
        rc = round_trip(c, o, body, &ns, &err);
        if (rc == 0 && i >= o->w2_discard)
            samples[i - o->w2_discard] = ns;
    }
    if (rc < 0 || n == 0) {
        if (rc == 0)
            tr_error_set(&err, TR_EINVAL, "W2 needs at least one round trip");
        tr_bench_fail(r, &err);
        tr_free(samples);
        return;
    }
    qsort(samples, n, sizeof(*samples), cmp_u64);
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += (double)samples[i];
    tr_bench_field_add(r, "n", n, 0);
    tr_bench_field_add(r, "p50_us", (double)nearest_rank(samples, n, 50) / 1e3, 1);
    tr_bench_field_add(r, "p99_us", (double)nearest_rank(samples, n, 99) / 1e3, 1);
    tr_bench_field_add(r, "mean_us", sum / n / 1e3, 1);
    tr_bench_field_add(r, "min_us", (double)samples[0] / 1e3, 1);
    tr_bench_field_add(r, "max_us", (double)samples[n - 1] / 1e3, 1);
    tr_free(samples);
}

/* ===================== W4 ===================== */

/* Polls GET /v1/runs/{id} until it counts want task instances; *run is the last answer. */
static int wait_instances(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                          const char *id, long long want, json_t **run, struct tr_error *err)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/runs/%s", id);
    uint64_t deadline = tr_mono_ns() + (uint64_t)(o->deadline_s * 1e9);
    for (;;) {
        int rc = tr_bench_get_json(c->http, path, 60.0, run, err);
        if (rc < 0)
            return rc;
        long long total = tr_bench_run_count(*run, "total");
        const char *state = tr_bench_run_state(*run);
        if (total >= want)
            return 0;
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
            const char *why = json_string_value(json_object_get(*run, "error"));
            rc = tr_error_set(err, TR_EPROTO, "run '%s' ended '%s' while it should block: %s",
                              id, state, why ? why : "(no error given)");
            json_decref(*run);
            *run = NULL;
            return rc;
        }
        json_decref(*run);
        *run = NULL;
        if (tr_mono_ns() >= deadline)
            return tr_error_set(err, TR_ETIMEDOUT,
                                "run '%s' has %lld of %lld task instances after %u s", id,
                                total, want, o->deadline_s);
        rc = tr_bench_cluster_check(c, err);
        if (rc < 0)
            return rc;
        tr_bench_sleep(0.1);
    }
}

/* Cancels the run and waits until it says so; returns the seconds it took, or -1. */
static double cancel_run(struct tr_bench_cluster *c, const char *id)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/runs/%s/cancel", id);
    struct tr_error err;
    tr_error_init(&err);
    json_t *r = NULL;
    uint64_t t0 = tr_mono_ns();
    int rc = post_body(c->http, path, "", 200, &r, &err);
    json_decref(r);
    r = NULL;
    if (rc == 0)
        rc = tr_bench_wait_run(c->http, id, 10, t0 + 60ull * 1000000000ull, &r, &err);
    uint64_t t1 = tr_mono_ns();
    if (rc == 0 && strcmp(tr_bench_run_state(r), "cancelled") != 0)
        rc = tr_error_set(&err, TR_EPROTO, "run '%s' ended '%s' after its cancel", id,
                          tr_bench_run_state(r));
    json_decref(r);
    if (rc < 0) {
        tr_bench_log("W4: cannot cancel run '%s': %s", id, err.msg);
        return -1;
    }
    return secs(t1 - t0);
}

void tr_bench_w4(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                 struct tr_bench_result *r)
{
    uint32_t n = o->n[TR_BENCH_W4];
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    char *body = tr_bench_src_blocked(&src, "bench-w4", n) == 0 ? source_body(&src, "bench-w4")
                                                                : NULL;
    tr_buf_release(&src);
    if (body == NULL) {
        tr_error_set(&err, TR_ENOMEM, "cannot build pipeline 'bench-w4'");
        tr_bench_fail(r, &err);
        return;
    }
    /* Idle after the warm-up: a second of quiet, as after the graph arrives. */
    tr_bench_sleep(1.0);
    long long before = tr_bench_proc_bytes(c->sched_pid, "VmRSS");

    char id[128];
    json_t *run = NULL;
    uint64_t t0 = tr_mono_ns();
    int rc = start_run(c->http, body, id, sizeof(id), &err);
    free(body);
    if (rc < 0) {
        tr_bench_fail(r, &err);
        return;
    }
    uint64_t t1 = tr_mono_ns();
    rc = wait_instances(c, o, id, (long long)n + 1, &run, &err);
    uint64_t t2 = tr_mono_ns();
    json_decref(run);
    run = NULL;
    if (rc == 0) {
        tr_bench_sleep(1.0);
        char path[160];
        snprintf(path, sizeof(path), "/v1/runs/%s", id);
        rc = tr_bench_get_json(c->http, path, 60.0, &run, &err);
    }
    long long after = tr_bench_proc_bytes(c->sched_pid, "VmRSS");
    long long peak = tr_bench_proc_bytes(c->sched_pid, "VmHWM");
    long long pending = rc == 0 ? tr_bench_run_count(run, "pending") : -1;
    json_decref(run);
    double cancel_s = cancel_run(c, id);
    if (rc < 0) {
        tr_bench_fail(r, &err);
        return;
    }
    if (before < 0 || after < 0 || peak < 0) {
        tr_error_set(&err, TR_EIO, "cannot read /proc/%d/status", (int)c->sched_pid);
        tr_bench_fail(r, &err);
        return;
    }
    tr_bench_field_add(r, "n", n, 0);
    tr_bench_field_add(r, "pending", (double)pending, 0);
    tr_bench_field_add(r, "rss_before", (double)before, 0);
    tr_bench_field_add(r, "rss_after", (double)after, 0);
    tr_bench_field_add(r, "rss_peak", (double)peak, 0);
    tr_bench_field_add(r, "bytes_per_task", (double)(after - before) / n, 0);
    tr_bench_field_add(r, "submit_s", secs(t1 - t0), 2);
    tr_bench_field_add(r, "ready_s", secs(t2 - t0), 2);
    if (cancel_s >= 0)
        tr_bench_field_add(r, "cancel_s", cancel_s, 3);
}

/* ===================== L ===================== */

void tr_bench_l_load(const struct tr_bench_opts *o, struct tr_bench_result *r)
{
    uint32_t n = o->n[TR_BENCH_L];
    uint32_t reps = o->l_loads ? o->l_loads : 1;
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    double *t = tr_calloc(reps, sizeof(*t));
    if (t == NULL || tr_bench_src_blocked(&src, "bench-l", n) < 0) {
        tr_error_set(&err, TR_ENOMEM, "cannot build pipeline 'bench-l'");
        goto out;
    }
    for (uint32_t i = 0; i < reps; i++) {
        struct tr_pipeline_def *def = NULL;
        uint64_t t0 = tr_mono_ns();
        int rc = tr_pipeline_load(src.buf, src.len, "bench-l.lua", &tr_pipeline_default_limits,
                                  &def, &err);
        uint64_t t1 = tr_mono_ns();
        if (rc < 0)
            goto out;
        uint32_t got = def->n_tasks;
        tr_pipeline_def_free(def);
        if (got != n + 1) {
            tr_error_set(&err, TR_EPROTO, "tr_pipeline_load read %u tasks, not %u", got, n + 1);
            goto out;
        }
        t[i] = secs(t1 - t0);
    }
    double med = tr_bench_median(t, reps);
    tr_bench_field_add(r, "load_s", med, 3);
    tr_bench_field_add(r, "load_min_s", t[0], 3);
    tr_bench_field_add(r, "load_max_s", t[reps - 1], 3);
out:
    if (err.code < 0)
        tr_bench_fail(r, &err);
    tr_buf_release(&src);
    tr_free(t);
}

void tr_bench_l_api(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                    struct tr_bench_result *r)
{
    uint32_t n = o->n[TR_BENCH_L];
    uint32_t reps = o->l_posts ? o->l_posts : 1;
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    double *t = tr_calloc(reps, sizeof(*t));
    char *body = NULL;
    if (t == NULL) {
        tr_error_set(&err, TR_ENOMEM, "cannot prepare L");
        goto out;
    }
    for (uint32_t i = 0; i < reps; i++) {
        /*
         * The scheduler keeps graphs by the digest of their source, so each
         * POST gets a file of its own (a comment apart) that it must read.
         */
        tr_buf_reset(&src);
        if (tr_bench_src_blocked(&src, "bench-l", n) == 0 &&
            tr_buf_addf(&src, "-- POST %u\n", i + 1) == 0)
            body = source_body(&src, "bench-l");
        if (body == NULL) {
            tr_error_set(&err, TR_ENOMEM, "cannot build pipeline 'bench-l'");
            goto out;
        }
        json_t *resp;
        uint64_t t0 = tr_mono_ns();
        int rc = post_body(c->http, "/v1/pipelines", body, 201, &resp, &err);
        uint64_t t1 = tr_mono_ns();
        free(body);
        body = NULL;
        if (rc < 0)
            goto out;
        json_t *tasks = json_object_get(resp, "tasks");
        /* api.md leaves open whether "tasks" is a count or the list of names. */
        long long got = json_is_integer(tasks) ? (long long)json_integer_value(tasks)
                        : json_is_array(tasks) ? (long long)json_array_size(tasks)
                                               : -1;
        json_decref(resp);
        if (got != (long long)n + 1) {
            tr_error_set(&err, TR_EPROTO, "POST '/v1/pipelines' registered %lld tasks, not %u",
                         got, n + 1);
            goto out;
        }
        t[i] = secs(t1 - t0);
    }
    double med = tr_bench_median(t, reps);
    tr_bench_field_add(r, "api_s", med, 3);
    tr_bench_field_add(r, "api_min_s", t[0], 3);
    tr_bench_field_add(r, "api_max_s", t[reps - 1], 3);
out:
    if (err.code < 0)
        tr_bench_fail(r, &err);
    free(body);
    tr_buf_release(&src);
    tr_free(t);
}

/* ===================== H ===================== */

void tr_bench_h(struct tr_bench_cluster *c, const struct tr_bench_opts *o, const char *url,
                struct tr_bench_result *r)
{
    uint32_t n = o->n[TR_BENCH_HTTP];
    struct tr_error err;
    tr_error_init(&err);
    struct tr_buf src;
    tr_buf_init(&src, 0);
    int rc = tr_bench_src_http(&src, "bench-h", n, url, o->h_latency_ms);
    char *body = rc == 0 ? source_body(&src, "bench-h") : NULL;
    tr_buf_release(&src);
    if (body == NULL) {
        tr_error_set(&err, TR_ENOMEM, "cannot build pipeline 'bench-h'");
        tr_bench_fail(r, &err);
        return;
    }
    uint64_t wall, submit;
    rc = timed_run(c, o, body, n, &wall, &submit, &err);
    free(body);
    if (rc < 0) {
        tr_bench_fail(r, &err);
        return;
    }
    tr_bench_field_add(r, "n", n, 0);
    tr_bench_field_add(r, "slots", o->h_slots, 0);
    tr_bench_field_add(r, "latency_ms", o->h_latency_ms, 0);
    tr_bench_field_add(r, "wall_s", secs(wall), 3);
    tr_bench_field_add(r, "tasks_per_s", (double)n / secs(wall), 0);
    tr_bench_field_add(r, "submit_s", secs(submit), 3);
}
