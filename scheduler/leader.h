/*
 * leader.h - which scheduler leads, and what a standby does meanwhile
 * (leader.c).
 *
 * Part "leader", above the core in the scheduler's order: it knows the fleet
 * (to register workers in etcd) and lib/state's coordination. Taking over
 * (sched_lead) and stopping belong to the scheduler above it and are
 * reached through the hooks given at open.
 */
#ifndef TR_SCHED_LEADER_H
#define TR_SCHED_LEADER_H

#include <uv.h>

#include "lib/base/error.h"
#include "lib/http/http_server.h"
#include "scheduler/config.h"
#include "scheduler/workers.h"

struct leader;

struct leader_hooks
{
    void *arg;
    /* Elected: take an epoch, recover, bind the worker port. 0 or a code. */
    int (*lead)(void *arg, uint64_t *epoch, struct tr_error *err);
    /* Leadership is lost for good, or taking over failed: stop with this code. */
    void (*stop)(void *arg, int exit_code);
};

int leader_open(struct leader **out, uv_loop_t *loop, const struct sched_config *cfg,
                const struct leader_hooks *hooks, struct tr_error *err) TR_MUST_CHECK;
/* After the API listens (api_port: its bound port): leads at once without
 * coordination, else campaigns and waits (bounded) for the first outcome.
 * *stopping is read while waiting (a signal arrived). */
int leader_start(struct leader *l, int api_port, const bool *stopping,
                 struct tr_error *err) TR_MUST_CHECK;
void leader_close(struct leader *l);
/* This process leads (always true without coordination). */
bool leader_acting(const struct leader *l);
/* "leader", "standby" or "stopping", for /healthz and /readyz. */
const char *leader_role_name(const struct leader *l);
/* May commit, dispatch and send now: leads, and the lease is known alive for a
 * third of its TTL more. Pauses (and resumes) with a log line. */
bool leader_may_act(struct leader *l);
/* The lease could not be confirmed in time: writes answer 503 meanwhile. */
bool leader_suspended(const struct leader *l);
void leader_worker_up(struct leader *l, const struct worker *w);
void leader_worker_down(struct leader *l, const struct worker *w);
/* The HTTP server's before hook (arg: the leader): a standby redirects every
 * non-probe call. */
bool leader_gate(struct tr_http_req *req, void *arg);
/* GET /readyz (arg: the leader). */
void leader_h_readyz(struct tr_http_req *req, void *arg);

#endif
