/*
 * etcd_kv.c - KV, compaction and lease requests of the etcd client (see
 * etcd.h): turns tr_etcd_op / tr_etcd_txn into protobuf requests and starts
 * them as unary calls (etcd_call.c).
 *
 * Requests point into the caller's buffers only until they are packed,
 * which happens before the starting function returns; the few buffers made
 * here (prefix range ends, txn arrays) are freed at the same point.
 *
 * Loop thread only.
 */
#include "lib/etcd/etcd_int.h"

#include "lib/base/alloc.h"

/* etcd's "\0": as a range end, every key from key on; as a key, the first. */
static uint8_t zero_byte[1];

size_t tr_etcd_prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    if (len > 0)
        memcpy(out, prefix, len);
    while (len > 0 && out[len - 1] == 0xff)
        len--;
    if (len == 0) {
        out[0] = 0;
        return 1;
    }
    out[len - 1]++;
    return len;
}

int etcd_range_make(struct etcd_range *r, const void *key, size_t key_len, const void *range_end,
                    size_t range_end_len, unsigned flags)
{
    memset(r, 0, sizeof(*r));
    unsigned range_flags = flags & (TR_ETCD_PREFIX | TR_ETCD_FROM_KEY);
    if ((range_end && range_flags) || range_flags == (TR_ETCD_PREFIX | TR_ETCD_FROM_KEY))
        return TR_EINVAL;
    if ((key_len && !key) || (range_end_len && !range_end))
        return TR_EINVAL;
    r->key.data = (uint8_t *)key;
    r->key.len = key_len;
    if (range_end) {
        r->end.data = (uint8_t *)range_end;
        r->end.len = range_end_len;
        return 0;
    }
    if (!range_flags)
        return 0;
    if (key_len == 0) {
        /* An empty key is "no key" to etcd; "\0" is the first key. */
        r->key.data = zero_byte;
        r->key.len = 1;
    }
    if ((flags & TR_ETCD_FROM_KEY) || key_len == 0) {
        r->end.data = zero_byte;
        r->end.len = 1;
        return 0;
    }
    r->end_buf = tr_malloc(key_len);
    if (!r->end_buf)
        return TR_ENOMEM;
    r->end.len = tr_etcd_prefix_end(key, key_len, r->end_buf);
    r->end.data = r->end_buf;
    return 0;
}

void etcd_range_release(struct etcd_range *r)
{
    tr_free_null(&r->end_buf);
}

/* ===================================================================== */
/* Requests                                                              */
/* ===================================================================== */

/* One op of a request: the RequestOp wrapper and the request it points to. */
struct pb_op
{
    Etcdserverpb__RequestOp req;
    union
    {
        Etcdserverpb__RangeRequest range;
        Etcdserverpb__PutRequest put;
        Etcdserverpb__DeleteRangeRequest del;
    };
    struct etcd_range keys;
};

/* Fills o from op as a request of type; 0, TR_EINVAL or TR_ENOMEM. */
static int build_op(struct pb_op *o, const struct tr_etcd_op *op, enum tr_etcd_op_type type)
{
    Etcdserverpb__RequestOp init = ETCDSERVERPB__REQUEST_OP__INIT;
    o->req = init;
    unsigned f = op->flags;
    if (type == TR_ETCD_OP_PUT) {
        if (op->range_end || (f & (TR_ETCD_PREFIX | TR_ETCD_FROM_KEY)) ||
            (op->value_len && !op->value) || (op->key_len && !op->key))
            return TR_EINVAL;
        Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
        p.key.data = (uint8_t *)op->key;
        p.key.len = op->key_len;
        p.value.data = (uint8_t *)op->value;
        p.value.len = op->value_len;
        p.lease = op->lease;
        p.prev_kv = (f & TR_ETCD_PREV_KV) != 0;
        p.ignore_value = (f & TR_ETCD_IGNORE_VALUE) != 0;
        p.ignore_lease = (f & TR_ETCD_IGNORE_LEASE) != 0;
        o->put = p;
        o->req.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        o->req.request_put = &o->put;
        memset(&o->keys, 0, sizeof(o->keys));
        return 0;
    }
    if (type != TR_ETCD_OP_RANGE && type != TR_ETCD_OP_DELETE)
        return TR_EINVAL;
    if (op->limit < 0 || op->revision < 0)
        return TR_EINVAL;
    int rc = etcd_range_make(&o->keys, op->key, op->key_len, op->range_end, op->range_end_len, f);
    if (rc < 0)
        return rc;
    if (type == TR_ETCD_OP_RANGE) {
        Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
        r.key = o->keys.key;
        r.range_end = o->keys.end;
        r.limit = op->limit;
        r.revision = op->revision;
        r.serializable = (f & TR_ETCD_SERIALIZABLE) != 0;
        r.keys_only = (f & TR_ETCD_KEYS_ONLY) != 0;
        r.count_only = (f & TR_ETCD_COUNT_ONLY) != 0;
        o->range = r;
        o->req.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        o->req.request_range = &o->range;
    } else {
        Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        d.key = o->keys.key;
        d.range_end = o->keys.end;
        d.prev_kv = (f & TR_ETCD_PREV_KV) != 0;
        o->del = d;
        o->req.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        o->req.request_delete_range = &o->del;
    }
    return 0;
}

static int start_op(struct tr_etcd *e, const struct tr_etcd_op *op, enum tr_etcd_op_type type,
                    const char *method, tr_etcd_fn cb, void *arg)
{
    if (e->closing)
        return TR_ECANCELED;
    struct pb_op o;
    int rc = build_op(&o, op, type);
    if (rc < 0)
        return rc;
    const ProtobufCMessage *m = type == TR_ETCD_OP_PUT     ? &o.put.base
                                : type == TR_ETCD_OP_RANGE ? &o.range.base
                                                           : &o.del.base;
    rc = etcd_unary(e, type, method, m, cb, arg);
    etcd_range_release(&o.keys);
    return rc;
}

int tr_etcd_range(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb, void *arg)
{
    return start_op(e, op, TR_ETCD_OP_RANGE, ETCD_M_RANGE, cb, arg);
}

int tr_etcd_put(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb, void *arg)
{
    return start_op(e, op, TR_ETCD_OP_PUT, ETCD_M_PUT, cb, arg);
}

int tr_etcd_delete(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb, void *arg)
{
    return start_op(e, op, TR_ETCD_OP_DELETE, ETCD_M_DELETE, cb, arg);
}

/* ===================================================================== */
/* Txn                                                                   */
/* ===================================================================== */

struct pb_cmp
{
    Etcdserverpb__Compare c;
    struct etcd_range keys;
};

static int build_cmp(struct pb_cmp *o, const struct tr_etcd_compare *c)
{
    Etcdserverpb__Compare init = ETCDSERVERPB__COMPARE__INIT;
    o->c = init;
    if ((unsigned)c->target > TR_ETCD_CMP_LEASE || (unsigned)c->result > TR_ETCD_NOT_EQUAL ||
        (c->value_len && !c->value) || (c->flags & ~(unsigned)TR_ETCD_PREFIX))
        return TR_EINVAL;
    int rc = etcd_range_make(&o->keys, c->key, c->key_len, NULL, 0, c->flags);
    if (rc < 0)
        return rc;
    /* Both enums use etcd's numbering. */
    o->c.result = (Etcdserverpb__Compare__CompareResult)c->result;
    o->c.target = (Etcdserverpb__Compare__CompareTarget)c->target;
    o->c.key = o->keys.key;
    o->c.range_end = o->keys.end;
    switch (c->target) {
    case TR_ETCD_CMP_VERSION:
        o->c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        o->c.version = c->number;
        break;
    case TR_ETCD_CMP_CREATE:
        o->c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        o->c.create_revision = c->number;
        break;
    case TR_ETCD_CMP_MOD:
        o->c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        o->c.mod_revision = c->number;
        break;
    case TR_ETCD_CMP_VALUE:
        o->c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        o->c.value.data = (uint8_t *)c->value;
        o->c.value.len = c->value_len;
        break;
    case TR_ETCD_CMP_LEASE:
        o->c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        o->c.lease = c->number;
        break;
    }
    return 0;
}

int tr_etcd_txn(struct tr_etcd *e, const struct tr_etcd_txn *txn, tr_etcd_fn cb, void *arg)
{
    if (e->closing)
        return TR_ECANCELED;
    if ((txn->n_compares && !txn->compares) || (txn->n_success && !txn->success) ||
        (txn->n_failure && !txn->failure))
        return TR_EINVAL;
    size_t n_ops = txn->n_success + txn->n_failure;
    struct pb_cmp *cmps = txn->n_compares ? tr_calloc(txn->n_compares, sizeof(*cmps)) : NULL;
    Etcdserverpb__Compare **cmp_ptrs =
        txn->n_compares ? tr_calloc(txn->n_compares, sizeof(*cmp_ptrs)) : NULL;
    struct pb_op *ops = n_ops ? tr_calloc(n_ops, sizeof(*ops)) : NULL;
    Etcdserverpb__RequestOp **op_ptrs = n_ops ? tr_calloc(n_ops, sizeof(*op_ptrs)) : NULL;
    int rc = 0;
    size_t built_cmps = 0, built_ops = 0;
    if ((txn->n_compares && (!cmps || !cmp_ptrs)) || (n_ops && (!ops || !op_ptrs))) {
        rc = TR_ENOMEM;
        goto out_free;
    }
    for (; built_cmps < txn->n_compares; built_cmps++) {
        rc = build_cmp(&cmps[built_cmps], &txn->compares[built_cmps]);
        if (rc < 0)
            goto out_free;
        cmp_ptrs[built_cmps] = &cmps[built_cmps].c;
    }
    for (; built_ops < n_ops; built_ops++) {
        const struct tr_etcd_op *op = built_ops < txn->n_success
                                          ? &txn->success[built_ops]
                                          : &txn->failure[built_ops - txn->n_success];
        rc = build_op(&ops[built_ops], op, op->type);
        if (rc < 0)
            goto out_free;
        op_ptrs[built_ops] = &ops[built_ops].req;
    }
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = txn->n_compares;
    t.compare = cmp_ptrs;
    t.n_success = txn->n_success;
    t.success = op_ptrs;
    t.n_failure = txn->n_failure;
    t.failure = op_ptrs ? op_ptrs + txn->n_success : NULL;
    rc = etcd_unary(e, TR_ETCD_OP_TXN, ETCD_M_TXN, &t.base, cb, arg);

out_free:
    for (size_t i = 0; i < built_ops; i++)
        etcd_range_release(&ops[i].keys);
    for (size_t i = 0; i < built_cmps; i++)
        etcd_range_release(&cmps[i].keys);
    tr_free(op_ptrs);
    tr_free(ops);
    tr_free(cmp_ptrs);
    tr_free(cmps);
    return rc;
}

/* ===================================================================== */
/* Compaction and leases                                                 */
/* ===================================================================== */

int tr_etcd_compact(struct tr_etcd *e, int64_t revision, bool physical, tr_etcd_fn cb,
                    void *arg)
{
    if (revision <= 0)
        return TR_EINVAL;
    Etcdserverpb__CompactionRequest r = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    r.revision = revision;
    r.physical = physical;
    return etcd_unary(e, TR_ETCD_OP_COMPACT, ETCD_M_COMPACT, &r.base, cb, arg);
}

int tr_etcd_lease_grant(struct tr_etcd *e, int64_t ttl_s, int64_t id, tr_etcd_fn cb, void *arg)
{
    if (ttl_s <= 0 || id < 0)
        return TR_EINVAL;
    Etcdserverpb__LeaseGrantRequest r = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    r.ttl = ttl_s;
    r.id = id;
    return etcd_unary(e, TR_ETCD_OP_LEASE_GRANT, ETCD_M_LEASE_GRANT, &r.base, cb, arg);
}

int tr_etcd_lease_revoke(struct tr_etcd *e, int64_t id, tr_etcd_fn cb, void *arg)
{
    if (id <= 0)
        return TR_EINVAL;
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    r.id = id;
    return etcd_unary(e, TR_ETCD_OP_LEASE_REVOKE, ETCD_M_LEASE_REVOKE, &r.base, cb, arg);
}

int tr_etcd_lease_time_to_live(struct tr_etcd *e, int64_t id, bool keys, tr_etcd_fn cb,
                               void *arg)
{
    if (id <= 0)
        return TR_EINVAL;
    Etcdserverpb__LeaseTimeToLiveRequest r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    r.id = id;
    r.keys = keys;
    return etcd_unary(e, TR_ETCD_OP_LEASE_TTL, ETCD_M_LEASE_TTL, &r.base, cb, arg);
}
