/*
 * trellis_bench.c - trellis-bench: Trellis on the peers' workloads.
 *
 * Starts its own cluster (one trellis-scheduler with sqlite state in a
 * temporary directory, 2 x trellis-worker --slots 1, free ports on
 * 127.0.0.1), warms it up, and measures, in this order per repeat:
 *
 *   L (load)  tr_pipeline_load of a 100,000-task pipeline in this process,
 *             before any cluster runs, so that nothing else competes
 *   cluster A W1 (throughput), W2 (latency), W3 (DAG), L (the same file
 *             through POST /v1/pipelines)
 *   cluster B W4 (scheduler memory per pending task), on a fresh scheduler:
 *             as Dask's W4 runs its own scheduler, the RSS baseline holds no
 *             heap left over (and reusable) from W1-W3
 *
 * and prints one line per workload in the peers' format ("trellis W1 n=...
 * key=value ..."), then, with --repeat R, the median and range of each value
 * over the repeats as '#' lines; --json prints one JSON document instead.
 * Everything it starts it stops, by PID; a watchdog bounds each repeat.
 */
#include <stddef.h>
#include <math.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lua.h>
#include <sqlite3.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"
#include "lib/base/flags.h"

#ifndef TR_BENCH_BUILD_TYPE
#define TR_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef TR_BENCH_SOURCE_DIR
#define TR_BENCH_SOURCE_DIR "."
#endif
#ifndef TR_BENCH_SANITIZE
#define TR_BENCH_SANITIZE 0
#endif

static const char *const wl_names[TR_BENCH_N_WL] = {"W1", "W2", "W3", "W4", "L", "H",
                                                           "F"};

/* ===================== results ===================== */

void tr_bench_field_add(struct tr_bench_result *r, const char *key, double v, int prec)
{
    if (r->n_fields >= TR_BENCH_MAX_FIELDS)
        return;
    r->f[r->n_fields].key = key;
    r->f[r->n_fields].v = v;
    r->f[r->n_fields].prec = prec;
    r->n_fields++;
}

void tr_bench_fail(struct tr_bench_result *r, const struct tr_error *err)
{
    if (r->ok || r->error[0] == '\0')
        snprintf(r->error, sizeof(r->error), "%s",
                 err->msg[0] ? err->msg : tr_strerror(err->code));
    r->ok = false;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double tr_bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* "trellis W1 n=10000 wall_s=..." into out (always NUL-terminated). */
static void format_line(const struct tr_bench_result *r, enum tr_bench_wl wl, char *out,
                        size_t size)
{
    size_t used = (size_t)snprintf(out, size, "trellis %s", wl_names[wl]);
    for (int i = 0; i < r->n_fields && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, " %s=%.*f", r->f[i].key,
                                 r->f[i].prec, r->f[i].v);
}

/* ===================== options ===================== */

static bool parse_only(const char *list, bool only[TR_BENCH_N_WL])
{
    memset(only, 0, sizeof(bool) * TR_BENCH_N_WL);
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        bool found = false;
        for (int i = 0; i < TR_BENCH_N_WL; i++) {
            if (len == strlen(wl_names[i]) && strncasecmp(p, wl_names[i], len) == 0) {
                only[i] = true;
                found = true;
            }
        }
        if (!found && len > 0)
            return false;
        p += len;
        if (*p == ',')
            p++;
    }
    return true;
}

/* The first of the candidates that is executable, as a new string; NULL if none. */
static char *find_bin(const char *dir, const char *sub, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (access(path, X_OK) == 0)
        return tr_strdup(path);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    if (access(path, X_OK) == 0)
        return tr_strdup(path);
    return NULL;
}

/*
 * Fills o->scheduler_bin and o->worker_bin (unless given) from --bin-dir, or
 * from where this program is: build/bench/trellis-bench has its daemons in
 * build/scheduler and build/worker.
 */
static int resolve_bins(struct tr_bench_opts *o, const char *bin_dir)
{
    char dir[4096];
    if (bin_dir != NULL) {
        snprintf(dir, sizeof(dir), "%s", bin_dir);
    } else {
        ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
        if (n <= 0) {
            fprintf(stderr, "trellis-bench: cannot tell where I am; use --bin-dir\n");
            return TR_ENOENT;
        }
        dir[n] = '\0';
        char *slash = strrchr(dir, '/');
        if (slash != NULL)
            *slash = '\0';
        /* Beside this program first, then in the build tree above it. */
        if (o->scheduler_bin == NULL)
            o->scheduler_bin = find_bin(dir, ".", "trellis-scheduler");
        if (o->worker_bin == NULL)
            o->worker_bin = find_bin(dir, ".", "trellis-worker");
        slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir)
            *slash = '\0';
    }
    if (o->scheduler_bin == NULL)
        o->scheduler_bin = find_bin(dir, "scheduler", "trellis-scheduler");
    if (o->worker_bin == NULL)
        o->worker_bin = find_bin(dir, "worker", "trellis-worker");
    if (o->scheduler_bin == NULL || o->worker_bin == NULL) {
        const char *what = o->scheduler_bin == NULL ? "scheduler" : "worker";
        fprintf(stderr, "trellis-bench: cannot find trellis-%s in '%s' or '%s/%s'; "
                "use --bin-dir\n", what, dir, dir, what);
        return TR_ENOENT;
    }
    return 0;
}

static const char *check_only(const char *v)
{
    bool only[TR_BENCH_N_WL];
    return parse_only(v, only) ? NULL : "not a comma list of W1,W2,W3,W4,L,H,F";
}

/* Values with no field of their own in struct tr_bench_opts. */
static char *opt_bin_dir;
static char *opt_only;

#define BO(field) .off = offsetof(struct tr_bench_opts, field)
#define NUM(nm, field, lo, def, text)                                                      \
    {nm, 0, TR_FLAG_UINT, BO(field), .dflt = def, .arg = "N", .min = lo, .max = UINT32_MAX,  \
     .help = text}

static const struct tr_flag bench_flags[] = {
    {"bin-dir", 0, TR_FLAG_STR, .var = &opt_bin_dir, .arg = "DIR",
     .help = "the daemons' folder (DIR or DIR/scheduler, DIR/worker; default: here)"},
    {"scheduler", 0, TR_FLAG_STR, BO(scheduler_bin), .arg = "PATH",
     .help = "trellis-scheduler to run"},
    {"worker", 0, TR_FLAG_STR, BO(worker_bin), .arg = "PATH", .help = "trellis-worker to run"},
    NUM("w1", n[TR_BENCH_W1], 1, "10000", "W1: independent no-op tasks in one run"),
    NUM("w2", n[TR_BENCH_W2], 1, "1000", "W2: measured round trips, after --w2-discard"),
    NUM("w2-discard", w2_discard, 0, "50", "W2: round trips run first and discarded"),
    NUM("w3", n[TR_BENCH_W3], 1, "5000", "W3: map width of root -> map -> reduce"),
    NUM("w4", n[TR_BENCH_W4], 1, "100000", "W4: pending tasks behind a blocked root"),
    NUM("l", n[TR_BENCH_L], 1, "100000", "L: tasks of the pipeline read"),
    NUM("h", n[TR_BENCH_HTTP], 1, "2000", "H: tasks, each one HTTP call to a slow local server"),
    NUM("h-slots", h_slots, 1, "1000", "H: slots of its one worker"),
    NUM("h-latency-ms", h_latency_ms, 0, "200", "H: how long the server takes to answer"),
    NUM("f", n[TR_BENCH_FEEDBACK], 1, "20000", "F: POST /v1/feedback calls"),
    NUM("f-clients", f_clients, 1, "64", "F: concurrent keep-alive clients"),
    {"h-server", 0, TR_FLAG_STR, BO(h_server), .dflt = TR_BENCH_SOURCE_DIR "/bench/slow_server.py",
     .arg = "PATH", .help = "H: the server (or tests/llm/fake_llm.py), run by $PYTHON or "
                            "/usr/bin/python3"},
    NUM("warmup", warmup, 1, "200", "no-op tasks of the warm-up run"),
    NUM("l-loads", l_loads, 1, "5", "in-process loads for L, median taken"),
    NUM("l-posts", l_posts, 1, "3", "POST /v1/pipelines for L, median taken"),
    NUM("workers", workers, 1, "2", "worker processes"),
    NUM("slots", slots, 1, "1", "slots per worker"),
    {"only", 0, TR_FLAG_STR, .var = &opt_only, .dflt = "W1,W2,W3,W4,L,H,F", .arg = "LIST",
     .check = check_only, .help = "comma list of the workloads to run"},
    NUM("repeat", repeat, 1, "1", "runs of the whole set; medians and ranges reported"),
    NUM("deadline", deadline_s, 1, "300", "bound on one workload's wait, seconds"),
    NUM("watchdog", watchdog_s, 1, "1800", "bound on one repeat, seconds; then all is stopped"),
    {"json", 0, TR_FLAG_BOOL, BO(json), .help = "print one JSON document instead of result lines"},
    {"keep", 0, TR_FLAG_BOOL, BO(keep),
     .help = "keep each cluster's temporary directory (state, logs)"},
};

static void usage(const struct tr_flags *f, FILE *out)
{
    fprintf(out,
            "usage: trellis-bench [options]\n"
            "Measures Trellis on the peers' workloads (bench/peers WORKLOADS.md) on a cluster\n"
            "it starts itself: trellis-scheduler + 2 x trellis-worker --slots 1 on 127.0.0.1.\n"
            "\n");
    tr_flags_help(f, out);
    fprintf(out, "Every flag is also a variable, TRELLIS_BENCH_ plus its name in capitals with\n"
                 "'-' as '_' (not TRELLIS_: the daemons' variables of the same names mean other\n"
                 "things); the command line wins.\n");
}

/* 0, 1 (--help: exit 0) or a negative error (a usage error has been printed). */
static int parse_args(const struct tr_flags *flags, int argc, char **argv,
                      struct tr_bench_opts *o)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_flags_parse(flags, argc, argv, NULL, &err);
    if (rc == TR_FLAGS_HELP) {
        usage(flags, stdout);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "trellis-bench: %s\n", err.msg);
        return rc;
    }
    if (!parse_only(opt_only, o->only))
        return TR_EINVAL; /* checked when stored */
    if (o->workers > TR_BENCH_MAX_WORKERS) {
        fprintf(stderr, "trellis-bench: at most %d workers\n", TR_BENCH_MAX_WORKERS);
        return TR_EINVAL;
    }
    return resolve_bins(o, opt_bin_dir);
}

/* ===================== one repeat ===================== */

static bool wants(const struct tr_bench_opts *o, enum tr_bench_wl a, enum tr_bench_wl b)
{
    return o->only[a] || o->only[b];
}

/*
 * Marks the wanted workloads of wls failed with err, because their cluster
 * could not be used (L keeps an earlier failure of its own).
 */
static void fail_rest(const struct tr_bench_opts *o, struct tr_bench_result *res,
                      const enum tr_bench_wl *wls, size_t n, const struct tr_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!o->only[wls[i]])
            continue;
        res[wls[i]].ran = true;
        tr_bench_fail(&res[wls[i]], err);
    }
}

static void log_result(const struct tr_bench_result *r, enum tr_bench_wl wl)
{
    char line[1024];
    if (r->ok) {
        format_line(r, wl, line, sizeof(line));
        tr_bench_log("%s", line);
    } else {
        tr_bench_log("%s failed: %s", wl_names[wl], r->error);
    }
}

/*
 * Runs one workload on c, then lets the scheduler go idle. Returns false when
 * a process of the cluster has died; *gone then says which, and r says so too.
 */
static bool run_one(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                    struct tr_bench_result *r, enum tr_bench_wl wl, struct tr_error *gone)
{
    r->ran = true;
    r->ok = true;
    if (tr_bench_cluster_check(c, gone) < 0) {
        tr_bench_fail(r, gone);
        return false;
    }
    tr_bench_log("%s: starting", wl_names[wl]);
    static void (*const measure[])(struct tr_bench_cluster *, const struct tr_bench_opts *,
                                   struct tr_bench_result *) = {
        [TR_BENCH_W1] = tr_bench_w1,
        [TR_BENCH_W2] = tr_bench_w2,
        [TR_BENCH_W3] = tr_bench_w3,
        [TR_BENCH_W4] = tr_bench_w4,
    };
    measure[wl](c, o, r);
    if (tr_bench_cluster_check(c, gone) < 0) {
        /* The death explains the failure better than the failed call does. */
        char during[TR_ERROR_MSG_MAX];
        snprintf(during, sizeof(during), "%s", r->ok ? "" : r->error);
        snprintf(r->error, sizeof(r->error), "%.500s%s%.400s%s", gone->msg,
                 during[0] ? " (while: " : "", during, during[0] ? ")" : "");
        r->ok = false;
        log_result(r, wl);
        return false;
    }
    log_result(r, wl);
    struct tr_error err;
    tr_error_init(&err);
    if (tr_bench_wait_idle(c->http, 60.0, &err) < 0)
        tr_bench_log("after %s: %s", wl_names[wl], err.msg);
    return true;
}

/* Cluster A: W1, W2, W3 and L through the API. */
static void run_cluster_a(const struct tr_bench_opts *o, struct tr_bench_result *res)
{
    static const enum tr_bench_wl wls[] = {TR_BENCH_W1, TR_BENCH_W2, TR_BENCH_W3, TR_BENCH_L};
    struct tr_bench_cluster c;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_bench_cluster_start(&c, o, "a", &err) < 0 || tr_bench_warmup(&c, o, &err) < 0) {
        tr_bench_log("cannot run W1-W3: %s", err.msg);
        fail_rest(o, res, wls, TR_ARRAY_LEN(wls), &err);
        tr_bench_cluster_stop(&c, true);
        return;
    }
    bool failed = false;
    size_t i = 0;
    for (; i < TR_ARRAY_LEN(wls) - 1; i++) {
        if (!o->only[wls[i]])
            continue;
        bool alive = run_one(&c, o, &res[wls[i]], wls[i], &err);
        failed |= !res[wls[i]].ok;
        if (!alive) {
            tr_bench_log("the cluster is gone: %s", err.msg);
            fail_rest(o, res, wls + i + 1, TR_ARRAY_LEN(wls) - i - 1, &err);
            tr_bench_cluster_stop(&c, true);
            return;
        }
    }
    if (o->only[TR_BENCH_L]) {
        struct tr_bench_result *r = &res[TR_BENCH_L];
        tr_bench_log("L: POST /v1/pipelines of %u tasks, x%u", o->n[TR_BENCH_L] + 1,
                     o->l_posts);
        if (tr_bench_cluster_check(&c, &err) < 0)
            tr_bench_fail(r, &err);
        else
            tr_bench_l_api(&c, o, r);
        failed |= !r->ok;
    }
    tr_bench_cluster_stop(&c, o->keep || failed);
}

/* Cluster B: W4 on a scheduler of its own. */
static void run_cluster_b(const struct tr_bench_opts *o, struct tr_bench_result *res)
{
    static const enum tr_bench_wl wls[] = {TR_BENCH_W4};
    struct tr_bench_cluster c;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_bench_cluster_start(&c, o, "w4", &err) < 0 || tr_bench_warmup(&c, o, &err) < 0) {
        tr_bench_log("cannot run W4: %s", err.msg);
        fail_rest(o, res, wls, TR_ARRAY_LEN(wls), &err);
        tr_bench_cluster_stop(&c, true);
        return;
    }
    run_one(&c, o, &res[TR_BENCH_W4], TR_BENCH_W4, &err);
    tr_bench_cluster_stop(&c, o->keep || !res[TR_BENCH_W4].ok);
}

static void run_repeat(const struct tr_bench_opts *o, struct tr_bench_result *res)
{
    tr_bench_watchdog(o->watchdog_s);
    if (o->only[TR_BENCH_L]) {
        struct tr_bench_result *r = &res[TR_BENCH_L];
        r->ran = true;
        r->ok = true;
        tr_bench_field_add(r, "n", o->n[TR_BENCH_L], 0);
        tr_bench_field_add(r, "tasks", (double)o->n[TR_BENCH_L] + 1, 0);
        tr_bench_log("L: tr_pipeline_load of %u tasks, x%u", o->n[TR_BENCH_L] + 1,
                     o->l_loads);
        tr_bench_l_load(o, r);
    }
    if (wants(o, TR_BENCH_W1, TR_BENCH_W2) || wants(o, TR_BENCH_W3, TR_BENCH_L))
        run_cluster_a(o, res);
    if (o->only[TR_BENCH_L])
        log_result(&res[TR_BENCH_L], TR_BENCH_L);
    if (o->only[TR_BENCH_W4])
        run_cluster_b(o, res);
    if (o->only[TR_BENCH_HTTP]) {
        tr_bench_run_h(o, &res[TR_BENCH_HTTP]);
        log_result(&res[TR_BENCH_HTTP], TR_BENCH_HTTP);
    }
    if (o->only[TR_BENCH_FEEDBACK]) {
        tr_bench_run_f(o, &res[TR_BENCH_FEEDBACK]);
        log_result(&res[TR_BENCH_FEEDBACK], TR_BENCH_FEEDBACK);
    }
    tr_bench_watchdog(0);
}

/* ===================== output ===================== */

static void print_meta(const struct tr_bench_opts *o, FILE *f, json_t *meta)
{
    char date[40] = "";
    time_t t = time(NULL);
    struct tm tm;
    if (localtime_r(&t, &tm) != NULL)
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S%z", &tm);
    char cpu[128] = "?";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (ci != NULL && fgets(line, sizeof(line), ci) != NULL) {
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') != NULL) {
            const char *p = strchr(line, ':') + 1;
            p += strspn(p, " \t");
            size_t k = 0;
            for (; *p && *p != '\n' && k + 1 < sizeof(cpu); p++)
                cpu[k++] = *p == ' ' ? '_' : *p;
            cpu[k] = '\0';
            break;
        }
    }
    if (ci != NULL)
        fclose(ci);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double mem = (double)sysconf(_SC_PAGE_SIZE) * (double)sysconf(_SC_PHYS_PAGES) / 1073741824.0;
    const char *curl_v = curl_version_info(CURLVERSION_NOW)->version;
    if (f != NULL)
        fprintf(f,
                "# trellis date=%s cores=%ld cpu=%s mem_gib=%.0f build=%s sanitize=%d "
                "lua=%s sqlite=%s curl=%s jansson=%s workers=%u slots=%u repeat=%u "
                "scheduler=%s worker=%s\n",
                date, cores, cpu, mem, TR_BENCH_BUILD_TYPE, TR_BENCH_SANITIZE,
                LUA_VERSION_MAJOR "." LUA_VERSION_MINOR "." LUA_VERSION_RELEASE,
                sqlite3_libversion(), curl_v, JANSSON_VERSION, o->workers, o->slots, o->repeat,
                o->scheduler_bin, o->worker_bin);
    if (meta != NULL) {
        json_object_set_new(meta, "date", json_string(date));
        json_object_set_new(meta, "cores", json_integer(cores));
        json_object_set_new(meta, "cpu", json_string(cpu));
        json_object_set_new(meta, "mem_gib", json_integer((json_int_t)llround(mem)));
        json_object_set_new(meta, "build", json_string(TR_BENCH_BUILD_TYPE));
        json_object_set_new(meta, "sanitize", json_boolean(TR_BENCH_SANITIZE));
        json_object_set_new(meta, "sqlite", json_string(sqlite3_libversion()));
        json_object_set_new(meta, "curl", json_string(curl_v));
        json_object_set_new(meta, "workers", json_integer(o->workers));
        json_object_set_new(meta, "slots", json_integer(o->slots));
        json_object_set_new(meta, "repeat", json_integer(o->repeat));
        json_object_set_new(meta, "scheduler", json_string(o->scheduler_bin));
        json_object_set_new(meta, "worker", json_string(o->worker_bin));
    }
}

static void print_repeat_lines(const struct tr_bench_result *res)
{
    char line[1024];
    for (int wl = 0; wl < TR_BENCH_N_WL; wl++) {
        const struct tr_bench_result *r = &res[wl];
        if (!r->ran)
            continue;
        if (r->ok) {
            format_line(r, (enum tr_bench_wl)wl, line, sizeof(line));
            printf("%s\n", line);
        } else {
            printf("# error system=trellis workload=%s message=\"%s\"\n", wl_names[wl], r->error);
        }
    }
    fflush(stdout);
}

/*
 * Median, min and max of field key of wl over the repeats that measured it;
 * false when none did.
 */
static bool summarize(const struct tr_bench_result *all, uint32_t repeats, int wl,
                      const char *key, double *med, double *min, double *max, uint32_t *count)
{
    double *v = tr_calloc(repeats, sizeof(*v));
    if (v == NULL)
        return false;
    uint32_t n = 0;
    for (uint32_t rep = 0; rep < repeats; rep++) {
        const struct tr_bench_result *r = &all[rep * TR_BENCH_N_WL + wl];
        for (int i = 0; r->ok && i < r->n_fields; i++) {
            if (strcmp(r->f[i].key, key) == 0)
                v[n++] = r->f[i].v;
        }
    }
    if (n > 0) {
        *med = tr_bench_median(v, n);
        *min = v[0];
        *max = v[n - 1];
    }
    *count = n;
    tr_free(v);
    return n > 0;
}

/* The first repeat in which wl was measured, whose fields name the keys; NULL if none. */
static const struct tr_bench_result *template_of(const struct tr_bench_result *all,
                                                 uint32_t repeats, int wl)
{
    for (uint32_t rep = 0; rep < repeats; rep++) {
        if (all[rep * TR_BENCH_N_WL + wl].ok)
            return &all[rep * TR_BENCH_N_WL + wl];
    }
    return NULL;
}

static void print_summary_lines(const struct tr_bench_result *all, uint32_t repeats)
{
    for (int wl = 0; wl < TR_BENCH_N_WL; wl++) {
        const struct tr_bench_result *tpl = template_of(all, repeats, wl);
        if (tpl == NULL)
            continue;
        struct tr_buf b;
        tr_buf_init(&b, 0);
        int rc = 0;
        for (int i = 0; i < tpl->n_fields && rc == 0; i++) {
            double med, min, max;
            uint32_t n;
            if (!summarize(all, repeats, wl, tpl->f[i].key, &med, &min, &max, &n))
                continue;
            if (i == 0)
                rc = tr_buf_addf(&b, "# median trellis %s of=%u", wl_names[wl], n);
            int p = tpl->f[i].prec;
            if (rc == 0)
                rc = tr_buf_addf(&b, " %s=%.*f[%.*f..%.*f]", tpl->f[i].key, p, med, p, min, p,
                                 max);
        }
        if (rc == 0 && b.len > 0)
            printf("%s\n", b.buf);
        tr_buf_release(&b);
    }
    fflush(stdout);
}

/* Counts and bytes as JSON integers, the rest as reals. */
static json_t *number_json(double v, int prec)
{
    return prec == 0 ? json_integer((json_int_t)llround(v)) : json_real(v);
}

static json_t *result_json(const struct tr_bench_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(r->ok));
    if (!r->ok)
        json_object_set_new(o, "error", json_string(r->error));
    for (int i = 0; r->ok && i < r->n_fields; i++)
        json_object_set_new(o, r->f[i].key, number_json(r->f[i].v, r->f[i].prec));
    return o;
}

static void print_json(const struct tr_bench_opts *o, const struct tr_bench_result *all)
{
    json_t *doc = json_object();
    json_t *meta = json_object();
    print_meta(o, NULL, meta);
    json_object_set_new(doc, "system", json_string("trellis"));
    json_object_set_new(doc, "meta", meta);
    json_t *runs = json_array();
    for (uint32_t rep = 0; rep < o->repeat; rep++) {
        json_t *one = json_object();
        for (int wl = 0; wl < TR_BENCH_N_WL; wl++) {
            if (all[rep * TR_BENCH_N_WL + wl].ran)
                json_object_set_new(one, wl_names[wl], result_json(&all[rep * TR_BENCH_N_WL + wl]));
        }
        json_array_append_new(runs, one);
    }
    json_object_set_new(doc, "runs", runs);
    json_t *sum = json_object();
    for (int wl = 0; wl < TR_BENCH_N_WL; wl++) {
        const struct tr_bench_result *tpl = template_of(all, o->repeat, wl);
        if (tpl == NULL)
            continue;
        json_t *w = json_object();
        for (int i = 0; i < tpl->n_fields; i++) {
            double med, min, max;
            uint32_t n;
            if (!summarize(all, o->repeat, wl, tpl->f[i].key, &med, &min, &max, &n))
                continue;
            json_object_set_new(w, "measured", json_integer(n));
            int p = tpl->f[i].prec;
            json_object_set_new(w, tpl->f[i].key,
                                json_pack("{s:o, s:o, s:o}", "median", number_json(med, p),
                                          "min", number_json(min, p), "max", number_json(max, p)));
        }
        json_object_set_new(sum, wl_names[wl], w);
    }
    json_object_set_new(doc, "summary", sum);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(doc);
    fflush(stdout);
}

/* ===================== main ===================== */

int main(int argc, char **argv)
{
    struct tr_bench_opts o = {0};
    struct tr_flags flags = {
        .prog = "trellis-bench",
        .sets = {{bench_flags, TR_ARRAY_LEN(bench_flags), &o, "TRELLIS_BENCH_", NULL}},
    };
    int rc = parse_args(&flags, argc, argv, &o);
    tr_free(opt_only);
    tr_free(opt_bin_dir);
    opt_only = opt_bin_dir = NULL;
    if (rc != 0) {
        tr_flags_release(&flags);
        return rc > 0 ? 0 : 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "trellis-bench: cannot initialise libcurl\n");
        return 2;
    }
    tr_bench_signals_init();
    if (strcmp(TR_BENCH_BUILD_TYPE, "Release") != 0 || TR_BENCH_SANITIZE)
        tr_bench_log("warning: built as '%s'%s: figures are not representative "
                     "(bench/run.sh builds Release)", TR_BENCH_BUILD_TYPE,
                     TR_BENCH_SANITIZE ? " with sanitizers" : "");

    struct tr_bench_result *all = tr_calloc((size_t)o.repeat * TR_BENCH_N_WL, sizeof(*all));
    if (all == NULL) {
        fprintf(stderr, "trellis-bench: out of memory\n");
        return 2;
    }
    if (!o.json)
        print_meta(&o, stdout, NULL);
    fflush(stdout);
    for (uint32_t rep = 0; rep < o.repeat; rep++) {
        tr_bench_log("repeat %u of %u", rep + 1, o.repeat);
        run_repeat(&o, &all[rep * TR_BENCH_N_WL]);
        if (!o.json)
            print_repeat_lines(&all[rep * TR_BENCH_N_WL]);
    }
    if (o.json)
        print_json(&o, all);
    else if (o.repeat > 1)
        print_summary_lines(all, o.repeat);

    int status = 0;
    for (uint32_t i = 0; i < o.repeat * TR_BENCH_N_WL; i++) {
        if (all[i].ran && !all[i].ok)
            status = 1;
    }
    tr_free(all);
    tr_flags_release(&flags);
    curl_global_cleanup();
    return status;
}
