/*
 * budgets.h - what tenants and runs may spend on LLM calls, and the
 * providers' request and token quotas shared by every worker
 * (docs/budgets.md).
 *
 * Before a call leaves a worker, the worker reserves its worst case (prompt
 * estimate + max_tokens, priced) here, over the worker protocol: one CALL
 * with op "budget" and dispatch 0 carries every reservation, settlement and
 * rate-limit report of one turn of the worker's loop, and one CALL_REPLY
 * answers all of its reservations. The scheduler's single loop makes the
 * check exact: however many calls race, spent + reserved never passes a
 * limit. Settled with the real usage after the call; the reservations of a
 * worker that went away, or of a run that ended, are released.
 *
 * Spent is durable: a tenant changed in a turn is written in that turn's
 * group commit as spent + reserved, before the reservation's answer leaves
 * (a crash can count a reservation as spent, never forget a spend).
 *
 * Part of the api layer. Loop thread only.
 */
#ifndef TR_SCHED_BUDGETS_H
#define TR_SCHED_BUDGETS_H

#include "lib/http/http_server.h"
#include "lib/wire/proto.h"

struct api;
struct inst;
struct run;
struct worker;

/* The op of the batched budget CALL. */
#define BUD_CALL_OP "budget"
/* Most reservations outstanding at once; more are refused (budget_unavailable). */
#define BUD_RESERVATIONS_MAX (1u << 20)
/* Tenants with a budget or a spend; more are refused. */
#define BUD_TENANTS_MAX 100000u

int bud_open(struct api *a, struct tr_error *err) TR_MUST_CHECK;
void bud_close(struct api *a);
/* Reads the budgets from the state (on taking the lead); reservations restart empty. */
int bud_lead(struct api *a, struct tr_error *err) TR_MUST_CHECK;

/* The batch's extra hooks: tenants changed in this turn are written in its commit. */
bool bud_have_dirty(struct api *a);
int bud_put_dirty(struct api *a) TR_MUST_CHECK;
void bud_committed(struct api *a);

/* A batched budget CALL (op BUD_CALL_OP) from worker w. Never fails: a refusal is an
 * error reply. */
void bud_on_call(struct api *a, struct worker *w, const struct tr_msg_call *m);
/* Releases the reservations of a worker that went away / of a run that ended. */
void bud_worker_down(struct api *a, struct worker *w);
void bud_run_final(struct api *a, struct run *r);

/* dispatch's gate hook (arg: the api): holds an instance of a task known to
 * call a provider that is out of quota; readies it once the quota allows. */
bool bud_gate(void *arg, struct inst *in);

/* The tenant a run's spend counts against. */
const char *bud_run_tenant(struct api *a, const struct run *r);

void h_budget_put(struct tr_http_req *req, void *arg);
void h_budgets_list(struct tr_http_req *req, void *arg);


#endif
