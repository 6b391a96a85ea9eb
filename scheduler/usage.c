/*
 * usage.c - the LLM calls of task instances and their sums per run.
 *
 * A worker's RESULT carries the calls its attempt made (`usage`, a msgpack
 * array of maps: provider, model, prompt_digest, prompt_tokens,
 * completion_tokens, cost, latency_ms, cached; docs/protocol.md). An
 * instance keeps the calls of all its attempts, failed ones included since
 * they cost money too, as one msgpack array stored with its task record.
 * A run keeps the sum as a JSON object plus its text, updated as each
 * attempt's calls arrive, so that GET /v1/runs/{id} splices the text in
 * and never re-scans the instances.
 *
 * Bounds: an instance keeps at most USAGE_MAX_CALLS calls and
 * USAGE_MAX_BYTES of them (later calls are still summed into the run, not
 * listed); a run's sum names at most USAGE_MAX_KEYS models and as many
 * prompt digests.
 *
 * Loop thread only.
 */
#include "scheduler/usage.h"

#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/wire/proto.h"
#include "lib/wire/mp_json.h"

#define USAGE_MAX_CALLS 4096
#define USAGE_MAX_BYTES (1u << 20)
#define USAGE_MAX_KEYS  256

/* The element count of the msgpack array at p and its header's size; -1 if not an array. */
static long array_header(const unsigned char *p, size_t len, size_t *hdr)
{
    if (len == 0)
        return -1;
    if ((p[0] & 0xf0) == 0x90) {
        *hdr = 1;
        return p[0] & 0x0f;
    }
    if (p[0] == 0xdc && len >= 3) {
        *hdr = 3;
        return (long)((uint32_t)p[1] << 8 | p[2]);
    }
    if (p[0] == 0xdd && len >= 5) {
        *hdr = 5;
        return (long)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
    }
    return -1;
}

/* Writes a 32-bit array header, the form an instance's list always has. */
static void put_header(unsigned char *p, uint32_t n)
{
    p[0] = 0xdd;
    p[1] = (unsigned char)(n >> 24);
    p[2] = (unsigned char)(n >> 16);
    p[3] = (unsigned char)(n >> 8);
    p[4] = (unsigned char)n;
}

int usage_concat(char **list, uint32_t *list_len, const void *calls, size_t len)
{
    const unsigned char *p = calls;
    size_t hdr = 0;
    long n = array_header(p, len, &hdr);
    long whole = tr_mp_check(calls, len, &tr_mp_default_limits);
    if (n < 0 || whole < 0 || (size_t)whole != len)
        return TR_EPROTO;
    if (n == 0)
        return 0;
    uint32_t have = 0;
    size_t have_bytes = 5;
    if (*list != NULL) {
        size_t oh = 0;
        long on = array_header((const unsigned char *)*list, *list_len, &oh);
        TR_ASSERT(on >= 0 && oh == 5);
        have = (uint32_t)on;
        have_bytes = *list_len;
    }
    /* Count what fits under the bounds before touching the list. */
    size_t off = hdr, take_bytes = 0;
    uint32_t take = 0;
    for (long i = 0; i < n; i++) {
        long sz = tr_mp_check(p + off, len - off, &tr_mp_default_limits);
        TR_ASSERT(sz > 0);
        if (have + take >= USAGE_MAX_CALLS ||
            have_bytes + take_bytes + (size_t)sz > USAGE_MAX_BYTES)
            break;
        take_bytes += (size_t)sz;
        take++;
        off += (size_t)sz;
    }
    if (take == 0)
        return TR_E2BIG;
    char *grown = tr_realloc(*list, have_bytes + take_bytes);
    if (grown == NULL)
        return TR_ENOMEM;
    memcpy(grown + have_bytes, p + hdr, take_bytes);
    put_header((unsigned char *)grown, have + take);
    *list = grown;
    *list_len = (uint32_t)(have_bytes + take_bytes);
    return take < (uint32_t)n ? TR_E2BIG : 0;
}

/* ====================================================================== */
/* Sums                                                                    */
/* ====================================================================== */

json_t *usage_sum_new(void)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = json_object_set_new(o, "calls", json_integer(0));
    bad |= json_object_set_new(o, "prompt_tokens", json_integer(0));
    bad |= json_object_set_new(o, "completion_tokens", json_integer(0));
    bad |= json_object_set_new(o, "cost", json_real(0));
    bad |= json_object_set_new(o, "latency_ms", json_real(0));
    bad |= json_object_set_new(o, "by_model", json_object());
    bad |= json_object_set_new(o, "prompt_digests", json_array());
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A non-negative count from a call record's field; 0 when absent or not a number. */
static json_int_t count_of(const json_t *call, const char *key)
{
    const json_t *v = json_object_get(call, key);
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? json_integer_value(v) : 0;
    if (json_is_real(v) && json_real_value(v) > 0 && json_real_value(v) < 9e15)
        return (json_int_t)json_real_value(v);
    return 0;
}

/* A non-negative finite number from a call record's field (cost, latency_ms); else 0. */
static double real_of(const json_t *call, const char *key)
{
    const json_t *v = json_object_get(call, key);
    double c = json_is_number(v) ? json_number_value(v) : 0;
    return isfinite(c) && c > 0 ? c : 0;
}

static int add_int(json_t *o, const char *key, json_int_t d)
{
    json_t *v = json_object_get(o, key);
    return json_integer_set(v, json_integer_value(v) + d);
}

static int add_real(json_t *o, const char *key, double d)
{
    json_t *v = json_object_get(o, key);
    return json_real_set(v, json_real_value(v) + d);
}

static const char *str_of(const json_t *call, const char *key)
{
    const char *s = json_string_value(json_object_get(call, key));
    return s ? s : "";
}

/* Adds one call record (a JSON object) to sum. */
static int sum_call(json_t *sum, const json_t *call)
{
    /* A blocked call's guard record: counted apart, not as a call. */
    if (json_object_get(call, "guard") != NULL) {
        json_t *g = json_object_get(sum, "guard_blocked");
        if (g == NULL)
            return json_object_set_new(sum, "guard_blocked", json_integer(1)) == 0 ? 0
                                                                                 : TR_ENOMEM;
        return json_integer_set(g, json_integer_value(g) + 1) == 0 ? 0 : TR_ENOMEM;
    }
    json_int_t pt = count_of(call, "prompt_tokens");
    json_int_t ct = count_of(call, "completion_tokens");
    double cost = real_of(call, "cost");
    int rc = add_int(sum, "calls", 1);
    rc |= add_int(sum, "prompt_tokens", pt);
    rc |= add_int(sum, "completion_tokens", ct);
    rc |= add_real(sum, "cost", cost);
    rc |= add_real(sum, "latency_ms", real_of(call, "latency_ms"));
    if (rc)
        return TR_ENOMEM;
    char key[300];
    snprintf(key, sizeof(key), "%.140s/%.140s", str_of(call, "provider"), str_of(call, "model"));
    json_t *models = json_object_get(sum, "by_model");
    json_t *m = json_object_get(models, key);
    if (m == NULL && json_object_size(models) < USAGE_MAX_KEYS) {
        m = json_object();
        if (m == NULL || json_object_set_new(models, key, m) != 0)
            return TR_ENOMEM;
        rc = json_object_set_new(m, "calls", json_integer(0));
        rc |= json_object_set_new(m, "prompt_tokens", json_integer(0));
        rc |= json_object_set_new(m, "completion_tokens", json_integer(0));
        rc |= json_object_set_new(m, "cost", json_real(0));
        if (rc)
            return TR_ENOMEM;
    }
    if (m != NULL) {
        rc = add_int(m, "calls", 1);
        rc |= add_int(m, "prompt_tokens", pt);
        rc |= add_int(m, "completion_tokens", ct);
        rc |= add_real(m, "cost", cost);
        if (rc)
            return TR_ENOMEM;
    }
    const char *digest = json_string_value(json_object_get(call, "prompt_digest"));
    if (digest == NULL || digest[0] == '\0')
        return 0;
    json_t *digests = json_object_get(sum, "prompt_digests");
    size_t i;
    json_t *d;
    json_array_foreach(digests, i, d)
    {
        if (strcmp(json_string_value(d), digest) == 0)
            return 0;
    }
    if (json_array_size(digests) >= USAGE_MAX_KEYS)
        return 0;
    return json_array_append_new(digests, json_string(digest)) == 0 ? 0 : TR_ENOMEM;
}

int usage_sum_add(json_t *sum, const void *calls, size_t len)
{
    if (calls == NULL || len == 0)
        return 0;
    struct tr_error err;
    tr_error_init(&err);
    json_t *arr = tr_mp_bytes_to_json(calls, len, &err);
    if (arr == NULL)
        return err.code ? err.code : TR_ENOMEM;
    int rc = 0;
    size_t i;
    json_t *call;
    json_array_foreach(arr, i, call)
    {
        if (json_is_object(call) && rc == 0)
            rc = sum_call(sum, call);
    }
    json_decref(arr);
    return rc;
}

json_t *usage_sum_brief(const json_t *sum)
{
    static const char *const keys[] = {"calls", "prompt_tokens", "completion_tokens", "cost",
                                       "latency_ms"};
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < TR_ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(sum, keys[i]);
        if (v != NULL && json_object_set(o, keys[i], v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *usage_records_json(const void *calls, size_t len)
{
    if (calls == NULL || len == 0)
        return json_array();
    struct tr_error err;
    tr_error_init(&err);
    json_t *arr = tr_mp_bytes_to_json(calls, len, &err);
    return json_is_array(arr) ? arr : (json_decref(arr), json_array());
}

uint32_t usage_guards(const void *calls, size_t len,
                      void (*fn)(void *arg, const char *check, const char *stage), void *arg)
{
    /* The key "guard" packs as fixstr 0xa5 "guard": no such bytes, no record. */
    if (calls == NULL || len < 6 || memmem(calls, len, "\xa5guard", 6) == NULL)
        return 0;
    struct tr_error err;
    tr_error_init(&err);
    json_t *arr = tr_mp_bytes_to_json(calls, len, &err);
    uint32_t n = 0;
    size_t i;
    json_t *call;
    json_array_foreach(arr, i, call)
    {
        const char *check = json_string_value(json_object_get(call, "guard"));
        const char *stage = json_string_value(json_object_get(call, "stage"));
        if (check != NULL) {
            fn(arg, check, stage ? stage : "");
            n++;
        }
    }
    json_decref(arr);
    return n;
}

/* ====================================================================== */
/* Instances and runs                                                      */
/* ====================================================================== */

void run_usage_add(struct run *r, const void *calls, size_t len)
{
    if (calls == NULL || len == 0)
        return;
    if (r->usage_sum == NULL) {
        r->usage_sum = usage_sum_new();
        if (r->usage_sum == NULL) {
            tr_warn("cannot sum usage run=%s: out of memory", r->id);
            return;
        }
    }
    int rc = usage_sum_add(r->usage_sum, calls, len);
    if (rc < 0)
        tr_warn("cannot sum usage run=%s: %s", r->id, tr_strerror(rc));
    char *text = json_dumps(r->usage_sum, JSON_COMPACT);
    if (text == NULL) {
        tr_warn("cannot sum usage run=%s: out of memory", r->id);
        return;
    }
    tr_free(r->usage_json);
    r->usage_json = text;
}

void inst_usage_add(struct inst *in, const void *calls, size_t len)
{
    if (calls == NULL || len == 0)
        return;
    struct run *r = in->run;
    const char *task = r->pipe->def->tasks[in->task].name;
    int rc = usage_concat(&in->usage, &in->usage_len, calls, len);
    if (rc == TR_EPROTO) {
        tr_warn("dropped usage run=%s task=%s index=%u: not a msgpack array", r->id, task,
                in->index);
        return;
    }
    if (rc == TR_E2BIG)
        tr_warn("usage of run=%s task=%s index=%u over %u calls or %u bytes: later calls summed "
                "but not listed",
                r->id, task, in->index, USAGE_MAX_CALLS, USAGE_MAX_BYTES);
    else if (rc < 0)
        tr_warn("cannot keep usage run=%s task=%s index=%u: %s", r->id, task, in->index,
                tr_strerror(rc));
    run_usage_add(r, calls, len);
}
