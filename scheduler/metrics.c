/*
 * metrics.c - the counters behind GET /metrics, in Prometheus text format.
 *
 * Counters are plain integers in struct counters (counters.h), bumped on the
 * loop thread; gauges (ready queue depth, workers) are read from the live structures when
 * the page is rendered.
 */
#include "scheduler/metrics.h"

#include "lib/base/alloc.h"

#define ADD(...)                                  \
    do {                                          \
        if (tr_buf_addf(&b, __VA_ARGS__) < 0)     \
            goto out_oom;                         \
    } while (0)

/*
 * A label value as the Prometheus text format wants it: backslash, double
 * quote and newline escaped. Pool names are checked where they come in
 * (pipelines, HELLO), but the exposition must hold whatever a name is.
 */
static const char *label_value(struct tr_buf *esc, const char *v)
{
    tr_buf_reset(esc);
    for (const char *p = v; *p != '\0'; p++) {
        const char *e = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        if ((e != NULL ? tr_buf_add(esc, e, 2) : tr_buf_add(esc, p, 1)) < 0)
            return NULL;
    }
    return tr_buf_add(esc, "", 1) < 0 ? NULL : esc->buf;
}

struct conc_ctx
{
    struct tr_buf *b;
    int rc;
};

static void conc_line(void *arg, const char *key, uint32_t held, uint32_t limit, size_t waiting)
{
    struct conc_ctx *c = arg;
    const char *names[] = {"trellis_concurrency_held", "trellis_concurrency_limit",
                           "trellis_concurrency_waiting"};
    uint64_t v[] = {held, limit, waiting};
    for (int i = 0; i < 3 && c->rc == 0; i++) {
        c->rc = tr_buf_addf(c->b, "%s{key=\"", names[i]);
        if (c->rc == 0)
            c->rc = prom_label(c->b, key);
        if (c->rc == 0)
            c->rc = tr_buf_addf(c->b, "\"} %llu\n", (unsigned long long)v[i]);
    }
}

/* Placement, concurrency keys and run controls (dispatch_place.c, core_controls.c). */
static int render_controls(const struct metrics_src *s, struct tr_buf *b)
{
    const struct counters *m = s->cnt;
    int rc = tr_buf_addf(
        b,
        "# HELP trellis_tasks_unschedulable Ready tasks whose labels no connected worker of "
        "their pool carries.\n# TYPE trellis_tasks_unschedulable gauge\n"
        "trellis_tasks_unschedulable %zu\n"
        "# HELP trellis_tasks_unschedulable_total Tasks failed unschedulable "
        "(--unschedulable-timeout).\n# TYPE trellis_tasks_unschedulable_total counter\n"
        "trellis_tasks_unschedulable_total %llu\n"
        "# HELP trellis_runs_timed_out_total Runs failed at their pipeline's timeout.\n"
        "# TYPE trellis_runs_timed_out_total counter\ntrellis_runs_timed_out_total %llu\n"
        "# HELP trellis_concurrency_held Places of a concurrency key held (ready, dispatched "
        "or running).\n# TYPE trellis_concurrency_held gauge\n"
        "# HELP trellis_concurrency_limit A concurrency key's limit.\n"
        "# TYPE trellis_concurrency_limit gauge\n"
        "# HELP trellis_concurrency_waiting Tasks waiting for a place of a concurrency key.\n"
        "# TYPE trellis_concurrency_waiting gauge\n",
        dispatch_unschedulable_count(s->dispatch), (unsigned long long)m->tasks_unschedulable,
        (unsigned long long)m->runs_timed_out);
    struct conc_ctx c = {b, rc};
    if (rc == 0)
        dispatch_conc_each(s->dispatch, conc_line, &c);
    return c.rc;
}

char *metrics_render(const struct metrics_src *s, size_t *len)
{
    struct tr_buf b, esc;
    tr_buf_init(&b, 0);
    tr_buf_init(&esc, 0);
    const char *pn;
    const struct counters *m = s->cnt;
    ADD("# HELP trellis_runs_total Runs finished, by outcome.\n# TYPE trellis_runs_total counter\n");
    for (int i = TR_RUN_SUCCEEDED; i <= TR_RUN_CANCELLED; i++)
        ADD("trellis_runs_total{outcome=\"%s\"} %llu\n", tr_run_state_names[i],
            (unsigned long long)m->runs_total[i]);
    ADD("# HELP trellis_runs_active Runs queued or running.\n# TYPE trellis_runs_active gauge\n"
        "trellis_runs_active %u\n", s->core->n_active);
    ADD("# HELP trellis_leader 1 while this scheduler leads (always with SQLite state), 0 on a "
        "standby.\n# TYPE trellis_leader gauge\ntrellis_leader %d\n",
        leader_acting(s->leader) ? 1 : 0);
    ADD("# HELP trellis_tasks_total Task attempts and instances, by outcome.\n"
        "# TYPE trellis_tasks_total counter\n");
    const struct
    {
        const char *name;
        uint64_t v;
    } tasks[] = {{"succeeded", m->tasks_succeeded}, {"failed", m->tasks_failed},
                 {"retried", m->tasks_retried},     {"timed_out", m->tasks_timed_out},
                 {"cancelled", m->tasks_cancelled}, {"skipped", m->tasks_skipped},
                 {"requeued", m->tasks_requeued},   {"cached", m->tasks_cached}};
    for (size_t i = 0; i < TR_ARRAY_LEN(tasks); i++)
        ADD("trellis_tasks_total{outcome=\"%s\"} %llu\n", tasks[i].name,
            (unsigned long long)tasks[i].v);
    ADD("# HELP trellis_tasks_dispatched_total Task dispatches sent to workers.\n"
        "# TYPE trellis_tasks_dispatched_total counter\ntrellis_tasks_dispatched_total %llu\n",
        (unsigned long long)m->dispatched);
    ADD("# HELP trellis_ready_tasks Ready task instances waiting for a worker, by pool.\n"
        "# TYPE trellis_ready_tasks gauge\n");
    size_t it = 0;
    struct pool *p;
    while ((p = tr_hmap_next(&s->fleet->pools, &it)) != NULL) {
        if ((pn = label_value(&esc, p->name)) == NULL)
            goto out_oom;
        ADD("trellis_ready_tasks{pool=\"%s\"} %zu\n", pn,
            dispatch_ready_count(s->dispatch, p->name, strlen(p->name)));
    }
    ADD("# HELP trellis_workers Connected workers, by pool.\n# TYPE trellis_workers gauge\n");
    it = 0;
    while ((p = tr_hmap_next(&s->fleet->pools, &it)) != NULL) {
        if ((pn = label_value(&esc, p->name)) == NULL)
            goto out_oom;
        ADD("trellis_workers{pool=\"%s\"} %zu\n", pn, p->n_workers);
    }
    ADD("# HELP trellis_worker_slots Task slots of connected workers, by pool.\n"
        "# TYPE trellis_worker_slots gauge\n");
    it = 0;
    while ((p = tr_hmap_next(&s->fleet->pools, &it)) != NULL) {
        uint64_t slots = 0;
        for (size_t i = 0; i < p->n_workers; i++)
            slots += p->workers[i]->slots;
        if ((pn = label_value(&esc, p->name)) == NULL)
            goto out_oom;
        ADD("trellis_worker_slots{pool=\"%s\"} %llu\n", pn, (unsigned long long)slots);
    }
    ADD("# HELP trellis_task_latency_seconds Time from dispatch to result.\n"
        "# TYPE trellis_task_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < LAT_BUCKETS; i++) {
        cum += m->lat_buckets[i];
        ADD("trellis_task_latency_seconds_bucket{le=\"%g\"} %llu\n", counters_lat_bounds[i],
            (unsigned long long)cum);
    }
    cum += m->lat_buckets[LAT_BUCKETS];
    ADD("trellis_task_latency_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    ADD("trellis_task_latency_seconds_sum %.6f\ntrellis_task_latency_seconds_count %llu\n",
        m->lat_sum, (unsigned long long)m->lat_count);
    ADD("# HELP trellis_dropped_frames_total Worker frames dropped, by reason.\n"
        "# TYPE trellis_dropped_frames_total counter\n");
    for (int i = 0; i < DROP_COUNT; i++)
        ADD("trellis_dropped_frames_total{reason=\"%s\"} %llu\n", drop_reason_names[i],
            (unsigned long long)m->dropped[i]);
    ADD("# HELP trellis_state_commits_total Group commits to the state backend.\n"
        "# TYPE trellis_state_commits_total counter\ntrellis_state_commits_total %llu\n"
        "# HELP trellis_state_commit_errors_total Failed group commits.\n"
        "# TYPE trellis_state_commit_errors_total counter\n"
        "trellis_state_commit_errors_total %llu\n",
        (unsigned long long)m->commits, (unsigned long long)m->commit_errors);
    ADD("# HELP trellis_worker_auth_refused_total Worker connections refused by CURVE "
        "authentication.\n# TYPE trellis_worker_auth_refused_total counter\n"
        "trellis_worker_auth_refused_total %llu\n",
        (unsigned long long)zmq_router_auth_refused(*s->router));
    ADD("# HELP trellis_runs_in_memory Runs held in memory (active and recent).\n"
        "# TYPE trellis_runs_in_memory gauge\ntrellis_runs_in_memory %zu\n",
        tr_hmap_count(&s->core->runs));
    /* GPUs per device of each worker (label values escaped: names come from NVML). */
    for (int k = 0; k < GPU_METRIC_COUNT; k++) {
        ADD("# HELP %s %s\n# TYPE %s gauge\n", gpu_metric_names[k], gpu_metric_help[k],
            gpu_metric_names[k]);
        it = 0;
        struct worker *w;
        while ((w = tr_hmap_next(&s->fleet->workers, &it)) != NULL) {
            if (worker_gpus_metric(&w->g, (enum gpu_metric)k, w->id, w->pool->name, &b) < 0)
                goto out_oom;
        }
    }
    ADD("# HELP trellis_gpu_ready_tasks Ready task instances waiting for GPUs, by pool.\n"
        "# TYPE trellis_gpu_ready_tasks gauge\n");
    it = 0;
    while ((p = tr_hmap_next(&s->fleet->pools, &it)) != NULL) {
        ADD("trellis_gpu_ready_tasks{pool=\"");
        if (prom_label(&b, p->name) < 0)
            goto out_oom;
        ADD("\"} %zu\n", dispatch_gpu_ready_count(s->dispatch, p->name, strlen(p->name)));
    }
    if (render_controls(s, &b) < 0)
        goto out_oom;
    ADD("# HELP trellis_guard_blocked_total Model calls blocked by guardrails, by pipeline, "
        "check and stage.\n# TYPE trellis_guard_blocked_total counter\n");
    it = 0;
    const struct guard_count *g;
    while ((g = tr_hmap_next(&m->guard_blocked, &it)) != NULL) {
        const char *check = g->key + strlen(g->key) + 1;
        const char *stage = check + strlen(check) + 1;
        ADD("trellis_guard_blocked_total{pipeline=\"");
        if (prom_label(&b, g->key) < 0)
            goto out_oom;
        ADD("\",check=\"");
        if (prom_label(&b, check) < 0)
            goto out_oom;
        ADD("\",stage=\"");
        if (prom_label(&b, stage) < 0)
            goto out_oom;
        ADD("\"} %llu\n", (unsigned long long)g->n);
    }
    if (obs_metrics_render(s->core->obs, &b) != 0) /* per pipeline (metrics_pipeline.c) */
        goto out_oom;
    tr_buf_release(&esc);
    return tr_buf_detach(&b, len);
out_oom:
    tr_buf_release(&esc);
    tr_buf_release(&b);
    return NULL;
}
