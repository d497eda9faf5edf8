/*
 * A fake NVML (libnvidia-ml.so.1) for gpm's tests.
 *
 * Built by tests/fakes/nvml.py with
 *     cc -shared -fPIC -O2 -pthread -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c
 * and loaded by the real nvidia-ml-py binding (pynvml) through
 * LD_LIBRARY_PATH, or in-process after a ctypes preload by soname.
 *
 * The world it serves comes from the file named by $FAKE_NVML_SCENARIO.  The
 * file is re-read whenever its inode, size or mtime changed (checked by every
 * entry point with one stat(2)), so a test changes the world by writing a new
 * file and renaming it over the old one.
 *
 * Scenario format: one "key value" per line; "#" starts a comment line.
 * Lines before the first "gpu" line are global; "gpu" opens a GPU block and
 * GPUs get their indices in file order.  Every per-GPU field that is absent
 * makes its getter answer NVML_ERROR_NOT_SUPPORTED.
 *
 *   driver_version 550.54.14        nvmlSystemGetDriverVersion
 *   nvml_version 12.550.54.14       nvmlSystemGetNVMLVersion
 *   cuda_version 12040              nvmlSystemGetCudaDriverVersion(_v2)
 *   init_error DRIVER_NOT_LOADED    nvmlInit* fails with it
 *   fail <nvmlFunction> <ERROR>     global: for system calls, and for every GPU
 *   gpu                             opens a GPU block
 *     name NVIDIA GeForce RTX 4090  (rest of the line)
 *     uuid GPU-...   serial ...   pci_bus_id 00000000:01:00.0
 *     pci_device_id 0x268410DE   pci_subsystem_id 0x16F010DE
 *     memory_total B   memory_used B   memory_reserved B
 *     util_gpu %   util_memory %   temperature C   fan %   pstate N
 *     power mW   power_limit mW   power_management_limit mW
 *     energy mJ   energy_fixed 0|1   (0: grows at "power" since load)
 *     clock_graphics|clock_sm|clock_mem|clock_video MHz
 *     max_clock_graphics|max_clock_sm|max_clock_mem|max_clock_video MHz
 *     clocks_event_reasons MASK   encoder %   decoder %
 *     lost_after N      after N calls taking this GPU's handle: GPU_IS_LOST
 *     slow_ms N         every call taking this GPU's handle first sleeps N ms
 *                       (outside the library's lock: other GPUs answer meanwhile)
 *     fail <nvmlFunction> <ERROR>   e.g. fail nvmlDeviceGetFanSpeed NOT_SUPPORTED
 *     process pid=N mem=BYTES|na type=compute|graphics|both [sm=%] [memutil=%]
 *             [enc=%] [dec=%] [name=REST OF LINE]
 *     ecc_uncorrected N   nvmlDeviceGetTotalEccErrors: N uncorrected errors
 *                         (volatile and aggregate; corrected ones are 0)
 *     xid CODE            one critical Xid event (repeat the line for more),
 *                         served once per load of the scenario by
 *                         nvmlEventSetWait to a set this GPU is registered in
 *
 * <ERROR> is NOT_SUPPORTED, NVML_ERROR_NOT_SUPPORTED or a number.  A "fail"
 * name without a _vN suffix matches every version of the function
 * (nvmlDeviceGetComputeRunningProcesses matches _v2 and _v3 too); with a
 * suffix only that version.  "fail nvmlDeviceGetHandleByIndex ERR" in a GPU
 * block makes the handle lookups of that GPU fail.
 *
 * Events: nvmlEventSetCreate/Free, nvmlDeviceRegisterEvents (Xid critical
 * errors only; other types answer NOT_SUPPORTED), nvmlDeviceGetSupportedEventTypes
 * and nvmlEventSetWait(_v2), which answers at once: the next undelivered Xid
 * of a registered GPU, or TIMEOUT (whatever the timeout asked).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_ALREADY_INITIALIZED 5
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_INSUFFICIENT_RESOURCES 23
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFu
#define NVML_VALUE_NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFull

/* ---- ABI structs, as in nvml.h / pynvml ---- */

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t; /* _v3 has the same layout */

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    unsigned int version;
    int sensorType;
    int temperature;
} nvmlTemperature_v1_t;

_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t");
_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t");
_Static_assert(sizeof(nvmlProcessInfo_v2_t) == 24, "nvmlProcessInfo_v2_t");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "sample");
_Static_assert(sizeof(nvmlTemperature_v1_t) == 12, "nvmlTemperature_v1_t");

#define NVML_STRUCT_VERSION(size, ver) ((unsigned int)(size) | ((unsigned int)(ver) << 24))
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2)
#define nvmlTemperature_v1 NVML_STRUCT_VERSION(sizeof(nvmlTemperature_v1_t), 1)

/* ---- the world ---- */

#define MAX_GPUS 64
#define MAX_PROCS 64
#define MAX_FAILS 48
#define MAX_XIDS 16
#define MAX_EVENT_SETS 16
#define XID_CRITICAL_EVENT 0x8ull

typedef struct {
    char fn[96];
    int err;
} fail_t;

typedef struct {
    int has;
    unsigned long long v;
} opt_t;

enum { PROC_COMPUTE = 1, PROC_GRAPHICS = 2 };

typedef struct {
    unsigned int pid;
    unsigned long long mem; /* NVML_VALUE_NOT_AVAILABLE_ULL for "na" */
    int type;               /* PROC_COMPUTE | PROC_GRAPHICS */
    opt_t sm, memutil, enc, dec;
    char name[160];
} proc_t;

typedef struct {
    char name[96], uuid[96], serial[32], bus_id[32];
    int has_name, has_uuid, has_serial, has_bus_id;
    unsigned int domain, bus, device;
    opt_t pci_device_id, pci_subsystem_id;
    opt_t mem_total, mem_used, mem_reserved;
    opt_t util_gpu, util_mem, temp, power, power_limit, pm_limit, energy;
    int energy_fixed;
    opt_t clock[4], max_clock[4];
    opt_t fan, pstate, reasons, enc, dec;
    long long lost_after; /* -1: never */
    unsigned long long slow_ms;
    fail_t fails[MAX_FAILS];
    int nfails;
    proc_t procs[MAX_PROCS];
    int nprocs;
    opt_t ecc_uncorrected;
    unsigned long long xids[MAX_XIDS];
    int nxids;
    /* runtime, reset at every (re)load */
    int xids_delivered;
    unsigned long long calls;
    int lost;
    unsigned long long energy_base;
    long long energy_t0_ns;
} gpu_t;

typedef struct {
    int broken;
    char driver[80], nvml_ver[80];
    int has_driver, has_nvml_ver;
    opt_t cuda;
    int init_error;
    fail_t fails[MAX_FAILS];
    int nfails;
    int ngpus;
    gpu_t gpus[MAX_GPUS];
} world_t;

typedef struct fake_device {
    int index;
} *nvmlDevice_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static world_t *g_world;
static char g_path[4096];
static struct stat g_st;
static int g_refcount;
static struct fake_device g_handles[MAX_GPUS];
static int g_warned_missing;
static void reset_event_sets(void);

static long long now_ns(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- error names ---- */

static const struct {
    const char *name;
    int code;
    const char *text;
} g_errors[] = {
    {"SUCCESS", 0, "Success"},
    {"UNINITIALIZED", 1, "Uninitialized"},
    {"INVALID_ARGUMENT", 2, "Invalid Argument"},
    {"NOT_SUPPORTED", 3, "Not Supported"},
    {"NO_PERMISSION", 4, "Insufficient Permissions"},
    {"ALREADY_INITIALIZED", 5, "Already Initialized"},
    {"NOT_FOUND", 6, "Not Found"},
    {"INSUFFICIENT_SIZE", 7, "Insufficient Size"},
    {"INSUFFICIENT_POWER", 8, "Insufficient External Power"},
    {"DRIVER_NOT_LOADED", 9, "Driver Not Loaded"},
    {"TIMEOUT", 10, "Timeout"},
    {"IRQ_ISSUE", 11, "Interrupt Request Issue"},
    {"LIBRARY_NOT_FOUND", 12, "NVML Shared Library Not Found"},
    {"FUNCTION_NOT_FOUND", 13, "Function Not Found"},
    {"CORRUPTED_INFOROM", 14, "Corrupted infoROM"},
    {"GPU_IS_LOST", 15, "GPU is lost"},
    {"RESET_REQUIRED", 16, "GPU requires restart"},
    {"OPERATING_SYSTEM", 17, "The operating system has blocked the request."},
    {"LIB_RM_VERSION_MISMATCH", 18, "RM has detected an NVML/RM version mismatch."},
    {"IN_USE", 19, "In use by another client"},
    {"MEMORY", 20, "Insufficient Memory"},
    {"NO_DATA", 21, "No data"},
    {"VGPU_ECC_NOT_SUPPORTED", 22, "The requested vgpu operation is not available on target device, because ECC is enabled"},
    {"INSUFFICIENT_RESOURCES", 23, "Ran out of critical resources, other than memory"},
    {"FREQ_NOT_SUPPORTED", 24, "Ran out of critical resources, other than memory"},
    {"ARGUMENT_VERSION_MISMATCH", 25, "The provided version is invalid/unsupported"},
    {"DEPRECATED", 26, "The requested functionality has been deprecated"},
    {"NOT_READY", 27, "The system is not ready for the request"},
    {"GPU_NOT_FOUND", 28, "The GPU was not found"},
    {"INVALID_STATE", 29, "The resource is in an invalid state"},
    {"RESET_TYPE_NOT_SUPPORTED", 30, "The reset type is not supported"},
    {"UNKNOWN", 999, "Unknown Error"},
};
#define N_ERRORS (sizeof(g_errors) / sizeof(g_errors[0]))

static int parse_error(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 0);
    if (end != s && *end == '\0') {
        *out = (int)v;
        return 0;
    }
    if (strncmp(s, "NVML_ERROR_", 11) == 0)
        s += 11;
    for (size_t i = 0; i < N_ERRORS; i++)
        if (strcasecmp(s, g_errors[i].name) == 0) {
            *out = g_errors[i].code;
            return 0;
        }
    return -1;
}

/* ---- scenario parsing ---- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int parse_ull(const char *s, unsigned long long *out) {
    char *end;
    if (!*s)
        return -1;
    *out = strtoull(s, &end, 0);
    return *trim(end) ? -1 : 0;
}

static int set_opt(opt_t *o, const char *s) {
    if (parse_ull(s, &o->v))
        return -1;
    o->has = 1;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *src) {
    if (strlen(src) >= cap)
        return -1;
    strcpy(dst, src);
    return 0;
}

static int add_fail(fail_t *fails, int *n, char *value) {
    char fn[96], err[64];
    if (*n >= MAX_FAILS || sscanf(value, "%95s %63s", fn, err) != 2)
        return -1;
    if (parse_error(err, &fails[*n].err))
        return -1;
    strcpy(fails[*n].fn, fn);
    (*n)++;
    return 0;
}

static int parse_process(gpu_t *g, char *value) {
    if (g->nprocs >= MAX_PROCS)
        return -1;
    proc_t *p = &g->procs[g->nprocs];
    memset(p, 0, sizeof *p);
    p->type = PROC_COMPUTE;
    int has_pid = 0;
    char *s = value;
    while (*s) {
        while (isspace((unsigned char)*s))
            s++;
        if (!*s)
            break;
        char *eq = strchr(s, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        char *key = s, *val = eq + 1;
        if (strcmp(key, "name") == 0) { /* the rest of the line */
            if (copy_str(p->name, sizeof p->name, trim(val)))
                return -1;
            break;
        }
        char *end = val;
        while (*end && !isspace((unsigned char)*end))
            end++;
        char saved = *end;
        *end = '\0';
        unsigned long long v = 0;
        int bad = 0;
        if (strcmp(key, "pid") == 0) {
            bad = parse_ull(val, &v);
            p->pid = (unsigned int)v;
            has_pid = 1;
        } else if (strcmp(key, "mem") == 0) {
            if (strcmp(val, "na") == 0 || strcmp(val, "None") == 0)
                p->mem = NVML_VALUE_NOT_AVAILABLE_ULL;
            else
                bad = parse_ull(val, &p->mem);
        } else if (strcmp(key, "type") == 0) {
            if (strcmp(val, "compute") == 0)
                p->type = PROC_COMPUTE;
            else if (strcmp(val, "graphics") == 0)
                p->type = PROC_GRAPHICS;
            else if (strcmp(val, "both") == 0 || strcmp(val, "compute+graphics") == 0)
                p->type = PROC_COMPUTE | PROC_GRAPHICS;
            else
                bad = 1;
        } else if (strcmp(key, "sm") == 0) {
            bad = set_opt(&p->sm, val);
        } else if (strcmp(key, "memutil") == 0) {
            bad = set_opt(&p->memutil, val);
        } else if (strcmp(key, "enc") == 0) {
            bad = set_opt(&p->enc, val);
        } else if (strcmp(key, "dec") == 0) {
            bad = set_opt(&p->dec, val);
        } else {
            bad = 1;
        }
        if (bad)
            return -1;
        *end = saved;
        s = end;
    }
    if (!has_pid)
        return -1;
    g->nprocs++;
    return 0;
}

static int parse_bus_id(gpu_t *g) {
    unsigned int dom, bus, dev, fn;
    if (sscanf(g->bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
        return -1;
    g->domain = dom;
    g->bus = bus;
    g->device = dev;
    return 0;
}

static int parse_gpu_key(gpu_t *g, const char *key, char *value) {
    static const char *clock_names[4] = {"graphics", "sm", "mem", "video"};
    if (strcmp(key, "name") == 0)
        return (g->has_name = 1), copy_str(g->name, sizeof g->name, value);
    if (strcmp(key, "uuid") == 0)
        return (g->has_uuid = 1), copy_str(g->uuid, sizeof g->uuid, value);
    if (strcmp(key, "serial") == 0)
        return (g->has_serial = 1), copy_str(g->serial, sizeof g->serial, value);
    if (strcmp(key, "pci_bus_id") == 0) {
        g->has_bus_id = 1;
        return copy_str(g->bus_id, sizeof g->bus_id, value) || parse_bus_id(g);
    }
    if (strcmp(key, "pci_device_id") == 0) return set_opt(&g->pci_device_id, value);
    if (strcmp(key, "pci_subsystem_id") == 0) return set_opt(&g->pci_subsystem_id, value);
    if (strcmp(key, "memory_total") == 0) return set_opt(&g->mem_total, value);
    if (strcmp(key, "memory_used") == 0) return set_opt(&g->mem_used, value);
    if (strcmp(key, "memory_reserved") == 0) return set_opt(&g->mem_reserved, value);
    if (strcmp(key, "util_gpu") == 0) return set_opt(&g->util_gpu, value);
    if (strcmp(key, "util_memory") == 0) return set_opt(&g->util_mem, value);
    if (strcmp(key, "temperature") == 0) return set_opt(&g->temp, value);
    if (strcmp(key, "power") == 0) return set_opt(&g->power, value);
    if (strcmp(key, "power_limit") == 0) return set_opt(&g->power_limit, value);
    if (strcmp(key, "power_management_limit") == 0) return set_opt(&g->pm_limit, value);
    if (strcmp(key, "energy") == 0) return set_opt(&g->energy, value);
    if (strcmp(key, "energy_fixed") == 0) {
        unsigned long long v;
        if (parse_ull(value, &v))
            return -1;
        g->energy_fixed = v != 0;
        return 0;
    }
    for (int i = 0; i < 4; i++) {
        if (strncmp(key, "clock_", 6) == 0 && strcmp(key + 6, clock_names[i]) == 0)
            return set_opt(&g->clock[i], value);
        if (strncmp(key, "max_clock_", 10) == 0 && strcmp(key + 10, clock_names[i]) == 0)
            return set_opt(&g->max_clock[i], value);
    }
    if (strcmp(key, "fan") == 0) return set_opt(&g->fan, value);
    if (strcmp(key, "pstate") == 0) return set_opt(&g->pstate, value);
    if (strcmp(key, "clocks_event_reasons") == 0) return set_opt(&g->reasons, value);
    if (strcmp(key, "encoder") == 0) return set_opt(&g->enc, value);
    if (strcmp(key, "decoder") == 0) return set_opt(&g->dec, value);
    if (strcmp(key, "lost_after") == 0) {
        unsigned long long v;
        if (parse_ull(value, &v))
            return -1;
        g->lost_after = (long long)v;
        return 0;
    }
    if (strcmp(key, "slow_ms") == 0) return parse_ull(value, &g->slow_ms);
    if (strcmp(key, "fail") == 0) return add_fail(g->fails, &g->nfails, value);
    if (strcmp(key, "process") == 0) return parse_process(g, value);
    if (strcmp(key, "ecc_uncorrected") == 0) return set_opt(&g->ecc_uncorrected, value);
    if (strcmp(key, "xid") == 0) {
        if (g->nxids >= MAX_XIDS)
            return -1;
        return parse_ull(value, &g->xids[g->nxids++]);
    }
    return -1;
}

static world_t *parse_world(const char *path) {
    world_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        w->broken = 1;
        return w;
    }
    char line[4096];
    int lineno = 0;
    gpu_t *g = NULL;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *key = s, *value = s;
        while (*value && !isspace((unsigned char)*value))
            value++;
        if (*value)
            *value++ = '\0';
        value = trim(value);
        int bad = 0;
        if (strcmp(key, "gpu") == 0) {
            if (w->ngpus >= MAX_GPUS) {
                bad = 1;
            } else {
                g = &w->gpus[w->ngpus++];
                g->lost_after = -1;
            }
        } else if (g) {
            bad = parse_gpu_key(g, key, value);
        } else if (strcmp(key, "driver_version") == 0) {
            w->has_driver = 1;
            bad = copy_str(w->driver, sizeof w->driver, value);
        } else if (strcmp(key, "nvml_version") == 0) {
            w->has_nvml_ver = 1;
            bad = copy_str(w->nvml_ver, sizeof w->nvml_ver, value);
        } else if (strcmp(key, "cuda_version") == 0) {
            bad = set_opt(&w->cuda, value);
        } else if (strcmp(key, "init_error") == 0) {
            bad = parse_error(value, &w->init_error);
        } else if (strcmp(key, "fail") == 0) {
            bad = add_fail(w->fails, &w->nfails, value);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "fake_nvml: %s:%d: cannot parse: %s %s\n", path, lineno, key, value);
            w->broken = 1;
            break;
        }
    }
    fclose(f);
    return w;
}

static unsigned long long energy_now(const gpu_t *g, long long now) {
    if (g->energy_fixed || !g->power.has)
        return g->energy_base;
    /* mW * s = mJ, split so the product cannot overflow */
    unsigned long long dt = (unsigned long long)(now - g->energy_t0_ns);
    unsigned long long secs = dt / 1000000000u, rest = dt % 1000000000u;
    return g->energy_base + g->power.v * secs + g->power.v * rest / 1000000000u;
}

/* Give the new world its runtime state; an energy counter that grows keeps
 * growing from where the same GPU (by uuid) was, so it never runs back. */
static void start_world(world_t *w, const world_t *old) {
    long long now = now_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < w->ngpus; i++) {
        gpu_t *g = &w->gpus[i];
        g->energy_base = g->energy.v;
        g->energy_t0_ns = now;
        if (!old || !g->energy.has || g->energy_fixed || !g->has_uuid)
            continue;
        for (int j = 0; j < old->ngpus; j++) {
            const gpu_t *o = &old->gpus[j];
            if (o->has_uuid && strcmp(o->uuid, g->uuid) == 0 && o->energy.has && !o->energy_fixed) {
                unsigned long long prev = energy_now(o, now);
                if (prev > g->energy_base)
                    g->energy_base = prev;
                break;
            }
        }
    }
}

static void maybe_reload(void) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    if (!path || !*path) {
        free(g_world);
        g_world = NULL;
        g_path[0] = '\0';
        return;
    }
    struct stat st;
    int same_path = strcmp(path, g_path) == 0;
    if (stat(path, &st) != 0) {
        if (!same_path || !g_world) { /* keep the old world while the file is briefly away */
            if (!g_warned_missing++)
                fprintf(stderr, "fake_nvml: no scenario file %s\n", path);
            free(g_world);
            g_world = NULL;
            g_path[0] = '\0';
        }
        return;
    }
    if (g_world && same_path && st.st_ino == g_st.st_ino && st.st_dev == g_st.st_dev &&
        st.st_size == g_st.st_size && st.st_mtim.tv_sec == g_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == g_st.st_mtim.tv_nsec)
        return;
    world_t *w = parse_world(path);
    if (!w)
        return;
    start_world(w, g_world);
    free(g_world);
    g_world = w;
    g_st = st;
    snprintf(g_path, sizeof g_path, "%s", path);
}

/* ---- entry helpers ---- */

#define LOCK() pthread_mutex_lock(&g_lock)
#define RET(x)                                                                 \
    do {                                                                       \
        nvmlReturn_t ret_ = (x);                                               \
        pthread_mutex_unlock(&g_lock);                                         \
        return ret_;                                                           \
    } while (0)

/* "nvmlFoo_v3" -> length of "nvmlFoo" */
static size_t base_len(const char *fn) {
    size_t n = strlen(fn);
    size_t i = n;
    while (i > 0 && isdigit((unsigned char)fn[i - 1]))
        i--;
    if (i < n && i >= 2 && fn[i - 1] == 'v' && fn[i - 2] == '_')
        return i - 2;
    return n;
}

static int find_fail(const fail_t *fails, int n, const char *fn) {
    size_t fb = base_len(fn);
    for (int i = 0; i < n; i++) {
        const char *name = fails[i].fn;
        if (strcmp(name, fn) == 0)
            return fails[i].err;
        if (base_len(name) == strlen(name) && strlen(name) == fb && strncmp(name, fn, fb) == 0)
            return fails[i].err;
    }
    return 0;
}

/* Under the lock: is NVML usable for a system-level call? */
static nvmlReturn_t system_enter(const char *fn) {
    maybe_reload();
    if (g_refcount <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!g_world || g_world->broken)
        return NVML_ERROR_UNKNOWN;
    return find_fail(g_world->fails, g_world->nfails, fn);
}

/* Under the lock: check a device handle, count the call, apply faults. */
static nvmlReturn_t device_enter(nvmlDevice_t dev, const char *fn, gpu_t **out) {
    maybe_reload();
    if (g_refcount <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!g_world || g_world->broken)
        return NVML_ERROR_UNKNOWN;
    if (dev < &g_handles[0] || dev >= &g_handles[MAX_GPUS] ||
        (size_t)((char *)dev - (char *)g_handles) % sizeof g_handles[0] != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    int index = (int)(dev - g_handles);
    if (index >= g_world->ngpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu_t *g = &g_world->gpus[index];
    g->calls++;
    if (g->lost || (g->lost_after >= 0 && g->calls > (unsigned long long)g->lost_after)) {
        g->lost = 1;
        return NVML_ERROR_GPU_IS_LOST;
    }
    nvmlReturn_t r = find_fail(g_world->fails, g_world->nfails, fn);
    if (!r)
        r = find_fail(g->fails, g->nfails, fn);
    *out = g;
    return r;
}

/* A slow GPU: sleep its slow_ms before the call, without holding the lock. */
static void device_delay(nvmlDevice_t dev) {
    unsigned long long ms = 0;
    LOCK();
    maybe_reload();
    if (g_world && dev >= &g_handles[0] && dev < &g_handles[MAX_GPUS]) {
        int index = (int)(dev - g_handles);
        if (index < g_world->ngpus)
            ms = g_world->gpus[index].slow_ms;
    }
    pthread_mutex_unlock(&g_lock);
    if (ms) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

#define DEVICE_ENTER(dev)                                                      \
    gpu_t *g = NULL;                                                           \
    device_delay(dev);                                                         \
    LOCK();                                                                    \
    {                                                                          \
        nvmlReturn_t r_ = device_enter((dev), __func__, &g);                   \
        if (r_)                                                                \
            RET(r_);                                                           \
    }

#define SYSTEM_ENTER()                                                         \
    LOCK();                                                                    \
    {                                                                          \
        nvmlReturn_t r_ = system_enter(__func__);                              \
        if (r_)                                                                \
            RET(r_);                                                           \
    }

static nvmlReturn_t put_str(char *buf, unsigned int len, const char *s) {
    if (!buf)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, s);
    return NVML_SUCCESS;
}

static nvmlReturn_t put_uint(unsigned int *out, const opt_t *o) {
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!o->has)
        return NVML_ERROR_NOT_SUPPORTED;
    *out = (unsigned int)o->v;
    return NVML_SUCCESS;
}

/* ---- init / shutdown / errors ---- */

static nvmlReturn_t do_init(const char *fn) {
    LOCK();
    maybe_reload();
    if (!g_world)
        RET(NVML_ERROR_DRIVER_NOT_LOADED);
    if (g_world->broken)
        RET(NVML_ERROR_UNKNOWN);
    if (g_world->init_error)
        RET(g_world->init_error);
    nvmlReturn_t r = find_fail(g_world->fails, g_world->nfails, fn);
    if (r)
        RET(r);
    for (int i = 0; i < MAX_GPUS; i++)
        g_handles[i].index = i;
    g_refcount++;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlInit(void) { return do_init(__func__); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(__func__); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init(__func__);
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    LOCK();
    if (g_refcount <= 0)
        RET(NVML_ERROR_UNINITIALIZED);
    g_refcount--;
    RET(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    for (size_t i = 0; i < N_ERRORS; i++)
        if (g_errors[i].code == result)
            return g_errors[i].text;
    return "Unknown Error";
}

/* Not NVML: lets tests tell this library from a real one, and start over. */
EXPORT const char *fakeNvmlMarker(void) { return "gpm fake NVML"; }

EXPORT void fakeNvmlReset(void) {
    LOCK();
    free(g_world);
    g_world = NULL;
    g_path[0] = '\0';
    g_refcount = 0;
    g_warned_missing = 0;
    reset_event_sets();
    pthread_mutex_unlock(&g_lock);
}

/* ---- system ---- */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    SYSTEM_ENTER();
    if (!g_world->has_driver)
        RET(NVML_ERROR_NOT_SUPPORTED);
    RET(put_str(version, length, g_world->driver));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    SYSTEM_ENTER();
    if (g_world->has_nvml_ver)
        RET(put_str(version, length, g_world->nvml_ver));
    if (!g_world->has_driver)
        RET(NVML_ERROR_NOT_SUPPORTED);
    char buf[96];
    snprintf(buf, sizeof buf, "%d.%s", g_world->cuda.has ? (int)(g_world->cuda.v / 1000) : 12,
             g_world->driver);
    RET(put_str(version, length, buf));
}

static nvmlReturn_t cuda_version(int *v, const char *fn) {
    LOCK();
    nvmlReturn_t r = system_enter(fn);
    if (r)
        RET(r);
    if (!v)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g_world->cuda.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    *v = (int)g_world->cuda.v;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { return cuda_version(v, __func__); }
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return cuda_version(v, __func__); }

static int read_proc_name(unsigned int pid, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0'; /* argv[0]: up to the first NUL */
    if (buf[0])
        return 0;
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = '\0';
    return buf[0] ? 0 : -1;
}

EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
    SYSTEM_ENTER();
    if (!name || length == 0)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    const char *found = NULL;
    for (int i = 0; i < g_world->ngpus && !found; i++)
        for (int j = 0; j < g_world->gpus[i].nprocs; j++)
            if (g_world->gpus[i].procs[j].pid == pid && g_world->gpus[i].procs[j].name[0]) {
                found = g_world->gpus[i].procs[j].name;
                break;
            }
    char buf[1024];
    if (!found) {
        if (read_proc_name(pid, buf, sizeof buf))
            RET(NVML_ERROR_NOT_FOUND);
        found = buf;
    }
    snprintf(name, length, "%s", found); /* NVML truncates */
    RET(NVML_SUCCESS);
}

/* ---- enumeration ---- */

static nvmlReturn_t device_count(unsigned int *count, const char *fn) {
    LOCK();
    nvmlReturn_t r = system_enter(fn);
    if (r)
        RET(r);
    if (!count)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    *count = (unsigned int)g_world->ngpus;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *c) { return device_count(c, __func__); }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *c) { return device_count(c, __func__); }

/* Under the lock, after system_enter: the handle of GPU i, or why not. */
static nvmlReturn_t handle_of(int i, const char *fn, nvmlDevice_t *device) {
    gpu_t *g = &g_world->gpus[i];
    nvmlReturn_t r = find_fail(g->fails, g->nfails, fn);
    if (!r)
        r = find_fail(g->fails, g->nfails, "nvmlDeviceGetHandleByIndex");
    if (r)
        return r;
    if (g->lost || g->lost_after == 0)
        return NVML_ERROR_GPU_IS_LOST;
    *device = &g_handles[i];
    return NVML_SUCCESS;
}

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device, const char *fn) {
    LOCK();
    nvmlReturn_t r = system_enter(fn);
    if (r)
        RET(r);
    if (!device || index >= (unsigned int)g_world->ngpus)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    RET(handle_of((int)index, fn, device));
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) {
    return handle_by_index(i, d, __func__);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    return handle_by_index(i, d, __func__);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    SYSTEM_ENTER();
    if (!uuid || !device)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g_world->ngpus; i++)
        if (g_world->gpus[i].has_uuid && strcmp(g_world->gpus[i].uuid, uuid) == 0)
            RET(handle_of(i, __func__, device));
    RET(NVML_ERROR_NOT_FOUND);
}

static nvmlReturn_t handle_by_bus_id(const char *bus_id, nvmlDevice_t *device, const char *fn) {
    LOCK();
    nvmlReturn_t r = system_enter(fn);
    if (r)
        RET(r);
    if (!bus_id || !device)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int dom, bus, dev, func;
    if (sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &func) != 4)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g_world->ngpus; i++) {
        gpu_t *g = &g_world->gpus[i];
        if (g->has_bus_id && g->domain == dom && g->bus == bus && g->device == dev)
            RET(handle_of(i, fn, device));
    }
    RET(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *b, nvmlDevice_t *d) {
    return handle_by_bus_id(b, d, __func__);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *b, nvmlDevice_t *d) {
    return handle_by_bus_id(b, d, __func__);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEVICE_ENTER(device);
    if (!index)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    *index = (unsigned int)(g - g_world->gpus);
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor) {
    DEVICE_ENTER(device);
    if (!minor)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    *minor = (unsigned int)(g - g_world->gpus);
    RET(NVML_SUCCESS);
}

/* ---- static facts ---- */

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE_ENTER(device);
    RET(g->has_name ? put_str(name, length, g->name) : NVML_ERROR_NOT_SUPPORTED);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE_ENTER(device);
    RET(g->has_uuid ? put_str(uuid, length, g->uuid) : NVML_ERROR_NOT_SUPPORTED);
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    DEVICE_ENTER(device);
    RET(g->has_serial ? put_str(serial, length, g->serial) : NVML_ERROR_NOT_SUPPORTED);
}

static nvmlReturn_t fill_pci(const gpu_t *g, nvmlPciInfo_t *pci, int v3) {
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->has_bus_id)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    pci->domain = g->domain;
    pci->bus = g->bus;
    pci->device = g->device;
    pci->pciDeviceId = (unsigned int)g->pci_device_id.v;
    pci->pciSubSystemId = (unsigned int)g->pci_subsystem_id.v;
    /* the legacy field holds the short form: 0000:01:00.0 */
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.0", g->domain & 0xFFFF,
             g->bus, g->device);
    if (v3)
        snprintf(pci->busId, sizeof pci->busId, "%s", g->bus_id);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_ENTER(device);
    RET(fill_pci(g, pci, 0));
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_ENTER(device);
    RET(fill_pci(g, pci, 0));
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_ENTER(device);
    RET(fill_pci(g, pci, 1));
}

/* ---- readings ---- */

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE_ENTER(device);
    if (!memory)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mem_total.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    /* v1 counts the driver-reserved memory as used, as real drivers >= 510 do */
    unsigned long long used = g->mem_used.v + g->mem_reserved.v;
    memory->total = g->mem_total.v;
    memory->used = used;
    memory->free = used > g->mem_total.v ? 0 : g->mem_total.v - used;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEVICE_ENTER(device);
    if (!memory)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2)
        RET(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (!g->mem_total.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    unsigned long long taken = g->mem_used.v + g->mem_reserved.v;
    memory->total = g->mem_total.v;
    memory->reserved = g->mem_reserved.v;
    memory->used = g->mem_used.v;
    memory->free = taken > g->mem_total.v ? 0 : g->mem_total.v - taken;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    DEVICE_ENTER(device);
    if (!util)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->util_gpu.has && !g->util_mem.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    util->gpu = (unsigned int)g->util_gpu.v;
    util->memory = (unsigned int)g->util_mem.v;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    DEVICE_ENTER(device);
    if (sensor != 0 /* NVML_TEMPERATURE_GPU */)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    RET(put_uint(temp, &g->temp));
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temp) {
    DEVICE_ENTER(device);
    if (!temp)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (temp->version != nvmlTemperature_v1)
        RET(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (temp->sensorType != 0)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->temp.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    temp->temperature = (int)g->temp.v;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEVICE_ENTER(device);
    RET(put_uint(power, &g->power));
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_ENTER(device);
    RET(put_uint(limit, &g->power_limit));
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_ENTER(device);
    RET(put_uint(limit, &g->pm_limit));
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *energy) {
    DEVICE_ENTER(device);
    if (!energy)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->energy.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    *energy = energy_now(g, now_ns(CLOCK_MONOTONIC));
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    DEVICE_ENTER(device);
    if (type < 0 || type > 3)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    RET(put_uint(clock, &g->clock[type]));
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    DEVICE_ENTER(device);
    if (type < 0 || type > 3)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    RET(put_uint(clock, &g->max_clock[type]));
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    DEVICE_ENTER(device);
    RET(put_uint(speed, &g->fan));
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan,
                                             unsigned int *speed) {
    DEVICE_ENTER(device);
    if (g->fan.has && fan != 0)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    RET(put_uint(speed, &g->fan));
}

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t device, unsigned int *num) {
    DEVICE_ENTER(device);
    if (!num)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    *num = g->fan.has ? 1 : 0;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, int *pstate) {
    DEVICE_ENTER(device);
    if (!pstate)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->pstate.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    *pstate = (int)g->pstate.v;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t device, int *pstate) {
    DEVICE_ENTER(device);
    if (!pstate)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->pstate.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    *pstate = (int)g->pstate.v;
    RET(NVML_SUCCESS);
}

static nvmlReturn_t put_reasons(const gpu_t *g, unsigned long long *reasons) {
    if (!reasons)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->reasons.has)
        return NVML_ERROR_NOT_SUPPORTED;
    *reasons = g->reasons.v;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *reasons) {
    DEVICE_ENTER(device);
    RET(put_reasons(g, reasons));
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *reasons) {
    DEVICE_ENTER(device);
    RET(put_reasons(g, reasons));
}

static nvmlReturn_t codec_util(const opt_t *o, unsigned int *util, unsigned int *period) {
    if (!util || !period)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!o->has)
        return NVML_ERROR_NOT_SUPPORTED;
    *util = (unsigned int)o->v;
    *period = 167000; /* microseconds, as drivers report */
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t device, unsigned int *util,
                                                    unsigned int *period) {
    DEVICE_ENTER(device);
    RET(codec_util(&g->enc, util, period));
}

EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t device, unsigned int *util,
                                                    unsigned int *period) {
    DEVICE_ENTER(device);
    RET(codec_util(&g->dec, util, period));
}

/* ---- processes ---- */

/* The two-call size protocol: a too small *count (or no buffer) gets the real
 * count back with INSUFFICIENT_SIZE; no processes is SUCCESS with 0. */
static nvmlReturn_t list_procs(const gpu_t *g, int kind, unsigned int *count, void *infos,
                               int v1) {
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (int i = 0; i < g->nprocs; i++)
        if (g->procs[i].type & kind)
            n++;
    if (*count < n || (n > 0 && !infos)) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (int i = 0; i < g->nprocs; i++) {
        const proc_t *p = &g->procs[i];
        if (!(p->type & kind))
            continue;
        if (v1) {
            nvmlProcessInfo_v1_t *out = (nvmlProcessInfo_v1_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->mem;
        } else {
            nvmlProcessInfo_v2_t *out = (nvmlProcessInfo_v2_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->mem;
            out->gpuInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT; /* not a MIG device */
            out->computeInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
        }
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

#define PROCESS_LIST(fname, kind, v1)                                          \
    EXPORT nvmlReturn_t fname(nvmlDevice_t device, unsigned int *count, void *infos) { \
        DEVICE_ENTER(device);                                                  \
        RET(list_procs(g, kind, count, infos, v1));                            \
    }

PROCESS_LIST(nvmlDeviceGetComputeRunningProcesses, PROC_COMPUTE, 1)
PROCESS_LIST(nvmlDeviceGetComputeRunningProcesses_v2, PROC_COMPUTE, 0)
PROCESS_LIST(nvmlDeviceGetComputeRunningProcesses_v3, PROC_COMPUTE, 0)
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses, PROC_GRAPHICS, 1)
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses_v2, PROC_GRAPHICS, 0)
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses_v3, PROC_GRAPHICS, 0)

/* One sample per process with any per-process utilization in the scenario,
 * stamped "now" (microseconds, wall clock); NOT_FOUND when there is none
 * newer than lastSeenTimeStamp. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *samples,
                                                    unsigned int *count,
                                                    unsigned long long lastSeenTimeStamp) {
    DEVICE_ENTER(device);
    if (!count)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long ts = (unsigned long long)(now_ns(CLOCK_REALTIME) / 1000);
    const proc_t *with[MAX_PROCS];
    unsigned int n = 0;
    if (ts > lastSeenTimeStamp)
        for (int i = 0; i < g->nprocs; i++) {
            const proc_t *p = &g->procs[i];
            if (!(p->sm.has || p->memutil.has || p->enc.has || p->dec.has))
                continue;
            int dup = 0;
            for (unsigned int j = 0; j < n; j++)
                dup |= with[j]->pid == p->pid;
            if (!dup)
                with[n++] = p;
        }
    if (n == 0)
        RET(NVML_ERROR_NOT_FOUND);
    if (!samples || *count < n) {
        *count = n;
        RET(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    for (unsigned int i = 0; i < n; i++) {
        samples[i].pid = with[i]->pid;
        samples[i].timeStamp = ts;
        samples[i].smUtil = (unsigned int)with[i]->sm.v;
        samples[i].memUtil = (unsigned int)with[i]->memutil.v;
        samples[i].encUtil = (unsigned int)with[i]->enc.v;
        samples[i].decUtil = (unsigned int)with[i]->dec.v;
    }
    *count = n;
    RET(NVML_SUCCESS);
}

/* ---- ECC ---- */

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType, int counterType,
                                                unsigned long long *count) {
    DEVICE_ENTER(device);
    if (!count || errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->ecc_uncorrected.has)
        RET(NVML_ERROR_NOT_SUPPORTED);
    *count = errorType == 1 /* NVML_MEMORY_ERROR_TYPE_UNCORRECTED */ ? g->ecc_uncorrected.v : 0;
    RET(NVML_SUCCESS);
}

/* ---- events (Xid critical errors) ---- */

typedef struct {
    unsigned long long mask[MAX_GPUS]; /* event types registered, per GPU index */
    int used;
} event_set_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

static event_set_t g_sets[MAX_EVENT_SETS];

static void reset_event_sets(void) { memset(g_sets, 0, sizeof g_sets); }

static int valid_set(const event_set_t *set) {
    return set >= &g_sets[0] && set < &g_sets[MAX_EVENT_SETS] && set->used;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(event_set_t **set) {
    SYSTEM_ENTER();
    if (!set)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < MAX_EVENT_SETS; i++)
        if (!g_sets[i].used) {
            memset(&g_sets[i], 0, sizeof g_sets[i]);
            g_sets[i].used = 1;
            *set = &g_sets[i];
            RET(NVML_SUCCESS);
        }
    RET(NVML_ERROR_INSUFFICIENT_RESOURCES);
}

EXPORT nvmlReturn_t nvmlEventSetFree(event_set_t *set) {
    LOCK();
    if (!valid_set(set))
        RET(NVML_ERROR_INVALID_ARGUMENT);
    set->used = 0;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *types) {
    DEVICE_ENTER(device);
    if (!types)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    *types = XID_CRITICAL_EVENT;
    RET(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             event_set_t *set) {
    DEVICE_ENTER(device);
    if (!valid_set(set))
        RET(NVML_ERROR_INVALID_ARGUMENT);
    if (types & ~XID_CRITICAL_EVENT)
        RET(NVML_ERROR_NOT_SUPPORTED);
    set->mask[g - g_world->gpus] |= types;
    RET(NVML_SUCCESS);
}

static nvmlReturn_t event_wait(event_set_t *set, nvmlEventData_t *data, int v2, const char *fn) {
    LOCK();
    nvmlReturn_t r = system_enter(fn);
    if (r)
        RET(r);
    if (!valid_set(set) || !data)
        RET(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g_world->ngpus; i++) {
        gpu_t *g = &g_world->gpus[i];
        if (!(set->mask[i] & XID_CRITICAL_EVENT) || g->xids_delivered >= g->nxids)
            continue;
        data->device = &g_handles[i];
        data->eventType = XID_CRITICAL_EVENT;
        data->eventData = g->xids[g->xids_delivered++];
        if (v2) {
            data->gpuInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
            data->computeInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
        }
        RET(NVML_SUCCESS);
    }
    RET(NVML_ERROR_TIMEOUT);
}

EXPORT nvmlReturn_t nvmlEventSetWait(event_set_t *set, nvmlEventData_t *data, unsigned int timeoutms) {
    (void)timeoutms;
    return event_wait(set, data, 0, __func__);
}
EXPORT nvmlReturn_t nvmlEventSetWait_v2(event_set_t *set, nvmlEventData_t *data, unsigned int timeoutms) {
    (void)timeoutms;
    return event_wait(set, data, 1, __func__);
}
