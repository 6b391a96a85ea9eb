/*
 * sched_harness.h - the scheduling core's parts put together on SQLite state
 * in a temporary directory, with a transport that captures what would be
 * sent (as in test_sched_core.c, whose harness this copies), for unit tests
 * that include it once.
 */
#ifndef TR_TEST_SCHED_HARNESS_H
#define TR_TEST_SCHED_HARNESS_H

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
    struct sent sent[256];
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

static inline size_t count_tasks(struct h *h)
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

#endif
