/*
 * main.c - trellis-scheduler: flags and environment into a configuration,
 * then the loop. Everything else lives in sched.c and its neighbours.
 */
#include "scheduler/sched.h"
#include "scheduler/sandbox.h"

#include <getopt.h>
#include <unistd.h>

#include "lib/base/alloc.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: trellis-scheduler [options]\n"
            "  --api HOST:PORT        HTTP API address (127.0.0.1:8420; http://HOST:PORT too)\n"
            "  --listen tcp://H:P     worker endpoint (tcp://127.0.0.1:8421)\n"
            "  --state URL            sqlite:PATH (sqlite:./trellis-state.db)\n"
            "  --token-file FILE      bearer tokens, one per line (required for a\n"
            "                         non-loopback --api)\n"
            "  --curve-key FILE       key pair for the worker port (trellis keygen)\n"
            "  --curve-allow PATH     worker public keys allowed (a file, or a folder of\n"
            "                         .pub files); with --curve-key the worker port may\n"
            "                         listen beyond loopback\n"
            "  --heartbeat-ms N       worker heartbeat interval (1000)\n"
            "  --prefetch N           cap on the adaptive prefetch window per worker (256)\n"
            "  --keep-runs N          finished runs kept in memory (1000)\n"
            "  --max-slots N          slots a worker may claim; more count as N (10000)\n"
            "  --max-params-bytes N   a run's params as JSON, at most (1048576)\n"
            "  --max-params-keys N    keys and elements in a run's params (10000; <= 1000000)\n"
            "  --log-level L          debug, info, warn, error (info)\n"
            "  --id NAME              this scheduler's name among several (HOSTNAME-PID)\n"
            "  --advertise-api URL    API URL standbys redirect to (http://API-HOST:PORT)\n"
            "  --etcd-cacert FILE     CA of the etcd members (etcd over TLS)\n"
            "  --etcd-cert FILE       client certificate for etcd, with --etcd-key FILE\n"
            "  --leader-ttl N         seconds of the leader lease with etcd state (3)\n"
            "Every flag may also come from the environment: TRELLIS_ plus the flag in\n"
            "capitals with '-' as '_' (TRELLIS_STATE, TRELLIS_TOKEN_FILE).\n");
}

static bool parse_uint(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool parse_api(const char *s, char **host, int *port)
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
    if (colon == NULL)
        return false;
    uint32_t p;
    if (!parse_uint(colon + 1, &p) || p > 65535)
        return false;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    tr_free(*host);
    *host = tr_strndup(h, hl);
    *port = (int)p;
    return *host != NULL;
}

static const struct option long_opts[] = {
    {"api", required_argument, NULL, 'a'},
    {"listen", required_argument, NULL, 'l'},
    {"state", required_argument, NULL, 's'},
    {"token-file", required_argument, NULL, 't'},
    {"curve-key", required_argument, NULL, 'c'},
    {"curve-allow", required_argument, NULL, 'C'},
    {"heartbeat-ms", required_argument, NULL, 'H'},
    {"prefetch", required_argument, NULL, 'p'},
    {"keep-runs", required_argument, NULL, 'k'},
    {"log-level", required_argument, NULL, 'L'},
    {"id", required_argument, NULL, 'i'},
    {"advertise-api", required_argument, NULL, 'A'},
    {"leader-ttl", required_argument, NULL, 'T'},
    {"etcd-cacert", required_argument, NULL, 'E'},
    {"etcd-cert", required_argument, NULL, 'F'},
    {"etcd-key", required_argument, NULL, 'G'},
    {"max-params-bytes", required_argument, NULL, 'P'},
    {"max-slots", required_argument, NULL, 'S'},
    {"max-params-keys", required_argument, NULL, 'K'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool apply_opt(struct sched_config *cfg, int c, const char *v, int *log_level)
{
    switch (c) {
    case 'a':
        return parse_api(v, &cfg->api_host, &cfg->api_port);
    case 'l':
        tr_free(cfg->listen);
        cfg->listen = tr_strdup(v);
        return cfg->listen != NULL;
    case 's':
        tr_free(cfg->state_url);
        cfg->state_url = tr_strdup(v);
        return cfg->state_url != NULL;
    case 't':
        tr_free(cfg->token_file);
        cfg->token_file = tr_strdup(v);
        return cfg->token_file != NULL;
    case 'c':
        tr_free(cfg->curve_key);
        cfg->curve_key = tr_strdup(v);
        return cfg->curve_key != NULL;
    case 'C':
        tr_free(cfg->curve_allow);
        cfg->curve_allow = tr_strdup(v);
        return cfg->curve_allow != NULL;
    case 'H':
        return parse_uint(v, &cfg->heartbeat_ms) && cfg->heartbeat_ms >= 10;
    case 'p':
        return parse_uint(v, &cfg->prefetch);
    case 'k':
        return parse_uint(v, &cfg->keep_runs);
    case 'L':
        *log_level = tr_log_level_parse(v);
        return *log_level >= 0;
    case 'i':
        tr_free(cfg->id);
        cfg->id = tr_strdup(v);
        return cfg->id != NULL && v[0] != '\0';
    case 'A':
        /* It goes into Location headers: one line, an http(s) URL. */
        if (strpbrk(v, "\r\n") != NULL ||
            (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
            return false;
        tr_free(cfg->advertise_api);
        cfg->advertise_api = tr_strdup(v);
        return cfg->advertise_api != NULL;
    case 'S':
        return parse_uint(v, &cfg->max_slots) && cfg->max_slots >= 1;
    case 'P':
        return parse_uint(v, &cfg->max_params_bytes) && cfg->max_params_bytes >= 2;
    case 'K':
        /* A worker's decoder takes at most 1,000,000 elements per container. */
        return parse_uint(v, &cfg->max_params_keys) && cfg->max_params_keys <= 1000000;
    case 'T':
        return parse_uint(v, &cfg->leader_ttl_s) && cfg->leader_ttl_s >= 1 &&
               cfg->leader_ttl_s <= 3600;
    case 'E':
    case 'F':
    case 'G': {
        /* They become query parameters of an etcd:// state URL. */
        if (*v == '\0' || strpbrk(v, "&?#") != NULL)
            return false;
        char **slot = c == 'E' ? &cfg->etcd_cacert : c == 'F' ? &cfg->etcd_cert : &cfg->etcd_key;
        tr_free(*slot);
        *slot = tr_strdup(v);
        return *slot != NULL;
    }
    }
    return false;
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

/* TRELLIS_<FLAG> for every flag, applied before the command line overrides them. */
static bool apply_env(struct sched_config *cfg, int *log_level)
{
    for (const struct option *o = long_opts; o->name; o++) {
        if (o->has_arg != required_argument)
            continue;
        char name[64] = "TRELLIS_";
        size_t n = strlen(name);
        for (const char *p = o->name; *p && n + 1 < sizeof(name); p++)
            name[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        name[n] = '\0';
        const char *v = getenv(name);
        if (v && *v && !apply_opt(cfg, o->val, v, log_level)) {
            fprintf(stderr, "trellis-scheduler: bad value for %s: '%s'\n", name, v);
            return false;
        }
    }
    return true;
}

static void config_free(struct sched_config *cfg)
{
    tr_free(cfg->api_host);
    tr_free(cfg->listen);
    tr_free(cfg->state_url);
    tr_free(cfg->token_file);
    tr_free(cfg->curve_key);
    tr_free(cfg->curve_allow);
    tr_free(cfg->id);
    tr_free(cfg->advertise_api);
    tr_free(cfg->etcd_cacert);
    tr_free(cfg->etcd_cert);
    tr_free(cfg->etcd_key);
}

int main(int argc, char **argv)
{
    /* The hidden mode that reads pipeline files (sandbox.h), before anything
     * else: it must not read the environment, open the state or log. */
    if (argc > 1 && strcmp(argv[1], SANDBOX_CHILD_FLAG) == 0)
        return sandbox_child_main(argc, argv);
    struct sched_config cfg = {
        .api_host = tr_strdup("127.0.0.1"),
        .api_port = 8420,
        .listen = tr_strdup("tcp://127.0.0.1:8421"),
        .state_url = tr_strdup("sqlite:./trellis-state.db"),
        .heartbeat_ms = 1000,
        .prefetch = 256,
        .max_slots = 10000,
        .keep_runs = 1000,
        .max_params_bytes = 1u << 20,
        .max_params_keys = 10000,
        .timeout_grace_s = 5,
        .limits = tr_pipeline_default_limits,
        .leader_ttl_s = 3,
    };
    int log_level = TR_LOG_INFO;
    if (!apply_env(&cfg, &log_level))
        return 2;
    int c;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            config_free(&cfg);
            return 0;
        }
        if (c == '?' || !apply_opt(&cfg, c, optarg, &log_level)) {
            if (c != '?') {
                const char *name = "?";
                for (const struct option *o = long_opts; o->name; o++)
                    name = o->val == c ? o->name : name;
                fprintf(stderr, "trellis-scheduler: bad value for --%s: '%s'\n", name, optarg);
            }
            usage(stderr);
            config_free(&cfg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "trellis-scheduler: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        config_free(&cfg);
        return 2;
    }
    if (!apply_etcd_tls(&cfg)) {
        config_free(&cfg);
        return 2;
    }
    if (cfg.id == NULL) {
        char host[128];
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "scheduler");
        host[sizeof(host) - 1] = '\0';
        char id[160];
        snprintf(id, sizeof(id), "%s-%ld", host, (long)getpid());
        cfg.id = tr_strdup(id);
    }
    tr_log_init("scheduler", (enum tr_log_level)log_level);
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sched *s = tr_calloc(1, sizeof(*s));
    struct tr_error err;
    tr_error_init(&err);
    int rc = cfg.id ? 0 : TR_ENOMEM;
    if (rc == 0)
        rc = s ? sched_init(s, &loop, &cfg, &err) : TR_ENOMEM;
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
    config_free(&cfg);
    tr_info("stopped");
    return code;
}
