/*
 * main.c - trellis-scheduler: flags and environment into a configuration,
 * then the loop. Everything else lives in sched.c and its neighbours.
 */
#include "scheduler/sched.h"
#include "scheduler/sandbox.h"

#include <stddef.h>

#include "lib/base/alloc.h"
#include "lib/base/flags.h"
#include "lib/http/otlp.h"

/* Values with no field of their own in struct sched_config. */
static char *opt_api;
static int opt_log_level;
static int opt_log_format;

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const char *check_otlp(const char *v)
{
    if (v[0] == '\0')
        return NULL; /* empty: no export (a template's empty variable) */
    if (strpbrk(v, "\r\n ") != NULL ||
        (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
        return "not an http:// or https:// URL";
    return NULL;
}

/* HOST:PORT, [V6]:PORT or http://HOST:PORT[/]; splits it when host is not NULL. */
static const char *split_api(const char *s, char **host, int *port)
{
    /* TRELLIS_API is also the CLI's URL of the API: accept that form too. */
    char buf[256];
    if (strncmp(s, "http://", 7) == 0) {
        snprintf(buf, sizeof(buf), "%s", s + 7);
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '/')
            buf[--n] = '\0';
        s = buf;
    }
    const char *colon = strrchr(s, ':');
    uint32_t p;
    if (colon == NULL || tr_parse_u32(colon + 1, 0, 65535, &p) != 0)
        return "not HOST:PORT";
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (host == NULL)
        return NULL;
    tr_free(*host);
    *host = tr_strndup(h, hl);
    *port = (int)p;
    return *host != NULL ? NULL : "out of memory";
}

static const char *check_api(const char *v)
{
    return split_api(v, NULL, NULL);
}

static const char *check_id(const char *v)
{
    return v[0] == '\0' || strlen(v) > TR_ID_MAX ? "empty or longer than 255 bytes" : NULL;
}

static const char *check_advertise(const char *v)
{
    /* It goes into Location headers: one line, an http(s) URL. */
    if (strpbrk(v, "\r\n") != NULL ||
        (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
        return "not an http:// or https:// URL";
    return NULL;
}

static const char *check_etcd_file(const char *v)
{
    /* They become query parameters of an etcd:// state URL. */
    return v[0] == '\0' || strpbrk(v, "&?#") != NULL ? "empty, or holds & ? or #" : NULL;
}

static const char *check_webhook(const char *v)
{
    if (strpbrk(v, "\r\n ") != NULL ||
        (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
        return "not an http:// or https:// URL";
    return NULL;
}

#define CFG(field) .off = offsetof(struct sched_config, field)

static const struct tr_flag sched_flags[] = {
    {"api", 0, TR_FLAG_STR, .var = &opt_api, .dflt = "127.0.0.1:8420", .arg = "HOST:PORT",
     .help = "HTTP API address (http://HOST:PORT too)", .check = check_api},
    {"listen", 0, TR_FLAG_STR, CFG(listen), .dflt = "tcp://127.0.0.1:8421", .arg = "tcp://H:P",
     .help = "worker endpoint"},
    {"state", 0, TR_FLAG_STR, CFG(state_url), .dflt = "sqlite:./trellis-state.db", .arg = "URL",
     .help = "sqlite:PATH or etcd://HOST:PORT[,...] (docs/state.md)"},
    {"token-file", 0, TR_FLAG_STR, CFG(token_file), .arg = "FILE",
     .help = "bearer tokens, one per line (required for a non-loopback --api)"},
    {"curve-key", 0, TR_FLAG_STR, CFG(curve_key), .arg = "FILE",
     .help = "key pair for the worker port (trellis keygen)"},
    {"curve-allow", 0, TR_FLAG_STR, CFG(curve_allow), .arg = "PATH",
     .help = "worker public keys allowed (a file, or a folder of .pub files)"},
    {"heartbeat-ms", 0, TR_FLAG_UINT, CFG(heartbeat_ms), .dflt = "1000", .arg = "N",
     .min = 10, .max = 600000, .help = "worker heartbeat interval"},
    {"prefetch", 0, TR_FLAG_UINT, CFG(prefetch), .dflt = "256", .arg = "N",
     .help = "cap on the adaptive prefetch window per worker"},
    {"keep-runs", 0, TR_FLAG_UINT, CFG(keep_runs), .dflt = "1000", .arg = "N",
     .help = "finished runs kept in memory"},
    {"max-slots", 0, TR_FLAG_UINT, CFG(max_slots), .dflt = "10000", .arg = "N", .min = 1,
     .max = 1000000, .help = "slots a worker's HELLO may claim; more count as N"},
    {"max-params-bytes", 0, TR_FLAG_UINT, CFG(max_params_bytes), .dflt = "1048576", .arg = "N",
     .min = 2, .max = 32L << 20, .help = "a run's params as compact JSON, at most"},
    /* A worker's decoder takes at most 1,000,000 elements per container. */
    {"max-params-keys", 0, TR_FLAG_UINT, CFG(max_params_keys), .dflt = "10000", .arg = "N",
     .min = 1, .max = 1000000, .help = "keys and elements in a run's params, at most"},
    {"log-level", 0, TR_FLAG_ENUM, .var = &opt_log_level, .dflt = "info",
     .choices = log_levels, .arg = "LEVEL", .help = "debug, info, warn or error"},
    {"id", 0, TR_FLAG_STR, CFG(id), .arg = "NAME", .check = check_id,
     .help = "this scheduler's name among several (default HOSTNAME-PID)"},
    {"advertise-api", 0, TR_FLAG_STR, CFG(advertise_api), .arg = "URL", .check = check_advertise,
     .help = "API URL standbys redirect to (default http://API-HOST:PORT)"},
    {"leader-ttl", 0, TR_FLAG_UINT, CFG(leader_ttl_s), .dflt = "3", .arg = "N", .min = 1,
     .max = 3600, .help = "seconds of the leader lease with etcd state"},
    {"max-sse", 0, TR_FLAG_UINT, CFG(max_sse), .dflt = "512", .arg = "N", .min = 1,
     .max = 100000, .help = "open event streams (SSE) at most; more are refused 503"},
    {"sse-queue-bytes", 0, TR_FLAG_UINT, CFG(sse_queue_bytes), .dflt = "1048576", .arg = "N",
     .min = 1024, .max = 1u << 30,
     .help = "unread bytes an event stream client may fall behind by before it is dropped"},
    {"webhook", 0, TR_FLAG_LIST, CFG(webhooks), .arg = "URL", .max_items = 16,
     .check = check_webhook, .help = "POST a signed JSON body here when a run ends (repeatable)"},
    {"webhook-secret-file", 0, TR_FLAG_STR, CFG(webhook_secret_file), .arg = "FILE",
     .help = "HMAC-SHA256 key of the webhooks' X-Trellis-Signature-256"},
    {"etcd-cacert", 0, TR_FLAG_STR, CFG(etcd_cacert), .arg = "FILE", .check = check_etcd_file,
     .help = "CA of the etcd members (etcd over TLS)"},
    {"etcd-cert", 0, TR_FLAG_STR, CFG(etcd_cert), .arg = "FILE", .check = check_etcd_file,
     .help = "client certificate for etcd, with --etcd-key"},
    {"etcd-key", 0, TR_FLAG_STR, CFG(etcd_key), .arg = "FILE", .check = check_etcd_file,
     .help = "client key for etcd, with --etcd-cert"},
    {"otlp-endpoint", 0, TR_FLAG_STR, CFG(otlp_endpoint), .arg = "URL", .check = check_otlp,
     .help = "send OpenTelemetry spans (OTLP/HTTP JSON) to URL/v1/traces"},
    {"log-format", 0, TR_FLAG_ENUM, .var = &opt_log_format, .dflt = "text",
     .choices = log_formats, .arg = "FORMAT", .help = "text, or json (one object per line)"},
    {"unschedulable-timeout", 0, TR_FLAG_UINT, CFG(unschedulable_s), .dflt = "300", .arg = "N",
     .max = 86400 * 7, .help = "seconds a task waits for a worker with its labels (0: forever)"},
    {"retention", 0, TR_FLAG_DOUBLE, CFG(retention_days), .dflt = "0", .arg = "DAYS",
     .dmin = 0, .dmax = 36500,
     .help = "purge finished runs older than DAYS (decimals allowed); 0 = keep all"},
    {"budget-approval-timeout", 0, TR_FLAG_UINT, CFG(budget_approval_s), .dflt = "3600",
     .arg = "N", .min = 1, .max = 86400 * 7,
     .help = "seconds an LLM call held for an operator's approval waits before it is rejected"},
};

/* A JSON log line that names a run carries the run's trace id (docs/observability.md). */
static void log_trace_id(const char *run_id, char out[33])
{
    char span[TR_OTLP_SPAN_HEX];
    tr_otlp_run_ids(run_id, strlen(run_id), out, span);
}

static void usage(const struct tr_flags *f, FILE *out)
{
    fprintf(out, "usage: trellis-scheduler [options]\n");
    tr_flags_help(f, out);
    fprintf(out, "Every flag is also a variable, TRELLIS_ plus its name in capitals with '-'\n"
                 "as '_' (shown above); the command line wins.\n");
}

/* Folds --etcd-cacert/--etcd-cert/--etcd-key into the etcd:// state URL. */
static bool apply_etcd_tls(struct sched_config *cfg)
{
    if (cfg->etcd_cacert == NULL && cfg->etcd_cert == NULL && cfg->etcd_key == NULL)
        return true;
    if (strncmp(cfg->state_url, "etcd://", 7) != 0) {
        fprintf(stderr, "trellis-scheduler: --etcd-cacert, --etcd-cert and --etcd-key need an "
                        "etcd:// --state\n");
        return false;
    }
    if ((cfg->etcd_cert == NULL) != (cfg->etcd_key == NULL)) {
        fprintf(stderr, "trellis-scheduler: --etcd-cert and --etcd-key go together\n");
        return false;
    }
    struct tr_buf b;
    tr_buf_init(&b, 0);
    char sep = strchr(cfg->state_url, '?') ? '&' : '?';
    int rc = tr_buf_addstr(&b, cfg->state_url);
    const char *names[] = {"cacert", "cert", "key"};
    const char *vals[] = {cfg->etcd_cacert, cfg->etcd_cert, cfg->etcd_key};
    for (size_t i = 0; rc == 0 && i < TR_ARRAY_LEN(names); i++) {
        if (vals[i] == NULL)
            continue;
        rc = tr_buf_addf(&b, "%c%s=%s", sep, names[i], vals[i]);
        sep = '&';
    }
    char *url = rc == 0 ? tr_buf_detach(&b, NULL) : NULL;
    tr_buf_release(&b);
    if (url == NULL)
        return false;
    tr_free(cfg->state_url);
    cfg->state_url = url;
    return true;
}

static void config_free(const struct tr_flags *f, struct sched_config *cfg)
{
    tr_flags_release(f);
    tr_free(cfg->api_host);
    tr_free(opt_api);
    opt_api = NULL;
}

int main(int argc, char **argv)
{
    /* The hidden mode that reads pipeline files (sandbox.h), before anything
     * else: it must not read the environment, open the state or log. */
    if (argc > 1 && strcmp(argv[1], SANDBOX_CHILD_FLAG) == 0)
        return sandbox_child_main(argc, argv);
    struct sched_config cfg = {
        .timeout_grace_s = 5,
        .limits = tr_pipeline_default_limits,
    };
    struct tr_flags flags = {
        .prog = "trellis-scheduler",
        .sets = {{sched_flags, TR_ARRAY_LEN(sched_flags), &cfg, "TRELLIS_", NULL}},
    };
    struct tr_error ferr;
    tr_error_init(&ferr);
    int frc = tr_flags_parse(&flags, argc, argv, NULL, &ferr);
    if (frc == TR_FLAGS_HELP) {
        usage(&flags, stdout);
        config_free(&flags, &cfg);
        return 0;
    }
    if (frc == 0 && split_api(opt_api, &cfg.api_host, &cfg.api_port) != NULL)
        frc = tr_error_set(&ferr, TR_ENOMEM, "out of memory");
    if (frc == 0 && cfg.id == NULL && (cfg.id = tr_default_id("")) == NULL)
        frc = tr_error_set(&ferr, TR_ENOMEM, "out of memory");
    if (frc != 0) {
        fprintf(stderr, "trellis-scheduler: %s\n", ferr.msg);
        config_free(&flags, &cfg);
        return 2;
    }
    if (!apply_etcd_tls(&cfg)) {
        config_free(&flags, &cfg);
        return 2;
    }
    int log_level = opt_log_level;
    tr_log_init("scheduler", (enum tr_log_level)log_level);
    tr_log_set_json(opt_log_format == 1);
    tr_log_set_trace_fn(log_trace_id);
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sched *s = tr_calloc(1, sizeof(*s));
    struct tr_error err;
    tr_error_init(&err);
    int rc = cfg.id ? 0 : TR_ENOMEM;
    if (rc == 0)
        rc = s ? sched_open(s, &loop, &cfg, &err) : TR_ENOMEM;
    if (rc == 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
    } else {
        tr_err("cannot start: %s", err.msg[0] ? err.msg : tr_strerror(rc));
    }
    if (s)
        sched_close(s);
    /* Let the close callbacks run, then the loop must be empty. */
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        tr_warn("loop closed with handles still open");
    int code = rc == 0 ? (s ? s->exit_code : 0) : 1;
    tr_free(s);
    config_free(&flags, &cfg);
    tr_info("stopped");
    return code;
}
