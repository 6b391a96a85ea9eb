/*
 * test_obs.c - the scheduler's per-pipeline metrics and drift
 * (scheduler/metrics_pipeline.c), the OTLP ids both daemons derive from a
 * run id (lib/http/otlp.c), and JSON log lines (lib/base/log.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/http/otlp.h"
#include "scheduler/obs.h"

/* A run of pipeline `name` with one task "score", enough for obs_attempt. */
struct fake
{
    struct tr_task_def task;
    struct tr_pipeline_def def;
    struct pipeline_entry pe;
    struct run run;
    struct inst in;
};

static void fake_init(struct fake *f, const char *name)
{
    memset(f, 0, sizeof(*f));
    f->task.name = "score";
    f->def.name = (char *)name;
    f->def.tasks = &f->task;
    f->def.n_tasks = 1;
    f->pe.def = &f->def;
    snprintf(f->run.id, sizeof(f->run.id), "r-1");
    f->run.pipe = &f->pe;
    f->in.run = &f->run;
}

/* A RESULT whose output is the msgpack float64 v (or {"score": v} when in_map). */
static void result_with(struct tr_msg_result *m, unsigned char *buf, double v, bool in_map)
{
    memset(m, 0, sizeof(*m));
    size_t o = 0;
    if (in_map) {
        buf[o++] = 0x82;
        buf[o++] = 0xa4;
        memcpy(buf + o, "note", 4);
        o += 4;
        buf[o++] = 0xc0; /* nil */
        buf[o++] = 0xa5;
        memcpy(buf + o, "score", 5);
        o += 5;
    }
    buf[o++] = 0xcb;
    uint64_t u;
    memcpy(&u, &v, 8);
    for (int i = 7; i >= 0; i--)
        buf[o++] = (unsigned char)(u >> (8 * i));
    m->ok = true;
    m->attempt = 1;
    m->output = (struct tr_str){(const char *)buf, o};
    m->started_at = 1000.0;
    m->finished_at = 1000.02;
}

static char *render(struct obs *o)
{
    struct tr_buf b;
    tr_buf_init(&b, 0);
    assert_int_equal(obs_metrics_render(o, &b), 0);
    return tr_buf_detach(&b, NULL);
}

static double psi_of(const char *text)
{
    const char *p = strstr(text, "trellis_drift_psi{pipeline=\"p\",task=\"score\"} ");
    assert_non_null(p);
    return strtod(strchr(p, '}') + 2, NULL);
}

static void test_psi(void **state)
{
    (void)state;
    uint64_t a[4] = {25, 25, 25, 25}, b[4] = {25, 25, 25, 25}, c[4] = {70, 10, 10, 10};
    assert_true(obs_psi(a, b, 4) < 1e-12);
    /* (0.7-0.25)ln(2.8) + 3 (0.1-0.25)ln(0.4) */
    assert_true(fabs(obs_psi(a, c, 4) - 0.8756) < 1e-3);
    uint64_t z[4] = {0, 0, 0, 0};
    assert_true(obs_psi(a, z, 4) == 0);
}

static void test_drift(void **state)
{
    (void)state;
    struct obs o;
    obs_init(&o);
    struct fake f;
    fake_init(&f, "p");
    struct tr_msg_result m;
    unsigned char buf[64];
    /* The reference: 500 values spread over [0, 1); then the same spread. */
    for (int i = 0; i < OBS_DRIFT_REF + 200; i++) {
        result_with(&m, buf, (i % 100) / 100.0, i % 2 == 0);
        obs_attempt(&o, &f.in, "w", &m);
    }
    char *t = render(&o);
    assert_true(psi_of(t) < 0.1);
    assert_non_null(strstr(t, "trellis_task_duration_seconds_bucket{pipeline=\"p\",task=\"score\","
                              "le=\"0.025\"} 700\n"));
    tr_free(t);
    /* Shifted: the same hour now holds mostly high values. */
    for (int i = 0; i < 2000; i++) {
        result_with(&m, buf, 0.9 + (i % 10) / 100.0, false);
        obs_attempt(&o, &f.in, "w", &m);
    }
    t = render(&o);
    assert_true(psi_of(t) > 0.25);
    tr_free(t);
    /* A string output is not watched and changes nothing. */
    m.output = (struct tr_str){"\xa1x", 2};
    obs_attempt(&o, &f.in, "w", &m);
    obs_release(&o);
}

static void test_runs_feedback_and_caps(void **state)
{
    (void)state;
    struct obs o;
    obs_init(&o);
    struct fake f;
    fake_init(&f, "qa\"x");
    f.run.state = TR_RUN_FAILED;
    obs_run_final(&o, &f.run);
    obs_feedback(&o, "qa\"x", 4, 1);
    char name[32];
    for (int i = 0; i < OBS_MAX_PIPELINES + 50; i++) {
        snprintf(name, sizeof(name), "gen-%d", i);
        obs_feedback(&o, name, 2, 2);
    }
    assert_int_equal(o.n_pipes, OBS_MAX_PIPELINES + 1); /* the cap plus "_other" */
    char *t = render(&o);
    assert_non_null(strstr(t, "trellis_pipeline_runs_total{pipeline=\"qa\\\"x\",state=\"failed\"} 1\n"));
    assert_non_null(strstr(t, "trellis_feedback_negative_ratio{pipeline=\"qa\\\"x\"} 0.25\n"));
    assert_non_null(strstr(t, "trellis_feedback_negative_ratio{pipeline=\"_other\"} 1\n"));
    assert_null(strstr(t, "gen-240"));
    tr_free(t);
    obs_release(&o);
}

static void test_ids(void **state)
{
    (void)state;
    char trace[TR_OTLP_TRACE_HEX], span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids("r-1", 3, trace, span);
    /* python3: h = sha256(b"r-1"); h[0] |= 1; h[16] |= 1 */
    assert_string_equal(trace, "a5fa777a3dc67268caea6eea038ba141");
    assert_string_equal(span, "77e360dba84e1db4");
    char a1[TR_OTLP_SPAN_HEX], a2[TR_OTLP_SPAN_HEX], a3[TR_OTLP_SPAN_HEX];
    tr_otlp_attempt_span("r-1", 3, "t", 1, 0, 1, a1);
    tr_otlp_attempt_span("r-1", 3, "t", 1, 0, 1, a2);
    tr_otlp_attempt_span("r-1", 3, "t", 1, 0, 2, a3);
    assert_string_equal(a1, a2);
    assert_string_not_equal(a1, a3);
    char tp[56];
    tr_otlp_traceparent(trace, a1, tp);
    assert_int_equal(strlen(tp), 55);
    assert_memory_equal(tp, "00-a5fa777a", 11);
    assert_string_equal(tp + 52, "-01");
    char r1[TR_OTLP_SPAN_HEX], r2[TR_OTLP_SPAN_HEX];
    tr_otlp_random_span(r1);
    tr_otlp_random_span(r2);
    assert_string_not_equal(r1, r2);
}

static void fake_trace(const char *run, char out[33])
{
    char span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids(run, strlen(run), out, span);
}

static void test_json_log(void **state)
{
    (void)state;
    char path[] = "/tmp/trellis-test-log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    tr_log_init("scheduler", TR_LOG_INFO);
    tr_log_set_json(true);
    tr_log_set_trace_fn(fake_trace);
    tr_info("task retry run=r-1 task=a\"b index=2 worker='w 1' delay=0.5s: boom\n\"x\"");
    tr_warn("plain line with = and key=");
    /* Long and escaped everywhere: cut, still one object. */
    char big[1900];
    memset(big, 0xff, sizeof(big)); /* the tail: bytes that are not UTF-8 */
    static const char piece[] = "k=\x01\x01\x01\"\x01 rr  ";
    _Static_assert(sizeof(piece) == 13, "12 bytes a piece");
    for (size_t i = 0; i + 12 < sizeof(big); i += 12)
        memcpy(big + i, piece, 12);
    big[sizeof(big) - 1] = '\0';
    tr_err("%s", big);
    tr_log_set_json(false);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fdopen(fd, "r");
    assert_non_null(f);
    rewind(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "process")), "scheduler");
    assert_string_equal(json_string_value(json_object_get(o, "run")), "r-1");
    assert_string_equal(json_string_value(json_object_get(o, "task")), "a\"b");
    assert_string_equal(json_string_value(json_object_get(o, "delay")), "0.5s");
    assert_string_equal(json_string_value(json_object_get(o, "trace_id")),
                        "a5fa777a3dc67268caea6eea038ba141");
    assert_non_null(strstr(json_string_value(json_object_get(o, "msg")), "boom\n\"x\""));
    assert_non_null(json_object_get(o, "time"));
    json_decref(o);
    assert_non_null(fgets(line, sizeof(line), f));
    o = json_loads(line, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    assert_null(json_object_get(o, "trace_id"));
    json_decref(o);
    char *longline = tr_malloc(65536);
    assert_non_null(longline);
    assert_non_null(fgets(longline, 65536, f));
    o = json_loads(longline, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "error");
    json_decref(o);
    tr_free(longline);
    fclose(f);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psi),
        cmocka_unit_test(test_drift),
        cmocka_unit_test(test_runs_feedback_and_caps),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_json_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
