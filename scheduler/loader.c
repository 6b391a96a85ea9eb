/*
 * loader.c - pipeline graphs by digest, read out of process (loader.h).
 *
 * Reading a pipeline runs user Lua, which may take up to the sandbox's
 * wall-clock limit or, inside one C call, for ever; so it runs in a sandbox
 * child process (sandbox.c), which is killed at the limit, and the loop only
 * ever sees finished graphs. No Lua is evaluated in the scheduler's process.
 * Graphs are cached by the digest of their source: a pipeline registered
 * once and run a thousand times is read once. An entry is kept while runs use it and while it is
 * among the most recently used.
 */
#include "scheduler/loader.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"

#define PIPE_CACHE_MAX 64

struct load_req
{
    struct pipes *pipes;
    char *name;              /* chunk name for messages (owned) */
    load_done_fn done;
    void *arg;
};

struct pipeline_entry *pipe_lookup(struct pipes *s, const char *digest)
{
    struct pipeline_entry *pe = tr_hmap_get(&s->map, digest, 64);
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
static void pipes_trim(struct pipes *s)
{
    while (tr_hmap_count(&s->map) > PIPE_CACHE_MAX) {
        struct pipeline_entry *victim = NULL, *pe;
        size_t it = 0;
        while ((pe = tr_hmap_next(&s->map, &it)) != NULL) {
            if (pe->refs == 0 && (victim == NULL || pe->last_used < victim->last_used))
                victim = pe;
        }
        if (victim == NULL)
            return;
        tr_hmap_del(&s->map, victim->digest, 64);
        pipe_entry_free(victim);
    }
}

struct pipeline_entry *pipe_add(struct pipes *s, struct tr_pipeline_def *def,
                                 const char *name)
{
    struct pipeline_entry *pe = pipe_lookup(s, def->digest);
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
    if (tr_hmap_put(&s->map, pe->digest, 64, pe) < 0) {
        pipe_entry_free(pe);
        return NULL;
    }
    pipes_trim(s);
    return pe;
}

static void load_after(void *arg, struct tr_pipeline_def *def, struct tr_error *err)
{
    struct load_req *lr = arg;
    struct pipes *s = lr->pipes;
    s->loads_in_flight--;
    struct pipeline_entry *pe = NULL;
    struct tr_error e;
    tr_error_init(&e);
    if (s->stopping) {
        tr_pipeline_def_free(def);
        tr_error_set(&e, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    } else if (def != NULL) {
        pe = pipe_add(s, def, lr->name);
        if (pe == NULL)
            tr_error_set(&e, TR_ENOMEM, "out of memory caching pipeline '%s'", lr->name);
    } else {
        e = *err;
    }
    lr->done(pe, pe ? NULL : &e, lr->arg);
    tr_free(lr->name);
    tr_free(lr);
}

int pipe_load_async(struct pipes *s, const char *src, size_t len, const char *name,
                    load_done_fn done, void *arg)
{
    struct load_req *lr = tr_calloc(1, sizeof(*lr));
    if (lr == NULL)
        return TR_ENOMEM;
    lr->pipes = s;
    lr->name = tr_strdup(name);
    lr->done = done;
    lr->arg = arg;
    int rc = lr->name != NULL ? 0 : TR_ENOMEM;
    /* Counted before: a sandbox that cannot start a child answers at once. */
    s->loads_in_flight++;
    if (rc == 0)
        rc = sandbox_load(s->sandbox, src, len, name, load_after, lr);
    if (rc < 0) {
        s->loads_in_flight--;
        tr_free(lr->name);
        tr_free(lr);
        return rc;
    }
    return 0;
}

void pipes_init(struct pipes *p, uv_loop_t *loop)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
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
