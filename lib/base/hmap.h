/*
 * hmap.h - an open-addressing hash map from byte-string keys to pointers.
 *
 * Keys are borrowed: the caller keeps each key's bytes alive (and unchanged)
 * while the entry is in the map, typically because the value owns them. This
 * keeps the map at 24 bytes per slot, which matters for maps of a million
 * entries (dispatches, runs). Not thread-safe; one owner.
 */
#ifndef TR_HMAP_H
#define TR_HMAP_H

#include "lib/base/error.h"

struct tr_hmap_slot
{
    const void *key; /* NULL: empty; (void *)1: deleted */
    uint32_t klen;
    uint32_t hash;
    void *value;
};

/* Embedded by owners, so defined here; fields are private. */
struct tr_hmap
{
    struct tr_hmap_slot *slots;
    size_t cap;   /* power of two, or 0 */
    size_t count; /* live entries */
    size_t used;  /* live plus deleted slots */
};

void tr_hmap_init(struct tr_hmap *m);
void tr_hmap_release(struct tr_hmap *m);

/* The value stored under key, or NULL. */
void *tr_hmap_get(const struct tr_hmap *m, const void *key, size_t klen);

/* Inserts or replaces. 0 or TR_ENOMEM (the map is unchanged then). */
int tr_hmap_put(struct tr_hmap *m, const void *key, size_t klen, void *value) TR_MUST_CHECK;

/* Removes key; returns its value or NULL. */
void *tr_hmap_del(struct tr_hmap *m, const void *key, size_t klen);

static inline size_t tr_hmap_count(const struct tr_hmap *m)
{
    return m->count;
}

/*
 * Iteration: `size_t it = 0; void *v; while ((v = tr_hmap_next(m, &it)))`.
 * Deleting the current entry while iterating is allowed; inserting is not.
 */
void *tr_hmap_next(const struct tr_hmap *m, size_t *it);

/* Convenience for C-string keys. */
static inline void *tr_hmap_gets(const struct tr_hmap *m, const char *k)
{
    return tr_hmap_get(m, k, strlen(k));
}

#endif
