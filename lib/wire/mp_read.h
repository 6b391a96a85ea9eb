/*
 * mp_read.h - a cursor over msgpack bytes that allocates nothing.
 *
 * For messages read field by field into C structs (the sandbox protocol, a
 * pipeline graph): msgpack-c would first build a tree of objects, 24 bytes
 * per value, which for a graph of a million tasks is hundreds of MB. Every
 * read checks the bytes that remain, and a count is refused when it cannot
 * fit in them (each element takes at least one byte), so a hostile count
 * never reaches an allocation. Errors are sticky: after the first one every
 * read returns a zero value, and the caller checks r->err once at the end.
 *
 * Any thread.
 */
#ifndef TR_MP_READ_H
#define TR_MP_READ_H

#include "lib/base/buf.h"
#include "lib/base/error.h"

struct tr_mp_rd
{
    const unsigned char *p;
    const unsigned char *end;
    int err;                 /* 0, or TR_EPROTO once a read failed */
};

void tr_mp_rd_init(struct tr_mp_rd *r, const void *data, size_t len);

/* Consumes a nil and returns true when the next value is nil. */
bool tr_mp_rd_nil(struct tr_mp_rd *r);
/* Element counts; at most the bytes that remain. */
uint32_t tr_mp_rd_array(struct tr_mp_rd *r);
uint32_t tr_mp_rd_map(struct tr_mp_rd *r);
/* A str (tr_mp_rd_str) or a str or bin (tr_mp_rd_bytes) as a view into the input. */
struct tr_str tr_mp_rd_str(struct tr_mp_rd *r);
struct tr_str tr_mp_rd_bytes(struct tr_mp_rd *r);
uint64_t tr_mp_rd_uint(struct tr_mp_rd *r);
int64_t tr_mp_rd_int(struct tr_mp_rd *r);
/* A float or an integer. */
double tr_mp_rd_double(struct tr_mp_rd *r);
bool tr_mp_rd_bool(struct tr_mp_rd *r);
/* Skips one value of any type (iteratively, without depth limit). */
void tr_mp_rd_skip(struct tr_mp_rd *r);
/* Bytes not read yet. */
static inline size_t tr_mp_rd_left(const struct tr_mp_rd *r)
{
    return (size_t)(r->end - r->p);
}

#endif
