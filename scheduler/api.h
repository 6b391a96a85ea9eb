/*
 * api.h - the /v1 HTTP API, probes and /metrics (api.c, api_runs.c).
 *
 * Part "api", the highest working part of the scheduler's order: it reads
 * and drives the core, the loader, the fleet and leadership, and queues its
 * answers to writes in the batch (they are sent after the commit). Nothing
 * below calls it except through the core's run_final hook (api_run_final).
 */
#ifndef TR_SCHED_API_H
#define TR_SCHED_API_H

#include <uv.h>

#include "lib/http/http_server.h"
#include "lib/state/state.h"
#include "scheduler/batch.h"
#include "scheduler/config.h"
#include "scheduler/core.h"
#include "scheduler/leader.h"
#include "scheduler/loader.h"
#include "scheduler/metrics.h"

struct api
{
    /* The parts it works with, set by the caller before api_open. */
    uv_loop_t *loop;
    const struct sched_config *cfg;
    struct tr_state *state;
    struct pipes *pipes;
    struct batch *batch;
    struct fleet *fleet;
    struct dispatch *dispatch;
    struct core *core;
    struct leader *leader;
    struct metrics_src metrics;
    /* Its own. */
    struct fb_loop *fb;       /* the feedback loop (feedback.h) */
    struct trg_loop *trg;     /* its triggers (triggers.h) */
    struct budgets *bud;      /* budgets and provider quotas (budgets.h) */
    struct tr_http_server *http;
    struct auth *auth;        /* the tokens and their roles (auth.h) */
    struct audit_log *audit;  /* audit entries of the turn (audit.h) */
    struct tenants *tenants;  /* owners of names (tenants.h) */
    struct rc_loop *rc;       /* run control (runctl.h) */
};

int api_open(struct api *a, struct tr_error *err) TR_MUST_CHECK;
void api_close(struct api *a);
/* The core's run_final hook (arg: the api): answers the run's long-polls. */
void api_run_final(void *arg, struct run *r);
/* Answers every long-poll 503 (stopping). */
void api_waiters_close(struct api *a);
/* Writes answer 503: the last commit failed, or the leader lease is in doubt. */
bool api_writes_paused(const struct api *a);

/* Time as RFC 3339 UTC with milliseconds into out (at least 32 bytes); "" for 0. */
void fmt_time(double t, char *out, size_t size);
json_t *json_time(double t);

#endif
