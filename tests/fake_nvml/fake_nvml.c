/*
 * fake_nvml.c - a stand-in for libnvidia-ml.so.1 for the tests (this
 * machine has no GPU). It exports the entry points the worker looks up
 * (worker/nvml.c) with NVML's signatures, configured by the environment:
 *
 *   FAKE_NVML_COUNT      devices (default 2)
 *   FAKE_NVML_INIT_FAIL  when set, nvmlInit_v2 fails as without a driver
 *   FAKE_NVML_MEM_MB     total memory per device in MiB (default 16384)
 *   FAKE_NVML_NAME       device name (default "Fake GPU"); device i is "NAME i"
 *
 * Used memory is 1024 MiB times (index + 1), utilisation 10 times (index + 1)
 * percent, so tests can tell the devices apart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_EXPORT __attribute__((visibility("default")))

struct fake_memory
{
    unsigned long long total, free, used;
};

struct fake_utilization
{
    unsigned int gpu, memory;
};

static int initialized;

static unsigned env_uint(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    return v && *v ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

FAKE_EXPORT int nvmlInit_v2(void)
{
    if (getenv("FAKE_NVML_INIT_FAIL") != NULL)
        return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
    initialized = 1;
    return 0;
}

FAKE_EXPORT int nvmlShutdown(void)
{
    initialized = 0;
    return 0;
}

FAKE_EXPORT const char *nvmlErrorString(int rc)
{
    switch (rc) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 9: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

FAKE_EXPORT int nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (!initialized)
        return 1;
    *count = env_uint("FAKE_NVML_COUNT", 2);
    return 0;
}

FAKE_EXPORT int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device)
{
    if (!initialized)
        return 1;
    if (index >= env_uint("FAKE_NVML_COUNT", 2))
        return 2;
    *device = (void *)(unsigned long)(index + 1); /* never NULL */
    return 0;
}

FAKE_EXPORT int nvmlDeviceGetName(void *device, char *name, unsigned int length)
{
    const char *base = getenv("FAKE_NVML_NAME");
    snprintf(name, length, "%s %lu", base ? base : "Fake GPU", (unsigned long)device - 1);
    return 0;
}

FAKE_EXPORT int nvmlDeviceGetMemoryInfo(void *device, struct fake_memory *mem)
{
    unsigned long i = (unsigned long)device - 1;
    mem->total = (unsigned long long)env_uint("FAKE_NVML_MEM_MB", 16384) << 20;
    mem->used = (unsigned long long)(1024 * (i + 1)) << 20;
    mem->free = mem->total > mem->used ? mem->total - mem->used : 0;
    return 0;
}

FAKE_EXPORT int nvmlDeviceGetUtilizationRates(void *device, struct fake_utilization *u)
{
    unsigned long i = (unsigned long)device - 1;
    u->gpu = (unsigned)(10 * (i + 1));
    u->memory = u->gpu;
    return 0;
}
