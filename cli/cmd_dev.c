/*
 * cmd_dev.c - `trellis dev`: a whole local cluster in one foreground command.
 *
 * Starts one trellis-scheduler (SQLite state in the data directory) and N
 * CPU plus M GPU trellis-workers, each with its output in a log file of the
 * data directory, waits until the API answers and every worker has
 * registered, then supervises: a child that dies is reported with its exit
 * status and log, and started again (at most once per 10 s). Ctrl-C or
 * SIGTERM stops the workers, then the scheduler (SIGTERM, SIGKILL after
 * 5 s), and reaps every child before exiting.
 *
 * The children run in a process group of their own, so the terminal's Ctrl-C
 * reaches only this process, which then stops them in order; and they carry
 * PR_SET_PDEATHSIG, so they do not outlive a `trellis dev` that was killed
 * outright. With --run FILE the cluster runs one pipeline with `run --wait`
 * semantics and stops.
 */
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stddef.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define RESTART_INTERVAL_S 10.0
#define STOP_WORKERS_S 2.0
#define STOP_ALL_S 5.0
#define MAX_ARGS 16

struct child
{
    char name[32];           /* "scheduler", "worker-cpu-1" */
    char *log_path;          /* DIR/<name>.log */
    char *argv[MAX_ARGS];    /* argv[0] is the binary's path; NULL-terminated */
    bool is_scheduler;       /* stopped last */
    pid_t pid;               /* 0 when not running */
    double started;          /* tr_now() of the last start */
    double restart_at;       /* when to start it again; 0 when no restart is due */
};

struct dev
{
    struct tr_cli *cli;
    char **envp;              /* the children's environment: ours without TRELLIS_API */
    char **worker_envp;       /* envp plus TRELLIS_DATA_DIR=<data>/data unless set */
    char *worker_data_env;    /* that TRELLIS_DATA_DIR=... entry, or NULL */
    const char *data_dir;     /* as given */
    char api_hostport[256];   /* what the scheduler binds */
    char api_url[300];        /* what clients call */
    int worker_port;          /* the scheduler's ZeroMQ port, picked free */
    long n_cpu, n_gpu, slots; /* how many workers of each pool, slots per worker */
    const char *gpus_per_worker; /* --gpus of the gpu pool's workers: "auto" or a number */
    long ready_timeout;       /* seconds to wait for the cluster */
    struct child *children;   /* scheduler first */
    size_t n_children;
    bool starting;            /* a death now is a failed start, not a restart */
    bool stopping;            /* deaths are expected */
};

static void say(const char *fmt, ...) TR_PRINTF(1, 2);

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("trellis dev: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ====================================================================== */
/* {=== the API address */

/*
 * Splits "HOST:PORT" (or "[V6]:PORT", or a URL with http://) and checks that
 * the address can be bound now, so that a second `trellis dev` fails with a
 * clear message instead of a scheduler that dies. Fills the dev's API fields.
 */
static bool check_api_address(struct dev *d, const char *spec)
{
    if (strncmp(spec, "http://", 7) == 0)
        spec += 7;
    char host[256];
    const char *colon = strrchr(spec, ':');
    long port;
    if (colon == NULL || colon == spec || (size_t)(colon - spec) >= sizeof(host) ||
        tr_parse_long(colon + 1, 1, 65535, &port) != 0) {
        tr_cli_usage_error(d->cli, "--api wants HOST:PORT, not '%s'", spec);
        return false;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    bool v6 = strchr(host, ':') != NULL;
    snprintf(d->api_hostport, sizeof(d->api_hostport), v6 ? "[%s]:%ld" : "%s:%ld", host, port);
    /* Clients reach a wildcard address through loopback. */
    const char *call_host = host;
    if (strcmp(host, "0.0.0.0") == 0)
        call_host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        call_host = "::1";
    snprintf(d->api_url, sizeof(d->api_url), strchr(call_host, ':') ? "http://[%s]:%ld"
                                                                     : "http://%s:%ld",
             call_host, port);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof(ps), "%ld", port);
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai != 0) {
        tr_cli_error("cannot use --api '%s': %s", spec, gai_strerror(gai));
        return false;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
              bind(fd, res->ai_addr, res->ai_addrlen) == 0;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    if (!ok) {
        if (saved == EADDRINUSE)
            tr_cli_error("cannot start: %s is already in use (another 'trellis dev'?); "
                         "pick another address with --api HOST:PORT", d->api_hostport);
        else
            tr_cli_error("cannot bind %s: %s", d->api_hostport, strerror(saved));
        return false;
    }
    return true;
}

/* ====================================================================== */
/* {=== children */

static void child_release(struct child *ch)
{
    tr_free_null(&ch->log_path);
    for (size_t i = 0; i < MAX_ARGS; i++)
        tr_free_null(&ch->argv[i]);
}

/* Sets up a child: name, log path and argv (bin takes ownership of nothing; it is copied). */
static int child_init(struct dev *d, struct child *ch, const char *name, const char *bin,
                      const char *const *args)
{
    memset(ch, 0, sizeof(*ch));
    snprintf(ch->name, sizeof(ch->name), "%s", name);
    struct tr_buf b;
    tr_buf_init(&b, 0);
    if (tr_buf_addf(&b, "%s/%s.log", d->data_dir, name) < 0)
        goto out_nomem;
    ch->log_path = tr_buf_detach(&b, NULL);
    ch->argv[0] = tr_strdup(bin);
    if (ch->log_path == NULL || ch->argv[0] == NULL)
        goto out_nomem;
    for (size_t i = 0; args[i] != NULL; i++) {
        TR_ASSERT(i + 2 < MAX_ARGS);
        ch->argv[i + 1] = tr_strdup(args[i]);
        if (ch->argv[i + 1] == NULL)
            goto out_nomem;
    }
    return 0;

out_nomem:
    tr_buf_release(&b);
    child_release(ch);
    return TR_ENOMEM;
}

/* Starts ch with its output in its log (truncated on the first start). */
static bool child_start(struct dev *d, struct child *ch, bool first)
{
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (first ? O_TRUNC : 0);
    int log = open(ch->log_path, flags, 0644);
    if (log < 0) {
        tr_cli_error("cannot open log '%s': %s", ch->log_path, strerror(errno));
        return false;
    }
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) {
        tr_cli_error("cannot open /dev/null: %s", strerror(errno));
        close(log);
        return false;
    }
    if (!first)
        dprintf(log, "---- trellis dev: restarting %s ----\n", ch->name);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* In the child: only calls that are safe between fork and exec. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(null, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        execve(ch->argv[0], ch->argv, ch->is_scheduler ? d->envp : d->worker_envp);
        dprintf(STDERR_FILENO, "trellis dev: cannot run '%s': %s\n", ch->argv[0],
                strerror(errno));
        _exit(127);
    }
    int saved = errno;
    close(log);
    close(null);
    if (pid < 0) {
        tr_cli_error("cannot start %s: %s", ch->name, strerror(saved));
        return false;
    }
    /* Also from the parent, so the group exists before anyone signals it. */
    setpgid(pid, pid);
    ch->pid = pid;
    ch->started = tr_now();
    ch->restart_at = 0;
    return true;
}

/*
 * Reaps every child that exited. While starting, a death is returned as the
 * failed child; afterwards it is reported and a restart is scheduled.
 */
static struct child *reap(struct dev *d)
{
    struct child *failed = NULL;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        for (size_t i = 0; i < d->n_children; i++) {
            struct child *ch = &d->children[i];
            if (ch->pid != pid)
                continue;
            ch->pid = 0;
            if (d->stopping)
                break;
            char how[128];
            tr_cli_describe_status(status, how, sizeof(how));
            if (d->starting) {
                tr_cli_error("%s %s while the cluster was starting; the end of %s:", ch->name,
                             how, ch->log_path);
                tr_cli_print_log_tail(ch->log_path);
                failed = ch;
                break;
            }
            double now = tr_now();
            ch->restart_at = TR_MAX(now, ch->started + RESTART_INTERVAL_S);
            char when[32] = "";
            if (ch->restart_at > now + 0.5)
                snprintf(when, sizeof(when), " in %.0f s", ch->restart_at - now);
            say("%s (pid %d) %s; see %s; restarting it%s", ch->name, (int)pid, how,
                ch->log_path, when);
        }
    }
    return failed;
}

/* Starts again the children whose restart is due. */
static void restart_due(struct dev *d)
{
    double now = tr_now();
    for (size_t i = 0; i < d->n_children; i++) {
        struct child *ch = &d->children[i];
        if (ch->pid == 0 && ch->restart_at > 0 && ch->restart_at <= now) {
            if (child_start(d, ch, false))
                say("restarted %s (pid %d)", ch->name, (int)ch->pid);
            else
                ch->restart_at = now + RESTART_INTERVAL_S;
        }
    }
}

static void supervise_tick(void *arg)
{
    struct dev *d = arg;
    reap(d);
    restart_due(d);
}

static size_t running(const struct dev *d, bool schedulers)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n_children; i++)
        n += d->children[i].pid > 0 && d->children[i].is_scheduler == schedulers;
    return n;
}

static void signal_all(struct dev *d, bool schedulers, int sig)
{
    for (size_t i = 0; i < d->n_children; i++) {
        struct child *ch = &d->children[i];
        if (ch->pid > 0 && ch->is_scheduler == schedulers)
            kill(ch->pid, sig);
    }
}

/* Waits until no child of the kind runs, at most until deadline or a new Ctrl-C. */
static void wait_stopped(struct dev *d, bool schedulers, double deadline)
{
    while (running(d, schedulers) > 0 && tr_now() < deadline && !tr_cli_interrupted) {
        tr_cli_nap(50);
        reap(d);
    }
}

/*
 * Workers first, so that they leave a live scheduler cleanly, then the
 * scheduler; SIGKILL what is left after STOP_ALL_S or on a second Ctrl-C.
 * Every child is reaped before this returns.
 */
static void stop_all(struct dev *d)
{
    d->stopping = true;
    tr_cli_interrupted = 0;
    reap(d);
    if (running(d, false) + running(d, true) == 0)
        return;
    say("stopping (press Ctrl-C again to kill at once)");
    double start = tr_now();
    signal_all(d, false, SIGTERM);
    wait_stopped(d, false, start + STOP_WORKERS_S);
    signal_all(d, true, SIGTERM);
    signal_all(d, false, SIGTERM);
    wait_stopped(d, true, start + STOP_ALL_S);
    wait_stopped(d, false, start + STOP_ALL_S);
    for (size_t i = 0; i < d->n_children; i++) {
        struct child *ch = &d->children[i];
        if (ch->pid <= 0)
            continue;
        say("%s (pid %d) did not stop; killing it", ch->name, (int)ch->pid);
        kill(ch->pid, SIGKILL);
        while (waitpid(ch->pid, NULL, 0) < 0 && errno == EINTR)
            continue;
        ch->pid = 0;
    }
    say("stopped");
}

/* ====================================================================== */
/* {=== starting the cluster */

static int build_children(struct dev *d, const char *sched_bin, const char *worker_bin)
{
    d->n_children = 1 + (size_t)d->n_cpu + (size_t)d->n_gpu;
    d->children = tr_calloc(d->n_children, sizeof(*d->children));
    if (d->children == NULL)
        return TR_ENOMEM;
    char listen[64], state[PATH_MAX + 16], slots[24];
    snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", d->worker_port);
    snprintf(state, sizeof(state), "sqlite:%s/state.db", d->data_dir);
    snprintf(slots, sizeof(slots), "%ld", d->slots);
    const char *sargs[] = {"--api", d->api_hostport, "--listen", listen, "--state", state, NULL};
    int rc = child_init(d, &d->children[0], "scheduler", sched_bin, sargs);
    if (rc < 0)
        return rc;
    d->children[0].is_scheduler = true;
    for (long i = 0; i < d->n_cpu + d->n_gpu; i++) {
        bool gpu = i >= d->n_cpu;
        char name[32];
        snprintf(name, sizeof(name), "worker-%s-%ld", gpu ? "gpu" : "cpu",
                 gpu ? i - d->n_cpu + 1 : i + 1);
        const char *cpu_args[] = {"--scheduler", listen, "--pool", "cpu", "--slots", slots,
                                  NULL};
        const char *gpu_args[] = {"--scheduler", listen, "--pool", "gpu", "--slots", slots,
                                  "--gpus", d->gpus_per_worker, NULL};
        rc = child_init(d, &d->children[1 + i], name, worker_bin, gpu ? gpu_args : cpu_args);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Counts the registered workers of each pool. */
static void count_workers(const json_t *ans, long *cpu, long *gpu)
{
    *cpu = *gpu = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(ans, "workers"), i, w)
    {
        const char *pool = json_string_value(json_object_get(w, "pool"));
        if (pool != NULL && strcmp(pool, "cpu") == 0)
            (*cpu)++;
        else if (pool != NULL && strcmp(pool, "gpu") == 0)
            (*gpu)++;
    }
}

/*
 * Waits until the API answers /healthz and every worker is registered.
 * Returns 0, TR_ECANCELED on Ctrl-C, or TR_ETIMEDOUT / TR_EIO after
 * printing what went wrong.
 */
static int wait_ready(struct dev *d, struct tr_client *c)
{
    double deadline = tr_now() + (double)d->ready_timeout;
    bool healthy = false;
    long cpu = 0, gpu = 0;
    struct tr_error err;
    tr_error_init(&err);
    while (!tr_cli_interrupted) {
        if (reap(d) != NULL)
            return TR_EIO;
        if (tr_now() > deadline)
            break;
        json_t *ans = NULL;
        int rc = tr_client_call(c, "GET", healthy ? "/v1/workers" : "/healthz", NULL, 2, &ans,
                                &err);
        if (rc == 0 && !healthy) {
            healthy = true;
            json_decref(ans);
            continue;
        }
        if (rc == 0) {
            count_workers(ans, &cpu, &gpu);
            json_decref(ans);
            if (cpu >= d->n_cpu && gpu >= d->n_gpu)
                return 0;
        }
        tr_cli_nap(100);
    }
    if (tr_cli_interrupted)
        return TR_ECANCELED;
    if (!healthy)
        tr_cli_error("the scheduler did not answer within %ld s (%s); see %s", d->ready_timeout,
                     err.msg[0] ? err.msg : "no answer", d->children[0].log_path);
    else
        tr_cli_error("only %ld of %ld cpu and %ld of %ld gpu workers registered within %ld s; "
                     "see the worker logs in %s",
                     cpu, d->n_cpu, gpu, d->n_gpu, d->ready_timeout, d->data_dir);
    return TR_ETIMEDOUT;
}

static void announce(const struct dev *d)
{
    say("data in %s (state %s/state.db)", d->data_dir, d->data_dir);
    if (d->worker_data_env != NULL)
        say("workers keep pipeline files (indexes) in %s",
            d->worker_data_env + strlen("TRELLIS_DATA_DIR="));
    say("scheduler: pid %d, API %s, workers connect to tcp://127.0.0.1:%d, log %s",
        (int)d->children[0].pid, d->api_hostport, d->worker_port, d->children[0].log_path);
    for (size_t i = 1; i < d->n_children; i++)
        say("%s: pid %d, %ld slots, log %s", d->children[i].name, (int)d->children[i].pid,
            d->slots, d->children[i].log_path);
}

/*
 * The workers' environment: the children's, plus TRELLIS_DATA_DIR=<data>/data
 * unless the caller set TRELLIS_DATA_DIR, so that the index files of the
 * pipelines (trellis.index) live beside the cluster's state and logs rather
 * than in whatever folder `trellis dev` was started from.
 */
static int build_worker_environment(struct dev *d)
{
    size_t n = 0;
    while (d->envp[n] != NULL)
        n++;
    d->worker_envp = tr_calloc(n + 2, sizeof(*d->worker_envp));
    if (d->worker_envp == NULL)
        return TR_ENOMEM;
    memcpy(d->worker_envp, d->envp, n * sizeof(*d->envp));
    if (getenv("TRELLIS_DATA_DIR") != NULL)
        return 0;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    if (tr_buf_addf(&b, "TRELLIS_DATA_DIR=%s/data", d->data_dir) < 0) {
        tr_buf_release(&b);
        return TR_ENOMEM;
    }
    d->worker_data_env = tr_buf_detach(&b, NULL);
    if (d->worker_data_env == NULL)
        return TR_ENOMEM;
    d->worker_envp[n] = d->worker_data_env;
    return 0;
}

/* ====================================================================== */
/* {=== the command */

struct dev_args
{
    char *run_file;             /* --run, or NULL */
    struct tr_flag_list param;  /* -p for --run */
    char *data_dir;             /* --data */
    char *api;                  /* --api HOST:PORT */
    long n_cpu, n_gpu, slots;   /* --workers, --gpu-workers, --slots */
    char *gpus_per_worker;      /* --gpus-per-worker */
    long ready_timeout;         /* --timeout */
    json_t *params;             /* the -p values as an object */
    bool json_out;              /* --json for --run */
};

static const char *check_nonempty(const char *v)
{
    return v[0] == '\0' ? "empty" : NULL;
}

static const char *check_gpus(const char *v)
{
    if (strcmp(v, "auto") == 0)
        return NULL;
    uint32_t n;
    return tr_parse_u32(v, 0, 64, &n) < 0 ? "not 'auto' nor 0 to 64" : NULL;
}

#define ARG(field) .off = offsetof(struct dev_args, field)

static const struct tr_flag dev_flags[] = {
    {"workers", 0, TR_FLAG_INT, ARG(n_cpu), .dflt = "2", .arg = "N", .min = 0, .max = 256,
     .help = "CPU workers to start"},
    {"gpu-workers", 0, TR_FLAG_INT, ARG(n_gpu), .dflt = "1", .arg = "M", .min = 0, .max = 256,
     .help = "workers to start in pool gpu"},
    {"gpus-per-worker", 0, TR_FLAG_STR, ARG(gpus_per_worker), .dflt = "auto", .arg = "auto|K",
     .check = check_gpus,
     .help = "GPUs each gpu-pool worker offers: auto asks NVML (0 without a driver), K says"},
    {"data", 0, TR_FLAG_STR, ARG(data_dir), .dflt = ".trellis", .arg = "DIR",
     .check = check_nonempty, .help = "state and logs directory"},
    /* The cluster's address; TRELLIS_API, when it names one, is where clients will look. */
    {"api", 0, TR_FLAG_STR, ARG(api), .dflt = "127.0.0.1:8420", .arg = "HOST:PORT",
     .env = "TRELLIS_API", .help = "where the scheduler serves the API"},
    {"slots", 0, TR_FLAG_INT, ARG(slots), .dflt = "16", .arg = "N", .min = 1, .max = 100000,
     .help = "task slots per worker"},
    {"timeout", 0, TR_FLAG_INT, ARG(ready_timeout), .dflt = "15", .arg = "SECONDS", .min = 1,
     .max = 3600, .help = "how long to wait for the cluster to be ready"},
    {"run", 0, TR_FLAG_STR, ARG(run_file), .arg = "FILE",
     .help = "run FILE once the cluster is ready, print its output, stop"},
    {"param", 'p', TR_FLAG_LIST, ARG(param), .arg = "KEY=VALUE", .help = "a parameter for --run"},
};

/* -1 to go on, or the exit code. */
static int parse_args(struct dev *d, struct dev_args *a, int argc, char **argv)
{
    struct tr_cli *cli = d->cli;
    int code = tr_cli_parse(cli, argc, argv, dev_flags, TR_ARRAY_LEN(dev_flags), a, 0, 0, "",
                            &a->json_out);
    if (code >= 0)
        return code;
    for (size_t i = 0; i < a->param.n; i++) {
        code = tr_cli_add_param(a->params, a->param.items[i]);
        if (code != 0)
            return code;
    }
    if (a->param.n > 0 && a->run_file == NULL)
        return tr_cli_usage_error(cli, "-p only makes sense with --run FILE");
    d->data_dir = a->data_dir;
    d->n_cpu = a->n_cpu;
    d->n_gpu = a->n_gpu;
    d->gpus_per_worker = a->gpus_per_worker;
    d->slots = a->slots;
    d->ready_timeout = a->ready_timeout;
    if (!check_api_address(d, a->api))
        return TR_EXIT_FAILED;
    return -1;
}

int tr_cmd_dev(struct tr_cli *cli, int argc, char **argv)
{
    struct dev d = {.cli = cli};
    struct dev_args a = {.params = json_object()};
    char *sched_bin = NULL;
    char *worker_bin = NULL;
    int code = TR_EXIT_FAILED;
    if (a.params == NULL) {
        tr_cli_error("out of memory");
        return TR_EXIT_FAILED;
    }
    code = parse_args(&d, &a, argc, argv);
    if (code >= 0)
        goto out;
    code = TR_EXIT_FAILED;

    sched_bin = tr_cli_find_binary("trellis-scheduler");
    worker_bin = tr_cli_find_binary("trellis-worker");
    if (sched_bin == NULL || (worker_bin == NULL && d.n_cpu + d.n_gpu > 0)) {
        tr_cli_error("cannot find %s next to this trellis or on PATH",
                     sched_bin == NULL ? "trellis-scheduler" : "trellis-worker");
        goto out;
    }
    if (!tr_cli_make_dirs(d.data_dir))
        goto out;
    d.worker_port = tr_cli_free_port();
    if (d.worker_port < 0) {
        tr_cli_error("cannot find a free port for workers: %s", strerror(errno));
        goto out;
    }
    d.envp = tr_cli_child_environment();
    if (d.envp == NULL || build_worker_environment(&d) < 0 ||
        build_children(&d, sched_bin, worker_bin ? worker_bin : "") < 0) {
        tr_cli_error("out of memory");
        goto out;
    }
    /* The CLI calls of this process (readiness, --run) go to the cluster it starts. */
    cli->api = d.api_url;
    struct tr_client *c = tr_cli_client(cli);
    if (c == NULL) {
        code = TR_EXIT_USAGE;
        goto out;
    }

    d.starting = true;
    bool started = true;
    for (size_t i = 0; i < d.n_children && started; i++)
        started = child_start(&d, &d.children[i], true);
    if (started)
        announce(&d);
    int rc = started ? wait_ready(&d, c) : TR_EIO;
    d.starting = false;
    if (rc == TR_ECANCELED) {
        stop_all(&d);
        code = a.run_file != NULL ? TR_EXIT_INTERRUPTED : TR_EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        stop_all(&d);
        goto out;
    }
    say("ready: API at %s (export TRELLIS_API=%s)%s", d.api_url, d.api_url,
        a.run_file ? "" : "; press Ctrl-C to stop");

    if (a.run_file != NULL) {
        char *run_id = NULL;
        code = tr_cli_start_run(cli, a.run_file, a.params, &run_id);
        if (code == 0) {
            say("started run %s", run_id);
            struct tr_cli_wait_opts wo = {.json_out = a.json_out, .no_cancel_hint = true,
                                          .tick = supervise_tick, .tick_arg = &d};
            code = tr_cli_wait_run(cli, run_id, &wo);
        }
        tr_free(run_id);
        stop_all(&d);
        goto out;
    }

    while (!tr_cli_interrupted) {
        tr_cli_nap(200);
        supervise_tick(&d);
    }
    stop_all(&d);
    code = TR_EXIT_OK;

out:
    for (size_t i = 0; i < d.n_children; i++)
        child_release(&d.children[i]);
    tr_free(d.children);
    tr_free(d.envp);
    tr_free(d.worker_envp);
    tr_free(d.worker_data_env);
    tr_free(sched_bin);
    tr_free(worker_bin);
    json_decref(a.params);
    tr_cli_flags_release(dev_flags, TR_ARRAY_LEN(dev_flags), &a);
    return code;
}
