/*
 * loop_calls.h - the calls tasks make to the scheduler over the worker
 * protocol (CALL / CALL_REPLY, docs/protocol.md): the labelling queue and
 * the model registry, served by the HTTP API's own handlers.
 */
#ifndef TR_SCHED_LOOP_CALLS_H
#define TR_SCHED_LOOP_CALLS_H

#include "lib/wire/proto.h"

struct worker;

/* Most calls waiting for their answer at once, over all workers; more are refused (429). */
#define LOOP_CALLS_MAX 1024

/*
 * The core's call hook (arg: the struct api). One CALL from worker w:
 * checked (the dispatch must be w's current one), turned into the API
 * request it stands for, and answered with CALL_REPLY once the API answers
 * (a write: after its commit). Never fails: a refusal is an error reply.
 */
void api_on_call(void *arg, struct worker *w, const struct tr_msg_call *m);

#endif
