/*
 * etcd_call.c - gRPC calls of the etcd client: the protobuf codec, unary
 * calls and bidi streams (see etcd_int.h).
 *
 * A unary call is one batch of the six ops (send metadata, message and
 * close; receive metadata, message and status) and one registered object
 * that completes when that batch comes back. A stream keeps at most one
 * batch of each kind in flight, because gRPC refuses a second pending op of
 * a kind with GRPC_CALL_ERROR_TOO_MANY_OPERATIONS: sends are held back by
 * their owners while `sending`, the receive is re-armed after each answer,
 * and the status op is started with the call. The first receive batch
 * carries RECV_INITIAL_METADATA too: a RECV_MESSAGE without it never
 * completes, and a batch of RECV_INITIAL_METADATA alone would wait for
 * etcd's first answer (grpc-go sends the headers with the first response).
 *
 * Loop thread only; the completion thread only queues tags.
 */
#include "lib/etcd/etcd_int.h"

#include <grpc/support/alloc.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

/* ===================================================================== */
/* Codec                                                                 */
/* ===================================================================== */

static void *pb_alloc(void *data, size_t size)
{
    TR_UNUSED(data);
    return tr_malloc(size);
}

static void pb_free(void *data, void *p)
{
    TR_UNUSED(data);
    tr_free(p);
}

ProtobufCAllocator etcd_pb_allocator = {.alloc = pb_alloc, .free = pb_free};

grpc_byte_buffer *etcd_pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *etcd_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &etcd_pb_allocator,
                                                    GRPC_SLICE_LENGTH(s),
                                                    GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* ===================================================================== */
/* Answers to result views                                               */
/* ===================================================================== */

void etcd_kv_view(const Mvccpb__KeyValue *src, struct tr_etcd_kv *dst)
{
    dst->key = src->key.data;
    dst->key_len = src->key.len;
    dst->value = src->value.len ? src->value.data : NULL;
    dst->value_len = src->value.len;
    dst->create_revision = src->create_revision;
    dst->mod_revision = src->mod_revision;
    dst->version = src->version;
    dst->lease = src->lease;
}

static int64_t header_rev(const Etcdserverpb__ResponseHeader *h)
{
    return h ? h->revision : 0;
}

/* The type of the answer a txn ResponseOp holds. */
static enum tr_etcd_op_type op_type(const Etcdserverpb__ResponseOp *op,
                                    const ProtobufCMessage **m)
{
    switch (op->response_case) {
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        *m = &op->response_put->base;
        return TR_ETCD_OP_PUT;
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
        *m = &op->response_delete_range->base;
        return TR_ETCD_OP_DELETE;
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
        *m = &op->response_txn->base;
        return TR_ETCD_OP_TXN;
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
        *m = &op->response_range->base;
        return TR_ETCD_OP_RANGE;
    default:
        *m = NULL;
        return TR_ETCD_OP_RANGE;
    }
}

size_t etcd_result_count_kvs(enum tr_etcd_op_type type, const ProtobufCMessage *m)
{
    if (!m)
        return 0;
    switch (type) {
    case TR_ETCD_OP_RANGE:
        return ((const Etcdserverpb__RangeResponse *)m)->n_kvs;
    case TR_ETCD_OP_PUT:
        return ((const Etcdserverpb__PutResponse *)m)->prev_kv ? 1 : 0;
    case TR_ETCD_OP_DELETE:
        return ((const Etcdserverpb__DeleteRangeResponse *)m)->n_prev_kvs;
    case TR_ETCD_OP_LEASE_TTL:
        return ((const Etcdserverpb__LeaseTimeToLiveResponse *)m)->n_keys;
    case TR_ETCD_OP_TXN: {
        const Etcdserverpb__TxnResponse *t = (const void *)m;
        size_t n = 0;
        for (size_t i = 0; i < t->n_responses; i++) {
            const ProtobufCMessage *sub;
            enum tr_etcd_op_type st = op_type(t->responses[i], &sub);
            n += etcd_result_count_kvs(st, sub);
        }
        return n;
    }
    default:
        return 0;
    }
}

size_t etcd_result_count_subs(enum tr_etcd_op_type type, const ProtobufCMessage *m)
{
    if (!m || type != TR_ETCD_OP_TXN)
        return 0;
    const Etcdserverpb__TxnResponse *t = (const void *)m;
    size_t n = t->n_responses;
    for (size_t i = 0; i < t->n_responses; i++) {
        const ProtobufCMessage *sub;
        enum tr_etcd_op_type st = op_type(t->responses[i], &sub);
        n += etcd_result_count_subs(st, sub);
    }
    return n;
}

void etcd_result_fill(enum tr_etcd_op_type type, const ProtobufCMessage *m,
                      struct tr_etcd_result *res, struct tr_etcd_kv **kvs,
                      struct tr_etcd_result **subs)
{
    res->type = type;
    res->message = "";
    if (!m)
        return;
    switch (type) {
    case TR_ETCD_OP_RANGE: {
        const Etcdserverpb__RangeResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        res->kvs = *kvs;
        res->n_kvs = r->n_kvs;
        for (size_t i = 0; i < r->n_kvs; i++)
            etcd_kv_view(r->kvs[i], (*kvs)++);
        res->more = r->more;
        res->count = r->count;
        break;
    }
    case TR_ETCD_OP_PUT: {
        const Etcdserverpb__PutResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        if (r->prev_kv) {
            res->prev_kvs = *kvs;
            res->n_prev_kvs = 1;
            etcd_kv_view(r->prev_kv, (*kvs)++);
        }
        break;
    }
    case TR_ETCD_OP_DELETE: {
        const Etcdserverpb__DeleteRangeResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        res->deleted = r->deleted;
        res->prev_kvs = *kvs;
        res->n_prev_kvs = r->n_prev_kvs;
        for (size_t i = 0; i < r->n_prev_kvs; i++)
            etcd_kv_view(r->prev_kvs[i], (*kvs)++);
        break;
    }
    case TR_ETCD_OP_TXN: {
        const Etcdserverpb__TxnResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        res->succeeded = r->succeeded;
        struct tr_etcd_result *out = *subs;
        res->responses = out;
        res->n_responses = r->n_responses;
        *subs += r->n_responses;
        for (size_t i = 0; i < r->n_responses; i++) {
            const ProtobufCMessage *sub;
            enum tr_etcd_op_type st = op_type(r->responses[i], &sub);
            etcd_result_fill(st, sub, &out[i], kvs, subs);
        }
        break;
    }
    case TR_ETCD_OP_COMPACT:
        res->revision = header_rev(((const Etcdserverpb__CompactionResponse *)m)->header);
        break;
    case TR_ETCD_OP_LEASE_GRANT: {
        const Etcdserverpb__LeaseGrantResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        res->lease_id = r->id;
        res->ttl = r->ttl;
        break;
    }
    case TR_ETCD_OP_LEASE_REVOKE:
        res->revision = header_rev(((const Etcdserverpb__LeaseRevokeResponse *)m)->header);
        break;
    case TR_ETCD_OP_LEASE_TTL: {
        const Etcdserverpb__LeaseTimeToLiveResponse *r = (const void *)m;
        res->revision = header_rev(r->header);
        res->lease_id = r->id;
        res->ttl = r->ttl;
        res->granted_ttl = r->grantedttl;
        res->kvs = *kvs;
        res->n_kvs = r->n_keys;
        for (size_t i = 0; i < r->n_keys; i++) {
            struct tr_etcd_kv *kv = (*kvs)++;
            memset(kv, 0, sizeof(*kv));
            kv->key = r->keys[i].data;
            kv->key_len = r->keys[i].len;
        }
        break;
    }
    }
}

static const ProtobufCMessageDescriptor *resp_desc(enum tr_etcd_op_type type)
{
    switch (type) {
    case TR_ETCD_OP_RANGE:
        return &etcdserverpb__range_response__descriptor;
    case TR_ETCD_OP_PUT:
        return &etcdserverpb__put_response__descriptor;
    case TR_ETCD_OP_DELETE:
        return &etcdserverpb__delete_range_response__descriptor;
    case TR_ETCD_OP_TXN:
        return &etcdserverpb__txn_response__descriptor;
    case TR_ETCD_OP_COMPACT:
        return &etcdserverpb__compaction_response__descriptor;
    case TR_ETCD_OP_LEASE_GRANT:
        return &etcdserverpb__lease_grant_response__descriptor;
    case TR_ETCD_OP_LEASE_REVOKE:
        return &etcdserverpb__lease_revoke_response__descriptor;
    case TR_ETCD_OP_LEASE_TTL:
        return &etcdserverpb__lease_time_to_live_response__descriptor;
    }
    return NULL;
}

/* ===================================================================== */
/* Unary calls                                                           */
/* ===================================================================== */

struct unary
{
    struct etcd_tag tag;        /* the one batch */
    struct etcd_obj obj;        /* registration on the client */
    struct tr_etcd *e;
    struct etcd_chan *chan;     /* referenced for the call's life */
    grpc_call *call;
    enum tr_etcd_op_type type;  /* decides the answer's decoding */
    const char *method;         /* for messages: "/etcdserverpb.KV/Put" */
    grpc_byte_buffer *send_bb;  /* the request, destroyed with the call */
    grpc_byte_buffer *recv_bb;  /* the answer; NULL when none came */
    grpc_metadata_array init_md;  /* etcd's headers (unused, but required) */
    grpc_metadata_array trail_md; /* etcd's trailers (unused) */
    grpc_status_code status;    /* the call's gRPC status */
    grpc_slice details;         /* its text (etcd's error message) */
    const char *error_string;   /* gRPC's debug text, gpr_free'd */
    tr_etcd_fn cb;              /* the caller's completion */
    void *arg;
};

static void unary_cancel(struct etcd_obj *o)
{
    struct unary *u = ETCD_CONTAINER(o, struct unary, obj);
    grpc_call_cancel(u->call, NULL);
}

/* "Put" out of "/etcdserverpb.KV/Put". */
static const char *method_name(const char *method)
{
    const char *slash = strrchr(method, '/');
    return slash ? slash + 1 : method;
}

/* Delivers a failure whose message is built here. */
static void fail(struct unary *u, int code, int grpc_status, const char *msg)
{
    struct tr_etcd_result res = {.type = u->type, .grpc_status = grpc_status, .message = msg};
    u->e->stats.calls_failed++;
    u->cb(u->arg, code, &res);
}

/* Decodes the answer and hands it to the callback. */
static void deliver(struct unary *u)
{
    char msg[ETCD_MSG_MAX];
    ProtobufCMessage *m = etcd_unpack(resp_desc(u->type), u->recv_bb);
    if (!m) {
        snprintf(msg, sizeof(msg), "etcd %s failed: cannot decode the answer",
                 method_name(u->method));
        fail(u, TR_EPROTO, -1, msg);
        return;
    }
    if (u->type == TR_ETCD_OP_LEASE_GRANT && ((Etcdserverpb__LeaseGrantResponse *)m)->error[0]) {
        char esc[ETCD_MSG_MAX];
        const char *why = ((Etcdserverpb__LeaseGrantResponse *)m)->error;
        tr_log_escape(esc, sizeof(esc), why, strlen(why));
        snprintf(msg, sizeof(msg), "etcd LeaseGrant failed: %s", esc);
        fail(u, TR_ESTATE, -1, msg);
        protobuf_c_message_free_unpacked(m, &etcd_pb_allocator);
        return;
    }
    size_t n_kvs = etcd_result_count_kvs(u->type, m);
    size_t n_subs = etcd_result_count_subs(u->type, m);
    struct tr_etcd_kv *kvs = n_kvs ? tr_calloc(n_kvs, sizeof(*kvs)) : NULL;
    struct tr_etcd_result *subs = n_subs ? tr_calloc(n_subs, sizeof(*subs)) : NULL;
    if ((n_kvs && !kvs) || (n_subs && !subs)) {
        snprintf(msg, sizeof(msg), "etcd %s failed: out of memory for the answer",
                 method_name(u->method));
        fail(u, TR_ENOMEM, -1, msg);
    } else {
        struct tr_etcd_result res = {0};
        struct tr_etcd_kv *kc = kvs;
        struct tr_etcd_result *sc = subs;
        etcd_result_fill(u->type, m, &res, &kc, &sc);
        u->cb(u->arg, 0, &res);
    }
    tr_free(kvs);
    tr_free(subs);
    protobuf_c_message_free_unpacked(m, &etcd_pb_allocator);
}

static void unary_done(struct etcd_tag *t, bool ok)
{
    struct unary *u = (struct unary *)t;
    struct tr_etcd *e = u->e;
    char msg[ETCD_MSG_MAX];
    if (e->closing) {
        snprintf(msg, sizeof(msg), "etcd %s cancelled: the client is shutting down",
                 method_name(u->method));
        fail(u, TR_ECANCELED, GRPC_STATUS_CANCELLED, msg);
    } else if (!ok) {
        snprintf(msg, sizeof(msg), "etcd %s failed: the call broke", method_name(u->method));
        fail(u, TR_EUNAVAIL, -1, msg);
    } else if (u->status != GRPC_STATUS_OK) {
        etcd_chan_report(e, u->chan, u->status);
        etcd_status_msg(msg, sizeof(msg), method_name(u->method), u->status, u->details);
        int code = etcd_status_err(u->status);
        /* Nobody cancelled: a CANCELLED from the server side. */
        if (code == TR_ECANCELED)
            code = TR_ESTATE;
        fail(u, code, (int)u->status, msg);
    } else if (!u->recv_bb) {
        snprintf(msg, sizeof(msg), "etcd %s failed: no answer", method_name(u->method));
        fail(u, TR_EPROTO, -1, msg);
    } else {
        etcd_chan_report(e, u->chan, u->status);
        deliver(u);
    }
    grpc_byte_buffer_destroy(u->send_bb);
    if (u->recv_bb)
        grpc_byte_buffer_destroy(u->recv_bb);
    grpc_metadata_array_destroy(&u->init_md);
    grpc_metadata_array_destroy(&u->trail_md);
    grpc_slice_unref(u->details);
    gpr_free((void *)u->error_string);
    grpc_call_unref(u->call);
    etcd_chan_release(e, u->chan);
    etcd_obj_del(e, &u->obj);
    tr_free(u);
}

int etcd_unary(struct tr_etcd *e, enum tr_etcd_op_type type, const char *method,
               const ProtobufCMessage *m, tr_etcd_fn cb, void *arg)
{
    if (e->closing)
        return TR_ECANCELED;
    struct unary *u = tr_calloc(1, sizeof(*u));
    if (!u)
        return TR_ENOMEM;
    u->chan = etcd_chan_get(e);
    if (!u->chan) {
        tr_free(u);
        return TR_ENOMEM;
    }
    u->call = grpc_channel_create_call(u->chan->ch, NULL, GRPC_PROPAGATE_DEFAULTS, e->cq,
                                       grpc_slice_from_static_string(method), NULL,
                                       etcd_deadline(e->deadline_ms), NULL);
    if (!u->call) {
        etcd_chan_release(e, u->chan);
        tr_free(u);
        return TR_EUNAVAIL;
    }
    u->tag.done = unary_done;
    u->obj.cancel = unary_cancel;
    u->e = e;
    u->type = type;
    u->method = method;
    u->cb = cb;
    u->arg = arg;
    u->send_bb = etcd_pack(m);
    u->details = grpc_empty_slice();
    grpc_metadata_array_init(&u->init_md);
    grpc_metadata_array_init(&u->trail_md);

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->trail_md;
    ops[5].data.recv_status_on_client.status = &u->status;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    ops[5].data.recv_status_on_client.error_string = &u->error_string;
    /* Errors here are misuse (a wrong op set), which the code rules out. */
    grpc_call_error rc = grpc_call_start_batch(u->call, ops, TR_ARRAY_LEN(ops), &u->tag, NULL);
    TR_ASSERT(rc == GRPC_CALL_OK);
    e->stats.calls++;
    etcd_obj_add(e, &u->obj);
    return 0;
}

/* ===================================================================== */
/* Streams                                                               */
/* ===================================================================== */

static void stream_maybe_end(struct etcd_stream *s)
{
    if (!s->status_done || s->pending > 0)
        return;
    struct tr_etcd *e = s->e;
    grpc_status_code st = s->status;
    char msg[ETCD_MSG_MAX];
    int err;
    if (s->cancelled) {
        err = TR_ECANCELED;
        snprintf(msg, sizeof(msg), "etcd %s cancelled", method_name(s->method));
    } else {
        etcd_chan_report(e, s->chan, st);
        etcd_status_msg(msg, sizeof(msg), method_name(s->method), st, s->details);
        err = etcd_status_err(st);
        /* The server ended the stream (etcd closes watch streams of a member
         * that lost its leader with UNAVAILABLE; a clean end is an OK). */
        if (err == TR_ECANCELED || err == 0)
            err = TR_EUNAVAIL;
    }
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_slice_unref(s->details);
    s->details = grpc_empty_slice();
    gpr_free((void *)s->error_string);
    s->error_string = NULL;
    grpc_call_unref(s->call);
    s->call = NULL;
    etcd_chan_release(e, s->chan);
    s->chan = NULL;
    s->on_end(s, err, st, msg);
}

static void start_recv(struct etcd_stream *s, bool with_md)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (with_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &s->recv_bb;
    n++;
    s->recv_bb = NULL;
    grpc_call_error rc = grpc_call_start_batch(s->call, ops, n, &s->recv_tag, NULL);
    TR_ASSERT(rc == GRPC_CALL_OK);
    s->pending++;
}

static void stream_recv_done(struct etcd_tag *t, bool ok)
{
    struct etcd_stream *s = ETCD_CONTAINER(t, struct etcd_stream, recv_tag);
    s->pending--;
    if (ok && s->recv_bb) {
        ProtobufCMessage *m = etcd_unpack(s->resp_desc, s->recv_bb);
        grpc_byte_buffer_destroy(s->recv_bb);
        s->recv_bb = NULL;
        if (!m) {
            etcd_stream_abort(s, GRPC_STATUS_INTERNAL, "cannot decode an answer");
        } else if (s->cancelled) {
            protobuf_c_message_free_unpacked(m, &etcd_pb_allocator);
        } else {
            s->got_msg = true;
            s->on_msg(s, m);
            protobuf_c_message_free_unpacked(m, &etcd_pb_allocator);
        }
        /* on_msg may have cancelled or aborted: then stop reading. */
        if (!s->cancelled && !s->status_done && s->call)
            start_recv(s, false);
    }
    /* Otherwise the stream is over; the status op tells how. */
    stream_maybe_end(s);
}

static void stream_send_done(struct etcd_tag *t, bool ok)
{
    TR_UNUSED(ok); /* a failed send ends the call: the status says why */
    struct etcd_stream *s = ETCD_CONTAINER(t, struct etcd_stream, send_tag);
    s->pending--;
    s->sending = false;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (s->on_sent && !s->status_done && !s->cancelled)
        s->on_sent(s);
    stream_maybe_end(s);
}

static void stream_status_done(struct etcd_tag *t, bool ok)
{
    TR_UNUSED(ok);
    struct etcd_stream *s = ETCD_CONTAINER(t, struct etcd_stream, status_tag);
    s->pending--;
    s->status_done = true;
    stream_maybe_end(s);
}

void etcd_stream_init(struct etcd_stream *s, struct tr_etcd *e, const char *method,
                      const ProtobufCMessageDescriptor *rdesc, etcd_stream_msg_fn on_msg,
                      etcd_stream_end_fn on_end, etcd_stream_sent_fn on_sent)
{
    memset(s, 0, sizeof(*s));
    s->e = e;
    s->method = method;
    s->resp_desc = rdesc;
    s->on_msg = on_msg;
    s->on_end = on_end;
    s->on_sent = on_sent;
    s->send_tag.done = stream_send_done;
    s->recv_tag.done = stream_recv_done;
    s->status_tag.done = stream_status_done;
    s->details = grpc_empty_slice();
}

int etcd_stream_open(struct etcd_stream *s, const ProtobufCMessage *first)
{
    struct tr_etcd *e = s->e;
    TR_ASSERT(!s->call && s->pending == 0);
    if (e->closing)
        return TR_ECANCELED;
    s->chan = etcd_chan_get(e);
    if (!s->chan)
        return TR_ENOMEM;
    s->call = grpc_channel_create_call(s->chan->ch, NULL, GRPC_PROPAGATE_DEFAULTS, e->cq,
                                       grpc_slice_from_static_string(s->method), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!s->call) {
        etcd_chan_release(e, s->chan);
        s->chan = NULL;
        return TR_EUNAVAIL;
    }
    s->status_done = false;
    s->cancelled = false;
    s->got_msg = false;
    s->status = GRPC_STATUS_OK;
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);

    /* etcd ends streams that carry "hasleader" with UNAVAILABLE when its
     * member loses the raft leader (clientv3's WithRequireLeader), so a
     * watch on a partitioned member resumes elsewhere instead of going
     * quiet. */
    s->lead_md.key = grpc_slice_from_static_string("hasleader");
    s->lead_md.value = grpc_slice_from_static_string("true");
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &s->lead_md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    s->send_bb = etcd_pack(first);
    ops[1].data.send_message.send_message = s->send_bb;
    grpc_call_error rc = grpc_call_start_batch(s->call, ops, 2, &s->send_tag, NULL);
    TR_ASSERT(rc == GRPC_CALL_OK);
    s->sending = true;
    s->pending++;

    start_recv(s, true);

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trail_md;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    ops[0].data.recv_status_on_client.error_string = &s->error_string;
    rc = grpc_call_start_batch(s->call, ops, 1, &s->status_tag, NULL);
    TR_ASSERT(rc == GRPC_CALL_OK);
    s->pending++;
    return 0;
}

int etcd_stream_send(struct etcd_stream *s, const ProtobufCMessage *m)
{
    if (!s->call || s->sending || s->status_done || s->cancelled)
        return TR_EAGAIN;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    s->send_bb = etcd_pack(m);
    op.data.send_message.send_message = s->send_bb;
    grpc_call_error rc = grpc_call_start_batch(s->call, &op, 1, &s->send_tag, NULL);
    TR_ASSERT(rc == GRPC_CALL_OK);
    s->sending = true;
    s->pending++;
    return 0;
}

void etcd_stream_cancel(struct etcd_stream *s)
{
    if (!s->call || s->cancelled)
        return;
    s->cancelled = true;
    grpc_call_cancel(s->call, NULL);
}

void etcd_stream_abort(struct etcd_stream *s, grpc_status_code st, const char *why)
{
    if (!s->call || s->cancelled)
        return;
    grpc_call_cancel_with_status(s->call, st, why, NULL);
}
