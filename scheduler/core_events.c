/*
 * core_events.c - what reaches the scheduling core from below (core.h):
 * decoded frames from workers, due timers, lost workers, and instances that
 * dispatch cannot send.
 */
#include "scheduler/core.h"
#include "scheduler/core_flow.h"

#include <stdio.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

/* ====================================================================== */
/* Worker messages                                                         */
/* ====================================================================== */

static void answer_pipeline_get(struct core *c, struct worker *w, struct tr_str digest)
{
    char d[65];
    struct tr_msg m = {.type = TR_MSG_PIPELINE};
    m.u.pipeline.digest = digest;
    if (digest.len != 64) {
        m.u.pipeline.error = TR_STR("bad digest");
        transport_send_msg(c->tp, w->ident, w->ident_len, &m);
        return;
    }
    memcpy(d, digest.p, 64);
    d[64] = '\0';
    struct pipeline_entry *pe = pipe_lookup(c->pipes, d);
    char *src = NULL;
    size_t len = 0;
    if (pe != NULL) {
        m.u.pipeline.source = (struct tr_str){pe->def->source, pe->def->source_len};
        m.u.pipeline.name = tr_str_c(pe->name);
    } else if (tr_state_get_source(c->state, d, &src, &len) == 0) {
        m.u.pipeline.source = (struct tr_str){src, len};
    } else {
        m.u.pipeline.error = TR_STR("unknown pipeline digest");
    }
    transport_send_msg(c->tp, w->ident, w->ident_len, &m);
    tr_free(src);
}

void core_on_message(void *arg, const void *ident, size_t ident_len, const struct tr_msg *m,
                     const void *data, size_t len)
{
    struct core *c = arg;
    if (m->type == TR_MSG_HELLO) {
        fleet_hello(c->fleet, ident, ident_len, &m->u.hello);
        return;
    }
    struct worker *w = fleet_find(c->fleet, ident, ident_len);
    if (w == NULL) {
        /* A worker of a previous scheduler (or one we presumed dead): tell it
         * to introduce itself, so it comes back without waiting for its own
         * heartbeat timeout. */
        counters_drop(c->cnt, DROP_UNKNOWN_WORKER, NULL, 0);
        if (m->type != TR_MSG_BYE && c->tp != NULL) {
            struct tr_msg bye = {.type = TR_MSG_BYE};
            bye.u.bye.reason = TR_STR("unknown worker: say HELLO");
            transport_send_msg(c->tp, ident, ident_len, &bye);
        }
        return;
    }
    if (w->key[0] != '\0') {
        /* Under CURVE a connection carries one key; a routing id reused by
         * another connection after the worker's went away is not the worker. */
        const char *key = transport_peer_key(c->tp);
        if (key == NULL || strcmp(key, w->key) != 0) {
            counters_drop(c->cnt, DROP_IMPERSONATION, NULL, 0);
            return;
        }
    }
    fleet_seen(w);
    switch (m->type) {
    case TR_MSG_HEARTBEAT:
        worker_gpus_heartbeat(&w->g, &m->u.heartbeat);
        break;
    case TR_MSG_RESULT:
        core_on_result(c, w, &m->u.result);
        break;
    case TR_MSG_LOG:
        core_on_log(c, w, &m->u.log);
        break;
    case TR_MSG_PIPELINE_GET:
        answer_pipeline_get(c, w, m->u.pipeline_get.digest);
        break;
    case TR_MSG_CALL:
        if (c->hooks.call != NULL)
            c->hooks.call(c->hooks.arg, w, &m->u.call);
        else
            counters_drop(c->cnt, DROP_UNKNOWN_TYPE, data, len);
        break;
    case TR_MSG_BYE:
        fleet_remove(c->fleet, w, "said BYE");
        break;
    default:
        counters_drop(c->cnt, DROP_UNKNOWN_TYPE, data, len);
        break;
    }
}

void core_worker_down(struct core *c, struct worker *w)
{
    (void)c;
    while (w->head != NULL)
        inst_requeue(w->head); /* unlinks it from w */
}

/* ====================================================================== */
/* Timers: retries and dispatch deadlines                                  */
/* ====================================================================== */

void core_timer_fire(void *arg, struct inst *in, uint64_t dispatch_id)
{
    struct core *c = arg;
    if (dispatch_id == FLOW_TIMER_ID) {
        flow_timer_fire(c, in); /* an approval's deadline */
        return;
    }
    if (dispatch_id == 0) {
        if (in->state == TR_TASK_RETRY_WAIT && !run_is_final(in->run)) {
            inst_set_state(in, TR_TASK_PENDING);
            dispatch_ready(c->dispatch, in);
        }
        return;
    }
    if (in->dispatch_id != dispatch_id ||
        (in->state != TR_TASK_DISPATCHED && in->state != TR_TASK_RUNNING))
        return;
    /* The worker did not report within timeout plus grace: it may be wedged.
     * Tell it to stop, and treat the attempt as timed out. */
    const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
    struct tr_msg cancel = {.type = TR_MSG_CANCEL};
    cancel.u.cancel.id = in->dispatch_id;
    cancel.u.cancel.reason = tr_str_c("timeout");
    if (in->worker &&
        batch_add_msg(c->batch, in->worker->ident, in->worker->ident_len, &cancel) < 0)
        tr_warn("cannot queue cancel for task '%s': out of memory", td->name);
    char msg[200];
    snprintf(msg, sizeof(msg), "task '%s' timed out after %g s (no answer from worker)",
             td->name, td->timeout);
    dispatch_end(c->dispatch, in);
    inst_attempt_failed(in, tr_str_c(msg), true);
}

/* ====================================================================== */
/* Dispatch hooks                                                          */
/* ====================================================================== */

/* Serves a cache=true task from the cache when an output is stored for its inputs. */
static bool try_cache(void *arg, struct inst *in, struct tr_str args)
{
    struct core *c = arg;
    const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
    struct tr_buf k;
    tr_buf_init(&k, 0);
    char key[65];
    bool hit = false;
    if (tr_buf_addstr(&k, in->run->pipe->digest) == 0 &&
        tr_buf_add(&k, td->name, strlen(td->name) + 1) == 0 &&
        tr_buf_add(&k, args.p, args.len) == 0) {
        tr_sha256_hex(k.buf, k.len, key);
        void *out = NULL;
        size_t len = 0;
        if (tr_state_get_cache(c->state, key, &out, &len) == 0) {
            in->started_at = in->finished_at = tr_now();
            inst_complete(in, out, len, true);
            tr_free(out);
            hit = true;
        }
    }
    tr_buf_release(&k);
    return hit;
}


static void fail_unsent(void *arg, struct inst *in, const char *error)
{
    (void)arg;
    inst_fail_final(in, error);
}

const struct dispatch_hooks core_dispatch_hooks = {
    .cached = try_cache, .fail = fail_unsent};
