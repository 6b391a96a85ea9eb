/*
 * test_sched_controls.c - the run controls on the scheduling core, on SQLite
 * state in a temporary directory with no ZeroMQ and no processes: placement
 * by labels (and unschedulable tasks), concurrency keys across runs,
 * max_active_runs (also across a restart) and the pipeline timeout; and the
 * fields' checks at load and their way through the codec.
 *
 * The harness is test_sched_core.c's (the parts put together as sched.c
 * does, a transport that keeps what would be sent), with room for more frames
 * and workers with labels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "scheduler/core.h"
#include "scheduler/recover.h"
#include "lib/lua/pipeline_codec.h"

/* ===================================================================== */
/* Harness                                                               */
/* ===================================================================== */

/* One frame the scheduler would have sent. */
struct sent
{
    char ident[32];
    enum tr_msg_type type;
    uint64_t id;
    uint32_t attempt;
    char task[32];
    uint32_t index;
    char args[64];            /* TASK: the msgpack arguments */
    size_t args_len;
    bool answered;            /* a result was handed to the core for it */
};

struct h
{
    char dir[256];
    char url[300];
    uv_loop_t loop;
    struct sched_config cfg;
    struct tr_state *st;
    struct counters cnt;
    struct pipes pipes;
    struct batch batch;
    struct timers timers;
    struct fleet fleet;
    struct dispatch dispatch;
    struct core core;
    struct transport tp;
    struct tr_proto_decoder dec;
    struct sent sent[1024];
    size_t n_sent;
    uint32_t finals;          /* runs ended (the core's run_final hook) */
};

static int cap_send(void *impl, const void *ident, size_t ident_len, const void *data, size_t len)
{
    struct h *h = impl;
    struct tr_msg m;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(tr_proto_decode(&h->dec, data, len, &m, &err), 0);
    if (m.type == TR_MSG_HEARTBEAT || m.type == TR_MSG_WELCOME || m.type == TR_MSG_BYE)
        return 0;
    assert_true(h->n_sent < TR_ARRAY_LEN(h->sent));
    struct sent *s = &h->sent[h->n_sent++];
    memset(s, 0, sizeof(*s));
    snprintf(s->ident, sizeof(s->ident), "%.*s", (int)ident_len, (const char *)ident);
    s->type = m.type;
    if (m.type == TR_MSG_TASK) {
        s->id = m.u.task.id;
        s->attempt = m.u.task.attempt;
        snprintf(s->task, sizeof(s->task), "%.*s", (int)m.u.task.task.len, m.u.task.task.p);
        s->index = m.u.task.index;
        assert_true(m.u.task.args.len <= sizeof(s->args));
        memcpy(s->args, m.u.task.args.p, m.u.task.args.len);
        s->args_len = m.u.task.args.len;
    } else if (m.type == TR_MSG_CANCEL) {
        s->id = m.u.cancel.id;
    }
    return 0;
}

static const struct transport_ops cap_ops = {cap_send, NULL, NULL, NULL};

static void on_final(void *arg, struct run *r)
{
    (void)r;
    ((struct h *)arg)->finals++;
}

static void on_down(void *arg, struct worker *w)
{
    core_worker_down(arg, w);
}

/* Opens the parts on the state in h->dir (made when empty). */
static void h_open(struct h *h)
{
    if (h->dir[0] == '\0') {
        snprintf(h->dir, sizeof(h->dir), "/tmp/trellis-core-XXXXXX");
        assert_non_null(mkdtemp(h->dir));
    }
    snprintf(h->url, sizeof(h->url), "sqlite:%s/state.db", h->dir);
    h->cfg.prefetch = 0; /* credit is exactly the slots */
    h->cfg.keep_runs = 100;
    h->cfg.heartbeat_ms = 60000;
    h->cfg.timeout_grace_s = 1;
    h->cfg.limits = tr_pipeline_default_limits;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    assert_int_equal(tr_state_open(h->url, &h->st, &err), 0);
    tr_proto_decoder_init(&h->dec, NULL);
    transport_init(&h->tp, &cap_ops, h);

    pipes_init(&h->pipes, &h->loop); /* no sandbox: graphs are read in-process (load) */
    batch_init(&h->batch, &h->cnt);
    timers_init(&h->timers, &h->loop, core_timer_fire, &h->core);
    struct fleet_hooks fh = {.arg = &h->core, .down = on_down};
    fleet_init(&h->fleet, h->cfg.heartbeat_ms, &fh);
    struct dispatch_hooks dh = core_dispatch_hooks;
    dh.arg = &h->core;
    dispatch_init(&h->dispatch, &h->cfg, &h->fleet, &h->batch, &h->timers, &h->cnt, &dh);
    struct core_parts cp = {h->st,        &h->pipes,  &h->batch, &h->dispatch,
                            &h->fleet,    &h->timers, &h->cnt};
    struct core_hooks ch = {.arg = h, .run_final = on_final};
    core_init(&h->core, &cp, h->cfg.keep_runs, &ch);

    uint64_t epoch = 0;
    assert_int_equal(tr_state_next_epoch(h->st, &epoch), 0);
    h->dispatch.epoch = epoch;
    h->core.tp = &h->tp;
    fleet_start(&h->fleet, &h->loop, &h->tp, epoch);
}

/* Closes the parts; the state's directory stays (h_free removes it). */
static void h_close(struct h *h)
{
    dispatch_release(&h->dispatch);
    fleet_release(&h->fleet);
    core_release(&h->core);
    pipes_release(&h->pipes);
    batch_release(&h->batch);
    timers_release(&h->timers);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    transport_release(&h->tp);
    tr_proto_decoder_release(&h->dec);
    tr_state_close(h->st);
    h->st = NULL;
    memset(&h->cnt, 0, sizeof(h->cnt));
    h->n_sent = 0;
}

static int setup(void **state)
{
    struct h *h = tr_calloc(1, sizeof(*h));
    h_open(h);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct h *h = *state;
    if (h->st != NULL)
        h_close(h);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    assert_int_equal(system(cmd), 0);
    tr_free(h);
    return 0;
}

/* The loop turn's order, as sched.c's end_of_turn: schedule, commit, send. */
static void turn(struct h *h)
{
    if (!h->batch.failing)
        dispatch_all(&h->dispatch);
    if (batch_dirty(&h->batch))
        assert_int_equal(batch_commit(&h->batch, h->st), 0);
    batch_send(&h->batch, &h->tp);
}

/* Reads a graph in this process (test code: the daemon reads graphs in its
 * sandbox processes) and puts it in the loader's cache. */
static struct pipeline_entry *load(struct h *h, const char *src)
{
    struct tr_pipeline_def *def = NULL;
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_pipeline_load(src, strlen(src), "test.lua", &h->cfg.limits, &def, &err);
    if (rc < 0)
        fail_msg("cannot load: %s", err.msg);
    struct pipeline_entry *pe = pipe_add(&h->pipes, def, "test.lua");
    assert_non_null(pe);
    return pe;
}

static struct run *start(struct h *h, const char *src)
{
    struct run *r = NULL;
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(run_new(&h->core, load(h, src), NULL, &r, &err), 0);
    run_start(r);
    return r;
}

static struct worker *worker(struct h *h, const char *id, const char *pool, uint32_t slots)
{
    struct tr_msg_hello hello = {
        .worker_id = tr_str_c(id),
        .pool = tr_str_c(pool),
        .slots = slots,
        .version = TR_STR("test"),
    };
    struct worker *w = fleet_hello(&h->fleet, id, strlen(id), &hello);
    assert_non_null(w);
    return w;
}

/* The index in h->sent of the unanswered TASK for task[index], or -1. */
static int find_task(struct h *h, const char *task, uint32_t index)
{
    for (size_t i = 0; i < h->n_sent; i++) {
        if (h->sent[i].type == TR_MSG_TASK && !h->sent[i].answered &&
            strcmp(h->sent[i].task, task) == 0 && h->sent[i].index == index)
            return (int)i;
    }
    return -1;
}

static size_t count_tasks(struct h *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_sent; i++)
        n += h->sent[i].type == TR_MSG_TASK;
    return n;
}

/* Answers the TASK sent for task[index] with a result (output msgpack, or an error). */
static void answer(struct h *h, const char *task, uint32_t index, const char *output,
                   size_t output_len, const char *error)
{
    int i = find_task(h, task, index);
    assert_true(i >= 0);
    struct sent *s = &h->sent[i];
    struct worker *w = fleet_find(&h->fleet, s->ident, strlen(s->ident));
    assert_non_null(w);
    struct tr_msg_result m = {
        .id = s->id,
        .epoch = h->dispatch.epoch,
        .attempt = s->attempt,
        .ok = error == NULL,
        .output = {output, output_len},
        .error = error ? tr_str_c(error) : (struct tr_str){NULL, 0},
        .started_at = tr_now(),
        .finished_at = tr_now(),
    };
    s->answered = true;
    core_on_result(&h->core, w, &m);
}

static struct inst *inst_of(struct run *r, const char *task, uint32_t index)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        if (strcmp(def->tasks[t].name, task) == 0) {
            struct task_rt *trt = &r->tasks[t];
            return index ? &trt->mapped[index - 1] : &trt->single;
        }
    }
    fail_msg("no task %s", task);
    return NULL;
}

static uint8_t state_of(struct run *r, const char *task)
{
    return inst_of(r, task, 0)->state;
}

/* ===================================================================== */
/* ===================================================================== */
/* Helpers of these tests                                                */
/* ===================================================================== */

/* A worker of pool cpu whose HELLO carries labels "k=v,k=v". */
static struct worker *labelled(struct h *h, const char *id, uint32_t slots, const char *labels)
{
    static char buf[8][256];
    struct tr_msg_hello hello = {
        .worker_id = tr_str_c(id), .pool = TR_STR("cpu"), .slots = slots,
        .version = TR_STR("test"),
    };
    char *save = NULL;
    snprintf(buf[0], sizeof(buf[0]), "%s", labels);
    for (char *kv = strtok_r(buf[0], ",", &save); kv != NULL; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        hello.labels[hello.n_labels].key = tr_str_c(kv);
        hello.labels[hello.n_labels].value = tr_str_c(eq + 1);
        hello.n_labels++;
    }
    struct worker *w = fleet_hello(&h->fleet, id, strlen(id), &hello);
    assert_non_null(w);
    return w;
}

/* Answers every unanswered TASK sent to worker ident (NULL: any) with nil. */
static size_t answer_all(struct h *h, const char *ident)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_sent; i++) {
        struct sent *s = &h->sent[i];
        if (s->type != TR_MSG_TASK || s->answered || (ident && strcmp(s->ident, ident) != 0))
            continue;
        struct worker *w = fleet_find(&h->fleet, s->ident, strlen(s->ident));
        assert_non_null(w);
        struct tr_msg_result m = {.id = s->id, .epoch = h->dispatch.epoch, .attempt = s->attempt,
                                  .ok = true, .output = {"\xc0", 1},
                                  .started_at = tr_now(), .finished_at = tr_now()};
        s->answered = true;
        core_on_result(&h->core, w, &m);
        n++;
    }
    return n;
}

static size_t unanswered(struct h *h, const char *prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_sent; i++)
        n += h->sent[i].type == TR_MSG_TASK && !h->sent[i].answered &&
             strncmp(h->sent[i].task, prefix, strlen(prefix)) == 0;
    return n;
}

static int load_err(const char *src, struct tr_error *err)
{
    struct tr_pipeline_def *def = NULL;
    tr_error_init(err);
    int rc = tr_pipeline_load(src, strlen(src), "bad.lua", NULL, &def, err);
    tr_pipeline_def_free(def);
    return rc;
}

#define HEAD "local trellis = require 'trellis'\nlocal f = function() end\n"

/* ===================================================================== */
/* Tests                                                                 */
/* ===================================================================== */

/* Labelled tasks go only to workers carrying every label; one nobody can take
 * is reported (waiting, gauge), starts when such a worker joins, and fails
 * `unschedulable` once none joined within --unschedulable-timeout. */
static void test_labels(void **state)
{
    struct h *h = *state;
    h->dispatch.unschedulable_s = 10;
    labelled(h, "wa", 10, "zone=a");
    labelled(h, "wb", 10, "zone=b,disk=ssd");
    struct run *r = start(
        h, HEAD "return trellis.pipeline { name = 'place', version = '1', tasks = {\n"
                "  trellis.task { name = 'a1', labels = { zone = 'a' }, run = f },\n"
                "  trellis.task { name = 'a2', labels = { zone = 'a' }, run = f },\n"
                "  trellis.task { name = 'b1', labels = { disk = 'ssd', zone = 'b' }, run = f },\n"
                "  trellis.task { name = 'c1', labels = { zone = 'c' }, run = f },\n"
                "  trellis.task { name = 'd1', labels = { zone = 'd' }, run = f },\n"
                "  trellis.task { name = 'any', run = f },\n"
                "} }\n");
    turn(h);
    assert_string_equal(h->sent[find_task(h, "a1", 0)].ident, "wa");
    assert_string_equal(h->sent[find_task(h, "a2", 0)].ident, "wa");
    assert_string_equal(h->sent[find_task(h, "b1", 0)].ident, "wb");
    assert_true(find_task(h, "any", 0) >= 0);
    assert_int_equal(find_task(h, "c1", 0), -1);
    assert_int_equal(find_task(h, "d1", 0), -1);
    char why[320];
    assert_true(dispatch_place_waiting(&h->dispatch, inst_of(r, "c1", 0), why, sizeof(why)));
    assert_string_equal(why, "no worker with labels zone=c in pool cpu");
    assert_false(dispatch_place_waiting(&h->dispatch, inst_of(r, "any", 0), why, sizeof(why)));
    assert_int_equal(dispatch_unschedulable_count(&h->dispatch), 2);
    double now = tr_now();
    dispatch_place_check(&h->dispatch, now); /* reported, not failed */
    assert_int_equal(state_of(r, "c1"), TR_TASK_READY);

    /* A worker with zone=c (and more) joins: c1 goes to it. */
    labelled(h, "wc", 10, "zone=c,gpu=none");
    turn(h);
    assert_string_equal(h->sent[find_task(h, "c1", 0)].ident, "wc");
    assert_int_equal(dispatch_unschedulable_count(&h->dispatch), 1);
    dispatch_place_check(&h->dispatch, now + 5);
    assert_int_equal(state_of(r, "d1"), TR_TASK_READY);
    dispatch_place_check(&h->dispatch, now + 11);
    assert_int_equal(state_of(r, "d1"), TR_TASK_FAILED);
    assert_non_null(strstr(inst_of(r, "d1", 0)->error,
                           "unschedulable: no worker with labels zone=d in pool cpu"));
    assert_int_equal(h->cnt.tasks_unschedulable, 1);
    assert_int_equal(dispatch_unschedulable_count(&h->dispatch), 0);
    answer_all(h, NULL);
    turn(h);
    assert_int_equal(r->state, TR_RUN_FAILED);
}

/* A concurrency key holds at most its limit of instances dispatched, across
 * runs; the rest wait without a worker slot; places come back with results,
 * failures, cancel, and stay with a task requeued from a lost worker. */
static void test_concurrency(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 100);
    const char *src =
        HEAD "local t = {}\n"
             "for i = 1, 20 do t[#t + 1] = trellis.task { name = 'k' .. i,\n"
             "  concurrency = { key = 'gpu-a100', limit = 3 }, run = f } end\n"
             "t[#t + 1] = trellis.task { name = 'free', run = f }\n"
             "return trellis.pipeline { name = 'conc', version = '1', tasks = t }\n";
    struct run *r1 = start(h, src);
    struct run *r2 = start(h, src);
    turn(h);
    assert_int_equal(unanswered(h, "k"), 3);
    assert_int_equal(unanswered(h, "free"), 2);
    char why[320];
    assert_true(dispatch_place_waiting(&h->dispatch, inst_of(r2, "k20", 0), why, sizeof(why)));
    assert_string_equal(why, "for a place of concurrency key 'gpu-a100' (3 of 3 held)");

    /* The worker is lost: its three keep their places and wait for another. */
    for (size_t i = 0; i < h->n_sent; i++)
        h->sent[i].answered = true;
    fleet_remove(&h->fleet, fleet_find(&h->fleet, "w1", 2), "test");
    worker(h, "w2", "cpu", 100);
    turn(h);
    assert_int_equal(unanswered(h, "k"), 3);
    /* Results, one by one; never more than 3 at once, all 40 finish. */
    size_t done = 0;
    while (done < 40) {
        size_t n = unanswered(h, "k");
        assert_true(n >= 1 && n <= 3);
        int k = -1;
        for (size_t i = 0; i < h->n_sent && k < 0; i++)
            if (h->sent[i].type == TR_MSG_TASK && !h->sent[i].answered &&
                h->sent[i].task[0] == 'k')
                k = (int)i;
        answer(h, h->sent[k].task, 0, "\xc0", 1, done == 5 ? "boom" : NULL);
        done++;
        turn(h);
    }
    answer_all(h, NULL);
    assert_true(run_is_final(r1) && run_is_final(r2));
    assert_int_equal(tr_hmap_count(&h->dispatch.conc), 0); /* freed when unused */

    /* Cancel gives places back; the lowest of two limits wins (for places
     * taken from then on: y1 is readied first). */
    struct run *r3 = start(
        h, HEAD "return trellis.pipeline { name = 'two', version = '1', tasks = {\n"
                "  trellis.task { name = 'y1', concurrency = { key = 'q', limit = 1 }, run = f },\n"
                "  trellis.task { name = 'x1', concurrency = { key = 'q', limit = 5 }, run = f },\n"
                "  trellis.task { name = 'x2', concurrency = { key = 'q', limit = 5 }, run = f },\n"
                "} }\n");
    turn(h);
    assert_int_equal(unanswered(h, "x") + unanswered(h, "y"), 1);
    assert_int_equal(run_cancel(r3, "test"), 0);
    assert_int_equal(tr_hmap_count(&h->dispatch.conc), 0);
    answer_all(h, NULL);
}

/* Places are not stored: after a restart, recovery readies the unfinished
 * instances again and they take places anew, within the limit. */
static void test_concurrency_recovery(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 10);
    const char *src =
        HEAD "local t = {}\n"
             "for i = 1, 5 do t[#t + 1] = trellis.task { name = 'k' .. i,\n"
             "  concurrency = { key = 'k', limit = 2 }, run = f } end\n"
             "return trellis.pipeline { name = 'cr', version = '1', tasks = t }\n";
    struct run *r = start(h, src);
    char id[40];
    snprintf(id, sizeof(id), "%s", r->id);
    turn(h);
    assert_int_equal(unanswered(h, "k"), 2);
    answer(h, h->sent[0].task, 0, "\xc0", 1, NULL);
    turn(h); /* one result durable; two more dispatched, not stored */
    h_close(h);

    h_open(h);
    load(h, src);
    struct tr_error err;
    tr_error_init(&err);
    struct recovery *rv = NULL;
    bool stopping = false;
    struct recover_parts rp = {&h->core, &h->pipes, h->st, &h->loop, NULL, &stopping};
    assert_int_equal(recover_start(&rv, &rp, &err), 0);
    r = run_find(&h->core, id);
    assert_non_null(r);
    worker(h, "w2", "cpu", 10);
    turn(h);
    assert_int_equal(unanswered(h, "k"), 2);
    for (int i = 0; i < 4; i++) {
        assert_true(unanswered(h, "k") <= 2);
        for (size_t k = 0; k < h->n_sent; k++) {
            if (h->sent[k].type == TR_MSG_TASK && !h->sent[k].answered) {
                answer(h, h->sent[k].task, 0, "\xc0", 1, NULL);
                break;
            }
        }
        turn(h);
    }
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
}

/* max_active_runs: further runs of the name stay queued and start in
 * submission order; a queued run can be cancelled; after a restart the
 * running one is counted first and the queued one still waits. */
static void test_max_active_runs(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 10);
    const char *src = HEAD "return trellis.pipeline { name = 'mar', version = '1',\n"
                           "  max_active_runs = 1, tasks = {\n"
                           "  trellis.task { name = 'a', run = f } } }\n";
    struct run *r1 = start(h, src);
    struct run *r2 = start(h, src);
    struct run *r3 = start(h, src);
    struct run *r4 = start(h, src);
    turn(h);
    assert_int_equal(unanswered(h, "a"), 1);
    assert_int_equal(r2->state, TR_RUN_QUEUED);
    char why[320];
    assert_true(core_run_waiting(&h->core, r2, why, sizeof(why)));
    assert_non_null(strstr(why, "max_active_runs = 1"));
    assert_false(core_run_waiting(&h->core, r1, why, sizeof(why)));
    assert_int_equal(run_cancel(r3, "test"), 0);
    answer_all(h, NULL);
    assert_int_equal(r1->state, TR_RUN_SUCCEEDED);
    turn(h);
    assert_int_equal(r2->state, TR_RUN_RUNNING);
    assert_int_equal(r4->state, TR_RUN_QUEUED);
    char id2[40], id4[40];
    snprintf(id2, sizeof(id2), "%s", r2->id);
    snprintf(id4, sizeof(id4), "%s", r4->id);
    h_close(h);

    h_open(h);
    load(h, src);
    struct tr_error err;
    tr_error_init(&err);
    struct recovery *rv = NULL;
    bool stopping = false;
    struct recover_parts rp = {&h->core, &h->pipes, h->st, &h->loop, NULL, &stopping};
    assert_int_equal(recover_start(&rv, &rp, &err), 0);
    r2 = run_find(&h->core, id2);
    r4 = run_find(&h->core, id4);
    assert_non_null(r2);
    assert_non_null(r4);
    core_controls_tick(&h->core, tr_now());
    assert_true(r2->gate_counted);
    assert_true(r4->gate_waiting);
    worker(h, "w2", "cpu", 10);
    turn(h);
    assert_int_equal(unanswered(h, "a"), 1);
    answer_all(h, NULL);
    assert_int_equal(r2->state, TR_RUN_SUCCEEDED);
    turn(h);
    assert_int_equal(r4->state, TR_RUN_RUNNING);
    answer_all(h, NULL);
    assert_int_equal(r4->state, TR_RUN_SUCCEEDED);
    assert_int_equal(tr_hmap_count(&h->core.gates), 0);
}

/* A run past its pipeline's timeout fails `run_timeout`: the running task is
 * told to stop, the pending one cancelled. */
static void test_run_timeout(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 10);
    struct run *r = start(h, HEAD "return trellis.pipeline { name = 'slow', version = '1',\n"
                                  "  timeout = 30, tasks = {\n"
                                  "  trellis.task { name = 'a', run = f },\n"
                                  "  trellis.task { name = 'b', after = 'a', run = f } } }\n");
    turn(h);
    core_controls_tick(&h->core, tr_now() + 10);
    assert_int_equal(r->state, TR_RUN_RUNNING);
    core_controls_tick(&h->core, tr_now() + 31);
    assert_int_equal(r->state, TR_RUN_FAILED);
    assert_non_null(strstr(r->error, "run_timeout"));
    assert_int_equal(state_of(r, "a"), TR_TASK_CANCELLED);
    assert_int_equal(state_of(r, "b"), TR_TASK_CANCELLED);
    assert_int_equal(h->cnt.runs_timed_out, 1);
    turn(h);
    bool cancel_sent = false;
    for (size_t i = 0; i < h->n_sent; i++)
        cancel_sent |= h->sent[i].type == TR_MSG_CANCEL;
    assert_true(cancel_sent);
    assert_int_equal(count_tasks(h), 1);
}

/* Bad fields are refused at load with a message naming the task and field;
 * good ones cross the codec. */
static void test_fields(void **state)
{
    (void)state;
    static const struct
    {
        const char *body;
        const char *msg;
    } bad[] = {
        {"trellis.task { name = 't', labels = 'a', run = f }",
         "task 't': field 'labels' must be a table"},
        {"trellis.task { name = 't', labels = { zone = 1 }, run = f }",
         "task 't': labels.zone must be a string"},
        {"trellis.task { name = 't', labels = { 'a' }, run = f }",
         "field 'labels' must have string keys"},
        {"trellis.task { name = 't', concurrency = { key = 'k', limit = 0 }, run = f }",
         "concurrency.limit must be an integer from 1"},
        {"trellis.task { name = 't', concurrency = { limit = 2 }, run = f }",
         "needs both key and limit"},
        {"trellis.task { name = 't', concurrency = { key = 'k', limit = 2, x = 1 }, run = f }",
         "unknown field"},
        {"trellis.task { name = 't', concurrency = 4, run = f }",
         "field 'concurrency' must be a table"},
    };
    char src[1024];
    struct tr_error err;
    for (size_t i = 0; i < TR_ARRAY_LEN(bad); i++) {
        snprintf(src, sizeof(src), HEAD "return trellis.pipeline { name = 'p', tasks = { %s } }\n",
                 bad[i].body);
        assert_true(load_err(src, &err) < 0);
        if (strstr(err.msg, bad[i].msg) == NULL)
            fail_msg("case %zu: %s", i, err.msg);
        assert_non_null(strstr(err.msg, "bad.lua:"));  /* with the line */
    }
    const char *pbad[][2] = {{"timeout = -1", "field 'timeout' must be a finite number"},
                             {"timeout = 'x'", "field 'timeout' must be a finite number"},
                             {"max_active_runs = 0", "field 'max_active_runs' must be an integer"},
                             {"max_active_runs = 1.5", "field 'max_active_runs' must be an integer"}};
    for (size_t i = 0; i < TR_ARRAY_LEN(pbad); i++) {
        snprintf(src, sizeof(src), HEAD "return trellis.pipeline { name = 'p', %s, tasks = {\n"
                 "  trellis.task { name = 't', run = f } } }\n", pbad[i][0]);
        assert_true(load_err(src, &err) < 0);
        if (strstr(err.msg, pbad[i][1]) == NULL)
            fail_msg("pipeline case %zu: %s", i, err.msg);
    }

    const char *good =
        HEAD "return trellis.pipeline { name = 'p', timeout = 2.5, max_active_runs = 3,\n"
             "tasks = { trellis.task { name = 'x', run = f },\n"
             "  trellis.task { name = 't', labels = { zone = 'a', disk = 'ssd' },\n"
             "    concurrency = { key = 'k', limit = 4 }, run = f } } }\n";
    struct tr_pipeline_def *def = NULL;
    tr_error_init(&err);
    assert_int_equal(tr_pipeline_load(good, strlen(good), "good.lua", NULL, &def, &err), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(tr_pipeline_def_pack(&pk, def, false), 0);
    struct tr_pipeline_def *back = NULL;
    assert_int_equal(tr_pipeline_def_unpack(sb.data, sb.size, NULL, &back, NULL, &err), 0);
    msgpack_sbuffer_destroy(&sb);
    for (int k = 0; k < 2; k++) {
        const struct tr_pipeline_def *d = k ? back : def;
        assert_true(d->timeout == 2.5);
        assert_int_equal(d->max_active_runs, 3);
        assert_int_equal(d->tasks[0].n_labels, 0);
        assert_null(d->tasks[0].conc_key);
        const struct tr_task_def *t = &d->tasks[1];
        assert_int_equal(t->n_labels, 2);
        assert_string_equal(t->labels[0], "disk"); /* sorted by key */
        assert_string_equal(t->labels[1], "ssd");
        assert_string_equal(t->labels[2], "zone");
        assert_string_equal(t->labels[3], "a");
        assert_string_equal(t->conc_key, "k");
        assert_int_equal(t->conc_limit, 4);
    }
    tr_pipeline_def_free(def);
    tr_pipeline_def_free(back);
}

int main(void)
{
    tr_log_init("test", TR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_active_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_timeout, setup, teardown),
        cmocka_unit_test(test_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
