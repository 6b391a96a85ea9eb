/*
 * budget_client.h - the worker's half of LLM budgets and provider quotas
 * (docs/budgets.md; the scheduler's half is scheduler/budgets.c).
 *
 * trellis.llm reserves each call's worst case before its request leaves,
 * settles it with the real usage after, and reports the providers'
 * rate-limit headers. Every reservation, settlement and report made in one
 * turn of the loop goes to the scheduler in one CALL (op "budget",
 * dispatch 0) sent from a uv_prepare handle, i.e. once the turn's callbacks
 * ran; one CALL_REPLY answers all of its reservations and resumes their
 * tasks. A thousand calls in flight cost one round trip per turn, not a
 * thousand.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_BUDGET_CLIENT_H
#define TR_WORKER_BUDGET_CLIENT_H

#include <lua.h>

#include "lib/wire/proto.h"

struct tr_executor;

/* Reservations sent in one CALL at most (the rest go at the next turn). */
#define TR_BUDGET_BATCH_MAX 4096
/* How long a reservation waits for the scheduler (seconds). */
#define TR_BUDGET_TIMEOUT_S 30.0

/*
 * lua_CFunctions given to llm.lua (never to pipeline code):
 *   reserve(quota_key, rpm, tpm, tokens, cost) -> code, id, wait_s, policy, message
 *     (yields until the answer; code: "ok", "budget_exceeded", "rate_limited",
 *      "refused"; nothing at all outside a task's own coroutine)
 *   settle(id, tokens, cost)
 *   report(quota_key, remaining_requests, remaining_tokens, reset_requests_s,
 *          reset_tokens_s)   (-1: the provider did not say)
 */
int tr_budget_l_reserve(lua_State *L);
int tr_budget_l_settle(lua_State *L);
int tr_budget_l_report(lua_State *L);

/* CALL_REPLY with dispatch 0: the answer to a batch. */
void tr_budget_on_reply(struct tr_executor *e, const struct tr_msg_call_reply *m);
/* Sends what is queued now (before a RESULT, so that a task's settlements come first). */
void tr_budget_flush(struct tr_executor *e);
/* Frees the executor's client (tr_executor_free). */
void tr_budget_client_free(struct tr_executor *e);

#endif
