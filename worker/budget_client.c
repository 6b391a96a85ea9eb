/*
 * budget_client.c - reservations of LLM calls, batched per loop turn (see
 * budget_client.h).
 *
 * A reservation is a struct bwait: queued, then sent (kept in a map by its
 * sequence number until the answer), then answered. The task that waits on
 * it may stop first (timeout, CANCEL) or stop waiting (the scheduler does
 * not answer in time): the bwait is then orphaned, and when its answer
 * comes a granted reservation is given back at once (settled at zero), so a
 * stopped task holds no budget.
 *
 * Part of the executor (it includes exec_int.h); loop thread only.
 */
#include "worker/budget_client.h"

#include <lauxlib.h>
#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/hmap.h"
#include "lib/base/vec.h"
#include "lib/wire/mp_read.h"
#include "worker/exec_int.h"

enum { BW_OK, BW_BUDGET, BW_RATE, BW_REFUSED, BW_TIMEOUT };
static const char *const code_names[] = {"ok", "budget_exceeded", "rate_limited", "refused",
                                          "refused"};

struct bwait
{
    uint64_t seq;
    struct tr_task *t;       /* NULL once orphaned */
    struct bwait *next;      /* the queue of unsent ones */
    char key[128];
    double rpm, tpm, tokens, cost;
    bool sent, answered;
    uint8_t code;
    uint64_t id;
    double wait;
    char policy[16];
    char msg[200];
};

struct settle
{
    uint64_t id;
    double tokens, cost;
};

struct report
{
    char key[128];
    double rq, rt, sq, st;
};

struct budget_client
{
    uv_prepare_t prep;
    struct tr_executor *e;
    struct bwait *head, **tail; /* unsent */
    uint32_t n_queued;
    struct tr_hmap sent;        /* seq -> struct bwait */
    struct settle *settles;
    size_t n_settles, cap_settles;
    struct report *reports;
    size_t n_reports, cap_reports;
    uint64_t next_seq, next_call;
    bool active;
};

/* One client per executor; the executor holds it in a map of one, keyed by itself, so its
 * struct need not know this file. */
static _Thread_local struct tr_hmap clients; /* per loop thread: executor pointer -> client */

static void flush(uv_prepare_t *h);

static struct budget_client *client_of(struct tr_executor *e, bool create)
{
    struct budget_client *c = tr_hmap_get(&clients, &e, sizeof(e));
    if (c != NULL || !create)
        return c;
    c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->e = e;
    c->tail = &c->head;
    c->next_seq = 1;
    c->next_call = (uint64_t)1 << 62; /* apart from exec_calls.c's ids */
    tr_hmap_init(&c->sent);
    if (tr_hmap_put(&clients, &c->e, sizeof(c->e), c) < 0) {
        tr_free(c);
        return NULL;
    }
    uv_prepare_init(e->loop, &c->prep);
    c->prep.data = c;
    return c;
}

static void activate(struct budget_client *c)
{
    if (!c->active) {
        uv_prepare_start(&c->prep, flush);
        c->active = true;
    }
}

static void queue_settle(struct budget_client *c, uint64_t id, double tokens, double cost)
{
    if (id == 0)
        return;
    struct settle s = {id, tokens, cost};
    if (TR_VEC_PUSH(c->settles, c->n_settles, c->cap_settles, s) == 0)
        activate(c);
    /* Out of memory: the reservation is held until the run ends. */
}

static void unqueue(struct budget_client *c, struct bwait *w)
{
    for (struct bwait **p = &c->head; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            if (c->tail == &w->next)
                c->tail = p;
            c->n_queued--;
            return;
        }
    }
}

/* The task stops waiting on w (stopped, or its wait timed out). */
static void abandon(struct budget_client *c, struct bwait *w)
{
    if (!w->sent) {
        unqueue(c, w);
        tr_free(w);
    } else if (w->answered) {
        tr_free(w);
    } else {
        w->t = NULL; /* freed when its answer comes */
    }
}

static void on_cancel(struct tr_task *t, void *op)
{
    uv_timer_stop(tr_task_timer(t));
    struct budget_client *c = client_of(t->exec, false);
    struct bwait *w = op;
    if (c != NULL)
        abandon(c, w);
    else
        tr_free(w);
}

static void on_timeout(uv_timer_t *h)
{
    struct tr_task *t = h->data;
    struct bwait *w = t->op;
    w->code = BW_TIMEOUT;
    snprintf(w->msg, sizeof(w->msg), "no answer from the scheduler within %g s",
             TR_BUDGET_TIMEOUT_S);
    tr_task_resume(t);
}

static int reserve_done(lua_State *L, int status, lua_KContext kctx)
{
    (void)status;
    struct bwait *w = (struct bwait *)kctx;
    struct tr_task *t = w->t;
    lua_pushstring(L, code_names[w->code]);
    lua_pushinteger(L, (lua_Integer)w->id);
    lua_pushnumber(L, w->wait);
    lua_pushstring(L, w->policy);
    lua_pushstring(L, w->msg);
    struct budget_client *c = t ? client_of(t->exec, false) : NULL;
    if (w->code == BW_TIMEOUT && c != NULL)
        abandon(c, w);
    else
        tr_free(w);
    return 5;
}

int tr_budget_l_reserve(lua_State *L)
{
    size_t kl;
    const char *key = luaL_checklstring(L, 1, &kl);
    double rpm = luaL_optnumber(L, 2, 0), tpm = luaL_optnumber(L, 3, 0);
    double tokens = luaL_checknumber(L, 4), cost = luaL_checknumber(L, 5);
    struct tr_task *t = tr_task_of(L);
    if (t == NULL)
        return 0; /* outside a task (tests, a pipeline's top level): no budget applies */
    struct budget_client *c = client_of(t->exec, true);
    struct bwait *w = c ? tr_calloc(1, sizeof(*w)) : NULL;
    if (w == NULL)
        return luaL_error(L, "budget_unavailable: out of memory");
    w->seq = c->next_seq++;
    w->t = t;
    snprintf(w->key, sizeof(w->key), "%.*s", (int)TR_MIN(kl, sizeof(w->key) - 1), key);
    w->rpm = rpm > 0 && isfinite(rpm) ? rpm : 0;
    w->tpm = tpm > 0 && isfinite(tpm) ? tpm : 0;
    w->tokens = tokens;
    w->cost = cost;
    *c->tail = w;
    c->tail = &w->next;
    c->n_queued++;
    activate(c);
    uv_timer_t *timer = tr_task_timer(t);
    uv_update_time(timer->loop);
    uv_timer_start(timer, on_timeout, (uint64_t)(TR_BUDGET_TIMEOUT_S * 1000.0), 0);
    return tr_task_yield(L, t, w, on_cancel, (lua_KContext)w, reserve_done);
}

int tr_budget_l_settle(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    double tokens = luaL_checknumber(L, 2), cost = luaL_checknumber(L, 3);
    struct tr_executor *e = tr_executor_of(L);
    struct budget_client *c = e ? client_of(e, true) : NULL;
    if (c != NULL && id > 0)
        queue_settle(c, (uint64_t)id, tokens, cost);
    return 0;
}

int tr_budget_l_report(lua_State *L)
{
    size_t kl;
    const char *key = luaL_checklstring(L, 1, &kl);
    struct tr_executor *e = tr_executor_of(L);
    struct budget_client *c = e && tr_task_running(L) ? client_of(e, true) : NULL;
    if (c == NULL || kl == 0)
        return 0;
    struct report r;
    snprintf(r.key, sizeof(r.key), "%.*s", (int)TR_MIN(kl, sizeof(r.key) - 1), key);
    r.rq = luaL_optnumber(L, 2, -1);
    r.rt = luaL_optnumber(L, 3, -1);
    r.sq = luaL_optnumber(L, 4, -1);
    r.st = luaL_optnumber(L, 5, -1);
    /* The latest report of a key replaces an earlier one of the same turn. */
    for (size_t i = 0; i < c->n_reports; i++) {
        if (strcmp(c->reports[i].key, r.key) == 0) {
            c->reports[i] = r;
            return 0;
        }
    }
    if (TR_VEC_PUSH(c->reports, c->n_reports, c->cap_reports, r) == 0)
        activate(c);
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* End of a loop turn: everything queued goes in one CALL. */
static void flush(uv_prepare_t *h)
{
    struct budget_client *c = h->data;
    uint32_t n = TR_MIN(c->n_queued, TR_BUDGET_BATCH_MAX);
    if (n == 0 && c->n_settles == 0 && c->n_reports == 0) {
        uv_prepare_stop(&c->prep);
        c->active = false;
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, (uint32_t)c->n_settles);
    for (size_t i = 0; i < c->n_settles; i++) {
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint64(&pk, c->settles[i].id);
        msgpack_pack_double(&pk, c->settles[i].tokens);
        msgpack_pack_double(&pk, c->settles[i].cost);
    }
    c->n_settles = 0;
    msgpack_pack_array(&pk, (uint32_t)c->n_reports);
    for (size_t i = 0; i < c->n_reports; i++) {
        struct report *r = &c->reports[i];
        msgpack_pack_array(&pk, 5);
        pack_str(&pk, r->key);
        msgpack_pack_double(&pk, r->rq);
        msgpack_pack_double(&pk, r->rt);
        msgpack_pack_double(&pk, r->sq);
        msgpack_pack_double(&pk, r->st);
    }
    c->n_reports = 0;
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        struct bwait *w = c->head;
        c->head = w->next;
        if (c->head == NULL)
            c->tail = &c->head;
        c->n_queued--;
        w->next = NULL;
        w->sent = true;
        if (tr_hmap_put(&c->sent, &w->seq, sizeof(w->seq), w) < 0) {
            w->answered = true;
            w->code = BW_REFUSED;
            snprintf(w->msg, sizeof(w->msg), "out of memory");
        }
        msgpack_pack_array(&pk, 7);
        msgpack_pack_uint64(&pk, w->seq);
        msgpack_pack_uint64(&pk, w->t ? w->t->id : 0);
        pack_str(&pk, w->key);
        msgpack_pack_double(&pk, w->rpm);
        msgpack_pack_double(&pk, w->tpm);
        msgpack_pack_double(&pk, w->tokens);
        msgpack_pack_double(&pk, w->cost);
    }
    struct tr_msg m = {.type = TR_MSG_CALL};
    m.u.call.id = c->next_call++;
    m.u.call.dispatch = 0;
    m.u.call.op = tr_str_c("budget");
    m.u.call.body = (struct tr_str){sb.data, sb.size};
    exec_send(c->e, &m);
    msgpack_sbuffer_destroy(&sb);
}

static void answer(struct budget_client *c, struct bwait *w)
{
    w->answered = true;
    tr_hmap_del(&c->sent, &w->seq, sizeof(w->seq));
    if (w->t == NULL) {
        /* Its task stopped waiting: give a granted reservation back. */
        if (w->code == BW_OK)
            queue_settle(c, w->id, 0, 0);
        tr_free(w);
        return;
    }
    uv_timer_stop(tr_task_timer(w->t));
    tr_task_resume(w->t);
}

void tr_budget_on_reply(struct tr_executor *e, const struct tr_msg_call_reply *m)
{
    struct budget_client *c = client_of(e, false);
    if (c == NULL)
        return;
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, m->body.p, m->body.len);
    uint32_t n = m->status == 200 ? tr_mp_rd_array(&r) : 0;
    for (uint32_t i = 0; i < n && r.err == 0; i++) {
        uint32_t f = tr_mp_rd_array(&r);
        uint64_t seq = tr_mp_rd_uint(&r);
        uint8_t code = (uint8_t)tr_mp_rd_uint(&r);
        uint64_t id = tr_mp_rd_uint(&r);
        double wait = tr_mp_rd_double(&r);
        struct tr_str policy = tr_mp_rd_str(&r), msg = tr_mp_rd_str(&r);
        for (uint32_t k = 6; k < f; k++)
            tr_mp_rd_skip(&r);
        struct bwait *w = r.err == 0 ? tr_hmap_get(&c->sent, &seq, sizeof(seq)) : NULL;
        if (w == NULL) {
            if (r.err == 0 && code == BW_OK)
                queue_settle(c, id, 0, 0); /* nobody waits for it */
            continue;
        }
        w->code = code <= BW_REFUSED ? code : BW_REFUSED;
        w->id = id;
        w->wait = isfinite(wait) && wait > 0 ? wait : 0;
        snprintf(w->policy, sizeof(w->policy), "%.*s", (int)TR_MIN(policy.len, 15), policy.p);
        snprintf(w->msg, sizeof(w->msg), "%.*s", (int)TR_MIN(msg.len, 199), msg.p);
        answer(c, w);
    }
    if (m->status != 200 || r.err != 0) {
        /* A refusal of the whole batch: every reservation still waiting on
         * an answer from an older batch than now is answered refused. */
        size_t it = 0;
        struct bwait *w, **all = NULL;
        size_t k = 0, cap = 0;
        while ((w = tr_hmap_next(&c->sent, &it)) != NULL) {
            if (TR_VEC_PUSH(all, k, cap, w) < 0)
                break;
        }
        for (size_t i = 0; i < k; i++) {
            all[i]->code = BW_REFUSED;
            snprintf(all[i]->msg, sizeof(all[i]->msg), "the scheduler refused the budget call "
                     "(status %u)", m->status);
            answer(c, all[i]);
        }
        tr_free(all);
    }
}

void tr_budget_flush(struct tr_executor *e)
{
    struct budget_client *c = tr_hmap_count(&clients) ? client_of(e, false) : NULL;
    if (c != NULL && c->active)
        flush(&c->prep);
}

static void on_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

void tr_budget_client_free(struct tr_executor *e)
{
    struct budget_client *c = client_of(e, false);
    if (c == NULL)
        return;
    tr_hmap_del(&clients, &e, sizeof(e));
    while (c->head != NULL) {
        struct bwait *w = c->head;
        c->head = w->next;
        tr_free(w);
    }
    size_t it = 0;
    struct bwait *w;
    while ((w = tr_hmap_next(&c->sent, &it)) != NULL)
        tr_free(w);
    tr_hmap_release(&c->sent);
    tr_free(c->settles);
    tr_free(c->reports);
    if (tr_hmap_count(&clients) == 0) {
        tr_hmap_release(&clients);
        tr_hmap_init(&clients);
    }
    uv_close((uv_handle_t *)&c->prep, on_closed);
}
