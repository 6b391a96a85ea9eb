/*
 * bench_cluster.c - the processes the benchmark starts, and how they end.
 *
 * A cluster is one trellis-scheduler and N trellis-worker processes, each in
 * its own process group with stdout and stderr going to a log file in the
 * cluster's temporary directory (which also holds the sqlite state). Every
 * child's PID is recorded in a table that the signal handler reads: on
 * SIGINT, SIGTERM or the watchdog's SIGALRM the handler stops each recorded
 * child by PID (SIGTERM, then SIGKILL after a grace period) using only
 * async-signal-safe calls, and exits. Children also get PR_SET_PDEATHSIG, so
 * a benchmark killed with SIGKILL still takes its cluster down with it.
 *
 * Single-threaded apart from that handler; the table is written by the main
 * flow one pid_t at a time, which the handler may read at any point.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"

/* Seconds a child gets between SIGTERM and SIGKILL. */
#define STOP_GRACE_S 10.0
/* Seconds the cluster gets to answer /healthz and list its workers. */
#define START_TIMEOUT_S 30.0

/* ===================== the child table and the signal handler ===================== */

#define MAX_CHILDREN 64

static volatile pid_t g_children[MAX_CHILDREN];
/* Directory of the cluster being run, for the handler's last message. */
static char g_dir[256];

static void child_add(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] == 0) {
            g_children[i] = pid;
            return;
        }
    }
}

static void child_del(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] == pid)
            g_children[i] = 0;
    }
}

static void say(const char *s)
{
    ssize_t w = write(STDERR_FILENO, s, strlen(s));
    TR_UNUSED(w);
}

/* Async-signal-safe: kill, waitpid, nanosleep only. */
static void stop_children_from_handler(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] > 0)
            kill(g_children[i], SIGTERM);
    }
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int t = 0; t < (int)(STOP_GRACE_S * 100); t++) {
        bool left = false;
        for (int i = 0; i < MAX_CHILDREN; i++) {
            pid_t p = g_children[i];
            if (p <= 0)
                continue;
            pid_t w = waitpid(p, NULL, WNOHANG);
            if (w == p || (w < 0 && errno == ECHILD))
                g_children[i] = 0;
            else
                left = true;
        }
        if (!left)
            return;
        nanosleep(&tick, NULL);
    }
    for (int i = 0; i < MAX_CHILDREN; i++) {
        pid_t p = g_children[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            g_children[i] = 0;
        }
    }
}

static void on_fatal_signal(int sig)
{
    if (sig == SIGALRM)
        say("[bench] watchdog: time is up, stopping every process started\n");
    else
        say("[bench] interrupted, stopping every process started\n");
    stop_children_from_handler();
    if (g_dir[0]) {
        say("[bench] logs and state left in ");
        say(g_dir);
        say("\n");
    }
    _exit(sig == SIGALRM ? 124 : 128 + sig);
}

void tr_bench_signals_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGALRM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void tr_bench_watchdog(unsigned seconds)
{
    alarm(seconds);
}

/* ===================== small helpers ===================== */

void tr_bench_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

void tr_bench_log(const char *fmt, ...)
{
    time_t t = time(NULL);
    struct tm tm;
    char stamp[16] = "";
    if (localtime_r(&t, &tm) != NULL)
        strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[bench %s] %s\n", stamp, line);
}

long long tr_bench_proc_bytes(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    size_t flen = strlen(field);
    long long v = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            char *end;
            long long kb = strtoll(line + flen + 1, &end, 10);
            if (end != line + flen + 1)
                v = kb * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

/* A port on 127.0.0.1 that was free a moment ago; the socket is returned open. */
static int free_port(int *fd_out, struct tr_error *err)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return tr_error_set(err, TR_EIO, "cannot make a socket: %s", strerror(errno));
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        int e = errno;
        close(fd);
        return tr_error_set(err, TR_EIO, "cannot find a free port on 127.0.0.1: %s",
                            strerror(e));
    }
    *fd_out = fd;
    return ntohs(a.sin_port);
}

/* Prints the last lines of a child's log, to explain why it failed. */
static void log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[2048];
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        start = size > (long)sizeof(buf) - 1 ? size - ((long)sizeof(buf) - 1) : 0;
    }
    fseek(f, start, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    fprintf(stderr, "[bench] --- last lines of %s ---\n%s%s[bench] ---\n", path, buf,
            n && buf[n - 1] != '\n' ? "\n" : "");
}

/* ===================== starting and stopping children ===================== */

/*
 * Forks and execs argv[0] with stdout and stderr appended to log_path, in
 * dir, in a new process group, with default signal dispositions.
 */
static int spawn(char *const argv[], const char *dir, const char *log_path, pid_t *out,
                 struct tr_error *err)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return tr_error_set(err, TR_EIO, "cannot fork for '%s': %s", argv[0], strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        /* If the benchmark dies without cleaning up, the child is told to stop. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = open("/dev/null", O_RDONLY);
        int lf = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || lf < 0 || chdir(dir) < 0)
            _exit(127);
        dup2(in, STDIN_FILENO);
        dup2(lf, STDOUT_FILENO);
        dup2(lf, STDERR_FILENO);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "cannot execute '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    child_add(pid);
    *out = pid;
    return 0;
}

/* True when pid has exited (then reaped and *status set). */
static bool reaped(pid_t pid, int *status)
{
    pid_t w = waitpid(pid, status, WNOHANG);
    return w == pid || (w < 0 && errno == ECHILD);
}

/* SIGTERM to every pid, then waits for each, SIGKILL after the grace period. */
static void stop_pids(pid_t *pids, uint32_t n, const char *what)
{
    for (uint32_t i = 0; i < n; i++) {
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    }
    uint64_t deadline = tr_mono_ns() + (uint64_t)(STOP_GRACE_S * 1e9);
    for (uint32_t i = 0; i < n; i++) {
        if (pids[i] <= 0)
            continue;
        int st;
        while (!reaped(pids[i], &st)) {
            if (tr_mono_ns() >= deadline) {
                tr_bench_log("%s pid %d ignored SIGTERM for %.0f s, sending SIGKILL", what,
                             (int)pids[i], STOP_GRACE_S);
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &st, 0);
                break;
            }
            tr_bench_sleep(0.01);
        }
        child_del(pids[i]);
        pids[i] = 0;
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    TR_UNUSED(sb);
    TR_UNUSED(flag);
    TR_UNUSED(ftw);
    if (remove(path) < 0)
        tr_bench_log("cannot remove '%s': %s", path, strerror(errno));
    return 0;
}

void tr_bench_cluster_stop(struct tr_bench_cluster *c, bool keep)
{
    stop_pids(c->worker_pid, c->n_workers, "trellis-worker");
    stop_pids(&c->sched_pid, 1, "trellis-scheduler");
    tr_bench_http_free(c->http);
    c->http = NULL;
    if (c->dir[0]) {
        if (keep)
            tr_bench_log("logs and state kept in %s", c->dir);
        else
            nftw(c->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    c->dir[0] = '\0';
    g_dir[0] = '\0';
}

int tr_bench_spawn(char *const argv[], const char *dir, const char *log_path, pid_t *out,
                   struct tr_error *err)
{
    return spawn(argv, dir, log_path, out, err);
}

void tr_bench_stop_pid(pid_t *pid, const char *what)
{
    stop_pids(pid, 1, what);
}

int tr_bench_cluster_check(struct tr_bench_cluster *c, struct tr_error *err)
{
    int st = 0;
    char log[320];
    if (c->sched_pid > 0 && reaped(c->sched_pid, &st)) {
        child_del(c->sched_pid);
        c->sched_pid = 0;
        snprintf(log, sizeof(log), "%s/scheduler.log", c->dir);
        log_tail(log);
        return tr_error_set(err, TR_EIO, "trellis-scheduler exited (%s %d); its log: %s",
                            WIFSIGNALED(st) ? "signal" : "status",
                            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), log);
    }
    for (uint32_t i = 0; i < c->n_workers; i++) {
        if (c->worker_pid[i] > 0 && reaped(c->worker_pid[i], &st)) {
            child_del(c->worker_pid[i]);
            c->worker_pid[i] = 0;
            snprintf(log, sizeof(log), "%s/worker-%u.log", c->dir, i + 1);
            log_tail(log);
            return tr_error_set(err, TR_EIO, "trellis-worker %u exited (%s %d); its log: %s",
                                i + 1, WIFSIGNALED(st) ? "signal" : "status",
                                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), log);
        }
    }
    return 0;
}

/* Workers of pool "cpu" that GET /v1/workers lists, or a negative error. */
static int count_workers(struct tr_bench_http *h, struct tr_error *err)
{
    json_t *r;
    int rc = tr_bench_get_json(h, "/v1/workers", 5.0, &r, err);
    if (rc < 0)
        return rc;
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(r, "workers"), i, w) {
        const char *pool = json_string_value(json_object_get(w, "pool"));
        if (pool != NULL && strcmp(pool, "cpu") == 0)
            n++;
    }
    json_decref(r);
    return n;
}

/* Waits until the scheduler answers /healthz with 200. */
static int wait_health(struct tr_bench_cluster *c, struct tr_error *err)
{
    uint64_t deadline = tr_mono_ns() + (uint64_t)(START_TIMEOUT_S * 1e9);
    char last[TR_ERROR_MSG_MAX] = "no answer";
    for (;;) {
        int rc = tr_bench_cluster_check(c, err);
        if (rc < 0)
            return rc;
        long status;
        json_t *r;
        struct tr_error e;
        tr_error_init(&e);
        rc = tr_bench_http_call(c->http, "GET", "/healthz", NULL, 0, 2.0, &status, &r, &e);
        json_decref(r);
        if (rc == 0 && status == 200)
            return 0;
        if (rc < 0)
            snprintf(last, sizeof(last), "%s", e.msg);
        else
            snprintf(last, sizeof(last), "status %ld", status);
        if (tr_mono_ns() >= deadline)
            return tr_error_set(err, TR_ETIMEDOUT,
                                "trellis-scheduler not healthy after %.0f s: %s",
                                START_TIMEOUT_S, last);
        tr_bench_sleep(0.05);
    }
}

static int wait_workers(struct tr_bench_cluster *c, struct tr_error *err)
{
    uint64_t deadline = tr_mono_ns() + (uint64_t)(START_TIMEOUT_S * 1e9);
    for (;;) {
        int rc = tr_bench_cluster_check(c, err);
        if (rc < 0)
            return rc;
        int n = count_workers(c->http, err);
        if (n < 0)
            return n;
        if ((uint32_t)n >= c->n_workers)
            return 0;
        if (tr_mono_ns() >= deadline)
            return tr_error_set(err, TR_ETIMEDOUT,
                                "only %d of %u workers registered after %.0f s", n,
                                c->n_workers, START_TIMEOUT_S);
        tr_bench_sleep(0.05);
    }
}

static int start_processes(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                           struct tr_error *err)
{
    /* Both ports are held open together so that they differ. */
    int fd1 = -1, fd2 = -1;
    int p1 = free_port(&fd1, err);
    if (p1 < 0)
        return p1;
    int p2 = free_port(&fd2, err);
    close(fd1);
    if (p2 < 0)
        return p2;
    close(fd2);
    snprintf(c->api, sizeof(c->api), "127.0.0.1:%d", p1);
    snprintf(c->listen, sizeof(c->listen), "tcp://127.0.0.1:%d", p2);

    char state[640], log[320];
    /* TRELLIS_BENCH_STATE=etcd://HOST:PORT measures the etcd backend; each
     * cluster gets a key prefix of its own so clusters never share runs. */
    const char *alt = getenv("TRELLIS_BENCH_STATE");
    if (alt != NULL && *alt) {
        const char *base = strrchr(c->dir, '/');
        snprintf(state, sizeof(state), "%s%sprefix=/trellis-bench/%s", alt,
                 strchr(alt, '?') ? "&" : "?", base ? base + 1 : c->dir);
    } else {
        snprintf(state, sizeof(state), "sqlite:%s/state.db", c->dir);
    }
    snprintf(log, sizeof(log), "%s/scheduler.log", c->dir);
    char *sargv[] = {o->scheduler_bin, "--api", c->api, "--listen", c->listen,
                     "--state", state, NULL};
    int rc = spawn(sargv, c->dir, log, &c->sched_pid, err);
    if (rc < 0)
        return rc;
    c->http = tr_bench_http_new(c->api);
    if (c->http == NULL)
        return tr_error_set(err, TR_ENOMEM, "cannot make an HTTP client");
    rc = wait_health(c, err);
    if (rc < 0)
        return rc;

    char slots[16];
    snprintf(slots, sizeof(slots), "%u", o->slots);
    for (uint32_t i = 0; i < o->workers; i++) {
        snprintf(log, sizeof(log), "%s/worker-%u.log", c->dir, i + 1);
        char *wargv[] = {o->worker_bin, "--scheduler", c->listen, "--pool", "cpu",
                         "--slots", slots, NULL};
        rc = spawn(wargv, c->dir, log, &c->worker_pid[i], err);
        if (rc < 0)
            return rc;
        c->n_workers = i + 1;
    }
    return wait_workers(c, err);
}

int tr_bench_cluster_start(struct tr_bench_cluster *c, const struct tr_bench_opts *o,
                           const char *tag, struct tr_error *err)
{
    memset(c, 0, sizeof(*c));
    if (o->workers > TR_BENCH_MAX_WORKERS)
        return tr_error_set(err, TR_EINVAL, "at most %d workers", TR_BENCH_MAX_WORKERS);
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    snprintf(c->dir, sizeof(c->dir), "%s/trellis-bench-%s.XXXXXX", tmp, tag);
    if (mkdtemp(c->dir) == NULL) {
        int e = errno;
        c->dir[0] = '\0';
        return tr_error_set(err, TR_EIO, "cannot make a temporary directory in '%s': %s", tmp,
                            strerror(e));
    }
    snprintf(g_dir, sizeof(g_dir), "%s", c->dir);
    int rc = start_processes(c, o, err);
    if (rc < 0) {
        tr_bench_cluster_stop(c, true);
        return rc;
    }
    tr_bench_log("cluster '%s' up: scheduler pid %d, api %s, workers %s, %u x --slots %u; "
                 "dir %s", tag, (int)c->sched_pid, c->api, c->listen, c->n_workers, o->slots,
                 c->dir);
    return 0;
}
