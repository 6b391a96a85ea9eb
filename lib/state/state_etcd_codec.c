/*
 * state_etcd_codec.c - keys and values of the etcd state backend.
 *
 * Keys are readable paths under the prefix (docs/state.md, "Key layout"),
 * each component escaped so that no id can forge a '/'. Values are msgpack
 * arrays, positional, led by a format number: compact, and a later build can
 * tell an older value from its own. Encoding goes through msgpack-c's packer
 * into a struct tr_buf; decoding is a small reader of exactly what the
 * encoder writes, because msgpack-c's unpacker allocates outside lib/base/alloc.h
 * and a record needs only scalars, strings and one binary.
 */
#include <msgpack.h>

#include "lib/base/alloc.h"
#include "lib/state/state_etcd_int.h"

#define FORMAT 1 /* the first element of every record */

/* ===================================================================== */
/* Keys                                                                  */
/* ===================================================================== */

static bool plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-' || c == ':' || c == '@' || c == '+';
}

int etcd_key_escape(struct tr_buf *b, const char *c)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)c; *p; p++) {
        int rc;
        if (plain(*p)) {
            rc = tr_buf_addch(b, (char)*p);
        } else {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = tr_buf_add(b, esc, sizeof(esc));
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

int etcd_key(const struct tr_state_etcd *st, struct tr_buf *b, const char *section,
             const char *const *comps, size_t n)
{
    int rc = tr_buf_add(b, st->prefix, st->prefix_len);
    if (rc == 0)
        rc = tr_buf_addstr(b, section);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0)
            rc = tr_buf_addch(b, '/');
        if (rc == 0)
            rc = etcd_key_escape(b, comps[i]);
    }
    return rc;
}

/* ===================================================================== */
/* Encoding                                                              */
/* ===================================================================== */

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) == 0 ? 0 : -1;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    if (s == NULL)
        return msgpack_pack_nil(pk);
    size_t n = strlen(s);
    int rc = msgpack_pack_str(pk, n);
    return rc == 0 ? msgpack_pack_str_body(pk, s, n) : rc;
}

/* Each encoder packs every field and reports the first failure once. */
#define PACK(expr)                   \
    do {                             \
        if (fail == 0 && (expr) != 0) \
            fail = TR_ENOMEM;        \
    } while (0)

int etcd_encode_pipeline(struct tr_buf *b, const struct tr_pipeline_rec *r, uint64_t seq)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    int fail = 0;
    PACK(msgpack_pack_array(&pk, 7));
    PACK(msgpack_pack_uint32(&pk, FORMAT));
    PACK(pack_str(&pk, r->name));
    PACK(pack_str(&pk, r->version));
    PACK(pack_str(&pk, r->digest));
    PACK(msgpack_pack_double(&pk, r->registered_at));
    PACK(msgpack_pack_uint32(&pk, r->n_tasks));
    PACK(msgpack_pack_uint64(&pk, seq));
    return fail;
}

int etcd_encode_run(struct tr_buf *b, const struct tr_run_rec *r)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    int fail = 0;
    /* usage_json, the last field, is left out when NULL (see etcd_encode_task). */
    PACK(msgpack_pack_array(&pk, r->usage_json ? 13 : 12));
    PACK(msgpack_pack_uint32(&pk, FORMAT));
    PACK(pack_str(&pk, r->id));
    PACK(pack_str(&pk, r->pipeline));
    PACK(pack_str(&pk, r->version));
    PACK(pack_str(&pk, r->digest));
    PACK(pack_str(&pk, r->params_json));
    PACK(pack_str(&pk, r->state));
    PACK(msgpack_pack_double(&pk, r->created_at));
    PACK(msgpack_pack_double(&pk, r->started_at));
    PACK(msgpack_pack_double(&pk, r->finished_at));
    PACK(pack_str(&pk, r->output_json));
    PACK(pack_str(&pk, r->error));
    if (r->usage_json)
        PACK(pack_str(&pk, r->usage_json));
    return fail;
}

int etcd_encode_task(struct tr_buf *b, const struct tr_task_rec *r)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    int fail = 0;
    /* usage, the last field, is left out when empty: builds older than it read
     * such values too. */
    bool with_usage = r->usage_len > 0;
    PACK(msgpack_pack_array(&pk, with_usage ? 15 : 14));
    PACK(msgpack_pack_uint32(&pk, FORMAT));
    PACK(pack_str(&pk, r->run_id));
    PACK(pack_str(&pk, r->name));
    PACK(msgpack_pack_uint32(&pk, r->index));
    PACK(pack_str(&pk, r->state));
    PACK(msgpack_pack_uint32(&pk, r->attempts));
    PACK(pack_str(&pk, r->worker));
    PACK(msgpack_pack_double(&pk, r->started_at));
    PACK(msgpack_pack_double(&pk, r->finished_at));
    if (r->output_len == 0) {
        PACK(msgpack_pack_nil(&pk));
    } else {
        PACK(msgpack_pack_bin(&pk, r->output_len));
        PACK(msgpack_pack_bin_body(&pk, r->output, r->output_len));
    }
    PACK(pack_str(&pk, r->error));
    PACK(pack_str(&pk, r->logs));
    PACK(r->cached ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
    if (with_usage) {
        PACK(msgpack_pack_bin(&pk, r->usage_len));
        PACK(msgpack_pack_bin_body(&pk, r->usage, r->usage_len));
    }
    return fail;
}

int etcd_encode_uint(struct tr_buf *b, uint64_t v)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    return msgpack_pack_uint64(&pk, v) == 0 ? 0 : TR_ENOMEM;
}

int etcd_encode_row(struct tr_buf *b, const struct tr_state_row *r)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    int fail = 0;
    PACK(msgpack_pack_array(&pk, 5));
    PACK(msgpack_pack_uint32(&pk, FORMAT));
    PACK(pack_str(&pk, r->grp));
    PACK(pack_str(&pk, r->sub));
    PACK(msgpack_pack_double(&pk, r->ord));
    PACK(msgpack_pack_str(&pk, r->value_len));
    PACK(msgpack_pack_str_body(&pk, r->value, r->value_len));
    return fail;
}

/* ===================================================================== */
/* Decoding                                                              */
/* ===================================================================== */

/* A cursor over one value; strings are copied NUL-terminated into the arena,
 * which is sized so that every copy fits (the value's length plus one NUL
 * per field). */
struct rd
{
    const unsigned char *p, *end;
    char *arena;
    size_t used;
};

static bool take(struct rd *r, size_t n, const unsigned char **out)
{
    if ((size_t)(r->end - r->p) < n)
        return false;
    *out = r->p;
    r->p += n;
    return true;
}

static bool be_uint(struct rd *r, size_t n, uint64_t *v)
{
    const unsigned char *q;
    if (!take(r, n, &q))
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = (*v << 8) | q[i];
    return true;
}

/* An array header of min_n to max_n elements; *got is its count. */
static bool rd_array(struct rd *r, uint64_t min_n, uint64_t max_n, uint64_t *got)
{
    const unsigned char *t;
    uint64_t n;
    if (!take(r, 1, &t))
        return false;
    if ((*t & 0xf0) == 0x90)
        n = *t & 0x0f;
    else if (*t == 0xdc && be_uint(r, 2, &n))
        ;
    else if (*t == 0xdd && be_uint(r, 4, &n))
        ;
    else
        return false;
    *got = n;
    return n >= min_n && n <= max_n;
}

static bool rd_uint(struct rd *r, uint64_t *v)
{
    const unsigned char *t;
    if (!take(r, 1, &t))
        return false;
    if (*t < 0x80) {
        *v = *t;
        return true;
    }
    switch (*t) {
    case 0xcc: return be_uint(r, 1, v);
    case 0xcd: return be_uint(r, 2, v);
    case 0xce: return be_uint(r, 4, v);
    case 0xcf: return be_uint(r, 8, v);
    default: return false;
    }
}

static bool rd_u32(struct rd *r, uint32_t *v)
{
    uint64_t x;
    if (!rd_uint(r, &x) || x > UINT32_MAX)
        return false;
    *v = (uint32_t)x;
    return true;
}

static bool rd_double(struct rd *r, double *v)
{
    const unsigned char *t;
    uint64_t bits;
    if (!take(r, 1, &t) || *t != 0xcb || !be_uint(r, 8, &bits))
        return false;
    memcpy(v, &bits, sizeof(*v));
    return true;
}

static bool rd_bool(struct rd *r, bool *v)
{
    const unsigned char *t;
    if (!take(r, 1, &t) || (*t != 0xc2 && *t != 0xc3))
        return false;
    *v = *t == 0xc3;
    return true;
}

/* A str or bin (or nil: *out NULL) copied into the arena with a NUL. */
static bool rd_bytes(struct rd *r, bool bin, const char **out, size_t *len)
{
    const unsigned char *t, *body;
    uint64_t n;
    if (!take(r, 1, &t))
        return false;
    if (*t == 0xc0) {
        *out = NULL;
        if (len)
            *len = 0;
        return true;
    }
    bool ok;
    if (!bin && (*t & 0xe0) == 0xa0) {
        n = *t & 0x1f;
        ok = true;
    } else if (*t == (bin ? 0xc4 : 0xd9)) {
        ok = be_uint(r, 1, &n);
    } else if (*t == (bin ? 0xc5 : 0xda)) {
        ok = be_uint(r, 2, &n);
    } else if (*t == (bin ? 0xc6 : 0xdb)) {
        ok = be_uint(r, 4, &n);
    } else {
        return false;
    }
    if (!ok || !take(r, (size_t)n, &body))
        return false;
    char *dst = r->arena + r->used;
    if (n)
        memcpy(dst, body, (size_t)n);
    dst[n] = '\0';
    r->used += (size_t)n + 1;
    *out = dst;
    if (len)
        *len = (size_t)n;
    return true;
}

/*
 * Opens a record of min_fields to max_fields elements (a later build may
 * append fields; an older value lacks them); *fields is the count read.
 */
static int rd_open_range(struct rd *r, const void *v, size_t n, uint64_t min_fields,
                         uint64_t max_fields, uint64_t *fields, char **arena)
{
    *arena = NULL;
    *r = (struct rd){.p = v, .end = (const unsigned char *)v + n};
    r->arena = tr_malloc(n + (size_t)max_fields + 1);
    if (r->arena == NULL)
        return TR_ENOMEM;
    uint64_t format;
    if (!rd_array(r, min_fields, max_fields, fields) || !rd_uint(r, &format) ||
        format != FORMAT) {
        tr_free(r->arena);
        return TR_EPROTO;
    }
    return 0;
}

static int rd_open(struct rd *r, const void *v, size_t n, uint64_t fields, char **arena)
{
    uint64_t got;
    return rd_open_range(r, v, n, fields, fields, &got, arena);
}

static int rd_close(struct rd *r, bool ok, char **arena)
{
    if (!ok || r->p != r->end) {
        tr_free(r->arena);
        return TR_EPROTO;
    }
    *arena = r->arena;
    return 0;
}

int etcd_decode_pipeline(const void *v, size_t n, struct tr_pipeline_rec *p, uint64_t *seq,
                         char **arena)
{
    struct rd r;
    int rc = rd_open(&r, v, n, 7, arena);
    if (rc < 0)
        return rc;
    *p = (struct tr_pipeline_rec){0};
    bool ok = rd_bytes(&r, false, &p->name, NULL) && rd_bytes(&r, false, &p->version, NULL) &&
              rd_bytes(&r, false, &p->digest, NULL) && rd_double(&r, &p->registered_at) &&
              rd_u32(&r, &p->n_tasks) && rd_uint(&r, seq) && p->name && p->version && p->digest;
    return rd_close(&r, ok, arena);
}

int etcd_decode_run(const void *v, size_t n, struct tr_run_rec *x, char **arena)
{
    struct rd r;
    uint64_t fields = 0;
    int rc = rd_open_range(&r, v, n, 12, 13, &fields, arena);
    if (rc < 0)
        return rc;
    *x = (struct tr_run_rec){0};
    bool ok = rd_bytes(&r, false, &x->id, NULL) && rd_bytes(&r, false, &x->pipeline, NULL) &&
              rd_bytes(&r, false, &x->version, NULL) && rd_bytes(&r, false, &x->digest, NULL) &&
              rd_bytes(&r, false, &x->params_json, NULL) &&
              rd_bytes(&r, false, &x->state, NULL) && rd_double(&r, &x->created_at) &&
              rd_double(&r, &x->started_at) && rd_double(&r, &x->finished_at) &&
              rd_bytes(&r, false, &x->output_json, NULL) && rd_bytes(&r, false, &x->error, NULL) &&
              x->id && x->pipeline && x->version && x->digest && x->state;
    if (ok && fields == 13)
        ok = rd_bytes(&r, false, &x->usage_json, NULL);
    return rd_close(&r, ok, arena);
}

int etcd_decode_task(const void *v, size_t n, struct tr_task_rec *t, char **arena)
{
    struct rd r;
    uint64_t fields = 0;
    int rc = rd_open_range(&r, v, n, 14, 15, &fields, arena);
    if (rc < 0)
        return rc;
    *t = (struct tr_task_rec){0};
    const char *out = NULL;
    const char *usage = NULL;
    bool ok = rd_bytes(&r, false, &t->run_id, NULL) && rd_bytes(&r, false, &t->name, NULL) &&
              rd_u32(&r, &t->index) && rd_bytes(&r, false, &t->state, NULL) &&
              rd_u32(&r, &t->attempts) && rd_bytes(&r, false, &t->worker, NULL) &&
              rd_double(&r, &t->started_at) && rd_double(&r, &t->finished_at) &&
              rd_bytes(&r, true, &out, &t->output_len) && rd_bytes(&r, false, &t->error, NULL) &&
              rd_bytes(&r, false, &t->logs, NULL) && rd_bool(&r, &t->cached) && t->run_id &&
              t->name && t->state;
    if (ok && fields == 15)
        ok = rd_bytes(&r, true, &usage, &t->usage_len);
    t->output = out;
    t->usage = t->usage_len ? usage : NULL;
    return rd_close(&r, ok, arena);
}

int etcd_decode_uint(const void *v, size_t n, uint64_t *out)
{
    struct rd r = {.p = v, .end = (const unsigned char *)v + n};
    return rd_uint(&r, out) && r.p == r.end ? 0 : TR_EPROTO;
}

int etcd_decode_row(const void *v, size_t n, struct tr_state_row *x, char **arena)
{
    struct rd r;
    int rc = rd_open(&r, v, n, 5, arena);
    if (rc < 0)
        return rc;
    bool ok = rd_bytes(&r, false, &x->grp, NULL) && rd_bytes(&r, false, &x->sub, NULL) &&
              rd_double(&r, &x->ord) && rd_bytes(&r, false, &x->value, &x->value_len) &&
              x->value;
    return rd_close(&r, ok, arena);
}
