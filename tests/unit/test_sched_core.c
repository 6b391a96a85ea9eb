/*
 * test_sched_core.c - the scheduling core (scheduler/core.h) on SQLite state
 * in a temporary directory, with no ZeroMQ and no processes: readiness by
 * countdown, map fan-out, dispatch by pool and credit, priority, retries
 * with backoff, fencing and recovery.
 *
 * The harness puts the parts together as scheduler/sched.c does, with a
 * transport of its own that decodes and keeps every frame that would be
 * sent. Workers are registered through the fleet's functions and results
 * are handed to the core as decoded RESULT messages; turn() is the loop
 * turn's order (dispatch, commit, send). Timers are fired by calling
 * timers_run with a time past their due time, so nothing waits.
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
    struct sent sent[64];
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
/* Pipelines                                                             */
/* ===================================================================== */

static const char *diamond_src =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'diamond', version = '1', tasks = {\n"
    "  trellis.task { name = 'a', run = function(ctx) return 5 end },\n"
    "  trellis.task { name = 'b', after = { 'a' }, run = function(ctx, a) return a * 2 end },\n"
    "  trellis.task { name = 'c', after = { 'a' }, run = function(ctx, a) return a + 3 end },\n"
    "  trellis.task { name = 'd', after = { 'b', 'c' },\n"
    "                 run = function(ctx, b, c) return b + c end },\n"
    "} }\n";

/* ===================================================================== */
/* Tests                                                                 */
/* ===================================================================== */

/* a -> (b, c) -> d: each task is sent once its countdown reaches 0, with its
 * upstream outputs as arguments in declaration order. */
static void test_diamond_countdown(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 4);
    struct run *r = start(h, diamond_src);
    turn(h);
    assert_int_equal(count_tasks(h), 1);
    assert_true(find_task(h, "a", 0) >= 0);
    assert_int_equal(state_of(r, "b"), TR_TASK_PENDING);
    assert_int_equal(r->tasks[3].countdown, 2);

    answer(h, "a", 0, "\x05", 1, NULL);
    assert_int_equal(state_of(r, "a"), TR_TASK_SUCCEEDED);
    assert_int_equal(state_of(r, "b"), TR_TASK_READY);
    assert_int_equal(state_of(r, "c"), TR_TASK_READY);
    turn(h);
    assert_int_equal(count_tasks(h), 3);
    int b = find_task(h, "b", 0);
    assert_true(b >= 0);
    assert_int_equal(h->sent[b].args_len, 2);
    assert_memory_equal(h->sent[b].args, "\x91\x05", 2);

    answer(h, "b", 0, "\x0a", 1, NULL);
    assert_int_equal(r->tasks[3].countdown, 1);
    assert_int_equal(state_of(r, "d"), TR_TASK_PENDING);
    answer(h, "c", 0, "\x08", 1, NULL);
    assert_int_equal(state_of(r, "d"), TR_TASK_READY);
    turn(h);
    int d = find_task(h, "d", 0);
    assert_true(d >= 0);
    assert_int_equal(h->sent[d].args_len, 3);
    assert_memory_equal(h->sent[d].args, "\x92\x0a\x08", 3);

    answer(h, "d", 0, "\x12", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    assert_string_equal(r->output_json, "{\"d\":18}");
    assert_int_equal(h->finals, 1);
    turn(h);
    assert_false(batch_dirty(&h->batch));
    assert_int_equal(h->cnt.tasks_succeeded, 4);
}

/* A mapped task gets one instance per element of its source's output; its
 * dependant receives the array of their outputs. */
static void test_map_fanout(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    struct run *r = start(
        h, "local trellis = require 'trellis'\n"
           "return trellis.pipeline { name = 'mr', version = '1', tasks = {\n"
           "  trellis.task { name = 'split', run = function(ctx) return {1, 2, 3} end },\n"
           "  trellis.task { name = 'sq', map = 'split', run = function(ctx, n) return n end },\n"
           "  trellis.task { name = 'sum', after = { 'sq' }, run = function(ctx, l) end },\n"
           "} }\n");
    turn(h);
    answer(h, "split", 0, "\x93\x01\x02\x03", 4, NULL);
    assert_int_equal(r->tasks[1].n_inst, 3);
    turn(h);
    for (uint32_t i = 1; i <= 3; i++) {
        int k = find_task(h, "sq", i);
        assert_true(k >= 0);
        char want[2] = {(char)0x91, (char)i};
        assert_int_equal(h->sent[k].args_len, 2);
        assert_memory_equal(h->sent[k].args, want, 2);
    }
    answer(h, "sq", 2, "\x04", 1, NULL);
    answer(h, "sq", 1, "\x01", 1, NULL);
    assert_int_equal(state_of(r, "sum"), TR_TASK_PENDING);
    answer(h, "sq", 3, "\x09", 1, NULL);
    turn(h);
    int s = find_task(h, "sum", 0);
    assert_true(s >= 0);
    /* [[1, 4, 9]]: the map's outputs in element order, as a 32-bit array. */
    assert_int_equal(h->sent[s].args_len, 9);
    assert_memory_equal(h->sent[s].args, "\x91\xdd\x00\x00\x00\x03\x01\x04\x09", 9);
    answer(h, "sum", 0, "\x0e", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
}

/* Tasks go only to workers of their pool, and no worker holds more than its
 * credit (slots, with prefetch 0). */
static void test_pools_and_credit(void **state)
{
    struct h *h = *state;
    struct worker *wc = worker(h, "wc", "cpu", 1);
    struct worker *wg = worker(h, "wg", "gpu", 2);
    struct run *r = start(
        h, "local trellis = require 'trellis'\n"
           "local t = {}\n"
           "for i = 1, 3 do t[#t + 1] = trellis.task { name = 'c' .. i, run = function() end } "
           "end\n"
           "t[#t + 1] = trellis.task { name = 'g1', pool = 'gpu', run = function() end }\n"
           "return trellis.pipeline { name = 'pools', version = '1', tasks = t }\n");
    turn(h);
    assert_int_equal(count_tasks(h), 2);
    int g = find_task(h, "g1", 0);
    assert_true(g >= 0);
    assert_string_equal(h->sent[g].ident, "wg");
    assert_int_equal(wc->inflight, 1);
    assert_int_equal(wg->inflight, 1);
    assert_int_equal(dispatch_ready_count(&h->dispatch, "cpu", 3), 2);
    for (size_t i = 0; i < h->n_sent; i++) {
        if (h->sent[i].type == TR_MSG_TASK && h->sent[i].task[0] == 'c')
            assert_string_equal(h->sent[i].ident, "wc");
    }
    /* A result frees the credit: the next cpu task goes at the next turn. */
    for (int round = 0; round < 3; round++) {
        const char *name = NULL;
        for (size_t i = 0; i < h->n_sent && name == NULL; i++) {
            if (h->sent[i].type == TR_MSG_TASK && !h->sent[i].answered &&
                h->sent[i].task[0] == 'c')
                name = h->sent[i].task;
        }
        assert_non_null(name);
        answer(h, name, 0, "\xc0", 1, NULL);
        turn(h);
        assert_true(wc->inflight <= 1);
    }
    answer(h, "g1", 0, "\xc0", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    assert_int_equal(h->cnt.dispatched, 4);
}

/* GPU tasks get free devices of one worker and a free slot; one that does not
 * fit now waits in the scheduler (holding back later GPU tasks, not GPU-less
 * ones); devices come back with results and with a lost worker; a task asking
 * for more than any worker of its pool has is refused at submit. */
static void test_gpu_placement(void **state)
{
    struct h *h = *state;
    struct tr_msg_hello hello = {.worker_id = TR_STR("g1"), .pool = TR_STR("gpu"), .slots = 4,
                                 .gpus = 2, .version = TR_STR("test")};
    struct worker *w = fleet_hello(&h->fleet, "g1", 2, &hello);
    assert_non_null(w);
    assert_int_equal(w->g.n, 2);
    struct run *r = start(
        h, "local trellis = require 'trellis'\n"
           "local f = function() end\n"
           "return trellis.pipeline { name = 'gpus', version = '1', tasks = {\n"
           "  trellis.task { name = 'big1', pool = 'gpu', gpus = 2, run = f },\n"
           "  trellis.task { name = 'big2', pool = 'gpu', gpus = 2, run = f },\n"
           "  trellis.task { name = 'one', pool = 'gpu', gpus = 1, run = f },\n"
           "  trellis.task { name = 'light', pool = 'gpu', run = f },\n"
           "} }\n");
    turn(h);
    assert_true(find_task(h, "big1", 0) >= 0);
    assert_true(find_task(h, "light", 0) >= 0);   /* GPU-less: not held back */
    assert_int_equal(find_task(h, "big2", 0), -1); /* waits for devices... */
    assert_int_equal(find_task(h, "one", 0), -1);  /* ...and nothing passes it */
    assert_int_equal(w->g.busy, 3);
    assert_int_equal(inst_of(r, "big1", 0)->gpu_mask, 3);
    assert_int_equal(inst_of(r, "big2", 0)->state, TR_TASK_READY);
    assert_int_equal(dispatch_gpu_ready_count(&h->dispatch, "gpu", 3), 2);
    assert_int_equal(w->inflight, 2); /* the waiting ones hold no slot */
    char why[320];
    assert_true(dispatch_gpu_waiting(&h->dispatch, inst_of(r, "big2", 0), why, sizeof(why)));
    assert_string_equal(why, "for 2 free GPUs on a worker of pool 'gpu'");

    answer(h, "big1", 0, "\xc0", 1, NULL);
    assert_int_equal(w->g.busy, 0);
    turn(h);
    assert_true(find_task(h, "big2", 0) >= 0);
    assert_int_equal(find_task(h, "one", 0), -1);
    assert_int_equal(w->g.busy, 3);

    /* The worker is lost: its task goes back and waits for devices elsewhere. */
    for (size_t i = 0; i < h->n_sent; i++) /* TASKs to g1 are lost with it */
        if (strcmp(h->sent[i].ident, "g1") == 0)
            h->sent[i].answered = true;
    fleet_remove(&h->fleet, w, "test");
    assert_int_equal(inst_of(r, "big2", 0)->state, TR_TASK_READY);
    assert_int_equal(inst_of(r, "big2", 0)->gpu_mask, 0);
    assert_true(dispatch_gpu_waiting(&h->dispatch, inst_of(r, "big2", 0), why, sizeof(why)));
    assert_string_equal(why, "for a worker of pool 'gpu' with 2 GPUs (none connected)");
    /* Requeued, it queues again behind 'one' (as any requeued task). */
    hello.worker_id = TR_STR("g2");
    w = fleet_hello(&h->fleet, "g2", 2, &hello);
    turn(h);
    assert_true(find_task(h, "one", 0) >= 0);
    assert_int_equal(w->g.busy, 1);
    answer(h, "one", 0, "\xc0", 1, NULL);
    turn(h);
    assert_int_equal(w->g.busy, 3);
    answer(h, "big2", 0, "\xc0", 1, NULL);
    assert_int_equal(w->g.busy, 0);
    answer(h, "light", 0, "\xc0", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);

    /* Submit time: 3 GPUs on 2-GPU workers is refused, with the reason. */
    struct tr_error err;
    tr_error_init(&err);
    struct pipeline_entry *pe =
        load(h, "local trellis = require 'trellis'\n"
                "return trellis.pipeline { name = 'three', version = '1', tasks = {\n"
                "  trellis.task { name = 'x', pool = 'gpu', gpus = 3, run = function() end },\n"
                "} }\n");
    assert_int_equal(dispatch_gpu_check(&h->dispatch, pe->def, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "task 'x' asks for 3 GPUs, but no worker of pool 'gpu'"));
}

/* Among ready tasks of one pool, the highest priority is sent first. */
static void test_priority_order(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 1);
    start(h, "local trellis = require 'trellis'\n"
             "return trellis.pipeline { name = 'prio', version = '1', tasks = {\n"
             "  trellis.task { name = 'low', priority = 1, run = function() end },\n"
             "  trellis.task { name = 'high', priority = 10, run = function() end },\n"
             "  trellis.task { name = 'mid', priority = 5, run = function() end },\n"
             "  trellis.task { name = 'mid2', priority = 5, run = function() end },\n"
             "} }\n");
    const char *order[] = {"high", "mid", "mid2", "low"};
    for (size_t i = 0; i < 4; i++) {
        turn(h);
        assert_int_equal(count_tasks(h), i + 1);
        assert_string_equal(h->sent[h->n_sent - 1].task, order[i]);
        answer(h, order[i], 0, "\xc0", 1, NULL);
    }
}

/* A failed attempt waits in retry_wait until its backoff timer fires, then is
 * sent again as the next attempt; after the last retry the run fails. */
static void test_retry_backoff(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 1);
    struct run *r = start(
        h, "local trellis = require 'trellis'\n"
           "return trellis.pipeline { name = 'retry', version = '1', tasks = {\n"
           "  trellis.task { name = 'flaky', retries = 2, backoff = 30, run = function() end },\n"
           "  trellis.task { name = 'after', after = { 'flaky' }, run = function() end },\n"
           "} }\n");
    for (uint32_t attempt = 1; attempt <= 3; attempt++) {
        turn(h);
        int k = find_task(h, "flaky", 0);
        assert_true(k >= 0);
        assert_int_equal(h->sent[k].attempt, attempt);
        answer(h, "flaky", 0, NULL, 0, "boom");
        if (attempt == 3)
            break;
        assert_int_equal(state_of(r, "flaky"), TR_TASK_RETRY_WAIT);
        /* Not before its backoff (at least 30 s): nothing is sent now. */
        timers_run(&h->timers, mono_s());
        turn(h);
        assert_int_equal(find_task(h, "flaky", 0), -1);
        assert_int_equal(state_of(r, "flaky"), TR_TASK_RETRY_WAIT);
        timers_run(&h->timers, mono_s() + 3600);
        assert_int_equal(state_of(r, "flaky"), TR_TASK_READY);
    }
    assert_int_equal(state_of(r, "flaky"), TR_TASK_FAILED);
    assert_int_equal(state_of(r, "after"), TR_TASK_SKIPPED);
    assert_int_equal(r->state, TR_RUN_FAILED);
    assert_non_null(strstr(r->error, "boom"));
    assert_int_equal(h->cnt.tasks_retried, 2);
    assert_int_equal(inst_of(r, "flaky", 0)->attempts, 3);
}

/* Only the current dispatch may complete an instance: a result for an older
 * dispatch id, another epoch or another worker is refused and changes nothing. */
static void test_fencing(void **state)
{
    struct h *h = *state;
    struct worker *w1 = worker(h, "w1", "cpu", 1);
    struct run *r = start(h, diamond_src);
    turn(h);
    int k = find_task(h, "a", 0);
    struct sent first = h->sent[k];
    struct tr_msg_result m = {
        .id = first.id, .epoch = h->dispatch.epoch + 1, .attempt = 1, .ok = true,
        .output = {"\x05", 1},
    };
    core_on_result(&h->core, w1, &m); /* wrong epoch */
    assert_int_equal(h->cnt.dropped[DROP_STALE_RESULT], 1);
    assert_int_equal(state_of(r, "a"), TR_TASK_RUNNING);

    /* The worker is lost: its task is sent again, under a new dispatch id. */
    fleet_remove(&h->fleet, w1, "test");
    h->sent[k].answered = true; /* its answer will never come */
    assert_int_equal(state_of(r, "a"), TR_TASK_READY);
    struct worker *w2 = worker(h, "w2", "cpu", 1);
    turn(h);
    int k2 = find_task(h, "a", 0);
    assert_true(k2 >= 0 && k2 != k);
    assert_true(h->sent[k2].id != first.id);
    assert_int_equal(h->sent[k2].attempt, 2);

    m.epoch = h->dispatch.epoch;
    core_on_result(&h->core, w2, &m); /* the old id, from the new worker */
    assert_int_equal(h->cnt.dropped[DROP_STALE_RESULT], 2);
    m.attempt = 2;
    core_on_result(&h->core, w2, &m);
    assert_int_equal(h->cnt.dropped[DROP_STALE_RESULT], 3);
    assert_int_equal(state_of(r, "a"), TR_TASK_RUNNING);

    answer(h, "a", 0, "\x05", 1, NULL);
    assert_int_equal(h->cnt.dropped[DROP_STALE_RESULT], 3);
    assert_int_equal(state_of(r, "a"), TR_TASK_SUCCEEDED);
    /* The same result again is stale now: its dispatch has ended. */
    m.id = h->sent[k2].id;
    core_on_result(&h->core, w2, &m);
    assert_int_equal(h->cnt.dropped[DROP_STALE_RESULT], 4);
    assert_int_equal(h->cnt.tasks_succeeded, 1);
}

/* Results committed before a stop are kept: after reopening on the same
 * state, only the tasks without a durable result are ready again. */
static void test_recovery(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 4);
    struct run *r = start(h, diamond_src);
    char id[40];
    snprintf(id, sizeof(id), "%s", r->id);
    turn(h);
    answer(h, "a", 0, "\x05", 1, NULL);
    turn(h);
    answer(h, "b", 0, "\x0a", 1, NULL);
    turn(h); /* a and b are durable; c is in flight, d pending */
    answer(h, "c", 0, "\x08", 1, NULL); /* c's result is never committed */
    h_close(h);

    h_open(h);
    /* The graph is cached, so recovery needs no sandbox and ends at once. */
    load(h, diamond_src);
    struct tr_error err;
    tr_error_init(&err);
    struct recovery *rv = NULL;
    bool stopping = false;
    struct recover_parts rp = {&h->core, &h->pipes, h->st, &h->loop, NULL, &stopping};
    assert_int_equal(recover_start(&rv, &rp, &err), 0);
    assert_null(rv);
    r = run_find(&h->core, id);
    assert_non_null(r);
    assert_int_equal(state_of(r, "a"), TR_TASK_SUCCEEDED);
    assert_int_equal(state_of(r, "b"), TR_TASK_SUCCEEDED);
    assert_int_equal(state_of(r, "c"), TR_TASK_READY);
    assert_int_equal(state_of(r, "d"), TR_TASK_PENDING);
    worker(h, "w9", "cpu", 4);
    turn(h);
    assert_int_equal(count_tasks(h), 1);
    int k = find_task(h, "c", 0);
    assert_true(k >= 0);
    assert_memory_equal(h->sent[k].args, "\x91\x05", 2);
    answer(h, "c", 0, "\x08", 1, NULL);
    turn(h);
    answer(h, "d", 0, "\x12", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    assert_string_equal(r->output_json, "{\"d\":18}");
    turn(h);
}

int main(void)
{
    tr_log_init("test", TR_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_diamond_countdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_fanout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pools_and_credit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpu_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
