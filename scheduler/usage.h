/*
 * usage.h - the LLM calls of task instances and their sums per run (usage.c).
 *
 * Part "usage", low in the scheduler's order: it knows only the model.
 */
#ifndef TR_SCHED_USAGE_H
#define TR_SCHED_USAGE_H

#include <jansson.h>

#include "scheduler/model.h"

/* The text of usage_sum_new(): a run that made no LLM call. */
#define USAGE_EMPTY_JSON                                                                       \
    "{\"calls\":0,\"prompt_tokens\":0,\"completion_tokens\":0,\"cost\":0.0,\"latency_ms\":0.0," \
    "\"by_model\":{},\"prompt_digests\":[]}"
/*
 * Appends the calls of one attempt (calls: a msgpack array) to an
 * instance's list (*list: a msgpack array with a 32-bit header, or NULL).
 * TR_EPROTO when calls is not a valid array (the list is unchanged);
 * TR_E2BIG when the bounds left some calls out (those that fit were added);
 * TR_ENOMEM.
 */
int usage_concat(char **list, uint32_t *list_len, const void *calls, size_t len) TR_MUST_CHECK;
/* The empty sum: {calls, prompt_tokens, completion_tokens, cost, latency_ms, by_model,
 * prompt_digests}; NULL when out of memory. */
json_t *usage_sum_new(void);
/* Adds the call records of a msgpack array to sum; 0 or a negative TR_E* code. */
int usage_sum_add(json_t *sum, const void *calls, size_t len) TR_MUST_CHECK;
/* The totals of a sum without by_model and prompt_digests (for listings). */
json_t *usage_sum_brief(const json_t *sum);
/* The call records of a msgpack array as a JSON array ([] when none or unreadable). */
json_t *usage_records_json(const void *calls, size_t len);
/*
 * Calls fn(arg, check, stage) for each guard record of calls (a model call
 * that trellis.guard blocked: {guard, stage}, docs/guardrails.md); returns
 * how many. Cheap when there are none (a byte search).
 */
uint32_t usage_guards(const void *calls, size_t len,
                      void (*fn)(void *arg, const char *check, const char *stage), void *arg);
/* Keeps an attempt's calls with the instance and adds them to its run's sum. */
void inst_usage_add(struct inst *in, const void *calls, size_t len);
/* Adds calls to the run's sum and refreshes its text. */
void run_usage_add(struct run *r, const void *calls, size_t len);

#endif
