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
#include <signal.h>
#include <stddef.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include "lib/base/alloc.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/wire/curve.h"
#include "worker/lua_llm.h"
#include "worker/traces.h"
#include "worker/secrets.h"
#include "worker/lua_rag.h"
#include "worker/pg_index.h"
#include "worker/worker.h"
#include "lib/http/otlp.h"

#define SLOTS_MAX 100000
#define GPUS_MAX 64 /* TR_PROTO_MAX_GPUS */
#define LUA_MEM_MB_MAX (1u << 20)

struct options
{
    char *scheduler;     /* comma-separated endpoints */
    char *pool;
    char *id;
    struct tr_flag_list labels; /* "K=V" copies, split in place */
    uint32_t slots;
    char *gpus;          /* "N" or "auto" */
    uint32_t lua_mem_mb;
    uint32_t heartbeat_ms;
    double max_block;    /* seconds, 0 = no watchdog */
    int log_level;
    char *providers;     /* trellis.llm providers file, or NULL */
    char *otlp_endpoint; /* --otlp-endpoint, or NULL */
    int log_format;      /* 0 text, 1 json */
    char *secrets_dir;   /* trellis.secret's folder, or NULL */
    char *index_url;     /* trellis.index on PostgreSQL, or NULL (SQLite files) */
    char *curve_key;     /* this worker's key pair file */
    char *curve_server;  /* the scheduler's public key file */
    char curve_pub[TR_CURVE_KEY_LEN + 1];
    char curve_sec[TR_CURVE_KEY_LEN + 1];
    char curve_srv[TR_CURVE_KEY_LEN + 1];
};

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const char *check_otlp(const char *v)
{
    if (v[0] == '\0')
        return NULL; /* empty: no export */
    if (strpbrk(v, "\r\n ") != NULL ||
        (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
        return "not an http:// or https:// URL";
    return NULL;
}

/* A JSON log line that names a run carries the run's trace id. */
static void log_trace_id(const char *run_id, char out[33])
{
    char span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids(run_id, strlen(run_id), out, span);
}

static const char *check_nonempty(const char *v)
{
    return v[0] == '\0' ? "empty" : NULL;
}

/* The scheduler refuses other pool names in HELLO (they become metric labels). */
static const char *check_pool(const char *v)
{
    static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
    size_t n = strlen(v);
    return n == 0 || n > 63 || strspn(v, ok) != n ? "not 1 to 63 of A-Z a-z 0-9 _ . -" : NULL;
}

static const char *check_id(const char *v)
{
    return v[0] == '\0' || strlen(v) > TR_ID_MAX ? "empty or longer than 255 bytes" : NULL;
}

static const char *check_gpus(const char *v)
{
    if (strcmp(v, "auto") == 0)
        return NULL;
    uint32_t n;
    return tr_parse_u32(v, 0, GPUS_MAX, &n) < 0 ? "not a number from 0 to 64 nor 'auto'" : NULL;
}

static const char *check_label(const char *v)
{
    const char *eq = strchr(v, '=');
    return eq == NULL || eq == v ? "not K=V" : NULL;
}

/* Never echoes the value: a URL may hold a password. */
static const char *check_index_url(const char *v)
{
    return v[0] == '\0' || tr_pg_is_url(v) ? NULL : "not a postgres:// or postgresql:// URL";
}

#define OPT(field) .off = offsetof(struct options, field)

static const struct tr_flag worker_flags[] = {
    {"scheduler", 0, TR_FLAG_STR, OPT(scheduler), .dflt = "tcp://127.0.0.1:8421",
     .arg = "tcp://H:P[,...]", .check = check_nonempty,
     .help = "scheduler endpoints, tried in turn"},
    {"pool", 0, TR_FLAG_STR, OPT(pool), .dflt = "cpu", .arg = "NAME", .check = check_pool,
     .help = "pool this worker serves"},
    {"slots", 0, TR_FLAG_UINT, OPT(slots), .dflt = "16", .arg = "N", .min = 1, .max = SLOTS_MAX,
     .help = "tasks run at once"},
    {"label", 0, TR_FLAG_LIST, OPT(labels), .arg = "K=V", .check = check_label,
     .max_items = TR_PROTO_MAX_LABELS, .help = "a label for placement"},
    {"gpus", 0, TR_FLAG_STR, OPT(gpus), .dflt = "0", .arg = "N|auto", .check = check_gpus,
     .help = "GPUs offered: a number, or auto (NVML; 0 without a driver)"},
    {"id", 0, TR_FLAG_STR, OPT(id), .arg = "ID", .check = check_id,
     .help = "worker id (default w-HOSTNAME-PID)"},
    {"lua-mem-mb", 0, TR_FLAG_UINT, OPT(lua_mem_mb), .dflt = "1024", .arg = "N",
     .max = LUA_MEM_MB_MAX, .help = "Lua heap cap per pipeline, 0 = none"},
    {"heartbeat-ms", 0, TR_FLAG_UINT, OPT(heartbeat_ms), .dflt = "1000", .arg = "N", .min = 10,
     .max = 600000, .help = "heartbeat until the scheduler sets one"},
    {"max-block", 0, TR_FLAG_DOUBLE, OPT(max_block), .dflt = "30", .arg = "SECONDS",
     .dmin = 0, .dmax = 86400,
     .help = "loop held this long by one task: fail it, exit 70 (restart); 0 = never"},
    {"curve-key", 0, TR_FLAG_STR, OPT(curve_key), .arg = "FILE", .check = check_nonempty,
     .help = "this worker's key pair (trellis keygen)"},
    {"curve-server", 0, TR_FLAG_STR, OPT(curve_server), .arg = "FILE", .check = check_nonempty,
     .help = "the scheduler's public key: connect with CURVE"},
    {"log-level", 0, TR_FLAG_ENUM, OPT(log_level), .dflt = "info", .choices = log_levels,
     .arg = "LEVEL", .help = "debug, info, warn or error"},
    {"providers", 0, TR_FLAG_STR, OPT(providers), .arg = "FILE", .check = check_nonempty,
     .help = "LLM providers for trellis.llm (docs/llm.md)"},
    {"otlp-endpoint", 0, TR_FLAG_STR, OPT(otlp_endpoint), .arg = "URL", .check = check_otlp,
     .help = "send OpenTelemetry spans (OTLP/HTTP JSON) to URL/v1/traces"},
    {"log-format", 0, TR_FLAG_ENUM, OPT(log_format), .dflt = "text", .choices = log_formats,
     .arg = "FORMAT", .help = "text, or json (one object per line)"},
    {"secrets-dir", 0, TR_FLAG_STR, OPT(secrets_dir), .arg = "DIR", .check = check_nonempty,
     .help = "folder of files read by trellis.secret(NAME) (docs/pipelines.md)"},
    {"index-url", 0, TR_FLAG_STR, OPT(index_url), .arg = "postgres://...", .check = check_index_url,
     .help = "trellis.index in this PostgreSQL database, shared by workers (docs/rag.md)"},
};

static void usage(const struct tr_flags *f, FILE *out)
{
    fprintf(out, "usage: trellis-worker [options]\n");
    tr_flags_help(f, out);
    fprintf(out, "Every flag is also a variable, TRELLIS_ plus its name in capitals with '-'\n"
                 "as '_' (shown above); the command line wins. TRELLIS_LABEL takes\n"
                 "K=V[,K=V...]; --label on the command line replaces it.\n");
}

static void options_free(const struct tr_flags *f, struct options *o)
{
    explicit_bzero(o->curve_sec, sizeof(o->curve_sec));
    tr_flags_release(f);
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
    for (size_t i = 0; i < o->labels.n; i++) {
        char *eq = strchr(o->labels.items[i], '=');
        *eq = '\0';
        cfg->labels[i].key = tr_str_c(o->labels.items[i]);
        cfg->labels[i].value = tr_str_c(eq + 1);
    }
    cfg->n_labels = (uint32_t)o->labels.n;
    cfg->id = o->id;
    cfg->pool = o->pool;
    cfg->slots = o->slots;
    cfg->gpus_auto = strcmp(o->gpus, "auto") == 0;
    cfg->gpus = 0;
    if (!cfg->gpus_auto && tr_parse_u32(o->gpus, 0, GPUS_MAX, &cfg->gpus) < 0)
        return false; /* check_gpus refused it already */
    cfg->lua_mem_max = (size_t)o->lua_mem_mb << 20;
    cfg->heartbeat_ms = o->heartbeat_ms;
    cfg->max_block_s = o->max_block;
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

static int run(struct tr_worker_config *cfg, const char *otlp_endpoint)
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
    if (tr_traces_open(&loop, otlp_endpoint, cfg->id) < 0) {
        tr_err("cannot start the span exporter worker=%s", cfg->id);
        uv_loop_close(&loop);
        return 1;
    }
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
    tr_traces_close(); /* the spans still queued go out now */
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
    struct options o = {0};
    struct tr_flags flags = {
        .prog = "trellis-worker",
        .sets = {{worker_flags, TR_ARRAY_LEN(worker_flags), &o, "TRELLIS_", NULL}},
    };
    struct tr_error ferr;
    tr_error_init(&ferr);
    int rc = tr_flags_parse(&flags, argc, argv, NULL, &ferr);
    if (rc == TR_FLAGS_HELP) {
        usage(&flags, stdout);
        rc = 0;
        goto out;
    }
    if (rc == 0 && o.id == NULL && (o.id = tr_default_id("w-")) == NULL)
        rc = tr_error_set(&ferr, TR_ENOMEM, "out of memory");
    if (rc != 0) {
        fprintf(stderr, "trellis-worker: %s\n", ferr.msg);
        rc = 2;
        goto out;
    }
    rc = 2;
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
    if (tr_secrets_init(o.secrets_dir) < 0) {
        fprintf(stderr, "trellis-worker: out of memory\n");
        goto out;
    }
    tr_lua_index_set_url(o.index_url);
    tr_log_init("worker", (enum tr_log_level)o.log_level);
    tr_log_set_json(o.log_format == 1);
    tr_log_set_field("worker", cfg.id);
    tr_log_set_trace_fn(log_trace_id);
    buffer_logs();
    signal(SIGPIPE, SIG_IGN);
    rc = run(&cfg, o.otlp_endpoint);
out:
    tr_llm_providers_free();
    tr_secrets_free();
    tr_lua_index_set_url(NULL);
    tr_pg_pool_drain();
    options_free(&flags, &o);
    return rc;
}
