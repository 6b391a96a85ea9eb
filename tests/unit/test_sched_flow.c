/*
 * test_sched_flow.c - control flow in the scheduling core (core_flow.c):
 * trigger rules over a table of cases, trellis.skip, approvals (approve,
 * reject, timeout, restart) and subruns (success, failure, cancel, restart).
 * No worker process: results are handed to the core as a worker would send them.
 */
#include "tests/unit/sched_harness.h"

#include "scheduler/core_flow.h"

/* Answers task[index] with trellis.skip(reason). */
static void answer_skip(struct h *h, const char *task, uint32_t index, const char *reason)
{
    int i = find_task(h, task, index);
    assert_true(i >= 0);
    struct sent *s = &h->sent[i];
    struct worker *w = fleet_find(&h->fleet, s->ident, strlen(s->ident));
    struct tr_msg_result m = {
        .id = s->id, .epoch = h->dispatch.epoch, .attempt = s->attempt, .ok = false,
        .skipped = true, .error = tr_str_c(reason), .started_at = tr_now(),
        .finished_at = tr_now(),
    };
    s->answered = true;
    core_on_result(&h->core, w, &m);
}

enum outcome { OK, FAIL, SKIP };

static void answer_as(struct h *h, const char *task, enum outcome o)
{
    if (o == OK)
        answer(h, task, 0, "\x05", 1, NULL);
    else if (o == FAIL)
        answer(h, task, 0, NULL, 0, "boom");
    else
        answer_skip(h, task, 0, "nothing to do");
}

/* u1, u2 -> d with a trigger rule: what d becomes, and the run with it. */
struct rule_case
{
    const char *rule;
    enum outcome u1, u2;      /* answered in this order */
    int d;                    /* FLOW_RUN, FLOW_SKIP or FLOW_UPSTREAM_FAILED */
    uint8_t run;              /* the run's final state (d succeeds when it runs) */
};

static const struct rule_case rule_cases[] = {
    {"all_success", OK, OK, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"all_success", OK, SKIP, FLOW_SKIP, TR_RUN_SUCCEEDED},
    {"all_success", OK, FAIL, FLOW_UPSTREAM_FAILED, TR_RUN_FAILED},
    {"all_success", FAIL, SKIP, FLOW_UPSTREAM_FAILED, TR_RUN_FAILED},
    {"all_done", OK, FAIL, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"all_done", SKIP, SKIP, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"all_done", FAIL, FAIL, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"one_success", FAIL, OK, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"one_success", OK, FAIL, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"one_success", FAIL, SKIP, FLOW_UPSTREAM_FAILED, TR_RUN_FAILED},
    {"one_success", SKIP, SKIP, FLOW_SKIP, TR_RUN_SUCCEEDED},
    {"none_failed", OK, SKIP, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"none_failed", SKIP, SKIP, FLOW_RUN, TR_RUN_SUCCEEDED},
    {"none_failed", OK, FAIL, FLOW_UPSTREAM_FAILED, TR_RUN_FAILED},
};

static void test_trigger_rules(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    for (size_t i = 0; i < TR_ARRAY_LEN(rule_cases); i++) {
        const struct rule_case *c = &rule_cases[i];
        char src[600];
        snprintf(src, sizeof(src),
                 "local trellis = require 'trellis'\n"
                 "return trellis.pipeline { name = 'rules%zu', tasks = {\n"
                 "  trellis.task { name = 'u1', run = function() end },\n"
                 "  trellis.task { name = 'u2', run = function() end },\n"
                 "  trellis.task { name = 'd', after = { 'u1', 'u2' }, trigger_rule = '%s',\n"
                 "                 run = function() end },\n"
                 "} }\n", i, c->rule);
        struct run *r = start(h, src);
        turn(h);
        answer_as(h, "u1", c->u1);
        answer_as(h, "u2", c->u2);
        struct inst *d = inst_of(r, "d", 0);
        print_message("case %zu: %s %d %d\n", i, c->rule, c->u1, c->u2);
        if (c->d == FLOW_RUN) {
            assert_int_equal(d->state, TR_TASK_READY);
            turn(h);
            int k = find_task(h, "d", 0);
            assert_true(k >= 0);
            /* Upstream outputs, nil for the ones that did not succeed. */
            char want[3] = {(char)0x92, c->u1 == OK ? 5 : (char)0xc0,
                            c->u2 == OK ? 5 : (char)0xc0};
            assert_memory_equal(h->sent[k].args, want, 3);
            answer(h, "d", 0, "\x01", 1, NULL);
        } else {
            assert_int_equal(d->state, TR_TASK_SKIPPED);
            assert_int_equal(d->upstream_failed, c->d == FLOW_UPSTREAM_FAILED);
            assert_non_null(d->error);
        }
        assert_int_equal(r->state, c->run);
        if (c->run == TR_RUN_FAILED)
            assert_non_null(strstr(r->error, "boom"));
        turn(h);
    }
}

/* trellis.skip: the task ends skipped with its reason, all_success dependants
 * are skipped, the run succeeds; a skipped map element passes nil. */
static void test_skip(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    struct run *r = start(h, "local trellis = require 'trellis'\n"
                             "return trellis.pipeline { name = 'skips', tasks = {\n"
                             "  trellis.task { name = 'a', run = function() end },\n"
                             "  trellis.task { name = 'b', after = 'a', run = function() end },\n"
                             "  trellis.task { name = 'c', after = 'b', run = function() end },\n"
                             "  trellis.task { name = 'l', run = function() end },\n"
                             "  trellis.task { name = 'm', map = 'l', run = function() end },\n"
                             "  trellis.task { name = 'n', after = 'm', run = function() end },\n"
                             "} }\n");
    turn(h);
    answer_skip(h, "a", 0, "no input today");
    assert_int_equal(state_of(r, "a"), TR_TASK_SKIPPED);
    assert_string_equal(inst_of(r, "a", 0)->error, "no input today");
    assert_int_equal(state_of(r, "b"), TR_TASK_SKIPPED);
    assert_int_equal(state_of(r, "c"), TR_TASK_SKIPPED);
    assert_false(inst_of(r, "c", 0)->upstream_failed);
    answer(h, "l", 0, "\x92\x01\x02", 3, NULL);
    turn(h);
    answer(h, "m", 1, "\x0b", 1, NULL);
    answer_skip(h, "m", 2, "odd one");
    turn(h);
    int k = find_task(h, "n", 0);
    assert_true(k >= 0);
    assert_memory_equal(h->sent[k].args, "\x91\xdd\0\0\0\x02\x0b\xc0", 8);
    answer(h, "n", 0, "\x01", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    assert_string_equal(r->output_json, "{\"c\":null,\"n\":1}");
    turn(h);
}

static const char *approval_src =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'gated', tasks = {\n"
    "  trellis.task { name = 'a', run = function() return 5 end },\n"
    "  trellis.approval { name = 'gate', after = 'a', timeout = 600 },\n"
    "  trellis.task { name = 'b', after = 'gate', run = function(ctx, g) return g end },\n"
    "} }\n";

/* Approve: the decision is the gate's output; reject fails it and skips b. */
static void test_approval(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    struct tr_error err;
    tr_error_init(&err);
    struct run *r = start(h, approval_src);
    turn(h);
    assert_int_equal(flow_approval_decide(&h->core, r->id, "gate", true, NULL, "x", &err),
                     TR_ECONFLICT); /* not reached yet */
    answer(h, "a", 0, "\x05", 1, NULL);
    turn(h);
    struct inst *gate = inst_of(r, "gate", 0);
    assert_int_equal(gate->state, TR_TASK_RUNNING);
    assert_true(gate->waiting);
    assert_int_equal(find_task(h, "gate", 0), -1); /* never sent to a worker */
    assert_int_equal(flow_approval_decide(&h->core, r->id, "a", true, NULL, "x", &err),
                     TR_EINVAL);
    assert_int_equal(flow_approval_decide(&h->core, r->id, "nope", true, NULL, "x", &err),
                     TR_ENOENT);
    assert_int_equal(flow_approval_decide(&h->core, r->id, "gate", true, "looks good", "ann",
                                          &err), 0);
    assert_int_equal(gate->state, TR_TASK_SUCCEEDED);
    assert_int_equal(flow_approval_decide(&h->core, r->id, "gate", true, NULL, "x", &err),
                     TR_ECONFLICT); /* decided */
    turn(h);
    answer(h, "b", 0, gate->output, gate->output_len, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    assert_non_null(strstr(r->output_json, "\"decision\":\"approve\""));
    assert_non_null(strstr(r->output_json, "\"comment\":\"looks good\""));
    assert_non_null(strstr(r->output_json, "\"user\":\"ann\""));
    turn(h);

    r = start(h, approval_src);
    turn(h);
    answer(h, "a", 0, "\x05", 1, NULL);
    assert_int_equal(flow_approval_decide(&h->core, r->id, "gate", false, "no", "bob", &err), 0);
    assert_int_equal(state_of(r, "gate"), TR_TASK_FAILED);
    assert_int_equal(state_of(r, "b"), TR_TASK_SKIPPED);
    assert_int_equal(r->state, TR_RUN_FAILED);
    assert_non_null(strstr(r->error, "rejected by bob: no"));
    turn(h);
}

/* The default decision applies at the timeout: reject unless the pipeline says approve. */
static void test_approval_timeout(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    for (int approve = 0; approve <= 1; approve++) {
        char src[500];
        snprintf(src, sizeof(src),
                 "local trellis = require 'trellis'\n"
                 "return trellis.pipeline { name = 'timed%d', tasks = {\n"
                 "  trellis.approval { name = 'gate', timeout = 30%s },\n"
                 "} }\n", approve, approve ? ", default = 'approve'" : "");
        struct run *r = start(h, src);
        turn(h);
        assert_int_equal(state_of(r, "gate"), TR_TASK_RUNNING);
        timers_run(&h->timers, mono_s()); /* not yet */
        assert_int_equal(state_of(r, "gate"), TR_TASK_RUNNING);
        timers_run(&h->timers, mono_s() + 31);
        assert_int_equal(state_of(r, "gate"), approve ? TR_TASK_SUCCEEDED : TR_TASK_FAILED);
        assert_int_equal(r->state, approve ? TR_RUN_SUCCEEDED : TR_RUN_FAILED);
        if (approve)
            assert_non_null(strstr(r->output_json, "\"user\":\"timeout\""));
        else
            assert_non_null(strstr(r->error, "rejected by timeout"));
        turn(h);
    }
}

static void recover_now(struct h *h)
{
    struct tr_error err;
    tr_error_init(&err);
    struct recovery *rv = NULL;
    bool stopping = false;
    struct recover_parts rp = {&h->core, &h->pipes, h->st, &h->loop, NULL, &stopping};
    assert_int_equal(recover_start(&rv, &rp, &err), 0);
    assert_null(rv);
}

/* A waiting approval survives a restart with its start (so its deadline) kept. */
static void test_approval_restart(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    struct run *r = start(h, approval_src);
    char id[40];
    snprintf(id, sizeof(id), "%s", r->id);
    turn(h);
    answer(h, "a", 0, "\x05", 1, NULL);
    turn(h);
    double started = inst_of(r, "gate", 0)->started_at;
    h_close(h);

    h_open(h);
    load(h, approval_src);
    recover_now(h);
    r = run_find(&h->core, id);
    assert_non_null(r);
    struct inst *gate = inst_of(r, "gate", 0);
    assert_int_equal(gate->state, TR_TASK_RUNNING);
    assert_true(gate->waiting);
    assert_true(gate->started_at == started);
    struct tr_error err;
    tr_error_init(&err);
    assert_int_equal(flow_approval_decide(&h->core, id, "gate", true, NULL, "ann", &err), 0);
    worker(h, "w2", "cpu", 8);
    turn(h);
    assert_true(find_task(h, "b", 0) >= 0);
    answer(h, "b", 0, "\x01", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    turn(h);
}

static const char *child_src =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'child', version = '1', params = { q = 0 }, tasks = {\n"
    "  trellis.task { name = 'c1', run = function(ctx) return ctx.params.q end },\n"
    "} }\n";

static const char *parent_src =
    "local trellis = require 'trellis'\n"
    "return trellis.pipeline { name = 'parent', tasks = {\n"
    "  trellis.task { name = 'a', run = function() return 1 end },\n"
    "  trellis.subrun { name = 'sub', pipeline = 'child@1', after = 'a',\n"
    "                   params = function(ctx, a) return { q = a } end },\n"
    "  trellis.task { name = 'b', after = 'sub', run = function(ctx, s) return s end },\n"
    "} }\n";

static void register_child(struct h *h)
{
    struct pipeline_entry *pe = load(h, child_src);
    assert_int_equal(batch_add_pipeline(&h->batch, pe), 0);
    assert_int_equal(batch_add_source(&h->batch, pe), 0);
    turn(h);
}

/* Runs the parent up to its child's start; returns the child. */
static struct run *parent_to_child(struct h *h, struct run *r)
{
    turn(h);
    answer(h, "a", 0, "\x01", 1, NULL);
    turn(h);
    answer(h, "sub", 0, "\x81\xa1q\x07", 4, NULL); /* the params function's {q = 7} */
    struct inst *sub = inst_of(r, "sub", 0);
    assert_int_equal(sub->state, TR_TASK_RUNNING);
    assert_true(sub->waiting);
    assert_non_null(sub->worker_id);
    struct run *child = run_find(&h->core, sub->worker_id);
    assert_non_null(child);
    assert_string_equal(child->parent_run, r->id);
    assert_string_equal(child->parent_task, "sub");
    assert_non_null(strstr(child->params_json, "\"q\":7"));
    turn(h);
    return child;
}

static void test_subrun(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    register_child(h);

    /* Success: the child's output is the task's. */
    struct run *r = start(h, parent_src);
    struct run *child = parent_to_child(h, r);
    answer(h, "c1", 0, "\x07", 1, NULL);
    assert_int_equal(child->state, TR_RUN_SUCCEEDED);
    assert_int_equal(state_of(r, "sub"), TR_TASK_SUCCEEDED);
    turn(h);
    int k = find_task(h, "b", 0);
    assert_true(k >= 0);
    assert_memory_equal(h->sent[k].args, "\x91\x81\xa2\x63\x31\x07", 6); /* [{c1 = 7}] */
    answer(h, "b", 0, "\x01", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    turn(h);

    /* Failure: a failed child fails the task. */
    r = start(h, parent_src);
    child = parent_to_child(h, r);
    answer(h, "c1", 0, NULL, 0, "child broke");
    assert_int_equal(state_of(r, "sub"), TR_TASK_FAILED);
    assert_non_null(strstr(inst_of(r, "sub", 0)->error, "child broke"));
    assert_int_equal(r->state, TR_RUN_FAILED);
    turn(h);

    /* Cancel: cancelling the parent cancels the child. */
    r = start(h, parent_src);
    child = parent_to_child(h, r);
    assert_int_equal(run_cancel(r, "enough"), 0);
    assert_int_equal(child->state, TR_RUN_CANCELLED);
    assert_non_null(strstr(child->error, "enough"));
    turn(h);

    /* An unknown pipeline is an error when the task runs. */
    r = start(h, "local trellis = require 'trellis'\n"
                 "return trellis.pipeline { name = 'lost', tasks = {\n"
                 "  trellis.subrun { name = 'sub', pipeline = 'nope' },\n"
                 "} }\n");
    turn(h);
    answer(h, "sub", 0, "\xc0", 1, NULL);
    assert_int_equal(state_of(r, "sub"), TR_TASK_FAILED);
    assert_non_null(strstr(r->error, "no registered pipeline 'nope'"));
    turn(h);
}

/* After a restart the parent waits for the same child: no second child. */
static void test_subrun_restart(void **state)
{
    struct h *h = *state;
    worker(h, "w1", "cpu", 8);
    register_child(h);
    struct run *r = start(h, parent_src);
    char id[40], cid[40];
    snprintf(id, sizeof(id), "%s", r->id);
    struct run *child = parent_to_child(h, r);
    snprintf(cid, sizeof(cid), "%s", child->id);
    uint32_t runs = (uint32_t)tr_hmap_count(&h->core.runs);
    h_close(h);

    h_open(h);
    load(h, child_src);
    load(h, parent_src);
    recover_now(h);
    assert_int_equal(tr_hmap_count(&h->core.runs), runs);
    r = run_find(&h->core, id);
    child = run_find(&h->core, cid);
    assert_non_null(r);
    assert_non_null(child);
    assert_true(inst_of(r, "sub", 0)->waiting);
    assert_string_equal(inst_of(r, "sub", 0)->worker_id, cid);
    assert_ptr_equal(child->parent_inst, inst_of(r, "sub", 0));
    worker(h, "w2", "cpu", 8);
    turn(h);
    answer(h, "c1", 0, "\x07", 1, NULL);
    assert_int_equal(state_of(r, "sub"), TR_TASK_SUCCEEDED);
    turn(h);
    answer(h, "b", 0, "\x01", 1, NULL);
    assert_int_equal(r->state, TR_RUN_SUCCEEDED);
    turn(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trigger_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subrun, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subrun_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
