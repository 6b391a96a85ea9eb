/*
 * mp_read.c - a cursor over msgpack bytes that allocates nothing.
 */
#include "lib/wire/mp_read.h"

void tr_mp_rd_init(struct tr_mp_rd *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->err = 0;
}

static void bad(struct tr_mp_rd *r)
{
    r->err = TR_EPROTO;
    r->p = r->end;
}

/* Big-endian n bytes; 0 and an error when they are not there. */
static uint64_t be(struct tr_mp_rd *r, int n)
{
    if (r->err != 0 || tr_mp_rd_left(r) < (size_t)n) {
        bad(r);
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | r->p[i];
    r->p += n;
    return v;
}

static int tag(struct tr_mp_rd *r)
{
    if (r->err != 0 || r->p == r->end) {
        bad(r);
        return -1;
    }
    return *r->p++;
}

bool tr_mp_rd_nil(struct tr_mp_rd *r)
{
    if (r->err == 0 && r->p < r->end && *r->p == 0xc0) {
        r->p++;
        return true;
    }
    return false;
}

static uint32_t count(struct tr_mp_rd *r, uint64_t n)
{
    if (r->err != 0 || n > tr_mp_rd_left(r)) {
        bad(r);
        return 0;
    }
    return (uint32_t)n;
}

uint32_t tr_mp_rd_array(struct tr_mp_rd *r)
{
    int t = tag(r);
    if (t >= 0x90 && t <= 0x9f)
        return count(r, (uint64_t)(t & 0x0f));
    if (t == 0xdc)
        return count(r, be(r, 2));
    if (t == 0xdd)
        return count(r, be(r, 4));
    bad(r);
    return 0;
}

uint32_t tr_mp_rd_map(struct tr_mp_rd *r)
{
    int t = tag(r);
    uint64_t n;
    if (t >= 0x80 && t <= 0x8f)
        n = (uint64_t)(t & 0x0f);
    else if (t == 0xde)
        n = be(r, 2);
    else if (t == 0xdf)
        n = be(r, 4);
    else {
        bad(r);
        return 0;
    }
    if (r->err == 0 && n > tr_mp_rd_left(r) / 2) {
        bad(r);
        return 0;
    }
    return (uint32_t)n;
}

static struct tr_str body(struct tr_mp_rd *r, uint64_t n)
{
    if (r->err != 0 || n > tr_mp_rd_left(r)) {
        bad(r);
        return (struct tr_str){"", 0};
    }
    struct tr_str s = {(const char *)r->p, (size_t)n};
    r->p += n;
    return s;
}

static struct tr_str str_or_bin(struct tr_mp_rd *r, bool bin_ok)
{
    int t = tag(r);
    if (t >= 0xa0 && t <= 0xbf)
        return body(r, (uint64_t)(t & 0x1f));
    if (t == 0xd9 || (bin_ok && t == 0xc4))
        return body(r, be(r, 1));
    if (t == 0xda || (bin_ok && t == 0xc5))
        return body(r, be(r, 2));
    if (t == 0xdb || (bin_ok && t == 0xc6))
        return body(r, be(r, 4));
    bad(r);
    return (struct tr_str){"", 0};
}

struct tr_str tr_mp_rd_str(struct tr_mp_rd *r)
{
    return str_or_bin(r, false);
}

struct tr_str tr_mp_rd_bytes(struct tr_mp_rd *r)
{
    return str_or_bin(r, true);
}

/* Any integer as (negative, magnitude bits); false when not an integer. */
static bool integer(struct tr_mp_rd *r, int t, int64_t *sv, uint64_t *uv, bool *neg)
{
    *neg = false;
    if (t >= 0 && t <= 0x7f) {
        *uv = (uint64_t)t;
    } else if (t >= 0xe0) {
        *neg = true;
        *sv = (int8_t)t;
    } else if (t >= 0xcc && t <= 0xcf) {
        *uv = be(r, 1 << (t - 0xcc));
    } else if (t >= 0xd0 && t <= 0xd3) {
        int n = 1 << (t - 0xd0);
        uint64_t v = be(r, n);
        int64_t s;
        if (n == 1)
            s = (int8_t)v;
        else if (n == 2)
            s = (int16_t)v;
        else if (n == 4)
            s = (int32_t)v;
        else
            s = (int64_t)v;
        if (s >= 0)
            *uv = (uint64_t)s;
        else {
            *neg = true;
            *sv = s;
        }
    } else {
        return false;
    }
    return true;
}

uint64_t tr_mp_rd_uint(struct tr_mp_rd *r)
{
    int64_t sv = 0;
    uint64_t uv = 0;
    bool neg;
    int t = tag(r);
    if (t < 0 || !integer(r, t, &sv, &uv, &neg) || neg) {
        bad(r);
        return 0;
    }
    return r->err ? 0 : uv;
}

int64_t tr_mp_rd_int(struct tr_mp_rd *r)
{
    int64_t sv = 0;
    uint64_t uv = 0;
    bool neg;
    int t = tag(r);
    if (t < 0 || !integer(r, t, &sv, &uv, &neg) || (!neg && uv > INT64_MAX)) {
        bad(r);
        return 0;
    }
    return r->err ? 0 : neg ? sv : (int64_t)uv;
}

double tr_mp_rd_double(struct tr_mp_rd *r)
{
    int t = tag(r);
    if (t == 0xcb) {
        uint64_t v = be(r, 8);
        double d;
        memcpy(&d, &v, sizeof(d));
        return r->err ? 0 : d;
    }
    if (t == 0xca) {
        uint32_t v = (uint32_t)be(r, 4);
        float f;
        memcpy(&f, &v, sizeof(f));
        return r->err ? 0 : (double)f;
    }
    int64_t sv = 0;
    uint64_t uv = 0;
    bool neg;
    if (t < 0 || !integer(r, t, &sv, &uv, &neg)) {
        bad(r);
        return 0;
    }
    return r->err ? 0 : neg ? (double)sv : (double)uv;
}

bool tr_mp_rd_bool(struct tr_mp_rd *r)
{
    int t = tag(r);
    if (t == 0xc2 || t == 0xc3)
        return t == 0xc3;
    bad(r);
    return false;
}

void tr_mp_rd_skip(struct tr_mp_rd *r)
{
    uint64_t pending = 1; /* values still to skip, over all levels */
    while (pending > 0 && r->err == 0) {
        pending--;
        int t = tag(r);
        if (t < 0)
            return;
        uint64_t n = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
            continue;
        if (t >= 0x80 && t <= 0x8f) {
            pending += 2u * (uint64_t)(t & 0x0f);
        } else if (t >= 0x90 && t <= 0x9f) {
            pending += (uint64_t)(t & 0x0f);
        } else if (t >= 0xa0 && t <= 0xbf) {
            body(r, (uint64_t)(t & 0x1f));
        } else {
            switch (t) {
            case 0xc4: case 0xd9: body(r, be(r, 1)); break;
            case 0xc5: case 0xda: body(r, be(r, 2)); break;
            case 0xc6: case 0xdb: body(r, be(r, 4)); break;
            case 0xcc: case 0xd0: body(r, 1); break;
            case 0xcd: case 0xd1: body(r, 2); break;
            case 0xca: case 0xce: case 0xd2: body(r, 4); break;
            case 0xcb: case 0xcf: case 0xd3: body(r, 8); break;
            case 0xd4: body(r, 2); break;
            case 0xd5: body(r, 3); break;
            case 0xd6: body(r, 5); break;
            case 0xd7: body(r, 9); break;
            case 0xd8: body(r, 17); break;
            case 0xc7: body(r, be(r, 1) + 1); break;
            case 0xc8: body(r, be(r, 2) + 1); break;
            case 0xc9: body(r, be(r, 4) + 1); break;
            case 0xdc: n = be(r, 2); pending += n; break;
            case 0xdd: n = be(r, 4); pending += n; break;
            case 0xde: n = be(r, 2); pending += 2 * n; break;
            case 0xdf: n = be(r, 4); pending += 2 * n; break;
            default: bad(r); return;
            }
        }
        if (pending > tr_mp_rd_left(r))
            bad(r);
    }
}
