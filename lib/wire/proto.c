/*
 * proto.c - worker protocol frames: bounds checking, decoding, encoding.
 *
 * A frame is the msgpack array [version, type, body] where body is a map
 * with short string keys. tr_mp_check walks untrusted bytes before msgpack-c
 * sees them, because msgpack-c trusts the counts a frame declares (a 6-byte
 * map32 header makes it try to allocate 256 GiB). Field lookups tolerate
 * unknown keys (a newer peer may send more) but refuse wrong types.
 */
#include "lib/wire/proto.h"

const struct tr_mp_limits tr_mp_default_limits = {
    .max_frame = 64u << 20,
    .max_depth = 32, /* msgpack-c unpacks at most 32 nested containers */
    .max_elements = 1000000,
    .max_str = 64u << 20,
};

/* ====================================================================== */
/* Bounds check                                                            */
/* ====================================================================== */

static uint64_t be_read(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * Walks values iteratively with an explicit count of values still to read
 * per nesting level, so hostile depth cannot overflow the C stack.
 */
long tr_mp_check(const void *data, size_t len, const struct tr_mp_limits *lim)
{
    const unsigned char *p = data;
    size_t pos = 0;
    uint64_t pending[129];
    uint32_t depth = 0;
    uint32_t max_depth = TR_MIN(lim->max_depth, (uint32_t)TR_ARRAY_LEN(pending) - 1);
    if (len > lim->max_frame)
        return TR_ELIMIT;
    pending[0] = 1;
    while (depth > 0 || pending[0] > 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        pending[depth]--;
        if (pos >= len)
            return TR_EPROTO;
        unsigned char b = p[pos++];
        uint64_t skip = 0;     /* payload bytes that follow the header */
        uint64_t children = 0; /* values that follow (arrays, maps) */
        int hdr = 0;           /* bytes of length field */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if ((b & 0xf0) == 0x80) {
            children = 2ull * (b & 0x0f);
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
        } else if ((b & 0xe0) == 0xa0) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: hdr = 1; break;       /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;       /* bin16, str16 */
            case 0xc6: case 0xdb: hdr = 4; break;       /* bin32, str32 */
            case 0xc7: hdr = 1; skip = 1; break;        /* ext8: + type byte */
            case 0xc8: hdr = 2; skip = 1; break;
            case 0xc9: hdr = 4; skip = 1; break;
            case 0xca: skip = 4; break;                 /* float32 */
            case 0xcb: skip = 8; break;                 /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                 /* fixext */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: case 0xdd: {                     /* array16/32 */
                int n = b == 0xdc ? 2 : 4;
                if (len - pos < (size_t)n)
                    return TR_EPROTO;
                children = be_read(p + pos, n);
                pos += (size_t)n;
                break;
            }
            case 0xde: case 0xdf: {                     /* map16/32 */
                int n = b == 0xde ? 2 : 4;
                if (len - pos < (size_t)n)
                    return TR_EPROTO;
                children = 2 * be_read(p + pos, n);
                pos += (size_t)n;
                break;
            }
            default:
                return TR_EPROTO; /* 0xc1 is never used */
            }
        }
        if (hdr) {
            if (len - pos < (size_t)hdr)
                return TR_EPROTO;
            uint64_t n = be_read(p + pos, hdr);
            pos += (size_t)hdr;
            if (n > lim->max_str)
                return TR_ELIMIT;
            skip += n;
        } else if (skip > lim->max_str) {
            return TR_ELIMIT;
        }
        if (skip > len - pos)
            return TR_EPROTO;
        pos += (size_t)skip;
        /* An empty container is a level too, as the packers (JSON, Lua) count
         * levels: what passes here converts to JSON and back. */
        bool container = (b & 0xe0) == 0x80 || (b >= 0xdc && b <= 0xdf);
        if (container && depth + 1 > max_depth)
            return TR_ELIMIT;
        if (children) {
            /* Each child needs at least one byte: a count beyond what is
             * left is a lie, whatever the caps say. */
            if (children / (b >= 0xde || (b & 0xf0) == 0x80 ? 2 : 1) > lim->max_elements)
                return TR_ELIMIT;
            if (children > len - pos)
                return TR_EPROTO;
            pending[++depth] = children;
        }
    }
    return (long)pos;
}

/* ====================================================================== */
/* Decoding                                                                */
/* ====================================================================== */

void tr_proto_decoder_init(struct tr_proto_decoder *d, const struct tr_mp_limits *lim)
{
    msgpack_unpacked_init(&d->unpacked);
    d->limits = lim ? *lim : tr_mp_default_limits;
}

void tr_proto_decoder_release(struct tr_proto_decoder *d)
{
    msgpack_unpacked_destroy(&d->unpacked);
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* Field readers: false when present with a wrong type (absent leaves *out as is). */
static bool get_str(const msgpack_object *map, const char *key, struct tr_str *out)
{
    const msgpack_object *v = map_get(map, key);
    if (v == NULL || v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (v->type == MSGPACK_OBJECT_STR) {
        *out = (struct tr_str){v->via.str.ptr, v->via.str.size};
        return true;
    }
    if (v->type == MSGPACK_OBJECT_BIN) {
        *out = (struct tr_str){v->via.bin.ptr, v->via.bin.size};
        return true;
    }
    return false;
}

static bool get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *v = map_get(map, key);
    if (v == NULL)
        return true;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = v->via.u64;
    return true;
}

static bool get_u32(const msgpack_object *map, const char *key, uint32_t *out)
{
    uint64_t v = *out;
    if (!get_u64(map, key, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool get_num(const msgpack_object *map, const char *key, double *out)
{
    const msgpack_object *v = map_get(map, key);
    if (v == NULL)
        return true;
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        *out = v->via.f64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *out = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = (double)v->via.i64;
    else
        return false;
    return true;
}

static bool get_bool(const msgpack_object *map, const char *key, bool *out)
{
    const msgpack_object *v = map_get(map, key);
    if (v == NULL)
        return true;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = v->via.boolean;
    return true;
}

static bool get_str_array(const msgpack_object *map, const char *key, struct tr_str *out,
                          uint32_t max, uint32_t *n)
{
    const msgpack_object *v = map_get(map, key);
    *n = 0;
    if (v == NULL || v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < v->via.array.size && *n < max; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_STR)
            return false;
        out[(*n)++] = (struct tr_str){e->via.str.ptr, e->via.str.size};
    }
    return true;
}

static bool get_u32_array(const msgpack_object *map, const char *key, uint32_t *out,
                          uint32_t max, uint32_t *n)
{
    const msgpack_object *v = map_get(map, key);
    *n = 0;
    if (v == NULL || v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > max)
        return false;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > UINT32_MAX)
            return false;
        out[(*n)++] = (uint32_t)e->via.u64;
    }
    return true;
}

/* An array of GPU maps {index, name, mem_total_mb, mem_used_mb, util}; extra entries are
 * ignored, as for labels. */
static bool get_gpus(const msgpack_object *map, const char *key, struct tr_gpu_info *out,
                     uint32_t *n)
{
    const msgpack_object *v = map_get(map, key);
    *n = 0;
    if (v == NULL || v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < v->via.array.size && *n < TR_PROTO_MAX_GPUS; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        struct tr_gpu_info *g = &out[*n];
        memset(g, 0, sizeof(*g));
        double util = -1;
        if (e->type != MSGPACK_OBJECT_MAP || !get_u32(e, "index", &g->index) ||
            !get_str(e, "name", &g->name) || !get_u64(e, "mem_total_mb", &g->mem_total_mb) ||
            !get_u64(e, "mem_used_mb", &g->mem_used_mb) || !get_num(e, "util", &util))
            return false;
        g->util = util >= 0 && util <= 100 ? (int32_t)util : -1;
        (*n)++;
    }
    return true;
}

static bool decode_hello(const msgpack_object *b, struct tr_msg_hello *m)
{
    memset(m, 0, sizeof(*m));
    if (!get_str(b, "id", &m->worker_id) || !get_str(b, "pool", &m->pool) ||
        !get_u32(b, "slots", &m->slots) || !get_u32(b, "gpus", &m->gpus) ||
        !get_u32(b, "cpus", &m->cpus) || !get_u64(b, "mem_mb", &m->mem_mb) ||
        !get_str(b, "version", &m->version))
        return false;
    const msgpack_object *labels = map_get(b, "labels");
    if (labels != NULL && labels->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < labels->via.map.size && m->n_labels < TR_PROTO_MAX_LABELS; i++) {
            const msgpack_object_kv *kv = &labels->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR)
                return false;
            m->labels[m->n_labels].key = (struct tr_str){kv->key.via.str.ptr, kv->key.via.str.size};
            m->labels[m->n_labels].value =
                (struct tr_str){kv->val.via.str.ptr, kv->val.via.str.size};
            m->n_labels++;
        }
    } else if (labels != NULL && labels->type != MSGPACK_OBJECT_NIL) {
        return false;
    }
    if (!get_gpus(b, "gpu_info", m->gpu_info, &m->n_gpu_info))
        return false;
    return m->worker_id.len > 0 && m->pool.len > 0 && m->slots > 0;
}

static bool decode_body(enum tr_msg_type type, const msgpack_object *b, struct tr_msg *out)
{
    switch (type) {
    case TR_MSG_HELLO:
        return decode_hello(b, &out->u.hello);
    case TR_MSG_WELCOME: {
        struct tr_msg_welcome *m = &out->u.welcome;
        memset(m, 0, sizeof(*m));
        return get_u32(b, "heartbeat_ms", &m->heartbeat_ms) && get_u64(b, "epoch", &m->epoch);
    }
    case TR_MSG_HEARTBEAT:
        return get_gpus(b, "gpus", out->u.heartbeat.gpus, &out->u.heartbeat.n_gpus);
    case TR_MSG_TASK: {
        struct tr_msg_task *m = &out->u.task;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) && get_u64(b, "epoch", &m->epoch) &&
               get_u32(b, "attempt", &m->attempt) && get_str(b, "run", &m->run_id) &&
               get_str(b, "task", &m->task) && get_u32(b, "index", &m->index) &&
               get_str(b, "digest", &m->digest) && get_str(b, "params", &m->params) &&
               get_str(b, "args", &m->args) && get_num(b, "timeout", &m->timeout) &&
               get_u32_array(b, "gpus", m->gpus, TR_PROTO_MAX_GPUS, &m->n_gpus) &&
               m->id != 0 && m->task.len > 0 && m->digest.len > 0;
    }
    case TR_MSG_RESULT: {
        struct tr_msg_result *m = &out->u.result;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) && get_u64(b, "epoch", &m->epoch) &&
               get_u32(b, "attempt", &m->attempt) && get_bool(b, "ok", &m->ok) &&
               get_str(b, "output", &m->output) && get_str(b, "error", &m->error) &&
               get_bool(b, "timed_out", &m->timed_out) &&
               get_bool(b, "cancelled", &m->cancelled) &&
               get_num(b, "started_at", &m->started_at) &&
               get_num(b, "finished_at", &m->finished_at) &&
               get_str_array(b, "logs", m->logs, TR_PROTO_MAX_LOGS, &m->n_logs) &&
               get_str(b, "usage", &m->usage) && get_bool(b, "skipped", &m->skipped) &&
               m->id != 0;
    }
    case TR_MSG_CANCEL: {
        struct tr_msg_cancel *m = &out->u.cancel;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) && get_str(b, "reason", &m->reason) && m->id != 0;
    }
    case TR_MSG_PIPELINE_GET: {
        struct tr_msg_pipeline_get *m = &out->u.pipeline_get;
        memset(m, 0, sizeof(*m));
        return get_str(b, "digest", &m->digest) && m->digest.len > 0;
    }
    case TR_MSG_PIPELINE: {
        struct tr_msg_pipeline *m = &out->u.pipeline;
        memset(m, 0, sizeof(*m));
        return get_str(b, "digest", &m->digest) && get_str(b, "source", &m->source) &&
               get_str(b, "error", &m->error) && get_str(b, "name", &m->name) &&
               m->digest.len > 0;
    }
    case TR_MSG_BYE: {
        struct tr_msg_bye *m = &out->u.bye;
        memset(m, 0, sizeof(*m));
        return get_str(b, "reason", &m->reason);
    }
    case TR_MSG_LOG: {
        struct tr_msg_log *m = &out->u.log;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) &&
               get_str_array(b, "logs", m->logs, TR_PROTO_MAX_LOGS, &m->n_logs) && m->id != 0;
    }
    case TR_MSG_CALL: {
        struct tr_msg_call *m = &out->u.call;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) && get_u64(b, "dispatch", &m->dispatch) &&
               get_str(b, "op", &m->op) && get_str(b, "body", &m->body) && m->id != 0 &&
               /* dispatch 0: the worker's batched LLM budget call (not one task's) */
               (m->dispatch != 0 || tr_str_eq(m->op, "budget")) && m->op.len > 0 &&
               m->op.len <= 64 &&
               m->body.len <= TR_PROTO_CALL_BODY_MAX;
    }
    case TR_MSG_CALL_REPLY: {
        struct tr_msg_call_reply *m = &out->u.call_reply;
        memset(m, 0, sizeof(*m));
        return get_u64(b, "id", &m->id) && get_u64(b, "dispatch", &m->dispatch) &&
               get_u32(b, "status", &m->status) && get_str(b, "body", &m->body) &&
               m->id != 0 && m->body.len <= TR_PROTO_CALL_BODY_MAX;
    }
    }
    return false;
}

int tr_proto_decode(struct tr_proto_decoder *d, const void *data, size_t len, struct tr_msg *out,
                    struct tr_error *err)
{
    long n = tr_mp_check(data, len, &d->limits);
    if (n == TR_ELIMIT)
        return tr_error_set(err, TR_ELIMIT, "too_large");
    if (n < 0 || (size_t)n != len)
        return tr_error_set(err, TR_EPROTO, "bad_msgpack");
    size_t off = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(&d->unpacked, data, len, &off);
    if (ret != MSGPACK_UNPACK_SUCCESS)
        return tr_error_set(err, TR_EPROTO, "bad_msgpack");
    const msgpack_object *root = &d->unpacked.data;
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != 3)
        return tr_error_set(err, TR_EPROTO, "bad_msgpack");
    const msgpack_object *ver = &root->via.array.ptr[0];
    const msgpack_object *type = &root->via.array.ptr[1];
    const msgpack_object *body = &root->via.array.ptr[2];
    if (ver->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ver->via.u64 != TR_PROTO_VERSION)
        return tr_error_set(err, TR_EPROTO, "bad_version");
    if (type->type != MSGPACK_OBJECT_POSITIVE_INTEGER || type->via.u64 < 1 ||
        type->via.u64 > TR_MSG_TYPE_MAX)
        return tr_error_set(err, TR_EPROTO, "unknown_type");
    if (body->type != MSGPACK_OBJECT_MAP)
        return tr_error_set(err, TR_EPROTO, "bad_body");
    out->type = (enum tr_msg_type)type->via.u64;
    if (!decode_body(out->type, body, out))
        return tr_error_set(err, TR_EPROTO, "bad_body");
    return 0;
}

/* ====================================================================== */
/* Encoding                                                                */
/* ====================================================================== */

/*
 * msgpack-c's packer reports allocation failure through the write callback's
 * return value; every pack call is checked through this macro.
 */
#define PK(call)          \
    do {                  \
        if ((call) != 0)  \
            return TR_ENOMEM; \
    } while (0)

static int pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    PK(msgpack_pack_str(pk, n));
    PK(msgpack_pack_str_body(pk, k, n));
    return 0;
}

static int pack_kstr(msgpack_packer *pk, const char *k, struct tr_str v)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_str(pk, v.len));
    PK(msgpack_pack_str_body(pk, v.p, v.len));
    return 0;
}

static int pack_kbin(msgpack_packer *pk, const char *k, struct tr_str v)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_bin(pk, v.len));
    PK(msgpack_pack_bin_body(pk, v.p, v.len));
    return 0;
}

static int pack_ku64(msgpack_packer *pk, const char *k, uint64_t v)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_uint64(pk, v));
    return 0;
}

static int pack_knum(msgpack_packer *pk, const char *k, double v)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_double(pk, v));
    return 0;
}

static int pack_kbool(msgpack_packer *pk, const char *k, bool v)
{
    PK(pack_key(pk, k));
    PK(v ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    return 0;
}

static int pack_kstrs(msgpack_packer *pk, const char *k, const struct tr_str *v, uint32_t n)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_array(pk, n));
    for (uint32_t i = 0; i < n; i++) {
        PK(msgpack_pack_str(pk, v[i].len));
        PK(msgpack_pack_str_body(pk, v[i].p, v[i].len));
    }
    return 0;
}

static int pack_gpus(msgpack_packer *pk, const char *k, const struct tr_gpu_info *g, uint32_t n)
{
    PK(pack_key(pk, k));
    PK(msgpack_pack_array(pk, n));
    for (uint32_t i = 0; i < n; i++) {
        PK(msgpack_pack_map(pk, g[i].util >= 0 ? 5 : 4));
        PK(pack_ku64(pk, "index", g[i].index));
        PK(pack_kstr(pk, "name", g[i].name));
        PK(pack_ku64(pk, "mem_total_mb", g[i].mem_total_mb));
        PK(pack_ku64(pk, "mem_used_mb", g[i].mem_used_mb));
        if (g[i].util >= 0)
            PK(pack_ku64(pk, "util", (uint64_t)g[i].util));
    }
    return 0;
}

static int encode_hello(msgpack_packer *pk, const struct tr_msg_hello *m)
{
    /* gpu_info is absent when empty, so that older schedulers see the frame they know. */
    PK(msgpack_pack_map(pk, m->n_gpu_info > 0 ? 9 : 8));
    if (m->n_gpu_info > 0)
        PK(pack_gpus(pk, "gpu_info", m->gpu_info, m->n_gpu_info));
    PK(pack_kstr(pk, "id", m->worker_id));
    PK(pack_kstr(pk, "pool", m->pool));
    PK(pack_ku64(pk, "slots", m->slots));
    PK(pack_ku64(pk, "gpus", m->gpus));
    PK(pack_ku64(pk, "cpus", m->cpus));
    PK(pack_ku64(pk, "mem_mb", m->mem_mb));
    PK(pack_kstr(pk, "version", m->version));
    PK(pack_key(pk, "labels"));
    PK(msgpack_pack_map(pk, m->n_labels));
    for (uint32_t i = 0; i < m->n_labels; i++) {
        PK(msgpack_pack_str(pk, m->labels[i].key.len));
        PK(msgpack_pack_str_body(pk, m->labels[i].key.p, m->labels[i].key.len));
        PK(msgpack_pack_str(pk, m->labels[i].value.len));
        PK(msgpack_pack_str_body(pk, m->labels[i].value.p, m->labels[i].value.len));
    }
    return 0;
}

static int encode_body(msgpack_packer *pk, const struct tr_msg *msg)
{
    switch (msg->type) {
    case TR_MSG_HELLO:
        return encode_hello(pk, &msg->u.hello);
    case TR_MSG_WELCOME:
        PK(msgpack_pack_map(pk, 2));
        PK(pack_ku64(pk, "heartbeat_ms", msg->u.welcome.heartbeat_ms));
        PK(pack_ku64(pk, "epoch", msg->u.welcome.epoch));
        return 0;
    case TR_MSG_HEARTBEAT:
        PK(msgpack_pack_map(pk, msg->u.heartbeat.n_gpus > 0 ? 1 : 0));
        if (msg->u.heartbeat.n_gpus > 0)
            PK(pack_gpus(pk, "gpus", msg->u.heartbeat.gpus, msg->u.heartbeat.n_gpus));
        return 0;
    case TR_MSG_TASK: {
        const struct tr_msg_task *m = &msg->u.task;
        PK(msgpack_pack_map(pk, m->n_gpus > 0 ? 11 : 10));
        PK(pack_ku64(pk, "id", m->id));
        PK(pack_ku64(pk, "epoch", m->epoch));
        PK(pack_ku64(pk, "attempt", m->attempt));
        PK(pack_kstr(pk, "run", m->run_id));
        PK(pack_kstr(pk, "task", m->task));
        PK(pack_ku64(pk, "index", m->index));
        PK(pack_kstr(pk, "digest", m->digest));
        PK(pack_kbin(pk, "params", m->params));
        PK(pack_kbin(pk, "args", m->args));
        PK(pack_knum(pk, "timeout", m->timeout));
        if (m->n_gpus > 0) { /* absent when none: the frame older workers know */
            PK(pack_key(pk, "gpus"));
            PK(msgpack_pack_array(pk, m->n_gpus));
            for (uint32_t i = 0; i < m->n_gpus; i++)
                PK(msgpack_pack_uint32(pk, m->gpus[i]));
        }
        return 0;
    }
    case TR_MSG_RESULT: {
        const struct tr_msg_result *m = &msg->u.result;
        PK(msgpack_pack_map(pk, 11 + (m->usage.len > 0) + m->skipped));
        PK(pack_ku64(pk, "id", m->id));
        PK(pack_ku64(pk, "epoch", m->epoch));
        PK(pack_ku64(pk, "attempt", m->attempt));
        PK(pack_kbool(pk, "ok", m->ok));
        PK(pack_kbin(pk, "output", m->output));
        PK(pack_kstr(pk, "error", m->error));
        PK(pack_kbool(pk, "timed_out", m->timed_out));
        PK(pack_kbool(pk, "cancelled", m->cancelled));
        PK(pack_knum(pk, "started_at", m->started_at));
        PK(pack_knum(pk, "finished_at", m->finished_at));
        PK(pack_kstrs(pk, "logs", m->logs, m->n_logs));
        /* Absent when empty, so that older schedulers see the frame they know. */
        if (m->usage.len > 0)
            PK(pack_kbin(pk, "usage", m->usage));
        if (m->skipped)
            PK(pack_kbool(pk, "skipped", true));
        return 0;
    }
    case TR_MSG_CANCEL:
        PK(msgpack_pack_map(pk, 2));
        PK(pack_ku64(pk, "id", msg->u.cancel.id));
        PK(pack_kstr(pk, "reason", msg->u.cancel.reason));
        return 0;
    case TR_MSG_PIPELINE_GET:
        PK(msgpack_pack_map(pk, 1));
        PK(pack_kstr(pk, "digest", msg->u.pipeline_get.digest));
        return 0;
    case TR_MSG_PIPELINE:
        PK(msgpack_pack_map(pk, 4));
        PK(pack_kstr(pk, "digest", msg->u.pipeline.digest));
        PK(pack_kbin(pk, "source", msg->u.pipeline.source));
        PK(pack_kstr(pk, "error", msg->u.pipeline.error));
        PK(pack_kstr(pk, "name", msg->u.pipeline.name));
        return 0;
    case TR_MSG_BYE:
        PK(msgpack_pack_map(pk, 1));
        PK(pack_kstr(pk, "reason", msg->u.bye.reason));
        return 0;
    case TR_MSG_LOG:
        PK(msgpack_pack_map(pk, 2));
        PK(pack_ku64(pk, "id", msg->u.log.id));
        PK(pack_kstrs(pk, "logs", msg->u.log.logs, msg->u.log.n_logs));
        return 0;
    case TR_MSG_CALL:
        PK(msgpack_pack_map(pk, 4));
        PK(pack_ku64(pk, "id", msg->u.call.id));
        PK(pack_ku64(pk, "dispatch", msg->u.call.dispatch));
        PK(pack_kstr(pk, "op", msg->u.call.op));
        PK(pack_kbin(pk, "body", msg->u.call.body));
        return 0;
    case TR_MSG_CALL_REPLY:
        PK(msgpack_pack_map(pk, 4));
        PK(pack_ku64(pk, "id", msg->u.call_reply.id));
        PK(pack_ku64(pk, "dispatch", msg->u.call_reply.dispatch));
        PK(pack_ku64(pk, "status", msg->u.call_reply.status));
        PK(pack_kbin(pk, "body", msg->u.call_reply.body));
        return 0;
    }
    return TR_EINVAL;
}

int tr_proto_encode(msgpack_sbuffer *sb, const struct tr_msg *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    PK(msgpack_pack_array(&pk, 3));
    PK(msgpack_pack_uint64(&pk, TR_PROTO_VERSION));
    PK(msgpack_pack_uint64(&pk, (uint64_t)m->type));
    return encode_body(&pk, m);
}

const char *tr_msg_type_name(int type)
{
    static const char *const names[] = {"?",    "HELLO",  "WELCOME",      "HEARTBEAT",
                                        "TASK", "RESULT", "CANCEL",       "PIPELINE_GET",
                                        "PIPELINE", "BYE", "LOG", "CALL", "CALL_REPLY"};
    if (type < 1 || type > TR_MSG_TYPE_MAX)
        return "?";
    return names[type];
}
