/*
 * exec_calls.h - calls from a task's coroutine to the scheduler (CALL and
 * CALL_REPLY of docs/protocol.md): the task yields until the answer, or
 * until its deadline.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_EXEC_CALLS_H
#define TR_WORKER_EXEC_CALLS_H

#include <lua.h>

#include "lib/wire/proto.h"

struct tr_executor;
struct tr_task;

/* How long a call waits for the scheduler by default (seconds). */
#define TR_CALL_TIMEOUT_S 60.0

/*
 * Sends CALL op for task t (whose coroutine is L) with the Lua table at
 * index args as its body, and yields. When the answer comes, the coroutine
 * gets two results: the status (an integer, the API's HTTP status) and the
 * body decoded to a Lua value; past timeout_s seconds it raises instead.
 * Use as the return statement of a lua_CFunction. Raises on a body that
 * cannot be packed or is over TR_PROTO_CALL_BODY_MAX.
 */
int tr_task_call(lua_State *L, struct tr_task *t, const char *op, int args, double timeout_s);

/* CALL_REPLY: resumes the task waiting for it; a late or unknown reply is ignored. */
void tr_executor_on_call_reply(struct tr_executor *e, const struct tr_msg_call_reply *m);

#endif
