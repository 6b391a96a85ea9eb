/*
 * fuzz_pipeline.c - the pipeline loader (lib/lua/pipeline.c): arbitrary Lua
 * source evaluated in the sandbox with small limits (16 MiB of heap, 2
 * million instructions, 2 s, 1,000 tasks), as the scheduler evaluates files
 * a client posts.
 *
 * A source that loads must give a graph that keeps the loader's promises:
 * a topological order that is a permutation of the tasks with every task
 * after what it waits for, indices in range, a name index that finds every
 * task, and the digest of the very source. A refusal must carry a code and
 * a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base/log.h"
#include "lib/lua/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const struct tr_pipeline_limits limits = {
    .mem_max = 16u << 20,
    .instr_max = 2000000,
    .wall_max_s = 2,
    .max_tasks = 1000,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    tr_log_init("fuzz", TR_LOG_ERROR);
    return 0;
}

static void check_def(const struct tr_pipeline_def *def, const uint8_t *data, size_t size)
{
    uint32_t n = def->n_tasks;
    if (n == 0 || n > limits.max_tasks || def->name == NULL || def->version == NULL ||
        def->params == NULL || def->source_len != size ||
        memcmp(def->source, data, size) != 0 || def->source[size] != '\0')
        abort();
    char digest[65];
    tr_sha256_hex(data, size, digest);
    if (strcmp(digest, def->digest) != 0)
        abort();
    uint32_t *pos = calloc(n, sizeof(*pos));
    if (pos == NULL)
        abort();
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = def->topo[i];
        if (t >= n || pos[t] != 0)
            abort(); /* not a permutation */
        pos[t] = i + 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct tr_task_def *t = &def->tasks[i];
        if (t->name == NULL || tr_pipeline_find_task(def, t->name) != (int32_t)i)
            abort();
        if (t->pool >= def->n_pools || (t->map >= 0 && (uint32_t)t->map >= n))
            abort();
        if (t->map >= 0 && pos[t->map] >= pos[i])
            abort(); /* a task before the one it maps over */
        for (uint32_t k = 0; k < t->n_after; k++) {
            if (t->after[k] >= n || pos[t->after[k]] >= pos[i])
                abort(); /* a task before one it waits for */
        }
        for (uint32_t k = 0; k < t->n_downstream; k++) {
            if (t->downstream[k] >= n)
                abort();
        }
    }
    for (uint32_t i = 0; i < def->n_sinks; i++) {
        if (def->sinks[i] >= n || def->tasks[def->sinks[i]].n_downstream != 0)
            abort();
    }
    free(pos);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tr_pipeline_def *def = NULL;
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_pipeline_load((const char *)data, size, "fuzz.lua", &limits, &def, &err);
    if (rc == 0) {
        if (def == NULL)
            abort();
        check_def(def, data, size);
        tr_pipeline_def_free(def);
    } else if (def != NULL || rc != err.code || err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
