/*
 * hmap.c - open addressing with linear probing and tombstones; grows at 3/4
 * occupancy (live plus deleted), rehashing away the tombstones.
 */
#include "lib/base/hmap.h"
#include "lib/base/alloc.h"

#define DELETED ((const void *)1)

static uint32_t hash_bytes(const void *key, size_t len)
{
    /* FNV-1a, then a final mix so that linear probing sees spread-out low bits. */
    const unsigned char *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

void tr_hmap_init(struct tr_hmap *m)
{
    memset(m, 0, sizeof(*m));
}

void tr_hmap_release(struct tr_hmap *m)
{
    tr_free(m->slots);
    tr_hmap_init(m);
}

static struct tr_hmap_slot *find(const struct tr_hmap *m, const void *key, size_t klen,
                                 uint32_t h)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct tr_hmap_slot *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->key != DELETED && s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

void *tr_hmap_get(const struct tr_hmap *m, const void *key, size_t klen)
{
    struct tr_hmap_slot *s = find(m, key, klen, hash_bytes(key, klen));
    return s ? s->value : NULL;
}

static int grow(struct tr_hmap *m)
{
    size_t cap = m->cap ? m->cap : 8;
    while (m->count * 2 >= cap)
        cap *= 2;
    struct tr_hmap_slot *slots = tr_calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return TR_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct tr_hmap_slot *s = &m->slots[i];
        if (s->key == NULL || s->key == DELETED)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    tr_free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->count;
    return 0;
}

int tr_hmap_put(struct tr_hmap *m, const void *key, size_t klen, void *value)
{
    uint32_t h = hash_bytes(key, klen);
    struct tr_hmap_slot *s = find(m, key, klen, h);
    if (s != NULL) {
        s->key = key;
        s->value = value;
        return 0;
    }
    if ((m->used + 1) * 4 >= m->cap * 3) {
        int rc = grow(m);
        if (rc < 0)
            return rc;
    }
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key != NULL && m->slots[i].key != DELETED)
        i = (i + 1) & mask;
    if (m->slots[i].key == NULL)
        m->used++;
    m->slots[i] = (struct tr_hmap_slot){key, (uint32_t)klen, h, value};
    m->count++;
    return 0;
}

void *tr_hmap_del(struct tr_hmap *m, const void *key, size_t klen)
{
    struct tr_hmap_slot *s = find(m, key, klen, hash_bytes(key, klen));
    if (s == NULL)
        return NULL;
    void *v = s->value;
    s->key = DELETED;
    s->value = NULL;
    m->count--;
    return v;
}

void *tr_hmap_next(const struct tr_hmap *m, size_t *it)
{
    while (*it < m->cap) {
        struct tr_hmap_slot *s = &m->slots[(*it)++];
        if (s->key != NULL && s->key != DELETED)
            return s->value;
    }
    return NULL;
}
