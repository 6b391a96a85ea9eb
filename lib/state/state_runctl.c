/*
 * state_runctl.c - the run control's records (docs/api.md "Run control"):
 * idempotency keys of POST /v1/runs, the link of a retry to the run it
 * retries, and the deletion of runs (DELETE /v1/runs/{id}, --retention).
 *
 * Keys and links are rows (state_backend.h) encoded as JSON objects, like
 * the feedback loop's records (state_loop.c), so SQLite and etcd store and
 * order them alike. Deleting a run and listing the finished runs to purge
 * are backend operations of their own.
 */
#include <jansson.h>

#include "lib/base/alloc.h"
#include "lib/base/states.h"
#include "lib/state/state_backend.h"

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

int tr_state_delete_run(struct tr_state *st, const char *run_id)
{
    if (st == NULL || empty(run_id))
        return TR_EINVAL;
    return st->ops->delete_run(st, run_id);
}

int tr_state_list_finished_runs(struct tr_state *st, double before, uint32_t limit,
                                tr_state_run_fn cb, void *arg)
{
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->list_finished(st, before, limit, cb, arg);
}

/* Hands the backend a row of kind with key comps and o as its value (o is released). */
static int put_json(struct tr_state *st, int kind, const char *key, double ord, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL)
        return TR_ENOMEM;
    struct tr_state_row row = {.kind = kind, .comps = {key}, .n_comps = 1, .ord = ord,
                               .value = text, .value_len = strlen(text)};
    int rc = st->ops->put_row(st, &row);
    free(text);
    return rc;
}

int tr_state_put_idem(struct tr_state *st, const struct tr_idem_rec *r)
{
    if (st == NULL || r == NULL || empty(r->key) || empty(r->run_id) || empty(r->digest) ||
        !(r->created_at > 0))
        return TR_EINVAL;
    json_t *o = json_pack("{s:s, s:s, s:s, s:f}", "key", r->key, "run_id", r->run_id, "digest",
                          r->digest, "created_at", r->created_at);
    if (o == NULL)
        return TR_EINVAL; /* not UTF-8 */
    return put_json(st, TR_ROW_IDEM, r->key, r->created_at, o);
}

int tr_state_put_run_link(struct tr_state *st, const struct tr_run_link_rec *r)
{
    if (st == NULL || r == NULL || empty(r->run_id) || empty(r->retry_of))
        return TR_EINVAL;
    json_t *o = json_pack("{s:s, s:s, s:f}", "run_id", r->run_id, "retry_of", r->retry_of,
                          "created_at", r->created_at);
    if (o == NULL)
        return TR_EINVAL;
    return put_json(st, TR_ROW_RUN_LINK, r->run_id, r->created_at, o);
}

static int delete_one(struct tr_state *st, int kind, const char *key)
{
    if (st == NULL || empty(key))
        return TR_EINVAL;
    const char *comps[] = {key};
    return st->ops->delete_row(st, kind, comps, 1);
}

int tr_state_delete_idem(struct tr_state *st, const char *key)
{
    return delete_one(st, TR_ROW_IDEM, key);
}

int tr_state_delete_run_link(struct tr_state *st, const char *run_id)
{
    return delete_one(st, TR_ROW_RUN_LINK, run_id);
}

/* ===================================================================== */
/* Reads                                                                 */
/* ===================================================================== */

struct read_ctx
{
    int kind;
    tr_state_idem_fn idem;
    tr_state_run_link_fn link;
    void *arg;
};

static int emit(const char *value, size_t len, void *arg)
{
    struct read_ctx *c = arg;
    json_t *o = json_loadb(value, len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return TR_EPROTO;
    }
    int rc;
    if (c->kind == TR_ROW_IDEM) {
        struct tr_idem_rec r = {
            .key = json_string_value(json_object_get(o, "key")),
            .run_id = json_string_value(json_object_get(o, "run_id")),
            .digest = json_string_value(json_object_get(o, "digest")),
            .created_at = json_number_value(json_object_get(o, "created_at"))};
        rc = r.key && r.run_id && r.digest ? c->idem(&r, c->arg) : TR_EPROTO;
    } else {
        struct tr_run_link_rec r = {
            .run_id = json_string_value(json_object_get(o, "run_id")),
            .retry_of = json_string_value(json_object_get(o, "retry_of")),
            .created_at = json_number_value(json_object_get(o, "created_at"))};
        rc = r.run_id && r.retry_of ? c->link(&r, c->arg) : TR_EPROTO;
    }
    json_decref(o);
    return rc;
}

static int get_one(struct tr_state *st, struct read_ctx *c, const char *key)
{
    if (st == NULL || empty(key))
        return TR_EINVAL;
    const char *comps[] = {key};
    char *v = NULL;
    size_t len = 0;
    int rc = st->ops->get_row(st, c->kind, comps, 1, &v, &len);
    if (rc == 0)
        rc = emit(v, len, c);
    tr_free(v);
    return rc;
}

int tr_state_get_idem(struct tr_state *st, const char *key, tr_state_idem_fn cb, void *arg)
{
    if (cb == NULL)
        return TR_EINVAL;
    struct read_ctx c = {.kind = TR_ROW_IDEM, .idem = cb, .arg = arg};
    return get_one(st, &c, key);
}

int tr_state_list_idem(struct tr_state *st, uint32_t limit, tr_state_idem_fn cb, void *arg)
{
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    struct read_ctx c = {.kind = TR_ROW_IDEM, .idem = cb, .arg = arg};
    return st->ops->list_rows(st, TR_ROW_IDEM, NULL, NULL, limit, emit, &c);
}

int tr_state_get_run_link(struct tr_state *st, const char *run_id, tr_state_run_link_fn cb,
                          void *arg)
{
    if (cb == NULL)
        return TR_EINVAL;
    struct read_ctx c = {.kind = TR_ROW_RUN_LINK, .link = cb, .arg = arg};
    return get_one(st, &c, run_id);
}
