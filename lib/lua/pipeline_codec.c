/*
 * pipeline_codec.c - a pipeline graph as msgpack, and back with every index
 * checked. See pipeline_codec.h for the form.
 */
#include "lib/lua/pipeline_codec.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/lua/pipeline_controls.h"
#include "lib/wire/mp_read.h"

#define CODEC_VERSION 3 /* 2: tasks carry gpus; 3: control flow */

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0)
        return TR_ENOMEM;
    return 0;
}

static int pack_bin(msgpack_packer *pk, const char *p, size_t n)
{
    if (msgpack_pack_bin(pk, n) != 0 || msgpack_pack_bin_body(pk, p, n) != 0)
        return TR_ENOMEM;
    return 0;
}

static int pack_u32s(msgpack_packer *pk, const uint32_t *a, uint32_t n)
{
    if (msgpack_pack_array(pk, n) != 0)
        return TR_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if (msgpack_pack_uint32(pk, a[i]) != 0)
            return TR_ENOMEM;
    }
    return 0;
}

/* Control flow: [trigger_rule, kind, approve_default, subrun or nil] */
static int pack_flow(msgpack_packer *pk, const struct tr_task_def *t)
{
    if (msgpack_pack_array(pk, 4) || msgpack_pack_uint8(pk, t->trigger_rule) ||
        msgpack_pack_uint8(pk, t->kind) ||
        (t->approve_default ? msgpack_pack_true(pk) : msgpack_pack_false(pk)))
        return TR_ENOMEM;
    return t->subrun ? pack_str(pk, t->subrun) : (msgpack_pack_nil(pk) ? TR_ENOMEM : 0);
}

static int pack_task(msgpack_packer *pk, const struct tr_task_def *t)
{
    int rc = msgpack_pack_array(pk, 13) ? TR_ENOMEM : 0;
    if (rc == 0)
        rc = pack_str(pk, t->name);
    if (rc == 0 && (msgpack_pack_uint16(pk, t->pool) || msgpack_pack_uint16(pk, t->retries) ||
                    msgpack_pack_int32(pk, t->priority) || msgpack_pack_double(pk, t->backoff) ||
                    msgpack_pack_double(pk, t->timeout) ||
                    (t->cache ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
                    msgpack_pack_int32(pk, t->map) || msgpack_pack_uint16(pk, t->gpus)))
        rc = TR_ENOMEM;
    if (rc == 0)
        rc = pack_u32s(pk, t->after, t->n_after);
    if (rc == 0 && msgpack_pack_uint32(pk, t->n_upstream) != 0)
        rc = TR_ENOMEM;
    if (rc == 0)
        rc = pack_u32s(pk, t->downstream, t->n_downstream);
    if (rc == 0)
        rc = pack_flow(pk, t);
    return rc;
}

/* [name, on, run, params (bin), cooldown, cron or nil, has_when] */
static int pack_trigger(msgpack_packer *pk, const struct tr_trigger_def *t)
{
    int rc = msgpack_pack_array(pk, 7) ? TR_ENOMEM : 0;
    if (rc == 0)
        rc = pack_str(pk, t->name);
    if (rc == 0 && msgpack_pack_uint8(pk, t->on) != 0)
        rc = TR_ENOMEM;
    if (rc == 0)
        rc = pack_str(pk, t->run);
    if (rc == 0)
        rc = pack_bin(pk, t->params, t->params_len);
    if (rc == 0 && msgpack_pack_double(pk, t->cooldown) != 0)
        rc = TR_ENOMEM;
    if (rc == 0)
        rc = t->cron ? pack_str(pk, t->cron) : (msgpack_pack_nil(pk) ? TR_ENOMEM : 0);
    if (rc == 0 && (t->has_when ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) != 0)
        rc = TR_ENOMEM;
    return rc;
}

/* The run controls (the 14th element): [timeout, max_active_runs, [[task, [k, v, ...],
 * conc_key or nil, conc_limit]...]], listing only the tasks that have any. */
static int pack_controls(msgpack_packer *pk, const struct tr_pipeline_def *def)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < def->n_tasks; i++)
        n += tr_task_has_controls(&def->tasks[i]);
    if (msgpack_pack_array(pk, 3) || msgpack_pack_double(pk, def->timeout) ||
        msgpack_pack_uint32(pk, def->max_active_runs) || msgpack_pack_array(pk, n))
        return TR_ENOMEM;
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        const struct tr_task_def *t = &def->tasks[i];
        if (!tr_task_has_controls(t))
            continue;
        if (msgpack_pack_array(pk, 4) || msgpack_pack_uint32(pk, i) ||
            msgpack_pack_array(pk, 2u * t->n_labels))
            return TR_ENOMEM;
        for (uint32_t k = 0; k < 2u * t->n_labels; k++) {
            if (pack_str(pk, t->labels[k]) != 0)
                return TR_ENOMEM;
        }
        if ((t->conc_key ? pack_str(pk, t->conc_key) : msgpack_pack_nil(pk)) != 0 ||
            msgpack_pack_uint32(pk, t->conc_limit) != 0)
            return TR_ENOMEM;
    }
    return 0;
}

int tr_pipeline_def_pack(msgpack_packer *pk, const struct tr_pipeline_def *def,
                         bool with_source)
{
    int rc = msgpack_pack_array(pk, 16) || msgpack_pack_uint32(pk, CODEC_VERSION) ? TR_ENOMEM : 0;
    if (rc == 0)
        rc = pack_str(pk, def->name);
    if (rc == 0)
        rc = pack_str(pk, def->version);
    if (rc == 0)
        rc = pack_str(pk, def->digest);
    if (rc == 0) {
        if (with_source && def->source != NULL)
            rc = pack_bin(pk, def->source, def->source_len);
        else
            rc = msgpack_pack_nil(pk) ? TR_ENOMEM : 0;
    }
    if (rc == 0)
        rc = pack_bin(pk, def->params, def->params_len);
    if (rc == 0)
        rc = msgpack_pack_array(pk, def->n_pools) ? TR_ENOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < def->n_pools; i++)
        rc = pack_str(pk, def->pools[i]);
    if (rc == 0)
        rc = msgpack_pack_array(pk, def->n_tasks) ? TR_ENOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < def->n_tasks; i++)
        rc = pack_task(pk, &def->tasks[i]);
    if (rc == 0)
        rc = pack_u32s(pk, def->topo, def->n_tasks);
    if (rc == 0)
        rc = pack_u32s(pk, def->sinks, def->n_sinks);
    if (rc == 0) {
        if (def->by_name != NULL)
            rc = pack_u32s(pk, def->by_name, def->n_tasks);
        else
            rc = msgpack_pack_nil(pk) ? TR_ENOMEM : 0;
    }
    if (rc == 0)
        rc = msgpack_pack_array(pk, def->n_triggers) ? TR_ENOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < def->n_triggers; i++)
        rc = pack_trigger(pk, &def->triggers[i]);
    if (rc == 0)
        rc = pack_controls(pk, def);
    /* 15th: extra_params (run control). */
    if (rc == 0)
        rc = (def->extra_params ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ? TR_ENOMEM : 0;
    /* The 16th element: the run's budget, its policy, the tasks' providers. */
    if (rc == 0 && (msgpack_pack_array(pk, 4) || msgpack_pack_double(pk, def->budget_cost) ||
                    msgpack_pack_double(pk, def->budget_tokens) ||
                    msgpack_pack_uint8(pk, def->on_budget)))
        rc = TR_ENOMEM;
    if (rc == 0 && def->task_providers == NULL && msgpack_pack_nil(pk))
        rc = TR_ENOMEM;
    if (rc == 0 && def->task_providers != NULL) {
        rc = msgpack_pack_array(pk, def->n_tasks) ? TR_ENOMEM : 0;
        for (uint32_t i = 0; rc == 0 && i < def->n_tasks; i++) {
            const char *s = def->task_providers[i];
            rc = s ? pack_str(pk, s) : (msgpack_pack_nil(pk) ? TR_ENOMEM : 0);
        }
    }
    return rc;
}

/* ====================================================================== */
/* Decoding                                                                */
/* ====================================================================== */

struct dec
{
    struct tr_mp_rd r;
    struct tr_error *err;
    uint32_t n_tasks;
    bool with_triggers;     /* the graph has its 13th element */
    bool with_controls;     /* and its 14th (run controls) */
    bool with_extra_params; /* and its 15th (run control) */
    bool with_budget;       /* and its 16th (budget) */
};

static int malformed(struct dec *d, const char *what)
{
    return tr_error_set(d->err, TR_EPROTO, "malformed pipeline graph: %s", what);
}

/* A NUL-free string copied; NULL with an error set when absent or out of memory. */
static char *dup_str(struct dec *d, const char *what, int *rc)
{
    struct tr_str s = tr_mp_rd_str(&d->r);
    if (d->r.err != 0 || memchr(s.p, '\0', s.len) != NULL) {
        *rc = malformed(d, what);
        return NULL;
    }
    char *c = tr_strndup(s.p, s.len);
    if (c == NULL)
        *rc = tr_error_set(d->err, TR_ENOMEM, "out of memory");
    return c;
}

/* An array of indices below bound, of exactly n elements unless n is UINT32_MAX. */
static int read_u32s(struct dec *d, uint32_t **out, uint32_t *count, uint32_t n, uint32_t bound,
                     const char *what)
{
    uint32_t m = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || (n != UINT32_MAX && m != n))
        return malformed(d, what);
    *out = NULL;
    if (count != NULL)
        *count = m;
    if (m == 0)
        return 0;
    uint32_t *a = tr_calloc(m, sizeof(*a));
    if (a == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    *out = a;
    for (uint32_t i = 0; i < m; i++) {
        uint64_t v = tr_mp_rd_uint(&d->r);
        if (d->r.err != 0 || v >= bound)
            return malformed(d, what);
        a[i] = (uint32_t)v;
    }
    return 0;
}

static int read_flow(struct dec *d, struct tr_task_def *t)
{
    if (tr_mp_rd_array(&d->r) != 4)
        return malformed(d, "a task's control flow is not an array of 4");
    uint64_t rule = tr_mp_rd_uint(&d->r);
    uint64_t kind = tr_mp_rd_uint(&d->r);
    t->approve_default = tr_mp_rd_bool(&d->r);
    if (d->r.err != 0 || rule >= TR_RULE_COUNT || kind > TR_KIND_APPROVAL)
        return malformed(d, "a task's control flow");
    t->trigger_rule = (uint8_t)rule;
    t->kind = (uint8_t)kind;
    int rc = 0;
    if (!tr_mp_rd_nil(&d->r))
        t->subrun = dup_str(d, "subrun", &rc);
    if (rc != 0)
        return rc;
    if ((t->kind == TR_KIND_SUBRUN) != (t->subrun != NULL))
        return malformed(d, "a subrun without its pipeline");
    return 0;
}

static int read_task(struct dec *d, struct tr_pipeline_def *def, struct tr_task_def *t)
{
    int rc = 0;
    if (tr_mp_rd_array(&d->r) != 13)
        return malformed(d, "a task is not an array of 13");
    t->name = dup_str(d, "task name", &rc);
    if (t->name == NULL)
        return rc;
    uint64_t pool = tr_mp_rd_uint(&d->r);
    uint64_t retries = tr_mp_rd_uint(&d->r);
    int64_t priority = tr_mp_rd_int(&d->r);
    t->backoff = tr_mp_rd_double(&d->r);
    t->timeout = tr_mp_rd_double(&d->r);
    t->cache = tr_mp_rd_bool(&d->r);
    int64_t map = tr_mp_rd_int(&d->r);
    uint64_t gpus = tr_mp_rd_uint(&d->r);
    if (d->r.err != 0 || gpus > TR_TASK_GPUS_MAX || pool >= def->n_pools || retries > UINT16_MAX ||
        priority < INT32_MIN || priority > INT32_MAX || map < -1 || map >= d->n_tasks ||
        !(t->backoff >= 0) || !(t->timeout >= 0))
        return malformed(d, "a task's fields");
    t->pool = (uint16_t)pool;
    t->retries = (uint16_t)retries;
    t->priority = (int32_t)priority;
    t->map = (int32_t)map;
    t->gpus = (uint16_t)gpus;
    rc = read_u32s(d, &t->after, &t->n_after, UINT32_MAX, d->n_tasks, "after");
    if (rc != 0)
        return rc;
    uint64_t up = tr_mp_rd_uint(&d->r);
    if (d->r.err != 0 || up > (uint64_t)t->n_after + (t->map >= 0))
        return malformed(d, "a task's upstream count");
    t->n_upstream = (uint32_t)up;
    rc = read_u32s(d, &t->downstream, &t->n_downstream, UINT32_MAX, d->n_tasks, "downstream");
    return rc != 0 ? rc : read_flow(d, t);
}

/* a holds n indices below n, each once. */
static bool is_permutation(const uint32_t *a, uint32_t n)
{
    uint8_t *seen = tr_calloc(n ? n : 1, 1);
    if (seen == NULL)
        return false;
    bool ok = true;
    for (uint32_t i = 0; ok && i < n; i++) {
        ok = seen[a[i]] == 0;
        seen[a[i]] = 1;
    }
    tr_free(seen);
    return ok;
}

static int read_trigger(struct dec *d, struct tr_trigger_def *t)
{
    int rc = 0;
    if (tr_mp_rd_array(&d->r) != 7)
        return malformed(d, "a trigger is not an array of 7");
    if ((t->name = dup_str(d, "trigger name", &rc)) == NULL)
        return rc;
    uint64_t on = tr_mp_rd_uint(&d->r);
    if (d->r.err != 0 || on > TR_TRIGGER_SCHEDULE)
        return malformed(d, "a trigger's on");
    t->on = (uint8_t)on;
    if ((t->run = dup_str(d, "trigger run", &rc)) == NULL)
        return rc;
    struct tr_str params = tr_mp_rd_bytes(&d->r);
    if (d->r.err != 0 || params.len == 0)
        return malformed(d, "a trigger's params");
    if ((t->params = tr_memdup(params.p, params.len)) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    t->params_len = params.len;
    t->cooldown = tr_mp_rd_double(&d->r);
    if (d->r.err != 0 || !(t->cooldown >= 0))
        return malformed(d, "a trigger's cooldown");
    if (!tr_mp_rd_nil(&d->r) && (t->cron = dup_str(d, "trigger cron", &rc)) == NULL)
        return rc;
    t->has_when = tr_mp_rd_bool(&d->r);
    return d->r.err != 0 ? malformed(d, "a trigger's when") : 0;
}

/* The triggers (the 13th element; a graph of 12 has none). */
static int read_triggers(struct dec *d, struct tr_pipeline_def *def)
{
    uint32_t n = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || n > 4096)
        return malformed(d, "triggers");
    if (n > 0 && (def->triggers = tr_calloc(n, sizeof(*def->triggers))) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    int rc = 0;
    for (; rc == 0 && def->n_triggers < n; def->n_triggers++)
        rc = read_trigger(d, &def->triggers[def->n_triggers]);
    return rc;
}

static int read_task_controls(struct dec *d, struct tr_task_def *t)
{
    int rc = 0;
    uint32_t n = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || n % 2 != 0 || n / 2 > TR_TASK_LABELS_MAX || t->labels != NULL)
        return malformed(d, "a task's labels");
    if (n > 0 && (t->labels = tr_calloc(n, sizeof(char *))) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    for (uint32_t k = 0; k < n; k += 2) {
        t->n_labels++;
        if ((t->labels[k] = dup_str(d, "label", &rc)) == NULL ||
            (t->labels[k + 1] = dup_str(d, "label", &rc)) == NULL)
            return rc;
        if (k > 0 && strcmp(t->labels[k - 2], t->labels[k]) >= 0)
            return malformed(d, "a task's labels are not sorted");
    }
    if (!tr_mp_rd_nil(&d->r) && (t->conc_key = dup_str(d, "concurrency key", &rc)) == NULL)
        return rc;
    uint64_t limit = tr_mp_rd_uint(&d->r);
    if (d->r.err != 0 || limit > TR_CONC_LIMIT_MAX || (t->conc_key != NULL && limit < 1))
        return malformed(d, "a task's concurrency limit");
    t->conc_limit = (uint32_t)limit;
    return 0;
}

/* The run controls (the 14th element, pack_controls). */
static int read_controls(struct dec *d, struct tr_pipeline_def *def)
{
    if (tr_mp_rd_array(&d->r) != 3)
        return malformed(d, "run controls");
    def->timeout = tr_mp_rd_double(&d->r);
    uint64_t mar = tr_mp_rd_uint(&d->r);
    uint32_t n = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || !(def->timeout >= 0) || !isfinite(def->timeout) ||
        mar > TR_CONC_LIMIT_MAX || n > def->n_tasks)
        return malformed(d, "run controls");
    def->max_active_runs = (uint32_t)mar;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t t = (tr_mp_rd_array(&d->r) == 4) ? tr_mp_rd_uint(&d->r) : UINT64_MAX;
        if (d->r.err != 0 || t >= def->n_tasks)
            return malformed(d, "a task's run controls");
        int rc = read_task_controls(d, &def->tasks[t]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The budget (the 16th element): [cost, tokens, on_budget, providers or nil]. */
static int read_budget(struct dec *d, struct tr_pipeline_def *def)
{
    if (tr_mp_rd_array(&d->r) != 4 || d->r.err != 0)
        return malformed(d, "budget");
    def->budget_cost = tr_mp_rd_double(&d->r);
    def->budget_tokens = tr_mp_rd_double(&d->r);
    uint64_t p = tr_mp_rd_uint(&d->r);
    if (d->r.err != 0 || !(def->budget_cost >= 0) || !(def->budget_tokens >= 0) || p > 2)
        return malformed(d, "budget");
    def->on_budget = (uint8_t)p;
    if (tr_mp_rd_nil(&d->r))
        return 0;
    if (tr_mp_rd_array(&d->r) != def->n_tasks || d->r.err != 0)
        return malformed(d, "task providers");
    if ((def->task_providers = tr_calloc(def->n_tasks, sizeof(char *))) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        if (tr_mp_rd_nil(&d->r))
            continue;
        if ((def->task_providers[i] = dup_str(d, "task providers", &rc)) == NULL)
            return rc;
    }
    return 0;
}

static int read_def(struct dec *d, struct tr_pipeline_def *def, const struct tr_pipeline_limits *lim)
{
    int rc = 0;
    uint32_t fields = tr_mp_rd_array(&d->r);
    if (fields < 12 || fields > 16 || tr_mp_rd_uint(&d->r) != CODEC_VERSION || d->r.err != 0)
        return malformed(d, "not a version 1 graph");
    d->with_triggers = fields >= 13;
    d->with_controls = fields >= 14;
    d->with_extra_params = fields >= 15;
    d->with_budget = fields >= 16;
    if ((def->name = dup_str(d, "name", &rc)) == NULL ||
        (def->version = dup_str(d, "version", &rc)) == NULL)
        return rc;
    struct tr_str digest = tr_mp_rd_str(&d->r);
    if (d->r.err != 0 || digest.len != 64)
        return malformed(d, "digest");
    memcpy(def->digest, digest.p, 64);
    def->digest[64] = '\0';
    if (!tr_mp_rd_nil(&d->r)) {
        struct tr_str src = tr_mp_rd_bytes(&d->r);
        if (d->r.err != 0)
            return malformed(d, "source");
        def->source = tr_strndup(src.p, src.len);
        def->source_len = src.len;
        if (def->source == NULL)
            return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    }
    struct tr_str params = tr_mp_rd_bytes(&d->r);
    if (d->r.err != 0 || params.len == 0)
        return malformed(d, "params");
    def->params = tr_memdup(params.p, params.len);
    def->params_len = params.len;
    if (def->params == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");

    uint32_t n_pools = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || n_pools > UINT16_MAX + 1u)
        return malformed(d, "pools");
    if (n_pools > 0 && (def->pools = tr_calloc(n_pools, sizeof(*def->pools))) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    for (; def->n_pools < n_pools; def->n_pools++) {
        if ((def->pools[def->n_pools] = dup_str(d, "pool name", &rc)) == NULL)
            return rc;
    }

    uint32_t n = tr_mp_rd_array(&d->r);
    if (d->r.err != 0 || n == 0)
        return malformed(d, "tasks");
    if (n > lim->max_tasks)
        return tr_error_set(d->err, TR_ELIMIT, "pipeline '%s' has %u tasks, more than the "
                            "limit of %u", def->name, n, lim->max_tasks);
    if ((def->tasks = tr_calloc(n, sizeof(*def->tasks))) == NULL)
        return tr_error_set(d->err, TR_ENOMEM, "out of memory");
    d->n_tasks = n;
    for (; def->n_tasks < n; def->n_tasks++) {
        rc = read_task(d, def, &def->tasks[def->n_tasks]);
        if (rc != 0) {
            def->n_tasks++; /* the partly read task is freed with the others */
            return rc;
        }
    }
    rc = read_u32s(d, &def->topo, NULL, n, n, "topo");
    if (rc == 0 && !is_permutation(def->topo, n))
        rc = malformed(d, "topo is not a permutation");
    if (rc == 0)
        rc = read_u32s(d, &def->sinks, &def->n_sinks, UINT32_MAX, n, "sinks");
    if (rc == 0 && def->n_sinks > n)
        rc = malformed(d, "sinks");
    if (rc != 0)
        return rc;
    if (!tr_mp_rd_nil(&d->r)) {
        rc = read_u32s(d, &def->by_name, NULL, n, n, "by_name");
        if (rc == 0 && !is_permutation(def->by_name, n))
            rc = malformed(d, "by_name is not a permutation");
        for (uint32_t i = 1; rc == 0 && i < n; i++) {
            if (strcmp(def->tasks[def->by_name[i - 1]].name,
                       def->tasks[def->by_name[i]].name) >= 0)
                rc = malformed(d, "by_name is not sorted");
        }
    }
    if (rc == 0 && d->with_triggers)
        rc = read_triggers(d, def);
    if (rc == 0 && d->with_controls)
        rc = read_controls(d, def);
    if (rc == 0 && d->with_extra_params) {
        def->extra_params = tr_mp_rd_bool(&d->r);
        if (d->r.err != 0)
            rc = malformed(d, "extra_params");
    }
    if (rc == 0 && d->with_budget)
        rc = read_budget(d, def);
    return rc;
}

int tr_pipeline_def_unpack(const void *p, size_t len, const struct tr_pipeline_limits *lim,
                           struct tr_pipeline_def **out, size_t *used, struct tr_error *err)
{
    *out = NULL;
    if (lim == NULL)
        lim = &tr_pipeline_default_limits;
    struct tr_pipeline_def *def = tr_calloc(1, sizeof(*def));
    if (def == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    struct dec d = {.err = err};
    tr_mp_rd_init(&d.r, p, len);
    int rc = read_def(&d, def, lim);
    if (rc == 0 && d.r.err != 0)
        rc = malformed(&d, "truncated");
    if (rc != 0) {
        tr_pipeline_def_free(def);
        return rc;
    }
    if (used != NULL)
        *used = len - tr_mp_rd_left(&d.r);
    *out = def;
    return 0;
}
