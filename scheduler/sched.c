/*
 * sched.c - the scheduler put together (sched.h): the parts wired to each
 * other, the loop turn, taking over as leader, and the life cycle.
 */
#include "scheduler/sched.h"

#include <signal.h>
#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/audit.h"
#include "scheduler/budgets.h"
#include "scheduler/feedback.h"
#include "scheduler/loop_calls.h"
#include "scheduler/tenants.h"
#include "scheduler/runctl.h"
#include "scheduler/triggers.h"

/* ====================================================================== */
/* The loop turn                                                           */
/* ====================================================================== */

/*
 * The order of one turn, after the I/O callbacks have applied what arrived
 * (frames drained from the ROUTER, HTTP requests, due timers): schedule
 * everything that became ready, make the turn's changes durable in one
 * transaction, and only then send (TASK, CANCEL) and answer HTTP calls.
 * Sending first would let a dependant start on a result a crash could still
 * lose, or tell a client about a run that a restart would not know. The
 * whole order lives here, in one function, so that no part can reorder it.
 */
static void on_commit_retry(uv_timer_t *h);

/* About once a second, before the turn's commit so that what they change is
 * in it: run timeouts, runs waiting for max_active_runs, labelled tasks no
 * worker can take (core_controls.c, dispatch_place.c). */
static void run_controls_tick(struct sched *s)
{
    uint64_t now = uv_now(s->loop);
    if (now - s->last_controls_ms < 1000)
        return;
    s->last_controls_ms = now;
    double wall = tr_now();
    dispatch_place_check(&s->dispatch, wall);
    if (s->recovery == NULL)
        core_controls_tick(&s->core, wall);
}

static void end_of_turn(struct sched *s)
{
    /* A leader whose lease is in doubt, or a standby, neither commits nor
     * sends: another scheduler may be leading (leader.c). */
    if (!leader_may_act(s->leader))
        return;
    run_controls_tick(s);
    /* A turn stopped at its byte bound goes on at once, after this turn's
     * commit and sends, through the commit retry timer (nothing to retry:
     * the commit is not failing). */
    if (!s->batch.failing && dispatch_all(&s->dispatch))
        uv_timer_start(&s->commit_retry, on_commit_retry, 0, 0);
    if (batch_dirty(&s->batch) && batch_commit(&s->batch, s->state) < 0) {
        if (!uv_is_active((uv_handle_t *)&s->commit_retry))
            uv_timer_start(&s->commit_retry, on_commit_retry, 200, 0);
        return;
    }
    batch_send(&s->batch, zmq_router_transport(s->router));
    batch_reply(&s->batch);
    events_flush(&s->api.ev);
    if (s->core.n_finished_in_memory > s->cfg.keep_runs)
        runs_evict(&s->core);
    /* Pools nothing refers to are freed about once a second. */
    uint64_t now = uv_now(s->loop);
    if (now - s->last_sweep_ms >= 1000) {
        s->last_sweep_ms = now;
        dispatch_sweep(&s->dispatch);
    }
}

static void on_prepare(uv_prepare_t *h)
{
    end_of_turn(h->data);
}

static void on_check(uv_check_t *h)
{
    end_of_turn(h->data);
}

static void on_commit_retry(uv_timer_t *h)
{
    struct sched *s = h->data;
    if (!leader_may_act(s->leader))
        return;
    if (batch_dirty(&s->batch) && batch_commit(&s->batch, s->state) < 0) {
        uv_timer_start(&s->commit_retry, on_commit_retry, 200, 0);
        return;
    }
    end_of_turn(s);
}

/* ====================================================================== */
/* Hooks: how lower parts reach higher ones                                */
/* ====================================================================== */

static void on_worker_up(void *arg, struct worker *w)
{
    struct sched *s = arg;
    leader_worker_up(s->leader, w);
}

static void on_worker_down(void *arg, struct worker *w)
{
    struct sched *s = arg;
    leader_worker_down(s->leader, w);
    core_worker_down(&s->core, w);
    bud_worker_down(&s->api, w); /* its LLM calls' reservations are released */
}

/* Takes an epoch, recovers unfinished runs and binds the worker port: what a
 * scheduler does once it leads (leader.c calls it). */
static int sched_lead(void *arg, uint64_t *epoch, struct tr_error *err)
{
    struct sched *s = arg;
    int rc = tr_state_next_epoch(s->state, epoch);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot read the scheduler epoch from the state");
    s->dispatch.epoch = *epoch;
    fb_reset(&s->api);
    tenants_reset(&s->api);
    struct recover_parts rp = {&s->core, &s->pipes, s->state, s->loop, s->leader, &s->stopping};
    rc = recover_start(&s->recovery, &rp, err);
    if (rc < 0)
        return rc;
    rc = zmq_router_open(&s->router, s->loop, &s->cfg, &s->cnt, core_on_message, &s->core, err);
    if (rc < 0)
        return rc;
    struct transport *tp = zmq_router_transport(s->router);
    s->core.tp = tp;
    fleet_start(&s->fleet, s->loop, tp, *epoch);
    rc = trg_lead(&s->api, err);
    if (rc == 0)
        rc = bud_lead(&s->api, err);
    if (rc < 0)
        return rc;
    /* With a shared state, statistics written by anyone drive the triggers. */
    rc = leader_watch_stats(s->leader, trg_on_stats, &s->api);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot watch the feedback statistics: %s",
                            tr_strerror(rc));
    tr_info("scheduler leads epoch=%llu workers=%s", (unsigned long long)*epoch, s->cfg.listen);
    return 0;
}

static void sched_stop(void *arg, int exit_code)
{
    struct sched *s = arg;
    s->exit_code = exit_code;
    s->stopping = true;
    uv_stop(s->loop);
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

static void on_signal(uv_signal_t *h, int signum)
{
    struct sched *s = h->data;
    tr_info("signal %d: stopping", signum);
    s->stopping = true;
    uv_stop(s->loop);
}

/* Every part's init, lowest first; none can fail, so sched_close may always run. */
static void parts_init(struct sched *s)
{
    pipes_init(&s->pipes, s->loop);
    batch_init(&s->batch, &s->cnt);
    timers_init(&s->timers, s->loop, core_timer_fire, &s->core);
    struct fleet_hooks fh = {.arg = s, .up = on_worker_up, .down = on_worker_down};
    fleet_init(&s->fleet, s->cfg.heartbeat_ms, &fh);
    s->fleet.cnt = &s->cnt;
    s->fleet.max_slots = s->cfg.max_slots;
    struct dispatch_hooks dh = core_dispatch_hooks;
    dh.arg = &s->core;
    dh.tenant_arg = &s->api; /* workers whose key is restricted to a tenant */
    dh.tenant = api_run_tenant;
    dh.gate = bud_gate; /* tasks of a provider out of quota wait here, not in a worker slot */
    dh.gate_arg = &s->api;
    dispatch_init(&s->dispatch, &s->cfg, &s->fleet, &s->batch, &s->timers, &s->cnt, &dh);
    struct core_parts cp = {
        .pipes = &s->pipes,
        .batch = &s->batch,
        .dispatch = &s->dispatch,
        .fleet = &s->fleet,
        .timers = &s->timers,
        .cnt = &s->cnt,
    };
    struct core_hooks ch = {.arg = &s->api, .run_final = api_run_final, .call = api_on_call,
                            .guard_blocked = api_guard_blocked};
    core_init(&s->core, &cp, s->cfg.keep_runs, &ch);
    obs_init(&s->obs);
    s->core.obs = &s->obs;
}

/* The feedback loop's records go into the turn's transaction. */
static bool fb_dirty_hook(void *arg)
{
    return fb_have_dirty(arg) || trg_have_dirty(arg) || audit_have_dirty(arg) ||
           tenants_have_dirty(arg) || rc_have_dirty(arg) || bud_have_dirty(arg);
}

static int fb_put_hook(void *arg, struct tr_state *st)
{
    (void)st; /* the api's state */
    int rc = fb_put_dirty(arg);
    /* After the feedback: triggers note which statistics this batch changes.
     * Firings go with the runs they start: one transaction. */
    if (rc == 0)
        rc = trg_put_dirty(arg);
    if (rc == 0)
        rc = tenants_put_dirty(arg);
    if (rc == 0)
        rc = rc_put_dirty(arg); /* run control (runctl.h) */
    if (rc == 0)
        rc = bud_put_dirty(arg); /* budgets (budgets.h) */
    return rc == 0 ? audit_put_dirty(arg) : rc; /* the entries go with their changes */
}

static void fb_committed_hook(void *arg)
{
    fb_committed(arg);
    trg_committed(arg); /* evaluates the triggers whose statistics are now durable */
    audit_committed(arg);
    tenants_committed(arg);
    rc_committed(arg);
    bud_committed(arg);
}

/* The parts the API and the feedback loop work with (the state is open). */
static void api_wire(struct sched *s)
{
    struct api *a = &s->api;
    a->loop = s->loop;
    a->cfg = &s->cfg;
    a->state = s->state;
    a->pipes = &s->pipes;
    a->batch = &s->batch;
    a->fleet = &s->fleet;
    a->dispatch = &s->dispatch;
    a->core = &s->core;
    a->metrics = (struct metrics_src){&s->cnt, &s->core, &s->fleet, &s->dispatch, NULL,
                                      &s->router};
    events_init(&a->ev, s->loop, &s->core, s->state, &s->dispatch.epoch, s->cfg.max_sse,
                s->cfg.sse_queue_bytes);
    struct batch_extra x = {a, fb_dirty_hook, fb_put_hook, fb_committed_hook};
    batch_set_extra(&s->batch, &x);
}

static int api_start(struct sched *s, struct tr_error *err)
{
    s->api.leader = s->api.metrics.leader = s->leader;
    return api_open(&s->api, err);
}

int sched_open(struct sched *s, uv_loop_t *loop, const struct sched_config *cfg,
               struct tr_error *err)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = *cfg;
    srand((unsigned)tr_mono_ns());
    parts_init(s);

    uv_timer_init(loop, &s->commit_retry);
    s->commit_retry.data = s;
    uv_prepare_init(loop, &s->turn);
    s->turn.data = s;
    uv_prepare_start(&s->turn, on_prepare);
    uv_check_init(loop, &s->turn_check);
    s->turn_check.data = s;
    uv_check_start(&s->turn_check, on_check);
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    s->handles_open = true;

    int orc = obs_open_traces(&s->obs, loop, cfg->otlp_endpoint);
    if (orc < 0)
        return tr_error_set(err, orc, "cannot start the span exporter");

    /* Before the election: a leader's recovery reads pipelines through it. */
    struct sandbox_config sc = {
        .exe = "/proc/self/exe", /* this very binary, even if its file was replaced */
        .limits = cfg->limits,
        .warm = 2,
        .max = 16,
        .grace_s = 0.5,
    };
    int rc = sandbox_open(loop, &sc, &s->sandbox, err);
    if (rc < 0)
        return rc;
    s->pipes.sandbox = s->sandbox;

    rc = tr_state_open(cfg->state_url, &s->state, err);
    if (rc < 0)
        return rc;
    s->core.state = s->state;
    api_wire(s);
    rc = webhooks_open(&s->api.wh, loop, s->cfg.webhooks.items, s->cfg.webhooks.n,
                       s->cfg.webhook_secret_file, err);
    if (rc < 0)
        return rc;
    s->api.ev.wh = &s->api.wh;
    rc = fb_open(&s->api, err);
    if (rc == 0)
        rc = trg_open(&s->api, err);
    if (rc == 0)
        rc = rc_open(&s->api, err);
    if (rc == 0)
        rc = bud_open(&s->api, err);
    if (rc < 0)
        return rc;

    /* The election's first outcome comes before the API listens (leader.c),
     * unless the API port is picked at random: then it must be bound first to
     * be advertised. */
    struct leader_hooks lh = {.arg = s, .lead = sched_lead, .stop = sched_stop};
    rc = leader_open(&s->leader, loop, &s->cfg, &lh, err);
    if (rc == 0 && cfg->api_port == 0 && cfg->advertise_api == NULL)
        rc = api_start(s, err);
    if (rc == 0)
        rc = leader_start(s->leader,
                          s->api.http ? tr_http_server_port(s->api.http) : cfg->api_port,
                          &s->stopping, err);
    if (rc == 0 && s->api.http == NULL)
        rc = api_start(s, err);
    if (rc < 0)
        return rc;
    tr_info("scheduler ready role=%s api=%s:%d workers=%s state=%s",
            leader_role_name(s->leader), cfg->api_host, tr_http_server_port(s->api.http),
            cfg->listen, cfg->state_url);
    return 0;
}

void sched_close(struct sched *s)
{
    s->stopping = true;
    s->pipes.stopping = true;
    /* Whatever is still dirty gets one last chance to become durable. When
     * it cannot (the commit fails, or leadership was lost), the answers that
     * waited for that commit must not claim a change that was never kept. */
    bool kept = !batch_dirty(&s->batch);
    if (!kept && s->state && leader_may_act(s->leader) &&
        batch_commit(&s->batch, s->state) == 0) {
        batch_send(&s->batch, zmq_router_transport(s->router));
        kept = true;
    }
    if (!kept)
        batch_refuse(&s->batch);
    batch_reply(&s->batch);
    api_waiters_close(&s->api);
    api_close(&s->api);
    events_release(&s->api.ev);
    webhooks_close(&s->api.wh);
    /* Pending loads are answered (cancelled) while the runs and caches they
     * would touch still exist; the children are killed and reaped later. */
    sandbox_close(s->sandbox);
    s->sandbox = s->pipes.sandbox = NULL;
    recover_close(s->recovery);
    trg_close(&s->api); /* after sandbox_close: its cancelled answers found it */
    dispatch_release(&s->dispatch);
    fleet_release(&s->fleet);
    s->core.tp = NULL;
    zmq_router_close(s->router);
    s->router = NULL;
    leader_close(s->leader);
    s->leader = NULL;
    fb_close(&s->api);
    rc_close(&s->api);
    bud_close(&s->api);
    core_release(&s->core);
    obs_release(&s->obs); /* sends the spans still queued */
    pipes_release(&s->pipes);
    batch_release(&s->batch);
    counters_release(&s->cnt);
    if (s->handles_open) {
        timers_release(&s->timers);
        uv_close((uv_handle_t *)&s->commit_retry, NULL);
        uv_close((uv_handle_t *)&s->turn, NULL);
        uv_close((uv_handle_t *)&s->turn_check, NULL);
        uv_close((uv_handle_t *)&s->sigint, NULL);
        uv_close((uv_handle_t *)&s->sigterm, NULL);
        s->handles_open = false;
    }
    tr_state_close(s->state);
    s->state = NULL;
}
