/*
 * loader.c - pipeline graphs by digest, read off the loop thread.
 *
 * Reading a pipeline runs user Lua in the sandbox of lib/lua/pipeline.c; that may
 * take up to the sandbox's wall-clock limit, so it runs on libuv's thread
 * pool and the loop only ever sees finished graphs. Graphs are cached by the
 * digest of their source: a pipeline registered once and run a thousand
 * times is read once. An entry is kept while runs use it and while it is
 * among the most recently used.
 */
#include "scheduler/loader.h"

#include <malloc.h>

#include "lib/base/alloc.h"

#define PIPE_CACHE_MAX 64

struct load_req
{
    uv_work_t work;          /* libuv's request; first, so the request is the struct */
    struct pipes *pipes;
    char *src;               /* owned copy */
    size_t len;
    char *name;              /* chunk name for messages (owned) */
    struct tr_pipeline_limits limits;
    struct tr_pipeline_def *def; /* result */
    struct tr_error err;
    load_done_fn done;
    void *arg;
};

struct pipeline_entry *pipe_lookup(struct pipes *p, const char *digest)
{
    struct pipeline_entry *pe = tr_hmap_get(&p->map, digest, 64);
    if (pe != NULL)
        pe->last_used = tr_now();
    return pe;
}

void pipe_ref(struct pipeline_entry *pe)
{
    pe->refs++;
}

static void pipe_entry_free(struct pipeline_entry *pe)
{
    tr_pipeline_def_free(pe->def);
    tr_free(pe);
}

void pipe_unref(struct pipeline_entry *pe)
{
    TR_ASSERT(pe->refs > 0);
    pe->refs--;
}

/* Frees unused graphs beyond the cache bound, least recently used first. */
static void pipes_trim(struct pipes *p)
{
    while (tr_hmap_count(&p->map) > PIPE_CACHE_MAX) {
        struct pipeline_entry *victim = NULL, *pe;
        size_t it = 0;
        while ((pe = tr_hmap_next(&p->map, &it)) != NULL) {
            if (pe->refs == 0 && (victim == NULL || pe->last_used < victim->last_used))
                victim = pe;
        }
        if (victim == NULL)
            return;
        tr_hmap_del(&p->map, victim->digest, 64);
        pipe_entry_free(victim);
    }
}

/* Takes def into the cache, or returns the entry already there for its digest. */
static struct pipeline_entry *pipe_insert(struct pipes *p, struct tr_pipeline_def *def,
                                          const char *name)
{
    struct pipeline_entry *pe = pipe_lookup(p, def->digest);
    if (pe != NULL) {
        tr_pipeline_def_free(def);
        return pe;
    }
    pe = tr_calloc(1, sizeof(*pe));
    if (pe == NULL) {
        tr_pipeline_def_free(def);
        return NULL;
    }
    memcpy(pe->digest, def->digest, sizeof(pe->digest));
    snprintf(pe->name, sizeof(pe->name), "%s", name);
    pe->def = def;
    pe->last_used = tr_now();
    if (tr_hmap_put(&p->map, pe->digest, 64, pe) < 0) {
        pipe_entry_free(pe);
        return NULL;
    }
    pipes_trim(p);
    return pe;
}

static void load_work(uv_work_t *w)
{
    struct load_req *lr = (struct load_req *)w;
    tr_error_init(&lr->err);
    int rc = tr_pipeline_load(lr->src, lr->len, lr->name, &lr->limits, &lr->def, &lr->err);
    if (rc < 0 && lr->err.code == 0)
        tr_error_set(&lr->err, rc, "cannot load pipeline '%s': %s", lr->name, tr_strerror(rc));
    /* A large graph leaves freed Lua heap behind in this thread's arena. */
    malloc_trim(0);
}

static void load_after(uv_work_t *w, int status)
{
    struct load_req *lr = (struct load_req *)w;
    struct pipes *p = lr->pipes;
    p->loads_in_flight--;
    struct pipeline_entry *pe = NULL;
    if (status == UV_ECANCELED || p->stopping) {
        tr_pipeline_def_free(lr->def);
        tr_error_set(&lr->err, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    } else if (lr->def != NULL) {
        pe = pipe_insert(p, lr->def, lr->name);
        if (pe == NULL)
            tr_error_set(&lr->err, TR_ENOMEM, "out of memory caching pipeline '%s'", lr->name);
    }
    lr->done(pe, pe ? NULL : &lr->err, lr->arg);
    tr_free(lr->src);
    tr_free(lr->name);
    tr_free(lr);
}

int pipe_load_async(struct pipes *p, const char *src, size_t len, const char *name,
                    load_done_fn done, void *arg)
{
    struct load_req *lr = tr_calloc(1, sizeof(*lr));
    if (lr == NULL)
        return TR_ENOMEM;
    lr->pipes = p;
    lr->src = tr_memdup(src, len);
    lr->name = tr_strdup(name);
    lr->len = len;
    lr->limits = p->limits;
    lr->done = done;
    lr->arg = arg;
    if (lr->src == NULL || lr->name == NULL) {
        tr_free(lr->src);
        tr_free(lr->name);
        tr_free(lr);
        return TR_ENOMEM;
    }
    int rc = uv_queue_work(p->loop, &lr->work, load_work, load_after);
    if (rc < 0) {
        tr_free(lr->src);
        tr_free(lr->name);
        tr_free(lr);
        return rc;
    }
    p->loads_in_flight++;
    return 0;
}

int pipe_load_sync(struct pipes *p, const char *src, size_t len, const char *name,
                   struct pipeline_entry **out, struct tr_error *err)
{
    char digest[65];
    tr_sha256_hex(src, len, digest);
    struct pipeline_entry *pe = pipe_lookup(p, digest);
    if (pe == NULL) {
        struct tr_pipeline_def *def = NULL;
        int rc = tr_pipeline_load(src, len, name, &p->limits, &def, err);
        if (rc < 0)
            return rc;
        pe = pipe_insert(p, def, name);
        if (pe == NULL)
            return tr_error_set(err, TR_ENOMEM, "out of memory caching pipeline '%s'", name);
        malloc_trim(0);
    }
    *out = pe;
    return 0;
}

void pipes_init(struct pipes *p, uv_loop_t *loop, const struct tr_pipeline_limits *limits)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->limits = *limits;
    tr_hmap_init(&p->map);
}

void pipes_release(struct pipes *p)
{
    size_t it = 0;
    struct pipeline_entry *pe;
    while ((pe = tr_hmap_next(&p->map, &it)) != NULL)
        pipe_entry_free(pe);
    tr_hmap_release(&p->map);
}
