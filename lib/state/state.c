/*
 * state.c - picks a state backend from a URL and forwards to its vtable.
 *
 * Owns the table of backends and the checks every backend would otherwise
 * repeat: handles, records and callbacks must be non-NULL, the fields a
 * record cannot do without must be set, and state names must be ones the
 * scheduler defines (listings of unfinished runs depend on the exact
 * strings). What is left to a backend is storage itself, including the batch
 * rules (puts outside a batch, commit and rollback).
 *
 * Adding a backend is one line in `backends` plus its file. Used by the one
 * thread that owns the handle (the scheduler's loop).
 */
#include "lib/base/states.h"
#include "lib/state/state_backend.h"

/* Known backends, looked up by URL scheme. */
static const struct tr_state_ops *const backends[] = {
    &tr_state_sqlite_ops,
    &tr_state_etcd_ops,
};


/* Writes the known schemes ("sqlite:, etcd:") into out, for error messages. */
static void known_schemes(char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < TR_ARRAY_LEN(backends) && o < size; i++) {
        int n = snprintf(out + o, size - o, "%s%s:", i ? ", " : "", backends[i]->scheme);
        if (n < 0)
            break;
        o += (size_t)n;
    }
}

int tr_state_open(const char *url, struct tr_state **out, struct tr_error *err)
{
    if (out == NULL)
        return tr_error_set(err, TR_EINVAL, "cannot open state: no handle to fill");
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return tr_error_set(err, TR_EINVAL, "cannot open state: empty url");
    char schemes[128];
    known_schemes(schemes, sizeof(schemes));
    const char *colon = strchr(url, ':');
    if (colon == NULL || colon == url) {
        return tr_error_set(err, TR_EINVAL,
                            "cannot open state '%s': no scheme (expected one of %s, "
                            "as in sqlite:PATH)",
                            url, schemes);
    }
    size_t scheme_len = (size_t)(colon - url);
    for (size_t i = 0; i < TR_ARRAY_LEN(backends); i++) {
        const struct tr_state_ops *ops = backends[i];
        if (strlen(ops->scheme) != scheme_len || memcmp(ops->scheme, url, scheme_len) != 0)
            continue;
        struct tr_state *st = NULL;
        int rc = ops->open(colon + 1, &st, err);
        if (rc < 0)
            return rc;
        st->ops = ops;
        *out = st;
        return 0;
    }
    return tr_error_set(err, TR_EINVAL, "cannot open state '%s': unknown scheme '%.*s' (known: %s)",
                        url, (int)scheme_len, url, schemes);
}

void tr_state_close(struct tr_state *st)
{
    if (st == NULL)
        return;
    st->ops->close(st);
}

int tr_state_next_epoch(struct tr_state *st, uint64_t *epoch)
{
    if (st == NULL || epoch == NULL)
        return TR_EINVAL;
    return st->ops->next_epoch(st, epoch);
}

/* ===================================================================== */
/* Group commit                                                          */
/* ===================================================================== */

int tr_state_begin(struct tr_state *st)
{
    if (st == NULL)
        return TR_EINVAL;
    return st->ops->begin(st);
}

int tr_state_put_pipeline(struct tr_state *st, const struct tr_pipeline_rec *rec)
{
    if (st == NULL || rec == NULL || rec->name == NULL || rec->version == NULL ||
        rec->digest == NULL || (rec->source == NULL && rec->source_len != 0))
        return TR_EINVAL;
    return st->ops->put_pipeline(st, rec);
}

int tr_state_put_source(struct tr_state *st, const char *digest, const char *src, size_t len)
{
    if (st == NULL || digest == NULL || src == NULL)
        return TR_EINVAL;
    return st->ops->put_source(st, digest, src, len);
}

int tr_state_put_run(struct tr_state *st, const struct tr_run_rec *rec)
{
    if (st == NULL || rec == NULL || rec->id == NULL || rec->pipeline == NULL ||
        rec->version == NULL || rec->digest == NULL || rec->state == NULL ||
        tr_run_state_parse(rec->state) < 0)
        return TR_EINVAL;
    return st->ops->put_run(st, rec);
}

int tr_state_put_task(struct tr_state *st, const struct tr_task_rec *rec)
{
    if (st == NULL || rec == NULL || rec->run_id == NULL || rec->name == NULL ||
        rec->state == NULL ||
        /* running: an approval or subrun waiting in the scheduler (core_flow.h) */
        !(tr_task_state_final(tr_task_state_parse(rec->state)) ||
          strcmp(rec->state, "running") == 0) ||
        (rec->output == NULL && rec->output_len != 0))
        return TR_EINVAL;
    return st->ops->put_task(st, rec);
}

int tr_state_put_cache(struct tr_state *st, const char *key, const void *output, size_t len)
{
    if (st == NULL || key == NULL || (output == NULL && len != 0))
        return TR_EINVAL;
    return st->ops->put_cache(st, key, output, len);
}

int tr_state_commit(struct tr_state *st, struct tr_error *err)
{
    if (st == NULL)
        return tr_error_set(err, TR_EINVAL, "cannot commit state batch: no state");
    return st->ops->commit(st, err);
}

void tr_state_rollback(struct tr_state *st)
{
    if (st == NULL)
        return;
    st->ops->rollback(st);
}

/* ===================================================================== */
/* Reads                                                                 */
/* ===================================================================== */

int tr_state_get_source(struct tr_state *st, const char *digest, char **src, size_t *len)
{
    if (st == NULL || digest == NULL || src == NULL || len == NULL)
        return TR_EINVAL;
    *src = NULL;
    *len = 0;
    return st->ops->get_source(st, digest, src, len);
}

int tr_state_get_pipeline(struct tr_state *st, const char *name, const char *version,
                          tr_state_pipeline_fn cb, void *arg)
{
    if (st == NULL || name == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->get_pipeline(st, name, version, cb, arg);
}

int tr_state_list_pipelines(struct tr_state *st, tr_state_pipeline_fn cb, void *arg)
{
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->list_pipelines(st, cb, arg);
}

int tr_state_get_run(struct tr_state *st, const char *run_id, tr_state_run_fn cb, void *arg)
{
    if (st == NULL || run_id == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->get_run(st, run_id, cb, arg);
}

int tr_state_list_runs(struct tr_state *st, const char *state, bool unfinished_only, uint32_t limit,
                       tr_state_run_fn cb, void *arg)
{
    if (st == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->list_runs(st, state, unfinished_only, limit, cb, arg);
}

int tr_state_list_tasks(struct tr_state *st, const char *run_id, tr_state_task_fn cb, void *arg)
{
    if (st == NULL || run_id == NULL || cb == NULL)
        return TR_EINVAL;
    return st->ops->list_tasks(st, run_id, cb, arg);
}

int tr_state_get_cache(struct tr_state *st, const char *key, void **output, size_t *len)
{
    if (st == NULL || key == NULL || output == NULL || len == NULL)
        return TR_EINVAL;
    *output = NULL;
    *len = 0;
    return st->ops->get_cache(st, key, output, len);
}
