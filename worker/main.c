/*
 * main.c - trellis-worker: flags and environment into a configuration,
 * signals, and the loop. The connection lives in worker.c, the tasks in
 * executor.c.
 *
 * Every flag may also come from the environment (TRELLIS_ plus the flag in
 * capitals, '-' as '_'), which is how the Helm chart sets them; the command
 * line wins. TRELLIS_LABEL takes a comma-separated list of K=V.
 *
 * Logs are buffered and written once per loop turn, just before the loop
 * waits: a busy worker logs two lines per task, and one write(2) per line
 * cost as much as running a no-op task. An abort (a failed TR_ASSERT) and a
 * sanitizer report flush the buffer first, so their context is not lost.
 */
#include <getopt.h>
#include <signal.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include "lib/base/alloc.h"
#include "lib/wire/curve.h"
#include "lib/base/log.h"
#include "worker/lua_llm.h"
#include "worker/worker.h"

#define SLOTS_MAX 100000
#define GPUS_MAX 4096
#define LUA_MEM_MB_MAX (1u << 20)
#define ID_MAX 255 /* ZeroMQ routing ids are at most 255 bytes */

struct options
{
    char *scheduler;     /* comma-separated endpoints */
    char *pool;
    char *id;
    char *labels_raw[TR_PROTO_MAX_LABELS]; /* "K=V" copies, split in place */
    uint32_t n_labels;
    uint32_t slots;
    uint32_t gpus;
    uint32_t lua_mem_mb;
    uint32_t heartbeat_ms;
    int log_level;
    char *providers;     /* trellis.llm providers file, or NULL */
    char *curve_key;     /* this worker's key pair file */
    char *curve_server;  /* the scheduler's public key file */
    char curve_pub[TR_CURVE_KEY_LEN + 1];
    char curve_sec[TR_CURVE_KEY_LEN + 1];
    char curve_srv[TR_CURVE_KEY_LEN + 1];
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: trellis-worker [options]\n"
            "  --scheduler tcp://H:P[,tcp://...]  scheduler endpoints, tried in turn\n"
            "                              (tcp://127.0.0.1:8421)\n"
            "  --pool NAME                 pool this worker serves (cpu; 1-63 of A-Za-z0-9_.-)\n"
            "  --slots N                   tasks run at once (16)\n"
            "  --label K=V                 a label for placement; repeatable\n"
            "  --gpus N                    GPUs offered (0)\n"
            "  --id ID                     worker id (w-<hostname>-<pid>)\n"
            "  --lua-mem-mb N              Lua heap cap per pipeline, 0 = none (1024)\n"
            "  --heartbeat-ms N            heartbeat until the scheduler sets one (1000)\n"
            "  --curve-key FILE            this worker's key pair (trellis keygen)\n"
            "  --curve-server FILE         the scheduler's public key: connect with CURVE\n"
            "  --log-level L               debug, info, warn, error (info)\n"
            "  --providers FILE            LLM providers for trellis.llm (docs/llm.md)\n"
            "Every flag may also come from the environment: TRELLIS_ plus the flag in\n"
            "capitals with '-' as '_' (TRELLIS_SCHEDULER, TRELLIS_SLOTS); TRELLIS_LABEL\n"
            "takes K=V[,K=V...].\n");
}

static bool parse_uint(const char *s, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || *s == '-' || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool set_str(char **field, const char *v)
{
    char *c = tr_strdup(v);
    if (c == NULL)
        return false;
    tr_free(*field);
    *field = c;
    return true;
}

static bool add_label(struct options *o, const char *kv, size_t len)
{
    const char *eq = memchr(kv, '=', len);
    if (eq == NULL || eq == kv || o->n_labels == TR_PROTO_MAX_LABELS)
        return false;
    char *c = tr_strndup(kv, len);
    if (c == NULL)
        return false;
    o->labels_raw[o->n_labels++] = c;
    return true;
}

/* A comma-separated list of K=V (the environment's form; one item from the command line). */
static bool add_labels(struct options *o, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0 && !add_label(o, p, len))
            return false;
        p += len + (comma ? 1 : 0);
    }
    return true;
}

static const struct option long_opts[] = {
    {"scheduler", required_argument, NULL, 's'},
    {"pool", required_argument, NULL, 'p'},
    {"slots", required_argument, NULL, 'n'},
    {"label", required_argument, NULL, 'l'},
    {"gpus", required_argument, NULL, 'g'},
    {"id", required_argument, NULL, 'i'},
    {"lua-mem-mb", required_argument, NULL, 'm'},
    {"heartbeat-ms", required_argument, NULL, 'H'},
    {"curve-key", required_argument, NULL, 'k'},
    {"curve-server", required_argument, NULL, 'K'},
    {"log-level", required_argument, NULL, 'L'},
    {"providers", required_argument, NULL, 'P'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool apply_opt(struct options *o, int c, const char *v)
{
    switch (c) {
    case 's':
        return *v && set_str(&o->scheduler, v);
    case 'p':
        /* The scheduler refuses other pool names (they become metric labels). */
        return *v && strlen(v) <= 63 &&
               strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
                   strlen(v) &&
               set_str(&o->pool, v);
    case 'n':
        return parse_uint(v, SLOTS_MAX, &o->slots) && o->slots > 0;
    case 'l':
        return add_label(o, v, strlen(v));
    case 'g':
        return parse_uint(v, GPUS_MAX, &o->gpus);
    case 'i':
        return *v && strlen(v) <= ID_MAX && set_str(&o->id, v);
    case 'm':
        return parse_uint(v, LUA_MEM_MB_MAX, &o->lua_mem_mb);
    case 'H':
        return parse_uint(v, 600000, &o->heartbeat_ms) && o->heartbeat_ms >= 10;
    case 'k':
        return *v && set_str(&o->curve_key, v);
    case 'K':
        return *v && set_str(&o->curve_server, v);
    case 'L':
        o->log_level = tr_log_level_parse(v);
        return o->log_level >= 0;
    case 'P':
        return *v && set_str(&o->providers, v);
    }
    return false;
}

static const char *opt_name(int c)
{
    for (const struct option *o = long_opts; o->name; o++) {
        if (o->val == c)
            return o->name;
    }
    return "?";
}

/* TRELLIS_<FLAG> for every flag, applied before the command line overrides them. */
static bool apply_env(struct options *o)
{
    for (const struct option *lo = long_opts; lo->name; lo++) {
        if (lo->has_arg != required_argument)
            continue;
        char name[64] = "TRELLIS_";
        size_t n = strlen(name);
        for (const char *p = lo->name; *p && n + 1 < sizeof(name); p++)
            name[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        name[n] = '\0';
        const char *v = getenv(name);
        if (v == NULL || *v == '\0')
            continue;
        bool ok = lo->val == 'l' ? add_labels(o, v) : apply_opt(o, lo->val, v);
        if (!ok) {
            fprintf(stderr, "trellis-worker: bad value for %s: '%s'\n", name, v);
            return false;
        }
    }
    return true;
}

static void options_free(struct options *o)
{
    explicit_bzero(o->curve_sec, sizeof(o->curve_sec));
    tr_free(o->curve_key);
    tr_free(o->curve_server);
    tr_free(o->providers);
    tr_free(o->scheduler);
    tr_free(o->pool);
    tr_free(o->id);
    for (uint32_t i = 0; i < o->n_labels; i++)
        tr_free(o->labels_raw[i]);
}

/* Splits the endpoints and labels in place into cfg, whose strings point into o. */
static bool build_config(struct options *o, struct tr_worker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    char *p = o->scheduler;
    while (p != NULL && *p) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p) {
            if (cfg->n_endpoints == TR_WORKER_MAX_ENDPOINTS || strstr(p, "://") == NULL) {
                fprintf(stderr, "trellis-worker: bad scheduler endpoint '%s' (at most %d, "
                        "each like tcp://HOST:PORT)\n", p, TR_WORKER_MAX_ENDPOINTS);
                return false;
            }
            cfg->endpoints[cfg->n_endpoints++] = p;
        }
        p = comma ? comma + 1 : NULL;
    }
    if (cfg->n_endpoints == 0) {
        fprintf(stderr, "trellis-worker: no scheduler endpoint\n");
        return false;
    }
    for (uint32_t i = 0; i < o->n_labels; i++) {
        char *eq = strchr(o->labels_raw[i], '=');
        *eq = '\0';
        cfg->labels[i].key = tr_str_c(o->labels_raw[i]);
        cfg->labels[i].value = tr_str_c(eq + 1);
    }
    cfg->n_labels = o->n_labels;
    cfg->id = o->id;
    cfg->pool = o->pool;
    cfg->slots = o->slots;
    cfg->gpus = o->gpus;
    cfg->lua_mem_max = (size_t)o->lua_mem_mb << 20;
    cfg->heartbeat_ms = o->heartbeat_ms;
    if ((o->curve_key == NULL) != (o->curve_server == NULL)) {
        fprintf(stderr, "trellis-worker: --curve-key and --curve-server go together\n");
        return false;
    }
    if (o->curve_key != NULL) {
        struct tr_error err;
        tr_error_init(&err);
        if (tr_curve_load_pair(o->curve_key, o->curve_pub, o->curve_sec, &err) < 0 ||
            tr_curve_load_public(o->curve_server, o->curve_srv, &err) < 0) {
            fprintf(stderr, "trellis-worker: %s\n", err.msg);
            return false;
        }
        cfg->curve_server = o->curve_srv;
        cfg->curve_public = o->curve_pub;
        cfg->curve_secret = o->curve_sec;
    }
    return true;
}

/* ====================================================================== */
/* Signals and the loop                                                   */
/* ====================================================================== */

#define LOG_BUFFER (64u << 10)

static char log_buffer[LOG_BUFFER];

static void flush_logs(void)
{
    fflush(stderr);
}

/* A failed assertion printed its reason into the buffer: write it out first. */
static void on_abort(int signum)
{
    flush_logs();
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
}

static void buffer_logs(void)
{
    setvbuf(stderr, log_buffer, _IOFBF, sizeof(log_buffer));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_abort;
    sigaction(SIGABRT, &sa, NULL);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(flush_logs);
#endif
}

struct app
{
    uv_prepare_t flush;  /* writes the turn's log lines before the loop waits */
    struct tr_worker *worker;
    uv_signal_t sigint;
    uv_signal_t sigterm;
};

static void on_prepare(uv_prepare_t *h)
{
    flush_logs();
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    tr_info("stopping on %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    tr_worker_close(a->worker, "worker stopping");
    a->worker = NULL;
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->flush, NULL);
}

static int run(struct tr_worker_config *cfg)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        tr_err("cannot start: no event loop");
        return 1;
    }
    struct app a = {0};
    struct tr_error err;
    tr_error_init(&err);
    int rc = 0;
    a.worker = tr_worker_new(&loop, cfg, &err);
    if (a.worker == NULL || tr_worker_start(a.worker, &err) < 0) {
        tr_err("cannot start worker=%s: %s", cfg->id, err.msg);
        tr_worker_close(a.worker, "worker failed to start");
        rc = 1;
    } else {
        uv_prepare_init(&loop, &a.flush);
        uv_prepare_start(&a.flush, on_prepare);
        uv_signal_init(&loop, &a.sigint);
        uv_signal_init(&loop, &a.sigterm);
        a.sigint.data = a.sigterm.data = &a;
        uv_signal_start(&a.sigint, on_signal, SIGINT);
        uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        tr_err("loop closed with handles still open");
        rc = 1;
    }
    tr_info("stopped worker=%s", cfg->id);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.slots = 16, .lua_mem_mb = 1024, .log_level = TR_LOG_INFO};
    int rc = 2;
    if (!set_str(&o.scheduler, "tcp://127.0.0.1:8421") || !set_str(&o.pool, "cpu") ||
        !apply_env(&o))
        goto out;
    int c;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (c == '?' || !apply_opt(&o, c, optarg)) {
            if (c != '?')
                fprintf(stderr, "trellis-worker: bad value for --%s: '%s'\n", opt_name(c),
                        optarg);
            usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "trellis-worker: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        goto out;
    }
    if (o.id == NULL) {
        char host[256] = "host";
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "host");
        host[sizeof(host) - 1] = '\0';
        char id[ID_MAX + 1];
        snprintf(id, sizeof(id), "w-%.200s-%ld", host, (long)getpid());
        if (!set_str(&o.id, id))
            goto out;
    }
    struct tr_worker_config cfg;
    if (!build_config(&o, &cfg))
        goto out;
    if (o.providers != NULL) {
        struct tr_error perr;
        tr_error_init(&perr);
        if (tr_llm_providers_load(o.providers, &perr) < 0) {
            fprintf(stderr, "trellis-worker: %s\n", perr.msg);
            goto out;
        }
    }
    tr_log_init("worker", (enum tr_log_level)o.log_level);
    buffer_logs();
    signal(SIGPIPE, SIG_IGN);
    rc = run(&cfg);
out:
    tr_llm_providers_free();
    options_free(&o);
    return rc;
}
