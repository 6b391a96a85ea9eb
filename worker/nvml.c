/*
 * nvml.c - NVML through dlopen/dlsym (see nvml.h).
 *
 * Only the handful of entry points and structs the worker needs are
 * declared here, with the layouts of nvml.h (stable since the v2 entry
 * points): no NVIDIA header is needed to build.
 */
#include "worker/nvml.h"

#include <dlfcn.h>
#include <stdlib.h>

#include "lib/base/alloc.h"

typedef int nvml_return;  /* nvmlReturn_t: 0 = NVML_SUCCESS */
typedef void *nvml_device; /* nvmlDevice_t */

struct nvml_memory        /* nvmlMemory_t */
{
    unsigned long long total, free, used;
};

struct nvml_utilization   /* nvmlUtilization_t */
{
    unsigned int gpu, memory;
};

struct tr_nvml
{
    void *lib;
    nvml_return (*init)(void);
    nvml_return (*shutdown)(void);
    nvml_return (*count)(unsigned int *);
    nvml_return (*by_index)(unsigned int, nvml_device *);
    nvml_return (*name)(nvml_device, char *, unsigned int);
    nvml_return (*memory)(nvml_device, struct nvml_memory *);
    nvml_return (*utilization)(nvml_device, struct nvml_utilization *);
    const char *(*error_string)(nvml_return);
};

static const char *why(const struct tr_nvml *n, nvml_return rc)
{
    const char *s = n->error_string ? n->error_string(rc) : NULL;
    return s ? s : "unknown NVML error";
}

struct tr_nvml *tr_nvml_open(const char *path, struct tr_error *err)
{
    if (path == NULL || path[0] == '\0')
        path = getenv("TRELLIS_NVML_LIB");
    if (path == NULL || path[0] == '\0')
        path = "libnvidia-ml.so.1";
    struct tr_nvml *n = tr_calloc(1, sizeof(*n));
    if (n == NULL) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (n->lib == NULL) {
        const char *e = dlerror();
        tr_error_set(err, TR_ENOENT, "cannot load NVML (%s): %s", path, e ? e : "?");
        tr_free(n);
        return NULL;
    }
    /* dlsym returns void *; POSIX guarantees it converts to a function pointer. */
#define SYM(field, symbol)                                                                  \
    do {                                                                                    \
        *(void **)(&n->field) = dlsym(n->lib, symbol);                                      \
        if (n->field == NULL) {                                                             \
            tr_error_set(err, TR_ENOENT, "NVML (%s) has no %s", path, symbol);              \
            goto out_close;                                                                 \
        }                                                                                   \
    } while (0)
    SYM(error_string, "nvmlErrorString");
    SYM(init, "nvmlInit_v2");
    SYM(shutdown, "nvmlShutdown");
    SYM(count, "nvmlDeviceGetCount_v2");
    SYM(by_index, "nvmlDeviceGetHandleByIndex_v2");
    SYM(name, "nvmlDeviceGetName");
    SYM(memory, "nvmlDeviceGetMemoryInfo");
    SYM(utilization, "nvmlDeviceGetUtilizationRates");
#undef SYM
    nvml_return rc = n->init();
    if (rc != 0) {
        tr_error_set(err, TR_EIO, "nvmlInit failed (%s): %s", path, why(n, rc));
        goto out_close;
    }
    return n;

out_close:
    dlclose(n->lib);
    tr_free(n);
    return NULL;
}

int tr_nvml_count(struct tr_nvml *n, uint32_t *count, struct tr_error *err)
{
    unsigned int c = 0;
    nvml_return rc = n->count(&c);
    if (rc != 0)
        return tr_error_set(err, TR_EIO, "nvmlDeviceGetCount failed: %s", why(n, rc));
    *count = c;
    return 0;
}

int tr_nvml_read(struct tr_nvml *n, struct tr_nvml_gpu *out, uint32_t count,
                 struct tr_error *err)
{
    for (uint32_t i = 0; i < count; i++) {
        struct tr_nvml_gpu *g = &out[i];
        memset(g, 0, sizeof(*g));
        g->index = i;
        g->util = -1;
        nvml_device dev = NULL;
        nvml_return rc = n->by_index(i, &dev);
        if (rc != 0)
            return tr_error_set(err, TR_EIO, "nvmlDeviceGetHandleByIndex(%u) failed: %s", i,
                                why(n, rc));
        if (n->name(dev, g->name, sizeof(g->name)) != 0)
            g->name[0] = '\0';
        g->name[sizeof(g->name) - 1] = '\0';
        struct nvml_memory mem;
        if (n->memory(dev, &mem) == 0) {
            g->mem_total_mb = mem.total >> 20;
            g->mem_used_mb = mem.used >> 20;
        }
        struct nvml_utilization u;
        if (n->utilization(dev, &u) == 0 && u.gpu <= 100)
            g->util = (int32_t)u.gpu;
    }
    return 0;
}

void tr_nvml_close(struct tr_nvml *n)
{
    if (n == NULL)
        return;
    n->shutdown();
    dlclose(n->lib);
    tr_free(n);
}
